# Sourced by run.sh: `delivery_checks MAINLOG PANICLOG REPORT_JSON` checks the outcome of the
# deliveries made by deliver.sh, from Exim's main log and from what the SMTP sinks saw (the JSON
# line mtasts-mta-fixture prints when it stops).

delivery_checks() {
    local mainlog=$1 paniclog=$2 report=$3 failures=0 count=0
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

    echo "-- 3. enforce, certificate for another name: deferred"
    check "mtasts refused the chain in the tls:cert event" \
        logged 'SSL verify denied by event-action: depth=0: MTA-STS enforce policy of badcert\.test refuses mx\.badcert\.test: certificate-host-mismatch'
    check "== user@badcert.test deferred at mx.badcert.test" \
        logged '== user@badcert\.test R=mtasts_dnslookup T=mtasts_smtp defer .*H=mx\.badcert\.test \[127\.0\.0\.13\]'
    check "the sink of mx.badcert.test got no message" sink mx.badcert.test 'len(m) == 0'

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

    echo "-- overall"
    check "nothing bounced (no ** lines)" bash -c "! grep -q ' \*\* ' '$mainlog'"
    check "the panic log has only Exim's note about -C" \
        bash -c "! grep -v 'exim user lost privilege for using -C option' '$paniclog' 2>/dev/null | grep -q ."

    echo "-- $count checks, $failures failed"
    ((failures == 0))
}
