"""The length experiment (Bahdanau et al. 2015, Figure 2): BLEU by source-sentence length for the
three RNN generations and the Transformer, trained on the same data with the same time budget.

    python experiments/length.py --minutes 15 --jobs 2 --out runs/length

For each model it trains ``configs/cmn-eng-<model>.yaml`` for ``--minutes`` (the same budget for all,
``--jobs`` runs in parallel with one thread each), translates ``test.tsv`` with beam 4, scores BLEU in
source-length buckets (Chinese characters), and writes ``length.png`` and ``length.md`` (a table) to
``--out``. Every number comes from this run; the README quotes them with this command.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

MODELS = ("seq2seq-fixed", "seq2seq-context", "seq2seq-attention", "transformer")
LABELS = {
    "seq2seq-fixed": "fixed C (Sutskever 2014)",
    "seq2seq-context": "C at every step (Cho 2014)",
    "seq2seq-attention": "attention, C_i (Bahdanau 2015)",
    "transformer": "Transformer (Vaswani 2017)",
}
BUCKETS = (1, 6, 9, 12, 16, 10_000)


def train_one(model: str, args) -> Path:
    out = args.out / model
    if (out / "best" / "model.safetensors").is_file() and not args.retrain:
        return out
    config = args.configs / f"cmn-eng-{model}.yaml"
    cmd = [sys.executable, "-m", "attnkit", "train", "--config", str(config), "--out", str(out), "--quiet",
           "--max-minutes", str(args.minutes), "--threads", str(args.threads), "--seed", str(args.seed),
           "--set", "train.patience=null"]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    log = (args.out / f"{model}.log").open("w")
    subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT, env=env)
    return out


def evaluate(model: str, args) -> dict:
    from attnkit.data import read_manythings
    from attnkit.decode.translator import Translator
    from attnkit.evaluate import bleu_by_length, corpus_scores

    pairs = read_manythings(args.test, warn=False).pairs
    translator = Translator.load(args.out / model)
    hyps = [t.text for t in translator.translate([p.src for p in pairs], beam=args.beam)]
    refs = [p.tgt for p in pairs]
    (args.out / model / "test.hyp").write_text("\n".join(hyps) + "\n", encoding="utf-8")
    scores = corpus_scores(hyps, refs)
    steps = [json.loads(line) for line in (args.out / model / "log.jsonl").read_text().splitlines()]
    stop = [e for e in steps if e["event"] == "stop"][-1]
    return {
        "model": model, "bleu": scores["bleu"].score, "chrf": scores["chrf"].score,
        "signature": scores["bleu"].signature, "steps": stop["step"], "minutes": stop["elapsed"] / 60,
        "by_length": bleu_by_length([p.src for p in pairs], hyps, refs, buckets=BUCKETS),
    }


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for r in results:
        rows = r["by_length"]
        ax.plot([row["bucket"] for row in rows], [row["bleu"] for row in rows], marker="o", label=LABELS[r["model"]])
    ax.set_xlabel("source length (Chinese characters)")
    ax.set_ylabel("BLEU (test, beam 4)")
    ax.set_title("BLEU by source length, same data and time budget")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def table(results: list[dict], minutes: float) -> str:
    buckets = [row["bucket"] for row in results[0]["by_length"]]
    counts = [row["sentences"] for row in results[0]["by_length"]]
    head = "| model | steps | BLEU | chrF | " + " | ".join(f"{b} ({n})" for b, n in zip(buckets, counts)) + " |"
    sep = "|---" * (4 + len(buckets)) + "|"
    lines = [head, sep]
    for r in results:
        cells = " | ".join(f"{row['bleu']:.1f}" for row in r["by_length"])
        lines.append(f"| {LABELS[r['model']]} | {r['steps']:,} | {r['bleu']:.2f} | {r['chrf']:.2f} | {cells} |")
    lines.append("")
    lines.append(f"Columns after chrF: BLEU per source-length bucket in characters (sentences in the bucket). "
                 f"Each model trained for {minutes:g} minute{'' if minutes == 1 else 's'}. BLEU signature: {results[0]['signature']}.")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    root = Path(__file__).resolve().parents[1]
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=15.0, help="training budget per model (default 15)")
    p.add_argument("--jobs", type=int, default=2, help="models trained at once (default 2: one per core)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per training (default 1)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--beam", type=int, default=4)
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    p.add_argument("--configs", type=Path, default=root / "configs")
    p.add_argument("--test", type=Path, default=root.parent / "shared" / "data" / "cmn-eng" / "test.tsv")
    p.add_argument("--out", type=Path, default=root / "runs" / "length")
    p.add_argument("--retrain", action="store_true", help="train again even where a model exists")
    args = p.parse_args(argv)
    if not args.test.is_file():
        p.error(f"--test {args.test}: no such file (the Tatoeba data lives in ../shared/data/cmn-eng)")
    args.out.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        list(pool.map(lambda m: train_one(m, args), args.models))
    import torch

    torch.set_num_threads(max(1, args.threads * args.jobs))
    results = [evaluate(m, args) for m in args.models]
    (args.out / "length.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
    plot(results, args.out / "length.png")
    (args.out / "length.md").write_text(table(results, args.minutes), encoding="utf-8")
    print(table(results, args.minutes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
