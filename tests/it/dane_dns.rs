//! DNSSEC-validated lookups for DANE (`mtasts::dnssec`) against signed zones served by the DNS
//! fixture on 127.0.0.1 (zones signed in Rust at test time, `mtasts_fixtures::dnssec`).
//!
//! Tests are named after the requirement ids of docs/dane.md ("DNSSEC lookups").

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use hickory_proto::rr::RecordType;
use mtasts::Domain;
use mtasts::dns::{DnsResolver, DnsSettings, DnssecMode, Lifetime, MxRecord};
use mtasts::dnssec::MxLookup;
use mtasts::ports::{Security, TlsaLookup, TlsaRecord, TlsaResolver};
use mtasts_fixtures::dns::DnsServer;
use mtasts_fixtures::dnssec::{AnchorForm, SignedZones, ZoneSet};

/// Association data of the TLSA records: what they hold does not matter here.
const DATA: [u8; 32] = [0xab; 32];
const LO: Ipv4Addr = Ipv4Addr::LOCALHOST;

/// The zones: `test.` (the root of test, signed), `example.test.` (signed) and
/// `unsigned.example.test.` (an insecure delegation: no DS, proven by NSEC).
fn zones() -> SignedZones {
    zones_with(|_| {})
}

/// The zones, changed by `tweak` before they are signed.
fn zones_with(tweak: impl FnOnce(&mut ZoneSet)) -> SignedZones {
    let mut z = ZoneSet::new("test");
    z.zone("example.test", true).zone("unsigned.example.test", false);
    z.mx("example.test", 10, "mx.example.test")
        .mx("example.test", 20, "mx2.example.test")
        // A plain MX host with a TLSA RRset.
        .a("mx.example.test", LO)
        .tlsa("_25._tcp.mx.example.test", 3, 1, 1, &DATA)
        // An alias whose expanded name has TLSA records.
        .cname("alias.example.test", "mx2.example.test")
        .a("mx2.example.test", LO)
        .tlsa("_25._tcp.mx2.example.test", 2, 0, 1, &DATA)
        // An alias whose expanded name has none: the original name's are used.
        .cname("alias2.example.test", "mx3.example.test")
        .a("mx3.example.test", LO)
        .tlsa("_25._tcp.alias2.example.test", 3, 0, 1, &DATA)
        // A host whose TLSA name is an alias.
        .a("mx4.example.test", LO)
        .cname("_25._tcp.mx4.example.test", "shared-tlsa.example.test")
        .tlsa("shared-tlsa.example.test", 3, 1, 2, &DATA)
        // A secure host without TLSA records.
        .a("plain.example.test", LO)
        // Spoiled signatures: on the TLSA RRset, on the address records.
        .a("bad.example.test", LO)
        .tlsa("_25._tcp.bad.example.test", 3, 1, 1, &DATA)
        .spoil("_25._tcp.bad.example.test", RecordType::TLSA)
        .a("badaddr.example.test", LO)
        .tlsa("_25._tcp.badaddr.example.test", 3, 1, 1, &DATA)
        .spoil("badaddr.example.test", RecordType::A)
        // Hosts whose TLSA lookup never gets an answer, or SERVFAIL.
        .a("slow.example.test", LO)
        .a("fail.example.test", LO)
        // A secure alias into the unsigned zone.
        .cname("toinsecure.example.test", "mx.unsigned.example.test")
        // The unsigned zone.
        // A spoiled MX RRset.
        .mx("badmx.example.test", 10, "mx.example.test")
        .spoil("badmx.example.test", RecordType::MX)
        .mx("unsigned.example.test", 10, "mx.unsigned.example.test")
        .a("mx.unsigned.example.test", LO)
        .tlsa("_25._tcp.mx.unsigned.example.test", 3, 1, 1, &DATA);
    tweak(&mut z);
    z.sign()
}

struct World {
    server: DnsServer,
    anchor: PathBuf,
    zones_anchor: String,
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.anchor);
    }
}

/// The fixture serving the zones, and a trust anchor file in the given form.
fn world(tag: &str, form: AnchorForm) -> World {
    world_of(tag, form, zones())
}

/// The fixture serving `zones`, and a trust anchor file in the given form.
fn world_of(tag: &str, form: AnchorForm, zones: SignedZones) -> World {
    let server = DnsServer::start().expect("start the DNS fixture");
    let line = zones.trust_anchor(form);
    server.serve_zones(zones);
    server.set_silent("_25._tcp.slow.example.test");
    server.set_servfail("_25._tcp.fail.example.test");
    let anchor = std::env::temp_dir().join(format!("mtasts-dane-anchor-{tag}-{}", std::process::id()));
    std::fs::write(&anchor, format!("; the root of test\n{line}\n")).expect("write the trust anchor");
    World { server, anchor, zones_anchor: line }
}

impl World {
    fn resolver(&self, timeout: Duration) -> DnsResolver {
        DnsResolver::new(DnsSettings {
            nameservers: vec![self.server.addr()],
            timeout,
            dnssec: DnssecMode::Validate,
            trust_anchor: Some(self.anchor.clone()),
        })
    }

    /// Generous: the machine is shared, and nothing here waits for it to pass.
    fn validating(&self) -> DnsResolver {
        self.resolver(Duration::from_secs(10))
    }

    /// As `validating`, with the client kept by the calling thread (`mtasts serve`).
    fn kept(&self) -> DnsResolver {
        self.validating().with_lifetime(Lifetime::PerThread)
    }

    /// The questions received since the last `clear_queries`, as `name TYPE`.
    fn asked(&self) -> Vec<String> {
        self.server.queries().iter().map(|q| format!("{} {}", q.name.to_ascii_lowercase(), q.qtype)).collect()
    }
}

fn host(name: &str) -> Domain {
    Domain::parse(name).expect("a host name")
}

fn secure(records: &[(u8, u8, u8)]) -> Vec<TlsaRecord> {
    records
        .iter()
        .map(|&(usage, selector, matching_type)| TlsaRecord {
            usage,
            selector,
            matching_type,
            data: DATA.to_vec(),
        })
        .collect()
}

fn expect_secure(lookup: TlsaLookup, want: &[(u8, u8, u8)]) {
    expect_secure_at(lookup, want, None);
}

/// As `expect_secure`, with the TLSA base domain the answer must name when it is not the host.
fn expect_secure_at(lookup: TlsaLookup, want: &[(u8, u8, u8)], want_base: Option<&str>) {
    match lookup {
        TlsaLookup::Secure { records, ttl, base } => {
            assert_eq!(records, secure(want));
            assert_eq!(base.as_ref().map(|b| b.as_str()), want_base, "TLSA base domain");
            assert!(ttl > 0 && ttl <= mtasts_fixtures::dnssec::TTL, "ttl {ttl}");
        }
        other => panic!("expected a secure TLSA RRset, got {other:?}"),
    }
}

#[test]
fn dane_dns_3_secure_tlsa_at_the_mx_host() {
    let w = world("3", AnchorForm::Dnskey);
    expect_secure(w.validating().tlsa(&host("mx.example.test")), &[(3, 1, 1)]);
    let asked: Vec<(String, String)> =
        w.server.queries().iter().map(|q| (q.name.to_ascii_lowercase(), q.qtype.clone())).collect();
    // Address records first, then TLSA at _25._tcp.<host>.
    let a = asked.iter().position(|q| *q == ("mx.example.test".into(), "A".into())).expect("A asked");
    let t = asked
        .iter()
        .position(|q| *q == ("_25._tcp.mx.example.test".into(), "TLSA".into()))
        .expect("TLSA asked");
    assert!(a < t, "{asked:?}");
}

#[test]
fn dane_dns_1_mx_rrset_with_its_security() {
    let w = world("1", AnchorForm::Dnskey);
    let r = w.validating();
    let mx = |p, e: &str| MxRecord { preference: p, exchange: e.into() };
    assert_eq!(
        r.mx_dnssec(&host("example.test")),
        MxLookup::Records {
            records: vec![mx(10, "mx.example.test"), mx(20, "mx2.example.test")],
            security: Security::Secure,
            ttl: mtasts_fixtures::dnssec::TTL
        }
    );
    assert_eq!(
        r.mx_dnssec(&host("unsigned.example.test")),
        MxLookup::Records {
            records: vec![mx(10, "mx.unsigned.example.test")],
            security: Security::Insecure,
            ttl: mtasts_fixtures::dnssec::TTL
        }
    );
    // No MX: a secure denial.
    assert_eq!(
        r.mx_dnssec(&host("plain.example.test")),
        MxLookup::Records { records: vec![], security: Security::Secure, ttl: u32::MAX }
    );
    assert_eq!(
        r.mx_dnssec(&host("missing.example.test")),
        MxLookup::Records { records: vec![], security: Security::Secure, ttl: u32::MAX }
    );
}

#[test]
fn dane_dns_2_insecure_address_records_mean_no_dane() {
    let w = world("2", AnchorForm::Dnskey);
    let r = w.validating();
    // In the unsigned child zone (insecure delegation), TLSA records are never looked up.
    w.server.clear_queries();
    assert_eq!(r.tlsa(&host("mx.unsigned.example.test")), TlsaLookup::NotApplicable);
    assert!(
        !w.server.queries().iter().any(|q| q.qtype == "TLSA"),
        "no TLSA lookup for an insecure host: {:?}",
        w.server.queries()
    );
    // A secure CNAME into the unsigned zone is insecure too.
    assert_eq!(r.tlsa(&host("toinsecure.example.test")), TlsaLookup::NotApplicable);
}

#[test]
fn dane_dns_4_cname_expanded_name_first_then_the_original() {
    let w = world("4", AnchorForm::Dnskey);
    let r = w.validating();
    // The records are at the expanded name: it is the base domain a DANE-TA leaf may carry.
    expect_secure_at(r.tlsa(&host("alias.example.test")), &[(2, 0, 1)], Some("mx2.example.test"));
    w.server.clear_queries();
    expect_secure(r.tlsa(&host("alias2.example.test")), &[(3, 0, 1)]);
    let tlsa: Vec<String> = w
        .server
        .queries()
        .iter()
        .filter(|q| q.qtype == "TLSA")
        .map(|q| q.name.to_ascii_lowercase())
        .collect();
    assert_eq!(tlsa, vec!["_25._tcp.mx3.example.test", "_25._tcp.alias2.example.test"]);
}

#[test]
fn dane_dns_5_tlsa_name_behind_a_cname() {
    let w = world("5", AnchorForm::Dnskey);
    expect_secure(w.validating().tlsa(&host("mx4.example.test")), &[(3, 1, 2)]);
}

#[test]
fn dane_dns_6_no_tlsa_records_or_insecure_is_not_applicable() {
    let w = world("6", AnchorForm::Dnskey);
    assert_eq!(w.validating().tlsa(&host("plain.example.test")), TlsaLookup::NotApplicable);
    assert_eq!(w.validating().tlsa(&host("nonexistent.example.test")), TlsaLookup::NotApplicable);
}

#[test]
fn dane_dns_7_bogus_signatures_are_bogus_never_secure_or_no_dane() {
    let w = world("7", AnchorForm::Dnskey);
    let r = w.validating();
    for name in ["bad.example.test", "badaddr.example.test"] {
        match r.tlsa(&host(name)) {
            TlsaLookup::Bogus(detail) => assert!(detail.contains("bogus"), "{detail}"),
            other => panic!("{name}: a spoiled signature must be Bogus, got {other:?}"),
        }
    }
    // A trust anchor that does not match the root of test's key: everything is bogus.
    let other = zones().trust_anchor(AnchorForm::Dnskey);
    assert_ne!(other, w.zones_anchor);
    std::fs::write(&w.anchor, format!("{other}\n")).expect("write the trust anchor");
    for name in ["mx.example.test", "plain.example.test"] {
        let got = r.tlsa(&host(name));
        assert!(matches!(got, TlsaLookup::Bogus(_)), "{name} under a foreign anchor: {got:?}");
    }
    assert!(matches!(r.mx_dnssec(&host("example.test")), MxLookup::Bogus(_)));
}

#[test]
fn dane_dns_8_timeouts_and_servfail_are_failures() {
    let w = world("8", AnchorForm::Dnskey);
    match w.validating().tlsa(&host("fail.example.test")) {
        TlsaLookup::Failed(detail) => assert!(detail.contains("SERVFAIL"), "{detail}"),
        other => panic!("SERVFAIL must be a failure, got {other:?}"),
    }
    // Short deadline: the TLSA question is never answered.
    match w.resolver(Duration::from_secs(2)).tlsa(&host("slow.example.test")) {
        TlsaLookup::Failed(detail) => assert!(detail.contains("timed out"), "{detail}"),
        other => panic!("a timeout must be a failure, got {other:?}"),
    }
    assert!(w.server.queries().iter().any(|q| q.name.eq_ignore_ascii_case("_25._tcp.slow.example.test")));
}

#[test]
fn dane_dns_9_ds_trust_anchor() {
    let w = world("9", AnchorForm::Ds);
    expect_secure(w.validating().tlsa(&host("mx.example.test")), &[(3, 1, 1)]);
    assert!(matches!(w.validating().tlsa(&host("bad.example.test")), TlsaLookup::Bogus(_)));
}

#[test]
fn dane_dns_10_off_asks_nothing() {
    let w = world("10", AnchorForm::Dnskey);
    let r = DnsResolver::new(DnsSettings {
        nameservers: vec![w.server.addr()],
        dnssec: DnssecMode::Off,
        ..DnsSettings::default()
    });
    assert_eq!(r.tlsa(&host("mx.example.test")), TlsaLookup::NotApplicable);
    assert!(w.server.queries().is_empty());
}

#[test]
fn dane_dns_11_trust_ad_from_a_loopback_resolver() {
    let w = world("11", AnchorForm::Dnskey);
    w.server.set_validating(true);
    let r = DnsResolver::new(DnsSettings {
        nameservers: vec![w.server.addr()],
        timeout: Duration::from_secs(10),
        dnssec: DnssecMode::TrustAd,
        trust_anchor: None,
    });
    expect_secure(r.tlsa(&host("mx.example.test")), &[(3, 1, 1)]);
    expect_secure(r.tlsa(&host("alias2.example.test")), &[(3, 0, 1)]);
    assert_eq!(r.tlsa(&host("mx.unsigned.example.test")), TlsaLookup::NotApplicable);
    assert_eq!(r.tlsa(&host("plain.example.test")), TlsaLookup::NotApplicable);
    // The resolver answers SERVFAIL for a bogus answer: a failure, never "no DANE".
    assert!(matches!(r.tlsa(&host("bad.example.test")), TlsaLookup::Failed(_)));
    assert!(matches!(
        r.mx_dnssec(&host("example.test")),
        MxLookup::Records { security: Security::Secure, .. }
    ));
    // Without AD from the resolver, nothing is secure.
    w.server.set_validating(false);
    assert_eq!(r.tlsa(&host("mx.example.test")), TlsaLookup::NotApplicable);
    // The queries asked for AD and were sent to the loopback resolver only.
    assert!(w.server.queries().iter().all(|q| q.src.ip().is_loopback()));
}

#[test]
fn dane_dns_11_trust_ad_refuses_a_non_loopback_resolver() {
    // Never contacted: refused before anything is sent.
    let r = DnsResolver::new(DnsSettings {
        nameservers: vec!["127.0.0.1:9".parse().expect("addr"), "192.0.2.53:53".parse().expect("addr")],
        dnssec: DnssecMode::TrustAd,
        ..DnsSettings::default()
    });
    match r.tlsa(&host("mx.example.test")) {
        TlsaLookup::Failed(detail) => assert!(detail.contains("loopback"), "{detail}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// The figure of docs/dane.md: DNS queries of the first validated TLSA lookup of a host (empty
/// caches, as every call starts), with a DNSKEY trust anchor and with a DS one.
#[test]
fn dane_dns_queries_of_the_first_validated_lookup() {
    // The figures written in docs/dane.md: a change in hickory or in the lookups shows here.
    for (tag, form, want) in [("count-dnskey", AnchorForm::Dnskey, 9), ("count-ds", AnchorForm::Ds, 10)] {
        let w = world(tag, form);
        expect_secure(w.validating().tlsa(&host("mx.example.test")), &[(3, 1, 1)]);
        let queries = w.server.queries();
        let list: Vec<String> =
            queries.iter().map(|q| format!("{} {}", q.name.to_ascii_lowercase(), q.qtype)).collect();
        println!("first validated TLSA lookup ({form:?} anchor): {} DNS queries: {list:?}", queries.len());
        let out = std::env::temp_dir().join(format!("mtasts-dane-dns-queries-{form:?}.txt"));
        std::fs::write(&out, format!("{}\n{}\n", queries.len(), list.join("\n"))).expect("write the figure");
        assert_eq!(queries.len(), want, "{list:?}");
    }
}

/// Every name of the zones, for the comparisons below.
const TLSA_HOSTS: [&str; 11] = [
    "mx.example.test",
    "alias.example.test",
    "alias2.example.test",
    "mx4.example.test",
    "plain.example.test",
    "nonexistent.example.test",
    "bad.example.test",
    "badaddr.example.test",
    "mx.unsigned.example.test",
    "toinsecure.example.test",
    "fail.example.test",
];
const MX_DOMAINS: [&str; 5] = [
    "example.test",
    "unsigned.example.test",
    "plain.example.test",
    "missing.example.test",
    "badmx.example.test",
];

/// `Lifetime::PerThread` (`mtasts serve`): the kept client, with the DNSKEY sets it has validated,
/// judges every name as a client built for the call does, on its first and on later calls, and
/// asks only the question itself once the signer's keys are kept.
#[test]
fn dane_dns_kept_client_judges_as_one_built_per_call() {
    let w = world("kept-same", AnchorForm::Dnskey);
    let kept = w.kept();
    for round in 0..2 {
        for h in TLSA_HOSTS {
            assert_eq!(kept.tlsa(&host(h)), w.validating().tlsa(&host(h)), "{h}, round {round}");
        }
        for d in MX_DOMAINS {
            assert_eq!(kept.mx_dnssec(&host(d)), w.validating().mx_dnssec(&host(d)), "{d}, round {round}");
        }
    }
    // The keys of example.test and test are kept: one question, no DNSKEY or DS.
    w.server.clear_queries();
    assert!(matches!(
        kept.mx_dnssec(&host("example.test")),
        MxLookup::Records { security: Security::Secure, .. }
    ));
    assert_eq!(w.asked(), vec!["example.test MX"]);
    // A bogus signature after cached successes is still bogus (DANE-DNS-7).
    assert!(matches!(kept.mx_dnssec(&host("badmx.example.test")), MxLookup::Bogus(_)));
    assert!(matches!(kept.tlsa(&host("bad.example.test")), TlsaLookup::Bogus(_)));
    expect_secure(kept.tlsa(&host("mx.example.test")), &[(3, 1, 1)]);
    // The trust-ad mode keeps its runtime too.
    w.server.set_validating(true);
    let ad = DnsResolver::new(DnsSettings {
        nameservers: vec![w.server.addr()],
        timeout: Duration::from_secs(10),
        dnssec: DnssecMode::TrustAd,
        trust_anchor: None,
    })
    .with_lifetime(Lifetime::PerThread);
    for _ in 0..2 {
        expect_secure(ad.tlsa(&host("mx.example.test")), &[(3, 1, 1)]);
        assert!(matches!(ad.tlsa(&host("bad.example.test")), TlsaLookup::Failed(_)));
    }
}

/// The kept keys do not outlive the keys served: zones signed again with new keys (the trust
/// anchor file unchanged) are bogus at once after cached successes; the new anchor written to the
/// file is seen at the next call (the file's change), and everything is secure again.
#[test]
fn dane_dns_kept_keys_fail_closed_after_a_rekey() {
    let w = world("kept-rekey", AnchorForm::Dnskey);
    let kept = w.kept();
    for _ in 0..2 {
        assert!(matches!(
            kept.mx_dnssec(&host("example.test")),
            MxLookup::Records { security: Security::Secure, .. }
        ));
        expect_secure(kept.tlsa(&host("mx.example.test")), &[(3, 1, 1)]);
    }
    let rekeyed = zones();
    let anchor = rekeyed.trust_anchor(AnchorForm::Dnskey);
    assert_ne!(anchor, w.zones_anchor);
    w.server.serve_zones(rekeyed);
    let got = kept.mx_dnssec(&host("example.test"));
    assert!(matches!(got, MxLookup::Bogus(_)), "new keys under the old anchor: {got:?}");
    let got = kept.tlsa(&host("mx.example.test"));
    assert!(matches!(got, TlsaLookup::Bogus(_)), "new keys under the old anchor: {got:?}");
    // The same size and, most likely, the same timestamps as the file just read: its contents
    // tell.
    std::fs::write(&w.anchor, format!("; the root of test\n{anchor}\n")).expect("write the trust anchor");
    assert!(matches!(
        kept.mx_dnssec(&host("example.test")),
        MxLookup::Records { security: Security::Secure, .. }
    ));
    expect_secure(kept.tlsa(&host("mx.example.test")), &[(3, 1, 1)]);
}

/// A kept DNSKEY set is not used past the TTL of anything on its chain of trust: its own, the DS
/// RRset's in the parent, the parent's DNSKEY set's. Each case on a thread of its own (the client
/// is kept per thread), beside one whose TTLs are all long, which must not ask for keys again.
#[test]
fn dane_dns_kept_keys_expire_with_their_chain() {
    // (tag, the RRset given a TTL of 1 s, whether the keys must be asked again)
    type Case = (&'static str, Option<(&'static str, RecordType)>, bool);
    let cases: [Case; 4] = [
        ("ttl-dnskey", Some(("example.test", RecordType::DNSKEY)), true),
        ("ttl-ds", Some(("example.test", RecordType::DS)), true),
        ("ttl-parent", Some(("test", RecordType::DNSKEY)), true),
        ("ttl-long", None, false),
    ];
    let threads: Vec<_> = cases
        .into_iter()
        .map(|(tag, short, refetch)| {
            std::thread::spawn(move || {
                let zones = zones_with(|z| {
                    if let Some((owner, rtype)) = short {
                        z.ttl(owner, rtype, 1);
                    }
                });
                let w = world_of(tag, AnchorForm::Dnskey, zones);
                let kept = w.kept();
                let secure = |what: &str| {
                    let got = kept.mx_dnssec(&host("example.test"));
                    assert!(
                        matches!(got, MxLookup::Records { security: Security::Secure, .. }),
                        "{tag} {what}: {got:?}"
                    );
                };
                secure("first");
                // Past the short TTL (whole seconds, so two of them).
                std::thread::sleep(Duration::from_millis(2100));
                w.server.clear_queries();
                secure("after the TTL");
                let asked = w.asked();
                assert_eq!(
                    asked.iter().any(|q| q == "example.test DNSKEY"),
                    refetch,
                    "{tag}: keys asked again after 2 s: {asked:?}"
                );
            })
        })
        .collect();
    for t in threads {
        t.join().expect("a case failed");
    }
}

/// A kept DNSKEY set is not used past the expiration of a signature on its chain of trust:
/// once the RRSIG of example.test's DS RRset (in test.) has expired, example.test is bogus, cached
/// success or not. (hickory accepts a DNSKEY RRset whose every key matches a DS without looking
/// at its own RRSIG, so the DS RRset's signature is the one whose end shows.)
#[test]
fn dane_dns_kept_keys_end_with_their_chains_signatures() {
    kept_answers_turn_bogus_when_a_signature_expires("kept-expiry", RecordType::DS);
}

/// DANE-DNS-12: the fast path checks the answer's own signature period: an MX RRset whose RRSIG
/// expired is bogus for the kept client too, although its zone's keys are kept and valid.
#[test]
fn dane_dns_kept_keys_do_not_outlive_the_answers_signature() {
    kept_answers_turn_bogus_when_a_signature_expires("kept-answer-expiry", RecordType::MX);
}

/// Signs example.test's `rtype` RRset to expire in 4 s; asks for its MX twice with a kept client
/// (secure), waits for the expiry, then expects bogus both per call and from the kept client.
fn kept_answers_turn_bogus_when_a_signature_expires(name: &str, rtype: RecordType) {
    let signed = std::time::Instant::now();
    let zones = zones_with(|z| {
        z.expires_in("example.test", rtype, Duration::from_secs(4));
    });
    let w = world_of(name, AnchorForm::Dnskey, zones);
    let kept = w.kept();
    for _ in 0..2 {
        let got = kept.mx_dnssec(&host("example.test"));
        assert!(
            matches!(got, MxLookup::Records { security: Security::Secure, .. }),
            "before the {rtype} signature expires (signed {:?} ago): {got:?}",
            signed.elapsed()
        );
    }
    std::thread::sleep(Duration::from_secs(5).saturating_sub(signed.elapsed()) + Duration::from_millis(100));
    let got = w.validating().mx_dnssec(&host("example.test"));
    assert!(matches!(got, MxLookup::Bogus(_)), "per call, after the {rtype} signature expired: {got:?}");
    let got = kept.mx_dnssec(&host("example.test"));
    assert!(matches!(got, MxLookup::Bogus(_)), "kept, after the {rtype} signature expired: {got:?}");
}

/// docs/architecture.md §3: a child forked after its parent's thread kept a validating client
/// (and validated keys) neither uses nor drops it: it validates with a client of its own (so it
/// asks for the keys again), and the parent's still works after the fork, keys included.
#[test]
fn dane_dns_kept_client_is_not_used_in_a_forked_child() {
    let w = world("kept-fork", AnchorForm::Dnskey);
    let kept = w.kept();
    let secure = |r: &DnsResolver| {
        matches!(r.mx_dnssec(&host("example.test")), MxLookup::Records { security: Security::Secure, .. })
    };
    assert!(secure(&kept));
    w.server.clear_queries();
    // SAFETY: the child only runs the lookup (a fresh runtime and sockets, no lock shared with
    // other threads of the test process) and leaves with `_exit`, running no destructors.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let code = match std::panic::catch_unwind(|| secure(&kept)) {
            Ok(true) => 0,
            Ok(false) => 1,
            Err(_) => 2,
        };
        // SAFETY: ends the child at once.
        unsafe { libc::_exit(code) };
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let mut status = 0;
    loop {
        // SAFETY: waitpid on our own child, with a valid pointer to `status`.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            break;
        }
        assert_eq!(r, 0, "waitpid failed");
        if std::time::Instant::now() > deadline {
            // SAFETY: killing and reaping our own child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            panic!("the child hung");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "child status {status}");
    let asked = w.asked();
    assert!(asked.iter().any(|q| q == "example.test DNSKEY"), "the child's own client: {asked:?}");
    w.server.clear_queries();
    assert!(secure(&kept), "the parent's kept client after the fork");
    assert_eq!(w.asked(), vec!["example.test MX"], "the parent's keys are still kept");
}
