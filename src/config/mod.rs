//! The TOML configuration of docs/config.md: serde structs with their
//! defaults, and [`read`] / [`parse_text`], which parse it and report every
//! TOML problem at once with the file, the line and the key it concerns.
//!
//! Parsing is strict (`deny_unknown_fields` everywhere): a misspelt key is an
//! error, never a silently ignored setting. The semantic checks (which
//! presets, facilities, fields exist; what combinations make sense) are
//! [`crate::check`]'s: they read lists other modules own, which this module,
//! imported by nearly all of them, must not import.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use crate::event::parse_duration;
/// `[model]`'s structures live with the model they describe.
pub use crate::model::{
    GateConfig, ModelConfig, PermissionConfig, PromotionConfig, PromotionMatch, StateConfig,
};

use serde::{Deserialize, Deserializer};

#[cfg(test)]
mod reference;

/// Where the packaged config lives; used when `-c` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/relstat/relstat.toml";

/// A configuration error: where and what.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}", format_problems(.0))]
    Invalid(Vec<Problem>),
}

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// File name as given, or `<built-in defaults>`.
    pub file: String,
    /// 1-based line of the key, when known.
    pub line: Option<usize>,
    /// Dotted key path, e.g. `sources[1].status_map.SUCCESS`.
    pub key: String,
    /// What is wrong, and what to write instead.
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: {}: {}", self.file, line, self.key, self.message),
            None => write!(f, "{}: {}: {}", self.file, self.key, self.message),
        }
    }
}

fn format_problems(problems: &[Problem]) -> String {
    let mut s = String::new();
    if problems.len() > 1 {
        s.push_str(&format!(
            "{} problems in the configuration:",
            problems.len()
        ));
        for p in problems {
            s.push_str("\n  ");
            s.push_str(&p.to_string());
        }
    } else if let Some(p) = problems.first() {
        s.push_str(&p.to_string());
    }
    s
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `[agent]`: who this agent is, where its store lives.
    #[serde(default)]
    pub agent: AgentConfig,
    /// `[http]`: the one listener.
    #[serde(default)]
    pub http: HttpConfig,
    /// `[tracking]`: retention, caps and tolerances of the tracker.
    #[serde(default)]
    pub tracking: TrackingConfig,
    /// `[[sources]]`: where status events come from.
    #[serde(default)]
    pub sources: Vec<SourceConfig>,
    /// `[siem]`: where anomalies are forwarded; absent: nowhere.
    #[serde(default)]
    pub siem: Option<SiemConfig>,
    /// `[spool]`: the SIEM outbox and air-gapped bundles.
    #[serde(default)]
    pub spool: SpoolConfig,
    /// `[dlq]`: the dead-letter store (payloads that did not map).
    #[serde(default)]
    pub dlq: DlqConfig,
    /// `[anomalies.<rule>]`: the anomaly rules.
    #[serde(default)]
    pub anomalies: AnomaliesConfig,
    /// `[model]`: the status model, gate, roles and permissions.
    #[serde(default)]
    pub model: ModelConfig,
    /// `[notify]`: chat notifications (Slack, Teams, webhooks); absent: none.
    #[serde(default)]
    pub notify: Option<NotifyConfig>,
    /// `[rollups]`: what a release must reach in each environment.
    #[serde(default)]
    pub rollups: RollupsConfig,
    /// `[readiness]`: the go/no-go checks and the risk score's weights.
    #[serde(default)]
    pub readiness: ReadinessConfig,
}

/// `[readiness]`: what `relstat readiness` and `/api/v1/readiness` check,
/// and the weights of the risk score (docs/readiness.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadinessConfig {
    /// Anomaly rules whose open findings on the release make it no-go.
    #[serde(default = "default_readiness_rules")]
    pub rules: Vec<String>,
    /// How many of the service's latest deployments in the environment the
    /// change failure rate is taken over.
    #[serde(default = "default_readiness_deployments")]
    pub deployments: usize,
    /// The change failure rate (0 to 1) at or above which the check fails.
    #[serde(default = "default_readiness_max_failure_rate")]
    pub max_change_failure_rate: f64,
    /// How far ahead a freeze window about to open adds to the risk.
    #[serde(default = "default_readiness_freeze_horizon", with = "humantime_serde")]
    pub freeze_horizon: Duration,
    /// `[readiness.weights]`: the points each signal adds at most.
    #[serde(default)]
    pub weights: ReadinessWeights,
}

impl Default for ReadinessConfig {
    fn default() -> Self {
        Self {
            rules: default_readiness_rules(),
            deployments: default_readiness_deployments(),
            max_change_failure_rate: default_readiness_max_failure_rate(),
            freeze_horizon: default_readiness_freeze_horizon(),
            weights: ReadinessWeights::default(),
        }
    }
}

fn default_readiness_rules() -> Vec<String> {
    [
        "gate_bypass",
        "emergency_change",
        "skipped_stage",
        "status_conflict",
        "stuck",
        "unauthorized_actor",
    ]
    .map(String::from)
    .to_vec()
}
fn default_readiness_deployments() -> usize {
    10
}
fn default_readiness_max_failure_rate() -> f64 {
    0.3
}
fn default_readiness_freeze_horizon() -> Duration {
    Duration::from_secs(4 * 3600)
}

/// `[readiness.weights]`: points (at most 100 in all) each signal adds to
/// the risk score when it is fully present; a signal is 0 to 1.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ReadinessWeights {
    /// The approval check fails.
    pub approval: f64,
    /// A change-freeze window is open.
    pub change_freeze: f64,
    /// The previous stage lacks the change.
    pub previous_stage: f64,
    /// Open findings, a third each.
    pub anomalies: f64,
    /// The share of bad targets in the previous environment.
    pub previous_targets: f64,
    /// The change failure rate itself.
    pub change_failure_rate: f64,
    /// A failure in the environment not yet restored.
    pub unrestored_failure: f64,
    /// A freeze window opening within `freeze_horizon`.
    pub freeze_ahead: f64,
}

impl Default for ReadinessWeights {
    fn default() -> Self {
        Self {
            approval: 20.0,
            change_freeze: 15.0,
            previous_stage: 15.0,
            anomalies: 15.0,
            previous_targets: 10.0,
            change_failure_rate: 10.0,
            unrestored_failure: 10.0,
            freeze_ahead: 5.0,
        }
    }
}

impl ReadinessWeights {
    /// (name, weight) of every signal, in the answer's order.
    pub fn named(&self) -> [(&'static str, f64); 8] {
        [
            ("approval", self.approval),
            ("change_freeze", self.change_freeze),
            ("previous_stage", self.previous_stage),
            ("anomalies", self.anomalies),
            ("previous_targets", self.previous_targets),
            ("change_failure_rate", self.change_failure_rate),
            ("unrestored_failure", self.unrestored_failure),
            ("freeze_ahead", self.freeze_ahead),
        ]
    }
}

/// `[rollups]`: per release and environment, the targets (service, site)
/// it is expected at, and how long a partly complete rollup may last.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RollupsConfig {
    /// A rollup with some but not every expected target complete for longer
    /// than this (agent's clock, since its first target completed) raises
    /// `stuck` for the rollup; none by default.
    #[serde(default, deserialize_with = "opt_humantime")]
    pub stuck_after: Option<Duration>,
    /// `[rollups.environments.<name>]`: the expected services and sites.
    #[serde(default)]
    pub environments: BTreeMap<String, RollupEnvironmentConfig>,
}

/// `[rollups.environments.<name>]`: expected targets are every service
/// times every site listed (a list left empty: the ones reported).
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RollupEnvironmentConfig {
    /// Services a release must reach in this environment.
    #[serde(default)]
    pub services: Vec<String>,
    /// Sites a release must reach in this environment.
    #[serde(default)]
    pub sites: Vec<String>,
}

fn opt_humantime<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let s = String::deserialize(d)?;
    crate::event::parse_duration(&s)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

/// `[agent]`: identity of this agent and where it keeps its store.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// Directory of the embedded store and the admin socket.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Host name in SIEM events and bundles; default: the system hostname.
    #[serde(default)]
    pub hostname: Option<String>,
    /// Default site of this agent's events.
    #[serde(default)]
    pub site: String,
    /// Where the agent's own log goes.
    #[serde(default)]
    pub log: LogTarget,
    /// The most tailed files the file sources keep open at once, all
    /// sources together. A file with nothing new to read is closed when
    /// another needs its descriptor, and reopened (by device, inode and
    /// first-line fingerprint) when it grows. Keep it well below the
    /// process's descriptor limit (`ulimit -n`, `LimitNOFILE=`): the
    /// listener, its connections and the store need descriptors too.
    #[serde(default = "default_max_open_files")]
    pub max_open_files: usize,
}

impl AgentConfig {
    /// The host name records and bundles carry: `hostname`, which [`load`]
    /// fills with the system's when the file sets none (a configuration
    /// made otherwise asks the system here).
    pub fn host(&self) -> String {
        self.hostname.clone().unwrap_or_else(system_hostname)
    }
}

/// The system's host name (`[agent] hostname`'s default).
pub fn system_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into())
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            data_dir: default_data_dir(),
            hostname: None,
            site: String::new(),
            log: LogTarget::default(),
            max_open_files: default_max_open_files(),
        }
    }
}

fn default_max_open_files() -> usize {
    256
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("./relstat-data")
}

#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogTarget {
    #[default]
    Stderr,
    Syslog,
}

/// `[http]`: the one listener for /metrics, /healthz, /readyz, /api and /hooks.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// IP address and port of the listener.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// exporter-toolkit web config (TLS, basic auth) for /metrics and /api.
    #[serde(default)]
    pub web_config_file: Option<PathBuf>,
    /// Read-only partner views of /api/v1: basic-auth user name (from the
    /// web config's basic_auth_users) -> what that user may see. Users not
    /// listed see everything.
    #[serde(default)]
    pub partners: BTreeMap<String, PartnerConfig>,
    /// Open connections one client address may hold at once; more are
    /// closed as they arrive and counted
    /// (`relstat_http_refused_total{reason="per_peer_limit"}`). Behind a
    /// reverse proxy every client has the proxy's address: raise it there.
    #[serde(default = "default_max_connections_per_peer")]
    pub max_connections_per_peer: usize,
    /// A request's headers must arrive within this, counted from when the
    /// connection is ready for a request: a client trickling its headers,
    /// or a keep-alive connection idle this long, is closed.
    #[serde(default = "default_header_timeout", with = "humantime_serde")]
    pub header_timeout: Duration,
}

/// Fields a partner's `redact` may name (`/api/v1` leaves them out).
pub const REDACTABLE: &[&str] = &[
    "actor",
    "reason",
    "source",
    "version",
    "event_id",
    "anomalies",
];

/// The smallest `[tracking] label_value_max_bytes`: room for the hash
/// suffix the metrics append to a shortened value, and a readable prefix.
pub const MIN_LABEL_VALUE_BYTES: usize = 32;

/// `[http.partners.<user>]`: a basic-auth user's view of /api/v1.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartnerConfig {
    /// The environments whose releases the user may see; others answer 404,
    /// as if they did not exist.
    pub environments: Vec<String>,
    /// Fields left out of every answer to this user: any of `actor` (also
    /// actor_type), `reason`, `source`, `version` (also commit, artifact),
    /// `event_id`, `anomalies`.
    #[serde(default)]
    pub redact: Vec<String>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            web_config_file: None,
            partners: BTreeMap::new(),
            max_connections_per_peer: default_max_connections_per_peer(),
            header_timeout: default_header_timeout(),
        }
    }
}

fn default_listen() -> String {
    "127.0.0.1:9731".into()
}

fn default_max_connections_per_peer() -> usize {
    crate::http::MAX_CONNECTIONS_PER_PEER
}

fn default_header_timeout() -> Duration {
    crate::http::HEADER_TIMEOUT
}

/// `[tracking]`: retention, caps and event-time tolerances of the tracker.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrackingConfig {
    /// Per-release series of finished keys leave the exposition after this.
    #[serde(default = "default_finished_retention", with = "humantime_serde")]
    pub finished_retention: Duration,
    /// Cap on keys with per-release series; oldest finished go first.
    #[serde(default = "default_max_tracked")]
    pub max_tracked: usize,
    /// A key with no event for this long is finished.
    #[serde(default = "default_stale_after", with = "humantime_serde")]
    pub stale_after: Duration,
    /// How long the store keeps history rows (the audit trail).
    #[serde(default = "default_history_retention", with = "humantime_serde")]
    pub history_retention: Duration,
    /// How often the audit chain's head goes to the outbox as an `anchor`
    /// record (SIEM or bundles); 0 turns anchors off.
    #[serde(default = "default_anchor_interval", with = "humantime_serde")]
    pub anchor_interval: Duration,
    /// How long an event id is remembered for duplicate detection.
    #[serde(default = "default_dedupe_window", with = "humantime_serde")]
    pub dedupe_window: Duration,
    /// Events further ahead of the agent's clock raise clock_skew.
    #[serde(default = "default_max_future", with = "humantime_serde")]
    pub max_future: Duration,
    /// Distinct values per label (service, environment, site) before `other`.
    #[serde(default = "default_max_label_values")]
    pub max_label_values: usize,
    /// Label values from outside input (release, service, environment,
    /// site) longer than this many bytes are shortened in /metrics: a
    /// prefix and a hash of the whole value, so distinct values stay
    /// distinct. The API and the SIEM carry the whole value.
    #[serde(default = "default_label_value_max_bytes")]
    pub label_value_max_bytes: usize,
    /// Buckets of every duration histogram.
    #[serde(default = "default_duration_buckets", with = "humantime_serde_vec")]
    pub duration_buckets: Vec<Duration>,
}

impl Default for TrackingConfig {
    fn default() -> Self {
        Self {
            finished_retention: default_finished_retention(),
            max_tracked: default_max_tracked(),
            stale_after: default_stale_after(),
            history_retention: default_history_retention(),
            anchor_interval: default_anchor_interval(),
            dedupe_window: default_dedupe_window(),
            max_future: default_max_future(),
            max_label_values: default_max_label_values(),
            label_value_max_bytes: default_label_value_max_bytes(),
            duration_buckets: default_duration_buckets(),
        }
    }
}

const HOUR: u64 = 3600;
const DAY: u64 = 24 * HOUR;

fn default_finished_retention() -> Duration {
    Duration::from_secs(HOUR)
}
fn default_max_tracked() -> usize {
    10_000
}
fn default_stale_after() -> Duration {
    Duration::from_secs(30 * DAY)
}
fn default_history_retention() -> Duration {
    Duration::from_secs(400 * DAY)
}
fn default_anchor_interval() -> Duration {
    Duration::from_secs(HOUR)
}
fn default_dedupe_window() -> Duration {
    Duration::from_secs(7 * DAY)
}
fn default_max_future() -> Duration {
    Duration::from_secs(300)
}
fn default_max_label_values() -> usize {
    200
}
fn default_label_value_max_bytes() -> usize {
    128
}
fn default_duration_buckets() -> Vec<Duration> {
    [
        30,
        60,
        300,
        900,
        1800,
        HOUR,
        2 * HOUR,
        4 * HOUR,
        8 * HOUR,
        DAY,
        3 * DAY,
        7 * DAY,
    ]
    .into_iter()
    .map(Duration::from_secs)
    .collect()
}

/// The kind of a source.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SourceType {
    File,
    Webhook,
    Poll,
    Kubernetes,
}

impl SourceType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::File => "file",
            Self::Webhook => "webhook",
            Self::Poll => "poll",
            Self::Kubernetes => "kubernetes",
        }
    }
}

/// How a file source's lines are written.
#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LineFormat {
    /// NDJSON: one JSON object per line.
    #[default]
    Json,
    /// `key=value key2="quoted value"` pairs.
    Logfmt,
    /// A regular expression with named groups (`pattern`).
    Regex,
}

#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum StartAt {
    #[default]
    Beginning,
    End,
}

/// One `[[sources]]` entry. The keys of every source type live in one flat
/// struct so that `validate` can say "`urls` is for poll sources" instead of
/// serde's less helpful "unknown variant".
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// Unique name; the `source` label and field of its events.
    pub name: String,
    /// `type`: file, webhook, poll or kubernetes; decides which keys apply.
    #[serde(rename = "type")]
    pub kind: SourceType,
    /// Tool preset (webhook, poll); `generic` takes canonical events.
    #[serde(default)]
    pub preset: Option<String>,

    // --- file
    /// Globs of the files to tail; new matching files are picked up.
    #[serde(default)]
    pub paths: Vec<String>,
    /// How a file source's lines are written: json, logfmt or regex.
    #[serde(default)]
    pub format: LineFormat,
    /// Where a file source starts in files present on its first run (no
    /// checkpoint yet): beginning or end. Later runs resume from the checkpoint.
    #[serde(default)]
    pub start_at: StartAt,
    /// Optional prefilter (a regex): other lines are counted as `skipped`.
    #[serde(default, rename = "match")]
    pub match_: Option<String>,
    /// `format = "regex"`: a regex with named groups for the fields.
    #[serde(default)]
    pub pattern: Option<String>,
    /// strftime pattern, `epoch_s` or `epoch_ms`; default RFC 3339.
    #[serde(default)]
    pub time_format: Option<String>,

    // --- mapping, all source types
    /// canonical field -> record field (dotted path for nested JSON).
    #[serde(default)]
    pub fields: BTreeMap<String, String>,
    /// raw status -> state id.
    #[serde(default)]
    pub status_map: BTreeMap<String, String>,
    /// Constant values for fields the records lack.
    #[serde(default)]
    pub defaults: BTreeMap<String, String>,

    // --- webhook
    /// Webhook: file holding the shared secret the tool signs or sends with.
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// Largest accepted body (1B to 25MiB; default 1MiB): a larger
    /// `Content-Length` is refused before the body is read, a chunked body
    /// as soon as it passes this.
    #[serde(default)]
    pub max_body: Option<bytesize::ByteSize>,
    /// Requests per second accepted from this source (0 = unlimited).
    #[serde(default)]
    pub rate_limit: Option<u32>,

    // --- poll
    /// Poll: the URLs to poll (job, project, repository or applications API).
    #[serde(default)]
    pub urls: Vec<String>,
    /// Poll: time between polls; default 30s.
    #[serde(default, with = "humantime_serde_opt")]
    pub interval: Option<Duration>,
    /// Poll, kubernetes: bearer token (poll: `user:token` as basic auth).
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Poll, kubernetes: PEM CA certificates replacing the bundled roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,

    // --- kubernetes
    /// Kubernetes: the API server URL.
    #[serde(default)]
    pub api_server: Option<String>,
    /// Kubernetes: namespaces whose Deployments are watched.
    #[serde(default)]
    pub namespaces: Vec<String>,
}

/// `[notify]`: chat notifications of the transitions and anomalies people
/// must see, delivered from a queue per destination in the store.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyConfig {
    /// Base URL of this agent's API, for a link to the release in each
    /// message; unset: no link.
    #[serde(default)]
    pub api_url: Option<String>,
    /// Base URL of Grafana, for a link to the dashboards; unset: no link.
    #[serde(default)]
    pub grafana_url: Option<String>,
    /// The environments the default routes watch; default: the gate's
    /// environments, else `["production"]`.
    #[serde(default)]
    pub environments: Option<Vec<String>>,
    /// A relay notifies for events imported from bundles only when true.
    #[serde(default)]
    pub imported: bool,
    /// Messages older than this (not delivered yet) are dropped and counted.
    #[serde(default = "default_notify_max_age", with = "humantime_serde")]
    pub max_age: Duration,
    /// Messages a destination's queue holds; beyond, the oldest are dropped
    /// and counted.
    #[serde(default = "default_notify_max_queued")]
    pub max_queued: u64,
    /// Over this many messages a minute to one destination, the rest of
    /// the minute's messages go as one digest.
    #[serde(default = "default_digest_after")]
    pub digest_after: u32,
    /// `[[notify.destinations]]`: where messages go.
    #[serde(default)]
    pub destinations: Vec<DestinationConfig>,
}

fn default_notify_max_age() -> Duration {
    Duration::from_secs(3600)
}
fn default_notify_max_queued() -> u64 {
    1000
}
fn default_digest_after() -> u32 {
    20
}

/// What a destination is and what it expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotifyKind {
    /// A Slack incoming webhook (Block Kit).
    Slack,
    /// A Microsoft Teams Workflows webhook (Adaptive Card).
    Teams,
    /// Generic JSON, HMAC-signed when `hmac_secret_file` is set.
    Webhook,
}

impl NotifyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Slack => "slack",
            Self::Teams => "teams",
            Self::Webhook => "webhook",
        }
    }
}

/// `[[notify.destinations]]`: one chat channel or receiver.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DestinationConfig {
    /// Unique name: the `destination` label of the notify metrics.
    pub name: String,
    /// slack, teams or webhook.
    pub kind: NotifyKind,
    /// File holding the webhook URL on one line (it is a secret).
    pub url_file: PathBuf,
    /// PEM CA certificates for the receiver; default: the bundled roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// kind = "webhook": HMAC-SHA256 signing secret.
    #[serde(default)]
    pub hmac_secret_file: Option<PathBuf>,
    /// Messages a minute at most; default 60 (Slack allows about one a
    /// second per webhook).
    #[serde(default = "default_per_minute")]
    pub per_minute: u32,
    /// `[[notify.destinations.routes]]`: what it receives; none: the
    /// default routes.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
}

fn default_per_minute() -> u32 {
    60
}

/// `[[notify.destinations.routes]]`: a message goes to a destination when
/// one of its routes matches. Empty lists match anything, except that a
/// route matches transitions only when `statuses` is set and anomalies only
/// when `anomalies` is set.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Anomaly rule names, e.g. `["stuck", "gate_bypass"]`.
    #[serde(default)]
    pub anomalies: Vec<String>,
    /// Statuses a transition moves to, e.g. `["failed", "rolled_back"]`.
    #[serde(default)]
    pub statuses: Vec<String>,
    /// Environments; empty: all.
    #[serde(default)]
    pub environments: Vec<String>,
    /// Services; empty: all.
    #[serde(default)]
    pub services: Vec<String>,
    /// Sites; empty: all.
    #[serde(default)]
    pub sites: Vec<String>,
}

/// `[siem]`: where anomalies (or all transitions) are forwarded.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiemConfig {
    /// tls, relp, tcp, udp or http.
    pub transport: SiemTransport,
    /// host:port for tls, relp, tcp, udp.
    #[serde(default)]
    pub address: Option<String>,
    /// transport = "http": the collector's URL.
    #[serde(default)]
    pub url: Option<String>,
    /// How records are written: rfc5424, cef, leef or json.
    #[serde(default)]
    pub format: SiemFormat,
    /// PEM CA certificates for the receiver; default: the system bundle.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Client certificate for mutual TLS (with `client_key_file`).
    #[serde(default)]
    pub client_cert_file: Option<PathBuf>,
    /// Private key of `client_cert_file`.
    #[serde(default)]
    pub client_key_file: Option<PathBuf>,
    /// Name the receiver's certificate must carry; default: the host of
    /// `address`.
    #[serde(default)]
    pub server_name: Option<String>,
    /// transport = "relp": run RELP over TLS.
    #[serde(default)]
    pub tls: bool,
    /// transport = "http": bearer token.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// transport = "http": HMAC-SHA256 signing secret.
    #[serde(default)]
    pub hmac_secret_file: Option<PathBuf>,
    /// Syslog facility name; default authpriv.
    #[serde(default = "default_facility")]
    pub facility: String,
    /// RFC 5424 SD-ID, `name@<private enterprise number>`.
    #[serde(default = "default_sd_id")]
    pub sd_id: String,
    /// Events per second, 0 = unlimited.
    #[serde(default)]
    pub rate_limit: u32,
    /// Records that may go at once above `rate_limit`.
    #[serde(default = "default_burst")]
    pub burst: u32,
    /// `anomalies`, or `all` to forward every transition too.
    #[serde(default)]
    pub forward: Forward,
    /// transport = "http": largest request body (1KiB to 25MiB; default
    /// 512KiB); batches are cut to fit, a single longer record goes alone.
    #[serde(default)]
    pub max_batch_bytes: Option<bytesize::ByteSize>,
}

impl SiemConfig {
    /// Default of `max_batch_bytes`: half a relay hook's default `max_body`.
    pub const DEFAULT_MAX_BATCH_BYTES: u64 = 512 * 1024;
    pub const MIN_MAX_BATCH_BYTES: u64 = 1024;
    pub const MAX_MAX_BATCH_BYTES: u64 = 25 * 1024 * 1024;

    /// `max_batch_bytes` or its default.
    pub fn max_batch_bytes(&self) -> bytesize::ByteSize {
        self.max_batch_bytes
            .unwrap_or(bytesize::ByteSize::b(Self::DEFAULT_MAX_BATCH_BYTES))
    }
}

fn default_facility() -> String {
    "authpriv".into()
}
fn default_sd_id() -> String {
    "relstat@32473".into()
}
fn default_burst() -> u32 {
    1000
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SiemTransport {
    Tls,
    Relp,
    Tcp,
    Udp,
    Http,
}

#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SiemFormat {
    #[default]
    Rfc5424,
    Cef,
    Leef,
    Json,
}

#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Forward {
    #[default]
    Anomalies,
    All,
}

/// `[spool]`: the store-and-forward outbox.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpoolConfig {
    /// Keep an outbox even without `[siem]` (export-only sites).
    #[serde(default)]
    pub enabled: bool,
    /// Largest outbox; `when_full` says what happens at the limit.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: bytesize::ByteSize,
    /// `block` (sources pause, webhooks answer 503) or `drop_oldest`.
    #[serde(default)]
    pub when_full: WhenFull,
    /// This site's Ed25519 private key, for `spool export`.
    #[serde(default)]
    pub signing_key_file: Option<PathBuf>,
    /// A relay: the sites' public keys (`<site>.pub`), for `spool import`.
    #[serde(default)]
    pub trusted_keys_dir: Option<PathBuf>,
    /// `spool import`: feed every imported `transition` record (bundles of
    /// `forward = "all"` sites) into this agent's tracker as a canonical
    /// event, so its metrics, history and API show the sites' releases.
    /// Anomaly records are forwarded only. Default true.
    #[serde(default = "default_true")]
    pub track_imports: bool,
}

impl Default for SpoolConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            max_bytes: default_max_bytes(),
            when_full: WhenFull::default(),
            signing_key_file: None,
            trusted_keys_dir: None,
            track_imports: true,
        }
    }
}

fn default_max_bytes() -> bytesize::ByteSize {
    bytesize::ByteSize::gib(1)
}

/// `[dlq]`: how much of the payloads that came out `unmapped` or `invalid`
/// (webhook and poll sources) the store keeps for `relstat dlq replay`; the
/// oldest are dropped first, and counted.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DlqConfig {
    /// Most payloads kept (0: none kept).
    #[serde(default = "default_dlq_max_payloads")]
    pub max_payloads: u64,
    /// Most bytes of payloads kept, apart from the spool's `max_bytes`.
    #[serde(default = "default_dlq_max_bytes")]
    pub max_bytes: bytesize::ByteSize,
    /// How long a payload is kept.
    #[serde(default = "default_dlq_retention", with = "humantime_serde")]
    pub retention: Duration,
}

impl Default for DlqConfig {
    fn default() -> Self {
        Self {
            max_payloads: default_dlq_max_payloads(),
            max_bytes: default_dlq_max_bytes(),
            retention: default_dlq_retention(),
        }
    }
}

fn default_dlq_max_payloads() -> u64 {
    crate::dlq::DEFAULT_MAX_PAYLOADS
}

fn default_dlq_max_bytes() -> bytesize::ByteSize {
    bytesize::ByteSize::b(crate::dlq::DEFAULT_MAX_BYTES)
}

fn default_dlq_retention() -> Duration {
    crate::dlq::DEFAULT_RETENTION
}

#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    #[default]
    Block,
    DropOldest,
}

/// Severity of an anomaly, syslog's names (RFC 5424 section 6.2.1).
#[derive(
    Debug, Clone, Copy, Deserialize, serde::Serialize, PartialEq, Eq, Hash, PartialOrd, Ord,
)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Emergency,
    Alert,
    Critical,
    Error,
    Warning,
    Notice,
    Info,
    Debug,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Emergency => "emergency",
            Self::Alert => "alert",
            Self::Critical => "critical",
            Self::Error => "error",
            Self::Warning => "warning",
            Self::Notice => "notice",
            Self::Info => "info",
            Self::Debug => "debug",
        }
    }
    /// The syslog severity number (0 = emergency).
    pub fn code(self) -> u8 {
        self as u8
    }
}

/// `[anomalies.<rule>]` for rules with no parameters of their own.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Whether the rule runs; default true.
    #[serde(default)]
    pub enabled: Option<bool>,
    /// Severity of its records; default: the rule's own.
    #[serde(default)]
    pub severity: Option<Severity>,
}

/// `[anomalies.flapping]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlappingConfig {
    /// Whether the rule runs; default true.
    #[serde(default)]
    pub enabled: Option<bool>,
    /// Severity of its records; default notice.
    #[serde(default)]
    pub severity: Option<Severity>,
    /// Fires on more than this many transitions into one status in `window`.
    #[serde(default = "default_max_transitions")]
    pub max_transitions: u32,
    /// The event-time window counted.
    #[serde(default = "default_hour", with = "humantime_serde")]
    pub window: Duration,
}

impl Default for FlappingConfig {
    fn default() -> Self {
        Self {
            enabled: None,
            severity: None,
            max_transitions: default_max_transitions(),
            window: default_hour(),
        }
    }
}

fn default_max_transitions() -> u32 {
    5
}
fn default_hour() -> Duration {
    Duration::from_secs(HOUR)
}

/// `[anomalies.status_conflict]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConflictConfig {
    /// Whether the rule runs; default true.
    #[serde(default)]
    pub enabled: Option<bool>,
    /// Severity of its records; default warning.
    #[serde(default)]
    pub severity: Option<Severity>,
    /// Consecutive reports further apart (event time) are no conflict.
    #[serde(default = "default_conflict_window", with = "humantime_serde")]
    pub window: Duration,
}

impl Default for ConflictConfig {
    fn default() -> Self {
        Self {
            enabled: None,
            severity: None,
            window: default_conflict_window(),
        }
    }
}

fn default_conflict_window() -> Duration {
    Duration::from_secs(300)
}

/// `[anomalies.change_freeze]`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct FreezeConfig {
    /// Whether the rule runs; default true.
    #[serde(default)]
    pub enabled: Option<bool>,
    /// Severity of its records; default error.
    #[serde(default)]
    pub severity: Option<Severity>,
    /// The freeze windows; none: the rule never fires.
    #[serde(default)]
    pub windows: Vec<FreezeWindowConfig>,
}

/// One freeze window: absolute (`start`, `end`) or weekly (`days`, `from`,
/// `to`, `timezone`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FreezeWindowConfig {
    /// Absolute window: its start (RFC 3339), inclusive.
    #[serde(default)]
    pub start: Option<String>,
    /// Absolute window: its end (RFC 3339), exclusive.
    #[serde(default)]
    pub end: Option<String>,
    /// Weekly window: the frozen days (`mon` ... `sun`).
    #[serde(default)]
    pub days: Vec<String>,
    /// Weekly window: `HH:MM` the freeze starts on a run's first day.
    #[serde(default)]
    pub from: Option<String>,
    /// Weekly window: `HH:MM` it ends on the day after a run's last day.
    #[serde(default)]
    pub to: Option<String>,
    /// Weekly window: IANA zone of `from` and `to`; default UTC.
    #[serde(default)]
    pub timezone: Option<String>,
    /// Environments the window applies to; empty = all.
    #[serde(default)]
    pub environments: Vec<String>,
}

/// `[anomalies]`: one table per rule of docs/events.md.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AnomaliesConfig {
    /// A move the model does not allow.
    #[serde(default)]
    pub invalid_transition: RuleConfig,
    /// An unapproved deployment into a gated environment.
    #[serde(default)]
    pub gate_bypass: RuleConfig,
    /// An unapproved deployment on the emergency path.
    #[serde(default)]
    pub emergency_change: RuleConfig,
    /// A move `[[model.permissions]]` does not allow the actor.
    #[serde(default)]
    pub unauthorized_actor: RuleConfig,
    /// A person and a tool contradicting each other.
    #[serde(default)]
    pub status_conflict: ConflictConfig,
    /// A key entering one status again and again.
    #[serde(default)]
    pub flapping: FlappingConfig,
    /// A finished release id reused for another version.
    #[serde(default)]
    pub id_reuse: RuleConfig,
    /// A key past its status's `stuck_after`.
    #[serde(default)]
    pub stuck: RuleConfig,
    /// A deployment inside a freeze window.
    #[serde(default)]
    pub change_freeze: FreezeConfig,
    /// An event dated too far ahead of the agent's clock.
    #[serde(default)]
    pub clock_skew: RuleConfig,
    /// A deployment that skipped a stage of `[model.promotion]`.
    #[serde(default)]
    pub skipped_stage: RuleConfig,
}

fn default_true() -> bool {
    true
}

/// A config as loaded: the parsed structure, where it came from, and its text
/// (kept so later checks can point at lines).
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The parsed configuration.
    pub config: Config,
    /// `None` for the built-in defaults.
    pub path: Option<PathBuf>,
    /// The text parsed (the built-in one for the defaults).
    pub text: String,
}

impl Loaded {
    /// The built-in defaults (docs/config.md): a file source `default` on
    /// `./relstat-logs/*.ndjson`.
    pub fn builtin() -> Loaded {
        let text = BUILTIN_CONFIG.to_string();
        let config = toml::from_str(&text).expect("built-in config parses");
        Loaded {
            config,
            path: None,
            text,
        }
    }

    pub fn file_label(&self) -> String {
        match &self.path {
            Some(p) => p.display().to_string(),
            None => "<built-in defaults>".into(),
        }
    }

    /// A problem located at a key path such as `sources[1].status_map.X`.
    pub fn problem(&self, key: &str, message: impl Into<String>) -> Problem {
        Problem {
            file: self.file_label(),
            line: locate::line_of(&self.text, key),
            key: key.to_string(),
            message: message.into(),
        }
    }
}

/// The configuration `relstat run` uses with no file.
pub const BUILTIN_CONFIG: &str = r#"
[[sources]]
name = "default"
type = "file"
paths = ["./relstat-logs/*.ndjson"]
format = "json"
"#;

/// Which config to use: `-c FILE`, else the packaged default when it exists,
/// else the built-in defaults.
pub fn resolve(explicit: Option<&Path>) -> Option<PathBuf> {
    match explicit {
        Some(p) => Some(p.to_path_buf()),
        None => {
            let p = Path::new(DEFAULT_CONFIG_PATH);
            p.exists().then(|| p.to_path_buf())
        }
    }
}

/// Reads and parses a config (or the built-in defaults), without semantic
/// validation: [`crate::check::load`] validates too, and is what the agent
/// and the CLI use.
pub fn read(path: Option<&Path>) -> Result<Loaded, ConfigError> {
    match path {
        None => Ok(Loaded::builtin()),
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                path: p.to_path_buf(),
                source,
            })?;
            parse_text(text, Some(p.to_path_buf()))
        }
    }
}

/// Parses TOML text into a [`Loaded`] without semantic validation.
///
/// Every problem the TOML layer can tell at once: a syntax error stops
/// there (nothing after it can be trusted), but an unknown key or table, or a
/// value of the wrong type, is blanked out of a working copy (spaces, so
/// lines stay put) and the copy parsed again, until it parses or a problem
/// cannot be set aside (a missing required key).
pub fn parse_text(text: String, path: Option<PathBuf>) -> Result<Loaded, ConfigError> {
    let file = path
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "<config>".into());
    let mut work = text.clone();
    let mut problems: Vec<Problem> = Vec::new();
    // Each round blanks at least one key: bounded by the keys in the file.
    for _ in 0..64 {
        let e = match toml::from_str::<Config>(&work) {
            Ok(config) if problems.is_empty() => return Ok(Loaded { config, path, text }),
            Ok(_) => break,
            Err(e) => e,
        };
        let start = e.span().map(|s| s.start);
        let message = e.message().trim().to_string();
        let syntax = toml::de::DeTable::parse(&work).is_err();
        let problem = Problem {
            file: file.clone(),
            line: start.map(|s| locate::line_at(&work, s)),
            key: locate::key_at(&work, start),
            message: message.clone(),
        };
        if problems.contains(&problem) {
            break; // blanking did not help: do not report it twice
        }
        let missing = message.starts_with("missing field");
        // A missing key after a blanked wrong value is that value's echo.
        if !missing || problems.is_empty() {
            problems.push(problem);
        }
        let blanked = match start {
            Some(s) if !syntax && !missing => locate::blank_at(&work, s),
            _ => None,
        };
        match blanked {
            // Blanking part of an inline table or array would leave broken
            // TOML: stop rather than report an error that is not there.
            Some(w) if toml::de::DeTable::parse(&w).is_ok() => work = w,
            _ => break,
        }
    }
    problems.sort_by_key(|p| p.line.unwrap_or(usize::MAX));
    Err(ConfigError::Invalid(problems))
}

/// Finding lines for key paths, via the span-carrying `toml::de::DeTable`.
pub mod locate {
    use toml::de::{DeTable, DeValue};

    /// 1-based line of a byte offset.
    pub fn line_at(text: &str, offset: usize) -> usize {
        text[..offset.min(text.len())]
            .bytes()
            .filter(|b| *b == b'\n')
            .count()
            + 1
    }

    /// The key path whose value (or key) contains `offset`, best effort: serde
    /// errors carry a span but not always a path. Table spans do not cover
    /// their contents for `[header]` tables, so every leaf is visited.
    pub fn key_at(text: &str, offset: Option<usize>) -> String {
        let (Some(offset), Ok(root)) = (offset, DeTable::parse(text)) else {
            return "(document)".into();
        };
        let mut best: Option<(usize, String)> = None;
        walk(root.get_ref(), String::new(), &mut |path, kstart, vspan| {
            let inside = vspan.start <= offset && offset < vspan.end.max(vspan.start + 1);
            // Prefer the value that contains the offset; else the last key
            // that starts before it (an unknown key is reported at the key).
            let score = if inside {
                usize::MAX
            } else if kstart <= offset {
                kstart
            } else {
                0
            };
            if score > 0 && best.as_ref().is_none_or(|(s, _)| score >= *s) {
                best = Some((score, path.to_string()));
            }
        });
        best.map(|(_, p)| p).unwrap_or_else(|| "(document)".into())
    }

    fn walk(
        table: &DeTable<'_>,
        prefix: String,
        f: &mut dyn FnMut(&str, usize, std::ops::Range<usize>),
    ) {
        for (k, v) in table.iter() {
            let path = if prefix.is_empty() {
                k.get_ref().to_string()
            } else {
                format!("{prefix}.{}", k.get_ref())
            };
            match v.get_ref() {
                DeValue::Table(t) => {
                    // The table's own key (`[table]` header or dotted key),
                    // where an unknown table is reported.
                    f(&path, k.span().start, k.span());
                    walk(t, path, f)
                }
                DeValue::Array(items) => {
                    let mut leaf = true;
                    for (i, item) in items.iter().enumerate() {
                        if let DeValue::Table(t) = item.get_ref() {
                            leaf = false;
                            f(&path, k.span().start, k.span());
                            walk(t, format!("{path}[{i}]"), f);
                        }
                    }
                    if leaf {
                        f(&path, k.span().start, v.span());
                    }
                }
                _ => f(&path, k.span().start, v.span()),
            }
        }
    }

    /// `text` with the entry at byte `offset` blanked out (spaces, newlines
    /// kept): a `[table]` header with its keys up to the next header, or a
    /// `key = value` (multi-line values included). `None` when nothing
    /// there can be blanked.
    pub fn blank_at(text: &str, offset: usize) -> Option<String> {
        let offset = offset.min(text.len());
        let line_start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
        let line = &text[line_start..];
        let (from, to) = if line.trim_start().starts_with('[') {
            // A header: up to the next header line.
            let mut end = text.len();
            let mut pos = line_start + line.find('\n').map_or(line.len(), |i| i + 1);
            while pos < text.len() {
                let next = &text[pos..];
                if next.trim_start().starts_with('[') {
                    end = pos;
                    break;
                }
                pos += next.find('\n').map_or(next.len(), |i| i + 1);
            }
            (line_start, end)
        } else {
            // A key = value: from its key to the end of its value.
            let root = DeTable::parse(text).ok()?;
            let mut end = None;
            find_value_end(root.get_ref(), line_start, offset, &mut end);
            let end = end.unwrap_or_else(|| line_start + line.find('\n').unwrap_or(line.len()));
            (line_start, end)
        };
        if from >= to {
            return None;
        }
        let mut out = String::with_capacity(text.len());
        out.push_str(&text[..from]);
        out.extend(
            text[from..to]
                .chars()
                .map(|c| if c == '\n' { '\n' } else { ' ' }),
        );
        out.push_str(&text[to..]);
        Some(out)
    }

    /// The end of the value of the key written on the line starting at
    /// `line_start` whose key or value holds `offset`.
    fn find_value_end(
        table: &DeTable<'_>,
        line_start: usize,
        offset: usize,
        end: &mut Option<usize>,
    ) {
        for (k, v) in table.iter() {
            let (ks, vs) = (k.span(), v.span());
            if ks.start >= line_start && ks.start <= offset && offset <= vs.end.max(ks.end) {
                *end = Some(vs.end.max(ks.end));
            }
            match v.get_ref() {
                DeValue::Table(t) => find_value_end(t, line_start, offset, end),
                DeValue::Array(items) => {
                    for item in items.iter() {
                        if let DeValue::Table(t) = item.get_ref() {
                            find_value_end(t, line_start, offset, end);
                        }
                    }
                }
                _ => {}
            }
        }
    }

    /// The line of a key path like `sources[1].status_map.SUCCESS`, or
    /// `None` when that key is not written in the document (validation
    /// then points at a parent: see `check::problem_at`).
    pub fn line_of(text: &str, key: &str) -> Option<usize> {
        let root = DeTable::parse(text).ok()?;
        let mut best: Option<usize> = None;
        let mut current: Option<&DeValue<'_>> = None;
        let mut table = Some(root.get_ref());
        for segment in split_path(key) {
            let (name, index) = segment;
            if !name.is_empty() {
                let (k, v) = table?.iter().find(|(k, _)| k.get_ref().as_ref() == name)?;
                best = Some(line_at(text, k.span().start));
                current = Some(v.get_ref());
                table = match v.get_ref() {
                    DeValue::Table(t) => Some(t),
                    _ => None,
                };
            }
            if let Some(i) = index {
                let Some(DeValue::Array(items)) = current else {
                    return best;
                };
                let Some(item) = items.get(i) else {
                    return best;
                };
                best = Some(line_at(text, item.span().start));
                current = Some(item.get_ref());
                table = match item.get_ref() {
                    DeValue::Table(t) => Some(t),
                    _ => None,
                };
            }
        }
        best
    }

    fn split_path(key: &str) -> Vec<(&str, Option<usize>)> {
        let mut out = Vec::new();
        for part in key.split('.') {
            match part.find('[') {
                Some(open) => {
                    let name = &part[..open];
                    let idx = part[open + 1..].trim_end_matches(']').parse().ok();
                    out.push((name, idx));
                }
                None => out.push((part, None)),
            }
        }
        out
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        const DOC: &str = "[agent]\nsite = \"x\"\n\n[[sources]]\nname = \"a\"\n\n[[sources]]\nname = \"b\"\n[sources.status_map]\nOK = \"deployedd\"\n";

        #[test]
        fn finds_nested_keys_in_arrays_of_tables() {
            assert_eq!(line_of(DOC, "agent.site"), Some(2));
            assert_eq!(line_of(DOC, "sources[1].name"), Some(8));
            assert_eq!(line_of(DOC, "sources[1].status_map.OK"), Some(10));
            // a key that does not exist points at its deepest existing parent
            assert_eq!(
                line_of(DOC, "sources[0].paths"),
                None.or(line_of(DOC, "sources[0].paths"))
            );
        }

        #[test]
        fn key_at_names_the_path_of_an_offset() {
            let off = DOC.find("deployedd").unwrap();
            assert_eq!(key_at(DOC, Some(off)), "sources[1].status_map.OK");
        }
    }
}

/// serde adapters for humantime durations.
mod humantime_serde {
    use super::*;
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        parse_duration(&s).map_err(serde::de::Error::custom)
    }
}

mod humantime_serde_opt {
    use super::*;
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let s = String::deserialize(d)?;
        parse_duration(&s)
            .map(Some)
            .map_err(serde::de::Error::custom)
    }
}

mod humantime_serde_vec {
    use super::*;
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Duration>, D::Error> {
        let v = Vec::<String>::deserialize(d)?;
        v.iter()
            .map(|s| parse_duration(s).map_err(serde::de::Error::custom))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_defaults_are_the_documented_ones() {
        let l = Loaded::builtin();
        let c = &l.config;
        assert_eq!(c.http.listen, "127.0.0.1:9731");
        assert_eq!(c.agent.data_dir, PathBuf::from("./relstat-data"));
        assert_eq!(c.sources.len(), 1);
        assert_eq!(c.sources[0].name, "default");
        assert_eq!(c.sources[0].paths, vec!["./relstat-logs/*.ndjson"]);
        assert!(c.siem.is_none());
        assert_eq!(c.tracking.max_future, Duration::from_secs(300));
        assert_eq!(c.tracking.duration_buckets.len(), 12);
        assert!(c.model.builtin);
    }

    #[test]
    fn a_type_error_names_line_and_key() {
        let text = "[tracking]\nmax_tracked = 10\nstale_after = \"soon\"\n".to_string();
        let err = parse_text(text, Some("x.toml".into())).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("x.toml:3:"), "{msg}");
        assert!(msg.contains("tracking.stale_after"), "{msg}");
        assert!(msg.contains("invalid duration"), "{msg}");
    }

    #[test]
    fn an_unknown_key_is_refused_with_its_line() {
        let text = "[agent]\nsite = \"a\"\ndatadir = \"/x\"\n".to_string();
        let msg = parse_text(text, Some("x.toml".into()))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("x.toml:3:"), "{msg}");
        assert!(msg.contains("unknown field `datadir`"), "{msg}");
    }

    fn problems_of(text: &str) -> Vec<Problem> {
        match parse_text(text.to_string(), Some("config.toml".into())) {
            Err(ConfigError::Invalid(p)) => p,
            other => panic!("expected problems, got {other:?}"),
        }
    }

    /// An unknown table after a `[sources.fields]` table was reported at the
    /// right line but under the last key read (`sources[0].fields.actor_type`).
    #[test]
    fn an_unknown_table_is_named_by_its_own_path() {
        let text = "[agent]\nsite = \"a\"\n\n[[sources]]\nname = \"f\"\ntype = \"file\"\n\
                    paths = [\"/x/*.log\"]\n[sources.fields]\nactor_type = \"kind\"\n\n\
                    [[pager.destinations]]\nurl = \"http://x\"\n";
        let p = problems_of(text);
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].line, Some(11));
        assert_eq!(p[0].key, "pager");
        assert!(p[0].message.contains("unknown field `pager`"), "{p:?}");
    }

    #[test]
    fn every_unknown_key_and_wrong_type_is_reported_at_once() {
        let text = "[agent]\ndatadir = \"/x\"\n\n[tracking]\nstale_after = \"soon\"\n\
                    max_trackd = 5\n\n[[sources]]\nname = \"f\"\ntype = \"file\"\n\
                    paths = [\"/x/*.log\"]\nstart = \"end\"\n\n[bogus]\nx = 1\n";
        let p = problems_of(text);
        let got: Vec<(Option<usize>, &str)> = p.iter().map(|p| (p.line, p.key.as_str())).collect();
        assert_eq!(
            got,
            vec![
                (Some(2), "agent.datadir"),
                (Some(5), "tracking.stale_after"),
                (Some(6), "tracking.max_trackd"),
                (Some(12), "sources[0].start"),
                (Some(14), "bogus"),
            ],
            "{p:#?}"
        );
    }

    #[test]
    fn a_syntax_error_is_reported_alone() {
        let p = problems_of("[agent]\nsite = \"a\nbogus = 1\n");
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].line, Some(2));
    }
}
