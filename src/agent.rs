//! `relstat run`: the long-running agent.
//!
//! Threads and who owns what:
//! - one thread per file source, blocking I/O, sending [`SourceBatch`]es into
//!   a bounded channel (backpressure: a full channel blocks the reader, and
//!   the files keep what is not read yet);
//! - the core thread, the single owner of the tracker and the store: for each
//!   batch it applies the events, commits state + history + outbox +
//!   checkpoint + counters in one transaction, then updates the metrics;
//!   every [`TICK`] it runs the periodic check (stuck, staleness, retention);
//! - with `[siem]`, the forwarder thread, sharing the store (redb serializes
//!   its writes with the core's): it drains the outbox the core fills
//!   ([`crate::sinks::siem`]); with `[spool] when_full = "block"` sources
//!   wait before sending a batch while the outbox is over `max_bytes`;
//! - the tokio runtime: the HTTP listener and the signals. SIGTERM/SIGINT
//!   stop the sources, let the core commit what they read, and exit; SIGHUP
//!   reloads the configuration when it validates (else keeps the old one and
//!   logs why) by stopping the sources, rebuilding the core from the store
//!   with the new configuration, and starting the sources again.
//!
//! A dead core (a store write failed: disk full, I/O error; or a panic)
//! cannot be worked around: the sources would stop, webhooks would be
//! refused, and nothing would commit again. So `/healthz` and `/readyz`
//! answer 503 with the reason, and after [`DEAD_CORE_GRACE`] the agent stops
//! and exits with status 1, for the service manager to restart it; the
//! store still holds the last commit and the sources' checkpoints, so the
//! restarted agent re-reads what was not committed.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::config::{self, Loaded, SourceType};
use crate::event::{InputResult, now_ms};
use crate::model::Model;
use crate::sinks::metrics::Metrics;
use crate::sinks::siem::{Forwarder, Observer, SpoolGate};
use crate::sources::file::FileSource;
use crate::sources::line::LineParser;
use crate::sources::{Item, SourceBatch};
use crate::store::{OutboxStats, Store, StoreError};
use crate::track::{Effect, Tracker};

/// How often the periodic check runs (the stuck rule: at least every 15 s).
pub const TICK: Duration = Duration::from_secs(5);

/// After the core died, the listener keeps answering (503, with the reason)
/// this long before the agent exits, so probes and people see why.
pub const DEAD_CORE_GRACE: Duration = Duration::from_secs(3);

/// At most this many waiting source batches share one store transaction.
const GROUP: usize = 16;
/// Batches in flight between the sources and the core. Small on purpose:
/// it bounds how far reading runs past a full spool (`when_full = "block"`
/// waits between batches) and how long a webhook waits behind file batches.
const CHANNEL: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("source {source_name}: {detail}")]
    Source { source_name: String, detail: String },
    #[error("metrics: {0}")]
    Metrics(#[from] crate::sinks::metrics::MetricsError),
    #[error("the model is invalid (run check-config)")]
    Model,
    #[error("http: {0}")]
    Http(#[from] crate::http::HttpError),
    #[error("cannot start the runtime: {0}")]
    Runtime(std::io::Error),
    #[error("the core stopped unexpectedly")]
    CoreGone,
    #[error("the core panicked (the message is in the log above)")]
    CorePanicked,
    #[error("siem: {0}")]
    Siem(#[from] crate::sinks::siem::transport::TransportError),
    #[error(
        "a tracked import failed in the store ({0}): the tracker may be ahead of the store; \
         stopping so that a restart rebuilds it from the store (the import resumes when run again)"
    )]
    Diverged(String),
}

/// Source checkpoints by name, as the store holds them.
type Checkpoints = BTreeMap<String, Vec<u8>>;

/// What the core thread receives.
enum CoreMsg {
    Batch(SourceBatch),
    /// Run a closure on the core thread (webhooks, API, admin socket).
    Call(Box<dyn FnOnce(&mut Core) + Send>),
    /// Rebuild from the store with this config; answer with the checkpoints.
    Reload(
        Box<Loaded>,
        SyncSender<Result<BTreeMap<String, Vec<u8>>, String>>,
    ),
    Shutdown,
}

/// State the HTTP listener reads.
pub struct Shared {
    pub metrics: Mutex<Metrics>,
    ready: AtomicBool,
    /// The way into the core for /api and /hooks.
    pub core: CoreHandle,
    /// The webhook sources of the running configuration (`/hooks/{name}`).
    pub hooks: crate::sources::webhook::SharedHooks,
    /// The `[http.partners]` user names (replaced on reload): refused
    /// `/metrics`, whose process, source and spool series cannot be scoped.
    partner_users: std::sync::RwLock<std::collections::BTreeSet<String>>,
    /// The HTTP listener's connection counters, once it is bound.
    http: OnceLock<Arc<crate::http::ConnStats>>,
    /// Why the core thread stopped, once it has.
    dead: Mutex<Option<String>>,
    /// Wakes the async side when the core dies.
    died: tokio::sync::Notify,
}

/// A handle to the core thread: runs closures there, one at a time, in
/// order with the source batches, so they see (and may change) the tracker
/// and the store with no other owner.
#[derive(Clone)]
pub struct CoreHandle {
    tx: SyncSender<CoreMsg>,
}

impl CoreHandle {
    /// Runs `f` on the core thread and waits (blocking) for its result.
    pub fn call_blocking<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Core) -> R + Send + 'static,
    ) -> Result<R, AgentError> {
        let (reply_tx, reply_rx) = std::sync::mpsc::sync_channel(1);
        let msg = CoreMsg::Call(Box::new(move |core: &mut Core| {
            let _ = reply_tx.send(f(core));
        }));
        self.tx.send(msg).map_err(|_| AgentError::CoreGone)?;
        reply_rx.recv().map_err(|_| AgentError::CoreGone)
    }

    /// Runs `f` on the core thread from async code.
    pub async fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Core) -> R + Send + 'static,
    ) -> Result<R, AgentError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.call_blocking(f))
            .await
            .map_err(|_| AgentError::CoreGone)?
    }
}

impl Shared {
    fn lock_metrics(&self) -> std::sync::MutexGuard<'_, Metrics> {
        self.metrics.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set_partners(&self, cfg: &config::Config) {
        let users = cfg.http.partners.keys().cloned().collect();
        *self
            .partner_users
            .write()
            .unwrap_or_else(|p| p.into_inner()) = users;
    }

    /// Records that the core thread stopped with `error` and wakes the async
    /// side, which makes the agent exit.
    fn core_died(&self, error: &AgentError) {
        tracing::error!(
            "the core stopped: {error}; nothing is committed any more: /healthz and /readyz \
             answer 503 and relstat exits with status 1 in {DEAD_CORE_GRACE:?} for the \
             service manager to restart it (what was not committed is read again then)"
        );
        *self.dead.lock().unwrap_or_else(|p| p.into_inner()) = Some(error.to_string());
        self.died.notify_one();
    }

    /// Why the core stopped, if it has: `/healthz`'s and `/readyz`'s answer.
    fn dead(&self) -> Result<(), String> {
        match &*self.dead.lock().unwrap_or_else(|p| p.into_inner()) {
            None => Ok(()),
            Some(e) => Err(format!(
                "core stopped: {e}; relstat is exiting to be restarted"
            )),
        }
    }
}

/// The forwarder's reports, as the metrics of docs/metrics.md.
struct ForwardObserver {
    shared: Arc<Shared>,
    sink: &'static str,
}

impl Observer for ForwardObserver {
    fn count(&self, result: &'static str, n: u64) {
        self.shared
            .lock_metrics()
            .forward_events
            .with_label_values(&[self.sink, result])
            .inc_by(n);
    }
    fn connected(&self, up: bool) {
        self.shared
            .lock_metrics()
            .forward_connected
            .with_label_values(&[self.sink])
            .set(i64::from(up));
    }
    fn spool(&self, stats: &OutboxStats) {
        set_spool_gauges(&self.shared.lock_metrics(), stats, now_ms());
    }
}

fn set_spool_gauges(m: &Metrics, stats: &OutboxStats, now: crate::event::TimeMs) {
    m.spool_events.set(stats.events as i64);
    m.spool_bytes.set(stats.bytes as i64);
    m.spool_oldest_age.set(
        stats
            .oldest_detected_at
            .map_or(0.0, |t| ((now - t).max(0)) as f64 / 1000.0),
    );
}

impl crate::http::Service for Shared {
    fn metrics(&self) -> String {
        let mut m = self.metrics.lock().unwrap_or_else(|p| p.into_inner());
        m.expire(now_ms());
        if let Some(http) = self.http.get() {
            let refused: Vec<(&str, u64)> = crate::http::Refusal::ALL
                .iter()
                .map(|r| (r.as_str(), http.refused(*r)))
                .collect();
            m.set_http(http.open(), &refused);
        }
        m.render()
    }

    fn metrics_allowed(&self, user: &str) -> bool {
        !self
            .partner_users
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(user)
    }

    fn healthy(&self) -> Result<(), String> {
        self.dead()
    }

    fn ready(&self) -> Result<(), String> {
        self.dead()?;
        if self.ready.load(Ordering::Relaxed) {
            Ok(())
        } else {
            Err("starting: store opening or sources not started yet".into())
        }
    }

    fn hook<'a>(
        &'a self,
        source: &'a str,
        req: hyper::Request<crate::http::PendingBody>,
    ) -> crate::http::ResponseFuture<'a> {
        Box::pin(crate::sources::webhook::serve(self, source, req))
    }

    fn api<'a>(
        &'a self,
        path: &'a str,
        req: hyper::Request<hyper::body::Bytes>,
    ) -> crate::http::ResponseFuture<'a> {
        Box::pin(crate::api::serve(&self.core, path, req))
    }
}

/// The core: tracker, store and the metrics it feeds. Only the core thread
/// touches it; other threads go through [`CoreHandle`].
pub struct Core {
    tracker: Tracker,
    store: Arc<Store>,
    /// The outbox's fill state (`[spool] max_bytes`); `None` without an outbox.
    gate: Option<Arc<SpoolGate>>,
    /// The `sink` label for dropped records.
    sink: &'static str,
    shared: Arc<Shared>,
    /// Each source's last word on whether it has read its backlog.
    caught_up: BTreeMap<String, bool>,
    /// `[http.partners]`: the API's partner views (replaced on reload).
    partners: BTreeMap<String, config::PartnerConfig>,
    /// Site, host and keys for `spool export|import` (replaced on reload).
    bundles: crate::spool::Settings,
    /// Set when a tracked import failed in the store: the core stops.
    diverged: Option<String>,
}

impl Core {
    /// Builds the tracker and the metrics for `loaded` from what the store holds.
    pub(crate) fn build(
        loaded: &Loaded,
        store: &Store,
    ) -> Result<(Tracker, Metrics, Checkpoints), AgentError> {
        let cfg = &loaded.config;
        let mut tracker = Tracker::from_config(cfg, true).map_err(|_| AgentError::Model)?;
        let mut metrics = Metrics::new(&cfg.tracking, true)?;
        let snap = store.load()?;
        for s in &cfg.sources {
            metrics.declare_source(&s.name);
        }
        metrics.restore_counters(&snap.counters);
        tracker.restore(snap.keys, snap.seen, snap.failing, snap.approvals);
        for e in tracker.take_effects() {
            metrics.apply(&e);
        }
        drain_pending(cfg, &mut tracker, &mut metrics, store)?;
        store.set_dlq_limits((&cfg.dlq).into());
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
        Ok((tracker, metrics, snap.checkpoints))
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
        let (store, settings, shared) = (
            self.store.clone(),
            self.bundles.clone(),
            self.shared.clone(),
        );
        let result = if settings.track_imports {
            let mut committed = |effects: Vec<Effect>| {
                let mut m = shared.lock_metrics();
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
        self.shared
            .metrics
            .lock()
            .unwrap_or_else(|p| p.into_inner())
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
        entries: Vec<crate::admin::ReplayEntry>,
    ) -> Result<Vec<crate::admin::Replayed>, StoreError> {
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
            out.push(crate::admin::Replayed {
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
        let dlq = self
            .store
            .commit_with_dead(&batch, checkpoints, &counters, dead, now_ms())?;
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

    /// Applies `[spool] max_bytes`: drops the oldest records (`drop_oldest`)
    /// or marks the outbox full (`block`); keeps the spool gauges current.
    fn check_spool(&mut self) -> Result<(), StoreError> {
        let Some(gate) = &self.gate else {
            return Ok(());
        };
        let mut stats = self.store.outbox_stats()?;
        if gate.policy() == crate::config::WhenFull::DropOldest && stats.bytes > gate.max_bytes() {
            let n = self.store.outbox_drop_oldest(gate.max_bytes())?;
            tracing::warn!(
                "spool full: dropped the {n} oldest SIEM records (when_full = \"drop_oldest\")"
            );
            self.metrics()
                .forward_events
                .with_label_values(&[self.sink, "dropped"])
                .inc_by(n);
            stats = self.store.outbox_stats()?;
        }
        gate.update(&stats);
        set_spool_gauges(&self.metrics(), &stats, now_ms());
        Ok(())
    }

    fn tick(&mut self) -> Result<(), StoreError> {
        let now = now_ms();
        // While a blocking spool is full, the stuck check waits: an episode
        // found later is written when room returns (the key stays stuck).
        let full = self.gate.as_ref().is_some_and(|g| g.is_full());
        let caught_up = self.caught_up.values().all(|c| *c) && !full;
        self.tracker.tick(now, caught_up);
        self.commit(&[])?;
        let stats = self.store.outbox_stats()?;
        if let Some(g) = &self.gate {
            g.update(&stats);
        }
        let mut m = self.metrics();
        set_spool_gauges(&m, &stats, now);
        m.expire(now);
        Ok(())
    }

    /// The core thread's loop.
    fn run(mut self, rx: Receiver<CoreMsg>) -> Result<(), AgentError> {
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
                Ok(CoreMsg::Batch(b)) => {
                    let mut group = vec![b];
                    while group.len() < GROUP {
                        match rx.try_recv() {
                            Ok(CoreMsg::Batch(b)) => group.push(b),
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
                        return Err(AgentError::Diverged(e));
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
                            self.shared.set_partners(&loaded.config);
                            self.bundles = crate::spool::Settings::from_config(&loaded.config);
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

/// Applies the transitions imported while the agent was stopped, before
/// the first tick, as the running agent would have at their import.
fn drain_pending(
    cfg: &config::Config,
    tracker: &mut Tracker,
    metrics: &mut Metrics,
    store: &Store,
) -> Result<(), AgentError> {
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
    let n = crate::spool::relay::drain_pending(tracker, store, &mut committed)?;
    tracing::info!("tracked {n} transitions imported while the agent was stopped");
    Ok(())
}

/// Running source threads and how to stop them.
struct Sources {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Sources {
    fn start(
        loaded: &Loaded,
        checkpoints: &Checkpoints,
        tx: &SyncSender<CoreMsg>,
        once: bool,
        gate: Option<Arc<SpoolGate>>,
    ) -> Result<Sources, AgentError> {
        let cfg = &loaded.config;
        let model = Model::from_config(&cfg.model).map_err(|_| AgentError::Model)?;
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        let budget = crate::sources::file::tail::FdBudget::new(cfg.agent.max_open_files);
        for s in &cfg.sources {
            if s.kind == SourceType::Webhook {
                continue; // served by the HTTP listener (`Shared::hooks`)
            }
            if matches!(s.kind, SourceType::Poll | SourceType::Kubernetes) {
                let handle = crate::sources::poll_thread(
                    s,
                    &model,
                    cfg,
                    checkpoints,
                    tx_fn(tx),
                    &stop,
                    once,
                )
                .map_err(|detail| AgentError::Source {
                    source_name: s.name.clone(),
                    detail,
                })?;
                threads.push(handle);
                continue;
            }
            let parser =
                LineParser::new(s, &model, &cfg.agent.site).map_err(|e| AgentError::Source {
                    source_name: s.name.clone(),
                    detail: e.to_string(),
                })?;
            let cp = checkpoints.get(&crate::sources::file::checkpoint_name(&s.name));
            let source =
                FileSource::new(s, parser, cp.map(|v| v.as_slice())).with_budget(budget.clone());
            let tx = tx.clone();
            let (gate, stop_send) = (gate.clone(), stop.clone());
            // A full blocking spool holds the batch here, uncommitted: the
            // file keeps its lines and the checkpoint stays behind them.
            let send: crate::sources::file::Sender = Arc::new(move |b| {
                while gate.as_ref().is_some_and(|g| g.is_full()) {
                    if stop_send.load(Ordering::Relaxed) {
                        return false;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                tx.send(CoreMsg::Batch(b)).is_ok()
            });
            let stop = stop.clone();
            let handle = std::thread::Builder::new()
                .name(format!("source-{}", s.name))
                .spawn(move || source.run(send, stop, once))
                .map_err(AgentError::Runtime)?;
            threads.push(handle);
        }
        Ok(Sources { stop, threads })
    }

    /// Stops the sources; their last batches are already in the channel
    /// when this returns.
    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// A batch sender into the core for a source thread.
fn tx_fn(tx: &SyncSender<CoreMsg>) -> crate::sources::file::Sender {
    let tx = tx.clone();
    Arc::new(move |b| tx.send(CoreMsg::Batch(b)).is_ok())
}

/// The webhook sources of `loaded` (secrets read now).
fn hooks_for(loaded: &Loaded) -> Result<crate::sources::webhook::Hooks, AgentError> {
    let model = Model::from_config(&loaded.config.model).map_err(|_| AgentError::Model)?;
    crate::sources::webhook::Hooks::from_config(&loaded.config, &model).map_err(|e| {
        AgentError::Source {
            source_name: "webhook".into(),
            detail: e.to_string(),
        }
    })
}

/// Runs the agent until a signal (or, with `once`, until every source's
/// backlog is read and committed).
pub fn run(config_path: Option<PathBuf>, loaded: Loaded, once: bool) -> Result<(), AgentError> {
    let store = Arc::new(Store::open(&loaded.config.agent.data_dir)?);
    let (tracker, metrics, checkpoints) = Core::build(&loaded, &store)?;
    let (tx, rx) = std::sync::mpsc::sync_channel::<CoreMsg>(CHANNEL);
    let shared = Arc::new(Shared {
        metrics: Mutex::new(metrics),
        ready: AtomicBool::new(false),
        core: CoreHandle { tx: tx.clone() },
        hooks: std::sync::RwLock::new(Arc::new(hooks_for(&loaded)?)),
        partner_users: Default::default(),
        http: OnceLock::new(),
        dead: Mutex::new(None),
        died: tokio::sync::Notify::new(),
    });
    shared.set_partners(&loaded.config);
    let cfg = &loaded.config;
    let gate =
        (cfg.siem.is_some() || cfg.spool.enabled).then(|| Arc::new(SpoolGate::new(&cfg.spool)));
    let sink = cfg
        .siem
        .as_ref()
        .map_or("none", crate::sinks::siem::forward::sink_name);
    let forward_stop = Arc::new(AtomicBool::new(false));
    let forwarder = match (&cfg.siem, &gate) {
        (Some(siem), Some(gate)) => {
            let host = cfg
                .agent
                .hostname
                .clone()
                .unwrap_or_else(crate::cli::hostname);
            let observer = Arc::new(ForwardObserver {
                shared: shared.clone(),
                sink,
            });
            let f = Forwarder::new(
                siem,
                &host,
                &cfg.agent.site,
                store.clone(),
                observer,
                gate.clone(),
                forward_stop.clone(),
            )?;
            Some(f.spawn().map_err(AgentError::Runtime)?)
        }
        _ => None,
    };
    let stop_forwarder = move || {
        forward_stop.store(true, Ordering::Relaxed);
        if let Some(f) = forwarder {
            let _ = f.join();
        }
    };
    let core = Core {
        tracker,
        store,
        gate: gate.clone(),
        sink,
        shared: shared.clone(),
        caught_up: loaded
            .config
            .sources
            .iter()
            .filter(|s| s.kind != SourceType::Webhook)
            .map(|s| (s.name.clone(), false))
            .collect(),
        partners: loaded.config.http.partners.clone(),
        bundles: crate::spool::Settings::from_config(&loaded.config),
        diverged: None,
    };
    let core_shared = shared.clone();
    let core_thread = std::thread::Builder::new()
        .name("core".into())
        .spawn(move || {
            // A panic is a dead core too: it must reach /readyz and the exit status.
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| core.run(rx)))
                .unwrap_or(Err(AgentError::CorePanicked));
            if let Err(e) = &r {
                core_shared.core_died(e);
            }
            r
        })
        .map_err(AgentError::Runtime)?;
    let sources = Sources::start(&loaded, &checkpoints, &tx, once, gate.clone())?;
    shared.ready.store(true, Ordering::Relaxed);

    if once {
        sources.stop_when_done();
        // Shared holds a sender too: the core stops on this message, after
        // every batch the sources sent before it.
        let _ = tx.send(CoreMsg::Shutdown);
        let r = core_thread.join().map_err(|_| AgentError::CoreGone)?;
        stop_forwarder();
        return r;
    }

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(AgentError::Runtime)?;
    let result = rt.block_on(serve(
        config_path,
        loaded,
        shared,
        sources,
        tx.clone(),
        gate,
    ));
    let _ = tx.send(CoreMsg::Shutdown);
    drop(tx);
    let core_result = core_thread.join().map_err(|_| AgentError::CoreGone)?;
    stop_forwarder();
    result.and(core_result)
}

impl Sources {
    /// `--once`: every source thread ends by itself after its backlog.
    fn stop_when_done(self) {
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// The async side: HTTP, signals, reloads. Returns when told to stop.
async fn serve(
    config_path: Option<PathBuf>,
    loaded: Loaded,
    shared: Arc<Shared>,
    mut sources: Sources,
    tx: SyncSender<CoreMsg>,
    gate: Option<Arc<SpoolGate>>,
) -> Result<(), AgentError> {
    use tokio::signal::unix::{SignalKind, signal};
    let http_cfg = &loaded.config.http;
    let server = crate::http::Server::bind(&http_cfg.listen, http_cfg.web_config_file.as_deref())
        .await?
        .with_limits(http_cfg.max_connections_per_peer, http_cfg.header_timeout);
    let _ = shared.http.set(server.stats());
    tracing::info!(listen = %server.local_addr(), "relstat is running");
    let data_dir = loaded.config.agent.data_dir.clone();
    let admin = {
        let (dir, core) = (data_dir.clone(), shared.core.clone());
        tokio::spawn(async move {
            if let Err(e) = crate::admin::serve(&dir, core).await {
                tracing::error!("admin socket stopped: {e}");
            }
        })
    };
    let (stop_http_tx, stop_http_rx) = tokio::sync::oneshot::channel::<()>();
    let svc: Arc<dyn crate::http::Service> = shared.clone();
    let http = tokio::spawn(server.run(svc, async move {
        let _ = stop_http_rx.await;
    }));
    let mut term = signal(SignalKind::terminate()).map_err(AgentError::Runtime)?;
    let mut int = signal(SignalKind::interrupt()).map_err(AgentError::Runtime)?;
    let mut hup = signal(SignalKind::hangup()).map_err(AgentError::Runtime)?;
    let mut current = loaded;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            () = shared.died.notified() => {
                // The core's error is what `run` returns (exit status 1).
                tokio::time::sleep(DEAD_CORE_GRACE).await;
                tracing::info!("stopping: the core is dead");
                break;
            }
            _ = hup.recv() => {
                match config::load(config_path.as_deref()) {
                    Err(e) => tracing::error!("reload refused, keeping the running configuration: {e}"),
                    Ok(new) => {
                        if new.config.http.listen != current.config.http.listen {
                            tracing::warn!("[http] listen changed: takes effect at the next restart");
                        }
                        let (n, c) = (&new.config.http, &current.config.http);
                        if (n.max_connections_per_peer, n.header_timeout) != (c.max_connections_per_peer, c.header_timeout) {
                            tracing::warn!("[http] max_connections_per_peer or header_timeout changed: takes effect at the next restart");
                        }
                        if format!("{:?}{:?}", new.config.siem, new.config.spool) != format!("{:?}{:?}", current.config.siem, current.config.spool) {
                            tracing::warn!("[siem] or [spool] changed: takes effect at the next restart");
                        }
                        let old = std::mem::replace(&mut sources, Sources { stop: Arc::new(AtomicBool::new(true)), threads: vec![] });
                        tokio::task::spawn_blocking(move || old.stop()).await.ok();
                        let (reply_tx, reply_rx) = std::sync::mpsc::sync_channel(1);
                        let _ = tx.send(CoreMsg::Reload(Box::new(new.clone()), reply_tx));
                        let reply = tokio::task::spawn_blocking(move || reply_rx.recv()).await;
                        match reply {
                            Ok(Ok(Ok(checkpoints))) => {
                                match hooks_for(&new) {
                                    Ok(h) => *shared.hooks.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(h),
                                    Err(e) => tracing::error!("webhook sources keep their previous settings: {e}"),
                                }
                                sources = Sources::start(&new, &checkpoints, &tx, false, gate.clone())?;
                                current = new;
                                tracing::info!("configuration reloaded");
                            }
                            Ok(Ok(Err(e))) => {
                                tracing::error!("reload failed after stopping the sources ({e}): exiting so the service manager restarts relstat");
                                return Err(AgentError::Source { source_name: "reload".into(), detail: e });
                            }
                            _ => return Err(AgentError::CoreGone),
                        }
                    }
                }
            }
        }
    }
    if shared.dead().is_ok() {
        tracing::info!("stopping: committing what the sources read");
    }
    tokio::task::spawn_blocking(move || sources.stop())
        .await
        .ok();
    let _ = stop_http_tx.send(());
    let _ = http.await;
    admin.abort();
    crate::admin::remove(&data_dir);
    Ok(())
}
