"""Engine directories: the format (``format``), what a target means (``targets``), the reader
(``reader.EngineDir``) and the writer (``writer.build_engine``).

The reader and the targets need neither the checkpoint reader nor the builder; the model and the
serving runtime import only them (``tests/test_architecture.py`` checks it). Import the writer
explicitly: ``from qwen35_trt.engine.writer import build_engine``.
"""

from .format import FORMAT_VERSION, MANIFEST_FILE, ONNX_FILE, PLAN_DIR, TOKENIZER_FILE, WEIGHTS_FILE, WEIGHTS_LAYOUT
from .reader import EngineDir
from .targets import DEFAULT_TARGET, TARGETS, TargetSpec, target

__all__ = [
    "DEFAULT_TARGET", "EngineDir", "FORMAT_VERSION", "MANIFEST_FILE", "ONNX_FILE", "PLAN_DIR", "TARGETS", "TOKENIZER_FILE",
    "TargetSpec", "WEIGHTS_FILE", "WEIGHTS_LAYOUT", "target",
]
