"""Beam search against independent references: greedy decoding (beam 1), teacher forcing (every score
and attention map recomputed from the hypothesis tokens), one sentence at a time (batching), decoding
to the length limit (the stopping rule) and brute-force enumeration of every output (tiny vocabulary)."""

import dataclasses
import itertools
import math
import sys

import pytest
import torch

from attnkit.decode import Hypothesis, beam_search, gnmt_length_penalty, greedy_decode
from attnkit.models import AttentionConfig, RNNConfig, TransformerConfig, build_model, label_smoothed_nll
from models_helpers import BOS, EOS, PAD, pad, tiny_corpus

TRANSFORMER = TransformerConfig(d_model=32, heads=4, encoder_layers=2, decoder_layers=2, ffn_dim=64, dropout=0.0)
RNN = RNNConfig(kind="seq2seq-attention", attention=AttentionConfig("bahdanau"), embed_dim=16, hidden=24, dropout=0.0)
CONFIGS = {"transformer": TRANSFORMER, "rnn-attention": RNN}
KINDS = [f"{kind}-{how}" for kind in CONFIGS for how in ("random", "trained")]
MAX_LEN = 8  # tiny-corpus targets have 1–3 words; a hypothesis has EOS iff it is shorter than this


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def corpus():
    return tiny_corpus(64)


def _random(kind: str):
    """A random model with a small target vocabulary, so that EOS comes up often, and 5 sources with padding."""
    torch.manual_seed(1)
    config = CONFIGS[kind]
    if kind == "transformer":  # a random tied output layer mostly repeats the previous token
        config = dataclasses.replace(config, tie_output=False)
    model = build_model(config, 30, 9).eval()
    g = torch.Generator().manual_seed(5)
    src = torch.randint(3, 30, (5, 7), generator=g)
    src[1, 3:] = PAD
    src[3, 5:] = PAD
    return model, src


def _trained(kind: str, corpus):
    """Trained briefly on 64 real pairs: outputs are word-like and end with EOS, but the model is unsure."""
    src, tgt, src_vocab, tgt_vocab = corpus
    torch.manual_seed(2)
    model = build_model(CONFIGS[kind], src_vocab, tgt_vocab)
    s, t_in, t_out = pad(src), pad(tgt, prefix=[BOS]), pad(tgt, suffix=[EOS])
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(40 if kind == "transformer" else 60):  # unsure enough that beam search often beats greedy
        logits, _ = model(s, t_in)
        loss = label_smoothed_nll(logits, t_out, smoothing=0.0, reduction="mean")
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval(), s[:12]


_CACHE = {}


@pytest.fixture
def setup(request):
    """``(model, src)`` for the parametrised kind (trained ones built once per module)."""
    name = request.param
    if name not in _CACHE:
        kind, how = name.rsplit("-", 1)
        _CACHE[name] = _random(kind) if how == "random" else _trained(kind, request.getfixturevalue("corpus"))
    return _CACHE[name]


def kinds(names=KINDS):
    return pytest.mark.parametrize("setup", names, indirect=True)


def teacher_forced(model, src_row, tokens: list[int], eos: bool):
    """Summed log-prob of ``tokens`` (+ EOS) given ``src_row (1, s)``, and the cross-attention maps
    ``[(heads, steps, s)]`` per layer, from one teacher-forced forward pass."""
    target = tokens + [EOS] if eos else tokens
    tgt_in = torch.tensor([[BOS] + target[:-1]])
    with torch.no_grad():
        logits, attention = model(src_row, tgt_in, need_attention=True)
    logp = torch.log_softmax(logits.double(), -1)[0]  # (steps, V)
    raw = float(logp.gather(1, torch.tensor(target)[:, None]).sum())
    return raw, len(target), attention


def lp(length: int, alpha: float) -> float:
    return ((5 + length) / 6) ** alpha  # Wu et al. 2016, eq. 14, written out again here


# ----------------------------------------------------------------------------------- beam 1 == greedy


@kinds()
def test_beam_1_is_greedy(setup):
    model, src = setup
    # One sentence at a time, both decoders run the very same computations: equal to the last bit.
    for i in range(len(src)):
        g = greedy_decode(model, src[i : i + 1], need_attention=True)[0]
        (b,) = beam_search(model, src[i : i + 1], beam_size=1, length_penalty=0.0, need_attention=True)[0]
        assert b.tokens == g.tokens and b.score == g.score and b.penalised == b.score
        assert torch.equal(b.attention, g.attention)
    # A batch: beam search drops finished sentences from the batch, greedy keeps decoding them, and
    # matrix products of different batch sizes round differently (as greedy batched vs alone does).
    for g, (b,) in zip(greedy_decode(model, src), beam_search(model, src, beam_size=1, length_penalty=0.0)):
        assert b.tokens == g.tokens and b.score == pytest.approx(g.score, abs=1e-5)


# --------------------------------------------------------------------- scores are real, and sorted


@kinds()
@pytest.mark.parametrize("alpha", [0.0, 0.6, 1.5])
def test_hypotheses_sorted_by_penalised_score_recomputed_by_teacher_forcing(setup, alpha):
    model, src = setup
    results = beam_search(model, src, beam_size=4, n_best=4, length_penalty=alpha, max_len=MAX_LEN)
    assert len(results) == len(src)
    for i, hyps in enumerate(results):
        assert len(hyps) == 4
        penalised = [h.penalised for h in hyps]
        assert penalised == sorted(penalised, reverse=True)
        for h in hyps:
            raw, length, _ = teacher_forced(model, src[i : i + 1], h.tokens, eos=len(h.tokens) < MAX_LEN)
            assert h.score == pytest.approx(raw, abs=1e-4)
            assert h.penalised == pytest.approx(raw / lp(length, alpha), abs=1e-4)


# ---------------------------------------------------------------------- batched == one at a time


@kinds()
def test_batched_beam_equals_one_sentence_at_a_time(setup):
    model, src = setup
    batched = beam_search(model, src, beam_size=4, n_best=3, need_attention=True)
    for i, hyps in enumerate(batched):
        alone = beam_search(model, src[i : i + 1], beam_size=4, n_best=3, need_attention=True)[0]
        assert [h.tokens for h in hyps] == [h.tokens for h in alone]
        for h, a in zip(hyps, alone):
            assert h.score == pytest.approx(a.score, abs=1e-5)
            assert h.penalised == pytest.approx(a.penalised, abs=1e-5)
            assert torch.allclose(h.attention, a.attention, atol=1e-5)


# --------------------------------------------------------------------------------- versus greedy


@kinds()
@pytest.mark.parametrize("k", [2, 4, 8])
def test_beam_best_is_not_worse_than_greedy(setup, k):
    # Not a theorem for every model (a beam can prune the greedy path and later fare worse), but it is
    # what a wider search is for, and it holds for these models; the exhaustive test below is exact.
    model, src = setup
    for g, hyps in zip(greedy_decode(model, src), beam_search(model, src, beam_size=k, length_penalty=0.0)):
        assert hyps[0].score >= g.score - 1e-6


# --------------------------------------------------------------------------- exhaustive search


@pytest.mark.parametrize("kind", list(CONFIGS))
@pytest.mark.parametrize("alpha", [0.0, 0.6])
def test_full_width_beam_finds_every_output_in_order(kind, alpha):
    """V = 5, at most 3 steps: 1 + 4 + 16 outputs end with EOS and 4³ are cut at the limit. A beam of
    5³ keeps every prefix, so its 85-best list is every output, ranked as brute force ranks them."""
    torch.manual_seed(3)
    model = build_model(CONFIGS[kind], 12, 5).eval()
    src = torch.tensor([[3, 4, 5, 6], [7, 8, PAD, PAD]])
    results = beam_search(model, src, beam_size=125, n_best=85, length_penalty=alpha, max_len=3)
    words = [t for t in range(5) if t != EOS]  # nothing keeps a decoder from emitting PAD or BOS
    outputs = [(list(y), True) for n in range(3) for y in itertools.product(words, repeat=n)]
    outputs += [(list(y), False) for y in itertools.product(words, repeat=3)]
    assert len(outputs) == 85
    for i, hyps in enumerate(results):
        truth = []
        for tokens, eos in outputs:
            raw, length, _ = teacher_forced(model, src[i : i + 1], tokens, eos)
            truth.append((raw / lp(length, alpha), raw, tokens))
        truth.sort(key=lambda x: -x[0])
        assert [h.tokens for h in hyps] == [t[2] for t in truth]
        assert [h.penalised for h in hyps] == pytest.approx([t[0] for t in truth], abs=1e-5)
        assert [h.score for h in hyps] == pytest.approx([t[1] for t in truth], abs=1e-5)


# -------------------------------------------------------------------------------------- n-best


@kinds(["transformer-trained", "rnn-attention-trained"])
def test_n_best_returns_n_distinct_hypotheses(setup):
    model, src = setup
    for hyps in beam_search(model, src, beam_size=5, n_best=5):
        assert len(hyps) == 5
        assert len({tuple(h.tokens) for h in hyps}) == 5  # the first step does not copy one hypothesis
        assert all(isinstance(h, Hypothesis) for h in hyps)
    with pytest.raises(ValueError, match="n_best"):
        beam_search(model, src, beam_size=2, n_best=3)
    with pytest.raises(ValueError, match="beam_size"):
        beam_search(model, src, beam_size=0)


# ------------------------------------------------------------------------------------ attention


@kinds()
def test_attention_is_the_teacher_forced_cross_attention(setup):
    model, src = setup
    layers, heads = (2, 4) if model.config.kind == "transformer" else (1, 1)
    plain = beam_search(model, src, beam_size=3, n_best=2, max_len=MAX_LEN)
    assert all(h.attention is None for hyps in plain for h in hyps)  # recorded only when asked
    results = beam_search(model, src, beam_size=3, n_best=2, max_len=MAX_LEN, need_attention=True)
    for i, hyps in enumerate(results):
        assert [h.tokens for h in hyps] == [h.tokens for h in plain[i]]
        for h in hyps:
            eos = len(h.tokens) < MAX_LEN
            steps = len(h.tokens) + eos
            assert h.attention.shape == (layers, heads, steps, src.shape[1])
            assert (h.attention >= 0).all()
            assert torch.allclose(h.attention.sum(-1), torch.ones(layers, heads, steps), atol=1e-5)
            assert (h.attention[..., src[i] == PAD] == 0).all()
            _, _, forced = teacher_forced(model, src[i : i + 1], h.tokens, eos)
            assert torch.allclose(h.attention, torch.stack([a[0] for a in forced]), atol=1e-5)


# ------------------------------------------------------------------------------- stopping rule


class Counting:
    """Wraps a model and records the batch size of every decode_step."""

    def __init__(self, model):
        self.model, self.rows = model, []

    def __getattr__(self, name):
        return getattr(self.model, name)

    def decode_step(self, state, prev, **kw):
        self.rows.append(len(prev))
        return self.model.decode_step(state, prev, **kw)


@kinds(["transformer-trained", "rnn-attention-trained"])
@pytest.mark.parametrize("alpha", [0.0, 0.6, 1.0])
def test_early_stop_returns_what_decoding_to_the_limit_returns(setup, alpha):
    model, src = setup
    early, full = Counting(model), Counting(model)
    stopped = beam_search(early, src, beam_size=4, n_best=2, length_penalty=alpha)
    complete = beam_search(full, src, beam_size=4, n_best=2, length_penalty=alpha, early_stop=False)
    for a, b in zip(stopped, complete):
        assert [h.tokens for h in a] == [h.tokens for h in b]
        assert [h.penalised for h in a] == pytest.approx([h.penalised for h in b], abs=1e-5)
    # The first step runs once per sentence (one live prefix each); then sentences leave the batch as they
    # finish: the state shrinks in whole beams and never grows.
    assert early.rows[0] == full.rows[0] == len(src)
    later = early.rows[1:]
    assert all(r % 4 == 0 for r in later) and later == sorted(later, reverse=True)
    assert later[0] == 4 * len(src) and later[-1] < later[0]
    assert sum(early.rows) < sum(full.rows)
    if alpha == 0.0:  # the bound is the best alive log-prob: every sentence stops soon after its best EOS
        assert len(early.rows) < len(full.rows)


def test_length_limits_and_penalty_formula():
    model, src = _random("transformer")
    results = beam_search(model, src, beam_size=3, length_penalty=0.6)  # limit 2 × length + 10
    lengths = (src != PAD).sum(1).tolist()
    for hyps, n in zip(results, lengths):
        assert all(len(h.tokens) <= 2 * n + 10 for h in hyps)
    assert math.isclose(gnmt_length_penalty(3, 0.6), (8 / 6) ** 0.6) and gnmt_length_penalty(7, 0.0) == 1.0
    assert beam_search(model, src[:0]) == []


def test_length_settings_are_checked_and_learned_positions_cap_the_default_limit():
    torch.manual_seed(2)
    config = dataclasses.replace(TRANSFORMER, positions="learned", max_len=8, tie_output=False)
    model = build_model(config, 30, 9).eval()
    src = torch.randint(3, 30, (3, 5), generator=torch.Generator().manual_seed(3))  # default limit 2 × 5 + 10 = 20
    for decode in (greedy_decode, lambda m, s, **kw: [h[0] for h in beam_search(m, s, beam_size=2, **kw)]):
        hyps = decode(model, src, max_len=8)
        assert hyps == decode(model, src)  # the default limit stops at the 8 positions, as max_len=8 does
        assert all(len(h.tokens) <= 8 for h in hyps)
        for kwargs, words in ((dict(max_len=9), "max_len=9 exceeds the decoder's 8 learned positions"),
                              (dict(max_len=-3), "max_len must be a non-negative integer"),
                              (dict(max_len=2.5), "max_len must be a non-negative integer"),
                              (dict(max_len_ratio=float("nan")), "max_len_ratio must be a finite number >= 0"),
                              (dict(max_len_ratio=float("inf")), "max_len_ratio"),
                              (dict(max_len_offset=1.5), "max_len_offset must be an integer")):
            with pytest.raises(ValueError, match=words):
                decode(model, src, **kwargs)
        with pytest.raises(ValueError, match=r"src must be a \(batch, positions\) tensor of token ids, got shape \(5,\)"):
            decode(model, src[0])


def test_greedy_sentence_without_steps_is_empty_in_a_batch_as_alone():
    """A limit below 1 (a negative max_len_offset and a short source) gives an empty output whether the
    sentence is decoded alone or beside sentences that may take steps."""
    model, src = _random("transformer")
    src = src.clone()
    src[0, 1:] = PAD  # 1 token: limit 1 × 1 - 3 < 1; the others have 5 or 7 tokens
    settings = dict(max_len_ratio=1.0, max_len_offset=-3)
    batch = greedy_decode(model, src, **settings)
    for row, hyp in zip(src, batch):
        alone = greedy_decode(model, row[None, : int((row != PAD).sum())], **settings)[0]
        assert hyp.tokens == alone.tokens and math.isclose(hyp.score, alone.score, abs_tol=1e-4)
    assert batch[0].tokens == [] and batch[0].score == 0.0
    assert all(1 <= len(h.tokens) <= int((row != PAD).sum()) - 3 or h.tokens == [] for h, row in zip(batch, src))


@pytest.mark.parametrize("kind", list(CONFIGS))
def test_beam_sentence_without_steps_is_empty_as_greedy_gives_it(kind):
    """A limit below 1 gives the one output there is, the empty one: score 0 (no token scored), penalised
    0 / lp(0) = 0, no attention — what greedy decoding gives it. The other sentences of the batch are
    searched exactly as without it (they were all refused with a ValueError)."""
    model, src = _random(kind)
    src = src.clone()
    src[0, 1:] = PAD  # lengths 1, 3, 7, 5, 7: limits int(1 × n - 3) = -2, 0, 4, 2, 4
    settings = dict(max_len_ratio=1.0, max_len_offset=-3)
    lengths = (src != PAD).sum(1).tolist()
    assert [n - 3 for n in lengths] == [-2, 0, 4, 2, 4]  # the limits written out by hand
    empty = Hypothesis([], 0.0, None, 0.0)
    batch = beam_search(model, src, beam_size=3, n_best=2, length_penalty=0.6, need_attention=True, **settings)
    greedy = greedy_decode(model, src, need_attention=True, **settings)
    for n in (0, 1):
        assert batch[n] == [empty]
        assert (batch[n][0].tokens, batch[n][0].score, batch[n][0].attention) == (
            greedy[n].tokens, greedy[n].score, greedy[n].attention)
    # the others: bit for bit the batch without the empty ones, and what each gives alone
    others = beam_search(model, src[2:], beam_size=3, n_best=2, length_penalty=0.6, need_attention=True,
                         **settings)
    for hyps, ref in zip(batch[2:], others):
        assert [h.tokens for h in hyps] == [h.tokens for h in ref] and len(hyps) == 2
        assert [h.score for h in hyps] == [h.score for h in ref]
        assert [h.penalised for h in hyps] == [h.penalised for h in ref]
        assert all(torch.equal(h.attention, r.attention) for h, r in zip(hyps, ref))
    for n in (2, 3, 4):
        alone = beam_search(model, src[n : n + 1, : lengths[n]], beam_size=3, n_best=2, **settings)[0]
        assert [h.tokens for h in batch[n]] == [h.tokens for h in alone]
        assert [h.score for h in batch[n]] == pytest.approx([h.score for h in alone], abs=1e-5)
        assert all(1 <= len(h.tokens) + (len(h.tokens) < lengths[n] - 3) <= lengths[n] - 3 for h in batch[n])
    # every sentence without a step (max_len=0, or the limits all below 1), as greedy gives them
    for kwargs in (dict(max_len=0), dict(max_len_ratio=0.0, max_len_offset=0)):
        assert beam_search(model, src, beam_size=3, n_best=3, **kwargs) == [[empty]] * len(src)
        assert [h.tokens for h in greedy_decode(model, src, **kwargs)] == [[]] * len(src)


def test_length_limit_is_the_documented_formula_in_python_floats():
    """max_lengths gives int(max_len_ratio × source length + max_len_offset) as Python computes it, for
    ratios that are not exact in binary (float32 made 2.1 × 50 + 10 = 114.99999, a limit of 114)."""
    from attnkit.decode.lengths import max_lengths

    lengths = range(1, 201)
    src = torch.tensor([[5] * n + [PAD] * (200 - n) for n in lengths])
    for ratio in (0.7, 1.1, 1.3, 1.5, 2.1, 2.3):
        for offset in (0, 5, 10):
            got = max_lengths(src, None, PAD, max_len=None, max_len_ratio=ratio, max_len_offset=offset).tolist()
            assert got == [int(ratio * n + offset) for n in lengths], (ratio, offset)


@pytest.mark.parametrize("kind", list(CONFIGS))
def test_float64_model_scores_are_float64_log_probs(kind):
    """A float64 model is decoded with float64 log-probabilities: greedy and beam scores equal the
    teacher-forced sums to ~1e-12 (they were rounded to float32 log-probs, ~1e-7 off)."""
    model, src = _random(kind)
    model = model.double()
    greedy = greedy_decode(model, src, max_len=MAX_LEN)
    beams = beam_search(model, src, beam_size=3, n_best=3, max_len=MAX_LEN)
    for n in range(len(src)):
        row = src[n : n + 1, : int((src[n] != PAD).sum())]
        for hyp in [greedy[n], *beams[n]]:
            raw, _, _ = teacher_forced(model, row, hyp.tokens, eos=len(hyp.tokens) < MAX_LEN)
            assert math.isclose(hyp.score, raw, rel_tol=0, abs_tol=1e-10), (hyp.score, raw)


# ------------------------------------------------------------------------------- memory estimate


def test_decoding_memory_is_the_sum_of_its_tensors_written_out():
    """The cmn-eng recipe's Transformer (d_model 256, 3 decoder layers, 4 heads, 4,000 target pieces),
    beam 50 over 64 sentences of 31 source positions: outputs of up to 2 × 31 + 10 = 72 steps."""
    from attnkit.decode.memory import decoding_bytes

    config = dataclasses.replace(TRANSFORMER, d_model=256, heads=4, encoder_layers=3, decoder_layers=3, ffn_dim=1024)
    model = build_model(config, 3000, 4000)
    rows = 64 * 50
    caches = 2 * 3 * 256 * 72 * 4  # keys and values of 3 layers for 72 positions, float32
    step = 4000 * 4 + 100 * (4 + 8 + 8)  # the logits; the 2 × 50 best log-probs, their tokens, their float64 sums
    tokens = 72 * 8  # a sentence's output tokens (int64), allocated for the longest output
    assert decoding_bytes(model, 64, 50, 31, 72) == rows * (caches + step) + 64 * tokens
    assert decoding_bytes(model, 64, 50, 31, 72) < 1.5 * 2**30  # a usual setting: far below a machine's memory
    maps = 3 * 4 * 72 * 31 * 4  # a sentence's attention: 3 layers × 4 heads × 72 × 31 float32, allocated at once
    assert decoding_bytes(model, 64, 50, 31, 72, need_attention=True) == rows * (caches + step) + 64 * (tokens + maps)
    # greedy: one row a sentence, one candidate
    assert decoding_bytes(model, 64, 1, 31, 72) == 64 * (caches + 4000 * 4 + 20 + tokens)
    # an RNN with attention keeps a copy of the encoder memory (31 × 2·24 float32) in every row
    rnn = build_model(RNN, 30, 4000)
    memory, state = 31 * 48 * 4, 24 * 4 + 48 * 4  # the memory; the hidden state and the source summary
    assert decoding_bytes(rnn, 2, 3, 31, 72) == 6 * (4000 * 4 + 6 * 20 + memory + state) + 2 * tokens
    assert decoding_bytes(model, 1, 100_000, 11, 32) > 27 * 2**30  # `attnkit translate --beam 100000` on 10 characters


_DECODE_SCRIPT = """
import sys, torch
sys.path.insert(0, sys.argv[2])
from test_beam import CONFIGS
from attnkit.decode import beam_search, greedy_decode
from attnkit.decode.memory import decoding_bytes
from attnkit.models import build_model

def peak():  # this process's peak resident memory (ru_maxrss would count the parent's, from before exec)
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))

torch.set_num_threads(1)
torch.manual_seed(0)
model = build_model(CONFIGS[sys.argv[1]], 50, 2000).eval()
src = torch.randint(3, 50, (24, 7))
greedy_decode(model, src[:1], max_len=2)  # the first calls' own allocations
before = peak()
beam_search(model, src, beam_size=128, max_len=8, early_stop=False)
print(peak() - before, decoding_bytes(model, 24, 128, 7, 8))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the peak memory from /proc/self/status")
@pytest.mark.parametrize("kind", list(CONFIGS))
def test_decoding_memory_is_a_floor_of_what_beam_search_takes(kind):
    """In a fresh process, the peak memory a beam search adds is at least the estimate (a floor: a setting
    refused for it could not have run)."""
    import subprocess
    from pathlib import Path

    done = subprocess.run([sys.executable, "-c", _DECODE_SCRIPT, kind, str(Path(__file__).parent)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    grown, estimate = map(int, done.stdout.split())
    assert estimate > 40 * 2**20  # large enough to stand out of the process's other allocations
    assert grown >= estimate, (grown, estimate)


_EARLY_STOP_SCRIPT = """
import dataclasses, sys, torch
from torch import nn
sys.path.insert(0, sys.argv[2])
from test_beam import TRANSFORMER
from attnkit.decode import beam_search, greedy_decode
from attnkit.decode.memory import decoding_bytes
from attnkit.models import build_model

def peak():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))

torch.set_num_threads(1)
torch.manual_seed(0)
config = dataclasses.replace(TRANSFORMER, heads=8, decoder_layers=3, tie_output=False)
model = build_model(config, 50, 200).eval()
# an output layer that puts EOS first by far: once min_len allows it, every sentence ends, as a trained
# model's translations end long before their length limit
output = nn.Linear(model.output.in_features, 200)
with torch.no_grad():
    output.weight.mul_(0.01)
    output.bias.zero_()
    output.bias[config.eos_id] = 20.0
model.output = output
beam, (b, s, steps) = int(sys.argv[1]), (64, 60, 60)
src = torch.randint(3, 50, (b, s))
beam_search(model, src[:1], beam_size=2, max_len=2, need_attention=True)  # the first calls' own allocations
before = peak()
if beam == 1:
    found = [[h] for h in greedy_decode(model, src, max_len=steps, min_len=4, need_attention=True)]
else:
    found = beam_search(model, src, beam_size=beam, max_len=steps, min_len=4, need_attention=True)
grown = peak() - before
print(grown, decoding_bytes(model, b, beam, s, steps, need_attention=True), sorted({len(h[0].tokens) for h in found}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the peak memory from /proc/self/status")
@pytest.mark.parametrize("beam", [1, 8])
def test_decoding_memory_is_a_floor_when_decoding_stops_early_with_attention(beam):
    """Outputs of 4 tokens where 60 are allowed, their cross-attention recorded: the estimate is still at most
    the peak memory the decoding adds. It counted the attention of every row for all 60 steps, twice — more
    than greedy decoding holds when its sentences end early, so settings that fit were refused."""
    import subprocess
    from pathlib import Path

    done = subprocess.run([sys.executable, "-c", _EARLY_STOP_SCRIPT, str(beam), str(Path(__file__).parent)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    grown, estimate, lengths = done.stdout.split(maxsplit=2)
    assert lengths.strip() == "[4]"  # every sentence stopped at its first chance, long before its limit
    assert int(estimate) > 20 * 2**20  # large enough to stand out of the process's other allocations
    assert int(grown) >= int(estimate), (grown, estimate)
