# Sourced by run.sh: `be_tests LIB FIXTURE_DIR WORK_DIR` runs every dlfunc entry point through
# `exim -be` against the mtasts-fixture domains (enforce.test, testing.test, none.test,
# nopolicy.test, slow.test, broken.test), with good and bad input, and checks the output and
# the return code (Exim logs "dlfunc ... failed (3)" on stderr for ERROR, nothing for FAIL).
#
# Expressions use macros defined with -D, so that they stay short (Exim refuses command-line
# arguments over 256 characters) : MTLIB (the library), MTCFG ({config=...} of the fixture),
# MTDIR (this test's directory, holding base64 certificates), MTBAD ({config=...} of a
# configuration with an unknown key), MTDEAD ({config=...} whose DNS server is unreachable),
# MTOVR ({config=...} of the fixture's configuration with per-domain overrides appended).

be_tests() {
    local lib=$1 fx=$2 work=$3 conf failures=0 count=0
    conf="$(dirname "${BASH_SOURCE[0]}")/be.conf"
    mkdir -p "$work"
    chmod 755 "$work"
    install -d -o "${exim_user:-Debian-exim}" -g "${exim_user:-Debian-exim}" "$work/spool" "$work/log"

    # Certificates as Exim hands them over: ${base64:$tls_out_peercert} is the base64 of one
    # DER certificate. The fixture's PEM files hold the leaf, then the intermediate.
    local name
    for name in mx-enforce mx-testing wrong-name expired untrusted; do
        awk '/BEGIN/ { n++ } n == 1 && !/-----/' "$fx/$name.pem" | tr -d '\n' >"$work/$name.leaf"
        awk '/BEGIN/ { n++ } n == 2 && !/-----/' "$fx/$name.pem" | tr -d '\n' >"$work/$name.inter"
    done
    printf '%s' 'this is not a certificate' >"$work/garbage"
    printf '[bogus]\nkey = 1\n' >"$work/bad.toml"
    sed 's/^nameservers = .*/nameservers = ["127.0.0.1:9"]/; s/^timeout_ms = 3000/timeout_ms = 1000/' \
        "$fx/mtasts.toml" >"$work/dead-dns.toml"
    # README "Overrides": enforce.test skipped, pinned-exim.test pinned (testing) from a file
    # relative to the configuration.
    printf 'version: STSv1\nmode: testing\nmx: mx.pinned-exim.test\nmax_age: 86400\n' >"$work/pinned.txt"
    { cat "$fx/mtasts.toml"; printf '\n[override."enforce.test"]\nmode = "none"\n'
      printf '[override."pinned-exim.test"]\npolicy = "pinned.txt"\n'; } >"$work/override.toml"

    be() {
        exim -C "$conf" -DBE_DIR="$work" -DMTLIB="$lib" "-DMTCFG={config=$fx/mtasts.toml}" \
            -DMTDIR="$work" "-DMTBAD={config=$work/bad.toml}" \
            "-DMTDEAD={config=$work/dead-dns.toml}" "-DMTOVR={config=$work/override.toml}" -be "$@"
    }
    report() { # report OK|FAIL NAME DETAIL
        count=$((count + 1))
        if [[ $1 == OK ]]; then
            printf 'ok    %s\n' "$2"
        else
            failures=$((failures + 1))
            printf 'FAIL  %s\n%s\n' "$2" "$3" | sed '3,$s/^/      /'
        fi
    }
    # expect NAME EXPECTED EXPR...: the expressions, expanded by one exim process (so that state
    # kept between calls is seen), print EXPECTED (one line per expression) and nothing fails.
    expect() {
        local name=$1 want=$2 got err
        shift 2
        got=$(be "$@" 2>"$work/stderr") || true
        err=$(cat "$work/stderr")
        if [[ $got == "$want" && $err != *"failed ("* ]]; then
            report OK "$name => ${got//$'\n'/ | }"
        else
            report FAIL "$name" "expected: $want"$'\n'"got: $got"$'\n'"stderr: $err"
        fi
    }
    # expect_failure NAME CODE MESSAGE EXPR: the expansion fails with "Failed: MESSAGE..." and
    # return code CODE (3 = ERROR is logged by Exim with the code; 2 = FAIL is not logged).
    expect_failure() {
        local name=$1 code=$2 want=$3 expr=$4 got err ok=1
        got=$(be "$expr" 2>"$work/stderr") || true
        err=$(cat "$work/stderr")
        [[ $got == "Failed: $want"* ]] || ok=0
        if ((code == 3)); then
            [[ $err == *"failed (3): $want"* ]] || ok=0
        else
            [[ $err != *"failed ("* ]] || ok=0
        fi
        if ((ok)); then
            report OK "$name => code $code, ${got}"
        else
            report FAIL "$name" "expected code $code and: Failed: $want"$'\n'"got: $got"$'\n'"stderr: $err"
        fi
    }

    echo "-- mtasts_exim_mode{domain}"
    expect "enforce policy" enforce '${dlfunc{MTLIB}{mtasts_exim_mode}{enforce.test}MTCFG}'
    expect "testing policy" testing '${dlfunc{MTLIB}{mtasts_exim_mode}{testing.test}MTCFG}'
    expect "mode: none policy" none '${dlfunc{MTLIB}{mtasts_exim_mode}{none.test}MTCFG}'
    expect "no TXT record" none '${dlfunc{MTLIB}{mtasts_exim_mode}{nopolicy.test}MTCFG}'
    expect "policy host answers 404: none, not DEFER" none \
        '${dlfunc{MTLIB}{mtasts_exim_mode}{broken.test}MTCFG}'
    expect "DNS server unreachable: none, not DEFER" none \
        '${dlfunc{MTLIB}{mtasts_exim_mode}{enforce.test}MTDEAD}'
    expect "slow policy host (1 s)" enforce '${dlfunc{MTLIB}{mtasts_exim_mode}{slow.test}MTCFG}'
    expect "upper case and root dot" enforce '${dlfunc{MTLIB}{mtasts_exim_mode}{Enforce.TEST.}MTCFG}'
    expect "address literal has no policy" none '${dlfunc{MTLIB}{mtasts_exim_mode}{[192.0.2.1]}MTCFG}'
    expect "same answer twice in one process (cached)" $'enforce\nenforce' \
        '${dlfunc{MTLIB}{mtasts_exim_mode}{enforce.test}MTCFG}' \
        '${dlfunc{MTLIB}{mtasts_exim_mode}{enforce.test}MTCFG}'
    got=$(MTASTS_CONFIG=$fx/mtasts.toml be '${dlfunc{MTLIB}{mtasts_exim_mode}{enforce.test}}' 2>&1) || true
    if [[ $got == enforce ]]; then
        report OK "no {config=}: default engine from \$MTASTS_CONFIG (keep_environment) => $got"
    else
        report FAIL "no {config=}: default engine from \$MTASTS_CONFIG" "got: $got"
    fi
    expect_failure "no argument" 3 'usage: ${dlfunc{/path/libmtasts.so}{mtasts_exim_mode}{DOMAIN}}' \
        '${dlfunc{MTLIB}{mtasts_exim_mode}}'
    expect_failure "second argument not config=" 3 'usage:' \
        '${dlfunc{MTLIB}{mtasts_exim_mode}{enforce.test}{testing.test}}'
    expect_failure "too many arguments" 3 'usage:' \
        '${dlfunc{MTLIB}{mtasts_exim_mode}{enforce.test}{x}MTCFG}'
    expect_failure "config= without a path" 3 'usage:' \
        '${dlfunc{MTLIB}{mtasts_exim_mode}{enforce.test}{config=}}'
    expect_failure "missing configuration file" 3 'mtasts: cannot read configuration /nonexistent/mtasts.toml' \
        '${dlfunc{MTLIB}{mtasts_exim_mode}{enforce.test}{config=/nonexistent/mtasts.toml}}'
    expect_failure "configuration with an unknown key" 3 'mtasts: ' \
        '${dlfunc{MTLIB}{mtasts_exim_mode}{enforce.test}MTBAD}'
    expect_failure "empty domain" 2 'mtasts: policy domain: the domain name is empty' \
        '${dlfunc{MTLIB}{mtasts_exim_mode}{}MTCFG}'
    expect_failure "two dots in a row" 2 'mtasts: policy domain: the domain name has an empty label' \
        '${dlfunc{MTLIB}{mtasts_exim_mode}{a..test}MTCFG}'
    expect_failure "underscore" 2 "mtasts: policy domain: the character '_' is not allowed" \
        '${dlfunc{MTLIB}{mtasts_exim_mode}{under_score.test}MTCFG}'
    expect_failure "non-UTF-8 domain" 3 'mtasts: the domain argument is not valid UTF-8' \
        "\${dlfunc{MTLIB}{mtasts_exim_mode}{$(printf '\xff\xfe').test}MTCFG}"

    echo "-- mtasts_exim_record{domain}{mx}{result}"
    expect "a success" '' '${dlfunc{MTLIB}{mtasts_exim_record}{enforce.test}{mx.enforce.test}{success}MTCFG}'
    expect "a failure with its RFC 8460 result type" '' \
        '${dlfunc{MTLIB}{mtasts_exim_record}{testing.test}{mx.testing.test}{starttls-not-supported}MTCFG}'
    expect "no policy: accepted, nothing counted" '' \
        '${dlfunc{MTLIB}{mtasts_exim_record}{nopolicy.test}{mx.nopolicy.test}{certificate-expired}MTCFG}'
    expect_failure "unknown result" 3 'mtasts: the result is not `success`' \
        '${dlfunc{MTLIB}{mtasts_exim_record}{enforce.test}{mx.enforce.test}{broken}MTCFG}'
    expect_failure "mx-mismatch is not an RFC 8460 result type" 3 'mtasts: the result is not `success`' \
        '${dlfunc{MTLIB}{mtasts_exim_record}{enforce.test}{mx.enforce.test}{mx-mismatch}MTCFG}'
    expect_failure "two arguments" 3 'usage:' '${dlfunc{MTLIB}{mtasts_exim_record}{enforce.test}{mx.enforce.test}}'
    expect_failure "invalid domain" 2 'mtasts: policy domain:' \
        '${dlfunc{MTLIB}{mtasts_exim_record}{a..test}{mx.enforce.test}{success}MTCFG}'

    echo "-- mtasts_exim_mx_ok{domain}{mx}"
    expect "enforce, listed MX" yes '${dlfunc{MTLIB}{mtasts_exim_mx_ok}{enforce.test}{mx.enforce.test}MTCFG}'
    expect "enforce, MX in other case with root dot" yes \
        '${dlfunc{MTLIB}{mtasts_exim_mx_ok}{enforce.test}{MX.Enforce.Test.}MTCFG}'
    expect "enforce, wildcard pattern" yes \
        '${dlfunc{MTLIB}{mtasts_exim_mx_ok}{enforce.test}{a.backup.enforce.test}MTCFG}'
    expect "enforce, wildcard covers one label only" no \
        '${dlfunc{MTLIB}{mtasts_exim_mx_ok}{enforce.test}{b.a.backup.enforce.test}MTCFG}'
    expect "enforce, MX not listed" no '${dlfunc{MTLIB}{mtasts_exim_mx_ok}{enforce.test}{mx.evil.test}MTCFG}'
    expect "testing, MX not listed" no '${dlfunc{MTLIB}{mtasts_exim_mx_ok}{testing.test}{mx.evil.test}MTCFG}'
    expect "mode none, any MX" yes '${dlfunc{MTLIB}{mtasts_exim_mx_ok}{none.test}{mx.evil.test}MTCFG}'
    expect "no policy, any MX" yes '${dlfunc{MTLIB}{mtasts_exim_mx_ok}{nopolicy.test}{mx.evil.test}MTCFG}'
    expect "fetch fails, any MX" yes '${dlfunc{MTLIB}{mtasts_exim_mx_ok}{broken.test}{mx.evil.test}MTCFG}'
    expect_failure "one argument" 3 'usage: ${dlfunc{/path/libmtasts.so}{mtasts_exim_mx_ok}{DOMAIN}{MX}}' \
        '${dlfunc{MTLIB}{mtasts_exim_mx_ok}{enforce.test}MTCFG}'
    expect_failure "three arguments" 3 'usage:' \
        '${dlfunc{MTLIB}{mtasts_exim_mx_ok}{enforce.test}{mx.enforce.test}{x}}'
    expect_failure "invalid domain" 2 'mtasts: policy domain:' \
        '${dlfunc{MTLIB}{mtasts_exim_mx_ok}{-bad-.test}{mx.enforce.test}MTCFG}'
    # An MX that is not an ASCII host name is judged, not refused: it matches no pattern.
    expect "non-UTF-8 MX is not listed" no \
        "\${dlfunc{MTLIB}{mtasts_exim_mx_ok}{enforce.test}{$(printf '\xff').test}MTCFG}"
    expect "full-width dots in the MX are not mapped onto dots" no \
        "\${dlfunc{MTLIB}{mtasts_exim_mx_ok}{enforce.test}{mx$(printf '\xef\xbc\x8e')enforce$(printf '\xef\xbc\x8e')test}MTCFG}"

    echo "-- mtasts_exim_check{domain}{mx}{certificate}"
    expect "enforce, full chain as PEM" pass \
        "\${dlfunc{MTLIB}{mtasts_exim_check}{enforce.test}{mx.enforce.test}{\${readfile{$fx/mx-enforce.pem}}}MTCFG}"
    expect "enforce, leaf and intermediate as base64 DER" pass \
        '${dlfunc{MTLIB}{mtasts_exim_check}{enforce.test}{mx.enforce.test}{${readfile{MTDIR/mx-enforce.leaf}},${readfile{MTDIR/mx-enforce.inter}}}MTCFG}'
    expect "enforce, leaf alone (\${base64:\$tls_out_peercert}): no intermediate, not trusted" fail-enforce \
        '${dlfunc{MTLIB}{mtasts_exim_check}{enforce.test}{mx.enforce.test}{${readfile{MTDIR/mx-enforce.leaf}}}MTCFG}'
    expect "enforce, no TLS" fail-enforce '${dlfunc{MTLIB}{mtasts_exim_check}{enforce.test}{mx.enforce.test}{}MTCFG}'
    expect "enforce, certificate for another name" fail-enforce \
        "\${dlfunc{MTLIB}{mtasts_exim_check}{enforce.test}{mx.enforce.test}{\${readfile{$fx/wrong-name.pem}}}MTCFG}"
    expect "enforce, expired certificate" fail-enforce \
        "\${dlfunc{MTLIB}{mtasts_exim_check}{enforce.test}{mx.enforce.test}{\${readfile{$fx/expired.pem}}}MTCFG}"
    expect "enforce, untrusted root" fail-enforce \
        "\${dlfunc{MTLIB}{mtasts_exim_check}{enforce.test}{mx.enforce.test}{\${readfile{$fx/untrusted.pem}}}MTCFG}"
    expect "enforce, MX outside the policy" fail-enforce \
        "\${dlfunc{MTLIB}{mtasts_exim_check}{enforce.test}{mx.evil.test}{\${readfile{$fx/mx-enforce.pem}}}MTCFG}"
    expect "enforce, text that is no certificate" fail-enforce \
        '${dlfunc{MTLIB}{mtasts_exim_check}{enforce.test}{mx.enforce.test}{${readfile{MTDIR/garbage}}}MTCFG}'
    expect "testing, good chain" pass \
        "\${dlfunc{MTLIB}{mtasts_exim_check}{testing.test}{mx.testing.test}{\${readfile{$fx/mx-testing.pem}}}MTCFG}"
    expect "testing, expired certificate" fail-testing \
        "\${dlfunc{MTLIB}{mtasts_exim_check}{testing.test}{mx.testing.test}{\${readfile{$fx/expired.pem}}}MTCFG}"
    expect "testing, no TLS" fail-testing '${dlfunc{MTLIB}{mtasts_exim_check}{testing.test}{mx.testing.test}{}MTCFG}'
    expect "mode none, no TLS" no-policy '${dlfunc{MTLIB}{mtasts_exim_check}{none.test}{mx.none.test}{}MTCFG}'
    expect "no policy, no TLS" no-policy '${dlfunc{MTLIB}{mtasts_exim_check}{nopolicy.test}{mx.x.test}{}MTCFG}'
    expect "fetch fails, no TLS" no-policy '${dlfunc{MTLIB}{mtasts_exim_check}{broken.test}{mx.x.test}{}MTCFG}'
    expect_failure "\$tls_out_peercert as a string is <cert>" 3 'mtasts: the certificate argument is the text <cert>' \
        '${dlfunc{MTLIB}{mtasts_exim_check}{enforce.test}{mx.enforce.test}{<cert>}MTCFG}'
    expect_failure "two arguments" 3 'usage: ${dlfunc{/path/libmtasts.so}{mtasts_exim_check}{DOMAIN}{MX}{CERTIFICATE}}' \
        '${dlfunc{MTLIB}{mtasts_exim_check}{enforce.test}{mx.enforce.test}MTCFG}'
    expect_failure "empty domain" 2 'mtasts: policy domain: the domain name is empty' \
        '${dlfunc{MTLIB}{mtasts_exim_check}{}{mx.enforce.test}{}MTCFG}'

    echo "-- mtasts_exim_tls_cert{domain}{mx}{depth}{certificate} (one process, as in tls:cert events)"
    expect "enforce, intermediate then good leaf: accepted" $'[]\n[]' \
        '[${dlfunc{MTLIB}{mtasts_exim_tls_cert}{enforce.test}{mx.enforce.test}{1}{${readfile{MTDIR/mx-enforce.inter}}}MTCFG}]' \
        '[${dlfunc{MTLIB}{mtasts_exim_tls_cert}{enforce.test}{mx.enforce.test}{0}{${readfile{MTDIR/mx-enforce.leaf}}}MTCFG}]'
    expect "enforce, intermediate then leaf for another name: refused" \
        $'[]\n[MTA-STS enforce policy of enforce.test refuses mx.enforce.test: certificate-host-mismatch: no subjectAltName dNSName of the certificate matches `mx.enforce.test`]' \
        '[${dlfunc{MTLIB}{mtasts_exim_tls_cert}{enforce.test}{mx.enforce.test}{1}{${readfile{MTDIR/wrong-name.inter}}}MTCFG}]' \
        '[${dlfunc{MTLIB}{mtasts_exim_tls_cert}{enforce.test}{mx.enforce.test}{0}{${readfile{MTDIR/wrong-name.leaf}}}MTCFG}]'
    expect "enforce, leaf without its intermediate: refused" \
        '[MTA-STS enforce policy of enforce.test refuses mx.enforce.test: certificate-not-trusted: the chain does not lead to a trusted root (unknown issuer or missing intermediate)]' \
        '[${dlfunc{MTLIB}{mtasts_exim_tls_cert}{enforce.test}{mx.enforce.test}{0}{${readfile{MTDIR/mx-enforce.leaf}}}MTCFG}]'
    expect "a chain for another MX is not reused" \
        $'[]\n[MTA-STS enforce policy of enforce.test refuses a.backup.enforce.test: certificate-not-trusted: the chain does not lead to a trusted root (unknown issuer or missing intermediate)]' \
        '[${dlfunc{MTLIB}{mtasts_exim_tls_cert}{enforce.test}{mx.enforce.test}{1}{${readfile{MTDIR/mx-enforce.inter}}}MTCFG}]' \
        '[${dlfunc{MTLIB}{mtasts_exim_tls_cert}{enforce.test}{a.backup.enforce.test}{0}{${readfile{MTDIR/mx-enforce.leaf}}}MTCFG}]'
    expect "testing, expired leaf: never refused" $'[]\n[]' \
        '[${dlfunc{MTLIB}{mtasts_exim_tls_cert}{testing.test}{mx.testing.test}{1}{${readfile{MTDIR/expired.inter}}}MTCFG}]' \
        '[${dlfunc{MTLIB}{mtasts_exim_tls_cert}{testing.test}{mx.testing.test}{0}{${readfile{MTDIR/expired.leaf}}}MTCFG}]'
    expect "no policy: never refused" '[]' \
        '[${dlfunc{MTLIB}{mtasts_exim_tls_cert}{nopolicy.test}{mx.x.test}{0}{${readfile{MTDIR/garbage}}}MTCFG}]'
    expect_failure "depth that is not a number" 3 'mtasts: the depth argument of mtasts_exim_tls_cert is not a number' \
        '${dlfunc{MTLIB}{mtasts_exim_tls_cert}{enforce.test}{mx.enforce.test}{x}{}MTCFG}'
    expect_failure "<cert>" 3 'mtasts: the certificate argument is the text <cert>' \
        '${dlfunc{MTLIB}{mtasts_exim_tls_cert}{enforce.test}{mx.enforce.test}{0}{<cert>}MTCFG}'
    expect_failure "three arguments" 3 'usage: ${dlfunc{/path/libmtasts.so}{mtasts_exim_tls_cert}' \
        '${dlfunc{MTLIB}{mtasts_exim_tls_cert}{enforce.test}{mx.enforce.test}{0}MTCFG}'

    echo "-- per-domain overrides (README \"Overrides\")"
    expect "override mode none: no policy" $'none\nyes' \
        '${dlfunc{MTLIB}{mtasts_exim_mode}{enforce.test}MTOVR}' \
        '${dlfunc{MTLIB}{mtasts_exim_mx_ok}{enforce.test}{mx.other.test}MTOVR}'
    expect "override pinned: its mode and MX" $'testing\nyes\nno' \
        '${dlfunc{MTLIB}{mtasts_exim_mode}{pinned-exim.test}MTOVR}' \
        '${dlfunc{MTLIB}{mtasts_exim_mx_ok}{pinned-exim.test}{mx.pinned-exim.test}MTOVR}' \
        '${dlfunc{MTLIB}{mtasts_exim_mx_ok}{pinned-exim.test}{mx.other.test}MTOVR}'
    expect "not overridden: as before" enforce '${dlfunc{MTLIB}{mtasts_exim_mode}{enforce.test}MTCFG}'

    echo "-- $count checks, $failures failed"
    ((failures == 0))
}
