//! DANE inside the engine (RFC 7672; RFC 8461 §2): the MX host's TLSA state from a fake
//! DNSSEC-validating lookup, crossed with every MTA-STS mode. Where DANE applies it decides:
//! every DANE failure is `fail-enforce` whatever the mode, a DANE pass delivers, and without DANE
//! MTA-STS decides as before (docs/dane.md, "DANE in the verdict").

use std::sync::Arc;

use crate::common::{FakeTlsa, Harness, pki};
use mtasts::ports::{MxLookup, MxRecord, Security, TlsaLookup, TlsaRecord};
use mtasts::{Reason, Timing, Verdict};

/// `3 1 1` of the test PKI's `mx` leaf (valid for mx.example.test).
fn dane_ee_of_mx_leaf() -> TlsaRecord {
    let der = pki::pki().chains["mx"].der[0].clone();
    let cert = rustls_pki_types::CertificateDer::from(der.as_slice());
    let ee = webpki::EndEntityCert::try_from(&cert).expect("certificate");
    let spki = ee.subject_public_key_info();
    let data = ring::digest::digest(&ring::digest::SHA256, spki.as_ref()).as_ref().to_vec();
    TlsaRecord { usage: 3, selector: 1, matching_type: 1, data }
}

fn secure(records: Vec<TlsaRecord>) -> TlsaLookup {
    TlsaLookup::Secure { records, ttl: 3600, base: None }
}

/// A harness whose policy domain `example.test` publishes a policy of `mode` listing only
/// `listed.example.test` (so `mx.example.test` fails MTA-STS by name), with DANE answers set
/// for `mx.example.test`.
fn world(mode: Option<&str>, tlsa: TlsaLookup) -> (Harness, Arc<FakeTlsa>) {
    let fake = Arc::new(FakeTlsa::default());
    fake.set("mx.example.test", tlsa);
    let h = Harness::with_tlsa(Timing::default(), Some(Arc::clone(&fake)));
    match mode {
        Some(mode) => {
            h.dns.set_records(&["v=STSv1; id=1"]);
            h.http.set_body(&format!(
                "version: STSv1\nmode: {mode}\nmx: listed.example.test\nmax_age: 86400\n"
            ));
        }
        None => h.dns.set(Err(mtasts::DnsError::NotFound)),
    }
    (h, fake)
}

#[test]
fn dane_decides_where_it_applies_whatever_the_mta_sts_mode() {
    let good = pki::pki().chains["mx"].pem();
    let other = pki::pki().leaf(&["mx.example.test"]).pem(); // the right name, another key
    let wrong_key = TlsaRecord { data: vec![0xAB; 32], ..dane_ee_of_mx_leaf() };
    for mode in [None, Some("none"), Some("testing"), Some("enforce")] {
        // DANE pass: delivered, whatever MTA-STS says of the (unlisted) MX name.
        let (h, _) = world(mode, secure(vec![dane_ee_of_mx_leaf()]));
        let o = h.engine.check("example.test", "mx.example.test", Some(good.as_bytes())).expect("check");
        assert!(o.verdict.may_deliver(), "{mode:?}: {o:?}");
        assert!(o.dane.as_ref().is_some_and(|d| d.secure() && d.usable == 1), "{o:?}");
        if mode.is_none() {
            assert_eq!(o.verdict, Verdict::Pass, "DANE alone decides: a pass");
        }
        // DANE fail (no record matches the presented key): fail-enforce, whatever the mode.
        for chain in [&other, &good] {
            let records = if chain == &good { vec![wrong_key.clone()] } else { vec![dane_ee_of_mx_leaf()] };
            let (h, _) = world(mode, secure(records));
            let o = h.engine.check("example.test", "mx.example.test", Some(chain.as_bytes())).expect("check");
            assert_eq!((o.verdict, o.reason), (Verdict::FailEnforce, Reason::TlsaInvalid), "{mode:?}: {o:?}");
        }
        // Bogus and failed lookups: a temporary failure of the MX, never "no DANE".
        for lookup in [TlsaLookup::Bogus("RRSIG expired".into()), TlsaLookup::Failed("timed out".into())] {
            let (h, _) = world(mode, lookup.clone());
            let o = h.engine.check("example.test", "mx.example.test", Some(good.as_bytes())).expect("check");
            assert_eq!(
                (o.verdict, o.reason),
                (Verdict::FailEnforce, Reason::DnssecInvalid),
                "{mode:?} {lookup:?}"
            );
            let o = h.engine.check_mx("example.test", "mx.example.test").expect("check_mx");
            assert_eq!(o.verdict, Verdict::FailEnforce, "before connecting too: {mode:?} {lookup:?}");
        }
        // DANE applies but no TLS: dane-required.
        let (h, _) = world(mode, secure(vec![dane_ee_of_mx_leaf()]));
        let o = h.engine.check("example.test", "mx.example.test", None).expect("check");
        assert_eq!((o.verdict, o.reason), (Verdict::FailEnforce, Reason::DaneRequired), "{mode:?}: {o:?}");
    }
}

#[test]
fn without_dane_mta_sts_decides_as_before() {
    let good = pki::pki().chains["mx"].pem();
    for (mode, want) in [
        (None, Verdict::NoPolicy),
        (Some("none"), Verdict::NoPolicy),
        (Some("testing"), Verdict::FailTesting),
        (Some("enforce"), Verdict::FailEnforce),
    ] {
        let (h, _) = world(mode, TlsaLookup::NotApplicable);
        let o = h.engine.check("example.test", "mx.example.test", Some(good.as_bytes())).expect("check");
        assert_eq!(o.verdict, want, "{mode:?}: {o:?}");
        assert!(o.dane.is_none());
    }
}

#[test]
fn before_connecting_a_dane_mx_requires_tls_and_dane_will_decide() {
    let (h, _) = world(Some("enforce"), secure(vec![dane_ee_of_mx_leaf()]));
    // The MX is not listed by the enforce policy, but DANE applies: not refused by MTA-STS.
    let o = h.engine.check_mx("example.test", "mx.example.test").expect("check_mx");
    assert!(o.verdict.may_deliver(), "{o:?}");
    let dane = o.dane.expect("DANE applies");
    assert_eq!(dane.dane, mtasts::Dane::Pending);
    assert!(dane.secure());
}

#[test]
fn a_secure_rrset_without_usable_records_means_tls_without_authentication() {
    let pkix = TlsaRecord { usage: 1, ..dane_ee_of_mx_leaf() }; // PKIX-EE: unusable for SMTP
    let (h, _) = world(None, secure(vec![pkix]));
    let any = pki::pki().leaf(&["elsewhere.test"]).pem();
    let o = h.engine.check("example.test", "mx.example.test", Some(any.as_bytes())).expect("check");
    assert_eq!(o.verdict, Verdict::Pass, "{o:?}");
    assert_eq!(o.dane.as_ref().map(|d| d.usable), Some(0));
    let o = h.engine.check("example.test", "mx.example.test", None).expect("check");
    assert_eq!((o.verdict, o.reason), (Verdict::FailEnforce, Reason::DaneRequired));
}

#[test]
fn tlsa_answers_are_cached_for_their_ttl() {
    let good = pki::pki().chains["mx"].pem();
    let (h, fake) = world(Some("enforce"), secure(vec![dane_ee_of_mx_leaf()]));
    for _ in 0..5 {
        h.engine.check("example.test", "mx.example.test", Some(good.as_bytes())).expect("check");
    }
    assert_eq!(fake.lookups(), 1, "one lookup for five checks within the TTL");
    h.clock.advance(3600);
    h.engine.check("example.test", "mx.example.test", Some(good.as_bytes())).expect("check");
    assert_eq!(fake.lookups(), 2, "looked up again once the TTL passed");
}

#[test]
fn tlsa_answers_outlive_the_process_in_the_store() {
    // Exim starts a process per delivery: a stored answer spares the next one the DNSSEC walk.
    let dir = std::env::temp_dir().join(format!("mtasts-dane-store-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("p.sqlite");
    let fake = Arc::new(FakeTlsa::default());
    fake.set("mx.example.test", secure(vec![dane_ee_of_mx_leaf()]));
    let clock = Arc::new(crate::common::FakeClock::default());
    let engine = || {
        mtasts::Engine::builder(
            Arc::new(crate::common::FakeDns::default()),
            Arc::new(crate::common::FakeHttp::default()),
        )
        .clock(Arc::clone(&clock))
        .tlsa_resolver(Arc::clone(&fake))
        .store(mtasts::cache::SqliteStore::open(&path, 300).expect("store"))
        .build()
    };
    let good = pki::pki().chains["mx"].pem();
    let first = engine();
    assert_eq!(
        first.check("example.test", "mx.example.test", Some(good.as_bytes())).expect("check").verdict,
        Verdict::Pass
    );
    assert_eq!(fake.lookups(), 1);
    drop(first);
    let second = engine();
    let o = second.check("example.test", "mx.example.test", Some(good.as_bytes())).expect("check");
    assert_eq!(o.verdict, Verdict::Pass, "{o:?}");
    assert_eq!(fake.lookups(), 1, "the second process used the stored answer");
    assert_eq!(fake.mx_lookups(), 1, "and the stored MX RRset");
    // Past the TTL the stored answer is not used: looked up again.
    clock.advance(3601);
    let third = engine();
    third.check("example.test", "mx.example.test", Some(good.as_bytes())).expect("check");
    assert_eq!(fake.lookups(), 2);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_remembered_dane_ee_pass_ends_with_the_answer_it_came_from() {
    let good = pki::pki().chains["mx"].pem();
    let (h, fake) = world(Some("enforce"), secure(vec![dane_ee_of_mx_leaf()]));
    for _ in 0..3 {
        let o = h.engine.check("example.test", "mx.example.test", Some(good.as_bytes())).expect("check");
        assert!(o.verdict.may_deliver(), "{o:?}");
    }
    // The domain owner rolls the key: the new answer no longer matches the old chain.
    fake.set("mx.example.test", secure(vec![TlsaRecord { data: vec![0x11; 32], ..dane_ee_of_mx_leaf() }]));
    h.clock.advance(3600);
    let o = h.engine.check("example.test", "mx.example.test", Some(good.as_bytes())).expect("check");
    assert_eq!((o.verdict, o.reason), (Verdict::FailEnforce, Reason::TlsaInvalid), "{o:?}");
}

/// DANE-TLSA-10 with DANE-DNS-4: when the MX host is an alias and the TLSA records were found at
/// its CNAME-expanded name, a DANE-TA leaf may carry that name (the TLSA base domain) instead of
/// the MX host's; without the base domain the same leaf fails the name check.
#[test]
fn dane_ta_leaf_may_name_the_tlsa_base_domain_of_an_alias() {
    let chain = pki::pki().leaf(&["mail.provider.test"]);
    let intermediate = &chain.der[1];
    let ta = TlsaRecord {
        usage: 2,
        selector: 0,
        matching_type: 1,
        data: ring::digest::digest(&ring::digest::SHA256, intermediate).as_ref().to_vec(),
    };
    let base = mtasts::Domain::parse_ascii("mail.provider.test").unwrap();
    let at_base = TlsaLookup::Secure { records: vec![ta.clone()], ttl: 3600, base: Some(base) };
    let (h, _) = world(Some("enforce"), at_base);
    let o = h.engine.check("example.test", "mx.example.test", Some(chain.pem().as_bytes())).expect("check");
    assert!(o.verdict.may_deliver(), "{o:?}");
    assert_eq!(o.dane.as_ref().map(|d| d.dane), Some(mtasts::Dane::Passed), "{o:?}");

    let (h, _) = world(Some("enforce"), secure(vec![ta]));
    let o = h.engine.check("example.test", "mx.example.test", Some(chain.pem().as_bytes())).expect("check");
    assert_eq!((o.verdict, o.reason), (Verdict::FailEnforce, Reason::CertificateHostMismatch), "{o:?}");
}

/// DANE-V-13: an MX RRset that is bogus, or cannot be looked up, is a temporary failure of every
/// MX of the domain, before connecting and after, whatever the MTA-STS mode and whether or not the
/// MX host has TLSA records; never "no DANE".
#[test]
fn a_bogus_or_failed_mx_rrset_fails_every_mx_of_the_domain() {
    let good = pki::pki().chains["mx"].pem();
    for mode in [None, Some("testing"), Some("enforce")] {
        for mx_answer in [MxLookup::Bogus("RRSIG expired".into()), MxLookup::Failed("timed out".into())] {
            for tlsa in [secure(vec![dane_ee_of_mx_leaf()]), TlsaLookup::NotApplicable] {
                let (h, fake) = world(mode, tlsa.clone());
                fake.set_mx("example.test", mx_answer.clone());
                let o =
                    h.engine.check("example.test", "mx.example.test", Some(good.as_bytes())).expect("check");
                assert_eq!(
                    (o.verdict, o.reason),
                    (Verdict::FailEnforce, Reason::DnssecInvalid),
                    "{mode:?} {mx_answer:?} {tlsa:?}: {o:?}"
                );
                assert!(o.detail.as_deref().is_some_and(|d| d.contains("MX RRset of example.test")), "{o:?}");
                assert_eq!(o.dane.as_ref().map(|d| d.dane), Some(mtasts::Dane::DnssecInvalid));
                let o = h.engine.check_mx("example.test", "listed.example.test").expect("check_mx");
                assert_eq!((o.verdict, o.reason), (Verdict::FailEnforce, Reason::DnssecInvalid), "{o:?}");
            }
        }
    }
}

/// DANE-V-14: an insecure MX RRset (an unsigned domain hosted by a provider that signs its own
/// zone and publishes TLSA records) still lets DANE protect the MX host (RFC 7672 §2.2.1 allows
/// it; decision V4). A secure one of course does too.
#[test]
fn dane_protects_a_host_with_tlsa_records_under_an_insecure_mx_rrset() {
    let other = pki::pki().leaf(&["mx.example.test"]).pem(); // the right name, another key
    for security in [Security::Insecure, Security::Secure] {
        let (h, fake) = world(Some("testing"), secure(vec![dane_ee_of_mx_leaf()]));
        let records = vec![MxRecord { preference: 10, exchange: "mx.example.test".into() }];
        fake.set_mx("example.test", MxLookup::Records { records, security, ttl: 3600 });
        let o = h.engine.check("example.test", "mx.example.test", Some(other.as_bytes())).expect("check");
        assert_eq!((o.verdict, o.reason), (Verdict::FailEnforce, Reason::TlsaInvalid), "{security:?}: {o:?}");
    }
}

/// The MX RRset is looked up once per domain and kept for its TTL (at most an hour), as TLSA
/// answers are.
#[test]
fn mx_rrsets_are_cached() {
    let good = pki::pki().chains["mx"].pem();
    let (h, fake) = world(Some("enforce"), secure(vec![dane_ee_of_mx_leaf()]));
    for mx in ["mx.example.test", "mx2.example.test", "mx.example.test"] {
        h.engine.check("example.test", mx, Some(good.as_bytes())).expect("check");
    }
    assert_eq!(fake.mx_lookups(), 1, "one MX lookup for the domain");
    h.clock.advance(301);
    h.engine.check("example.test", "mx.example.test", Some(good.as_bytes())).expect("check");
    assert_eq!(fake.mx_lookups(), 2, "looked up again after the TTL (300 s)");
}
