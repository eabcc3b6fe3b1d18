//! The `_mta-sts` TXT record (RFC 8461 §3.1).
//!
//! ```text
//! sts-text-record = sts-version 1*(sts-field-delim sts-field) [sts-field-delim]
//! sts-field-delim = *WSP ";" *WSP
//! sts-version     = %s"v=STSv1"
//! sts-id          = %s"id=" 1*32(ALPHA / DIGIT)
//! sts-extension   = sts-ext-name "=" sts-ext-value
//! sts-ext-name    = (ALPHA / DIGIT) 0*31(ALPHA / DIGIT / "_" / "-" / ".")
//! sts-ext-value   = 1*(%x21-3A / %x3C / %x3E-7E)
//! ```
//!
//! [`select`] applies the discovery rules to a whole RRset: records that do not begin with the
//! version field are dropped (DISC-3), and anything but exactly one survivor means "no available
//! policy". The record is checked against the ABNF rather than against the literal prefix
//! `v=STSv1;`, so `v=STSv1 ; id=1` is accepted (erratum 6285; docs/conformance.md, decision D1). When a field
//! repeats, the first occurrence wins (DISC-10). Whitespace after the last field is tolerated.

use std::fmt;

use crate::taglist::{self, TagError};

/// The policy id from the TXT record: 1 to 32 ASCII letters or digits, compared only for
/// equality (DISC-5, DISC-12).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PolicyId(Box<str>);

impl PolicyId {
    /// Parses an id value (DISC-5).
    pub fn parse(value: &str) -> Result<Self, TxtError> {
        if value.is_empty() || value.len() > 32 || !value.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(TxtError::InvalidId(value.to_owned()));
        }
        Ok(Self(value.into()))
    }

    /// The id as published.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PolicyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for PolicyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PolicyId({})", self.0)
    }
}

/// A valid `v=STSv1` record. Extension fields are accepted and ignored (DISC-9); the TXT record
/// never carries a mode or patterns (DISC-15).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StsRecord {
    /// The policy id.
    pub id: PolicyId,
}

/// What discovery found in a `_mta-sts` RRset (DISC-3, DISC-4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Discovery {
    /// Exactly one STS record, and it is valid.
    Record(StsRecord),
    /// No record begins with `v=STSv1`.
    NoRecord,
    /// More than one record begins with `v=STSv1`: no available policy.
    Multiple(usize),
    /// The single STS record does not parse: no available policy.
    Invalid(TxtError),
}

/// Why a TXT record is not a valid STS record. Each message names the field at fault.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TxtError {
    /// Not starting with `v=STSv1` (case-sensitive).
    NotSts,
    /// A byte outside US-ASCII at this offset (DISC-11).
    NonAscii(usize),
    /// `v=STSv1` with no field after it.
    NoFields,
    /// Fields present but no `id`.
    MissingId,
    /// The `id` value is not 1 to 32 letters or digits.
    InvalidId(String),
    /// An empty field (`;;`).
    EmptyField(usize),
    /// A field that is not `name=value` with the extension grammar; the field number and text.
    BadField(usize, String),
    /// Something other than `;` between fields (e.g. a space inside a value).
    ExpectedSemicolon(usize),
}

impl fmt::Display for TxtError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotSts => f.write_str("the record does not start with `v=STSv1`"),
            Self::NonAscii(at) => TagError::NonAscii(*at).fmt(f),
            Self::NoFields => f.write_str("`v=STSv1` must be followed by `; id=...`"),
            Self::MissingId => f.write_str("the record has no `id=` field"),
            Self::InvalidId(v) => write!(f, "id `{v}` must be 1 to 32 letters or digits"),
            Self::EmptyField(n) => TagError::EmptyField(*n).fmt(f),
            Self::BadField(n, t) => TagError::BadField(*n, t.clone()).fmt(f),
            Self::ExpectedSemicolon(at) => TagError::ExpectedSemicolon(*at).fmt(f),
        }
    }
}

impl std::error::Error for TxtError {}

impl From<TagError> for TxtError {
    fn from(e: TagError) -> Self {
        match e {
            TagError::NonAscii(at) => Self::NonAscii(at),
            TagError::NotVersion => Self::NotSts,
            TagError::NoFields => Self::NoFields,
            TagError::EmptyField(n) => Self::EmptyField(n),
            TagError::BadField(n, t) => Self::BadField(n, t),
            TagError::ExpectedSemicolon(at) => Self::ExpectedSemicolon(at),
        }
    }
}

const VERSION: &[u8] = b"v=STSv1";

/// True when the record begins with the version field, so that it takes part in the count of
/// DISC-3 (a bare `v=STSv1` counts, and then fails to parse).
pub fn is_sts_candidate(record: &[u8]) -> bool {
    taglist::is_candidate(record, VERSION)
}

/// Applies DISC-3 and DISC-4 to an RRset. Each element is one TXT record with its
/// character-strings already joined with no separator (DISC-6).
pub fn select<R: AsRef<[u8]>>(records: &[R]) -> Discovery {
    match taglist::single_candidate(records, VERSION) {
        Err(0) => Discovery::NoRecord,
        Err(n) => Discovery::Multiple(n),
        Ok(record) => match parse_record(record) {
            Ok(record) => Discovery::Record(record),
            Err(e) => Discovery::Invalid(e),
        },
    }
}

/// Parses one TXT record (strings joined) against the ABNF above, with the shared tag-list
/// tokenizer (`src/taglist.rs`).
pub fn parse_record(record: &[u8]) -> Result<StsRecord, TxtError> {
    let mut id = None;
    for field in taglist::fields(record, VERSION)? {
        let field = field?;
        // An STS field holds no whitespace: the field ends at the first, and a delimiter must
        // follow it (the field before it is still judged first).
        let (text, after_wsp) = field.until_wsp();
        let (name, value) = taglist::split_extension(text)
            .ok_or_else(|| TxtError::BadField(field.number, text.to_owned()))?;
        if name == "id" && id.is_none() {
            id = Some(PolicyId::parse(value)?);
        }
        if let Some(at) = after_wsp {
            return Err(TxtError::ExpectedSemicolon(at));
        }
    }
    id.map(|id| StsRecord { id }).ok_or(TxtError::MissingId)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> Result<String, TxtError> {
        parse_record(s.as_bytes()).map(|r| r.id.as_str().to_owned())
    }

    #[test]
    fn rfc_example() {
        // RFC 8461 §3.1 example record.
        assert_eq!(id("v=STSv1; id=20160831085700Z;").unwrap(), "20160831085700Z");
    }

    #[test]
    fn grammar() {
        assert_eq!(id("v=STSv1;id=1").unwrap(), "1");
        assert_eq!(id("v=STSv1;\tid=1").unwrap(), "1");
        assert_eq!(id("v=STSv1 ; id=1").unwrap(), "1");
        assert_eq!(id("v=STSv1; foo=x; id=1").unwrap(), "1");
        assert_eq!(id("v=STSv1; id=a; id=b").unwrap(), "a");
        assert!(matches!(id("v=STSv1; id=1;;"), Err(TxtError::EmptyField(_))));
        assert!(matches!(id("v=STSv1; id=a_b"), Err(TxtError::InvalidId(_))));
        assert!(matches!(id("v=STSv1;"), Err(TxtError::NoFields)));
        assert!(matches!(id("v=STSv1; e=va lue; id=1"), Err(TxtError::ExpectedSemicolon(_))));
        assert!(matches!(id("V=STSv1; id=1"), Err(TxtError::NotSts)));
    }

    #[test]
    fn selection() {
        let rrset = ["v=spf1 -all", "v=STSv1; id=a"];
        assert!(matches!(select(&rrset), Discovery::Record(r) if r.id.as_str() == "a"));
        assert_eq!(select(&["v=STSv1; id=a", "v=STSv1; id=b"]), Discovery::Multiple(2));
        assert_eq!(select(&["v=spf1 -all"]), Discovery::NoRecord);
        assert_eq!(select::<&str>(&[]), Discovery::NoRecord);
        assert!(matches!(select(&["v=STSv1"]), Discovery::Invalid(TxtError::NoFields)));
        assert_eq!(select(&["v=STSv10; id=a"]), Discovery::NoRecord);
    }
}
