//! The configuration file every front-end reads: one TOML file, `/etc/mtasts/mtasts.toml` by
//! default, `MTASTS_CONFIG` to point elsewhere. A missing default file means "all defaults"; a
//! file named explicitly must exist. Unknown keys are an error that names the key and the file,
//! so that a typo never silently leaves a setting at its default.
//!
//! ```toml
//! [dns]
//! nameservers = ["127.0.0.1:53"]   # default: those of /etc/resolv.conf
//! timeout_ms = 5000                # hard deadline per lookup
//! dnssec = "validate"              # DANE's DNSSEC: "validate" (in process, from the IANA root),
//!                                  # "trust-ad" (the AD bit of loopback resolvers) or "off"
//! trust_anchor = "/etc/mtasts/anchor.ds"  # DS or DNSKEY records to validate from instead of
//!                                  # the IANA root (private roots, tests); "validate" only
//!
//! [https]
//! ca_file = "/etc/ssl/certs/ca-certificates.crt"  # default: the system's roots
//! timeout_ms = 30000               # whole policy fetch
//! connect_timeout_ms = 10000
//! max_body_bytes = 65536
//! port = 443                       # for test fixtures only
//! refuse_private_addresses = false # refuse policy hosts on loopback/private addresses
//!
//! [cache]
//! path = "/var/lib/mtasts/policies.sqlite"  # or "memory": policies kept per process only
//! redis_url = "redis://127.0.0.1:6379/0"    # a store shared by several hosts (feature `redis`)
//! prune_after_days = 30            # forget domains without a live policy unseen this long
//!
//! [report]                         # TLSRPT (RFC 8460): `mtasts report build|send`
//! organization = "Example Mail"
//! contact = "tlsrpt@example.net"   # contact-info; its domain is the submitter
//! submitter = "example.net"        # default: the domain of contact
//! from = "tlsrpt@example.net"      # From of mailed reports; default: contact
//! sendmail = ["/usr/sbin/sendmail", "-t", "-oi"]
//! send_delay_max_s = 14400         # a day's report is first sent at a random time up to this long
//!                                  # after the UTC day ends (drawn once, kept in the store)
//! suppress_after_failures = 3      # a destination refusing (5xx mail, HTTP 4xx) this many reports
//! suppress_for_s = 604800          #   in a row gets none for this long (0 failures: never)
//!
//! [report.dkim]                    # DKIM-sign mailed reports (RFC 8460 §3)
//! domain = "example.net"           # d=
//! selector = "tlsrpt"              # s=: publish `mtasts report dkim-record` at
//!                                  #   tlsrpt._domainkey.example.net
//! key_file = "/etc/mtasts/dkim.pem"  # RSA (2048-4096 bits) or Ed25519 private key, PEM
//!
//! [engine]
//! txt_check_interval = 300         # seconds between TXT checks while a policy is cached
//! no_policy_interval = 300         # seconds between TXT checks for domains without a policy
//! refresh_interval = 86400         # refetch a policy older than this even if its id is unchanged
//! fetch_retry_interval = 300       # wait after a failed fetch for the same id (at least 300)
//! on_store_error = "continue"      # or "tempfail": hold mail for domains without a policy in
//!                                  # memory while the store cannot be read
//!
//! [serve]                          # `mtasts serve`, the socketmap server (which checks these)
//! listen = "inet:127.0.0.1:8461"   # or "unix:/var/spool/postfix/private/mtasts"
//! strict_testing = false           # answer `testing` policies like `enforce` ones
//! postfix_tlsrpt = false           # add the TLSRPT attributes of Postfix 3.10+ to `OK` replies
//! max_request_bytes = 4096         # longest request netstring; longer ones close the connection
//! idle_timeout_ms = 60000          # close a connection idle (or stalled mid-request) this long
//! request_timeout_ms = 10000       # close a connection whose request (or reply write) takes longer
//! max_connections = 1024           # connections served at once; more wait in the listen queue
//! refresh_interval_s = 60          # seconds between passes of the background refresher (0: off)
//! socket_mode = "0660"             # a `unix:` socket's permissions (default: as the umask leaves them)
//! socket_owner = "postfix"         # a `unix:` socket's user and group, names or numbers
//! socket_group = "postfix"         #   (default: those of the server's process)
//! tlsrpt_socket = "/var/spool/postfix/run/mtasts/tlsrpt.sock"  # take Postfix 3.10's TLSRPT
//!                                  # datagrams here (default: not taken; docs/tlsrpt-collect.md)
//! tlsrpt_socket_mode = "0660"      # its permissions, user and group, as socket_* above, so that
//! tlsrpt_socket_group = "postfix"  #   Postfix's smtp processes can send (tlsrpt_socket_owner too)
//! check_socket = "/run/mtasts/check.sock"  # serve the library's checks here, and have the
//!                                  # library's engines (mtasts_check, Exim) hand them to it
//!                                  # (default: off; docs/architecture.md, "Checks handed to mtasts serve")
//! check_socket_mode = "0660"       # its permissions, user and group, as socket_* above, so that
//! check_socket_group = "Debian-exim"  #   the MTA's processes can connect (check_socket_owner too)
//!
//! [serve.profile.postfix310]       # requests whose socketmap name is `postfix310`
//! postfix_tlsrpt = true            # strict_testing, postfix_tlsrpt: as in [serve] (default: theirs)
//! servername = "hostname"          # or "none": no servername= in `secure` replies
//!
//! [override."broken.example"]      # per-domain overrides of MTA-STS (README, "Overrides")
//! mode = "none"                    # skip MTA-STS for this domain (logged at every use)
//! [override."pinned.example"]
//! policy = "/etc/mtasts/pinned/pinned.example.txt"  # apply this policy instead of discovery
//! ```
//!
//! An override's domain is normalised as a Policy Domain; each table holds exactly one of
//! `mode = "none"` and `policy = "FILE"`. A pinned file (relative paths are relative to the
//! configuration file's directory) is read and parsed with the grammar of fetched policies when
//! the configuration is loaded: a file that cannot be read or is not a valid policy is an error
//! naming the domain and the file.
//!
//! The same trust anchors serve the policy fetch and MX certificate validation.
//!
//! `[dns] dnssec = "trust-ad"` believes the AD bit of the resolvers, which only a resolver on the
//! same host can be trusted to set honestly: it is refused unless every nameserver (those of
//! `/etc/resolv.conf` when none is configured) is a loopback address.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::cache::{ReportStores, SqliteStore, StoreError, Stores};
use crate::cert::TrustAnchors;
use crate::dns::{DnsResolver, DnsSettings, DnssecMode, Lifetime};
use crate::domain::Domain;
use crate::engine::{Engine, OnStoreError, Override, OverrideOrigin, Timing};
use crate::fetch::{FetchSettings, HttpsFetcher};
use crate::remote::Remote;

/// Where the configuration is read from when no path is given.
pub const DEFAULT_PATH: &str = "/etc/mtasts/mtasts.toml";
/// The environment variable naming another configuration file.
pub const ENV_VAR: &str = "MTASTS_CONFIG";

/// The whole configuration.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `[dns]`
    pub dns: DnsConfig,
    /// `[https]`
    pub https: HttpsConfig,
    /// `[cache]`
    pub cache: CacheConfig,
    /// `[engine]`
    pub engine: EngineConfig,
    /// `[report]`: TLSRPT (RFC 8460)
    pub report: ReportConfig,
    /// `[serve]`
    pub serve: ServeConfig,
    /// `[log]`
    pub log: crate::logging::LogSettings,
    /// `[override."DOMAIN"]` tables, as written.
    #[serde(rename = "override")]
    pub overrides: BTreeMap<String, OverrideConfig>,
    /// The overrides of `overrides`, checked, with their pinned policies read.
    #[serde(skip)]
    pub resolved_overrides: Vec<Override>,
    /// The file this came from (`None`: defaults).
    #[serde(skip)]
    pub source: Option<PathBuf>,
    /// SHA-256 of the text this was parsed from (zeros for the defaults, and for a text without
    /// `[serve] check_socket`, whose identity nothing asks for): part of [`Config::identity`].
    #[serde(skip)]
    text_digest: TextDigest,
}

/// Where a configuration's text came from, as a digest: not part of a configuration's equality,
/// which compares its settings (an empty file and no file are the same settings).
#[derive(Clone, Debug, Default)]
struct TextDigest([u8; 32]);

impl PartialEq for TextDigest {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for TextDigest {}

/// One `[override."DOMAIN"]` table: exactly one of `mode = "none"` and `policy = "FILE"`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct OverrideConfig {
    /// `none`: skip MTA-STS for the domain.
    pub mode: Option<String>,
    /// A policy file applied instead of discovery.
    pub policy: Option<PathBuf>,
}

/// `[dns]`
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct DnsConfig {
    /// `ip`, `ip:port` or `[ipv6]:port` entries; empty: `/etc/resolv.conf`.
    pub nameservers: Vec<String>,
    /// Hard deadline per lookup, in milliseconds.
    pub timeout_ms: u64,
    /// How DANE's DNSSEC answers are judged: `validate`, `trust-ad` or `off`.
    pub dnssec: DnssecMode,
    /// DS or DNSKEY records to validate from instead of the IANA root (`validate` only).
    pub trust_anchor: Option<PathBuf>,
}

impl Default for DnsConfig {
    fn default() -> Self {
        Self { nameservers: Vec::new(), timeout_ms: 5000, dnssec: DnssecMode::Validate, trust_anchor: None }
    }
}

/// `[https]`
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct HttpsConfig {
    /// PEM file of trust anchors for the policy host and MX certificates; default: system roots.
    pub ca_file: Option<PathBuf>,
    /// Deadline for a whole policy fetch, in milliseconds.
    pub timeout_ms: u64,
    /// Deadline for the TCP connection, in milliseconds.
    pub connect_timeout_ms: u64,
    /// Largest policy body accepted.
    pub max_body_bytes: u64,
    /// Port of the policy host (443; other values are for test fixtures).
    pub port: u16,
    /// Refuse policy hosts that resolve to loopback, private or link-local addresses.
    pub refuse_private_addresses: bool,
}

impl Default for HttpsConfig {
    fn default() -> Self {
        Self {
            ca_file: None,
            timeout_ms: 30_000,
            connect_timeout_ms: 10_000,
            max_body_bytes: 65_536,
            port: 443,
            refuse_private_addresses: false,
        }
    }
}

/// The default place of the policy store.
pub const DEFAULT_STORE: &str = "/var/lib/mtasts/policies.sqlite";

/// `[cache]`
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// The SQLite store shared by the host's processes, or `memory` (each process keeps its own).
    pub path: String,
    /// A Redis store shared by several hosts, instead of `path` (cargo feature `redis`).
    pub redis_url: Option<String>,
    /// Days after which a domain without a live policy, not looked up meanwhile, is forgotten
    /// by `mtasts refresh` and the `serve` refresher (a policy expired that long ago too).
    pub prune_after_days: u64,
}

impl CacheConfig {
    /// `prune_after_days` in seconds.
    pub fn prune_after(&self) -> u64 {
        self.prune_after_days.saturating_mul(86_400)
    }
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self { path: DEFAULT_STORE.into(), redis_url: None, prune_after_days: 30 }
    }
}

/// `[engine]`: the timing knobs of [`Timing`], in seconds.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct EngineConfig {
    /// See [`Timing::txt_check_interval`].
    pub txt_check_interval: u64,
    /// See [`Timing::no_policy_interval`].
    pub no_policy_interval: u64,
    /// See [`Timing::refresh_interval`].
    pub refresh_interval: u64,
    /// See [`Timing::fetch_retry_interval`].
    pub fetch_retry_interval: u64,
    /// What a check does for a domain without a policy in memory while the store is unavailable.
    pub on_store_error: OnStoreError,
}

impl Default for EngineConfig {
    fn default() -> Self {
        let t = Timing::default();
        Self {
            txt_check_interval: t.txt_check_interval,
            no_policy_interval: t.no_policy_interval,
            refresh_interval: t.refresh_interval,
            fetch_retry_interval: t.fetch_retry_interval,
            on_store_error: OnStoreError::default(),
        }
    }
}

/// `[serve]`: the keys of the socketmap server (`mtasts serve`), as written (`None`: not set).
/// They are accepted here so that one file serves every front-end and a misspelt key is an error
/// wherever the file is read; `mtasts serve` gives them their defaults and checks their values.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct ServeConfig {
    /// `listen`: where to listen.
    pub listen: Option<String>,
    /// `strict_testing`: answer `testing` policies as `enforce` ones.
    pub strict_testing: Option<bool>,
    /// `postfix_tlsrpt`: add the TLSRPT attributes of Postfix 3.10+ to `OK` replies.
    pub postfix_tlsrpt: Option<bool>,
    /// `max_request_bytes`: longest request netstring.
    pub max_request_bytes: Option<u64>,
    /// `idle_timeout_ms`: close a connection idle this long.
    pub idle_timeout_ms: Option<u64>,
    /// `request_timeout_ms`: close a connection whose request (or reply write) takes longer.
    pub request_timeout_ms: Option<u64>,
    /// `max_connections`: connections served at once.
    pub max_connections: Option<u64>,
    /// `refresh_interval_s`: seconds between passes of the background refresher.
    pub refresh_interval_s: Option<u64>,
    /// `socket_mode`: permissions of a `unix:` socket, an octal string such as `"0660"`.
    pub socket_mode: Option<String>,
    /// `socket_owner`: user (name or number) given a `unix:` socket.
    pub socket_owner: Option<String>,
    /// `socket_group`: group (name or number) given a `unix:` socket.
    pub socket_group: Option<String>,
    /// `metrics_listen`: where to serve Prometheus metrics over HTTP (`inet:HOST:PORT`).
    pub metrics_listen: Option<String>,
    /// `tlsrpt_socket`: path of a unix datagram socket taking the TLSRPT datagrams of Postfix
    /// 3.10 (`smtp_tlsrpt_socket_name`), docs/tlsrpt-collect.md.
    pub tlsrpt_socket: Option<String>,
    /// `tlsrpt_socket_mode`: permissions of that socket, an octal string such as `"0660"`.
    pub tlsrpt_socket_mode: Option<String>,
    /// `tlsrpt_socket_owner`: user (name or number) given that socket.
    pub tlsrpt_socket_owner: Option<String>,
    /// `tlsrpt_socket_group`: group (name or number) given that socket.
    pub tlsrpt_socket_group: Option<String>,
    /// `check_socket`: path of a unix stream socket where `mtasts serve` judges the checks of the
    /// library's engines, which then hand their checks to it ([`crate::remote`]).
    pub check_socket: Option<String>,
    /// `check_socket_mode`: permissions of that socket, an octal string such as `"0660"`.
    pub check_socket_mode: Option<String>,
    /// `check_socket_owner`: user (name or number) given that socket.
    pub check_socket_owner: Option<String>,
    /// `check_socket_group`: group (name or number) given that socket.
    pub check_socket_group: Option<String>,
    /// `[serve.profile.NAME]`: reply options for requests whose socketmap name is `NAME`.
    pub profile: std::collections::BTreeMap<String, ServeProfileConfig>,
}

/// `[serve.profile.NAME]`: the reply options of one socketmap name, as written (`None`: the
/// `[serve]` value applies). `mtasts serve` checks the values.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct ServeProfileConfig {
    /// `strict_testing`: answer `testing` policies as `enforce` ones.
    pub strict_testing: Option<bool>,
    /// `postfix_tlsrpt`: add the TLSRPT attributes of Postfix 3.10+ to `OK` replies.
    pub postfix_tlsrpt: Option<bool>,
    /// `servername`: `"hostname"` (`servername=hostname` in `secure` replies) or `"none"`.
    pub servername: Option<String>,
}

/// `[report]`: who sends TLSRPT reports, and how they are mailed.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct ReportConfig {
    /// `organization-name` of the reports.
    pub organization: Option<String>,
    /// `contact-info`: an address at the submitter domain.
    pub contact: Option<String>,
    /// The submitter domain (`TLS-Report-Submitter`); default: the domain of `contact`.
    pub submitter: Option<String>,
    /// `From` of mailed reports; default: `contact`.
    pub from: Option<String>,
    /// The command that takes a mailed report on standard input.
    pub sendmail: Vec<String>,
    /// `send_delay_max_s`: a report of a day is first due at a random time up to this many
    /// seconds after that UTC day ends (drawn once, when it is queued). Default 4 hours.
    pub send_delay_max_s: u64,
    /// `suppress_after_failures`: a destination that failed permanently (mail refused, HTTP 4xx)
    /// in this many reports in a row is suppressed. Default 3; 0 never suppresses.
    pub suppress_after_failures: u32,
    /// `suppress_for_s`: how long a suppressed destination gets no reports. Default 7 days.
    pub suppress_for_s: u64,
    /// `[report.dkim]`: DKIM-sign mailed reports.
    pub dkim: Option<DkimConfig>,
}

impl Default for ReportConfig {
    fn default() -> Self {
        Self {
            organization: None,
            contact: None,
            submitter: None,
            from: None,
            sendmail: vec!["/usr/sbin/sendmail".into(), "-t".into(), "-oi".into()],
            send_delay_max_s: 4 * 3600,
            suppress_after_failures: 3,
            suppress_for_s: 7 * 86_400,
            dkim: None,
        }
    }
}

/// `[report.dkim]`: the DKIM key that signs mailed reports (RFC 8460 §3).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DkimConfig {
    /// `domain`: the signing domain (`d=`), usually the submitter domain.
    pub domain: String,
    /// `selector`: the selector (`s=`); the key is published at `SELECTOR._domainkey.DOMAIN`.
    pub selector: String,
    /// `key_file`: the private key, PEM (PKCS#8 RSA or Ed25519, or PKCS#1 RSA).
    pub key_file: PathBuf,
}

/// A configuration that cannot be read or used. The message names the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Reads the configuration: `path` if given, else `$MTASTS_CONFIG` if set, else
    /// `/etc/mtasts/mtasts.toml` if it exists, else the defaults.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        if let Some(path) = path {
            return Self::from_file(path);
        }
        if let Some(env) = std::env::var_os(ENV_VAR).filter(|v| !v.is_empty()) {
            return Self::from_file(Path::new(&env));
        }
        let default = Path::new(DEFAULT_PATH);
        if default.exists() { Self::from_file(default) } else { Ok(Self::default()) }
    }

    /// Reads one file, which must exist.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("cannot read configuration {}: {e}", path.display())))?;
        let base = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let mut config = Self::parse_in(&text, base, Some(path))
            .map_err(|e| ConfigError(format!("{}: {e}", path.display())))?;
        config.source = Some(path.to_owned());
        Ok(config)
    }

    /// Parses configuration text and checks the values. Relative pinned policy files are
    /// relative to the current directory.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        Self::parse_in(text, Path::new("."), None)
    }

    fn parse_in(text: &str, base: &Path, file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut config: Self =
            toml::from_str(text).map_err(|e| ConfigError(e.to_string().trim_end().to_owned()))?;
        config.resolved_overrides = resolve_overrides(&config.overrides, base, file)?;
        if config.serve.check_socket.is_some() {
            // Only a configuration with a check socket has its identity asked for.
            config
                .text_digest
                .0
                .copy_from_slice(ring::digest::digest(&ring::digest::SHA256, text.as_bytes()).as_ref());
        }
        let nameservers = config.nameservers()?;
        if config.dns.dnssec == DnssecMode::TrustAd {
            check_loopback(&nameservers, "[dns] nameservers")?;
        }
        if config.dns.trust_anchor.is_some() && config.dns.dnssec != DnssecMode::Validate {
            return Err(ConfigError("[dns] trust_anchor is used only with dnssec = \"validate\"".into()));
        }
        if config.dns.timeout_ms == 0 || config.https.timeout_ms == 0 || config.https.connect_timeout_ms == 0
        {
            return Err(ConfigError("timeouts must be greater than 0".into()));
        }
        if config.cache.prune_after_days == 0 {
            return Err(ConfigError("[cache] prune_after_days must be at least 1".into()));
        }
        if config.https.max_body_bytes == 0 {
            return Err(ConfigError("[https] max_body_bytes must be greater than 0".into()));
        }
        if let Some(p) = config.serve.check_socket.as_deref() {
            if !p.starts_with('/') {
                return Err(ConfigError(format!(
                    "[serve] check_socket = {p:?}: write the absolute path of the socket (e.g. \"/run/mtasts/check.sock\")"
                )));
            }
            // sun_path holds 108 bytes with the terminating NUL.
            if p.len() > 107 {
                return Err(ConfigError(format!(
                    "[serve] check_socket = {p:?}: a unix socket's path can have at most 107 bytes, this one has {}",
                    p.len()
                )));
            }
        }
        Ok(config)
    }

    /// The `[dns] nameservers` as socket addresses (port 53 when none is given).
    pub fn nameservers(&self) -> Result<Vec<SocketAddr>, ConfigError> {
        self.dns.nameservers.iter().map(|s| parse_nameserver(s)).collect()
    }

    /// The engine's timing knobs.
    pub fn timing(&self) -> Timing {
        let e = &self.engine;
        Timing {
            txt_check_interval: e.txt_check_interval,
            no_policy_interval: e.no_policy_interval,
            refresh_interval: e.refresh_interval,
            fetch_retry_interval: e.fetch_retry_interval,
        }
    }

    /// What a check judged under this configuration depends on, as a hex SHA-256 digest: this
    /// build's version, the configuration's text and the pinned policies its overrides read.
    /// `mtasts serve` judges a library's check only when the library's configuration has the
    /// identity of its own ([`crate::remote`]): two files, or a file changed since the server read
    /// it (until its reload), give two identities, and the library then judges itself.
    pub fn identity(&self) -> String {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(env!("CARGO_PKG_VERSION").as_bytes());
        ctx.update(&[0]);
        ctx.update(&self.text_digest.0);
        for o in &self.resolved_overrides {
            if let crate::engine::OverrideAction::Pinned(p) = &o.action {
                ctx.update(o.domain.as_str().as_bytes());
                ctx.update(&[0]);
                ctx.update(ring::digest::digest(&ring::digest::SHA256, p.text.as_bytes()).as_ref());
            }
        }
        let mut digest = [0u8; 32];
        digest.copy_from_slice(ctx.finish().as_ref());
        crate::cache::digest_hex(&digest)
    }

    /// The client of `mtasts serve`'s check socket, when `[serve] check_socket` is set: the
    /// library's engines hand their checks to it first ([`crate::remote`]). It waits for an
    /// answer as long as a check of its own could take (DNS lookups and a policy fetch), plus
    /// five seconds.
    pub fn remote(&self) -> Option<Remote> {
        let path = self.serve.check_socket.as_deref()?;
        let ms = self
            .dns
            .timeout_ms
            .saturating_mul(4)
            .saturating_add(self.https.connect_timeout_ms)
            .saturating_add(self.https.timeout_ms)
            .saturating_add(5000);
        Some(Remote::new(Path::new(path), Duration::from_millis(ms), self.identity()))
    }

    /// The trust anchors: `[https] ca_file` if set, else the system's roots (the compiled-in
    /// Mozilla set if the system has none).
    pub fn trust_anchors(&self) -> Result<TrustAnchors, ConfigError> {
        match &self.https.ca_file {
            Some(path) => TrustAnchors::from_pem_file(path).map_err(|e| ConfigError(e.to_string())),
            None => Ok(TrustAnchors::system_lazy()),
        }
    }

    /// As [`Config::trust_anchors`], with a `ca_file` read at its first use
    /// ([`TrustAnchors::from_pem_file_lazy`]).
    fn trust_anchors_lazy(&self) -> TrustAnchors {
        match &self.https.ca_file {
            Some(path) => TrustAnchors::from_pem_file_lazy(path),
            None => TrustAnchors::system_lazy(),
        }
    }

    /// The DNS client this configuration describes. With `dnssec = "trust-ad"` and no
    /// configured nameservers, those of `/etc/resolv.conf` must all be on loopback; a
    /// `trust_anchor` file must hold DS or DNSKEY records.
    pub fn dns_resolver(&self) -> Result<DnsResolver, ConfigError> {
        self.check_trust_anchor()?;
        self.dns_resolver_unchecked()
    }

    /// Checks that the `[dns] trust_anchor` file, if one is set, is readable and holds DS or
    /// DNSKEY records (`mtasts doctor`, and every engine built by [`Config::build_engine`]).
    pub fn check_trust_anchor(&self) -> Result<(), ConfigError> {
        match &self.dns.trust_anchor {
            Some(path) => crate::dnssec::check_trust_anchor_file(path)
                .map_err(|e| ConfigError(format!("[dns] trust_anchor: {e}"))),
            None => Ok(()),
        }
    }

    /// As [`Config::dns_resolver`] without reading the trust anchor file: the resolver reads it
    /// when it validates, and a bad file then fails that lookup with a message naming the file.
    fn dns_resolver_unchecked(&self) -> Result<DnsResolver, ConfigError> {
        let nameservers = self.nameservers()?;
        if self.dns.dnssec == DnssecMode::TrustAd && nameservers.is_empty() {
            let (system, _opts) = hickory_resolver::system_conf::read_system_conf().map_err(|e| {
                ConfigError(format!("[dns] dnssec = \"trust-ad\": cannot read /etc/resolv.conf: {e}"))
            })?;
            let system: Vec<SocketAddr> =
                system.name_servers().iter().map(|ns| SocketAddr::new(ns.ip, 53)).collect();
            if system.is_empty() {
                return Err(ConfigError(
                    "[dns] dnssec = \"trust-ad\": /etc/resolv.conf names no nameserver".into(),
                ));
            }
            check_loopback(&system, "the nameservers of /etc/resolv.conf")?;
        }
        Ok(DnsResolver::new(DnsSettings {
            nameservers,
            timeout: Duration::from_millis(self.dns.timeout_ms),
            dnssec: self.dns.dnssec,
            trust_anchor: self.dns.trust_anchor.clone(),
        }))
    }

    /// Opens the persistent store this configuration names: Redis when `redis_url` is set, else
    /// the SQLite file at `path`; `None` for `memory`.
    pub fn open_store(&self) -> Result<Option<Stores>, StoreError> {
        let retry = self.timing().fetch_retry_interval.max(crate::engine::MIN_FETCH_RETRY);
        if let Some(url) = &self.cache.redis_url {
            return open_redis(url, retry);
        }
        if self.cache.path == "memory" {
            return Ok(None);
        }
        Ok(Some(SqliteStore::open(Path::new(&self.cache.path), retry)?.into()))
    }

    /// Opens what TLSRPT reports are built from and queued in: the TLSRPT counts and the report
    /// outbox of the configured store (SQLite, or Redis shared by a fleet); `None` for `memory`.
    pub fn open_report_stores(&self) -> Result<Option<ReportStores>, StoreError> {
        self.open_store()?.map(|stores| stores.reports()).transpose()
    }

    /// An engine over the real DNS and HTTPS clients and the configured store. A store that cannot
    /// be opened is reported (stderr, and [`Engine::store_state`]) and the engine carries on with
    /// its in-process cache: the MTA keeps delivering, unless `[engine] on_store_error =
    /// "tempfail"` asks to hold mail for domains without a policy in memory.
    pub fn build_engine(&self) -> Result<Engine, ConfigError> {
        self.check_trust_anchor()?;
        self.build_engine_with(self.trust_anchors()?, None, Lifetime::PerCall, &mut |stores| Ok(stores))
    }

    /// As [`Config::build_engine`], for a short-lived process that may never validate a DNSSEC
    /// answer or a certificate chain (the default engine of the C ABI and Exim's engines: Exim
    /// runs a process per delivery, and one whose policy and DANE state are stored and whose MX
    /// chain was validated by an earlier delivery validates nothing): the `[dns] trust_anchor`
    /// file is read at the first DNSSEC validation and the `[https] ca_file` at the first
    /// certificate validation, not now. A missing or bad file then fails that lookup or
    /// validation (fail closed: a temporary failure, or a failed validation, naming the file),
    /// and `mtasts doctor` still checks both.
    pub fn build_engine_lazy(&self) -> Result<Engine, ConfigError> {
        self.build_engine_with(self.trust_anchors_lazy(), None, Lifetime::PerCall, &mut |stores| Ok(stores))
    }

    /// As [`Config::build_engine`], for an engine that replaces `old` (a reload of `mtasts
    /// serve`): it keeps `old`'s in-process policy cache ([`Engine::shared_cache`]) and counts
    /// into its metrics ([`Engine::shared_metrics`]).
    pub fn build_engine_replacing(&self, old: &Engine) -> Result<Engine, ConfigError> {
        self.check_trust_anchor()?;
        self.build_engine_with(self.trust_anchors()?, Some(old), Lifetime::PerCall, &mut |stores| Ok(stores))
    }

    /// As [`Config::build_engine`] (or [`Config::build_engine_replacing`] with `old`), for a
    /// long-running process of its own: the opened store is handed to `wrap` first (`mtasts
    /// serve` puts its write-behind queue in front of it; a `wrap` that fails is reported as a
    /// store that cannot be opened), and the DNS client keeps its runtime and resolver as
    /// `dns_lifetime` says ([`Lifetime::PerThread`] in `mtasts serve`, which does not fork).
    pub fn build_engine_wrapping(
        &self,
        old: Option<&Engine>,
        dns_lifetime: Lifetime,
        wrap: &mut dyn FnMut(Stores) -> Result<Stores, StoreError>,
    ) -> Result<Engine, ConfigError> {
        self.check_trust_anchor()?;
        self.build_engine_with(self.trust_anchors()?, old, dns_lifetime, wrap)
    }

    fn build_engine_with(
        &self,
        anchors: TrustAnchors,
        old: Option<&Engine>,
        dns_lifetime: Lifetime,
        wrap: &mut dyn FnMut(Stores) -> Result<Stores, StoreError>,
    ) -> Result<Engine, ConfigError> {
        let dns = Arc::new(self.dns_resolver_unchecked()?.with_lifetime(dns_lifetime));
        let settings = FetchSettings {
            timeout: Duration::from_millis(self.https.timeout_ms),
            connect_timeout: Duration::from_millis(self.https.connect_timeout_ms),
            max_body_bytes: self.https.max_body_bytes,
            port: self.https.port,
            refuse_private_addresses: self.https.refuse_private_addresses,
            ..FetchSettings::new(anchors.clone())
        };
        let fetcher = HttpsFetcher::new(settings, dns.clone());
        let mut builder = Engine::builder(dns.clone(), fetcher);
        if self.dns.dnssec != DnssecMode::Off {
            // DANE (RFC 7672): where an MX host has DNSSEC-secure TLSA records, DANE decides.
            builder = builder.tlsa_resolver(dns);
        }
        let builder = builder
            .trust_anchors(anchors)
            .timing(self.timing())
            .on_store_error(self.engine.on_store_error)
            .prune_after(self.cache.prune_after())
            .overrides(self.resolved_overrides.iter().cloned());
        let builder = match old {
            Some(old) => builder.memory_cache(old.shared_cache()).metrics(old.shared_metrics()),
            None => builder,
        };
        Ok(match self.open_store().and_then(|s| s.map(&mut *wrap).transpose()) {
            Ok(Some(stores)) => builder.store(stores).build(),
            Ok(None) => builder.build(),
            Err(e) => builder.store_unavailable(&e).build(),
        })
    }
}

/// Checks the `[override."DOMAIN"]` tables and reads their pinned policies (OVR-7, OVR-8).
fn resolve_overrides(
    tables: &BTreeMap<String, OverrideConfig>,
    base: &Path,
    file: Option<&Path>,
) -> Result<Vec<Override>, ConfigError> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let mut seen: BTreeMap<Domain, &str> = BTreeMap::new();
    let mut out = Vec::with_capacity(tables.len());
    for (name, table) in tables {
        let at = format!("[override.{name:?}]");
        let domain = Domain::parse(name)
            .map_err(|e| ConfigError(format!("{at}: `{name}` is not a policy domain: {e}")))?;
        if let Some(other) = seen.insert(domain.clone(), name) {
            return Err(ConfigError(format!(
                "{at}: the same domain as [override.{other:?}] ({domain}); keep one of them"
            )));
        }
        let origin = |policy_file: Option<PathBuf>| OverrideOrigin::Config {
            file: file.map(Path::to_owned),
            policy_file,
        };
        let o = match (&table.mode, &table.policy) {
            (Some(mode), None) if mode == "none" => Override::skip(domain, origin(None)),
            (Some(mode), None) => {
                return Err(ConfigError(format!(
                    "{at}: mode = {mode:?}: an override's mode can only be \"none\" (skip MTA-STS); \
                     to apply another mode, pin a policy with policy = \"FILE\""
                )));
            }
            (None, Some(path)) => {
                let path = base.join(path);
                let text = std::fs::read(&path).map_err(|e| {
                    ConfigError(format!(
                        "{at}: cannot read the pinned policy {} for {domain}: {e}",
                        path.display()
                    ))
                })?;
                Override::pinned(domain.clone(), &text, now, origin(Some(path.clone()))).map_err(|e| {
                    ConfigError(format!(
                        "{at}: the pinned policy {} for {domain} is not a valid MTA-STS policy: {e}",
                        path.display()
                    ))
                })?
            }
            (Some(_), Some(_)) => {
                return Err(ConfigError(format!(
                    "{at}: give either mode = \"none\" or policy = \"FILE\", not both"
                )));
            }
            (None, None) => {
                return Err(ConfigError(format!(
                    "{at}: give mode = \"none\" (skip MTA-STS) or policy = \"FILE\" (pin a policy)"
                )));
            }
        };
        out.push(o);
    }
    out.sort_by(|a, b| a.domain.cmp(&b.domain));
    Ok(out)
}

#[cfg(feature = "redis")]
fn open_redis(url: &str, retry: u64) -> Result<Option<Stores>, StoreError> {
    Ok(Some(crate::cache::RedisStore::open(url, retry)?.into()))
}

#[cfg(not(feature = "redis"))]
fn open_redis(url: &str, _retry: u64) -> Result<Option<Stores>, StoreError> {
    Err(StoreError(format!(
        "[cache] redis_url = {url:?}: this build of mtasts has no Redis support (build with `--features redis`)"
    )))
}

/// `trust-ad` believes the AD bit only from resolvers on loopback: the path to a remote resolver
/// is not protected, so anyone on it could set AD (Postfix and Exim likewise trust a local one).
fn check_loopback(nameservers: &[SocketAddr], what: &str) -> Result<(), ConfigError> {
    match nameservers.iter().find(|s| !s.ip().is_loopback()) {
        Some(s) => Err(ConfigError(format!(
            "[dns] dnssec = \"trust-ad\" trusts the AD bit of resolvers on loopback only, and {what} \
             include {s}: use dnssec = \"validate\", or a validating resolver on 127.0.0.1 or ::1"
        ))),
        None => Ok(()),
    }
}

fn parse_nameserver(s: &str) -> Result<SocketAddr, ConfigError> {
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(addr);
    }
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, 53));
    }
    Err(ConfigError(format!(
        "[dns] nameservers: `{s}` is not an address (write `192.0.2.53`, `192.0.2.53:53` or `[2001:db8::53]:53`)"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_defaults() {
        assert_eq!(Config::parse("").unwrap(), Config::default());
    }

    #[test]
    fn full_file() {
        let c = Config::parse(
            "[dns]\nnameservers = [\"127.0.0.1:5353\", \"::1\"]\ntimeout_ms = 100\n[https]\nport = 8443\nmax_body_bytes = 100\n[engine]\ntxt_check_interval = 0\n",
        )
        .unwrap();
        assert_eq!(
            c.nameservers().unwrap(),
            vec!["127.0.0.1:5353".parse().unwrap(), "[::1]:53".parse().unwrap()]
        );
        assert_eq!(c.https.port, 8443);
        assert_eq!(c.timing().txt_check_interval, 0);
    }

    #[test]
    fn on_store_error() {
        assert_eq!(Config::parse("").unwrap().engine.on_store_error, OnStoreError::Continue);
        let c = Config::parse("[engine]\non_store_error = \"tempfail\"\n").unwrap();
        assert_eq!(c.engine.on_store_error, OnStoreError::Tempfail);
        let e = Config::parse("[engine]\non_store_error = \"hold\"\n").unwrap_err();
        assert!(e.0.contains("tempfail"), "{e}");
    }

    #[test]
    fn unknown_keys_are_named() {
        let e = Config::parse("[dns]\ntimeout = 5\n").unwrap_err();
        assert!(e.0.contains("unknown field `timeout`"), "{e}");
        let e = Config::parse("[dnss]\n").unwrap_err();
        assert!(e.0.contains("unknown field `dnss`"), "{e}");
    }

    #[test]
    fn bad_values() {
        assert!(
            Config::parse("[dns]\nnameservers = [\"ns1.example\"]\n")
                .unwrap_err()
                .0
                .contains("not an address")
        );
        assert!(Config::parse("[https]\ntimeout_ms = 0\n").is_err());
        assert!(Config::parse("[https]\nport = \"x\"\n").is_err());
    }

    #[test]
    fn serve_keys_are_accepted_not_judged() {
        // `mtasts serve` gives them their meaning (src/bin/mtasts/serve/settings.rs).
        let c = Config::parse("[serve]\nidle_timeout_ms = 0\nlisten = \"unix:/tmp/s\"\n").unwrap();
        assert_eq!((c.serve.idle_timeout_ms, c.serve.listen.as_deref()), (Some(0), Some("unix:/tmp/s")));
        assert!(Config::parse("[serve]\nlisten_on = \"x\"\n").unwrap_err().0.contains("listen_on"));
        assert!(Config::parse("[serve]\nmax_connections = \"x\"\n").is_err());
    }

    #[test]
    fn a_bad_trust_anchor_file_fails_the_build_or_with_build_engine_lazy_the_first_validation() {
        use crate::ports::{TlsaLookup, TlsaResolver as _};
        let missing = std::env::temp_dir().join(format!("mtasts-no-anchor-{}.ds", std::process::id()));
        let c = Config::parse(&format!(
            "[dns]\nnameservers = [\"127.0.0.1:9\"]\ntimeout_ms = 2000\ndnssec = \"validate\"\n\
             trust_anchor = \"{}\"\n[cache]\npath = \"memory\"\n",
            missing.display()
        ))
        .unwrap();
        let name = missing.display().to_string();
        let e = c.build_engine().unwrap_err();
        assert!(e.0.contains("[dns] trust_anchor") && e.0.contains(&name), "{e}");
        assert!(c.dns_resolver().unwrap_err().0.contains(&name));
        // The default engine of a process per delivery reads the file only to validate.
        c.build_engine_lazy().expect("built without reading the trust anchor");
        let mx = crate::domain::Domain::parse("mx.example.com").unwrap();
        let lookup = c.dns_resolver_unchecked().unwrap().tlsa(&mx);
        let TlsaLookup::Failed(text) = &lookup else { panic!("{lookup:?}") };
        assert!(text.contains(&format!("cannot read the trust anchor {name}")), "{text}");
    }

    #[test]
    fn dnssec_modes() {
        let c = Config::parse("").unwrap();
        assert_eq!((c.dns.dnssec, c.dns.trust_anchor.as_deref()), (DnssecMode::Validate, None));
        let c = Config::parse("[dns]\ndnssec = \"off\"\n").unwrap();
        assert_eq!(c.dns.dnssec, DnssecMode::Off);
        let c =
            Config::parse("[dns]\ndnssec = \"validate\"\ntrust_anchor = \"/etc/mtasts/root.ds\"\n").unwrap();
        assert_eq!(c.dns.trust_anchor.as_deref(), Some(Path::new("/etc/mtasts/root.ds")));
        let e = Config::parse("[dns]\ndnssec = \"yes\"\n").unwrap_err();
        assert!(e.0.contains("trust-ad"), "{e}");
        let e = Config::parse("[dns]\ndnssec = \"off\"\ntrust_anchor = \"/x\"\n").unwrap_err();
        assert!(e.0.contains("trust_anchor"), "{e}");
    }

    #[test]
    fn trust_ad_needs_loopback_nameservers() {
        let c = Config::parse("[dns]\ndnssec = \"trust-ad\"\nnameservers = [\"127.0.0.1:5353\", \"::1\"]\n")
            .unwrap();
        assert_eq!(c.dns.dnssec, DnssecMode::TrustAd);
        assert_eq!(c.dns_resolver().unwrap().settings().dnssec, DnssecMode::TrustAd);
        let e =
            Config::parse("[dns]\ndnssec = \"trust-ad\"\nnameservers = [\"127.0.0.1\", \"192.0.2.53\"]\n")
                .unwrap_err();
        assert!(e.0.contains("loopback") && e.0.contains("192.0.2.53:53"), "{e}");
        assert!(check_loopback(&["[::1]:53".parse().unwrap()], "x").is_ok());
        assert!(check_loopback(&["[2001:db8::1]:53".parse().unwrap()], "x").is_err());
    }

    #[test]
    fn trust_anchor_file_is_checked() {
        let c = Config::parse("[dns]\ntrust_anchor = \"/nonexistent/anchor\"\n").unwrap();
        let e = c.dns_resolver().unwrap_err();
        assert!(e.0.contains("/nonexistent/anchor"), "{e}");
    }

    #[test]
    fn missing_explicit_file_is_an_error() {
        let e = Config::from_file(Path::new("/nonexistent/mtasts.toml")).unwrap_err();
        assert!(e.0.contains("/nonexistent/mtasts.toml"), "{e}");
    }
}
