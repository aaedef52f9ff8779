"""The CPU reference model: runs an engine directory with the spec ops, weights kept packed.

``Qwen35Model(engine_dir)`` loads ``weights.safetensors`` as stored (NVFP4 weights stay packed
and are dequantized per use, W4A16) and ``forward`` runs a batch of sequences, each a slot of a
``StateCache`` plus new tokens: a new prompt (prefill), the next piece of a long prompt (chunked
prefill) or one token (decode), all in one call. Numerics follow transformers' Qwen3.5 bf16
implementation (the oracle the tests compare against).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .cache import StateCache
from .config import TextConfig
from .engine import EngineDir
from .ops import attention, conv1d, gated_delta_rule as gdr, moe, nvfp4_linear, norms


class Linear:
    """A linear layer from the engine weights: NVFP4 or BF16.

    NVFP4 runs W4A16 through ``backend``: "spec" (the torch spec op: weights dequantized to bf16,
    transformers' cast points) or "reference" (the C++ Nvfp4Linear reference, fp32 sums);
    ``Qwen35Model`` sets it from its ``moe_backend``.
    """

    backend = "spec"

    def __init__(self, w: dict[str, torch.Tensor], name: str):
        self.name = name
        self.weight = w[f"{name}.weight"]
        self.nvfp4 = self.weight.dtype == torch.uint8
        if self.nvfp4:
            self.scales = w[f"{name}.weight_scale"]
            self.scale_2 = w[f"{name}.weight_scale_2"]
            self.input_scale = w.get(f"{name}.input_scale")

    def nvfp4_weight(self):
        from .ops.moe_reference import Nvfp4Weight

        return Nvfp4Weight(self.weight, self.scales, self.scale_2, self.input_scale)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.nvfp4:
            if self.backend == "reference":
                from .ops import moe_reference

                return moe_reference.nvfp4_linear(x.contiguous(), self.nvfp4_weight())
            return nvfp4_linear.linear_w4a16(x, self.weight, self.scales, self.scale_2)
        return F.linear(x, self.weight)


class Experts:
    """Routed experts in the engine's fused layout: gate_up_proj [E, 2I, H/2] (gate rows first,
    weight_scale_2 [E, 2]) and down_proj [E, H, I/2] + scales, or BF16 [E, 2I, H] / [E, H, I]."""

    def __init__(self, w: dict[str, torch.Tensor], name: str):
        self.proj = {}
        for p in ("gate_up_proj", "down_proj"):
            roles = ("weight", "weight_scale", "weight_scale_2", "input_scale")
            self.proj[p] = {r: w[f"{name}.{p}.{r}"] for r in roles if f"{name}.{p}.{r}" in w}
        self.nvfp4 = self.proj["gate_up_proj"]["weight"].dtype == torch.uint8
        self.intermediate = self.proj["gate_up_proj"]["weight"].shape[1] // 2

    def moe_weights(self):
        """The Nvfp4MoE operands (ops.moe_reference.MoeExperts)."""
        from .ops.moe_reference import MoeExperts, Nvfp4Weight

        gu, dn = self.proj["gate_up_proj"], self.proj["down_proj"]
        return MoeExperts(
            Nvfp4Weight(gu["weight"], gu["weight_scale"], gu["weight_scale_2"], gu.get("input_scale")),
            Nvfp4Weight(dn["weight"], dn["weight_scale"], dn["weight_scale_2"], dn.get("input_scale")),
        )

    def _linear(self, p: str, e: int, x: torch.Tensor, rows: slice = slice(None), half: int = 0) -> torch.Tensor:
        t = self.proj[p]
        if t["weight"].dtype == torch.uint8:
            s2 = t["weight_scale_2"][e] if t["weight_scale_2"].dim() == 1 else t["weight_scale_2"][e, half]
            return nvfp4_linear.linear_w4a16(x, t["weight"][e, rows], t["weight_scale"][e, rows], s2)
        return F.linear(x, t["weight"][e, rows])

    def __call__(self, e: int, x: torch.Tensor) -> torch.Tensor:
        I = self.intermediate
        gate = lambda y: self._linear("gate_up_proj", e, y, slice(0, I), 0)  # noqa: E731
        up = lambda y: self._linear("gate_up_proj", e, y, slice(I, 2 * I), 1)  # noqa: E731
        return moe.swiglu(x, gate, up, lambda y: self._linear("down_proj", e, y))


@dataclass
class Layer:
    kind: str
    idx: int
    ln1: torch.Tensor
    ln2: torch.Tensor
    mixer: dict
    mlp: dict


class Qwen35Model:
    def __init__(self, engine_dir: str | Path, gdn_backend: str | None = None, moe_backend: str | None = None):
        self.engine = EngineDir(engine_dir)
        self.engine_dir = self.engine.path
        self.gdn_backend = _resolve_gdn_backend(gdn_backend)
        self.moe_backend = _resolve_moe_backend(moe_backend)
        self.manifest = self.engine.manifest
        self.cfg = cfg = self.engine.config
        w = self.engine.load_weights()  # block scales row-major, as the CPU ops read them
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
        for lin in self._linears():
            lin.backend = self.moe_backend

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
        if self.gdn_backend == "reference":
            o = _gdn_mixer_reference(m, qkv, a, b, cu, slots, starts, cache, li, cfg)
            o = norms.gated_rms_norm(o, z.view(-1, hv, dv), m["norm"], cfg.rms_norm_eps)
            return m["out"](o.reshape(-1, hv * dv))
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

    def _linears(self) -> list[Linear]:
        found = [self.lm_head] if self.lm_head is not None else []
        for layer in self.layers:
            found += [v for v in layer.mixer.values() if isinstance(v, Linear)] + list(layer.mlp["shared"])
        return found

    def _moe(self, m: dict, h) -> torch.Tensor:
        gate, up, down = m["shared"]
        experts: Experts = m["experts"]
        if self.moe_backend == "reference" and experts.nvfp4 and all(lin.nvfp4 for lin in m["shared"]):
            from .ops import moe_reference

            # Router logits as transformers computes them (bf16 linear); everything after in fp32.
            logits = F.linear(h, m["router"])
            shared = moe_reference.SharedExpert(gate.nvfp4_weight(), up.nvfp4_weight(), down.nvfp4_weight(), m["shared_gate"])
            return moe_reference.nvfp4_moe(h.contiguous(), logits, self.cfg.num_experts_per_tok, experts.moe_weights(), shared)
        return moe.moe_block(
            h, m["router"], self.cfg.num_experts_per_tok, experts,
            lambda x: moe.swiglu(x, gate, up, down), m["shared_gate"],
        )


BACKENDS = ("reference", "spec")


def _resolve_backend(kw: str, name: str | None, available: bool, ops: str) -> str:
    """``None`` picks "reference" (the C++ contract ops through ``_C``) when the extension has
    them, else "spec" (the torch spec ops, whose bf16 cast points match transformers token for
    token). ``kw`` names the keyword argument in errors, ``ops`` the ops it needs."""
    if name is None:
        return "reference" if available else "spec"
    if name not in BACKENDS:
        raise ValueError(f"{kw}: expected one of {', '.join(BACKENDS)}, got {name!r}")
    if name == "reference" and not available:
        raise ValueError(f"{kw}: 'reference' needs qwen35_trt._C with the {ops} ops; rebuild the package or use 'spec'")
    return name


def _resolve_moe_backend(name: str | None) -> str:
    """The implementation of Nvfp4MoE and of every NVFP4 linear on the CPU."""
    from .ops import moe_reference

    return _resolve_backend("moe_backend", name, moe_reference.available(), "Nvfp4MoE")


def _resolve_gdn_backend(name: str | None) -> str:
    """The implementation of CausalConv1d and GatedDeltaNet on the CPU."""
    from .ops import gdn_reference

    return _resolve_backend("gdn_backend", name, gdn_reference.available(), "Gated DeltaNet")


def _gdn_mixer_reference(m: dict, qkv, a, b, cu, slots, starts, cache: StateCache, li: int, cfg: TextConfig) -> torch.Tensor:
    """Conv + gated delta rule of one GDN layer for the whole batch through the C++ contract ops
    (docs/ops.md), the slot pools of ``cache`` updated in place. Returns o [T, Hv, dv]."""
    from .ops import gdn_reference as ref

    hk, hv = cfg.linear_num_key_heads, cfg.linear_num_value_heads
    dk, dv = cfg.linear_key_head_dim, cfg.linear_value_head_dim
    slot_ids = torch.tensor(slots, dtype=torch.int32)
    # All sequences continuing by one token: the decode form (recurrent, as the spec path uses).
    decode = all(s > 0 for s in starts) and all(cu[i + 1] - cu[i] == 1 for i in range(len(slots)))
    seq = () if decode else (torch.tensor(cu, dtype=torch.int32), torch.tensor([s > 0 for s in starts]))
    conv_pool = cache.conv[li]
    pool = conv_pool if conv_pool.dtype == qkv.dtype else conv_pool.to(qkv.dtype)
    y = ref.causal_conv1d(qkv, m["conv"].to(qkv.dtype), pool, slot_ids, *seq)
    if pool is not conv_pool:
        conv_pool.copy_(pool)
    T = y.shape[0]
    q, k, v = y.split([hk * dk, hk * dk, hv * dv], dim=-1)
    return ref.gated_delta_net(
        q.reshape(T, hk, dk), k.reshape(T, hk, dk), v.reshape(T, hv, dv), a, b, m["A_log"], m["dt_bias"],
        cache.recurrent[li], slot_ids, *seq,
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
