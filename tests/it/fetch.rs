//! `HttpsFetcher` against the local HTTPS fixture (RFC 8461 §3.3): each test names the requirement id (docs/conformance.md)
//! item it covers. Every policy host resolves to 127.0.0.1 through a stub `AddressResolver`; the
//! fixture picks its certificate by SNI. Nothing leaves the machine.

use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use mtasts::Domain;
use mtasts::cache::Failure;
use mtasts::engine::{AddressResolver, DnsError, Fetcher};
use mtasts::fetch::{FetchSettings, HttpsFetcher};
use mtasts::{Reason, TrustAnchors};
use mtasts_fixtures::https::{HttpsServer, Response};
use mtasts_fixtures::pki::{Chain, VALID, pki};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, date_time_ymd,
};

const HOST: &str = "mta-sts.example.test";
const URL: &str = "https://mta-sts.example.test/.well-known/mta-sts.txt";
const POLICY: &str = "version: STSv1\nmode: enforce\nmx: mx.example.test\nmax_age: 86400\n";
/// Generous bound for calls that must stop at a 1 s timeout (no tight timing asserts).
const BOUND: Duration = Duration::from_secs(10);

/// Every host is 127.0.0.1.
struct Loopback;

impl AddressResolver for Loopback {
    fn addresses(&self, _host: &str) -> Result<Vec<IpAddr>, DnsError> {
        Ok(vec![IpAddr::V4(Ipv4Addr::LOCALHOST)])
    }
}

/// Every lookup fails this way.
struct FailingDns(DnsError);

impl AddressResolver for FailingDns {
    fn addresses(&self, _host: &str) -> Result<Vec<IpAddr>, DnsError> {
        Err(self.0.clone())
    }
}

/// A second CA, trusted alongside the test PKI's root, for certificates the PKI cannot make
/// (CN only, odd wildcards, self-signed for the policy host).
struct ExtraCa {
    root_pem: String,
    issuer: CertifiedIssuer<'static, KeyPair>,
}

fn extra_ca() -> &'static ExtraCa {
    static CA: OnceLock<ExtraCa> = OnceLock::new();
    CA.get_or_init(|| {
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
        p.distinguished_name.push(DnType::CommonName, "fetch test CA");
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
        p.not_before = date_time_ymd(2020, 1, 1);
        p.not_after = date_time_ymd(2045, 1, 1);
        let issuer = CertifiedIssuer::self_signed(p, KeyPair::generate().expect("key")).expect("CA");
        ExtraCa { root_pem: issuer.pem(), issuer }
    })
}

fn leaf_params(sans: &[&str], cn: &str) -> CertificateParams {
    let mut p =
        CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).expect("params");
    p.distinguished_name.push(DnType::CommonName, cn);
    p.not_before = date_time_ymd(VALID.0.0, VALID.0.1, VALID.0.2);
    p.not_after = date_time_ymd(VALID.1.0, VALID.1.1, VALID.1.2);
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    p
}

/// A leaf from the extra CA.
fn extra_leaf(sans: &[&str], cn: &str) -> Chain {
    let ca = extra_ca();
    let key = KeyPair::generate().expect("key");
    let cert = leaf_params(sans, cn).signed_by(&key, &ca.issuer).expect("leaf");
    Chain { der: vec![cert.der().to_vec(), ca.issuer.der().to_vec()], key_pem: key.serialize_pem() }
}

fn self_signed(sans: &[&str]) -> Chain {
    let key = KeyPair::generate().expect("key");
    let cert = leaf_params(sans, sans[0]).self_signed(&key).expect("self-signed");
    Chain { der: vec![cert.der().to_vec()], key_pem: key.serialize_pem() }
}

fn anchors() -> TrustAnchors {
    let pem = format!("{}{}", pki().root_pem, extra_ca().root_pem);
    TrustAnchors::from_pem(pem.as_bytes(), "test roots").expect("anchors")
}

fn settings(server: &HttpsServer) -> FetchSettings {
    let mut s = FetchSettings::new(anchors());
    s.port = server.addr().port();
    s
}

fn domain(name: &str) -> Domain {
    Domain::parse(name).expect("domain")
}

/// A server with a valid certificate for `mta-sts.example.test` that serves `response` there.
fn server_with(response: Response) -> HttpsServer {
    let server = HttpsServer::start().expect("server");
    server.set_cert(HOST, &pki().leaf(&[HOST]));
    server.set_response(HOST, response);
    server
}

fn fetch_with(server: &HttpsServer, tweak: impl FnOnce(&mut FetchSettings)) -> Result<Vec<u8>, Failure> {
    let mut s = settings(server);
    tweak(&mut s);
    HttpsFetcher::new(s, Arc::new(Loopback)).fetch(&domain("example.test"))
}

fn fetch(server: &HttpsServer) -> Result<Vec<u8>, Failure> {
    fetch_with(server, |_| {})
}

/// Asserts a failure with this reason whose detail starts with the URL and contains `needle`.
#[track_caller]
fn assert_fails(result: Result<Vec<u8>, Failure>, reason: Reason, needle: &str) -> Failure {
    let failure = result.expect_err("the fetch must fail");
    assert_eq!(failure.reason, reason, "{}", failure.detail);
    assert!(failure.detail.starts_with(&format!("{URL}: ")), "{}", failure.detail);
    assert!(failure.detail.contains(needle), "`{}` does not contain `{needle}`", failure.detail);
    failure
}

/// A server whose certificate for the policy host is `chain`.
fn server_with_cert(chain: &Chain) -> HttpsServer {
    let server = HttpsServer::start().expect("server");
    server.set_cert(HOST, chain);
    server.set_response(HOST, Response::policy(POLICY));
    server
}

// FETCH-1: PKIX validation of the policy host.

#[test]
fn fetch_1_valid_chain_gives_the_body() {
    let server = server_with(Response::policy(POLICY));
    assert_eq!(fetch(&server).expect("policy"), POLICY.as_bytes());
}

#[test]
fn fetch_1_self_signed_is_webpki_invalid() {
    let server = server_with_cert(&self_signed(&[HOST]));
    assert_fails(fetch(&server), Reason::StsWebpkiInvalid, "certificate issued by an untrusted CA");
    assert!(server.requests().is_empty(), "no request after a failed handshake");
}

#[test]
fn fetch_1_expired_is_webpki_invalid() {
    let server = server_with_cert(&pki().leaf_with(&[HOST], (2020, 1, 1), (2024, 1, 1), true));
    assert_fails(fetch(&server), Reason::StsWebpkiInvalid, "certificate expired (valid until 2024-01-01");
}

#[test]
fn fetch_1_not_yet_valid_is_webpki_invalid() {
    let server = server_with_cert(&pki().leaf_with(&[HOST], (2040, 1, 1), (2044, 1, 1), true));
    assert_fails(
        fetch(&server),
        Reason::StsWebpkiInvalid,
        "certificate is not valid yet (valid from 2040-01-01",
    );
}

#[test]
fn fetch_1_wrong_name_is_webpki_invalid() {
    let server = server_with_cert(&pki().leaf(&["www.example.test"]));
    let failure = assert_fails(fetch(&server), Reason::StsWebpkiInvalid, "");
    assert_eq!(
        failure.detail,
        format!("{URL}: certificate is not valid for {HOST} (it is for www.example.test)")
    );
}

#[test]
fn fetch_1_untrusted_root_is_webpki_invalid() {
    let server = server_with_cert(&pki().leaf_with(&[HOST], VALID.0, VALID.1, false));
    assert_fails(fetch(&server), Reason::StsWebpkiInvalid, "certificate issued by an untrusted CA");
}

#[test]
fn fetch_1_missing_intermediate_is_webpki_invalid() {
    let full = pki().leaf(&[HOST]);
    let leaf_only = Chain { der: vec![full.der[0].clone()], key_pem: full.key_pem.clone() };
    let server = server_with_cert(&leaf_only);
    assert_fails(fetch(&server), Reason::StsWebpkiInvalid, "untrusted CA");
}

#[test]
fn fetch_2_subject_cn_without_san_is_not_used() {
    let server = server_with_cert(&extra_leaf(&[], HOST));
    assert_fails(fetch(&server), Reason::StsWebpkiInvalid, &format!("certificate is not valid for {HOST}"));
}

#[test]
fn fetch_2_extra_ca_with_san_is_accepted() {
    // The control for the CN-only case: the same CA with the name in a SAN works.
    let server = server_with_cert(&extra_leaf(&[HOST], "unrelated"));
    assert_eq!(fetch(&server).expect("policy"), POLICY.as_bytes());
}

#[test]
fn fetch_3_wildcard_covers_the_policy_host() {
    let server = server_with_cert(&pki().leaf(&["*.example.test"]));
    assert_eq!(fetch(&server).expect("policy"), POLICY.as_bytes());
}

#[test]
fn fetch_3_partial_label_and_two_label_wildcards_are_refused() {
    for name in ["mta*.example.test", "*.test"] {
        let server = server_with_cert(&extra_leaf(&[name], "wildcard"));
        assert_fails(
            fetch(&server),
            Reason::StsWebpkiInvalid,
            &format!("certificate is not valid for {HOST}"),
        );
    }
}

#[test]
fn host_6_delegated_host_needs_a_certificate_for_the_policy_domain() {
    // mta-sts.user.test is a CNAME to mta-sts.provider.test (the stub resolver stands in for
    // it); the provider's certificate covers only its own name.
    let server = HttpsServer::start().expect("server");
    server.set_default_cert(&pki().leaf(&["mta-sts.provider.test"]));
    server.set_response("mta-sts.user.test", Response::policy(POLICY));
    let fetcher = HttpsFetcher::new(settings(&server), Arc::new(Loopback));
    let failure = fetcher.fetch(&domain("user.test")).expect_err("must fail");
    assert_eq!(failure.reason, Reason::StsWebpkiInvalid);
    assert_eq!(
        failure.detail,
        "https://mta-sts.user.test/.well-known/mta-sts.txt: certificate is not valid for mta-sts.user.test \
         (it is for mta-sts.provider.test)"
    );
    assert!(server.requests().is_empty());
}

// FETCH-5: only 200.

#[test]
fn fetch_5_every_status_but_200_fails() {
    let server = server_with(Response::policy(POLICY));
    for code in [201, 203, 204, 206, 304, 404, 500] {
        server.set_response(HOST, Response { status: code, ..Response::policy(POLICY) });
        assert_fails(fetch(&server), Reason::StsPolicyFetchError, &format!("HTTP {code}"));
    }
    server.set_response(HOST, Response::status(404));
    let failure = fetch(&server).expect_err("404");
    assert_eq!(failure.detail, format!("{URL}: HTTP 404 Not Found (only 200 is a policy)"));
    // 304 is not a redirect, whatever its class.
    server.set_response(HOST, Response::status(304).header("ETag", "\"v1\""));
    let failure = fetch(&server).expect_err("304");
    assert_eq!(failure.detail, format!("{URL}: HTTP 304 Not Modified (only 200 is a policy)"));
}

// FETCH-6: no redirects.

#[test]
fn fetch_6_redirects_fail_and_the_location_is_never_requested() {
    let server = server_with(Response::policy(POLICY));
    server.set_cert("mta-sts.other.test", &pki().leaf(&["mta-sts.other.test"]));
    server.set_response("mta-sts.other.test", Response::policy(POLICY));
    let location = format!("https://mta-sts.other.test:{}/.well-known/mta-sts.txt", server.addr().port());
    for code in [301, 302, 303, 307, 308] {
        server.set_response(HOST, Response::redirect(code, &location));
        assert_fails(
            fetch(&server),
            Reason::StsPolicyFetchError,
            &format!("HTTP {code} redirect to {location} (redirects are not followed)"),
        );
    }
    let requests = server.requests();
    assert_eq!(requests.len(), 5);
    for request in &requests {
        assert_eq!(request.header("Host"), Some(HOST));
        assert_eq!(request.sni.as_deref(), Some(HOST));
    }
}

// FETCH-7: no HTTP caching.

#[test]
fn fetch_7_cache_headers_are_ignored_and_every_fetch_reaches_the_server() {
    let response = Response::policy(POLICY)
        .header("Cache-Control", "max-age=60")
        .header("ETag", "\"v1\"")
        .header("Last-Modified", "Wed, 01 Jan 2025 00:00:00 GMT")
        .header("Expires", "Wed, 01 Jan 2099 00:00:00 GMT");
    let server = server_with(response);
    let fetcher = HttpsFetcher::new(settings(&server), Arc::new(Loopback));
    for _ in 0..2 {
        assert_eq!(fetcher.fetch(&domain("example.test")).expect("policy"), POLICY.as_bytes());
    }
    let requests = server.requests();
    assert_eq!(requests.len(), 2, "both fetches reach the server");
    for request in &requests {
        for conditional in
            ["If-None-Match", "If-Modified-Since", "If-Match", "If-Unmodified-Since", "If-Range"]
        {
            assert_eq!(request.header(conditional), None, "{conditional}");
        }
    }
}

// FETCH-8: media type.

#[test]
fn fetch_8_text_plain_in_any_case_with_parameters_is_accepted() {
    let server = server_with(Response::policy(POLICY));
    for media_type in ["text/plain", "text/plain; charset=utf-8", "Text/Plain", "text/plain; format=flowed"] {
        server.set_response(
            HOST,
            Response::policy(POLICY).without_header("Content-Type").header("Content-Type", media_type),
        );
        assert_eq!(fetch(&server).expect(media_type), POLICY.as_bytes(), "{media_type}");
    }
}

#[test]
fn fetch_8_other_or_missing_media_type_is_refused() {
    let server = server_with(
        Response::policy(POLICY).without_header("Content-Type").header("Content-Type", "text/html"),
    );
    let failure = assert_fails(fetch(&server), Reason::StsPolicyFetchError, "");
    assert_eq!(failure.detail, format!("{URL}: Content-Type is text/html, not text/plain"));

    server.set_response(HOST, Response::policy(POLICY).without_header("Content-Type"));
    let failure = assert_fails(fetch(&server), Reason::StsPolicyFetchError, "");
    assert_eq!(failure.detail, format!("{URL}: no Content-Type (text/plain required)"));
}

// FETCH-9: size cap and timeouts.

#[test]
fn fetch_9_body_of_64_kib_is_accepted() {
    let body = "a".repeat(65_536);
    let server = server_with(Response::policy(&body));
    assert_eq!(fetch(&server).expect("64 KiB").len(), 65_536);
}

#[test]
fn fetch_9_body_over_the_cap_is_refused() {
    let server = server_with(Response::policy(&"a".repeat(70 * 1024)));
    assert_fails(fetch(&server), Reason::StsPolicyFetchError, "body larger than 65536 bytes");

    // Without Content-Length (chunked), the reader stops at the cap.
    server.set_response(
        HOST,
        Response::policy(&"a".repeat(1024 * 1024)).header("Transfer-Encoding", "chunked"),
    );
    let failure = assert_fails(fetch(&server), Reason::StsPolicyFetchError, "body larger than 65536 bytes");
    assert!(!failure.detail.contains("Content-Length"), "{}", failure.detail);

    // The cap is a setting.
    server.set_response(HOST, Response::policy(&"a".repeat(2000)));
    assert_fails(
        fetch_with(&server, |s| s.max_body_bytes = 1000),
        Reason::StsPolicyFetchError,
        "body larger than 1000 bytes",
    );
}

#[test]
fn fetch_9_response_head_over_16_kib_is_refused() {
    // 15 KiB of headers pass; 17 KiB are refused with a clear error (the agent's buffers are
    // sized for a 16 KiB head, src/https.rs).
    let server = server_with(Response::policy(POLICY).header("X-Filler", &"f".repeat(15 * 1024)));
    assert_eq!(fetch(&server).expect("15 KiB head"), POLICY.as_bytes());
    server.set_response(HOST, Response::policy(POLICY).header("X-Filler", &"f".repeat(17 * 1024)));
    assert_fails(fetch(&server), Reason::StsPolicyFetchError, "response header too large");
}

#[test]
fn fetch_9_slow_server_is_cut_off_by_the_timeout() {
    let server = server_with(Response { delay: Duration::from_secs(30), ..Response::policy(POLICY) });
    let start = Instant::now();
    let result = fetch_with(&server, |s| s.timeout = Duration::from_secs(1));
    assert!(start.elapsed() < BOUND, "took {:?}", start.elapsed());
    assert_fails(result, Reason::StsPolicyFetchError, "timed out after 1 s");
}

#[test]
fn fetch_9_trickling_server_is_cut_off_by_the_overall_timeout() {
    // 400 bytes at one byte per 50 ms would take 20 s; every single read is quick.
    let body = "a".repeat(400);
    let server =
        server_with(Response { trickle: Some(Duration::from_millis(50)), ..Response::policy(&body) });
    let start = Instant::now();
    let result = fetch_with(&server, |s| s.timeout = Duration::from_secs(1));
    assert!(start.elapsed() < BOUND, "took {:?}", start.elapsed());
    assert_fails(result, Reason::StsPolicyFetchError, "timed out after 1 s");
}

#[test]
fn fetch_9_silent_server_is_cut_off_by_the_connect_timeout() {
    // The kernel completes the TCP handshake on a listening socket; nobody ever accepts or
    // answers, so the TLS handshake cannot finish.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let mut s = FetchSettings::new(anchors());
    s.port = port;
    s.connect_timeout = Duration::from_secs(1);
    let start = Instant::now();
    let result = HttpsFetcher::new(s, Arc::new(Loopback)).fetch(&domain("example.test"));
    assert!(start.elapsed() < BOUND, "took {:?}", start.elapsed());
    assert_fails(
        result,
        Reason::StsPolicyFetchError,
        &format!("could not connect to 127.0.0.1:{port} within 1 s"),
    );
    drop(listener);
}

// FETCH-13, FETCH-15: SNI, method, path.

#[test]
fn fetch_13_15_sni_is_the_policy_host_and_the_request_line_is_exact() {
    let server = server_with(Response::policy(POLICY));
    fetch(&server).expect("policy");
    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.sni.as_deref(), Some(HOST));
    assert_eq!(request.request_line, "GET /.well-known/mta-sts.txt HTTP/1.1");
    assert_eq!(request.header("Host"), Some(HOST));
}

#[test]
fn fetch_13_no_certificate_for_the_sni_fails() {
    let server = HttpsServer::start().expect("server");
    server.set_cert("mta-sts.elsewhere.test", &pki().leaf(&["mta-sts.elsewhere.test"]));
    server.set_response(HOST, Response::policy(POLICY));
    assert_fails(fetch(&server), Reason::StsPolicyFetchError, "TLS handshake failed");
}

// FETCH-14: TLS 1.2 and later (the ClientHello itself is checked by a unit test in src/fetch.rs).

#[test]
fn fetch_14_tls_1_3_by_default_and_1_2_accepted() {
    let server = server_with(Response::policy(POLICY));
    fetch(&server).expect("TLS 1.3");
    server.set_max_tls12(true);
    fetch(&server).expect("TLS 1.2");
    let versions: Vec<String> = server.requests().into_iter().map(|r| r.tls_version).collect();
    assert_eq!(versions, ["TLSv1_3", "TLSv1_2"]);
}

// No content coding.

#[test]
fn no_accept_encoding_is_sent_and_encoded_bodies_are_refused() {
    let server = server_with(Response::policy(POLICY));
    fetch(&server).expect("policy");
    let request = &server.requests()[0];
    assert_eq!(request.header("Accept-Encoding"), None, "{:?}", request.headers);

    // A gzip body (of an empty member) the server sends anyway is refused, not decompressed.
    let gzip = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    server.set_response(
        HOST,
        Response { body: gzip.to_vec(), ..Response::policy("").header("Content-Encoding", "gzip") },
    );
    assert_fails(fetch(&server), Reason::StsPolicyFetchError, "Content-Encoding is gzip");
}

// Network and DNS failures.

#[test]
fn fetch_17_connection_refused_is_a_fetch_error() {
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let mut s = FetchSettings::new(anchors());
    s.port = port;
    let result = HttpsFetcher::new(s, Arc::new(Loopback)).fetch(&domain("example.test"));
    assert_fails(result, Reason::StsPolicyFetchError, &format!("connection refused by 127.0.0.1:{port}"));
}

#[test]
fn fetch_17_dns_failure_is_a_fetch_error() {
    let s = FetchSettings::new(anchors());
    let servfail = HttpsFetcher::new(s.clone(), Arc::new(FailingDns(DnsError::Temporary("SERVFAIL".into()))));
    assert_fails(
        servfail.fetch(&domain("example.test")),
        Reason::StsPolicyFetchError,
        &format!("DNS: cannot resolve {HOST}: SERVFAIL"),
    );
    let nxdomain = HttpsFetcher::new(s, Arc::new(FailingDns(DnsError::NotFound)));
    assert_fails(
        nxdomain.fetch(&domain("example.test")),
        Reason::StsPolicyFetchError,
        &format!("DNS: {HOST} does not exist"),
    );
}

// SEC-10: SSRF hardening.

#[test]
fn sec_10_loopback_is_refused_when_asked() {
    let server = server_with(Response::policy(POLICY));
    let result = fetch_with(&server, |s| s.refuse_private_addresses = true);
    assert_fails(
        result,
        Reason::StsPolicyFetchError,
        &format!("{HOST} resolves only to non-public addresses (127.0.0.1)"),
    );
    assert!(server.requests().is_empty(), "no connection was made");
    // Off (the default), the same server is reached.
    assert_eq!(fetch(&server).expect("policy"), POLICY.as_bytes());
}
