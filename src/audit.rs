//! `relstat audit export` and `relstat audit verify --export`: the audit
//! chain's rows written as NDJSON for long retention outside the host, with
//! each row's chain hashes, and checked offline.
//!
//! # Export format
//!
//! One JSON object per line:
//! - first, `{"type":"header","format":"relstat-audit-export","version":1,
//!   ...}` with the selection, the store's checkpoint and head;
//! - then one `{"type":"row","sequence":N,"prev":HEX,"hash":HEX,"row":{..}}`
//!   per history row, in chain order, `row` in its canonical form;
//! - last, `{"type":"end","rows":N,"sha256":HEX,"signature":B64}`: the
//!   SHA-256 of every byte before that line and, with a site key, the
//!   Ed25519 signature of `relstat-audit-export-v1\0` followed by those 32
//!   bytes.
//!
//! The reader ([`verify_export`]) reads one line at a time, at most
//! [`MAX_LINE`] bytes each, so a hostile file costs bounded memory.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::event::{TimeMs, format_rfc3339};
use crate::store::audit::{
    Canonical, Checkpoint, Hash, Walked, canonical_value, hex, row_hash, unhex,
};
use crate::store::{Store, StoreError};

/// The longest line an export may have (a row is a few KiB at most: its
/// fields are capped at ingestion).
pub const MAX_LINE: usize = 1024 * 1024;

const FORMAT: &str = "relstat-audit-export";
const SIGNED_PREFIX: &[u8] = b"relstat-audit-export-v1\0";

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{path}: line {line}: {detail}: not a relstat audit export, or damaged")]
    Malformed {
        path: PathBuf,
        line: u64,
        detail: String,
    },
}

/// Which rows an export holds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Select {
    /// Recorded at or after (ms).
    pub since: Option<TimeMs>,
    /// Recorded at or before (ms).
    pub until: Option<TimeMs>,
    pub environment: Option<String>,
}

impl Select {
    fn is_all(&self) -> bool {
        self.since.is_none() && self.until.is_none() && self.environment.is_none()
    }
}

/// What an export wrote.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Exported {
    pub rows: u64,
    pub bytes: u64,
    pub signed: bool,
    pub head_sequence: u64,
}

/// Writes the rows `select` keeps to `out` (as `out.tmp`, then renamed).
pub fn export(
    store: &Store,
    select: &Select,
    key: Option<&ed25519_dalek::SigningKey>,
    out: &Path,
) -> Result<Exported, AuditError> {
    let tmp = out.with_extension("tmp");
    let io = |source| AuditError::Io {
        path: tmp.clone(),
        source,
    };
    let file = std::fs::File::create(&tmp).map_err(io)?;
    let mut w = HashingWriter {
        inner: std::io::BufWriter::new(file),
        hash: Sha256::new(),
        bytes: 0,
    };
    let mut rows = 0u64;
    let mut head_sequence = 0;
    let mut failed: Option<std::io::Error> = None;
    let mut canon = Canonical::default();
    // The header and the rows from one read transaction: the running agent
    // goes on committing meanwhile.
    store.audit_walk(select.since, select.until, |walked| {
        let v = match walked {
            _ if failed.is_some() => return Ok(()),
            Walked::Start(checkpoint, head) => {
                head_sequence = head.sequence;
                json!({
                    "type": "header",
                    "format": FORMAT,
                    "version": 1,
                    "exported_at": format_rfc3339(crate::event::now_ms()),
                    "since": select.since.map(format_rfc3339),
                    "until": select.until.map(format_rfc3339),
                    "environment": select.environment,
                    "contiguous": select.is_all(),
                    "checkpoint": checkpoint,
                    "head_sequence": head.sequence,
                    "head_hash": hex(&head.hash),
                })
            }
            Walked::Row(r) => {
                if select
                    .environment
                    .as_ref()
                    .is_some_and(|e| *e != r.record.event.environment)
                {
                    return Ok(());
                }
                let row: Value =
                    serde_json::from_slice(canon.write(&r.record)).unwrap_or(Value::Null);
                rows += 1;
                json!({
                    "type": "row",
                    "sequence": r.sequence,
                    "prev": hex(&r.prev),
                    "hash": hex(&r.hash),
                    "row": row,
                })
            }
        };
        if let Err(e) = line(&mut w, &v) {
            failed = Some(e);
        }
        Ok(())
    })?;
    if let Some(e) = failed {
        return Err(io(e));
    }
    let digest: [u8; 32] = w.hash.clone().finalize().into();
    let signature = key.map(|k| {
        use ed25519_dalek::Signer;
        let mut msg = SIGNED_PREFIX.to_vec();
        msg.extend_from_slice(&digest);
        STANDARD.encode(k.sign(&msg).to_bytes())
    });
    let end = json!({
        "type": "end",
        "rows": rows,
        "sha256": hex(&digest),
        "signature": signature,
    });
    line(&mut w, &end).map_err(io)?;
    let bytes = w.bytes;
    let file = w.inner.into_inner().map_err(|e| io(e.into_error()))?;
    file.sync_all().map_err(io)?;
    std::fs::rename(&tmp, out).map_err(|source| AuditError::Io {
        path: out.to_path_buf(),
        source,
    })?;
    Ok(Exported {
        rows,
        bytes,
        signed: key.is_some(),
        head_sequence,
    })
}

struct HashingWriter<W: Write> {
    inner: W,
    hash: Sha256,
    bytes: u64,
}

fn line<W: Write>(w: &mut HashingWriter<W>, v: &Value) -> std::io::Result<()> {
    let mut b = serde_json::to_vec(v).map_err(std::io::Error::other)?;
    b.push(b'\n');
    w.hash.update(&b);
    w.bytes += b.len() as u64;
    w.inner.write_all(&b)
}

/// What `relstat audit verify --export` found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExportReport {
    pub rows: u64,
    /// `valid`, `not checked (no --key)` or `unsigned`.
    pub signature: String,
    /// The header's checkpoint's (a retention purge's is signed with the
    /// site key): `valid`, `invalid`, `not checked (no --key)` or
    /// `unsigned`.
    #[serde(default)]
    pub checkpoint_signature: String,
    /// The first problem: (line, sequence, what).
    pub broken: Option<ExportBroken>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExportBroken {
    pub line: u64,
    pub sequence: Option<u64>,
    pub problem: String,
}

/// Checks an export offline: every row's hash, the links between rows of
/// an unfiltered export (the first row to the header's checkpoint), the row
/// count, the digest and, with `key`, the export's signature and the
/// checkpoint's when it is signed.
pub fn verify_export(
    path: &Path,
    key: Option<&ed25519_dalek::VerifyingKey>,
) -> Result<ExportReport, AuditError> {
    let file = std::fs::File::open(path).map_err(|source| AuditError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut r = BufReader::new(file);
    let bad = |line: u64, detail: String| AuditError::Malformed {
        path: path.to_path_buf(),
        line,
        detail,
    };
    let mut hash = Sha256::new();
    let mut buf = Vec::new();
    let mut n = 0u64;
    let mut rows = 0u64;
    let mut contiguous = false;
    let mut last: Option<(u64, Hash)> = None;
    let mut broken: Option<ExportBroken> = None;
    let mut end: Option<Value> = None;
    let mut checkpoint: Option<Checkpoint> = None;
    let mut checkpoint_signature = "unsigned";
    loop {
        buf.clear();
        let got = (&mut r)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut buf)
            .map_err(|source| AuditError::Io {
                path: path.to_path_buf(),
                source,
            })?;
        if got == 0 {
            break;
        }
        n += 1;
        if buf.len() > MAX_LINE {
            return Err(bad(n, format!("longer than {MAX_LINE} bytes")));
        }
        if end.is_some() {
            return Err(bad(n, "data after the end line".into()));
        }
        let v: Value =
            serde_json::from_slice(&buf).map_err(|e| bad(n, format!("not a JSON object ({e})")))?;
        let kind = v.get("type").and_then(Value::as_str).unwrap_or_default();
        match (n, kind) {
            (1, "header") => {
                if v.get("format").and_then(Value::as_str) != Some(FORMAT) {
                    return Err(bad(n, format!("the header's format is not {FORMAT:?}")));
                }
                if v.get("version").and_then(Value::as_u64) != Some(1) {
                    return Err(bad(n, "unknown version (a newer relstat wrote it?)".into()));
                }
                contiguous = v.get("contiguous").and_then(Value::as_bool) == Some(true);
                // relstat writes one; without it the rows are checked alone
                if let Some(cp) = v.get("checkpoint") {
                    let cp = serde_json::from_value::<Checkpoint>(cp.clone())
                        .map_err(|e| bad(n, format!("the header's checkpoint: {e}")))?;
                    checkpoint_signature = match (&cp.signature, key.map(|k| cp.verify(k))) {
                        (None, _) => "unsigned",
                        (Some(_), None) => "not checked (no --key)",
                        (Some(_), Some(Some(true))) => "valid",
                        (Some(_), Some(_)) => {
                            broken.get_or_insert(ExportBroken {
                                line: n,
                                sequence: Some(cp.sequence),
                                problem: format!(
                                    "the {} checkpoint's signature does not verify with the given \
                                     key (the checkpoint was edited, or signed with another \
                                     site's key)",
                                    cp.reason
                                ),
                            });
                            "invalid"
                        }
                    };
                    checkpoint = Some(cp);
                }
            }
            (1, _) => return Err(bad(n, "the first line is not the header".into())),
            (_, "row") => {
                rows += 1;
                let seq = v.get("sequence").and_then(Value::as_u64);
                let prev = v.get("prev").and_then(Value::as_str).and_then(unhex);
                let stored = v.get("hash").and_then(Value::as_str).and_then(unhex);
                let row = v.get("row").filter(|r| r.is_object());
                let (Some(seq), Some(prev), Some(stored), Some(row)) = (seq, prev, stored, row)
                else {
                    return Err(bad(n, "a row needs sequence, prev, hash and row".into()));
                };
                if broken.is_none() {
                    let problem = if row_hash(&prev, seq, &canonical_value(row)) != stored {
                        Some("its hash does not match its content (edited)")
                    } else if contiguous && last.is_some_and(|(_, h)| h != prev) {
                        Some("it does not follow the row before it (a row removed or moved)")
                    } else if contiguous
                        && last.is_none()
                        && checkpoint
                            .as_ref()
                            .is_some_and(|c| unhex(&c.hash) != Some(prev) || seq <= c.sequence)
                    {
                        Some(
                            "it does not follow the header's checkpoint (the checkpoint was                              edited, or rows removed after it)",
                        )
                    } else if last.is_some_and(|(s, _)| seq <= s) {
                        Some("its sequence is not after the row before it (moved)")
                    } else {
                        None
                    };
                    if let Some(p) = problem {
                        broken = Some(ExportBroken {
                            line: n,
                            sequence: Some(seq),
                            problem: p.into(),
                        });
                    }
                }
                last = Some((seq, stored));
            }
            (_, "end") => {
                end = Some(v);
                continue;
            }
            _ => return Err(bad(n, format!("unknown line type {kind:?}"))),
        }
        hash.update(&buf);
    }
    let Some(end) = end else {
        return Err(bad(n, "no end line: the export is truncated".into()));
    };
    let digest: [u8; 32] = hash.finalize().into();
    let mut problem = None;
    if end.get("rows").and_then(Value::as_u64) != Some(rows) {
        problem = Some(format!(
            "the end line counts {} rows, the file has {rows} (rows removed or added)",
            end.get("rows").unwrap_or(&Value::Null)
        ));
    } else if end.get("sha256").and_then(Value::as_str) != Some(hex(&digest).as_str()) {
        problem = Some("the file's SHA-256 is not the end line's (edited)".into());
    }
    let sig = end.get("signature").and_then(Value::as_str);
    let signature = match (key, sig) {
        (None, Some(_)) => "not checked (no --key)".to_string(),
        (_, None) => "unsigned".to_string(),
        (Some(k), Some(s)) => {
            let mut msg = SIGNED_PREFIX.to_vec();
            msg.extend_from_slice(&digest);
            let ok = STANDARD
                .decode(s)
                .ok()
                .and_then(|b| ed25519_dalek::Signature::from_slice(&b).ok())
                .is_some_and(|sig| k.verify_strict(&msg, &sig).is_ok());
            if ok {
                "valid".to_string()
            } else {
                problem.get_or_insert_with(|| {
                    "the signature does not verify with the given key (edited, or another \
                     site's key)"
                        .into()
                });
                "invalid".to_string()
            }
        }
    };
    if key.is_some() && sig.is_none() {
        problem.get_or_insert_with(|| "the export is not signed, and --key was given".into());
    }
    if broken.is_none()
        && let Some(p) = problem
    {
        broken = Some(ExportBroken {
            line: n,
            sequence: None,
            problem: p,
        });
    }
    Ok(ExportReport {
        rows,
        signature,
        checkpoint_signature: checkpoint_signature.into(),
        broken,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;

    use super::*;
    use crate::event::Event;
    use crate::track::{Batch, HistoryRecord};

    fn rec(i: u64) -> HistoryRecord {
        let at = 1000 * i as i64;
        HistoryRecord {
            event: Event {
                time: at - 10,
                release: format!("r{}", i % 3),
                ..crate::store::tests::event(i)
            },
            recorded_at: at,
            order_time: at - 10,
            from: None,
            late: false,
            anomalies: Vec::new(),
            decision: None,
        }
    }

    /// A file store with 6 rows recorded at 1000..6000 ms.
    fn store(dir: &Path) -> Store {
        let s = Store::open(dir).unwrap();
        let b = Batch {
            history: (1..=6).map(rec).collect(),
            ..Default::default()
        };
        s.commit(&b, &[], &BTreeMap::new()).unwrap();
        s
    }

    /// Edits the stopped store's checkpoint (someone with the file), and
    /// opens it again.
    fn edit_checkpoint(s: Store, dir: &Path, f: impl FnOnce(&mut Value)) -> Store {
        use redb::ReadableTable;
        const META: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("meta");
        drop(s);
        let db = redb::Database::open(dir.join(crate::store::STORE_FILE)).unwrap();
        let tx = db.begin_write().unwrap();
        {
            let mut meta = tx.open_table(META).unwrap();
            let mut cp: Value =
                serde_json::from_slice(meta.get("audit_checkpoint").unwrap().unwrap().value())
                    .unwrap();
            f(&mut cp);
            let v = serde_json::to_vec(&cp).unwrap();
            meta.insert("audit_checkpoint", v.as_slice()).unwrap();
        }
        tx.commit().unwrap();
        drop(db);
        Store::open(dir).unwrap()
    }

    /// `audit verify --export --key` checks the signature of a retention
    /// checkpoint carried in the export's header: a store whose checkpoint
    /// was edited after the purge signed it gives an export whose own
    /// signature is valid (made later, with the key) but whose checkpoint
    /// is refused, with a message that says so.
    #[test]
    fn an_export_from_an_edited_signed_checkpoint_fails_verification() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
        s.set_audit_key(Some(key.clone()));
        let b = Batch {
            history_purge_before: Some(3500),
            ..Default::default()
        };
        s.commit(&b, &[], &BTreeMap::new()).unwrap();
        let out = dir.path().join("audit.ndjson");
        let signed_export = |s: &Store| export(s, &Select::default(), Some(&key), &out).unwrap();
        signed_export(&s);
        let public = key.verifying_key();
        let r = verify_export(&out, Some(&public)).unwrap();
        assert_eq!(r.broken, None);
        assert_eq!((r.rows, r.signature.as_str()), (3, "valid"));
        assert_eq!(r.checkpoint_signature, "valid");
        let r = verify_export(&out, None).unwrap();
        assert_eq!(r.checkpoint_signature, "not checked (no --key)");
        assert_eq!(r.broken, None);
        // the checkpoint's time moved in the store: the chain still walks
        let s = edit_checkpoint(s, dir.path(), |cp| {
            cp["time"] = (cp["time"].as_i64().unwrap() + 1).into()
        });
        assert_eq!(s.audit_verify().unwrap().broken, None);
        signed_export(&s);
        let r = verify_export(&out, Some(&public)).unwrap();
        assert_eq!(r.signature, "valid");
        assert_eq!(r.checkpoint_signature, "invalid");
        let b = r.broken.unwrap();
        assert_eq!((b.line, b.sequence), (1, Some(3)));
        assert!(
            b.problem.contains("purge checkpoint's signature"),
            "{}",
            b.problem
        );
        // another site's key: its checkpoint is refused first
        let other = ed25519_dalek::SigningKey::from_bytes(&[8; 32]).verifying_key();
        let r = verify_export(&out, Some(&other)).unwrap();
        assert!(r.broken.unwrap().problem.contains("checkpoint's signature"));
        // the header's checkpoint hash edited in an unsigned export: the
        // first row does not follow it
        export(&s, &Select::default(), None, &out).unwrap();
        let text = std::fs::read_to_string(&out).unwrap();
        let (header, rest) = text.split_once('\n').unwrap();
        let mut h: serde_json::Value = serde_json::from_str(header).unwrap();
        h["checkpoint"]["hash"] = hex(&[9; 32]).into();
        h["checkpoint"]["signature"] = serde_json::Value::Null;
        std::fs::write(&out, format!("{h}\n{rest}")).unwrap();
        let r = verify_export(&out, None).unwrap();
        assert_eq!(r.checkpoint_signature, "unsigned");
        let b = r.broken.unwrap();
        assert_eq!((b.line, b.sequence), (2, Some(4)));
        assert!(
            b.problem
                .contains("does not follow the header's checkpoint"),
            "{}",
            b.problem
        );
    }
}
