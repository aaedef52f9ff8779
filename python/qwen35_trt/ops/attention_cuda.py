"""GatedAttention on the CUDA kernels (``qwen35_trt._C.gated_attention_cuda``), torch CUDA tensors
in and out; the contract is docs/ops.md "GatedAttention", the same as ``ops/attention_reference``.

bf16 on one CUDA device; ``kv_pool`` (contiguous) is updated in place; the kernels run on the
current torch stream. qg, k and v may be column slices of one projection output (each token's row
dense, rows strided). ``block_tables``, ``cu_seqlens`` and ``context_lens`` may be tensors on the
host or the device, or Python sequences.

Importing this module never needs a GPU; ``available()`` says whether the kernels can run.
``validate=True`` (the default) checks cu_seqlens, context_lens and the block ids each sequence
touches on the host first (a device-to-host copy when they live on the device, so a
synchronisation) and raises ValueError naming the argument; benchmarks pass False. The kernels
guard the device values either way: a sequence with an invalid range, context or block id is
skipped, its output rows left unwritten.
"""

from __future__ import annotations

from collections import Counter
from typing import Sequence

import torch

from .cuda_support import cuda_kernels_available

try:
    from .. import _C
except ImportError:  # the extension is not built: available() says so
    _C = None


def available() -> bool:
    """True when the extension has the CUDA attention kernels and torch sees a CUDA device."""
    return cuda_kernels_available("gated_attention_cuda")


def _require() -> None:
    if not available():
        raise RuntimeError("the GatedAttention CUDA kernels need a CUDA build of qwen35_trt._C and a CUDA device")


def _cuda_tensor(name: str, t, dim: int) -> None:
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if t.device.type != "cuda":
        raise ValueError(f"{name}: expected a CUDA tensor, got device {t.device}")
    if t.dtype != torch.bfloat16:
        raise ValueError(f"{name}: expected dtype torch.bfloat16, got {t.dtype}")
    if t.dim() != dim:
        raise ValueError(f"{name}: expected {dim} dimensions, got shape {tuple(t.shape)}")


def _stream(device: torch.device) -> int:
    return torch.cuda.current_stream(device).cuda_stream


def _row_stride(name: str, t: torch.Tensor) -> int:
    """Token stride in elements of a [T, width] tensor whose rows are dense."""
    if t.shape[1] > 1 and t.stride(1) != 1:
        raise ValueError(f"{name}: each token's row must be contiguous (got strides {t.stride()})")
    return t.stride(0)


def _int32(name: str, x, dim: int) -> torch.Tensor:
    """``x`` as an int32 tensor where it is (a sequence becomes a host tensor)."""
    t = torch.as_tensor(x)
    if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool or t.dim() != dim:
        raise ValueError(f"{name}: expected a {dim}-D integer array, got {t.dtype} of shape {tuple(t.shape)}")
    return t.to(torch.int32)


def workspace_bytes(tokens: int, num_heads: int, head_dim: int) -> int:
    """Bytes of workspace one call needs (the normalised queries, [T, nh, hd] bf16)."""
    return int(_C.gated_attention_workspace_bytes(tokens, num_heads, head_dim))


def check_sequences(cu: Sequence[int], ctx: Sequence[int], tables: Sequence[Sequence[int]], tokens: int,
                    block_size: int, num_blocks: int) -> None:
    """The host-side checks of ``validate``: ranges, contexts, table capacity, block ids in range for
    the blocks each sequence touches, and no block written by one sequence and used by another."""
    B = len(ctx)
    if len(cu) != B + 1:
        raise ValueError(f"cu_seqlens: expected {B + 1} entries (len(context_lens) + 1), got {len(cu)}")
    if len(tables) != B:
        raise ValueError(f"block_tables: expected one row per sequence ({B}), got {len(tables)}")
    if cu[0] != 0:
        raise ValueError(f"cu_seqlens: must start at 0, got {cu[0]}")
    if cu[-1] != tokens:
        raise ValueError(f"cu_seqlens: last entry {cu[-1]} must equal the number of tokens {tokens}")
    used: list[int] = []  # blocks each sequence touches
    for i in range(B):
        n = cu[i + 1] - cu[i]
        if n < 1:
            raise ValueError(f"cu_seqlens: sequence {i} has length {n} (every sequence needs at least one token)")
        if ctx[i] < 0:
            raise ValueError(f"context_lens: sequence {i} has {ctx[i]} (must be >= 0)")
        needed = (ctx[i] + n + block_size - 1) // block_size
        if needed > len(tables[i]):
            raise ValueError(f"block_tables: sequence {i} reaches {ctx[i] + n} tokens = {needed} blocks of {block_size}, "
                             f"but a row holds {len(tables[i])}")
        for j in range(needed):
            if not 0 <= tables[i][j] < num_blocks:
                raise ValueError(f"block_tables: sequence {i}, logical block {j}: block id {tables[i][j]} is outside "
                                 f"[0, num_blocks = {num_blocks})")
        used.append(needed)
    # A block the call writes (holding a new position) must hold nothing else of the call.
    uses = Counter(tables[i][j] for i in range(B) for j in range(used[i]))
    for i in range(B):
        for j in range(ctx[i] // block_size, used[i]):
            if uses[tables[i][j]] > 1:
                raise ValueError(f"block_tables: block {tables[i][j]} is written by sequence {i} (logical block {j}) "
                                 "and used elsewhere in the call")


def gated_attention(
    qg: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    q_norm_weight: torch.Tensor,
    k_norm_weight: torch.Tensor,
    kv_pool: torch.Tensor,
    block_tables: torch.Tensor | Sequence[Sequence[int]],
    cu_seqlens: torch.Tensor | Sequence[int],
    context_lens: torch.Tensor | Sequence[int],
    *,
    num_heads: int,
    num_kv_heads: int,
    head_dim: int,
    rotary_dim: int,
    rope_theta: float,
    eps: float,
    scale: float | None = None,
    validate: bool = True,
) -> torch.Tensor:
    """GatedAttention on the GPU (docs/ops.md).

    qg [T, nh * 2 * hd]; k, v [T, nkv * hd]; q_norm_weight, k_norm_weight [hd]; kv_pool
    [num_blocks, 2, nkv, block_size, hd] contiguous, updated in place: all bf16 on one CUDA device.
    block_tables [B, max_blocks_per_seq], cu_seqlens [B + 1], context_lens [B]: integers. ``scale``
    defaults to ``head_dim ** -0.5``. Returns out [T, nh * hd] bf16 (``attention * sigmoid(gate)``).
    """
    _require()
    for name, t, dim in (("qg", qg, 2), ("k", k, 2), ("v", v, 2), ("q_norm_weight", q_norm_weight, 1),
                         ("k_norm_weight", k_norm_weight, 1), ("kv_pool", kv_pool, 5)):
        _cuda_tensor(name, t, dim)
    device = qg.device
    for name, t in (("k", k), ("v", v), ("q_norm_weight", q_norm_weight), ("k_norm_weight", k_norm_weight),
                    ("kv_pool", kv_pool)):
        if t.device != device:
            raise ValueError(f"{name}: expected the device of qg ({device}), got {t.device}")
    nh, nkv, hd = int(num_heads), int(num_kv_heads), int(head_dim)
    T = qg.shape[0]
    if qg.shape[1] != nh * 2 * hd:
        raise ValueError(f"qg: expected [T, num_heads * 2 * head_dim = {nh * 2 * hd}], got {tuple(qg.shape)}")
    for name, t in (("k", k), ("v", v)):
        if tuple(t.shape) != (T, nkv * hd):
            raise ValueError(f"{name}: expected [{T}, num_kv_heads * head_dim = {nkv * hd}], got {tuple(t.shape)}")
    for name, t in (("q_norm_weight", q_norm_weight), ("k_norm_weight", k_norm_weight)):
        if t.shape[0] != hd:
            raise ValueError(f"{name}: expected [{hd}], got {tuple(t.shape)}")
    num_blocks, two, pool_heads, block_size, pool_hd = kv_pool.shape
    if (two, pool_heads, pool_hd) != (2, nkv, hd):
        raise ValueError(f"kv_pool: expected [num_blocks, 2, {nkv}, block_size, {hd}], got {tuple(kv_pool.shape)}")
    if not kv_pool.is_contiguous():
        raise ValueError("kv_pool: must be contiguous (it is updated in place)")

    tables = _int32("block_tables", block_tables, 2)
    cu = _int32("cu_seqlens", cu_seqlens, 1)
    ctx = _int32("context_lens", context_lens, 1)
    B = ctx.shape[0]
    if B < 1:
        raise ValueError("context_lens: at least one sequence is required")
    if cu.shape[0] != B + 1:
        raise ValueError(f"cu_seqlens: expected {B + 1} entries (len(context_lens) + 1), got {cu.shape[0]}")
    if tables.shape[0] != B or tables.shape[1] < 1:
        raise ValueError(f"block_tables: expected [{B}, max_blocks_per_seq >= 1], got {tuple(tables.shape)}")
    if validate:  # on host copies (free for host inputs)
        check_sequences(cu.tolist(), ctx.tolist(), tables.tolist(), T, block_size, num_blocks)
    tables, cu, ctx = (x.to(device).contiguous() for x in (tables, cu, ctx))

    qw, kw = q_norm_weight.contiguous(), k_norm_weight.contiguous()
    out = torch.empty(T, nh * hd, dtype=torch.bfloat16, device=device)
    need = workspace_bytes(T, nh, hd)
    workspace = torch.empty(need, dtype=torch.uint8, device=device)
    _C.gated_attention_cuda(
        qg=qg.data_ptr(), qg_stride=_row_stride("qg", qg), k=k.data_ptr(), k_stride=_row_stride("k", k),
        v=v.data_ptr(), v_stride=_row_stride("v", v), q_norm_weight=qw.data_ptr(),
        k_norm_weight=kw.data_ptr(), kv_pool=kv_pool.data_ptr(), num_blocks=num_blocks,
        block_size=block_size, block_tables=tables.data_ptr(), max_blocks_per_seq=tables.shape[1],
        cu_seqlens=cu.data_ptr(), context_lens=ctx.data_ptr(), batch=B, tokens=T, out=out.data_ptr(),
        out_stride=nh * hd, num_heads=nh, num_kv_heads=nkv, head_dim=hd, rotary_dim=int(rotary_dim),
        rope_theta=float(rope_theta), eps=float(eps), scale=float(hd**-0.5 if scale is None else scale),
        workspace=workspace.data_ptr(), workspace_bytes=need, stream=_stream(device),
    )
    return out
