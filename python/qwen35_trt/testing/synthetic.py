"""Synthetic ModelOpt NVFP4 checkpoints with the real Qwen3.5-35B-A3B text dimensions, in seconds.

``make_synthetic_checkpoint`` writes random but well-formed bytes laid out exactly like a
ModelOpt 0.47 ``export_hf_checkpoint`` of ``Qwen3_5MoeForCausalLM`` (checked against a real
tiny export): ``config.json`` with ``quantization_config``, ``hf_quant_config.json``,
``generation_config.json`` and safetensors shards with an index. Only ``num_layers`` decoder
layers are written, so benchmarks see full-size tensors (vocab 248320, 256 experts) without the
40-layer model's 20 GB; ``overrides`` shrinks any config field for fast tests.

The expected tensors come from ``layout.model_layout`` (the list the reader validates against),
so this generator cannot drift from the reader. What ModelOpt's default NVFP4 recipe quantizes
(REFERENCE.md section 2): every linear except ``in_proj_a``/``in_proj_b``, the router
``mlp.gate``, ``shared_expert_gate`` and ``lm_head``; embeddings, conv1d, norms, ``A_log`` and
``dt_bias`` stay BF16.

Tensor contents (numpy only, seeded; each tensor's bytes depend only on ``seed``, its name and
its shape, not on sharding or the number of layers):
- NVFP4 ``weight`` U8 [out, in/2]: uniformly random bytes (any byte is two valid E2M1 codes).
- ``weight_scale`` F8_E4M3 [out, in/16]: positive finite E4M3 codes, exponent field 8..15
  (2.0 .. 448.0), never the NaN code 0x7F.
- ``weight_scale_2`` / ``input_scale`` F32 []: positive finite scalars, shared like a real
  export: q/k/v and in_proj_qkv/in_proj_z share both; each expert's gate/up share
  ``weight_scale_2``; all routed experts of a layer share one ``input_scale`` per projection,
  and the gate/up one equals the shared expert's (they read the same input).
- BF16: draws of ``0.02 * N(0, 1)`` rounded to bfloat16 (round to nearest even), sampled by
  inverse CDF from a 65536-entry quantile table so 2 GB of embeddings take seconds, not minutes.

Files are written like ``save_pretrained``: tensors assigned to shards in state-dict order
(a new shard when the next tensor would overflow ``shard_bytes``; a tensor larger than
``shard_bytes`` gets a shard of its own), and inside each file the data ordered the way the
safetensors library orders it (wider dtypes first, then by name). Each tensor is generated and
streamed through ``SafetensorsWriter`` on its own, so memory stays at about the largest tensor.
"""

from __future__ import annotations

import copy
import json
import time
import zlib
from functools import lru_cache
from pathlib import Path
from statistics import NormalDist
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from ..config import parse_text_config
from ..layout import EXPERT_PROJECTIONS, ExpertsSpec, LinearSpec, ParamSpec, model_layout
from ..safetensors_io import SafetensorsWriter, TensorSpec

MODELOPT_VERSION = "0.47.0"
TRANSFORMERS_VERSION = "5.24.0"
CHECKPOINT_PREFIX = "model.language_model."  # the hub prefix ModelOpt keeps on text weights
INDEX_FILE = "model.safetensors.index.json"
MARKER_FILE = "qwen35_trt_synthetic.json"
DEFAULT_SHARD_BYTES = 512 * 2**20
GROUP_SIZE = 16

# Qwen3.5-35B-A3B text model (REFERENCE.md section 1), everything but the layer count.
FULL_TEXT_CONFIG: dict[str, Any] = {
    "vocab_size": 248320,
    "hidden_size": 2048,
    "num_attention_heads": 16,
    "num_key_value_heads": 2,
    "head_dim": 256,
    "linear_num_key_heads": 16,
    "linear_num_value_heads": 32,
    "linear_key_head_dim": 128,
    "linear_value_head_dim": 128,
    "linear_conv_kernel_dim": 4,
    "num_experts": 256,
    "num_experts_per_tok": 8,
    "moe_intermediate_size": 512,
    "shared_expert_intermediate_size": 512,
    "rms_norm_eps": 1e-6,
    "max_position_embeddings": 262144,
    "tie_word_embeddings": False,
}
FULL_ROPE_PARAMETERS: dict[str, Any] = {
    "rope_type": "default",
    "rope_theta": 1e7,
    "partial_rotary_factor": 0.25,
    "mrope_section": [11, 11, 10],
}
# Fields an export carries that the reader ignores; kept so config.json looks like the real one.
_EXPORT_EXTRAS: dict[str, Any] = {
    "architectures": ["Qwen3_5MoeForCausalLM"],
    "attention_bias": False,
    "attention_dropout": 0.0,
    "dtype": "bfloat16",
    "hidden_act": "silu",
    "initializer_range": 0.02,
    "output_router_logits": False,
    "router_aux_loss_coef": 0.001,
    "transformers_version": TRANSFORMERS_VERSION,
    "use_cache": True,
}

# Linears ModelOpt's NVFP4_DEFAULT_CFG leaves in BF16 (matched on the canonical name's tail).
BF16_LINEAR_SUFFIXES = (
    ".linear_attn.in_proj_a",
    ".linear_attn.in_proj_b",
    ".mlp.gate",
    ".mlp.shared_expert_gate",
)

# safetensors writes wider dtypes first (its Dtype enum order, descending), then by name.
_SAFETENSORS_DTYPE_RANK = {"F32": 3, "BF16": 2, "F8_E4M3": 1, "U8": 0}

# Plausible magnitudes, as in a real export of 0.02-scaled weights.
_INPUT_SCALE_RANGE = (5e-4, 3e-3)
_WEIGHT_SCALE_2_RANGE = (2e-5, 4e-5)

_CHUNK = 1 << 22  # elements per generation block: big enough to be fast, small enough for cache


# -- config ------------------------------------------------------------------------------------


def default_layer_types(num_layers: int) -> list[str]:
    """The real 3:1 pattern (every 4th layer full attention), with at least one full layer."""
    if num_layers < 1:
        raise ValueError(f"num_layers must be >= 1, got {num_layers}")
    kinds = ["full_attention" if (i + 1) % 4 == 0 else "linear_attention" for i in range(num_layers)]
    if num_layers > 1 and "full_attention" not in kinds:
        kinds[-1] = "full_attention"
    return kinds


def tiny_overrides() -> dict[str, Any]:
    """The tiny test fixtures' dimensions (tiny_checkpoint.TINY_BASE) as ``overrides``."""
    from .tiny_checkpoint import TINY_BASE

    return {k: copy.deepcopy(v) for k, v in TINY_BASE.items() if k not in ("num_hidden_layers", "layer_types")}


def _mrope_section(rotary_dim: int) -> list[int]:
    """Split rotary_dim/2 frequencies over (t, h, w) like [11, 11, 10] for 64 rotary dims."""
    half = rotary_dim // 2
    parts = [half // 3] * 3
    for i in range(half - sum(parts)):
        parts[i] += 1
    return parts


def synthetic_config(
    num_layers: int | None = None,
    layer_types: Sequence[str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The config.json dict (without ``quantization_config``) of a synthetic checkpoint.

    ``overrides`` replaces top-level fields; ``rope_theta``, ``partial_rotary_factor``,
    ``mrope_section`` and ``rope_type`` go into ``rope_parameters``. ``layer_types`` /
    ``num_hidden_layers`` may be given there too. The result is validated with
    ``config.parse_text_config``.
    """
    ov = copy.deepcopy(dict(overrides or {}))
    if "layer_types" in ov:
        given = ov.pop("layer_types")
        if layer_types is not None and list(layer_types) != list(given):
            raise ValueError("layer_types given both as an argument and in overrides, with different values")
        layer_types = given
    if "num_hidden_layers" in ov:
        n = ov.pop("num_hidden_layers")
        if num_layers is not None and num_layers != n:
            raise ValueError(f"num_layers={num_layers} but overrides['num_hidden_layers']={n}")
        num_layers = n
    if layer_types is None:
        layer_types = default_layer_types(2 if num_layers is None else num_layers)
    layer_types = list(layer_types)
    if num_layers is not None and num_layers != len(layer_types):
        raise ValueError(f"num_layers={num_layers} but layer_types has {len(layer_types)} entries")

    rope = copy.deepcopy(FULL_ROPE_PARAMETERS)
    rope.update(ov.pop("rope_parameters", None) or {})
    explicit_mrope = "mrope_section" in ov or rope["mrope_section"] != FULL_ROPE_PARAMETERS["mrope_section"]
    for key in ("rope_type", "rope_theta", "partial_rotary_factor", "mrope_section"):
        if key in ov:
            rope[key] = ov.pop(key)

    cfg: dict[str, Any] = {**_EXPORT_EXTRAS, **FULL_TEXT_CONFIG}
    cfg.update(ov)
    cfg["model_type"] = "qwen3_5_moe_text"
    cfg["num_hidden_layers"] = len(layer_types)
    cfg["layer_types"] = layer_types
    if not explicit_mrope:
        rope["mrope_section"] = _mrope_section(int(cfg["head_dim"] * rope["partial_rotary_factor"]))
    cfg["rope_parameters"] = rope
    # Synthetic token ids: the last id ends a sequence and pads, as the tiny fixtures do.
    cfg.setdefault("eos_token_id", cfg["vocab_size"] - 1)
    cfg.setdefault("pad_token_id", cfg["eos_token_id"])
    cfg.setdefault("bos_token_id", None)
    cfg = dict(sorted(cfg.items()))  # ModelOpt writes config.json with sorted keys

    parsed = parse_text_config(cfg, source="synthetic config")
    for spec in _linear_specs(model_layout(parsed)):
        if spec.in_features % GROUP_SIZE:
            raise ValueError(
                f"'{spec.name}' has in_features {spec.in_features}, not a multiple of the NVFP4 group "
                f"size {GROUP_SIZE}; choose overrides that keep every input width a multiple of 16"
            )
    return cfg


def _linear_specs(layout) -> Iterable[LinearSpec]:
    for lay in layout:
        for spec in lay.specs:
            if isinstance(spec, LinearSpec):
                yield spec
            elif isinstance(spec, ExpertsSpec):
                for proj in EXPERT_PROJECTIONS:
                    out, k = spec.projection_shape(proj)
                    yield LinearSpec(f"{spec.name}.{proj}", out, k)


def is_quantized(linear_name: str) -> bool:
    """Whether ModelOpt's default NVFP4 recipe quantizes this linear (canonical name)."""
    return linear_name != "lm_head" and not linear_name.endswith(BF16_LINEAR_SUFFIXES)


def _ckpt_name(canonical: str) -> str:
    return canonical if canonical.startswith("lm_head") else CHECKPOINT_PREFIX + canonical


def quantization_blocks(layout) -> tuple[dict[str, Any], dict[str, Any]]:
    """(hf_quant_config.json, config.json's quantization_config) as ModelOpt 0.47 writes them."""
    excluded = set()
    for lay in layout:
        for spec in lay.specs:
            if isinstance(spec, LinearSpec) and not is_quantized(spec.name):
                excluded.add(_ckpt_name(spec.name))
            elif isinstance(spec, ParamSpec) and spec.name.endswith(("embed_tokens.weight", "conv1d.weight")):
                excluded.add(_ckpt_name(spec.name.rsplit(".", 1)[0]))
    excluded_list = sorted(excluded)
    producer = {"name": "modelopt", "version": MODELOPT_VERSION}
    hf_quant = {
        "producer": producer,
        "quantization": {
            "quant_algo": "NVFP4",
            "kv_cache_quant_algo": None,
            "group_size": GROUP_SIZE,
            "exclude_modules": excluded_list,
        },
    }
    fp4 = {"dynamic": False, "num_bits": 4, "type": "float", "group_size": GROUP_SIZE}
    quant_config = {
        "config_groups": {"group_0": {"input_activations": dict(fp4), "weights": dict(fp4), "targets": ["Linear"]}},
        "ignore": excluded_list,
        "quant_algo": "NVFP4",
        "producer": dict(producer),
        "quant_method": "modelopt",
    }
    return hf_quant, quant_config


# -- tensor plan -------------------------------------------------------------------------------


class _Planned:
    """One checkpoint tensor: its spec, how to fill it, and (for scalars) its value."""

    __slots__ = ("spec", "fill", "value")

    def __init__(self, name: str, dtype: str, shape: tuple[int, ...], fill: str, value: float | None = None):
        self.spec = TensorSpec(name, dtype, shape)
        self.fill = fill  # "bytes" | "fp8_scale" | "bf16_normal" | "scalar"
        self.value = value


def _scalar(seed: int, key: str, lo_hi: tuple[float, float]) -> float:
    """A positive float32 scale that depends only on (seed, key)."""
    rng = np.random.Generator(np.random.PCG64([seed, zlib.crc32(key.encode()), 1]))
    return float(np.float32(rng.uniform(*lo_hi)))


def plan_tensors(cfg_dict: Mapping[str, Any], seed: int = 0) -> list[_Planned]:
    """Every tensor of the checkpoint, in state-dict order (embed, layers, norm, lm_head)."""
    layout = model_layout(parse_text_config(dict(cfg_dict), source="synthetic config"))
    out: list[_Planned] = []

    def nvfp4(canonical: str, n: int, k: int, input_key: str, ws2_key: str) -> None:
        name = _ckpt_name(canonical)
        out.append(_Planned(f"{name}.weight", "U8", (n, k // 2), "bytes"))
        out.append(_Planned(f"{name}.weight_scale", "F8_E4M3", (n, k // GROUP_SIZE), "fp8_scale"))
        ws2 = _scalar(seed, ws2_key + ":weight_scale_2", _WEIGHT_SCALE_2_RANGE)
        out.append(_Planned(f"{name}.weight_scale_2", "F32", (), "scalar", ws2))
        out.append(_Planned(f"{name}.input_scale", "F32", (), "scalar", _scalar(seed, input_key + ":input_scale", _INPUT_SCALE_RANGE)))

    def share_key(canonical: str) -> str:
        """Linears reading the same input share their scalars (keyed by the group's first member)."""
        for members, leader in (
            (("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"), "self_attn.q_proj"),
            (("linear_attn.in_proj_qkv", "linear_attn.in_proj_z"), "linear_attn.in_proj_qkv"),
            (("shared_expert.gate_proj", "shared_expert.up_proj"), "moe_input"),
        ):
            for m in members:
                if canonical.endswith("." + m):
                    return canonical[: -len(m)] + leader
        return canonical

    for lay in layout:
        for spec in lay.specs:
            if isinstance(spec, ParamSpec):
                out.append(_Planned(_ckpt_name(spec.name), "BF16", spec.shape, "bf16_normal"))
            elif isinstance(spec, LinearSpec):
                if is_quantized(spec.name):
                    key = share_key(spec.name)
                    nvfp4(spec.name, spec.out_features, spec.in_features, key, key)
                else:
                    out.append(_Planned(_ckpt_name(spec.name) + ".weight", "BF16", (spec.out_features, spec.in_features), "bf16_normal"))
            else:
                mlp = spec.name.rsplit(".", 1)[0]  # layers.N.mlp
                for e in range(spec.num_experts):
                    for proj in EXPERT_PROJECTIONS:
                        n, k = spec.projection_shape(proj)
                        if proj == "down_proj":
                            input_key, ws2_key = f"{mlp}.experts.down_proj", f"{spec.name}.{e}.down_proj"
                        else:  # gate and up read the MoE input, like the shared expert's gate/up
                            input_key, ws2_key = f"{mlp}.moe_input", f"{spec.name}.{e}.gate_up"
                        nvfp4(f"{spec.name}.{e}.{proj}", n, k, input_key, ws2_key)
    return out


def assign_shards(tensors: Sequence[_Planned], shard_bytes: int) -> list[list[_Planned]]:
    """Split like huggingface_hub's state-dict sharding, then order each file like safetensors."""
    if shard_bytes < 1:
        raise ValueError(f"shard_bytes must be >= 1, got {shard_bytes}")
    shards: list[list[_Planned]] = []
    current: list[_Planned] = []
    size = 0
    for t in tensors:
        n = t.spec.nbytes
        if n > shard_bytes:
            shards.append([t])
            continue
        if current and size + n > shard_bytes:
            shards.append(current)
            current, size = [], 0
        current.append(t)
        size += n
    if current:
        shards.append(current)
    return [sorted(s, key=lambda t: (-_SAFETENSORS_DTYPE_RANK[t.spec.dtype], t.spec.name)) for s in shards]


def shard_file_names(count: int) -> list[str]:
    if count == 1:
        return ["model.safetensors"]
    return [f"model-{i + 1:05d}-of-{count:05d}.safetensors" for i in range(count)]


# -- random bytes ------------------------------------------------------------------------------


def float32_to_bf16_bits(x: np.ndarray) -> np.ndarray:
    """bfloat16 bit patterns (uint16) of finite float32 values, rounding to nearest even."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounded = u + (np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1)))
    return (rounded >> np.uint32(16)).astype(np.uint16)


@lru_cache(maxsize=1)
def _bf16_normal_table() -> np.ndarray:
    """bf16 bits of 0.02 * the 65536 mid-quantiles of N(0, 1): a uint16 index draws a normal."""
    inv = NormalDist().inv_cdf
    q = np.array([inv((i + 0.5) / 65536.0) for i in range(65536)], dtype=np.float64)
    return float32_to_bf16_bits((0.02 * q).astype(np.float32))


def _tensor_rng(seed: int, name: str) -> np.random.PCG64:
    return np.random.PCG64([seed, zlib.crc32(name.encode()), 0])


def _random_bytes(bitgen: np.random.PCG64, n: int) -> np.ndarray:
    """n uniformly random bytes (a fresh, writable uint8 array)."""
    return bitgen.random_raw((n + 7) // 8).view(np.uint8)[:n]


def _fill(t: _Planned, seed: int) -> np.ndarray:
    spec = t.spec
    if t.fill == "scalar":
        return np.array(t.value, dtype=np.float32)
    n = int(np.prod(spec.shape, dtype=np.int64))
    bitgen = _tensor_rng(seed, spec.name)
    if t.fill == "bytes":
        return _random_bytes(bitgen, n).reshape(spec.shape)
    if t.fill == "fp8_scale":
        # E4M3 0 eeee mmm with eeee in 8..15: 2.0 .. 448.0; 0x7F (NaN) folds onto 0x7E (448).
        b = _random_bytes(bitgen, n)
        np.bitwise_and(b, 0x3F, out=b)
        np.bitwise_or(b, 0x40, out=b)
        b[b == 0x7F] = 0x7E
        return b.reshape(spec.shape)
    if t.fill == "bf16_normal":
        table = _bf16_normal_table()
        out = np.empty(n, dtype=np.uint16)
        for start in range(0, n, _CHUNK):
            m = min(_CHUNK, n - start)
            out[start : start + m] = table[_random_bytes(bitgen, 2 * m).view(np.uint16)]
        return out.reshape(spec.shape)
    raise AssertionError(t.fill)


# -- writing -----------------------------------------------------------------------------------


def _clear_previous(root: Path) -> None:
    for p in list(root.glob("*.safetensors")) + [root / INDEX_FILE]:
        if p.is_file():
            p.unlink()


def make_synthetic_checkpoint(
    out_dir: str | Path,
    *,
    num_layers: int | None = None,
    layer_types: Sequence[str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    shard_bytes: int = DEFAULT_SHARD_BYTES,
    seed: int = 0,
    progress: bool = False,
    overwrite: bool = False,
) -> Path:
    """Write a synthetic ModelOpt NVFP4 checkpoint to ``out_dir`` and return its path.

    ``num_layers`` (default 2, or ``len(layer_types)``) decoder layers follow the real 3:1
    linear/full pattern with at least one full-attention layer, so the default is one
    ``linear_attention`` and one ``full_attention`` layer. ``overrides`` shrinks config fields
    (``vocab_size=512, hidden_size=128, num_experts=8, ...``). ``shard_bytes`` caps each shard
    (one tensor larger than that gets its own file). With the full dimensions and 2 layers this
    writes ~3.0 GB: ~0.9 GB of layers plus 2 x 1.0 GB of BF16 embed_tokens / lm_head.
    ``out_dir`` may exist; if it already holds safetensors files, ``overwrite=True`` is needed
    (they and the index are deleted first, so stale shards never mix with new ones).
    """
    t_start = time.perf_counter()
    root = Path(out_dir)
    cfg = synthetic_config(num_layers, layer_types, overrides)
    layout = model_layout(parse_text_config(cfg, source="synthetic config"))
    hf_quant, quant_config = quantization_blocks(layout)
    planned = plan_tensors(cfg, seed)
    shards = assign_shards(planned, shard_bytes)
    names = shard_file_names(len(shards))

    root.mkdir(parents=True, exist_ok=True)
    if any(root.glob("*.safetensors")) or (root / INDEX_FILE).exists():
        if not overwrite:
            raise FileExistsError(f"{root}: already holds a checkpoint; pass overwrite=True to replace it")
        _clear_previous(root)

    total = sum(t.spec.nbytes for t in planned)
    if progress:
        print(
            f"synthetic checkpoint: {len(planned)} tensors, {total / 2**30:.2f} GiB in {len(shards)} "
            f"file(s) -> {root}",
            flush=True,
        )
    weight_map: dict[str, str] = {}
    for i, (fname, tensors) in enumerate(zip(names, shards)):
        t0 = time.perf_counter()
        with SafetensorsWriter(root / fname, [t.spec for t in tensors], metadata={"format": "pt"}) as w:
            for t in tensors:
                w.write(t.spec.name, _fill(t, seed))
                weight_map[t.spec.name] = fname
        if progress:
            size = sum(t.spec.nbytes for t in tensors)
            dt = time.perf_counter() - t0
            print(
                f"  [{i + 1}/{len(shards)}] {fname}: {len(tensors)} tensors, {size / 2**20:.1f} MiB "
                f"in {dt:.2f} s ({size / 2**20 / max(dt, 1e-9):.0f} MiB/s)",
                flush=True,
            )
    if len(shards) > 1:
        index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
        (root / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")

    (root / "config.json").write_text(json.dumps({**cfg, "quantization_config": quant_config}, indent=4) + "\n")
    (root / "hf_quant_config.json").write_text(json.dumps(hf_quant, indent=4) + "\n")
    generation = {
        "_from_model_config": True,
        "eos_token_id": cfg["eos_token_id"],
        "output_attentions": False,
        "output_hidden_states": False,
        "pad_token_id": cfg["pad_token_id"],
        "transformers_version": TRANSFORMERS_VERSION,
        "use_cache": True,
    }
    (root / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")
    marker = {"generator": "qwen35_trt.testing.synthetic", "seed": seed, "layer_types": cfg["layer_types"],
              "overrides": dict(overrides or {}), "shard_bytes": shard_bytes, "total_size": total}
    (root / MARKER_FILE).write_text(json.dumps(marker, indent=2, default=str) + "\n")
    if progress:
        dt = time.perf_counter() - t_start
        print(f"synthetic checkpoint written in {dt:.1f} s ({total / 2**30 / max(dt, 1e-9):.2f} GiB/s)", flush=True)
    return root
