//! Readiness: the go/no-go answer a pipeline asks for just before it
//! deploys a release to an environment (`relstat readiness`,
//! `/api/v1/readiness`, docs/readiness.md), and the explainable risk score.
//!
//! Every check reuses the judgement of the rule that would report the
//! deployment afterwards, asked of the agent's clock instead of a report:
//! the gate's standing against the approvals ledger (four eyes included),
//! the change-freeze windows, skipped_stage's ledger of the previous stage,
//! the rollups of the previous environment, the tracker's DORA outcomes and
//! open restore episodes. Open anomalies are read from the release's
//! history (passed in: the tracker does not read the store).
//!
//! Decisions:
//! - The targets asked about are the (service, site) pairs the release's
//!   keys name anywhere, narrowed by `service` and `site`; a release with no
//!   such key in the caller's view is unknown (`None`), not no-go.
//! - An anomaly is open while the key it was found on is tracked and not
//!   finished (and a rollup's `stuck` until the rollup is complete).
//! - A change failure rate is over the service's latest `deployments` keys
//!   in the environment that deployed (DORA: a failure or a rollback counts
//!   against it), among the keys the agent still tracks.
//! - The score is the sum of each signal's points: its weight (points) times
//!   its value (0 to 1), in tenths so the listed points add up exactly.

use std::collections::{BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use super::{HistoryRecord, KeyState, Outcome, Target, Tracker};
use crate::config::ReadinessConfig;
use crate::detect::{self, Standing};
use crate::event::{Key, NO_SERVICE, TimeMs, format_rfc3339};
use crate::sym::Sym;

/// Open anomalies named in a reason; the rest are counted.
const MAX_LISTED: usize = 5;

/// What is asked.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ask {
    pub release: String,
    pub environment: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    /// Who will deploy (four eyes: their own approval does not count).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
}

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Fail,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Check {
    pub name: String,
    pub status: Status,
    pub reason: String,
}

/// One signal of the risk score: `points` = `weight` × `value`, in tenths.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Signal {
    pub name: String,
    pub weight: f64,
    /// 0 (absent) to 1 (fully present).
    pub value: f64,
    pub points: f64,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    pub release: String,
    pub environment: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    /// `go` or `no-go`.
    pub verdict: String,
    pub go: bool,
    pub generated_at: String,
    pub checks: Vec<Check>,
    /// 0 to 100: the sum of the signals' points.
    pub risk_score: f64,
    pub risk: Vec<Signal>,
}

/// The check names, in the answer's order.
pub const CHECKS: [&str; 6] = [
    "approval",
    "change_freeze",
    "previous_stage",
    "anomalies",
    "previous_targets",
    "change_failure_rate",
];

/// A check's result plus the value (0 to 1) its signal takes.
struct Judged {
    check: Check,
    value: f64,
}

fn judged(name: &str, pass: bool, value: f64, reason: String) -> Judged {
    Judged {
        check: Check {
            name: name.to_string(),
            status: if pass { Status::Pass } else { Status::Fail },
            reason,
        },
        value,
    }
}

/// What the answer may name: a partner with `actor` redacted is not told
/// approvers' or deployers' names.
#[derive(Debug, Clone, Copy, Default)]
pub struct Shown {
    pub names: bool,
}

/// Answers `ask` at agent time `now`. `visible` is the caller's view of
/// keys (a partner's scope); `history` the release's audit trail. `None`:
/// the release is unknown to the caller.
pub fn assess(
    t: &Tracker,
    ix: &Index<'_>,
    ask: &Ask,
    history: &[HistoryRecord],
    visible: &dyn Fn(&Key) -> bool,
    shown: Shown,
    now: TimeMs,
) -> Option<Answer> {
    let cfg = t.readiness_config();
    let wanted = |k: &Key| {
        k.release == ask.release
            && ask.service.as_ref().is_none_or(|s| *s == k.service)
            && ask.site.as_ref().is_none_or(|s| *s == k.site)
    };
    let targets: BTreeSet<(String, String)> = ix
        .release(&ask.release)
        .iter()
        .filter(|(k, _)| wanted(k) && visible(k))
        .map(|(k, _)| (k.service.to_string(), k.site.to_string()))
        .collect();
    if targets.is_empty() {
        return None;
    }
    let services: BTreeSet<&str> = {
        let all: BTreeSet<&str> = targets.iter().map(|(s, _)| s.as_str()).collect();
        let named: BTreeSet<&str> = all.iter().copied().filter(|s| *s != NO_SERVICE).collect();
        if named.is_empty() { all } else { named }
    };
    let model = t.model();
    let previous = model.promotion.as_ref().and_then(|p| {
        let pos = p.order.iter().position(|e| *e == ask.environment)?;
        (pos > 0).then(|| p.order[pos - 1].clone())
    });

    let approval = approval(t, ix, ask, &services, shown, now);
    let (freeze, freeze_ahead) = freeze(t, cfg, &ask.environment, now);
    let stage = previous_stage(t, ix, ask, &services, previous.as_deref(), now);
    let anomalies = anomalies(t, ix, cfg, ask, history, &wanted);
    let prev_targets = previous_targets(t, ix, ask, previous.as_deref(), &wanted, now);
    let (cfr, unrestored) = failures(t, ix, cfg, ask, &services);

    let checks = [approval, freeze, stage, anomalies, prev_targets, cfr];
    let w = &cfg.weights;
    let mut risk = Vec::new();
    let mut tenths: i64 = 0;
    let mut signal = |name: &str, weight: f64, value: f64, reason: &str| {
        let value = value.clamp(0.0, 1.0);
        let p = (weight * value * 10.0).round() as i64;
        tenths += p;
        risk.push(Signal {
            name: name.to_string(),
            weight,
            value: (value * 1000.0).round() / 1000.0,
            points: p as f64 / 10.0,
            reason: reason.to_string(),
        });
    };
    let weights = [
        w.approval,
        w.change_freeze,
        w.previous_stage,
        w.anomalies,
        w.previous_targets,
        w.change_failure_rate,
    ];
    for (j, weight) in checks.iter().zip(weights) {
        signal(&j.check.name, weight, j.value, &j.check.reason);
    }
    signal(
        "unrestored_failure",
        w.unrestored_failure,
        unrestored.0,
        &unrestored.1,
    );
    signal(
        "freeze_ahead",
        w.freeze_ahead,
        freeze_ahead.0,
        &freeze_ahead.1,
    );
    let checks: Vec<Check> = checks.into_iter().map(|j| j.check).collect();
    let go = checks.iter().all(|c| c.status == Status::Pass);
    Some(Answer {
        release: ask.release.clone(),
        environment: ask.environment.clone(),
        service: ask.service.clone(),
        site: ask.site.clone(),
        verdict: if go { "go" } else { "no-go" }.to_string(),
        go,
        generated_at: format_rfc3339(now),
        checks,
        risk_score: (tenths.min(1000)) as f64 / 10.0,
        risk,
    })
}

/// The gate's standing for each service, judged now with the asked actor
/// and the deployers of an attempt already under way as the deployers.
fn approval(
    t: &Tracker,
    ix: &Index<'_>,
    ask: &Ask,
    services: &BTreeSet<&str>,
    shown: Shown,
    now: TimeMs,
) -> Judged {
    let model = t.model();
    let name = "approval";
    let Some(gate) = model
        .gate
        .as_ref()
        .filter(|g| g.environments.contains(&ask.environment))
    else {
        return judged(
            name,
            true,
            0.0,
            format!("no gate applies to {}", ask.environment),
        );
    };
    let mut problems = Vec::new();
    let mut approved = Vec::new();
    for service in services {
        let key = Key {
            release: ask.release.clone(),
            service: Sym::new(service),
            environment: ask.environment.as_str().into(),
            site: ask.site.as_deref().unwrap_or("").into(),
        };
        let mut deployers: Vec<(String, String)> = Vec::new();
        if let Some(a) = &ask.actor {
            deployers.push((String::new(), a.clone()));
        }
        for (k, ks) in ix.release(&ask.release) {
            if k.service == key.service
                && k.environment == key.environment
                && ask.site.as_ref().is_none_or(|s| *s == k.site)
            {
                for a in ks.memory.attempts.iter().filter(|a| !a.ended) {
                    deployers.extend(a.deployers.iter().cloned());
                    deployers.push((a.evidence.source.to_string(), a.evidence.actor.to_string()));
                }
            }
        }
        let refs: Vec<(&str, &str)> = deployers
            .iter()
            .map(|(s, a)| (s.as_str(), a.as_str()))
            .collect();
        let by = |r: &detect::Ruling| {
            if shown.names && !r.approver.is_empty() {
                format!(" by {}", r.approver)
            } else {
                String::new()
            }
        };
        match detect::standing(model, &key, t.approvals(), &refs, now, now) {
            Standing::Approved(r) => approved.push(format!(
                "{service}: approved{} at {}",
                by(r),
                format_rfc3339(r.at)
            )),
            Standing::Refused(r) => problems.push(format!(
                "{service}: {}{} at {}",
                r.decision.as_str(),
                by(r),
                format_rfc3339(r.at)
            )),
            Standing::SelfApproved(r) => problems.push(format!(
                "{service}: self-approved{}: four eyes need an approval by someone who does \
                 not deploy",
                by(r)
            )),
            Standing::Late(_) | Standing::None => problems.push(format!(
                "{service}: no approval from {}",
                gate.approval_sources.join(", ")
            )),
        }
    }
    if problems.is_empty() {
        judged(name, true, 0.0, approved.join("; "))
    } else {
        judged(name, false, 1.0, problems.join("; "))
    }
}

/// The freeze check, and the freeze_ahead signal: a window opening within
/// the horizon weighs more the sooner it opens.
fn freeze(t: &Tracker, cfg: &ReadinessConfig, env: &str, now: TimeMs) -> (Judged, (f64, String)) {
    let name = "change_freeze";
    let d = t.detectors();
    if !d.change_freeze.enabled {
        return (
            judged(name, true, 0.0, "the change_freeze rule is off".into()),
            (0.0, "the change_freeze rule is off".into()),
        );
    }
    let windows = &d.freeze_windows;
    if let Some(w) = detect::freeze_open_at(windows, env, now) {
        return (
            judged(
                name,
                false,
                1.0,
                format!("change-freeze window {} is open for {env}", w.label()),
            ),
            (
                0.0,
                "a freeze is open (the change_freeze check counts it)".into(),
            ),
        );
    }
    let horizon = cfg.freeze_horizon.as_millis() as TimeMs;
    let ahead = match detect::freeze_next_open(windows, env, now, horizon) {
        Some((at, w)) if horizon > 0 => (
            1.0 - (at - now) as f64 / horizon as f64,
            format!(
                "change-freeze window {} opens at {}",
                w.label(),
                format_rfc3339(at)
            ),
        ),
        _ => (
            0.0,
            format!(
                "no change-freeze window opens in the next {}",
                detect::short_duration(cfg.freeze_horizon)
            ),
        ),
    };
    (
        judged(
            name,
            true,
            0.0,
            format!("no change-freeze window is open for {env}"),
        ),
        ahead,
    )
}

/// skipped_stage's judgement asked now: the previous stage has this
/// release's change (by version, commit or release) deployed or complete
/// within the promotion window.
fn previous_stage(
    t: &Tracker,
    ix: &Index<'_>,
    ask: &Ask,
    services: &BTreeSet<&str>,
    previous: Option<&str>,
    now: TimeMs,
) -> Judged {
    let name = "previous_stage";
    let model = t.model();
    let Some(promo) = &model.promotion else {
        return judged(name, true, 0.0, "no [model.promotion] order".into());
    };
    let Some(prev) = previous else {
        return judged(
            name,
            true,
            0.0,
            format!(
                "{} has no previous environment in the promotion order",
                ask.environment
            ),
        );
    };
    let window = promo.window.as_millis() as TimeMs;
    let mut problems = Vec::new();
    let mut found = Vec::new();
    for service in services {
        // The change this release carries for the service: the version
        // and commit of its latest report that names one, anywhere.
        let value = ix
            .release(&ask.release)
            .iter()
            .filter(|(k, _)| k.service == *service)
            .filter_map(|(k, ks)| {
                detect::promotion_value(
                    promo.match_by,
                    k,
                    ks.last.version.as_deref(),
                    ks.last.commit.as_deref(),
                )
                .map(|v| (ks.max_time, v.to_string()))
            })
            .max()
            .map(|(_, v)| v);
        let by = format!("{:?}", promo.match_by).to_lowercase();
        let Some(value) = value else {
            problems.push(format!(
                "{service}: release {} reported no {by} to match in {prev}",
                ask.release
            ));
            continue;
        };
        // The ledger is derived from the keys: the sites it can hold for
        // the service there are those of its keys there.
        let sites: BTreeSet<&str> = match &ask.site {
            Some(s) => [s.as_str()].into(),
            None => ix.sites(service, prev).iter().copied().collect(),
        };
        match t
            .stages()
            .find(prev, service, sites, &value, now - window, now)
        {
            Some(at) => found.push(format!(
                "{service}: {by} {value} deployed in {prev} at {}",
                format_rfc3339(at)
            )),
            None => problems.push(format!(
                "{service}: {prev} had no deployment of {by} {value} in the {} before",
                detect::short_duration(promo.window)
            )),
        }
    }
    if problems.is_empty() {
        judged(name, true, 0.0, found.join("; "))
    } else {
        judged(name, false, 1.0, problems.join("; "))
    }
}

/// Findings of the configured rules on the release's keys that are still
/// open; the signal grows with their number (three or more: full).
fn anomalies(
    t: &Tracker,
    ix: &Index<'_>,
    cfg: &ReadinessConfig,
    ask: &Ask,
    history: &[HistoryRecord],
    wanted: &dyn Fn(&Key) -> bool,
) -> Judged {
    let name = "anomalies";
    let mut open: BTreeSet<(String, String, String)> = BTreeSet::new();
    for h in history {
        let e = &h.event;
        let key = Key {
            release: e.release.clone(),
            service: e.service.as_str().into(),
            environment: e.environment.as_str().into(),
            site: e.site.as_str().into(),
        };
        if !wanted(&key) || t.get(&key).is_none_or(|ks| ks.finished.is_some()) {
            continue;
        }
        for rule in h.anomalies.iter().filter(|r| cfg.rules.contains(r)) {
            open.insert((
                rule.clone(),
                key.service.to_string(),
                key.environment.to_string(),
            ));
        }
    }
    if cfg.rules.iter().any(|r| r == "stuck") {
        let envs: BTreeSet<&str> = ix
            .release(&ask.release)
            .iter()
            .filter(|(k, _)| wanted(k))
            .map(|(k, _)| k.environment.as_str())
            .collect();
        for env in envs {
            if t.rollup_stuck(&ask.release, env) {
                open.insert(("stuck".into(), NO_SERVICE.into(), env.to_string()));
            }
        }
    }
    if open.is_empty() {
        return judged(
            name,
            true,
            0.0,
            format!("no open finding of {}", cfg.rules.join(", ")),
        );
    }
    let mut listed: Vec<String> = open
        .iter()
        .take(MAX_LISTED)
        .map(|(r, s, e)| format!("{r} on {s} in {e}"))
        .collect();
    if open.len() > MAX_LISTED {
        listed.push(format!("and {} more", open.len() - MAX_LISTED));
    }
    judged(
        name,
        false,
        (open.len() as f64 / 3.0).min(1.0),
        format!("open: {}", listed.join("; ")),
    )
}

/// The rollup of the release in the previous environment: no target
/// failed, rolled back or stuck. The signal is the share of bad targets.
fn previous_targets(
    t: &Tracker,
    ix: &Index<'_>,
    ask: &Ask,
    previous: Option<&str>,
    wanted: &dyn Fn(&Key) -> bool,
    now: TimeMs,
) -> Judged {
    let name = "previous_targets";
    let model = t.model();
    let Some(prev) = previous else {
        return judged(
            name,
            true,
            0.0,
            format!(
                "{} has no previous environment in the promotion order",
                ask.environment
            ),
        );
    };
    let rollups = super::rollup::compute(
        ix.release(&ask.release).iter().copied(),
        model,
        t.rollups_config(),
        |k| k.environment == prev && wanted(k),
    );
    let Some(r) = rollups.first() else {
        return judged(
            name,
            true,
            0.0,
            format!("release {} has no target in {prev}", ask.release),
        );
    };
    let mut bad = Vec::new();
    for target in &r.targets {
        let key = Key {
            release: ask.release.clone(),
            service: target.service.as_str().into(),
            environment: prev.into(),
            site: target.site.as_str().into(),
        };
        // Past its status's stuck_after now, whether or not the periodic
        // check has reported it yet.
        let stuck = t.get(&key).is_some_and(|ks| {
            ks.finished.is_none()
                && (ks.memory.stuck_fired == Some(ks.entered_at)
                    || model.index(&ks.status).is_some_and(|i| {
                        model
                            .stuck_after(i, prev)
                            .is_some_and(|d| now - ks.entered_at > d.as_millis() as TimeMs)
                    }))
        });
        if matches!(target.status.as_str(), "failed" | "rolled_back") || stuck {
            let at = if target.site.is_empty() {
                String::new()
            } else {
                format!(" at {}", target.site)
            };
            let what = if stuck { "stuck in " } else { "" };
            bad.push(format!("{}{at} {what}{}", target.service, target.status));
        }
    }
    if t.rollup_stuck(&ask.release, prev) && bad.is_empty() {
        bad.push("the rollup is stuck".into());
    }
    let total = r.targets.len().max(1) as f64;
    if bad.is_empty() {
        judged(
            name,
            true,
            0.0,
            format!(
                "{} target(s) in {prev}, none failed or stuck ({})",
                r.targets.len(),
                r.status
            ),
        )
    } else {
        judged(
            name,
            false,
            (bad.len() as f64 / total).min(1.0),
            format!("in {prev}: {}", bad.join("; ")),
        )
    }
}

/// The change failure rate check (the highest rate among the services),
/// and the unrestored_failure signal: a failure in the environment not yet
/// followed by a deployment (an open restore episode).
fn failures(
    t: &Tracker,
    ix: &Index<'_>,
    cfg: &ReadinessConfig,
    ask: &Ask,
    services: &BTreeSet<&str>,
) -> (Judged, (f64, String)) {
    let name = "change_failure_rate";
    let mut worst: Option<(f64, String)> = None;
    let mut parts = Vec::new();
    let mut unrestored = Vec::new();
    for service in services {
        // Newest first (the index's order): the first `deployments` that
        // deployed.
        let deployments: Vec<Outcome> = ix
            .service_env(service, &ask.environment)
            .iter()
            .filter(|(k, _)| ask.site.as_ref().is_none_or(|s| *s == k.site))
            .filter_map(|(_, ks)| t.deployment_outcome(ks))
            .take(cfg.deployments)
            .collect();
        if !deployments.is_empty() {
            let failed = deployments
                .iter()
                .filter(|o| **o != Outcome::Success)
                .count();
            let rate = failed as f64 / deployments.len() as f64;
            let text = format!(
                "{service}: {failed} of the last {} deployment(s) in {} failed or rolled back \
                 ({:.0}%)",
                deployments.len(),
                ask.environment,
                rate * 100.0
            );
            if worst.as_ref().is_none_or(|(w, _)| rate > *w) {
                worst = Some((rate, text.clone()));
            }
            parts.push(text);
        }
        for site in ix.sites(service, &ask.environment) {
            if ask.site.as_ref().is_some_and(|s| s != site) {
                continue;
            }
            let target = Target {
                service: Sym::new(service),
                environment: ask.environment.as_str().into(),
                site: Sym::new(site),
            };
            if let Some(since) = t.failing_since(&target) {
                unrestored.push(format!(
                    "{service}{} failed in {} at {} and is not restored",
                    if site.is_empty() {
                        String::new()
                    } else {
                        format!(" at {site}")
                    },
                    ask.environment,
                    format_rfc3339(since)
                ));
            }
        }
    }
    let cfr = match worst {
        None => judged(
            name,
            true,
            0.0,
            format!("no deployment in {} yet", ask.environment),
        ),
        Some((rate, _)) if rate < cfg.max_change_failure_rate => judged(
            name,
            true,
            rate,
            format!(
                "{} (under {:.0}%)",
                parts.join("; "),
                cfg.max_change_failure_rate * 100.0
            ),
        ),
        Some((rate, text)) => judged(
            name,
            false,
            rate,
            format!(
                "{text}, at or over {:.0}%",
                cfg.max_change_failure_rate * 100.0
            ),
        ),
    };
    let unrestored = if unrestored.is_empty() {
        (0.0, format!("no unrestored failure in {}", ask.environment))
    } else {
        (1.0, unrestored.join("; "))
    };
    (cfr, unrestored)
}

/// For a caller who sees only some environments (a partner): every check
/// is still judged on all the agent knows (a partner scoped to production
/// still needs staging's verdict), but a reason about an environment
/// outside `in_scope` says only that, so no status, target or finding of
/// an environment it cannot see is shown.
pub fn hide_outside(a: &mut Answer, t: &Tracker, in_scope: &dyn Fn(&str) -> bool) {
    let previous = t.model().promotion.as_ref().and_then(|p| {
        let pos = p.order.iter().position(|e| *e == a.environment)?;
        (pos > 0).then(|| p.order[pos - 1].clone())
    });
    let mut hidden: Vec<(&str, String)> = Vec::new();
    if let Some(prev) = previous.filter(|p| !in_scope(p)) {
        for name in ["previous_stage", "previous_targets"] {
            hidden.push((name, format!("judged on {prev}, outside your view")));
        }
    }
    // Findings are listed with their environment: show only their number
    // when one is outside the view.
    if let Some(c) = a.checks.iter().find(|c| c.name == "anomalies")
        && c.status == Status::Fail
        && c.reason
            .split("; ")
            .filter_map(|f| f.rsplit_once(" in ").map(|(_, e)| e))
            .any(|e| !in_scope(e))
    {
        hidden.push((
            "anomalies",
            "open findings, some in environments outside your view".to_string(),
        ));
    }
    for (name, reason) in hidden {
        for c in a.checks.iter_mut().filter(|c| c.name == name) {
            c.reason = reason.clone();
        }
        for r in a.risk.iter_mut().filter(|r| r.name == name) {
            r.reason = reason.clone();
        }
    }
}

/// A tracked key with its state.
type Entry<'a> = (&'a Key, &'a KeyState);

/// The tracker's keys grouped the ways the checks look them up, built in
/// one pass: an answer then reads its release's keys and its services'
/// keys in the environments concerned, not every key once per check (the
/// risk metric asks for up to max_tracked answers in a row).
pub struct Index<'a> {
    by_release: HashMap<&'a str, Vec<Entry<'a>>>,
    /// service -> environment -> keys, newest status first.
    by_service_env: HashMap<&'a str, HashMap<&'a str, Vec<Entry<'a>>>>,
    /// service -> environment -> the sites of its keys.
    sites: HashMap<&'a str, HashMap<&'a str, BTreeSet<&'a str>>>,
}

impl<'a> Index<'a> {
    pub fn of(t: &'a Tracker) -> Self {
        let mut by_release: HashMap<&str, Vec<Entry>> = HashMap::new();
        let mut by_service_env: HashMap<&str, HashMap<&str, Vec<Entry>>> = HashMap::new();
        for (k, ks) in t.keys() {
            by_release.entry(&k.release).or_default().push((k, ks));
            by_service_env
                .entry(&k.service)
                .or_default()
                .entry(&k.environment)
                .or_default()
                .push((k, ks));
        }
        let mut sites: HashMap<&str, HashMap<&str, BTreeSet<&str>>> = HashMap::new();
        for (service, envs) in &mut by_service_env {
            for (env, entries) in envs.iter_mut() {
                entries.sort_by_key(|(k, ks)| (std::cmp::Reverse(ks.entered_at), *k));
                sites
                    .entry(service)
                    .or_default()
                    .insert(env, entries.iter().map(|(k, _)| k.site.as_str()).collect());
            }
        }
        Self {
            by_release,
            by_service_env,
            sites,
        }
    }

    fn sites(&self, service: &str, environment: &str) -> &BTreeSet<&'a str> {
        static NONE: BTreeSet<&str> = BTreeSet::new();
        self.sites
            .get(service)
            .and_then(|m| m.get(environment))
            .unwrap_or(&NONE)
    }

    fn release(&self, release: &str) -> &[Entry<'a>] {
        self.by_release
            .get(release)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    fn service_env(&self, service: &str, environment: &str) -> &[Entry<'a>] {
        self.by_service_env
            .get(service)
            .and_then(|m| m.get(environment))
            .map(Vec::as_slice)
            .unwrap_or_default()
    }
}

/// What `relstat_release_risk_score` is about: (release, service,
/// environment) where the release is `deployed` or `complete` for the
/// service in an environment of the promotion order and has not been
/// deployed in the next one yet; the most recently moved first, at most
/// `limit`.
pub fn pending(t: &Tracker, limit: usize) -> Vec<(String, String, String)> {
    let Some(promo) = &t.model().promotion else {
        return Vec::new();
    };
    let next = |env: &str| {
        let pos = promo.order.iter().position(|e| e == env)?;
        promo.order.get(pos + 1)
    };
    let mut found: std::collections::BTreeMap<(&str, &str, &str), TimeMs> = Default::default();
    for (k, ks) in t.keys() {
        if !matches!(ks.status.as_str(), "deployed" | "complete") {
            continue;
        }
        let Some(env) = next(&k.environment) else {
            continue;
        };
        let slot = found
            .entry((k.release.as_str(), k.service.as_str(), env.as_str()))
            .or_insert(ks.entered_at);
        *slot = (*slot).max(ks.entered_at);
    }
    // Deployed there already (at any site): not pending.
    for (k, ks) in t.keys() {
        if ks.memory.has_passed("deployed") || ks.status == "complete" {
            found.remove(&(
                k.release.as_str(),
                k.service.as_str(),
                k.environment.as_str(),
            ));
        }
    }
    let mut out: Vec<_> = found.into_iter().collect();
    out.sort_by_key(|(k, at)| (std::cmp::Reverse(*at), *k));
    out.truncate(limit);
    out.into_iter()
        .map(|((r, s, e), _)| (r.to_string(), s.to_string(), e.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    //! One go and one no-go case per check, the score's breakdown, and
    //! the unknown release; a tracker fed real events at fixed clocks.
    use super::*;
    use crate::event::{ActorType, Event};

    const BASE: TimeMs = 1_790_000_000_000;
    const MIN: TimeMs = 60_000;

    const CONFIG: &str = r#"
[model.gate]
environments = ["production"]
approval_sources = ["jira"]
require_distinct_approver = true

[model.promotion]
order = ["staging", "production"]

[readiness]
deployments = 4
max_change_failure_rate = 0.5
"#;

    fn ev(release: &str, env: &str, status: &str, at: TimeMs) -> Event {
        Event {
            id: format!("{release}/{env}/{status}/{at}"),
            time: at,
            release: release.into(),
            service: "payments".into(),
            environment: env.into(),
            site: String::new(),
            status: status.into(),
            actor: "deploy-bot".into(),
            actor_type: ActorType::Automation,
            source: "ci".into(),
            reason: None,
            version: Some(format!("v-{release}")),
            commit: None,
            artifact: None,
            commit_time: None,
            change_class: None,
        }
    }

    fn approval(release: &str, by: &str, at: TimeMs) -> Event {
        let mut e = ev(release, "production", "approved", at);
        e.source = "jira".into();
        e.actor = by.into();
        e.actor_type = ActorType::Human;
        e.version = None;
        e
    }

    fn tracker(extra: &str, events: Vec<Event>) -> Tracker {
        let cfg: crate::config::Config =
            toml::from_str(&format!("{CONFIG}{extra}")).expect("test config parses");
        let mut t = Tracker::from_config(&cfg, true).expect("model is valid");
        for e in events {
            let at = e.time;
            t.apply(e, at + 1000);
        }
        t
    }

    /// r2 deployed in staging and approved by alice: everything passes.
    fn ready() -> Vec<Event> {
        vec![
            ev("r2", "staging", "in_progress", BASE),
            ev("r2", "staging", "deployed", BASE + MIN),
            approval("r2", "alice", BASE + 2 * MIN),
        ]
    }

    fn ask(release: &str) -> Ask {
        Ask {
            release: release.into(),
            environment: "production".into(),
            ..Ask::default()
        }
    }

    fn answer(t: &Tracker, ask: &Ask, history: &[HistoryRecord]) -> Answer {
        assess(
            t,
            &Index::of(t),
            ask,
            history,
            &|_| true,
            Shown { names: true },
            BASE + 10 * MIN,
        )
        .expect("the release is known")
    }

    fn check<'a>(a: &'a Answer, name: &str) -> &'a Check {
        a.checks.iter().find(|c| c.name == name).expect("listed")
    }

    #[test]
    fn every_check_passes_for_a_ready_release() {
        let t = tracker("", ready());
        let a = answer(&t, &ask("r2"), &[]);
        assert!(a.go, "{a:#?}");
        assert_eq!(a.verdict, "go");
        let names: Vec<&str> = a.checks.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, CHECKS);
        assert!(check(&a, "approval").reason.contains("approved by alice"));
        assert!(
            check(&a, "previous_stage")
                .reason
                .contains("v-r2 deployed in staging")
        );
        assert_eq!(a.risk_score, 0.0);
    }

    #[test]
    fn an_unknown_or_invisible_release_has_no_answer() {
        let t = tracker("", ready());
        let now = BASE + 10 * MIN;
        let none = |ask: &Ask, visible: &dyn Fn(&Key) -> bool| {
            assess(&t, &Index::of(&t), ask, &[], visible, Shown::default(), now).is_none()
        };
        assert!(none(&ask("nope"), &|_| true));
        assert!(none(&ask("r2"), &|k| k.environment == "qa"));
        assert!(!none(&ask("r2"), &|k| k.environment == "staging"));
    }

    #[test]
    fn approval_missing_or_by_the_deployer_is_no_go() {
        let t = tracker("", ready()[..2].to_vec());
        let a = answer(&t, &ask("r2"), &[]);
        let c = check(&a, "approval");
        assert_eq!(c.status, Status::Fail);
        assert_eq!(c.reason, "payments: no approval from jira");
        assert!(!a.go);

        let t = tracker("", ready());
        let mut by_alice = ask("r2");
        by_alice.actor = Some("alice".into());
        let c = check(&answer(&t, &by_alice, &[]), "approval").clone();
        assert_eq!(c.status, Status::Fail);
        assert!(c.reason.contains("self-approved by alice"), "{}", c.reason);
        // Without the names (a partner with actor redacted).
        let a = assess(
            &t,
            &Index::of(&t),
            &by_alice,
            &[],
            &|_| true,
            Shown::default(),
            BASE + 10 * MIN,
        )
        .unwrap();
        assert!(!check(&a, "approval").reason.contains("alice"));
    }

    #[test]
    fn no_gate_for_the_environment_passes() {
        let t = tracker("", ready()[..2].to_vec());
        let mut a = ask("r2");
        a.environment = "staging".into();
        let c = check(&answer(&t, &a, &[]), "approval").clone();
        assert_eq!(c.status, Status::Pass);
        assert_eq!(c.reason, "no gate applies to staging");
    }

    fn freeze(start: TimeMs, end: TimeMs) -> String {
        format!(
            "\n[[anomalies.change_freeze.windows]]\nstart = \"{}\"\nend = \"{}\"\n\
             environments = [\"production\"]\n",
            format_rfc3339(start),
            format_rfc3339(end)
        )
    }

    #[test]
    fn an_open_freeze_window_is_no_go_and_one_ahead_adds_risk() {
        let t = tracker(&freeze(BASE, BASE + 60 * MIN), ready());
        let a = answer(&t, &ask("r2"), &[]);
        let c = check(&a, "change_freeze");
        assert_eq!(c.status, Status::Fail);
        assert!(
            c.reason.starts_with("change-freeze window "),
            "{}",
            c.reason
        );
        assert!(c.reason.ends_with(" is open for production"));
        assert_eq!(a.risk_score, 15.0);

        // Opens in one hour of the default four: 3/4 of freeze_ahead's 5.
        let t = tracker(&freeze(BASE + 70 * MIN, BASE + 200 * MIN), ready());
        let a = answer(&t, &ask("r2"), &[]);
        assert!(a.go);
        let s = a.risk.iter().find(|s| s.name == "freeze_ahead").unwrap();
        assert_eq!((s.value, s.points), (0.75, 3.8));
        assert_eq!(a.risk_score, 3.8);
    }

    #[test]
    fn a_release_not_deployed_in_the_previous_stage_is_no_go() {
        let t = tracker("", vec![approval("r2", "alice", BASE)]);
        let c = check(&answer(&t, &ask("r2"), &[]), "previous_stage").clone();
        assert_eq!(c.status, Status::Fail);
        // The approval carries no version: nothing to match.
        assert_eq!(
            c.reason,
            "payments: release r2 reported no version to match in staging"
        );
        let mut events = vec![ev("r2", "staging", "in_progress", BASE)];
        events.push(approval("r2", "alice", BASE + MIN));
        let t = tracker("", events);
        let c = check(&answer(&t, &ask("r2"), &[]), "previous_stage").clone();
        assert_eq!(c.status, Status::Fail);
        assert_eq!(
            c.reason,
            "payments: staging had no deployment of version v-r2 in the 14d before"
        );
    }

    fn record(key_event: Event, rules: &[&str]) -> HistoryRecord {
        HistoryRecord {
            order_time: key_event.time,
            recorded_at: key_event.time,
            event: key_event,
            from: None,
            late: false,
            anomalies: rules.iter().map(|r| r.to_string()).collect(),
            decision: None,
        }
    }

    #[test]
    fn an_open_finding_of_a_configured_rule_is_no_go() {
        let t = tracker("", ready());
        let staging = ev("r2", "staging", "deployed", BASE + MIN);
        let a = answer(&t, &ask("r2"), &[record(staging.clone(), &["flapping"])]);
        assert_eq!(
            check(&a, "anomalies").status,
            Status::Pass,
            "not configured"
        );
        let a = answer(&t, &ask("r2"), &[record(staging, &["skipped_stage"])]);
        let c = check(&a, "anomalies");
        assert_eq!(c.status, Status::Fail);
        assert_eq!(c.reason, "open: skipped_stage on payments in staging");
        // One of three: a third of the weight.
        let s = a.risk.iter().find(|s| s.name == "anomalies").unwrap();
        assert_eq!(s.points, 5.0);
    }

    #[test]
    fn a_failed_target_in_the_previous_environment_is_no_go() {
        let mut events = ready();
        let mut oslo = ev("r2", "staging", "in_progress", BASE);
        oslo.site = "oslo".into();
        oslo.id.push_str("oslo");
        let mut failed = ev("r2", "staging", "failed", BASE + MIN);
        failed.site = "oslo".into();
        failed.id.push_str("oslo");
        events.extend([oslo, failed]);
        let t = tracker("", events);
        let a = answer(&t, &ask("r2"), &[]);
        let c = check(&a, "previous_targets");
        assert_eq!(c.status, Status::Fail);
        assert_eq!(c.reason, "in staging: payments at oslo failed");
        let s = a
            .risk
            .iter()
            .find(|s| s.name == "previous_targets")
            .unwrap();
        assert_eq!((s.value, s.points), (0.5, 5.0));
    }

    #[test]
    fn a_stuck_target_in_the_previous_environment_is_no_go() {
        // In progress in staging for 2h at the time asked: past the 1h.
        let mut events = vec![ev("r2", "staging", "in_progress", BASE - 110 * MIN)];
        events.push(approval("r2", "alice", BASE));
        let t = tracker("", events);
        let c = check(&answer(&t, &ask("r2"), &[]), "previous_targets").clone();
        assert_eq!(c.status, Status::Fail);
        assert_eq!(c.reason, "in staging: payments stuck in in_progress");
        let t = tracker("", ready());
        let c = check(&answer(&t, &ask("r2"), &[]), "previous_targets").clone();
        assert_eq!(c.status, Status::Pass);
        assert_eq!(
            c.reason,
            "1 target(s) in staging, none failed or stuck (deployed)"
        );
    }

    #[test]
    fn a_high_change_failure_rate_is_no_go() {
        let mut events = ready();
        for (i, last) in ["deployed", "failed", "deployed", "rolled_back"]
            .iter()
            .enumerate()
        {
            let r = format!("r1-{i}");
            let at = BASE - (10 - i as TimeMs) * 10 * MIN;
            events.push(ev(&r, "production", "in_progress", at));
            events.push(ev(&r, "production", last, at + MIN));
        }
        let t = tracker("", events.clone());
        let a = answer(&t, &ask("r2"), &[]);
        let c = check(&a, "change_failure_rate");
        assert_eq!(c.status, Status::Fail);
        assert_eq!(
            c.reason,
            "payments: 2 of the last 4 deployment(s) in production failed or rolled back \
             (50%), at or over 50%"
        );
        // The rollback is not restored by a later deployment.
        let s = a
            .risk
            .iter()
            .find(|s| s.name == "unrestored_failure")
            .unwrap();
        assert_eq!(s.value, 1.0);

        // Two more, successful: the last 4 hold one failure.
        for (r, at) in [("r1-8", BASE - 8 * MIN), ("r1-9", BASE - 5 * MIN)] {
            events.push(ev(r, "production", "in_progress", at));
            events.push(ev(r, "production", "deployed", at + MIN));
        }
        let t = tracker("", events);
        let a = answer(&t, &ask("r2"), &[]);
        let c = check(&a, "change_failure_rate");
        assert_eq!(c.status, Status::Pass, "{}", c.reason);
        assert!(c.reason.contains("1 of the last 4"), "{}", c.reason);
    }

    #[test]
    fn pending_releases_are_those_deployed_in_the_previous_stage_only() {
        let mut events = ready();
        events.push(ev("r1", "staging", "deployed", BASE - 60 * MIN));
        events.push(ev("r1", "production", "in_progress", BASE - 50 * MIN));
        events.push(ev("r1", "production", "deployed", BASE - 40 * MIN));
        events.push(ev("r3", "staging", "deployed", BASE - 30 * MIN));
        let t = tracker("", events);
        let p = |r: &str| {
            (
                r.to_string(),
                "payments".to_string(),
                "production".to_string(),
            )
        };
        assert_eq!(pending(&t, 10), vec![p("r2"), p("r3")]);
        assert_eq!(pending(&t, 1), vec![p("r2")]);
    }

    #[test]
    fn the_breakdown_adds_up_to_the_score() {
        let mut events = ready()[..2].to_vec();
        events.push(ev("r0", "production", "in_progress", BASE - 50 * MIN));
        events.push(ev("r0", "production", "failed", BASE - 49 * MIN));
        let t = tracker(&freeze(BASE + 130 * MIN, BASE + 300 * MIN), events);
        let staging = ev("r2", "staging", "deployed", BASE + MIN);
        let a = answer(
            &t,
            &ask("r2"),
            &[record(staging, &["stuck", "gate_bypass"])],
        );
        let tenths: i64 = a
            .risk
            .iter()
            .map(|s| (s.points * 10.0).round() as i64)
            .sum();
        assert_eq!(tenths as f64 / 10.0, a.risk_score);
        for s in &a.risk {
            assert_eq!(
                (s.weight * s.value * 10.0).round() / 10.0,
                s.points,
                "{s:?}"
            );
        }
        // approval 20 + anomalies 2/3 of 15 + rate 1/1 of 10 + unrestored 10
        // + freeze in 2h of 4h: half of 5.
        assert_eq!(a.risk_score, 20.0 + 10.0 + 10.0 + 10.0 + 2.5);
        let names: Vec<&str> = a.risk.iter().map(|s| s.name.as_str()).collect();
        let weights: Vec<&str> = t
            .readiness_config()
            .weights
            .named()
            .iter()
            .map(|(n, _)| *n)
            .collect();
        assert_eq!(names, weights);
    }

    /// The cost of the risk metric's refresh at scale: `cargo test --lib
    /// risk_refresh_cost -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn risk_refresh_cost() {
        let mut events = Vec::new();
        for i in 0..5000 {
            let r = format!("r{i}");
            events.push(ev(&r, "staging", "deployed", BASE - i * MIN));
            events.push(ev(&r, "qa", "deployed", BASE - i * MIN));
        }
        let t = tracker("", events);
        let start = std::time::Instant::now();
        let p = pending(&t, 10_000);
        let listed = start.elapsed();
        let start = std::time::Instant::now();
        let ix = Index::of(&t);
        for (r, s, e) in &p {
            let ask = Ask {
                release: r.clone(),
                environment: e.clone(),
                service: Some(s.clone()),
                ..Ask::default()
            };
            assess(&t, &ix, &ask, &[], &|_| true, Shown::default(), BASE).unwrap();
        }
        eprintln!(
            "{} keys, {} pending listed in {listed:?}; all assessed in {:?}",
            t.len(),
            p.len(),
            start.elapsed()
        );
    }
}
