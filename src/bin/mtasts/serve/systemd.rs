//! What `mtasts serve` does for systemd (no libsystemd is linked):
//!
//! * readiness and state notifications, sd_notify(3): datagrams such as `READY=1` sent to the
//!   unix socket named by `$NOTIFY_SOCKET` (a path, or `@name` for an abstract socket);
//! * the watchdog: `$WATCHDOG_USEC` (for this process when `$WATCHDOG_PID` names it, or names
//!   nothing) asks for `WATCHDOG=1` at least that often; the server sends it twice as often;
//! * socket activation, sd_listen_fds(3): when `$LISTEN_PID` is this process, `$LISTEN_FDS`
//!   listening sockets are open from descriptor 3 on, named by `$LISTEN_FDNAMES`. They are
//!   taken over with the `listenfd` crate, which checks each one's family and type; this module
//!   then checks that each listens (`SO_ACCEPTCONN`), which a connection passed by `Accept=yes`
//!   does not.
//!
//! Without these variables nothing is sent and the server binds its own listener.

use std::ffi::OsString;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// Where state notifications go (`$NOTIFY_SOCKET`).
#[derive(Debug)]
pub struct Notifier {
    socket: UnixDatagram,
    addr: SocketAddr,
    name: String,
}

impl Notifier {
    /// The notification socket of `$NOTIFY_SOCKET`, `None` when it is not set. A value that is
    /// no unix socket address is an error: systemd would wait for a `READY=1` that never comes.
    pub fn from_env() -> Result<Option<Self>, String> {
        let Some(name) = std::env::var_os("NOTIFY_SOCKET") else { return Ok(None) };
        Self::new(name).map(Some)
    }

    fn new(name: OsString) -> Result<Self, String> {
        use std::os::unix::ffi::OsStrExt as _;
        let shown = name.to_string_lossy().into_owned();
        let bytes = name.as_bytes();
        let addr = match bytes.first() {
            Some(b'/') => SocketAddr::from_pathname(&name),
            Some(b'@') => {
                use std::os::linux::net::SocketAddrExt as _;
                SocketAddr::from_abstract_name(&bytes[1..])
            }
            _ => {
                return Err(format!(
                    "NOTIFY_SOCKET={shown}: not a unix socket (an absolute path, or @name for an abstract one)"
                ));
            }
        }
        .map_err(|e| format!("NOTIFY_SOCKET={shown}: {e}"))?;
        let socket =
            UnixDatagram::unbound().map_err(|e| format!("NOTIFY_SOCKET: cannot make a socket: {e}"))?;
        Ok(Self { socket, addr, name: shown })
    }

    /// Sends `state` (newline-separated `KEY=VALUE` assignments, sd_notify(3)); a failure is
    /// said on standard error and otherwise ignored (the server works on).
    pub fn send(&self, state: &str) {
        if let Err(e) = self.socket.send_to_addr(state.as_bytes(), &self.addr) {
            eprintln!("mtasts serve: warning: cannot notify systemd at {}: {e}", self.name);
        }
    }
}

/// Sends `state` when there is a notification socket.
pub fn notify(notifier: Option<&Notifier>, state: &str) {
    if let Some(n) = notifier {
        n.send(state);
    }
}

/// `RELOADING=1` with the `MONOTONIC_USEC` systemd 253 and later want beside it.
pub fn reloading() -> String {
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| Duration::from(t).as_micros())
        .unwrap_or(0);
    format!("RELOADING=1\nMONOTONIC_USEC={now}")
}

/// How often to send `WATCHDOG=1`: half of `$WATCHDOG_USEC`, when it is set for this process.
pub fn watchdog_interval() -> Result<Option<Duration>, String> {
    let Some(usec) = std::env::var_os("WATCHDOG_USEC") else { return Ok(None) };
    if let Some(pid) = std::env::var_os("WATCHDOG_PID") {
        if pid.to_str().and_then(|p| p.parse::<u32>().ok()) != Some(std::process::id()) {
            return Ok(None);
        }
    }
    let usec =
        usec.to_str().and_then(|u| u.parse::<u64>().ok()).filter(|u| *u > 0).ok_or_else(|| {
            format!("WATCHDOG_USEC={}: not a number of microseconds", usec.to_string_lossy())
        })?;
    Ok(Some(Duration::from_micros(usec / 2)))
}

/// A listening socket passed by systemd.
#[derive(Debug)]
pub enum Passed {
    Inet(std::net::TcpListener),
    Unix(std::os::unix::net::UnixListener),
}

/// The listening sockets systemd passed to this process (empty when none were, or when
/// `$LISTEN_PID` names another process), with their names (`$LISTEN_FDNAMES`,
/// `FileDescriptorName=` of the socket unit). Each must be a listening stream socket, TCP or
/// unix: a datagram socket, or a connection of `Accept=yes`, is an error.
pub fn listen_fds() -> Result<Vec<(Passed, String)>, String> {
    let mut fds = listenfd::ListenFd::from_env();
    let names: Vec<String> = std::env::var("LISTEN_FDNAMES")
        .map(|n| n.split(':').map(str::to_owned).collect())
        .unwrap_or_default();
    let mut passed = Vec::new();
    for i in 0..fds.len() {
        let name = names.get(i).cloned().unwrap_or_else(|| "unknown".into());
        let what = format!("socket activation: descriptor {} ({name})", i + 3);
        let socket = match fds.take_tcp_listener(i) {
            Ok(Some(l)) => Passed::Inet(l),
            Ok(None) => continue,
            Err(_) => match fds.take_unix_listener(i) {
                Ok(Some(l)) => Passed::Unix(l),
                Ok(None) => continue,
                Err(_) => {
                    return Err(format!(
                        "{what}: not a TCP or unix stream socket (use ListenStream= in the socket unit)"
                    ));
                }
            },
        };
        let listening = match &socket {
            Passed::Inet(l) => listening(l),
            Passed::Unix(l) => listening(l),
        };
        match listening {
            Ok(true) => {}
            Ok(false) => {
                return Err(format!("{what}: not a listening socket (the socket unit must have Accept=no)"));
            }
            Err(e) => return Err(format!("{what}: {e}")),
        }
        passed.push((socket, name));
    }
    Ok(passed)
}

/// Whether `socket` listens (`SO_ACCEPTCONN`), and is closed on exec from now on.
fn listening(socket: &impl std::os::fd::AsFd) -> Result<bool, nix::Error> {
    use nix::fcntl::{FcntlArg, FdFlag, fcntl};
    fcntl(socket, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))?;
    nix::sys::socket::getsockopt(socket, nix::sys::socket::sockopt::AcceptConn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_socket_addresses() {
        assert!(Notifier::new("/run/systemd/notify".into()).is_ok());
        assert!(Notifier::new("@/org/freedesktop/systemd1/notify/1".into()).is_ok());
        let e = Notifier::new("vsock:2:1234".into()).unwrap_err();
        assert!(e.contains("NOTIFY_SOCKET=vsock:2:1234"), "{e}");
        assert!(Notifier::new("".into()).is_err());
    }

    #[test]
    fn notifications_arrive() {
        let dir = std::env::temp_dir().join(format!("mtasts-notify-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify");
        let sink = UnixDatagram::bind(&path).unwrap();
        let n = Notifier::new(path.clone().into_os_string()).unwrap();
        n.send("READY=1");
        n.send(&reloading());
        let mut buf = [0u8; 256];
        let len = sink.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"READY=1");
        let len = sink.recv(&mut buf).unwrap();
        let text = std::str::from_utf8(&buf[..len]).unwrap();
        assert!(text.starts_with("RELOADING=1\nMONOTONIC_USEC="), "{text}");
        assert!(text["RELOADING=1\nMONOTONIC_USEC=".len()..].parse::<u64>().is_ok(), "{text}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
