"""The step graph's per-step inputs from a batch and a ``StateCache``: what every executor of the
graph (the CPU run here, TensorRT plans later) feeds it.

``batch`` is a list of (slot, new token ids); each sequence continues from the slot's length. The
cache's block tables are extended first (``StateCache.reserve``), so the pools hold room for the
new tokens before any op runs; the caller advances ``cache.lengths`` after the step.
"""

from __future__ import annotations

from typing import Sequence

import torch

from ..cache import StateCache
from .step_graph import STEP_INPUTS, conv_state_name, kv_pool_name, recurrent_state_name


def step_feeds(batch: Sequence[tuple[int, Sequence[int]]], cache: StateCache, vocab_size: int) -> dict[str, torch.Tensor]:
    """Every graph input of one step (metadata and pools) as CPU tensors; the pool tensors are the
    cache's own storage (the graph's aliased outputs update them in place)."""
    lens = [len(toks) for _, toks in batch]
    if not batch or min(lens) == 0:
        raise ValueError("every sequence in a batch needs at least one new token")
    ids = [int(t) for _, toks in batch for t in toks]
    if min(ids) < 0 or max(ids) >= vocab_size:
        raise ValueError(f"token ids must be in [0, {vocab_size})")
    slots = [s for s, _ in batch]
    if len(set(slots)) != len(slots):
        raise ValueError(f"a slot appears twice in one step: {slots}")
    starts = [cache.lengths[s] for s in slots]
    for s, n, start in zip(slots, lens, starts):
        cache.reserve(s, start + n)
    cu = torch.zeros(len(batch) + 1, dtype=torch.int32)
    cu[1:] = torch.cumsum(torch.tensor(lens, dtype=torch.int32), 0)
    feeds = {
        "input_ids": torch.tensor(ids, dtype=torch.int32),
        "cu_seqlens": cu,
        "context_lens": torch.tensor(starts, dtype=torch.int32),
        "slots": torch.tensor(slots, dtype=torch.int32),
        "has_initial_state": torch.tensor([s > 0 for s in starts], dtype=torch.bool),
        "block_tables": cache.block_tables(slots),
        "last_token_rows": cu[1:] - 1,
    }
    assert set(feeds) == set(STEP_INPUTS)
    for gi, layer in enumerate(cache.gdn_layers):
        feeds[conv_state_name(layer)] = cache.conv[gi]
        feeds[recurrent_state_name(layer)] = cache.recurrent[gi]
    for ai, layer in enumerate(cache.attn_layers):
        feeds[kv_pool_name(layer)] = cache.kv[ai]
    return feeds
