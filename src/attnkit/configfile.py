"""Reading YAML/JSON settings files once, at the edge, with errors that name the file and line."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

__all__ = ["SettingsFileError", "load_yaml", "read_settings_file"]


class SettingsFileError(ValueError):
    """A settings file that cannot be read: the message names the file (and line when known)."""


class _Loader(yaml.SafeLoader):
    """YAML 1.1 reads ``3e-4`` as a string (it wants ``3.0e-4``); learning rates are written the short
    way, so this loader reads any decimal or scientific number as a float."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    """A mapping that names a key twice is refused: YAML would silently keep only the last one (a second
    ``train:`` section would replace the first). Merge keys (``<<: *anchor``) are not names: a key written
    beside one overrides what it merges, as YAML intends."""
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=True)
        try:
            first = seen.get(key)
            seen[key] = key_node.start_mark.line
        except TypeError:  # an unhashable key: the base constructor reports it
            continue
        if first is not None:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first on line {first + 1})", key_node.start_mark)
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?$|^[-+]?\d+\.\d*$"),
    list("-+0123456789."),
)


def load_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # noqa: S506 (a SafeLoader subclass)


def read_settings_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if path.is_dir():
        raise SettingsFileError(f"{path}: is a folder, not a settings file")
    if not path.is_file():
        raise SettingsFileError(f"{path}: no such file")
    try:
        data = load_yaml(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise SettingsFileError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise SettingsFileError(f"{path}:{where} is not valid YAML/JSON: {getattr(err, 'problem', err)}") from None
    if data is None:
        raise SettingsFileError(f"{path}: the file holds no settings (it is empty, or only comments)")
    if not isinstance(data, dict):
        raise SettingsFileError(f"{path}: expected a mapping of settings, got {type(data).__name__}")
    return data
