//! The tracker: the one owner of per-key state. It applies canonical events
//! with event-time semantics (docs/events.md, docs/metrics.md), calls the anomaly
//! rules, and says what happened as [`Effect`]s (for the metrics sink) and as
//! a [`Batch`] of writes (for the store's one transaction per input batch).
//!
//! Ordering: a key's current status is that of its event with the greatest
//! (time, status rank, id), so the final status does not depend on arrival
//! order. An event that sorts before the current one is `late`: kept in the
//! history, it moves nothing. Durations are event-time differences. The
//! agent's clock is passed in (`now`) so tests and `replay` choose it.
//!
//! The gate's approvals ledger lives here too: every decision from an
//! approval source (`approved`, and the ledger-only `rejected` and
//! `revoked`; late ones included) is recorded per (release, service) with
//! its environment, approver, source and time, persisted in the same batch.
//! An approval for a key that has already been `in_progress` or `deployed`
//! is accepted and kept in the history but does not move the key (the
//! approval is paperwork catching up, not the release going back), in any
//! environment; a rejection or revocation never moves a key unless the
//! model has such a state.

pub mod codec;
pub mod readiness;
pub mod rollup;
mod state;

pub use state::{Finished, HistoryRecord, KeyState, Target};

use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use std::sync::Arc;

use crate::config::{Config, Forward};
use crate::detect::{
    Anomaly, Approvals, Change, ChangeKind, Detectors, FinishReason, LastReport, RuleId, Ruling,
    Stages,
};
use crate::event::{Event, InputResult, Key, TimeMs};
use crate::model::{Model, StateIdx};
use crate::sym::Sym;

/// Why a status episode was hard to resolve (`relstat_status_resolution_seconds{cause}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    Stuck,
    Conflict,
}

impl Cause {
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Stuck => "stuck",
            Cause::Conflict => "conflict",
        }
    }
}

/// DORA outcome of a status change (`relstat_deployments_total{outcome}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failure,
    Rollback,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
            Outcome::Rollback => "rollback",
        }
    }
}

/// Something the sinks must reflect. Emitted in order; drained with
/// [`Tracker::take_effects`]. A batch of a few thousand lines holds its
/// effects until it is committed, so the rare large variant (`Anomaly`) is
/// boxed to keep every other effect small.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    Input {
        source: String,
        result: InputResult,
    },
    /// The key's current status (per-release series).
    Status {
        key: Key,
        status: Sym,
        since: TimeMs,
    },
    /// The key finished at `at` (agent clock): its series expire later.
    Finished {
        key: Key,
        at: TimeMs,
    },
    /// A finished key got a later event and is open again.
    Reopened {
        key: Key,
    },
    /// The key was forgotten (history retention): drop any series left.
    Forgotten {
        key: Key,
    },
    Transition {
        environment: String,
        from: String,
        to: String,
    },
    /// Time spent in `status`, observed when it was left.
    Duration {
        key: Key,
        status: String,
        secs: f64,
    },
    Resolution {
        key: Key,
        status: String,
        cause: Cause,
        secs: f64,
    },
    Deployment {
        key: Key,
        outcome: Outcome,
    },
    LeadTime {
        key: Key,
        secs: f64,
    },
    Restore {
        key: Key,
        secs: f64,
    },
    Anomaly(Box<Anomaly>),
    /// Open keys past their status's stuck_after, by (environment, status);
    /// replaces the previous counts.
    StuckCounts(Vec<((String, String), u64)>),
    /// Every rollup (release × environment), from the periodic check when
    /// one changed; replaces the previous ones.
    Rollups(Vec<Arc<rollup::Summary>>),
    /// An event was recorded (accepted or late) at `recorded_at`, agent's
    /// clock: its delay is `recorded_at - event_time`.
    Delay {
        source: String,
        site: String,
        event_time: TimeMs,
        recorded_at: TimeMs,
    },
    /// A relay imported a site's events at `at`; the newest is dated
    /// `newest_event`.
    SiteSync {
        site: String,
        at: TimeMs,
        newest_event: TimeMs,
    },
}

/// Writes for the store, all in one transaction with the input that caused them.
#[derive(Debug, Default)]
pub struct Batch {
    /// The dirty keys' states, encoded for the store.
    pub keys: codec::KeyRows,
    pub removed_keys: Vec<Key>,
    pub history: Vec<HistoryRecord>,
    /// Seen event ids (128-bit hashes) with the agent time they were seen.
    pub seen: Vec<(u128, TimeMs)>,
    /// Drop seen ids recorded before this time (dedupe window passed).
    pub seen_purge_before: Option<TimeMs>,
    /// Drop history recorded before this time (history retention).
    pub history_purge_before: Option<TimeMs>,
    /// SIEM records for the outbox.
    pub outbox: Vec<Anomaly>,
    /// Open restore episodes, when they changed.
    pub failing: Option<Vec<(Target, TimeMs)>>,
    /// The rollups (release, environment) reported stuck and not complete
    /// since, when they changed.
    pub rollups_stuck: Option<Vec<(String, String)>>,
    /// Approvals ledger entries that changed: (release, service, every
    /// decision kept for them).
    pub approvals: Vec<(String, String, Vec<Ruling>)>,
}

/// The tracker's settings in the units it computes with.
#[derive(Debug, Clone)]
pub struct Settings {
    pub max_future: TimeMs,
    pub dedupe_window: TimeMs,
    pub stale_after: TimeMs,
    pub history_retention: TimeMs,
    /// Finished keys kept in memory (and in the store's key table): beyond
    /// this the ones finished longest ago are forgotten at the next check,
    /// whatever `stale_after` says (`[tracking] max_tracked`), so
    /// releases flowing to `complete` do not grow the agent. Unlimited in
    /// `replay`.
    pub max_finished: usize,
    /// Event ids remembered for duplicate detection: beyond this the oldest
    /// are forgotten at the next check, even within `dedupe_window`
    /// ([`SEEN_PER_KEY`] × `max_tracked`; unlimited in `replay`).
    pub max_seen: usize,
    /// Build store batches (history, dirty keys). `replay` turns it off.
    pub persist: bool,
    /// What goes into the outbox: nothing, anomalies, or every transition too.
    pub outbox: OutboxMode,
}

/// Event ids remembered per tracked key (`max_tracked`): a release key
/// sees four to eight statuses, and duplicates come soon after the
/// original (a webhook retried, a poll overlapping, a file read again).
pub const SEEN_PER_KEY: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboxMode {
    Off,
    Anomalies,
    All,
}

impl Settings {
    pub fn from_config(cfg: &Config, persist: bool) -> Self {
        let ms = |d: std::time::Duration| d.as_millis() as TimeMs;
        let outbox = match (&cfg.siem, cfg.spool.enabled) {
            (Some(s), _) if s.forward == Forward::All => OutboxMode::All,
            (Some(_), _) | (None, true) => OutboxMode::Anomalies,
            (None, false) => OutboxMode::Off,
        };
        Self {
            max_future: ms(cfg.tracking.max_future),
            dedupe_window: ms(cfg.tracking.dedupe_window),
            stale_after: ms(cfg.tracking.stale_after),
            history_retention: ms(cfg.tracking.history_retention),
            // `replay` reads a finite input and reports every key: no caps.
            max_finished: if persist {
                cfg.tracking.max_tracked
            } else {
                usize::MAX
            },
            max_seen: if persist {
                cfg.tracking.max_tracked.saturating_mul(SEEN_PER_KEY)
            } else {
                usize::MAX
            },
            persist,
            outbox,
        }
    }
}

/// Indices of the states DORA and supersession are defined on; a custom
/// model without them simply gets no DORA series.
#[derive(Debug, Clone, Copy)]
struct Known {
    deployed: Option<StateIdx>,
    failed: Option<StateIdx>,
    rolled_back: Option<StateIdx>,
    in_progress: Option<StateIdx>,
    paused: Option<StateIdx>,
    complete: Option<StateIdx>,
}

impl Known {
    fn new(m: &Model) -> Self {
        Self {
            deployed: m.index("deployed"),
            failed: m.index("failed"),
            rolled_back: m.index("rolled_back"),
            in_progress: m.index("in_progress"),
            paused: m.index("paused"),
            complete: m.index("complete"),
        }
    }
    fn is(s: Option<StateIdx>, i: StateIdx) -> bool {
        s == Some(i)
    }

    /// The DORA outcome of a move `from` -> `to`, if it counts as one
    /// (docs/metrics.md, relstat_deployments_total).
    fn outcome(&self, from: StateIdx, to: StateIdx) -> Option<Outcome> {
        if Self::is(self.deployed, to) {
            return Some(Outcome::Success);
        }
        if !(Self::is(self.failed, to) || Self::is(self.rolled_back, to)) {
            return None;
        }
        if Self::is(self.in_progress, from) || Self::is(self.paused, from) {
            Some(Outcome::Failure)
        } else if Self::is(self.deployed, from) || Self::is(self.complete, from) {
            Some(Outcome::Rollback)
        } else {
            // failed -> rolled_back remediates a counted failure; other
            // starts (scheduled -> failed) never reached the environment.
            None
        }
    }
}

pub struct Tracker {
    model: Arc<Model>,
    detect: Detectors,
    settings: Settings,
    known: Known,
    /// Boxed: a table sized for growth holds ~1.6 empty buckets per key,
    /// and a bucket of `Key` + pointer is 104 bytes where one holding the
    /// ~370-byte state inline was 470 (7.5 MiB for 10,000 keys, now 4.6).
    keys: HashMap<Key, Box<KeyState>>,
    /// Event ids seen within the dedupe window, by the low 64 bits of their
    /// 128-bit hash (the store keeps all 128): 16 bytes a bucket instead
    /// of 32, 2 MiB less at the cap of 80,000 ids. A new id matches one of
    /// 80,000 others by chance with odds of ~4 × 10^-15.
    seen: HashMap<u64, TimeMs>,
    /// The key resting in `deployed` for each (service, environment, site).
    deployed: HashMap<Target, Key>,
    /// Open restore episodes: when the first unrestored failure happened.
    failing: HashMap<Target, TimeMs>,
    failing_dirty: bool,
    /// The gate's ledger: the decisions per (release, service).
    approvals: Approvals,
    /// skipped_stage's ledger of deployments per stage, derived from the
    /// keys (rebuilt at start, nothing stored of its own).
    stages: Stages,
    /// `[rollups]`.
    rollups: crate::config::RollupsConfig,
    /// `[readiness]`.
    readiness: crate::config::ReadinessConfig,
    /// The rollups, kept as keys change.
    rollup_index: rollup::Index,
    /// The index is filled from the keys at the next check instead of as
    /// events arrive ([`Tracker::defer_rollups`]).
    rollups_deferred: bool,
    /// Rollups (release, environment) whose `stuck` finding was made and
    /// that were not complete since: once per episode, remembered across
    /// restarts (the store's `meta`).
    rollups_stuck: HashSet<(Arc<str>, Arc<str>)>,
    rollups_stuck_dirty: bool,
    dirty: HashSet<Key>,
    batch: Batch,
    effects: Vec<Effect>,
}

/// The hash under which an event id is remembered.
pub fn id_hash(id: &str) -> u128 {
    xxhash_rust::xxh3::xxh3_128(id.as_bytes())
}

impl Tracker {
    pub fn new(model: Arc<Model>, detect: Detectors, settings: Settings) -> Self {
        let known = Known::new(&model);
        Self {
            model,
            detect,
            settings,
            known,
            keys: HashMap::new(),
            seen: HashMap::new(),
            deployed: HashMap::new(),
            failing: HashMap::new(),
            failing_dirty: false,
            approvals: Approvals::new(),
            stages: Stages::default(),
            rollups: Default::default(),
            readiness: Default::default(),
            rollup_index: rollup::Index::default(),
            rollups_deferred: false,
            rollups_stuck: HashSet::new(),
            rollups_stuck_dirty: false,
            dirty: HashSet::new(),
            batch: Batch::default(),
            effects: Vec::new(),
        }
    }

    /// The tracker a configuration describes: its model, its rules (records
    /// carry `[agent] hostname`, default the system's) and its settings.
    pub fn from_config(
        cfg: &Config,
        persist: bool,
    ) -> Result<Self, Vec<crate::model::ModelProblem>> {
        let model = Arc::new(Model::from_config(&cfg.model)?);
        let host = cfg.agent.host();
        let detect = Detectors::new(&cfg.anomalies, &host);
        let mut t = Self::new(model, detect, Settings::from_config(cfg, persist));
        t.rollups = cfg.rollups.clone();
        t.readiness = cfg.readiness.clone();
        Ok(t)
    }

    /// Loads state read back from the store, and emits the effects that
    /// rebuild the per-release series of every tracked key.
    pub fn restore(
        &mut self,
        keys: Vec<(Key, KeyState)>,
        seen: Vec<(u128, TimeMs)>,
        failing: Vec<(Target, TimeMs)>,
        approvals: Vec<(String, String, Vec<Ruling>)>,
    ) {
        for (key, ks) in keys {
            self.effects.push(Effect::Status {
                key: key.clone(),
                status: ks.status.clone(),
                since: ks.entered_at,
            });
            if let Some(f) = &ks.finished {
                self.effects.push(Effect::Finished {
                    key: key.clone(),
                    at: f.at,
                });
            } else if self
                .known
                .deployed
                .is_some_and(|d| self.model.index(&ks.status) == Some(d))
            {
                self.deployed.insert(Target::of(&key), key.clone());
            }
            self.stages
                .note(&self.model, &key, &ks.last, &ks.status, ks.entered_at);
            self.rollup_index.note(&key, &ks.status, ks.entered_at);
            self.keys.insert(key, Box::new(ks));
        }
        self.seen
            .extend(seen.into_iter().map(|(h, at)| (h as u64, at)));
        // A store written with a larger cap: the next batch purges it too.
        if let Some(cut) = self.trim_seen()
            && self.settings.persist
        {
            self.batch.seen_purge_before = Some(cut);
        }
        self.failing.extend(failing);
        self.approvals
            .extend(approvals.into_iter().map(|(r, s, list)| ((r, s), list)));
    }

    /// Keeps no rollups as events arrive: the next periodic check computes
    /// them from the keys, in one pass, and keeps them from then on.
    /// `replay` checks once, at the end, and shows the rollups of the keys
    /// as they are then; noting every event's key in the rollups was work
    /// nothing read.
    pub fn defer_rollups(&mut self) {
        self.rollups_deferred = true;
    }

    /// Loads the rollups reported stuck (read back from the store).
    pub fn restore_rollups_stuck(&mut self, stuck: Vec<(String, String)>) {
        self.rollups_stuck
            .extend(stuck.into_iter().map(|(r, e)| (Arc::from(r), Arc::from(e))));
    }

    /// The anomaly rules and their settings.
    pub fn detectors(&self) -> &Detectors {
        &self.detect
    }

    /// skipped_stage's ledger of deployments per stage.
    pub fn stages(&self) -> &Stages {
        &self.stages
    }

    /// When the open restore episode of `target` began: a failure not yet
    /// followed by a deployment.
    pub fn failing_since(&self, target: &Target) -> Option<TimeMs> {
        self.failing.get(target).copied()
    }

    /// Whether the rollup (release, environment) was reported `stuck` and
    /// was not complete since.
    pub fn rollup_stuck(&self, release: &str, environment: &str) -> bool {
        self.rollups_stuck
            .iter()
            .any(|(r, e)| &**r == release && &**e == environment)
    }

    /// The DORA outcome a key's deployment ended in so far, from its
    /// current status and the statuses it passed (the outcome its last
    /// counted transition had): `None` for a key that never deployed.
    pub fn deployment_outcome(&self, ks: &KeyState) -> Option<Outcome> {
        let to = self.model.index(&ks.status)?;
        let passed =
            |s: Option<StateIdx>| s.is_some_and(|i| ks.memory.has_passed(self.model.id(i)));
        let k = self.known;
        let from = if passed(k.deployed) || passed(k.complete) {
            k.deployed
        } else if passed(k.in_progress) || passed(k.paused) {
            k.in_progress
        } else {
            None
        };
        match self.known.outcome(from.unwrap_or(to), to) {
            Some(o) => Some(o),
            // Still deployed, or complete after deploying.
            None if Known::is(k.complete, to) && passed(k.deployed) => Some(Outcome::Success),
            None => None,
        }
    }

    /// The gate's ledger.
    pub fn approvals(&self) -> &Approvals {
        &self.approvals
    }

    pub fn model(&self) -> &Model {
        &self.model
    }

    /// The model, shared (parsers built beside the tracker use it too).
    pub fn model_arc(&self) -> Arc<Model> {
        Arc::clone(&self.model)
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub fn keys(&self) -> impl Iterator<Item = (&Key, &KeyState)> {
        self.keys.iter().map(|(k, s)| (k, &**s))
    }

    /// `[rollups]`.
    pub fn rollups_config(&self) -> &crate::config::RollupsConfig {
        &self.rollups
    }

    /// `[readiness]`.
    pub fn readiness_config(&self) -> &crate::config::ReadinessConfig {
        &self.readiness
    }

    /// The rollups of the keys `keep` chooses, now.
    pub fn rollups(&self, keep: impl Fn(&Key) -> bool) -> Vec<rollup::Rollup> {
        rollup::compute(self.keys(), &self.model, &self.rollups, keep)
    }

    pub fn get(&self, key: &Key) -> Option<&KeyState> {
        self.keys.get(key).map(|s| &**s)
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Drains the effects produced since the last call.
    pub fn take_effects(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.effects)
    }

    /// Drains the effects produced since the last call, keeping their
    /// vector's capacity: `replay` drains after every event, and a fresh
    /// vector each time grew (reallocated) two or three times an event.
    pub fn drain_effects(&mut self) -> std::vec::Drain<'_, Effect> {
        self.effects.drain(..)
    }

    /// Drains the store writes produced since the last call.
    pub fn take_batch(&mut self) -> Batch {
        let mut batch = std::mem::take(&mut self.batch);
        for k in self.dirty.drain() {
            if let Some(s) = self.keys.get(&k) {
                batch.keys.push(&k, s);
            }
        }
        if std::mem::take(&mut self.rollups_stuck_dirty) && self.settings.persist {
            let mut stuck: Vec<(String, String)> = self
                .rollups_stuck
                .iter()
                .map(|(r, e)| (r.to_string(), e.to_string()))
                .collect();
            stuck.sort();
            batch.rollups_stuck = Some(stuck);
        }
        if std::mem::take(&mut self.failing_dirty) {
            batch.failing = Some(
                self.failing
                    .iter()
                    .map(|(t, at)| (t.clone(), *at))
                    .collect(),
            );
        }
        batch
    }

    /// Counts an input that never became an event (invalid, skipped,
    /// unmapped), so all accounting flows through one place.
    pub fn count(&mut self, source: &str, result: InputResult) {
        self.effects.push(Effect::Input {
            source: source.to_string(),
            result,
        });
    }

    /// Applies one event at agent time `now`; returns where it landed.
    pub fn apply(&mut self, ev: Event, now: TimeMs) -> InputResult {
        let source = ev.source.clone();
        let (site, event_time) = (ev.site.clone(), ev.time);
        let result = self.apply_inner(ev, now);
        if matches!(result, InputResult::Accepted | InputResult::Late) {
            self.effects.push(Effect::Delay {
                source: source.clone(),
                site,
                event_time,
                recorded_at: now,
            });
        }
        self.effects.push(Effect::Input { source, result });
        result
    }

    fn apply_inner(&mut self, ev: Event, now: TimeMs) -> InputResult {
        let decision = self.detect.gate_decision(&self.model, &ev);
        let to = self.model.index(&ev.status);
        if to.is_none() && decision.is_none() {
            return InputResult::Unmapped;
        }
        let h = id_hash(&ev.id);
        if let Some(at) = self.seen.get(&(h as u64))
            && now - at <= self.settings.dedupe_window
        {
            return InputResult::Duplicate;
        }
        self.seen.insert(h as u64, now);
        if self.settings.persist {
            self.batch.seen.push((h, now));
        }
        let skewed = ev.time > now + self.settings.max_future;
        let order_time = if skewed { now } else { ev.time };
        let key = ev.key();
        let mut anomalies = Vec::new();
        if skewed {
            self.detect.on_received(&ev, &key, now, &mut anomalies);
        }

        if let Some(decision) = decision {
            self.note_decision(&ev, decision, order_time);
        }
        let (late, hold, from_status) = self.advance(
            &key,
            &ev,
            to,
            decision.is_some(),
            order_time,
            now,
            skewed,
            &mut anomalies,
        );
        let result = if late {
            InputResult::Late
        } else {
            InputResult::Accepted
        };
        let hold = hold || to.is_none();

        let rules: Vec<String> = anomalies.iter().map(|a| a.rule.clone()).collect();
        for a in anomalies {
            if self.settings.outbox != OutboxMode::Off {
                self.batch.outbox.push(a.clone());
            }
            self.effects.push(Effect::Anomaly(Box::new(a)));
        }
        if self.settings.persist {
            self.batch.history.push(HistoryRecord {
                from: if late || hold { None } else { from_status },
                late,
                recorded_at: now,
                order_time,
                anomalies: rules,
                decision,
                event: ev,
            });
        }
        result
    }

    /// Records a decision in the gate's ledger.
    fn note_decision(&mut self, ev: &Event, decision: crate::detect::Decision, at: TimeMs) {
        let list = self
            .approvals
            .entry((ev.release.clone(), ev.service.clone()))
            .or_default();
        let ruling = Ruling {
            decision,
            at,
            environment: ev.environment.clone(),
            approver: ev.actor.clone(),
            source: ev.source.clone(),
        };
        if crate::detect::add_ruling(list, ruling) && self.settings.persist {
            let row = (ev.release.clone(), ev.service.clone(), list.clone());
            match self
                .batch
                .approvals
                .iter_mut()
                .find(|(r, s, _)| *r == row.0 && *s == row.1)
            {
                Some(slot) => *slot = row,
                None => self.batch.approvals.push(row),
            }
        }
    }

    /// Applies a report to its key, looked up once: says whether it sorts
    /// before the key's current one (`late`), whether it is an approval
    /// held back (the key is past it), and the key's status before (kept in
    /// the history, so only when persisting); otherwise, with a status, it
    /// moves the key.
    #[allow(clippy::too_many_arguments)]
    fn advance(
        &mut self,
        key: &Key,
        ev: &Event,
        to: Option<StateIdx>,
        deciding: bool,
        order_time: TimeMs,
        now: TimeMs,
        skewed: bool,
        anomalies: &mut Vec<Anomaly>,
    ) -> (bool, bool, Option<String>) {
        let Some(ks) = self.keys.get_mut(key) else {
            // A new key: nothing to be late for or held by.
            if let Some(to) = to {
                self.first(key, ev, to, order_time, now, skewed, anomalies);
            }
            return (false, false, None);
        };
        let late = to.is_some()
            && (
                order_time,
                to.map_or(0, |to| self.model.state(to).rank),
                ev.id.as_str(),
            ) <= (ks.max_time, ks.max_rank, ks.max_id());
        let from_status = self.settings.persist.then(|| ks.status.to_string());
        let hold =
            deciding && (ks.memory.has_passed("in_progress") || ks.memory.has_passed("deployed"));
        let Some(to) = to.filter(|_| !late && !hold) else {
            return (late, hold, from_status);
        };
        let model = Arc::clone(&self.model);
        let known = self.known;
        let rank = model.state(to).rank;
        let target = Target::of(key);
        if self.settings.persist {
            self.dirty.insert(key.clone());
        }

        let reopened_from = ks.finished.take().map(|f| f.reason);
        if reopened_from.is_some() {
            self.effects.push(Effect::Reopened { key: key.clone() });
        }
        let from = model.index(&ks.status);
        let prev_version = ks.last.version.clone();
        let prev_commit = ks.last.commit.clone();
        let kind = match from {
            Some(f) if f == to => ChangeKind::Rereport,
            Some(f) => ChangeKind::Transition {
                allowed: model.allows(f, to),
            },
            // The key's status left the model (a config change): start over.
            None => ChangeKind::First,
        };
        let ch = Change {
            event: ev,
            key,
            from,
            to,
            kind,
            order_time,
            skewed,
            reopened_from,
            prev_version: prev_version.as_deref(),
            prev_commit: prev_commit.as_deref(),
            now,
        };
        self.detect
            .on_change(&model, &ch, &mut ks.memory, anomalies);
        self.detect
            .on_promotion(&model, &ch, &mut ks.memory, &self.stages, anomalies);
        if ks.conflict_since.is_none()
            && anomalies
                .iter()
                .any(|a| a.rule == RuleId::StatusConflict.as_str())
        {
            ks.conflict_since = Some(order_time);
        }

        ks.max_time = order_time;
        ks.max_rank = rank;
        ks.last.renew(ev);
        ks.set_max_id(&ev.id);
        let since = if kind == ChangeKind::Rereport {
            ks.entered_at
        } else {
            order_time
        };
        self.stages.note(&model, key, &ks.last, model.id(to), since);
        // The status the key holds once moved: its own when unchanged.
        let to_id = if ks.status == model.id(to) {
            ks.status.clone()
        } else {
            Sym::new(model.id(to))
        };
        // What the key holds once moved (a re-report keeps its status and
        // entry time): the rollups need no second look at the key.
        if !self.rollups_deferred {
            self.rollup_index.note(key, &to_id, since);
        }
        // A terminal status finishes the key here, not through a second
        // look-up at the end: until then only `supersede` (for `deployed`)
        // may finish it, and nothing reads whether it is finished.
        let finish_now = model.is_terminal(to) && !Known::is(known.deployed, to);
        if finish_now {
            ks.finished = Some(Finished {
                at: now,
                reason: FinishReason::Terminal,
            });
        }

        match kind {
            ChangeKind::Rereport => {
                if reopened_from.is_some() {
                    self.effects.push(Effect::Status {
                        key: key.clone(),
                        status: ks.status.clone(),
                        since: ks.entered_at,
                    });
                }
            }
            ChangeKind::First => {
                ks.status = to_id;
                ks.entered_at = order_time;
                self.effects.push(Effect::Status {
                    key: key.clone(),
                    status: ks.status.clone(),
                    since: order_time,
                });
            }
            ChangeKind::Transition { allowed } => {
                let from = from.expect("a transition has a from status");
                let secs = (order_time - ks.entered_at) as f64 / 1000.0;
                let from_id = model.id(from).to_string();
                self.effects.push(Effect::Transition {
                    environment: key.environment.to_string(),
                    from: from_id.clone(),
                    to: model.id(to).to_string(),
                });
                self.effects.push(Effect::Duration {
                    key: key.clone(),
                    status: from_id.clone(),
                    secs,
                });
                if let Some(limit) = model.stuck_after(from, &key.environment)
                    && order_time - ks.entered_at > limit.as_millis() as TimeMs
                {
                    self.effects.push(Effect::Resolution {
                        key: key.clone(),
                        status: from_id.clone(),
                        cause: Cause::Stuck,
                        secs,
                    });
                }
                if allowed && let Some(since) = ks.conflict_since.take() {
                    self.effects.push(Effect::Resolution {
                        key: key.clone(),
                        status: from_id,
                        cause: Cause::Conflict,
                        secs: (order_time - since) as f64 / 1000.0,
                    });
                }
                ks.status = to_id;
                ks.entered_at = order_time;
                ks.memory.stuck_fired = None;
                self.effects.push(Effect::Status {
                    key: key.clone(),
                    status: ks.status.clone(),
                    since: order_time,
                });
                if self.settings.outbox == OutboxMode::All {
                    let rec = self.transition_record(key, ev, Some(from), to, now);
                    self.batch.outbox.push(rec);
                }
                self.dora_transition(key, ev, from, to, order_time);
                if Known::is(known.deployed, from)
                    && self.deployed.get(&target).is_some_and(|k| k == key)
                {
                    self.deployed.remove(&target);
                }
                if Known::is(known.deployed, to) {
                    self.supersede(key, &target, order_time, now);
                }
            }
        }
        if finish_now {
            self.finished(key, now);
        } else if model.is_terminal(to) {
            self.finish(key, now, FinishReason::Terminal);
        } else if reopened_from.is_some()
            && kind == ChangeKind::Rereport
            && Known::is(known.deployed, to)
        {
            // A superseded or stale deployed key reported deployed again: it
            // reached deployed when it entered it, not when re-reported, so
            // the outcome does not depend on which report arrived first.
            // (A re-report keeps the key's entry time: `since`.)
            self.supersede(key, &target, since, now);
        }
        (false, false, from_status)
    }

    /// The first status of a key: not a transition.
    #[allow(clippy::too_many_arguments)]
    fn first(
        &mut self,
        key: &Key,
        ev: &Event,
        to: StateIdx,
        order_time: TimeMs,
        now: TimeMs,
        skewed: bool,
        anomalies: &mut Vec<Anomaly>,
    ) {
        let model = Arc::clone(&self.model);
        let known = self.known;
        let rank = model.state(to).rank;
        let target = Target::of(key);
        if self.settings.persist {
            self.dirty.insert(key.clone());
        }
        let mut ks = KeyState::first(ev, model.id(to), rank, order_time);
        let ch = Change {
            event: ev,
            key,
            from: None,
            to,
            kind: ChangeKind::First,
            order_time,
            skewed,
            reopened_from: None,
            prev_version: None,
            prev_commit: None,
            now,
        };
        self.detect
            .on_change(&model, &ch, &mut ks.memory, anomalies);
        self.detect
            .on_promotion(&model, &ch, &mut ks.memory, &self.stages, anomalies);
        self.stages
            .note(&model, key, &ks.last, model.id(to), order_time);
        self.effects.push(Effect::Status {
            key: key.clone(),
            status: ks.status.clone(),
            since: order_time,
        });
        if !self.rollups_deferred {
            self.rollup_index.note(key, &ks.status, order_time);
        }
        // Finished before it is stored when terminal (see `advance`).
        let finish_now = model.is_terminal(to) && !Known::is(known.deployed, to);
        if finish_now {
            ks.finished = Some(Finished {
                at: now,
                reason: FinishReason::Terminal,
            });
        }
        self.keys.insert(key.clone(), Box::new(ks));
        if self.settings.outbox == OutboxMode::All {
            self.batch
                .outbox
                .push(self.transition_record(key, ev, None, to, now));
        }
        if Known::is(known.deployed, to) {
            self.dora_deployed(key, ev, order_time);
            self.supersede(key, &target, order_time, now);
        }
        if finish_now {
            self.finished(key, now);
        } else if model.is_terminal(to) {
            self.finish(key, now, FinishReason::Terminal);
        }
    }

    /// DORA bookkeeping for a key entering `deployed`.
    fn dora_deployed(&mut self, key: &Key, ev: &Event, at: TimeMs) {
        self.effects.push(Effect::Deployment {
            key: key.clone(),
            outcome: Outcome::Success,
        });
        if let Some(ct) = ev.commit_time
            && ct <= at
        {
            self.effects.push(Effect::LeadTime {
                key: key.clone(),
                secs: (at - ct) as f64 / 1000.0,
            });
        }
        // A deployment dated before the failure (reported late) restores nothing.
        let target = Target::of(key);
        if let Some(&since) = self.failing.get(&target)
            && since <= at
        {
            self.failing.remove(&target);
            self.failing_dirty = true;
            self.effects.push(Effect::Restore {
                key: key.clone(),
                secs: (at - since) as f64 / 1000.0,
            });
        }
    }

    /// DORA outcomes of a transition (docs/metrics.md, relstat_deployments_total).
    fn dora_transition(&mut self, key: &Key, ev: &Event, from: StateIdx, to: StateIdx, at: TimeMs) {
        let outcome = match self.known.outcome(from, to) {
            None => return,
            Some(Outcome::Success) => {
                self.dora_deployed(key, ev, at);
                return;
            }
            Some(o) => o,
        };
        self.effects.push(Effect::Deployment {
            key: key.clone(),
            outcome,
        });
        let t = Target::of(key);
        if let std::collections::hash_map::Entry::Vacant(e) = self.failing.entry(t) {
            e.insert(at);
            self.failing_dirty = true;
        }
    }

    /// `key` entered deployed at `at`: whichever of it and the key already
    /// resting in deployed for the same target is older is finished.
    fn supersede(&mut self, key: &Key, target: &Target, at: TimeMs, now: TimeMs) {
        let deployed = self.known.deployed;
        let prev = match self.deployed.get(target) {
            Some(p) if p != key => p.clone(),
            _ => {
                self.deployed.insert(target.clone(), key.clone());
                return;
            }
        };
        let prev_live = self.keys.get(&prev).filter(|ks| {
            ks.finished.is_none() && deployed.is_some() && self.model.index(&ks.status) == deployed
        });
        // Ties (same entry time) go to the greater release, whatever arrived first.
        match prev_live {
            Some(ps) if (ps.entered_at, &prev.release) > (at, &key.release) => {
                // A newer release already rests there: this one is superseded.
                self.finish(key, now, FinishReason::Superseded);
            }
            Some(_) => {
                self.finish(&prev, now, FinishReason::Superseded);
                self.deployed.insert(target.clone(), key.clone());
            }
            None => {
                self.deployed.insert(target.clone(), key.clone());
            }
        }
    }

    fn finish(&mut self, key: &Key, now: TimeMs, reason: FinishReason) {
        if let Some(ks) = self.keys.get_mut(key)
            && ks.finished.is_none()
        {
            ks.finished = Some(Finished { at: now, reason });
            self.finished(key, now);
        }
    }

    /// What follows a key's finishing at `now`: stored, its series expire
    /// later, and it no longer rests in `deployed`.
    fn finished(&mut self, key: &Key, now: TimeMs) {
        if self.settings.persist {
            self.dirty.insert(key.clone());
        }
        self.effects.push(Effect::Finished {
            key: key.clone(),
            at: now,
        });
        let t = Target::of(key);
        if self.deployed.get(&t).is_some_and(|k| k == key) {
            self.deployed.remove(&t);
        }
    }

    /// The `n` keys finished longest ago (ties by key), among those still
    /// within `stale_after`: what `max_finished` forgets first.
    fn oldest_finished(&self, n: usize, now: TimeMs) -> Vec<Key> {
        let retention = self.settings.stale_after;
        let mut done: Vec<(TimeMs, &Key)> = self
            .keys
            .iter()
            .filter_map(|(k, ks)| ks.finished.map(|f| (f.at, k)))
            .filter(|(at, _)| now - *at <= retention)
            .collect();
        if n < done.len() {
            done.select_nth_unstable(n);
            done.truncate(n);
        }
        done.into_iter().map(|(_, k)| k.clone()).collect()
    }

    /// Forgets the oldest seen ids beyond `max_seen` (the map keeps its
    /// capacity: memory stays flat once the cap is reached); returns the
    /// time before which every id was forgotten (some seen at that time
    /// may be forgotten too: a batch shares one agent time), if any.
    fn trim_seen(&mut self) -> Option<TimeMs> {
        let max = self.settings.max_seen;
        if self.seen.len() <= max {
            return None;
        }
        let mut times: Vec<TimeMs> = self.seen.values().copied().collect();
        let excess = times.len() - max;
        let (_, cut, _) = times.select_nth_unstable(excess - 1);
        let cut = *cut;
        self.seen.retain(|_, at| *at >= cut);
        // Then just enough of those seen at `cut` itself.
        let mut extra = self.seen.len().saturating_sub(max);
        if extra > 0 {
            self.seen.retain(|_, at| {
                let keep = *at != cut || extra == 0;
                if !keep {
                    extra -= 1;
                }
                keep
            });
        }
        Some(cut)
    }

    /// Number of event ids remembered for duplicate detection.
    pub fn seen_len(&self) -> usize {
        self.seen.len()
    }

    /// Brings the rollups up to date (emitted when one changed), and
    /// raises `stuck` for a rollup partly complete past `[rollups]
    /// stuck_after` (agent's clock since its first target completed, by
    /// event time), once until it is complete (or wholly incomplete) again.
    fn check_rollups(&mut self, now: TimeMs, caught_up: bool) {
        if std::mem::take(&mut self.rollups_deferred) {
            for (key, ks) in &self.keys {
                self.rollup_index.note(key, &ks.status, ks.entered_at);
            }
        }
        let changed = self.rollup_index.refresh(&self.model, &self.rollups);
        if changed && !self.rollups_stuck.is_empty() {
            // A rollup gone (its keys forgotten) is not remembered.
            let index = &self.rollup_index;
            let before = self.rollups_stuck.len();
            self.rollups_stuck.retain(|(r, e)| index.contains(e, r));
            self.rollups_stuck_dirty |= self.rollups_stuck.len() != before;
        }
        if let Some(limit) = self.rollups.stuck_after
            && caught_up
            && self.detect.stuck.enabled
        {
            let limit = limit.as_millis() as TimeMs;
            let mut due = Vec::new();
            for r in self.rollup_index.summaries() {
                let Some(since) = r.first_complete_at.filter(|_| !r.complete) else {
                    if !self.rollups_stuck.is_empty()
                        && self
                            .rollups_stuck
                            .remove(&(Arc::clone(&r.release), Arc::clone(&r.environment)))
                    {
                        self.rollups_stuck_dirty = true;
                    }
                    continue;
                };
                if now - since > limit
                    && !self
                        .rollups_stuck
                        .contains(&(Arc::clone(&r.release), Arc::clone(&r.environment)))
                {
                    due.push((Arc::clone(r), since));
                }
            }
            // In a stable order (the index's is a hash map's).
            due.sort_by(|(a, _), (b, _)| {
                (&a.environment, &a.release).cmp(&(&b.environment, &b.release))
            });
            for (s, since) in due {
                let Some(r) = self.rollup_index.rollup(
                    &s.environment,
                    &s.release,
                    &self.model,
                    &self.rollups,
                ) else {
                    continue;
                };
                let a = self.rollup_stuck_record(&r, since, limit, now);
                self.rollups_stuck
                    .insert((Arc::clone(&s.release), Arc::clone(&s.environment)));
                self.rollups_stuck_dirty = true;
                if self.settings.outbox != OutboxMode::Off {
                    self.batch.outbox.push(a.clone());
                }
                self.effects.push(Effect::Anomaly(Box::new(a)));
            }
        }
        if changed {
            let all = self.rollup_index.summaries().cloned().collect();
            self.effects.push(Effect::Rollups(all));
        }
    }

    /// The `stuck` finding of a rollup partly complete since `since`.
    fn rollup_stuck_record(
        &self,
        r: &rollup::Rollup,
        since: TimeMs,
        limit: TimeMs,
        now: TimeMs,
    ) -> Anomaly {
        let done = r.counts.get("complete").copied().unwrap_or(0);
        let waiting: Vec<String> = r
            .targets
            .iter()
            .filter(|t| t.status != "complete")
            .map(|t| {
                let site = if t.site.is_empty() {
                    String::new()
                } else {
                    format!("@{}", t.site)
                };
                format!("{}{site} {}", t.service, t.status)
            })
            .collect();
        let key = Key {
            release: r.release.clone(),
            service: crate::event::NO_SERVICE.into(),
            environment: r.environment.as_str().into(),
            site: "".into(),
        };
        let message = format!(
            "rollup of {} in {} partly complete for more than {}s: {done} of {} targets \
             complete; waiting for {}",
            r.release,
            r.environment,
            limit / 1000,
            r.targets.len(),
            waiting.join(", ")
        );
        let last = LastReport {
            time: since,
            ..LastReport::default()
        };
        self.detect.record(
            RuleId::Stuck,
            self.detect.stuck.severity,
            &key,
            None,
            &r.status,
            &last,
            now,
            message,
        )
    }

    fn transition_record(
        &self,
        key: &Key,
        ev: &Event,
        from: Option<StateIdx>,
        to: StateIdx,
        now: TimeMs,
    ) -> Anomaly {
        let m = &self.model;
        let message = format!(
            "{} {} in {}: {} -> {} by {}",
            crate::detect::what_of(key),
            "moved",
            key.environment,
            from.map(|f| m.id(f)).unwrap_or("(new)"),
            m.id(to),
            ev.actor
        );
        self.detect
            .transition_record(key, ev, from.map(|f| m.id(f)), m.id(to), now, message)
    }

    /// The periodic check (at least every 15 s while running, and at the end
    /// of a replay): staleness, stuck keys and retention. `caught_up` says
    /// every source has read its backlog; the stuck rule only fires then, so
    /// replaying history never flags a key that later lines resolve.
    pub fn tick(&mut self, now: TimeMs, caught_up: bool) {
        let model = Arc::clone(&self.model);
        let mut stale = Vec::new();
        let mut forget = Vec::new();
        let mut counts: HashMap<(String, String), u64> = HashMap::new();
        let mut anomalies = Vec::new();
        let mut finished = 0usize;
        for (key, ks) in self.keys.iter_mut() {
            // Attempts are judged whether or not the key has finished since
            // (deployed then complete within the grace is the common case).
            if caught_up
                && self.detect.on_gate_check(
                    &model,
                    key,
                    &mut ks.memory,
                    &self.approvals,
                    now,
                    &mut anomalies,
                )
                && self.settings.persist
            {
                self.dirty.insert(key.clone());
            }
            if let Some(f) = &ks.finished {
                // Finished keys stay `stale_after` (memory, the API);
                // history rows stay `history_retention` (the store only).
                if now - f.at > self.settings.stale_after {
                    forget.push(key.clone());
                } else {
                    finished += 1;
                }
                continue;
            }
            if now - ks.max_time > self.settings.stale_after {
                stale.push(key.clone());
                continue;
            }
            let Some(status) = model.index(&ks.status) else {
                continue;
            };
            if let Some(limit) = model.stuck_after(status, &key.environment)
                && now - ks.entered_at > limit.as_millis() as TimeMs
            {
                *counts
                    .entry((key.environment.to_string(), ks.status.to_string()))
                    .or_default() += 1;
                if caught_up {
                    let before = ks.memory.clone();
                    self.detect.on_check(
                        &model,
                        key,
                        status,
                        ks.entered_at,
                        &ks.last,
                        now,
                        &mut ks.memory,
                        &mut anomalies,
                    );
                    if ks.memory != before && self.settings.persist {
                        self.dirty.insert(key.clone());
                    }
                }
            }
        }
        for key in stale {
            self.finish(&key, now, FinishReason::Stale);
        }
        if finished > self.settings.max_finished {
            forget.extend(self.oldest_finished(finished - self.settings.max_finished, now));
        }
        for key in forget {
            self.rollup_index.forget(&key);
            self.keys.remove(&key);
            self.dirty.remove(&key);
            self.effects.push(Effect::Forgotten { key: key.clone() });
            if self.settings.persist {
                self.batch.removed_keys.push(key);
            }
        }
        for a in anomalies {
            if self.settings.outbox != OutboxMode::Off {
                self.batch.outbox.push(a.clone());
            }
            self.effects.push(Effect::Anomaly(Box::new(a)));
        }
        self.stages.prune(&model, now);
        self.check_rollups(now, caught_up);
        let mut counts: Vec<_> = counts.into_iter().collect();
        counts.sort();
        self.effects.push(Effect::StuckCounts(counts));
        let window = self.settings.dedupe_window;
        let before = self.seen.len();
        self.seen.retain(|_, at| now - *at <= window);
        let trimmed = self.trim_seen();
        if self.settings.persist {
            if self.seen.len() != before || self.batch.seen_purge_before.is_none() {
                self.batch.seen_purge_before = self.batch.seen_purge_before.max(Some(now - window));
            }
            // The store forgets what the cap forgot (else a restart would
            // load them all back).
            if let Some(cut) = trimmed {
                self.batch.seen_purge_before = self.batch.seen_purge_before.max(Some(cut));
            }
            self.batch.history_purge_before = Some(now - self.settings.history_retention);
        }
    }
}

#[cfg(test)]
mod tests;
