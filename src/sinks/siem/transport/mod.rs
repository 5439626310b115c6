//! SIEM transports: how formatted messages reach the receiver, and when a
//! message counts as delivered (the forwarder removes it from the outbox only
//! then).
//!
//! Blocking I/O on the forwarder's own thread: one connection at a time, and
//! the acknowledgement logic (RELP's pipelined `rsp`, the grace rule of the
//! stream transports) reads naturally as a loop.
//!
//! | transport | framing | delivered when |
//! |---|---|---|
//! | `tls`, `tcp` | RFC 5425 / RFC 6587 octet counting | the connection survived [`stream::GRACE`] after the bytes left our socket's send queue (see [`stream`]) |
//! | `relp` | RELP `syslog` frames | the server answered `rsp 200` |
//! | `udp` | one RFC 5426 datagram per message | sent (best effort) |
//! | `http` | NDJSON body, one POST per batch (at most `max_batch_bytes`) | the collector answered 2xx |

pub mod http;
pub mod relp;
pub mod stream;
pub mod tls;
pub mod udp;

use std::path::PathBuf;
use std::time::Duration;

/// How long a connect, a handshake or one write may take.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("cannot resolve {0}")]
    Resolve(String),
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        source: std::io::Error,
    },
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
    #[error("cannot read {path}: {detail}")]
    File { path: PathBuf, detail: String },
    #[error("{0}")]
    Config(String),
    #[error("the receiver closed the connection")]
    Closed,
    #[error("RELP: {0}")]
    Relp(String),
    #[error("HTTP: {0}")]
    Http(String),
    /// The receiver answered that it will not take the batch (an HTTP 4xx
    /// other than 408 and 429, or a 3xx): offered again only after a
    /// back-off, never dropped.
    #[error(
        "the collector refused a batch of {events} events: HTTP {status}{}",
        answer_text(body)
    )]
    Refused {
        status: u16,
        body: String,
        events: usize,
    },
    /// The receiver cannot take it now (HTTP 408, 429, 5xx).
    #[error("the collector answered HTTP {status}{}", answer_text(body))]
    Unavailable {
        status: u16,
        body: String,
        retry_after: Option<Duration>,
    },
}

fn answer_text(body: &str) -> String {
    if body.is_empty() {
        String::new()
    } else {
        format!(": {body:?}")
    }
}

impl TransportError {
    pub(crate) fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> Self {
        move |source| TransportError::Io { what, source }
    }
}

/// One formatted message with its outbox sequence number.
pub struct Msg<'a> {
    pub seq: u64,
    pub bytes: &'a [u8],
}

/// An open connection to the SIEM.
pub trait Transport: Send {
    /// Sends `msgs` in order. An error means the connection is gone: the
    /// forwarder reconnects and resends everything not yet delivered.
    fn send(&mut self, msgs: &[Msg<'_>]) -> Result<(), TransportError>;

    /// The highest sequence number known delivered so far (every smaller
    /// one sent on this connection is delivered too). Never blocks long.
    fn delivered(&mut self) -> Result<Option<u64>, TransportError>;

    /// Waits up to `max` for everything sent to be delivered; returns the
    /// highest delivered sequence number.
    fn drain(&mut self, max: Duration) -> Result<Option<u64>, TransportError> {
        let deadline = std::time::Instant::now() + max;
        loop {
            let d = self.delivered()?;
            if self.pending() == 0 || std::time::Instant::now() >= deadline {
                return Ok(d);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Messages sent but not known delivered.
    fn pending(&self) -> usize;

    /// What [`Transport::delivered`] last established, without I/O (after
    /// an error, so what was delivered before it is not resent).
    fn known_delivered(&self) -> Option<u64>;

    /// Messages that did not fit and were cut (UDP), since the last call.
    fn take_truncated(&mut self) -> u64 {
        0
    }

    /// Closes the connection politely (TLS close_notify, RELP close).
    fn close(&mut self);
}

/// Resolves `host:port` to its first address.
pub(crate) fn resolve(address: &str) -> Result<std::net::SocketAddr, TransportError> {
    use std::net::ToSocketAddrs;
    address
        .to_socket_addrs()
        .map_err(|e| TransportError::Resolve(format!("{address}: {e}")))?
        .next()
        .ok_or_else(|| TransportError::Resolve(address.to_string()))
}

/// The host part of `host:port` (brackets of an IPv6 literal removed).
pub(crate) fn host_of(address: &str) -> &str {
    let host = address.rsplit_once(':').map_or(address, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

pub(crate) fn connect_tcp(address: &str) -> Result<std::net::TcpStream, TransportError> {
    let addr = resolve(address)?;
    let s = std::net::TcpStream::connect_timeout(&addr, IO_TIMEOUT)
        .map_err(TransportError::io("connect"))?;
    s.set_nodelay(true).map_err(TransportError::io("connect"))?;
    s.set_write_timeout(Some(IO_TIMEOUT))
        .map_err(TransportError::io("connect"))?;
    s.set_read_timeout(Some(IO_TIMEOUT))
        .map_err(TransportError::io("connect"))?;
    Ok(s)
}
