"""The numpy codec of the W4A16 fragment layout (qwen35_trt.w4a16_fragments) against the C++ row
codec it mirrors (csrc/include/qwen35_trt/common/w4a16_fragments.h, bound as
``_C.pack_w4a16_fragments`` / ``_C.unpack_w4a16_fragments``): bit for bit, both directions. The
public functions use the C++ codec when ``_C`` is there; ``use_compiled=False`` is the numpy one."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from qwen35_trt import _C, nvfp4
from qwen35_trt.engine import targets
from qwen35_trt.w4a16_fragments import PAIR_BITS, e4m3_to_ue5m3, pack_w4a16_fragments, ue5m3_to_e4m3, unpack_w4a16_fragments

KS = (16, 32, 48, 64, 80, 96, 2048)


def random_nvfp4(rng, shape: tuple[int, ...], k: int, zero_scales: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Random codes and scales that cover every valid E4M3 scale: subnormals (0x01..0x07), the
    largest (0x7E) and, when ``zero_scales``, +0 and -0 (0x80)."""
    codes = rng.integers(0, 256, (*shape, k // 2), dtype=np.uint8)
    scales = rng.integers(1, 0x7F, (*shape, k // 16), dtype=np.uint8)
    flat = scales.reshape(-1)
    special = [0x01, 0x02, 0x03, 0x05, 0x07, 0x08, 0x7E] + ([0x00, 0x80] if zero_scales else [])
    pos = rng.choice(flat.size, size=min(flat.size, 4 * len(special)), replace=False)
    flat[pos] = np.resize(np.array(special, np.uint8), pos.size)
    return codes, scales


def test_scale_conversion_matches_the_header_on_every_byte():
    e4m3 = np.arange(256, dtype=np.uint8)
    ue = e4m3_to_ue5m3(e4m3)
    valid = (e4m3 & 0x7F) != 0x7F
    valid &= (e4m3 < 0x80) | (e4m3 == 0x80)
    assert (ue[~valid] == 0xFF).all() and (ue[valid] != 0xFF).all()
    # Exact: the UE5M3 value (bias 10, no subnormals) equals the E4M3 value.
    u = ue[valid].astype(np.int64)
    value = np.where(u == 0, 0.0, (1 + (u & 7) / 8) * 2.0 ** ((u >> 3) - 10))
    np.testing.assert_array_equal(value, nvfp4.decode_e4m3(e4m3[valid]).astype(np.float64) * (e4m3[valid] != 0x80))
    np.testing.assert_array_equal(ue5m3_to_e4m3(ue[valid & (e4m3 != 0x80)]), e4m3[valid & (e4m3 != 0x80)])
    # The C++ conversion, through its row codec (one block per row: the codes do not matter here).
    ok = e4m3[valid]
    _, cpp = _C.pack_w4a16_fragments(np.zeros((ok.size, 8), np.uint8), ok.reshape(-1, 1))
    np.testing.assert_array_equal(cpp.reshape(-1), ue[valid])
    every = np.arange(256, dtype=np.uint8).reshape(-1, 1)
    _, cpp_back = _C.unpack_w4a16_fragments(np.zeros((256, 8), np.uint8), every)
    np.testing.assert_array_equal(cpp_back.reshape(-1), ue5m3_to_e4m3(every).reshape(-1))


@pytest.mark.parametrize("k", KS)
def test_pack_and_unpack_match_the_cpp_codec(k):
    rng = np.random.default_rng(k)
    codes, scales = random_nvfp4(rng, (3, 37), k)
    got = pack_w4a16_fragments(codes, scales, use_compiled=False)
    want = _C.pack_w4a16_fragments(codes, scales)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
    assert got[0].shape == codes.shape and got[1].shape == scales.shape and got[0].dtype == np.uint8
    back = unpack_w4a16_fragments(*got, use_compiled=False)
    want_back = _C.unpack_w4a16_fragments(*want)
    np.testing.assert_array_equal(back[0], want_back[0])
    np.testing.assert_array_equal(back[1], want_back[1])
    # Arbitrary bytes unpack as the C++ codec unpacks them, too (not only packed images).
    junk = rng.integers(0, 256, codes.shape, dtype=np.uint8), rng.integers(0, 256, scales.shape, dtype=np.uint8)
    for a, b in zip(unpack_w4a16_fragments(*junk, use_compiled=False), _C.unpack_w4a16_fragments(*junk)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("compiled", [True, False])
@pytest.mark.parametrize("k", KS)
def test_round_trip_without_zero_scales(k, compiled):
    codes, scales = random_nvfp4(np.random.default_rng(100 + k), (2, 5, 9), k, zero_scales=False)
    packed = pack_w4a16_fragments(codes, scales, use_compiled=compiled)
    if k >= 64:
        assert not np.array_equal(packed[0], codes)  # the full groups are permuted
    back = unpack_w4a16_fragments(*packed, use_compiled=compiled)
    np.testing.assert_array_equal(back[0], codes)
    np.testing.assert_array_equal(back[1], scales)


def test_zero_scale_blocks_get_zero_codes():
    rng = np.random.default_rng(7)
    codes, scales = random_nvfp4(rng, (4,), 80, zero_scales=False)
    scales[0, 1], scales[2, 4], scales[3, 0] = 0x00, 0x80, 0x80  # +0 in a full group; -0 in the tail
    packed = pack_w4a16_fragments(codes, scales)
    assert packed[1][0, 1] == 0 and packed[1][2, 4] == 0 and packed[1][3, 0] == 0
    back_codes, back_scales = unpack_w4a16_fragments(*packed)
    zero = np.repeat((scales & 0x7F) == 0, 8, axis=-1)
    assert (back_codes[zero] == 0).all()
    np.testing.assert_array_equal(back_codes[~zero], codes[~zero])
    np.testing.assert_array_equal(back_scales[(scales & 0x7F) != 0], scales[(scales & 0x7F) != 0])
    # Every stored block keeps its value: the dequantized weights are equal.
    np.testing.assert_array_equal(nvfp4.dequantize(back_codes, back_scales, 1.0), nvfp4.dequantize(codes, scales, 1.0))


def test_a_code_lands_where_the_header_says():
    """One nonzero code at a time: its bits sit in the word of its lane and k-step, at PAIR_BITS."""
    for c in (0, 1, 9, 17, 32, 63):
        group = np.zeros((1, 32), np.uint8)
        group[0, c // 2] = 0xB << (4 * (c % 2))  # code 0b1011: sign, e0 and mantissa bits set
        packed, _ = pack_w4a16_fragments(group, np.full((1, 4), 0x38, np.uint8))
        h, rest = divmod(c, 32)
        p, rest = divmod(rest, 8)
        q, i = divmod(rest, 2)
        word = int(packed[0, 8 * q + 4 * h: 8 * q + 4 * h + 4].view("<u4")[0])
        bits = PAIR_BITS[p][i]
        assert word == (1 << bits[0]) | (1 << bits[1]) | (1 << bits[3]), c


@pytest.mark.parametrize("bad,what", [(0x90, "negative"), (0x7F, "NaN"), (0xFF, "NaN")])
def test_negative_or_nan_scales_are_refused_naming_the_tensor(bad, what):
    codes, scales = random_nvfp4(np.random.default_rng(1), (2, 3), 64, zero_scales=False)
    scales[1, 2, 3] = bad
    with pytest.raises(ValueError, match=rf"layers\.0\.mlp\.experts\.down_proj\.weight_scale: block scale at index \[1, 2, 3\] is {what}"):
        pack_w4a16_fragments(codes, scales, "layers.0.mlp.experts.down_proj.weight")
    with pytest.raises(ValueError, match="block scale 3 of row 5 is negative or NaN"):
        _C.pack_w4a16_fragments(codes, scales)


def test_bad_shapes_and_dtypes_name_the_tensor():
    codes = np.zeros((4, 32), np.uint8)
    with pytest.raises(ValueError, match=r"w\.weight_scale: expected shape \[4, 4\] for w\.weight of shape \[4, 32\]"):
        pack_w4a16_fragments(codes, np.zeros((4, 3), np.uint8), "w.weight")
    with pytest.raises(ValueError, match="w.weight: expected dtype uint8"):
        unpack_w4a16_fragments(codes.astype(np.int8), np.zeros((4, 4), np.uint8), "w.weight")
    with pytest.raises(ValueError, match="scales: expected shape"):
        _C.pack_w4a16_fragments(codes, np.zeros((4, 3), np.uint8))


def test_torch_float8_scales_are_read_as_their_bits():
    codes, scales = random_nvfp4(np.random.default_rng(3), (6,), 128)
    got = pack_w4a16_fragments(torch.from_numpy(codes), torch.from_numpy(scales).view(torch.float8_e4m3fn))
    want = pack_w4a16_fragments(codes, scales)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])


@pytest.mark.parametrize("layout", targets.SCALE_LAYOUTS)
def test_target_layouts_pack_and_unpack_codes_with_scales(layout):
    codes, scales = random_nvfp4(np.random.default_rng(11), (3, 200), 96, zero_scales=False)
    stored = targets.pack_nvfp4(layout, codes, scales)
    assert stored[1].shape == (3, *targets.scale_shape(layout, 200, 96))
    assert (stored[0] is codes) == (layout != targets.W4A16_FRAGMENTS)  # only the fragment layout moves codes
    back = targets.unpack_nvfp4(layout, *stored, 200, 96)
    np.testing.assert_array_equal(back[0], codes)
    np.testing.assert_array_equal(back[1], scales)


def test_targets_that_store_fragments_are_w4a16_only():
    """The fragment layout is read by the W4A16 GEMM only: a target that stores it never runs W4A4."""
    assert {t.name for t in targets.TARGETS.values() if t.scale_layout == targets.W4A16_FRAGMENTS} == {"sm_90", "sm_120"}
    assert targets.TARGETS["sm_100"].scale_layout == targets.SWIZZLED_128X4
    for t in targets.TARGETS.values():
        if t.scale_layout == targets.W4A16_FRAGMENTS:
            assert not t.native_fp4 and t.activation("nvfp4", True) == targets.W4A16
