//! `http`: batches POSTed to `url` as NDJSON (one `json`-format event per
//! line, whatever `format` says: NDJSON is JSON), through the shared
//! outbound client ([`crate::outbound`]): keep-alive, chunked or
//! length-delimited answers, proxies from the environment, `ca_file` and a
//! client certificate, no redirects.
//!
//! The answer decides ([`classify`]): 2xx delivered; 408, 429 and 5xx (and
//! no answer at all) transient, the batch resent after a back-off (at least
//! `Retry-After` on 429 and 503); any other status a refusal
//! ([`TransportError::Refused`]): the batch stays in the outbox, counted
//! `refused`, the receiver's status and the head of its body logged, and the
//! forwarder backs off before offering it again.
//!
//! Authentication, one of:
//! - `token_file`: `Authorization: Bearer <token>` (Splunk HEC takes
//!   `Splunk <token>`; put a relay in front or use a token the collector
//!   accepts as bearer);
//! - `hmac_secret_file`: `X-Relstat-Signature-256: sha256=<hex HMAC-SHA256
//!   of the body with the secret>` (GitHub's `X-Hub-Signature-256` scheme,
//!   under our own header name), which a relay's generic webhook checks; the
//!   same value in `X-Relstat-Signature`, the name sent before.

use std::sync::Arc;
use std::time::Duration;

use super::{IO_TIMEOUT, Msg, Transport, TransportError};
use crate::config::SiemConfig;
use crate::outbound::{self, Options, Roots};

/// The header carrying the body's HMAC-SHA256, as a relay's webhook reads it.
pub const SIGNATURE_HEADER: &str = "X-Relstat-Signature-256";
/// The same, under the name sent before (collectors set up for it).
pub const SIGNATURE_HEADER_OLD: &str = "X-Relstat-Signature";
/// The longest one request (sending the batch, reading the answer) may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Bytes of a 2xx answer read (and discarded) so the connection is reused;
/// past it the connection is closed instead.
const MAX_ANSWER: u64 = 64 * 1024;
/// Bytes of a refusal's body kept for the log.
pub const ANSWER_HEAD: u64 = 512;
/// Longest `Retry-After` honoured.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    pub https: bool,
    /// host:port to connect to.
    pub address: String,
    /// Host header value.
    pub host: String,
    pub path: String,
}

pub fn parse_url(u: &str) -> Result<Url, TransportError> {
    let (https, rest) = if let Some(r) = u.strip_prefix("https://") {
        (true, r)
    } else if let Some(r) = u.strip_prefix("http://") {
        (false, r)
    } else {
        return Err(TransportError::Config(format!(
            "url {u:?} is not http(s)://"
        )));
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return Err(TransportError::Config(format!("url {u:?} has no host")));
    }
    let has_port = authority.rsplit_once(':').is_some_and(|(h, p)| {
        !h.ends_with(':') && p.chars().all(|c| c.is_ascii_digit()) && !p.is_empty()
    }) && !authority.ends_with(']');
    let address = if has_port {
        authority.to_string()
    } else {
        format!("{authority}:{}", if https { 443 } else { 80 })
    };
    Ok(Url {
        https,
        address,
        host: authority.to_string(),
        path: path.to_string(),
    })
}

enum Auth {
    None,
    Bearer(String),
    Hmac(Vec<u8>),
}

/// What an answer's status means for the batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    Delivered,
    /// Worth offering again after a back-off.
    Transient,
    /// The receiver will not take it as it is.
    Refused,
}

pub fn classify(status: u16) -> Answer {
    match status {
        200..=299 => Answer::Delivered,
        408 | 429 | 500..=599 => Answer::Transient,
        _ => Answer::Refused,
    }
}

/// `Retry-After` as seconds (an HTTP date is rare from collectors: ignored),
/// capped at [`MAX_RETRY_AFTER`].
pub fn retry_after(v: Option<&str>) -> Option<Duration> {
    v?.trim()
        .parse::<u64>()
        .ok()
        .map(|s| Duration::from_secs(s).min(MAX_RETRY_AFTER))
}

/// Builds the collector's client once; every connection shares it (and its
/// kept-alive connections).
pub struct HttpConnector {
    /// What is requested (with `server_name` as its host when set).
    url: String,
    /// `url` as configured, for messages.
    shown: Arc<str>,
    client: Arc<outbound::Client>,
    auth: Arc<Auth>,
}

impl HttpConnector {
    pub fn new(siem: &SiemConfig) -> Result<Self, TransportError> {
        let raw = siem.url.as_deref().unwrap_or_default();
        let parsed = parse_url(raw)?;
        let mut url = raw.to_string();
        let mut alias = None;
        if let (true, Some(name)) = (parsed.https, &siem.server_name) {
            // Connect to the URL's host, present and verify `server_name`.
            url = format!(
                "https://{}{}",
                with_port(name, &parsed.address),
                parsed.path
            );
            alias = Some((name.clone(), parsed.address.clone()));
        }
        let opts = Options {
            roots: match &siem.ca_file {
                Some(p) => Roots::File(p.clone()),
                None => Roots::System,
            },
            client_cert: siem
                .client_cert_file
                .clone()
                .zip(siem.client_key_file.clone()),
            connect_timeout: IO_TIMEOUT,
            timeout: REQUEST_TIMEOUT,
            redirects: 0,
            alias,
        };
        let client = outbound::Client::new(&opts).map_err(|e| match e {
            outbound::OutboundError::File { path, detail } => TransportError::File { path, detail },
            e => TransportError::Config(e.to_string()),
        })?;
        let read = |p: &std::path::Path| {
            std::fs::read(p).map_err(|e| TransportError::File {
                path: p.to_path_buf(),
                detail: e.to_string(),
            })
        };
        let auth = if let Some(p) = &siem.token_file {
            Auth::Bearer(String::from_utf8_lossy(&read(p)?).trim().to_string())
        } else if let Some(p) = &siem.hmac_secret_file {
            let mut s = read(p)?;
            while s.last().is_some_and(|c| c.is_ascii_whitespace()) {
                s.pop();
            }
            Auth::Hmac(s)
        } else {
            Auth::None
        };
        Ok(Self {
            url,
            shown: raw.into(),
            client: Arc::new(client),
            auth: Arc::new(auth),
        })
    }

    /// A session on the shared client: no I/O until the first batch.
    pub fn connect(&self) -> Result<HttpTransport, TransportError> {
        Ok(HttpTransport {
            url: self.url.clone(),
            shown: self.shown.clone(),
            client: self.client.clone(),
            auth: self.auth.clone(),
            last: None,
            body: Vec::new(),
        })
    }
}

/// `name` with the port of `address` (`host:port`).
fn with_port(name: &str, address: &str) -> String {
    let port = address.rsplit_once(':').map_or("443", |(_, p)| p);
    if name.contains(':') && !name.starts_with('[') {
        format!("[{name}]:{port}")
    } else {
        format!("{name}:{port}")
    }
}

pub struct HttpTransport {
    url: String,
    shown: Arc<str>,
    client: Arc<outbound::Client>,
    auth: Arc<Auth>,
    last: Option<u64>,
    body: Vec<u8>,
}

/// Lower-case hex of the HMAC-SHA256 of `body`.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    use hmac::{KeyInit, Mac};
    let mut mac =
        hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(body);
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Transport for HttpTransport {
    fn send(&mut self, msgs: &[Msg<'_>]) -> Result<(), TransportError> {
        if msgs.is_empty() {
            return Ok(());
        }
        self.body.clear();
        for m in msgs {
            self.body.extend_from_slice(m.bytes);
            self.body.push(b'\n');
        }
        let mut req = self
            .client
            .post(&self.url)
            .header("Content-Type", "application/x-ndjson");
        match &*self.auth {
            Auth::None => {}
            Auth::Bearer(t) => req = req.header("Authorization", format!("Bearer {t}")),
            Auth::Hmac(s) => {
                let sig = format!("sha256={}", sign(s, &self.body));
                req = req
                    .header(SIGNATURE_HEADER, &sig)
                    .header(SIGNATURE_HEADER_OLD, sig)
            }
        }
        let mut resp = req
            .send(&self.body[..])
            .map_err(|e| TransportError::Http(format!("POST {}: {e}", self.shown)))?;
        let status = resp.status().as_u16();
        match classify(status) {
            Answer::Delivered => {
                self.last = msgs.last().map(|m| m.seq);
                // Read the answer so the connection is reused; a long or
                // broken one only costs the connection.
                let _ = outbound::read_body(&mut resp, MAX_ANSWER);
                Ok(())
            }
            answer => {
                let header = |name: &str| {
                    resp.headers()
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string)
                };
                let wait = match status {
                    429 | 503 => retry_after(header("retry-after").as_deref()),
                    _ => None,
                };
                let body = outbound::body_head(&mut resp, ANSWER_HEAD);
                Err(if answer == Answer::Refused {
                    TransportError::Refused {
                        status,
                        body,
                        events: msgs.len(),
                    }
                } else {
                    TransportError::Unavailable {
                        status,
                        body,
                        retry_after: wait,
                    }
                })
            }
        }
    }

    fn delivered(&mut self) -> Result<Option<u64>, TransportError> {
        Ok(self.last)
    }

    fn known_delivered(&self) -> Option<u64> {
        self.last
    }

    fn pending(&self) -> usize {
        0
    }

    fn close(&mut self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = parse_url("https://relay.example:9731/hooks/site-a").unwrap();
        assert_eq!(u.address, "relay.example:9731");
        assert_eq!(u.path, "/hooks/site-a");
        assert!(u.https);
        let u = parse_url("http://127.0.0.1").unwrap();
        assert_eq!((u.address.as_str(), u.path.as_str()), ("127.0.0.1:80", "/"));
        assert!(parse_url("ftp://x").is_err());
        assert_eq!(with_port("localhost", "127.0.0.1:9731"), "localhost:9731");
        assert_eq!(with_port("::1", "[::1]:443"), "[::1]:443");
    }

    #[test]
    fn answers() {
        for (status, want) in [
            (200, Answer::Delivered),
            (204, Answer::Delivered),
            (408, Answer::Transient),
            (429, Answer::Transient),
            (500, Answer::Transient),
            (503, Answer::Transient),
            (400, Answer::Refused),
            (401, Answer::Refused),
            (404, Answer::Refused),
            (413, Answer::Refused),
            (301, Answer::Refused),
        ] {
            assert_eq!(classify(status), want, "{status}");
        }
        assert_eq!(retry_after(Some(" 7 ")), Some(Duration::from_secs(7)));
        assert_eq!(retry_after(Some("99999")), Some(MAX_RETRY_AFTER));
        assert_eq!(retry_after(Some("Wed, 21 Oct 2015 07:28:00 GMT")), None);
        assert_eq!(retry_after(None), None);
    }

    #[test]
    fn signature_matches_rfc4231_case_2() {
        assert_eq!(
            sign(b"Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
