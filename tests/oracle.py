"""The oracle: transformers' own Qwen3.5 model, loaded with the dequantized ModelOpt checkpoint.

Dequantization uses ModelOpt's ``NVFP4QTensor.dequantize`` (not our codec), the routed experts
are re-fused into transformers' 3-D ``gate_up_proj`` / ``down_proj``, and attention runs eagerly.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from qwen35_trt.checkpoint import Experts, Linear, Param, open_checkpoint
from qwen35_trt.safetensors_io import read_tensor


def _modelopt_dequant(t: dict) -> torch.Tensor:
    from modelopt.torch.quantization.qtensor import NVFP4QTensor

    packed = torch.from_numpy(t["weight"])
    shape = (*packed.shape[:-1], packed.shape[-1] * 2)
    q = NVFP4QTensor(torch.Size(shape), torch.float32, packed)
    return q.dequantize(
        dtype=torch.float32,
        scale=torch.from_numpy(t["weight_scale"]).view(torch.float8_e4m3fn),
        double_scale=torch.from_numpy(t["weight_scale_2"].reshape(())),
        block_sizes={-1: 16},
    ).to(torch.bfloat16)


def _dense(t: dict, fmt: str) -> torch.Tensor:
    if fmt == "nvfp4":
        return _modelopt_dequant(t)
    return torch.from_numpy(t["weight"].view("int16")).view(torch.bfloat16)


def _param(arr, dtype: str) -> torch.Tensor:
    if dtype == "BF16":
        return torch.from_numpy(arr.view("int16")).view(torch.bfloat16)
    return torch.from_numpy(arr)


def transformers_model(ckpt_dir: Path):
    from transformers import Qwen3_5MoeConfig, Qwen3_5MoeForCausalLM, Qwen3_5MoeTextConfig

    raw = json.loads((Path(ckpt_dir) / "config.json").read_text())
    raw.pop("quantization_config", None)
    if raw["model_type"] == "qwen3_5_moe":
        cfg = Qwen3_5MoeConfig.from_dict(raw).text_config
    else:
        cfg = Qwen3_5MoeTextConfig.from_dict(raw)
    cfg._attn_implementation = "eager"
    # transformers' defining implementations (eager attention, the expert loop), not its fused variants
    model = Qwen3_5MoeForCausalLM._from_config(
        cfg, dtype=torch.bfloat16, attn_implementation="eager", experts_implementation="eager"
    ).eval()
    ckpt = open_checkpoint(ckpt_dir)
    state = {}
    for mod in ckpt.modules():
        if isinstance(mod, Param):
            state[f"model.{mod.spec.name}"] = _param(read_tensor(mod.tensor), mod.tensor.dtype)
        elif isinstance(mod, Linear):
            t = {r: read_tensor(i) for r, i in mod.tensors.items()}
            key = "lm_head.weight" if mod.spec.name == "lm_head" else f"model.{mod.spec.name}.weight"
            state[key] = _dense(t, mod.fmt)
        elif isinstance(mod, Experts):
            per = {p: torch.stack([_dense({r: read_tensor(i) for r, i in lin.tensors.items()}, mod.fmt) for lin in lins])
                   for p, lins in mod.per_expert.items()}
            base = f"model.{mod.spec.name}"
            state[f"{base}.gate_up_proj"] = torch.cat([per["gate_proj"], per["up_proj"]], dim=1)
            state[f"{base}.down_proj"] = per["down_proj"]
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise AssertionError(f"oracle state mismatch: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return model
