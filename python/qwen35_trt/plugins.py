"""Where the TensorRT plugin library ``libqwen35_trt_plugins.so`` is (docs/plugins.md).

It is built with the CUDA kernels and installed beside ``qwen35_trt._C``; load it into TensorRT with
``trt.get_plugin_registry().load_library(str(plugin_library_path()))``.
"""

import os
from pathlib import Path

PLUGIN_LIBRARY_NAME = "libqwen35_trt_plugins.so"
# Use this library instead of the installed one (a build tree's, say).
PLUGIN_LIBRARY_ENV = "QWEN35_TRT_PLUGIN_LIBRARY"


def plugin_library_path() -> Path:
    """The plugin library: the file named by the environment variable ``QWEN35_TRT_PLUGIN_LIBRARY``
    when it is set (use this library instead of the installed one), else the one installed beside
    ``qwen35_trt._C``. FileNotFoundError when that file does not exist (a build without nvcc has
    no plugin library)."""
    override = os.environ.get(PLUGIN_LIBRARY_ENV)
    if override:
        path = Path(override)
        if not path.is_file():
            raise FileNotFoundError(f"{path} (from {PLUGIN_LIBRARY_ENV}): no such plugin library")
        return path
    from . import _C

    path = Path(_C.__file__).with_name(PLUGIN_LIBRARY_NAME)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: the TensorRT plugin library was not built (it needs nvcc and TensorRT headers; see docs/plugins.md)"
        )
    return path
