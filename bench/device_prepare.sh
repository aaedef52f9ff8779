#!/usr/bin/env bash
# Fetch, on this (CPU, networked) machine, the wheels a lent GPU machine needs and cannot download:
# exactly the versions pinned in bench/device_wheels.txt, into one git-ignored folder (.carry/ by
# default) that every device call names in its carry list. Writes .carry/MANIFEST.tsv (group,
# distribution, version, import name, kind, file, bytes, sha256) and .carry/SHA256SUMS.
#
#   bash bench/device_prepare.sh [DIR]        (DIR default: .carry; CARRY_DIR works too)
#
# Each wheel comes from `pip download --no-deps --only-binary=:all: --python-version 3.12`. A
# "pure" pin must resolve to a py3-none-any wheel, numpy (kind cp312) to a CPython 3.12 manylinux
# x86_64 wheel: anything else is refused and the folder is left as it was. The new set is staged
# and swapped in whole, so a failed run never leaves a half-filled folder. Ends with the same check
# as `bash bench/device_check.sh --dry-run` does for the carried folder.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
DIR="${1:-${CARRY_DIR:-.carry}}"
PY="${PYTHON:-python3}"
HELPER=bench/device_carry.py
# The device image's numpy wheel tags (pip matches manylinux_2_N exactly: name the usual N).
PLATFORMS=(--implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64
           --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)

STAGE="$(mktemp -d "${TMPDIR:-/tmp}/carry.XXXXXX")"
trap 'rm -rf "$STAGE"' EXIT

# group dist version import kind, comments and blank lines dropped
grep -v '^[[:space:]]*\(#\|$\)' bench/device_wheels.txt | while read -r group dist version _import kind; do
  one="$STAGE/one"
  rm -rf "$one" && mkdir -p "$one"
  args=(--no-deps --only-binary=:all: --python-version 3.12 -d "$one")
  [ "$kind" = cp312 ] && args+=("${PLATFORMS[@]}")
  echo "== $dist==$version ($group, $kind)"
  if ! "$PY" -m pip download -q --disable-pip-version-check "${args[@]}" "$dist==$version" 2> >(grep -v '^WARNING: Location' >&2); then
    echo "device_prepare: pip could not download $dist==$version" >&2
    exit 1
  fi
  n=$(find "$one" -name '*.whl' | wc -l)
  if [ "$n" -ne 1 ]; then
    echo "device_prepare: expected one wheel for $dist==$version, got $n: $(ls "$one")" >&2
    exit 1
  fi
  wheel="$(find "$one" -name '*.whl')"
  "$PY" "$HELPER" check-file "$kind" "$wheel" || exit 1
  mv "$wheel" "$STAGE/"
done
rm -rf "$STAGE/one"

"$PY" "$HELPER" manifest "$STAGE"
# Swap the staged set in; nothing else lives in the folder.
rm -rf "$DIR"
mkdir -p "$(dirname "$DIR")"
cp -r "$STAGE" "$DIR"
chmod -R a+rX "$DIR"
echo
(column -t -s $'\t' "$DIR/MANIFEST.tsv" 2>/dev/null || cat "$DIR/MANIFEST.tsv") | cut -c1-140
"$PY" "$HELPER" verify "$DIR"
