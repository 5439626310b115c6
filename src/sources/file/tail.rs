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

pub struct Tailer {
    pub path: PathBuf,
    pub id: FileId,
    file: File,
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
    pub fn open(path: &Path, file: File, id: FileId, offset: u64) -> Tailer {
        Tailer {
            path: path.to_path_buf(),
            id,
            file,
            offset,
            partial: Vec::new(),
            orphan: false,
            at_eof: false,
            skipping: false,
        }
    }

    /// The file was truncated or rewritten in place: its size is below what
    /// we read, or its first line is no longer the one we fingerprinted.
    pub fn replaced(&self) -> io::Result<bool> {
        let len = self.file.metadata()?.len();
        if len < self.offset + self.partial.len() as u64 {
            return Ok(true);
        }
        Ok(match fingerprint(&self.file)? {
            Some(fp) => fp != self.id.fp,
            // The first line is incomplete again: rewritten.
            None => true,
        })
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
