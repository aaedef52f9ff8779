"""GatedAttention on the C++ CPU reference (``qwen35_trt._C.gated_attention_ref``), torch tensors in
and out; the contract is docs/ops.md "GatedAttention" and ``ops/attention.gated_attention`` its spec.

bf16 only; everything on the CPU; ``kv_pool`` must be contiguous (it is updated in place). The C++
code keeps transformers' bf16 cast points but sums in its own order (the CUDA kernel's), so outputs
agree with the spec to bf16 rounding, not bit for bit. Bad arguments raise ValueError naming the
argument.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

try:
    from .. import _C
except ImportError:  # the extension is not built: available() says so
    _C = None


def available() -> bool:
    """True when the compiled extension carries the attention reference."""
    return _C is not None and hasattr(_C, "gated_attention_ref")


def _bf16(t: torch.Tensor, name: str, inplace: bool = False) -> np.ndarray:
    if t.device.type != "cpu":
        raise ValueError(f"{name}: expected a CPU tensor, got device {t.device}")
    if t.dtype != torch.bfloat16:
        raise ValueError(f"{name}: expected bfloat16, got {t.dtype}")
    if not t.is_contiguous():
        if inplace:
            raise ValueError(f"{name}: must be contiguous (it is updated in place)")
        t = t.contiguous()
    return t.view(torch.int16).numpy().view(np.uint16)


def _int32(x: torch.Tensor | Sequence, name: str) -> np.ndarray:
    a = x.cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if a.dtype.kind not in "iu":
        raise ValueError(f"{name}: expected integers, got {a.dtype}")
    return np.ascontiguousarray(a, dtype=np.int32)


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
) -> torch.Tensor:
    """GatedAttention, C++ reference: shapes as ``ops.attention.gated_attention``; returns out [T, nh * hd] bf16."""
    if not available():
        raise RuntimeError("qwen35_trt._C with the attention reference is not built; reinstall the package")
    out = _C.gated_attention_ref(
        _bf16(qg, "qg"), _bf16(k, "k"), _bf16(v, "v"), _bf16(q_norm_weight, "q_norm_weight"),
        _bf16(k_norm_weight, "k_norm_weight"), _bf16(kv_pool, "kv_pool", inplace=True),
        _int32(block_tables, "block_tables"), _int32(cu_seqlens, "cu_seqlens"), _int32(context_lens, "context_lens"),
        num_heads=num_heads, num_kv_heads=num_kv_heads, head_dim=head_dim, rotary_dim=rotary_dim,
        rope_theta=float(rope_theta), eps=float(eps), scale=float(head_dim**-0.5 if scale is None else scale),
    )
    return torch.from_numpy(out.view(np.int16)).view(torch.bfloat16)
