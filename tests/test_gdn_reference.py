"""The Gated DeltaNet C++ CPU reference (ops/gdn_reference.py over ``_C``) against the spec ops,
and the CPU model's "reference" GDN backend against its "spec" backend.

Thresholds (METHOD.md: relative error ||out - ref|| / ||ref||): both sides compute in fp32, in a
different order, so fp32 outputs agree far under 1e-5; bf16 outputs are the same fp32 values
rounded to bf16, so they agree exactly except where the two fp32 values straddle a rounding
boundary (a last-bit difference, a relative error of at most 2^-8 on that element).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from qwen35_trt.ops import conv1d, gated_delta_rule as gdr, gdn_reference as ref

from model_agreement import SAME_COS, all_logits, assert_backends_agree

pytestmark = pytest.mark.skipif(not ref.available(), reason="qwen35_trt._C without the GDN reference ops")

FP32_TOL = 1e-5
BF16_TOL = 2e-3  # rounding noise of a few last-bit flips
VARLEN = [1, 2, 63, 64, 65, 127, 1000]


def rel(x: torch.Tensor, y: torch.Tensor) -> float:
    x, y = x.double(), y.double()
    assert torch.isfinite(x).all()
    return ((x - y).norm() / y.norm().clamp_min(1e-30)).item()


def cu_of(lens) -> list[int]:
    return np.concatenate([[0], np.cumsum(lens)]).astype(int).tolist()


def gdn_inputs(gen, T, hk, hv, dk, dv, dtype):
    r = lambda *s, std=1.0: (torch.randn(*s, generator=gen) * std).to(dtype)  # noqa: E731
    return dict(
        q=r(T, hk, dk), k=r(T, hk, dk), v=r(T, hv, dv), a=r(T, hv), b=r(T, hv, std=1.5),
        # head 0 almost without decay, so that long-range terms inside a chunk matter
        A_log=torch.cat([torch.tensor([-8.0]), torch.randn(hv - 1, generator=gen) - 0.5]), dt_bias=torch.randn(hv, generator=gen) * 0.5,
    )


# --------------------------------------------------------------------------------------------
# Spec twins


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", [(1, 1, 8, 8, [5]), (2, 4, 32, 32, [1, 64, 65, 40]), (3, 6, 16, 24, [130, 7])])
def test_gdn_matches_spec(dtype, shape):
    hk, hv, dk, dv, lens = shape
    gen = torch.Generator().manual_seed(hash((hk, hv, dk, dv)) % 2**31)
    cu = cu_of(lens)
    x = gdn_inputs(gen, cu[-1], hk, hv, dk, dv, dtype)
    g, beta = gdr.gdn_gating(x["a"], x["b"], x["A_log"], x["dt_bias"])
    init = torch.randn(len(lens), hv, dk, dv, generator=gen) * 0.2
    args = (x["q"], x["k"], x["v"], g, beta, cu)
    for name in ("chunk_gated_delta_rule", "recurrent_gated_delta_rule"):
        for state in (None, init):
            o_spec, s_spec = getattr(gdr, name)(*args, initial_states=state)
            o_ref, s_ref = getattr(ref, name)(*args, initial_states=state)
            assert o_ref.dtype == o_spec.dtype and s_ref.dtype == torch.float32
            tol = FP32_TOL if dtype == torch.float32 else BF16_TOL
            assert rel(o_ref, o_spec) < tol, name
            assert rel(s_ref, s_spec) < FP32_TOL * 10, name


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_gating_and_pool_match_spec(dtype):
    """The contract op (fused gates, slot pool, has_initial_state) == spec gating + chunked rule."""
    gen = torch.Generator().manual_seed(7)
    hk, hv, dk, dv, lens = 2, 4, 32, 16, [3, 70, 1]
    cu = cu_of(lens)
    x = gdn_inputs(gen, cu[-1], hk, hv, dk, dv, dtype)
    pool = torch.randn(6, hv, dk, dv, generator=gen)
    before = pool.clone()
    slots, has_init = [4, 0, 2], [True, False, True]
    o = ref.gated_delta_net(x["q"], x["k"], x["v"], x["a"], x["b"], x["A_log"], x["dt_bias"], pool, slots, cu, has_init)
    g, beta = gdr.gdn_gating(x["a"], x["b"], x["A_log"], x["dt_bias"])
    init = before[slots].clone()
    init[1] = 0  # has_initial_state False: starts from zeros
    o_spec, s_spec = gdr.chunk_gated_delta_rule(x["q"], x["k"], x["v"], g, beta, cu, init)
    assert rel(o, o_spec) < (FP32_TOL if dtype == torch.float32 else BF16_TOL)
    assert rel(pool[slots], s_spec) < 1e-4
    untouched = [s for s in range(6) if s not in slots]
    assert torch.equal(pool[untouched], before[untouched])


def test_varlen_lengths_match_spec():
    """Lengths around the chunk size and a long sequence, one call, against the spec per sequence."""
    gen = torch.Generator().manual_seed(3)
    hk, hv, dk, dv = 1, 2, 16, 16
    cu = cu_of(VARLEN)
    x = gdn_inputs(gen, cu[-1], hk, hv, dk, dv, torch.float32)
    g, beta = gdr.gdn_gating(x["a"], x["b"], x["A_log"], x["dt_bias"])
    init = torch.randn(len(VARLEN), hv, dk, dv, generator=gen) * 0.2
    o_ref, s_ref = ref.chunk_gated_delta_rule(x["q"], x["k"], x["v"], g, beta, cu, init)
    o_spec, s_spec = gdr.chunk_gated_delta_rule(x["q"], x["k"], x["v"], g, beta, cu, init)
    for i in range(len(VARLEN)):
        sl = slice(cu[i], cu[i + 1])
        assert rel(o_ref[sl], o_spec[sl]) < FP32_TOL, VARLEN[i]
        assert rel(s_ref[i], s_spec[i]) < FP32_TOL, VARLEN[i]
    # The recurrent form is the same function.
    o_rec, s_rec = ref.recurrent_gated_delta_rule(x["q"], x["k"], x["v"], g, beta, cu, init)
    assert rel(o_rec, o_spec) < FP32_TOL and rel(s_rec, s_spec) < FP32_TOL


def test_continuation():
    """prefill(A) + prefill(B) == prefill(A + B); prefill then N decodes == prefill of all."""
    gen = torch.Generator().manual_seed(11)
    hk, hv, dk, dv = 2, 4, 32, 32
    n1, n2, nd = 100, 29, 6
    T = n1 + n2 + nd
    x = gdn_inputs(gen, T, hk, hv, dk, dv, torch.float32)
    fused = lambda sl, pool, *seq: ref.gated_delta_net(  # noqa: E731
        x["q"][sl], x["k"][sl], x["v"][sl], x["a"][sl], x["b"][sl], x["A_log"], x["dt_bias"], pool, [1], *seq)
    pool_all = torch.zeros(2, hv, dk, dv)
    o_all = fused(slice(0, T), pool_all, [0, T], [False])
    pool = torch.full((2, hv, dk, dv), float("nan"))  # garbage in the slot: has_initial_state False ignores it
    pieces = [fused(slice(0, n1), pool, [0, n1], [False]), fused(slice(n1, n1 + n2), pool, [0, n2], [True])]
    pieces += [fused(slice(t, t + 1), pool) for t in range(n1 + n2, T)]  # decode form
    assert rel(torch.cat(pieces), o_all) < FP32_TOL
    assert rel(pool[1], pool_all[1]) < FP32_TOL
    assert torch.isnan(pool[0]).all()  # slot 0 is not ours

    # The conv: the same split.
    C, W = 24, 4
    xs = torch.randn(T, C, generator=gen)
    w = torch.randn(C, W, generator=gen)
    cpool_all = torch.zeros(1, C, W - 1)
    y_all = ref.causal_conv1d(xs, w, cpool_all, [0], [0, T], [False])
    cpool = torch.randn(1, C, W - 1)
    ys = [ref.causal_conv1d(xs[:n1], w, cpool, [0], [0, n1], [False]), ref.causal_conv1d(xs[n1 : n1 + n2], w, cpool, [0], [0, n2], [True])]
    ys += [ref.causal_conv1d(xs[t : t + 1], w, cpool, [0]) for t in range(n1 + n2, T)]
    assert torch.equal(torch.cat(ys), y_all) and torch.equal(cpool, cpool_all)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_conv_matches_spec(dtype):
    gen = torch.Generator().manual_seed(5)
    for C, W, lens in [(16, 4, [1, 2, 3, 9]), (40, 2, [5, 1]), (8, 8, [3, 20]), (24, 4, VARLEN)]:
        cu = cu_of(lens)
        x = torch.randn(cu[-1], C, generator=gen).to(dtype)
        w = (torch.randn(C, W, generator=gen) * 0.5).to(dtype)
        init = torch.randn(len(lens), C, W - 1, generator=gen).to(dtype)
        for state in (None, init):
            y_spec, f_spec = conv1d.causal_conv1d_prefill(x, w, cu, state)
            y_ref, f_ref = ref.causal_conv1d_prefill(x, w, cu, state)
            assert y_ref.dtype == dtype and torch.equal(f_ref, f_spec)
            if dtype == torch.bfloat16:
                # Same rounding points as the spec: identical but for rare last-bit flips.
                assert (y_ref != y_spec).float().mean() < 1e-3
            assert rel(y_ref, y_spec) < (FP32_TOL if dtype == torch.float32 else BF16_TOL)
        B = len(lens)
        y_spec, s_spec = conv1d.causal_conv1d_decode(x[:B], w, init)
        y_ref, s_ref = ref.causal_conv1d_decode(x[:B], w, init)
        assert torch.equal(s_ref, s_spec) and rel(y_ref, y_spec) < BF16_TOL


def test_slots_in_any_order():
    """A batch over scrambled slots == each sequence alone; other slots untouched."""
    gen = torch.Generator().manual_seed(13)
    hk, hv, dk, dv, lens = 1, 2, 16, 8, [5, 66, 1, 12]
    cu = cu_of(lens)
    x = gdn_inputs(gen, cu[-1], hk, hv, dk, dv, torch.bfloat16)
    pool0 = torch.randn(7, hv, dk, dv, generator=gen)
    slots, has_init = [6, 1, 3, 0], [True, True, False, True]
    pool = pool0.clone()
    o = ref.gated_delta_net(x["q"], x["k"], x["v"], x["a"], x["b"], x["A_log"], x["dt_bias"], pool, slots, cu, has_init)
    for i, s in enumerate(slots):
        sl = slice(cu[i], cu[i + 1])
        alone = pool0.clone()
        oi = ref.gated_delta_net(x["q"][sl], x["k"][sl], x["v"][sl], x["a"][sl], x["b"][sl], x["A_log"], x["dt_bias"],
                                 alone, [s], [0, lens[i]], [has_init[i]])
        assert torch.equal(oi, o[sl]) and torch.equal(alone[s], pool[s])
    for s in (2, 4, 5):
        assert torch.equal(pool[s], pool0[s])


def test_bad_arguments():
    gen = torch.Generator().manual_seed(17)
    hk, hv, dk, dv = 2, 4, 8, 8
    x = gdn_inputs(gen, 5, hk, hv, dk, dv, torch.float32)
    pool = torch.zeros(3, hv, dk, dv)

    def call(**kw):
        args = dict(x, state_pool=pool, slots=[0, 1], cu_seqlens=[0, 3, 5], has_initial_state=[False, True])
        args.update(kw)
        return ref.gated_delta_net(**args)

    call()
    with pytest.raises(ValueError, match="cu_seqlens: sequence 1 has length 0"):
        call(cu_seqlens=[0, 5, 5], slots=[0, 1])
    with pytest.raises(ValueError, match=r"slots: slot 3 of sequence 1 is out of range \[0, 3\)"):
        call(slots=[0, 3])
    with pytest.raises(ValueError, match="slots: slot 1 is used by two sequences"):
        call(slots=[1, 1])
    with pytest.raises(ValueError, match="num_v_heads: must be a multiple of num_k_heads"):
        call(q=torch.randn(5, 3, dk), k=torch.randn(5, 3, dk))
    with pytest.raises(ValueError, match="k: expected the shape of q"):
        call(k=torch.randn(5, 1, dk))
    with pytest.raises(ValueError, match="state_pool: expected shape"):
        call(state_pool=torch.zeros(3, hv, dk + 1, dv))
    with pytest.raises(ValueError, match="state_pool: expected dtype float32"):
        call(state_pool=pool.double())
    with pytest.raises(ValueError, match="state_pool: must be contiguous"):
        call(state_pool=torch.zeros(3, hv, dv, dk).transpose(-1, -2))
    with pytest.raises(ValueError, match="q: expected dtype torch.float32"):
        call(q=x["q"].bfloat16())
    with pytest.raises(ValueError, match="has_initial_state: give it together with cu_seqlens"):
        call(has_initial_state=None)
    with pytest.raises(ValueError, match="cu_seqlens: last entry 4 must equal the number of tokens 5"):
        call(cu_seqlens=[0, 3, 4])
    with pytest.raises(ValueError, match="a: expected shape"):
        call(a=torch.randn(5, hv + 1))
    with pytest.raises(ValueError, match="algorithm"):
        call(algorithm="fast")
    with pytest.raises(ValueError, match="slots: decode"):
        call(cu_seqlens=None, has_initial_state=None)
    with pytest.raises(ValueError, match="x: expected a CPU tensor|v: expected a CPU tensor|q: expected a CPU tensor"):
        call(q=x["q"].to("meta"))
    cpool = torch.zeros(2, 6, 3)
    with pytest.raises(ValueError, match="width: must be in"):
        ref.causal_conv1d(torch.randn(4, 6), torch.randn(6, 1), torch.zeros(2, 6, 0), [0], [0, 4], [False])
    with pytest.raises(ValueError, match=r"state_pool: expected shape \[num_slots, 6, 3\]"):
        ref.causal_conv1d(torch.randn(4, 6), torch.randn(6, 4), torch.zeros(2, 5, 3), [0], [0, 4], [False])
    with pytest.raises(ValueError, match="slots: slot 2 of sequence 0 is out of range"):
        ref.causal_conv1d(torch.randn(4, 6), torch.randn(6, 4), cpool, [2], [0, 4], [False])
    with pytest.raises(ValueError, match="cu_seqlens: sequence 0 has length 0"):
        ref.causal_conv1d(torch.randn(4, 6), torch.randn(6, 4), cpool, [0, 1], [0, 0, 4], [False, False])
    with pytest.raises(ValueError, match="weight: expected dtype torch.float32"):
        ref.causal_conv1d(torch.randn(4, 6), torch.randn(6, 4).bfloat16(), cpool, [0], [0, 4], [False])


# --------------------------------------------------------------------------------------------
# The CPU model: "reference" GDN backend against "spec"

@pytest.fixture(scope="module", params=["default", "wide"])
def backends(request, tiny_engines):
    from qwen35_trt.model import Qwen35Model

    _, engine = tiny_engines.get_engine(request, request.param)
    return Qwen35Model(engine, gdn_backend="spec"), Qwen35Model(engine, gdn_backend="reference")


def test_model_reference_backend_matches_spec(backends):
    spec, cpp = backends
    assert cpp.gdn_backend == "reference" and spec.gdn_backend == "spec"
    assert_backends_agree(spec, cpp)


def test_model_reference_backend_batches(backends):
    """Several sequences in one forward (varlen prefill, decode and chunked continuation mixed)
    give what each sequence gives alone."""
    _, cpp = backends
    vocab = cpp.cfg.vocab_size
    g = torch.Generator().manual_seed(5)
    prompts = [torch.randint(0, vocab, (n,), generator=g).tolist() for n in (3, 65, 1, 20)]
    cache = cpp.new_cache(6)
    for _ in range(2):
        cache.allocate()  # occupy slots 0, 1: the batch lands on 2..5
    slots = [cache.allocate() for _ in prompts]
    batched = cpp.forward(list(zip(slots, prompts)), cache)
    more = cpp.forward([(slots[0], [7]), (slots[1], [8, 9, 10]), (slots[3], [11])], cache)
    # The reference ops run each sequence on its own, in the same order, whatever the batch: the
    # GDN layers give identical results; only the batched linear layers may round differently.
    for i, p in enumerate(prompts):
        alone = all_logits(cpp, p)[-1]
        assert F.cosine_similarity(alone.float(), batched[i].float(), dim=0) >= SAME_COS
    for (i, extra), got in zip([(0, [7]), (1, [8, 9, 10]), (3, [11])], more):
        alone = all_logits(cpp, prompts[i] + extra)[-1]
        assert F.cosine_similarity(alone.float(), got.float(), dim=0) >= SAME_COS


def test_model_backend_argument():
    from qwen35_trt.ops.registry import resolve

    assert resolve("gdn_backend", None) == "reference"
    with pytest.raises(ValueError, match="gdn_backend"):
        resolve("gdn_backend", "cuda")
