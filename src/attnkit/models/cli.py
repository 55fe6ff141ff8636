"""``attnkit info``: what a model configuration or a saved model holds, and its parameter counts."""

from __future__ import annotations

import json
from pathlib import Path

from attnkit.cli import UserError
from attnkit.configfile import SettingsFileError, read_settings_file

from .config import ConfigError, config_from_dict, config_to_dict
from .io import build_model, load_model, resolve_model_dir


def add_arguments(parser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", help="a YAML or JSON file: a model config, or a file with a 'model:' section")
    source.add_argument("--model", help="a saved model folder (config.json + model.safetensors), "
                        "or a training --out folder (uses its best/)")
    parser.add_argument("--kind", help="override the config's model kind (e.g. transformer, seq2seq-attention)")
    parser.add_argument("--src-vocab", type=int, default=8000, help="source vocabulary size for --config (default 8000)")
    parser.add_argument("--tgt-vocab", type=int, default=8000, help="target vocabulary size for --config (default 8000)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def read_config_file(path: str | Path) -> dict:
    """A YAML/JSON file as a dict, with errors that name the file."""
    try:
        return read_settings_file(path)
    except SettingsFileError as err:
        raise UserError(str(err)) from None


def with_kind(model_cfg: dict, kind: str) -> dict:
    """``model_cfg`` switched to ``kind``: the keys the new kind does not know are dropped."""
    import dataclasses

    from .config import MODEL_KINDS, RNNConfig, TransformerConfig

    if kind not in MODEL_KINDS:
        raise UserError(f"--kind must be one of {list(MODEL_KINDS)}, got {kind!r}")
    cls = TransformerConfig if kind == "transformer" else RNNConfig
    known = {f.name for f in dataclasses.fields(cls)}
    return {**{k: v for k, v in model_cfg.items() if k in known}, "kind": kind}


def run(args) -> int:
    if args.model:
        try:
            model, meta = load_model(resolve_model_dir(args.model))
        except (FileNotFoundError, ConfigError, ValueError) as err:
            raise UserError(str(err)) from None
    else:
        import torch

        data = read_config_file(args.config)
        model_cfg = data.get("model", data) if isinstance(data, dict) else data
        if not isinstance(model_cfg, dict):
            where = "its 'model' section" if isinstance(data, dict) and "model" in data else "it"
            raise UserError(f"{args.config}: expected a model config (a mapping such as "
                            f"{{kind: transformer, d_model: 256}}), but {where} is {model_cfg!r}")
        model_cfg = dict(model_cfg)
        if args.kind:
            model_cfg = with_kind(model_cfg, args.kind)
        for flag, n in (("--src-vocab", args.src_vocab), ("--tgt-vocab", args.tgt_vocab)):
            if n < 4:
                raise UserError(f"{flag} must be at least 4 (the special tokens), got {n}")
        try:
            config = config_from_dict(model_cfg)
            # Only the parameters' shapes are needed to count them: build on the meta device, which
            # allocates nothing, so a large vocabulary is counted instead of filling the memory.
            with torch.device("meta"):
                model = build_model(config, args.src_vocab, args.tgt_vocab)
        except (ConfigError, TypeError, ValueError) as err:
            raise UserError(f"{args.config}: {err}") from None
    groups: dict[str, int] = {}
    seen = set()
    for name, p in model.named_parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        top = name.split(".")[0]
        groups[top] = groups.get(top, 0) + p.numel()
    report = {"kind": model.config.kind, "parameters": model.num_parameters(), "by_module": groups,
              "src_vocab_size": model.src_vocab_size, "tgt_vocab_size": model.tgt_vocab_size,
              "config": config_to_dict(model.config)}
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"{report['kind']}: {report['parameters']:,} parameters "
          f"(vocabularies: source {model.src_vocab_size:,}, target {model.tgt_vocab_size:,})")
    width = max(len(k) for k in groups)
    for name, n in groups.items():
        print(f"  {name.ljust(width)}  {n:>12,}")
    return 0
