"""Call statuses, the exceptions they become, and reading the library's last error."""

from __future__ import annotations

import ctypes
import enum
from typing import Callable, Dict, Optional, Tuple, Type

from . import _lib


class Status(enum.IntEnum):
    """``enum mtasts_status``: the outcome of a C call (not of the MTA-STS check).

    Values are stable, as in ``include/mtasts.h``. The binding turns every status but ``OK`` and
    ``NO_POLICY`` into an exception; ``BUFFER_TOO_SMALL`` is handled inside the binding.
    """

    OK = 0
    NULL_ARGUMENT = 1
    INVALID_UTF8 = 2
    INVALID_DOMAIN = 3
    INVALID_MX = 4
    CONFIG = 5
    BUFFER_TOO_SMALL = 6
    PANIC = 7
    OUT_OF_RANGE = 8
    NO_POLICY = 9
    INVALID_ARGUMENT = 10

    @property
    def rfc_name(self) -> str:
        """The library's name for this status (``mtasts_status_str``), e.g. ``"invalid-domain"``.

        (Statuses are the library's own, not an RFC's; the property has this name for symmetry
        with :class:`~mtasts.Verdict` and :class:`~mtasts.Reason`.)
        """
        return _static_str(_lib.lib.mtasts_status_str(self.value))


def _static_str(value: Optional[bytes]) -> str:
    return (value or b"").decode("utf-8", "replace")


class MtastsError(Exception):
    """Base of the errors of this package.

    ``status`` is the C call's :class:`Status`, or ``None`` when the error was found by the
    binding before any C call (a bad argument type, a NUL character, a closed engine), or when
    the C function reports failures without a status (module-level :func:`~mtasts.check`).
    ``message`` (also ``str(error)``) is the library's ``mtasts_last_error`` text, or the
    binding's own.
    """

    def __init__(self, message: str, status: Optional[Status] = None) -> None:
        super().__init__(message)
        self.message: str = message
        self.status: Optional[Status] = status

    def __repr__(self) -> str:
        status = "None" if self.status is None else f"Status.{self.status.name}"
        return f"{type(self).__name__}({self.message!r}, status={status})"


class ConfigError(MtastsError):
    """The configuration file cannot be read or is invalid; the message names the file."""


class InvalidDomainError(MtastsError, ValueError):
    """The policy domain is not a domain name."""


class InvalidMxError(MtastsError, ValueError):
    """Reserved: status INVALID_MX, which the library no longer returns (an MX that is not a
    host name matches no pattern instead)."""


class InvalidArgumentError(MtastsError, ValueError, TypeError):
    """An argument cannot be passed to the library: not a ``str`` (or, for certificates, not
    bytes-like), a string with a NUL character, a string that cannot be encoded as UTF-8, an empty
    certificate. Raised before calling C. It is both a ``ValueError`` and a ``TypeError``, so
    that either idiom catches it."""


class ClosedError(MtastsError, ValueError):
    """The object was used after :meth:`~mtasts.Engine.close`."""


_CLASSES: Dict[Status, Type[MtastsError]] = {
    Status.CONFIG: ConfigError,
    Status.INVALID_DOMAIN: InvalidDomainError,
    Status.INVALID_MX: InvalidMxError,
    Status.NULL_ARGUMENT: InvalidArgumentError,
    Status.INVALID_UTF8: InvalidArgumentError,
    Status.INVALID_ARGUMENT: InvalidArgumentError,
}

# Large enough for any message the library makes in practice; longer ones take the usual retry.
_LAST_ERROR_BUFFER = 1024


def read_string(
    call: Callable[[ctypes.Array[ctypes.c_char], int, ctypes._Pointer[ctypes.c_size_t]], int],
    size: int,
) -> Tuple[int, str, int]:
    """Runs a ``(buf, len, out_n)`` C call with the BUFFER_TOO_SMALL retry protocol.

    Returns ``(status, text, needed)``: ``text`` is the string on ``OK``; ``needed`` is the length
    the first too-small answer asked for (0 if none), to detect messages that changed between tries.
    """
    needed = 0
    for _ in range(4):
        buf = ctypes.create_string_buffer(size)
        out_n = ctypes.c_size_t(0)
        status = call(buf, size, ctypes.pointer(out_n))
        if status == Status.OK:
            return status, buf.raw[: out_n.value].decode("utf-8", "replace"), needed
        if status != Status.BUFFER_TOO_SMALL or out_n.value + 1 <= size:
            return status, "", needed
        needed = needed or out_n.value
        size = out_n.value + 1
    return Status.BUFFER_TOO_SMALL, "", needed


def last_error() -> str:
    """The message of the last failed C call made by this thread (``mtasts_last_error``)."""
    status, text, _ = read_string(
        lambda buf, size, out_n: int(_lib.lib.mtasts_last_error(buf, size, out_n)),
        _LAST_ERROR_BUFFER,
    )
    if status != Status.OK:
        name = _static_str(_lib.lib.mtasts_status_str(status))
        return f"(the library's error message could not be read: {name})"
    return text


def error_from_status(status: int) -> MtastsError:
    """The exception for a failed C call; reads ``mtasts_last_error`` (call it on the thread that
    made the failed call, before any other C call)."""
    message = last_error()
    try:
        known: Optional[Status] = Status(status)
    except ValueError:
        known = None
        message = f"{message} (unknown status {status})"
    cls = _CLASSES.get(known, MtastsError) if known is not None else MtastsError
    return cls(message or f"call failed: {known.rfc_name if known else status}", known)
