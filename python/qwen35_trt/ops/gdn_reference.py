"""Gated DeltaNet ops on the C++ CPU reference (``qwen35_trt._C``), torch tensors in and out.

Two layers:

* the contract ops of docs/ops.md, which update slot pools in place:
  ``causal_conv1d(x, weight, state_pool, slots, cu_seqlens, has_initial_state)`` and
  ``gated_delta_net(q, k, v, a, b, A_log, dt_bias, state_pool, slots, cu_seqlens, has_initial_state)``;
  without ``cu_seqlens`` / ``has_initial_state`` they are the decode form (one token per sequence,
  state always read);
* drop-in twins of the spec functions (``ops/conv1d.py``, ``ops/gated_delta_rule.py``) with the same
  signatures and return values, for tests and comparisons.

Activations are float32 or bfloat16 (one dtype per call); GDN state pools are float32, conv state
pools have the activations' dtype. Everything must live on the CPU. The C++ code computes the same
math as the spec in fp32 but in another order, so bf16 outputs can differ from the spec's in the
last bit. Bad arguments raise ValueError naming the argument.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

try:
    from .. import _C
except ImportError:  # the extension is not built: available() says so
    _C = None

CHUNK_SIZE = 64


def available() -> bool:
    """True when the compiled extension carries the GDN reference ops."""
    return _C is not None and hasattr(_C, "gdn_gated_delta_net")


def _require() -> None:
    if not available():
        raise RuntimeError("qwen35_trt._C with the Gated DeltaNet reference is not built; reinstall the package")


_DTYPES = (torch.float32, torch.bfloat16)


def _to_np(t: torch.Tensor, name: str, inplace: bool = False) -> np.ndarray:
    """A numpy view of a CPU tensor (bf16 as uint16 bits). In-place arguments must already be
    contiguous so that the view shares their memory."""
    if t.device.type != "cpu":
        raise ValueError(f"{name}: expected a CPU tensor, got device {t.device}")
    if not t.is_contiguous():
        if inplace:
            raise ValueError(f"{name}: must be contiguous (it is updated in place)")
        t = t.contiguous()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(np.uint16)
    return t.numpy()


def _from_np(a: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    if dtype == torch.bfloat16:
        return torch.from_numpy(a.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(a)


def _activation_dtype(name: str, t: torch.Tensor) -> torch.dtype:
    if t.dtype not in _DTYPES:
        raise ValueError(f"{name}: expected dtype float32 or bfloat16, got {t.dtype}")
    return t.dtype


def _same_dtype(dtype: torch.dtype, **tensors: torch.Tensor) -> None:
    for name, t in tensors.items():
        if t.dtype != dtype:
            raise ValueError(f"{name}: expected dtype {dtype} (the activations' dtype), got {t.dtype}")


def _int32(name: str, x) -> np.ndarray:
    t = torch.as_tensor(x)
    if t.dtype.is_floating_point or t.dtype == torch.bool or t.dim() != 1:
        raise ValueError(f"{name}: expected a 1-D integer sequence, got {t.dtype} of shape {tuple(t.shape)}")
    return np.ascontiguousarray(t.cpu().numpy().astype(np.int32))


def _flags(name: str, x) -> np.ndarray:
    t = torch.as_tensor(x)
    if t.dim() != 1:
        raise ValueError(f"{name}: expected a 1-D sequence of flags, got shape {tuple(t.shape)}")
    return np.ascontiguousarray(t.cpu().numpy().astype(np.uint8) != 0).astype(np.uint8)


def _seq_args(slots, cu_seqlens, has_initial_state) -> tuple:
    if (cu_seqlens is None) != (has_initial_state is None):
        raise ValueError("has_initial_state: give it together with cu_seqlens (prefill), or neither (decode)")
    slots_np = _int32("slots", slots)
    if cu_seqlens is None:
        return slots_np, None, None
    return slots_np, _int32("cu_seqlens", cu_seqlens), _flags("has_initial_state", has_initial_state)


# --------------------------------------------------------------------------------------------
# Contract ops (slot pools, in place)


def causal_conv1d(
    x: torch.Tensor,
    weight: torch.Tensor,
    state_pool: torch.Tensor,
    slots,
    cu_seqlens=None,
    has_initial_state=None,
) -> torch.Tensor:
    """CausalConv1d: ``y = silu(causal depthwise conv(x))`` per sequence, histories from the slots.

    x: [T, C]; weight: [C, W]; state_pool: [num_slots, C, W-1] (x's dtype, contiguous, updated in
    place: each sequence's slot ends holding its last W-1 inputs); slots: [B] int.
    Prefill: cu_seqlens [B + 1] and has_initial_state [B] (False: start from zeros).
    Decode: neither; T == B, one token per sequence. Returns y [T, C] in x's dtype.
    """
    _require()
    dtype = _activation_dtype("x", x)
    _same_dtype(dtype, weight=weight, state_pool=state_pool)
    s, cu, init = _seq_args(slots, cu_seqlens, has_initial_state)
    y = _C.gdn_causal_conv1d(_to_np(x, "x"), _to_np(weight, "weight"), _to_np(state_pool, "state_pool", inplace=True), s, cu, init)
    return _from_np(y, dtype)


def gated_delta_net(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    A_log: torch.Tensor,
    dt_bias: torch.Tensor,
    state_pool: torch.Tensor,
    slots,
    cu_seqlens=None,
    has_initial_state=None,
    scale: float | None = None,
    use_qk_l2norm: bool = True,
    algorithm: str = "auto",
) -> torch.Tensor:
    """GatedDeltaNet with fused gating: ``g = -exp(A_log) softplus(a + dt_bias)``, ``beta = sigmoid(b)``,
    q/k L2-normalised, q scaled (default dk^-0.5), value head j on key head ``j // (Hv / Hk)``.

    q, k: [T, Hk, dk]; v: [T, Hv, dv]; a, b: [T, Hv] (all one dtype, float32 or bfloat16);
    A_log, dt_bias: [Hv] (any float dtype; used in fp32); state_pool: [num_slots, Hv, dk, dv]
    float32, contiguous, updated in place; slots: [B] int. Prefill: cu_seqlens [B + 1] and
    has_initial_state [B]; decode: neither (T == B). ``algorithm``: 'auto' (chunked prefill,
    recurrent decode), 'chunked' or 'recurrent'. Returns o [T, Hv, dv] in v's dtype.
    """
    _require()
    dtype = _activation_dtype("v", v)
    _same_dtype(dtype, q=q, k=k, a=a, b=b)
    if state_pool.dtype != torch.float32:
        raise ValueError(f"state_pool: expected dtype float32, got {state_pool.dtype}")
    s, cu, init = _seq_args(slots, cu_seqlens, has_initial_state)
    o = _C.gdn_gated_delta_net(
        _to_np(q, "q"), _to_np(k, "k"), _to_np(v, "v"), _to_np(state_pool, "state_pool", inplace=True), s, cu, init,
        a=_to_np(a, "a"), b=_to_np(b, "b"),
        A_log=_to_np(A_log.detach().float(), "A_log"), dt_bias=_to_np(dt_bias.detach().float(), "dt_bias"),
        scale=scale, use_qk_l2norm=use_qk_l2norm, algorithm=algorithm,
    )
    return _from_np(o, dtype)


# --------------------------------------------------------------------------------------------
# Twins of the spec functions


def causal_conv1d_prefill(
    x: torch.Tensor,
    weight: torch.Tensor,
    cu_seqlens: Sequence[int] | torch.Tensor,
    initial_states: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """As ``ops.conv1d.causal_conv1d_prefill``: returns (y [T, C], final_states [B, C, W-1])."""
    cu = _int32("cu_seqlens", cu_seqlens)
    B = len(cu) - 1
    C, W = weight.shape
    if initial_states is None:
        pool = torch.zeros(B, C, W - 1, dtype=x.dtype)
    else:
        pool = initial_states.to(x.dtype).contiguous().clone()
    y = causal_conv1d(x, weight.to(x.dtype), pool, np.arange(B, dtype=np.int32), cu, np.full(B, initial_states is not None))
    return y, pool


def causal_conv1d_decode(x: torch.Tensor, weight: torch.Tensor, states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """As ``ops.conv1d.causal_conv1d_decode``: returns (y [B, C], new_states [B, C, W-1])."""
    pool = states.to(x.dtype).contiguous().clone()
    y = causal_conv1d(x, weight.to(x.dtype), pool, np.arange(x.shape[0], dtype=np.int32))
    return y, pool


def _gdr(q, k, v, g, beta, cu_seqlens, initial_states, scale, use_qk_l2norm, algorithm):
    _require()
    dtype = _activation_dtype("v", v)
    _same_dtype(dtype, q=q, k=k)
    cu = _int32("cu_seqlens", cu_seqlens)
    B = len(cu) - 1
    hv, dk, dv = v.shape[1], k.shape[-1], v.shape[-1]
    if initial_states is None:
        pool = torch.zeros(B, hv, dk, dv, dtype=torch.float32)
    else:
        pool = initial_states.float().contiguous().clone()
    o = _C.gdn_gated_delta_net(
        _to_np(q, "q"), _to_np(k, "k"), _to_np(v, "v"), _to_np(pool, "state_pool", inplace=True),
        np.arange(B, dtype=np.int32), cu, np.full(B, initial_states is not None, dtype=np.uint8),
        g=_to_np(g.float(), "g"), beta=_to_np(beta.float(), "beta"),
        scale=scale, use_qk_l2norm=use_qk_l2norm, algorithm=algorithm,
    )
    return _from_np(o, dtype), pool


def recurrent_gated_delta_rule(q, k, v, g, beta, cu_seqlens, initial_states=None, scale=None, use_qk_l2norm=True):
    """As ``ops.gated_delta_rule.recurrent_gated_delta_rule``: returns (o [T, Hv, dv], finals [B, Hv, dk, dv])."""
    return _gdr(q, k, v, g, beta, cu_seqlens, initial_states, scale, use_qk_l2norm, "recurrent")


def chunk_gated_delta_rule(q, k, v, g, beta, cu_seqlens, initial_states=None, scale=None, use_qk_l2norm=True, chunk_size=CHUNK_SIZE):
    """As ``ops.gated_delta_rule.chunk_gated_delta_rule`` (chunk size fixed at 64)."""
    if chunk_size != CHUNK_SIZE:
        raise ValueError(f"chunk_size: the C++ reference uses {CHUNK_SIZE}, got {chunk_size}")
    return _gdr(q, k, v, g, beta, cu_seqlens, initial_states, scale, use_qk_l2norm, "chunked")
