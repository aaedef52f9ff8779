"""Operand types of the NVFP4 contract ops (Nvfp4Linear, Nvfp4MoE), shared by every backend."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Nvfp4Weight:
    """The stored tensors of one NVFP4 linear or of a stack of them (experts).

    ``weight`` uint8 [.., N, K/2]; ``weight_scale`` FP8 block scales (layout per call);
    ``weight_scale_2`` float32 global(s); ``input_scale`` float32 activation global(s) or None.
    """

    weight: torch.Tensor
    weight_scale: torch.Tensor
    weight_scale_2: torch.Tensor
    input_scale: torch.Tensor | None = None


@dataclass
class MoeExperts:
    """Routed experts in the engine layout: ``gate_up`` weight [E, 2I, H/2] (gate rows first) with
    weight_scale_2 [E, 2] (gate, up) and input_scale [E]; ``down`` weight [E, H, I/2] with
    weight_scale_2 [E] and input_scale [E]."""

    gate_up: Nvfp4Weight
    down: Nvfp4Weight


@dataclass
class SharedExpert:
    """The shared expert: three NVFP4 linears (gate, up [Is, H], down [H, Is]) and the BF16
    ``shared_expert_gate`` weight ([1, H] or [H])."""

    gate: Nvfp4Weight
    up: Nvfp4Weight
    down: Nvfp4Weight
    gate_weight: torch.Tensor
