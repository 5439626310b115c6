//! The release status API (`/api/v1`, docs/api.md): what dashboards,
//! incident tools and auditors read. The listener (`http`) authenticates;
//! this module routes, filters by the caller's partner scope, redacts, and
//! answers JSON with a validator for cheap polling.
//!
//! # Routes (GET and HEAD)
//!
//! - `releases`: one row per tracked key (release, service, environment, site).
//! - `releases/{release}`: the rows of one release (404 when none is visible).
//! - `releases/{release}/history`: its audit trail.
//! - `rollups`: one row per release × environment across services and
//!   sites (`track::rollup`); `releases/{release}/rollup`: those of one
//!   release. Only the `release` and `environment` filters apply; a
//!   partner's rollups are computed from the keys in its scope.
//!
//! - `readiness?release=R&environment=E[&service=S][&site=X][&actor=A]`:
//!   the go/no-go answer before a deployment (`track::readiness`,
//!   docs/readiness.md); 200 for go and no-go alike (the `verdict` says),
//!   404 for a release the caller cannot see.
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
//! time-derived values (`generated_at`, `time_in_status_seconds`), and
//! `If-None-Match` with a matching tag answers 304. Why weak and why a hash:
//! time in status changes every second, so a strong tag over the bytes would
//! never match between two polls; a commit counter would miss what changes
//! with the clock alone (a key becoming stuck or stale) and would have to be
//! combined with the caller's scope and query. A hash over what the caller
//! is shown is right for every user and query by construction. The body is
//! built either way (the hash needs it), in one pass on the core thread from
//! the tracker's borrowed keys ([`render`]); a 304 saves the transfer and the
//! client's parsing.

pub mod render;
pub mod view;

use std::collections::BTreeMap;

use hyper::body::Bytes;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};

use crate::config::PartnerConfig;
use crate::core::{Core, CoreHandle};
use crate::event::{TimeMs, now_ms, parse_rfc3339};
use crate::http::{AuthUser, Body};
use crate::model::Model;
use crate::store::{Store, StoreError};
use crate::track::KeyState;
use render::{Head, Items, Rendered};
use view::{Axis, Filter, HistoryRow, Row, RowRef};

/// Fields a partner's `redact` may name (the configuration checks them).
pub use crate::config::REDACTABLE;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error(transparent)]
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
            h.approver = None;
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
    Rollups,
    Rollup(String),
}

impl Route {
    fn release(&self) -> Option<&str> {
        match self {
            Route::List | Route::Rollups => None,
            Route::Release(r) | Route::History(r) | Route::Rollup(r) => Some(r),
        }
    }
}

fn route(path: &str) -> Option<Route> {
    if path == "rollups" || path == "rollups/" {
        return Some(Route::Rollups);
    }
    let rest = path.strip_prefix("releases")?;
    if let Some(release) = rest
        .strip_prefix('/')
        .and_then(|r| r.strip_suffix("/rollup"))
    {
        if release.is_empty() || release.contains('/') {
            return None;
        }
        return Some(Route::Rollup(decode(release).ok()?));
    }
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

/// What a store read needs, taken from the core: the history folds and
/// scans run off the core thread (a snapshot of 10,000 keys takes ~100 ms,
/// which would pause ingestion that long).
struct StoreRead {
    store: std::sync::Arc<Store>,
    model: Model,
    stale_after: TimeMs,
}

/// Runs on the core thread: the partner's scope, then the current rows
/// (borrowed from the tracker) rendered, or what a store read needs.
fn find(core: &Core, user: Option<&str>, route: &Route, q: &mut Query) -> Result<Found, ApiError> {
    let scope = Scope::of(user.and_then(|u| core.partners().get(u)));
    q.filter.environments = scope.environments;
    let tracker = core.tracker();
    if matches!(route, Route::Rollups | Route::Rollup(_)) {
        let f = &q.filter;
        if q.at.is_some() || f.service.is_some() || f.status.is_some() || f.site.is_some() {
            return Err(ApiError::BadRequest(
                "rollups take only the release and environment filters".into(),
            ));
        }
        // Every release in view counts (a rollup's expected targets may be
        // the previous release's); the release filter applies after.
        let mut rollups = tracker.rollups(|k| f.target(k));
        if let Some(r) = &f.release {
            rollups.retain(|x| &x.release == r);
        }
        return Ok(Found::Done(render_rollups(
            now_ms(),
            route.release(),
            &rollups,
        )));
    }
    if q.at.is_some() || matches!(route, Route::History(_)) {
        return Ok(Found::Read(
            Box::new(StoreRead {
                store: core.store_handle(),
                model: tracker.model().clone(),
                stale_after: tracker.settings().stale_after,
            }),
            scope.redact,
        ));
    }
    let now = now_ms();
    let release = route.release();
    let rows = view::current_refs(tracker.keys(), tracker.model(), now, &q.filter);
    Ok(Found::Done(render_rows(
        now,
        release,
        q,
        rows,
        scope.redact,
    )))
}

/// `{"generated_at", ["release",] "rollups": [...]}`; `None` for a
/// release with no rollup in view. The validator hashes the rollups only.
fn render_rollups(
    now: TimeMs,
    release: Option<&str>,
    rollups: &[crate::track::rollup::Rollup],
) -> Option<Rendered> {
    if release.is_some() && rollups.is_empty() {
        return None;
    }
    let items = serde_json::to_value(rollups).unwrap_or_default();
    let tag = format!(
        "W/\"{:032x}\"",
        xxhash_rust::xxh3::xxh3_128(items.to_string().as_bytes())
    );
    let mut m = serde_json::Map::new();
    m.insert(
        "generated_at".into(),
        crate::event::format_rfc3339(now).into(),
    );
    if let Some(r) = release {
        m.insert("release".into(), r.into());
    }
    m.insert("rollups".into(), items);
    let mut body = serde_json::to_vec(&m).unwrap_or_default();
    body.push(b'\n');
    Some(Rendered { body, tag })
}

/// What the core hands back.
enum Found {
    Done(Option<Rendered>),
    Read(Box<StoreRead>, Redact),
}

fn render_rows(
    now: TimeMs,
    release: Option<&str>,
    q: &Query,
    rows: Vec<RowRef>,
    redact: Redact,
) -> Option<Rendered> {
    let name = if release.is_some() {
        "keys"
    } else {
        "releases"
    };
    let head = Head {
        now,
        at: q.at,
        axis: q.axis,
        release,
    };
    (release.is_none() || !rows.is_empty())
        .then(|| render::answer(&head, &Items::Rows(name, rows), redact))
}

/// Off the core thread: a snapshot folded from the history, or the history.
fn read(
    r: &StoreRead,
    route: &Route,
    q: &Query,
    redact: Redact,
) -> Result<Option<Rendered>, ApiError> {
    let now = now_ms();
    let release = route.release();
    if let Route::History(release) = route {
        let events = view::history(&r.store, release, q.at.map(|t| (t, q.axis)), &q.filter)?;
        let head = Head {
            now,
            at: q.at,
            axis: q.axis,
            release: Some(release),
        };
        return Ok(
            (!events.is_empty()).then(|| render::answer(&head, &Items::Events(&events), redact))
        );
    }
    let at = q.at.unwrap_or(now);
    let owned = view::snapshot(&r.store, &r.model, r.stale_after, at, q.axis, &q.filter)?;
    let rows = owned.iter().map(RowRef::of_row).collect();
    Ok(render_rows(now, release, q, rows, redact))
}

/// Answers `/api/v1/{path}`.
pub async fn serve(core: &CoreHandle, path: &str, req: Request<Bytes>) -> Response<Body> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = json_error(StatusCode::METHOD_NOT_ALLOWED, "use GET or HEAD");
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    if path == "readiness" {
        let user = req.extensions().get::<AuthUser>().map(|u| u.0.clone());
        return readiness(core, user, req.uri().query()).await;
    }
    let Some(route) = route(path) else {
        return json_error(StatusCode::NOT_FOUND, "no such API path; see docs/api.md");
    };
    let mut q = match Query::parse(req.uri().query()) {
        Ok(q) => q,
        Err(e) => return json_error(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    if let Route::Release(r) | Route::History(r) | Route::Rollup(r) = &route {
        q.filter.release = Some(r.clone());
    }
    let user = req.extensions().get::<AuthUser>().map(|u| u.0.clone());
    let found = core
        .call(move |c| find(c, user.as_deref(), &route, &mut q).map(|f| (f, route, q)))
        .await;
    let found = match found {
        Ok(Ok((Found::Done(r), ..))) => Ok(Ok(r)),
        Ok(Ok((Found::Read(r, redact), route, q))) => {
            tokio::task::spawn_blocking(move || read(&r, &route, &q, redact))
                .await
                .map_err(|_| crate::core::CoreError::Gone)
        }
        Ok(Err(e)) => Ok(Err(e)),
        Err(e) => Err(e),
    };
    let rendered = match found {
        Ok(Ok(Some(r))) => r,
        Ok(Ok(None)) => return release_not_found(),
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
    let tag = rendered.tag;
    if req
        .headers()
        .get(header::IF_NONE_MATCH)
        .is_some_and(|h| matches(h, &tag))
    {
        let mut r = Response::new(Body::new(Bytes::new()));
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        set_validator(&mut r, &tag);
        return r;
    }
    let mut r = Response::new(Body::new(Bytes::from(rendered.body)));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    set_validator(&mut r, &tag);
    r
}

/// Parses the readiness query: `release` and `environment` required.
pub fn readiness_ask(query: Option<&str>) -> Result<crate::track::readiness::Ask, ApiError> {
    let mut ask = crate::track::readiness::Ask::default();
    let mut seen: Vec<String> = Vec::new();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let (k, v) = (decode(k)?, decode(v)?);
        if seen.contains(&k) {
            return Err(ApiError::BadRequest(format!(
                "query parameter {k:?} is given twice"
            )));
        }
        seen.push(k.clone());
        match k.as_str() {
            "release" => ask.release = v,
            "environment" => ask.environment = v,
            "service" => ask.service = Some(v),
            "site" => ask.site = Some(v),
            "actor" => ask.actor = Some(v),
            _ => {
                return Err(ApiError::BadRequest(format!(
                    "unknown query parameter {k:?}; known: release, environment, service, \
                     site, actor"
                )));
            }
        }
    }
    if ask.release.is_empty() || ask.environment.is_empty() {
        return Err(ApiError::BadRequest(
            "readiness needs release=R and environment=E".into(),
        ));
    }
    Ok(ask)
}

/// `GET /api/v1/readiness`: computed on the core thread (the release's
/// history is one range read of the store).
async fn readiness(core: &CoreHandle, user: Option<String>, query: Option<&str>) -> Response<Body> {
    let ask = match readiness_ask(query) {
        Ok(a) => a,
        Err(e) => return json_error(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    let answer = core
        .call(move |c| {
            let scope = Scope::of(user.as_deref().and_then(|u| c.partners().get(u)));
            let shown = crate::track::readiness::Shown {
                names: !scope.redact.actor,
            };
            c.readiness(&ask, scope.environments.as_deref(), shown)
        })
        .await;
    let answer = match answer {
        Ok(Ok(Some(a))) => a,
        Ok(Ok(None)) => return release_not_found(),
        Ok(Err(e)) => {
            tracing::error!("api: {e}");
            return json_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the store could not be read",
            );
        }
        Err(e) => return json_error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    };
    let mut body = serde_json::to_vec(&answer).unwrap_or_default();
    body.push(b'\n');
    let mut r = Response::new(Body::new(Bytes::from(body)));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn set_validator(r: &mut Response<Body>, tag: &str) {
    if let Ok(v) = HeaderValue::from_str(tag) {
        r.headers_mut().insert(header::ETAG, v);
    }
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
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
