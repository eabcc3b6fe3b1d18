//! The policy fetch over HTTPS (RFC 8461 §3.3, §3.2 media type, §7.1 SNI, §7.2 TLS versions).
//!
//! [`HttpsFetcher`] implements [`Fetcher`]: one `GET` of `https://mta-sts.<domain>/.well-known/mta-sts.txt`
//! with ureq (blocking) over rustls with the ring provider. The rules it implements:
//!
//! * **Only that URL, only HTTPS.** Method `GET`, path `/.well-known/mta-sts.txt`, scheme `https`
//!   and nothing else; there is no `http://` fallback (FETCH-15, HOST-2).
//! * **PKIX validation for the Policy Host** against the configured [`TrustAnchors`] (the same
//!   anchors as MX validation): chain to an anchor, validity period, server-auth purpose, and the
//!   name `mta-sts.<domain>` in a SAN dNSName, wildcards only as a whole leftmost label, no subject
//!   CN (FETCH-1, FETCH-2, FETCH-3). A delegated policy host still needs a certificate for
//!   `mta-sts.<policy domain>` (HOST-6). Revocation is not checked (FETCH-4 is optional).
//! * **SNI** is the Policy Host name (FETCH-13).
//! * **TLS 1.2 and 1.3 only** (FETCH-14; rustls has no older versions). No session resumption:
//!   nothing of one fetch is kept for the next.
//! * **Status 200 only**; every other status, 2xx included, is a failure (FETCH-5).
//! * **Redirects are never followed**: a 3xx is a failure whose detail names the `Location`, which is
//!   not requested (FETCH-6).
//! * **No HTTP caching**: no conditional headers are sent and `Cache-Control`, `Expires`, `ETag` and
//!   `Last-Modified` are ignored; every call reaches the server (FETCH-7).
//! * **Media type `text/plain`**, compared case-insensitively, parameters (such as `charset`)
//!   ignored; a missing `Content-Type` is a failure (FETCH-8).
//! * **Size cap and timeouts** (FETCH-9, SEC-9): the body may hold at most
//!   [`FetchSettings::max_body_bytes`] (64 KiB by default); connecting (TCP and TLS handshake) is
//!   bounded by [`FetchSettings::connect_timeout`] (10 s) and the whole exchange, body included, by
//!   [`FetchSettings::timeout`] (30 s), so a server that trickles bytes is cut off.
//! * **No content coding**: no `Accept-Encoding` is sent and a response with a `Content-Encoding`
//!   other than `identity` is refused (ureq's gzip/brotli features are off, so nothing would
//!   decompress it).
//! * **Direct connections only**: proxy settings from the environment (`HTTPS_PROXY`, ...) are
//!   ignored, and the connector chain has no proxy step at all.
//! * **DNS through the engine's resolver**: the policy host is resolved by the [`AddressResolver`]
//!   that also serves the TXT lookup. With [`FetchSettings::refuse_private_addresses`], loopback,
//!   private, link-local and other non-global addresses are refused (SEC-10, off by default).
//!
//! Every failure becomes a [`Failure`] (FETCH-17): `sts-webpki-invalid` when the policy host's
//! certificate fails validation, `sts-policy-fetch-error` for everything else (DNS, connection,
//! timeout, TLS handshake problems that are not certificate validation, HTTP status, redirect,
//! media type, size). The detail starts with the URL and says what an operator should look at, e.g.
//! `https://mta-sts.example.com/.well-known/mta-sts.txt: certificate is not valid for
//! mta-sts.example.com (it is for www.example.com)`.
//!
//! Process model (DESIGN §2): each call builds its own ureq agent, which keeps no idle connection
//! and is dropped before the call returns; the only state kept between calls is the immutable
//! rustls client configuration. No thread is started: name resolution goes through our own
//! ureq resolver (ureq's default one spawns a thread per lookup when a timeout is set). The
//! [`AddressResolver`] enforces its own DNS timeouts; ureq's budget resumes after it.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rustls::client::Resumption;
use rustls::{CertificateError, ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use rustls_pki_types::ServerName;
use ureq::http::{StatusCode, Uri, header};
use ureq::unversioned::resolver::{ResolvedSocketAddrs, Resolver as UreqResolver};
use ureq::unversioned::transport::{
    Buffers, ConnectionDetails, Connector, LazyBuffers, NextTimeout, TcpConnector, Transport,
    TransportAdapter,
};
use ureq::{Agent, Timeout};

use crate::cache::Failure;
use crate::calendar::rfc3339;
use crate::cert::TrustAnchors;
use crate::domain::Domain;
use crate::engine::{AddressResolver, DnsError, Fetcher};
use crate::verdict::Reason;

/// The `User-Agent` of policy fetches.
const USER_AGENT: &str = concat!("mtasts/", env!("CARGO_PKG_VERSION"), " (MTA-STS policy fetch)");

/// How the policy fetch behaves. [`FetchSettings::new`] gives the defaults; change fields after.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct FetchSettings {
    /// Roots the policy host's certificate must chain to (the same as for MX certificates).
    pub anchors: TrustAnchors,
    /// Budget for the whole fetch: connecting, sending, and receiving the headers and the body.
    /// Default 30 s: the RFC suggests "about a minute" as an upper bound (FETCH-9), but the fetch
    /// may run while an MTA waits to deliver, and a healthy policy host answers in well under a
    /// second.
    pub timeout: Duration,
    /// Budget for the TCP connection and the TLS handshake (within `timeout`). Default 10 s.
    pub connect_timeout: Duration,
    /// Largest body accepted, in bytes (FETCH-9). Default 65536 (64 KiB, the RFC's suggestion).
    pub max_body_bytes: u64,
    /// TCP port of the policy host. Always 443 in production; tests point it at a local fixture.
    /// The URL, the `Host` header, SNI and the certificate name check are unaffected.
    pub port: u16,
    /// Refuse to connect to loopback, private, link-local and other non-global addresses (SEC-10:
    /// the policy host name is chosen by whoever controls the recipient domain). Default `false`.
    pub refuse_private_addresses: bool,
}

impl FetchSettings {
    /// The defaults: 30 s overall, 10 s to connect, 64 KiB body, port 443, private addresses
    /// allowed.
    pub fn new(anchors: TrustAnchors) -> Self {
        Self {
            anchors,
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            max_body_bytes: 65_536,
            port: 443,
            refuse_private_addresses: false,
        }
    }
}

/// Fetches policies over HTTPS by the rules of RFC 8461 §3.3 (see the module documentation).
///
/// Shared and immutable: one fetcher may serve many threads at once. It holds no socket, thread or
/// runtime between calls, so it survives `fork()`; a child may keep using it.
pub struct HttpsFetcher {
    settings: FetchSettings,
    resolver: Arc<dyn AddressResolver>,
    /// Built once; an error (which the ring provider never gives) is reported by every fetch.
    /// Built on the first fetch, so that a process which never fetches never loads its roots.
    tls: std::sync::OnceLock<Result<Arc<ClientConfig>, String>>,
}

impl fmt::Debug for HttpsFetcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpsFetcher").field("settings", &self.settings).finish_non_exhaustive()
    }
}

impl HttpsFetcher {
    /// A fetcher with these settings, resolving policy hosts through `resolver`.
    pub fn new(settings: FetchSettings, resolver: Arc<dyn AddressResolver>) -> Self {
        Self { settings, resolver, tls: std::sync::OnceLock::new() }
    }

    /// The settings in use.
    pub fn settings(&self) -> &FetchSettings {
        &self.settings
    }

    fn agent(&self, tls: Arc<ClientConfig>, addrs: Arc<Mutex<Vec<SocketAddr>>>) -> Agent {
        let s = &self.settings;
        let config = Agent::config_builder()
            .https_only(true)
            .proxy(None)
            .max_redirects(0)
            .max_redirects_will_error(false)
            .http_status_as_error(false)
            .accept_encoding("")
            .user_agent(USER_AGENT)
            .max_idle_connections(0)
            .max_idle_connections_per_host(0)
            .timeout_global(Some(s.timeout))
            .timeout_connect(Some(s.connect_timeout))
            .build();
        let resolver = PolicyResolver {
            inner: Arc::clone(&self.resolver),
            port: s.port,
            refuse_private: s.refuse_private_addresses,
            addrs,
        };
        let connector = ().chain(TcpConnector::default()).chain(PolicyTls { config: tls });
        Agent::with_parts(config, connector, resolver)
    }

    fn get(&self, domain: &Domain, url: &str) -> Result<Vec<u8>, (Reason, String)> {
        let tls = self
            .tls
            .get_or_init(|| client_config(&self.settings.anchors).map_err(|e| e.to_string()))
            .clone()
            .map_err(|e| (Reason::StsPolicyFetchError, format!("TLS setup: {e}")))?;
        let addrs = Arc::new(Mutex::new(Vec::new()));
        let agent = self.agent(tls, Arc::clone(&addrs));
        let classify = |e: ureq::Error| self.classify(e, domain, &addrs.lock());

        let mut response = agent.get(url).call().map_err(classify)?;

        let status = response.status();
        let location = response.headers().get(header::LOCATION).filter(|_| status.is_redirection());
        if let Some(location) = location {
            return Err((
                Reason::StsPolicyFetchError,
                format!(
                    "HTTP {} redirect to {} (redirects are not followed)",
                    status.as_u16(),
                    printable(location.as_bytes())
                ),
            ));
        }
        if status != StatusCode::OK {
            let text = status.canonical_reason().map(|r| format!(" {r}")).unwrap_or_default();
            return Err((
                Reason::StsPolicyFetchError,
                format!("HTTP {}{text} (only 200 is a policy)", status.as_u16()),
            ));
        }

        let headers = response.headers();
        if let Some(coding) = headers.get(header::CONTENT_ENCODING) {
            if !coding.as_bytes().eq_ignore_ascii_case(b"identity") {
                return Err((
                    Reason::StsPolicyFetchError,
                    format!(
                        "Content-Encoding is {} (none was asked for; serve the policy uncompressed)",
                        printable(coding.as_bytes())
                    ),
                ));
            }
        }
        let mut types = headers.get_all(header::CONTENT_TYPE).iter();
        match (types.next(), types.next()) {
            (None, _) => {
                return Err((Reason::StsPolicyFetchError, "no Content-Type (text/plain required)".into()));
            }
            (Some(_), Some(_)) => {
                return Err((
                    Reason::StsPolicyFetchError,
                    "several Content-Type headers (one text/plain required)".into(),
                ));
            }
            (Some(value), None) => {
                if !is_text_plain(value.as_bytes()) {
                    return Err((
                        Reason::StsPolicyFetchError,
                        format!("Content-Type is {}, not text/plain", printable(value.as_bytes())),
                    ));
                }
            }
        }

        let max = self.settings.max_body_bytes;
        if let Some(len) = response.body().content_length() {
            if len > max {
                return Err((
                    Reason::StsPolicyFetchError,
                    format!("body larger than {max} bytes (Content-Length: {len})"),
                ));
            }
        }
        response.body_mut().with_config().limit(max).read_to_vec().map_err(classify)
    }

    /// Turns a ureq error into a reason and a detail an operator can act on.
    fn classify(&self, error: ureq::Error, domain: &Domain, addrs: &[SocketAddr]) -> (Reason, String) {
        use ureq::Error as E;

        if let Some(tls) = rustls_error(&error) {
            return tls_failure(tls, &domain.policy_host());
        }
        let fetch_error = |detail: String| (Reason::StsPolicyFetchError, detail);
        let peers = if addrs.is_empty() {
            domain.policy_host()
        } else {
            addrs.iter().map(SocketAddr::to_string).collect::<Vec<_>>().join(", ")
        };
        match error {
            E::Timeout(Timeout::Connect) => fetch_error(format!(
                "could not connect to {peers} within {}",
                seconds(self.settings.connect_timeout)
            )),
            E::Timeout(_) => fetch_error(format!("timed out after {}", seconds(self.settings.timeout))),
            E::Other(inner) => match inner.downcast::<LookupError>() {
                Ok(lookup) => fetch_error(lookup.to_string()),
                Err(other) => fetch_error(other.to_string()),
            },
            E::HostNotFound => fetch_error(format!("{} has no address", domain.policy_host())),
            E::Io(e) => fetch_error(match e.kind() {
                io::ErrorKind::ConnectionRefused => format!("connection refused by {peers}"),
                io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted => {
                    format!("connection reset by {peers}")
                }
                io::ErrorKind::UnexpectedEof => {
                    format!("{peers} closed the connection before the response was complete")
                }
                io::ErrorKind::HostUnreachable | io::ErrorKind::NetworkUnreachable => {
                    format!("{peers} is unreachable: {e}")
                }
                _ => format!("network error with {peers}: {e}"),
            }),
            E::Protocol(e) => fetch_error(format!("invalid HTTP response: {e}")),
            E::LargeResponseHeader(size, max) => {
                fetch_error(format!("response header too large ({size} bytes, at most {max})"))
            }
            E::BodyExceedsLimit(max) => fetch_error(format!("body larger than {max} bytes")),
            other => fetch_error(other.to_string()),
        }
    }
}

impl Fetcher for HttpsFetcher {
    fn fetch(&self, domain: &Domain) -> Result<Vec<u8>, Failure> {
        let url = domain.policy_url();
        self.get(domain, &url)
            .map_err(|(reason, detail)| Failure { reason, detail: format!("{url}: {detail}") })
    }
}

/// The rustls client configuration of every fetch: ring, TLS 1.3 and 1.2, the configured anchors,
/// SNI on, no resumption (nothing is remembered between fetches), no client certificate.
pub(crate) fn client_config(anchors: &TrustAnchors) -> Result<Arc<ClientConfig>, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = RootCertStore { roots: anchors.anchors().to_vec() };
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.enable_sni = true;
    config.resumption = Resumption::disabled();
    Ok(Arc::new(config))
}

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

/// `text/plain`, in any case, with or without parameters (FETCH-8).
fn is_text_plain(value: &[u8]) -> bool {
    let media_type = value.split(|&b| b == b';').next().unwrap_or_default();
    media_type.trim_ascii().eq_ignore_ascii_case(b"text/plain")
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

/// Why the policy host could not be resolved to an address we may use.
#[derive(Debug)]
enum LookupError {
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

/// ureq's resolver, over the engine's [`AddressResolver`]: no thread, and the port from the
/// settings. Remembers the addresses it gave out, for error details.
pub(crate) struct PolicyResolver {
    pub(crate) inner: Arc<dyn AddressResolver>,
    pub(crate) port: u16,
    pub(crate) refuse_private: bool,
    pub(crate) addrs: Arc<Mutex<Vec<SocketAddr>>>,
}

impl fmt::Debug for PolicyResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PolicyResolver")
            .field("port", &self.port)
            .field("refuse_private", &self.refuse_private)
            .finish_non_exhaustive()
    }
}

impl UreqResolver for PolicyResolver {
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
pub(crate) struct PolicyTls {
    pub(crate) config: Arc<ClientConfig>,
}

impl<In: Transport> Connector<In> for PolicyTls {
    type Out = PolicyTlsTransport;

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
        conn.complete_io(&mut sock).map_err(handshake_error)?;
        if conn.is_handshaking() {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "TLS handshake not completed").into());
        }
        let buffers =
            LazyBuffers::new(details.config.input_buffer_size(), details.config.output_buffer_size());
        Ok(Some(PolicyTlsTransport { buffers, stream: StreamOwned::new(conn, sock) }))
    }
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

pub(crate) struct PolicyTlsTransport {
    buffers: LazyBuffers,
    stream: StreamOwned<ClientConnection, TransportAdapter>,
}

impl fmt::Debug for PolicyTlsTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PolicyTlsTransport").finish_non_exhaustive()
    }
}

impl Transport for PolicyTlsTransport {
    fn buffers(&mut self) -> &mut dyn Buffers {
        &mut self.buffers
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), ureq::Error> {
        // The timeout is passed on unchanged: the TCP transport below applies the per-write limit.
        self.stream.get_mut().set_timeout(timeout);
        let output = &self.buffers.output()[..amount];
        self.stream.write_all(output)?;
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
    fn fetch_8_media_type() {
        for ok in [
            "text/plain",
            "text/plain; charset=utf-8",
            "Text/Plain",
            "TEXT/PLAIN;format=flowed",
            " text/plain ",
        ] {
            assert!(is_text_plain(ok.as_bytes()), "{ok}");
        }
        for bad in ["text/html", "", "text/plainx", "text/plain-x; charset=utf-8", "application/octet-stream"]
        {
            assert!(!is_text_plain(bad.as_bytes()), "{bad}");
        }
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
