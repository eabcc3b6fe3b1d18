//! `mtasts lint`: checks a policy file before it is published.
//!
//! Every problem the parser finds is printed with its line (the same rules a sender applies), then
//! advice for publishers that the RFC leaves to judgement (a short `max_age`, a byte-order mark,
//! very broad wildcards). Exit 0 for a valid policy, 1 for an invalid one.

use std::io::Read;
use std::path::Path;
use std::process::ExitCode;

use mtasts::policy::{Mode, Policy, Severity};

/// One day: a `max_age` below this protects little (RFC 8461 §3.2 suggests weeks).
const SHORT_MAX_AGE: u32 = 86_400;

pub fn run(file: Option<&Path>) -> Result<ExitCode, String> {
    let (name, body) = match file {
        None => ("<stdin>".to_owned(), read_stdin()?),
        Some(p) if p.as_os_str() == "-" => ("<stdin>".to_owned(), read_stdin()?),
        Some(p) => (
            p.display().to_string(),
            std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()))?,
        ),
    };
    let (valid, lines) = lint(&name, &body);
    for line in &lines {
        println!("{line}");
    }
    Ok(if valid { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn read_stdin() -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    std::io::stdin().read_to_end(&mut body).map_err(|e| format!("cannot read standard input: {e}"))?;
    Ok(body)
}

/// The report for one policy body: whether it is valid, and the lines to print.
fn lint(name: &str, body: &[u8]) -> (bool, Vec<String>) {
    let mut out = Vec::new();
    let at = |line: usize| if line == 0 { name.to_owned() } else { format!("{name}:{line}") };
    if body.starts_with(b"\xEF\xBB\xBF") {
        out.push(format!(
            "{}: warning: the file starts with a byte-order mark; some senders reject it",
            at(1)
        ));
    }
    match Policy::parse(body) {
        Ok(policy) => {
            for p in policy.warnings() {
                out.push(format!("{}: warning: {}", at(p.line), p.message));
            }
            advice(&policy, &mut |m| out.push(format!("{name}: advice: {m}")));
            out.push(format!(
                "{name}: valid policy: mode {}, max_age {}, {} mx pattern(s)",
                policy.mode(),
                policy.max_age(),
                policy.mx().len()
            ));
            (true, out)
        }
        Err(e) => {
            for p in &e.problems {
                let level = if p.severity == Severity::Error { "error" } else { "warning" };
                out.push(format!("{}: {level}: {}", at(p.line), p.message));
            }
            out.push(format!("{name}: invalid policy"));
            (false, out)
        }
    }
}

fn advice(policy: &Policy, say: &mut dyn FnMut(String)) {
    if policy.mode() != Mode::None && policy.max_age() < SHORT_MAX_AGE {
        say(format!(
            "max_age {} is less than a day: senders forget the policy quickly, which weakens it; weeks are usual (604800 is one week)",
            policy.max_age()
        ));
    }
    for p in policy.mx() {
        if p.is_wildcard() && !p.base().as_str().contains('.') {
            say(format!("mx `{p}` covers every host under a top-level domain"));
        }
    }
    if policy.mode() == Mode::Testing {
        say("mode testing: failures are only reported; switch to enforce once TLSRPT reports are clean"
            .into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_policy_report() {
        let (ok, lines) = lint("p", b"version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 604800\n");
        assert!(ok);
        assert_eq!(lines, vec!["p: valid policy: mode enforce, max_age 604800, 1 mx pattern(s)"]);
    }

    #[test]
    fn every_problem_with_its_line() {
        let (ok, lines) = lint("p", b"version: STSv1\nmode: report\nmx: .a.example\nmax_age: 1d\n");
        assert!(!ok);
        assert!(lines.iter().any(|l| l.starts_with("p:2: error:")), "{lines:?}");
        assert!(lines.iter().any(|l| l.starts_with("p:3: warning:")), "{lines:?}");
        assert!(lines.iter().any(|l| l.starts_with("p:4: error:")), "{lines:?}");
        assert_eq!(lines.last().map(String::as_str), Some("p: invalid policy"));
    }

    #[test]
    fn advice_for_short_max_age() {
        let (ok, lines) = lint("p", b"version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 600\n");
        assert!(ok);
        assert!(lines.iter().any(|l| l.contains("less than a day")), "{lines:?}");
    }
}
