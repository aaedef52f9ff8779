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

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from .. import __version__
from ..errors import UserInputError
from .contract import config_pbtxt
from .params import Limits

TEMPLATES = Path(__file__).with_name("triton_model")


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


def _check_engine(engine_dir: Path) -> str:
    from ..model import config_from_manifest, load_manifest

    if not engine_dir.is_dir():
        raise UserInputError(f"{engine_dir}: no such engine directory")
    cfg = config_from_manifest(load_manifest(engine_dir))  # raises UserInputError naming the file
    if not (engine_dir / "tokenizer.json").is_file():
        raise UserInputError(f"{engine_dir}: no tokenizer.json (the checkpoint's tokenizer is needed to serve text)")
    if not (engine_dir / "weights.safetensors").is_file():
        raise UserInputError(f"{engine_dir}: no weights.safetensors")
    del cfg
    return hashlib.sha256((engine_dir / "manifest.json").read_bytes()).hexdigest()


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
) -> PublishResult:
    limits = limits or Limits()
    if not model_name or not all(c.isalnum() or c in "_-" for c in model_name):
        raise UserInputError(f"--model-name {model_name!r}: use letters, digits, '_' and '-'")
    engine = Path(engine_dir).resolve()
    digest = _check_engine(engine)
    repo = Path(repo)
    if repo.exists() and not repo.is_dir():
        raise UserInputError(f"--repo {repo}: exists and is not a directory")
    repo.mkdir(parents=True, exist_ok=True)
    repo = repo.resolve()

    infer_name = f"{model_name}_infer"
    for name, template, decoupled, params, instances, batching in (
        (model_name, "model.py", True, {}, 1, False),
        (infer_name, "infer_model.py", False, {"target_model": model_name}, 1, True),
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
                    "executor": "cpu",
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
