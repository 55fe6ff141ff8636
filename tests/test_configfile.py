"""The settings-file reader: duplicate keys refused with their line, YAML merge keys kept."""

import pytest
import yaml

from attnkit.configfile import SettingsFileError, load_yaml, read_settings_file


def test_merge_keys_are_not_duplicates_and_a_key_beside_one_overrides_it():
    text = "tokenizer: {src: &spm {kind: sentencepiece, vocab_size: 4000}, tgt: {<<: *spm, vocab_size: 8000}}\n"
    assert load_yaml(text) == {"tokenizer": {"src": {"kind": "sentencepiece", "vocab_size": 4000},
                                             "tgt": {"kind": "sentencepiece", "vocab_size": 8000}}}
    assert load_yaml(text) == yaml.safe_load(text)  # what PyYAML itself makes of it


def test_a_key_written_twice_is_refused_with_both_lines(tmp_path):
    path = tmp_path / "twice.yaml"
    path.write_text("train: {lr: 1e-3}\nmodel: {kind: transformer}\ntrain: {max_steps: 5}\n", encoding="utf-8")
    with pytest.raises(SettingsFileError, match=r"line 3 is not valid YAML/JSON: duplicate key 'train' \(first on line 1\)"):
        read_settings_file(path)
    assert load_yaml("lr: 3e-4")["lr"] == 3e-4  # a short scientific number is a float


@pytest.mark.parametrize("make, says", [
    (lambda p: p.mkdir(), "is a folder, not a settings file"),
    (lambda p: p.write_text("", encoding="utf-8"), "the file holds no settings (it is empty, or only comments)"),
    (lambda p: p.write_text("# train: {lr: 1e-3}\n", encoding="utf-8"), "the file holds no settings"),
])
def test_a_folder_or_an_empty_file_is_named_as_such(tmp_path, make, says):
    path = tmp_path / "recipe.yaml"
    make(path)
    with pytest.raises(SettingsFileError) as caught:
        read_settings_file(path)
    assert str(caught.value).startswith(f"{path}: {says}")
