#!/usr/bin/env bash
# Benchmark the Triton server with NVIDIA genai-perf (and the perf_analyzer it drives) over gRPC,
# the way TensorRT-LLM deployments are usually measured: one streaming run on the decoupled model
# (TTFT, inter-token latency, throughput) and one non-streaming run on the plain-infer model
# (request latency, throughput).
#
#   bash bench/genai_perf.sh [options]          (from the repository root)
#
# By default it makes its own server from the built-in tiny default, like scripts/demo.sh: the
# tiny ModelOpt NVFP4 checkpoint (scripts/make_tiny_checkpoint.py), an engine built from it
# (build_engine.py build), published to a scratch model repository (build_engine.py publish), all
# under build/genai-perf/ so that nothing in checkpoints/, engines/ or triton_repo/ is used or
# changed; tritonserver is started with the launcher and always stopped on exit.
#
# Options:
#   --state FILE          benchmark an already-running server recorded by
#                         'python -m qwen35_trt.serving.launcher start --state FILE' (not stopped)
#   --engine DIR          serve this engine directory instead of building the tiny default
#   --model NAME          streaming (decoupled) model (default: qwen35)
#   --infer-model NAME    non-streaming model (default: NAME_infer; the decoupled model also
#                         answers non-streaming requests with one response)
#   --tokenizer DIR       Hugging Face tokenizer directory for genai-perf's token counts
#                         (default: the served engine directory, which holds tokenizer.json)
#   --concurrency N       requests in flight (default: 4)
#   --request-count N     measured requests per run (default: 40)
#   --warmup N            warm-up requests per run, not measured (default: 4)
#   --input-tokens N      synthetic prompt length in tokens (default: 64, stddev 0)
#   --output-tokens N     max_tokens per request (default: 16, stddev 0); prompt + output must
#                         stay within the server's context limit (1024 by default)
#   --seed N              seed of genai-perf's synthetic prompts and of the random_seed input
#                         (default: 7)
#   --no-deterministic    do not pass --output-tokens-mean-deterministic (which sends
#                         min_length = max_tokens, so every request generates exactly N tokens)
#   --no-seed             do not send the random_seed input (--extra-inputs random_seed:N)
#   --skip-streaming      only the non-streaming run
#   --skip-non-streaming  only the streaming run
#   --setup-only          set up and check the tool environment, then exit
#   -h, --help            this text
#
# min_length (INT32) and random_seed (UINT64) must be declared by the model (tensorrtllm_backend
# contract); against a model that lacks them perf_analyzer stops with "The input or output
# 'min_length' is not found in the model configuration" -- use --no-deterministic / --no-seed.
#
# What it installs, once (idempotent; redone when the pins below change), all git-ignored:
#   build/genai-perf/venv/    a venv from python3 (3.11; GENAI_PERF_PYTHON overrides) holding
#                             genai-perf, tritonclient[all] (its wheel ships the perf_analyzer
#                             binary) and nvidia-cuda-runtime-cu12 (libcudart.so.12, which
#                             perf_analyzer links against even without a GPU), with every
#                             dependency pinned; from PyPI
#   build/genai-perf/libb64/  libb64.so.0d from the Debian package libb64-0d, unpacked without
#                             root (apt-get download + dpkg -x); skipped if the system has it
# Outputs: build/genai-perf/artifacts/{streaming,non-streaming}/ (genai-perf's inputs.json,
# profile exports, CSV/JSON) and a .log of each run next to them; the scratch server's log is
# build/genai-perf/server.log. Exit status is non-zero if setup or any run failed.
set -euo pipefail
CALLER_PWD=$PWD   # relative paths given as options are relative to where the script was called
cd "$(dirname "$0")/.."
ROOT=$PWD

# ---- pins -------------------------------------------------------------------------------------
GENAI_PERF_PIN="genai-perf==0.0.16"
# perf_analyzer ships inside tritonclient[all] manylinux wheels up to 2.60; 2.51's binary is the
# one whose glibc needs Debian 12 meets.
TRITONCLIENT_PIN="tritonclient[all]==2.51.0"
CUDART_PIN="nvidia-cuda-runtime-cu12==12.6.77"
LIBB64_DEB="libb64-0d=1.2-5+b1"   # Debian 12 (bookworm) amd64
# genai-perf leaves its dependencies unpinned; these are the versions it was verified with
# (Python 3.11), used as pip constraints so a later release cannot change the tool under us.
LOCK="aiohappyeyeballs==2.7.1 aiohttp==3.14.5 aiosignal==1.4.0 alembic==1.20.1 annotated-doc==0.0.7
annotated-types==0.8.0 anyio==4.16.0 attrs==26.1.0 brotli==1.2.1 certifi==2026.10.19.post1
cffi==2.1.1 charset-normalizer==3.5.3 choreographer==1.4.0 click==8.5.1 colorlog==6.12.0
cramjam==2.14.0 cuda-bindings==13.4.4 cuda-core==1.2.2 cuda-pathfinder==1.9.1 cuda-python==13.4.4
fastparquet==2026.9.0 filelock==4.3.1 formulaic==1.2.2 frozenlist==1.8.0 fsspec==2026.9.0
gevent==26.9.0 geventhttpclient==2.0.2 greenlet==3.5.6 grpcio==1.85.3 h11==0.16.0 hf-xet==1.8.0
httpcore2==2.16.2 httpx2==2.16.2 huggingface_hub==2.4.0 idna==3.20 iniconfig==2.3.1
interface_meta==2.0.1 Jinja2==3.1.6 kaleido==1.5.1 logistro==2.0.1 Mako==1.4.3
markdown-it-py==4.3.0 MarkupSafe==3.0.4 mdurl==0.1.2 multidict==7.2.1 narwhals==2.29.0
numpy==1.26.4 optuna==3.6.1 orjson==3.13.0 packaging==26.4 pandas==3.0.6 patsy==1.0.3
perf_analyzer==0.1.0 pillow==13.0.0 platformdirs==4.14.9 plotly==7.1.0 pluggy==1.7.0
propcache==0.5.4 protobuf==4.25.9 pyarrow==26.0.1 pycparser==3.12 pydantic==2.14.4
pydantic_core==2.50.5 Pygments==2.21.0 pytest==9.2.0 pytest-mock==3.17.0 python-dateutil==4.0.0
python-rapidjson==1.25 PyYAML==6.0.4 regex==2026.11.19 requests==2.34.2 responses==0.26.3
rich==15.0.0 safetensors==0.8.0 scipy==1.17.1 shellingham==1.5.4 simplejson==4.3.0 six==1.17.0
soundfile==0.14.0 SQLAlchemy==2.1.9 statsmodels==0.15.0 tokenizers==0.23.3 tqdm==4.70.1
transformers==5.24.0 truststore==0.10.5 typer==0.29.2 typing-inspection==0.4.5
typing_extensions==4.16.0 tzdata==2026.6 urllib3==2.8.0 wrapt==2.5.2 yarl==1.25.1 zope.event==6.2
zope.interface==8.7"
# (perf_analyzer==0.1.0 above is an empty PyPI placeholder genai-perf depends on; the real binary
# comes from tritonclient.)

# ---- options ----------------------------------------------------------------------------------
usage() { sed -n '2,/^set -euo pipefail/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
die() { echo "error: $*" >&2; exit 1; }
need_int() { [[ "$2" =~ ^[0-9]+$ ]] && [ "$2" -ge "${3:-1}" ] || die "$1 needs an integer >= ${3:-1}, got '$2'"; }

STATE="" ENGINE="" MODEL=qwen35 INFER_MODEL="" TOKENIZER=""
CONCURRENCY=4 REQUESTS=40 WARMUP=4 ISL=64 OSL=16 SEED=7
DETERMINISTIC=1 SEND_SEED=1 RUN_STREAMING=1 RUN_NON_STREAMING=1 SETUP_ONLY=0
while [ $# -gt 0 ]; do
    case "$1" in
        --state|--engine|--model|--infer-model|--tokenizer|--concurrency|--request-count|--warmup|--input-tokens|--output-tokens|--seed)
            [ $# -ge 2 ] || die "$1 needs a value"
            case "$1" in
                --state) STATE=$2 ;;
                --engine) ENGINE=$2 ;;
                --model) MODEL=$2 ;;
                --infer-model) INFER_MODEL=$2 ;;
                --tokenizer) TOKENIZER=$2 ;;
                --concurrency) need_int "$1" "$2"; CONCURRENCY=$2 ;;
                --request-count) need_int "$1" "$2"; REQUESTS=$2 ;;
                --warmup) need_int "$1" "$2" 0; WARMUP=$2 ;;
                --input-tokens) need_int "$1" "$2"; ISL=$2 ;;
                --output-tokens) need_int "$1" "$2"; OSL=$2 ;;
                --seed) need_int "$1" "$2" 0; SEED=$2 ;;
            esac
            shift 2 ;;
        --no-deterministic) DETERMINISTIC=0; shift ;;
        --no-seed) SEND_SEED=0; shift ;;
        --skip-streaming) RUN_STREAMING=0; shift ;;
        --skip-non-streaming) RUN_NON_STREAMING=0; shift ;;
        --setup-only) SETUP_ONLY=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown option '$1' (see --help)" ;;
    esac
done
INFER_MODEL=${INFER_MODEL:-${MODEL}_infer}
abspath() { case "$1" in ""|/*) echo "$1" ;; *) echo "$CALLER_PWD/$1" ;; esac; }
STATE=$(abspath "$STATE") ENGINE=$(abspath "$ENGINE") TOKENIZER=$(abspath "$TOKENIZER")
[ -z "$STATE" ] || [ -z "$ENGINE" ] || die "--state and --engine exclude each other (--engine starts a server)"
[ "$REQUESTS" -ge "$CONCURRENCY" ] || die "--request-count ($REQUESTS) must be at least --concurrency ($CONCURRENCY)"

WORK=$ROOT/build/genai-perf
VENV=$WORK/venv
ART=$WORK/artifacts
mkdir -p "$WORK"
# one run at a time: runs share the scratch server state and the artifact folders
exec 9>"$WORK/.lock"
flock -n 9 || die "another bench/genai_perf.sh is running (lock $WORK/.lock)"

# ---- tool environment -------------------------------------------------------------------------
SPEC="$GENAI_PERF_PIN $TRITONCLIENT_PIN $CUDART_PIN | $(echo $LOCK)"
setup_venv() {
    if [ -f "$VENV/.ready" ] && [ "$(cat "$VENV/.ready")" = "$SPEC" ] && [ -x "$VENV/bin/genai-perf" ]; then
        return
    fi
    local py=${GENAI_PERF_PYTHON:-python3}
    command -v "$py" >/dev/null || die "$py not found (set GENAI_PERF_PYTHON to a Python 3.11)"
    # the dependency pins above were resolved for 3.11 (numpy 1.26 has no wheels past 3.12)
    "$py" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' \
        || die "$py is Python $("$py" -c 'import sys; print(sys.version.split()[0])'); the pinned tool env needs 3.11 (set GENAI_PERF_PYTHON)"
    echo "== setting up $VENV ($GENAI_PERF_PIN, $TRITONCLIENT_PIN, $CUDART_PIN; pip log $WORK/pip.log)"
    rm -rf "$VENV"
    "$py" -m venv "$VENV"
    printf '%s\n' $LOCK >"$WORK/constraints.txt"
    if ! "$VENV/bin/python" -m pip install --disable-pip-version-check --no-input \
            -c "$WORK/constraints.txt" "$GENAI_PERF_PIN" "$TRITONCLIENT_PIN" "$CUDART_PIN" >"$WORK/pip.log" 2>&1; then
        grep -v "is ignored: it is neither a file nor a directory" "$WORK/pip.log" | tail -25 >&2
        die "pip could not install the tool env (full log $WORK/pip.log); PyPI must be reachable"
    fi
    echo "$SPEC" >"$VENV/.ready"
}

LIBB64_DIR=""
setup_libb64() {
    # a system-wide libb64 (apt-get install libb64-0d) serves as well
    # (no grep -q: it would close the pipe early and pipefail would turn that into a failure)
    if /sbin/ldconfig -p 2>/dev/null | grep 'libb64\.so\.0d ' >/dev/null; then
        return
    fi
    local lib
    lib=$(find "$WORK/libb64" -name libb64.so.0d 2>/dev/null | head -n1 || true)
    if [ -z "$lib" ]; then
        echo "== fetching libb64.so.0d (Debian package $LIBB64_DEB, unpacked into $WORK/libb64, no root)"
        local debs=$WORK/debs
        rm -rf "$debs" "$WORK/libb64"
        mkdir -p "$debs"
        # apt-get download warns when run as root that its _apt sandbox user cannot write here
        if ! (cd "$debs" && apt-get download "$LIBB64_DEB" 2>&1 | grep -v "unsandboxed as root" >&2; exit "${PIPESTATUS[0]}") \
                || ! dpkg -x "$debs"/libb64-0d_*.deb "$WORK/libb64"; then
            die "perf_analyzer needs libb64.so.0d from the Debian package libb64-0d, and 'apt-get download $LIBB64_DEB' + 'dpkg -x' failed; install it system-wide (apt-get install libb64-0d) and rerun"
        fi
        lib=$(find "$WORK/libb64" -name libb64.so.0d | head -n1 || true)
        [ -n "$lib" ] || die "the libb64-0d package unpacked into $WORK/libb64 holds no libb64.so.0d"
    fi
    LIBB64_DIR=$(dirname "$lib")
}

setup_venv
setup_libb64
CUDART_DIR=$(echo "$VENV"/lib/python3*/site-packages/nvidia/cuda_runtime/lib)
[ -f "$CUDART_DIR/libcudart.so.12" ] || die "libcudart.so.12 missing from $CUDART_DIR ($CUDART_PIN); delete $VENV and rerun"
# genai-perf runs perf_analyzer from PATH; only this tool env sees the extra library folders
TOOL_LD_PATH="${LIBB64_DIR:+$LIBB64_DIR:}$CUDART_DIR${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
tool() { env PATH="$VENV/bin:$PATH" LD_LIBRARY_PATH="$TOOL_LD_PATH" "$@"; }
if ! PA_VERSION=$(tool perf_analyzer --version 2>&1); then
    echo "$PA_VERSION" >&2
    tool ldd "$VENV/bin/perf_analyzer" 2>&1 | grep "not found" >&2 || true
    die "$VENV/bin/perf_analyzer does not run (from $TRITONCLIENT_PIN; needs glibc >= 2.34, libb64.so.0d and libcudart.so.12)"
fi
echo "== tools: genai-perf $(tool "$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("genai-perf"))'), $PA_VERSION"
if [ "$SETUP_ONLY" = 1 ]; then exit 0; fi

# ---- server -----------------------------------------------------------------------------------
PY=$ROOT/.venv/bin/python
json_field() { "$VENV/bin/python" -c 'import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"; }
STARTED_STATE=""
cleanup() {
    if [ -n "$STARTED_STATE" ] && [ -f "$STARTED_STATE" ]; then
        "$PY" -m qwen35_trt.serving.launcher stop --state "$STARTED_STATE" || true
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM   # so that the EXIT trap stops the server on Ctrl-C too

if [ -n "$STATE" ]; then
    [ -f "$STATE" ] || die "--state $STATE: no such file (start a server with 'python -m qwen35_trt.serving.launcher start --state FILE')"
    SERVER_STATE=$STATE
else
    "$PY" -c "import qwen35_trt._C" 2>/dev/null || die "the project venv is not set up: run 'bash scripts/setup.sh' first"
    SERVER_STATE=$WORK/server.json
    # a server left by an earlier run that was killed outright: stop it if its PID still is that
    # tritonserver (a reused PID belongs to someone else)
    if [ -f "$SERVER_STATE" ]; then
        OLD_PID=$(json_field "$SERVER_STATE" pid 2>/dev/null || true)
        if [ -n "$OLD_PID" ] && tr '\0' ' ' <"/proc/$OLD_PID/cmdline" 2>/dev/null | grep -F -- "--model-repository=$WORK/repo" >/dev/null; then
            "$PY" -m qwen35_trt.serving.launcher stop --state "$SERVER_STATE"
        fi
        rm -f "$SERVER_STATE"
    fi
    if [ -z "$ENGINE" ]; then
        CKPT=$WORK/tiny-nvfp4
        ENGINE=$WORK/engine
        if [ ! -f "$CKPT/config.json" ]; then
            echo "== making the tiny ModelOpt NVFP4 checkpoint in $CKPT"
            "$PY" scripts/make_tiny_checkpoint.py "$CKPT" 2>&1 | grep -v -i -E "warn|deprecat|^\s*$" || true
            [ -f "$CKPT/config.json" ] || die "scripts/make_tiny_checkpoint.py wrote no $CKPT/config.json"
        fi
        # rebuilt every run (under a second) so that it always matches the code being served
        echo "== build_engine.py build $CKPT --output $ENGINE"
        "$PY" build_engine.py build "$CKPT" --output "$ENGINE" --target sm_100 --force --quiet
    fi
    REPO=$WORK/repo
    rm -rf "$REPO"
    echo "== build_engine.py publish $ENGINE --repo $REPO --model-name $MODEL"
    "$PY" build_engine.py publish "$ENGINE" --repo "$REPO" --model-name "$MODEL"
    "$PY" -m qwen35_trt.serving.launcher prepare >/dev/null
    echo "== starting tritonserver (log $WORK/server.log)"
    STARTED_STATE=$SERVER_STATE
    "$PY" -m qwen35_trt.serving.launcher start --repo "$REPO" --state "$SERVER_STATE"
fi
GRPC_URL=127.0.0.1:$(json_field "$SERVER_STATE" grpc_port)
HTTP_URL=127.0.0.1:$(json_field "$SERVER_STATE" http_port)
"$VENV/bin/python" - "$HTTP_URL" <<'EOF' || die "no ready server at $HTTP_URL (recorded in $SERVER_STATE)"
import sys, urllib.request
with urllib.request.urlopen(f"http://{sys.argv[1]}/v2/health/ready", timeout=5) as r:
    sys.exit(r.status != 200)
EOF

if [ -z "$TOKENIZER" ]; then
    # the engine the highest published version of MODEL serves (publish records it in serving.json;
    # a relative path is an engine copied into the version folder)
    TOKENIZER=$("$VENV/bin/python" - "$(json_field "$SERVER_STATE" repo)" "$MODEL" <<'EOF'
import json, sys
from pathlib import Path
model = Path(sys.argv[1]) / sys.argv[2]
versions = sorted((int(p.name), p) for p in model.glob("[1-9]*") if p.name.isdigit() and (p / "serving.json").is_file())
if not versions:
    sys.exit(f"{model}: no published version with a serving.json; pass --tokenizer DIR")
version_dir = versions[-1][1]
print((version_dir / json.loads((version_dir / "serving.json").read_text())["engine_dir"]).resolve())
EOF
    ) || die "could not find the served engine's tokenizer"
fi
[ -f "$TOKENIZER/tokenizer.json" ] || die "--tokenizer $TOKENIZER: no tokenizer.json there"

# ---- genai-perf runs --------------------------------------------------------------------------
# The tokenizer is a local folder; nothing may be downloaded.
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
# rich draws its tables 80 columns wide when not writing to a terminal, wrapping every label
export COLUMNS=${COLUMNS:-150}
COMMON=(--endpoint-type kserve --backend tensorrtllm -u "$GRPC_URL"
        --concurrency "$CONCURRENCY" --request-count "$REQUESTS" --warmup-request-count "$WARMUP"
        --synthetic-input-tokens-mean "$ISL" --synthetic-input-tokens-stddev 0
        --output-tokens-mean "$OSL" --output-tokens-stddev 0
        --random-seed "$SEED" --tokenizer "$TOKENIZER")
if [ "$DETERMINISTIC" = 1 ]; then COMMON+=(--output-tokens-mean-deterministic); fi
if [ "$SEND_SEED" = 1 ]; then COMMON+=(--extra-inputs "random_seed:$SEED"); fi

declare -a RUNS=() FAILED_RUNS=()
profile() {  # profile LABEL MODEL [extra genai-perf args]: one run, its output also in LABEL.log
    local label=$1 model=$2
    shift 2
    local dir=$ART/$label
    rm -rf "$dir" "$dir.log"
    mkdir -p "$dir"
    local cmd=(genai-perf profile -m "$model" "${COMMON[@]}" "$@" --artifact-dir "$dir")
    echo
    echo "== $label: ${cmd[*]}"
    # from inside build/genai-perf, so any file genai-perf writes by default lands there
    if (cd "$WORK" && tool "${cmd[@]}" 2>&1 | tee "$dir.log"; exit "${PIPESTATUS[0]}"); then
        RUNS+=("$label $model $dir")
    else
        FAILED_RUNS+=("$label")
        RUNS+=("$label $model -")
        echo "== $label: genai-perf failed (log $dir.log)" >&2
    fi
}
# genai-perf's kserve client always talks gRPC streaming to Triton; --streaming adds the stream
# input, so the decoupled model sends one response per token.
if [ "$RUN_STREAMING" = 1 ]; then profile streaming "$MODEL" --streaming; fi
if [ "$RUN_NON_STREAMING" = 1 ]; then profile non-streaming "$INFER_MODEL"; fi

# ---- summary ----------------------------------------------------------------------------------
echo
echo "== summary: concurrency $CONCURRENCY, $REQUESTS requests (+$WARMUP warm-up), input $ISL tokens, max_tokens $OSL, deterministic $([ "$DETERMINISTIC" = 1 ] && echo yes || echo no), random_seed $([ "$SEND_SEED" = 1 ] && echo "$SEED" || echo "not sent"), server $GRPC_URL"
"$VENV/bin/python" - "${RUNS[@]}" <<'EOF'
import glob, json, sys

def stat(d, metric, key):
    v = d.get(metric, {}).get(key)
    return "-" if v is None else f"{v:.1f}"

rows = [("run", "model", "req/s", "out tok/s", "TTFT p50", "TTFT p99", "ITL p50", "ITL p99", "latency p50", "latency p99", "OSL avg")]
for run in sys.argv[1:]:
    label, model, path = run.split(" ", 2)
    files = glob.glob(f"{path}/*/profile_export_genai_perf.json") if path != "-" else []
    if not files:
        rows.append((label, model, "FAILED") + ("",) * 8)
        continue
    d = json.load(open(files[0]))
    if label != "streaming":  # one response per request: genai-perf's TTFT is the whole latency
        d = {k: v for k, v in d.items() if k not in ("time_to_first_token", "inter_token_latency")}
    rows.append((label, model, stat(d, "request_throughput", "avg"), stat(d, "output_token_throughput", "avg"),
                 stat(d, "time_to_first_token", "p50"), stat(d, "time_to_first_token", "p99"),
                 stat(d, "inter_token_latency", "p50"), stat(d, "inter_token_latency", "p99"),
                 stat(d, "request_latency", "p50"), stat(d, "request_latency", "p99"),
                 stat(d, "output_sequence_length", "avg")))
widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
for n, r in enumerate(rows):
    print("  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
    if n == 0:
        print("  ".join("-" * w for w in widths))
print("(latencies in ms; '-': not reported for that run; OSL is genai-perf's re-tokenized count of the returned text)")
EOF
echo "artifacts: $ART"
if [ ${#FAILED_RUNS[@]} -gt 0 ]; then
    die "genai-perf failed for: ${FAILED_RUNS[*]} (see the output above)"
fi
