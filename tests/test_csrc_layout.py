"""The C++ tree keeps the CPU reference and the CUDA kernels apart (no build needed).

Kernel code (csrc/kernels/, csrc/include/qwen35_trt/kernels/) and the shared headers
(csrc/include/qwen35_trt/common/) never include a CPU-reference header (qwen35_trt/nvfp4.h, gdn.h,
moe.h): what both sides need lives in qwen35_trt/common/, so a kernel never depends on the
reference's declarations and the shared math has one definition.
"""

from __future__ import annotations

import re
from pathlib import Path

CSRC = Path(__file__).resolve().parent.parent / "csrc"
REFERENCE_HEADERS = {"qwen35_trt/nvfp4.h", "qwen35_trt/gdn.h", "qwen35_trt/moe.h", "qwen35_trt/span.h"}
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


def _sources(*dirs: Path):
    for d in dirs:
        yield from (p for p in sorted(d.rglob("*")) if p.suffix in {".h", ".cuh", ".cu", ".cpp"})


def test_kernels_do_not_include_reference_headers():
    inc = CSRC / "include" / "qwen35_trt"
    bad = [
        f"{p.relative_to(CSRC)} includes {h}"
        for p in _sources(CSRC / "kernels", inc / "kernels", inc / "common")
        for h in INCLUDE.findall(p.read_text())
        if h in REFERENCE_HEADERS
    ]
    assert not bad, "kernel code must use qwen35_trt/common/ instead:\n" + "\n".join(bad)


def test_common_headers_include_only_common_headers():
    common = CSRC / "include" / "qwen35_trt" / "common"
    assert sorted(p.name for p in common.glob("*.h"))
    bad = [
        f"{p.name} includes {h}"
        for p in _sources(common)
        for h in INCLUDE.findall(p.read_text())
        if not h.startswith("qwen35_trt/common/")
    ]
    assert not bad, "\n".join(bad)
