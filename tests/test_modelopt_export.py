"""The NVFP4 codec against ModelOpt itself, on a real ModelOpt export of a tiny model.

Re-quantizing the original BF16 weights with the exported ``weight_scale_2`` must reproduce every
packed byte and every FP8 block scale of the export, and our dequantizer must equal ModelOpt's.
"""

from __future__ import annotations

import numpy as np
import torch
from safetensors import safe_open

from qwen35_trt import nvfp4
from qwen35_trt.checkpoint import Experts, Linear, open_checkpoint
from qwen35_trt.safetensors_io import read_tensor


def _originals(path):
    with safe_open(str(path), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


def _original_weight(orig: dict, canonical: str, cfg) -> torch.Tensor:
    """The BF16 weight before quantization for a canonical module name (per-expert names too)."""
    parts = canonical.split(".")
    if "experts" in parts:
        i = parts.index("experts")
        layer, e, proj = ".".join(parts[:i]), int(parts[i + 1]), parts[i + 2]
        I = cfg.moe_intermediate_size
        if proj == "down_proj":
            return orig[f"model.{layer}.experts.down_proj"][e]
        gate_up = orig[f"model.{layer}.experts.gate_up_proj"][e]
        return gate_up[:I] if proj == "gate_proj" else gate_up[I:]
    return orig[canonical if canonical.startswith("lm_head") else f"model.{canonical}.weight"]


def _nvfp4_linears(ckpt):
    for m in ckpt.modules():
        if isinstance(m, Linear) and m.fmt == "nvfp4":
            yield m
        elif isinstance(m, Experts):
            for lins in m.per_expert.values():
                yield from lins


def test_requantize_reproduces_export_bytes(tiny_any):
    ckpt_dir, original = tiny_any
    ckpt = open_checkpoint(ckpt_dir)
    orig = _originals(original)
    n = 0
    for lin in _nvfp4_linears(ckpt):
        t = {r: read_tensor(info) for r, info in lin.tensors.items()}
        w = _original_weight(orig, lin.spec.name, ckpt.config).float().numpy()
        s2 = float(t["weight_scale_2"].reshape(()))
        packed, scales = nvfp4.quantize(w, s2)
        np.testing.assert_array_equal(scales, t["weight_scale"], err_msg=f"{lin.spec.name}.weight_scale")
        np.testing.assert_array_equal(packed, t["weight"], err_msg=f"{lin.spec.name}.weight")
        n += 1
    # every projection of the tiny model that ModelOpt quantizes, checked
    expected = sum(1 for _ in _nvfp4_linears(ckpt))
    assert n == expected and n >= 121


def test_dequantize_matches_modelopt(tiny_any):
    from modelopt.torch.quantization.qtensor import NVFP4QTensor

    ckpt = open_checkpoint(tiny_any[0])
    for lin in _nvfp4_linears(ckpt):
        t = {r: read_tensor(info) for r, info in lin.tensors.items()}
        s2 = t["weight_scale_2"].reshape(())
        ours = nvfp4.dequantize(t["weight"], t["weight_scale"], float(s2))
        shape = (lin.spec.out_features, lin.spec.in_features)
        q = NVFP4QTensor(torch.Size(shape), torch.float32, torch.from_numpy(t["weight"]))
        ref = q.dequantize(
            dtype=torch.float32,
            scale=torch.from_numpy(t["weight_scale"]).view(torch.float8_e4m3fn),
            double_scale=torch.from_numpy(np.asarray(s2, np.float32)),
            block_sizes={-1: 16},
        ).numpy()
        np.testing.assert_array_equal(ours, ref, err_msg=lin.spec.name)
