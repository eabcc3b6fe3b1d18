//! `[serve] check_socket`: the calls of the library's engines (`mtasts_check`, Exim's calls),
//! judged by this server's engine (docs/architecture.md, "Checks handed to mtasts serve"; the wire
//! form is `mtasts::remote`'s). A connection here is served by the socketmap's connection loop
//! (its framing, timeouts and output limit; requests up to `mtasts::remote::MAX_REQUEST` bytes),
//! with its requests answered below instead of as socketmap lookups.

use mtasts::Engine;
use mtasts::remote::{self, Answer};

/// Answers one request payload: the answer, framed, is appended to `out`. `identity` is the
/// identity of the configuration in force ([`mtasts::config::Config::identity`]): a client
/// under another one is refused, and judges itself. `note` is told of each domain judged under a
/// policy, for the background refresher.
pub fn answer(engine: &Engine, identity: &str, payload: &[u8], out: &mut Vec<u8>, note: impl FnOnce(&str)) {
    let answer = remote::answer(payload, identity, |request| {
        // Judged and counted (TLSRPT, metrics) here, as the library's engine would have.
        let answer = remote::judge(engine, request)?;
        if let (Answer::Judged(outcome), remote::Request::Check { domain, .. }) = (&answer, request) {
            if outcome.policy.is_some() && outcome.overridden.is_none() {
                note(domain);
            }
        }
        Ok(answer)
    });
    super::reply::put_netstring(out, &answer);
}
