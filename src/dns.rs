//! The DNS client: TXT, MX and address lookups with hickory-resolver (RFC 8461 §3.1).
//!
//! [`DnsResolver`] implements the [`Resolver`] and [`AddressResolver`] ports, and
//! looks up MX records for the CLI. The rules of RFC 8461 §3.1 that live here (their requirement
//! ids are listed in docs/conformance.md):
//!
//! * the TXT RRset is returned whole, records that are not STS records included: choosing among
//!   them is [`crate::txt::select`]'s job (DISC-3);
//! * a TXT record made of several character-strings is joined with nothing between them before
//!   anyone parses it (DISC-6);
//! * CNAMEs are followed, so a delegated `_mta-sts` record (RFC 8461 §8.2) is found at the
//!   alias's target; only TXT data is kept from the answer, never the CNAME records (DISC-13);
//! * NXDOMAIN and NODATA (the name exists without TXT records) are [`DnsError::NotFound`];
//!   SERVFAIL, REFUSED, timeouts and transport errors are [`DnsError::Temporary`]. Both mean "no
//!   live policy", and neither removes a cached policy; that is the engine's rule (DISC-14);
//! * exactly the name asked is queried: names are made absolute (`name.`), and no search list or
//!   local domain is tried, so nothing walks up or sideways to another name (HOST-4).
//!
//! # Process model
//!
//! MTAs fork, and the library must start no background threads and keep no runtime or socket
//! across calls (docs/architecture.md §3). hickory-resolver 0.26 is async only, and its lookups spawn
//! tasks on the runtime that is current when they connect. So every call:
//!
//! 1. reseeds rand's thread-local generator if the process has forked since this thread last
//!    used it (see below);
//! 2. builds a tokio **current-thread** runtime (no OS threads) and, on it, a hickory resolver
//!    with an empty cache, no search list, and the configured or system nameservers;
//! 3. runs the lookup under `tokio::time::timeout(settings.timeout)`: a hard deadline for the
//!    whole call, whatever hickory's retries would add up to;
//! 4. drops the resolver (aborting its tasks, closing its sockets) and then the runtime, before
//!    returning.
//!
//! Nothing is kept between calls, so a [`DnsResolver`] is cheap to create, `Send + Sync`, and
//! safe to use before and after `fork()`. Building the runtime and resolver costs well under a
//! millisecond; with no configured nameservers `/etc/resolv.conf` is read on each call (only its
//! `nameserver` lines are used), so changes to it apply at once.
//!
//! ## Kept per thread, for a long-running server
//!
//! A process of our own that does not fork (`mtasts serve`) may ask for
//! [`Lifetime::PerThread`] instead ([`DnsResolver::with_lifetime`]): each thread that looks
//! something up then keeps its current-thread runtime and its hickory resolver in a thread-local
//! slot and uses them again on its next call, which saves building and dropping them (a runtime,
//! a resolver and its response cache) on every lookup. What each call sees is unchanged:
//!
//! * the same deadline, nameservers and options; the configuration is still read on each call
//!   (`/etc/resolv.conf` included), and a slot whose nameservers, deadline or `/etc/hosts` use
//!   differ from the call's is rebuilt;
//! * no answer comes from a cache: the resolver's response cache has a capacity of 0, and is
//!   emptied before each lookup besides, so that nothing an earlier call saw can answer a later
//!   one (`tests/it/dns.rs` counts the questions at the fixture);
//! * still no background thread: the kept runtime is a current-thread one, driven only inside a
//!   call. A query left unfinished by a call's deadline is dropped with the call's future.
//!
//! A slot is dropped when its thread ends. After a `fork()` a slot made in the parent is never used
//! nor dropped in the child (it shares the parent's epoll instance, and dropping it could remove
//! the parent's registrations): it is leaked, at the child's next lookup (which builds a new one)
//! or at its thread's end, so even this mode is safe in a forked child, though it is meant for
//! processes that do not fork.
//!
//! ## Fork and the DNS query id
//!
//! hickory draws query ids and UDP source ports from `rand::rng()`, a per-thread generator that
//! is not reseeded on `fork()`: two children forked from one parent would send the same (id,
//! port) sequence, which makes spoofing answers easier. Each call therefore compares the
//! process's fork generation ([`crate::forks`]: a counter a `pthread_atfork` handler increments
//! in every child, read without a system call) with the one this thread's generator was last
//! seeded in (a thread-local, because the generator is per thread: after a fork only the forking
//! thread survives, holding the parent's state) and reseeds from the OS when they differ.
//!
//! ## `/etc/hosts`
//!
//! With no configured nameservers (the system configuration), address lookups consult
//! `/etc/hosts` first, as the system's own resolver would for the policy host. With configured
//! nameservers, and for TXT and MX lookups, only DNS is asked.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{
    NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts, ServerOrderingStrategy,
};
use hickory_resolver::lookup::Lookup;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError as HickoryDnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{Name, RData, RecordType};

use crate::domain::Domain;
use crate::ports::{AddressResolver, DnsError, Resolver};

/// The default per-call deadline. (Not `pub`: cbindgen would put it in the C header.)
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where and how long to ask.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsSettings {
    /// Recursive resolvers to ask, each over UDP and TCP at its `ip:port`. Empty: the
    /// `nameserver` lines of `/etc/resolv.conf` (port 53).
    pub nameservers: Vec<SocketAddr>,
    /// The deadline of one call (a lookup, or the A and AAAA pair), retries included.
    pub timeout: Duration,
    /// How DNSSEC answers are judged for DANE ([`crate::dnssec`]).
    pub dnssec: DnssecMode,
    /// A file of DS or DNSKEY records to validate from instead of the IANA root anchors
    /// (`DnssecMode::Validate` only).
    pub trust_anchor: Option<PathBuf>,
}

impl Default for DnsSettings {
    fn default() -> Self {
        Self {
            nameservers: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
            dnssec: DnssecMode::default(),
            trust_anchor: None,
        }
    }
}

/// How DNSSEC is judged for DANE (`[dns] dnssec`: `validate`, `trust-ad` or `off`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DnssecMode {
    /// Validate in process (hickory, ring) from the trust anchors.
    #[default]
    Validate,
    /// Trust the AD bit of the configured resolvers, which must all be on loopback.
    TrustAd,
    /// No DNSSEC: DANE never applies.
    Off,
}

pub use crate::ports::MxRecord;

/// How long the runtime and hickory resolver behind a lookup live (see the [module docs](self)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Lifetime {
    /// Built for each call and dropped before it returns: what a library loaded into forking MTAs
    /// must do (docs/architecture.md §3).
    #[default]
    PerCall,
    /// Kept by each calling thread and used again by its next call (a long-running server).
    PerThread,
}

/// The DNS client. Holds only its settings; see the [module docs](self) for what each call does.
#[derive(Clone, Debug, Default)]
pub struct DnsResolver {
    settings: DnsSettings,
    lifetime: Lifetime,
}

impl DnsResolver {
    /// A resolver with these settings. Cheap: nothing is built until a lookup.
    pub fn new(settings: DnsSettings) -> Self {
        Self { settings, lifetime: Lifetime::PerCall }
    }

    /// The same resolver, with its runtime and hickory resolver kept as `lifetime` says.
    #[must_use]
    pub fn with_lifetime(mut self, lifetime: Lifetime) -> Self {
        self.lifetime = lifetime;
        self
    }

    /// The settings in force.
    pub fn settings(&self) -> &DnsSettings {
        &self.settings
    }

    /// How long the machinery of a lookup lives.
    pub fn lifetime(&self) -> Lifetime {
        self.lifetime
    }

    /// The MX records of `domain`, by preference (records of equal preference in the order
    /// received). [`DnsError::NotFound`] when the domain has none (the caller then uses the
    /// implicit MX, the domain itself, RFC 5321 §5.1).
    pub fn mx(&self, domain: &Domain) -> Result<Vec<MxRecord>, DnsError> {
        let name = absolute_name(domain.as_str())?;
        let (lookup, _) = self.run(false, |r| async move { r.lookup(name, RecordType::MX).await })?;
        let records = mx_records(&lookup);
        if records.is_empty() {
            return Err(DnsError::NotFound);
        }
        Ok(records)
    }

    /// Runs `f` on a resolver built for this call, under the call's deadline, then tears both
    /// the resolver and its runtime down (with [`Lifetime::PerThread`]: on this thread's kept
    /// ones, left in place). Also gives the servers asked, for error details.
    fn run<T, F, Fut>(&self, use_hosts: bool, f: F) -> Result<(T, Servers), DnsError>
    where
        F: FnOnce(TokioResolver) -> Fut,
        Fut: Future<Output = Result<T, NetError>>,
    {
        reseed_after_fork()?;
        let (config, servers) = self.config()?;
        let timeout = self.settings.timeout;
        let mut f = Some(f);
        if self.lifetime == Lifetime::PerThread {
            let key = SlotKey { servers: servers.0.clone(), timeout, use_hosts };
            // `try_with` and `try_borrow_mut`: a lookup made while this thread's locals are being
            // destroyed, or from inside a lookup, gets a resolver of its own as in the per-call
            // mode.
            let kept = KEPT.try_with(|kept| {
                let mut kept = kept.try_borrow_mut().ok()?;
                let slot = match kept.slot(&key, || self.build(config.clone(), use_hosts, &servers)) {
                    Ok(slot) => slot,
                    Err(e) => return Some(Err(e)),
                };
                let f = f.take()?;
                // No answer from the resolver's cache (see the module docs).
                slot.resolver.clear_cache();
                let resolver = slot.resolver.clone();
                Some(slot.runtime.block_on(deadline(timeout, &servers, f(resolver))))
            });
            if let Ok(Some(result)) = kept {
                return result.map(|v| (v, servers));
            }
        }
        let Some(f) = f else { return Err(DnsError::Temporary("the DNS lookup was not run".into())) };
        let Slot { runtime, resolver } = self.build(config, use_hosts, &servers)?;
        let result = runtime.block_on(deadline(timeout, &servers, f(resolver)));
        drop(runtime);
        result.map(|v| (v, servers))
    }

    /// A current-thread runtime (no OS thread) and, built on it so that its tasks belong to it
    /// and die with it, a hickory resolver with this call's options: no cache, no search list.
    fn build(&self, config: ResolverConfig, use_hosts: bool, servers: &Servers) -> Result<Slot, DnsError> {
        let mut opts = ResolverOpts::default();
        opts.timeout = self.settings.timeout;
        // One retry after a failure that is not a timeout (SERVFAIL, a refused connection):
        // timeouts are bounded by the call's deadline anyway.
        opts.attempts = 1;
        opts.cache_size = 0;
        opts.use_hosts_file = if use_hosts { ResolveHosts::Auto } else { ResolveHosts::Never };
        opts.server_ordering_strategy = ServerOrderingStrategy::UserProvidedOrder;
        let mut builder = TokioResolver::builder_with_config(config, TokioRuntimeProvider::default());
        *builder.options_mut() = opts;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(|e| DnsError::Temporary(format!("cannot start the DNS runtime: {e}")))?;
        let timeout = self.settings.timeout;
        let resolver =
            runtime.block_on(async { builder.build() }).map_err(|e| classify(&e, servers, timeout))?;
        Ok(Slot { runtime, resolver })
    }

    /// The hickory configuration for a call, and the servers it will ask (for error details).
    pub(crate) fn config(&self) -> Result<(ResolverConfig, Servers), DnsError> {
        if self.settings.nameservers.is_empty() {
            let (system, _opts) = hickory_resolver::system_conf::read_system_conf()
                .map_err(|e| DnsError::Temporary(format!("cannot use the system DNS configuration: {e}")))?;
            let (_domain, _search, name_servers) = system.into_parts();
            let servers = Servers(
                name_servers
                    .iter()
                    .map(|ns| SocketAddr::new(ns.ip, ns.connections.first().map_or(53, |c| c.port)))
                    .collect(),
            );
            // No local domain and no search list: only the name asked is queried (HOST-4).
            return Ok((ResolverConfig::from_parts(None, Vec::new(), name_servers), servers));
        }
        let name_servers = self
            .settings
            .nameservers
            .iter()
            .map(|addr| {
                let mut ns = NameServerConfig::udp_and_tcp(addr.ip());
                for connection in &mut ns.connections {
                    connection.port = addr.port();
                }
                ns
            })
            .collect();
        Ok((
            ResolverConfig::from_parts(None, Vec::new(), name_servers),
            Servers(self.settings.nameservers.clone()),
        ))
    }
}

impl Resolver for DnsResolver {
    fn txt(&self, name: &str) -> Result<Vec<Vec<u8>>, DnsError> {
        let name = absolute_name(name)?;
        let (lookup, _) = self.run(false, |r| async move { r.lookup(name, RecordType::TXT).await })?;
        let records = txt_records(&lookup);
        if records.is_empty() {
            // An answer made only of CNAMEs whose target has no TXT data: NODATA.
            return Err(DnsError::NotFound);
        }
        Ok(records)
    }
}

impl AddressResolver for DnsResolver {
    /// A and AAAA records, asked in parallel; IPv4 addresses first. An IP literal is returned
    /// as is. When one of the two lookups fails, the other's addresses are still returned.
    fn addresses(&self, host: &str) -> Result<Vec<IpAddr>, DnsError> {
        let bare = host.strip_suffix('.').unwrap_or(host);
        if let Ok(ip) = bare.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
            return Ok(vec![ip]);
        }
        let name = absolute_name(host)?;
        let use_hosts = self.settings.nameservers.is_empty();
        let ((v4, v6), servers) = self.run(use_hosts, |r| async move {
            // Both at once, in this task: no task spawned, and both dropped with the call's
            // future if its deadline passes first (a kept runtime carries nothing over).
            let (a, aaaa) =
                both(r.lookup(name.clone(), RecordType::A), r.lookup(name, RecordType::AAAA)).await;
            Ok::<_, NetError>((a, aaaa))
        })?;
        let timeout = self.settings.timeout;
        let v4 = v4.map(|l| addresses_of(&l)).map_err(|e| classify(&e, &servers, timeout));
        let v6 = v6.map(|l| addresses_of(&l)).map_err(|e| classify(&e, &servers, timeout));
        combine_addresses(v4, v6)
    }
}

/// Joins A and AAAA results: IPv4 first; addresses from either side win over an error on the
/// other; a temporary error wins over "not found" (the name may well exist).
fn combine_addresses(
    v4: Result<Vec<IpAddr>, DnsError>,
    v6: Result<Vec<IpAddr>, DnsError>,
) -> Result<Vec<IpAddr>, DnsError> {
    match (v4, v6) {
        (Ok(mut a), Ok(b)) => {
            a.extend(b);
            if a.is_empty() { Err(DnsError::NotFound) } else { Ok(a) }
        }
        (Ok(a), Err(e)) | (Err(e), Ok(a)) => {
            if a.is_empty() {
                Err(e)
            } else {
                Ok(a)
            }
        }
        (Err(DnsError::NotFound), Err(DnsError::NotFound)) => Err(DnsError::NotFound),
        (Err(e @ DnsError::Temporary(_)), Err(_)) | (Err(_), Err(e @ DnsError::Temporary(_))) => Err(e),
    }
}

/// The servers a call asks, for error details.
#[derive(Clone, Debug, Default)]
pub(crate) struct Servers(pub(crate) Vec<SocketAddr>);

impl fmt::Display for Servers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.as_slice() {
            [] => f.write_str("the system's nameservers"),
            [one] => write!(f, "{one}"),
            many => {
                f.write_str("one of ")?;
                for (i, s) in many.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{s}")?;
                }
                Ok(())
            }
        }
    }
}

/// `work` under the call's deadline, its errors in the engine's terms.
async fn deadline<T>(
    timeout: Duration,
    servers: &Servers,
    work: impl Future<Output = Result<T, NetError>>,
) -> Result<T, DnsError> {
    match tokio::time::timeout(timeout, work).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(classify(&e, servers, timeout)),
        Err(_elapsed) => Err(timed_out(servers, timeout)),
    }
}

/// Runs `a` and `b` concurrently and gives both outputs (what `futures::join` does).
async fn both<A: Future, B: Future>(a: A, b: B) -> (A::Output, B::Output) {
    let (mut a, mut b) = (std::pin::pin!(a), std::pin::pin!(b));
    let (mut out_a, mut out_b) = (None, None);
    std::future::poll_fn(|cx| {
        if out_a.is_none() {
            if let std::task::Poll::Ready(v) = a.as_mut().poll(cx) {
                out_a = Some(v);
            }
        }
        if out_b.is_none() {
            if let std::task::Poll::Ready(v) = b.as_mut().poll(cx) {
                out_b = Some(v);
            }
        }
        match (out_a.take(), out_b.take()) {
            (Some(x), Some(y)) => std::task::Poll::Ready((x, y)),
            (x, y) => {
                (out_a, out_b) = (x, y);
                std::task::Poll::Pending
            }
        }
    })
    .await
}

/// A runtime and the resolver built on it.
struct Slot {
    runtime: tokio::runtime::Runtime,
    resolver: TokioResolver,
}

/// What a kept slot was built for: a call with another key builds a new one.
#[derive(Clone, Debug, PartialEq, Eq)]
struct SlotKey {
    servers: Vec<SocketAddr>,
    timeout: Duration,
    use_hosts: bool,
}

/// A thread's kept slots ([`Lifetime::PerThread`]): at most one with `/etc/hosts` and one
/// without, and the fork generation ([`crate::forks`]) they were made in.
#[derive(Default)]
struct Kept {
    generation: u64,
    slots: Vec<(SlotKey, Slot)>,
}

impl Kept {
    /// The slot for `key`, built by `build` if this thread has none for it yet.
    fn slot(
        &mut self,
        key: &SlotKey,
        build: impl FnOnce() -> Result<Slot, DnsError>,
    ) -> Result<&mut Slot, DnsError> {
        self.leak_if_forked();
        let at = match self.slots.iter().position(|(k, _)| k == key) {
            Some(i) => i,
            None => {
                let slot = build()?;
                // Another slot for the same use of `/etc/hosts` was made for other settings (a
                // reload): it goes.
                self.slots.retain(|(k, _)| k.use_hosts != key.use_hosts);
                self.slots.push((key.clone(), slot));
                self.slots.len() - 1
            }
        };
        Ok(&mut self.slots[at].1)
    }

    /// Slots made before a fork share the parent's epoll instance: never used nor dropped in
    /// the child (dropping would deregister the parent's sockets), but leaked.
    fn leak_if_forked(&mut self) {
        let generation = crate::forks::generation();
        if generation != self.generation {
            std::mem::forget(std::mem::take(&mut self.slots));
            self.generation = generation;
        }
    }
}

impl Drop for Kept {
    /// At the thread's end (or a forked child's `exit`), slots made before a fork are leaked.
    fn drop(&mut self) {
        self.leak_if_forked();
    }
}

thread_local! {
    /// This thread's kept runtimes and resolvers ([`Lifetime::PerThread`]).
    static KEPT: RefCell<Kept> = RefCell::new(Kept::default());
}

thread_local! {
    /// The fork generation ([`crate::forks::generation`]) in which this thread's `rand::rng()`
    /// was last (re)seeded; `None`: never by us.
    static SEEDED_IN: Cell<Option<u64>> = const { Cell::new(None) };
}

/// Reseeds this thread's `rand::rng()` (hickory's source of query ids and source ports) when
/// the process is not the one it was last seeded in, i.e. after a `fork()`. A thread we have not
/// seen is reseeded too: it may be the forking thread, carrying state its parent used before.
/// The fork generation tells processes apart without a system call (`getpid` was one per lookup).
pub(crate) fn reseed_after_fork() -> Result<(), DnsError> {
    let generation = crate::forks::generation();
    SEEDED_IN.with(|seeded| {
        if seeded.get() == Some(generation) {
            return Ok(());
        }
        rand::rng().reseed().map_err(|e| {
            DnsError::Temporary(format!("cannot reseed the random number generator for DNS ids: {e}"))
        })?;
        seeded.set(Some(generation));
        Ok(())
    })
}

/// `name` as an absolute DNS name (`name.`), so that no search list applies. A name DNS cannot
/// carry (an empty label, a label over 63 octets) has no records: [`DnsError::NotFound`].
pub(crate) fn absolute_name(name: &str) -> Result<Name, DnsError> {
    let bare = name.strip_suffix('.').unwrap_or(name);
    if bare.is_empty() {
        return Err(DnsError::NotFound);
    }
    Name::from_ascii(format!("{bare}.")).map_err(|_| DnsError::NotFound)
}

/// One TXT record's character-strings joined with no separator (DISC-6).
fn join_character_strings(strings: &[Box<[u8]>]) -> Vec<u8> {
    strings.concat()
}

/// The TXT records of an answer, CNAMEs and other types left out (DISC-13).
fn txt_records(lookup: &Lookup) -> Vec<Vec<u8>> {
    lookup
        .answers()
        .iter()
        .filter_map(|r| match &r.data {
            RData::TXT(txt) => Some(join_character_strings(&txt.txt_data)),
            _ => None,
        })
        .collect()
}

/// The MX records of an answer, by preference.
fn mx_records(lookup: &Lookup) -> Vec<MxRecord> {
    let mut records: Vec<MxRecord> = lookup
        .answers()
        .iter()
        .filter_map(|r| match &r.data {
            RData::MX(mx) => Some(MxRecord { preference: mx.preference, exchange: host_name(&mx.exchange) }),
            _ => None,
        })
        .collect();
    sort_mx(&mut records);
    records
}

/// Sorts by preference, keeping the received order among equals.
pub(crate) fn sort_mx(records: &mut [MxRecord]) {
    records.sort_by_key(|r| r.preference);
}

/// A host name as text: ASCII, lower case, no trailing dot (the root stays `.`).
pub(crate) fn host_name(name: &Name) -> String {
    let text = name.to_ascii().to_ascii_lowercase();
    match text.strip_suffix('.') {
        Some("") | None => text,
        Some(bare) => bare.to_owned(),
    }
}

/// The A and AAAA addresses of an answer, in answer order.
fn addresses_of(lookup: &Lookup) -> Vec<IpAddr> {
    lookup
        .answers()
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(aaaa) => Some(IpAddr::V6(aaaa.0)),
            _ => None,
        })
        .collect()
}

pub(crate) fn timed_out(servers: &Servers, timeout: Duration) -> DnsError {
    DnsError::Temporary(format!("timed out after {} ms asking {servers}", timeout.as_millis()))
}

/// Maps a hickory error to the engine's: NXDOMAIN and NODATA are "not found", everything else
/// may pass.
pub(crate) fn classify(error: &NetError, servers: &Servers, timeout: Duration) -> DnsError {
    match error {
        NetError::Dns(HickoryDnsError::NoRecordsFound(_)) => DnsError::NotFound,
        NetError::Dns(HickoryDnsError::ResponseCode(code)) => {
            DnsError::Temporary(format!("{} from {servers}", rcode_name(*code)))
        }
        NetError::Timeout => timed_out(servers, timeout),
        NetError::Io(e) => DnsError::Temporary(format!("I/O error asking {servers}: {e}")),
        NetError::Truncated => DnsError::Temporary(format!("truncated answer from {servers}, even over TCP")),
        NetError::NoConnections => DnsError::Temporary(format!("could not reach {servers}")),
        other => DnsError::Temporary(format!("{other} (asking {servers})")),
    }
}

/// The mnemonic of a response code, as `dig` prints it.
pub(crate) fn rcode_name(code: ResponseCode) -> String {
    match code {
        ResponseCode::NoError => "NOERROR".into(),
        ResponseCode::FormErr => "FORMERR".into(),
        ResponseCode::ServFail => "SERVFAIL".into(),
        ResponseCode::NXDomain => "NXDOMAIN".into(),
        ResponseCode::NotImp => "NOTIMP".into(),
        ResponseCode::Refused => "REFUSED".into(),
        ResponseCode::YXDomain => "YXDOMAIN".into(),
        ResponseCode::YXRRSet => "YXRRSET".into(),
        ResponseCode::NXRRSet => "NXRRSET".into(),
        ResponseCode::NotAuth => "NOTAUTH".into(),
        ResponseCode::NotZone => "NOTZONE".into(),
        other => format!("response code {}", u16::from(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn character_strings_are_joined_with_nothing_between() {
        // DISC-6
        let strings: Vec<Box<[u8]>> = vec![b"v=STSv1; id=ab".as_slice().into(), b"cd".as_slice().into()];
        assert_eq!(join_character_strings(&strings), b"v=STSv1; id=abcd");
        let strings: Vec<Box<[u8]>> = vec![b"v=STSv1;".as_slice().into(), b" id=x".as_slice().into()];
        assert_eq!(join_character_strings(&strings), b"v=STSv1; id=x");
        assert_eq!(join_character_strings(&[]), b"");
    }

    #[test]
    fn names_are_made_absolute() {
        // HOST-4: no search list can apply to an absolute name.
        let n = absolute_name("_mta-sts.example.com").unwrap();
        assert!(n.is_fqdn());
        assert_eq!(n.to_ascii(), "_mta-sts.example.com.");
        assert_eq!(absolute_name("example.com.").unwrap().to_ascii(), "example.com.");
        assert_eq!(absolute_name(""), Err(DnsError::NotFound));
        assert_eq!(absolute_name("."), Err(DnsError::NotFound));
        assert_eq!(absolute_name("a..b"), Err(DnsError::NotFound));
        assert_eq!(absolute_name(&format!("{}.example", "a".repeat(64))), Err(DnsError::NotFound));
    }

    #[test]
    fn host_names_lose_the_trailing_dot() {
        assert_eq!(host_name(&Name::from_ascii("MX1.Example.com.").unwrap()), "mx1.example.com");
        assert_eq!(host_name(&Name::root()), ".");
    }

    #[test]
    fn mx_sort_is_stable_by_preference() {
        let mx = |p, e: &str| MxRecord { preference: p, exchange: e.into() };
        let mut v = vec![mx(20, "b"), mx(10, "z"), mx(20, "a"), mx(0, "y")];
        sort_mx(&mut v);
        assert_eq!(v, vec![mx(0, "y"), mx(10, "z"), mx(20, "b"), mx(20, "a")]);
    }

    #[test]
    fn response_codes_read_like_dig() {
        assert_eq!(rcode_name(ResponseCode::ServFail), "SERVFAIL");
        assert_eq!(rcode_name(ResponseCode::Refused), "REFUSED");
        assert_eq!(rcode_name(ResponseCode::Unknown(3841)), "response code 3841");
    }

    #[test]
    fn error_details_name_the_servers() {
        let one = Servers(vec!["127.0.0.1:5353".parse().unwrap()]);
        let err = NetError::Dns(HickoryDnsError::ResponseCode(ResponseCode::ServFail));
        assert_eq!(
            classify(&err, &one, DEFAULT_TIMEOUT),
            DnsError::Temporary("SERVFAIL from 127.0.0.1:5353".into())
        );
        assert_eq!(
            classify(&NetError::Timeout, &one, Duration::from_millis(5000)),
            DnsError::Temporary("timed out after 5000 ms asking 127.0.0.1:5353".into())
        );
        let two = Servers(vec!["10.0.0.1:53".parse().unwrap(), "[2001:db8::1]:53".parse().unwrap()]);
        assert_eq!(two.to_string(), "one of 10.0.0.1:53, [2001:db8::1]:53");
        assert_eq!(Servers::default().to_string(), "the system's nameservers");
    }

    #[test]
    fn address_results_combine() {
        let v4: IpAddr = "192.0.2.1".parse().unwrap();
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        let tmp = || DnsError::Temporary("SERVFAIL".into());
        assert_eq!(combine_addresses(Ok(vec![v4]), Ok(vec![v6])), Ok(vec![v4, v6]));
        assert_eq!(combine_addresses(Err(DnsError::NotFound), Ok(vec![v6])), Ok(vec![v6]));
        assert_eq!(combine_addresses(Ok(vec![v4]), Err(tmp())), Ok(vec![v4]));
        assert_eq!(
            combine_addresses(Err(DnsError::NotFound), Err(DnsError::NotFound)),
            Err(DnsError::NotFound)
        );
        assert_eq!(combine_addresses(Err(DnsError::NotFound), Err(tmp())), Err(tmp()));
        assert_eq!(combine_addresses(Ok(vec![]), Err(tmp())), Err(tmp()));
    }

    #[test]
    fn reseeding_happens_once_per_process_and_thread() {
        reseed_after_fork().unwrap();
        let generation = crate::forks::generation();
        assert_eq!(SEEDED_IN.with(Cell::get), Some(generation));
        std::thread::spawn(move || {
            assert_eq!(SEEDED_IN.with(Cell::get), None);
            reseed_after_fork().unwrap();
            assert_eq!(SEEDED_IN.with(Cell::get), Some(generation));
        })
        .join()
        .unwrap();
    }
}
