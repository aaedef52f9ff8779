#!/usr/bin/env bash
# One device call for the Gated DeltaNet kernels on a lent GPU machine (Python 3.12, torch with
# CUDA, nvcc, cmake, ninja, pybind11, scikit-build-core preinstalled; no network):
#   1. build and install the package for sm_90a only (pip --no-build-isolation --no-deps -e .)
#   2. ctest (the CUDA tests run for real there)
#   3. pytest -m gpu on the GDN tests
#   4. compute-sanitizer memcheck and racecheck on the GDN CUDA ctest (quick cases)
#   5. bench/gdn_bench.py against flash-linear-attention (installed from a carried .whl/ folder
#      holding fla_core-0.6.0-py3-none-any.whl, when present) and the bandwidth floor
# Every step runs even when an earlier one failed (except after a failed build); logs go to $OUT
# (the device tool's output folder) when set, else to a temporary folder; a summary table is
# printed last. Run from the repository root:
#   bash bench/device_check.sh            (device tool: carry [".whl"] for the FLA baseline)
# Environment: GDN_CHECK_ARCH (default 90a), GDN_BENCH_ARGS (extra gdn_bench.py arguments).
# Steps 6-8 (their own block below) do the same for the NVFP4 MoE / linear kernels.
set -u -o pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
LOG="${OUT:-$(mktemp -d /tmp/gdn_device_check.XXXXXX)}"
mkdir -p "$LOG"
ARCH="${GDN_CHECK_ARCH:-90a}"
PY="${PYTHON:-python3}"
export PYTHONUNBUFFERED=1
declare -a SUMMARY=()
FAILED=0

step() {  # step NAME LOGFILE COMMAND...: run, tee to the log, record the outcome
  local name="$1" logfile="$2"
  shift 2
  local t0=$SECONDS
  echo "=== $name: $*"
  "$@" 2>&1 | tee "$LOG/$logfile"
  local rc=${PIPESTATUS[0]}
  local status="ok"
  [ "$rc" -ne 0 ] && { status="FAILED (rc $rc)"; FAILED=1; }
  SUMMARY+=("$(printf '%-28s %-16s %4ss  %s' "$name" "$status" "$((SECONDS - t0))" "$logfile")")
  return "$rc"
}

{
  echo "date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
  echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo '+dirty')"
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>/dev/null || echo "nvidia-smi: not available"
  nvcc --version 2>/dev/null | tail -1
  "$PY" -c 'import sys, torch; print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no device")'
} 2>&1 | tee "$LOG/environment.txt"

# 1. Build (sm_90a only, to save time there), tests enabled by pyproject.toml.
# The plugin library needs TensorRT's headers, which the device image lacks: they come from the
# kernel-lens wheel carried in .whl/ (unpacked, never imported); without it the plugins are skipped.
PLUGIN_ARGS="-DQWEN35_ENABLE_PLUGINS=OFF"
if ls .whl/kernel_lens-*.whl >/dev/null 2>&1; then
  rm -rf /tmp/kernel_lens_site && "$PY" -m zipfile -e .whl/kernel_lens-*.whl /tmp/kernel_lens_site
  PLUGIN_ARGS="-DQWEN35_TENSORRT_INCLUDE_DIR=/tmp/kernel_lens_site/kernel_lens/include/tensorrt"
else
  echo "no .whl/kernel_lens-*.whl: building without the TensorRT plugin library"
fi
export CMAKE_ARGS="-DCMAKE_CUDA_ARCHITECTURES=$ARCH $PLUGIN_ARGS ${CMAKE_ARGS:-}"
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}"
if ! step build build.log "$PY" -m pip install --no-build-isolation --no-deps -v -e .; then
  printf '%s\n' "${SUMMARY[@]}"
  echo "build failed; see $LOG/build.log"
  exit 1
fi
BUILD_DIR="$(ls -d build/cp3*-*/ 2>/dev/null | head -1)"
BUILD_DIR="${BUILD_DIR%/}"

# 2. ctest (all C++ tests; the CUDA ones run for real here).
step ctest ctest.log ctest --test-dir "$BUILD_DIR" --output-on-failure || true

# 3. pytest on the GPU-marked GDN tests.
step pytest-gpu pytest_gpu.log "$PY" -m pytest -q -m gpu -p no:cacheprovider tests/test_gdn_cuda.py || true

# 4. compute-sanitizer on the CUDA ctest (quick cases: the tools slow kernels down a lot).
SAN="$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null || true)"
if [ -n "$SAN" ] && [ -x "$BUILD_DIR/test_gdn_cuda" ]; then
  step memcheck memcheck.log env GDN_CUDA_TEST_QUICK=1 "$SAN" --tool memcheck --error-exitcode 3 "$BUILD_DIR/test_gdn_cuda" || true
  step racecheck racecheck.log env GDN_CUDA_TEST_QUICK=1 "$SAN" --tool racecheck --error-exitcode 3 "$BUILD_DIR/test_gdn_cuda" || true
  step initcheck initcheck.log env GDN_CUDA_TEST_QUICK=1 "$SAN" --tool initcheck --error-exitcode 3 "$BUILD_DIR/test_gdn_cuda" || true
else
  SUMMARY+=("compute-sanitizer            skipped (not found)")
fi

# 5. Benchmark, with FLA from the carried wheels when present.
if ls .whl/fla_core-*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/gdn_site .whl/fla_core-*.whl \
    && export PYTHONPATH="/tmp/gdn_site${PYTHONPATH:+:$PYTHONPATH}"
fi
# shellcheck disable=SC2086
step gdn_bench gdn_bench.log "$PY" bench/gdn_bench.py --out "$LOG" ${GDN_BENCH_ARGS:-} || true

# --- NVFP4 MoE / linear (Nvfp4MoE, Nvfp4Linear) ---------------------------------------------------
# 6. pytest -m gpu on the MoE tests (CUDA kernels vs the C++ CPU reference);
# 7. compute-sanitizer memcheck / racecheck on the MoE CUDA ctest (MOE_CUDA_TEST_QUICK=1: small
#    cases only); 8. bench/moe_bench.py at 35B shapes (W4A16 kernel vs torch._grouped_mm BF16, a
#    per-expert loop and the bandwidth / compute floors; MOE_BENCH_ARGS adds arguments).
step moe-pytest-gpu moe_pytest_gpu.log "$PY" -m pytest -q -m gpu -p no:cacheprovider tests/test_moe_cuda.py || true
if [ -n "$SAN" ] && [ -x "$BUILD_DIR/test_moe_cuda" ]; then
  step moe-memcheck moe_memcheck.log env MOE_CUDA_TEST_QUICK=1 "$SAN" --tool memcheck --error-exitcode 3 "$BUILD_DIR/test_moe_cuda" || true
  step moe-racecheck moe_racecheck.log env MOE_CUDA_TEST_QUICK=1 "$SAN" --tool racecheck --error-exitcode 3 "$BUILD_DIR/test_moe_cuda" || true
fi
# shellcheck disable=SC2086
step moe_bench moe_bench.log "$PY" bench/moe_bench.py --out "$LOG" ${MOE_BENCH_ARGS:-} || true
# --- end of the NVFP4 MoE block ----------------------------------------------------------------

echo
echo "=== summary (logs in $LOG)"
printf '%s\n' "${SUMMARY[@]}"
grep -h "passed, .* failed\|tests passed\|ERROR SUMMARY\|RACECHECK SUMMARY" "$LOG"/ctest.log "$LOG"/pytest_gpu.log "$LOG"/memcheck.log "$LOG"/racecheck.log "$LOG"/initcheck.log 2>/dev/null | tail -12
[ -f "$LOG/gdn_bench.md" ] && cat "$LOG/gdn_bench.md"
# NVFP4 MoE: test outcomes and the benchmark table
grep -h "passed\|failed\|ERROR SUMMARY\|RACECHECK SUMMARY" "$LOG"/moe_pytest_gpu.log "$LOG"/moe_memcheck.log "$LOG"/moe_racecheck.log 2>/dev/null | tail -6
[ -f "$LOG/moe_bench.log" ] && tail -n 9 "$LOG/moe_bench.log"
exit "$FAILED"
