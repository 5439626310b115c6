//! The way in: what every producer (file, poll and Kubernetes sources,
//! webhooks) hands the core, and the handle it hands it through.
//!
//! A leaf module: sources and the core both import it, it imports neither.

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
}
