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

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

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
}

/// The outcome of a replay.
pub struct Report {
    pub now: TimeMs,
    pub metrics: Metrics,
    pub anomalies: Vec<Anomaly>,
    pub tracker: Tracker,
    pub counts: BTreeMap<(String, InputResult), u64>,
}

/// One input file being read: its parser and the next event it holds.
struct Reader<'a> {
    source: &'a str,
    parser: &'a LineParser,
    lines: Box<dyn BufRead>,
    file: PathBuf,
    buf: Vec<u8>,
    /// Its lines by where they landed (`InputResult::ALL`'s order), added
    /// to the report's counts at the end: no source name copied and no
    /// map searched per line.
    counts: [u64; InputResult::ALL.len()],
}

impl Reader<'_> {
    fn counted(&mut self, result: InputResult) {
        self.counts[result as usize] += 1;
    }
}

impl Reader<'_> {
    /// The next event of the file, counting every line that is not one.
    fn next_event(&mut self, tracker: &mut Tracker) -> Result<Option<Event>, ReplayError> {
        loop {
            self.buf.clear();
            let read = |e| ReplayError::Read {
                file: self.file.clone(),
                source: e,
            };
            // At most MAX_LINE bytes of a line are held, as the file
            // source does: a longer line is skipped to its end and
            // counted invalid.
            let cap = MAX_LINE as u64 + 1;
            let n = (&mut self.lines)
                .take(cap)
                .read_until(b'\n', &mut self.buf)
                .map_err(read)?;
            if n == 0 {
                return Ok(None);
            }
            let parsed = if self.buf.len() > MAX_LINE {
                skip_line(&mut self.lines).map_err(read)?;
                Parsed::Invalid(format!("line is longer than {MAX_LINE} bytes"))
            } else {
                match std::str::from_utf8(&self.buf) {
                    Ok(line) => self.parser.parse(line.trim_end_matches(['\n', '\r'])),
                    Err(_) => Parsed::Invalid("line is not UTF-8".into()),
                }
            };
            let result = match parsed {
                Parsed::Event(e) => return Ok(Some(*e)),
                Parsed::Skipped => InputResult::Skipped,
                Parsed::Invalid(_) => InputResult::Invalid,
                Parsed::Unmapped(_) => InputResult::Unmapped,
            };
            tracker.count(self.source, result);
            self.counted(result);
        }
    }
}

/// Reads past the rest of a line (to its newline or the end of the input)
/// without holding it.
fn skip_line(r: &mut dyn BufRead) -> std::io::Result<()> {
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
    let mut metrics = Metrics::new(&cfg.tracking, false)?;

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
        readers.push(Reader {
            source: name,
            parser,
            lines: Box::new(BufReader::with_capacity(256 * 1024, f)),
            file: file.clone(),
            buf: Vec::with_capacity(1024),
            counts: [0; InputResult::ALL.len()],
        });
    }

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
    tracker.tick(now, true);
    drain(&mut tracker, &mut metrics, &mut anomalies);
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
