//! Sources: everything that turns outside input into canonical events.
//!
//! [`line`] parses one log line (NDJSON, logfmt, regex) into an event with a
//! source's `fields`, `status_map` and `defaults`; [`file`] tails files and
//! hands the core [`SourceBatch`]es: parsed lines in order, with the
//! checkpoint that is true once they are applied, so the core commits both
//! in one store transaction. [`presets`] map each CI/CD tool's payloads;
//! [`webhook`] serves them at `/hooks/{source}`.

pub mod file;
pub mod line;
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
}
