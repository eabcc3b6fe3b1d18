//! MX host patterns and matching (RFC 8461 §4.1, Appendix B).
//!
//! A pattern is `["*."] Domain` in A-label form (POL-6, POL-8). It is matched against the MX
//! record's exchange name as published (MX-2), never against a certificate, the recipient domain or
//! a PTR name. `*.` stands for exactly one whole leftmost label (MX-3): `*.example.com` matches
//! `mail.example.com`, not `example.com` nor `a.b.example.com`. Both sides are [`Domain`]s, so
//! case and a trailing dot never matter (MX-4, MX-5).
//!
//! The MX host name is read by [`parse_host`] as DNS publishes it: ASCII letters, digits and
//! hyphens, an IDN in A-labels (MX-6). Nothing is mapped: unlike the Policy Domain, an MX given in
//! U-labels, with full-width letters or with ideographic dots (`。`, `．`) is not a host name and so
//! matches no pattern. UTS #46 would map `ｍｘ．example．com` onto `mx.example.com`; a forged or
//! garbled MX record must not pass as a listed MX that way.

use std::fmt;

use crate::domain::{Domain, DomainError};

/// One `mx` pattern of a policy.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct MxPattern {
    wildcard: bool,
    /// The pattern without its `*.` prefix.
    base: Domain,
}

/// Why an `mx` value is not a pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MxPatternError {
    /// The pre-RFC syntax `.example.net` (drafts before -17).
    LeadingDot,
    /// A `*` anywhere but as the whole leftmost label, e.g. `mail*.example.com` or `*`.
    BadWildcard,
    /// An address literal; patterns name hosts.
    AddressLiteral,
    /// Several patterns on one line (`a.example, b.example`).
    List,
    /// Not a valid domain name.
    Domain(DomainError),
}

impl fmt::Display for MxPatternError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::LeadingDot => {
                f.write_str("a leading `.` is the syntax of early drafts; RFC 8461 writes `*.example.net`")
            }
            Self::BadWildcard => {
                f.write_str("`*` may only be the whole leftmost label, as in `*.example.net`")
            }
            Self::AddressLiteral => f.write_str("an IP address is not an MX host name"),
            Self::List => f.write_str("one pattern per `mx:` line; write each pattern on its own line"),
            Self::Domain(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for MxPatternError {}

impl MxPattern {
    /// Parses an `mx` value from a policy.
    pub fn parse(value: &str) -> Result<Self, MxPatternError> {
        if value.contains(',') || value.contains(char::is_whitespace) {
            return Err(MxPatternError::List);
        }
        if value.starts_with('.') {
            return Err(MxPatternError::LeadingDot);
        }
        let (wildcard, rest) = match value.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, value),
        };
        if rest.contains('*') {
            return Err(MxPatternError::BadWildcard);
        }
        let base = Domain::parse_ascii(rest).map_err(|e| match e {
            DomainError::AddressLiteral => MxPatternError::AddressLiteral,
            other => MxPatternError::Domain(other),
        })?;
        Ok(Self { wildcard, base })
    }

    /// Whether this MX host name satisfies the pattern.
    pub fn matches(&self, host: &Domain) -> bool {
        name_matches(self.wildcard, self.base.as_str().as_bytes(), host)
    }

    /// True for `*.` patterns.
    pub fn is_wildcard(&self) -> bool {
        self.wildcard
    }

    /// The domain after any `*.`.
    pub fn base(&self) -> &Domain {
        &self.base
    }
}

/// Reads an MX host name (the exchange of an MX record, or the domain itself for the implicit MX)
/// as published in DNS: ASCII letters, digits and hyphens in labels of 1 to 63 octets, any case,
/// one optional trailing root dot (MX-4, MX-5), an IDN only in A-labels (MX-6). No UTS #46
/// mapping is applied: anything that is not such a name is an error, which callers treat as "this
/// MX matches no pattern".
pub fn parse_host(name: &str) -> Result<Domain, DomainError> {
    if let Some(c) = name.chars().find(|c| !c.is_ascii()) {
        return Err(DomainError::InvalidChar(c));
    }
    Domain::parse_ascii(name)
}

/// True when `host` matches at least one pattern (MX-1).
pub fn any_matches(patterns: &[MxPattern], host: &Domain) -> bool {
    patterns.iter().any(|p| p.matches(host))
}

/// The matching rule of an `mx` pattern (MX-1 to MX-3), for [`MxPattern::matches`] and
/// [`PackedPatterns::matches`] alike: `*.base` matches a host whose labels after the first are
/// `base` (one label, never `base` itself); any other pattern matches the same name. Both names
/// are compared as stored (lower case, no trailing dot).
#[inline]
fn name_matches(wildcard: bool, base: &[u8], host: &Domain) -> bool {
    if wildcard { host.parent().map(str::as_bytes) == Some(base) } else { host.as_str().as_bytes() == base }
}

/// Octets of [`PackedPatterns`]: room for two patterns of 26 octets, or one of 54, each with a
/// length octet. Most policies fit (one or two MX names, or a `*.` pattern of a provider).
pub(crate) const PACKED: usize = 56;

/// The patterns of a policy as one run of octets inside the policy itself, `len` then the
/// pattern as written (`*.` included), one after the other. A check reads them in place: with a
/// million policies cached, following the pattern list and then each pattern's name to memory
/// were two cache misses of a random check (BENCHMARKS.md, "Scale"). Patterns that do not fit
/// are not packed ([`PackedPatterns::matches`] answers `None`) and are read from the list.
#[derive(Clone, PartialEq, Eq)]
#[repr(C)]
pub(crate) struct PackedPatterns {
    /// Octets used, or [`SPILLED`].
    used: u8,
    bytes: [u8; PACKED],
}

/// [`PackedPatterns::used`] when the patterns did not fit.
const SPILLED: u8 = u8::MAX;

impl PackedPatterns {
    /// Packs `patterns`, or marks them as not packed when they do not fit.
    pub(crate) fn new(patterns: &[MxPattern]) -> Self {
        let mut packed = Self { used: 0, bytes: [0; PACKED] };
        let mut at = 0;
        for p in patterns {
            let base = p.base.as_str().as_bytes();
            let len = base.len() + if p.wildcard { 2 } else { 0 };
            let Ok(octet) = u8::try_from(len) else { return packed.spilled() };
            if at + 1 + len > PACKED {
                return packed.spilled();
            }
            packed.bytes[at] = octet;
            at += 1;
            if p.wildcard {
                packed.bytes[at..at + 2].copy_from_slice(b"*.");
                at += 2;
            }
            packed.bytes[at..at + base.len()].copy_from_slice(base);
            at += base.len();
        }
        // `at <= PACKED < SPILLED`.
        packed.used = at as u8;
        packed
    }

    fn spilled(mut self) -> Self {
        self.used = SPILLED;
        self
    }

    /// Whether `host` matches one of the packed patterns ([`MxPattern::matches`]); `None` when
    /// the patterns are not packed.
    #[inline]
    pub(crate) fn matches(&self, host: &Domain) -> Option<bool> {
        let used = usize::from(self.used);
        let mut rest = self.bytes.get(..used)?;
        while let Some((&len, tail)) = rest.split_first() {
            let (pattern, next) = tail.split_at(usize::from(len).min(tail.len()));
            let (wildcard, base) = match pattern.strip_prefix(b"*.") {
                Some(base) => (true, base),
                None => (false, pattern),
            };
            if name_matches(wildcard, base, host) {
                return Some(true);
            }
            rest = next;
        }
        Some(false)
    }
}

impl fmt::Debug for PackedPatterns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.bytes.get(..usize::from(self.used)) {
            Some(bytes) => write!(f, "PackedPatterns({:?})", String::from_utf8_lossy(bytes)),
            None => f.write_str("PackedPatterns(not packed)"),
        }
    }
}

impl fmt::Display for MxPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.wildcard {
            f.write_str("*.")?;
        }
        f.write_str(self.base.as_str())
    }
}

impl fmt::Debug for MxPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MxPattern({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pattern: &str, host: &str) -> bool {
        MxPattern::parse(pattern).unwrap().matches(&parse_host(host).unwrap())
    }

    #[test]
    fn rfc_examples() {
        // RFC 8461 §4.1 and §3.2 examples.
        assert!(m("mail.example.com", "mail.example.com"));
        assert!(m("*.example.net", "mx1.example.net"));
        assert!(!m("*.example.net", "example.net"));
        assert!(!m("*.example.net", "a.mx1.example.net"));
        assert!(m("backupmx.example.com", "BACKUPMX.example.com."));
    }

    #[test]
    fn bad_patterns() {
        assert_eq!(MxPattern::parse(".example.net"), Err(MxPatternError::LeadingDot));
        assert_eq!(MxPattern::parse("mail*.example.com"), Err(MxPatternError::BadWildcard));
        assert_eq!(MxPattern::parse("*"), Err(MxPatternError::BadWildcard));
        assert_eq!(MxPattern::parse("192.0.2.1"), Err(MxPatternError::AddressLiteral));
        assert_eq!(MxPattern::parse("a.example,b.example"), Err(MxPatternError::List));
        assert!(MxPattern::parse("bücher.example").is_err());
    }

    #[test]
    fn hosts_are_ascii_ldh_names() {
        // MX-4, MX-5: case folded, one trailing dot dropped.
        assert_eq!(parse_host("MX1.Example.COM.").unwrap().as_str(), "mx1.example.com");
        // MX-6: A-labels are names like any other.
        assert_eq!(parse_host("xn--bcher-kva.example").unwrap().as_str(), "xn--bcher-kva.example");
        assert_eq!(parse_host("XN--BCHER-KVA.example.").unwrap().as_str(), "xn--bcher-kva.example");
    }

    #[test]
    fn nothing_is_mapped_onto_an_ascii_name() {
        // UTS #46 maps each of these onto `mx.example.com` (or an A-label); an MX name is not
        // mapped, so none of them is a host name.
        for host in [
            "bücher.example",
            "\u{ff4d}\u{ff58}.example.com", // full-width letters
            "mx\u{ff0e}example\u{ff0e}com", // full-width full stops
            "mx\u{3002}example\u{3002}com", // ideographic full stops
            "mx\u{ff61}example.com",        // half-width ideographic full stop
            "MX.EXAMPLE.COM\u{3002}",       // an ideographic trailing dot
            "mx.exa\u{00ad}mple.com",       // a soft hyphen (UTS #46 drops it)
            "mx.example.com\u{200b}",       // a zero-width space (likewise)
            "\u{212a}.example.com",         // the Kelvin sign (folds to `k`)
            "mx.example.com\u{fffd}",       // what non-UTF-8 bytes become
        ] {
            assert!(matches!(parse_host(host), Err(DomainError::InvalidChar(_))), "{host:?}");
            assert!(Domain::parse(host).is_ok() || host.contains('\u{fffd}'), "UTS #46 accepts {host:?}");
        }
        let pattern = MxPattern::parse("mx.example.com").unwrap();
        let full_width = "\u{ff4d}\u{ff58}\u{ff0e}example\u{3002}com";
        assert!(pattern.matches(&Domain::parse(full_width).unwrap()), "the mapping this prevents");
        assert!(parse_host(full_width).is_err());
    }

    #[test]
    fn packed_patterns_match_as_the_list_does() {
        let lists: &[&[&str]] = &[
            &[],
            &["mail.example.com"],
            &["*.example.net"],
            &["mx1.customer0000001.com", "mx2.customer0000001.com"],
            &["gmail-smtp-in.l.google.com", "*.gmail-smtp-in.l.google.com"],
            // 59 octets with their lengths: more than fits, read from the list.
            &["gmail-smtp-in.l.google.com", "*.gmail-smtp-in.l.google.co.uk"],
            &["a.example", "*.b.example", "c.example", "*.d.example", "e.example", "f.example"],
        ];
        let hosts = [
            "mail.example.com",
            "example.com",
            "mx1.example.net",
            "example.net",
            "a.mx1.example.net",
            "mx1.customer0000001.com",
            "mx2.customer0000001.com",
            "mx3.customer0000001.com",
            "mx1.customer0000002.com",
            "gmail-smtp-in.l.google.com",
            "alt1.gmail-smtp-in.l.google.com",
            "alt1.gmail-smtp-in.l.google.co.uk",
            "x.b.example",
            "b.example",
            "f.example",
            "x.d.example",
            "xf.example",
            "com",
        ];
        for list in lists {
            let patterns: Vec<MxPattern> = list.iter().map(|p| MxPattern::parse(p).unwrap()).collect();
            let packed = PackedPatterns::new(&patterns);
            let size: usize = list.iter().map(|p| 1 + p.len()).sum();
            assert_eq!(packed.matches(&parse_host("x.test").unwrap()).is_some(), size <= PACKED, "{list:?}");
            for host in hosts {
                let host = parse_host(host).unwrap();
                let want = any_matches(&patterns, &host);
                assert_eq!(packed.matches(&host).unwrap_or(want), want, "{list:?} {host}");
            }
        }
    }

    #[test]
    fn other_non_hosts() {
        assert_eq!(parse_host(""), Err(DomainError::Empty));
        assert_eq!(parse_host("."), Err(DomainError::Empty));
        assert_eq!(parse_host("mx.example.com.."), Err(DomainError::EmptyLabel));
        assert_eq!(parse_host("mx_1.example.com"), Err(DomainError::InvalidChar('_')));
        assert_eq!(parse_host("[192.0.2.1]"), Err(DomainError::AddressLiteral));
        assert_eq!(parse_host("192.0.2.1"), Err(DomainError::AddressLiteral));
    }
}
