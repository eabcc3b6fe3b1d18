#!/usr/bin/env bash
# Tests the Python binding: builds the library and the fixture servers (debug), installs the
# package into a throw-away venv, then runs its pytest suite and mypy --strict on it.
#
# Run from the repository root (CI: `bash bindings/python/run-tests.sh`). Needs python3 with venv
# and pip, and PyPI for setuptools, pytest and mypy.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
target=${CARGO_TARGET_DIR:-$root/target}

echo "== build (debug): libmtasts.so and mtasts-fixture"
cargo build -p mtasts -p mtasts-fixtures

echo "== venv and install"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 -m venv "$work/venv"
py="$work/venv/bin/python"
# Installs ./bindings/python from a copy: an in-tree build leaves build/ behind, and a stale
# build/lib would put since-deleted modules into later wheels.
mkdir "$work/src"
cp -r bindings/python/pyproject.toml bindings/python/README.md bindings/python/mtasts "$work/src/"
"$py" -m pip install --quiet "$work/src" pytest mypy
"$py" -m pip list --format=freeze | grep -i -E '^(mtasts|pytest|mypy)=='

export MTASTS_LIBRARY="$target/debug/libmtasts.so"
export MTASTS_FIXTURE="$target/debug/mtasts-fixture"

echo "== pytest"
status=0
"$py" -m pytest -v -p no:cacheprovider bindings/python/tests || status=$?
if [ "$status" -eq 5 ]; then
    echo "pytest collected no tests: that is a failure here" >&2
    exit 1
elif [ "$status" -ne 0 ]; then
    exit "$status"
fi

echo "== mypy --strict (the package and its tests)"
"$py" -m mypy --strict --config-file bindings/python/pyproject.toml --cache-dir "$work/mypy-cache" \
    bindings/python/mtasts bindings/python/tests
