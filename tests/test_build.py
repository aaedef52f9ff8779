"""build_engine.py inspect/build on both tiny variants, and the repack round trip."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from ckpt_tools import copy_checkpoint, edit_json, edit_tensors, load_raw, reshard, write_raw
from conftest import run_cli

from qwen35_trt import _C, nvfp4
from qwen35_trt.checkpoint import Experts, Linear, Param, open_checkpoint
from qwen35_trt.safetensors_io import SafetensorsFile, read_tensor

P = "model.language_model."


def expected_counts(cfg: dict, ab_nvfp4: bool) -> dict[str, int]:
    """Linear modules by format, counted from the config (independently of the reader)."""
    n_lin = sum(t == "linear_attention" for t in cfg["layer_types"])
    n_full = cfg["num_hidden_layers"] - n_lin
    per_layer_moe_nvfp4 = 3 * cfg["num_experts"] + 3  # routed experts + shared expert
    nvfp4 = n_lin * (3 + (2 if ab_nvfp4 else 0)) + n_full * 4 + cfg["num_hidden_layers"] * per_layer_moe_nvfp4
    bf16 = n_lin * (0 if ab_nvfp4 else 2) + cfg["num_hidden_layers"] * 2 + 1  # router, shared gate; lm_head
    return {"bf16": bf16, "nvfp4": nvfp4}


def test_help_on_every_command():
    for args in ([], ["inspect"], ["build"]):
        r = run_cli(*args, "--help")
        assert r.returncode == 0 and "usage:" in r.stdout


def test_inspect_json(tiny_any):
    ckpt, _ = tiny_any
    r = run_cli("inspect", str(ckpt), "--json")
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    cfg = json.loads((ckpt / "config.json").read_text())
    ab = "in_proj_a" not in json.dumps(json.loads((ckpt / "hf_quant_config.json").read_text()))
    assert s["model_type"] == "qwen3_5_moe_text"
    assert s["num_layers"] == 4
    assert s["layer_types"] == {"linear_attention": 3, "full_attention": 1}
    assert (s["num_experts"], s["top_k"]) == (8, 2)
    assert (s["quant_algo"], s["group_size"]) == ("NVFP4", 16)
    assert s["modules"] == expected_counts(cfg, ab)
    assert s["skipped"] == [] and s["tokenizer"] is True
    assert set(s["bytes_by_dtype"]) == {"BF16", "F32", "F8_E4M3", "U8"}
    r = run_cli("inspect", str(ckpt))
    assert r.returncode == 0 and "top-2" in r.stdout and "tokenizer.json" in r.stdout


def _modelopt_order(codes: np.ndarray, scales: np.ndarray, n: int, k: int, layout: str) -> tuple[np.ndarray, np.ndarray]:
    """An engine's NVFP4 weight back in ModelOpt's form, through the C++ codecs (not the writer's)."""
    if layout == "swizzled_128x4":
        return codes, nvfp4.unswizzle_scales_128x4(scales, n, k // 16)
    if layout == "w4a16_fragments":
        return _C.unpack_w4a16_fragments(np.ascontiguousarray(codes), np.ascontiguousarray(scales))
    return codes, scales


def _dequant_engine(t: dict, name: str, n: int, k: int, layout: str) -> np.ndarray:
    codes, scales = _modelopt_order(t[f"{name}.weight"], t[f"{name}.weight_scale"], n, k, layout)
    return nvfp4.dequantize(codes, scales, float(t[f"{name}.weight_scale_2"]))


def _engine_tensors(engine: Path) -> dict[str, np.ndarray]:
    f = SafetensorsFile(engine / "weights.safetensors")
    return {n: read_tensor(i) for n, i in f.tensors.items()}


@pytest.mark.parametrize("target", ["sm_90", "sm_100"])
def test_build_round_trip(tiny_any, tmp_path, target):
    ckpt_dir, _ = tiny_any
    out = tmp_path / "engines" / "tiny"
    r = run_cli("build", str(ckpt_dir), "--output", str(out), "--target", target)
    assert r.returncode == 0, r.stderr
    assert "peak RSS" in r.stdout and "time" in r.stdout
    assert sorted(p.name for p in out.parent.iterdir()) == ["tiny"]  # no temporary left
    m = json.loads((out / "manifest.json").read_text())
    for f in m["files"]:
        data = (out / f["name"]).read_bytes()
        assert len(data) == f["size"] and hashlib.sha256(data).hexdigest() == f["sha256"]
    assert {f["name"] for f in m["files"]} >= {"weights.safetensors", "tokenizer.json", "tokenizer_config.json"}
    assert m["targets"] == [target] and m["format_version"] == 1
    layout = m["layout"]["scale_layout"]
    assert layout == {"sm_90": "w4a16_fragments", "sm_100": "swizzled_128x4"}[target]
    assert m["layout"]["weights"] == "qwen35_trt.v3"

    ckpt = open_checkpoint(ckpt_dir)
    eng = _engine_tensors(out)
    claimed = set()
    for mod in ckpt.modules():
        if isinstance(mod, Param):
            np.testing.assert_array_equal(eng[mod.spec.name], read_tensor(mod.tensor))
            claimed.add(mod.spec.name)
        elif isinstance(mod, Linear):
            name, n, k = mod.spec.name, mod.spec.out_features, mod.spec.in_features
            info = m["quantization"]["modules"][name]
            src = {r: read_tensor(i) for r, i in mod.tensors.items()}
            if mod.fmt == "bf16":
                np.testing.assert_array_equal(eng[f"{name}.weight"], src["weight"])
                assert info["compute"] == "bf16"
                claimed.add(f"{name}.weight")
                continue
            want = nvfp4.dequantize(src["weight"], src["weight_scale"], float(src["weight_scale_2"]))
            np.testing.assert_array_equal(_dequant_engine(eng, name, n, k, layout), want, err_msg=name)
            np.testing.assert_array_equal(eng[f"{name}.input_scale"], src["input_scale"].reshape(()))
            assert info["compute"] == ("w4a4" if target == "sm_100" else "w4a16")
            claimed |= {f"{name}.{r}" for r in ("weight", "weight_scale", "weight_scale_2", "input_scale")}
        else:
            # Fused layout: gate_up_proj [E, 2I, H/2] (gate rows first, weight_scale_2 [E, 2]),
            # down_proj [E, H, I/2]; each expert's dequantized weights equal the checkpoint's.
            assert isinstance(mod, Experts) and mod.storage == "per_expert"
            info = m["quantization"]["modules"][mod.spec.name]
            assert info["layout"] == "fused_gate_up" and info["gate_up_input_scales_differ"] == 0
            I, H = mod.spec.intermediate_size, mod.spec.hidden_size
            gu, dn = f"{mod.spec.name}.gate_up_proj", f"{mod.spec.name}.down_proj"
            assert eng[f"{gu}.weight"].shape == (mod.spec.num_experts, 2 * I, H // 2)
            assert eng[f"{gu}.weight_scale_2"].shape == (mod.spec.num_experts, 2)
            for e in range(mod.spec.num_experts):
                fused_codes, fused_scales = _modelopt_order(eng[f"{gu}.weight"][e], eng[f"{gu}.weight_scale"][e], 2 * I, H, layout)
                down = {f"{dn}.weight": eng[f"{dn}.weight"][e], f"{dn}.weight_scale": eng[f"{dn}.weight_scale"][e],
                        f"{dn}.weight_scale_2": eng[f"{dn}.weight_scale_2"][e]}
                for proj, lins in mod.per_expert.items():
                    src = {r: read_tensor(i) for r, i in lins[e].tensors.items()}
                    want = nvfp4.dequantize(src["weight"], src["weight_scale"], float(src["weight_scale_2"]))
                    if proj == "down_proj":
                        got = _dequant_engine(down, dn, H, I, layout)
                        assert eng[f"{dn}.input_scale"][e] == src["input_scale"]
                    else:
                        half = 0 if proj == "gate_proj" else 1
                        s2 = eng[f"{gu}.weight_scale_2"][e, half]
                        assert s2 == src["weight_scale_2"]
                        rows = slice(half * I, (half + 1) * I)
                        got = nvfp4.dequantize(fused_codes[rows], fused_scales[rows], float(s2))
                        assert eng[f"{gu}.input_scale"][e] == src["input_scale"]
                    np.testing.assert_array_equal(got, want, err_msg=f"{mod.spec.name}.{proj}[{e}]")
            claimed |= {f"{p}.{r}" for p in (gu, dn) for r in ("weight", "weight_scale", "weight_scale_2", "input_scale")}
    assert claimed == set(eng), f"unexpected engine tensors: {sorted(set(eng) - claimed)[:5]}"


def test_build_refuses_overwrite_without_force(tiny_default, tmp_path):
    out = tmp_path / "eng"
    assert run_cli("build", str(tiny_default[0]), "-o", str(out), "--quiet").returncode == 0
    sha = json.loads((out / "manifest.json").read_text())["files"][0]["sha256"]
    r = run_cli("build", str(tiny_default[0]), "-o", str(out), "--quiet")
    assert r.returncode == 2 and "--force" in r.stderr
    r = run_cli("build", str(tiny_default[0]), "-o", str(out), "--quiet", "--force")
    assert r.returncode == 0
    assert json.loads((out / "manifest.json").read_text())["files"][0]["sha256"] == sha  # deterministic
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eng"]


def _weights_sha(ckpt: Path, out: Path) -> str:
    r = run_cli("build", str(ckpt), "-o", str(out), "--quiet", "--target", "sm_100")
    assert r.returncode == 0, r.stderr
    return json.loads((out / "manifest.json").read_text())["files"][0]["sha256"]


def test_sharded_fused_and_multimodal_forms_build_identically(tiny_default, tmp_path):
    """Sharding, fused 3-D experts and the full multimodal config give the same engine weights."""
    base = _weights_sha(tiny_default[0], tmp_path / "e0")

    sharded = copy_checkpoint(tiny_default[0], tmp_path / "sharded")
    assert len(reshard(sharded, 3)) == 3
    assert _weights_sha(sharded, tmp_path / "e1") == base

    fused = copy_checkpoint(tiny_default[0], tmp_path / "fused")

    def fuse(t):
        for layer in range(4):
            pre = f"{P}layers.{layer}.mlp.experts"
            for src, projs in (("gate_up_proj", ("gate_proj", "up_proj")), ("down_proj", ("down_proj",))):
                for role in ("weight", "weight_scale"):
                    parts = []
                    for e in range(8):
                        for proj in projs:
                            parts.append(t.pop(f"{pre}.{e}.{proj}.{role}"))
                    dtype, shape = parts[0][0], parts[0][1]
                    rows = shape[0] * len(projs)
                    t[f"{pre}.{src}" + ("" if role == "weight" else f"_{role}")] = (dtype, (8, rows, shape[1]), b"".join(p[2] for p in parts))
                for role in ("weight_scale_2", "input_scale"):
                    vals = [t.pop(f"{pre}.{e}.{proj}.{role}") for e in range(8) for proj in projs]
                    per_expert = [vals[i * len(projs)] for i in range(8)]
                    assert all(vals[i] == per_expert[i // len(projs)] for i in range(len(vals)) if role == "weight_scale_2")
                    t[f"{pre}.{src}_{role}"] = ("F32", (8,), b"".join(v[2] for v in per_expert))

    edit_tensors(fused, fuse)
    assert open_checkpoint(fused).layers[1][1][-5].storage == "fused"
    assert _weights_sha(fused, tmp_path / "e2") == base

    mm = copy_checkpoint(tiny_default[0], tmp_path / "multimodal")

    def wrap(d):
        text = {k: v for k, v in d.items() if k not in ("architectures", "quantization_config")}
        text["model_type"] = "qwen3_5_moe_text"
        for k in list(d):
            if k not in ("architectures", "quantization_config", "transformers_version"):
                d.pop(k)
        d.update(model_type="qwen3_5_moe", text_config=text, vision_config={"depth": 1})

    edit_json(mm / "config.json", wrap)

    def add_extras(t):
        t["model.visual.blocks.0.attn.qkv.weight"] = ("BF16", (4, 4), bytes(32))
        t["mtp.layers.0.input_layernorm.weight"] = ("BF16", (128,), bytes(256))
        t["mtp.fc.weight"] = ("BF16", (4, 4), bytes(32))

    edit_tensors(mm, add_extras)
    r = run_cli("inspect", str(mm), "--json")
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["model_type"] == "qwen3_5_moe" and s["skipped"] == ["model.visual", "mtp"]
    assert s["skipped_tensors"] == {"model.visual": 1, "mtp": 2}
    assert _weights_sha(mm, tmp_path / "e3") == base


def test_reader_refuses_a_v2_engine(tiny_engines, request, tmp_path):
    """Engines written before the W4A16 fragment layout (weights layout v2) are refused with a
    message that says to rebuild them."""
    import shutil

    from qwen35_trt.engine import EngineDir
    from qwen35_trt.errors import UserInputError

    _, engine = tiny_engines.get_engine(request, "default")
    old = tmp_path / "old"
    shutil.copytree(engine, old)
    manifest = json.loads((old / "manifest.json").read_text())
    manifest["layout"]["weights"] = "qwen35_trt.v2"
    (old / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(UserInputError, match=r"engine weights layout 'qwen35_trt\.v2' is not supported \(expected "
                                             r"'qwen35_trt\.v3'\); rebuild it with build_engine\.py build"):
        EngineDir(old)
    r = subprocess_generate(old)
    assert r.returncode == 2 and "rebuild it with build_engine.py build" in r.stderr


def subprocess_generate(engine: Path):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "qwen35_trt", "generate", str(engine), "--prompt-ids", "1,2", "--max-new-tokens", "1"],
                          capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])


def test_reader_gives_modelopt_order_for_a_fragment_engine(tiny_engines, request):
    """load_weights() of an sm_90 engine (w4a16_fragments) returns the checkpoint's own codes and
    E4M3 scales; load_weights("w4a16_fragments") the stored bytes."""
    import torch

    from qwen35_trt.engine import EngineDir

    ckpt_dir, engine_dir = tiny_engines.get_engine(request, "default")
    engine = EngineDir(engine_dir)
    assert engine.scale_layout == "w4a16_fragments"
    w = engine.load_weights()
    stored = engine.load_weights("w4a16_fragments")
    with pytest.raises(ValueError, match="scale_layout"):
        engine.load_weights("swizzled_128x4")
    ckpt = open_checkpoint(ckpt_dir)
    checked = 0
    for mod in ckpt.modules():
        if isinstance(mod, Linear) and mod.fmt == "nvfp4":
            src = ckpt.load_linear(mod)
            name = mod.spec.name
            np.testing.assert_array_equal(w[f"{name}.weight"].numpy(), src["weight"], err_msg=name)
            np.testing.assert_array_equal(w[f"{name}.weight_scale"].numpy(), src["weight_scale"], err_msg=name)
            assert not torch.equal(stored[f"{name}.weight"], w[f"{name}.weight"]) or src["weight"].shape[-1] < 32
            checked += 1
        elif isinstance(mod, Experts) and mod.fmt == "nvfp4":
            down = ckpt.load_experts(mod, "down_proj")
            d = f"{mod.spec.name}.down_proj"
            np.testing.assert_array_equal(w[f"{d}.weight"].numpy(), down["weight"])
            np.testing.assert_array_equal(w[f"{d}.weight_scale"].numpy(), down["weight_scale"])
            checked += 1
    assert checked > 5
    assert list(w) == list(stored)
