//! The local admin socket (`relstat spool`, `relstat status`, `relstat readiness`): while the
//! agent runs it holds the store, so the CLI's `spool`, `status` and `readiness` commands talk
//! to it through `<data_dir>/admin.sock` (mode 0600: only the agent's user); when it is
//! stopped they open the store directly.
//!
//! Protocol: one JSON object per line each way. A request is
//! `{"cmd": "...", ...}`; the answer is `{"ok": true, "result": ...}` or
//! `{"ok": false, "error": "..."}`. Each connection may send several
//! requests; the agent answers them in order.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::core::{Core, CoreHandle};
use crate::store::{OutboxStats, Store, StoreError};

pub use crate::dlq::{ReplayEntry, Replayed};

/// The socket's file name inside data_dir.
pub const SOCKET: &str = "admin.sock";
/// The most one request line may be (newline included): a request names
/// files, so this is thousands of them. A longer line is answered with an
/// error and the connection closed, after reading at most this much.
pub const MAX_REQUEST: u64 = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("admin socket {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the agent answered: {0}")]
    Remote(String),
    #[error("bad answer from the agent's admin socket: {0}")]
    Protocol(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A request on the admin socket.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    /// Is the agent there?
    Ping,
    /// Counts, bytes and oldest age of the live spool.
    SpoolInspect,
    /// `relstat spool export`: the agent writes the bundle (paths absolute).
    SpoolExport { out: PathBuf, keep: bool },
    /// `relstat spool import`: the agent verifies and enqueues the bundles.
    SpoolImport { files: Vec<PathBuf> },
    /// `relstat dlq list|show`: the dead letters `filter` keeps.
    DlqList {
        #[serde(default)]
        filter: crate::store::DlqFilter,
    },
    /// `relstat dlq replay`: entries the CLI mapped through the current
    /// configuration, applied and marked replayed in one transaction.
    DlqReplay {
        entries: Vec<crate::dlq::ReplayEntry>,
    },
    /// `relstat audit verify`: the agent walks the audit chain.
    AuditVerify,
    /// `relstat audit export`: the agent writes the export (path absolute).
    AuditExport {
        out: PathBuf,
        select: crate::audit::Select,
    },
    /// `relstat status`: the rows of the release status API (full view).
    Status {
        #[serde(default)]
        filter: crate::api::view::Filter,
        #[serde(default)]
        at: Option<crate::event::TimeMs>,
        #[serde(default)]
        axis: crate::api::view::Axis,
    },
    /// `relstat readiness`: the go/no-go answer (full view); `null` for an
    /// unknown release.
    Readiness { ask: crate::track::readiness::Ask },
}

#[derive(Debug, Serialize, Deserialize)]
struct Answer {
    ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    result: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// The spool as `spool inspect` reports it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SpoolSummary {
    pub events: u64,
    pub bytes: u64,
    /// Seconds since the oldest pending event was detected.
    pub oldest_age_seconds: Option<f64>,
}

impl SpoolSummary {
    pub fn of(s: OutboxStats, now: crate::event::TimeMs) -> Self {
        Self {
            events: s.events,
            bytes: s.bytes,
            oldest_age_seconds: s
                .oldest_detected_at
                .map(|t| (now - t).max(0) as f64 / 1000.0),
        }
    }
}

/// Answers one request on the core thread.
fn handle(core: &mut Core, req: Request) -> Result<Value, String> {
    match req {
        Request::Ping => Ok(Value::String("pong".into())),
        Request::SpoolInspect => {
            let stats = core.store().outbox_stats().map_err(|e| e.to_string())?;
            serde_json::to_value(SpoolSummary::of(stats, crate::event::now_ms()))
                .map_err(|e| e.to_string())
        }
        Request::SpoolExport { out, keep } => {
            let r = crate::spool::bundle::export(core.store(), core.bundles(), &out, keep, false)
                .map_err(|e| e.to_string());
            // Exported records left the outbox: producers may be admitted again.
            core.outbox_changed();
            serde_json::to_value(r?).map_err(|e| e.to_string())
        }
        Request::SpoolImport { files } => {
            let r = core.import_bundles(&files).map_err(|e| e.to_string())?;
            serde_json::to_value(r).map_err(|e| e.to_string())
        }
        Request::DlqList { filter } => {
            let rows = core
                .store()
                .dlq_list(&filter, DLQ_LIST_MAX)
                .map_err(|e| e.to_string())?;
            serde_json::to_value(rows).map_err(|e| e.to_string())
        }
        Request::DlqReplay { entries } => {
            let results = core.replay_dead(entries).map_err(|e| e.to_string())?;
            serde_json::to_value(results).map_err(|e| e.to_string())
        }
        Request::Readiness { ask } => {
            let shown = crate::track::readiness::Shown { names: true };
            let answer = core
                .readiness(&ask, None, shown)
                .map_err(|e| e.to_string())?;
            serde_json::to_value(answer).map_err(|e| e.to_string())
        }
        // `serve` answers these off the core ([`off_core`]).
        Request::AuditVerify | Request::AuditExport { .. } => off_core(core.store(), req),
        Request::Status { filter, at, axis } => {
            let q = crate::api::Query { filter, at, axis };
            let t = core.tracker();
            let rows = crate::api::rows(
                t.keys(),
                core.store(),
                t.model(),
                t.settings().stale_after,
                crate::event::now_ms(),
                &q,
            )
            .map_err(|e| e.to_string())?;
            let mut rows = with_time_in_status(rows, at);
            crate::api::view::with_approvals(&mut rows, t.model(), t.approvals());
            serde_json::to_value(rows).map_err(|e| e.to_string())
        }
    }
}

/// Whether `req` is answered from the store alone ([`off_core`]).
fn is_off_core(req: &Request) -> bool {
    matches!(req, Request::AuditVerify | Request::AuditExport { .. })
}

/// Answers a request that reads the store only, in its own read transaction
/// on a blocking thread (redb's readers run beside the core's writes): a
/// walk of the whole audit chain must not hold up event processing.
fn off_core(store: &Store, req: Request) -> Result<Value, String> {
    match req {
        Request::AuditVerify => {
            let v = store.audit_verify().map_err(|e| e.to_string())?;
            serde_json::to_value(v).map_err(|e| e.to_string())
        }
        Request::AuditExport { out, select } => {
            let key = store.audit_signing_key();
            let r = crate::audit::export(store, &select, key.as_ref(), &out)
                .map_err(|e| e.to_string())?;
            serde_json::to_value(r).map_err(|e| e.to_string())
        }
        _ => Err("not a store request".into()),
    }
}

/// Fills each row's time in status, from `at` or now.
fn with_time_in_status(
    mut rows: Vec<crate::api::view::Row>,
    at: Option<crate::event::TimeMs>,
) -> Vec<crate::api::view::Row> {
    let reference = at.unwrap_or_else(crate::event::now_ms);
    for r in &mut rows {
        r.time_in_status_seconds = Some((reference - r.entered_at_ms).max(0) as f64 / 1000.0);
    }
    rows
}

/// `relstat status`: through the agent when it runs, else from the store
/// (the model and stale_after come from `loaded`). With the rows, how many
/// imported transitions wait for the agent's tracker (a stopped agent's
/// store; the running agent applied them at its start).
pub fn status(
    loaded: &crate::config::Loaded,
    q: crate::api::Query,
) -> Result<(Vec<crate::api::view::Row>, u64), AdminError> {
    let data_dir = &loaded.config.agent.data_dir;
    let req = Request::Status {
        filter: q.filter.clone(),
        at: q.at,
        axis: q.axis,
    };
    if let Some(v) = request(data_dir, &req)? {
        let rows = serde_json::from_value(v).map_err(|e| AdminError::Protocol(e.to_string()))?;
        return Ok((rows, 0));
    }
    let model = crate::model::Model::from_config(&loaded.config.model)
        .map_err(|_| AdminError::Remote("the model is invalid (run check-config)".into()))?;
    let store = Store::open(data_dir)?;
    let snap = store.load()?;
    let keys = snap.keys;
    let approvals: crate::detect::Approvals = snap
        .approvals
        .into_iter()
        .map(|(r, s, list)| ((r, s), list))
        .collect();
    let mut rows = crate::api::rows(
        keys.iter().map(|(k, s)| (k, s)),
        &store,
        &model,
        loaded.config.tracking.stale_after.as_millis() as crate::event::TimeMs,
        crate::event::now_ms(),
        &q,
    )?;
    rows = with_time_in_status(rows, q.at);
    crate::api::view::with_approvals(&mut rows, &model, &approvals);
    Ok((rows, store.pending_len()?))
}

/// `relstat readiness`: through the agent when it runs, else from the
/// store, with a tracker rebuilt as the agent would start it (imported
/// transitions still pending in a stopped agent's store are not applied).
/// `None`: the release is unknown.
pub fn readiness(
    loaded: &crate::config::Loaded,
    ask: crate::track::readiness::Ask,
) -> Result<Option<crate::track::readiness::Answer>, AdminError> {
    let data_dir = &loaded.config.agent.data_dir;
    if let Some(v) = request(data_dir, &Request::Readiness { ask: ask.clone() })? {
        return serde_json::from_value(v).map_err(|e| AdminError::Protocol(e.to_string()));
    }
    let mut tracker = crate::track::Tracker::from_config(&loaded.config, true)
        .map_err(|_| AdminError::Remote("the model is invalid (run check-config)".into()))?;
    let store = Store::open(data_dir)?;
    let snap = store.load()?;
    tracker.restore(snap.keys, snap.seen, snap.failing, snap.approvals);
    tracker.restore_rollups_stuck(snap.rollups_stuck);
    let shown = crate::track::readiness::Shown { names: true };
    Ok(crate::core::readiness_of(
        &tracker,
        &store,
        &ask,
        None,
        shown,
        crate::event::now_ms(),
    )?)
}

/// Serves the admin socket until the task is dropped: requests go to the
/// core thread, except the audit chain's walks, read from `store` beside it.
pub async fn serve(data_dir: &Path, core: CoreHandle, store: Arc<Store>) -> Result<(), AdminError> {
    use std::os::unix::fs::PermissionsExt;
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    let path = data_dir.join(SOCKET);
    let io = |source| AdminError::Io {
        path: path.clone(),
        source,
    };
    // A socket left by a crashed agent: nobody answers on it any more.
    if path.exists() && std::os::unix::net::UnixStream::connect(&path).is_err() {
        let _ = std::fs::remove_file(&path);
    }
    let listener = tokio::net::UnixListener::bind(&path).map_err(io)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    loop {
        let (stream, _) = listener.accept().await.map_err(io)?;
        let core = core.clone();
        let store = store.clone();
        tokio::spawn(async move {
            let (r, mut w) = stream.into_split();
            let mut r = BufReader::new(r);
            let mut line = Vec::new();
            // Bounded: each turn reads one request line of at most
            // MAX_REQUEST bytes; a longer one closes the connection.
            loop {
                line.clear();
                match (&mut r)
                    .take(MAX_REQUEST + 1)
                    .read_until(b'\n', &mut line)
                    .await
                {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                if line.len() as u64 > MAX_REQUEST {
                    let answer = Answer {
                        ok: false,
                        result: None,
                        error: Some(format!("bad request: longer than {MAX_REQUEST} bytes")),
                    };
                    let mut out = serde_json::to_vec(&answer).unwrap_or_default();
                    out.push(b'\n');
                    let _ = w.write_all(&out).await;
                    break;
                }
                let answer = match serde_json::from_slice::<Request>(&line) {
                    Err(e) => Answer {
                        ok: false,
                        result: None,
                        error: Some(format!("bad request: {e}")),
                    },
                    Ok(req) => match answer(&core, &store, req).await {
                        Ok(Ok(v)) => Answer {
                            ok: true,
                            result: Some(v),
                            error: None,
                        },
                        Ok(Err(e)) => Answer {
                            ok: false,
                            result: None,
                            error: Some(e),
                        },
                        Err(e) => Answer {
                            ok: false,
                            result: None,
                            error: Some(e.to_string()),
                        },
                    },
                };
                let mut out = serde_json::to_vec(&answer).unwrap_or_default();
                out.push(b'\n');
                if w.write_all(&out).await.is_err() {
                    break;
                }
            }
        });
    }
}

/// The answer to `req`: from the core thread, or from the store off it.
async fn answer(
    core: &CoreHandle,
    store: &Arc<Store>,
    req: Request,
) -> Result<Result<Value, String>, crate::core::CoreError> {
    if is_off_core(&req) {
        let store = store.clone();
        return tokio::task::spawn_blocking(move || off_core(&store, req))
            .await
            .map_err(|_| crate::core::CoreError::Gone);
    }
    core.call(move |c| handle(c, req)).await
}

/// Removes the socket file (on shutdown).
pub fn remove(data_dir: &Path) {
    let _ = std::fs::remove_file(data_dir.join(SOCKET));
}

/// Sends one request to a running agent: `Ok(None)` when no agent listens
/// on `data_dir`'s socket (then the caller opens the store itself).
pub fn request(data_dir: &Path, req: &Request) -> Result<Option<Value>, AdminError> {
    use std::io::{BufRead, BufReader, Write};
    let path = data_dir.join(SOCKET);
    let mut stream = match std::os::unix::net::UnixStream::connect(&path) {
        Ok(s) => s,
        Err(_) => return Ok(None),
    };
    let io = |source| AdminError::Io {
        path: path.clone(),
        source,
    };
    let mut line = serde_json::to_vec(req).map_err(|e| AdminError::Protocol(e.to_string()))?;
    line.push(b'\n');
    stream.write_all(&line).map_err(io)?;
    let mut answer = String::new();
    BufReader::new(&stream).read_line(&mut answer).map_err(io)?;
    let a: Answer =
        serde_json::from_str(&answer).map_err(|e| AdminError::Protocol(e.to_string()))?;
    if a.ok {
        Ok(Some(a.result.unwrap_or(Value::Null)))
    } else {
        Err(AdminError::Remote(a.error.unwrap_or_default()))
    }
}

/// `relstat spool inspect` of the live spool: through the agent when it
/// runs, else from the store.
pub fn spool_inspect(data_dir: &Path) -> Result<SpoolSummary, AdminError> {
    if let Some(v) = request(data_dir, &Request::SpoolInspect)? {
        return serde_json::from_value(v).map_err(|e| AdminError::Protocol(e.to_string()));
    }
    let store = Store::open(data_dir)?;
    Ok(SpoolSummary::of(
        store.outbox_stats()?,
        crate::event::now_ms(),
    ))
}

/// `relstat audit verify`: through the agent when it runs, else from the
/// store.
pub fn audit_verify(data_dir: &Path) -> Result<crate::store::audit::Verified, AdminError> {
    if let Some(v) = request(data_dir, &Request::AuditVerify)? {
        return serde_json::from_value(v).map_err(|e| AdminError::Protocol(e.to_string()));
    }
    Ok(Store::open(data_dir)?.audit_verify()?)
}

/// `relstat audit export`: through the agent when it runs, else from the
/// store, signed with `[spool] signing_key_file` when configured.
pub fn audit_export(
    loaded: &crate::config::Loaded,
    select: &crate::audit::Select,
    out: &Path,
) -> Result<crate::audit::Exported, anyhow::Error> {
    let data_dir = &loaded.config.agent.data_dir;
    let req = Request::AuditExport {
        out: absolute(out)?,
        select: select.clone(),
    };
    if let Some(v) = request(data_dir, &req)? {
        return serde_json::from_value(v).map_err(|e| AdminError::Protocol(e.to_string()).into());
    }
    let key = match &loaded.config.spool.signing_key_file {
        Some(p) => Some(crate::spool::keys::load_signing(p)?),
        None => None,
    };
    let store = Store::open(data_dir)?;
    Ok(crate::audit::export(&store, select, key.as_ref(), out)?)
}

/// Makes a CLI path absolute: the agent's working directory is not the CLI's.
fn absolute(p: &Path) -> Result<PathBuf, AdminError> {
    std::path::absolute(p).map_err(|source| AdminError::Io {
        path: p.to_path_buf(),
        source,
    })
}

/// `relstat spool export`: through the agent when it runs (the report as
/// JSON), else from the store directly.
pub fn spool_export(
    loaded: &crate::config::Loaded,
    out: &Path,
    keep: bool,
) -> Result<Value, anyhow::Error> {
    let data_dir = &loaded.config.agent.data_dir;
    let req = Request::SpoolExport {
        out: absolute(out)?,
        keep,
    };
    if let Some(v) = request(data_dir, &req)? {
        return Ok(v);
    }
    let store = Store::open(data_dir)?;
    let settings = crate::spool::Settings::from_config(&loaded.config);
    let r = crate::spool::bundle::export(&store, &settings, out, keep, true)?;
    Ok(serde_json::to_value(r)?)
}

/// `relstat spool import`: through the agent when it runs, else into the
/// store directly (with a progress bar on a terminal).
pub fn spool_import(
    loaded: &crate::config::Loaded,
    files: &[PathBuf],
) -> Result<Vec<crate::spool::bundle::ImportReport>, anyhow::Error> {
    let data_dir = &loaded.config.agent.data_dir;
    let req = Request::SpoolImport {
        files: files
            .iter()
            .map(|f| absolute(f))
            .collect::<Result<_, _>>()?,
    };
    if let Some(v) = request(data_dir, &req)? {
        return Ok(serde_json::from_value(v)?);
    }
    let store = Store::open(data_dir)?;
    let settings = crate::spool::Settings::from_config(&loaded.config);
    if !settings.track_imports {
        return Ok(crate::spool::bundle::import(
            &store, &settings, files, true,
        )?);
    }
    // The counters and histograms the events must reach live in the
    // agent: it applies them when it starts.
    let mut t = crate::spool::relay::Tracking::Deferred;
    Ok(crate::spool::bundle::import_tracked(
        &store,
        &settings,
        files,
        true,
        Some(&mut t),
    )?)
}

/// The most entries one `relstat dlq list` reads.
pub const DLQ_LIST_MAX: usize = 100_000;

/// `relstat dlq list|show`: through the agent when it runs, else from the
/// store.
pub fn dlq_list(
    data_dir: &Path,
    filter: &crate::store::DlqFilter,
) -> Result<Vec<(u64, crate::dlq::DeadLetter)>, AdminError> {
    let req = Request::DlqList {
        filter: filter.clone(),
    };
    if let Some(v) = request(data_dir, &req)? {
        return serde_json::from_value(v).map_err(|e| AdminError::Protocol(e.to_string()));
    }
    Ok(Store::open(data_dir)?.dlq_list(filter, DLQ_LIST_MAX)?)
}

/// `relstat dlq replay`: the entries `filter` keeps (not yet replayed,
/// unless `again`) mapped through `loaded`'s sources, then applied by the
/// running agent (its tracker decides accepted, duplicate or late). The
/// entries replayed and those skipped as replayed before.
pub fn dlq_replay(
    loaded: &crate::config::Loaded,
    filter: &crate::store::DlqFilter,
    again: bool,
) -> Result<(Vec<Replayed>, usize), anyhow::Error> {
    use crate::sources::fields::Parsed;
    use crate::sources::presets::PresetParser;
    let data_dir = &loaded.config.agent.data_dir;
    if request(data_dir, &Request::Ping)?.is_none() {
        anyhow::bail!(
            "no agent runs on {}: start it (relstat run) and replay again; the replayed events \
             go through its tracker",
            data_dir.display()
        );
    }
    let rows = dlq_list(data_dir, filter)?;
    let (todo, done): (Vec<_>, Vec<_>) = rows
        .into_iter()
        .partition(|(_, d)| again || d.replayed.is_none());
    let cfg = &loaded.config;
    let mut parsers: std::collections::HashMap<String, PresetParser> = Default::default();
    let mut entries = Vec::new();
    for (id, d) in todo {
        let Some(src) = cfg.sources.iter().find(|s| s.name == d.source) else {
            anyhow::bail!(
                "dead letter {id}: source `{}` is not in the configuration any more; replay \
                 the others with --source",
                d.source
            );
        };
        if !parsers.contains_key(&src.name) {
            let model = crate::model::Model::from_config(&cfg.model)
                .map_err(|_| anyhow::anyhow!("the model is invalid (run check-config)"))?;
            let p = PresetParser::new(src, &model, &cfg.agent.site)?;
            parsers.insert(src.name.clone(), p);
        }
        let parser = &parsers[&src.name];
        let header = crate::sources::presets::registry::tool(parser.preset().name)
            .and_then(|t| t.event_header)
            .unwrap_or(crate::dlq::POLL_EVENT_HEADER);
        let parsed = parser
            .parse_json(d.header(header), d.payload.as_bytes(), d.received)
            .unwrap_or_else(|why| vec![Parsed::Invalid(why)]);
        let reason = crate::sources::fields::dead_letter_verdict(&parsed).map(|(_, why)| why);
        let mut entry = ReplayEntry {
            id,
            source: d.source.clone(),
            events: Vec::new(),
            rejected: Vec::new(),
            reason,
        };
        for p in parsed {
            match p {
                Parsed::Event(e) => entry.events.push(*e),
                Parsed::Unmapped(_) => entry.rejected.push("unmapped".into()),
                Parsed::Invalid(_) => entry.rejected.push("invalid".into()),
                Parsed::Skipped => entry.rejected.push("skipped".into()),
            }
        }
        entries.push(entry);
    }
    // Requests stay well under the socket's MAX_REQUEST: chunks of at most
    // REPLAY_CHUNK bytes of entries, each applied in its own transaction.
    let mut replayed = Vec::new();
    let mut chunk: Vec<ReplayEntry> = Vec::new();
    let mut size = 0;
    let mut send = |chunk: Vec<ReplayEntry>| -> Result<(), anyhow::Error> {
        let v = request(data_dir, &Request::DlqReplay { entries: chunk })?
            .ok_or_else(|| anyhow::anyhow!("the agent stopped during the replay"))?;
        replayed.extend(serde_json::from_value::<Vec<Replayed>>(v)?);
        Ok(())
    };
    for e in entries {
        let n = serde_json::to_vec(&e)?.len();
        if n > REPLAY_CHUNK {
            anyhow::bail!(
                "dead letter {}: its events take {n} bytes, more than one replay request \
                 carries ({REPLAY_CHUNK})",
                e.id
            );
        }
        if size + n > REPLAY_CHUNK {
            send(std::mem::take(&mut chunk))?;
            size = 0;
        }
        size += n;
        chunk.push(e);
    }
    if !chunk.is_empty() {
        send(chunk)?;
    }
    Ok((replayed, done.len()))
}

/// The most bytes of entries one replay request carries (the socket reads
/// at most [`MAX_REQUEST`] a line).
const REPLAY_CHUNK: usize = (MAX_REQUEST / 2) as usize;

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// `audit verify` and `audit export` through the agent are answered
    /// beside the core thread, not by it: here there is no core thread at
    /// all (its inbox is never read), so a request for the core waits,
    /// while the audit requests are answered.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn audit_requests_are_answered_while_the_core_is_busy() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let (core, inbox) = crate::core::channel();
        let server = {
            let (dir, store) = (dir.path().to_path_buf(), store.clone());
            tokio::spawn(async move { serve(&dir, core, store).await })
        };
        let d = dir.path().to_path_buf();
        let asked = tokio::task::spawn_blocking(move || {
            for _ in 0..400 {
                if d.join(SOCKET).exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let v = audit_verify(&d).unwrap();
            let out = d.join("audit.ndjson");
            let req = Request::AuditExport {
                out: out.clone(),
                select: Default::default(),
            };
            let e = request(&d, &req).unwrap().expect("answered by the agent");
            (v, e, crate::audit::verify_export(&out, None).unwrap())
        });
        let (v, e, r) = tokio::time::timeout(Duration::from_secs(20), asked)
            .await
            .expect("answered without the core")
            .unwrap();
        assert_eq!((v.broken, v.checkpoint.reason.as_str()), (None, "created"));
        assert_eq!(e["rows"], 0);
        assert_eq!(r.broken, None);
        // the premise: a request for the core waits for it
        let d = dir.path().to_path_buf();
        let ping = tokio::task::spawn_blocking(move || request(&d, &Request::Ping));
        tokio::pin!(ping);
        assert!(
            tokio::time::timeout(Duration::from_millis(500), &mut ping)
                .await
                .is_err()
        );
        // no core: the waiting request is answered with an error
        drop(inbox);
        let answer = tokio::time::timeout(Duration::from_secs(20), ping)
            .await
            .unwrap()
            .unwrap();
        assert!(answer.is_err());
        server.abort();
    }
}
