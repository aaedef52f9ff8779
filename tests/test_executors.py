"""Executor selection (``publish --executor auto|trt|cuda|onnx|cpu``) and the GPU executors.

On a machine without a GPU: auto resolves to the CPU model, an explicitly requested GPU executor
fails with a message naming what is missing (never a silent fallback), a published model with such
an executor does not load. With a GPU (``-m gpu``): the CUDA executor's greedy tokens against the
CPU model's on the tiny variants."""

from __future__ import annotations

import json

import pytest
import torch

from qwen35_trt.serving.executors import EXECUTORS, ExecutorUnavailable, make_executor, select_executor

from conftest import run_cli
from model_agreement import assert_backends_agree
from serving_fixtures import make_limits, tiny_engine  # noqa: F401

HAS_GPU = torch.cuda.is_available()


def test_executor_names():
    assert EXECUTORS == ("auto", "trt", "cuda", "onnx", "cpu")
    with pytest.raises(ExecutorUnavailable, match="expected one of auto, trt, cuda, onnx, cpu"):
        select_executor("gpu", "/nonexistent")


@pytest.mark.skipif(HAS_GPU, reason="checks the choices of a machine without a GPU")
def test_without_a_gpu(tiny_engine):
    assert select_executor("auto", tiny_engine) == "cpu"
    assert select_executor("onnx", tiny_engine) == "onnx"
    for name, why in (("cuda", "no CUDA device is visible"), ("trt", "no CUDA device is visible")):
        with pytest.raises(ExecutorUnavailable, match=f"executor '{name}' cannot run here: {why}"):
            select_executor(name, tiny_engine)
    ex = make_executor("auto", tiny_engine, 2)
    assert ex.name == "cpu" and ex.device.type == "cpu"


def test_onnx_needs_a_step_graph(tiny_engine, tmp_path):
    import shutil

    old = tmp_path / "engine"
    shutil.copytree(tiny_engine, old)
    (old / "model.onnx").unlink()
    with pytest.raises(ExecutorUnavailable, match="no step graph"):
        select_executor("onnx", old)


def test_publish_records_the_executor_and_refuses_trt_without_a_plan(tiny_engine, tmp_path):
    r = run_cli("publish", str(tiny_engine), "--repo", str(tmp_path / "repo"), "--executor", "trt")
    assert r.returncode == 2 and "no TensorRT plan" in r.stderr
    r = run_cli("publish", str(tiny_engine), "--repo", str(tmp_path / "repo"), "--executor", "cuda")
    assert r.returncode == 0, r.stderr  # whether cuda runs is decided where the model is served
    spec = json.loads((tmp_path / "repo" / "qwen35" / "1" / "serving.json").read_text())
    assert spec["executor"] == "cuda"


@pytest.mark.skipif(HAS_GPU, reason="checks a machine without a GPU")
def test_a_runtime_with_an_unavailable_executor_does_not_start(tiny_engine):
    from qwen35_trt.serving.runtime import build_runtime

    with pytest.raises(ExecutorUnavailable, match="executor 'cuda' cannot run here"):
        build_runtime(tiny_engine, make_limits(), executor="cuda")


def test_seeded_generators_live_on_the_executors_device():
    from qwen35_trt.serving.params import SamplingParams
    from qwen35_trt.serving.sampler import new_generator

    params = SamplingParams(temperature=0.7, top_k=5, top_p=1.0, seed=3)
    assert new_generator(params, "cpu").device.type == "cpu"
    assert new_generator(SamplingParams(), "cpu") is None  # greedy


# --- with a GPU -------------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_GPU, reason="no CUDA device")
@pytest.mark.parametrize("variant", ["default", "nvfp4_ab"])
def test_cuda_model_agrees_with_the_cpu_model(variant, tiny_engines, request):
    """The model on the CUDA kernels (chunked GDN prefill with bf16 tensor-core operands, W4A16 or
    native FP4 MoE) against the CPU model: the logits agree as two backends must (model_agreement),
    greedy tokens until a near-tie."""
    from qwen35_trt.model import Qwen35Model

    _, engine = tiny_engines.get_engine(request, variant)
    cpu = Qwen35Model(engine)
    gpu = Qwen35Model(engine, device="cuda")
    assert gpu.gdn_backend == gpu.moe_backend == gpu.attention_backend == "cuda"

    class OnHost:  # the agreement helper compares host tensors
        cfg = gpu.cfg

        def new_cache(self, n):
            return gpu.new_cache(n)

        def forward(self, batch, cache, all_logits=False):
            return [t.cpu() for t in gpu.forward(batch, cache, all_logits)]

    assert_backends_agree(cpu, OnHost(), prompt_lengths=(5, 70, 130))


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_GPU, reason="no CUDA device")
def test_cuda_executor_is_batch_invariant(tiny_engines, request):
    _, engine = tiny_engines.get_engine(request, "default")
    ex = make_executor("cuda", engine, 4)
    assert ex.name == "cuda" and ex.device.type == "cuda"
    g = torch.Generator().manual_seed(2)
    prompts = [torch.randint(0, ex.vocab_size, (n,), generator=g).tolist() for n in (3, 40, 1)]
    alone = []
    for p in prompts:
        s = ex.allocate_slot()
        alone.append(ex.step([(s, p)])[0].clone())
        ex.release_slot(s)
    slots = [ex.allocate_slot() for _ in prompts]
    together = ex.step(list(zip(slots, prompts)))
    for a, b in zip(alone, together):
        assert torch.equal(a, b)


@pytest.mark.skipif(HAS_GPU, reason="checks a machine without a GPU")
def test_tritonserver_does_not_start_with_an_executor_that_cannot_run(tiny_engine, tmp_path):
    from qwen35_trt.serving import launcher
    from qwen35_trt.serving.publish import publish

    try:
        launcher.pytriton_root()
    except launcher.PytritonMissing as e:
        pytest.skip(f"nvidia-pytriton wheel not installed: {e}")
    launcher.prepare(install=True, quiet=True)
    repo = tmp_path / "repo"
    publish(tiny_engine, repo, "qwen35", make_limits(), executor="cuda")
    with pytest.raises(Exception) as info:
        server = launcher.start(repo, tmp_path / "server.log", timeout=120)
        launcher.stop(server)
    log = (tmp_path / "server.log").read_text()
    assert "executor 'cuda' cannot run here: no CUDA device is visible" in log + str(info.value)
    assert not launcher.processes.orphans_of_repo(repo)  # no stub left behind
