"""A TensorRT-RTX sm_120 plan of a full-dimension engine: the synthetic 2-layer checkpoint with the
real Qwen3.5-35B-A3B shapes (vocab 248320, 256 experts top-8, GDN 16/32 heads of 128, attention
16/2 heads of 256), one GDN and one attention layer. Takes ~1 minute and ~9 GiB of memory here
(the plan embeds the 2.8 GiB of weights); bench/RESULTS.md has the numbers."""

from __future__ import annotations

import shutil

import psutil
import pytest

from qwen35_trt.engine import EngineDir

from conftest import run_cli

pytestmark = pytest.mark.slow


def test_full_dimension_engine_builds_an_sm120_plan(tmp_path):
    pytest.importorskip("tensorrt_rtx", reason="tensorrt_rtx (the test extra) is not installed")
    from qwen35_trt.checkpoint import open_checkpoint
    from qwen35_trt.engine.writer import build_engine
    from qwen35_trt.export.plan import plan_memory_estimate
    from qwen35_trt.testing.synthetic import make_synthetic_checkpoint

    ckpt = make_synthetic_checkpoint(tmp_path / "ckpt", num_layers=2)
    engine_dir = tmp_path / "engine"
    build_engine(open_checkpoint(ckpt), engine_dir, target="sm_120", progress=False)
    shutil.rmtree(ckpt)  # disk: the checkpoint, the engine and the plan are 2.8 GB each
    engine = EngineDir(engine_dir)
    assert engine.manifest["step_graph"]["file"] == "model.onnx"
    need = plan_memory_estimate(engine.weights_path.stat().st_size)
    if need > psutil.virtual_memory().available:
        pytest.skip(f"the build needs ~{need / 2**30:.1f} GiB, not available on this machine")
    r = run_cli("plan", str(engine_dir), "--target", "sm_120", "--max-running", "16", "--max-tokens-per-step", "512",
                "--max-context", "4096")
    assert r.returncode == 0, r.stdout + r.stderr
    print(r.stdout)
    rec = EngineDir(engine_dir).manifest["plans"]["sm_120"]
    plan = engine_dir / rec["file"]
    assert plan.stat().st_size == rec["size"]
    # the plan embeds the weights: about their size
    weights = engine.weights_path.stat().st_size
    assert 0.9 * weights < rec["size"] < 1.2 * weights
    assert rec["peak_rss_bytes"] < need
