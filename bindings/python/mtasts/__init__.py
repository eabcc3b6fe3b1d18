"""mtasts: MTA-STS (RFC 8461) checks for mail servers, over the ``libmtasts`` C library.

Example::

    import mtasts

    with mtasts.Engine("/etc/mtasts/mtasts.toml") as engine:
        result = engine.check("example.com", "mx1.example.com", cert=chain_pem)
        if not result.may_deliver:
            ...  # temporary failure for this MX: try the next one

* :class:`Engine` holds a configuration, trust anchors and an in-process policy cache.
  :meth:`Engine.check` judges a delivery after the TLS handshake (with the chain the MX
  presented, or ``None`` when no TLS was negotiated); :meth:`Engine.check_mx` judges only the MX
  name, before connecting; :meth:`Engine.policy` returns the policy that applies.
* :func:`check` does the same as :meth:`Engine.check` with the process-wide default engine of the
  library (configured by ``$MTASTS_CONFIG``) and returns only the :class:`Verdict`.

Threads
    One :class:`Engine` may be shared by any number of threads; the library serialises nothing
    but the fetch of one domain's policy (threads asking for the same domain share one fetch).
    The library is loaded with :class:`ctypes.CDLL`, so every call releases the GIL while it runs:
    DNS lookups and HTTPS fetches of different threads overlap. ``close()`` is thread-safe: calls
    already running finish, and the last one frees the engine.

fork()
    After ``os.fork()`` (or ``multiprocessing`` with the ``fork`` start method, the default on
    Linux before Python 3.14), create a new :class:`Engine` in the child. An engine no thread was
    using at the moment of the fork still works in the child (the C contract allows it), but an
    engine another thread was inside a call on is unusable there: its calls raise
    :class:`MtastsError`. Module-level :func:`check` needs nothing: the library builds a new
    default engine in the child on its first call (policies cached by the parent are not carried
    over).

Strings are passed as UTF-8; internationalised domain names may be given as U-labels
(``"bücher.example"``): the library converts them. The library is found as described in
``mtasts._lib`` (``$MTASTS_LIBRARY`` first) and must be of the same version as this package.
"""

from __future__ import annotations

import ctypes
import enum
import logging
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import List, Optional, Tuple, Union

from . import _lib
from ._errors import (
    ClosedError,
    ConfigError,
    InvalidArgumentError,
    InvalidDomainError,
    InvalidMxError,
    MtastsError,
    Status,
    error_from_status,
    last_error,
    read_string,
)
from ._managed import Managed
from ._version import __version__

__all__ = [
    "__version__",
    "library_path",
    "library_version",
    "Verdict",
    "Reason",
    "Mode",
    "Status",
    "MtastsError",
    "ConfigError",
    "InvalidDomainError",
    "InvalidMxError",
    "InvalidArgumentError",
    "ClosedError",
    "Result",
    "Policy",
    "StoreState",
    "StoreStatus",
    "DecidedBy",
    "DaneStatus",
    "Engine",
    "check",
    "store_status",
    "set_log_level",
    "CertificateChain",
    "MxName",
]

#: Where the C library was loaded from (the place that worked, as tried by ``mtasts._lib``).
library_path: str = _lib.path
#: The version the C library reports (always equal to ``__version__``; else the import failed).
library_version: str = _lib.library_version

#: A certificate chain as the MX presented it, leaf first: PEM text or concatenated DER.
CertificateChain = Union[bytes, bytearray, memoryview]

#: An MX host name as the MX record gave it: ``str``, or the raw bytes (any bytes: a name that is
#: not an ASCII host name matches no pattern).
MxName = Union[str, bytes, bytearray, memoryview]


def _static_str(value: Optional[bytes]) -> str:
    return (value or b"").decode("utf-8", "replace")


class Verdict(enum.IntEnum):
    """``enum mtasts_verdict``: what the MTA should do with this MX (stable values)."""

    #: No policy applies: deliver as usual.
    NO_POLICY = 0
    #: A policy applies and this MX (and certificate, if given) satisfies it.
    PASS = 1
    #: ``enforce`` policy not satisfied: do not deliver to this MX; temporary failure, try the next.
    FAIL_ENFORCE = 2
    #: ``testing`` policy not satisfied: deliver, and record the failure for TLSRPT.
    FAIL_TESTING = 3
    #: The call itself failed. Never returned by this package: it raises :class:`MtastsError`.
    ERROR = 4

    @property
    def rfc_name(self) -> str:
        """The library's name (``mtasts_verdict_str``): ``"pass"``, ``"fail-enforce"``, ..."""
        return _static_str(_lib.lib.mtasts_verdict_str(self.value))


class Reason(enum.IntEnum):
    """``enum mtasts_reason``: why a check failed (RFC 8460 result types, plus ``mx-mismatch``)."""

    #: No failure.
    NONE = 0
    #: ``starttls-not-supported``.
    STARTTLS_NOT_SUPPORTED = 1
    #: ``certificate-host-mismatch``.
    CERTIFICATE_HOST_MISMATCH = 2
    #: ``certificate-expired``.
    CERTIFICATE_EXPIRED = 3
    #: ``certificate-not-trusted``.
    CERTIFICATE_NOT_TRUSTED = 4
    #: ``validation-failure``.
    VALIDATION_FAILURE = 5
    #: ``sts-policy-fetch-error``.
    STS_POLICY_FETCH_ERROR = 6
    #: ``sts-policy-invalid``.
    STS_POLICY_INVALID = 7
    #: ``sts-webpki-invalid``.
    STS_WEBPKI_INVALID = 8
    #: ``mx-mismatch``: the MX matches no pattern (reported to TLSRPT as ``validation-failure``).
    MX_MISMATCH = 9
    #: ``tlsa-invalid``: the caller's DANE check failed.
    TLSA_INVALID = 10
    #: ``store-unavailable``: no policy in memory and the store could not be read; the mail is
    #: held because the configuration says ``[engine] on_store_error = "tempfail"``.
    STORE_UNAVAILABLE = 11
    #: ``dnssec-invalid``: the TLSA lookup of a DANE MX did not validate or failed (temporary).
    DNSSEC_INVALID = 12
    #: ``dane-required``: DANE applies to the MX but no TLS session was negotiated.
    DANE_REQUIRED = 13

    @property
    def rfc_name(self) -> str:
        """The RFC 8460 result type (``mtasts_reason_str``): ``"certificate-expired"``, ...,
        ``"mx-mismatch"``, or ``"none"``."""
        return _static_str(_lib.lib.mtasts_reason_str(self.value))


class DecidedBy(enum.IntEnum):
    """``enum mtasts_decided_by``: which protocol decided a check (stable values)."""

    #: Neither: no MTA-STS policy in force and no DANE for the MX.
    NONE = 0
    #: The MTA-STS policy (``enforce`` or ``testing``).
    MTA_STS = 1
    #: DANE (RFC 7672): the MX has DNSSEC-secure TLSA records, or their lookup failed.
    DANE = 2


@dataclass(frozen=True)
class DaneStatus:
    """DANE's part of a check (``struct mtasts_dane``), from :meth:`Engine.check_dane` and
    :meth:`Engine.check_mx_dane`."""

    #: DANE applies to the MX (a DNSSEC-secure TLSA RRset, or a failed DNSSEC lookup): it decides.
    applies: bool
    #: Never deliver to this MX without TLS (DANE applies, or an ``enforce`` policy lists it).
    tls_required: bool
    #: TLSA records of the secure RRset.
    tlsa_records: int
    #: How many of them are usable for SMTP (0 with ``applies``: TLS without authentication).
    usable_records: int
    #: Which protocol decided.
    decided_by: DecidedBy

    @classmethod
    def _from_c(cls, d: _lib.Dane) -> DaneStatus:
        return cls(
            applies=bool(d.applies),
            tls_required=bool(d.tls_required),
            tlsa_records=int(d.tlsa_records),
            usable_records=int(d.usable_records),
            decided_by=DecidedBy(d.decided_by),
        )


class StoreState(enum.IntEnum):
    """``enum mtasts_store_state``: where an engine's persistent store stands (stable values)."""

    #: No persistent store is configured (``[cache] path = "memory"``).
    NONE = 0
    #: The store is open for reading and writing.
    OK = 1
    #: This user may read the store but not write it: stored policies are enforced, new ones are
    #: not saved.
    READ_ONLY = 2
    #: The store could not be opened or read: protection is degraded (a stored policy is not seen).
    UNAVAILABLE = 3


@dataclass(frozen=True)
class StoreStatus:
    """The state of a store and, for ``READ_ONLY`` and ``UNAVAILABLE``, the library's message."""

    state: StoreState
    detail: str

    @property
    def degraded(self) -> bool:
        """True when a stored policy may be missed or a new one not saved."""
        return self.state in (StoreState.READ_ONLY, StoreState.UNAVAILABLE)


def _store_status(call: object) -> StoreStatus:
    state = ctypes.c_uint32(0)
    status, text, _ = read_string(
        lambda buf, size, out_n: call(ctypes.byref(state), buf, size, out_n),  # type: ignore[operator]
        512,
    )
    if status != Status.OK:
        raise error_from_status(status)
    return StoreStatus(StoreState(state.value), text)


# The C ABI has no mtasts_mode_str; these are the RFC 8461 policy modes.
_MODE_NAMES = {0: "no-policy", 1: "enforce", 2: "testing", 3: "none"}


class Mode(enum.IntEnum):
    """``enum mtasts_mode``: the mode of the policy that applied (stable values)."""

    #: No policy applied.
    NO_POLICY = 0
    #: ``mode: enforce``.
    ENFORCE = 1
    #: ``mode: testing``.
    TESTING = 2
    #: ``mode: none``.
    NONE = 3

    @property
    def rfc_name(self) -> str:
        """The RFC 8461 mode: ``"enforce"``, ``"testing"``, ``"none"``; ``"no-policy"`` for
        :attr:`NO_POLICY`. (Kept in Python: the C ABI has no ``mtasts_mode_str``.)"""
        return _MODE_NAMES[self.value]


@dataclass(frozen=True)
class Result:
    """The outcome of :meth:`Engine.check` or :meth:`Engine.check_mx` (``struct mtasts_result``).

    ``reason`` says why, for failures; with :attr:`Verdict.NO_POLICY` it may also say why no
    policy could be had (``Reason.STS_*``). ``policy_id`` is the id of the policy applied (``None``
    without a policy); ``detail`` is a human-readable explanation of a failure (``None`` if there
    is none; the library cuts it to 255 bytes).
    """

    verdict: Verdict
    reason: Reason
    mode: Mode
    policy_id: Optional[str]
    detail: Optional[str]

    @property
    def may_deliver(self) -> bool:
        """True when the message may be delivered to this MX: no policy, a pass, or a ``testing``
        failure (deliver and report). False for :attr:`Verdict.FAIL_ENFORCE`: try the next MX."""
        return self.verdict in (Verdict.NO_POLICY, Verdict.PASS, Verdict.FAIL_TESTING)

    @classmethod
    def _from_c(cls, r: _lib.Result) -> Result:
        policy_id = bytes(r.policy_id).decode("utf-8", "replace")
        detail = bytes(r.detail).decode("utf-8", "replace")
        return cls(
            verdict=Verdict(r.verdict),
            reason=Reason(r.reason),
            mode=Mode(r.mode),
            policy_id=policy_id or None,
            detail=detail or None,
        )


@dataclass(frozen=True)
class Policy:
    """A copy of the policy that applies to a domain (from :meth:`Engine.policy`).

    ``max_age`` is in seconds (already clamped to one year by the library); ``id`` is the TXT
    record's ``id``; ``fetched_at`` and ``expires_at`` (``fetched_at + max_age``) are aware UTC
    datetimes; ``mx`` lists the policy's ``mx`` patterns as written (``"*.example.net"``).
    """

    mode: Mode
    max_age: int
    id: str
    fetched_at: datetime
    expires_at: datetime
    mx: List[str]


def _str_arg(value: object, what: str) -> bytes:
    """Encodes a string argument, refusing what C cannot take, before any C call."""
    if not isinstance(value, str):
        raise InvalidArgumentError(f"{what} must be a str, not {type(value).__name__}")
    if "\0" in value:
        raise InvalidArgumentError(f"{what} contains a NUL character: {value!r}")
    try:
        return value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise InvalidArgumentError(
            f"{what} cannot be encoded as UTF-8: {e}", Status.INVALID_UTF8
        ) from None


def _mx_arg(value: object) -> bytes:
    """Encodes an MX host name. Its bytes are judged by the library, never refused: anything that
    is not an ASCII host name (U-labels, full-width letters or dots, bytes that are not UTF-8, a
    ``str`` with lone surrogates) matches no pattern. Only what C cannot take raises: a NUL, or
    a type that is neither ``str`` nor bytes-like."""
    if isinstance(value, str):
        raw = value.encode("utf-8", "surrogatepass")
    elif isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
    else:
        raise InvalidArgumentError(f"mx must be a str or bytes, not {type(value).__name__}")
    if b"\0" in raw:
        raise InvalidArgumentError(f"mx contains a NUL character: {value!r}")
    return raw


def _path_arg(value: object) -> bytes:
    """Encodes a configuration path (str or os.PathLike) as the bytes the OS would see."""
    try:
        path = os.fspath(value)  # type: ignore[call-overload]
    except TypeError:
        raise InvalidArgumentError(
            f"config_path must be a str or os.PathLike, not {type(value).__name__}"
        ) from None
    raw = os.fsencode(path)
    if b"\0" in raw:
        raise InvalidArgumentError(f"config_path contains a NUL character: {path!r}")
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidArgumentError(
            f"config_path is not valid UTF-8, which the library requires: {path!r}",
            Status.INVALID_UTF8,
        ) from None
    return raw


_CertArg = Tuple[Optional["ctypes.Array[ctypes.c_uint8]"], int]


def _cert_arg(cert: object) -> _CertArg:
    """Copies a certificate chain into a C buffer; ``None`` (no TLS) is NULL/0."""
    if cert is None:
        return None, 0
    if not isinstance(cert, (bytes, bytearray, memoryview)):
        raise InvalidArgumentError(
            f"cert must be bytes, bytearray or memoryview (PEM or DER), not {type(cert).__name__}"
        )
    data = cert if isinstance(cert, bytes) else bytes(cert)
    if not data:
        raise InvalidArgumentError("cert is empty: pass None when no TLS was negotiated")
    return (ctypes.c_uint8 * len(data)).from_buffer_copy(data), len(data)


class Engine(Managed):
    """An MTA-STS engine: configuration, trust anchors and the in-process policy cache.

    ``Engine(config_path)`` reads the TOML configuration file at ``config_path``;
    ``Engine()`` uses the built-in defaults (the system's resolver and trust anchors).
    ``$MTASTS_CONFIG`` is not consulted here (it configures only module-level :func:`check`).
    Raises :class:`ConfigError` (naming the file) when the file cannot be read or is invalid.

    Release it with :meth:`close` or a ``with`` block; it is also released when collected. Calls
    after ``close()`` raise :class:`ClosedError`.

    Thread-safety: one engine may be used by many threads at once, and its calls release the GIL
    (DNS and HTTPS inside them overlap with other threads). Threads asking for the same domain
    share one fetch. ``close()`` while other threads are in calls is safe: the last call to return
    frees the engine.

    fork(): create a new engine in the child. An engine that no thread was using at the moment of
    the fork keeps working in the child; one that another thread was inside a call on raises
    :class:`MtastsError` there (it may hold that vanished thread's locks) and is never freed.
    """

    def __init__(self, config_path: Optional[Union[str, os.PathLike[str]]] = None) -> None:
        path = None if config_path is None else _path_arg(config_path)
        #: The configuration file the engine was built from (``None`` for the defaults).
        self.config_path: Optional[str] = None if path is None else os.fsdecode(path)
        out = ctypes.c_void_p()
        status = _lib.lib.mtasts_engine_new(path, ctypes.byref(out))
        if status != Status.OK:
            raise error_from_status(status)
        if not out.value:
            raise MtastsError("mtasts_engine_new returned OK without an engine", Status.PANIC)
        self._set_ptr(out.value)

    def _delete(self, ptr: int) -> None:
        _lib.lib.mtasts_engine_free(ptr)

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<mtasts.Engine config_path={self.config_path!r} {state}>"

    def check(self, domain: str, mx: MxName, cert: Optional[CertificateChain] = None) -> Result:
        """Checks a delivery to ``mx`` for the Policy Domain ``domain`` after the TLS handshake.

        ``domain`` is the Policy Domain (normally the recipient domain; the smart host's domain
        when relaying through one; U-labels are converted); ``mx`` is the MX host name being
        tried, as in the MX record (``str`` or ``bytes``).
        ``cert`` is the chain the MX presented, leaf first, as PEM text or concatenated DER
        certificates (bytes, bytearray or memoryview); ``None`` means no TLS was negotiated (no
        STARTTLS, or it failed). An empty ``cert`` raises :class:`InvalidArgumentError` rather
        than being taken for "no TLS" as the C function would.

        May look up DNS and fetch the policy over HTTPS inside the call (the GIL is released).
        An MX that is not an ASCII host name (letters, digits, hyphens, A-labels; any case, an
        optional trailing dot) is not an error, whatever its characters or bytes (U-labels,
        full-width letters or dots, ``U+3002``, bytes that are not UTF-8): nothing is mapped onto
        a listed name, it matches no pattern, so a policy fails it (:attr:`Reason.MX_MISMATCH`).
        Raises :class:`InvalidDomainError`,
        :class:`InvalidArgumentError`, :class:`ClosedError`. Thread-safe.
        """
        d, m = _str_arg(domain, "domain"), _mx_arg(mx)
        buf, n = _cert_arg(cert)
        out = _lib.Result()
        ptr = self._acquire()
        try:
            status = _lib.lib.mtasts_engine_check(ptr, d, m, buf, n, ctypes.byref(out))
            if status != Status.OK:
                raise error_from_status(status)
        finally:
            self._release()
        return Result._from_c(out)

    def check_dane(
        self, domain: str, mx: MxName, cert: Optional[CertificateChain] = None
    ) -> Tuple[Result, DaneStatus]:
        """As :meth:`check`, and also what DANE decided (``mtasts_engine_check_dane``): where
        the MX has DNSSEC-secure TLSA records, DANE decides whatever the MTA-STS mode, and every
        DANE failure is :attr:`Verdict.FAIL_ENFORCE` (:attr:`Reason.TLSA_INVALID`,
        :attr:`Reason.DNSSEC_INVALID`, :attr:`Reason.DANE_REQUIRED`). Thread-safe."""
        d, m = _str_arg(domain, "domain"), _mx_arg(mx)
        buf, n = _cert_arg(cert)
        out, dane = _lib.Result(), _lib.Dane(size=ctypes.sizeof(_lib.Dane))
        ptr = self._acquire()
        try:
            status = _lib.lib.mtasts_engine_check_dane(
                ptr, d, m, buf, n, ctypes.byref(out), ctypes.byref(dane)
            )
            if status != Status.OK:
                raise error_from_status(status)
        finally:
            self._release()
        return Result._from_c(out), DaneStatus._from_c(dane)

    def check_mx_dane(self, domain: str, mx: MxName) -> Tuple[Result, DaneStatus]:
        """As :meth:`check_mx` (before connecting), and also whether DANE applies to the MX and
        whether TLS is required (``tls_required``: never fall back to plaintext). Thread-safe."""
        d, m = _str_arg(domain, "domain"), _mx_arg(mx)
        out, dane = _lib.Result(), _lib.Dane(size=ctypes.sizeof(_lib.Dane))
        ptr = self._acquire()
        try:
            status = _lib.lib.mtasts_engine_check_mx_dane(ptr, d, m, ctypes.byref(out), ctypes.byref(dane))
            if status != Status.OK:
                raise error_from_status(status)
        finally:
            self._release()
        return Result._from_c(out), DaneStatus._from_c(dane)

    def check_mx(self, domain: str, mx: MxName) -> Result:
        """Judges only the MX name, before connecting.

        :attr:`Verdict.FAIL_ENFORCE` means do not connect to this MX (try the next one);
        :attr:`Verdict.FAIL_TESTING` means connect and report. The certificate must still be
        checked after the handshake with :meth:`check`. Errors and thread-safety as for
        :meth:`check`.
        """
        d, m = _str_arg(domain, "domain"), _mx_arg(mx)
        out = _lib.Result()
        ptr = self._acquire()
        try:
            status = _lib.lib.mtasts_engine_check_mx(ptr, d, m, ctypes.byref(out))
            if status != Status.OK:
                raise error_from_status(status)
        finally:
            self._release()
        return Result._from_c(out)

    def record(
        self,
        domain: str,
        mx: MxName,
        result: Optional[Reason] = None,
        *,
        sending_ip: Optional[str] = None,
        receiving_ip: Optional[str] = None,
        failure_reason_code: Optional[str] = None,
    ) -> None:
        """Counts, for TLSRPT (RFC 8460), a session the MTA judged itself.

        ``result`` is ``None`` for a session that negotiated TLS and satisfied the policy, or the
        failure (e.g. :attr:`Reason.STARTTLS_NOT_SUPPORTED` when the handshake failed).
        :meth:`check` already counts the session it judges: use this only for sessions that did
        not go through it. Counted under an ``enforce`` or ``testing`` policy of ``domain``,
        except the DANE results (:attr:`Reason.TLSA_INVALID`, :attr:`Reason.DNSSEC_INVALID`,
        :attr:`Reason.DANE_REQUIRED`); and, when the engine does DANE and ``mx`` has
        DNSSEC-secure TLSA records, also under the ``tlsa`` policy of ``mx`` (the DANE results
        always go there). Sessions that deliver TLSRPT reports (messages with a
        ``TLS-Report-Domain`` header) must not be counted (RFC 8460 §3): neither record nor
        :meth:`check` them. Raises
        :class:`InvalidDomainError`, :class:`InvalidArgumentError` (e.g. a malformed IP address),
        :class:`ClosedError`. Thread-safe.
        """
        d, m = _str_arg(domain, "domain"), _mx_arg(mx)
        optional = [
            None if v is None else _str_arg(v, name)
            for v, name in (
                (sending_ip, "sending_ip"),
                (receiving_ip, "receiving_ip"),
                (failure_reason_code, "failure_reason_code"),
            )
        ]
        code = int(Reason.NONE if result is None else Reason(result))
        ptr = self._acquire()
        try:
            status = _lib.lib.mtasts_engine_record(ptr, d, m, code, *optional)
            if status != Status.OK:
                raise error_from_status(status)
        finally:
            self._release()

    def flush(self) -> None:
        """Writes pending TLSRPT counts to the store now (also done every few hundred sessions
        or seconds, and when the engine is closed). Thread-safe."""
        ptr = self._acquire()
        try:
            status = _lib.lib.mtasts_engine_flush(ptr)
            if status != Status.OK:
                raise error_from_status(status)
        finally:
            self._release()

    def store_status(self) -> StoreStatus:
        """Where the engine's persistent store stands (``mtasts_engine_store_state``): a caller
        sees degraded protection (a read-only or unavailable store) without reading stderr.
        Thread-safe."""
        ptr = self._acquire()
        try:
            return _store_status(
                lambda state, buf, size, out_n: _lib.lib.mtasts_engine_store_state(
                    ptr, state, buf, size, out_n
                )
            )
        finally:
            self._release()

    def policy(self, domain: str) -> Optional[Policy]:
        """The policy that applies to ``domain`` now, or ``None`` when none applies.

        Looks up DNS and fetches as the cache rules require. A ``mode: none`` policy is returned
        like any other. Raises :class:`InvalidDomainError`, :class:`InvalidArgumentError`,
        :class:`ClosedError`. Thread-safe.
        """
        d = _str_arg(domain, "domain")
        handle = ctypes.c_void_p()
        ptr = self._acquire()
        try:
            status = _lib.lib.mtasts_engine_policy(ptr, d, ctypes.byref(handle))
            if status == Status.NO_POLICY:
                return None
            if status != Status.OK:
                raise error_from_status(status)
        finally:
            self._release()
        # The policy is independent of the engine: read it without holding the engine.
        try:
            return _read_policy(handle.value)
        finally:
            _lib.lib.mtasts_policy_free(handle.value)


def _read_policy(p: Optional[int]) -> Policy:
    lib = _lib.lib
    if not p:
        raise MtastsError("mtasts_engine_policy returned OK without a policy", Status.PANIC)

    def text(call: str, *args: int) -> str:
        function = getattr(lib, call)
        status, value, _ = read_string(
            lambda buf, size, out_n: int(function(p, *args, buf, size, out_n)), 64
        )
        if status != Status.OK:
            raise error_from_status(status)
        return value

    return Policy(
        mode=Mode(lib.mtasts_policy_mode(p)),
        max_age=int(lib.mtasts_policy_max_age(p)),
        id=text("mtasts_policy_id"),
        fetched_at=datetime.fromtimestamp(int(lib.mtasts_policy_fetched_at(p)), tz=timezone.utc),
        expires_at=datetime.fromtimestamp(int(lib.mtasts_policy_expires_at(p)), tz=timezone.utc),
        mx=[text("mtasts_policy_mx", i) for i in range(int(lib.mtasts_policy_mx_count(p)))],
    )


def check(domain: str, mx: MxName, cert: Optional[CertificateChain] = None) -> Verdict:
    """Checks a delivery with the library's process-wide default engine; returns the verdict.

    Arguments as for :meth:`Engine.check`. The default engine is built on the first call in each
    process from ``$MTASTS_CONFIG`` (else ``/etc/mtasts/mtasts.toml``, else the defaults) and kept
    for the life of the process, so set ``MTASTS_CONFIG`` before the first call.

    Never returns :attr:`Verdict.ERROR`: a failed call raises :class:`MtastsError` with the
    library's message and ``status=None`` (``mtasts_check`` reports no status, so a bad domain,
    a bad MX and a bad configuration file are not told apart by exception class here; use an
    :class:`Engine` for that). :class:`InvalidArgumentError` as for :meth:`Engine.check`.

    Thread-safe; releases the GIL. fork(): the library builds a new default engine in a forked
    child on its first call there, with nothing to do on the Python side.
    """
    d, m = _str_arg(domain, "domain"), _mx_arg(mx)
    buf, n = _cert_arg(cert)
    verdict = _lib.lib.mtasts_check(d, m, buf, n)
    if verdict == Verdict.ERROR:
        raise MtastsError(last_error() or "mtasts_check failed")
    return Verdict(verdict)


def store_status() -> StoreStatus:
    """As :meth:`Engine.store_status`, for the process-wide default engine of :func:`check`."""
    return _store_status(_lib.lib.mtasts_default_store_state)


#: The logger the library's lines go to: warnings, and at ``INFO`` one ``decision`` line per check
#: (domain, MX, verdict, reason, mode, policy id, source, DANE) and one per discovery.
logger = logging.getLogger("mtasts")

_C_LEVELS = {1: logging.ERROR, 2: logging.WARNING, 3: logging.INFO, 4: logging.DEBUG}


def _c_level(level: int) -> int:
    """The library's level (``MTASTS_LOG_*``) for a :mod:`logging` level."""
    if level <= logging.DEBUG:
        return 4
    if level <= logging.INFO:
        return 3
    if level <= logging.WARNING:
        return 2
    if level <= logging.CRITICAL:
        return 1
    return 0


def _log_line(_user_data: Optional[int], level: int, line: bytes) -> None:
    try:
        logger.log(_C_LEVELS.get(level, logging.INFO), line.decode("utf-8", "replace"))
    except Exception:  # a logging handler's failure must not unwind into C
        pass


# Kept referenced for the life of the module: the library holds the pointer.
_on_log = _lib.LOG_CALLBACK(_log_line)


def set_log_level(level: Union[int, str]) -> None:
    """Sets the level of the ``mtasts`` logger and asks the library for lines at that level and
    above (``logging.INFO`` adds the decision log to the warnings). The library's lines go to the
    ``mtasts`` logger from the import of this package on, at the level that logger had then
    (``WARNING`` unless configured): the library formats only the lines asked for, so call this
    rather than ``logger.setLevel`` alone to get more. Thread-safe."""
    logger.setLevel(level)
    status = _lib.lib.mtasts_set_log_callback(_on_log, None, _c_level(logger.getEffectiveLevel()))
    if status != Status.OK:
        raise error_from_status(Status(status))


set_log_level(logger.level)
