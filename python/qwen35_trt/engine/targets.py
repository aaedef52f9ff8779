"""What a target GPU architecture means for an engine: the one place that knows.

A ``TargetSpec`` says how the NVFP4 weights are stored for that architecture's kernels (block-scale
layout, and for W4A16 targets the code order: ``scale_layout``), how NVFP4 linears compute there (W4A16: weights dequantized to BF16 in the kernel, for
GPUs without FP4 tensor cores or without a native kernel of ours; W4A4: activations quantized on
the fly, native FP4 MMA), which kernel family runs the NVFP4 GEMMs, and which TensorRT builds its
plans. The writer, the reader, the model, the plugins and the kernel dispatch read it; nothing
else compares target names.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import UserInputError

ROW_MAJOR = "row_major"  # scales [.., N, K/16]
SWIZZLED_128X4 = "swizzled_128x4"  # [.., roundup(N, 128), roundup(K/16, 4)] in the 128x4 tiles block-scaled MMA reads
# Codes in MMA fragment order within each 64-code group, UE5M3 scales [.., N, K/16]: what the W4A16
# GEMM reads with the fewest instructions (csrc/include/qwen35_trt/common/w4a16_fragments.h).
W4A16_FRAGMENTS = "w4a16_fragments"
SCALE_LAYOUTS = (ROW_MAJOR, SWIZZLED_128X4, W4A16_FRAGMENTS)
W4A16, W4A4 = "w4a16", "w4a4"


def _round_up(x: int, m: int) -> int:
    return (x + m - 1) // m * m


def _check_layout(layout: str) -> None:
    if layout not in SCALE_LAYOUTS:
        raise ValueError(f"scale layout {layout!r}: expected one of {', '.join(SCALE_LAYOUTS)}")


def scale_shape(layout: str, rows: int, k: int) -> tuple[int, int]:
    """Stored shape of the block scales of an [rows, k] NVFP4 matrix (16 values per scale)."""
    _check_layout(layout)
    groups = k // 16
    if layout == SWIZZLED_128X4:
        return _round_up(rows, 128), _round_up(groups, 4)
    return rows, groups


def pack_nvfp4(layout: str, codes: np.ndarray, scales: np.ndarray, name: str = "weight") -> tuple[np.ndarray, np.ndarray]:
    """ModelOpt's NVFP4 codes uint8 [.., N, K/2] and row-major E4M3 scales [.., N, K/16] as stored
    in ``layout``. "row_major" and "swizzled_128x4" move the scales only; "w4a16_fragments"
    reorders the codes too and stores UE5M3 scales. ``name`` (the weight tensor) goes into errors."""
    _check_layout(layout)
    if layout == ROW_MAJOR:
        return codes, scales
    if layout == W4A16_FRAGMENTS:
        from ..w4a16_fragments import pack_w4a16_fragments

        return pack_w4a16_fragments(codes, scales, name)
    from .. import nvfp4

    return codes, nvfp4.swizzle_scales_128x4(scales)


def unpack_nvfp4(layout: str, codes: np.ndarray, stored: np.ndarray, rows: int, k: int,
                 name: str = "weight") -> tuple[np.ndarray, np.ndarray]:
    """The inverse of ``pack_nvfp4``: ModelOpt's codes [.., rows, k/2] and E4M3 scales [.., rows, k/16]."""
    _check_layout(layout)
    if layout == ROW_MAJOR:
        return codes, stored
    if layout == W4A16_FRAGMENTS:
        from ..w4a16_fragments import unpack_w4a16_fragments

        return unpack_w4a16_fragments(codes, stored, name)
    from .. import nvfp4

    return codes, np.ascontiguousarray(nvfp4.unswizzle_scales_128x4(stored, rows, k // 16))


@dataclass(frozen=True)
class TargetSpec:
    name: str  # "sm_100"
    compute_capability: tuple[int, int]
    description: str
    # How NVFP4 weights are stored for this target's kernels: the block scales' layout and, for
    # "w4a16_fragments", the order of the codes too (the name is also the plugins' field name).
    scale_layout: str
    native_fp4: bool  # W4A4 on FP4 tensor cores where the checkpoint has activation scales
    nvfp4_kernels: str  # the kernel family behind Nvfp4Linear / Nvfp4MoE
    tensorrt: str  # which TensorRT builds plans for it
    plan_builders: tuple[str, ...]  # builders of `build_engine.py plan` that can build it, default first

    def activation(self, fmt: str, has_input_scale: bool) -> str:
        """How a module of format ``fmt`` computes on this target (recorded per module in the
        manifest): "w4a4" or "w4a16" for NVFP4, the format itself otherwise."""
        if fmt != "nvfp4":
            return fmt
        return W4A4 if self.native_fp4 and has_input_scale else W4A16

    def scale_shape(self, rows: int, k: int) -> tuple[int, int]:
        return scale_shape(self.scale_layout, rows, k)

    def pack_nvfp4(self, codes: np.ndarray, scales: np.ndarray, name: str = "weight") -> tuple[np.ndarray, np.ndarray]:
        """ModelOpt's codes and row-major E4M3 scales as this target stores them (``pack_nvfp4``)."""
        return pack_nvfp4(self.scale_layout, codes, scales, name)

    def unpack_nvfp4(self, codes: np.ndarray, stored: np.ndarray, rows: int, k: int,
                     name: str = "weight") -> tuple[np.ndarray, np.ndarray]:
        """The inverse of ``pack_nvfp4`` (``unpack_nvfp4``)."""
        return unpack_nvfp4(self.scale_layout, codes, stored, rows, k, name)


TARGETS: dict[str, TargetSpec] = {
    t.name: t
    for t in (
        TargetSpec("sm_100", (10, 0), "Blackwell datacenter (B200, GB200)", SWIZZLED_128X4, True,
                   "CUTLASS block-scaled FP4 (sm_100a), W4A16 mma.sync fallback", "TensorRT 10.14+", ("tensorrt",)),
        TargetSpec("sm_90", (9, 0), "Hopper (H100, H200)", W4A16_FRAGMENTS, False,
                   "W4A16 mma.sync on weights stored in fragment order (FP4 dequantized to BF16 in registers)", "TensorRT 10.14+", ("tensorrt",)),
        TargetSpec("sm_120", (12, 0), "Blackwell RTX (RTX PRO 6000, RTX 50xx)", W4A16_FRAGMENTS, False,
                   "W4A16 mma.sync on weights stored in fragment order (no native FP4 kernel of ours for sm_120 yet)", "TensorRT-RTX 1.7+ (any machine), or TensorRT 10.14+ on such a GPU",
                   ("tensorrt-rtx", "tensorrt")),
    )
}
DEFAULT_TARGET = "sm_100"


def target(name: str) -> TargetSpec:
    """The TargetSpec named ``name``; a UserInputError listing the choices otherwise."""
    try:
        return TARGETS[name]
    except KeyError:
        raise UserInputError(f"--target {name!r}: expected one of {', '.join(TARGETS)}") from None

