//! The spool beyond the live outbox: air-gapped sync (SPEC section 7).
//! A site with no path to the SIEM exports its outbox as a signed bundle
//! ([`bundle`]); a connected relay verifies and imports it exactly once.
//! Site key pairs come from [`keys`].

pub mod bundle;
pub mod keys;

use std::path::PathBuf;

use crate::config::Config;

/// What export and import need from the configuration.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// `[agent] site`: written into exported manifests; must not be empty to export.
    pub site: String,
    /// `[agent] hostname` (default: the system host name).
    pub host: String,
    /// `[spool] signing_key_file`: this site's private key (export).
    pub signing_key_file: Option<PathBuf>,
    /// `[spool] trusted_keys_dir`: `<site>.pub` per trusted site (import).
    pub trusted_keys_dir: Option<PathBuf>,
}

impl Settings {
    pub fn from_config(cfg: &Config) -> Self {
        Self {
            site: cfg.agent.site.clone(),
            host: cfg
                .agent
                .hostname
                .clone()
                .unwrap_or_else(crate::cli::hostname),
            signing_key_file: cfg.spool.signing_key_file.clone(),
            trusted_keys_dir: cfg.spool.trusted_keys_dir.clone(),
        }
    }
}
