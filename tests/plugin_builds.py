"""One-node ONNX graphs of a plugin and their SM120 builds in TensorRT-RTX (on the CPU; the builder
calls every build-phase method of the plugin, never enqueue). Shared by the tests/test_plugins_trt*.py
files that use it: load the library once, write the node, build with one optimisation profile.
"""

from __future__ import annotations

import pytest

from qwen35_trt.plugins import plugin_library_path

NAMESPACE = "qwen35_trt"


def tensorrt_with_plugins(plugin: str):
    """``tensorrt_rtx`` with our plugin library loaded (the library is loaded once per process:
    skipped when ``plugin``'s creator is already registered). Skips the test when ``tensorrt_rtx``
    (the test extra) is not installed."""
    trt = pytest.importorskip("tensorrt_rtx", reason="tensorrt_rtx (the test extra) is not installed")
    registry = trt.get_plugin_registry()
    if registry.get_creator(plugin, "1", NAMESPACE) is None:
        assert registry.load_library(str(plugin_library_path())) is not None
    return trt


def one_node_model(op_type: str, inputs, outputs, attrs: dict, initializers=(), node_inputs=None) -> bytes:
    """A serialised ONNX model with one ``op_type`` node of domain ``qwen35_trt``. ``inputs`` and
    ``outputs`` are ValueInfoProtos (helper.make_tensor_value_info), ``initializers`` TensorProtos;
    the node takes ``node_inputs`` (names, in the plugin's order), by default the graph inputs then
    the initialisers."""
    import onnx
    from onnx import helper

    names = node_inputs or [i.name for i in inputs] + [t.name for t in initializers]
    node = helper.make_node(op_type, names, [o.name for o in outputs], domain=NAMESPACE, **attrs)
    graph = helper.make_graph([node], op_type, list(inputs), list(outputs), initializer=list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid(NAMESPACE, 1)])
    return onnx._serialize(model) if hasattr(onnx, "_serialize") else model.SerializeToString()


def build_sm120(trt, model: bytes, profile_shapes: dict, aliased_io: bool = True):
    """Parse ``model`` and build an SM120 plan with one optimisation profile ``{input name: (min,
    opt, max) shapes}``; ``aliased_io`` turns on the preview feature aliased plugin outputs need.
    Returns (plan bytes or None, parser errors)."""
    logger = trt.Logger(trt.Logger.ERROR)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(model):
        return None, [str(parser.get_error(i)) for i in range(parser.num_errors)]
    config = builder.create_builder_config()
    if aliased_io:
        config.set_preview_feature(trt.PreviewFeature.ALIASED_PLUGIN_IO_10_03, True)
    config.num_compute_capabilities = 1
    assert config.set_compute_capability(trt.ComputeCapability.SM120, 0)
    profile = builder.create_optimization_profile()
    for name, (lo, opt, hi) in profile_shapes.items():
        profile.set_shape(name, lo, opt, hi)
    config.add_optimization_profile(profile)
    plan = builder.build_serialized_network(network, config)
    return (bytes(plan) if plan is not None else None), []
