//! `mtasts doctor`: checks an installation as an operator needs it checked, one line per check.
//!
//! ```text
//! mtasts doctor [--config FILE] [--user NAME] [--json] [--exim-dir DIR] [--postfix-dir DIR]
//!               [--dnssec-probe NAME]
//! ```
//!
//! Each line is `ok|warn|fail  what: detail  -> what to do` (no `->` part for `ok`). The checks:
//! the configuration (and the `[serve]` section), the policy store (a SQLite file that the user
//! who runs mtasts can write, with its directory), the trust anchors (`[https] ca_file`,
//! `[dns] trust_anchor`: readable by that user, and valid), DNS (the resolver answers), DNSSEC
//! (a lookup validates as secure from the trust anchor), `mtasts serve` (answers a socketmap
//! lookup when `[serve] listen` is set) and the MTA snippets (Exim's dlfunc calls under
//! `/etc/exim4`, Postfix's `smtp_tls_policy_maps` in `/etc/postfix/main.cf`, when those exist).
//!
//! Permissions are judged from owners and mode bits (no set-uid, no switching users): the user
//! of `--user` (default: the one running the command) with its groups. Root can write anything
//! (ACLs and read-only mounts are not looked at; opening the store as the running user is).
//!
//! Exit status: 0 when no check fails (warnings allowed), 1 when one does, 2 for usage errors.

use std::io::{Read as _, Write as _};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use mtasts::config::Config;
use mtasts::dns::DnssecMode;
use mtasts::ports::{DnsError, MxLookup, Security};
use mtasts::{Domain, Resolver as _};
use serde_json::json;

#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    /// Configuration file (default: $MTASTS_CONFIG, else /etc/mtasts/mtasts.toml if present).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The user that runs mtasts for the MTA (Exim's user for the dlfunc, the User= of
    /// mtasts-serve.service for Postfix and Sendmail); default: the user running this command.
    #[arg(long, value_name = "NAME")]
    user: Option<String>,
    /// One JSON object instead of lines.
    #[arg(long)]
    json: bool,
    /// Where Exim's configuration is looked for.
    #[arg(long, value_name = "DIR", default_value = "/etc/exim4")]
    exim_dir: PathBuf,
    /// Where Postfix's configuration (main.cf) is looked for.
    #[arg(long, value_name = "DIR", default_value = "/etc/postfix")]
    postfix_dir: PathBuf,
    /// A DNSSEC-signed name whose TXT lookup shows DNS answers and whose MX lookup must validate
    /// as secure (default: the owner of the `[dns] trust_anchor` file, else `org`).
    #[arg(long, value_name = "NAME")]
    dnssec_probe: Option<String>,
}

/// What one check found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Ok,
    Warn,
    Fail,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Warn => "warn",
            Self::Fail => "fail",
        }
    }
}

/// One line of the report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    pub status: Status,
    pub what: &'static str,
    pub detail: String,
    /// What to do (empty for `ok`).
    pub todo: String,
}

/// `text` on one line: its lines trimmed and joined with ` | ` (a TOML error spans several).
fn one_line(text: impl Into<String>) -> String {
    let text = text.into();
    if !text.contains('\n') {
        return text;
    }
    text.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" | ")
}

impl Check {
    fn ok(what: &'static str, detail: impl Into<String>) -> Self {
        Self { status: Status::Ok, what, detail: one_line(detail), todo: String::new() }
    }
    fn warn(what: &'static str, detail: impl Into<String>, todo: impl Into<String>) -> Self {
        Self { status: Status::Warn, what, detail: one_line(detail), todo: todo.into() }
    }
    fn fail(what: &'static str, detail: impl Into<String>, todo: impl Into<String>) -> Self {
        Self { status: Status::Fail, what, detail: one_line(detail), todo: todo.into() }
    }

    fn line(&self) -> String {
        let mut s = format!("{:<4}  {}: {}", self.status.as_str(), self.what, self.detail);
        if !self.todo.is_empty() {
            s.push_str("  -> ");
            s.push_str(&self.todo);
        }
        s
    }
}

/// A user and its groups, for permission checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Who {
    pub name: String,
    pub uid: u32,
    pub gids: Vec<u32>,
}

impl Who {
    fn current() -> Self {
        let uid = nix::unistd::getuid();
        let mut gids: Vec<u32> =
            nix::unistd::getgroups().unwrap_or_default().iter().map(|g| g.as_raw()).collect();
        gids.push(nix::unistd::getgid().as_raw());
        let name =
            nix::unistd::User::from_uid(uid).ok().flatten().map_or_else(|| format!("uid {uid}"), |u| u.name);
        Self { name, uid: uid.as_raw(), gids }
    }

    fn named(name: &str) -> Result<Self, String> {
        let user = match nix::unistd::User::from_name(name) {
            Ok(Some(u)) => u,
            Ok(None) => return Err(format!("--user {name}: no such user")),
            Err(e) => return Err(format!("--user {name}: cannot look the user up: {e}")),
        };
        let cname = std::ffi::CString::new(name).map_err(|_| format!("--user {name:?}: not a user name"))?;
        let gids = nix::unistd::getgrouplist(&cname, user.gid)
            .map_err(|e| format!("--user {name}: cannot list its groups: {e}"))?
            .iter()
            .map(|g| g.as_raw())
            .collect();
        Ok(Self { name: user.name, uid: user.uid.as_raw(), gids })
    }

    /// Whether the mode bits of `meta` give this user `bits` (4 read, 2 write, 1 search).
    fn may(&self, meta: &std::fs::Metadata, bits: u32) -> bool {
        if self.uid == 0 {
            // Root: everything but executing a file no one may execute (not asked here).
            return true;
        }
        let mode = meta.mode();
        let granted = if meta.uid() == self.uid {
            mode >> 6
        } else if self.gids.contains(&meta.gid()) {
            mode >> 3
        } else {
            mode
        };
        granted & bits == bits
    }

    /// The first directory above `path` (not `path` itself) this user cannot search.
    fn blocked_on_the_way(&self, path: &Path) -> Option<PathBuf> {
        let mut ancestors: Vec<&Path> = path.ancestors().skip(1).collect();
        ancestors.reverse();
        ancestors.into_iter().find_map(|dir| match std::fs::metadata(dir) {
            Ok(meta) if meta.is_dir() && !self.may(&meta, 1) => Some(dir.to_path_buf()),
            _ => None,
        })
    }
}

pub fn run(args: &Args) -> Result<ExitCode, String> {
    let who = match &args.user {
        Some(name) => Who::named(name)?,
        None => Who::current(),
    };
    let checks = checks(args, &who);
    let failed = checks.iter().any(|c| c.status == Status::Fail);
    let mut out = std::io::stdout().lock();
    if args.json {
        let list: Vec<_> = checks
            .iter()
            .map(
                |c| json!({"status": c.status.as_str(), "check": c.what, "detail": c.detail, "todo": c.todo}),
            )
            .collect();
        let doc = json!({"ok": !failed, "user": who.name, "checks": list});
        let text = serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())?;
        let _ = writeln!(out, "{text}");
    } else {
        for c in &checks {
            let _ = writeln!(out, "{}", c.line());
        }
    }
    Ok(if failed { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

/// Every check, in order. A configuration that does not load stops there.
fn checks(args: &Args, who: &Who) -> Vec<Check> {
    let mut checks = Vec::new();
    let config = match Config::load(args.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            checks.push(Check::fail(
                "config",
                e.to_string(),
                "fix the file (README \"Configuration\"); the other checks need it",
            ));
            return checks;
        }
    };
    let from = config
        .source
        .as_ref()
        .map_or_else(|| "no file, the defaults".to_owned(), |p| p.display().to_string());
    let serve = super::serve::settings_of(&config);
    match &serve {
        Ok(_) => checks.push(Check::ok("config", format!("{from} is valid"))),
        Err(e) => checks.push(Check::fail(
            "config",
            e.clone(),
            "fix the [serve] section (README \"Configuration\")",
        )),
    }
    checks.push(store(&config, who));
    checks.extend(anchors(&config, who));
    let resolver = match config.dns_resolver() {
        Ok(r) => Some(r),
        Err(e) => {
            checks.push(Check::fail("dns", e.to_string(), "fix [dns] in the configuration"));
            None
        }
    };
    if let Some(resolver) = &resolver {
        // A name served by the resolvers in use: the signed one of the DNSSEC check.
        let probe = args
            .dnssec_probe
            .clone()
            .or_else(|| config.dns.trust_anchor.as_deref().and_then(anchor_owner))
            .unwrap_or_else(|| "org".to_owned());
        checks.push(dns(&config, resolver, &probe));
        checks.push(dnssec(&config, resolver, &probe));
    }
    checks.push(match &serve {
        Ok(Some(listen)) => serve_answers(listen),
        Ok(None) => Check::ok("serve", "[serve] listen is not set: no socketmap server to check"),
        Err(_) => Check::fail("serve", "the [serve] section is invalid (see config)", "fix it first"),
    });
    if let Some(remote) = config.remote() {
        checks.push(check_socket(remote, who));
    }
    checks.extend(snippets(args, &config));
    checks
}

/// `[serve] check_socket`: `mtasts serve` answers there under this configuration (a mode request
/// for a name that is no domain, which it refuses without DNS), and `who` may connect (write
/// permission on the socket, search on the directories above). Either failing is a warning: the
/// library's engines then judge their calls themselves.
fn check_socket(remote: mtasts::remote::Remote, who: &Who) -> Check {
    const WHAT: &str = "check socket";
    let path = remote.path().to_path_buf();
    let socket = path.display();
    if let Some(dir) = who.blocked_on_the_way(&path) {
        return Check::warn(
            WHAT,
            format!("{} cannot search {}, so cannot reach unix:{socket}", who.name, dir.display()),
            format!(
                "chmod o+x {} (or a group {} is in), so that its calls reach mtasts serve",
                dir.display(),
                who.name
            ),
        );
    }
    if let Ok(meta) = std::fs::metadata(&path) {
        if !who.may(&meta, 2) {
            return Check::warn(
                WHAT,
                format!("{} may not connect to unix:{socket} (no write permission on it)", who.name),
                "set [serve] check_socket_mode and check_socket_group (e.g. \"0660\" and the MTA's group), then restart mtasts serve",
            );
        }
    }
    match remote
        .with_timeout(Duration::from_secs(5))
        .ask(&mtasts::remote::Request::Mode { domain: ".mtasts-doctor.invalid" })
    {
        Ok(_) => Check::ok(WHAT, format!("mtasts serve answers the library's checks on unix:{socket}")),
        Err(mtasts::remote::Unavailable { why, .. }) => Check::warn(
            WHAT,
            why,
            "start mtasts serve with this configuration, reload it if the file changed (or unset [serve] check_socket); \
             until then each delivery judges its checks itself",
        ),
    }
}

/// The policy store: memory (warned), Redis (not checked here), or a SQLite file that `who`
/// can write, in a directory `who` can write (SQLite keeps its journal next to the file).
fn store(config: &Config, who: &Who) -> Check {
    const WHAT: &str = "store";
    if let Some(url) = &config.cache.redis_url {
        return match config.open_store() {
            Ok(_) => Check::ok(WHAT, format!("Redis store {url} answers")),
            Err(e) => Check::fail(WHAT, e.to_string(), "start Redis or fix [cache] redis_url"),
        };
    }
    if config.cache.path == "memory" {
        return Check::warn(
            WHAT,
            "[cache] path = \"memory\": policies are kept per process and lost at each restart",
            "set [cache] path to a file (e.g. /var/lib/mtasts/policies.sqlite) so that policies outlive restarts (RFC 8461 §10.2)",
        );
    }
    let path = Path::new(&config.cache.path);
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let user = &who.name;
    if let Some(blocked) = who.blocked_on_the_way(path) {
        return Check::fail(
            WHAT,
            format!("{user} cannot reach {}: no search permission on {}", path.display(), blocked.display()),
            format!("chmod o+x {} (or give {user} a group that may)", blocked.display()),
        );
    }
    let dir_meta = match std::fs::metadata(dir) {
        Ok(m) => m,
        Err(e) => {
            return Check::fail(
                WHAT,
                format!("the directory {} of [cache] path: {e}", dir.display()),
                format!("mkdir -p {} && chown {user} {}", dir.display(), dir.display()),
            );
        }
    };
    if !who.may(&dir_meta, 3) {
        return Check::fail(
            WHAT,
            format!("{user} cannot write in {} (SQLite writes its journal there)", dir.display()),
            format!("chown {user} {} (or chmod g+w it for a group of {user})", dir.display()),
        );
    }
    match std::fs::metadata(path) {
        Ok(meta) if !who.may(&meta, 6) => {
            return Check::fail(
                WHAT,
                format!("{user} cannot read and write {}", path.display()),
                format!("chown {user} {}", path.display()),
            );
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Check::ok(WHAT, format!("{} does not exist yet; {user} can create it", path.display()));
        }
        Err(e) => {
            return Check::fail(
                WHAT,
                format!("{}: {e}", path.display()),
                "check the path and its permissions",
            );
        }
    }
    if nix::unistd::getuid().as_raw() != who.uid {
        // Opening it as another user could leave files (SQLite's -wal, -shm) that user owns.
        return Check::ok(
            WHAT,
            format!(
                "{} is writable by {user} (not opened: this command runs as another user)",
                path.display()
            ),
        );
    }
    match config.open_store() {
        Ok(_) => Check::ok(WHAT, format!("{} is writable by {user} and opens", path.display())),
        Err(e) => Check::fail(WHAT, e.to_string(), format!("move or repair {}", path.display())),
    }
}

/// `[https] ca_file` and `[dns] trust_anchor`: readable by `who`, and valid.
fn anchors(config: &Config, who: &Who) -> Vec<Check> {
    const WHAT: &str = "trust anchors";
    let mut checks = Vec::new();
    let readable = |path: &Path| -> Option<Check> {
        if let Some(blocked) = who.blocked_on_the_way(path) {
            return Some(Check::fail(
                WHAT,
                format!(
                    "{} cannot reach {}: no search permission on {}",
                    who.name,
                    path.display(),
                    blocked.display()
                ),
                format!("chmod o+x {}", blocked.display()),
            ));
        }
        match std::fs::metadata(path) {
            Ok(meta) if who.may(&meta, 4) => None,
            Ok(_) => Some(Check::fail(
                WHAT,
                format!("{} cannot read {}", who.name, path.display()),
                format!("chmod o+r {} (or give {} a group that may read it)", path.display(), who.name),
            )),
            Err(e) => Some(Check::fail(
                WHAT,
                format!("{}: {e}", path.display()),
                "fix the path in the configuration",
            )),
        }
    };
    match &config.https.ca_file {
        None => checks.push(Check::ok(WHAT, "[https] ca_file not set: the system's roots")),
        Some(path) => checks.push(readable(path).unwrap_or_else(|| match config.trust_anchors() {
            Ok(_) => {
                Check::ok(WHAT, format!("[https] ca_file {} is readable by {}", path.display(), who.name))
            }
            Err(e) => {
                Check::fail(WHAT, e.to_string(), "point [https] ca_file at a PEM file of CA certificates")
            }
        })),
    }
    if let Some(path) = &config.dns.trust_anchor {
        checks.push(readable(path).unwrap_or_else(|| match mtasts::dnssec::check_trust_anchor_file(path) {
            Ok(()) => {
                Check::ok(WHAT, format!("[dns] trust_anchor {} is readable by {}", path.display(), who.name))
            }
            Err(e) => Check::fail(WHAT, e, "write DS or DNSKEY records, one a line, in [dns] trust_anchor"),
        }));
    }
    checks
}

/// The resolver answers a lookup of the TXT records of `name` (an answer that there are none
/// counts).
fn dns(config: &Config, resolver: &mtasts::dns::DnsResolver, name: &str) -> Check {
    const WHAT: &str = "dns";
    let servers = if config.dns.nameservers.is_empty() {
        "the nameservers of /etc/resolv.conf".to_owned()
    } else {
        config.dns.nameservers.join(", ")
    };
    match resolver.txt(name) {
        Ok(_) | Err(DnsError::NotFound) => {
            Check::ok(WHAT, format!("{servers}: a TXT lookup of {name} was answered"))
        }
        Err(DnsError::Temporary(e)) => Check::fail(
            WHAT,
            format!("{servers}: a TXT lookup of {name} failed: {e}"),
            "start a resolver there or fix [dns] nameservers (without DNS no policy is found)",
        ),
    }
}

/// The owner name of the first record of a trust anchor file.
fn anchor_owner(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let line = text.lines().map(|l| l.split(';').next().unwrap_or("").trim()).find(|l| !l.is_empty())?;
    let owner = line.split_whitespace().next()?.trim_end_matches('.');
    (!owner.is_empty()).then(|| owner.to_owned())
}

/// A signed name validates as secure (DNSSEC works end to end: trust anchor, resolver, clock).
fn dnssec(config: &Config, resolver: &mtasts::dns::DnsResolver, probe: &str) -> Check {
    const WHAT: &str = "dnssec";
    if config.dns.dnssec == DnssecMode::Off {
        return Check::warn(
            WHAT,
            "[dns] dnssec = \"off\": no DANE (MTA-STS only)",
            "set [dns] dnssec = \"validate\" to apply DANE where MX hosts publish TLSA records (docs/dane.md)",
        );
    }
    let domain = match Domain::parse(probe) {
        Ok(d) => d,
        Err(e) => return Check::fail(WHAT, format!("--dnssec-probe {probe}: {e}"), "name a signed domain"),
    };
    let how = match config.dns.dnssec {
        DnssecMode::TrustAd => "the resolvers' AD bit",
        _ => "validation in process",
    };
    match resolver.mx_dnssec(&domain) {
        MxLookup::Records { security: Security::Secure, .. } => {
            Check::ok(WHAT, format!("MX of {probe} validated as secure ({how})"))
        }
        MxLookup::Records { security, .. } => Check::fail(
            WHAT,
            format!("MX of {probe}, a signed name, came back {security:?} ({how})"),
            match config.dns.dnssec {
                DnssecMode::TrustAd => {
                    "use a validating resolver on 127.0.0.1 (unbound) that sets the AD bit"
                }
                _ => {
                    "check [dns] trust_anchor (or the IANA root default) and that the resolvers pass DNSSEC records"
                }
            },
        ),
        MxLookup::Bogus(e) => Check::fail(
            WHAT,
            format!("MX of {probe} is bogus: {e}"),
            "check [dns] trust_anchor and the system clock (signatures have validity dates)",
        ),
        MxLookup::Failed(e) => Check::fail(
            WHAT,
            format!("MX of {probe} not obtained: {e}"),
            "make sure the resolvers answer DNSSEC queries (DO bit, TCP fallback)",
        ),
    }
}

/// `mtasts serve` answers a lookup of a reserved key (a `.parent` form: always `NOTFOUND `,
/// with no DNS and no log line).
fn serve_answers(listen: &str) -> Check {
    const WHAT: &str = "serve";
    let mut request = Vec::new();
    let key = b"doctor .mtasts-doctor.invalid";
    request.extend_from_slice(format!("{}:", key.len()).as_bytes());
    request.extend_from_slice(key);
    request.push(b',');
    let timeout = Duration::from_secs(5);
    let reply = (|| -> std::io::Result<Vec<u8>> {
        let mut buf = Vec::new();
        if let Some(path) = listen.strip_prefix("unix:") {
            let mut s = std::os::unix::net::UnixStream::connect(path)?;
            s.set_read_timeout(Some(timeout))?;
            s.set_write_timeout(Some(timeout))?;
            s.write_all(&request)?;
            s.shutdown(std::net::Shutdown::Write)?;
            s.take(64).read_to_end(&mut buf)?;
        } else {
            let addr: std::net::SocketAddr = listen
                .strip_prefix("inet:")
                .unwrap_or(listen)
                .parse()
                .map_err(|_| std::io::Error::other("not inet:IP:PORT"))?;
            let mut s = std::net::TcpStream::connect_timeout(&addr, timeout)?;
            s.set_read_timeout(Some(timeout))?;
            s.set_write_timeout(Some(timeout))?;
            s.write_all(&request)?;
            s.shutdown(std::net::Shutdown::Write)?;
            s.take(64).read_to_end(&mut buf)?;
        }
        Ok(buf)
    })();
    match reply {
        Ok(r) if r == b"9:NOTFOUND ," => Check::ok(WHAT, format!("{listen} answers socketmap lookups")),
        Ok(r) => Check::fail(
            WHAT,
            format!("{listen} answered {:?}, not a socketmap reply", String::from_utf8_lossy(&r)),
            "make sure [serve] listen names mtasts serve, not another service",
        ),
        Err(e) => Check::fail(
            WHAT,
            format!("{listen}: {e}"),
            "start it (systemctl start mtasts-serve) or fix [serve] listen",
        ),
    }
}

/// The MTA snippets, where the MTA's configuration directory exists.
fn snippets(args: &Args, config: &Config) -> Vec<Check> {
    const WHAT: &str = "snippets";
    let mut checks = Vec::new();
    if args.exim_dir.is_dir() {
        let found = grep_tree(&args.exim_dir, "mtasts_exim_", 4);
        checks.push(match found {
            Some(file) => Check::ok(WHAT, format!("Exim: mtasts dlfunc calls in {}", file.display())),
            None => Check::warn(
                WHAT,
                format!("Exim: no mtasts_exim_ dlfunc call under {}", args.exim_dir.display()),
                "add examples/exim/exim-mtasts.conf to Exim's configuration (README \"Integrations\")",
            ),
        });
    }
    if args.postfix_dir.is_dir() {
        let main_cf = args.postfix_dir.join("main.cf");
        let text = std::fs::read_to_string(&main_cf).unwrap_or_default();
        let listen = config.serve.listen.as_deref().unwrap_or(super::serve::DEFAULT_LISTEN);
        let want = match listen.strip_prefix("unix:") {
            // Postfix names a socket in its queue directory relative to it.
            Some(path) => {
                format!("socketmap:unix:{}", path.strip_prefix("/var/spool/postfix/").unwrap_or(path))
            }
            None => format!("socketmap:inet:{}:", listen.strip_prefix("inet:").unwrap_or(listen)),
        };
        let line = text
            .lines()
            .map(str::trim)
            .find(|l| !l.starts_with('#') && l.starts_with("smtp_tls_policy_maps") && l.contains(&want));
        // The map name after the address, when profiles are configured: does it have one?
        let name = line.and_then(|l| {
            let rest = &l[l.find(&want)? + want.len()..];
            let rest = rest.strip_prefix(':').unwrap_or(rest);
            rest.split(|c: char| c.is_whitespace() || c == ',').next()
        });
        let profiles = &config.serve.profile;
        checks.push(match (line, name) {
            (Some(_), Some(name)) if !profiles.is_empty() && !profiles.contains_key(name) => Check::warn(
                WHAT,
                format!("Postfix: {} uses {want} with the map name {name:?}, which has no [serve.profile.{name}]", main_cf.display()),
                format!("add [serve.profile.{name}] to the configuration, or use the name of a profile (the [serve] options apply meanwhile)"),
            ),
            (Some(_), _) => Check::ok(WHAT, format!("Postfix: {} uses {want}", main_cf.display())),
            (None, _) => Check::warn(
                WHAT,
                format!("Postfix: no smtp_tls_policy_maps with {want} in {}", main_cf.display()),
                "add examples/postfix/main.cf to main.cf (with the address of [serve] listen) and postfix reload",
            ),
        });
    }
    if checks.is_empty() {
        checks.push(Check::ok(
            WHAT,
            format!(
                "neither {} nor {} exists: no MTA configuration to check",
                args.exim_dir.display(),
                args.postfix_dir.display()
            ),
        ));
    }
    checks
}

/// The first regular file under `dir` (at most `depth` levels) whose text contains `needle`.
fn grep_tree(dir: &Path, needle: &str, depth: usize) -> Option<PathBuf> {
    let mut entries: Vec<_> = std::fs::read_dir(dir).ok()?.filter_map(Result::ok).map(|e| e.path()).collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            if depth > 0 {
                if let Some(found) = grep_tree(&path, needle, depth - 1) {
                    return Some(found);
                }
            }
        } else if std::fs::read_to_string(&path).is_ok_and(|t| t.contains(needle)) {
            return Some(path);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn lines() {
        assert_eq!(one_line("a\n  ^ b\n\n"), "a | ^ b");
        assert_eq!(Check::ok("dns", "x answer").line(), "ok    dns: x answer");
        assert_eq!(Check::fail("serve", "down", "start it").line(), "fail  serve: down  -> start it");
        assert_eq!(Check::warn("store", "memory", "set a path").line(), "warn  store: memory  -> set a path");
    }

    #[test]
    fn permissions_by_owner_group_other() {
        let dir = std::env::temp_dir().join(format!("mtasts-doctor-unit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let meta_of = |mode: u32| {
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode)).unwrap();
            std::fs::metadata(&dir).unwrap()
        };
        let m = meta_of(0o750);
        let (uid, gid) = (m.uid(), m.gid());
        let owner = Who { name: "o".into(), uid, gids: vec![] };
        let group = Who { name: "g".into(), uid: 4_000_000, gids: vec![gid] };
        let other = Who { name: "x".into(), uid: 4_000_001, gids: vec![4_000_002] };
        assert!(owner.may(&m, 7));
        assert!(group.may(&m, 5) && !group.may(&m, 2));
        assert!(!other.may(&m, 4) && !other.may(&m, 1));
        let m = meta_of(0o757);
        assert!(other.may(&m, 7) && !group.may(&m, 2));
        let root = Who { name: "root".into(), uid: 0, gids: vec![0] };
        assert!(root.may(&meta_of(0o000), 6));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn anchor_owners() {
        let dir = std::env::temp_dir().join(format!("mtasts-doctor-anchor-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("a");
        std::fs::write(&file, "; comment\n\ntest. 3600 IN DS 1 8 2 ab\n").unwrap();
        assert_eq!(anchor_owner(&file).as_deref(), Some("test"));
        std::fs::write(&file, ". IN DS 1 8 2 ab\n").unwrap();
        assert_eq!(anchor_owner(&file), None);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
