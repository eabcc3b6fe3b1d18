//! DANE for SMTP: which TLSA records are usable, and whether the certificate chain an MX presented
//! matches them (RFC 7672 §3; record fields of RFC 6698 §2.1; RFC 7671 §5 and §9).
//!
//! The rules, with the ids that tests and vectors cite (`docs/dane.md`, "TLSA matching"):
//!
//! - Usable records (DANE-TLSA-1 to DANE-TLSA-3). Only DANE-TA(2) and DANE-EE(3) are used for
//!   SMTP; PKIX-TA(0) and PKIX-EE(1) are ignored, as are unknown usages, selectors (other than
//!   0 and 1) and matching types (other than 0, 1 and 2), and association data of the wrong size
//!   (32 bytes for SHA-256, 64 for SHA-512, one DER `SEQUENCE` for an exact match). A record
//!   becomes a [`UsableTlsa`] only through [`UsableTlsa::parse`]. Digest agility (DANE-TLSA-13):
//!   where SHA-512 records exist for a usage and selector, the SHA-256 ones beside them are
//!   ignored.
//! - No usable record (DANE-TLSA-4): [`DaneMatch::NoUsableRecords`]. TLS is mandatory for the
//!   MX but not authenticated; the chain is not judged.
//! - DANE-EE (DANE-TLSA-6, DANE-TLSA-7): the leaf's certificate or key matches. Nothing else is
//!   checked: not the names, not the dates, not the issuer.
//! - DANE-TA (DANE-TLSA-8 to DANE-TLSA-11): the record names a certificate or key above the leaf,
//!   found in the presented chain; a Full(0) record that publishes the whole certificate (`2 0 0`)
//!   or public key (`2 1 0`) is an anchor even when the server leaves it out. The chain is then
//!   verified by rustls-webpki from the leaf up to that anchor (signatures, CA constraints,
//!   serverAuth, validity at `now` of every certificate below the anchor, not of the anchor), and
//!   the leaf must carry a subjectAltName dNSName for one of the given names: the TLSA base
//!   domain or the MX host name (RFC 7672 §3.2.2), wildcards covering one label.
//!
//! What a failure reports (DANE-TLSA-12; the engine turns it into a verdict and TLSRPT counts):
//! `tlsa-invalid` when no usable record matches the chain (RFC 8460 §4.3.2.1); the certificate
//! result type (`certificate-host-mismatch`, `certificate-expired`, `certificate-not-trusted`,
//! `validation-failure`) when a DANE-TA anchor was found in the chain but the chain below it or
//! the leaf's names fail, because that says what the MX operator has to fix. A chain that cannot
//! be read is `validation-failure`, as in [`crate::cert`]. Decisions T1 to T5 of `docs/dane.md`.
//!
//! Pure: no I/O, no clock (`now` is an argument), no memo.

use std::fmt;
use std::time::Duration;

use ring::digest;
use rustls_pki_types::{CertificateDer, DnsName, ServerName, TrustAnchor, UnixTime};

use crate::cert::{self, CertFailure};
use crate::domain::Domain;
use crate::ports::TlsaRecord;
use crate::verdict::Reason;

/// The certificate usages SMTP uses (RFC 7672 §3.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Usage {
    /// DANE-TA(2): a trust anchor that issued the server's chain.
    DaneTa,
    /// DANE-EE(3): the server's own certificate or key.
    DaneEe,
}

impl Usage {
    /// The number in the TLSA record.
    pub const fn code(self) -> u8 {
        match self {
            Self::DaneTa => 2,
            Self::DaneEe => 3,
        }
    }

    /// `dane-ta` or `dane-ee`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::DaneTa => "dane-ta",
            Self::DaneEe => "dane-ee",
        }
    }
}

impl fmt::Display for Usage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What part of a certificate a record matches (RFC 6698 §2.1.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Selector {
    /// Cert(0): the whole certificate, DER.
    Cert,
    /// SPKI(1): its SubjectPublicKeyInfo, DER.
    Spki,
}

/// How the selected bytes are compared with the association data (RFC 6698 §2.1.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Matching {
    /// Full(0): equal bytes.
    Full,
    /// SHA2-256(1).
    Sha256,
    /// SHA2-512(2).
    Sha512,
}

/// Why a TLSA record is not usable for SMTP. Unusable records are ignored (DANE-TLSA-1..3).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Unusable {
    /// PKIX-TA(0) or PKIX-EE(1): not for SMTP (RFC 7672 §3.1.3).
    PkixUsage(u8),
    /// A usage above 3.
    UnknownUsage(u8),
    /// A selector other than 0 and 1.
    UnknownSelector(u8),
    /// A matching type other than 0, 1 and 2.
    UnknownMatchingType(u8),
    /// A digest of the wrong length for its matching type.
    DigestLength {
        /// The length required (32 or 64).
        want: usize,
        /// The length published.
        got: usize,
    },
    /// Full(0) data that is not one DER `SEQUENCE` (a certificate or a SubjectPublicKeyInfo).
    NotDer,
}

impl fmt::Display for Unusable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::PkixUsage(u) => write!(f, "usage {u} (PKIX) is not used for SMTP"),
            Self::UnknownUsage(u) => write!(f, "unknown certificate usage {u}"),
            Self::UnknownSelector(s) => write!(f, "unknown selector {s}"),
            Self::UnknownMatchingType(m) => write!(f, "unknown matching type {m}"),
            Self::DigestLength { want, got } => write!(f, "{got} bytes of digest where {want} are due"),
            Self::NotDer => f.write_str("the association data is not one DER structure"),
        }
    }
}

impl std::error::Error for Unusable {}

/// A TLSA record usable for SMTP: made only by [`UsableTlsa::parse`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct UsableTlsa {
    usage: Usage,
    selector: Selector,
    matching: Matching,
    data: Vec<u8>,
}

impl UsableTlsa {
    /// The record, if SMTP can use it.
    pub fn parse(record: &TlsaRecord) -> Result<Self, Unusable> {
        let usage = match record.usage {
            0 | 1 => return Err(Unusable::PkixUsage(record.usage)),
            2 => Usage::DaneTa,
            3 => Usage::DaneEe,
            u => return Err(Unusable::UnknownUsage(u)),
        };
        let selector = match record.selector {
            0 => Selector::Cert,
            1 => Selector::Spki,
            s => return Err(Unusable::UnknownSelector(s)),
        };
        let matching = match record.matching_type {
            0 => Matching::Full,
            1 => Matching::Sha256,
            2 => Matching::Sha512,
            m => return Err(Unusable::UnknownMatchingType(m)),
        };
        let data = &record.data;
        let want = match matching {
            Matching::Full => None,
            Matching::Sha256 => Some(32),
            Matching::Sha512 => Some(64),
        };
        match want {
            Some(want) if data.len() != want => return Err(Unusable::DigestLength { want, got: data.len() }),
            Some(_) => {}
            None => match cert::der_next(data) {
                Some((0x30, _, [])) => {}
                _ => return Err(Unusable::NotDer),
            },
        }
        Ok(Self { usage, selector, matching, data: data.clone() })
    }

    /// DANE-TA or DANE-EE.
    pub fn usage(&self) -> Usage {
        self.usage
    }

    /// Whole certificate or public key.
    pub fn selector(&self) -> Selector {
        self.selector
    }

    /// Exact, SHA-256 or SHA-512.
    pub fn matching(&self) -> Matching {
        self.matching
    }

    /// The certificate association data.
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// Whether this record matches the certificate `cert` (DER), whatever its usage.
    pub fn matches(&self, cert: &[u8]) -> bool {
        let selected = match self.selector {
            Selector::Cert => cert,
            Selector::Spki => match cert::subject_public_key_info(cert) {
                Some(spki) => spki,
                None => return false,
            },
        };
        match self.matching {
            Matching::Full => selected == self.data.as_slice(),
            Matching::Sha256 => digest::digest(&digest::SHA256, selected).as_ref() == self.data.as_slice(),
            Matching::Sha512 => digest::digest(&digest::SHA512, selected).as_ref() == self.data.as_slice(),
        }
    }
}

impl TryFrom<&TlsaRecord> for UsableTlsa {
    type Error = Unusable;

    fn try_from(record: &TlsaRecord) -> Result<Self, Unusable> {
        Self::parse(record)
    }
}

/// The records of an RRset that take part in matching: the usable ones (DANE-TLSA-1..3), less
/// the SHA-256 records of a usage and selector that also has SHA-512 records (digest agility,
/// RFC 7671 §9, DANE-TLSA-13). Empty means "no usable records" (DANE-TLSA-4).
pub fn usable(records: &[TlsaRecord]) -> Vec<UsableTlsa> {
    let parsed: Vec<UsableTlsa> = records.iter().filter_map(|r| UsableTlsa::parse(r).ok()).collect();
    let has_sha512 = |usage, selector| {
        parsed.iter().any(|r| r.usage == usage && r.selector == selector && r.matching == Matching::Sha512)
    };
    parsed
        .iter()
        .filter(|r| r.matching != Matching::Sha256 || !has_sha512(r.usage, r.selector))
        .cloned()
        .collect()
}

/// The outcome of DANE authentication of one MX's chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DaneMatch {
    /// A usable record authenticated the server, through this usage.
    Passed {
        /// DANE-EE or DANE-TA.
        by: Usage,
    },
    /// Usable records exist and the chain does not satisfy any of them.
    Failed {
        /// `tlsa-invalid` when nothing matched; a certificate result type when a DANE-TA anchor
        /// was found but the chain below it, or the leaf's names, failed.
        reason: Reason,
        /// What did not match, for logs and reports.
        detail: String,
    },
    /// A secure RRset without a usable record: TLS is mandatory, authentication is not
    /// (RFC 7672 §2.2).
    NoUsableRecords,
}

impl DaneMatch {
    fn failed(reason: Reason, detail: impl Into<String>) -> Self {
        Self::Failed { reason, detail: detail.into() }
    }
}

impl From<CertFailure> for DaneMatch {
    fn from(f: CertFailure) -> Self {
        Self::Failed { reason: f.reason, detail: f.detail }
    }
}

/// Authenticates the chain an MX presented (leaf first; PEM or concatenated DER, as
/// [`cert::parse_chain`] reads it) with the records of its secure TLSA RRset, at `now` (Unix
/// seconds). `names` are the names a DANE-TA leaf may carry: the TLSA base domain and the MX host
/// name (the same name twice when no CNAME was followed). DANE-EE ignores them.
pub fn verify(records: &[TlsaRecord], chain: &[u8], names: &[Domain], now: u64) -> DaneMatch {
    let usable = usable(records);
    if usable.is_empty() {
        return DaneMatch::NoUsableRecords;
    }
    let certs = match cert::parse_chain(chain) {
        Ok(certs) => certs,
        Err(f) => return f.into(),
    };
    let Some((leaf, above)) = certs.split_first() else {
        return DaneMatch::failed(Reason::ValidationFailure, "no certificate was given");
    };
    let (ee, ta): (Vec<&UsableTlsa>, Vec<&UsableTlsa>) =
        usable.iter().partition(|r| r.usage == Usage::DaneEe);
    if ee.iter().any(|r| r.matches(leaf)) {
        return DaneMatch::Passed { by: Usage::DaneEe };
    }
    let (anchors, in_chain) = trust_anchors(&ta, &certs);
    if anchors.is_empty() {
        return DaneMatch::failed(
            Reason::TlsaInvalid,
            format!(
                "no usable TLSA record matches the chain ({} DANE-EE compared with the leaf, {} DANE-TA \
                 compared with the {} certificate(s) above it)",
                ee.len(),
                ta.len(),
                above.len()
            ),
        );
    }
    match verify_dane_ta(leaf, above, &anchors, names, now) {
        Ok(()) => DaneMatch::Passed { by: Usage::DaneTa },
        Err(e) if !in_chain && e.reason == Reason::CertificateNotTrusted => DaneMatch::failed(
            Reason::TlsaInvalid,
            "no usable TLSA record matches the chain: no certificate of the chain is issued by the \
             certificate or key that a DANE-TA Full(0) record publishes",
        ),
        Err(e) => e.into(),
    }
}

/// The trust anchors the DANE-TA records name: certificates of the chain above the leaf that a
/// record matches (DANE-TLSA-8); and for a Full(0) record matching none of them, what it
/// publishes (DANE-TLSA-9): a `2 0 0` certificate as it stands, a `2 1 0` key as the issuer of
/// the top certificate. The flag says whether any anchor was found in the chain itself.
fn trust_anchors(ta: &[&UsableTlsa], certs: &[CertificateDer<'_>]) -> (Vec<TrustAnchor<'static>>, bool) {
    let mut anchors = Vec::new();
    let mut in_chain = false;
    for record in ta {
        let mut found = false;
        for c in certs.iter().skip(1).filter(|c| record.matches(c)) {
            if let Ok(anchor) = webpki::anchor_from_trusted_cert(c) {
                anchors.push(anchor.to_owned());
                found = true;
            }
        }
        in_chain |= found;
        if found || record.usage != Usage::DaneTa || record.matching != Matching::Full {
            continue;
        }
        match record.selector {
            Selector::Cert => {
                let published = CertificateDer::from(record.data.as_slice());
                if let Ok(anchor) = webpki::anchor_from_trusted_cert(&published) {
                    anchors.push(anchor.to_owned());
                }
            }
            Selector::Spki => {
                let top = certs.last().and_then(|c| webpki::EndEntityCert::try_from(c).ok());
                let key = cert::der_next(&record.data).map(|(_, contents, _)| contents);
                if let (Some(top), Some(key)) = (top, key) {
                    anchors.push(TrustAnchor {
                        subject: top.issuer().to_vec().into(),
                        subject_public_key_info: key.to_vec().into(),
                        name_constraints: None,
                    });
                }
            }
        }
    }
    (anchors, in_chain)
}

/// The DANE-TA checks below the anchor: the path from the leaf to one of `anchors` (validity at
/// `now` of every certificate on it except the anchor, DANE-TLSA-11), then the leaf's names
/// (DANE-TLSA-10).
fn verify_dane_ta(
    leaf: &CertificateDer<'_>,
    above: &[CertificateDer<'_>],
    anchors: &[TrustAnchor<'_>],
    names: &[Domain],
    now: u64,
) -> Result<(), CertFailure> {
    let failure = |reason, detail: String| CertFailure { reason, detail };
    let ee = webpki::EndEntityCert::try_from(leaf).map_err(|e| {
        failure(Reason::ValidationFailure, format!("the leaf certificate cannot be read: {e}"))
    })?;
    let time = UnixTime::since_unix_epoch(Duration::from_secs(now));
    ee.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        anchors,
        above,
        time,
        webpki::KeyUsage::server_auth(),
        None,
        None,
    )
    .map_err(|e| match e {
        webpki::Error::UnknownIssuer => failure(
            Reason::CertificateNotTrusted,
            "the chain does not lead to the DANE-TA trust anchor of the TLSA record".into(),
        ),
        other => cert::classify(other),
    })?;
    let named = names.iter().any(|n| {
        DnsName::try_from(n.as_str())
            .is_ok_and(|name| ee.verify_is_valid_for_subject_name(&ServerName::DnsName(name)).is_ok())
    });
    if named {
        return Ok(());
    }
    let list = names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(" or ");
    Err(failure(
        Reason::CertificateHostMismatch,
        format!("DANE-TA: no subjectAltName dNSName of the certificate matches {list}"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use mtasts_fixtures::pki::pki;

    fn record(usage: u8, selector: u8, matching_type: u8, data: &[u8]) -> TlsaRecord {
        TlsaRecord { usage, selector, matching_type, data: data.to_vec() }
    }

    fn sha256(b: &[u8]) -> Vec<u8> {
        digest::digest(&digest::SHA256, b).as_ref().to_vec()
    }

    fn sha512(b: &[u8]) -> Vec<u8> {
        digest::digest(&digest::SHA512, b).as_ref().to_vec()
    }

    fn mx() -> Vec<Domain> {
        vec![Domain::parse("mx.example.test").expect("name")]
    }

    /// 2026-11-28, inside the validity of the test PKI.
    const NOW: u64 = 1_795_824_000;

    #[test]
    fn spki_walk_agrees_with_webpki() {
        let pki = pki();
        let mut checked = 0;
        for chain in pki.chains.values() {
            for der in &chain.der {
                let c = CertificateDer::from(der.as_slice());
                let ee = webpki::EndEntityCert::try_from(&c).expect("parse");
                let walked = cert::subject_public_key_info(der).expect("spki");
                assert_eq!(walked, ee.subject_public_key_info().as_ref());
                checked += 1;
            }
        }
        assert!(checked > 20);
        assert_eq!(cert::subject_public_key_info(b"\x30\x03\x02\x01\x01"), None);
    }

    #[test]
    fn what_is_unusable() {
        let d32 = [0u8; 32];
        assert_eq!(UsableTlsa::parse(&record(0, 0, 1, &d32)), Err(Unusable::PkixUsage(0)));
        assert_eq!(UsableTlsa::parse(&record(1, 1, 1, &d32)), Err(Unusable::PkixUsage(1)));
        assert_eq!(UsableTlsa::parse(&record(4, 1, 1, &d32)), Err(Unusable::UnknownUsage(4)));
        assert_eq!(UsableTlsa::parse(&record(3, 2, 1, &d32)), Err(Unusable::UnknownSelector(2)));
        assert_eq!(UsableTlsa::parse(&record(3, 1, 3, &d32)), Err(Unusable::UnknownMatchingType(3)));
        assert_eq!(
            UsableTlsa::parse(&record(3, 1, 2, &d32)),
            Err(Unusable::DigestLength { want: 64, got: 32 })
        );
        assert_eq!(
            UsableTlsa::parse(&record(3, 1, 1, &d32[1..])),
            Err(Unusable::DigestLength { want: 32, got: 31 })
        );
        assert_eq!(UsableTlsa::parse(&record(3, 0, 0, b"")), Err(Unusable::NotDer));
        assert_eq!(UsableTlsa::parse(&record(3, 0, 0, b"\x30\x00\x00")), Err(Unusable::NotDer));
        let ok = UsableTlsa::parse(&record(2, 1, 1, &d32)).expect("usable");
        assert_eq!(
            (ok.usage(), ok.selector(), ok.matching()),
            (Usage::DaneTa, Selector::Spki, Matching::Sha256)
        );
        assert!(UsableTlsa::parse(&record(3, 0, 0, b"\x30\x00")).is_ok());
    }

    #[test]
    fn sha512_records_retire_sha256_records_of_the_same_usage_and_selector() {
        let (a, b) = ([1u8; 32], [2u8; 64]);
        let set = [record(3, 1, 1, &a), record(3, 1, 2, &b), record(3, 0, 1, &a), record(2, 1, 1, &a)];
        let kept: Vec<_> = usable(&set).iter().map(|r| (r.usage(), r.selector(), r.matching())).collect();
        assert_eq!(
            kept,
            [
                (Usage::DaneEe, Selector::Spki, Matching::Sha512),
                (Usage::DaneEe, Selector::Cert, Matching::Sha256),
                (Usage::DaneTa, Selector::Spki, Matching::Sha256)
            ]
        );
    }

    #[test]
    fn dane_ee_by_key_and_the_failure_reasons() {
        let chain = &pki().chains["mx"];
        let spki = cert::subject_public_key_info(&chain.der[0]).expect("spki").to_vec();
        let pem = chain.pem();
        let pass = verify(&[record(3, 1, 1, &sha256(&spki))], pem.as_bytes(), &mx(), NOW);
        assert_eq!(pass, DaneMatch::Passed { by: Usage::DaneEe });
        let pass = verify(&[record(3, 1, 2, &sha512(&spki))], &chain.der_concat(), &mx(), NOW);
        assert_eq!(pass, DaneMatch::Passed { by: Usage::DaneEe });
        let other = verify(&[record(3, 1, 1, &[0; 32])], pem.as_bytes(), &mx(), NOW);
        assert!(matches!(other, DaneMatch::Failed { reason: Reason::TlsaInvalid, .. }), "{other:?}");
        assert_eq!(
            verify(&[record(1, 1, 1, &sha256(&spki))], pem.as_bytes(), &mx(), NOW),
            DaneMatch::NoUsableRecords
        );
        assert_eq!(verify(&[], b"garbage", &mx(), NOW), DaneMatch::NoUsableRecords);
        let garbage = verify(&[record(3, 1, 1, &sha256(&spki))], b"garbage", &mx(), NOW);
        assert!(
            matches!(garbage, DaneMatch::Failed { reason: Reason::ValidationFailure, .. }),
            "{garbage:?}"
        );
    }

    #[test]
    fn dane_ta_anchor_in_the_chain_or_as_a_bare_key() {
        let pki = pki();
        let root = &pki.certs["dane-root"];
        let root_key = cert::subject_public_key_info(root).expect("spki");
        let full = pki.chains["dane-ta"].der_concat();
        let short = pki.chains["dane-ta-short"].der_concat();
        let by_cert = [record(2, 0, 1, &sha256(root))];
        assert_eq!(verify(&by_cert, &full, &mx(), NOW), DaneMatch::Passed { by: Usage::DaneTa });
        let missing = verify(&by_cert, &short, &mx(), NOW);
        assert!(matches!(missing, DaneMatch::Failed { reason: Reason::TlsaInvalid, .. }), "{missing:?}");
        let bare_key = [record(2, 1, 0, root_key)];
        assert_eq!(verify(&bare_key, &short, &mx(), NOW), DaneMatch::Passed { by: Usage::DaneTa });
        let foreign = [record(2, 1, 0, cert::subject_public_key_info(&pki.certs["root"]).expect("spki"))];
        let foreign = verify(&foreign, &short, &mx(), NOW);
        assert!(matches!(foreign, DaneMatch::Failed { reason: Reason::TlsaInvalid, .. }), "{foreign:?}");
    }
}
