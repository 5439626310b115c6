//! The spool beyond the live outbox: air-gapped sync (docs/bundles.md).
//! A site with no path to the SIEM exports its outbox as a signed bundle
//! ([`bundle`]); a connected relay verifies and imports it exactly once.
//! Site key pairs come from [`keys`]; [`relay`] feeds imported transition
//! records into the relay's own tracker.

pub mod bundle;
pub mod keys;
pub mod outbox;
pub mod relay;

use std::path::PathBuf;

use crate::config::{Config, WhenFull};

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
    /// `[spool] track_imports`: imported transition records feed the tracker.
    pub track_imports: bool,
    /// `[spool] max_bytes` and `when_full`, applied to what an import adds;
    /// `None`: no limit.
    pub limit: Option<(u64, WhenFull)>,
    /// `[notify] imported = true`: the notifications tracked imports cause,
    /// queued in each chunk's transaction; `None`: imports notify nothing.
    pub notify: Option<crate::notifications::Router>,
}

impl Settings {
    pub fn from_config(cfg: &Config) -> Self {
        Self {
            site: cfg.agent.site.clone(),
            host: cfg.agent.host(),
            signing_key_file: cfg.spool.signing_key_file.clone(),
            trusted_keys_dir: cfg.spool.trusted_keys_dir.clone(),
            track_imports: cfg.spool.track_imports,
            limit: Some((cfg.spool.max_bytes.as_u64(), cfg.spool.when_full)),
            notify: crate::notifications::Router::from_config(cfg).filter(|r| r.imported),
        }
    }
}
