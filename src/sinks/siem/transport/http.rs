//! `http`: batches POSTed to `url` as NDJSON (one `json`-format event per
//! line, whatever `format` says: NDJSON is JSON), delivered when the
//! collector answers 2xx. HTTP/1.1 with keep-alive, written by hand: one
//! request shape, no redirects, no proxies.
//!
//! Authentication, one of:
//! - `token_file`: `Authorization: Bearer <token>` (Splunk HEC takes
//!   `Splunk <token>`; put a relay in front or use a token the collector
//!   accepts as bearer);
//! - `hmac_secret_file`: `X-Relstat-Signature: sha256=<hex HMAC-SHA256 of
//!   the body with the secret>` (GitHub's `X-Hub-Signature-256` scheme,
//!   under our own header name), which a relay's generic webhook checks.

use super::stream::Stream;
use super::tls::TlsConnector;
use super::{Msg, Transport, TransportError, connect_tcp};
use crate::config::SiemConfig;

/// The header carrying the body's HMAC-SHA256.
pub const SIGNATURE_HEADER: &str = "X-Relstat-Signature";

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

/// Opens HTTP connections to the collector.
pub struct HttpConnector {
    url: Url,
    tls: Option<TlsConnector>,
    auth: std::sync::Arc<Auth>,
}

impl HttpConnector {
    pub fn new(siem: &SiemConfig) -> Result<Self, TransportError> {
        let url = parse_url(siem.url.as_deref().unwrap_or_default())?;
        let tls = if url.https {
            Some(TlsConnector::new(siem, &url.address)?)
        } else {
            None
        };
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
            tls,
            auth: std::sync::Arc::new(auth),
        })
    }

    pub fn connect(&self) -> Result<HttpTransport, TransportError> {
        let stream = match &self.tls {
            Some(t) => t.connect(&self.url.address)?,
            None => Stream::plain(connect_tcp(&self.url.address)?),
        };
        Ok(HttpTransport {
            stream,
            url: self.url.clone(),
            auth: self.auth.clone(),
            last: None,
            body: Vec::new(),
        })
    }
}

pub struct HttpTransport {
    stream: Stream,
    url: Url,
    auth: std::sync::Arc<Auth>,
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

impl HttpTransport {
    /// Reads one response; returns its status. Errors when the connection
    /// cannot carry another request.
    fn read_response(&mut self) -> Result<u16, TransportError> {
        let mut buf = Vec::new();
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            if buf.len() > 64 * 1024 {
                return Err(TransportError::Http("response headers too long".into()));
            }
            self.stream.read_blocking(&mut buf)?;
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let status: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| TransportError::Http(format!("bad status line: {head:.80}")))?;
        let mut length: Option<usize> = None;
        let mut close = false;
        for line in head.lines().skip(1) {
            if let Some((k, v)) = line.split_once(':') {
                let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
                if k == "content-length" {
                    length = v.parse().ok();
                } else if k == "connection" && v.eq_ignore_ascii_case("close") {
                    close = true;
                } else if k == "transfer-encoding" {
                    close = true; // chunked: we don't parse it; this connection ends here
                }
            }
        }
        let want = head_end + length.unwrap_or(0);
        while length.is_some() && !close && buf.len() < want {
            self.stream.read_blocking(&mut buf)?;
        }
        if close || length.is_none() {
            // The status is known; the connection is not reusable.
            self.stream.close();
            return Ok(status | 0x8000);
        }
        Ok(status)
    }
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
        let mut req = format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: relstat/{}\r\n\
             Content-Type: application/x-ndjson\r\nContent-Length: {}\r\n",
            self.url.path,
            self.url.host,
            env!("CARGO_PKG_VERSION"),
            self.body.len()
        );
        match &*self.auth {
            Auth::None => {}
            Auth::Bearer(t) => req.push_str(&format!("Authorization: Bearer {t}\r\n")),
            Auth::Hmac(s) => req.push_str(&format!(
                "{SIGNATURE_HEADER}: sha256={}\r\n",
                sign(s, &self.body)
            )),
        }
        req.push_str("\r\n");
        let mut all = req.into_bytes();
        all.extend_from_slice(&self.body);
        self.stream.write_all(&all)?;
        let raw = self.read_response()?;
        let status = raw & 0x7fff;
        if !(200..300).contains(&status) {
            return Err(TransportError::Http(format!(
                "the collector answered {status} to a batch of {} events",
                msgs.len()
            )));
        }
        self.last = msgs.last().map(|m| m.seq);
        if raw & 0x8000 != 0 {
            // Delivered; the next batch needs a new connection.
            return Err(TransportError::Closed);
        }
        Ok(())
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

    fn close(&mut self) {
        self.stream.close();
    }
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
    }

    #[test]
    fn signature_matches_rfc4231_case_2() {
        assert_eq!(
            sign(b"Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
