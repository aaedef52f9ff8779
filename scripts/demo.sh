#!/usr/bin/env bash
# The main job on a built-in small default: set up (once), make a real ModelOpt NVFP4 checkpoint
# of a tiny Qwen3.5 MoE model, inspect it, build its engine directory, generate with the CPU
# reference model, build an sm_120 engine and its TensorRT plan with TensorRT-RTX (no GPU needed),
# generate with that engine's step graph (model.onnx) on the CPU, publish the first engine to a Triton model repository, start
# tritonserver on 127.0.0.1, stream one gRPC request, and stop the server.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] && .venv/bin/python -c "import qwen35_trt._C" 2>/dev/null || bash scripts/setup.sh
PY=.venv/bin/python
CKPT=${CKPT:-checkpoints/tiny-nvfp4}
ENGINE=${ENGINE:-engines/tiny-nvfp4}
TARGET=${TARGET:-sm_100}
if [ ! -f "$CKPT/config.json" ]; then
    echo "== making the tiny ModelOpt NVFP4 checkpoint in $CKPT"
    "$PY" scripts/make_tiny_checkpoint.py "$CKPT" 2>&1 | grep -v -i -E "warn|deprecat|^\s*$" || true
fi
echo "== build_engine.py inspect $CKPT"
"$PY" build_engine.py inspect "$CKPT"
echo "== build_engine.py build $CKPT --output $ENGINE --target $TARGET --force"
"$PY" build_engine.py build "$CKPT" --output "$ENGINE" --target "$TARGET" --force
echo "== python -m qwen35_trt generate $ENGINE --prompt 'The quick brown fox' --max-new-tokens 24"
"$PY" -m qwen35_trt generate "$ENGINE" --prompt "The quick brown fox" --max-new-tokens 24
PLAN_ENGINE=${PLAN_ENGINE:-engines/tiny-nvfp4-sm120}
echo "== build_engine.py build $CKPT --output $PLAN_ENGINE --target sm_120; build_engine.py plan $PLAN_ENGINE --target sm_120"
"$PY" build_engine.py build "$CKPT" --output "$PLAN_ENGINE" --target sm_120 --force --quiet >/dev/null
"$PY" build_engine.py plan "$PLAN_ENGINE" --target sm_120
# sm_120 computes W4A16 like the CPU model, so its step graph gives the same text as above (an
# sm_100 graph quantizes activations to FP4 where the checkpoint has input scales, as Blackwell does).
echo "== its step graph on the CPU: python -m qwen35_trt generate $PLAN_ENGINE --executor onnx (same text as above)"
"$PY" -m qwen35_trt generate "$PLAN_ENGINE" --prompt "The quick brown fox" --max-new-tokens 24 --executor onnx
REPO=${REPO:-triton_repo}
STATE=build/triton/server.json
echo "== build_engine.py publish $ENGINE --repo $REPO"
"$PY" build_engine.py publish "$ENGINE" --repo "$REPO"
"$PY" -m qwen35_trt.serving.launcher prepare >/dev/null
echo "== starting tritonserver on 127.0.0.1 (log ${STATE%.json}.log)"
"$PY" -m qwen35_trt.serving.launcher start --repo "$REPO" --state "$STATE"
trap '"$PY" -m qwen35_trt.serving.launcher stop --state "$STATE"' EXIT
echo "== one streaming gRPC request (tritonclient)"
"$PY" -m qwen35_trt.serving.client --state "$STATE" --max-tokens 24 "Once upon a time"
