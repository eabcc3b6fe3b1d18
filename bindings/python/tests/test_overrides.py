"""Per-domain overrides through Python (README "Overrides"; OVR-2, OVR-3, OVR-8).

An engine from a second configuration: the fixture's, with ``[override."DOMAIN"]`` tables
appended. ``enforce.test`` (published by the fixture) is skipped; ``pinned-py.test`` (not
published) gets a pinned policy.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import mtasts
from mtasts import Mode, Reason, Verdict
from conftest import Fixture

PINNED = "version: STSv1\nmode: testing\nmx: mx.pinned-py.test\nmax_age: 86400\n"


def _config(fixture: Fixture, tmp_path: Path, extra: str) -> Path:
    path = tmp_path / "override.toml"
    path.write_text(fixture.config.read_text() + "\n" + extra)
    return path


def test_skipped_and_pinned_domains(fixture: Fixture, tmp_path: Path) -> None:
    (tmp_path / "pinned.txt").write_text(PINNED)
    config = _config(
        fixture,
        tmp_path,
        '[override."enforce.test"]\nmode = "none"\n'
        '[override."Pinned-Py.Test."]\npolicy = "pinned.txt"\n',
    )
    with mtasts.Engine(config) as engine:
        r = engine.check_mx("enforce.test", "mx.other.test")
        assert (r.verdict, r.reason, r.policy_id) == (Verdict.NO_POLICY, Reason.NONE, None)
        assert r.detail is not None and "override" in r.detail
        assert engine.policy("enforce.test") is None

        r = engine.check_mx("pinned-py.test", "mx.pinned-py.test")
        assert (r.verdict, r.mode, r.policy_id) == (Verdict.PASS, Mode.TESTING, "pinned")
        r = engine.check("pinned-py.test", "mx.other.test")
        assert (r.verdict, r.reason) == (Verdict.FAIL_TESTING, Reason.MX_MISMATCH)
        policy = engine.policy("pinned-py.test")
        assert policy is not None
        assert (policy.id, policy.mode, policy.mx) == ("pinned", Mode.TESTING, ["mx.pinned-py.test"])

        # Other domains are discovered as usual.
        r = engine.check_mx("testing.test", "mx.testing.test")
        assert (r.verdict, r.mode) == (Verdict.PASS, Mode.TESTING)


def test_a_bad_pinned_policy_is_a_configuration_error(fixture: Fixture, tmp_path: Path) -> None:
    (tmp_path / "bad.txt").write_text("version: STSv1\nmode: enforce\n")
    config = _config(fixture, tmp_path, '[override."broken.test"]\npolicy = "bad.txt"\n')
    with pytest.raises(mtasts.ConfigError) as e:
        mtasts.Engine(config)
    assert "broken.test" in str(e.value) and "bad.txt" in str(e.value)
