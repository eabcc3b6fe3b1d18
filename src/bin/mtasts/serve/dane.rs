//! DANE in the socketmap replies (README "DANE in socketmap replies"; docs/dane.md DANE-SM-*).
//!
//! Postfix reads one TLS policy per destination from `smtp_tls_policy_maps`, and a `secure
//! match=...` reply replaces DANE for every MX host of it: a destination where DANE applies
//! must get `dane-only` or `dane` instead (Postfix then does DANE itself, from its own validated
//! lookups). [`decide`] is the whole rule, a pure function of what the engine found:
//!
//! | MX RRset | MX hosts with secure TLSA records | MTA-STS reply would be | reply |
//! |---|---|---|---|
//! | bogus, or its lookup failed | — | anything | `TEMP` (DANE-SM-1) |
//! | secure or insecure | a TLSA lookup of any host is bogus or failed | anything | `TEMP` (DANE-SM-2) |
//! | secure or insecure | none | anything | the MTA-STS reply, unchanged (DANE-SM-3) |
//! | secure | all, each with a usable record | anything | `dane-only` (DANE-SM-4) |
//! | secure | all, one or more without a usable record | anything | `dane` (DANE-SM-5) |
//! | secure | some | `secure match=...` or `TEMP` | `dane-only`, the stricter one (DANE-SM-6) |
//! | secure | some | `NOTFOUND` | `dane` (DANE-SM-7) |
//! | insecure | all or some | anything | `dane` (DANE-SM-8) |
//!
//! Postfix's `dane-only` defers mail to a destination whose MX RRset is not DNSSEC-secure ("non
//! DNSSEC destination") and to MX hosts without usable TLSA records; `dane` uses DANE where
//! usable TLSA records exist, mandatory unauthenticated TLS where only unusable ones do, and
//! opportunistic TLS elsewhere. Neither can say "DANE for these hosts, MTA-STS for those": with
//! DANE on some MX hosts and an MTA-STS policy in force, `dane-only` keeps only the DANE hosts.

use mtasts::ports::{MxLookup, Security, TlsaLookup};

/// What DANE makes of a destination's reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// DANE applies to no MX host: the MTA-STS reply stands, exactly as without DANE.
    MtaSts,
    /// `OK dane-only`: mandatory DANE for every MX host.
    DaneOnly,
    /// `OK dane`: DANE where usable TLSA records exist, as Postfix's `dane` level does.
    Dane,
    /// `TEMP reason`: the DNSSEC state of the destination cannot be established.
    Temp(String),
}

impl Decision {
    /// Replaces `reply` (the MTA-STS reply payload) with the DANE reply, when there is one.
    pub fn apply(&self, reply: &mut Vec<u8>) {
        match self {
            Self::MtaSts => {}
            Self::DaneOnly => {
                reply.clear();
                reply.extend_from_slice(b"OK dane-only");
            }
            Self::Dane => {
                reply.clear();
                reply.extend_from_slice(b"OK dane");
            }
            Self::Temp(why) => {
                reply.clear();
                reply.extend_from_slice(b"TEMP ");
                // A reason from DNS data: one line, of a sane length.
                let clean: String =
                    why.chars().take(1000).map(|c| if c.is_control() { ' ' } else { c }).collect();
                reply.extend_from_slice(clean.as_bytes());
            }
        }
    }
}

/// The MX hosts of `domain` by its MX RRset: the exchanges (each once), the domain itself when it
/// has no MX records (the implicit MX), none for a null MX (RFC 7505: no mail at all).
pub fn mx_hosts(domain: &str, mx: &MxLookup) -> Vec<String> {
    let MxLookup::Records { records, .. } = mx else { return Vec::new() };
    if records.is_empty() {
        return vec![domain.to_owned()];
    }
    let mut hosts: Vec<String> = Vec::new();
    for r in records {
        let host = r.exchange.trim_end_matches('.').to_ascii_lowercase();
        if host.is_empty() {
            continue;
        }
        if !hosts.contains(&host) {
            hosts.push(host);
        }
    }
    hosts
}

/// The reply rule of the module's table. `hosts`: the TLSA state of each MX host (those of
/// [`mx_hosts`]); `sts_secure`: the MTA-STS reply would be `secure match=...` or `TEMP` (a policy
/// is, or may be, in force).
pub fn decide(domain: &str, mx: &MxLookup, hosts: &[(&str, &TlsaLookup)], sts_secure: bool) -> Decision {
    let secure_mx = match mx {
        MxLookup::Records { security: Security::Secure, .. } => true,
        MxLookup::Records { security: Security::Insecure, .. } => false,
        // Not produced by the lookups; in doubt, as bogus.
        MxLookup::Records { security: Security::Bogus, .. } => {
            return Decision::Temp(format!("the MX RRset of {domain} did not validate (bogus)"));
        }
        MxLookup::Bogus(why) => {
            return Decision::Temp(format!("the MX RRset of {domain} did not validate (bogus): {why}"));
        }
        MxLookup::Failed(why) => {
            return Decision::Temp(format!("the MX RRset of {domain} could not be looked up: {why}"));
        }
    };
    let (mut usable, mut unusable, mut without) = (0usize, 0usize, 0usize);
    for (host, lookup) in hosts {
        match lookup {
            TlsaLookup::NotApplicable => without += 1,
            TlsaLookup::Secure { records, .. } => {
                if mtasts::tlsa::usable(records).is_empty() {
                    unusable += 1;
                } else {
                    usable += 1;
                }
            }
            TlsaLookup::Bogus(why) => {
                return Decision::Temp(format!(
                    "the TLSA records of {host}, an MX host of {domain}, did not validate (bogus): {why}"
                ));
            }
            TlsaLookup::Failed(why) => {
                return Decision::Temp(format!(
                    "the TLSA records of {host}, an MX host of {domain}, could not be looked up: {why}"
                ));
            }
        }
    }
    if usable + unusable == 0 {
        Decision::MtaSts
    } else if !secure_mx {
        // `dane-only` would defer everything ("non DNSSEC destination").
        Decision::Dane
    } else if without == 0 {
        if unusable == 0 { Decision::DaneOnly } else { Decision::Dane }
    } else if sts_secure {
        Decision::DaneOnly
    } else {
        Decision::Dane
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mtasts::ports::{MxRecord, TlsaRecord};

    fn mx(security: Security, hosts: &[&str]) -> MxLookup {
        let records = hosts
            .iter()
            .enumerate()
            .map(|(i, h)| MxRecord {
                preference: 10 * u16::try_from(i).unwrap_or(0),
                exchange: (*h).to_owned(),
            })
            .collect();
        MxLookup::Records { records, security, ttl: 300 }
    }

    /// A secure TLSA RRset: `3 1 1` with a 32-byte digest (usable), or `1 1 1` (PKIX-EE: not
    /// usable for SMTP).
    fn secure(usable: bool) -> TlsaLookup {
        let usage = if usable { 3 } else { 1 };
        TlsaLookup::Secure {
            records: vec![TlsaRecord { usage, selector: 1, matching_type: 1, data: vec![7; 32] }],
            ttl: 300,
            base: None,
        }
    }

    fn na() -> TlsaLookup {
        TlsaLookup::NotApplicable
    }

    fn run(mx: &MxLookup, states: &[TlsaLookup], sts_secure: bool) -> Decision {
        let names = mx_hosts("example.test", mx);
        assert_eq!(names.len(), states.len(), "one state per host");
        let hosts: Vec<(&str, &TlsaLookup)> = names.iter().map(String::as_str).zip(states).collect();
        decide("example.test", mx, &hosts, sts_secure)
    }

    const TWO: &[&str] = &["mx1.example.test", "mx2.example.test"];

    #[test]
    fn sm_1_a_bogus_or_failed_mx_rrset_is_temp() {
        for sts in [false, true] {
            let d = run(&MxLookup::Bogus("spoiled RRSIG".into()), &[], sts);
            assert!(matches!(&d, Decision::Temp(w) if w.contains("bogus") && w.contains("spoiled")), "{d:?}");
            let d = run(&MxLookup::Failed("SERVFAIL".into()), &[], sts);
            assert!(matches!(&d, Decision::Temp(w) if w.contains("could not be looked up")), "{d:?}");
        }
        let d = run(&mx(Security::Bogus, &[]), &[na()], false);
        assert!(matches!(d, Decision::Temp(_)), "{d:?}");
    }

    #[test]
    fn sm_2_a_bogus_or_failed_tlsa_lookup_of_any_host_is_temp() {
        for security in [Security::Secure, Security::Insecure] {
            for sts in [false, true] {
                let m = mx(security, TWO);
                let d = run(&m, &[secure(true), TlsaLookup::Bogus("bad sig".into())], sts);
                assert!(
                    matches!(&d, Decision::Temp(w) if w.contains("mx2.example.test") && w.contains("bogus")),
                    "{d:?}"
                );
                let d = run(&m, &[TlsaLookup::Failed("timeout".into()), na()], sts);
                assert!(
                    matches!(&d, Decision::Temp(w) if w.contains("mx1.example.test") && w.contains("timeout")),
                    "{d:?}"
                );
            }
        }
    }

    #[test]
    fn sm_3_without_tlsa_records_the_mta_sts_reply_stands() {
        for security in [Security::Secure, Security::Insecure] {
            for sts in [false, true] {
                assert_eq!(run(&mx(security, TWO), &[na(), na()], sts), Decision::MtaSts);
            }
        }
        // A null MX has no host; no MX records: the domain itself is the host.
        assert_eq!(run(&mx(Security::Secure, &["."]), &[], true), Decision::MtaSts);
        assert_eq!(mx_hosts("example.test", &mx(Security::Secure, &[])), ["example.test"]);
    }

    #[test]
    fn sm_4_secure_mx_and_usable_tlsa_on_every_host_is_dane_only() {
        for sts in [false, true] {
            assert_eq!(
                run(&mx(Security::Secure, TWO), &[secure(true), secure(true)], sts),
                Decision::DaneOnly
            );
            // The implicit MX.
            assert_eq!(run(&mx(Security::Secure, &[]), &[secure(true)], sts), Decision::DaneOnly);
        }
    }

    #[test]
    fn sm_5_a_host_with_only_unusable_records_makes_it_dane() {
        for sts in [false, true] {
            assert_eq!(run(&mx(Security::Secure, TWO), &[secure(true), secure(false)], sts), Decision::Dane);
            assert_eq!(run(&mx(Security::Secure, TWO), &[secure(false), secure(false)], sts), Decision::Dane);
        }
    }

    #[test]
    fn sm_6_dane_on_some_hosts_with_an_mta_sts_policy_in_force_is_dane_only() {
        assert_eq!(run(&mx(Security::Secure, TWO), &[secure(true), na()], true), Decision::DaneOnly);
        assert_eq!(run(&mx(Security::Secure, TWO), &[na(), secure(false)], true), Decision::DaneOnly);
    }

    #[test]
    fn sm_7_dane_on_some_hosts_without_an_mta_sts_policy_in_force_is_dane() {
        assert_eq!(run(&mx(Security::Secure, TWO), &[secure(true), na()], false), Decision::Dane);
        assert_eq!(run(&mx(Security::Secure, TWO), &[na(), secure(false)], false), Decision::Dane);
    }

    #[test]
    fn sm_8_an_insecure_mx_rrset_with_tlsa_records_is_dane() {
        for sts in [false, true] {
            let m = mx(Security::Insecure, TWO);
            assert_eq!(run(&m, &[secure(true), secure(true)], sts), Decision::Dane);
            assert_eq!(run(&m, &[secure(true), na()], sts), Decision::Dane);
            assert_eq!(run(&m, &[na(), secure(false)], sts), Decision::Dane);
        }
    }

    #[test]
    fn hosts_are_named_once_in_lower_case() {
        let m = mx(Security::Secure, &["MX1.example.test.", "mx1.example.test", "mx2.example.test"]);
        assert_eq!(mx_hosts("example.test", &m), TWO);
        assert!(mx_hosts("example.test", &MxLookup::Failed("x".into())).is_empty());
    }

    #[test]
    fn replies() {
        let reply = |d: Decision| {
            let mut out = b"OK secure match=mx.example.test servername=hostname".to_vec();
            d.apply(&mut out);
            String::from_utf8(out).expect("utf-8")
        };
        assert_eq!(reply(Decision::MtaSts), "OK secure match=mx.example.test servername=hostname");
        assert_eq!(reply(Decision::DaneOnly), "OK dane-only");
        assert_eq!(reply(Decision::Dane), "OK dane");
        assert_eq!(reply(Decision::Temp("a\nb".into())), "TEMP a b");
        assert_eq!(reply(Decision::Temp("x".repeat(5000))).len(), 5 + 1000);
    }
}
