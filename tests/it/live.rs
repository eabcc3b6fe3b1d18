//! Checks against the real Internet. Ignored by default (tests never leave the machine); run on a
//! host with Internet access with:
//!
//! ```sh
//! cargo test --release --test live -- --ignored
//! ```

use std::process::Command;

#[test]
#[ignore = "needs Internet access: cargo test --test it live:: -- --ignored"]
fn gmail_publishes_an_enforce_policy() {
    let out = Command::new(env!("CARGO_BIN_EXE_mtasts"))
        .args(["check", "gmail.com", "--json"])
        .env("MTASTS_CONFIG", "/dev/null")
        .output()
        .expect("run mtasts");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["policy"]["mode"], "enforce", "{v}");
    assert!(v["record"]["id"].is_string(), "{v}");
    let mx = v["mx"].as_array().expect("mx");
    assert!(!mx.is_empty(), "{v}");
    assert!(mx.iter().all(|m| m["verdict"] == "pass"), "every Gmail MX is in its policy: {v}");
}
