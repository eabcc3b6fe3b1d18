"""The build step of the wheel (all metadata is in pyproject.toml).

With ``MTASTS_WHEEL_LIBRARY=/path/to/libmtasts.so`` (``make wheel`` sets it to the stripped release
build) the library is copied into the package, next to ``_lib.py``, which looks there first; the
wheel is then a platform wheel tagged ``py3-none-$MTASTS_WHEEL_PLATFORM`` (for example
``manylinux_2_34_x86_64``, which ``bindings/python/build-wheel.sh`` derives from the glibc symbol
versions the library needs). Without it, the package is pure Python as before and finds the library
through ``$MTASTS_LIBRARY`` or the system's library path.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from setuptools import Distribution, setup
from setuptools.command.bdist_wheel import bdist_wheel
from setuptools.command.build_py import build_py

LIBRARY = os.environ.get("MTASTS_WHEEL_LIBRARY", "")
PLATFORM = os.environ.get("MTASTS_WHEEL_PLATFORM", "")

if LIBRARY and not Path(LIBRARY).is_file():
    raise SystemExit(f"MTASTS_WHEEL_LIBRARY={LIBRARY}: no such file")
if LIBRARY and not PLATFORM:
    raise SystemExit("MTASTS_WHEEL_LIBRARY is set but MTASTS_WHEEL_PLATFORM is not")


class BuildPy(build_py):
    """Copies the library into the built package."""

    def run(self) -> None:
        super().run()
        if LIBRARY:
            target = Path(self.build_lib) / "mtasts" / "libmtasts.so"
            shutil.copyfile(LIBRARY, target)
            target.chmod(0o644)


class NativeDistribution(Distribution):
    """Native code inside when it carries the library: installed into platlib, not purelib."""

    def has_ext_modules(self) -> bool:
        return bool(LIBRARY)


class BdistWheel(bdist_wheel):
    """Tagged for the platform when it carries the library; any Python 3, no Python ABI (ctypes)."""

    def get_tag(self) -> tuple[str, str, str]:
        if LIBRARY:
            return "py3", "none", PLATFORM
        return super().get_tag()


setup(distclass=NativeDistribution, cmdclass={"build_py": BuildPy, "bdist_wheel": BdistWheel})
