//! The socketmap protocol of `mtasts serve`: netstring framing and the replies of docs/architecture.md §6.3.
//!
//! Pure code (no I/O), so that every rule is unit-tested here:
//!
//! | request key | reply |
//! |---|---|
//! | domain with an `enforce` policy | `OK secure match=<p1>:<p2>... servername=hostname` (`*.x` written `.x`) |
//! | domain with a `testing` policy | `NOTFOUND ` (as `enforce` with `strict_testing`) |
//! | `none` policy, no policy, fetch failed with nothing cached | `NOTFOUND ` |
//! | `.parent`, IP literal, `[host]`, `[host]:port`, `host:port`, not a domain name | `NOTFOUND ` |
//! | not `NAME KEY`, empty key, not UTF-8, control characters | `PERM <reason>` |
//!
//! These are the MTA-STS replies; where DANE applies to a destination, `super::dane` replaces them
//! with `dane-only`, `dane` or `TEMP` (README "DANE in socketmap replies").
//!
//! A name that is not a domain name (a Postfix unix-socket next hop such as `/path`, a name with
//! `_`) cannot publish a policy, so it gets `NOTFOUND ` like an address literal: a `PERM` would make
//! Postfix defer the mail for good, for a destination MTA-STS has nothing to say about.
//!
//! With `postfix_tlsrpt` the `OK` reply also carries the attributes Postfix 3.10 reads for TLSRPT
//! (Postfix `TLSRPT_README`, "MTA-STS Support via smtp_tls_policy_maps"; attribute names from
//! `src/smtp/smtp.h`, `EXT_POLICY_*`): `policy_type=sts`, `policy_domain=DOMAIN`, one
//! `mx_host_pattern=PATTERN` per `mx:` line (RFC 8461 form, `*.x`) and one
//! `{ policy_string = LINE }` per line of the policy as served. Replies never exceed 100000
//! characters (socketmap_table(5)): the policy strings, then the other TLSRPT attributes, are left
//! out of a reply that would; a policy whose `match=` list alone is too long gets `TEMP` (the mail
//! waits: a shortened list would wrongly refuse listed MX hosts).

use std::io::Write as _;

use mtasts::Mode;
use mtasts::cache::CachedPolicy;

/// Longest reply payload Postfix accepts (socketmap_table(5)).
pub const MAX_REPLY: usize = 100_000;

/// How replies are shaped (`[serve]`, or the `[serve.profile.NAME]` of the request's map name).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Options {
    /// Answer `testing` like `enforce`.
    pub strict_testing: bool,
    /// Add the Postfix 3.10 TLSRPT attributes.
    pub postfix_tlsrpt: bool,
    /// Leave `servername=hostname` out of `secure` replies (`servername = "none"`: Postfix
    /// before 3.4 does not know the attribute).
    pub no_servername: bool,
}

/// One step of reading a netstring from the start of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// A whole netstring: its payload is `buf[start..end]`, and it takes `len` bytes of the buffer.
    Complete { start: usize, end: usize, len: usize },
    /// More bytes are needed; the buffer is shorter than [`max_frame_len`].
    Partial,
    /// The length prefix is longer than allowed.
    TooLong(u64),
    /// Not a netstring (bad length, missing `:` or `,`).
    Malformed(&'static str),
}

/// The longest netstring whose payload has at most `max` bytes: its length digits, `:`, the
/// payload and `,`. A buffer this long always holds a decision of [`parse_frame`].
pub fn max_frame_len(max: u64) -> usize {
    let digits = max.checked_ilog10().map_or(1, |d| d as usize + 1);
    usize::try_from(max).unwrap_or(usize::MAX).saturating_add(digits + 2)
}

/// Reads the netstring at the start of `buf`; payloads longer than `max` are refused as soon as
/// the length prefix shows it.
///
/// The length is canonical: no leading zero (but `0:` for the empty payload), so it has at most
/// as many digits as `max`, and a `Partial` answer is only ever given for a buffer shorter than
/// [`max_frame_len`]`(max)`. Without that rule, a stream of `0`s would be a length prefix that
/// never ends.
pub fn parse_frame(buf: &[u8], max: u64) -> Frame {
    let mut len: u64 = 0;
    for (i, &b) in buf.iter().enumerate() {
        match b {
            b'0'..=b'9' if i > 0 && len == 0 => {
                return Frame::Malformed("netstring length has a leading zero");
            }
            b'0'..=b'9' => {
                len = len.saturating_mul(10).saturating_add(u64::from(b - b'0'));
                if len > max {
                    return Frame::TooLong(len);
                }
            }
            b':' if i == 0 => return Frame::Malformed("netstring without a length"),
            b':' => {
                let start = i + 1;
                // `len <= max`, which fits in memory by configuration.
                let end = start + usize::try_from(len).unwrap_or(usize::MAX - start - 1);
                return match buf.get(end) {
                    None => Frame::Partial,
                    Some(b',') => Frame::Complete { start, end, len: end + 1 },
                    Some(_) => Frame::Malformed("netstring not terminated by `,`"),
                };
            }
            _ => return Frame::Malformed("netstring length is not a number"),
        }
    }
    Frame::Partial
}

/// Appends `payload` to `out` as a netstring.
pub fn put_netstring(out: &mut Vec<u8>, payload: &[u8]) {
    mtasts::remote::put(out, payload);
}

/// What a request asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Request<'a> {
    /// The policy of this name (still to be parsed as a domain).
    Domain(&'a str),
    /// A key that can have no policy: `.parent`, `[host]`, `host:port`, IPv6 literal.
    NoPolicy,
    /// Not `NAME KEY`: the `PERM` reason.
    Malformed(&'static str),
}

/// The map name of a request payload `NAME KEY` (what comes before the first space), which
/// selects a `[serve.profile.NAME]`.
pub fn map_name(payload: &[u8]) -> &[u8] {
    payload.split(|&b| b == b' ').next().unwrap_or_default()
}

/// Splits a request payload `NAME KEY` (the map name is for [`map_name`]) and classifies the key.
pub fn parse_request(payload: &[u8]) -> Request<'_> {
    let Ok(text) = std::str::from_utf8(payload) else {
        return Request::Malformed("request is not UTF-8");
    };
    if text.chars().any(char::is_control) {
        return Request::Malformed("request contains control characters");
    }
    let Some((name, key)) = text.split_once(' ') else {
        return Request::Malformed("request is not `NAME KEY`");
    };
    if name.is_empty() {
        return Request::Malformed("request has an empty map name");
    }
    if key.is_empty() {
        return Request::Malformed("request has an empty key");
    }
    // Postfix asks `.parent` forms after a NOTFOUND, and `[host]`, `[host]:port` or
    // `host:port` for explicit next hops: none of them is a Policy Domain.
    if key.starts_with('.') || key.starts_with('[') || key.contains(':') {
        return Request::NoPolicy;
    }
    Request::Domain(key)
}

/// The reply for a domain whose policy is `policy` (`None`: no policy applies).
pub fn policy_reply(domain: &str, policy: Option<&CachedPolicy>, opts: Options, out: &mut Vec<u8>) {
    let Some(policy) = policy else {
        out.extend_from_slice(b"NOTFOUND ");
        return;
    };
    match policy.mode() {
        Mode::Enforce => {}
        Mode::Testing if opts.strict_testing => {}
        Mode::Testing | Mode::None => {
            out.extend_from_slice(b"NOTFOUND ");
            return;
        }
    }
    let start = out.len();
    out.extend_from_slice(b"OK secure match=");
    for (i, p) in policy.policy.mx().iter().enumerate() {
        if i > 0 {
            out.push(b':');
        }
        // Postfix and Sendmail write `*.example.net` as `.example.net`.
        if p.is_wildcard() {
            out.push(b'.');
        }
        out.extend_from_slice(p.base().as_str().as_bytes());
    }
    if !opts.no_servername {
        out.extend_from_slice(b" servername=hostname");
    }
    if out.len() - start > MAX_REPLY {
        out.truncate(start);
        let _ = write!(out, "TEMP the policy of {domain} has too many mx patterns for a socketmap reply");
        return;
    }
    if !opts.postfix_tlsrpt {
        return;
    }
    let base = out.len();
    let _ = write!(out, " policy_type=sts policy_domain={domain}");
    for p in policy.policy.mx() {
        let _ = write!(out, " mx_host_pattern={p}");
    }
    if out.len() - start > MAX_REPLY {
        out.truncate(base);
        return;
    }
    let strings = out.len();
    for line in policy.text.lines() {
        let line = line.trim();
        // Braces would end Postfix's `{ name = value }` early; the grammar allows none in
        // standard fields, so only odd extension lines are left out.
        if line.is_empty() || line.contains(['{', '}']) || line.chars().any(char::is_control) {
            continue;
        }
        let _ = write!(out, " {{ policy_string = {line} }}");
    }
    if out.len() - start > MAX_REPLY {
        out.truncate(strings);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mtasts::Policy;
    use mtasts::txt::PolicyId;

    fn cached(body: &str) -> CachedPolicy {
        let policy = Policy::parse(body.as_bytes()).expect("policy");
        CachedPolicy::new(policy, PolicyId::parse("id1").expect("id"), body.into(), 1_000)
    }

    fn reply(domain: &str, body: Option<&str>, opts: Options) -> String {
        let mut out = Vec::new();
        let policy = body.map(cached);
        policy_reply(domain, policy.as_ref(), opts, &mut out);
        String::from_utf8(out).expect("utf-8")
    }

    const ENFORCE: &str =
        "version: STSv1\nmode: enforce\nmx: mx.example.com\nmx: *.example.net\nmax_age: 86400\n";
    const TESTING: &str = "version: STSv1\nmode: testing\nmx: mx.example.com\nmax_age: 86400\n";
    const NONE: &str = "version: STSv1\nmode: none\nmax_age: 86400\n";

    #[test]
    fn frames() {
        assert_eq!(parse_frame(b"3:abc,", 10), Frame::Complete { start: 2, end: 5, len: 6 });
        assert_eq!(parse_frame(b"3:abc,4:", 10), Frame::Complete { start: 2, end: 5, len: 6 });
        assert_eq!(parse_frame(b"0:,", 10), Frame::Complete { start: 2, end: 2, len: 3 });
        assert_eq!(parse_frame(b"", 10), Frame::Partial);
        assert_eq!(parse_frame(b"12", 100), Frame::Partial);
        assert_eq!(parse_frame(b"3:ab", 10), Frame::Partial);
        assert_eq!(parse_frame(b"3:abc", 10), Frame::Partial);
        assert_eq!(parse_frame(b"11:", 10), Frame::TooLong(11));
        assert_eq!(parse_frame(b"99999999999999999999999", 10), Frame::TooLong(99));
        assert!(matches!(parse_frame(b"3:abcd", 10), Frame::Malformed(_)));
        assert!(matches!(parse_frame(b":abc,", 10), Frame::Malformed(_)));
        assert!(matches!(parse_frame(b"x:abc,", 10), Frame::Malformed(_)));
        assert!(matches!(parse_frame(b"3 :abc,", 10), Frame::Malformed(_)));
        // Leading zeros: a stream of `0`s is no length that could go on for ever.
        for bad in [&b"00"[..], b"00:,", b"03:abc,", b"0000000000000000"] {
            assert_eq!(
                parse_frame(bad, 4096),
                Frame::Malformed("netstring length has a leading zero"),
                "{bad:?}"
            );
        }
        assert_eq!(parse_frame(b"0", 4096), Frame::Partial);
        assert_eq!(parse_frame(b"10:0123456789,", 10), Frame::Complete { start: 3, end: 13, len: 14 });
        // At most as many digits as the limit has.
        assert_eq!(parse_frame(b"4096", 4096), Frame::Partial);
        assert_eq!(parse_frame(b"40960", 4096), Frame::TooLong(40960));
        assert_eq!(parse_frame(b"4097", 4096), Frame::TooLong(4097));
        assert_eq!(max_frame_len(4096), 4 + 1 + 4096 + 1);
        assert_eq!(max_frame_len(9), 1 + 1 + 9 + 1);
        assert_eq!(max_frame_len(10), 2 + 1 + 10 + 1);
        assert_eq!(max_frame_len(0), 1 + 1 + 1);
        // The longest frame is a decision; every shorter buffer of it is `Partial`.
        let mut longest = b"4096:".to_vec();
        longest.extend_from_slice(&[b'x'; 4096]);
        longest.push(b',');
        assert_eq!(longest.len(), max_frame_len(4096));
        assert!(matches!(parse_frame(&longest, 4096), Frame::Complete { .. }));
        assert_eq!(parse_frame(&longest[..longest.len() - 1], 4096), Frame::Partial);
        let mut out = Vec::new();
        put_netstring(&mut out, b"NOTFOUND ");
        assert_eq!(out, b"9:NOTFOUND ,");
    }

    #[test]
    fn requests() {
        assert_eq!(parse_request(b"postfix example.com"), Request::Domain("example.com"));
        assert_eq!(parse_request(b"sts Example.COM."), Request::Domain("Example.COM."));
        for key in [".example.com", "[192.0.2.1]", "[mx.example.com]:25", "example.com:25", "::1"] {
            assert_eq!(parse_request(format!("postfix {key}").as_bytes()), Request::NoPolicy, "{key}");
        }
        for bad in [&b"postfix"[..], b"postfix ", b" example.com", b"", b"a \xff", b"a b\nc"] {
            assert!(matches!(parse_request(bad), Request::Malformed(_)), "{bad:?}");
        }
    }

    #[test]
    fn replies() {
        let plain = Options::default();
        assert_eq!(
            reply("example.com", Some(ENFORCE), plain),
            "OK secure match=mx.example.com:.example.net servername=hostname"
        );
        assert_eq!(reply("example.com", Some(TESTING), plain), "NOTFOUND ");
        assert_eq!(reply("example.com", Some(NONE), plain), "NOTFOUND ");
        assert_eq!(reply("example.com", None, plain), "NOTFOUND ");
        let strict = Options { strict_testing: true, ..plain };
        assert_eq!(
            reply("example.com", Some(TESTING), strict),
            "OK secure match=mx.example.com servername=hostname"
        );
        assert_eq!(reply("example.com", Some(NONE), strict), "NOTFOUND ");
        let bare = Options { no_servername: true, ..plain };
        assert_eq!(reply("example.com", Some(ENFORCE), bare), "OK secure match=mx.example.com:.example.net");
        assert_eq!(reply("example.com", Some(TESTING), bare), "NOTFOUND ");
    }

    #[test]
    fn map_names() {
        assert_eq!(map_name(b"postfix example.com"), b"postfix");
        assert_eq!(map_name(b"sts a b"), b"sts");
        assert_eq!(map_name(b"postfix"), b"postfix");
        assert_eq!(map_name(b" example.com"), b"");
        assert_eq!(map_name(b""), b"");
    }

    #[test]
    fn tlsrpt_attributes() {
        let opts = Options { postfix_tlsrpt: true, ..Options::default() };
        assert_eq!(
            reply("example.com", Some(ENFORCE), opts),
            "OK secure match=mx.example.com:.example.net servername=hostname policy_type=sts \
             policy_domain=example.com mx_host_pattern=mx.example.com mx_host_pattern=*.example.net \
             { policy_string = version: STSv1 } { policy_string = mode: enforce } \
             { policy_string = mx: mx.example.com } { policy_string = mx: *.example.net } \
             { policy_string = max_age: 86400 }"
        );
    }

    #[test]
    fn replies_stay_under_the_limit() {
        let mut body = String::from("version: STSv1\nmode: enforce\nmax_age: 86400\n");
        for i in 0..1500 {
            body.push_str(&format!("mx: mx{i}.example.com\n"));
        }
        let opts = Options { postfix_tlsrpt: true, ..Options::default() };
        let r = reply("example.com", Some(&body), opts);
        assert!(r.len() <= MAX_REPLY && r.contains("mx_host_pattern=") && !r.contains("policy_string"));
        for i in 0..2500 {
            body.push_str(&format!("mx: mx{i}.example.org\n"));
        }
        let r = reply("example.com", Some(&body), opts);
        assert!(
            r.len() <= MAX_REPLY && r.starts_with("OK secure") && !r.contains("policy_type"),
            "{}",
            r.len()
        );
        for i in 0..3000 {
            body.push_str(&format!("mx: mx{i}.example.net\n"));
        }
        assert!(reply("example.com", Some(&body), opts).starts_with("TEMP "));
    }
}
