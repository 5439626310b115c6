//! Sources: everything that turns outside input into canonical events.
//!
//! [`fields`] are the canonical fields and their mapping (a source's
//! `defaults` and `status_map`), which every source ends with; [`line`]
//! parses one log line (NDJSON, logfmt, regex) into them; [`file`] tails files and
//! hands the core [`SourceBatch`]es: parsed lines in order, with the
//! checkpoint that is true once they are applied, so the core commits both
//! in one store transaction. [`presets`] map each CI/CD tool's payloads;
//! [`webhook`] serves them at `/hooks/{source}`; [`poll`] asks the tools'
//! APIs with the same presets; [`kubernetes`] watches Deployment rollouts.

pub mod fields;
pub mod file;
pub mod kubernetes;
pub mod line;
pub mod poll;
pub mod presets;
pub mod timefmt;
pub mod webhook;

use crate::event::{Event, InputResult};

/// One input line or payload, as the core must account for it.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    /// Parsed: the tracker decides accepted, late or duplicate.
    Event(Box<Event>),
    /// Rejected before the tracker: invalid, skipped or unmapped.
    Rejected(InputResult),
}

/// What a source sends to the core in one go.
#[derive(Debug, Default)]
pub struct SourceBatch {
    pub source: String,
    pub items: Vec<Item>,
    /// (checkpoint name, bytes) describing the source's position after these items.
    pub checkpoint: Option<(String, Vec<u8>)>,
    /// Errors to count (`relstat_source_errors_total{kind}`).
    pub errors: Vec<&'static str>,
    /// The source has read everything available (its backlog) with this batch.
    pub caught_up: bool,
    /// Poll sources: how long the poll behind this batch took (seconds).
    pub poll_seconds: Option<f64>,
    /// Payloads of these items that came out unmapped or invalid (webhook
    /// and poll sources), committed with them; entries a replay marks.
    pub dead_letters: crate::dlq::DeadLetters,
}

/// Starts the thread of a poll or kubernetes source (the agent's wiring).
pub fn poll_thread(
    s: &crate::config::SourceConfig,
    model: &crate::model::Model,
    cfg: &crate::config::Config,
    checkpoints: &std::collections::BTreeMap<String, Vec<u8>>,
    send: file::Sender,
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
            .spawn(move || k.run(send, stop, once))
            .map_err(|e| e.to_string());
    }
    let parser =
        presets::PresetParser::new(s, model, &cfg.agent.site).map_err(|e| e.to_string())?;
    let cp = checkpoints.get(&poll::checkpoint_name(&s.name));
    let p =
        poll::PollSource::new(s, parser, cp.map(|v| v.as_slice())).map_err(|e| e.to_string())?;
    spawn
        .spawn(move || p.run(send, stop, once))
        .map_err(|e| e.to_string())
}
