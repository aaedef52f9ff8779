"""Serving the engine's step graph: ``publish --executor onnx`` runs model.onnx on the CPU
(export/onnx_runner.py) inside the same runtime as the CPU model."""

from __future__ import annotations

import shutil

import pytest

from serving_fixtures import Reference, make_limits, start_server, tiny_engine  # noqa: F401

from conftest import run_cli


def test_onnx_runtime_gives_the_cpu_runtimes_tokens(tiny_engines, request):
    """On a W4A16 engine the graph computes the CPU model bit for bit, so the two runtimes stream the
    same tokens and text."""
    _, engine = tiny_engines.get_engine(request, "default")  # sm_90: W4A16
    cpu, graph = Reference(engine, "cpu"), Reference(engine, "onnx")
    assert type(graph.runtime.executor.model).__name__ == "OnnxModel"
    for prompt, n in (("The engine directory holds", 12), ("a", 5), ("weights repacked for the kernels " * 8, 9)):
        assert graph.generate(prompt, n) == cpu.generate(prompt, n)
    assert graph.generate("Seeded sampling", 8, temperature=0.8, top_k=20, seed=7) == \
        cpu.generate("Seeded sampling", 8, temperature=0.8, top_k=20, seed=7)


def test_publish_onnx_needs_a_step_graph(tiny_engine, tmp_path):
    old = tmp_path / "engine"
    shutil.copytree(tiny_engine, old)
    (old / "model.onnx").unlink()
    r = run_cli("publish", str(old), "--repo", str(tmp_path / "repo"), "--executor", "onnx")
    assert r.returncode == 2 and "no step graph (model.onnx)" in r.stderr
    assert not (tmp_path / "repo" / "qwen35").exists()
    r = run_cli("publish", str(old), "--repo", str(tmp_path / "repo"), "--executor", "cpu")
    assert r.returncode == 0, r.stderr


def test_tritonserver_serves_the_step_graph(tiny_engine, tmp_path):
    from qwen35_trt.serving import launcher
    from qwen35_trt.serving.client import stream_generate
    from qwen35_trt.serving.publish import publish

    grpcclient = pytest.importorskip("tritonclient.grpc", reason="tritonclient[grpc] (the serving extra) is not installed")
    try:
        launcher.pytriton_root()
    except launcher.PytritonMissing as e:
        pytest.skip(f"nvidia-pytriton wheel not installed: {e}")
    launcher.prepare(install=True, quiet=True)
    repo = tmp_path / "repo"
    res = publish(tiny_engine, repo, "qwen35", make_limits(), executor="onnx")
    assert '"executor": "onnx"' in (res.version_dir / "serving.json").read_text()
    alone = Reference(tiny_engine, "onnx")  # the same executor, one request at a time
    info = start_server(repo, tmp_path / "server.log")
    try:
        client = grpcclient.InferenceServerClient(info.grpc_url)
        for prompt in ("The engine directory holds", "Once upon a time"):
            got = stream_generate(client, "qwen35", prompt, 10, timeout=60)
            assert got.error is None
            assert (got.ids, got.text) == alone.generate(prompt, 10)
    finally:
        launcher.stop(info)
