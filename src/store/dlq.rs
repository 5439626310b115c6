//! The dead-letter table (schema 4): payloads that came out `unmapped` or
//! `invalid` ([`crate::dlq`]), written in the transaction of the batch they
//! came with, under `[dlq]`'s limits: the oldest dropped first (counted in
//! `meta.dlq_dropped`).
//!
//! | table | key | value |
//! |---|---|---|
//! | `dead_letters` | seq | JSON [`DeadLetter`] |
//!
//! `meta` holds `dlq_seq` (the last seq), `dlq_count`, `dlq_bytes` (the
//! entries' [`DeadLetter::size`]) and `dlq_dropped` (dropped for a limit, in
//! all).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};

use redb::{ReadableDatabase, ReadableTable, TableDefinition};

use super::{META, Store, StoreError, corrupt, read_u64};
use crate::dlq::{DeadLetter, DeadLetters};
use crate::event::TimeMs;

pub(super) const DEAD_LETTERS: TableDefinition<u64, &[u8]> = TableDefinition::new("dead_letters");

/// How often, at most, a commit without dead letters looks for entries past
/// `retention`.
const PURGE_EVERY_MS: TimeMs = 60_000;

/// `[dlq]` as the store applies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DlqLimits {
    pub max_payloads: u64,
    pub max_bytes: u64,
    pub retention_ms: TimeMs,
}

impl Default for DlqLimits {
    fn default() -> Self {
        DlqLimits::from(&crate::config::DlqConfig::default())
    }
}

impl From<&crate::config::DlqConfig> for DlqLimits {
    fn from(c: &crate::config::DlqConfig) -> Self {
        DlqLimits {
            max_payloads: c.max_payloads,
            max_bytes: c.max_bytes.as_u64(),
            retention_ms: c.retention.as_millis().min(i64::MAX as u128) as TimeMs,
        }
    }
}

/// What one commit changed in the table: entries (source, result) added
/// and removed, and how many were dropped for a limit or retention.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DlqDelta {
    pub added: Vec<(String, String)>,
    pub removed: Vec<(String, String)>,
    pub dropped: u64,
}

impl DlqDelta {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.dropped == 0
    }
}

/// Which entries `relstat dlq list|show|replay` reads.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DlqFilter {
    pub source: Option<String>,
    /// Received at or after.
    pub since: Option<TimeMs>,
    pub id: Option<u64>,
}

impl DlqFilter {
    fn keeps(&self, id: u64, d: &DeadLetter) -> bool {
        self.id.is_none_or(|i| i == id)
            && self.source.as_deref().is_none_or(|s| s == d.source)
            && self.since.is_none_or(|t| d.received >= t)
    }
}

/// The store's dead-letter state that is not in the file: the limits of
/// the running configuration and when retention was last applied.
#[derive(Debug, Default)]
pub(super) struct DlqState {
    pub limits: std::sync::RwLock<DlqLimits>,
    pub last_purge: AtomicI64,
}

fn decode(v: &[u8]) -> Result<DeadLetter, StoreError> {
    serde_json::from_slice(v).map_err(|e| corrupt("dead_letters", e))
}

/// Writes `dead` (new entries, replay marks) and applies the limits, in
/// the caller's transaction.
pub(super) fn write(
    tx: &redb::WriteTransaction,
    dead: &DeadLetters,
    limits: DlqLimits,
    now: TimeMs,
    purge: bool,
) -> Result<DlqDelta, StoreError> {
    let mut delta = DlqDelta::default();
    if dead.is_empty() && !purge {
        return Ok(delta);
    }
    let mut table = tx.open_table(DEAD_LETTERS)?;
    let mut meta = tx.open_table(META)?;
    let mut seq = read_u64(&meta, "dlq_seq")?;
    let mut count = read_u64(&meta, "dlq_count")?;
    let mut bytes = read_u64(&meta, "dlq_bytes")?;
    let mut dropped = 0u64;
    for id in &dead.replayed {
        let Some(v) = table.get(*id)?.map(|v| v.value().to_vec()) else {
            continue;
        };
        // An undecodable entry (a damaged disk) is left as it is.
        let Ok(mut d) = decode(&v) else {
            continue;
        };
        d.replayed = Some(now);
        let v = serde_json::to_vec(&d).map_err(|e| corrupt("dead_letters", e))?;
        table.insert(*id, v.as_slice())?;
    }
    for d in &dead.new {
        if limits.max_payloads == 0 || d.size() > limits.max_bytes {
            dropped += 1;
            continue;
        }
        seq += 1;
        let v = serde_json::to_vec(d).map_err(|e| corrupt("dead_letters", e))?;
        table.insert(seq, v.as_slice())?;
        count += 1;
        bytes += d.size();
        delta.added.push((d.source.clone(), d.result.clone()));
    }
    // Oldest first: past retention, then over either limit.
    let cutoff = now.saturating_sub(limits.retention_ms);
    loop {
        let Some((id, d)) = table.first()?.map(|(k, v)| (k.value(), v.value().to_vec())) else {
            break;
        };
        // An undecodable entry (a damaged disk) is dropped first: it can
        // neither be replayed nor tell its age.
        let d = decode(&d).ok();
        let over = count > limits.max_payloads || bytes > limits.max_bytes;
        if !over && d.as_ref().is_some_and(|d| d.received >= cutoff) {
            break;
        }
        table.remove(id)?;
        count = count.saturating_sub(1);
        dropped += 1;
        if let Some(d) = d {
            bytes = bytes.saturating_sub(d.size());
            delta.removed.push((d.source, d.result));
        }
    }
    meta.insert("dlq_seq", seq.to_be_bytes().as_slice())?;
    meta.insert("dlq_count", count.to_be_bytes().as_slice())?;
    meta.insert("dlq_bytes", bytes.to_be_bytes().as_slice())?;
    if dropped > 0 {
        let total = read_u64(&meta, "dlq_dropped")? + dropped;
        meta.insert("dlq_dropped", total.to_be_bytes().as_slice())?;
    }
    delta.dropped = dropped;
    Ok(delta)
}

impl Store {
    /// `[dlq]` of the running configuration.
    pub fn set_dlq_limits(&self, limits: DlqLimits) {
        *self.dlq.limits.write().unwrap_or_else(|p| p.into_inner()) = limits;
    }

    pub(super) fn dlq_limits(&self) -> DlqLimits {
        *self.dlq.limits.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether this commit should look for entries past retention.
    pub(super) fn dlq_purge_due(&self, now: TimeMs) -> bool {
        let last = self.dlq.last_purge.load(Ordering::Relaxed);
        if now - last >= PURGE_EVERY_MS {
            self.dlq.last_purge.store(now, Ordering::Relaxed);
            true
        } else {
            false
        }
    }

    /// The entries `filter` keeps, oldest first, at most `limit`.
    pub fn dlq_list(
        &self,
        filter: &DlqFilter,
        limit: usize,
    ) -> Result<Vec<(u64, DeadLetter)>, StoreError> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(DEAD_LETTERS)?;
        let mut out = Vec::new();
        let rows: Box<dyn Iterator<Item = _>> = match filter.id {
            Some(id) => Box::new(table.range(id..=id)?),
            None => Box::new(table.iter()?),
        };
        for row in rows {
            let (k, v) = row?;
            let Ok(d) = decode(v.value()) else {
                tracing::warn!("dead letter {} cannot be decoded: skipped", k.value());
                continue;
            };
            if filter.keeps(k.value(), &d) {
                out.push((k.value(), d));
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Entries held, by (source, result): the gauge at start.
    pub fn dlq_counts(&self) -> Result<BTreeMap<(String, String), u64>, StoreError> {
        let tx = self.db.begin_read()?;
        let mut out = BTreeMap::new();
        for row in tx.open_table(DEAD_LETTERS)?.iter()? {
            let (_, v) = row?;
            // Undecodable entries are not counted (the next commit drops them).
            if let Ok(d) = decode(v.value()) {
                *out.entry((d.source, d.result)).or_default() += 1;
            }
        }
        Ok(out)
    }

    /// (entries, bytes, dropped in all).
    pub fn dlq_stats(&self) -> Result<(u64, u64, u64), StoreError> {
        let tx = self.db.begin_read()?;
        let meta = tx.open_table(META)?;
        Ok((
            read_u64(&meta, "dlq_count")?,
            read_u64(&meta, "dlq_bytes")?,
            read_u64(&meta, "dlq_dropped")?,
        ))
    }
}
