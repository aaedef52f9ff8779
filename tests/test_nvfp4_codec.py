"""The NVFP4 codec against its oracles: ModelOpt's NVFP4QTensor and torch's float8 cast.

Every comparison is exact: bytes for packed data and scales, bits for floats.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from qwen35_trt import _C, nvfp4

NVFP4QTensor = pytest.importorskip(
    "modelopt.torch.quantization.qtensor.nvfp4_tensor", reason="nvidia-modelopt is not installed"
).NVFP4QTensor

torch.set_num_threads(1)

E2M1_TIES = [0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0]


# --- oracles ------------------------------------------------------------------------------------


def modelopt_quantize(
    weight: torch.Tensor, s2: torch.Tensor, block_scales: torch.Tensor | None = None
) -> tuple[np.ndarray, np.ndarray]:
    q, scales, _ = NVFP4QTensor.quantize(
        weight.clone(), 16, weights_scaling_factor=block_scales, weights_scaling_factor_2=s2
    )
    return q._quantized_data.numpy(), scales.view(torch.uint8).numpy()


def modelopt_dequantize(
    packed: np.ndarray, scales: np.ndarray, s2: torch.Tensor, dtype: torch.dtype
) -> torch.Tensor:
    shape = (*packed.shape[:-1], packed.shape[-1] * 2)
    q = NVFP4QTensor(torch.Size(shape), dtype, torch.from_numpy(packed.copy()))
    return q.dequantize(
        dtype=dtype,
        scale=torch.from_numpy(scales.copy()).view(torch.float8_e4m3fn),
        double_scale=s2,
        block_sizes={-1: 16},
    )


def torch_e4m3(x: np.ndarray) -> np.ndarray:
    return torch.from_numpy(x).to(torch.float8_e4m3fn).view(torch.uint8).numpy()


def bits(x: np.ndarray) -> np.ndarray:
    return x.view(np.uint32)


# --- inputs -------------------------------------------------------------------------------------


def make_weight(rows: int, cols: int, seed: int, dtype: torch.dtype) -> torch.Tensor:
    """Normal weights with per-block magnitudes from 1e-8 to 1e3, some zero blocks, some outliers."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, cols // 16, 16, generator=g)
    magnitude = 10.0 ** torch.empty(rows, cols // 16, 1).uniform_(-8, 3, generator=g)
    w = w * magnitude
    zero = torch.rand(rows, cols // 16, 1, generator=g) < 0.1
    w = torch.where(zero, torch.zeros_like(w), w)
    w.view(-1)[:: max(1, w.numel() // 7)] *= 50.0  # outliers
    return w.reshape(rows, cols).to(dtype)


def as_numpy_weight(w: torch.Tensor) -> np.ndarray:
    if w.dtype == torch.bfloat16:
        return w.view(torch.uint16).numpy()
    return w.numpy()


SHAPES = [(1, 16), (7, 48), (130, 64), (256, 160), (129, 2048)]


# --- quantize / dequantize vs ModelOpt ------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=["bf16", "fp32"])
@pytest.mark.parametrize("shape", SHAPES, ids=[f"{r}x{c}" for r, c in SHAPES])
@pytest.mark.parametrize("s2_mode", ["export", "small", "large"])
def test_quantize_matches_modelopt(shape, dtype, s2_mode):
    rows, cols = shape
    w = make_weight(rows, cols, seed=rows * 1000 + cols, dtype=dtype)
    s2 = NVFP4QTensor.get_weights_scaling_factor_2(w)  # fresh export: amax / (6 * 448)
    # "small" saturates block scales at 448 and codes at 6; "large" clamps scales at 2^-9.
    s2 = s2 * {"export": 1.0, "small": 1e-3, "large": 1e4}[s2_mode]
    ref_packed, ref_scales = modelopt_quantize(w, s2)

    packed, scales = nvfp4.quantize(as_numpy_weight(w), s2.numpy())
    np.testing.assert_array_equal(scales, ref_scales)
    np.testing.assert_array_equal(packed, ref_packed)
    # torch tensors are accepted directly, bf16 included.
    packed_t, scales_t = nvfp4.quantize(w, s2)
    np.testing.assert_array_equal(packed_t, ref_packed)
    np.testing.assert_array_equal(scales_t, ref_scales)

    ref = modelopt_dequantize(packed, scales, s2, torch.float32).numpy()
    out = nvfp4.dequantize(packed, scales, s2.numpy())
    assert out.dtype == np.float32
    np.testing.assert_array_equal(bits(out), bits(ref))


def test_export_global_scale_matches_modelopt():
    for dtype in (torch.float32, torch.bfloat16):
        w = make_weight(33, 64, seed=5, dtype=dtype)
        ref = NVFP4QTensor.get_weights_scaling_factor_2(w).numpy()
        assert nvfp4.compute_weight_scale_2(as_numpy_weight(w)).tobytes() == ref.tobytes()


def test_quantize_exact_ties_with_given_block_scales():
    """Values that land exactly on E2M1 rounding boundaries, through ModelOpt's given-scale path."""
    rng = np.random.default_rng(11)
    rows, cols = 40, 64
    s2 = torch.tensor(2.0**-7)
    scale_values = np.array([0.25, 0.5, 1.0, 2.0, 8.0, 64.0], dtype=np.float32)
    block_scale = rng.choice(scale_values, size=(rows, cols // 16)).astype(np.float32)
    grid = np.array(E2M1_TIES + [0.0, 0.5, 1.0, 6.0, 7.0, 100.0], dtype=np.float32)
    q = rng.choice(grid, size=(rows, cols)) * rng.choice([-1.0, 1.0], size=(rows, cols))
    w = (q * np.repeat(block_scale, 16, axis=1) * np.float32(2.0**-7)).astype(np.float32)
    scales_e4m3 = torch.from_numpy(block_scale).to(torch.float8_e4m3fn)
    ref_packed, ref_scales = modelopt_quantize(torch.from_numpy(w), s2, scales_e4m3)

    packed, scales = nvfp4.quantize(w, s2, block_scales=scales_e4m3)
    np.testing.assert_array_equal(packed, ref_packed)
    np.testing.assert_array_equal(scales, ref_scales)
    packed_u8, _ = nvfp4.quantize(w, float(s2), block_scales=scales_e4m3.view(torch.uint8).numpy())
    np.testing.assert_array_equal(packed_u8, ref_packed)


def test_batched_experts_with_per_expert_global_scales():
    experts, rows, cols = 3, 33, 32
    ws = [make_weight(rows, cols, seed=100 + e, dtype=torch.bfloat16) for e in range(experts)]
    s2 = torch.stack([NVFP4QTensor.get_weights_scaling_factor_2(w) for w in ws])
    ref = [modelopt_quantize(w, s2[e]) for e, w in enumerate(ws)]

    packed, scales = nvfp4.quantize(torch.stack(ws), s2)
    assert packed.shape == (experts, rows, cols // 2) and scales.shape == (experts, rows, cols // 16)
    for e in range(experts):
        np.testing.assert_array_equal(packed[e], ref[e][0])
        np.testing.assert_array_equal(scales[e], ref[e][1])
    out = nvfp4.dequantize(packed, scales, s2)
    for e in range(experts):
        expected = modelopt_dequantize(packed[e], scales[e], s2[e], torch.float32).numpy()
        np.testing.assert_array_equal(bits(out[e]), bits(expected))
    # One shared global scale broadcasts over the batch.
    shared_packed, _ = nvfp4.quantize(torch.stack(ws), s2[0])
    np.testing.assert_array_equal(shared_packed[0], ref[0][0])


def test_dequantize_random_bytes_matches_modelopt():
    """Every code and every non-NaN scale byte, fp32 and bf16 outputs."""
    rng = np.random.default_rng(3)
    rows, cols = 130, 96
    packed = rng.integers(0, 256, size=(rows, cols // 2), dtype=np.uint8)
    scales = rng.integers(0, 256, size=(rows, cols // 16), dtype=np.uint8)
    scales[(scales & 0x7F) == 0x7F] = 0x38  # NaN scales are not a meaningful input
    s2 = torch.tensor(3.1e-4)
    ref32 = modelopt_dequantize(packed, scales, s2, torch.float32).numpy()
    np.testing.assert_array_equal(bits(nvfp4.dequantize(packed, scales, s2)), bits(ref32))
    ref16 = modelopt_dequantize(packed, scales, s2, torch.bfloat16).view(torch.uint16).numpy()
    np.testing.assert_array_equal(nvfp4.dequantize(packed, scales, s2, out_dtype="bfloat16"), ref16)


# --- scalar codecs ------------------------------------------------------------------------------


def test_encode_e2m1_matches_modelopt_cast():
    rng = np.random.default_rng(5)
    ties = np.array(E2M1_TIES, dtype=np.float32)
    near = np.concatenate([ties, np.nextafter(ties, 0), np.nextafter(ties, 10)])
    special = np.array([0.0, -0.0, 6.0, 6.5, 1e30, np.inf, -np.inf, -1e-30, -0.1], np.float32)
    x = np.concatenate(
        [rng.uniform(-8, 8, 100_000).astype(np.float32), near, -near, special]
    )
    ref = NVFP4QTensor._cast_fp4(torch.from_numpy(x.copy())).numpy()
    np.testing.assert_array_equal(nvfp4.encode_e2m1(x), ref)
    np.testing.assert_array_equal(nvfp4.decode_e2m1(np.arange(16, dtype=np.uint8)), nvfp4.E2M1_VALUES)


def test_pack_unpack_round_trip():
    rng = np.random.default_rng(6)
    codes = rng.integers(0, 16, size=(2, 5, 34), dtype=np.uint8)
    packed = nvfp4.pack_e2m1(codes)
    assert packed.shape == (2, 5, 17)
    np.testing.assert_array_equal(packed, codes[..., 0::2] | (codes[..., 1::2] << 4))
    np.testing.assert_array_equal(nvfp4.unpack_e2m1(packed), codes)


def test_decode_e4m3_all_bytes_matches_torch():
    b = np.arange(256, dtype=np.uint8)
    ref = torch.from_numpy(b).view(torch.float8_e4m3fn).float().numpy()
    np.testing.assert_array_equal(nvfp4.decode_e4m3(b), ref)  # NaN == NaN here
    np.testing.assert_array_equal(bits(nvfp4.decode_e4m3(b))[~np.isnan(ref)], bits(ref)[~np.isnan(ref)])


def test_encode_e4m3_matches_torch():
    rng = np.random.default_rng(7)
    representable = nvfp4.decode_e4m3(np.arange(0x7E, dtype=np.uint8))
    upper = nvfp4.decode_e4m3(np.arange(1, 0x7F, dtype=np.uint8))
    mids = (representable + upper) / np.float32(2)  # exact midpoints: ties to even
    x = np.concatenate(
        [
            # in range, log-uniform across normals and subnormals, both signs
            (np.exp2(rng.uniform(-12, np.log2(448), 400_000)) * rng.choice([-1, 1], 400_000)),
            rng.uniform(-2.0**-6, 2.0**-6, 100_000),  # subnormal range
            mids,
            -mids,
            np.nextafter(mids, 0),
            np.nextafter(mids, 1000),
            representable,
            [0.0, -0.0, 448.0, 464.0, 470.0, 480.0, 1e9, np.inf, -np.inf, np.nan, -np.nan],
        ]
    ).astype(np.float32)
    # every float32 bit pattern class: random bits cover overflow, NaN payloads, fp32 subnormals
    random_bits = rng.integers(0, 2**32, 200_000, dtype=np.uint64).astype(np.uint32).view(np.float32)
    for values in (x, random_bits):
        np.testing.assert_array_equal(nvfp4.encode_e4m3(values), torch_e4m3(values))


def test_bf16_helpers_match_torch():
    rng = np.random.default_rng(8)
    x = (rng.standard_normal(50_000) * 10.0 ** rng.uniform(-30, 30, 50_000)).astype(np.float32)
    ref = torch.from_numpy(x).to(torch.bfloat16).view(torch.uint16).numpy()
    np.testing.assert_array_equal(_C.float_to_bf16(x), ref)
    np.testing.assert_array_equal(
        bits(_C.bf16_to_float(ref)), bits(torch.from_numpy(ref).view(torch.bfloat16).float().numpy())
    )


# --- swizzle ------------------------------------------------------------------------------------


def swizzle_offsets(rows: int, cols: int) -> np.ndarray:
    m, k = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    cols_p = -(-cols // 4) * 4
    return ((m // 128) * (cols_p // 4) + k // 4) * 512 + (m % 32) * 16 + ((m % 128) // 32) * 4 + k % 4


@pytest.mark.parametrize("rows,cols", [(1, 1), (130, 5), (256, 128), (300, 9)])
def test_swizzle_round_trip_and_layout(rows, cols):
    rng = np.random.default_rng(rows + cols)
    scales = rng.integers(1, 256, size=(2, rows, cols), dtype=np.uint8)
    swz = nvfp4.swizzle_scales_128x4(scales)
    rows_p, cols_p = nvfp4.swizzled_scales_shape(rows, cols)
    assert swz.shape == (2, rows_p, cols_p)
    for b in range(2):
        flat = swz[b].reshape(-1)
        np.testing.assert_array_equal(flat[swizzle_offsets(rows, cols)], scales[b])
        assert np.count_nonzero(flat) == rows * cols  # padding is zero
    np.testing.assert_array_equal(nvfp4.unswizzle_scales_128x4(swz, rows, cols), scales)
    flat_in = swz.reshape(2, rows_p * cols_p)
    np.testing.assert_array_equal(nvfp4.unswizzle_scales_128x4(flat_in, rows, cols), scales)


# --- errors -------------------------------------------------------------------------------------


def test_bad_arguments_raise_value_error_naming_the_argument():
    w = np.ones((4, 32), np.float32)
    packed, scales = nvfp4.quantize(w, 1.0)
    cases = [
        (lambda: nvfp4.quantize(np.ones((4, 24), np.float32), 1.0), "weight"),
        (lambda: nvfp4.quantize(w, 0.0), "weight_scale_2"),
        (lambda: nvfp4.quantize(w, -1.0), "weight_scale_2"),
        (lambda: nvfp4.quantize(w, float("nan")), "weight_scale_2"),
        (lambda: nvfp4.quantize(w, float("inf")), "weight_scale_2"),
        (lambda: nvfp4.quantize(w, np.ones(3, np.float32)), "weight_scale_2"),
        (lambda: nvfp4.quantize(w.astype(np.float64), 1.0), "weight"),
        (lambda: nvfp4.quantize(np.where(w > 0, np.nan, w).astype(np.float32), 1.0), "weight"),
        (lambda: nvfp4.quantize(w, 1.0, block_scales=np.zeros((4, 2), np.uint8)), "block_scales"),
        (lambda: nvfp4.quantize(w, 1.0, block_scales=np.ones((4, 3), np.uint8)), "block_scales"),
        (lambda: nvfp4.quantize(w, 1.0, block_scales=np.ones((4, 2), np.int32)), "block_scales"),
        (lambda: nvfp4.dequantize(packed, scales[:, :1], 1.0), "scales"),
        (lambda: nvfp4.dequantize(packed[:, :3], scales, 1.0), "packed"),
        (lambda: nvfp4.dequantize(packed.astype(np.int16), scales, 1.0), "packed"),
        (lambda: nvfp4.dequantize(packed, scales, 0.0), "weight_scale_2"),
        (lambda: nvfp4.dequantize(packed, scales, 1.0, out_dtype="float16"), "out_dtype"),
        (lambda: nvfp4.pack_e2m1(np.zeros((2, 3), np.uint8)), "codes"),
        (lambda: nvfp4.pack_e2m1(np.full((2, 4), 16, np.uint8)), "codes"),
        (lambda: nvfp4.decode_e2m1(np.array([17], np.uint8)), "codes"),
        (lambda: nvfp4.encode_e4m3(np.zeros(3, np.float64)), "x"),
        (lambda: nvfp4.decode_e4m3(np.zeros(3, np.int8)), "bits"),
        (lambda: nvfp4.swizzle_scales_128x4(np.zeros(8, np.uint8)), "scales"),
        (lambda: nvfp4.unswizzle_scales_128x4(np.zeros(100, np.uint8), 3, 4), "swizzled"),
        (lambda: nvfp4.unswizzle_scales_128x4(np.zeros(512, np.uint8), 0, 4), "rows"),
        (lambda: nvfp4.quantize("weights", 1.0), "weight"),
    ]
    for fn, name in cases:
        with pytest.raises(ValueError, match=f"^{name}"):
            fn()


def test_non_contiguous_inputs_are_accepted():
    w = make_weight(32, 64, seed=1, dtype=torch.float32).numpy()
    wt = np.asfortranarray(w)
    np.testing.assert_array_equal(nvfp4.quantize(wt, 0.01)[0], nvfp4.quantize(w, 0.01)[0])


def test_build_info():
    info = _C.build_info()
    assert info["version"] and isinstance(info["cuda_enabled"], bool)
    assert isinstance(info["cuda_architectures"], str) and info["compiler"]
    assert _C.cuda_device_count() >= 0  # never raises, even without a driver


@pytest.mark.gpu
def test_cuda_dequantize_kernel_matches_reference():
    if _C.cuda_device_count() == 0:
        pytest.skip("no CUDA device")
    rng = np.random.default_rng(9)
    packed = rng.integers(0, 256, size=(300, 1024), dtype=np.uint8)
    scales = rng.integers(0, 0x7F, size=(300, 128), dtype=np.uint8)
    expected = nvfp4.dequantize(packed, scales, 2.5e-3, out_dtype="bfloat16")
    np.testing.assert_array_equal(_C.nvfp4_dequantize_bf16_cuda(packed, scales, 2.5e-3), expected)
