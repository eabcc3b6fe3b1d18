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


def test_missing_library_names_the_path(tmp_path: pathlib.Path) -> None:
    missing = tmp_path / "nowhere" / "libmtasts.so"
    proc = run_python("import mtasts", env={"MTASTS_LIBRARY": str(missing)})
    assert proc.returncode != 0
    assert "ImportError" in proc.stderr
    assert f"MTASTS_LIBRARY={missing}" in proc.stderr


def test_not_a_library(tmp_path: pathlib.Path) -> None:
    bogus = tmp_path / "libmtasts.so"
    bogus.write_text("not ELF")
    proc = run_python("import mtasts", env={"MTASTS_LIBRARY": str(bogus)})
    assert proc.returncode != 0 and str(bogus) in proc.stderr


def test_without_any_library_every_place_is_named() -> None:
    proc = run_python(
        "import mtasts; print(mtasts.library_path)", unset=["MTASTS_LIBRARY", "LD_LIBRARY_PATH"]
    )
    if proc.returncode == 0:
        pytest.skip(f"a libmtasts is installed on this system: {proc.stdout.strip()}")
    for place in (
        os.path.join(os.path.dirname(mtasts.__file__), "libmtasts.so"),
        'ctypes.util.find_library("mtasts")',
        "libmtasts.so.0",
        "libmtasts.so (system library path)",
        "Set MTASTS_LIBRARY",
    ):
        assert place in proc.stderr, place


def test_library_next_to_the_package(tmp_path: pathlib.Path) -> None:
    package = tmp_path / "mtasts"
    shutil.copytree(os.path.dirname(mtasts.__file__), package)
    # An installed wheel carries its library already; a package installed from source does not.
    if not (package / "libmtasts.so").exists():
        os.symlink(os.path.realpath(mtasts.library_path), package / "libmtasts.so")
    proc = run_python(
        "import mtasts; print(mtasts.__file__); print(mtasts.library_path)",
        env={"PYTHONPATH": str(tmp_path)},
        unset=["MTASTS_LIBRARY"],
    )
    assert proc.returncode == 0, proc.stderr
    file, path = proc.stdout.split()
    assert file == str(package / "__init__.py")
    assert path == str(package / "libmtasts.so")


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
