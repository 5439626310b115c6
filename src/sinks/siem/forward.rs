//! The forwarder: one thread that drains the outbox to the SIEM.
//!
//! It reads the outbox in sequence order, formats and sends batches
//! (rate-limited by a governor token bucket: over any interval at most
//! `rate_limit` per second plus `burst`), and removes records only up to
//! what the transport reports delivered. On any error it drops the
//! connection, waits (exponential backoff from [`MIN_BACKOFF`] to
//! [`MAX_BACKOFF`] with full jitter) and reconnects; every new connection
//! reads the outbox from its first record, because whatever is still there
//! is by definition not known delivered (a resend counts as `retried`).
//! An `http` collector's refusal ([`TransportError::Refused`]) is handled
//! the same way, counted `refused` and logged with its answer: the batch
//! stays in the outbox; a `Retry-After` stretches the wait. `http` batches
//! are also cut to `max_batch_bytes` (`split_by_bytes`).
//!
//! Spool limits: the outbox policy ([`crate::spool::outbox`]) is applied
//! by the core; each delivery updates the [`Outbox`] state the producers
//! read (`when_full = "block"`); with `drop_oldest` the core drops, and the forwarder turns the dropped ledger into one
//! summary event when it connects (or, while connected, at the tail).

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use governor::{Quota, RateLimiter};

use super::format::FormatContext;
use super::transport::http::HttpConnector;
use super::transport::relp::RelpTransport;
use super::transport::stream::{Stream, StreamTransport};
use super::transport::tls::TlsConnector;
use super::transport::udp::UdpTransport;
use super::transport::{Msg, Transport, TransportError, connect_tcp};
use crate::config::{SiemConfig, SiemFormat, SiemTransport};
use crate::detect::{Anomaly, AnomalyRef};
use crate::event::{ActorType, TimeMs, format_rfc3339, now_ms};
use crate::spool::outbox::Outbox;
use crate::store::{DroppedLedger, OutboxStats, Store};

pub const MIN_BACKOFF: Duration = Duration::from_millis(250);
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Records read (and sent) per batch.
const BATCH: usize = 2048;
/// Delivered records are removed at most this often (one store commit),
/// or sooner when this many are waiting.
const REMOVE_EVERY: Duration = Duration::from_millis(200);
const REMOVE_AT: u64 = 20_000;
/// How long a stop waits for what was sent to be confirmed.
const STOP_DRAIN: Duration = Duration::from_millis(2500);

/// What the forwarder reports (the agent maps it onto the metrics of docs/metrics.md).
pub trait Observer: Send + Sync {
    /// `relstat_forward_events_total{result}` += n.
    fn count(&self, result: &'static str, n: u64);
    /// `relstat_forward_connected`.
    fn connected(&self, up: bool);
    /// The spool gauges.
    fn spool(&self, stats: &OutboxStats);
}

/// How to open a connection for the configured transport.
enum Connector {
    Tcp(String),
    Tls(String, TlsConnector),
    Relp(String, Option<TlsConnector>),
    Udp(String),
    Http(HttpConnector),
}

impl Connector {
    fn new(siem: &SiemConfig) -> Result<Self, TransportError> {
        let address = siem.address.clone().unwrap_or_default();
        Ok(match siem.transport {
            SiemTransport::Tcp => Connector::Tcp(address),
            SiemTransport::Tls => {
                let t = TlsConnector::new(siem, &address)?;
                Connector::Tls(address, t)
            }
            SiemTransport::Relp => {
                let t = if siem.tls {
                    Some(TlsConnector::new(siem, &address)?)
                } else {
                    None
                };
                Connector::Relp(address, t)
            }
            SiemTransport::Udp => Connector::Udp(address),
            SiemTransport::Http => Connector::Http(HttpConnector::new(siem)?),
        })
    }

    fn connect(&self) -> Result<Box<dyn Transport>, TransportError> {
        Ok(match self {
            Connector::Tcp(a) => Box::new(StreamTransport::new(Stream::plain(connect_tcp(a)?))),
            Connector::Tls(a, t) => Box::new(StreamTransport::new(t.connect(a)?)),
            Connector::Relp(a, t) => {
                let s = match t {
                    Some(t) => t.connect(a)?,
                    None => Stream::plain(connect_tcp(a)?),
                };
                Box::new(RelpTransport::open(s)?)
            }
            Connector::Udp(a) => Box::new(UdpTransport::connect(a)?),
            Connector::Http(h) => Box::new(h.connect()?),
        })
    }
}

type Limiter = RateLimiter<
    governor::state::NotKeyed,
    governor::state::InMemoryState,
    governor::clock::DefaultClock,
>;

pub struct Forwarder {
    store: Arc<Store>,
    connector: Connector,
    format: FormatContext,
    limiter: Option<(Limiter, u32)>,
    observer: Arc<dyn Observer>,
    gate: Arc<Outbox>,
    stop: Arc<AtomicBool>,
    /// The highest seq ever sent: a seq at or below it is a resend.
    max_sent: u64,
    /// Largest request body (`http`): batches are cut to fit.
    max_batch_bytes: Option<usize>,
    host: String,
    site: String,
    sink: String,
}

enum SessionEnd {
    Stopped,
    Transport(TransportError),
}

impl Forwarder {
    /// Checks the configuration (certificates, keys, URL) and builds the
    /// forwarder; [`Forwarder::spawn`] starts it.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        siem: &SiemConfig,
        host: &str,
        site: &str,
        store: Arc<Store>,
        observer: Arc<dyn Observer>,
        gate: Arc<Outbox>,
        stop: Arc<AtomicBool>,
    ) -> Result<Self, TransportError> {
        let connector = Connector::new(siem)?;
        // NDJSON bodies are JSON whatever `format` says.
        let fmt = if siem.transport == SiemTransport::Http {
            SiemFormat::Json
        } else {
            siem.format
        };
        let limiter = match (
            NonZeroU32::new(siem.rate_limit),
            NonZeroU32::new(siem.burst),
        ) {
            (Some(rate), Some(burst)) => Some((
                RateLimiter::direct(Quota::per_second(rate).allow_burst(burst)),
                burst.get(),
            )),
            _ => None,
        };
        Ok(Self {
            store,
            connector,
            format: FormatContext::new(fmt, &siem.facility, &siem.sd_id),
            limiter,
            observer,
            gate,
            stop,
            max_sent: 0,
            max_batch_bytes: (siem.transport == SiemTransport::Http)
                .then(|| siem.max_batch_bytes().as_u64() as usize),
            host: host.to_string(),
            site: site.to_string(),
            sink: sink_name(siem).to_string(),
        })
    }

    pub fn spawn(self) -> std::io::Result<JoinHandle<()>> {
        std::thread::Builder::new()
            .name("siem-forward".into())
            .spawn(move || self.run())
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Sleeps `d`, waking early on stop.
    fn sleep(&self, d: Duration) {
        let until = Instant::now() + d;
        while !self.stopping() && Instant::now() < until {
            std::thread::sleep(
                until
                    .saturating_duration_since(Instant::now())
                    .min(Duration::from_millis(50)),
            );
        }
    }

    fn run(mut self) {
        let mut backoff = MIN_BACKOFF;
        let mut last_error = String::new();
        // Whether the next session start is worth a log line (not after a
        // refusal: the receiver is there, it said no).
        let mut announce = true;
        self.observer.connected(false);
        while !self.stopping() {
            let mut t = match self.connector.connect() {
                Ok(t) => t,
                Err(e) => {
                    let msg = e.to_string();
                    if msg != last_error {
                        tracing::warn!(sink = %self.sink, "cannot connect to the SIEM: {msg}");
                        last_error = msg;
                    }
                    self.sleep(jitter(backoff));
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            };
            if announce {
                tracing::info!(sink = %self.sink, "connected to the SIEM");
            }
            last_error.clear();
            self.observer.connected(true);
            let started = Instant::now();
            let end = self.session(&mut *t);
            // A refusal is an answer: the receiver is there.
            if !matches!(end, SessionEnd::Transport(TransportError::Refused { .. })) {
                self.observer.connected(false);
            }
            // A connection that fails at once (a refused client certificate,
            // a refused batch) must not reconnect in a tight loop.
            if started.elapsed() > MAX_BACKOFF {
                backoff = MIN_BACKOFF;
            }
            let mut wait = jitter(backoff);
            announce = true;
            match end {
                SessionEnd::Stopped => {
                    t.close();
                    return;
                }
                SessionEnd::Transport(TransportError::Refused {
                    status,
                    body,
                    events,
                }) => {
                    self.observer.count("refused", events as u64);
                    tracing::warn!(
                        sink = %self.sink,
                        "the SIEM collector refused a batch of {events} events: HTTP {status}, \
                         answer {body:?}; they stay in the spool and are offered again in {:.1}s",
                        wait.as_secs_f64()
                    );
                    announce = false;
                    t.close();
                }
                SessionEnd::Transport(e) => {
                    if let TransportError::Unavailable {
                        retry_after: Some(after),
                        ..
                    } = &e
                    {
                        wait = wait.max(*after);
                    }
                    tracing::warn!(sink = %self.sink, "SIEM connection lost: {e}; resending what is not known delivered");
                    t.close();
                }
            }
            self.sleep(wait);
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Removes what is delivered up to `upto`; updates the spool gauges.
    fn remove(&self, upto: u64, removed_upto: &mut u64) {
        if upto <= *removed_upto {
            return;
        }
        match self.store.outbox_remove(upto) {
            Ok(n) => {
                *removed_upto = upto;
                self.observer.count("acked", n);
                self.refresh_stats();
            }
            Err(e) => tracing::error!("cannot remove delivered SIEM records from the store: {e}"),
        }
    }

    fn refresh_stats(&self) {
        if let Ok(stats) = self.store.outbox_stats() {
            self.gate.update(&stats);
            self.observer.spool(&stats);
        }
    }

    fn take_dropped(&self, at_head: bool) {
        let (host, site) = (self.host.clone(), self.site.clone());
        match self
            .store
            .outbox_take_dropped(at_head, |l| dropped_summary(l, &host, &site, now_ms()))
        {
            Ok(true) => tracing::warn!("reported the events dropped from the full spool"),
            Ok(false) => {}
            Err(e) => tracing::error!("cannot write the dropped-events summary: {e}"),
        }
    }

    fn session(&mut self, t: &mut dyn Transport) -> SessionEnd {
        // Everything still in the outbox is not known delivered: start at its head.
        self.take_dropped(true);
        let mut cursor = 0u64;
        let mut removed_upto = 0u64;
        let mut last_remove = Instant::now();
        let mut last_dropped_check = Instant::now();
        let mut buf: Vec<u8> = Vec::with_capacity(1024 * 1024);
        let mut ends: Vec<(u64, usize)> = Vec::with_capacity(BATCH);
        let mut raw: Vec<u8> = Vec::with_capacity(1024 * 1024);
        let mut rows: Vec<(u64, std::ops::Range<usize>)> = Vec::with_capacity(BATCH);
        let fail = |t: &mut dyn Transport, e: TransportError, removed_upto: &mut u64, me: &Self| {
            if let Some(d) = t.known_delivered() {
                me.remove(d, removed_upto);
            }
            SessionEnd::Transport(e)
        };
        loop {
            if self.stopping() {
                match t.drain(STOP_DRAIN) {
                    Ok(Some(d)) => self.remove(d, &mut removed_upto),
                    Ok(None) => {}
                    Err(_) => {
                        if let Some(d) = t.known_delivered() {
                            self.remove(d, &mut removed_upto);
                        }
                    }
                }
                return SessionEnd::Stopped;
            }
            let limit = self
                .limiter
                .as_ref()
                .map_or(BATCH, |(_, b)| BATCH.min(*b as usize));
            raw.clear();
            rows.clear();
            if let Err(e) = self
                .store
                .outbox_read_raw(cursor, limit, &mut raw, &mut rows)
            {
                tracing::error!("cannot read the outbox: {e}");
                self.sleep(Duration::from_secs(1));
                continue;
            }
            let batch = &rows;
            if batch.is_empty() {
                match t.delivered() {
                    Ok(Some(d)) => self.remove(d, &mut removed_upto),
                    Ok(None) => {}
                    Err(e) => return fail(t, e, &mut removed_upto, self),
                }
                if last_dropped_check.elapsed() > Duration::from_secs(1) {
                    last_dropped_check = Instant::now();
                    self.take_dropped(false);
                }
                self.sleep(Duration::from_millis(20));
                continue;
            }
            if let Some((limiter, _)) = &self.limiter {
                let n = NonZeroU32::new(batch.len() as u32).unwrap_or(NonZeroU32::MIN);
                loop {
                    match limiter.check_n(n) {
                        Ok(Ok(())) => break,
                        Ok(Err(not_until)) => {
                            use governor::clock::Clock;
                            let wait = not_until
                                .wait_time_from(governor::clock::DefaultClock::default().now());
                            // Keep the connection's acknowledgements flowing while we wait.
                            match t.delivered() {
                                Ok(Some(d)) => self.remove(d, &mut removed_upto),
                                Ok(None) => {}
                                Err(e) => return fail(t, e, &mut removed_upto, self),
                            }
                            self.sleep(wait.min(Duration::from_millis(100)));
                            if self.stopping() {
                                break;
                            }
                        }
                        // n <= burst by construction.
                        Err(_) => break,
                    }
                }
                if self.stopping() {
                    continue;
                }
            }
            buf.clear();
            ends.clear();
            let mut bad = None;
            for (seq, range) in batch {
                // One UTF-8 check of the whole record (ASCII runs fast), then
                // serde_json's str reader, which skips the per-string check.
                let decoded = std::str::from_utf8(&raw[range.clone()])
                    .map_err(|e| e.to_string())
                    .and_then(|s| {
                        serde_json::from_str::<AnomalyRef<'_>>(s).map_err(|e| e.to_string())
                    });
                match decoded {
                    Ok(rec) => self.format.write_ref(&rec, &mut buf),
                    Err(e) => {
                        bad = Some(format!("outbox record {seq}: {e}"));
                        break;
                    }
                }
                ends.push((*seq, buf.len()));
            }
            if let Some(e) = bad {
                // As when the store cannot be read: the record stays, the
                // operator sees why, the forwarder retries.
                tracing::error!("cannot read the outbox: the store is corrupt: {e}");
                self.sleep(Duration::from_secs(1));
                continue;
            }
            let mut msgs = Vec::with_capacity(ends.len());
            let mut start = 0;
            for &(seq, end) in &ends {
                msgs.push(Msg {
                    seq,
                    bytes: &buf[start..end],
                });
                start = end;
            }
            for part in split_by_bytes(&msgs, self.max_batch_bytes) {
                let part = &msgs[part];
                if let Err(e) = t.send(part) {
                    return fail(t, e, &mut removed_upto, self);
                }
                let last = part.last().map_or(cursor, |m| m.seq);
                let retried = part.iter().filter(|m| m.seq <= self.max_sent).count() as u64;
                self.observer.count("sent", part.len() as u64 - retried);
                if retried > 0 {
                    self.observer.count("retried", retried);
                }
                self.max_sent = self.max_sent.max(last);
                cursor = last;
            }
            let truncated = t.take_truncated();
            if truncated > 0 {
                tracing::warn!(sink = %self.sink, "{truncated} SIEM messages longer than a UDP datagram were truncated");
            }
            match t.delivered() {
                Ok(Some(d))
                    if last_remove.elapsed() >= REMOVE_EVERY
                        || d.saturating_sub(removed_upto) >= REMOVE_AT =>
                {
                    self.remove(d, &mut removed_upto);
                    last_remove = Instant::now();
                }
                Ok(_) => {}
                Err(e) => return fail(t, e, &mut removed_upto, self),
            }
        }
    }
}

/// The `sink` label: the transport's name.
pub fn sink_name(siem: &SiemConfig) -> &'static str {
    match siem.transport {
        SiemTransport::Tls => "tls",
        SiemTransport::Relp => "relp",
        SiemTransport::Tcp => "tcp",
        SiemTransport::Udp => "udp",
        SiemTransport::Http => "http",
    }
}

/// Cuts `msgs` into runs whose request body (each message and a newline)
/// stays within `cap` bytes; a message longer than `cap` goes alone. No
/// cap: one run.
fn split_by_bytes(msgs: &[Msg<'_>], cap: Option<usize>) -> Vec<std::ops::Range<usize>> {
    let cap = cap.unwrap_or(usize::MAX);
    let mut runs = Vec::new();
    let (mut start, mut bytes) = (0, 0usize);
    for (i, m) in msgs.iter().enumerate() {
        let n = m.bytes.len() + 1;
        if i > start && bytes.saturating_add(n) > cap {
            runs.push(start..i);
            (start, bytes) = (i, 0);
        }
        bytes += n;
    }
    if start < msgs.len() {
        runs.push(start..msgs.len());
    }
    runs
}

/// Full jitter: a uniform wait in [d/2, d].
fn jitter(d: Duration) -> Duration {
    let ms = d.as_millis() as u64;
    Duration::from_millis(ms / 2 + fastrand::u64(0..=ms / 2))
}

/// The one SIEM event that reports records dropped from a full spool.
pub fn dropped_summary(l: &DroppedLedger, host: &str, site: &str, now: TimeMs) -> Anomaly {
    let span = match (l.first, l.last) {
        (Some(a), Some(b)) => format!(
            ", detected between {} and {}",
            format_rfc3339(a),
            format_rfc3339(b)
        ),
        _ => String::new(),
    };
    Anomaly {
        rule: "spool_overflow".into(),
        severity: crate::config::Severity::Warning,
        release: String::new(),
        service: String::new(),
        environment: String::new(),
        site: site.to_string(),
        from: None,
        to: String::new(),
        actor: "relstat".into(),
        actor_type: ActorType::Automation,
        source: "spool".into(),
        event_id: format!("spool-overflow-{host}-{now}"),
        event_time: l.last.unwrap_or(now),
        detected_at: now,
        reason: Some("when_full = \"drop_oldest\"".into()),
        version: None,
        commit: None,
        change_class: None,
        approver: None,
        decision: None,
        audit_sequence: None,
        audit_hash: None,
        host: host.to_string(),
        message: format!(
            "{} SIEM events were dropped from the full spool{span}",
            l.count
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_are_cut_to_the_byte_cap_and_a_long_record_goes_alone() {
        let bodies: Vec<Vec<u8>> = [10, 10, 10, 50, 5, 5]
            .iter()
            .map(|&n| vec![b'x'; n])
            .collect();
        let msgs: Vec<Msg<'_>> = bodies
            .iter()
            .enumerate()
            .map(|(i, b)| Msg {
                seq: i as u64 + 1,
                bytes: b,
            })
            .collect();
        // Each message costs its length plus a newline.
        assert_eq!(
            split_by_bytes(&msgs, Some(22)),
            vec![0..2, 2..3, 3..4, 4..6]
        );
        assert_eq!(split_by_bytes(&msgs, Some(33)), vec![0..3, 3..4, 4..6]);
        assert_eq!(split_by_bytes(&msgs, None), vec![0..6]);
        assert_eq!(
            split_by_bytes(&msgs[..0], Some(22)),
            Vec::<std::ops::Range<usize>>::new()
        );
    }
}
