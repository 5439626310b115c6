//! One file being tailed: its identity, its position, and the bytes read
//! past the last complete line (a partial last line is held until its
//! newline arrives).
//!
//! Identity is (device, inode, fingerprint), the fingerprint being a hash of
//! the file's first line (up to [`FP_MAX`] bytes). The inode follows a file
//! through renames; the fingerprint tells a reused inode, or a file truncated
//! and rewritten in place, from the file we were reading.

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use serde::{Deserialize, Serialize};

/// Bytes of the first line that make the fingerprint.
pub const FP_MAX: usize = 1024;
/// Bytes read from a file per call.
const READ_CHUNK: usize = 64 * 1024;
/// A line longer than this is cut and counted invalid, so one runaway line
/// cannot exhaust memory.
pub const MAX_LINE: usize = 1024 * 1024;

/// What identifies a file across renames and restarts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
    pub fp: u64,
}

impl FileId {
    pub fn key(&self) -> String {
        format!("{}:{}:{:016x}", self.dev, self.ino, self.fp)
    }
}

/// The fingerprint of an open file: `None` while its first line is not
/// complete (and shorter than FP_MAX), as then nothing can be read anyway.
pub fn fingerprint(file: &File) -> io::Result<Option<u64>> {
    let mut buf = vec![0u8; FP_MAX];
    let mut n = 0;
    while n < FP_MAX {
        let r = file.read_at(&mut buf[n..], n as u64)?;
        if r == 0 {
            break;
        }
        n += r;
    }
    let head = &buf[..n];
    match head.iter().position(|b| *b == b'\n') {
        Some(nl) => Ok(Some(xxhash_rust::xxh3::xxh3_64(&head[..nl]))),
        None if n == FP_MAX => Ok(Some(xxhash_rust::xxh3::xxh3_64(head))),
        None => Ok(None),
    }
}

/// How many tailed files may be open at once (`[agent] max_open_files`),
/// shared by every file source of the agent.
#[derive(Debug)]
pub struct FdBudget {
    max: usize,
    used: AtomicUsize,
    created: Instant,
    /// When (ms after `created`, + 1) a source last found no descriptor
    /// even after closing its own idle files: the other sources then close
    /// theirs.
    starved_at: AtomicU64,
}

/// How long a starved source makes the others give back idle files.
const STARVED_FOR_MS: u64 = 1_000;

impl FdBudget {
    pub fn new(max: usize) -> Arc<FdBudget> {
        Arc::new(FdBudget {
            max: max.max(1),
            used: AtomicUsize::new(0),
            created: Instant::now(),
            starved_at: AtomicU64::new(0),
        })
    }

    fn now_ms(&self) -> u64 {
        self.created.elapsed().as_millis() as u64 + 1
    }

    /// A source has files to read and no descriptor for them.
    pub fn starve(&self) {
        self.starved_at.store(self.now_ms(), Ordering::Release);
    }

    /// Some source was starved within the last second.
    pub fn starving(&self) -> bool {
        let at = self.starved_at.load(Ordering::Acquire);
        at != 0 && self.now_ms().saturating_sub(at) < STARVED_FOR_MS
    }

    /// One descriptor, if the budget has one left; given back when the
    /// [`Slot`] drops.
    pub fn acquire(self: &Arc<Self>) -> Option<Slot> {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                (u < self.max).then_some(u + 1)
            })
            .ok()
            .map(|_| Slot(self.clone()))
    }

    /// Descriptors in use now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }
}

/// One descriptor of an [`FdBudget`], held by an open [`Tailer`].
#[derive(Debug)]
pub struct Slot(Arc<FdBudget>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.used.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What `stat` says about a file, to tell whether it changed: size and
/// modification time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stat {
    pub len: u64,
    pub mtime: (i64, i64),
}

impl Stat {
    pub fn of(meta: &std::fs::Metadata) -> Stat {
        Stat {
            len: meta.len(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
        }
    }
}

pub struct Tailer {
    pub path: PathBuf,
    pub id: FileId,
    file: File,
    /// This file's descriptor in the agent's budget.
    _slot: Slot,
    /// The file as it was before the last read (the size is then replaced by
    /// what was read): a file that still looks like this has nothing new.
    pub seen: Stat,
    /// When the last read found something: the file idle longest is closed
    /// first when another file needs a descriptor.
    pub last_active: Instant,
    /// Offset just after the last complete line handed out.
    pub offset: u64,
    /// Bytes read after `offset` that do not end a line yet.
    partial: Vec<u8>,
    /// No longer found at any watched path (rotated away or deleted): read
    /// to the end, then close.
    pub orphan: bool,
    /// The last read found nothing new.
    pub at_eof: bool,
    /// Discard bytes up to the next newline (the rest of an over-long line).
    skipping: bool,
}

/// What one read produced.
pub enum Chunk {
    /// A complete line (without its newline).
    Line(Vec<u8>),
    /// A line over MAX_LINE, cut: counted invalid.
    TooLong,
}

impl Tailer {
    pub fn open(path: &Path, file: File, slot: Slot, id: FileId, offset: u64) -> Tailer {
        Tailer {
            path: path.to_path_buf(),
            id,
            file,
            _slot: slot,
            seen: Stat::default(),
            last_active: Instant::now(),
            offset,
            partial: Vec::new(),
            orphan: false,
            at_eof: false,
            skipping: false,
        }
    }

    /// The file was truncated or rewritten in place: its size is below what
    /// we read, or its first line is no longer the one we fingerprinted.
    pub fn replaced(&self, len: u64) -> io::Result<bool> {
        if len < self.offset + self.partial.len() as u64 {
            return Ok(true);
        }
        Ok(match fingerprint(&self.file)? {
            Some(fp) => fp != self.id.fp,
            // The first line is incomplete again: rewritten.
            None => true,
        })
    }

    /// Bytes looked at: the offset plus a held partial line.
    pub fn position(&self) -> u64 {
        self.offset + self.partial.len() as u64
    }

    /// Inside an over-long line: closing now would lose where it ends.
    pub fn skipping(&self) -> bool {
        self.skipping
    }

    /// Restarts at the beginning (after a truncation), with the new identity.
    pub fn restart(&mut self, fp: u64) {
        self.offset = 0;
        self.partial.clear();
        self.skipping = false;
        self.id.fp = fp;
    }

    /// Reads what is new, up to about `max_bytes`, pushing complete lines.
    /// Returns how many bytes were consumed.
    pub fn read(&mut self, max_bytes: usize, out: &mut Vec<Chunk>) -> io::Result<usize> {
        let mut total = 0;
        let mut buf = vec![0u8; READ_CHUNK];
        loop {
            let pos = self.offset + self.partial.len() as u64;
            let n = self.file.read_at(&mut buf, pos)?;
            if n == 0 {
                self.at_eof = true;
                return Ok(total);
            }
            self.at_eof = false;
            total += n;
            let mut data = &buf[..n];
            while let Some(nl) = data.iter().position(|b| *b == b'\n') {
                let line_len = self.partial.len() + nl;
                if self.skipping {
                    self.skipping = false;
                } else if line_len > MAX_LINE {
                    out.push(Chunk::TooLong);
                } else {
                    let mut line = std::mem::take(&mut self.partial);
                    line.extend_from_slice(&data[..nl]);
                    out.push(Chunk::Line(line));
                }
                self.partial.clear();
                self.offset += line_len as u64 + 1;
                data = &data[nl + 1..];
            }
            if self.skipping {
                // Still inside a cut line: drop the bytes but keep the
                // position moving so the line's end is found.
                self.offset += data.len() as u64;
            } else {
                self.partial.extend_from_slice(data);
                if self.partial.len() > MAX_LINE {
                    out.push(Chunk::TooLong);
                    self.offset += self.partial.len() as u64;
                    self.partial.clear();
                    self.skipping = true;
                }
            }
            if total >= max_bytes {
                return Ok(total);
            }
        }
    }

    /// The fingerprint of the file as it is now.
    pub fn fingerprint_now(&self) -> io::Result<Option<u64>> {
        fingerprint(&self.file)
    }

    pub fn metadata(&self) -> io::Result<std::fs::Metadata> {
        self.file.metadata()
    }
}

/// (dev, ino) of a path, following symlinks as opening it would.
pub fn dev_ino(meta: &std::fs::Metadata) -> (u64, u64) {
    (meta.dev(), meta.ino())
}
