//! The log (docs: README "Logging"): `[log] level` and `[log] format`, through the real `mtasts`
//! binary against the local fixtures. At `info` each check writes one decision line, and each
//! discovery one line; with `format = "json"` every line on standard error is one JSON object.

use std::process::{Command, Output};

use mtasts_fixtures::world::{World, policy};
use serde_json::Value;

fn world(name: &str, log: &str) -> World {
    let w = World::start(&format!("log-{name}")).expect("fixtures");
    w.write_config_text(&format!("{}[cache]\npath = \"memory\"\n[log]\n{log}", w.base_config(true)));
    w.publish("example.test", "1", &policy("enforce", &["mx.example.test"]));
    w
}

fn check(w: &World, domain: &str, mx: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mtasts"))
        .args(["check", domain, "--mx", mx, "--config"])
        .arg(w.config_path())
        .output()
        .expect("run mtasts")
}

fn json_lines(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect()
}

#[test]
fn json_decision_and_discovery_lines_at_info() {
    let w = world("json", "level = \"info\"\nformat = \"json\"\n");
    let out = check(&w, "example.test", "mx.example.test");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines = json_lines(&out);
    let decision = lines
        .iter()
        .find(|l| l["target"] == "mtasts::decision")
        .unwrap_or_else(|| panic!("no decision line in {lines:?}"));
    assert_eq!(decision["level"], "INFO");
    let f = &decision["fields"];
    assert_eq!(f["domain"], "example.test");
    assert_eq!(f["mx"], "mx.example.test");
    assert_eq!(f["verdict"], "pass");
    assert_eq!(f["mode"], "enforce");
    assert_eq!(f["policy_id"], "1");
    // `mtasts check` resolves the policy before it checks each MX: the check finds it in memory.
    assert_eq!(f["source"], "memory");
    assert_eq!(f["dane"], "not-applicable");
    assert_eq!(f["stage"], "before-connect");
    let discovery = lines.iter().find(|l| l["target"] == "mtasts::discovery").expect("a discovery line");
    assert_eq!(discovery["fields"]["record"], "found");
    assert_eq!(discovery["fields"]["fetch"], "fetched");

    // An unlisted MX: the decision says why.
    let out = check(&w, "example.test", "other.example.test");
    let lines = json_lines(&out);
    let f = &lines.iter().find(|l| l["target"] == "mtasts::decision").expect("decision")["fields"];
    assert_eq!((f["verdict"].as_str(), f["reason"].as_str()), (Some("fail-enforce"), Some("mx-mismatch")));
}

#[test]
fn warn_level_by_default_says_nothing_for_a_good_check() {
    let w = world("quiet", "");
    let out = check(&w, "example.test", "mx.example.test");
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stderr), "", "no line below warn");
}

#[test]
fn text_lines_name_the_fields() {
    let w = world("text", "level = \"info\"\n");
    let out = check(&w, "example.test", "mx.example.test");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stderr.lines().find(|l| l.contains("mtasts::decision")).expect("decision line");
    assert!(line.contains(" INFO "), "{line}");
    for field in ["domain=\"example.test\"", "verdict=\"pass\"", "source=\"memory\""] {
        assert!(line.contains(field), "{field} in {line}");
    }
}

#[test]
fn a_bad_log_setting_is_a_configuration_error() {
    let w = world("bad", "level = \"loud\"\n");
    let out = check(&w, "example.test", "mx.example.test");
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("loud"));
}

#[test]
fn syslog_target_sends_one_message_per_line_with_facility_mail() {
    use std::os::unix::net::UnixDatagram;
    let dir = std::env::temp_dir().join(format!("mtasts-syslog-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let socket_path = dir.join("log");
    let socket = UnixDatagram::bind(&socket_path).expect("bind a syslog socket");
    socket.set_read_timeout(Some(std::time::Duration::from_secs(10))).expect("timeout");
    let w = world(
        "syslog",
        &format!("level = \"info\"\ntarget = \"syslog\"\nsyslog_socket = \"{}\"\n", socket_path.display()),
    );
    let out = check(&w, "example.test", "mx.example.test");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stderr), "", "nothing on stderr with target = syslog");
    let mut messages = Vec::new();
    let mut buf = vec![0u8; 65536];
    socket.set_nonblocking(false).expect("blocking");
    while let Ok(n) = socket.recv(&mut buf) {
        messages.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        if messages.iter().any(|m| m.contains("mtasts::decision")) {
            break;
        }
    }
    let decision = messages.iter().find(|m| m.contains("mtasts::decision")).expect("a decision message");
    // RFC 3164: <PRI> with facility mail (2) and severity info (6): 2 * 8 + 6 = 22.
    assert!(decision.starts_with("<22>"), "{decision}");
    assert!(decision.contains("mtasts["), "process name and pid: {decision}");
    assert!(decision.contains("verdict=\"pass\""), "{decision}");
    let _ = std::fs::remove_dir_all(&dir);
}
