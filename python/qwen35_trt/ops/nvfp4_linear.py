"""NVFP4 linear layers: W4A16 (what Hopper kernels compute) and W4A4 emulation (Blackwell).

Weights: packed [N, K/2] uint8 (two E2M1 codes per byte, low nibble = even column), block scales
[N, K/16] FP8 E4M3 (row-major; stored as float8_e4m3fn or raw uint8), global ``weight_scale_2``.
``W[n, k] = e2m1(code) * (fp8(scale[n, k // 16]) * weight_scale_2)`` (the scale product first,
as ModelOpt computes it).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .numerics import PLAIN, Numerics
from .operands import Nvfp4Weight

GROUP = 16
E2M1_VALUES = torch.tensor([0, 0.5, 1, 1.5, 2, 3, 4, 6, -0.0, -0.5, -1, -1.5, -2, -3, -4, -6], dtype=torch.float32)
FP8_MAX, E2M1_MAX = 448.0, 6.0


def fp8_to_float(scales: torch.Tensor) -> torch.Tensor:
    if scales.dtype == torch.uint8:
        scales = scales.view(torch.float8_e4m3fn)
    return scales.float()


def unpack_e2m1(packed: torch.Tensor) -> torch.Tensor:
    """[..., K/2] uint8 -> [..., K] fp32 values."""
    lo = (packed & 0x0F).long()
    hi = (packed >> 4).long()
    codes = torch.stack([lo, hi], dim=-1).flatten(-2)
    return E2M1_VALUES.to(packed.device)[codes]


def dequantize(packed: torch.Tensor, scales: torch.Tensor, weight_scale_2, dtype=torch.float32) -> torch.Tensor:
    """[N, K/2] u8 + [N, K/16] fp8 + scalar -> [N, K] in ``dtype`` (computed in fp32)."""
    vals = unpack_e2m1(packed)
    block = fp8_to_float(scales) * torch.as_tensor(weight_scale_2, dtype=torch.float32)
    w = (vals.unflatten(-1, (-1, GROUP)) * block.unsqueeze(-1)).flatten(-2)
    return w.to(dtype)


def linear_w4a16(x: torch.Tensor, packed, scales, weight_scale_2) -> torch.Tensor:
    """y = x W^T with W dequantized to x's dtype (BF16 math as on Hopper). x: [..., K] -> [..., N]."""
    return F.linear(x, dequantize(packed, scales, weight_scale_2, dtype=x.dtype))


def nvfp4_linear(x: torch.Tensor, w: Nvfp4Weight, numerics: Numerics = PLAIN) -> torch.Tensor:
    """The Nvfp4Linear contract op (W4A16, row-major scales) on the spec functions. x: [T, K] -> [T, N]."""
    return numerics.linear(x, dequantize(w.weight, w.weight_scale, w.weight_scale_2, dtype=x.dtype))


def _round_e2m1(x: torch.Tensor) -> torch.Tensor:
    """Round |x| <= 6 to the nearest E2M1 value, ties to the even code (ModelOpt's rounding)."""
    mag = x.abs().clamp(max=E2M1_MAX)
    grid = E2M1_VALUES[:8].to(x.device)
    bounds = torch.tensor([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0], device=x.device)
    idx = torch.searchsorted(bounds, mag.contiguous())
    # at a bound with an odd lower index the tie goes up to the even code
    at_odd_bound = (mag.unsqueeze(-1) == bounds[[1, 3, 5]]).any(-1)
    idx = idx + at_odd_bound.long()
    return torch.where(x < 0, -grid[idx], grid[idx])


def quantize_activations(x: torch.Tensor, input_scale) -> torch.Tensor:
    """Per-16 dynamic NVFP4 quantization of activations with the static global ``input_scale``
    (what the Blackwell W4A4 path does on the fly). Returns the dequantized fp32 values."""
    xf = x.float()
    s_glob = torch.as_tensor(input_scale, dtype=torch.float32)
    blocks = xf.unflatten(-1, (-1, GROUP))
    amax = blocks.abs().amax(-1)
    sa = (amax / (E2M1_MAX * s_glob)).clamp(min=2**-9, max=FP8_MAX).to(torch.float8_e4m3fn).float()
    q = _round_e2m1(blocks / (sa * s_glob).unsqueeze(-1))
    return (q * (sa * s_glob).unsqueeze(-1)).flatten(-2)


def linear_w4a4(x: torch.Tensor, packed, scales, weight_scale_2, input_scale) -> torch.Tensor:
    """W4A4 emulation: activations quantized per 16 to NVFP4, products accumulated in fp32,
    the result rounded to x's dtype. x: [..., K] -> [..., N]."""
    xq = quantize_activations(x, input_scale)
    w = dequantize(packed, scales, weight_scale_2)
    return (xq @ w.t()).to(x.dtype)
