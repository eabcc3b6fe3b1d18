#!/usr/bin/env bash
# Exim end to end: the dlfunc entry points of libmtasts.so called by a real Exim (`exim -be`),
# and real deliveries (`exim -odf`) through examples/exim/exim-mtasts.conf to local STARTTLS
# sinks, with policies from the local DNS/HTTPS fixtures.
#
#   bash tests/e2e/exim/run.sh        (from anywhere; as root, as CI runs it)
#
# Needs Debian's exim4-daemon-heavy (dlfunc + events, GnuTLS) and `unshare`/`mount`
# (util-linux, mount); installs nothing itself. Builds the library and the fixtures (debug).
# Stages: "exim -be" (every entry point, good and bad input) and "delivery" (MTA-STS cases, and
# DANE cases against DNSSEC-signed fixture zones: Exim's own DANE decides where it applies), the
# latter twice: with mtasts's own DANE off and on. Every stage runs even when an earlier one
# failed; a summary ends the output, and the exit status is non-zero if any stage failed. See
# tests/e2e/exim/README.md.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../../.."
root=$PWD
start=$SECONDS
target=${CARGO_TARGET_DIR:-$root/target}

section() { printf '\n==== %s\n' "$*"; }

# ---- tools ------------------------------------------------------------------------------------
section "tools"
missing=()
command -v exim >/dev/null 2>&1 || missing+=("exim (apt package: exim4-daemon-heavy)")
command -v unshare >/dev/null 2>&1 || missing+=("unshare (apt package: util-linux)")
command -v mount >/dev/null 2>&1 || missing+=("mount (apt package: mount)")
command -v python3 >/dev/null 2>&1 || missing+=("python3 (apt package: python3)")
command -v cargo >/dev/null 2>&1 || missing+=("cargo (rustup, not apt)")
if ((${#missing[@]})); then
    printf 'missing: %s\n' "${missing[@]}"
    echo "install with: apt-get update && apt-get install -y exim4-daemon-heavy util-linux mount python3"
    exit 2
fi
if ! exim -bV | grep -q 'Expand_dlfunc' || ! exim -bV | grep -q 'Event'; then
    echo "this exim lacks dlfunc or event support: install exim4-daemon-heavy"
    exim -bV | head -n 5
    exit 2
fi
if ((EUID != 0)); then
    echo "run as root: exim -C keeps its privileges only for root, and the delivery test needs a"
    echo "private mount namespace (unshare -m) and the SMTP port on 127.0.0.x"
    exit 2
fi
exim -bV | head -n 1
exim_user=$(exim -bP exim_user | sed 's/^exim_user = //')
echo "exim user: $exim_user"

# ---- build ------------------------------------------------------------------------------------
section "cargo build -p mtasts -p mtasts-fixtures"
cargo build -p mtasts -p mtasts-fixtures
lib=$target/debug/libmtasts.so
[[ -f $lib ]] || { echo "no $lib"; exit 1; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/mtasts-exim.XXXXXX")
# Exim's transport runs as $exim_user: it must reach the fixture's files.
chmod 755 "$tmp"
fixture_pid=
mta_pid=
cleanup() {
    exec 8>&- 9>&- 2>/dev/null || true # closes the fixtures' stdin: they exit by themselves
    for pid in $fixture_pid $mta_pid; do
        if kill -0 "$pid" 2>/dev/null; then
            kill "$pid" 2>/dev/null || true
        fi
    done
    wait 2>/dev/null || true
    if [[ -z ${MTASTS_KEEP_TMP:-} ]]; then
        rm -rf "$tmp"
    else
        echo "kept $tmp"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# wait_json FILE PID: waits for the JSON line a fixture prints once it serves. Each fixture's
# stdin is a fifo held open by this script: it serves until that is closed.
wait_json() {
    local json=$1 pid=$2
    for _ in $(seq 100); do
        [[ -s $json ]] && return 0
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    return 1
}

results=()
stage() { # stage NAME COMMAND...: runs a stage, records PASS/FAIL, never stops the script
    local name=$1 t0=$SECONDS rc=0
    shift
    section "$name"
    ("$@") &
    wait $! || rc=$?
    if ((rc == 0)); then
        results+=("PASS  $name ($((SECONDS - t0)) s)")
    else
        results+=("FAIL  $name (exit $rc, $((SECONDS - t0)) s)")
    fi
}

# ---- stage 1: exim -be ------------------------------------------------------------------------
section "fixture (mtasts-fixture)"
mkfifo "$tmp/fixture.in"
"$target/debug/mtasts-fixture" "$tmp/fx" <"$tmp/fixture.in" >"$tmp/fixture.json" 2>"$tmp/fixture.err" &
fixture_pid=$!
exec 8>"$tmp/fixture.in"
if ! wait_json "$tmp/fixture.json" "$fixture_pid"; then
    echo "mtasts-fixture did not start:"
    cat "$tmp/fixture.err"
    exit 1
fi
cat "$tmp/fixture.json"
chmod -R a+rX "$tmp/fx"

be_stage() {
    source "$root/tests/e2e/exim/be_tests.sh"
    be_tests "$lib" "$tmp/fx" "$tmp/be"
}
stage "exim -be: every entry point, good and bad input" be_stage

# ---- stage 2: deliveries ----------------------------------------------------------------------
# delivery_stage DNSSEC: the fixture's mtasts configuration with `[dns] dnssec = "off"` (mtasts
# leaves DANE to Exim, as examples/exim/README.md suggests) or `"validate"` (mtasts also judges
# DANE itself, from the fixture's trust anchor, where Exim does not use it): the outcomes must
# be the same.
delivery_stage() {
    local mtasts_dnssec=$1
    local dir=$tmp/mta-$mtasts_dnssec config
    case $mtasts_dnssec in
    off) config=mtasts.toml ;;
    validate) config=mtasts-validate.toml ;;
    esac
    if ! unshare -m true 2>/dev/null; then
        echo "unshare -m fails here: the delivery test needs a private mount namespace"
        echo "(root with CAP_SYS_ADMIN) to show Exim the fixture's DNS through /etc/resolv.conf"
        return 1
    fi
    local out=$tmp/mta-$mtasts_dnssec
    mkfifo "$out.in"
    "$target/debug/mtasts-mta-fixture" "$dir" <"$out.in" >"$out.json" 2>"$out.err" &
    mta_pid=$!
    exec 9>"$out.in"
    if ! wait_json "$out.json" "$mta_pid"; then
        echo "mtasts-mta-fixture did not start (it needs port 25 and 127.0.53.53:53 free):"
        cat "$out.err"
        return 1
    fi
    head -n 1 "$out.json"
    chmod -R a+rX "$dir"
    echo "-- mtasts configuration ($config)"
    cat "$dir/$config"
    local run=$tmp/exim-$mtasts_dnssec
    install -d -o "$exim_user" -g "$exim_user" "$run" "$run/spool" "$run/log"

    local rc=0
    unshare -m bash "$root/tests/e2e/exim/deliver.sh" "$dir/resolv.conf" "$run/probes.txt" \
        -C "$root/tests/e2e/exim/e2e.conf" \
        -DE2E_DIR="$run" \
        -DE2E_EXAMPLE="$root/examples/exim/exim-mtasts.conf" \
        -DMTASTS_LIB="$lib" \
        "-DMTASTS_CONFIG_ARG={config=$dir/$config}" \
        -DMTASTS_CA="$dir/ca.pem" \
        -DMTASTS_REPORT_USER=root || rc=$?
    # Closing its stdin makes the fixture print what the sinks saw, and exit.
    exec 9>&-
    wait "$mta_pid" || true
    mta_pid=
    if ((rc != 0)); then
        echo "deliver.sh failed ($rc)"
        return 1
    fi
    echo "-- main log"
    grep -v 'lost privilege for using -C option' "$run/log/mainlog" || true
    echo "-- what the sinks saw"
    tail -n 1 "$out.json"
    source "$root/tests/e2e/exim/delivery_checks.sh"
    delivery_checks "$run/log/mainlog" "$run/log/paniclog" "$(tail -n 1 "$out.json")" "$run/probes.txt" \
        "$mtasts_dnssec"
}
stage "delivery: exim -odf through examples/exim/exim-mtasts.conf (mtasts dnssec = off)" delivery_stage off
stage "delivery: the same with mtasts's own DANE on (mtasts dnssec = validate)" delivery_stage validate

section "summary"
printf '%s\n' "${results[@]}"
echo "total: $((SECONDS - start)) s"
if printf '%s\n' "${results[@]}" | grep -q '^FAIL'; then
    exit 1
fi
