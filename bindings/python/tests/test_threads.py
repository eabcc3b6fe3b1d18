"""Threads: the calls release the GIL, an Engine is shared safely, close() waits for no one."""

from __future__ import annotations

import threading
import time
from typing import List, Optional

import pytest

import mtasts
from mtasts import Reason, Verdict
from conftest import Fixture

SLOW = 1.0  # slow.test's policy host answers after this many seconds


def test_calls_release_the_gil(fixture: Fixture, capsys: pytest.CaptureFixture[str]) -> None:
    # Two engines: one engine would make the two threads share a single fetch (single-flight).
    engines = [mtasts.Engine(fixture.config) for _ in range(2)]
    cert = fixture.chain("mx-enforce.pem")
    durations: List[Optional[float]] = [None, None]
    verdicts: List[Optional[Verdict]] = [None, None]
    barrier = threading.Barrier(3)

    def run(i: int) -> None:
        barrier.wait()
        start = time.monotonic()
        verdicts[i] = engines[i].check("slow.test", "mx.enforce.test", cert).verdict
        durations[i] = time.monotonic() - start

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.monotonic()
    for t in threads:
        t.join()
    total = time.monotonic() - start
    for e in engines:
        e.close()
    with capsys.disabled():
        each = ", ".join(f"{d:.3f} s" for d in durations if d is not None)
        print(
            f"\n[overlap] two slow.test checks on two engines: each {each}; together {total:.3f} s"
        )
    assert verdicts == [Verdict.PASS, Verdict.PASS]
    assert all(d is not None and d >= 0.9 * SLOW for d in durations), durations
    assert total < 1.9 * SLOW, f"no overlap: {total:.3f} s for two {SLOW} s calls"


def test_threads_on_one_engine_share_one_fetch(fixture: Fixture) -> None:
    cert = fixture.chain("mx-enforce.pem")
    with mtasts.Engine(fixture.config) as engine:
        results: List[Optional[mtasts.Result]] = [None] * 4

        def run(i: int) -> None:
            results[i] = engine.check("slow.test", "mx.enforce.test", cert)

        start = time.monotonic()
        threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        total = time.monotonic() - start
    assert all(r is not None and r.verdict == Verdict.PASS for r in results)
    assert total < 1.9 * SLOW, f"{total:.3f} s: the fetches were not shared"


def test_many_threads_on_one_engine(fixture: Fixture) -> None:
    chains = {
        name: fixture.chain(name)
        for name in ("mx-enforce.pem", "mx-enforce.der", "expired.pem", "mx-testing.der")
    }
    work = [
        ("enforce.test", "mx.enforce.test", "mx-enforce.pem", Verdict.PASS, Reason.NONE),
        ("enforce.test", "mx.enforce.test", "mx-enforce.der", Verdict.PASS, Reason.NONE),
        (
            "enforce.test",
            "mx.enforce.test",
            "expired.pem",
            Verdict.FAIL_ENFORCE,
            Reason.CERTIFICATE_EXPIRED,
        ),
        ("enforce.test", "evil.test", None, Verdict.FAIL_ENFORCE, Reason.MX_MISMATCH),
        ("testing.test", "mx.testing.test", "mx-testing.der", Verdict.PASS, Reason.NONE),
        (
            "testing.test",
            "mx.testing.test",
            None,
            Verdict.FAIL_TESTING,
            Reason.STARTTLS_NOT_SUPPORTED,
        ),
        ("none.test", "mx.none.test", None, Verdict.NO_POLICY, Reason.NONE),
        ("nopolicy.test", "mx.nopolicy.test", None, Verdict.NO_POLICY, Reason.NONE),
    ]
    errors: List[str] = []
    done = [0] * 8

    with mtasts.Engine(fixture.config) as engine:

        def run(n: int) -> None:
            try:
                for i in range(50):
                    domain, mx, chain, verdict, reason = work[(n + i) % len(work)]
                    result = engine.check(domain, mx, chains[chain] if chain else None)
                    if (result.verdict, result.reason) != (verdict, reason):
                        errors.append(f"thread {n} call {i}: {domain} {mx} {chain}: {result}")
                    if i % 10 == 0:
                        engine.check_mx(domain, mx)
                        engine.policy(domain)
                    done[n] += 1
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(f"thread {n}: {e!r}")

        threads = [threading.Thread(target=run, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
    assert not errors, errors[:5]
    assert done == [50] * 8


def test_errors_are_per_thread(engine: mtasts.Engine) -> None:
    # mtasts_last_error is thread-local: each thread's exception carries its own message.
    messages: List[Optional[str]] = [None, None]
    barrier = threading.Barrier(2)

    def run(i: int, domain: str, mx: str) -> None:
        barrier.wait()
        for _ in range(200):
            try:
                engine.check(domain, mx)
            except mtasts.MtastsError as e:
                if messages[i] is None or messages[i] == str(e):
                    messages[i] = str(e)
                else:
                    messages[i] = f"changed: {messages[i]!r} -> {e!r}"

    threads = [
        threading.Thread(target=run, args=(0, "bad domain", "mx.test")),
        threading.Thread(target=run, args=(1, "a..b", "mx.test")),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert messages[0] is not None and messages[0].startswith("policy domain:")
    assert messages[1] is not None and messages[1].startswith("policy domain:")
    assert "character" in messages[0] and "empty label" in messages[1], messages


def test_close_while_a_call_is_running(fixture: Fixture) -> None:
    engine = mtasts.Engine(fixture.config)
    cert = fixture.chain("mx-enforce.pem")
    outcome: List[object] = []
    started = threading.Event()

    def run() -> None:
        started.set()
        try:
            outcome.append(engine.check("slow.test", "mx.enforce.test", cert).verdict)
        except Exception as e:  # noqa: BLE001
            outcome.append(e)

    thread = threading.Thread(target=run)
    thread.start()
    started.wait()
    time.sleep(0.3)  # inside the 1 s fetch
    start = time.monotonic()
    engine.close()
    assert time.monotonic() - start < 0.2, "close() does not wait for running calls"
    assert engine.closed
    with pytest.raises(mtasts.ClosedError):
        engine.check_mx("enforce.test", "mx.enforce.test")
    assert engine._ptr is not None, "freed while a call was running"
    thread.join()
    assert outcome == [Verdict.PASS]
    assert engine._ptr is None, "the last call to return frees the engine"
