//! `[serve] check_socket`: the checks of the library's engines (`mtasts_check`, Exim's calls),
//! judged by this server's engine (docs/architecture.md, "Checks handed to mtasts serve"; the wire
//! form is `mtasts::remote`'s). A connection here is served by the socketmap's connection loop,
//! with the framing, timeouts and limits of a socketmap connection, and its requests answered
//! below instead of as socketmap lookups.

use mtasts::Engine;
use mtasts::remote::{self, Answer, Request};

/// Answers one request payload: the answer, framed, is appended to `out`.
pub fn answer(engine: &Engine, payload: &[u8], out: &mut Vec<u8>) {
    let answer = remote::answer(payload, |request| match *request {
        // Judged and counted (TLSRPT, metrics) here, as the library's engine would have.
        Request::Check { domain, mx, tls, dane } => {
            engine.check_with(domain, mx, tls, dane).map(Answer::Judged)
        }
        Request::Mode { domain } => Ok(Answer::Mode(engine.policy(domain)?.and_then(|r| r.mode()))),
        Request::Record { domain, mx, result } => engine
            .record_session(domain, mx, result, &mtasts::engine::SessionDetails::default())
            .map(|()| Answer::Recorded),
    });
    super::reply::put_netstring(out, &answer);
}
