"""The step graph (export/step_graph.py, model.onnx in every engine): its structure and weights,
its CPU run (export/onnx_runner.py) against the CPU model, the plugin contracts against the plugin
library's creators, and TensorRT-RTX plans of it (build_engine.py plan)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from qwen35_trt.engine import EngineDir
from qwen35_trt.export import contracts as C
from qwen35_trt.export.onnx_runner import OnnxModel
from qwen35_trt.model import Qwen35Model, greedy_generate

from conftest import run_cli

onnx = pytest.importorskip("onnx")


def _engine(tiny_engines, request, variant):
    return EngineDir(tiny_engines.get_engine(request, variant)[1])


# --- the graph -----------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["default", "nvfp4_ab", "wide"])
def test_builder_writes_a_checked_graph(variant, tiny_engines, request):
    engine = _engine(tiny_engines, request, variant)
    rec = engine.manifest["step_graph"]
    assert rec["file"] == "model.onnx" and any(f["name"] == "model.onnx" for f in engine.manifest["files"])
    onnx.checker.check_model(str(engine.onnx_path), full_check=True)
    model = onnx.load(str(engine.onnx_path), load_external_data=False)
    cfg = engine.config
    kinds = [n.op_type for n in model.graph.node]
    n_gdn, n_attn = cfg.layer_types.count("linear_attention"), cfg.layer_types.count("full_attention")
    assert kinds.count(C.GATED_DELTA_NET.op_type) == kinds.count(C.CAUSAL_CONV1D.op_type) == n_gdn
    assert kinds.count(C.GATED_ATTENTION.op_type) == n_attn
    assert kinds.count(C.NVFP4_MOE.op_type) == cfg.num_hidden_layers
    # Every pool input is aliased by the output of the same name + ".out", which its plugin node writes.
    pools = [v.name for v in model.graph.input if v.name.startswith("layers.")]
    assert len(pools) == 2 * n_gdn + n_attn
    writers = {o: n for n in model.graph.node for o in n.output}
    for pool in pools:
        node = writers[pool + ".out"]
        contract = C.PLUGINS[node.op_type]
        (out_index, in_index), = contract.aliases.items()
        assert list(node.output).index(pool + ".out") == out_index and node.input[in_index] == pool
    assert model.graph.output[0].name == "logits"


def test_weights_are_the_engine_bytes_not_a_copy(tiny_engines, request):
    """Every initialiser larger than a constant is external data into weights.safetensors, and
    reads back exactly the engine's tensor (as int8 carriers for packed FP4 and FP8 scales)."""
    from safetensors import safe_open

    engine = _engine(tiny_engines, request, "nvfp4_ab")
    model = onnx.load(str(engine.onnx_path), load_external_data=False)
    total_external = 0
    for t in model.graph.initializer:
        if t.data_location != onnx.TensorProto.EXTERNAL:
            assert t.name.startswith("const.") and len(t.raw_data or b"") <= 64, t.name
            continue
        assert {e.key: e.value for e in t.external_data}["location"] == "weights.safetensors"
        total_external += 1
    assert total_external > 50
    assert engine.onnx_path.stat().st_size < 200_000  # structure only
    full = onnx.load(str(engine.onnx_path))  # resolves the external data
    with safe_open(str(engine.weights_path), framework="pt") as f:
        for t in full.graph.initializer:
            if t.name.startswith("const."):
                continue
            name = t.name.split(":")[0]
            want = f.get_tensor(name)
            want = want.view(torch.uint8) if want.dtype == torch.float8_e4m3fn else want
            got = onnx.numpy_helper.to_array(t)
            assert got.tobytes() == want.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes(), t.name


def test_plugin_nodes_follow_the_contracts(tiny_engines, request):
    engine = _engine(tiny_engines, request, "default")
    model = onnx.load(str(engine.onnx_path), load_external_data=False)
    for node in model.graph.node:
        if node.domain != C.DOMAIN:
            continue
        contract = C.PLUGINS[node.op_type]
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        contract.check(list(node.input), {k: v.decode() if isinstance(v, bytes) else v for k, v in attrs.items()})
        assert len(node.output) == len(contract.outputs)


def test_contracts_match_the_plugin_creators():
    """The graph's attribute names and types are the creators' fields (the plugin library is the
    other copy of the contract)."""
    from plugin_builds import tensorrt_with_plugins

    trt = tensorrt_with_plugins(C.GATED_ATTENTION.op_type)
    registry = trt.get_plugin_registry()
    kinds = {int: trt.PluginFieldType.INT32, float: trt.PluginFieldType.FLOAT32, str: trt.PluginFieldType.CHAR}
    for contract in C.PLUGINS.values():
        creator = registry.get_creator(contract.op_type, C.PLUGIN_VERSION, C.DOMAIN)
        assert creator is not None, contract.op_type
        fields = {f.name: f.type for f in creator.field_names}
        assert set(fields) == set(contract.attributes), contract.op_type
        for name, kind in contract.attributes.items():
            assert fields[name] == kinds[kind], (contract.op_type, name)


# --- the CPU run against the CPU model ----------------------------------------------------------


@pytest.fixture(scope="module")
def nvfp4_ab_sm90(tiny_nvfp4_ab, tmp_path_factory):
    """The variant with NVFP4 in_proj_a/b, built for sm_90 (W4A16 everywhere)."""
    from qwen35_trt.checkpoint import open_checkpoint
    from qwen35_trt.engine.writer import build_engine

    out = tmp_path_factory.mktemp("nvfp4_ab_sm90") / "engine"
    build_engine(open_checkpoint(tiny_nvfp4_ab[0]), out, target="sm_90", progress=False)
    return EngineDir(out)


@pytest.mark.parametrize("variant", ["default", "wide", "nvfp4_ab"])
def test_cpu_run_is_the_cpu_model_bit_for_bit(variant, tiny_engines, request):
    """A W4A16 graph (sm_90 engines) computes the CPU model's logits bit for bit, prefill and decode,
    and so its greedy tokens, on every tiny variant."""
    engine = request.getfixturevalue("nvfp4_ab_sm90") if variant == "nvfp4_ab" else _engine(tiny_engines, request, variant)
    torch.set_num_threads(1)
    cpu, graph = Qwen35Model(engine.path), OnnxModel(engine.path)
    g = torch.Generator().manual_seed(11)
    for n in (1, 6, 70):
        prompt = torch.randint(0, cpu.cfg.vocab_size, (n,), generator=g).tolist()
        c1, c2 = cpu.new_cache(1), graph.new_cache(1)
        s1, s2 = c1.allocate(), c2.allocate()
        assert torch.equal(cpu.forward([(s1, prompt)], c1)[0], graph.forward([(s2, prompt)], c2)[0])
        assert torch.equal(cpu.forward([(s1, [3])], c1)[0], graph.forward([(s2, [3])], c2)[0])
        assert greedy_generate(cpu, prompt, 16) == greedy_generate(graph, prompt, 16)


def test_cpu_run_converts_fragment_weights_once(tiny_engines, request):
    """An sm_90 graph's NVFP4 nodes say scale_layout "w4a16_fragments"; the CPU run converts each
    weight initialiser to ModelOpt's order once and reuses it every step."""
    engine = _engine(tiny_engines, request, "default")
    assert engine.scale_layout == "w4a16_fragments"
    graph = OnnxModel(engine.path)
    nvfp4_nodes = [n for n in graph.runner.nodes if n.op_type in (C.NVFP4_LINEAR.op_type, C.NVFP4_MOE.op_type)]
    assert nvfp4_nodes and all(graph.runner._attrs[n.name]["scale_layout"] == "w4a16_fragments" for n in nvfp4_nodes)
    cache = graph.new_cache(1)
    slot = cache.allocate()
    graph.forward([(slot, [1, 2, 3])], cache)
    converted = dict(graph.runner._modelopt)
    weights = {n.input[1] for n in nvfp4_nodes if n.op_type == C.NVFP4_LINEAR.op_type}
    assert weights and weights <= {codes for codes, _ in converted}
    graph.forward([(slot, [4])], cache)
    assert graph.runner._modelopt.keys() == converted.keys()
    assert all(graph.runner._modelopt[k][0] is converted[k][0] for k in converted)
    # The conversion is ModelOpt's order: the CPU model's weights (EngineDir.load_weights).
    w = engine.load_weights()
    for codes, scales in converted:
        assert torch.equal(converted[(codes, scales)][0], w[codes.split(":")[0]]), codes
        assert torch.equal(converted[(codes, scales)][1], w[scales.split(":")[0]]), scales


def test_cpu_run_of_a_w4a4_graph(tiny_engines, request):
    """An sm_100 engine's graph quantizes activations (W4A4) where the checkpoint has input scales;
    the CPU model computes W4A16. Same model, activation quantization noise only."""
    engine = _engine(tiny_engines, request, "nvfp4_ab")
    computes = {m["compute"] for m in engine.manifest["quantization"]["modules"].values()}
    assert "w4a4" in computes
    cpu, graph = Qwen35Model(engine.path), OnnxModel(engine.path)
    prompt = list(range(3, 40))
    c1, c2 = cpu.new_cache(1), graph.new_cache(1)
    a = cpu.forward([(c1.allocate(), prompt)], c1)[0].float()
    b = graph.forward([(c2.allocate(), prompt)], c2)[0].float()
    cos = torch.nn.functional.cosine_similarity(a, b, dim=0).item()
    assert 0.95 < cos < 1.0, cos


def test_cpu_run_is_batch_invariant(tiny_engines, request):
    """Several sequences in one step (new prompts, a prefill chunk, decode tokens) give each one
    bit for bit what it gets alone: the graph's executors share the step inputs (step_inputs.py)."""
    engine = _engine(tiny_engines, request, "default")
    graph = OnnxModel(engine.path, batch_invariant=True)
    g = torch.Generator().manual_seed(4)
    prompts = [torch.randint(0, graph.cfg.vocab_size, (n,), generator=g).tolist() for n in (5, 40, 1, 17)]
    alone = []
    for p in prompts:
        cache = graph.new_cache(1)
        s = cache.allocate()
        first = graph.forward([(s, p)], cache)[0]
        second = graph.forward([(s, [7])], cache)[0]
        alone.append((first, second))
    cache = graph.new_cache(6)
    cache.allocate()  # the batch lands on slots 1..4
    slots = [cache.allocate() for _ in prompts]
    firsts = graph.forward([(slots[0], prompts[0]), (slots[1], prompts[1][:20])], cache)
    mixed = graph.forward([(slots[1], prompts[1][20:]), (slots[0], [7]), (slots[2], prompts[2]), (slots[3], prompts[3])], cache)
    seconds = graph.forward([(slots[2], [7]), (slots[3], [7]), (slots[1], [7])], cache)
    assert torch.equal(firsts[0], alone[0][0]) and torch.equal(mixed[1], alone[0][1])
    assert torch.equal(mixed[0], alone[1][0]) and torch.equal(seconds[2], alone[1][1])
    assert torch.equal(mixed[2], alone[2][0]) and torch.equal(seconds[0], alone[2][1])
    assert torch.equal(mixed[3], alone[3][0]) and torch.equal(seconds[1], alone[3][1])


def test_generate_cli_with_the_graph(tiny_engines, request):
    import subprocess
    import sys

    engine = _engine(tiny_engines, request, "default")
    outs = {}
    for ex in ("cpu", "onnx"):
        r = subprocess.run([sys.executable, "-m", "qwen35_trt", "generate", str(engine.path), "--prompt-ids", "1,2,3",
                            "--max-new-tokens", "8", "--executor", ex, "--json"], capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        outs[ex] = json.loads(r.stdout)
    assert outs["onnx"]["executor"] == "onnx" and len(outs["onnx"]["output_ids"]) == 8


def test_engine_without_a_graph_says_rebuild(tiny_engines, request, tmp_path):
    engine = _engine(tiny_engines, request, "default")
    old = tmp_path / "old"
    shutil.copytree(engine.path, old)
    (old / "model.onnx").unlink()
    with pytest.raises(Exception, match="rebuild the engine"):
        OnnxModel(old)
    r = run_cli("plan", str(old), "--target", "sm_90")
    assert r.returncode == 2


# --- plans --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sm120_engine(tiny_default, tmp_path_factory):
    from qwen35_trt.checkpoint import open_checkpoint
    from qwen35_trt.engine.writer import build_engine

    out = tmp_path_factory.mktemp("sm120") / "engine"
    build_engine(open_checkpoint(tiny_default[0]), out, target="sm_120", progress=False)
    return out


def test_plan_sm120_with_tensorrt_rtx(sm120_engine):
    pytest.importorskip("tensorrt_rtx", reason="tensorrt_rtx (the test extra) is not installed")
    before = EngineDir(sm120_engine).manifest_sha256
    r = run_cli("plan", str(sm120_engine), "--target", "sm_120", "--max-running", "4", "--max-tokens-per-step", "128",
                "--max-context", "256")
    assert r.returncode == 0, r.stdout + r.stderr
    engine = EngineDir(sm120_engine)
    rec = engine.manifest["plans"]["sm_120"]
    plan = engine.plan_path("sm_120")
    assert plan.is_file() and rec["size"] == plan.stat().st_size and rec["builder"] == "tensorrt-rtx"
    assert rec["limits"]["max_running"] == 4 and rec["profile"]["input_ids"][2] == [128]
    assert rec["profile"]["block_tables"][2] == [4, 256 // 16]
    assert rec["plugin_library"]["serialized_into_plan"] is True
    assert engine.manifest_sha256 != before  # the record is part of the manifest
    assert not list(sm120_engine.glob(".*tmp*")) and not list((sm120_engine / "plan").glob(".*tmp*"))


def test_plan_refusals(sm120_engine, tiny_engines, request):
    r = run_cli("plan", str(sm120_engine), "--target", "sm_90")
    assert r.returncode == 2 and "built for sm_120, not sm_90" in r.stderr
    r = run_cli("plan", str(sm120_engine), "--target", "sm_120", "--builder", "tensorrt")  # on an sm_120 GPU only
    assert r.returncode == 0 or (r.returncode == 2 and ("'tensorrt' is not installed" in r.stderr or "GPU" in r.stderr))
    engine = _engine(tiny_engines, request, "default")  # sm_90: standard TensorRT, absent here
    r = run_cli("plan", str(engine.path), "--target", "sm_90")
    assert r.returncode == 2 and ("'tensorrt' is not installed" in r.stderr or "GPU" in r.stderr)
    r = run_cli("plan", str(sm120_engine), "--target", "sm_120", "--max-running", "0")
    assert r.returncode == 2 and "--max-running" in r.stderr


def test_plan_refuses_a_graph_the_plugin_library_does_not_match(sm120_engine, tmp_path):
    pytest.importorskip("tensorrt_rtx", reason="tensorrt_rtx (the test extra) is not installed")
    other = tmp_path / "engine"
    shutil.copytree(sm120_engine, other, ignore=shutil.ignore_patterns("plan"))
    model = onnx.load(str(other / "model.onnx"), load_external_data=False)
    node = next(n for n in model.graph.node if n.op_type == C.GATED_ATTENTION.op_type)
    node.attribute.append(onnx.helper.make_attribute("plugin_version", "2"))
    onnx.save(model, str(other / "model.onnx"))
    r = run_cli("plan", str(other), "--target", "sm_120")
    assert r.returncode == 2 and "Qwen35GatedAttention version 2" in r.stderr
    assert not (other / "plan" / "sm_120.plan").exists()


def test_plan_memory_estimate():
    from qwen35_trt.export.plan import plan_memory_estimate

    # the full-dimension 2-layer engine: 2.78 GiB of weights, 8.6 GiB peak seen
    assert 8.6 * 2**30 < plan_memory_estimate(int(2.78 * 2**30)) < 10 * 2**30


def test_print_trtexec_uses_the_plan_profile(sm120_engine):
    r = run_cli("plan", str(sm120_engine), "--target", "sm_120", "--print-trtexec", "--max-running", "4", "--max-context", "256",
                "--max-tokens-per-step", "128")
    assert r.returncode == 0, r.stderr
    cmd = r.stdout
    for flag in ("--stronglyTyped", "--dynamicPlugins=", "--setPluginsToSerialize=", "--previewFeatures=aliasedPluginIO1003"):
        assert flag in cmd
    shapes = dict(kv.split(":") for kv in cmd.split("--maxShapes=")[1].split()[0].split(","))
    assert shapes["input_ids"] == "128" and shapes["block_tables"] == "4x16" and shapes["cu_seqlens"] == "5"
