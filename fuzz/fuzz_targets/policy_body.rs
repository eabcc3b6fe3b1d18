//! Fuzzes the policy body parser (`mtasts::policy::Policy::parse`).
//!
//! Invariants:
//! * on `Ok`: `max_age() <= MAX_AGE_LIMIT`; an `enforce` or `testing` policy has at least one `mx`
//!   pattern; every pattern's `Display` re-parses with `MxPattern::parse` to an equal pattern;
//!   every warning has `Severity::Warning`;
//! * on `Err`: at least one problem has `Severity::Error`, and `first_error()` is one;
//! * the `Display` of every `Problem` (and of the `PolicyError`) does not panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mtasts::mx::MxPattern;
use mtasts::policy::{MAX_AGE_LIMIT, Mode, Policy, Severity};

fuzz_target!(|data: &[u8]| {
    match Policy::parse(data) {
        Ok(policy) => {
            assert!(
                policy.max_age() <= MAX_AGE_LIMIT,
                "max_age {} above {MAX_AGE_LIMIT}",
                policy.max_age()
            );
            if matches!(policy.mode(), Mode::Enforce | Mode::Testing) {
                assert!(!policy.mx().is_empty(), "mode {} with no mx pattern", policy.mode());
            }
            for pattern in policy.mx() {
                let shown = pattern.to_string();
                match MxPattern::parse(&shown) {
                    Ok(again) => assert_eq!(&again, pattern, "{shown:?} re-parses to a different pattern"),
                    Err(e) => panic!("pattern {pattern:?} displays as {shown:?}, which does not parse: {e}"),
                }
            }
            for warning in policy.warnings() {
                assert_eq!(warning.severity, Severity::Warning, "an error among the warnings: {warning}");
                let _ = warning.to_string();
            }
        }
        Err(err) => {
            assert!(
                err.problems.iter().any(|p| p.severity == Severity::Error),
                "invalid policy without an error: {err:?}"
            );
            assert_eq!(err.first_error().severity, Severity::Error);
            for problem in &err.problems {
                let _ = problem.to_string();
            }
            let _ = err.to_string();
        }
    }
});
