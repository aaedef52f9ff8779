"""Nvfp4MoE and Nvfp4Linear on the CPU: the C++ reference (``csrc/reference/moe.cpp``) on torch tensors.

The contracts are in docs/ops.md (and ``csrc/include/qwen35_trt/moe.h``). In short, with
``Wq = e2m1(code) * fp8(block scale)`` (exact in bf16) and fp32 sums:

- ``nvfp4_linear``: ``y = bf16(weight_scale_2 * x @ Wq.T)`` (W4A16), or with ``x`` quantized per 16
  to NVFP4 using ``input_scale`` and ``y = bf16(input_scale * weight_scale_2 * xq @ Wq.T)`` (W4A4).
- ``nvfp4_moe``: top-k of the router logits (ties -> lower expert), softmax over the selected
  logits (fp32), per expert ``a = bf16(silu(g) * u)`` with ``g, u`` from the fused gate_up weight
  and its two globals, ``y = bf16(down(a))``, combined in rank order in fp32, plus
  ``sigmoid(x . shared_gate) * y_shared`` when a shared expert is given, rounded to bf16 once.

Unlike the spec ops (``moe.py``, ``nvfp4_linear.py``), which reproduce transformers' bf16 cast
points, these compute in fp32 with one rounding per GEMM output, so they agree with the spec to
bf16 rounding, not bit for bit. A token's result never depends on the rest of the batch, nor on
the thread count (``torch.get_num_threads()``, passed on to ``_C.set_cpu_threads``) or the CPU
instruction set the kernels use (``_C.cpu_isa()``; ``QWEN35_CPU_ISA=portable|avx2|avx512`` forces one).

Dtypes: activations bfloat16; packed weights uint8; block scales float8_e4m3fn or uint8 bits, in
``scale_layout`` "row_major" ([.., N, K/16]), "swizzled_128x4" ([.., roundup(N, 128),
roundup(K/16, 4)]) or "w4a16_fragments" (codes in MMA fragment order, UE5M3 scales [.., N, K/16];
the C++ reference reads ModelOpt's order only, so these weights are converted back on every call:
callers that run per step convert once instead, as the ONNX graph's CPU run does); global and input
scales float32. Bad shapes or dtypes raise ValueError naming the argument.
"""

from __future__ import annotations


import numpy as np
import torch

from ..engine.targets import ROW_MAJOR, SCALE_LAYOUTS, W4A4, W4A16, W4A16_FRAGMENTS
from .operands import MoeExperts, Nvfp4Weight, SharedExpert  # noqa: F401  (the contract's operand types)

ACTIVATIONS = (W4A16, W4A4)


def available() -> bool:
    """Whether ``qwen35_trt._C`` was built with the MoE reference ops."""
    try:
        from .. import _C
    except ImportError:
        return False
    return hasattr(_C, "nvfp4_moe_ref")


def _C():
    """The extension, its GEMM threads set to torch's thread count (results never depend on it)."""
    from .. import _C as ext

    n = torch.get_num_threads()
    if ext.cpu_threads() != n:
        ext.set_cpu_threads(n)
    return ext


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name}: expected one of {', '.join(choices)}, got {value!r}")


def _tensor(x, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if x.device.type != "cpu":
        raise ValueError(f"{name}: expected a CPU tensor, got device {x.device}")
    return x


def _bf16(x, name: str) -> np.ndarray:
    x = _tensor(x, name)
    if x.dtype != torch.bfloat16:
        raise ValueError(f"{name}: expected dtype torch.bfloat16, got {x.dtype}")
    return x.contiguous().view(torch.uint16).numpy()


def _u8(x, name: str) -> np.ndarray:
    x = _tensor(x, name)
    if x.dtype == torch.float8_e4m3fn:
        x = x.view(torch.uint8)
    if x.dtype != torch.uint8:
        raise ValueError(f"{name}: expected dtype torch.uint8 (or float8_e4m3fn scales), got {x.dtype}")
    return x.contiguous().numpy()


def _f32(x, name: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
    if not isinstance(x, torch.Tensor):
        x = torch.as_tensor(x, dtype=torch.float32)
    x = _tensor(x, name)
    if x.dtype != torch.float32:
        raise ValueError(f"{name}: expected dtype torch.float32, got {x.dtype}")
    if shape is not None and tuple(x.shape) != shape:
        if x.numel() == int(np.prod(shape)) and len(shape) <= 1:
            x = x.reshape(shape)
        else:
            raise ValueError(f"{name}: expected shape {list(shape)}, got {list(x.shape)}")
    return x.contiguous().numpy()


def _scalar(x, name: str) -> float:
    a = _f32(x, name)
    if a.size != 1:
        raise ValueError(f"{name}: expected one value, got shape {list(a.shape)}")
    return float(a.reshape(()))


def _logits(x, name: str = "router_logits") -> np.ndarray:
    x = _tensor(x, name)
    if x.dtype == torch.bfloat16:
        return x.contiguous().view(torch.uint16).numpy()
    if x.dtype == torch.float32:
        return x.contiguous().numpy()
    raise ValueError(f"{name}: expected dtype torch.bfloat16 or torch.float32, got {x.dtype}")


def modelopt_order(w: Nvfp4Weight, name: str = "weight") -> Nvfp4Weight:
    """A "w4a16_fragments" weight in ModelOpt's order: codes un-permuted, E4M3 row-major scales."""
    from ..w4a16_fragments import unpack_w4a16_fragments

    codes, scales = unpack_w4a16_fragments(_u8(w.weight, name), _u8(w.weight_scale, f"{name}_scale"), name)
    return Nvfp4Weight(torch.from_numpy(codes), torch.from_numpy(scales), w.weight_scale_2, w.input_scale)


def route(router_logits: torch.Tensor, top_k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Routing of Nvfp4MoE. router_logits [T, E] (bf16 or fp32) -> (weights float32 [T, k],
    expert ids int64 [T, k]) in rank order (the spec op ``moe.route`` returns the same pair)."""
    ids, w = _C().moe_route(_logits(router_logits), int(top_k))
    return torch.from_numpy(w), torch.from_numpy(ids).long()


def nvfp4_linear(
    x: torch.Tensor,
    w: Nvfp4Weight,
    scale_layout: str = ROW_MAJOR,
    activation: str = "w4a16",
) -> torch.Tensor:
    """Nvfp4Linear: x bf16 [..., K] -> y bf16 [..., N] (W4A4 needs ``w.input_scale``)."""
    _check_choice("scale_layout", scale_layout, SCALE_LAYOUTS)
    _check_choice("activation", activation, ACTIVATIONS)
    if scale_layout == W4A16_FRAGMENTS:
        w, scale_layout = modelopt_order(w), ROW_MAJOR
    if activation == "w4a4" and w.input_scale is None:
        raise ValueError("input_scale: required for activation='w4a4'")
    y = _C().nvfp4_linear_ref(
        _bf16(x, "x"),
        _u8(w.weight, "weight"),
        _u8(w.weight_scale, "weight_scale"),
        _scalar(w.weight_scale_2, "weight_scale_2"),
        scale_layout,
        activation,
        None if w.input_scale is None else _scalar(w.input_scale, "input_scale"),
    )
    return torch.from_numpy(y).view(torch.bfloat16)


def _shared_dict(s: SharedExpert, hidden: int) -> dict:
    def lin(name: str, w: Nvfp4Weight) -> tuple:
        return (
            _u8(w.weight, f"shared.{name}.weight"),
            _u8(w.weight_scale, f"shared.{name}.weight_scale"),
            _scalar(w.weight_scale_2, f"shared.{name}.weight_scale_2"),
            None if w.input_scale is None else _scalar(w.input_scale, f"shared.{name}.input_scale"),
        )

    gw = _bf16(s.gate_weight, "shared.gate_weight")
    if gw.size != hidden:
        raise ValueError(f"shared.gate_weight: expected {hidden} values ([1, H] or [H]), got shape {list(gw.shape)}")
    return {"gate": lin("gate", s.gate), "up": lin("up", s.up), "down": lin("down", s.down), "gate_weight": gw.reshape(-1)}


def nvfp4_moe(
    hidden: torch.Tensor,
    router_logits: torch.Tensor,
    top_k: int,
    experts: MoeExperts,
    shared: SharedExpert | None = None,
    scale_layout: str = ROW_MAJOR,
    activation: str = "w4a16",
) -> torch.Tensor:
    """Nvfp4MoE: hidden bf16 [T, H], router_logits [T, E] (bf16 or fp32) -> bf16 [T, H]."""
    _check_choice("scale_layout", scale_layout, SCALE_LAYOUTS)
    _check_choice("activation", activation, ACTIVATIONS)
    if scale_layout == W4A16_FRAGMENTS:
        experts = MoeExperts(modelopt_order(experts.gate_up, "gate_up.weight"), modelopt_order(experts.down, "down.weight"))
        if shared is not None:
            shared = SharedExpert(*(modelopt_order(getattr(shared, n), f"shared.{n}.weight") for n in ("gate", "up", "down")),
                                  shared.gate_weight)
        scale_layout = ROW_MAJOR
    x = _bf16(hidden, "hidden")
    if x.ndim != 2:
        raise ValueError(f"hidden: expected shape [T, H], got {list(x.shape)}")
    gu, dn = experts.gate_up, experts.down
    E = gu.weight.shape[0] if gu.weight.ndim == 3 else -1
    if E < 1:
        raise ValueError(f"gate_up.weight: expected shape [E, 2I, H/2], got {list(gu.weight.shape)}")
    w4a4 = activation == "w4a4"
    for name, t in (("gate_up.input_scale", gu.input_scale), ("down.input_scale", dn.input_scale)):
        if w4a4 and t is None:
            raise ValueError(f"{name}: required for activation='w4a4'")
    out = _C().nvfp4_moe_ref(
        x,
        _logits(router_logits),
        int(top_k),
        _u8(gu.weight, "gate_up.weight"),
        _u8(gu.weight_scale, "gate_up.weight_scale"),
        _f32(gu.weight_scale_2, "gate_up.weight_scale_2", (E, 2)),
        _u8(dn.weight, "down.weight"),
        _u8(dn.weight_scale, "down.weight_scale"),
        _f32(dn.weight_scale_2, "down.weight_scale_2", (E,)),
        scale_layout,
        activation,
        None if gu.input_scale is None else _f32(gu.input_scale, "gate_up.input_scale", (E,)),
        None if dn.input_scale is None else _f32(dn.input_scale, "down.input_scale", (E,)),
        None if shared is None else _shared_dict(shared, x.shape[1]),
    )
    return torch.from_numpy(out).view(torch.bfloat16)
