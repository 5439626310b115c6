//! `relstat run`: the runtime of the long-running agent: it wires the
//! parts, starts the threads, and handles signals and reloads.
//!
//! Threads and who owns what:
//! - one thread per file, poll or Kubernetes source, blocking I/O, handing
//!   [`crate::ingest::SourceBatch`]es to the core through one
//!   [`crate::ingest::Ingest`] (backpressure: the core's bounded channel,
//!   and with `[spool] when_full = "block"` a full outbox, block the source,
//!   and its input keeps what is not read yet);
//! - the core thread ([`crate::core`]), the single owner of the tracker and
//!   the store: it applies and commits the batches and runs the tick;
//! - with `[siem]`, the forwarder thread, sharing the store (redb serializes
//!   its writes with the core's): it drains the outbox the core fills
//!   ([`crate::sinks::siem`]); the outbox policy ([`crate::spool::outbox`])
//!   decides what the producers may add;
//! - the tokio runtime: the HTTP listener and the signals. SIGTERM/SIGINT
//!   stop the sources, let the core commit what they read, and exit; SIGHUP
//!   reloads the configuration when it validates (else keeps the old one and
//!   logs why) by stopping the sources, rebuilding the core from the store
//!   with the new configuration, and starting the sources again.
//!
//! A dead core (a store write failed: disk full, I/O error; or a panic)
//! cannot be worked around: the sources would stop, webhooks would be
//! refused, and nothing would commit again. So `/healthz` and `/readyz`
//! answer 503 with the reason ([`crate::core::Health`]), and after
//! [`DEAD_CORE_GRACE`] the agent stops and exits with status 1, for the
//! service manager to restart it; the store still holds the last commit and
//! the sources' checkpoints, so the restarted agent re-reads what was not
//! committed.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;

use crate::config::{self, Loaded, SourceType};
use crate::core::{Checkpoints, Core, CoreError, CoreHandle, Health, set_spool_gauges};
use crate::event::now_ms;
use crate::model::Model;
use crate::sinks::metrics::Metrics;
use crate::sinks::siem::{Forwarder, Observer};
use crate::sources::file::FileSource;
use crate::sources::line::LineParser;
use crate::spool::outbox::Outbox;
use crate::store::{OutboxStats, Store, StoreError};

pub use crate::core::{DEAD_CORE_GRACE, TICK};

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Core(#[from] CoreError),
    #[error("source {source_name}: {detail}")]
    Source { source_name: String, detail: String },
    #[error("the model is invalid (run check-config)")]
    Model,
    #[error("http: {0}")]
    Http(#[from] crate::http::HttpError),
    #[error("cannot start the runtime: {0}")]
    Runtime(std::io::Error),
    #[error("siem: {0}")]
    Siem(#[from] crate::sinks::siem::transport::TransportError),
    #[error("notify: {0}")]
    Notify(#[from] crate::sinks::notify::notifier::NotifyError),
}

/// State the HTTP listener reads.
pub struct Shared {
    pub metrics: Arc<Mutex<Metrics>>,
    ready: AtomicBool,
    /// The way into the core for /api and /hooks.
    pub core: CoreHandle,
    /// The webhook sources of the running configuration (`/hooks/{name}`).
    pub hooks: crate::sources::webhook::SharedHooks,
    /// The webhooks' way into the core (the outbox policy admits them).
    ingest: crate::ingest::Ingest,
    /// The `[http.partners]` user names (replaced on reload): refused
    /// `/metrics`, whose process, source and spool series cannot be scoped.
    partner_users: std::sync::RwLock<std::collections::BTreeSet<String>>,
    /// The HTTP listener's connection counters, once it is bound.
    http: OnceLock<Arc<crate::http::ConnStats>>,
    /// Whether the core thread is alive.
    health: Arc<Health>,
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
        self.health.dead()
    }

    fn ready(&self) -> Result<(), String> {
        self.health.dead()?;
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
        Box::pin(async move {
            let count_error =
                |source: &str, kind: &'static str| self.lock_metrics().source_error(source, kind);
            crate::sources::webhook::serve(&self.hooks, &self.ingest, &count_error, source, req)
                .await
        })
    }

    fn api<'a>(
        &'a self,
        path: &'a str,
        req: hyper::Request<hyper::body::Bytes>,
    ) -> crate::http::ResponseFuture<'a> {
        Box::pin(crate::api::serve(&self.core, path, req))
    }
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
        core: &CoreHandle,
        once: bool,
        outbox: Option<Arc<Outbox>>,
    ) -> Result<Sources, AgentError> {
        let cfg = &loaded.config;
        let model = Model::from_config(&cfg.model).map_err(|_| AgentError::Model)?;
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        let budget = crate::sources::file::tail::FdBudget::new(cfg.agent.max_open_files);
        // One admission path for every source thread: under `when_full =
        // "block"` each waits in `submit` while the outbox is full.
        let ingest = core.ingest(outbox).with_stop(stop.clone());
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
                    ingest.clone(),
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
            // A full blocking spool holds the batch in `submit`, uncommitted:
            // the file keeps its lines and the checkpoint stays behind them.
            let ingest = ingest.clone();
            let stop = stop.clone();
            let handle = std::thread::Builder::new()
                .name(format!("source-{}", s.name))
                .spawn(move || source.run(ingest, stop, once))
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
    let (core_handle, inbox) = crate::core::channel();
    let outbox = Outbox::for_config(&loaded.config).map(Arc::new);
    let metrics = Arc::new(Mutex::new(metrics));
    let health = Arc::new(Health::default());
    let shared = Arc::new(Shared {
        metrics: metrics.clone(),
        ready: AtomicBool::new(false),
        core: core_handle.clone(),
        hooks: std::sync::RwLock::new(Arc::new(hooks_for(&loaded)?)),
        ingest: core_handle.ingest(outbox.clone()),
        partner_users: Default::default(),
        http: OnceLock::new(),
        health: health.clone(),
    });
    shared.set_partners(&loaded.config);
    let cfg = &loaded.config;
    let sink = cfg
        .siem
        .as_ref()
        .map_or("none", crate::sinks::siem::forward::sink_name);
    let forward_stop = Arc::new(AtomicBool::new(false));
    let forwarder = match (&cfg.siem, &outbox) {
        (Some(siem), Some(outbox)) => {
            let host = cfg.agent.host();
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
                outbox.clone(),
                forward_stop.clone(),
            )?;
            Some(f.spawn().map_err(AgentError::Runtime)?)
        }
        _ => None,
    };
    let notifier = match &cfg.notify {
        Some(n) if !n.destinations.is_empty() => Some(
            crate::sinks::notify::notifier::Notifier::start(n, store.clone(), metrics.clone())?,
        ),
        _ => None,
    };
    let stop_forwarder = move || {
        forward_stop.store(true, Ordering::Relaxed);
        if let Some(f) = forwarder {
            let _ = f.join();
        }
        if let Some(n) = notifier {
            n.stop();
        }
    };
    let core = Core::new(
        &loaded,
        tracker,
        store.clone(),
        outbox.clone(),
        sink,
        metrics,
    );
    let core_thread = core.spawn(inbox, health).map_err(AgentError::Runtime)?;
    let sources = Sources::start(&loaded, &checkpoints, &core_handle, once, outbox.clone())?;
    shared.ready.store(true, Ordering::Relaxed);

    if once {
        sources.stop_when_done();
        // Shared holds a sender too: the core stops on this message, after
        // every batch the sources sent before it.
        core_handle.shutdown();
        let r = core_thread.join().map_err(|_| CoreError::Gone)?;
        stop_forwarder();
        return r.map_err(AgentError::from);
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
        core_handle.clone(),
        outbox,
        store,
    ));
    core_handle.shutdown();
    drop(core_handle);
    let core_result = core_thread
        .join()
        .map_err(|_| CoreError::Gone)?
        .map_err(AgentError::from);
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
    core: CoreHandle,
    outbox: Option<Arc<Outbox>>,
    store: Arc<Store>,
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
            if let Err(e) = crate::admin::serve(&dir, core, store).await {
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
            () = shared.health.died() => {
                // The core's error is what `run` returns (exit status 1).
                tokio::time::sleep(DEAD_CORE_GRACE).await;
                tracing::info!("stopping: the core is dead");
                break;
            }
            _ = hup.recv() => {
                match crate::check::load(config_path.as_deref()) {
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
                        let (handle, loaded) = (core.clone(), new.clone());
                        let reply = tokio::task::spawn_blocking(move || handle.reload_blocking(loaded)).await;
                        match reply {
                            Ok(Ok(Ok(checkpoints))) => {
                                shared.set_partners(&new.config);
                                match hooks_for(&new) {
                                    Ok(h) => *shared.hooks.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(h),
                                    Err(e) => tracing::error!("webhook sources keep their previous settings: {e}"),
                                }
                                sources = Sources::start(&new, &checkpoints, &core, false, outbox.clone())?;
                                current = new;
                                tracing::info!("configuration reloaded");
                            }
                            Ok(Ok(Err(e))) => {
                                tracing::error!("reload failed after stopping the sources ({e}): exiting so the service manager restarts relstat");
                                return Err(AgentError::Source { source_name: "reload".into(), detail: e });
                            }
                            _ => return Err(CoreError::Gone.into()),
                        }
                    }
                }
            }
        }
    }
    if shared.health.dead().is_ok() {
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
