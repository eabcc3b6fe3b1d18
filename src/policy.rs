//! The policy body served at `/.well-known/mta-sts.txt` (RFC 8461 §3.2).
//!
//! ```text
//! sts-policy-record   = sts-policy-field *WSP *(sts-policy-term sts-policy-field *WSP) [sts-policy-term]
//! sts-policy-term     = LF / CRLF
//! sts-policy-field    = version / mode / max_age / mx / extension   ; key ":" *WSP value
//! version value       = %s"STSv1"
//! mode value          = %s"testing" / %s"enforce" / %s"none"
//! max_age value       = 1*10(DIGIT)                                  ; at most 31557600
//! mx value            = ["*."] Domain                                ; may repeat
//! extension           = name ":" *WSP value   ; name: alnum then up to 31 of alnum "_" "-" "."
//! ```
//!
//! Project decisions on the RFC's open points (docs/conformance.md, "Decisions"), each tested:
//!
//! * LF and CRLF both end a line (erratum 6253); a bare CR makes the body invalid (#10).
//! * A UTF-8 byte-order mark at the start is stripped (#11); other non-UTF-8 input is invalid.
//! * Layout is lenient: trailing spaces and tabs, a missing final newline, blank lines anywhere and
//!   whitespace before a key are accepted (#3). Keys and values stay strict: `Mode:` is an unknown
//!   extension (so the policy lacks `mode`), `mode: Enforce` is invalid.
//! * `mode: report`, the name used up to draft-11, is invalid with an error saying RFC 8461 calls
//!   the mode `testing` (#9).
//! * `max_age` above 31557600 is clamped to 31557600 with a warning (#2).
//! * A malformed `mx` value is dropped with a warning; an `enforce`/`testing` policy left with no
//!   valid `mx` is invalid (#4).
//! * When a key other than `mx` repeats, the first occurrence wins (POL-13, #12).
//!
//! Every problem is reported with its line number, so that `mtasts lint` can list them all.

use std::fmt;

use crate::domain::Domain;
use crate::mx::{MxPattern, PackedPatterns};

/// The stated upper bound of `max_age`, one year (RFC 8461 §3.2).
pub const MAX_AGE_LIMIT: u32 = 31_557_600;

/// The policy mode (POL-2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Do not deliver to an MX that fails validation.
    Enforce,
    /// Deliver anyway and report failures.
    Testing,
    /// Behave as if there were no policy.
    None,
}

impl Mode {
    /// The mode as written in a policy.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Enforce => "enforce",
            Self::Testing => "testing",
            Self::None => "none",
        }
    }

    /// The mode with this name (the inverse of [`Mode::as_str`]).
    pub fn parse(name: &str) -> Option<Self> {
        [Self::Enforce, Self::Testing, Self::None].into_iter().find(|m| m.as_str() == name)
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A valid policy. Only [`Policy::parse`] makes one.
///
/// `repr(C)`: what a check reads (the mode, then the patterns packed in place) first, in the
/// order written, so that it sits in the first cache lines of a [`crate::cache::CachedPolicy`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct Policy {
    mode: Mode,
    /// `mx`, packed for [`Policy::matches_mx`] when short enough (src/mx.rs).
    packed: PackedPatterns,
    max_age: u32,
    mx: Vec<MxPattern>,
    warnings: Vec<Problem>,
}

/// One finding about a policy body, tied to its line (1-based; 0 for the body as a whole).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The line the problem is on, or 0 when it concerns the whole body.
    pub line: usize,
    /// Whether it makes the policy invalid.
    pub severity: Severity,
    /// What is wrong, in words an operator can act on.
    pub message: String,
}

/// How serious a [`Problem`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    /// The policy is invalid.
    Error,
    /// The policy is valid, but something was ignored or adjusted.
    Warning,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        if self.line == 0 {
            write!(f, "{level}: {}", self.message)
        } else {
            write!(f, "line {}: {level}: {}", self.line, self.message)
        }
    }
}

/// An invalid policy body: every problem found, errors and warnings, in line order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyError {
    /// All findings; at least one has [`Severity::Error`].
    pub problems: Vec<Problem>,
}

impl PolicyError {
    /// The first error, the one a one-line report shows.
    pub fn first_error(&self) -> &Problem {
        self.problems.iter().find(|p| p.severity == Severity::Error).unwrap_or(&self.problems[0])
    }
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid policy: {}", self.first_error())
    }
}

impl std::error::Error for PolicyError {}

impl Policy {
    /// Parses a policy body as fetched (bytes, since the body must be checked for UTF-8: POL-18).
    pub fn parse(body: &[u8]) -> Result<Self, PolicyError> {
        Parser::default().run(body)
    }

    /// The mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// `max_age` in seconds, already clamped to [`MAX_AGE_LIMIT`].
    pub fn max_age(&self) -> u32 {
        self.max_age
    }

    /// The valid `mx` patterns, in the order of the body.
    pub fn mx(&self) -> &[MxPattern] {
        &self.mx
    }

    /// Whether the MX host name `host` matches one of the `mx` patterns (MX-1), as
    /// [`crate::mx::any_matches`] on [`Policy::mx`] says. Reads the patterns packed inside the
    /// policy when they fit (two names of about 26 octets, or one of 54), the list otherwise.
    #[inline]
    pub fn matches_mx(&self, host: &Domain) -> bool {
        self.packed.matches(host).unwrap_or_else(|| crate::mx::any_matches(&self.mx, host))
    }

    /// Findings that did not make the policy invalid (a dropped `mx`, a clamped `max_age`, ...).
    pub fn warnings(&self) -> &[Problem] {
        &self.warnings
    }
}

#[derive(Default)]
struct Parser {
    /// Line of the first `version`, `mode` and `max_age` key, valid or not: later ones repeat it.
    version_line: Option<usize>,
    mode_line: Option<usize>,
    max_age_line: Option<usize>,
    mode: Option<Mode>,
    max_age: Option<u32>,
    mx: Vec<MxPattern>,
    bad_mx: usize,
    problems: Vec<Problem>,
}

impl Parser {
    fn error(&mut self, line: usize, message: impl Into<String>) {
        self.problems.push(Problem { line, severity: Severity::Error, message: message.into() });
    }

    fn warn(&mut self, line: usize, message: impl Into<String>) {
        self.problems.push(Problem { line, severity: Severity::Warning, message: message.into() });
    }

    fn run(mut self, body: &[u8]) -> Result<Policy, PolicyError> {
        let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
        let text = match std::str::from_utf8(body) {
            Ok(t) => t,
            Err(e) => {
                let line = 1 + body[..e.valid_up_to()].iter().filter(|&&b| b == b'\n').count();
                self.error(line, "the policy is not valid UTF-8 text");
                return Err(PolicyError { problems: self.problems });
            }
        };
        for (index, raw) in text.split('\n').enumerate() {
            let line = raw.strip_suffix('\r').unwrap_or(raw);
            self.line(index + 1, line);
        }
        self.finish()
    }

    fn line(&mut self, n: usize, line: &str) {
        if line.contains('\r') {
            self.error(n, "a bare carriage return; lines must end in LF or CRLF");
            return;
        }
        let line = line.trim_matches(|c| c == ' ' || c == '\t');
        if line.is_empty() {
            return;
        }
        let Some((key, value)) = line.split_once(':') else {
            self.error(n, format!("expected `key: value`, found `{line}`"));
            return;
        };
        if !is_key(key) {
            self.error(
                n,
                format!("`{key}` is not a valid key (no spaces before `:`; letters, digits, `_-.`)"),
            );
            return;
        }
        let value = value.trim_start_matches([' ', '\t']);
        match key {
            "version" => {
                if self.first(n, key, |p| &mut p.version_line) && value != "STSv1" {
                    self.error(n, format!("version `{value}` is not `STSv1`"));
                }
            }
            "mode" => {
                if self.first(n, key, |p| &mut p.mode_line) {
                    self.mode(n, value);
                }
            }
            "max_age" => {
                if self.first(n, key, |p| &mut p.max_age_line) {
                    self.max_age(n, value);
                }
            }
            "mx" => match MxPattern::parse(value) {
                Ok(p) => self.mx.push(p),
                Err(e) => {
                    self.bad_mx += 1;
                    self.warn(n, format!("mx `{value}` ignored: {e}"));
                }
            },
            other => self.extension(n, other, value),
        }
    }

    /// Records the first line of a key and says whether this is it; a repeat is noted and
    /// ignored, since the first occurrence wins (POL-13).
    fn first(&mut self, n: usize, key: &str, slot: fn(&mut Self) -> &mut Option<usize>) -> bool {
        if let Some(first) = *slot(self) {
            self.warn(n, format!("`{key}` repeated; the value on line {first} is used"));
            return false;
        }
        *slot(self) = Some(n);
        true
    }

    fn mode(&mut self, n: usize, value: &str) {
        self.mode = match value {
            "enforce" => Some(Mode::Enforce),
            "testing" => Some(Mode::Testing),
            "none" => Some(Mode::None),
            "report" => {
                return self.error(
                    n,
                    "mode `report` comes from drafts before RFC 8461, which calls this mode `testing`",
                );
            }
            other => {
                let lower = other.to_ascii_lowercase();
                return if ["enforce", "testing", "none"].contains(&lower.as_str()) {
                    self.error(n, format!("mode `{other}`: mode values are case-sensitive; write `{lower}`"))
                } else {
                    self.error(n, format!("mode `{other}` is not `enforce`, `testing` or `none`"))
                };
            }
        };
    }

    fn max_age(&mut self, n: usize, value: &str) {
        if value.is_empty() || value.len() > 10 || !value.bytes().all(|b| b.is_ascii_digit()) {
            return self.error(n, format!("max_age `{value}` must be 1 to 10 digits (seconds)"));
        }
        // At most 10 digits: always fits in a u64.
        let secs: u64 = value.parse().unwrap_or(u64::MAX);
        self.max_age = Some(match u32::try_from(secs) {
            Ok(s) if s <= MAX_AGE_LIMIT => s,
            _ => {
                self.warn(n, format!("max_age {secs} is above one year; {MAX_AGE_LIMIT} is used"));
                MAX_AGE_LIMIT
            }
        });
    }

    fn extension(&mut self, n: usize, key: &str, value: &str) {
        if value.is_empty() {
            return self.error(n, format!("`{key}` has an empty value"));
        }
        if value.chars().any(char::is_control) {
            return self.error(n, format!("`{key}` has a control character in its value"));
        }
        let lower = key.to_ascii_lowercase();
        if ["version", "mode", "max_age", "mx"].contains(&lower.as_str()) {
            self.warn(n, format!("`{key}` is an unknown key: keys are case-sensitive, write `{lower}`"));
        }
    }

    fn finish(mut self) -> Result<Policy, PolicyError> {
        if self.version_line.is_none() {
            self.error(0, "no `version: STSv1` line");
        }
        if self.mode_line.is_none() {
            self.error(0, "no `mode:` line (enforce, testing or none)");
        }
        if self.max_age_line.is_none() {
            self.error(0, "no `max_age:` line");
        }
        if let Some(mode @ (Mode::Enforce | Mode::Testing)) = self.mode {
            if self.mx.is_empty() {
                let why =
                    if self.bad_mx > 0 { "no valid `mx:` line is left" } else { "there is no `mx:` line" };
                self.error(0, format!("mode `{mode}` needs at least one MX pattern, and {why}"));
            }
        }
        self.problems.sort_by_key(|p| p.line);
        let valid = !self.problems.iter().any(|p| p.severity == Severity::Error);
        match (self.mode, self.max_age) {
            (Some(mode), Some(max_age)) if valid => {
                let packed = PackedPatterns::new(&self.mx);
                Ok(Policy { mode, packed, max_age, mx: self.mx, warnings: self.problems })
            }
            _ => Err(PolicyError { problems: self.problems }),
        }
    }
}

fn is_key(key: &str) -> bool {
    key.len() <= 32
        && key.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_example() {
        // RFC 8461 §3.2 example policy.
        let p = Policy::parse(
            b"version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.example.net\r\nmx: backupmx.example.com\r\nmax_age: 604800\r\n",
        )
        .unwrap();
        assert_eq!(p.mode(), Mode::Enforce);
        assert_eq!(p.max_age(), 604_800);
        assert_eq!(p.mx().len(), 3);
        assert!(p.warnings().is_empty());
    }

    #[test]
    fn first_duplicate_wins() {
        let p = Policy::parse(
            b"version: STSv1\nmode: testing\nmode: enforce\nmx: a.example\nmax_age: 10\nmax_age: 999",
        )
        .unwrap();
        assert_eq!(p.mode(), Mode::Testing);
        assert_eq!(p.max_age(), 10);
        assert_eq!(p.warnings().len(), 2);
    }

    #[test]
    fn report_mode_names_testing() {
        let e = Policy::parse(b"version: STSv1\nmode: report\nmx: a.example\nmax_age: 10").unwrap_err();
        assert_eq!(e.first_error().line, 2);
        assert!(e.first_error().message.contains("`testing`"));
    }

    #[test]
    fn clamp_and_drop() {
        let p =
            Policy::parse(b"version: STSv1\nmode: enforce\nmx: 192.0.2.1\nmx: a.example\nmax_age: 99999999")
                .unwrap();
        assert_eq!(p.max_age(), MAX_AGE_LIMIT);
        assert_eq!(p.mx().len(), 1);
        assert_eq!(p.warnings().len(), 2);
    }

    #[test]
    fn mx_matching_reads_packed_and_unpacked_patterns_alike() {
        let host = |h: &str| crate::mx::parse_host(h).unwrap();
        // Fits the packed form, and does not (the list is read).
        let short = Policy::parse(
            b"version: STSv1\nmode: enforce\nmx: mx1.example.com\nmx: *.example.net\nmax_age: 10",
        )
        .unwrap();
        let long = format!(
            "version: STSv1\nmode: enforce\nmx: mx1.example.com\nmx: *.example.net\nmx: {}.example.org\nmax_age: 10",
            "a".repeat(50)
        );
        let long = Policy::parse(long.as_bytes()).unwrap();
        for p in [&short, &long] {
            for (h, want) in [
                ("mx1.example.com", true),
                ("a.example.net", true),
                ("example.net", false),
                ("mx2.example.com", false),
            ] {
                assert_eq!(p.matches_mx(&host(h)), want, "{h}");
                assert_eq!(crate::mx::any_matches(p.mx(), &host(h)), want, "{h}");
            }
        }
        let a = format!("{}.example.org", "a".repeat(50));
        assert!(long.matches_mx(&host(&a)));
        assert!(!short.matches_mx(&host(&a)));
    }
}
