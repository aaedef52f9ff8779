"""The W4A16 fragment layout of NVFP4 weights, on numpy arrays: what the engine writer stores for
the targets whose NVFP4 GEMMs are W4A16 (``engine.targets.W4A16_FRAGMENTS``), and its inverse.

The bit-level definition is ``csrc/include/qwen35_trt/common/w4a16_fragments.h``; this module is
its vectorised twin (``tests/test_w4a16_fragments.py`` checks the two bit for bit). A matrix
``[rows, k]`` keeps ModelOpt's shapes and dtypes:

- codes uint8 ``[..., rows, k // 2]``: in each row every full group of 64 codes (32 bytes) becomes
  eight little-endian 32-bit words in MMA fragment order, word ``2 q + h`` at byte ``8 q + 4 h``
  holding the four ModelOpt bytes ``16 h + q + 4 p`` (p = 0..3, two neighbouring codes each) with
  their bits moved to the positions ``PAIR_BITS[p]``; the last ``k % 64`` codes of a row stay in
  ModelOpt's order.
- scales uint8 ``[..., rows, k // 16]``, row-major: UE5M3 (5 exponent bits, bias 10, 3 mantissa
  bits, no subnormals; 0 is zero) instead of FP8 E4M3, converted exactly. Negative and NaN scales
  are refused; a block whose scale is zero (+0 or -0) is stored with zero codes, so unpacking
  gives zero codes there.

Any leading dimensions are accepted (experts ``[E, N, K]``). Both directions are table lookups
over whole arrays, in row chunks that keep the temporaries small; no compiled code is needed. When
``qwen35_trt._C`` is importable the permutation itself runs in its C++ row codec (the same bits,
several times faster; the scales are checked here first, so the errors are the same).
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["PAIR_BITS", "e4m3_to_ue5m3", "pack_w4a16_fragments", "ue5m3_to_e4m3", "unpack_w4a16_fragments"]

U8 = npt.NDArray[np.uint8]

GROUP_CODES = 64  # codes per permuted group of a row
_GROUP_BYTES = GROUP_CODES // 2
_BLOCK_BYTES = 8  # bytes of codes per 16-value block (one scale)
_UE5M3_INVALID = 0xFF

#: Bit positions in the fragment word of pair p's two codes: ``PAIR_BITS[p][code][bit]``, bit 0 =
#: mantissa, 1 = e0, 2 = e1, 3 = sign (the header's ``kPairBits``).
PAIR_BITS: tuple[tuple[tuple[int, ...], ...], ...] = (
    ((6, 7, 8, 15), (22, 23, 24, 31)),
    ((3, 4, 5, 12), (19, 20, 21, 28)),
    ((0, 1, 2, 9), (16, 17, 18, 25)),
    ((10, 11, 13, 14), (26, 27, 29, 30)),
)

# ModelOpt byte of a group behind pair p of word (q, h), in the order the words are stored:
# _GATHER[4 (2 q + h) + p] = 16 h + q + 4 p.
_GATHER = np.array([16 * h + q + 4 * p for q in range(4) for h in range(2) for p in range(4)], dtype=np.intp)
_SCATTER = np.argsort(_GATHER)


def _e4m3_to_ue5m3(b: int) -> int:
    if b & 0x7F == 0:
        return 0
    if b & 0x80 or b & 0x7F == 0x7F:
        return _UE5M3_INVALID
    exp, man = (b >> 3) & 0xF, b & 7
    if exp == 0:  # subnormal man x 2^-9: normalise
        exp = 1
        while not man & 8:
            man <<= 1
            exp -= 1
        man &= 7
    return ((exp + 3) << 3) | man


def _ue5m3_to_e4m3(u: int) -> int:
    if u == 0:
        return 0
    exp, man = (u >> 3) - 3, u & 7
    if exp <= 0:  # back to an E4M3 subnormal
        man = (man | 8) >> (1 - exp)
        exp = 0
    return ((exp << 3) | man) & 0xFF


_TO_UE5M3 = np.array([_e4m3_to_ue5m3(b) for b in range(256)], dtype=np.uint8)
_TO_E4M3 = np.array([_ue5m3_to_e4m3(u) for u in range(256)], dtype=np.uint8)


def _pair_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Lookup tables of the word <-> pair-byte bit moves, 65536 entries each.

    ``pack[j][v]``: the word bits of pairs 2 j and 2 j + 1 given their two ModelOpt bytes as the
    little-endian uint16 ``v``. ``unpack[j][v]``: the four pair bytes (a little-endian uint32)
    recovered from the word's low (j = 0) or high (j = 1) 16 bits ``v``.
    """
    v = np.arange(1 << 16, dtype=np.uint32)
    pack = [np.zeros(1 << 16, np.uint32), np.zeros(1 << 16, np.uint32)]
    unpack = [np.zeros(1 << 16, np.uint32), np.zeros(1 << 16, np.uint32)]
    for p, codes in enumerate(PAIR_BITS):
        j, byte_shift = divmod(p, 2)
        for i, bits in enumerate(codes):
            for bit, pos in enumerate(bits):
                src = 8 * byte_shift + 4 * i + bit  # bit of the uint16 of two pair bytes
                pack[j] |= ((v >> np.uint32(src)) & np.uint32(1)) << np.uint32(pos)
                half, pos16 = divmod(pos, 16)
                dst = 8 * p + 4 * i + bit  # bit of the uint32 of four pair bytes
                unpack[half] |= ((v >> np.uint32(pos16)) & np.uint32(1)) << np.uint32(dst)
    return pack[0], pack[1], unpack[0], unpack[1]


_PACK_LO, _PACK_HI, _UNPACK_LO, _UNPACK_HI = _pair_tables()
for _t in (_TO_UE5M3, _TO_E4M3, _PACK_LO, _PACK_HI, _UNPACK_LO, _UNPACK_HI):
    _t.setflags(write=False)

_CHUNK_BYTES = 1 << 22  # codes per chunk of rows: the temporaries stay a few times this


def e4m3_to_ue5m3(bits: Any) -> U8:
    """FP8 E4M3 bits uint8 ``[...]`` -> UE5M3 bits; 0xFF marks a negative (not -0) or NaN scale."""
    return _TO_UE5M3[np.asarray(bits, dtype=np.uint8)]


def ue5m3_to_e4m3(bits: Any) -> U8:
    """UE5M3 bits uint8 ``[...]`` -> FP8 E4M3 bits (the inverse of ``e4m3_to_ue5m3`` on its image)."""
    return _TO_E4M3[np.asarray(bits, dtype=np.uint8)]


def _u8(x: Any, name: str) -> np.ndarray:
    torch = sys.modules.get("torch")  # never import torch just for this
    if torch is not None and isinstance(x, torch.Tensor):
        t = x.detach().cpu().contiguous()
        x = (t.view(torch.uint8) if t.dtype == torch.float8_e4m3fn else t).numpy()
    if not isinstance(x, np.ndarray):
        raise ValueError(f"{name}: expected a numpy array or torch tensor, got {type(x).__name__}")
    if x.dtype != np.uint8:
        raise ValueError(f"{name}: expected dtype uint8 (float8_e4m3fn scales as their bits), got {x.dtype}")
    if x.ndim == 0:
        raise ValueError(f"{name}: expected shape [..., rows, k/2] or [..., rows, k/16], got a scalar")
    return np.ascontiguousarray(x)


def _operands(codes: Any, scales: Any, name: str) -> tuple[np.ndarray, np.ndarray]:
    c, s = _u8(codes, name), _u8(scales, f"{name}_scale")
    if c.shape[:-1] != s.shape[:-1] or c.shape[-1] != _BLOCK_BYTES * s.shape[-1]:
        raise ValueError(
            f"{name}_scale: expected shape {list(c.shape[:-1]) + [c.shape[-1] // _BLOCK_BYTES]} for {name} of shape "
            f"{list(c.shape)} (one scale per 16 codes, k = {2 * c.shape[-1]} a multiple of 16), got {list(s.shape)}"
        )
    return c, s


def _compiled():
    """``qwen35_trt._C`` when it has the row codec, else None."""
    try:
        from . import _C
    except ImportError:
        return None
    return _C if hasattr(_C, "pack_w4a16_fragments") else None


def _chunks(rows: int, row_bytes: int):
    step = max(1, _CHUNK_BYTES // max(row_bytes, 1))
    for r0 in range(0, rows, step):
        yield slice(r0, min(rows, r0 + step))


def pack_w4a16_fragments(codes: Any, scales: Any, name: str = "weight", use_compiled: bool = True) -> tuple[U8, U8]:
    """ModelOpt NVFP4 -> the W4A16 fragment layout (new arrays; the inputs are not modified).

    Args:
        codes: uint8 ``[..., rows, k // 2]``, two E2M1 codes per byte (low nibble = even column).
        scales: FP8 E4M3 bits uint8 (or a float8_e4m3fn tensor) ``[..., rows, k // 16]``, row-major.
        name: the weight's tensor name for error messages (its scales are ``{name}_scale``).
        use_compiled: permute in ``_C``'s row codec when it is importable (False: numpy only).

    Returns:
        ``(codes, scales)``: uint8 of the same shapes, codes in fragment order and scales UE5M3.

    Raises:
        ValueError: bad dtypes or shapes, or a negative or NaN scale (naming the first one).
    """
    c, s = _operands(codes, scales, name)
    ue = _TO_UE5M3[s]
    bad = ue == _UE5M3_INVALID
    if bad.any():
        at = tuple(int(i) for i in np.unravel_index(int(np.argmax(bad)), s.shape))
        b = int(s[at])
        what = "NaN" if b & 0x7F == 0x7F else "negative"
        raise ValueError(
            f"{name}_scale: block scale at index {list(at)} is {what} (E4M3 bits 0x{b:02X}); the W4A16 fragment "
            "layout stores block scales >= 0 only"
        )
    compiled = _compiled() if use_compiled else None
    if compiled is not None:
        out_codes, out_scales = compiled.pack_w4a16_fragments(c, s)
        return np.asarray(out_codes), np.asarray(out_scales)
    row_bytes, blocks = c.shape[-1], s.shape[-1]
    full = row_bytes // _GROUP_BYTES * _GROUP_BYTES
    src, zero_all = c.reshape(-1, row_bytes), ue.reshape(-1, blocks) == 0
    out = np.empty_like(src)
    for rows in _chunks(src.shape[0], row_bytes):
        part, zero = src[rows], zero_all[rows]
        if zero.any():  # a zero-scale block is stored with zero codes (docstring)
            part = part.copy()
            part.reshape(part.shape[0], blocks, _BLOCK_BYTES)[zero] = 0
        if full:
            pairs = np.ascontiguousarray(part[:, :full].reshape(part.shape[0], -1, _GROUP_BYTES)[:, :, _GATHER])
            halves = pairs.view("<u2").reshape(-1, 2)
            words = _PACK_LO[halves[:, 0]] | _PACK_HI[halves[:, 1]]
            out[rows, :full] = words.astype("<u4", copy=False).view(np.uint8).reshape(part.shape[0], full)
        out[rows, full:] = part[:, full:]
    return out.reshape(c.shape), ue


def unpack_w4a16_fragments(codes: Any, scales: Any, name: str = "weight", use_compiled: bool = True) -> tuple[U8, U8]:
    """The inverse of ``pack_w4a16_fragments``: ModelOpt's codes and FP8 E4M3 scales, same shapes.

    ``unpack(pack(x)) == x`` wherever no scale is zero (zero-scale blocks come back with zero
    codes). ``name`` and ``use_compiled`` as in ``pack_w4a16_fragments``.
    """
    c, s = _operands(codes, scales, name)
    compiled = _compiled() if use_compiled else None
    if compiled is not None:
        out_codes, out_scales = compiled.unpack_w4a16_fragments(c, s)
        return np.asarray(out_codes), np.asarray(out_scales)
    row_bytes = c.shape[-1]
    full = row_bytes // _GROUP_BYTES * _GROUP_BYTES
    src = c.reshape(-1, row_bytes)
    out = np.empty_like(src)
    for rows in _chunks(src.shape[0], row_bytes):
        part = src[rows]
        if full:
            words = np.ascontiguousarray(part[:, :full]).view("<u4").reshape(-1)
            pairs = _UNPACK_LO[words & np.uint32(0xFFFF)] | _UNPACK_HI[words >> np.uint32(16)]
            pairs = pairs.astype("<u4", copy=False).view(np.uint8).reshape(part.shape[0], -1, _GROUP_BYTES)
            out[rows, :full] = pairs[:, :, _SCATTER].reshape(part.shape[0], full)
        out[rows, full:] = part[:, full:]
    return out.reshape(c.shape), _TO_E4M3[s]
