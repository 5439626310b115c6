//! Relay tracking: the `transition` records of an imported bundle (a
//! `forward = "all"` site) become canonical events for the relay's own
//! tracker, so central metrics, history and the API see the sites' releases,
//! however late, with event-time durations (docs/events.md).
//!
//! Each transition record is converted back into the event that caused it:
//! its id is the record's `event_id` (so a re-import or an overlapping
//! bundle dedupes in the tracker as well as in the import ledger), its time
//! the record's `event_time`, and site, source, actor, actor_type, version
//! and reason are the site's. The recorded time is the import time. The
//! events go through [`Tracker::apply`] like any source batch, inside the
//! store transaction that enqueues the chunk ([`crate::store::Store::import_chunk`]).
//! When the agent is stopped, the CLI's import puts them in the store's
//! pending table instead ([`Tracking::Deferred`]) and the agent applies
//! them at its start ([`drain_pending`]): only a running process has the
//! counters and histograms they must reach.
//! A record that cannot be an event (a required field missing, a field
//! over [`crate::event::MAX_FIELD_BYTES`]) is counted `invalid` and skipped.
//! Input accounting uses the source label [`IMPORT_SOURCE`]: the relay's
//! `relstat_events_total` then tells its own input from imported history.

use std::collections::BTreeMap;

use crate::detect::Anomaly;
use crate::event::{Event, FieldTooLong, InputResult, NO_ACTOR, NO_SERVICE, TimeMs};
use crate::store::{Store, StoreError, Tracked};
use crate::track::{Effect, Tracker};

/// The rule name of a transition record (`forward = "all"`).
pub const TRANSITION: &str = "transition";
/// The `source` label imported events are counted under in `relstat_events_total`.
pub const IMPORT_SOURCE: &str = "import";

/// Why a transition record is not an event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("not a transition record (rule {0:?})")]
    NotTransition(String),
    #[error("transition record without {0}")]
    Missing(&'static str),
    #[error("transition record with event_time {0} (before 1970)")]
    BadTime(TimeMs),
    #[error("transition record: {0}")]
    TooLong(#[from] FieldTooLong),
}

/// The canonical event a transition record reports.
pub fn to_event(rec: &Anomaly) -> Result<Event, RecordError> {
    if rec.rule != TRANSITION {
        return Err(RecordError::NotTransition(rec.rule.clone()));
    }
    for (name, v) in [
        ("event_id", &rec.event_id),
        ("release", &rec.release),
        ("environment", &rec.environment),
        ("to", &rec.to),
    ] {
        if v.trim().is_empty() {
            return Err(RecordError::Missing(name));
        }
    }
    if rec.event_time < 0 {
        return Err(RecordError::BadTime(rec.event_time));
    }
    let or = |v: &str, default: &str| {
        if v.is_empty() {
            default.to_string()
        } else {
            v.to_string()
        }
    };
    let event = Event {
        id: rec.event_id.clone(),
        time: rec.event_time,
        release: rec.release.clone(),
        service: or(&rec.service, NO_SERVICE),
        environment: rec.environment.clone(),
        site: rec.site.clone(),
        status: rec.to.clone(),
        actor: or(&rec.actor, NO_ACTOR),
        actor_type: rec.actor_type,
        source: or(&rec.source, IMPORT_SOURCE),
        reason: rec.reason.clone(),
        version: rec.version.clone(),
        commit: rec.commit.clone(),
        artifact: None,
        commit_time: None,
        change_class: rec.change_class,
    };
    event.check_lengths()?;
    Ok(event)
}

/// What an import does with the transition records of each chunk.
pub enum Tracking<'a> {
    /// The running agent: through its tracker, in the chunk's transaction;
    /// `committed` shows the effects (its metrics) once committed.
    Live {
        tracker: &'a mut Tracker,
        committed: &'a mut dyn FnMut(Vec<Effect>),
    },
    /// The agent is stopped: its metrics live in a process that does not
    /// run yet, so the events go to the store's pending table, in the
    /// chunk's transaction, and the agent applies them when it starts
    /// ([`drain_pending`]): its counters and histograms then see them.
    Deferred,
}

/// What one chunk did to the tracker.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ChunkCounts {
    /// Transition records applied to the tracker.
    pub tracked: u64,
    /// Transition records left for the agent's tracker at its start.
    pub pending: u64,
    /// Transition records that are not an event (counted `invalid`).
    pub invalid: u64,
}

impl Tracking<'_> {
    /// Applies (or, [`Tracking::Deferred`], sets aside) the transition
    /// records among `records` (the chunk's new ones) at agent time `now`;
    /// returns the store writes, the effects to show once committed, and
    /// the counts. Other records are not tracked.
    pub fn track(
        &mut self,
        records: &[&Anomaly],
        now: TimeMs,
    ) -> (Tracked, Vec<Effect>, ChunkCounts) {
        let mut counts = ChunkCounts::default();
        let mut pending = Vec::new();
        let mut invalid = 0;
        for rec in records.iter().filter(|r| r.rule == TRANSITION) {
            match to_event(rec) {
                Ok(ev) => match self {
                    Tracking::Live { tracker, .. } => {
                        tracker.apply(ev, now);
                        counts.tracked += 1;
                    }
                    Tracking::Deferred => {
                        pending.push(ev);
                        counts.pending += 1;
                    }
                },
                Err(e) => {
                    tracing::warn!(
                        "import: event {:?} of site {:?} not tracked: {e}",
                        rec.event_id,
                        rec.site
                    );
                    match self {
                        Tracking::Live { tracker, .. } => {
                            tracker.count(IMPORT_SOURCE, InputResult::Invalid)
                        }
                        Tracking::Deferred => invalid += 1,
                    }
                    counts.invalid += 1;
                }
            }
        }
        match self {
            Tracking::Live { tracker, .. } => {
                let (mut tracked, effects) = take_imported(tracker);
                tracked.pending = pending;
                (tracked, effects, counts)
            }
            Tracking::Deferred => {
                // Stored now: the agent restores input accounting from the
                // store at its start.
                let mut counters = BTreeMap::new();
                if invalid > 0 {
                    counters.insert((IMPORT_SOURCE.to_string(), InputResult::Invalid), invalid);
                }
                let tracked = Tracked {
                    batch: Default::default(),
                    counters,
                    pending,
                    ..Default::default()
                };
                (tracked, Vec::new(), counts)
            }
        }
    }

    /// Shows a committed chunk's effects (in the running agent's metrics).
    pub fn committed(&mut self, effects: Vec<Effect>) {
        if let Tracking::Live { committed, .. } = self {
            committed(effects);
        }
    }
}

/// The tracker's writes and effects since the last take, input accounting
/// under [`IMPORT_SOURCE`].
fn take_imported(tracker: &mut Tracker) -> (Tracked, Vec<Effect>) {
    let batch = tracker.take_batch();
    let mut effects = tracker.take_effects();
    let mut counters: BTreeMap<(String, InputResult), u64> = BTreeMap::new();
    // Per site: (import time, newest event time), for the freshness series.
    let mut synced: BTreeMap<String, (TimeMs, TimeMs)> = BTreeMap::new();
    for e in &mut effects {
        match e {
            Effect::Input { source, result } => {
                *source = IMPORT_SOURCE.to_string();
                *counters.entry((source.clone(), *result)).or_default() += 1;
            }
            Effect::Delay {
                site,
                event_time,
                recorded_at,
                ..
            } => {
                let s = synced
                    .entry(site.clone())
                    .or_insert((*recorded_at, *event_time));
                s.0 = s.0.max(*recorded_at);
                s.1 = s.1.max(*event_time);
            }
            _ => {}
        }
    }
    effects.extend(
        synced
            .into_iter()
            .map(|(site, (at, newest_event))| Effect::SiteSync {
                site,
                at,
                newest_event,
            }),
    );
    let tracked = Tracked {
        batch,
        counters,
        ..Default::default()
    };
    (tracked, effects)
}

/// Pending events per drain transaction (as an import chunk: bounded memory).
pub const DRAIN_CHUNK: usize = 10_000;

/// The agent's start: applies the events imported while it was stopped
/// ([`Tracking::Deferred`]) through `tracker` as the running agent would
/// have at the import (each at its import time, which becomes its recorded
/// time), in import order, [`DRAIN_CHUNK`] at a time. Each chunk is one
/// store transaction that also removes its pending rows, then its effects
/// go to `committed`. A crash leaves every event either applied and gone
/// or pending and unapplied; a store error leaves the tracker ahead of the
/// store, so the caller must not go on with it. Returns how many were
/// applied.
pub fn drain_pending(
    tracker: &mut Tracker,
    store: &Store,
    committed: &mut dyn FnMut(Vec<Effect>),
) -> Result<u64, StoreError> {
    drain_chunks(tracker, store, committed, DRAIN_CHUNK, None)
}

/// [`drain_pending`] that also queues the notifications the events cause
/// (`[notify] imported = true`: `router`), in each chunk's transaction.
pub fn drain_pending_notify(
    tracker: &mut Tracker,
    store: &Store,
    committed: &mut dyn FnMut(Vec<Effect>),
    router: Option<&crate::notifications::Router>,
) -> Result<u64, StoreError> {
    drain_chunks(tracker, store, committed, DRAIN_CHUNK, router)
}

fn drain_chunks(
    tracker: &mut Tracker,
    store: &Store,
    committed: &mut dyn FnMut(Vec<Effect>),
    chunk: usize,
    router: Option<&crate::notifications::Router>,
) -> Result<u64, StoreError> {
    let mut applied = 0;
    loop {
        let rows = store.pending_read(chunk)?;
        let Some((upto, at)) = rows.last().map(|(s, p)| (*s, p.recorded_at)) else {
            return Ok(applied);
        };
        let n = rows.len() as u64;
        for (_, p) in rows {
            tracker.apply(p.event, p.recorded_at);
        }
        let (tracked, effects) = take_imported(tracker);
        match router {
            Some(r) => {
                let notes = r.route(&tracked.batch, &effects, at);
                store.commit_drained_notify(
                    &tracked.batch,
                    &tracked.counters,
                    upto,
                    at,
                    &notes,
                    r.max_queued,
                )?
            }
            None => store.commit_drained(&tracked.batch, &tracked.counters, upto, at)?,
        }
        committed(effects);
        applied += n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, Severity};
    use crate::event::ActorType;

    fn transition(id: &str, to: &str, time: TimeMs) -> Anomaly {
        Anomaly {
            rule: TRANSITION.into(),
            severity: Severity::Info,
            release: "r1".into(),
            service: "api".into(),
            environment: "prod".into(),
            site: "dc-a".into(),
            from: None,
            to: to.into(),
            actor: "alice".into(),
            actor_type: ActorType::Human,
            source: "deploy-log".into(),
            event_id: id.into(),
            event_time: time,
            detected_at: time + 5,
            reason: Some("CHG-1".into()),
            version: Some("1.2".into()),
            commit: Some("abc123".into()),
            change_class: Some(crate::event::ChangeClass::Emergency),
            approver: None,
            decision: None,
            audit_sequence: None,
            audit_hash: None,
            host: "host-a".into(),
            message: "moved".into(),
        }
    }

    #[test]
    fn a_transition_record_is_the_event_it_reports() {
        let ev = to_event(&transition("ev-1", "deployed", 1_000)).unwrap();
        assert_eq!(
            (
                ev.id.as_str(),
                ev.time,
                ev.status.as_str(),
                ev.site.as_str()
            ),
            ("ev-1", 1_000, "deployed", "dc-a")
        );
        assert_eq!(
            (ev.actor.as_str(), ev.actor_type, ev.source.as_str()),
            ("alice", ActorType::Human, "deploy-log")
        );
        assert_eq!(ev.reason.as_deref(), Some("CHG-1"));
        assert_eq!(ev.version.as_deref(), Some("1.2"));
        assert_eq!(ev.commit.as_deref(), Some("abc123"));
        assert_eq!(ev.change_class, Some(crate::event::ChangeClass::Emergency));
        assert_eq!((ev.release.as_str(), ev.service.as_str()), ("r1", "api"));
        let mut bare = transition("ev-2", "deployed", 1_000);
        bare.service.clear();
        bare.actor.clear();
        bare.source.clear();
        let ev = to_event(&bare).unwrap();
        assert_eq!(
            (ev.service.as_str(), ev.actor.as_str(), ev.source.as_str()),
            ("-", "-", IMPORT_SOURCE)
        );
    }

    #[test]
    fn bad_records_are_refused_with_the_reason() {
        let mut r = transition("ev-1", "deployed", 1_000);
        r.rule = "stuck".into();
        assert_eq!(
            to_event(&r),
            Err(RecordError::NotTransition("stuck".into()))
        );
        for (field, f) in [
            (
                "event_id",
                (|r: &mut Anomaly| r.event_id.clear()) as fn(&mut Anomaly),
            ),
            ("release", |r| r.release = " ".into()),
            ("environment", |r| r.environment.clear()),
            ("to", |r| r.to.clear()),
        ] {
            let mut r = transition("ev-1", "deployed", 1_000);
            f(&mut r);
            assert_eq!(to_event(&r), Err(RecordError::Missing(field)));
        }
        let r = transition("ev-1", "deployed", -5);
        assert_eq!(to_event(&r), Err(RecordError::BadTime(-5)));
        // a signed bundle is no reason to accept what a source would refuse
        let mut r = transition("ev-1", "deployed", 1_000);
        r.service = "s".repeat(400 * 1024);
        assert_eq!(
            to_event(&r),
            Err(RecordError::TooLong(crate::event::FieldTooLong {
                field: "service",
                len: 400 * 1024
            }))
        );
        let mut r = transition("ev-1", "deployed", 1_000);
        r.reason = Some("r".repeat(crate::event::MAX_FIELD_BYTES));
        assert!(to_event(&r).is_ok());
    }

    #[test]
    fn tracking_counts_bad_records_invalid_and_applies_the_rest_by_event_time() {
        let cfg = Config::default();
        let mut tracker = Tracker::from_config(&cfg, true).unwrap();
        let mut sink = |_: Vec<Effect>| {};
        let mut t = Tracking::Live {
            tracker: &mut tracker,
            committed: &mut sink,
        };
        let hour = 3_600_000;
        let mut bad = transition("ev-x", "deployed", 0);
        bad.release.clear();
        let mut anomaly = transition("ev-2", "deployed", 2 * hour);
        anomaly.rule = "change_freeze".into();
        // Out of order on purpose: deployed (t=2h) before in_progress (t=0).
        let recs = [
            transition("ev-2", "deployed", 2 * hour),
            bad,
            anomaly,
            transition("ev-1", "in_progress", 0),
        ];
        let refs: Vec<&Anomaly> = recs.iter().collect();
        let now = 10 * hour;
        let (tracked, effects, counts) = t.track(&refs, now);
        assert_eq!(
            counts,
            ChunkCounts {
                tracked: 2,
                pending: 0,
                invalid: 1
            }
        );
        let c = |r: InputResult| {
            tracked
                .counters
                .get(&(IMPORT_SOURCE.to_string(), r))
                .copied()
        };
        assert_eq!(c(InputResult::Accepted), Some(1));
        assert_eq!(c(InputResult::Late), Some(1));
        assert_eq!(c(InputResult::Invalid), Some(1));
        assert!(effects.iter().all(|e| match e {
            Effect::Input { source, .. } => source == IMPORT_SOURCE,
            _ => true,
        }));
        assert_eq!(tracked.batch.history.len(), 2);
        assert!(tracked.batch.history.iter().all(|h| h.recorded_at == now));
        let key = to_event(&recs[0]).unwrap().key();
        let ks = tracker.get(&key).unwrap();
        assert_eq!((ks.status.as_str(), ks.entered_at), ("deployed", 2 * hour));
        // The same records again: duplicates by event id.
        let mut t = Tracking::Live {
            tracker: &mut tracker,
            committed: &mut sink,
        };
        let (tracked, _, _) = t.track(&refs, now + 1);
        assert_eq!(
            tracked
                .counters
                .get(&(IMPORT_SOURCE.to_string(), InputResult::Duplicate)),
            Some(&2)
        );
    }

    /// What `relstat run` does at start: the tracker from the store.
    fn started(store: &Store) -> Tracker {
        let mut tracker = Tracker::from_config(&Config::default(), true).unwrap();
        let snap = store.load().unwrap();
        tracker.restore(snap.keys, snap.seen, snap.failing, snap.approvals);
        tracker.take_effects();
        tracker
    }

    #[test]
    fn a_drain_cut_short_by_a_crash_resumes_with_nothing_lost_or_applied_twice() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let hour = 3_600_000;
        // 25 keys, two events each, imported into the stopped agent.
        let recs: Vec<Anomaly> = (0..25)
            .flat_map(|i| {
                let r = format!("r{i}");
                [
                    Anomaly {
                        release: r.clone(),
                        ..transition(&format!("a{i}"), "in_progress", i * hour)
                    },
                    Anomaly {
                        release: r,
                        ..transition(&format!("b{i}"), "deployed", i * hour + hour / 2)
                    },
                ]
            })
            .collect();
        let imported_at = 100 * hour;
        let mut defer = |new: &[&Anomaly]| Tracking::Deferred.track(new, imported_at).0;
        store
            .import_chunk(&recs, imported_at, None, None, Some(&mut defer))
            .unwrap();
        assert_eq!(store.pending_len().unwrap(), 50);
        assert_eq!(store.history_len().unwrap(), 0);

        // The first start dies (kill -9) once its first chunk is committed:
        // the second chunk was never committed.
        let crashed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut tracker = started(&store);
            drain_chunks(&mut tracker, &store, &mut |_| panic!("killed"), 20, None)
        }));
        assert!(crashed.is_err());
        assert_eq!(store.pending_len().unwrap(), 30);
        assert_eq!(store.history_len().unwrap(), 20);
        drop(store);

        // The restart: the store reopened, the tracker rebuilt from it.
        let store = Store::open(dir.path()).unwrap();
        let mut tracker = started(&store);
        let mut transitions = 0;
        let n = drain_chunks(
            &mut tracker,
            &store,
            &mut |effects| {
                transitions += effects
                    .iter()
                    .filter(|e| matches!(e, Effect::Transition { .. }))
                    .count()
            },
            20,
            None,
        )
        .unwrap();
        assert_eq!(n, 30);
        assert_eq!(store.pending_len().unwrap(), 0);
        // Keys 0..9 were the committed chunk; keys 10..24 moved
        // in_progress -> deployed after the restart, each once.
        assert_eq!(transitions, 15);
        let history = store.history_len().unwrap();
        assert_eq!(history, 50, "every event once in the history");
        for i in 0..25 {
            let h = store.history(&format!("r{i}")).unwrap();
            let ids: Vec<&str> = h.iter().map(|r| r.event.id.as_str()).collect();
            assert_eq!(ids, [format!("a{i}"), format!("b{i}")]);
            assert!(h.iter().all(|r| r.recorded_at == imported_at));
        }
        let counters = store.load().unwrap().counters;
        assert_eq!(
            counters.get(&(IMPORT_SOURCE.to_string(), InputResult::Accepted)),
            Some(&50)
        );
        assert_eq!(counters.len(), 1, "{counters:?}");
        assert!(tracker.keys().all(|(_, ks)| ks.status == "deployed"));
        assert_eq!(tracker.len(), 25);
    }

    /// Many keys' histories imported into the stopped agent's store in `dir`.
    fn pending_store(dir: &std::path::Path, keys: i64) -> Store {
        let store = Store::open(dir).unwrap();
        let hour = 3_600_000;
        let recs: Vec<Anomaly> = (0..keys)
            .flat_map(|i| {
                let r = format!("r{i}");
                [
                    Anomaly {
                        release: r.clone(),
                        service: format!("s{i}"),
                        ..transition(&format!("a{i}"), "in_progress", hour)
                    },
                    Anomaly {
                        release: r,
                        service: format!("s{i}"),
                        ..transition(&format!("b{i}"), "deployed", 2 * hour)
                    },
                ]
            })
            .collect();
        let mut defer = |new: &[&Anomaly]| Tracking::Deferred.track(new, 10 * hour).0;
        store
            .import_chunk(&recs, 10 * hour, None, None, Some(&mut defer))
            .unwrap();
        store
    }

    /// The child side of the kill -9 drain test: drains until killed.
    #[test]
    fn drain_crash_child() {
        let Ok(dir) = std::env::var("RELSTAT_DRAIN_CHILD_DIR") else {
            return; // only meaningful when started by the test below
        };
        let store = Store::open(std::path::Path::new(&dir)).unwrap();
        let mut tracker = started(&store);
        let flag = std::path::Path::new(&dir).join("started");
        let mut first = true;
        drain_chunks(
            &mut tracker,
            &store,
            &mut |_| {
                if std::mem::take(&mut first) {
                    std::fs::write(&flag, b"1").unwrap();
                }
            },
            50,
            None,
        )
        .unwrap();
    }

    /// kill -9 at arbitrary moments of the start's drain: after reopening,
    /// every event is either applied (in the history, counted, its pending
    /// row gone) or pending, never both nor neither; the next start ends
    /// the drain with every event applied once.
    #[test]
    fn kill_9_during_the_drain_loses_nothing_and_applies_nothing_twice() {
        const KEYS: i64 = 3_000;
        let dir = tempfile::tempdir().unwrap();
        drop(pending_store(dir.path(), KEYS));
        let mut last_applied = 0;
        for round in 0..3u64 {
            crate::crash_child::run_and_kill(
                "spool::relay::tests::drain_crash_child",
                "RELSTAT_DRAIN_CHILD_DIR",
                dir.path(),
                50 + 40 * round,
            );

            let store = Store::open(dir.path()).unwrap();
            let applied = store.history_len().unwrap();
            let pending = store.pending_len().unwrap();
            assert_eq!(applied + pending, 2 * KEYS as u64, "lost or doubled");
            assert!(applied >= last_applied, "applied went backwards");
            let counters = store.load().unwrap().counters;
            let accepted = counters.get(&(IMPORT_SOURCE.to_string(), InputResult::Accepted));
            assert_eq!(
                accepted.copied().unwrap_or(0),
                applied,
                "counters vs history"
            );
            // The applied ones are the first in import order.
            if let Some((seq, _)) = store.pending_read(1).unwrap().first() {
                assert_eq!(*seq, applied + 1);
            }
            last_applied = applied;
        }
        assert!(last_applied > 0, "the child never committed a chunk");
        let store = Store::open(dir.path()).unwrap();
        let mut tracker = started(&store);
        drain_pending(&mut tracker, &store, &mut |_| {}).unwrap();
        assert_eq!(store.pending_len().unwrap(), 0);
        assert_eq!(store.history_len().unwrap(), 2 * KEYS as u64);
        for i in [0, KEYS / 2, KEYS - 1] {
            assert_eq!(store.history(&format!("r{i}")).unwrap().len(), 2);
        }
        assert!(tracker.keys().all(|(_, ks)| ks.status == "deployed"));
    }
}
