"""The CPU reference model: runs an engine directory with the spec ops, weights kept packed.

``Qwen35Model(engine_dir)`` loads ``weights.safetensors`` as stored (NVFP4 weights stay packed
and are dequantized per use, W4A16) and ``forward`` runs a batch of sequences, each a slot of a
``StateCache`` plus new tokens: a new prompt (prefill), the next piece of a long prompt (chunked
prefill) or one token (decode), all in one call. Numerics follow transformers' Qwen3.5 bf16
implementation (the oracle the tests compare against).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .cache import StateCache
from .config import TextConfig
from .errors import UserInputError
from .ops import attention, conv1d, gated_delta_rule as gdr, moe, nvfp4_linear, norms


def load_manifest(engine_dir: Path) -> dict:
    path = engine_dir / "manifest.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise UserInputError(f"{engine_dir}: not an engine directory (no manifest.json); run build_engine.py build first") from None
    except json.JSONDecodeError as e:
        raise UserInputError(f"{path}: invalid JSON: {e}") from e


def config_from_manifest(manifest: dict) -> TextConfig:
    d = dict(manifest["model"])
    d["layer_types"] = tuple(d["layer_types"])
    return TextConfig(**d)


class Linear:
    """A linear layer from the engine weights: NVFP4 (W4A16, dequantized per call) or BF16."""

    def __init__(self, w: dict[str, torch.Tensor], name: str):
        self.name = name
        self.weight = w[f"{name}.weight"]
        self.nvfp4 = self.weight.dtype == torch.uint8
        if self.nvfp4:
            self.scales = w[f"{name}.weight_scale"]
            self.scale_2 = w[f"{name}.weight_scale_2"]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.nvfp4:
            return nvfp4_linear.linear_w4a16(x, self.weight, self.scales, self.scale_2)
        return F.linear(x, self.weight)


class Experts:
    """Routed experts stacked per projection ([E, N, K/2] + scales, or BF16 [E, N, K])."""

    def __init__(self, w: dict[str, torch.Tensor], name: str):
        self.proj = {}
        for p in ("gate_proj", "up_proj", "down_proj"):
            t = {r: w[f"{name}.{p}.{r}"] for r in ("weight", "weight_scale", "weight_scale_2") if f"{name}.{p}.{r}" in w}
            self.proj[p] = t

    def _linear(self, p: str, e: int, x: torch.Tensor) -> torch.Tensor:
        t = self.proj[p]
        if t["weight"].dtype == torch.uint8:
            return nvfp4_linear.linear_w4a16(x, t["weight"][e], t["weight_scale"][e], t["weight_scale_2"][e])
        return F.linear(x, t["weight"][e])

    def __call__(self, e: int, x: torch.Tensor) -> torch.Tensor:
        return moe.swiglu(x, lambda y: self._linear("gate_proj", e, y), lambda y: self._linear("up_proj", e, y), lambda y: self._linear("down_proj", e, y))


def _load_weights(engine_dir: Path, manifest: dict) -> dict[str, torch.Tensor]:
    from safetensors import safe_open

    swizzled = manifest["layout"]["scale_layout"] == "swizzled_128x4"
    out = {}
    with safe_open(str(engine_dir / "weights.safetensors"), framework="pt") as f:
        for name in f.keys():
            t = f.get_tensor(name)
            if t.dtype == torch.float8_e4m3fn:
                t = t.view(torch.uint8)
                if swizzled:
                    t = _unswizzle(name, t, manifest)
            out[name] = t
    return out


def _unswizzle(name: str, t: torch.Tensor, manifest: dict) -> torch.Tensor:
    """Back to row-major [.., N, K/16] for the CPU path (sm_100 engines store 128x4-swizzled scales)."""
    from . import nvfp4

    module = name.rsplit(".", 1)[0]
    mods = manifest["quantization"]["modules"]
    if module in mods:
        n, k = mods[module]["shape"]
    else:  # routed experts: module is layers.L.mlp.experts.<proj>
        exp_name, proj = module.rsplit(".", 1)
        info = mods[exp_name]
        n, k = (info["hidden_size"], info["intermediate_size"]) if proj == "down_proj" else (info["intermediate_size"], info["hidden_size"])
    return torch.from_numpy(np.ascontiguousarray(nvfp4.unswizzle_scales_128x4(t.numpy(), n, k // 16)))


@dataclass
class Layer:
    kind: str
    idx: int
    ln1: torch.Tensor
    ln2: torch.Tensor
    mixer: dict
    mlp: dict


class Qwen35Model:
    def __init__(self, engine_dir: str | Path):
        self.engine_dir = Path(engine_dir)
        self.manifest = load_manifest(self.engine_dir)
        self.cfg = cfg = config_from_manifest(self.manifest)
        w = _load_weights(self.engine_dir, self.manifest)
        self.embed = w["embed_tokens.weight"]
        self.final_norm = w["norm.weight"]
        self.lm_head = Linear(w, "lm_head") if "lm_head.weight" in w else None
        self.layers: list[Layer] = []
        for i, kind in enumerate(cfg.layer_types):
            p = f"layers.{i}"
            if kind == "linear_attention":
                a = f"{p}.linear_attn"
                mixer = {
                    "qkv": Linear(w, f"{a}.in_proj_qkv"), "z": Linear(w, f"{a}.in_proj_z"),
                    "a": Linear(w, f"{a}.in_proj_a"), "b": Linear(w, f"{a}.in_proj_b"),
                    "conv": w[f"{a}.conv1d.weight"][:, 0, :], "A_log": w[f"{a}.A_log"], "dt_bias": w[f"{a}.dt_bias"],
                    "norm": w[f"{a}.norm.weight"], "out": Linear(w, f"{a}.out_proj"),
                }
            else:
                a = f"{p}.self_attn"
                mixer = {n: Linear(w, f"{a}.{n}_proj") for n in ("q", "k", "v", "o")}
                mixer.update(q_norm=w[f"{a}.q_norm.weight"], k_norm=w[f"{a}.k_norm.weight"])
            m = f"{p}.mlp"
            mlp = {
                "router": w[f"{m}.gate.weight"], "experts": Experts(w, f"{m}.experts"),
                "shared": [Linear(w, f"{m}.shared_expert.{n}") for n in ("gate_proj", "up_proj", "down_proj")],
                "shared_gate": w[f"{m}.shared_expert_gate.weight"],
            }
            self.layers.append(Layer(kind, i, w[f"{p}.input_layernorm.weight"], w[f"{p}.post_attention_layernorm.weight"], mixer, mlp))

    def new_cache(self, num_slots: int) -> StateCache:
        return StateCache(self.cfg, num_slots)

    @torch.no_grad()
    def forward(self, batch: Sequence[tuple[int, Sequence[int]]], cache: StateCache, all_logits: bool = False) -> list[torch.Tensor]:
        """Run new tokens of several sequences. ``batch``: (slot, token ids) pairs, each sequence
        continuing from its slot's length. Returns per sequence the logits [V] of its last token,
        or [n, V] for all its new tokens when ``all_logits`` (bf16)."""
        cfg = self.cfg
        lens = [len(toks) for _, toks in batch]
        if not batch or min(lens) == 0:
            raise ValueError("every sequence in a batch needs at least one new token")
        ids = torch.tensor([t for _, toks in batch for t in toks], dtype=torch.long)
        if int(ids.min()) < 0 or int(ids.max()) >= cfg.vocab_size:
            raise ValueError(f"token ids must be in [0, {cfg.vocab_size})")
        cu = np.concatenate([[0], np.cumsum(lens)]).tolist()
        slots = [s for s, _ in batch]
        starts = [cache.lengths[s] for s in slots]
        x = F.embedding(ids, self.embed)
        gdn_i = attn_i = 0
        for layer in self.layers:
            h = norms.rms_norm(x, layer.ln1, cfg.rms_norm_eps)
            if layer.kind == "linear_attention":
                h = self._gdn(layer.mixer, h, cu, slots, starts, cache, gdn_i)
                gdn_i += 1
            else:
                h = self._attention(layer.mixer, h, cu, slots, starts, cache, attn_i)
                attn_i += 1
            x = x + h
            h = norms.rms_norm(x, layer.ln2, cfg.rms_norm_eps)
            x = x + self._moe(layer.mlp, h)
        for s, n in zip(slots, lens):
            cache.lengths[s] += n
        x = norms.rms_norm(x, self.final_norm, cfg.rms_norm_eps)
        rows = x if all_logits else x[torch.tensor(cu[1:]) - 1]
        logits = self.lm_head(rows) if self.lm_head is not None else F.linear(rows, self.embed)
        if all_logits:
            return [logits[cu[i] : cu[i + 1]] for i in range(len(batch))]
        return list(logits)

    def _gdn(self, m: dict, h, cu, slots, starts, cache: StateCache, li: int) -> torch.Tensor:
        cfg = self.cfg
        hk, hv = cfg.linear_num_key_heads, cfg.linear_num_value_heads
        dk, dv = cfg.linear_key_head_dim, cfg.linear_value_head_dim
        qkv, z, a, b = m["qkv"](h), m["z"](h), m["a"](h), m["b"](h)
        g, beta = gdr.gdn_gating(a, b, m["A_log"], m["dt_bias"])
        outs = []
        for i, slot in enumerate(slots):
            s, e = cu[i], cu[i + 1]
            fresh = starts[i] == 0
            if fresh or e - s > 1:
                init = None if fresh else cache.conv[li, slot][None]
                y, conv_state = conv1d.causal_conv1d_prefill(qkv[s:e], m["conv"], [0, e - s], init)
            else:
                y, conv_state = conv1d.causal_conv1d_decode(qkv[s:e], m["conv"], cache.conv[li, slot][None])
            cache.conv[li, slot] = conv_state[0]
            q, k, v = y.split([hk * dk, hk * dk, hv * dv], dim=-1)
            args = (q.reshape(-1, hk, dk), k.reshape(-1, hk, dk), v.reshape(-1, hv, dv), g[s:e], beta[s:e], [0, e - s])
            init = None if fresh else cache.recurrent[li, slot][None]
            if fresh or e - s > 1:
                o, state = gdr.chunk_gated_delta_rule(*args, initial_states=init)
            else:
                o, state = gdr.recurrent_gated_delta_rule(*args, initial_states=init)
            cache.recurrent[li, slot] = state[0]
            outs.append(o)
        o = torch.cat(outs, 0)
        o = norms.gated_rms_norm(o, z.view(-1, hv, dv), m["norm"], cfg.rms_norm_eps)
        return m["out"](o.reshape(-1, hv * dv))

    def _attention(self, m: dict, h, cu, slots, starts, cache: StateCache, li: int) -> torch.Tensor:
        cfg = self.cfg
        qg, k, v = m["q"](h), m["k"](h), m["v"](h)
        outs = []
        for i, slot in enumerate(slots):
            s, e = cu[i], cu[i + 1]
            pos = torch.arange(starts[i], starts[i] + e - s)
            o, kc, vc = attention.gated_attention(
                qg[s:e], k[s:e], v[s:e], m["q_norm"], m["k_norm"], pos,
                cache.keys[slot][li], cache.values[slot][li],
                num_heads=cfg.num_attention_heads, num_kv_heads=cfg.num_key_value_heads, head_dim=cfg.head_dim,
                rotary_dim=cfg.rotary_dim, rope_theta=cfg.rope_theta, eps=cfg.rms_norm_eps,
            )
            cache.keys[slot][li], cache.values[slot][li] = kc, vc
            outs.append(o)
        return m["o"](torch.cat(outs, 0))

    def _moe(self, m: dict, h) -> torch.Tensor:
        gate, up, down = m["shared"]
        return moe.moe_block(
            h, m["router"], self.cfg.num_experts_per_tok, m["experts"],
            lambda x: moe.swiglu(x, gate, up, down), m["shared_gate"],
        )


def greedy_generate(model: Qwen35Model, prompt: Sequence[int], max_new_tokens: int, eos_token_id: int | Sequence[int] | None = None) -> list[int]:
    """Greedy decoding of one prompt; stops at ``eos_token_id`` (included) or after max_new_tokens."""
    eos = set([eos_token_id] if isinstance(eos_token_id, int) else (eos_token_id or []))
    cache = model.new_cache(1)
    slot = cache.allocate()
    out: list[int] = []
    logits = model.forward([(slot, list(prompt))], cache)[0]
    while len(out) < max_new_tokens:
        tok = int(torch.argmax(logits))
        out.append(tok)
        if tok in eos or len(out) == max_new_tokens:
            break
        logits = model.forward([(slot, [tok])], cache)[0]
    return out
