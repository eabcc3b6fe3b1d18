//! Fuzzes the `_mta-sts` TXT record parser (`mtasts::txt`).
//!
//! Invariants:
//! * a parsed id is 1 to 32 ASCII letters or digits (DISC-5);
//! * `select` on a one-record RRset agrees with `parse_record` when the record is an STS
//!   candidate (`Record` for `Ok`, `Invalid` with the same error for `Err`), and is `NoRecord`
//!   otherwise (DISC-3);
//! * formatting an error does not panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mtasts::txt::{self, Discovery};

fuzz_target!(|data: &[u8]| {
    let parsed = txt::parse_record(data);
    match &parsed {
        Ok(record) => {
            let id = record.id.as_str();
            assert!(
                (1..=32).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric()),
                "parsed id {id:?} is not 1..=32 ASCII alphanumerics"
            );
            let _ = format!("{} {:?}", record.id, record);
        }
        Err(e) => {
            let _ = format!("{e} {e:?}");
        }
    }

    let selected = txt::select(&[data]);
    if txt::is_sts_candidate(data) {
        match (&parsed, &selected) {
            (Ok(p), Discovery::Record(s)) => assert_eq!(p, s, "select and parse_record disagree"),
            (Err(p), Discovery::Invalid(s)) => assert_eq!(p, s, "select and parse_record disagree"),
            _ => panic!("select gave {selected:?} but parse_record gave {parsed:?}"),
        }
    } else {
        assert_eq!(selected, Discovery::NoRecord, "a non-candidate record was selected");
        assert!(parsed.is_err(), "parse_record accepted a non-candidate record: {parsed:?}");
    }
});
