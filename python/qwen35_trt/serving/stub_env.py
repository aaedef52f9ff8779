"""The tritonserver binaries and the python-backend stub's environment (``launcher prepare``).

tritonserver 2.51 with the python backend comes from the PyPI wheel ``nvidia-pytriton==0.7.0``,
installed with ``--no-deps`` (it pins numpy < 2; it is only used for its binaries). Its
python-backend stub was built with a pybind11 that predates numpy 2: with numpy 2 it reads dtype
sizes from the numpy-1 struct layout, so every multi-element tensor reaching the model is
corrupted (a BYTES input even crashes the stub). The stub therefore runs on a small "stub env": a
venv whose site-packages holds numpy 1.26.4 and then adds the project venv's site-packages, so the
stub sees numpy 1.26.4 and everything else (torch, tokenizers, qwen35_trt) from the project venv,
while the project venv keeps numpy 2. The stub finds its Python as ``python3`` on PATH, so the
server starts with the stub env's ``bin`` first. ``prepare`` makes all this (idempotent).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

PYTRITON_REQUIREMENT = "nvidia-pytriton==0.7.0"
STUB_NUMPY_REQUIREMENT = "numpy==1.26.4"


class ServerError(RuntimeError):
    """tritonserver could not be prepared, started or stopped; the message says why."""


class PytritonMissing(ServerError):
    """The nvidia-pytriton wheel (the tritonserver binaries) is not installed."""


def site_packages() -> Path:
    return Path(sysconfig.get_paths()["purelib"])


def pytriton_root() -> Path:
    root = site_packages() / "pytriton" / "tritonserver"
    if not (root / "bin" / "tritonserver").is_file():
        raise PytritonMissing(
            f"tritonserver not found under {root}: install the wheel with "
            f"'{sys.executable} -m pip install --no-deps {PYTRITON_REQUIREMENT}' (or run launcher prepare)"
        )
    return root


def stub_env_dir() -> Path:
    return Path(sys.prefix) / "triton-stub-env"


def libpython_dir() -> Path:
    libdir = Path(sysconfig.get_config_var("LIBDIR") or "")
    name = f"libpython{sys.version_info.major}.{sys.version_info.minor}.so.1.0"
    if not (libdir / name).exists():
        raise ServerError(f"{libdir / name}: missing; the python backend stub needs the shared libpython of {sys.executable}")
    return libdir


def _stub_env_ready(env: Path) -> bool:
    return (env / "READY").is_file() and (env / "backends" / "python" / "triton_python_backend_stub").is_file()


def prepare(install: bool = True, quiet: bool = False) -> Path:
    """Install the pytriton wheel (no deps) if missing and build the stub env; returns its path."""
    def say(msg):
        if not quiet:
            print(msg, flush=True)

    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "install", "-q", "--no-deps"]
    try:
        root = pytriton_root()
    except PytritonMissing:
        if not install:
            raise
        say(f"== installing {PYTRITON_REQUIREMENT} (tritonserver binaries, --no-deps)")
        subprocess.run(pip + [PYTRITON_REQUIREMENT], check=True)
        root = pytriton_root()
    env = stub_env_dir()
    if _stub_env_ready(env):
        return env
    if not install:
        raise ServerError(f"{env}: the stub env is missing; run 'python -m qwen35_trt.serving.launcher prepare'")
    say(f"== making the python-backend stub env {env} ({STUB_NUMPY_REQUIREMENT} over the project venv)")
    shutil.rmtree(env, ignore_errors=True)
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", "--without-pip", str(env)], check=True)
    site = env / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    subprocess.run(pip + ["--target", str(site), STUB_NUMPY_REQUIREMENT], check=True)
    # addsitedir (not a plain path line) so the project venv's own .pth files (editable installs) apply
    (site / "zz_project_venv.pth").write_text(f"import site; site.addsitedir({str(site_packages())!r})\n")
    backend = env / "backends" / "python"
    backend.mkdir(parents=True)
    py = f"{sys.version_info.major}.{sys.version_info.minor}"
    for src in (root / "backends" / "python" / "libtriton_python.so", root / "backends" / "python" / "triton_python_backend_utils.py", root / "python_backend_stubs" / py / "triton_python_backend_stub"):
        if not src.is_file():
            raise ServerError(f"{src}: missing from the pytriton wheel (Python {py} stub)")
        shutil.copy2(src, backend / src.name)
    check = subprocess.run([str(env / "bin" / "python3"), "-c", "import numpy, qwen35_trt; print(numpy.__version__)"], capture_output=True, text=True)
    if check.returncode != 0 or not check.stdout.startswith("1."):
        raise ServerError(f"stub env {env} does not import numpy 1.x and qwen35_trt: {check.stdout}{check.stderr}")
    (env / "READY").write_text(f"{STUB_NUMPY_REQUIREMENT}\n")
    return env
