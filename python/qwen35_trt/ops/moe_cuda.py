"""Nvfp4MoE and Nvfp4Linear on the GPU: the CUDA kernels of ``csrc/kernels/moe/`` on torch tensors.

Same contracts and argument types as ``moe_reference`` (docs/ops.md), with every tensor on one
CUDA device. ``scale_layout`` "w4a16_fragments" (sm_90 / sm_120 engines) goes to the kernels as it
is (``ScaleLayout::kW4A16Fragments``): the W4A16 GEMM reads that layout natively. Two implementations are chosen per call (``backend``):

- ``"w4a16"``: NVFP4 weights dequantized to BF16 in registers, BF16 tensor-core MMA (Hopper, and
  the fallback everywhere). Ignores ``input_scale``.
- ``"native"``: W4A4 with CUTLASS block-scaled FP4 MMA, compiled only for sm_100a and usable on
  compute capability 10.0 when the weights carry ``input_scale``;
- ``"auto"`` (default): native when available (and not disabled with the environment variable
  ``QWEN35_TRT_DISABLE_NATIVE_FP4=1``), else w4a16.

Importing this module never touches the GPU; ``available()`` says whether the kernels can run.
Kernels run on the current torch stream; outputs and workspace are allocated with torch.
"""

from __future__ import annotations

import torch

from ..engine.targets import ROW_MAJOR, scale_shape
from .cuda_support import cuda_kernels_available
from .moe_reference import ACTIVATIONS, SCALE_LAYOUTS, MoeExperts, Nvfp4Weight, SharedExpert  # noqa: F401

BACKENDS = ("auto", "w4a16", "native")


def _ext():
    from .. import _C

    return _C


def available() -> bool:
    """Whether ``_C`` has the CUDA MoE kernels and torch sees a CUDA device."""
    return cuda_kernels_available("nvfp4_moe_cuda")


def native_available(device: int | torch.device | None = None) -> bool:
    """Whether the sm_100a native W4A4 path is compiled in and would run on ``device``."""
    if not available():
        return False
    if device is None:
        index = torch.cuda.current_device()
    elif isinstance(device, int):
        index = device
    else:
        index = torch.device(device).index or 0
    return bool(_ext().nvfp4_native_available(index))


def scale_bytes(layout: str, rows: int, cols: int) -> int:
    """Bytes of the block scales of one [rows, cols] matrix in ``layout``."""
    r, c = scale_shape(layout, rows, cols)
    return r * c


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ValueError(msg)


def _cuda(t, name: str, dtype: torch.dtype | tuple, device: torch.device | None) -> torch.Tensor:
    _check(isinstance(t, torch.Tensor), f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    _check(t.is_cuda, f"{name}: expected a CUDA tensor, got device {t.device}")
    if device is not None:
        _check(t.device == device, f"{name}: expected device {device}, got {t.device}")
    dtypes = dtype if isinstance(dtype, tuple) else (dtype,)
    _check(t.dtype in dtypes, f"{name}: expected dtype {' or '.join(map(str, dtypes))}, got {t.dtype}")
    _check(t.is_contiguous(), f"{name}: expected a contiguous tensor")
    return t


def _operand(w: Nvfp4Weight, name: str, device, layout: str, groups: int, rows: int, cols: int,
             global_shape: tuple[int, ...], row_offset: int = 0, global_offset: int = 0) -> dict:
    """The pointer dict of one weight operand (see csrc/bindings/moe_cuda_bindings.cpp)."""
    packed = _cuda(w.weight, f"{name}.weight", torch.uint8, device)
    scales = _cuda(w.weight_scale, f"{name}.weight_scale", (torch.uint8, torch.float8_e4m3fn), device)
    s2 = _cuda(w.weight_scale_2, f"{name}.weight_scale_2", torch.float32, device)
    want = (groups, rows, cols // 2) if groups > 1 or packed.dim() == 3 else (rows, cols // 2)
    _check(tuple(packed.shape) == want, f"{name}.weight: expected shape {list(want)}, got {list(packed.shape)}")
    sb = scale_bytes(layout, rows, cols)
    _check(scales.numel() == groups * sb,
           f"{name}.weight_scale: expected {groups * sb} bytes ({groups} x {layout} scales of [{rows}, {cols // 16}]), got {scales.numel()}")
    _check(s2.numel() == max(1, int(torch.tensor(global_shape).prod())),
           f"{name}.weight_scale_2: expected shape {list(global_shape)}, got {list(s2.shape)}")
    d = {
        "packed": packed.data_ptr(), "scales": scales.data_ptr(),
        "global_scale": s2.data_ptr() + 4 * global_offset,
        "packed_stride": rows * cols // 2 if groups > 1 else 0, "scale_stride": sb if groups > 1 else 0,
        "global_stride": (global_shape[-1] if len(global_shape) == 2 else 1) if groups > 1 else 0,
        "input_stride": 1 if groups > 1 else 0, "row_offset": row_offset, "layout": layout,
    }
    if w.input_scale is not None:
        is_ = _cuda(w.input_scale, f"{name}.input_scale", torch.float32, device)
        _check(is_.numel() == groups, f"{name}.input_scale: expected {groups} values, got shape {list(is_.shape)}")
        d["input_scale"] = is_.data_ptr()
    return d


def nvfp4_linear(x: torch.Tensor, w: Nvfp4Weight, scale_layout: str = ROW_MAJOR, backend: str = "auto") -> torch.Tensor:
    """Nvfp4Linear: x bf16 [..., K] -> y bf16 [..., N] on the GPU."""
    _check(scale_layout in SCALE_LAYOUTS, f"scale_layout: expected one of {', '.join(SCALE_LAYOUTS)}, got {scale_layout!r}")
    _check(backend in BACKENDS, f"backend: expected one of {', '.join(BACKENDS)}, got {backend!r}")
    x = _cuda(x, "x", torch.bfloat16, None)
    _check(w.weight.dim() == 2, f"weight: expected shape [N, K/2], got {list(w.weight.shape)}")
    N, K = w.weight.shape[0], w.weight.shape[1] * 2
    _check(K % 16 == 0, f"weight: K = {K} must be a multiple of 16")
    _check(x.shape[-1] == K, f"x: last dimension must equal K = {K}, got shape {list(x.shape)}")
    op = _operand(w, "weight", x.device, scale_layout, 1, N, K, ())
    y = torch.empty((*x.shape[:-1], N), dtype=torch.bfloat16, device=x.device)
    args = {"x": x.data_ptr(), "y": y.data_ptr(), "rows": x.numel() // K, "n": N, "k": K, "weight": op, "backend": backend}
    ext = _ext()
    ws_bytes = ext.nvfp4_linear_cuda_workspace_size(args)
    ws = torch.empty(max(ws_bytes, 1), dtype=torch.uint8, device=x.device)
    ext.nvfp4_linear_cuda(args, ws.data_ptr(), ws_bytes, torch.cuda.current_stream(x.device).cuda_stream)
    return y


def nvfp4_moe(
    hidden: torch.Tensor,
    router_logits: torch.Tensor,
    top_k: int,
    experts: MoeExperts,
    shared: SharedExpert | None = None,
    scale_layout: str = ROW_MAJOR,
    backend: str = "auto",
    out: torch.Tensor | None = None,
    return_routing: bool = False,
):
    """Nvfp4MoE on the GPU: hidden bf16 [T, H], router_logits [T, E] (bf16 or fp32) -> bf16 [T, H].

    ``out`` (bf16 [T, H]) is written in place when given. With ``return_routing`` the result is
    ``(out, topk_weights float32 [T, k], topk_ids int32 [T, k])``.
    """
    _check(scale_layout in SCALE_LAYOUTS, f"scale_layout: expected one of {', '.join(SCALE_LAYOUTS)}, got {scale_layout!r}")
    _check(backend in BACKENDS, f"backend: expected one of {', '.join(BACKENDS)}, got {backend!r}")
    x = _cuda(hidden, "hidden", torch.bfloat16, None)
    dev = x.device
    _check(x.dim() == 2, f"hidden: expected shape [T, H], got {list(x.shape)}")
    T, H = x.shape
    logits = _cuda(router_logits, "router_logits", (torch.bfloat16, torch.float32), dev)
    gu, dn = experts.gate_up, experts.down
    _check(gu.weight.dim() == 3, f"gate_up.weight: expected shape [E, 2I, H/2], got {list(gu.weight.shape)}")
    E, I = gu.weight.shape[0], gu.weight.shape[1] // 2
    _check(tuple(logits.shape) == (T, E), f"router_logits: expected shape [{T}, {E}], got {list(logits.shape)}")
    _check(1 <= top_k <= min(E, 32), f"top_k: must be in [1, min(E={E}, 32)], got {top_k}")
    _check(H % 16 == 0 and I % 16 == 0 and I > 0, f"hidden size {H} and intermediate size {I} must be positive multiples of 16")
    args = {
        "hidden": x.data_ptr(), "router_logits": logits.data_ptr(), "router_logits_bf16": logits.dtype == torch.bfloat16,
        "tokens": T, "hidden_size": H, "intermediate": I, "num_experts": E, "top_k": int(top_k),
        "gate": _operand(gu, "gate_up", dev, scale_layout, E, 2 * I, H, (E, 2)),
        "up": _operand(gu, "gate_up", dev, scale_layout, E, 2 * I, H, (E, 2), row_offset=I, global_offset=1),
        "down": _operand(dn, "down", dev, scale_layout, E, H, I, (E,)),
        "backend": backend,
    }
    if shared is not None:
        Is = shared.gate.weight.shape[0]
        args.update(
            shared_intermediate=Is,
            shared_gate=_operand(shared.gate, "shared.gate", dev, scale_layout, 1, Is, H, ()),
            shared_up=_operand(shared.up, "shared.up", dev, scale_layout, 1, Is, H, ()),
            shared_down=_operand(shared.down, "shared.down", dev, scale_layout, 1, H, Is, ()),
        )
        sgw = _cuda(shared.gate_weight, "shared.gate_weight", torch.bfloat16, dev)
        _check(sgw.numel() == H, f"shared.gate_weight: expected {H} values, got shape {list(sgw.shape)}")
        args["shared_gate_weight"] = sgw.data_ptr()
    if out is None:
        out = torch.empty((T, H), dtype=torch.bfloat16, device=dev)
    _cuda(out, "out", torch.bfloat16, dev)
    _check(tuple(out.shape) == (T, H), f"out: expected shape [{T}, {H}], got {list(out.shape)}")
    args["out"] = out.data_ptr()
    routing = None
    if return_routing:
        routing = (torch.empty((T, top_k), dtype=torch.float32, device=dev), torch.empty((T, top_k), dtype=torch.int32, device=dev))
        args["topk_weights"], args["topk_ids"] = routing[0].data_ptr(), routing[1].data_ptr()
    if T > 0:
        ext = _ext()
        ws_bytes = ext.nvfp4_moe_cuda_workspace_size(args)
        ws = torch.empty(ws_bytes, dtype=torch.uint8, device=dev)
        ext.nvfp4_moe_cuda(args, ws.data_ptr(), ws_bytes, torch.cuda.current_stream(dev).cuda_stream)
    return (out, *routing) if return_routing else out
