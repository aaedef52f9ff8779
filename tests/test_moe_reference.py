"""Nvfp4MoE / Nvfp4Linear C++ reference (ops/moe_reference.py) against the torch spec ops, on
random shapes and on the tiny engines; batch invariance; argument errors.

The reference computes in fp32 with one bf16 rounding per GEMM output; the spec reproduces
transformers' bf16 cast points. So they agree to bf16 rounding (relative error ~1e-3), and on
whole models the greedy tokens agree except where two logits are nearly tied.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from qwen35_trt import _C
from qwen35_trt import nvfp4 as codec
from qwen35_trt.model import Qwen35Model, greedy_generate
from qwen35_trt.ops import moe, moe_reference as ref, nvfp4_linear

pytestmark = pytest.mark.skipif(not ref.available(), reason="qwen35_trt._C has no MoE reference ops")

BF16 = torch.bfloat16


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-30)).item()


def random_nvfp4(g: torch.Generator, *shape: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Packed codes uint8 [*shape[:-1], K/2] and row-major scales uint8 [*shape[:-1], K/16] with
    block scales in [2^-3, 2^3] (e4m3 exponents 4..10)."""
    *lead, n, k = shape
    packed = torch.randint(0, 256, (*lead, n, k // 2), generator=g, dtype=torch.uint8)
    exp = torch.randint(4, 11, (*lead, n, k // 16), generator=g)
    man = torch.randint(0, 8, (*lead, n, k // 16), generator=g)
    return packed, (exp * 8 + man).to(torch.uint8)


def fragments(w):
    """An Nvfp4Weight in the W4A16 fragment layout (sm_90 / sm_120 engines), through the C++ codec."""
    codes, scales = _C.pack_w4a16_fragments(w.weight.contiguous().numpy(), w.weight_scale.contiguous().view(torch.uint8).numpy())
    return ref.Nvfp4Weight(torch.from_numpy(codes), torch.from_numpy(scales), w.weight_scale_2, w.input_scale)


def swizzle(scales: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(codec.swizzle_scales_128x4(scales.numpy()))


class Case:
    """Random routed experts (fused layout), a shared expert and inputs for one MoE call."""

    def __init__(self, seed: int, T: int, E: int, k: int, H: int, I: int, Is: int = 32, force: int | None = None):
        g = torch.Generator().manual_seed(seed)
        self.T, self.E, self.k, self.H, self.I = T, E, k, H, I
        gu_w, gu_s = random_nvfp4(g, E, 2 * I, H)
        dn_w, dn_s = random_nvfp4(g, E, H, I)
        gu_s2 = torch.rand(E, 2, generator=g) * 0.01 + 0.005
        dn_s2 = torch.rand(E, generator=g) * 0.01 + 0.005
        self.experts = ref.MoeExperts(ref.Nvfp4Weight(gu_w, gu_s, gu_s2), ref.Nvfp4Weight(dn_w, dn_s, dn_s2))
        lins = []
        for n, kk in ((Is, H), (Is, H), (H, Is)):
            w, s = random_nvfp4(g, n, kk)
            lins.append(ref.Nvfp4Weight(w, s, torch.tensor(0.01 + 0.005 * len(lins))))
        self.shared = ref.SharedExpert(*lins, (torch.randn(1, H, generator=g) * 0.1).to(BF16))
        self.x = torch.randn(T, H, generator=g).to(BF16)
        self.router = (torch.randn(E, H, generator=g) * 0.2).to(BF16)
        self.logits = F.linear(self.x, self.router)
        if force is not None:
            self.logits[:, force] = 30.0  # every token picks this expert first

    def spec(self, shared: bool = True) -> torch.Tensor:
        """The torch spec path (moe.moe_block with nvfp4_linear.linear_w4a16 experts)."""
        gu, dn, I = self.experts.gate_up, self.experts.down, self.I

        def lin(w: ref.Nvfp4Weight, e=None, rows=slice(None), half=0):
            if e is None:
                return lambda y: nvfp4_linear.linear_w4a16(y, w.weight, w.weight_scale, w.weight_scale_2)
            s2 = w.weight_scale_2[e, half] if w.weight_scale_2.dim() == 2 else w.weight_scale_2[e]
            return lambda y: nvfp4_linear.linear_w4a16(y, w.weight[e, rows], w.weight_scale[e, rows], s2)

        def expert(e, y):
            return moe.swiglu(y, lin(gu, e, slice(0, I), 0), lin(gu, e, slice(I, 2 * I), 1), lin(dn, e))

        # moe.moe_block, with the router logits given
        s = self.shared
        weights, ids = moe.route(self.logits, self.k)
        routed = moe.routed_experts(self.x, ids, weights, expert)
        if not shared:
            return routed
        y = moe.swiglu(self.x, lin(s.gate), lin(s.up), lin(s.down))
        return routed + torch.sigmoid(F.linear(self.x, s.gate_weight)) * y

    def reference(self, x=None, logits=None, shared: bool = True, scale_layout: str = "row_major") -> torch.Tensor:
        experts, sh = self.experts, self.shared if shared else None
        if scale_layout == "w4a16_fragments":
            experts = ref.MoeExperts(fragments(experts.gate_up), fragments(experts.down))
            if sh is not None:
                sh = ref.SharedExpert(fragments(sh.gate), fragments(sh.up), fragments(sh.down), sh.gate_weight)
        if scale_layout == "swizzled_128x4":
            gu, dn = experts.gate_up, experts.down
            experts = ref.MoeExperts(
                ref.Nvfp4Weight(gu.weight, swizzle(gu.weight_scale), gu.weight_scale_2),
                ref.Nvfp4Weight(dn.weight, swizzle(dn.weight_scale), dn.weight_scale_2),
            )
            if sh is not None:
                sw = lambda w: ref.Nvfp4Weight(w.weight, swizzle(w.weight_scale), w.weight_scale_2)  # noqa: E731
                sh = ref.SharedExpert(sw(sh.gate), sw(sh.up), sw(sh.down), sh.gate_weight)
        return ref.nvfp4_moe(self.x if x is None else x, self.logits if logits is None else logits, self.k, experts, sh, scale_layout)


@pytest.mark.parametrize(
    "T,E,k,H,I,force",
    [
        (1, 8, 2, 64, 32, None),     # a single token; most experts get none
        (13, 8, 2, 128, 32, None),
        (37, 6, 3, 96, 48, None),    # the tiny "wide" shapes; K = 48 is not a multiple of 32
        (20, 16, 4, 64, 32, 5),      # every token routed to expert 5
        (5, 4, 4, 32, 16, None),     # top_k == E, the smallest legal I
        (3, 3, 1, 16, 16, None),     # the smallest legal H and I
        (70, 32, 8, 64, 32, None),
    ],
)
def test_moe_matches_spec(T, E, k, H, I, force):
    c = Case(T * 100 + E, T, E, k, H, I, force=force)
    got, want = c.reference(), c.spec()
    assert got.dtype == BF16 and got.shape == (T, H)
    assert rel_err(got, want) < 1.5e-2
    if force is not None:
        assert (ref.route(c.logits, k)[1][:, 0] == force).all()
    assert torch.equal(c.reference(scale_layout="swizzled_128x4"), got)
    assert torch.equal(c.reference(scale_layout="w4a16_fragments"), got)  # converted back to ModelOpt's order
    no_shared = c.reference(shared=False)
    assert rel_err(no_shared, c.spec(shared=False)) < 1.5e-2


@pytest.mark.parametrize("seed", range(6))
def test_moe_random_shapes_match_spec(seed):
    """Random expert counts, top-k, token counts and (multiple-of-16) sizes."""
    r = torch.Generator().manual_seed(seed)
    E = int(torch.randint(1, 41, (1,), generator=r))
    k = int(torch.randint(1, min(E, 8) + 1, (1,), generator=r))
    T = int(torch.randint(1, 60, (1,), generator=r))
    H, I = (16 * int(torch.randint(1, 9, (1,), generator=r)) for _ in range(2))
    c = Case(seed, T, E, k, H, I, Is=16 * int(torch.randint(1, 5, (1,), generator=r)))
    assert rel_err(c.reference(), c.spec()) < 1.5e-2, (T, E, k, H, I)


def test_moe_is_batch_invariant():
    c = Case(3, 40, 16, 4, 64, 32)
    full = c.reference()
    for t in (0, 17, 39):
        assert torch.equal(c.reference(c.x[t : t + 1], c.logits[t : t + 1]), full[t : t + 1])
    perm = torch.randperm(40, generator=torch.Generator().manual_seed(0))
    assert torch.equal(c.reference(c.x[perm], c.logits[perm]), full[perm])


def test_results_do_not_depend_on_threads_or_isa():
    """The wrappers pass torch's thread count to the C++ kernels; neither it nor the ISA (portable,
    AVX2 or AVX-512, where the CPU has them) changes a bit."""
    from qwen35_trt import _C

    c = Case(5, 48, 8, 2, 256, 128, Is=64)
    g = torch.Generator().manual_seed(1)
    w, s = random_nvfp4(g, 300, 256)
    lin = ref.Nvfp4Weight(w, s, torch.tensor(0.02))
    before_threads, before_isa = torch.get_num_threads(), _C.cpu_isa()
    isas = []
    for isa in ("portable", "avx2", "avx512"):
        try:
            _C.set_cpu_isa(isa)
            isas.append(isa)
        except ValueError:  # this CPU lacks it
            pass
    assert before_isa in isas
    try:
        results = []
        for isa in isas:
            _C.set_cpu_isa(isa)
            for n in (1, 2, 3):
                torch.set_num_threads(n)
                results.append((c.reference(), ref.nvfp4_linear(c.x, lin)))
                assert _C.cpu_threads() == n
    finally:
        torch.set_num_threads(before_threads)
        _C.set_cpu_isa(before_isa)
    for moe_out, lin_out in results[1:]:
        assert torch.equal(moe_out, results[0][0]) and torch.equal(lin_out, results[0][1])


def test_moe_zero_tokens():
    c = Case(4, 2, 8, 2, 32, 16)
    out = c.reference(c.x[:0], c.logits[:0])
    assert out.shape == (0, 32)


def test_route_matches_spec():
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(50, 64, generator=g)
    for dtype in (torch.float32, BF16):  # bf16 logits tie often: ties go to the lower index
        w, ids = ref.route(logits.to(dtype), 8)
        want_ids = torch.sort(-logits.to(dtype).float(), dim=-1, stable=True).indices[:, :8]
        assert torch.equal(ids, want_ids)
        probs = torch.softmax(logits.to(dtype).float(), dim=-1).gather(1, want_ids)
        torch.testing.assert_close(w, probs / probs.sum(-1, keepdim=True), rtol=1e-6, atol=1e-7)
    # ties go to the lower expert index
    _, ids = ref.route(torch.tensor([[1.0, 3.0, 3.0, 0.0, 3.0]]), 2)
    assert ids.tolist() == [[1, 2]]


@pytest.mark.parametrize("M,N,K", [(1, 1, 16), (7, 33, 48), (64, 130, 256)])
def test_linear_matches_spec(M, N, K):
    g = torch.Generator().manual_seed(M * N)
    packed, scales = random_nvfp4(g, N, K)
    s2, is_ = torch.tensor(0.0123), torch.tensor(0.0371)
    x = torch.randn(M, K, generator=g).to(BF16)
    w = ref.Nvfp4Weight(packed, scales, s2, is_)
    got = ref.nvfp4_linear(x, w)
    assert rel_err(got, nvfp4_linear.linear_w4a16(x, packed, scales, s2)) < 1e-2
    sw = ref.Nvfp4Weight(packed, swizzle(scales), s2, is_)
    assert torch.equal(ref.nvfp4_linear(x, sw, scale_layout="swizzled_128x4"), got)
    assert torch.equal(ref.nvfp4_linear(x, fragments(w), scale_layout="w4a16_fragments"), got)
    # W4A4: activations quantized per 16 with input_scale, as the spec emulation does
    got4 = ref.nvfp4_linear(x, w, activation="w4a4")
    assert rel_err(got4, nvfp4_linear.linear_w4a4(x, packed, scales, s2, is_)) < 5e-3
    assert ref.nvfp4_linear(x.reshape(1, M, K), w).shape == (1, M, N)


def test_errors_name_the_argument():
    c = Case(1, 4, 4, 2, 32, 16)
    e = c.experts
    with pytest.raises(ValueError, match="hidden: expected dtype torch.bfloat16"):
        ref.nvfp4_moe(c.x.float(), c.logits, 2, e)
    with pytest.raises(ValueError, match="top_k"):
        ref.nvfp4_moe(c.x, c.logits, 5, e)
    with pytest.raises(ValueError, match="router_logits"):
        ref.nvfp4_moe(c.x, c.logits[:, :3], 2, e)
    with pytest.raises(ValueError, match="router_logits"):
        ref.nvfp4_moe(c.x, c.logits.to(torch.float16), 2, e)
    bad = ref.MoeExperts(ref.Nvfp4Weight(e.gate_up.weight, e.gate_up.weight_scale, e.gate_up.weight_scale_2[:, 0]), e.down)
    with pytest.raises(ValueError, match="gate_up.weight_scale_2"):
        ref.nvfp4_moe(c.x, c.logits, 2, bad)
    bad = ref.MoeExperts(e.gate_up, ref.Nvfp4Weight(e.down.weight[:, :, :4], e.down.weight_scale, e.down.weight_scale_2))
    with pytest.raises(ValueError, match="down"):
        ref.nvfp4_moe(c.x, c.logits, 2, bad)
    with pytest.raises(ValueError, match="scale_layout"):
        ref.nvfp4_moe(c.x, c.logits, 2, e, scale_layout="columns")
    with pytest.raises(ValueError, match="gate_up.input_scale"):
        ref.nvfp4_moe(c.x, c.logits, 2, e, activation="w4a4")
    with pytest.raises(ValueError, match="weight_scale_2"):
        ref.nvfp4_moe(c.x, c.logits, 2, ref.MoeExperts(e.gate_up, ref.Nvfp4Weight(e.down.weight, e.down.weight_scale, -e.down.weight_scale_2)))
    w = ref.Nvfp4Weight(*random_nvfp4(torch.Generator().manual_seed(0), 8, 32), torch.tensor(1.0))
    with pytest.raises(ValueError, match="x: last dimension"):
        ref.nvfp4_linear(torch.zeros(2, 16, dtype=BF16), w)
    with pytest.raises(ValueError, match="weight: expected dtype torch.uint8"):
        ref.nvfp4_linear(torch.zeros(2, 32, dtype=BF16), ref.Nvfp4Weight(w.weight.float(), w.weight_scale, w.weight_scale_2))


# --- whole tiny models: "reference" vs "spec" backends -------------------------------------------

# The spec rounds every dequantized weight (global scale included) to bf16 and every activation at
# transformers' cast points; the reference keeps e2m1 * fp8 exact and applies the global to the
# fp32 sum. Their logits differ by ~3 % of the logits' standard deviation (median over positions,
# tiny random models), more where a router near-tie sends a token to another expert. A position
# counts as a near-tie when the spec's top-2 gap is within twice the largest logit difference
# between the two backends there: only then can the difference swap the argmax.
MAX_MEDIAN_DIFF_REL = 0.06
NEW_TOKENS = 16


@pytest.fixture(scope="module", params=["default", "nvfp4_ab", "wide"])
def models(request, tiny_engines):
    _, engine = tiny_engines.get_engine(request, request.param)
    spec = Qwen35Model(engine, moe_backend="spec")
    reference = Qwen35Model(engine, moe_backend="reference")
    assert reference.moe_backend == "reference" and spec.moe_backend == "spec"
    return request.param, spec, reference


def _all_logits(model, ids):
    cache = model.new_cache(1)
    return model.forward([(cache.allocate(), ids)], cache, all_logits=True)[0].float()


def _near_ties(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    top2 = a.topk(2, dim=-1).values
    return (top2[..., 0] - top2[..., 1]) <= 2 * (a - b).abs().amax(-1)


def test_model_reference_backend_matches_spec(models):
    name, spec, reference = models
    vocab = spec.cfg.vocab_size
    g = torch.Generator().manual_seed(7)
    for n in (5, 40):
        ids = torch.randint(0, vocab, (n,), generator=g).tolist()
        a, b = _all_logits(spec, ids), _all_logits(reference, ids)
        # Whole-sequence cosine >= 0.999; per position the median is far closer, and a few
        # positions may drop lower where a router near-tie picks another expert.
        cos_all = F.cosine_similarity(a.flatten(), b.flatten(), dim=0)
        cos = F.cosine_similarity(a, b, dim=-1)
        assert cos_all >= 0.999, f"{name}: cosine {cos_all:.6f}"
        assert cos.median() >= 0.9999 and (cos < 0.999).float().mean() <= 0.05, f"{name}: per-position cosines {cos}"
        diff = (a - b).abs().amax(-1) / a.std()
        assert diff.median() <= MAX_MEDIAN_DIFF_REL, f"{name}: median max|diff| {diff.median():.3f} of std"
        differ = a.argmax(-1) != b.argmax(-1)
        assert not (differ & ~_near_ties(a, b)).any(), f"{name}: argmax differs away from near-ties"
        got, want = greedy_generate(reference, ids, NEW_TOKENS), greedy_generate(spec, ids, NEW_TOKENS)
        if got != want:  # allowed only at a near-tie of the common prefix
            i = next(i for i, (x, y) in enumerate(zip(got, want)) if x != y)
            prefix = ids + want[:i]
            assert _near_ties(_all_logits(spec, prefix)[-1], _all_logits(reference, prefix)[-1]), (
                f"{name}: generation differs at new token {i} away from a near-tie")


def test_model_reference_backend_is_batch_invariant(models):
    _, _, reference = models
    vocab = reference.cfg.vocab_size
    g = torch.Generator().manual_seed(8)
    prompts = [torch.randint(0, vocab, (n,), generator=g).tolist() for n in (3, 11, 6)]
    cache = reference.new_cache(3)
    slots = [cache.allocate() for _ in prompts]
    together = reference.forward(list(zip(slots, prompts)), cache)
    for p, want in zip(prompts, together):
        c = reference.new_cache(1)
        assert torch.equal(reference.forward([(c.allocate(), p)], c)[0], want)


def test_unknown_backend_rejected(tiny_engines, request):
    _, engine = tiny_engines.get_engine(request, "default")
    with pytest.raises(ValueError, match="moe_backend"):
        Qwen35Model(engine, moe_backend="cuda")


def test_cuda_wrapper_imports_and_validates_without_gpu():
    """ops.moe_cuda imports on any machine and rejects CPU tensors before touching a GPU."""
    from qwen35_trt.ops import moe_cuda

    c = Case(2, 3, 4, 2, 32, 16)
    assert isinstance(moe_cuda.available(), bool)
    with pytest.raises(ValueError, match="hidden: expected a CUDA tensor"):
        moe_cuda.nvfp4_moe(c.x, c.logits, 2, c.experts)
    with pytest.raises(ValueError, match="x: expected a CUDA tensor"):
        moe_cuda.nvfp4_linear(c.x, c.shared.gate)
    with pytest.raises(ValueError, match="backend"):
        moe_cuda.nvfp4_moe(c.x, c.logits, 2, c.experts, backend="fastest")
