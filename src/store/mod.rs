//! The embedded store: one redb file (`<data_dir>/relstat.redb`) holding
//! everything the agent must not lose, written in one transaction per input
//! batch so that after a crash at any moment nothing is lost and nothing is
//! applied twice.
//!
//! # Design
//!
//! | table | key | value | what |
//! |---|---|---|---|
//! | `keys` | key bytes (release 0 service 0 environment 0 site) | binary [`KeyState`] ([`codec`]; JSON before schema 8) | tracker state per key, incl. the rules' per-key memory ("already fired" flags) |
//! | `history` | (release, seq) | binary [`HistoryRecord`] ([`codec`]; JSON before schema 8) | the audit trail: event time and recorded time |
//! | `history_batches` | (lowest recorded_at ms of a batch's rows, its first seq) | its last seq | the history's time index, one entry per batch (schema 9): an as-of read ([`Store::history_scan`]) takes the batches that may hold rows recorded by then and the rows' times and releases from `audit_chain` |
//! | `seen_groups` | (recorded_at ms, xxh3-128 of the group's first event id) | the group's other ids, 16 bytes each | duplicate detection within `dedupe_window`: the ids a batch saw at one time, up to 256 a row (schema 9: one insert a batch, not one an event); keyed by time so that each batch appends (a hash key scattered every insert over the whole table: 27% of `run --once`'s CPU) and the purge is a range delete. Lookups are in memory (loaded at start) |
//! | `checkpoints` | source-defined name | bytes | file offsets, API cursors |
//! | `counters` | "source\0result" | u64 | input accounting (`relstat_events_total`) |
//! | `outbox` | seq | JSON [`Anomaly`] | SIEM records waiting for delivery |
//! | `approval_ledger` | (release, service) | JSON [`Ruling`] list | the gate's ledger: the decisions (approved, rejected, revoked) of approval sources, each with its environment, approver, source and time, in time order (service `-`: the whole release; schema 6) |
//! | `audit_chain` | seq | 32-byte hash, recorded_at, release | the hash chain over `history` in sequence order ([`audit`]; schema 7); its head and checkpoint are in `meta` (`audit_head`, `audit_checkpoint`) |
//! | `meta` | name | bytes | sequence numbers, outbox byte total, the dropped-records ledger (`outbox_dropped`), restore episodes, the rollups reported `stuck` (`rollups_stuck`: not reported again after a restart), schema version |
//! | `imported_bundles` | bundle id | JSON [`ImportedBundle`] | the ledger of imported bundles (`spool import`), kept forever |
//! | `imported_records` | xxh3-128 of `event_id \0 rule` | imported_at ms | identities of imported records, kept forever (outlives `dedupe_window`); a batch's outbox record with an identity found here is not enqueued (a relay re-judging imported events does not duplicate the sites' records) |
//! | `pending_tracking` | seq | JSON [`PendingEvent`] | imported transitions waiting for the relay's tracker: `spool import` into a stopped agent writes them with the chunk; the agent applies them at start ([`Store::commit_drained`] removes them with what they produce) |
//! | `quarantine` | seq | JSON [`check::Quarantined`] | records that could not be decoded (a damaged disk, a bug), moved aside with their table, key, bytes and error so the agent starts anyway; `relstat store check` lists them (schema 3) |
//! | `dead_letters` | seq | JSON [`crate::dlq::DeadLetter`] | payloads of webhook and poll sources that came out unmapped or invalid, committed with their batch, under `[dlq]`'s limits ([`dlq`]; schema 4) |
//! | `notify_queue` | (destination, seq) | JSON message | chat notifications waiting for delivery, one queue per `[[notify.destinations]]` (bounded by `[notify] max_queued`: the oldest are dropped), written with their cause (schema 5) |
//!
//! Schema versions (`meta.schema`): 1 -> 2 keyed the seen ids by time;
//! 2 -> 3 added `quarantine`; 3 -> 4 added `dead_letters`; 4 -> 5 added
//! `notify_queue`; 5 -> 6 replaced `approvals` ((release, service) ->
//! earliest approval ms) by `approval_ledger`: each old row became one
//! approval for environment `-` (every environment, as schema 5 judged it)
//! with no approver or source; 6 -> 7 added `audit_chain` and chained the
//! history found, in sequence order, from a `migration` checkpoint
//! ([`audit`]); 7 -> 8 rewrote the key states and history rows from JSON
//! in the binary form of [`codec`] (a quarter of the store's CPU in `run
//! --once` was JSON, and the rows are about half the size; a row that did
//! not decode is left for the quarantine); 8 -> 9 replaced `seen_by_time`
//! ((recorded_at, id) -> (), a row per event) by `seen_groups` and
//! `history_by_time` ((recorded_at, seq) -> release, a row per history row)
//! by `history_batches` (runs of up to 1,024 rows of the chain): two B-tree
//! inserts less per event, 8 % of `run --once`'s CPU (BENCHMARKS.md, step
//! 9). Older stores are migrated at open, in one
//! transaction; a store of a newer schema is refused (a newer relstat
//! wrote it).
//!
//! One call to [`Store::commit`] writes a tracker [`Batch`] (dirty keys,
//! removed keys, history, seen ids, outbox records, restore episodes,
//! approvals, retention purges), the sources' checkpoints and the counter deltas of that
//! input, then commits with redb's default durability (fsync). A batch is
//! either wholly visible after a crash or not at all: the source resumes from
//! the checkpoint committed with the state it produced.
//!
//! Retention: history rows at the start of the chain recorded before `now -
//! history_retention` (stopping at the first one recorded later, leaving a
//! checkpoint) and seen ids recorded before `now - dedupe_window` are purged
//! inside the batch that carries the purge bound (the tracker sets it on its
//! periodic tick).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

use crate::detect::{Anomaly, Decision, Ruling};
use crate::event::{Event, InputResult, Key, TimeMs};
use crate::track::codec;
use crate::track::{Batch, HistoryRecord, KeyState, Target};

pub use self::dlq::{DlqDelta, DlqFilter, DlqLimits};

const KEYS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("keys");
const HISTORY: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("history");
/// The history's time index: (the lowest recorded time among the rows of
/// one write, its first seq) -> its last seq (schema 9; one entry per
/// batch, not per row).
const HISTORY_BATCHES: TableDefinition<(i64, u64), u64> = TableDefinition::new("history_batches");
/// Schema 2 to 8's time index, (recorded_at, seq) -> release, one entry per
/// row; migrated at open.
const HISTORY_BY_TIME_V8: TableDefinition<(i64, u64), &str> =
    TableDefinition::new("history_by_time");
/// The seen ids in groups (schema 9): (recorded_at, the group's first id)
/// -> the group's other ids, 16 bytes each (big-endian).
const SEEN_GROUPS: TableDefinition<(i64, u128), &[u8]> = TableDefinition::new("seen_groups");
/// Schema 2 to 8's seen ids, one row each; migrated at open.
const SEEN_V8: TableDefinition<(i64, u128), ()> = TableDefinition::new("seen_by_time");
/// Schema 1's seen table (hash -> recorded_at), migrated at open.
const SEEN_V1: TableDefinition<u128, i64> = TableDefinition::new("seen");
const CHECKPOINTS: TableDefinition<&str, &[u8]> = TableDefinition::new("checkpoints");
const COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("counters");
const OUTBOX: TableDefinition<u64, &[u8]> = TableDefinition::new("outbox");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// Schema 5's ledger (release, service) -> earliest approval ms, migrated
/// at open.
const APPROVALS_V5: TableDefinition<(&str, &str), i64> = TableDefinition::new("approvals");
/// The gate's ledger: (release, service) -> JSON list of [`Ruling`]s.
const LEDGER: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("approval_ledger");
const IMPORTED_BUNDLES: TableDefinition<&str, &[u8]> = TableDefinition::new("imported_bundles");
const IMPORTED_RECORDS: TableDefinition<u128, i64> = TableDefinition::new("imported_records");
const PENDING: TableDefinition<u64, &[u8]> = TableDefinition::new("pending_tracking");
const QUARANTINE: TableDefinition<u64, &[u8]> = TableDefinition::new("quarantine");
/// The notification queues: (destination, seq) -> JSON message.
const NOTIFY: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("notify_queue");

/// The `meta` entry holding the rollups reported stuck: a JSON list of
/// (release, environment), rewritten whole when it changes (it holds only
/// the rollups partly complete past `[rollups] stuck_after`).
pub(super) const ROLLUPS_STUCK: &str = "rollups_stuck";

/// The schema this relstat writes; it migrates every older one at open.
const SCHEMA: u32 = 9;

/// Most ids in one `seen_groups` row (4 KiB of ids: one page).
const SEEN_GROUP_MAX: usize = 256;

/// Most rows one `history_batches` entry covers (the 8 -> 9 migration's
/// chunks; a batch's own write is one entry whatever its size).
const HISTORY_BATCH_MAX: u64 = 1024;

/// redb's page cache. Its default (1 GiB, filled as pages are written) made
/// an agent with 10,000 keys sit at ~85 MiB RSS; the working set of one batch
/// and the periodic check fits in far less, and reads after start-up are rare.
/// 4 MiB was filled (3.4 MiB at the peak, heaptrack) by loading 10,000 keys;
/// 1 MiB holds the pages a batch appends to and the tables' upper levels.
const CACHE_BYTES: usize = 1024 * 1024;

/// File name of the store inside `data_dir`.
pub const STORE_FILE: &str = "relstat.redb";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create data directory {path}: {error}")]
    CreateDir {
        path: PathBuf,
        error: std::io::Error,
    },
    /// `cause` says what happened and what to do (see `open_cause`); the
    /// underlying error is part of it, not a source, so it prints once.
    #[error("cannot open the store {path}: {cause}")]
    Open { path: PathBuf, cause: String },
    #[error(
        "the store {path} has schema version {found}, newer than this relstat (it reads \
         versions 1 to {SCHEMA}): a newer relstat wrote it; run that version again, or move the \
         store aside to start empty"
    )]
    Schema { path: PathBuf, found: String },
    /// The redb error is in the message, not a source: printed once.
    #[error("store transaction failed: {0}")]
    Db(redb::Error),
    #[error(
        "corrupt record in table {table}: {detail}; stop the agent and run `relstat store \
         repair` (it moves undecodable records to the quarantine table)"
    )]
    Corrupt { table: &'static str, detail: String },
}

impl From<redb::Error> for StoreError {
    fn from(e: redb::Error) -> Self {
        StoreError::Db(e)
    }
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Db(e.into())
            }
        }
    )*};
}
from_redb!(
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// What the tracker and sources need back after a (re)start.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub keys: Vec<(Key, KeyState)>,
    pub seen: Vec<(u128, TimeMs)>,
    pub failing: Vec<(Target, TimeMs)>,
    /// The gate's ledger: (release, service, decisions in time order).
    pub approvals: Vec<(String, String, Vec<Ruling>)>,
    /// Rollups (release, environment) reported `stuck` and not complete
    /// since.
    pub rollups_stuck: Vec<(String, String)>,
    pub checkpoints: BTreeMap<String, Vec<u8>>,
    pub counters: BTreeMap<(String, InputResult), u64>,
    /// Records found undecodable by this load and moved to `quarantine`.
    pub quarantined: u64,
}

/// Pending SIEM records: how many, how large, the oldest's detection time.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct OutboxStats {
    pub events: u64,
    pub bytes: u64,
    pub oldest_detected_at: Option<TimeMs>,
}

/// Records dropped from a full outbox (`when_full = "drop_oldest"`) and not
/// reported yet.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DroppedLedger {
    pub count: u64,
    pub first: Option<TimeMs>,
    pub last: Option<TimeMs>,
}

/// One row of the import ledger: a bundle imported by `spool import`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ImportedBundle {
    pub site: String,
    pub host: String,
    pub imported_at: TimeMs,
    /// Records in the bundle.
    pub count: u64,
}

/// What one [`Store::import_chunk`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ChunkOutcome {
    /// Records enqueued.
    pub enqueued: u64,
    /// Records skipped: imported before.
    pub duplicates: u64,
    /// Records of the chunk dealt with (enqueued or skipped), from its start.
    pub consumed: usize,
    /// The outbox reached `max_bytes`: the records after `consumed` wait.
    pub full: bool,
}

/// What the relay's tracker made of a chunk of imported records, written in
/// the chunk's transaction.
#[derive(Debug, Default)]
pub struct Tracked {
    pub batch: Batch,
    pub counters: BTreeMap<(String, InputResult), u64>,
    /// Events for the tracker of the agent when it starts (an import into
    /// a stopped agent): written to `pending_tracking`, recorded at the
    /// chunk's import time.
    pub pending: Vec<Event>,
    /// Notifications of the imported events (`[notify] imported`):
    /// (destination, JSON) rows for the notify queues.
    pub notes: Vec<(String, Vec<u8>)>,
    /// The notify queues' bound (`[notify] max_queued`).
    pub notes_max: u64,
}

/// An imported event waiting for the relay's tracker.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PendingEvent {
    /// When it was imported: its recorded time in the history once applied.
    pub recorded_at: TimeMs,
    pub event: Event,
}

/// The relay's tracker as [`Store::import_chunk`] calls it: the chunk's
/// newly enqueued records in, the writes they cause out.
pub type TrackChunk<'a> = dyn FnMut(&[&Anomaly]) -> Tracked + 'a;

/// The identity of an imported record: `event_id` alone is not unique
/// (several rules may fire on one event), `(event_id, rule)` is.
pub fn record_identity(rec: &Anomaly) -> u128 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(rec.event_id.as_bytes());
    h.update(&[0]);
    h.update(rec.rule.as_bytes());
    h.digest128()
}

/// A consistent view of the outbox (one read transaction): what an export
/// reads twice (hash, then write) without seeing a change in between.
pub struct OutboxSnapshot {
    table: redb::ReadOnlyTable<u64, &'static [u8]>,
}

impl OutboxSnapshot {
    /// Visits every record (seq, stored JSON) in seq order.
    pub fn scan<E: From<StoreError>>(
        &self,
        mut visit: impl FnMut(u64, &[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        let iter = self.table.iter().map_err(StoreError::from)?;
        for row in iter {
            let (k, v) = row.map_err(StoreError::from)?;
            visit(k.value(), v.value())?;
        }
        Ok(())
    }
}

pub struct Store {
    db: Database,
    path: Option<PathBuf>,
    dlq: dlq::DlqState,
    /// Signs retention checkpoints of the audit chain.
    audit_key: std::sync::RwLock<Option<ed25519_dalek::SigningKey>>,
}

impl Store {
    /// Opens (or creates) the store in `data_dir`.
    pub fn open(data_dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|error| StoreError::CreateDir {
            path: data_dir.to_path_buf(),
            error,
        })?;
        let path = data_dir.join(STORE_FILE);
        // The store holds who deployed what: readable by the agent's user
        // only, also outside the unit (whose UMask does the same).
        {
            use std::os::unix::fs::OpenOptionsExt;
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
            {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => {
                    return Err(StoreError::Open {
                        cause: open_cause(&path, &redb::DatabaseError::Storage(e.into())),
                        path,
                    });
                }
            }
        }
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(&path)
            .map_err(|e| StoreError::Open {
                cause: open_cause(&path, &e),
                path: path.clone(),
            })?;
        let store = Store {
            db,
            path: Some(path),
            dlq: Default::default(),
            audit_key: Default::default(),
        };
        store.init()?;
        Ok(store)
    }

    /// A store that lives in memory only (tests).
    pub fn in_memory() -> Result<Store, StoreError> {
        let db = Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .map_err(|e| StoreError::Open {
                path: PathBuf::from("<memory>"),
                cause: e.to_string(),
            })?;
        let store = Store {
            db,
            path: None,
            dlq: Default::default(),
            audit_key: Default::default(),
        };
        store.init()?;
        Ok(store)
    }

    fn init(&self) -> Result<(), StoreError> {
        let tx = self.db.begin_write()?;
        let found_version: Option<u32>;
        {
            tx.open_table(KEYS)?;
            tx.open_table(HISTORY)?;
            tx.open_table(HISTORY_BATCHES)?;
            tx.open_table(SEEN_GROUPS)?;
            tx.open_table(CHECKPOINTS)?;
            tx.open_table(COUNTERS)?;
            tx.open_table(OUTBOX)?;
            tx.open_table(LEDGER)?;
            tx.open_table(IMPORTED_BUNDLES)?;
            tx.open_table(IMPORTED_RECORDS)?;
            tx.open_table(PENDING)?;
            tx.open_table(QUARANTINE)?;
            tx.open_table(dlq::DEAD_LETTERS)?;
            tx.open_table(NOTIFY)?;
            tx.open_table(audit::CHAIN)?;
            let mut meta = tx.open_table(META)?;
            let found = meta.get("schema")?.map(|v| v.value().to_vec());
            let version = match &found {
                None => SCHEMA,
                Some(v) => std::str::from_utf8(v)
                    .ok()
                    .and_then(|v| v.parse::<u32>().ok())
                    .filter(|v| (1..=SCHEMA).contains(v))
                    .ok_or_else(|| StoreError::Schema {
                        path: self.path.clone().unwrap_or_default(),
                        found: String::from_utf8_lossy(v).into_owned(),
                    })?,
            };
            found_version = found.is_some().then_some(version);
            if version < 2 {
                // 1 -> 2: the seen ids keyed by time.
                let mut seen = tx.open_table(SEEN_V8)?;
                for row in tx.open_table(SEEN_V1)?.iter()? {
                    let (h, at) = row?;
                    seen.insert((at.value(), h.value()), ())?;
                }
                drop(seen);
                tx.delete_table(SEEN_V1)?;
            }
            // 2 -> 3: the quarantine table, opened (created) above.
            // 3 -> 4: the dead-letter table, likewise (its meta counters
            // start at zero).
            // 4 -> 5: the notification queues, likewise.
            if found.is_some() && version < 6 {
                // 5 -> 6: each earliest approval becomes an approval for
                // every environment, approver and source unknown.
                let mut ledger = tx.open_table(LEDGER)?;
                for row in tx.open_table(APPROVALS_V5)?.iter()? {
                    let (k, at) = row?;
                    let (release, service) = k.value();
                    let list = [Ruling {
                        decision: Decision::Approved,
                        at: at.value(),
                        environment: crate::event::NO_SERVICE.to_string(),
                        approver: String::new(),
                        source: String::new(),
                    }];
                    let v = serde_json::to_vec(&list).map_err(|e| corrupt("approvals", e))?;
                    ledger.insert((release, service), v.as_slice())?;
                }
                drop(ledger);
                tx.delete_table(APPROVALS_V5)?;
            }
            if found.is_some() && version < 8 {
                // 7 -> 8: key states and history rows from JSON to the
                // binary form ([`codec`]).
                migrate_to_binary(&tx)?;
            }
            if found.is_none() || version < SCHEMA {
                meta.insert("schema", SCHEMA.to_string().as_bytes())?;
            }
        }
        let now = crate::event::now_ms();
        match &found_version {
            None => audit::init_created(&tx, now)?,
            // 6 -> 7: the history found is chained from a `migration`
            // checkpoint.
            Some(v) if *v < 7 => audit::migrate(&tx, now)?,
            Some(_) => {}
        }
        if found_version.is_some_and(|v| v < 9) {
            // 8 -> 9: the seen ids in groups, the time index one entry per
            // run of rows (after 6 -> 7, which chains the history).
            migrate_to_groups(&tx)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Everything needed to resume.
    /// A record that cannot be decoded is moved to `quarantine` (and
    /// logged) rather than stopping the start: see [`check`].
    pub fn load(&self) -> Result<Snapshot, StoreError> {
        let bad = self.quarantine_undecodable(&[
            check::Checked::Keys,
            check::Checked::Meta,
            check::Checked::Ledger,
        ])?;
        let tx = self.db.begin_read()?;
        let mut snap = Snapshot::default();
        for row in tx.open_table(KEYS)?.iter()? {
            let (k, v) = row?;
            let key = Key::decode(k.value()).ok_or_else(|| corrupt("keys", "undecodable key"))?;
            let state = codec::decode_key_state(v.value()).map_err(|e| corrupt("keys", e))?;
            snap.keys.push((key, state));
        }
        snap.quarantined = bad;
        for row in tx.open_table(SEEN_GROUPS)?.iter()? {
            let (k, v) = row?;
            let (at, first) = k.value();
            snap.seen.push((first, at));
            for h in v.value().chunks_exact(16) {
                let h = u128::from_be_bytes(h.try_into().expect("16 bytes"));
                snap.seen.push((h, at));
            }
        }
        for row in tx.open_table(LEDGER)?.iter()? {
            let (k, v) = row?;
            let (release, service) = k.value();
            let list =
                serde_json::from_slice(v.value()).map_err(|e| corrupt("approval_ledger", e))?;
            snap.approvals
                .push((release.to_string(), service.to_string(), list));
        }
        for row in tx.open_table(CHECKPOINTS)?.iter()? {
            let (k, v) = row?;
            snap.checkpoints
                .insert(k.value().to_string(), v.value().to_vec());
        }
        for row in tx.open_table(COUNTERS)?.iter()? {
            let (k, v) = row?;
            if let Some((source, result)) = k.value().split_once('\0')
                && let Some(r) = InputResult::parse(result)
            {
                snap.counters.insert((source.to_string(), r), v.value());
            }
        }
        let meta = tx.open_table(META)?;
        if let Some(v) = meta.get("failing")? {
            snap.failing = serde_json::from_slice(v.value()).map_err(|e| corrupt("meta", e))?;
        }
        if let Some(v) = meta.get(ROLLUPS_STUCK)? {
            snap.rollups_stuck =
                serde_json::from_slice(v.value()).map_err(|e| corrupt("meta", e))?;
        }
        Ok(snap)
    }

    /// Applies one input batch atomically: tracker writes, checkpoints and
    /// counter deltas.
    pub fn commit(
        &self,
        batch: &Batch,
        checkpoints: &[(String, Vec<u8>)],
        counters: &BTreeMap<(String, InputResult), u64>,
    ) -> Result<(), StoreError> {
        self.commit_with_dead(batch, checkpoints, counters, &Default::default(), 0)
            .map(drop)
    }

    /// [`commit`](Self::commit), with the batch's dead letters (new ones,
    /// replay marks) and `[dlq]`'s limits applied at `now`, in the same
    /// transaction.
    pub fn commit_with_dead(
        &self,
        batch: &Batch,
        checkpoints: &[(String, Vec<u8>)],
        counters: &BTreeMap<(String, InputResult), u64>,
        dead: &crate::dlq::DeadLetters,
        now: TimeMs,
    ) -> Result<DlqDelta, StoreError> {
        self.commit_all(batch, checkpoints, counters, dead, now, &[], 0)
            .map(|(delta, _)| delta)
    }

    /// [`Store::commit`] with notification messages (`(destination, JSON)`,
    /// in order) written to their queues in the same transaction. A queue
    /// holding more than `max_queued` messages loses its oldest; returns
    /// how many each destination lost.
    pub fn commit_notify(
        &self,
        batch: &Batch,
        checkpoints: &[(String, Vec<u8>)],
        counters: &BTreeMap<(String, InputResult), u64>,
        notes: &[(String, Vec<u8>)],
        max_queued: u64,
    ) -> Result<BTreeMap<String, u64>, StoreError> {
        let (_, dropped) = self.commit_all(
            batch,
            checkpoints,
            counters,
            &Default::default(),
            0,
            notes,
            max_queued,
        )?;
        Ok(dropped)
    }

    /// The core's commit: the batch, its dead letters (under `[dlq]`'s
    /// limits at `now`) and its notification messages, in one transaction.
    #[allow(clippy::too_many_arguments)]
    pub fn commit_all(
        &self,
        batch: &Batch,
        checkpoints: &[(String, Vec<u8>)],
        counters: &BTreeMap<(String, InputResult), u64>,
        dead: &crate::dlq::DeadLetters,
        now: TimeMs,
        notes: &[(String, Vec<u8>)],
        max_queued: u64,
    ) -> Result<(DlqDelta, BTreeMap<String, u64>), StoreError> {
        let tx = self.db.begin_write()?;
        write_batch(
            &tx,
            batch,
            checkpoints,
            counters,
            None,
            self.audit_key().as_ref(),
        )?;
        let purge = now > 0 && self.dlq_purge_due(now);
        let delta = dlq::write(&tx, dead, self.dlq_limits(), now, purge)?;
        let dropped = if notes.is_empty() {
            BTreeMap::new()
        } else {
            write_notes(&tx, notes, max_queued)?
        };
        tx.commit()?;
        Ok((delta, dropped))
    }

    /// The first `limit` messages of a destination's queue, oldest first.
    pub fn notify_read(&self, dest: &str, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(NOTIFY)?;
        let mut out = Vec::new();
        for row in table.range((dest, 0)..=(dest, u64::MAX))?.take(limit) {
            let (k, v) = row?;
            out.push((k.value().1, v.value().to_vec()));
        }
        Ok(out)
    }

    /// Removes delivered (or dropped) messages of a destination.
    pub fn notify_remove(&self, dest: &str, seqs: &[u64]) -> Result<(), StoreError> {
        if seqs.is_empty() {
            return Ok(());
        }
        let tx = self.db.begin_write()?;
        {
            let mut table = tx.open_table(NOTIFY)?;
            for s in seqs {
                table.remove((dest, *s))?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Messages waiting for a destination.
    pub fn notify_len(&self, dest: &str) -> Result<u64, StoreError> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(NOTIFY)?;
        let mut n = 0;
        for row in table.range((dest, 0)..=(dest, u64::MAX))? {
            row?;
            n += 1;
        }
        Ok(n)
    }

    /// The audit trail of one release, in recorded order.
    pub fn history(&self, release: &str) -> Result<Vec<HistoryRecord>, StoreError> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(HISTORY)?;
        let mut out = Vec::new();
        for row in table.range((release, 0)..=(release, u64::MAX))? {
            let (_, v) = row?;
            out.push(codec::decode_history(v.value()).map_err(|e| corrupt("history", e))?);
        }
        Ok(out)
    }

    /// Visits history rows of every release, grouped by release and in
    /// recorded order within each (what a per-key fold needs). With
    /// `recorded_until`, only rows recorded at or before it: found through
    /// the `history_batches` index and the audit chain's entries (seq ->
    /// recorded time, release), so an early instant reads few rows;
    /// without, the whole table in one sequential pass. One read
    /// transaction: a consistent view.
    pub fn history_scan(
        &self,
        recorded_until: Option<TimeMs>,
        mut visit: impl FnMut(HistoryRecord),
    ) -> Result<(), StoreError> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(HISTORY)?;
        let decode = |v: &[u8]| -> Result<HistoryRecord, StoreError> {
            codec::decode_history(v).map_err(|e| corrupt("history", e))
        };
        match recorded_until {
            None => {
                for row in table.iter()? {
                    let (_, v) = row?;
                    visit(decode(v.value())?);
                }
            }
            Some(until) => {
                let batches = tx.open_table(HISTORY_BATCHES)?;
                let chain = tx.open_table(audit::CHAIN)?;
                let mut rows: Vec<(String, u64)> = Vec::new();
                for row in batches.range(..=(until, u64::MAX))? {
                    let (k, last) = row?;
                    let first = k.value().1;
                    for entry in chain.range(first..=last.value())? {
                        let (seq, v) = entry?;
                        // A damaged entry (`audit verify` reports it) names
                        // no row to read.
                        if let Ok((at, release)) = audit::entry_time_release(v.value())
                            && at <= until
                        {
                            rows.push((release.to_string(), seq.value()));
                        }
                    }
                }
                rows.sort_unstable();
                for (release, seq) in rows {
                    if let Some(v) = table.get((release.as_str(), seq))? {
                        visit(decode(v.value())?);
                    }
                }
            }
        }
        Ok(())
    }

    /// Number of history rows (all releases).
    pub fn history_len(&self) -> Result<u64, StoreError> {
        let tx = self.db.begin_read()?;
        Ok(tx.open_table(HISTORY)?.len()?)
    }

    /// The pending SIEM records, oldest first, starting after `after_seq`.
    pub fn outbox_read(
        &self,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Anomaly)>, StoreError> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(OUTBOX)?;
        let mut out = Vec::new();
        for row in table.range(after_seq + 1..)?.take(limit) {
            let (k, v) = row?;
            let rec = serde_json::from_slice(v.value()).map_err(|e| corrupt("outbox", e))?;
            out.push((k.value(), rec));
        }
        Ok(out)
    }

    /// The pending SIEM records after `after_seq`, oldest first, undecoded:
    /// their bytes are appended to `buf` and `rows` gets (seq, range in
    /// `buf`) for each, at most `limit`. The forwarder decodes them borrowed
    /// ([`crate::detect::AnomalyRef`]), with no allocation per record.
    pub fn outbox_read_raw(
        &self,
        after_seq: u64,
        limit: usize,
        buf: &mut Vec<u8>,
        rows: &mut Vec<(u64, std::ops::Range<usize>)>,
    ) -> Result<(), StoreError> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(OUTBOX)?;
        for row in table.range(after_seq + 1..)?.take(limit) {
            let (k, v) = row?;
            let start = buf.len();
            buf.extend_from_slice(v.value());
            rows.push((k.value(), start..buf.len()));
        }
        Ok(())
    }

    /// Removes delivered records (every seq up to and including `upto`).
    pub fn outbox_remove(&self, upto: u64) -> Result<u64, StoreError> {
        let tx = self.db.begin_write()?;
        let removed;
        {
            let mut table = tx.open_table(OUTBOX)?;
            let mut meta = tx.open_table(META)?;
            let mut bytes = read_u64(&meta, "outbox_bytes")?;
            let mut n = 0;
            let mut freed = 0u64;
            table.retain_in(..=upto, |_, v| {
                n += 1;
                freed += v.len() as u64;
                false
            })?;
            bytes = bytes.saturating_sub(freed);
            meta.insert("outbox_bytes", bytes.to_be_bytes().as_slice())?;
            removed = n;
        }
        tx.commit()?;
        Ok(removed)
    }

    /// `when_full = "drop_oldest"`: removes the oldest records until the
    /// outbox holds at most `max_bytes`, and adds them to the dropped ledger
    /// (count, first and last detection time) that
    /// [`Store::outbox_take_dropped`] reports later. Returns how many went.
    pub fn outbox_drop_oldest(&self, max_bytes: u64) -> Result<u64, StoreError> {
        let tx = self.db.begin_write()?;
        let dropped;
        {
            let mut table = tx.open_table(OUTBOX)?;
            let mut meta = tx.open_table(META)?;
            let mut bytes = read_u64(&meta, "outbox_bytes")?;
            let mut ledger: DroppedLedger = match meta.get("outbox_dropped")? {
                Some(v) => serde_json::from_slice(v.value()).map_err(|e| corrupt("meta", e))?,
                None => DroppedLedger::default(),
            };
            let mut n = 0u64;
            while bytes > max_bytes {
                let Some((k, v)) = table.pop_first()? else {
                    break;
                };
                let _ = k;
                bytes = bytes.saturating_sub(v.value().len() as u64);
                if let Ok(rec) = serde_json::from_slice::<Anomaly>(v.value()) {
                    ledger.first.get_or_insert(rec.detected_at);
                    ledger.last = Some(rec.detected_at);
                }
                n += 1;
            }
            ledger.count += n;
            meta.insert("outbox_bytes", bytes.to_be_bytes().as_slice())?;
            if n > 0 {
                let v = serde_json::to_vec(&ledger).map_err(|e| corrupt("meta", e))?;
                meta.insert("outbox_dropped", v.as_slice())?;
            }
            dropped = n;
        }
        tx.commit()?;
        Ok(dropped)
    }

    /// Turns the dropped ledger (if any) into one record made by `make`,
    /// put at the head of the outbox (`at_head`: sent next by a forwarder
    /// that reads from the start, i.e. just after it connected) or at its
    /// tail, and clears the ledger, in one transaction. Returns whether
    /// there was one.
    pub fn outbox_take_dropped(
        &self,
        at_head: bool,
        make: impl FnOnce(&DroppedLedger) -> Anomaly,
    ) -> Result<bool, StoreError> {
        let tx = self.db.begin_write()?;
        {
            let mut meta = tx.open_table(META)?;
            let ledger: DroppedLedger = match meta.get("outbox_dropped")? {
                Some(v) => serde_json::from_slice(v.value()).map_err(|e| corrupt("meta", e))?,
                None => return Ok(false),
            };
            meta.remove("outbox_dropped")?;
            let mut table = tx.open_table(OUTBOX)?;
            let mut oseq = read_u64(&meta, "outbox_seq")?;
            // The head of the outbox, below every pending record: the seq
            // just under the first one is free (the dropped records freed
            // it), else append.
            let seq = match table.first()? {
                Some((k, _)) if at_head && k.value() > 1 => k.value() - 1,
                Some(_) | None => {
                    oseq += 1;
                    meta.insert("outbox_seq", oseq.to_be_bytes().as_slice())?;
                    oseq
                }
            };
            if table.get(seq)?.is_some() {
                return Err(corrupt("outbox", format!("seq {seq} taken")));
            }
            let v = serde_json::to_vec(&make(&ledger)).map_err(|e| corrupt("outbox", e))?;
            let bytes = read_u64(&meta, "outbox_bytes")? + v.len() as u64;
            table.insert(seq, v.as_slice())?;
            meta.insert("outbox_bytes", bytes.to_be_bytes().as_slice())?;
        }
        tx.commit()?;
        Ok(true)
    }

    /// A consistent read-only view of the whole outbox.
    pub fn outbox_snapshot(&self) -> Result<OutboxSnapshot, StoreError> {
        let tx = self.db.begin_read()?;
        Ok(OutboxSnapshot {
            table: tx.open_table(OUTBOX)?,
        })
    }

    /// Removes the records with `first <= seq <= last` (an exported range)
    /// in one transaction; returns how many were removed.
    pub fn outbox_remove_range(&self, first: u64, last: u64) -> Result<u64, StoreError> {
        let tx = self.db.begin_write()?;
        let removed;
        {
            let mut table = tx.open_table(OUTBOX)?;
            let mut meta = tx.open_table(META)?;
            let mut n = 0;
            let mut freed = 0u64;
            table.retain_in(first..=last, |_, v| {
                n += 1;
                freed += v.len() as u64;
                false
            })?;
            let bytes = read_u64(&meta, "outbox_bytes")?.saturating_sub(freed);
            meta.insert("outbox_bytes", bytes.to_be_bytes().as_slice())?;
            removed = n;
        }
        tx.commit()?;
        Ok(removed)
    }

    /// The ledger's row for a bundle id, if it was imported.
    pub fn imported_bundle(&self, id: &str) -> Result<Option<ImportedBundle>, StoreError> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(IMPORTED_BUNDLES)?;
        match table.get(id)? {
            Some(v) => Ok(Some(
                serde_json::from_slice(v.value()).map_err(|e| corrupt("imported_bundles", e))?,
            )),
            None => Ok(None),
        }
    }

    /// Enqueues imported records whose identity ([`record_identity`]) was
    /// never imported, in order, in one transaction with their identities,
    /// what `track` makes of them (the relay's tracker: state, history,
    /// its own records, counters) and, when the whole chunk went in, the
    /// bundle's ledger row (`ledger`, on a bundle's last chunk).
    ///
    /// `max_bytes` (`when_full = "block"`): a record that would take the
    /// outbox past it is not enqueued, nor any after it (unless the outbox
    /// is empty: one record larger than the limit still moves); the
    /// outcome says how many records were consumed, and the ledger row is
    /// not written, so importing the bundle again resumes exactly there.
    pub fn import_chunk(
        &self,
        records: &[Anomaly],
        now: TimeMs,
        ledger: Option<(&str, &ImportedBundle)>,
        max_bytes: Option<u64>,
        track: Option<&mut TrackChunk<'_>>,
    ) -> Result<ChunkOutcome, StoreError> {
        let tx = self.db.begin_write()?;
        let mut out = ChunkOutcome::default();
        let mut new: Vec<&Anomaly> = Vec::new();
        {
            let mut ids = tx.open_table(IMPORTED_RECORDS)?;
            let mut outbox = tx.open_table(OUTBOX)?;
            let mut meta = tx.open_table(META)?;
            let mut oseq = read_u64(&meta, "outbox_seq")?;
            let mut obytes = read_u64(&meta, "outbox_bytes")?;
            for rec in records {
                let id = record_identity(rec);
                if ids.get(id)?.is_some() {
                    out.duplicates += 1;
                    out.consumed += 1;
                    continue;
                }
                let v = serde_json::to_vec(rec).map_err(|e| corrupt("outbox", e))?;
                if let Some(max) = max_bytes
                    && obytes > 0
                    && obytes + v.len() as u64 > max
                {
                    out.full = true;
                    break;
                }
                ids.insert(id, now)?;
                oseq += 1;
                obytes += v.len() as u64;
                outbox.insert(oseq, v.as_slice())?;
                out.enqueued += 1;
                out.consumed += 1;
                new.push(rec);
            }
            meta.insert("outbox_seq", oseq.to_be_bytes().as_slice())?;
            meta.insert("outbox_bytes", obytes.to_be_bytes().as_slice())?;
        }
        if let Some(track) = track {
            let t = track(&new);
            write_batch(
                &tx,
                &t.batch,
                &[],
                &t.counters,
                Some(now),
                self.audit_key().as_ref(),
            )?;
            warn_notes_dropped(&write_notes(&tx, &t.notes, t.notes_max)?);
            if !t.pending.is_empty() {
                let mut pending = tx.open_table(PENDING)?;
                let mut meta = tx.open_table(META)?;
                let mut seq = read_u64(&meta, "pending_seq")?;
                for event in t.pending {
                    seq += 1;
                    let row = PendingEvent {
                        recorded_at: now,
                        event,
                    };
                    let v = serde_json::to_vec(&row).map_err(|e| corrupt("pending_tracking", e))?;
                    pending.insert(seq, v.as_slice())?;
                }
                meta.insert("pending_seq", seq.to_be_bytes().as_slice())?;
            }
        }
        if let Some((id, row)) = ledger
            && !out.full
        {
            let v = serde_json::to_vec(row).map_err(|e| corrupt("imported_bundles", e))?;
            tx.open_table(IMPORTED_BUNDLES)?.insert(id, v.as_slice())?;
        }
        tx.commit()?;
        Ok(out)
    }

    /// Imported events waiting for the relay's tracker.
    pub fn pending_len(&self) -> Result<u64, StoreError> {
        let tx = self.db.begin_read()?;
        Ok(tx.open_table(PENDING)?.len()?)
    }

    /// The first `limit` pending events, in import order, with their seq.
    /// Undecodable rows are moved to `quarantine` first: one damaged import
    /// does not block every start.
    pub fn pending_read(&self, limit: usize) -> Result<Vec<(u64, PendingEvent)>, StoreError> {
        self.quarantine_undecodable(&[check::Checked::Pending])?;
        let tx = self.db.begin_read()?;
        let table = tx.open_table(PENDING)?;
        let mut out = Vec::new();
        for row in table.iter()?.take(limit) {
            let (k, v) = row?;
            let p =
                serde_json::from_slice(v.value()).map_err(|e| corrupt("pending_tracking", e))?;
            out.push((k.value(), p));
        }
        Ok(out)
    }

    /// Commits what the tracker made of the pending events up to and
    /// including seq `upto`, and removes them, in one transaction: after a
    /// crash they are either applied and gone, or still pending and not
    /// applied. Like an import's own tracking, the identities of the
    /// records enqueued are registered as imported at `at`.
    pub fn commit_drained(
        &self,
        batch: &Batch,
        counters: &BTreeMap<(String, InputResult), u64>,
        upto: u64,
        at: TimeMs,
    ) -> Result<(), StoreError> {
        self.commit_drained_notify(batch, counters, upto, at, &[], u64::MAX)
    }

    /// [`Store::commit_drained`] with the notifications the drained events
    /// cause (`[notify] imported`), in the same transaction.
    pub fn commit_drained_notify(
        &self,
        batch: &Batch,
        counters: &BTreeMap<(String, InputResult), u64>,
        upto: u64,
        at: TimeMs,
        notes: &[(String, Vec<u8>)],
        max_queued: u64,
    ) -> Result<(), StoreError> {
        let tx = self.db.begin_write()?;
        write_batch(
            &tx,
            batch,
            &[],
            counters,
            Some(at),
            self.audit_key().as_ref(),
        )?;
        warn_notes_dropped(&write_notes(&tx, notes, max_queued)?);
        tx.open_table(PENDING)?.retain_in(..=upto, |_, _| false)?;
        tx.commit()?;
        Ok(())
    }

    /// Bytes the outbox holds (what `[spool] max_bytes` limits).
    pub fn outbox_bytes(&self) -> Result<u64, StoreError> {
        let tx = self.db.begin_read()?;
        read_u64(&tx.open_table(META)?, "outbox_bytes")
    }

    pub fn outbox_stats(&self) -> Result<OutboxStats, StoreError> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(OUTBOX)?;
        let meta = tx.open_table(META)?;
        let oldest = match table.first()? {
            Some((_, v)) => {
                let rec: Anomaly =
                    serde_json::from_slice(v.value()).map_err(|e| corrupt("outbox", e))?;
                Some(rec.detected_at)
            }
            None => None,
        };
        Ok(OutboxStats {
            events: table.len()?,
            bytes: read_u64(&meta, "outbox_bytes")?,
            oldest_detected_at: oldest,
        })
    }
}

/// The writes of one tracker batch inside `tx`. Outbox records whose
/// identity ([`record_identity`]) was imported from a bundle are not
/// enqueued again (a relay's rules re-judging an imported event must not
/// duplicate the site's record); with `register`, the identities of those
/// enqueued are recorded as imported at that time (an import's own tracking,
/// so a later overlapping bundle does not send them twice either).
fn write_batch(
    tx: &redb::WriteTransaction,
    batch: &Batch,
    checkpoints: &[(String, Vec<u8>)],
    counters: &BTreeMap<(String, InputResult), u64>,
    register: Option<TimeMs>,
    audit_key: Option<&ed25519_dalek::SigningKey>,
) -> Result<(), StoreError> {
    let mut keys = tx.open_table(KEYS)?;
    for (key, state) in batch.keys.iter() {
        keys.insert(key, state)?;
    }
    for key in &batch.removed_keys {
        keys.remove(key.encode().as_slice())?;
    }
    let mut meta = tx.open_table(META)?;
    let mut seq = read_u64(&meta, "history_seq")?;
    if !batch.history.is_empty() {
        let mut history = tx.open_table(HISTORY)?;
        let mut chain = tx.open_table(audit::CHAIN)?;
        let mut appender = audit::Appender::start(&meta)?;
        let mut v = Vec::with_capacity(256);
        let first = seq + 1;
        let mut lowest = TimeMs::MAX;
        for rec in &batch.history {
            seq += 1;
            v.clear();
            codec::encode_history(rec, &mut v);
            history.insert((rec.event.release.as_str(), seq), v.as_slice())?;
            lowest = lowest.min(rec.recorded_at);
            appender.append(&mut chain, seq, rec)?;
        }
        appender.finish(&mut meta)?;
        // One time-index entry for the batch, not one per row.
        tx.open_table(HISTORY_BATCHES)?
            .insert((lowest, first), seq)?;
        meta.insert("history_seq", seq.to_be_bytes().as_slice())?;
    }
    if let Some(before) = batch.history_purge_before {
        drop(meta);
        audit::purge(tx, before, audit_key, crate::event::now_ms())?;
        meta = tx.open_table(META)?;
    }
    let mut seen = tx.open_table(SEEN_GROUPS)?;
    write_seen(&mut seen, &batch.seen)?;
    if let Some(before) = batch.seen_purge_before {
        seen.retain_in(..(before, 0u128), |_, _| false)?;
    }
    let mut outbox = tx.open_table(OUTBOX)?;
    let mut imported = tx.open_table(IMPORTED_RECORDS)?;
    // An agent that never imported pays nothing for the check.
    let check = !batch.outbox.is_empty() && (register.is_some() || !imported.is_empty()?);
    let mut oseq = read_u64(&meta, "outbox_seq")?;
    let mut obytes = read_u64(&meta, "outbox_bytes")?;
    for rec in &batch.outbox {
        if check {
            let id = record_identity(rec);
            if imported.get(id)?.is_some() {
                continue;
            }
            if let Some(at) = register {
                imported.insert(id, at)?;
            }
        }
        oseq += 1;
        let v = serde_json::to_vec(rec).map_err(|e| corrupt("outbox", e))?;
        obytes += v.len() as u64;
        outbox.insert(oseq, v.as_slice())?;
    }
    meta.insert("outbox_seq", oseq.to_be_bytes().as_slice())?;
    meta.insert("outbox_bytes", obytes.to_be_bytes().as_slice())?;
    if let Some(failing) = &batch.failing {
        let v = serde_json::to_vec(failing).map_err(|e| corrupt("meta", e))?;
        meta.insert("failing", v.as_slice())?;
    }
    if let Some(stuck) = &batch.rollups_stuck {
        let v = serde_json::to_vec(stuck).map_err(|e| corrupt("meta", e))?;
        meta.insert(ROLLUPS_STUCK, v.as_slice())?;
    }
    let mut ledger = tx.open_table(LEDGER)?;
    for (release, service, list) in &batch.approvals {
        let v = serde_json::to_vec(list).map_err(|e| corrupt("approval_ledger", e))?;
        ledger.insert((release.as_str(), service.as_str()), v.as_slice())?;
    }
    let mut cps = tx.open_table(CHECKPOINTS)?;
    for (name, bytes) in checkpoints {
        cps.insert(name.as_str(), bytes.as_slice())?;
    }
    let mut ctr = tx.open_table(COUNTERS)?;
    for ((source, result), delta) in counters {
        let name = format!("{source}\0{}", result.as_str());
        let old = ctr.get(name.as_str())?.map(|v| v.value()).unwrap_or(0);
        ctr.insert(name.as_str(), old + delta)?;
    }
    Ok(())
}

/// The seen ids of a batch, in groups: each run of ids seen at the same
/// time (a batch's are, mostly) is one row of up to [`SEEN_GROUP_MAX`] ids,
/// instead of one row per id (an insert per event was 4 % of `run --once`).
fn write_seen(
    seen: &mut redb::Table<(i64, u128), &[u8]>,
    ids: &[(u128, TimeMs)],
) -> Result<(), StoreError> {
    let mut rest: Vec<u8> = Vec::new();
    let mut i = 0;
    while i < ids.len() {
        let (first, at) = ids[i];
        rest.clear();
        let mut j = i + 1;
        while j < ids.len() && ids[j].1 == at && j - i < SEEN_GROUP_MAX {
            rest.extend_from_slice(&ids[j].0.to_be_bytes());
            j += 1;
        }
        // The same first id at the same time again (a group written by an
        // earlier batch): the ids join it.
        let old = seen.get((at, first))?.map(|v| v.value().to_vec());
        if let Some(mut old) = old {
            old.extend_from_slice(&rest);
            seen.insert((at, first), old.as_slice())?;
        } else {
            seen.insert((at, first), rest.as_slice())?;
        }
        i = j;
    }
    Ok(())
}

/// Schema 8 -> 9: the seen ids (one row each) in groups by recorded time,
/// and the history's time index (one entry per row) as one entry per run
/// of up to [`HISTORY_BATCH_MAX`] rows of the chain, with its lowest
/// recorded time. Both old tables are deleted.
fn migrate_to_groups(tx: &redb::WriteTransaction) -> Result<(), StoreError> {
    {
        let old = tx.open_table(SEEN_V8)?;
        let mut seen = tx.open_table(SEEN_GROUPS)?;
        let mut ids: Vec<(u128, TimeMs)> = Vec::new();
        for row in old.iter()? {
            let (at, h) = row?.0.value();
            ids.push((h, at));
            if ids.len() >= 64 * SEEN_GROUP_MAX {
                write_seen(&mut seen, &ids)?;
                ids.clear();
            }
        }
        write_seen(&mut seen, &ids)?;
    }
    tx.delete_table(SEEN_V8)?;
    {
        let chain = tx.open_table(audit::CHAIN)?;
        let mut batches = tx.open_table(HISTORY_BATCHES)?;
        let mut run: Option<(TimeMs, u64, u64)> = None;
        for row in chain.iter()? {
            let (k, v) = row?;
            let seq = k.value();
            // A damaged entry (`audit verify` reports it) lowers the run's
            // time to the earliest: the run is read by every as-of scan.
            let at = audit::entry_time_release(v.value()).map_or(TimeMs::MIN, |(at, _)| at);
            run = match run {
                Some((low, first, _)) if seq - first < HISTORY_BATCH_MAX => {
                    Some((low.min(at), first, seq))
                }
                Some((low, first, last)) => {
                    batches.insert((low, first), last)?;
                    Some((at, seq, seq))
                }
                None => Some((at, seq, seq)),
            };
        }
        if let Some((low, first, last)) = run {
            batches.insert((low, first), last)?;
        }
    }
    tx.delete_table(HISTORY_BY_TIME_V8)?;
    Ok(())
}

/// Schema 7 -> 8: every key state and history row in JSON is rewritten in
/// the binary form. A row that does not decode is left as it is: it stays
/// undecodable, and is quarantined like any other (`store repair`, or the
/// agent's load for keys). The audit chain hashes a canonical form of the
/// decoded row, so it verifies as before.
fn migrate_to_binary(tx: &redb::WriteTransaction) -> Result<(), StoreError> {
    let mut keys = tx.open_table(KEYS)?;
    let mut rows: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    for row in keys.iter()? {
        let (k, v) = row?;
        if v.value().first() == Some(&b'{')
            && let Ok(state) = codec::decode_key_state(v.value())
        {
            let mut b = Vec::new();
            codec::encode_key_state(&state, &mut b);
            rows.push((k.value().to_vec(), b));
        }
    }
    for (k, v) in &rows {
        keys.insert(k.as_slice(), v.as_slice())?;
    }
    // The history in chunks: its rows re-encoded are held in memory
    // between the read and the write, a long history's would not fit.
    const CHUNK: usize = 10_000;
    let mut history = tx.open_table(HISTORY)?;
    let mut after: Option<(String, u64)> = None;
    loop {
        let mut rows: Vec<((String, u64), Vec<u8>)> = Vec::new();
        let mut last = None;
        let range = match &after {
            None => history.range::<(&str, u64)>(..)?,
            Some((release, seq)) => history.range((release.as_str(), seq + 1)..)?,
        };
        for row in range.take(CHUNK) {
            let (k, v) = row?;
            let (release, seq) = k.value();
            last = Some((release.to_string(), seq));
            if v.value().first() == Some(&b'{')
                && let Ok(rec) = codec::decode_history(v.value())
            {
                let mut b = Vec::new();
                codec::encode_history(&rec, &mut b);
                rows.push(((release.to_string(), seq), b));
            }
        }
        for ((release, seq), v) in &rows {
            history.insert((release.as_str(), *seq), v.as_slice())?;
        }
        match last {
            Some(l) => after = Some(l),
            None => return Ok(()),
        }
    }
}

/// Imports have no metrics at hand: what a full queue lost is logged.
fn warn_notes_dropped(dropped: &BTreeMap<String, u64>) {
    for (dest, n) in dropped {
        tracing::warn!(
            destination = %dest,
            "notification queue full: dropped its {n} oldest messages ([notify] max_queued)"
        );
    }
}

/// Appends notification messages to their queues inside `tx`, dropping
/// the oldest of a queue past `max_queued`; returns the drops per queue.
fn write_notes(
    tx: &redb::WriteTransaction,
    notes: &[(String, Vec<u8>)],
    max_queued: u64,
) -> Result<BTreeMap<String, u64>, StoreError> {
    let mut dropped = BTreeMap::new();
    if notes.is_empty() {
        return Ok(dropped);
    }
    let mut meta = tx.open_table(META)?;
    let mut table = tx.open_table(NOTIFY)?;
    let mut seq = read_u64(&meta, "notify_seq")?;
    let mut touched: Vec<&str> = Vec::new();
    for (dest, v) in notes {
        seq += 1;
        table.insert((dest.as_str(), seq), v.as_slice())?;
        if !touched.contains(&dest.as_str()) {
            touched.push(dest);
        }
    }
    meta.insert("notify_seq", seq.to_be_bytes().as_slice())?;
    for dest in touched {
        let mut keys = Vec::new();
        for row in table.range((dest, 0)..=(dest, u64::MAX))? {
            keys.push(row?.0.value().1);
        }
        let over = (keys.len() as u64).saturating_sub(max_queued);
        for s in keys.iter().take(over as usize) {
            table.remove((dest, *s))?;
        }
        if over > 0 {
            dropped.insert(dest.to_string(), over);
        }
    }
    Ok(dropped)
}

fn read_u64(
    meta: &impl ReadableTable<&'static str, &'static [u8]>,
    name: &str,
) -> Result<u64, StoreError> {
    Ok(match meta.get(name)? {
        Some(v) => {
            let b = v.value();
            let arr: [u8; 8] = b.try_into().map_err(|_| corrupt("meta", name))?;
            u64::from_be_bytes(arr)
        }
        None => 0,
    })
}

fn corrupt(table: &'static str, detail: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        table,
        detail: detail.to_string(),
    }
}

/// What to say when the store file cannot be opened: the cause, in the
/// operator's terms, and what to do about it.
fn open_cause(path: &Path, e: &redb::DatabaseError) -> String {
    use redb::{DatabaseError as D, StorageError as S};
    match e {
        D::DatabaseAlreadyOpen => "another process has it open (a running relstat agent, or \
             a relstat command on the same data_dir): stop it first, or use the admin commands \
             that go through the running agent"
            .into(),
        D::Storage(S::Io(io)) if io.kind() == std::io::ErrorKind::PermissionDenied => format!(
            "permission denied ({io}): run as the agent's user (sudo -u relstat ...) or give \
             that user the file: chown relstat: {}",
            path.display()
        ),
        D::Storage(S::Io(io)) if io.raw_os_error() == Some(libc::EWOULDBLOCK) => {
            "another process has it open (a running relstat agent, or a relstat command on \
             the same data_dir): stop it first"
                .into()
        }
        D::Storage(S::Corrupted(detail)) => format!(
            "the file is damaged ({detail}): stop the agent and run `relstat store repair`; if \
             that fails, move {} aside (the agent starts with an empty store) or restore a backup",
            path.display()
        ),
        D::Storage(S::Io(io)) => format!("{io}"),
        D::UpgradeRequired(v) => format!(
            "it is in redb file format {v}, which this relstat cannot read: open it with the \
             relstat that wrote it"
        ),
        other => other.to_string(),
    }
}

pub mod audit;
pub mod check;
pub mod dlq;

#[cfg(test)]
pub(crate) mod tests;
