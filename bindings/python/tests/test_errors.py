"""Errors: bad arguments, configuration files, use after close, the managed-handle protocol."""

from __future__ import annotations

import ctypes
import gc
import os
import pathlib
from typing import Any

import pytest

import mtasts
from mtasts import (
    Verdict,
    Reason,
    ClosedError,
    ConfigError,
    InvalidArgumentError,
    InvalidDomainError,
    Mode,
    MtastsError,
    Status,
)
from mtasts import _lib
from conftest import Fixture


@pytest.mark.parametrize("domain", ["exa mple.test", "a..b", "-bad-.test", "x" * 64 + ".test", ""])
def test_bad_domain(engine: mtasts.Engine, domain: str) -> None:
    for call in (
        lambda: engine.check(domain, "mx.example.test"),
        lambda: engine.check_mx(domain, "mx.example.test"),
        lambda: engine.policy(domain),
    ):
        with pytest.raises(InvalidDomainError) as info:
            call()
        assert info.value.status == Status.INVALID_DOMAIN
        assert "policy domain" in str(info.value)
        assert isinstance(info.value, ValueError) and isinstance(info.value, MtastsError)


@pytest.mark.parametrize(
    "mx",
    [
        "mx example.test",
        "mx..example.test",
        "",
        "mx_1.evil.test",
        # Spellings UTS #46 would map onto the listed mx.enforce.test: not host names.
        "\uff4d\uff58.enforce.test",  # full-width letters
        "mx\uff0eenforce\uff0etest",  # full-width full stops
        "mx\u3002enforce\u3002test",  # ideographic full stops
        "MX.ENFORCE.TEST\u3002",  # an ideographic trailing dot
        "mx.\udce9.test",  # a lone surrogate (no UTF-8 for it)
        b"mx.enforce.test\xff",  # bytes that are not UTF-8
        bytearray(b"\xc0\xaemx.enforce.test"),  # an overlong '.'
        memoryview("mx\u3002enforce.test".encode()),
    ],
    ids=[
        "space",
        "empty-label",
        "empty",
        "underscore",
        "full-width-letters",
        "full-width-dots",
        "ideographic-dots",
        "ideographic-root-dot",
        "surrogate",
        "bytes-not-utf8",
        "bytearray-overlong",
        "memoryview-ideographic-dot",
    ],
)
def test_mx_that_is_not_a_host_name_matches_nothing(engine: mtasts.Engine, mx: Any) -> None:
    # A forged MX record must not turn an enforce failure into an error, nor pass by mapping.
    result = engine.check("enforce.test", mx)
    assert (result.verdict, result.reason) == (Verdict.FAIL_ENFORCE, Reason.MX_MISMATCH)
    result = engine.check_mx("enforce.test", mx)
    assert (result.verdict, result.reason) == (Verdict.FAIL_ENFORCE, Reason.MX_MISMATCH)
    result = engine.check_mx("testing.test", mx)
    assert (result.verdict, result.reason) == (Verdict.FAIL_TESTING, Reason.MX_MISMATCH)
    engine.record("enforce.test", mx, Reason.STARTTLS_NOT_SUPPORTED)


@pytest.mark.parametrize("mx", [b"mx.enforce.test", bytearray(b"MX.Enforce.Test."), "mx.enforce.test"])
def test_mx_as_bytes(engine: mtasts.Engine, mx: Any) -> None:
    assert engine.check_mx("enforce.test", mx).verdict == Verdict.PASS


def test_policy_domain_keeps_accepting_u_labels(engine: mtasts.Engine) -> None:
    # A full-width spelling of enforce.test is the Policy Domain enforce.test (UTS #46).
    result = engine.check_mx("\uff45nforce\uff0etest", "mx.enforce.test")
    assert (result.verdict, result.mode) == (Verdict.PASS, Mode.ENFORCE)


@pytest.mark.parametrize(
    "domain,mx",
    [
        ("enforce.test\0evil", "mx.enforce.test"),
        ("enforce.test", "mx.enforce.test\0"),
        (b"enforce.test", "mx.enforce.test"),
        ("enforce.test", None),
        (42, "mx.enforce.test"),
        ("enforce.test", b"mx.enforce.test\0"),
        ("enforce.test", 42),
        ("enforce\udce9.test", "mx.enforce.test"),  # a lone surrogate: not encodable as UTF-8
    ],
    ids=[
        "nul-in-domain",
        "nul-in-mx",
        "bytes-domain",
        "none-mx",
        "int-domain",
        "nul-in-bytes-mx",
        "int-mx",
        "surrogate-in-domain",
    ],
)
def test_invalid_arguments_raise_before_c(engine: mtasts.Engine, domain: Any, mx: Any) -> None:
    for call in (engine.check, engine.check_mx, mtasts.check):
        with pytest.raises(InvalidArgumentError) as info:
            call(domain, mx)
        assert isinstance(info.value, ValueError) and isinstance(info.value, TypeError)
        assert info.value.status in (None, Status.INVALID_UTF8)
    if domain != "enforce.test":
        with pytest.raises(InvalidArgumentError):
            engine.policy(domain)


@pytest.mark.parametrize(
    "cert",
    ["a PEM as str", 12, [b"der"], b"", bytearray()],
    ids=["str", "int", "list", "empty-bytes", "empty-bytearray"],
)
def test_invalid_certificates(engine: mtasts.Engine, cert: Any) -> None:
    with pytest.raises(InvalidArgumentError):
        engine.check("enforce.test", "mx.enforce.test", cert)


def test_missing_config_file_names_the_path(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "no-such-dir" / "mtasts.toml"
    for arg in (str(path), path):
        with pytest.raises(ConfigError) as info:
            mtasts.Engine(arg)
        assert info.value.status == Status.CONFIG
        assert str(path) in str(info.value)


def test_invalid_config_file_names_the_path(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "mtasts.toml"
    path.write_text("[dns]\nnameservers = 42\n")
    with pytest.raises(ConfigError) as info:
        mtasts.Engine(path)
    assert str(path) in str(info.value)
    assert "nameservers" in str(info.value)


def test_config_path_arguments(tmp_path: pathlib.Path) -> None:
    with pytest.raises(InvalidArgumentError):
        mtasts.Engine(str(tmp_path / "a\0b"))
    with pytest.raises(InvalidArgumentError):
        mtasts.Engine(42)  # type: ignore[arg-type]
    # A path the OS would see as non-UTF-8 bytes cannot be passed to the library.
    with pytest.raises(InvalidArgumentError) as info:
        mtasts.Engine(os.fsdecode(bytes(tmp_path) + b"/\xff.toml"))
    assert info.value.status == Status.INVALID_UTF8


def test_long_error_message_is_read_whole(tmp_path: pathlib.Path) -> None:
    # Longer than the 256 bytes a naive caller would start with.
    path = tmp_path / ("d" * 200) / ("e" * 200) / "mtasts.toml"
    with pytest.raises(ConfigError) as info:
        mtasts.Engine(path)
    assert str(path) in info.value.message
    assert info.value.message.startswith("cannot read configuration")


def test_last_error_survives_a_too_small_buffer(tmp_path: pathlib.Path) -> None:
    lib = _lib.lib
    path = str(tmp_path / ("d" * 300) / "mtasts.toml").encode()
    out = ctypes.c_void_p()
    assert lib.mtasts_engine_new(path, ctypes.byref(out)) == Status.CONFIG
    n = ctypes.c_size_t()
    small = ctypes.create_string_buffer(16)
    assert lib.mtasts_last_error(small, 16, ctypes.byref(n)) == Status.BUFFER_TOO_SMALL
    needed = n.value
    big = ctypes.create_string_buffer(needed + 1)
    assert lib.mtasts_last_error(big, needed + 1, ctypes.byref(n)) == Status.OK
    assert n.value == needed and path in big.value


def test_default_engine_without_config_builds(fixture: Fixture) -> None:
    # The defaults (system resolver and roots); no network is touched by building it.
    with mtasts.Engine() as engine:
        assert engine.config_path is None
        assert "open" in repr(engine)


def test_use_after_close(fixture: Fixture) -> None:
    engine = mtasts.Engine(fixture.config)
    assert engine.check_mx("enforce.test", "mx.enforce.test").verdict == mtasts.Verdict.PASS
    engine.close()
    assert engine.closed and "closed" in repr(engine)
    for call in (
        lambda: engine.check("enforce.test", "mx.enforce.test"),
        lambda: engine.check_mx("enforce.test", "mx.enforce.test"),
        lambda: engine.policy("enforce.test"),
    ):
        with pytest.raises(ClosedError) as info:
            call()
        assert isinstance(info.value, ValueError) and isinstance(info.value, MtastsError)
        assert info.value.status is None
    engine.close()  # closing again does nothing


def test_context_manager_closes(fixture: Fixture) -> None:
    with mtasts.Engine(fixture.config) as engine:
        assert isinstance(engine, mtasts.Engine)
        assert not engine.closed
    assert engine.closed
    with pytest.raises(ClosedError):
        engine.check_mx("enforce.test", "mx.enforce.test")


def test_collected_engine_is_freed(fixture: Fixture, monkeypatch: pytest.MonkeyPatch) -> None:
    freed = []
    real_free = mtasts.Engine._delete

    def spy(self: mtasts.Engine, ptr: int) -> None:
        freed.append(ptr)
        real_free(self, ptr)

    monkeypatch.setattr(mtasts.Engine, "_delete", spy)
    engine = mtasts.Engine(fixture.config)
    ptr = engine._ptr
    del engine
    gc.collect()
    assert freed == [ptr]


def test_failed_constructor_does_not_break_del(tmp_path: pathlib.Path) -> None:
    with pytest.raises(ConfigError):
        mtasts.Engine(tmp_path / "missing.toml")
    gc.collect()  # __del__ of the half-built object must not raise (it would be printed)


def test_error_repr_and_status_names() -> None:
    error = InvalidDomainError("policy domain: bad", Status.INVALID_DOMAIN)
    assert repr(error) == "InvalidDomainError('policy domain: bad', status=Status.INVALID_DOMAIN)"
    assert str(error) == "policy domain: bad"
    assert Status.INVALID_DOMAIN.rfc_name == "invalid-domain"
    assert Status.BUFFER_TOO_SMALL.rfc_name == "buffer-too-small"
