//! The tracker's behaviour as data (docs/events.md, docs/metrics.md): events in at
//! given agent clocks, what must come out. One table per area.
//!
//! A [`Case`] is a list of steps (an event applied at `now` with the input
//! result it must get, or a periodic check) and what it checks afterwards,
//! rendered one line per item so a table reads like a golden file:
//! - `keys`: every key the tracker holds, `"<key> <status> since=<s> open"` or
//!   `"... finished=<reason>@<s>"` (times in seconds from [`BASE`]);
//! - `effects`: every effect but `Input` and `Status`, in order (`Input` is
//!   checked against the steps' results; a check's effects are sorted, since
//!   it walks a hash map). Always checked: an empty list means "nothing";
//! - the store batch (taken once, at the end) when the case sets those fields;
//! - `findings`: every anomaly with its severity, evidence and message.
//!
//! A case may set `config` (a TOML snippet: `[model]` and `[anomalies]`) and
//! `only` (effect prefixes: then `effects` lists just those, which keeps the
//! rule tables in `rules` about the rules).
//!
//! At the end, a proptest: any arrival order of the same events gives the
//! same final statuses and the same history (docs/events.md).

use std::collections::BTreeMap;
use std::sync::Arc;

use proptest::prelude::*;

use super::*;
use crate::config::AnomaliesConfig;
use crate::event::ActorType;
use crate::event::InputResult::{Accepted, Duplicate, Late, Unmapped};

/// An arbitrary fixed origin (2026-09-21); cases speak in seconds from it.
const BASE: TimeMs = 1_790_000_000_000;
const M: i64 = 60;
const H: i64 = 3600;
const D: i64 = 86_400;

fn t(secs: i64) -> TimeMs {
    BASE + secs * 1000
}

fn secs(at: TimeMs) -> i64 {
    (at - BASE) / 1000
}

/// The config defaults (5m, 7d, 30d, 400d), persisting, no outbox.
fn settings() -> Settings {
    Settings {
        max_future: 5 * M * 1000,
        dedupe_window: 7 * D * 1000,
        stale_after: 30 * D * 1000,
        history_retention: 400 * D * 1000,
        max_finished: 10_000,
        max_seen: 10_000 * SEEN_PER_KEY,
        persist: true,
        outbox: OutboxMode::Off,
    }
}

fn tracker(settings: Settings) -> Tracker {
    Tracker::new(
        Arc::new(Model::builtin()),
        Detectors::new(&AnomaliesConfig::default(), "host"),
        settings,
    )
}

/// A tracker with the model and rules of a TOML snippet.
fn tracker_with(settings: Settings, config: &str) -> Tracker {
    let cfg: crate::config::Config = toml::from_str(config).expect("case config parses");
    let model = Model::from_config(&cfg.model).expect("case model is valid");
    let mut t = Tracker::new(
        Arc::new(model),
        Detectors::new(&cfg.anomalies, "host"),
        settings,
    );
    t.rollups = cfg.rollups;
    t
}

// ---------------------------------------------------------------- events in

/// An event with a readable default id naming its fields (tests that are
/// about ids set them with [`Build::id`]).
fn ev(release: &str, service: &str, environment: &str, status: &str, time: TimeMs) -> Event {
    let mut e = Event {
        id: String::new(),
        time,
        release: release.into(),
        service: service.into(),
        environment: environment.into(),
        site: String::new(),
        status: status.into(),
        actor: "deploy-bot".into(),
        actor_type: ActorType::Automation,
        source: "ci".into(),
        reason: None,
        version: None,
        commit: None,
        artifact: None,
        commit_time: None,
        change_class: None,
    };
    e.id = default_id(&e);
    e
}

fn default_id(e: &Event) -> String {
    format!("{}:{}@{}", e.key(), e.status, secs(e.time))
}

trait Build {
    fn id(self, id: &str) -> Self;
    fn site(self, site: &str) -> Self;
    fn actor(self, actor: &str) -> Self;
    fn actor_type(self, t: ActorType) -> Self;
    fn commit_time(self, at: TimeMs) -> Self;
    fn version(self, v: &str) -> Self;
    fn commit(self, c: &str) -> Self;
    fn source(self, s: &str) -> Self;
    fn reason(self, r: &str) -> Self;
    fn emergency(self) -> Self;
}

impl Build for Event {
    fn id(mut self, id: &str) -> Self {
        self.id = id.into();
        self
    }
    fn site(mut self, site: &str) -> Self {
        let named = self.id == default_id(&self);
        self.site = site.into();
        if named {
            self.id = default_id(&self);
        }
        self
    }
    fn actor(mut self, actor: &str) -> Self {
        self.actor = actor.into();
        self
    }
    fn actor_type(mut self, t: ActorType) -> Self {
        self.actor_type = t;
        self
    }
    fn commit_time(mut self, at: TimeMs) -> Self {
        self.commit_time = Some(at);
        self
    }
    fn version(mut self, v: &str) -> Self {
        self.version = Some(v.into());
        self
    }
    fn commit(mut self, c: &str) -> Self {
        self.commit = Some(c.into());
        self
    }
    fn source(mut self, s: &str) -> Self {
        self.source = s.into();
        self
    }
    fn reason(mut self, r: &str) -> Self {
        self.reason = Some(r.into());
        self
    }
    fn emergency(mut self) -> Self {
        self.change_class = Some(crate::event::ChangeClass::Emergency);
        self
    }
}

enum Step {
    /// Apply an event at agent time `now`; it must land in `want`.
    Apply {
        now: TimeMs,
        ev: Box<Event>,
        want: InputResult,
    },
    /// The periodic check at `now`.
    Tick { now: TimeMs, caught_up: bool },
}

fn at(now: TimeMs, ev: Event, want: InputResult) -> Step {
    Step::Apply {
        now,
        ev: Box::new(ev),
        want,
    }
}

fn tick(now: TimeMs, caught_up: bool) -> Step {
    Step::Tick { now, caught_up }
}

type Lines = &'static [&'static str];

struct Case {
    name: &'static str,
    settings: Settings,
    /// `[model]` and `[anomalies]` as TOML; empty = the defaults.
    config: &'static str,
    /// Effect prefixes `effects` is restricted to; empty = every effect.
    only: &'static [&'static str],
    /// Anomalies: `"<rule> <severity> <event_id>: <message>"`.
    findings: Option<Lines>,
    steps: Vec<Step>,
    keys: Lines,
    effects: Lines,
    /// `Batch.history`: `"<key> <status> t=<s> order=<s> (from=<status|->|late)[ !rules]"`.
    history: Option<Lines>,
    /// `Batch.keys` (the dirty keys), sorted.
    written: Option<Lines>,
    removed: Option<Lines>,
    /// Number of `Batch.seen` entries.
    seen: Option<usize>,
    /// `Batch.outbox`: `"<rule> <key> [<from>->]<to> by <actor> (<actor_type>) via <source>[ v<version>]"`.
    outbox: Option<Lines>,
    /// `Batch.failing`: `"-"` when unchanged, else `"<service>/<env>@<site>=<s>"` sorted, `,`-joined.
    failing: Option<&'static str>,
    /// `"seen<<s> history<<s>"` from the batch's purge bounds (`-` when unset).
    purge: Option<&'static str>,
}

impl Default for Case {
    fn default() -> Self {
        Self {
            name: "",
            settings: settings(),
            config: "",
            only: &[],
            findings: None,
            steps: Vec::new(),
            keys: &[],
            effects: &[],
            history: None,
            written: None,
            removed: None,
            seen: None,
            outbox: None,
            failing: None,
            purge: None,
        }
    }
}

// -------------------------------------------------------------- renderings

fn arrow(from: Option<&str>, to: &str) -> String {
    match from {
        Some(f) => format!("{f}->{to}"),
        None => to.to_string(),
    }
}

fn anomaly_key(a: &Anomaly) -> Key {
    Key {
        release: a.release.clone(),
        service: a.service.as_str().into(),
        environment: a.environment.as_str().into(),
        site: a.site.as_str().into(),
    }
}

fn render_effect(e: &Effect) -> Option<String> {
    Some(match e {
        Effect::Input { .. }
        | Effect::Status { .. }
        | Effect::Rollups(_)
        | Effect::Delay { .. }
        | Effect::SiteSync { .. } => return None,
        Effect::Finished { key, .. } => format!("finished {key}"),
        Effect::Reopened { key } => format!("reopened {key}"),
        Effect::Forgotten { key } => format!("forgotten {key}"),
        Effect::Transition {
            environment,
            from,
            to,
        } => format!("transition {environment} {from}->{to}"),
        Effect::Duration { key, status, secs } => format!("duration {key} {status} {secs}s"),
        Effect::Resolution {
            key,
            status,
            cause,
            secs,
        } => format!("resolution {key} {status} {} {secs}s", cause.as_str()),
        Effect::Deployment { key, outcome } => format!("deployment {key} {}", outcome.as_str()),
        Effect::LeadTime { key, secs } => format!("lead_time {key} {secs}s"),
        Effect::Restore { key, secs } => format!("restore {key} {secs}s"),
        Effect::Anomaly(a) => format!(
            "anomaly {} {} {}",
            a.rule,
            anomaly_key(a),
            arrow(a.from.as_deref(), &a.to)
        ),
        Effect::StuckCounts(counts) => {
            let counts: Vec<String> = counts
                .iter()
                .map(|((env, status), n)| format!("{env}/{status}={n}"))
                .collect();
            format!("stuck_counts {}", counts.join(","))
                .trim_end()
                .to_string()
        }
    })
}

fn render_finding(e: &Effect) -> Option<String> {
    let Effect::Anomaly(a) = e else { return None };
    let decision = match (&a.decision, &a.approver) {
        (Some(d), Some(who)) => format!(" [{d} by {who}]"),
        (Some(d), None) => format!(" [{d}]"),
        _ => String::new(),
    };
    Some(format!(
        "{} {} {}: {}{decision}",
        a.rule,
        a.severity.as_str(),
        a.event_id,
        a.message
    ))
}

fn render_key(key: &Key, ks: &KeyState) -> String {
    let end = match &ks.finished {
        None => "open".to_string(),
        Some(f) => format!("finished={}@{}", reason_str(f.reason), secs(f.at)),
    };
    format!("{key} {} since={} {end}", ks.status, secs(ks.entered_at))
}

fn reason_str(r: FinishReason) -> &'static str {
    match r {
        FinishReason::Terminal => "terminal",
        FinishReason::Superseded => "superseded",
        FinishReason::Stale => "stale",
    }
}

fn render_history(h: &HistoryRecord) -> String {
    let mut s = format!(
        "{} {} t={} order={} ",
        h.event.key(),
        h.event.status,
        secs(h.event.time),
        secs(h.order_time),
    );
    match (h.late, &h.from) {
        (true, None) => s.push_str("late"),
        (true, Some(f)) => s.push_str(&format!("late from={f}")),
        (false, f) => s.push_str(&format!("from={}", f.as_deref().unwrap_or("-"))),
    }
    if !h.anomalies.is_empty() {
        s.push_str(&format!(" !{}", h.anomalies.join(",")));
    }
    s
}

fn render_failing(f: &Option<Vec<(Target, TimeMs)>>) -> String {
    let Some(f) = f else { return "-".into() };
    let mut v: Vec<String> = f
        .iter()
        .map(|(t, at)| format!("{}/{}@{}={}", t.service, t.environment, t.site, secs(*at)))
        .collect();
    v.sort();
    v.join(",")
}

fn render_purge(b: &Batch) -> String {
    let s = |t: Option<TimeMs>| t.map_or("-".to_string(), |t| secs(t).to_string());
    format!(
        "seen<{} history<{}",
        s(b.seen_purge_before),
        s(b.history_purge_before)
    )
}

// ------------------------------------------------------------------ runner

fn diff<T: std::fmt::Debug + PartialEq>(
    problems: &mut Vec<String>,
    what: &str,
    got: &[T],
    want: &[T],
) {
    if got != want {
        problems.push(format!("{what}:\n    got:  {got:#?}\n    want: {want:#?}"));
    }
}

/// Runs one case; returns what did not match.
fn run(case: Case) -> Vec<String> {
    let mut problems = Vec::new();
    let mut tr = if case.config.is_empty() {
        tracker(case.settings.clone())
    } else {
        tracker_with(case.settings.clone(), case.config)
    };
    let mut findings = Vec::new();
    let mut effects = Vec::new();
    let mut inputs = Vec::new();
    let mut want_inputs = Vec::new();
    for (i, step) in case.steps.into_iter().enumerate() {
        match step {
            Step::Apply { now, ev, want } => {
                let id = ev.id.clone();
                let got = tr.apply(*ev, now);
                if got != want {
                    problems.push(format!("step {i} ({id}): got {got:?}, want {want:?}"));
                }
                want_inputs.push(got);
                let mut step_effects = tr.take_effects();
                findings.extend(step_effects.iter().filter_map(render_finding));
                inputs.extend(step_effects.iter().filter_map(|e| match e {
                    Effect::Input { result, .. } => Some(*result),
                    _ => None,
                }));
                effects.extend(step_effects.drain(..).filter_map(|e| render_effect(&e)));
            }
            Step::Tick { now, caught_up } => {
                tr.tick(now, caught_up);
                let raw = tr.take_effects();
                let mut step_findings: Vec<String> =
                    raw.iter().filter_map(render_finding).collect();
                step_findings.sort();
                findings.extend(step_findings);
                let mut step_effects: Vec<String> = raw.iter().filter_map(render_effect).collect();
                step_effects.sort();
                effects.extend(step_effects);
            }
        }
    }
    diff(&mut problems, "input effects", &inputs, &want_inputs);
    if !case.only.is_empty() {
        effects.retain(|e| case.only.iter().any(|p| e.starts_with(p)));
    }
    diff(&mut problems, "effects", &effects, &lines(case.effects));
    if let Some(want) = case.findings {
        diff(&mut problems, "findings", &findings, &lines(want));
    }

    let mut keys: Vec<String> = tr.keys().map(|(k, ks)| render_key(k, ks)).collect();
    keys.sort();
    let mut want_keys = lines(case.keys);
    want_keys.sort();
    diff(&mut problems, "keys", &keys, &want_keys);

    let batch = tr.take_batch();
    if let Some(want) = case.history {
        let got: Vec<String> = batch.history.iter().map(render_history).collect();
        diff(&mut problems, "history", &got, &lines(want));
    }
    if let Some(want) = case.written {
        let mut got: Vec<String> = batch.keys.keys().iter().map(Key::to_string).collect();
        got.sort();
        diff(&mut problems, "written keys", &got, &lines(want));
    }
    if let Some(want) = case.removed {
        let got: Vec<String> = batch.removed_keys.iter().map(Key::to_string).collect();
        diff(&mut problems, "removed keys", &got, &lines(want));
    }
    if let Some(want) = case.seen {
        diff(&mut problems, "seen ids", &[batch.seen.len()], &[want]);
    }
    if let Some(want) = case.outbox {
        let got: Vec<String> = batch
            .outbox
            .iter()
            .map(|a| {
                let to = arrow(a.from.as_deref(), &a.to);
                let version = a
                    .version
                    .as_ref()
                    .map_or(String::new(), |v| format!(" v{v}"));
                format!(
                    "{} {} {to} by {} ({}) via {}{version}",
                    a.rule,
                    anomaly_key(a),
                    a.actor,
                    a.actor_type.as_str(),
                    a.source
                )
            })
            .collect();
        diff(&mut problems, "outbox", &got, &lines(want));
    }
    if let Some(want) = case.failing {
        diff(
            &mut problems,
            "failing",
            &[render_failing(&batch.failing)],
            &[want.to_string()],
        );
    }
    if let Some(want) = case.purge {
        diff(
            &mut problems,
            "purge",
            &[render_purge(&batch)],
            &[want.to_string()],
        );
    }
    problems
}

fn lines(l: Lines) -> Vec<String> {
    l.iter().map(|s| s.to_string()).collect()
}

/// Runs a table; fails with every mismatching case, not just the first.
fn run_table(cases: Vec<Case>) {
    let mut failures = Vec::new();
    for case in cases {
        let name = case.name;
        let problems = run(case);
        if !problems.is_empty() {
            failures.push(format!("case {name:?}:\n  {}", problems.join("\n  ")));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n\n"));
}

const PROD: &str = "prod";

fn p(release: &str, status: &str, time: TimeMs) -> Event {
    ev(release, "svc", PROD, status, time)
}

// ------------------------------------------------------------------ tables

/// docs/events.md: the current status is that of the greatest (time, rank, id),
/// whatever the arrival order; the first status is not a transition.
#[test]
fn ordering() {
    run_table(vec![
        Case {
            name: "first status is not a transition",
            steps: vec![at(t(100), p("r1", "in_progress", t(0)), Accepted)],
            keys: &["r1/svc/prod in_progress since=0 open"],
            effects: &[],
            history: Some(&["r1/svc/prod in_progress t=0 order=0 from=-"]),
            ..Case::default()
        },
        Case {
            name: "events in order: one transition with its duration",
            steps: vec![
                at(t(700), p("r1", "in_progress", t(0)), Accepted),
                at(t(700), p("r1", "deployed", t(600)), Accepted),
            ],
            keys: &["r1/svc/prod deployed since=600 open"],
            effects: &[
                "transition prod in_progress->deployed",
                "duration r1/svc/prod in_progress 600s",
                "deployment r1/svc/prod success",
            ],
            history: Some(&[
                "r1/svc/prod in_progress t=0 order=0 from=-",
                "r1/svc/prod deployed t=600 order=600 from=in_progress",
            ]),
            ..Case::default()
        },
        Case {
            name: "an event sorting before the current one is late: kept, moves nothing",
            steps: vec![
                at(t(700), p("r1", "deployed", t(600)), Accepted),
                at(t(700), p("r1", "in_progress", t(0)), Late),
            ],
            keys: &["r1/svc/prod deployed since=600 open"],
            effects: &["deployment r1/svc/prod success"],
            history: Some(&[
                "r1/svc/prod deployed t=600 order=600 from=-",
                "r1/svc/prod in_progress t=0 order=0 late",
            ]),
            ..Case::default()
        },
        Case {
            name: "late events are judged against the greatest event, not the last one",
            steps: vec![
                at(t(900), p("r1", "in_progress", t(0)), Accepted),
                at(t(900), p("r1", "deployed", t(600)), Accepted),
                at(t(900), p("r1", "paused", t(300)), Late),
                at(t(900), p("r1", "failed", t(500)), Late),
                at(t(900), p("r1", "complete", t(800)), Accepted),
            ],
            keys: &["r1/svc/prod complete since=800 finished=terminal@900"],
            effects: &[
                "transition prod in_progress->deployed",
                "duration r1/svc/prod in_progress 600s",
                "deployment r1/svc/prod success",
                "transition prod deployed->complete",
                "duration r1/svc/prod deployed 200s",
                "finished r1/svc/prod",
            ],
            ..Case::default()
        },
        Case {
            name: "same time: the higher rank wins when it arrives first",
            steps: vec![
                at(t(100), p("r1", "deployed", t(10)), Accepted),
                at(t(100), p("r1", "in_progress", t(10)), Late),
            ],
            keys: &["r1/svc/prod deployed since=10 open"],
            effects: &["deployment r1/svc/prod success"],
            ..Case::default()
        },
        Case {
            name: "same time: the higher rank wins when it arrives last",
            steps: vec![
                at(t(100), p("r1", "in_progress", t(10)), Accepted),
                at(t(100), p("r1", "deployed", t(10)), Accepted),
            ],
            keys: &["r1/svc/prod deployed since=10 open"],
            effects: &[
                "transition prod in_progress->deployed",
                "duration r1/svc/prod in_progress 0s",
                "deployment r1/svc/prod success",
            ],
            ..Case::default()
        },
        Case {
            name: "same time, same rank: the greater id is current, the smaller late",
            steps: vec![
                at(t(100), p("r1", "in_progress", t(10)).id("b"), Accepted),
                at(t(100), p("r1", "in_progress", t(10)).id("a"), Late),
                at(t(100), p("r1", "in_progress", t(10)).id("c"), Accepted),
            ],
            keys: &["r1/svc/prod in_progress since=10 open"],
            effects: &[],
            ..Case::default()
        },
        Case {
            name: "re-reporting the current status is not a transition and keeps since",
            steps: vec![
                at(t(100), p("r1", "in_progress", t(0)), Accepted),
                at(t(100), p("r1", "in_progress", t(60)), Accepted),
            ],
            keys: &["r1/svc/prod in_progress since=0 open"],
            effects: &[],
            history: Some(&[
                "r1/svc/prod in_progress t=0 order=0 from=-",
                "r1/svc/prod in_progress t=60 order=60 from=in_progress",
            ]),
            ..Case::default()
        },
        Case {
            name: "keys are independent: an older event of another key is not late",
            steps: vec![
                at(t(100), p("r1", "deployed", t(50)), Accepted),
                at(
                    t(100),
                    ev("r1", "svc", "staging", "in_progress", t(0)),
                    Accepted,
                ),
                at(
                    t(100),
                    ev("r1", "other", PROD, "in_progress", t(0)),
                    Accepted,
                ),
                at(t(100), p("r1", "in_progress", t(0)).site("eu"), Accepted),
            ],
            keys: &[
                "r1/svc/prod deployed since=50 open",
                "r1/svc/staging in_progress since=0 open",
                "r1/other/prod in_progress since=0 open",
                "r1/svc/prod@eu in_progress since=0 open",
            ],
            effects: &["deployment r1/svc/prod success"],
            ..Case::default()
        },
    ]);
}

/// docs/events.md, input accounting: duplicates, unmapped statuses, clock skew.
#[test]
fn input_accounting() {
    run_table(vec![
        Case {
            name: "the same id within the dedupe window is a duplicate, dropped",
            steps: vec![
                at(t(10), p("r1", "in_progress", t(0)).id("x"), Accepted),
                at(t(20), p("r1", "in_progress", t(0)).id("x"), Duplicate),
            ],
            keys: &["r1/svc/prod in_progress since=0 open"],
            effects: &[],
            history: Some(&["r1/svc/prod in_progress t=0 order=0 from=-"]),
            seen: Some(1),
            ..Case::default()
        },
        Case {
            name: "a duplicate id is dropped whatever it says",
            steps: vec![
                at(t(10), p("r1", "in_progress", t(0)).id("x"), Accepted),
                at(t(70), p("r1", "deployed", t(60)).id("x"), Duplicate),
            ],
            keys: &["r1/svc/prod in_progress since=0 open"],
            effects: &[],
            seen: Some(1),
            ..Case::default()
        },
        Case {
            name: "the dedupe window is inclusive: exactly 7d later is still a duplicate",
            steps: vec![
                at(t(10), p("r1", "in_progress", t(0)).id("x"), Accepted),
                at(
                    t(10 + 7 * D),
                    p("r1", "deployed", t(7 * D)).id("x"),
                    Duplicate,
                ),
            ],
            keys: &["r1/svc/prod in_progress since=0 open"],
            effects: &[],
            ..Case::default()
        },
        Case {
            name: "the same id after the dedupe window is accepted again",
            steps: vec![
                at(t(10), p("r1", "in_progress", t(0)).id("x"), Accepted),
                at(
                    t(11 + 7 * D),
                    p("r1", "deployed", t(7 * D)).id("x"),
                    Accepted,
                ),
            ],
            keys: &["r1/svc/prod deployed since=604800 open"],
            effects: &[
                "transition prod in_progress->deployed",
                "duration r1/svc/prod in_progress 604800s",
                "resolution r1/svc/prod in_progress stuck 604800s",
                "deployment r1/svc/prod success",
            ],
            seen: Some(2),
            ..Case::default()
        },
        Case {
            // Not dropped as a duplicate any more, but it does not sort after
            // itself: it is counted late and kept in the history again.
            name: "the very same event after the dedupe window is late",
            steps: vec![
                at(t(10), p("r1", "in_progress", t(0)).id("x"), Accepted),
                at(t(11 + 7 * D), p("r1", "in_progress", t(0)).id("x"), Late),
            ],
            keys: &["r1/svc/prod in_progress since=0 open"],
            effects: &[],
            history: Some(&[
                "r1/svc/prod in_progress t=0 order=0 from=-",
                "r1/svc/prod in_progress t=0 order=0 late",
            ]),
            ..Case::default()
        },
        Case {
            name: "a status that is not a model state is unmapped: no key, no history",
            steps: vec![at(t(10), p("r1", "exploded", t(0)), Unmapped)],
            keys: &[],
            effects: &[],
            history: Some(&[]),
            written: Some(&[]),
            seen: Some(0),
            ..Case::default()
        },
        Case {
            name: "an unmapped event does not use up its id",
            steps: vec![
                at(t(10), p("r1", "exploded", t(0)).id("x"), Unmapped),
                at(t(10), p("r1", "in_progress", t(0)).id("x"), Accepted),
            ],
            keys: &["r1/svc/prod in_progress since=0 open"],
            effects: &[],
            ..Case::default()
        },
        Case {
            name: "more than max_future ahead: clock_skew, ordered at now, own time kept",
            steps: vec![at(
                t(1000),
                p("r1", "in_progress", t(1000 + 10 * M)),
                Accepted,
            )],
            keys: &["r1/svc/prod in_progress since=1000 open"],
            effects: &["anomaly clock_skew r1/svc/prod in_progress"],
            history: Some(&["r1/svc/prod in_progress t=1600 order=1000 from=- !clock_skew"]),
            ..Case::default()
        },
        Case {
            name: "exactly max_future ahead is not skew",
            steps: vec![at(
                t(1000),
                p("r1", "in_progress", t(1000 + 5 * M)),
                Accepted,
            )],
            keys: &["r1/svc/prod in_progress since=1300 open"],
            effects: &[],
            history: Some(&["r1/svc/prod in_progress t=1300 order=1300 from=-"]),
            ..Case::default()
        },
        Case {
            name: "a skewed event cannot freeze the key",
            steps: vec![
                at(t(1000), p("r1", "in_progress", t(1000 + D)), Accepted),
                at(t(1100), p("r1", "deployed", t(1100)), Accepted),
            ],
            keys: &["r1/svc/prod deployed since=1100 open"],
            effects: &[
                "anomaly clock_skew r1/svc/prod in_progress",
                "transition prod in_progress->deployed",
                "duration r1/svc/prod in_progress 100s",
                "deployment r1/svc/prod success",
            ],
            ..Case::default()
        },
        Case {
            name: "a skewed event ordered before the current one is late, still reported",
            steps: vec![
                at(t(1000), p("r1", "in_progress", t(1200)), Accepted),
                at(t(1000), p("r1", "deployed", t(1000 + D)), Late),
            ],
            keys: &["r1/svc/prod in_progress since=1200 open"],
            effects: &["anomaly clock_skew r1/svc/prod deployed"],
            history: Some(&[
                "r1/svc/prod in_progress t=1200 order=1200 from=-",
                "r1/svc/prod deployed t=87400 order=1000 late !clock_skew",
            ]),
            ..Case::default()
        },
    ]);
}

/// docs/events.md, docs/metrics.md: every status change is a transition, allowed or not, with
/// the event-time duration of the status left; MTTSR cause stuck.
#[test]
fn transitions_and_durations() {
    run_table(vec![
        Case {
            name: "durations are event-time differences of each status left",
            steps: vec![
                at(t(2 * H), p("r1", "in_progress", t(0)), Accepted),
                at(t(2 * H), p("r1", "paused", t(30 * M)), Accepted),
                at(t(2 * H), p("r1", "in_progress", t(H)), Accepted),
                at(t(2 * H), p("r1", "deployed", t(90 * M)), Accepted),
            ],
            keys: &["r1/svc/prod deployed since=5400 open"],
            effects: &[
                "transition prod in_progress->paused",
                "duration r1/svc/prod in_progress 1800s",
                "transition prod paused->in_progress",
                "duration r1/svc/prod paused 1800s",
                "transition prod in_progress->deployed",
                "duration r1/svc/prod in_progress 1800s",
                "deployment r1/svc/prod success",
            ],
            ..Case::default()
        },
        Case {
            name: "going backwards (deployed -> in_test) is a transition and invalid",
            steps: vec![
                at(t(200), p("r1", "in_progress", t(0)), Accepted),
                at(t(200), p("r1", "deployed", t(60)), Accepted),
                at(t(200), p("r1", "in_test", t(120)), Accepted),
            ],
            keys: &["r1/svc/prod in_test since=120 open"],
            effects: &[
                "transition prod in_progress->deployed",
                "duration r1/svc/prod in_progress 60s",
                "deployment r1/svc/prod success",
                "transition prod deployed->in_test",
                "duration r1/svc/prod deployed 60s",
                "anomaly invalid_transition r1/svc/prod deployed->in_test",
            ],
            history: Some(&[
                "r1/svc/prod in_progress t=0 order=0 from=-",
                "r1/svc/prod deployed t=60 order=60 from=in_progress",
                "r1/svc/prod in_test t=120 order=120 from=deployed !invalid_transition",
            ]),
            ..Case::default()
        },
        Case {
            name: "leaving a terminal status reopens the key and is invalid",
            steps: vec![
                at(t(200), p("r1", "deployed", t(0)), Accepted),
                at(t(200), p("r1", "complete", t(60)), Accepted),
                at(t(300), p("r1", "in_progress", t(120)), Accepted),
            ],
            keys: &["r1/svc/prod in_progress since=120 open"],
            effects: &[
                "deployment r1/svc/prod success",
                "transition prod deployed->complete",
                "duration r1/svc/prod deployed 60s",
                "finished r1/svc/prod",
                "reopened r1/svc/prod",
                "transition prod complete->in_progress",
                "duration r1/svc/prod complete 60s",
                "anomaly invalid_transition r1/svc/prod complete->in_progress",
            ],
            ..Case::default()
        },
        Case {
            name: "a move no tool makes (scheduled -> paused) is invalid",
            steps: vec![
                at(t(200), p("r1", "scheduled", t(0)), Accepted),
                at(t(200), p("r1", "paused", t(10)), Accepted),
            ],
            keys: &["r1/svc/prod paused since=10 open"],
            effects: &[
                "transition prod scheduled->paused",
                "duration r1/svc/prod scheduled 10s",
                "anomaly invalid_transition r1/svc/prod scheduled->paused",
            ],
            ..Case::default()
        },
        Case {
            name: "MTTSR stuck: a status left after more than stuck_after, never seen live",
            steps: vec![
                at(t(2 * H + 10), p("r1", "in_progress", t(0)), Accepted),
                at(t(2 * H + 10), p("r1", "deployed", t(2 * H)), Accepted),
            ],
            keys: &["r1/svc/prod deployed since=7200 open"],
            effects: &[
                "transition prod in_progress->deployed",
                "duration r1/svc/prod in_progress 7200s",
                "resolution r1/svc/prod in_progress stuck 7200s",
                "deployment r1/svc/prod success",
            ],
            ..Case::default()
        },
        Case {
            name: "MTTSR stuck: exactly stuck_after is not stuck",
            steps: vec![
                at(t(2 * H), p("r1", "in_progress", t(0)), Accepted),
                at(t(2 * H), p("r1", "deployed", t(H)), Accepted),
            ],
            keys: &["r1/svc/prod deployed since=3600 open"],
            effects: &[
                "transition prod in_progress->deployed",
                "duration r1/svc/prod in_progress 3600s",
                "deployment r1/svc/prod success",
            ],
            ..Case::default()
        },
        Case {
            name: "MTTSR stuck: re-reports do not restart the episode",
            steps: vec![
                at(t(2 * H), p("r1", "in_progress", t(0)), Accepted),
                at(t(2 * H), p("r1", "in_progress", t(50 * M)), Accepted),
                at(t(2 * H), p("r1", "deployed", t(70 * M)), Accepted),
            ],
            keys: &["r1/svc/prod deployed since=4200 open"],
            effects: &[
                "transition prod in_progress->deployed",
                "duration r1/svc/prod in_progress 4200s",
                "resolution r1/svc/prod in_progress stuck 4200s",
                "deployment r1/svc/prod success",
            ],
            ..Case::default()
        },
        Case {
            name: "MTTSR stuck per status: failed over 4h; failed -> rolled_back counts no DORA",
            steps: vec![
                at(t(6 * H), p("r1", "in_progress", t(0)), Accepted),
                at(t(6 * H), p("r1", "failed", t(10 * M)), Accepted),
                at(
                    t(6 * H),
                    p("r1", "rolled_back", t(5 * H + 10 * M)),
                    Accepted,
                ),
            ],
            keys: &["r1/svc/prod rolled_back since=18600 finished=terminal@21600"],
            effects: &[
                "transition prod in_progress->failed",
                "duration r1/svc/prod in_progress 600s",
                "deployment r1/svc/prod failure",
                "transition prod failed->rolled_back",
                "duration r1/svc/prod failed 18000s",
                "resolution r1/svc/prod failed stuck 18000s",
                "finished r1/svc/prod",
            ],
            ..Case::default()
        },
        Case {
            name: "statuses without stuck_after are never stuck",
            steps: vec![
                at(t(5 * D), p("r1", "scheduled", t(0)), Accepted),
                at(t(5 * D), p("r1", "approved", t(4 * D)), Accepted),
            ],
            keys: &["r1/svc/prod approved since=345600 open"],
            effects: &[
                "transition prod scheduled->approved",
                "duration r1/svc/prod scheduled 345600s",
            ],
            ..Case::default()
        },
    ]);
}

/// The stuck rule and relstat_releases_stuck: the periodic check.
#[test]
fn stuck_checks() {
    run_table(vec![
        Case {
            name: "fires once per episode, not on every check",
            steps: vec![
                at(t(0), p("r1", "in_progress", t(0)), Accepted),
                tick(t(30 * M), true),
                tick(t(61 * M), true),
                tick(t(62 * M), true),
                tick(t(90 * M), true),
            ],
            keys: &["r1/svc/prod in_progress since=0 open"],
            effects: &[
                "stuck_counts",
                "anomaly stuck r1/svc/prod in_progress->in_progress",
                "stuck_counts prod/in_progress=1",
                "stuck_counts prod/in_progress=1",
                "stuck_counts prod/in_progress=1",
            ],
            written: Some(&["r1/svc/prod"]),
            ..Case::default()
        },
        Case {
            name: "exactly stuck_after is not stuck yet",
            steps: vec![
                at(t(0), p("r1", "in_progress", t(0)), Accepted),
                tick(t(H), true),
            ],
            keys: &["r1/svc/prod in_progress since=0 open"],
            effects: &["stuck_counts"],
            ..Case::default()
        },
        Case {
            name: "counted but not reported while sources catch up",
            steps: vec![
                at(t(0), p("r1", "in_progress", t(0)), Accepted),
                tick(t(61 * M), false),
                tick(t(62 * M), false),
                tick(t(63 * M), true),
            ],
            keys: &["r1/svc/prod in_progress since=0 open"],
            effects: &[
                "stuck_counts prod/in_progress=1",
                "stuck_counts prod/in_progress=1",
                "anomaly stuck r1/svc/prod in_progress->in_progress",
                "stuck_counts prod/in_progress=1",
            ],
            ..Case::default()
        },
        Case {
            name: "a replayed backlog resolved by later lines is never reported",
            steps: vec![
                at(t(5 * H), p("r1", "in_progress", t(0)), Accepted),
                tick(t(5 * H), false),
                at(t(5 * H), p("r1", "deployed", t(2 * H)), Accepted),
                tick(t(5 * H), true),
            ],
            keys: &["r1/svc/prod deployed since=7200 open"],
            effects: &[
                "stuck_counts prod/in_progress=1",
                "transition prod in_progress->deployed",
                "duration r1/svc/prod in_progress 7200s",
                "resolution r1/svc/prod in_progress stuck 7200s",
                "deployment r1/svc/prod success",
                "stuck_counts",
            ],
            ..Case::default()
        },
        Case {
            name: "fires again for a new episode",
            steps: vec![
                at(t(0), p("r1", "in_progress", t(0)), Accepted),
                tick(t(61 * M), true),
                at(t(62 * M), p("r1", "paused", t(62 * M)), Accepted),
                at(t(63 * M), p("r1", "in_progress", t(63 * M)), Accepted),
                tick(t(100 * M), true),
                tick(t(124 * M), true),
                tick(t(125 * M), true),
            ],
            keys: &["r1/svc/prod in_progress since=3780 open"],
            effects: &[
                "anomaly stuck r1/svc/prod in_progress->in_progress",
                "stuck_counts prod/in_progress=1",
                "transition prod in_progress->paused",
                "duration r1/svc/prod in_progress 3720s",
                "resolution r1/svc/prod in_progress stuck 3720s",
                "transition prod paused->in_progress",
                "duration r1/svc/prod paused 60s",
                "stuck_counts",
                "anomaly stuck r1/svc/prod in_progress->in_progress",
                "stuck_counts prod/in_progress=1",
                "stuck_counts prod/in_progress=1",
            ],
            ..Case::default()
        },
        Case {
            name: "each status has its own threshold; counts by environment and status",
            steps: vec![
                at(t(0), p("r1", "in_progress", t(0)), Accepted),
                at(
                    t(0),
                    ev("r1", "svc", "staging", "in_progress", t(0)),
                    Accepted,
                ),
                at(t(0), ev("r1", "other", PROD, "in_progress", t(0)), Accepted),
                at(t(0), p("r2", "paused", t(0)), Accepted),
                at(t(0), p("r3", "scheduled", t(0)), Accepted),
                tick(t(2 * H), false),
                tick(t(5 * H), true),
            ],
            keys: &[
                "r1/svc/prod in_progress since=0 open",
                "r1/svc/staging in_progress since=0 open",
                "r1/other/prod in_progress since=0 open",
                "r2/svc/prod paused since=0 open",
                "r3/svc/prod scheduled since=0 open",
            ],
            effects: &[
                "stuck_counts prod/in_progress=2,staging/in_progress=1",
                "anomaly stuck r1/other/prod in_progress->in_progress",
                "anomaly stuck r1/svc/prod in_progress->in_progress",
                "anomaly stuck r1/svc/staging in_progress->in_progress",
                "anomaly stuck r2/svc/prod paused->paused",
                "stuck_counts prod/in_progress=2,prod/paused=1,staging/in_progress=1",
            ],
            ..Case::default()
        },
        Case {
            name: "finished keys are neither stuck nor counted",
            steps: vec![
                at(t(0), p("r1", "in_progress", t(0)), Accepted),
                at(t(0), p("r1", "cancelled", t(10)), Accepted),
                tick(t(5 * H), true),
            ],
            keys: &["r1/svc/prod cancelled since=10 finished=terminal@0"],
            effects: &[
                "transition prod in_progress->cancelled",
                "duration r1/svc/prod in_progress 10s",
                "finished r1/svc/prod",
                "stuck_counts",
            ],
            ..Case::default()
        },
    ]);
}

/// docs/metrics.md: relstat_deployments_total, lead time and time to restore.
#[test]
fn dora() {
    run_table(vec![
        Case {
            name: "success on entering deployed, lead time from commit_time",
            steps: vec![
                at(t(700), p("r1", "in_progress", t(0)), Accepted),
                at(
                    t(700),
                    p("r1", "deployed", t(600)).commit_time(t(-H)),
                    Accepted,
                ),
            ],
            keys: &["r1/svc/prod deployed since=600 open"],
            effects: &[
                "transition prod in_progress->deployed",
                "duration r1/svc/prod in_progress 600s",
                "deployment r1/svc/prod success",
                "lead_time r1/svc/prod 4200s",
            ],
            ..Case::default()
        },
        Case {
            name: "deployed as the first status of a key is a success too",
            steps: vec![at(
                t(10),
                p("r1", "deployed", t(0)).commit_time(t(-600)),
                Accepted,
            )],
            keys: &["r1/svc/prod deployed since=0 open"],
            effects: &[
                "deployment r1/svc/prod success",
                "lead_time r1/svc/prod 600s",
            ],
            ..Case::default()
        },
        Case {
            name: "no lead time without commit_time, or with one after the deployment",
            steps: vec![
                at(t(10), p("r1", "deployed", t(0)), Accepted),
                at(t(10), p("r2", "deployed", t(5)).commit_time(t(6)), Accepted),
            ],
            keys: &[
                "r1/svc/prod deployed since=0 finished=superseded@10",
                "r2/svc/prod deployed since=5 open",
            ],
            effects: &[
                "deployment r1/svc/prod success",
                "deployment r2/svc/prod success",
                "finished r1/svc/prod",
            ],
            ..Case::default()
        },
        Case {
            name: "failure: in_progress -> failed",
            steps: vec![
                at(t(100), p("r1", "in_progress", t(0)), Accepted),
                at(t(100), p("r1", "failed", t(60)), Accepted),
            ],
            keys: &["r1/svc/prod failed since=60 open"],
            effects: &[
                "transition prod in_progress->failed",
                "duration r1/svc/prod in_progress 60s",
                "deployment r1/svc/prod failure",
            ],
            failing: Some("svc/prod@=60"),
            ..Case::default()
        },
        Case {
            name: "failure: paused -> rolled_back",
            steps: vec![
                at(t(200), p("r1", "in_progress", t(0)), Accepted),
                at(t(200), p("r1", "paused", t(60)), Accepted),
                at(t(200), p("r1", "rolled_back", t(120)), Accepted),
            ],
            keys: &["r1/svc/prod rolled_back since=120 finished=terminal@200"],
            effects: &[
                "transition prod in_progress->paused",
                "duration r1/svc/prod in_progress 60s",
                "transition prod paused->rolled_back",
                "duration r1/svc/prod paused 60s",
                "deployment r1/svc/prod failure",
                "finished r1/svc/prod",
            ],
            ..Case::default()
        },
        Case {
            name: "rollback: deployed -> failed",
            steps: vec![
                at(t(100), p("r1", "deployed", t(0)), Accepted),
                at(t(100), p("r1", "failed", t(60)), Accepted),
            ],
            keys: &["r1/svc/prod failed since=60 open"],
            effects: &[
                "deployment r1/svc/prod success",
                "transition prod deployed->failed",
                "duration r1/svc/prod deployed 60s",
                "deployment r1/svc/prod rollback",
            ],
            failing: Some("svc/prod@=60"),
            ..Case::default()
        },
        Case {
            name: "rollback: complete -> rolled_back (leaving a terminal status)",
            steps: vec![
                at(t(200), p("r1", "deployed", t(0)), Accepted),
                at(t(200), p("r1", "complete", t(60)), Accepted),
                at(t(200), p("r1", "rolled_back", t(120)), Accepted),
            ],
            keys: &["r1/svc/prod rolled_back since=120 finished=terminal@200"],
            effects: &[
                "deployment r1/svc/prod success",
                "transition prod deployed->complete",
                "duration r1/svc/prod deployed 60s",
                "finished r1/svc/prod",
                "reopened r1/svc/prod",
                "transition prod complete->rolled_back",
                "duration r1/svc/prod complete 60s",
                "deployment r1/svc/prod rollback",
                "finished r1/svc/prod",
                "anomaly invalid_transition r1/svc/prod complete->rolled_back",
            ],
            ..Case::default()
        },
        Case {
            name: "failed -> rolled_back and attempts that never started count nothing",
            steps: vec![
                at(t(200), p("r1", "in_progress", t(0)), Accepted),
                at(t(200), p("r1", "failed", t(60)), Accepted),
                at(t(200), p("r1", "rolled_back", t(120)), Accepted),
                at(t(200), p("r2", "scheduled", t(0)), Accepted),
                at(t(200), p("r2", "failed", t(60)), Accepted),
                at(t(200), p("r3", "failed", t(0)), Accepted),
            ],
            keys: &[
                "r1/svc/prod rolled_back since=120 finished=terminal@200",
                "r2/svc/prod failed since=60 open",
                "r3/svc/prod failed since=0 open",
            ],
            effects: &[
                "transition prod in_progress->failed",
                "duration r1/svc/prod in_progress 60s",
                "deployment r1/svc/prod failure",
                "transition prod failed->rolled_back",
                "duration r1/svc/prod failed 60s",
                "finished r1/svc/prod",
                "transition prod scheduled->failed",
                "duration r2/svc/prod scheduled 60s",
            ],
            ..Case::default()
        },
        Case {
            name: "restore: from a rollback to the next deployed of the target, any release",
            steps: vec![
                at(t(400), p("r1", "deployed", t(0)), Accepted),
                at(t(400), p("r1", "failed", t(60)), Accepted),
                at(t(400), p("r2", "in_progress", t(100)), Accepted),
                at(t(400), p("r2", "deployed", t(300)), Accepted),
            ],
            keys: &[
                "r1/svc/prod failed since=60 open",
                "r2/svc/prod deployed since=300 open",
            ],
            effects: &[
                "deployment r1/svc/prod success",
                "transition prod deployed->failed",
                "duration r1/svc/prod deployed 60s",
                "deployment r1/svc/prod rollback",
                "transition prod in_progress->deployed",
                "duration r2/svc/prod in_progress 200s",
                "deployment r2/svc/prod success",
                "restore r2/svc/prod 240s",
            ],
            failing: Some(""),
            ..Case::default()
        },
        Case {
            name: "restore: measured from the first failure of the episode",
            steps: vec![
                at(t(400), p("r1", "in_progress", t(0)), Accepted),
                at(t(400), p("r1", "failed", t(60)), Accepted),
                at(t(400), p("r1", "in_progress", t(120)), Accepted),
                at(t(400), p("r1", "failed", t(180)), Accepted),
                at(t(400), p("r1", "in_progress", t(200)), Accepted),
                at(t(400), p("r1", "deployed", t(300)), Accepted),
                at(t(400), p("r1", "failed", t(350)), Accepted),
            ],
            keys: &["r1/svc/prod failed since=350 open"],
            effects: &[
                "transition prod in_progress->failed",
                "duration r1/svc/prod in_progress 60s",
                "deployment r1/svc/prod failure",
                "transition prod failed->in_progress",
                "duration r1/svc/prod failed 60s",
                "transition prod in_progress->failed",
                "duration r1/svc/prod in_progress 60s",
                "deployment r1/svc/prod failure",
                "transition prod failed->in_progress",
                "duration r1/svc/prod failed 20s",
                "transition prod in_progress->deployed",
                "duration r1/svc/prod in_progress 100s",
                "deployment r1/svc/prod success",
                "restore r1/svc/prod 240s",
                "transition prod deployed->failed",
                "duration r1/svc/prod deployed 50s",
                "deployment r1/svc/prod rollback",
            ],
            failing: Some("svc/prod@=350"),
            ..Case::default()
        },
        Case {
            name: "restore: per (service, environment, site)",
            steps: vec![
                at(t(400), p("r1", "in_progress", t(0)).site("eu"), Accepted),
                at(t(400), p("r1", "failed", t(60)).site("eu"), Accepted),
                at(t(400), p("r2", "deployed", t(100)).site("us"), Accepted),
                at(
                    t(400),
                    ev("r2", "svc", "staging", "deployed", t(110)).site("eu"),
                    Accepted,
                ),
                at(
                    t(400),
                    ev("r2", "other", PROD, "deployed", t(120)).site("eu"),
                    Accepted,
                ),
                at(t(400), p("r2", "deployed", t(300)).site("eu"), Accepted),
            ],
            keys: &[
                "r1/svc/prod@eu failed since=60 open",
                "r2/svc/prod@us deployed since=100 open",
                "r2/svc/staging@eu deployed since=110 open",
                "r2/other/prod@eu deployed since=120 open",
                "r2/svc/prod@eu deployed since=300 open",
            ],
            effects: &[
                "transition prod in_progress->failed",
                "duration r1/svc/prod@eu in_progress 60s",
                "deployment r1/svc/prod@eu failure",
                "deployment r2/svc/prod@us success",
                "deployment r2/svc/staging@eu success",
                "deployment r2/other/prod@eu success",
                "deployment r2/svc/prod@eu success",
                "restore r2/svc/prod@eu 240s",
            ],
            ..Case::default()
        },
        Case {
            name: "restore: a deployment dated before the failure does not restore it",
            steps: vec![
                at(t(400), p("r1", "in_progress", t(0)), Accepted),
                at(t(400), p("r1", "failed", t(100)), Accepted),
                at(t(400), p("r0", "deployed", t(50)), Accepted),
                at(t(400), p("r2", "deployed", t(300)), Accepted),
            ],
            keys: &[
                "r1/svc/prod failed since=100 open",
                "r0/svc/prod deployed since=50 finished=superseded@400",
                "r2/svc/prod deployed since=300 open",
            ],
            effects: &[
                "transition prod in_progress->failed",
                "duration r1/svc/prod in_progress 100s",
                "deployment r1/svc/prod failure",
                "deployment r0/svc/prod success",
                "deployment r2/svc/prod success",
                "restore r2/svc/prod 200s",
                "finished r0/svc/prod",
            ],
            ..Case::default()
        },
    ]);
}

/// docs/events.md: `deployed` is a resting state, finished when a newer release
/// reaches deployed for the same (service, environment, site).
#[test]
fn supersession() {
    run_table(vec![
        Case {
            name: "a newer release reaching deployed supersedes the older: no transition",
            steps: vec![
                at(t(200), p("r1", "deployed", t(0)), Accepted),
                at(t(200), p("r2", "in_progress", t(50)), Accepted),
                at(t(200), p("r2", "deployed", t(100)), Accepted),
            ],
            keys: &[
                "r1/svc/prod deployed since=0 finished=superseded@200",
                "r2/svc/prod deployed since=100 open",
            ],
            effects: &[
                "deployment r1/svc/prod success",
                "transition prod in_progress->deployed",
                "duration r2/svc/prod in_progress 50s",
                "deployment r2/svc/prod success",
                "finished r1/svc/prod",
            ],
            ..Case::default()
        },
        Case {
            name: "an older release reaching deployed late is itself superseded",
            steps: vec![
                at(t(200), p("r2", "deployed", t(100)), Accepted),
                at(t(200), p("r1", "deployed", t(0)), Accepted),
            ],
            keys: &[
                "r1/svc/prod deployed since=0 finished=superseded@200",
                "r2/svc/prod deployed since=100 open",
            ],
            effects: &[
                "deployment r2/svc/prod success",
                "deployment r1/svc/prod success",
                "finished r1/svc/prod",
            ],
            ..Case::default()
        },
        Case {
            name: "other environments, services and sites are other targets",
            steps: vec![
                at(t(200), p("r1", "deployed", t(0)), Accepted),
                at(
                    t(200),
                    ev("r2", "svc", "staging", "deployed", t(100)),
                    Accepted,
                ),
                at(
                    t(200),
                    ev("r2", "other", PROD, "deployed", t(100)),
                    Accepted,
                ),
                at(t(200), p("r2", "deployed", t(100)).site("eu"), Accepted),
            ],
            keys: &[
                "r1/svc/prod deployed since=0 open",
                "r2/svc/staging deployed since=100 open",
                "r2/other/prod deployed since=100 open",
                "r2/svc/prod@eu deployed since=100 open",
            ],
            effects: &[
                "deployment r1/svc/prod success",
                "deployment r2/svc/staging success",
                "deployment r2/other/prod success",
                "deployment r2/svc/prod@eu success",
            ],
            ..Case::default()
        },
        Case {
            name: "a key that left deployed is not superseded",
            steps: vec![
                at(t(200), p("r1", "deployed", t(0)), Accepted),
                at(t(200), p("r1", "in_progress", t(50)), Accepted),
                at(t(200), p("r2", "deployed", t(100)), Accepted),
            ],
            keys: &[
                "r1/svc/prod in_progress since=50 open",
                "r2/svc/prod deployed since=100 open",
            ],
            effects: &[
                "deployment r1/svc/prod success",
                "transition prod deployed->in_progress",
                "duration r1/svc/prod deployed 50s",
                "deployment r2/svc/prod success",
            ],
            ..Case::default()
        },
        Case {
            name: "a superseded release deployed again reopens and supersedes the newer",
            steps: vec![
                at(t(400), p("r1", "deployed", t(0)), Accepted),
                at(t(400), p("r2", "deployed", t(100)), Accepted),
                at(t(400), p("r1", "in_progress", t(200)), Accepted),
                at(t(400), p("r1", "deployed", t(300)), Accepted),
            ],
            keys: &[
                "r1/svc/prod deployed since=300 open",
                "r2/svc/prod deployed since=100 finished=superseded@400",
            ],
            effects: &[
                "deployment r1/svc/prod success",
                "deployment r2/svc/prod success",
                "finished r1/svc/prod",
                "reopened r1/svc/prod",
                "transition prod deployed->in_progress",
                "duration r1/svc/prod deployed 200s",
                "transition prod in_progress->deployed",
                "duration r1/svc/prod in_progress 100s",
                "deployment r1/svc/prod success",
                "finished r2/svc/prod",
            ],
            ..Case::default()
        },
        Case {
            name: "a superseded release re-reporting deployed stays superseded",
            steps: vec![
                at(t(400), p("r1", "deployed", t(0)), Accepted),
                at(t(400), p("r2", "deployed", t(100)), Accepted),
                at(t(400), p("r1", "deployed", t(200)), Accepted),
            ],
            keys: &[
                "r1/svc/prod deployed since=0 finished=superseded@400",
                "r2/svc/prod deployed since=100 open",
            ],
            effects: &[
                "deployment r1/svc/prod success",
                "deployment r2/svc/prod success",
                "finished r1/svc/prod",
                "reopened r1/svc/prod",
                "finished r1/svc/prod",
            ],
            ..Case::default()
        },
        Case {
            name: "the same, the re-report arriving before the newer release",
            steps: vec![
                at(t(400), p("r1", "deployed", t(0)), Accepted),
                at(t(400), p("r1", "deployed", t(200)), Accepted),
                at(t(400), p("r2", "deployed", t(100)), Accepted),
            ],
            keys: &[
                "r1/svc/prod deployed since=0 finished=superseded@400",
                "r2/svc/prod deployed since=100 open",
            ],
            effects: &[
                "deployment r1/svc/prod success",
                "deployment r2/svc/prod success",
                "finished r1/svc/prod",
            ],
            ..Case::default()
        },
        Case {
            name: "deployed at the same time: the greater release wins (arriving last)",
            steps: vec![
                at(t(200), p("r1", "deployed", t(100)), Accepted),
                at(t(200), p("r2", "deployed", t(100)), Accepted),
            ],
            keys: &[
                "r1/svc/prod deployed since=100 finished=superseded@200",
                "r2/svc/prod deployed since=100 open",
            ],
            effects: &[
                "deployment r1/svc/prod success",
                "deployment r2/svc/prod success",
                "finished r1/svc/prod",
            ],
            ..Case::default()
        },
        Case {
            name: "deployed at the same time: the greater release wins (arriving first)",
            steps: vec![
                at(t(200), p("r2", "deployed", t(100)), Accepted),
                at(t(200), p("r1", "deployed", t(100)), Accepted),
            ],
            keys: &[
                "r1/svc/prod deployed since=100 finished=superseded@200",
                "r2/svc/prod deployed since=100 open",
            ],
            effects: &[
                "deployment r2/svc/prod success",
                "deployment r1/svc/prod success",
                "finished r1/svc/prod",
            ],
            ..Case::default()
        },
    ]);
}

/// docs/events.md, docs/metrics.md: when keys finish (terminal, stale), reopen, and are forgotten.
#[test]
fn lifecycle() {
    run_table(vec![
        Case {
            name: "a terminal first status finishes the key at once",
            steps: vec![at(t(10), p("r1", "cancelled", t(0)), Accepted)],
            keys: &["r1/svc/prod cancelled since=0 finished=terminal@10"],
            effects: &["finished r1/svc/prod"],
            ..Case::default()
        },
        Case {
            name: "stale after stale_after with no event (strictly more)",
            steps: vec![
                at(t(0), p("r1", "scheduled", t(0)), Accepted),
                tick(t(30 * D), true),
                tick(t(30 * D + 1), true),
                tick(t(30 * D + 2), true),
            ],
            keys: &["r1/svc/prod scheduled since=0 finished=stale@2592001"],
            effects: &[
                "stuck_counts",
                "finished r1/svc/prod",
                "stuck_counts",
                "stuck_counts",
            ],
            ..Case::default()
        },
        Case {
            name: "staleness counts from the last event, not from entering the status",
            steps: vec![
                at(t(0), p("r1", "scheduled", t(0)), Accepted),
                at(t(20 * D), p("r1", "scheduled", t(20 * D)), Accepted),
                tick(t(31 * D), true),
                tick(t(50 * D + 1), true),
            ],
            keys: &["r1/svc/prod scheduled since=0 finished=stale@4320001"],
            effects: &["stuck_counts", "finished r1/svc/prod", "stuck_counts"],
            ..Case::default()
        },
        Case {
            name: "a stale key is not stuck",
            steps: vec![
                at(t(0), p("r1", "in_progress", t(0)), Accepted),
                tick(t(31 * D), true),
            ],
            keys: &["r1/svc/prod in_progress since=0 finished=stale@2678400"],
            effects: &["finished r1/svc/prod", "stuck_counts"],
            ..Case::default()
        },
        Case {
            name: "a stale key receiving a later event is reopened",
            steps: vec![
                at(t(0), p("r1", "scheduled", t(0)), Accepted),
                tick(t(31 * D), true),
                at(t(32 * D), p("r1", "approved", t(32 * D)), Accepted),
            ],
            keys: &["r1/svc/prod approved since=2764800 open"],
            effects: &[
                "finished r1/svc/prod",
                "stuck_counts",
                "reopened r1/svc/prod",
                "transition prod scheduled->approved",
                "duration r1/svc/prod scheduled 2764800s",
            ],
            ..Case::default()
        },
        Case {
            name: "a re-report reopens a stale key in the same episode",
            steps: vec![
                at(t(0), p("r1", "scheduled", t(0)), Accepted),
                tick(t(31 * D), true),
                at(t(32 * D), p("r1", "scheduled", t(32 * D)), Accepted),
            ],
            keys: &["r1/svc/prod scheduled since=0 open"],
            effects: &[
                "finished r1/svc/prod",
                "stuck_counts",
                "reopened r1/svc/prod",
            ],
            ..Case::default()
        },
        Case {
            name: "a late event does not reopen a finished key",
            steps: vec![
                at(t(100), p("r1", "scheduled", t(100)), Accepted),
                tick(t(31 * D), true),
                at(t(32 * D), p("r1", "approved", t(50)), Late),
                at(t(32 * D), p("r1", "complete", t(60)), Late),
            ],
            keys: &["r1/svc/prod scheduled since=100 finished=stale@2678400"],
            effects: &["finished r1/svc/prod", "stuck_counts"],
            ..Case::default()
        },
        Case {
            name: "a stale deployed key is no longer the resting deployment",
            steps: vec![
                at(t(0), p("r1", "deployed", t(0)), Accepted),
                tick(t(31 * D), true),
                at(t(32 * D), p("r2", "deployed", t(32 * D)), Accepted),
            ],
            keys: &[
                "r1/svc/prod deployed since=0 finished=stale@2678400",
                "r2/svc/prod deployed since=2764800 open",
            ],
            effects: &[
                "deployment r1/svc/prod success",
                "finished r1/svc/prod",
                "stuck_counts",
                "deployment r2/svc/prod success",
            ],
            ..Case::default()
        },
        Case {
            name: "finished keys are forgotten after stale_after (from finishing), not history_retention",
            steps: vec![
                at(t(0), p("r1", "cancelled", t(0)), Accepted),
                at(t(0), p("r2", "scheduled", t(0)), Accepted),
                tick(t(30 * D), true),
                tick(t(30 * D + 1), true),
                tick(t(60 * D + 1), true),
                tick(t(60 * D + 2), true),
            ],
            keys: &[],
            effects: &[
                "finished r1/svc/prod",
                "stuck_counts",
                "finished r2/svc/prod",
                "forgotten r1/svc/prod",
                "stuck_counts",
                "stuck_counts",
                "forgotten r2/svc/prod",
                "stuck_counts",
            ],
            written: Some(&[]),
            removed: Some(&["r1/svc/prod", "r2/svc/prod"]),
            // The seen bound is set by the first check of a batch that purges.
            purge: Some("seen<1987200 history<-29375998"),
            ..Case::default()
        },
        Case {
            name: "a forgotten key seen again starts afresh: first status, no reopen",
            steps: vec![
                at(t(0), p("r1", "cancelled", t(0)), Accepted),
                tick(t(30 * D + 1), true),
                at(t(31 * D), p("r1", "in_progress", t(31 * D)), Accepted),
            ],
            keys: &["r1/svc/prod in_progress since=2678400 open"],
            effects: &[
                "finished r1/svc/prod",
                "forgotten r1/svc/prod",
                "stuck_counts",
            ],
            written: Some(&["r1/svc/prod"]),
            removed: Some(&["r1/svc/prod"]),
            ..Case::default()
        },
    ]);
}

fn outbox(mode: OutboxMode) -> Settings {
    Settings {
        outbox: mode,
        ..settings()
    }
}

/// What one input batch asks the store to write.
#[test]
fn batches() {
    let steps = || {
        vec![
            at(t(1000), p("r1", "in_progress", t(0)).id("a"), Accepted),
            at(t(1000), p("r1", "in_progress", t(10)).id("b"), Accepted),
            at(t(1000), p("r1", "scheduled", t(5)).id("c"), Late),
            at(
                t(1000),
                p("r1", "deployed", t(60))
                    .id("d")
                    .actor("alice")
                    .actor_type(ActorType::Human)
                    .source("argocd")
                    .version("1.4.0"),
                Accepted,
            ),
            at(t(1000), p("r1", "in_test", t(120)).id("e"), Accepted),
            at(t(1000), p("r1", "in_test", t(120)).id("e"), Duplicate),
            at(t(1000), p("r2", "failed", t(2000)).id("f"), Accepted),
            at(t(1000), p("r2", "exploded", t(100)).id("g"), Unmapped),
        ]
    };
    const EFFECTS: Lines = &[
        "transition prod in_progress->deployed",
        "duration r1/svc/prod in_progress 60s",
        "deployment r1/svc/prod success",
        "transition prod deployed->in_test",
        "duration r1/svc/prod deployed 60s",
        "anomaly invalid_transition r1/svc/prod deployed->in_test",
        "anomaly clock_skew r2/svc/prod failed",
    ];
    const KEYS: Lines = &[
        "r1/svc/prod in_test since=120 open",
        "r2/svc/prod failed since=1000 open",
    ];
    run_table(vec![
        Case {
            name: "persist: history, dirty keys and seen ids; no outbox when off",
            steps: steps(),
            keys: KEYS,
            effects: EFFECTS,
            history: Some(&[
                "r1/svc/prod in_progress t=0 order=0 from=-",
                "r1/svc/prod in_progress t=10 order=10 from=in_progress",
                "r1/svc/prod scheduled t=5 order=5 late",
                "r1/svc/prod deployed t=60 order=60 from=in_progress",
                "r1/svc/prod in_test t=120 order=120 from=deployed !invalid_transition",
                "r2/svc/prod failed t=2000 order=1000 from=- !clock_skew",
            ]),
            written: Some(&["r1/svc/prod", "r2/svc/prod"]),
            removed: Some(&[]),
            seen: Some(6),
            outbox: Some(&[]),
            failing: Some("-"),
            purge: Some("seen<- history<-"),
            ..Case::default()
        },
        Case {
            name: "outbox = anomalies",
            settings: outbox(OutboxMode::Anomalies),
            steps: steps(),
            keys: KEYS,
            effects: EFFECTS,
            outbox: Some(&[
                "invalid_transition r1/svc/prod deployed->in_test by deploy-bot (automation) via ci",
                "clock_skew r2/svc/prod failed by deploy-bot (automation) via ci",
            ]),
            ..Case::default()
        },
        Case {
            name: "outbox = all: a transition record for every status change and first status",
            settings: outbox(OutboxMode::All),
            steps: steps(),
            keys: KEYS,
            effects: EFFECTS,
            outbox: Some(&[
                "transition r1/svc/prod in_progress by deploy-bot (automation) via ci",
                "transition r1/svc/prod in_progress->deployed by alice (human) via argocd v1.4.0",
                "transition r1/svc/prod deployed->in_test by deploy-bot (automation) via ci",
                "invalid_transition r1/svc/prod deployed->in_test by deploy-bot (automation) via ci",
                "transition r2/svc/prod failed by deploy-bot (automation) via ci",
                "clock_skew r2/svc/prod failed by deploy-bot (automation) via ci",
            ]),
            ..Case::default()
        },
        Case {
            // A re-report is not a transition but is the stuck finding's
            // evidence; the version carries over from the earlier report.
            name: "outbox = all: the stuck rule's findings go out too, with the last report",
            settings: outbox(OutboxMode::All),
            steps: vec![
                at(t(0), p("r1", "in_progress", t(0)).version("2.0"), Accepted),
                at(
                    t(60),
                    p("r1", "in_progress", t(60))
                        .actor("carol")
                        .actor_type(ActorType::Human)
                        .source("jenkins"),
                    Accepted,
                ),
                tick(t(2 * H), true),
            ],
            keys: &["r1/svc/prod in_progress since=0 open"],
            effects: &[
                "anomaly stuck r1/svc/prod in_progress->in_progress",
                "stuck_counts prod/in_progress=1",
            ],
            outbox: Some(&[
                "transition r1/svc/prod in_progress by deploy-bot (automation) via ci v2.0",
                "stuck r1/svc/prod in_progress->in_progress by carol (human) via jenkins v2.0",
            ]),
            purge: Some("seen<-597600 history<-34552800"),
            ..Case::default()
        },
        Case {
            name: "without persist (replay): no history and no seen ids",
            settings: Settings {
                persist: false,
                ..settings()
            },
            steps: steps(),
            keys: KEYS,
            effects: EFFECTS,
            history: Some(&[]),
            seen: Some(0),
            ..Case::default()
        },
    ]);
}

// --------------------------------------------------------------- proptest

const STATUSES: [&str; 11] = [
    "scheduled",
    "rescheduled",
    "in_test",
    "approved",
    "in_progress",
    "paused",
    "deployed",
    "failed",
    "complete",
    "rolled_back",
    "cancelled",
];

/// Events over a few keys sharing targets (so supersession and restore are
/// exercised), with times in a narrow window (so ties of time, and of time
/// and rank, are common), and unique ids.
fn arb_events() -> impl Strategy<Value = Vec<Event>> {
    let one = (
        0..3usize,
        0..2usize,
        0..STATUSES.len(),
        0..20i64,
        0..1000u32,
    );
    prop::collection::vec(one, 1..24).prop_map(|raw| {
        raw.into_iter()
            .enumerate()
            .map(|(i, (release, env, status, time, salt))| {
                let env = ["prod", "staging"][env];
                ev(
                    &format!("r{release}"),
                    "svc",
                    env,
                    STATUSES[status],
                    t(time),
                )
                .id(&format!("{salt:03}-{i}"))
            })
            .collect()
    })
}

/// What arrival order must not change, after applying `events` in order.
fn outcome(events: &[Event]) -> (BTreeMap<String, String>, Vec<Event>) {
    let mut tr = tracker(settings());
    for e in events {
        let r = tr.apply(e.clone(), t(D));
        assert!(matches!(r, Accepted | Late), "{}: {r:?}", e.id);
    }
    let statuses = tr
        .keys()
        .map(|(k, ks)| (k.to_string(), ks.status.to_string()))
        .collect();
    let mut history: Vec<Event> = tr
        .take_batch()
        .history
        .into_iter()
        .map(|h| h.event)
        .collect();
    history.sort_by(|a, b| a.id.cmp(&b.id));
    (statuses, history)
}

/// Releases flowing to `complete` without end (the soak of
/// scripts/perf-figures.sh): the finished keys the tracker holds stop at
/// `max_finished` (the ones finished last stay; the rest are forgotten in
/// memory and in the store) and the seen ids at `max_seen`, while a recent
/// duplicate is still caught. Without the caps both grow with every key.
#[test]
fn finished_keys_and_seen_ids_are_bounded() {
    let mut tr = tracker(Settings {
        max_finished: 100,
        max_seen: 400,
        ..settings()
    });
    let mut removed = 0;
    let mut most = (0, 0);
    for k in 0..2_000i64 {
        let r = format!("r{k}");
        for (i, st) in ["scheduled", "in_progress", "deployed", "complete"]
            .iter()
            .enumerate()
        {
            let now = t(k * 10 + i as i64);
            assert_eq!(tr.apply(p(&r, st, now), now), Accepted);
        }
        if k % 50 == 49 {
            tr.tick(t(k * 10 + 5), true);
            removed += tr.take_batch().removed_keys.len();
            most = (most.0.max(tr.len()), most.1.max(tr.seen_len()));
        }
        tr.take_effects();
    }
    // Between two checks 50 keys finish: never more than cap + 50 held.
    assert!(most.0 <= 150, "keys held: {}", most.0);
    assert!(most.1 <= 400 + 200, "seen ids held: {}", most.1);
    assert_eq!(tr.len(), 100);
    assert!(tr.seen_len() <= 400);
    assert_eq!(removed, 1_900, "the forgotten keys leave the store too");
    // The last 100 to finish are the ones kept.
    assert!(tr.get(&p("r1999", "complete", 0).key()).is_some());
    assert!(tr.get(&p("r1900", "complete", 0).key()).is_some());
    assert!(tr.get(&p("r1899", "complete", 0).key()).is_none());
    // A recent id is still remembered.
    let last = t(1999 * 10 + 3);
    assert_eq!(tr.apply(p("r1999", "complete", last), t(20_000)), Duplicate);
}

/// The running agent's caps come from `max_tracked`; `replay` has none.
#[test]
fn caps_follow_max_tracked_and_replay_has_none() {
    let cfg = crate::config::Loaded::builtin().config;
    let run = Settings::from_config(&cfg, true);
    assert_eq!((run.max_finished, run.max_seen), (10_000, 80_000));
    let replay = Settings::from_config(&cfg, false);
    assert_eq!(
        (replay.max_finished, replay.max_seen),
        (usize::MAX, usize::MAX)
    );
}

/// A store written with more seen ids than the cap: restored, the tracker
/// keeps the newest `max_seen` and the next batch purges the rest.
#[test]
fn restored_seen_ids_are_capped() {
    let mut tr = tracker(Settings {
        max_seen: 10,
        ..settings()
    });
    let seen: Vec<(u128, TimeMs)> = (0..30).map(|i| (i as u128, t(i))).collect();
    tr.restore(Vec::new(), seen, Vec::new(), Vec::new());
    assert_eq!(tr.seen_len(), 10);
    assert_eq!(tr.take_batch().seen_purge_before, Some(t(19)));
}

/// Ids seen at one agent time (one batch) are trimmed to the cap exactly,
/// not all together.
#[test]
fn seen_ids_of_one_batch_are_trimmed_to_the_cap() {
    let mut tr = tracker(Settings {
        max_seen: 100,
        ..settings()
    });
    for k in 0..250 {
        let e = p(&format!("r{k}"), "scheduled", t(0));
        assert_eq!(tr.apply(e, t(1)), Accepted);
    }
    tr.tick(t(2), true);
    assert_eq!(tr.seen_len(), 100);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// docs/events.md: "the result does not depend on arrival order": the final
    /// status of every key and the history kept. Not compared, because the
    /// tracker keeps no history to rewind: `since` (a re-report arriving
    /// before the report that entered the status becomes the entry), the
    /// late/accepted split, and so whether a deployed key was superseded
    /// (a newer release's deployment that has since moved on only
    /// supersedes the older one if it arrived after it).
    #[test]
    fn arrival_order_does_not_matter(
        (events, shuffled) in arb_events()
            .prop_flat_map(|e| (Just(e.clone()), Just(e).prop_shuffle()))
    ) {
        let (want_status, want_history) = outcome(&events);
        let (got_status, got_history) = outcome(&shuffled);
        prop_assert_eq!(got_status, want_status);
        prop_assert_eq!(got_history, want_history);
    }

    /// `replay`'s deferred rollups (filled from the keys at the check)
    /// give the effects of rollups kept as events arrive: the same
    /// rollups, the same `stuck` findings of a partly complete rollup,
    /// everything else in the same order.
    #[test]
    fn deferred_rollups_give_the_same_effects(events in arb_events()) {
        let config = "[rollups]\nstuck_after = \"1m\"\n";
        let run = |defer: bool| {
            let mut tr = tracker_with(settings(), config);
            if defer {
                tr.defer_rollups();
            }
            for e in &events {
                tr.apply(e.clone(), t(D));
            }
            tr.tick(t(D) + 3600 * 1000, true);
            let mut rollups = Vec::new();
            let mut rest = Vec::new();
            let mut findings = Vec::new();
            for e in tr.take_effects() {
                match e {
                    Effect::Rollups(all) => {
                        let mut all: Vec<rollup::Summary> =
                            all.iter().map(|s| (**s).clone()).collect();
                        all.sort_by(|a, b| {
                            (&a.environment, &a.release).cmp(&(&b.environment, &b.release))
                        });
                        rollups.push(all);
                    }
                    // The check's findings come in the key table's (hash)
                    // order, which differs between two trackers.
                    Effect::Anomaly(a) => findings.push(format!("{a:?}")),
                    e => rest.push(e),
                }
            }
            findings.sort();
            (rollups, rest, findings)
        };
        let (kept, kept_rest, kept_findings) = run(false);
        let (deferred, deferred_rest, deferred_findings) = run(true);
        prop_assert_eq!(kept.len(), 1);
        prop_assert!(!kept[0].is_empty());
        prop_assert_eq!(deferred, kept);
        prop_assert_eq!(deferred_rest, kept_rest);
        prop_assert_eq!(deferred_findings, kept_findings);
    }
}

mod clean;
mod rules;

/// The key table holds the key and a pointer to its state: a bucket stays
/// small however the state grows (issue 23: 470 bytes a bucket inline).
#[test]
fn a_bucket_of_the_key_table_is_small() {
    assert!(std::mem::size_of::<(Key, Box<KeyState>)>() <= 104);
    assert!(std::mem::size_of::<KeyState>() > 200, "then unbox it");
}
