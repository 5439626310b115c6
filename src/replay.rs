//! `relstat replay`: historical logs through the whole flow (parse, track,
//! detect, metrics) with the state in memory, never the live data_dir.
//!
//! Each file goes to the file source whose `paths` match it (or to
//! `--source`); the files are merged by event time with a k-way merge over
//! their lines, so memory stays constant whatever their size (lines out of
//! order inside one file are handled by the tracker's late-event rules, as
//! they would be live). The agent's clock during the replay is the greatest
//! event time seen so far that is not ahead of the wall clock, so at the end
//! it is the replay's "now"; `--now` fixes it instead.
//!
//! Threads: the tracker is single-owner and stays on the merge's thread.
//! Each of the first [`READER_THREADS`] files is read and parsed on its own
//! thread, ahead of the merge, over a bounded channel of batches, in order,
//! so the tracker sees the same calls as when everything runs on one thread
//! ([`Options::single_thread`]). The metrics stay on the merge's thread: a
//! sink thread cost more CPU than it saved (BENCHMARKS.md, step 11).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender};

use serde::Serialize;

use crate::config::{Loaded, SourceConfig, SourceType};
use crate::detect::Anomaly;
use crate::event::{Event, InputResult, TimeMs, format_rfc3339, now_ms};
use crate::sinks::metrics::Metrics;
use crate::sources::file::tail::MAX_LINE;
use crate::sources::line::{LineParser, Parsed};
use crate::track::{Effect, Tracker};

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(
        "{file}: no file source's paths match it; name one with --source (file sources: {sources})"
    )]
    NoSource { file: PathBuf, sources: String },
    #[error("--source {0}: no file source of that name in the configuration")]
    UnknownSource(String),
    #[error("cannot read {file}: {source}")]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("source {source_name}: {detail}")]
    Parser { source_name: String, detail: String },
    #[error("cannot start a reader thread: {0}")]
    Thread(std::io::Error),
    #[error("metrics: {0}")]
    Metrics(#[from] crate::sinks::metrics::MetricsError),
    #[error("the model is invalid (run check-config)")]
    Model,
}

impl ReplayError {
    /// Usage mistakes (exit 2) vs failures while running (exit 1).
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            Self::NoSource { .. } | Self::UnknownSource(_) | Self::Model
        )
    }
}

/// Options of `relstat replay`.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub files: Vec<PathBuf>,
    pub source: Option<String>,
    /// The agent's clock; default: the greatest event time not ahead of the wall clock.
    pub now: Option<TimeMs>,
    /// Read and parse every file on the calling thread instead of on
    /// reader threads ahead of the tracker (the same result: tests compare
    /// the two).
    pub single_thread: bool,
}

/// The outcome of a replay.
pub struct Report {
    pub now: TimeMs,
    pub metrics: Metrics,
    pub anomalies: Vec<Anomaly>,
    pub tracker: Tracker,
    pub counts: BTreeMap<(String, InputResult), u64>,
}

/// A line of a file as the merge sees it: an event, or where a line that
/// is not one landed.
enum Item {
    Event(Box<Event>),
    Other(InputResult),
}

/// Reads and parses one file's lines, on whichever thread owns it.
struct LineReader<'a> {
    parser: &'a LineParser,
    lines: BufReader<std::fs::File>,
    file: PathBuf,
    buf: Vec<u8>,
}

impl LineReader<'_> {
    /// The next line of the file as an [`Item`], with the bytes it took;
    /// `None` at the end.
    fn next_item(&mut self) -> Result<Option<(Item, usize)>, ReplayError> {
        self.buf.clear();
        let read = |e| ReplayError::Read {
            file: self.file.clone(),
            source: e,
        };
        // At most MAX_LINE bytes of a line are held, as the file source
        // does: a longer line is skipped to its end and counted invalid.
        let cap = MAX_LINE as u64 + 1;
        let n = (&mut self.lines)
            .take(cap)
            .read_until(b'\n', &mut self.buf)
            .map_err(read)?;
        if n == 0 {
            return Ok(None);
        }
        let item = if self.buf.len() > MAX_LINE {
            skip_line(&mut self.lines).map_err(read)?;
            Item::Other(InputResult::Invalid)
        } else {
            match std::str::from_utf8(&self.buf) {
                Ok(line) => match self.parser.parse(line.trim_end_matches(['\n', '\r'])) {
                    Parsed::Event(e) => Item::Event(e),
                    Parsed::Skipped => Item::Other(InputResult::Skipped),
                    Parsed::Invalid(_) => Item::Other(InputResult::Invalid),
                    Parsed::Unmapped(_) => Item::Other(InputResult::Unmapped),
                },
                // Not UTF-8.
                Err(_) => Item::Other(InputResult::Invalid),
            }
        };
        Ok(Some((item, n)))
    }
}

/// A reader thread's batch closes at this many lines or
/// [`BATCH_BYTES`] of line text, whichever comes first: one channel
/// operation per batch instead of per line.
const BATCH_LINES: usize = 512;
const BATCH_BYTES: usize = 256 * 1024;
/// Batches a reader thread may have queued before it waits for the merge.
/// With the one it is filling and the one the merge is taking from, a
/// threaded file holds at most 4 batches: ~4 × (512 events + 256 KiB, plus
/// one line of up to 1 MiB) — some 1.5 MiB for ordinary lines.
const QUEUED_BATCHES: usize = 2;
/// Files beyond this many are read on the main thread: the machines this
/// runs on have few cores, and every thread holds its batches.
const READER_THREADS: usize = 4;

type Batch = Result<Vec<Item>, ReplayError>;

/// Where a file's items come from: read in line on the main thread, or
/// from a reader thread's batches (in the file's order, the same items).
enum Feed<'a> {
    Inline(LineReader<'a>),
    Thread {
        batches: Receiver<Batch>,
        batch: std::vec::IntoIter<Item>,
    },
}

impl Feed<'_> {
    fn next_item(&mut self) -> Result<Option<Item>, ReplayError> {
        match self {
            Feed::Inline(r) => Ok(r.next_item()?.map(|(item, _)| item)),
            Feed::Thread { batches, batch } => loop {
                if let Some(item) = batch.next() {
                    return Ok(Some(item));
                }
                match batches.recv() {
                    Ok(next) => *batch = next?.into_iter(),
                    // The thread is done: at the end of the file (after
                    // an error it sent, nothing more is asked of it).
                    Err(_) => return Ok(None),
                }
            },
        }
    }
}

/// A reader thread: reads and parses `reader`'s file ahead of the merge,
/// in batches, until the end, an error (sent after the lines before it) or
/// the merge hanging up.
fn read_ahead(mut reader: LineReader<'_>, tx: SyncSender<Batch>) {
    let mut batch = Vec::with_capacity(BATCH_LINES);
    let mut bytes = 0;
    loop {
        match reader.next_item() {
            Ok(Some((item, n))) => {
                batch.push(item);
                bytes += n;
                if batch.len() == BATCH_LINES || bytes >= BATCH_BYTES {
                    let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH_LINES));
                    if tx.send(Ok(full)).is_err() {
                        return;
                    }
                    bytes = 0;
                }
            }
            Ok(None) => {
                if !batch.is_empty() {
                    let _ = tx.send(Ok(batch));
                }
                return;
            }
            Err(e) => {
                if !batch.is_empty() && tx.send(Ok(batch)).is_err() {
                    return;
                }
                let _ = tx.send(Err(e));
                return;
            }
        }
    }
}

/// One input file in the merge: its source, its items, and its lines by
/// where they landed (`InputResult::ALL`'s order), added to the report's
/// counts at the end: no source name copied and no map searched per line.
struct Input<'a> {
    source: &'a str,
    feed: Feed<'a>,
    counts: [u64; InputResult::ALL.len()],
}

impl Input<'_> {
    fn counted(&mut self, result: InputResult) {
        self.counts[result as usize] += 1;
    }

    /// The next event of the file, counting every line that is not one.
    fn next_event(&mut self, tracker: &mut Tracker) -> Result<Option<Event>, ReplayError> {
        loop {
            match self.feed.next_item()? {
                None => return Ok(None),
                Some(Item::Event(e)) => return Ok(Some(*e)),
                Some(Item::Other(result)) => {
                    tracker.count(self.source, result);
                    self.counted(result);
                }
            }
        }
    }
}

/// Reads past the rest of a line (to its newline or the end of the input)
/// without holding it.
fn skip_line(r: &mut impl BufRead) -> std::io::Result<()> {
    loop {
        let buf = r.fill_buf()?;
        if buf.is_empty() {
            return Ok(());
        }
        match buf.iter().position(|&b| b == b'\n') {
            Some(i) => {
                r.consume(i + 1);
                return Ok(());
            }
            None => {
                let n = buf.len();
                r.consume(n);
            }
        }
    }
}

/// The file source a path belongs to.
fn source_for<'a>(
    sources: &'a [SourceConfig],
    file: &Path,
    forced: Option<&str>,
) -> Result<&'a SourceConfig, ReplayError> {
    let files = || {
        sources
            .iter()
            .filter(|s| s.kind == SourceType::File)
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if let Some(name) = forced {
        return sources
            .iter()
            .find(|s| s.kind == SourceType::File && s.name == name)
            .ok_or_else(|| ReplayError::UnknownSource(name.to_string()));
    }
    let normal = |p: &Path| p.strip_prefix("./").unwrap_or(p).to_path_buf();
    let file_n = normal(file);
    let abs = std::fs::canonicalize(file).ok();
    sources
        .iter()
        .filter(|s| s.kind == SourceType::File)
        .find(|s| {
            s.paths.iter().any(|g| {
                let Ok(pat) = glob::Pattern::new(g.strip_prefix("./").unwrap_or(g)) else {
                    return false;
                };
                pat.matches_path(&file_n) || abs.as_ref().is_some_and(|a| pat.matches_path(a))
            })
        })
        .ok_or_else(|| ReplayError::NoSource {
            file: file.to_path_buf(),
            sources: files(),
        })
}

/// Runs the replay.
pub fn replay(loaded: &Loaded, opts: &Options) -> Result<Report, ReplayError> {
    let cfg = &loaded.config;
    let mut tracker = Tracker::from_config(cfg, false).map_err(|_| ReplayError::Model)?;
    // One check, at the end: the rollups are computed then, from the keys.
    tracker.defer_rollups();
    let model = tracker.model_arc();
    let metrics = Metrics::new(&cfg.tracking, false)?;

    // One parser per source used, built once.
    let mut parsers: BTreeMap<String, LineParser> = BTreeMap::new();
    let mut assigned = Vec::new();
    for file in &opts.files {
        let src = source_for(&cfg.sources, file, opts.source.as_deref())?;
        if !parsers.contains_key(&src.name) {
            let p =
                LineParser::new(src, &model, &cfg.agent.site).map_err(|e| ReplayError::Parser {
                    source_name: src.name.clone(),
                    detail: e.to_string(),
                })?;
            metrics.declare_source(&src.name);
            parsers.insert(src.name.clone(), p);
        }
        assigned.push((file.clone(), src.name.clone()));
    }
    let mut readers = Vec::new();
    for (file, source) in &assigned {
        let f = std::fs::File::open(file).map_err(|e| ReplayError::Read {
            file: file.clone(),
            source: e,
        })?;
        let (name, parser) = parsers.get_key_value(source).expect("parser built above");
        let reader = LineReader {
            parser,
            lines: BufReader::with_capacity(256 * 1024, f),
            file: file.clone(),
            buf: Vec::with_capacity(1024),
        };
        readers.push((name.as_str(), reader));
    }
    let threads = if opts.single_thread {
        0
    } else {
        READER_THREADS
    };
    // The reader threads end when their file does or when the merge drops
    // their channel (an error): the scope's join never waits on a full one.
    std::thread::scope(|scope| {
        let mut inputs = Vec::with_capacity(readers.len());
        for (i, (source, reader)) in readers.into_iter().enumerate() {
            let feed = if i < threads {
                let (tx, rx) = std::sync::mpsc::sync_channel(QUEUED_BATCHES);
                std::thread::Builder::new()
                    .name("replay-read".into())
                    .spawn_scoped(scope, move || read_ahead(reader, tx))
                    .map_err(ReplayError::Thread)?;
                Feed::Thread {
                    batches: rx,
                    batch: Vec::new().into_iter(),
                }
            } else {
                Feed::Inline(reader)
            };
            inputs.push(Input {
                source,
                feed,
                counts: [0; InputResult::ALL.len()],
            });
        }
        merge(tracker, metrics, inputs, opts)
    })
}

/// Applies the files' events to the tracker in event-time order (a k-way
/// merge over their heads), then the final tick.
fn merge(
    mut tracker: Tracker,
    mut metrics: Metrics,
    mut readers: Vec<Input<'_>>,
    opts: &Options,
) -> Result<Report, ReplayError> {
    let wall = now_ms();
    let mut clock: TimeMs = opts.now.unwrap_or(TimeMs::MIN);
    let mut anomalies = Vec::new();
    // The head event of every file, smallest event time first; ties by file
    // order then by sequence, so the merge is deterministic.
    let mut heads: BinaryHeap<Reverse<(TimeMs, usize, u64)>> = BinaryHeap::new();
    let mut pending: Vec<Option<Event>> = Vec::with_capacity(readers.len());
    let mut seq = 0u64;
    for (i, r) in readers.iter_mut().enumerate() {
        let e = r.next_event(&mut tracker)?;
        if let Some(ev) = &e {
            heads.push(Reverse((ev.time, i, seq)));
            seq += 1;
        }
        pending.push(e);
    }
    drain(&mut tracker, &mut metrics, &mut anomalies);
    while let Some(Reverse((_, i, _))) = heads.pop() {
        let ev = pending[i].take().expect("a head event is pending");
        if opts.now.is_none() && ev.time <= wall && ev.time > clock {
            clock = ev.time;
        }
        let now = if clock == TimeMs::MIN {
            ev.time.min(wall)
        } else {
            clock
        };
        metrics.source_event(&ev.source, ev.time);
        let result = tracker.apply(ev, now);
        readers[i].counted(result);
        drain(&mut tracker, &mut metrics, &mut anomalies);
        let next = readers[i].next_event(&mut tracker)?;
        if let Some(ev) = &next {
            heads.push(Reverse((ev.time, i, seq)));
            seq += 1;
        }
        pending[i] = next;
    }
    let mut counts = BTreeMap::new();
    for r in &readers {
        for (result, n) in InputResult::ALL.into_iter().zip(r.counts) {
            if n > 0 {
                *counts.entry((r.source.to_string(), result)).or_default() += n;
            }
        }
    }
    let now = if clock == TimeMs::MIN { wall } else { clock };
    let before = anomalies.len();
    tracker.tick(now, true);
    drain(&mut tracker, &mut metrics, &mut anomalies);
    // The final check walks the keys in hash order, which changes from run
    // to run: its anomalies in the order of their time and key, so two
    // replays of the same files print the same.
    anomalies[before..].sort_by(|a, b| {
        (
            a.event_time,
            &a.release,
            &a.service,
            &a.environment,
            &a.site,
            &a.rule,
        )
            .cmp(&(
                b.event_time,
                &b.release,
                &b.service,
                &b.environment,
                &b.site,
                &b.rule,
            ))
    });
    metrics.expire(now);
    metrics.drop_finished();
    Ok(Report {
        now,
        metrics,
        anomalies,
        tracker,
        counts,
    })
}

fn drain(tracker: &mut Tracker, metrics: &mut Metrics, anomalies: &mut Vec<Anomaly>) {
    for e in tracker.drain_effects() {
        metrics.apply(&e);
        if let Effect::Anomaly(a) = e {
            anomalies.push(*a);
        }
    }
}

/// `--output json`: anomalies, final statuses and input accounting.
#[derive(Serialize)]
pub struct JsonReport<'a> {
    pub now: String,
    pub anomalies: &'a [Anomaly],
    pub releases: Vec<JsonRelease>,
    pub events: BTreeMap<String, BTreeMap<&'static str, u64>>,
}

#[derive(Serialize)]
pub struct JsonRelease {
    pub release: String,
    pub service: String,
    pub environment: String,
    pub site: String,
    pub status: String,
    pub since: String,
    pub finished: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_reason: Option<crate::detect::FinishReason>,
    pub actor: String,
}

impl Report {
    pub fn to_json(&self) -> JsonReport<'_> {
        let mut releases: Vec<JsonRelease> = self
            .tracker
            .keys()
            .map(|(k, s)| JsonRelease {
                release: k.release.clone(),
                service: k.service.to_string(),
                environment: k.environment.to_string(),
                site: k.site.to_string(),
                status: s.status.to_string(),
                since: format_rfc3339(s.entered_at),
                finished: s.finished.is_some(),
                finished_reason: s.finished.map(|f| f.reason),
                actor: s.last.actor.to_string(),
            })
            .collect();
        releases.sort_by(|a, b| {
            (&a.release, &a.service, &a.environment, &a.site).cmp(&(
                &b.release,
                &b.service,
                &b.environment,
                &b.site,
            ))
        });
        let mut events: BTreeMap<String, BTreeMap<&'static str, u64>> = BTreeMap::new();
        for ((source, result), n) in &self.counts {
            *events
                .entry(source.clone())
                .or_default()
                .entry(result.as_str())
                .or_default() += n;
        }
        JsonReport {
            now: format_rfc3339(self.now),
            anomalies: &self.anomalies,
            releases,
            events,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"
[agent]
data_dir = "unused"
site = "dc-east"
[[sources]]
name = "logs"
type = "file"
paths = ["unused"]
format = "logfmt"
[sources.fields]
time = "ts"
release = "rel"
service = "svc"
environment = "env"
status = "state"
actor = "who"
actor_type = "kind"
[tracking]
stale_after = "3650d"
"#;

    /// A deployment log with every kind of line: events in and out of
    /// order, duplicates, backward transitions (anomalies), unknown
    /// statuses, bad logfmt, bad UTF-8, blank lines and lines over the
    /// 1 MiB cap (one with no newline at the end of the file).
    fn mixed_file(seed: u64, lines: usize) -> Vec<u8> {
        const FLOW: [&str; 8] = [
            "scheduled",
            "in_test",
            "approved",
            "in_progress",
            "deployed",
            "complete",
            "failed",
            "rolled_back",
        ];
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut out = Vec::new();
        let mut last = String::new();
        for i in 0..lines {
            let minute = i as i64 * 3 + rng.i64(-40..=5);
            let time = format_rfc3339(1_767_225_600_000 + minute * 60_000);
            let line = match rng.u8(0..100) {
                0..=2 => last.clone(),
                3 => format!("ts={time} rel=R{} env=uat state=no_such_state", i / 6),
                4 => format!("ts=\"{time} rel=R1"),
                5 => {
                    out.extend_from_slice(b"ts=\xff\xfe rel=R1 env=uat state=scheduled\n");
                    continue;
                }
                6 => String::new(),
                7 if i % 500 == 7 => format!("ts={time} reason={}", "x".repeat(MAX_LINE)),
                _ => format!(
                    "ts={time} rel=R{:04} svc=s{} env={} state={} who=bot kind={}",
                    rng.usize(0..lines / 8 + 1),
                    seed,
                    ["uat", "staging", "production"][rng.usize(0..3)],
                    FLOW[rng.usize(0..FLOW.len())],
                    ["automation", "human"][rng.usize(0..2)],
                ),
            };
            out.extend_from_slice(line.as_bytes());
            out.extend_from_slice(if rng.bool() { b"\n" } else { b"\r\n" });
            last = line;
        }
        out.extend_from_slice(format!("ts=x reason={}", "y".repeat(MAX_LINE + 5)).as_bytes());
        out
    }

    fn run(files: &[PathBuf], single_thread: bool) -> (String, String) {
        let loaded = crate::config::parse_text(CONFIG.to_string(), None).unwrap();
        let opts = Options {
            files: files.to_vec(),
            source: Some("logs".into()),
            now: Some(1_767_225_600_000 + 40 * 86_400_000),
            single_thread,
        };
        let report = replay(&loaded, &opts).unwrap();
        let json = serde_json::to_value(report.to_json()).unwrap();
        (
            serde_json::to_string_pretty(&json).unwrap(),
            report.metrics.render(),
        )
    }

    /// Reader threads change who parses, not what the tracker sees: the
    /// same anomalies, statuses, counts and series as reading every file
    /// on the main thread, with more files than reader threads (so both
    /// feeds are merged) and files of many batches.
    #[test]
    fn reader_threads_give_the_single_threaded_result() {
        let d = tempfile::tempdir().unwrap();
        let files: Vec<PathBuf> = (0..READER_THREADS as u64 + 2)
            .map(|seed| {
                let path = d.path().join(format!("{seed}.log"));
                std::fs::write(&path, mixed_file(seed, 4 * BATCH_LINES + 100)).unwrap();
                path
            })
            .collect();
        let (json, prom) = run(&files, false);
        let (json1, prom1) = run(&files, true);
        assert_eq!(json, json1);
        assert_eq!(prom, prom1);
        // The file really had every kind of line.
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        let counts = &v["events"]["logs"];
        for result in InputResult::ALL {
            assert!(counts[result.as_str()].as_u64() > Some(0), "{counts}");
        }
        assert!(!v["anomalies"].as_array().unwrap().is_empty());
        // Several files on one thread give the same result too.
        let (json2, _) = run(&files[..1], false);
        assert_eq!(json2, run(&files[..1], true).0);
    }

    /// A read error reaches the caller after the lines before it, whether
    /// the file is read on a thread or not.
    #[test]
    fn a_read_error_is_an_error_on_either_path() {
        let d = tempfile::tempdir().unwrap();
        let loaded = crate::config::parse_text(CONFIG.to_string(), None).unwrap();
        for single_thread in [false, true] {
            let opts = Options {
                files: vec![d.path().to_path_buf()],
                source: Some("logs".into()),
                now: None,
                single_thread,
            };
            let err = replay(&loaded, &opts)
                .err()
                .expect("a directory cannot be read");
            assert!(matches!(err, ReplayError::Read { .. }), "{err}");
        }
    }
}
