"""attnkit.decode.select against torch.max / torch.topk (the definition), on random and tied rows."""

from __future__ import annotations

import pytest
import torch

from attnkit.decode.select import row_argmax, row_topk


@pytest.mark.parametrize("width", [8000, 8003, 1024, 1000, 32000])
@pytest.mark.parametrize("rows", [1, 7, 64])
def test_row_argmax_and_topk_equal_torch(width, rows):
    g = torch.Generator().manual_seed(width + rows)
    x = torch.randn(rows, width, generator=g) * 3
    x[:, 2] = float("-inf")  # blocked tokens, as EOS before min_len
    values, index = row_argmax(x)
    ref_values, ref_index = x.max(-1)
    assert torch.equal(index, ref_index) and torch.equal(values, ref_values)
    for k in (1, 2, 8):
        values, index = row_topk(x, k)
        ref_values, ref_index = x.topk(k, dim=1)
        assert torch.equal(values, ref_values)  # the same values, largest first
        assert torch.equal(index.sort(1).values, ref_index.sort(1).values)  # the same entries
        assert torch.equal(x.gather(1, index), values)


def test_ties_first_maximum_like_torch_max_and_topk_values():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 40, (32, 8000), generator=g).float()  # many equal values in every row
    x[5] = 7.0  # a constant row: the first index wins
    x[6, 7990:] = 100.0  # the maximum only in the last block
    values, index = row_argmax(x)
    assert torch.equal(index, x.max(-1).indices) and index[5] == 0 and index[6] == 7990
    assert torch.equal(row_topk(x, 8)[0], x.topk(8, dim=1).values)


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match="rows, width"):
        row_argmax(torch.zeros(3))
    with pytest.raises(ValueError, match="k must be"):
        row_topk(torch.zeros(2, 5), 6)


@pytest.mark.parametrize("inference", [True, False])  # the compiled kernel (when built) and PyTorch
def test_top_log_probs_are_the_best_log_softmax_entries(inference):
    from attnkit.decode.select import top_log_probs

    g = torch.Generator().manual_seed(4)
    logits = torch.randn(40, 8000, generator=g) * 3
    logp = torch.log_softmax(logits, -1)
    blocked = logp.clone()
    blocked[:, 2] = float("-inf")
    with torch.inference_mode(inference):
        for n, block, ref in ((1, None, logp), (8, None, logp), (1, 2, blocked), (8, 2, blocked)):
            values, index = top_log_probs(logits, n, block)
            ref_values, ref_index = ref.topk(n, dim=1)
            assert torch.equal(index, ref_index)
            torch.testing.assert_close(values, ref_values, rtol=0, atol=2e-6)
    with pytest.raises(ValueError, match="n must be"):
        top_log_probs(logits[:, :3], 3, 0)
