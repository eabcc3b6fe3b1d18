#!/usr/bin/env bash
# Runs inside a private mount namespace
# (`unshare -m bash deliver.sh RESOLV_CONF PROBES EXIM_ARGS...`): puts the fixture's resolv.conf
# over /etc/resolv.conf, so that Exim finds the fixture's MX and TLSA records through the system
# resolver as it would in production; asks Exim (`exim -be`) a few DNSSEC questions through that
# resolver and writes the answers to PROBES (`NAME => ANSWER` lines: did Exim see the AD bit?);
# then submits one message per case with `exim EXIM_ARGS... -odf` (delivery in the foreground:
# the outcome is in the main log when exim returns).
set -euo pipefail
resolv=$1
probes=$2
shift 2
mount --bind "$resolv" /etc/resolv.conf
err=$(mktemp)
trap 'rm -f "$err"' EXIT

# probe NAME TYPE HOST: is HOST's TLSA (at _25._tcp) or A record DNSSEC-secure for Exim?
# `secure` (found, AD set), `insecure` (found, no AD), `none` (no such record) or `defer` (the
# lookup failed: SERVFAIL from the validating resolver for a bogus answer).
probe() {
    local name=$1 type=$2 host=$3 owner answer
    shift 3
    owner=$host
    [[ $type == tlsa ]] && owner=_25._tcp.$host
    answer=$(exim "$@" -be "\${lookup dnsdb{dnssec_lax,defer_strict,$type=$owner}{\${if eq{\$lookup_dnssec_authenticated}{yes}{secure}{insecure}}}{none}}" 2>&1 |
        grep -v 'exim user lost privilege') || true
    [[ $answer == Failed:* ]] && answer=defer
    echo "$name => $answer"
}
{
    probe "tlsa mx.dane-ee.test" tlsa mx.dane-ee.test "$@"
    probe "tlsa mx.enforce.test" tlsa mx.enforce.test "$@"
    probe "a mx.nopolicy.test" a mx.nopolicy.test "$@"
    probe "a mx.enforce.test" a mx.enforce.test "$@"
    probe "tlsa mx.dane-bogus.test" tlsa mx.dane-bogus.test "$@"
    probe "tlsa other.dane-outside.test" tlsa other.dane-outside.test "$@"
    probe "a rogue.outside.test" a rogue.outside.test "$@"
} >"$probes"
cat "$probes"
# TLSRPT report mail (RPT-13): as `mtasts report send` submits it, by the report user (the
# caller, root here, as MTASTS_REPORT_USER says), to a domain whose enforce policy the MX fails;
# then (after the loop below) the same message claiming another submitter (-oMt, a trusted
# caller's ident), which must not be exempt.
report() { # report RCPT [EXIM OPTION...]
    local rcpt=$1 rc=0
    shift
    printf 'From: tlsrpt@mta.test\nTo: %s\nSubject: Report Domain: badcert.test Submitter: mta.test Report-ID: <x@mta.test>\nTLS-Report-Domain: badcert.test\nTLS-Report-Submitter: mta.test\nTLS-Required: No\n\nA report.\n' "$rcpt" |
        exim "${exim_args[@]}" "$@" -odf -oi -f tlsrpt@mta.test "$rcpt" 2>"$err" || rc=$?
    grep -v 'exim user lost privilege for using -C option' "$err" >&2 || true
    echo "submitted report to $rcpt: exim exit $rc"
}
exim_args=("$@")
# First, while mx.badcert.test has no retry record: the other messages for it are deferred.
report reports@badcert.test
for rcpt in user@enforce.test user@outside.test user@badcert.test user@testing.test \
    user@nopolicy.test user@fallback.test user@dane-ee.test user@dane-mismatch.test \
    user@dane-testing.test user@dane-bogus.test user@dane-outside.test user@dane-next.test \
    user@dane-unusable.test user@bogus-mx.test user@dane-cleartext.test; do
    rc=0
    printf 'From: sender@mta.test\nTo: %s\nSubject: MTA-STS e2e test for %s\n\nHello.\n' \
        "$rcpt" "${rcpt#*@}" |
        exim "$@" -odf -oi -f sender@mta.test "$rcpt" 2>"$err" || rc=$?
    # Exim notes on stderr (and in its panic log) that -C makes it drop privileges when it
    # re-executes itself; that is expected.
    grep -v 'exim user lost privilege for using -C option' "$err" >&2 || true
    echo "submitted to $rcpt: exim exit $rc"
done

report forged@badcert.test -oMt mallory
