"""Engine.check_dane and Engine.check_mx_dane against the fixture's DNSSEC-signed zones.

`mtasts-fixture` signs its zones and writes ``[dns] dnssec = "validate"`` with its trust anchor
(the table of domains is in ``fixtures/src/main.rs``): ``dane.test``, ``dane-mismatch.test`` and
``dane-bogus.test`` have TLSA records for their MX hosts; the other domains have none, so MTA-STS
alone decides there. The rules are docs/dane.md, "DANE in the verdict" (DANE-V-*).
"""

from __future__ import annotations

from typing import Optional

import pytest

import mtasts
from mtasts import DaneStatus, DecidedBy, Mode, Reason, Verdict
from conftest import Fixture

V, R, BY = Verdict, Reason, DecidedBy

#: A DNSSEC-secure RRset of one usable DANE-EE record: DANE decides, whatever the verdict.
DANE_EE = DaneStatus(applies=True, tls_required=True, tlsa_records=1, usable_records=1,
                     decided_by=BY.DANE)
#: A bogus TLSA RRset: DANE applies (a temporary failure), with no records to count.
BOGUS = DaneStatus(applies=True, tls_required=True, tlsa_records=0, usable_records=0,
                   decided_by=BY.DANE)


def no_dane(tls_required: bool, decided_by: DecidedBy) -> DaneStatus:
    """An MX without TLSA records: MTA-STS decides, or nothing does."""
    return DaneStatus(False, tls_required, 0, 0, decided_by)


#: (domain, mx, chain file or None for no TLS, verdict, reason, mode, DANE status).
AFTER_HANDSHAKE = [
    # dane.test (enforce): the DANE-EE 3 1 1 record names the key of mx-dane.
    ("dane.test", "mx.dane.test", "mx-dane.pem", V.PASS, R.NONE, Mode.ENFORCE, DANE_EE),
    ("dane.test", "mx.dane.test", "mx-dane.der", V.PASS, R.NONE, Mode.ENFORCE, DANE_EE),
    # A self-signed certificate for another name with that key: DANE-EE ignores names and
    # issuers and delivers; MTA-STS's failure is still reported (fail-testing).
    ("dane.test", "mx.dane.test", "mx-dane-selfsigned.pem", V.FAIL_TESTING,
     R.CERTIFICATE_NOT_TRUSTED, Mode.ENFORCE, DANE_EE),
    # A chain PKIX would accept for the name, with another key: no record matches.
    ("dane.test", "mx.dane.test", "mx-enforce.pem", V.FAIL_ENFORCE, R.TLSA_INVALID, Mode.ENFORCE,
     DANE_EE),
    # No TLS where DANE applies.
    ("dane.test", "mx.dane.test", None, V.FAIL_ENFORCE, R.DANE_REQUIRED, Mode.ENFORCE, DANE_EE),
    # A mismatch under a testing policy is enforced all the same.
    ("dane-mismatch.test", "mx.dane-mismatch.test", "mx-dane-mismatch.der", V.FAIL_ENFORCE,
     R.TLSA_INVALID, Mode.TESTING, DANE_EE),
    # A bogus TLSA signature, and no MTA-STS policy at all: a temporary failure of the MX.
    ("dane-bogus.test", "mx.dane-bogus.test", "mx-dane.pem", V.FAIL_ENFORCE, R.DNSSEC_INVALID,
     Mode.NO_POLICY, BOGUS),
    # No TLSA records: MTA-STS decides, or nothing does.
    ("enforce.test", "mx.enforce.test", "mx-enforce.pem", V.PASS, R.NONE, Mode.ENFORCE,
     no_dane(True, BY.MTA_STS)),
    ("enforce.test", "mx.enforce.test", "mx-dane-selfsigned.pem", V.FAIL_ENFORCE,
     R.CERTIFICATE_NOT_TRUSTED, Mode.ENFORCE, no_dane(True, BY.MTA_STS)),
    ("nopolicy.test", "mx.nopolicy.test", None, V.NO_POLICY, R.NONE, Mode.NO_POLICY,
     no_dane(False, BY.NONE)),
]

#: (domain, mx, verdict, reason, DANE status) before connecting.
BEFORE_CONNECTING = [
    ("dane.test", "mx.dane.test", V.PASS, R.NONE, DANE_EE),
    ("dane-mismatch.test", "mx.dane-mismatch.test", V.PASS, R.NONE, DANE_EE),
    ("dane-bogus.test", "mx.dane-bogus.test", V.FAIL_ENFORCE, R.DNSSEC_INVALID, BOGUS),
    ("enforce.test", "mx.enforce.test", V.PASS, R.NONE, no_dane(True, BY.MTA_STS)),
    ("testing.test", "mx.testing.test", V.PASS, R.NONE, no_dane(False, BY.MTA_STS)),
    ("nopolicy.test", "mx.nopolicy.test", V.NO_POLICY, R.NONE, no_dane(False, BY.NONE)),
]


@pytest.mark.parametrize(
    "domain,mx,chain,verdict,reason,mode,dane",
    AFTER_HANDSHAKE,
    ids=[f"{d}-{c or 'no-tls'}" for d, _, c, *_ in AFTER_HANDSHAKE],
)
def test_check_dane_after_the_handshake(
    fixture: Fixture,
    engine: mtasts.Engine,
    domain: str,
    mx: str,
    chain: Optional[str],
    verdict: Verdict,
    reason: Reason,
    mode: Mode,
    dane: DaneStatus,
) -> None:
    cert = fixture.chain(chain) if chain else None
    # Twice: the second answer comes from the policy and TLSA caches and must agree.
    for _ in range(2):
        result, got = engine.check_dane(domain, mx, cert)
        assert (result.verdict, result.reason, result.mode) == (verdict, reason, mode), result
        assert got == dane
        assert isinstance(got.decided_by, DecidedBy)
        if reason not in (R.NONE, R.STARTTLS_NOT_SUPPORTED):
            assert result.detail, "a failure explains itself"
        # The plain call gives the same verdict, without the DANE details.
        assert engine.check(domain, mx, cert) == result


@pytest.mark.parametrize(
    "domain,mx,verdict,reason,dane",
    BEFORE_CONNECTING,
    ids=[d for d, *_ in BEFORE_CONNECTING],
)
def test_check_mx_dane_before_connecting(
    engine: mtasts.Engine,
    domain: str,
    mx: str,
    verdict: Verdict,
    reason: Reason,
    dane: DaneStatus,
) -> None:
    result, got = engine.check_mx_dane(domain, mx)
    assert (result.verdict, result.reason) == (verdict, reason), result
    assert got == dane
    assert engine.check_mx(domain, mx) == result


def test_dane_failures_are_never_delivered(fixture: Fixture, engine: mtasts.Engine) -> None:
    """The MTA's view: ``may_deliver`` is false for every DANE failure, true for a DANE pass,
    even when MTA-STS alone would have refused the chain."""
    selfsigned = fixture.chain("mx-dane-selfsigned.der")
    assert engine.check_dane("dane.test", "mx.dane.test", selfsigned)[0].may_deliver
    assert not engine.check("enforce.test", "mx.enforce.test", selfsigned).may_deliver
    for domain, mx, cert in [
        ("dane.test", "mx.dane.test", None),
        ("dane-mismatch.test", "mx.dane-mismatch.test", fixture.chain("mx-dane-mismatch.pem")),
        ("dane-bogus.test", "mx.dane-bogus.test", fixture.chain("mx-dane.pem")),
    ]:
        result, dane = engine.check_dane(domain, mx, cert)
        assert not result.may_deliver and dane.decided_by == DecidedBy.DANE, (domain, result)


def test_dane_reason_names() -> None:
    assert Reason.TLSA_INVALID.rfc_name == "tlsa-invalid"
    assert Reason.DNSSEC_INVALID.rfc_name == "dnssec-invalid"
    assert Reason.DANE_REQUIRED.rfc_name == "dane-required"
