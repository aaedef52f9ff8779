"""The text-model configuration of a Qwen3.5 hybrid MoE checkpoint.

``config.json`` comes in two shapes: the full multimodal ``qwen3_5_moe`` with the language model
under ``text_config``, or a text-only ``qwen3_5_moe_text``. Both reduce to ``TextConfig``, the one
place the rest of the package reads model sizes from.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .errors import CheckpointError, UnsupportedError

FULL_MODEL_TYPES = ("qwen3_5_moe",)
TEXT_MODEL_TYPES = ("qwen3_5_moe_text",)
LAYER_KINDS = ("linear_attention", "full_attention")


@dataclass(frozen=True)
class TextConfig:
    model_type: str  # the checkpoint's top-level model_type
    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    layer_types: tuple[str, ...]
    # gated full attention
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    # Gated DeltaNet
    linear_num_key_heads: int
    linear_num_value_heads: int
    linear_key_head_dim: int
    linear_value_head_dim: int
    linear_conv_kernel_dim: int
    # MoE
    num_experts: int
    num_experts_per_tok: int
    moe_intermediate_size: int
    shared_expert_intermediate_size: int
    # numerics
    rms_norm_eps: float
    rope_theta: float
    partial_rotary_factor: float
    max_position_embeddings: int
    tie_word_embeddings: bool
    eos_token_id: int | list[int] | None
    bos_token_id: int | None
    pad_token_id: int | None

    @property
    def rotary_dim(self) -> int:
        return int(self.head_dim * self.partial_rotary_factor)

    @property
    def conv_channels(self) -> int:
        """Channels of the GDN causal conv: q and k (key heads) plus v (value heads)."""
        return (
            2 * self.linear_num_key_heads * self.linear_key_head_dim
            + self.linear_num_value_heads * self.linear_value_head_dim
        )

    def layer_counts(self) -> dict[str, int]:
        return {kind: sum(1 for t in self.layer_types if t == kind) for kind in LAYER_KINDS}

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["layer_types"] = list(self.layer_types)
        return d


_REQUIRED_INT = (
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "linear_num_key_heads",
    "linear_num_value_heads",
    "linear_key_head_dim",
    "linear_value_head_dim",
    "linear_conv_kernel_dim",
    "num_experts",
    "num_experts_per_tok",
    "moe_intermediate_size",
    "shared_expert_intermediate_size",
)


def load_config_json(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing (every checkpoint needs a config.json)") from None
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read: {e.strerror}") from e
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from e
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object at the top level")
    return data


def parse_text_config(raw: dict[str, Any], source: str = "config.json") -> TextConfig:
    """Validate and normalise a checkpoint's config.json (already parsed) into a TextConfig."""
    model_type = raw.get("model_type")
    if model_type in FULL_MODEL_TYPES:
        text = raw.get("text_config")
        if not isinstance(text, dict):
            raise CheckpointError(f"{source}: field 'text_config' missing or not an object (model_type {model_type!r})")
        prefix = "text_config."
    elif model_type in TEXT_MODEL_TYPES:
        text, prefix = raw, ""
    else:
        raise UnsupportedError(
            f"{source}: field 'model_type' is {model_type!r}; supported: "
            + ", ".join(repr(t) for t in FULL_MODEL_TYPES + TEXT_MODEL_TYPES)
        )

    def need_int(name: str, minimum: int = 1) -> int:
        if name not in text:
            raise CheckpointError(f"{source}: missing field '{prefix}{name}'")
        v = text[name]
        if not isinstance(v, int) or isinstance(v, bool) or v < minimum:
            raise CheckpointError(f"{source}: field '{prefix}{name}' must be an integer >= {minimum}, got {v!r}")
        return v

    ints = {name: need_int(name) for name in _REQUIRED_INT}

    n_layers = ints["num_hidden_layers"]
    layer_types = text.get("layer_types")
    if layer_types is None:
        interval = text.get("full_attention_interval", 4)
        layer_types = ["full_attention" if (i + 1) % interval == 0 else "linear_attention" for i in range(n_layers)]
    if not isinstance(layer_types, list) or len(layer_types) != n_layers:
        raise CheckpointError(
            f"{source}: field '{prefix}layer_types' must list {n_layers} entries (num_hidden_layers), "
            f"got {layer_types!r:.200}"
        )
    for i, t in enumerate(layer_types):
        if t not in LAYER_KINDS:
            raise CheckpointError(f"{source}: field '{prefix}layer_types[{i}]' is {t!r}; expected one of {LAYER_KINDS}")

    rope = text.get("rope_parameters") or text.get("rope_scaling") or {}
    if not isinstance(rope, dict):
        raise CheckpointError(f"{source}: field '{prefix}rope_parameters' must be an object")
    rope_theta = rope.get("rope_theta", text.get("rope_theta"))
    if not isinstance(rope_theta, (int, float)) or isinstance(rope_theta, bool) or rope_theta <= 0:
        raise CheckpointError(
            f"{source}: missing or bad field '{prefix}rope_parameters.rope_theta' (got {rope_theta!r})"
        )
    prf = rope.get("partial_rotary_factor", text.get("partial_rotary_factor", 0.25))
    if not isinstance(prf, (int, float)) or not 0 < prf <= 1:
        raise CheckpointError(f"{source}: field '{prefix}rope_parameters.partial_rotary_factor' must be in (0, 1], got {prf!r}")
    eps = text.get("rms_norm_eps", 1e-6)
    if not isinstance(eps, (int, float)) or not eps > 0:
        raise CheckpointError(f"{source}: field '{prefix}rms_norm_eps' must be > 0, got {eps!r}")

    cfg = TextConfig(
        model_type=model_type,
        layer_types=tuple(layer_types),
        rms_norm_eps=float(eps),
        rope_theta=float(rope_theta),
        partial_rotary_factor=float(prf),
        max_position_embeddings=int(text.get("max_position_embeddings", 262144)),
        tie_word_embeddings=bool(text.get("tie_word_embeddings", raw.get("tie_word_embeddings", False))),
        eos_token_id=text.get("eos_token_id", raw.get("eos_token_id")),
        bos_token_id=text.get("bos_token_id", raw.get("bos_token_id")),
        pad_token_id=text.get("pad_token_id", raw.get("pad_token_id")),
        **ints,
    )
    _check_ratios(cfg, source, prefix)
    return cfg


def _check_ratios(cfg: TextConfig, source: str, prefix: str) -> None:
    def bad(msg: str) -> CheckpointError:
        return CheckpointError(f"{source}: {msg}")

    if cfg.num_attention_heads % cfg.num_key_value_heads:
        raise bad(
            f"'{prefix}num_attention_heads' ({cfg.num_attention_heads}) must be a multiple of "
            f"'{prefix}num_key_value_heads' ({cfg.num_key_value_heads})"
        )
    if cfg.linear_num_value_heads % cfg.linear_num_key_heads:
        raise bad(
            f"'{prefix}linear_num_value_heads' ({cfg.linear_num_value_heads}) must be a multiple of "
            f"'{prefix}linear_num_key_heads' ({cfg.linear_num_key_heads})"
        )
    if cfg.num_experts_per_tok > cfg.num_experts:
        raise bad(
            f"'{prefix}num_experts_per_tok' ({cfg.num_experts_per_tok}) exceeds '{prefix}num_experts' ({cfg.num_experts})"
        )
    if cfg.rotary_dim % 2 or cfg.rotary_dim == 0:
        raise bad(
            f"'{prefix}head_dim' x partial_rotary_factor = {cfg.head_dim * cfg.partial_rotary_factor} "
            "must be a positive even number of rotary dims"
        )
