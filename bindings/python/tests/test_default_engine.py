"""Module-level mtasts.check (the library's process-wide default engine, set up by MTASTS_CONFIG).

The default engine is built once per process, from the environment at its first use, so each test
runs in a fresh interpreter with MTASTS_CONFIG set before that first call.
"""

from __future__ import annotations

import json
import pathlib

import mtasts
from conftest import Fixture, run_python

SCRIPT = """
import json, sys
import mtasts

def chain(name):
    with open(sys.argv_dir + "/" + name, "rb") as f:
        return f.read()

out = {}
for key, domain, mx, cert in [
    ("pass-pem", "enforce.test", "mx.enforce.test", "mx-enforce.pem"),
    ("pass-der", "enforce.test", "mx.enforce.test", "mx-enforce.der"),
    ("wrong-name", "enforce.test", "mx.enforce.test", "wrong-name.pem"),
    ("expired", "enforce.test", "mx.enforce.test", "expired.der"),
    ("untrusted", "testing.test", "mx.testing.test", "untrusted.pem"),
    ("no-tls", "enforce.test", "mx.enforce.test", None),
    ("mx-mismatch", "testing.test", "evil.test", None),
    ("none", "none.test", "mx.none.test", None),
    ("nopolicy", "nopolicy.test", "mx.nopolicy.test", None),
    ("broken", "broken.test", "mx.broken.test", None),
]:
    verdict = mtasts.check(domain, mx, chain(cert) if cert else None)
    assert isinstance(verdict, mtasts.Verdict), verdict
    out[key] = verdict.name
try:
    mtasts.check("bad domain", "mx.enforce.test")
except mtasts.MtastsError as e:
    out["bad-domain"] = [type(e).__name__, e.status, str(e)]
print(json.dumps(out))
"""


def test_module_level_check(fixture: Fixture) -> None:
    code = SCRIPT.replace("sys.argv_dir", repr(str(fixture.dir)))
    proc = run_python(code, env={"MTASTS_CONFIG": str(fixture.config)})
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    name, status, message = out.pop("bad-domain")
    assert (name, status) == ("MtastsError", None)
    assert message.startswith("policy domain:")
    assert out == {
        "pass-pem": "PASS",
        "pass-der": "PASS",
        "wrong-name": "FAIL_ENFORCE",
        "expired": "FAIL_ENFORCE",
        "untrusted": "FAIL_TESTING",
        "no-tls": "FAIL_ENFORCE",
        "mx-mismatch": "FAIL_TESTING",
        "none": "NO_POLICY",
        "nopolicy": "NO_POLICY",
        "broken": "NO_POLICY",
    }


def test_module_level_check_with_a_missing_config(tmp_path: pathlib.Path) -> None:
    missing = tmp_path / "nowhere" / "mtasts.toml"
    code = """
import mtasts
try:
    mtasts.check("enforce.test", "mx.enforce.test")
except mtasts.MtastsError as e:
    print(e.status, e)
else:
    print("no error")
"""
    proc = run_python(code, env={"MTASTS_CONFIG": str(missing)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("None cannot read configuration")
    assert str(missing) in proc.stdout


def test_module_level_check_rejects_bad_arguments_without_an_engine() -> None:
    # Raised in Python, before the default engine is built (so no configuration is read here).
    for args in [("a\0b", "mx"), ("a.test", 5)]:
        try:
            mtasts.check(*args)  # type: ignore[arg-type]
        except mtasts.InvalidArgumentError:
            pass
        else:
            raise AssertionError(f"no error for {args!r}")


RELOAD_SCRIPT = """
import logging, os, shutil, sys, time
import mtasts

config, with_store, broken = sys.argv[1], sys.argv[2], sys.argv[3]
seen = []
class Keep(logging.Handler):
    def emit(self, record):
        seen.append(record.getMessage())
mtasts.logger.addHandler(Keep())

def changed_to(source):
    # A new version of the file; the library looks at most once a second.
    shutil.copyfile(source, config + ".new")
    os.replace(config + ".new", config)
    time.sleep(1.2)
    mtasts.check("enforce.test", "mx.enforce.test")

states = [mtasts.store_status().state.name]
changed_to(with_store)
states.append(mtasts.store_status().state.name)
changed_to(broken)
states.append(mtasts.store_status().state.name)
print(" ".join(states))
print(any("previous one stays in force" in m for m in seen))
"""


def test_the_default_engine_follows_its_configuration_file(fixture: Fixture, tmp_path: pathlib.Path) -> None:
    """A changed configuration file is read again (checked at most once a second); an invalid new
    one is reported on the mtasts logger and the engine in use is kept."""
    config = tmp_path / "mtasts.toml"
    config.write_text(fixture.config.read_text())
    with_store = tmp_path / "with-store.toml"
    with_store.write_text(fixture.config.read_text().replace('path = "memory"', f'path = "{tmp_path}/s.sqlite"'))
    broken = tmp_path / "broken.toml"
    broken.write_text("[dns]\nnot_a_key = 1\n")
    done = run_python(
        RELOAD_SCRIPT.replace("sys.argv[1], sys.argv[2], sys.argv[3]", f"{str(config)!r}, {str(with_store)!r}, {str(broken)!r}"),
        env={"MTASTS_CONFIG": str(config)},
    )
    assert done.returncode == 0, done.stderr
    states, warned = done.stdout.split("\n")[:2]
    assert states == "NONE OK OK", done.stdout + done.stderr
    assert warned == "True", done.stdout + done.stderr
