//! `[serve]`: the settings of `mtasts serve`, with their defaults and checks.
//!
//! The library's configuration parser accepts the `[serve]` keys (one file serves every
//! front-end, and a misspelt key is an error wherever the file is read) but gives them no
//! meaning: that is done here, for this front-end only.

use mtasts::config::Config;

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
    /// Where to serve Prometheus metrics (`inet:HOST:PORT`); `None`: not served.
    pub metrics_listen: Option<String>,
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
            metrics_listen: s.metrics_listen.clone(),
        };
        if settings.max_request_bytes == 0
            || settings.idle_timeout_ms == 0
            || settings.request_timeout_ms == 0
            || settings.max_connections == 0
        {
            let e = "[serve] max_request_bytes, idle_timeout_ms, request_timeout_ms and max_connections must be greater than 0";
            return Err(match &config.source {
                Some(path) => format!("{}: {e}", path.display()),
                None => e.to_owned(),
            });
        }
        Ok(settings)
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
    fn metrics_listen() {
        assert_eq!(parse("").unwrap().metrics_listen, None);
        let config = Config::parse("[serve]\nmetrics_listen = \"inet:127.0.0.1:9461\"\n").unwrap();
        let s = Settings::from_config(&config, None).unwrap();
        assert_eq!(s.metrics_listen.as_deref(), Some("inet:127.0.0.1:9461"));
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
