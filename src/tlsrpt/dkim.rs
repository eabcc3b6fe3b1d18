//! DKIM signatures on mailed reports (RFC 6376, RFC 8463; RFC 8460 §3; RPT-12).
//!
//! RFC 8460 §3 asks that a report sent by mail carry a valid DKIM signature of the reporting
//! domain, with `TLS-Report-Domain` and `TLS-Report-Submitter` among the signed header fields,
//! and without an `l=` tag (the whole body is signed). [`DkimSigner`] does exactly that for the
//! messages of [`crate::tlsrpt::mail`]:
//!
//! * canonicalization `relaxed/relaxed` (RFC 6376 §3.4.2, §3.4.4), which survives the
//!   whitespace and line-ending changes an MTA may make on submission (the message is written
//!   with LF line ends for `sendmail -t`; it is canonicalized as if they were CRLF);
//! * algorithms `rsa-sha256` (RFC 6376 §3.3.2; an RSA key of 2048 to 4096 bits) and
//!   `ed25519-sha256` (RFC 8463: Ed25519 over the SHA-256 of the signed data), chosen by the key;
//! * the signed header fields ([`SIGNED_HEADERS`]): every header field the message has, the two
//!   `TLS-Report-*` fields and `From` listed once more than they occur ("over-signed"), so that
//!   nobody can add a second instance after signing without breaking the signature;
//! * `t=` (when it was signed), no `x=`, no `l=`, no `z=`.
//!
//! Why not the `mail-auth` crate (decision D34 in docs/conformance.md has the compiler errors):
//! version 0.15.1 cannot be built with `ring` underneath. Without its `aws-lc-rs` or
//! `rust-crypto` feature it does not compile, and its `SigningKey`/`HashContext` traits must
//! return its own `HashOutput`, which only wraps an aws-lc-rs or a RustCrypto digest; the first is
//! a second crypto provider, the second brings the `rsa` crate and its open timing advisory on
//! private-key operations (RUSTSEC-2023-0071). Its `mail-parser` also needs rustc 1.98. Signing
//! one message that mtasts itself writes is small; the cryptography is ring's, and the tests check
//! every signature, over-signing included, with an independent verifier (dkimpy) against a key
//! published in DNS.
//!
//! The key is read from a PEM file (`[report.dkim] key_file`): PKCS#8 (`BEGIN PRIVATE KEY`, RSA or
//! Ed25519) or PKCS#1 (`BEGIN RSA PRIVATE KEY`). [`DkimSigner::dns_record`] gives the TXT record
//! to publish at `SELECTOR._domainkey.DOMAIN`, marked `s=tlsrpt` (RFC 8460 §3 lets a receiver
//! require that service type on keys that sign reports).

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ring::rand::SystemRandom;
use ring::signature::{self, Ed25519KeyPair, KeyPair as _, RsaKeyPair};
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject as _;

use crate::domain::Domain;

/// The header fields signed, in this order, when the message has them; `from`,
/// `tls-report-domain` and `tls-report-submitter` are also listed once more (over-signed).
pub const SIGNED_HEADERS: &[&str] = &[
    "from",
    "to",
    "subject",
    "date",
    "message-id",
    "mime-version",
    "content-type",
    "auto-submitted",
    "tls-required",
    "tls-report-domain",
    "tls-report-submitter",
];

/// Header fields listed twice in `h=`: an instance added after signing breaks the signature.
const OVER_SIGNED: &[&str] = &["from", "tls-report-domain", "tls-report-submitter"];

enum Key {
    Rsa(RsaKeyPair),
    Ed25519(Ed25519KeyPair),
}

/// Signs report messages for one domain and selector with one key.
pub struct DkimSigner {
    domain: Domain,
    selector: String,
    key: Key,
}

impl std::fmt::Debug for DkimSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DkimSigner")
            .field("domain", &self.domain)
            .field("selector", &self.selector)
            .field("algorithm", &self.algorithm())
            .finish_non_exhaustive()
    }
}

impl DkimSigner {
    /// A signer for `d=domain`, `s=selector`, with the private key in the PEM file `key_file`.
    pub fn from_key_file(domain: &str, selector: &str, key_file: &Path) -> Result<Self, String> {
        let pem = std::fs::read(key_file).map_err(|e| format!("cannot read {}: {e}", key_file.display()))?;
        Self::from_pem(domain, selector, &pem).map_err(|e| format!("{}: {e}", key_file.display()))
    }

    /// A signer for `d=domain`, `s=selector`, with a PEM private key.
    pub fn from_pem(domain: &str, selector: &str, pem: &[u8]) -> Result<Self, String> {
        let domain = Domain::parse(domain).map_err(|e| format!("domain {domain:?}: {e}"))?;
        check_selector(selector)?;
        let der = PrivateKeyDer::from_pem_slice(pem).map_err(|e| {
            format!("no private key in PEM form (BEGIN PRIVATE KEY or BEGIN RSA PRIVATE KEY): {e}")
        })?;
        let rsa_size = "an RSA key must have 2048 to 4096 bits";
        let key = match &der {
            PrivateKeyDer::Pkcs1(k) => Key::Rsa(
                RsaKeyPair::from_der(k.secret_pkcs1_der())
                    .map_err(|e| format!("unusable RSA key ({e}); {rsa_size}"))?,
            ),
            PrivateKeyDer::Pkcs8(k) => {
                let bytes = k.secret_pkcs8_der();
                match (RsaKeyPair::from_pkcs8(bytes), Ed25519KeyPair::from_pkcs8_maybe_unchecked(bytes)) {
                    (Ok(rsa), _) => Key::Rsa(rsa),
                    (_, Ok(ed)) => Key::Ed25519(ed),
                    (Err(rsa), Err(_)) => {
                        return Err(format!(
                            "unusable key ({rsa}): DKIM signs with RSA ({rsa_size}) or Ed25519"
                        ));
                    }
                }
            }
            _ => return Err("an EC key cannot sign DKIM: use an RSA or Ed25519 key".to_owned()),
        };
        if let Key::Rsa(k) = &key {
            if k.public().modulus_len() < 256 {
                return Err(rsa_size.to_owned());
            }
        }
        Ok(Self { domain, selector: selector.to_owned(), key })
    }

    /// `rsa-sha256` or `ed25519-sha256`.
    pub fn algorithm(&self) -> &'static str {
        match self.key {
            Key::Rsa(_) => "rsa-sha256",
            Key::Ed25519(_) => "ed25519-sha256",
        }
    }

    /// The signing domain (`d=`).
    pub fn domain(&self) -> &Domain {
        &self.domain
    }

    /// The selector (`s=`).
    pub fn selector(&self) -> &str {
        &self.selector
    }

    /// Where the public key is published: `SELECTOR._domainkey.DOMAIN`.
    pub fn record_name(&self) -> String {
        format!("{}._domainkey.{}", self.selector, self.domain)
    }

    /// The TXT record to publish at [`Self::record_name`], restricted to TLSRPT (`s=tlsrpt`).
    pub fn dns_record(&self) -> String {
        let (k, p) = match &self.key {
            Key::Rsa(k) => ("rsa", STANDARD.encode(rsa_spki(k.public().as_ref()))),
            Key::Ed25519(k) => ("ed25519", STANDARD.encode(k.public_key().as_ref())),
        };
        format!("v=DKIM1; k={k}; s=tlsrpt; p={p}")
    }

    /// The `DKIM-Signature` header field (LF line ends, folded, with its final LF) for `message`
    /// (a whole message with LF line ends, as [`crate::tlsrpt::mail::message`] writes it), signed
    /// at `now` (Unix seconds). Put it in front of the message.
    pub fn sign(&self, message: &[u8], now: u64) -> Result<String, String> {
        let (headers, body) = split(message)?;
        let body_hash = STANDARD.encode(ring::digest::digest(&ring::digest::SHA256, &relaxed_body(body)));
        let mut h = Vec::new();
        let mut data = Vec::new();
        for &name in SIGNED_HEADERS {
            let present: Vec<&Field<'_>> =
                headers.iter().filter(|f| f.name.eq_ignore_ascii_case(name)).collect();
            // Instances are taken from the bottom up (RFC 6376 §5.4.2); ours occur once each.
            for field in present.iter().rev() {
                h.push(name);
                data.extend_from_slice(relaxed_header(field.name, field.value).as_bytes());
                data.extend_from_slice(b"\r\n");
            }
            if !present.is_empty() && OVER_SIGNED.contains(&name) {
                h.push(name); // a non-existent instance: signs as the empty string
            }
        }
        if !h.contains(&"tls-report-domain") || !h.contains(&"tls-report-submitter") {
            return Err("the message has no TLS-Report-Domain or TLS-Report-Submitter".to_owned());
        }
        let tags = format!(
            "v=1; a={}; c=relaxed/relaxed; d={}; s={}; t={now}; h={}; bh={body_hash}; b=",
            self.algorithm(),
            self.domain,
            self.selector,
            h.join(":")
        );
        data.extend_from_slice(relaxed_header("DKIM-Signature", &tags).as_bytes());
        let b = STANDARD.encode(self.signature(&data)?);
        let chunks: Vec<&str> =
            b.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).unwrap_or_default()).collect();
        let mut out = String::new();
        crate::tlsrpt::mail::header(&mut out, "DKIM-Signature", &format!("{tags}{}", chunks.join(" ")));
        Ok(out)
    }

    /// `message` with its `DKIM-Signature` in front.
    pub fn signed(&self, message: &[u8], now: u64) -> Result<Vec<u8>, String> {
        let mut out = self.sign(message, now)?.into_bytes();
        out.extend_from_slice(message);
        Ok(out)
    }

    fn signature(&self, data: &[u8]) -> Result<Vec<u8>, String> {
        match &self.key {
            Key::Rsa(k) => {
                let mut sig = vec![0; k.public().modulus_len()];
                k.sign(&signature::RSA_PKCS1_SHA256, &SystemRandom::new(), data, &mut sig)
                    .map_err(|_| "RSA signing failed".to_owned())?;
                Ok(sig)
            }
            Key::Ed25519(k) => {
                Ok(k.sign(ring::digest::digest(&ring::digest::SHA256, data).as_ref()).as_ref().to_vec())
            }
        }
    }
}

/// A selector is one or more labels of letters, digits and hyphens (RFC 6376 §3.1).
fn check_selector(selector: &str) -> Result<(), String> {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if selector.is_empty() || !selector.split('.').all(label_ok) {
        return Err(format!("selector {selector:?}: expected labels of letters, digits and hyphens"));
    }
    Ok(())
}

struct Field<'a> {
    name: &'a str,
    /// Everything after the colon, continuation lines included (LF kept).
    value: &'a str,
}

/// The header fields and the body of a message with LF (or CRLF) line ends.
fn split(message: &[u8]) -> Result<(Vec<Field<'_>>, &[u8]), String> {
    let text_end = message.windows(2).position(|w| w == b"\n\n");
    let crlf_end = message.windows(4).position(|w| w == b"\r\n\r\n");
    let (head, body) = match (text_end, crlf_end) {
        (Some(i), Some(j)) if j + 1 < i => (&message[..j + 2], &message[j + 4..]),
        (Some(i), _) => (&message[..=i], &message[i + 2..]),
        (None, Some(j)) => (&message[..j + 2], &message[j + 4..]),
        (None, None) => return Err("the message has no body".to_owned()),
    };
    let head = std::str::from_utf8(head).map_err(|_| "the header is not UTF-8".to_owned())?;
    let mut fields: Vec<Field<'_>> = Vec::new();
    let mut start = 0;
    let bytes = head.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        let next = bytes.get(i + 1).copied();
        if b == b'\n' && !matches!(next, Some(b' ' | b'\t')) {
            let line = &head[start..=i];
            let (name, value) =
                line.split_once(':').ok_or_else(|| format!("a header line without a colon: {line:?}"))?;
            fields.push(Field { name: name.trim_end(), value });
            start = i + 1;
        }
    }
    Ok((fields, body))
}

/// `name:value` in the relaxed form (RFC 6376 §3.4.2), without the final CRLF.
fn relaxed_header(name: &str, value: &str) -> String {
    let mut v = String::with_capacity(value.len());
    let mut space = false;
    for c in value.chars() {
        match c {
            '\r' | '\n' => {}
            ' ' | '\t' => space = true,
            c => {
                if space && !v.is_empty() {
                    v.push(' ');
                }
                space = false;
                v.push(c);
            }
        }
    }
    format!("{}:{v}", name.trim().to_ascii_lowercase())
}

/// The body in the relaxed form (RFC 6376 §3.4.4), with CRLF line ends.
fn relaxed_body(body: &[u8]) -> Vec<u8> {
    let mut lines: Vec<Vec<u8>> = body
        .split(|&b| b == b'\n')
        .map(|line| {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let mut out = Vec::with_capacity(line.len());
            let mut space = false;
            for &b in line {
                if b == b' ' || b == b'\t' {
                    space = true;
                } else {
                    if space {
                        out.push(b' ');
                    }
                    space = false;
                    out.push(b);
                }
            }
            out
        })
        .collect();
    while lines.last().is_some_and(Vec::is_empty) {
        lines.pop();
    }
    let mut out = Vec::new();
    for line in lines {
        out.extend_from_slice(&line);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// A DER SubjectPublicKeyInfo around an RSAPublicKey (what `p=` of `k=rsa` holds).
fn rsa_spki(rsa_public_key: &[u8]) -> Vec<u8> {
    fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        let len = content.len();
        if len < 0x80 {
            out.push(u8::try_from(len).unwrap_or(0));
        } else {
            let bytes: Vec<u8> = len.to_be_bytes().into_iter().skip_while(|&b| b == 0).collect();
            out.push(0x80 | u8::try_from(bytes.len()).unwrap_or(0));
            out.extend_from_slice(&bytes);
        }
        out.extend_from_slice(content);
        out
    }
    // SEQUENCE { OID 1.2.840.113549.1.1.1, NULL }
    let algorithm: &[u8] =
        &[0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00];
    let mut bits = vec![0];
    bits.extend_from_slice(rsa_public_key);
    let mut inner = algorithm.to_vec();
    inner.extend_from_slice(&tlv(0x03, &bits));
    tlv(0x30, &inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relaxed_forms() {
        assert_eq!(relaxed_header("Subject ", " a  b\n \tc \n"), "subject:a b c");
        assert_eq!(relaxed_header("TLS-Report-Domain", " example.com\n"), "tls-report-domain:example.com");
        assert_eq!(relaxed_body(b"a  b \t\nc\n\n\n"), b"a b\r\nc\r\n");
        assert_eq!(relaxed_body(b"\n\n"), b"");
        assert_eq!(relaxed_body(b"x"), b"x\r\n");
    }

    #[test]
    fn split_folded_headers() {
        let (fields, body) = split(b"A: 1\nB: two\n  lines\nC:3\n\nbody\n").expect("split");
        let got: Vec<(&str, &str)> = fields.iter().map(|f| (f.name, f.value)).collect();
        assert_eq!(got, [("A", " 1\n"), ("B", " two\n  lines\n"), ("C", "3\n")]);
        assert_eq!(body, b"body\n");
        assert!(split(b"A: 1\n").is_err());
        assert!(split(b"no colon\n\nbody").is_err());
    }

    #[test]
    fn selectors_and_keys_are_checked() {
        assert!(check_selector("tlsrpt2026").is_ok());
        assert!(check_selector("a.b-c").is_ok());
        for bad in ["", "-a", "a..b", "a b", "sel_1"] {
            assert!(check_selector(bad).is_err(), "{bad}");
        }
        let err = DkimSigner::from_pem("example.com", "s", b"not a key").expect_err("no key");
        assert!(err.contains("no private key"), "{err}");
    }
}
