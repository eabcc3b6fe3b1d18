#!/usr/bin/env bash
# Builds the self-contained wheel mtasts-VERSION-py3-none-manylinux_2_X_ARCH.whl (`make wheel`):
# the package with a stripped copy of the release libmtasts.so inside it (setup.py's build step).
#
#   bindings/python/build-wheel.sh LIBMTASTS_SO OUT_DIR
#
# The platform tag is read off the library: it may need only libraries that every manylinux
# system has (glibc's, libgcc_s), and X is the newest GLIBC_2.X symbol version it uses. Anything
# else is an error, not a wheel that would fail to load elsewhere.
set -euo pipefail
if [[ $# -ne 2 ]]; then
    echo "usage: $0 LIBMTASTS_SO OUT_DIR" >&2
    exit 2
fi
so=$1 out=$2
here=$(cd "$(dirname "$0")" && pwd)
[[ -f $so ]] || { echo "build-wheel: $so is missing: run cargo build --release -p mtasts" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/mtasts-wheel.XXXXXX")
trap 'rm -rf "$work"' EXIT
cp "$so" "$work/libmtasts.so"
strip --strip-unneeded --remove-section=.comment "$work/libmtasts.so"

needed=$(readelf -d "$work/libmtasts.so" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
echo "NEEDED:" $needed
for lib in $needed; do
    case $lib in
        libc.so.6 | libm.so.6 | libgcc_s.so.1 | libpthread.so.0 | libdl.so.2 | librt.so.1 | ld-linux-*.so.*) ;;
        *) echo "build-wheel: libmtasts.so needs $lib, which manylinux does not promise" >&2; exit 1 ;;
    esac
done
glibc=$(readelf --version-info --wide "$work/libmtasts.so" | grep -o 'GLIBC_2\.[0-9]*' |
    sed 's/GLIBC_2\.//' | sort -n | tail -1)
[[ -n $glibc ]] || { echo "build-wheel: no GLIBC symbol version found" >&2; exit 1; }
platform=manylinux_2_${glibc}_$(uname -m)
echo "platform: $platform (newest symbol version GLIBC_2.$glibc)"

# From a copy: an in-tree build leaves build/ and *.egg-info behind.
mkdir "$work/src"
cp -r "$here/pyproject.toml" "$here/setup.py" "$here/README.md" "$here/mtasts" "$work/src/"
mkdir -p "$out"
MTASTS_WHEEL_LIBRARY=$work/libmtasts.so MTASTS_WHEEL_PLATFORM=$platform \
    python3 -m pip wheel --quiet --no-deps --disable-pip-version-check -w "$out" "$work/src"
ls "$out"/mtasts-*-py3-none-"$platform".whl
