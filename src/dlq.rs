//! Dead letters: the raw payloads of webhook and poll sources that came out
//! `unmapped` or `invalid`, kept in the store (table `dead_letters`, schema
//! 4) so that a `status_map` or `fields` fix can replay them
//! (`relstat dlq list|show|replay`, docs/dlq.md).
//!
//! A dead letter travels in the `SourceBatch`
//! of the payload it came with and is committed in that batch's store
//! transaction; `[dlq]` caps what is kept (`max_payloads`, `max_bytes`,
//! `retention`: the oldest dropped first, and counted).
//!
//! This module imports only [`crate::event`] (the batch that carries dead
//! letters is a leaf of the layering).
//!
//! What is kept of a request: its body, the source, a delivery id, the
//! result and its reason, and only the headers on [`KEPT_HEADERS`] (plus
//! the tool's event-type and delivery headers): never `Authorization`, a
//! signature or a token.

use serde::{Deserialize, Serialize};

use crate::event::TimeMs;

/// `[dlq] max_payloads` when unset.
pub const DEFAULT_MAX_PAYLOADS: u64 = 10_000;
/// `[dlq] max_bytes` when unset (64 MiB, apart from the spool's).
pub const DEFAULT_MAX_BYTES: u64 = 64 * 1024 * 1024;
/// `[dlq] retention` when unset.
pub const DEFAULT_RETENTION: std::time::Duration = std::time::Duration::from_secs(30 * 86_400);

/// Headers kept with a dead letter (lowercase), besides the tool's
/// event-type and delivery headers: what a replay or a reader needs.
pub const KEPT_HEADERS: &[&str] = &["content-type", "user-agent", "x-request-id"];

/// The header under which a poll source's dead letter keeps the event type
/// its poll client named (polls have no request headers).
pub const POLL_EVENT_HEADER: &str = "x-relstat-event";

/// Delivery-id headers of tools that send one, when the registry names
/// none (lowercase).
const DELIVERY_HEADERS: &[&str] = &["x-request-id", "x-delivery-id"];

/// One payload that did not become an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub source: String,
    /// The tool's delivery id (`X-GitHub-Delivery`, `X-Gitlab-Event-UUID`,
    /// ...), else a hash of the payload (`h:<hex>`).
    pub delivery: String,
    /// When relstat received (or polled) it.
    pub received: TimeMs,
    /// `unmapped` or `invalid`.
    pub result: String,
    /// Why: the raw status that maps to no state, or the missing field.
    pub reason: String,
    /// The kept headers (lowercase names), in the request's order.
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    /// The body as received (JSON text).
    pub payload: String,
    /// When it was last replayed (`relstat dlq replay`).
    #[serde(default)]
    pub replayed: Option<TimeMs>,
}

impl DeadLetter {
    /// What the entry costs against `[dlq] max_bytes`.
    pub fn size(&self) -> u64 {
        let headers: usize = self.headers.iter().map(|(k, v)| k.len() + v.len()).sum();
        (self.payload.len() + headers + self.reason.len() + self.source.len() + self.delivery.len())
            as u64
    }

    /// The value of a kept header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What a batch carries for the dead-letter table: new dead letters, and
/// the entries a replay took (marked replayed in the same transaction).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DeadLetters {
    pub new: Vec<DeadLetter>,
    pub replayed: Vec<u64>,
}

impl DeadLetters {
    pub fn is_empty(&self) -> bool {
        self.new.is_empty() && self.replayed.is_empty()
    }
}

/// Whether a header may be kept: never credentials, whatever list named it.
pub fn is_secret_header(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    n == "authorization"
        || n == "cookie"
        || n.contains("signature")
        || n.contains("token")
        || n.contains("secret")
        || n.contains("auth")
        || n.contains("api-key")
        || n.contains("apikey")
}

/// The headers to keep from a request: [`KEPT_HEADERS`] and `extra` (the
/// tool's event-type and delivery headers), never a secret one.
pub fn kept_headers(headers: &hyper::HeaderMap, extra: &[&str]) -> Vec<(String, String)> {
    headers
        .iter()
        .filter(|(k, _)| {
            let k = k.as_str();
            (KEPT_HEADERS.contains(&k) || extra.iter().any(|e| e.eq_ignore_ascii_case(k)))
                && !is_secret_header(k)
        })
        .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
        .collect()
}

/// The delivery id of a request: the tool's delivery header, a generic one,
/// else a hash of the body.
pub fn delivery_id(headers: &hyper::HeaderMap, tool_header: Option<&str>, body: &[u8]) -> String {
    tool_header
        .into_iter()
        .chain(DELIVERY_HEADERS.iter().copied())
        .find_map(|h| headers.get(h)?.to_str().ok().filter(|v| !v.is_empty()))
        .map(str::to_string)
        .unwrap_or_else(|| body_hash(body))
}

/// `h:<xxh3-64 hex>`: the delivery id of a payload that came with none.
pub fn body_hash(body: &[u8]) -> String {
    format!("h:{:016x}", xxhash_rust::xxh3::xxh3_64(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_never_kept() {
        let mut h = hyper::HeaderMap::new();
        for (k, v) in [
            ("authorization", "Bearer s3cret"),
            ("x-hub-signature-256", "sha256=ab"),
            ("x-gitlab-token", "s3cret"),
            ("content-type", "application/json"),
            ("x-github-event", "deployment"),
            ("x-github-delivery", "d-1"),
            ("cookie", "a=b"),
        ] {
            h.insert(
                hyper::header::HeaderName::from_static(k),
                v.parse().unwrap(),
            );
        }
        // Even when a list names a secret header, it is not kept.
        let kept = kept_headers(
            &h,
            &[
                "x-github-event",
                "x-github-delivery",
                "x-gitlab-token",
                "authorization",
            ],
        );
        let names: Vec<&str> = kept.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names.len(), 3, "{names:?}");
        for n in ["content-type", "x-github-event", "x-github-delivery"] {
            assert!(names.contains(&n), "{names:?}");
        }
        assert!(!kept.iter().any(|(_, v)| v.contains("s3cret")));
        assert_eq!(delivery_id(&h, Some("x-github-delivery"), b"{}"), "d-1");
        assert_eq!(delivery_id(&h, None, b"{}"), body_hash(b"{}"));
    }
}

/// One dead letter mapped again by `relstat dlq replay`: its events and
/// the results of its other records, for the agent to apply.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ReplayEntry {
    pub id: u64,
    pub source: String,
    pub events: Vec<crate::event::Event>,
    /// `unmapped`, `invalid` or `skipped`, one per record that is no event.
    pub rejected: Vec<String>,
    /// Why the first rejected record is no event.
    #[serde(default)]
    pub reason: Option<String>,
}

/// What replaying one entry gave: one result per record (`accepted`,
/// `duplicate`, `late`, `unmapped`, `invalid`), or why it was skipped.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Replayed {
    pub id: u64,
    pub source: String,
    pub results: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}
