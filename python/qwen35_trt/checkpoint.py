"""Read and validate a ModelOpt NVFP4 Qwen3.5 checkpoint without loading it.

``open_checkpoint(path)`` parses config.json, the quantization block and every safetensors
header (single file or sharded with ``model.safetensors.index.json``), then resolves each module
of ``layout.model_layout(config)`` to the tensors that hold it, classifying linears by the dtypes
actually present: NVFP4 (uint8 weight + FP8 block scales + fp32 scalars), BF16, or FP8 per-tensor
(recognised, rejected as not yet supported). Tensor bytes are read only when a caller asks, one
module at a time (``Checkpoint.load_*``), and the scale values are checked as they are read.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .config import TextConfig, load_config_json, parse_text_config
from .errors import CheckpointError, UnsupportedError
from .layout import EXPERT_PROJECTIONS, FLOAT_DTYPES, ExpertsSpec, LayerLayout, LinearSpec, ParamSpec, model_layout
from .safetensors_io import SafetensorsFile, TensorInfo, read_tensor

GROUP_SIZE = 16
INDEX_FILE = "model.safetensors.index.json"
# Top-level prefixes that hold parts of the release we do not convert (vision tower, MTP head).
SKIPPED_PREFIXES = ("model.visual.", "visual.", "mtp.", "model.mtp.")
TEXT_PREFIXES = ("model.language_model.", "model.")
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
    "chat_template.jinja",
    "generation_config.json",
)
NVFP4_ROLES = ("weight", "weight_scale", "weight_scale_2", "input_scale")
SCALAR_ROLES = ("weight_scale_2", "input_scale")


@dataclass(frozen=True)
class QuantConfig:
    quant_algo: str
    group_size: int
    kv_cache_quant_algo: str | None
    exclude_modules: tuple[str, ...]
    producer: dict[str, Any]
    source: str  # which file the block came from


@dataclass
class Linear:
    """One linear module resolved to its tensors. ``fmt`` is "nvfp4" or "bf16"."""

    spec: LinearSpec
    fmt: str
    tensors: dict[str, TensorInfo]


@dataclass
class Experts:
    """Routed experts of one layer: per-expert 2-D linears or fused 3-D tensors."""

    spec: ExpertsSpec
    fmt: str  # "nvfp4" | "bf16"
    storage: str  # "per_expert" | "fused"
    per_expert: dict[str, list[Linear]] = field(default_factory=dict)  # proj -> [E] linears
    # fused: proj -> (role -> (tensor, first row, row count)); gate/up may share one gate_up tensor
    fused: dict[str, dict[str, tuple[TensorInfo, int, int]]] = field(default_factory=dict)

    @property
    def has_input_scale(self) -> bool:
        if self.storage == "per_expert":
            return all("input_scale" in lin.tensors for lins in self.per_expert.values() for lin in lins)
        return all("input_scale" in roles for roles in self.fused.values())


@dataclass
class Param:
    spec: ParamSpec
    tensor: TensorInfo


Module = Linear | Experts | Param


@dataclass
class Checkpoint:
    path: Path
    config: TextConfig
    quant: QuantConfig
    raw_config: dict[str, Any]
    tensors: dict[str, TensorInfo]  # every tensor of every shard, by checkpoint name
    files: list[SafetensorsFile]
    prefix: str
    layers: list[tuple[LayerLayout, list[Module]]]
    skipped: dict[str, int]  # skipped prefix -> tensor count
    unused: list[str]  # text-model tensors no module claimed
    tokenizer_files: list[Path]

    def modules(self):
        for _, mods in self.layers:
            yield from mods

    # -- summaries ---------------------------------------------------------------------------

    def module_formats(self) -> Counter:
        """Counts of linear modules by format; each routed expert projection counts once."""
        c: Counter = Counter()
        for m in self.modules():
            if isinstance(m, Linear):
                c[m.fmt] += 1
            elif isinstance(m, Experts):
                c[m.fmt] += m.spec.num_experts * len(EXPERT_PROJECTIONS)
        return c

    def bytes_by_dtype(self) -> dict[str, int]:
        c: Counter = Counter()
        for name, t in self.tensors.items():
            if not name.startswith(SKIPPED_PREFIXES):
                c[t.dtype] += t.nbytes
        return dict(sorted(c.items()))

    def header_digest(self) -> str:
        """sha256 over every shard's header, in file-name order: identifies the checkpoint cheaply."""
        h = hashlib.sha256()
        for f in sorted(self.files, key=lambda f: f.path.name):
            h.update(f.path.name.encode())
            h.update(f.header_bytes)
        return h.hexdigest()

    # -- reading tensors -----------------------------------------------------------------------

    def load_linear(self, lin: Linear) -> dict[str, np.ndarray]:
        out = {role: read_tensor(t) for role, t in lin.tensors.items()}
        if lin.fmt == "nvfp4":
            _check_scales(out, {r: t.name for r, t in lin.tensors.items()})
        return out

    def load_experts(self, ex: Experts, proj: str) -> dict[str, np.ndarray]:
        """One projection of all experts, stacked: weight [E, N, K/2] (nvfp4) or [E, N, K] (bf16),
        weight_scale [E, N, K/16], weight_scale_2 [E], input_scale [E] when present."""
        E = ex.spec.num_experts
        out: dict[str, np.ndarray] = {}
        if ex.storage == "per_expert":
            for e, lin in enumerate(ex.per_expert[proj]):
                arrays = self.load_linear(lin)  # checks this expert's scales
                for role, a in arrays.items():
                    if role not in out:  # fill preallocated [E, ...] arrays: no second copy
                        out[role] = np.empty((E, *(() if role in SCALAR_ROLES else a.shape)), a.dtype)
                    out[role][e] = a.reshape(()) if role in SCALAR_ROLES else a
            return out
        for role, (t, row0, rows) in ex.fused[proj].items():
            arr = read_tensor(t)
            if role in SCALAR_ROLES:  # [E], [E, 1], or one scalar shared by all experts
                out[role] = np.ascontiguousarray(np.broadcast_to(arr.reshape(-1), (E,)) if arr.size == 1 else arr.reshape(E))
            else:
                out[role] = np.ascontiguousarray(arr[:, row0 : row0 + rows])
        if ex.fmt == "nvfp4":
            _check_scales(out, {role: t.name for role, (t, _, _) in ex.fused[proj].items()})
        return out


def _check_scales(arrays: dict[str, np.ndarray], names: dict[str, str]) -> None:
    """Global scales must be finite and > 0; FP8 block scales finite and not negative (a zero
    block scale is a block of zeros). ``names``: role -> checkpoint tensor name, for messages."""
    for role in ("weight_scale_2", "input_scale"):
        if role in arrays:
            v = arrays[role].astype(np.float32)
            bad = ~np.isfinite(v) | (v <= 0)
            if bad.any():
                raise CheckpointError(
                    f"tensor '{names[role]}': scale must be finite and > 0, got {v.reshape(-1)[np.argmax(bad.reshape(-1))]}"
                )
    if "weight_scale" in arrays:
        b = arrays["weight_scale"].reshape(-1)
        nan = (b & 0x7F) == 0x7F  # E4M3FN has no infinities; 0x7F / 0xFF are NaN
        neg = ((b & 0x80) != 0) & ((b & 0x7F) != 0)
        if nan.any():
            raise CheckpointError(f"tensor '{names['weight_scale']}': {int(nan.sum())} FP8 block scales are NaN")
        if neg.any():
            raise CheckpointError(f"tensor '{names['weight_scale']}': {int(neg.sum())} FP8 block scales are negative")


# -- opening ---------------------------------------------------------------------------------


def open_checkpoint(path: str | Path) -> Checkpoint:
    root = Path(path)
    if not root.is_dir():
        raise CheckpointError(f"{root}: not a directory (expected a Hugging Face checkpoint folder)")
    raw = load_config_json(root / "config.json")
    cfg = parse_text_config(raw, source=str(root / "config.json"))
    quant = read_quant_config(root, raw)
    files, tensors = _read_shards(root)
    prefix = next((p for p in TEXT_PREFIXES if any(n.startswith(p + "layers.") for n in tensors)), None)
    if prefix is None:
        raise CheckpointError(
            f"{root}: no decoder layer tensors found (expected names like "
            "'model.language_model.layers.0.input_layernorm.weight')"
        )
    skipped: Counter = Counter()
    for n in tensors:
        for sp in SKIPPED_PREFIXES:
            if n.startswith(sp):
                skipped[sp.rstrip(".")] += 1
                break
    resolver = _Resolver(tensors, prefix, cfg)
    layers = [(lay, [resolver.resolve(s) for s in lay.specs]) for lay in model_layout(cfg)]
    claimed = resolver.claimed
    unused = sorted(n for n in tensors if n not in claimed and not n.startswith(SKIPPED_PREFIXES))
    toks = [root / f for f in TOKENIZER_FILES if (root / f).is_file()]
    return Checkpoint(root, cfg, quant, raw, tensors, files, prefix, layers, dict(skipped), unused, toks)


def read_quant_config(root: Path, raw_config: dict[str, Any]) -> QuantConfig:
    hf = root / "hf_quant_config.json"
    if hf.is_file():
        data = load_config_json(hf)
        block = data.get("quantization")
        if not isinstance(block, dict):
            raise CheckpointError(f"{hf}: field 'quantization' missing or not an object")
        source = str(hf)
        producer = data.get("producer") or {}
        excludes = block.get("exclude_modules") or []
        group = block.get("group_size")
    elif isinstance(raw_config.get("quantization_config"), dict):
        block = raw_config["quantization_config"]
        source = f"{root / 'config.json'} quantization_config"
        if block.get("quant_method", "modelopt") != "modelopt":
            raise UnsupportedError(
                f"{source}: field 'quant_method' is {block.get('quant_method')!r}; only ModelOpt ('modelopt') checkpoints are supported"
            )
        producer = block.get("producer") or {}
        excludes = block.get("ignore") or block.get("exclude_modules") or []
        group = block.get("group_size")
        if group is None:
            groups = block.get("config_groups") or {}
            for g in groups.values() if isinstance(groups, dict) else []:
                w = (g or {}).get("weights") or {}
                if "group_size" in w:
                    group = w["group_size"]
                    break
    else:
        raise CheckpointError(
            f"{root}: not a ModelOpt quantized checkpoint: no hf_quant_config.json and no "
            "'quantization_config' in config.json"
        )
    algo = block.get("quant_algo")
    if algo == "MIXED_PRECISION":
        raise UnsupportedError(f"{source}: field 'quant_algo' is 'MIXED_PRECISION': mixed-precision checkpoints are not yet supported")
    if algo != "NVFP4":
        raise UnsupportedError(f"{source}: field 'quant_algo' is {algo!r}; only 'NVFP4' is supported")
    if group is None:
        raise CheckpointError(f"{source}: missing field 'group_size'")
    if group != GROUP_SIZE:
        raise UnsupportedError(f"{source}: field 'group_size' is {group!r}; NVFP4 requires {GROUP_SIZE}")
    kv = block.get("kv_cache_quant_algo")
    if not isinstance(excludes, list):
        raise CheckpointError(f"{source}: the exclude list must be a JSON list")
    return QuantConfig(algo, group, kv, tuple(str(e) for e in excludes), producer, source)


def _read_shards(root: Path) -> tuple[list[SafetensorsFile], dict[str, TensorInfo]]:
    index_path = root / INDEX_FILE
    if index_path.is_file():
        index = load_config_json(index_path)
        wmap = index.get("weight_map")
        if not isinstance(wmap, dict) or not wmap:
            raise CheckpointError(f"{index_path}: field 'weight_map' missing or empty")
        names = sorted(set(wmap.values()))
        for n in names:
            if not isinstance(n, str) or "/" in n or "\\" in n or n.startswith("."):
                raise CheckpointError(f"{index_path}: weight_map names an invalid shard file {n!r}")
            if not (root / n).is_file():
                first = next(k for k, v in wmap.items() if v == n)
                raise CheckpointError(f"{index_path}: shard file '{n}' (holding e.g. '{first}') does not exist")
        paths = [root / n for n in names]
    else:
        paths = sorted(root.glob("*.safetensors"))
        wmap = None
        if not paths:
            raise CheckpointError(f"{root}: no *.safetensors files and no {INDEX_FILE}")
    files = [SafetensorsFile(p) for p in paths]
    tensors: dict[str, TensorInfo] = {}
    for f in files:
        for name, info in f.tensors.items():
            if name in tensors:
                raise CheckpointError(
                    f"tensor '{name}' appears in two shards: '{tensors[name].path.name}' and '{f.path.name}'"
                )
            tensors[name] = info
    if wmap is not None:
        for name, shard in wmap.items():
            if name not in tensors:
                raise CheckpointError(f"{index_path}: tensor '{name}' is mapped to '{shard}' but that file does not hold it")
            if tensors[name].path.name != shard:
                raise CheckpointError(
                    f"{index_path}: tensor '{name}' is mapped to '{shard}' but found in '{tensors[name].path.name}'"
                )
    return files, tensors


class _Resolver:
    """Finds and type-checks the checkpoint tensors behind each expected module."""

    def __init__(self, tensors: dict[str, TensorInfo], prefix: str, cfg: TextConfig):
        self.tensors = tensors
        self.prefix = prefix
        self.cfg = cfg
        self.claimed: set[str] = set()

    def ckpt_name(self, canonical: str) -> str:
        return canonical if canonical.startswith("lm_head") else self.prefix + canonical

    def take(self, name: str) -> TensorInfo | None:
        t = self.tensors.get(name)
        if t is not None:
            self.claimed.add(name)
        return t

    def resolve(self, spec) -> Module:
        if isinstance(spec, ParamSpec):
            return self.param(spec)
        if isinstance(spec, LinearSpec):
            return self.linear(spec, self.ckpt_name(spec.name))
        return self.experts(spec)

    def param(self, spec: ParamSpec) -> Param:
        name = self.ckpt_name(spec.name)
        t = self.take(name)
        if t is None and spec.name == "embed_tokens.weight":
            raise CheckpointError(f"missing tensor '{name}'")
        if t is None:
            raise CheckpointError(f"missing tensor '{name}' (expected {list(spec.shape)})")
        if t.dtype not in FLOAT_DTYPES:
            raise CheckpointError(f"tensor '{name}': dtype {t.dtype}, expected one of {', '.join(FLOAT_DTYPES)}")
        if t.shape != spec.shape:
            raise CheckpointError(f"tensor '{name}': shape {list(t.shape)}, expected {list(spec.shape)}")
        return Param(spec, t)

    def linear(self, spec: LinearSpec, name: str, batch: tuple[int, ...] = (), hub_style: bool = False) -> Linear:
        """Resolve ``name.weight`` (+ ``name.weight_scale`` ...), or with ``hub_style`` the fused
        expert parameter ``name`` itself (+ ``name_weight_scale`` ...)."""
        names = {r: f"{name}_{r}" if hub_style else f"{name}.{r}" for r in NVFP4_ROLES}
        if hub_style:
            names["weight"] = name
        w = self.take(names["weight"])
        if w is None:
            raise CheckpointError(f"missing tensor '{names['weight']}' (linear [{spec.out_features}, {spec.in_features}])")
        found = {r: t for r in NVFP4_ROLES[1:] if (t := self.take(names[r])) is not None}
        out, k = spec.out_features, spec.in_features
        if w.dtype == "U8":
            return Linear(spec, "nvfp4", {"weight": w, **self.nvfp4_parts(names, w, found, batch, out, k)})
        if w.dtype == "F8_E4M3":
            raise UnsupportedError(f"tensor '{names['weight']}': FP8 per-tensor quantized linears are not yet supported")
        if w.dtype == "BF16":
            if w.shape != (*batch, out, k):
                raise CheckpointError(f"tensor '{names['weight']}': shape {list(w.shape)}, expected {[*batch, out, k]}")
            return Linear(spec, "bf16", {"weight": w})
        raise CheckpointError(f"tensor '{names['weight']}': dtype {w.dtype}; expected U8 (NVFP4 packed) or BF16")

    def nvfp4_parts(self, names, w, found, batch, out, k) -> dict[str, TensorInfo]:
        if k % GROUP_SIZE:
            raise CheckpointError(f"tensor '{names['weight']}': in_features {k} is not a multiple of the NVFP4 group size {GROUP_SIZE}")
        if w.shape != (*batch, out, k // 2):
            raise CheckpointError(
                f"tensor '{names['weight']}': shape {list(w.shape)}, expected {[*batch, out, k // 2]} "
                f"(NVFP4 packs two values per byte of a [{out}, {k}] weight)"
            )
        for role in ("weight_scale", "weight_scale_2"):
            if role not in found:
                raise CheckpointError(f"missing tensor '{names[role]}' (NVFP4 linear '{names['weight']}')")
        s = found["weight_scale"]
        if s.dtype != "F8_E4M3":
            raise CheckpointError(f"tensor '{names['weight_scale']}': dtype {s.dtype}, expected F8_E4M3")
        if s.shape != (*batch, out, k // GROUP_SIZE):
            if len(s.shape) == len(batch) + 2 and s.shape[-1] > 0 and k % s.shape[-1] == 0 and s.shape[:-1] == (*batch, out):
                raise UnsupportedError(
                    f"tensor '{names['weight_scale']}': shape {list(s.shape)} means group size {k // s.shape[-1]}; "
                    f"NVFP4 requires {GROUP_SIZE}"
                )
            raise CheckpointError(
                f"tensor '{names['weight_scale']}': shape {list(s.shape)}, expected {[*batch, out, k // GROUP_SIZE]}"
            )
        # per-tensor scalars; stacked experts carry one per expert ([E] or [E, 1]), and an input
        # scale may also be one scalar shared by all experts
        scalar_shapes = {(), (1,)} if not batch else {batch, (*batch, 1), (*batch, 1, 1)}
        for role in ("weight_scale_2", "input_scale"):
            t = found.get(role)
            if t is None:
                continue
            if t.dtype != "F32":
                raise CheckpointError(f"tensor '{names[role]}': dtype {t.dtype}, expected F32")
            if t.shape not in scalar_shapes and not (batch and t.shape in {(), (1,)} and role == "input_scale"):
                raise CheckpointError(
                    f"tensor '{names[role]}': shape {list(t.shape)}, expected {'a scalar' if not batch else list(batch)}"
                )
        return found

    def experts(self, spec: ExpertsSpec) -> Experts:
        base = self.ckpt_name(spec.name)
        E, I = spec.num_experts, spec.intermediate_size
        if f"{base}.0.gate_proj.weight" in self.tensors:
            per: dict[str, list[Linear]] = {}
            for proj in EXPERT_PROJECTIONS:
                out, k = spec.projection_shape(proj)
                per[proj] = [self.linear(LinearSpec(f"{spec.name}.{e}.{proj}", out, k), f"{base}.{e}.{proj}") for e in range(E)]
            extra = sorted(
                n for n in self.tensors
                if n.startswith(base + ".") and n not in self.claimed and re.match(r"\d+\.", n[len(base) + 1 :])
            )
            if extra:
                raise CheckpointError(f"tensor '{extra[0]}': expert index beyond num_experts={E} in config.json")
            fmts = {lin.fmt for lins in per.values() for lin in lins}
            if len(fmts) > 1:
                raise UnsupportedError(f"'{base}': experts mix formats {sorted(fmts)}; expected one format per layer")
            return Experts(spec, fmts.pop(), "per_expert", per_expert=per)
        # fused 3-D: gate_up_proj [E, 2I, K] (gate rows first) or gate_proj/up_proj, and down_proj
        fused: dict[str, dict[str, tuple[TensorInfo, int, int]]] = {}
        if f"{base}.gate_up_proj" in self.tensors or f"{base}.gate_up_proj.weight" in self.tensors:
            sources = {"gate_proj": ("gate_up_proj", 0), "up_proj": ("gate_up_proj", I), "down_proj": ("down_proj", 0)}
            rows_total = {"gate_up_proj": 2 * I, "down_proj": spec.hidden_size}
        elif f"{base}.gate_proj" in self.tensors or f"{base}.gate_proj.weight" in self.tensors:
            sources = {p: (p, 0) for p in EXPERT_PROJECTIONS}
            rows_total = {"gate_proj": I, "up_proj": I, "down_proj": spec.hidden_size}
        else:
            raise CheckpointError(
                f"missing tensor '{base}.0.gate_proj.weight' (routed experts of '{base}': neither per-expert "
                "nor fused 3-D expert tensors were found)"
            )
        fmts = set()
        resolved: dict[str, Linear] = {}
        for src in sorted({s for s, _ in sources.values()}):
            k = spec.intermediate_size if src == "down_proj" else spec.hidden_size
            lin_name = f"{base}.{src}"
            # hub style names the parameter itself ("experts.gate_up_proj"), without ".weight"
            hub = lin_name in self.tensors
            resolved[src] = self.linear(LinearSpec(lin_name, rows_total[src], k), lin_name, batch=(E,), hub_style=hub)
            fmts.add(resolved[src].fmt)
        if len(fmts) > 1:
            raise UnsupportedError(f"'{base}': experts mix formats {sorted(fmts)}; expected one format per layer")
        for proj, (src, row0) in sources.items():
            out, _ = spec.projection_shape(proj)
            fused[proj] = {role: (t, row0 if role in ("weight", "weight_scale") else 0, out) for role, t in resolved[src].tensors.items()}
        return Experts(spec, fmts.pop(), "fused", fused=fused)
