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
# nvidia-cutlass is needed only for its C++ headers: install it without its Python dependencies.
build_reqs=$(.venv/bin/python scripts/pinned.py --build-system)
# shellcheck disable=SC2046
"${PIP[@]}" install -q $(printf '%s\n' $build_reqs | grep -v '^nvidia-cutlass')
# shellcheck disable=SC2046
"${PIP[@]}" install -q --no-deps $(printf '%s\n' $build_reqs | grep '^nvidia-cutlass')
echo "== building and installing qwen35_trt (CMake; CUDA kernels when nvcc is found)"
start=$SECONDS
CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-2} "${PIP[@]}" install -q --no-build-isolation -e ".[test]"
echo "== tritonserver (nvidia-pytriton wheel, --no-deps) and its python-backend stub environment"
.venv/bin/python -m qwen35_trt.serving.launcher prepare
echo "== set-up done (build and install took $((SECONDS - start)) s)"
