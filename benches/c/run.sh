#!/usr/bin/env bash
# Builds the release library and benches/c/bench_check.c, starts the fixtures (DNSSEC-signed
# zones; dane.test has a DANE-EE record for its MX), and runs the bench: the cached checks from C,
# MTA-STS alone and with DANE, medians side by side. Not run by CI (timings need a quiet machine).
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build -q --release -p mtasts
cargo build -q -p mtasts-fixtures
. fixtures/start.sh
start_fixture
# The baseline engine: the same configuration without DANE.
sed -e 's/^dnssec = .*/dnssec = "off"/' -e '/^trust_anchor = /d' "$tmp/fx/mtasts.toml" > "$tmp/fx/mtasts-dane-off.toml"
# The library's SONAME is libmtasts.so.0: link against a copy under that name.
mkdir -p "$tmp/lib"
cp target/release/libmtasts.so "$tmp/lib/libmtasts.so.0"
ln -s libmtasts.so.0 "$tmp/lib/libmtasts.so"
cc -std=c99 -O2 -Wall -Wextra -Werror -Iinclude benches/c/bench_check.c -L"$tmp/lib" -lmtasts -o "$tmp/bench_check"
LD_LIBRARY_PATH="$tmp/lib" "$tmp/bench_check" "$tmp/fx"
