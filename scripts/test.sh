#!/usr/bin/env bash
# Run the C++ tests (ctest) and the Python tests (pytest). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
    echo "no .venv: run scripts/setup.sh (or scripts/demo.sh) first" >&2
    exit 2
fi
build_dir=$(dirname "$(ls -d build/*/CTestTestfile.cmake | head -n 1)")
echo "== ctest ($build_dir)"
.venv/bin/ctest --test-dir "$build_dir" --output-on-failure
echo "== pytest"
set +e
.venv/bin/python -m pytest "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
    echo "pytest collected no tests: treating as a failure" >&2
    exit 1
fi
exit "$rc"
