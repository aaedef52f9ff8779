"""Write a Triton model repository that serves an engine directory.

``publish(engine_dir, repo)`` writes two python-backend models:
- ``<name>`` (decoupled): the runtime (``triton_model/model.py``), streaming or one response;
- ``<name>_infer`` (not decoupled): plain ``infer`` calls, forwarded to ``<name>`` through BLS.

Each publish adds a new numbered version of ``<name>`` (model.py, serving.json with the engine
path, limits and the engine manifest's sha256, and the engine itself with ``copy_engine``). A
version is assembled in a non-numeric folder inside the model folder (Triton ignores those) and
renamed to its number only when complete; a model folder that does not exist yet is assembled
next to the repository and renamed into it (Triton would try to load any folder inside it). So a
serving repository is never half-written. Triton serves the highest version; older ones beyond
``keep`` are removed.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from .. import __version__
from ..engine import EngineDir
from ..errors import UserInputError
from .contract import config_pbtxt
from .params import Limits

TEMPLATES = Path(__file__).with_name("triton_model")
MAX_DEFAULT_INFER_INSTANCES = 16  # each is a stub process (~45 MB on the CPU)


@dataclass
class PublishResult:
    repo: Path
    model: str
    version: int
    version_dir: Path
    infer_model: str


def _versions(model_dir: Path) -> list[int]:
    if not model_dir.is_dir():
        return []
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit() and not p.name.startswith("0"))


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def _check_engine(engine_dir: Path, limits: Limits, executor: str = "cpu") -> str:
    """The engine's manifest digest, after checking it can be served with ``limits`` and ``executor``."""
    from .executors import EXECUTORS

    if executor not in EXECUTORS:
        raise UserInputError(f"--executor {executor!r}: expected one of {', '.join(EXECUTORS)}")
    engine = EngineDir(engine_dir)  # raises UserInputError naming the file
    engine.require_tokenizer()
    engine.require_weights()
    if executor == "onnx" and not engine.onnx_path.is_file():
        why = (engine.manifest.get("step_graph") or {}).get("unsupported")
        raise UserInputError(f"--executor onnx: {engine_dir} has no step graph (model.onnx)"
                             + (f": {why}" if why else "; rebuild the engine"))
    if executor == "trt" and not engine.manifest.get("plans"):
        raise UserInputError(f"--executor trt: {engine_dir} has no TensorRT plan; build one with build_engine.py plan")
    # Whether trt / cuda can run is known only where the model is served: the model load fails there,
    # naming what is missing (serving.executors.select_executor), rather than serving something else.
    if limits.max_context > engine.max_context:
        raise UserInputError(f"--max-context {limits.max_context}: the model supports at most {engine.max_context} tokens (max_position_embeddings)")
    return engine.manifest_sha256


def served_engine(version_dir: Path) -> tuple[Path, str | None]:
    """The engine directory a published version serves and the manifest digest it was published with."""
    spec = json.loads((version_dir / "serving.json").read_text())
    engine = Path(spec["engine_dir"])
    return (engine if engine.is_absolute() else version_dir / engine), spec.get("engine_manifest_sha256")


def check_served_engine(version_dir: Path, where: str) -> Path:
    """The engine directory a published version serves, after checking it loads and is the one that
    was published. Raises UserInputError starting with ``where``."""
    engine_path, digest = served_engine(version_dir)
    try:
        engine = EngineDir(engine_path)
    except UserInputError as e:
        raise UserInputError(f"{where} cannot load its engine: {e}; publish again") from None
    if digest and engine.manifest_sha256 != digest:
        raise UserInputError(f"{where}: engine {engine_path} changed since it was published (manifest.json differs); publish it again")
    return engine_path


def check_repository(repo: str | os.PathLike) -> None:
    """Check that every model of ``repo`` that serves an engine can load it: the engine directory
    exists and is the one that was published. Raises UserInputError naming the model."""
    repo = Path(repo)
    for model_dir in sorted(p for p in repo.iterdir() if p.is_dir() and not p.name.startswith(".")):
        versions = _versions(model_dir)
        if not versions or not (model_dir / str(versions[-1]) / "serving.json").is_file():
            continue
        check_served_engine(model_dir / str(versions[-1]), f"{repo}: model {model_dir.name} version {versions[-1]}")


def _fill_model_dir(model_dir: Path, name: str, template: str, decoupled: bool, parameters: dict, instances: int, batching: bool) -> None:
    model_dir.mkdir(parents=True, exist_ok=True)
    _write_atomic(model_dir / "config.pbtxt", config_pbtxt(name, decoupled, parameters, instances, batching))


def publish(
    engine_dir: str | os.PathLike,
    repo: str | os.PathLike = "triton_repo",
    model_name: str = "qwen35",
    limits: Limits | None = None,
    copy_engine: bool = False,
    threads: int = 1,
    keep: int = 2,
    infer_instances: int | None = None,
    executor: str = "cpu",
) -> PublishResult:
    """``infer_instances``: model instances of ``<name>_infer``, each forwarding one plain infer
    request at a time (default: the runtime's ``max_running``, at most 16)."""
    limits = limits or Limits()
    if infer_instances is None:
        infer_instances = min(limits.max_running, MAX_DEFAULT_INFER_INSTANCES)
    if not isinstance(infer_instances, int) or infer_instances < 1:
        raise UserInputError(f"--infer-instances {infer_instances!r}: must be an integer >= 1")
    if not model_name or not all(c.isalnum() or c in "_-" for c in model_name):
        raise UserInputError(f"--model-name {model_name!r}: use letters, digits, '_' and '-'")
    engine = Path(engine_dir).resolve()
    digest = _check_engine(engine, limits, executor)
    repo = Path(repo)
    if repo.exists() and not repo.is_dir():
        raise UserInputError(f"--repo {repo}: exists and is not a directory")
    repo.mkdir(parents=True, exist_ok=True)
    repo = repo.resolve()

    infer_name = f"{model_name}_infer"
    for name, template, decoupled, params, instances, batching in (
        (model_name, "model.py", True, {}, 1, False),
        # one plain-infer request per instance at a time, as many as the runtime runs at once
        (infer_name, "infer_model.py", False, {"target_model": model_name}, infer_instances, False),
    ):
        model_dir = repo / name
        fresh = not model_dir.exists()
        # a new model folder is built beside the repository, then renamed into it in one step
        build_dir = repo.parent / f".{repo.name}.{name}.staging-{os.getpid()}" if fresh else model_dir
        try:
            if fresh:
                shutil.rmtree(build_dir, ignore_errors=True)
            _fill_model_dir(build_dir, name, template, decoupled, params, instances, batching)
            version = (_versions(build_dir) or [0])[-1] + 1
            staging = build_dir / f".staging-{os.getpid()}"
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir()
            shutil.copyfile(TEMPLATES / template, staging / "model.py")
            if name == model_name:
                target = engine
                if copy_engine:
                    shutil.copytree(engine, staging / "engine")
                    target = Path("engine")
                spec = {
                    "engine_dir": str(target),
                    "engine_manifest_sha256": digest,
                    "limits": limits.to_dict(),
                    "executor": executor,
                    "threads": threads,
                    "published_by": f"qwen35_trt {__version__}",
                }
                (staging / "serving.json").write_text(json.dumps(spec, indent=2) + "\n")
                result_version = version
            os.rename(staging, build_dir / str(version))
            if fresh:
                os.rename(build_dir, model_dir)
        except BaseException:
            if fresh:
                shutil.rmtree(build_dir, ignore_errors=True)
            else:
                shutil.rmtree(build_dir / f".staging-{os.getpid()}", ignore_errors=True)
            raise
        for old in _versions(model_dir)[:-keep] if keep > 0 else []:
            shutil.rmtree(model_dir / str(old), ignore_errors=True)
    return PublishResult(repo, model_name, result_version, repo / model_name / str(result_version), infer_name)
