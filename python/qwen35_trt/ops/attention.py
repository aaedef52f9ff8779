"""Gated attention of Qwen3.5: q/gate split per head, q/k RMSNorm, partial NeoX RoPE, GQA, causal,
sigmoid output gate.

Two layers: ``sequence_gated_attention``, one sequence with its K/V history as contiguous tensors
(transformers' math and cast points, token-exact with it), and the contract op ``gated_attention``
(docs/ops.md "GatedAttention"): many sequences, a paged KV pool updated in place, built on the first.
"""

from __future__ import annotations

from typing import Sequence

import torch

from .norms import rms_norm


def split_query_gate(qg: torch.Tensor, num_heads: int, head_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """q_proj output [T, nh * 2 * hd], interleaved per head ([q_h | gate_h]) -> q [T, nh, hd], gate [T, nh * hd]."""
    per_head = qg.view(qg.shape[0], num_heads, 2 * head_dim)
    q, gate = per_head.split(head_dim, dim=-1)
    return q, gate.reshape(qg.shape[0], num_heads * head_dim)


def rope_cos_sin(positions: torch.Tensor, rotary_dim: int, theta: float, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin [T, rotary_dim] for integer positions [T], computed in fp32 and cast to ``dtype``."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, rotary_dim, 2, dtype=torch.int64).float() / rotary_dim))
    freqs = positions.float()[:, None] * inv_freq[None, :]
    emb = torch.cat([freqs, freqs], dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def apply_partial_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """NeoX rotate-half RoPE on the first ``rotary_dim`` dims of each head; the rest pass through.
    x: [T, h, hd]; cos, sin: [T, rotary_dim]."""
    r = cos.shape[-1]
    rot, rest = x[..., :r], x[..., r:]
    c, s = cos[:, None, :], sin[:, None, :]
    half = r // 2
    rotated = torch.cat([-rot[..., half:], rot[..., :half]], dim=-1)
    return torch.cat([rot * c + rotated * s, rest], dim=-1)


def causal_gqa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, q_offset: int, scale: float) -> torch.Tensor:
    """Causal grouped-query attention for one sequence.

    q: [T, nh, hd] (positions q_offset .. q_offset + T - 1); k, v: [S, nkv, hd] with S = q_offset + T
    (the cache plus the new tokens). Scores in q's dtype, softmax in fp32. Returns [T, nh, hd].
    """
    T, nh, hd = q.shape
    S, nkv = k.shape[0], k.shape[1]
    rep = nh // nkv
    qh = q.transpose(0, 1).unsqueeze(0)  # [1, nh, T, hd]
    kh = k.transpose(0, 1)[:, None].expand(nkv, rep, S, hd).reshape(1, nh, S, hd)
    vh = v.transpose(0, 1)[:, None].expand(nkv, rep, S, hd).reshape(1, nh, S, hd)
    scores = torch.matmul(qh, kh.transpose(2, 3)) * scale
    qpos = torch.arange(q_offset, q_offset + T)[:, None]
    kpos = torch.arange(S)[None, :]
    scores = scores.masked_fill(kpos > qpos, float("-inf"))
    probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
    return torch.matmul(probs, vh)[0].transpose(0, 1)


def sequence_gated_attention(
    qg: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    q_norm_w: torch.Tensor,
    k_norm_w: torch.Tensor,
    positions: torch.Tensor,
    k_cache: torch.Tensor | None,
    v_cache: torch.Tensor | None,
    *,
    num_heads: int,
    num_kv_heads: int,
    head_dim: int,
    rotary_dim: int,
    rope_theta: float,
    eps: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One sequence's attention from its projections.

    qg: [T, nh * 2 * hd] (q_proj output); k, v: [T, nkv * hd]; positions [T] (contiguous, starting at
    the cache length); k_cache, v_cache: [S0, nkv, hd] or None. Returns (out [T, nh * hd] already
    multiplied by sigmoid(gate), new k_cache, new v_cache) with the caches extended by T tokens.
    """
    T = qg.shape[0]
    q, gate = split_query_gate(qg, num_heads, head_dim)
    q = rms_norm(q, q_norm_w, eps)
    k = rms_norm(k.view(T, num_kv_heads, head_dim), k_norm_w, eps)
    v = v.view(T, num_kv_heads, head_dim)
    cos, sin = rope_cos_sin(positions, rotary_dim, rope_theta, q.dtype)
    q, k = apply_partial_rope(q, cos, sin), apply_partial_rope(k, cos, sin)
    if k_cache is not None:
        k, v = torch.cat([k_cache, k], 0), torch.cat([v_cache, v], 0)
    o = causal_gqa(q, k, v, int(positions[0]), head_dim**-0.5)
    out = o.reshape(T, num_heads * head_dim) * torch.sigmoid(gate)
    return out, k, v


def _ints(x: torch.Tensor | Sequence[int]) -> list[int]:
    return x.tolist() if isinstance(x, torch.Tensor) else [int(v) for v in x]


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
    """GatedAttention (docs/ops.md), spec form: each sequence's cached K/V are gathered from the
    paged pool, ``sequence_gated_attention`` runs on them, and the new tokens' K/V are written back.

    qg [T, nh * 2 * hd]; k, v [T, nkv * hd]; q_norm_weight, k_norm_weight [hd]; kv_pool
    [num_blocks, 2, nkv, block_size, hd] (updated in place); block_tables [B, max_blocks_per_seq];
    cu_seqlens [B + 1]; context_lens [B]. Returns out [T, nh * hd] (``attention * sigmoid(gate)``).
    ``scale`` other than ``head_dim ** -0.5`` is not supported by the spec (the model never uses one).
    """
    if scale is not None and scale != head_dim**-0.5:
        raise ValueError(f"scale: the spec supports only head_dim ** -0.5, got {scale}")
    cu, ctx = _ints(cu_seqlens), _ints(context_lens)
    tables = block_tables.tolist() if isinstance(block_tables, torch.Tensor) else [list(r) for r in block_tables]
    bs = kv_pool.shape[3]
    outs = []
    for i, start in enumerate(ctx):
        s, e = cu[i], cu[i + 1]
        end = start + e - s
        blocks = torch.tensor(tables[i][: (end + bs - 1) // bs], dtype=torch.long)
        # [n_blocks, 2, nkv, bs, hd] -> [2, n_blocks * bs, nkv, hd]: the sequence's positions in order
        history = kv_pool[blocks].permute(1, 0, 3, 2, 4).reshape(2, -1, num_kv_heads, head_dim)
        positions = torch.arange(start, end)
        o, kc, vc = sequence_gated_attention(
            qg[s:e], k[s:e], v[s:e], q_norm_weight, k_norm_weight, positions, history[0, :start], history[1, :start],
            num_heads=num_heads, num_kv_heads=num_kv_heads, head_dim=head_dim, rotary_dim=rotary_dim,
            rope_theta=rope_theta, eps=eps,
        )
        for p in range(start, end):
            kv_pool[blocks[p // bs], 0, :, p % bs] = kc[p]
            kv_pool[blocks[p // bs], 1, :, p % bs] = vc[p]
        outs.append(o)
    return torch.cat(outs, 0)
