//! Poll sources: where webhooks cannot reach the agent (air-gapped,
//! firewalled), the agent asks the tools' APIs itself, every `interval`.
//!
//! Each tool's objects are reshaped as that tool's webhook (or API) payload
//! and mapped by the same preset ([`super::presets`]), so a status change
//! has the same event id whether it arrived by webhook or by poll.
//!
//! Each tool's poll client (what it asks the API per configured URL) is
//! `presets/<tool>/poll.rs`, named by the tool's registry entry
//! ([`super::presets::registry`]); docs/presets.md describes them.
//!
//! Cursors and what was already emitted live in one checkpoint
//! (`poll:<source>`, JSON) sent with the batch of events they produced, so
//! the core commits both in one transaction: a restart re-emits nothing and
//! misses nothing.

pub mod client;
#[cfg(test)]
pub(crate) mod testserver;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use self::client::{Client, PollError};
use super::presets::PresetParser;
use crate::config::SourceConfig;
use crate::event::{InputResult, now_ms};
use crate::ingest::{Ingest, Item, SourceBatch};
use crate::sources::fields::Parsed;

pub use self::client::PollError as Error;

/// `interval` when the source does not set one.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
/// Longest wait after repeated failures.
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// Emitted ids remembered per source (oldest forgotten first).
const MAX_SEEN: usize = 20_000;

/// The checkpoint name of a poll source in the store.
pub fn checkpoint_name(source: &str) -> String {
    format!("poll:{source}")
}

/// What a poll source remembers between polls (and restarts).
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct PollState {
    /// URL -> ETag of its last 200.
    #[serde(default)]
    pub etags: BTreeMap<String, String>,
    /// Cursor name -> value (GitLab `updated_after` per project and kind).
    #[serde(default)]
    pub cursors: BTreeMap<String, String>,
    /// Event ids (or a hash of an unmappable object) already emitted ->
    /// event time, so a re-read object is not emitted again.
    #[serde(default)]
    pub seen: BTreeMap<String, i64>,
    /// Tool-specific open items (GitHub deployments not finished, Jenkins
    /// queued builds): key -> the object needed to follow them.
    #[serde(default)]
    pub open: BTreeMap<String, Value>,
}

pub struct PollSource {
    pub(crate) name: String,
    pub(crate) preset: String,
    pub(crate) urls: Vec<String>,
    interval: Duration,
    pub(crate) parser: PresetParser,
    pub(crate) client: Client,
    pub(crate) state: PollState,
}

/// One poll's output before it becomes a batch.
pub struct Poll<'a> {
    pub(crate) items: Vec<Item>,
    pub(crate) state: &'a mut PollState,
    parser: &'a PresetParser,
    /// The source's name (dead letters carry it).
    source: &'a str,
    /// Objects that came out unmapped or invalid, first seen in this poll.
    pub(crate) dead: Vec<crate::dlq::DeadLetter>,
}

impl Poll<'_> {
    /// Maps one tool object (shaped as the preset reads it) and keeps what
    /// was not emitted before.
    pub(crate) fn emit(&mut self, event: Option<&str>, body: &Value) {
        let now = now_ms();
        let parsed = self.parser.parse_value(event, body, now);
        let verdict = crate::sources::fields::dead_letter_verdict(&parsed);
        let mut dead_letter = false;
        for p in parsed {
            let (key, time, item) = match p {
                Parsed::Event(e) => (e.id.clone(), e.time, Item::Event(e)),
                other => {
                    let h = xxhash_rust::xxh3::xxh3_64(body.to_string().as_bytes());
                    let r = match other {
                        Parsed::Unmapped(_) => InputResult::Unmapped,
                        Parsed::Skipped => InputResult::Skipped,
                        _ => InputResult::Invalid,
                    };
                    (format!("x:{h:016x}"), now, Item::Rejected(r))
                }
            };
            if self.state.seen.contains_key(&key) {
                continue;
            }
            dead_letter |= matches!(
                item,
                Item::Rejected(InputResult::Unmapped | InputResult::Invalid)
            );
            self.state.seen.insert(key, time);
            self.items.push(item);
        }
        // An object first seen unmapped or invalid is kept as a dead letter
        // (once: a re-read object is in `seen`).
        if let (true, Some((result, reason))) = (dead_letter, verdict) {
            let payload = body.to_string();
            let mut headers = Vec::new();
            if let Some(e) = event {
                headers.push((crate::dlq::POLL_EVENT_HEADER.to_string(), e.to_string()));
            }
            self.dead.push(crate::dlq::DeadLetter {
                source: self.source.to_string(),
                delivery: crate::dlq::body_hash(payload.as_bytes()),
                received: now,
                result: result.as_str().to_string(),
                reason,
                headers,
                payload,
                replayed: None,
            });
        }
    }
}

impl PollSource {
    pub fn new(
        cfg: &SourceConfig,
        parser: PresetParser,
        checkpoint: Option<&[u8]>,
    ) -> Result<PollSource, PollError> {
        let interval = cfg.interval.unwrap_or(DEFAULT_INTERVAL);
        let client = Client::new(
            cfg.token_file.as_deref(),
            cfg.ca_file.as_deref(),
            Duration::from_secs(60),
        )?;
        let state = checkpoint
            .and_then(|b| serde_json::from_slice(b).ok())
            .unwrap_or_default();
        Ok(PollSource {
            name: cfg.name.clone(),
            preset: cfg.preset.clone().unwrap_or_default(),
            urls: cfg.urls.clone(),
            interval,
            parser,
            client,
            state,
        })
    }

    /// Requests made so far (for tests and the README's figures).
    pub fn requests(&self) -> u64 {
        self.client.requests
    }

    /// One poll of every URL: the batch with the checkpoint after it, and
    /// the longest wait a server asked for.
    pub fn poll_once(&mut self) -> (SourceBatch, Option<Duration>) {
        let started = Instant::now();
        let mut errors = Vec::new();
        let mut wait = None;
        let mut poll = Poll {
            items: Vec::new(),
            state: &mut self.state,
            parser: &self.parser,
            source: &self.name,
            dead: Vec::new(),
        };
        for url in self.urls.clone() {
            let poller = super::presets::registry::tool(&self.preset).and_then(|t| t.poll);
            let r = match poller {
                Some(poll_url) => poll_url(&mut self.client, &mut poll, &url),
                None => Err(PollError::Decode {
                    url: url.clone(),
                    detail: format!("no poller for preset {:?}", self.preset),
                }),
            };
            if let Err(e) = r {
                tracing::warn!(source = %self.name, "poll: {e}");
                wait = wait.max(e.retry_after());
                errors.push(e.kind());
                // a rate limit holds for the whole API: stop this round
                if e.retry_after().is_some() {
                    break;
                }
            }
        }
        let items = poll.items;
        let dead = poll.dead;
        prune(&mut self.state.seen);
        let batch = SourceBatch {
            source: self.name.clone(),
            items,
            checkpoint: Some((
                checkpoint_name(&self.name),
                serde_json::to_vec(&self.state).unwrap_or_default(),
            )),
            errors,
            caught_up: true,
            poll_seconds: Some(started.elapsed().as_secs_f64()),
            dead_letters: crate::dlq::DeadLetters {
                new: dead,
                replayed: Vec::new(),
            },
        };
        (batch, wait)
    }

    /// The source thread: poll, send, wait `interval` (longer after errors:
    /// doubling up to 5 minutes, or what `Retry-After` said).
    pub fn run(mut self, ingest: Ingest, stop: Arc<AtomicBool>, once: bool) {
        let mut failures = 0u32;
        loop {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let (batch, retry_after) = self.poll_once();
            let failed = !batch.errors.is_empty();
            if ingest.submit(batch).is_err() || once {
                return;
            }
            failures = if failed {
                failures.saturating_add(1)
            } else {
                0
            };
            let backoff = if failures == 0 {
                self.interval
            } else {
                (self.interval * 2u32.saturating_pow(failures.min(16))).min(MAX_BACKOFF)
            };
            let delay = retry_after.map_or(backoff, |r| r.max(self.interval));
            let until = Instant::now() + delay;
            while Instant::now() < until {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50).min(until - Instant::now()));
            }
        }
    }
}

/// Forgets the oldest emitted ids beyond [`MAX_SEEN`].
pub(crate) fn prune(seen: &mut BTreeMap<String, i64>) {
    if seen.len() <= MAX_SEEN {
        return;
    }
    let mut times: Vec<i64> = seen.values().copied().collect();
    times.sort_unstable();
    let cut = times[seen.len() - MAX_SEEN];
    seen.retain(|_, t| *t >= cut);
}

/// Decodes a JSON body.
pub(crate) fn json(url: &str, body: &[u8]) -> Result<Value, PollError> {
    serde_json::from_slice(body).map_err(|e| PollError::Decode {
        url: url.to_string(),
        detail: e.to_string(),
    })
}

// --- for the tools' poll clients (each in its preset's folder)

/// A GET with `If-None-Match`: `None` when unchanged (304).
pub(crate) fn get_cond(
    c: &mut Client,
    poll: &mut Poll<'_>,
    url: &str,
) -> Result<Option<Value>, PollError> {
    let etag = poll.state.etags.get(url).cloned();
    let f = c.get(url, etag.as_deref())?;
    let Some(body) = f.body else {
        return Ok(None);
    };
    let v = json(url, &body)?;
    match f.etag {
        Some(e) => poll.state.etags.insert(url.to_string(), e),
        None => poll.state.etags.remove(url),
    };
    Ok(Some(v))
}

/// A JSON array's items (none when `v` is not an array).
pub(crate) fn array(v: &Value) -> &[Value] {
    v.as_array().map(Vec::as_slice).unwrap_or(&[])
}

#[cfg(test)]
mod tests;
