#!/usr/bin/env bash
# The main job on a built-in small default: set up (once), make a real ModelOpt NVFP4 checkpoint
# of a tiny Qwen3.5 MoE model, inspect it, and build its engine directory.
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
