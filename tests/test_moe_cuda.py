"""The Nvfp4MoE / Nvfp4Linear CUDA kernels (ops/moe_cuda.py) against the C++ CPU reference.

Marked ``gpu``: skipped with a message where no CUDA device is visible. Shapes cover experts that
receive no tokens, all tokens on one expert, a single token, token counts that are not tile
multiples, the smallest legal K and N, both scale layouts, and the 35B MoE shapes.
"""

from __future__ import annotations

import pytest
import torch

from qwen35_trt.ops import moe_cuda
from qwen35_trt.ops import moe_reference as ref

from test_moe_reference import Case, random_nvfp4, rel_err, swizzle

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not moe_cuda.available(), reason="no CUDA device (or _C built without CUDA)")]


def to_cuda(obj):
    if isinstance(obj, torch.Tensor):
        return obj.cuda()
    if obj is None:
        return None
    return type(obj)(*[to_cuda(getattr(obj, f)) for f in obj.__dataclass_fields__])


def swizzled(obj):
    if isinstance(obj, ref.Nvfp4Weight):
        return ref.Nvfp4Weight(obj.weight, swizzle(obj.weight_scale), obj.weight_scale_2, obj.input_scale)
    if isinstance(obj, ref.MoeExperts):
        return ref.MoeExperts(swizzled(obj.gate_up), swizzled(obj.down))
    return ref.SharedExpert(swizzled(obj.gate), swizzled(obj.up), swizzled(obj.down), obj.gate_weight)


@pytest.mark.parametrize(
    "T,E,k,H,I,force,layout",
    [
        (1, 8, 2, 64, 32, None, "row_major"),
        (13, 8, 2, 128, 32, None, "swizzled_128x4"),
        (37, 6, 3, 96, 48, None, "row_major"),
        (50, 16, 4, 64, 32, 5, "row_major"),
        (3, 3, 1, 16, 16, None, "row_major"),
        (333, 32, 8, 256, 64, None, "swizzled_128x4"),
        (1500, 16, 4, 256, 128, None, "row_major"),
        (64, 256, 8, 2048, 512, None, "row_major"),
    ],
)
def test_moe_cuda_matches_reference(T, E, k, H, I, force, layout):
    c = Case(T * 7 + E, T, E, k, H, I, force=force)
    experts, shared = (c.experts, c.shared) if layout == "row_major" else (swizzled(c.experts), swizzled(c.shared))
    want = ref.nvfp4_moe(c.x, c.logits, k, experts, shared, layout)
    want_w, want_ids = ref.route(c.logits, k)
    out = torch.full((T, H), float("nan"), dtype=torch.bfloat16, device="cuda")  # every element must be written
    got, w, ids = moe_cuda.nvfp4_moe(c.x.cuda(), c.logits.cuda(), k, to_cuda(experts), to_cuda(shared), layout,
                                     backend="w4a16", out=out, return_routing=True)
    torch.cuda.synchronize()
    assert torch.equal(ids.cpu().long(), want_ids)
    torch.testing.assert_close(w.cpu(), want_w, rtol=1e-6, atol=1e-7)
    assert torch.isfinite(got.float()).all()
    assert rel_err(got.cpu(), want) < 1e-2
    # batch invariance: the last token alone gives the same bits
    one = moe_cuda.nvfp4_moe(c.x[-1:].cuda(), c.logits[-1:].cuda(), k, to_cuda(experts), to_cuda(shared), layout, backend="w4a16")
    assert torch.equal(one, got[-1:])


@pytest.mark.parametrize("M,N,K,layout", [(1, 1, 16, "row_major"), (5, 3, 48, "row_major"), (33, 130, 96, "swizzled_128x4"), (1000, 64, 512, "row_major")])
def test_linear_cuda_matches_reference(M, N, K, layout):
    g = torch.Generator().manual_seed(M + N)
    packed, scales = random_nvfp4(g, N, K)
    if layout != "row_major":
        scales = swizzle(scales)
    w = ref.Nvfp4Weight(packed, scales, torch.tensor(0.0123), torch.tensor(0.05))
    x = torch.randn(M, K, generator=g).to(torch.bfloat16)
    want = ref.nvfp4_linear(x, w, layout)
    got = moe_cuda.nvfp4_linear(x.cuda(), to_cuda(w), layout, backend="w4a16")
    assert rel_err(got.cpu(), want) < 2e-3


def test_cuda_errors_name_the_argument():
    c = Case(1, 4, 4, 2, 32, 16)
    e = to_cuda(c.experts)
    with pytest.raises(ValueError, match="hidden: expected a CUDA tensor"):
        moe_cuda.nvfp4_moe(c.x, c.logits.cuda(), 2, e)
    with pytest.raises(ValueError, match="router_logits: expected dtype"):
        moe_cuda.nvfp4_moe(c.x.cuda(), c.logits.cuda().half(), 2, e)
    with pytest.raises(ValueError, match="top_k"):
        moe_cuda.nvfp4_moe(c.x.cuda(), c.logits.cuda(), 5, e)
    with pytest.raises(ValueError, match="backend"):
        moe_cuda.nvfp4_moe(c.x.cuda(), c.logits.cuda(), 2, e, backend="fast")
    if not moe_cuda.native_available():
        with pytest.raises(RuntimeError, match="native"):
            moe_cuda.nvfp4_moe(c.x.cuda(), c.logits.cuda(), 2, e, backend="native")
