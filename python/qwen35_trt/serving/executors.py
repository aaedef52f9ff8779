"""Executors: what runs the model for one scheduler step.

Interface (``Executor``): per-sequence state lives in slots the executor owns;
``step(batch)`` takes every scheduled sequence of the step at once, as (slot, new token ids)
pairs (a prompt, a chunk of one, or one decode token), advances their slots and returns the
logits of each sequence's last new token as one [n, V] tensor. The CPU model is the first
implementation; CUDA-kernel and TensorRT-plan executors come later behind the same interface.

Batch invariance. A sequence's logits must not depend on what else is in the batch, so that
greedy output is exactly the same alone or among 255 others. Measured here (torch 2.13 CPU,
oneDNN, AVX512/AMX): a bf16 ``F.linear`` of [M, 128] x [128, 32]^T gives different row values
for M = 200 than for M = 1, and fp32 ``sigmoid`` / ``silu`` / ``softplus`` give different last
bits in the vectorized body and the scalar tail of an elementwise loop, so a row's value depends
on where the batch puts it. ``batch_invariant_ops`` removes both by construction, without touching
the model: every 2-D linear runs in blocks of exactly ``ROWS`` rows (zero-padded), so each GEMM
call has one shape whatever the batch, and row results were checked to be independent of their
position and neighbours in such a block; unary transcendental ops see each row zero-padded to a
multiple of 64 elements, so every element goes through the vector body. Everything else in the
model is per row (norms, routing, the expert combine in fixed expert order) or per sequence
(conv, gated delta rule, attention), and ``CpuExecutor.step`` keeps one-token continuations and
prompt chunks in separate forward calls so each piece always gets the same GDN kernel form. This holds with one intra-op thread, which the CPU executor
uses (ATen splits large elementwise loops across threads at size-dependent boundaries).
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from contextlib import contextmanager
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F

Batch = Sequence[tuple[int, Sequence[int]]]


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


ROWS = 32  # rows per GEMM call while batch_invariant_ops() is active
ELEMENTS = 64  # row padding of unary ops: 2 x 16 fp32 / 2 x 32 bf16 AVX512 lanes (ATen unrolls by 2)


def _blocked_linear(orig):
    def linear(x, w, *rest, **kwargs):
        if x.dim() != 2 or x.shape[0] == ROWS:
            return orig(x, w, *rest, **kwargs)
        m = x.shape[0]
        outs = []
        for s in range(0, m, ROWS):
            blk = x[s : s + ROWS]
            n = blk.shape[0]
            if n < ROWS:
                blk = torch.cat([blk, blk.new_zeros(ROWS - n, blk.shape[1])])
            outs.append(orig(blk, w, *rest, **kwargs)[:n])
        return torch.cat(outs) if len(outs) > 1 else outs[0]

    return linear


def _row_padded(orig):
    def unary(x, *rest, **kwargs):
        if not isinstance(x, torch.Tensor) or x.dim() < 2 or not x.numel():
            return orig(x, *rest, **kwargs)
        flat = x.reshape(x.shape[0], -1)
        n = flat.shape[1]
        pad = (-n) % ELEMENTS
        if not pad and x.is_contiguous():
            return orig(x, *rest, **kwargs)
        return orig(F.pad(flat, (0, pad)), *rest, **kwargs)[:, :n].reshape(x.shape)

    return unary


# (owner, attribute, wrapper): the model's calls resolve these attributes at call time.
_TARGETS = [(F, "linear", _blocked_linear)] + [
    (owner, name, _row_padded)
    for owner, name in ((F, "silu"), (F, "softplus"), (F, "gelu"), (torch, "sigmoid"), (torch.Tensor, "sigmoid"), (torch, "rsqrt"), (torch.Tensor, "rsqrt"), (torch, "tanh"), (torch.Tensor, "tanh"))
]
_patch_lock = threading.RLock()


@contextmanager
def batch_invariant_ops():
    """Makes per-row results independent of the batch around them (see the module docstring).

    Swaps the functions in ``_TARGETS`` for blocked / row-padded versions while active. That is
    process-wide, so the swap is held under a lock for the whole step; other code running torch
    at the same time gets the same values, a little slower. (A TorchFunctionMode does the same
    per thread but costs ~10 us on each of the ~2000 torch calls of a step: 2x the step time.)
    """
    with _patch_lock:
        saved = [(owner, name, owner.__dict__.get(name, _MISSING), getattr(owner, name)) for owner, name, _ in _TARGETS]
        try:
            for (owner, name, wrap), (_, _, _, orig) in zip(_TARGETS, saved):
                setattr(owner, name, wrap(orig))
            yield
        finally:
            for owner, name, own, _ in saved:
                if own is _MISSING:
                    delattr(owner, name)
                else:
                    setattr(owner, name, own)


_MISSING = object()


class CpuExecutor(Executor):
    """``Qwen35Model`` (the CPU reference model) over a ``StateCache`` of ``num_slots`` slots."""

    def __init__(self, engine_dir: str | Path, num_slots: int, threads: int = 1, model=None):
        from ..model import Qwen35Model

        torch.set_num_threads(threads)
        self.model = model if model is not None else Qwen35Model(engine_dir)
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
        # Two forward calls per step, by kernel form: one-token continuations (the recurrent decode
        # form) and everything else (prompts and chunks: the chunked varlen form). The model picks
        # the GDN form per call from the whole batch, so mixing them would give a decode token the
        # chunked arithmetic whenever a prompt shares its step.
        pieces = [(s, list(t)) for s, t in batch]
        decode = [i for i, (s, t) in enumerate(pieces) if len(t) == 1 and self.cache.lengths[s] > 0]
        rest = [i for i in range(len(pieces)) if i not in set(decode)]
        rows: list = [None] * len(pieces)
        with torch.no_grad(), batch_invariant_ops():
            for group in (decode, rest):
                if group:
                    for i, row in zip(group, self.model.forward([pieces[i] for i in group], self.cache)):
                        rows[i] = row
        return torch.stack(rows)


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
