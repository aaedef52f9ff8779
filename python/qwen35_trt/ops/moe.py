"""Qwen3.5 MoE block: softmax top-k router, SwiGLU experts, shared expert with a sigmoid gate."""

from __future__ import annotations

from typing import Callable

import torch

from .numerics import PLAIN, Numerics
from .nvfp4_linear import nvfp4_linear
from .operands import MoeExperts, Nvfp4Weight, SharedExpert


def route(router_logits: torch.Tensor, top_k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax over all experts in fp32, top-k, renormalise to sum 1.

    router_logits: [T, E]. Returns (weights [T, k] in the logits' dtype, expert ids [T, k]).
    """
    probs = torch.softmax(router_logits, dim=-1, dtype=torch.float32)
    top, ids = torch.topk(probs, top_k, dim=-1)
    top = top / top.sum(dim=-1, keepdim=True)
    return top.to(router_logits.dtype), ids


def swiglu(x: torch.Tensor, gate_proj: Callable, up_proj: Callable, down_proj: Callable, numerics: Numerics = PLAIN) -> torch.Tensor:
    """``down(silu(gate(x)) * up(x))``; the projections are callables (dense or NVFP4 linears)."""
    return down_proj(numerics.silu(gate_proj(x)) * up_proj(x))


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
    numerics: Numerics = PLAIN,
) -> torch.Tensor:
    """The whole MoE MLP for tokens x [T, H] -> [T, H], any weight format (the projections are
    callables): what the model runs where the Nvfp4MoE contract does not apply (BF16 experts or a
    BF16 shared expert)."""
    weights, ids = route(numerics.linear(x, router_weight), top_k)
    routed = routed_experts(x, ids, weights, expert)
    shared = numerics.sigmoid(numerics.linear(x, shared_gate_weight)) * shared_expert(x)
    return routed + shared


def nvfp4_moe(hidden: torch.Tensor, router_logits: torch.Tensor, top_k: int, experts: MoeExperts, shared: SharedExpert | None = None,
              numerics: Numerics = PLAIN) -> torch.Tensor:
    """The Nvfp4MoE contract op (W4A16, row-major scales) on the spec functions, with transformers'
    bf16 cast points: hidden [T, H], router_logits [T, E] -> [T, H]."""
    gu, dn = experts.gate_up, experts.down
    inter = gu.weight.shape[1] // 2

    def w4a16(x, w, s, s2):
        return nvfp4_linear(x, Nvfp4Weight(w, s, s2), numerics)

    def expert(e: int, x: torch.Tensor) -> torch.Tensor:
        gate = lambda y: w4a16(y, gu.weight[e, :inter], gu.weight_scale[e, :inter], gu.weight_scale_2[e, 0])  # noqa: E731
        up = lambda y: w4a16(y, gu.weight[e, inter:], gu.weight_scale[e, inter:], gu.weight_scale_2[e, 1])  # noqa: E731
        return swiglu(x, gate, up, lambda y: w4a16(y, dn.weight[e], dn.weight_scale[e], dn.weight_scale_2[e]), numerics)

    weights, ids = route(router_logits, top_k)
    out = routed_experts(hidden, ids, weights, expert)
    if shared is None:
        return out
    lin = {n: (lambda y, w=getattr(shared, n): w4a16(y, w.weight, w.weight_scale, w.weight_scale_2)) for n in ("gate", "up", "down")}
    gate_weight = shared.gate_weight.reshape(1, -1)
    return out + numerics.sigmoid(numerics.linear(hidden, gate_weight)) * swiglu(hidden, lin["gate"], lin["up"], lin["down"], numerics)
