//! Report mail that receivers accept (docs/conformance.md RPT-12, RPT-22..RPT-25): `mtasts report
//! send` DKIM-signs mailed reports with the `[report.dkim]` key, and dkimpy (an independent
//! verifier, `tests/tlsrpt/dkim_verify.py`) checks the signature against the key the DNS fixture
//! publishes at `SELECTOR._domainkey.DOMAIN`; every mailed report says `TLS-Required: No`; the
//! first send waits a random delay after the day, kept in the store; a destination that keeps
//! refusing reports is suppressed for a while and `mtasts report list` shows it.
//!
//! Needs `openssl` (key generation) and Python's `dkimpy`, `dnspython` and `pynacl` (Ed25519).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use mtasts::Domain;
use mtasts::cache::{CountStore, SqliteStore};
use mtasts::policy::Policy;
use mtasts::tlsrpt::report::{Day, DayCounts, FailureKey, PolicyKey, ResultType};
use serde_json::Value;

/// A day long past: its report is due at once whatever the random delay.
const OLD_DAY: &str = "2026-03-01";

struct World(mtasts_fixtures::world::World);

impl std::ops::Deref for World {
    type Target = mtasts_fixtures::world::World;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

fn openssl(args: &[&str]) -> Vec<u8> {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("openssl is needed to make test DKIM keys: {e}"));
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

/// The key's TXT record, from openssl's view of the public key (not mtasts's).
fn record_of(key: &Path, ed25519: bool) -> String {
    let spki = openssl(&["pkey", "-in", &key.to_string_lossy(), "-pubout", "-outform", "DER"]);
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    if ed25519 {
        // RFC 8463: p= is the raw 32-octet key, the end of the SubjectPublicKeyInfo.
        format!("v=DKIM1; k=ed25519; s=tlsrpt; p={}", b64.encode(&spki[spki.len() - 32..]))
    } else {
        format!("v=DKIM1; k=rsa; s=tlsrpt; p={}", b64.encode(&spki))
    }
}

impl World {
    /// A world whose reports for `dest.test` go to `mailto:reports@dest.test` through a
    /// `sendmail` stand-in (`sendmail_body`, a shell script body), with `report_extra` in
    /// `[report]` and `tail` after it.
    fn new(name: &str, sendmail_body: &str, report_extra: &str, tail: &str) -> Self {
        let w = Self(mtasts_fixtures::world::World::start(&format!("report-mail-{name}")).expect("fixtures"));
        let sendmail = w.path("sendmail.sh");
        std::fs::write(
            &sendmail,
            format!("#!/bin/sh\n{}\n", sendmail_body.replace("DIR", &w.dir.to_string_lossy())),
        )
        .expect("script");
        std::fs::set_permissions(&sendmail, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod");
        w.write_config(&format!(
            "[cache]\npath = \"{}\"\n[report]\norganization = \"Test Sender\"\ncontact = \"tlsrpt@sender.test\"\n\
             sendmail = [\"{}\"]\n{report_extra}\n{tail}",
            w.path("store.sqlite").display(),
            sendmail.display()
        ));
        w.dns.set_txt1("_smtp._tls.dest.test", &["v=TLSRPTv1; rua=mailto:reports@dest.test"]);
        w
    }

    /// Counts a few sessions with `dest.test` on `day` straight into the store.
    fn count(&self, day: &str) {
        let store = SqliteStore::open(&self.path("store.sqlite"), 300).expect("store");
        let body = "version: STSv1\nmode: enforce\nmx: mx.dest.test\nmax_age: 86400\n";
        let policy = Policy::parse(body.as_bytes()).expect("policy");
        let key = PolicyKey::sts_from_body(body.as_bytes(), &policy);
        let domain = Domain::parse("dest.test").expect("domain");
        let mut counts = DayCounts::new();
        counts.add_success(&domain, &key, 7);
        counts.add_failure(
            &domain,
            &key,
            FailureKey::new(ResultType::CertificateExpired, Some(Domain::parse("mx.dest.test").expect("mx"))),
            2,
        );
        store.add_report_counts(Day::parse(day).expect("day"), &counts).expect("counts");
    }

    fn mtasts(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_mtasts"))
            .args(args)
            .env("MTASTS_CONFIG", self.config_path())
            .output()
            .expect("run")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.mtasts(args);
        assert!(
            out.status.success(),
            "mtasts {args:?}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn mails(&self) -> Vec<PathBuf> {
        let mut mails: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .expect("dir")
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "eml"))
            .collect();
        mails.sort();
        mails
    }

    /// dkimpy's verdict on a message file, with the key from the DNS fixture.
    fn dkimpy(&self, message: &Path) -> Value {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tlsrpt/dkim_verify.py");
        let out = Command::new("python3")
            .arg(script)
            .arg(message)
            .arg(self.dns.addr().to_string())
            .output()
            .unwrap_or_else(|e| panic!("python3 with dkimpy is needed: {e}"));
        assert!(
            out.status.success(),
            "dkim_verify.py failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("JSON")
    }
}

const KEEP_MAIL: &str = "cat > DIR/mail.$$.eml";

/// A world signing with a fresh key (`rsa` or `ed25519`), the key published in the DNS fixture.
fn signing_world(name: &str, algorithm: &str) -> World {
    let w = World::new(
        name,
        KEEP_MAIL,
        "send_delay_max_s = 14400",
        &format!(
            "[report.dkim]\ndomain = \"sender.test\"\nselector = \"rpt2026\"\nkey_file = \"{}/dkim.pem\"\n",
            std::env::temp_dir().join(format!("mtasts-report-mail-{name}-{}", std::process::id())).display()
        ),
    );
    let key = w.path("dkim.pem");
    let keygen: &[&str] = if algorithm == "rsa" {
        &["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"]
    } else {
        &["genpkey", "-algorithm", "ed25519"]
    };
    std::fs::write(&key, openssl(keygen)).expect("key");
    let record = record_of(&key, algorithm == "ed25519");
    let strings: Vec<&str> =
        record.as_bytes().chunks(255).map(|c| std::str::from_utf8(c).expect("ASCII")).collect();
    w.dns.set_txt("rpt2026._domainkey.sender.test", &[&strings]);
    // `mtasts report dkim-record` prints the same record (from ring's view of the key).
    let printed = w.ok(&["report", "dkim-record"]);
    let joined: String = printed.split('"').skip(1).step_by(2).collect();
    assert!(printed.starts_with("rpt2026._domainkey.sender.test. IN TXT ("), "{printed}");
    assert_eq!(joined, record);
    w
}

fn sent_one_report(w: &World) -> PathBuf {
    w.count(OLD_DAY);
    let built = w.ok(&["report", "build", "--date", OLD_DAY]);
    assert!(built.contains("dest.test: report"), "{built}");
    w.ok(&["report", "send"]);
    let mails = w.mails();
    assert_eq!(mails.len(), 1, "{mails:?}");
    mails[0].clone()
}

/// RPT-12, RPT-22: an RSA-SHA256 signature that dkimpy verifies (strict TLSRPT mode: the key
/// record says `s=tlsrpt`), the `TLS-Report-*` headers signed, no `l=`; `TLS-Required: No`.
/// A changed header, a second `TLS-Report-Domain`, `TLS-Report-Submitter` or `From` (below or
/// above the signed one: over-signing) or a changed body breaks it.
#[test]
fn rpt_12_22_mailed_report_verifies_with_dkimpy_rsa() {
    let w = signing_world("rsa", "rsa");
    let mail = sent_one_report(&w);
    let text = std::fs::read_to_string(&mail).expect("mail");
    assert!(text.starts_with("DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed;"), "{text}");
    assert!(text.contains("\nTLS-Required: No\n"), "RPT-22: {text}");
    let verdict = w.dkimpy(&mail);
    assert_eq!(verdict["verified"], true, "{verdict}");
    let tags = &verdict["tags"];
    assert_eq!(tags["d"], "sender.test");
    assert_eq!(tags["s"], "rpt2026");
    assert!(tags.get("l").is_none(), "no l= (RFC 8460 §3): {tags}");
    let h: Vec<&str> = tags["h"].as_str().expect("h").split(':').collect();
    for name in
        ["from", "tls-report-domain", "tls-report-submitter", "tls-required", "subject", "content-type"]
    {
        assert!(h.contains(&name), "{name} signed: {h:?}");
    }

    let tamper = |name: &str, from: &str, to: &str| {
        assert!(text.contains(from), "{from}");
        let path = w.path(name);
        std::fs::write(&path, text.replacen(from, to, 1)).expect("write");
        let verdict = w.dkimpy(&path);
        assert_eq!(verdict["verified"], false, "{name}: {verdict}");
    };
    tamper("domain.txt", "TLS-Report-Domain: dest.test", "TLS-Report-Domain: other.test");
    tamper("added.txt", "TLS-Required: No\n", "TLS-Required: No\nTLS-Report-Domain: other.test\n");
    // Added above the signed one, a second instance is only caught because `h=` names the field
    // once more than it occurs (over-signing): a verifier takes instances from the bottom up.
    for field in ["TLS-Report-Domain: other.test", "TLS-Report-Submitter: other.test", "From: x@other.test"] {
        tamper("above.txt", "DKIM-Signature:", &format!("{field}\nDKIM-Signature:"));
    }
    tamper("required.txt", "TLS-Required: No", "TLS-Required: Yes");
    tamper("body.txt", "7 successful sessions", "8 successful sessions");
    // Whitespace changes an MTA may make leave it valid (relaxed canonicalization).
    let path = w.path("spaces.txt");
    std::fs::write(
        &path,
        text.replacen("TLS-Report-Domain: dest.test", "TLS-Report-Domain:   dest.test  ", 1),
    )
    .expect("write");
    assert_eq!(w.dkimpy(&path)["verified"], true);
}

/// RPT-12: Ed25519-SHA256 (RFC 8463) signatures verify too.
#[test]
fn rpt_12_mailed_report_verifies_with_dkimpy_ed25519() {
    let w = signing_world("ed25519", "ed25519");
    let mail = sent_one_report(&w);
    let text = std::fs::read_to_string(&mail).expect("mail");
    assert!(text.starts_with("DKIM-Signature: v=1; a=ed25519-sha256;"), "{text}");
    let verdict = w.dkimpy(&mail);
    assert_eq!(verdict["verified"], true, "{verdict}");
}

/// RPT-12: a `[report.dkim]` key that is missing or unusable stops `report send` before any
/// report goes out unsigned, with a message naming the table; unknown keys are refused.
#[test]
fn rpt_12_bad_dkim_keys_are_clear_errors() {
    let key = std::env::temp_dir().join(format!("mtasts-report-mail-badkey-{}.pem", std::process::id()));
    let cases = [
        (
            "missing",
            "domain = \"sender.test\"\nselector = \"s\"\nkey_file = \"/nonexistent/dkim.pem\"",
            "cannot read /nonexistent/dkim.pem",
        ),
        (
            "garbage",
            &*format!("domain = \"sender.test\"\nselector = \"s\"\nkey_file = \"{}\"", key.display()),
            "no private key",
        ),
        (
            "selector",
            &*format!("domain = \"sender.test\"\nselector = \"a b\"\nkey_file = \"{}\"", key.display()),
            "selector \"a b\"",
        ),
    ];
    std::fs::write(&key, "not a key\n").expect("key");
    for (name, table, expected) in cases {
        let w = World::new(&format!("bad-{name}"), KEEP_MAIL, "", &format!("[report.dkim]\n{table}\n"));
        w.count(OLD_DAY);
        w.ok(&["report", "build", "--date", OLD_DAY]);
        let out = w.mtasts(&["report", "send"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}: {stderr}");
        assert!(stderr.contains("[report.dkim]") && stderr.contains(expected), "{name}: {stderr}");
        assert!(w.mails().is_empty(), "{name}: nothing sent unsigned");
    }
    let w = World::new(
        "bad-unknown",
        KEEP_MAIL,
        "",
        "[report.dkim]\ndomain = \"a.test\"\nselector = \"s\"\nkey_file = \"k\"\nl = 100\n",
    );
    let out = w.mtasts(&["report", "list"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown field `l`"), "{out:?}");
    let _ = std::fs::remove_file(key);
}

/// RPT-22: unsigned reports (no `[report.dkim]`) carry `TLS-Required: No` as well.
#[test]
fn rpt_22_unsigned_report_says_tls_not_required() {
    let w = World::new("unsigned", KEEP_MAIL, "", "");
    let mail = sent_one_report(&w);
    let text = std::fs::read_to_string(mail).expect("mail");
    assert!(!text.contains("DKIM-Signature"), "{text}");
    assert!(text.contains("\nTLS-Required: No\n"), "{text}");
}

/// `YYYY-MM-DDTHH:MM:SSZ` as Unix seconds.
fn unix(t: &str) -> u64 {
    let day = Day::parse(&t[..10]).unwrap_or_else(|| panic!("{t}"));
    let n = |r: std::ops::Range<usize>| t[r].parse::<u64>().unwrap_or_else(|_| panic!("{t}"));
    day.start() + n(11..13) * 3600 + n(14..16) * 60 + n(17..19)
}

/// The `due` time `mtasts report list` prints for the only queued report.
fn listed_due(w: &World) -> String {
    let list = w.ok(&["report", "list"]);
    let line = list.lines().next().unwrap_or_else(|| panic!("a queued report: {list}"));
    line.rsplit("next ").next().expect("next").to_owned()
}

/// RPT-23: a report of yesterday is first due at a random point in the 4 hours after the day
/// ends; the draw is kept in the store, so building again (as after a restart) does not change
/// it, and `report send` before then sends nothing. Draws differ between reports.
#[test]
fn rpt_23_first_send_is_spread_after_the_day_and_kept() {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
    let yesterday = Day::from_unix(now).previous();
    let date = &yesterday.start_datetime()[..10];
    let w = World::new("delay", KEEP_MAIL, "send_delay_max_s = 14400", "");
    w.count(date);
    let built = w.ok(&["report", "build", "--date", date]);
    let due = listed_due(&w);
    assert!(built.contains(&format!("due {due}")), "{built}");
    let due_secs = unix(&due);
    let day_end = yesterday.end() + 1;
    assert!((day_end..=day_end + 14_400).contains(&due_secs) || due_secs >= now - 5, "{due}");
    // Rebuilding leaves the queued report, and its due time, alone.
    let again = w.ok(&["report", "build", "--date", date]);
    assert!(again.contains("already queued"), "{again}");
    assert_eq!(listed_due(&w), due);
    if due_secs > now + 60 {
        w.ok(&["report", "send"]);
        assert!(w.mails().is_empty(), "not due before {due}");
    }
    // The library's rule, with chosen draws: uniform over the window, never before now.
    use mtasts::tlsrpt::pipeline::first_due;
    let old = Day::parse(OLD_DAY).expect("day");
    let end = old.end() + 1;
    assert_eq!(first_due(old, end - 100, 14_400, 0), end);
    assert_eq!(first_due(old, end - 100, 14_400, 14_400), end + 14_400);
    assert_eq!(first_due(old, end - 100, 14_400, 14_401), end);
    assert_eq!(first_due(old, end + 20_000, 14_400, 7), end + 20_000, "late builds are due at once");
    assert_eq!(first_due(old, end - 100, 0, 99), end - 100, "0 turns spreading off");
}

/// RPT-24: a mail destination whose mail command says "no such user" (exit 67) refuses a report
/// for good: it is not retried for that report, and after 2 such reports in a row (configured)
/// it is suppressed for a day: the third report is not sent to it, and `report list` says so.
/// A temporary failure (exit 75) neither counts nor suppresses.
#[test]
fn rpt_24_a_destination_that_keeps_refusing_is_suppressed() {
    let w = World::new(
        "suppress",
        "cat > /dev/null\necho 'reports@dest.test... User unknown' >&2\nexit 67",
        "send_delay_max_s = 0\nsuppress_after_failures = 2\nsuppress_for_s = 86400",
        "",
    );
    let days = ["2026-03-01", "2026-03-02", "2026-03-03"];
    for day in &days[..2] {
        w.count(day);
        w.ok(&["report", "build", "--date", day]);
        let out = w.mtasts(&["report", "send"]);
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("exit status 67") && stderr.contains("given up"), "{stderr}");
        // Refused for good: a forced retry does not try it again.
        let again = w.mtasts(&["report", "send", "--force"]);
        assert!(String::from_utf8_lossy(&again.stdout).is_empty(), "{again:?}");
    }
    let list = w.ok(&["report", "list"]);
    assert!(list.contains("refused by mailto:reports@dest.test"), "{list}");
    assert!(
        list.contains("suppressed mailto:reports@dest.test until ")
            && list.contains("after 2 refused reports: ")
            && list.contains("User unknown"),
        "{list}"
    );
    // The third report is not sent there: nothing else to try, so it is done, undelivered.
    let calls = w.path("calls");
    std::fs::write(
        w.path("sendmail.sh"),
        format!("#!/bin/sh\necho call >> {}\ncat > /dev/null\nexit 67\n", calls.display()),
    )
    .expect("script");
    w.count(days[2]);
    w.ok(&["report", "build", "--date", days[2]]);
    let out = w.mtasts(&["report", "send"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(!calls.exists(), "the mail command is not run for a suppressed destination");
    let list = w.ok(&["report", "list"]);
    assert!(list.contains("not sent to mailto:reports@dest.test (suppressed)"), "{list}");

    // Temporary failures do not suppress.
    let t = World::new(
        "tempfail",
        "cat > /dev/null\nexit 75",
        "send_delay_max_s = 0\nsuppress_after_failures = 1\nsuppress_for_s = 86400",
        "",
    );
    t.count(OLD_DAY);
    t.ok(&["report", "build", "--date", OLD_DAY]);
    assert_eq!(t.mtasts(&["report", "send"]).status.code(), Some(1));
    let list = t.ok(&["report", "list"]);
    assert!(list.contains("pending, 1 attempts") && !list.contains("suppressed"), "{list}");
}

/// RPT-25 in SQLite: several `mtasts report send` processes started together on one host send
/// a report once; the claim itself: held by one, and refused to a process whose view of the
/// report is older than the last attempt.
#[test]
fn rpt_25_concurrent_senders_on_sqlite_send_once() {
    use mtasts::cache::OutboxStore;
    let w = World::new("claim", KEEP_MAIL, "send_delay_max_s = 0", "");
    w.count(OLD_DAY);
    w.ok(&["report", "build", "--date", OLD_DAY]);
    let senders: Vec<_> = (0..4)
        .map(|_| {
            Command::new(env!("CARGO_BIN_EXE_mtasts"))
                .args(["report", "send"])
                .env("MTASTS_CONFIG", w.config_path())
                .stdout(std::process::Stdio::null())
                .spawn()
                .expect("send")
        })
        .collect();
    for mut s in senders {
        assert!(s.wait().expect("wait").success());
    }
    assert_eq!(w.mails().len(), 1, "sent once");

    w.count("2026-03-02");
    w.ok(&["report", "build", "--date", "2026-03-02"]);
    let store = SqliteStore::open(&w.path("store.sqlite"), 300).expect("store");
    let item = store.outbox().expect("outbox").into_iter().find(|i| !i.state.done).expect("pending");
    let now = item.state.next_attempt_at + 1;
    assert!(store.outbox_claim(&item.report_id, &item.state, now, 600).expect("claim"));
    assert!(!store.outbox_claim(&item.report_id, &item.state, now, 600).expect("claim"), "held");
    assert!(store.outbox_claim(&item.report_id, &item.state, now + 601, 600).expect("claim"), "lease over");
    let mut state = item.state.clone();
    state.record_result(now, Err("HTTP 503".into()), &mtasts::tlsrpt::RetrySchedule::default());
    store.outbox_update(&item.report_id, &state).expect("update");
    assert!(!store.outbox_claim(&item.report_id, &item.state, now, 600).expect("claim"), "stale view");
    assert!(store.outbox_claim(&item.report_id, &state, now, 600).expect("claim"), "current view");
}
