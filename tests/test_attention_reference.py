"""GatedAttention: the paged spec (ops/attention.gated_attention) against the per-sequence spec that
is token-exact with transformers, the C++ reference (ops/attention_reference over ``_C``) against
the spec, and the CPU model's "reference" attention backend against its "spec" backend.

Thresholds (METHOD.md: relative error ||out - ref|| / ||ref||): the reference keeps the spec's bf16
cast points but sums in another order, so single values straddling a bf16 rounding boundary land one
ulp apart, and a rounded score moves its probability by up to 2^-8: ATT_TOL covers that (seen:
~2-4e-3).
"""

from __future__ import annotations

import random

import pytest
import torch

from qwen35_trt.ops import attention as spec
from qwen35_trt.ops import attention_reference as ref
from qwen35_trt.ops.registry import resolve

from model_agreement import assert_backends_agree

ATT_TOL = 1e-2


def rel(x: torch.Tensor, y: torch.Tensor) -> float:
    x, y = x.double(), y.double()
    assert torch.isfinite(x).all()
    return ((x - y).norm() / y.norm().clamp_min(1e-30)).item()


class Problem:
    """Random token streams of several sequences and a paged pool with shuffled block ids."""

    def __init__(self, seed, lens, nh=4, nkv=2, hd=32, rot=8, block_size=4, theta=1e7):
        g = torch.Generator().manual_seed(seed)
        self.lens, self.nh, self.nkv, self.hd, self.rot, self.bs = lens, nh, nkv, hd, rot, block_size
        self.kw = dict(num_heads=nh, num_kv_heads=nkv, head_dim=hd, rotary_dim=rot, rope_theta=theta, eps=1e-6)
        r = lambda *s, std=1.0: (torch.randn(*s, generator=g) * std).bfloat16()  # noqa: E731
        self.qg = [r(n, nh * 2 * hd) for n in lens]
        self.k = [r(n, nkv * hd) for n in lens]
        self.v = [r(n, nkv * hd) for n in lens]
        self.q_norm, self.k_norm = r(hd, std=0.3), r(hd, std=0.3)
        per_seq = [-(-n // block_size) for n in lens]
        ids = list(range(sum(per_seq) + 2))
        random.Random(seed).shuffle(ids)
        self.tables = torch.zeros(len(lens), max(per_seq), dtype=torch.int32)
        at = 0
        for i, n in enumerate(per_seq):
            self.tables[i, :n] = torch.tensor(ids[at : at + n])
            at += n
        self.num_blocks = len(ids)

    def pool(self) -> torch.Tensor:
        return torch.zeros(self.num_blocks, 2, self.nkv, self.bs, self.hd, dtype=torch.bfloat16)

    def call(self, fn, pool, seqs, spans):
        """Positions spans[j] = (from, to) of sequence seqs[j] in one call; out rows per sequence."""
        cu, ctx = [0], []
        for i, (a, b) in zip(seqs, spans):
            cu.append(cu[-1] + b - a)
            ctx.append(a)
        cat = lambda xs: torch.cat([xs[i][a:b] for i, (a, b) in zip(seqs, spans)])  # noqa: E731
        out = fn(cat(self.qg), cat(self.k), cat(self.v), self.q_norm, self.k_norm, pool, self.tables[seqs],
                 torch.tensor(cu, dtype=torch.int32), torch.tensor(ctx, dtype=torch.int32), **self.kw)
        return [out[cu[j] : cu[j + 1]] for j in range(len(seqs))]


def test_paged_spec_equals_sequence_spec():
    """The paged contract spec gathers and scatters the pool exactly: bit-identical with the
    per-sequence spec on contiguous history, in one call and in chunks."""
    p = Problem(0, [5, 17, 1])
    seqs = [0, 1, 2]
    whole = p.call(spec.gated_attention, p.pool(), seqs, [(0, n) for n in p.lens])
    for i, n in enumerate(p.lens):
        o, _, _ = spec.sequence_gated_attention(p.qg[i], p.k[i], p.v[i], p.q_norm, p.k_norm, torch.arange(n), None, None, **p.kw)
        assert torch.equal(whole[i], o)
    pool = p.pool()
    first = p.call(spec.gated_attention, pool, [1], [(0, 9)])[0]
    rest = p.call(spec.gated_attention, pool, [1], [(9, 17)])[0]
    assert torch.equal(torch.cat([first, rest]), whole[1])


pytestmark_ref = pytest.mark.skipif(not ref.available(), reason="qwen35_trt._C without the attention reference")


@pytestmark_ref
@pytest.mark.parametrize(
    "shape",
    [dict(), dict(nh=2, nkv=2, hd=64, rot=16, block_size=1), dict(nh=16, nkv=2, hd=256, rot=64, block_size=16)],
    ids=["tiny", "mha-block1", "qwen3.5-heads"],
)
def test_reference_matches_spec(shape):
    p = Problem(1, [1, 9, 40] if shape.get("hd", 32) < 256 else [3, 20], **shape)
    seqs = list(range(len(p.lens)))
    spans = [(0, n) for n in p.lens]
    pool_s, pool_r = p.pool(), p.pool()
    want = p.call(spec.gated_attention, pool_s, seqs, spans)
    got = p.call(ref.gated_attention, pool_r, seqs, spans)
    errs = [rel(g, w) for g, w in zip(got, want)]
    assert max(errs) < ATT_TOL, errs
    assert rel(pool_r.float(), pool_s.float()) < ATT_TOL  # the stored K (normalised, rotated) and V
    # A continuation with a cached context (prefill chunk + decode) against the spec on the same pool.
    more = Problem(1, p.lens, **shape)
    got2 = more.call(ref.gated_attention, pool_r, seqs[-1:], [(p.lens[-1] - 1, p.lens[-1])])
    assert rel(got2[0], want[-1][-1:]) < ATT_TOL


@pytestmark_ref
def test_reference_is_batch_and_chunk_invariant():
    """A sequence's output bits do not depend on its batch neighbours or on how it is chunked."""
    p = Problem(2, [33, 7, 12])
    alone = p.call(ref.gated_attention, p.pool(), [0], [(0, 33)])[0]
    pool = p.pool()
    batched = p.call(ref.gated_attention, pool, [1, 0, 2], [(0, 7), (0, 20), (0, 12)])[1]
    tail = p.call(ref.gated_attention, pool, [2, 0], [(11, 12), (20, 33)])[1]  # next to another's decode token
    assert torch.equal(torch.cat([batched, tail]), alone)


@pytestmark_ref
def test_reference_errors_name_the_argument():
    p = Problem(3, [4])
    good = dict(qg=p.qg[0], k=p.k[0], v=p.v[0], q_norm_weight=p.q_norm, k_norm_weight=p.k_norm, kv_pool=p.pool(),
                block_tables=p.tables, cu_seqlens=[0, 4], context_lens=[0])
    ref.gated_attention(**good, **p.kw)
    cases = [
        (dict(cu_seqlens=[0, 3]), "cu_seqlens"),
        (dict(context_lens=[-1]), "context_lens"),
        (dict(context_lens=[30]), "block_tables"),
        (dict(block_tables=torch.tensor([[p.num_blocks]], dtype=torch.int32)), "block_tables"),
        (dict(qg=p.qg[0].float()), "qg: expected bfloat16"),
        (dict(kv_pool=p.pool()[:, :, :1]), "kv_pool"),
        (dict(kv_pool=p.pool().transpose(3, 4)), "kv_pool"),
        (dict(k=p.k[0][:3]), "k, v"),
    ]
    for change, match in cases:
        with pytest.raises(ValueError, match=match):
            ref.gated_attention(**{**good, **change}, **p.kw)
    with pytest.raises(ValueError, match="rotary_dim"):
        ref.gated_attention(**good, **{**p.kw, "rotary_dim": 7})
    with pytest.raises(ValueError, match="kv_pool: expected shape"):
        ref.gated_attention(**good, **{**p.kw, "head_dim": 64})


# --------------------------------------------------------------------------------------------
# The CPU model: "reference" attention backend against "spec"


@pytestmark_ref
@pytest.mark.parametrize("variant", ["default", "wide"])
def test_model_reference_attention_matches_spec(variant, request, tiny_engines):
    from qwen35_trt.model import Qwen35Model

    _, engine = tiny_engines.get_engine(request, variant)
    spec_model = Qwen35Model(engine, attention_backend="spec")
    ref_model = Qwen35Model(engine, attention_backend="reference")
    assert ref_model.attention_backend == "reference" and spec_model.attention_backend == "spec"
    # The spec and the reference are bit-identical on random inputs of the tiny shapes, except where
    # torch's vectorised fp32 cos/sin differ from the C library's in the last bit (~6 % of the RoPE
    # angles, seen here) and that survives the bf16 rounding: on "wide" from position 60 on.
    assert_backends_agree(spec_model, ref_model)


def test_attention_backend_argument():
    assert resolve("attention_backend", "spec") == "spec"
    with pytest.raises(ValueError, match="attention_backend: expected one of"):
        resolve("attention_backend", "onnx")
