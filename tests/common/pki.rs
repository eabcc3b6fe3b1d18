//! A test PKI made with rcgen: a root, an intermediate, and leaves for every certificate case
//! (valid, expired, not yet valid, wrong name, wildcards, untrusted root, missing intermediate,
//! CN only). Nothing here is read from disk; every run makes fresh keys.

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::OnceLock;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
    date_time_ymd,
};

/// A certificate chain and the key of its leaf.
pub struct Chain {
    /// DER certificates, leaf first.
    pub der: Vec<Vec<u8>>,
    /// The leaf's private key, PKCS#8 PEM.
    pub key_pem: String,
}

impl Chain {
    /// The chain as PEM text.
    pub fn pem(&self) -> String {
        self.der.iter().map(|d| pem_encode(d)).collect()
    }

    /// The chain as concatenated DER.
    pub fn der_concat(&self) -> Vec<u8> {
        self.der.concat()
    }
}

/// The test PKI.
pub struct Pki {
    /// The root certificate, PEM (the trust anchor tests configure).
    pub root_pem: String,
    /// Chains by name.
    pub chains: HashMap<&'static str, Chain>,
}

fn pem_encode(der: &[u8]) -> String {
    const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = String::new();
    for chunk in der.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |acc, (i, &b)| acc | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                b64.push(B64[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                b64.push('=');
            }
        }
    }
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

fn ca_params(cn: &str) -> CertificateParams {
    let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
    p.distinguished_name.push(DnType::CommonName, cn);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages =
        vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    p.not_before = date_time_ymd(2020, 1, 1);
    p.not_after = date_time_ymd(2045, 1, 1);
    p
}

fn leaf_params(sans: &[&str], from: (i32, u8, u8), until: (i32, u8, u8)) -> CertificateParams {
    let mut p =
        CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).expect("params");
    p.distinguished_name.push(DnType::CommonName, sans.first().copied().unwrap_or("mx.example.test"));
    p.not_before = date_time_ymd(from.0, from.1, from.2);
    p.not_after = date_time_ymd(until.0, until.1, until.2);
    p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    p
}

const VALID_FROM: (i32, u8, u8) = (2025, 1, 1);
const VALID_UNTIL: (i32, u8, u8) = (2035, 1, 1);

/// The process-wide test PKI (key generation is the slow part; done once).
pub fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(build)
}

fn build() -> Pki {
    let root = CertifiedIssuer::self_signed(ca_params("mtasts test root"), KeyPair::generate().expect("key"))
        .expect("root");
    let inter = CertifiedIssuer::signed_by(
        ca_params("mtasts test intermediate"),
        KeyPair::generate().expect("key"),
        &root,
    )
    .expect("intermediate");
    let rogue_root = CertifiedIssuer::self_signed(ca_params("rogue root"), KeyPair::generate().expect("key"))
        .expect("rogue root");

    let mut chains = HashMap::new();
    let mut leaf = |name: &'static str, params: CertificateParams, via_inter: bool| {
        let key = KeyPair::generate().expect("key");
        let (cert, issuer_der) = if via_inter {
            (params.signed_by(&key, &inter).expect("leaf"), inter.der().to_vec())
        } else {
            (params.signed_by(&key, &rogue_root).expect("leaf"), rogue_root.der().to_vec())
        };
        chains
            .insert(name, Chain { der: vec![cert.der().to_vec(), issuer_der], key_pem: key.serialize_pem() });
    };
    leaf("mx", leaf_params(&["mx.example.test", "mx2.example.test"], VALID_FROM, VALID_UNTIL), true);
    leaf("expired", leaf_params(&["mx.example.test"], (2020, 1, 1), (2024, 1, 1)), true);
    leaf("not-yet-valid", leaf_params(&["mx.example.test"], (2031, 1, 1), VALID_UNTIL), true);
    leaf("wrong-name", leaf_params(&["www.example.test"], VALID_FROM, VALID_UNTIL), true);
    leaf("wildcard", leaf_params(&["*.example.test"], VALID_FROM, VALID_UNTIL), true);
    leaf("wildcard-mx", leaf_params(&["*.mx.example.test"], VALID_FROM, VALID_UNTIL), true);
    leaf("apex", leaf_params(&["example.test"], VALID_FROM, VALID_UNTIL), true);
    leaf("policy-host", leaf_params(&["mta-sts.example.test"], VALID_FROM, VALID_UNTIL), true);
    leaf("idn", leaf_params(&["xn--bcher-kva.example"], VALID_FROM, VALID_UNTIL), true);
    leaf("untrusted", leaf_params(&["mx.example.test"], VALID_FROM, VALID_UNTIL), false);
    leaf(
        "client-only",
        {
            let mut p = leaf_params(&["mx.example.test"], VALID_FROM, VALID_UNTIL);
            p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
            p
        },
        true,
    );
    {
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
        p.distinguished_name.push(DnType::CommonName, "mx.example.test");
        p.not_before = date_time_ymd(VALID_FROM.0, VALID_FROM.1, VALID_FROM.2);
        p.not_after = date_time_ymd(VALID_UNTIL.0, VALID_UNTIL.1, VALID_UNTIL.2);
        leaf("cn-only", p, true);
    }
    // A leaf whose intermediate is left out of the chain.
    let mx = &chains["mx"];
    let leaf_only = Chain { der: vec![mx.der[0].clone()], key_pem: mx.key_pem.clone() };
    chains.insert("missing-intermediate", leaf_only);
    // A self-signed leaf.
    let key = KeyPair::generate().expect("key");
    let cert =
        leaf_params(&["mx.example.test"], VALID_FROM, VALID_UNTIL).self_signed(&key).expect("self-signed");
    chains.insert("self-signed", Chain { der: vec![cert.der().to_vec()], key_pem: key.serialize_pem() });
    // Intermediate listed before the leaf.
    let mx = &chains["mx"];
    let reversed = Chain { der: vec![mx.der[1].clone(), mx.der[0].clone()], key_pem: mx.key_pem.clone() };
    chains.insert("reversed", reversed);

    Pki { root_pem: root.pem(), chains }
}
