"""Executors: what runs the model for one scheduler step.

Interface (``Executor``): per-sequence state lives in slots the executor owns;
``step(batch)`` takes every scheduled sequence of the step at once, as (slot, new token ids)
pairs (a prompt, a chunk of one, or one decode token), advances their slots and returns the
logits of each sequence's last new token as one [n, V] tensor, on the executor's ``device`` (the
sampler draws there, so only token ids cross to the host). Implementations: ``CpuExecutor`` (the
CPU model, or the step graph run on the CPU), ``CudaExecutor`` (the model on one GPU with the
project's CUDA kernels), ``TrtExecutor`` (a TensorRT plan of the step graph, ``trt_executor.py``);
``select_executor`` picks one for ``publish --executor auto|trt|cuda|onnx|cpu``.

Batch invariance. A sequence's logits must not depend on what else is in the batch, so that
greedy output is exactly the same alone or among 255 others. The CPU executor gets it from the
model itself: ``Qwen35Model(..., batch_invariant=True)`` computes every op as a per-row or
per-sequence function (``ops.numerics`` for GEMMs and transcendental ops, ``ops.registry.OpSet``
for the GDN kernel form), with one intra-op thread.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import torch

if TYPE_CHECKING:
    from ..cache import StateCache

Batch = Sequence[tuple[int, Sequence[int]]]

# What `publish --executor` accepts. auto: a plan for this GPU if the engine has one and TensorRT
# is importable, else the CUDA kernels if a GPU is visible, else the CPU model.
EXECUTORS = ("auto", "trt", "cuda", "onnx", "cpu")


class ExecutorUnavailable(RuntimeError):
    """The requested executor cannot run here; the message names what is missing."""


def _cuda_missing() -> str | None:
    """Why the CUDA kernels cannot run here, or None."""
    if not torch.cuda.is_available():
        return "no CUDA device is visible (torch.cuda.is_available() is False)"
    from ..ops import attention_cuda, gdn_cuda, moe_cuda

    if not (gdn_cuda.available() and moe_cuda.available() and attention_cuda.available()):
        return "qwen35_trt._C was built without the CUDA kernels (rebuild the package where nvcc is found)"
    return None


def _trt_missing(engine) -> str | None:
    """Why the engine's TensorRT plan for this GPU cannot run here, or None."""
    if not torch.cuda.is_available():
        return "no CUDA device is visible (a TensorRT plan runs on a GPU)"
    from ..engine.targets import TARGETS

    cc = tuple(torch.cuda.get_device_capability())
    target = next((t.name for t in TARGETS.values() if t.compute_capability == cc), None)
    if target is None:
        return f"no engine target for this GPU (compute capability {cc[0]}.{cc[1]})"
    rec = engine.manifest.get("plans", {}).get(target)
    if rec is None or not engine.plan_path(target).is_file():
        return f"{engine.path} has no {target} plan: build it with build_engine.py plan {engine.path} --target {target}"
    from .trt_executor import runtime_module

    try:
        runtime_module(rec["builder"])
    except ImportError as e:
        return str(e)
    return None


def select_executor(name: str, engine_dir: str | Path) -> str:
    """The executor ``name`` resolves to for this engine on this machine; ExecutorUnavailable naming
    what is missing when an explicitly requested one cannot run (never a silent fallback)."""
    from ..engine import EngineDir

    if name not in EXECUTORS:
        raise ExecutorUnavailable(f"executor {name!r}: expected one of {', '.join(EXECUTORS)}")
    engine = EngineDir(engine_dir)
    if name == "auto":
        if _trt_missing(engine) is None:
            return "trt"
        return "cuda" if _cuda_missing() is None else "cpu"
    why = {"trt": lambda: _trt_missing(engine), "cuda": _cuda_missing, "cpu": lambda: None,
           "onnx": lambda: None if engine.onnx_path.is_file() else f"{engine.path} has no step graph (model.onnx); rebuild the engine"}[name]()
    if why:
        raise ExecutorUnavailable(f"executor {name!r} cannot run here: {why}")
    return name


def make_executor(name: str, engine_dir: str | Path, num_slots: int, threads: int = 1) -> "Executor":
    """The executor ``select_executor(name, engine_dir)`` names, with ``num_slots`` slots."""
    chosen = select_executor(name, engine_dir)
    if chosen == "trt":
        from .trt_executor import TrtExecutor

        return TrtExecutor(engine_dir, num_slots)
    if chosen == "cuda":
        return CudaExecutor(engine_dir, num_slots)
    model = None
    if chosen == "onnx":
        from ..export.onnx_runner import OnnxModel

        model = OnnxModel(engine_dir, batch_invariant=True)
    return CpuExecutor(engine_dir, num_slots, threads=threads, model=model)


class Executor(ABC):
    """Runs steps over sequences kept in ``num_slots`` state slots (see the module docstring)."""

    num_slots: int
    vocab_size: int
    device: torch.device = torch.device("cpu")  # where step() returns its logits
    name: str = "cpu"

    @abstractmethod
    def allocate_slot(self) -> int: ...

    @abstractmethod
    def release_slot(self, slot: int) -> None:
        """Free a slot and clear its state (recurrent, conv, K/V)."""

    @abstractmethod
    def step(self, batch: Batch) -> torch.Tensor:
        """Advance every (slot, tokens) of the step; logits [n, V] of each one's last token."""

    @property
    @abstractmethod
    def free_slots(self) -> int: ...


class CachedExecutor(Executor):
    """An executor whose slots are those of a ``cache.StateCache`` (``self.cache``)."""

    cache: "StateCache"

    def allocate_slot(self) -> int:
        return self.cache.allocate()

    def release_slot(self, slot: int) -> None:
        self.cache.release(slot)

    @property
    def free_slots(self) -> int:
        return self.cache.free_slots


class CpuExecutor(CachedExecutor):
    """``Qwen35Model`` (the CPU reference model), or any model with its ``new_cache`` / ``forward``
    interface such as the step graph's ``OnnxModel``, over a ``StateCache`` of ``num_slots`` slots."""

    def __init__(self, engine_dir: str | Path, num_slots: int, threads: int = 1, model=None):
        from ..model import Qwen35Model

        torch.set_num_threads(threads)
        self.model = model if model is not None else Qwen35Model(engine_dir, batch_invariant=True)
        self.cache = self.model.new_cache(num_slots)
        self.num_slots = num_slots
        self.vocab_size = self.model.cfg.vocab_size

    def step(self, batch: Batch) -> torch.Tensor:
        with torch.no_grad():
            return torch.stack(self.model.forward([(s, list(t)) for s, t in batch], self.cache))


class CudaExecutor(CpuExecutor):
    """The model on one GPU: weights, GDN state pools and the paged KV pools on the device, every
    contract op on the project's CUDA kernels (GDN chunked prefill / recurrent decode, paged gated
    attention, NVFP4 linear and MoE: W4A16 on sm_90, native FP4 on sm_100a where the engine computes
    W4A4), the norms, residuals, router and lm_head GEMMs in torch on the device (32-row blocks, so a
    GEMM's kernel never depends on the batch). Logits stay on the device; the sampler draws there."""

    name = "cuda"

    def __init__(self, engine_dir: str | Path, num_slots: int, device: str | torch.device = "cuda"):
        from ..model import Qwen35Model

        why = _cuda_missing()
        if why:
            raise ExecutorUnavailable(f"executor 'cuda' cannot run here: {why}")
        self.device = torch.device(device)
        model = Qwen35Model(engine_dir, batch_invariant=True, device=self.device)
        super().__init__(engine_dir, num_slots, model=model)


class NullExecutor(Executor):
    """No model: constant logits (token ``token`` wins), for measuring the runtime's own overhead."""

    def __init__(self, num_slots: int, vocab_size: int, token: int = 0):
        self.num_slots = num_slots
        self.vocab_size = vocab_size
        self._free = list(range(num_slots - 1, -1, -1))
        self._row = torch.zeros(vocab_size, dtype=torch.bfloat16)
        self._row[token] = 1.0

    def allocate_slot(self) -> int:
        if not self._free:
            raise RuntimeError("no free slot")
        return self._free.pop()

    def release_slot(self, slot: int) -> None:
        self._free.append(slot)

    @property
    def free_slots(self) -> int:
        return len(self._free)

    def step(self, batch: Batch) -> torch.Tensor:
        return self._row.expand(len(batch), -1)
