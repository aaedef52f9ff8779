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
from .engine import EngineDir
from .engine.targets import ROW_MAJOR, unpack_nvfp4
from .ops import moe, norms
from .ops.nvfp4_linear import nvfp4_linear
from .ops.numerics import Numerics
from .ops.operands import MoeExperts, Nvfp4Weight, SharedExpert
from .ops.registry import OpSet, resolve


class Linear:
    """A linear layer from the engine weights: NVFP4 (the model's Nvfp4Linear backend) or BF16."""

    def __init__(self, w: dict[str, torch.Tensor], name: str, ops: OpSet):
        self.name, self.ops = name, ops
        weight = w[f"{name}.weight"]
        self.nvfp4 = None
        self.weight = weight
        if weight.dtype == torch.uint8:
            self.nvfp4 = Nvfp4Weight(weight, w[f"{name}.weight_scale"], w[f"{name}.weight_scale_2"], w.get(f"{name}.input_scale"))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.nvfp4 is not None:
            return self.ops.nvfp4_linear(x.contiguous(), self.nvfp4)
        return self.ops.numerics.linear(x, self.weight)


class Experts:
    """Routed experts in the engine's fused layout: gate_up_proj [E, 2I, H/2] (gate rows first,
    weight_scale_2 [E, 2]) and down_proj [E, H, I/2] + scales, or BF16 [E, 2I, H] / [E, H, I].
    NVFP4 tensors in ``layout`` (the OpSet's ``nvfp4_layout``)."""

    def __init__(self, w: dict[str, torch.Tensor], name: str, layout: str = ROW_MAJOR):
        self.proj = {}
        self.layout = layout
        for p in ("gate_up_proj", "down_proj"):
            roles = ("weight", "weight_scale", "weight_scale_2", "input_scale")
            self.proj[p] = {r: w[f"{name}.{p}.{r}"] for r in roles if f"{name}.{p}.{r}" in w}
        self.nvfp4 = self.proj["gate_up_proj"]["weight"].dtype == torch.uint8
        self.intermediate = self.proj["gate_up_proj"]["weight"].shape[1] // 2

    def operands(self) -> MoeExperts:
        """The Nvfp4MoE operands (NVFP4 experts only)."""
        gu, dn = self.proj["gate_up_proj"], self.proj["down_proj"]
        return MoeExperts(
            Nvfp4Weight(gu["weight"], gu["weight_scale"], gu["weight_scale_2"], gu.get("input_scale")),
            Nvfp4Weight(dn["weight"], dn["weight_scale"], dn["weight_scale_2"], dn.get("input_scale")),
        )

    def _modelopt_order(self) -> None:
        """The NVFP4 projections in ModelOpt's order (the spec ops slice rows of them), once."""
        if self.layout == ROW_MAJOR:
            return
        for t in self.proj.values():
            if t["weight"].dtype == torch.uint8:
                codes, scales = t["weight"], t["weight_scale"]
                rows, k = codes.shape[-2], 2 * codes.shape[-1]
                c, s = unpack_nvfp4(self.layout, codes.cpu().numpy(), scales.cpu().numpy(), rows, k)
                t["weight"], t["weight_scale"] = torch.from_numpy(c).to(codes.device), torch.from_numpy(s).to(scales.device)
        self.layout = ROW_MAJOR

    def expert(self, numerics: Numerics):
        """``expert(e, x)`` for ``moe.moe_block``: one expert's SwiGLU, W4A16 or BF16."""
        I = self.intermediate
        self._modelopt_order()

        def linear(p: str, e: int, x: torch.Tensor, rows: slice = slice(None), half: int = 0) -> torch.Tensor:
            t = self.proj[p]
            if t["weight"].dtype == torch.uint8:
                s2 = t["weight_scale_2"][e] if t["weight_scale_2"].dim() == 1 else t["weight_scale_2"][e, half]
                return nvfp4_linear(x, Nvfp4Weight(t["weight"][e, rows], t["weight_scale"][e, rows], s2), numerics)
            return numerics.linear(x, t["weight"][e, rows])

        def run(e: int, x: torch.Tensor) -> torch.Tensor:
            gate = lambda y: linear("gate_up_proj", e, y, slice(0, I), 0)  # noqa: E731
            up = lambda y: linear("gate_up_proj", e, y, slice(I, 2 * I), 1)  # noqa: E731
            return moe.swiglu(x, gate, up, lambda y: linear("down_proj", e, y), numerics)

        return run


@dataclass
class Layer:
    kind: str
    idx: int
    ln1: torch.Tensor
    ln2: torch.Tensor
    mixer: dict
    mlp: dict


class Qwen35Model:
    """``gdn_backend`` / ``moe_backend`` / ``attention_backend``: the backends of CausalConv1d +
    GatedDeltaNet, of Nvfp4Linear + Nvfp4MoE and of GatedAttention ("reference": the C++ ops, the
    default when ``_C`` has them; "spec": the torch spec ops, transformers' numerics bit for bit;
    "cuda": the CUDA kernels, the only choice and the default with ``device="cuda"``, where the
    weights and the state pools live on the GPU). ``batch_invariant``: a sequence's results do not
    depend on the other sequences of a forward call (``ops.numerics``); serving sets it, the
    oracle tests do not. ``nvfp4_layout``: how the NVFP4 weights are handed to the ops (default:
    as the engine stores them for the CUDA kernels, ModelOpt's order for the CPU backends)."""

    def __init__(self, engine_dir: str | Path, gdn_backend: str | None = None, moe_backend: str | None = None, batch_invariant: bool = False,
                 attention_backend: str | None = None, device: str | torch.device = "cpu", nvfp4_layout: str | None = None):
        self.engine = EngineDir(engine_dir)
        self.engine_dir = self.engine.path
        self.device = torch.device(device)
        # On a GPU every contract op runs its CUDA kernels; on the CPU the C++ references or the spec.
        on_gpu = self.device.type == "cuda"
        allowed, default = (("cuda",), "cuda") if on_gpu else (("reference", "spec"), None)
        self.gdn_backend = resolve("gdn_backend", gdn_backend or default, allowed)
        self.moe_backend = resolve("moe_backend", moe_backend or default, allowed)
        self.attention_backend = resolve("attention_backend", attention_backend or default, allowed)
        # The CUDA kernels read the engine's NVFP4 layout as stored (sm_90 / sm_120: the W4A16
        # fragment layout; sm_100: swizzled scales, which the native path needs); the CPU ops read
        # ModelOpt's order, converted once here.
        self.nvfp4_layout = nvfp4_layout or (self.engine.scale_layout if self.moe_backend == "cuda" else ROW_MAJOR)
        self.ops = ops = OpSet(self.gdn_backend, self.moe_backend, Numerics(batch_invariant), self.attention_backend,
                               self.nvfp4_layout)
        self.manifest = self.engine.manifest
        self.cfg = cfg = self.engine.config
        w = self.engine.load_weights(self.nvfp4_layout)
        if self.device.type != "cpu":
            w = {k: v.to(self.device) for k, v in w.items()}
        self.embed = w["embed_tokens.weight"]
        self.final_norm = w["norm.weight"]
        self.lm_head = Linear(w, "lm_head", ops) if "lm_head.weight" in w else None
        self.layers: list[Layer] = []
        for i, kind in enumerate(cfg.layer_types):
            p = f"layers.{i}"
            if kind == "linear_attention":
                a = f"{p}.linear_attn"
                mixer = {
                    "qkv": Linear(w, f"{a}.in_proj_qkv", ops), "z": Linear(w, f"{a}.in_proj_z", ops),
                    "a": Linear(w, f"{a}.in_proj_a", ops), "b": Linear(w, f"{a}.in_proj_b", ops),
                    "conv": w[f"{a}.conv1d.weight"][:, 0, :], "A_log": w[f"{a}.A_log"], "dt_bias": w[f"{a}.dt_bias"],
                    "norm": w[f"{a}.norm.weight"], "out": Linear(w, f"{a}.out_proj", ops),
                }
            else:
                a = f"{p}.self_attn"
                mixer = {n: Linear(w, f"{a}.{n}_proj", ops) for n in ("q", "k", "v", "o")}
                mixer.update(q_norm=w[f"{a}.q_norm.weight"], k_norm=w[f"{a}.k_norm.weight"])
            m = f"{p}.mlp"
            mlp = {
                "router": w[f"{m}.gate.weight"], "experts": Experts(w, f"{m}.experts", self.nvfp4_layout),
                "shared": [Linear(w, f"{m}.shared_expert.{n}", ops) for n in ("gate_proj", "up_proj", "down_proj")],
                "shared_gate": w[f"{m}.shared_expert_gate.weight"],
            }
            self.layers.append(Layer(kind, i, w[f"{p}.input_layernorm.weight"], w[f"{p}.post_attention_layernorm.weight"], mixer, mlp))

    def new_cache(self, num_slots: int) -> StateCache:
        return StateCache(self.cfg, num_slots, device=self.device)

    @torch.no_grad()
    def forward(self, batch: Sequence[tuple[int, Sequence[int]]], cache: StateCache, all_logits: bool = False) -> list[torch.Tensor]:
        """Run new tokens of several sequences. ``batch``: (slot, token ids) pairs, each sequence
        continuing from its slot's length. Returns per sequence the logits [V] of its last token,
        or [n, V] for all its new tokens when ``all_logits`` (bf16)."""
        cfg, nx = self.cfg, self.ops.numerics
        lens = [len(toks) for _, toks in batch]
        if not batch or min(lens) == 0:
            raise ValueError("every sequence in a batch needs at least one new token")
        ids = torch.tensor([t for _, toks in batch for t in toks], dtype=torch.long)
        if int(ids.min()) < 0 or int(ids.max()) >= cfg.vocab_size:
            raise ValueError(f"token ids must be in [0, {cfg.vocab_size})")
        cu = np.concatenate([[0], np.cumsum(lens)]).tolist()
        slots = [s for s, _ in batch]
        starts = [cache.lengths[s] for s in slots]
        for s, n, start in zip(slots, lens, starts):
            cache.reserve(s, start + n)
        x = F.embedding(ids.to(self.device), self.embed)
        gdn_i = attn_i = 0
        for layer in self.layers:
            h = norms.rms_norm(x, layer.ln1, cfg.rms_norm_eps, nx)
            if layer.kind == "linear_attention":
                h = self._gdn(layer.mixer, h, cu, slots, starts, cache, gdn_i)
                gdn_i += 1
            else:
                h = self._attention(layer.mixer, h, cu, slots, starts, cache, attn_i)
                attn_i += 1
            x = x + h
            h = norms.rms_norm(x, layer.ln2, cfg.rms_norm_eps, nx)
            x = x + self._moe(layer.mlp, h)
        for s, n in zip(slots, lens):
            cache.lengths[s] += n
        x = norms.rms_norm(x, self.final_norm, cfg.rms_norm_eps, nx)
        rows = x if all_logits else x[torch.tensor(cu[1:], device=self.device) - 1]
        logits = self.lm_head(rows) if self.lm_head is not None else nx.linear(rows, self.embed)
        if all_logits:
            return [logits[cu[i] : cu[i + 1]] for i in range(len(batch))]
        return list(logits)

    def _gdn(self, m: dict, h, cu, slots, starts, cache: StateCache, li: int) -> torch.Tensor:
        """One Gated DeltaNet mixer over the batch: projections, CausalConv1d and GatedDeltaNet
        (the contract ops, slot pools of ``cache`` updated in place), gated norm, out_proj."""
        cfg = self.cfg
        hk, hv = cfg.linear_num_key_heads, cfg.linear_num_value_heads
        dk, dv = cfg.linear_key_head_dim, cfg.linear_value_head_dim
        qkv, z, a, b = m["qkv"](h), m["z"](h), m["a"](h), m["b"](h)
        has_init = [s > 0 for s in starts]
        y = self.ops.causal_conv1d(qkv, m["conv"].to(qkv.dtype), cache.conv[li], slots, cu, has_init)
        T = y.shape[0]
        q, k, v = y.split([hk * dk, hk * dk, hv * dv], dim=-1)
        o = self.ops.gated_delta_net(q.reshape(T, hk, dk), k.reshape(T, hk, dk), v.reshape(T, hv, dv), a, b, m["A_log"], m["dt_bias"],
                                     cache.recurrent[li], slots, cu, has_init)
        o = norms.gated_rms_norm(o, z.view(-1, hv, dv), m["norm"], cfg.rms_norm_eps, self.ops.numerics)
        return m["out"](o.reshape(-1, hv * dv))

    def _attention(self, m: dict, h, cu, slots, starts, cache: StateCache, li: int) -> torch.Tensor:
        """One gated-attention mixer over the batch: projections, GatedAttention (the contract op, the
        layer's paged KV pool of ``cache`` updated in place), o_proj."""
        cfg = self.cfg
        qg, k, v = m["q"](h), m["k"](h), m["v"](h)
        o = self.ops.gated_attention(
            qg, k, v, m["q_norm"], m["k_norm"], cache.kv[li], cache.block_tables(slots),
            torch.tensor(cu, dtype=torch.int32), torch.tensor(starts, dtype=torch.int32),
            num_heads=cfg.num_attention_heads, num_kv_heads=cfg.num_key_value_heads, head_dim=cfg.head_dim,
            rotary_dim=cfg.rotary_dim, rope_theta=cfg.rope_theta, eps=cfg.rms_norm_eps,
        )
        return m["o"](o)

    def _moe(self, m: dict, h) -> torch.Tensor:
        gate, up, down = m["shared"]
        experts: Experts = m["experts"]
        nx = self.ops.numerics
        if experts.nvfp4 and all(lin.nvfp4 is not None for lin in m["shared"]):
            logits = nx.linear(h, m["router"])  # router logits as transformers computes them (bf16 linear)
            shared = SharedExpert(gate.nvfp4, up.nvfp4, down.nvfp4, m["shared_gate"])
            return self.ops.nvfp4_moe(h.contiguous(), logits, self.cfg.num_experts_per_tok, experts.operands(), shared)
        # formats the Nvfp4MoE contract does not cover (BF16 experts, or a BF16 shared expert)
        return moe.moe_block(h, m["router"], self.cfg.num_experts_per_tok, experts.expert(nx),
                             lambda x: moe.swiglu(x, gate, up, down, nx), m["shared_gate"], nx)


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
