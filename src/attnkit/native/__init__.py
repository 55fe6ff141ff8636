"""attnkit's compiled CPU kernels (``kernels.cpp``), built on this machine on first use.

A decoding step runs a few hundred small PyTorch operations on tensors of 64-256 rows; each pays a
dispatch, a pass over memory and a fork/join of the thread pool. These kernels each do the work of several
operations in one pass, threaded by ATen's own pool.

For decoding (used under ``torch.inference_mode``):

- :func:`decode_attention`: softmax attention of a few queries over cached keys/values (a decoding step's
  self- and cross-attention) — what two batched products, a scaling and a softmax do;
- :func:`log_softmax_topk`: the ``k`` largest log-softmax entries of each row of logits, and their
  indices — what ``log_softmax`` then ``topk``/``argmax`` do, without writing the normalised row;
- :func:`add_layer_norm`: ``LayerNorm(x + y)``, a post-norm Transformer's residual step;
- :func:`decoder_layer_step`: a whole Transformer decoder layer for one position — its six products, both
  attentions and the three residual steps in one call, instead of some forty Python-level operations; the
  products are :func:`linear_panels`, with the weights stored once as :func:`pack_panels` gives them; each
  thread takes its own rows through the whole layer;
- :func:`linear_log_softmax_topk`: a decoding step's output layer and the top-k of its log-softmax in one
  call, the logits never leaving each thread's cache.
- :func:`greedy_steps`: greedy decoding for several positions in one call — each step's embedding, decoder
  stack, final norm and output layer with its best token — stopping at the first EOS, so that no Python runs
  between the steps.

For training (inside autograd functions, see ``models/loss.py`` and ``layers/dropout.py``):

- :func:`smoothed_nll_forward` / :func:`smoothed_nll_backward`: the label-smoothed cross-entropy, keeping
  one log-sum-exp per row instead of the log-probabilities, and its gradient in one pass;
- :func:`dropout_apply` (and :func:`dropout_mask`): dropout with its mask drawn in the same pass from a
  counter-based generator, drawn again for the gradient instead of being stored;
- :func:`relu_dropout_apply` / :func:`relu_dropout_backward` and :func:`residual_dropout_apply`: a feed-forward's
  ReLU and its dropout, and a residual connection's sum and its dropout, each in that one pass — the same outputs,
  bit for bit, as the separate operations (and, for finite values, gradients of the same values);
- :func:`attention_train_forward` / :func:`attention_train_backward`: softmax attention with dropout on the
  weights over short sequences, reading the heads where the projection wrote them and writing the context
  and the gradients so that merging the heads copies nothing (the ``native`` attention backend);
- :func:`clip_grad_norm_`: gradient clipping by the global norm in two passes over all the gradients, instead
  of one operation per tensor for the norms and another for the scaling.

They compute the same functions as the PyTorch operations, summed in another order (differences of a few
ulp; the tests compare them with PyTorch); dropout draws other masks than PyTorch's path, with the same
distribution. They are used for float32 CPU tensors, and only when the extension builds: it is compiled
with PyTorch's own ``torch.utils.cpp_extension`` (a C++ compiler and ``ninja`` are needed; ~20 s, once per
kind of processor and PyTorch version, cached under ``~/.cache/attnkit/native`` or ``$ATTNKIT_NATIVE_DIR``).
Where they cannot be built :func:`available` is False, with one warning saying why (with ``ATTNKIT_NATIVE=0``,
without trying or warning), and attnkit computes the same with PyTorch operations.

``python -m attnkit.native`` builds the kernels now and says where they are (``setup.sh`` runs it).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import platform
import shutil
import sys
import warnings
from pathlib import Path

import torch
from torch import Tensor

__all__ = ["NativeBuildError", "available", "applies", "build", "draw_seed", "decode_attention", "log_softmax_topk",
           "add_layer_norm", "pack_panels", "linear_panels", "linear_log_softmax_topk", "decoder_layer_step", "decoder_stack_step", "greedy_steps", "smoothed_nll_forward", "smoothed_nll_backward", "dropout_mask",
           "dropout_apply", "relu_dropout_apply", "relu_dropout_backward", "residual_dropout_apply", "attention_train_forward", "attention_train_backward", "attention_dropout_factors",
           "clip_grad_norm_",
           "SOURCE"]

SOURCE = Path(__file__).with_name("kernels.cpp")
_FLAGS = ["-O3", "-march=native", "-fopenmp"]  # OpenMP: at::parallel_for runs on PyTorch's own thread pool


class NativeBuildError(RuntimeError):
    """The kernels could not be built here (no compiler, no ninja, a failed compilation)."""


def _cache_dir() -> Path:
    root = os.environ.get("ATTNKIT_NATIVE_DIR")
    if root:
        return Path(root)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "attnkit" / "native"


def _cpu() -> str:
    """The processor's model and instruction-set flags (``-march=native`` compiles for exactly these; a
    cache folder shared with another kind of machine must not hand it this build)."""
    try:
        info = Path("/proc/cpuinfo").read_text(errors="replace").splitlines()
    except OSError:
        return platform.machine() + " " + platform.processor()
    wanted = ("model name", "flags", "Features", "CPU part")
    return platform.machine() + " " + " ".join(sorted({line for line in info if line.split(":")[0].strip() in wanted}))


def _key() -> str:
    """What the built library depends on: the source, the flags, the processor, PyTorch and Python."""
    h = hashlib.sha256(SOURCE.read_bytes())
    h.update(" ".join(_FLAGS).encode())
    h.update(_cpu().encode())
    h.update(f"{torch.__version__} {sys.version_info[:2]} {sys.platform}".encode())
    return h.hexdigest()[:12]


def _find_tools() -> None:
    """``torch.utils.cpp_extension`` runs ``ninja`` from PATH; the ``ninja`` wheel installs it next to
    this Python, which is not on PATH unless the environment is activated."""
    if shutil.which("ninja") is None:
        here = str(Path(sys.executable).parent)
        if (Path(here) / "ninja").exists():
            os.environ["PATH"] = here + os.pathsep + os.environ.get("PATH", "")
    if shutil.which("ninja") is None:
        raise NativeBuildError("ninja is not installed (pip install ninja)")
    if not any(shutil.which(c) for c in (os.environ.get("CXX", "c++"), "c++", "g++", "clang++")):
        raise NativeBuildError("no C++ compiler found (install g++, or set CXX)")


@functools.lru_cache(maxsize=None)
def build(verbose: bool = False) -> Path:
    """Compile (or find already compiled) and load the kernels into ``torch.ops.attnkit``; return the
    build folder. Raises :class:`NativeBuildError` saying why when they cannot be built."""
    if not SOURCE.exists():
        raise NativeBuildError(f"{SOURCE} is missing from the installed package")
    _find_tools()
    # Importing cpp_extension logs a warning about CUDA on a machine without it: not ours to show.
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    try:
        from torch.utils import cpp_extension  # needs setuptools
    except Exception as exc:
        raise NativeBuildError(f"torch.utils.cpp_extension cannot be imported ({exc})") from exc

    key = _key()
    folder = _cache_dir() / key
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise NativeBuildError(f"cannot create the build folder {folder} ({exc}); set ATTNKIT_NATIVE_DIR") from exc
    library = folder / f"attnkit_native_{key}.so"
    if not library.exists() and not verbose:
        print(f"attnkit: compiling the CPU kernels into {folder} (once, ~20 s)", file=sys.stderr, flush=True)
    try:
        cpp_extension.load(name=f"attnkit_native_{key}", sources=[str(SOURCE)], extra_cflags=_FLAGS,
                           extra_ldflags=["-fopenmp"], build_directory=str(folder), is_python_module=False,
                           verbose=verbose)
    except Exception as exc:  # a compiler error, a missing header: say which, do not stop decoding
        raise NativeBuildError(f"building {SOURCE.name} in {folder} failed: {exc}") from exc
    return folder


@functools.lru_cache(maxsize=None)
def available() -> bool:
    """Whether the kernels are loaded (building them on the first call). False, with one warning saying
    why, when they cannot be built; False, silently, without trying when ``ATTNKIT_NATIVE=0``."""
    if os.environ.get("ATTNKIT_NATIVE", "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    try:
        build()
    except NativeBuildError as exc:
        warnings.warn(f"attnkit: running without the compiled CPU kernels ({exc}); results are the same, slower",
                      RuntimeWarning, stacklevel=2)
        return False
    return True


def applies(*tensors: Tensor) -> bool:
    """Whether the kernels serve these tensors: all float32 on a CPU, and the kernels built (building them
    on the first call, see :func:`available`)."""
    return all(t.dtype == torch.float32 and t.device.type == "cpu" for t in tensors) and available()


def draw_seed() -> int:
    """A 64-bit seed for the kernels' counter-based generator, drawn from torch's default generator (so
    ``torch.manual_seed`` repeats it and a checkpoint of the RNG state resumes it)."""
    return int(torch.empty((), dtype=torch.int64).random_(-(1 << 63), None))  # all 64 bits, no modulo


def decode_attention(q: Tensor, k: Tensor, v: Tensor, key_mask: Tensor | None, scale: float) -> Tensor:
    """``softmax(scale · q kᵀ) v`` for ``q (n, h, i, d)``, ``k (n, h, t, d)``, ``v (n, h, t, e)`` → ``(n, h, i, e)``;
    ``key_mask (n, t)`` bool, True = may attend; a query with no allowed key gets a zero context."""
    return torch.ops.attnkit.decode_attention(q, k, v, key_mask, float(scale))


def log_softmax_topk(logits: Tensor, k: int, blocked: int = -1) -> tuple[Tensor, Tensor]:
    """The ``k`` largest entries of ``log_softmax(logits (r, V), -1)`` per row and their indices, best
    first (the lower index first among equals); token ``blocked`` (if ≥ 0) is left out, as if its
    log-prob were set to -inf after normalising."""
    return torch.ops.attnkit.log_softmax_topk(logits, int(k), int(blocked))


def add_layer_norm(x: Tensor, y: Tensor, weight: Tensor, bias: Tensor, eps: float) -> Tensor:
    """``layer_norm(x + y)`` over the last axis, with ``weight`` and ``bias``."""
    return torch.ops.attnkit.add_layer_norm(x, y, weight, bias, float(eps))


def pack_panels(weight: Tensor) -> Tensor:
    """``weight (n, k)`` as :func:`linear_panels` reads it: panels of 32 output columns, ``(⌈n/32⌉, k, 32)``."""
    return torch.ops.attnkit.pack_panels(weight)


def linear_panels(x: Tensor, panels: Tensor, bias: Tensor | None, n: int, relu: bool = False) -> Tensor:
    """``x (m, k) Wᵀ + bias`` (then ReLU) with ``W (n, k)`` given as ``pack_panels(W)``: the product for a
    decoding step's few rows, without a library call's fixed cost."""
    return torch.ops.attnkit.linear_panels(x, panels, bias, int(n), bool(relu))


def linear_log_softmax_topk(x: Tensor, panels: Tensor, bias: Tensor | None, n: int, k: int,
                            blocked: int | None = None) -> tuple[Tensor, Tensor]:
    """``log_softmax_topk(linear_panels(x, panels, bias, n), k, blocked)`` in one call, without the ``(m, n)``
    logits leaving each thread's cache: ``(values (m, k), indices (m, k))``; the values may differ from the
    two calls' in the last bits (the sum of exponentials is added up in parts)."""
    return torch.ops.attnkit.linear_log_softmax_topk(x, panels, bias, int(n), int(k), -1 if blocked is None else int(blocked))


def decoder_layer_step(x: Tensor, panels: list[Tensor], biases: list[Tensor | None], norms: list[Tensor],
                       k_cache: Tensor, v_cache: Tensor, t: int, memory_k: Tensor, memory_v: Tensor,
                       memory_mask: Tensor | None, scale: float, eps: float, pre_norm: bool) -> Tensor:
    """One position ``x (n, d)`` through a decoder layer (see ``kernels.cpp``): ``panels`` the weights, as
    :func:`pack_panels` gives them, of [q/k/v, self-attention out, cross-attention q, cross-attention out,
    feed-forward 1 (ReLU), feed-forward 2], ``biases`` theirs, ``norms`` the three LayerNorms' [weight, bias];
    the new key and value are written into the caches ``(n, h, capacity, d / h)`` at position ``t``; row ``r``
    reads memory row ``r // (n // m)`` of ``memory_k``/``memory_v (m, h, s, d / h)`` under ``memory_mask (n, s)``."""
    return torch.ops.attnkit.decoder_layer_step(x, panels, biases, norms, k_cache, v_cache, int(t), memory_k, memory_v,
                                                memory_mask, float(scale), float(eps), bool(pre_norm))


def decoder_stack_step(x: Tensor, panels: list[Tensor], biases: list[Tensor | None], norms: list[Tensor],
                       k_caches: list[Tensor], v_caches: list[Tensor], t: int, memory_k: list[Tensor],
                       memory_v: list[Tensor], memory_mask: Tensor | None, scale: float, eps: float,
                       pre_norm: bool) -> Tensor:
    """:func:`decoder_layer_step` through ``L`` layers in one call: ``panels``, ``biases`` and ``norms`` six per
    layer, in layer order; a key cache, a value cache, memory keys and memory values per layer, every cache at
    position ``t``. The layers share the head size (``scale`` serves them all), the feed-forward width, the
    LayerNorms' placement and ``eps``; other heads or widths are refused. Each layer's output is the next one's input; returns the last one's ``(n, d)``. With enough
    rows each thread takes its share of them through every layer, the threads meeting once for the stack."""
    return torch.ops.attnkit.decoder_stack_step(x, panels, biases, norms, k_caches, v_caches, int(t), memory_k,
                                                memory_v, memory_mask, float(scale), float(eps), bool(pre_norm))


def greedy_steps(prev: Tensor, embedding: Tensor, embed_scale: float, positions: Tensor, panels: list[Tensor],
                 biases: list[Tensor | None], norms: list[Tensor], k_caches: list[Tensor], v_caches: list[Tensor], t: int,
                 memory_k: list[Tensor], memory_v: list[Tensor], memory_mask: Tensor | None, scale: float, eps: float,
                 pre_norm: bool, final_weight: Tensor | None, final_bias: Tensor | None, final_eps: float,
                 out_panels: Tensor, out_bias: Tensor | None, vocab: int, eos: int, blocked_steps: int,
                 steps: int) -> tuple[Tensor, Tensor]:
    """Up to ``steps`` greedy decoding positions from ``t`` in one call (see ``kernels.cpp``): each step embeds
    ``prev (n,)`` (``embedding[prev] * embed_scale + positions[i]``), takes it through the stack as
    :func:`decoder_stack_step` does (its arguments), through the final LayerNorm when ``final_weight`` is given,
    and through the output layer (``out_panels`` as :func:`pack_panels` gives it) to the best log-softmax entry
    as :func:`linear_log_softmax_topk` gives it, ``eos`` left out in the first ``blocked_steps`` steps; the best
    tokens are the next step's ``prev``. Stops after the first step in which a row chose ``eos``. Returns
    ``(tokens (n, k), log-probs (n, k))`` for the ``k`` steps taken; the caches then hold ``k`` more positions."""
    return torch.ops.attnkit.greedy_steps(prev, embedding, float(embed_scale), positions, panels, biases, norms, k_caches,
                                          v_caches, int(t), memory_k, memory_v, memory_mask, float(scale), float(eps),
                                          bool(pre_norm), final_weight, final_bias, float(final_eps), out_panels,
                                          out_bias, int(vocab), int(eos), int(blocked_steps), int(steps))


def smoothed_nll_forward(logits: Tensor, target: Tensor, smoothing: float) -> tuple[Tensor, Tensor]:
    """Label-smoothed cross-entropy of each row of ``logits (n, V)`` (contiguous) for ``target (n,)``:
    ``(loss (n,), lse (n,))`` with ``loss = (1 − ε)(lse − x_y) + ε (lse − mean_v x_v)``, ``lse = log Σ_v exp x_v``."""
    return torch.ops.attnkit.smoothed_nll_forward(logits, target, float(smoothing))


def smoothed_nll_backward(logits: Tensor, lse: Tensor, target: Tensor, weight: Tensor, smoothing: float) -> Tensor:
    """The gradient of ``Σ_r weight_r · loss_r`` with respect to ``logits``:
    ``weight · (softmax(logits) − ε / V − (1 − ε) onehot(target))``."""
    return torch.ops.attnkit.smoothed_nll_backward(logits, lse, target, weight, float(smoothing))


def dropout_mask(like: Tensor, p: float, seed: int) -> Tensor:
    """A mask shaped like ``like``: 0 with probability ``round(p·2¹⁶)/2¹⁶``, else ``1 / (1 − p)``, from a
    counter-based generator (16-bit quarters of splitmix64 of ``seed`` + a counter, see ``kernels.cpp``): a
    function of ``seed`` and the element's index only, the same for any thread count."""
    return torch.ops.attnkit.dropout_mask(like, float(p), int(seed))


def dropout_apply(x: Tensor, p: float, seed: int) -> Tensor:
    """``x * dropout_mask(x, p, seed)`` in one pass (no mask stored): dropout's forward pass, and with the
    same ``p`` and ``seed`` applied to the gradient, its backward pass."""
    return torch.ops.attnkit.dropout_apply(x, float(p), int(seed))


def relu_dropout_apply(x: Tensor, p: float, seed: int) -> Tensor:
    """``dropout_apply(relu(x), p, seed)`` in one pass, bit for bit (``relu`` as ``torch.relu``: NaN stays)."""
    return torch.ops.attnkit.relu_dropout_apply(x, float(p), int(seed))


def relu_dropout_backward(grad: Tensor, out: Tensor, p: float) -> Tensor:
    """The gradient of :func:`relu_dropout_apply` with respect to ``x`` from its output ``out``: ``grad / (1 − p)``
    where ``out > 0`` (the element kept and positive), else 0 — for finite inputs and ``grad`` the values that
    dropout's backward pass and then ReLU's give."""
    return torch.ops.attnkit.relu_dropout_backward(grad, out, float(p))


def residual_dropout_apply(r: Tensor, x: Tensor, p: float, seed: int) -> Tensor:
    """``r + dropout_apply(x, p, seed)`` in one pass, bit for bit (the product rounded before the sum); ``r``
    and ``x`` of one shape."""
    return torch.ops.attnkit.residual_dropout_apply(r, x, float(p), int(seed))


def attention_train_forward(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, scale: float, p: float,
                            seed: int) -> tuple[Tensor, Tensor]:
    """Softmax attention of ``q (b, h, i, d)`` over ``k (b, h, j, d)``, ``v (b, h, j, e)`` (any strides, last
    axis contiguous), ``mask`` bool ``(b, h, i, j)`` (broadcast views fine) or None, dropout ``p`` on the
    weights from ``seed``: ``(context (b, i, h, e) contiguous, weights before dropout (b, h, i, j))``."""
    return torch.ops.attnkit.attention_train_forward(q, k, v, mask, float(scale), float(p), int(seed))


def attention_train_backward(grad: Tensor, q: Tensor, k: Tensor, v: Tensor, probs: Tensor, scale: float, p: float,
                             seed: int) -> tuple[Tensor, Tensor, Tensor]:
    """The gradients ``(dq, dk, dv)``, each ``(b, n, h, d)`` contiguous, of :func:`attention_train_forward`
    for ``grad (b, h, i, e)``, from its saved ``probs`` and the same ``scale``, ``p`` and ``seed``."""
    return torch.ops.attnkit.attention_train_backward(grad, q, k, v, probs, float(scale), float(p), int(seed))


def attention_dropout_factors(b: int, h: int, i: int, j: int, p: float, seed: int) -> Tensor:
    """The ``(b, h, i, j)`` factors (0 or ``1 / (1 − p)``) :func:`attention_train_forward` multiplies the
    weights by for ``seed``."""
    return torch.ops.attnkit.attention_dropout_factors(int(b), int(h), int(i), int(j), float(p), int(seed))


def clip_grad_norm_(grads: list[Tensor], max_norm: float) -> Tensor:
    """Scale the contiguous float32 CPU tensors ``grads`` in place by ``min(1, max_norm / (norm + 1e-6))``, where
    ``norm`` is their 2-norm taken together, as ``torch.nn.utils.clip_grad_norm_`` does; returns ``norm``
    (float32, 0-d). The norm is summed in double over fixed blocks: the same for any number of threads."""
    return torch.ops.attnkit.clip_grad_norm_(list(grads), float(max_norm))
