"""Structure the rest of the project relies on: what the runtime side imports, where a target is
defined, and that nothing swaps torch functions at run time."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from serving_fixtures import tiny_engine  # noqa: F401

PACKAGE = Path(__file__).resolve().parents[1] / "python" / "qwen35_trt"
BUILDER_MODULES = ("qwen35_trt.engine.writer", "qwen35_trt.checkpoint", "qwen35_trt.safetensors_io")


def test_model_serving_and_generate_import_no_builder_module():
    code = (
        "import sys\n"
        "import qwen35_trt.model, qwen35_trt.generate, qwen35_trt.serving.runtime, qwen35_trt.serving.publish, "
        "qwen35_trt.serving.executors, qwen35_trt.serving.launcher, qwen35_trt.serving.watchdog\n"
        f"print(sorted(m for m in {BUILDER_MODULES!r} if m in sys.modules))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "[]", f"the runtime side imports builder modules: {r.stdout}"


def test_the_watchdog_imports_neither_torch_nor_the_model():
    code = "import sys, qwen35_trt.serving.watchdog; print(sorted(m for m in ('torch', 'qwen35_trt.model', 'numpy') if m in sys.modules))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "[]", r.stdout


def _sources():
    for path in sorted(PACKAGE.rglob("*.py")):
        yield path, ast.parse(path.read_text(), str(path))


def test_target_names_are_only_defined_in_engine_targets():
    """A target (sm_90, sm_100, sm_120) and a scale layout are spelled out in engine/targets.py only."""
    literals = ("sm_90", "sm_100", "sm_120", "row_major", "swizzled_128x4", "w4a16_fragments")
    found = []
    for path, tree in _sources():
        if path.relative_to(PACKAGE).as_posix() == "engine/targets.py":
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in literals:
                found.append(f"{path.relative_to(PACKAGE)}:{node.lineno}: {node.value!r}")
    assert not found, "target literals outside engine/targets.py:\n" + "\n".join(found)


def test_a_serving_step_runs_with_torch_functions_untouched(tiny_engine):
    """Batch invariance is a mode of the ops, never a global replacement of torch functions: while
    the executor runs the model, torch's functions are torch's own."""
    import torch
    import torch.nn.functional as F

    from qwen35_trt.serving.executors import CpuExecutor

    names = [(F, "linear"), (F, "silu"), (F, "softplus"), (torch, "sigmoid"), (torch.Tensor, "sigmoid"), (torch, "rsqrt"), (torch.Tensor, "rsqrt")]
    originals = [getattr(owner, name) for owner, name in names]
    ex = CpuExecutor(tiny_engine, 2)
    forward, seen = ex.model.forward, []

    def checked_forward(*args, **kwargs):
        seen.append([f"{getattr(o, '__name__', o)}.{n}" for (o, n), f in zip(names, originals) if getattr(o, n) is not f])
        return forward(*args, **kwargs)

    ex.model.forward = checked_forward
    a, b = ex.allocate_slot(), ex.allocate_slot()
    ex.step([(a, [1, 2, 3, 4, 5]), (b, [7, 8])])
    ex.step([(a, [9]), (b, [10, 11, 12])])
    assert seen and not any(seen), f"replaced during a step: {seen}"
