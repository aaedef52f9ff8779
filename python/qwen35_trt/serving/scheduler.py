"""Continuous batching with chunked prefill.

Every step the scheduler (1) admits waiting requests in arrival order while a slot and KV blocks
are free (the head of the queue is never skipped, so nobody starves; requests beyond capacity wait
and are never dropped), (2) gives every decoding sequence its one token, and (3) fills the rest of
the step's token budget with prompt chunks (at most ``max_prefill_chunk`` per sequence), oldest
first. Decodes go first so that a long prompt arriving does not stall the others' streams.

A prompt is always cut at multiples of ``max_prefill_chunk`` and a chunk is scheduled whole or
not at all (never shortened to fit the step's remaining budget): where a sequence's chunks begin
changes the model's arithmetic (the chunked gated delta rule, the attention over the cache), so
this keeps a sequence's numbers independent of what else is running. ``Limits`` guarantees that
one chunk always fits after every decode.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

import torch

from .cache_manager import CacheLease, CacheManager
from .params import GenerationRequest, Limits
from .tokenizer import IncrementalDetokenizer


@dataclass(eq=False)
class Sequence:
    request: GenerationRequest
    detok: IncrementalDetokenizer
    generator: torch.Generator | None
    lease: CacheLease | None = None
    computed: int = 0  # tokens already in the executor state
    output: list[int] = field(default_factory=list)
    arrival: float = field(default_factory=time.perf_counter)
    first_token: float | None = None

    @property
    def prompt(self) -> list[int]:
        return self.request.prompt_ids

    @property
    def in_prefill(self) -> bool:
        return self.computed < len(self.prompt)

    @property
    def budget_tokens(self) -> int:
        """Tokens the sequence may reach: its KV reservation."""
        return len(self.prompt) + self.request.max_tokens


class Scheduler:
    def __init__(self, limits: Limits, cache: CacheManager):
        self.limits = limits
        self.cache = cache
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []

    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)

    def remove(self, seq: Sequence) -> None:
        """Take a sequence out (finished, failed or cancelled) and return its cache resources."""
        if seq.lease is not None:
            self.cache.release(seq.lease)
            seq.lease = None
        if seq in self.running:
            self.running.remove(seq)
        elif seq in self.waiting:
            self.waiting.remove(seq)

    def schedule(self) -> list[tuple[Sequence, list[int]]]:
        """The next step's batch: (sequence, new tokens) pairs, at most max_tokens_per_step tokens."""
        while self.waiting and len(self.running) < self.limits.max_running and self.cache.can_admit(self.waiting[0].budget_tokens):
            seq = self.waiting.popleft()
            seq.lease = self.cache.admit(seq.budget_tokens)
            self.running.append(seq)
        budget = self.limits.max_tokens_per_step
        batch = []
        for seq in self.running:
            if not seq.in_prefill and budget > 0:
                batch.append((seq, [seq.output[-1]]))
                budget -= 1
        for seq in self.running:
            if seq.in_prefill:
                n = min(len(seq.prompt) - seq.computed, self.limits.max_prefill_chunk)
                if n > budget:
                    break  # oldest first: a later prompt does not overtake this one
                batch.append((seq, seq.prompt[seq.computed : seq.computed + n]))
                budget -= n
        return batch
