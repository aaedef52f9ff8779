"""Per-sequence model state, kept in slots: what a running sequence carries between steps.

Each slot holds, for every GDN layer, the fp32 recurrent state [Hv, dk, dv] and the conv state
[C, W-1] (the last W-1 conv inputs). The attention layers keep K and V in paged pools, one per
layer, [num_blocks, 2, nkv, block_size, hd] (docs/ops.md "GatedAttention"); a slot owns a list of
blocks (its block table), extended as its sequence grows. The pools grow (doubling) when no block
is free, always between forwards, never while an op holds them. A slot is taken when a sequence
starts and released (states zeroed, blocks returned) when it ends. The pools live on ``device``
(the CPU, or the GPU of a CUDA executor); the block tables are host lists.
"""

from __future__ import annotations

import torch

from .config import TextConfig

DEFAULT_BLOCK_SIZE = 16


class SlotExhausted(RuntimeError):
    """No free slot: the caller must wait for a running sequence to finish."""


class StateCache:
    def __init__(self, cfg: TextConfig, num_slots: int, dtype: torch.dtype = torch.bfloat16, block_size: int = DEFAULT_BLOCK_SIZE,
                 device: str | torch.device = "cpu"):
        if num_slots < 1:
            raise ValueError(f"num_slots must be >= 1, got {num_slots}")
        if block_size < 1:
            raise ValueError(f"block_size must be >= 1, got {block_size}")
        self.cfg = cfg
        self.num_slots = num_slots
        self.block_size = block_size
        self.gdn_layers = [i for i, t in enumerate(cfg.layer_types) if t == "linear_attention"]
        self.attn_layers = [i for i, t in enumerate(cfg.layer_types) if t == "full_attention"]
        n_gdn = len(self.gdn_layers)
        W = cfg.linear_conv_kernel_dim
        self.device = torch.device(device)
        self.conv = torch.zeros(n_gdn, num_slots, cfg.conv_channels, W - 1, dtype=dtype, device=self.device)
        self.recurrent = torch.zeros(
            n_gdn, num_slots, cfg.linear_num_value_heads, cfg.linear_key_head_dim, cfg.linear_value_head_dim, dtype=torch.float32,
            device=self.device,
        )
        self._kv_block_shape = (2, cfg.num_key_value_heads, block_size, cfg.head_dim)
        self.kv = [torch.zeros(0, *self._kv_block_shape, dtype=dtype, device=self.device) for _ in self.attn_layers]
        self.blocks: list[list[int]] = [[] for _ in range(num_slots)]  # block table of each slot
        self._free_blocks: list[int] = []
        self.max_blocks: int | None = None  # a fixed pool size (preallocate), or None: grow on demand
        self.lengths = [0] * num_slots
        self._free = list(range(num_slots - 1, -1, -1))

    @property
    def free_slots(self) -> int:
        return len(self._free)

    @property
    def num_blocks(self) -> int:
        return self.kv[0].shape[0] if self.kv else 0

    def allocate(self) -> int:
        if not self._free:
            raise SlotExhausted(f"all {self.num_slots} slots are in use")
        return self._free.pop()

    def release(self, slot: int) -> None:
        if not 0 <= slot < self.num_slots or slot in self._free:
            raise ValueError(f"slot {slot} is not allocated")
        self.conv[:, slot] = 0
        self.recurrent[:, slot] = 0
        self._free_blocks.extend(reversed(self.blocks[slot]))
        self.blocks[slot] = []
        self.lengths[slot] = 0
        self._free.append(slot)

    def reserve(self, slot: int, length: int) -> None:
        """Extend the slot's block table to hold ``length`` tokens (growing the pools if needed)."""
        if not self.kv:
            return
        need = -(-length // self.block_size) - len(self.blocks[slot])
        if need > len(self._free_blocks):
            self._grow(need - len(self._free_blocks))
        for _ in range(max(need, 0)):
            self.blocks[slot].append(self._free_blocks.pop())

    def preallocate(self, num_blocks: int) -> None:
        """Give the pools exactly ``num_blocks`` blocks now and never grow them (an executor whose
        pools have a fixed shape, such as a TensorRT plan's optimisation profile)."""
        if num_blocks < self.num_blocks:
            raise ValueError(f"preallocate: the pools already hold {self.num_blocks} blocks")
        if num_blocks > self.num_blocks:
            self._grow(num_blocks - self.num_blocks, exact=True)
        self.max_blocks = num_blocks

    def _grow(self, at_least: int, exact: bool = False) -> None:
        old = self.num_blocks
        new = old + at_least if exact else max(old + at_least, 2 * old)
        if self.max_blocks is not None and new > self.max_blocks:
            if old + at_least > self.max_blocks:
                raise RuntimeError(f"KV pools full: {self.max_blocks} blocks of {self.block_size} tokens, all in use")
            new = self.max_blocks
        self.kv = [torch.cat([pool, pool.new_zeros(new - old, *self._kv_block_shape)]) for pool in self.kv]
        self._free_blocks = list(range(new - 1, old - 1, -1)) + self._free_blocks

    def block_tables(self, slots: list[int]) -> torch.Tensor:
        """int32 [len(slots), max blocks of those slots]: their tables, padded with block 0 (never read)."""
        width = max(1, max(len(self.blocks[s]) for s in slots))
        table = torch.zeros(len(slots), width, dtype=torch.int32)
        for i, s in enumerate(slots):
            table[i, : len(self.blocks[s])] = torch.tensor(self.blocks[s], dtype=torch.int32)
        return table
