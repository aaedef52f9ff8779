"""Where the TensorRT plugin library ``libqwen35_trt_plugins.so`` is (docs/plugins.md).

It is built with the CUDA kernels and installed beside ``qwen35_trt._C``; load it into TensorRT with
``trt.get_plugin_registry().load_library(str(plugin_library_path()))``.
"""

from pathlib import Path

PLUGIN_LIBRARY_NAME = "libqwen35_trt_plugins.so"


def plugin_library_path() -> Path:
    """The installed plugin library; FileNotFoundError when this build has none (no nvcc)."""
    from . import _C

    path = Path(_C.__file__).with_name(PLUGIN_LIBRARY_NAME)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: the TensorRT plugin library was not built (it needs nvcc and TensorRT headers; see docs/plugins.md)"
        )
    return path
