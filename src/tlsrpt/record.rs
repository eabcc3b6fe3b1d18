//! The `_smtp._tls` TXT record: where a domain wants its TLS reports (RFC 8460 §3).
//!
//! ```text
//! tlsrpt-record    = tlsrpt-version 1*(field-delim tlsrpt-field) [field-delim]
//! field-delim      = *WSP ";" *WSP
//! tlsrpt-field     = tlsrpt-rua / tlsrpt-extension      ; rua is required
//! tlsrpt-version   = %s"v=TLSRPTv1"
//! tlsrpt-rua       = %s"rua=" tlsrpt-uri *(*WSP "," *WSP tlsrpt-uri)
//! tlsrpt-uri       = URI                                 ; RFC 3986; "," "!" ";" percent-encoded
//! tlsrpt-extension = tlsrpt-ext-name "=" tlsrpt-ext-value
//! tlsrpt-ext-name  = (ALPHA / DIGIT) *31(ALPHA / DIGIT / "_" / "-" / ".")
//! tlsrpt-ext-value = 1*(%x21-3A / %x3C / %x3E-7E)
//! ```
//!
//! The record lives at `_smtp._tls.<Policy Domain>` (RPT-1, [`record_name`]); [`discover`] looks
//! it up through the [`Resolver`] port and [`select`] applies RPT-3 to the RRset: records
//! that do not begin with the version field are dropped, and anything but exactly one survivor
//! means the domain does not want reports. The character-strings of a record arrive joined with
//! no separator ([`Resolver::txt`]).
//!
//! Decisions, made like those of the `_mta-sts` record ([`crate::txt`]) and tested below:
//!
//! * The record is checked against the ABNF, not against the literal prefix `v=TLSRPTv1;`, so
//!   `v=TLSRPTv1 ; rua=...` is accepted (the analogue of erratum 6285 for RFC 8461). A bare
//!   `v=TLSRPTv1` still counts as a TLSRPT record for RPT-3, and then fails to parse.
//! * Field names are case-sensitive (`%s`): `RUA=` is an unknown extension, so the record lacks
//!   `rua` and is invalid.
//! * Unknown fields are accepted and ignored (RPT-5). When a field repeats, the first occurrence
//!   wins (docs/conformance.md, decision D12); a later `rua` must still be grammatical.
//! * Only `mailto:` and `https:` URIs are kept (RPT-4); URIs of other schemes are listed in
//!   [`TlsRptRecord::ignored`]. A record whose `rua` holds no usable URI is
//!   [`RecordError::NoSupportedUri`]. A URI that is not a URI (a space inside, a raw `!`, a bad
//!   `%` escape, an `https:` URI without a host, a `mailto:` address that is not an addr-spec) makes
//!   the record invalid: the ABNF has no room for it.
//! * A `mailto:` URI's address part is percent-decoded (`%2C` separates several addresses, as in
//!   RFC 6068); its `?` header fields are ignored (the report email sets its own Subject).
//!   An `https:` URI with user information (`user@host`) is refused.

use std::fmt;
use std::net::IpAddr;

use crate::domain::Domain;
use crate::ports::{DnsError, Resolver};
use crate::taglist::{self, TagError};
use crate::tlsrpt::address::EmailAddress;

/// The owner name of the reporting policy: `_smtp._tls.<domain>` (RPT-1).
pub fn record_name(domain: &Domain) -> String {
    format!("_smtp._tls.{domain}")
}

/// A valid TLSRPT record: the destinations of reports, in the order of the record (RPT-4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsRptRecord {
    /// The `mailto:` and `https:` destinations; never empty.
    pub rua: Vec<ReportUri>,
    /// URIs of other schemes, ignored (RPT-4), as published.
    pub ignored: Vec<String>,
}

impl TlsRptRecord {
    /// The record as the report outbox keeps it: `v=TLSRPTv1; rua=` and the kept destinations,
    /// joined by `,` (the ignored ones are dropped). [`TlsRptRecord::from_stored_text`] reads it.
    pub fn to_stored_text(&self) -> String {
        let rua: Vec<&str> = self.rua.iter().map(ReportUri::as_str).collect();
        format!("v=TLSRPTv1; rua={}", rua.join(","))
    }

    /// Reads back [`TlsRptRecord::to_stored_text`] (with the record grammar, [`parse_record`]).
    pub fn from_stored_text(text: &str) -> Result<Self, RecordError> {
        parse_record(text.as_bytes())
    }
}

/// One report destination.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReportUri {
    /// Reports go by email (RPT-10).
    Mailto(MailtoUri),
    /// Reports are POSTed over HTTPS (RPT-9).
    Https(HttpsUri),
}

impl ReportUri {
    /// The URI as published.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Mailto(m) => &m.uri,
            Self::Https(h) => &h.uri,
        }
    }
}

impl fmt::Display for ReportUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A `mailto:` destination.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MailtoUri {
    uri: String,
    to: Vec<EmailAddress>,
}

impl MailtoUri {
    /// The URI as published.
    pub fn as_str(&self) -> &str {
        &self.uri
    }

    /// The recipients, percent-decoded; at least one.
    pub fn to(&self) -> &[EmailAddress] {
        &self.to
    }
}

/// An `https:` destination.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpsUri {
    uri: String,
    host: String,
    port: u16,
}

impl HttpsUri {
    /// The URI as published.
    pub fn as_str(&self) -> &str {
        &self.uri
    }

    /// The URI to request: as published, without a `#fragment`.
    pub fn request_uri(&self) -> &str {
        self.uri.split_once('#').map_or(self.uri.as_str(), |(u, _)| u)
    }

    /// The host: a lower-case DNS name in A-labels, or an IP address (without brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port: the URI's, or 443.
    pub fn port(&self) -> u16 {
        self.port
    }
}

/// What discovery found at `_smtp._tls.<domain>` (RPT-3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Discovery {
    /// Exactly one TLSRPT record, and it is valid.
    Record(TlsRptRecord),
    /// No record begins with `v=TLSRPTv1` (or the name does not exist): no reports.
    NoRecord,
    /// More than one record begins with `v=TLSRPTv1`: no reports.
    Multiple(usize),
    /// The single TLSRPT record does not parse: no reports.
    Invalid(RecordError),
}

/// Why a TXT record is not a valid TLSRPT record. Each message says what is wrong and where.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecordError {
    /// Not starting with `v=TLSRPTv1` (case-sensitive).
    NotTlsRpt,
    /// A byte outside US-ASCII at this offset.
    NonAscii(usize),
    /// `v=TLSRPTv1` with no field after it.
    NoFields,
    /// Fields present but no `rua`.
    MissingRua,
    /// An empty field (`;;`), by field number (1-based, after the version).
    EmptyField(usize),
    /// A field that is not `name=value` with the extension grammar; the field number and text.
    BadField(usize, String),
    /// Something other than `;` between fields, at this offset (e.g. a space inside a value).
    ExpectedSemicolon(usize),
    /// An empty element in the `rua` list (`rua=`, `a,,b`, a trailing comma), at this offset.
    EmptyUri(usize),
    /// An element of the `rua` list that is not a usable URI.
    BadUri {
        /// Offset of the URI in the record.
        at: usize,
        /// The URI as published.
        uri: String,
        /// What is wrong with it.
        why: String,
    },
    /// `rua` holds no `mailto:` or `https:` URI; these (of other schemes) were ignored.
    NoSupportedUri(Vec<String>),
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotTlsRpt => f.write_str("the record does not start with `v=TLSRPTv1`"),
            Self::NonAscii(at) => TagError::NonAscii(*at).fmt(f),
            Self::NoFields => f.write_str("`v=TLSRPTv1` must be followed by `; rua=...`"),
            Self::MissingRua => {
                f.write_str("the record has no `rua=` field (field names are case-sensitive)")
            }
            Self::EmptyField(n) => TagError::EmptyField(*n).fmt(f),
            Self::BadField(n, t) => TagError::BadField(*n, t.clone()).fmt(f),
            Self::ExpectedSemicolon(at) => TagError::ExpectedSemicolon(*at).fmt(f),
            Self::EmptyUri(at) => write!(f, "empty URI in `rua` at offset {at}"),
            Self::BadUri { at, uri, why } => write!(f, "`rua` URI `{uri}` at offset {at}: {why}"),
            Self::NoSupportedUri(ignored) => write!(
                f,
                "`rua` has no mailto: or https: URI (ignored: {})",
                ignored.iter().map(|u| format!("`{u}`")).collect::<Vec<_>>().join(", ")
            ),
        }
    }
}

impl std::error::Error for RecordError {}

impl From<TagError> for RecordError {
    fn from(e: TagError) -> Self {
        match e {
            TagError::NonAscii(at) => Self::NonAscii(at),
            TagError::NotVersion => Self::NotTlsRpt,
            TagError::NoFields => Self::NoFields,
            TagError::EmptyField(n) => Self::EmptyField(n),
            TagError::BadField(n, t) => Self::BadField(n, t),
            TagError::ExpectedSemicolon(at) => Self::ExpectedSemicolon(at),
        }
    }
}

const VERSION: &[u8] = b"v=TLSRPTv1";

/// True when the record begins with the version field, so that it takes part in the count of
/// RPT-3 (a bare `v=TLSRPTv1` counts, and then fails to parse).
pub fn is_tlsrpt_candidate(record: &[u8]) -> bool {
    taglist::is_candidate(record, VERSION)
}

/// Looks up `_smtp._tls.<domain>` and applies [`select`]. A name that does not exist, or has no
/// TXT record, is [`Discovery::NoRecord`]; a temporary DNS failure is an error, so that the caller
/// can try again before giving up on the report.
pub fn discover<R: Resolver + ?Sized>(resolver: &R, domain: &Domain) -> Result<Discovery, DnsError> {
    match resolver.txt(&record_name(domain)) {
        Ok(records) => Ok(select(&records)),
        Err(DnsError::NotFound) => Ok(Discovery::NoRecord),
        Err(e) => Err(e),
    }
}

/// Applies RPT-3 to an RRset. Each element is one TXT record with its character-strings joined
/// with no separator.
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
pub fn parse_record(record: &[u8]) -> Result<TlsRptRecord, RecordError> {
    let mut rua = None;
    for field in taglist::fields(record, VERSION)? {
        let field = field?;
        if let Some(value) = field.text.strip_prefix("rua=") {
            // Whitespace may stand around the commas of the list.
            let parsed = parse_rua(value, field.offset + 4)?;
            rua.get_or_insert(parsed);
        } else {
            if let Some(i) = field.text.bytes().position(taglist::is_wsp) {
                return Err(RecordError::ExpectedSemicolon(field.offset + i));
            }
            if taglist::split_extension(field.text).is_none() {
                return Err(RecordError::BadField(field.number, field.text.to_owned()));
            }
        }
    }
    let (uris, ignored) = rua.ok_or(RecordError::MissingRua)?;
    if uris.is_empty() {
        return Err(RecordError::NoSupportedUri(ignored));
    }
    Ok(TlsRptRecord { rua: uris, ignored })
}

/// The `rua` list (RPT-4): URIs separated by commas with optional WSP around each. `offset` is
/// where `value` starts in the record, for error positions.
fn parse_rua(value: &str, offset: usize) -> Result<(Vec<ReportUri>, Vec<String>), RecordError> {
    let mut uris = Vec::new();
    let mut ignored = Vec::new();
    let mut at = offset;
    for piece in value.split(',') {
        let lead = piece.len() - piece.trim_start_matches([' ', '\t']).len();
        let uri = piece.trim_matches([' ', '\t']);
        if uri.is_empty() {
            return Err(RecordError::EmptyUri(at + lead));
        }
        match parse_uri(uri) {
            Ok(Some(parsed)) => uris.push(parsed),
            Ok(None) => ignored.push(uri.to_owned()),
            Err(why) => return Err(RecordError::BadUri { at: at + lead, uri: uri.to_owned(), why }),
        }
        at += piece.len() + 1;
    }
    Ok((uris, ignored))
}

/// One URI: `Some` for `mailto:` and `https:`, `None` for a well-formed URI of another scheme.
fn parse_uri(uri: &str) -> Result<Option<ReportUri>, String> {
    if let Some(i) = uri.bytes().position(|b| !is_uri_char(b)) {
        let c = char::from(uri.as_bytes()[i]);
        return Err(match c {
            ' ' | '\t' => "a URI cannot contain a space (separate URIs with `,`)".into(),
            '!' | ',' | ';' => format!("`{c}` must be percent-encoded inside a URI"),
            _ => format!("the character `{}` is not allowed in a URI", c.escape_default()),
        });
    }
    percent_decode(uri)?; // every `%` starts a valid escape
    let (scheme, rest) = uri.split_once(':').ok_or("no scheme (`mailto:` or `https:`)")?;
    let scheme_ok = scheme.bytes().next().is_some_and(|b| b.is_ascii_alphabetic())
        && scheme.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
    if !scheme_ok {
        return Err(format!("`{scheme}` is not a URI scheme"));
    }
    if scheme.eq_ignore_ascii_case("mailto") {
        parse_mailto(uri, rest).map(|m| Some(ReportUri::Mailto(m)))
    } else if scheme.eq_ignore_ascii_case("https") {
        parse_https(uri, rest).map(|h| Some(ReportUri::Https(h)))
    } else {
        Ok(None)
    }
}

/// RFC 3986 characters, less those TLSRPT requires to be encoded (`!`, `,`, `;`).
fn is_uri_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~:/?#[]@$&'()*+=%".contains(&b)
}

fn parse_mailto(uri: &str, rest: &str) -> Result<MailtoUri, String> {
    let to = rest.split_once('?').map_or(rest, |(to, _)| to);
    let decoded = String::from_utf8(percent_decode(to)?)
        .map_err(|_| "the mailto: address is not UTF-8 once decoded".to_owned())?;
    if decoded.is_empty() {
        return Err("the mailto: URI has no address".into());
    }
    let addresses = decoded
        .split(',')
        .map(|a| EmailAddress::parse(a).map_err(|e| format!("`{a}` is not an email address: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(MailtoUri { uri: uri.to_owned(), to: addresses })
}

fn parse_https(uri: &str, rest: &str) -> Result<HttpsUri, String> {
    let after = rest.strip_prefix("//").ok_or("an https: URI needs `//` and a host")?;
    let authority = after.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.contains('@') {
        return Err("user information (`user@host`) in an https: URI is not supported".into());
    }
    let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        let (ip, tail) = bracketed.split_once(']').ok_or("unclosed `[` in the host")?;
        let ip: IpAddr = ip.parse().map_err(|_| format!("`[{ip}]` is not an IP address"))?;
        (ip.to_string(), tail.strip_prefix(':'))
    } else {
        let (name, port) = match authority.split_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (authority, None),
        };
        if name.is_empty() {
            return Err("an https: URI needs a host".into());
        }
        let host = match name.parse::<IpAddr>() {
            Ok(ip) => ip.to_string(),
            Err(_) => Domain::parse_ascii(name).map_err(|e| format!("host `{name}`: {e}"))?.to_string(),
        };
        (host, port)
    };
    let port = match port {
        None | Some("") => 443,
        Some(p) => p.parse::<u16>().ok().filter(|&p| p != 0).ok_or(format!("`{p}` is not a port"))?,
    };
    Ok(HttpsUri { uri: uri.to_owned(), host, port })
}

/// Decodes `%XX` escapes; any other `%` is an error.
fn percent_decode(s: &str) -> Result<Vec<u8>, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
            let value = hex
                .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("`%` at {i} is not followed by two hex digits"))?;
            out.push(value);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rua(s: &str) -> Result<Vec<String>, RecordError> {
        parse_record(s.as_bytes()).map(|r| r.rua.iter().map(|u| u.as_str().to_owned()).collect())
    }

    #[test]
    fn rfc_examples() {
        // RFC 8460 §3.1 and §3.2.
        assert_eq!(rua("v=TLSRPTv1;rua=mailto:reports@example.com").unwrap(), ["mailto:reports@example.com"]);
        assert_eq!(
            rua("v=TLSRPTv1; rua=https://reporting.example.com/v1/tlsrpt").unwrap(),
            ["https://reporting.example.com/v1/tlsrpt"]
        );
    }

    #[test]
    fn grammar() {
        assert_eq!(rua("v=TLSRPTv1 ; rua=mailto:a@x.example ;").unwrap().len(), 1);
        assert_eq!(
            rua("v=TLSRPTv1; rua=mailto:a@x.example , \thttps://r.example/t").unwrap(),
            ["mailto:a@x.example", "https://r.example/t"]
        );
        assert_eq!(rua("v=TLSRPTv1; foo=bar; rua=mailto:a@x.example").unwrap().len(), 1);
        assert_eq!(
            rua("v=TLSRPTv1; rua=mailto:first@x.example; rua=mailto:second@x.example").unwrap(),
            ["mailto:first@x.example"]
        );
        assert_eq!(parse_record(b"v=TLSRPTv1"), Err(RecordError::NoFields));
        assert_eq!(parse_record(b"v=TLSRPTv1;"), Err(RecordError::NoFields));
        assert_eq!(parse_record(b"v=TLSRPTv1; foo=bar"), Err(RecordError::MissingRua));
        assert_eq!(parse_record(b"v=TLSRPTv1; RUA=mailto:a@x.example"), Err(RecordError::MissingRua));
        assert_eq!(parse_record(b"V=TLSRPTv1; rua=mailto:a@x.example"), Err(RecordError::NotTlsRpt));
        assert_eq!(parse_record(b"v=TLSRPTv1;; rua=mailto:a@x.example"), Err(RecordError::EmptyField(1)));
        assert_eq!(parse_record(b"v=TLSRPTv1; rua=mailto:a@x.example,"), Err(RecordError::EmptyUri(35)));
        assert!(matches!(
            parse_record(b"v=TLSRPTv1; rua=mailto:a@x.example; e=va lue"),
            Err(RecordError::ExpectedSemicolon(40))
        ));
    }

    #[test]
    fn uris() {
        let bad = |s: &str| match parse_record(s.as_bytes()) {
            Err(RecordError::BadUri { why, .. }) => why,
            other => panic!("{s}: {other:?}"),
        };
        assert!(bad("v=TLSRPTv1; rua=mailto:a!b@x.example").contains("percent-encoded"));
        assert!(bad("v=TLSRPTv1; rua=mailto:a%2@x.example").contains("two hex digits"));
        assert!(bad("v=TLSRPTv1; rua=https:///path").contains("needs a host"));
        assert!(bad("v=TLSRPTv1; rua=https://u@r.example/").contains("user information"));
        assert!(bad("v=TLSRPTv1; rua=mailto:nobody").contains("not an email address"));
        assert!(bad("v=TLSRPTv1; rua=https://r.example:99999/").contains("not a port"));
        assert_eq!(
            parse_record(b"v=TLSRPTv1; rua=ftp://r.example/x"),
            Err(RecordError::NoSupportedUri(vec!["ftp://r.example/x".into()]))
        );

        let record = parse_record(
            b"v=TLSRPTv1; rua=MAILTO:a@x.example%2Cb@B%C3%BCcher.example?subject=hi,ftp://x.example/,https://R.Example:8443/p#f",
        )
        .unwrap();
        assert_eq!(record.ignored, ["ftp://x.example/"]);
        let ReportUri::Mailto(m) = &record.rua[0] else { panic!() };
        // `%2C` separates two addresses; a percent-encoded U-label becomes an A-label.
        let to: Vec<String> = m.to().iter().map(ToString::to_string).collect();
        assert_eq!(to, ["a@x.example", "b@xn--bcher-kva.example"]);
        let ReportUri::Https(h) = &record.rua[1] else { panic!() };
        assert_eq!((h.host(), h.port(), h.request_uri()), ("r.example", 8443, "https://R.Example:8443/p"));
    }

    #[test]
    fn selection() {
        let ok = "v=TLSRPTv1; rua=mailto:a@x.example";
        assert!(matches!(select(&["v=spf1 -all", ok]), Discovery::Record(_)));
        assert_eq!(select(&[ok, ok]), Discovery::Multiple(2));
        assert_eq!(select(&["v=STSv1; id=1"]), Discovery::NoRecord);
        assert_eq!(select::<&str>(&[]), Discovery::NoRecord);
        assert_eq!(select(&["v=TLSRPTv10; rua=mailto:a@x.example"]), Discovery::NoRecord);
        assert_eq!(select(&["v=TLSRPTv1", ok]), Discovery::Multiple(2));
        assert_eq!(select(&["v=TLSRPTv1"]), Discovery::Invalid(RecordError::NoFields));
    }
}
