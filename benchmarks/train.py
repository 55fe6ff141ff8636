"""Training speed: attnkit against a Hugging Face MarianMT model of the same shape, in one run, and the
model FLOPs utilisation against this machine's float32 matmul rate measured in the same run.

    python benchmarks/train.py                    # 2 threads, 3 rounds of 30 timed steps per engine
    python benchmarks/train.py --threads 1 --steps 20 --rounds 1

The shapes are the ones the speed issue names: a Transformer with d_model 256, 3 + 3 layers, 4 heads,
FFN 1024, vocabularies of 8,000, dropout 0.1, trained on batches of 64 sentences of 24 source tokens →
24 target tokens (random token ids; every position is a real token, so 1,536 target tokens per step).
attnkit trains its default pre-norm model; MarianMT is post-norm (it has no other); the parameter
counts differ by two LayerNorms. Both run the same step: forward, label-smoothed cross-entropy (0.1)
summed over the tokens and divided by their number, backward, gradient clipping at 1.0 (each as its trainer
does it: attnkit with :func:`attnkit.train.clip_grad_norm`, transformers' Trainer with
``torch.nn.utils.clip_grad_norm_``), fused Adam.

Each engine runs in a fresh subprocess: 3 warm-up steps, then ``--steps`` timed steps; the median step
time gives target tokens/s, and ``VmHWM`` the process's peak resident memory. That is done ``--rounds``
times, the engines and the matmul-rate measurement alternating, because on shared virtual machines speed
drifts by 5-10% from minute to minute: a step time is the median of its rounds, the ratio the median over
rounds of the ratio within each round, the rate the median of its rounds.

Model FLOPs per step count every matrix product of the forward pass (2·m·n·k: projections, attention
scores and weighted sums — the decoder's causal scores as a full t × t matrix, as the kernels compute
them — and the output layer), times 3 for the backward pass; embeddings, norms and the optimizer count
nothing. The machine's rate is the median of timed ``(2048 × 2048) @ (2048 × 2048)`` float32 products with
the same threads, written into one preallocated output (the machine's rate, not the allocator's), by the
faster of PyTorch's two CPU kernels: MKL's (``torch.mm``, what training runs on) and oneDNN's on a
prepacked weight (what attnkit decodes with), which is ~10% faster here.
MFU = model FLOPs per second ÷ that rate. attnkit runs as ``attnkit train`` does, after
:func:`attnkit.runtime.keep_freed_memory`. Each round also times the step's products alone, shape by shape
(:func:`step_products`, which must count the same FLOPs as the formula above; each product the median of 7
calls of PyTorch's kernels as training calls them, in a process of its own set up as attnkit's: a product's
output that lands on pages the process has not touched before costs up to half as much again): the MFU a step
made of nothing but its products would reach, the ceiling for any engine that trains on those kernels.

Ends with one JSON line ``{"train_vs_hf": r, "mfu": fraction}`` (attnkit's tokens/s ÷ MarianMT's).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys

from _measure import median_ratio, peak_rss_mib, run_worker, time_calls  # benchmarks/ is on sys.path when run as a script

D, HEADS, LAYERS, FFN, VOCAB, DROPOUT = 256, 4, 3, 1024, 8000, 0.1


def model_flops(b: int, s: int, t: int) -> float:
    """Forward + backward matmul FLOPs of one step (see the module docstring): what ``attnkit train`` counts for
    its MFU, :func:`attnkit.models.transformer.training_flops`, for the shapes here (MarianMT's are the same)."""
    from attnkit.models import TransformerConfig
    from attnkit.models.transformer import training_flops

    config = TransformerConfig(d_model=D, heads=HEADS, encoder_layers=LAYERS, decoder_layers=LAYERS, ffn_dim=FFN)
    return training_flops(config, VOCAB, b, s, t)


def matmul_rates(threads: int, repeats: int = 7) -> dict[str, float]:
    """FLOP/s of a (2048 × 2048) @ (2048 × 2048) float32 product by each kernel PyTorch has here: MKL
    (``torch.mm`` into a preallocated output) and, when available, oneDNN (``mkldnn._linear_pointwise`` on a
    prepacked weight, what attnkit decodes with)."""
    import torch

    from attnkit.train.mfu import matmul_rate  # what attnkit train measures for its MFU

    torch.set_num_threads(threads)
    n = 2048
    rates = {"mkl": matmul_rate(threads, n, repeats)}
    a, b = torch.randn(n, n), torch.randn(n, n)
    if torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise"):
        packed = torch.ops.mkldnn._reorder_linear_weight(b.t().contiguous(), n)  # a @ b as linear(a, bᵀ)
        product = torch.ops.mkldnn._linear_pointwise
        product(a, packed, None, "none", [], "")
        rates["onednn"] = 2 * n**3 / statistics.median(
            time_calls(lambda: product(a, packed, None, "none", [], ""), repeats))
    return rates


def step_products(b: int, s: int, t: int) -> list[tuple[str, tuple[int, ...], int]]:
    """The matrix products of one training step, as (kind, shape, count): ``("linear", (m, k, n), c)`` a linear
    layer of k → n features on m rows (forward, input gradient, weight gradient), ``("attention", (B, i, j, d),
    c)`` the scores and weighted sums of B heads of i queries over j keys of size d (forward: 2 products,
    backward: 4). The products :func:`model_flops` counts, shape by shape."""
    S, T, H = b * s, b * t, D // HEADS
    return [
        ("linear", (S, D, 3 * D), LAYERS), ("linear", (S, D, D), LAYERS),  # encoder self-attention: q, k, v; out
        ("linear", (S, D, FFN), LAYERS), ("linear", (S, FFN, D), LAYERS),  # encoder feed-forward
        ("attention", (b * HEADS, s, s, H), LAYERS),
        ("linear", (T, D, 3 * D), LAYERS), ("linear", (T, D, D), LAYERS),  # decoder self-attention
        ("attention", (b * HEADS, t, t, H), LAYERS),
        ("linear", (T, D, D), 2 * LAYERS), ("linear", (S, D, 2 * D), LAYERS),  # cross-attention: q, out; k, v
        ("attention", (b * HEADS, t, s, H), LAYERS),
        ("linear", (T, D, FFN), LAYERS), ("linear", (T, FFN, D), LAYERS),  # decoder feed-forward
        ("linear", (T, D, VOCAB), 1),  # output layer
    ]


def _linear_products(m: int, k: int, n: int) -> list:
    """A linear layer's three products as training runs them: forward ``addmm`` with its bias (``mm`` for the
    output layer, which has none), input gradient ``dY W``, weight gradient ``dYᵀ X``."""
    import torch

    x, w, bias, dy = torch.randn(m, k), torch.randn(n, k), torch.randn(n), torch.randn(m, n)
    forward = (lambda: torch.mm(x, w.t())) if n == VOCAB else (lambda: torch.addmm(bias, x, w.t()))
    return [forward, lambda: torch.mm(dy, w), lambda: torch.mm(dy.t(), x)]


def _attention_products(batch: int, i: int, j: int, d: int) -> list:
    """An attention's six ``bmm``s: scores and weighted sum; the gradients of the weights, values, queries, keys."""
    import torch

    q, k, v, p, do = (torch.randn(batch, i, d), torch.randn(batch, j, d), torch.randn(batch, j, d),
                      torch.randn(batch, i, j), torch.randn(batch, i, d))
    return [lambda: torch.bmm(q, k.transpose(1, 2)), lambda: torch.bmm(p, v),
            lambda: torch.bmm(do, v.transpose(1, 2)), lambda: torch.bmm(p.transpose(1, 2), do),
            lambda: torch.bmm(p, k), lambda: torch.bmm(p.transpose(1, 2), q)]


def products_alone(b: int, s: int, t: int, threads: int, repeats: int = 7) -> tuple[float, float]:
    """(seconds, FLOPs) of one training step's matrix products (:func:`step_products`), each timed alone (the
    median of ``repeats`` calls) with PyTorch's CPU products as training runs them: the time a step made of
    nothing but its products would take."""
    import torch

    torch.set_num_threads(threads)
    seconds = flops = 0.0
    for kind, shape, count in step_products(b, s, t):
        calls = _linear_products(*shape) if kind == "linear" else _attention_products(*shape)
        for call in calls:
            call()
            seconds += count * statistics.median(time_calls(call, repeats))
            flops += count * 2.0 * math.prod(shape)
    return seconds, flops


def worker(args) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    if args.worker == "products":  # in a process set up as attnkit's: fresh pages would be timed otherwise
        from attnkit.runtime import keep_freed_memory

        keep_freed_memory()
        seconds, flops = products_alone(args.batch, args.src_len, args.tgt_len, args.threads)
        return {"seconds": seconds, "flops": flops}
    torch.manual_seed(0)
    from attnkit.models import TransformerConfig, build_model, label_smoothed_nll

    b, s, t = args.batch, args.src_len, args.tgt_len
    g = torch.Generator().manual_seed(1)
    src = torch.randint(4, VOCAB, (b, s), generator=g)
    tgt = torch.randint(4, VOCAB, (b, t + 1), generator=g)
    tgt[:, 0] = 1  # BOS
    tgt_in, tgt_out = tgt[:, :-1], tgt[:, 1:]
    if args.worker == "attnkit":
        from attnkit.runtime import keep_freed_memory
        from attnkit.train import clip_grad_norm  # as attnkit train clips

        keep_freed_memory()  # as the attnkit command does at start
        model = build_model(TransformerConfig(d_model=D, heads=HEADS, encoder_layers=LAYERS, decoder_layers=LAYERS,
                                              ffn_dim=FFN, dropout=DROPOUT), VOCAB, VOCAB)

        def logits():
            return model(src, tgt_in)[0]
    else:
        from transformers import MarianConfig, MarianMTModel

        clip_grad_norm = torch.nn.utils.clip_grad_norm_  # as transformers' Trainer clips

        config = MarianConfig(vocab_size=VOCAB, decoder_vocab_size=VOCAB, share_encoder_decoder_embeddings=False,
                              tie_word_embeddings=True, d_model=D, encoder_layers=LAYERS, decoder_layers=LAYERS,
                              encoder_attention_heads=HEADS, decoder_attention_heads=HEADS, encoder_ffn_dim=FFN,
                              decoder_ffn_dim=FFN, activation_function="relu", dropout=DROPOUT,
                              attention_dropout=0.0, activation_dropout=DROPOUT, max_position_embeddings=512,
                              scale_embedding=True, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                              decoder_start_token_id=1)
        model = MarianMTModel(config)
        mask = torch.ones_like(src, dtype=torch.bool)

        def logits():
            return model(input_ids=src, attention_mask=mask, decoder_input_ids=tgt_in).logits
    model.train()
    params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, betas=(0.9, 0.98), fused=True)
    n = b * t

    def step():
        loss = label_smoothed_nll(logits(), tgt_out, smoothing=0.1, ignore_index=0)
        (loss / n).backward()
        clip_grad_norm(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(3):
        step()
    times = time_calls(step, args.steps)
    median = statistics.median(times)
    return {"engine": args.worker, "parameters": params, "step_seconds": median, "tokens_per_s": n / median,
            "peak_rss_mib": round(peak_rss_mib(), 1), "times": times}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3, help="runs of every engine, alternating (median taken)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--src-len", type=int, default=24)
    parser.add_argument("--tgt-len", type=int, default=24)
    parser.add_argument("--engines", default="attnkit,hf", help="attnkit, or attnkit,hf")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args)))
        return 0
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    if "attnkit" not in engines or set(engines) - {"attnkit", "hf"}:
        parser.error(f"--engines must be attnkit or attnkit,hf (got {args.engines!r})")
    print(f"load average {os.getloadavg()[0]:.2f}; {args.threads} thread(s); batch {args.batch} x {args.src_len} -> "
          f"{args.tgt_len}; {args.steps} timed steps", flush=True)
    flops = model_flops(args.batch, args.src_len, args.tgt_len)
    runs: dict[str, list[dict]] = {}
    rates, alone = [], []
    for round_ in range(args.rounds):  # the engines and the matmul rate alternate (see the module docstring)
        kernels = matmul_rates(args.threads)
        rates.append(max(kernels.values()))  # the machine's rate: the fastest kernel measured
        shape = ["--threads", str(args.threads), "--batch", str(args.batch), "--src-len", str(args.src_len),
                 "--tgt-len", str(args.tgt_len)]
        products = run_worker(__file__, ["--worker", "products", *shape], args.threads, "the products alone")
        seconds, product_flops = products["seconds"], products["flops"]
        if abs(product_flops - flops) > 1e-9 * flops:  # the two counts are written separately: they must agree
            raise SystemExit(f"train.py: the step's products count {product_flops:.0f} FLOPs, model_flops {flops:.0f}")
        alone.append(seconds)
        print(f"round {round_ + 1}: float32 matmul rate {rates[-1] / 1e9:.1f} GFLOP/s ("
              + ", ".join(f"{k} {v / 1e9:.1f}" for k, v in kernels.items())
              + f"); the step's products alone {seconds * 1000:.0f} ms", flush=True)
        for engine in engines:
            r = run_worker(__file__, ["--worker", engine, "--steps", str(args.steps), *shape], args.threads, engine)
            runs.setdefault(engine, []).append(r)
            print(f"  {engine:8} {r['step_seconds'] * 1000:6.0f} ms/step  {r['tokens_per_s']:7,.0f} tokens/s", flush=True)
    rate = statistics.median(rates)
    print(f"float32 matmul rate (median): {rate / 1e9:.1f} GFLOP/s; model FLOPs per step: {flops / 1e9:.1f} GFLOP",
          flush=True)
    products = statistics.median(alone)
    print(f"the step's products alone (median): {products * 1000:.0f} ms, {flops / products / 1e9:.1f} GFLOP/s: a step "
          f"of nothing but its products would reach {flops / products / rate:.1%} MFU", flush=True)
    results = {}
    for engine, rs in runs.items():
        step = statistics.median(r["step_seconds"] for r in rs)
        results[engine] = {**rs[0], "step_seconds": step, "tokens_per_s": rs[0]["tokens_per_s"] * rs[0]["step_seconds"] / step,
                           "per_round": [r["tokens_per_s"] for r in rs],
                           "peak_rss_mib": max(r["peak_rss_mib"] for r in rs)}
    print("\n| engine | parameters | step (ms) | target tokens/s | MFU | peak RSS (MiB) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for r in results.values():
        r["mfu"] = flops / r["step_seconds"] / rate
        print(f"| {r['engine']} | {r['parameters']:,} | {r['step_seconds'] * 1000:.0f} | {r['tokens_per_s']:,.0f} | "
              f"{r['mfu']:.1%} | {r['peak_rss_mib']:.0f} |")
    ours = results["attnkit"]
    ratio = median_ratio(ours["per_round"], results["hf"]["per_round"]) if "hf" in results else None
    line = {"train_vs_hf": round(ratio, 3) if ratio is not None else None,
            "mfu": round(ours["mfu"], 3)}
    print(json.dumps(line))
    return 0


if __name__ == "__main__":
    sys.exit(main())
