#!/usr/bin/env bash
# The Python wheel as a user meets it (.ci/run):
#
#   1. `make wheel` from the release build: one platform wheel carrying libmtasts.so, whose
#      dynamic section needs only glibc and libgcc_s; `twine check` on it;
#   2. `pip install` of the wheel into a fresh venv, run from a directory with no target/ and no
#      MTASTS_LIBRARY: `import mtasts` loads the library inside the installed package;
#   3. the Python test suite (bindings/python/tests, copied into a tree without target/) against
#      the installed package and its library.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
target=${CARGO_TARGET_DIR:-$root/target}
case $target in /*) ;; *) target=$root/$target ;; esac
version=$(awk -F'"' '/^\[/ { s = $0 } s == "[package]" && /^version[ \t]*=/ { print $2; exit }' Cargo.toml)

tmp=$(mktemp -d "${TMPDIR:-/tmp}/mtasts-wheel-test.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

echo "== make wheel"
make --no-print-directory wheel WHEEL_DIR="$tmp/wheels"
wheels=("$tmp"/wheels/mtasts-"$version"-py3-none-manylinux_*.whl)
[[ ${#wheels[@]} == 1 && -f ${wheels[0]} ]] || { echo "expected one wheel, got: ${wheels[*]}"; exit 1; }
wheel=${wheels[0]}
# The listing goes through a file: `grep -q` may exit at its match while zipfile still writes,
# and under pipefail the pipe's SIGPIPE would fail the check.
python3 -m zipfile -l "$wheel" > "$tmp/listing"
cat "$tmp/listing"
grep -q '^mtasts/libmtasts.so ' "$tmp/listing" ||
    { echo "the wheel does not carry mtasts/libmtasts.so"; exit 1; }

echo "== fresh venv, pip install the wheel (and pytest, twine)"
python3 -m venv "$tmp/venv"
py=$tmp/venv/bin/python
"$py" -m pip install --quiet --disable-pip-version-check "$wheel" pytest twine
"$py" -m pip list --format=freeze | grep -i -E '^(mtasts|pytest|twine)=='

echo "== twine check"
"$py" -m twine check --strict "$wheel"

echo "== import mtasts without MTASTS_LIBRARY, from a directory without target/"
mkdir "$tmp/elsewhere"
site=$(cd "$tmp/elsewhere" && env -u MTASTS_LIBRARY "$py" -c 'import mtasts, os; print(os.path.dirname(mtasts.__file__))')
loaded=$(cd "$tmp/elsewhere" && env -u MTASTS_LIBRARY "$py" -c 'import mtasts; print(mtasts.library_path, mtasts.library_version)')
echo "package: $site; loaded: $loaded"
[[ $loaded == "$site/libmtasts.so $version" ]] ||
    { echo "import mtasts did not load the library inside the installed package"; exit 1; }
readelf -d "$site/libmtasts.so" | grep -E 'NEEDED|SONAME'

echo "== pytest (the installed package and its library; the tests from a tree without target/)"
# conftest.py finds include/mtasts.h and Cargo.toml three levels up from the tests.
tree=$tmp/tree
mkdir -p "$tree/bindings/python" "$tree/include"
cp -r bindings/python/tests "$tree/bindings/python/tests"
cp include/mtasts.h "$tree/include/"
cp Cargo.toml "$tree/"
[[ ! -e $tree/target ]]
status=0
(cd "$tree" && MTASTS_LIBRARY="$site/libmtasts.so" MTASTS_FIXTURE="$target/debug/mtasts-fixture" \
    "$py" -m pytest -v -p no:cacheprovider bindings/python/tests) || status=$?
if [[ $status == 5 ]]; then
    echo "pytest collected no tests: that is a failure here" >&2
    exit 1
fi
exit "$status"
