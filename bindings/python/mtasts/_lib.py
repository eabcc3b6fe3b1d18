"""Finds and loads ``libmtasts``, and declares the C ABI of ``include/mtasts.h`` for ctypes.

Where the library is looked for, in order:

1. ``libmtasts.so`` next to this file: the copy a wheel carries. When it is there it is the one
   loaded, whatever ``$MTASTS_LIBRARY`` says (a wheel is built and tested with its own library, of
   its own version); if it does not load, the import fails rather than quietly loading another
   copy. A ``$MTASTS_LIBRARY`` that names another file is reported on the ``mtasts`` logger.
2. ``$MTASTS_LIBRARY``, a path (a package installed from source carries no library). When it is
   set, nothing else is tried: an explicit choice that does not load is an error, not a reason to
   load some other copy.
3. The system's library path: ``ctypes.util.find_library("mtasts")``, then ``libmtasts.so.0``,
   then ``libmtasts.so`` (``LD_LIBRARY_PATH``, ``ld.so.cache``).

The library is loaded with :class:`ctypes.CDLL`, so every call releases the GIL while it runs.
After loading, ``mtasts_version()`` must equal the package's ``__version__``: the C structs and
enum values are only known to match for the version this package was written against.

Every function of the header has its ``argtypes`` and ``restype`` declared here (the ctypes default
return type, ``int``, would truncate pointers and hide mistakes). Enums are ``c_uint32``, as in the
header's C11 typedefs; opaque handles are ``c_void_p``; static strings are ``c_char_p`` (copied on
return, never freed); caller buffers are ``POINTER(c_char)``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
from ctypes import CFUNCTYPE, POINTER, c_char, c_char_p, c_int, c_size_t, c_uint8, c_uint32, c_uint64, c_void_p
from typing import Any, Dict, List, Optional, Tuple

from ._version import __version__

#: The environment variable naming the library to load.
ENV_LIBRARY = "MTASTS_LIBRARY"

#: The file name of the library.
LIBRARY_NAME = "libmtasts.so"


class Result(ctypes.Structure):
    """``struct mtasts_result``: plain data, owned by the caller."""

    _fields_ = [
        ("verdict", c_uint32),
        ("reason", c_uint32),
        ("mode", c_uint32),
        ("policy_id", c_char * 33),
        ("detail", c_char * 256),
    ]


class Dane(ctypes.Structure):
    """``struct mtasts_dane``: DANE's part of a check; ``size`` is set before the call."""

    _fields_ = [
        ("size", c_size_t),
        ("applies", c_uint32),
        ("tls_required", c_uint32),
        ("tlsa_records", c_uint32),
        ("usable_records", c_uint32),
        ("decided_by", c_uint32),
    ]


#: ``mtasts_log_callback``: ``(user_data, level, line)``.
LOG_CALLBACK = CFUNCTYPE(None, c_void_p, c_int, c_char_p)

# name -> (restype, argtypes), in the order of include/mtasts.h.
SIGNATURES: Dict[str, Tuple[Any, List[Any]]] = {
    "mtasts_version": (c_char_p, []),
    "mtasts_status_str": (c_char_p, [c_uint32]),
    "mtasts_reason_str": (c_char_p, [c_uint32]),
    "mtasts_verdict_str": (c_char_p, [c_uint32]),
    "mtasts_last_error": (c_uint32, [POINTER(c_char), c_size_t, POINTER(c_size_t)]),
    "mtasts_check": (c_uint32, [c_char_p, c_char_p, POINTER(c_uint8), c_size_t]),
    "mtasts_engine_new": (c_uint32, [c_char_p, POINTER(c_void_p)]),
    "mtasts_engine_free": (None, [c_void_p]),
    "mtasts_engine_check": (
        c_uint32,
        [c_void_p, c_char_p, c_char_p, POINTER(c_uint8), c_size_t, POINTER(Result)],
    ),
    "mtasts_engine_check_mx": (c_uint32, [c_void_p, c_char_p, c_char_p, POINTER(Result)]),
    "mtasts_engine_check_dane": (
        c_uint32,
        [c_void_p, c_char_p, c_char_p, POINTER(c_uint8), c_size_t, POINTER(Result), POINTER(Dane)],
    ),
    "mtasts_engine_check_mx_dane": (
        c_uint32,
        [c_void_p, c_char_p, c_char_p, POINTER(Result), POINTER(Dane)],
    ),
    "mtasts_engine_policy": (c_uint32, [c_void_p, c_char_p, POINTER(c_void_p)]),
    "mtasts_engine_record": (
        c_uint32,
        [c_void_p, c_char_p, c_char_p, c_uint32, c_char_p, c_char_p, c_char_p],
    ),
    "mtasts_record": (c_uint32, [c_char_p, c_char_p, c_uint32, c_char_p, c_char_p, c_char_p]),
    "mtasts_engine_flush": (c_uint32, [c_void_p]),
    "mtasts_engine_store_state": (
        c_uint32,
        [c_void_p, POINTER(c_uint32), POINTER(c_char), c_size_t, POINTER(c_size_t)],
    ),
    "mtasts_default_store_state": (
        c_uint32,
        [POINTER(c_uint32), POINTER(c_char), c_size_t, POINTER(c_size_t)],
    ),
    "mtasts_set_log_callback": (c_uint32, [LOG_CALLBACK, c_void_p, c_int]),
    "mtasts_policy_free": (None, [c_void_p]),
    "mtasts_policy_mode": (c_uint32, [c_void_p]),
    "mtasts_policy_max_age": (c_uint32, [c_void_p]),
    "mtasts_policy_fetched_at": (c_uint64, [c_void_p]),
    "mtasts_policy_expires_at": (c_uint64, [c_void_p]),
    "mtasts_policy_id": (c_uint32, [c_void_p, POINTER(c_char), c_size_t, POINTER(c_size_t)]),
    "mtasts_policy_mx_count": (c_size_t, [c_void_p]),
    "mtasts_policy_mx": (
        c_uint32,
        [c_void_p, c_size_t, POINTER(c_char), c_size_t, POINTER(c_size_t)],
    ),
}


def _candidates() -> List[Tuple[str, Optional[str]]]:
    """The places to try, in order, each as (description, what to pass to CDLL); ``None`` stands
    for the result of ``ctypes.util.find_library``, looked up only if the earlier places fail."""
    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), LIBRARY_NAME)
    explicit = os.environ.get(ENV_LIBRARY)
    if os.path.lexists(here):
        if explicit and os.path.realpath(explicit) != os.path.realpath(here):
            logging.getLogger("mtasts").warning(
                "mtasts: %s=%s is not used: this package carries its own library, %s",
                ENV_LIBRARY,
                explicit,
                here,
            )
        return [(f"{here} (the package's own copy)", here)]
    if explicit:
        return [(f"{ENV_LIBRARY}={explicit}", explicit)]
    return [
        (f"{here} (the package's own copy): not installed", ""),
        ('ctypes.util.find_library("mtasts")', None),
        ("libmtasts.so.0 (system library path)", "libmtasts.so.0"),
        (f"{LIBRARY_NAME} (system library path)", LIBRARY_NAME),
    ]


def _load() -> Tuple[ctypes.CDLL, str]:
    """Loads the first library that loads, or raises ImportError naming every place tried."""
    tried: List[str] = []
    for where, target in _candidates():
        if target == "":
            tried.append(f"  {where}")
            continue
        if target is None:
            target = ctypes.util.find_library("mtasts")
            if target is None:
                tried.append(f"  {where}: not found")
                continue
            where = f"{where} = {target}"
        try:
            return ctypes.CDLL(target), where
        except OSError as e:
            tried.append(f"  {where}: {e}")
    raise ImportError(
        "mtasts: cannot load the mtasts C library (libmtasts.so). Tried:\n"
        + "\n".join(tried)
        + f"\nInstall the mtasts wheel (it carries the library), set {ENV_LIBRARY} to the path "
        "of libmtasts.so (for a source checkout: cargo build -p mtasts, then "
        "target/debug/libmtasts.so), or install it on the system's library path."
    )


def _declare(lib: ctypes.CDLL, where: str) -> None:
    """Declares argtypes and restype for every function of the header."""
    for name, (restype, argtypes) in SIGNATURES.items():
        try:
            function = getattr(lib, name)
        except AttributeError:
            raise ImportError(
                f"mtasts: the library loaded from {where} has no function {name}: it is not "
                f"the mtasts library this package (version {__version__}) was written for; set "
                f"{ENV_LIBRARY} to a matching libmtasts.so"
            ) from None
        function.restype = restype
        function.argtypes = argtypes


def _check_version(lib_version: str, pkg_version: str, where: str = "the library") -> None:
    """Raises ImportError unless the library's version equals the package's."""
    if lib_version != pkg_version:
        raise ImportError(
            f"mtasts: {where} is libmtasts version {lib_version}, but this Python package is "
            f"version {pkg_version}; the two must be the same version. Set {ENV_LIBRARY} to the "
            f"path of a libmtasts.so of version {pkg_version}, or install the Python package "
            f"of version {lib_version}."
        )


lib, _where = _load()
#: What the library was loaded as: a path, or a name resolved by the dynamic loader.
path: str = lib._name
_declare(lib, _where)
#: The version the loaded library reports.
library_version: str = (lib.mtasts_version() or b"").decode("utf-8", "replace")
_check_version(library_version, __version__, f"the library loaded from {_where}")
