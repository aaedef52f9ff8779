"""Executors: what runs the model for one scheduler step.

Interface (``Executor``): per-sequence state lives in slots the executor owns;
``step(batch)`` takes every scheduled sequence of the step at once, as (slot, new token ids)
pairs (a prompt, a chunk of one, or one decode token), advances their slots and returns the
logits of each sequence's last new token as one [n, V] tensor. The CPU model is the first
implementation; CUDA-kernel and TensorRT-plan executors come later behind the same interface.

Batch invariance. A sequence's logits must not depend on what else is in the batch, so that
greedy output is exactly the same alone or among 255 others. The CPU executor gets it from the
model itself: ``Qwen35Model(..., batch_invariant=True)`` computes every op as a per-row or
per-sequence function (``ops.numerics`` for GEMMs and transcendental ops, ``ops.registry.OpSet``
for the GDN kernel form), with one intra-op thread.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Sequence

import torch

Batch = Sequence[tuple[int, Sequence[int]]]

# What `publish --executor` accepts: the CPU reference model, or the engine's step graph run on the
# CPU (the same CpuExecutor over export.onnx_runner.OnnxModel). GPU executors come later.
EXECUTORS = ("cpu", "onnx")


class Executor(ABC):
    """Runs steps over sequences kept in ``num_slots`` state slots (see the module docstring)."""

    num_slots: int
    vocab_size: int

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


class CpuExecutor(Executor):
    """``Qwen35Model`` (the CPU reference model), or any model with its ``new_cache`` / ``forward``
    interface such as the step graph's ``OnnxModel``, over a ``StateCache`` of ``num_slots`` slots."""

    def __init__(self, engine_dir: str | Path, num_slots: int, threads: int = 1, model=None):
        from ..model import Qwen35Model

        torch.set_num_threads(threads)
        self.model = model if model is not None else Qwen35Model(engine_dir, batch_invariant=True)
        self.cache = self.model.new_cache(num_slots)
        self.num_slots = num_slots
        self.vocab_size = self.model.cfg.vocab_size

    def allocate_slot(self) -> int:
        return self.cache.allocate()

    def release_slot(self, slot: int) -> None:
        self.cache.release(slot)

    @property
    def free_slots(self) -> int:
        return self.cache.free_slots

    def step(self, batch: Batch) -> torch.Tensor:
        with torch.no_grad():
            return torch.stack(self.model.forward([(s, list(t)) for s, t in batch], self.cache))


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
