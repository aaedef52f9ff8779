"""Per-sequence model state, kept in slots: what a running sequence carries between steps.

Each slot holds, for every GDN layer, the fp32 recurrent state [Hv, dk, dv] and the conv state
[C, W-1] (the last W-1 conv inputs), and for every attention layer the K and V of all tokens so
far [S, nkv, hd]. A slot is taken when a sequence starts and released (zeroed) when it ends.
"""

from __future__ import annotations

import torch

from .config import TextConfig


class SlotExhausted(RuntimeError):
    """No free slot: the caller must wait for a running sequence to finish."""


class StateCache:
    def __init__(self, cfg: TextConfig, num_slots: int, dtype: torch.dtype = torch.bfloat16):
        if num_slots < 1:
            raise ValueError(f"num_slots must be >= 1, got {num_slots}")
        self.cfg = cfg
        self.num_slots = num_slots
        self.gdn_layers = [i for i, t in enumerate(cfg.layer_types) if t == "linear_attention"]
        self.attn_layers = [i for i, t in enumerate(cfg.layer_types) if t == "full_attention"]
        n_gdn = len(self.gdn_layers)
        W = cfg.linear_conv_kernel_dim
        self.conv = torch.zeros(n_gdn, num_slots, cfg.conv_channels, W - 1, dtype=dtype)
        self.recurrent = torch.zeros(
            n_gdn, num_slots, cfg.linear_num_value_heads, cfg.linear_key_head_dim, cfg.linear_value_head_dim, dtype=torch.float32
        )
        empty = torch.zeros(0, cfg.num_key_value_heads, cfg.head_dim, dtype=dtype)
        self.keys = [[empty] * len(self.attn_layers) for _ in range(num_slots)]
        self.values = [[empty] * len(self.attn_layers) for _ in range(num_slots)]
        self.lengths = [0] * num_slots
        self._free = list(range(num_slots - 1, -1, -1))

    @property
    def free_slots(self) -> int:
        return len(self._free)

    def allocate(self) -> int:
        if not self._free:
            raise SlotExhausted(f"all {self.num_slots} slots are in use")
        return self._free.pop()

    def release(self, slot: int) -> None:
        if not 0 <= slot < self.num_slots or slot in self._free:
            raise ValueError(f"slot {slot} is not allocated")
        self.conv[:, slot] = 0
        self.recurrent[:, slot] = 0
        empty = self.keys[slot][0][:0] if self.keys[slot] else None
        self.keys[slot] = [empty] * len(self.attn_layers)
        self.values[slot] = [empty] * len(self.attn_layers)
        self.lengths[slot] = 0
        self._free.append(slot)
