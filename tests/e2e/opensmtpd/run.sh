#!/usr/bin/env bash
# OpenSMTPD end to end: fills a policy store from the local fixtures, exports the enforce-mode
# table, and checks the example configuration with OpenSMTPD's own `smtpd -n`.
# Needs OpenSMTPD's binary: unpacked from Debian's package into $MTASTS_E2E_CACHE (it conflicts
# with the other MTAs, so it is not installed), and its libraries (libevent-2.1-7, libdb5.3,
# libssl3: present on a standard Debian 12).
set -euo pipefail
cd "$(dirname "$0")/../../.."
cache=${MTASTS_E2E_CACHE:-/var/cache/mtasts-e2e}
smtpd="$cache/opensmtpd/root/usr/sbin/smtpd"
if [ ! -x "$smtpd" ]; then
  mkdir -p "$cache/opensmtpd"
  (cd "$cache/opensmtpd" && apt-get download opensmtpd >/dev/null 2>&1 && dpkg -x opensmtpd_*.deb root)
fi
[ -x "$smtpd" ] || { echo "cannot unpack OpenSMTPD into $cache/opensmtpd" >&2; exit 1; }

cargo build -q -p mtasts -p mtasts-fixtures
. fixtures/start.sh
start_fixture
export MTASTS_CONFIG="$tmp/fx/mtasts.toml"
store="$tmp/policies.sqlite"
failures=0
for d in enforce.test testing.test none.test nopolicy.test slow.test broken.test; do
  target/debug/mtasts check "$d" --cache "$store" --mx mx.enforce.test > /dev/null
done
echo "== export"
target/debug/mtasts export opensmtpd-table --cache "$store" --output "$tmp/mtasts-enforce"
got=$(grep -v '^#' "$tmp/mtasts-enforce" | sort | tr '\n' ' ')
if [ "$got" = "enforce.test slow.test " ]; then
  echo "ok: the table holds exactly the enforce domains: $got"
else
  echo "FAIL: table holds: $got (want: enforce.test slow.test)"; failures=$((failures + 1))
fi
echo "== smtpd -n on examples/opensmtpd/smtpd.conf"
sed "s|/etc/mail/mtasts-enforce|$tmp/mtasts-enforce|" examples/opensmtpd/smtpd.conf > "$tmp/smtpd.conf"
if out=$("$smtpd" -n -f "$tmp/smtpd.conf" 2>&1); then
  echo "ok: $out"
else
  echo "FAIL: smtpd -n: $out"; failures=$((failures + 1))
fi
echo "== a broken configuration is refused"
sed 's/relay tls/relay tlss/' "$tmp/smtpd.conf" > "$tmp/bad.conf"
if "$smtpd" -n -f "$tmp/bad.conf" > /dev/null 2>&1; then
  echo "FAIL: smtpd accepted a broken configuration, so the check above proves nothing"; failures=$((failures + 1))
else
  echo "ok: refused"
fi
echo "$((3 - failures)) passed, $failures failed"
[ "$failures" -eq 0 ]
