//! MX certificate validation (RFC 8461 §4.2; result types of RFC 8460 §4.3).
//!
//! The chain the MX presented (leaf first, PEM text or concatenated DER) is checked with
//! rustls-webpki against the configured trust anchors at a given time (CERT-2, CERT-3), for server
//! authentication, and for the MX **host name** (CERT-6): SAN dNSName entries only, no subject CN
//! (CERT-4), wildcards covering exactly one whole label (CERT-5). This decision is separate from the
//! policy host's HTTPS check, even though both use the same trust anchors (CERT-12).
//!
//! Successful validations are remembered by (exact chain bytes, host name) until the earliest
//! `notAfter` in the chain, so that repeated handshakes with a busy MX cost a hash lookup and a
//! byte comparison, not signature checks. Failures are not remembered.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use parking_lot::RwLock;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, DnsName, ServerName, TrustAnchor, UnixTime};

use crate::calendar::days_from_civil;
pub use crate::calendar::rfc3339;
use crate::domain::Domain;
use crate::verdict::Reason;

/// A set of trust anchors (root certificates), loaded once and kept immutable. Clones share the
/// set. The system's roots, and a `ca_file` given to [`TrustAnchors::from_pem_file_lazy`], are
/// read on first use, so that a process that only reads cached policies and remembered
/// validations never pays for reading them (about 2 ms for a system's 145 roots).
///
/// A set also has an **identity** ([`TrustAnchors::identity`]): a digest that changes whenever
/// the roots may have changed, under which validations are remembered across processes
/// (docs/architecture.md, "Remembered validations").
#[derive(Clone)]
pub struct TrustAnchors {
    shared: Arc<Shared>,
}

struct Shared {
    source: String,
    origin: Origin,
    anchors: OnceLock<Result<Vec<TrustAnchor<'static>>, CertError>>,
    identity: OnceLock<Option<[u8; 32]>>,
}

/// Where a set of roots comes from, which decides how its identity is found.
enum Origin {
    /// The operating system's roots, where rustls-native-certs finds them (`SSL_CERT_FILE`,
    /// `SSL_CERT_DIR`, else the usual bundle file and directories).
    System,
    /// A PEM file, with its file system stamp when it was read (or, for a lazy set, when the set
    /// was made). `None`: the file could not be examined, and the set has no identity.
    File { path: PathBuf, stamp: Option<FileStamp> },
    /// Roots given whole (PEM text, or compiled in): identified by a digest of their content.
    Content([u8; 32]),
}

/// What tells two versions of a file apart without reading it: the file (device and inode), its
/// size, and its modification and change times to the nanosecond. Replacing the file (a new
/// inode) or writing it (new times; the change time cannot be set back) gives a new stamp.
#[derive(Clone, Copy, PartialEq, Eq)]
struct FileStamp([u64; 6]);

impl FileStamp {
    fn of(meta: &std::fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        let ns = |s: i64, n: i64| (s as u64).wrapping_mul(1_000_000_000).wrapping_add(n as u64);
        Self([
            meta.dev(),
            meta.ino(),
            meta.len(),
            ns(meta.mtime(), meta.mtime_nsec()),
            ns(meta.ctime(), meta.ctime_nsec()),
            u64::from(meta.mode()),
        ])
    }

    fn of_path(path: &Path) -> Option<Self> {
        std::fs::metadata(path).ok().map(|m| Self::of(&m))
    }

    fn feed(stamp: Option<Self>, ctx: &mut ring::digest::Context) {
        match stamp {
            Some(Self(fields)) => fields.iter().for_each(|f| ctx.update(&f.to_be_bytes())),
            None => ctx.update(b"absent"),
        }
    }
}

/// The digest contexts of this module: SHA-256, each input under its own label.
fn labelled(label: &str) -> ring::digest::Context {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(label.as_bytes());
    ctx.update(&[0]);
    ctx
}

fn feed_bytes(ctx: &mut ring::digest::Context, bytes: &[u8]) {
    ctx.update(&(bytes.len() as u64).to_be_bytes());
    ctx.update(bytes);
}

fn finish(ctx: ring::digest::Context) -> [u8; 32] {
    let mut out = [0; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

fn load_system() -> Result<Vec<TrustAnchor<'static>>, CertError> {
    let loaded = rustls_native_certs::load_native_certs();
    let anchors: Vec<_> = loaded
        .certs
        .iter()
        .filter_map(|c| webpki::anchor_from_trusted_cert(c).ok().map(|a| a.to_owned()))
        .collect();
    if anchors.is_empty() {
        let why = loaded.errors.first().map(|e| e.to_string()).unwrap_or_else(|| "none found".into());
        return Err(CertError(format!("no system root certificates could be loaded: {why}")));
    }
    Ok(anchors)
}

/// The identity of the system's roots: the places rustls-native-certs reads (the same probe) and
/// the stamp of each. A directory's stamp changes when a file is added, removed or renamed in it
/// (`update-ca-certificates` also rewrites the bundle file); a root edited in place inside a
/// directory is not seen, which the one-day limit on remembered validations bounds.
fn system_identity() -> [u8; 32] {
    let probe = openssl_probe::probe();
    let mut ctx = labelled("mtasts trust anchors: system");
    for path in probe.cert_file.iter().chain(&probe.cert_dir) {
        feed_bytes(&mut ctx, path.as_os_str().as_encoded_bytes());
        FileStamp::feed(FileStamp::of_path(path), &mut ctx);
    }
    finish(ctx)
}

fn pem_anchors(pem: &[u8], source: &str) -> Result<Vec<TrustAnchor<'static>>, CertError> {
    let mut anchors = Vec::new();
    for (i, cert) in CertificateDer::pem_slice_iter(pem).enumerate() {
        let cert = cert.map_err(|e| CertError(format!("{source}: certificate {}: {e}", i + 1)))?;
        let anchor = webpki::anchor_from_trusted_cert(&cert)
            .map_err(|e| CertError(format!("{source}: certificate {} is not a usable root: {e}", i + 1)))?;
        anchors.push(anchor.to_owned());
    }
    if anchors.is_empty() {
        return Err(CertError(format!("{source}: no PEM `CERTIFICATE` block found")));
    }
    Ok(anchors)
}

/// Reads a PEM file of roots, with the stamp of the file it read (taken from the open file).
fn read_pem_file(path: &Path) -> Result<(Vec<u8>, Option<FileStamp>), CertError> {
    use std::io::Read;
    let cannot = |e: std::io::Error| CertError(format!("cannot read {}: {e}", path.display()));
    let mut file = std::fs::File::open(path).map_err(cannot)?;
    let stamp = file.metadata().ok().map(|m| FileStamp::of(&m));
    let mut pem = Vec::new();
    file.read_to_end(&mut pem).map_err(cannot)?;
    Ok((pem, stamp))
}

/// A certificate-handling error outside validation proper (loading roots, reading a chain).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertError(pub String);

impl fmt::Display for CertError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CertError {}

impl TrustAnchors {
    fn new(source: String, origin: Origin, anchors: Option<Vec<TrustAnchor<'static>>>) -> Self {
        let loaded = OnceLock::new();
        if let Some(anchors) = anchors {
            let _ = loaded.set(Ok(anchors));
        }
        Self { shared: Arc::new(Shared { source, origin, anchors: loaded, identity: OnceLock::new() }) }
    }

    /// The Mozilla root program as compiled into the `webpki-roots` crate.
    pub fn webpki() -> Self {
        let roots = webpki_roots::TLS_SERVER_ROOTS;
        let mut ctx = labelled("mtasts trust anchors: compiled in");
        for root in roots {
            feed_bytes(&mut ctx, root.subject.as_ref());
            feed_bytes(&mut ctx, root.subject_public_key_info.as_ref());
        }
        Self::new("webpki-roots".into(), Origin::Content(finish(ctx)), Some(roots.to_vec()))
    }

    /// The operating system's roots (honours `SSL_CERT_FILE` and `SSL_CERT_DIR`), read now.
    pub fn system() -> Result<Self, CertError> {
        Ok(Self::new("system".into(), Origin::System, Some(load_system()?)))
    }

    /// The operating system's roots, read on first use; the compiled-in Mozilla set if the
    /// system has none.
    pub fn system_lazy() -> Self {
        Self::new("system".into(), Origin::System, None)
    }

    /// Roots from PEM text (one or more `CERTIFICATE` blocks).
    pub fn from_pem(pem: &[u8], source: &str) -> Result<Self, CertError> {
        let anchors = pem_anchors(pem, source)?;
        let mut ctx = labelled("mtasts trust anchors: content");
        feed_bytes(&mut ctx, pem);
        Ok(Self::new(source.into(), Origin::Content(finish(ctx)), Some(anchors)))
    }

    /// Roots from a PEM file, such as the `ca_file` of the configuration, read now.
    pub fn from_pem_file(path: &Path) -> Result<Self, CertError> {
        let (pem, stamp) = read_pem_file(path)?;
        let source = path.display().to_string();
        let anchors = pem_anchors(&pem, &source)?;
        Ok(Self::new(source, Origin::File { path: path.into(), stamp }, Some(anchors)))
    }

    /// Roots from a PEM file read at their first use (the default engine of a process per
    /// delivery, which usually finds its validation remembered). A file that cannot be read or
    /// holds no usable root then fails every validation with [`TrustAnchors::anchors`]'s error
    /// (fail closed); `mtasts doctor` reads it at once.
    pub fn from_pem_file_lazy(path: &Path) -> Self {
        let origin = Origin::File { path: path.into(), stamp: FileStamp::of_path(path) };
        Self::new(path.display().to_string(), origin, None)
    }

    /// The anchors, for building a rustls root store or validating a chain; read now if the set
    /// is lazy (then an unreadable file is an error, every time it is asked).
    pub fn anchors(&self) -> Result<&[TrustAnchor<'static>], CertError> {
        let loaded = self.shared.anchors.get_or_init(|| match &self.shared.origin {
            Origin::System => Ok(load_system().unwrap_or_else(|_| webpki_roots::TLS_SERVER_ROOTS.to_vec())),
            Origin::File { path, .. } => {
                read_pem_file(path).and_then(|(pem, _)| pem_anchors(&pem, &self.shared.source))
            }
            Origin::Content(_) => Err(CertError(format!("{}: no roots", self.shared.source))),
        });
        loaded.as_deref().map_err(Clone::clone)
    }

    /// Whether the roots have been read (a lazy set reads them at its first use).
    pub fn is_loaded(&self) -> bool {
        self.shared.anchors.get().is_some()
    }

    /// Where the anchors came from (`system`, `webpki-roots`, or a file name).
    pub fn source(&self) -> &str {
        &self.shared.source
    }

    /// A digest that differs between any two sets of roots this may stand for, worked out once
    /// (for the system's roots: a few `stat` calls, no reading); `None` when it cannot be known
    /// (a file that could not be examined), and then no validation is remembered across
    /// processes.
    pub fn identity(&self) -> Option<&[u8; 32]> {
        self.shared
            .identity
            .get_or_init(|| match &self.shared.origin {
                Origin::System => Some(system_identity()),
                Origin::File { stamp: None, .. } => None,
                Origin::File { path, stamp } => {
                    let mut ctx = labelled("mtasts trust anchors: file");
                    feed_bytes(&mut ctx, path.as_os_str().as_encoded_bytes());
                    FileStamp::feed(*stamp, &mut ctx);
                    Some(finish(ctx))
                }
                Origin::Content(digest) => Some(*digest),
            })
            .as_ref()
    }
}

impl fmt::Debug for TrustAnchors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.shared.anchors.get() {
            Some(Ok(a)) => write!(f, "TrustAnchors({}, {} roots)", self.shared.source, a.len()),
            Some(Err(e)) => write!(f, "TrustAnchors({}, unusable: {e})", self.shared.source),
            None => write!(f, "TrustAnchors({}, not loaded yet)", self.shared.source),
        }
    }
}

/// Why an MX certificate chain failed, as an RFC 8460 result type and a detail line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertFailure {
    /// One of `CertificateExpired`, `CertificateNotTrusted`, `CertificateHostMismatch`,
    /// `ValidationFailure`.
    pub reason: Reason,
    /// What exactly went wrong.
    pub detail: String,
}

impl fmt::Display for CertFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.reason, self.detail)
    }
}

fn failure(reason: Reason, detail: impl Into<String>) -> CertFailure {
    CertFailure { reason, detail: detail.into() }
}

/// Validates MX certificate chains and remembers the ones that passed.
pub struct CertVerifier {
    anchors: TrustAnchors,
    /// By [`memo_key`] (already a hash: FxHash only mixes it into the table).
    memo: RwLock<crate::fxhash::FxMap<u64, Vec<MemoEntry>>>,
}

struct MemoEntry {
    chain: Box<[u8]>,
    host: Domain,
    /// Latest `notBefore` and earliest `notAfter` of the chain, in Unix seconds.
    valid_from: u64,
    valid_until: u64,
}

/// Memo entries kept before the memo is emptied and starts again.
const MEMO_CAPACITY: usize = 4096;

impl CertVerifier {
    /// A verifier over these trust anchors.
    pub fn new(anchors: TrustAnchors) -> Self {
        Self { anchors, memo: RwLock::new(crate::fxhash::FxMap::default()) }
    }

    /// The trust anchors in use.
    pub fn anchors(&self) -> &TrustAnchors {
        &self.anchors
    }

    /// Checks `chain` (leaf first; PEM or concatenated DER) for `host` at `now` (Unix seconds).
    pub fn verify(&self, chain: &[u8], host: &Domain, now: u64) -> Result<(), CertFailure> {
        let key = memo_key(chain, host);
        if self.remembered(key, chain, host, now) {
            return Ok(());
        }
        self.verify_now(key, chain, host, now).map(|_| ())
    }

    /// Validates `chain` for `host` now, without looking in the memo, and remembers it if it
    /// passed: the window (latest `notBefore`, earliest `notAfter`) within which it stays valid.
    pub(crate) fn verify_now(
        &self,
        key: u64,
        chain: &[u8],
        host: &Domain,
        now: u64,
    ) -> Result<(u64, u64), CertFailure> {
        let certs = parse_chain(chain)?;
        self.verify_parsed(&certs, host, now)?;
        let (valid_from, valid_until) = chain_validity(&certs).unwrap_or((now, now));
        self.remember(key, chain, host, valid_from, valid_until);
        Ok((valid_from, valid_until))
    }

    /// Remembers that `chain` passed for `host`, within `valid_from..valid_until` (here, or
    /// in another process: see [`CertVerifier::digest`]).
    pub(crate) fn remember(&self, key: u64, chain: &[u8], host: &Domain, valid_from: u64, valid_until: u64) {
        let mut memo = self.memo.write();
        if memo.values().map(Vec::len).sum::<usize>() >= MEMO_CAPACITY {
            memo.clear();
        }
        let bucket = memo.entry(key).or_default();
        bucket.retain(|e| !(e.host == *host && *e.chain == *chain));
        bucket.push(MemoEntry { chain: chain.into(), host: host.clone(), valid_from, valid_until });
    }

    /// Whether `chain` passed for `host` earlier in this process and is still within its window.
    pub(crate) fn remembered(&self, key: u64, chain: &[u8], host: &Domain, now: u64) -> bool {
        let memo = self.memo.read();
        memo.get(&key).is_some_and(|bucket| {
            bucket
                .iter()
                .any(|e| e.host == *host && *e.chain == *chain && e.valid_from <= now && now < e.valid_until)
        })
    }

    /// The name under which a validation of `chain` for `host` against these trust anchors is
    /// remembered across processes: SHA-256 over the anchors' identity, the host name and the
    /// chain's exact bytes, so that another chain, host or set of roots never finds it. `None`
    /// when the anchors have no identity.
    pub(crate) fn digest(&self, chain: &[u8], host: &Domain) -> Option<[u8; 32]> {
        let anchors = self.anchors.identity()?;
        let mut ctx = labelled("mtasts verified chain");
        ctx.update(anchors);
        feed_bytes(&mut ctx, host.as_str().as_bytes());
        feed_bytes(&mut ctx, chain);
        Some(finish(ctx))
    }

    fn verify_parsed(
        &self,
        certs: &[CertificateDer<'static>],
        host: &Domain,
        now: u64,
    ) -> Result<(), CertFailure> {
        let (leaf, intermediates) =
            certs.split_first().ok_or_else(|| failure(Reason::ValidationFailure, "empty chain"))?;
        let ee = webpki::EndEntityCert::try_from(leaf).map_err(|e| {
            failure(Reason::ValidationFailure, format!("the leaf certificate cannot be read: {e}"))
        })?;
        let time = UnixTime::since_unix_epoch(Duration::from_secs(now));
        let anchors = self.anchors.anchors().map_err(|e| {
            failure(Reason::ValidationFailure, format!("the trust anchors cannot be read: {e}"))
        })?;
        ee.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            anchors,
            intermediates,
            time,
            webpki::KeyUsage::server_auth(),
            None,
            None,
        )
        .map_err(classify)?;
        let name = DnsName::try_from(host.as_str())
            .map_err(|_| failure(Reason::CertificateHostMismatch, format!("`{host}` is not a DNS name")))?;
        ee.verify_is_valid_for_subject_name(&ServerName::DnsName(name)).map_err(|_| {
            failure(
                Reason::CertificateHostMismatch,
                format!("no subjectAltName dNSName of the certificate matches `{host}`"),
            )
        })
    }
}

impl fmt::Debug for CertVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertVerifier").field("anchors", &self.anchors).finish_non_exhaustive()
    }
}

/// The RFC 8460 result type of a webpki failure (also used by DANE-TA path checks, `tlsa`).
pub(crate) fn classify(e: webpki::Error) -> CertFailure {
    use webpki::Error as E;
    match e {
        E::CertExpired { not_after, .. } => failure(
            Reason::CertificateExpired,
            format!("a certificate in the chain expired at {}", rfc3339(not_after.as_secs())),
        ),
        E::CertNotValidYet { not_before, .. } => failure(
            Reason::ValidationFailure,
            format!("a certificate in the chain is not valid before {}", rfc3339(not_before.as_secs())),
        ),
        E::UnknownIssuer => failure(
            Reason::CertificateNotTrusted,
            "the chain does not lead to a trusted root (unknown issuer or missing intermediate)",
        ),
        E::CertDistrusted
        | E::InvalidSignatureForPublicKey
        | E::UnsupportedSignatureAlgorithmForPublicKeyContext(_) => {
            failure(Reason::CertificateNotTrusted, format!("the chain does not verify: {e}"))
        }
        E::CaUsedAsEndEntity => failure(Reason::CertificateNotTrusted, "the leaf is a CA certificate"),
        other => failure(Reason::ValidationFailure, format!("certificate validation failed: {other}")),
    }
}

/// Splits a chain given as PEM text or as concatenated DER certificates (detected).
pub fn parse_chain(input: &[u8]) -> Result<Vec<CertificateDer<'static>>, CertFailure> {
    let trimmed = input.trim_ascii_start();
    let certs: Vec<CertificateDer<'static>> = if trimmed.starts_with(b"-----BEGIN") {
        CertificateDer::pem_slice_iter(trimmed)
            .collect::<Result<_, _>>()
            .map_err(|e| failure(Reason::ValidationFailure, format!("the PEM chain cannot be read: {e}")))?
    } else {
        let mut rest = input;
        let mut out = Vec::new();
        while !rest.is_empty() {
            let len = der_element_len(rest).ok_or_else(|| {
                failure(
                    Reason::ValidationFailure,
                    format!("certificate {} of the DER chain is malformed", out.len() + 1),
                )
            })?;
            out.push(CertificateDer::from(rest[..len].to_vec()));
            rest = &rest[len..];
        }
        out
    };
    if certs.is_empty() {
        return Err(failure(Reason::ValidationFailure, "no certificate was given"));
    }
    Ok(certs)
}

/// Total length (header and contents) of the DER SEQUENCE at the start of `der`.
fn der_element_len(der: &[u8]) -> Option<usize> {
    let (_, header, len) = der_header(der)?;
    (der.first() == Some(&0x30)).then_some(())?;
    let total = header.checked_add(len)?;
    (total <= der.len()).then_some(total)
}

/// Tag, header length and content length of the DER element at the start of `der`.
fn der_header(der: &[u8]) -> Option<(u8, usize, usize)> {
    let tag = *der.first()?;
    let first = *der.get(1)?;
    if first < 0x80 {
        return Some((tag, 2, usize::from(first)));
    }
    let n = usize::from(first & 0x7f);
    if n == 0 || n > 4 {
        return None;
    }
    let bytes = der.get(2..2 + n)?;
    let len = bytes.iter().fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
    Some((tag, 2 + n, len))
}

/// Splits off the DER element at the start of `der`: (tag, contents, rest).
pub(crate) fn der_next(der: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (tag, header, len) = der_header(der)?;
    let end = header.checked_add(len)?;
    Some((tag, der.get(header..end)?, der.get(end..)?))
}

/// Latest `notBefore` and earliest `notAfter` over the chain, in Unix seconds.
fn chain_validity(certs: &[CertificateDer<'_>]) -> Option<(u64, u64)> {
    certs.iter().try_fold((0u64, u64::MAX), |(from, until), c| {
        let (nb, na) = validity(c)?;
        Some((from.max(nb), until.min(na)))
    })
}

/// `notBefore` and `notAfter` of one certificate (X.509 `tbsCertificate.validity`).
fn validity(cert: &[u8]) -> Option<(u64, u64)> {
    let (_, cert, _) = der_next(cert)?;
    let (_, mut tbs, _) = der_next(cert)?;
    if tbs.first() == Some(&0xa0) {
        tbs = der_next(tbs)?.2; // explicit version
    }
    let rest = der_next(tbs)?.2; // serialNumber
    let rest = der_next(rest)?.2; // signature algorithm
    let rest = der_next(rest)?.2; // issuer
    let (_, validity, _) = der_next(rest)?;
    let (t1, nb, rest) = der_next(validity)?;
    let (t2, na, _) = der_next(rest)?;
    Some((asn1_time(t1, nb)?, asn1_time(t2, na)?))
}

/// The `subjectPublicKeyInfo` of one certificate, whole (tag, length and contents): what a
/// TLSA record with selector SPKI(1) matches (RFC 6698 §2.1.2). A DER walk rather than a webpki
/// parse, so that it also reads certificates webpki would refuse (v1, unknown critical
/// extensions), which DANE-EE still authenticates by key.
pub(crate) fn subject_public_key_info(cert: &[u8]) -> Option<&[u8]> {
    let (_, cert, _) = der_next(cert)?;
    let (_, mut tbs, _) = der_next(cert)?;
    if tbs.first() == Some(&0xa0) {
        tbs = der_next(tbs)?.2; // explicit version
    }
    let mut rest = tbs;
    for _ in 0..5 {
        rest = der_next(rest)?.2; // serialNumber, signature, issuer, validity, subject
    }
    let (tag, _, after) = der_next(rest)?;
    (tag == 0x30).then(|| &rest[..rest.len() - after.len()])
}

/// UTCTime (tag 0x17, `YYMMDDHHMMSSZ`) or GeneralizedTime (0x18, `YYYYMMDDHHMMSSZ`).
fn asn1_time(tag: u8, text: &[u8]) -> Option<u64> {
    let digits = |s: &[u8]| -> Option<u64> {
        s.iter().try_fold(0u64, |acc, &b| b.is_ascii_digit().then(|| acc * 10 + u64::from(b - b'0')))
    };
    let (year, rest) = match tag {
        0x17 if text.len() == 13 => {
            let yy = digits(&text[..2])?;
            (if yy < 50 { 2000 + yy } else { 1900 + yy }, &text[2..])
        }
        0x18 if text.len() == 15 => (digits(&text[..4])?, &text[4..]),
        _ => return None,
    };
    if rest.last() != Some(&b'Z') {
        return None;
    }
    let (month, day) = (digits(&rest[0..2])?, digits(&rest[2..4])?);
    let (h, m, s) = (digits(&rest[4..6])?, digits(&rest[6..8])?, digits(&rest[8..10])?);
    let days = days_from_civil(year, month, day)?;
    Some(days * 86_400 + h * 3600 + m * 60 + s)
}

/// Hashes the host and the tail of the chain: enough to spread entries, while equality is
/// decided by comparing the whole chain. Shared with the engine's DANE-EE memo.
pub(crate) fn memo_key(chain: &[u8], host: &Domain) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    host.hash(&mut h);
    chain.len().hash(&mut h);
    chain[chain.len().saturating_sub(64)..].hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asn1_times() {
        // The calendar itself is tested in src/calendar.rs.
        assert_eq!(asn1_time(0x17, b"260101000000Z"), Some(days_from_civil(2026, 1, 1).unwrap() * 86_400));
        assert_eq!(asn1_time(0x18, b"20500101000000Z"), Some(days_from_civil(2050, 1, 1).unwrap() * 86_400));
    }

    #[test]
    fn trust_anchor_identities() {
        let dir = std::env::temp_dir().join(format!("mtasts-anchor-id-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert!(TrustAnchors::webpki().anchors().map(|a| a.len()).unwrap() > 50);
        // A root file: read now or lazily, the same identity; the lazy one reads nothing for it.
        let path = dir.join("roots.pem");
        let root = rcgen::generate_simple_self_signed(vec!["root.test".into()]).unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = params.self_signed(&root.signing_key).unwrap();
        std::fs::write(&path, ca.pem()).unwrap();
        let eager = TrustAnchors::from_pem_file(&path).unwrap();
        let lazy = TrustAnchors::from_pem_file_lazy(&path);
        assert_eq!(eager.identity(), lazy.identity());
        assert!(eager.identity().is_some() && !lazy.is_loaded());
        // Replaced by the same text: another file, another identity.
        let tmp = dir.join("roots.pem.new");
        std::fs::write(&tmp, ca.pem()).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        assert_ne!(TrustAnchors::from_pem_file_lazy(&path).identity(), lazy.identity());
        // The same text in memory: identified by content, unlike the file.
        let a = TrustAnchors::from_pem(ca.pem().as_bytes(), "a").unwrap();
        let b = TrustAnchors::from_pem(ca.pem().as_bytes(), "b").unwrap();
        assert_eq!(a.identity(), b.identity());
        assert_ne!(a.identity(), lazy.identity());
        assert_ne!(a.identity(), TrustAnchors::webpki().identity());
        // A file that cannot be examined has none (nothing is remembered under it) and fails at use.
        let missing = TrustAnchors::from_pem_file_lazy(&dir.join("missing.pem"));
        assert_eq!(missing.identity(), None);
        let e = missing.anchors().unwrap_err();
        assert!(e.0.contains("missing.pem"), "{e}");
        assert!(format!("{missing:?}").contains("unusable"));
        // The system's roots: known without reading them, and stable.
        let system = TrustAnchors::system_lazy();
        assert_eq!(system.identity(), TrustAnchors::system_lazy().identity());
        assert!(system.identity().is_some() && !system.is_loaded());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn garbage_chains_are_validation_failures() {
        for input in [&b""[..], b"\x30\x82\xff\xff", b"hello", b"-----BEGIN CERTIFICATE-----\nnot base64\n"] {
            let e = parse_chain(input).unwrap_err();
            assert_eq!(e.reason, Reason::ValidationFailure, "{input:?}");
        }
    }
}
