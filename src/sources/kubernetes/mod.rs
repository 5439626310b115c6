//! The Kubernetes source: watches apps/v1 Deployments in the configured
//! namespaces and turns their rollouts into statuses.
//!
//! A minimal list+watch client over the poll sources' HTTP client rather
//! than kube-rs: the protocol is plain HTTP (list with a resourceVersion,
//! then `?watch=1&resourceVersion=..&allowWatchBookmarks=true`, a stream of
//! newline-delimited `ADDED`/`MODIFIED`/`DELETED`/`BOOKMARK`/`ERROR`
//! events; 410 Gone means list again), and kube-rs would bring its own
//! HTTP stack, tower and k8s-openapi's thousands of types for one resource.
//!
//! One reader thread per namespace holds the open watch; the source thread
//! maps what they read and sends batches whose checkpoint (`k8s:<source>`)
//! holds each namespace's resourceVersion, the templates seen per
//! Deployment (to tell a rollback) and the ids emitted: a restart resumes
//! the watch where it stopped.
//!
//! Mapping (docs/presets.md): `Progressing` with `NewReplicaSetCreated`,
//! `FoundNewReplicaSet` or `ReplicaSetUpdated` -> in_progress;
//! `NewReplicaSetAvailable` with `Available=True` -> deployed;
//! `ProgressDeadlineExceeded` -> failed; `spec.paused` -> paused; a new
//! rollout whose pod template is one the Deployment had before ->
//! rolled_back for the release it replaces.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::fields::{Field, Parsed, RawFields};
use super::poll::client::{Client, PollError};
use super::presets::{Input, Preset, PresetParser, Rec, first, parse_time, s};
use crate::config::SourceConfig;
use crate::event::{InputResult, TimeMs, now_ms};
use crate::ingest::{Ingest, Item, SourceBatch};

/// The server ends each watch after this long; the reader opens the next.
pub const WATCH_SECONDS: u64 = 290;
/// Templates remembered per Deployment (rollback detection).
const TEMPLATES: usize = 10;
/// Messages (a list, a watch event) the namespace readers may have
/// waiting for the source thread.
const READER_QUEUE: usize = 64;

pub fn checkpoint_name(source: &str) -> String {
    format!("k8s:{source}")
}

/// The Deployment mapping, as a preset (not one a webhook can name).
pub const PRESET: Preset = Preset {
    name: "kubernetes",
    extract,
    vocabulary: &[],
    fallbacks: &[],
};

/// The rollout status of a Deployment, when its status describes its
/// current spec: (raw status, time, message).
pub fn rollout(d: &Value) -> Option<(&'static str, Option<TimeMs>, Option<String>)> {
    let generation = d.pointer("/metadata/generation").and_then(Value::as_i64);
    let observed = d
        .pointer("/status/observedGeneration")
        .and_then(Value::as_i64);
    if observed < generation {
        return None; // the controller has not seen this spec yet
    }
    let conds = d.pointer("/status/conditions").and_then(Value::as_array);
    let cond = |t: &str| conds.into_iter().flatten().find(|c| c["type"] == t);
    let progressing = cond("Progressing");
    let available = cond("Available").is_some_and(|c| c["status"] == "True");
    let time = progressing.and_then(|c| {
        first(c, &["lastUpdateTime", "lastTransitionTime"]).and_then(|t| parse_time(&t))
    });
    let message = progressing.and_then(|c| s(c, "message"));
    if d.pointer("/spec/paused").and_then(Value::as_bool) == Some(true) {
        return Some(("paused", time, message));
    }
    let raw = match progressing.and_then(|c| c["reason"].as_str())? {
        "ProgressDeadlineExceeded" => "failed",
        "NewReplicaSetAvailable" if available => "deployed",
        "NewReplicaSetCreated" | "FoundNewReplicaSet" | "ReplicaSetUpdated" => "in_progress",
        _ => return None,
    };
    Some((raw, time, message))
}

/// The release of a Deployment: the `relstat/release` annotation, the
/// `app.kubernetes.io/version` label, else the first container's image tag
/// (or digest).
pub fn release(d: &Value) -> Option<String> {
    let meta = &d["metadata"];
    if let Some(r) = meta["annotations"]["relstat/release"].as_str() {
        return Some(r.to_string());
    }
    if let Some(r) = meta["labels"]["app.kubernetes.io/version"].as_str() {
        return Some(r.to_string());
    }
    let image = d
        .pointer("/spec/template/spec/containers/0/image")?
        .as_str()?;
    if let Some((_, digest)) = image.split_once('@') {
        return Some(digest.to_string());
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    Some(
        last.split_once(':')
            .map_or("latest", |(_, t)| t)
            .to_string(),
    )
}

fn extract(input: &Input<'_>) -> Vec<RawFields<'static>> {
    let d = input.body;
    let Some((raw, time, message)) = rollout(d) else {
        return vec![];
    };
    let uid = s(d, "metadata.uid").or_else(|| s(d, "metadata.name"));
    let generation = s(d, "metadata.generation").unwrap_or_default();
    let mut rec = base(d);
    rec.put(
        Field::Id,
        uid.map(|u| format!("kubernetes:{u}:{generation}:{raw}")),
    )
    .put(Field::Status, Some(raw.to_string()))
    .time(Some(time.unwrap_or(input.received)))
    .put(Field::Reason, message);
    vec![rec.done()]
}

/// Fields every record of a Deployment has.
fn base(d: &Value) -> Rec {
    let mut rec = Rec::default();
    let labels = &d["metadata"]["labels"];
    rec.put(Field::Release, release(d))
        .put(Field::Version, release(d))
        .put(Field::Service, s(d, "metadata.name"))
        .put(
            Field::Environment,
            labels["environment"]
                .as_str()
                .or(labels["env"].as_str())
                .map(str::to_string),
        )
        .put(Field::Actor, Some("kubernetes".into()))
        .human(false);
    rec
}

/// The checkpoint.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct KubeState {
    /// namespace -> resourceVersion to resume the watch from.
    #[serde(default)]
    pub resource_versions: BTreeMap<String, String>,
    /// Deployment uid -> (template fingerprint, release), oldest first.
    #[serde(default)]
    pub templates: BTreeMap<String, Vec<(u64, String)>>,
    #[serde(default)]
    pub seen: BTreeMap<String, i64>,
}

/// What a namespace's reader thread hands the source thread.
enum Msg {
    Listed {
        ns: String,
        items: Vec<Value>,
        rv: String,
        took: Duration,
    },
    Event {
        ns: String,
        object: Value,
        rv: Option<String>,
    },
    Bookmark {
        ns: String,
        rv: String,
    },
    Error(PollError),
}

pub struct KubeSource {
    name: String,
    api: String,
    namespaces: Vec<String>,
    token_file: Option<std::path::PathBuf>,
    ca_file: Option<std::path::PathBuf>,
    parser: PresetParser,
    state: KubeState,
}

impl KubeSource {
    pub fn new(
        cfg: &SourceConfig,
        parser: PresetParser,
        checkpoint: Option<&[u8]>,
    ) -> Result<KubeSource, PollError> {
        // Fail early on an unreadable token or CA.
        Client::new(
            cfg.token_file.as_deref(),
            cfg.ca_file.as_deref(),
            Duration::from_secs(1),
        )?;
        Ok(KubeSource {
            name: cfg.name.clone(),
            api: cfg
                .api_server
                .clone()
                .unwrap_or_default()
                .trim_end_matches('/')
                .to_string(),
            namespaces: cfg.namespaces.clone(),
            token_file: cfg.token_file.clone(),
            ca_file: cfg.ca_file.clone(),
            parser,
            state: checkpoint
                .and_then(|b| serde_json::from_slice(b).ok())
                .unwrap_or_default(),
        })
    }

    /// Maps one Deployment: a rollback record when its template went back,
    /// then its rollout status; only what was not emitted before.
    fn deployment(&mut self, d: &Value, items: &mut Vec<Item>) {
        let now = now_ms();
        let mut out: Vec<Parsed> = Vec::new();
        if let (Some(uid), Some((_, time, _))) = (s(d, "metadata.uid"), rollout(d)) {
            let fp = xxhash_rust::xxh3::xxh3_64(d["spec"]["template"].to_string().as_bytes());
            let rel = release(d).unwrap_or_default();
            let list = self.state.templates.entry(uid.clone()).or_default();
            if list.last().is_some_and(|(f, _)| *f != fp) {
                if list.iter().any(|(f, _)| *f == fp) {
                    let (_, replaced) = list.last().cloned().unwrap_or_default();
                    let mut rec = base(d);
                    let generation = s(d, "metadata.generation").unwrap_or_default();
                    rec.put(
                        Field::Id,
                        Some(format!("kubernetes:{uid}:{generation}:rolled_back")),
                    )
                    .put(Field::Release, Some(replaced.clone()))
                    .put(Field::Version, Some(replaced))
                    .put(Field::Status, Some("rolled_back".into()))
                    .put(Field::Reason, Some(format!("rolled back to {rel}")))
                    .time(Some(time.unwrap_or(now)));
                    out.push(self.parser.map_raw(rec.done()));
                }
                list.retain(|(f, _)| *f != fp);
            }
            if list.last().is_none_or(|(f, _)| *f != fp) {
                list.push((fp, rel));
            }
            if list.len() > TEMPLATES {
                list.remove(0);
            }
        }
        if rollout(d).is_some() {
            out.extend(self.parser.parse_value(None, d, now));
        }
        for p in out {
            let (key, time, item) = match p {
                Parsed::Event(e) => (e.id.clone(), e.time, Item::Event(e)),
                Parsed::Unmapped(_) => (
                    format!(
                        "x:{:016x}",
                        xxhash_rust::xxh3::xxh3_64(d.to_string().as_bytes())
                    ),
                    now,
                    Item::Rejected(InputResult::Unmapped),
                ),
                _ => (
                    format!(
                        "x:{:016x}",
                        xxhash_rust::xxh3::xxh3_64(d.to_string().as_bytes())
                    ),
                    now,
                    Item::Rejected(InputResult::Invalid),
                ),
            };
            if self.state.seen.insert(key, time).is_none() {
                items.push(item);
            }
        }
    }

    fn batch(
        &mut self,
        items: Vec<Item>,
        errors: Vec<&'static str>,
        took: Option<f64>,
    ) -> SourceBatch {
        super::poll::prune(&mut self.state.seen);
        SourceBatch {
            source: self.name.clone(),
            items,
            checkpoint: Some((
                checkpoint_name(&self.name),
                serde_json::to_vec(&self.state).unwrap_or_default(),
            )),
            errors,
            caught_up: true,
            poll_seconds: took,
            dead_letters: Default::default(),
        }
    }

    pub fn run(mut self, ingest: Ingest, stop: Arc<AtomicBool>, once: bool) {
        // Bounded: while `submit` waits (a full spool under `when_full =
        // "block"`), the readers stop reading their watches after this many
        // messages instead of queueing the cluster's changes in memory.
        let (tx, rx) = mpsc::sync_channel::<Msg>(READER_QUEUE);
        for ns in self.namespaces.clone() {
            let rv = if once {
                None
            } else {
                self.state.resource_versions.get(&ns).cloned()
            };
            let r = Reader {
                api: self.api.clone(),
                ns,
                token_file: self.token_file.clone(),
                ca_file: self.ca_file.clone(),
                tx: tx.clone(),
                stop: stop.clone(),
                once,
            };
            // Detached: a reader blocked in a watch ends with its watch
            // (or the process); it stops reading once this thread is gone.
            let _ = std::thread::Builder::new()
                .name(format!("k8s-watch-{}", r.ns))
                .spawn(move || r.run(rv));
        }
        drop(tx);
        let mut listed = 0usize;
        loop {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let first = match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(m) => m,
                Err(mpsc::RecvTimeoutError::Timeout) => continue,
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            };
            let mut items = Vec::new();
            let mut errors = Vec::new();
            let mut took = None;
            let mut next = Some(first);
            while let Some(m) = next {
                match m {
                    Msg::Listed {
                        ns,
                        items: list,
                        rv,
                        took: t,
                    } => {
                        for d in &list {
                            self.deployment(d, &mut items);
                        }
                        self.state.resource_versions.insert(ns, rv);
                        took = Some(t.as_secs_f64());
                        listed += 1;
                    }
                    Msg::Event { ns, object, rv } => {
                        self.deployment(&object, &mut items);
                        if let Some(rv) = rv {
                            self.state.resource_versions.insert(ns, rv);
                        }
                    }
                    Msg::Bookmark { ns, rv } => {
                        self.state.resource_versions.insert(ns, rv);
                    }
                    Msg::Error(e) => {
                        tracing::warn!(source = %self.name, "kubernetes: {e}");
                        errors.push(e.kind());
                        if once {
                            listed += 1;
                        }
                    }
                }
                if items.len() >= 500 {
                    break;
                }
                next = rx.try_recv().ok();
            }
            let b = self.batch(items, errors, took);
            if ingest.submit(b).is_err() {
                return;
            }
            if once && listed >= self.namespaces.len() {
                return;
            }
        }
    }
}

/// One namespace's list+watch loop.
struct Reader {
    api: String,
    ns: String,
    token_file: Option<std::path::PathBuf>,
    ca_file: Option<std::path::PathBuf>,
    tx: mpsc::SyncSender<Msg>,
    stop: Arc<AtomicBool>,
    once: bool,
}

impl Reader {
    fn run(self, mut rv: Option<String>) {
        let mut client = match Client::new(
            self.token_file.as_deref(),
            self.ca_file.as_deref(),
            Duration::from_secs(WATCH_SECONDS + 30),
        ) {
            Ok(c) => c,
            Err(e) => {
                let _ = self.tx.send(Msg::Error(e));
                return;
            }
        };
        let mut failures = 0u32;
        while !self.stop.load(Ordering::Relaxed) {
            let opened = Instant::now();
            let r = match &rv {
                None => self.list(&mut client).map(|v| {
                    rv = Some(v);
                }),
                Some(v) => self.watch(&mut client, v.clone(), &mut rv),
            };
            if self.once && rv.is_some() {
                return;
            }
            match r {
                Ok(()) => {
                    failures = 0;
                    // a server ending watches at once must not make a busy loop
                    if rv.is_some() && opened.elapsed() < Duration::from_secs(1) {
                        std::thread::sleep(Duration::from_secs(1) - opened.elapsed());
                    }
                }
                Err(PollError::Gone { .. }) => rv = None,
                Err(e) => {
                    failures += 1;
                    let wait = e.retry_after().unwrap_or(Duration::from_millis(
                        (500u64 << failures.min(9)).min(60_000),
                    ));
                    if self.tx.send(Msg::Error(e)).is_err() || self.once {
                        return;
                    }
                    let until = Instant::now() + wait;
                    while Instant::now() < until && !self.stop.load(Ordering::Relaxed) {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
            }
        }
    }

    fn base(&self) -> String {
        format!(
            "{}/apis/apps/v1/namespaces/{}/deployments",
            self.api, self.ns
        )
    }

    /// Lists every page; returns the list's resourceVersion.
    fn list(&self, client: &mut Client) -> Result<String, PollError> {
        let started = Instant::now();
        let mut items = Vec::new();
        let mut cont: Option<String> = None;
        let rv = loop {
            let mut url = format!("{}?limit=500", self.base());
            if let Some(c) = &cont {
                url.push_str("&continue=");
                url.push_str(c);
            }
            let f = client.get(&url, None)?;
            let v = super::poll::json(&url, f.body.as_deref().unwrap_or(b"{}"))?;
            if let Some(list) = v["items"].as_array() {
                items.extend(list.iter().cloned());
            }
            cont = s(&v, "metadata.continue");
            if cont.is_none() {
                break s(&v, "metadata.resourceVersion").ok_or_else(|| PollError::Decode {
                    url,
                    detail: "a list without metadata.resourceVersion".into(),
                })?;
            }
        };
        let _ = self.tx.send(Msg::Listed {
            ns: self.ns.clone(),
            items,
            rv: rv.clone(),
            took: started.elapsed(),
        });
        Ok(rv)
    }

    /// Watches from `from` until the server ends the watch; `rv` follows
    /// the events read.
    fn watch(
        &self,
        client: &mut Client,
        from: String,
        rv: &mut Option<String>,
    ) -> Result<(), PollError> {
        let url = format!(
            "{}?watch=1&resourceVersion={from}&allowWatchBookmarks=true&timeoutSeconds={WATCH_SECONDS}",
            self.base()
        );
        let resp = client.open(&url, None)?;
        let reader = std::io::BufReader::new(resp.into_body().into_reader());
        for line in reader.lines() {
            if self.stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            let line = line.map_err(|e| PollError::Transport {
                url: url.clone(),
                detail: format!("watch stream: {e}"),
            })?;
            if line.trim().is_empty() {
                continue;
            }
            let ev: Value = super::poll::json(&url, line.as_bytes())?;
            let object = ev["object"].clone();
            let new_rv = s(&object, "metadata.resourceVersion");
            let msg = match ev["type"].as_str() {
                Some("BOOKMARK") => match new_rv.clone() {
                    Some(v) => Msg::Bookmark {
                        ns: self.ns.clone(),
                        rv: v,
                    },
                    None => continue,
                },
                Some("ERROR") => {
                    return if object["code"].as_i64() == Some(410) {
                        Err(PollError::Gone { url })
                    } else {
                        Err(PollError::Status {
                            url,
                            status: object["code"].as_i64().unwrap_or(0) as u16,
                        })
                    };
                }
                Some("ADDED" | "MODIFIED") => Msg::Event {
                    ns: self.ns.clone(),
                    object,
                    rv: new_rv.clone(),
                },
                // a deleted Deployment ends no rollout: only move on
                Some("DELETED") => match new_rv.clone() {
                    Some(v) => Msg::Bookmark {
                        ns: self.ns.clone(),
                        rv: v,
                    },
                    None => continue,
                },
                _ => continue,
            };
            if new_rv.is_some() {
                *rv = new_rv;
            }
            if self.tx.send(msg).is_err() {
                return Ok(());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
