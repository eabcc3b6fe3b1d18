//! Email addresses (`contact-info`, `From`, the `mailto:` recipients of a `rua`), shared by the
//! record, the report and the message.

use std::fmt;

use crate::domain::{Domain, DomainError};

/// An email address `local-part@domain`: a dot-atom local part (ASCII) and a [`Domain`] (so an
/// internationalised domain is held in A-labels). Used for `contact-info`, `From` and the
/// `mailto:` recipients.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EmailAddress {
    local: Box<str>,
    domain: Domain,
}

/// Why a string is not an [`EmailAddress`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AddressError {
    /// No `@`.
    NoAt,
    /// The part before `@` is not a dot-atom of at most 64 characters (quoted local parts and
    /// non-ASCII local parts are not supported).
    LocalPart(String),
    /// The part after `@` is not a domain name.
    Domain(DomainError),
}

impl fmt::Display for AddressError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoAt => f.write_str("no `@`"),
            Self::LocalPart(l) => write!(
                f,
                "the local part `{l}` is not 1 to 64 letters, digits and `!#$%&'*+-/=?^_`{{|}}~` separated by single dots"
            ),
            Self::Domain(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for AddressError {}

impl EmailAddress {
    /// Parses `local@domain`.
    pub fn parse(s: &str) -> Result<Self, AddressError> {
        let (local, domain) = s.rsplit_once('@').ok_or(AddressError::NoAt)?;
        if local.len() > 64 || !is_dot_atom(local) {
            return Err(AddressError::LocalPart(local.to_owned()));
        }
        let domain = Domain::parse(domain).map_err(AddressError::Domain)?;
        Ok(Self { local: local.into(), domain })
    }

    /// The part before `@`.
    pub fn local_part(&self) -> &str {
        &self.local
    }

    /// The domain.
    pub fn domain(&self) -> &Domain {
        &self.domain
    }
}

impl fmt::Display for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.local, self.domain)
    }
}

impl fmt::Debug for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EmailAddress({self})")
    }
}

/// RFC 5322 `dot-atom-text`: atext runs separated by single dots.
pub(crate) fn is_dot_atom(s: &str) -> bool {
    let atext = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~".contains(&b);
    !s.is_empty() && s.split('.').all(|part| !part.is_empty() && part.bytes().all(atext))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        // RFC 8460 §5.3 example addresses.
        let a = EmailAddress::parse("reporter@company-x.example").unwrap();
        assert_eq!((a.local_part(), a.domain().as_str()), ("reporter", "company-x.example"));
        assert_eq!(
            EmailAddress::parse("tls+rpt@Bücher.Example").unwrap().to_string(),
            "tls+rpt@xn--bcher-kva.example"
        );
        for bad in ["nobody", "a b@x.example", "\"q\"@x.example", ".a@x.example", "a@", "a@-x.example"] {
            assert!(EmailAddress::parse(bad).is_err(), "{bad}");
        }
    }
}
