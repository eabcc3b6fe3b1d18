"""exit(): every engine the library built in the process writes its pending TLSRPT counts.

MTAs such as Exim run one short process per delivery and leave with ``exit()``, never freeing the
engines the library keeps for them: the default engine of ``mtasts_check`` and the engines of
Exim's ``{config=...}`` argument. Their pending session counts must reach the store at exit.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import List, Tuple

from conftest import Fixture, run_python, store_config


def _sessions(store: str) -> List[Tuple[str, str, int]]:
    with sqlite3.connect(store) as db:
        return list(db.execute("SELECT domain, failure, sessions FROM tlsrpt_counts").fetchall())


# Calls an Exim dlfunc entry point through ctypes, as Exim's ${dlfunc} does.
_DLFUNC = """
import ctypes, os, sys
lib = ctypes.CDLL(os.environ["MTASTS_LIBRARY"])

def dlfunc(name, *args):
    f = getattr(lib, name)
    f.restype = ctypes.c_int
    argv = (ctypes.c_char_p * (len(args) + 1))(*args, None)
    out = ctypes.c_char_p()
    code = f(ctypes.byref(out), len(args), argv)
    return code, out.value
"""


def test_config_engines_write_their_counts_at_exit(fixture: Fixture, tmp_path: Path) -> None:
    # Two sessions judged by a {config=...} engine (one pass, one enforce failure), then exit():
    # the store holds both. The exit handler used to flush the default engine only.
    config, store = store_config(fixture, tmp_path)
    pem = fixture.chain("mx-enforce.pem")
    code = (
        _DLFUNC
        + f"""
cert = {pem!r}  # the whole chain, as PEM text
config = b"config=" + {config!r}.encode()
got = dlfunc("mtasts_exim_check", b"enforce.test", b"mx.enforce.test", cert, config)
assert got == (0, b"pass"), got
assert dlfunc("mtasts_exim_check", b"enforce.test", b"evil.test", b"", config) == (0, b"fail-enforce")
sys.exit(0)
"""
    )
    proc = run_python(code, unset=["MTASTS_CONFIG"])
    assert proc.returncode == 0, proc.stderr
    rows = _sessions(store)
    assert sum(n for _, _, n in rows) == 2, rows


def test_default_and_config_engines_both_write_at_exit(fixture: Fixture, tmp_path: Path) -> None:
    # The default engine (mtasts_check, $MTASTS_CONFIG) and a {config=...} engine over another
    # store, in one process: each store gets the sessions its engine judged.
    default_config, default_store = store_config(fixture, tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    config, store = store_config(fixture, other)
    pem = fixture.chain("mx-enforce.pem")
    code = (
        _DLFUNC
        + f"""
cert = {pem!r}  # the whole chain, as PEM text
lib.mtasts_check.restype = ctypes.c_uint32
verdict = lib.mtasts_check(b"enforce.test", b"mx.enforce.test", cert, ctypes.c_size_t(len(cert)))
assert verdict == 1, verdict
config = b"config=" + {config!r}.encode()
for _ in range(3):
    got = dlfunc("mtasts_exim_check", b"enforce.test", b"mx.enforce.test", cert, config)
    assert got == (0, b"pass"), got
"""
    )
    proc = run_python(code, env={"MTASTS_CONFIG": default_config})
    assert proc.returncode == 0, proc.stderr
    assert sum(n for _, _, n in _sessions(default_store)) == 1
    assert sum(n for _, _, n in _sessions(store)) == 3
