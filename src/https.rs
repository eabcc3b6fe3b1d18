//! The hardened HTTPS agent of every request mtasts makes: the policy fetch ([`crate::fetch`],
//! RFC 8461 §3.3) and the upload of TLSRPT reports ([`crate::tlsrpt::deliver`], RFC 8460 §5.3).
//!
//! [`agent`] builds one ureq agent per request, with:
//!
//! * **HTTPS only**, over rustls with the ring provider ([`client_config`]): TLS 1.2 and 1.3, PKIX
//!   validation against the configured [`TrustAnchors`], SNI, no session resumption, no client
//!   certificate. ureq's own rustls connector takes roots only as certificate DER; ours takes the
//!   anchors, and shares the connect budget between TCP and the handshake.
//! * **No proxy** (environment settings ignored, no proxy step in the connector chain), **no
//!   redirect followed** (a 3xx is an answer for the caller to judge), **no status turned into an
//!   error**, **no `Accept-Encoding`**, **no idle connection kept**.
//! * **Deadlines**: one for the TCP connection and TLS handshake, one for the whole exchange.
//! * **Small buffers**: a response head of at most 16 KiB, buffers of 32 KiB in and 16 KiB out
//!   (ureq's defaults are 128 KiB each, allocated and zeroed for every request).
//! * **One write per flight**: each TLS flight is sent in one write, and the client's last
//!   handshake flight goes out with the request ([`handshake`]), so a fetch costs the server two
//!   wake-ups to read it instead of four.
//! * **DNS through the caller's [`AddressResolver`]**, not ureq's (which starts a thread per lookup
//!   when a timeout is set), to the port the caller names; with `refuse_private`, addresses that
//!   are not globally reachable are refused ([`is_non_global`], SEC-10). The addresses handed out
//!   are remembered, for error details.
//!
//! The error helpers ([`rustls_error`], [`tls_failure`], [`printable`], [`seconds`]) turn what
//! went wrong into words an operator can act on; each caller adds its own context.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rustls::client::Resumption;
use rustls::{CertificateError, ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use rustls_pki_types::ServerName;
use ureq::Agent;
use ureq::http::Uri;
use ureq::unversioned::resolver::{ResolvedSocketAddrs, Resolver as UreqResolver};
use ureq::unversioned::transport::{
    Buffers, ConnectionDetails, Connector, LazyBuffers, NextTimeout, TcpConnector, Transport,
    TransportAdapter,
};

use crate::calendar::rfc3339;
use crate::cert::TrustAnchors;
use crate::ports::{AddressResolver, DnsError};
use crate::verdict::Reason;

/// The largest response head (status line and headers) accepted: 16 KiB, four times what common
/// servers allow for a request's headers. A longer one is an error that says so.
const MAX_RESPONSE_HEAD: usize = 16 * 1024;
/// The input buffer of each transport layer (TCP, then TLS): room for the longest head and more.
/// ureq's default (128 KiB, and as much again for output, at both layers) made every fetch
/// allocate and zero half a megabyte, a quarter of `mtasts serve`'s CPU time per cold lookup
/// (BENCHMARKS.md "Scale").
const INPUT_BUFFER: usize = 32 * 1024;
/// The output buffer of each transport layer: a request head, or a chunk of an uploaded report.
const OUTPUT_BUFFER: usize = 16 * 1024;

/// What differs between the agents: who is asking, the budgets, and where to connect.
#[derive(Clone, Copy, Debug)]
pub(crate) struct AgentSettings {
    /// The `User-Agent` header.
    pub user_agent: &'static str,
    /// Budget for the whole exchange: connecting, sending, and receiving headers and body.
    pub timeout: Duration,
    /// Budget for the TCP connection and the TLS handshake (within `timeout`).
    pub connect_timeout: Duration,
    /// The TCP port, whatever the URI says.
    pub port: u16,
    /// Refuse addresses that are not globally reachable (SEC-10).
    pub refuse_private: bool,
}

/// A hardened agent (see the module documentation) for one request. The addresses the resolver
/// hands out are pushed onto `addrs`, for error details.
pub(crate) fn agent(
    settings: &AgentSettings,
    tls: Arc<ClientConfig>,
    resolver: Arc<dyn AddressResolver>,
    addrs: Arc<Mutex<Vec<SocketAddr>>>,
) -> Agent {
    let config = Agent::config_builder()
        .https_only(true)
        .proxy(None)
        .max_redirects(0)
        .max_redirects_will_error(false)
        .http_status_as_error(false)
        .accept_encoding("")
        .user_agent(settings.user_agent)
        .max_idle_connections(0)
        .max_idle_connections_per_host(0)
        .max_response_header_size(MAX_RESPONSE_HEAD)
        .input_buffer_size(INPUT_BUFFER)
        .output_buffer_size(OUTPUT_BUFFER)
        .timeout_global(Some(settings.timeout))
        .timeout_connect(Some(settings.connect_timeout))
        .build();
    let resolver =
        HostResolver { inner: resolver, port: settings.port, refuse_private: settings.refuse_private, addrs };
    let connector = ().chain(TcpConnector::default()).chain(RustlsStep { config: tls });
    Agent::with_parts(config, connector, resolver)
}

/// The rustls client configuration of every agent: ring, TLS 1.3 and 1.2, the configured anchors,
/// SNI on, no resumption (nothing is remembered between requests), no client certificate, and
/// ring's cipher suites with AES-128-GCM offered first ([`CIPHER_SUITES`]).
pub(crate) fn client_config(anchors: &TrustAnchors) -> Result<Arc<ClientConfig>, rustls::Error> {
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites = CIPHER_SUITES.to_vec();
    let provider = Arc::new(provider);
    let roots = RootCertStore { roots: anchors.anchors().map_err(|e| rustls::Error::General(e.0))?.to_vec() };
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.enable_sni = true;
    config.resumption = Resumption::disabled();
    Ok(Arc::new(config))
}

/// The cipher suites offered, in order: ring's, with AES-128-GCM (SHA-256) before AES-256-GCM
/// (SHA-384) in each family, as browsers offer them. A server that follows the client's order
/// (rustls's default, and nginx's) then hashes the handshake with SHA-256, which ring computes
/// with the CPU's SHA instructions where it has them, instead of SHA-384 in software: ring's
/// `sha512_block_data_order_nohw` was 1.7% of `mtasts serve`'s samples during cold lookups
/// (BENCHMARKS.md "Cold lookups"). Both are 128-bit secure or better.
const CIPHER_SUITES: [rustls::SupportedCipherSuite; 9] = {
    use rustls::crypto::ring::cipher_suite as cs;
    [
        cs::TLS13_AES_128_GCM_SHA256,
        cs::TLS13_AES_256_GCM_SHA384,
        cs::TLS13_CHACHA20_POLY1305_SHA256,
        cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    ]
};

/// The rustls error inside a ureq error, wherever ureq 3.5 put it: `Error::Rustls` (our
/// handshake), `Error::Io` of kind `InvalidData` (rustls errors after the handshake), or
/// `Error::Other`.
pub(crate) fn rustls_error(error: &ureq::Error) -> Option<&rustls::Error> {
    match error {
        ureq::Error::Rustls(e) => Some(e),
        ureq::Error::Io(e) => e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()),
        ureq::Error::Other(e) => e.downcast_ref::<rustls::Error>(),
        _ => None,
    }
}

/// Certificate problems are `sts-webpki-invalid`; any other TLS problem is a fetch error.
pub(crate) fn tls_failure(error: &rustls::Error, host: &str) -> (Reason, String) {
    match error {
        rustls::Error::InvalidCertificate(e) => (Reason::StsWebpkiInvalid, certificate_problem(e, host)),
        rustls::Error::NoCertificatesPresented => {
            (Reason::StsWebpkiInvalid, "the server presented no certificate".into())
        }
        rustls::Error::AlertReceived(alert) => (
            Reason::StsPolicyFetchError,
            format!("TLS handshake failed: the server sent the alert {alert:?} (does it serve {host}?)"),
        ),
        rustls::Error::PeerIncompatible(why) => (
            Reason::StsPolicyFetchError,
            format!(
                "TLS handshake failed: the server is incompatible ({why:?}); TLS 1.2 or later is required"
            ),
        ),
        other => (Reason::StsPolicyFetchError, format!("TLS error: {other}")),
    }
}

fn certificate_problem(error: &CertificateError, host: &str) -> String {
    match error {
        CertificateError::Expired => "certificate expired".into(),
        CertificateError::ExpiredContext { not_after, .. } => {
            format!("certificate expired (valid until {})", rfc3339(not_after.as_secs()))
        }
        CertificateError::NotValidYet => "certificate is not valid yet".into(),
        CertificateError::NotValidYetContext { not_before, .. } => {
            format!("certificate is not valid yet (valid from {})", rfc3339(not_before.as_secs()))
        }
        CertificateError::NotValidForName => format!("certificate is not valid for {host}"),
        CertificateError::NotValidForNameContext { presented, .. } if presented.is_empty() => {
            format!("certificate is not valid for {host} (it names no host in subjectAltName)")
        }
        CertificateError::NotValidForNameContext { presented, .. } => {
            let names: Vec<String> = presented.iter().map(|n| presented_name(n)).collect();
            format!("certificate is not valid for {host} (it is for {})", names.join(", "))
        }
        CertificateError::UnknownIssuer => "certificate issued by an untrusted CA (the chain leads to no \
                                            configured root: self-signed, private CA or missing intermediate)"
            .into(),
        CertificateError::BadSignature => "certificate has a bad signature".into(),
        CertificateError::Revoked => "certificate is revoked".into(),
        CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
            "certificate is not for TLS server authentication (extended key usage)".into()
        }
        CertificateError::BadEncoding => "certificate is malformed".into(),
        CertificateError::UnhandledCriticalExtension => {
            "certificate has an unsupported critical extension".into()
        }
        other => format!("certificate is invalid: {other}"),
    }
}

/// A name from `NotValidForNameContext::presented`. rustls-webpki 0.103 fills that list with the
/// `Debug` form of each SAN entry (`DnsName("www.example.com")`, `IpAddress(192.0.2.1)`, ...);
/// DNS names are shown bare, everything else as it comes.
fn presented_name(debug: &str) -> String {
    let bare = debug
        .strip_prefix("DnsName(\"")
        .and_then(|rest| rest.strip_suffix("\")"))
        .map(str::to_owned)
        .or_else(|| {
            debug
                .strip_prefix("IpAddress(")
                .and_then(|r| r.strip_suffix(')'))
                .map(|ip| format!("IP address {ip}"))
        })
        .unwrap_or_else(|| debug.to_owned());
    printable(bare.as_bytes())
}

/// Server-supplied text for a detail line: escaped, and cut at 200 characters.
pub(crate) fn printable(bytes: &[u8]) -> String {
    const MAX: usize = 200;
    let mut text = bytes.escape_ascii().to_string();
    if text.len() > MAX {
        text.truncate(MAX);
        text.push_str("...");
    }
    text
}

/// `30 s`, or `1500 ms` when not a whole number of seconds.
pub(crate) fn seconds(d: Duration) -> String {
    if d.subsec_nanos() == 0 { format!("{} s", d.as_secs()) } else { format!("{} ms", d.as_millis()) }
}

/// SEC-10: addresses a policy host taken from an attacker-chosen domain should not lead to.
/// Everything the IANA special-purpose address registries do not list as globally reachable
/// (RFC 6890 and its updates), plus multicast and deprecated ranges:
///
/// * IPv4: "this network" 0/8, RFC 1918, shared 100.64/10, loopback, link-local, IETF protocol
///   assignments 192.0.0/24, documentation, the deprecated 6to4 relay anycast 192.88.99/24,
///   benchmarking 198.18/15, multicast, reserved 240/4, broadcast.
/// * IPv6: unspecified, loopback, discard-only 100::/64, dummy prefix 100:0:0:1::/64, IETF
///   protocol assignments 2001::/23 (but for its globally reachable anycast, AMT, AS112, ORCHIDv2
///   and drone-ID blocks), the local-use translation prefix 64:ff9b:1::/48, 6to4 2002::/16
///   (deprecated, RFC 7526), documentation 2001:db8::/32 and 3fff::/20, SRv6 SIDs 5f00::/16,
///   unique-local, link-local, site-local, multicast.
/// * IPv6 forms that carry an IPv4 address: IPv4-mapped `::ffff:a.b.c.d` and the well-known NAT64
///   prefix `64:ff9b::/96` are refused when the IPv4 address inside is (a NAT64 gateway would
///   take us there); the deprecated IPv4-compatible `::a.b.c.d` always.
fn is_non_global(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_non_global_v4(v4),
        IpAddr::V6(v6) => is_non_global_v6(v6),
    }
}

fn is_non_global_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0 // "this network" 0/8
        || (a == 100 && (b & 0xc0) == 64) // shared address space 100.64/10
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments 192.0.0/24
        || (a == 192 && b == 88 && c == 99) // 6to4 relay anycast 192.88.99/24 (deprecated)
        || (a == 198 && (b & 0xfe) == 18) // benchmarking 198.18/15
        || a >= 240 // reserved 240/4
}

fn is_non_global_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_non_global_v4(v4);
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        // NAT64 well-known prefix 64:ff9b::/96 (RFC 6052): the IPv4 address in the last 32 bits.
        let [.., hi, lo] = s;
        return is_non_global_v4(Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo)));
    }
    let ietf_global = |s: [u16; 8]| {
        (s[1] == 1 && s[2..7] == [0; 5] && matches!(s[7], 1..=3)) // PCP, TURN, DNS-SD anycast
            || s[1] == 3 // AMT 2001:3::/32
            || (s[1] == 4 && s[2] == 0x112) // AS112-v6 2001:4:112::/48
            || (0x20..=0x3f).contains(&s[1]) // ORCHIDv2 2001:20::/28, DETs 2001:30::/28
    };
    ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || s[..6] == [0; 6] // IPv4-compatible ::a.b.c.d (deprecated)
        || s[..3] == [0x64, 0xff9b, 1] // local-use IPv4/IPv6 translation 64:ff9b:1::/48
        || s[..4] == [0x100, 0, 0, 0] // discard-only 100::/64
        || s[..4] == [0x100, 0, 0, 1] // dummy prefix 100:0:0:1::/64
        || (s[0] == 0x2001 && s[1] < 0x200 && !ietf_global(s)) // IETF protocol assignments 2001::/23
        || s[0] == 0x2002 // 6to4 2002::/16 (deprecated)
        || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation 2001:db8::/32
        || (s[0] & 0xfff0) == 0x3ff0 // documentation 3fff::/20
        || s[0] == 0x5f00 // SRv6 SIDs 5f00::/16
        || (s[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
        || (s[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
        || (s[0] & 0xffc0) == 0xfec0 // site-local fec0::/10 (deprecated)
}

/// Why the host could not be resolved to an address we may use.
#[derive(Debug)]
pub(crate) enum LookupError {
    Dns { host: String, error: DnsError },
    NoAddress { host: String },
    Refused { host: String, addresses: Vec<IpAddr> },
}

impl fmt::Display for LookupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Dns { host, error: DnsError::NotFound } => {
                write!(f, "DNS: {host} does not exist or has no address (NXDOMAIN or no A/AAAA record)")
            }
            Self::Dns { host, error: DnsError::Temporary(why) } => {
                write!(f, "DNS: cannot resolve {host}: {why}")
            }
            Self::NoAddress { host } => write!(f, "DNS: {host} has no A or AAAA record"),
            Self::Refused { host, addresses } => {
                let list = addresses.iter().map(IpAddr::to_string).collect::<Vec<_>>().join(", ");
                write!(
                    f,
                    "{host} resolves only to non-public addresses ({list}), refused (refuse_private_addresses is on)"
                )
            }
        }
    }
}

impl std::error::Error for LookupError {}

/// ureq's resolver, over an [`AddressResolver`]: no thread, and the port from the settings.
/// Remembers the addresses it gave out, for error details.
struct HostResolver {
    inner: Arc<dyn AddressResolver>,
    port: u16,
    refuse_private: bool,
    addrs: Arc<Mutex<Vec<SocketAddr>>>,
}

impl fmt::Debug for HostResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostResolver")
            .field("port", &self.port)
            .field("refuse_private", &self.refuse_private)
            .finish_non_exhaustive()
    }
}

impl UreqResolver for HostResolver {
    fn resolve(
        &self,
        uri: &Uri,
        _config: &ureq::config::Config,
        _timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let host = uri.host().ok_or_else(|| ureq::Error::BadUri(format!("{uri}: no host")))?;
        let lookup = |e: LookupError| ureq::Error::Other(Box::new(e));
        let ips = self
            .inner
            .addresses(host)
            .map_err(|error| lookup(LookupError::Dns { host: host.into(), error }))?;
        if ips.is_empty() {
            return Err(lookup(LookupError::NoAddress { host: host.into() }));
        }
        let usable: Vec<IpAddr> =
            ips.iter().copied().filter(|ip| !(self.refuse_private && is_non_global(*ip))).collect();
        if usable.is_empty() {
            return Err(lookup(LookupError::Refused { host: host.into(), addresses: ips }));
        }
        let mut out = self.empty();
        let mut seen = self.addrs.lock();
        for ip in usable {
            let addr = SocketAddr::new(ip, self.port);
            if out.try_push(addr).is_err() {
                break; // ureq keeps at most 16 addresses
            }
            seen.push(addr);
        }
        Ok(out)
    }
}

/// The TLS step of the connector chain, with our rustls configuration (ureq's own rustls
/// connector takes roots only as certificate DER, and we hold trust anchors).
#[derive(Debug)]
struct RustlsStep {
    config: Arc<ClientConfig>,
}

impl<In: Transport> Connector<In> for RustlsStep {
    type Out = RustlsTransport;

    fn connect(
        &self,
        details: &ConnectionDetails<'_>,
        chained: Option<In>,
    ) -> Result<Option<Self::Out>, ureq::Error> {
        let Some(transport) = chained else {
            return Ok(None);
        };
        if !details.needs_tls() {
            return Err(ureq::Error::TlsRequired);
        }
        let host =
            details.uri.host().ok_or_else(|| ureq::Error::BadUri(format!("{}: no host", details.uri)))?;
        let name = ServerName::try_from(host.to_owned())
            .map_err(|_| ureq::Error::Tls("policy host is not a DNS name"))?;
        let mut conn = ClientConnection::new(Arc::clone(&self.config), name)?;
        let mut sock = TransportAdapter::new(transport.boxed(), Arc::clone(&details.current_time));
        sock.set_timeout(remaining(details));
        handshake(&mut conn, &mut sock).map_err(handshake_error)?;
        let buffers =
            LazyBuffers::new(details.config.input_buffer_size(), details.config.output_buffer_size());
        Ok(Some(RustlsTransport { buffers, stream: StreamOwned::new(conn, sock) }))
    }
}

/// Runs the TLS handshake up to the point where the request may be sent. Each flight of ours is
/// sent in one write ([`send_pending`]); the last one (in TLS 1.3, the client's Finished, after a
/// ChangeCipherSpec for middlebox compatibility) is left queued, to go out with the request in
/// [`RustlsTransport::transmit_output`]. rustls's `complete_io` would write each record with a
/// write of its own (the transport below does not gather buffers), so the server got three
/// segments, and woke three times, where one does.
fn handshake(conn: &mut ClientConnection, sock: &mut (impl Read + Write)) -> io::Result<()> {
    while conn.is_handshaking() {
        send_pending(conn, sock)?;
        if conn.read_tls(sock)? == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "TLS handshake not completed"));
        }
        if let Err(e) = conn.process_new_packets() {
            // The alert that says why, as `complete_io` sends it; the error is what matters.
            let _ = send_pending(conn, sock);
            return Err(io::Error::new(io::ErrorKind::InvalidData, e));
        }
    }
    Ok(())
}

/// Sends application data, encrypted behind whatever the handshake left queued (the client's
/// Finished) and written with it in one write.
fn send_app_data(conn: &mut ClientConnection, sock: &mut impl Write, data: &[u8]) -> io::Result<()> {
    let mut rest = data;
    while !rest.is_empty() {
        // rustls takes less than offered when its send buffer is full: sent, it takes more.
        let taken = conn.writer().write(rest)?;
        if taken == 0 && !conn.wants_write() {
            return Err(io::Error::from(io::ErrorKind::WriteZero));
        }
        send_pending(conn, sock)?;
        rest = &rest[taken..];
    }
    Ok(())
}

/// Writes everything rustls has queued for the peer in one write.
fn send_pending(conn: &mut ClientConnection, sock: &mut impl Write) -> io::Result<()> {
    if !conn.wants_write() {
        return Ok(());
    }
    let mut wire = Vec::with_capacity(512);
    while conn.wants_write() {
        conn.write_tls(&mut wire)?;
    }
    sock.write_all(&wire)?;
    sock.flush()
}

/// What is left of the connect budget after the TCP connection: the handshake shares it with the
/// TCP connect (ureq's own TLS connectors do the same with a crate-private call).
fn remaining(details: &ConnectionDetails<'_>) -> NextTimeout {
    use ureq::unversioned::transport::time::{Duration as Budget, Instant as At};
    let mut timeout = details.timeout;
    if let (Budget::Exact(limit), At::Exact(start), At::Exact(now)) =
        (timeout.after, details.now, (details.current_time)())
    {
        timeout.after = Budget::Exact(limit.saturating_sub(now.saturating_duration_since(start)));
    }
    timeout
}

/// A rustls error from the handshake stays a rustls error; timeouts and I/O errors stay ureq's.
fn handshake_error(e: io::Error) -> ureq::Error {
    match e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
        Some(tls) => ureq::Error::Rustls(tls.clone()),
        None => ureq::Error::from(e),
    }
}

struct RustlsTransport {
    buffers: LazyBuffers,
    stream: StreamOwned<ClientConnection, TransportAdapter>,
}

impl fmt::Debug for RustlsTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RustlsTransport").finish_non_exhaustive()
    }
}

impl Transport for RustlsTransport {
    fn buffers(&mut self) -> &mut dyn Buffers {
        &mut self.buffers
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), ureq::Error> {
        // The timeout is passed on unchanged: the TCP transport below applies the per-write limit.
        self.stream.get_mut().set_timeout(timeout);
        let output = &self.buffers.output()[..amount];
        send_app_data(&mut self.stream.conn, &mut self.stream.sock, output)?;
        Ok(())
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, ureq::Error> {
        self.stream.get_mut().set_timeout(timeout);
        let input = self.buffers.input_append_buf();
        let amount = self.stream.read(input)?;
        self.buffers.input_appended(amount);
        Ok(amount > 0)
    }

    fn is_open(&mut self) -> bool {
        self.stream.get_mut().get_mut().is_open()
    }

    fn is_tls(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use rustls::ClientConnection;
    use rustls_pki_types::ServerName;

    use super::*;

    /// The extensions of the first ClientHello our configuration sends, by type.
    fn client_hello_extensions() -> Vec<(u16, Vec<u8>)> {
        let config = client_config(&TrustAnchors::webpki()).expect("config");
        let name = ServerName::try_from("mta-sts.example.test").expect("name");
        let mut conn = ClientConnection::new(config, name).expect("connection");
        let mut wire = Vec::new();
        conn.write_tls(&mut wire).expect("client hello");

        // TLS record (type 22 handshake), handshake message (type 1 ClientHello).
        assert_eq!(wire[0], 22, "handshake record");
        let hello = &wire[5..];
        assert_eq!(hello[0], 1, "ClientHello");
        let body = &hello[4..];
        assert_eq!(&body[..2], &[3, 3], "legacy_version is TLS 1.2");
        let mut at = 2 + 32; // version, random
        at += 1 + usize::from(body[at]); // session id
        at += 2 + usize::from(u16::from_be_bytes([body[at], body[at + 1]])); // cipher suites
        at += 1 + usize::from(body[at]); // compression methods
        let end = at + 2 + usize::from(u16::from_be_bytes([body[at], body[at + 1]]));
        at += 2;
        let mut extensions = Vec::new();
        while at < end {
            let kind = u16::from_be_bytes([body[at], body[at + 1]]);
            let len = usize::from(u16::from_be_bytes([body[at + 2], body[at + 3]]));
            extensions.push((kind, body[at + 4..at + 4 + len].to_vec()));
            at += 4 + len;
        }
        extensions
    }

    /// A server in memory that counts the client's writes (each a TCP segment on a socket with
    /// `TCP_NODELAY`, and a wake-up of the server's reader).
    struct Peer {
        server: rustls::ServerConnection,
        writes: usize,
    }

    impl Write for Peer {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.writes += 1;
            let mut rest = buf;
            while !rest.is_empty() {
                self.server.read_tls(&mut rest)?;
                self.server.process_new_packets().map_err(io::Error::other)?;
            }
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Read for Peer {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.server.write_tls(&mut &mut buf[..])
        }
    }

    /// The client's writes up to and with the request (the handshake, then one request sent by
    /// `send_app_data`, as `RustlsTransport::transmit_output` sends it).
    /// Also gives the cipher suite negotiated with a rustls server of ring's defaults.
    fn writes_until_the_request(
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> (usize, Option<rustls::CipherSuite>) {
        use mtasts_fixtures::pki::pki;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
        let chain = pki().leaf(&["mta-sts.example.test"]);
        let certs = chain.der.iter().map(|d| CertificateDer::from(d.clone())).collect();
        let key = PrivateKeyDer::from_pem_slice(chain.key_pem.as_bytes()).expect("key");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .expect("server config");
        let mut peer =
            Peer { server: rustls::ServerConnection::new(Arc::new(server)).expect("server"), writes: 0 };
        let anchors = TrustAnchors::from_pem(pki().root_pem.as_bytes(), "test CA").expect("anchors");
        let name = ServerName::try_from("mta-sts.example.test").expect("name");
        let mut conn = ClientConnection::new(client_config(&anchors).expect("config"), name).expect("client");
        handshake(&mut conn, &mut peer).expect("handshake");
        let request = b"GET /.well-known/mta-sts.txt HTTP/1.1\r\nHost: mta-sts.example.test\r\n\r\n";
        send_app_data(&mut conn, &mut peer, request).expect("request");
        let mut got = Vec::new();
        peer.server.reader().read_to_end(&mut got).ok();
        assert_eq!(got, request, "the server read the request");
        (peer.writes, conn.negotiated_cipher_suite().map(|s| s.suite()))
    }

    /// Each flight of the client is one write, and its last one goes with the request: in TLS
    /// 1.3 the ClientHello, then the ChangeCipherSpec, the Finished and the request together
    /// (rustls's `complete_io` wrote these three one by one).
    #[test]
    fn tls_flights_and_the_request_go_out_in_as_few_writes_as_the_protocol_allows() {
        let (tls13, _) = writes_until_the_request(&[&rustls::version::TLS13]);
        assert_eq!(tls13, 2, "TLS 1.3: ClientHello; ChangeCipherSpec + Finished + request");
        // TLS 1.2: ClientHello; ClientKeyExchange + ChangeCipherSpec + Finished; the request after
        // the server's Finished.
        let (tls12, _) = writes_until_the_request(&[&rustls::version::TLS12]);
        assert_eq!(tls12, 3, "TLS 1.2");
    }

    /// ring's suites, every one of them, AES-128-GCM first: a server that follows the client's
    /// order (rustls with ring's defaults, which prefer AES-256-GCM themselves) picks it.
    #[test]
    fn aes_128_gcm_is_offered_first_and_nothing_else_changes() {
        let mut ours: Vec<_> = CIPHER_SUITES.iter().map(|s| s.suite()).collect();
        let mut ring: Vec<_> = rustls::crypto::ring::ALL_CIPHER_SUITES.iter().map(|s| s.suite()).collect();
        assert_ne!(ours, ring, "reordered");
        ours.sort_by_key(|s| u16::from(*s));
        ring.sort_by_key(|s| u16::from(*s));
        assert_eq!(ours, ring, "the same suites");
        let (_, tls13) = writes_until_the_request(&[&rustls::version::TLS13]);
        assert_eq!(tls13, Some(rustls::CipherSuite::TLS13_AES_128_GCM_SHA256));
        let (_, tls12) = writes_until_the_request(&[&rustls::version::TLS12]);
        assert_eq!(tls12, Some(rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256));
    }

    #[test]
    fn fetch_14_offers_tls_1_3_and_1_2_only() {
        let extensions = client_hello_extensions();
        let (_, versions) = extensions.iter().find(|(kind, _)| *kind == 43).expect("supported_versions");
        let offered: Vec<u16> = versions[1..].chunks(2).map(|c| u16::from_be_bytes([c[0], c[1]])).collect();
        assert_eq!(usize::from(versions[0]), versions.len() - 1);
        // GREASE values (0x?a?a) aside, exactly TLS 1.3 (0x0304) and TLS 1.2 (0x0303).
        let real: Vec<u16> = offered.into_iter().filter(|v| v & 0x0f0f != 0x0a0a).collect();
        assert_eq!(real, vec![0x0304, 0x0303]);
    }

    #[test]
    fn fetch_13_client_hello_names_the_policy_host() {
        let extensions = client_hello_extensions();
        let (_, sni) = extensions.iter().find(|(kind, _)| *kind == 0).expect("server_name");
        assert!(sni.ends_with(b"mta-sts.example.test"), "{sni:?}");
    }

    #[test]
    fn sec_10_non_global_addresses() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.1.1",
            "0.0.0.0",
            "100.64.0.1",
            "255.255.255.255",
            "224.0.0.1",
            "240.0.0.1",
            "192.0.2.1",
            "::1",
            "::",
            "fc00::1",
            "fd12::1",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "2001:db8::1",
            "::127.0.0.1",
        ] {
            assert!(is_non_global(ip.parse().expect("ip")), "{ip}");
        }
        for ip in ["93.184.215.14", "8.8.8.8", "100.128.0.1", "2606:4700::1111", "::ffff:8.8.8.8"] {
            assert!(!is_non_global(ip.parse().expect("ip")), "{ip}");
        }
    }

    #[test]
    fn sec_10_special_purpose_registries() {
        // One address per range of the IANA special-purpose registries that is not globally
        // reachable, and the IPv6 forms that carry a refused IPv4 address.
        for ip in [
            "100.64.0.0",
            "100.127.255.255",
            "192.0.0.1",
            "192.0.0.8",
            "192.0.0.170",
            "192.0.0.255",
            "192.88.99.1",
            "198.18.0.1",
            "198.19.255.255",
            "198.51.100.7",
            "203.0.113.9",
            "64:ff9b::7f00:1",
            "64:ff9b::a00:1",
            "64:ff9b::c0a8:101",
            "64:ff9b::6440:1",
            "64:ff9b:1::1",
            "64:ff9b:1:ffff::808:808",
            "2002::1",
            "2002:7f00:1::1",
            "2002:808:808::1",
            "::ffff:100.64.0.1",
            "::ffff:198.18.0.1",
            "::ffff:192.0.0.1",
            "::10.0.0.1",
            "::8.8.8.8",
            "100::1",
            "100:0:0:1::1",
            "2001::1",
            "2001:2::1",
            "2001:10::1",
            "2001:1::4",
            "2001:1ff::1",
            "3fff::1",
            "3fff:fff::1",
            "5f00::1",
            "fec0::1",
            "ff0e::1",
        ] {
            assert!(is_non_global(ip.parse().expect("ip")), "{ip}");
        }
        for ip in [
            "64:ff9b::808:808",
            "64:ff9b::5db8:d70e",
            "2001:1::1",
            "2001:1::2",
            "2001:1::3",
            "2001:3::1",
            "2001:4:112::1",
            "2001:20::1",
            "2001:3f::1",
            "2001:200::1",
            "2a00:1450::1",
            "100.128.0.0",
            "100.63.255.255",
            "198.20.0.1",
            "198.17.255.255",
            "192.0.1.1",
            "192.88.98.1",
            "::ffff:100.128.0.1",
        ] {
            assert!(!is_non_global(ip.parse().expect("ip")), "{ip}");
        }
    }

    #[test]
    fn details_are_readable() {
        assert_eq!(seconds(Duration::from_secs(30)), "30 s");
        assert_eq!(seconds(Duration::from_millis(1500)), "1500 ms");
        assert_eq!(printable(b"https://x/\r\nEvil: 1"), "https://x/\\r\\nEvil: 1");
        assert_eq!(printable(&[b'a'; 300]).len(), 203);
        let (reason, detail) = tls_failure(
            &rustls::Error::InvalidCertificate(CertificateError::NotValidForNameContext {
                expected: ServerName::try_from("mta-sts.example.com").expect("name"),
                presented: vec!["DnsName(\"www.example.com\")".into(), "IpAddress(192.0.2.1)".into()],
            }),
            "mta-sts.example.com",
        );
        assert_eq!(reason, Reason::StsWebpkiInvalid);
        assert_eq!(
            detail,
            "certificate is not valid for mta-sts.example.com (it is for www.example.com, IP address 192.0.2.1)"
        );
        assert_eq!(presented_name("www.example.com"), "www.example.com");
        assert_eq!(presented_name("DirectoryName"), "DirectoryName");
    }
}
