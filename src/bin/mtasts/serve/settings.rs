//! `[serve]`: the settings of `mtasts serve`, with their defaults and checks.
//!
//! The library's configuration parser accepts the `[serve]` keys (one file serves every
//! front-end, and a misspelt key is an error wherever the file is read) but gives them no
//! meaning: that is done here, for this front-end only.

use std::collections::{BTreeMap, HashMap};

use mtasts::config::Config;

use super::reply::Options;

/// The default socketmap address.
pub const DEFAULT_LISTEN: &str = "inet:127.0.0.1:8461";

/// `[serve]`, with the defaults filled in and the values checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// `inet:HOST:PORT` (`inet:[::1]:PORT` for IPv6) or `unix:/path/to/socket`.
    pub listen: String,
    /// Answer `testing` policies as `enforce` ones (default: `NOTFOUND`, deliver as usual).
    pub strict_testing: bool,
    /// Add `policy_type`, `policy_domain`, `mx_host_pattern` and `policy_string` to `OK` replies
    /// (Postfix 3.10 and later only: older versions reject the reply and defer the mail).
    pub postfix_tlsrpt: bool,
    /// Longest request netstring accepted (its payload, in bytes); a longer one closes the
    /// connection. Default 4096.
    pub max_request_bytes: u64,
    /// A connection idle (or stalled mid-request) this long is closed, in milliseconds. Default
    /// 60000.
    pub idle_timeout_ms: u64,
    /// A request must arrive whole within this long of its first byte, and the client must take a
    /// write of replies within this long of its start, in milliseconds; else the connection is
    /// closed (a slow client cannot hold a connection slot for longer). Default 10000.
    pub request_timeout_ms: u64,
    /// Connections served at once; further ones wait in the listen queue. Default 1024.
    pub max_connections: u64,
    /// Seconds between two passes of the background refresher; 0 turns it off. Default 60.
    pub refresh_interval_s: u64,
    /// What a `unix:` socket the server binds is given: permissions, owner, group.
    pub socket: SocketAccess,
    /// Where to serve Prometheus metrics (`inet:HOST:PORT`); `None`: not served.
    pub metrics_listen: Option<String>,
    /// The unix datagram socket taking TLSRPT datagrams (Postfix 3.10); `None`: none.
    pub tlsrpt_socket: Option<std::path::PathBuf>,
    /// What that socket is given: permissions, owner, group.
    pub tlsrpt_access: SocketAccess,
    /// The unix stream socket where the library's checks are judged; `None`: none.
    pub check_socket: Option<std::path::PathBuf>,
    /// What that socket is given: permissions, owner, group.
    pub check_access: SocketAccess,
    /// `[serve.profile.NAME]`: the reply options of requests whose map name is `NAME`, with the
    /// keys a profile leaves out taken from `[serve]`.
    pub profiles: BTreeMap<String, Options>,
}

/// The reply options of each socketmap name: those of its profile, else those of `[serve]`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Replies {
    /// `[serve]`: for names without a profile.
    pub global: Options,
    /// `[serve.profile.NAME]`, by name.
    pub profiles: HashMap<Box<[u8]>, Options>,
}

impl Replies {
    /// The options for map name `name`, and whether a profile has that name. Without any profile
    /// configured, every name gets the global options and counts as known (nothing to warn about).
    pub fn select(&self, name: &[u8]) -> (Options, bool) {
        if self.profiles.is_empty() {
            return (self.global, true);
        }
        match self.profiles.get(name) {
            Some(o) => (*o, true),
            None => (self.global, false),
        }
    }
}

/// `[serve.profile.NAME] servername`: `"hostname"` (the default: `servername=hostname`, the MX
/// host name in SNI, as RFC 8461 asks) or `"none"` (no `servername` attribute).
fn parse_servername(name: &str, value: &str) -> Result<bool, String> {
    match value {
        "hostname" => Ok(false),
        "none" => Ok(true),
        _ => Err(format!(
            "[serve.profile.{name}] servername = {value:?}: write \"hostname\" (replies carry servername=hostname: \
             Postfix sends the MX host name in SNI, as RFC 8461 asks) or \"none\" (no servername attribute, \
             for Postfix before 3.4, which does not know it)"
        )),
    }
}

/// A socketmap name a profile can have: what Postfix and Sendmail put before the key (no
/// space, no control character, not empty).
fn check_profile_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "[serve.profile.{name:?}]: a profile is named after a socketmap name (the `postfix` of \
             socketmap:inet:127.0.0.1:8461:postfix): not empty, no spaces or control characters"
        ));
    }
    Ok(())
}

/// `[serve] socket_mode`, `socket_owner`, `socket_group`, resolved: applied to a `unix:` socket
/// right after it is bound (`None`: left as binding made it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SocketAccess {
    pub mode: Option<u32>,
    pub owner: Option<u32>,
    pub group: Option<u32>,
    /// The keys' prefix in messages: `socket` (the socketmap's, the default) or `tlsrpt_socket`.
    pub prefix: Prefix,
}

/// Which socket's keys a [`SocketAccess`] comes from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Prefix {
    /// `socket_mode`, `socket_owner`, `socket_group`: the socketmap's.
    #[default]
    Socketmap,
    /// `tlsrpt_socket_mode`, ...: the TLSRPT datagram socket's.
    Tlsrpt,
    /// `check_socket_mode`, ...: the check socket's.
    Check,
}

impl Prefix {
    fn key(self, name: &str) -> String {
        match self {
            Self::Socketmap => format!("socket_{name}"),
            Self::Tlsrpt => format!("tlsrpt_socket_{name}"),
            Self::Check => format!("check_socket_{name}"),
        }
    }
}

impl SocketAccess {
    fn from_config(s: &mtasts::config::ServeConfig) -> Result<Self, String> {
        Self::from_keys(Prefix::Socketmap, [&s.socket_mode, &s.socket_owner, &s.socket_group])
    }

    fn from_tlsrpt_config(s: &mtasts::config::ServeConfig) -> Result<Self, String> {
        Self::from_keys(
            Prefix::Tlsrpt,
            [&s.tlsrpt_socket_mode, &s.tlsrpt_socket_owner, &s.tlsrpt_socket_group],
        )
    }

    fn from_check_config(s: &mtasts::config::ServeConfig) -> Result<Self, String> {
        Self::from_keys(Prefix::Check, [&s.check_socket_mode, &s.check_socket_owner, &s.check_socket_group])
    }

    /// From the `mode`, `owner` and `group` keys of `prefix`.
    fn from_keys(prefix: Prefix, [mode, owner, group]: [&Option<String>; 3]) -> Result<Self, String> {
        let mode = match mode.as_deref() {
            None => None,
            Some(text) => Some(parse_mode(text).ok_or_else(|| {
                format!(
                    "[serve] {} = {text:?}: write the permissions as an octal string, e.g. \"0660\" (at most 0777)",
                    prefix.key("mode")
                )
            })?),
        };
        let owner = match owner.as_deref() {
            None => None,
            Some(name) => {
                Some(user_id(name).map_err(|e| format!("[serve] {} = {name:?}: {e}", prefix.key("owner")))?)
            }
        };
        let group = match group.as_deref() {
            None => None,
            Some(name) => {
                Some(group_id(name).map_err(|e| format!("[serve] {} = {name:?}: {e}", prefix.key("group")))?)
            }
        };
        Ok(Self { mode, owner, group, prefix })
    }

    /// Whether any key is set.
    pub fn is_set(&self) -> bool {
        self.mode.is_some() || self.owner.is_some() || self.group.is_some()
    }

    /// Binds a unix socket file at `path` with `bind`, gives it this owner, group and mode, and
    /// finishes with `then`; until the mode is set the file is the server user's alone (umask
    /// 0177: only at start, before other threads run, for the umask is the process's). A failure
    /// after binding removes the file.
    pub fn bind<T, U>(
        &self,
        path: &std::path::Path,
        bind: impl FnOnce(&std::path::Path) -> std::io::Result<T>,
        bind_error: impl FnOnce(std::io::Error) -> String,
        then: impl FnOnce(&T) -> Result<U, String>,
    ) -> Result<(T, U), String> {
        use nix::sys::stat::{Mode, umask};
        let old_umask = self.is_set().then(|| umask(Mode::from_bits_truncate(0o177)));
        let bound = bind(path);
        if let Some(old) = old_umask {
            umask(old);
        }
        let socket = bound.map_err(bind_error)?;
        match self.apply(path).and_then(|()| then(&socket)) {
            Ok(more) => Ok((socket, more)),
            Err(e) => {
                drop(socket);
                let _ = std::fs::remove_file(path);
                Err(e)
            }
        }
    }

    /// Applies the owner, group and mode to the socket file at `path`.
    pub fn apply(&self, path: &std::path::Path) -> Result<(), String> {
        if self.owner.is_some() || self.group.is_some() {
            std::os::unix::fs::chown(path, self.owner, self.group).map_err(|e| {
                format!(
                    "[serve] {}/{}: cannot change the owner of {}: {e}",
                    self.prefix.key("owner"),
                    self.prefix.key("group"),
                    path.display()
                )
            })?;
        }
        if let Some(mode) = self.mode {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(|e| {
                format!(
                    "[serve] {}: cannot change the permissions of {}: {e}",
                    self.prefix.key("mode"),
                    path.display()
                )
            })?;
        }
        Ok(())
    }
}

/// `"0660"`, `"660"` or `"0o660"`: permission bits, at most 0777 (no set-id or sticky bits, which
/// mean nothing on a socket).
fn parse_mode(text: &str) -> Option<u32> {
    let digits = text.strip_prefix("0o").unwrap_or(text);
    if digits.is_empty() || digits.len() > 4 || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return None;
    }
    u32::from_str_radix(digits, 8).ok().filter(|m| *m <= 0o777)
}

/// A user name or number: its uid.
fn user_id(name: &str) -> Result<u32, String> {
    if let Some(id) = numeric_id(name)? {
        return Ok(id);
    }
    match nix::unistd::User::from_name(name) {
        Ok(Some(user)) => Ok(user.uid.as_raw()),
        Ok(None) => Err("no such user".into()),
        Err(e) => Err(format!("cannot look the user up: {e}")),
    }
}

/// A group name or number: its gid.
fn group_id(name: &str) -> Result<u32, String> {
    if let Some(id) = numeric_id(name)? {
        return Ok(id);
    }
    match nix::unistd::Group::from_name(name) {
        Ok(Some(group)) => Ok(group.gid.as_raw()),
        Ok(None) => Err("no such group".into()),
        Err(e) => Err(format!("cannot look the group up: {e}")),
    }
}

/// `Some(n)` for a number; `None` for a name; an error for an empty string or a number too big.
fn numeric_id(name: &str) -> Result<Option<u32>, String> {
    if name.is_empty() {
        return Err("empty".into());
    }
    if !name.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(None);
    }
    // (uid_t)-1 means "unchanged" to chown: refuse it as an id.
    match name.parse::<u32>() {
        Ok(n) if n != u32::MAX => Ok(Some(n)),
        _ => Err("not a valid id".into()),
    }
}

impl Settings {
    /// The `[serve]` section of `config`, with `listen` replaced when given. The error names the
    /// configuration file, as the library's own checks do.
    pub fn from_config(config: &Config, listen: Option<&str>) -> Result<Self, String> {
        let s = &config.serve;
        let settings = Self {
            listen: listen.or(s.listen.as_deref()).unwrap_or(DEFAULT_LISTEN).to_owned(),
            strict_testing: s.strict_testing.unwrap_or(false),
            postfix_tlsrpt: s.postfix_tlsrpt.unwrap_or(false),
            max_request_bytes: s.max_request_bytes.unwrap_or(4096),
            idle_timeout_ms: s.idle_timeout_ms.unwrap_or(60_000),
            request_timeout_ms: s.request_timeout_ms.unwrap_or(10_000),
            max_connections: s.max_connections.unwrap_or(1024),
            refresh_interval_s: s.refresh_interval_s.unwrap_or(60),
            socket: SocketAccess::from_config(s).map_err(|e| name_file(config, &e))?,
            metrics_listen: s.metrics_listen.clone(),
            tlsrpt_socket: match s.tlsrpt_socket.as_deref() {
                None => None,
                Some(p) if p.starts_with('/') => Some(p.into()),
                Some(p) => {
                    let e = format!(
                        "[serve] tlsrpt_socket = {p:?}: write the absolute path of the socket, the path Postfix's \
                         smtp_tlsrpt_socket_name names (e.g. \"/var/spool/postfix/run/mtasts/tlsrpt.sock\")"
                    );
                    return Err(name_file(config, &e));
                }
            },
            tlsrpt_access: SocketAccess::from_tlsrpt_config(s).map_err(|e| name_file(config, &e))?,
            // The configuration checked that the path is absolute.
            check_socket: s.check_socket.as_deref().map(Into::into),
            check_access: SocketAccess::from_check_config(s).map_err(|e| name_file(config, &e))?,
            profiles: BTreeMap::new(),
        };
        let global = settings.options();
        let mut settings = settings;
        for (name, p) in &s.profile {
            check_profile_name(name).map_err(|e| name_file(config, &e))?;
            let no_servername = match p.servername.as_deref() {
                None => global.no_servername,
                Some(v) => parse_servername(name, v).map_err(|e| name_file(config, &e))?,
            };
            let options = Options {
                strict_testing: p.strict_testing.unwrap_or(global.strict_testing),
                postfix_tlsrpt: p.postfix_tlsrpt.unwrap_or(global.postfix_tlsrpt),
                no_servername,
            };
            settings.profiles.insert(name.clone(), options);
        }
        if settings.max_request_bytes == 0
            || settings.idle_timeout_ms == 0
            || settings.request_timeout_ms == 0
            || settings.max_connections == 0
        {
            let e = "[serve] max_request_bytes, idle_timeout_ms, request_timeout_ms and max_connections must be greater than 0";
            return Err(name_file(config, e));
        }
        Ok(settings)
    }

    /// The shape of replies for names without a profile (`[serve]`).
    pub fn options(&self) -> Options {
        Options {
            strict_testing: self.strict_testing,
            postfix_tlsrpt: self.postfix_tlsrpt,
            no_servername: false,
        }
    }

    /// The shape of replies for each map name.
    pub fn replies(&self) -> Replies {
        Replies {
            global: self.options(),
            profiles: self.profiles.iter().map(|(k, v)| (k.as_bytes().into(), *v)).collect(),
        }
    }

    /// The `[serve]` keys that differ between `self` and `new` and that a reload does not apply
    /// (they shape listeners, connections and threads set up at start).
    pub fn not_reloaded(&self, new: &Self) -> Vec<&'static str> {
        let mut keys = Vec::new();
        let pairs = [
            ("listen", self.listen != new.listen),
            ("socket_mode", self.socket.mode != new.socket.mode),
            ("socket_owner", self.socket.owner != new.socket.owner),
            ("socket_group", self.socket.group != new.socket.group),
            ("max_request_bytes", self.max_request_bytes != new.max_request_bytes),
            ("idle_timeout_ms", self.idle_timeout_ms != new.idle_timeout_ms),
            ("request_timeout_ms", self.request_timeout_ms != new.request_timeout_ms),
            ("max_connections", self.max_connections != new.max_connections),
            ("refresh_interval_s", self.refresh_interval_s != new.refresh_interval_s),
            ("tlsrpt_socket", self.tlsrpt_socket != new.tlsrpt_socket),
            ("tlsrpt_socket_mode", self.tlsrpt_access.mode != new.tlsrpt_access.mode),
            ("tlsrpt_socket_owner", self.tlsrpt_access.owner != new.tlsrpt_access.owner),
            ("tlsrpt_socket_group", self.tlsrpt_access.group != new.tlsrpt_access.group),
            ("check_socket", self.check_socket != new.check_socket),
            ("check_socket_mode", self.check_access.mode != new.check_access.mode),
            ("check_socket_owner", self.check_access.owner != new.check_access.owner),
            ("check_socket_group", self.check_access.group != new.check_access.group),
        ];
        for (key, changed) in pairs {
            if changed {
                keys.push(key);
            }
        }
        keys
    }
}

/// `e`, preceded by the configuration file's name when there is one.
fn name_file(config: &Config, e: &str) -> String {
    match &config.source {
        Some(path) => format!("{}: {e}", path.display()),
        None => e.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Settings, String> {
        let config = Config::parse(text).map_err(|e| e.to_string())?;
        Settings::from_config(&config, None)
    }

    #[test]
    fn serve_section() {
        assert_eq!(parse("").unwrap().listen, DEFAULT_LISTEN);
        let c = parse(
            "[serve]\nlisten = \"unix:/tmp/s\"\nstrict_testing = true\npostfix_tlsrpt = true\nmax_request_bytes = 10\nidle_timeout_ms = 5\nmax_connections = 2\nrefresh_interval_s = 0\n",
        )
        .unwrap();
        assert!(c.strict_testing && c.postfix_tlsrpt);
        assert_eq!(c.listen, "unix:/tmp/s");
        assert_eq!((c.max_request_bytes, c.idle_timeout_ms, c.refresh_interval_s), (10, 5, 0));
        assert!(parse("[serve]\nidle_timeout_ms = 0\n").unwrap_err().contains("greater than 0"));
        assert_eq!(parse("").unwrap().request_timeout_ms, 10_000);
        assert_eq!(parse("[serve]\nrequest_timeout_ms = 250\n").unwrap().request_timeout_ms, 250);
        assert!(parse("[serve]\nrequest_timeout_ms = 0\n").is_err());
        assert!(parse("[serve]\nlisten_on = \"x\"\n").unwrap_err().contains("listen_on"));
    }

    #[test]
    fn socket_access() {
        let c = parse("[serve]\nsocket_mode = \"0660\"\nsocket_owner = \"0\"\nsocket_group = \"root\"\n")
            .unwrap();
        assert_eq!(
            c.socket,
            SocketAccess { mode: Some(0o660), owner: Some(0), group: Some(0), ..Default::default() }
        );
        assert_eq!(parse("[serve]\nsocket_mode = \"600\"\n").unwrap().socket.mode, Some(0o600));
        assert_eq!(parse("[serve]\nsocket_owner = \"root\"\n").unwrap().socket.owner, Some(0));
        assert!(!parse("").unwrap().socket.is_set());
        for bad in ["\"0668\"", "\"\"", "\"rw-rw----\"", "\"04755\"", "\"77777\"", "\"-1\""] {
            let e = parse(&format!("[serve]\nsocket_mode = {bad}\n")).unwrap_err();
            assert!(e.contains("[serve] socket_mode"), "{bad}: {e}");
        }
        let e = parse("[serve]\nsocket_owner = \"no-such-user-mtasts\"\n").unwrap_err();
        assert!(e.contains("[serve] socket_owner") && e.contains("no such user"), "{e}");
        let e = parse("[serve]\nsocket_group = \"no-such-group-mtasts\"\n").unwrap_err();
        assert!(e.contains("[serve] socket_group") && e.contains("no such group"), "{e}");
        assert!(parse("[serve]\nsocket_owner = \"\"\n").unwrap_err().contains("socket_owner"));
        assert!(parse("[serve]\nsocket_group = \"4294967295\"\n").unwrap_err().contains("socket_group"));
        // A number needs no account.
        assert_eq!(parse("[serve]\nsocket_group = \"54321\"\n").unwrap().socket.group, Some(54321));
    }

    #[test]
    fn tlsrpt_socket() {
        let c = parse("").unwrap();
        assert_eq!((c.tlsrpt_socket, c.tlsrpt_access.is_set()), (None, false));
        let c = parse(
            "[serve]\ntlsrpt_socket = \"/run/mtasts/tlsrpt.sock\"\ntlsrpt_socket_mode = \"0620\"\ntlsrpt_socket_group = \"0\"\n",
        )
        .unwrap();
        assert_eq!(c.tlsrpt_socket.as_deref(), Some(std::path::Path::new("/run/mtasts/tlsrpt.sock")));
        assert_eq!(
            (c.tlsrpt_access.mode, c.tlsrpt_access.group, c.tlsrpt_access.owner),
            (Some(0o620), Some(0), None)
        );
        assert!(!c.socket.is_set(), "the socketmap's keys are apart");
        let e = parse("[serve]\ntlsrpt_socket = \"run/tlsrpt.sock\"\n").unwrap_err();
        assert!(e.contains("[serve] tlsrpt_socket") && e.contains("absolute path"), "{e}");
        let e = parse("[serve]\ntlsrpt_socket_mode = \"rw\"\n").unwrap_err();
        assert!(e.contains("[serve] tlsrpt_socket_mode"), "{e}");
        let e = parse("[serve]\ntlsrpt_socket_group = \"no-such-group-mtasts\"\n").unwrap_err();
        assert!(e.contains("[serve] tlsrpt_socket_group") && e.contains("no such group"), "{e}");
        let e = parse("[serve]\ntlsrpt_socket_owner = \"no-such-user-mtasts\"\n").unwrap_err();
        assert!(e.contains("[serve] tlsrpt_socket_owner"), "{e}");
        assert_eq!(
            parse("").unwrap().not_reloaded(&parse("[serve]\ntlsrpt_socket = \"/x\"\n").unwrap()),
            ["tlsrpt_socket"]
        );
    }

    #[test]
    fn what_a_reload_does_not_change() {
        let old = parse("[serve]\nstrict_testing = false\n").unwrap();
        let new =
            parse("[serve]\nstrict_testing = true\nlisten = \"unix:/x\"\nmax_connections = 3\n").unwrap();
        assert_eq!(old.not_reloaded(&new), ["listen", "max_connections"]);
        assert!(old.not_reloaded(&old).is_empty());
    }

    #[test]
    fn metrics_listen() {
        assert_eq!(parse("").unwrap().metrics_listen, None);
        let config = Config::parse("[serve]\nmetrics_listen = \"inet:127.0.0.1:9461\"\n").unwrap();
        let s = Settings::from_config(&config, None).unwrap();
        assert_eq!(s.metrics_listen.as_deref(), Some("inet:127.0.0.1:9461"));
    }

    #[test]
    fn profiles() {
        let c = parse(
            "[serve]\nstrict_testing = true\n[serve.profile.postfix37]\n\
             [serve.profile.postfix310]\npostfix_tlsrpt = true\n\
             [serve.profile.old]\nservername = \"none\"\nstrict_testing = false\n",
        )
        .unwrap();
        let r = c.replies();
        let global = Options { strict_testing: true, ..Options::default() };
        assert_eq!(r.global, global);
        // A profile without keys is `[serve]` itself.
        assert_eq!(r.select(b"postfix37"), (global, true));
        assert_eq!(r.select(b"postfix310"), (Options { postfix_tlsrpt: true, ..global }, true));
        assert_eq!(
            r.select(b"old"),
            (Options { strict_testing: false, postfix_tlsrpt: false, no_servername: true }, true)
        );
        // Names without a profile: the `[serve]` options, reported as unknown.
        assert_eq!(r.select(b"postfix"), (global, false));
        assert_eq!(r.select(b"POSTFIX310"), (global, false));
        assert_eq!(r.select(b""), (global, false));
        // No profile at all: every name is as good as any other (today's behaviour).
        let plain = parse("[serve]\npostfix_tlsrpt = true\n").unwrap().replies();
        assert_eq!(plain.select(b"anything"), (Options { postfix_tlsrpt: true, ..Options::default() }, true));
        assert_eq!(
            parse("[serve.profile.x]\nservername = \"hostname\"\n").unwrap().profiles["x"],
            Options::default()
        );
    }

    #[test]
    fn bad_profiles_are_errors() {
        let e = parse("[serve.profile.p]\nservername = \"mx.example.com\"\n").unwrap_err();
        assert!(
            e.contains("[serve.profile.p] servername = \"mx.example.com\"") && e.contains("\"none\""),
            "{e}"
        );
        let e = parse("[serve.profile.p]\nservername = \"nexthop\"\n").unwrap_err();
        assert!(e.contains("servername"), "{e}");
        let e = parse("[serve.profile.p]\nstrict_test = true\n").unwrap_err();
        assert!(e.contains("strict_test"), "{e}");
        let e = parse("[serve.profile.p]\nlisten = \"unix:/x\"\n").unwrap_err();
        assert!(e.contains("listen"), "{e}");
        assert!(parse("[serve.profile.p]\npostfix_tlsrpt = \"yes\"\n").is_err());
        let e = parse("[serve.profile.\"a b\"]\n").unwrap_err();
        assert!(e.contains("[serve.profile.\"a b\"]") && e.contains("no spaces"), "{e}");
        assert!(parse("[serve.profile.\"\"]\n").unwrap_err().contains("not empty"));
        let mut config = Config::parse("[serve.profile.p]\nservername = \"x\"\n").unwrap();
        config.source = Some("/etc/mtasts/mtasts.toml".into());
        let e = Settings::from_config(&config, None).unwrap_err();
        assert!(e.starts_with("/etc/mtasts/mtasts.toml: [serve.profile.p] servername"), "{e}");
    }

    #[test]
    fn listen_flag_wins() {
        let config = Config::parse("[serve]\nlisten = \"unix:/tmp/s\"\n").unwrap();
        assert_eq!(Settings::from_config(&config, Some("inet:[::1]:25")).unwrap().listen, "inet:[::1]:25");
    }

    #[test]
    fn errors_name_the_file() {
        let mut config = Config::parse("[serve]\nmax_connections = 0\n").unwrap();
        config.source = Some("/etc/mtasts/mtasts.toml".into());
        let e = Settings::from_config(&config, None).unwrap_err();
        assert!(e.starts_with("/etc/mtasts/mtasts.toml: [serve] max_request_bytes"), "{e}");
    }
}
