"""attnkit's Transformer against a Hugging Face MarianMT model of the same size, trained for the same time.

    python experiments/versus_marian.py --config configs/cmn-eng-transformer.yaml --minutes 60 --out runs/versus

Both sides get the same recipe: the tokenizers attnkit builds from the training pairs, the same
length-bucketed token batches in the same order, Adam with the same betas, learning-rate schedule, label
smoothing, gradient clipping and dropout, and a greedy dev BLEU every ``eval_every`` steps that keeps the
best weights. Then each translates test.tsv with its own beam search (beam 4) and sacreBLEU scores it.

The two train at the same time with one thread each, so on a 2-core machine neither takes the other's
core. The peer's clock stops while it validates (transformers' ``generate`` is slower than attnkit's
decoder), so the peer gets at least as much training time as attnkit: the comparison is conservative.

MarianMT has only post-norm blocks; attnkit trains the recipe as written (pre-norm by default). The
sizes match (same widths, layers, heads, vocabularies; parameter counts are printed).

Writes OUT/attnkit/ (an ``attnkit train`` folder), OUT/marian/ (log.jsonl, hypotheses), OUT/results.json,
and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import os
import random
import subprocess
import sys
import time
from pathlib import Path


def _recipe(path: str, minutes: float):
    from attnkit.configfile import read_settings_file
    from attnkit.train.config import apply_override, recipe_from_dict

    data = read_settings_file(path)
    apply_override(data, f"train.max_minutes={minutes}")
    return recipe_from_dict(data)


# ------------------------------------------------------------------------------------------------ the peer


def _generate(model, tokenizer, sources: list[str], src_tok, *, beam: int, batch_size: int = 64) -> list[str]:
    """Translate with transformers' ``generate``; batches sorted by length, output in input order."""
    import torch

    from attnkit.text import EOS_ID, PAD_ID

    encoded = [src_tok.encode(s) + [EOS_ID] for s in sources]
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    out: list[str] = [""] * len(sources)
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        width = max(len(encoded[i]) for i in rows)
        ids = torch.tensor([encoded[i] + [PAD_ID] * (width - len(encoded[i])) for i in rows])
        with torch.inference_mode():
            # attnkit's limit is 2 x source + 10 tokens per sentence; here it is per batch (the longest)
            gen = model.generate(input_ids=ids, attention_mask=ids.ne(PAD_ID), num_beams=beam, do_sample=False,
                                 max_new_tokens=2 * (width - 1) + 10)
        for i, row in zip(rows, gen.tolist()):
            tokens = row[1:]  # drop the decoder start (BOS)
            if EOS_ID in tokens:
                tokens = tokens[:tokens.index(EOS_ID)]
            out[i] = tokenizer.decode([t for t in tokens if t != PAD_ID])
    return out


def run_peer(args) -> int:
    import torch
    from transformers import MarianConfig, MarianMTModel

    from attnkit.data.batching import BatchLoader, encode_pairs
    from attnkit.evaluate import corpus_scores
    from attnkit.interop.marian import marian_config
    from attnkit.models import build_model, label_smoothed_nll
    from attnkit.text import PAD_ID, build_tokenizers, save_tokenizers
    from attnkit.train.corpus import read_split
    from attnkit.train.loop import optimizer_update

    torch.set_num_threads(args.threads)
    recipe = _recipe(args.config, args.minutes)
    t = recipe.train
    torch.manual_seed(t.seed)
    random.seed(t.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = (out / "log.jsonl").open("w", encoding="utf-8")

    train_pairs = read_split(recipe.data, "train")
    dev_pairs = read_split(recipe.data, "dev")
    test_pairs = read_split(recipe.data, "test")
    src_tok, tgt_tok = build_tokenizers(recipe.tokenizer, train_pairs)
    save_tokenizers(out / "tokenizers", src_tok, tgt_tok)
    encoded = encode_pairs(train_pairs, src_tok, tgt_tok, max_len=recipe.data.max_len)
    loader = BatchLoader(encoded.examples, max_tokens=t.max_tokens, seed=t.seed)

    # the same-size twin: attnkit's config with post-norm blocks, written as a MarianConfig
    twin = build_model(dataclasses.replace(recipe.model, norm_first=False), src_tok.vocab_size, tgt_tok.vocab_size)
    config = {k: v for k, v in marian_config(twin).items() if k not in ("architectures", "model_type", "dtype")}
    model = MarianMTModel(MarianConfig(**config))
    attnkit_params = build_model(recipe.model, src_tok.vocab_size, tgt_tok.vocab_size).num_parameters()
    marian_params = sum(p.numel() for p in model.parameters() if p.requires_grad)  # not the fixed sinusoid tables
    print(f"MarianMT: {marian_params:,} parameters (attnkit's model: {attnkit_params:,}); "
          f"vocabularies {src_tok.vocab_size:,} -> {tgt_tok.vocab_size:,}", flush=True)
    del twin

    optimizer = torch.optim.Adam(model.parameters(), lr=t.lr, betas=t.betas, weight_decay=t.weight_decay, fused=True)
    subset = dev_pairs[:recipe.data.dev_max_sentences] if recipe.data.dev_max_sentences else dev_pairs
    target_lang = recipe.data.direction.split("-")[1]
    best_bleu, best_state, step, pending, tokens = None, None, 0, 0, 0
    train_seconds, clock = 0.0, time.monotonic()

    def validate(reason: str) -> None:
        nonlocal best_bleu, best_state
        model.eval()
        hyps = _generate(model, tgt_tok, [p.src for p in subset], src_tok, beam=t.eval_beam)
        model.train()
        bleu = corpus_scores(hyps, [p.tgt for p in subset], target_lang=target_lang)["bleu"].score
        if best_bleu is None or bleu > best_bleu:
            best_bleu, best_state = bleu, copy.deepcopy(model.state_dict())
        event = {"event": "valid", "step": step, "bleu": round(bleu, 2), "best_bleu": round(best_bleu, 2),
                 "train_seconds": round(train_seconds, 1), "reason": reason}
        log.write(json.dumps(event) + "\n")
        log.flush()
        print(f"valid: step {step}, BLEU {bleu:.2f}, best {best_bleu:.2f}", flush=True)

    model.train()
    optimizer.zero_grad(set_to_none=True)
    for batch in loader.iter_from(loader.start(), epochs=t.max_epochs):
        result = model(input_ids=batch.src, attention_mask=batch.src.ne(PAD_ID), decoder_input_ids=batch.tgt_in,
                       decoder_attention_mask=batch.tgt_in.ne(PAD_ID))
        n = batch.num_target_tokens
        loss = label_smoothed_nll(result.logits, batch.tgt_out, smoothing=t.label_smoothing, ignore_index=PAD_ID)
        (loss / max(n, 1) / t.accumulate).backward()
        tokens += n
        pending += 1
        if pending < t.accumulate:
            continue
        pending = 0
        step += 1
        lr = optimizer_update(model, optimizer, step, t, d_model=recipe.model.d_model)  # attnkit's own update
        now = time.monotonic()
        train_seconds += now - clock
        clock = now
        if step % t.log_every == 0:
            event = {"event": "train", "step": step, "loss": round(float(loss) / max(n, 1), 4), "lr": lr,
                     "tokens_per_s": round(tokens / max(train_seconds, 1e-9)), "train_seconds": round(train_seconds, 1)}
            log.write(json.dumps(event) + "\n")
            log.flush()
        done = train_seconds >= 60 * args.minutes or (t.max_steps is not None and step >= t.max_steps)
        if step % t.eval_every == 0 or done:
            validate("time" if done else "eval_every")
            clock = time.monotonic()  # validation time is not training time
        if done:
            break
    if best_state is None:
        validate("end of data")
    model.load_state_dict(best_state)
    model.eval()
    started = time.monotonic()
    hyps = _generate(model, tgt_tok, [p.src for p in test_pairs], src_tok, beam=args.beam)
    decode_seconds = time.monotonic() - started
    (out / "test.hyp").write_text("\n".join(hyps) + "\n", encoding="utf-8")
    scores = corpus_scores(hyps, [p.tgt for p in test_pairs], target_lang=target_lang)
    summary = {"engine": "transformers MarianMT", "parameters": marian_params, "steps": step,
               "train_seconds": round(train_seconds, 1), "tokens_per_s": round(tokens / max(train_seconds, 1e-9)),
               "best_dev_bleu": round(best_bleu, 2), "test_bleu": round(scores["bleu"].score, 2),
               "test_chrf": round(scores["chrf"].score, 2), "bleu_signature": scores["bleu"].signature,
               "test_decode_seconds": round(decode_seconds, 1), "sentences": len(test_pairs)}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(summary), flush=True)
    return 0


# ------------------------------------------------------------------------------------------------ attnkit


def _attnkit_summary(folder: Path, scores: dict, test_file: str, decode_seconds: float) -> dict:
    events = [json.loads(line) for line in (folder / "log.jsonl").read_text(encoding="utf-8").splitlines()]
    trains = [e for e in events if e["event"] == "train"]
    stop = [e for e in events if e["event"] == "stop"][-1]
    from attnkit.models import load_model

    model, _ = load_model(folder / "best")
    return {"engine": "attnkit", "parameters": model.num_parameters(), "steps": stop["step"],
            "train_seconds": stop["elapsed"],
            # None when the run stopped before its first train event (no speed measured)
            "tokens_per_s": round(sum(e["tokens_per_s"] for e in trains) / len(trains)) if trains else None,
            "best_dev_bleu": stop["best_bleu"], "test_bleu": scores["bleu"]["score"], "test_chrf": scores["chrf"]["score"],
            "bleu_signature": scores["bleu"]["signature"], "test_decode_seconds": round(decode_seconds, 1),
            "test_file": test_file}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="configs/cmn-eng-transformer.yaml")
    parser.add_argument("--minutes", type=float, default=60.0, help="training budget of each side (default 60)")
    parser.add_argument("--out", default="runs/versus-marian")
    parser.add_argument("--beam", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1, help="threads of each side (default 1: both run at once)")
    parser.add_argument("--peer", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.peer:
        return run_peer(args)

    recipe = _recipe(args.config, args.minutes)
    if not recipe.data.test:
        parser.error(f"{args.config} names no data.test")
    out = Path(args.out)
    if out.exists():
        parser.error(f"{out} exists: choose another --out")
    out.mkdir(parents=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    ours = subprocess.Popen([sys.executable, "-m", "attnkit", "train", "--config", args.config, "--out", str(out / "attnkit"),
                             "--max-minutes", str(args.minutes), "--threads", str(args.threads)],
                            stdout=(out / "attnkit.log").open("w"), stderr=subprocess.STDOUT, env=env)
    peer = subprocess.Popen([sys.executable, __file__, "--peer", "--config", args.config, "--minutes", str(args.minutes),
                             "--out", str(out / "marian"), "--beam", str(args.beam), "--threads", str(args.threads)],
                            stdout=(out / "marian.log").open("w"), stderr=subprocess.STDOUT, env=env)
    print(f"training both for {args.minutes:g} minutes; logs in {out}/attnkit.log and {out}/marian.log", flush=True)
    if ours.wait() != 0:
        peer.wait()
        print(f"attnkit train failed: see {out}/attnkit.log", file=sys.stderr)
        return 1
    started = time.monotonic()
    evaluation = subprocess.run([sys.executable, "-m", "attnkit", "evaluate", "--model", str(out / "attnkit" / "best"),
                                 "--test", recipe.data.test, "--direction", recipe.data.direction, "--beam", str(args.beam),
                                 "--output", str(out / "attnkit" / "test.hyp"), "--json"],
                                capture_output=True, text=True, env=env)
    decode_seconds = time.monotonic() - started
    if evaluation.returncode != 0:
        print(evaluation.stderr, file=sys.stderr)
        return 1
    ours_summary = _attnkit_summary(out / "attnkit", json.loads(evaluation.stdout), recipe.data.test, decode_seconds)
    if peer.wait() != 0:
        print(f"the MarianMT peer failed: see {out}/marian.log", file=sys.stderr)
        return 1
    peer_summary = json.loads((out / "marian" / "summary.json").read_text(encoding="utf-8"))
    rows = [ours_summary, peer_summary]
    (out / "results.json").write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    print("\n| engine | parameters | steps | train time | target tok/s | best dev BLEU | test BLEU | test chrF |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['engine']} | {r['parameters']:,} | {r['steps']:,} | {r['train_seconds'] / 60:.1f} min | "
              f"{'—' if r['tokens_per_s'] is None else format(r['tokens_per_s'], ',')} | {r['best_dev_bleu']} | {r['test_bleu']} | {r['test_chrf']} |")
    print(f"\nBLEU signature: {ours_summary['bleu_signature']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
