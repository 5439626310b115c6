//! The notifier: one thread per destination reads its queue in the store,
//! renders and sends each message through [`crate::outbound`], and removes
//! it only after a 2xx answer.
//!
//! - Rate: at most `per_minute` requests a minute (evenly spaced).
//! - Bursts: when the messages of the last minute plus those waiting pass
//!   `[notify] digest_after`, everything waiting goes as one digest.
//! - `429`: waits `Retry-After` (capped at 5 minutes), else backs off;
//!   `408` and `5xx` and connection errors: backs off (1 s doubling to 60 s,
//!   jittered); the messages stay queued.
//! - Any other answer (400, 403, 404, 410, Slack's `invalid_blocks`...) is a
//!   permanent refusal: the message is dropped and counted, the answer's
//!   first 512 bytes logged, and the destination shown failing
//!   (`relstat_notify_failing`) until a message is delivered.
//! - Messages queued more than `max_age` ago are dropped and counted.
//!
//! An answer's body is read only up to 512 bytes, and a request lasts at
//! most [`REQUEST_TIMEOUT`]: a receiver that answers with a huge body or
//! never answers holds its own destination that long, never the others.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::render::{self, Links};
use super::{Note, read_url};
use crate::config::{DestinationConfig, NotifyConfig, NotifyKind};
use crate::event::now_ms;
use crate::outbound;
use crate::sinks::metrics::Metrics;
use crate::sinks::siem::transport::http::{SIGNATURE_HEADER, retry_after, sign};
use crate::store::Store;

/// The longest one request may take (connecting included).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes of an answer read (logged on a refusal).
pub const ANSWER_HEAD: u64 = 512;
/// Messages read from a queue at once (and listed in one digest at most).
const READ: usize = 500;
const MIN_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// How often an idle queue is looked at.
const IDLE: Duration = Duration::from_millis(250);

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("destination {name}: {detail}")]
    Destination { name: String, detail: String },
    #[error("no [[notify.destinations]] is named {0:?}")]
    Unknown(String),
    #[error("sending: {0}")]
    Send(String),
    #[error("cannot start the notifier thread: {0}")]
    Spawn(std::io::Error),
}

/// A destination ready to send to.
pub struct Destination {
    pub name: String,
    pub kind: NotifyKind,
    url: String,
    client: outbound::Client,
    secret: Option<Vec<u8>>,
    /// The spacing `per_minute` asks for.
    interval: Duration,
}

/// What a receiver answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Delivered(u16, String),
    /// Try again after this (or after backing off).
    Later(Option<Duration>, String),
    Refused(u16, String),
}

impl Destination {
    /// Reads the URL (and secret) files and builds the client.
    pub fn new(d: &DestinationConfig) -> Result<Destination, NotifyError> {
        let err = |detail: String| NotifyError::Destination {
            name: d.name.clone(),
            detail,
        };
        let url = read_url(&d.url_file).map_err(err)?;
        let secret = match &d.hmac_secret_file {
            Some(p) => {
                let s = std::fs::read(p).map_err(|e| err(format!("{}: {e}", p.display())))?;
                let s = s.trim_ascii().to_vec();
                if s.is_empty() {
                    return Err(err(format!("{} is empty", p.display())));
                }
                Some(s)
            }
            None => None,
        };
        let opts = outbound::Options {
            roots: match &d.ca_file {
                Some(p) => outbound::Roots::File(p.clone()),
                None => outbound::Roots::Bundled,
            },
            connect_timeout: Duration::from_secs(5),
            timeout: REQUEST_TIMEOUT,
            ..Default::default()
        };
        let client = outbound::Client::new(&opts).map_err(|e| err(e.to_string()))?;
        Ok(Destination {
            name: d.name.clone(),
            kind: d.kind,
            url,
            client,
            secret,
            interval: Duration::from_secs(60) / d.per_minute.max(1),
        })
    }

    /// Sends one rendered body and classifies the answer.
    pub fn send(&self, body: &serde_json::Value) -> Answer {
        let bytes = serde_json::to_vec(body).unwrap_or_default();
        let mut req = self
            .client
            .post(&self.url)
            .header("Content-Type", "application/json");
        if let Some(s) = &self.secret {
            req = req.header(SIGNATURE_HEADER, format!("sha256={}", sign(s, &bytes)));
        }
        let mut resp = match req.send(&bytes[..]) {
            Ok(r) => r,
            // The URL is a secret: the error names the destination only.
            Err(e) => return Answer::Later(None, strip_url(&e.to_string(), &self.url)),
        };
        let status = resp.status().as_u16();
        let wait = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| retry_after(Some(v)));
        let head = outbound::body_head(&mut resp, ANSWER_HEAD);
        match status {
            200..=299 => Answer::Delivered(status, head),
            429 => Answer::Later(wait, format!("HTTP 429 {head}")),
            408 | 500..=599 => Answer::Later(wait, format!("HTTP {status} {head}")),
            _ => Answer::Refused(status, head),
        }
    }
}

fn strip_url(msg: &str, url: &str) -> String {
    msg.replace(url, "<url_file>")
}

/// Full jitter: a uniform wait in [d/2, d].
fn jitter(d: Duration) -> Duration {
    let ms = d.as_millis() as u64;
    Duration::from_millis(ms / 2 + fastrand::u64(0..=ms / 2))
}

/// What every destination's thread shares.
#[derive(Clone)]
struct Shared {
    store: Arc<Store>,
    metrics: Arc<Mutex<Metrics>>,
    stop: Arc<AtomicBool>,
    links: Links,
    max_age_ms: i64,
    digest_after: usize,
}

/// The running notifier: its threads, stopped with [`Notifier::stop`].
pub struct Notifier {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Notifier {
    /// Starts one thread per destination of `[notify]`.
    pub fn start(
        n: &NotifyConfig,
        store: Arc<Store>,
        metrics: Arc<Mutex<Metrics>>,
    ) -> Result<Notifier, NotifyError> {
        let dests: Vec<Destination> = n
            .destinations
            .iter()
            .map(Destination::new)
            .collect::<Result<_, _>>()?;
        let stop = Arc::new(AtomicBool::new(false));
        let shared = Shared {
            store,
            metrics,
            stop: stop.clone(),
            links: Links {
                api_url: n.api_url.clone(),
                grafana_url: n.grafana_url.clone(),
            },
            max_age_ms: n.max_age.as_millis() as i64,
            digest_after: n.digest_after as usize,
        };
        let mut threads = Vec::new();
        for d in dests {
            let s = shared.clone();
            let t = std::thread::Builder::new()
                .name(format!("notify-{}", d.name))
                .spawn(move || Worker::new(d, s).run())
                .map_err(NotifyError::Spawn)?;
            threads.push(t);
        }
        Ok(Notifier { stop, threads })
    }

    /// Stops the threads (a request under way finishes or times out).
    pub fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// One destination's loop.
struct Worker {
    d: Destination,
    s: Shared,
    /// When the next request may go (rate, back-off, Retry-After).
    next: Instant,
    backoff: Duration,
    /// Messages dispatched in the last minute (time, count).
    recent: std::collections::VecDeque<(Instant, usize)>,
    failing: bool,
}

impl Worker {
    fn new(d: Destination, s: Shared) -> Worker {
        Worker {
            d,
            s,
            next: Instant::now(),
            backoff: MIN_BACKOFF,
            recent: Default::default(),
            failing: false,
        }
    }

    fn stopping(&self) -> bool {
        self.s.stop.load(Ordering::Relaxed)
    }

    fn sleep_until(&self, until: Instant) {
        while !self.stopping() && Instant::now() < until {
            std::thread::sleep(
                until
                    .saturating_duration_since(Instant::now())
                    .min(Duration::from_millis(50)),
            );
        }
    }

    fn count_failed(&self, reason: &str, n: usize) {
        if n == 0 {
            return;
        }
        let m = self.s.metrics.lock().unwrap_or_else(|p| p.into_inner());
        m.notify_failed
            .with_label_values(&[self.d.name.as_str(), reason])
            .inc_by(n as u64);
    }

    fn set_failing(&mut self, failing: bool) {
        self.failing = failing;
        let m = self.s.metrics.lock().unwrap_or_else(|p| p.into_inner());
        m.notify_failing
            .with_label_values(&[self.d.name.as_str()])
            .set(i64::from(failing));
    }

    fn gauges(&self, oldest: Option<i64>) {
        let queued = self.s.store.notify_len(&self.d.name).unwrap_or(0);
        let m = self.s.metrics.lock().unwrap_or_else(|p| p.into_inner());
        m.notify_queued
            .with_label_values(&[self.d.name.as_str()])
            .set(queued as i64);
        m.notify_oldest_age
            .with_label_values(&[self.d.name.as_str()])
            .set(oldest.map_or(0.0, |t| (now_ms() - t).max(0) as f64 / 1000.0));
    }

    fn remove(&self, seqs: &[u64]) {
        if let Err(e) = self.s.store.notify_remove(&self.d.name, seqs) {
            tracing::error!(destination = %self.d.name, "cannot remove notifications from the store: {e}");
        }
    }

    fn run(mut self) {
        self.set_failing(false);
        self.gauges(None);
        while !self.stopping() {
            // While waiting (rate, back-off) only the oldest message is
            // looked at: the gauges stay current, and once it passes
            // max_age the whole queue is read for the drops.
            if Instant::now() < self.next {
                let head = self
                    .s
                    .store
                    .notify_read(&self.d.name, 1)
                    .unwrap_or_default();
                let oldest = head
                    .first()
                    .and_then(|(_, v)| serde_json::from_slice::<Note>(v).ok())
                    .map(|n| n.queued_at);
                if oldest.is_none_or(|t| now_ms() - t <= self.s.max_age_ms) {
                    self.gauges(oldest);
                    self.sleep_until(self.next.min(Instant::now() + IDLE));
                    continue;
                }
            }
            let rows = match self.s.store.notify_read(&self.d.name, READ) {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(destination = %self.d.name, "cannot read the notification queue: {e}");
                    self.sleep_until(Instant::now() + MAX_BACKOFF);
                    continue;
                }
            };
            // Decode; drop what cannot be decoded or is too old.
            let now = now_ms();
            let mut drop_seqs = Vec::new();
            let (mut bad, mut old) = (0, 0);
            let mut notes: Vec<(u64, Note)> = Vec::new();
            for (seq, v) in rows {
                match serde_json::from_slice::<Note>(&v) {
                    Ok(n) if now - n.queued_at > self.s.max_age_ms => {
                        old += 1;
                        drop_seqs.push(seq);
                    }
                    Ok(n) => notes.push((seq, n)),
                    Err(_) => {
                        bad += 1;
                        drop_seqs.push(seq);
                    }
                }
            }
            if !drop_seqs.is_empty() {
                self.remove(&drop_seqs);
                if old > 0 {
                    tracing::warn!(destination = %self.d.name, "dropped {old} notifications older than [notify] max_age");
                }
                self.count_failed("max_age", old);
                self.count_failed("undecodable", bad);
            }
            self.gauges(notes.first().map(|(_, n)| n.queued_at));
            if notes.is_empty() {
                self.sleep_until(Instant::now() + IDLE);
                continue;
            }
            let now = Instant::now();
            if now < self.next {
                self.sleep_until(self.next.min(now + IDLE));
                continue;
            }
            let minute_ago = Instant::now() - Duration::from_secs(60);
            while self.recent.front().is_some_and(|(t, _)| *t < minute_ago) {
                self.recent.pop_front();
            }
            let recent: usize = self.recent.iter().map(|(_, n)| n).sum();
            let digest = notes.len() > 1 && recent + notes.len() > self.s.digest_after;
            let (body, take) = if digest {
                let ns: Vec<Note> = notes.iter().map(|(_, n)| n.clone()).collect();
                (
                    render::render_digest(self.d.kind, &ns, &self.s.links),
                    notes.len(),
                )
            } else {
                (render::render(self.d.kind, &notes[0].1, &self.s.links), 1)
            };
            let seqs: Vec<u64> = notes[..take].iter().map(|(s, _)| *s).collect();
            let answer = self.d.send(&body);
            let sent_at = Instant::now();
            match answer {
                Answer::Delivered(..) => {
                    self.remove(&seqs);
                    self.recent.push_back((sent_at, take));
                    self.s
                        .metrics
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .notify_sent
                        .with_label_values(&[self.d.name.as_str()])
                        .inc();
                    if self.failing {
                        tracing::info!(destination = %self.d.name, "the destination accepts notifications again");
                        self.set_failing(false);
                    }
                    self.backoff = MIN_BACKOFF;
                    self.next = sent_at + self.d.interval;
                }
                Answer::Later(wait, why) => {
                    let w = wait.unwrap_or_else(|| jitter(self.backoff));
                    tracing::warn!(
                        destination = %self.d.name,
                        "cannot deliver notifications ({why}); trying again in {:.1}s",
                        w.as_secs_f64()
                    );
                    self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
                    self.next = sent_at + w.max(self.d.interval);
                }
                Answer::Refused(status, head) => {
                    tracing::warn!(
                        destination = %self.d.name,
                        "the destination refused {take} notification(s) for good: HTTP {status}, \
                         answer {head:?}; dropped"
                    );
                    self.remove(&seqs);
                    self.count_failed("refused", take);
                    self.set_failing(true);
                    self.recent.push_back((sent_at, take));
                    self.next = sent_at + self.d.interval;
                }
            }
        }
    }
}

/// `relstat notify test NAME`: sends a sample message to the destination
/// and returns the answer (status and body head).
pub fn send_test(n: &NotifyConfig, name: &str) -> Result<Answer, NotifyError> {
    let d = n
        .destinations
        .iter()
        .find(|d| d.name == name)
        .ok_or_else(|| NotifyError::Unknown(name.to_string()))?;
    let dest = Destination::new(d)?;
    let links = Links {
        api_url: n.api_url.clone(),
        grafana_url: n.grafana_url.clone(),
    };
    let mut note = render::sample(now_ms());
    note.id = super::stable_id(name, &note);
    Ok(dest.send(&render::render(d.kind, &note, &links)))
}
