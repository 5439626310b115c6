//! The core: the single owner of the tracker and the store, on its own
//! thread.
//!
//! For each source batch it applies the events, commits state + history +
//! outbox + checkpoint + counters in one transaction (waiting batches share
//! one: group commit), then updates the metrics; every [`TICK`] it runs the
//! periodic check (stuck, staleness, retention). At start (and on reload)
//! it rebuilds the tracker from the store and first applies the transitions
//! imported while the agent was stopped (`drain_pending`).
//!
//! Everything else reaches it through a [`CoreHandle`] ([`handle`]): the
//! producers' batches (through [`crate::ingest::Ingest`]), closures from the
//! API, the webhooks and the admin socket, reloads and the stop. When it
//! dies (a store write failed, or a panic) [`Health`] says why.

pub mod handle;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::mpsc::RecvTimeoutError;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use handle::CoreMsg;
pub use handle::{Checkpoints, CoreHandle, Health, Inbox, channel};

use crate::config::{self, Loaded};
use crate::event::{InputResult, now_ms};
use crate::ingest::{Item, SourceBatch};
use crate::sinks::metrics::Metrics;
use crate::spool::outbox::Outbox;
use crate::store::{OutboxStats, Store, StoreError};
use crate::track::{Effect, Tracker, readiness};

/// How often the periodic check runs (the stuck rule: at least every 15 s).
pub const TICK: Duration = Duration::from_secs(5);

/// After the core died, the listener keeps answering (503, with the reason)
/// this long before the agent exits, so probes and people see why.
pub const DEAD_CORE_GRACE: Duration = Duration::from_secs(3);

/// At most this many waiting source batches share one store transaction.
const GROUP: usize = 16;

/// Why the core cannot start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("metrics: {0}")]
    Metrics(#[from] crate::sinks::metrics::MetricsError),
    #[error("the model is invalid (run check-config)")]
    Model,
    #[error("the core stopped unexpectedly")]
    Gone,
    #[error("the core panicked (the message is in the log above)")]
    Panicked,
    #[error(
        "a tracked import failed in the store ({0}): the tracker may be ahead of the store; \
         stopping so that a restart rebuilds it from the store (the import resumes when run again)"
    )]
    Diverged(String),
}

/// Sets the spool gauges of docs/metrics.md from the outbox's state.
pub fn set_spool_gauges(m: &Metrics, stats: &OutboxStats, now: crate::event::TimeMs) {
    m.spool_events.set(stats.events as i64);
    m.spool_bytes.set(stats.bytes as i64);
    m.spool_oldest_age.set(
        stats
            .oldest_detected_at
            .map_or(0.0, |t| ((now - t).max(0)) as f64 / 1000.0),
    );
}

/// The readiness answer from a tracker and the store it was built from
/// (the running core's, or one rebuilt from a stopped agent's store).
pub fn readiness_of(
    tracker: &Tracker,
    store: &Store,
    ask: &readiness::Ask,
    environments: Option<&[String]>,
    shown: readiness::Shown,
    now: crate::event::TimeMs,
) -> Result<Option<readiness::Answer>, StoreError> {
    let in_scope = |env: &str| environments.is_none_or(|es| es.iter().any(|e| e == env));
    if !in_scope(&ask.environment) {
        return Ok(None);
    }
    let history = store.history(&ask.release)?;
    let visible = |k: &crate::event::Key| in_scope(&k.environment);
    let mut answer = readiness::assess(
        tracker,
        &readiness::Index::of(tracker),
        ask,
        &history,
        &visible,
        shown,
        now,
    );
    if let (Some(a), Some(_)) = (&mut answer, environments) {
        readiness::hide_outside(a, tracker, &in_scope);
    }
    Ok(answer)
}

/// The core: tracker, store and the metrics it feeds. Only the core thread
/// touches it; other threads go through [`CoreHandle`].
pub struct Core {
    tracker: Tracker,
    store: Arc<Store>,
    /// The outbox's fill state (`[spool] max_bytes`); `None` without an outbox.
    outbox: Option<Arc<Outbox>>,
    /// The `sink` label for dropped records.
    sink: &'static str,
    /// The metrics it feeds (the HTTP listener renders them).
    metrics: Arc<Mutex<Metrics>>,
    /// Each source's last word on whether it has read its backlog.
    caught_up: BTreeMap<String, bool>,
    /// `[http.partners]`: the API's partner views (replaced on reload).
    partners: BTreeMap<String, config::PartnerConfig>,
    /// Site, host and keys for `spool export|import` (replaced on reload).
    bundles: crate::spool::Settings,
    /// Set when a tracked import failed in the store: the core stops.
    diverged: Option<String>,
    /// `[notify]`: which messages a commit queues (replaced on reload).
    notify: Option<crate::notifications::Router>,
    /// When `relstat_release_risk_score` was last computed (agent's clock).
    risk_at: crate::event::TimeMs,
    /// `[tracking] anchor_interval` (None: 0, anchors off).
    anchor_every: Option<Duration>,
    /// When the next `anchor` record is due: one interval after the last
    /// one, kept in the store across restarts (the first one interval
    /// after the store's first start).
    next_anchor: Instant,
}

/// How often `relstat_release_risk_score` is recomputed: each score reads
/// its release's history, too much for every 5 s tick.
const RISK_EVERY: crate::event::TimeMs = 60_000;

impl Core {
    /// Builds the tracker and the metrics for `loaded` from what the store holds.
    pub(crate) fn build(
        loaded: &Loaded,
        store: &Store,
    ) -> Result<(Tracker, Metrics, Checkpoints), CoreError> {
        let cfg = &loaded.config;
        let mut tracker = Tracker::from_config(cfg, true).map_err(|_| CoreError::Model)?;
        let mut metrics = Metrics::new(&cfg.tracking, true)?;
        let snap = store.load()?;
        for s in &cfg.sources {
            metrics.declare_source(&s.name);
        }
        metrics.restore_counters(&snap.counters);
        tracker.restore(snap.keys, snap.seen, snap.failing, snap.approvals);
        tracker.restore_rollups_stuck(snap.rollups_stuck);
        for e in tracker.take_effects() {
            metrics.apply(&e);
        }
        drain_pending(cfg, &mut tracker, &mut metrics, store)?;
        store.set_dlq_limits((&cfg.dlq).into());
        // The site key signs the audit chain's retention checkpoints and
        // exports; check-config reports a key that does not load.
        store.set_audit_key(cfg.spool.signing_key_file.as_deref().and_then(|p| {
            crate::spool::keys::load_signing(p)
                .map_err(|e| tracing::warn!("audit checkpoints are not signed: {e}"))
                .ok()
        }));
        for ((source, result), n) in store.dlq_counts()? {
            metrics
                .dlq_payloads
                .with_label_values(&[&source, &result])
                .set(n as i64);
        }
        // Records quarantined now (load, drain) or before.
        let quarantined = store.quarantined()?.len();
        metrics.store_quarantined.set(quarantined as i64);
        if quarantined > 0 {
            tracing::warn!(
                "{quarantined} undecodable store records are kept aside in the quarantine \
                 table: `relstat store check` lists them"
            );
        }
        let now = now_ms();
        tracker.tick(now, false);
        for e in tracker.take_effects() {
            metrics.apply(&e);
        }
        metrics.expire(now);
        if let Some(at) = store.audit_last_anchor()? {
            metrics.audit_last_anchor.set(at as f64 / 1000.0);
        }
        Ok((tracker, metrics, snap.checkpoints))
    }

    /// The core for `loaded`, from the tracker `Core::build` made.
    pub fn new(
        loaded: &Loaded,
        tracker: Tracker,
        store: Arc<Store>,
        outbox: Option<Arc<Outbox>>,
        sink: &'static str,
        metrics: Arc<Mutex<Metrics>>,
    ) -> Core {
        let next_anchor = next_anchor(&store, anchor_every(&loaded.config));
        Core {
            tracker,
            store,
            outbox,
            sink,
            metrics,
            caught_up: loaded
                .config
                .sources
                .iter()
                .filter(|s| s.kind != config::SourceType::Webhook)
                .map(|s| (s.name.clone(), false))
                .collect(),
            partners: loaded.config.http.partners.clone(),
            bundles: crate::spool::Settings::from_config(&loaded.config),
            diverged: None,
            notify: crate::notifications::Router::from_config(&loaded.config),
            risk_at: 0,
            anchor_every: anchor_every(&loaded.config),
            next_anchor,
        }
    }

    /// Starts the core thread. Its error (a panic too) is recorded in
    /// `health` before the thread ends.
    pub fn spawn(
        self,
        inbox: Inbox,
        health: Arc<Health>,
    ) -> std::io::Result<JoinHandle<Result<(), CoreError>>> {
        std::thread::Builder::new()
            .name("core".into())
            .spawn(move || {
                // A panic is a dead core too: it must reach /readyz and the exit status.
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.run(inbox)))
                    .unwrap_or(Err(CoreError::Panicked));
                if let Err(e) = &r {
                    health.core_died(e);
                }
                r
            })
    }

    /// `relstat readiness` and `/api/v1/readiness` (docs/readiness.md):
    /// the answer for `ask` now, in the view of `environments` (a
    /// partner's scope; `None`: everything). `None`: the release is
    /// unknown to the caller.
    pub fn readiness(
        &self,
        ask: &readiness::Ask,
        environments: Option<&[String]>,
        shown: readiness::Shown,
    ) -> Result<Option<readiness::Answer>, StoreError> {
        readiness_of(
            &self.tracker,
            &self.store,
            ask,
            environments,
            shown,
            now_ms(),
        )
    }

    pub fn tracker(&self) -> &Tracker {
        &self.tracker
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The store, for readers off the core thread (a redb read transaction
    /// sees the last commit, which is what the metrics show).
    pub fn store_handle(&self) -> Arc<Store> {
        self.store.clone()
    }

    pub fn bundles(&self) -> &crate::spool::Settings {
        &self.bundles
    }

    pub fn partners(&self) -> &BTreeMap<String, config::PartnerConfig> {
        &self.partners
    }

    /// `relstat spool import` on the running agent: the bundles' records
    /// go to the outbox and, with `[spool] track_imports`, their
    /// transitions through this tracker (each chunk one transaction, its
    /// effects in the metrics once committed).
    pub fn import_bundles(
        &mut self,
        files: &[PathBuf],
    ) -> Result<Vec<crate::spool::bundle::ImportReport>, crate::spool::bundle::BundleError> {
        use crate::spool::bundle::{BundleError, import_tracked};
        let (store, settings, metrics) = (
            self.store.clone(),
            self.bundles.clone(),
            self.metrics.clone(),
        );
        let result = if settings.track_imports {
            let mut committed = |effects: Vec<Effect>| {
                let mut m = metrics.lock().unwrap_or_else(|p| p.into_inner());
                for e in &effects {
                    m.apply(e);
                }
            };
            let mut t = crate::spool::relay::Tracking::Live {
                tracker: &mut self.tracker,
                committed: &mut committed,
            };
            let r = import_tracked(&store, &settings, files, false, Some(&mut t));
            if let Err(BundleError::Store(e)) = &r {
                self.diverged = Some(e.to_string());
            }
            r
        } else {
            import_tracked(&store, &settings, files, false, None)
        };
        let dropped: u64 = result.iter().flatten().map(|r| r.dropped).sum();
        if dropped > 0 {
            tracing::warn!(
                "spool full: dropped the {dropped} oldest SIEM records while importing \
                 (when_full = \"drop_oldest\")"
            );
            self.metrics()
                .forward_events
                .with_label_values(&[self.sink, "dropped"])
                .inc_by(dropped);
        }
        if let Err(e) = self.check_spool() {
            self.diverged.get_or_insert(e.to_string());
        }
        result
    }

    fn metrics(&self) -> std::sync::MutexGuard<'_, Metrics> {
        self.metrics.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies one source batch: tracker, one store transaction, metrics.
    /// When it returns Ok, the batch is durable.
    pub fn apply(&mut self, b: SourceBatch) -> Result<(), StoreError> {
        self.apply_group(vec![b])
    }

    /// Applies source batches that were waiting together in one store
    /// transaction (group commit): each batch's events in order, every
    /// checkpoint with the state it produced, one fsync for all. A backlog
    /// read fills the channel faster than one commit per batch drains it;
    /// grouping is what keeps `run --once` near `replay`. When it returns
    /// Ok, every batch is durable.
    pub fn apply_group(&mut self, batches: Vec<SourceBatch>) -> Result<(), StoreError> {
        let now = now_ms();
        let mut checkpoints: Vec<(String, Vec<u8>)> = Vec::new();
        let mut dead = crate::dlq::DeadLetters::default();
        let mut after = Vec::with_capacity(batches.len());
        for b in batches {
            dead.new.extend(b.dead_letters.new);
            dead.replayed.extend(b.dead_letters.replayed);
            let mut latest: Option<i64> = None;
            for item in b.items {
                match item {
                    Item::Event(e) => {
                        latest = Some(latest.map_or(e.time, |t| t.max(e.time)));
                        self.tracker.apply(*e, now);
                    }
                    Item::Rejected(r) => self.tracker.count(&b.source, r),
                }
            }
            // A later checkpoint of the same source overwrites an earlier
            // one in the same transaction.
            checkpoints.extend(b.checkpoint);
            after.push((b.source, latest, b.poll_seconds, b.errors, b.caught_up));
        }
        self.commit_dead(&checkpoints, &dead)?;
        for (source, latest, poll_seconds, errors, caught_up) in after {
            let m = self.metrics();
            if let Some(t) = latest {
                m.source_event(&source, t);
            }
            if let Some(secs) = poll_seconds {
                m.source_poll(&source, secs);
            }
            for kind in errors {
                m.source_error(&source, kind);
            }
            drop(m);
            self.caught_up.insert(source, caught_up);
        }
        Ok(())
    }

    /// `relstat dlq replay`: each entry's events through the tracker, its
    /// other records counted, every entry marked replayed; one transaction.
    pub fn replay_dead(
        &mut self,
        entries: Vec<crate::dlq::ReplayEntry>,
    ) -> Result<Vec<crate::dlq::Replayed>, StoreError> {
        let now = now_ms();
        let mut dead = crate::dlq::DeadLetters::default();
        let mut out = Vec::with_capacity(entries.len());
        for e in entries {
            let mut results = Vec::new();
            for ev in e.events {
                let mut ev = ev;
                ev.source = e.source.clone();
                results.push(self.tracker.apply(ev, now).as_str().to_string());
            }
            for r in &e.rejected {
                if let Some(r) = InputResult::parse(r) {
                    self.tracker.count(&e.source, r);
                    results.push(r.as_str().to_string());
                }
            }
            dead.replayed.push(e.id);
            out.push(crate::dlq::Replayed {
                id: e.id,
                source: e.source,
                results,
                reason: e.reason,
            });
        }
        self.commit_dead(&[], &dead)?;
        Ok(out)
    }

    /// Commits what the tracker produced, then shows it in the metrics:
    /// the metrics never show what a crash could take back.
    fn commit(&mut self, checkpoints: &[(String, Vec<u8>)]) -> Result<(), StoreError> {
        self.commit_dead(checkpoints, &Default::default())
    }

    /// [`commit`](Self::commit), with the batches' dead letters in the same
    /// transaction.
    fn commit_dead(
        &mut self,
        checkpoints: &[(String, Vec<u8>)],
        dead: &crate::dlq::DeadLetters,
    ) -> Result<(), StoreError> {
        let batch = self.tracker.take_batch();
        let effects = self.tracker.take_effects();
        let mut counters: BTreeMap<(String, InputResult), u64> = BTreeMap::new();
        for e in &effects {
            if let Effect::Input { source, result } = e {
                *counters.entry((source.clone(), *result)).or_default() += 1;
            }
        }
        // Chat notifications go to their queues with their cause, and the
        // batches' dead letters with them: one transaction.
        let notes = match &self.notify {
            Some(r) => r.route_live(&batch, &effects, now_ms()),
            None => Vec::new(),
        };
        let max = self.notify.as_ref().map_or(u64::MAX, |r| r.max_queued);
        let (dlq, dropped) =
            self.store
                .commit_all(&batch, checkpoints, &counters, dead, now_ms(), &notes, max)?;
        if !dropped.is_empty() {
            let m = self.metrics();
            for (dest, n) in dropped {
                tracing::warn!(
                    destination = %dest,
                    "notification queue full: dropped its {n} oldest messages ([notify] max_queued)"
                );
                m.notify_failed
                    .with_label_values(&[dest.as_str(), "queue_full"])
                    .inc_by(n);
            }
        }
        if !batch.outbox.is_empty() {
            self.check_spool()?;
        }
        let mut m = self.metrics();
        if !dlq.is_empty() {
            m.dlq(&dlq);
        }
        for e in &effects {
            m.apply(e);
        }
        Ok(())
    }

    /// Applies the outbox policy ([`crate::spool::outbox`]) after the
    /// outbox grew: drops the oldest records (`drop_oldest`) or marks the
    /// outbox full (`block`); keeps the spool gauges current.
    fn check_spool(&mut self) -> Result<(), StoreError> {
        let Some(outbox) = &self.outbox else {
            return Ok(());
        };
        let done = outbox.enforce(&self.store)?;
        if done.dropped > 0 {
            let n = done.dropped;
            tracing::warn!(
                "spool full: dropped the {n} oldest SIEM records (when_full = \"drop_oldest\")"
            );
            self.metrics()
                .forward_events
                .with_label_values(&[self.sink, "dropped"])
                .inc_by(n);
        }
        set_spool_gauges(&self.metrics(), &done.stats, now_ms());
        Ok(())
    }

    /// The outbox changed outside a commit (`spool export` took records
    /// out): the outbox state and the spool gauges follow at once. A store
    /// error here waits for the next tick, which reads the outbox again.
    pub fn outbox_changed(&mut self) {
        if let Err(e) = self.check_spool() {
            tracing::warn!("cannot read the outbox after a change: {e}");
        }
    }

    fn tick(&mut self) -> Result<(), StoreError> {
        let now = now_ms();
        // While a blocking spool is full, the stuck check waits: an episode
        // found later is written when room returns (the key stays stuck).
        let full = self.outbox.as_ref().is_some_and(|o| o.is_full());
        let caught_up = self.caught_up.values().all(|c| *c) && !full;
        self.tracker.tick(now, caught_up);
        self.commit(&[])?;
        self.anchor(now)?;
        let stats = self.store.outbox_stats()?;
        if let Some(o) = &self.outbox {
            o.update(&stats);
        }
        let risk = if now - self.risk_at >= RISK_EVERY {
            self.risk_at = now;
            Some(self.risk_scores(now)?)
        } else {
            None
        };
        let mut m = self.metrics();
        set_spool_gauges(&m, &stats, now);
        if let Some(r) = risk {
            m.set_risk_scores(r);
        }
        m.expire(now);
        Ok(())
    }

    /// The risk score of every release pending for an environment
    /// (`readiness::pending`, at most max_tracked).
    fn risk_scores(
        &self,
        now: crate::event::TimeMs,
    ) -> Result<Vec<(String, String, String, f64)>, StoreError> {
        let t = &self.tracker;
        let mut out = Vec::new();
        let mut history: Option<(String, Vec<crate::track::HistoryRecord>)> = None;
        let mut pending = readiness::pending(t, t.settings().max_finished);
        let ix = readiness::Index::of(t);
        // One history read per release.
        pending.sort();
        for (release, service, environment) in pending {
            if history.as_ref().is_none_or(|(r, _)| *r != release) {
                history = Some((release.clone(), self.store.history(&release)?));
            }
            let h = history
                .as_ref()
                .map(|(_, h)| h.as_slice())
                .unwrap_or_default();
            let ask = readiness::Ask {
                release: release.clone(),
                environment: environment.clone(),
                service: Some(service.clone()),
                ..Default::default()
            };
            let shown = readiness::Shown::default();
            if let Some(a) = readiness::assess(t, &ix, &ask, h, &|_| true, shown, now) {
                out.push((release, service, environment, a.risk_score));
            }
        }
        Ok(out)
    }

    /// The audit chain's head into the series and, when due and there is an
    /// outbox (SIEM or bundles) to carry it, into an `anchor` record.
    fn anchor(&mut self, now: crate::event::TimeMs) -> Result<(), StoreError> {
        let due = Instant::now() >= self.next_anchor;
        let head = match self.anchor_every {
            Some(every) if due && self.outbox.is_some() => {
                let (host, site) = (&self.bundles.host, &self.bundles.site);
                let head = self.store.audit_anchor(now, |h| {
                    crate::store::audit::anchor_record(h, host, site, now)
                })?;
                self.next_anchor = Instant::now() + every;
                self.metrics().audit_last_anchor.set(now as f64 / 1000.0);
                head
            }
            _ => self.store.audit_head()?,
        };
        self.metrics().audit_sequence.set(head.sequence as i64);
        Ok(())
    }

    /// The core thread's loop.
    fn run(mut self, Inbox(rx): Inbox) -> Result<(), CoreError> {
        let mut next_tick = Instant::now() + TICK;
        // A message read while grouping batches, handled next.
        let mut held: Option<CoreMsg> = None;
        loop {
            let wait = next_tick.saturating_duration_since(Instant::now());
            let msg = match held.take() {
                Some(m) => Ok(m),
                None => rx.recv_timeout(wait),
            };
            match msg {
                Ok(CoreMsg::Batch(b, Some(ack))) => {
                    // Its producer waits for this answer (a webhook): a
                    // failed commit is answered, and the core goes on.
                    ack.done(self.apply(b).map_err(|e| e.to_string()));
                }
                Ok(CoreMsg::Batch(b, None)) => {
                    let mut group = vec![b];
                    while group.len() < GROUP {
                        match rx.try_recv() {
                            Ok(CoreMsg::Batch(b, None)) => group.push(b),
                            Ok(other) => {
                                held = Some(other);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    self.apply_group(group)?
                }
                Ok(CoreMsg::Call(f)) => {
                    f(&mut self);
                    if let Some(e) = self.diverged.take() {
                        return Err(CoreError::Diverged(e));
                    }
                }
                Ok(CoreMsg::Reload(loaded, reply)) => {
                    let result = Core::build(&loaded, &self.store);
                    match result {
                        Ok((tracker, metrics, checkpoints)) => {
                            self.tracker = tracker;
                            *self.metrics() = metrics;
                            self.caught_up.clear();
                            self.partners = loaded.config.http.partners.clone();
                            self.bundles = crate::spool::Settings::from_config(&loaded.config);
                            self.notify = crate::notifications::Router::from_config(&loaded.config);
                            self.anchor_every = anchor_every(&loaded.config);
                            self.next_anchor = next_anchor(&self.store, self.anchor_every);
                            let _ = reply.send(Ok(checkpoints));
                        }
                        Err(e) => {
                            let _ = reply.send(Err(e.to_string()));
                        }
                    }
                }
                Ok(CoreMsg::Shutdown) | Err(RecvTimeoutError::Disconnected) => {
                    // Every source has stopped and its last batch is applied.
                    self.tick()?;
                    return Ok(());
                }
                Err(RecvTimeoutError::Timeout) => {}
            }
            if Instant::now() >= next_tick {
                self.tick()?;
                next_tick = Instant::now() + TICK;
            }
        }
    }
}

fn anchor_every(cfg: &config::Config) -> Option<Duration> {
    Some(cfg.tracking.anchor_interval).filter(|d| !d.is_zero())
}

/// When the next `anchor` record is due: `every` after the last one the
/// store remembers (at once when that is past), or `every` from now when
/// there was none (or it cannot be read).
fn next_anchor(store: &Store, every: Option<Duration>) -> Instant {
    let every = every.unwrap_or_default();
    let last = store.audit_last_anchor().unwrap_or_else(|e| {
        tracing::warn!("cannot read the last anchor's time: {e}");
        None
    });
    let wait = match last {
        Some(at) => {
            let since = Duration::from_millis(now_ms().saturating_sub(at).max(0) as u64);
            every.saturating_sub(since)
        }
        None => every,
    };
    Instant::now() + wait
}

/// Applies the transitions imported while the agent was stopped, before
/// the first tick, as the running agent would have at their import.
fn drain_pending(
    cfg: &config::Config,
    tracker: &mut Tracker,
    metrics: &mut Metrics,
    store: &Store,
) -> Result<(), CoreError> {
    let pending = store.pending_len()?;
    if pending == 0 {
        return Ok(());
    }
    if !cfg.spool.track_imports {
        tracing::warn!(
            "{pending} imported transitions wait for the tracker but [spool] track_imports = \
             false: they stay pending (set it to true to track them)"
        );
        return Ok(());
    }
    let mut committed = |effects: Vec<Effect>| {
        for e in &effects {
            metrics.apply(e);
        }
    };
    // `[notify] imported`: the drained events notify as a live import would.
    let router = crate::notifications::Router::from_config(cfg).filter(|r| r.imported);
    let n =
        crate::spool::relay::drain_pending_notify(tracker, store, &mut committed, router.as_ref())?;
    tracing::info!("tracked {n} transitions imported while the agent was stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn due_in(store: &Store, every: Duration) -> Duration {
        next_anchor(store, Some(every)).saturating_duration_since(Instant::now())
    }

    /// A restarted agent anchors one interval after the last anchor the
    /// store remembers: not at once, not a full interval after its start.
    #[test]
    fn the_next_anchor_is_one_interval_after_the_last_one_kept() {
        let store = Store::in_memory().unwrap();
        let hour = Duration::from_secs(3600);
        let anchor = |at: crate::event::TimeMs| {
            store
                .audit_anchor(at, |h| crate::store::audit::anchor_record(h, "h", "", at))
                .unwrap();
        };
        // never anchored: one interval from now
        assert!(due_in(&store, hour) > hour - Duration::from_secs(60));
        anchor(now_ms() - 20 * 60_000);
        let d = due_in(&store, hour);
        assert!(
            d > Duration::from_secs(39 * 60) && d <= Duration::from_secs(40 * 60),
            "{d:?}"
        );
        anchor(now_ms() - 2 * 3_600_000);
        assert_eq!(due_in(&store, hour), Duration::ZERO);
        // a clock set back since the last anchor: at most one interval
        anchor(now_ms() + 5 * 3_600_000);
        assert!(due_in(&store, hour) <= hour);
    }
}
