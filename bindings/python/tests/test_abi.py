"""The Python side agrees with include/mtasts.h: enum values, functions, struct, versions."""

from __future__ import annotations

import ctypes
import enum
import re
from typing import Any, Dict, List, Tuple, Type

import pytest

import mtasts
from mtasts import Mode, Reason, Status, Verdict, _lib
from conftest import HEADER, REPO_ROOT

ENUMS: Dict[str, Type[enum.IntEnum]] = {
    "MTASTS_STATUS_": Status,
    "MTASTS_VERDICT_": Verdict,
    "MTASTS_REASON_": Reason,
    "MTASTS_MODE_": Mode,
    "MTASTS_STORE_": mtasts.StoreState,
    "MTASTS_DECIDED_BY_": mtasts.DecidedBy,
}


def header_text() -> str:
    return HEADER.read_text()


def header_enum_values() -> Dict[str, int]:
    return {
        name: int(value)
        for name, value in re.findall(
            r"^\s*(MTASTS_[A-Z0-9_]+)\s*=\s*(\d+)\s*,?\s*$", header_text(), re.M
        )
    }


def header_functions() -> Dict[str, Tuple[str, List[str]]]:
    """name -> (return type, parameter types), for every function declared in the header."""
    functions = {}
    for match in re.finditer(
        r"^([a-z][a-z_ 0-9]*?[\s*]+)(mtasts_\w+)\(([^)]*)\);", header_text(), re.M
    ):
        params = " ".join(match.group(3).split())
        types = (
            []
            if params in ("", "void")
            else [
                p.rsplit(" ", 1)[0] + "*" * p.rsplit(" ", 1)[1].count("*")
                for p in params.split(", ")
            ]
        )
        functions[match.group(2)] = (
            " ".join(match.group(1).split()),
            [" ".join(t.replace("*", " *").split()) for t in types],
        )
    return functions


def expected_ctype(c_type: str) -> Any:
    """The ctypes type a C type of the header must be declared as."""
    if c_type == "void":
        return None
    if c_type == "mtasts_log_callback":
        return _lib.LOG_CALLBACK
    if c_type in ("uint32_t", "size_t", "uint64_t") or (
        c_type.startswith("mtasts_") and "*" not in c_type
    ):
        return {"size_t": ctypes.c_size_t, "uint64_t": ctypes.c_uint64}.get(c_type, ctypes.c_uint32)
    return {
        "const char *": ctypes.c_char_p,
        "int": ctypes.c_int,
        "void *": ctypes.c_void_p,
        "char *": ctypes.POINTER(ctypes.c_char),
        "size_t *": ctypes.POINTER(ctypes.c_size_t),
        "mtasts_store_state *": ctypes.POINTER(ctypes.c_uint32),
        "struct mtasts_dane *": ctypes.POINTER(_lib.Dane),
        "const uint8_t *": ctypes.POINTER(ctypes.c_uint8),
        "struct mtasts_result *": ctypes.POINTER(_lib.Result),
        "struct mtasts_engine *": ctypes.c_void_p,
        "const struct mtasts_engine *": ctypes.c_void_p,
        "struct mtasts_policy *": ctypes.c_void_p,
        "const struct mtasts_policy *": ctypes.c_void_p,
        "struct mtasts_engine * *": ctypes.POINTER(ctypes.c_void_p),
        "struct mtasts_policy * *": ctypes.POINTER(ctypes.c_void_p),
    }[c_type]


def test_every_header_enum_value_matches() -> None:
    values = header_enum_values()
    assert len(values) == 11 + 5 + 14 + 4 + 4 + 3, values
    for name, value in values.items():
        prefix = next(p for p in ENUMS if name.startswith(p))
        member = ENUMS[prefix][name[len(prefix) :]]
        assert member.value == value, name


def test_every_python_enum_member_is_in_the_header() -> None:
    values = header_enum_values()
    for prefix, cls in ENUMS.items():
        for member in cls:
            assert values[prefix + member.name] == member.value


def test_rfc_names() -> None:
    assert Reason.MX_MISMATCH.rfc_name == "mx-mismatch"
    assert Reason.CERTIFICATE_EXPIRED.rfc_name == "certificate-expired"
    assert Reason.STS_POLICY_FETCH_ERROR.rfc_name == "sts-policy-fetch-error"
    assert Reason.NONE.rfc_name == "none"
    assert Verdict.PASS.rfc_name == "pass"
    assert Verdict.FAIL_ENFORCE.rfc_name == "fail-enforce"
    assert Mode.ENFORCE.rfc_name == "enforce" and Mode.NONE.rfc_name == "none"
    assert Mode.NO_POLICY.rfc_name == "no-policy"
    # The header documents each reason's RFC name in its comment: `certificate-expired`.
    text = header_text()
    for member in Reason:
        comment = re.search(rf"// `([a-z-]+)`[^\n]*\n\s*MTASTS_REASON_{member.name} =", text)
        if comment:
            assert member.rfc_name == comment.group(1)
    for cls in (Status, Verdict, Reason, Mode):
        names = [m.rfc_name for m in cls]
        assert "unknown" not in names and len(set(names)) == len(names)


def test_unknown_values_have_the_name_unknown() -> None:
    assert _lib.lib.mtasts_reason_str(999) == b"unknown"
    assert _lib.lib.mtasts_status_str(999) == b"unknown"


def test_every_header_function_is_declared() -> None:
    functions = header_functions()
    assert len(functions) == 27, sorted(functions)
    assert set(functions) == set(_lib.SIGNATURES)
    for name, (returns, params) in functions.items():
        restype, argtypes = _lib.SIGNATURES[name]
        assert restype is expected_ctype(returns), (name, returns)
        assert argtypes == [expected_ctype(p) for p in params], (name, params)
        function = getattr(_lib.lib, name)
        assert function.argtypes == argtypes and function.restype is restype, name


def test_result_struct_matches_the_header() -> None:
    text = header_text()
    body = re.search(r"typedef struct mtasts_result \{(.*?)\} mtasts_result;", text, re.S)
    assert body is not None
    fields = re.findall(r"^\s*(\w+) (\w+)(?:\[(\d+)\])?;", body.group(1), re.M)
    declared = [(f[0], f[1]) for f in _lib.Result._fields_]
    assert [f[1] for f in fields] == [name for name, _ in declared]
    for (ctype, name, length), (_, pytype) in zip(fields, declared):
        if length:
            assert ctype == "char" and pytype == ctypes.c_char * int(length), name
        else:
            assert ctype.startswith("mtasts_") and pytype is ctypes.c_uint32, name


def test_versions_agree() -> None:
    macros = dict(re.findall(r"#define MTASTS_VERSION_(\w+) (\d+)", header_text()))
    header_version = f"{macros['MAJOR']}.{macros['MINOR']}.{macros['PATCH']}"
    cargo = re.search(
        r'^\[package\].*?^version = "([^"]+)"', (REPO_ROOT / "Cargo.toml").read_text(), re.S | re.M
    )
    assert cargo is not None
    assert mtasts.__version__ == cargo.group(1) == header_version == mtasts.library_version
    assert _lib.lib.mtasts_version().decode() == mtasts.__version__


def test_installed_metadata_version() -> None:
    metadata = pytest.importorskip("importlib.metadata")
    try:
        installed = metadata.version("mtasts")
    except metadata.PackageNotFoundError:
        pytest.skip("the package is not installed (run from the source tree)")
    assert installed == mtasts.__version__
