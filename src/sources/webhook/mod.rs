//! Webhook sources: `POST /hooks/{source}` for every `type = "webhook"`
//! source. Each request is authenticated the way its tool signs it
//! ([`auth`]), limited (body size, requests per second), parsed by the
//! source's preset, handed to the core through the runtime's
//! [`crate::ingest::Ingest`] (the outbox policy admits it or not) and
//! committed before it is answered: a 202 means the events are durable,
//! anything else means the sender should fix its request or retry.
//!
//! Order, so that an unauthenticated sender costs little: the source is
//! found (404 without reading the body), a `Content-Length` over `max_body`
//! is refused (413) and credentials the headers carry are checked (401)
//! before the body is read; the body is then read up to `max_body` (413 as
//! soon as it passes) from the listener's shared budget (503 when spent);
//! an HMAC is computed over those bytes only, and the JSON is parsed only
//! after it matched.
//!
//! Answers: 202 for every authenticated, well-formed JSON payload, whether
//! its records are accepted (duplicates included: a redelivery is
//! harmless), `unmapped` (no release step) or `invalid` (lacking what a
//! status needs: the reason is logged with the delivery id, and the payload
//! kept as a dead letter, [`crate::dlq`]); 401 bad or missing signature,
//! 404 unknown source, 413 body over `max_body`, 415 a content type that is
//! neither JSON nor `text/plain`, 400 a body that is not JSON, 408 a body not received in time, 429
//! over `rate_limit`, 503 while the spool is full under `when_full =
//! "block"`, while the bodies in flight fill the listener's budget (or the
//! core is stopping), so the sender retries.

pub mod auth;

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};

use super::line::Parsed;
use super::presets::{PresetError, PresetParser};
use crate::config::{Config, SourceType};
use crate::event::{InputResult, now_ms};
use crate::http::{BUSY_RETRY_AFTER, BodyError, PendingBody, ReadBody};
use crate::ingest::{Ingest, IngestError, Item, SourceBatch};
use crate::model::Model;

/// `max_body` when a source sets none.
pub const DEFAULT_MAX_BODY: u64 = 1024 * 1024;

/// A webhook source that cannot start.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error(
        "source `{source_name}`: cannot read secret_file {path}: {error}; create it with the shared secret (one line)"
    )]
    Secret {
        source_name: String,
        path: String,
        error: String,
    },
    #[error("source `{source_name}`: secret_file {path} is empty; put the shared secret in it")]
    EmptySecret { source_name: String, path: String },
    #[error(transparent)]
    Preset(#[from] PresetError),
}

/// One webhook source, ready to answer.
pub struct Hook {
    pub name: String,
    parser: PresetParser,
    auth: auth::Auth,
    max_body: usize,
    limiter: Option<DefaultDirectRateLimiter>,
}

/// Every webhook source of the running configuration, by name.
#[derive(Default)]
pub struct Hooks {
    by_name: HashMap<String, Hook>,
}

impl Hooks {
    /// Builds the webhook sources of `cfg` (reading their secrets).
    pub fn from_config(cfg: &Config, model: &Model) -> Result<Hooks, WebhookError> {
        let mut by_name = HashMap::new();
        for s in cfg.sources.iter().filter(|s| s.kind == SourceType::Webhook) {
            let secret = match &s.secret_file {
                Some(path) => {
                    let text = std::fs::read_to_string(path).map_err(|e| WebhookError::Secret {
                        source_name: s.name.clone(),
                        path: path.display().to_string(),
                        error: e.to_string(),
                    })?;
                    let secret = text.trim_end_matches(['\r', '\n']).to_string();
                    if secret.is_empty() {
                        return Err(WebhookError::EmptySecret {
                            source_name: s.name.clone(),
                            path: path.display().to_string(),
                        });
                    }
                    secret
                }
                // check-config refuses this; never accept unauthenticated input.
                None => {
                    return Err(WebhookError::Secret {
                        source_name: s.name.clone(),
                        path: "(none)".into(),
                        error: "a webhook source needs secret_file".into(),
                    });
                }
            };
            let parser = PresetParser::new(s, model, &cfg.agent.site)?;
            let auth = auth::Auth::new(parser.preset().name, secret.into_bytes());
            let limiter = s
                .rate_limit
                .and_then(NonZeroU32::new)
                .map(|n| RateLimiter::direct(Quota::per_second(n)));
            let max_body = s.max_body.map_or(DEFAULT_MAX_BODY, |b| b.as_u64());
            by_name.insert(
                s.name.clone(),
                Hook {
                    name: s.name.clone(),
                    parser,
                    auth,
                    max_body: usize::try_from(max_body).unwrap_or(usize::MAX),
                    limiter,
                },
            );
        }
        Ok(Hooks { by_name })
    }

    pub fn get(&self, name: &str) -> Option<&Hook> {
        self.by_name.get(name)
    }
}

/// An answer given before the body is parsed, counted as `kind` in
/// `relstat_source_errors_total{kind}`.
pub struct Refusal {
    pub status: StatusCode,
    pub text: String,
    pub kind: &'static str,
    /// Seconds, for `Retry-After`.
    pub retry_after: Option<&'static str>,
}

impl Refusal {
    fn new(status: StatusCode, text: impl Into<String>, kind: &'static str) -> Refusal {
        Refusal {
            status,
            text: text.into(),
            kind,
            retry_after: None,
        }
    }

    pub fn response(&self) -> Response<Full<Bytes>> {
        let mut r = answer(self.status, &self.text);
        if let Some(secs) = self.retry_after {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static(secs));
        }
        r
    }
}

/// What the handler decided before touching the core.
pub enum Checked {
    /// Answer this now (nothing reaches the store).
    Answer(Response<Full<Bytes>>, Option<&'static str>),
    /// Commit this batch, then answer 202 (or, for an unparseable body,
    /// the given error status after committing the `invalid` count).
    Commit(SourceBatch, StatusCode, String),
}

impl Hook {
    /// What can be refused before the body is read: a declared length over
    /// `max_body` (413), missing or bad credentials in the headers (401).
    pub fn admit(&self, headers: &hyper::HeaderMap, declared: Option<u64>) -> Result<(), Refusal> {
        if let Some(n) = declared.filter(|&n| n > self.max_body as u64) {
            return Err(self.too_large(Some(n)));
        }
        self.auth
            .verify_headers(headers)
            .map_err(|why| Refusal::new(StatusCode::UNAUTHORIZED, why, "auth"))
    }

    fn too_large(&self, len: Option<u64>) -> Refusal {
        let max = self.max_body;
        let text = match len {
            Some(n) => format!("body of {n} bytes is over this source's max_body ({max} bytes)"),
            None => format!("body over this source's max_body ({max} bytes)"),
        };
        Refusal::new(StatusCode::PAYLOAD_TOO_LARGE, text, "too_large")
    }

    /// Reads the body within `max_body`.
    pub async fn read(&self, body: PendingBody) -> Result<ReadBody, Refusal> {
        body.read(self.max_body).await.map_err(|e| match e {
            BodyError::TooLarge { .. } => self.too_large(None),
            BodyError::Busy => Refusal {
                retry_after: Some(BUSY_RETRY_AFTER),
                ..Refusal::new(e.status(), e.to_string(), "busy")
            },
            BodyError::Timeout | BodyError::Broken => {
                Refusal::new(e.status(), e.to_string(), "body_read")
            }
        })
    }

    /// Everything up to the store: size, auth, rate limit, content type,
    /// parsing. The returned error kind is counted in
    /// `relstat_source_errors_total{kind}`.
    pub fn check(&self, req: &Request<Bytes>) -> Checked {
        let body = req.body();
        if body.len() > self.max_body {
            let refused = self.too_large(Some(body.len() as u64));
            return Checked::Answer(refused.response(), Some(refused.kind));
        }
        if let Err(why) = self.auth.verify(req.headers(), body) {
            return Checked::Answer(answer(StatusCode::UNAUTHORIZED, why), Some("auth"));
        }
        if let Some(l) = &self.limiter
            && l.check().is_err()
        {
            let mut r = answer(
                StatusCode::TOO_MANY_REQUESTS,
                "over this source's rate_limit; retry later",
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return Checked::Answer(r, Some("rate_limited"));
        }
        let batch = |items: Vec<Item>| SourceBatch {
            source: self.name.clone(),
            items,
            checkpoint: None,
            errors: Vec::new(),
            caught_up: true,
            poll_seconds: None,
            dead_letters: Default::default(),
        };
        if let Some(ct) = req.headers().get(header::CONTENT_TYPE) {
            let ct = ct.to_str().unwrap_or("").to_ascii_lowercase();
            if !(ct.contains("json") || ct.starts_with("text/plain")) {
                return Checked::Commit(
                    batch(vec![Item::Rejected(InputResult::Invalid)]),
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    format!(
                        "content type {ct:?} is not JSON; configure the sender to post \
                         application/json"
                    ),
                );
            }
        }
        let tool = super::presets::registry::tool(self.parser.preset().name);
        let event = event_header(req, self.parser.preset().name);
        let received = now_ms();
        let parsed = match self.parser.parse_json(event.as_deref(), body, received) {
            Ok(parsed) => parsed,
            Err(why) => {
                tracing::debug!(source = %self.name, "not JSON: {why}");
                return Checked::Commit(
                    batch(vec![Item::Rejected(InputResult::Invalid)]),
                    StatusCode::BAD_REQUEST,
                    format!("cannot parse the body: {why}"),
                );
            }
        };
        // Authenticated, well-formed JSON: 202 whatever it maps to (a 4xx
        // would make the tool count a failed delivery, and disable the
        // hook); what did not map is kept as a dead letter.
        let delivery_header = tool.and_then(|t| t.delivery_header);
        let delivery = crate::dlq::delivery_id(req.headers(), delivery_header, body);
        let mut dead = crate::dlq::DeadLetters::default();
        if let Some((result, reason)) = crate::sources::fields::dead_letter_verdict(&parsed) {
            // An invalid payload is worth a look (a missing field: a
            // default to set); an unmapped one is what tools send besides
            // release steps (pings, pushes): debug.
            if result == InputResult::Invalid {
                tracing::info!(source = %self.name, delivery = %delivery, "invalid payload: {reason}");
            } else {
                tracing::debug!(source = %self.name, delivery = %delivery, "unmapped payload: {reason}");
            }
            let extra: Vec<&str> = tool
                .into_iter()
                .flat_map(|t| [t.event_header, t.delivery_header])
                .flatten()
                .collect();
            dead.new.push(crate::dlq::DeadLetter {
                source: self.name.clone(),
                delivery,
                received,
                result: result.as_str().to_string(),
                reason,
                headers: crate::dlq::kept_headers(req.headers(), &extra),
                payload: String::from_utf8_lossy(body).into_owned(),
                replayed: None,
            });
        }
        let n = parsed.len();
        let (mut unmapped, mut invalid) = (0, 0);
        let items = parsed
            .into_iter()
            .map(|p| match p {
                Parsed::Event(e) => Item::Event(e),
                Parsed::Skipped => Item::Rejected(InputResult::Skipped),
                Parsed::Invalid(_) => {
                    invalid += 1;
                    Item::Rejected(InputResult::Invalid)
                }
                Parsed::Unmapped(_) => {
                    unmapped += 1;
                    Item::Rejected(InputResult::Unmapped)
                }
            })
            .collect();
        let mut batch = batch(items);
        batch.dead_letters = dead;
        Checked::Commit(
            batch,
            StatusCode::ACCEPTED,
            format!("{{\"records\":{n},\"unmapped\":{unmapped},\"invalid\":{invalid}}}"),
        )
    }
}

/// The event type the request's header names, when the tool `preset` sends
/// one (its registry entry names the header).
fn event_header(req: &Request<Bytes>, preset: &str) -> Option<String> {
    let name = super::presets::registry::tool(preset)?.event_header?;
    let value = req.headers().get(name)?.to_str().ok()?;
    Some(value.to_string())
}

/// A short answer; JSON bodies for 202, plain text for errors.
pub fn answer(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(format!("{body}\n"))));
    *r.status_mut() = status;
    let ct = if status == StatusCode::ACCEPTED {
        "application/json"
    } else {
        "text/plain; charset=utf-8"
    };
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    r
}

/// Shared by the runtime: the hooks of the running configuration.
pub type SharedHooks = std::sync::RwLock<Arc<Hooks>>;

/// `POST /hooks/{source}` for the running agent: checks (the body read only
/// once the source is found and the headers pass), then hands the batch to
/// the core through `ingest` and answers once it is committed. Refusals are
/// counted with `count_error(source, kind)`
/// (`relstat_source_errors_total{kind}`).
pub async fn serve(
    hooks: &SharedHooks,
    ingest: &Ingest,
    count_error: &(dyn Fn(&str, &'static str) + Send + Sync),
    source: &str,
    req: Request<PendingBody>,
) -> Response<Full<Bytes>> {
    let hooks = hooks.read().unwrap_or_else(|p| p.into_inner()).clone();
    let Some(hook) = hooks.get(source) else {
        return answer(StatusCode::NOT_FOUND, "no webhook source of that name");
    };
    let count_error = |kind: &'static str| count_error(source, kind);
    let (parts, pending) = req.into_parts();
    let read = match hook.admit(&parts.headers, pending.declared_len()) {
        Ok(()) => hook.read(pending).await,
        Err(refused) => Err(refused),
    };
    // `read` holds the body's share of the listener's budget until the
    // answer is made.
    let read = match read {
        Ok(read) => read,
        Err(refused) => {
            count_error(refused.kind);
            return refused.response();
        }
    };
    let req = Request::from_parts(parts, read.bytes().clone());
    let (batch, status, body) = match hook.check(&req) {
        Checked::Answer(resp, kind) => {
            if let Some(kind) = kind {
                count_error(kind);
            }
            return resp;
        }
        Checked::Commit(batch, status, body) => (batch, status, body),
    };
    // The outbox policy decides admission: `when_full = "block"` refuses
    // new input while the outbox is at its limit.
    match ingest.submit_async(batch).await {
        Ok(()) => answer(status, &body),
        Err(IngestError::Full) => {
            count_error("spool_full");
            let mut r = answer(
                StatusCode::SERVICE_UNAVAILABLE,
                "the spool is full (when_full = \"block\"); retry later",
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("30"));
            r
        }
        Err(IngestError::Failed(e)) => {
            tracing::error!(source, "cannot commit a webhook payload: {e}");
            count_error("store");
            answer(
                StatusCode::SERVICE_UNAVAILABLE,
                "cannot commit now; retry later",
            )
        }
        Err(IngestError::Stopping) => answer(
            StatusCode::SERVICE_UNAVAILABLE,
            "relstat is stopping; retry later",
        ),
    }
}
