//! The file source against real files in a temporary directory, one case
//! per rotation form: the lines handed out must be exactly the lines
//! written, each once.

use std::io::Write;

use super::*;
use crate::config::Loaded;
use crate::model::Model;

struct Fixture {
    dir: tempfile::TempDir,
    cfg: SourceConfig,
    n: usize,
}

impl Fixture {
    fn new(start_at: &str) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "[[sources]]\nname = \"f\"\ntype = \"file\"\npaths = [\"{}/*.log\"]\nstart_at = \"{start_at}\"\n",
            dir.path().display()
        );
        let cfg = crate::config::parse_text(text, None)
            .unwrap()
            .config
            .sources[0]
            .clone();
        Fixture { dir, cfg, n: 0 }
    }

    fn source(&self, checkpoint: Option<&[u8]>) -> FileSource {
        let parser = LineParser::new(&self.cfg, &Model::builtin(), "").unwrap();
        FileSource::new(&self.cfg, parser, checkpoint)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Appends `k` canonical lines (release r<n>) to `name`.
    fn write(&mut self, name: &str, k: usize) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path(name))
            .unwrap();
        for _ in 0..k {
            self.n += 1;
            writeln!(
                f,
                r#"{{"time":"2026-11-01T00:00:{:02}Z","release":"r{}","environment":"prod","status":"deployed"}}"#,
                self.n % 60,
                self.n
            )
            .unwrap();
        }
    }
}

/// Releases of the events handed out, in order.
fn releases(b: &SourceBatch) -> Vec<String> {
    b.items
        .iter()
        .map(|i| match i {
            Item::Event(e) => e.release.clone(),
            Item::Rejected(r) => format!("<{}>", r.as_str()),
        })
        .collect()
}

fn expect(range: std::ops::RangeInclusive<usize>) -> Vec<String> {
    range.map(|i| format!("r{i}")).collect()
}

/// Passes until the source has nothing more (bounded).
fn drain(src: &mut FileSource) -> Vec<String> {
    let mut out = Vec::new();
    for _ in 0..20 {
        let b = src.pass(true);
        let done = b.caught_up && b.items.is_empty();
        out.extend(releases(&b));
        if done {
            break;
        }
    }
    out
}

#[test]
fn reads_appended_lines_and_holds_a_partial_last_line() {
    let mut fx = Fixture::new("beginning");
    fx.write("a.log", 3);
    let mut src = fx.source(None);
    assert_eq!(drain(&mut src), expect(1..=3));
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(fx.path("a.log"))
        .unwrap();
    write!(f, r#"{{"time":"2026-11-01T00:00:04Z","release":"r4","#).unwrap();
    assert!(
        drain(&mut src).is_empty(),
        "a partial line waits for its newline"
    );
    writeln!(f, r#""environment":"prod","status":"deployed"}}"#).unwrap();
    assert_eq!(drain(&mut src), vec!["r4"]);
}

#[test]
fn rename_and_create() {
    let mut fx = Fixture::new("beginning");
    fx.write("a.log", 3);
    let mut src = fx.source(None);
    assert_eq!(drain(&mut src), expect(1..=3));
    fx.write("a.log", 2); // written before the rotation, not read yet
    std::fs::rename(fx.path("a.log"), fx.path("a.log.1")).unwrap();
    fx.write("a.log", 2); // the new file
    let mut got = drain(&mut src);
    got.sort();
    let mut want = expect(4..=7);
    want.sort();
    assert_eq!(got, want);
}

#[test]
fn delete_and_recreate() {
    let mut fx = Fixture::new("beginning");
    fx.write("a.log", 2);
    let mut src = fx.source(None);
    assert_eq!(drain(&mut src), expect(1..=2));
    fx.write("a.log", 1);
    std::fs::remove_file(fx.path("a.log")).unwrap();
    fx.write("a.log", 2);
    let mut got = drain(&mut src);
    got.sort();
    assert_eq!(got, expect(3..=5));
}

#[test]
fn copytruncate_and_truncate_in_place() {
    let mut fx = Fixture::new("beginning");
    fx.write("a.log", 3);
    let mut src = fx.source(None);
    assert_eq!(drain(&mut src), expect(1..=3));
    // logrotate copytruncate: copy (outside the glob), then truncate
    std::fs::copy(fx.path("a.log"), fx.path("a.log.1")).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(fx.path("a.log"))
        .unwrap()
        .set_len(0)
        .unwrap();
    fx.write("a.log", 5); // more than was there before: size alone would not tell
    assert_eq!(drain(&mut src), expect(4..=8));
    // truncate in place, then a shorter rewrite
    std::fs::OpenOptions::new()
        .write(true)
        .open(fx.path("a.log"))
        .unwrap()
        .set_len(0)
        .unwrap();
    fx.write("a.log", 1);
    assert_eq!(drain(&mut src), vec!["r9"]);
}

#[test]
fn restart_resumes_from_the_checkpoint_and_start_at_end_is_first_run_only() {
    let mut fx = Fixture::new("end");
    fx.write("a.log", 3);
    let mut src = fx.source(None);
    assert!(
        drain(&mut src).is_empty(),
        "start_at = end skips the existing lines"
    );
    fx.write("a.log", 2);
    assert_eq!(drain(&mut src), expect(4..=5));
    let cp = src.checkpoint();
    drop(src);
    fx.write("a.log", 2);
    fx.write("b.log", 1); // a new file after the first run is read from its start
    let mut src = fx.source(Some(&cp));
    let mut got = drain(&mut src);
    got.sort();
    assert_eq!(got, expect(6..=8));
}

#[test]
fn a_reused_inode_with_another_first_line_is_a_new_file() {
    let mut fx = Fixture::new("beginning");
    fx.write("a.log", 3);
    let mut src = fx.source(None);
    assert_eq!(drain(&mut src), expect(1..=3));
    let cp: Checkpoint = serde_json::from_slice(&src.checkpoint()).unwrap();
    drop(src);
    // Simulate inode reuse: a checkpoint for this very inode but another
    // first line (fingerprint) and a large offset.
    let (key, pos) = cp.into_iter().next().unwrap();
    let mut parts: Vec<&str> = key.split(':').collect();
    parts[2] = "00000000deadbeef";
    let mut forged = Checkpoint::new();
    forged.insert(
        parts.join(":"),
        FilePosition {
            offset: 10_000,
            ..pos
        },
    );
    let mut src = fx.source(Some(&serde_json::to_vec(&forged).unwrap()));
    assert_eq!(drain(&mut src), expect(1..=3));
}

#[test]
fn bad_lines_are_counted_not_fatal() {
    let mut fx = Fixture::new("beginning");
    std::fs::write(fx.path("a.log"), b"not json\n\xff\xfe\n").unwrap();
    fx.write("a.log", 1);
    let mut src = fx.source(None);
    assert_eq!(drain(&mut src), vec!["<invalid>", "<invalid>", "r1"]);
}

/// A file that cannot be read (here a procfs file with no read operation,
/// which fails even for root) is counted on every pass and logged once.
#[test]
fn an_unreadable_file_is_counted_and_logged_once() {
    let fx = Fixture::new("beginning");
    let mut cfg = fx.cfg.clone();
    cfg.paths = vec!["/proc/self/clear_refs".into()];
    let parser = LineParser::new(&cfg, &Model::builtin(), "").unwrap();
    let mut src = FileSource::new(&cfg, parser, None);
    for _ in 0..3 {
        let b = src.pass(true);
        assert_eq!(b.errors, vec!["read"], "counted on every pass");
        assert!(b.items.is_empty());
    }
    assert_eq!(src.logged.len(), 1, "logged once");
}

/// A path that the glob lists but that cannot be looked at (here a dangling
/// symlink, as a file deleted between listing and opening looks) is counted
/// as `vanished` and logged once; the other files are read.
#[test]
fn a_vanished_file_is_counted_and_the_rest_is_read() {
    let mut fx = Fixture::new("beginning");
    fx.write("a.log", 1);
    std::os::unix::fs::symlink(fx.path("gone"), fx.path("b.log")).unwrap();
    let mut src = fx.source(None);
    let b = src.pass(true);
    assert_eq!(b.errors, vec!["vanished"]);
    assert_eq!(releases(&b), vec!["r1"]);
    src.pass(true);
    assert_eq!(src.logged.len(), 1);
}

#[test]
fn the_builtin_source_watches_its_directory() {
    let l = Loaded::builtin();
    let parser = LineParser::new(&l.config.sources[0], &Model::builtin(), "").unwrap();
    let src = FileSource::new(&l.config.sources[0], parser, None);
    assert_eq!(src.watch_dirs(), vec![PathBuf::from("./relstat-logs")]);
}

/// A source whose files share a budget of `max` descriptors.
fn budgeted(fx: &Fixture, max: usize) -> FileSource {
    fx.source(None).with_budget(FdBudget::new(max))
}

/// Closes every open file that has nothing to read, as a file needing a
/// descriptor would.
fn close_idle(src: &mut FileSource) {
    while src.close_idlest() {}
    assert_eq!(src.open_files(), 0);
}

#[test]
fn more_files_than_descriptors_are_all_read_once() {
    let mut fx = Fixture::new("beginning");
    for i in 0..20 {
        fx.write(&format!("f{i:02}.log"), 3);
    }
    let mut src = budgeted(&fx, 4);
    let mut got = Vec::new();
    for _ in 0..50 {
        let b = src.pass(true);
        assert!(src.open_files() <= 4, "{} open", src.open_files());
        let done = b.caught_up && b.items.is_empty();
        got.extend(releases(&b));
        if done {
            break;
        }
    }
    got.sort();
    let mut want = expect(1..=60);
    want.sort();
    assert_eq!(got, want);
    // Appends to files closed long ago are read too.
    fx.write("f00.log", 1);
    fx.write("f19.log", 1);
    let mut got = drain(&mut src);
    got.sort();
    assert_eq!(got, expect(61..=62));
    assert!(src.open_files() <= 4);
}

#[test]
fn not_caught_up_while_files_wait_for_a_descriptor() {
    let mut fx = Fixture::new("beginning");
    for i in 0..3 {
        fx.write(&format!("f{i}.log"), 1);
    }
    let mut src = budgeted(&fx, 1);
    let b = src.pass(true);
    assert_eq!(b.items.len(), 1);
    assert!(!b.caught_up, "two files still wait");
}

/// Each rotation form applied to a file while it is closed: lines written
/// before and after are read once.
#[test]
fn rotation_while_closed_loses_and_duplicates_nothing() {
    let mut fx = Fixture::new("beginning");
    fx.write("a.log", 2);
    fx.write("b.log", 1);
    let mut src = budgeted(&fx, 1);
    let mut got = drain(&mut src);
    got.sort();
    assert_eq!(got, expect(1..=3));

    // append
    close_idle(&mut src);
    fx.write("a.log", 2);
    assert_eq!(drain(&mut src), expect(4..=5));

    // rename + create, with lines written before the rename not read yet
    close_idle(&mut src);
    fx.write("a.log", 2);
    std::fs::rename(fx.path("a.log"), fx.path("a.log.1")).unwrap();
    fx.write("a.log", 2);
    let mut got = drain(&mut src);
    got.sort();
    assert_eq!(got, expect(6..=9));

    // copytruncate (the copy is outside the glob), then more lines
    close_idle(&mut src);
    std::fs::copy(fx.path("a.log"), fx.path("a.log.2")).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(fx.path("a.log"))
        .unwrap()
        .set_len(0)
        .unwrap();
    fx.write("a.log", 3);
    assert_eq!(drain(&mut src), expect(10..=12));

    // truncate in place, a shorter rewrite
    close_idle(&mut src);
    std::fs::OpenOptions::new()
        .write(true)
        .open(fx.path("a.log"))
        .unwrap()
        .set_len(0)
        .unwrap();
    fx.write("a.log", 1);
    assert_eq!(drain(&mut src), expect(13..=13));

    // delete + recreate (the inode may well be reused)
    close_idle(&mut src);
    std::fs::remove_file(fx.path("a.log")).unwrap();
    fx.write("a.log", 2);
    assert_eq!(drain(&mut src), expect(14..=15));

    // the checkpoint holds closed files too: a restart reads nothing again
    close_idle(&mut src);
    let cp: Checkpoint = serde_json::from_slice(&src.checkpoint()).unwrap();
    assert_eq!(cp.len(), 2, "{cp:?}");
    let mut again = fx.source(Some(&src.checkpoint()));
    assert!(drain(&mut again).is_empty());
}

#[test]
fn directories_and_fifos_matching_a_glob_are_counted_once() {
    let mut fx = Fixture::new("beginning");
    fx.write("a.log", 1);
    std::fs::create_dir(fx.path("dir.log")).unwrap();
    let fifo = std::ffi::CString::new(fx.path("pipe.log").to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    let mut src = fx.source(None);
    let b = src.pass(true);
    let mut errors = b.errors.clone();
    errors.sort();
    assert_eq!(errors, vec!["directory", "not_a_file"]);
    assert_eq!(releases(&b), vec!["r1"]);
    assert!(
        src.pass(true).errors.is_empty(),
        "counted once while it stays"
    );
}

/// An idle pass sends no checkpoint (the agent skips it: no commit).
#[test]
fn an_idle_pass_has_no_checkpoint() {
    let mut fx = Fixture::new("beginning");
    fx.write("a.log", 1);
    let mut src = fx.source(None);
    assert!(src.pass(true).checkpoint.is_some());
    src.dirty = false;
    let b = src.pass(true);
    assert!(b.checkpoint.is_none() && b.caught_up);
    fx.write("a.log", 1);
    assert!(src.pass(true).checkpoint.is_some());
}

/// Two sources share the agent's descriptors: the one holding them all
/// with idle files gives them back when the other starves.
#[test]
fn a_source_starved_of_descriptors_gets_the_idle_files_of_another() {
    let mut fa = Fixture::new("beginning");
    fa.write("a1.log", 1);
    fa.write("a2.log", 1);
    let mut fb = Fixture::new("beginning");
    fb.n = 100;
    fb.write("b1.log", 1);
    let budget = FdBudget::new(2);
    let mut a = fa.source(None).with_budget(budget.clone());
    let mut b = fb.source(None).with_budget(budget.clone());
    assert_eq!(drain(&mut a).len(), 2);
    assert_eq!(a.open_files(), 2);
    let first = b.pass(true);
    assert!(
        first.items.is_empty() && !first.caught_up,
        "no descriptor left"
    );
    std::thread::sleep(IDLE_GIVE_BACK + Duration::from_millis(100));
    b.pass(true); // starved again, now that a's files are idle long enough
    assert!(budget.starving());
    a.pass(false);
    assert_eq!(a.open_files(), 0, "a gave its idle files back");
    assert_eq!(drain(&mut b), vec!["r101"]);
    // a's files are still known: an append is read once a descriptor frees.
    fa.write("a1.log", 1);
    assert_eq!(drain(&mut a), vec!["r3"]);
}
