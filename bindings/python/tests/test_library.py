"""Finding and loading libmtasts (each case in a fresh interpreter)."""

from __future__ import annotations

import os
import pathlib
import shutil

import pytest

import mtasts
from mtasts._lib import _check_version
from conftest import run_python


def test_library_path_is_reported() -> None:
    assert "libmtasts" in mtasts.library_path


def _package_copy(tmp_path: pathlib.Path, with_library: bool) -> pathlib.Path:
    """A copy of the package under ``tmp_path/mtasts``, with or without its own ``libmtasts.so``
    (an installed wheel carries one; a package installed from source does not)."""
    package = tmp_path / "mtasts"
    shutil.copytree(
        os.path.dirname(mtasts.__file__),
        package,
        ignore=shutil.ignore_patterns("__pycache__", "libmtasts.so"),
    )
    if with_library:
        os.symlink(os.path.realpath(mtasts.library_path), package / "libmtasts.so")
    return package


def test_missing_library_names_the_path(tmp_path: pathlib.Path) -> None:
    _package_copy(tmp_path, with_library=False)
    missing = tmp_path / "nowhere" / "libmtasts.so"
    proc = run_python(
        "import mtasts", env={"PYTHONPATH": str(tmp_path), "MTASTS_LIBRARY": str(missing)}
    )
    assert proc.returncode != 0
    assert "ImportError" in proc.stderr
    assert f"MTASTS_LIBRARY={missing}" in proc.stderr


def test_not_a_library(tmp_path: pathlib.Path) -> None:
    _package_copy(tmp_path, with_library=False)
    bogus = tmp_path / "libmtasts.so"
    bogus.write_text("not ELF")
    proc = run_python(
        "import mtasts", env={"PYTHONPATH": str(tmp_path), "MTASTS_LIBRARY": str(bogus)}
    )
    assert proc.returncode != 0 and str(bogus) in proc.stderr


def test_without_any_library_every_place_is_named(tmp_path: pathlib.Path) -> None:
    package = _package_copy(tmp_path, with_library=False)
    proc = run_python(
        "import mtasts; print(mtasts.library_path)",
        env={"PYTHONPATH": str(tmp_path)},
        unset=["MTASTS_LIBRARY", "LD_LIBRARY_PATH"],
    )
    if proc.returncode == 0:
        # Only a system-wide install (ldconfig) can still be found; it must be the system's.
        assert "libmtasts" in proc.stdout and str(package) not in proc.stdout, proc.stdout
        return
    for place in (
        f"{package / 'libmtasts.so'} (the package's own copy): not installed",
        'ctypes.util.find_library("mtasts")',
        "libmtasts.so.0",
        "libmtasts.so (system library path)",
        "set MTASTS_LIBRARY",
    ):
        assert place in proc.stderr, place


def test_library_next_to_the_package(tmp_path: pathlib.Path) -> None:
    package = _package_copy(tmp_path, with_library=True)
    proc = run_python(
        "import mtasts; print(mtasts.__file__); print(mtasts.library_path)",
        env={"PYTHONPATH": str(tmp_path)},
        unset=["MTASTS_LIBRARY"],
    )
    assert proc.returncode == 0, proc.stderr
    file, path = proc.stdout.split()
    assert file == str(package / "__init__.py")
    assert path == str(package / "libmtasts.so")


def test_package_copy_comes_before_mtasts_library(tmp_path: pathlib.Path) -> None:
    package = _package_copy(tmp_path, with_library=True)
    elsewhere = tmp_path / "elsewhere" / "libmtasts.so"
    proc = run_python(
        "import mtasts; print(mtasts.library_path)",
        env={"PYTHONPATH": str(tmp_path), "MTASTS_LIBRARY": str(elsewhere)},
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(package / "libmtasts.so")
    # The variable that was passed over is said, not silently dropped.
    assert f"MTASTS_LIBRARY={elsewhere} is not used" in proc.stderr


def test_broken_package_copy_is_an_error(tmp_path: pathlib.Path) -> None:
    package = _package_copy(tmp_path, with_library=False)
    (package / "libmtasts.so").write_text("not ELF")
    proc = run_python(
        "import mtasts",
        env={"PYTHONPATH": str(tmp_path), "MTASTS_LIBRARY": os.path.realpath(mtasts.library_path)},
    )
    # A package's own library that does not load is a broken install: no fallback to another copy.
    assert proc.returncode != 0
    assert "ImportError" in proc.stderr and str(package / "libmtasts.so") in proc.stderr


def test_version_mismatch_refuses_to_load() -> None:
    # A stand-in for mtasts._version, so that the package believes it is 9.9.9.
    code = """
import sys, types
fake = types.ModuleType("mtasts._version")
fake.__version__ = "9.9.9"
sys.modules["mtasts._version"] = fake
import mtasts
"""
    proc = run_python(code)
    assert proc.returncode != 0
    message = proc.stderr.strip().splitlines()[-1]
    assert message.startswith("ImportError:")
    assert f"libmtasts version {mtasts.__version__}" in message
    assert "Python package is version 9.9.9" in message
    assert "MTASTS_LIBRARY" in message


def test_check_version() -> None:
    _check_version("1.2.3", "1.2.3")
    with pytest.raises(ImportError) as info:
        _check_version("0.2.0", "0.1.0", "the library loaded from /x/libmtasts.so")
    message = str(info.value)
    assert "/x/libmtasts.so is libmtasts version 0.2.0" in message
    assert "version 0.1.0" in message and "MTASTS_LIBRARY" in message
