"""The GatedAttention CUDA kernels (ops/attention_cuda.py) against the C++ CPU reference
(ops/attention_reference.py), and the wrapper's host-side checks.

The kernel tests need a CUDA device (marked ``gpu``, skipped otherwise). Thresholds: the kernels
run the reference's operations in its order (csrc/tests/test_attention_emulated.cpp shows the same
bits on the CPU), so on a GPU they differ only where the device's expf / cosf / sinf / powf differ
from the host's in the last place: out relative error < 1e-2 (in practice far less), new values
exact, new keys equal except rare last-bit flips (< 0.1 %). Batch invariance is exact. The
``check_sequences`` tests run anywhere.
"""

from __future__ import annotations

import pytest
import torch

from qwen35_trt.ops import attention_cuda as cuda
from qwen35_trt.ops import attention_reference as ref

from test_attention_reference import Problem, rel

TOL = 1e-2

needs_gpu = pytest.mark.skipif(not (cuda.available() and ref.available()), reason="no CUDA device (or _C built without CUDA)")


def on_cuda(qg, k, v, q_norm, k_norm, pool, tables, cu, ctx, **kw):
    """attention_cuda.gated_attention on CPU inputs (the pool already on the device); out on the CPU."""
    dev = pool.device
    return cuda.gated_attention(qg.to(dev), k.to(dev), v.to(dev), q_norm.to(dev), k_norm.to(dev), pool, tables, cu,
                                ctx, **kw).cpu()


def bits(t: torch.Tensor) -> torch.Tensor:
    return t.view(torch.int16)


def compare(p: Problem, cached, seed: int = 0):
    """One call on both backends: sequence i's positions cached[i] .. lens[i] new, the earlier ones
    random keys and values already in the pool. Checks out per sequence and the pools."""
    g = torch.Generator().manual_seed(seed)
    pool = torch.randn(p.pool().shape, generator=g).bfloat16()
    pool_r, pool_c = pool.clone(), pool.cuda()
    seqs, spans = list(range(len(p.lens))), [(c, n) for c, n in zip(cached, p.lens)]
    want = p.call(ref.gated_attention, pool_r, seqs, spans)
    got = p.call(on_cuda, pool_c, seqs, spans)
    errs = [rel(g, w) for g, w in zip(got, want)]
    assert max(errs) < TOL, errs
    diff = bits(pool_c.cpu()) != bits(pool_r)
    assert not diff[:, 1].any(), "new values differ from the reference"
    new_keys = sum(b - a for a, b in spans) * p.nkv * p.hd
    assert int(diff[:, 0].sum()) * 1000 < new_keys, f"{int(diff[:, 0].sum())} of {new_keys} new key elements differ"


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize(
    "shape, lens, cached",
    [
        (dict(), [9, 17, 5], [0, 8, 4]),
        (dict(nh=2, nkv=2, hd=64, rot=16, block_size=1), [1, 9, 40], [0, 3, 39]),
        (dict(nh=6, nkv=2, hd=96, rot=32, block_size=8), [12, 30], [5, 29]),
        (dict(nh=16, nkv=2, hd=256, rot=64, block_size=16), [200, 960, 1001, 1], [0, 900, 1000, 0]),
    ],
    ids=["tiny", "mha-block1", "hd96", "qwen3.5-heads"],
)
def test_cuda_matches_reference(shape, lens, cached):
    """A prompt, a chunk continuing a cached context and decode tokens in one call."""
    compare(Problem(len(lens) + shape.get("hd", 32), lens, **shape), cached)


@pytest.mark.gpu
@needs_gpu
def test_cuda_batch_invariance_and_fused_rows():
    """A sequence alone and inside a batch give the same bits; qg, k, v as column slices of one
    projection output give the same bits as separate tensors."""
    p = Problem(7, [70, 1, 33, 1], nh=16, nkv=2, hd=256, rot=64, block_size=16)
    pool = p.pool().cuda()
    seqs, spans = [0, 1, 2, 3], [(0, 70), (0, 1), (0, 33), (0, 1)]
    batch = p.call(on_cuda, pool, seqs, spans)
    for i in seqs:
        alone = p.call(on_cuda, p.pool().cuda(), [i], [spans[i]])[0]
        assert torch.equal(bits(alone), bits(batch[i])), f"sequence {i}"
    qg, k, v = (torch.cat(x).cuda() for x in (p.qg, p.k, p.v))
    fused = torch.cat([qg, k, v, torch.zeros(qg.shape[0], 8, dtype=torch.bfloat16, device="cuda")], dim=1)
    w1, w2 = qg.shape[1], k.shape[1]
    cu = torch.tensor([0, 70, 71, 104, 105], dtype=torch.int32)
    args = (p.q_norm.cuda(), p.k_norm.cuda())
    a = cuda.gated_attention(qg, k, v, *args, p.pool().cuda(), p.tables, cu, [0, 0, 0, 0], **p.kw)
    b = cuda.gated_attention(fused[:, :w1], fused[:, w1 : w1 + w2], fused[:, w1 + w2 : w1 + 2 * w2], *args,
                             p.pool().cuda(), p.tables.cuda(), cu.cuda(), torch.zeros(4, dtype=torch.int32), **p.kw)
    assert torch.equal(bits(a), bits(b))
    assert torch.equal(bits(a.cpu()), bits(torch.cat(batch)))


@pytest.mark.gpu
@needs_gpu
def test_cuda_argument_errors():
    p = Problem(3, [4, 2])
    pool = p.pool().cuda()
    t = lambda x: x.cuda()  # noqa: E731
    base = (t(p.qg[0][:3]), t(p.k[0][:3]), t(p.v[0][:3]), t(p.q_norm), t(p.k_norm))
    with pytest.raises(ValueError, match="block_tables: sequence 0, logical block 0: block id 99"):
        cuda.gated_attention(*base, pool, [[99]], [0, 3], [0], **p.kw)
    with pytest.raises(ValueError, match="cu_seqlens: last entry 2"):
        cuda.gated_attention(*base, pool, p.tables[:1], [0, 2], [0], **p.kw)
    with pytest.raises(ValueError, match="kv_pool: expected a CUDA tensor"):
        cuda.gated_attention(*base, pool.cpu(), p.tables[:1], [0, 3], [0], **p.kw)
    with pytest.raises(ValueError, match="rotary_dim: must be even"):  # from the launcher's checks
        cuda.gated_attention(*base, pool, p.tables[:1], [0, 3], [0], **{**p.kw, "rotary_dim": 7})


# ---------------------------------------------------------------------------------------------
# Host-side checks (no device needed)


def test_check_sequences_accepts_valid_batches():
    # A prompt, a continued chunk and a decode token; a cached block shared read-only by two sequences.
    cuda.check_sequences([0, 5, 8, 9], [0, 4, 7], [[3, 0], [1, 2], [1, 4]], 9, 4, 5)


@pytest.mark.parametrize(
    "cu, ctx, tables, message",
    [
        ([1, 5], [0], [[0, 1]], "cu_seqlens: must start at 0"),
        ([0, 5, 5, 9], [0, 0, 0], [[0, 1], [2], [3]], "cu_seqlens: sequence 1 has length 0"),
        ([0, 5, 8], [0, 0], [[0, 1], [2]], "cu_seqlens: last entry 8 must equal the number of tokens 9"),
        ([0, 9], [0, 0], [[0, 1, 2]], r"cu_seqlens: expected 3 entries"),
        ([0, 9], [-1], [[0, 1, 2]], "context_lens: sequence 0 has -1"),
        ([0, 9], [0], [[0, 1]], "block_tables: sequence 0 reaches 9 tokens = 3 blocks of 4, but a row holds 2"),
        ([0, 9], [0], [[0, 1, 7]], r"block_tables: sequence 0, logical block 2: block id 7 is outside \[0, num_blocks = 5\)"),
        ([0, 9], [0], [[0, -1, 2]], "logical block 1: block id -1"),
        ([0, 4, 9], [0, 0], [[0], [0, 1]], "block_tables: block 0 is written by sequence 0"),
        ([0, 4, 9], [0, 0], [[0], [1]], "block_tables: sequence 1 reaches 5 tokens"),
        ([0, 9], [0], [[0, 1]] * 2, "block_tables: expected one row per sequence"),
    ],
)
def test_check_sequences_names_the_argument(cu, ctx, tables, message):
    with pytest.raises(ValueError, match=message):
        cuda.check_sequences(cu, ctx, tables, 9, 4, 5)
