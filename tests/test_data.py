"""Corpus readers: bad input is named by file and line and counted; real data reads completely."""

from __future__ import annotations

import subprocess
import warnings

import pytest

from attnkit.data import (
    DEMO_PHRASES,
    DataError,
    DataWarning,
    Issue,
    Pair,
    cedict_counts,
    cedict_entries,
    cedict_split,
    clean_gloss,
    format_skipped,
    load_cedict,
    read_manythings,
    read_moses,
    read_tsv,
)

ATTR = "CC-BY 2.0 (France) Attribution: tatoeba.org #1 (a) & #2 (b)"


def write(tmp_path, name, content: str | bytes):
    path = tmp_path / name
    if isinstance(content, str):
        content = content.encode("utf-8")
    path.write_bytes(content)
    return path


def manythings(*rows: str) -> str:
    return "".join(row + "\n" for row in rows)


GOOD = [f"Hi.\t你好。\t{ATTR}", f"Run!\t跑！\t{ATTR}", f"I see.\t我明白了。\t{ATTR}"]


def read_quiet(reader, *args, **kwargs):
    """Call a reader expecting exactly one DataWarning; return the report and the warning text."""
    with pytest.warns(DataWarning) as record:
        report = reader(*args, **kwargs)
    assert len(record) == 1
    return report, str(record[0].message)


# --- manythings ------------------------------------------------------------------------------


def test_manythings_direction(tmp_path):
    path = write(tmp_path, "ok.tsv", manythings(*GOOD))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # clean data warns about nothing
        zh_en = read_manythings(path)
    assert [p for p in zh_en.pairs] == [Pair("你好。", "Hi."), Pair("跑！", "Run!"), Pair("我明白了。", "I see.")]
    assert zh_en.skipped == 0 and zh_en.lines == 3 and zh_en.issues == []
    assert str(zh_en.pairs[2].origin) == f"{path}:3"
    en_zh = read_manythings(path, direction="en-zh")
    assert en_zh.pairs[0] == Pair("Hi.", "你好。")
    with pytest.raises(ValueError, match="direction"):
        read_manythings(path, direction="zh-fr")


# Each bad line: (line content, expected words in the reason). It is written as line 2 of 4.
BAD_LINES = {
    "missing separator": (b"Hello \xe4\xbd\xa0\xe5\xa5\xbd", "need at least 2"),
    "space instead of tab": (f"We try. 我们来试试。\t{ATTR}".encode(), "where most lines have 3"),
    "trailing tab": (f"Hi.\t你好\t{ATTR}\t".encode(), "a tab at the end of the line"),
    "empty Chinese side": (f"Hello.\t  \t{ATTR}".encode(), "empty Chinese side"),
    "empty English side": (f"\t你好\t{ATTR}".encode(), "empty English side"),
    "invalid UTF-8": (b"Hello.\t\xe4\xbd\t" + ATTR.encode(), "invalid UTF-8"),
    "over-long line": (("a" * 50 + "\t你好\t" + ATTR).encode(), "English side is 50 characters long"),
    "blank line": (b"   ", "blank line"),
    "NUL byte": (b"Hi.\t\x00\t" + ATTR.encode(), "NUL byte"),
    "carriage return inside": (f"Hi.\t你\r好\t{ATTR}".encode(), "carriage return"),
}


@pytest.mark.parametrize("case", sorted(BAD_LINES))
def test_manythings_bad_line_is_named_and_counted(tmp_path, case):
    bad, words = BAD_LINES[case]
    lines = [GOOD[0].encode(), bad, GOOD[1].encode(), GOOD[2].encode()]
    path = write(tmp_path, "bad.tsv", b"\n".join(lines) + b"\n")
    report, message = read_quiet(read_manythings, path, max_chars=40)
    assert report.skipped == 1 and report.lines == 4
    assert [p.tgt for p in report.pairs] == ["Hi.", "Run!", "I see."]
    assert [p.origin.line for p in report.pairs] == [1, 3, 4]  # provenance survives the skip
    (issue,) = report.issues
    assert (issue.file, issue.line) == (str(path), 2)
    assert words in issue.reason
    assert f"{path}:2: " in message and "skipped 1 of 4 lines" in message

    with pytest.raises(DataError, match=rf"{path}:2: .*{words}.*strict") as err:
        read_manythings(path, max_chars=40, strict=True)
    assert isinstance(err.value, ValueError)


def test_invalid_utf8_names_the_line_among_many(tmp_path):
    lines = [GOOD[0].encode()] * 6 + [b"Hi.\t\xff\xfe\t" + ATTR.encode()] + [GOOD[1].encode()] * 3
    path = write(tmp_path, "mixed.tsv", b"\n".join(lines))  # no final newline either
    report, _ = read_quiet(read_manythings, path)
    assert report.lines == 10 and len(report.pairs) == 9
    assert str(report.issues[0]).startswith(f"{path}:7: invalid UTF-8 (byte 5 of the line is 0xff)")


def test_crlf_and_bom_are_not_bad_lines(tmp_path):
    path = write(tmp_path, "win.tsv", b"\xef\xbb\xbf" + "\r\n".join(GOOD).encode() + b"\r\n")
    report = read_manythings(path)
    assert report.skipped == 0
    assert report.pairs[0] == Pair("你好。", "Hi.") and report.pairs[-1].origin.line == 3


def test_a_file_of_cr_line_ends_is_refused_not_read_as_one_pair(tmp_path):
    """Classic Mac OS line ends (CR alone): the file was read as one line of 3 × 3 columns, taken as one pair
    ("Hi.", "你好。") with the other two sentences dropped without a word."""
    path = write(tmp_path, "mac.tsv", "\r".join(GOOD).encode() + b"\r")
    with pytest.raises(DataError, match=rf"{path}: no usable pairs \(skipped 1 of 1 lines: {path}:1: contains a "
                                        r"carriage return \(CR\) that does not end the line"):
        read_manythings(path)
    with pytest.raises(DataError, match=rf"{path}:1: contains a carriage return"):
        read_manythings(path, strict=True)
    # the same sentences with LF or CRLF line ends read completely
    for end in (b"\n", b"\r\n"):
        assert len(read_manythings(write(tmp_path, "ok.tsv", end.join(s.encode() for s in GOOD) + end))) == 3


def _compressed(kind: str, data: bytes) -> bytes:
    import bz2
    import gzip
    import io
    import lzma
    import zipfile

    if kind == "zip":
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("train.tsv", data)
        return buffer.getvalue()
    return {"gzip": gzip.compress, "bzip2": bz2.compress, "xz": lzma.compress}[kind](data)


@pytest.mark.parametrize("kind", ["gzip", "bzip2", "xz", "zip"])
def test_a_compressed_file_is_named_as_such(tmp_path, kind):
    """Compressed by Python's own compressors: one message saying what the file is, strict or not, instead
    of 'no usable pairs' over a list of invalid UTF-8 lines."""
    data = manythings(*GOOD * 20).encode()
    path = write(tmp_path, "train.tsv.x", _compressed(kind, data))
    for strict in (False, True):
        with pytest.raises(DataError) as err:
            read_manythings(path, strict=strict)
        message = str(err.value)
        assert message.startswith(f"{path} is {'a zip archive' if kind == 'zip' else kind + '-compressed'}")
        assert "UTF-8" not in message
    zh, en = write(tmp_path, "a.zh", "你好\n"), write(tmp_path, "a.en", _compressed(kind, b"hello\n"))
    with pytest.raises(DataError, match=rf"^{en} is "):
        read_moses(zh, en)


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be"])
def test_a_utf16_file_is_named_as_such(tmp_path, encoding):
    data = ("\ufeff" if encoding == "utf-16-be" else "") + manythings(*GOOD)  # Python's utf-16 writes the BOM
    path = write(tmp_path, "notepad.tsv", data.encode(encoding))
    with pytest.raises(DataError, match=rf"^{path} is UTF-16 text .*save it as UTF-8"):
        read_manythings(path)


def test_empty_file_and_no_usable_pairs_are_errors(tmp_path):
    empty = write(tmp_path, "empty.tsv", b"")
    with pytest.raises(DataError, match="empty.tsv: file is empty"):
        read_manythings(empty)
    junk = write(tmp_path, "junk.tsv", "no tabs here\nnor here\n")
    with pytest.raises(DataError, match=r"junk.tsv: no usable pairs \(skipped 2 of 2 lines: .*junk.tsv:1: "):
        read_manythings(junk)
    with pytest.raises(DataError, match="cannot read .*missing.tsv"):
        read_manythings(tmp_path / "missing.tsv")


def test_skip_summary_lists_first_reasons():
    issues = [Issue("a.tsv", n, "blank line") for n in (3, 5, 8, 13)]
    assert format_skipped(0, []) == "skipped 0 lines"
    assert format_skipped(4, issues, total=20, limit=2) == (
        "skipped 4 of 20 lines: a.tsv:3: blank line; a.tsv:5: blank line; and 2 more"
    )


def test_warn_false_is_silent_but_reports(tmp_path):
    path = write(tmp_path, "bad.tsv", manythings(GOOD[0], "oops", GOOD[1]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report = read_manythings(path, warn=False)
    assert report.skipped == 1 and report.issues[0].line == 2


# --- general TSV -------------------------------------------------------------------------------


def test_tsv_column_choice(tmp_path):
    path = write(tmp_path, "three.tsv", "id1\tbonjour\thello\nid2\tmerci\tthanks\n")
    report = read_tsv(path, src_col=2, tgt_col=1)
    assert report.pairs == [Pair("hello", "bonjour"), Pair("thanks", "merci")]
    with pytest.raises(ValueError, match="distinct"):
        read_tsv(path, src_col=1, tgt_col=1)
    with pytest.raises(DataError, match="no usable pairs"):
        read_tsv(path, src_col=0, tgt_col=5)  # every line is too short for column 5


def test_tsv_too_few_columns_for_choice(tmp_path):
    path = write(tmp_path, "two.tsv", "a\tb\nc\td\n")
    with pytest.raises(DataError, match=r"two.tsv:1: found 2 tab-separated columns, need at least 4"):
        read_tsv(path, src_col=0, tgt_col=3, strict=True)
    with pytest.raises(DataError, match="no usable pairs"):
        read_tsv(path, src_col=0, tgt_col=3)


# --- Moses pairs -------------------------------------------------------------------------------


def test_moses_pairs(tmp_path):
    zh = write(tmp_path, "train.zh", "你好\n谢谢\n")
    en = write(tmp_path, "train.en", "hello\nthanks\n")
    report = read_moses(zh, en)
    assert report.pairs == [Pair("你好", "hello"), Pair("谢谢", "thanks")] and report.skipped == 0


def test_moses_mismatched_line_counts_are_refused(tmp_path):
    """A line missing in the middle of one file: pairs 2 and 3 would be (谢谢, bye) and (再见, morning), wrong
    from there on. Skipping the surplus line, as the reader did without strict=True, trained on them."""
    zh = write(tmp_path, "train.zh", "你好\n谢谢\n再见\n早上好\n")
    en = write(tmp_path, "train.en", "hello\nbye\nmorning\n")
    for strict in (False, True):
        with pytest.raises(DataError, match=rf"^{zh}:4: {zh} has 4 lines but {en} has 3: the files must be "
                                            r"line-aligned.*make them the same length$"):
            read_moses(zh, en, strict=strict)
    with pytest.raises(DataError, match=rf"^{en}:4: .*three.zh has 3 lines but {en} has 4"):
        read_moses(write(tmp_path, "three.zh", "你好\n谢谢\n再见\n"), write(tmp_path, "train.en", "a\nb\nc\nd\n"))


def test_moses_blank_lines_at_the_end_of_one_file_are_skipped(tmp_path):
    zh = write(tmp_path, "train.zh", "你好\n谢谢\n\n\u3000\n")  # a blank line and one of a full-width space
    en = write(tmp_path, "train.en", "hello\nthanks\n")
    report, message = read_quiet(read_moses, zh, en)
    assert report.pairs == [Pair("你好", "hello"), Pair("谢谢", "thanks")]
    assert report.skipped == 2 and report.lines == 4
    (issue,) = report.issues
    assert (issue.file, issue.line) == (str(zh), 3) and "has 4 lines but" in issue.reason and "are blank" in issue.reason
    assert "skipped 2 of 4 lines" in message
    with pytest.raises(DataError, match=rf"{zh}:3: .*has 4 lines but .*train.en has 2.*strict"):
        read_moses(zh, en, strict=True)


def test_moses_bad_lines_name_their_file(tmp_path):
    zh = write(tmp_path, "dev.zh", "你好\n\n谢谢\n".encode() + b"\xc3\x28\n")
    en = write(tmp_path, "dev.en", "hello\nempty\nthanks\n" + "x" * 30 + "\n")
    report, _ = read_quiet(read_moses, zh, en, max_chars=20)
    assert report.skipped == 2 and [p.tgt for p in report.pairs] == ["hello", "thanks"]
    assert [(i.file, i.line) for i in report.issues] == [(str(zh), 2), (str(zh), 4)]
    assert "empty source side" in report.issues[0].reason and "invalid UTF-8" in report.issues[1].reason
    long_en = write(tmp_path, "long.en", "hello\nempty\nthanks\n" + "x" * 30 + "\n")
    ok_zh = write(tmp_path, "ok.zh", "你好\n空\n谢谢\n长\n")
    with pytest.raises(DataError, match=rf"{long_en}:4: target side is 30 characters long \(max_chars=20\)"):
        read_moses(ok_zh, long_en, max_chars=20, strict=True)


# --- real data ---------------------------------------------------------------------------------


def wc_l(path) -> int:
    return int(subprocess.run(["wc", "-l", str(path)], capture_output=True, text=True, check=True).stdout.split()[0])


@pytest.mark.parametrize("split", ["train", "dev", "test"])
def test_tatoeba_counts_match_wc(cmn_eng, split):
    path = cmn_eng / f"{split}.tsv"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        report = read_manythings(path)
    assert report.lines == wc_l(path)
    assert len(report.pairs) == wc_l(path) - report.skipped
    assert report.skipped == len(report.issues)
    assert all(p.src and p.tgt for p in report.pairs)


def test_tatoeba_train_known_bad_lines(cmn_eng):
    # Lines 40 and 42 of train.tsv separate English and Chinese with a space instead of a tab: read
    # naively, the attribution would become the "Chinese" side.
    report, _ = read_quiet(read_manythings, cmn_eng / "train.tsv")
    assert [(i.line, i.reason) for i in report.issues] == [
        (40, "found 2 tab-separated columns where most lines have 3"),
        (42, "found 2 tab-separated columns where most lines have 3"),
    ]
    assert not any(p.src.startswith("CC-BY") for p in report.pairs)
    assert report.pairs[0] == Pair("嗨。", "Hi.")


# --- CC-CEDICT ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "gloss, clean",
    [
        ("machine translation", "machine translation"),
        ("deep learning (artificial intelligence)", "deep learning"),
        ("(dialect) to hide oneself", "to hide oneself"),
        ("lit. one stone, two birds", "one stone, two birds"),
        ("to give sb sth", "to give somebody something"),
        ("Évariste Galois (1811-1832), French mathematician", "Évariste Galois, French mathematician"),
        ("CL:個|个[ge4],位[wei4]", None),
        ("variant of 窕[tiao3]", None),
        ("old variant of 私[si1]", None),
        ("erhua variant of 早班[zao3 ban1]", None),
        ("see 獬豸[xie4 zhi4]", None),
        ("see also 看[kan4]", None),
        ("used in 葡萄[pu2 tao5]", None),
        ("(used in 葡萄[pu2 tao5])", None),
        ("abbr. for 書經|书经[Shu1 jing1]", None),
        ("surname Wang", None),
        ("Taiwan pr. [xue2]", None),
        ("Kelan county in Xinzhou 忻州[Xin1 zhou1], Shanxi", None),
        ("to see", "to see"),
    ],
)
def test_clean_gloss(gloss, clean):
    assert clean_gloss(gloss) == clean


def test_cedict_real_entries():
    entries = {zh: (en, split) for zh, en, split in cedict_entries()}
    assert entries["机器翻译"] == ("machine translation", "train")
    assert entries["注意力"] == ("attention", "train")
    assert entries["深度学习"] == ("deep learning", "train")  # "(artificial intelligence)" stripped
    assert entries["苹果"][0] == "apple"  # its "CL:個|个[ge4],顆|颗[ke1]" gloss is not taken
    assert entries["书"][0] == "book"  # the "abbr. for 書經" entry gives way to the next one
    assert entries["王"][0] == "king or monarch"  # "surname Wang" is a reference, not a translation
    assert "机器学习" not in entries  # CC-CEDICT lacks it
    assert "厶" not in entries  # only "old variant of 私[si1]"
    for zh, (en, _) in entries.items():
        assert 1 <= len(zh) <= 8 and 1 <= len(en.split()) <= 6
        assert "[" not in en and "CL:" not in en


def test_cedict_split_is_deterministic_and_disjoint():
    counts = cedict_counts()
    assert counts["kept"] == counts["train"] + counts["dev"] + counts["test"]
    assert counts["entries"] == counts["kept"] + sum(v for k, v in counts.items() if k.startswith("dropped"))
    assert counts["kept"] > 90_000 and 0.005 < counts["dev"] / counts["kept"] < 0.02
    train, dev, test = (load_cedict(s) for s in ("train", "dev", "test"))
    assert (len(train), len(dev), len(test)) == (counts["train"], counts["dev"], counts["test"])
    heads = [{p.src for p in split} for split in (train, dev, test)]
    assert not (heads[0] & heads[1]) and not (heads[0] & heads[2]) and not (heads[1] & heads[2])
    assert set(DEMO_PHRASES) & set().union(*heads) <= heads[0]
    # the split depends on the headword only: fixed values, so a change of hash shows up here
    assert [cedict_split(w) for w in ("一夜情", "一级", "机器翻译")] == ["dev", "test", "train"]
    assert [p.src for p in dev[:3]] == [p.src for p in load_cedict("dev")[:3]]
    assert str(dev[0].origin).startswith("CC-CEDICT:")


def test_cedict_direction():
    en_zh = load_cedict("dev", direction="en-zh")
    zh_en = load_cedict("dev")
    assert [(p.tgt, p.src) for p in en_zh] == [(p.src, p.tgt) for p in zh_en]
    with pytest.raises(ValueError, match="split"):
        load_cedict("valid")


def test_cedict_focus_keeps_the_entries_sharing_a_character():
    focus = "机器翻译"
    kept = load_cedict("train", focus=focus)
    # independent check: the plain filter over the whole split
    expected = [p for p in load_cedict("train") if set(p.src) & set(focus)]
    assert [(p.src, p.tgt) for p in kept] == [(p.src, p.tgt) for p in expected]
    heads = {p.src for p in kept}
    assert {"翻译", "机器翻译"} <= heads and "你好" not in heads
    assert 100 < len(kept) < len(load_cedict("train")) / 10
    # punctuation and Latin letters in the focus text select nothing by themselves
    assert [p.src for p in load_cedict("train", focus="机器翻译, MT!")] == [p.src for p in kept]
    en_zh = load_cedict("train", direction="en-zh", focus=focus)
    assert [(p.tgt, p.src) for p in en_zh] == [(p.src, p.tgt) for p in kept]
    with pytest.raises(ValueError, match="focus must contain Chinese characters"):
        load_cedict("train", focus="machine translation")
