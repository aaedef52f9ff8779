"""Token selection for a step: greedy rows in one argmax, sampled rows each with its own generator.

A sequence's token depends only on its own logits row and its own generator, never on the other
rows, so sampling is batch-invariant like the executor.
"""

from __future__ import annotations

import os
from typing import Sequence

import torch

from .params import SamplingParams


def new_generator(params: SamplingParams, device: torch.device | str = "cpu") -> torch.Generator | None:
    """A per-request generator (None for greedy requests) on the device the executor returns its
    logits on: seeded by ``seed``, else at random. A seed reproduces its tokens on the same kind of
    executor (a CUDA generator draws another stream than a CPU one)."""
    if params.greedy:
        return None
    seed = params.seed if params.seed is not None else int.from_bytes(os.urandom(8), "little")
    return torch.Generator(device=device).manual_seed(seed % 2**64)


def filtered_probs(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """Probabilities [V] (fp32) after temperature, top-k and top-p. logits: [V]."""
    x = logits.float() / params.temperature
    if params.top_k > 0 and params.top_k < x.numel():
        kth = torch.topk(x, params.top_k).values[-1]
        x = x.masked_fill(x < kth, float("-inf"))
    probs = torch.softmax(x, dim=-1)
    if params.top_p < 1.0:
        p_sorted, order = torch.sort(probs, descending=True, stable=True)
        before = torch.cumsum(p_sorted, 0) - p_sorted  # mass of the strictly more likely tokens
        drop = before >= params.top_p  # keep the smallest prefix reaching top_p (at least one)
        probs = probs.clone()
        probs[order[drop]] = 0.0
        probs = probs / probs.sum()
    return probs


def sample(logits: torch.Tensor, params: Sequence[SamplingParams], generators: Sequence[torch.Generator | None], suppress: Sequence[Sequence[int]] | None = None) -> list[int]:
    """One token per row. logits: [n, V] (any float dtype); params, generators: n each;
    ``suppress[i]``: token ids row i must not pick (``min_length`` holding back the end ids)."""
    n = logits.shape[0]
    rows_to_mask = [i for i in range(n) if suppress and suppress[i]]
    if rows_to_mask:
        logits = logits.clone()
        for i in rows_to_mask:
            logits[i, list(suppress[i])] = float("-inf")
    out = [0] * n
    greedy = [i for i in range(n) if params[i].greedy]
    if greedy:
        # the first maximal index on the executor's own dtype, as greedy_generate's argmax;
        # max(dim) finds it about twice as fast as argmax on bf16 CPU tensors
        rows = logits if len(greedy) == n else logits[greedy]
        picks = torch.max(rows, dim=-1).indices.tolist()
        for i, t in zip(greedy, picks):
            out[i] = int(t)
    for i in range(n):
        if not params[i].greedy:
            probs = filtered_probs(logits[i], params[i])
            out[i] = int(torch.multinomial(probs, 1, generator=generators[i]).item())
    return out
