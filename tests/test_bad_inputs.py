"""A corpus of malformed checkpoints derived from the tiny one: each must fail cleanly.

Every case: ``build_engine.py build`` exits 2, the message names the offending tensor, field or
file, and neither the engine directory nor a temporary sibling is left behind.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
from ckpt_tools import copy_checkpoint, edit_json, edit_tensors, reshard
from conftest import run_cli

P = "model.language_model."


def drop(name):
    def fn(ckpt: Path):
        edit_tensors(ckpt, lambda t: t.pop(name))
    return fn


def retype(name, dtype):
    def fn(ckpt: Path):
        def e(t):
            _, shape, raw = t[name]
            t[name] = (dtype, shape, raw)
        edit_tensors(ckpt, e)
    return fn


def reshape(name, shape):
    def fn(ckpt: Path):
        def e(t):
            dtype, _, raw = t[name]
            t[name] = (dtype, shape, raw)
        edit_tensors(ckpt, e)
    return fn


def set_f32(name, value):
    def fn(ckpt: Path):
        def e(t):
            dtype, shape, raw = t[name]
            t[name] = (dtype, shape, np.full(shape, value, np.float32).tobytes())
        edit_tensors(ckpt, e)
    return fn


def set_fp8_byte(name, byte):
    def fn(ckpt: Path):
        def e(t):
            dtype, shape, raw = t[name]
            b = bytearray(raw)
            b[len(b) // 2] = byte
            t[name] = (dtype, shape, bytes(b))
        edit_tensors(ckpt, e)
    return fn


def truncate(ckpt: Path):
    f = ckpt / "model.safetensors"
    f.write_bytes(f.read_bytes()[: f.stat().st_size * 2 // 3])


def corrupt_header(ckpt: Path):
    f = ckpt / "model.safetensors"
    data = bytearray(f.read_bytes())
    data[8:40] = b"#" * 32
    f.write_bytes(bytes(data))


def huge_header_length(ckpt: Path):
    f = ckpt / "model.safetensors"
    data = bytearray(f.read_bytes())
    data[:8] = struct.pack("<Q", 1 << 40)
    f.write_bytes(bytes(data))


def broken_config(ckpt: Path):
    (ckpt / "config.json").write_text('{"model_type": "qwen3_5_moe_text", "hidden_size": 128,,}')


def quant(field, value):
    def fn(ckpt: Path):
        edit_json(ckpt / "hf_quant_config.json", lambda d: d["quantization"].__setitem__(field, value))
    return fn


def config(field, value=None, delete=False):
    def fn(ckpt: Path):
        def e(d):
            if delete:
                d.pop(field)
            else:
                d[field] = value
        edit_json(ckpt / "config.json", e)
    return fn


def shard_index_missing_file(ckpt: Path):
    files = reshard(ckpt, 2)
    (ckpt / files[1]).unlink()


def same_tensor_in_two_shards(ckpt: Path):
    from ckpt_tools import load_raw, write_raw

    files = reshard(ckpt, 2)
    a, b = load_raw(ckpt / files[0]), load_raw(ckpt / files[1])
    dup = next(iter(a))
    b[dup] = a[dup]
    write_raw(ckpt / files[1], b)


def fp8_per_tensor(ckpt: Path):
    name = P + "layers.3.self_attn.o_proj"

    def e(t):
        dtype, (n, half), raw = t[name + ".weight"]
        t[name + ".weight"] = ("F8_E4M3", (n, half * 2), raw + raw)
        t.pop(name + ".weight_scale")
        t[name + ".weight_scale"] = ("F32", (), np.float32(0.01).tobytes())
    edit_tensors(ckpt, e)


def extra_expert(ckpt: Path):
    def e(t):
        for role in ("weight", "weight_scale", "weight_scale_2", "input_scale"):
            for proj in ("gate_proj", "up_proj", "down_proj"):
                t[f"{P}layers.0.mlp.experts.8.{proj}.{role}"] = t[f"{P}layers.0.mlp.experts.7.{proj}.{role}"]
    edit_tensors(ckpt, e)


QKV = P + "layers.1.linear_attn.in_proj_qkv"
CASES = {
    "missing_tensor": (drop(P + "layers.1.linear_attn.in_proj_z.weight_scale"), [P + "layers.1.linear_attn.in_proj_z.weight_scale", "missing"]),
    "missing_norm": (drop(P + "layers.2.post_attention_layernorm.weight"), [P + "layers.2.post_attention_layernorm.weight"]),
    "wrong_dtype_weight": (retype(P + "layers.0.mlp.shared_expert.up_proj.weight", "I8"), [P + "layers.0.mlp.shared_expert.up_proj.weight", "I8"]),
    "wrong_dtype_scale": (retype(QKV + ".weight_scale", "U8"), [QKV + ".weight_scale", "F8_E4M3"]),
    "wrong_shape": (reshape(P + "layers.3.self_attn.k_proj.weight", (32, 128)), [P + "layers.3.self_attn.k_proj.weight", "[32, 128]"]),
    "wrong_shape_param": (reshape(P + "layers.0.linear_attn.conv1d.weight", (128, 2, 4)), [P + "layers.0.linear_attn.conv1d.weight", "[128, 2, 4]"]),
    "truncated_safetensors": (truncate, ["model.safetensors", "truncated"]),
    "corrupt_safetensors_header": (corrupt_header, ["model.safetensors", "corrupt safetensors header"]),
    "header_length_beyond_file": (huge_header_length, ["model.safetensors", "header length"]),
    "broken_config_json": (broken_config, ["config.json", "invalid JSON"]),
    "missing_config_json": (lambda c: (c / "config.json").unlink(), ["config.json", "missing"]),
    "quant_algo_fp8": (quant("quant_algo", "FP8"), ["quant_algo", "'FP8'"]),
    "quant_algo_mixed": (quant("quant_algo", "MIXED_PRECISION"), ["quant_algo", "not yet supported"]),
    "group_size_32": (quant("group_size", 32), ["group_size", "32"]),
    "nan_global_scale": (set_f32(QKV + ".weight_scale_2", np.nan), [QKV + ".weight_scale_2", "finite"]),
    "negative_input_scale": (set_f32(P + "layers.3.self_attn.q_proj.input_scale", -0.5), [P + "layers.3.self_attn.q_proj.input_scale", "> 0"]),
    "zero_global_scale": (set_f32(P + "layers.2.mlp.experts.5.down_proj.weight_scale_2", 0.0), ["layers.2.mlp.experts.5.down_proj.weight_scale_2", "> 0"]),
    "nan_block_scale": (set_fp8_byte(P + "layers.0.linear_attn.out_proj.weight_scale", 0x7F), [P + "layers.0.linear_attn.out_proj.weight_scale", "NaN"]),
    "negative_block_scale": (set_fp8_byte(P + "layers.1.mlp.experts.3.gate_proj.weight_scale", 0xB8), ["layers.1.mlp.experts.3.gate_proj.weight_scale", "negative"]),
    "missing_config_field": (config("hidden_size", delete=True), ["hidden_size", "missing"]),
    "bad_config_field": (config("num_experts_per_tok", 0), ["num_experts_per_tok"]),
    "unknown_model_type": (config("model_type", "llama"), ["model_type", "'llama'"]),
    "layer_types_length": (config("layer_types", ["linear_attention"] * 3), ["layer_types", "4 entries"]),
    "shard_index_missing_file": (shard_index_missing_file, ["model-00002-of-00002.safetensors", "does not exist"]),
    "same_tensor_in_two_shards": (same_tensor_in_two_shards, ["appears in two shards", "model-00001-of-00002.safetensors"]),
    "fp8_per_tensor_linear": (fp8_per_tensor, [P + "layers.3.self_attn.o_proj.weight", "FP8 per-tensor", "not yet supported"]),
    "expert_beyond_num_experts": (extra_expert, ["layers.0.mlp.experts.8.", "num_experts=8"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_checkpoint_is_rejected(case, tiny_default, tmp_path):
    mutate, expected = CASES[case]
    ckpt = copy_checkpoint(tiny_default[0], tmp_path / "ckpt")
    mutate(ckpt)
    out = tmp_path / "engines" / "bad"
    r = run_cli("build", str(ckpt), "--output", str(out), "--quiet")
    assert r.returncode == 2, f"exit {r.returncode}\nstdout:\n{r.stdout}\nstderr:\n{r.stderr}"
    msg = r.stderr
    assert msg.startswith("error: "), msg
    for s in expected:
        assert s in msg, f"{s!r} not in message: {msg}"
    assert "Traceback" not in msg
    assert not out.exists()
    leftovers = list(out.parent.iterdir()) if out.parent.exists() else []
    assert leftovers == [], f"left behind: {leftovers}"


def test_inspect_rejects_header_errors_too(tiny_default, tmp_path):
    ckpt = copy_checkpoint(tiny_default[0], tmp_path / "ckpt")
    drop(P + "layers.3.self_attn.q_norm.weight")(ckpt)
    r = run_cli("inspect", str(ckpt))
    assert r.returncode == 2 and P + "layers.3.self_attn.q_norm.weight" in r.stderr


def test_output_path_errors(tiny_default, tmp_path):
    f = tmp_path / "a_file"
    f.write_text("x")
    r = run_cli("build", str(tiny_default[0]), "--output", str(f), "--force", "--quiet")
    assert r.returncode == 2 and "not a directory" in r.stderr and f.read_text() == "x"
    r = run_cli("build", str(tmp_path / "nope"), "--output", str(tmp_path / "e"), "--quiet")
    assert r.returncode == 2 and "nope" in r.stderr and not (tmp_path / "e").exists()
    r = run_cli("build", str(tiny_default[0]), "--output", str(tmp_path / "e"), "--target", "sm_80")
    assert r.returncode == 2 and "--target" in r.stderr
