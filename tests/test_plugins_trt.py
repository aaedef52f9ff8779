"""The plugin library in a real TensorRT builder: TensorRT-RTX parses one-node ONNX graphs into our
IPluginV3 plugins and builds SM120 engines on the CPU (it calls every build-phase method, never
enqueue). Also: the library links no TensorRT library and exports only its two entry points, and the
documented fields match the creator's.

Skipped (with the reason) when ``tensorrt_rtx`` cannot be imported, or when this build has no CUDA
kernels (then there is no plugin library).
"""

import struct
from pathlib import Path

import pytest

from qwen35_trt import _C
from qwen35_trt.plugins import plugin_library_path

from plugin_builds import NAMESPACE, build_sm120, one_node_model, tensorrt_with_plugins

REPO = Path(__file__).resolve().parents[1]
CONV = "Qwen35CausalConv1d"
GDN = "Qwen35GatedDeltaNet"
LINEAR = "Qwen35Nvfp4Linear"
MOE = "Qwen35Nvfp4MoE"
ATTENTION = "Qwen35GatedAttention"

pytestmark = pytest.mark.skipif(
    not _C.build_info()["cuda_architectures"], reason="built without CUDA: no plugin library"
)


# --- ELF: no link dependency on TensorRT --------------------------------------------------------


def elf_dynamic(path: Path) -> tuple[list[str], set[str]]:
    """(DT_NEEDED entries, defined global symbols of .dynsym) of a 64-bit little-endian ELF shared
    object, read without binutils."""
    data = path.read_bytes()
    assert data[:4] == b"\x7fELF" and data[4] == 2 and data[5] == 1, f"{path}: not a 64-bit little-endian ELF"
    (shoff,) = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    sections = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]

    def string(strtab: int, offset: int) -> str:
        start = sections[strtab][4] + offset
        return data[start : data.index(b"\0", start)].decode()

    needed, exported = [], set()
    for _name, sh_type, _flags, _addr, offset, size, link, _info, _align, entsize in sections:
        if sh_type == 6:  # SHT_DYNAMIC: (tag, value) pairs up to DT_NULL
            for pos in range(offset, offset + size, entsize):
                tag, value = struct.unpack_from("<qQ", data, pos)
                if tag == 0:
                    break
                if tag == 1:  # DT_NEEDED
                    needed.append(string(link, value))
        elif sh_type == 11:  # SHT_DYNSYM
            for pos in range(offset, offset + size, entsize):
                st_name, st_info, _other, st_shndx = struct.unpack_from("<IBBH", data, pos)
                if st_shndx != 0 and (st_info >> 4) in (1, 2):  # defined, GLOBAL or WEAK
                    exported.add(string(link, st_name))
    return needed, exported


def test_plugin_library_links_no_tensorrt():
    needed, _ = elf_dynamic(plugin_library_path())
    assert "libc.so.6" in needed  # the parser found the dynamic section
    bad = [n for n in needed if n.startswith(("libnvinfer", "libtensorrt", "libcudart.so", "libpython"))]
    assert not bad, f"the plugin library must not need {bad} (needs {needed})"


def test_plugin_library_path_takes_an_override(monkeypatch, tmp_path):
    """QWEN35_TRT_PLUGIN_LIBRARY names a library to use instead of the installed one."""
    from qwen35_trt.plugins import PLUGIN_LIBRARY_ENV

    other = tmp_path / "libother.so"
    other.write_bytes(b"")
    monkeypatch.setenv(PLUGIN_LIBRARY_ENV, str(other))
    assert plugin_library_path() == other
    monkeypatch.setenv(PLUGIN_LIBRARY_ENV, str(tmp_path / "missing.so"))
    with pytest.raises(FileNotFoundError, match=PLUGIN_LIBRARY_ENV):
        plugin_library_path()


def test_plugin_library_exports_only_the_entry_points():
    _, exported = elf_dynamic(plugin_library_path())
    assert exported == {"getCreators", "setLoggerFinder"}


# --- TensorRT-RTX --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trt():
    return tensorrt_with_plugins(CONV)


def conv_model(width=4, channels=64, x_type=None, attrs=None):
    """One Qwen35CausalConv1d node: dynamic tokens, sequences and slots; the pool output aliases the
    pool input (docs/plugins.md)."""
    from onnx import TensorProto, helper

    bf16 = TensorProto.BFLOAT16
    inputs = [
        helper.make_tensor_value_info("x", x_type or bf16, ["tokens", channels]),
        helper.make_tensor_value_info("weight", bf16, [channels, width]),
        helper.make_tensor_value_info("conv_state_pool", bf16, ["num_slots", channels, width - 1]),
        helper.make_tensor_value_info("slots", TensorProto.INT32, ["batch"]),
        helper.make_tensor_value_info("cu_seqlens", TensorProto.INT32, ["batch_plus_1"]),
        helper.make_tensor_value_info("has_initial_state", TensorProto.BOOL, ["batch"]),
    ]
    outputs = [
        helper.make_tensor_value_info("y", bf16, ["tokens", channels]),
        helper.make_tensor_value_info("conv_state_pool_out", bf16, ["num_slots", channels, width - 1]),
    ]
    return one_node_model(CONV, inputs, outputs, {"width": width} if attrs is None else attrs)


def build(trt, model: bytes, width=4, channels=64):
    """Parse and build for SM120; returns (engine bytes or None, parser errors)."""
    shapes = {
        "x": ((1, channels), (256, channels), (8192, channels)),
        "conv_state_pool": ((1, channels, width - 1), (64, channels, width - 1), (256, channels, width - 1)),
    }
    for name, lo, opt, hi in (("slots", 1, 8, 256), ("cu_seqlens", 2, 9, 257), ("has_initial_state", 1, 8, 256)):
        shapes[name] = ((lo,), (opt,), (hi,))
    return build_sm120(trt, model, shapes)


@pytest.mark.parametrize("width", [2, 4, 8])
def test_causal_conv1d_builds_for_sm120(trt, width):
    plan, errors = build(trt, conv_model(width=width), width=width)
    assert not errors
    assert plan is not None and len(plan) > 0


def test_causal_conv1d_35b_channels_builds(trt):
    plan, errors = build(trt, conv_model(channels=8192), channels=8192)
    assert not errors and plan is not None


def test_builder_refuses_unsupported_input_dtype(trt, capfd):
    from onnx import TensorProto

    plan, errors = build(trt, conv_model(x_type=TensorProto.FLOAT16))
    assert plan is None, "an fp16 x must not build"
    assert "x: expected bf16, got fp16" in capfd.readouterr().err


def test_builder_refuses_unknown_plugin_version(trt):
    plan, errors = build(trt, conv_model(attrs={"width": 4, "plugin_version": "2"}))
    assert plan is None and errors, "version 2 of the plugin does not exist"


@pytest.mark.parametrize(
    "attrs, message",
    [
        ({}, "field 'width': missing"),
        ({"width": 9}, "field 'width': expected one integer (INT32) in [2, 8], got 9"),
        ({"width": 4.0}, "field 'width': expected one integer (INT32) in [2, 8], got FLOAT32"),
        ({"width": 4, "activation": "relu"}, "field 'activation': expected a string (CHAR) of \"silu\", got \"relu\""),
    ],
)
def test_parser_refuses_bad_fields_with_named_errors(trt, capfd, attrs, message):
    plan, errors = build(trt, conv_model(attrs=attrs))
    assert plan is None
    assert f"qwen35_trt::{CONV}: {message}" in capfd.readouterr().err


@pytest.mark.parametrize("plugin", [CONV, GDN, LINEAR, MOE, ATTENTION])
def test_documented_fields_match_the_creator(trt, plugin):
    """docs/plugins.md's field table for each plugin lists exactly the creator's fields and types."""
    creator = trt.get_plugin_registry().get_creator(plugin, "1", NAMESPACE)
    assert creator is not None, f"the library has no creator {plugin}"
    got = {(f.name, str(f.type).split(".")[-1]) for f in creator.field_names}
    text = (REPO / "docs" / "plugins.md").read_text()
    section = text.split(f"### {plugin}", 1)[1].split("\n### ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| field `")]
    documented = set()
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        documented.add((cells[0].removeprefix("field `").removesuffix("`"), cells[1]))
    assert documented == got
