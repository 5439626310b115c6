//! The release status API (`/api/v1`, SPEC section 4): what dashboards,
//! incident tools and auditors read. The listener (`http`) authenticates;
//! this module routes, filters by the caller's partner scope, redacts, and
//! answers JSON with a validator for cheap polling.
//!
//! # Routes (GET and HEAD)
//!
//! - `releases`: one row per tracked key (release, service, environment, site).
//! - `releases/{release}`: the rows of one release (404 when none is visible).
//! - `releases/{release}/history`: its audit trail.
//!
//! Query: `release`, `service`, `environment`, `status`, `site` filters;
//! `at=RFC3339` answers from the history as it stood then, `axis=recorded`
//! (default: what relstat knew at `at`) or `axis=event` (what is known now
//! about the state at `at`); see [`view`].
//!
//! # Partners
//!
//! `[http.partners.<user>]` gives a basic-auth user a scope (environments)
//! and a redaction list. Rows outside the scope do not exist for that user:
//! a release visible only outside it answers 404, the same 404 as an unknown
//! release. Redacted fields are left out of every answer (lists, details,
//! history, snapshots); the history shows anomalies by rule name only, never
//! a message that could carry a redacted value.
//!
//! # Validators
//!
//! Every 200 carries a weak `ETag`: an xxh3-128 of the body without its
//! time-derived fields (`generated_at`, `time_in_status_seconds`), and
//! `If-None-Match` with a matching tag answers 304. Why weak and why a hash:
//! time in status changes every second, so a strong tag over the bytes would
//! never match between two polls; a commit counter would miss what changes
//! with the clock alone (a key becoming stuck or stale) and would have to be
//! combined with the caller's scope and query. A hash over what the caller
//! is shown is right for every user and query by construction. The body is
//! built either way (the hash needs it), so a 304 saves the transfer and the
//! client's parsing, not the agent's work; 10,000 keys take a few ms.

pub mod view;

use std::collections::BTreeMap;

use hyper::body::Bytes;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde::Serialize;

use crate::agent::{Core, CoreHandle};
use crate::config::PartnerConfig;
use crate::event::{TimeMs, format_rfc3339, now_ms, parse_rfc3339};
use crate::http::{AuthUser, Body};
use crate::model::Model;
use crate::store::{Store, StoreError};
use crate::track::KeyState;
use view::{Axis, Filter, HistoryRow, Row};

/// Fields a partner's `redact` may name.
pub const REDACTABLE: &[&str] = &[
    "actor",
    "reason",
    "source",
    "version",
    "event_id",
    "anomalies",
];

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Store(#[from] StoreError),
}

/// What the caller asked, parsed from the query string.
#[derive(Debug, Clone, Default)]
pub struct Query {
    pub filter: Filter,
    pub at: Option<TimeMs>,
    pub axis: Axis,
}

impl Query {
    /// Parses `release=..&at=..`; unknown or repeated parameters are refused.
    pub fn parse(query: Option<&str>) -> Result<Query, ApiError> {
        let mut q = Query::default();
        let mut seen: Vec<String> = Vec::new();
        let mut axis = None;
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let (k, v) = (decode(k)?, decode(v)?);
            if seen.contains(&k) {
                return Err(ApiError::BadRequest(format!(
                    "query parameter {k:?} is given twice"
                )));
            }
            seen.push(k.clone());
            let f = &mut q.filter;
            match k.as_str() {
                "release" => f.release = Some(v),
                "service" => f.service = Some(v),
                "environment" => f.environment = Some(v),
                "status" => f.status = Some(v),
                "site" => f.site = Some(v),
                "at" => {
                    q.at = Some(parse_rfc3339(&v).ok_or_else(|| {
                        ApiError::BadRequest(format!(
                            "at={v:?} is not an RFC 3339 time, e.g. at=2026-11-03T14:05:00Z"
                        ))
                    })?)
                }
                "axis" => {
                    axis = Some(Axis::parse(&v).ok_or_else(|| {
                        ApiError::BadRequest(format!(
                            "axis={v:?}: use axis=recorded (what relstat knew at `at`) or \
                             axis=event (the state at `at` as known now)"
                        ))
                    })?)
                }
                _ => {
                    return Err(ApiError::BadRequest(format!(
                        "unknown query parameter {k:?}; known: release, service, environment, \
                         status, site, at, axis"
                    )));
                }
            }
        }
        if let Some(a) = axis {
            if q.at.is_none() {
                return Err(ApiError::BadRequest("axis needs at=TIME".into()));
            }
            q.axis = a;
        }
        Ok(q)
    }
}

/// Percent-decoding of one query component (`+` is a space).
fn decode(s: &str) -> Result<String, ApiError> {
    let bad = || ApiError::BadRequest(format!("bad percent-encoding in {s:?}"));
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = s.get(i + 1..i + 3).ok_or_else(bad)?;
                out.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| bad())
}

/// The rows for `q` (full view: scope is in `q.filter`): the tracker's keys
/// now, or a snapshot from the store's history.
pub fn rows<'a>(
    keys: impl Iterator<Item = (&'a crate::event::Key, &'a KeyState)>,
    store: &Store,
    model: &Model,
    stale_after: TimeMs,
    now: TimeMs,
    q: &Query,
) -> Result<Vec<Row>, StoreError> {
    match q.at {
        None => Ok(view::current(keys, model, now, &q.filter)),
        Some(at) => view::snapshot(store, model, stale_after, at, q.axis, &q.filter),
    }
}

/// What one user may see: `None` environments = all.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    pub environments: Option<Vec<String>>,
    pub redact: Redact,
}

impl Scope {
    pub fn of(partner: Option<&PartnerConfig>) -> Self {
        match partner {
            None => Self::default(),
            Some(p) => Self {
                environments: Some(p.environments.clone()),
                redact: Redact::of(&p.redact),
            },
        }
    }
}

/// Fields to leave out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Redact {
    pub actor: bool,
    pub reason: bool,
    pub source: bool,
    pub version: bool,
    pub event_id: bool,
    pub anomalies: bool,
}

impl Redact {
    pub fn of(names: &[String]) -> Self {
        let has = |n: &str| names.iter().any(|x| x == n);
        Self {
            actor: has("actor"),
            reason: has("reason"),
            source: has("source"),
            version: has("version"),
            event_id: has("event_id"),
            anomalies: has("anomalies"),
        }
    }

    pub fn row(&self, r: &mut Row) {
        if self.actor {
            r.last_actor = None;
            r.last_actor_type = None;
        }
        if self.reason {
            r.last_reason = None;
        }
        if self.source {
            r.last_source = None;
        }
        if self.version {
            r.version = None;
        }
        if self.event_id {
            r.last_event_id = None;
        }
    }

    pub fn history(&self, h: &mut HistoryRow) {
        if self.actor {
            h.actor = None;
            h.actor_type = None;
        }
        if self.reason {
            h.reason = None;
        }
        if self.source {
            h.source = None;
        }
        if self.version {
            h.version = None;
            h.commit = None;
            h.artifact = None;
        }
        if self.event_id {
            h.id = None;
        }
        if self.anomalies {
            h.anomalies = None;
        }
    }
}

/// The routes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Route {
    List,
    Release(String),
    History(String),
}

fn route(path: &str) -> Option<Route> {
    let rest = path.strip_prefix("releases")?;
    if rest.is_empty() || rest == "/" {
        return Some(Route::List);
    }
    let rest = rest.strip_prefix('/')?;
    let (release, history) = match rest.strip_suffix("/history") {
        Some(r) => (r, true),
        None => (rest, false),
    };
    if release.is_empty() || release.contains('/') {
        return None;
    }
    let release = decode(release).ok()?;
    Some(if history {
        Route::History(release)
    } else {
        Route::Release(release)
    })
}

/// What the core thread hands back.
enum Found {
    Rows(Vec<Row>),
    History(Vec<HistoryRow>),
}

/// The JSON answer; `generated_at` and each row's time in status are
/// filled after the ETag is computed.
#[derive(Serialize)]
struct Answer {
    #[serde(skip_serializing_if = "Option::is_none")]
    generated_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    axis: Option<Axis>,
    #[serde(skip_serializing_if = "Option::is_none")]
    release: Option<String>,
    count: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    releases: Option<Vec<Row>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    keys: Option<Vec<Row>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    events: Option<Vec<HistoryRow>>,
}

/// Runs on the core thread: the partner's scope and the rows or history.
fn find(
    core: &Core,
    user: Option<&str>,
    route: &Route,
    mut q: Query,
) -> Result<(Found, Redact), ApiError> {
    let scope = Scope::of(user.and_then(|u| core.partners().get(u)));
    q.filter.environments = scope.environments;
    let tracker = core.tracker();
    let stale_after = tracker.settings().stale_after;
    let found = match route {
        Route::List | Route::Release(_) => Found::Rows(rows(
            tracker.keys(),
            core.store(),
            tracker.model(),
            stale_after,
            now_ms(),
            &q,
        )?),
        Route::History(release) => Found::History(view::history(
            core.store(),
            release,
            q.at.map(|t| (t, q.axis)),
            &q.filter,
        )?),
    };
    Ok((found, scope.redact))
}

/// Answers `/api/v1/{path}`.
pub async fn serve(core: &CoreHandle, path: &str, req: Request<Bytes>) -> Response<Body> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = json_error(StatusCode::METHOD_NOT_ALLOWED, "use GET or HEAD");
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let Some(route) = route(path) else {
        return json_error(StatusCode::NOT_FOUND, "no such API path; see docs/api.md");
    };
    let mut q = match Query::parse(req.uri().query()) {
        Ok(q) => q,
        Err(e) => return json_error(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    if let Route::Release(r) | Route::History(r) = &route {
        q.filter.release = Some(r.clone());
    }
    let user = req.extensions().get::<AuthUser>().map(|u| u.0.clone());
    let (at, axis) = (q.at, q.axis);
    let r2 = route.clone();
    let found = core.call(move |c| find(c, user.as_deref(), &r2, q)).await;
    let (found, redact) = match found {
        Ok(Ok(f)) => f,
        Ok(Err(ApiError::BadRequest(m))) => return json_error(StatusCode::BAD_REQUEST, &m),
        Ok(Err(e)) => {
            tracing::error!("api: {e}");
            return json_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the store could not be read",
            );
        }
        Err(e) => return json_error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    };
    let if_none_match = req.headers().get(header::IF_NONE_MATCH).cloned();
    // Off the async workers: 10,000 rows take a few ms to serialize.
    tokio::task::spawn_blocking(move || {
        respond(route, found, redact, at, axis, if_none_match.as_ref())
    })
    .await
    .unwrap_or_else(|_| json_error(StatusCode::INTERNAL_SERVER_ERROR, "internal error"))
}

fn respond(
    route: Route,
    found: Found,
    redact: Redact,
    at: Option<TimeMs>,
    axis: Axis,
    if_none_match: Option<&HeaderValue>,
) -> Response<Body> {
    let mut answer = Answer {
        generated_at: None,
        at: at.map(format_rfc3339),
        axis: at.map(|_| axis),
        release: None,
        count: 0,
        releases: None,
        keys: None,
        events: None,
    };
    match (&route, found) {
        (Route::List, Found::Rows(mut rows)) => {
            rows.iter_mut().for_each(|r| redact.row(r));
            answer.count = rows.len();
            answer.releases = Some(rows);
        }
        (Route::Release(rel) | Route::History(rel), Found::Rows(mut rows)) => {
            if rows.is_empty() {
                return release_not_found();
            }
            rows.iter_mut().for_each(|r| redact.row(r));
            answer.release = Some(rel.clone());
            answer.count = rows.len();
            answer.keys = Some(rows);
        }
        (_, Found::History(mut events)) => {
            if events.is_empty() {
                return release_not_found();
            }
            events.iter_mut().for_each(|h| redact.history(h));
            if let Route::History(rel) | Route::Release(rel) = &route {
                answer.release = Some(rel.clone());
            }
            answer.count = events.len();
            answer.events = Some(events);
        }
    }
    let tag = etag(&answer);
    if if_none_match.is_some_and(|h| matches(h, &tag)) {
        let mut r = Response::new(Body::new(Bytes::new()));
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        set_validator(&mut r, &tag);
        return r;
    }
    let now = now_ms();
    let reference = at.unwrap_or(now);
    answer.generated_at = Some(format_rfc3339(now));
    for r in answer
        .releases
        .iter_mut()
        .chain(answer.keys.iter_mut())
        .flatten()
    {
        r.time_in_status_seconds = Some((reference - r.entered_at_ms).max(0) as f64 / 1000.0);
    }
    let mut body = serde_json::to_vec(&answer).unwrap_or_default();
    body.push(b'\n');
    let mut r = Response::new(Body::new(Bytes::from(body)));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    set_validator(&mut r, &tag);
    r
}

fn set_validator(r: &mut Response<Body>, tag: &str) {
    if let Ok(v) = HeaderValue::from_str(tag) {
        r.headers_mut().insert(header::ETAG, v);
    }
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
}

/// `W/"<xxh3-128 hex>"` of the answer without its time-derived fields.
fn etag(answer: &Answer) -> String {
    struct H(xxhash_rust::xxh3::Xxh3);
    impl std::io::Write for H {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.update(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut h = H(xxhash_rust::xxh3::Xxh3::new());
    let _ = serde_json::to_writer(&mut h, answer);
    format!("W/\"{:032x}\"", h.0.digest128())
}

/// `If-None-Match` (weak comparison, RFC 9110 13.1.2): `*` or any listed tag.
fn matches(header: &HeaderValue, tag: &str) -> bool {
    let Ok(s) = header.to_str() else {
        return false;
    };
    let opaque = |t: &str| t.trim().trim_start_matches("W/").to_string();
    let mine = opaque(tag);
    s.split(',').any(|t| t.trim() == "*" || opaque(t) == mine)
}

fn release_not_found() -> Response<Body> {
    json_error(StatusCode::NOT_FOUND, "release not found")
}

fn json_error(status: StatusCode, message: &str) -> Response<Body> {
    let mut m = BTreeMap::new();
    m.insert("error", message);
    let mut body = serde_json::to_vec(&m).unwrap_or_default();
    body.push(b'\n');
    let mut r = Response::new(Body::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

#[cfg(test)]
mod tests;
