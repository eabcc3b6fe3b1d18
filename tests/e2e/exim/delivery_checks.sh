# Sourced by run.sh: `delivery_checks MAINLOG PANICLOG REPORT_JSON PROBES MTASTS_DNSSEC` checks
# the outcome of the deliveries made by deliver.sh, from Exim's main log and from what the SMTP
# sinks saw (the JSON line mtasts-mta-fixture prints when it stops), and the answers of the
# `exim -be` DNSSEC probes deliver.sh ran first (PROBES, one `NAME => ANSWER` line each).
# MTASTS_DNSSEC is the `[dns] dnssec` of the mtasts configuration used (`off` or `validate`):
# every outcome is the same; only who refuses `dane-unusable.test` differs.

delivery_checks() {
    local mainlog=$1 paniclog=$2 report=$3 probes=$4 mtasts_dnssec=$5 failures=0 count=0
    check() { # check NAME COMMAND...
        local name=$1
        shift
        count=$((count + 1))
        if "$@"; then
            printf 'ok    %s\n' "$name"
        else
            failures=$((failures + 1))
            printf 'FAIL  %s\n' "$name"
        fi
    }
    logged() { grep -Eq -- "$1" "$mainlog"; }
    # sink HOST PYTHON-EXPRESSION: the expression holds for the sink of HOST (s: its report entry,
    # m: its messages).
    sink() {
        python3 -c '
import json, sys
report, host, expr = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
s = next(s for s in report["sinks"] if s["host"] == host)
m = s["messages"]
sys.exit(0 if eval(expr) else 1)
' "$report" "$1" "$2"
    }

    # probe NAME ANSWER: deliver.sh's `exim -be` probe NAME answered ANSWER.
    probe() { grep -Fxq -- "$1 => $2" "$probes"; }

    echo "-- 0. exim -be, in the test's namespace: Exim sees the validating resolver's AD bit"
    check "TLSA of mx.dane-ee.test: found, DNSSEC-secure" probe "tlsa mx.dane-ee.test" secure
    check "TLSA of mx.enforce.test: none (a secure denial)" probe "tlsa mx.enforce.test" none
    check "A of mx.nopolicy.test: found, not secure (unsigned zone)" probe "a mx.nopolicy.test" insecure
    check "TLSA of other.dane-outside.test: found, DNSSEC-secure" \
        probe "tlsa other.dane-outside.test" secure
    check "A of mx.enforce.test: found, DNSSEC-secure" probe "a mx.enforce.test" secure
    check "TLSA of mx.dane-bogus.test: the lookup defers (SERVFAIL)" probe "tlsa mx.dane-bogus.test" defer

    echo "-- 1. enforce, MX in the policy, valid certificate: delivered over verified TLS"
    check "=> user@enforce.test H=mx.enforce.test ... CV=yes" \
        logged '=> user@enforce\.test .*H=mx\.enforce\.test \[127\.0\.0\.11\]:25 X=TLS[^ ]* CV=yes'
    check "the sink got it over TLS with SNI mx.enforce.test" \
        sink mx.enforce.test 'len(m) == 1 and m[0]["tls"] and m[0]["sni"] == "mx.enforce.test"'

    echo "-- 2. enforce, MX outside the policy: not connected, deferred"
    check "tcp:connect event skipped rogue.outside.test" \
        logged 'H=rogue\.outside\.test \[127\.0\.0\.12\]:25 Event requests alternate response'
    check "== user@outside.test deferred" logged '== user@outside\.test R=mtasts_dnslookup T=mtasts_smtp defer'
    check "the sink of rogue.outside.test saw no connection" sink rogue.outside.test 's["connections"] == 0'
    check "probe: A of rogue.outside.test is not secure (unsigned zone: its TLSA check says none)" \
        probe "a rogue.outside.test" insecure

    echo "-- 3. enforce, certificate for another name: deferred"
    check "mtasts refused the chain in the tls:cert event" \
        logged 'SSL verify denied by event-action: depth=0: MTA-STS enforce policy of badcert\.test refuses mx\.badcert\.test: certificate-host-mismatch'
    check "== user@badcert.test deferred at mx.badcert.test" \
        logged '== user@badcert\.test R=mtasts_dnslookup T=mtasts_smtp defer .*H=mx\.badcert\.test \[127\.0\.0\.13\]'
    check "the sink of mx.badcert.test got no message but the report (case 16)" \
        sink mx.badcert.test 'all(x["rcpt_to"] == ["reports@badcert.test"] for x in m)'

    echo "-- 4. testing, certificate for another name: delivered (CV=no)"
    check "=> user@testing.test H=mx.testing.test ... CV=no" \
        logged '=> user@testing\.test .*H=mx\.testing\.test \[127\.0\.0\.14\]:25 X=TLS[^ ]* CV=no'
    check "the sink got it over TLS" sink mx.testing.test 'len(m) == 1 and m[0]["tls"]'

    echo "-- 5. no policy, MX without STARTTLS: delivered in clear text"
    check "=> user@nopolicy.test H=mx.nopolicy.test, no TLS" \
        logged '=> user@nopolicy\.test .*H=mx\.nopolicy\.test \[127\.0\.0\.15\]:25 C='
    check "the sink got it without TLS" sink mx.nopolicy.test 'len(m) == 1 and not m[0]["tls"]'

    echo "-- 6. enforce, first MX outside the policy: skipped, second MX used"
    check "tcp:connect event skipped mx1.fallback.test" \
        logged 'H=mx1\.fallback\.test \[127\.0\.0\.16\]:25 Event requests alternate response'
    check "=> user@fallback.test H=mx2.fallback.test ... CV=yes" \
        logged '=> user@fallback\.test .*H=mx2\.fallback\.test \[127\.0\.0\.17\]:25 X=TLS[^ ]* CV=yes'
    check "mx1.fallback.test saw no connection" \
        sink mx1.fallback.test 's["connections"] == 0'
    check "mx2.fallback.test got the message" sink mx2.fallback.test 'len(m) == 1 and m[0]["tls"]'

    echo "-- 7. DANE-EE pass, certificate for another name under an enforce policy: delivered"
    check "=> user@dane-ee.test H=mx.dane-ee.test ... CV=dane" \
        logged '=> user@dane-ee\.test .*H=mx\.dane-ee\.test \[127\.0\.0\.18\]:25 X=TLS[^ ]* CV=dane'
    check "mtasts did not judge the DANE connection (no tls:cert refusal)" \
        bash -c "! grep -q 'event-action.*dane-ee' '$mainlog'"
    check "the sink got it over TLS with SNI mx.dane-ee.test" \
        sink mx.dane-ee.test 'len(m) == 1 and m[0]["tls"] and m[0]["sni"] == "mx.dane-ee.test"'

    echo "-- 8. TLSA mismatch, valid certificate (MTA-STS would pass) under enforce: deferred"
    check "DANE attempt failed at mx.dane-mismatch.test" \
        logged 'DANE attempt failed; TLS connection to mx\.dane-mismatch\.test .*certificate differs'
    check "== user@dane-mismatch.test deferred" \
        logged '== user@dane-mismatch\.test R=mtasts_dnslookup T=mtasts_smtp defer .*H=mx\.dane-mismatch\.test'
    check "the sink of mx.dane-mismatch.test got no message" sink mx.dane-mismatch.test 'len(m) == 0'

    echo "-- 9. TLSA mismatch under a testing policy: deferred, never delivered"
    check "DANE attempt failed at mx.dane-testing.test" \
        logged 'DANE attempt failed; TLS connection to mx\.dane-testing\.test .*certificate differs'
    check "== user@dane-testing.test deferred" \
        logged '== user@dane-testing\.test R=mtasts_dnslookup T=mtasts_smtp defer .*H=mx\.dane-testing\.test'
    check "the sink of mx.dane-testing.test got no message" sink mx.dane-testing.test 'len(m) == 0'

    echo "-- 10. bogus TLSA (spoiled signature) under a testing policy: deferred before connecting"
    check "DANE error: tlsa lookup DEFER at mx.dane-bogus.test" \
        logged 'H=mx\.dane-bogus\.test \[127\.0\.0\.21\]:25: DANE error: tlsa lookup DEFER'
    check "== user@dane-bogus.test deferred" logged '== user@dane-bogus\.test R=mtasts_dnslookup T=mtasts_smtp defer'
    check "the sink of mx.dane-bogus.test saw no connection" sink mx.dane-bogus.test 's["connections"] == 0'

    echo "-- 11. enforce, MX outside the policy but with DANE: DANE decides, delivered"
    check "other.dane-outside.test was not skipped at tcp:connect" \
        bash -c "! grep -q 'H=other\.dane-outside\.test .*Event requests alternate response' '$mainlog'"
    check "=> user@dane-outside.test H=other.dane-outside.test ... CV=dane" \
        logged '=> user@dane-outside\.test .*H=other\.dane-outside\.test \[127\.0\.0\.22\]:25 X=TLS[^ ]* CV=dane'
    check "the sink got it over TLS" sink other.dane-outside.test 'len(m) == 1 and m[0]["tls"]'

    echo "-- 12. enforce, DANE MX fails, next MX has no TLSA: mtasts judges it (no DANE state left over)"
    check "DANE attempt failed at mx1.dane-next.test" \
        logged 'DANE attempt failed; TLS connection to mx1\.dane-next\.test'
    check "mtasts refused mx2.dane-next.test in the tls:cert event" \
        logged 'SSL verify denied by event-action: depth=0: MTA-STS enforce policy of dane-next\.test refuses mx2\.dane-next\.test: certificate-host-mismatch'
    check "== user@dane-next.test deferred" logged '== user@dane-next\.test R=mtasts_dnslookup T=mtasts_smtp defer'
    check "the sink of mx1.dane-next.test got no message" sink mx1.dane-next.test 'len(m) == 0'
    check "the sink of mx2.dane-next.test got no message" sink mx2.dane-next.test 'len(m) == 0'

    echo "-- 13. no MTA-STS policy, DANE MX without STARTTLS: deferred (DANE requires TLS)"
    check "a TLS session is required at mx.dane-cleartext.test" \
        logged 'H=mx\.dane-cleartext\.test \[127\.0\.0\.25\]:25: a TLS session is required'
    check "== user@dane-cleartext.test deferred" \
        logged '== user@dane-cleartext\.test R=mtasts_dnslookup T=mtasts_smtp defer'
    check "the sink of mx.dane-cleartext.test got no message" sink mx.dane-cleartext.test 'len(m) == 0'

    echo "-- 14. enforce, secure TLSA RRset with only an unusable (PKIX-EE) record: not delivered"
    if [[ $mtasts_dnssec == off ]]; then
        check "Exim loads no record, so mtasts judges: refused in the tls:cert event" \
            logged 'SSL verify denied by event-action: depth=0: MTA-STS enforce policy of dane-unusable\.test refuses mx\.dane-unusable\.test: certificate-host-mismatch'
    else
        # mtasts's own DANE says "TLS without authentication" (docs/dane.md, DANE-V-6) and does
        # not refuse; Exim's own verification under enforce (tls_verify_hosts) still does.
        check "mtasts (DANE-V-6) did not refuse; Exim's own certificate verification did" \
            bash -c "! grep -q 'event-action.*dane-unusable' '$mainlog' &&
                grep -q 'TLS connection to mx\.dane-unusable\.test .*(certificate verification failed)' '$mainlog'"
    fi
    check "== user@dane-unusable.test deferred" logged '== user@dane-unusable\.test R=mtasts_dnslookup T=mtasts_smtp defer'
    check "the sink of mx.dane-unusable.test got no message" sink mx.dane-unusable.test 'len(m) == 0'

    echo "-- 15. bogus MX RRset (spoiled signature), testing policy: the router defers, nothing sent"
    check "== user@bogus-mx.test deferred by the router: host lookup did not complete" \
        logged '== user@bogus-mx\.test R=mtasts_dnslookup defer .*host lookup did not complete'
    check "the sink of mx.bogus-mx.test saw no connection" sink mx.bogus-mx.test 's["connections"] == 0'

    echo "-- 16. TLSRPT report mail from the report user: exempt from MTA-STS, delivered (APPLY-13, RPT-13)"
    check "=> reports@badcert.test R=mtasts_tlsrpt_reports T=mtasts_tlsrpt_smtp ... CV=no" \
        logged '=> reports@badcert\.test .*R=mtasts_tlsrpt_reports T=mtasts_tlsrpt_smtp H=mx\.badcert\.test \[127\.0\.0\.13\]:25 X=TLS[^ ]* CV=no'
    check "the sink of mx.badcert.test got the report over TLS" \
        sink mx.badcert.test 'len(m) == 1 and m[0]["rcpt_to"] == ["reports@badcert.test"] and m[0]["tls"]'
    check "the same message from another user is not exempt: deferred by the MTA-STS check" \
        logged '== forged@badcert\.test R=mtasts_dnslookup T=mtasts_smtp defer'

    echo "-- overall"
    check "nothing bounced (no ** lines)" bash -c "! grep -q ' \*\* ' '$mainlog'"
    check "no expansion failed (event_action, dnsdb look-ups)" bash -c "! grep -qi 'expansion.*fail' '$mainlog'"
    check "the panic log has only Exim's note about -C" \
        bash -c "! grep -v 'exim user lost privilege for using -C option' '$paniclog' 2>/dev/null | grep -q ."

    echo "-- $count checks, $failures failed"
    ((failures == 0))
}
