//! What `mtasts serve` does for systemd, by the documented protocols (no libsystemd):
//!
//! * readiness and state notifications, sd_notify(3): datagrams such as `READY=1` sent to the
//!   unix socket named by `$NOTIFY_SOCKET` (a path, or `@name` for an abstract socket);
//! * the watchdog: `$WATCHDOG_USEC` (for this process when `$WATCHDOG_PID` names it, or names
//!   nothing) asks for `WATCHDOG=1` at least that often; the server sends it twice as often;
//! * socket activation, sd_listen_fds(3): when `$LISTEN_PID` is this process, `$LISTEN_FDS`
//!   listening sockets are open from descriptor 3 on, named by `$LISTEN_FDNAMES`.
//!
//! Without these variables nothing is sent and the server binds its own listener.

use std::ffi::OsString;
use std::io;
use std::os::fd::{FromRawFd as _, RawFd};
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// The first descriptor systemd passes (`SD_LISTEN_FDS_START`).
const LISTEN_FDS_START: RawFd = 3;

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
    // SAFETY: `ts` is a valid timespec to fill.
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    let usec =
        u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000 + u64::try_from(ts.tv_nsec).unwrap_or(0) / 1000;
    format!("RELOADING=1\nMONOTONIC_USEC={usec}")
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

/// The listening sockets systemd passed to this process (empty when none were), with their
/// names (`$LISTEN_FDNAMES`, `FileDescriptorName=` of the socket unit). Each must be a listening
/// stream socket, TCP or unix: a datagram socket, or a connection of `Accept=yes`, is an error.
pub fn listen_fds() -> Result<Vec<(Passed, String)>, String> {
    let Some(pid) = std::env::var_os("LISTEN_PID") else { return Ok(Vec::new()) };
    if pid.to_str().and_then(|p| p.parse::<u32>().ok()) != Some(std::process::id()) {
        // Meant for another process (a parent that did not clear its environment).
        return Ok(Vec::new());
    }
    let count = std::env::var_os("LISTEN_FDS").unwrap_or_default();
    let count: RawFd = count
        .to_str()
        .and_then(|n| n.parse().ok())
        .filter(|n| (0..=1024).contains(n))
        .ok_or_else(|| format!("LISTEN_FDS={}: not a number of sockets", count.to_string_lossy()))?;
    let names: Vec<String> = std::env::var("LISTEN_FDNAMES")
        .map(|n| n.split(':').map(str::to_owned).collect())
        .unwrap_or_default();
    let mut passed = Vec::new();
    for i in 0..count {
        let fd = LISTEN_FDS_START + i;
        let name =
            names.get(usize::try_from(i).unwrap_or(usize::MAX)).cloned().unwrap_or_else(|| "unknown".into());
        passed.push((
            adopt(fd).map_err(|e| format!("socket activation: descriptor {fd} ({name}): {e}"))?,
            name,
        ));
    }
    Ok(passed)
}

/// Takes descriptor `fd` as a listener, after checking what it is.
fn adopt(fd: RawFd) -> Result<Passed, String> {
    let int_opt = |level, name| -> io::Result<libc::c_int> {
        let mut value: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `value` and `len` are valid for the call.
        let rc = unsafe { libc::getsockopt(fd, level, name, (&raw mut value).cast(), &mut len) };
        if rc == 0 { Ok(value) } else { Err(io::Error::last_os_error()) }
    };
    let not_socket = |e: io::Error| format!("not a socket ({e})");
    if int_opt(libc::SOL_SOCKET, libc::SO_TYPE).map_err(not_socket)? != libc::SOCK_STREAM {
        return Err("not a stream socket (use ListenStream= in the socket unit)".into());
    }
    if int_opt(libc::SOL_SOCKET, libc::SO_ACCEPTCONN).map_err(not_socket)? == 0 {
        return Err("not a listening socket (the socket unit must have Accept=no)".into());
    }
    let domain = int_opt(libc::SOL_SOCKET, libc::SO_DOMAIN).map_err(not_socket)?;
    // SAFETY: systemd hands the descriptor over to this process, which closes it nowhere else.
    unsafe {
        if libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) != 0 {
            return Err(format!("cannot set close-on-exec: {}", io::Error::last_os_error()));
        }
        match domain {
            libc::AF_INET | libc::AF_INET6 => Ok(Passed::Inet(std::net::TcpListener::from_raw_fd(fd))),
            libc::AF_UNIX => Ok(Passed::Unix(std::os::unix::net::UnixListener::from_raw_fd(fd))),
            other => Err(format!("a socket of address family {other}, neither TCP nor unix")),
        }
    }
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

    #[test]
    fn adopt_checks_the_descriptor() {
        use std::os::fd::IntoRawFd as _;
        let dgram = UnixDatagram::unbound().unwrap().into_raw_fd();
        assert!(adopt(dgram).unwrap_err().contains("not a stream socket"));
        // SAFETY: `dgram` is ours and was not adopted.
        unsafe { libc::close(dgram) };
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let stream = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap().into_raw_fd();
        assert!(adopt(stream).unwrap_err().contains("Accept=no"));
        // SAFETY: as above.
        unsafe { libc::close(stream) };
        let fd = listener.into_raw_fd();
        assert!(matches!(adopt(fd), Ok(Passed::Inet(_))));
    }
}
