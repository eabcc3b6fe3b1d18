"""fork(): a new Engine in the child works; module-level check rebuilds its engine there."""

from __future__ import annotations

import multiprocessing
import os
import signal
import sqlite3
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Callable, List, Tuple

import pytest

import mtasts
from mtasts import Verdict
from conftest import Fixture, run_python, store_config

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


def in_child(body: Callable[[], None], timeout: float = 60) -> int:
    """Runs ``body`` in a forked child; returns its exit code (0 when ``body`` returned)."""
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 1
        try:
            body()
            code = 0
        except BaseException:  # noqa: BLE001 - printed for the failure report
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise AssertionError(f"the child hung for {timeout} s")
        time.sleep(0.01)


def test_fork_after_use(fixture: Fixture) -> None:
    cert = fixture.chain("mx-enforce.pem")
    parent_engine = mtasts.Engine(fixture.config)
    assert parent_engine.check("enforce.test", "mx.enforce.test", cert).verdict == Verdict.PASS

    def child() -> None:
        # The recommended course: a new engine in the child.
        with mtasts.Engine(fixture.config) as engine:
            assert engine.check("enforce.test", "mx.enforce.test", cert).verdict == Verdict.PASS
            assert engine.check("testing.test", "evil.test").verdict == Verdict.FAIL_TESTING
            policy = engine.policy("testing.test")
            assert policy is not None and policy.id == "t1"
        # The library builds the child's default engine on its first call there.
        os.environ["MTASTS_CONFIG"] = str(fixture.config)
        assert mtasts.check("enforce.test", "mx.enforce.test", cert) == Verdict.PASS
        assert mtasts.check("enforce.test", "mx.enforce.test") == Verdict.FAIL_ENFORCE
        # An engine no thread was using at the fork still works (the C contract allows it).
        assert parent_engine.check("none.test", "mx.none.test").verdict == Verdict.NO_POLICY
        parent_engine.close()

    assert in_child(child) == 0
    # The parent's engine is untouched by the child.
    assert parent_engine.check("enforce.test", "mx.enforce.test", cert).verdict == Verdict.PASS
    parent_engine.close()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # Python 3.12+: fork with threads
def test_engine_busy_at_fork_is_abandoned_in_the_child(fixture: Fixture) -> None:
    cert = fixture.chain("mx-enforce.pem")
    engine = mtasts.Engine(fixture.config)
    verdicts: List[Verdict] = []
    thread = threading.Thread(
        target=lambda: verdicts.append(engine.check("slow.test", "mx.enforce.test", cert).verdict)
    )
    thread.start()
    time.sleep(0.3)  # the thread is inside the 1 s fetch

    def child() -> None:
        try:
            engine.check_mx("enforce.test", "mx.enforce.test")
        except mtasts.MtastsError as e:
            assert "forked" in str(e) and "new Engine" in str(e), e
        else:
            raise AssertionError("an engine busy at the fork was used in the child")
        engine.close()  # does not free (and so cannot hang)
        with mtasts.Engine(fixture.config) as fresh:
            assert fresh.check("slow.test", "mx.enforce.test", cert).verdict == Verdict.PASS

    assert in_child(child) == 0
    thread.join()
    assert verdicts == [Verdict.PASS]
    assert engine.check_mx("enforce.test", "mx.enforce.test").verdict == Verdict.PASS
    engine.close()


def _pool_job(args: Tuple[str, str, int]) -> Tuple[int, str, str]:
    config, directory, n = args
    os.environ["MTASTS_CONFIG"] = config
    with open(os.path.join(directory, "mx-enforce.der"), "rb") as f:
        cert = f.read()
    with mtasts.Engine(config) as engine:
        own = engine.check("enforce.test", "mx.enforce.test", cert).verdict
    default = mtasts.check("enforce.test", "mx.enforce.test", cert)
    return n, own.name, default.name


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_multiprocessing_fork_pool(fixture: Fixture) -> None:
    with mtasts.Engine(fixture.config) as engine:  # used in the parent before the fork
        assert engine.check_mx("enforce.test", "mx.enforce.test").verdict == Verdict.PASS
        context = multiprocessing.get_context("fork")
        with context.Pool(2) as pool:
            jobs = [(str(fixture.config), str(fixture.dir), n) for n in range(6)]
            results = pool.map(_pool_job, jobs, chunksize=1)
    assert results == [(n, "PASS", "PASS") for n in range(6)]


def test_tlsrpt_counts_add_up_across_fork(fixture: Fixture, tmp_path: Path) -> None:
    # Parent and child each judge one session with the default engine and leave with exit(),
    # whose handler writes the process's pending counts. The child must neither drop nor flush
    # the parent's engine (it used to, on its first call: 3 sessions stored for 2 judged).
    config, store = store_config(fixture, tmp_path)
    cert = str(fixture.dir / "mx-enforce.pem")
    code = f"""
import os, sys
import mtasts
cert = open({cert!r}, "rb").read()
assert mtasts.check("enforce.test", "mx.enforce.test", cert) == mtasts.Verdict.PASS
pid = os.fork()
if pid == 0:
    ok = mtasts.check("enforce.test", "mx.enforce.test", cert) == mtasts.Verdict.PASS
    sys.exit(0 if ok else 3)  # exit(), not _exit(): the child writes its own counts
_, status = os.waitpid(pid, 0)
assert os.waitstatus_to_exitcode(status) == 0, status
"""
    proc = run_python(code, env={"MTASTS_CONFIG": config})
    assert proc.returncode == 0, proc.stderr
    with sqlite3.connect(store) as db:
        rows = db.execute("SELECT domain, failure, sessions FROM tlsrpt_counts").fetchall()
    assert sum(n for _, _, n in rows) == 2, rows


def test_fork_while_a_thread_is_inside_a_default_engine_check(fixture: Fixture) -> None:
    # Another thread is inside a check (the 1 s fetch of slow.test, holding the default engine's
    # locks for that domain) when the process forks: the child builds its own engine and finishes.
    # The deadline only detects a hang; the child is killed then.
    cert = str(fixture.dir / "mx-enforce.pem")
    code = f"""
import os, signal, sys, threading, time
import mtasts
cert = open({cert!r}, "rb").read()
assert mtasts.check("enforce.test", "mx.enforce.test", cert) == mtasts.Verdict.PASS
verdicts = []
thread = threading.Thread(
    target=lambda: verdicts.append(mtasts.check("slow.test", "mx.enforce.test", cert))
)
thread.start()
time.sleep(0.3)  # the thread is inside the fetch
pid = os.fork()
if pid == 0:
    ok = (
        mtasts.check("slow.test", "mx.enforce.test", cert) == mtasts.Verdict.PASS
        and mtasts.check("enforce.test", "mx.enforce.test", cert) == mtasts.Verdict.PASS
    )
    os._exit(0 if ok else 3)
deadline = time.monotonic() + 120
while True:
    done, status = os.waitpid(pid, os.WNOHANG)
    if done:
        break
    if time.monotonic() > deadline:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        sys.exit("the child hung")
    time.sleep(0.01)
assert os.waitstatus_to_exitcode(status) == 0, status
thread.join()
assert verdicts == [mtasts.Verdict.PASS], verdicts
"""
    proc = run_python(
        "import warnings; warnings.simplefilter('ignore', DeprecationWarning)\n" + code,
        env={"MTASTS_CONFIG": str(fixture.config)},
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
