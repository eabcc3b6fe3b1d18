"""Shared fixtures: the `mtasts-fixture` servers (DNS + HTTPS on 127.0.0.1) and fresh engines.

The library is found through ``$MTASTS_LIBRARY`` (set by ``bindings/python/run-tests.sh``); the
fixture binary through ``$MTASTS_FIXTURE``, else ``target/debug/mtasts-fixture`` of the checkout.
Nothing is built here.
"""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, Optional, Sequence, Tuple

import pytest

import mtasts

REPO_ROOT = Path(__file__).resolve().parents[3]
HEADER = REPO_ROOT / "include" / "mtasts.h"
FIXTURE_BINARY = Path(os.environ.get("MTASTS_FIXTURE") or REPO_ROOT / "target/debug/mtasts-fixture")
STARTUP_TIMEOUT = 60.0


@dataclass(frozen=True)
class Fixture:
    """What `mtasts-fixture` wrote and printed."""

    dir: Path
    config: Path
    info: Dict[str, str]

    def chain(self, name: str) -> bytes:
        """A certificate chain file written by the fixture, e.g. ``"mx-enforce.pem"``."""
        return (self.dir / name).read_bytes()


@pytest.fixture(scope="session")
def fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fixture]:
    """Starts `mtasts-fixture` for the whole session; stops it by closing its stdin."""
    if not FIXTURE_BINARY.is_file():
        pytest.fail(
            f"{FIXTURE_BINARY} does not exist: build it with `cargo build -p mtasts-fixtures` "
            "or set MTASTS_FIXTURE"
        )
    directory = tmp_path_factory.mktemp("mtasts-fixture")
    proc = subprocess.Popen(
        [str(FIXTURE_BINARY), str(directory)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=None,
    )
    assert proc.stdout is not None and proc.stdin is not None
    try:
        line = _read_line(proc, STARTUP_TIMEOUT)
        info = json.loads(line)
        yield Fixture(dir=Path(info["dir"]), config=Path(info["config"]), info=info)
    finally:
        proc.stdin.close()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _read_line(proc: "subprocess.Popen[bytes]", timeout: float) -> str:
    assert proc.stdout is not None
    selector = selectors.DefaultSelector()
    selector.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    data = b""
    while not data.endswith(b"\n"):
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not selector.select(remaining):
            raise RuntimeError(f"mtasts-fixture printed no line within {timeout} s")
        chunk = os.read(proc.stdout.fileno(), 4096)
        if not chunk:
            raise RuntimeError(f"mtasts-fixture exited ({proc.wait()}) before printing its line")
        data += chunk
    return data.decode()


@pytest.fixture
def engine(fixture: Fixture) -> Iterator[mtasts.Engine]:
    """A fresh engine on the fixture's configuration (an empty policy cache)."""
    with mtasts.Engine(fixture.config) as e:
        yield e


def run_python(
    code: str, env: Optional[Dict[str, str]] = None, unset: Sequence[str] = (), timeout: float = 60
) -> "subprocess.CompletedProcess[str]":
    """Runs ``code`` in a fresh interpreter (this one's), with the environment changed by
    ``env`` and ``unset``."""
    environment = dict(os.environ)
    environment.update(env or {})
    for name in unset:
        environment.pop(name, None)
    return subprocess.run(
        [sys.executable, "-c", code],
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def store_config(fixture: Fixture, directory: Path) -> Tuple[str, str]:
    """The fixture's configuration with a SQLite store (policies and TLSRPT counts) in
    ``directory``: the paths of the configuration file and of the store."""
    store = os.path.join(directory, "store.sqlite")
    text = fixture.config.read_text()
    assert 'path = "memory"' in text
    config = os.path.join(directory, "mtasts.toml")
    with open(config, "w") as f:
        f.write(text.replace('path = "memory"', f'path = "{store}"'))
    return config, store
