"""Decoding speed: attnkit against transformers' ``generate`` and CTranslate2, on the same weights, in one run.

    python benchmarks/decode.py                   # 2 threads, 3 rounds of 5 timed repeats per engine and mode
    python benchmarks/decode.py --threads 1 --repeats 9 --rounds 1 --engines attnkit,hf

The model is the one the speed issue describes: a post-norm Transformer, d_model 256, 3 + 3 layers,
4 heads, FFN 1024, vocabularies of 8,000 (7.7M parameters), random weights from a fixed seed. It is
saved as an attnkit model folder and exported with attnkit's own exporters to a MarianMT folder (what
``transformers`` loads) and on to CTranslate2 float32 (its own converter). The input is a batch of
64 random sources of 20 tokens; every engine decodes exactly 30 steps (EOS is blocked until then:
``min_len = max_len = 30`` / ``min_new_tokens = max_new_tokens = 30`` / ``min_decoding_length =
max_decoding_length = 30``), so every engine does the same work, greedy and with beam 4.

Each (engine, mode) runs in a fresh subprocess: load the model, decode once to warm up, then time
``--repeats`` decodes and report the median, in sentences per second. That is done ``--rounds`` times,
the engines alternating within each round, because on shared virtual machines a run's speed drifts by
5-10% from minute to minute: an engine's figure is the median of its rounds, and a ratio is the median
over rounds of the ratio measured within the round. The subprocess's peak resident memory (``VmHWM``:
the model, the libraries and decoding; the largest over rounds) is reported beside it. The outputs are
compared token for token with transformers'.

attnkit decodes as its Translator does: after :func:`attnkit.runtime.keep_freed_memory` (which the
``attnkit`` command calls at start) on :func:`attnkit.layers.pack_for_inference`'s copy of the model.
Two int8 options can be added, each against the other: ``attnkit-int8`` (PyTorch's dynamic quantisation
of every ``nn.Linear``) and ``ct2-int8`` (CTranslate2's ``compute_type="int8"``).

Prints a table and ends with one JSON line:
``{"beam4_vs_hf": r, "greedy_vs_hf": r, "beam4_vs_ct2": r, "greedy_vs_ct2": r, "same_output_as_hf": f}``
(ratios are attnkit's sentences/s ÷ the peer's; the fraction is over both modes' sentences).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

from _measure import median_ratio, peak_rss_mib, run_worker, time_calls  # benchmarks/ is on sys.path when run as a script

SHAPE = dict(d_model=256, heads=4, encoder_layers=3, decoder_layers=3, ffn_dim=1024, dropout=0.1, norm_first=False,
             positions="sinusoidal", tie_output=True)
VOCAB = 8000
MODES = {"greedy": 1, "beam4": 4}


def build(folder: Path, args) -> None:
    """The model folder (attnkit), its MarianMT export, the CTranslate2 conversion and the sources."""
    import torch

    from attnkit.interop.marian import export_marian
    from attnkit.models import TransformerConfig, build_model, save_model
    from attnkit.text import CharTokenizer, save_tokenizers

    torch.manual_seed(args.seed)
    tok = CharTokenizer([chr(0x4E00 + i) for i in range(VOCAB - 4)])  # 4 specials + 7,996 characters
    assert tok.vocab_size == VOCAB
    model = build_model(TransformerConfig(**SHAPE), VOCAB, VOCAB).eval()
    save_model(model, folder / "attnkit")
    save_tokenizers(folder / "attnkit", tok, tok)
    export_marian(folder / "attnkit", folder / "marian")
    if {"ct2", "ct2-int8"} & set(args.engines):
        from attnkit.interop.ct2 import export_ctranslate2

        export_ctranslate2(folder / "marian", folder / "ct2")
    g = torch.Generator().manual_seed(args.seed + 1)
    ids = torch.randint(4, VOCAB, (args.batch, args.src_len), generator=g).tolist()
    (folder / "sources.json").write_text(json.dumps([row + [2] for row in ids]))  # + EOS
    print(f"model: {model.num_parameters():,} parameters; batch {args.batch} x {args.src_len} tokens, "
          f"{args.steps} steps", flush=True)


def worker(args) -> dict:
    """Run one (engine, mode) and return its timings, peak memory and outputs (token ids)."""
    import torch

    torch.set_num_threads(args.threads)
    folder = Path(args.dir)
    sources = json.loads((folder / "sources.json").read_text())
    k, steps = MODES[args.mode], args.steps
    if args.worker in ("attnkit", "attnkit-int8"):
        from attnkit.decode import beam_search, greedy_decode
        from attnkit.models import load_model

        from attnkit.layers import pack_for_inference
        from attnkit.runtime import keep_freed_memory

        keep_freed_memory()  # what the attnkit command does at start
        model, _ = load_model(folder / "attnkit")
        model.eval()
        if args.worker == "attnkit-int8":  # PyTorch's dynamic int8 quantisation of every nn.Linear
            model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
        else:
            model = pack_for_inference(model, rows=len(sources) * k)  # what the Translator does
        src = torch.tensor(sources)

        def run():
            if k == 1:
                return [h.tokens for h in greedy_decode(model, src, max_len=steps, min_len=steps)]
            return [h[0].tokens for h in beam_search(model, src, beam_size=k, max_len=steps, min_len=steps)]
    elif args.worker == "hf":
        from transformers import MarianMTModel

        model = MarianMTModel.from_pretrained(folder / "marian").eval()
        src = torch.tensor(sources)

        def run():
            with torch.inference_mode():
                out = model.generate(input_ids=src, attention_mask=src.ne(0), do_sample=False, num_beams=k,
                                     min_new_tokens=steps, max_new_tokens=steps)
            return [row[1:] for row in out.tolist()]  # without the start token
    elif args.worker in ("ct2", "ct2-int8"):
        import ctranslate2

        from attnkit.text import load_tokenizers

        tok, _ = load_tokenizers(folder / "attnkit")
        compute = "int8" if args.worker == "ct2-int8" else "default"  # the float32 model, or quantised at load
        translator = ctranslate2.Translator(str(folder / "ct2"), device="cpu", compute_type=compute, inter_threads=1,
                                            intra_threads=args.threads)
        pieces = [[tok.id_to_piece(i) for i in row[:-1]] + ["</s>"] for row in sources]
        to_id = {tok.id_to_piece(i): i for i in range(tok.vocab_size)}

        def run():
            results = translator.translate_batch(pieces, beam_size=k, min_decoding_length=steps,
                                                 max_decoding_length=steps)
            return [[to_id[p] for p in r.hypotheses[0]] for r in results]
    else:
        raise SystemExit(f"unknown engine {args.worker!r}")
    outputs = run()  # warm-up
    times = time_calls(run, args.repeats)
    median = statistics.median(times)
    return {"engine": args.worker, "mode": args.mode, "seconds": times, "median": median,
            "sentences_per_s": len(sources) / median, "peak_rss_mib": round(peak_rss_mib(), 1), "outputs": outputs}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3, help="runs of every engine, alternating (median taken)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--src-len", type=int, default=20)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--engines", default="attnkit,hf,ct2",
                        help="comma-separated: attnkit, hf, ct2, and the int8 options attnkit-int8 (PyTorch's dynamic "
                             "quantisation) and ct2-int8 (CTranslate2's compute_type='int8')")
    parser.add_argument("--json", help="also write every figure to this file")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    parser.add_argument("--dir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args)))
        return 0
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    unknown = set(engines) - {"attnkit", "hf", "ct2", "attnkit-int8", "ct2-int8"}
    if unknown or "attnkit" not in engines:
        parser.error(f"--engines must include attnkit and name only attnkit, hf, ct2, attnkit-int8, ct2-int8 (got {args.engines!r})")
    if {"ct2", "ct2-int8"} & set(engines):
        try:
            import ctranslate2  # noqa: F401
        except ImportError:
            print("ctranslate2 is not installed: skipping it (pip install ctranslate2)", flush=True)
            engines = [e for e in engines if not e.startswith("ct2")]
    args.engines = engines
    print(f"load average {os.getloadavg()[0]:.2f}; {args.threads} thread(s); {args.rounds} rounds of {args.repeats} repeats",
          flush=True)
    results: dict[tuple[str, str], dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        build(folder, args)
        runs: dict[tuple[str, str], list[dict]] = {}
        for round_ in range(args.rounds):  # engines alternate, so that a slow spell hits them all alike
            for mode in MODES:
                for engine in engines:
                    r = run_worker(__file__, ["--worker", engine, "--mode", mode, "--dir", tmp, "--threads",
                                              str(args.threads), "--repeats", str(args.repeats), "--steps",
                                              str(args.steps)], args.threads, f"{engine} {mode}")
                    runs.setdefault((engine, mode), []).append(r)
                    print(f"  round {round_ + 1}  {mode:6} {engine:12} {r['sentences_per_s']:8.1f} sentences/s  "
                          f"(median of {args.repeats}: {r['median'] * 1000:.0f} ms)  peak RSS {r['peak_rss_mib']:.0f} MiB",
                          flush=True)
    for key, rs in runs.items():  # per engine and mode: the median round, the largest peak
        results[key] = {**rs[0], "sentences_per_s": statistics.median(r["sentences_per_s"] for r in rs),
                        "per_round": [r["sentences_per_s"] for r in rs],
                        "peak_rss_mib": max(r["peak_rss_mib"] for r in rs)}
    print("\n| mode | engine | sentences/s | attnkit ÷ engine | peak RSS (MiB) | same output as transformers |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    figures: dict[str, float] = {}
    same = total = 0
    for mode in MODES:
        ours = results["attnkit", mode]
        for engine in engines:
            r = results[engine, mode]
            ratio = median_ratio(ours["per_round"], r["per_round"])
            agree = ""
            if "hf" in engines:
                hf_out = results["hf", mode]["outputs"]
                n = sum(a == b for a, b in zip(r["outputs"], hf_out))
                agree = f"{n}/{len(hf_out)}"
                if engine == "attnkit":
                    same, total = same + n, total + len(hf_out)
            print(f"| {mode} | {engine} | {r['sentences_per_s']:.1f} | {ratio:.2f} | {r['peak_rss_mib']:.0f} | {agree} |")
            if engine in ("hf", "ct2"):
                figures[f"{mode}_vs_{engine}"] = round(ratio, 3)
    line = {key: figures.get(key) for key in ("beam4_vs_hf", "greedy_vs_hf", "beam4_vs_ct2", "greedy_vs_ct2")}
    line["same_output_as_hf"] = round(same / total, 4) if total else None
    if args.json:
        Path(args.json).write_text(json.dumps({"figures": line, "runs": [
            {k: v for k, v in r.items() if k != "outputs"} for r in results.values()]}, indent=2) + "\n")
    print(json.dumps(line))
    return 0


if __name__ == "__main__":
    sys.exit(main())
