//! The outbox policy: `[spool] max_bytes` and `when_full`, in one place for
//! every producer that fills the outbox (the sources through the core,
//! webhooks, `spool import`) and every consumer that empties it (the SIEM
//! forwarder; later queues take the same [`Policy`] and [`Outbox`]).
//!
//! - `block`: at or beyond `max_bytes` the outbox is full; producers are
//!   not admitted ([`Outbox::is_full`]): file, poll and Kubernetes sources
//!   wait (their input keeps what they did not read), webhooks answer 503
//!   with `Retry-After`, an import stops ([`Policy::block_at`]). Nothing is
//!   dropped; the forwarder's deliveries make room again.
//! - `drop_oldest`: producers are always admitted; after a commit takes the
//!   outbox over `max_bytes`, the oldest records are dropped down to it
//!   ([`Policy::drop_excess`]) and counted in the dropped ledger.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::config::{Config, SpoolConfig, WhenFull};
use crate::store::{OutboxStats, Store, StoreError};

/// `[spool] max_bytes` and `when_full`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub max_bytes: u64,
    pub when_full: WhenFull,
}

impl Policy {
    pub fn new(max_bytes: u64, when_full: WhenFull) -> Self {
        Self {
            max_bytes,
            when_full,
        }
    }

    pub fn from_config(spool: &SpoolConfig) -> Self {
        Self::new(spool.max_bytes.as_u64(), spool.when_full)
    }

    /// `block`: the size at which producers are refused.
    pub fn block_at(&self) -> Option<u64> {
        (self.when_full == WhenFull::Block).then_some(self.max_bytes)
    }

    /// `drop_oldest`: the size above which the oldest records go.
    pub fn drop_at(&self) -> Option<u64> {
        (self.when_full == WhenFull::DropOldest).then_some(self.max_bytes)
    }

    /// Whether an outbox of `bytes` refuses producers.
    pub fn is_full(&self, bytes: u64) -> bool {
        self.block_at().is_some_and(|max| bytes >= max)
    }

    /// `drop_oldest`: drops the oldest records while the outbox (now
    /// `bytes`) is over `max_bytes`; returns how many went.
    pub fn drop_excess(&self, store: &Store, bytes: u64) -> Result<u64, StoreError> {
        match self.drop_at() {
            Some(max) if bytes > max => store.outbox_drop_oldest(max),
            _ => Ok(0),
        }
    }
}

/// The live outbox's state under its [`Policy`]: whether producers are
/// admitted. Updated by whoever changed the outbox (the core after a
/// commit, the forwarder after a delivery); read by every producer.
#[derive(Debug)]
pub struct Outbox {
    policy: Policy,
    full: AtomicBool,
    bytes: AtomicU64,
}

/// What [`Outbox::enforce`] did.
#[derive(Debug)]
pub struct Enforced {
    /// Records dropped (`drop_oldest`).
    pub dropped: u64,
    /// The outbox afterwards.
    pub stats: OutboxStats,
}

impl Outbox {
    pub fn new(spool: &SpoolConfig) -> Self {
        Self {
            policy: Policy::from_config(spool),
            full: AtomicBool::new(false),
            bytes: AtomicU64::new(0),
        }
    }

    /// The outbox of `cfg`: there is one with `[siem]` or `[spool] enabled`.
    pub fn for_config(cfg: &Config) -> Option<Self> {
        (cfg.siem.is_some() || cfg.spool.enabled).then(|| Self::new(&cfg.spool))
    }

    pub fn policy(&self) -> Policy {
        self.policy
    }

    pub fn max_bytes(&self) -> u64 {
        self.policy.max_bytes
    }

    /// Records the outbox size; returns whether it is full.
    pub fn update(&self, stats: &OutboxStats) -> bool {
        self.bytes.store(stats.bytes, Ordering::Relaxed);
        let full = self.policy.is_full(stats.bytes);
        self.full.store(full, Ordering::Relaxed);
        full
    }

    /// True while producers must wait (`block` and at or over `max_bytes`).
    pub fn is_full(&self) -> bool {
        self.full.load(Ordering::Relaxed)
    }

    /// Applies the policy to the store after the outbox grew: drops the
    /// oldest records (`drop_oldest`) or marks the outbox full (`block`).
    pub fn enforce(&self, store: &Store) -> Result<Enforced, StoreError> {
        let mut stats = store.outbox_stats()?;
        let dropped = self.policy.drop_excess(store, stats.bytes)?;
        if dropped > 0 {
            stats = store.outbox_stats()?;
        }
        self.update(&stats);
        Ok(Enforced { dropped, stats })
    }
}

impl crate::ingest::Admission for Outbox {
    fn full(&self) -> bool {
        self.is_full()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(bytes: u64) -> OutboxStats {
        OutboxStats {
            bytes,
            ..Default::default()
        }
    }

    #[test]
    fn block_refuses_at_max_bytes_and_drop_oldest_never_does() {
        let block = Policy::new(100, WhenFull::Block);
        assert_eq!((block.block_at(), block.drop_at()), (Some(100), None));
        assert!(!block.is_full(99) && block.is_full(100));
        let drop = Policy::new(100, WhenFull::DropOldest);
        assert_eq!((drop.block_at(), drop.drop_at()), (None, Some(100)));
        assert!(!drop.is_full(1000));
        let spool = SpoolConfig {
            max_bytes: bytesize::ByteSize::b(100),
            when_full: WhenFull::Block,
            ..Default::default()
        };
        let o = Outbox::new(&spool);
        assert!(!o.update(&stats(10)) && !o.is_full());
        assert!(o.update(&stats(100)) && o.is_full());
        assert!(!o.update(&stats(0)) && !o.is_full());
    }
}
