"""`attnkit explain`: every topic runs in both languages and prints the numbers the library computes."""

import re

import pytest
import torch

from attnkit.cli import main
from attnkit.explain import TOPICS
from attnkit.explain.lesson import LANGS

NUMBER = re.compile(r"-?\d+\.\d{4}\b")


def _printed_tables(text: str) -> list[list[float]]:
    """The numbers of each numbered step, in order (a step's table follows its sentence)."""
    steps, current = [], None
    for line in text.splitlines():
        if re.match(r"^\d+\. ", line):
            current = []
            steps.append(current)
        elif current is not None and line.startswith("   "):
            current.extend(float(x) for x in NUMBER.findall(line))
    return steps


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("topic", sorted(TOPICS))
def test_every_topic_prints_the_library_numbers(topic, lang, capsys):
    assert main(["explain", topic, "--lang", lang]) == 0
    printed = _printed_tables(capsys.readouterr().out)
    lesson = TOPICS[topic](lang)
    assert len(printed) == len(lesson.steps)
    for numbers, step in zip(printed, lesson.steps):
        if step.value is None:
            assert numbers == []
        else:
            expected = step.value.double().flatten()
            assert torch.allclose(torch.tensor(numbers, dtype=torch.float64), expected, atol=5e-5), step.en


def test_toy_numbers_are_softmax_of_xxt_times_x(capsys):
    from attnkit.explain.topics import TOY_VECTORS

    main(["explain", "toy", "--lang", "en"])
    printed = _printed_tables(capsys.readouterr().out)
    x = TOY_VECTORS
    weights = torch.softmax(x @ x.T, -1)  # computed here, independently of the lesson
    assert torch.allclose(torch.tensor(printed[2]).double(), weights.flatten(), atol=5e-5)
    assert torch.allclose(torch.tensor(printed[3]).double(), (weights @ x).flatten(), atol=5e-5)
    assert abs(printed[2][0] - 0.4) < 1e-3 and abs(printed[2][2] - 0.2) < 1e-3


@pytest.mark.parametrize("lang", LANGS)
def test_toy_text_says_which_word_attends_more_to_another_than_to_itself(lang, capsys):
    # It said a word always scores itself among the highest, under a table where 好 gives 上 more weight.
    from attnkit.explain.topics import TOY_VECTORS, TOY_WORDS

    main(["explain", "toy", "--lang", lang])
    last = capsys.readouterr().out.rstrip().splitlines()[-1]
    x = TOY_VECTORS
    weights = torch.softmax(x @ x.T, -1)  # computed here, independently of the lesson
    assert weights[2].argmax() == 1 and weights[2, 1] > weights[2, 2]  # 好 prefers the longer 上
    want = (f"'好' attends more to '上' ({weights[2, 1]:.2f}) than to itself ({weights[2, 2]:.2f})" if lang == "en"
            else f"'好' 关注 '上'（{weights[2, 1]:.2f}）比关注自己（{weights[2, 2]:.2f}）还多")
    assert want in last and "itself among the highest" not in last
    assert torch.equal(x @ x.T, (x @ x.T).T)  # the text's "XXᵀ is symmetric"


def test_unknown_topic_is_a_clear_usage_error(capsys):
    with pytest.raises(SystemExit) as info:
        main(["explain", "nonsense"])
    assert info.value.code == 2
    assert "invalid choice: 'nonsense'" in capsys.readouterr().err


def _printed(topic: str, capsys):
    """The printed numbers of ``topic`` (English) and its lesson, to find steps by name."""
    main(["explain", topic, "--lang", "en"])
    return _printed_tables(capsys.readouterr().out), TOPICS[topic]("en")


def _step(printed, lesson, name: str) -> torch.Tensor:
    return torch.tensor(printed[lesson.index(name)], dtype=torch.float64)


def test_search_weights_are_softmax_of_the_query_key_dot_products(capsys):
    from attnkit.explain.search import SEARCH_KEYS, SEARCH_OTHER_QUERIES, SEARCH_QUERY, SEARCH_VALUES

    printed, lesson = _printed("search", capsys)
    scores = SEARCH_KEYS @ SEARCH_QUERY  # computed here, independently of the lesson
    weights = torch.exp(scores) / torch.exp(scores).sum()
    assert torch.allclose(_step(printed, lesson, "scores"), scores, atol=5e-5)
    assert torch.allclose(_step(printed, lesson, "weights"), weights, atol=5e-5)
    assert torch.allclose(_step(printed, lesson, "output"), weights @ SEARCH_VALUES, atol=5e-5)
    # The hard lookup is the database answer: the best item's one-hot weights and exactly its value.
    best = int(scores.argmax())
    one_hot = torch.nn.functional.one_hot(torch.tensor(best), 4).double()
    assert torch.allclose(_step(printed, lesson, "hard"), torch.cat([one_hot, SEARCH_VALUES[best]]), atol=5e-5)
    queries = torch.cat([SEARCH_QUERY[None], SEARCH_OTHER_QUERIES])
    assert torch.allclose(_step(printed, lesson, "queries"), torch.softmax(queries @ SEARCH_KEYS.T, -1).flatten(), atol=5e-5)
    # The ambiguous query keeps both meanings of 笔记本: the laptop first, the paper notebook second.
    assert weights.argsort(descending=True)[:2].tolist() == [0, 2]


def test_stages_scores_weights_and_outputs_match_plain_torch(capsys):
    from attnkit.explain.stages import STAGES_KEYS, STAGES_MLP, STAGES_QUERY, STAGES_TEMPERATURE, STAGES_VALUES

    printed, lesson = _printed("stages", capsys)
    q, k, v = STAGES_QUERY[0], STAGES_KEYS, STAGES_VALUES
    dots = k @ q
    cos = torch.nn.functional.cosine_similarity(q[None], k, dim=-1)
    hidden = torch.tanh(STAGES_MLP["w_q"] @ q + k @ STAGES_MLP["w_k"].T)  # (j, a)
    mlp = hidden @ STAGES_MLP["v"]
    assert torch.allclose(_step(printed, lesson, "dot"), dots, atol=5e-5)
    assert torch.allclose(_step(printed, lesson, "cosine"), cos, atol=5e-5)
    assert torch.allclose(_step(printed, lesson, "hidden"), hidden.flatten(), atol=5e-5)
    assert torch.allclose(_step(printed, lesson, "mlp"), mlp, atol=5e-5)
    weights = torch.stack([torch.softmax(s, -1) for s in (dots, cos, cos / STAGES_TEMPERATURE, mlp)])
    assert torch.allclose(_step(printed, lesson, "weights"), weights.flatten(), atol=5e-5)
    assert torch.allclose(_step(printed, lesson, "outputs"), (weights @ v).flatten(), atol=5e-5)
    # What the text claims: the dot product picks the long k₃, the cosine the aligned k₂.
    assert int(dots.argmax()) == 2 and int(cos.argmax()) == 1


def test_self_attention_b_is_the_weighted_sum_of_the_values(capsys):
    from attnkit.explain.self_attention import SELF_INPUTS, SELF_WK, SELF_WQ, SELF_WV, VARIANCE_DIMS

    printed, lesson = _printed("self-attention", capsys)
    a = SELF_INPUTS
    q, k, v = a @ SELF_WQ.T, a @ SELF_WK.T, a @ SELF_WV.T  # qⁱ = W^q aⁱ for every row aⁱ
    alpha = q @ k.T  # row 1 is α₁,ᵢ = q¹·kⁱ (column 1 of A = KᵀQ)
    assert torch.allclose(alpha.T, k @ q.T)
    scaled = alpha / 2 ** 0.5
    assert torch.allclose(_step(printed, lesson, "qkv"), torch.cat([q, k, v], -1).flatten(), atol=5e-5)
    assert torch.allclose(_step(printed, lesson, "dot"), alpha.flatten(), atol=5e-5)
    assert torch.allclose(_step(printed, lesson, "scaled"), scaled.flatten(), atol=5e-5)
    alpha1 = torch.exp(scaled[0]) / torch.exp(scaled[0]).sum()
    b1 = sum(alpha1[i] * v[i] for i in range(4))
    assert torch.allclose(_step(printed, lesson, "output")[:2], b1, atol=5e-5)
    assert torch.allclose(_step(printed, lesson, "relu"), scaled.clamp_min(0).flatten(), atol=5e-5)
    # The experiment shows what the text says: var(q·k) ≈ d_k, ≈ 1 after scaling; unscaled softmax saturates.
    variance = _step(printed, lesson, "variance").view(-1, 2)
    for (raw, after), d_k in zip(variance, VARIANCE_DIMS):
        assert abs(raw / d_k - 1) < 0.05 and abs(after - 1) < 0.05
    largest = _step(printed, lesson, "saturation").view(-1, 2)
    assert largest[1, 0] > 0.85 and largest[1, 1] < 0.6 and abs(largest[1, 1] - largest[0, 1]) < 0.05


def test_multi_head_output_equals_torch_multihead_attention_with_the_same_weights(capsys):
    from attnkit.explain.multi_head import MH_HEADS, MH_INPUTS, MH_WK, MH_WO, MH_WQ, MH_WV

    printed, lesson = _printed("multi-head", capsys)
    torch_mha = torch.nn.MultiheadAttention(4, MH_HEADS, bias=False, batch_first=True).double()
    with torch.no_grad():
        torch_mha.in_proj_weight.copy_(torch.cat([MH_WQ, MH_WK, MH_WV]))
        torch_mha.out_proj.weight.copy_(MH_WO)
        x = MH_INPUTS[None]
        expected, weights = torch_mha(x, x, x, need_weights=True, average_attn_weights=False)
    assert torch.allclose(_step(printed, lesson, "output"), expected.flatten(), atol=5e-5)
    assert torch.allclose(_step(printed, lesson, "weights"), weights.flatten(), atol=5e-5)
    # And by hand: each head on its slice of q, k, v, concatenated, times W^O.
    q, k, v = MH_INPUTS @ MH_WQ.T, MH_INPUTS @ MH_WK.T, MH_INPUTS @ MH_WV.T
    heads = [torch.softmax(q[:, s] @ k[:, s].T / 2**0.5, -1) @ v[:, s] for s in (slice(0, 2), slice(2, 4))]
    concat = torch.cat(heads, -1)
    assert torch.allclose(_step(printed, lesson, "concat"), concat.flatten(), atol=5e-5)
    assert torch.allclose(_step(printed, lesson, "output"), (concat @ MH_WO.T).flatten(), atol=5e-5)
    # The text's claim that the heads attend differently: a¹'s favourite key differs between heads.
    assert weights[0, 0, 0].argmax() != weights[0, 1, 0].argmax()


def test_soft_vs_hard_argmax_is_one_hot_and_samples_follow_the_softmax(capsys):
    from attnkit.explain.search import SEARCH_KEYS, SEARCH_QUERY, SEARCH_VALUES
    from attnkit.explain.soft_hard import SHOWN_SAMPLES

    printed, lesson = _printed("soft-vs-hard", capsys)
    scores = SEARCH_KEYS @ SEARCH_QUERY
    soft = torch.softmax(scores, -1)
    one_hot = torch.nn.functional.one_hot(scores.argmax(), 4).double()
    assert torch.allclose(_step(printed, lesson, "soft"), soft, atol=5e-5)
    assert torch.allclose(_step(printed, lesson, "hard"), one_hot, atol=5e-5)
    samples = _step(printed, lesson, "samples").view(SHOWN_SAMPLES, 4)
    assert torch.equal(samples.sum(-1), torch.ones(SHOWN_SAMPLES)) and set(samples.flatten().tolist()) == {0.0, 1.0}
    # 10,000 Gumbel-max draws: each item's share within 4 standard errors of its softmax probability.
    frequency, printed_soft = _step(printed, lesson, "frequency").view(2, 4)
    assert torch.allclose(printed_soft, soft, atol=5e-5)
    assert ((frequency - soft).abs() <= 4 * (soft * (1 - soft) / 10000).sqrt()).all()
    outputs = _step(printed, lesson, "outputs").view(-1, 2)
    assert torch.allclose(outputs[0], soft @ SEARCH_VALUES, atol=5e-5)
    assert torch.allclose(outputs[1], one_hot @ SEARCH_VALUES, atol=5e-5)
    assert torch.allclose(outputs[2 : 2 + SHOWN_SAMPLES], samples @ SEARCH_VALUES, atol=5e-5)
    # Straight-through: hard attention's gradient is softmax's, d(price)/dq computed here by hand.
    price = SEARCH_VALUES[:, 0]
    expected = (soft * (price - soft @ price)) @ SEARCH_KEYS  # Σᵢ ∂αᵢ/∂q · priceᵢ for α = softmax(Kq)
    gradients = _step(printed, lesson, "gradients").view(2, 4)
    assert torch.allclose(gradients[0], expected, atol=5e-5) and torch.allclose(gradients[1], expected, atol=5e-5)


def test_the_readme_lists_every_explain_option_with_the_range_it_has(capsys):
    """The README's row for `attnkit explain` names each of its options and choices (it left out --digits),
    and the range and default it gives for --digits are the ones the command keeps."""
    import argparse
    from pathlib import Path

    from attnkit.explain.cli import add_arguments

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    (row,) = [line for line in readme.splitlines() if line.startswith("| `attnkit explain ")]
    explain = argparse.ArgumentParser()
    add_arguments(explain)
    for action in explain._actions:
        for option in action.option_strings:
            if option not in ("-h", "--help"):
                assert re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", row), option
        for choice in action.choices or ():
            assert f"`{choice}`" in row or f"{choice}\\|" in row or f"\\|{choice}" in row, choice

    low, high = map(int, re.search(r"`--digits N`, (\d+) to (\d+)", row).groups())
    default = int(re.search(r"`--digits N`, \d+ to \d+, default (\d+)", row).group(1))
    for digits in (low, high):
        assert main(["explain", "toy", "--digits", str(digits)]) == 0
    assert re.search(rf"\b\d+\.\d{{{high}}}\b", capsys.readouterr().out)  # numbers with that many decimals
    for digits in (low - 1, high + 1):
        assert main(["explain", "toy", "--digits", str(digits)]) == 2
        assert "--digits must be between" in capsys.readouterr().err
    assert main(["explain", "toy"]) == 0
    plain = capsys.readouterr().out
    assert main(["explain", "toy", "--digits", str(default)]) == 0
    assert capsys.readouterr().out == plain
    lang_default = re.search(r"`--lang (\w+)`, the default", row).group(1)
    assert main(["explain", "toy", "--lang", lang_default]) == 0
    assert capsys.readouterr().out == plain
