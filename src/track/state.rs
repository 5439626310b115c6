//! What the tracker remembers per key, and the audit-trail record of every
//! event. Both are stored as they are (serde) in the embedded store.

use serde::{Deserialize, Serialize};

use crate::detect::{FinishReason, KeyMemory, LastReport};
use crate::event::{Event, Key, TimeMs};

/// The state of one tracked key (release, service, environment, site).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyState {
    /// Current status (a state id).
    pub status: String,
    /// Event time the current status was entered.
    pub entered_at: TimeMs,
    /// The greatest (time, rank, id) applied: what a new event must beat.
    pub max_time: TimeMs,
    pub max_rank: u32,
    pub max_id: String,
    /// Who reported the current status last.
    pub last: LastReport,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished: Option<Finished>,
    /// Start of an unresolved status-conflict episode (MTTSR cause conflict).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conflict_since: Option<TimeMs>,
    #[serde(default)]
    pub memory: KeyMemory,
}

impl KeyState {
    pub fn first(ev: &Event, status: &str, rank: u32, at: TimeMs) -> Self {
        Self {
            status: status.to_string(),
            entered_at: at,
            max_time: at,
            max_rank: rank,
            max_id: ev.id.clone(),
            last: LastReport::of(ev),
            finished: None,
            conflict_since: None,
            memory: KeyMemory::default(),
        }
    }
}

/// When (agent clock) and why a key finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finished {
    pub at: TimeMs,
    pub reason: FinishReason,
}

/// One event of the audit trail, with both time axes: event time (in the
/// event) and when relstat recorded it, so "what was known at T" can be
/// answered later.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryRecord {
    pub event: Event,
    pub recorded_at: TimeMs,
    /// The time it was ordered at (differs from event.time under clock skew).
    pub order_time: TimeMs,
    /// The status it moved the key from (None: first report, or late).
    #[serde(default)]
    pub from: Option<String>,
    /// Sorted before the key's current event: kept, moved nothing.
    #[serde(default)]
    pub late: bool,
    /// Rules that fired on it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub anomalies: Vec<String>,
    /// The gate's ledger took it as this decision (its actor is the
    /// approver).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<crate::detect::Decision>,
}

/// Where a release is deployed: supersession and time to restore are per
/// (service, environment, site).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Target {
    pub service: String,
    pub environment: String,
    pub site: String,
}

impl Target {
    pub fn of(key: &Key) -> Self {
        Self {
            service: key.service.clone(),
            environment: key.environment.clone(),
            site: key.site.clone(),
        }
    }
}
