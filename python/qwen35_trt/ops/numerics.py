"""How the spec ops round where a batch could change the result: the batch-invariant mode.

A bf16 GEMM on the CPU (oneDNN) gives a row different last bits depending on how many rows the
call has ([200, 128] x [128, 32]^T differs from row by row), and fp32 ``sigmoid`` / ``silu`` /
``softplus`` / ``rsqrt`` give different last bits in the vectorized body and the scalar tail of
an elementwise loop, so a row's value depends on where the batch puts it (measured with torch
2.13, AVX-512/AMX). Serving needs a sequence's tokens not to depend on what else runs with it.

``Numerics(batch_invariant=True)`` makes those ops per-row functions by construction: every 2-D
GEMM runs in zero-padded blocks of exactly ``ROWS`` rows (one GEMM shape whatever the batch), and
the transcendental ops see every row zero-padded to a multiple of ``ELEMENTS`` values (all in the
vector body). ``Numerics()`` (the default) is plain torch, the arithmetic transformers does, which
the oracle tests compare against bit for bit. The mode is chosen per model; nothing global changes.
Everything else in the spec ops is per row (norm reductions, routing) or per sequence (conv, the
gated delta rule, attention), which is batch-invariant as it stands. Single-threaded: ATen splits
large loops across threads at size-dependent points.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

ROWS = 32  # rows per GEMM call in batch-invariant mode
ELEMENTS = 64  # row padding of unary ops: 2 x 16 fp32 / 2 x 32 bf16 AVX-512 lanes (ATen unrolls by 2)


def _blocked_linear(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    if x.dim() != 2 or x.shape[0] == ROWS:
        return F.linear(x, w)
    outs = []
    for s in range(0, x.shape[0], ROWS):
        blk = x[s : s + ROWS]
        n = blk.shape[0]
        if n < ROWS:
            blk = torch.cat([blk, blk.new_zeros(ROWS - n, blk.shape[1])])
        outs.append(F.linear(blk, w)[:n])
    return torch.cat(outs) if len(outs) > 1 else outs[0]


def _row_padded(fn, x: torch.Tensor) -> torch.Tensor:
    if x.dim() < 2 or not x.numel():
        return fn(x)
    flat = x.reshape(x.shape[0], -1)
    n = flat.shape[1]
    pad = (-n) % ELEMENTS
    if not pad and x.is_contiguous():
        return fn(x)
    return fn(F.pad(flat, (0, pad)))[:, :n].reshape(x.shape)


@dataclass(frozen=True)
class Numerics:
    batch_invariant: bool = False

    def linear(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """``x @ w.T`` (no bias). x: [M, K] or [..., K]; w: [N, K]."""
        return _blocked_linear(x, w) if self.batch_invariant else F.linear(x, w)

    def elementwise(self, fn, x: torch.Tensor) -> torch.Tensor:
        """Any elementwise function (exp, sigmoid, ...) with the same row padding as ``silu``."""
        return _row_padded(fn, x) if self.batch_invariant else fn(x)

    def silu(self, x: torch.Tensor) -> torch.Tensor:
        return _row_padded(F.silu, x) if self.batch_invariant else F.silu(x)

    def sigmoid(self, x: torch.Tensor) -> torch.Tensor:
        return _row_padded(torch.sigmoid, x) if self.batch_invariant else torch.sigmoid(x)

    def softplus(self, x: torch.Tensor) -> torch.Tensor:
        return _row_padded(F.softplus, x) if self.batch_invariant else F.softplus(x)

    def rsqrt(self, x: torch.Tensor) -> torch.Tensor:
        return _row_padded(torch.rsqrt, x) if self.batch_invariant else torch.rsqrt(x)


PLAIN = Numerics()
BATCH_INVARIANT = Numerics(batch_invariant=True)
