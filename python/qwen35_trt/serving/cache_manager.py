"""Per-sequence cache resources: one executor state slot (GDN recurrent + conv state, and the
attention K/V) and a table of paged KV blocks for the attention layers.

Blocks are reserved at admission for the whole sequence (prompt + max_tokens), so a running
sequence can never run out of KV space and nothing needs preempting; they enter the sequence's
block table as its length crosses block boundaries. A GPU executor reads that table as the page
table of its paged attention; the CPU executor keeps K/V in the model's own paged pools (grown on
demand) and uses the table only as accounting (see docs/serving.md). Everything is returned on finish, error and cancel.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .executors import Executor
from .params import Limits


@dataclass(eq=False)
class CacheLease:
    slot: int
    reserved: int  # blocks reserved for the whole sequence
    blocks: list[int] = field(default_factory=list)  # the block table (physical block ids in order)


class CacheManager:
    def __init__(self, executor: Executor, limits: Limits):
        self.executor = executor
        self.limits = limits
        self.block_size = limits.kv_block_size
        self.total_blocks = limits.total_kv_blocks
        self._free_blocks = list(range(self.total_blocks - 1, -1, -1))
        self.reserved_blocks = 0  # reserved by running sequences, in tables or not yet
        self.leases: set[int] = set()  # slots held

    @property
    def free_slots(self) -> int:
        return self.executor.free_slots

    @property
    def used_blocks(self) -> int:
        return self.total_blocks - len(self._free_blocks)

    def can_admit(self, tokens: int) -> bool:
        return self.free_slots > 0 and self.reserved_blocks + self.limits.blocks_for(tokens) <= self.total_blocks

    def admit(self, tokens: int) -> CacheLease:
        """A slot and a reservation of KV blocks for a sequence of up to ``tokens`` tokens."""
        if not self.can_admit(tokens):
            raise RuntimeError("admit() without capacity: check can_admit() first")
        slot = self.executor.allocate_slot()
        n = self.limits.blocks_for(tokens)
        self.reserved_blocks += n
        self.leases.add(slot)
        return CacheLease(slot, n)

    def grow(self, lease: CacheLease, length: int) -> None:
        """Extend the block table to cover ``length`` tokens (within the reservation)."""
        need = self.limits.blocks_for(length)
        if need > lease.reserved:
            raise RuntimeError(f"sequence in slot {lease.slot} grew past its reservation ({length} tokens)")
        while len(lease.blocks) < need:
            lease.blocks.append(self._free_blocks.pop())

    def release(self, lease: CacheLease) -> None:
        self._free_blocks.extend(reversed(lease.blocks))
        lease.blocks.clear()
        self.reserved_blocks -= lease.reserved
        lease.reserved = 0
        self.leases.discard(lease.slot)
        self.executor.release_slot(lease.slot)
