//! The file source: tails every file matching a source's `paths` globs and
//! turns their lines into [`SourceBatch`]es for the core.
//!
//! It runs on its own thread with blocking I/O. A notify watcher on the
//! globs' directories wakes it as soon as something changes; a poll every
//! [`POLL`] is the fallback (network filesystems, exhausted inotify
//! watches). Discovery (a glob and a stat per file) runs on every wake, and
//! every [`POLL`], or every `DISCOVER_WATCHED` (5 s) when the watcher covers
//! every glob; an idle pass costs one fstat per open file and sends nothing.
//!
//! Descriptors: at most `[agent] max_open_files` files are open, shared by
//! every file source ([`FdBudget`]). A file read to its end is closed when
//! another needs its descriptor and kept as a `Closed` entry (identity,
//! offset, size and mtime as last read); discovery reopens it when its stat
//! changes, checking its fingerprint. A source that finds no descriptor
//! makes the others give back their idle files.
//!
//! Rotation, by identity (device, inode, first-line fingerprint; see
//! [`tail`]):
//! - rename + create: the renamed file keeps its inode, so it is read to its
//!   end (as an orphan if no glob matches its new name), and the new file is
//!   read from its start;
//! - delete + recreate: the open descriptor still reads the deleted file to
//!   its end; the new file is read from its start;
//! - copytruncate and truncate in place: the size drops below our position
//!   or the first line changes, so reading restarts at 0. Lines written
//!   between logrotate's copy and its truncate are lost by the nature of
//!   copytruncate (they are in the copy, which is not read unless a glob
//!   matches it, and then from its start: prefer rename + create);
//! - inode reuse: a file whose inode matches a checkpoint but whose first line
//!   differs is a new file.
//!
//! The same forms while a file is closed: a closed file no glob matches any
//! more is looked for by inode in its directory (one listing per directory)
//! and, if it grew, read to its end as an orphan; a closed file whose size
//! dropped or whose first line changed is read from 0; a deleted one is
//! forgotten (lines written to it after our last read and deleted before the
//! next wake are lost: docs/files.md).
//!
//! Checkpoints: one blob per source (`file:<source>`), the offsets of every
//! open file by identity, sent with each batch so the core commits it in the
//! same transaction as the state those lines produced. `start_at = "end"`
//! applies only to files present when the source first runs (no checkpoint).

pub mod tail;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use self::tail::{Chunk, FdBudget, FileId, Slot, Stat, Tailer, dev_ino, fingerprint};
use crate::config::{SourceConfig, StartAt};
use crate::event::InputResult;
use crate::ingest::{Ingest, Item, SourceBatch};
use crate::sources::line::{LineParser, Parsed};

/// Fallback poll interval (and discovery interval).
pub const POLL: Duration = Duration::from_millis(250);
/// Bytes read from one file per pass: bounds a batch (and so the time
/// between commits) while a large backlog is read.
const READ_BYTES: usize = 128 * 1024;
/// A file idle this long is given back when another source starves.
const IDLE_GIVE_BACK: Duration = Duration::from_secs(1);
/// Full rediscovery interval when change notification covers every glob.
const DISCOVER_WATCHED: Duration = Duration::from_secs(5);
/// An orphaned file that has not grown for this long is closed.
const ORPHAN_GRACE: Duration = Duration::from_secs(5);

/// The position of one file in the checkpoint blob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilePosition {
    pub path: PathBuf,
    pub offset: u64,
}

/// The checkpoint of a file source: identity key -> position.
pub type Checkpoint = BTreeMap<String, FilePosition>;

/// The checkpoint name of a source in the store.
pub fn checkpoint_name(source: &str) -> String {
    format!("file:{source}")
}

pub struct FileSource {
    name: String,
    raw_globs: Vec<String>,
    start_at: StartAt,
    parser: LineParser,
    tailers: Vec<Tailer>,
    /// Known files that are not open (idle, closed to give their
    /// descriptor to another file), by (device, inode).
    closed: HashMap<(u64, u64), Closed>,
    /// Descriptors for open files, shared with the agent's other file sources.
    budget: Arc<FdBudget>,
    /// Files with something to read that wait for a descriptor: the source
    /// is not caught up, and discovers again at once.
    pending: usize,
    /// Positions changed since the last checkpoint sent.
    dirty: bool,
    /// Matched paths that are not regular files (directories, FIFOs...),
    /// counted when they first appear.
    skipped: HashSet<PathBuf>,
    /// Positions from the store, consumed as files are found again.
    restored: Checkpoint,
    first_run: bool,
    /// Errors already logged, so a permanent problem is logged once.
    logged: HashSet<(PathBuf, &'static str)>,
    orphan_since: HashMap<FileId, Instant>,
}

/// A file known to the source but not open: what reopening it needs.
#[derive(Debug, Clone)]
struct Closed {
    path: PathBuf,
    id: FileId,
    offset: u64,
    /// The file when it was closed (its size as far as it was read): one
    /// that no longer looks like this has something to read, or was
    /// truncated.
    seen: Stat,
    /// No glob matches it any more (rotated away, found again by its inode
    /// in its directory): read to its end, then forgotten.
    orphan: bool,
}

/// A file found by discovery that has something to read.
enum Want {
    Closed((u64, u64)),
    New(PathBuf, std::fs::Metadata),
}

impl FileSource {
    pub fn new(cfg: &SourceConfig, parser: LineParser, checkpoint: Option<&[u8]>) -> FileSource {
        let restored: Checkpoint = checkpoint
            .and_then(|b| serde_json::from_slice(b).ok())
            .unwrap_or_default();
        FileSource {
            name: cfg.name.clone(),
            raw_globs: cfg.paths.clone(),
            start_at: cfg.start_at,
            parser,
            tailers: Vec::new(),
            closed: HashMap::new(),
            budget: FdBudget::new(crate::config::AgentConfig::default().max_open_files),
            pending: 0,
            dirty: true,
            skipped: HashSet::new(),
            first_run: checkpoint.is_none(),
            restored,
            logged: HashSet::new(),
            orphan_since: HashMap::new(),
        }
    }

    /// Uses `budget` (the agent's, shared by its file sources) for open files.
    pub fn with_budget(mut self, budget: Arc<FdBudget>) -> FileSource {
        self.budget = budget;
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Directories to watch: the non-glob prefix of every pattern.
    pub fn watch_dirs(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = self
            .raw_globs
            .iter()
            .map(|g| {
                let mut dir = PathBuf::new();
                for comp in Path::new(g).components() {
                    let s = comp.as_os_str().to_string_lossy();
                    if s.contains(['*', '?', '[', '{']) {
                        break;
                    }
                    dir.push(comp);
                }
                if dir == Path::new(g) {
                    dir.pop();
                }
                if dir.as_os_str().is_empty() {
                    PathBuf::from(".")
                } else {
                    dir
                }
            })
            .collect();
        dirs.sort();
        dirs.dedup();
        dirs
    }

    /// Every glob has its wildcards in the file name only, so watching the
    /// directories above tells of every change to a matching file.
    fn globs_in_watched_dirs(&self) -> bool {
        self.raw_globs.iter().all(|g| {
            Path::new(g)
                .parent()
                .is_none_or(|p| !p.to_string_lossy().contains(['*', '?', '[', '{']))
        })
    }

    fn error(
        &mut self,
        batch: &mut SourceBatch,
        path: &Path,
        kind: &'static str,
        e: &dyn std::fmt::Display,
    ) {
        batch.errors.push(kind);
        if self.logged.insert((path.to_path_buf(), kind)) {
            tracing::warn!(source = %self.name, path = %path.display(), "{kind}: {e}");
        }
    }

    fn glob(&mut self, batch: &mut SourceBatch) -> Vec<PathBuf> {
        let mut paths = Vec::new();
        for g in self.raw_globs.clone() {
            match glob::glob(&g) {
                Ok(it) => {
                    for entry in it {
                        match entry {
                            Ok(p) => paths.push(p),
                            Err(e) => {
                                let p = e.path().to_path_buf();
                                self.error(batch, &p, "read", &e);
                            }
                        }
                    }
                }
                Err(e) => self.error(batch, Path::new(&g), "glob", &e),
            }
        }
        paths.sort();
        paths.dedup();
        paths
    }

    /// Finds matching files: new ones are opened, renamed ones followed,
    /// vanished ones marked orphan, closed ones that changed reopened (as
    /// far as descriptors allow).
    fn discover(&mut self, batch: &mut SourceBatch) {
        let paths = self.glob(batch);
        let open: HashMap<(u64, u64), usize> = self
            .tailers
            .iter()
            .enumerate()
            .map(|(i, t)| ((t.id.dev, t.id.ino), i))
            .collect();
        let mut present: HashSet<(u64, u64)> = HashSet::new();
        let mut skipped = HashSet::new();
        let mut wanted = Vec::new();
        for path in paths {
            let meta = match std::fs::metadata(&path) {
                Ok(m) => m,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    // Listed by the glob, gone before we could look at it
                    // (or a dangling symlink).
                    self.error(batch, &path, "vanished", &e);
                    continue;
                }
                Err(e) => {
                    self.error(batch, &path, "stat", &e);
                    continue;
                }
            };
            if !meta.is_file() {
                // A directory or a FIFO (reading one would block the
                // source), a socket or a device: counted once while it stays.
                let kind = if meta.is_dir() {
                    "directory"
                } else {
                    "not_a_file"
                };
                if !self.skipped.contains(&path) {
                    self.error(batch, &path, kind, &"not a regular file: skipped");
                }
                skipped.insert(path);
                continue;
            }
            let key = dev_ino(&meta);
            if !present.insert(key) {
                continue; // a second name (symlink) of a file already seen
            }
            if let Some(&i) = open.get(&key) {
                let t = &mut self.tailers[i];
                if t.path != path {
                    t.path = path; // renamed, still matching
                    self.dirty = true;
                }
                t.orphan = false;
                continue;
            }
            if let Some(c) = self.closed.get_mut(&key) {
                if c.path != path {
                    c.path = path;
                    self.dirty = true;
                }
                c.orphan = false;
                if Stat::of(&meta) != c.seen {
                    wanted.push(Want::Closed(key));
                }
                continue;
            }
            wanted.push(Want::New(path, meta));
        }
        self.skipped = skipped;
        for t in &mut self.tailers {
            if !present.contains(&(t.id.dev, t.id.ino)) {
                t.orphan = true;
            }
        }
        self.find_rotated(&present, &mut wanted);
        self.pending = 0;
        for w in wanted {
            self.open_wanted(w, batch);
        }
    }

    /// Closed files that no glob matches any more: rotated away (renamed in
    /// their directory, found again by inode: read to their end if they grew
    /// while closed) or deleted (forgotten).
    fn find_rotated(&mut self, present: &HashSet<(u64, u64)>, wanted: &mut Vec<Want>) {
        let lost: Vec<(u64, u64)> = self
            .closed
            .keys()
            .filter(|k| !present.contains(k))
            .copied()
            .collect();
        // One listing per directory, whatever the number of files rotated.
        let mut by_dir: HashMap<PathBuf, Vec<(u64, u64)>> = HashMap::new();
        for key in lost {
            let c = &self.closed[&key];
            let dir = c.path.parent().map(Path::to_path_buf).unwrap_or_default();
            by_dir.entry(dir).or_default().push(key);
        }
        for (dir, keys) in by_dir {
            let inos: HashSet<u64> = keys.iter().map(|k| k.1).collect();
            let mut found: HashMap<u64, PathBuf> = HashMap::new();
            let listing = std::fs::read_dir(if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                &dir
            });
            if let Ok(listing) = listing {
                use std::os::unix::fs::DirEntryExt;
                for entry in listing.flatten() {
                    if inos.contains(&entry.ino()) {
                        found.insert(entry.ino(), entry.path());
                    }
                }
            }
            for key in keys {
                let here = found.get(&key.1).and_then(|p| {
                    let m = std::fs::metadata(p).ok()?;
                    (m.is_file() && dev_ino(&m) == key).then(|| (p.clone(), Stat::of(&m)))
                });
                let c = self.closed.get_mut(&key).expect("listed above");
                match here {
                    Some((path, stat)) if stat != c.seen => {
                        c.path = path;
                        c.orphan = true;
                        wanted.push(Want::Closed(key));
                    }
                    _ => {
                        tracing::debug!(source = %self.name, path = %c.path.display(), "closed file rotated away or deleted: forgotten");
                        self.closed.remove(&key);
                        self.dirty = true;
                    }
                }
            }
        }
    }

    /// A descriptor for one more open file: from the budget, or by closing
    /// the open file that has been idle longest.
    fn slot(&mut self) -> Option<Slot> {
        if let Some(s) = self.budget.acquire() {
            return Some(s);
        }
        if self.close_idlest()
            && let Some(s) = self.budget.acquire()
        {
            return Some(s);
        }
        // The other sources hold every descriptor: ask them to give back
        // their idle files.
        self.budget.starve();
        None
    }

    /// Closes the open file idle longest that has nothing to read; false
    /// when there is none. A rotated-away file is found again by its inode
    /// in its directory if it grows.
    fn close_idlest(&mut self) -> bool {
        self.close_idlest_for(Duration::ZERO)
    }

    /// [`Self::close_idlest`], among the files idle for at least `idle`.
    fn close_idlest_for(&mut self, idle: Duration) -> bool {
        let Some(idle) = self
            .tailers
            .iter()
            .enumerate()
            .filter(|(_, t)| t.at_eof && !t.skipping() && t.last_active.elapsed() >= idle)
            .min_by_key(|(_, t)| t.last_active)
            .map(|(i, _)| i)
        else {
            return false;
        };
        let t = self.tailers.swap_remove(idle);
        self.orphan_since.remove(&t.id);
        self.closed.insert(
            (t.id.dev, t.id.ino),
            Closed {
                path: t.path.clone(),
                id: t.id,
                offset: t.offset,
                seen: Stat {
                    len: t.position(),
                    mtime: t.seen.mtime,
                },
                orphan: t.orphan,
            },
        );
        true // dropping `t` closed its descriptor and gave its slot back
    }

    fn open_wanted(&mut self, w: Want, batch: &mut SourceBatch) {
        let (path, closed) = match &w {
            Want::Closed(key) => (
                self.closed[key].path.clone(),
                Some(self.closed[key].clone()),
            ),
            Want::New(path, _) => (path.clone(), None),
        };
        let file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) => {
                let kind = match e.kind() {
                    std::io::ErrorKind::PermissionDenied => "permission",
                    std::io::ErrorKind::NotFound => "vanished",
                    _ => "open",
                };
                self.error(batch, &path, kind, &e);
                return;
            }
        };
        let meta = match file.metadata() {
            Ok(m) => m,
            Err(e) => return self.error(batch, &path, "stat", &e),
        };
        let key = dev_ino(&meta);
        let fp = match fingerprint(&file) {
            Ok(fp) => fp,
            Err(e) => return self.error(batch, &path, "read", &e),
        };
        match (w, closed) {
            (Want::Closed(want), Some(c)) => {
                if key != want {
                    return; // renamed since it was listed: the next pass sees it
                }
                let Some(fp) = fp else {
                    // Rewritten, its first line not complete yet: wait for it.
                    if let Some(c) = self.closed.get_mut(&want) {
                        c.seen = Stat::of(&meta);
                    }
                    return;
                };
                let offset = if fp == c.id.fp && meta.len() >= c.offset {
                    c.offset
                } else if c.orphan {
                    // The inode now holds another file: not ours to read.
                    self.closed.remove(&want);
                    self.dirty = true;
                    return;
                } else {
                    tracing::info!(source = %self.name, path = %path.display(), "file truncated or rewritten while closed: reading it from the start");
                    0
                };
                let Some(slot) = self.slot() else {
                    self.pending += 1;
                    return;
                };
                let mut t = Tailer::open(&path, file, slot, FileId { fp, ..c.id }, offset);
                t.orphan = c.orphan;
                self.closed.remove(&want);
                self.tailers.push(t);
                self.dirty = true;
            }
            (Want::New(_, listed), _) => {
                if key != dev_ino(&listed) {
                    return;
                }
                let Some(fp) = fp else {
                    return; // first line not complete yet
                };
                let id = FileId {
                    dev: key.0,
                    ino: key.1,
                    fp,
                };
                let len = meta.len();
                let offset = match self.restored.remove(&id.key()) {
                    Some(pos) if pos.offset <= len => pos.offset,
                    Some(_) => 0, // shorter than our position: truncated while we were away
                    None if self.first_run && self.start_at == StartAt::End => len,
                    None => 0,
                };
                self.logged.retain(|(p, _)| p != &path);
                self.dirty = true;
                let stat = Stat::of(&listed);
                if offset == stat.len {
                    // Nothing to read yet: no descriptor needed.
                    self.closed.insert(
                        key,
                        Closed {
                            path,
                            id,
                            offset,
                            seen: stat,
                            orphan: false,
                        },
                    );
                    return;
                }
                match self.slot() {
                    Some(slot) => {
                        tracing::debug!(source = %self.name, path = %path.display(), offset, "tailing");
                        self.tailers
                            .push(Tailer::open(&path, file, slot, id, offset));
                    }
                    None => {
                        // Known now (position decided), read when a
                        // descriptor frees up.
                        self.pending += 1;
                        self.closed.insert(
                            key,
                            Closed {
                                path,
                                id,
                                offset,
                                seen: Stat {
                                    len: offset,
                                    ..stat
                                },
                                orphan: false,
                            },
                        );
                    }
                }
            }
            (Want::Closed(_), None) => {}
        }
    }

    /// One pass: discover when due, read every file up to the batch limit.
    /// Returns the batch (possibly empty) with the checkpoint after it when
    /// positions changed since the last one sent.
    pub fn pass(&mut self, discover: bool) -> SourceBatch {
        let mut batch = SourceBatch {
            source: self.name.clone(),
            ..Default::default()
        };
        if discover {
            self.discover(&mut batch);
        }
        let mut chunks = Vec::new();
        let mut all_eof = true;
        let mut i = 0;
        while i < self.tailers.len() {
            let t = &mut self.tailers[i];
            let stat = match t.metadata() {
                Ok(m) => Stat::of(&m),
                Err(e) => {
                    let p = t.path.clone();
                    self.error(&mut batch, &p, "read", &e);
                    i += 1;
                    continue;
                }
            };
            if t.at_eof && stat == t.seen {
                // Unchanged since it was read to its end: nothing to do (an
                // idle pass costs one fstat per open file).
                i += 1;
                continue;
            }
            t.seen = stat;
            match t.replaced(stat.len) {
                Ok(true) => {
                    // copytruncate / truncate in place: start again once the
                    // new first line is complete.
                    self.dirty = true;
                    match fingerprint_of(t) {
                        Some(fp) => {
                            tracing::info!(source = %self.name, path = %t.path.display(), "file truncated or rewritten: reading it from the start");
                            t.restart(fp);
                        }
                        None => {
                            t.restart(0);
                            t.at_eof = true;
                            i += 1;
                            continue;
                        }
                    }
                }
                Ok(false) => {}
                Err(e) => {
                    let p = t.path.clone();
                    self.error(&mut batch, &p, "read", &e);
                    i += 1;
                    continue;
                }
            }
            let t = &mut self.tailers[i];
            chunks.clear();
            let before = t.offset;
            let res = t.read(READ_BYTES, &mut chunks);
            match res {
                Err(e) => {
                    let p = t.path.clone();
                    self.error(&mut batch, &p, "read", &e);
                    i += 1;
                    continue;
                }
                Ok(n) if n > 0 => t.last_active = Instant::now(),
                Ok(_) => {}
            }
            if t.offset != before {
                self.dirty = true;
            }
            let t = &self.tailers[i];
            if !t.at_eof {
                all_eof = false;
            }
            for c in chunks.drain(..) {
                let item = match c {
                    Chunk::TooLong => Item::Rejected(InputResult::Invalid),
                    Chunk::Line(bytes) => match std::str::from_utf8(&bytes) {
                        Err(_) => Item::Rejected(InputResult::Invalid),
                        Ok(line) => match self.parser.parse(line) {
                            Parsed::Event(e) => Item::Event(e),
                            Parsed::Skipped => Item::Rejected(InputResult::Skipped),
                            Parsed::Invalid(_) => Item::Rejected(InputResult::Invalid),
                            Parsed::Unmapped(_) => Item::Rejected(InputResult::Unmapped),
                        },
                    },
                };
                batch.items.push(item);
            }
            i += 1;
        }
        self.close_drained_orphans();
        if self.pending == 0 && self.budget.starving() {
            // Another source waits for descriptors: give back the files
            // idle for a while.
            let before = self.tailers.len();
            while self.close_idlest_for(IDLE_GIVE_BACK) {}
            if self.tailers.len() != before {
                tracing::debug!(source = %self.name, closed = before - self.tailers.len(), "idle files closed for another source");
            }
        }
        batch.caught_up = all_eof && self.pending == 0;
        if self.dirty {
            batch.checkpoint = Some((checkpoint_name(&self.name), self.checkpoint()));
        }
        batch
    }

    fn close_drained_orphans(&mut self) {
        let now = Instant::now();
        let since = &mut self.orphan_since;
        let before = self.tailers.len();
        self.tailers.retain(|t| {
            if !t.orphan {
                since.remove(&t.id);
                return true;
            }
            if !t.at_eof {
                since.insert(t.id, now);
                return true;
            }
            let first = *since.entry(t.id).or_insert(now);
            let keep = now.duration_since(first) < ORPHAN_GRACE;
            if !keep {
                since.remove(&t.id);
                tracing::debug!(path = %t.path.display(), "rotated-away file read to its end: closed");
            }
            keep
        });
        if self.tailers.len() != before {
            self.dirty = true;
        }
    }

    /// Open files now (for tests).
    #[cfg(test)]
    fn open_files(&self) -> usize {
        self.tailers.len()
    }

    /// The positions of every known file, open or closed.
    pub fn checkpoint(&self) -> Vec<u8> {
        let open = self.tailers.iter().map(|t| (t.id, &t.path, t.offset));
        let closed = self.closed.values().map(|c| (c.id, &c.path, c.offset));
        let cp: Checkpoint = open
            .chain(closed)
            .filter(|(id, _, _)| id.fp != 0)
            .map(|(id, path, offset)| {
                (
                    id.key(),
                    FilePosition {
                        path: path.clone(),
                        offset,
                    },
                )
            })
            .collect();
        serde_json::to_vec(&cp).unwrap_or_default()
    }

    /// The source's thread body: read until `stop`, or with `once` until the
    /// backlog is read. Batches go to `send`.
    pub fn run(mut self, ingest: Ingest, stop: Arc<AtomicBool>, once: bool) {
        let (wake_tx, wake_rx) = std::sync::mpsc::channel::<()>();
        let dirs = self.watch_dirs();
        let watcher = watch(&dirs, wake_tx, &self.name);
        // When every change to a matching file wakes us, the full listing
        // (a glob and a stat per file) is only a safety net; otherwise it is
        // how changes are found.
        let rediscover =
            if watcher.as_ref().is_some_and(|(_, all)| *all) && self.globs_in_watched_dirs() {
                DISCOVER_WATCHED
            } else {
                POLL
            };
        let _watcher = watcher.map(|(w, _)| w);
        let mut last_discover = Instant::now() - rediscover;
        // A change notification may be a new file (or the first line of an
        // empty one): discover on every wake, not only every POLL.
        let mut woken = true;
        // Whether the core was last told this source is caught up.
        let mut told_caught_up = false;
        loop {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let discover =
                once || woken || self.pending > 0 || last_discover.elapsed() >= rediscover;
            if discover {
                last_discover = Instant::now();
            }
            let batch = self.pass(discover);
            let caught_up = batch.caught_up;
            let had_items = !batch.items.is_empty() || !batch.errors.is_empty();
            // An idle pass sends nothing: no commit, no wake of the core.
            let worth_sending =
                had_items || (caught_up && (batch.checkpoint.is_some() || !told_caught_up));
            if worth_sending {
                if ingest.submit(batch).is_err() {
                    return;
                }
                self.dirty = false;
                told_caught_up = caught_up;
            }
            woken = false;
            if !caught_up && !had_items {
                // Files wait for descriptors that other sources hold (they
                // give back idle ones within a pass): wait rather than spin.
                woken = wake_rx.recv_timeout(POLL).is_ok();
                while wake_rx.try_recv().is_ok() {}
                continue;
            }
            if caught_up {
                self.first_run = false;
                if once {
                    return;
                }
                if had_items {
                    continue; // read again at once: more may have arrived
                }
                // Nothing more to read: sleep until notified or polled.
                woken = wake_rx.recv_timeout(POLL).is_ok();
                while wake_rx.try_recv().is_ok() {}
            }
        }
    }
}

fn fingerprint_of(t: &Tailer) -> Option<u64> {
    // The open descriptor, not the path: after a rotation the path may
    // already name the next file.
    t.fingerprint_now().ok().flatten()
}

/// A notify watcher on `dirs` that pokes `wake`; `None` (polling only) when
/// it cannot be set up.
fn watch(
    dirs: &[PathBuf],
    wake: std::sync::mpsc::Sender<()>,
    source: &str,
) -> Option<(notify::RecommendedWatcher, bool)> {
    use notify::Watcher;
    let mut w = match notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        // Our own reads show up as access events: waking on them would make
        // every read cause another pass.
        if let Ok(ev) = &res
            && matches!(ev.kind, notify::EventKind::Access(_))
        {
            return;
        }
        let _ = wake.send(());
    }) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(
                source,
                "file change notification unavailable ({e}); polling every {:?}",
                POLL
            );
            return None;
        }
    };
    let mut all = true;
    for d in dirs {
        if let Err(e) = w.watch(d, notify::RecursiveMode::NonRecursive) {
            tracing::debug!(source, dir = %d.display(), "not watched ({e}); polling");
            all = false;
        }
    }
    Some((w, all))
}

#[cfg(test)]
mod tests;
