"""The Gated DeltaNet CUDA kernels (ops/gdn_cuda.py) against the C++ CPU reference and the spec.

Skipped without a CUDA device. Thresholds (METHOD.md, relative error ||out - ref|| / ||ref||):
the conv and the recurrent kernel compute in fp32 like the reference, so bf16 outputs differ by
rounding only (< 2e-3); the chunked prefill rounds its tensor-core operands to bf16 (< 1e-2).
Fresh random inputs per case; outputs and pools are compared in full, NaN never passes.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from qwen35_trt.ops import conv1d, gated_delta_rule as gdr, gdn_cuda, gdn_reference as ref

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not gdn_cuda.available(), reason="no CUDA device (or _C built without CUDA)"),
]

VARLEN = [1, 2, 63, 64, 65, 127, 1000]
EXACT_TOL = 2e-3
MMA_TOL = 1e-2


def rel(x: torch.Tensor, y: torch.Tensor) -> float:
    x, y = x.double().cpu(), y.double().cpu()
    assert torch.isfinite(x).all(), "non-finite output (unwritten or NaN)"
    return ((x - y).norm() / y.norm().clamp_min(1e-30)).item()


def cu_of(lens) -> list[int]:
    return np.concatenate([[0], np.cumsum(lens)]).astype(int).tolist()


def inputs(seed, T, hk, hv, dk, dv):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s, std=1.0: (torch.randn(*s, generator=g) * std).bfloat16()  # noqa: E731
    return dict(q=r(T, hk, dk), k=r(T, hk, dk), v=r(T, hv, dv), a=r(T, hv), b=r(T, hv, std=1.5),
                # head 0 almost without decay, so that long-range terms inside a chunk matter
                A_log=torch.cat([torch.tensor([-8.0]), torch.randn(hv - 1, generator=g) - 0.5]),
                dt_bias=torch.randn(hv, generator=g) * 0.5)


def cuda(d: dict) -> dict:
    return {k: v.cuda() for k, v in d.items()}


def run_both(x, pool, slots, cu, init, algorithm="auto"):
    """(o_cpu, pool_cpu, o_gpu, pool_gpu) for one contract call."""
    p_cpu = pool.clone()
    o_cpu = ref.gated_delta_net(**x, state_pool=p_cpu, slots=slots, cu_seqlens=cu, has_initial_state=init)
    p_gpu = pool.cuda()
    o_gpu = gdn_cuda.gated_delta_net(**cuda(x), state_pool=p_gpu, slots=slots, cu_seqlens=cu, has_initial_state=init,
                                     algorithm=algorithm)
    torch.cuda.synchronize()
    return o_cpu, p_cpu, o_gpu.cpu(), p_gpu.cpu()


@pytest.mark.parametrize("shape", [(2, 4, 128, 128), (1, 2, 64, 64), (16, 32, 128, 128), (3, 6, 64, 32)])
def test_chunked_prefill_matches_reference(shape):
    hk, hv, dk, dv = shape
    lens = VARLEN if hv <= 4 else [65, 130, 1]
    cu = cu_of(lens)
    x = inputs(sum(shape), cu[-1], hk, hv, dk, dv)
    slots = list(np.random.default_rng(0).permutation(len(lens) + 3)[: len(lens)])
    init = [i % 3 != 1 for i in range(len(lens))]
    pool = torch.randn(len(lens) + 3, hv, dk, dv) * 0.3
    o_cpu, p_cpu, o_gpu, p_gpu = run_both(x, pool, slots, cu, init, "chunked")
    for i in range(len(lens)):
        assert rel(o_gpu[cu[i] : cu[i + 1]], o_cpu[cu[i] : cu[i + 1]]) < MMA_TOL, f"sequence {i} (length {lens[i]})"
    assert rel(p_gpu, p_cpu) < MMA_TOL
    others = [s for s in range(len(lens) + 3) if s not in slots]
    assert torch.equal(p_gpu[others], pool[others])


@pytest.mark.parametrize("dk, dv", [(128, 128), (32, 64), (64, 32), (256, 32)])
def test_recurrent_matches_reference(dk, dv):
    hk, hv, B = 2, 4, 5
    x = inputs(dk + dv, B, hk, hv, dk, dv)
    pool = torch.randn(B + 2, hv, dk, dv) * 0.3
    slots = [6, 0, 3, 2, 5]
    o_cpu, p_cpu, o_gpu, p_gpu = run_both(x, pool, slots, None, None)  # decode form
    assert rel(o_gpu, o_cpu) < EXACT_TOL and rel(p_gpu, p_cpu) < 1e-4
    # Varlen through the recurrent kernel.
    cu = cu_of([1, 5, 70])
    x = inputs(dk * 3, cu[-1], hk, hv, dk, dv)
    o_cpu, p_cpu, o_gpu, p_gpu = run_both(x, pool, [1, 4, 0], cu, [True, False, True], "recurrent")
    assert rel(o_gpu, o_cpu) < EXACT_TOL and rel(p_gpu, p_cpu) < 1e-4


def test_three_way_against_spec():
    """spec vs CPU reference vs CUDA on one varlen batch (bf16)."""
    hk, hv, dk, dv, lens = 2, 4, 64, 64, [3, 64, 90]
    cu = cu_of(lens)
    x = inputs(5, cu[-1], hk, hv, dk, dv)
    g, beta = gdr.gdn_gating(x["a"], x["b"], x["A_log"], x["dt_bias"])
    o_spec, s_spec = gdr.chunk_gated_delta_rule(x["q"], x["k"], x["v"], g, beta, cu)
    pool = torch.zeros(3, hv, dk, dv)
    o_cpu, p_cpu, o_gpu, p_gpu = run_both(x, pool, [0, 1, 2], cu, [False] * 3)
    assert rel(o_cpu, o_spec) < EXACT_TOL and rel(p_cpu, s_spec) < 1e-4
    assert rel(o_gpu, o_spec) < MMA_TOL and rel(p_gpu, s_spec) < MMA_TOL


def test_continuation_on_device():
    """prefill A + prefill B + N decodes on the GPU == the reference over all tokens."""
    hk, hv, dk, dv, n1, n2, nd = 2, 4, 128, 128, 100, 70, 5
    T = n1 + n2 + nd
    x = inputs(21, T, hk, hv, dk, dv)
    pool = torch.zeros(2, hv, dk, dv)
    o_all = ref.gated_delta_net(**x, state_pool=pool, slots=[1], cu_seqlens=[0, T], has_initial_state=[False])
    p_gpu = torch.full((2, hv, dk, dv), float("nan"), device="cuda")
    outs = []
    piece = lambda sl: {k: (v[sl] if v.dim() and v.shape[0] == T else v).cuda() for k, v in x.items()}  # noqa: E731
    outs.append(gdn_cuda.gated_delta_net(**piece(slice(0, n1)), state_pool=p_gpu, slots=[1], cu_seqlens=[0, n1], has_initial_state=[False]))
    outs.append(gdn_cuda.gated_delta_net(**piece(slice(n1, n1 + n2)), state_pool=p_gpu, slots=[1], cu_seqlens=[0, n2], has_initial_state=[True]))
    for t in range(n1 + n2, T):
        outs.append(gdn_cuda.gated_delta_net(**piece(slice(t, t + 1)), state_pool=p_gpu, slots=[1]))
    assert rel(torch.cat(outs).cpu(), o_all) < MMA_TOL
    assert rel(p_gpu[1].cpu(), pool[1]) < MMA_TOL
    assert torch.isnan(p_gpu[0]).all()


@pytest.mark.parametrize("C, W, lens, pad", [(64, 4, VARLEN, 0), (8192, 4, [1, 70, 3], 8), (24, 2, [5, 1], 0), (16, 8, [2, 130], 0)])
def test_conv_matches_reference(C, W, lens, pad):
    cu = cu_of(lens)
    g = torch.Generator().manual_seed(C + W)
    xfull = torch.randn(cu[-1], C + pad, generator=g).bfloat16()
    x = xfull[:, :C]  # strided rows when pad > 0
    w = (torch.randn(C, W, generator=g) * 0.5).bfloat16()
    pool = torch.randn(len(lens) + 2, C, W - 1, generator=g).bfloat16()
    slots = list(range(len(lens) + 1, 0, -1))[: len(lens)]
    init = [i % 2 == 0 for i in range(len(lens))]
    p_cpu, p_gpu = pool.clone(), pool.cuda()
    y_cpu = ref.causal_conv1d(x, w, p_cpu, slots, cu, init)
    y_gpu = gdn_cuda.causal_conv1d(xfull.cuda()[:, :C], w.cuda(), p_gpu, slots, cu, init).cpu()
    assert rel(y_gpu, y_cpu) < EXACT_TOL and (y_gpu != y_cpu).float().mean() < 0.01
    assert torch.equal(p_gpu.cpu(), p_cpu)
    # decode form against the spec
    B = len(lens)
    y_spec, s_spec = conv1d.causal_conv1d_decode(x[:B], w, pool[slots])
    p2 = pool.cuda()
    y2 = gdn_cuda.causal_conv1d(x[:B].contiguous().cuda(), w.cuda(), p2, slots).cpu()
    assert rel(y2, y_spec) < EXACT_TOL and torch.equal(p2.cpu()[slots], s_spec)


def test_bad_arguments():
    hk, hv, dk, dv = 1, 2, 64, 32
    x = cuda(inputs(1, 5, hk, hv, dk, dv))
    pool = torch.zeros(3, hv, dk, dv, device="cuda")

    def call(**kw):
        args = dict(x, state_pool=pool, slots=[0, 1], cu_seqlens=[0, 3, 5], has_initial_state=[False, True])
        args.update(kw)
        return gdn_cuda.gated_delta_net(**args)

    call()
    with pytest.raises(ValueError, match="cu_seqlens: sequence 1 has length 0"):
        call(cu_seqlens=[0, 5, 5])
    with pytest.raises(ValueError, match=r"slots: slot 3 of sequence 1 is out of range \[0, 3\)"):
        call(slots=[0, 3])
    with pytest.raises(ValueError, match="slots: a slot is used by two sequences"):
        call(slots=[1, 1])
    with pytest.raises(ValueError, match="num_v_heads: must be a multiple of num_k_heads"):
        call(q=x["q"][:, :1].expand(5, 3, dk).contiguous(), k=x["k"][:, :1].expand(5, 3, dk).contiguous())
    with pytest.raises(ValueError, match="head_v_dim: must be a positive multiple of 32"):
        call(v=torch.zeros(5, hv, 24, dtype=torch.bfloat16, device="cuda"), state_pool=torch.zeros(3, hv, dk, 24, device="cuda"))
    with pytest.raises(ValueError, match="state_pool: expected dtype torch.float32"):
        call(state_pool=pool.half())
    with pytest.raises(ValueError, match="q: expected a CUDA tensor"):
        call(q=x["q"].cpu())
    # Device-side check (host validation off): a zero-length sequence is flagged, nothing written.
    ws = torch.empty(gdn_cuda.workspace_bytes(2, 5, hv, dk, dv), dtype=torch.uint8, device="cuda")
    before = pool.clone()
    call(cu_seqlens=[0, 0, 5], validate=False, workspace=ws)
    with pytest.raises(ValueError, match="cu_seqlens"):
        gdn_cuda.prefill_check(ws)
    assert torch.equal(pool, before)
    cpool = torch.zeros(2, 16, 3, dtype=torch.bfloat16, device="cuda")
    with pytest.raises(ValueError, match="channels: must be a positive multiple of 8"):
        gdn_cuda.causal_conv1d(torch.zeros(4, 12, dtype=torch.bfloat16, device="cuda"), torch.zeros(12, 4, dtype=torch.bfloat16, device="cuda"),
                               torch.zeros(2, 12, 3, dtype=torch.bfloat16, device="cuda"), [0], [0, 4], [False])
    with pytest.raises(ValueError, match="slots: slot 2 of sequence 0 is out of range"):
        gdn_cuda.causal_conv1d(torch.zeros(4, 16, dtype=torch.bfloat16, device="cuda"), torch.zeros(16, 4, dtype=torch.bfloat16, device="cuda"),
                               cpool, [2], [0, 4], [False])

