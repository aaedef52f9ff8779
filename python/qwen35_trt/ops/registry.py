"""The contract ops (docs/ops.md) and their backends: one table, one place that binds them.

Every backend of an op implements the same contract signature:

- ``causal_conv1d(x, weight, state_pool, slots, cu_seqlens=None, has_initial_state=None)``
- ``gated_delta_net(q, k, v, a, b, A_log, dt_bias, state_pool, slots, cu_seqlens=None, has_initial_state=None)``
- ``nvfp4_linear(x, w: Nvfp4Weight)``
- ``nvfp4_moe(hidden, router_logits, top_k, experts: MoeExperts, shared: SharedExpert | None = None)``
  (the NVFP4 operands in the OpSet's ``nvfp4_layout``: ModelOpt's order and row-major scales by
  default; the reference and CUDA backends also take an engine's stored layouts)
- ``gated_attention(qg, k, v, q_norm_weight, k_norm_weight, kv_pool, block_tables, cu_seqlens, context_lens, *,
  num_heads, num_kv_heads, head_dim, rotary_dim, rope_theta, eps, scale=None)``

Backends: ``spec`` (torch, readable, transformers' cast points), ``reference`` (the C++ CPU
references through ``_C``) and ``cuda`` (the CUDA kernels through ``_C``); the ONNX and TensorRT
ones plug in here next. ``OpSet`` binds one backend per op family for a model and is the only thing
the model calls. It also keeps a sequence's arithmetic independent of its batch: it runs one-token
continuations and everything else as separate calls, since a backend picks its kernel form
(recurrent decode or chunked prefill) per call, and it gives the spec ops the model's numerics
mode (``numerics.Numerics``).
"""

from __future__ import annotations

import importlib
import inspect
from functools import partial
from typing import Callable, Sequence

import torch

from ..engine.targets import ROW_MAJOR
from .numerics import PLAIN, Numerics

BACKENDS = ("spec", "reference", "cuda")
# op -> backend -> module (in qwen35_trt.ops) holding the implementation of that name
TABLE: dict[str, dict[str, str]] = {
    "causal_conv1d": {"spec": "conv1d", "reference": "gdn_reference", "cuda": "gdn_cuda"},
    "gated_delta_net": {"spec": "gated_delta_rule", "reference": "gdn_reference", "cuda": "gdn_cuda"},
    "nvfp4_linear": {"spec": "nvfp4_linear", "reference": "moe_reference", "cuda": "moe_cuda"},
    "nvfp4_moe": {"spec": "moe", "reference": "moe_reference", "cuda": "moe_cuda"},
    "gated_attention": {"spec": "attention", "reference": "attention_reference", "cuda": "attention_cuda"},
}
# the op families a model chooses a backend for, by the keyword it is chosen with
FAMILIES = {
    "gdn_backend": ("causal_conv1d", "gated_delta_net"),
    "moe_backend": ("nvfp4_linear", "nvfp4_moe"),
    "attention_backend": ("gated_attention",),
}


def _module(op: str, backend: str):
    try:
        name = TABLE[op][backend]
    except KeyError:
        raise ValueError(f"no backend {backend!r} for op {op!r} (have {', '.join(TABLE.get(op, {}))})") from None
    return importlib.import_module(f"{__package__}.{name}")


def available(op: str, backend: str) -> bool:
    """Whether ``backend`` can run ``op`` here (the spec always can; the others need ``_C``, and
    ``cuda`` a device)."""
    if backend == "spec":
        return True
    return bool(_module(op, backend).available())


def implementation(op: str, backend: str) -> Callable:
    return getattr(_module(op, backend), op)


def resolve(kw: str, backend: str | None, allowed: Sequence[str] = ("reference", "spec")) -> str:
    """The backend for the op family chosen with keyword ``kw``: ``None`` picks "reference" (the
    C++ ops) when ``_C`` has them, else "spec". Errors name ``kw``."""
    ops = FAMILIES[kw]
    if backend is None:
        return "reference" if all(available(op, "reference") for op in ops) else "spec"
    if backend not in allowed:
        raise ValueError(f"{kw}: expected one of {', '.join(allowed)}, got {backend!r}")
    missing = [op for op in ops if not available(op, backend)]
    if missing:
        raise ValueError(f"{kw}: '{backend}' cannot run {', '.join(missing)} here (qwen35_trt._C without those ops, or no device); rebuild the package or use 'spec'")
    return backend


def _bind(op: str, backend: str, numerics: Numerics, scale_layout: str | None = None) -> Callable:
    fn = implementation(op, backend)
    params = inspect.signature(fn).parameters
    if "numerics" in params:
        fn = partial(fn, numerics=numerics)
    if scale_layout is not None and scale_layout != ROW_MAJOR:
        if "scale_layout" not in params:
            raise ValueError(f"{op}: backend {backend!r} reads NVFP4 weights in {ROW_MAJOR!r} only, not {scale_layout!r}")
        fn = partial(fn, scale_layout=scale_layout)
    return fn


class OpSet:
    """The contract ops of one model: a backend per family and a numerics mode."""

    def __init__(self, gdn_backend: str, moe_backend: str, numerics: Numerics = PLAIN, attention_backend: str = "spec",
                 nvfp4_layout: str = ROW_MAJOR):
        self.gdn_backend, self.moe_backend, self.numerics = gdn_backend, moe_backend, numerics
        self.nvfp4_layout = nvfp4_layout  # how the NVFP4 operands handed to nvfp4_linear / nvfp4_moe are stored
        self.attention_backend = attention_backend
        # One call for the whole batch: every GatedAttention backend computes a token from its own
        # sequence only, whatever the batch holds.
        self.gated_attention = _bind("gated_attention", attention_backend, numerics)
        self._conv = _bind("causal_conv1d", gdn_backend, numerics)
        self._gdn = _bind("gated_delta_net", gdn_backend, numerics)
        self.nvfp4_linear = _bind("nvfp4_linear", moe_backend, numerics, nvfp4_layout)
        self.nvfp4_moe = _bind("nvfp4_moe", moe_backend, numerics, nvfp4_layout)

    def causal_conv1d(self, x, weight, state_pool, slots: Sequence[int], cu_seqlens: Sequence[int], has_initial_state: Sequence[bool]) -> torch.Tensor:
        """CausalConv1d over a batch of sequences (see the module docstring for the form split)."""
        return self._by_form(lambda rows, *seq: self._conv(x[rows], weight, state_pool, *seq), slots, cu_seqlens, has_initial_state, x.shape[0])

    def gated_delta_net(self, q, k, v, a, b, A_log, dt_bias, state_pool, slots: Sequence[int], cu_seqlens: Sequence[int], has_initial_state: Sequence[bool]) -> torch.Tensor:
        """GatedDeltaNet over a batch of sequences; ``state_pool`` updated in place."""
        return self._by_form(lambda rows, *seq: self._gdn(q[rows], k[rows], v[rows], a[rows], b[rows], A_log, dt_bias, state_pool, *seq),
                             slots, cu_seqlens, has_initial_state, v.shape[0])

    @staticmethod
    def _by_form(call, slots, cu, init, tokens: int) -> torch.Tensor:
        """Sequences continuing by one token run in one decode-form call, the rest in one varlen
        call; outputs are put back in token order."""
        n = len(slots)
        one_token = [bool(init[i]) and cu[i + 1] - cu[i] == 1 for i in range(n)]
        decode = [i for i in range(n) if one_token[i]]
        rest = [i for i in range(n) if not one_token[i]]
        parts = []
        if decode:
            rows = torch.tensor([cu[i] for i in decode])
            parts.append((rows, call(rows, torch.tensor([slots[i] for i in decode], dtype=torch.int32))))
        if rest:
            rows = torch.cat([torch.arange(cu[i], cu[i + 1]) for i in rest])
            lens = torch.tensor([cu[i + 1] - cu[i] for i in rest])
            cu_rest = torch.cat([torch.zeros(1, dtype=torch.int32), torch.cumsum(lens, 0).to(torch.int32)])
            parts.append((rows, call(rows, torch.tensor([slots[i] for i in rest], dtype=torch.int32), cu_rest, torch.tensor([bool(init[i]) for i in rest]))))
        if len(parts) == 1:  # all one form: the rows are every token, in order
            return parts[0][1]
        out = parts[0][1].new_empty((tokens, *parts[0][1].shape[1:]))
        for rows, y in parts:
            out[rows] = y
        return out
