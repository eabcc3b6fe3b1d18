//! Build script: gives the C library (`libmtasts.so`) its SONAME, `libmtasts.so.<major>`.
//!
//! Programs linked against the library record the SONAME, not the file name, so that
//! `make install` can ship `libmtasts.so.<version>` with the `libmtasts.so.<major>` symlink the
//! dynamic loader looks for, and an incompatible major version can be installed next to this one.
//! Only ELF platforms (every Unix but Apple's) have SONAMEs; elsewhere this script does nothing.

use std::env;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let unix = env::var("CARGO_CFG_TARGET_FAMILY").is_ok_and(|f| f.split(',').any(|f| f == "unix"));
    let apple = env::var("CARGO_CFG_TARGET_VENDOR").is_ok_and(|v| v == "apple");
    if !unix || apple {
        return;
    }
    // Cargo always sets this; "0" keeps the script total rather than panicking if it did not.
    let major = env::var("CARGO_PKG_VERSION_MAJOR").unwrap_or_else(|_| "0".to_owned());
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libmtasts.so.{major}");
}
