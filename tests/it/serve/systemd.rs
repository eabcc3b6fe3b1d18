//! `mtasts serve` under systemd, without systemd running: SIGHUP reloads (valid and invalid
//! files), sd_notify messages read from a datagram socket this test binds as `$NOTIFY_SOCKET`,
//! the watchdog, socket activation through `systemd-socket-activate` (Debian's `systemd`
//! package), and the owner, group and mode of a `unix:` socket.

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::os::unix::net::UnixDatagram;

use super::*;

/// The `$NOTIFY_SOCKET` of a server: what it sends, in order.
struct NotifySink {
    socket: UnixDatagram,
    path: PathBuf,
}

impl NotifySink {
    fn new(world: &World) -> Self {
        let path = world.dir.join("notify");
        let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
        // Only a guard against a hang: every message waited for is one the server must send.
        socket.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
        Self { socket, path }
    }

    /// The next message.
    fn next(&self) -> String {
        let mut buf = [0u8; 4096];
        let n = self.socket.recv(&mut buf).expect("a notification from mtasts serve");
        String::from_utf8(buf[..n].to_vec()).expect("utf-8")
    }
}

fn signal(server: &Server, sig: &str) {
    let status = Command::new("kill").args([sig, &server.child.id().to_string()]).status().expect("kill");
    assert!(status.success());
}

fn fetches(world: &World, domain: &str) -> usize {
    let host = format!("mta-sts.{domain}");
    world.https.requests().iter().filter(|r| r.sni.as_deref() == Some(host.as_str())).count()
}

/// SIGHUP: a valid file takes effect (reply options, trust anchors) while the policy cache and an
/// open connection stay; invalid files are reported and change nothing; systemd hears
/// `RELOADING=1` and `READY=1` around each, `READY=1` at start and `STOPPING=1` at SIGTERM.
#[test]
fn sighup_reloads_the_configuration_keeping_the_cache_and_connections() {
    let world = World::new("sighup");
    for d in ["fresh1.test", "fresh2.test", "fresh3.test"] {
        world.publish(d, "f1", &policy("enforce", &[&format!("mx.{d}")]));
    }
    let notify = NotifySink::new(&world);
    let config = world.config("[serve]\nstrict_testing = false\n");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mtasts"));
    cmd.args(["serve", "--config"])
        .arg(&config)
        .args(["--listen", "inet:127.0.0.1:0"])
        .env("NOTIFY_SOCKET", &notify.path);
    let mut server = Server::spawn(&mut cmd);
    assert_eq!(notify.next(), format!("READY=1\nSTATUS=listening on {}", server.listen));

    // One connection open across every reload.
    let mut c = server.connect();
    assert_eq!(c.lookup("enforce.test"), ENFORCE_OK);
    assert_eq!(c.lookup("testing.test"), "NOTFOUND ");
    assert_eq!((fetches(&world, "enforce.test"), fetches(&world, "testing.test")), (1, 1));

    let reload = |server: &Server| {
        signal(server, "-HUP");
        let reloading = notify.next();
        assert!(reloading.starts_with("RELOADING=1\nMONOTONIC_USEC="), "{reloading}");
        let usec = &reloading["RELOADING=1\nMONOTONIC_USEC=".len()..];
        assert!(usec.parse::<u64>().is_ok_and(|u| u > 0), "{reloading}");
        let ready = notify.next();
        assert!(ready.starts_with("READY=1\nSTATUS="), "{ready}");
        ready
    };

    // A valid file: testing policies answered as enforce ones, and the system's roots instead of
    // the fixtures' CA.
    let no_ca =
        format!("{}[cache]\npath = \"memory\"\n[serve]\nstrict_testing = true\n", world.base_config(false));
    world.write_config_text(&no_ca);
    assert_eq!(reload(&server), "READY=1\nSTATUS=configuration reloaded");
    let testing_ok = "OK secure match=mx.testing.test servername=hostname";
    assert_eq!(c.lookup("testing.test"), testing_ok);
    assert_eq!(c.lookup("enforce.test"), ENFORCE_OK);
    // From the cache the old engine filled: nothing fetched again.
    assert_eq!((fetches(&world, "enforce.test"), fetches(&world, "testing.test")), (1, 1));
    // A policy host certified by the fixtures' CA is no longer trusted.
    assert_eq!(server.lookup("fresh1.test"), "NOTFOUND ");
    let err = server.stderr();
    assert!(err.contains("SIGHUP: configuration reloaded from"), "{err}");
    assert!(err.contains("the policy cache is kept; not changed by a reload: the listeners"), "{err}");

    // Invalid files: a syntax error, a bad [serve] value, an unknown socket owner.
    let invalid = [
        ("[serve\nstrict_testing = false\n".to_owned(), "TOML"),
        (format!("{no_ca}max_connections = 0\n"), "greater than 0"),
        (format!("{no_ca}socket_owner = \"no-such-user-mtasts\"\n"), "socket_owner"),
    ];
    for (i, (text, why)) in invalid.into_iter().enumerate() {
        world.write_config_text(&text);
        let ready = reload(&server);
        assert!(
            ready.starts_with("READY=1\nSTATUS=reload failed, previous configuration in force: "),
            "{ready}"
        );
        assert!(ready.to_lowercase().contains(&why.to_lowercase()), "{why}: {ready}");
        // The line on standard error (read by another thread of this test).
        let deadline = Instant::now() + Duration::from_secs(30);
        // The line may arrive in pieces: wait for the reason too.
        let said = |stderr: &str| {
            stderr.matches("reload failed, the configuration in force stays").count() > i
                && stderr
                    .rsplit("reload failed")
                    .next()
                    .unwrap_or_default()
                    .to_lowercase()
                    .contains(&why.to_lowercase())
        };
        while !said(&server.stderr()) {
            assert!(Instant::now() < deadline, "{why}: {}", server.stderr());
            std::thread::sleep(Duration::from_millis(20));
        }
        // Still strict_testing and the system's roots.
        assert_eq!(c.lookup("testing.test"), testing_ok);
        assert_eq!(server.lookup("fresh2.test"), "NOTFOUND ");
    }
    assert_eq!(server.stderr().matches("reload failed").count(), 3, "{}", server.stderr());

    // Back to the fixtures' CA, with a [serve] key a reload does not apply.
    world.write_config("[serve]\nstrict_testing = true\nmax_connections = 7\n");
    assert_eq!(reload(&server), "READY=1\nSTATUS=configuration reloaded");
    assert_eq!(c.lookup("fresh3.test"), "OK secure match=mx.fresh3.test servername=hostname");
    server.wait_for_stderr("[serve] max_connections changed; a reload does not apply it");
    assert_eq!((fetches(&world, "enforce.test"), fetches(&world, "testing.test")), (1, 1));

    let status = server.sigterm();
    assert!(status.success(), "{status:?}: {}", server.stderr());
    assert_eq!(notify.next(), "STOPPING=1");
}

/// `$WATCHDOG_USEC`: `WATCHDOG=1` keeps coming after `READY=1`.
#[test]
fn watchdog_pings() {
    let world = World::new("watchdog");
    let notify = NotifySink::new(&world);
    let config = world.config("");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mtasts"));
    cmd.args(["serve", "--config"])
        .arg(&config)
        .args(["--listen", "inet:127.0.0.1:0"])
        .env("NOTIFY_SOCKET", &notify.path)
        .env("WATCHDOG_USEC", "100000");
    let mut server = Server::spawn(&mut cmd);
    let mut seen = Vec::new();
    while seen.iter().filter(|m: &&String| *m == "WATCHDOG=1").count() < 3 {
        seen.push(notify.next());
    }
    assert!(seen.iter().any(|m| m.starts_with("READY=1\n")), "{seen:?}");
    assert_eq!(server.lookup("enforce.test"), ENFORCE_OK);
    assert!(server.sigterm().success());

    // Meant for another process: no pings, and no error.
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mtasts"));
    cmd.args(["serve", "--config"])
        .arg(&config)
        .args(["--listen", "inet:127.0.0.1:0"])
        .env("NOTIFY_SOCKET", &notify.path)
        .env("WATCHDOG_USEC", "100000")
        .env("WATCHDOG_PID", "1");
    let mut server = Server::spawn(&mut cmd);
    assert_eq!(server.lookup("enforce.test"), ENFORCE_OK);
    assert!(server.sigterm().success());
    // Drain what the first server sent after the count above; the second sends READY, STOPPING.
    let mut rest = Vec::new();
    loop {
        let m = notify.next();
        if m == "STOPPING=1" && rest.iter().any(|r: &String| r.starts_with("READY=1")) {
            break;
        }
        rest.push(m);
    }
    let second: Vec<&String> = rest.iter().skip_while(|m| !m.starts_with("READY=1")).collect();
    assert!(second.iter().all(|m| *m != "WATCHDOG=1"), "{rest:?}");

    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mtasts"));
    cmd.args(["serve", "--config"])
        .arg(&config)
        .env("NOTIFY_SOCKET", &notify.path)
        .env("WATCHDOG_USEC", "soon");
    let out = cmd.output().expect("run");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("WATCHDOG_USEC=soon"), "{out:?}");
}

/// A free TCP port on 127.0.0.1 (closed again: systemd-socket-activate binds it).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// `systemd-socket-activate` binds a TCP and a unix socket and starts `mtasts serve` with them on
/// the first connection; the server answers on both, ignores `--listen`, and leaves the unix
/// socket file to its owner at exit.
#[test]
fn socket_activation_through_systemd_socket_activate() {
    let world = World::new("activate");
    let notify = NotifySink::new(&world);
    let config = world.config("");
    let port = free_port();
    let socket = world.dir.join("activated.sock");
    let mut cmd = Command::new("systemd-socket-activate");
    cmd.args(["-l", &format!("127.0.0.1:{port}"), "-l"])
        .arg(&socket)
        .args(["--fdname=socketmap:socketmap-unix", "-E", "NOTIFY_SOCKET"])
        .arg(env!("CARGO_BIN_EXE_mtasts"))
        .args(["serve", "--config"])
        .arg(&config)
        .args(["--listen", "inet:127.0.0.1:1"])
        .env("NOTIFY_SOCKET", &notify.path);
    let mut first = None;
    let mut server = Server::spawn_then(&mut cmd, |stderr| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while stderr.lock().matches("Listening on").count() < 2 {
            assert!(Instant::now() < deadline, "systemd-socket-activate: {}", stderr.lock());
            std::thread::sleep(Duration::from_millis(20));
        }
        // The first connection starts the server, which then accepts it.
        let s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
        let mut c = Client { stream: Box::new(s), buf: Vec::new() };
        c.send(&netstring("postfix enforce.test"));
        first = Some(c);
    });
    assert_eq!(server.listen, format!("inet:127.0.0.1:{port}"));
    let mut second = String::new();
    server.stdout.read_line(&mut second).expect("second listening line");
    assert_eq!(second.trim(), format!("listening on unix:{}", socket.display()));
    assert_eq!(first.expect("first client").reply().as_deref(), Some(ENFORCE_OK));
    assert_eq!(server.lookup("testing.test"), "NOTFOUND ");
    assert_eq!(Client::unix(&socket).lookup("enforce.test"), ENFORCE_OK);
    assert_eq!(
        notify.next(),
        format!("READY=1\nSTATUS=listening on inet:127.0.0.1:{port}, unix:{}", socket.display())
    );
    assert!(server.stderr().contains("socket activation: serving the 2 socket(s) systemd passed"));
    // A reload keeps the passed sockets.
    signal(&server, "-HUP");
    assert!(notify.next().starts_with("RELOADING=1"));
    assert_eq!(notify.next(), "READY=1\nSTATUS=configuration reloaded");
    assert_eq!(Client::unix(&socket).lookup("enforce.test"), ENFORCE_OK);
    assert_eq!(server.lookup("enforce.test"), ENFORCE_OK);
    let status = server.sigterm();
    assert!(status.success(), "{status:?}: {}", server.stderr());
    assert_eq!(notify.next(), "STOPPING=1");
    assert!(socket.exists(), "a passed socket's file belongs to systemd");
}

/// A datagram socket is no socketmap listener: the server refuses to start.
#[test]
fn socket_activation_refuses_a_datagram_socket() {
    let world = World::new("activate-dgram");
    let config = world.config("");
    let port = free_port();
    let mut child = Command::new("systemd-socket-activate")
        .args(["--datagram", "-l", &format!("127.0.0.1:{port}")])
        .arg(env!("CARGO_BIN_EXE_mtasts"))
        .args(["serve", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("systemd-socket-activate");
    let mut stderr = BufReader::new(child.stderr.take().expect("stderr"));
    let mut line = String::new();
    stderr.read_line(&mut line).expect("Listening on");
    assert!(line.contains("Listening on"), "{line}");
    std::net::UdpSocket::bind("127.0.0.1:0").unwrap().send_to(b"x", ("127.0.0.1", port)).expect("send");
    let mut rest = String::new();
    stderr.read_to_string(&mut rest).expect("stderr");
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(2), "{rest}");
    assert!(
        rest.contains("socket activation: descriptor 3") && rest.contains("not a TCP or unix stream socket"),
        "{rest}"
    );
}

/// `Accept=yes` (`--accept`) passes a connection, not the listening socket: the server started
/// for it refuses it, saying what to change.
#[test]
fn socket_activation_refuses_an_accepted_connection() {
    let world = World::new("activate-accept");
    let config = world.config("");
    let port = free_port();
    let mut child = Command::new("systemd-socket-activate")
        .args(["--accept", "-l", &format!("127.0.0.1:{port}")])
        .arg(env!("CARGO_BIN_EXE_mtasts"))
        .args(["serve", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("systemd-socket-activate");
    let mut stderr = BufReader::new(child.stderr.take().expect("stderr"));
    let mut seen = String::new();
    stderr.read_line(&mut seen).expect("Listening on");
    assert!(seen.contains("Listening on"), "{seen}");
    let _conn = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    // systemd-socket-activate goes on listening: read until the server's error line.
    loop {
        let mut line = String::new();
        if stderr.read_line(&mut line).expect("stderr") == 0 {
            break;
        }
        seen.push_str(&line);
        if line.starts_with("mtasts:") {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        seen.contains("socket activation: descriptor 3")
            && seen.contains("not a listening socket (the socket unit must have Accept=no)"),
        "{seen}"
    );
}

fn id_of(args: &[&str]) -> u32 {
    let out = Command::new(args[0]).args(&args[1..]).output().expect(args[0]);
    let text = String::from_utf8_lossy(&out.stdout);
    let field = if args[0] == "getent" { text.split(':').nth(2) } else { Some(text.trim()) };
    field.and_then(|f| f.trim().parse().ok()).unwrap_or_else(|| panic!("{args:?}: {text}"))
}

/// `[serve] socket_mode`, `socket_owner`, `socket_group` on a `unix:` socket (this test runs as
/// root, which may give the socket away), and their errors.
#[test]
fn unix_socket_owner_group_and_mode() {
    assert_eq!(id_of(&["id", "-u"]), 0, "this test changes a file's owner: run it as root");
    let world = World::new("socket-access");
    let socket = world.dir.join("owned.sock");
    let config = world
        .config("[serve]\nsocket_mode = \"0660\"\nsocket_owner = \"nobody\"\nsocket_group = \"nogroup\"\n");
    let server = Server::start(&config, &format!("unix:{}", socket.display()));
    let meta = std::fs::metadata(&socket).expect("socket");
    assert_eq!(meta.permissions().mode() & 0o7777, 0o660);
    assert_eq!(meta.uid(), id_of(&["id", "-u", "nobody"]));
    assert_eq!(meta.gid(), id_of(&["getent", "group", "nogroup"]));
    assert_eq!(Client::unix(&socket).lookup("enforce.test"), ENFORCE_OK);
    drop(server);

    // Numbers work as well, and the mode alone.
    let _ = std::fs::remove_file(&socket);
    let config =
        world.config("[serve]\nsocket_mode = \"600\"\nsocket_owner = \"4321\"\nsocket_group = \"4322\"\n");
    let server = Server::start(&config, &format!("unix:{}", socket.display()));
    let meta = std::fs::metadata(&socket).expect("socket");
    assert_eq!((meta.permissions().mode() & 0o7777, meta.uid(), meta.gid()), (0o600, 4321, 4322));
    drop(server);

    for (extra, key) in [
        ("socket_mode = \"0999\"", "[serve] socket_mode = \"0999\""),
        (
            "socket_owner = \"no-such-user-mtasts\"",
            "[serve] socket_owner = \"no-such-user-mtasts\": no such user",
        ),
        (
            "socket_group = \"no-such-group-mtasts\"",
            "[serve] socket_group = \"no-such-group-mtasts\": no such group",
        ),
    ] {
        let _ = std::fs::remove_file(&socket);
        let config = world.config(&format!("[serve]\n{extra}\n"));
        let out = Command::new(env!("CARGO_BIN_EXE_mtasts"))
            .args(["serve", "--config"])
            .arg(&config)
            .arg("--listen")
            .arg(format!("unix:{}", socket.display()))
            .output()
            .expect("run");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains(key), "{key}: {err}");
        assert!(!socket.exists(), "no socket left behind");
    }
}
