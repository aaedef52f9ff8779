"""Whether the CUDA kernels of ``qwen35_trt._C`` can run here: the one check behind every
``*_cuda.available()``."""

from __future__ import annotations

import torch


def cuda_kernels_available(entry_point: str) -> bool:
    """True when ``_C`` was built with CUDA, has ``entry_point`` and a CUDA device is usable."""
    try:
        from .. import _C
    except ImportError:  # the extension is not built
        return False
    if not hasattr(_C, entry_point) or not _C.build_info().get("cuda_enabled", False):
        return False
    try:
        return _C.cuda_device_count() > 0 and torch.cuda.is_available()
    except Exception:  # noqa: BLE001 - no driver: not available
        return False
