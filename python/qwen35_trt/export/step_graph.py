"""The step graph (``model.onnx``): one decoder step over a batch of sequences, as ONNX with plugin
nodes (docs/step_graph.md).

One graph serves prompts, prefill chunks and decode tokens together. Inputs: the step's token ids
flattened ``[T]``, the per-sequence metadata (``cu_seqlens``, ``context_lens``, GDN ``slots`` and
``has_initial_state``, KV ``block_tables``, ``last_token_rows``) and the state pools (per GDN layer
the conv and recurrent state, per attention layer the paged KV pool), each pool an input aliased to
an output of the same name plus ``.out``. Output: ``logits`` [B, V] of each sequence's last token.

Weights are ONNX external data pointing into the engine's ``weights.safetensors`` (no second copy);
NVFP4 weights stay packed and reach the plugins as int8 byte carriers (docs/plugins.md). Standard
ops carry what ONNX has (embedding gather, norms, residuals, SwiGLU of the shared expert, router
and lm_head GEMMs); plugin nodes (``contracts``) the rest. The graph computes what the CPU model
(``model.Qwen35Model``) computes, op for op, with its bf16 cast points.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..engine import EngineDir
from ..engine.format import WEIGHTS_FILE
from ..errors import UnsupportedError
from ..safetensors_io import SafetensorsFile, TensorInfo
from . import contracts as C

OPSET = 20
GRAPH_NAME = "qwen35_trt_step"

# Graph inputs of the step metadata: name -> (ONNX dtype name, dims).
STEP_INPUTS = {
    "input_ids": ("int32", ["tokens"]),
    "cu_seqlens": ("int32", ["batch_plus_1"]),
    "context_lens": ("int32", ["batch"]),
    "slots": ("int32", ["batch"]),
    "has_initial_state": ("bool", ["batch"]),
    "block_tables": ("int32", ["batch", "max_blocks_per_seq"]),
    "last_token_rows": ("int32", ["batch"]),
}


def conv_state_name(layer: int) -> str:
    return f"layers.{layer}.conv_state"


def recurrent_state_name(layer: int) -> str:
    return f"layers.{layer}.recurrent_state"


def kv_pool_name(layer: int) -> str:
    return f"layers.{layer}.kv_pool"


def updated(pool: str) -> str:
    """The output that carries (aliases) a pool input."""
    return f"{pool}.out"


def _onnx():
    try:
        import onnx
    except ImportError as e:  # pragma: no cover - onnx is a dependency
        raise UnsupportedError("the step graph needs the onnx package (pip install onnx)") from e
    return onnx


class _Builder:
    """Nodes, initialisers and graph I/O; every value is named after the node that makes it."""

    _ST_DTYPES = {"BF16": "BFLOAT16", "F32": "FLOAT", "U8": "UINT8", "F8_E4M3": "FLOAT8E4M3FN", "I32": "INT32"}

    def __init__(self, weights: SafetensorsFile):
        self.onnx = _onnx()
        self.weights = weights
        self.nodes, self.initializers, self.inputs, self.outputs = [], [], [], []
        self._weights_done: dict[str, str] = {}
        self._consts: dict[tuple, str] = {}

    def dtype(self, name: str) -> int:
        return getattr(self.onnx.TensorProto, name)

    def graph_input(self, name: str, dtype: str, dims: list) -> str:
        self.inputs.append(self.onnx.helper.make_tensor_value_info(name, self.dtype(dtype.upper() if dtype != "bool" else "BOOL"), dims))
        return name

    def graph_output(self, name: str, dtype: str, dims: list) -> None:
        self.outputs.append(self.onnx.helper.make_tensor_value_info(name, self.dtype(dtype), dims))

    def weight(self, tensor: str, as_int8: bool = False, dims: tuple[int, ...] | None = None) -> str:
        """An initialiser that points at ``tensor``'s bytes in weights.safetensors. ``as_int8``:
        declared INT8 (the plugins' byte carrier for packed FP4 and FP8 scales); ``dims``: another
        view of the same bytes (e.g. the conv weight [C, 1, W] as [C, W])."""
        key = f"{tensor}|{as_int8}|{dims}"
        if key in self._weights_done:
            return self._weights_done[key]
        info: TensorInfo = self.weights.tensors[tensor]
        dtype = "INT8" if as_int8 else self._ST_DTYPES[info.dtype]
        shape = tuple(info.shape) if dims is None else tuple(dims)
        if int(np.prod(shape, dtype=np.int64)) != info.numel:
            raise ValueError(f"{tensor}: {shape} is not a view of {info.shape}")
        t = self.onnx.TensorProto()
        t.name = tensor if dims is None and not as_int8 else f"{tensor}:{'int8' if as_int8 else 'x'.join(map(str, shape))}"
        t.data_type = self.dtype(dtype)
        t.dims.extend(shape)
        t.data_location = self.onnx.TensorProto.EXTERNAL
        for k, v in (("location", WEIGHTS_FILE), ("offset", str(info.offset)), ("length", str(info.nbytes))):
            entry = t.external_data.add()
            entry.key, entry.value = k, v
        self.initializers.append(t)
        self._weights_done[key] = t.name
        return t.name

    def const(self, value, dtype: str) -> str:
        """A small inline constant (eps, axes, shapes)."""
        arr = np.asarray(value, dtype={"FLOAT": np.float32, "INT64": np.int64}[dtype])
        key = (dtype, arr.shape, arr.tobytes())
        if key not in self._consts:
            name = f"const.{len(self._consts)}"
            self.initializers.append(self.onnx.numpy_helper.from_array(arr, name))
            self._consts[key] = name
        return self._consts[key]

    def op(self, op_type: str, inputs: list[str], name: str, outputs: int | list[str] = 1, domain: str = "", **attrs) -> list[str]:
        outs = outputs if isinstance(outputs, list) else ([name] if outputs == 1 else [f"{name}:{i}" for i in range(outputs)])
        self.nodes.append(self.onnx.helper.make_node(op_type, inputs, outs, name=name, domain=domain, **attrs))
        return outs

    def one(self, op_type: str, inputs: list[str], name: str, **attrs) -> str:
        return self.op(op_type, inputs, name, **attrs)[0]

    def plugin(self, contract: C.PluginContract, inputs: list[str], name: str, outputs: int | list[str] = 1, **attrs) -> list[str]:
        contract.check(inputs, attrs)
        return self.op(contract.op_type, inputs, name, outputs, domain=C.DOMAIN, **attrs)


class StepGraph:
    """Builds the step graph of one engine (see the module docstring)."""

    def __init__(self, engine: EngineDir):
        self.engine = engine
        self.cfg = engine.config
        self.modules = engine.manifest["quantization"]["modules"]
        self.scale_layout = engine.scale_layout
        self.b = _Builder(SafetensorsFile(engine.require_weights()))
        self.F = self.b.dtype("FLOAT")
        self.BF16 = self.b.dtype("BFLOAT16")

    # ---- pieces ----

    def cast(self, x: str, to: int, name: str) -> str:
        return self.b.one("Cast", [x], name, to=to)

    def rms_norm(self, x: str, weight: str, name: str) -> str:
        """Zero-centred RMSNorm, as ops.norms.rms_norm: fp32, gain 1 + w, cast back to bf16."""
        b, eps = self.b, self.cfg.rms_norm_eps
        xf = self.cast(x, self.F, f"{name}.x_f32")
        ms = b.one("ReduceMean", [b.one("Mul", [xf, xf], f"{name}.sq"), b.const([-1], "INT64")], f"{name}.mean", keepdims=1)
        inv = b.one("Reciprocal", [b.one("Sqrt", [b.one("Add", [ms, b.const(eps, "FLOAT")], f"{name}.add_eps")], f"{name}.sqrt")], f"{name}.rsqrt")
        gain = b.one("Add", [self.cast(b.weight(weight), self.F, f"{name}.w_f32"), b.const(1.0, "FLOAT")], f"{name}.gain")
        y = b.one("Mul", [b.one("Mul", [xf, inv], f"{name}.normed"), gain], f"{name}.scaled")
        return self.cast(y, self.BF16, name)

    def silu_f32(self, x: str, name: str) -> str:
        """x / (1 + exp(-x)) on fp32 values, the formula torch's silu evaluates."""
        b = self.b
        e = b.one("Exp", [b.one("Neg", [x], f"{name}.neg")], f"{name}.exp")
        return b.one("Div", [x, b.one("Add", [e, b.const(1.0, "FLOAT")], f"{name}.denominator")], name)

    def linear(self, x: str, module: str) -> str:
        """x [T, K] @ W^T: the Nvfp4Linear plugin for NVFP4 modules, a bf16 Gemm otherwise."""
        b = self.b
        info = self.modules.get(module, {"format": "bf16"})
        if info["format"] == "bf16":
            return b.one("Gemm", [x, b.weight(f"{module}.weight")], module, transB=1)
        if info["format"] != "nvfp4":
            raise UnsupportedError(f"{module}: format {info['format']!r} has no step-graph node yet")
        inputs = [x, b.weight(f"{module}.weight", as_int8=True), b.weight(f"{module}.weight_scale", as_int8=True),
                  b.weight(f"{module}.weight_scale_2")]
        if info["compute"] == "w4a4":
            inputs.append(b.weight(f"{module}.input_scale"))
        return b.plugin(C.NVFP4_LINEAR, inputs, module, scale_layout=self.scale_layout, activation=info["compute"])[0]

    def bf16_gemm(self, x: str, weight: str, name: str) -> str:
        return self.b.one("Gemm", [x, self.b.weight(weight)], name, transB=1)

    # ---- layers ----

    def attention(self, i: int, h: str, meta: dict[str, str]) -> str:
        cfg, b, p = self.cfg, self.b, f"layers.{i}.self_attn"
        qg, k, v = (self.linear(h, f"{p}.{n}_proj") for n in ("q", "k", "v"))
        pool = kv_pool_name(i)
        b.graph_input(pool, "bfloat16", ["num_kv_blocks", 2, cfg.num_key_value_heads, "kv_block_size", cfg.head_dim])
        out, _ = b.plugin(
            C.GATED_ATTENTION,
            [qg, k, v, b.weight(f"{p}.q_norm.weight"), b.weight(f"{p}.k_norm.weight"), pool, meta["block_tables"],
             meta["cu_seqlens"], meta["context_lens"]],
            f"{p}.attention", outputs=[f"{p}.attention", updated(pool)],
            num_heads=cfg.num_attention_heads, num_kv_heads=cfg.num_key_value_heads, head_dim=cfg.head_dim,
            rotary_dim=cfg.rotary_dim, rope_theta=float(cfg.rope_theta), eps=float(cfg.rms_norm_eps),
            scale=float(cfg.head_dim**-0.5),
        )
        self.b.graph_output(updated(pool), "BFLOAT16", ["num_kv_blocks", 2, cfg.num_key_value_heads, "kv_block_size", cfg.head_dim])
        return self.linear(out, f"{p}.o_proj")

    def gdn(self, i: int, h: str, meta: dict[str, str]) -> str:
        cfg, b, p = self.cfg, self.b, f"layers.{i}.linear_attn"
        hk, hv = cfg.linear_num_key_heads, cfg.linear_num_value_heads
        dk, dv, W, C_ = cfg.linear_key_head_dim, cfg.linear_value_head_dim, cfg.linear_conv_kernel_dim, cfg.conv_channels
        qkv, z, a, bb = (self.linear(h, f"{p}.{n}") for n in ("in_proj_qkv", "in_proj_z", "in_proj_a", "in_proj_b"))
        conv, rec = conv_state_name(i), recurrent_state_name(i)
        conv_dims, rec_dims = ["num_slots", C_, W - 1], ["num_slots", hv, dk, dv]
        b.graph_input(conv, "bfloat16", conv_dims)
        b.graph_input(rec, "float", rec_dims)
        seq = [meta["slots"], meta["cu_seqlens"], meta["has_initial_state"]]
        y, _ = b.plugin(C.CAUSAL_CONV1D, [qkv, b.weight(f"{p}.conv1d.weight", dims=(C_, W)), conv, *seq], f"{p}.conv1d",
                        outputs=[f"{p}.conv1d", updated(conv)], width=W, activation="silu")
        parts = b.op("Split", [y, b.const([hk * dk, hk * dk, hv * dv], "INT64")], f"{p}.split_qkv", outputs=3, axis=1)
        q, k, v = (b.one("Reshape", [t, b.const([-1, n, d], "INT64")], f"{p}.{nm}_heads")
                   for t, n, d, nm in zip(parts, (hk, hk, hv), (dk, dk, dv), ("q", "k", "v")))
        A_log = self.cast(b.weight(f"{p}.A_log"), self.F, f"{p}.A_log_f32")
        dt_bias = self.cast(b.weight(f"{p}.dt_bias"), self.F, f"{p}.dt_bias_f32")
        o, _ = b.plugin(C.GATED_DELTA_NET, [q, k, v, a, bb, A_log, dt_bias, rec, *seq], f"{p}.gated_delta_net",
                        outputs=[f"{p}.gated_delta_net", updated(rec)], use_qk_l2norm=1, scale=float(dk**-0.5),
                        algorithm="auto")
        b.graph_output(updated(conv), "BFLOAT16", conv_dims)
        b.graph_output(updated(rec), "FLOAT", rec_dims)
        # Gated RMSNorm per value head (ops.norms.gated_rms_norm): not zero-centred, silu(z) gate in fp32.
        n = f"{p}.norm"
        of = self.cast(o, self.F, f"{n}.x_f32")
        ms = b.one("ReduceMean", [b.one("Mul", [of, of], f"{n}.sq"), b.const([-1], "INT64")], f"{n}.mean", keepdims=1)
        inv = b.one("Reciprocal", [b.one("Sqrt", [b.one("Add", [ms, b.const(cfg.rms_norm_eps, "FLOAT")], f"{n}.add_eps")], f"{n}.sqrt")], f"{n}.rsqrt")
        normed = self.cast(b.one("Mul", [of, inv], f"{n}.normed_f32"), self.BF16, f"{n}.normed")
        weighted = b.one("Mul", [b.weight(f"{p}.norm.weight"), normed], f"{n}.weighted")
        zf = self.cast(b.one("Reshape", [z, b.const([-1, hv, dv], "INT64")], f"{p}.z_heads"), self.F, f"{n}.z_f32")
        gated = b.one("Mul", [self.cast(weighted, self.F, f"{n}.weighted_f32"), self.silu_f32(zf, f"{n}.silu")], f"{n}.gated")
        flat = b.one("Reshape", [self.cast(gated, self.BF16, n), b.const([-1, hv * dv], "INT64")], f"{n}.flat")
        return self.linear(flat, f"{p}.out_proj")

    def moe(self, i: int, h: str) -> str:
        cfg, b, p = self.cfg, self.b, f"layers.{i}.mlp"
        experts = self.modules.get(f"{p}.experts", {})
        shared = [f"{p}.shared_expert.{n}" for n in ("gate_proj", "up_proj", "down_proj")]
        if experts.get("format") != "nvfp4":
            raise UnsupportedError(f"{p}: the step graph needs NVFP4 routed experts (the Nvfp4MoE contract), got {experts.get('format')!r}")
        logits = self.bf16_gemm(h, f"{p}.gate.weight", f"{p}.router")
        e = f"{p}.experts"
        inputs = [h, logits]
        for proj in ("gate_up_proj", "down_proj"):
            inputs += [b.weight(f"{e}.{proj}.weight", as_int8=True), b.weight(f"{e}.{proj}.weight_scale", as_int8=True),
                       b.weight(f"{e}.{proj}.weight_scale_2")]
        w4a4 = experts["compute"] == "w4a4"
        if w4a4:
            inputs += [b.weight(f"{e}.gate_up_proj.input_scale"), b.weight(f"{e}.down_proj.input_scale")]
        infos = [self.modules.get(m, {}) for m in shared]
        fused = all(i.get("format") == "nvfp4" and i.get("compute") == experts["compute"] for i in infos)
        if fused:  # the shared expert inside the MoE op: one bf16 rounding of the sum, as the CPU model
            for m in shared:
                inputs += [b.weight(f"{m}.weight", as_int8=True), b.weight(f"{m}.weight_scale", as_int8=True), b.weight(f"{m}.weight_scale_2")]
                if w4a4:
                    inputs.append(b.weight(f"{m}.input_scale"))
            inputs.append(b.weight(f"{p}.shared_expert_gate.weight"))
        out = b.plugin(C.NVFP4_MOE, inputs, f"{p}.experts" if fused else f"{p}.routed_experts", top_k=cfg.num_experts_per_tok,
                       scale_layout=self.scale_layout, activation=experts["compute"], shared_expert=int(fused))[0]
        if fused:
            return out
        # A shared expert the op does not take (BF16, or computed otherwise than the routed experts):
        # SwiGLU in fp32 from the bf16 projections, gated by sigmoid(x . w) in fp32, added in fp32.
        s = f"{p}.shared_expert"
        gate = self.cast(self.linear(h, shared[0]), self.F, f"{s}.gate_f32")
        up = self.cast(self.linear(h, shared[1]), self.F, f"{s}.up_f32")
        act = self.cast(b.one("Mul", [self.silu_f32(gate, f"{s}.silu"), up], f"{s}.swiglu_f32"), self.BF16, f"{s}.swiglu")
        down = self.cast(self.linear(act, shared[2]), self.F, f"{s}.down_f32")
        hf = self.cast(h, self.F, f"{s}.x_f32")
        gw = self.cast(b.weight(f"{p}.shared_expert_gate.weight"), self.F, f"{s}.gate_weight_f32")
        sig = b.one("Sigmoid", [b.one("Gemm", [hf, gw], f"{s}.gate_logit", transB=1)], f"{s}.gate_sigmoid")
        total = b.one("Add", [self.cast(out, self.F, f"{p}.routed_f32"), b.one("Mul", [sig, down], f"{s}.gated")], f"{p}.sum_f32")
        return self.cast(total, self.BF16, f"{p}.out")

    # ---- the graph ----

    def build(self):
        onnx, b, cfg = self.b.onnx, self.b, self.cfg
        meta = {n: b.graph_input(n, dt, dims) for n, (dt, dims) in STEP_INPUTS.items()}
        x = b.one("Gather", [b.weight("embed_tokens.weight"), meta["input_ids"]], "embed_tokens", axis=0)
        for i, kind in enumerate(cfg.layer_types):
            h = self.rms_norm(x, f"layers.{i}.input_layernorm.weight", f"layers.{i}.input_layernorm")
            mixed = self.gdn(i, h, meta) if kind == "linear_attention" else self.attention(i, h, meta)
            x = b.one("Add", [x, mixed], f"layers.{i}.mixer_residual")
            h = self.rms_norm(x, f"layers.{i}.post_attention_layernorm.weight", f"layers.{i}.post_attention_layernorm")
            x = b.one("Add", [x, self.moe(i, h)], f"layers.{i}.mlp_residual")
        last = b.one("Gather", [x, meta["last_token_rows"]], "last_tokens", axis=0)
        last = self.rms_norm(last, "norm.weight", "norm")
        head = "embed_tokens.weight" if cfg.tie_word_embeddings or "lm_head.weight" not in b.weights.tensors else "lm_head.weight"
        b.op("Gemm", [last, b.weight(head)], "lm_head", outputs=["logits"], transB=1)
        b.graph_output("logits", "BFLOAT16", ["batch", cfg.vocab_size])
        # Outputs in a stable order: logits, then the pools in layer order.
        b.outputs.sort(key=lambda v: (v.name != "logits", _layer_of(v.name), v.name))
        graph = onnx.helper.make_graph(b.nodes, GRAPH_NAME, b.inputs, b.outputs, initializer=b.initializers)
        model = onnx.helper.make_model(
            graph, producer_name="qwen35_trt", opset_imports=[onnx.helper.make_opsetid("", OPSET), onnx.helper.make_opsetid(C.DOMAIN, 1)]
        )
        model.doc_string = "Qwen3.5 step graph: prompts, prefill chunks and decode tokens of a batch of sequences (docs/step_graph.md)"
        return model


def _layer_of(name: str) -> int:
    return int(name.split(".")[1]) if name.startswith("layers.") else -1


def build_step_graph(engine: EngineDir):
    """The step graph of ``engine`` as an onnx.ModelProto (external data into its weights file)."""
    return StepGraph(engine).build()


def write_step_graph(engine: EngineDir, path: Path) -> dict:
    """Write ``model.onnx`` of ``engine`` to ``path`` (in the engine directory: the external data
    locations are relative to it) and run onnx's full checker on it. Returns what the manifest
    records: opset, node counts per op type, inputs and outputs."""
    onnx = _onnx()
    model = build_step_graph(engine)
    path = Path(path)
    path.write_bytes(model.SerializeToString())
    onnx.checker.check_model(str(path), full_check=True)
    counts: dict[str, int] = {}
    for node in model.graph.node:
        key = f"{node.domain}::{node.op_type}" if node.domain else node.op_type
        counts[key] = counts.get(key, 0) + 1
    return {
        "opset": OPSET,
        "plugin_domain": C.DOMAIN,
        "nodes": dict(sorted(counts.items())),
        "inputs": [v.name for v in model.graph.input],
        "outputs": [v.name for v in model.graph.output],
    }
