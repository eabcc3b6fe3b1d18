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
//! Process model (docs/architecture.md §3): each call builds its own ureq agent (the hardened agent of
//! `src/https.rs`, shared with the TLSRPT upload), which keeps no idle connection and is dropped
//! before the call returns; the only state kept between calls is the immutable
//! rustls client configuration. No thread is started: name resolution goes through our own
//! ureq resolver (ureq's default one spawns a thread per lookup when a timeout is set). The
//! [`AddressResolver`] enforces its own DNS timeouts; ureq's budget resumes after it.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rustls::ClientConfig;
use ureq::http::{StatusCode, header};
use ureq::{Agent, Timeout};

use crate::cert::TrustAnchors;
use crate::domain::Domain;
use crate::https::{
    self, AgentSettings, LookupError, client_config, printable, rustls_error, seconds, tls_failure,
};
use crate::ports::{AddressResolver, Failure, Fetcher};
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
        let settings = AgentSettings {
            user_agent: USER_AGENT,
            timeout: s.timeout,
            connect_timeout: s.connect_timeout,
            port: s.port,
            refuse_private: s.refuse_private_addresses,
        };
        https::agent(&settings, tls, Arc::clone(&self.resolver), addrs)
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

/// `text/plain`, in any case, with or without parameters (FETCH-8).
fn is_text_plain(value: &[u8]) -> bool {
    let media_type = value.split(|&b| b == b';').next().unwrap_or_default();
    media_type.trim_ascii().eq_ignore_ascii_case(b"text/plain")
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
