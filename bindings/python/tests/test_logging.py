"""The library's log lines in the ``mtasts`` logger: warnings by default, the decision log at INFO."""

from __future__ import annotations

import logging
from typing import Iterator

import pytest

import mtasts


@pytest.fixture
def log_level() -> Iterator[None]:
    """Restores the level of the ``mtasts`` logger after the test."""
    before = mtasts.logger.level
    yield
    mtasts.set_log_level(before)


def test_decision_lines_reach_the_mtasts_logger_at_info(
    engine: mtasts.Engine, caplog: pytest.LogCaptureFixture, log_level: None
) -> None:
    mtasts.set_log_level(logging.INFO)
    with caplog.at_level(logging.INFO, logger="mtasts"):
        result = engine.check_mx("enforce.test", "mx.enforce.test")
    assert result.verdict == mtasts.Verdict.PASS
    decisions = [r for r in caplog.records if r.name == "mtasts" and "decision" in r.getMessage()]
    assert len(decisions) == 1, caplog.text
    line = decisions[0].getMessage()
    assert decisions[0].levelno == logging.INFO
    for field in ('domain="enforce.test"', 'mx="mx.enforce.test"', 'verdict="pass"', 'mode="enforce"'):
        assert field in line, line


def test_nothing_below_the_level_asked_for(
    engine: mtasts.Engine, caplog: pytest.LogCaptureFixture, log_level: None
) -> None:
    mtasts.set_log_level(logging.WARNING)
    with caplog.at_level(logging.DEBUG, logger="mtasts"):
        engine.check_mx("enforce.test", "mx.enforce.test")
    assert not [r for r in caplog.records if "decision" in r.getMessage()], caplog.text


def test_a_bad_level_is_refused() -> None:
    with pytest.raises(ValueError):
        mtasts.set_log_level("LOUD")
