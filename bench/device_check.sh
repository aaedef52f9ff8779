#!/usr/bin/env bash
# The CUDA kernels on a lent GPU machine (H100/H200: the image's python3 3.12 with torch, nvcc,
# cmake, ninja, pybind11, scikit-build-core, compute-sanitizer; no network), in phases that each
# fit one call of at most ~5 minutes, selected by an argument. Run from the repository root:
#
#   bash bench/device_check.sh build      sm_90a build (when needed), CUDA ctests, pytest -m gpu
#   bash bench/device_check.sh bench      bench/gdn_bench.py (vs FLA) and bench/moe_bench.py
#   bash bench/device_check.sh sanitize   compute-sanitizer memcheck / racecheck / initcheck, quick cases
#   bash bench/device_check.sh --quick    smoke of all three in one call (fewer cases, fewer sizes)
#   bash bench/device_check.sh all        build, bench, sanitize in a row (a machine of your own)
#   bash bench/device_check.sh --dry-run  here, on a CPU machine: checks everything, builds nothing
#
# What it needs travels in ONE git-ignored folder, .carry/ (bash bench/device_prepare.sh fills it
# here, pinned by bench/device_wheels.txt): pytest and its dependencies, einops and fla-core 0.6.0
# (the FLA baseline), numpy (each installed with pip --target only when the image lacks it), and
# kernel-lens 2.0.1, unpacked (never imported) for the TensorRT headers of the plugin library.
# Every device call names it: carry [".carry"].
#
# Resuming: a phase builds only when the build is missing or stale (a hash of csrc/, CMakeLists.txt,
# pyproject.toml and the CMake arguments, kept in build/.device_check_stamp), so on a warm machine
# (the build dir and the editable install persist) `bench` and `sanitize` start at once, and on a
# fresh one they build first (~2 minutes more: the sm_90a build, without the AddressSanitizer copy
# of the plugin library, took 2 minutes on 2 CPU cores; the device has 16). Steps that passed in an
# earlier call of the same phase, on the same machine and tree, are not run again, so a phase
# rerun after a time limit resumes where it stopped (DEVICE_CHECK_FRESH=1 runs everything again).
# Each step has its own time limit inside the phase's budget (DEVICE_CHECK_BUDGET_S, default:
# build 330 s, bench 330 s, sanitize 240 s, --quick 510 s); a step left without time is reported
# "skipped (budget)" (exit 1), so a phase ends before a call's timeout_s of budget + 60-90.
#
# Output: $OUT/<phase>.md (a markdown table of the steps and their key lines, the benchmark tables;
# printed last) and $OUT/<phase>.log (every step's log, the last 2000 lines each), and for bench
# gdn_bench.json / moe_bench.json: at most 8 files come back from $OUT, even for `all`.
#
# Plan for the 15 minutes of device time of one task (a machine start costs 1-2 minutes of it; a
# machine goes back 30 s after a call, so make the next call at once or expect a fresh one that
# rebuilds). Estimates, not yet measured on a device:
#   call 1  bash bench/device_check.sh build      carry [".carry"], timeout_s 420   3-4 min + start
#   call 2  bash bench/device_check.sh bench      carry [".carry"], timeout_s 420   2-3 min warm (+2 fresh)
#   call 3  bash bench/device_check.sh sanitize   carry [".carry"], timeout_s 330   2-3 min warm; only if
#           at least 5 minutes are left (status), else next task
#   then give_back (total about 10-13 minutes). Short of time, or to see first that all of it runs:
#   call 1  bash bench/device_check.sh --quick    carry [".carry"], timeout_s 600   6-8 min + start
# A call that returns "skipped (budget)" or TIMEOUT rows: the same command again at once resumes.
#
# Environment: OUT (output folder; default /tmp/qwen35_device_check/out), CARRY_DIR (default .carry),
# DEVICE_CHECK_ARCH (default 90a), DEVICE_CHECK_BUDGET_S, DEVICE_CHECK_FRESH, GDN_BENCH_ARGS,
# MOE_BENCH_ARGS, PYTHON.
# Functions run through "phase_$name" and `bash -c` scripts in single quotes are on purpose:
# shellcheck disable=SC2317,SC2016
set -u -o pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 2
PY="${PYTHON:-python3}"
CARRY="${CARRY_DIR:-.carry}"
ARCH="${DEVICE_CHECK_ARCH:-90a}"
STATE=/tmp/qwen35_device_check             # persists while the machine stays warm
SITE="$STATE/site"                         # carried wheels installed here (pip --target)
STAMP_FILE="build/.device_check_stamp"
PYTAG=$("$PY" -c 'import sys; print("cp%d%d" % sys.version_info[:2])' 2>/dev/null || echo cp3)
export PYTHONUNBUFFERED=1
[ -d /usr/local/cuda/bin ] && export PATH="$PATH:/usr/local/cuda/bin"  # nvcc, compute-sanitizer

# The ctests and pytest files each phase runs (checked by --dry-run).
CUDA_CTESTS=(nvfp4_dequant_cuda gdn_cuda moe_cuda attention_cuda plugin_cuda)
GPU_TESTS=(tests/test_gdn_cuda.py tests/test_moe_cuda.py tests/test_attention_cuda.py tests/test_nvfp4_codec.py tests/test_executors.py)
QUICK_GPU_TESTS=(tests/test_gdn_cuda.py tests/test_attention_cuda.py tests/test_nvfp4_codec.py)

usage() { sed -n '2,/^# Functions run through/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

# --- steps, budget, report -------------------------------------------------------------------------
declare -a ROWS=()
FAILED=0
DRY=0
PHASE=""
WORK=""
DEADLINE=0

# step NAME LIMIT_S COMMAND...: run under `timeout` (the smaller of LIMIT_S and the phase's time
# left), log to $WORK/NAME.log and the terminal, add a row. rc 77 (the CUDA ctests' "no GPU") is a
# skip. Returns the command's rc. A step that passed in an earlier call of the same phase on this
# machine, on the same tree, is not run again (its row says so): rerunning a phase that ran out of
# time resumes it. environment, wheels and build always run (build checks its own stamp).
step() {
  local name="$1" limit="$2"
  shift 2
  if [ "$DRY" = 1 ]; then
    dry_step "$name" "$@"
    return 0
  fi
  if [ -f "$WORK/$name.ok" ]; then  # passed in an earlier call on this machine, same tree
    ROWS+=("| $name | ok (earlier call) | 0 | $(key_line "$WORK/$name.log") |")
    return 0
  fi
  local left=$((DEADLINE - SECONDS))
  if [ "$left" -lt 20 ]; then
    ROWS+=("| $name | skipped (budget) | 0 | phase budget spent: rerun the phase to resume |")
    FAILED=1
    return 124
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  local t0=$SECONDS log="$WORK/$name.log" resumable=1
  case "$name" in environment | wheels | build) resumable=0 ;; esac
  echo "=== $name (limit ${limit}s): $*"
  timeout -k 10 "$limit" "$@" 2>&1 | tee "$log"
  local rc=${PIPESTATUS[0]}
  local status="ok"
  case "$rc" in
    0) [ "$resumable" = 1 ] && touch "$WORK/$name.ok" ;;
    77) status="skipped (no GPU)" ;;
    124 | 137) status="TIMEOUT (${limit}s)"; FAILED=1 ;;
    *) status="FAILED (rc $rc)"; FAILED=1 ;;
  esac
  ROWS+=("| $name | $status | $((SECONDS - t0)) | $(key_line "$log") |")
  return "$rc"
}

note() { ROWS+=("| $1 | $2 | 0 | $3 |"); }

# The line of a log worth a table cell: test totals, sanitizer summaries, or the last line.
key_line() {
  local l
  l=$(grep -E "tests passed|[0-9]+ (passed|failed|errors?|skipped)|ERROR SUMMARY|RACECHECK SUMMARY|no CUDA device|^fla [0-9]" "$1" 2>/dev/null | tail -1)
  [ -z "$l" ] && l=$(tail -1 "$1" 2>/dev/null)
  local skipped
  skipped=$(grep -c "(Skipped)" "$1" 2>/dev/null)
  [ "${skipped:-0}" -gt 0 ] && l="$l; $skipped skipped"
  printf '%s' "${l:0:150}" | tr '|' '/'
}

finish() {
  [ "$DRY" = 1 ] && return
  local md="$OUTDIR/$PHASE.md" log="$OUTDIR/$PHASE.log"
  {
    echo "## device check: $PHASE"
    echo
    echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(cat "$WORK/gpu.txt" 2>/dev/null || echo 'GPU: unknown'), tree $(tree_id)"
    echo
    echo "| step | status | s | key line |"
    echo "|---|---|---:|---|"
    printf '%s\n' "${ROWS[@]}"
    for f in "$WORK/gdn_bench.md" "$WORK/moe_bench.md"; do
      [ -f "$f" ] && { echo; echo "### $(basename "$f" .md)"; echo; cat "$f"; }
    done
  } >"$md"
  for f in "$WORK"/*.log; do
    [ -f "$f" ] || continue
    echo "===== $(basename "$f") (last 2000 lines)"
    tail -n 2000 "$f"
  done >"$log"
  for f in gdn_bench.json moe_bench.json; do
    [ -f "$WORK/$f" ] && cp "$WORK/$f" "$OUTDIR/"
  done
  echo
  cat "$md"
  echo
  echo "($PHASE: $md, $log; exit $FAILED)"
}

# A short id of the tree that was tested: the commit when .git travelled, and a hash of the sources.
tree_id() {
  local c
  c=$(git rev-parse --short HEAD 2>/dev/null || echo "no-git")
  echo "$c/$(tree_hash | cut -c1-12)"
}

tree_hash() {  # everything a phase runs: sources, tests, benchmarks, the package
  find CMakeLists.txt pyproject.toml csrc python tests bench -type f ! -name '*.pyc' -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1
}

source_hash() {  # what the build depends on (and its CMake arguments)
  { find CMakeLists.txt pyproject.toml csrc -type f -print0 | sort -z | xargs -0 sha256sum; echo "$ARCH ${CMAKE_ARGS:-}"; } | sha256sum | cut -d' ' -f1
}

# --- preparation on the device -----------------------------------------------------------------------
ENV_PY='
import importlib, sys
print("python", sys.version.split()[0], sys.executable)
for m in ("torch", "triton", "numpy", "scikit_build_core", "pybind11", "cmake", "ninja", "pytest", "xdist", "einops", "fla"):
    try:
        v = getattr(importlib.import_module(m), "__version__", "?")
        print(f"{m:18} {v}")
    except Exception as e:
        print(f"{m:18} missing ({type(e).__name__})")
import torch
print("torch cuda", torch.version.cuda, "device", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none")
'

environment() {
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -1 >"$WORK/gpu.txt"
  [ -s "$WORK/gpu.txt" ] || echo "no nvidia-smi" >"$WORK/gpu.txt"
  step environment 60 bash -c 'echo "gpu: $(cat "$1"), nproc $(nproc)"; nvcc --version | tail -2
    command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null || echo "compute-sanitizer: not found"
    "$2" -c "$3"' environment "$WORK/gpu.txt" "$PY" "$ENV_PY"
}

# Check the carried wheels against the manifest, install the ones the image lacks into $SITE.
carried_wheels() {
  if [ ! -d "$CARRY" ]; then
    note wheels "MISSING" "no $CARRY/ carried: pytest, FLA, numpy only from the image; no plugin library"
    return
  fi
  rm -rf "$SITE"
  step wheels 120 bash -c '"$1" bench/device_carry.py verify "$2" && "$1" bench/device_carry.py install "$2" "$3"' \
    wheels "$PY" "$CARRY" "$SITE"
  [ -d "$SITE" ] && export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
}

build_dir() {  # scikit-build-core's build/{wheel_tag} of this python3
  local d
  d=$(ls -d "build/$PYTAG"-*/ 2>/dev/null | head -1)
  [ -z "$d" ] && [ "$DRY" = 1 ] && d="build/$PYTAG-$PYTAG-linux_x86_64"
  echo "${d%/}"
}

# True when the editable install imports with CUDA and the stamp matches the sources.
built() {
  [ -f "$STAMP_FILE" ] && [ "$(cat "$STAMP_FILE")" = "$(source_hash)" ] && [ -n "$(build_dir)" ] \
    && [ -x "$(build_dir)/test_gdn_cuda" ] \
    && (cd /tmp && "$PY" -c 'import sys, qwen35_trt._C as c; sys.exit(0 if c.build_info().get("cuda_enabled") else 1)') 2>/dev/null
}

build_args() {
  # The plugin library needs TensorRT's headers: from the carried kernel-lens wheel, unpacked.
  local plugin="-DQWEN35_ENABLE_PLUGINS=OFF" inc=""
  if [ "$DRY" = 0 ] && [ -d "$CARRY" ]; then
    inc=$("$PY" bench/device_carry.py headers "$CARRY" "$STATE/kernel_lens" 2>/dev/null | tail -1)
  elif [ "$DRY" = 1 ]; then
    inc="$STATE/kernel_lens/kernel_lens/include/tensorrt"
  fi
  [ -n "$inc" ] && plugin="-DQWEN35_TENSORRT_INCLUDE_DIR=$inc"
  # sm_90a only; the AddressSanitizer copy of the plugin library is tested on the CPU already.
  export CMAKE_ARGS="-DCMAKE_CUDA_ARCHITECTURES=$ARCH $plugin -DQWEN35_PLUGIN_SANITIZERS=OFF"
  export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}"
  # pyproject.toml sets tool.scikit-build.minimum-version = "build-system.requires" (1.1.2), which
  # an older scikit-build-core of the image refuses: the environment overrides it with the
  # installed version (pyproject.toml stays as it is).
  if [ "$DRY" = 0 ]; then
    SKBUILD_MINIMUM_VERSION=$("$PY" -c 'import scikit_build_core as s; print(s.__version__)' 2>/dev/null || echo "")
    if [ -n "$SKBUILD_MINIMUM_VERSION" ]; then export SKBUILD_MINIMUM_VERSION; else unset SKBUILD_MINIMUM_VERSION; fi
  fi
}

# Build and install editable (only when missing or stale).
ensure_built() {
  build_args
  if [ "$DRY" = 0 ] && built; then
    note build "up to date" "$(build_dir) (stamp matches; delete $STAMP_FILE to force)"
    return 0
  fi
  [ "$DRY" = 0 ] && rm -f "$STAMP_FILE"
  if step build 300 "$PY" -m pip install --no-build-isolation --no-deps --no-index --disable-pip-version-check -v -e .; then
    [ "$DRY" = 0 ] && source_hash >"$STAMP_FILE"
    return 0
  fi
  return 1
}

# --- the steps of each phase ---------------------------------------------------------------------------
find_ctest() {  # on PATH, else beside the cmake of the PyPI package
  command -v ctest 2>/dev/null || "$PY" -c 'import cmake, os; print(os.path.join(cmake.CMAKE_BIN_DIR, "ctest"))' 2>/dev/null || echo ctest
}

run_ctests() {  # run_ctests LIMIT: the CUDA-labelled ctests (CUDA_CTESTS), four at a time
  local ctest_bin=ctest
  [ "$DRY" = 0 ] && ctest_bin=$(find_ctest)
  step ctest-cuda "$1" "$ctest_bin" --test-dir "$(build_dir || true)" -L cuda -j 4 --timeout "$1" --output-on-failure
}

run_pytest() {  # run_pytest LIMIT FILES...
  local limit="$1"
  shift
  local par=()
  # pytest-xdist of the image (not with a carried pytest): the CPU references run in parallel.
  if [ "$DRY" = 0 ] && "$PY" -c 'import pytest, xdist, sys; sys.exit("/qwen35_device_check/" in pytest.__file__)' 2>/dev/null; then
    par=(-n 8)
  fi
  step pytest-gpu "$limit" "$PY" -m pytest -q -m gpu -p no:cacheprovider "${par[@]}" "$@"
}

sanitizer() {
  command -v compute-sanitizer 2>/dev/null || { [ -x /usr/local/cuda/bin/compute-sanitizer ] && echo /usr/local/cuda/bin/compute-sanitizer; }
}

# sanitize_one NAME LIMIT TOOL EXE [ENV=VALUE]: compute-sanitizer on one CUDA ctest executable.
sanitize_one() {
  local name="$1" limit="$2" tool="$3" exe="$4" envs=()
  [ $# -ge 5 ] && envs=("$5")
  if [ "$DRY" = 0 ] && [ "${SAN_BROKEN:-0}" = 1 ]; then
    note "$name" "skipped" "compute-sanitizer does not support this device (see the first pass)"
    return
  fi
  step "$name" "$limit" env "${envs[@]}" "${SAN:-compute-sanitizer}" --tool "$tool" --error-exitcode 3 "$(build_dir || true)/$exe"
  if [ "$DRY" = 0 ] && grep -q "Device not supported\|not supported on this" "$WORK/$name.log" 2>/dev/null; then
    SAN_BROKEN=1
  fi
}

sanitize_steps() {  # sanitize_steps quick|full
  [ "$DRY" = 0 ] && SAN=$(sanitizer)
  if [ "$DRY" = 0 ] && [ -z "$SAN" ]; then
    note compute-sanitizer "skipped" "not found on this machine"
    return
  fi
  sanitize_one gdn-memcheck 75 memcheck test_gdn_cuda GDN_CUDA_TEST_QUICK=1
  sanitize_one moe-memcheck 75 memcheck test_moe_cuda MOE_CUDA_TEST_QUICK=1
  [ "$1" = quick ] && return
  sanitize_one gdn-racecheck 75 racecheck test_gdn_cuda GDN_CUDA_TEST_QUICK=1
  sanitize_one gdn-initcheck 60 initcheck test_gdn_cuda GDN_CUDA_TEST_QUICK=1
  sanitize_one moe-racecheck 75 racecheck test_moe_cuda MOE_CUDA_TEST_QUICK=1
  sanitize_one attention-memcheck 90 memcheck test_attention_cuda
}

bench_steps() {  # bench_steps quick|full
  step fla-import 60 "$PY" -c 'import fla, einops; from fla.ops.gated_delta_rule import chunk_gated_delta_rule, fused_recurrent_gated_delta_rule; print("fla", fla.__version__, "einops", einops.__version__)' || true
  local gdn_args=() moe_args=()
  # shellcheck disable=SC2206
  [ "$1" = quick ] && gdn_args=(--quick) && moe_args=(--tokens 1 256 4096 --rotations 4)
  # shellcheck disable=SC2206
  gdn_args+=(${GDN_BENCH_ARGS:-})
  # shellcheck disable=SC2206
  moe_args+=(${MOE_BENCH_ARGS:-})
  step gdn_bench 200 "$PY" bench/gdn_bench.py --out "$WORK" "${gdn_args[@]}" || true
  step moe_bench 150 "$PY" bench/moe_bench.py --out "$WORK" "${moe_args[@]}" || true
}

phase_build() {
  ensure_built || return 1
  run_ctests 150
  run_pytest 200 "${GPU_TESTS[@]}"
}

phase_bench() {
  ensure_built || return 1
  bench_steps full
}

phase_sanitize() {
  ensure_built || return 1
  sanitize_steps full
}

phase_quick() {
  ensure_built || return 1
  run_ctests 120
  run_pytest 120 "${QUICK_GPU_TESTS[@]}"
  bench_steps quick
  sanitize_steps quick
}

# run_phase NAME BUDGET_S: one phase, its own work folder, budget and report.
run_phase() {
  trap 'echo "device_check: stopped"; finish; exit 3' TERM INT  # stopped from outside: still report
  PHASE="$1"
  ROWS=()
  DEADLINE=$((SECONDS + ${DEVICE_CHECK_BUDGET_S:-$2}))
  WORK="$STATE/$PHASE"
  if [ "$DRY" = 0 ]; then
    # Steps done in an earlier call count only for the same tree (and not with DEVICE_CHECK_FRESH=1).
    local tree
    tree=$(tree_hash)
    if [ "${DEVICE_CHECK_FRESH:-0}" = 1 ] || [ "$(cat "$WORK/.tree" 2>/dev/null)" != "$tree" ]; then
      rm -rf "$WORK"
    fi
    mkdir -p "$WORK" && echo "$tree" >"$WORK/.tree"
    environment
    carried_wheels
  else
    dry_step environment bash -c 'nvidia-smi; nvcc --version'
    dry_step wheels "$PY" bench/device_carry.py install "$CARRY" "$SITE"
  fi
  "phase_$PHASE"
  finish
}

# --- --dry-run: everything that can be checked without a GPU -------------------------------------------
declare -a PROBLEMS=()
problem() { PROBLEMS+=("$1"); echo "  PROBLEM: $1"; }

# In a dry run a step is checked, not run: its repository files must exist and travel, the ctest
# executables it runs must be declared, and its program must be one of the known device commands.
dry_step() {
  local name="$1"
  shift
  echo "  [$PHASE] $name: $*"
  local a
  for a in "$@"; do
    case "$a" in
      bench/* | tests/* | scripts/*)
        [ -e "$a" ] || problem "$PHASE/$name: $a is missing" ;;
      */test_*_cuda)
        grep -q "qwen35_add_test([a-z_0-9]* $(basename "$a") CUDA" csrc/tests/CMakeLists.txt \
          || problem "$PHASE/$name: ctest executable $(basename "$a") is not declared CUDA in csrc/tests/CMakeLists.txt" ;;
      *_TEST_QUICK=1)
        grep -rq "${a%%=*}" csrc/tests/ || problem "$PHASE/$name: no ctest reads ${a%%=*}" ;;
    esac
  done
  case "$1" in
    "$PY" | bash | env | ctest | compute-sanitizer | timeout) ;;
    *) problem "$PHASE/$name: unexpected program $1" ;;
  esac
}

# find_py312: a Python 3.12 interpreter already on this machine (nothing is downloaded).
find_py312() {
  local c v
  for c in "${PY312:-}" python3.12; do
    [ -n "$c" ] && "$c" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' 2>/dev/null && { echo "$c"; return; }
  done
  if command -v pyenv >/dev/null 2>&1; then
    for v in $(pyenv versions --bare 2>/dev/null | grep -E '^3\.12(\.[0-9]+)?$' | sort -rV); do
      c="$(pyenv root)/versions/$v/bin/python3.12"
      [ -x "$c" ] && "$c" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' 2>/dev/null && { echo "$c"; return; }
    done
  fi
  if command -v uv >/dev/null 2>&1; then
    c=$(uv python find --no-python-downloads 3.12 2>/dev/null) && [ -x "$c" ] && { echo "$c"; return; }
  fi
}

dry_run() {
  DRY=1
  PYTAG=cp312  # the device's python3
  echo "== device check, dry run (nothing is built or run on a GPU)"
  local f
  echo "-- files the phases need, present and not git-ignored (they travel with the tree)"
  local needed=(bench/device_check.sh bench/device_prepare.sh bench/device_carry.py bench/device_wheels.txt
    bench/gdn_bench.py bench/moe_bench.py pyproject.toml CMakeLists.txt csrc/tests/CMakeLists.txt
    csrc/tests/test_gdn_cuda.cpp csrc/tests/test_moe_cuda.cpp csrc/tests/test_attention_cuda.cpp
    csrc/tests/test_nvfp4_dequant_cuda.cpp csrc/tests/test_plugin_cuda.cpp
    tests/conftest.py tests/test_moe_reference.py tests/test_attention_reference.py tests/model_agreement.py
    "${GPU_TESTS[@]}" python/qwen35_trt/__init__.py python/qwen35_trt/ops/gdn_cuda.py
    python/qwen35_trt/ops/moe_cuda.py python/qwen35_trt/ops/attention_cuda.py)
  for f in "${needed[@]}"; do
    if [ ! -e "$f" ]; then
      problem "missing file: $f"
    elif git rev-parse --git-dir >/dev/null 2>&1 && git check-ignore -q "$f"; then
      problem "git-ignored, so it would not travel: $f"
    fi
  done
  local t
  for t in "${CUDA_CTESTS[@]}"; do
    grep -q "qwen35_add_test($t " csrc/tests/CMakeLists.txt || problem "ctest $t is not declared in csrc/tests/CMakeLists.txt"
  done
  grep -q 'QWEN35_PLUGIN_SANITIZERS' CMakeLists.txt || problem "CMakeLists.txt has no QWEN35_PLUGIN_SANITIZERS option"
  grep -q '^minimum-version *= *"build-system.requires"' pyproject.toml \
    || echo "  note: pyproject.toml's minimum-version changed; SKBUILD_MINIMUM_VERSION still overrides it"

  echo "-- shell syntax (bash -n)"
  for f in bench/device_check.sh bench/device_prepare.sh; do
    bash -n "$f" || problem "bash -n $f failed"
  done
  if command -v shellcheck >/dev/null 2>&1; then
    shellcheck -S warning bench/device_check.sh bench/device_prepare.sh || problem "shellcheck warnings (above)"
  fi

  echo "-- the phases' steps"
  local p
  for p in build bench sanitize quick; do
    PHASE=$p
    WORK="$STATE/$p"
    dry_step environment bash -c 'nvidia-smi; nvcc --version'
    dry_step wheels "$PY" bench/device_carry.py install "$CARRY" "$SITE"
    "phase_$p"
  done
  PHASE=dry-run

  echo "-- carried folder $CARRY (bench/device_wheels.txt, MANIFEST.tsv, SHA256SUMS)"
  local out
  if ! out=$("$PY" bench/device_carry.py verify "$CARRY" 2>&1); then
    while IFS= read -r f; do problem "${f#carry: }"; done <<<"$out"
  else
    echo "  $out"
  fi
  local abs_carry
  abs_carry=$(cd "$CARRY" 2>/dev/null && pwd -P || echo "")
  if [ -n "$abs_carry" ]; then
    case "$abs_carry/" in
      "$(pwd -P)"/*)
        git check-ignore -q "$CARRY" || problem "$CARRY is not git-ignored (add it to .gitignore: it must not be committed)" ;;
      *) echo "  note: $CARRY is outside the repository; a device call carries only paths inside it" ;;
    esac
  fi

  echo "-- Python files the phases run: Python 3.12 compatible"
  local pyfiles=(bench/gdn_bench.py bench/moe_bench.py bench/device_carry.py tests/conftest.py
    tests/test_moe_reference.py tests/test_attention_reference.py tests/model_agreement.py "${GPU_TESTS[@]}")
  mapfile -t -O "${#pyfiles[@]}" pyfiles < <(find python/qwen35_trt -name '*.py' | sort)
  local py312
  py312=$(find_py312)
  local checker='
import ast, sys, warnings
REMOVED_312 = {"distutils", "imp", "asynchat", "asyncore", "smtpd"}
bad = 0
for path in sys.argv[1:]:
    src = open(path, encoding="utf-8").read()
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        try:
            compile(src, path, "exec")
            tree = ast.parse(src, path, feature_version=min(sys.version_info[:2], (3, 12)))
        except SyntaxError as e:
            print(f"{path}:{e.lineno}: {e.msg}"); bad += 1; continue
    for x in w:
        print(f"warning {path}: {x.message}")
    for node in ast.walk(tree):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
        for n in names:
            if n.split(".")[0] in REMOVED_312:
                print(f"{path}:{node.lineno}: imports {n}, removed in Python 3.12"); bad += 1
print(f"{len(sys.argv) - 1} files checked with Python {sys.version.split()[0]}")
sys.exit(1 if bad else 0)'
  if [ -n "$py312" ]; then
    echo "  compiling with $py312 ($("$py312" --version 2>&1))"
    "$py312" -c "$checker" "${pyfiles[@]}" | sed 's/^/  /' || problem "Python 3.12 compile errors (above)"
  else
    echo "  no Python 3.12 here (none downloaded): compiling with $("$PY" --version 2>&1) and checking for modules 3.12 removed"
    "$PY" -c "$checker" "${pyfiles[@]}" | sed 's/^/  /' || problem "Python compile errors (above)"
  fi

  echo "-- size of what travels (tree + $CARRY), limit 64 MiB"
  local tree_bytes=0 carry_bytes=0
  if git rev-parse --git-dir >/dev/null 2>&1; then
    tree_bytes=$({ git ls-files -z; git ls-files -z --others --exclude-standard; } | xargs -0 -r stat -c %s 2>/dev/null | awk '{s += $1} END {print s + 0}')
  fi
  [ -d "$CARRY" ] && carry_bytes=$(find "$CARRY" -type f -printf '%s\n' | awk '{s += $1} END {print s + 0}')
  local total=$((tree_bytes + carry_bytes))
  echo "  tree $((tree_bytes >> 10)) KiB + carried $((carry_bytes >> 10)) KiB = $((total >> 20)) MiB"
  [ "$total" -lt $((48 << 20)) ] || problem "tree + carried folder is $((total >> 20)) MiB: keep it under 48 MiB of the 64 MiB limit"

  echo
  if [ "${#PROBLEMS[@]}" -gt 0 ]; then
    echo "dry run: ${#PROBLEMS[@]} problem(s):"
    printf '  - %s\n' "${PROBLEMS[@]}"
    return 1
  fi
  echo "dry run: ok (phases build, bench, sanitize, --quick; carry [\"$CARRY\"])"
}

# --- main -----------------------------------------------------------------------------------------------
MODE="${1:-}"
case "$MODE" in
  --dry-run) dry_run; exit $? ;;
  -h | --help | "") usage; [ -n "$MODE" ]; exit $? ;;
  build | bench | sanitize | --quick | quick | all) ;;
  *) echo "device_check: unknown phase '$MODE' (build, bench, sanitize, --quick, all, --dry-run)" >&2; exit 2 ;;
esac
# DEVICE_CHECK_NO_GPU_OK=1 runs a phase on a CPU machine anyway (to test this script: the build
# runs, the CUDA tests report themselves skipped, the benchmarks fail).
if [ "${DEVICE_CHECK_NO_GPU_OK:-0}" != 1 ] && ! "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  echo "device_check: no CUDA device visible to $PY's torch; on a CPU machine use --dry-run" >&2
  exit 2
fi
OUTDIR="${OUT:-$STATE/out}"
mkdir -p "$OUTDIR" "$STATE"
case "$MODE" in
  build) run_phase build 330 ;;
  bench) run_phase bench 330 ;;
  sanitize) run_phase sanitize 240 ;;
  --quick | quick) run_phase quick 510 ;;
  all) run_phase build 330; run_phase bench 330; run_phase sanitize 240 ;;
esac
exit "$FAILED"
