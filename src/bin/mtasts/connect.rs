//! `mtasts check --connect`: contact an MX host as a sending MTA would, and bring back what it
//! presented, for the engine to judge.
//!
//! For one MX host: its addresses (A, then AAAA) are tried in order, as an MTA tries them, until
//! one answers with a `220` greeting; the addresses that did not are listed with why. On that
//! connection: `EHLO`, and when the reply offers `STARTTLS`, `STARTTLS` and a TLS handshake (rustls
//! with the ring provider, TLS 1.2 or 1.3) with the MX host name as SNI, then `QUIT`. No mail is
//! ever sent.
//!
//! The handshake does not judge the certificate chain: its verifier records the chain (leaf first)
//! and accepts it, so that the chain reaches [`mtasts::Engine::check`], which judges it exactly as
//! for an MTA (MTA-STS names and trust anchors, DANE). The handshake signatures are still checked
//! with the provider's algorithms, so the chain shown is one whose key the server holds.
//!
//! Every step is bounded by the timeout: the TCP connection to each address, each SMTP reply
//! (a deadline for the whole reply, not for each read) and the whole TLS handshake.

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, ProtocolVersion, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

/// Longest reply line accepted (RFC 5321 §4.5.3.1.5 allows 512 octets; some servers send more).
const MAX_LINE: usize = 4096;
/// Most lines in one reply (an EHLO reply lists one extension a line).
const MAX_LINES: usize = 100;

/// How to contact the MX hosts.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The SMTP port (25; other values are for test fixtures).
    pub port: u16,
    /// Bound of the TCP connection to each address, of each reply and of the handshake.
    pub timeout: Duration,
    /// The EHLO name; `None`: the local address of the connection, as an address literal.
    pub ehlo: Option<String>,
}

/// One address tried, and why it gave no session (`None`: it did).
#[derive(Clone, Debug)]
pub struct Attempt {
    pub address: SocketAddr,
    pub error: Option<String>,
}

/// The TLS session with the MX.
#[derive(Clone, Debug)]
pub struct TlsInfo {
    /// `TLSv1.3` or `TLSv1.2`.
    pub version: String,
    /// The IANA name of the cipher suite, e.g. `TLS13_AES_256_GCM_SHA384`.
    pub cipher: String,
    /// The SNI sent (none for an address literal).
    pub sni: Option<String>,
    /// The chain presented, leaf first, DER.
    pub chain: Vec<Vec<u8>>,
}

/// What one connection that answered gave.
#[derive(Clone, Debug)]
pub struct Session {
    /// The address that answered.
    pub address: SocketAddr,
    /// The first line of its `220` greeting.
    pub greeting: String,
    /// Whether the EHLO reply offered STARTTLS.
    pub starttls: bool,
    /// The TLS session, when the handshake completed.
    pub tls: Option<TlsInfo>,
    /// Why there is no TLS session although one was tried or expected (EHLO or STARTTLS
    /// refused, handshake failed), or why the session ended badly after it.
    pub note: Option<String>,
}

/// Everything learnt by contacting one MX host.
#[derive(Clone, Debug)]
pub struct Probe {
    /// The addresses tried, in order.
    pub attempts: Vec<Attempt>,
    /// The session of the address that answered, if one did.
    pub session: Option<Session>,
    /// Why no session could be had (no address, or none answered).
    pub error: Option<String>,
}

/// Contacts `host` (a host name, or an address literal) at `addresses`, in order, until one
/// answers. `addresses` comes from the caller's DNS lookup.
pub fn probe(host: &str, addresses: &[IpAddr], settings: &Settings) -> Probe {
    let mut attempts = Vec::new();
    if addresses.is_empty() {
        return Probe { attempts, session: None, error: Some(format!("{host} has no address")) };
    }
    let sni = sni_for(host);
    for ip in addresses {
        let address = SocketAddr::new(*ip, settings.port);
        match session(address, sni.as_ref(), settings) {
            Ok(session) => {
                attempts.push(Attempt { address, error: None });
                return Probe { attempts, session: Some(session), error: None };
            }
            Err(e) => attempts.push(Attempt { address, error: Some(e) }),
        }
    }
    let error = format!("no address of {host} answered on port {} ({} tried)", settings.port, attempts.len());
    Probe { attempts, session: None, error: Some(error) }
}

/// The SNI for `host`: its name; none for an address literal (RFC 6066 §3 allows names only).
fn sni_for(host: &str) -> Option<ServerName<'static>> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if bare.parse::<IpAddr>().is_ok() || bare.to_ascii_lowercase().starts_with("ipv6:") {
        return None;
    }
    ServerName::try_from(host.to_owned()).ok()
}

/// One connection: `Err` when the address gave no usable SMTP session (an MTA would then try
/// the next address); `Ok` once the greeting and EHLO came, whatever happened to TLS.
fn session(
    address: SocketAddr,
    sni: Option<&ServerName<'static>>,
    settings: &Settings,
) -> Result<Session, String> {
    let timeout = settings.timeout;
    let tcp = TcpStream::connect_timeout(&address, timeout).map_err(|e| io_text("connect", &e, timeout))?;
    let ehlo_name = match &settings.ehlo {
        Some(name) => name.clone(),
        None => match tcp.local_addr() {
            Ok(SocketAddr::V4(a)) => format!("[{}]", a.ip()),
            Ok(SocketAddr::V6(a)) => format!("[IPv6:{}]", a.ip()),
            Err(e) => return Err(format!("local address: {e}")),
        },
    };
    let mut smtp = Smtp { io: Timed { tcp, deadline: Instant::now() + timeout }, buf: Vec::new(), timeout };
    let greeting = smtp.reply("greeting")?;
    if greeting.code != 220 {
        smtp.quit_plain();
        return Err(format!("greeting refused: {}", greeting.text()));
    }
    let mut session =
        Session { address, greeting: greeting.lines[0].clone(), starttls: false, tls: None, note: None };
    smtp.send(&format!("EHLO {ehlo_name}"))?;
    let ehlo = smtp.reply("EHLO reply")?;
    if ehlo.code != 250 {
        // An MTA would fall back to HELO, which has no STARTTLS.
        smtp.quit_plain();
        session.note = Some(format!("EHLO refused: {}", ehlo.text()));
        return Ok(session);
    }
    // The first line names the server; each further line is one keyword after `250-`/`250 `.
    session.starttls = ehlo.lines.iter().skip(1).any(|l| {
        l.get(4..)
            .and_then(|t| t.split_ascii_whitespace().next())
            .is_some_and(|k| k.eq_ignore_ascii_case("STARTTLS"))
    });
    if !session.starttls {
        smtp.quit_plain();
        return Ok(session);
    }
    smtp.send("STARTTLS")?;
    let ready = smtp.reply("STARTTLS reply")?;
    if ready.code != 220 {
        smtp.quit_plain();
        session.note = Some(format!("STARTTLS refused: {}", ready.text()));
        return Ok(session);
    }
    if !smtp.buf.is_empty() {
        // Plaintext after the 220 would be read as if it came over TLS (STARTTLS injection).
        session.note =
            Some("the server sent data after its 220 reply to STARTTLS: the connection was dropped".into());
        return Ok(session);
    }
    match handshake(smtp.io, sni, timeout) {
        Ok(tls) => session.tls = Some(tls),
        Err(e) => session.note = Some(e),
    }
    Ok(session)
}

/// The TLS handshake on `io`, then `QUIT` over TLS.
fn handshake(mut io: Timed, sni: Option<&ServerName<'static>>, timeout: Duration) -> Result<TlsInfo, String> {
    io.deadline = Instant::now() + timeout;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let recorder = Arc::new(Recorder {
        chain: Mutex::new(Vec::new()),
        algorithms: provider.signature_verification_algorithms,
    });
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS configuration: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(recorder.clone())
        .with_no_client_auth();
    config.enable_sni = sni.is_some();
    // rustls needs a name even when it sends no SNI; an address literal gives one.
    let name = match sni {
        Some(n) => n.clone(),
        None => {
            ServerName::IpAddress(io.tcp.peer_addr().map_err(|e| format!("peer address: {e}"))?.ip().into())
        }
    };
    let mut conn = ClientConnection::new(Arc::new(config), name).map_err(|e| format!("TLS: {e}"))?;
    while conn.is_handshaking() {
        conn.complete_io(&mut io).map_err(|e| io_text("TLS handshake", &e, timeout))?;
    }
    let version = match conn.protocol_version() {
        Some(ProtocolVersion::TLSv1_3) => "TLSv1.3".to_owned(),
        Some(ProtocolVersion::TLSv1_2) => "TLSv1.2".to_owned(),
        Some(v) => format!("{v:?}"),
        None => "unknown".to_owned(),
    };
    let cipher =
        conn.negotiated_cipher_suite().map_or_else(|| "unknown".to_owned(), |s| format!("{:?}", s.suite()));
    let chain = std::mem::take(&mut *recorder.chain.lock());
    let sni = sni.map(|n| n.to_str().into_owned());
    // QUIT over TLS; the session is over whatever the answer.
    io.deadline = Instant::now() + timeout;
    let mut tls = rustls::Stream::new(&mut conn, &mut io);
    if tls.write_all(b"QUIT\r\n").and_then(|()| tls.flush()).is_ok() {
        let mut scratch = [0u8; 512];
        let _ = tls.read(&mut scratch);
    }
    conn.send_close_notify();
    let _ = conn.complete_io(&mut io);
    Ok(TlsInfo { version, cipher, sni, chain })
}

/// A verifier that records the chain and leaves judging it to the engine; handshake signatures
/// are verified as usual.
#[derive(Debug)]
struct Recorder {
    chain: Mutex<Vec<Vec<u8>>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Recorder {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let mut chain = self.chain.lock();
        chain.clear();
        chain.push(end_entity.to_vec());
        chain.extend(intermediates.iter().map(|c| c.to_vec()));
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// A TCP stream whose reads and writes fail once `deadline` has passed.
struct Timed {
    tcp: TcpStream,
    deadline: Instant,
}

impl Timed {
    fn left(&self) -> io::Result<Duration> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() { Err(io::ErrorKind::TimedOut.into()) } else { Ok(left) }
    }
}

/// A read or write that stopped at its timeout (EAGAIN on Linux) is a time-out.
fn timed_out(e: io::Error) -> io::Error {
    if e.kind() == io::ErrorKind::WouldBlock { io::ErrorKind::TimedOut.into() } else { e }
}

impl Read for Timed {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.tcp.set_read_timeout(Some(self.left()?))?;
        self.tcp.read(buf).map_err(timed_out)
    }
}

impl Write for Timed {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.tcp.set_write_timeout(Some(self.left()?))?;
        self.tcp.write(buf).map_err(timed_out)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.tcp.flush()
    }
}

fn io_text(what: &str, e: &io::Error, timeout: Duration) -> String {
    match e.kind() {
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => {
            format!("{what}: no answer within {}", human(timeout))
        }
        io::ErrorKind::UnexpectedEof => format!("{what}: the server closed the connection"),
        _ => format!("{what}: {e}"),
    }
}

fn human(d: Duration) -> String {
    if d.subsec_millis() == 0 { format!("{} s", d.as_secs()) } else { format!("{} ms", d.as_millis()) }
}

/// One SMTP reply: its code and its lines.
struct Reply {
    code: u16,
    /// The whole lines, code included.
    lines: Vec<String>,
}

impl Reply {
    fn text(&self) -> String {
        self.lines.join(" / ")
    }
}

/// The plaintext part of the SMTP dialogue.
struct Smtp {
    io: Timed,
    buf: Vec<u8>,
    timeout: Duration,
}

impl Smtp {
    fn send(&mut self, command: &str) -> Result<(), String> {
        self.io.deadline = Instant::now() + self.timeout;
        self.io.write_all(format!("{command}\r\n").as_bytes()).and_then(|()| self.io.flush()).map_err(|e| {
            io_text(&format!("sending {}", command.split(' ').next().unwrap_or(command)), &e, self.timeout)
        })
    }

    /// The next reply, all of it within the timeout.
    fn reply(&mut self, what: &str) -> Result<Reply, String> {
        self.io.deadline = Instant::now() + self.timeout;
        let mut lines = Vec::new();
        loop {
            let line = self.line().map_err(|e| io_text(what, &e, self.timeout))?;
            let bytes = line.as_bytes();
            let code = bytes.get(..3).filter(|c| c.iter().all(u8::is_ascii_digit));
            let (Some(code), sep) = (code, bytes.get(3).copied()) else {
                return Err(format!("{what}: not an SMTP reply: {:?}", truncate(&line)));
            };
            if !matches!(sep, None | Some(b' ' | b'-')) {
                return Err(format!("{what}: not an SMTP reply: {:?}", truncate(&line)));
            }
            // Every line of a multi-line reply carries the same code (RFC 5321 §4.2.1).
            if lines.first().is_some_and(|first: &String| first.as_bytes()[..3] != *code) {
                return Err(format!("{what}: a reply changed its code: {:?}", truncate(&line)));
            }
            let code: u16 = line[..3].parse().map_err(|_| format!("{what}: bad reply code"))?;
            lines.push(line);
            if sep != Some(b'-') {
                return Ok(Reply { code, lines });
            }
            if lines.len() >= MAX_LINES {
                return Err(format!("{what}: more than {MAX_LINES} lines"));
            }
        }
    }

    /// The next line, without its CRLF (or LF).
    fn line(&mut self) -> io::Result<String> {
        loop {
            let end = self.buf.iter().position(|&b| b == b'\n');
            if end.unwrap_or(self.buf.len()) > MAX_LINE {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("a line longer than {MAX_LINE} bytes"),
                ));
            }
            if let Some(end) = end {
                let mut line: Vec<u8> = self.buf.drain(..=end).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return Ok(String::from_utf8_lossy(&line).into_owned());
            }
            let mut chunk = [0u8; 1024];
            match self.io.read(&mut chunk)? {
                0 => return Err(io::ErrorKind::UnexpectedEof.into()),
                n => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// `QUIT` in plaintext, best effort: the probe is over.
    fn quit_plain(&mut self) {
        if self.send("QUIT").is_ok() {
            let _ = self.reply("QUIT reply");
        }
    }
}

fn truncate(line: &str) -> String {
    line.chars().take(120).collect()
}

/// What a certificate shows a person: subject, subjectAltNames, issuer, notAfter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertSummary {
    pub subject: String,
    /// dNSName entries as they are; other kinds prefixed (`IP:`, `email:`, `URI:`).
    pub sans: Vec<String>,
    pub issuer: String,
    /// RFC 3339, UTC.
    pub not_after: String,
}

/// Reads what a person wants to see of a DER certificate (display only: judging is the
/// engine's).
pub fn summarize(der: &[u8]) -> Result<CertSummary, String> {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| format!("unreadable certificate: {e}"))?;
    let sans = match cert.subject_alternative_name() {
        Ok(Some(ext)) => ext
            .value
            .general_names
            .iter()
            .map(|n| match n {
                GeneralName::DNSName(d) => (*d).to_owned(),
                GeneralName::IPAddress(ip) => match ip.len() {
                    4 => format!("IP:{}", std::net::Ipv4Addr::from([ip[0], ip[1], ip[2], ip[3]])),
                    16 => {
                        let mut a = [0u8; 16];
                        a.copy_from_slice(ip);
                        format!("IP:{}", std::net::Ipv6Addr::from(a))
                    }
                    _ => format!("IP:{}", hex(ip)),
                },
                GeneralName::RFC822Name(m) => format!("email:{m}"),
                GeneralName::URI(u) => format!("URI:{u}"),
                other => format!("{other:?}"),
            })
            .collect(),
        Ok(None) => Vec::new(),
        Err(e) => vec![format!("(unreadable subjectAltName: {e})")],
    };
    let t = cert.validity().not_after.timestamp();
    let not_after =
        u64::try_from(t).map_or_else(|_| cert.validity().not_after.to_string(), mtasts::cert::rfc3339);
    Ok(CertSummary {
        subject: cert.subject().to_string(),
        sans,
        issuer: cert.issuer().to_string(),
        not_after,
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufRead;
    use std::net::{Ipv4Addr, TcpListener};

    /// A scripted server on 127.0.0.1: for each step, the line it expects from the client (a
    /// prefix; `None`: nothing, e.g. the greeting) and what it answers. Returns its address and
    /// the lines it received.
    fn scripted(
        steps: Vec<(Option<&'static str>, &'static str)>,
    ) -> (SocketAddr, std::thread::JoinHandle<Vec<String>>) {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        let addr = listener.local_addr().expect("addr");
        let handle = std::thread::spawn(move || {
            let (conn, _) = listener.accept().expect("accept");
            let mut reader = io::BufReader::new(conn.try_clone().expect("clone"));
            let mut writer = conn;
            let mut got = Vec::new();
            for (expect, answer) in steps {
                if let Some(prefix) = expect {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        break;
                    }
                    assert!(line.starts_with(prefix), "expected {prefix:?}, got {line:?}");
                    got.push(line.trim_end().to_owned());
                }
                if writer.write_all(answer.as_bytes()).is_err() {
                    break;
                }
            }
            // Whatever else the client says (QUIT), until it closes.
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap_or(0) > 0 {
                got.push(line.trim_end().to_owned());
                line.clear();
            }
            got
        });
        (addr, handle)
    }

    fn settings(port: u16) -> Settings {
        Settings { port, timeout: Duration::from_secs(10), ehlo: Some("client.test".into()) }
    }

    #[test]
    fn plaintext_after_the_starttls_reply_drops_the_connection() {
        let (addr, server) = scripted(vec![
            (None, "220 mx.test ESMTP\r\n"),
            (Some("EHLO client.test"), "250-mx.test\r\n250-PIPELINING\r\n250 STARTTLS\r\n"),
            (Some("STARTTLS"), "220 go ahead\r\n250 injected\r\n"),
        ]);
        let p = probe("mx.test", &[addr.ip()], &settings(addr.port()));
        let s = p.session.expect("a session");
        assert!(s.starttls && s.tls.is_none(), "{s:?}");
        assert!(s.note.as_deref().is_some_and(|n| n.contains("after its 220 reply to STARTTLS")), "{s:?}");
        let got = server.join().expect("server");
        assert_eq!(got, ["EHLO client.test", "STARTTLS"], "nothing after the injection, not even QUIT");
    }

    #[test]
    fn refusals_are_reported_and_quit_is_sent() {
        // A 554 greeting: the address gives no session.
        let (addr, server) = scripted(vec![(None, "554 go away\r\n"), (Some("QUIT"), "221 bye\r\n")]);
        let p = probe("mx.test", &[addr.ip()], &settings(addr.port()));
        assert!(p.session.is_none());
        assert_eq!(p.attempts[0].error.as_deref(), Some("greeting refused: 554 go away"));
        assert_eq!(server.join().expect("server"), ["QUIT"]);

        // EHLO refused: a session without STARTTLS, which says why.
        let (addr, server) = scripted(vec![
            (None, "220 mx.test\r\n"),
            (Some("EHLO client.test"), "502 no EHLO here\r\n"),
            (Some("QUIT"), "221 bye\r\n"),
        ]);
        let s = probe("mx.test", &[addr.ip()], &settings(addr.port())).session.expect("session");
        assert!(!s.starttls && s.tls.is_none());
        assert_eq!(s.note.as_deref(), Some("EHLO refused: 502 no EHLO here"));
        server.join().expect("server");

        // STARTTLS offered, then refused.
        let (addr, server) = scripted(vec![
            (None, "220 mx.test\r\n"),
            (Some("EHLO"), "250-mx.test\r\n250 starttls\r\n"),
            (Some("STARTTLS"), "454 4.7.0 TLS not available\r\n"),
            (Some("QUIT"), "221 bye\r\n"),
        ]);
        let s = probe("mx.test", &[addr.ip()], &settings(addr.port())).session.expect("session");
        assert!(s.starttls, "the keyword is case-insensitive");
        assert_eq!(s.note.as_deref(), Some("STARTTLS refused: 454 4.7.0 TLS not available"));
        server.join().expect("server");
    }

    #[test]
    fn malformed_replies_are_errors() {
        for (greeting, want) in [
            ("hello there\r\n", "greeting: not an SMTP reply"),
            ("220-mx.test\r\n230 changed\r\n", "greeting: a reply changed its code"),
            ("22\r\n", "greeting: not an SMTP reply"),
            ("220x\r\n", "greeting: not an SMTP reply"),
        ] {
            let (addr, server) = scripted(vec![(None, greeting)]);
            let p = probe("mx.test", &[addr.ip()], &settings(addr.port()));
            let e = p.attempts[0].error.clone().unwrap_or_default();
            assert!(e.starts_with(want), "{greeting:?}: {e}");
            drop(p);
            let _ = server.join();
        }
        let long = format!("220 {}\r\n", "x".repeat(MAX_LINE + 10)).leak();
        let (addr, server) = scripted(vec![(None, long)]);
        let p = probe("mx.test", &[addr.ip()], &settings(addr.port()));
        let e = p.attempts[0].error.clone().unwrap_or_default();
        assert!(e.contains("longer than"), "{e}");
        let _ = server.join();
    }

    #[test]
    fn no_address_no_session() {
        let p = probe("mx.test", &[], &settings(25));
        assert!(p.attempts.is_empty() && p.session.is_none());
        assert_eq!(p.error.as_deref(), Some("mx.test has no address"));
    }

    #[test]
    fn sni_is_a_name_never_an_address() {
        assert!(sni_for("mx.example.test").is_some());
        assert!(sni_for("[192.0.2.1]").is_none());
        assert!(sni_for("[IPv6:2001:db8::1]").is_none());
        assert!(sni_for("192.0.2.1").is_none());
    }
}
