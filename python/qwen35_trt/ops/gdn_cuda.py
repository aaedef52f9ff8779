"""Gated DeltaNet ops on the CUDA kernels (``qwen35_trt._C``), torch CUDA tensors in and out.

Same contract ops and semantics as ``ops/gdn_reference.py`` (docs/ops.md), on the device and in
bf16: ``causal_conv1d`` and ``gated_delta_net`` update their slot pools in place and run on the
current torch stream. ``gated_delta_net`` picks the chunked prefill kernel for prefill (cu_seqlens
given, head_k_dim 64 or 128) and the recurrent kernel otherwise (decode, or head dims the chunked
kernel does not take).

Importing this module never needs a GPU; ``available()`` says whether the kernels can run.
``validate=True`` (the default) checks slots and cu_seqlens on the host first (a device-to-host
copy, so a synchronisation); benchmarks pass False. The kernels still guard the device values.
"""

from __future__ import annotations

import torch

from .cuda_support import cuda_kernels_available

try:
    from .. import _C
except ImportError:
    _C = None


def available() -> bool:
    """True when the extension has the CUDA kernels and a CUDA device is usable from torch."""
    return cuda_kernels_available("gdn_cuda_recurrent")


def _require() -> None:
    if not available():
        raise RuntimeError("the Gated DeltaNet CUDA kernels need a CUDA build of qwen35_trt._C and a CUDA device")


def _check(name: str, t: torch.Tensor, dtype: torch.dtype, dim: int | None = None) -> None:
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if t.device.type != "cuda":
        raise ValueError(f"{name}: expected a CUDA tensor, got device {t.device}")
    if t.dtype != dtype:
        raise ValueError(f"{name}: expected dtype {dtype}, got {t.dtype}")
    if dim is not None and t.dim() != dim:
        raise ValueError(f"{name}: expected {dim} dimensions, got shape {tuple(t.shape)}")


def _rows(name: str, t: torch.Tensor) -> int:
    """Token stride of a [T, ...] tensor whose rows are dense; returns it in elements."""
    inner = t[0] if t.shape[0] > 0 else t.new_empty(t.shape[1:])
    if not inner.is_contiguous():
        raise ValueError(f"{name}: each token's row must be contiguous (got strides {t.stride()})")
    return t.stride(0)


def _int32_dev(name: str, x, device) -> torch.Tensor:
    t = torch.as_tensor(x, device=device)
    if t.dtype.is_floating_point or t.dtype == torch.bool or t.dim() != 1:
        raise ValueError(f"{name}: expected a 1-D integer sequence, got {t.dtype} of shape {tuple(t.shape)}")
    return t.to(torch.int32).contiguous()


def _sequences(slots, cu_seqlens, has_initial_state, tokens: int, num_slots: int, device, validate: bool):
    if (cu_seqlens is None) != (has_initial_state is None):
        raise ValueError("has_initial_state: give it together with cu_seqlens (prefill), or neither (decode)")
    s = _int32_dev("slots", slots, device)
    B = s.shape[0]
    if B == 0:
        raise ValueError("slots: at least one sequence is required")
    cu = init = None
    max_len = 1
    if cu_seqlens is not None:
        cu = _int32_dev("cu_seqlens", cu_seqlens, device)
        init = torch.as_tensor(has_initial_state, device=device).reshape(-1).ne(0).to(torch.uint8).contiguous()
        if cu.shape[0] != B + 1:
            raise ValueError(f"cu_seqlens: expected {B + 1} entries (len(slots) + 1), got {cu.shape[0]}")
        if init.shape[0] != B:
            raise ValueError(f"has_initial_state: expected {B} entries, got {init.shape[0]}")
    elif tokens != B:
        raise ValueError(f"slots: decode (no cu_seqlens) takes one token per sequence: {tokens} tokens but {B} slots")
    if validate:
        hs = s.cpu().tolist()
        for i, slot in enumerate(hs):
            if not 0 <= slot < num_slots:
                raise ValueError(f"slots: slot {slot} of sequence {i} is out of range [0, {num_slots})")
        if len(set(hs)) != len(hs):
            raise ValueError("slots: a slot is used by two sequences")
        if cu is not None:
            hc = cu.cpu().tolist()
            if hc[0] != 0:
                raise ValueError(f"cu_seqlens: must start at 0, got {hc[0]}")
            for i in range(B):
                if hc[i + 1] <= hc[i]:
                    raise ValueError(f"cu_seqlens: sequence {i} has length {hc[i + 1] - hc[i]} (every sequence needs at least one token)")
            if hc[-1] != tokens:
                raise ValueError(f"cu_seqlens: last entry {hc[-1]} must equal the number of tokens {tokens}")
            max_len = max(hc[i + 1] - hc[i] for i in range(B))
    elif cu is not None:
        max_len = 0  # unknown: the kernels size their grids from the token count
    return s, cu, init, B, max_len


def _ptr(t: torch.Tensor | None) -> int:
    return 0 if t is None else t.data_ptr()


def _stream(device) -> int:
    return torch.cuda.current_stream(device).cuda_stream


def causal_conv1d(x, weight, state_pool, slots, cu_seqlens=None, has_initial_state=None, validate: bool = True):
    """CausalConv1d on the GPU: x [T, C] bf16 (rows may be strided), weight [C, W] bf16,
    state_pool [num_slots, C, W-1] bf16 contiguous (in place). Returns y [T, C] bf16."""
    _require()
    _check("x", x, torch.bfloat16, 2)
    _check("weight", weight, torch.bfloat16, 2)
    _check("state_pool", state_pool, torch.bfloat16, 3)
    T, C = x.shape
    W = weight.shape[1]
    if weight.shape[0] != C or state_pool.shape[1:] != (C, W - 1):
        raise ValueError(f"weight / state_pool: expected [{C}, W] and [num_slots, {C}, W-1], got {tuple(weight.shape)} and {tuple(state_pool.shape)}")
    if not state_pool.is_contiguous():
        raise ValueError("state_pool: must be contiguous (it is updated in place)")
    s, cu, init, B, max_len = _sequences(slots, cu_seqlens, has_initial_state, T, state_pool.shape[0], x.device, validate)
    y = torch.empty(T, C, dtype=torch.bfloat16, device=x.device)
    _C.gdn_cuda_causal_conv1d(
        x=_ptr(x), x_stride=_rows("x", x), weight=_ptr(weight.contiguous()), state_pool=_ptr(state_pool), y=_ptr(y),
        y_stride=C, channels=C, width=W, slots=_ptr(s), cu_seqlens=_ptr(cu), has_initial_state=_ptr(init), batch=B,
        tokens=T, num_slots=state_pool.shape[0], max_seqlen=max_len, stream=_stream(x.device),
    )
    return y


def workspace_bytes(batch: int, tokens: int, num_v_heads: int, head_k_dim: int, head_v_dim: int) -> int:
    """Bytes of workspace the chunked prefill needs."""
    _require()
    return _C.gdn_cuda_chunk_prefill_workspace_bytes(batch, tokens, num_v_heads, head_k_dim, head_v_dim)


def chunked_prefill_fits(head_k_dim: int, device, optin_bytes: int | None = None) -> tuple[bool, int, int]:
    """(fits, bytes needed, device limit): whether the chunked prefill runs for ``head_k_dim`` on
    ``device``. It needs 64 or 128 and gdn_cuda_chunk_prefill_shared_bytes per block; where the
    device offers less, 'auto' uses the recurrent kernel (the same function, slower)."""
    need = int(_C.gdn_cuda_chunk_prefill_shared_bytes(head_k_dim)) if head_k_dim in (64, 128) else 0
    if optin_bytes is None:
        device = torch.device(device)
        if device.type != "cuda":  # no device limit to compare with (argument checks on host tensors)
            return need > 0, need, need
        optin_bytes = torch.cuda.get_device_properties(device).shared_memory_per_block_optin
    return (need > 0 and need <= optin_bytes), need, int(optin_bytes)


def gated_delta_net(
    q, k, v, a, b, A_log, dt_bias, state_pool, slots, cu_seqlens=None, has_initial_state=None, scale=None,
    use_qk_l2norm: bool = True, algorithm: str = "auto", validate: bool = True, workspace: torch.Tensor | None = None,
):
    """GatedDeltaNet on the GPU (fused gating, q/k L2 norm and scale; see gdn_reference.gated_delta_net).

    q, k [T, Hk, dk], v [T, Hv, dv], a, b [T, Hv]: bf16, each token's row dense (column slices of
    the conv output are fine); A_log, dt_bias [Hv] (used as fp32); state_pool [num_slots, Hv, dk, dv]
    fp32 contiguous, in place. ``algorithm``: 'auto', 'chunked' (needs cu_seqlens, dk 64 or 128)
    or 'recurrent'. ``workspace``: optional uint8 CUDA tensor for the chunked kernel (allocated
    per call when None). Returns o [T, Hv, dv] bf16.
    """
    _require()
    for name, t, dim in (("q", q, 3), ("k", k, 3), ("v", v, 3), ("a", a, 2), ("b", b, 2)):
        _check(name, t, torch.bfloat16, dim)
    _check("state_pool", state_pool, torch.float32, 4)
    T, hk, dk = q.shape
    hv, dv = v.shape[1], v.shape[2]
    if k.shape != q.shape:
        raise ValueError(f"k: expected the shape of q {tuple(q.shape)}, got {tuple(k.shape)}")
    if v.shape[0] != T or a.shape != (T, hv) or b.shape != (T, hv):
        raise ValueError(f"v, a, b: expected [{T}, Hv, dv], [{T}, Hv], [{T}, Hv], got {tuple(v.shape)}, {tuple(a.shape)}, {tuple(b.shape)}")
    if hv % hk:
        raise ValueError(f"num_v_heads: must be a multiple of num_k_heads, got Hv={hv}, Hk={hk}")
    if state_pool.shape[1:] != (hv, dk, dv) or not state_pool.is_contiguous():
        raise ValueError(f"state_pool: expected a contiguous [num_slots, {hv}, {dk}, {dv}] tensor, got {tuple(state_pool.shape)}")
    if algorithm not in ("auto", "chunked", "recurrent"):
        raise ValueError(f"algorithm: expected 'auto', 'chunked' or 'recurrent', got {algorithm!r}")
    s, cu, init, B, max_len = _sequences(slots, cu_seqlens, has_initial_state, T, state_pool.shape[0], q.device, validate)
    fits, need, limit = chunked_prefill_fits(dk, q.device) if algorithm != "recurrent" and cu is not None else (False, 0, 0)
    chunked = algorithm == "chunked" or (algorithm == "auto" and cu is not None and fits)
    if chunked and cu is None:
        raise ValueError("cu_seqlens: required for the chunked algorithm")
    if chunked and not fits and need:
        raise ValueError(f"algorithm 'chunked': needs {need} bytes of shared memory per block for head_k_dim {dk}, "
                         f"this device allows {limit}; use 'recurrent' or 'auto'")
    o = torch.empty(T, hv, dv, dtype=torch.bfloat16, device=q.device)
    A_log32 = A_log.detach().to(device=q.device, dtype=torch.float32).contiguous()
    dt32 = dt_bias.detach().to(device=q.device, dtype=torch.float32).contiguous()
    kw = dict(
        q=_ptr(q), q_stride=_rows("q", q), k=_ptr(k), k_stride=_rows("k", k), v=_ptr(v), v_stride=_rows("v", v),
        a=_ptr(a), a_stride=_rows("a", a), b=_ptr(b), b_stride=_rows("b", b), A_log=_ptr(A_log32), dt_bias=_ptr(dt32),
        state_pool=_ptr(state_pool), o=_ptr(o), o_stride=hv * dv, num_k_heads=hk, num_v_heads=hv, head_k_dim=dk,
        head_v_dim=dv, scale=float(scale if scale is not None else dk**-0.5), use_qk_l2norm=bool(use_qk_l2norm),
        slots=_ptr(s), cu_seqlens=_ptr(cu), has_initial_state=_ptr(init), batch=B, tokens=T,
        num_slots=state_pool.shape[0], max_seqlen=max_len, stream=_stream(q.device),
    )
    if chunked:
        need = _C.gdn_cuda_chunk_prefill_workspace_bytes(B, T, hv, dk, dv)
        if workspace is None:
            workspace = torch.empty(need, dtype=torch.uint8, device=q.device)
        if workspace.numel() < need or workspace.data_ptr() % 256:
            raise ValueError(f"workspace: need {need} bytes, 256-byte aligned; got {workspace.numel()}")
        _C.gdn_cuda_chunk_prefill(workspace=workspace.data_ptr(), workspace_bytes=workspace.numel(), **kw)
    else:
        _C.gdn_cuda_recurrent(**kw)
    return o


def prefill_check(workspace: torch.Tensor) -> None:
    """Raise ValueError when the last chunked prefill on ``workspace`` found invalid cu_seqlens or
    slots on the device (synchronises the current stream)."""
    _require()
    _C.gdn_cuda_prefill_check(workspace.data_ptr(), _stream(workspace.device))
