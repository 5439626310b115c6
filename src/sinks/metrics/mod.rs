//! The Prometheus sink: every series of docs/metrics.md in one registry, fed
//! by the tracker's effects, and the lifecycle of the per-release series.
//!
//! Per-release series (`relstat_release_status`,
//! `relstat_release_status_since_timestamp_seconds`) leave the exposition
//! `finished_retention` after their key finished (agent clock), and at most
//! `max_tracked` keys keep them: beyond that the oldest finished go first,
//! then the longest-unchanged open ones, counted by
//! `relstat_tracked_evictions_total`. Label values from outside input are
//! bounded twice, each counted by `relstat_label_overflow_total{label,
//! reason}`:
//! - length (release, service, environment, site): a value over
//!   `label_value_max_bytes` is shortened by [`shorten`] (`reason="length"`);
//!   the API and the SIEM keep the whole value;
//! - cardinality (service, environment, site): at most `max_label_values`
//!   distinct values per label; the rest become `other`
//!   (`reason="cardinality"`). `release` is bounded by `max_tracked` instead.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use foldhash::{HashMap, HashMapExt, HashSet};

use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::config::TrackingConfig;
use crate::event::{InputResult, Key, TimeMs};
use crate::track::Effect;

/// The value a capped label takes once its cap is reached.
pub const OTHER: &str = "other";

/// The smallest `[tracking] label_value_max_bytes`: room for the hash
/// suffix of [`shorten`] and a readable prefix.
pub use crate::config::MIN_LABEL_VALUE_BYTES;

/// `~` and 16 hex digits: what [`shorten`] appends.
const SUFFIX_BYTES: usize = 17;

/// `value` itself when it has at most `max` bytes, else its longest prefix
/// (cut on a char boundary) that leaves room for `~` and the 64-bit xxh3
/// hash of the whole value in hex: at most `max` bytes, and distinct values
/// stay distinct series (a dashboard shows the prefix; the API has the
/// whole value). `max` below [`MIN_LABEL_VALUE_BYTES`] is taken as that.
pub fn shorten(value: &str, max: usize) -> Cow<'_, str> {
    let max = max.max(MIN_LABEL_VALUE_BYTES);
    if value.len() <= max {
        return Cow::Borrowed(value);
    }
    let mut cut = max - SUFFIX_BYTES;
    while !value.is_char_boundary(cut) {
        cut -= 1;
    }
    let hash = xxhash_rust::xxh3::xxh3_64(value.as_bytes());
    Cow::Owned(format!("{}~{hash:016x}", &value[..cut]))
}

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("cannot register metric: {0}")]
    Register(#[from] prometheus::Error),
}

/// One `relstat_release_rollup_status` series: its release, environment
/// and status label values, and its number of targets.
type RollupSeries = (Arc<str>, Arc<str>, Arc<str>, u64);

/// A label value escaped for the text format (`\\`, `\"`, `\n`).
struct Esc<'a>(&'a str);

impl std::fmt::Display for Esc<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use std::fmt::Write;
        for c in self.0.chars() {
            match c {
                '\\' => f.write_str("\\\\")?,
                '"' => f.write_str("\\\"")?,
                '\n' => f.write_str("\\n")?,
                c => f.write_char(c)?,
            }
        }
        Ok(())
    }
}

/// One key's per-release series as exposed (label values as shown). The
/// map of these is keyed by the key's 128-bit hash ([`key_id`]), not by a
/// copy of the key, and every label but `release` is an interned string
/// shared by all keys with that value: ~120 bytes and one allocation a key
/// (was ~500 bytes and nine allocations).
#[derive(Debug, Clone)]
struct Exposed {
    release: Box<str>,
    service: Arc<str>,
    environment: Arc<str>,
    site: Arc<str>,
    status: Arc<str>,
    since: TimeMs,
    finished_at: Option<TimeMs>,
}

impl Exposed {
    /// The labels that identify it, in the key's order.
    fn labels(&self) -> (&str, &str, &str, &str) {
        (&self.release, &self.service, &self.environment, &self.site)
    }
}

/// The identity of a key in the sink's map: xxh3-128 over its four fields
/// (as the store encodes them, 0x00-separated), so a collision needs two
/// keys with equal 128-bit hashes.
fn key_id(key: &Key) -> u128 {
    labels_id(&[&key.release, &key.service, &key.environment, &key.site])
}

/// The identity of a set of label values: xxh3-128 over them, each
/// followed by 0x00 (which no label value from the parsers contains).
/// Hashed in one call from a stack buffer when they fit in it: the
/// streaming hasher copied every piece into its own buffer (a fifth of the
/// `memmove` samples of `run --once`), and one-shot xxh3 of the same bytes
/// is the same hash.
fn labels_id(values: &[&str]) -> u128 {
    let mut buf = [0u8; 256];
    let mut n = 0;
    for v in values {
        let end = n + v.len() + 1;
        if end > buf.len() {
            let mut h = xxhash_rust::xxh3::Xxh3Default::new();
            for v in values {
                h.update(v.as_bytes());
                h.update(&[0]);
            }
            return h.digest128();
        }
        buf[n..end - 1].copy_from_slice(v.as_bytes());
        n = end;
    }
    xxhash_rust::xxh3::xxh3_128(&buf[..n])
}

/// `shown` is `raw` itself (the same bytes, not a copy), as
/// [`LabelCaps::cap`] returns a value that passed both caps: nothing was
/// counted in `relstat_label_overflow_total`. A shortened value is a new
/// string and `other` a static one, so neither is `raw`.
fn kept(shown: &str, raw: &str) -> bool {
    std::ptr::eq(shown.as_ptr(), raw.as_ptr()) && shown.len() == raw.len()
}

/// Metric handles already looked up in their vector, by [`labels_id`] of
/// the raw label values. The hot effects (one input count, one delay and,
/// per transition, one duration, one transition count and two gauge
/// moves) then cost one short hash and one map lookup each instead of the
/// caps' set lookups plus prometheus' own label hashing, read lock and
/// handle clone. Only handles whose labels passed the caps unchanged are
/// kept: a shortened or capped value is counted at every use, as before.
/// At most one entry per series the vectors already hold.
struct Handles<M>(HashMap<u128, M>);

impl<M: Clone> Handles<M> {
    fn new() -> Self {
        Self(HashMap::new())
    }

    fn get(&self, id: u128) -> Option<&M> {
        self.0.get(&id)
    }

    fn keep(&mut self, id: u128, m: &M) {
        self.0.insert(id, m.clone());
    }
}

/// The cached handles of [`Metrics`].
struct Cached {
    /// `relstat_events_total` by (source, result).
    events: Handles<IntCounter>,
    /// `relstat_event_delay_seconds` by (source, site).
    delay: Handles<Histogram>,
    /// `relstat_status_duration_seconds` by (service, environment, site, status).
    duration: Handles<Histogram>,
    /// `relstat_transitions_total` by (environment, from, to).
    transitions: Handles<IntCounter>,
    /// `relstat_releases_in_status` by its (already capped) labels.
    in_status: Handles<IntGauge>,
}

/// Length and distinct-value caps for the labels that come from outside input.
#[derive(Debug, Default)]
struct LabelCaps {
    /// `max_label_values`.
    max: usize,
    /// `label_value_max_bytes`.
    max_bytes: usize,
    seen: HashMap<&'static str, HashSet<Arc<str>>>,
    /// Status ids (from the model: a handful), interned.
    statuses: HashSet<Arc<str>>,
}

impl LabelCaps {
    /// `value` of `label` within `label_value_max_bytes` ([`shorten`]; counted).
    fn shorten<'a>(
        &self,
        label: &'static str,
        value: &'a str,
        overflow: &IntCounterVec,
    ) -> Cow<'a, str> {
        let shown = shorten(value, self.max_bytes);
        if let Cow::Owned(_) = shown {
            overflow.with_label_values(&[label, "length"]).inc();
        }
        shown
    }

    /// The value to expose for `value` of `label`: shortened as
    /// [`Self::shorten`], then itself while fewer than `max` distinct values
    /// were seen, else `other` (counted). Allocates only for a value not
    /// seen before, or one that is shortened.
    fn cap<'a>(
        &mut self,
        label: &'static str,
        value: &'a str,
        overflow: &IntCounterVec,
    ) -> Cow<'a, str> {
        let value = self.shorten(label, value, overflow);
        let set = self.seen.entry(label).or_default();
        if set.contains(value.as_ref()) {
            return value;
        }
        if set.len() < self.max {
            set.insert(Arc::from(value.as_ref()));
            return value;
        }
        overflow.with_label_values(&[label, "cardinality"]).inc();
        Cow::Borrowed(OTHER)
    }

    /// The value [`Self::cap`] would expose, as the shared string the
    /// distinct-value set holds (no allocation once the value was seen).
    fn interned(&mut self, label: &'static str, value: &str, overflow: &IntCounterVec) -> Arc<str> {
        let shown = self.cap(label, value, overflow);
        let set = self.seen.entry(label).or_default();
        if let Some(v) = set.get(shown.as_ref()) {
            return Arc::clone(v);
        }
        // `other`: kept beside the statuses, not among the capped values.
        self.status(OTHER)
    }

    /// A status id, interned.
    fn status(&mut self, status: &str) -> Arc<str> {
        if let Some(v) = self.statuses.get(status) {
            return Arc::clone(v);
        }
        let a: Arc<str> = Arc::from(status);
        self.statuses.insert(Arc::clone(&a));
        a
    }
}

pub struct Metrics {
    registry: Registry,
    status_duration: HistogramVec,
    transitions: IntCounterVec,
    in_status: IntGaugeVec,
    stuck: IntGaugeVec,
    resolution: HistogramVec,
    deployments: IntCounterVec,
    lead_time: HistogramVec,
    restore: HistogramVec,
    anomalies: IntCounterVec,
    events: IntCounterVec,
    source_last: GaugeVec,
    source_errors: IntCounterVec,
    source_poll: HistogramVec,
    pub spool_events: IntGauge,
    pub spool_bytes: IntGauge,
    pub spool_oldest_age: Gauge,
    pub forward_events: IntCounterVec,
    pub forward_connected: IntGaugeVec,
    pub notify_sent: IntCounterVec,
    pub notify_failed: IntCounterVec,
    pub notify_queued: IntGaugeVec,
    pub notify_oldest_age: GaugeVec,
    pub notify_failing: IntGaugeVec,
    /// Records kept aside in the store's quarantine table (running agent).
    pub store_quarantined: IntGauge,
    /// The audit chain's head sequence.
    pub audit_sequence: IntGauge,
    /// When the last `anchor` record was written (seconds).
    pub audit_last_anchor: prometheus::Gauge,
    /// Dead letters held in the store, by source and result (running agent).
    pub dlq_payloads: IntGaugeVec,
    /// Dead letters dropped for a `[dlq]` limit or retention.
    pub dlq_dropped: IntCounter,
    evictions: IntCounter,
    label_overflow: IntCounterVec,
    http_connections: IntGauge,
    http_refused: IntCounterVec,
    exposed: HashMap<u128, Exposed>,
    /// Freshness: recorded time - event time, per source and site.
    event_delay: HistogramVec,
    /// Relays: when each site's events were last imported.
    site_last_sync: GaugeVec,
    /// Relays: event time of the newest event imported per site.
    site_newest_event: GaugeVec,
    /// `relstat_release_rollup_status`: (release, environment, status,
    /// targets), labels already capped; at most `max_tracked` rollups. The
    /// names are the tracker's (shared, not copied) unless a cap changed
    /// them.
    rollups: Vec<RollupSeries>,
    /// `relstat_release_risk_score`: (release, service, environment,
    /// score), labels already capped; at most `max_tracked`.
    risk: Vec<(String, String, String, f64)>,
    caps: LabelCaps,
    cached: Cached,
    retention_ms: TimeMs,
    max_tracked: usize,
}

/// `relstat_event_delay_seconds`: from a second (a webhook) to a week (a
/// bundle carried by hand).
const DELAY_BUCKETS: [f64; 11] = [
    1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 14400.0, 86400.0, 259200.0, 604800.0,
];

fn opts(name: &str, help: &str) -> Opts {
    Opts::new(name, help)
}

impl Metrics {
    /// A registry with every series; `process` adds the standard process
    /// collector (the running agent has it; a replay's output does not).
    pub fn new(cfg: &TrackingConfig, process: bool) -> Result<Self, MetricsError> {
        let registry = Registry::new();
        let buckets: Vec<f64> = cfg
            .duration_buckets
            .iter()
            .map(|d| d.as_secs_f64())
            .collect();
        let hist =
            |name: &str, help: &str, labels: &[&str]| -> Result<HistogramVec, MetricsError> {
                let h = HistogramVec::new(
                    HistogramOpts::new(name, help).buckets(buckets.clone()),
                    labels,
                )?;
                registry.register(Box::new(h.clone()))?;
                Ok(h)
            };
        macro_rules! reg {
            ($ty:ty, $name:expr, $help:expr, $labels:expr) => {{
                let m = <$ty>::new(opts($name, $help), $labels)?;
                registry.register(Box::new(m.clone()))?;
                m
            }};
        }
        let status_duration = hist(
            "relstat_status_duration_seconds",
            "Time spent in a status (event time), observed when it is left.",
            &["service", "environment", "site", "status"],
        )?;
        let transitions = reg!(
            IntCounterVec,
            "relstat_status_transitions_total",
            "Status transitions applied, allowed or not.",
            &["environment", "from", "to"]
        );
        let in_status = reg!(
            IntGaugeVec,
            "relstat_releases_in_status",
            "Tracked release keys currently in each status.",
            &["environment", "status"]
        );
        let stuck = reg!(
            IntGaugeVec,
            "relstat_releases_stuck",
            "Open release keys whose time in status, by the agent's clock, is past the status's stuck_after.",
            &["environment", "status"]
        );
        let resolution = hist(
            "relstat_status_resolution_seconds",
            "Time to resolve a stuck or conflicting status (MTTSR = rate(_sum) / rate(_count)).",
            &["environment", "site", "status", "cause"],
        )?;
        let deployments = reg!(
            IntCounterVec,
            "relstat_deployments_total",
            "Deployments by outcome (success, failure, rollback).",
            &["service", "environment", "outcome"]
        );
        let lead_time = hist(
            "relstat_lead_time_seconds",
            "Commit time to deployed, when the commit time is known.",
            &["service", "environment", "site"],
        )?;
        let restore = hist(
            "relstat_restore_seconds",
            "Time to restore: from a failure or rollback to the next deployed of that service and environment.",
            &["service", "environment", "site"],
        )?;
        let anomalies = reg!(
            IntCounterVec,
            "relstat_anomalies_total",
            "Anomalies detected.",
            &["rule", "severity", "environment"]
        );
        let events = reg!(
            IntCounterVec,
            "relstat_events_total",
            "Input accounting: every line or payload in exactly one result.",
            &["source", "result"]
        );
        let source_last = reg!(
            GaugeVec,
            "relstat_source_last_event_timestamp_seconds",
            "Event time of the latest event read from each source.",
            &["source"]
        );
        let source_errors = reg!(
            IntCounterVec,
            "relstat_source_errors_total",
            "Read, poll and parse errors per source.",
            &["source", "kind"]
        );
        let source_poll = {
            let h = HistogramVec::new(
                HistogramOpts::new(
                    "relstat_source_poll_duration_seconds",
                    "Wall time of one poll of a poll or kubernetes source (every URL, pages included).",
                )
                .buckets(vec![0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]),
                &["source"],
            )?;
            registry.register(Box::new(h.clone()))?;
            h
        };
        let spool_events = IntGauge::new(
            "relstat_spool_events",
            "SIEM records pending in the store-and-forward spool.",
        )?;
        registry.register(Box::new(spool_events.clone()))?;
        let spool_bytes = IntGauge::new(
            "relstat_spool_bytes",
            "Bytes pending in the store-and-forward spool.",
        )?;
        registry.register(Box::new(spool_bytes.clone()))?;
        let spool_oldest_age = Gauge::new(
            "relstat_spool_oldest_event_age_seconds",
            "Age of the oldest pending SIEM record: how far behind forwarding is.",
        )?;
        registry.register(Box::new(spool_oldest_age.clone()))?;
        let forward_events = reg!(
            IntCounterVec,
            "relstat_forward_events_total",
            "SIEM delivery accounting.",
            &["sink", "result"]
        );
        let forward_connected = reg!(
            IntGaugeVec,
            "relstat_forward_connected",
            "1 while the SIEM connection is up.",
            &["sink"]
        );
        let notify_sent = reg!(
            IntCounterVec,
            "relstat_notify_sent_total",
            "Notification messages delivered (a digest counts once).",
            &["destination"]
        );
        let notify_failed = reg!(
            IntCounterVec,
            "relstat_notify_failed_total",
            "Notification messages dropped undelivered, by reason.",
            &["destination", "reason"]
        );
        let notify_queued = reg!(
            IntGaugeVec,
            "relstat_notify_queued",
            "Notification messages waiting in a destination's queue.",
            &["destination"]
        );
        let notify_oldest_age = reg!(
            GaugeVec,
            "relstat_notify_oldest_age_seconds",
            "Age of the oldest message waiting in a destination's queue.",
            &["destination"]
        );
        let notify_failing = reg!(
            IntGaugeVec,
            "relstat_notify_failing",
            "1 while a destination refuses messages permanently.",
            &["destination"]
        );
        let build_info = reg!(
            IntGaugeVec,
            "relstat_build_info",
            "Always 1; the version and revision of this relstat.",
            &["version", "revision"]
        );
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION"), env!("RELSTAT_REVISION")])
            .set(1);
        let evictions = IntCounter::new(
            "relstat_tracked_evictions_total",
            "Per-release series removed early because max_tracked was reached.",
        )?;
        registry.register(Box::new(evictions.clone()))?;
        let label_overflow = reg!(
            IntCounterVec,
            "relstat_label_overflow_total",
            "Label values replaced: by \"other\" because max_label_values was reached \
             (reason=\"cardinality\"), or shortened to label_value_max_bytes (reason=\"length\").",
            &["label", "reason"]
        );
        let http_connections = IntGauge::new(
            "relstat_http_connections",
            "Connections open on the HTTP listener.",
        )?;
        registry.register(Box::new(http_connections.clone()))?;
        let http_refused = reg!(
            IntCounterVec,
            "relstat_http_refused_total",
            "HTTP clients turned away: connections over max_connections_per_peer or with \
             every slot busy, connections waiting for a request closed to make room, \
             /api and /hooks requests answered 503 to keep slots for the probes.",
            &["reason"]
        );
        let store_quarantined = IntGauge::new(
            "relstat_store_quarantined_records",
            "Store records that could not be decoded, kept aside in the quarantine table \
             (relstat store check lists them).",
        )?;
        let audit_sequence = IntGauge::new(
            "relstat_audit_sequence",
            "The audit chain's head: the sequence number of the newest history row.",
        )?;
        let audit_last_anchor = prometheus::Gauge::new(
            "relstat_audit_last_anchor_timestamp_seconds",
            "When the last anchor record (the audit chain's head) was written to the outbox.",
        )?;
        let dlq_payloads = IntGaugeVec::new(
            prometheus::Opts::new(
                "relstat_dlq_payloads",
                "Payloads of webhook and poll sources that came out unmapped or invalid, kept \
                 in the dead-letter store for relstat dlq replay.",
            ),
            &["source", "result"],
        )?;
        let dlq_dropped = IntCounter::new(
            "relstat_dlq_dropped_total",
            "Dead letters dropped, oldest first, for a [dlq] limit (max_payloads, max_bytes) \
             or its retention.",
        )?;
        if process {
            registry.register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))?;
            // The running agent's store only: a replay has none.
            registry.register(Box::new(store_quarantined.clone()))?;
            registry.register(Box::new(audit_sequence.clone()))?;
            registry.register(Box::new(audit_last_anchor.clone()))?;
            registry.register(Box::new(dlq_payloads.clone()))?;
            registry.register(Box::new(dlq_dropped.clone()))?;
        }
        let event_delay = HistogramVec::new(
            HistogramOpts::new(
                "relstat_event_delay_seconds",
                "Recorded time minus event time of each event recorded (accepted or late), per source and site.",
            )
            .buckets(DELAY_BUCKETS.to_vec()),
            &["source", "site"],
        )?;
        registry.register(Box::new(event_delay.clone()))?;
        let site_last_sync = reg!(
            GaugeVec,
            "relstat_site_last_sync_timestamp_seconds",
            "Relays: when (agent's clock, Unix seconds) a site's events were last imported from a bundle.",
            &["site"]
        );
        let site_newest_event = reg!(
            GaugeVec,
            "relstat_site_newest_event_timestamp_seconds",
            "Relays: event time (Unix seconds) of the newest event imported from a site.",
            &["site"]
        );
        Ok(Self {
            registry,
            status_duration,
            transitions,
            in_status,
            stuck,
            resolution,
            deployments,
            lead_time,
            restore,
            anomalies,
            events,
            source_last,
            source_errors,
            source_poll,
            spool_events,
            spool_bytes,
            spool_oldest_age,
            forward_events,
            forward_connected,
            notify_sent,
            notify_failed,
            notify_queued,
            notify_oldest_age,
            notify_failing,
            store_quarantined,
            audit_sequence,
            audit_last_anchor,
            dlq_payloads,
            dlq_dropped,
            evictions,
            label_overflow,
            http_connections,
            http_refused,
            event_delay,
            site_last_sync,
            site_newest_event,
            exposed: HashMap::new(),
            rollups: Vec::new(),
            risk: Vec::new(),
            caps: LabelCaps {
                max: cfg.max_label_values,
                max_bytes: cfg.label_value_max_bytes,
                seen: HashMap::new(),
                statuses: HashSet::default(),
            },
            cached: Cached {
                events: Handles::new(),
                delay: Handles::new(),
                duration: Handles::new(),
                transitions: Handles::new(),
                in_status: Handles::new(),
            },
            retention_ms: cfg.finished_retention.as_millis() as TimeMs,
            max_tracked: cfg.max_tracked,
        })
    }

    /// Applies what a commit changed in the dead-letter table.
    pub fn dlq(&self, delta: &crate::store::DlqDelta) {
        for (source, result) in &delta.added {
            self.dlq_payloads.with_label_values(&[source, result]).inc();
        }
        for (source, result) in &delta.removed {
            self.dlq_payloads.with_label_values(&[source, result]).dec();
        }
        self.dlq_dropped.inc_by(delta.dropped);
    }

    /// Starts every source's input counters at zero so that each result
    /// appears in the exposition before the first line arrives.
    pub fn declare_source(&self, source: &str) {
        for r in InputResult::ALL {
            self.events.with_label_values(&[source, r.as_str()]);
        }
    }

    /// Counters carried over from the store (input accounting survives restarts).
    pub fn restore_counters(&self, counters: &BTreeMap<(String, InputResult), u64>) {
        for ((source, result), n) in counters {
            self.events
                .with_label_values(&[source, result.as_str()])
                .inc_by(*n);
        }
    }

    /// A source produced an event with this event time.
    pub fn source_event(&self, source: &str, time: TimeMs) {
        let g = self.source_last.with_label_values(&[source]);
        let t = time as f64 / 1000.0;
        if t > g.get() {
            g.set(t);
        }
    }

    /// One poll of a poll source took `secs`.
    pub fn source_poll(&self, source: &str, secs: f64) {
        self.source_poll.with_label_values(&[source]).observe(secs);
    }

    pub fn source_error(&self, source: &str, kind: &str) {
        self.source_errors.with_label_values(&[source, kind]).inc();
    }

    fn key_labels<'a>(&mut self, key: &'a Key) -> (Cow<'a, str>, Cow<'a, str>, Cow<'a, str>) {
        let o = &self.label_overflow;
        (
            self.caps.cap("service", &key.service, o),
            self.caps.cap("environment", &key.environment, o),
            self.caps.cap("site", &key.site, o),
        )
    }

    fn env_label<'a>(&mut self, env: &'a str) -> Cow<'a, str> {
        self.caps.cap("environment", env, &self.label_overflow)
    }

    /// Reflects one tracker effect.
    pub fn apply(&mut self, effect: &Effect) {
        match effect {
            Effect::Input { source, result } => {
                let id = labels_id(&[source, result.as_str()]);
                if let Some(c) = self.cached.events.get(id) {
                    c.inc();
                } else {
                    let c = self.events.with_label_values(&[source, result.as_str()]);
                    c.inc();
                    self.cached.events.keep(id, &c);
                }
            }
            Effect::Status { key, status, since } => self.set_status(key, status, *since),
            Effect::Finished { key, at } => {
                if let Some(e) = self.exposed.get_mut(&key_id(key)) {
                    e.finished_at = Some(*at);
                }
            }
            Effect::Reopened { key } => {
                if let Some(e) = self.exposed.get_mut(&key_id(key)) {
                    e.finished_at = None;
                }
            }
            Effect::Forgotten { key } => self.unexpose(key_id(key)),
            Effect::Transition {
                environment,
                from,
                to,
            } => {
                let id = labels_id(&[environment, from, to]);
                if let Some(c) = self.cached.transitions.get(id) {
                    c.inc();
                    return;
                }
                let env = self
                    .caps
                    .cap("environment", environment, &self.label_overflow);
                let c = self.transitions.with_label_values(&[&*env, from, to]);
                c.inc();
                if kept(&env, environment) {
                    self.cached.transitions.keep(id, &c);
                }
            }
            Effect::Duration { key, status, secs } => {
                let id = labels_id(&[&key.service, &key.environment, &key.site, status]);
                if let Some(h) = self.cached.duration.get(id) {
                    h.observe(*secs);
                    return;
                }
                let o = &self.label_overflow;
                let s = self.caps.cap("service", &key.service, o);
                let e = self.caps.cap("environment", &key.environment, o);
                let site = self.caps.cap("site", &key.site, o);
                let h = self
                    .status_duration
                    .with_label_values(&[&*s, &*e, &*site, status]);
                h.observe(*secs);
                if kept(&s, &key.service) && kept(&e, &key.environment) && kept(&site, &key.site) {
                    self.cached.duration.keep(id, &h);
                }
            }
            Effect::Resolution {
                key,
                status,
                cause,
                secs,
            } => {
                let (_, e, site) = self.key_labels(key);
                self.resolution
                    .with_label_values(&[&*e, &*site, status, cause.as_str()])
                    .observe(*secs);
            }
            Effect::Deployment { key, outcome } => {
                let (s, e, _) = self.key_labels(key);
                self.deployments
                    .with_label_values(&[&*s, &*e, outcome.as_str()])
                    .inc();
            }
            Effect::LeadTime { key, secs } => {
                let (s, e, site) = self.key_labels(key);
                self.lead_time
                    .with_label_values(&[&*s, &*e, &*site])
                    .observe(*secs);
            }
            Effect::Restore { key, secs } => {
                let (s, e, site) = self.key_labels(key);
                self.restore
                    .with_label_values(&[&*s, &*e, &*site])
                    .observe(*secs);
            }
            Effect::Anomaly(a) => {
                let env = self.env_label(&a.environment);
                self.anomalies
                    .with_label_values(&[a.rule.as_str(), a.severity.as_str(), &*env])
                    .inc();
            }
            Effect::Rollups(rollups) => self.set_rollups(rollups),
            Effect::Delay {
                source,
                site,
                event_time,
                recorded_at,
            } => {
                let secs = (recorded_at - event_time).max(0) as f64 / 1000.0;
                let id = labels_id(&[source, site]);
                if let Some(h) = self.cached.delay.get(id) {
                    h.observe(secs);
                    return;
                }
                let shown = self.caps.cap("site", site, &self.label_overflow);
                let h = self
                    .event_delay
                    .with_label_values(&[source.as_str(), &*shown]);
                h.observe(secs);
                if kept(&shown, site) {
                    self.cached.delay.keep(id, &h);
                }
            }
            Effect::SiteSync {
                site,
                at,
                newest_event,
            } => {
                let site = self.caps.cap("site", site, &self.label_overflow);
                self.site_last_sync
                    .with_label_values(&[&*site])
                    .set(*at as f64 / 1000.0);
                let g = self.site_newest_event.with_label_values(&[&*site]);
                g.set(g.get().max(*newest_event as f64 / 1000.0));
            }
            Effect::StuckCounts(counts) => {
                self.stuck.reset();
                for ((env, status), n) in counts {
                    let env = self.env_label(env);
                    self.stuck
                        .with_label_values(&[&*env, status])
                        .set(*n as i64);
                }
            }
        }
    }

    /// Replaces the rollup series: the `max_tracked` most recently changed
    /// rollups (ties by environment and release), one series per status
    /// with targets in it.
    /// `relstat_release_risk_score`: replaces the scores (at most
    /// `max_tracked` kept, in the order given).
    pub fn set_risk_scores(&mut self, scores: Vec<(String, String, String, f64)>) {
        let mut out = Vec::new();
        for (release, service, env, score) in scores.into_iter().take(self.max_tracked) {
            let release = self
                .caps
                .shorten("release", &release, &self.label_overflow)
                .into_owned();
            let service = self
                .caps
                .shorten("service", &service, &self.label_overflow)
                .into_owned();
            let env = self.env_label(&env).into_owned();
            out.push((release, service, env, score));
        }
        out.sort_by(|a, b| (&a.0, &a.1, &a.2).cmp(&(&b.0, &b.1, &b.2)));
        self.risk = out;
    }

    fn set_rollups(&mut self, rollups: &[std::sync::Arc<crate::track::rollup::Summary>]) {
        let mut recent: Vec<&crate::track::rollup::Summary> =
            rollups.iter().map(|r| &**r).collect();
        let newest_first = |r: &&crate::track::rollup::Summary| {
            (
                std::cmp::Reverse(r.changed_at),
                r.environment.clone(),
                r.release.clone(),
            )
        };
        if recent.len() > self.max_tracked {
            recent.select_nth_unstable_by_key(self.max_tracked, newest_first);
            recent.truncate(self.max_tracked);
        }
        // The order the old sorted list had (labels are capped first come).
        recent.sort_unstable_by_key(newest_first);
        // Keep what the caps return as the tracker's name when it is that
        // name unchanged (the usual case): one pointer, no copy.
        let shared = |shown: Cow<'_, str>, raw: &Arc<str>| match shown {
            Cow::Borrowed(s) if s.len() == raw.len() => Arc::clone(raw),
            other => Arc::from(other.as_ref()),
        };
        let mut out = Vec::with_capacity(recent.iter().map(|r| r.counts.len()).sum());
        for r in recent {
            let release = shared(
                self.caps
                    .shorten("release", &r.release, &self.label_overflow),
                &r.release,
            );
            let env = shared(self.env_label(&r.environment), &r.environment);
            for (status, n) in &r.counts {
                out.push((
                    Arc::clone(&release),
                    Arc::clone(&env),
                    Arc::clone(status),
                    *n,
                ));
            }
        }
        out.sort();
        self.rollups = out;
    }

    fn set_status(&mut self, key: &Key, status: &str, since: TimeMs) {
        let id = key_id(key);
        if let Some(old) = self.exposed.get_mut(&id) {
            if &*old.status == status && old.since == since {
                return;
            }
            let (env, was) = (Arc::clone(&old.environment), Arc::clone(&old.status));
            old.status = self.caps.status(status);
            old.since = since;
            self.in_status_gauge(&env, &was).dec();
            self.in_status_gauge(&env, status).inc();
            return;
        }
        let o = &self.label_overflow;
        let service = self.caps.interned("service", &key.service, o);
        let environment = self.caps.interned("environment", &key.environment, o);
        let site = self.caps.interned("site", &key.site, o);
        self.in_status_gauge(&environment, status).inc();
        self.declare_target(&service, &environment, &site);
        let release = self
            .caps
            .shorten("release", &key.release, &self.label_overflow)
            .into();
        let status = self.caps.status(status);
        self.exposed.insert(
            id,
            Exposed {
                release,
                service,
                environment,
                site,
                status,
                since,
                finished_at: None,
            },
        );
    }

    /// Creates the DORA series of a (service, environment, site) at zero the
    /// first time it is seen: a series born at its first increment hides
    /// that increment from `increase()` and `rate()`, so a first failure or
    /// restore would never reach the change-failure and restore panels.
    fn declare_target(&self, service: &str, environment: &str, site: &str) {
        for outcome in ["success", "failure", "rollback"] {
            self.deployments
                .with_label_values(&[service, environment, outcome]);
        }
        self.restore
            .with_label_values(&[service, environment, site]);
        self.lead_time
            .with_label_values(&[service, environment, site]);
    }

    fn unexpose(&mut self, id: u128) {
        if let Some(e) = self.exposed.remove(&id) {
            self.in_status_gauge(&e.environment, &e.status).dec();
        }
    }

    /// The `relstat_releases_in_status` gauge of these (already capped)
    /// labels.
    fn in_status_gauge(&mut self, environment: &str, status: &str) -> IntGauge {
        let id = labels_id(&[environment, status]);
        if let Some(g) = self.cached.in_status.get(id) {
            return g.clone();
        }
        let g = self.in_status.with_label_values(&[environment, status]);
        self.cached.in_status.keep(id, &g);
        g
    }

    /// Removes the series of keys finished more than `finished_retention`
    /// ago, then enforces `max_tracked`.
    pub fn expire(&mut self, now: TimeMs) {
        let retention = self.retention_ms;
        let expired: Vec<u128> = self
            .exposed
            .iter()
            .filter(|(_, e)| e.finished_at.is_some_and(|at| now - at >= retention))
            .map(|(k, _)| *k)
            .collect();
        for k in expired {
            self.unexpose(k);
        }
        if self.exposed.len() > self.max_tracked {
            let excess = self.exposed.len() - self.max_tracked;
            // Ties (same time) go by release then the rest of the labels.
            let mut order: Vec<(bool, TimeMs, &Exposed, u128)> = self
                .exposed
                .iter()
                .map(|(k, e)| match e.finished_at {
                    Some(at) => (false, at, e, *k),
                    None => (true, e.since, e, *k),
                })
                .collect();
            order.sort_unstable_by(|a, b| {
                (a.0, a.1, a.2.labels(), a.3).cmp(&(b.0, b.1, b.2.labels(), b.3))
            });
            let gone: Vec<u128> = order.into_iter().take(excess).map(|o| o.3).collect();
            for k in gone {
                self.unexpose(k);
                self.evictions.inc();
            }
        }
    }

    /// Removes the series of every finished key (`replay` shows only keys
    /// unfinished at the end).
    pub fn drop_finished(&mut self) {
        let finished: Vec<u128> = self
            .exposed
            .iter()
            .filter(|(_, e)| e.finished_at.is_some())
            .map(|(k, _)| *k)
            .collect();
        for k in finished {
            self.unexpose(k);
        }
    }

    /// Shows the HTTP listener's counters: `open` connections and, by
    /// reason, the clients it refused since it started. The listener counts
    /// (it outlives a reload, which rebuilds these metrics); this catches up.
    pub fn set_http(&self, open: u64, refused: &[(&str, u64)]) {
        self.http_connections.set(open as i64);
        for (reason, n) in refused {
            let c = self.http_refused.with_label_values(&[reason]);
            c.inc_by(n.saturating_sub(c.get()));
        }
    }

    /// Number of keys with per-release series.
    pub fn exposed_len(&self) -> usize {
        self.exposed.len()
    }

    /// The exposition in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let families = self.registry.gather();
        // Encoding into a Vec cannot fail for valid families.
        let _ = TextEncoder::new().encode(&families, &mut buf);
        let mut out = String::from_utf8(buf).unwrap_or_default();
        self.render_per_release(&mut out);
        self.render_rollups(&mut out);
        self.render_risk(&mut out);
        out
    }

    /// The two per-release families, written from the sink's own map of
    /// exposed keys rather than held as registry children: with 10,000 keys
    /// the children cost ~10 MiB of labels kept twice; this costs nothing
    /// between scrapes. Labels are in the order the registry writes them
    /// (sorted), values escaped as the text format requires.
    fn render_per_release(&self, out: &mut String) {
        use std::fmt::Write;
        // In key order (release, service, environment, site) as shown.
        let mut keys: Vec<(&u128, &Exposed)> = self.exposed.iter().collect();
        keys.sort_unstable_by(|a, b| (a.1.labels(), a.0).cmp(&(b.1.labels(), b.0)));
        out.push_str(
            "# HELP relstat_release_status 1 for the current status of each tracked release key.\n",
        );
        out.push_str("# TYPE relstat_release_status gauge\n");
        for (_, e) in &keys {
            let _ = writeln!(
                out,
                "relstat_release_status{{environment=\"{}\",release=\"{}\",service=\"{}\",site=\"{}\",status=\"{}\"}} 1",
                Esc(&e.environment),
                Esc(&e.release),
                Esc(&e.service),
                Esc(&e.site),
                Esc(&e.status)
            );
        }
        out.push_str("# HELP relstat_release_status_since_timestamp_seconds Event time the current status was entered (time in status = time() - this).\n");
        out.push_str("# TYPE relstat_release_status_since_timestamp_seconds gauge\n");
        for (_, e) in &keys {
            let _ = writeln!(
                out,
                "relstat_release_status_since_timestamp_seconds{{environment=\"{}\",release=\"{}\",service=\"{}\",site=\"{}\"}} {}",
                Esc(&e.environment),
                Esc(&e.release),
                Esc(&e.service),
                Esc(&e.site),
                e.since as f64 / 1000.0
            );
        }
    }

    /// `relstat_release_rollup_status`, from the last rollups seen.
    fn render_rollups(&self, out: &mut String) {
        use std::fmt::Write;
        out.push_str("# HELP relstat_release_rollup_status Targets (service, site) of a release in an environment per status; status missing: expected, never reported.\n");
        out.push_str("# TYPE relstat_release_rollup_status gauge\n");
        for (release, env, status, n) in &self.rollups {
            let _ = writeln!(
                out,
                "relstat_release_rollup_status{{environment=\"{}\",release=\"{}\",status=\"{}\"}} {n}",
                Esc(env),
                Esc(release),
                Esc(status)
            );
        }
    }

    /// `relstat_release_risk_score`, from the last scores computed.
    fn render_risk(&self, out: &mut String) {
        use std::fmt::Write;
        out.push_str("# HELP relstat_release_risk_score Risk score (0-100) of deploying a release of a service to an environment it has not reached yet (relstat readiness).\n");
        out.push_str("# TYPE relstat_release_risk_score gauge\n");
        for (release, service, env, score) in &self.risk {
            let _ = writeln!(
                out,
                "relstat_release_risk_score{{environment=\"{}\",release=\"{}\",service=\"{}\"}} {score}",
                Esc(env),
                Esc(release),
                Esc(service)
            );
        }
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }
}

#[cfg(test)]
mod tests;
