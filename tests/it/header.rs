//! The committed C header is exactly what cbindgen generates from `src/ffi/` (set
//! `MTASTS_BLESS=1` to rewrite it), and the version in `Cargo.toml`, the header's macros and
//! `mtasts_version()` agree.

use std::path::Path;

fn generate() -> String {
    let dir = env!("CARGO_MANIFEST_DIR");
    let config = cbindgen::Config::from_file(Path::new(dir).join("cbindgen.toml")).expect("cbindgen.toml");
    let mut out = Vec::new();
    cbindgen::Builder::new()
        .with_crate(dir)
        .with_config(config)
        .generate()
        .expect("cbindgen generates the header")
        .write(&mut out);
    String::from_utf8(out).expect("UTF-8 header")
}

#[test]
fn header_matches_the_source() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("include/mtasts.h");
    let generated = generate();
    if std::env::var_os("MTASTS_BLESS").is_some() {
        std::fs::write(&path, &generated).expect("write header");
        return;
    }
    let committed = std::fs::read_to_string(&path).expect("include/mtasts.h is committed");
    assert!(
        committed == generated,
        "include/mtasts.h differs from what cbindgen generates from src/ffi/; \
         run `MTASTS_BLESS=1 cargo test --test it header::` and commit the result"
    );
}

fn header_define(header: &str, name: &str) -> String {
    header
        .lines()
        .find_map(|l| l.strip_prefix(&format!("#define {name} ")))
        .unwrap_or_else(|| panic!("no #define {name}"))
        .trim()
        .to_owned()
}

#[test]
fn versions_agree() {
    let header = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("include/mtasts.h"))
        .expect("header");
    let major: u32 = env!("CARGO_PKG_VERSION_MAJOR").parse().expect("major");
    let minor: u32 = env!("CARGO_PKG_VERSION_MINOR").parse().expect("minor");
    let patch: u32 = env!("CARGO_PKG_VERSION_PATCH").parse().expect("patch");
    assert_eq!(header_define(&header, "MTASTS_VERSION_MAJOR"), major.to_string());
    assert_eq!(header_define(&header, "MTASTS_VERSION_MINOR"), minor.to_string());
    assert_eq!(header_define(&header, "MTASTS_VERSION_PATCH"), patch.to_string());
    assert_eq!(
        header_define(&header, "MTASTS_VERSION_NUMBER"),
        (major * 10_000 + minor * 100 + patch).to_string()
    );
    let v = unsafe { std::ffi::CStr::from_ptr(mtasts::ffi::mtasts_version()) };
    assert_eq!(v.to_str().expect("UTF-8"), env!("CARGO_PKG_VERSION"));
    assert_eq!(mtasts::ffi::MTASTS_VERSION_MAJOR, major);
    assert_eq!(mtasts::ffi::MTASTS_VERSION_NUMBER, major * 10_000 + minor * 100 + patch);
}
