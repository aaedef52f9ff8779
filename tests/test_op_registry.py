"""The contract-op registry (``qwen35_trt.ops.registry``): one table of backends, and the OpSet
the model calls, which keeps a sequence's arithmetic independent of its batch."""

from __future__ import annotations

import inspect

import pytest
import torch

from qwen35_trt.ops import registry
from qwen35_trt.ops.registry import OpSet


def test_every_backend_implements_the_contract_signature():
    for op, backends in registry.TABLE.items():
        spec_params = list(inspect.signature(registry.implementation(op, "spec")).parameters)
        for backend in backends:
            params = list(inspect.signature(registry.implementation(op, backend)).parameters)
            n = len([p for p in spec_params if p != "numerics"])
            assert params[:n] == spec_params[:n], f"{op}/{backend}: {params} vs spec {spec_params}"


def test_backend_choice_errors_name_the_keyword():
    with pytest.raises(ValueError, match="moe_backend: expected one of"):
        registry.resolve("moe_backend", "onnx")
    assert registry.resolve("gdn_backend", "spec") == "spec"


@pytest.mark.parametrize("backend", ["spec", "reference"])
def test_a_decode_token_gets_the_same_arithmetic_next_to_a_prompt(backend):
    """A one-token continuation computed in the same call as a prompt chunk gives bit for bit the
    state and output it gets alone (the OpSet runs the two forms as separate calls)."""
    if not registry.available("gated_delta_net", backend):
        pytest.skip(f"{backend} backend not built")
    g = torch.Generator().manual_seed(0)
    hk, hv, d = 2, 4, 32
    ops = OpSet(backend, "spec")
    pool = torch.randn(3, hv, d, d, generator=g)
    T = 1 + 70  # slot 0 decodes one token, slot 2 prefills 70 from its state

    def rnd(*shape):
        return torch.randn(*shape, generator=g).bfloat16()

    q, k, v, a, b = rnd(T, hk, d), rnd(T, hk, d), rnd(T, hv, d), rnd(T, hv), rnd(T, hv)
    A_log, dt_bias = torch.rand(hv, generator=g), torch.rand(hv, generator=g)
    together = pool.clone()
    o = ops.gated_delta_net(q, k, v, a, b, A_log, dt_bias, together, [0, 2], [0, 1, T], [True, True])
    alone = pool.clone()
    o0 = ops.gated_delta_net(q[:1], k[:1], v[:1], a[:1], b[:1], A_log, dt_bias, alone, [0], [0, 1], [True])
    o2 = ops.gated_delta_net(q[1:], k[1:], v[1:], a[1:], b[1:], A_log, dt_bias, alone, [2], [0, T - 1], [True])
    assert torch.equal(o[:1], o0) and torch.equal(o[1:], o2)
    assert torch.equal(together, alone)
