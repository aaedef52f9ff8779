"""TensorRT plans from the step graph: ``build_engine.py plan ENGINE --target sm_XX``.

The plugin library is loaded into the builder, ``model.onnx`` parsed into a strongly typed network
(the graph's dtypes are the dtypes that run), one optimisation profile derived from the serving
limits (tokens per step, running sequences, context and KV blocks; the state pools have fixed
shapes), aliased plugin I/O enabled (the pools are updated in place), the plugin library
serialised into the plan, and ``plan/<target>.plan`` written and recorded in the manifest
atomically (temporary file, then rename).

Builders: TensorRT-RTX (``tensorrt_rtx``, PyPI ``tensorrt-rtx``) builds sm_120 plans on any machine,
GPU or not; standard TensorRT (``tensorrt``, 10.14 or newer, from NVIDIA) builds sm_100 / sm_90 plans
on a GPU of that architecture.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from ..engine import EngineDir
from ..engine.format import MANIFEST_FILE, PLAN_DIR
from ..engine.writer import peak_rss_bytes
from ..engine.targets import target as target_spec
from ..errors import UserInputError
from ..safetensors_io import file_sha256
from .step_graph import STEP_INPUTS

BUILDERS = {
    # name -> (module, the package a user installs); which targets each builds: TargetSpec.plan_builders
    "tensorrt-rtx": ("tensorrt_rtx", "tensorrt-rtx==1.7.1.116 (pip install tensorrt-rtx==1.7.1.116)"),
    "tensorrt": ("tensorrt", "TensorRT 10.14 or newer with its Python bindings (NVIDIA's tensorrt package)"),
}


# A plan built here embeds the weights, and the builder holds them about three times over at its
# peak (seen with TensorRT-RTX 1.7 on the full-dimension 2-layer engine: 2.8 GiB of weights, 8.6 GiB
# peak RSS, a 2.8 GiB plan). The estimate a build is refused on, up front: per byte of
# weights.safetensors, plus a base.
PLAN_RSS_PER_WEIGHT_BYTE = 3.2
PLAN_RSS_BASE_BYTES = 512 << 20


def plan_memory_estimate(weights_bytes: int) -> int:
    return int(PLAN_RSS_PER_WEIGHT_BYTE * weights_bytes) + PLAN_RSS_BASE_BYTES


@dataclass(frozen=True)
class PlanShapes:
    """The serving limits a plan is built for (``serving.params.Limits`` fields)."""

    max_running: int
    max_tokens_per_step: int
    max_context: int
    kv_block_size: int
    num_kv_blocks: int

    @classmethod
    def from_limits(cls, limits) -> "PlanShapes":
        return cls(limits.max_running, limits.max_tokens_per_step, limits.max_context, limits.kv_block_size, limits.total_kv_blocks)

    @property
    def max_blocks_per_seq(self) -> int:
        return -(-self.max_context // self.kv_block_size)

    def profile(self, inputs: dict[str, tuple[int, ...]]) -> dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]:
        """(min, opt, max) per graph input; ``inputs`` maps every input to its graph dims (-1 dynamic)."""
        B, T, blocks = self.max_running, self.max_tokens_per_step, self.max_blocks_per_seq
        half_b = max(1, B // 2)
        step = {
            "input_ids": ((1,), (min(T, max(half_b, 64)),), (T,)),
            "cu_seqlens": ((2,), (half_b + 1,), (B + 1,)),
            "block_tables": ((1, 1), (half_b, max(1, blocks // 2)), (B, blocks)),
        }
        for n in ("context_lens", "slots", "has_initial_state", "last_token_rows"):
            step[n] = ((1,), (half_b,), (B,))
        assert set(step) == set(STEP_INPUTS)
        out = {}
        for name, dims in inputs.items():
            if name in step:
                out[name] = step[name]
                continue
            first = self.num_kv_blocks if name.endswith(".kv_pool") else self.max_running
            fixed = tuple([first] + [self.kv_block_size if (name.endswith(".kv_pool") and i == 3) else d for i, d in enumerate(dims) if i > 0])
            if any(d < 0 for d in fixed):
                raise ValueError(f"graph input {name}: dims {dims} leave a dynamic pool dimension")
            out[name] = (fixed, fixed, fixed)
        return out


def _import_builder(name: str):
    module, package = BUILDERS[name]
    try:
        return __import__(module)
    except ImportError:
        raise UserInputError(f"--builder {name}: the Python module '{module}' is not installed; install {package}") from None


def _graph_input_dims(engine: EngineDir) -> dict[str, tuple[int, ...]]:
    import onnx

    model = onnx.load(str(engine.onnx_path), load_external_data=False)
    return {v.name: tuple(d.dim_value if d.HasField("dim_value") else -1 for d in v.type.tensor_type.shape.dim)
            for v in model.graph.input}


def trtexec_command(engine_dir: str | Path, target: str, shapes: PlanShapes) -> str:
    """The trtexec command that builds the same plan on a machine with TensorRT (what ``plan`` does
    through the Python API): strongly typed, the plugin library loaded and serialised into the plan,
    aliased plugin I/O, the same optimisation profile."""
    from ..plugins import plugin_library_path

    engine = EngineDir(engine_dir)
    spec = target_spec(target)
    if not engine.onnx_path.is_file():
        raise UserInputError(f"{engine.path}: no step graph (model.onnx); rebuild the engine")
    try:
        library = plugin_library_path()
    except FileNotFoundError:
        library = Path("libqwen35_trt_plugins.so")
    ranges = shapes.profile(_graph_input_dims(engine))

    def fmt(which: int) -> str:
        return ",".join(f"{n}:{'x'.join(map(str, r[which]))}" for n, r in ranges.items())

    return " \\\n  ".join([
        "trtexec", f"--onnx={engine.onnx_path}", "--stronglyTyped", f"--dynamicPlugins={library}",
        f"--setPluginsToSerialize={library}", "--previewFeatures=aliasedPluginIO1003",
        f"--minShapes={fmt(0)}", f"--optShapes={fmt(1)}", f"--maxShapes={fmt(2)}", f"--saveEngine={engine.plan_path(spec.name)}",
    ])


def _check_memory(engine: EngineDir) -> None:
    import psutil

    weights = engine.require_weights().stat().st_size
    need, have = plan_memory_estimate(weights), psutil.virtual_memory().available
    if need > have:
        raise UserInputError(
            f"building this plan needs about {need / 2**30:.1f} GiB of memory ({PLAN_RSS_PER_WEIGHT_BYTE}x the "
            f"{weights / 2**30:.1f} GiB of weights.safetensors, which the plan embeds, + {PLAN_RSS_BASE_BYTES >> 20} MiB) and "
            f"{have / 2**30:.1f} GiB are available here: build it on a machine with more memory (--skip-memory-check to try anyway)"
        )


def build_plan(engine_dir: str | Path, target: str, shapes: PlanShapes, builder: str | None = None, log=print,
               check_memory: bool = True) -> dict:
    """Build ``plan/<target>.plan`` for the engine; returns what the manifest records."""
    from ..plugins import plugin_library_path

    engine = EngineDir(engine_dir)
    spec = target_spec(target)
    builder = builder or spec.plan_builders[0]
    if builder not in BUILDERS:
        raise UserInputError(f"--builder {builder!r}: expected one of {', '.join(BUILDERS)}")
    if builder not in spec.plan_builders:
        raise UserInputError(f"--builder {builder}: cannot build {spec.name} plans ({spec.name}: {spec.tensorrt})")
    if spec.name not in engine.manifest.get("targets", []):
        raise UserInputError(f"{engine.path}: built for {', '.join(engine.manifest.get('targets', []))}, not {spec.name} "
                             f"(its weights are laid out for that target); rebuild it with --target {spec.name}")
    graph = engine.manifest.get("step_graph")
    if graph is None or not engine.onnx_path.is_file():
        raise UserInputError(f"{engine.path}: no step graph (model.onnx): the engine was built before the builder wrote one; rebuild it")
    if graph.get("file") is None:
        raise UserInputError(f"{engine.path}: the step graph cannot express this model yet: {graph.get('unsupported')}")
    if check_memory:
        _check_memory(engine)
    trt = _import_builder(builder)
    library = plugin_library_path()

    logger = _Logger(trt)
    trt_builder = trt.Builder(logger)
    flags = 0
    if hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    if trt.get_plugin_registry().load_library(str(library)) is None:
        raise UserInputError(f"{library}: {builder} could not load the plugin library")
    _check_plugins(trt, engine, library)
    network = trt_builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    t0 = time.perf_counter()
    if not parser.parse_from_file(str(engine.onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise UserInputError(f"{engine.onnx_path}: {builder} refused the step graph: {errors}{logger.plugin_errors()}")
    t_parse = time.perf_counter() - t0

    config = trt_builder.create_builder_config()
    config.set_preview_feature(trt.PreviewFeature.ALIASED_PLUGIN_IO_10_03, True)
    if builder == "tensorrt-rtx":  # builds for a named architecture, no GPU needed
        major, minor = spec.compute_capability
        config.num_compute_capabilities = 1
        config.set_compute_capability(getattr(trt.ComputeCapability, f"SM{major}{minor}"), 0)
    else:
        _require_device(spec)
    if hasattr(config, "plugins_to_serialize"):
        config.plugins_to_serialize = [str(library)]
    dims = {network.get_input(i).name: tuple(network.get_input(i).shape) for i in range(network.num_inputs)}
    profile = trt_builder.create_optimization_profile()
    ranges = shapes.profile(dims)
    for name, (lo, opt, hi) in ranges.items():
        profile.set_shape(name, lo, opt, hi)
    config.add_optimization_profile(profile)
    log(f"building {spec.name} plan with {builder} {trt.__version__} ({network.num_layers} layers)")
    t1 = time.perf_counter()
    plan = trt_builder.build_serialized_network(network, config)
    t_build = time.perf_counter() - t1
    if plan is None:
        raise UserInputError(f"{engine.onnx_path}: {builder} could not build a {spec.name} plan{logger.plugin_errors()}")
    del parser, network  # their copy of the weights, before the plan is written

    out = engine.plan_path(spec.name)
    out.parent.mkdir(exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(memoryview(plan))  # no second copy of a plan as large as the weights
        del plan
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    record = {
        "file": f"{PLAN_DIR}/{out.name}",
        "size": out.stat().st_size,
        "sha256": file_sha256(out),
        "builder": builder,
        "builder_version": trt.__version__,
        "compute_capability": list(spec.compute_capability),
        "plugin_library": {"path": str(library), "sha256": file_sha256(library), "serialized_into_plan": hasattr(config, "plugins_to_serialize")},
        "limits": shapes.__dict__ | {"max_blocks_per_seq": shapes.max_blocks_per_seq},
        "profile": {n: [list(r) for r in v] for n, v in ranges.items() if n in STEP_INPUTS},
        "seconds": {"parse": round(t_parse, 3), "build": round(t_build, 3)},
        "peak_rss_bytes": peak_rss_bytes(),
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    _record_in_manifest(engine, spec.name, record)
    return record


def _check_plugins(trt, engine: EngineDir, library: Path) -> None:
    """Every plugin node of the graph has a creator of its name, version and namespace in the
    loaded library (a graph and a library of different releases are refused by name, not deep
    inside the parser)."""
    import onnx

    from . import contracts as C

    model = onnx.load(str(engine.onnx_path), load_external_data=False)
    registry = trt.get_plugin_registry()
    for node in model.graph.node:
        if node.domain != C.DOMAIN:
            continue
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        version = attrs.get("plugin_version", C.PLUGIN_VERSION.encode())
        version = version.decode() if isinstance(version, bytes) else str(version)
        if registry.get_creator(node.op_type, version, node.domain) is None:
            raise UserInputError(f"{engine.onnx_path}: node {node.name} needs plugin {node.domain}::{node.op_type} version {version}, "
                                 f"which {library} does not provide; rebuild the engine with this release or use its plugin library")


def _record_in_manifest(engine: EngineDir, target: str, record: dict) -> None:
    manifest = json.loads((engine.path / MANIFEST_FILE).read_text())
    manifest.setdefault("plans", {})[target] = record
    tmp = engine.path / f".{MANIFEST_FILE}.tmp-{os.getpid()}"
    try:
        tmp.write_text(json.dumps(manifest, indent=2) + "\n")
        os.replace(tmp, engine.path / MANIFEST_FILE)
    finally:
        tmp.unlink(missing_ok=True)


def _require_device(spec) -> None:
    """Standard TensorRT builds for the GPU it runs on: it must be the target's architecture."""
    try:
        import torch

        have = torch.cuda.get_device_capability() if torch.cuda.is_available() else None
    except Exception:  # pragma: no cover - torch without CUDA
        have = None
    if have is None:
        raise UserInputError(f"--target {spec.name}: standard TensorRT builds on a GPU of that architecture and none is visible here; "
                             "sm_120 plans build anywhere with --builder tensorrt-rtx")
    if tuple(have) != tuple(spec.compute_capability):
        raise UserInputError(f"--target {spec.name}: this GPU is sm_{have[0]}{have[1]}; build the plan on a {spec.description} GPU")


class _Logger:
    """A TensorRT logger that keeps the errors (the plugins name the field or tensor they refuse)."""

    def __new__(cls, trt):
        class Logger(trt.ILogger):
            def __init__(self):
                trt.ILogger.__init__(self)
                self.errors: list[str] = []

            def log(self, severity, msg):
                if severity <= trt.ILogger.Severity.ERROR:
                    self.errors.append(str(msg))

            def plugin_errors(self) -> str:
                return ("\n  " + "\n  ".join(self.errors[-8:])) if self.errors else ""

        return Logger()
