#!/bin/bash
# End-to-end tests of `mtasts serve` with Sendmail's own map and rule code (Debian 12's
# sendmail 8.17.1.9, built with SOCKETMAP and _FFR_MTA_STS), in address test mode (-bt).
#
#   bash tests/e2e/sendmail/run.sh
#
# Installs nothing. Sendmail conflicts with Exim, so the packages are unpacked, not installed:
# `apt-get download sendmail-bin sendmail-cf libwrap0 m4` and `dpkg -x` into
# ${MTASTS_E2E_CACHE:-/var/cache/mtasts-e2e}/sendmail (done here when missing; needs the apt lists,
# i.e. `apt-get update` once). libwrap0 and m4 are only unpacked too (sendmail links libwrap.so.0;
# m4 builds sts.cf); the setgid bit is dropped from the unpacked sendmail binary so that
# LD_LIBRARY_PATH applies to it.
#
# 1. A `K` socket map line (`Ksts socket -T<TMPF> inet:PORT@127.0.0.1`): `/map sts DOMAIN`.
# 2. The FEATURE(sts) rulesets, sendmail.cf built by m4 from examples/sendmail/sts.mc:
#    `STS_Check` accepts a listed MX, refuses an unlisted one with 450, and says
#    "450 STS lookup temp fail" when the server cannot be reached.
# 3. What FEATURE(sts) makes of the DANE replies (`dane-only`, `dane`, `TEMP`), against zones
#    signed at test time (tests/it/serve.rs, sendmail_sts_check_of_dane_replies).
set -euo pipefail
cd "$(dirname "$0")/../../.."
ROOT_DIR=$PWD
CACHE=${MTASTS_E2E_CACHE:-/var/cache/mtasts-e2e}/sendmail
S=$CACHE/root
if [ ! -x "$S/usr/libexec/sendmail/sendmail" ] || [ ! -x "$S/usr/bin/m4" ]; then
    mkdir -p "$CACHE"
    (cd "$CACHE" && apt-get download sendmail-bin sendmail-cf libwrap0 m4)
    for deb in "$CACHE"/*.deb; do dpkg -x "$deb" "$S"; done
    chmod g-s "$S/usr/libexec/sendmail/sendmail"
fi
export LD_LIBRARY_PATH=$S/usr/lib/x86_64-linux-gnu
SENDMAIL=$S/usr/libexec/sendmail/sendmail
CF=$S/usr/share/sendmail/cf
missing=$(ldd "$SENDMAIL" "$S/usr/bin/m4" | grep "not found" || true)
if [ -n "$missing" ]; then
    echo "sendmail e2e: libraries missing for the unpacked Sendmail:"; echo "$missing"; exit 1
fi

cargo build --quiet --bin mtasts
cargo build --quiet -p mtasts-fixtures --bin mtasts-fixture
TARGET=${CARGO_TARGET_DIR:-$ROOT_DIR/target}/debug

# Sendmail refuses map files and sockets in world-writable directories such as /tmp.
mkdir -p /var/tmp/mtasts-e2e
W=$(mktemp -d /var/tmp/mtasts-e2e/sendmail.XXXXXX)
chmod 755 "$W"
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    rm -rf "$W"
}
trap cleanup EXIT

mkfifo "$W/fixture.stdin"
"$TARGET/mtasts-fixture" "$W/fx" < "$W/fixture.stdin" > "$W/fixture.json" &
PIDS+=($!)
exec 3> "$W/fixture.stdin"
for _ in $(seq 100); do [ -s "$W/fixture.json" ] && break; sleep 0.1; done
"$TARGET/mtasts" serve --config "$W/fx/mtasts.toml" --listen inet:127.0.0.1:0 > "$W/serve.out" 2> "$W/serve.err" &
PIDS+=($!)
for _ in $(seq 100); do [ -s "$W/serve.out" ] && break; sleep 0.1; done
PORT=$(sed -n 's/^listening on inet:127.0.0.1:\([0-9]*\)$/\1/p' "$W/serve.out")
[ -n "$PORT" ] || { echo "mtasts serve did not start"; cat "$W/serve.err"; exit 1; }
# A port where nothing listens, for the temporary-failure case.
DEAD=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')

pass=0
fail=0
expect() { # description, output, pattern (grep -E)
    if grep -Eq -- "$3" <<<"$2"; then
        pass=$((pass + 1)); echo "ok   $1"
    else
        fail=$((fail + 1)); echo "FAIL $1: no /$3/ in:"; echo "$2"
    fi
}

# 1. The socket map alone.
printf 'V10/Berkeley\nKsts socket -T<TMPF> inet:%s@127.0.0.1\n' "$PORT" > "$W/test.cf"
# -bt exits non-zero for a configuration without a local mailer: only the output matters.
# Sendmail sleeps 60 s at start when it cannot qualify the host name (a bare `vm`, say): run it
# in a mount namespace whose /etc/hosts gives the name a domain.
{ printf '127.0.0.1\t%s.localdomain %s localhost\n' "$(hostname)" "$(hostname)"; cat /etc/hosts; } > "$W/hosts"
bt() {
    unshare -m sh -c 'mount --bind "$1" /etc/hosts && shift && exec "$@"' sh "$W/hosts" \
        "$SENDMAIL" -C"$1" -bt 2>&1 || true
}
out=$(printf '/map sts enforce.test\n/map sts testing.test\n/map sts none.test\n/map sts nopolicy.test\n/map sts .enforce.test\n' | bt "$W/test.cf")
expect "K socket map: enforce.test" "$out" 'sts \(enforce\.test\) returns secure match=mx\.enforce\.test:\.backup\.enforce\.test servername=hostname \(0\)'
expect "K socket map: testing.test" "$out" 'sts \(testing\.test\) no match'
expect "K socket map: none.test" "$out" 'sts \(none\.test\) no match'
expect "K socket map: nopolicy.test" "$out" 'sts \(nopolicy\.test\) no match'
expect "K socket map: .enforce.test" "$out" 'sts \(\.enforce\.test\) no match'

# 2. FEATURE(sts) from the example .mc, pointed at this server.
build_cf() { # port, output
    sed "s/inet:8461@127.0.0.1/inet:$1@127.0.0.1/" examples/sendmail/sts.mc > "$W/sts.mc"
    "$S/usr/bin/m4" -D_CF_DIR_="$CF/" "$CF/m4/cf.m4" "$W/sts.mc" > "$2"
}
build_cf "$PORT" "$W/sts.cf"
grep -q "^Ksts socket -d5 -T<TMPF> inet:$PORT@127.0.0.1" "$W/sts.cf" || { echo "FAIL: no Ksts line in sts.cf"; exit 1; }
sts_check() { # rcpt, mx host (server_name and its certificate name), cf
    printf '.D{rcpt_addr}%s\n.D{server_name}%s\n.C{cert_altnames}%s\nSTS_Check %s\n' "$1" "$2" "$2" "$1" | bt "$3"
}
out=$(sts_check user@enforce.test mx.enforce.test "$W/sts.cf")
expect "STS_Check: listed MX mx.enforce.test accepted" "$out" 'STS_Check +returns: ok'
out=$(sts_check user@enforce.test a.backup.enforce.test "$W/sts.cf")
expect "STS_Check: a.backup.enforce.test matches *.backup.enforce.test" "$out" 'STS_Check +returns: ok'
out=$(sts_check user@enforce.test evil.example "$W/sts.cf")
expect "STS_Check: unlisted MX refused with 450" "$out" 'STS_Check +returns: \$# error \$@ 4 \. 7 \. 0 \$: 450 evil \. example not found in'
out=$(sts_check user@enforce.test a.b.backup.enforce.test "$W/sts.cf")
expect "STS_Check: two labels under .backup.enforce.test refused" "$out" 'STS_Check +returns: \$# error .* 450 '
out=$(sts_check user@testing.test evil.example "$W/sts.cf")
expect "STS_Check: testing policy, any MX accepted" "$out" 'STS_Check +returns: ok'
out=$(sts_check user@nopolicy.test evil.example "$W/sts.cf")
expect "STS_Check: no policy, any MX accepted" "$out" 'STS_Check +returns: ok'
build_cf "$DEAD" "$W/dead.cf"
out=$(sts_check user@enforce.test mx.enforce.test "$W/dead.cf")
expect "STS_Check: server unreachable -> 450 STS lookup temp fail" "$out" '450 STS lookup temp fail'

echo "sendmail: $pass passed, $fail failed"

# 3. DANE replies through FEATURE(sts) (the test sets LD_LIBRARY_PATH for sendmail and m4 itself).
env -u LD_LIBRARY_PATH MTASTS_E2E_SENDMAIL_ROOT="$S" \
    cargo test --test it -- --ignored --exact serve::sendmail_sts_check_of_dane_replies
[ "$fail" = 0 ]
