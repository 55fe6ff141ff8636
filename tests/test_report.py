"""attnkit report: one self-contained HTML page per input file, checked in a real browser.

- nothing on the page can reach the network: no http(s) reference, no external src/href, and a
  Content-Security-Policy of ``default-src 'none'`` (a tampered script is blocked: tested);
- headless Chromium, driven over the DevTools protocol (``--remote-debugging-pipe``, no extra
  package), loads it with no console error, exception or network request; the script builds one cell
  per weight, switching head or layer changes the shading to exactly those weights, and hovering or
  keyboard focus shades the tokens attended to. The error capture is proven on a deliberately broken
  page (negative controls), so a silent pass cannot hide a broken capture;
- the embedded weights are the model's: recomputed by teacher forcing the model on its own output;
- hostile text (``<script>``, ``&``, ``</script>`` in sentences and pieces) is shown as text.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from attnkit.cli import main
from attnkit.decode.translator import Translation, Translator
from attnkit.models import RNNConfig, TransformerConfig, build_model, save_model
from attnkit.text import save_tokenizers
from attnkit.text.char import CharTokenizer
from attnkit.viz.report import FONT_STACK, render_report, report_data, write_report

BOS, EOS = 1, 2
HOSTILE = '<script>alert("x")</script> & </script><!-- 你好'
SOURCES = ["机器翻译", "注意力", "深度学习很有趣。", "我们明天去公园。", HOSTILE]
BEAM = 2


pytestmark = pytest.mark.usefixtures("one_thread")


# ----------------------------------------------------------------------------------- the report


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A random 2-layer, 4-head Transformer with character tokenisers, saved as a model folder. A small
    target vocabulary and an untied output layer make some outputs end with EOS and others run to the
    length limit (no EOS step), so both row layouts reach the report."""
    torch.manual_seed(0)
    src, tgt = CharTokenizer.train(SOURCES), CharTokenizer.train(["the cat sat"])
    config = TransformerConfig(d_model=32, heads=4, encoder_layers=2, decoder_layers=2, ffn_dim=64,
                               dropout=0.0, tie_output=False)
    folder = tmp_path_factory.mktemp("model")
    save_model(build_model(config, src.vocab_size, tgt.vocab_size), folder)
    save_tokenizers(folder, src, tgt)
    return folder


@pytest.fixture(scope="module")
def report(model_dir, tmp_path_factory) -> Path:
    """``attnkit report`` on an input with a byte-order mark, a blank line, CRLF and the hostile line."""
    folder = tmp_path_factory.mktemp("report")
    lines = ["\ufeff" + SOURCES[0], "", "   ", *SOURCES[1:]]
    (folder / "input.txt").write_bytes("\r\n".join(lines).encode("utf-8") + b"\r\n")
    out = folder / "report.html"
    assert main(["report", "--model", str(model_dir), "--input", str(folder / "input.txt"),
                 "--output", str(out), "--beam", str(BEAM)]) == 0
    return out


def embedded(page: str) -> dict:
    blocks = re.findall(r'<script type="application/json" id="attnkit-data">(.*?)</script>', page, re.S)
    assert len(blocks) == 1
    return json.loads(blocks[0])


def url_attributes(page: str) -> list[tuple[str, str, str]]:
    """Every attribute of every tag that can make a browser fetch something."""
    from html.parser import HTMLParser

    found = []

    class Parser(HTMLParser):
        def handle_starttag(self, tag, attrs):
            found.extend((tag, k, v) for k, v in attrs
                         if k in ("src", "href", "srcset", "action", "formaction", "poster", "data", "background", "ping"))

    Parser().feed(page)
    return found


def test_nothing_on_the_page_can_reach_the_network(report):
    page = report.read_text(encoding="utf-8")
    assert "http://" not in page and "https://" not in page
    assert "//" not in re.sub(r"<script>.*?</script>", "", page, flags=re.S)  # no protocol-relative URL either
    assert url_attributes(page) == [("link", "href", "data:,")]  # the empty favicon; nothing else
    assert "url(" not in page and "@import" not in page and "@font-face" not in page
    csp = re.search(r'<meta http-equiv="Content-Security-Policy" content="([^"]+)">', page).group(1)
    assert "default-src 'none'" in csp and "unsafe-inline" not in csp.split("script-src")[1].split(";")[0]
    assert page.count("<script") == 2  # the JSON data block and the one inline script


def test_embedded_weights_are_the_models_teacher_forced_attention(report, model_dir):
    data = embedded(report.read_text(encoding="utf-8"))
    sentences = data["sentences"]
    assert [s["source"] for s in sentences] == SOURCES  # BOM, blank lines and CRLF handled
    translator = Translator.load(model_dir)
    model, src_tok, tgt_tok = translator.model, translator.src_tok, translator.tgt_tok
    piece_id = {tgt_tok.id_to_piece(i): i for i in range(tgt_tok.vocab_size)}
    expected = translator.translate(SOURCES, beam=BEAM, need_attention=True)
    layouts = set()
    for s, t in zip(sentences, expected):
        assert (s["text"], s["src"]) == (t.text, t.src_pieces)
        assert s["src"] == [src_tok.id_to_piece(i) for i in src_tok.encode(s["source"])] + ["</s>"]
        tokens = [piece_id[p] for p in (s["tgt"][:-1] if s["eos_row"] else s["tgt"])]
        assert tokens == [piece_id[p] for p in t.tgt_pieces]
        # Independent of the decoder: one teacher-forced pass over the output the report shows.
        target = tokens + [EOS] if s["eos_row"] else tokens
        src = torch.tensor([src_tok.encode(s["source"]) + [EOS]])
        with torch.no_grad():
            _, maps = model(src, torch.tensor([[BOS] + target[:-1]]), need_attention=True)
        forced = torch.stack([m[0] for m in maps]).double().numpy()  # (layers, heads, i, j)
        weights = np.array(s["attention"])
        assert weights.shape == forced.shape == (2, 4, len(s["tgt"]), len(s["src"]))
        np.testing.assert_allclose(weights, forced, atol=1e-4)
        np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-3)  # each row is a distribution
        layouts.add(s["eos_row"])
    assert layouts == {True, False}, "the model fixture should give both row layouts: pick another seed"


def test_rows_follow_the_decoder_eos_step_or_its_absence(tmp_path):
    """An EOS step adds a ``</s>`` row; a translation cut at the length limit has none; batch padding
    columns (exactly 0) are dropped; a shape that fits neither is an error, as is no attention."""
    w = torch.softmax(torch.randn(1, 2, 3, 4), -1)
    with_eos = Translation("机器", "ab", ["机", "器", "学", "</s>"], ["a", "b"], -1.0, w)
    cut = Translation("机器", "abc", ["机", "器", "学", "</s>"], ["a", "b", "c"], -1.0, w)
    halves = torch.tensor([0.5, 0.5, 0.0, 0.0]).expand(1, 2, 3, 4)  # a 2-piece source padded to 4 columns
    padded = Translation("机器", "ab", ["机", "</s>"], ["a", "b"], -1.0, halves)
    data = embedded(render_report([with_eos, cut, padded]))["sentences"]
    assert data[0]["tgt"] == ["a", "b", "</s>"] and data[0]["eos_row"]
    assert data[1]["tgt"] == ["a", "b", "c"] and not data[1]["eos_row"]
    assert np.array(data[2]["attention"]).shape == (1, 2, 3, 2)
    with pytest.raises(ValueError, match="does not match"):
        render_report([Translation("机器", "a", ["机", "器", "学", "</s>"], ["a"], -1.0, w)])
    with pytest.raises(ValueError, match="no attention"):
        write_report([Translation("机", "a", ["机", "</s>"], ["a"], -1.0)], tmp_path / "r.html")
    with pytest.raises(ValueError, match="NaN"):
        render_report([Translation("机器", "ab", ["机", "器", "学", "</s>"], ["a", "b"], -1.0, w * float("nan"))])


def test_pieces_no_font_draws_are_labelled_by_their_escapes_as_in_the_heatmaps():
    """A control character decoded from a byte piece (an undertrained model's \\x02) was a blank label on the
    page: the axis labels write it as its escape, as the heatmaps do; the texts themselves are kept."""
    w = torch.softmax(torch.randn(1, 1, 3, 3), -1)
    t = Translation("机\u200b器", "a\x02", ["机", "\u200b", "</s>"], ["a", "\x02"], -1.0, w)
    (s,) = report_data([t])["sentences"]
    assert s["src"] == ["机", "\\u200b", "</s>"] and s["tgt"] == ["a", "\\x02", "</s>"]
    assert (s["source"], s["text"]) == (t.source, t.text)


def scaled_translations() -> list[Translation]:
    """A sentence of probabilities, and one of ReLU attention weights (w = max(s, 0), unbounded): twice the
    first's, so a cell shaded at the middle of its scale should have the other's 0.5 cell's shade."""
    from attnkit.attention import relu

    probabilities = torch.tensor([[[[0.5, 0.5], [1.0, 0.0]]]])  # (layers, heads, i, j): a row "a", then EOS
    relu_weights = relu(torch.tensor([[[[2.5, 1.25], [1.8, -0.3]]]]))
    return [Translation("机器", "a", ["机", "</s>"], ["a"], -1.0, probabilities),
            Translation("器机", "a", ["器", "</s>"], ["a"], -1.0, relu_weights)]


def test_the_colour_scale_is_0_to_1_for_probabilities_and_the_largest_weight_above(tmp_path):
    probabilities, relu_weights = report_data(scaled_translations())["sentences"]
    assert probabilities["scale"] == {"low": 0.0, "high": 1.0, "note": None}
    assert relu_weights["scale"]["low"] == 0.0 and relu_weights["scale"]["high"] == 2.5
    assert "exceed 1" in relu_weights["scale"]["note"]


def hostile_translation() -> Translation:
    src = ["<script>", "&amp;", "</script>", "<!--", "</s>"]
    tgt = ["a", " & ", "</script>"]
    return Translation(HOSTILE, 'a & b <b>bold</b> </script>', src, tgt, -2.5,
                       torch.softmax(torch.randn(2, 2, len(tgt) + 1, len(src)), -1))


def test_hostile_text_is_escaped_everywhere(tmp_path):
    t = hostile_translation()
    page = render_report([t], title="<i>title</i> & co", model_info={"model": "<b>dir</b>"})
    assert page.count("<script") == 2 and page.count("</script>") == 2
    assert "<script>alert" not in page and "<!--" not in page and "<b>" not in page and "<i>" not in page
    assert "\\u003cscript\\u003ealert" in page  # in the JSON block, "<" is written as \u003c
    assert html.escape(HOSTILE) in page and html.escape(t.text) in page
    assert "<title>&lt;i&gt;title&lt;/i&gt; &amp; co</title>" in page and "&lt;b&gt;dir&lt;/b&gt;" in page
    (s,) = embedded(page)["sentences"]  # the JSON block reads back exactly
    assert (s["source"], s["text"], s["src"], s["tgt"][:-1]) == (t.source, t.text, t.src_pieces, t.tgt_pieces)


def test_command_errors_name_the_problem(model_dir, tmp_path, capsys):
    def run(*args):
        code = main(["report", "--model", str(model_dir), "--output", str(tmp_path / "r.html"), *args])
        return code, capsys.readouterr().err

    code, err = run("--input", str(tmp_path / "missing.txt"))
    assert code == 2 and "missing.txt: no such file" in err
    bad = tmp_path / "bad.txt"
    bad.write_bytes("机器翻译\n注意力\n".encode("utf-8") + b"bad \xff byte\n")
    code, err = run("--input", str(bad))
    assert code == 2 and "bad.txt:3: not valid UTF-8 (byte 0xff at column 5)" in err
    blank = tmp_path / "blank.txt"
    blank.write_text("\n  \n", encoding="utf-8")
    code, err = run("--input", str(blank))
    assert code == 2 and "no sentences" in err
    fixed = tmp_path / "fixed"
    src = CharTokenizer.train(SOURCES)
    save_model(build_model(RNNConfig(kind="seq2seq-fixed", embed_dim=8, hidden=8), src.vocab_size, src.vocab_size), fixed)
    save_tokenizers(fixed, src, src)
    good = tmp_path / "good.txt"
    good.write_text("\n".join(SOURCES), encoding="utf-8")
    code = main(["report", "--model", str(fixed), "--input", str(good), "--output", str(tmp_path / "r.html")])
    assert code == 2 and "no attention" in capsys.readouterr().err
    code, _ = run("--input", str(good), "--max-sentences", "2", "--beam", "1")
    assert code == 0
    assert [s["source"] for s in embedded((tmp_path / "r.html").read_text("utf-8"))["sentences"]] == SOURCES[:2]


# ------------------------------------------------------------------------------- a real browser


CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--hide-scrollbars", "--remote-debugging-pipe"]


# Puts the pipe ends on fds 3 and 4 and execs Chromium: a tiny trampoline process rather than a
# preexec_fn, which is unsafe in a process with threads (torch's, pytest's). Copies above 9 first:
# dup2(3, 3) would do nothing and leave the descriptor close-on-exec.
MOVE_FDS = """
import fcntl, os, sys
fds = [int(a) for a in sys.argv[1:3]]
copies = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in fds]
for target, copy in zip((3, 4), copies):
    os.dup2(copy, target)
for fd in fds + copies:
    if fd not in (3, 4):
        os.close(fd)
os.execv(sys.argv[3], sys.argv[3:])
"""


class Browser:
    """Headless Chromium driven over the DevTools protocol on a pipe: Chromium reads commands from
    fd 3 and writes replies and events to fd 4, each a JSON message ended by a NUL byte."""

    def __init__(self, binary: str):
        self.profile = tempfile.mkdtemp(prefix="attnkit-chromium-")
        to_read, self._to_chrome = os.pipe()
        self._from_chrome, from_write = os.pipe()
        self.log = open(Path(self.profile) / "stderr.txt", "wb")
        command = [sys.executable, "-c", MOVE_FDS, str(to_read), str(from_write), binary, *CHROMIUM_FLAGS,
                   f"--user-data-dir={self.profile}", "about:blank"]
        self.proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log,
                                     pass_fds=(to_read, from_write), env={**os.environ, "OMP_NUM_THREADS": "1"})
        os.close(to_read)
        os.close(from_write)
        self._next, self._replies, self.events, self._closed = 0, {}, [], False
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        buffer = b""
        while chunk := os.read(self._from_chrome, 1 << 16):
            buffer += chunk
            *messages, buffer = buffer.split(b"\0")
            with self._cond:
                for raw in messages:
                    message = json.loads(raw)
                    if "id" in message:
                        self._replies[message["id"]] = message
                    else:
                        self.events.append(message)
                self._cond.notify_all()
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def send(self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 30):
        with self._cond:
            self._next += 1
            n = self._next
        message = {"id": n, "method": method, "params": params or {}, **({"sessionId": session} if session else {})}
        os.write(self._to_chrome, json.dumps(message).encode() + b"\0")
        with self._cond:
            if not self._cond.wait_for(lambda: n in self._replies or self._closed, timeout) or n not in self._replies:
                raise TimeoutError(f"{method}: no reply from Chromium (log: {self.stderr()})")
            reply = self._replies.pop(n)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply["result"]

    def wait_for_event(self, method: str, session: str, timeout: float = 30) -> None:
        with self._cond:
            if not self._cond.wait_for(lambda: self._closed or any(
                    e["method"] == method and e.get("sessionId") == session for e in self.events), timeout):
                raise TimeoutError(f"{method} never came (log: {self.stderr()})")

    def stderr(self) -> str:
        return (Path(self.profile) / "stderr.txt").read_text(errors="replace")[-2000:]

    def open(self, path: Path) -> "Page":
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Runtime", "Log", "Page", "Network", "DOM", "CSS"):
            self.send(f"{domain}.enable", session=session)
        self.send("Emulation.setDeviceMetricsOverride",
                  {"width": 1100, "height": 900, "deviceScaleFactor": 1, "mobile": False}, session=session)
        self.send("Page.navigate", {"url": path.resolve().as_uri()}, session=session)
        self.wait_for_event("Page.loadEventFired", session)
        return Page(self, target, session)

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=10)
            self.proc.wait(timeout=10)
        except Exception:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
        os.close(self._to_chrome)
        self._reader.join(timeout=10)  # it ends at the end of Chromium's output
        if not self._reader.is_alive():
            os.close(self._from_chrome)
        shutil.rmtree(self.profile, ignore_errors=True)


class Page:
    def __init__(self, browser: Browser, target: str, session: str):
        self.browser, self.target, self.session = browser, target, session

    def evaluate(self, expression: str):
        reply = self.browser.send("Runtime.evaluate", {"expression": expression, "returnByValue": True},
                                  session=self.session)
        if "exceptionDetails" in reply:
            raise AssertionError(f"{expression[:60]}…: {reply['exceptionDetails']}")
        return reply["result"].get("value")

    def _events(self, *methods):
        self.evaluate("0")  # a round trip: events the page sent before it have arrived
        with self.browser._cond:
            return [e["params"] for e in self.browser.events
                    if e.get("sessionId") == self.session and e["method"] in methods]

    def errors(self) -> list[str]:
        """Uncaught exceptions, console.error/assert, browser-logged errors (failed loads, blocked
        scripts) and dialogs (alert() would mean injected script ran)."""
        found = []
        for p in self._events("Runtime.exceptionThrown", "Runtime.consoleAPICalled", "Log.entryAdded",
                              "Page.javascriptDialogOpening"):
            if "exceptionDetails" in p:
                details = p["exceptionDetails"]
                found.append(f"exception: {details.get('exception', {}).get('description') or details['text']}")
            elif "type" in p and "args" in p:
                if p["type"] in ("error", "assert"):
                    text = " ".join(str(a.get("value", a.get("description"))) for a in p["args"])
                    found.append(f"console.{p['type']}: {text}")
            elif "entry" in p:
                if p["entry"]["level"] == "error":
                    found.append(f"log: {p['entry']['text']}")
            else:
                found.append(f"dialog: {p.get('message')}")
        return found

    def requests(self) -> list[str]:
        return [p["request"]["url"] for p in self._events("Network.requestWillBeSent")]

    def hover(self, selector: str) -> None:
        x, y = self.evaluate(f"(function () {{ var r = document.querySelector({json.dumps(selector)})"
                             ".getBoundingClientRect(); return [r.left + r.width / 2, r.top + r.height / 2]; })()")
        self.browser.send("Input.dispatchMouseEvent", {"type": "mouseMoved", "x": x, "y": y}, session=self.session)

    def press(self, key: str, code: str, key_code: int) -> None:
        for kind in ("rawKeyDown", "keyUp"):
            self.browser.send("Input.dispatchKeyEvent", {"type": kind, "key": key, "code": code,
                                                         "windowsVirtualKeyCode": key_code}, session=self.session)

    def fonts(self, selector: str) -> list[dict]:
        """The system fonts Chromium actually drew a node's text with (family and glyph count)."""
        send = self.browser.send
        root = send("DOM.getDocument", session=self.session)["root"]["nodeId"]
        node = send("DOM.querySelector", {"nodeId": root, "selector": selector}, session=self.session)["nodeId"]
        return send("CSS.getPlatformFontsForNode", {"nodeId": node}, session=self.session)["fonts"]

    def screenshot(self) -> bytes:
        return base64.b64decode(self.browser.send("Page.captureScreenshot", {"format": "png"}, session=self.session)["data"])

    def close(self) -> None:
        self.browser.send("Target.closeTarget", {"targetId": self.target})


@pytest.fixture(scope="module")
def browser():
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        pytest.skip("Chromium not found on PATH: `./setup.sh dev` installs it (Debian's chromium package)")
    b = Browser(binary)
    yield b
    b.close()


@pytest.fixture
def open_page(browser):
    pages = []

    def opener(path: Path) -> Page:
        pages.append(browser.open(path))
        return pages[-1]

    yield opener
    for page in pages:
        page.close()


# Negative controls: the same capture must see what it is there to see, or its silence means nothing.


def test_capture_sees_exceptions_console_errors_and_network_requests(open_page, tmp_path):
    broken = tmp_path / "broken.html"
    broken.write_text('<!DOCTYPE html><html><body><img src="http://192.0.2.1/x.png">'
                      '<script>console.error("deliberate console error"); throw new Error("deliberate exception");</script>'
                      "</body></html>", encoding="utf-8")
    page = open_page(broken)
    errors = page.errors()
    assert any("deliberate exception" in e and e.startswith("exception") for e in errors), errors
    assert any(e == "console.error: deliberate console error" for e in errors), errors
    assert "http://192.0.2.1/x.png" in page.requests()


def test_capture_sees_a_script_the_pages_policy_blocks(open_page, report, tmp_path):
    tampered = tmp_path / "tampered.html"
    text = report.read_text(encoding="utf-8")
    tampered.write_text(text.replace("'use strict';", "'use strict'; window.x = 1;", 1), encoding="utf-8")
    page = open_page(tampered)
    assert any("Content Security Policy" in e for e in page.errors()), page.errors()
    assert page.evaluate("document.querySelectorAll('td').length") == 0  # it really did not run


# The report itself.


CELLS = ("Array.from(document.querySelectorAll('#s{n} table.heat td'))"
         ".map(function (td) {{ return [+td.getAttribute('data-w'), td.style.backgroundColor]; }})")
CHIPS = ("Array.from(document.querySelectorAll('#s{n} .strip.{side} .tok'))"
         ".map(function (c) {{ return c.getAttribute('data-w'); }})")


def chinese_font_families() -> set[str]:
    """The CJK fonts the report names, and any font fontconfig says covers Chinese."""
    named = {"Noto Sans CJK SC", "Noto Sans SC", "Source Han Sans SC", "WenQuanYi Micro Hei", "PingFang SC",
             "Hiragino Sans GB", "Microsoft YaHei"}
    assert all(f'"{name}"' in FONT_STACK for name in named)
    fc_list = shutil.which("fc-list")
    listed = subprocess.run([fc_list, ":lang=zh", "family"], capture_output=True, text=True).stdout if fc_list else ""
    return named | {name.strip() for line in listed.splitlines() for name in line.split(",")}


def choose(page: Page, n: int, role: str, value: int) -> None:
    page.evaluate(f"(function () {{ var s = document.getElementById('s{n}-{role}'); s.value = '{value}';"
                  " s.dispatchEvent(new Event('change', {bubbles: true})); })()")


def test_report_opens_in_chromium_without_errors_and_the_view_works(open_page, report, tmp_path):
    page = open_page(report)
    assert page.errors() == []
    assert page.requests() == [report.resolve().as_uri()]  # the page itself, nothing else
    sentences = embedded(report.read_text(encoding="utf-8"))["sentences"]
    for n, s in enumerate(sentences, start=1):  # one cell per weight, in every sentence
        assert page.evaluate(f"document.querySelectorAll('#s{n} table.heat td').length") == len(s["tgt"]) * len(s["src"])
    assert page.evaluate("document.querySelector('#s5 h2 .source').textContent") == HOSTILE

    # bertviz users saw boxes for Chinese: here every glyph of 机器翻译 is drawn by a Chinese font.
    fonts = page.fonts("#s1 h2 .source")
    assert sum(f["glyphCount"] for f in fonts) == len(SOURCES[0]) and not any(f["isCustomFont"] for f in fonts)
    assert {f["familyName"] for f in fonts} <= chinese_font_families(), fonts

    s = sentences[0]
    att = np.array(s["attention"])  # (layers, heads, i, j)
    rows, cols = att.shape[2:]

    def cells():
        values = page.evaluate(CELLS.format(n=1))
        return np.array([v for v, _ in values]).reshape(rows, cols), [c for _, c in values]

    # Layers and heads are named counting from 1, as `attnkit plot` names them; the last layer is chosen.
    menu = "Array.from(document.querySelectorAll('#s1-{role} option')).map(function (o) {{ return o.textContent; }})"
    assert page.evaluate(menu.format(role="layer")) == ["layer 1", "layer 2", "average of layers"]
    assert page.evaluate(menu.format(role="head")) == ["head 1", "head 2", "head 3", "head 4", "mean of heads"]
    assert page.evaluate("(function (s) { return s.options[s.selectedIndex].textContent; })"
                         "(document.getElementById('s1-layer'))") == "layer 2"

    weights, shades = cells()  # default: the last layer, mean of heads
    np.testing.assert_allclose(weights, att[-1].mean(0), atol=1e-4)
    choose(page, 1, "head", 0)
    weights0, shades0 = cells()
    np.testing.assert_array_equal(weights0, att[-1, 0])
    assert shades0 != shades  # the shading follows the head
    choose(page, 1, "layer", 0)
    choose(page, 1, "head", 3)
    np.testing.assert_array_equal(cells()[0], att[0, 3])
    choose(page, 1, "layer", -1)
    choose(page, 1, "head", -1)
    np.testing.assert_allclose(cells()[0], att.mean((0, 1)), atol=1e-4)

    # Hover an output token: the source tokens are shaded by its row; the mouse on a source token
    # (in the table's header) shades the output tokens by its column.
    m = att.mean((0, 1))
    page.hover("#s1 .strip.tgt .tok[data-i='1']")
    assert [float(w) for w in page.evaluate(CHIPS.format(n=1, side="src"))] == pytest.approx(m[1], abs=1e-4)
    assert page.evaluate("document.querySelector('#s1 tbody tr:nth-child(2)').classList.contains('on')")
    page.hover("#s1 thead th[data-j='2']")
    assert [float(w) for w in page.evaluate(CHIPS.format(n=1, side="tgt"))] == pytest.approx(m[:, 2], abs=1e-4)
    assert page.evaluate(CHIPS.format(n=1, side="src")) == [None] * cols
    # Keyboard: focus the first source token, then the right arrow moves to the second.
    page.evaluate("document.querySelector('#s1 .strip.src .tok').focus()")
    page.press("ArrowRight", "ArrowRight", 39)
    assert page.evaluate("document.activeElement.getAttribute('data-j')") == "1"
    assert [float(w) for w in page.evaluate(CHIPS.format(n=1, side="tgt"))] == pytest.approx(m[:, 1], abs=1e-4)
    assert page.errors() == []

    from matplotlib.image import imread

    picture = page.screenshot()
    (tmp_path / "report.png").write_bytes(picture)
    image = imread(io.BytesIO(picture))
    assert image.shape[:2] == (900, 1100) and image[..., :3].std() > 0.05  # not a blank page


def test_weights_above_1_are_shaded_on_their_own_scale_and_the_legend_says_so(open_page, tmp_path):
    """The shading assumed weights in [0, 1]: ReLU weights of 1.8 and 2.5 were both black, and the legend
    still ran from 0 to 1. Each sentence's scale now runs to its largest weight when that exceeds 1."""
    page = open_page(write_report(scaled_translations(), tmp_path / "scaled.html"))
    assert page.errors() == []
    probabilities, relu_weights = ({w: c for w, c in page.evaluate(CELLS.format(n=n))} for n in (1, 2))  # weight: shade
    assert len(set(relu_weights.values())) == 4  # 2.5, 1.25, 1.8 and 0 each have a shade of their own
    # the same place on each sentence's scale, the same shade: 1.25 of 2.5 as 0.5 of 1, 2.5 as 1
    assert relu_weights[1.25] == probabilities[0.5] and relu_weights[2.5] == probabilities[1.0]
    assert relu_weights[0.0] == probabilities[0.0]
    legend = "Array.from(document.querySelectorAll('#s{n} .legend > span')).map(function (e) {{ return e.textContent; }})"
    assert page.evaluate(legend.format(n=1)) == ["0", "", "1"]
    low, bar, high, note = page.evaluate(legend.format(n=2))
    assert (low, high) == ("0", "2.5") and "exceed 1" in note


def test_hostile_page_shows_text_and_runs_nothing_injected(open_page, tmp_path):
    t = hostile_translation()
    page = open_page(write_report([t], tmp_path / "hostile.html", title="<i>x</i>"))
    assert page.errors() == []
    assert page.evaluate("document.querySelector('#s1 h2 .source').textContent") == HOSTILE
    assert page.evaluate("document.querySelector('#s1 .translation .text').textContent") == t.text
    headers = "Array.from(document.querySelectorAll('#s1 thead th[data-j]')).map(function (th) { return th.textContent; })"
    assert page.evaluate(headers) == t.src_pieces
    assert page.evaluate("document.querySelectorAll('#s1 tbody tr').length") == len(t.tgt_pieces) + 1
    assert page.evaluate("document.querySelectorAll('script').length") == 2  # nothing injected became a script
    assert page.evaluate("document.title") == "<i>x</i>"
