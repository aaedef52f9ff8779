"""Session fixtures: real ModelOpt NVFP4 exports of tiny Qwen3.5 MoE models, made once per run."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Tiny models: one thread is much faster than two on a 2-core machine with other work running.
os.environ.setdefault("OMP_NUM_THREADS", "1")


def pytest_configure(config):
    import torch

    torch.set_num_threads(1)


def _make(tmp_path_factory, variant: str) -> tuple[Path, Path]:
    from qwen35_trt.testing.tiny_checkpoint import make_tiny_checkpoint

    d = tmp_path_factory.mktemp(f"tiny-{variant}")
    original = d / "original.safetensors"
    ckpt = make_tiny_checkpoint(d / "ckpt", variant=variant, seed=0, original_path=original)
    return ckpt, original


@pytest.fixture(scope="session")
def tiny_default(tmp_path_factory) -> tuple[Path, Path]:
    """(checkpoint dir, BF16 original weights file) of the default variant (in_proj_a/b BF16)."""
    return _make(tmp_path_factory, "default")


@pytest.fixture(scope="session")
def tiny_nvfp4_ab(tmp_path_factory) -> tuple[Path, Path]:
    """The variant whose linear_attn.in_proj_a / in_proj_b are NVFP4 too."""
    return _make(tmp_path_factory, "nvfp4_ab")


@pytest.fixture(scope="session")
def tiny_wide(tmp_path_factory) -> tuple[Path, Path]:
    """A third config with other head counts, head dims, expert count and top-k."""
    return _make(tmp_path_factory, "wide")


@pytest.fixture(scope="session", params=["default", "nvfp4_ab"])
def tiny_any(request) -> tuple[Path, Path]:
    return request.getfixturevalue("tiny_default" if request.param == "default" else "tiny_nvfp4_ab")


# Engines of each tiny variant: sm_90 ones store the W4A16 fragment layout; the NVFP4-a/b one is
# built for sm_100 so the CPU model also reads 128x4-swizzled scales.
ENGINE_TARGETS = {"default": "sm_90", "nvfp4_ab": "sm_100", "wide": "sm_90"}


@pytest.fixture(scope="session")
def tiny_engines(tmp_path_factory) -> dict:
    """variant -> (checkpoint dir, engine dir), built lazily on first use."""
    from qwen35_trt.checkpoint import open_checkpoint
    from qwen35_trt.engine.writer import build_engine

    built: dict = {}

    class Engines(dict):
        def get_engine(self, request, variant: str) -> tuple[Path, Path]:
            if variant not in built:
                ckpt = request.getfixturevalue(f"tiny_{variant}")[0]
                out = tmp_path_factory.mktemp(f"engine-{variant}") / "engine"
                build_engine(open_checkpoint(ckpt), out, target=ENGINE_TARGETS[variant], progress=False)
                built[variant] = (ckpt, out)
            return built[variant]

    return Engines()


def run_cli(*args: str, cwd: Path | None = None):
    """Run build_engine.py in a subprocess; returns CompletedProcess with text output."""
    import subprocess

    return subprocess.run(
        [sys.executable, str(ROOT / "build_engine.py"), *args],
        cwd=cwd or ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
