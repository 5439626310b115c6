//! What the tracker remembers per key, and the audit-trail record of every
//! event. Both are stored as they are (serde) in the embedded store.

use serde::{Deserialize, Serialize};

use crate::detect::{FinishReason, KeyMemory, LastReport};
use crate::event::{Event, Key, TimeMs};
use crate::sym::Sym;

/// The state of one tracked key (release, service, environment, site).
///
/// Compact (issue 23): the status and the last reporter's actor and source
/// are interned ([`Sym`]), and `max_id` is kept only when it differs from
/// `last.event_id` (it never does once the tracker moved the key; a state
/// read from an older store may). Its serde form is that of the plain
/// struct it replaced ([`KeyStateForm`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "KeyStateForm", into = "KeyStateForm")]
pub struct KeyState {
    /// Current status (a state id).
    pub status: Sym,
    /// Event time the current status was entered.
    pub entered_at: TimeMs,
    /// The greatest (time, rank, id) applied: what a new event must beat.
    pub max_time: TimeMs,
    pub max_rank: u32,
    /// The id of the greatest, when it is not `last.event_id`: read it with
    /// [`KeyState::max_id`], set it with [`KeyState::set_max_id`].
    pub(super) max_id: Option<Box<str>>,
    /// Who reported the current status last.
    pub last: LastReport,
    pub finished: Option<Finished>,
    /// Start of an unresolved status-conflict episode (MTTSR cause conflict).
    pub conflict_since: Option<TimeMs>,
    pub memory: KeyMemory,
}

impl KeyState {
    pub fn first(ev: &Event, status: &str, rank: u32, at: TimeMs) -> Self {
        Self {
            status: Sym::new(status),
            entered_at: at,
            max_time: at,
            max_rank: rank,
            max_id: None,
            last: LastReport::of(ev),
            finished: None,
            conflict_since: None,
            memory: KeyMemory::default(),
        }
    }

    /// The id of the greatest (time, rank, id) applied.
    pub fn max_id(&self) -> &str {
        self.max_id.as_deref().unwrap_or(&self.last.event_id)
    }

    /// Sets the id of the greatest (time, rank, id) applied; set `last`
    /// first (it is kept only when it differs from `last.event_id`).
    pub fn set_max_id(&mut self, id: &str) {
        self.max_id = (id != self.last.event_id).then(|| id.into());
    }
}

/// The serde form of a [`KeyState`] (JSON rows of store schemas 1 to 7,
/// tests): every field spelled out, as before the state was compacted.
#[derive(Serialize, Deserialize)]
struct KeyStateForm {
    status: Sym,
    entered_at: TimeMs,
    max_time: TimeMs,
    max_rank: u32,
    max_id: String,
    last: LastReport,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    finished: Option<Finished>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    conflict_since: Option<TimeMs>,
    #[serde(default)]
    memory: KeyMemory,
}

impl From<KeyStateForm> for KeyState {
    fn from(f: KeyStateForm) -> Self {
        let mut s = Self {
            status: f.status,
            entered_at: f.entered_at,
            max_time: f.max_time,
            max_rank: f.max_rank,
            max_id: None,
            last: f.last,
            finished: f.finished,
            conflict_since: f.conflict_since,
            memory: f.memory,
        };
        s.set_max_id(&f.max_id);
        s
    }
}

impl From<KeyState> for KeyStateForm {
    fn from(s: KeyState) -> Self {
        Self {
            max_id: s.max_id().to_string(),
            status: s.status,
            entered_at: s.entered_at,
            max_time: s.max_time,
            max_rank: s.max_rank,
            last: s.last,
            finished: s.finished,
            conflict_since: s.conflict_since,
            memory: s.memory,
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
    pub service: Sym,
    pub environment: Sym,
    pub site: Sym,
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
