"""Qwen3.5 MoE block: softmax top-k router, SwiGLU experts, shared expert with a sigmoid gate."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F


def route(router_logits: torch.Tensor, top_k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax over all experts in fp32, top-k, renormalise to sum 1.

    router_logits: [T, E]. Returns (weights [T, k] in the logits' dtype, expert ids [T, k]).
    """
    probs = torch.softmax(router_logits, dim=-1, dtype=torch.float32)
    top, ids = torch.topk(probs, top_k, dim=-1)
    top = top / top.sum(dim=-1, keepdim=True)
    return top.to(router_logits.dtype), ids


def swiglu(x: torch.Tensor, gate_proj: Callable, up_proj: Callable, down_proj: Callable) -> torch.Tensor:
    """``down(silu(gate(x)) * up(x))``; the projections are callables (dense or NVFP4 linears)."""
    return down_proj(F.silu(gate_proj(x)) * up_proj(x))


def routed_experts(x: torch.Tensor, ids: torch.Tensor, weights: torch.Tensor, expert: Callable[[int, torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Weighted sum of each token's top-k experts.

    x: [T, H]; ids, weights: [T, k]; ``expert(e, x_e)`` maps [n, H] -> [n, H]. Experts are visited
    in increasing index and their weighted outputs added in x's dtype, so a token's result depends
    only on its own routing (never on the rest of the batch).
    """
    out = torch.zeros_like(x)
    for e in torch.unique(ids).tolist():
        tok, slot = torch.where(ids == e)
        y = expert(e, x[tok]) * weights[tok, slot, None]
        out.index_add_(0, tok, y.to(out.dtype))
    return out


def moe_block(
    x: torch.Tensor,
    router_weight: torch.Tensor,
    top_k: int,
    expert: Callable[[int, torch.Tensor], torch.Tensor],
    shared_expert: Callable[[torch.Tensor], torch.Tensor],
    shared_gate_weight: torch.Tensor,
) -> torch.Tensor:
    """The whole MoE MLP for tokens x [T, H] -> [T, H]."""
    weights, ids = route(F.linear(x, router_weight), top_k)
    routed = routed_experts(x, ids, weights, expert)
    shared = torch.sigmoid(F.linear(x, shared_gate_weight)) * shared_expert(x)
    return routed + shared
