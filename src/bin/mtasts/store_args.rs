//! `--config` and `--cache`: the options of every subcommand that reads the configuration and
//! the persistent store, and opening what they name.

use std::path::PathBuf;
use std::sync::Arc;

use mtasts::cache::{PolicyStore, ReportStores};
use mtasts::config::Config;

/// `--config` and `--cache`: the options of every subcommand that reads the configuration and
/// the persistent store.
#[derive(clap::Args, Debug)]
pub struct StoreArgs {
    /// Configuration file (default: $MTASTS_CONFIG, else /etc/mtasts/mtasts.toml if present).
    #[arg(long, value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
    /// Policy store to use instead of [cache] path.
    #[arg(long, value_name = "PATH", global = true)]
    pub cache: Option<String>,
}

impl StoreArgs {
    /// The configuration, with `--cache` in place of `[cache] path`; `[log]` applied.
    pub fn load(&self) -> Result<Config, String> {
        let mut config = Config::load(self.config.as_deref()).map_err(|e| e.to_string())?;
        mtasts::logging::apply(&config.log);
        if let Some(cache) = &self.cache {
            config.cache.path = cache.clone();
        }
        Ok(config)
    }

    /// Opens the store named by the configuration (and `--cache`), which must be persistent.
    pub fn open_store(&self) -> Result<(Config, Arc<dyn PolicyStore>), String> {
        let config = self.load()?;
        match config.open_store().map_err(|e| e.to_string())? {
            Some(stores) => Ok((config, stores.policies)),
            None => Err(NO_STORE.into()),
        }
    }

    /// Opens the TLSRPT counts and report outbox of the store named by the configuration (and
    /// `--cache`); refused at once for a store that keeps none.
    pub fn open_report_stores(&self) -> Result<(Config, ReportStores), String> {
        let config = self.load()?;
        match config.open_report_stores().map_err(|e| e.to_string())? {
            Some(stores) => Ok((config, stores)),
            None => Err(NO_STORE.into()),
        }
    }
}

const NO_STORE: &str = "[cache] path is \"memory\": there is no persistent store to read";
