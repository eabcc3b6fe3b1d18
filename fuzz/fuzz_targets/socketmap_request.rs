//! Fuzzes the socketmap request parser of `mtasts serve` (`src/bin/mtasts/serve/reply.rs`, pulled
//! in by path: it lives in the binary crate): netstring framing, then the request inside each
//! frame, over a stream of pipelined requests as the connection loop reads them.
//!
//! Invariants, for `max` = 4096 (the default `[serve] max_request_bytes`) and `max` = 9:
//! * a `Complete` frame is canonical: `put_netstring` of its payload gives back its bytes, the
//!   payload has at most `max` bytes, and a frame cut short is `Partial`;
//! * `Partial` only for a buffer shorter than `max_frame_len(max)`, so a buffer of that size always
//!   holds a decision (no length prefix goes on for ever);
//! * `TooLong(n)` has `n > max`;
//! * a `Domain` key is the text after the first space of the payload: not empty, no control
//!   character, no `:`, not starting with `.` or `[`.
#![no_main]

#[allow(dead_code)]
#[path = "../../src/bin/mtasts/serve/reply.rs"]
mod reply;

use libfuzzer_sys::fuzz_target;
use reply::{Frame, Request};

fn check_stream(mut rest: &[u8], max: u64) {
    loop {
        match reply::parse_frame(rest, max) {
            Frame::Complete { start, end, len } => {
                assert!(start <= end && end < len && len <= rest.len(), "bad bounds");
                let payload = &rest[start..end];
                assert!(payload.len() as u64 <= max, "payload longer than {max}");
                let mut again = Vec::new();
                reply::put_netstring(&mut again, payload);
                assert_eq!(again, &rest[..len], "not the canonical netstring of its payload");
                for cut in [1, start - 1, start, start + payload.len() / 2, len - 1] {
                    assert_eq!(reply::parse_frame(&rest[..cut], max), Frame::Partial, "prefix {cut}");
                }
                check_request(payload);
                rest = &rest[len..];
            }
            Frame::Partial => {
                assert!(rest.len() < reply::max_frame_len(max), "Partial for {} bytes", rest.len());
                return;
            }
            Frame::TooLong(n) => {
                assert!(n > max, "TooLong({n}) within {max}");
                return;
            }
            Frame::Malformed(why) => {
                assert!(!why.is_empty());
                return;
            }
        }
    }
}

fn check_request(payload: &[u8]) {
    match reply::parse_request(payload) {
        Request::Domain(key) => {
            let text = std::str::from_utf8(payload).expect("a Domain comes from UTF-8");
            let (name, after) = text.split_once(' ').expect("NAME KEY");
            assert!(!name.is_empty() && after == key, "{text:?} -> {key:?}");
            assert!(!key.is_empty() && !key.contains(':') && !key.starts_with(['.', '[']), "{key:?}");
            assert!(!key.chars().any(char::is_control), "{key:?}");
        }
        Request::NoPolicy => {}
        Request::Malformed(why) => assert!(!why.is_empty()),
    }
}

fuzz_target!(|data: &[u8]| {
    check_stream(data, 4096);
    check_stream(data, 9);
});
