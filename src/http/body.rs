//! Request bodies read within bounds: a limit per request (a webhook
//! source's `max_body`, [`MAX_API_BODY_BYTES`]), [`BODY_TIMEOUT`], and one
//! budget of bytes shared by every connection ([`BODY_BUDGET_BYTES`]).
//!
//! # Design
//!
//! - A body is read only when its handler asks ([`PendingBody::read`]), after
//!   it has found its route and checked what the headers tell: an unknown
//!   hook or a bad token is answered without reading a byte (hyper then
//!   closes the connection rather than drain the rest).
//! - A `Content-Length` over the limit is refused before reading; a body
//!   without one (chunked) is read frame by frame and refused as soon as it
//!   passes the limit. Nothing past the limit is buffered.
//! - The buffer grows by doubling (up to the declared length when there is
//!   one), and every growth is reserved from the shared budget first, so the
//!   bodies in memory across all connections never pass the budget: N
//!   connections cannot hold N times the limit. A body that finds the budget
//!   spent is answered 503 with `Retry-After`. A reservation is given back
//!   when its [`ReadBody`] is dropped, i.e. when the handler is done.

use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http_body_util::BodyExt;
use hyper::body::{Body as _, Bytes, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{HeaderMap, Response, StatusCode};

use super::{Body, text};

/// Bytes of request bodies held in memory at once, across all connections.
pub const BODY_BUDGET_BYTES: usize = 64 * 1024 * 1024;
/// The largest body any handler may ask for (GitHub caps webhook payloads at
/// 25 MB; others send far less). A webhook source's `max_body` is at most
/// this.
pub const MAX_BODY_BYTES: usize = 25 * 1024 * 1024;
/// `/api/v1` serves GET and HEAD only: a body there is read (and ignored)
/// up to this.
pub const MAX_API_BODY_BYTES: usize = 64 * 1024;
/// A body must arrive in full within this.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// `Retry-After` (seconds) of a 503 for a spent budget.
pub const BUSY_RETRY_AFTER: &str = "1";

/// Why a body was not read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BodyError {
    #[error("request body over {limit} bytes")]
    TooLarge { limit: usize },
    #[error("too many request bodies in flight; retry later")]
    Busy,
    #[error("request body not received within {}s", BODY_TIMEOUT.as_secs())]
    Timeout,
    #[error("cannot read the request body")]
    Broken,
}

impl BodyError {
    pub fn status(&self) -> StatusCode {
        match self {
            BodyError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            BodyError::Busy => StatusCode::SERVICE_UNAVAILABLE,
            BodyError::Timeout => StatusCode::REQUEST_TIMEOUT,
            BodyError::Broken => StatusCode::BAD_REQUEST,
        }
    }

    /// The answer, `text/plain`: the message, or `message` when given;
    /// `Retry-After` on a 503.
    pub fn response(&self, message: Option<&str>) -> Response<Body> {
        let message = message.map_or_else(|| self.to_string(), str::to_string);
        let mut r = text(self.status(), format!("{message}\n"));
        if *self == BodyError::Busy {
            r.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from_static(BUSY_RETRY_AFTER),
            );
        }
        r
    }
}

/// The bytes of request bodies in memory, across all connections.
#[derive(Debug)]
pub struct BodyBudget {
    cap: usize,
    used: AtomicUsize,
}

impl BodyBudget {
    pub fn new(cap: usize) -> Arc<BodyBudget> {
        Arc::new(BodyBudget {
            cap,
            used: AtomicUsize::new(0),
        })
    }

    /// Bytes reserved now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    fn take(&self, n: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(n).filter(|&total| total <= self.cap)
            })
            .is_ok()
    }

    fn give(&self, n: usize) {
        self.used.fetch_sub(n, Ordering::AcqRel);
    }
}

/// Bytes reserved from a [`BodyBudget`], given back on drop.
#[derive(Debug)]
struct Reservation {
    budget: Arc<BodyBudget>,
    bytes: usize,
}

impl Reservation {
    /// Grows the reservation to `n` bytes; false when the budget is spent.
    fn grow_to(&mut self, n: usize) -> bool {
        if n <= self.bytes {
            return true;
        }
        if !self.budget.take(n - self.bytes) {
            return false;
        }
        self.bytes = n;
        true
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.give(self.bytes);
    }
}

/// A body read in full, holding its share of the budget until dropped.
#[derive(Debug)]
pub struct ReadBody {
    bytes: Bytes,
    _held: Reservation,
}

impl ReadBody {
    /// The body (a cheap, shared handle; the budget is held by `self`).
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }
}

/// A request body not read yet.
pub struct PendingBody {
    body: Incoming,
    declared: Option<u64>,
    budget: Arc<BodyBudget>,
}

impl PendingBody {
    pub(super) fn new(body: Incoming, headers: &HeaderMap, budget: Arc<BodyBudget>) -> Self {
        PendingBody {
            body,
            declared: declared_length(headers),
            budget,
        }
    }

    /// The request's `Content-Length`, when it has one.
    pub fn declared_len(&self) -> Option<u64> {
        self.declared
    }

    /// Reads the body, at most `limit` bytes (and at most
    /// [`MAX_BODY_BYTES`]) within [`BODY_TIMEOUT`], reserving what it
    /// buffers from the shared budget.
    pub async fn read(self, limit: usize) -> Result<ReadBody, BodyError> {
        let limit = limit.min(MAX_BODY_BYTES);
        read_limited(self.body, self.declared, limit, &self.budget, BODY_TIMEOUT).await
    }
}

fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
}

/// The first buffer of a body without a declared length.
const FIRST_CHUNK: usize = 16 * 1024;

/// Reads `body` into one buffer of at most `limit` bytes; see the module
/// doc.
pub(super) async fn read_limited<B>(
    body: B,
    declared: Option<u64>,
    limit: usize,
    budget: &Arc<BodyBudget>,
    timeout: Duration,
) -> Result<ReadBody, BodyError>
where
    B: hyper::body::Body<Data = Bytes>,
{
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(BodyError::TooLarge { limit });
    }
    // What the buffer may grow to: the declared length, else the limit.
    let ceiling = declared.map_or(limit, |n| n as usize);
    let mut held = Reservation {
        budget: Arc::clone(budget),
        bytes: 0,
    };
    let mut buf: Vec<u8> = Vec::new();
    let reading = async {
        let mut body = pin!(body);
        if body.is_end_stream() {
            return Ok(());
        }
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|_| BodyError::Broken)?;
            let Ok(data) = frame.into_data() else {
                continue; // trailers
            };
            let need = buf.len() + data.len();
            if need > limit {
                return Err(BodyError::TooLarge { limit });
            }
            if need > buf.capacity() {
                let want = need
                    .max(buf.capacity().saturating_mul(2))
                    .max(FIRST_CHUNK)
                    .min(ceiling.max(need));
                if !held.grow_to(want) {
                    return Err(BodyError::Busy);
                }
                buf.reserve_exact(want - buf.len());
            }
            buf.extend_from_slice(&data);
        }
        Ok(())
    };
    match tokio::time::timeout(timeout, reading).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e),
        Err(_) => return Err(BodyError::Timeout),
    }
    // The reservation covers the capacity, which `Bytes` keeps.
    held.grow_to(buf.capacity());
    Ok(ReadBody {
        bytes: Bytes::from(buf),
        _held: held,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use hyper::body::Frame;

    use super::*;

    /// A body of these frames, then its end (or, with `stall`, no end).
    struct Frames {
        frames: VecDeque<Bytes>,
        stall: bool,
    }

    impl hyper::body::Body for Frames {
        type Data = Bytes;
        type Error = std::convert::Infallible;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            match self.frames.pop_front() {
                Some(b) => Poll::Ready(Some(Ok(Frame::data(b)))),
                None if self.stall => Poll::Pending,
                None => Poll::Ready(None),
            }
        }
    }

    fn frames(sizes: &[usize]) -> Frames {
        Frames {
            frames: sizes.iter().map(|n| Bytes::from(vec![b'x'; *n])).collect(),
            stall: false,
        }
    }

    const T: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn reads_within_the_limit_and_gives_the_budget_back() {
        let budget = BodyBudget::new(1 << 20);
        let read = read_limited(frames(&[10, 20, 30]), None, 100, &budget, T)
            .await
            .unwrap();
        assert_eq!(read.bytes().len(), 60);
        assert!(
            budget.used() >= 60 && budget.used() <= 100,
            "{}",
            budget.used()
        );
        drop(read);
        assert_eq!(budget.used(), 0);
        // Exactly the limit, declared.
        let read = read_limited(frames(&[50, 50]), Some(100), 100, &budget, T)
            .await
            .unwrap();
        assert_eq!((read.bytes().len(), budget.used()), (100, 100));
    }

    #[tokio::test]
    async fn over_the_limit_declared_or_streamed_is_refused() {
        let budget = BodyBudget::new(1 << 20);
        // Declared: refused before the first frame is polled (a stalled body
        // would otherwise time out).
        let stalled = Frames {
            frames: VecDeque::new(),
            stall: true,
        };
        let e = read_limited(stalled, Some(101), 100, &budget, T).await;
        assert_eq!(e.unwrap_err(), BodyError::TooLarge { limit: 100 });
        // Streamed: refused at the frame that passes the limit; the rest
        // (stalled here) is never waited for.
        let mut body = frames(&[60, 41]);
        body.stall = true;
        let e = read_limited(body, None, 100, &budget, T).await;
        assert_eq!(e.unwrap_err(), BodyError::TooLarge { limit: 100 });
        assert_eq!(budget.used(), 0);
    }

    #[tokio::test]
    async fn a_spent_budget_answers_busy_and_a_stalled_body_times_out() {
        let budget = BodyBudget::new(64 * 1024);
        let held = read_limited(frames(&[40 * 1024]), None, 1 << 20, &budget, T)
            .await
            .unwrap();
        let e = read_limited(frames(&[40 * 1024]), None, 1 << 20, &budget, T).await;
        assert_eq!(e.unwrap_err(), BodyError::Busy);
        let r = BodyError::Busy.response(None);
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.headers()[header::RETRY_AFTER], BUSY_RETRY_AFTER);
        drop(held);
        assert_eq!(budget.used(), 0);
        read_limited(frames(&[40 * 1024]), None, 1 << 20, &budget, T)
            .await
            .unwrap();

        let mut body = frames(&[10]);
        body.stall = true;
        let e = read_limited(body, None, 100, &budget, Duration::from_millis(50)).await;
        assert_eq!(e.unwrap_err(), BodyError::Timeout);
        assert_eq!(budget.used(), 0);
    }
}
