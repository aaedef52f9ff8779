"""Write an engine directory from a validated checkpoint, one layer at a time.

The directory (see docs/engine_dir.md) holds ``manifest.json``, ``weights.safetensors`` with the
weights repacked for the kernels of one target, and the tokenizer files. It is assembled in a
temporary sibling and renamed into place only when complete, so a failed or interrupted build
never leaves a half-written engine behind.

Repacked layout (``layout.weights = "qwen35_trt.v3"``), names relative to the text model:
- NVFP4 linear ``m``: ``m.weight`` U8 [N, K/2], ``m.weight_scale`` F8_E4M3, ``m.weight_scale_2``
  F32 [], ``m.input_scale`` F32 [] when the checkpoint has it.
- Routed experts ``layers.L.mlp.experts``, the layout the Nvfp4MoE kernels read (docs/ops.md):
  ``gate_up_proj``: gate and up fused per expert, gate rows first: ``weight`` U8 [E, 2I, H/2],
  ``weight_scale`` F8_E4M3 of the fused [2I, H/16] matrices, ``weight_scale_2`` F32 [E, 2]
  (gate, up: kept apart so nothing is ever requantized), ``input_scale`` F32 [E] (the larger of
  gate's and up's; ModelOpt exports them equal);
  ``down_proj``: ``weight`` U8 [E, H, I/2], ``weight_scale``, ``weight_scale_2`` / ``input_scale`` F32 [E].
  BF16 experts: ``gate_up_proj.weight`` BF16 [E, 2I, H], ``down_proj.weight`` BF16 [E, H, I].
- Every NVFP4 weight (codes and block scales together) in the target's layout
  (``targets.TargetSpec.scale_layout``): for sm_100, ModelOpt's codes with 128x4-swizzled scales
  [.., roundup(N, 128), roundup(K/16, 4)] (the layout Blackwell's block-scaled MMA reads); for
  sm_90 and sm_120, "w4a16_fragments": the codes of each 64-code group in MMA fragment order and
  UE5M3 scales [.., N, K/16] (what the W4A16 GEMM reads; ``qwen35_trt.w4a16_fragments``). The
  safetensors dtype of the scales stays F8_E4M3 (a byte per scale) in every layout.
- BF16 linears (``m.weight`` BF16 [N, K]) and plain parameters keep their checkpoint dtype.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from .. import __version__
from ..checkpoint import Checkpoint, Experts, Linear, Module, Param
from ..errors import UserInputError
from ..safetensors_io import SafetensorsWriter, TensorInfo, TensorSpec, file_sha256
from .format import EXPERTS_LAYOUT, FORMAT_VERSION, MANIFEST_FILE, ONNX_FILE, WEIGHTS_FILE, WEIGHTS_LAYOUT
from .targets import DEFAULT_TARGET, TargetSpec, target as target_spec


@dataclass
class ModulePlan:
    """The output tensors of one module and how to produce them (reading the checkpoint once)."""

    name: str
    specs: list[TensorSpec]
    # arrays to write, or TensorInfo for tensors copied unchanged from the checkpoint in chunks
    produce: Callable[[], dict[str, np.ndarray | TensorInfo]]
    manifest: dict


def _scale_spec(name: str, batch: tuple[int, ...], n: int, k: int, target: TargetSpec) -> TensorSpec:
    return TensorSpec(name, "F8_E4M3", (*batch, *target.scale_shape(n, k)))


def plan_module(ckpt: Checkpoint, m: Module, target: TargetSpec) -> ModulePlan:
    if isinstance(m, Param):
        spec = TensorSpec(m.spec.name, m.tensor.dtype, m.tensor.shape)
        return ModulePlan(m.spec.name, [spec], lambda: {spec.name: m.tensor}, {"kind": "param", "dtype": m.tensor.dtype, "shape": list(m.tensor.shape)})
    if isinstance(m, Linear):
        return _plan_linear(ckpt, m, target)
    return _plan_experts(ckpt, m, target)


def _plan_linear(ckpt: Checkpoint, lin: Linear, target: TargetSpec) -> ModulePlan:
    name, n, k = lin.spec.name, lin.spec.out_features, lin.spec.in_features
    info = {"kind": "linear", "format": lin.fmt, "compute": target.activation(lin.fmt, "input_scale" in lin.tensors), "shape": [n, k]}
    if lin.fmt == "bf16":
        spec = TensorSpec(f"{name}.weight", "BF16", (n, k))
        return ModulePlan(name, [spec], lambda: {spec.name: lin.tensors["weight"]}, info)
    specs = [
        TensorSpec(f"{name}.weight", "U8", (n, k // 2)),
        _scale_spec(f"{name}.weight_scale", (), n, k, target),
        TensorSpec(f"{name}.weight_scale_2", "F32", ()),
    ]
    if "input_scale" in lin.tensors:
        specs.append(TensorSpec(f"{name}.input_scale", "F32", ()))

    def produce() -> dict[str, np.ndarray]:
        t = ckpt.load_linear(lin)
        codes, scales = target.pack_nvfp4(t["weight"], t["weight_scale"], f"{name}.weight")
        out = {
            f"{name}.weight": codes,
            f"{name}.weight_scale": scales,
            f"{name}.weight_scale_2": t["weight_scale_2"].reshape(()),
        }
        if "input_scale" in t:
            out[f"{name}.input_scale"] = t["input_scale"].reshape(())
        return out

    return ModulePlan(name, specs, produce, info)


def _plan_experts(ckpt: Checkpoint, ex: Experts, target: TargetSpec) -> ModulePlan:
    """Routed experts in the Nvfp4MoE layout: fused gate_up_proj [E, 2I, H] and down_proj [E, H, I]."""
    E, H, I = ex.spec.num_experts, ex.spec.hidden_size, ex.spec.intermediate_size
    name = ex.spec.name
    shapes = {"gate_up_proj": (2 * I, H), "down_proj": (H, I)}
    specs: list[TensorSpec] = []
    for proj, (n, k) in shapes.items():
        p = f"{name}.{proj}"
        if ex.fmt == "bf16":
            specs.append(TensorSpec(f"{p}.weight", "BF16", (E, n, k)))
            continue
        specs += [
            TensorSpec(f"{p}.weight", "U8", (E, n, k // 2)),
            _scale_spec(f"{p}.weight_scale", (E,), n, k, target),
            TensorSpec(f"{p}.weight_scale_2", "F32", (E, 2) if proj == "gate_up_proj" else (E,)),
        ]
        if ex.has_input_scale:
            specs.append(TensorSpec(f"{p}.input_scale", "F32", (E,)))
    info = {
        "kind": "experts",
        "format": ex.fmt,
        "compute": target.activation(ex.fmt, ex.has_input_scale),
        "num_experts": E,
        "hidden_size": H,
        "intermediate_size": I,
        "checkpoint_storage": ex.storage,
        "layout": EXPERTS_LAYOUT,
    }

    def produce() -> dict[str, np.ndarray]:
        gate = ckpt.load_experts(ex, "gate_proj")
        up = ckpt.load_experts(ex, "up_proj")
        g = f"{name}.gate_up_proj"
        out = {f"{g}.weight": np.concatenate([gate.pop("weight"), up.pop("weight")], axis=1)}
        if ex.fmt == "nvfp4":
            fused_scales = np.concatenate([gate.pop("weight_scale"), up.pop("weight_scale")], axis=1)
            out[f"{g}.weight"], out[f"{g}.weight_scale"] = target.pack_nvfp4(out[f"{g}.weight"], fused_scales, f"{g}.weight")
            del fused_scales
            out[f"{g}.weight_scale_2"] = np.ascontiguousarray(
                np.stack([gate["weight_scale_2"], up["weight_scale_2"]], axis=1), dtype=np.float32)
            if ex.has_input_scale:
                # One activation global per expert for the fused GEMM; a larger global never
                # saturates the FP8 block scales. ModelOpt exports gate and up equal.
                differ = int(np.count_nonzero(gate["input_scale"] != up["input_scale"]))
                info["gate_up_input_scales_differ"] = differ
                out[f"{g}.input_scale"] = np.maximum(gate["input_scale"], up["input_scale"]).astype(np.float32)
        del gate, up
        down = ckpt.load_experts(ex, "down_proj")
        d = f"{name}.down_proj"
        out[f"{d}.weight"] = down.pop("weight")
        if ex.fmt == "nvfp4":
            out[f"{d}.weight"], out[f"{d}.weight_scale"] = target.pack_nvfp4(out[f"{d}.weight"], down.pop("weight_scale"), f"{d}.weight")
            out[f"{d}.weight_scale_2"] = down["weight_scale_2"]
            if ex.has_input_scale:
                out[f"{d}.input_scale"] = down["input_scale"]
        return out

    return ModulePlan(name, specs, produce, info)


@dataclass
class BuildResult:
    output: Path
    manifest: dict
    seconds: float
    peak_rss_bytes: int
    bytes_written: int


def peak_rss_bytes() -> int:
    """This process's peak resident set. VmHWM first: ru_maxrss carries the high-water mark of
    the process this one was exec'd from, so a build launched from a large parent over-reports."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def _build_info() -> dict:
    try:
        from .. import _C

        return dict(_C.build_info())
    except ImportError as e:  # the builder itself needs no compiled code for the sm_90 layout
        return {"error": f"qwen35_trt._C not importable: {e}"}


def build_engine(
    ckpt: Checkpoint,
    output: str | os.PathLike,
    target: str = DEFAULT_TARGET,
    force: bool = False,
    progress: bool = True,
) -> BuildResult:
    """Convert ``ckpt`` into the engine directory ``output`` for ``target`` (see module doc)."""
    spec = target_spec(target)
    out = Path(output)
    if out.exists() and not force:
        raise UserInputError(f"{out}: already exists; pass --force to replace it")
    if out.exists() and not out.is_dir():
        raise UserInputError(f"{out}: exists and is not a directory")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    t0 = time.perf_counter()
    try:
        tmp.mkdir()
        manifest = _write_engine(ckpt, tmp, spec, progress)
        _write_step_graph(tmp, manifest)
        manifest["build"]["seconds"] = round(time.perf_counter() - t0, 3)
        manifest["build"]["peak_rss_bytes"] = peak_rss_bytes()
        (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
        if out.exists():
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            os.rename(out, old)
            os.rename(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    written = sum(f["size"] for f in manifest["files"])
    return BuildResult(out, manifest, time.perf_counter() - t0, peak_rss_bytes(), written)


def _write_step_graph(tmp: Path, manifest: dict) -> None:
    """model.onnx beside the weights (its external data points into them), recorded in the manifest;
    an engine the step graph cannot express yet records why instead (the CPU model still runs it)."""
    from ..errors import UnsupportedError
    from ..export import step_graph
    from .reader import EngineDir

    (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")  # what EngineDir reads
    t = time.perf_counter()
    try:
        info = step_graph.write_step_graph(EngineDir(tmp), tmp / ONNX_FILE)
    except UnsupportedError as e:
        manifest["step_graph"] = {"file": None, "unsupported": str(e)}
        return
    manifest["step_graph"] = {"file": ONNX_FILE, **info}
    manifest["files"].append({"name": ONNX_FILE, "size": (tmp / ONNX_FILE).stat().st_size, "sha256": file_sha256(tmp / ONNX_FILE)})
    manifest["build"]["step_graph_seconds"] = round(time.perf_counter() - t, 4)


def _write_engine(ckpt: Checkpoint, tmp: Path, target: TargetSpec, progress: bool) -> dict:
    plans = [(lay, [plan_module(ckpt, m, target) for m in mods]) for lay, mods in ckpt.layers]
    specs = [s for _, ps in plans for p in ps for s in p.specs]
    total = sum(s.nbytes for s in specs)
    cfg = ckpt.config
    meta = {"format": "pt", "qwen35_trt.layout": WEIGHTS_LAYOUT, "qwen35_trt.target": target.name}
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc="convert", dynamic_ncols=True)
    layer_seconds = {}
    with SafetensorsWriter(tmp / WEIGHTS_FILE, specs, meta) as writer:
        for lay, ps in plans:
            t = time.perf_counter()
            if bar is not None:
                bar.set_description(f"convert {lay.name}")
            for p in ps:
                arrays = p.produce()
                for s in p.specs:
                    a = arrays.pop(s.name)
                    if isinstance(a, TensorInfo):
                        writer.copy_from(s.name, a)
                    else:
                        writer.write(s.name, a)
                    if bar is not None:
                        bar.update(s.nbytes)
                if arrays:
                    raise RuntimeError(f"module '{p.name}' produced undeclared tensors {sorted(arrays)}")
                del arrays
            layer_seconds[lay.name] = round(time.perf_counter() - t, 4)
    if bar is not None:
        bar.close()
    files = [{"name": WEIGHTS_FILE, "size": writer.size, "sha256": writer.sha256}]
    for src in ckpt.tokenizer_files:
        shutil.copyfile(src, tmp / src.name)
        files.append({"name": src.name, "size": src.stat().st_size, "sha256": file_sha256(tmp / src.name)})
    modules = {p.name: p.manifest for _, ps in plans for p in ps if p.manifest["kind"] != "param"}
    return {
        "format_version": FORMAT_VERSION,
        "model": cfg.to_dict(),
        "quantization": {
            "quant_algo": ckpt.quant.quant_algo,
            "group_size": ckpt.quant.group_size,
            "kv_cache_quant_algo": ckpt.quant.kv_cache_quant_algo,
            "producer": ckpt.quant.producer,
            "modules": modules,
        },
        "layout": {
            "weights": WEIGHTS_LAYOUT,
            "scale_layout": target.scale_layout,
            "experts": EXPERTS_LAYOUT,
            "tied_lm_head": cfg.tie_word_embeddings,
        },
        "source": {
            "path": str(ckpt.path.resolve()),
            "files": [{"name": f.path.name, "size": f.file_size} for f in ckpt.files],
            "header_sha256": ckpt.header_digest(),
            "skipped": ckpt.skipped,
            "unused_tensors": ckpt.unused,
        },
        "targets": [target.name],
        "versions": {"qwen35_trt": __version__, "extension": _build_info()},
        "files": files,
        "build": {"layer_seconds": layer_seconds},
    }
