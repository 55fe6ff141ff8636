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
:func:`attnkit.runtime.keep_freed_memory`.

Ends with one JSON line ``{"train_vs_hf": r, "mfu": fraction}`` (attnkit's tokens/s ÷ MarianMT's).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

from _measure import median_ratio, peak_rss_mib, run_worker, time_calls  # benchmarks/ is on sys.path when run as a script

D, HEADS, LAYERS, FFN, VOCAB, DROPOUT = 256, 4, 3, 1024, 8000, 0.1


def model_flops(b: int, s: int, t: int) -> float:
    """Forward + backward matmul FLOPs of one step (see the module docstring)."""
    enc = LAYERS * (4 * 2 * s * D * D + 2 * 2 * s * D * FFN + 2 * 2 * s * s * D)
    dec = LAYERS * (4 * 2 * t * D * D  # self-attention q, k, v, out
                    + 2 * 2 * t * D * D + 2 * 2 * s * D * D  # cross-attention q, out; k, v of the memory
                    + 2 * 2 * t * D * FFN  # feed-forward
                    + 2 * 2 * t * t * D + 2 * 2 * t * s * D)  # scores and weighted sums
    out = 2 * t * D * VOCAB
    return 3.0 * b * (enc + dec + out)


def matmul_rates(threads: int, repeats: int = 7) -> dict[str, float]:
    """FLOP/s of a (2048 × 2048) @ (2048 × 2048) float32 product by each kernel PyTorch has here: MKL
    (``torch.mm`` into a preallocated output) and, when available, oneDNN (``mkldnn._linear_pointwise`` on a
    prepacked weight, what attnkit decodes with)."""
    import torch

    torch.set_num_threads(threads)
    n = 2048
    a, b, out = torch.randn(n, n), torch.randn(n, n), torch.empty(n, n)
    torch.mm(a, b, out=out)
    rates = {"mkl": 2 * n**3 / statistics.median(time_calls(lambda: torch.mm(a, b, out=out), repeats))}
    if torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise"):
        packed = torch.ops.mkldnn._reorder_linear_weight(b.t().contiguous(), n)  # a @ b as linear(a, bᵀ)
        product = torch.ops.mkldnn._linear_pointwise
        product(a, packed, None, "none", [], "")
        rates["onednn"] = 2 * n**3 / statistics.median(
            time_calls(lambda: product(a, packed, None, "none", [], ""), repeats))
    return rates


def worker(args) -> dict:
    import torch

    torch.set_num_threads(args.threads)
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
    rates = []
    for round_ in range(args.rounds):  # the engines and the matmul rate alternate (see the module docstring)
        kernels = matmul_rates(args.threads)
        rates.append(max(kernels.values()))  # the machine's rate: the fastest kernel measured
        print(f"round {round_ + 1}: float32 matmul rate {rates[-1] / 1e9:.1f} GFLOP/s ("
              + ", ".join(f"{k} {v / 1e9:.1f}" for k, v in kernels.items()) + ")", flush=True)
        for engine in engines:
            r = run_worker(__file__, ["--worker", engine, "--threads", str(args.threads), "--steps", str(args.steps),
                                      "--batch", str(args.batch), "--src-len", str(args.src_len), "--tgt-len",
                                      str(args.tgt_len)], args.threads, engine)
            runs.setdefault(engine, []).append(r)
            print(f"  {engine:8} {r['step_seconds'] * 1000:6.0f} ms/step  {r['tokens_per_s']:7,.0f} tokens/s", flush=True)
    rate = statistics.median(rates)
    print(f"float32 matmul rate (median): {rate / 1e9:.1f} GFLOP/s; model FLOPs per step: {flops / 1e9:.1f} GFLOP",
          flush=True)
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
