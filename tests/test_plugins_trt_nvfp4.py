"""Qwen35Nvfp4Linear and Qwen35Nvfp4MoE in a real TensorRT builder: TensorRT-RTX parses one-node
ONNX graphs into the plugins and builds SM120 engines on the CPU (dynamic tokens with an
optimisation profile; the packed NVFP4 weights and their E4M3 block scales as INT8 initialisers
carrying the bytes, the fp32 globals as initialisers; Nvfp4MoE also with the fused shared expert),
and refuses what the plugins refuse (a wrong dtype, bad fields, scales of the other layout, a missing
input_scale, top_k above E, shared inputs that do not match the shared_expert field) with named
errors.
Enqueue needs a GPU (ctest plugin_cuda).

Skipped (with the reason) when ``tensorrt_rtx`` cannot be imported or the build has no CUDA kernels.
"""

import numpy as np
import pytest

from plugin_builds import build_sm120, one_node_model, tensorrt_with_plugins
from qwen35_trt import _C

NAMESPACE = "qwen35_trt"
LINEAR = "Qwen35Nvfp4Linear"

pytestmark = pytest.mark.skipif(
    not _C.build_info()["cuda_architectures"], reason="built without CUDA: no plugin library"
)


@pytest.fixture(scope="module")
def trt():
    return tensorrt_with_plugins(LINEAR)


def scale_shape(layout: str, n: int, k: int) -> tuple[int, int]:
    if layout in ("row_major", "w4a16_fragments"):
        return n, k // 16
    return -(-n // 128) * 128, -(-(k // 16) // 4) * 4


def linear_model(n=64, k=128, layout="row_major", activation=None, x_type=None, byte_type=np.int8, attrs=None,
                 scale_dims=None, inputs_override=None):
    """One Qwen35Nvfp4Linear node: x [tokens, K] dynamic; weight, weight_scale (the bytes as
    ``byte_type``), weight_scale_2 (and input_scale for w4a4) initialisers."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(3)
    packed = rng.integers(0, 256, (n, k // 2), dtype=np.uint8)
    scales = rng.integers(32, 80, scale_dims or scale_shape(layout, n, k), dtype=np.uint8)
    inits = [
        numpy_helper.from_array(packed.view(byte_type), "weight"),
        numpy_helper.from_array(scales.view(byte_type), "weight_scale"),
        numpy_helper.from_array(np.array(0.01, dtype=np.float32), "weight_scale_2"),
    ]
    if activation == "w4a4":
        inits.append(numpy_helper.from_array(np.array([0.02], dtype=np.float32), "input_scale"))
    x = helper.make_tensor_value_info("x", x_type or TensorProto.BFLOAT16, ["tokens", k])
    y = helper.make_tensor_value_info("y", TensorProto.BFLOAT16, ["tokens", n])
    if attrs is None:
        attrs = {"scale_layout": layout, **({"activation": activation} if activation else {})}
    names = inputs_override or ["x"] + [t.name for t in inits]
    node = helper.make_node(LINEAR, names, ["y"], domain=NAMESPACE, **attrs)
    graph = helper.make_graph([node], "linear", [x], [y], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid(NAMESPACE, 1)])
    return onnx._serialize(model) if hasattr(onnx, "_serialize") else model.SerializeToString()


def build(trt, model: bytes, k=128, max_tokens=8192):
    """Parse and build for SM120 with a dynamic token profile; (engine bytes or None, parser errors)."""
    return build_sm120(trt, model, {"x": ((1, k), (64, k), (max_tokens, k))}, aliased_io=False)


@pytest.mark.parametrize(
    "n, k, layout, activation",
    [
        (64, 128, "w4a16_fragments", None),  # sm_90 and sm_120 engines
        (200, 48, "w4a16_fragments", "w4a16"),  # K % 64 != 0: a partial group in each row
        (64, 128, "row_major", None),  # row-major scales, as the CUDA eager path takes them
        (200, 48, "swizzled_128x4", "w4a16"),  # swizzled scales: N and K/16 padded by the swizzle
        (256, 512, "swizzled_128x4", "w4a4"),  # sm_100 engines: input_scale as a fifth input
    ],
)
def test_nvfp4_linear_builds_for_sm120(trt, n, k, layout, activation):
    plan, errors = build(trt, linear_model(n=n, k=k, layout=layout, activation=activation), k=k)
    assert not errors
    assert plan is not None and len(plan) > 0


def test_builder_refuses_unsupported_input_dtype(trt, capfd):
    from onnx import TensorProto

    plan, _ = build(trt, linear_model(x_type=TensorProto.FLOAT16))
    assert plan is None, "an fp16 x must not build"
    assert f"qwen35_trt::{LINEAR}: x: expected bf16, got fp16" in capfd.readouterr().err


def test_builder_refuses_uint8_weights(trt, capfd):
    """UINT8 initialisers reach the plugin widened to INT32 (TensorRT-RTX's ONNX parser), and a
    UINT8 plugin tensor does not build at all: the bytes travel as INT8."""
    plan, _ = build(trt, linear_model(byte_type=np.uint8))
    assert plan is None
    assert f"qwen35_trt::{LINEAR}: weight: expected int8, got int32" in capfd.readouterr().err


def test_builder_refuses_scales_of_the_other_layout(trt, capfd):
    plan, _ = build(trt, linear_model(n=64, k=128, layout="row_major", scale_dims=(128, 8)))
    assert plan is None
    assert 'weight_scale: expected [64, 8] for scale_layout "row_major"' in capfd.readouterr().err
    plan, _ = build(trt, linear_model(n=64, k=128, layout="w4a16_fragments", scale_dims=(128, 8)))
    assert plan is None
    assert 'weight_scale: expected [64, 8] for scale_layout "w4a16_fragments"' in capfd.readouterr().err


def test_builder_refuses_w4a4_without_input_scale(trt, capfd):
    model = linear_model(activation="w4a4", inputs_override=["x", "weight", "weight_scale", "weight_scale_2"])
    plan, _ = build(trt, model)
    assert plan is None
    assert 'expected 5 inputs (x, weight, weight_scale, weight_scale_2, input_scale) for activation "w4a4"' in (
        capfd.readouterr().err
    )


@pytest.mark.parametrize(
    "attrs, message",
    [
        ({}, "field 'scale_layout': missing"),
        ({"scale_layout": "col_major"},
         "field 'scale_layout': expected a string (CHAR) of \"row_major\", \"swizzled_128x4\", \"w4a16_fragments\", "
         "got \"col_major\""),
        ({"scale_layout": "w4a16_fragments", "activation": "w4a4"},
         "field 'activation': \"w4a4\" needs the weights in scale_layout \"swizzled_128x4\" (what the native FP4 GEMM "
         "reads), got scale_layout \"w4a16_fragments\""),
        ({"scale_layout": 1}, "field 'scale_layout': expected a string (CHAR)"),
        ({"scale_layout": "row_major", "activation": "w8a8"},
         "field 'activation': expected a string (CHAR) of \"w4a16\", \"w4a4\", got \"w8a8\""),
    ],
)
def test_parser_refuses_bad_fields_with_named_errors(trt, capfd, attrs, message):
    plan, _ = build(trt, linear_model(attrs=attrs))
    assert plan is None
    assert f"qwen35_trt::{LINEAR}: {message}" in capfd.readouterr().err


# --- Qwen35Nvfp4MoE ------------------------------------------------------------------------------

MOE = "Qwen35Nvfp4MoE"


def moe_model(e=8, h=128, i=64, top_k=2, layout="row_major", activation=None, logits_type=None, hidden_type=None,
              attrs=None):
    """One Qwen35Nvfp4MoE node (no shared expert): hidden [tokens, H] and router_logits [tokens, E]
    dynamic; the expert weights (INT8 bytes), their scales and globals initialisers."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(5)

    def nvfp4(name, rows, cols):
        sr, sc = scale_shape(layout, rows, cols)
        return [
            numpy_helper.from_array(rng.integers(0, 256, (e, rows, cols // 2), dtype=np.uint8).view(np.int8), name),
            numpy_helper.from_array(rng.integers(32, 80, (e, sr, sc), dtype=np.uint8).view(np.int8), name + "_scale"),
        ]

    inits = [
        *nvfp4("gate_up_weight", 2 * i, h),
        numpy_helper.from_array(np.full((e, 2), 0.01, dtype=np.float32), "gate_up_weight_scale_2"),
        *nvfp4("down_weight", h, i),
        numpy_helper.from_array(np.full((e,), 0.01, dtype=np.float32), "down_weight_scale_2"),
    ]
    if activation == "w4a4":
        inits.append(numpy_helper.from_array(np.full((e,), 0.02, dtype=np.float32), "gate_up_input_scale"))
        inits.append(numpy_helper.from_array(np.full((e,), 0.02, dtype=np.float32), "down_input_scale"))
    inputs = [
        helper.make_tensor_value_info("hidden", hidden_type or TensorProto.BFLOAT16, ["tokens", h]),
        helper.make_tensor_value_info("router_logits", logits_type or TensorProto.FLOAT, ["tokens", e]),
    ]
    out = helper.make_tensor_value_info("out", TensorProto.BFLOAT16, ["tokens", h])
    if attrs is None:
        attrs = {"top_k": top_k, "scale_layout": layout, **({"activation": activation} if activation else {})}
    node = helper.make_node(MOE, [t.name for t in inputs] + [t.name for t in inits], ["out"], domain=NAMESPACE, **attrs)
    graph = helper.make_graph([node], "moe", inputs, [out], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid(NAMESPACE, 1)])
    return onnx._serialize(model) if hasattr(onnx, "_serialize") else model.SerializeToString()


def build_moe(trt, model: bytes, e=8, h=128, max_tokens=4096):
    """Parse and build for SM120 with a dynamic token profile; (engine bytes or None, parser errors)."""
    shapes = {"hidden": ((1, h), (64, h), (max_tokens, h)), "router_logits": ((1, e), (64, e), (max_tokens, e))}
    return build_sm120(trt, model, shapes, aliased_io=False)


@pytest.mark.parametrize(
    "layout, activation, bf16_logits",
    [
        ("w4a16_fragments", None, False),  # sm_90 and sm_120 engines, fp32 logits
        ("w4a16_fragments", "w4a16", True),  # the router's bf16 logits as they are
        ("row_major", None, False),  # row-major scales, as the CUDA eager path takes them
        ("swizzled_128x4", "w4a16", True),  # swizzled scales without input scales
        ("swizzled_128x4", "w4a4", False),  # sm_100 engines: the two input scales as inputs 8 and 9
    ],
)
def test_nvfp4_moe_builds_for_sm120(trt, layout, activation, bf16_logits):
    from onnx import TensorProto

    model = moe_model(layout=layout, activation=activation, logits_type=TensorProto.BFLOAT16 if bf16_logits else None)
    plan, errors = build_moe(trt, model)
    assert not errors
    assert plan is not None and len(plan) > 0


def test_moe_builder_refuses_unsupported_input_dtype(trt, capfd):
    from onnx import TensorProto

    plan, _ = build_moe(trt, moe_model(hidden_type=TensorProto.FLOAT16))
    assert plan is None
    assert f"qwen35_trt::{MOE}: hidden: expected bf16, got fp16" in capfd.readouterr().err
    plan, _ = build_moe(trt, moe_model(logits_type=TensorProto.FLOAT16))
    assert plan is None
    assert f"qwen35_trt::{MOE}: router_logits: expected fp32 or bf16, got fp16" in capfd.readouterr().err


def test_moe_builder_refuses_top_k_above_the_experts(trt, capfd):
    plan, _ = build_moe(trt, moe_model(e=4, top_k=6), e=4)
    assert plan is None
    assert f"qwen35_trt::{MOE}: field 'top_k' = 6 exceeds the number of experts E = 4" in capfd.readouterr().err


@pytest.mark.parametrize(
    "attrs, message",
    [
        ({"scale_layout": "row_major"}, "field 'top_k': missing"),
        ({"top_k": 0, "scale_layout": "row_major"}, "field 'top_k': expected one integer (INT32) in [1, 32], got 0"),
        ({"top_k": 2}, "field 'scale_layout': missing"),
        ({"top_k": 2, "scale_layout": "row_major", "activation": "fp8"},
         "field 'activation': expected a string (CHAR) of \"w4a16\", \"w4a4\", got \"fp8\""),
    ],
)
def test_moe_parser_refuses_bad_fields_with_named_errors(trt, capfd, attrs, message):
    plan, _ = build_moe(trt, moe_model(attrs=attrs))
    assert plan is None
    assert f"qwen35_trt::{MOE}: {message}" in capfd.readouterr().err


# --- Qwen35Nvfp4MoE with the shared expert (field shared_expert = 1) -------------------------------

SHARED_LINEARS = ("gate", "up", "down")


def moe_shared_model(e=8, h=128, i=64, shared_i=96, top_k=2, layout="row_major", activation=None, types=None,
                     attrs=None, gate_vector_shape=None, leave_out=()):
    """One Qwen35Nvfp4MoE node with the shared expert: the routed inputs of ``moe_model``, then per
    shared linear (gate, up, down) its weight, weight_scale, weight_scale_2 (and input_scale for
    w4a4), then shared_expert_gate_weight bf16 [1, H] (the checkpoint's shape), all initialisers.
    ``types`` overrides an initialiser's ONNX dtype by name (the values cast); ``leave_out`` drops
    inputs from the node."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(7)
    types = types or {}
    w4a4 = activation == "w4a4"

    def init(name, array):
        if types.get(name) == TensorProto.UINT8:  # the bytes as they come from a checkpoint
            return numpy_helper.from_array(array.view(np.uint8), name)
        if name in types:  # another dtype on purpose: the plugin must refuse it by name
            return helper.make_tensor(name, types[name], array.shape, array.astype(np.float32).flatten().tolist())
        return numpy_helper.from_array(array, name)

    def nvfp4(name, rows, cols, lead=()):
        sr, sc = scale_shape(layout, rows, cols)
        return [
            init(name, rng.integers(0, 256, (*lead, rows, cols // 2), dtype=np.uint8).view(np.int8)),
            init(name + "_scale", rng.integers(32, 80, (*lead, sr, sc), dtype=np.uint8).view(np.int8)),
        ]

    inits = [
        *nvfp4("gate_up_weight", 2 * i, h, (e,)),
        init("gate_up_weight_scale_2", np.full((e, 2), 0.01, dtype=np.float32)),
        *nvfp4("down_weight", h, i, (e,)),
        init("down_weight_scale_2", np.full((e,), 0.01, dtype=np.float32)),
    ]
    if w4a4:
        inits += [init("gate_up_input_scale", np.full((e,), 0.02, dtype=np.float32)),
                  init("down_input_scale", np.full((e,), 0.02, dtype=np.float32))]
    for name, (rows, cols) in zip(SHARED_LINEARS, ((shared_i, h), (shared_i, h), (h, shared_i))):
        inits += nvfp4(f"shared_{name}_weight", rows, cols)
        inits.append(init(f"shared_{name}_weight_scale_2", np.array(0.01, dtype=np.float32)))
        if w4a4:
            inits.append(init(f"shared_{name}_input_scale", np.array([0.02], dtype=np.float32)))
    gate_shape = gate_vector_shape or (1, h)
    gate_type = types.get("shared_expert_gate_weight", TensorProto.BFLOAT16)
    inits.append(helper.make_tensor("shared_expert_gate_weight", gate_type, gate_shape,
                                    [0.01 * (k % 7) for k in range(int(np.prod(gate_shape)))]))
    inputs = [
        helper.make_tensor_value_info("hidden", TensorProto.BFLOAT16, ["tokens", h]),
        helper.make_tensor_value_info("router_logits", TensorProto.FLOAT, ["tokens", e]),
    ]
    out = helper.make_tensor_value_info("out", TensorProto.BFLOAT16, ["tokens", h])
    if attrs is None:
        attrs = {"top_k": top_k, "scale_layout": layout, "shared_expert": 1,
                 **({"activation": activation} if activation else {})}
    names = [t.name for t in inputs + inits if t.name not in leave_out]
    return one_node_model(MOE, inputs, [out], attrs, inits, names)


def build_moe_shared(trt, model: bytes, e=8, h=128, max_tokens=4096):
    """An SM120 plan with a dynamic token profile (tests/plugin_builds.py); (plan or None, parser errors)."""
    shapes = {"hidden": [(t, h) for t in (1, 64, max_tokens)], "router_logits": [(t, e) for t in (1, 64, max_tokens)]}
    return build_sm120(trt, model, shapes, aliased_io=False)


@pytest.mark.parametrize(
    "layout, activation, shared_i",
    [
        ("w4a16_fragments", None, 96),  # sm_90 and sm_120 engines (18 inputs)
        ("row_major", None, 96),  # row-major scales
        ("swizzled_128x4", "w4a16", 48),  # swizzled scales: Is and Is/16 padded by the swizzle
        ("swizzled_128x4", "w4a4", 128),  # sm_100 engines: 23 inputs, each shared linear with its input_scale
    ],
)
def test_nvfp4_moe_with_shared_expert_builds_for_sm120(trt, layout, activation, shared_i):
    plan, errors = build_moe_shared(trt, moe_shared_model(layout=layout, activation=activation, shared_i=shared_i))
    assert not errors
    assert plan is not None and len(plan) > 0


def test_nvfp4_moe_shared_gate_vector_may_be_one_dimensional(trt):
    plan, errors = build_moe_shared(trt, moe_shared_model(gate_vector_shape=(128,)))
    assert not errors
    assert plan is not None


@pytest.mark.parametrize(
    "types, message",
    [
        ({"shared_expert_gate_weight": 1}, "shared_expert_gate_weight: expected bf16, got fp32"),  # 1 = FLOAT
        ({"shared_up_weight_scale_2": 16}, "shared_up_weight_scale_2: expected fp32, got bf16"),  # 16 = BFLOAT16
        ({"shared_down_weight": 2}, "shared_down_weight: expected int8, got int32"),  # 2 = UINT8, widened by the parser
    ],
)
def test_moe_builder_refuses_a_shared_input_of_the_wrong_dtype(trt, capfd, types, message):
    plan, _ = build_moe_shared(trt, moe_shared_model(types=types))
    assert plan is None
    assert f"qwen35_trt::{MOE}: {message}" in capfd.readouterr().err


def test_moe_builder_refuses_inconsistent_shared_shapes(trt, capfd):
    plan, _ = build_moe_shared(trt, moe_shared_model(gate_vector_shape=(1, 64)))
    assert plan is None
    assert f"qwen35_trt::{MOE}: shared_expert_gate_weight: expected [H] or [1, H] with H = 128, got [1, 64]" in (
        capfd.readouterr().err
    )


def test_moe_builder_refuses_shared_inputs_that_do_not_match_the_field(trt, capfd):
    # shared_expert = 1 without the w4a4 input scales of the shared linears: the count names what is expected.
    model = moe_shared_model(activation="w4a4", leave_out=("shared_gate_input_scale", "shared_up_input_scale",
                                                            "shared_down_input_scale"))
    plan, _ = build_moe_shared(trt, model)
    assert plan is None
    err = capfd.readouterr().err
    assert f"qwen35_trt::{MOE}: expected 23 inputs (hidden, router_logits, " in err
    assert 'shared_expert_gate_weight; activation "w4a4", shared_expert 1) and 1 output (out), got 20 and 1' in err
    # The shared inputs without the field (default 0): 8 inputs expected.
    plan, _ = build_moe_shared(trt, moe_shared_model(attrs={"top_k": 2, "scale_layout": "row_major"}))
    assert plan is None
    assert 'activation "w4a16", shared_expert 0) and 1 output (out), got 18 and 1' in capfd.readouterr().err


@pytest.mark.parametrize(
    "value, message",
    [
        (2, "field 'shared_expert': expected one integer (INT32) in [0, 1], got 2"),
        (-1, "field 'shared_expert': expected one integer (INT32) in [0, 1], got -1"),
        (1.0, "field 'shared_expert': expected one integer (INT32) in [0, 1], got FLOAT32"),
    ],
)
def test_moe_parser_refuses_a_bad_shared_expert_field(trt, capfd, value, message):
    attrs = {"top_k": 2, "scale_layout": "row_major", "shared_expert": value}
    plan, _ = build_moe_shared(trt, moe_shared_model(attrs=attrs))
    assert plan is None
    assert f"qwen35_trt::{MOE}: {message}" in capfd.readouterr().err
