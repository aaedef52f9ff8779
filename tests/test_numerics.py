"""The batch-invariant numerics mode of the spec ops (``qwen35_trt.ops.numerics``): a row's result
is the same whatever rows surround it; the default mode is plain torch."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from qwen35_trt.ops.numerics import BATCH_INVARIANT, PLAIN


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize("k,n", [(128, 32), (2048, 256), (512, 8)])
def test_linear_rows_do_not_depend_on_the_batch(k, n):
    g = torch.Generator().manual_seed(k + n)
    x = torch.randn(200, k, generator=g).bfloat16()
    w = torch.randn(n, k, generator=g).bfloat16()
    alone = torch.cat([BATCH_INVARIANT.linear(x[i : i + 1], w) for i in range(x.shape[0])])
    for m in (1, 5, 31, 32, 33, 77, 200):
        assert torch.equal(BATCH_INVARIANT.linear(x[:m], w), alone[:m]), f"{m} rows"
    shuffled = torch.randperm(200, generator=g)
    assert torch.equal(BATCH_INVARIANT.linear(x[shuffled], w), alone[shuffled])
    plain = F.linear(x[:77], w)
    print(f"k={k} n={n}: plain F.linear rows that differ from alone: {int((plain != alone[:77]).any(1).sum())} of 77")


@pytest.mark.parametrize("name", ["silu", "sigmoid", "softplus", "rsqrt"])
def test_unary_rows_do_not_depend_on_their_position(name):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(130, 37, generator=g) + 0.1
    fn = getattr(BATCH_INVARIANT, name)
    alone = torch.cat([fn(x[i : i + 1]) for i in range(x.shape[0])])
    assert torch.equal(fn(x), alone)
    assert torch.equal(fn(torch.cat([x[:3], x]))[3:], alone)  # shifted by 3 rows of 37 values
    assert torch.equal(fn(x[:, :1]), torch.cat([fn(x[i : i + 1, :1]) for i in range(130)]))  # [T, 1] columns (norm scales)


def test_the_default_mode_is_plain_torch():
    g = torch.Generator().manual_seed(1)
    x, w = torch.randn(77, 2048, generator=g).bfloat16(), torch.randn(256, 2048, generator=g).bfloat16()
    assert torch.equal(PLAIN.linear(x, w), F.linear(x, w))
    y = torch.randn(50, 33, generator=g)
    assert torch.equal(PLAIN.silu(y), F.silu(y)) and torch.equal(PLAIN.sigmoid(y), torch.sigmoid(y))
    assert torch.equal(PLAIN.softplus(y), F.softplus(y)) and torch.equal(PLAIN.rsqrt(y.abs() + 1), torch.rsqrt(y.abs() + 1))
