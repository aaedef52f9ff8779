"""A CPU run of the step graph (``model.onnx``): the graph's nodes in order, standard ONNX ops as
the torch functions the CPU model uses, plugin nodes bound to the C++ references through the op
registry, the aliased pools updated in place.

Why not onnxruntime: the graph is bf16 end to end (what a strongly typed TensorRT network builds),
and onnxruntime's CPU provider has no bf16 kernels for most of its ops (MatMul, Mul, ReduceMean,
Exp, ...); onnx's ReferenceEvaluator computes bf16 through float32 numpy with other rounding. Running
each node with torch keeps the CPU model's cast points, so a graph run gives the CPU model's
tokens, and anything the graph gets wrong (wiring, attributes, shapes, dtypes, aliasing) shows.
Only the op types the exporter emits are implemented; another one is refused by name. NVFP4 nodes
whose ``scale_layout`` is "w4a16_fragments" (sm_90 / sm_120 engines) get their weights in ModelOpt's
order, what the C++ reference reads: converted once per weight initialiser and kept.

``OnnxModel`` has the CPU model's ``new_cache`` / ``forward`` interface, so ``greedy_generate``,
the serving ``CpuExecutor`` and the tests drive it unchanged.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from ..cache import StateCache
from ..engine import EngineDir
from ..engine.targets import ROW_MAJOR, W4A16_FRAGMENTS
from ..errors import UserInputError
from ..ops import moe_reference
from ..ops.numerics import Numerics
from ..ops.operands import MoeExperts, Nvfp4Weight, SharedExpert
from ..ops.registry import OpSet
from . import contracts as C
from .step_graph import updated
from .step_inputs import step_feeds

_TORCH_DTYPES = {1: torch.float32, 3: torch.int8, 6: torch.int32, 7: torch.int64, 9: torch.bool, 16: torch.bfloat16}
_NP_STORAGE = {torch.float32: np.float32, torch.int8: np.int8, torch.int32: np.int32, torch.int64: np.int64,
               torch.bfloat16: np.int16, torch.bool: np.bool_}


def _load_initializer(t, base: Path) -> torch.Tensor:
    """An initialiser as a tensor; external data is memory-mapped (copy on write: never modified)."""
    import onnx
    from onnx import numpy_helper

    dtype = _TORCH_DTYPES.get(t.data_type)
    if dtype is None:
        raise UserInputError(f"initializer {t.name}: ONNX dtype {t.data_type} is not used by the step graph")
    shape = tuple(t.dims)
    if t.data_location != onnx.TensorProto.EXTERNAL:
        arr = numpy_helper.to_array(t).copy()
        return torch.from_numpy(arr) if dtype != torch.bfloat16 else torch.from_numpy(arr.astype(np.float32)).to(torch.bfloat16)
    ext = {e.key: e.value for e in t.external_data}
    count = int(np.prod(shape, dtype=np.int64))
    mm = np.memmap(base / ext["location"], dtype=_NP_STORAGE[dtype], mode="c", offset=int(ext.get("offset", 0)), shape=(max(count, 1),))
    out = torch.from_numpy(mm[:count].reshape(shape))
    return out.view(torch.bfloat16) if dtype == torch.bfloat16 else out


def _attrs(node) -> dict:
    from onnx import helper

    values = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    return {k: v.decode() if isinstance(v, bytes) else v for k, v in values.items()}


class OnnxGraphRunner:
    """Runs a step graph on the CPU (see the module docstring)."""

    def __init__(self, path: str | Path, numerics: Numerics = Numerics(), gdn_backend: str = "reference",
                 attention_backend: str = "reference"):
        import onnx

        path = Path(path)
        if not path.is_file():
            raise UserInputError(f"{path}: no step graph; rebuild the engine (build_engine.py build writes it)")
        model = onnx.load(str(path), load_external_data=False)
        self.nodes = list(model.graph.node)
        self.inputs = [v.name for v in model.graph.input]
        self.outputs = [v.name for v in model.graph.output]
        self.constants = {t.name: _load_initializer(t, path.parent) for t in model.graph.initializer}
        self.nx = numerics
        self.ops = OpSet(gdn_backend, "reference", numerics, attention_backend)
        for node in self.nodes:
            if (node.domain, node.op_type) not in _HANDLERS:
                raise UserInputError(f"{path}: node {node.name}: op {node.domain or 'ai.onnx'}::{node.op_type} is not supported by the CPU run")
        self._attrs = {node.name: _attrs(node) for node in self.nodes}
        self._modelopt: dict[tuple[str, str], tuple[torch.Tensor, torch.Tensor]] = {}

    def modelopt_order(self, node, a: list, at: dict, pairs: list[tuple[int, int]]) -> tuple[list, str]:
        """The inputs ``a`` of an NVFP4 node with the (codes, scales) inputs at ``pairs`` in
        ModelOpt's order, and the scale layout the reference then reads. Only "w4a16_fragments"
        needs converting; a conversion of initialisers is cached by their names."""
        layout = at["scale_layout"]
        if layout != W4A16_FRAGMENTS:
            return a, layout
        from ..w4a16_fragments import unpack_w4a16_fragments

        a = list(a)
        for ci, si in pairs:
            key = (node.input[ci], node.input[si])
            hit = self._modelopt.get(key)
            if hit is None:
                codes, scales = unpack_w4a16_fragments(a[ci].view(torch.uint8), a[si].view(torch.uint8), key[0])
                hit = (torch.from_numpy(codes), torch.from_numpy(scales))
                if key[0] in self.constants and key[1] in self.constants:
                    self._modelopt[key] = hit
            a[ci], a[si] = hit
        return a, ROW_MAJOR

    def run(self, feeds: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        missing = [n for n in self.inputs if n not in feeds]
        if missing:
            raise ValueError(f"step graph inputs missing: {', '.join(missing)}")
        env = dict(self.constants)
        env.update(feeds)
        for node in self.nodes:
            args = [env[i] if i else None for i in node.input]
            outs = _HANDLERS[(node.domain, node.op_type)](self, node, args, self._attrs[node.name])
            env.update(zip(node.output, outs))
        return {name: env[name] for name in self.outputs}


# ---- standard ops: the torch functions of the CPU model --------------------------------------


def _gemm(r: OnnxGraphRunner, node, a, at):
    if at.get("transB", 0) != 1 or at.get("transA", 0) or len(a) != 2:
        raise UserInputError(f"node {node.name}: Gemm is run only as x @ W^T without bias")
    return [r.nx.linear(a[0], a[1])]


def _elementwise(fn: Callable, padded: bool = False):
    def run(r: OnnxGraphRunner, node, a, at):
        if padded:  # transcendental ops: the model's batch-invariant row padding
            return [r.nx.elementwise(fn, a[0])]
        return [fn(*a)]

    return run


_STANDARD: dict[str, Callable] = {
    "Gather": lambda r, n, a, at: [torch.index_select(a[0], at.get("axis", 0), a[1].long())],
    "Cast": lambda r, n, a, at: [a[0].to(_TORCH_DTYPES[at["to"]])],
    "Add": _elementwise(torch.add),
    "Mul": _elementwise(torch.mul),
    "Div": _elementwise(torch.div),
    "Neg": _elementwise(torch.neg),
    "Sqrt": _elementwise(torch.sqrt),
    "Reciprocal": _elementwise(torch.reciprocal),
    "Exp": _elementwise(torch.exp, padded=True),
    "Sigmoid": _elementwise(torch.sigmoid, padded=True),
    "ReduceMean": lambda r, n, a, at: [a[0].mean(dim=a[1].tolist(), keepdim=bool(at.get("keepdims", 1)))],
    "Reshape": lambda r, n, a, at: [a[0].reshape(a[1].tolist())],
    "Split": lambda r, n, a, at: list(torch.split(a[0], a[1].tolist(), dim=at.get("axis", 0))),
    "Gemm": _gemm,
}

# ---- plugin nodes: the C++ references ----------------------------------------------------------


def _conv(r: OnnxGraphRunner, node, a, at):
    x, w, pool, slots, cu, init = a
    y = r.ops.causal_conv1d(x, w, pool, slots.tolist(), cu.tolist(), init.tolist())
    return [y, pool]


def _gdn(r: OnnxGraphRunner, node, a, at):
    q, k, v, ga, gb, A_log, dt_bias, pool, slots, cu, init = a
    if at.get("use_qk_l2norm", 1) != 1 or at.get("scale", q.shape[-1] ** -0.5) != np.float32(q.shape[-1] ** -0.5):
        raise UserInputError(f"node {node.name}: the CPU run takes the model's GatedDeltaNet (L2 norm on, scale dk ** -0.5)")
    o = r.ops.gated_delta_net(q, k, v, ga, gb, A_log, dt_bias, pool, slots.tolist(), cu.tolist(), init.tolist())
    return [o, pool]


def _nvfp4(w: torch.Tensor, s: torch.Tensor, s2: torch.Tensor, inp: torch.Tensor | None) -> Nvfp4Weight:
    return Nvfp4Weight(w.view(torch.uint8), s.view(torch.uint8), s2, inp)


def _linear(r: OnnxGraphRunner, node, a, at):
    a, layout = r.modelopt_order(node, a, at, [(1, 2)])
    x, w, s, s2 = a[:4]
    inp = a[4] if len(a) > 4 else None
    y = moe_reference.nvfp4_linear(x.contiguous(), _nvfp4(w, s, s2, inp), scale_layout=layout,
                                   activation=at.get("activation", "w4a16"))
    return [y]


def _moe(r: OnnxGraphRunner, node, a, at):
    w4a4 = at.get("activation", "w4a16") == "w4a4"
    per, base = (4, 10) if w4a4 else (3, 8)  # inputs per shared linear; where the shared ones start
    pairs = [(2, 3), (5, 6)] + ([(base + i * per, base + i * per + 1) for i in range(3)] if at.get("shared_expert", 0) else [])
    a, layout = r.modelopt_order(node, a, at, pairs)
    hidden, logits, guw, gus, gus2, dnw, dns, dns2 = a[:8]
    rest = a[8:]
    gui, dni = (rest[0], rest[1]) if w4a4 else (None, None)
    rest = rest[2:] if w4a4 else rest
    experts = MoeExperts(_nvfp4(guw, gus, gus2, gui), _nvfp4(dnw, dns, dns2, dni))
    shared = None
    if at.get("shared_expert", 0):
        lins = [_nvfp4(*rest[i * per : i * per + 3], rest[i * per + 3] if w4a4 else None) for i in range(3)]
        shared = SharedExpert(*lins, rest[3 * per])
    out = moe_reference.nvfp4_moe(hidden.contiguous(), logits, at["top_k"], experts, shared, scale_layout=layout,
                                  activation=at.get("activation", "w4a16"))
    return [out]


def _attention(r: OnnxGraphRunner, node, a, at):
    qg, k, v, qn, kn, pool, tables, cu, ctx = a
    out = r.ops.gated_attention(qg, k, v, qn, kn, pool, tables, cu, ctx, **at)
    return [out, pool]


_HANDLERS: dict[tuple[str, str], Callable] = {("", op): fn for op, fn in _STANDARD.items()}
_HANDLERS.update({
    (C.DOMAIN, C.CAUSAL_CONV1D.op_type): _conv,
    (C.DOMAIN, C.GATED_DELTA_NET.op_type): _gdn,
    (C.DOMAIN, C.NVFP4_LINEAR.op_type): _linear,
    (C.DOMAIN, C.NVFP4_MOE.op_type): _moe,
    (C.DOMAIN, C.GATED_ATTENTION.op_type): _attention,
})


class OnnxModel:
    """The engine's step graph with the CPU model's interface: ``new_cache`` and ``forward``."""

    def __init__(self, engine_dir: str | Path, batch_invariant: bool = False):
        self.engine = EngineDir(engine_dir)
        self.cfg = self.engine.config
        self.runner = OnnxGraphRunner(self.engine.onnx_path, Numerics(batch_invariant))

    def new_cache(self, num_slots: int) -> StateCache:
        return StateCache(self.cfg, num_slots)

    @torch.no_grad()
    def forward(self, batch: Sequence[tuple[int, Sequence[int]]], cache: StateCache, all_logits: bool = False) -> list[torch.Tensor]:
        """Last-token logits [V] of each sequence of ``batch`` (slot, new token ids); the graph
        returns only those, so ``all_logits`` is refused."""
        if all_logits:
            raise ValueError("the step graph returns the last token's logits only (all_logits=False)")
        feeds = step_feeds(batch, cache, self.cfg.vocab_size)
        out = self.runner.run(feeds)
        for name, pool in feeds.items():  # each aliased output is its pool, the cache's own tensor
            result = out.get(updated(name))
            if result is not None and result is not pool:
                pool.copy_(result)
        for slot, toks in batch:
            cache.lengths[slot] += len(toks)
        return list(out["logits"])
