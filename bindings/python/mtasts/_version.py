"""The package version: always equal to the Rust crate's version (``Cargo.toml``).

The library refuses to load when ``mtasts_version()`` says otherwise (see ``_lib.py``).
"""

__version__ = "0.2.0"
