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
//! `v=STSv1;`, so `v=STSv1 ; id=1` is accepted (erratum 6285; checklist §14a #1). When a field
//! repeats, the first occurrence wins (DISC-10). Whitespace after the last field is tolerated.

use std::fmt;

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
            Self::NonAscii(at) => write!(f, "byte {at} is not US-ASCII"),
            Self::NoFields => f.write_str("`v=STSv1` must be followed by `; id=...`"),
            Self::MissingId => f.write_str("the record has no `id=` field"),
            Self::InvalidId(v) => write!(f, "id `{v}` must be 1 to 32 letters or digits"),
            Self::EmptyField(n) => write!(f, "field {n} is empty (two `;` in a row)"),
            Self::BadField(n, t) => write!(
                f,
                "field {n} `{t}` is not `name=value` (name: letters, digits, `_-.`; value: printable, no `=`, `;` or space)"
            ),
            Self::ExpectedSemicolon(at) => {
                write!(f, "expected `;` at offset {at} (values may not contain spaces)")
            }
        }
    }
}

impl std::error::Error for TxtError {}

const VERSION: &[u8] = b"v=STSv1";

fn is_wsp(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// True when the record begins with the version field, so that it takes part in the count of
/// DISC-3 (a bare `v=STSv1` counts, and then fails to parse).
pub fn is_sts_candidate(record: &[u8]) -> bool {
    record.starts_with(VERSION) && record.get(VERSION.len()).is_none_or(|&b| b == b';' || is_wsp(b))
}

/// Applies DISC-3 and DISC-4 to an RRset. Each element is one TXT record with its
/// character-strings already joined with no separator (DISC-6).
pub fn select<R: AsRef<[u8]>>(records: &[R]) -> Discovery {
    match single_candidate(records, is_sts_candidate) {
        Err(0) => Discovery::NoRecord,
        Err(n) => Discovery::Multiple(n),
        Ok(record) => match parse_record(record) {
            Ok(record) => Discovery::Record(record),
            Err(e) => Discovery::Invalid(e),
        },
    }
}

/// The rule RFC 8461 §3.1 and RFC 8460 §3 share: of an RRset, keep the records that begin with
/// the version field; exactly one may remain. `Err(n)` gives how many remained otherwise.
pub(crate) fn single_candidate<R: AsRef<[u8]>>(
    records: &[R],
    is_candidate: fn(&[u8]) -> bool,
) -> Result<&[u8], usize> {
    let mut candidates = records.iter().map(AsRef::as_ref).filter(|r| is_candidate(r));
    match (candidates.next(), candidates.count()) {
        (Some(only), 0) => Ok(only),
        (None, _) => Err(0),
        (Some(_), extra) => Err(extra + 1),
    }
}

/// Parses one TXT record (strings joined) against the ABNF above.
pub fn parse_record(record: &[u8]) -> Result<StsRecord, TxtError> {
    if let Some(at) = record.iter().position(|b| !b.is_ascii()) {
        return Err(TxtError::NonAscii(at));
    }
    if !is_sts_candidate(record) {
        return Err(TxtError::NotSts);
    }
    let mut pos = VERSION.len();
    let mut id = None;
    let mut fields = 0usize;
    loop {
        // Delimiter: *WSP ";" *WSP, or the end (trailing whitespace tolerated).
        while record.get(pos).copied().is_some_and(is_wsp) {
            pos += 1;
        }
        match record.get(pos) {
            None => break,
            Some(b';') => pos += 1,
            Some(_) => return Err(TxtError::ExpectedSemicolon(pos)),
        }
        while record.get(pos).copied().is_some_and(is_wsp) {
            pos += 1;
        }
        if pos == record.len() {
            break; // one trailing delimiter is allowed
        }
        let start = pos;
        while record.get(pos).is_some_and(|&b| b != b';' && !is_wsp(b)) {
            pos += 1;
        }
        fields += 1;
        let field = &record[start..pos];
        if field.is_empty() {
            return Err(TxtError::EmptyField(fields));
        }
        // The bytes are ASCII (checked above), so this cannot fail.
        let text = std::str::from_utf8(field).unwrap_or_default();
        let (name, value) = split_field(text).ok_or_else(|| TxtError::BadField(fields, text.to_owned()))?;
        if name == "id" && id.is_none() {
            id = Some(PolicyId::parse(value)?);
        }
    }
    if fields == 0 {
        return Err(TxtError::NoFields);
    }
    id.map(|id| StsRecord { id }).ok_or(TxtError::MissingId)
}

/// Splits `name=value` and checks both against the extension grammar (DISC-8).
fn split_field(field: &str) -> Option<(&str, &str)> {
    let (name, value) = field.split_once('=')?;
    let name_ok = name.len() <= 32
        && name.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    let value_ok =
        !value.is_empty() && value.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b'=' && b != b';');
    (name_ok && value_ok).then_some((name, value))
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
