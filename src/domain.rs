//! Normalised domain names (RFC 8461 §3.2, §4.1; RFC 5321 `Domain`).
//!
//! A [`Domain`] is the only form in which a host name travels past the parsing edge of the crate:
//! lower case, A-labels (an IDN given in U-labels is converted, HOST-7), no trailing root dot
//! (MX-5), letters, digits and hyphens only, labels of 1 to 63 octets, at most 253 octets in all.
//! Two spellings of one name (`Example.COM.` and `example.com`) give equal values, which is what
//! the cache key (CACHE-13) and MX matching (MX-4, MX-5) rely on.
//!
//! Address literals (`[192.0.2.1]`, `192.0.2.1`, `::1`) are told apart from other bad input,
//! because the RFC gives them a meaning: they have no MTA-STS policy (HOST-5).

use std::fmt;
use std::net::IpAddr;

/// Longest name in presentation form, without the trailing dot (RFC 1035 §2.3.4).
const MAX_NAME_LEN: usize = 253;
/// Longest label (RFC 1035 §2.3.4).
const MAX_LABEL_LEN: usize = 63;

/// A normalised DNS name: lower-case A-labels, no trailing dot.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Domain(Box<str>);

/// Why a string is not a usable domain name.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DomainError {
    /// The name is empty (or only a root dot).
    Empty,
    /// The name is an address literal, with or without brackets. It has no MTA-STS policy.
    AddressLiteral,
    /// Longer than 253 octets once converted to A-labels.
    TooLong(usize),
    /// Two dots in a row, or a leading dot.
    EmptyLabel,
    /// A label longer than 63 octets.
    LabelTooLong(String),
    /// A character outside letters, digits and hyphen.
    InvalidChar(char),
    /// A label starts or ends with a hyphen.
    Hyphen(String),
    /// A U-label that IDNA (UTS #46) refuses.
    Idna,
    /// U-labels where only A-labels are allowed (policy `mx` patterns, POL-8).
    NotALabel,
}

impl fmt::Display for DomainError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("the domain name is empty"),
            Self::AddressLiteral => f.write_str("an address literal is not a domain name"),
            Self::TooLong(n) => write!(f, "the domain name is {n} octets long; at most 253 are allowed"),
            Self::EmptyLabel => {
                f.write_str("the domain name has an empty label (a leading dot or two dots in a row)")
            }
            Self::LabelTooLong(l) => write!(f, "the label `{l}` is longer than 63 octets"),
            Self::InvalidChar(c) => {
                write!(f, "the character {c:?} is not allowed in a host name (letters, digits and `-` only)")
            }
            Self::Hyphen(l) => write!(f, "the label `{l}` starts or ends with `-`"),
            Self::Idna => f.write_str("the internationalised name cannot be converted to A-labels"),
            Self::NotALabel => {
                f.write_str("internationalised names must be written as A-labels (xn--...), not U-labels")
            }
        }
    }
}

impl std::error::Error for DomainError {}

impl Domain {
    /// Parses a host name as a caller gives it: any case, an optional trailing dot, U-labels
    /// allowed (converted to A-labels).
    pub fn parse(input: &str) -> Result<Self, DomainError> {
        let name = strip_root(input)?;
        if name.is_ascii() {
            return Self::from_ascii(name);
        }
        let ascii = idna::domain_to_ascii(name).map_err(|_| DomainError::Idna)?;
        Self::from_ascii(strip_root(&ascii)?)
    }

    /// Parses a name that must already be in A-label form (the `mx` patterns of a policy, POL-8).
    /// Case is still folded and one trailing dot is still removed.
    pub fn parse_ascii(input: &str) -> Result<Self, DomainError> {
        let name = strip_root(input)?;
        if !name.is_ascii() {
            return Err(DomainError::NotALabel);
        }
        Self::from_ascii(name)
    }

    fn from_ascii(name: &str) -> Result<Self, DomainError> {
        if name.len() > MAX_NAME_LEN {
            return Err(DomainError::TooLong(name.len()));
        }
        // Only digits and dots (IPv4) or a colon (IPv6) can make an address literal: a name with
        // a letter and no colon is not parsed as one (the hot path of every check).
        let may_be_address = name.contains(':') || name.bytes().all(|b| b.is_ascii_digit() || b == b'.');
        if may_be_address && name.parse::<IpAddr>().is_ok() {
            return Err(DomainError::AddressLiteral);
        }
        for label in name.split('.') {
            check_label(label)?;
        }
        Ok(Self(name.to_ascii_lowercase().into_boxed_str()))
    }

    /// The name as a string: lower case, A-labels, no trailing dot.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The owner name of the policy TXT record: `_mta-sts.<domain>` (DISC-1).
    pub fn txt_name(&self) -> String {
        format!("_mta-sts.{}", self.0)
    }

    /// The Policy Host: `mta-sts.<domain>` (HOST-2).
    pub fn policy_host(&self) -> String {
        format!("mta-sts.{}", self.0)
    }

    /// The policy URL; the only one ever requested (HOST-2, FETCH-15).
    pub fn policy_url(&self) -> String {
        format!("https://mta-sts.{}/.well-known/mta-sts.txt", self.0)
    }

    /// Everything after the first label, if there is more than one label.
    pub(crate) fn parent(&self) -> Option<&str> {
        self.0.split_once('.').map(|(_, rest)| rest)
    }
}

/// Removes one trailing root dot, and refuses empty names and bracketed address literals.
fn strip_root(input: &str) -> Result<&str, DomainError> {
    if input.starts_with('[') && input.ends_with(']') {
        return Err(DomainError::AddressLiteral);
    }
    let name = input.strip_suffix('.').unwrap_or(input);
    if name.is_empty() {
        return Err(DomainError::Empty);
    }
    Ok(name)
}

fn check_label(label: &str) -> Result<(), DomainError> {
    if label.is_empty() {
        return Err(DomainError::EmptyLabel);
    }
    if label.len() > MAX_LABEL_LEN {
        return Err(DomainError::LabelTooLong(label.to_owned()));
    }
    if !label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        if let Some(c) = label.chars().find(|c| !(c.is_ascii_alphanumeric() || *c == '-')) {
            return Err(DomainError::InvalidChar(c));
        }
    }
    if label.starts_with('-') || label.ends_with('-') {
        return Err(DomainError::Hyphen(label.to_owned()));
    }
    Ok(())
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Domain({})", self.0)
    }
}

impl AsRef<str> for Domain {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for Domain {
    type Err = DomainError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_and_trailing_dot_fold_to_one_key() {
        // CACHE-13, HOST-1
        assert_eq!(Domain::parse("Example.COM.").unwrap(), Domain::parse("example.com").unwrap());
    }

    #[test]
    fn idn_is_converted_to_a_labels() {
        // HOST-7
        let d = Domain::parse("bücher.example").unwrap();
        assert_eq!(d.as_str(), "xn--bcher-kva.example");
        assert_eq!(d.txt_name(), "_mta-sts.xn--bcher-kva.example");
        assert_eq!(d.policy_host(), "mta-sts.xn--bcher-kva.example");
        assert_eq!(Domain::parse_ascii("bücher.example"), Err(DomainError::NotALabel));
    }

    #[test]
    fn address_literals_are_recognised() {
        // HOST-5
        for s in ["[192.0.2.1]", "192.0.2.1", "[IPv6:2001:db8::1]", "2001:db8::1"] {
            assert_eq!(Domain::parse(s), Err(DomainError::AddressLiteral), "{s}");
        }
    }

    #[test]
    fn bad_names_are_refused() {
        assert_eq!(Domain::parse(""), Err(DomainError::Empty));
        assert_eq!(Domain::parse("."), Err(DomainError::Empty));
        assert_eq!(Domain::parse("a..b"), Err(DomainError::EmptyLabel));
        assert_eq!(Domain::parse("a b.example"), Err(DomainError::InvalidChar(' ')));
        assert!(matches!(Domain::parse("-a.example"), Err(DomainError::Hyphen(_))));
        assert!(matches!(Domain::parse(&"a".repeat(64)), Err(DomainError::LabelTooLong(_))));
        let long = vec!["abcdefghi"; 30].join(".");
        assert!(matches!(Domain::parse(&long), Err(DomainError::TooLong(_))));
    }

    #[test]
    fn url_is_fixed() {
        // HOST-2
        let d = Domain::parse("example.com").unwrap();
        assert_eq!(d.policy_url(), "https://mta-sts.example.com/.well-known/mta-sts.txt");
    }
}
