//! Parse + track throughput (events/s): the same events as NDJSON, logfmt
//! and regex lines through the line parser; the tracker alone on parsed
//! events; and parse + track together with the built-in model, as `replay`
//! runs them (no store). Figures go to BENCHMARKS.md.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use relstat::config::{AnomaliesConfig, Config, Loaded, SourceConfig};
use relstat::detect::Detectors;
use relstat::model::Model;
use relstat::sources::line::{LineParser, Parsed};
use relstat::track::{Settings, Tracker};

const STATUSES: [&str; 4] = ["scheduled", "in_progress", "deployed", "complete"];

/// `n` realistic canonical NDJSON lines: many releases of 50 services in 3
/// environments, each moving through four statuses.
fn lines(n: usize) -> Vec<String> {
    let envs = ["dev", "staging", "production"];
    (0..n)
        .map(|i| {
            let rel = i / 12;
            let env = envs[(i / 4) % 3];
            let status = STATUSES[i % 4];
            let t = 1_790_000_000 + i as i64 * 7;
            let secs = t % 60;
            let mins = (t / 60) % 60;
            let hours = (t / 3600) % 24;
            format!(
                r#"{{"time":"2026-11-{:02}T{hours:02}:{mins:02}:{secs:02}Z","release":"2026.11.{rel}","service":"svc-{}","environment":"{env}","status":"{status}","actor":"deploy-bot","actor_type":"automation","version":"1.{rel}.0"}}"#,
                1 + (t / 86400) % 28,
                rel % 50,
            )
        })
        .collect()
}

/// The same events as logfmt lines.
fn logfmt_lines(n: usize) -> Vec<String> {
    lines(n)
        .iter()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v.as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap()))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

/// The same events as a deploy script's text line, read by a regex.
fn text_lines(n: usize) -> Vec<String> {
    lines(n)
        .iter()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let f = |k: &str| v[k].as_str().unwrap().to_string();
            format!(
                "{} {} {} {} {} {} {}",
                f("time"),
                f("actor"),
                f("service"),
                f("release"),
                f("environment"),
                f("status").to_uppercase(),
                f("version")
            )
        })
        .collect()
}

fn source_parser(model: &Model, extra: &str) -> LineParser {
    let src: SourceConfig = toml::from_str(&format!(
        "name = \"bench\"\ntype = \"file\"\npaths = [\"/dev/null\"]\n{extra}"
    ))
    .unwrap();
    LineParser::new(&src, model, "").unwrap()
}

fn setup() -> (Config, Arc<Model>, LineParser) {
    let loaded = Loaded::builtin();
    let cfg = loaded.config;
    let model = Arc::new(Model::builtin());
    let parser = LineParser::new(&cfg.sources[0], &model, "").unwrap();
    (cfg, model, parser)
}

fn bench(c: &mut Criterion) {
    let input = lines(60_000);
    let bytes: usize = input.iter().map(|l| l.len() + 1).sum();
    let (cfg, model, parser) = setup();

    let mut g = c.benchmark_group("ingest");
    g.sample_size(10);
    g.throughput(Throughput::Elements(input.len() as u64));
    g.bench_function("parse_ndjson", |b| {
        b.iter(|| {
            for l in &input {
                black_box(parser.parse(l));
            }
        })
    });
    let logfmt = logfmt_lines(input.len());
    let logfmt_parser = source_parser(&model, "format = \"logfmt\"");
    g.bench_function("parse_logfmt", |b| {
        b.iter(|| {
            for l in &logfmt {
                black_box(logfmt_parser.parse(l));
            }
        })
    });
    let text = text_lines(input.len());
    let regex_parser = source_parser(
        &model,
        r#"format = "regex"
pattern = '^(?P<time>\S+) (?P<actor>\S+) (?P<service>\S+) (?P<release>\S+) (?P<environment>\S+) (?P<status>[A-Z_]+) (?P<version>\S+)$'
[status_map]
SCHEDULED = "scheduled"
IN_PROGRESS = "in_progress"
DEPLOYED = "deployed"
COMPLETE = "complete"
"#,
    );
    g.bench_function("parse_regex", |b| {
        b.iter(|| {
            for l in &text {
                black_box(regex_parser.parse(l));
            }
        })
    });
    // Every line of the three forms is read as an event.
    for (p, ls) in [(&logfmt_parser, &logfmt), (&regex_parser, &text)] {
        for l in ls.iter().take(100) {
            assert!(matches!(p.parse(l), Parsed::Event(_)), "{l}");
        }
    }
    let events: Vec<_> = input
        .iter()
        .filter_map(|l| match parser.parse(l) {
            Parsed::Event(e) => Some(*e),
            _ => None,
        })
        .collect();
    assert_eq!(events.len(), input.len());
    g.bench_function("track", |b| {
        b.iter_batched(
            || events.clone(),
            |events| {
                let detect = Detectors::new(&AnomaliesConfig::default(), "bench");
                let mut t = Tracker::new(model.clone(), detect, Settings::from_config(&cfg, false));
                let now = 1_800_000_000_000;
                for e in events {
                    t.apply(e, now);
                    t.take_effects();
                }
                black_box(t.len())
            },
            criterion::BatchSize::LargeInput,
        )
    });
    g.bench_function("parse_and_track", |b| {
        b.iter(|| {
            let detect = Detectors::new(&AnomaliesConfig::default(), "bench");
            let mut t = Tracker::new(model.clone(), detect, Settings::from_config(&cfg, false));
            let now = 1_800_000_000_000;
            for l in &input {
                if let Parsed::Event(e) = parser.parse(l) {
                    t.apply(*e, now);
                }
                t.take_effects();
            }
            black_box(t.len())
        })
    });
    g.throughput(Throughput::Bytes(bytes as u64));
    g.bench_function("parse_ndjson_bytes", |b| {
        b.iter(|| {
            for l in &input {
                black_box(parser.parse(l));
            }
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
