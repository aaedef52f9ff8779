"""Causal depthwise conv1d + SiLU of the GDN layer, for prefill (varlen) and one-token decode.

The conv state of a sequence is the last ``W - 1`` inputs per channel ([C, W-1], oldest first);
a new sequence starts from zeros, which is the same as zero left padding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def causal_conv1d_prefill(
    x: torch.Tensor,
    weight: torch.Tensor,
    cu_seqlens: list[int] | torch.Tensor,
    initial_states: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Variable-length causal conv + SiLU.

    x: [T, C] (sequences concatenated); weight: [C, W]; cu_seqlens: [B + 1] offsets into T;
    initial_states: [B, C, W-1] or None (zeros).
    Returns (y [T, C] in x's dtype, final_states [B, C, W-1] in x's dtype).
    """
    cu = [int(c) for c in cu_seqlens]
    C, W = weight.shape
    ys, finals = [], []
    for b in range(len(cu) - 1):
        seq = x[cu[b] : cu[b + 1]].t().unsqueeze(0)  # [1, C, L]
        L = seq.shape[-1]
        if initial_states is None:
            # zero history: plain causal conv with left padding
            y = F.conv1d(seq.to(weight.dtype), weight.unsqueeze(1), padding=W - 1, groups=C)[..., :L]
            hist = torch.cat([seq.new_zeros(1, C, W - 1), seq], dim=-1)
        else:
            hist = torch.cat([initial_states[b : b + 1].to(seq.dtype), seq], dim=-1)
            y = F.conv1d(hist.to(weight.dtype), weight.unsqueeze(1), groups=C)[..., -L:]
        ys.append(F.silu(y).to(x.dtype)[0].t())
        finals.append(hist[0, :, -(W - 1) :])
    return torch.cat(ys, 0), torch.stack(finals)


def causal_conv1d(x: torch.Tensor, weight: torch.Tensor, state_pool: torch.Tensor, slots, cu_seqlens=None, has_initial_state=None) -> torch.Tensor:
    """The CausalConv1d contract op (docs/ops.md) on the spec functions: histories from and to the
    slots of ``state_pool`` [num_slots, C, W-1] (updated in place). Decode (no cu_seqlens): one
    token per sequence, x [B, C]. Prefill: cu_seqlens [B + 1], has_initial_state [B]. Each
    sequence is computed on its own (batch-invariant). Returns y [T, C] in x's dtype."""
    slots = [int(s) for s in slots]
    if cu_seqlens is None:
        ys = []
        for i, slot in enumerate(slots):
            y, state = causal_conv1d_decode(x[i : i + 1], weight, state_pool[slot][None])
            state_pool[slot] = state[0]
            ys.append(y)
        return torch.cat(ys, 0)
    cu = [int(c) for c in cu_seqlens]
    ys = []
    for i, slot in enumerate(slots):
        init = state_pool[slot][None] if bool(has_initial_state[i]) else None
        y, state = causal_conv1d_prefill(x[cu[i] : cu[i + 1]], weight, [0, cu[i + 1] - cu[i]], init)
        state_pool[slot] = state[0]
        ys.append(y)
    return torch.cat(ys, 0)


def causal_conv1d_decode(x: torch.Tensor, weight: torch.Tensor, states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One token per sequence. x: [B, C]; weight: [C, W]; states: [B, C, W-1].

    Returns (y [B, C], new_states [B, C, W-1]); the input states are not modified.
    """
    C, W = weight.shape
    hist = torch.cat([states.to(x.dtype), x.unsqueeze(-1)], dim=-1)  # [B, C, W]
    y = F.conv1d(hist.to(weight.dtype), weight.unsqueeze(1), groups=C)[..., -1]
    return F.silu(y).to(x.dtype), hist[..., 1:]
