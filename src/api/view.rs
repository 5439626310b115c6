//! What the API shows: one row per tracked key (its current status, or its
//! status at an instant folded from the audit trail) and the audit trail
//! itself. Pure functions of the tracker's keys or the store's history, so
//! the HTTP API, the admin socket and `relstat status` on a stopped agent
//! answer alike.
//!
//! # Snapshots (`at`)
//!
//! The history keeps, for every event, its event time (and the time it was
//! ordered at) and when relstat recorded it. Two questions, two axes:
//!
//! - [`Axis::Recorded`] (default): what relstat knew at `at`. The records
//!   with `recorded_at <= at` are replayed per key in the order they were
//!   recorded, honouring what the tracker decided then (a `late` record moved
//!   nothing; an approval held back moved nothing). At `at` = now this is
//!   the current view; a late event recorded after `at` does not rewrite it.
//! - [`Axis::Event`]: what we know now about the state at `at`. Every record
//!   with an ordering time `<= at`, late ones included, is replayed in the
//!   tracker's order (time, status rank, id).
//!
//! Finished at a snapshot: a terminal status; `deployed` superseded by a
//! newer release's `deployed` on the same (service, environment, site) in
//! the same snapshot; or no event for `stale_after` before `at`.

use foldhash::{HashMap, HashMapExt};

use serde::{Deserialize, Serialize};

use crate::detect::FinishReason;
use crate::event::{ActorType, Key, TimeMs, format_rfc3339};
use crate::model::Model;
use crate::store::{Store, StoreError};
use crate::track::{HistoryRecord, KeyState, Target};

/// Which time `at` is compared with (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Axis {
    #[default]
    Recorded,
    Event,
}

impl Axis {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "recorded" => Some(Self::Recorded),
            "event" => Some(Self::Event),
            _ => None,
        }
    }
}

/// Row filters; `None` matches everything. `environments` is a partner's
/// scope (any of them), on top of the `environment` filter.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Filter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    #[serde(skip)]
    pub environments: Option<Vec<String>>,
}

impl Filter {
    /// Whether rows of `key` may be shown (the status is checked apart).
    pub fn key(&self, key: &Key) -> bool {
        let eq = |f: &Option<String>, v: &str| f.as_deref().is_none_or(|f| f == v);
        eq(&self.release, &key.release)
            && eq(&self.service, &key.service)
            && eq(&self.environment, &key.environment)
            && eq(&self.site, &key.site)
            && self.in_scope(&key.environment)
    }

    /// Whether `key`'s (service, environment, site) may be shown, whatever
    /// its release.
    pub(crate) fn target(&self, key: &Key) -> bool {
        let eq = |f: &Option<String>, v: &str| f.as_deref().is_none_or(|f| f == v);
        eq(&self.service, &key.service)
            && eq(&self.environment, &key.environment)
            && eq(&self.site, &key.site)
            && self.in_scope(&key.environment)
    }

    pub fn in_scope(&self, environment: &str) -> bool {
        self.environments
            .as_ref()
            .is_none_or(|envs| envs.iter().any(|e| e == environment))
    }

    fn status(&self, status: &str) -> bool {
        self.status.as_deref().is_none_or(|s| s == status)
    }
}

/// One tracked key as the API shows it. Optional fields are left out when
/// unknown or redacted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    pub release: String,
    pub service: String,
    pub environment: String,
    pub site: String,
    pub status: String,
    /// Event time the current status was entered.
    pub entered_at: String,
    #[serde(skip)]
    pub entered_at_ms: TimeMs,
    /// Seconds from `entered_at` to the response's `generated_at` (or `at`);
    /// left out of the ETag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_in_status_seconds: Option<f64>,
    /// Event time of the last report applied.
    pub last_event_time: String,
    #[serde(skip)]
    pub last_event_time_ms: TimeMs,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_event_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_actor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_actor_type: Option<ActorType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    pub stuck: bool,
    pub finished: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_reason: Option<FinishReason>,
    /// In a gated environment: the approvals ledger's last decision for the
    /// key (`approved`, `rejected`, `revoked`) and who gave it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approver: Option<String>,
}

/// Fills each row's decision and approver from the gate's ledger.
pub fn with_approvals(rows: &mut [Row], model: &Model, approvals: &crate::detect::Approvals) {
    if model.gate.is_none() {
        return;
    }
    for r in rows {
        let key = crate::event::Key {
            release: r.release.clone(),
            service: r.service.as_str().into(),
            environment: r.environment.as_str().into(),
            site: r.site.as_str().into(),
        };
        if let Some(d) = crate::detect::last_decision(model, &key, approvals) {
            r.decision = Some(d.decision.as_str().to_string());
            r.approver = (!d.approver.is_empty()).then(|| d.approver.clone());
        }
    }
}

/// One audit-trail record as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryRow {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Event time (as the tool said).
    pub time: String,
    /// When relstat recorded it.
    pub recorded_at: String,
    pub release: String,
    pub service: String,
    pub environment: String,
    pub site: String,
    /// The status the key was in before (absent: first report, late, or held).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    pub to: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor_type: Option<ActorType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact: Option<String>,
    /// Sorted before the key's current event when it arrived: moved nothing.
    pub late: bool,
    /// Rules that fired on it (names only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anomalies: Option<Vec<String>>,
    /// A decision of the gate's approvals ledger (`approved`, `rejected`,
    /// `revoked`) from an approval source, and who gave it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approver: Option<String>,
}

impl HistoryRow {
    pub fn of(r: &HistoryRecord) -> Self {
        let e = &r.event;
        Self {
            id: Some(e.id.clone()),
            time: format_rfc3339(e.time),
            recorded_at: format_rfc3339(r.recorded_at),
            release: e.release.clone(),
            service: e.service.clone(),
            environment: e.environment.clone(),
            site: e.site.clone(),
            from: r.from.clone(),
            to: e.status.clone(),
            actor: Some(e.actor.clone()),
            actor_type: Some(e.actor_type),
            source: Some(e.source.clone()),
            reason: e.reason.clone(),
            version: e.version.clone(),
            commit: e.commit.clone(),
            artifact: e.artifact.clone(),
            late: r.late,
            anomalies: Some(r.anomalies.clone()),
            decision: r.decision.map(|d| d.as_str().to_string()),
            approver: r.decision.map(|_| e.actor.clone()),
        }
    }
}

/// Whether a key in `status`, entered at `entered_at`, is stuck at `now`.
fn stuck(model: &Model, env: &str, status: &str, entered_at: TimeMs, now: TimeMs) -> bool {
    model
        .index(status)
        .and_then(|i| model.stuck_after(i, env))
        .is_some_and(|limit| now - entered_at > limit.as_millis() as TimeMs)
}

/// A row as borrowed from the tracker's keys or from an owned [`Row`]: what
/// the renderer writes, without a copy of each string.
#[derive(Debug, Clone, Copy)]
pub struct RowRef<'a> {
    pub release: &'a str,
    pub service: &'a str,
    pub environment: &'a str,
    pub site: &'a str,
    pub status: &'a str,
    pub entered_at: TimeMs,
    pub last_event_time: TimeMs,
    pub last_event_id: Option<&'a str>,
    pub last_actor: Option<&'a str>,
    pub last_actor_type: Option<ActorType>,
    pub last_source: Option<&'a str>,
    pub last_reason: Option<&'a str>,
    pub version: Option<&'a str>,
    pub stuck: bool,
    pub finished_reason: Option<FinishReason>,
}

impl<'a> RowRef<'a> {
    /// The row of a tracked key; `now` is the agent's clock (for `stuck`).
    pub fn of(key: &'a Key, ks: &'a KeyState, model: &Model, now: TimeMs) -> Self {
        let finished = ks.finished.map(|f| f.reason);
        Self {
            release: &key.release,
            service: &key.service,
            environment: &key.environment,
            site: &key.site,
            status: &ks.status,
            entered_at: ks.entered_at,
            last_event_time: ks.last.time,
            last_event_id: Some(&ks.last.event_id),
            last_actor: Some(&ks.last.actor),
            last_actor_type: Some(ks.last.actor_type),
            last_source: Some(&ks.last.source),
            last_reason: ks.last.reason.as_deref(),
            version: ks.last.version.as_deref(),
            stuck: finished.is_none()
                && stuck(model, &key.environment, &ks.status, ks.entered_at, now),
            finished_reason: finished,
        }
    }

    /// An owned row, borrowed.
    pub fn of_row(r: &'a Row) -> Self {
        Self {
            release: &r.release,
            service: &r.service,
            environment: &r.environment,
            site: &r.site,
            status: &r.status,
            entered_at: r.entered_at_ms,
            last_event_time: r.last_event_time_ms,
            last_event_id: r.last_event_id.as_deref(),
            last_actor: r.last_actor.as_deref(),
            last_actor_type: r.last_actor_type,
            last_source: r.last_source.as_deref(),
            last_reason: r.last_reason.as_deref(),
            version: r.version.as_deref(),
            stuck: r.stuck,
            finished_reason: r.finished_reason,
        }
    }

    pub fn to_row(&self) -> Row {
        let s = |v: Option<&str>| v.map(str::to_string);
        Row {
            release: self.release.to_string(),
            service: self.service.to_string(),
            environment: self.environment.to_string(),
            site: self.site.to_string(),
            status: self.status.to_string(),
            entered_at: format_rfc3339(self.entered_at),
            entered_at_ms: self.entered_at,
            time_in_status_seconds: None,
            last_event_time: format_rfc3339(self.last_event_time),
            last_event_time_ms: self.last_event_time,
            last_event_id: s(self.last_event_id),
            last_actor: s(self.last_actor),
            last_actor_type: self.last_actor_type,
            last_source: s(self.last_source),
            last_reason: s(self.last_reason),
            version: s(self.version),
            stuck: self.stuck,
            finished: self.finished_reason.is_some(),
            finished_reason: self.finished_reason,
            decision: None,
            approver: None,
        }
    }
}

/// The current view, borrowed: one row per tracked key that `filter` lets
/// through, sorted by key. `now` is the agent's clock (for `stuck`).
pub fn current_refs<'a>(
    keys: impl Iterator<Item = (&'a Key, &'a KeyState)>,
    model: &Model,
    now: TimeMs,
    filter: &Filter,
) -> Vec<RowRef<'a>> {
    let mut rows: Vec<RowRef<'a>> = keys
        .filter(|(k, ks)| filter.key(k) && filter.status(&ks.status))
        .map(|(k, ks)| RowRef::of(k, ks, model, now))
        .collect();
    rows.sort_unstable_by(|a, b| {
        (a.release, a.service, a.environment, a.site).cmp(&(
            b.release,
            b.service,
            b.environment,
            b.site,
        ))
    });
    rows
}

/// The current view (see [`current_refs`]), owned.
pub fn current<'a>(
    keys: impl Iterator<Item = (&'a Key, &'a KeyState)>,
    model: &Model,
    now: TimeMs,
    filter: &Filter,
) -> Vec<Row> {
    current_refs(keys, model, now, filter)
        .iter()
        .map(RowRef::to_row)
        .collect()
}

fn sort_rows(rows: &mut [Row]) {
    rows.sort_unstable_by(|a, b| {
        (&a.release, &a.service, &a.environment, &a.site).cmp(&(
            &b.release,
            &b.service,
            &b.environment,
            &b.site,
        ))
    });
}

/// A key's state while folding its history.
struct Fold {
    status: String,
    entered_at: TimeMs,
    max_time: TimeMs,
    last: HistoryRecord,
}

/// Folds per key, in the order records are fed.
struct Folder<'m> {
    model: &'m Model,
    axis: Axis,
    at: TimeMs,
    keys: HashMap<Key, Fold>,
    /// Event axis: a key's records, held until its release is complete.
    pending: HashMap<Key, Vec<(HistoryRecord, bool)>>,
    /// Keys seen so far (to tell an approval held back from a first report).
    seen: HashMap<Key, ()>,
}

impl<'m> Folder<'m> {
    fn new(model: &'m Model, axis: Axis, at: TimeMs) -> Self {
        Self {
            model,
            axis,
            at,
            keys: HashMap::new(),
            pending: HashMap::new(),
            seen: HashMap::new(),
        }
    }

    /// Feeds one record, in recorded order within its key.
    fn feed(&mut self, r: HistoryRecord) {
        // A rejection or revocation of the gate's ledger moves no key.
        if self.model.index(&r.event.status).is_none() {
            return;
        }
        let key = r.event.key();
        // Not late and no `from` although the key had a report: an approval
        // the tracker held back (it did not move the key).
        let first = self.seen.insert(key.clone(), ()).is_none();
        let held = !r.late && r.from.is_none() && !first;
        match self.axis {
            Axis::Recorded => {
                if r.recorded_at > self.at || r.late || held {
                    return;
                }
                self.apply(key, r);
            }
            Axis::Event => {
                if r.order_time <= self.at {
                    self.pending.entry(key).or_default().push((r, held));
                }
            }
        }
    }

    fn apply(&mut self, key: Key, r: HistoryRecord) {
        match self.keys.get_mut(&key) {
            Some(f) => {
                if f.status != r.event.status {
                    f.status = r.event.status.clone();
                    f.entered_at = r.order_time;
                }
                f.max_time = r.order_time;
                f.last = r;
            }
            None => {
                self.keys.insert(
                    key,
                    Fold {
                        status: r.event.status.clone(),
                        entered_at: r.order_time,
                        max_time: r.order_time,
                        last: r,
                    },
                );
            }
        }
    }

    /// Event axis: replays the held records in the tracker's order.
    fn settle(&mut self) {
        let model = self.model;
        let rank = |s: &str| model.index(s).map_or(0, |i| model.state(i).rank);
        for (key, mut recs) in std::mem::take(&mut self.pending) {
            recs.sort_by(|(a, _), (b, _)| {
                (a.order_time, rank(&a.event.status), &a.event.id).cmp(&(
                    b.order_time,
                    rank(&b.event.status),
                    &b.event.id,
                ))
            });
            for (r, held) in recs {
                if !held {
                    self.apply(key.clone(), r);
                }
            }
        }
    }

    fn rows(mut self, stale_after: TimeMs, filter: &Filter) -> Vec<Row> {
        self.settle();
        let model = self.model;
        let at = self.at;
        let deployed = model.index("deployed");
        // The newest release resting in deployed per target (ties: the
        // greater release, as the tracker decides).
        let mut resting: HashMap<Target, (TimeMs, &str)> = HashMap::new();
        for (k, f) in &self.keys {
            if deployed.is_some() && model.index(&f.status) == deployed {
                let slot = resting
                    .entry(Target::of(k))
                    .or_insert((f.entered_at, &k.release));
                if (f.entered_at, k.release.as_str()) > *slot {
                    *slot = (f.entered_at, &k.release);
                }
            }
        }
        let mut rows: Vec<Row> = self
            .keys
            .iter()
            .filter(|(k, f)| filter.key(k) && filter.status(&f.status))
            .map(|(k, f)| {
                let idx = model.index(&f.status);
                let finished = if idx.is_some_and(|i| model.is_terminal(i)) {
                    Some(FinishReason::Terminal)
                } else if deployed.is_some()
                    && idx == deployed
                    && resting
                        .get(&Target::of(k))
                        .is_some_and(|(_, r)| *r != k.release)
                {
                    Some(FinishReason::Superseded)
                } else if at - f.max_time > stale_after {
                    Some(FinishReason::Stale)
                } else {
                    None
                };
                let e = &f.last.event;
                Row {
                    release: k.release.clone(),
                    service: k.service.to_string(),
                    environment: k.environment.to_string(),
                    site: k.site.to_string(),
                    status: f.status.clone(),
                    entered_at: format_rfc3339(f.entered_at),
                    entered_at_ms: f.entered_at,
                    time_in_status_seconds: None,
                    last_event_time: format_rfc3339(e.time),
                    last_event_time_ms: e.time,
                    last_event_id: Some(e.id.clone()),
                    last_actor: Some(e.actor.clone()),
                    last_actor_type: Some(e.actor_type),
                    last_source: Some(e.source.clone()),
                    last_reason: e.reason.clone(),
                    version: e.version.clone(),
                    stuck: finished.is_none()
                        && stuck(model, &k.environment, &f.status, f.entered_at, at),
                    finished: finished.is_some(),
                    finished_reason: finished,
                    decision: None,
                    approver: None,
                }
            })
            .collect();
        sort_rows(&mut rows);
        rows
    }
}

/// The rows as they stood at `at` on `axis`, folded from the store's
/// history (see the module doc).
/// The recorded axis reads only the rows recorded up to `at` (through the
/// recorded-time index); the event axis reads every row.
pub fn snapshot(
    store: &Store,
    model: &Model,
    stale_after: TimeMs,
    at: TimeMs,
    axis: Axis,
    filter: &Filter,
) -> Result<Vec<Row>, StoreError> {
    let mut folder = Folder::new(model, axis, at);
    let recorded_until = (axis == Axis::Recorded).then_some(at);
    store.history_scan(recorded_until, |r| {
        // Supersession looks at other releases on the same target, so only
        // the target filters (and the scope) apply here, not the release.
        if filter.target(&r.event.key()) {
            folder.feed(r);
        }
    })?;
    Ok(folder.rows(stale_after, filter))
}

/// The audit trail of `release` as shown: records that `filter` lets
/// through, up to `at` on `axis` when given, in recorded order.
pub fn history(
    store: &Store,
    release: &str,
    at: Option<(TimeMs, Axis)>,
    filter: &Filter,
) -> Result<Vec<HistoryRow>, StoreError> {
    Ok(store
        .history(release)?
        .iter()
        .filter(|r| filter.key(&r.event.key()) && filter.status(&r.event.status))
        .filter(|r| match at {
            None => true,
            Some((t, Axis::Recorded)) => r.recorded_at <= t,
            Some((t, Axis::Event)) => r.order_time <= t,
        })
        .map(HistoryRow::of)
        .collect())
}
