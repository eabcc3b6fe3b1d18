"""Engine.check, Engine.check_mx and Engine.policy against the fixture's domains."""

from __future__ import annotations

import ctypes
import dataclasses
import json
import os
import sqlite3
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import List, Optional, Tuple

import pytest

import mtasts
from mtasts import Mode, Reason, Status, Verdict, _lib
from mtasts._errors import read_string
from conftest import Fixture, store_config

V, R = Verdict, Reason

# (domain, mx, chain file or None, verdict, reason)
CASES = [
    # enforce.test: mx.enforce.test and *.backup.enforce.test
    ("enforce.test", "mx.enforce.test", None, V.FAIL_ENFORCE, R.STARTTLS_NOT_SUPPORTED),
    ("enforce.test", "mx.enforce.test", "mx-enforce.pem", V.PASS, R.NONE),
    ("enforce.test", "mx.enforce.test", "mx-enforce.der", V.PASS, R.NONE),
    (
        "enforce.test",
        "mx.enforce.test",
        "wrong-name.pem",
        V.FAIL_ENFORCE,
        R.CERTIFICATE_HOST_MISMATCH,
    ),
    (
        "enforce.test",
        "mx.enforce.test",
        "wrong-name.der",
        V.FAIL_ENFORCE,
        R.CERTIFICATE_HOST_MISMATCH,
    ),
    (
        "enforce.test",
        "mx.enforce.test",
        "mx-testing.pem",
        V.FAIL_ENFORCE,
        R.CERTIFICATE_HOST_MISMATCH,
    ),
    ("enforce.test", "mx.enforce.test", "expired.pem", V.FAIL_ENFORCE, R.CERTIFICATE_EXPIRED),
    ("enforce.test", "mx.enforce.test", "expired.der", V.FAIL_ENFORCE, R.CERTIFICATE_EXPIRED),
    ("enforce.test", "mx.enforce.test", "untrusted.pem", V.FAIL_ENFORCE, R.CERTIFICATE_NOT_TRUSTED),
    ("enforce.test", "mx.enforce.test", "untrusted.der", V.FAIL_ENFORCE, R.CERTIFICATE_NOT_TRUSTED),
    (
        "enforce.test",
        "a.backup.enforce.test",
        "mx-enforce.pem",
        V.FAIL_ENFORCE,
        R.CERTIFICATE_HOST_MISMATCH,
    ),
    ("enforce.test", "evil.test", "mx-enforce.pem", V.FAIL_ENFORCE, R.MX_MISMATCH),
    ("enforce.test", "evil.test", None, V.FAIL_ENFORCE, R.MX_MISMATCH),
    # testing.test: failures are reported, delivery goes on
    ("testing.test", "mx.testing.test", None, V.FAIL_TESTING, R.STARTTLS_NOT_SUPPORTED),
    ("testing.test", "mx.testing.test", "mx-testing.pem", V.PASS, R.NONE),
    ("testing.test", "mx.testing.test", "mx-testing.der", V.PASS, R.NONE),
    (
        "testing.test",
        "mx.testing.test",
        "wrong-name.pem",
        V.FAIL_TESTING,
        R.CERTIFICATE_HOST_MISMATCH,
    ),
    ("testing.test", "mx.testing.test", "expired.der", V.FAIL_TESTING, R.CERTIFICATE_EXPIRED),
    ("testing.test", "mx.testing.test", "untrusted.pem", V.FAIL_TESTING, R.CERTIFICATE_NOT_TRUSTED),
    ("testing.test", "evil.test", "mx-testing.pem", V.FAIL_TESTING, R.MX_MISMATCH),
    # none.test: a policy with mode none never fails
    ("none.test", "mx.none.test", None, V.NO_POLICY, R.NONE),
    ("none.test", "mx.none.test", "expired.pem", V.NO_POLICY, R.NONE),
    ("none.test", "evil.test", "untrusted.der", V.NO_POLICY, R.NONE),
    # nopolicy.test: no TXT record
    ("nopolicy.test", "mx.nopolicy.test", None, V.NO_POLICY, R.NONE),
    ("nopolicy.test", "mx.nopolicy.test", "wrong-name.pem", V.NO_POLICY, R.NONE),
]

MODES = {
    "enforce.test": (Mode.ENFORCE, "e1"),
    "testing.test": (Mode.TESTING, "t1"),
    "none.test": (Mode.NONE, "n1"),
    "nopolicy.test": (Mode.NO_POLICY, None),
}


@pytest.mark.parametrize(
    "domain,mx,chain,verdict,reason",
    CASES,
    ids=[f"{d}-{m}-{c or 'no-tls'}" for d, m, c, _, _ in CASES],
)
def test_verdicts(
    fixture: Fixture,
    engine: mtasts.Engine,
    domain: str,
    mx: str,
    chain: Optional[str],
    verdict: Verdict,
    reason: Reason,
) -> None:
    cert = fixture.chain(chain) if chain else None
    result = engine.check(domain, mx, cert)
    assert (result.verdict, result.reason) == (verdict, reason), result
    mode, policy_id = MODES[domain]
    assert result.mode == mode
    assert result.policy_id == policy_id
    assert isinstance(result.verdict, Verdict) and isinstance(result.reason, Reason)
    assert isinstance(result.mode, Mode)
    if reason == R.NONE:
        assert result.detail is None
    elif reason != R.STARTTLS_NOT_SUPPORTED:
        assert result.detail, "a failure explains itself"
    assert result.may_deliver == (verdict != V.FAIL_ENFORCE)


def test_broken_policy_host_reports_fetch_error(engine: mtasts.Engine) -> None:
    result = engine.check("broken.test", "mx.broken.test", None)
    assert result.verdict == Verdict.NO_POLICY
    assert result.reason == Reason.STS_POLICY_FETCH_ERROR
    assert result.mode == Mode.NO_POLICY and result.policy_id is None
    assert result.detail is not None and "404" in result.detail
    assert result.may_deliver


def test_broken_policy_host_reports_fetch_error_when_cached(
    fixture: Fixture, engine: mtasts.Engine
) -> None:
    engine.check("broken.test", "mx.broken.test", None)
    again = engine.check("broken.test", "mx.broken.test", fixture.chain("mx-enforce.pem"))
    assert again.reason == Reason.STS_POLICY_FETCH_ERROR


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_certificate_as_any_bytes_like(fixture: Fixture, engine: mtasts.Engine, kind: type) -> None:
    for name in ("mx-enforce.pem", "mx-enforce.der"):
        cert = kind(fixture.chain(name))
        assert engine.check("enforce.test", "mx.enforce.test", cert).verdict == Verdict.PASS


def test_garbage_certificate_is_a_failure_not_an_error(engine: mtasts.Engine) -> None:
    result = engine.check("enforce.test", "mx.enforce.test", b"not a certificate")
    assert result.verdict == Verdict.FAIL_ENFORCE
    assert result.reason != Reason.NONE


def test_names_are_case_insensitive_and_may_end_with_a_dot(
    fixture: Fixture, engine: mtasts.Engine
) -> None:
    cert = fixture.chain("mx-enforce.pem")
    assert engine.check("Enforce.TEST", "MX.enforce.test.", cert).verdict == Verdict.PASS


def test_idn_domains_are_accepted(engine: mtasts.Engine) -> None:
    # U-labels are converted by the library; the fixture has no such domain: no policy.
    result = engine.check("bücher.test", "mx.bücher.test")
    assert result.verdict == Verdict.NO_POLICY
    assert engine.check_mx("例え.test", "mx.例え.test").verdict == Verdict.NO_POLICY
    assert engine.policy("bücher.test") is None


def test_address_literal_has_no_policy(engine: mtasts.Engine) -> None:
    assert engine.check("[192.0.2.1]", "mx.example.test").verdict == Verdict.NO_POLICY


@pytest.mark.parametrize(
    "domain,mx,verdict,reason",
    [
        ("enforce.test", "mx.enforce.test", V.PASS, R.NONE),
        ("enforce.test", "x.backup.enforce.test", V.PASS, R.NONE),
        ("enforce.test", "backup.enforce.test", V.FAIL_ENFORCE, R.MX_MISMATCH),
        ("enforce.test", "a.b.backup.enforce.test", V.FAIL_ENFORCE, R.MX_MISMATCH),
        ("enforce.test", "evil.test", V.FAIL_ENFORCE, R.MX_MISMATCH),
        ("testing.test", "mx.testing.test", V.PASS, R.NONE),
        ("testing.test", "evil.test", V.FAIL_TESTING, R.MX_MISMATCH),
        ("none.test", "evil.test", V.NO_POLICY, R.NONE),
        ("nopolicy.test", "evil.test", V.NO_POLICY, R.NONE),
    ],
)
def test_check_mx(
    engine: mtasts.Engine, domain: str, mx: str, verdict: Verdict, reason: Reason
) -> None:
    result = engine.check_mx(domain, mx)
    assert (result.verdict, result.reason) == (verdict, reason), result
    assert result.mode == MODES[domain][0]


def test_result_is_a_frozen_dataclass(engine: mtasts.Engine) -> None:
    result = engine.check_mx("enforce.test", "mx.enforce.test")
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.verdict = Verdict.ERROR  # type: ignore[misc]
    assert result == engine.check_mx("enforce.test", "mx.enforce.test")


def test_policy_fields(engine: mtasts.Engine) -> None:
    before = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(seconds=1)
    policy = engine.policy("enforce.test")
    after = datetime.now(timezone.utc) + timedelta(seconds=1)
    assert policy is not None
    assert policy.mode == Mode.ENFORCE and isinstance(policy.mode, Mode)
    assert policy.max_age == 604800
    assert policy.id == "e1"
    assert policy.mx == ["mx.enforce.test", "*.backup.enforce.test"]
    assert policy.fetched_at.tzinfo == timezone.utc
    assert before <= policy.fetched_at <= after
    assert policy.expires_at - policy.fetched_at == timedelta(seconds=policy.max_age)


def test_policy_of_other_modes(engine: mtasts.Engine) -> None:
    testing = engine.policy("testing.test")
    assert testing is not None and testing.mode == Mode.TESTING
    assert (testing.id, testing.mx) == ("t1", ["mx.testing.test"])
    none = engine.policy("none.test")
    assert none is not None and none.mode == Mode.NONE
    assert (none.id, none.mx) == ("n1", [])


@pytest.mark.parametrize("domain", ["nopolicy.test", "broken.test", "[192.0.2.1]"])
def test_no_policy_is_none(engine: mtasts.Engine, domain: str) -> None:
    assert engine.policy(domain) is None


def test_policy_is_cached_by_the_engine(engine: mtasts.Engine) -> None:
    first = engine.policy("slow.test")  # the policy host answers after 1 s
    start = time.monotonic()
    second = engine.policy("slow.test")
    assert time.monotonic() - start < 0.5
    assert first == second and first is not None and first.id == "s1"


def test_buffer_too_small_retry_protocol(engine: mtasts.Engine) -> None:
    # The policy strings the fixture publishes are short; force the retry with a tiny buffer.
    lib = _lib.lib
    handle = ctypes.c_void_p()
    ptr = engine._acquire()
    try:
        assert lib.mtasts_engine_policy(ptr, b"enforce.test", ctypes.byref(handle)) == Status.OK
    finally:
        engine._release()
    try:
        for size in (1, 4, 21, 22):
            status, text, needed = read_string(
                lambda buf, n, out_n: int(lib.mtasts_policy_mx(handle, 1, buf, n, out_n)), size
            )
            assert (status, text) == (Status.OK, "*.backup.enforce.test")
            assert needed == (21 if size <= 21 else 0)
        status, _, _ = read_string(
            lambda buf, n, out_n: int(lib.mtasts_policy_mx(handle, 2, buf, n, out_n)), 64
        )
        assert status == Status.OUT_OF_RANGE
    finally:
        lib.mtasts_policy_free(handle)


def test_record_sessions_for_tlsrpt(engine: mtasts.Engine) -> None:
    engine.record("enforce.test", "mx.enforce.test")
    engine.record(
        "enforce.test",
        "mx.enforce.test",
        Reason.STARTTLS_NOT_SUPPORTED,
        sending_ip="192.0.2.1",
        receiving_ip="2001:db8::25",
        failure_reason_code="handshake failed",
    )
    engine.flush()
    with pytest.raises(mtasts.InvalidArgumentError):
        engine.record("enforce.test", "mx.enforce.test", sending_ip="not an address")
    with pytest.raises(mtasts.InvalidDomainError):
        engine.record("bad domain", "mx.enforce.test")


def test_recorded_dane_results_go_under_the_mx_hosts_tlsa_policy(fixture: Fixture, tmp_path: Path) -> None:
    """DANE results the MTA records (Python ``Engine.record``, Exim ``mtasts_exim_record``) are
    counted under the MX host's ``tlsa`` policy (RFC 8460 §3: its policy domain is the TLSA base
    domain), never under the recipient domain's ``sts`` policy; a DANE MX without TLS is
    ``starttls-not-supported`` there (docs/dane.md DANE-R-4, docs/conformance.md RPT-21). The
    fixture's zones are unsigned, so the engine knows no TLSA records: the ``tlsa`` policy has
    none, and a plain success counts under ``sts`` only."""
    config, store = store_config(fixture, tmp_path)
    with mtasts.Engine(config) as e:
        e.record("enforce.test", "mx.enforce.test")
        e.record("enforce.test", "mx.enforce.test", Reason.TLSA_INVALID)
        e.record("enforce.test", "mx.enforce.test", Reason.DANE_REQUIRED, receiving_ip="192.0.2.7")
        e.flush()
    lib = ctypes.CDLL(os.environ["MTASTS_LIBRARY"])
    record = lib.mtasts_exim_record
    record.restype = ctypes.c_int
    args = [b"enforce.test", b"mx.enforce.test", b"dnssec-invalid", b"config=" + config.encode()]
    argv = (ctypes.c_char_p * (len(args) + 1))(*args, None)
    out = ctypes.c_char_p()
    assert record(ctypes.byref(out), len(args), argv) == 0, out.value
    with sqlite3.connect(store) as db:
        rows: List[Tuple[str, str, str, int]] = list(
            db.execute("SELECT domain, policy, failure, sessions FROM tlsrpt_counts").fetchall()
        )
    got = sorted(
        (
            domain,
            json.loads(policy)["type"],
            json.loads(policy)["strings"],
            json.loads(failure)["result_type"] if failure else "success",
            n,
        )
        for domain, policy, failure, n in rows
    )
    assert len(got) == 4, got
    domain, kind, strings, result, n = got[0]
    assert (domain, kind, result, n) == ("enforce.test", "sts", "success", 1), got
    assert "mode: enforce" in strings, strings
    assert got[1:] == [
        ("mx.enforce.test", "tlsa", [], "dnssec-invalid", 1),
        ("mx.enforce.test", "tlsa", [], "starttls-not-supported", 1),
        ("mx.enforce.test", "tlsa", [], "tlsa-invalid", 1),
    ], got


def test_store_status_shows_degraded_protection(fixture: Fixture, tmp_path: Path) -> None:
    """A store that cannot be opened is visible to the caller, and ``on_store_error = "tempfail"``
    holds mail for a domain without a policy instead of sending it unprotected."""
    base = fixture.config.read_text()
    assert 'path = "memory"' in base
    with mtasts.Engine(fixture.config) as e:
        assert e.store_status() == mtasts.StoreStatus(mtasts.StoreState.NONE, "")
        assert not e.store_status().degraded
    corrupt = tmp_path / "corrupt.sqlite"
    corrupt.write_bytes(b"not a database, just text " * 20)
    text = base.replace('path = "memory"', f'path = "{corrupt}"')
    for extra, verdict, reason in [
        ("", Verdict.NO_POLICY, None),
        ('[engine]\non_store_error = "tempfail"\n', Verdict.FAIL_ENFORCE, Reason.STORE_UNAVAILABLE),
    ]:
        config = tmp_path / "mtasts.toml"
        config.write_text(text + extra)
        with mtasts.Engine(config) as e:
            status = e.store_status()
            assert status.state == mtasts.StoreState.UNAVAILABLE
            assert status.degraded and "corrupt.sqlite" in status.detail
            result = e.check_mx("nopolicy.test", "mx.nopolicy.test")
            assert result.verdict == verdict, result
            if reason is not None:
                assert result.reason == reason
                assert result.detail and "store is unavailable" in result.detail
