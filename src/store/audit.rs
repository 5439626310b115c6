//! The audit chain: a SHA-256 hash chain over the history rows in the order
//! they are recorded (the store's global history sequence), so that an edit,
//! a deletion or a reordering of the audit trail after the fact is
//! detectable (`relstat audit verify`).
//!
//! Each row's hash is `SHA-256("relstat-audit-v1\0" || previous hash ||
//! sequence (8 bytes, big-endian) || canonical row)`, where the canonical
//! row is the row's JSON with object keys sorted, nulls left out and no
//! whitespace ([`canonical`]): it depends on the row's content, not on how
//! the store encodes it. The chain starts from a [`Checkpoint`]: the store's
//! creation (hash of zeros), the schema-7 migration that chained the
//! history it found (`migration`: those rows were not hashed when recorded),
//! or the last retention purge (`purge`: the sequence and hash of the last
//! row removed). A purge's checkpoint is signed with `[spool]
//! signing_key_file` when one is configured.
//!
//! # Tables
//!
//! `audit_chain`: seq -> 32-byte hash, recorded_at (8 bytes, big-endian),
//! release (the row's key in `history` is (release, seq)). `meta`:
//! `audit_head` (seq, hash: the newest row) and `audit_checkpoint` (JSON).

use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{HISTORY, META, Store, StoreError, corrupt};
use crate::event::{Key, TimeMs};
use crate::track::HistoryRecord;

mod canonical;
pub use canonical::Canonical;

pub(super) const CHAIN: TableDefinition<u64, &[u8]> = TableDefinition::new("audit_chain");
const HEAD: &str = "audit_head";
const CHECKPOINT: &str = "audit_checkpoint";
/// When the last `anchor` record was written (ms, 8 bytes big-endian).
const LAST_ANCHOR: &str = "audit_last_anchor";

/// A hash of the chain.
pub type Hash = [u8; 32];

/// Where the chain starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The sequence of the row just before the chain's first (0: none).
    pub sequence: u64,
    /// That row's hash (hex; zeros when the chain starts from nothing).
    pub hash: String,
    /// When the checkpoint was written (ms since the epoch).
    pub time: TimeMs,
    /// `created` (a new store), `migration` (the history found by the
    /// schema-7 migration was chained then, not when recorded) or `purge`
    /// (rows up to `sequence` were removed by `history_retention`).
    pub reason: String,
    /// Rows the migration chained (`migration` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
    /// Ed25519 signature (base64) of [`Checkpoint::signed_bytes`] with the
    /// site key, when `[spool] signing_key_file` is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
}

impl Checkpoint {
    /// What the signature covers: `relstat-audit-checkpoint-v1\0`, the
    /// sequence and time (8 bytes big-endian each), the hash (32 bytes)
    /// and the reason.
    pub fn signed_bytes(&self) -> Vec<u8> {
        let mut v = b"relstat-audit-checkpoint-v1\0".to_vec();
        v.extend_from_slice(&self.sequence.to_be_bytes());
        v.extend_from_slice(&self.time.to_be_bytes());
        v.extend_from_slice(&unhex(&self.hash).unwrap_or([0; 32]));
        v.extend_from_slice(self.reason.as_bytes());
        v
    }

    fn sign(&mut self, key: Option<&ed25519_dalek::SigningKey>) {
        use base64::Engine;
        use ed25519_dalek::Signer;
        self.signature = key.map(|k| {
            base64::engine::general_purpose::STANDARD
                .encode(k.sign(&self.signed_bytes()).to_bytes())
        });
    }

    /// Whether the signature verifies with `key` (None: no signature).
    pub fn verify(&self, key: &ed25519_dalek::VerifyingKey) -> Option<bool> {
        use base64::Engine;
        let sig = self.signature.as_ref()?;
        let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(sig) else {
            return Some(false);
        };
        let Ok(sig) = ed25519_dalek::Signature::from_slice(&bytes) else {
            return Some(false);
        };
        Some(key.verify_strict(&self.signed_bytes(), &sig).is_ok())
    }
}

/// The first row where the chain breaks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Broken {
    pub sequence: u64,
    /// The row's key (release/service/environment[@site]), or its release
    /// when the row is gone.
    pub key: String,
    /// When the row was recorded (ms since the epoch).
    pub recorded_at: TimeMs,
    pub problem: String,
}

/// What `relstat audit verify` found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verified {
    pub checkpoint: Checkpoint,
    /// Rows walked.
    pub rows: u64,
    /// The newest row's sequence and hash (hex).
    pub head_sequence: u64,
    pub head_hash: String,
    pub broken: Option<Broken>,
}

/// The head of the chain: the newest row's sequence and hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub sequence: u64,
    pub hash: Hash,
}

/// The canonical form of a row: its JSON with object keys sorted, null
/// members left out, no whitespace (what [`canonical_value`] makes of
/// `serde_json::to_value(rec)`, written without the `Value`). A loop over
/// rows keeps one [`Canonical`] instead, for its buffers.
pub fn canonical(rec: &HistoryRecord) -> Vec<u8> {
    Canonical::default().write(rec).to_vec()
}

/// The canonical form through a `serde_json::Value`: the definition the
/// direct route ([`Canonical`]) reproduces, and its fallback.
fn canonical_via_value<T: Serialize + ?Sized>(v: &T) -> Vec<u8> {
    canonical_value(&serde_json::to_value(v).unwrap_or(serde_json::Value::Null))
}

/// [`canonical`] of any JSON value (an exported row, read back).
pub fn canonical_value(v: &serde_json::Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    write_canonical(v, &mut out);
    out
}

fn write_canonical(v: &serde_json::Value, out: &mut Vec<u8>) {
    use serde_json::Value;
    match v {
        Value::Object(m) => {
            let mut members: Vec<(&String, &Value)> =
                m.iter().filter(|(_, v)| !v.is_null()).collect();
            members.sort_by(|a, b| a.0.cmp(b.0));
            out.push(b'{');
            for (i, (k, v)) in members.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(serde_json::to_string(k).unwrap_or_default().as_bytes());
                out.push(b':');
                write_canonical(v, out);
            }
            out.push(b'}');
        }
        Value::Array(a) => {
            out.push(b'[');
            for (i, v) in a.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(v, out);
            }
            out.push(b']');
        }
        other => out.extend_from_slice(other.to_string().as_bytes()),
    }
}

/// The hash of the row at `sequence` whose predecessor's hash is `prev`.
pub fn row_hash(prev: &Hash, sequence: u64, canonical: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update(b"relstat-audit-v1\0");
    h.update(prev);
    h.update(sequence.to_be_bytes());
    h.update(canonical);
    h.finalize().into()
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub fn unhex(s: &str) -> Option<Hash> {
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

fn key_of(rec: &HistoryRecord) -> String {
    Key {
        release: rec.event.release.clone(),
        service: rec.event.service.as_str().into(),
        environment: rec.event.environment.as_str().into(),
        site: rec.event.site.as_str().into(),
    }
    .to_string()
}

fn chain_value(hash: &Hash, recorded_at: TimeMs, release: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(40 + release.len());
    chain_value_into(&mut v, hash, recorded_at, release);
    v
}

fn chain_value_into(v: &mut Vec<u8>, hash: &Hash, recorded_at: TimeMs, release: &str) {
    v.clear();
    v.extend_from_slice(hash);
    v.extend_from_slice(&recorded_at.to_be_bytes());
    v.extend_from_slice(release.as_bytes());
}

/// (recorded_at, release) of a chain entry, borrowed (the history's time
/// index reads them: [`Store::history_scan`]).
pub(super) fn entry_time_release(v: &[u8]) -> Result<(TimeMs, &str), StoreError> {
    if v.len() < 40 {
        return Err(corrupt("audit_chain", "entry shorter than 40 bytes"));
    }
    let at = TimeMs::from_be_bytes(v[32..40].try_into().expect("8 bytes"));
    let release = std::str::from_utf8(&v[40..]).map_err(|e| corrupt("audit_chain", e))?;
    Ok((at, release))
}

/// (hash, recorded_at, release) of a chain entry.
fn chain_entry(v: &[u8]) -> Result<(Hash, TimeMs, String), StoreError> {
    if v.len() < 40 {
        return Err(corrupt("audit_chain", "entry shorter than 40 bytes"));
    }
    let hash: Hash = v[..32].try_into().expect("32 bytes");
    let at = TimeMs::from_be_bytes(v[32..40].try_into().expect("8 bytes"));
    let release = String::from_utf8(v[40..].to_vec()).map_err(|e| corrupt("audit_chain", e))?;
    Ok((hash, at, release))
}

pub(super) fn read_head(
    meta: &impl ReadableTable<&'static str, &'static [u8]>,
) -> Result<Head, StoreError> {
    Ok(match meta.get(HEAD)? {
        Some(v) if v.value().len() == 40 => {
            let b = v.value();
            Head {
                sequence: u64::from_be_bytes(b[..8].try_into().expect("8 bytes")),
                hash: b[8..].try_into().expect("32 bytes"),
            }
        }
        Some(_) => return Err(corrupt("meta", HEAD)),
        None => Head {
            sequence: 0,
            hash: [0; 32],
        },
    })
}

fn write_head(meta: &mut redb::Table<&str, &[u8]>, head: Head) -> Result<(), StoreError> {
    let mut v = head.sequence.to_be_bytes().to_vec();
    v.extend_from_slice(&head.hash);
    meta.insert(HEAD, v.as_slice())?;
    Ok(())
}

fn read_checkpoint(
    meta: &impl ReadableTable<&'static str, &'static [u8]>,
) -> Result<Checkpoint, StoreError> {
    match meta.get(CHECKPOINT)? {
        Some(v) => serde_json::from_slice(v.value()).map_err(|e| corrupt("meta", e)),
        None => Err(corrupt("meta", "no audit_checkpoint")),
    }
}

fn write_checkpoint(
    meta: &mut redb::Table<&str, &[u8]>,
    cp: &Checkpoint,
) -> Result<(), StoreError> {
    let v = serde_json::to_vec(cp).map_err(|e| corrupt("meta", e))?;
    meta.insert(CHECKPOINT, v.as_slice())?;
    Ok(())
}

/// A new store: the chain starts from nothing.
pub(super) fn init_created(tx: &redb::WriteTransaction, now: TimeMs) -> Result<(), StoreError> {
    let mut meta = tx.open_table(META)?;
    let cp = Checkpoint {
        sequence: 0,
        hash: hex(&[0; 32]),
        time: now,
        reason: "created".into(),
        rows: None,
        signature: None,
    };
    write_checkpoint(&mut meta, &cp)?;
    write_head(
        &mut meta,
        Head {
            sequence: 0,
            hash: [0; 32],
        },
    )
}

/// Schema 6 -> 7: chains the history found, in sequence order, from a
/// `migration` checkpoint.
pub(super) fn migrate(tx: &redb::WriteTransaction, now: TimeMs) -> Result<(), StoreError> {
    let history = tx.open_table(HISTORY)?;
    let mut chain = tx.open_table(CHAIN)?;
    let mut meta = tx.open_table(META)?;
    let mut rows: Vec<(u64, String)> = Vec::new();
    for row in history.iter()? {
        let (k, _) = row?;
        let (release, seq) = k.value();
        rows.push((seq, release.to_string()));
    }
    rows.sort_unstable();
    let start = rows.first().map(|r| r.0 - 1).unwrap_or(0);
    let mut head = Head {
        sequence: start,
        hash: [0; 32],
    };
    let mut canon = Canonical::default();
    for (seq, release) in &rows {
        let Some(v) = history.get((release.as_str(), *seq))? else {
            continue;
        };
        // A row that does not decode is chained over its bytes as stored:
        // `store repair` may quarantine it later, which verify reports.
        let (hash, at) = match super::codec::decode_history(v.value()) {
            Ok(rec) => (
                row_hash(&head.hash, *seq, canon.write(&rec)),
                rec.recorded_at,
            ),
            Err(_) => (row_hash(&head.hash, *seq, v.value()), 0),
        };
        chain.insert(*seq, chain_value(&hash, at, release).as_slice())?;
        head = Head {
            sequence: *seq,
            hash,
        };
    }
    let cp = Checkpoint {
        sequence: start,
        hash: hex(&[0; 32]),
        time: now,
        reason: "migration".into(),
        rows: Some(rows.len() as u64),
        signature: None,
    };
    write_checkpoint(&mut meta, &cp)?;
    write_head(&mut meta, head)
}

/// Chains a batch's new history rows (already given their sequence).
pub(super) struct Appender {
    head: Head,
    /// The canonical form's and the chain entry's buffers, reused from row
    /// to row.
    canon: Canonical,
    entry: Vec<u8>,
}

impl Appender {
    pub(super) fn start(
        meta: &impl ReadableTable<&'static str, &'static [u8]>,
    ) -> Result<Self, StoreError> {
        Ok(Appender {
            head: read_head(meta)?,
            canon: Canonical::default(),
            entry: Vec::new(),
        })
    }

    pub(super) fn append(
        &mut self,
        chain: &mut redb::Table<u64, &[u8]>,
        seq: u64,
        rec: &HistoryRecord,
    ) -> Result<(), StoreError> {
        let hash = row_hash(&self.head.hash, seq, self.canon.write(rec));
        chain_value_into(&mut self.entry, &hash, rec.recorded_at, &rec.event.release);
        chain.insert(seq, self.entry.as_slice())?;
        self.head = Head {
            sequence: seq,
            hash,
        };
        Ok(())
    }

    pub(super) fn finish(self, meta: &mut redb::Table<&str, &[u8]>) -> Result<(), StoreError> {
        write_head(meta, self.head)
    }
}

/// Retention: removes the rows at the start of the chain recorded before
/// `before`, stopping at the first row recorded later (the chain stays one
/// unbroken run), and leaves a `purge` checkpoint at the last row removed.
pub(super) fn purge(
    tx: &redb::WriteTransaction,
    before: TimeMs,
    key: Option<&ed25519_dalek::SigningKey>,
    now: TimeMs,
) -> Result<u64, StoreError> {
    let mut chain = tx.open_table(CHAIN)?;
    let mut history = tx.open_table(HISTORY)?;
    let mut last: Option<(u64, Hash)> = None;
    let mut n = 0;
    loop {
        let Some((seq, v)) = chain.first()?.map(|(k, v)| (k.value(), v.value().to_vec())) else {
            break;
        };
        let (hash, at, release) = chain_entry(&v)?;
        if at >= before {
            break;
        }
        history.remove((release.as_str(), seq))?;
        chain.remove(seq)?;
        last = Some((seq, hash));
        n += 1;
    }
    if let Some((sequence, hash)) = last {
        // The time index's entries whose rows are all gone (each is keyed
        // by its lowest recorded time: below `before`).
        tx.open_table(super::HISTORY_BATCHES)?
            .retain_in(..(before, 0), |_, last| last > sequence)?;
        let mut meta = tx.open_table(META)?;
        let mut cp = Checkpoint {
            sequence,
            hash: hex(&hash),
            time: now,
            reason: "purge".into(),
            rows: None,
            signature: None,
        };
        cp.sign(key);
        write_checkpoint(&mut meta, &cp)?;
    }
    Ok(n)
}

/// The `anchor` record of `head`, written at `now` by `host` of `site`.
pub fn anchor_record(head: Head, host: &str, site: &str, now: TimeMs) -> crate::detect::Anomaly {
    crate::detect::Anomaly {
        rule: "anchor".into(),
        severity: crate::config::Severity::Info,
        release: String::new(),
        service: String::new(),
        environment: String::new(),
        site: site.to_string(),
        from: None,
        to: String::new(),
        actor: "relstat".into(),
        actor_type: crate::event::ActorType::Automation,
        source: "audit".into(),
        event_id: format!("anchor-{host}-{}-{now}", head.sequence),
        event_time: now,
        detected_at: now,
        reason: None,
        version: None,
        commit: None,
        change_class: None,
        approver: None,
        decision: None,
        audit_sequence: Some(head.sequence),
        audit_hash: Some(hex(&head.hash)),
        host: host.to_string(),
        message: format!(
            "audit chain head: sequence {} hash {}",
            head.sequence,
            hex(&head.hash)
        ),
    }
}

/// A history row with its place in the chain (`relstat audit export`).
#[derive(Debug, Clone)]
pub struct ChainedRow {
    pub sequence: u64,
    pub prev: Hash,
    pub hash: Hash,
    pub record: HistoryRecord,
}

/// What [`Store::audit_walk`] visits: first the chain's checkpoint and
/// head, then its rows. (Each is moved to the visitor once: boxing the
/// large variant would cost an allocation per row.)
#[allow(clippy::large_enum_variant)]
pub enum Walked<'a> {
    Start(&'a Checkpoint, Head),
    Row(ChainedRow),
}

impl Store {
    /// The site key that signs retention checkpoints (`[spool]
    /// signing_key_file`).
    pub fn set_audit_key(&self, key: Option<ed25519_dalek::SigningKey>) {
        *self.audit_key.write().unwrap_or_else(|p| p.into_inner()) = key;
    }

    /// The site key set by [`Store::set_audit_key`].
    pub fn audit_signing_key(&self) -> Option<ed25519_dalek::SigningKey> {
        self.audit_key()
    }

    pub(super) fn audit_key(&self) -> Option<ed25519_dalek::SigningKey> {
        self.audit_key
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Appends an `anchor` record (made by `make` from the chain's head) to
    /// the outbox, in one transaction with the head it names: it leaves the
    /// host through the SIEM or a bundle like any record. Its time, `at`, is
    /// kept as the last anchor's ([`Store::audit_last_anchor`]).
    pub fn audit_anchor(
        &self,
        at: TimeMs,
        make: impl FnOnce(Head) -> crate::detect::Anomaly,
    ) -> Result<Head, StoreError> {
        let tx = self.db.begin_write()?;
        let head;
        {
            let mut meta = tx.open_table(META)?;
            head = read_head(&meta)?;
            meta.insert(LAST_ANCHOR, at.to_be_bytes().as_slice())?;
            let v = serde_json::to_vec(&make(head)).map_err(|e| corrupt("outbox", e))?;
            let seq = super::read_u64(&meta, "outbox_seq")? + 1;
            let bytes = super::read_u64(&meta, "outbox_bytes")? + v.len() as u64;
            tx.open_table(super::OUTBOX)?.insert(seq, v.as_slice())?;
            meta.insert("outbox_seq", seq.to_be_bytes().as_slice())?;
            meta.insert("outbox_bytes", bytes.to_be_bytes().as_slice())?;
        }
        tx.commit()?;
        Ok(head)
    }

    /// When the last `anchor` record was written (None: never), so a
    /// restarted agent keeps the interval.
    pub fn audit_last_anchor(&self) -> Result<Option<TimeMs>, StoreError> {
        let tx = self.db.begin_read()?;
        let meta = tx.open_table(META)?;
        let v = meta.get(LAST_ANCHOR)?;
        match v.as_ref().map(|v| <[u8; 8]>::try_from(v.value())) {
            None => Ok(None),
            Some(Ok(b)) => Ok(Some(TimeMs::from_be_bytes(b))),
            Some(Err(_)) => Err(corrupt("meta", LAST_ANCHOR)),
        }
    }

    /// The newest row's sequence and hash.
    pub fn audit_head(&self) -> Result<Head, StoreError> {
        let tx = self.db.begin_read()?;
        read_head(&tx.open_table(META)?)
    }

    /// Where the chain starts.
    pub fn audit_checkpoint(&self) -> Result<Checkpoint, StoreError> {
        let tx = self.db.begin_read()?;
        read_checkpoint(&tx.open_table(META)?)
    }

    /// Walks the chain from its checkpoint to its head (one read
    /// transaction) and reports the first row where it breaks: a row whose
    /// content no longer gives its hash (edited, or a row before it removed
    /// or moved), a row gone from the history, a history row outside the
    /// chain, or a chain that stops short of its head.
    pub fn audit_verify(&self) -> Result<Verified, StoreError> {
        let tx = self.db.begin_read()?;
        let meta = tx.open_table(META)?;
        let checkpoint = read_checkpoint(&meta)?;
        let head = read_head(&meta)?;
        let chain = tx.open_table(CHAIN)?;
        let history = tx.open_table(HISTORY)?;
        let mut prev = unhex(&checkpoint.hash).ok_or_else(|| corrupt("meta", CHECKPOINT))?;
        let mut last_seq = checkpoint.sequence;
        let mut rows = 0u64;
        let mut broken = None;
        let mut canon = Canonical::default();
        for row in chain.iter()? {
            let (k, v) = row?;
            let seq = k.value();
            let (stored, at, release) = chain_entry(v.value())?;
            rows += 1;
            let brk = |key: String, problem: &str| Broken {
                sequence: seq,
                key,
                recorded_at: at,
                problem: problem.to_string(),
            };
            let Some(h) = history.get((release.as_str(), seq))? else {
                broken = Some(brk(
                    release,
                    "the row is missing from the history (deleted)",
                ));
                break;
            };
            let rec: HistoryRecord = match super::codec::decode_history(h.value()) {
                Ok(r) => r,
                Err(_) => {
                    broken = Some(brk(release, "the row does not decode (edited or damaged)"));
                    break;
                }
            };
            let key = key_of(&rec);
            if seq <= last_seq {
                broken = Some(brk(key, "its sequence is not after the checkpoint's"));
                break;
            }
            let computed = row_hash(&prev, seq, canon.write(&rec));
            if computed != stored {
                let problem = "its hash does not match: the row was edited, or a row before it \
                               was removed or moved";
                broken = Some(Broken {
                    recorded_at: rec.recorded_at,
                    ..brk(key, problem)
                });
                break;
            }
            prev = computed;
            last_seq = seq;
        }
        if broken.is_none() && (last_seq != head.sequence || prev != head.hash) {
            broken = Some(Broken {
                sequence: head.sequence,
                key: String::new(),
                recorded_at: 0,
                problem: format!(
                    "the chain ends at sequence {last_seq} but its head is {}: rows at the end \
                     were removed",
                    head.sequence
                ),
            });
        }
        if broken.is_none() && history.len()? != rows {
            // A row outside the chain (inserted): the first by sequence.
            let mut first: Option<(u64, String)> = None;
            for row in history.iter()? {
                let (k, _) = row?;
                let (release, seq) = k.value();
                let chained = match chain.get(seq)? {
                    Some(v) => chain_entry(v.value())?.2 == release,
                    None => false,
                };
                if !chained && first.as_ref().is_none_or(|f| seq < f.0) {
                    first = Some((seq, release.to_string()));
                }
            }
            if let Some((sequence, release)) = first {
                let (key, recorded_at) = match history.get((release.as_str(), sequence))? {
                    Some(v) => match super::codec::decode_history(v.value()) {
                        Ok(r) => (key_of(&r), r.recorded_at),
                        Err(_) => (release, 0),
                    },
                    None => (release, 0),
                };
                broken = Some(Broken {
                    sequence,
                    key,
                    recorded_at,
                    problem: "the row is not in the chain (inserted)".into(),
                });
            }
        }
        Ok(Verified {
            checkpoint,
            rows,
            head_sequence: head.sequence,
            head_hash: hex(&head.hash),
            broken,
        })
    }

    /// Visits the chained rows in sequence order with their hashes (one
    /// read transaction), those recorded in `[since, until]`.
    pub fn audit_rows(
        &self,
        since: Option<TimeMs>,
        until: Option<TimeMs>,
        mut visit: impl FnMut(ChainedRow) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        self.audit_walk(since, until, |w| match w {
            Walked::Start(..) => Ok(()),
            Walked::Row(r) => visit(r),
        })
    }

    /// [`Store::audit_rows`], first telling `visit` the checkpoint and head
    /// of the same read transaction (an export's header names the chain its
    /// rows are from, while the agent goes on committing).
    pub fn audit_walk(
        &self,
        since: Option<TimeMs>,
        until: Option<TimeMs>,
        mut visit: impl FnMut(Walked<'_>) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let tx = self.db.begin_read()?;
        let meta = tx.open_table(META)?;
        let checkpoint = read_checkpoint(&meta)?;
        visit(Walked::Start(&checkpoint, read_head(&meta)?))?;
        let chain = tx.open_table(CHAIN)?;
        let history = tx.open_table(HISTORY)?;
        let mut prev = unhex(&checkpoint.hash).ok_or_else(|| corrupt("meta", CHECKPOINT))?;
        for row in chain.iter()? {
            let (k, v) = row?;
            let seq = k.value();
            let (hash, at, release) = chain_entry(v.value())?;
            let keep = since.is_none_or(|s| at >= s) && until.is_none_or(|u| at <= u);
            if keep && let Some(h) = history.get((release.as_str(), seq))? {
                let record =
                    super::codec::decode_history(h.value()).map_err(|e| corrupt("history", e))?;
                visit(Walked::Row(ChainedRow {
                    sequence: seq,
                    prev,
                    hash,
                    record,
                }))?;
            }
            prev = hash;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;

    use super::*;
    use crate::event::Event;
    use crate::track::Batch;

    fn rec(i: u64, release: &str, recorded_at: TimeMs) -> HistoryRecord {
        HistoryRecord {
            event: Event {
                time: recorded_at - 10,
                release: release.into(),
                ..crate::store::tests::event(i)
            },
            recorded_at,
            order_time: recorded_at - 10,
            from: None,
            late: false,
            anomalies: Vec::new(),
            decision: None,
        }
    }

    /// A file store with 6 rows over 3 releases, recorded at 1000..6000 ms,
    /// in two batches.
    fn store(dir: &Path) -> Store {
        let s = Store::open(dir).unwrap();
        for batch in [[1, 2, 3], [4, 5, 6]] {
            let b = Batch {
                history: batch
                    .iter()
                    .map(|&i| rec(i, &format!("r{}", i % 3), 1000 * i as i64))
                    .collect(),
                ..Default::default()
            };
            s.commit(&b, &[], &BTreeMap::new()).unwrap();
        }
        s
    }

    /// Rewrites the history row at `seq` (an attacker with the file).
    fn edit(s: &Store, seq: u64, f: impl FnOnce(&mut HistoryRecord)) {
        let tx = s.db.begin_write().unwrap();
        {
            let mut h = tx.open_table(HISTORY).unwrap();
            let key = h
                .iter()
                .unwrap()
                .map(|r| r.unwrap().0.value().0.to_string())
                .zip(h.iter().unwrap().map(|r| r.unwrap().0.value().1))
                .find(|(_, s)| *s == seq)
                .unwrap();
            let mut r = super::super::codec::decode_history(
                h.get((key.0.as_str(), seq)).unwrap().unwrap().value(),
            )
            .unwrap();
            f(&mut r);
            let mut v = Vec::new();
            super::super::codec::encode_history(&r, &mut v);
            h.insert((key.0.as_str(), seq), v.as_slice()).unwrap();
        }
        tx.commit().unwrap();
    }

    fn release_of(seq: u64) -> String {
        format!("r{}", seq % 3)
    }

    #[test]
    fn a_clean_store_verifies_from_its_creation() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let v = s.audit_verify().unwrap();
        assert_eq!(v.broken, None);
        assert_eq!((v.rows, v.head_sequence), (6, 6));
        assert_eq!(v.checkpoint.reason, "created");
        // the head is the last row's hash over its canonical form
        let mut rows = Vec::new();
        s.audit_rows(None, None, |r| {
            rows.push(r);
            Ok(())
        })
        .unwrap();
        let last = rows.last().unwrap();
        assert_eq!(hex(&last.hash), v.head_hash);
        assert_eq!(row_hash(&last.prev, 6, &canonical(&last.record)), last.hash);
        assert_eq!(rows[1].prev, rows[0].hash);
    }

    #[test]
    fn a_row_edited_in_place_is_named_with_its_sequence_key_and_time() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        edit(&s, 4, |r| r.event.actor = "mallory".into());
        let b = s.audit_verify().unwrap().broken.unwrap();
        assert_eq!(b.sequence, 4);
        assert_eq!(b.key, "r1/svc/production");
        assert_eq!(b.recorded_at, 4000);
        assert!(b.problem.contains("edited"), "{}", b.problem);
    }

    #[test]
    fn a_deleted_row_is_named() {
        // the history row only: its chain entry names it
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let tx = s.db.begin_write().unwrap();
        tx.open_table(HISTORY)
            .unwrap()
            .remove((release_of(3).as_str(), 3))
            .unwrap();
        tx.commit().unwrap();
        let b = s.audit_verify().unwrap().broken.unwrap();
        assert_eq!((b.sequence, b.key.as_str()), (3, "r0"));
        assert!(b.problem.contains("missing"), "{}", b.problem);
        // the row and its chain entry: the next row breaks
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let tx = s.db.begin_write().unwrap();
        tx.open_table(HISTORY)
            .unwrap()
            .remove((release_of(3).as_str(), 3))
            .unwrap();
        tx.open_table(CHAIN).unwrap().remove(3).unwrap();
        tx.commit().unwrap();
        let b = s.audit_verify().unwrap().broken.unwrap();
        assert_eq!((b.sequence, b.key.as_str()), (4, "r1/svc/production"));
        // the last row and its chain entry: the head says so
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let tx = s.db.begin_write().unwrap();
        tx.open_table(HISTORY)
            .unwrap()
            .remove((release_of(6).as_str(), 6))
            .unwrap();
        tx.open_table(CHAIN).unwrap().remove(6).unwrap();
        tx.commit().unwrap();
        let b = s.audit_verify().unwrap().broken.unwrap();
        assert_eq!(b.sequence, 6);
        assert!(b.problem.contains("ends at sequence 5"), "{}", b.problem);
    }

    #[test]
    fn two_swapped_rows_are_caught_at_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let tx = s.db.begin_write().unwrap();
        {
            let mut h = tx.open_table(HISTORY).unwrap();
            let a = h.get(("r2", 2)).unwrap().unwrap().value().to_vec();
            let b = h.get(("r2", 5)).unwrap().unwrap().value().to_vec();
            h.insert(("r2", 2), b.as_slice()).unwrap();
            h.insert(("r2", 5), a.as_slice()).unwrap();
        }
        tx.commit().unwrap();
        let b = s.audit_verify().unwrap().broken.unwrap();
        assert_eq!(b.sequence, 2);
    }

    #[test]
    fn an_inserted_row_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let tx = s.db.begin_write().unwrap();
        let v = serde_json::to_vec(&rec(9, "forged", 2500)).unwrap();
        tx.open_table(HISTORY)
            .unwrap()
            .insert(("forged", 99), v.as_slice())
            .unwrap();
        tx.commit().unwrap();
        let b = s.audit_verify().unwrap().broken.unwrap();
        assert_eq!((b.sequence, b.key.as_str()), (99, "forged/svc/production"));
    }

    #[test]
    fn a_purge_leaves_a_signed_checkpoint_and_a_chain_that_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
        s.set_audit_key(Some(key.clone()));
        let before = s.audit_head().unwrap();
        let b = Batch {
            history_purge_before: Some(3500),
            ..Default::default()
        };
        s.commit(&b, &[], &BTreeMap::new()).unwrap();
        assert_eq!(s.history_len().unwrap(), 3);
        let v = s.audit_verify().unwrap();
        assert_eq!(v.broken, None);
        assert_eq!(v.rows, 3);
        assert_eq!(v.head_sequence, before.sequence);
        assert_eq!(
            (v.checkpoint.reason.as_str(), v.checkpoint.sequence),
            ("purge", 3)
        );
        assert_eq!(v.checkpoint.verify(&key.verifying_key()), Some(true));
        let other = ed25519_dalek::SigningKey::from_bytes(&[8; 32]);
        assert_eq!(v.checkpoint.verify(&other.verifying_key()), Some(false));
        // the chain goes on after the purge
        let b = Batch {
            history: vec![rec(7, "r1", 7000)],
            ..Default::default()
        };
        s.commit(&b, &[], &BTreeMap::new()).unwrap();
        assert_eq!(s.audit_verify().unwrap().broken, None);
        // and an edit after it is still caught
        edit(&s, 5, |r| r.late = true);
        assert_eq!(s.audit_verify().unwrap().broken.unwrap().sequence, 5);
    }

    /// The store written by the relstat of schema 6 (tests/fixtures/store/
    /// schema6, `write_schema6_store_fixture`) opens, its history is
    /// chained from a `migration` checkpoint and reads as before, and the
    /// chain goes on from it.
    #[test]
    fn a_schema6_store_is_chained_at_migration_and_verifies() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/store/schema6");
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(
            src.join(super::super::STORE_FILE),
            dir.path().join(super::super::STORE_FILE),
        )
        .unwrap();
        let s = Store::open(dir.path()).unwrap();
        let v = s.audit_verify().unwrap();
        assert_eq!(v.broken, None);
        assert_eq!(v.checkpoint.reason, "migration");
        assert_eq!(v.checkpoint.sequence, 0);
        assert_eq!(v.checkpoint.rows, Some(9));
        assert_eq!((v.rows, v.head_sequence), (9, 9));
        // the history reads as the schema-6 relstat wrote it
        let r4: Vec<String> = s
            .history("r4")
            .unwrap()
            .iter()
            .map(|r| format!("{}:{}@{}", r.event.id, r.event.status, r.recorded_at))
            .collect();
        assert_eq!(r4, ["d4:deployed@1000500", "a4:approved@1000500"]);
        // chained in sequence order, across releases
        let mut seqs = Vec::new();
        s.audit_rows(None, None, |r| {
            seqs.push((r.sequence, r.record.event.id));
            Ok(())
        })
        .unwrap();
        let ids: Vec<&str> = seqs.iter().map(|(_, id)| id.as_str()).collect();
        assert_eq!(ids, ["a1", "d1", "d2", "a3", "d3", "d4", "a4", "a5", "d5"]);
        let snap = s.load().unwrap();
        assert_eq!(snap.approvals.len(), 3);
        drop(s);
        // opened again: not migrated twice; new rows chain on
        let s = Store::open(dir.path()).unwrap();
        let b = Batch {
            history: vec![rec(10, "r9", 2_000_000)],
            ..Default::default()
        };
        s.commit(&b, &[], &BTreeMap::new()).unwrap();
        let v = s.audit_verify().unwrap();
        assert_eq!((v.broken, v.rows, v.head_sequence), (None, 10, 10));
        assert_eq!(v.checkpoint.reason, "migration");
        edit(&s, 3, |r| r.event.status = "failed".into());
        let b = s.audit_verify().unwrap().broken.unwrap();
        assert_eq!((b.sequence, b.key.as_str()), (3, "r2/svc/production"));
    }

    /// The last anchor's time is kept in the store (a restarted agent
    /// keeps the interval).
    #[test]
    fn the_last_anchor_time_is_kept_across_opens() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        assert_eq!(s.audit_last_anchor().unwrap(), None);
        let head = s
            .audit_anchor(123_456, |h| anchor_record(h, "web-1", "", 123_456))
            .unwrap();
        assert_eq!(head.sequence, 6);
        drop(s);
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.audit_last_anchor().unwrap(), Some(123_456));
    }

    /// The hashes of rows already written do not change: a store whose
    /// chain was hashed through `serde_json::Value` (the relstat of
    /// aff345e; tests/fixtures/store/schema7-chain, its SOURCES.md entry)
    /// verifies with the direct route, to the head that relstat reported.
    #[test]
    fn a_chain_hashed_through_the_value_route_still_verifies() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/store/schema7-chain");
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(
            src.join(super::super::STORE_FILE),
            dir.path().join(super::super::STORE_FILE),
        )
        .unwrap();
        let s = Store::open(dir.path()).unwrap();
        let v = s.audit_verify().unwrap();
        assert_eq!(v.broken, None);
        assert_eq!((v.checkpoint.reason.as_str(), v.rows), ("migration", 14));
        assert_eq!(
            v.head_hash,
            "b284bf8a64b5d87bd919324cf410262e2304f34800c5d1abb12db9e3b638494d"
        );
        // its rows hold what the direct route has to get right
        let mut rows = Vec::new();
        s.audit_rows(None, None, |r| {
            rows.push(r.record);
            Ok(())
        })
        .unwrap();
        assert!(rows.iter().any(|r| r.decision.is_some()));
        assert!(rows.iter().any(|r| r.late));
        assert!(
            rows.iter()
                .any(|r| r.event.reason.as_deref().is_some_and(|t| {
                    t.contains('\u{2028}') && t.contains('\u{1}') && t.contains('\\')
                }))
        );
    }

    #[test]
    fn the_canonical_form_sorts_keys_and_drops_nulls() {
        let r = rec(1, "r1", 1000);
        let c = String::from_utf8(canonical(&r)).unwrap();
        assert!(c.starts_with("{\"event\":{\"actor\":\"bot\""), "{c}");
        assert!(!c.contains("null") && !c.contains(' '), "{c}");
        assert!(c.find("\"order_time\"").unwrap() < c.find("\"recorded_at\"").unwrap());
    }
}
