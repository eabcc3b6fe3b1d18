#!/usr/bin/env bash
# The C ABI from the consumer's side: builds the library and the fixtures, starts the fixtures,
# runs tests/c/test_api.c plain, under AddressSanitizer + UBSan (with LeakSanitizer) and under
# valgrind, builds and runs examples/c/deliver.c, and runs `make check-install`.
#
#   bash tests/c/run.sh            (from the repository root, as CI does)
#
# Environment: MTASTS_TEST_ITERATIONS (checks per thread in the thread test, default 300),
# CC (default cc), CARGO_TARGET_DIR. Every stage runs even when an earlier one failed; the
# summary at the end lists them, and the exit status is non-zero if any failed.
# See tests/c/README.md.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
root=$PWD
start=$SECONDS
CC=${CC:-cc}
target=${CARGO_TARGET_DIR:-$root/target}
cflags=(-std=c99 -Wall -Wextra -Werror -g)

section() { printf '\n==== %s\n' "$*"; }

# ---- tools ------------------------------------------------------------------------------------
section "tools"
missing=()
for tool in "$CC:gcc" valgrind:valgrind make:make pkg-config:pkg-config readelf:binutils \
    cargo:"(rustup, not apt)"; do
    if ! command -v "${tool%%:*}" >/dev/null 2>&1; then
        missing+=("${tool%%:*} (apt package: ${tool#*:})")
    fi
done
if ((${#missing[@]})); then
    printf 'missing: %s\n' "${missing[@]}"
    echo "install with: apt-get install -y gcc valgrind make pkg-config binutils" \
        "(libssl-dev too, for the OpenSSL variant of examples/c)"
    exit 2
fi
echo "$("$CC" --version | head -n1); $(valgrind --version); make $(make --version | head -n1 | awk '{print $3}'); pkg-config $(pkg-config --version)"

# ---- build ------------------------------------------------------------------------------------
section "cargo build -p mtasts -p mtasts-fixtures"
cargo build -p mtasts -p mtasts-fixtures

tmp=$(mktemp -d "${TMPDIR:-/tmp}/mtasts-c.XXXXXX")
fixture_pid=
stage_pid=
cleanup() {
    if [[ -n $stage_pid ]]; then # interrupted in a stage: stop it and all it started
        kill -TERM -- "-$stage_pid" 2>/dev/null || true
    fi
    exec 9>&- 2>/dev/null || true # closes the fixture's stdin: it exits by itself
    if [[ -n $fixture_pid ]] && kill -0 "$fixture_pid" 2>/dev/null; then
        kill "$fixture_pid" 2>/dev/null || true
    fi
    wait 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM # through cleanup: stops the fixture and a running stage

# The library's SONAME (libmtasts.so.0, see build.rs) is what test programs record as NEEDED:
# give the debug build that name in a directory of links, and point the programs' rpath there.
so="$target/debug/libmtasts.so"
soname=$(readelf -d "$so" | sed -n 's/.*Library soname: \[\(.*\)\]/\1/p')
libdir="$tmp/lib"
mkdir -p "$libdir"
ln -s "$so" "$libdir/libmtasts.so"
if [[ -n $soname ]]; then
    ln -s "$so" "$libdir/$soname"
fi
echo "library: $so (SONAME ${soname:-none})"
link=(-L"$libdir" -lmtasts -Wl,-rpath,"$libdir")

# ---- fixture ----------------------------------------------------------------------------------
section "fixture"
fixture="$tmp/fixture"
# Its stdin is a fifo held open by this shell (fd 9): the fixture serves until it is closed.
mkfifo "$tmp/stdin"
"$target/debug/mtasts-fixture" "$fixture" <"$tmp/stdin" >"$tmp/fixture.json" 2>"$tmp/fixture.err" &
fixture_pid=$!
exec 9>"$tmp/stdin"
for _ in $(seq 100); do
    [[ -s $tmp/fixture.json ]] && break
    kill -0 "$fixture_pid" 2>/dev/null || break
    sleep 0.1
done
if ! grep -q '"config"' "$tmp/fixture.json" 2>/dev/null; then
    echo "the fixture did not start:"
    cat "$tmp/fixture.err"
    exit 1
fi
cat "$tmp/fixture.json"
config=$(sed -n 's/.*"config":"\([^"]*\)".*/\1/p' "$tmp/fixture.json")
[[ -f $config ]] || { echo "no configuration at '$config'"; exit 1; }

# ---- stages -----------------------------------------------------------------------------------
# Job control: each stage runs in a process group of its own, which cleanup can stop as a whole.
set -m
results=()
stage() { # stage NAME COMMAND...: runs a stage, records PASS/FAIL, never stops the script
    local name=$1 t0=$SECONDS rc=0
    shift
    section "$name"
    # In a background subshell, so that `set -e` still applies inside the stage (it would be
    # ignored in a `cmd || ...` context) while a failure does not end the script.
    ("$@") </dev/null &
    stage_pid=$!
    wait "$stage_pid" || rc=$?
    stage_pid=
    if ((rc == 0)); then
        results+=("PASS  $name ($((SECONDS - t0)) s)")
    else
        results+=("FAIL  $name (exit $rc, $((SECONDS - t0)) s)")
    fi
}

plain() {
    "$CC" "${cflags[@]}" -pthread -Iinclude tests/c/test_api.c -o "$tmp/test_api" "${link[@]}"
    "$tmp/test_api" "$config" "$fixture"
}

asan() {
    "$CC" "${cflags[@]}" -pthread -fsanitize=address,undefined -fno-omit-frame-pointer -Iinclude \
        tests/c/test_api.c -o "$tmp/test_api_asan" "${link[@]}"
    local lsan=""
    if [[ -f tests/c/lsan.supp ]]; then
        lsan="suppressions=$root/tests/c/lsan.supp"
    fi
    ASAN_OPTIONS=detect_leaks=1 LSAN_OPTIONS="$lsan" \
        UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
        "$tmp/test_api_asan" "$config" "$fixture"
}

memcheck() {
    [[ -x $tmp/test_api ]] || "$CC" "${cflags[@]}" -pthread -Iinclude tests/c/test_api.c \
        -o "$tmp/test_api" "${link[@]}"
    # Possible and reachable leaks (process-lifetime statics, per-thread caches) are not errors;
    # --show-leak-kinds keeps them out of the log. tests/c/valgrind.supp says what else is
    # suppressed, and why.
    valgrind --error-exitcode=1 --leak-check=full --errors-for-leak-kinds=definite,indirect \
        --show-leak-kinds=definite,indirect --num-callers=40 \
        --suppressions=tests/c/valgrind.supp \
        "$tmp/test_api" "$config" "$fixture"
}

example() {
    "$CC" "${cflags[@]}" -Iinclude examples/c/deliver.c -o "$tmp/deliver" "${link[@]}"
    local out
    out=$(MTASTS_CONFIG=$config "$tmp/deliver" enforce.test "$fixture/mx-enforce.der" \
        mx.enforce.test)
    echo "$out"
    grep -qx '=> deliver to mx.enforce.test' <<<"$out" || {
        echo "deliver did not say it would deliver to mx.enforce.test"
        return 1
    }
    # An enforce failure keeps the message queued (exit 75), never bounces it.
    local rc=0
    out=$(MTASTS_CONFIG=$config "$tmp/deliver" enforce.test "$fixture/expired.der" \
        mx.other.test mx.enforce.test) || rc=$?
    echo "$out"
    [[ $rc == 75 ]] || { echo "expected exit 75 (keep in the queue), got $rc"; return 1; }

    # DANE (the fixture's signed zones): a self-signed chain for another name, with the key the
    # DANE-EE record of mx.dane.test names, is delivered: DANE decides, not the PKIX checks.
    out=$(MTASTS_CONFIG=$config "$tmp/deliver" dane.test "$fixture/mx-dane-selfsigned.der" \
        mx.dane.test)
    echo "$out"
    grep -q '^mx.dane.test: DANE applies: 1 TLSA record(s), 1 usable' <<<"$out" &&
        grep -qx '=> deliver to mx.dane.test (decided by DANE; MTA-STS failure reported)' <<<"$out" || {
        echo "deliver did not let DANE deliver to mx.dane.test"
        return 1
    }
    # No STARTTLS where DANE applies: no plaintext fallback, the message stays queued.
    rc=0
    out=$(MTASTS_CONFIG=$config "$tmp/deliver" dane.test - mx.dane.test) || rc=$?
    echo "$out"
    [[ $rc == 75 ]] || { echo "expected exit 75 (keep in the queue), got $rc"; return 1; }
    grep -q 'no plaintext fallback' <<<"$out" && grep -q ': dane-required (decided by DANE' <<<"$out" || {
        echo "deliver did not refuse the plaintext session to mx.dane.test"
        return 1
    }
    # A bogus TLSA RRset: that MX is skipped before connecting, the next one is used.
    out=$(MTASTS_CONFIG=$config "$tmp/deliver" dane-bogus.test "$fixture/mx-dane.der" \
        mx.dane-bogus.test mx.dane.test)
    echo "$out"
    grep -q '^mx.dane-bogus.test: skipped before connecting: dnssec-invalid' <<<"$out" &&
        grep -qx '=> deliver to mx.dane.test' <<<"$out" || {
        echo "deliver did not skip mx.dane-bogus.test for mx.dane.test"
        return 1
    }

    if pkg-config --exists openssl; then
        echo "-- with OpenSSL (-DHAVE_OPENSSL): the chain goes through chain_to_der()"
        # shellcheck disable=SC2046 # pkg-config output is meant to be split
        "$CC" "${cflags[@]}" -DHAVE_OPENSSL -Iinclude $(pkg-config --cflags openssl) \
            examples/c/deliver.c -o "$tmp/deliver-openssl" "${link[@]}" $(pkg-config --libs openssl)
        out=$(MTASTS_CONFIG=$config "$tmp/deliver-openssl" enforce.test \
            "$fixture/mx-enforce.pem" mx.enforce.test)
        echo "$out"
        grep -qx '=> deliver to mx.enforce.test' <<<"$out"
        out=$(MTASTS_CONFIG=$config "$tmp/deliver-openssl" dane.test "$fixture/mx-dane.pem" \
            mx.dane.test)
        echo "$out"
        grep -qx '=> deliver to mx.dane.test' <<<"$out"
    else
        echo "-- OpenSSL variant skipped: no openssl.pc (apt package libssl-dev)"
    fi
}

check_install() {
    make --no-print-directory all
    make --no-print-directory check-install
}

stage "test_api (plain)" plain
stage "test_api (AddressSanitizer + UBSan + LeakSanitizer)" asan
stage "test_api (valgrind)" memcheck
stage "examples/c/deliver.c" example
stage "make check-install (release build)" check_install

section "summary"
printf '%s\n' "${results[@]}"
echo "total: $((SECONDS - start)) s"
if printf '%s\n' "${results[@]}" | grep -q '^FAIL'; then
    exit 1
fi
