"""Synthetic full-dimension checkpoints (qwen35_trt.testing.synthetic) and the conversion benchmark.

The generator must produce what ModelOpt produces (same files, names, dtypes, shapes, quant
blocks as a real tiny export), what the reader accepts, and what the builder converts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT, run_cli

from qwen35_trt.checkpoint import Experts, Linear, open_checkpoint
from qwen35_trt.safetensors_io import SafetensorsFile, read_tensor
from qwen35_trt.testing.synthetic import (
    FULL_TEXT_CONFIG,
    assign_shards,
    float32_to_bf16_bits,
    make_synthetic_checkpoint,
    plan_tensors,
    synthetic_config,
    tiny_overrides,
)
from qwen35_trt.testing.tiny_checkpoint import TINY_BASE

SHARD = 64 << 10  # small enough that the tiny 2-layer checkpoint needs several shards


@pytest.fixture(scope="module")
def small_ckpt(tmp_path_factory):
    return make_synthetic_checkpoint(tmp_path_factory.mktemp("synthetic") / "ckpt", overrides=tiny_overrides(), shard_bytes=SHARD)


def test_small_checkpoint_opens_with_expected_modules(small_ckpt):
    ckpt = open_checkpoint(small_ckpt)
    cfg = ckpt.config
    assert cfg.layer_types == ("linear_attention", "full_attention")
    assert (cfg.hidden_size, cfg.vocab_size, cfg.num_experts) == (128, 512, 8)
    # counted from the config, not from the reader: per layer 3*E routed + 3 shared NVFP4
    # projections and router + shared gate BF16; GDN adds qkv/z/out NVFP4 and a/b BF16,
    # attention adds q/k/v/o NVFP4; plus lm_head BF16.
    E = cfg.num_experts
    assert ckpt.module_formats() == {"nvfp4": 2 * (3 * E + 3) + 3 + 4, "bf16": 2 * 2 + 2 + 1}
    assert ckpt.unused == [] and ckpt.skipped == {}
    assert ckpt.quant.quant_algo == "NVFP4" and ckpt.quant.producer == {"name": "modelopt", "version": "0.47.0"}
    assert len(ckpt.files) >= 2
    index = json.loads((small_ckpt / "model.safetensors.index.json").read_text())
    assert index["metadata"]["total_size"] == sum(t.nbytes for t in ckpt.tensors.values())
    assert set(index["weight_map"]) == set(ckpt.tensors)
    n = len(ckpt.files)
    assert sorted(f.path.name for f in ckpt.files) == [f"model-{i:05d}-of-{n:05d}.safetensors" for i in range(1, n + 1)]


def test_values_are_valid_nvfp4_and_share_scales_like_an_export(small_ckpt):
    ckpt = open_checkpoint(small_ckpt)
    for m in ckpt.modules():  # load_* checks every scale is finite and positive
        if isinstance(m, Linear):
            ckpt.load_linear(m)
        elif isinstance(m, Experts):
            for proj in ("gate_proj", "up_proj", "down_proj"):
                ckpt.load_experts(m, proj)
    T = ckpt.tensors

    def val(name):
        return float(read_tensor(T["model.language_model." + name]).reshape(()))

    for L, group in ((0, ("linear_attn.in_proj_qkv", "linear_attn.in_proj_z")), (1, ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"))):
        for role in ("input_scale", "weight_scale_2"):
            assert len({val(f"layers.{L}.{m}.{role}") for m in group}) == 1, (L, group, role)
    p = "layers.0.mlp."
    assert val(p + "experts.3.gate_proj.weight_scale_2") == val(p + "experts.3.up_proj.weight_scale_2")
    assert val(p + "experts.3.gate_proj.weight_scale_2") != val(p + "experts.4.gate_proj.weight_scale_2")
    gate_inputs = {val(f"{p}experts.{e}.{q}.input_scale") for e in range(8) for q in ("gate_proj", "up_proj")}
    assert gate_inputs == {val(p + "shared_expert.gate_proj.input_scale")}
    assert len({val(f"{p}experts.{e}.down_proj.input_scale") for e in range(8)}) == 1
    scales = read_tensor(T["model.language_model.layers.0.linear_attn.out_proj.weight_scale"])
    assert scales.min() >= 0x40 and scales.max() <= 0x7E  # E4M3 exponent 8..15, never NaN
    emb = read_tensor(T["model.language_model.embed_tokens.weight"]).astype(np.uint32) << 16
    x = emb.view(np.float32)
    assert abs(float(x.std()) - 0.02) < 0.002 and abs(float(x.mean())) < 0.002


def test_matches_a_real_modelopt_export(tiny_default, tmp_path):
    """Same config, quant blocks, tensor names, dtypes and shapes as ModelOpt 0.47's own export."""
    real = tiny_default[0]
    syn = make_synthetic_checkpoint(tmp_path / "syn", layer_types=TINY_BASE["layer_types"], overrides=tiny_overrides(), shard_bytes=SHARD)
    assert json.loads((syn / "hf_quant_config.json").read_text()) == json.loads((real / "hf_quant_config.json").read_text())
    ours, theirs = (json.loads((d / "config.json").read_text()) for d in (syn, real))
    for ids in ("eos_token_id", "pad_token_id"):  # the real fixture's come from its tokenizer
        ours.pop(ids), theirs.pop(ids)
    assert ours == theirs

    def tensors(d):
        out = {}
        for p in d.glob("*.safetensors"):
            f = SafetensorsFile(p)
            assert f.metadata == {"format": "pt"}
            out.update({n: (t.dtype, t.shape) for n, t in f.tensors.items()})
        return out

    assert tensors(syn) == tensors(real)


def test_file_order_sharding_and_determinism(tmp_path):
    cfg = synthetic_config(overrides=tiny_overrides())
    planned = plan_tensors(cfg)
    shards = assign_shards(planned, SHARD)
    assert [t.spec.name for s in shards for t in s] != [t.spec.name for t in planned]  # reordered inside files
    assert sorted(t.spec.name for s in shards for t in s) == sorted(t.spec.name for t in planned)
    for s in shards:  # safetensors' order: F32, BF16, F8_E4M3, U8, each by name
        ranks = [("F32", "BF16", "F8_E4M3", "U8").index(t.spec.dtype) for t in s]
        assert ranks == sorted(ranks)
        assert len(s) == 1 or sum(t.spec.nbytes for t in s) <= SHARD
    a = make_synthetic_checkpoint(tmp_path / "a", overrides=tiny_overrides(), shard_bytes=SHARD)
    b = make_synthetic_checkpoint(tmp_path / "b", overrides=tiny_overrides(), shard_bytes=1 << 30)
    assert not (b / "model.safetensors.index.json").exists() and (b / "model.safetensors").is_file()
    ta, tb = open_checkpoint(a).tensors, open_checkpoint(b).tensors
    name = "model.language_model.layers.1.mlp.experts.5.down_proj.weight"
    assert np.array_equal(read_tensor(ta[name]), read_tensor(tb[name]))  # bytes independent of sharding
    with pytest.raises(FileExistsError):
        make_synthetic_checkpoint(a, overrides=tiny_overrides())
    make_synthetic_checkpoint(a, overrides=tiny_overrides(), shard_bytes=1 << 30, overwrite=True)
    assert sorted(p.name for p in a.glob("*.safetensors")) == ["model.safetensors"]


def test_full_dimension_config():
    cfg = synthetic_config()
    for k, v in FULL_TEXT_CONFIG.items():
        assert cfg[k] == v
    assert cfg["layer_types"] == ["linear_attention", "full_attention"] and cfg["num_hidden_layers"] == 2
    assert cfg["rope_parameters"] == {"rope_type": "default", "rope_theta": 1e7, "partial_rotary_factor": 0.25, "mrope_section": [11, 11, 10]}
    assert synthetic_config(4)["layer_types"] == ["linear_attention"] * 3 + ["full_attention"]
    planned = plan_tensors(cfg)
    by_name = {t.spec.name: t.spec for t in planned}
    assert by_name["model.language_model.layers.1.self_attn.q_proj.weight"].shape == (2 * 16 * 256, 1024)
    assert by_name["model.language_model.layers.0.linear_attn.in_proj_qkv.weight_scale"].shape == (8192, 128)
    assert by_name["lm_head.weight"].shape == (248320, 2048)
    layers = sum(s.nbytes for s in by_name.values()) - 2 * 248320 * 2048 * 2
    assert 0.85e9 < layers < 0.95e9
    with pytest.raises(ValueError, match="multiple of 16"):
        synthetic_config(overrides={"moe_intermediate_size": 40})


def test_bf16_rounding_is_nearest_even():
    x = np.array([1.0, 1.00390625, 1.01171875, 1.0 + 2**-9, -2.5, 0.0], dtype=np.float32)
    # 1 + 2^-8 is a tie -> even (1.0); 1 + 3*2^-8 is a tie -> even (1 + 2^-6); 1 + 2^-9 rounds down
    assert float32_to_bf16_bits(x).tolist() == [0x3F80, 0x3F80, 0x3F82, 0x3F80, 0xC020, 0x0000]


def test_build_sm90_on_synthetic(small_ckpt, tmp_path):
    r = run_cli("build", str(small_ckpt), "--output", str(tmp_path / "engine"), "--target", "sm_90", "--quiet")
    assert r.returncode == 0, r.stderr
    manifest = json.loads((tmp_path / "engine" / "manifest.json").read_text())
    assert manifest["layout"]["scale_layout"] == "w4a16_fragments"
    assert len(manifest["source"]["files"]) >= 2


def test_convert_bench_small_runs(tmp_path):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT / "python"), env.get("PYTHONPATH")) if p)
    r = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "convert_bench.py"), "--small", "--workdir", str(tmp_path / "w"), "--json", str(tmp_path / "r.json")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "| step" in r.stdout and "convert sm_90, warm" in r.stdout and "raw read, warm" in r.stdout
    res = json.loads((tmp_path / "r.json").read_text())
    steps = {row["step"]: row for row in res["rows"]}
    assert steps["convert sm_90, warm"]["status"] == "ok" and steps["convert sm_90, warm"]["seconds"] > 0
    assert not any((tmp_path / "w").iterdir())  # cleaned up without --keep


def test_full_model_run_small(tmp_path):
    """bench/full_model_run.py end to end on the tiny dimensions: every phase runs in its own process,
    the cold and warm model runs agree, and nothing is left behind without --keep."""
    work = tmp_path / "w"
    r = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "full_model_run.py"), "--small", "--layers", "4", "--workdir", str(work),
         "--prompt", "5", "--new-tokens", "3", "--json", str(tmp_path / "r.json")],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    res = json.loads((tmp_path / "r.json").read_text())
    assert res["layers"] == 4 and res["checkpoint"]["wall"] > 0 and res["convert"]["peak_rss"] > 0
    for run in ("cold", "warm"):
        assert len(res[run]["decode_steps"]) == 3 and len(res[run]["tokens"]) == 3
        assert res[run]["peak_rss"] >= res[run]["end"]["RssAnon"] > 0
    assert res["cold"]["tokens"] == res["warm"]["tokens"]
    assert "| warm |" in r.stdout
    assert not (work / "ckpt").exists() and not (work / "engine-sm90").exists()
