#!/usr/bin/env bash
# Create .venv and install the project with its pinned dependencies (editable, builds qwen35_trt._C).
# torch goes first so that its pinned CPU wheel is used and nothing pulls a CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    echo "== creating .venv with $($PYTHON --version)"
    "$PYTHON" -m venv .venv
fi
PIP=(.venv/bin/python -m pip --disable-pip-version-check)
"${PIP[@]}" install -q pip==26.3
echo "== installing torch (CPU wheel)"
"${PIP[@]}" install -q "$(.venv/bin/python scripts/pinned.py torch)"
echo "== installing build requirements"
# nvidia-cutlass (CUTLASS headers) and kernel-lens (TensorRT headers) are needed only for their
# C++ headers: install them without their Python dependencies (kernel-lens would pull triton).
headers_only='^(nvidia-cutlass|kernel-lens)=='
build_reqs=$(.venv/bin/python scripts/pinned.py --build-system)
# shellcheck disable=SC2046
"${PIP[@]}" install -q $(printf '%s\n' $build_reqs | grep -Ev "$headers_only")
# shellcheck disable=SC2046
"${PIP[@]}" install -q --no-deps $(printf '%s\n' $build_reqs | grep -E "$headers_only")
echo "== building and installing qwen35_trt (CMake; CUDA kernels when nvcc is found)"
start=$SECONDS
CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-2} "${PIP[@]}" install -q --no-build-isolation -e ".[test]"
echo "== TensorRT-RTX: libtensorrt_rtx.so, the unversioned name its ONNX parser dlopens for plugin layers"
# The wheel ships only libtensorrt_rtx.so.1; without the link the parser aborts the process when a
# graph has a plugin node. The parser's RPATH is $ORIGIN, so the link goes beside the library.
rtx_libs=$(.venv/bin/python -c "import importlib.util as u; s = u.find_spec('tensorrt_rtx_libs'); print(s.submodule_search_locations[0] if s else '')")
if [ -n "$rtx_libs" ] && [ -e "$rtx_libs/libtensorrt_rtx.so.1" ]; then
    ln -sfn libtensorrt_rtx.so.1 "$rtx_libs/libtensorrt_rtx.so"
fi
echo "== tritonserver (nvidia-pytriton wheel, --no-deps) and its python-backend stub environment"
.venv/bin/python -m qwen35_trt.serving.launcher prepare
echo "== set-up done (build and install took $((SECONDS - start)) s)"
