#!/bin/bash
# End-to-end tests of `mtasts serve` with Postfix's own programs (Debian 12's postfix 3.7).
#
#   bash tests/e2e/postfix/run.sh
#
# Installs nothing. Postfix conflicts with Exim (both are a mail-transport-agent), so it is
# unpacked, not installed: `apt-get download postfix` and `dpkg -x` into
# ${MTASTS_E2E_CACHE:-/var/cache/mtasts-e2e}/postfix (done here when missing; needs the apt
# lists, i.e. `apt-get update` once). Its binaries need only libraries of a base Debian 12
# (libssl3, libicu72, libdb5.3, libsasl2-2, libnsl2; checked below). Also needed: root, the user
# `daemon` and the group `mail` (base system), and util-linux's `unshare` (the delivery test
# bind-mounts a private /etc/hosts in a mount namespace of the Postfix master only).
#
# 1. `postmap -q` against `mtasts serve` (socketmap), with examples/postfix/main.cf, for the
#    fixture domains and the keys Postfix itself sends (.parent, [host]:port, [ip]).
# 2. A full delivery by the Postfix master and smtp(8) (tests/it/serve.rs, postfix_full_delivery).
# 3. `postmap -q` for every row of the README table "DANE in socketmap replies", against zones
#    signed at test time (tests/it/serve.rs, postfix_postmap_dane_rows).
# 4. `postmap -q` with two socketmap names against one server with `[serve.profile.NAME]` tables:
#    different replies per name (tests/it/serve.rs, postfix_postmap_profiles).
set -euo pipefail
cd "$(dirname "$0")/../../.."
ROOT_DIR=$PWD
CACHE=${MTASTS_E2E_CACHE:-/var/cache/mtasts-e2e}/postfix
R=$CACHE/root
if [ ! -x "$R/usr/sbin/postmap" ]; then
    mkdir -p "$CACHE"
    (cd "$CACHE" && apt-get download postfix)
    dpkg -x "$(ls "$CACHE"/postfix_*.deb | head -n1)" "$R"
fi
missing=$(LD_LIBRARY_PATH=$R/usr/lib/postfix ldd "$R/usr/sbin/postmap" "$R/usr/lib/postfix/sbin/master" \
    "$R/usr/lib/postfix/sbin/smtp" "$R/usr/lib/postfix/sbin/smtpd" | grep "not found" || true)
if [ -n "$missing" ]; then
    echo "postfix e2e: libraries missing for the unpacked Postfix:"; echo "$missing"; exit 1
fi
for tool in unshare; do command -v $tool >/dev/null || { echo "postfix e2e: $tool is missing"; exit 1; }; done

cargo build --quiet --bin mtasts
cargo build --quiet -p mtasts-fixtures --bin mtasts-fixture
TARGET=${CARGO_TARGET_DIR:-$ROOT_DIR/target}/debug

W=$(mktemp -d /tmp/mtasts-e2e-postfix.XXXXXX)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    rm -rf "$W"
}
trap cleanup EXIT

# Fixtures (DNS + HTTPS on 127.0.0.1) and mtasts serve.
mkfifo "$W/fixture.stdin"
"$TARGET/mtasts-fixture" "$W/fx" < "$W/fixture.stdin" > "$W/fixture.json" &
PIDS+=($!)
exec 3> "$W/fixture.stdin"   # keeps the fixture running until this script exits
for _ in $(seq 100); do [ -s "$W/fixture.json" ] && break; sleep 0.1; done
"$TARGET/mtasts" serve --config "$W/fx/mtasts.toml" --listen inet:127.0.0.1:0 > "$W/serve.out" 2> "$W/serve.err" &
PIDS+=($!)
for _ in $(seq 100); do [ -s "$W/serve.out" ] && break; sleep 0.1; done
PORT=$(sed -n 's/^listening on inet:127.0.0.1:\([0-9]*\)$/\1/p' "$W/serve.out")
[ -n "$PORT" ] || { echo "mtasts serve did not start"; cat "$W/serve.err"; exit 1; }

# A Postfix configuration made of the example snippet, pointed at this server and the test CA.
mkdir -p "$W/etc"
{
    printf 'compatibility_level = 3.6\nmail_owner = daemon\nsetgid_group = mail\n'
    sed -e "s|127.0.0.1:8461|127.0.0.1:$PORT|" -e "s|/etc/ssl/certs/ca-certificates.crt|$W/fx/ca.pem|" \
        examples/postfix/main.cf
} > "$W/etc/main.cf"
MAP=$(LD_LIBRARY_PATH=$R/usr/lib/postfix "$R/usr/sbin/postconf" -c "$W/etc" -h smtp_tls_policy_maps 2>/dev/null)

pass=0
fail=0
check() { # key, expected exit status, expected output
    local out status
    set +e
    out=$(LD_LIBRARY_PATH=$R/usr/lib/postfix "$R/usr/sbin/postmap" -c "$W/etc" -q "$1" "$MAP" 2>"$W/postmap.err")
    status=$?
    set -e
    if [ "$status" = "$2" ] && [ "$out" = "$3" ] && ! grep -q fatal "$W/postmap.err"; then
        pass=$((pass + 1)); echo "ok   postmap -q '$1' -> $status '$out'"
    else
        fail=$((fail + 1)); echo "FAIL postmap -q '$1' -> $status '$out' (want $2 '$3')"; cat "$W/postmap.err"
    fi
}
SECURE="secure match=mx.enforce.test:.backup.enforce.test servername=hostname"
check enforce.test 0 "$SECURE"
check ENFORCE.test. 0 "$SECURE"
check testing.test 1 ""
check none.test 1 ""
check nopolicy.test 1 ""
check broken.test 1 ""
check .enforce.test 1 ""
check '[mx.enforce.test]:25' 1 ""
check '[mx.enforce.test]' 1 ""
check '[192.0.2.1]:25' 1 ""
check 'enforce.test:2525' 1 ""
# postmap -q - reads keys from stdin over one connection (many requests on one socketmap connection).
out=$(printf 'enforce.test\ntesting.test\nenforce.test\n' | LD_LIBRARY_PATH=$R/usr/lib/postfix "$R/usr/sbin/postmap" -c "$W/etc" -q - "$MAP")
if [ "$out" = "$(printf 'enforce.test\t%s\nenforce.test\t%s' "$SECURE" "$SECURE")" ]; then
    pass=$((pass + 1)); echo "ok   postmap -q - (3 keys, one connection)"
else
    fail=$((fail + 1)); echo "FAIL postmap -q -: $out"
fi
echo "postmap: $pass passed, $fail failed"

# Full delivery through the Postfix master and smtp(8); postmap for each DANE row.
MTASTS_E2E_POSTFIX_ROOT=$R cargo test --test it -- --ignored --exact serve::postfix_full_delivery serve::postfix_postmap_profiles \
    serve::postfix_postmap_dane_rows
[ "$fail" = 0 ]
