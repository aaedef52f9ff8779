"""Qwen35GatedDeltaNet in a real TensorRT builder: TensorRT-RTX parses one-node ONNX graphs into the
plugin and builds SM120 engines on the CPU (prefill profiles with dynamic tokens, sequences and
slots; the fp32 state pool aliased, which needs the preview feature), and refuses what the plugin
refuses (a wrong dtype, bad fields) with named errors. Enqueue needs a GPU (ctest plugin_cuda).

Skipped (with the reason) when ``tensorrt_rtx`` cannot be imported or the build has no CUDA kernels.
"""

import pytest

from qwen35_trt import _C

from plugin_builds import build_sm120, one_node_model, tensorrt_with_plugins

GDN = "Qwen35GatedDeltaNet"

pytestmark = pytest.mark.skipif(
    not _C.build_info()["cuda_architectures"], reason="built without CUDA: no plugin library"
)


@pytest.fixture(scope="module")
def trt():
    return tensorrt_with_plugins(GDN)


def gdn_model(hk=16, hv=32, dk=128, dv=128, attrs=None, pool_type=None, a_log_type=None):
    """One Qwen35GatedDeltaNet node (35B-A3B heads by default): dynamic tokens, sequences and slots;
    output 1 aliases the state pool (docs/plugins.md)."""
    from onnx import TensorProto, helper

    bf16, f32 = TensorProto.BFLOAT16, TensorProto.FLOAT
    inputs = [
        helper.make_tensor_value_info("q", bf16, ["tokens", hk, dk]),
        helper.make_tensor_value_info("k", bf16, ["tokens", hk, dk]),
        helper.make_tensor_value_info("v", bf16, ["tokens", hv, dv]),
        helper.make_tensor_value_info("a", bf16, ["tokens", hv]),
        helper.make_tensor_value_info("b", bf16, ["tokens", hv]),
        helper.make_tensor_value_info("A_log", a_log_type or f32, [hv]),
        helper.make_tensor_value_info("dt_bias", f32, [hv]),
        helper.make_tensor_value_info("state_pool", pool_type or f32, ["num_slots", hv, dk, dv]),
        helper.make_tensor_value_info("slots", TensorProto.INT32, ["batch"]),
        helper.make_tensor_value_info("cu_seqlens", TensorProto.INT32, ["batch_plus_1"]),
        helper.make_tensor_value_info("has_initial_state", TensorProto.BOOL, ["batch"]),
    ]
    outputs = [
        helper.make_tensor_value_info("o", bf16, ["tokens", hv, dv]),
        helper.make_tensor_value_info("state_pool_out", pool_type or f32, ["num_slots", hv, dk, dv]),
    ]
    return one_node_model(GDN, inputs, outputs, attrs or {})


def build(trt, model: bytes, hk=16, hv=32, dk=128, dv=128, tokens=(1, 256, 8192), batch=(1, 8, 256)):
    """Parse and build for SM120 with one profile; returns (engine bytes or None, parser errors)."""
    shapes = {}
    for name, inner in (("q", (hk, dk)), ("k", (hk, dk)), ("v", (hv, dv)), ("a", (hv,)), ("b", (hv,))):
        shapes[name] = tuple((t, *inner) for t in tokens)
    shapes["state_pool"] = ((1, hv, dk, dv), (64, hv, dk, dv), (256, hv, dk, dv))
    for name, extra in (("slots", 0), ("cu_seqlens", 1), ("has_initial_state", 0)):
        shapes[name] = tuple((b + extra,) for b in batch)
    return build_sm120(trt, model, shapes)


@pytest.mark.parametrize(
    "attrs",
    [{}, {"algorithm": "recurrent"}, {"algorithm": "chunked", "scale": 0.125, "use_qk_l2norm": 1}],
    ids=["auto", "recurrent", "chunked"],
)
def test_gated_delta_net_prefill_builds_for_sm120(trt, attrs):
    plan, errors = build(trt, gdn_model(attrs=attrs))
    assert not errors
    assert plan is not None and len(plan) > 0


def test_gated_delta_net_decode_profile_and_small_heads_build(trt):
    """A decode-shaped profile (T in the range of B) and the recurrent-only dk = 256 / dv = 32."""
    plan, errors = build(trt, gdn_model(hk=1, hv=2, dk=256, dv=32), hk=1, hv=2, dk=256, dv=32,
                         tokens=(1, 8, 256), batch=(1, 8, 256))
    assert not errors and plan is not None


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"pool_type": "bf16"}, "state_pool: expected fp32, got bf16"),
        ({"a_log_type": "bf16"}, "A_log: expected fp32, got bf16"),
    ],
)
def test_builder_refuses_wrong_dtypes(trt, capfd, kwargs, message):
    from onnx import TensorProto

    kwargs = {k: TensorProto.BFLOAT16 for k in kwargs}
    plan, _ = build(trt, gdn_model(**kwargs))
    assert plan is None
    assert f"qwen35_trt::{GDN}: {message}" in capfd.readouterr().err


def test_builder_refuses_dk_the_kernels_do_not_take(trt, capfd):
    plan, _ = build(trt, gdn_model(dk=96), dk=96)
    assert plan is None
    assert f"qwen35_trt::{GDN}: q: dk (dim 2) must be 32, 64, 128 or 256" in capfd.readouterr().err


@pytest.mark.parametrize(
    "attrs, message",
    [
        ({"scale": 0.0}, "field 'scale': expected one finite float (FLOAT32) in (0, 1e+06), got 0"),
        ({"scale": 1}, "field 'scale': expected one finite float (FLOAT32) in (0, 1e+06), got INT32"),
        ({"use_qk_l2norm": 2}, "field 'use_qk_l2norm': expected one integer (INT32) in [0, 1], got 2"),
        ({"algorithm": "fast"},
         "field 'algorithm': expected a string (CHAR) of \"auto\", \"chunked\", \"recurrent\", got \"fast\""),
    ],
)
def test_parser_refuses_bad_fields_with_named_errors(trt, capfd, attrs, message):
    # Not here: an unknown attribute. TensorRT-RTX's ONNX parser hands over only the fields the
    # creator declares, so the plugin never sees it (the harness ctest covers its own refusal).
    plan, _ = build(trt, gdn_model(attrs=attrs))
    assert plan is None
    assert f"qwen35_trt::{GDN}: {message}" in capfd.readouterr().err
