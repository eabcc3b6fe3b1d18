#!/usr/bin/env bash
# Runs inside a private mount namespace (`unshare -m bash deliver.sh RESOLV_CONF EXIM_ARGS...`):
# puts the fixture's resolv.conf over /etc/resolv.conf, so that Exim finds the fixture's MX
# records through the system resolver as it would in production, then submits one message per
# case with `exim EXIM_ARGS... -odf` (delivery in the foreground: the outcome is in the main log
# when exim returns).
set -euo pipefail
resolv=$1
shift
mount --bind "$resolv" /etc/resolv.conf
err=$(mktemp)
trap 'rm -f "$err"' EXIT
for rcpt in user@enforce.test user@outside.test user@badcert.test user@testing.test \
    user@nopolicy.test user@fallback.test; do
    rc=0
    printf 'From: sender@mta.test\nTo: %s\nSubject: MTA-STS e2e test for %s\n\nHello.\n' \
        "$rcpt" "${rcpt#*@}" |
        exim "$@" -odf -oi -f sender@mta.test "$rcpt" 2>"$err" || rc=$?
    # Exim notes on stderr (and in its panic log) that -C makes it drop privileges when it
    # re-executes itself; that is expected.
    grep -v 'exim user lost privilege for using -C option' "$err" >&2 || true
    echo "submitted to $rcpt: exim exit $rc"
done
