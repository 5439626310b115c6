//! The HTTP client of the poll and Kubernetes sources: one per source, with
//! its token (re-read when the file changes), its CA, a request rate limit,
//! conditional requests, and the error kinds the sources count and back off on.
//!
//! Built on the shared outbound client ([`crate::outbound`], ureq: blocking,
//! rustls on ring, proxies from the environment): the sources are threads
//! with blocking I/O like the file source, so an async client would only add
//! a runtime per thread; ureq streams bodies (the Kubernetes watch reads
//! newline-delimited events from the open response).

use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use crate::outbound::{self, OutboundError};

/// Requests per second one source may make (burst: [`BURST`]): enough for a
/// paginated catch-up, never a flood against a shared CI server.
pub const REQUESTS_PER_SECOND: u32 = 5;
const BURST: u32 = 10;
/// Largest body read from one response.
const MAX_BODY: u64 = 64 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum PollError {
    #[error("cannot read token_file {path}: {err} (the file must hold the API token)")]
    Token { path: PathBuf, err: std::io::Error },
    #[error("cannot read ca_file {path}: {detail}")]
    Ca { path: PathBuf, detail: String },
    /// The client cannot be built (a proxy variable that is not a URL).
    #[error("{0}")]
    Client(String),
    #[error("{url}: {status} (check token_file: the token is missing, expired or lacks rights)")]
    Unauthorized { url: String, status: u16 },
    #[error("{url}: rate limited (429), retrying after {retry_after:?}")]
    RateLimited { url: String, retry_after: Duration },
    #[error("{url}: HTTP {status}")]
    Status { url: String, status: u16 },
    #[error("{url}: {detail}")]
    Transport { url: String, detail: String },
    #[error("{url}: the answer is not the JSON expected: {detail}")]
    Decode { url: String, detail: String },
    /// The Kubernetes watch's resourceVersion is too old: list again.
    #[error("{url}: 410 Gone (resourceVersion expired)")]
    Gone { url: String },
}

impl PollError {
    /// The `kind` label of `relstat_source_errors_total`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Token { .. } | Self::Ca { .. } | Self::Client(_) => "config",
            Self::Unauthorized { .. } => "auth",
            Self::RateLimited { .. } => "rate_limited",
            Self::Status { .. } | Self::Gone { .. } => "http",
            Self::Transport { .. } => "connect",
            Self::Decode { .. } => "decode",
        }
    }

    /// How long the server asked us to wait, if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }
}

/// A response the sources care about.
pub struct Fetched {
    pub status: u16,
    /// `None` on 304 Not Modified.
    pub body: Option<Vec<u8>>,
    pub etag: Option<String>,
    /// GitLab's `X-Next-Page` (empty on the last page).
    pub next_page: Option<String>,
    /// Azure DevOps' `x-ms-continuationtoken` (absent on the last page).
    pub continuation: Option<String>,
}

pub struct Client {
    http: outbound::Client,
    token_file: Option<PathBuf>,
    /// (mtime, length, value) of the token last read.
    token: Option<(Option<SystemTime>, u64, String)>,
    limiter: DefaultDirectRateLimiter,
    pub requests: u64,
}

impl Client {
    /// `timeout`: the longest a request (body included) may take.
    pub fn new(
        token_file: Option<&Path>,
        ca_file: Option<&Path>,
        timeout: Duration,
    ) -> Result<Client, PollError> {
        let opts = outbound::Options {
            roots: ca_file.map_or(outbound::Roots::Bundled, |p| {
                outbound::Roots::File(p.to_path_buf())
            }),
            client_cert: None,
            connect_timeout: Duration::from_secs(10),
            timeout,
            // ureq's default, as before.
            redirects: 10,
            alias: None,
        };
        let http = outbound::Client::new(&opts).map_err(|e| match e {
            OutboundError::File { path, detail } => PollError::Ca { path, detail },
            e => PollError::Client(e.to_string()),
        })?;
        let quota =
            Quota::per_second(NonZeroU32::new(REQUESTS_PER_SECOND).unwrap_or(NonZeroU32::MIN))
                .allow_burst(NonZeroU32::new(BURST).unwrap_or(NonZeroU32::MIN));
        let mut c = Client {
            http,
            token_file: token_file.map(Path::to_path_buf),
            token: None,
            limiter: RateLimiter::direct(quota),
            requests: 0,
        };
        c.token()?;
        Ok(c)
    }

    /// The token, re-read when its file changed (rotated secrets).
    fn token(&mut self) -> Result<Option<String>, PollError> {
        let Some(path) = &self.token_file else {
            return Ok(None);
        };
        let err = |err| PollError::Token {
            path: path.clone(),
            err,
        };
        let meta = std::fs::metadata(path).map_err(err)?;
        let stamp = (meta.modified().ok(), meta.len());
        match &self.token {
            Some((m, l, t)) if (*m, *l) == stamp => Ok(Some(t.clone())),
            _ => {
                let t = std::fs::read_to_string(path)
                    .map_err(err)?
                    .trim()
                    .to_string();
                self.token = Some((stamp.0, stamp.1, t.clone()));
                Ok(Some(t))
            }
        }
    }

    /// Waits for the source's rate limit.
    fn pace(&self) {
        while let Err(not_until) = self.limiter.check() {
            std::thread::sleep(not_until.wait_time_from(DefaultClock::default().now()));
        }
    }

    /// Starts a GET (with `If-None-Match` when `etag` is known) and returns
    /// the response with errors sorted out; the body is not read yet.
    pub fn open(
        &mut self,
        url: &str,
        etag: Option<&str>,
    ) -> Result<ureq::http::Response<ureq::Body>, PollError> {
        self.pace();
        let token = self.token()?;
        let mut req = self.http.get(url).header("Accept", "application/json");
        if let Some(t) = token {
            // `user:apitoken` (Jenkins) is basic auth; anything else a bearer token.
            req = if t.contains(':') {
                use base64::Engine;
                let b = base64::engine::general_purpose::STANDARD.encode(t.as_bytes());
                req.header("Authorization", format!("Basic {b}"))
            } else {
                req.header("Authorization", format!("Bearer {t}"))
            };
        }
        if let Some(e) = etag {
            req = req.header("If-None-Match", e);
        }
        self.requests += 1;
        let resp = req.call().map_err(|e| PollError::Transport {
            url: url.to_string(),
            detail: e.to_string(),
        })?;
        let status = resp.status().as_u16();
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let exhausted = header("x-ratelimit-remaining").as_deref() == Some("0");
        match status {
            429 | 503 if header("retry-after").is_some() || status == 429 => {
                Err(PollError::RateLimited {
                    url: url.to_string(),
                    retry_after: retry_after(header("retry-after").as_deref()),
                })
            }
            // GitHub: 403 with the primary rate limit exhausted.
            403 if exhausted => Err(PollError::RateLimited {
                url: url.to_string(),
                retry_after: header("x-ratelimit-reset")
                    .and_then(|r| r.parse::<u64>().ok())
                    .and_then(|reset| {
                        let now = SystemTime::now()
                            .duration_since(SystemTime::UNIX_EPOCH)
                            .ok()?
                            .as_secs();
                        Some(Duration::from_secs(reset.saturating_sub(now).max(1)))
                    })
                    .unwrap_or(Duration::from_secs(60)),
            }),
            401 | 403 => Err(PollError::Unauthorized {
                url: url.to_string(),
                status,
            }),
            410 => Err(PollError::Gone {
                url: url.to_string(),
            }),
            200..=299 | 304 => Ok(resp),
            _ => Err(PollError::Status {
                url: url.to_string(),
                status,
            }),
        }
    }

    /// A GET whose whole body is read.
    pub fn get(&mut self, url: &str, etag: Option<&str>) -> Result<Fetched, PollError> {
        let resp = self.open(url, etag)?;
        let status = resp.status().as_u16();
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let new_etag = header("etag");
        let next_page = header("x-next-page");
        let continuation = header("x-ms-continuationtoken");
        if status == 304 {
            return Ok(Fetched {
                status,
                body: None,
                etag: new_etag.or_else(|| etag.map(str::to_string)),
                next_page: None,
                continuation: None,
            });
        }
        let mut resp = resp;
        let body = outbound::read_body(&mut resp, MAX_BODY).map_err(|e| match e {
            OutboundError::TooLarge { .. } => PollError::Decode {
                url: url.to_string(),
                detail: e.to_string(),
            },
            e => PollError::Transport {
                url: url.to_string(),
                detail: e.to_string(),
            },
        })?;
        Ok(Fetched {
            status,
            body: Some(body),
            etag: new_etag,
            next_page,
            continuation,
        })
    }
}

/// `Retry-After` in seconds (an HTTP date is rare from APIs: a minute).
fn retry_after(v: Option<&str>) -> Duration {
    match v.map(str::trim) {
        Some(s) => s
            .parse::<u64>()
            .map(Duration::from_secs)
            .unwrap_or(Duration::from_secs(60)),
        None => Duration::from_secs(60),
    }
}
