"""NVFP4 codec: bit-exact with ModelOpt's ``NVFP4QTensor`` (group size 16), on numpy arrays.

A thin, typed layer over the C++ reference in ``qwen35_trt._C`` (``csrc/include/qwen35_trt/nvfp4.h``
holds the full contract). For a weight ``W`` of shape ``[..., rows, cols]``:

- ``packed``  uint8 ``[..., rows, cols // 2]``: two E2M1 codes per byte, the LOW nibble holds the
  even column.
- ``scales``  uint8 ``[..., rows, cols // 16]``: float8_e4m3fn bit patterns, one per 16 columns,
  row-major (ModelOpt's ``weight_scale``; not swizzled).
- ``weight_scale_2``  float32 global scale (per matrix), ``amax(W) / (6 * 448)`` for a fresh export.
- ``W[o, i] = e2m1(code) * (float(scales[o, i // 16]) * weight_scale_2)``.

E2M1 code: bit 3 = sign, bits 2..0 index ``[0, 0.5, 1, 1.5, 2, 3, 4, 6]``.

Dtypes at the boundary: FP8 travels as ``uint8`` bit patterns and bfloat16 as ``uint16`` bit
patterns. torch tensors are accepted wherever an array is (moved to the CPU; ``bfloat16`` and
``float8_e4m3fn`` tensors are reinterpreted as those bit patterns). Leading batch dimensions
(for example experts ``[E, N, K]``) are accepted by every function. float64 inputs are refused:
rounding through float32 first could differ from ModelOpt rounding the float64 value directly.
Bad arguments raise ``ValueError`` naming the argument.
"""

from __future__ import annotations

import sys
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from . import _C

__all__ = [
    "BLOCK_SIZE",
    "E2M1_MAX",
    "E2M1_VALUES",
    "E4M3_MAX",
    "compute_weight_scale_2",
    "decode_e2m1",
    "decode_e4m3",
    "dequantize",
    "encode_e2m1",
    "encode_e4m3",
    "pack_e2m1",
    "quantize",
    "swizzle_scales_128x4",
    "swizzled_scales_shape",
    "unpack_e2m1",
    "unswizzle_scales_128x4",
]

BLOCK_SIZE: int = int(_C.NVFP4_BLOCK_SIZE)
E2M1_MAX: float = 6.0
E4M3_MAX: float = 448.0

#: Value of each E2M1 code 0..15 (code 8, negative zero, is +0.0 as in ModelOpt's table).
E2M1_VALUES: npt.NDArray[np.float32] = np.array(
    [0, 0.5, 1, 1.5, 2, 3, 4, 6, 0, -0.5, -1, -1.5, -2, -3, -4, -6], dtype=np.float32
)
E2M1_VALUES.setflags(write=False)

U8 = npt.NDArray[np.uint8]
F32 = npt.NDArray[np.float32]


def _to_numpy(x: Any, name: str) -> np.ndarray:
    """numpy view of ``x``; torch bf16 / float8_e4m3fn tensors become uint16 / uint8 bit patterns."""
    if isinstance(x, np.ndarray):
        return x
    torch = sys.modules.get("torch")  # never import torch just for this
    if torch is not None and isinstance(x, torch.Tensor):
        t = x.detach().cpu().contiguous()
        if t.dtype == torch.bfloat16:
            return t.view(torch.uint16).numpy()
        if t.dtype == torch.float8_e4m3fn:
            return t.view(torch.uint8).numpy()
        return t.numpy()
    if isinstance(x, (list, tuple, int, float, np.generic)):
        return np.asarray(x)
    raise ValueError(f"{name}: expected a numpy array or torch tensor, got {type(x).__name__}")


def _float32(x: Any, name: str) -> F32:
    """``x`` as C-contiguous float32; float16 widens exactly; Python lists are read as float32."""
    if isinstance(x, (list, tuple, int, float)):
        return np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    a = _to_numpy(x, name)
    if a.dtype == np.float16:
        a = a.astype(np.float32)
    if a.dtype != np.float32:
        raise ValueError(f"{name}: expected a float32 or float16 array, got dtype {a.dtype}")
    return np.ascontiguousarray(a)


def _uint(x: Any, name: str, dtype: type[np.unsignedinteger], meaning: str) -> np.ndarray:
    """``x`` as a C-contiguous uint8/uint16 array; Python lists are converted."""
    if isinstance(x, (list, tuple, int)):
        a = np.asarray(x)
        if a.size and (a.min() < 0 or a.max() > np.iinfo(dtype).max):
            raise ValueError(f"{name}: values out of range for {np.dtype(dtype).name}")
        return np.ascontiguousarray(a.astype(dtype))
    a = _to_numpy(x, name)
    if a.dtype != dtype:
        raise ValueError(
            f"{name}: expected dtype {np.dtype(dtype).name} ({meaning}), got dtype {a.dtype}"
        )
    return np.ascontiguousarray(a)


def _weight(x: Any, name: str) -> np.ndarray:
    """A weight as float32, or uint16 bfloat16 bits (kept as bits: the C++ side widens exactly)."""
    a = _to_numpy(x, name) if not isinstance(x, (list, tuple)) else np.asarray(x, np.float32)
    if a.dtype == np.uint16:
        return np.ascontiguousarray(a)
    try:
        return _float32(a, name)
    except ValueError:
        raise ValueError(
            f"{name}: expected float32, float16 or bfloat16 (torch tensor, or uint16 bit patterns),"
            f" got dtype {a.dtype}"
        ) from None


def _global_scales(weight_scale_2: Any, batch_shape: tuple[int, ...]) -> np.ndarray | float:
    """A float for one shared global scale, else a float32 array of shape ``batch_shape``."""
    a = _to_numpy(weight_scale_2, "weight_scale_2")
    if a.dtype.kind not in "fiu":
        raise ValueError(f"weight_scale_2: expected a number, got dtype {a.dtype}")
    if a.size == 1:
        return float(np.float32(a.reshape(())))
    if tuple(a.shape) != batch_shape:
        raise ValueError(
            f"weight_scale_2: expected a scalar or one value per matrix of shape {batch_shape}, "
            f"got shape {tuple(a.shape)}"
        )
    return np.ascontiguousarray(a, dtype=np.float32)


def encode_e2m1(x: Any) -> U8:
    """float32 ``[...]`` -> E2M1 codes uint8 ``[...]`` (0..15), with ModelOpt's rounding.

    Round to nearest with ties to the even code (0.25 -> 0, 0.75 -> 1, 1.25 -> 1, 1.75 -> 2,
    2.5 -> 2, 3.5 -> 4, 5 -> 4); magnitudes above 6 saturate to 6. The sign bit is set for
    x < 0, so -0.0 gives 0 while e.g. -0.1 gives 8 (negative zero).
    """
    return _C.encode_e2m1(_float32(x, "x"))


def decode_e2m1(codes: Any) -> F32:
    """E2M1 codes uint8 ``[...]`` (each < 16) -> float32 ``[...]`` (see ``E2M1_VALUES``)."""
    return _C.decode_e2m1(_uint(codes, "codes", np.uint8, "E2M1 codes"))


def pack_e2m1(codes: Any) -> U8:
    """codes uint8 ``[..., n]`` (n even) -> packed uint8 ``[..., n // 2]``, low nibble = even."""
    return _C.pack_e2m1(_uint(codes, "codes", np.uint8, "E2M1 codes"))


def unpack_e2m1(packed: Any) -> U8:
    """packed uint8 ``[..., m]`` -> codes uint8 ``[..., 2 m]``."""
    return _C.unpack_e2m1(_uint(packed, "packed", np.uint8, "packed E2M1 pairs"))


def decode_e4m3(bits: Any) -> F32:
    """float8_e4m3fn bit patterns uint8 ``[...]`` (or a float8 tensor) -> float32 ``[...]``."""
    return _C.decode_e4m3(_uint(bits, "bits", np.uint8, "float8_e4m3fn bits"))


def encode_e4m3(x: Any) -> U8:
    """float32 ``[...]`` -> float8_e4m3fn bits uint8 ``[...]``: RNE, as torch 2.13's cast.

    Finite values that round above 448, and +-inf, saturate to +-448 (0x7E / 0xFE); NaN gives
    0x7F / 0xFF. (Older torch releases produced NaN on overflow; 2.13 saturates.)
    """
    return _C.encode_e4m3(_float32(x, "x"))


def compute_weight_scale_2(weight: Any) -> np.float32:
    """ModelOpt's fresh-export global scale ``amax(|weight|) / (6 * 448)`` in float32."""
    w = _weight(weight, "weight")
    if w.size == 0:
        raise ValueError("weight: must not be empty")
    if w.dtype == np.uint16:
        w = _C.bf16_to_float(w)
    amax = np.float32(np.max(np.abs(w)))
    return np.float32(amax / np.float32(E2M1_MAX * E4M3_MAX))


def quantize(
    weight: Any, weight_scale_2: Any, block_scales: Any = None
) -> tuple[U8, U8]:
    """Quantize ``weight [..., rows, cols]`` to NVFP4 exactly as ModelOpt does.

    Args:
        weight: float32 / float16 array, or bfloat16 (a torch tensor or uint16 bit patterns),
            shape ``[..., cols]`` with ``cols`` a multiple of 16. NaN is refused.
        weight_scale_2: the global scale: a number, a 0-d / size-1 array or tensor, or one value
            per matrix with shape ``weight.shape[:-2]`` (e.g. per expert for ``[E, N, K]``).
        block_scales: optional precomputed float8_e4m3fn scales (uint8 bits or a float8 tensor),
            shape ``weight.shape[:-1] + (cols // 16,)``; every scale must be positive. When
            omitted they are computed as ModelOpt does: ``clamp(amax / (6 * s2), 2^-9, 448)``
            (zero blocks get 1.0), cast to E4M3 with RNE.

    Returns:
        ``(packed, scales)``: uint8 ``[..., cols // 2]`` and uint8 ``[..., cols // 16]``, equal
        byte for byte to ``NVFP4QTensor.quantize(weight, 16, weights_scaling_factor=block_scales,
        weights_scaling_factor_2=weight_scale_2)``'s packed data and (viewed as uint8) scales.
    """
    w = _weight(weight, "weight")
    if w.ndim == 0:
        raise ValueError("weight: expected at least 1 dimension, got a scalar")
    s = None
    if block_scales is not None:
        s = _uint(block_scales, "block_scales", np.uint8, "float8_e4m3fn bits")
        if w.dtype == np.uint16:
            w = _C.bf16_to_float(w)
    batch_shape = tuple(w.shape[:-2])
    s2 = _global_scales(weight_scale_2, batch_shape)

    def one(wm: np.ndarray, sm: np.ndarray | None, g: float) -> tuple[U8, U8]:
        if sm is None:
            return _C.quantize(wm, g)
        return _C.quantize_with_scales(wm, sm, g), sm

    if isinstance(s2, float):
        return one(w, s, s2)
    if s is not None and tuple(s.shape[:-2]) != batch_shape:
        raise ValueError(
            f"block_scales: expected leading shape {batch_shape} as weight, got {tuple(s.shape)}"
        )
    packed = np.empty((*w.shape[:-1], w.shape[-1] // 2), dtype=np.uint8)
    scales = np.empty((*w.shape[:-1], w.shape[-1] // BLOCK_SIZE), dtype=np.uint8)
    for idx in np.ndindex(*batch_shape):
        p, sc = one(w[idx], None if s is None else s[idx], float(s2[idx]))
        packed[idx], scales[idx] = p, sc
    return packed, scales


def dequantize(
    packed: Any,
    scales: Any,
    weight_scale_2: Any,
    out_dtype: Literal["float32", "bfloat16"] = "float32",
) -> np.ndarray:
    """NVFP4 -> dense: ``packed [..., cols // 2]``, ``scales [..., cols // 16]`` -> ``[..., cols]``.

    ``W = e2m1(code) * (float(scale) * weight_scale_2)``, the bracket rounded to float32 first,
    bit-exact with ``NVFP4QTensor.dequantize(dtype=torch.float32)``. ``weight_scale_2`` is a
    number or one value per matrix (shape ``packed.shape[:-2]``). ``out_dtype="bfloat16"``
    returns uint16 bfloat16 bit patterns (the float32 result rounded to nearest even).
    """
    if out_dtype not in ("float32", "bfloat16"):
        raise ValueError(f"out_dtype: expected 'float32' or 'bfloat16', got {out_dtype!r}")
    p = _uint(packed, "packed", np.uint8, "packed E2M1 pairs")
    s = _uint(scales, "scales", np.uint8, "float8_e4m3fn bits")
    if p.ndim == 0:
        raise ValueError("packed: expected at least 1 dimension, got a scalar")
    bf16 = out_dtype == "bfloat16"
    batch_shape = tuple(p.shape[:-2])
    s2 = _global_scales(weight_scale_2, batch_shape)
    if isinstance(s2, float):
        return _C.dequantize(p, s, s2, bf16)
    if tuple(s.shape[:-2]) != batch_shape:
        raise ValueError(
            f"scales: expected leading shape {batch_shape} as packed, got {tuple(s.shape)}"
        )
    out = np.empty((*p.shape[:-1], p.shape[-1] * 2), dtype=np.uint16 if bf16 else np.float32)
    for idx in np.ndindex(*batch_shape):
        out[idx] = _C.dequantize(p[idx], s[idx], float(s2[idx]), bf16)
    return out


def swizzled_scales_shape(rows: int, cols: int) -> tuple[int, int]:
    """Padded shape ``(roundup(rows, 128), roundup(cols, 4))`` of the 128x4 swizzled scales."""
    return (-(-rows // 128) * 128, -(-cols // 4) * 4)


def swizzle_scales_128x4(scales: Any) -> U8:
    """Scales uint8 ``[..., rows, cols]`` (cols = K / 16) -> ``[..., rows_p, cols_p]`` for sm_100.

    ``rows_p, cols_p = swizzled_scales_shape(rows, cols)``; padding is zero. Scale ``(m, k)``
    lands at flat byte offset ``((m // 128) * (cols_p // 4) + k // 4) * 512 + (m % 32) * 16 +
    ((m % 128) // 32) * 4 + k % 4`` of each matrix (the 2-D output shape is only a container).
    """
    return _C.swizzle_scales_128x4(_uint(scales, "scales", np.uint8, "float8_e4m3fn bits"))


def unswizzle_scales_128x4(swizzled: Any, rows: int, cols: int) -> U8:
    """Inverse of ``swizzle_scales_128x4``: ``[..., rows_p, cols_p]`` or ``[..., rows_p * cols_p]``
    -> uint8 ``[..., rows, cols]``, dropping the padding."""
    return _C.unswizzle_scales_128x4(
        _uint(swizzled, "swizzled", np.uint8, "swizzled float8_e4m3fn bits"), int(rows), int(cols)
    )
