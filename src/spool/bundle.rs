//! Signed spool bundles: the outbox carried out of an air-gapped site on
//! removable media and imported on a connected relay, exactly once.
//!
//! # Format (version 1)
//!
//! A gzip-compressed tar archive (ustar) with exactly three regular files,
//! in this order:
//!
//! 1. `manifest.json`: [`Manifest`], at most 64 KiB.
//! 2. `manifest.sig`: the Ed25519 signature of the exact bytes of
//!    `manifest.json` by the site's private key, as one line of standard
//!    base64 (64 bytes decoded).
//! 3. `events.ndjson`: the outbox records ([`Anomaly`], docs/events.md),
//!    one compact JSON object per line, in outbox order. Its SHA-256 and
//!    size are in the manifest, so the signature covers the payload too.
//!
//! The manifest comes first so an importer checks the signature before it
//! reads a byte of payload. Nothing else may be in the archive, and nothing
//! may follow it: after the tar's end marker only its zero padding (at most
//! [`MAX_TAR_PADDING`]), and the file ends with the (single) gzip member.
//!
//! # Export
//!
//! One read transaction gives a stable view of the outbox; a first pass
//! hashes and counts the records, a second streams them into the tar
//! (the tar header needs the payload size first) through gzip to
//! `FILE.tmp`, which is fsynced and renamed to `FILE`, then the directory
//! is fsynced. Only then, without `--keep`, is the exported seq range
//! removed from the outbox in one transaction. A crash leaves the outbox
//! whole and at most a `FILE.tmp` that nothing imports.
//!
//! # Import
//!
//! Before anything is enqueued: the format version, the site's trusted key
//! (`<trusted_keys_dir>/<site>.pub`), the signature, then a streaming pass
//! over the payload (size, SHA-256, count, each line a record). A second
//! pass over the same open file enqueues in chunks of [`CHUNK`] records per
//! store transaction, each with the identities of its records; the last
//! chunk also writes the bundle's row in the import ledger, and is held
//! back until the second pass has re-checked the hash. Records whose
//! identity (`event_id` + `rule`) was ever imported are skipped, so a
//! bundle imported twice, or two overlapping bundles, forward each record
//! once; an import interrupted by a crash resumes where it stopped.
//!
//! # Hostile input
//!
//! Memory is bounded whatever the file holds (a gzip stream inflates a
//! thousandfold): tar entries are read raw, each checked by name, type and
//! header size before any of its data is read ([`MAX_MANIFEST`],
//! [`MAX_SIGNATURE`], the signed `payload_bytes` for the payload); the
//! payload is hashed as it streams through a 64 KiB buffer, one line of at
//! most [`MAX_LINE`] at a time; one event's records are capped
//! ([`MAX_EVENT_RECORDS`], [`MAX_EVENT_BYTES`]) and a chunk ends by size too
//! ([`CHUNK_BYTES`]), so an import transaction is bounded. Every loop
//! consumes input of a size checked beforehand.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, Write};
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signature, Signer, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::Settings;
use super::keys::{self, KeyError};
use crate::detect::Anomaly;
use crate::event::TimeMs;
use crate::store::{ImportedBundle, Store, StoreError};

/// The bundle format this relstat writes and reads.
pub const FORMAT_VERSION: u64 = 1;
/// Records per import transaction.
pub const CHUNK: usize = 10_000;
const MANIFEST: &str = "manifest.json";
const SIGNATURE: &str = "manifest.sig";
const PAYLOAD: &str = "events.ndjson";
/// The most `manifest.json` may be, checked in its tar header before a
/// byte of it is read.
pub const MAX_MANIFEST: u64 = 64 * 1024;
/// The most `manifest.sig` may be (its line is 89 bytes).
pub const MAX_SIGNATURE: u64 = 1024;
/// The most one line of `events.ndjson` may be, newline included (as a
/// line of a tailed log): a longer line is refused as a malformed record
/// once this much of it is read, whatever the signature says.
pub const MAX_LINE: usize = 1024 * 1024;
/// The most records of one event (consecutive lines with the same
/// `event_id`) a payload may hold: an import transaction holds all of an
/// event's records, so this bounds it. A real event has one record per
/// rule that fired, plus its transition.
pub const MAX_EVENT_RECORDS: u64 = CHUNK as u64;
/// The most bytes of lines one event's records may take (as above).
pub const MAX_EVENT_BYTES: u64 = 16 * 1024 * 1024;
/// An import chunk also ends (between two events) once its lines reach
/// this many bytes: with the caps above, a chunk holds at most
/// 2 x [`CHUNK`] records and 2 x 16 MiB of lines.
pub const CHUNK_BYTES: u64 = 16 * 1024 * 1024;
/// The most zero bytes allowed after the tar archive's end inside the gzip
/// stream (tar pads its output to a whole record, 10 KiB for GNU tar);
/// anything else there is refused.
pub const MAX_TAR_PADDING: u64 = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "[spool] signing_key_file is not set: create this site's key pair with \
         `relstat keygen --out /etc/relstat/bundle` and set signing_key_file = \"/etc/relstat/bundle.key\""
    )]
    NoSigningKey,
    #[error("[spool] trusted_keys_dir is not set: put each site's public key there as <site>.pub")]
    NoTrustedKeys,
    #[error("[agent] site is empty: a bundle is signed for a site; set [agent] site")]
    NoSite,
    #[error("the outbox is empty: nothing to export")]
    Empty,
    #[error("{0}")]
    Key(#[from] KeyError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{path}: not a relstat bundle: {detail}")]
    NotABundle { path: PathBuf, detail: String },
    #[error(
        "{path}: damaged or truncated bundle ({detail}); nothing imported: copy it again from the site"
    )]
    Damaged { path: PathBuf, detail: String },
    #[error(
        "{path}: unknown bundle format version {found} (this relstat reads version {FORMAT_VERSION}); \
         nothing imported: import it with a relstat that reads that version"
    )]
    UnknownVersion { path: PathBuf, found: String },
    #[error(
        "{path}: untrusted site {site:?}: no public key {key}; nothing imported: \
         add the site's .pub file there if you trust it"
    )]
    UntrustedSite {
        path: PathBuf,
        site: String,
        key: String,
    },
    #[error(
        "{path}: bad signature: the manifest says site {site:?} but it is signed by the key of \
         site {signer:?}; nothing imported (a site's key cannot sign another site's bundles)"
    )]
    WrongSiteKey {
        path: PathBuf,
        site: String,
        signer: String,
    },
    #[error(
        "{path}: bad signature: manifest.json is not signed by site {site:?}'s trusted key {key} \
         (the manifest was altered, or signed by an untrusted key); nothing imported"
    )]
    BadSignature {
        path: PathBuf,
        site: String,
        key: String,
    },
    #[error(
        "{path}: bundle id {bundle_id} was already imported from site {imported_site:?}, but this \
         bundle is signed by site {site:?}; nothing imported (bundle ids are random: a reused id \
         means a forged or copied manifest)"
    )]
    ReusedId {
        path: PathBuf,
        bundle_id: String,
        site: String,
        imported_site: String,
    },
    #[error(
        "{path}: the spool is full ([spool] max_bytes = {max_bytes} bytes, when_full = \"block\"): \
         {imported} of the bundle's {count} records are imported, the rest wait{earlier}; nothing \
         is lost or doubled: run the same import again once the SIEM has drained the spool \
         (records already imported are skipped)"
    )]
    SpoolFull {
        path: PathBuf,
        max_bytes: u64,
        imported: u64,
        count: u64,
        /// Mentions bundles of the same command imported before this one.
        earlier: String,
    },
    #[error(
        "{path}: payload checksum mismatch: events.ndjson {detail}; the payload was altered \
         or damaged; nothing imported"
    )]
    BadPayload { path: PathBuf, detail: String },
    #[error(
        "{path}: events.ndjson is {found} bytes in the archive, but the {signed}manifest says \
         {expected}: the payload was altered or replaced; refused before reading it, nothing \
         imported"
    )]
    PayloadSize {
        path: PathBuf,
        found: u64,
        expected: u64,
        /// "signed " or "unsigned ".
        signed: &'static str,
    },
    #[error(
        "outbox record {seq} is {bytes} bytes, more than the {MAX_LINE} a bundle line may be \
         (a relay refuses it); nothing exported"
    )]
    RecordTooLong { seq: u64, bytes: u64 },
    #[error("{path}: malformed record at line {line} of events.ndjson: {detail}; nothing imported")]
    Malformed {
        path: PathBuf,
        line: u64,
        detail: String,
    },
    #[error(
        "{path}: {detail} after the end of the bundle; nothing imported: a bundle is one gzip \
         stream holding one tar archive and nothing after them (copy it again from the site)"
    )]
    TrailingData { path: PathBuf, detail: String },
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> BundleError + '_ {
    move |source| BundleError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// `manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format_version: u64,
    /// Random 128-bit id, hex: the key of the relay's import ledger.
    pub bundle_id: String,
    pub site: String,
    pub host: String,
    pub agent_version: String,
    /// Outbox sequence numbers of the first and last exported record.
    pub first_seq: u64,
    pub last_seq: u64,
    /// Records (lines) in `events.ndjson`.
    pub count: u64,
    /// Size of `events.ndjson` in bytes.
    pub payload_bytes: u64,
    /// SHA-256 of `events.ndjson`, lowercase hex.
    pub payload_sha256: String,
    /// RFC 3339.
    pub created_at: String,
}

/// What an export wrote.
#[derive(Debug, Clone, Serialize)]
pub struct ExportReport {
    pub path: PathBuf,
    pub manifest: Manifest,
    pub file_bytes: u64,
    /// Records removed from the outbox (0 with `--keep`).
    pub removed: u64,
}

/// What an import did with one bundle.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ImportReport {
    pub path: PathBuf,
    pub bundle_id: String,
    pub site: String,
    pub host: String,
    pub count: u64,
    /// Records enqueued for forwarding.
    pub enqueued: u64,
    /// Records skipped: imported before (by this or an overlapping bundle).
    pub duplicates: u64,
    /// Set when the ledger already had this bundle: nothing was read.
    pub already_imported_at: Option<String>,
    /// Transition records fed into the relay's tracker (`track_imports`).
    #[serde(default)]
    pub tracked: u64,
    /// Transition records set aside for the relay's tracker, applied when
    /// the agent starts (an import into a stopped agent).
    #[serde(default)]
    pub pending: u64,
    /// Transition records that were not an event (counted `invalid`).
    #[serde(default)]
    pub invalid: u64,
    /// Oldest outbox records dropped to make room (`when_full = "drop_oldest"`).
    #[serde(default)]
    pub dropped: u64,
}

/// The signature check `inspect` reports.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "snake_case", tag = "status")]
pub enum SignatureStatus {
    Valid { key: PathBuf },
    NotChecked { why: String },
}

/// `spool inspect FILE`.
#[derive(Debug, Clone, Serialize)]
pub struct Inspection {
    pub path: PathBuf,
    pub file_bytes: u64,
    pub manifest: Manifest,
    pub signature: SignatureStatus,
    /// The payload matched the manifest's size, hash and count.
    pub payload_verified: bool,
    pub oldest_detected_at: Option<String>,
    pub newest_detected_at: Option<String>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A progress bar on stderr when it is a terminal (and `show`), else hidden.
fn bar(show: bool, len: u64, what: &str, bytes: bool) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    if !show || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let pb = indicatif::ProgressBar::new(len);
    let tmpl = if bytes {
        "{msg} [{bar:40}] {bytes}/{total_bytes} ({eta})"
    } else {
        "{msg} [{bar:40}] {pos}/{len} ({eta})"
    };
    if let Ok(style) = indicatif::ProgressStyle::with_template(tmpl) {
        pb.set_style(style.progress_chars("=> "));
    }
    pb.set_message(what.to_string());
    pb
}

/// `relstat spool export --out FILE [--keep]`.
pub fn export(
    store: &Store,
    settings: &Settings,
    out: &Path,
    keep: bool,
    progress: bool,
) -> Result<ExportReport, BundleError> {
    if settings.site.is_empty() {
        return Err(BundleError::NoSite);
    }
    let key_file = settings
        .signing_key_file
        .as_ref()
        .ok_or(BundleError::NoSigningKey)?;
    let key = keys::load_signing(key_file)?;
    let snap = store.outbox_snapshot()?;

    // Pass 1: size, hash, count, seq range.
    let mut hasher = Sha256::new();
    let (mut count, mut bytes) = (0u64, 0u64);
    let (mut first, mut last) = (None, 0u64);
    snap.scan::<BundleError>(|seq, rec| {
        // A relay refuses a longer line: do not export what cannot import.
        if rec.len() + 1 > MAX_LINE {
            return Err(BundleError::RecordTooLong {
                seq,
                bytes: rec.len() as u64 + 1,
            });
        }
        hasher.update(rec);
        hasher.update(b"\n");
        bytes += rec.len() as u64 + 1;
        count += 1;
        first.get_or_insert(seq);
        last = seq;
        Ok(())
    })?;
    let first = first.ok_or(BundleError::Empty)?;
    let mut id = [0u8; 16];
    getrandom::fill(&mut id).map_err(|e| KeyError::Random(e.to_string()))?;
    let manifest = Manifest {
        format_version: FORMAT_VERSION,
        bundle_id: hex(&id),
        site: settings.site.clone(),
        host: settings.host.clone(),
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
        first_seq: first,
        last_seq: last,
        count,
        payload_bytes: bytes,
        payload_sha256: hex(&hasher.finalize()),
        created_at: crate::event::format_rfc3339(crate::event::now_ms()),
    };
    let manifest_json = serde_json::to_vec_pretty(&manifest).expect("a manifest serializes");
    let sig = format!("{}\n", STANDARD.encode(key.sign(&manifest_json).to_bytes()));

    // Pass 2: the archive, to FILE.tmp.
    let mut tmp_name = out.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = PathBuf::from(tmp_name);
    let io = io_err(&tmp);
    let file = File::create(&tmp).map_err(&io)?;
    let gz = flate2::write::GzEncoder::new(
        std::io::BufWriter::with_capacity(1 << 16, file),
        flate2::Compression::default(),
    );
    let mut tar = tar::Builder::new(gz);
    let mtime = (crate::event::now_ms() / 1000).max(0) as u64;
    let header = |name: &str, size: u64| -> Result<tar::Header, BundleError> {
        let mut h = tar::Header::new_ustar();
        h.set_path(name).map_err(&io)?;
        h.set_size(size);
        h.set_mode(0o644);
        h.set_mtime(mtime);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        Ok(h)
    };
    tar.append(
        &header(MANIFEST, manifest_json.len() as u64)?,
        &manifest_json[..],
    )
    .map_err(&io)?;
    tar.append(&header(SIGNATURE, sig.len() as u64)?, sig.as_bytes())
        .map_err(&io)?;
    // The payload is streamed straight into the archive: header, data,
    // zero padding to the 512-byte block, as tar::Builder::append would.
    let h = header(PAYLOAD, bytes)?;
    let w = tar.get_mut();
    w.write_all(h.as_bytes()).map_err(&io)?;
    let pb = bar(progress, count, "export", false);
    let mut again = Sha256::new();
    let mut written = 0u64;
    snap.scan::<BundleError>(|seq, rec| {
        if seq > last {
            return Ok(());
        }
        w.write_all(rec).map_err(&io)?;
        w.write_all(b"\n").map_err(&io)?;
        again.update(rec);
        again.update(b"\n");
        written += rec.len() as u64 + 1;
        pb.inc(1);
        Ok(())
    })?;
    pb.finish_and_clear();
    if written != bytes || hex(&again.finalize()) != manifest.payload_sha256 {
        let _ = std::fs::remove_file(&tmp);
        return Err(BundleError::Damaged {
            path: tmp.clone(),
            detail: "the outbox changed while it was exported".into(),
        });
    }
    let pad = (512 - bytes % 512) % 512;
    w.write_all(&vec![0u8; pad as usize]).map_err(&io)?;
    let gz = tar.into_inner().map_err(&io)?;
    let buf = gz.finish().map_err(&io)?;
    let file = buf.into_inner().map_err(|e| io(e.into_error()))?;
    file.sync_all().map_err(&io)?;
    let file_bytes = file.metadata().map_err(&io)?.len();
    drop(file);
    std::fs::rename(&tmp, out).map_err(io_err(out))?;
    let dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))?;
    drop(snap);
    let removed = if keep {
        0
    } else {
        store.outbox_remove_range(first, last)?
    };
    Ok(ExportReport {
        path: out.to_path_buf(),
        manifest,
        file_bytes,
        removed,
    })
}

/// How `verify` treats the signature.
enum Trust<'a> {
    /// Import: the site must have a trusted key and the signature must verify.
    Require(&'a Path),
    /// Inspect: check it when a key is there.
    IfKnown(Option<&'a Path>),
}

type Gz = flate2::bufread::GzDecoder<BufReader<File>>;
type Archive = tar::Archive<Gz>;
type Entries<'a> = tar::Entries<'a, Gz>;
type Entry<'a> = tar::Entry<'a, Gz>;

/// The bundle as a tar archive inside one gzip member. The `bufread`
/// decoder stops at the member's end and leaves what follows in the
/// `BufReader`, where [`check_end`] finds it.
fn open_archive(file: &File, path: &Path) -> Result<Archive, BundleError> {
    let f = file.try_clone().map_err(io_err(path))?;
    Ok(tar::Archive::new(flate2::bufread::GzDecoder::new(
        BufReader::with_capacity(1 << 16, f),
    )))
}

/// The archive's entries, raw: a GNU long-name or PAX extension entry is
/// not interpreted (the tar crate would read it whole into memory,
/// whatever its size) but returned as an entry of its own, which
/// [`next_entry`] refuses by name and type before reading any of it.
fn entries<'a>(archive: &'a mut Archive, path: &Path) -> Result<Entries<'a>, BundleError> {
    archive
        .entries()
        .map(|e| e.raw(true))
        .map_err(|e| damaged(path, "the archive", e))
}

/// An error while reading the archive: damaged (truncated, bad gzip) vs not a bundle.
fn damaged(path: &Path, what: &str, e: std::io::Error) -> BundleError {
    BundleError::Damaged {
        path: path.to_path_buf(),
        detail: format!("reading {what}: {e}"),
    }
}

/// The next entry, which must be the regular file `name`; nothing of its
/// data is read yet (its size is in `entry.size()`).
fn next_entry<'a>(
    entries: &mut Entries<'a>,
    path: &Path,
    name: &str,
) -> Result<Entry<'a>, BundleError> {
    let not = |detail: String| BundleError::NotABundle {
        path: path.to_path_buf(),
        detail,
    };
    let entry = match entries.next() {
        None => {
            return Err(BundleError::Damaged {
                path: path.to_path_buf(),
                detail: format!("{name} is missing: the archive ends early"),
            });
        }
        Some(e) => e.map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                damaged(path, name, e)
            } else {
                not(format!("not a gzip tar archive ({e})"))
            }
        })?,
    };
    let found = entry
        .path()
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    if found != name || entry.header().entry_type() != tar::EntryType::Regular {
        return Err(not(format!(
            "expected the file {name} next, found {found:?}"
        )));
    }
    Ok(entry)
}

/// A small entry read whole: its size is checked against `max` in its
/// header, before a byte of it is read.
fn read_small(
    entry: &mut Entry<'_>,
    max: u64,
    path: &Path,
    name: &str,
) -> Result<Vec<u8>, BundleError> {
    let size = entry.size();
    if size > max {
        return Err(BundleError::NotABundle {
            path: path.to_path_buf(),
            detail: format!("{name} is {size} bytes, more than the {max} it may be"),
        });
    }
    let mut buf = Vec::with_capacity(size as usize);
    entry
        .take(max)
        .read_to_end(&mut buf)
        .map_err(|e| damaged(path, name, e))?;
    Ok(buf)
}

/// A bundle whose manifest is authentic and whose payload matches it.
struct Verified {
    manifest: Manifest,
    signature: SignatureStatus,
    /// False when the payload was not read (a bundle already imported).
    payload_verified: bool,
    oldest: Option<TimeMs>,
    newest: Option<TimeMs>,
}

/// What one pass over the payload found.
#[derive(Debug)]
struct Streamed {
    bytes: u64,
    sha256: String,
    /// Lines.
    count: u64,
    /// The first line that is not a record: (line number, why).
    malformed: Option<(u64, String)>,
}

/// Appends the next line of `r` (newline included) to `line` and to
/// `hasher`, as long as it fits in `cap` bytes; returns the bytes taken and
/// whether the line is whole. A line longer than `cap` stops there (the
/// caller refuses it): at most `cap` bytes are ever held.
fn next_line(
    r: &mut impl BufRead,
    line: &mut Vec<u8>,
    hasher: &mut Sha256,
    cap: usize,
) -> std::io::Result<(u64, bool)> {
    let mut total = 0u64;
    // Bounded: each turn consumes at least one byte of a finite entry, or returns.
    loop {
        let buf = r.fill_buf()?;
        if buf.is_empty() {
            return Ok((total, true));
        }
        let (take, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (buf.len(), false),
        };
        if line.len() + take > cap {
            return Ok((total, false));
        }
        line.extend_from_slice(&buf[..take]);
        hasher.update(&buf[..take]);
        r.consume(take);
        total += take as u64;
        if done {
            return Ok((total, true));
        }
    }
}

/// Streams the payload entry through one 64 KiB buffer and one line of at
/// most [`MAX_LINE`]: every byte into the SHA-256, each line parsed as a
/// record and handed to `each` with its size. A line over the cap, or an
/// event with more records than [`MAX_EVENT_RECORDS`] / [`MAX_EVENT_BYTES`]
/// in a row, is refused at once. The first line that is not a record is
/// refused at once when `strict`; otherwise it is remembered and the rest
/// only hashed (`count` then stops there), so that [`check_payload`] can tell a payload altered since
/// it was signed (checksum mismatch) from one the site wrote so (malformed).
fn stream_payload(
    entry: &mut impl Read,
    path: &Path,
    strict: bool,
    mut each: impl FnMut(Anomaly, u64) -> Result<(), BundleError>,
) -> Result<Streamed, BundleError> {
    let mut r = BufReader::with_capacity(1 << 16, entry);
    let mut hasher = Sha256::new();
    let mut line = Vec::with_capacity(4096);
    let (mut total, mut n) = (0u64, 0u64);
    let mut malformed = None;
    // The current run of one event's records: its id, records, bytes.
    let (mut run_id, mut run_records, mut run_bytes) = (String::new(), 0u64, 0u64);
    let bad = |line: u64, detail: String| BundleError::Malformed {
        path: path.to_path_buf(),
        line,
        detail,
    };
    // Bounded: each turn takes at least one byte of a finite entry.
    loop {
        line.clear();
        let (got, whole) = next_line(&mut r, &mut line, &mut hasher, MAX_LINE)
            .map_err(|e| damaged(path, PAYLOAD, e))?;
        if !whole {
            return Err(bad(
                n + 1,
                format!("the line is longer than {MAX_LINE} bytes, the most a record line may be"),
            ));
        }
        if got == 0 {
            break;
        }
        n += 1;
        total += got;
        let rec: Anomaly = match serde_json::from_slice(&line) {
            Ok(rec) => rec,
            Err(e) => {
                let why = format!("not a record ({e})");
                if strict {
                    return Err(bad(n, why));
                }
                malformed = Some((n, why));
                // The rest only for the checksum, in whole buffers (not
                // line by line: a run of empty lines costs no more).
                // Bounded: each turn consumes a non-empty buffer of the entry.
                loop {
                    let buf = r.fill_buf().map_err(|e| damaged(path, PAYLOAD, e))?;
                    if buf.is_empty() {
                        break;
                    }
                    let k = buf.len();
                    hasher.update(buf);
                    total += k as u64;
                    r.consume(k);
                }
                break;
            }
        };
        if rec.event_id == run_id {
            run_records += 1;
            run_bytes += got;
        } else {
            run_id.clone_from(&rec.event_id);
            (run_records, run_bytes) = (1, got);
        }
        if run_records > MAX_EVENT_RECORDS || run_bytes > MAX_EVENT_BYTES {
            return Err(bad(
                n,
                format!(
                    "event {run_id:?} has more than {MAX_EVENT_RECORDS} records or \
                     {MAX_EVENT_BYTES} bytes of them in a row, the most one event may have"
                ),
            ));
        }
        each(rec, got)?;
    }
    Ok(Streamed {
        bytes: total,
        sha256: hex(&hasher.finalize()),
        count: n,
        malformed,
    })
}

/// The payload against the manifest: an altered payload is a checksum
/// mismatch; one that matches but holds a line that is not a record was
/// written so by the site (a malformed record).
fn check_payload(path: &Path, m: &Manifest, s: &Streamed) -> Result<(), BundleError> {
    let bad = |detail: String| BundleError::BadPayload {
        path: path.to_path_buf(),
        detail,
    };
    if s.bytes != m.payload_bytes {
        return Err(bad(format!(
            "is {} bytes, the manifest says {}",
            s.bytes, m.payload_bytes
        )));
    }
    if s.sha256 != m.payload_sha256 {
        return Err(bad(format!(
            "has SHA-256 {}, the manifest says {}",
            s.sha256, m.payload_sha256
        )));
    }
    if let Some((line, why)) = &s.malformed {
        return Err(BundleError::Malformed {
            path: path.to_path_buf(),
            line: *line,
            detail: format!(
                "{why}; the payload matches the manifest's SHA-256: the site wrote it so"
            ),
        });
    }
    if s.count != m.count {
        return Err(BundleError::NotABundle {
            path: path.to_path_buf(),
            detail: format!(
                "events.ndjson matches the manifest's SHA-256 but holds {} records, the \
                 manifest says {}",
                s.count, m.count
            ),
        });
    }
    Ok(())
}

/// The payload entry's size against the manifest's `payload_bytes`,
/// before any of it is read.
fn check_payload_size(
    path: &Path,
    m: &Manifest,
    entry: &Entry<'_>,
    signed: bool,
) -> Result<(), BundleError> {
    if entry.size() != m.payload_bytes {
        return Err(BundleError::PayloadSize {
            path: path.to_path_buf(),
            found: entry.size(),
            expected: m.payload_bytes,
            signed: if signed { "signed " } else { "unsigned " },
        });
    }
    Ok(())
}

/// After the payload: no other entry.
fn check_no_more_entries(mut entries: Entries<'_>, path: &Path) -> Result<(), BundleError> {
    match entries.next() {
        None => Ok(()),
        Some(Ok(e)) => {
            let name = e
                .path()
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default();
            Err(BundleError::NotABundle {
                path: path.to_path_buf(),
                detail: format!("unexpected entry {name:?} after {PAYLOAD}"),
            })
        }
        Some(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            Err(damaged(path, "the end of the archive", e))
        }
        Some(Err(e)) => Err(BundleError::TrailingData {
            path: path.to_path_buf(),
            detail: format!("data that is not a tar entry ({e}) after {PAYLOAD}"),
        }),
    }
}

/// After the last entry: the tar's end (zero blocks, at most
/// [`MAX_TAR_PADDING`] bytes), the gzip member's end (its CRC), and nothing
/// after it in the file (no second member, no other data).
fn check_end(archive: Archive, path: &Path) -> Result<(), BundleError> {
    let trailing = |detail: String| BundleError::TrailingData {
        path: path.to_path_buf(),
        detail,
    };
    let mut gz = archive.into_inner();
    let mut buf = [0u8; 8192];
    let mut padding = 0u64;
    // Bounded: at most MAX_TAR_PADDING + 8 KiB is read before it refuses.
    loop {
        let n = gz
            .read(&mut buf)
            .map_err(|e| damaged(path, "the end of the gzip stream", e))?;
        if n == 0 {
            break;
        }
        if buf[..n].iter().any(|&b| b != 0) {
            return Err(trailing("data after the tar archive's end marker".into()));
        }
        padding += n as u64;
        if padding > MAX_TAR_PADDING {
            return Err(trailing(format!(
                "more than {MAX_TAR_PADDING} bytes of zeros after the tar archive's end marker"
            )));
        }
    }
    let mut rest = gz.into_inner();
    let after = rest.fill_buf().map_err(io_err(path))?;
    if after.is_empty() {
        return Ok(());
    }
    let what = if after.starts_with(&[0x1f, 0x8b]) {
        "a second gzip member"
    } else {
        "data"
    };
    let at = rest.stream_position().map_err(io_err(path))?;
    let len = rest.get_ref().metadata().map_err(io_err(path))?.len();
    Err(trailing(format!(
        "{what} ({} bytes after the gzip stream's end at byte {at})",
        len.saturating_sub(at)
    )))
}

/// Checks the manifest's version, site and signature, then (unless
/// `payload_needed` says no, e.g. for a bundle the ledger already holds)
/// streams the payload against it and checks that nothing follows it.
/// Nothing is written anywhere; memory is bounded by the caps above.
fn verify(
    file: &File,
    path: &Path,
    trust: Trust<'_>,
    progress: bool,
    payload_needed: &dyn Fn(&Manifest) -> Result<bool, BundleError>,
) -> Result<Verified, BundleError> {
    let mut archive = open_archive(file, path)?;
    let mut entries = entries(&mut archive, path)?;
    let manifest_json = read_small(
        &mut next_entry(&mut entries, path, MANIFEST)?,
        MAX_MANIFEST,
        path,
        MANIFEST,
    )?;
    let sig_text = read_small(
        &mut next_entry(&mut entries, path, SIGNATURE)?,
        MAX_SIGNATURE,
        path,
        SIGNATURE,
    )?;
    let not = |detail: String| BundleError::NotABundle {
        path: path.to_path_buf(),
        detail,
    };
    // The version first: a newer format's manifest may not parse as ours.
    let loose: serde_json::Value = serde_json::from_slice(&manifest_json)
        .map_err(|e| not(format!("manifest.json is not JSON ({e})")))?;
    match loose.get("format_version") {
        Some(serde_json::Value::Number(n)) if n.as_u64() == Some(FORMAT_VERSION) => {}
        Some(v) => {
            return Err(BundleError::UnknownVersion {
                path: path.to_path_buf(),
                found: v.to_string(),
            });
        }
        None => return Err(not("manifest.json has no format_version".into())),
    }
    let manifest: Manifest =
        serde_json::from_value(loose).map_err(|e| not(format!("manifest.json: {e}")))?;
    let sig = STANDARD
        .decode(String::from_utf8_lossy(&sig_text).trim())
        .ok()
        .and_then(|b| <[u8; 64]>::try_from(b.as_slice()).ok())
        .map(|b| Signature::from_bytes(&b))
        .ok_or_else(|| not("manifest.sig is not a base64 Ed25519 signature".into()))?;
    let signature = check_signature(path, &manifest, &manifest_json, &sig, trust)?;
    if !payload_needed(&manifest)? {
        return Ok(Verified {
            manifest,
            signature,
            payload_verified: false,
            oldest: None,
            newest: None,
        });
    }

    let mut payload = next_entry(&mut entries, path, PAYLOAD)?;
    let signed = matches!(signature, SignatureStatus::Valid { .. });
    check_payload_size(path, &manifest, &payload, signed)?;
    let pb = bar(progress, manifest.payload_bytes, "verify", true);
    let (mut oldest, mut newest): (Option<TimeMs>, Option<TimeMs>) = (None, None);
    let mut read = 0u64;
    let streamed = stream_payload(&mut payload, path, false, |rec, len| {
        read += len;
        pb.set_position(read);
        oldest = Some(oldest.map_or(rec.detected_at, |t| t.min(rec.detected_at)));
        newest = Some(newest.map_or(rec.detected_at, |t| t.max(rec.detected_at)));
        Ok(())
    })?;
    drop(payload);
    pb.finish_and_clear();
    check_payload(path, &manifest, &streamed)?;
    check_no_more_entries(entries, path)?;
    check_end(archive, path)?;
    Ok(Verified {
        manifest,
        signature,
        payload_verified: true,
        oldest,
        newest,
    })
}

fn check_signature(
    path: &Path,
    m: &Manifest,
    manifest_json: &[u8],
    sig: &Signature,
    trust: Trust<'_>,
) -> Result<SignatureStatus, BundleError> {
    let (dir, required) = match trust {
        Trust::Require(d) => (Some(d), true),
        Trust::IfKnown(d) => (d, false),
    };
    let Some(dir) = dir else {
        return Ok(SignatureStatus::NotChecked {
            why: "[spool] trusted_keys_dir is not set".into(),
        });
    };
    let key_path = keys::trusted_path(dir, &m.site);
    let key: Option<VerifyingKey> = match &key_path {
        Some(p) if p.exists() => Some(keys::load_verifying(p)?),
        _ => None,
    };
    let shown = key_path
        .clone()
        .unwrap_or_else(|| dir.join("<site>.pub"))
        .display()
        .to_string();
    let Some(key) = key else {
        if !required {
            return Ok(SignatureStatus::NotChecked {
                why: format!("no trusted key {shown}"),
            });
        }
        return Err(BundleError::UntrustedSite {
            path: path.to_path_buf(),
            site: m.site.clone(),
            key: shown,
        });
    };
    if key.verify_strict(manifest_json, sig).is_ok() {
        return Ok(SignatureStatus::Valid {
            key: key_path.unwrap_or_default(),
        });
    }
    // Name the culprit when another trusted site's key made the signature.
    for (site, other) in keys::trusted_keys(dir) {
        if site != m.site && other.verify_strict(manifest_json, sig).is_ok() {
            return Err(BundleError::WrongSiteKey {
                path: path.to_path_buf(),
                site: m.site.clone(),
                signer: site,
            });
        }
    }
    Err(BundleError::BadSignature {
        path: path.to_path_buf(),
        site: m.site.clone(),
        key: shown,
    })
}

/// `relstat spool inspect FILE`: the manifest, the signature when a
/// trusted key is known, the payload checked against the manifest.
pub fn inspect(path: &Path, trusted_keys_dir: Option<&Path>) -> Result<Inspection, BundleError> {
    let file = File::open(path).map_err(io_err(path))?;
    inspect_file(&file, path, trusted_keys_dir)
}

/// [`inspect`] on a bundle that is already open, read from its current
/// offset (e.g. an unlinked in-memory file the fuzz target rewrites for
/// each input); `path` only names it in the report and in errors.
pub fn inspect_file(
    file: &File,
    path: &Path,
    trusted_keys_dir: Option<&Path>,
) -> Result<Inspection, BundleError> {
    let file_bytes = file.metadata().map_err(io_err(path))?.len();
    let v = verify(file, path, Trust::IfKnown(trusted_keys_dir), false, &|_| {
        Ok(true)
    })?;
    Ok(Inspection {
        path: path.to_path_buf(),
        file_bytes,
        manifest: v.manifest,
        signature: v.signature,
        payload_verified: v.payload_verified,
        oldest_detected_at: v.oldest.map(crate::event::format_rfc3339),
        newest_detected_at: v.newest.map(crate::event::format_rfc3339),
    })
}

/// `relstat spool import FILE...` without tracking (see [`import_tracked`]).
pub fn import(
    store: &Store,
    settings: &Settings,
    paths: &[PathBuf],
    progress: bool,
) -> Result<Vec<ImportReport>, BundleError> {
    import_tracked(store, settings, paths, progress, None)
}

/// `relstat spool import FILE...`: every bundle is verified before any is
/// imported; one bad bundle refuses the whole command, importing nothing.
/// A bundle the ledger already holds is recognised after its signature
/// check, without reading its payload. With `tracking`, the transition
/// records feed the relay's tracker in each chunk's transaction
/// ([`super::relay`]). `settings.limit` applies `[spool] max_bytes`:
/// `block` stops at the limit with [`BundleError::SpoolFull`] (what went in
/// stays, the rest imports when run again), `drop_oldest` drops the oldest
/// records after each chunk.
pub fn import_tracked(
    store: &Store,
    settings: &Settings,
    paths: &[PathBuf],
    progress: bool,
    mut tracking: Option<&mut super::relay::Tracking<'_>>,
) -> Result<Vec<ImportReport>, BundleError> {
    let dir = settings
        .trusted_keys_dir
        .as_deref()
        .ok_or(BundleError::NoTrustedKeys)?;
    let mut checked = Vec::new();
    for path in paths {
        if path.extension().is_some_and(|e| e == "tmp") {
            return Err(BundleError::NotABundle {
                path: path.clone(),
                detail: "a .tmp file is an export that did not finish (or is still \
                         running); nothing imported: export again"
                    .into(),
            });
        }
        let file = File::open(path).map_err(io_err(path))?;
        // The signature first (a forged manifest cannot claim a known id),
        // then the ledger: a bundle imported before is not read again.
        let known = |m: &Manifest| -> Result<bool, BundleError> {
            match store.imported_bundle(&m.bundle_id)? {
                None => Ok(true),
                Some(row) if row.site == m.site => Ok(false),
                Some(row) => Err(BundleError::ReusedId {
                    path: path.clone(),
                    bundle_id: m.bundle_id.clone(),
                    site: m.site.clone(),
                    imported_site: row.site,
                }),
            }
        };
        let v = verify(&file, path, Trust::Require(dir), progress, &known)?;
        checked.push((path, file, v.manifest));
    }
    let mut reports: Vec<ImportReport> = Vec::new();
    for (path, mut file, m) in checked {
        let r = import_one(
            store,
            settings,
            path,
            &mut file,
            &m,
            progress,
            tracking.as_deref_mut(),
        );
        match r {
            Ok(r) => reports.push(r),
            Err(BundleError::SpoolFull {
                path,
                max_bytes,
                imported,
                count,
                ..
            }) => {
                let done: Vec<String> = reports
                    .iter()
                    .map(|r| r.path.display().to_string())
                    .collect();
                let earlier = if done.is_empty() {
                    String::new()
                } else {
                    format!(" (imported completely before it: {})", done.join(", "))
                };
                return Err(BundleError::SpoolFull {
                    path,
                    max_bytes,
                    imported,
                    count,
                    earlier,
                });
            }
            Err(e) => return Err(e),
        }
    }
    Ok(reports)
}

fn import_one(
    store: &Store,
    settings: &Settings,
    path: &Path,
    file: &mut File,
    m: &Manifest,
    progress: bool,
    mut tracking: Option<&mut super::relay::Tracking<'_>>,
) -> Result<ImportReport, BundleError> {
    let mut report = ImportReport {
        path: path.to_path_buf(),
        bundle_id: m.bundle_id.clone(),
        site: m.site.clone(),
        host: m.host.clone(),
        count: m.count,
        enqueued: 0,
        duplicates: 0,
        already_imported_at: None,
        tracked: 0,
        pending: 0,
        invalid: 0,
        dropped: 0,
    };
    if let Some(row) = store.imported_bundle(&m.bundle_id)? {
        report.duplicates = m.count;
        report.already_imported_at = Some(crate::event::format_rfc3339(row.imported_at));
        return Ok(report);
    }
    let policy = settings
        .limit
        .map(|(max, when_full)| super::outbox::Policy::new(max, when_full));
    let block_at = policy.and_then(|p| p.block_at());
    file.rewind().map_err(io_err(path))?;
    let now = crate::event::now_ms();
    let mut archive = open_archive(file, path)?;
    let mut entries = entries(&mut archive, path)?;
    next_entry(&mut entries, path, MANIFEST)?;
    next_entry(&mut entries, path, SIGNATURE)?;
    let pb = bar(progress, m.count, "import", false);
    // One chunk: enqueue, track, commit, then show the effects.
    let mut chunk_in = |chunk: &[Anomaly],
                        ledger: Option<(&str, &ImportedBundle)>,
                        report: &mut ImportReport|
     -> Result<(), BundleError> {
        let mut effects = Vec::new();
        let outcome = match tracking.as_deref_mut() {
            Some(t) => {
                let mut track = |new: &[&Anomaly]| {
                    let (mut tracked, e, counts) = t.track(new, now);
                    if let Some(r) = &settings.notify {
                        tracked.notes = r.route(&tracked.batch, &e, now);
                        tracked.notes_max = r.max_queued;
                    }
                    effects = e;
                    report.tracked += counts.tracked;
                    report.pending += counts.pending;
                    report.invalid += counts.invalid;
                    tracked
                };
                store.import_chunk(chunk, now, ledger, block_at, Some(&mut track))?
            }
            None => store.import_chunk(chunk, now, ledger, block_at, None)?,
        };
        if let Some(t) = tracking.as_deref_mut() {
            t.committed(effects);
        }
        report.enqueued += outcome.enqueued;
        report.duplicates += outcome.duplicates;
        pb.inc(outcome.consumed as u64);
        if outcome.full {
            return Err(BundleError::SpoolFull {
                path: path.to_path_buf(),
                max_bytes: block_at.unwrap_or_default(),
                imported: report.enqueued + report.duplicates,
                count: m.count,
                earlier: String::new(),
            });
        }
        if let Some(p) = policy.filter(|p| p.drop_at().is_some()) {
            report.dropped += p.drop_excess(store, store.outbox_bytes()?)?;
        }
        Ok(())
    };
    let mut chunk: Vec<Anomaly> = Vec::with_capacity(CHUNK + 16);
    let mut chunk_bytes = 0u64;
    // The file was verified, but read it as warily again: it may have
    // changed since (strict: a bad line stops the import at once).
    let mut payload = next_entry(&mut entries, path, PAYLOAD)?;
    check_payload_size(path, m, &payload, true)?;
    let streamed = stream_payload(&mut payload, path, true, |rec, len| {
        // The last chunk commits with the ledger row, after the hash is
        // checked again. A chunk ends between two events, never inside one
        // event's records (its transition and the rules' records): the
        // relay's tracker judges an event in the transaction that enqueues
        // all the site said about it. With the caps on one event's records
        // (stream_payload), a chunk holds at most 2 x CHUNK records and
        // 2 x CHUNK_BYTES of lines.
        if (chunk.len() >= CHUNK || chunk_bytes >= CHUNK_BYTES)
            && chunk.last().is_some_and(|l| l.event_id != rec.event_id)
        {
            chunk_in(&chunk, None, &mut report)?;
            chunk.clear();
            chunk_bytes = 0;
        }
        chunk.push(rec);
        chunk_bytes += len;
        Ok(())
    })?;
    drop(payload);
    check_payload(path, m, &streamed)?;
    let row = ImportedBundle {
        site: m.site.clone(),
        host: m.host.clone(),
        imported_at: now,
        count: m.count,
    };
    chunk_in(&chunk, Some((&m.bundle_id, &row)), &mut report)?;
    pb.finish_and_clear();
    Ok(report)
}

#[cfg(test)]
mod tests;
