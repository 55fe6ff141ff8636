"""``attnkit demo [--minutes M] [--cache DIR] [--retrain] [PHRASE ...]``."""

from __future__ import annotations

import os
from pathlib import Path

from attnkit.cli import UserError

PHRASES = ("机器翻译", "注意力", "深度学习", "机器学习", "神经网络", "人工智能", "你好", "谢谢")

# The demo recipe: sized so that a 2-core CPU learns the dictionary's common phrases in minutes.
RECIPE = {
    "data": {"format": "cedict", "dev_max_sentences": 200, "max_len": 32},
    "tokenizer": {"src": {"kind": "char"}, "tgt": {"kind": "sentencepiece", "vocab_size": 4000}},
    "model": {"kind": "transformer", "d_model": 256, "heads": 4, "encoder_layers": 3, "decoder_layers": 3,
              "ffn_dim": 1024, "dropout": 0.1},
    # A short warm-up and a high peak: the budget allows only ~1,000 updates.
    "train": {"max_steps": 1_000_000, "eval_every": 400, "log_every": 25, "max_tokens": 3072, "warmup": 300,
              "lr": 1.5e-3, "patience": None},
}


def default_cache() -> Path:
    base = os.environ.get("ATTNKIT_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache", "attnkit")
    return Path(base) / "demo"


def add_arguments(parser) -> None:
    parser.add_argument("phrases", nargs="*", help=f"Chinese phrases to translate (default: {' '.join(PHRASES)})")
    parser.add_argument("--minutes", type=float, default=8.0, help="training time budget in minutes (default 8)")
    parser.add_argument("--cache", type=Path, default=None, help="where the demo model is kept (default: ~/.cache/attnkit/demo)")
    parser.add_argument("--retrain", action="store_true", help="train again even if a cached model exists")
    parser.add_argument("--heatmap", type=Path, default=Path("demo-attention.png"),
                        help="where to write the attention heatmap (default: ./demo-attention.png)")
    parser.add_argument("--beam", type=int, default=4, help="beam size (default 4)")


def run(args) -> int:
    import shutil

    from attnkit.decode.translator import Translator
    from attnkit.train import recipe_from_dict, train

    if args.minutes <= 0:
        raise UserError(f"--minutes must be > 0, got {args.minutes}")
    cache = args.cache or default_cache()
    model_dir = cache / "best"
    if args.retrain or not (model_dir / "model.safetensors").is_file():
        if cache.exists():
            shutil.rmtree(cache)
        recipe = recipe_from_dict({**RECIPE, "train": {**RECIPE["train"], "max_minutes": args.minutes}})
        print(f"training a small Transformer on CC-CEDICT for up to {args.minutes:g} minutes (cached in {cache})")
        train(recipe, cache)
    else:
        print(f"using the cached demo model in {model_dir} (--retrain to train again)")
    translator = Translator.load(model_dir)
    phrases = args.phrases or list(PHRASES)
    results = translator.translate(phrases, beam=args.beam, need_attention=True)
    width = max(len(p) for p in phrases)
    print()
    for r in results:
        print(f"  {r.source}{'　' * (width - len(r.source))}  →  {r.text}")
    _heatmap(results[0], args.heatmap)
    return 0


def _heatmap(result, path: Path) -> None:
    from attnkit.viz import NoCJKFontError, plot_attention, select_heads

    try:
        weights = select_heads(result.attention, layer=-1, head="mean")
        plot_attention(weights, result.src_pieces, result.tgt_pieces + ["</s>"], path,
                       title=f"{result.source} → {result.text} (last layer, mean of heads)")
    except NoCJKFontError as err:
        print(f"\nno heatmap written: {err}")
        return
    print(f"\ncross-attention of the last decoder layer for {result.source!r} written to {path}")
