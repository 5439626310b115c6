//! The listener's connection slots: who gets one, whose slot a newcomer may
//! take, and what is kept for probes, so that clients holding connections
//! open cannot starve `/healthz`, `/readyz` and `/metrics`.
//!
//! # Policy
//!
//! - At most [`MAX_CONNECTIONS`] connections are open, at most
//!   `max_connections_per_peer` of them from one client address; a
//!   connection over the per-peer limit is closed as it is accepted.
//! - A connection is *waiting* while it has no request in progress: TLS
//!   handshake, request head not complete yet (a slowloris client trickling
//!   its headers stays here), or idle between keep-alive requests. When all
//!   slots are taken, a new connection takes the slot of the one that has
//!   been waiting longest, which is closed. A client that sends its request
//!   at once (a probe, a scrape) is served before its turn to be closed
//!   comes; one that dawdles is the first to go.
//! - Requests other than the probes and `/metrics` (`/api`, `/hooks`: they
//!   read bodies and wait on the store) may hold at most
//!   `MAX_CONNECTIONS - RESERVED_FOR_PROBES` slots; beyond that they are
//!   answered 503. So slow uploads cannot leave a probe without a slot to
//!   take: the reserved ones are always free, waiting or probing.
//! - When every slot is busy with a request, a new connection is closed.
//!
//! Every refusal is counted in [`ConnStats`], which the runtime shows as
//! `relstat_http_refused_total{reason}`.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

/// Open connections at most.
pub const MAX_CONNECTIONS: usize = 512;
/// Slots that only `/healthz`, `/readyz` and `/metrics` requests may be busy
/// in (the others answer 503 when the rest are busy).
pub const RESERVED_FOR_PROBES: usize = 32;

/// Why the listener turned a client away, as the `reason` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A connection over `[http] max_connections_per_peer`, closed at accept.
    PerPeerLimit,
    /// A connection arriving while every slot was busy with a request.
    Full,
    /// A waiting connection closed to give its slot to a new one.
    Evicted,
    /// A request to `/api` or `/hooks` answered 503: the free slots are
    /// kept for probes.
    Busy,
}

impl Refusal {
    pub const ALL: [Refusal; 4] = [
        Refusal::PerPeerLimit,
        Refusal::Full,
        Refusal::Evicted,
        Refusal::Busy,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::PerPeerLimit => "per_peer_limit",
            Refusal::Full => "full",
            Refusal::Evicted => "evicted",
            Refusal::Busy => "busy",
        }
    }
}

/// The listener's counters, shared with the runtime's `/metrics`.
#[derive(Debug, Default)]
pub struct ConnStats {
    open: AtomicU64,
    refused: [AtomicU64; 4],
}

impl ConnStats {
    /// Connections open now.
    pub fn open(&self) -> u64 {
        self.open.load(Ordering::Relaxed)
    }

    /// Clients turned away for `reason` since the start.
    pub fn refused(&self, reason: Refusal) -> u64 {
        self.refused[reason as usize].load(Ordering::Relaxed)
    }

    fn count(&self, reason: Refusal) {
        self.refused[reason as usize].fetch_add(1, Ordering::Relaxed);
    }
}

/// The table of open connections.
pub(super) struct Slots {
    inner: Mutex<Inner>,
    per_peer: usize,
    stats: Arc<ConnStats>,
}

#[derive(Default)]
struct Inner {
    conns: HashMap<u64, Conn>,
    peers: HashMap<IpAddr, usize>,
    /// Waiting connections by when they started waiting (a sequence
    /// number), oldest first: whose slot a newcomer takes.
    waiting: BTreeMap<u64, u64>,
    /// Connections with an `/api` or `/hooks` request in progress.
    busy_other: usize,
    next: u64,
}

struct Conn {
    peer: IpAddr,
    /// The key in `waiting`, while waiting.
    waiting_since: Option<u64>,
    close: Arc<Notify>,
}

impl Inner {
    fn seq(&mut self) -> u64 {
        self.next += 1;
        self.next
    }

    /// Forgets a connection; false when it was already gone (evicted).
    fn remove(&mut self, id: u64) -> bool {
        let Some(c) = self.conns.remove(&id) else {
            return false;
        };
        if let Some(seq) = c.waiting_since {
            self.waiting.remove(&seq);
        }
        if let Some(n) = self.peers.get_mut(&c.peer) {
            *n -= 1;
            if *n == 0 {
                self.peers.remove(&c.peer);
            }
        }
        true
    }
}

impl Slots {
    pub(super) fn new(per_peer: usize, stats: Arc<ConnStats>) -> Arc<Slots> {
        Arc::new(Slots {
            inner: Mutex::new(Inner::default()),
            per_peer: per_peer.max(1),
            stats,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A slot for a connection just accepted from `peer`, or why not (counted).
    pub(super) fn admit(self: &Arc<Self>, peer: IpAddr) -> Result<Slot, Refusal> {
        let peer = peer.to_canonical();
        let mut inner = self.lock();
        if inner.peers.get(&peer).copied().unwrap_or(0) >= self.per_peer {
            drop(inner);
            self.stats.count(Refusal::PerPeerLimit);
            return Err(Refusal::PerPeerLimit);
        }
        if inner.conns.len() >= MAX_CONNECTIONS {
            let Some((_, victim)) = inner.waiting.pop_first() else {
                drop(inner);
                self.stats.count(Refusal::Full);
                return Err(Refusal::Full);
            };
            if let Some(c) = inner.conns.get_mut(&victim) {
                c.waiting_since = None;
                c.close.notify_one();
            }
            inner.remove(victim);
            self.stats.count(Refusal::Evicted);
        }
        let (id, since) = (inner.seq(), inner.seq());
        let close = Arc::new(Notify::new());
        inner.conns.insert(
            id,
            Conn {
                peer,
                waiting_since: Some(since),
                close: close.clone(),
            },
        );
        inner.waiting.insert(since, id);
        *inner.peers.entry(peer).or_default() += 1;
        self.stats
            .open
            .store(inner.conns.len() as u64, Ordering::Relaxed);
        Ok(Slot {
            slots: self.clone(),
            id,
            close,
        })
    }
}

/// One connection's slot; dropping it frees the slot.
pub(super) struct Slot {
    slots: Arc<Slots>,
    id: u64,
    close: Arc<Notify>,
}

impl Slot {
    /// Resolves when the slot was given to a newer connection: close this one.
    pub(super) async fn evicted(&self) {
        self.close.notified().await;
    }

    /// A request's head arrived: the connection is no longer waiting, so it
    /// keeps its slot until the answer is ready. `None` when the request is
    /// no probe and the slots left are kept for probes (answer 503).
    pub(super) fn request(self: &Arc<Self>, probe: bool) -> Option<Request> {
        let mut inner = self.slots.lock();
        if !probe {
            if inner.busy_other >= MAX_CONNECTIONS - RESERVED_FOR_PROBES {
                drop(inner);
                self.slots.stats.count(Refusal::Busy);
                return None;
            }
            inner.busy_other += 1;
        }
        if let Some(c) = inner.conns.get_mut(&self.id)
            && let Some(seq) = c.waiting_since.take()
        {
            inner.waiting.remove(&seq);
        }
        Some(Request {
            slot: self.clone(),
            probe,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut inner = self.slots.lock();
        inner.remove(self.id);
        self.slots
            .stats
            .open
            .store(inner.conns.len() as u64, Ordering::Relaxed);
    }
}

/// A request in progress; dropping it (the answer is ready, or the request
/// was abandoned) makes the connection waiting again.
pub(super) struct Request {
    slot: Arc<Slot>,
    probe: bool,
}

impl Drop for Request {
    fn drop(&mut self) {
        let mut inner = self.slot.slots.lock();
        if !self.probe {
            inner.busy_other -= 1;
        }
        let seq = inner.seq();
        let Some(c) = inner.conns.get_mut(&self.slot.id) else {
            return;
        };
        if c.waiting_since.is_none() {
            c.waiting_since = Some(seq);
            inner.waiting.insert(seq, self.slot.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn fill(slots: &Arc<Slots>, n: usize) -> Vec<Slot> {
        (0..n)
            .map(|i| {
                let addr = IpAddr::from([10, 0, (i / 250) as u8, (i % 250) as u8]);
                slots.admit(addr).unwrap()
            })
            .collect()
    }

    #[test]
    fn one_address_holds_at_most_its_share() {
        let stats = Arc::new(ConnStats::default());
        let slots = Slots::new(2, stats.clone());
        let a = slots.admit(ip("127.0.0.2")).unwrap();
        let _b = slots.admit(ip("127.0.0.2")).unwrap();
        assert_eq!(
            slots.admit(ip("127.0.0.2")).err(),
            Some(Refusal::PerPeerLimit)
        );
        // An IPv4-mapped IPv6 address is the same client.
        assert!(slots.admit(ip("::ffff:127.0.0.2")).is_err());
        assert!(slots.admit(ip("127.0.0.3")).is_ok());
        drop(a);
        assert!(slots.admit(ip("127.0.0.2")).is_ok());
        assert_eq!(stats.refused(Refusal::PerPeerLimit), 2);
    }

    #[test]
    fn a_newcomer_takes_the_slot_waiting_longest() {
        let stats = Arc::new(ConnStats::default());
        let slots = Slots::new(64, stats.clone());
        let held: Vec<Arc<Slot>> = fill(&slots, MAX_CONNECTIONS)
            .into_iter()
            .map(Arc::new)
            .collect();
        // The oldest is busy with a request: the second oldest goes.
        let _req = held[0].request(true).unwrap();
        let _new = slots.admit(ip("127.0.0.200")).unwrap();
        assert_eq!(stats.refused(Refusal::Evicted), 1);
        assert_eq!(stats.open(), MAX_CONNECTIONS as u64);
        let evicted = |s: &Slot| futures_ready(s.evicted());
        assert!(!evicted(&held[0]));
        assert!(evicted(&held[1]));
        assert!(!evicted(&held[2]));
    }

    #[test]
    fn probes_keep_slots_that_api_and_hooks_cannot_fill() {
        let stats = Arc::new(ConnStats::default());
        let slots = Slots::new(64, stats.clone());
        let held: Vec<Arc<Slot>> = fill(&slots, MAX_CONNECTIONS)
            .into_iter()
            .map(Arc::new)
            .collect();
        let limit = MAX_CONNECTIONS - RESERVED_FOR_PROBES;
        let reqs: Vec<Request> = held[..limit]
            .iter()
            .map(|s| s.request(false).unwrap())
            .collect();
        assert!(held[limit].request(false).is_none());
        assert_eq!(stats.refused(Refusal::Busy), 1);
        // A probe still finds a slot: the reserved ones are waiting.
        let probe = Arc::new(slots.admit(ip("127.0.0.200")).unwrap());
        let _p = probe.request(true).unwrap();
        drop(reqs);
        assert!(held[limit].request(false).is_some());
    }

    #[test]
    fn a_full_table_of_requests_refuses_newcomers() {
        let stats = Arc::new(ConnStats::default());
        let slots = Slots::new(64, stats.clone());
        let held: Vec<Arc<Slot>> = fill(&slots, MAX_CONNECTIONS)
            .into_iter()
            .map(Arc::new)
            .collect();
        let _reqs: Vec<Request> = held.iter().map(|s| s.request(true).unwrap()).collect();
        assert_eq!(slots.admit(ip("127.0.0.200")).err(), Some(Refusal::Full));
        assert_eq!(stats.refused(Refusal::Full), 1);
    }

    /// Whether a future is ready at its first poll.
    fn futures_ready(f: impl std::future::Future<Output = ()>) -> bool {
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        let mut f = std::pin::pin!(f);
        f.as_mut().poll(&mut cx).is_ready()
    }
}
