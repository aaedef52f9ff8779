"""The tensors a Qwen3.5 hybrid MoE text model must have, derived from its config.

This is the one list of expected module names and shapes: the checkpoint reader validates
against it, the builder walks it layer by layer, and the bad-input tests mutate what it names.
Names are canonical: relative to the text model (``layers.3.self_attn.q_proj``), without the
checkpoint's ``model.language_model.`` / ``model.`` prefix.
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import TextConfig

FLOAT_DTYPES = ("BF16", "F16", "F32")

EXPERT_PROJECTIONS = ("gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class LinearSpec:
    """A linear layer ``y = x W^T`` with ``W`` of shape [out_features, in_features]."""

    name: str
    out_features: int
    in_features: int


@dataclass(frozen=True)
class ParamSpec:
    """A plain parameter (norm weight, conv weight, A_log, ...) of a fixed shape."""

    name: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class ExpertsSpec:
    """The routed experts of one MoE layer: per projection, [num_experts, out, in]."""

    name: str  # e.g. "layers.0.mlp.experts"
    num_experts: int
    hidden_size: int
    intermediate_size: int

    def projection_shape(self, proj: str) -> tuple[int, int]:
        """(out_features, in_features) of one expert's projection."""
        if proj == "down_proj":
            return self.hidden_size, self.intermediate_size
        return self.intermediate_size, self.hidden_size


Spec = LinearSpec | ParamSpec | ExpertsSpec


@dataclass(frozen=True)
class LayerLayout:
    """Everything one decoder layer (or the embedding / head group) holds."""

    name: str  # "embed", "layers.N", "head"
    kind: str  # "embed", "linear_attention", "full_attention", "head"
    specs: tuple[Spec, ...]


def model_layout(cfg: TextConfig) -> list[LayerLayout]:
    H = cfg.hidden_size
    layers = [LayerLayout("embed", "embed", (ParamSpec("embed_tokens.weight", (cfg.vocab_size, H)),))]
    for i, kind in enumerate(cfg.layer_types):
        p = f"layers.{i}"
        specs: list[Spec] = [
            ParamSpec(f"{p}.input_layernorm.weight", (H,)),
            ParamSpec(f"{p}.post_attention_layernorm.weight", (H,)),
        ]
        if kind == "linear_attention":
            a = f"{p}.linear_attn"
            hv, dv = cfg.linear_num_value_heads, cfg.linear_value_head_dim
            specs += [
                LinearSpec(f"{a}.in_proj_qkv", cfg.conv_channels, H),
                LinearSpec(f"{a}.in_proj_z", hv * dv, H),
                LinearSpec(f"{a}.in_proj_b", hv, H),
                LinearSpec(f"{a}.in_proj_a", hv, H),
                ParamSpec(f"{a}.conv1d.weight", (cfg.conv_channels, 1, cfg.linear_conv_kernel_dim)),
                ParamSpec(f"{a}.A_log", (hv,)),
                ParamSpec(f"{a}.dt_bias", (hv,)),
                ParamSpec(f"{a}.norm.weight", (dv,)),
                LinearSpec(f"{a}.out_proj", H, hv * dv),
            ]
        else:
            a = f"{p}.self_attn"
            nq, nkv, hd = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
            specs += [
                # q_proj yields query and output gate interleaved per head: 2 * nq * hd rows.
                LinearSpec(f"{a}.q_proj", 2 * nq * hd, H),
                LinearSpec(f"{a}.k_proj", nkv * hd, H),
                LinearSpec(f"{a}.v_proj", nkv * hd, H),
                LinearSpec(f"{a}.o_proj", H, nq * hd),
                ParamSpec(f"{a}.q_norm.weight", (hd,)),
                ParamSpec(f"{a}.k_norm.weight", (hd,)),
            ]
        m = f"{p}.mlp"
        si = cfg.shared_expert_intermediate_size
        specs += [
            LinearSpec(f"{m}.gate", cfg.num_experts, H),
            ExpertsSpec(f"{m}.experts", cfg.num_experts, H, cfg.moe_intermediate_size),
            LinearSpec(f"{m}.shared_expert.gate_proj", si, H),
            LinearSpec(f"{m}.shared_expert.up_proj", si, H),
            LinearSpec(f"{m}.shared_expert.down_proj", H, si),
            LinearSpec(f"{m}.shared_expert_gate", 1, H),
        ]
        layers.append(LayerLayout(p, kind, tuple(specs)))
    head: list[Spec] = [ParamSpec("norm.weight", (H,))]
    if not cfg.tie_word_embeddings:
        head.append(LinearSpec("lm_head", cfg.vocab_size, H))
    layers.append(LayerLayout("head", "head", tuple(head)))
    return layers
