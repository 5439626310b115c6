//! Undecodable records: found by a scan of the tables whose rows the agent
//! decodes, and moved to the `quarantine` table (with their table, key,
//! bytes and error) so that one damaged record does not stop every start.
//! `relstat store check` reports them; `relstat store repair` also runs
//! redb's own integrity check and repair of the file.
//!
//! The agent quarantines what it meets at start (keys, the failing-targets
//! list, the approvals ledger, pending imports); `store repair` does every table below.

use serde::{Deserialize, Serialize};

use super::*;

/// A table whose rows can be checked by decoding them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checked {
    Keys,
    History,
    Outbox,
    Pending,
    ImportedBundles,
    /// The `failing` entry of `meta` (the forwarder's failing targets).
    Meta,
    /// The gate's approvals ledger (schema 6).
    Ledger,
}

impl Checked {
    pub const ALL: [Checked; 7] = [
        Checked::Keys,
        Checked::History,
        Checked::Outbox,
        Checked::Pending,
        Checked::ImportedBundles,
        Checked::Meta,
        Checked::Ledger,
    ];

    pub fn table(self) -> &'static str {
        match self {
            Checked::Keys => "keys",
            Checked::History => "history",
            Checked::Outbox => "outbox",
            Checked::Pending => "pending_tracking",
            Checked::ImportedBundles => "imported_bundles",
            Checked::Meta => "meta",
            Checked::Ledger => "approval_ledger",
        }
    }
}

/// A row's key, as its table types it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum RowKey {
    Bytes(Vec<u8>),
    Seq(u64),
    ReleaseSeq(String, u64),
    Name(String),
    ReleaseService(String, String),
}

impl std::fmt::Display for RowKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RowKey::Bytes(b) => write!(f, "{}", String::from_utf8_lossy(b).replace('\0', "/")),
            RowKey::Seq(n) => write!(f, "{n}"),
            RowKey::ReleaseSeq(r, n) => write!(f, "{r}#{n}"),
            RowKey::Name(n) => write!(f, "{n}"),
            RowKey::ReleaseService(r, s) => write!(f, "{r}/{s}"),
        }
    }
}

/// One undecodable row found by a scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub table: &'static str,
    key: RowKey,
    value: Vec<u8>,
    pub error: String,
}

impl Finding {
    /// The row's key, printable.
    pub fn key(&self) -> String {
        self.key.to_string()
    }
}

/// A record kept aside in `quarantine`: enough to inspect it or put it back
/// by hand.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quarantined {
    pub table: String,
    pub key: String,
    /// The stored bytes, hex.
    pub value_hex: String,
    pub error: String,
    pub at: TimeMs,
}

/// What a check or repair found.
#[derive(Debug, Default)]
pub struct Report {
    /// (table, rows) of every table checked.
    pub rows: Vec<(&'static str, u64)>,
    /// Undecodable rows still in their tables (check) or just moved (repair).
    pub findings: Vec<Finding>,
    /// Records in `quarantine` (after a repair: including those just moved).
    pub quarantined: Vec<Quarantined>,
    /// redb's own check (repair only): false when it had to repair the file.
    pub file_ok: Option<bool>,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl Store {
    /// Decodes every row of `tables`: the undecodable ones, and row counts.
    pub fn scan(&self, tables: &[Checked]) -> Result<Report, StoreError> {
        let tx = self.db.begin_read()?;
        let mut report = Report::default();
        let bad = |table: &'static str, key: RowKey, value: &[u8], error: String| Finding {
            table,
            key,
            value: value.to_vec(),
            error,
        };
        for &t in tables {
            let mut n = 0u64;
            match t {
                Checked::Keys => {
                    for row in tx.open_table(KEYS)?.iter()? {
                        let (k, v) = row?;
                        n += 1;
                        let err = if Key::decode(k.value()).is_none() {
                            Some("undecodable key".to_string())
                        } else {
                            codec::decode_key_state(v.value())
                                .err()
                                .map(|e| e.to_string())
                        };
                        if let Some(e) = err {
                            let f = bad(t.table(), RowKey::Bytes(k.value().to_vec()), v.value(), e);
                            report.findings.push(f);
                        }
                    }
                }
                Checked::History => {
                    for row in tx.open_table(HISTORY)?.iter()? {
                        let (k, v) = row?;
                        n += 1;
                        if let Err(e) = codec::decode_history(v.value()) {
                            let (r, s) = k.value();
                            let key = RowKey::ReleaseSeq(r.to_string(), s);
                            report
                                .findings
                                .push(bad(t.table(), key, v.value(), e.to_string()));
                        }
                    }
                }
                Checked::Outbox | Checked::Pending => {
                    let def = if t == Checked::Outbox {
                        OUTBOX
                    } else {
                        PENDING
                    };
                    for row in tx.open_table(def)?.iter()? {
                        let (k, v) = row?;
                        n += 1;
                        let err = if t == Checked::Outbox {
                            serde_json::from_slice::<Anomaly>(v.value()).err()
                        } else {
                            serde_json::from_slice::<PendingEvent>(v.value()).err()
                        };
                        if let Some(e) = err {
                            let key = RowKey::Seq(k.value());
                            report
                                .findings
                                .push(bad(t.table(), key, v.value(), e.to_string()));
                        }
                    }
                }
                Checked::ImportedBundles => {
                    for row in tx.open_table(IMPORTED_BUNDLES)?.iter()? {
                        let (k, v) = row?;
                        n += 1;
                        if let Err(e) = serde_json::from_slice::<ImportedBundle>(v.value()) {
                            let key = RowKey::Name(k.value().to_string());
                            report
                                .findings
                                .push(bad(t.table(), key, v.value(), e.to_string()));
                        }
                    }
                }
                Checked::Meta => {
                    let meta = tx.open_table(META)?;
                    n = meta.len()?;
                    if let Some(v) = meta.get("failing")?
                        && let Err(e) = serde_json::from_slice::<Vec<(Target, TimeMs)>>(v.value())
                    {
                        let key = RowKey::Name("failing".into());
                        report
                            .findings
                            .push(bad(t.table(), key, v.value(), e.to_string()));
                    }
                    if let Some(v) = meta.get(super::ROLLUPS_STUCK)?
                        && let Err(e) = serde_json::from_slice::<Vec<(String, String)>>(v.value())
                    {
                        let key = RowKey::Name(super::ROLLUPS_STUCK.into());
                        report
                            .findings
                            .push(bad(t.table(), key, v.value(), e.to_string()));
                    }
                }
                Checked::Ledger => {
                    for row in tx.open_table(LEDGER)?.iter()? {
                        let (k, v) = row?;
                        n += 1;
                        if let Err(e) = serde_json::from_slice::<Vec<Ruling>>(v.value()) {
                            let (r, s) = k.value();
                            let key = RowKey::ReleaseService(r.to_string(), s.to_string());
                            report
                                .findings
                                .push(bad(t.table(), key, v.value(), e.to_string()));
                        }
                    }
                }
            }
            report.rows.push((t.table(), n));
        }
        Ok(report)
    }

    /// The records kept aside in `quarantine`.
    pub fn quarantined(&self) -> Result<Vec<Quarantined>, StoreError> {
        let tx = self.db.begin_read()?;
        let mut out = Vec::new();
        for row in tx.open_table(QUARANTINE)?.iter()? {
            let (_, v) = row?;
            out.push(
                serde_json::from_slice(v.value()).unwrap_or_else(|e| Quarantined {
                    table: "quarantine".into(),
                    key: String::new(),
                    value_hex: hex(v.value()),
                    error: e.to_string(),
                    at: 0,
                }),
            );
        }
        Ok(out)
    }

    /// Moves `findings` from their tables to `quarantine`, in one
    /// transaction; the outbox's byte total follows.
    pub fn quarantine(&self, findings: &[Finding]) -> Result<(), StoreError> {
        if findings.is_empty() {
            return Ok(());
        }
        let now = crate::event::now_ms();
        let tx = self.db.begin_write()?;
        {
            let mut q = tx.open_table(QUARANTINE)?;
            let mut meta = tx.open_table(META)?;
            let mut seq = read_u64(&meta, "quarantine_seq")?;
            let mut outbox_freed = 0u64;
            for f in findings {
                let removed = match (&f.key, f.table) {
                    (RowKey::Bytes(k), "keys") => {
                        tx.open_table(KEYS)?.remove(k.as_slice())?.is_some()
                    }
                    (RowKey::ReleaseSeq(r, s), "history") => {
                        tx.open_table(HISTORY)?.remove((r.as_str(), *s))?.is_some()
                    }
                    (RowKey::Seq(s), "outbox") => {
                        let gone = tx.open_table(OUTBOX)?.remove(*s)?.is_some();
                        if gone {
                            outbox_freed += f.value.len() as u64;
                        }
                        gone
                    }
                    (RowKey::Seq(s), "pending_tracking") => {
                        tx.open_table(PENDING)?.remove(*s)?.is_some()
                    }
                    (RowKey::Name(n), "imported_bundles") => tx
                        .open_table(IMPORTED_BUNDLES)?
                        .remove(n.as_str())?
                        .is_some(),
                    (RowKey::Name(n), "meta") => meta.remove(n.as_str())?.is_some(),
                    (RowKey::ReleaseService(r, s), "approval_ledger") => tx
                        .open_table(LEDGER)?
                        .remove((r.as_str(), s.as_str()))?
                        .is_some(),
                    _ => false,
                };
                if !removed {
                    continue;
                }
                seq += 1;
                let rec = Quarantined {
                    table: f.table.to_string(),
                    key: f.key.to_string(),
                    value_hex: hex(&f.value),
                    error: f.error.clone(),
                    at: now,
                };
                let v = serde_json::to_vec(&rec).map_err(|e| corrupt("quarantine", e))?;
                q.insert(seq, v.as_slice())?;
            }
            meta.insert("quarantine_seq", seq.to_be_bytes().as_slice())?;
            if outbox_freed > 0 {
                let bytes = read_u64(&meta, "outbox_bytes")?.saturating_sub(outbox_freed);
                meta.insert("outbox_bytes", bytes.to_be_bytes().as_slice())?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Quarantines the undecodable rows of `tables`, logging each; returns
    /// how many.
    pub(super) fn quarantine_undecodable(&self, tables: &[Checked]) -> Result<u64, StoreError> {
        let report = self.scan(tables)?;
        for f in &report.findings {
            tracing::error!(
                table = f.table,
                key = %f.key,
                "corrupt record moved to the quarantine table ({}); `relstat store check` lists \
                 what was kept aside",
                f.error
            );
        }
        self.quarantine(&report.findings)?;
        Ok(report.findings.len() as u64)
    }

    /// `relstat store check`: every checked table decoded, nothing changed.
    pub fn check(&self) -> Result<Report, StoreError> {
        let mut report = self.scan(&Checked::ALL)?;
        report.quarantined = self.quarantined()?;
        Ok(report)
    }

    /// `relstat store repair`: redb's integrity check and repair of the
    /// file, then every undecodable record moved to `quarantine`.
    pub fn repair(mut self) -> Result<Report, StoreError> {
        let file_ok = self.db.check_integrity().map_err(|e| StoreError::Open {
            path: self.path.clone().unwrap_or_default(),
            cause: open_cause(self.path.as_deref().unwrap_or(Path::new("")), &e),
        })?;
        let mut report = self.scan(&Checked::ALL)?;
        self.quarantine(&report.findings)?;
        report.quarantined = self.quarantined()?;
        report.file_ok = Some(file_ok);
        Ok(report)
    }
}
