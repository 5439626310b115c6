//! Which chat notifications a commit causes: the messages ([`Note`]) and
//! the routes of `[[notify.destinations]]` ([`Router`]). The core calls
//! [`Router::route`] on each commit, a relay's tracked import on each chunk
//! (`[notify] imported`); the rows go to the store's queues in the same
//! transaction as their cause, and [`crate::sinks::notify`] delivers them.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::config::{Config, NotifyConfig, RouteConfig};
use crate::event::TimeMs;
use crate::track::{Batch, Effect};

/// The anomalies the default routes send.
pub const DEFAULT_ANOMALIES: &[&str] = &[
    "stuck",
    "gate_bypass",
    "unauthorized_actor",
    "emergency_change",
    "change_freeze",
];

/// The statuses whose transitions the default routes send.
pub const DEFAULT_STATUSES: &[&str] = &["failed", "rolled_back"];

/// What a message reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoteKind {
    Transition,
    Anomaly,
    /// `relstat notify test`.
    Sample,
}

/// One message waiting in a destination's queue (stored as JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Note {
    /// Stable: the same cause to the same destination has the same id, on
    /// every attempt (receivers can drop a duplicate by it).
    pub id: String,
    pub kind: NoteKind,
    /// The anomaly rule (anomalies only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<String>,
    pub release: String,
    pub service: String,
    pub environment: String,
    pub site: String,
    #[serde(default)]
    pub from: Option<String>,
    pub to: String,
    pub actor: String,
    pub actor_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The anomaly's own sentence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Seconds spent in the previous status (transitions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_secs: Option<f64>,
    pub event_id: String,
    pub event_time: TimeMs,
    /// When it was queued (agent clock): `max_age` counts from here.
    pub queued_at: TimeMs,
}

/// One route, ready to match.
#[derive(Debug, Clone)]
struct Route {
    anomalies: Vec<String>,
    statuses: Vec<String>,
    environments: Vec<String>,
    services: Vec<String>,
    sites: Vec<String>,
}

fn within(list: &[String], v: &str) -> bool {
    list.is_empty() || list.iter().any(|x| x == v)
}

impl Route {
    fn from_config(r: &RouteConfig) -> Route {
        Route {
            anomalies: r.anomalies.clone(),
            statuses: r.statuses.clone(),
            environments: r.environments.clone(),
            services: r.services.clone(),
            sites: r.sites.clone(),
        }
    }

    fn place(&self, n: &Note) -> bool {
        within(&self.environments, &n.environment)
            && within(&self.services, &n.service)
            && within(&self.sites, &n.site)
    }

    fn matches(&self, n: &Note) -> bool {
        let what = match n.kind {
            NoteKind::Transition => self.statuses.contains(&n.to),
            NoteKind::Anomaly => n
                .rule
                .as_deref()
                .is_some_and(|r| self.anomalies.iter().any(|a| a == r)),
            NoteKind::Sample => true,
        };
        what && self.place(n)
    }
}

/// The environments the default routes watch: `[notify] environments`,
/// else the gate's, else `["production"]`.
pub fn default_environments(cfg: &Config, n: &NotifyConfig) -> Vec<String> {
    if let Some(e) = &n.environments {
        return e.clone();
    }
    match &cfg.model.gate {
        Some(g) if !g.environments.is_empty() => g.environments.clone(),
        _ => vec!["production".to_string()],
    }
}

/// Chooses, for each destination, the messages a commit causes.
#[derive(Debug, Clone)]
pub struct Router {
    destinations: Vec<(String, Vec<Route>)>,
    /// Messages a destination's queue holds at most.
    pub max_queued: u64,
    /// Notify for events imported from bundles.
    pub imported: bool,
    /// `[notify] max_age`: a live event older than this is not notified.
    max_age_ms: TimeMs,
    /// Every status and rule some route names: what is worth a [`Note`].
    statuses: BTreeSet<String>,
    rules: BTreeSet<String>,
}

impl Router {
    /// The router of `[notify]`; `None` without destinations.
    pub fn from_config(cfg: &Config) -> Option<Router> {
        let n = cfg.notify.as_ref()?;
        if n.destinations.is_empty() {
            return None;
        }
        let envs = default_environments(cfg, n);
        let default = Route {
            anomalies: DEFAULT_ANOMALIES.iter().map(|s| s.to_string()).collect(),
            statuses: DEFAULT_STATUSES.iter().map(|s| s.to_string()).collect(),
            environments: envs,
            services: Vec::new(),
            sites: Vec::new(),
        };
        let destinations: Vec<(String, Vec<Route>)> = n
            .destinations
            .iter()
            .map(|d| {
                let routes = if d.routes.is_empty() {
                    vec![default.clone()]
                } else {
                    d.routes.iter().map(Route::from_config).collect()
                };
                (d.name.clone(), routes)
            })
            .collect();
        let routes = || destinations.iter().flat_map(|(_, r)| r);
        let statuses = routes().flat_map(|r| r.statuses.iter().cloned()).collect();
        let rules = routes().flat_map(|r| r.anomalies.iter().cloned()).collect();
        Some(Router {
            max_queued: n.max_queued.max(1),
            imported: n.imported,
            max_age_ms: n.max_age.as_millis() as TimeMs,
            statuses,
            rules,
            destinations,
        })
    }

    /// The messages of one commit of the agent's own input: as
    /// [`Router::route`], but an event older than `max_age` (a backlog read
    /// at the first start, logs from before the agent ran) is not
    /// notified; for `stuck`, found by the periodic check, the time that
    /// counts is when it was found.
    pub fn route_live(
        &self,
        batch: &Batch,
        effects: &[Effect],
        now: TimeMs,
    ) -> Vec<(String, Vec<u8>)> {
        self.route_since(batch, effects, now, Some(now - self.max_age_ms))
    }

    /// The messages of one commit, per destination (JSON rows for the
    /// store), in the order their causes happened: transitions from the
    /// batch's history, anomalies from the effects. Imports use it: their
    /// events are late by design.
    pub fn route(&self, batch: &Batch, effects: &[Effect], now: TimeMs) -> Vec<(String, Vec<u8>)> {
        self.route_since(batch, effects, now, None)
    }

    fn route_since(
        &self,
        batch: &Batch,
        effects: &[Effect],
        now: TimeMs,
        since: Option<TimeMs>,
    ) -> Vec<(String, Vec<u8>)> {
        let notes: Vec<Note> = notes_of(batch, effects, now)
            .into_iter()
            .filter(|n| match n.kind {
                NoteKind::Transition => self.statuses.contains(&n.to),
                _ => n.rule.as_ref().is_some_and(|r| self.rules.contains(r)),
            })
            .filter(|n| since.is_none_or(|s| n.event_time >= s))
            .collect();
        let mut out = Vec::new();
        if notes.is_empty() {
            return out;
        }
        for (dest, routes) in &self.destinations {
            for n in &notes {
                if routes.iter().any(|r| r.matches(n)) {
                    let mut n = n.clone();
                    n.id = stable_id(dest, &n);
                    if let Ok(v) = serde_json::to_vec(&n) {
                        out.push((dest.clone(), v));
                    }
                }
            }
        }
        out
    }
}

/// The id of `n` sent to `dest`: the same on every attempt and restart.
pub fn stable_id(dest: &str, n: &Note) -> String {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(dest.as_bytes());
    h.update(&[0]);
    h.update(n.event_id.as_bytes());
    h.update(&[0]);
    h.update(n.rule.as_deref().unwrap_or("").as_bytes());
    h.update(&[0]);
    h.update(n.to.as_bytes());
    format!("{:032x}", h.digest128())
}

/// Every message candidate of a commit (not routed yet).
pub fn notes_of(batch: &Batch, effects: &[Effect], now: TimeMs) -> Vec<Note> {
    let mut durations: BTreeMap<(&crate::event::Key, &str), f64> = BTreeMap::new();
    for e in effects {
        if let Effect::Duration { key, status, secs } = e {
            durations.insert((key, status.as_str()), *secs);
        }
    }
    let mut out = Vec::new();
    for rec in &batch.history {
        let e = &rec.event;
        if rec.late || rec.from.as_deref() == Some(e.status.as_str()) {
            continue;
        }
        let key = e.key();
        let previous_secs = rec
            .from
            .as_deref()
            .and_then(|f| durations.get(&(&key, f)).copied());
        out.push(Note {
            id: String::new(),
            kind: NoteKind::Transition,
            rule: None,
            severity: None,
            release: e.release.clone(),
            service: e.service.clone(),
            environment: e.environment.clone(),
            site: e.site.clone(),
            from: rec.from.clone(),
            to: e.status.clone(),
            actor: e.actor.clone(),
            actor_type: e.actor_type.as_str().to_string(),
            reason: e.reason.clone(),
            message: None,
            previous_secs,
            event_id: e.id.clone(),
            event_time: e.time,
            queued_at: now,
        });
    }
    for e in effects {
        if let Effect::Anomaly(a) = e {
            out.push(anomaly_note(a, now));
        }
    }
    out
}

/// The message candidate of one anomaly. A `stuck` anomaly's time is
/// when it was found (its event entered the status hours before).
pub fn anomaly_note(a: &crate::detect::Anomaly, now: TimeMs) -> Note {
    Note {
        id: String::new(),
        kind: NoteKind::Anomaly,
        rule: Some(a.rule.clone()),
        severity: Some(a.severity.as_str().to_string()),
        release: a.release.clone(),
        service: a.service.clone(),
        environment: a.environment.clone(),
        site: a.site.clone(),
        from: a.from.clone(),
        to: a.to.clone(),
        actor: a.actor.clone(),
        actor_type: a.actor_type.as_str().to_string(),
        reason: a.reason.clone(),
        message: Some(a.message.clone()),
        previous_secs: None,
        event_id: a.event_id.clone(),
        event_time: if a.rule == "stuck" {
            a.detected_at
        } else {
            a.event_time
        },
        queued_at: now,
    }
}

/// Longest `url_file` read.
pub const MAX_URL_FILE: u64 = 8 * 1024;

/// Whether a destination URL may be used: `https://`, or `http://` to a
/// loopback address (tests, a local relay).
pub fn check_url(url: &str) -> Result<(), String> {
    let uri: ureq::http::Uri = url
        .parse()
        .map_err(|e| format!("{url:?} is not a URL ({e})"))?;
    let host = uri.host().unwrap_or("");
    match uri.scheme_str() {
        Some("https") if !host.is_empty() => Ok(()),
        Some("http") if is_loopback(host) => Ok(()),
        Some("http") => Err(format!(
            "{url:?} is plain http to a host that is not loopback: use https:// (plain http \
             only reaches 127.0.0.1, ::1 or localhost)"
        )),
        _ => Err(format!("{url:?} is not an https:// URL")),
    }
}

fn is_loopback(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h.eq_ignore_ascii_case("localhost")
        || h.parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The URL a `url_file` holds (its first line, trimmed; the file read up to
/// [`MAX_URL_FILE`] bytes).
pub fn read_url(path: &std::path::Path) -> Result<String, String> {
    use std::io::Read;
    let f =
        std::fs::File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut buf = Vec::new();
    f.take(MAX_URL_FILE + 1)
        .read_to_end(&mut buf)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if buf.len() as u64 > MAX_URL_FILE {
        return Err(format!(
            "{} is longer than {MAX_URL_FILE} bytes: not one URL",
            path.display()
        ));
    }
    let text = String::from_utf8_lossy(&buf);
    let url = text.lines().next().unwrap_or("").trim().to_string();
    if url.is_empty() {
        return Err(format!(
            "{} is empty; put the webhook URL in it",
            path.display()
        ));
    }
    check_url(&url).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(url)
}

#[cfg(test)]
mod tests;
