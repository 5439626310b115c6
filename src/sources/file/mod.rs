//! The file source: tails every file matching a source's `paths` globs and
//! turns their lines into [`SourceBatch`]es for the core.
//!
//! It runs on its own thread with blocking I/O. A notify watcher on the
//! globs' directories wakes it as soon as something changes; a poll every
//! [`POLL`] is the fallback (network filesystems, exhausted inotify
//! watches), and also where new files are discovered.
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

use self::tail::{Chunk, FileId, Tailer, dev_ino, fingerprint};
use crate::config::{SourceConfig, StartAt};
use crate::event::InputResult;
use crate::sources::line::{LineParser, Parsed};
use crate::sources::{Item, SourceBatch};

/// Fallback poll interval (and discovery interval).
pub const POLL: Duration = Duration::from_millis(250);
/// Bytes read from one file per pass: bounds a batch (and so the time
/// between commits) while a large backlog is read.
const READ_BYTES: usize = 128 * 1024;
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

/// Where batches go; returns false when the core is gone.
pub type Sender = Arc<dyn Fn(SourceBatch) -> bool + Send + Sync>;

pub struct FileSource {
    name: String,
    raw_globs: Vec<String>,
    start_at: StartAt,
    parser: LineParser,
    tailers: Vec<Tailer>,
    /// Positions from the store, consumed as files are found again.
    restored: Checkpoint,
    first_run: bool,
    /// Errors already logged, so a permanent problem is logged once.
    logged: HashSet<(PathBuf, &'static str)>,
    orphan_since: HashMap<FileId, Instant>,
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
            first_run: checkpoint.is_none(),
            restored,
            logged: HashSet::new(),
            orphan_since: HashMap::new(),
        }
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

    /// Finds matching files: new ones are opened, renamed ones followed,
    /// vanished ones marked orphan.
    fn discover(&mut self, batch: &mut SourceBatch) {
        let mut present: HashSet<(u64, u64)> = HashSet::new();
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
        for path in paths {
            let meta = match std::fs::metadata(&path) {
                Ok(m) if m.is_file() => m,
                Ok(_) => continue,
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
            let (dev, ino) = dev_ino(&meta);
            present.insert((dev, ino));
            if let Some(t) = self
                .tailers
                .iter_mut()
                .find(|t| (t.id.dev, t.id.ino) == (dev, ino))
            {
                if t.path != path {
                    t.path = path.clone(); // renamed, still matching
                }
                t.orphan = false;
                continue;
            }
            let file = match std::fs::File::open(&path) {
                Ok(f) => f,
                Err(e) => {
                    let kind = match e.kind() {
                        std::io::ErrorKind::PermissionDenied => "permission",
                        std::io::ErrorKind::NotFound => "vanished",
                        _ => "open",
                    };
                    self.error(batch, &path, kind, &e);
                    continue;
                }
            };
            let fp = match fingerprint(&file) {
                Ok(Some(fp)) => fp,
                Ok(None) => continue, // first line not complete yet
                Err(e) => {
                    self.error(batch, &path, "read", &e);
                    continue;
                }
            };
            let id = FileId { dev, ino, fp };
            let len = meta.len();
            let offset = match self.restored.remove(&id.key()) {
                Some(pos) if pos.offset <= len => pos.offset,
                Some(_) => 0, // shorter than our position: truncated while we were away
                None if self.first_run && self.start_at == StartAt::End => len,
                None => 0,
            };
            self.logged.retain(|(p, _)| p != &path);
            tracing::debug!(source = %self.name, path = %path.display(), offset, "tailing");
            self.tailers.push(Tailer::open(&path, file, id, offset));
        }
        for t in &mut self.tailers {
            if !present.contains(&(t.id.dev, t.id.ino)) {
                t.orphan = true;
            }
        }
    }

    /// One pass: discover when due, read every file up to the batch limit.
    /// Returns the batch (possibly empty) with the checkpoint after it.
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
            match t.replaced() {
                Ok(true) => {
                    // copytruncate / truncate in place: start again once the
                    // new first line is complete.
                    match fingerprint_of(t) {
                        Some(fp) => {
                            tracing::info!(source = %self.name, path = %t.path.display(), "file truncated or rewritten: reading it from the start");
                            t.restart(fp);
                        }
                        None => {
                            t.restart(0);
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
            let res = t.read(READ_BYTES, &mut chunks);
            if let Err(e) = res {
                let p = t.path.clone();
                self.error(&mut batch, &p, "read", &e);
                i += 1;
                continue;
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
        batch.caught_up = all_eof;
        batch.checkpoint = Some((checkpoint_name(&self.name), self.checkpoint()));
        batch
    }

    fn close_drained_orphans(&mut self) {
        let now = Instant::now();
        let since = &mut self.orphan_since;
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
    }

    /// The positions of every open file.
    pub fn checkpoint(&self) -> Vec<u8> {
        let cp: Checkpoint = self
            .tailers
            .iter()
            .filter(|t| t.id.fp != 0)
            .map(|t| {
                (
                    t.id.key(),
                    FilePosition {
                        path: t.path.clone(),
                        offset: t.offset,
                    },
                )
            })
            .collect();
        serde_json::to_vec(&cp).unwrap_or_default()
    }

    /// The source's thread body: read until `stop`, or with `once` until the
    /// backlog is read. Batches go to `send`.
    pub fn run(mut self, send: Sender, stop: Arc<AtomicBool>, once: bool) {
        let (wake_tx, wake_rx) = std::sync::mpsc::channel::<()>();
        let _watcher = watch(&self.watch_dirs(), wake_tx, &self.name);
        let mut last_discover = Instant::now() - POLL;
        // A change notification may be a new file (or the first line of an
        // empty one): discover on every wake, not only every POLL.
        let mut woken = true;
        loop {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let discover = once || woken || last_discover.elapsed() >= POLL;
            if discover {
                last_discover = Instant::now();
            }
            let batch = self.pass(discover);
            let caught_up = batch.caught_up;
            let had_items = !batch.items.is_empty() || !batch.errors.is_empty();
            if (had_items || caught_up) && !send(batch) {
                return;
            }
            woken = false;
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
) -> Option<notify::RecommendedWatcher> {
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
    for d in dirs {
        if let Err(e) = w.watch(d, notify::RecursiveMode::NonRecursive) {
            tracing::debug!(source, dir = %d.display(), "not watched ({e}); polling");
        }
    }
    Some(w)
}

#[cfg(test)]
mod tests;
