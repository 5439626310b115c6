//! Sources: everything that turns outside input into canonical events.
//!
//! [`fields`] are the canonical fields and their mapping (a source's
//! `defaults` and `status_map`), which every source ends with; [`line`]
//! parses one log line (NDJSON, logfmt, regex) into them; [`file`] tails
//! files and hands the core [`SourceBatch`]es through
//! [`crate::ingest::Ingest`]: parsed lines in order, with the checkpoint that
//! is true once they are applied, so the core commits both in one store
//! transaction. Sources know nothing of the core, the store or the runtime
//! (lib.rs, `# Layout`). [`presets`] map each CI/CD tool's payloads;
//! [`webhook`] serves them at `/hooks/{source}`; [`poll`] asks the tools'
//! APIs with the same presets; [`kubernetes`] watches Deployment rollouts.

pub mod fields;
pub mod file;
mod jsonpick;
pub mod kubernetes;
pub mod line;
pub mod poll;
pub mod presets;
pub mod timefmt;
pub mod webhook;

pub use crate::ingest::{Item, SourceBatch};

/// Starts the thread of a poll or kubernetes source (the agent's wiring).
pub fn poll_thread(
    s: &crate::config::SourceConfig,
    model: &crate::model::Model,
    cfg: &crate::config::Config,
    checkpoints: &std::collections::BTreeMap<String, Vec<u8>>,
    ingest: crate::ingest::Ingest,
    stop: &std::sync::Arc<std::sync::atomic::AtomicBool>,
    once: bool,
) -> Result<std::thread::JoinHandle<()>, String> {
    let stop = stop.clone();
    let spawn = std::thread::Builder::new().name(format!("source-{}", s.name));
    if s.kind == crate::config::SourceType::Kubernetes {
        let parser =
            presets::PresetParser::with_preset(s, &kubernetes::PRESET, model, &cfg.agent.site)
                .map_err(|e| e.to_string())?;
        let cp = checkpoints.get(&kubernetes::checkpoint_name(&s.name));
        let k = kubernetes::KubeSource::new(s, parser, cp.map(|v| v.as_slice()))
            .map_err(|e| e.to_string())?;
        return spawn
            .spawn(move || k.run(ingest, stop, once))
            .map_err(|e| e.to_string());
    }
    let parser =
        presets::PresetParser::new(s, model, &cfg.agent.site).map_err(|e| e.to_string())?;
    let cp = checkpoints.get(&poll::checkpoint_name(&s.name));
    let p =
        poll::PollSource::new(s, parser, cp.map(|v| v.as_slice())).map_err(|e| e.to_string())?;
    spawn
        .spawn(move || p.run(ingest, stop, once))
        .map_err(|e| e.to_string())
}
