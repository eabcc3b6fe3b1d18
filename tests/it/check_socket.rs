//! `[serve] check_socket` (decision D36, docs/architecture.md "Checks handed to mtasts serve"):
//! the library's engines (here Exim's entry points with `{config=...}`, the calls Exim makes in
//! each delivery process) hand their checks to a running `mtasts serve`, which judges and counts
//! them; when it cannot be reached the process judges them itself, with the same answers.

use std::ffi::{CStr, CString, c_int, c_uchar};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mtasts::Dane;
use mtasts::engine::Tls;
use mtasts::remote::{Answer, Remote, Request};
use mtasts_fixtures::pki::pki;
use mtasts_fixtures::world::{World, policy};

type Dlfunc = unsafe extern "C" fn(*mut *mut c_uchar, c_int, *mut *mut c_uchar) -> c_int;

/// Calls an Exim entry point as Exim's `${dlfunc...}` does: its return code and `*yield`.
fn exim(f: Dlfunc, args: &[&str]) -> (c_int, String) {
    let owned: Vec<CString> = args.iter().map(|a| CString::new(*a).expect("no NUL")).collect();
    let mut argv: Vec<*mut c_uchar> = owned.iter().map(|c| c.as_ptr() as *mut c_uchar).collect();
    let mut out: *mut c_uchar = std::ptr::null_mut();
    let argc = c_int::try_from(argv.len()).expect("argc");
    // SAFETY: argv holds argc NUL-terminated strings that outlive the call; out is writable.
    let code = unsafe { f(&mut out, argc, argv.as_mut_ptr()) };
    // SAFETY: the entry points set *yield to a NUL-terminated string they keep alive.
    let text = if out.is_null() {
        String::new()
    } else {
        unsafe { CStr::from_ptr(out.cast()) }.to_string_lossy().into_owned()
    };
    (code, text)
}

/// The calls of one delivery to an `enforce` domain, through Exim's entry points under the
/// configuration `with_config` (`config=PATH`): its mode, an unlisted MX refused, the listed
/// MX's `chain` passing.
fn delivery_calls(with_config: &str, chain: &str) {
    use mtasts::ffi::exim::{mtasts_exim_check, mtasts_exim_mode, mtasts_exim_mx_ok};
    assert_eq!(exim(mtasts_exim_mode, &["enforce.test", with_config]), (0, "enforce".into()));
    assert_eq!(
        exim(mtasts_exim_mx_ok, &["enforce.test", "mx.elsewhere.test", with_config]),
        (0, "no".into())
    );
    assert_eq!(
        exim(mtasts_exim_check, &["enforce.test", "mx.enforce.test", chain, with_config]),
        (0, "pass".into())
    );
}

fn world(name: &str) -> World {
    let world = World::start(&format!("check-socket-{name}")).expect("fixtures");
    world.publish("enforce.test", "e1", &policy("enforce", &["mx.enforce.test"]));
    world.publish("testing.test", "t1", &policy("testing", &["mx.testing.test"]));
    world
}

/// A running `mtasts serve` with its store at `store` (`--cache`, so that the configuration's
/// own `[cache] path` is the one a process judging for itself would open).
struct Serve(Child);

impl Serve {
    fn start(config: &Path, store: &Path, socket: &Path) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_mtasts"))
            .args(["serve", "--listen", "inet:127.0.0.1:0", "--config"])
            .arg(config)
            .arg("--cache")
            .arg(store)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mtasts serve");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        while !line.starts_with("checks on ") {
            line.clear();
            assert!(
                stdout.read_line(&mut line).expect("read") > 0,
                "mtasts serve ended before its check socket"
            );
        }
        assert_eq!(line.trim(), format!("checks on unix:{}", socket.display()));
        Self(child)
    }

    /// Stops the server with SIGTERM and waits for it (it writes its counts on the way out).
    fn stop(mut self) {
        let pid = self.0.id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().expect("kill").success());
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.0.try_wait().expect("wait").is_none() {
            assert!(Instant::now() < deadline, "mtasts serve did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn sessions(store: &Path, domain: &str) -> i64 {
    let c = rusqlite::Connection::open(store).expect("open store");
    c.query_row("SELECT COALESCE(SUM(sessions), 0) FROM tlsrpt_counts WHERE domain = ?1", [domain], |r| {
        r.get(0)
    })
    .expect("count")
}

/// The Exim calls of a delivery, answered by `mtasts serve`: the process opens no store of its
/// own (the configuration's `[cache] path` is never created), and the sessions are counted in the
/// server's store.
#[test]
fn exim_calls_are_judged_and_counted_by_serve() {
    let world = world("served");
    let (socket, own_store, served_store) =
        (world.path("check.sock"), world.path("own.sqlite"), world.path("served.sqlite"));
    let config = world.write_config(&format!(
        "[cache]\npath = \"{}\"\n[serve]\ncheck_socket = \"{}\"\nrefresh_interval_s = 0\n",
        own_store.display(),
        socket.display()
    ));
    let serve = Serve::start(&config, &served_store, &socket);
    let with_config = format!("config={}", config.display());
    let chain = pki().leaf(&["mx.enforce.test"]).pem();
    let bad = pki().leaf(&["other.test"]).pem();
    use mtasts::ffi::exim::{mtasts_exim_check, mtasts_exim_mode, mtasts_exim_mx_ok, mtasts_exim_record};
    delivery_calls(&with_config, &chain);
    assert_eq!(exim(mtasts_exim_mode, &["testing.test", &with_config]), (0, "testing".into()));
    assert_eq!(exim(mtasts_exim_mode, &["nothing.test", &with_config]), (0, "none".into()));
    assert_eq!(
        exim(mtasts_exim_mx_ok, &["enforce.test", "mx.enforce.test", &with_config]),
        (0, "yes".into())
    );
    assert_eq!(
        exim(mtasts_exim_check, &["enforce.test", "mx.enforce.test", &bad, &with_config]),
        (0, "fail-enforce".into())
    );
    assert_eq!(
        exim(mtasts_exim_record, &["testing.test", "mx.testing.test", "success", &with_config]),
        (0, String::new())
    );
    // A bad argument is judged in process, which gives the engine's own error.
    let (code, message) = exim(mtasts_exim_check, &["not a domain", "mx", "", &with_config]);
    assert_ne!(code, 0, "{message}");
    assert!(message.contains("mtasts:"), "{message}");
    serve.stop();
    assert_eq!(sessions(&served_store, "enforce.test"), 2, "the two checks with a chain");
    assert_eq!(sessions(&served_store, "testing.test"), 1, "the recorded session");
    // The bad argument above built this process's engine (it found the error); it judged nothing
    // else, and its counts (none) are written only at exit.
}

/// A served outcome is the outcome the process's own engine gives: verdict, reason, MX match,
/// detail, policy and override (DANE's part crosses the wire in `remote::tests`).
#[test]
fn served_outcomes_are_the_engines_own() {
    let world = world("same");
    let (socket, store) = (world.path("check.sock"), world.path("served.sqlite"));
    let config = world
        .write_config(&format!("[serve]\ncheck_socket = \"{}\"\nrefresh_interval_s = 0\n", socket.display()));
    let serve = Serve::start(&config, &store, &socket);
    let loaded = mtasts::config::Config::from_file(&config).expect("config");
    let remote = Remote::new(&socket, Duration::from_secs(20), loaded.identity());
    let local = loaded.build_engine().expect("engine");
    let good = pki().leaf(&["mx.enforce.test"]).der_concat();
    let expired = pki().leaf_with(&["mx.enforce.test"], (2020, 1, 1), (2021, 1, 1), true).pem();
    let cases: Vec<(&str, &str, Tls<'_>)> = vec![
        ("enforce.test", "mx.enforce.test", Tls::Chain(&good)),
        ("enforce.test", "mx.enforce.test", Tls::Chain(expired.as_bytes())),
        ("enforce.test", "mx.enforce.test", Tls::NotNegotiated),
        ("enforce.test", "mx.other.test", Tls::NotChecked),
        ("testing.test", "mx.enforce.test", Tls::Chain(&good)),
        ("nothing.test", "mx.nothing.test", Tls::NotNegotiated),
        ("[192.0.2.1]", "mx.enforce.test", Tls::NotNegotiated),
        ("pinned.test", "mx.other.test", Tls::Chain(&good)),
        ("skipped.test", "mx.enforce.test", Tls::NotNegotiated),
    ];
    for (domain, mx, tls) in cases {
        let Ok(Answer::Judged(served)) =
            remote.ask(&Request::Check { domain, mx, tls, dane: Dane::NotApplicable })
        else {
            panic!("{domain} {mx}: no outcome from mtasts serve")
        };
        let own = local.check_with(domain, mx, tls, Dane::NotApplicable).expect("check");
        let key = |o: &mtasts::Outcome| {
            (
                o.verdict,
                o.reason,
                o.mx_matches,
                o.detail.clone(),
                o.policy.as_ref().map(|p| (p.id.clone(), p.text.clone())),
            )
        };
        assert_eq!(key(&served), key(&own), "{domain} {mx}");
    }
    // A request that is no check request (a socketmap lookup sent to the wrong socket) is
    // answered with the reason, never judged.
    let mut stream = std::os::unix::net::UnixStream::connect(&socket).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    std::io::Write::write_all(&mut stream, b"23:mtasts enforce.test.x.y,").expect("write");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while byte[0] != b':' {
        std::io::Read::read_exact(&mut stream, &mut byte).expect("read");
        head.push(byte[0]);
    }
    let len: usize = String::from_utf8_lossy(&head[..head.len() - 1]).parse().expect("length");
    let mut answer = vec![0u8; len + 1];
    std::io::Read::read_exact(&mut stream, &mut answer).expect("read");
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.contains("mtasts-check/1")
            && answer.contains("5:error")
            && answer.contains("not a check request"),
        "{answer}"
    );
    serve.stop();
}

/// Without a server at the socket, the process judges its checks itself and counts them in its own
/// store: the setting never makes a check weaker.
#[test]
fn without_serve_the_process_judges_itself() {
    let world = world("alone");
    let (socket, own_store) = (world.path("nobody.sock"), world.path("own.sqlite"));
    let config = world.write_config(&format!(
        "[cache]\npath = \"{}\"\n[serve]\ncheck_socket = \"{}\"\n",
        own_store.display(),
        socket.display()
    ));
    let with_config = format!("config={}", config.display());
    let chain = pki().leaf(&["mx.enforce.test"]).pem();
    delivery_calls(&with_config, &chain);
    assert!(own_store.exists(), "the process opened its own store");
    // A file that is no socket at the path: the same. (Through a copy of the configuration: this
    // process's front for the first one does not try the socket again for 30 s.)
    use mtasts::ffi::exim::mtasts_exim_check;
    std::fs::write(&socket, "not a socket").expect("write");
    let copy = world.path("copy.toml");
    std::fs::copy(&config, &copy).expect("copy");
    let with_copy = format!("config={}", copy.display());
    assert_eq!(
        exim(mtasts_exim_check, &["enforce.test", "mx.enforce.test", &chain, &with_copy]),
        (0, "pass".into())
    );
}

/// A configuration other than the server's (another file naming the same socket, or the file
/// changed since the server read it) is not judged by the server: the process judges with its own,
/// so an override it has applies.
#[test]
fn another_configuration_is_judged_in_process() {
    let world = world("other");
    let (socket, store, own_store) =
        (world.path("check.sock"), world.path("served.sqlite"), world.path("own.sqlite"));
    let config = world
        .write_config(&format!("[serve]\ncheck_socket = \"{}\"\nrefresh_interval_s = 0\n", socket.display()));
    let serve = Serve::start(&config, &store, &socket);
    let other = world.path("other.toml");
    std::fs::write(
        &other,
        format!(
            "{}[cache]\npath = \"{}\"\n[serve]\ncheck_socket = \"{}\"\n[override.\"enforce.test\"]\nmode = \"none\"\n",
            world.base_config(true),
            own_store.display(),
            socket.display()
        ),
    )
    .expect("other config");
    use mtasts::ffi::exim::mtasts_exim_mode;
    assert_eq!(
        exim(mtasts_exim_mode, &["enforce.test", &format!("config={}", config.display())]),
        (0, "enforce".into())
    );
    assert_eq!(
        exim(mtasts_exim_mode, &["enforce.test", &format!("config={}", other.display())]),
        (0, "none".into())
    );
    assert!(own_store.exists(), "judged in process, with its own store");
    serve.stop();
}

/// `check_socket` must be an absolute path: the library and the server must agree on it whatever
/// their working directories.
#[test]
fn a_relative_check_socket_is_refused() {
    let e = mtasts::config::Config::parse("[serve]\ncheck_socket = \"run/check.sock\"\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("[serve] check_socket") && e.contains("absolute path"), "{e}");
    let long = format!("/{}", "x".repeat(107));
    let e = mtasts::config::Config::parse(&format!("[serve]\ncheck_socket = \"{long}\"\n"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("at most 107 bytes"), "{e}");
}

/// `mtasts doctor` says whether `mtasts serve` answers on the check socket: a warning when it does
/// not (the library then judges its checks itself), `ok` when it does.
#[test]
fn doctor_checks_the_check_socket() {
    let world = world("doctor");
    let (socket, store) = (world.path("check.sock"), world.path("served.sqlite"));
    let config = world
        .write_config(&format!("[serve]\ncheck_socket = \"{}\"\nrefresh_interval_s = 0\n", socket.display()));
    let line = || {
        let out = Command::new(env!("CARGO_BIN_EXE_mtasts"))
            .arg("doctor")
            .arg("--config")
            .arg(&config)
            .output()
            .expect("doctor");
        let out = String::from_utf8_lossy(&out.stdout).into_owned();
        out.lines()
            .find(|l| l.contains("check socket: "))
            .unwrap_or_else(|| panic!("no check socket line in {out}"))
            .to_owned()
    };
    let down = line();
    assert!(
        down.starts_with("warn")
            && down.contains("cannot connect")
            && down.contains("judges its checks itself"),
        "{down}"
    );
    let serve = Serve::start(&config, &store, &socket);
    let up = line();
    assert!(up.starts_with("ok") && up.contains("answers the library's checks"), "{up}");
    serve.stop();
}

/// docs/architecture.md §3, "Checks handed to mtasts serve": a process answering at the check
/// socket that runs neither as root, nor as the caller's user, nor as the owner of the socket's
/// directory is not asked, whatever it would answer (here a well-formed `pass`): another user who
/// could put a socket there (a shared, sticky directory) decides nothing. Needs root, to run
/// that server as `nobody` (CI runs as root).
#[test]
fn a_server_of_another_user_is_not_asked() {
    use std::os::unix::fs::PermissionsExt as _;
    // SAFETY: geteuid has no preconditions.
    assert!(
        unsafe { libc::geteuid() } == 0,
        "this test runs a server as another user and needs root (CI runs as root)"
    );
    let dir = std::env::temp_dir().join(format!("mtasts-check-socket-foreign-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let shared = dir.join("shared");
    std::fs::create_dir_all(&shared).expect("dir");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    // Root's directory, writable by all, as /tmp is.
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).expect("chmod");
    let socket = shared.join("check.sock");
    // A well-formed answer: `pass`, no policy.
    let mut payload = Vec::new();
    mtasts::remote::put(&mut payload, mtasts::remote::FORM);
    mtasts::remote::put(&mut payload, b"ok");
    mtasts::remote::encode_outcome(
        &mtasts::Outcome {
            verdict: mtasts::Verdict::Pass,
            reason: mtasts::Reason::None,
            policy: None,
            mx_matches: true,
            detail: None,
            dane: None,
            overridden: None,
        },
        &mut payload,
    );
    let mut answer = Vec::new();
    mtasts::remote::put(&mut answer, &payload);
    let answer_file = dir.join("answer");
    std::fs::write(&answer_file, &answer).expect("answer");
    std::fs::set_permissions(&answer_file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let script = format!(
        "import socket\ns = socket.socket(socket.AF_UNIX)\ns.bind({sock:?})\ns.listen(4)\n\
         answer = open({ans:?}, 'rb').read()\ns.settimeout(30)\nc, _ = s.accept()\nc.recv(65536)\nc.sendall(answer)\nc.close()\n",
        sock = socket.display().to_string(),
        ans = answer_file.display().to_string()
    );
    // setpriv executes python3 in its own process (runuser would fork, and a kill would miss it);
    // the server answers one connection and exits, or gives up after 30 s.
    let mut server = Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "/usr/bin/python3", "-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the foreign server (setpriv, python3)");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !socket.exists() {
        assert!(Instant::now() < deadline, "the foreign server did not start");
        assert!(server.try_wait().expect("wait").is_none(), "the foreign server ended");
        std::thread::sleep(Duration::from_millis(20));
    }
    let remote = Remote::new(&socket, Duration::from_secs(5), "any".into());
    let got = remote.ask(&Request::Check {
        domain: "example.com",
        mx: "mx.example.com",
        tls: Tls::NotNegotiated,
        dane: Dane::NotApplicable,
    });
    let _ = server.kill();
    let _ = server.wait();
    let _ = std::fs::remove_dir_all(&dir);
    match got {
        Err(mtasts::remote::Unavailable { why, fresh: true }) => {
            assert!(why.contains("neither root") && why.contains("not asked"), "{why}");
        }
        other => panic!("a foreign server's answer was taken: {other:?}"),
    }
}
