"""RMSNorm variants of Qwen3.5."""

from __future__ import annotations

import torch

from .numerics import PLAIN, Numerics


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float, numerics: Numerics = PLAIN) -> torch.Tensor:
    """Zero-centred RMSNorm: ``y = x * rsqrt(mean(x^2) + eps) * (1 + w)`` in fp32, cast back to x's dtype.

    x: [..., D]; weight: [D] (stored around 0: the effective gain is ``1 + w``).
    Used for the decoder layer norms, the final norm and the attention q/k norms.
    """
    xf = x.float()
    y = xf * numerics.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return (y * (1.0 + weight.float())).to(x.dtype)


def gated_rms_norm(x: torch.Tensor, gate: torch.Tensor, weight: torch.Tensor, eps: float, numerics: Numerics = PLAIN) -> torch.Tensor:
    """The GDN output norm (NOT zero-centred): ``y = w * rmsnorm(x) * silu(gate)``.

    x, gate: [..., D] (D = GDN value head dim); weight: [D]. The normalised x is rounded to x's dtype
    before the weight is applied and the gate is applied in fp32, as in the reference implementation.
    """
    dtype = x.dtype
    xf = x.float()
    y = (xf * numerics.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(dtype)
    y = weight * y
    return (y * numerics.silu(gate.float())).to(dtype)
