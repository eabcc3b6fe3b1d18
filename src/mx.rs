//! MX host patterns and matching (RFC 8461 §4.1, Appendix B).
//!
//! A pattern is `["*."] Domain` in A-label form (POL-6, POL-8). It is matched against the MX
//! record's exchange name as published (MX-2), never against a certificate, the recipient domain or
//! a PTR name. `*.` stands for exactly one whole leftmost label (MX-3): `*.example.com` matches
//! `mail.example.com`, not `example.com` nor `a.b.example.com`. Both sides are [`Domain`]s, so
//! case and a trailing dot never matter (MX-4, MX-5), and an MX given in U-labels has already been
//! converted to A-labels (MX-6).

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
        if self.wildcard { host.parent() == Some(self.base.as_str()) } else { host == &self.base }
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

/// True when `host` matches at least one pattern (MX-1).
pub fn any_matches(patterns: &[MxPattern], host: &Domain) -> bool {
    patterns.iter().any(|p| p.matches(host))
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
        MxPattern::parse(pattern).unwrap().matches(&Domain::parse(host).unwrap())
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
}
