//! The tag-list grammar the `_mta-sts` (RFC 8461 §3.1) and `_smtp._tls` (RFC 8460 §3) TXT records
//! share, and its one tokenizer:
//!
//! ```text
//! record      = version 1*(field-delim field) [field-delim]
//! field-delim = *WSP ";" *WSP
//! extension   = ext-name "=" ext-value
//! ext-name    = (ALPHA / DIGIT) 0*31(ALPHA / DIGIT / "_" / "-" / ".")
//! ext-value   = 1*(%x21-3A / %x3C / %x3E-7E)
//! ```
//!
//! [`fields`] checks that the record is US-ASCII and begins with the version field, then yields
//! each field with its number (1-based, after the version) and its offset in the record: the
//! text up to the next `;`, trailing whitespace removed (whitespace after the last field is
//! tolerated, and one trailing delimiter). Each record type interprets the fields: what a
//! field name means, and whether whitespace may stand inside a field (never in an STS field;
//! around the commas of a TLSRPT `rua`), are its own grammar ([`crate::txt`],
//! [`crate::tlsrpt::record`]).

use std::fmt;

/// Why a record does not tokenize, or (`BadField`) a field is not an extension. The record
/// types carry these as variants of their own errors, with the same messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum TagError {
    /// A byte outside US-ASCII at this offset.
    NonAscii(usize),
    /// The record does not begin with the version field.
    NotVersion,
    /// The version field with no field after it.
    NoFields,
    /// An empty field (`;;`), by field number.
    EmptyField(usize),
    /// A field that is not `name=value` with the extension grammar; the field number and text.
    BadField(usize, String),
    /// Something other than `;` between fields, at this offset.
    ExpectedSemicolon(usize),
}

impl fmt::Display for TagError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NonAscii(at) => write!(f, "byte {at} is not US-ASCII"),
            Self::NotVersion => f.write_str("the record does not start with the version field"),
            Self::NoFields => f.write_str("the version field must be followed by `;` and a field"),
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

/// `WSP`: a space or a tab.
pub(crate) fn is_wsp(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// True when `record` begins with the version field `version` (followed by a delimiter,
/// whitespace or nothing), so that it takes part in the count of records (a bare version counts,
/// and then fails to parse).
pub(crate) fn is_candidate(record: &[u8], version: &[u8]) -> bool {
    record.starts_with(version) && record.get(version.len()).is_none_or(|&b| b == b';' || is_wsp(b))
}

/// The rule RFC 8461 §3.1 and RFC 8460 §3 share: of an RRset, keep the records that begin with
/// the version field; exactly one may remain. `Err(n)` gives how many remained otherwise.
pub(crate) fn single_candidate<'r, R: AsRef<[u8]>>(
    records: &'r [R],
    version: &[u8],
) -> Result<&'r [u8], usize> {
    let mut candidates = records.iter().map(AsRef::as_ref).filter(|r| is_candidate(r, version));
    match (candidates.next(), candidates.count()) {
        (Some(only), 0) => Ok(only),
        (None, _) => Err(0),
        (Some(_), extra) => Err(extra + 1),
    }
}

/// One field of a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Field<'a> {
    /// 1 for the first field after the version.
    pub number: usize,
    /// Where the field starts in the record.
    pub offset: usize,
    /// The field up to the next `;` or the end, trailing whitespace removed; never empty.
    pub text: &'a str,
}

impl<'a> Field<'a> {
    /// The field up to its first whitespace, and the offset in the record of what follows that
    /// whitespace, if the field holds any: for record types whose fields cannot contain it.
    pub(crate) fn until_wsp(&self) -> (&'a str, Option<usize>) {
        match self.text.bytes().position(is_wsp) {
            None => (self.text, None),
            Some(i) => {
                let run = self.text[i..].bytes().take_while(|&b| is_wsp(b)).count();
                (&self.text[..i], Some(self.offset + i + run))
            }
        }
    }
}

/// The fields of `record`, which must be US-ASCII and begin with `version`; the iterator ends
/// with [`TagError::NoFields`] when there is no field, and stops at its first error.
pub(crate) fn fields<'a>(record: &'a [u8], version: &[u8]) -> Result<Fields<'a>, TagError> {
    if let Some(at) = record.iter().position(|b| !b.is_ascii()) {
        return Err(TagError::NonAscii(at));
    }
    if !is_candidate(record, version) {
        return Err(TagError::NotVersion);
    }
    // The bytes are ASCII (checked above), so this cannot fail.
    let text = std::str::from_utf8(record).unwrap_or_default();
    Ok(Fields { text, pos: version.len(), number: 0, done: false })
}

/// The iterator of [`fields`].
#[derive(Clone, Debug)]
pub(crate) struct Fields<'a> {
    text: &'a str,
    pos: usize,
    number: usize,
    done: bool,
}

impl<'a> Fields<'a> {
    fn skip_wsp(&mut self) {
        while self.text.as_bytes().get(self.pos).copied().is_some_and(is_wsp) {
            self.pos += 1;
        }
    }

    fn end(&mut self) -> Option<Result<Field<'a>, TagError>> {
        self.done = true;
        (self.number == 0).then_some(Err(TagError::NoFields))
    }

    fn fail(&mut self, e: TagError) -> Option<Result<Field<'a>, TagError>> {
        self.done = true;
        Some(Err(e))
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<Field<'a>, TagError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        // Delimiter: *WSP ";" *WSP, or the end (trailing whitespace tolerated).
        self.skip_wsp();
        match self.text.as_bytes().get(self.pos) {
            None => return self.end(),
            Some(b';') => self.pos += 1,
            Some(_) => return self.fail(TagError::ExpectedSemicolon(self.pos)),
        }
        self.skip_wsp();
        if self.pos == self.text.len() {
            return self.end(); // one trailing delimiter is allowed
        }
        self.number += 1;
        let start = self.pos;
        let end = self.text[start..].find(';').map_or(self.text.len(), |i| start + i);
        let text = self.text[start..end].trim_end_matches([' ', '\t']);
        if text.is_empty() {
            return self.fail(TagError::EmptyField(self.number));
        }
        self.pos = start + text.len();
        Some(Ok(Field { number: self.number, offset: start, text }))
    }
}

/// Splits `name=value` and checks both against the extension grammar.
pub(crate) fn split_extension(field: &str) -> Option<(&str, &str)> {
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

    fn tokens(record: &str) -> Result<Vec<(usize, usize, &str)>, TagError> {
        fields(record.as_bytes(), b"v=X")?.map(|f| f.map(|f| (f.number, f.offset, f.text))).collect()
    }

    #[test]
    fn fields_and_offsets() {
        assert_eq!(tokens("v=X; a=1 ;\tb=2 c ; "), Ok(vec![(1, 5, "a=1"), (2, 11, "b=2 c")]));
        assert_eq!(tokens("v=X;a=1;"), Ok(vec![(1, 4, "a=1")]));
        assert_eq!(tokens("v=X"), Err(TagError::NoFields));
        assert_eq!(tokens("v=X ; "), Err(TagError::NoFields));
        assert_eq!(tokens("v=X x"), Err(TagError::ExpectedSemicolon(4)));
        assert_eq!(tokens("v=X; a=1;; b=2"), Err(TagError::EmptyField(2)));
        assert_eq!(tokens("v=Xa; a=1"), Err(TagError::NotVersion));
        assert_eq!(tokens("v=X; a=\u{e9}"), Err(TagError::NonAscii(7)));
    }

    #[test]
    fn whitespace_inside_a_field() {
        let f = Field { number: 1, offset: 5, text: "a=b \t c" };
        assert_eq!(f.until_wsp(), ("a=b", Some(11)));
        let f = Field { number: 1, offset: 5, text: "a=b" };
        assert_eq!(f.until_wsp(), ("a=b", None));
    }

    #[test]
    fn extensions() {
        assert_eq!(split_extension("a.b-c_d=x:y"), Some(("a.b-c_d", "x:y")));
        for bad in ["a", "=x", "a=", "_a=x", "a=x=y", "a=x;y", &format!("{}=x", "a".repeat(33))] {
            assert_eq!(split_extension(bad), None, "{bad}");
        }
    }
}
