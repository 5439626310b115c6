//! A realistic clean history raises nothing: the rules must stay quiet on
//! what real tools report (issue 5: a feed that cries wolf is not read).
//!
//! A deterministic generator (seeded) of releases moving through dev,
//! staging and production the way tools report them: GitHub deployments
//! going straight to success as their first status, pipelines with no
//! approval outside production, redeploys of the same release, failures
//! retried or rolled back, re-schedules, ticket approvals (`jira`) before
//! the deploy or a minute after it (within the grace), humans and bots
//! mixed. Fed through the tracker with a gate on production, permissions,
//! a freeze window the history stays out of, and periodic checks.

use super::*;
use crate::event::ActorType::{Automation, Human};

const RELEASES: usize = 1_200;
const SERVICES: [&str; 5] = ["payments", "search", "checkout", "auth", "web"];

const CONFIG: &str = r#"
[model.gate]
environments = ["production"]
approval_sources = ["jira"]
grace = "2m"
[model.roles]
release_managers = ["alice", "bob"]
deployers = ["deploy-bot", "argocd"]
[[model.permissions]]
into = ["deployed", "in_progress"]
environments = ["production"]
allow = ["@release_managers", "@deployers"]
[[model.permissions]]
into = ["rolled_back"]
allow = ["@release_managers", "@deployers"]
[[anomalies.change_freeze.windows]]
start = "2030-12-20T00:00:00Z"
end = "2031-01-04T08:00:00Z"
environments = ["production"]
"#;

/// splitmix64: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// 0..n
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

struct Gen {
    events: Vec<Event>,
    seq: usize,
}

impl Gen {
    #[allow(clippy::too_many_arguments)]
    fn push(
        &mut self,
        release: &str,
        service: &str,
        env: &str,
        status: &str,
        at_s: i64,
        actor: &str,
        source: &str,
        version: &str,
    ) {
        self.seq += 1;
        let actor_type = match actor {
            "alice" | "bob" | "carol" => Human,
            _ => Automation,
        };
        let mut e = ev(release, service, env, status, t(at_s))
            .site("dc-east")
            .actor(actor)
            .actor_type(actor_type)
            .source(source)
            .version(version);
        e.id = format!("{source}-{}", self.seq);
        self.events.push(e);
    }
}

/// The whole history, sorted by event time.
fn history(seed: u64) -> Vec<Event> {
    let mut rng = Rng(seed);
    let mut g = Gen {
        events: Vec::new(),
        seq: 0,
    };
    for i in 0..RELEASES {
        let service = SERVICES[i % SERVICES.len()];
        let release = format!("2026.{}.{}", i / 30 + 1, i % 30);
        let version = format!("1.{i}.0");
        let v = version.as_str();
        let r = release.as_str();
        let t0 = i as i64 * 40 * M;

        // dev: a GitHub deployment straight to success, or a pipeline run
        if rng.chance(40) {
            g.push(
                r,
                service,
                "dev",
                "deployed",
                t0 + 3 * M,
                "github-actions",
                "github",
                v,
            );
        } else {
            g.push(
                r,
                service,
                "dev",
                "in_progress",
                t0,
                "gitlab-ci",
                "gitlab",
                v,
            );
            g.push(
                r,
                service,
                "dev",
                "deployed",
                t0 + 3 * M,
                "gitlab-ci",
                "gitlab",
                v,
            );
        }

        // staging: tests, failures retried, re-schedules; no approvals here
        let s0 = t0 + 10 * M;
        match rng.below(4) {
            0 => {
                g.push(
                    r,
                    service,
                    "staging",
                    "scheduled",
                    s0,
                    "gitlab-ci",
                    "gitlab",
                    v,
                );
                g.push(
                    r,
                    service,
                    "staging",
                    "in_test",
                    s0 + 2 * M,
                    "gitlab-ci",
                    "gitlab",
                    v,
                );
                g.push(
                    r,
                    service,
                    "staging",
                    "deployed",
                    s0 + 9 * M,
                    "gitlab-ci",
                    "gitlab",
                    v,
                );
            }
            1 => {
                g.push(
                    r,
                    service,
                    "staging",
                    "in_progress",
                    s0,
                    "gitlab-ci",
                    "gitlab",
                    v,
                );
                g.push(
                    r,
                    service,
                    "staging",
                    "failed",
                    s0 + 2 * M,
                    "gitlab-ci",
                    "gitlab",
                    v,
                );
                g.push(
                    r,
                    service,
                    "staging",
                    "in_progress",
                    s0 + 4 * M,
                    "gitlab-ci",
                    "gitlab",
                    v,
                );
                g.push(
                    r,
                    service,
                    "staging",
                    "deployed",
                    s0 + 9 * M,
                    "gitlab-ci",
                    "gitlab",
                    v,
                );
            }
            2 => {
                // a person calls the run failed, the pipeline retries
                g.push(
                    r,
                    service,
                    "staging",
                    "in_progress",
                    s0,
                    "gitlab-ci",
                    "gitlab",
                    v,
                );
                g.push(
                    r,
                    service,
                    "staging",
                    "failed",
                    s0 + 2 * M,
                    "carol",
                    "gitlab",
                    v,
                );
                g.push(
                    r,
                    service,
                    "staging",
                    "in_progress",
                    s0 + 3 * M,
                    "gitlab-ci",
                    "gitlab",
                    v,
                );
                g.push(
                    r,
                    service,
                    "staging",
                    "deployed",
                    s0 + 9 * M,
                    "gitlab-ci",
                    "gitlab",
                    v,
                );
            }
            _ => {
                g.push(
                    r,
                    service,
                    "staging",
                    "scheduled",
                    s0,
                    "carol",
                    "jira-sched",
                    v,
                );
                let n = rng.below(4) as i64;
                for k in 0..n {
                    let at_s = s0 + k * M + 10;
                    g.push(
                        r,
                        service,
                        "staging",
                        "rescheduled",
                        at_s,
                        "carol",
                        "jira-sched",
                        v,
                    );
                    g.push(
                        r,
                        service,
                        "staging",
                        "scheduled",
                        at_s + 20,
                        "carol",
                        "jira-sched",
                        v,
                    );
                }
                g.push(
                    r,
                    service,
                    "staging",
                    "in_progress",
                    s0 + 5 * M,
                    "gitlab-ci",
                    "gitlab",
                    v,
                );
                g.push(
                    r,
                    service,
                    "staging",
                    "deployed",
                    s0 + 9 * M,
                    "gitlab-ci",
                    "gitlab",
                    v,
                );
            }
        }

        // production: gated
        let p0 = t0 + 25 * M;
        let who = ["deploy-bot", "argocd", "alice", "bob"][rng.below(4) as usize];
        let approve_before = |g: &mut Gen, rng: &mut Rng| {
            let svc = if rng.chance(30) { "-" } else { service };
            g.push(
                r,
                svc,
                "production",
                "approved",
                p0 - 5 * M,
                "bob",
                "jira",
                v,
            );
        };
        match rng.below(10) {
            0..=4 => {
                // the ticket is approved a minute after the deploy (polled late)
                g.push(
                    r,
                    service,
                    "production",
                    "scheduled",
                    p0,
                    "deploy-bot",
                    "argocd",
                    v,
                );
                g.push(
                    r,
                    service,
                    "production",
                    "in_progress",
                    p0 + 5 * M,
                    who,
                    "argocd",
                    v,
                );
                g.push(
                    r,
                    service,
                    "production",
                    "deployed",
                    p0 + 12 * M,
                    "argocd",
                    "argocd",
                    v,
                );
                g.push(
                    r,
                    service,
                    "production",
                    "approved",
                    p0 + 13 * M,
                    "bob",
                    "jira",
                    v,
                );
                if rng.chance(50) {
                    g.push(
                        r,
                        service,
                        "production",
                        "complete",
                        p0 + 30 * M,
                        "alice",
                        "argocd",
                        v,
                    );
                }
            }
            5 | 6 => {
                approve_before(&mut g, &mut rng);
                g.push(
                    r,
                    service,
                    "production",
                    "deployed",
                    p0 + 10 * M,
                    "argocd",
                    "github",
                    v,
                );
            }
            7 => {
                approve_before(&mut g, &mut rng);
                g.push(
                    r,
                    service,
                    "production",
                    "in_progress",
                    p0,
                    who,
                    "argocd",
                    v,
                );
                g.push(
                    r,
                    service,
                    "production",
                    "failed",
                    p0 + 3 * M,
                    "argocd",
                    "argocd",
                    v,
                );
                g.push(
                    r,
                    service,
                    "production",
                    "in_progress",
                    p0 + 5 * M,
                    "argocd",
                    "argocd",
                    v,
                );
                g.push(
                    r,
                    service,
                    "production",
                    "deployed",
                    p0 + 10 * M,
                    "argocd",
                    "argocd",
                    v,
                );
            }
            8 => {
                // deployed, a person finds it broken, rolled back
                approve_before(&mut g, &mut rng);
                g.push(
                    r,
                    service,
                    "production",
                    "in_progress",
                    p0,
                    who,
                    "argocd",
                    v,
                );
                g.push(
                    r,
                    service,
                    "production",
                    "deployed",
                    p0 + 5 * M,
                    "argocd",
                    "argocd",
                    v,
                );
                g.push(
                    r,
                    service,
                    "production",
                    "failed",
                    p0 + 15 * M,
                    "alice",
                    "argocd",
                    v,
                );
                g.push(
                    r,
                    service,
                    "production",
                    "rolled_back",
                    p0 + 20 * M,
                    "deploy-bot",
                    "argocd",
                    v,
                );
            }
            _ => {
                // a redeploy of the same release
                approve_before(&mut g, &mut rng);
                g.push(
                    r,
                    service,
                    "production",
                    "in_progress",
                    p0,
                    who,
                    "argocd",
                    v,
                );
                g.push(
                    r,
                    service,
                    "production",
                    "deployed",
                    p0 + 5 * M,
                    "argocd",
                    "argocd",
                    v,
                );
                g.push(
                    r,
                    service,
                    "production",
                    "in_progress",
                    p0 + 20 * M,
                    "argocd",
                    "argocd",
                    v,
                );
                g.push(
                    r,
                    service,
                    "production",
                    "deployed",
                    p0 + 24 * M,
                    "argocd",
                    "argocd",
                    v,
                );
                g.push(
                    r,
                    service,
                    "production",
                    "complete",
                    p0 + 35 * M,
                    "bob",
                    "argocd",
                    v,
                );
            }
        }
    }
    g.events.sort_by_key(|e| e.time);
    g.events
}

/// Feeds the history as a live agent would see it (events arriving a few
/// seconds after they happened, a check every 5 minutes once caught up);
/// returns every anomaly and the tracker.
fn feed(config: &str, events: Vec<Event>) -> (Vec<Anomaly>, Tracker) {
    let mut tr = tracker_with(settings(), config);
    let mut anomalies = Vec::new();
    let mut drain = |tr: &mut Tracker| {
        for e in tr.take_effects() {
            if let Effect::Anomaly(a) = e {
                anomalies.push(*a);
            }
        }
        tr.take_batch();
    };
    let check = 5 * M * 1000;
    let mut next_check = events[0].time + check;
    let end = events.last().unwrap().time;
    for e in events {
        while e.time >= next_check {
            tr.tick(next_check, true);
            drain(&mut tr);
            next_check += check;
        }
        let (now, id) = (e.time + 5_000, e.id.clone());
        let r = tr.apply(e, now);
        assert_eq!(r, Accepted, "{id}");
        drain(&mut tr);
    }
    tr.tick(end + H * 1000, true);
    drain(&mut tr);
    (anomalies, tr)
}

#[test]
fn a_realistic_clean_history_raises_no_anomaly() {
    let events = history(0x5EED);
    assert!(events.len() > 10 * RELEASES, "{}", events.len());
    let (anomalies, tr) = feed(CONFIG, events);
    let found: Vec<String> = anomalies
        .iter()
        .map(|a| format!("{} {}: {}", a.rule, a.event_id, a.message))
        .collect();
    assert!(
        found.is_empty(),
        "{} anomalies:\n{}",
        found.len(),
        found.join("\n")
    );
    // Every production attempt was judged (none left pending).
    let pending: Vec<String> = tr
        .keys()
        .filter(|(_, ks)| ks.memory.attempts.iter().any(|a| !a.judged))
        .map(|(k, _)| k.to_string())
        .collect();
    assert!(pending.is_empty(), "{pending:?}");
}

/// The same history is not silent by construction: with the ticket system
/// not an approval source, every production attempt is a gate_bypass, and
/// without `argocd` among the deployers its deploys are unauthorized.
/// (The ticket approvals that arrive after a deploy are then ordinary
/// reports going back to `approved`: invalid transitions, not counted here.)
#[test]
fn the_clean_history_is_judged_not_ignored() {
    let config = CONFIG
        .replace(
            r#"approval_sources = ["jira"]"#,
            r#"approval_sources = ["servicenow"]"#,
        )
        .replace(
            r#"deployers = ["deploy-bot", "argocd"]"#,
            r#"deployers = ["deploy-bot"]"#,
        );
    let (anomalies, _) = feed(&config, history(0x5EED));
    let count = |rule: &str| anomalies.iter().filter(|a| a.rule == rule).count();
    // one attempt per release, two for the failed-and-retried ones
    assert!(count("gate_bypass") >= RELEASES, "{}", count("gate_bypass"));
    assert!(count("unauthorized_actor") > RELEASES / 2);
}
