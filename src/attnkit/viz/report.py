"""The attention report: one self-contained HTML file, cross-attention per sentence, layer and head.

For every translated sentence the page shows the source, the translation and an interactive view:
pick a decoder layer (or the average of layers) and a head (or the mean of heads); a heatmap table
has one row per output token and one column per source token, each cell shaded by its weight (the
number in its tooltip); hovering or focusing an output token shades the source tokens it attends to,
and a source token the output tokens that attend to it — bertviz's idea, for cross-attention.

Why everything is inline (issue #6): bertviz loads its scripts from a CDN and shows a blank page
when it is unreachable. Here the styles and the vanilla script are inline, the weights are a JSON
data block, fonts are the system's (a stack that names CJK fonts, so Chinese never shows as boxes),
and a Content-Security-Policy with ``default-src 'none'`` lets the browser load nothing else: the
page works offline, from a mail attachment, forever. Only the one script whose hash is in the policy
may run, so even a failure of the escaping below could not execute injected script.

Each sentence's cells are shaded on one scale for all its layers and heads, shown by a legend: 0 to 1 for
weights in [0, 1] (probabilities), so that sentences and reports compare; widened to the sentence's largest
(smallest) weight when some exceed 1 (fall below 0), as those of the ``relu`` normaliser can, and the legend
says so (see :mod:`attnkit.viz.scale`).

Weights are written with 4 decimals (an error of at most 5e-5, far below what a shade can show),
which keeps a report of a hundred sentences from a 6-layer, 8-head model to a few megabytes.

Axis glossary: ``L`` decoder layers, ``h`` heads, ``i`` output positions (pieces, then the EOS step
when the decoder produced one), ``j`` source positions (pieces, then ``</s>``).
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

from .heatmap import visible
from .scale import colour_range, range_note

__all__ = ["write_report", "render_report", "report_data", "DECIMALS"]

DECIMALS = 4

EXPLAIN_EN = (
    "Each table shows the decoder's cross-attention: one row per output token, one column per source "
    "token; the darker a cell, the more weight that output token gave that source token in the chosen "
    "layer and head (hover a cell for the number). Hover or focus a token to see where it attends, "
    "or which output tokens attend to it; click it, or press Enter, to keep it selected."
)
EXPLAIN_ZH = (
    "每张表展示解码器的交叉注意力：每行是一个输出词元，每列是一个源语言词元；格子颜色越深，表示在所选的层和注意力头中，"
    "该输出词元给该源词元的权重越大（鼠标停在格子上可看到数值）。把鼠标移到某个词元上（或用 Tab 键聚焦），"
    "即可看到它关注哪里，或哪些输出词元关注它；单击或按回车键可固定选择。"
)

# System fonts only: Latin first, then CJK fonts that cover simplified Chinese on Linux, macOS and
# Windows (a browser falls back character by character along the list).
FONT_STACK = (
    'system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, "Noto Sans CJK SC", '
    '"Noto Sans SC", "Source Han Sans SC", "WenQuanYi Micro Hei", "PingFang SC", "Hiragino Sans GB", '
    '"Microsoft YaHei", sans-serif'
)


def _is_cjk(text: str) -> bool:
    return any("\u2e80" <= ch <= "\u9fff" or "\uf900" <= ch <= "\ufaff" or "\uff00" <= ch <= "\uffef"
               for ch in text)


def _lang(text: str) -> str:
    return ' lang="zh-Hans"' if _is_cjk(text) else ""


def _weights(attention: Any, rows: int, cols: int, where: str):
    """``attention (L, h, i, j)`` as an array rounded to :data:`DECIMALS`, after checking its shape
    and that every weight is a finite number (``NaN`` is not JSON, and would break the page)."""
    import numpy as np
    import torch

    if attention is None:
        raise ValueError(f"{where}: no attention weights (translate with need_attention=True)")
    if isinstance(attention, torch.Tensor):
        attention = attention.detach().double().cpu().numpy()
    array = np.asarray(attention, dtype=np.float64)
    if array.ndim == 4 and array.shape[3] > cols and not array[..., cols:].any():
        # Translated in a batch, a short source keeps the batch's padding columns (weight exactly 0).
        array = array[..., :cols]
    if array.ndim != 4 or array.shape[2:] != (rows, cols) or 0 in array.shape[:2]:
        raise ValueError(f"{where}: attention of shape {tuple(array.shape)} does not match (layers, heads, "
                         f"{rows} output steps, {cols} source pieces)")
    if not np.isfinite(array).all():
        raise ValueError(f"{where}: attention holds NaN or infinite weights")
    return np.round(array, DECIMALS)


def _sentence_data(n: int, t: Any) -> dict[str, Any]:
    """One sentence's part of the JSON: texts, axis labels, weights ``[L][h][i][j]`` and their colour scale."""
    where = f"sentence {n + 1} ({t.source[:30]!r})"
    rows = t.attention_rows
    eos_row = len(rows) == len(t.tgt_pieces) + 1
    weights = _weights(t.attention, len(rows), len(t.src_pieces), where)
    low, high = colour_range(float(weights.min()), float(weights.max()))
    return {
        "source": t.source,
        "text": t.text,
        "score": t.score if math.isfinite(t.score) else None,
        "src": [visible(p) for p in t.src_pieces],  # labels: a control character as its escape, as the heatmaps do
        "tgt": [visible(p) for p in rows],
        "eos_row": eos_row,
        "attention": weights.tolist(),
        "scale": {"low": low, "high": high, "note": range_note(low, high)},
    }


def report_data(translations: Sequence[Any]) -> dict[str, Any]:
    """The report's JSON payload: ``{"sentences": [{source, text, score, src, tgt, eos_row, attention, scale}]}``
    where ``attention[L][h][i][j]`` is the weight output row ``tgt[i]`` gives source piece ``src[j]``, and
    ``scale`` ``{low, high, note}`` the weights the lightest and darkest shades stand for (0 and 1 unless
    some weights lie outside [0, 1]; then ``note`` says so)."""
    return {"sentences": [_sentence_data(n, t) for n, t in enumerate(translations)]}


def _json_for_script(payload: Any) -> str:
    """JSON that cannot end its ``<script>`` element: ``<``, ``>`` and ``&`` become ``\\u003c`` etc., so
    neither ``</script>`` nor ``<!--`` can appear in it; ``JSON.parse`` reads the escapes back."""
    text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _header(title: str, model_info: Mapping[str, Any] | None, count: int) -> str:
    info = "".join(f"<div><dt>{_esc(k)}</dt><dd{_lang(str(v))}>{_esc(v)}</dd></div>"
                   for k, v in (model_info or {}).items())
    info += f"<div><dt>sentences</dt><dd>{count}</dd></div>"
    return (f'<header>\n<h1{_lang(title)}>{_esc(title)}</h1>\n'
            f'<p class="explain">{_esc(EXPLAIN_EN)}</p>\n'
            f'<p class="explain" lang="zh-Hans">{_esc(EXPLAIN_ZH)}</p>\n'
            f'<dl class="info">{info}</dl>\n</header>\n')


def _section(n: int, s: Mapping[str, Any]) -> str:
    """Source and translation as escaped HTML (readable without script); the view is built by script."""
    score = "" if s["score"] is None else (
        f'<span class="score" title="log-probability of the translation">log p = {s["score"]:.2f}</span>')
    source = f'<span class="source"{_lang(s["source"])}>{_esc(s["source"])}</span>'
    return (f'<section class="sentence" id="s{n + 1}" aria-labelledby="s{n + 1}-h">\n'
            f'<h2 id="s{n + 1}-h"><span class="num">{n + 1}</span> {source}</h2>\n'
            f'<p class="translation"><span class="arrow" aria-hidden="true">→</span> '
            f'<span class="text"{_lang(s["text"])}>{_esc(s["text"])}</span> {score}</p>\n'
            f'<div class="view" data-sentence="{n}"><noscript>The attention view needs JavaScript.</noscript></div>\n'
            f'</section>\n')


def render_report(translations: Sequence[Any], *, title: str = "attnkit attention report",
                  model_info: Mapping[str, Any] | None = None) -> str:
    """The report as one HTML string (see :func:`write_report`)."""
    data = report_data(translations)
    script_hash = base64.b64encode(hashlib.sha256(_SCRIPT.encode("utf-8")).digest()).decode("ascii")
    csp = f"default-src 'none'; script-src 'sha256-{script_hash}'; style-src 'unsafe-inline'; img-src data:"
    sections = "".join(_section(n, s) for n, s in enumerate(data["sentences"]))
    from attnkit import __version__

    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f'<meta http-equiv="Content-Security-Policy" content="{csp}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f'<meta name="generator" content="attnkit {_esc(__version__)}">\n'
        f"<title>{_esc(title)}</title>\n"
        '<link rel="icon" href="data:,">\n'  # no favicon request
        f"<style>{_CSS}</style>\n</head>\n<body>\n"
        + _header(title, model_info, len(data["sentences"]))
        + f"<main>\n{sections}</main>\n"
        + f'<script type="application/json" id="attnkit-data">{_json_for_script(data)}</script>\n'
        + f"<script>{_SCRIPT}</script>\n</body>\n</html>\n"
    )


def write_report(translations: Sequence[Any], path: str | Path, *, title: str = "attnkit attention report",
                 model_info: Mapping[str, Any] | None = None) -> Path:
    """Write the report of ``translations`` (:class:`attnkit.decode.translator.Translation` objects
    with attention) to ``path``; ``model_info`` is shown at the top as ``key: value`` lines.

    Raises ``ValueError`` when a translation has no attention, or weights of the wrong shape."""
    text = render_report(translations, title=title, model_info=model_info)
    path = Path(path)
    path.write_text(text, encoding="utf-8")
    return path


_CSS = """
:root { --ink: #1f2328; --muted: #59636e; --line: #d1d9e0; --accent: #0b57d0; --bg: #fff; --panel: #f6f8fa; }
* { box-sizing: border-box; }
body { margin: 0; padding: 1.5rem clamp(1rem, 4vw, 3rem) 3rem; color: var(--ink); background: var(--bg);
  font-family: FONTS; font-size: 16px; line-height: 1.5; }
h1 { font-size: 1.5rem; margin: 0 0 .5rem; }
.explain { margin: .25rem 0; max-width: 70rem; color: var(--muted); font-size: .92rem; }
.info { display: flex; flex-wrap: wrap; gap: .25rem 1.5rem; margin: .75rem 0 0; font-size: .85rem; }
.info div { display: flex; gap: .4rem; } .info dt { color: var(--muted); } .info dd { margin: 0; font-weight: 600; }
.sentence { border-top: 1px solid var(--line); margin-top: 1.5rem; padding-top: 1rem; }
.sentence h2 { font-size: 1.35rem; font-weight: 600; margin: 0; }
.num { display: inline-block; min-width: 1.8em; padding: 0 .35em; margin-right: .3em; border-radius: 1em;
  background: var(--panel); border: 1px solid var(--line); color: var(--muted); font-size: .8rem;
  text-align: center; vertical-align: middle; }
.translation { margin: .2rem 0 .6rem; font-size: 1.15rem; }
.arrow, .score { color: var(--muted); } .score { font-size: .8rem; margin-left: .5rem; }
.controls { display: flex; flex-wrap: wrap; gap: .5rem 1.25rem; align-items: center; margin: .4rem 0 .6rem;
  font-size: .9rem; }
.controls label { display: inline-flex; gap: .4rem; align-items: center; }
select { font: inherit; padding: .15rem .3rem; border: 1px solid var(--line); border-radius: 4px; background: #fff; }
.legend { display: inline-flex; gap: .35rem; align-items: center; color: var(--muted); font-size: .8rem; }
.legend .note { color: var(--ink); }
.legend .bar { width: 8rem; height: .7rem; border: 1px solid var(--line);
  background: linear-gradient(to right, hsl(217,80%,100%), hsl(217,80%,70%), hsl(217,80%,40%)); }
.strip { display: flex; flex-wrap: wrap; align-items: center; gap: .25rem; margin: .3rem 0; }
.strip .name { width: 4.5rem; color: var(--muted); font-size: .8rem; }
.tok { display: inline-block; padding: .05rem .4rem; border: 1px solid var(--line); border-radius: 4px;
  background: #fff; cursor: pointer; white-space: pre; min-width: 1.6em; text-align: center; }
.tok:focus-visible, th:focus-visible { outline: 2px solid var(--accent); outline-offset: 1px; }
.tok.active { border-color: var(--accent); box-shadow: 0 0 0 2px var(--accent); }
.mark { color: #9aa4ae; }
.readout { min-height: 1.5em; margin: .3rem 0 .5rem; font-size: .9rem; color: var(--muted); }
.readout b { color: var(--ink); font-weight: 600; }
.scroll { overflow-x: auto; max-width: 100%; }
table.heat { border-collapse: collapse; font-size: .85rem; }
.heat th { font-weight: 500; padding: .1rem .35rem; white-space: pre; cursor: pointer; }
.heat thead th { vertical-align: bottom; text-align: center; min-width: 2.2rem; }
.heat thead th.vertical { writing-mode: vertical-rl; text-align: left; padding: .35rem .1rem; }
.heat tbody th { text-align: right; }
.heat td { width: 2.2rem; min-width: 2.2rem; height: 1.8rem; border: 1px solid #fff; padding: 0; }
.heat tr.on th, .heat th.on { color: var(--accent); font-weight: 700; }
.heat tr.on td, .heat td.on { border-color: var(--accent); }
.heat tr.eos th { color: var(--muted); }
.visually-hidden { position: absolute; width: 1px; height: 1px; overflow: hidden; clip: rect(0 0 0 0); white-space: nowrap; }
@media print { .controls select { border: none; } }
""".replace("FONTS", FONT_STACK)

_SCRIPT = r"""
(function () {
  'use strict';
  var data = JSON.parse(document.getElementById('attnkit-data').textContent);
  var CJK = /[\u2e80-\u9fff\uf900-\ufaff\uff00-\uffef]/;

  function el(tag, props, children) {
    var node = document.createElement(tag);
    Object.keys(props || {}).forEach(function (k) {
      if (k === 'text') node.textContent = props[k];
      else if (k === 'className') node.className = props[k];
      else node.setAttribute(k, props[k]);
    });
    (children || []).forEach(function (c) { node.appendChild(c); });
    return node;
  }

  // A piece as text: SentencePiece's word-start mark "▁" dimmed, a bare space shown as "␣".
  function pieceLabel(node, piece) {
    if (CJK.test(piece)) node.setAttribute('lang', 'zh-Hans');
    if (piece === ' ') { node.appendChild(el('span', { className: 'mark', text: '\u2423' })); return node; }
    if (piece.charAt(0) === '\u2581' && piece.length > 1) {
      node.appendChild(el('span', { className: 'mark', text: '\u2581' }));
      piece = piece.slice(1);
    }
    node.appendChild(document.createTextNode(piece));
    return node;
  }

  // A weight's shade on its sentence's scale: the lightest at scale.low, the darkest at scale.high.
  function level(w, scale) { return (w - scale.low) / (scale.high - scale.low); }
  function shade(w, scale) { return 'hsl(217, 80%, ' + (100 - 60 * level(w, scale)).toFixed(1) + '%)'; }
  function fmt(w) { return w.toFixed(DECIMALS); }
  function bound(x) { return String(+x.toFixed(DECIMALS)); }  // 0, 1, 2.5: no trailing zeros

  // The (i, j) weights for a layer and a head; -1 means the mean over that axis.
  function matrix(att, layer, head) {
    var rows = att[0][0].length, cols = rows ? att[0][0][0].length : 0, count = 0, m = [], i, j;
    for (i = 0; i < rows; i++) { m.push([]); for (j = 0; j < cols; j++) m[i].push(0); }
    (layer < 0 ? att : [att[layer]]).forEach(function (byHead) {
      (head < 0 ? byHead : [byHead[head]]).forEach(function (w) {
        count++;
        for (i = 0; i < rows; i++) for (j = 0; j < cols; j++) m[i][j] += w[i][j];
      });
    });
    for (i = 0; i < rows; i++) for (j = 0; j < cols; j++) m[i][j] /= count;
    return m;
  }

  function options(select, n, word, meanText) {
    for (var k = 0; k < n; k++) select.appendChild(el('option', { value: String(k), text: word + ' ' + (k + 1) }));
    select.appendChild(el('option', { value: '-1', text: meanText }));
  }

  function View(root, s, index) {
    var self = this, att = s.attention, id = 's' + (index + 1);
    this.s = s; this.focus = null; this.pinned = false;
    this.layerSelect = el('select', { id: id + '-layer', 'data-role': 'layer' });
    options(this.layerSelect, att.length, 'layer', 'average of layers');
    this.layerSelect.value = String(att.length - 1);
    this.headSelect = el('select', { id: id + '-head', 'data-role': 'head' });
    options(this.headSelect, att[0].length, 'head', 'mean of heads');
    this.headSelect.value = '-1';
    var legend = el('span', { className: 'legend', 'aria-hidden': 'true' }, [
      el('span', { className: 'low', text: bound(s.scale.low) }), el('span', { className: 'bar' }),
      el('span', { className: 'high', text: bound(s.scale.high) })]);
    if (s.scale.note) legend.appendChild(el('span', { className: 'note', text: '(' + s.scale.note + ')' }));
    root.appendChild(el('div', { className: 'controls' }, [
      el('label', { for: id + '-layer' }, [document.createTextNode('Layer 层'), this.layerSelect]),
      el('label', { for: id + '-head' }, [document.createTextNode('Head 头'), this.headSelect]),
      legend]));

    function strip(name, pieces, axis) {
      var chips = pieces.map(function (p, k) {
        var chip = pieceLabel(el('span', { className: 'tok', tabindex: '0', role: 'button' }), p);
        chip.setAttribute('data-' + axis, String(k));
        chip.setAttribute('aria-label', (axis === 'i' ? 'output token ' : 'source token ') + (k + 1) + ': ' + p);
        return chip;
      });
      root.appendChild(el('div', { className: 'strip ' + (axis === 'i' ? 'tgt' : 'src') },
        [el('span', { className: 'name', text: name })].concat(chips)));
      return chips;
    }
    this.srcChips = strip('source 源', s.src, 'j');
    this.tgtChips = strip('output 译', s.tgt, 'i');
    this.readout = el('p', { className: 'readout', 'aria-live': 'polite' });
    root.appendChild(this.readout);

    var head = el('tr', {}, [el('th', { scope: 'col', text: '' })]);
    this.colHeads = s.src.map(function (p, j) {
      var th = pieceLabel(el('th', { scope: 'col', 'data-j': String(j) }), p);
      if (!CJK.test(p) && p.length > 4) th.className = 'vertical';  // long (English) pieces stand up
      head.appendChild(th);
      return th;
    });
    this.rows = []; this.cells = [];
    var body = el('tbody');
    s.tgt.forEach(function (p, i) {
      var tr = el('tr', { className: s.eos_row && i === s.tgt.length - 1 ? 'eos' : '' },
        [pieceLabel(el('th', { scope: 'row', 'data-i': String(i) }), p)]);
      self.cells.push(s.src.map(function (q, j) {
        var td = el('td', { 'data-i': String(i), 'data-j': String(j) });
        tr.appendChild(td);
        return td;
      }));
      self.rows.push(tr);
      body.appendChild(tr);
    });
    var caption = el('caption', { className: 'visually-hidden',
      text: 'Cross-attention weights: rows are output tokens, columns are source tokens.' });
    var table = el('table', { className: 'heat' }, [caption, el('thead', {}, [head]), body]);
    root.appendChild(el('div', { className: 'scroll' }, [table]));

    this.layerSelect.addEventListener('change', function () { self.render(); });
    this.headSelect.addEventListener('change', function () { self.render(); });
    root.addEventListener('mouseover', function (e) {
      var t = self.target(e.target);
      if (t && !self.pinned) self.setFocus(t);
    });
    root.addEventListener('mouseleave', function () { if (!self.pinned) self.setFocus(null); });
    root.addEventListener('focusin', function (e) {
      var t = self.target(e.target);
      if (t) { self.pinned = false; self.setFocus(t); }
    });
    root.addEventListener('click', function (e) {
      var t = self.target(e.target);
      if (!t) return;
      self.pinned = !(self.pinned && self.same(t)); self.setFocus(t);
    });
    root.addEventListener('keydown', function (e) {
      var t = self.target(e.target);
      if (!t || e.target.tagName !== 'SPAN') return;
      if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); self.pinned = !self.pinned; self.setFocus(t); }
      else if (e.key === 'Escape') { self.pinned = false; self.setFocus(null); e.target.blur(); }
      else if (e.key === 'ArrowRight' || e.key === 'ArrowLeft') {
        var chips = t.axis === 'i' ? self.tgtChips : self.srcChips;
        var next = chips[t.k + (e.key === 'ArrowRight' ? 1 : -1)];
        if (next) { e.preventDefault(); next.focus(); }
      }
    });
    this.render();
  }

  // What a node stands for: {axis: 'i', k} an output row, {axis: 'j', k} a source column.
  View.prototype.target = function (node) {
    while (node && node.nodeType === 1 && !node.hasAttribute('data-i') && !node.hasAttribute('data-j')
           && !node.classList.contains('view')) node = node.parentNode;
    if (!node || node.nodeType !== 1) return null;
    if (node.hasAttribute('data-i')) return { axis: 'i', k: +node.getAttribute('data-i') };
    if (node.hasAttribute('data-j')) return { axis: 'j', k: +node.getAttribute('data-j') };
    return null;
  };
  View.prototype.same = function (t) { return this.focus && this.focus.axis === t.axis && this.focus.k === t.k; };

  View.prototype.render = function () {
    var m = this.m = matrix(this.s.attention, +this.layerSelect.value, +this.headSelect.value), s = this.s;
    this.cells.forEach(function (row, i) {
      row.forEach(function (td, j) {
        var w = m[i][j];
        td.style.backgroundColor = shade(w, s.scale);
        td.setAttribute('data-w', fmt(w));
        td.title = s.tgt[i] + ' \u2192 ' + s.src[j] + ': ' + fmt(w);
      });
    });
    this.setFocus(this.focus);
  };

  function paint(chips, weights, scale) {
    chips.forEach(function (chip, k) {
      var w = weights ? weights[k] : null;
      chip.style.backgroundColor = w === null ? '' : shade(w, scale);
      chip.style.color = w !== null && level(w, scale) > 0.6 ? '#fff' : '';
      if (w === null) chip.removeAttribute('data-w'); else chip.setAttribute('data-w', fmt(w));
      chip.title = w === null ? '' : fmt(w);
    });
  }

  function top(labels, weights) {
    return weights.map(function (w, k) { return [w, k]; })
      .sort(function (a, b) { return b[0] - a[0]; }).slice(0, 3)
      .map(function (p) { return '\u201c' + labels[p[1]] + '\u201d ' + p[0].toFixed(2); }).join(', ');
  }

  View.prototype.setFocus = function (t) {
    var m = this.m, s = this.s, i, j;
    this.focus = t;
    this.rows.forEach(function (tr) { tr.classList.remove('on'); });
    this.colHeads.forEach(function (th) { th.classList.remove('on'); });
    this.cells.forEach(function (row) { row.forEach(function (td) { td.classList.remove('on'); }); });
    this.srcChips.concat(this.tgtChips).forEach(function (c) { c.classList.remove('active'); });
    this.readout.textContent = '';
    if (!t) {
      paint(this.srcChips, null, s.scale); paint(this.tgtChips, null, s.scale);
      this.readout.textContent = 'Hover or focus a token to see its attention. 将鼠标移到词元上查看注意力。';
    } else if (t.axis === 'i') {
      i = t.k;
      this.rows[i].classList.add('on');
      this.tgtChips[i].classList.add('active');
      paint(this.srcChips, m[i], s.scale); paint(this.tgtChips, null, s.scale);
      this.readout.appendChild(el('b', { text: '\u201c' + s.tgt[i] + '\u201d' }));
      this.readout.appendChild(document.createTextNode(' attends most to ' + top(s.src, m[i])));
    } else {
      j = t.k;
      var column = m.map(function (row) { return row[j]; });
      this.colHeads[j].classList.add('on');
      this.cells.forEach(function (row) { row[j].classList.add('on'); });
      this.srcChips[j].classList.add('active');
      paint(this.tgtChips, column, s.scale); paint(this.srcChips, null, s.scale);
      this.readout.appendChild(el('b', { text: '\u201c' + s.src[j] + '\u201d' }));
      this.readout.appendChild(document.createTextNode(' is attended most by ' + top(s.tgt, column)));
    }
  };

  var views = [];
  Array.prototype.forEach.call(document.querySelectorAll('.view[data-sentence]'), function (root) {
    var index = +root.getAttribute('data-sentence');
    views.push(new View(root, data.sentences[index], index));
  });
  window.attnkitReport = { data: data, views: views, matrix: matrix };
})();
""".replace("DECIMALS", str(DECIMALS))
