//! The anomaly rules of docs/events.md as behaviour tables: for each rule
//! the cases that must fire and the near misses that must stay silent.
//! Tables restrict `effects` to the anomalies (`only`), and check the
//! record's severity, evidence (event id) and message in `findings`.
//! (stuck and clock_skew have their tables in the parent module.)

use super::*;
use crate::event::ActorType::Human;

const ANOMALIES: &[&str] = &["anomaly"];

fn utc(s: &str) -> TimeMs {
    chrono::DateTime::parse_from_rfc3339(s)
        .unwrap()
        .timestamp_millis()
}

/// An event at an absolute time, applied at that time.
fn now_at(ev: Event) -> Step {
    at(ev.time, ev, Accepted)
}

fn human(e: Event, who: &str) -> Event {
    e.actor(who).actor_type(Human)
}

// -------------------------------------------------------------------- gate

const GATE: &str = r#"
[model.gate]
environments = ["prod"]
approval_sources = ["jira"]
grace = "2m"
"#;

/// An approval from the ticket system.
fn appr(release: &str, service: &str, env: &str, time: TimeMs) -> Event {
    human(
        ev(release, service, env, "approved", time).source("jira"),
        "alice",
    )
}

#[test]
fn gate() {
    run_table(vec![
        Case {
            name: "an approval before the deploy, in another environment, satisfies the gate",
            config: GATE,
            only: ANOMALIES,
            steps: vec![
                at(t(0), appr("r1", "svc", "staging", t(0)), Accepted),
                at(t(60), p("r1", "deployed", t(60)), Accepted),
                tick(t(600), true),
            ],
            keys: &[
                "r1/svc/staging approved since=0 open",
                "r1/svc/prod deployed since=60 open",
            ],
            ..Case::default()
        },
        Case {
            name: "an approval for the whole release (service -) satisfies the gate",
            config: GATE,
            only: ANOMALIES,
            steps: vec![
                at(t(0), appr("r1", "-", "prod", t(0)), Accepted),
                at(t(60), p("r1", "deployed", t(60)), Accepted),
                tick(t(600), true),
            ],
            keys: &[
                "r1/-/prod approved since=0 open",
                "r1/svc/prod deployed since=60 open",
            ],
            ..Case::default()
        },
        Case {
            name: "an approval from a source not in approval_sources does not count",
            config: GATE,
            only: ANOMALIES,
            steps: vec![
                at(
                    t(0),
                    ev("r1", "svc", "staging", "approved", t(0)).source("ci"),
                    Accepted,
                ),
                at(t(60), p("r1", "deployed", t(60)), Accepted),
                tick(t(600), true),
            ],
            keys: &[
                "r1/svc/staging approved since=0 open",
                "r1/svc/prod deployed since=60 open",
            ],
            effects: &["anomaly gate_bypass r1/svc/prod deployed"],
            findings: Some(&[
                "gate_bypass critical r1/svc/prod:deployed@60: prod deploy of r1/svc by \
                 deploy-bot without prior approval (no approval from jira)",
            ]),
            ..Case::default()
        },
        Case {
            name: "an approval within the grace after the deploy counts, and does not move the key",
            config: GATE,
            only: ANOMALIES,
            steps: vec![
                at(t(60), p("r1", "deployed", t(60)), Accepted),
                at(t(200), appr("r1", "svc", "prod", t(180)), Accepted),
                tick(t(600), true),
            ],
            keys: &["r1/svc/prod deployed since=60 open"],
            history: Some(&[
                "r1/svc/prod deployed t=60 order=60 from=-",
                "r1/svc/prod approved t=180 order=180 from=-",
            ]),
            ..Case::default()
        },
        Case {
            name: "an approval after the grace: gate_bypass, exactly once",
            config: GATE,
            only: ANOMALIES,
            steps: vec![
                at(t(60), p("r1", "deployed", t(60)), Accepted),
                at(t(300), appr("r1", "svc", "prod", t(181)), Accepted),
                tick(t(600), true),
                tick(t(1200), true),
            ],
            keys: &["r1/svc/prod deployed since=60 open"],
            effects: &["anomaly gate_bypass r1/svc/prod deployed"],
            findings: Some(&[
                "gate_bypass critical r1/svc/prod:deployed@60: prod deploy of r1/svc by \
                 deploy-bot without prior approval (approved only at 2026-09-21T14:16:21.000Z, \
                 after 2026-09-21T14:16:20.000Z) [approved by alice]",
            ]),
            ..Case::default()
        },
        Case {
            name: "judged once the clock has passed deploy + grace and every source is caught up",
            config: GATE,
            only: &["anomaly", "stuck_counts"],
            steps: vec![
                at(t(60), p("r1", "deployed", t(60)), Accepted),
                tick(t(180), true),
                tick(t(181), false),
                tick(t(181), true),
                tick(t(900), true),
            ],
            keys: &["r1/svc/prod deployed since=60 open"],
            effects: &[
                "stuck_counts",
                "stuck_counts",
                "anomaly gate_bypass r1/svc/prod deployed",
                "stuck_counts",
                "stuck_counts",
            ],
            ..Case::default()
        },
        Case {
            name: "an attempt under way without a deployed is not judged; once ended, from its \
                   last gated status",
            config: GATE,
            only: &["anomaly", "stuck_counts"],
            steps: vec![
                at(t(0), p("r1", "in_progress", t(0)), Accepted),
                at(t(30), p("r1", "in_progress", t(30)), Accepted),
                tick(t(900), true),
                at(t(1000), p("r1", "failed", t(1000)), Accepted),
                tick(t(1200), true),
            ],
            keys: &["r1/svc/prod failed since=1000 open"],
            effects: &[
                "stuck_counts",
                "anomaly gate_bypass r1/svc/prod in_progress",
                "stuck_counts",
            ],
            findings: Some(&[
                "gate_bypass critical r1/svc/prod:in_progress@30: prod deployment attempt of \
                 r1/svc (never reached deployed) by deploy-bot without prior approval (no \
                 approval from jira)",
            ]),
            ..Case::default()
        },
        Case {
            name: "a retry after a failure is another attempt, judged on its own",
            config: GATE,
            only: ANOMALIES,
            steps: vec![
                at(t(0), p("r1", "in_progress", t(0)), Accepted),
                at(t(60), p("r1", "failed", t(60)), Accepted),
                // too late for the first attempt (0 + 2m), in time for the retry
                at(t(150), appr("r1", "svc", "staging", t(150)), Accepted),
                at(t(160), p("r1", "in_progress", t(160)), Accepted),
                at(t(180), p("r1", "deployed", t(180)), Accepted),
                tick(t(900), true),
            ],
            keys: &[
                "r1/svc/prod deployed since=180 open",
                "r1/svc/staging approved since=150 open",
            ],
            effects: &["anomaly gate_bypass r1/svc/prod in_progress"],
            ..Case::default()
        },
        Case {
            name: "a redeploy of the same release is the same attempt: one finding",
            config: GATE,
            only: ANOMALIES,
            steps: vec![
                at(t(60), p("r1", "deployed", t(60)), Accepted),
                at(t(120), p("r1", "in_progress", t(120)), Accepted),
                at(t(180), p("r1", "deployed", t(180)), Accepted),
                tick(t(900), true),
                at(t(1000), p("r1", "in_progress", t(1000)), Accepted),
                at(t(1100), p("r1", "deployed", t(1100)), Accepted),
                tick(t(2000), true),
            ],
            keys: &["r1/svc/prod deployed since=1100 open"],
            effects: &["anomaly gate_bypass r1/svc/prod deployed"],
            ..Case::default()
        },
        Case {
            name: "a key that finished within the grace (deployed, then complete) is judged too",
            config: GATE,
            only: ANOMALIES,
            steps: vec![
                at(t(60), p("r1", "deployed", t(60)), Accepted),
                at(t(90), p("r1", "complete", t(90)), Accepted),
                tick(t(600), true),
            ],
            keys: &["r1/svc/prod complete since=90 finished=terminal@90"],
            effects: &["anomaly gate_bypass r1/svc/prod deployed"],
            ..Case::default()
        },
        Case {
            name: "an approval after the key completed satisfies it, moves nothing, is no \
                   invalid transition",
            config: GATE,
            only: &["anomaly", "reopened", "transition"],
            steps: vec![
                at(t(60), p("r1", "deployed", t(60)), Accepted),
                at(t(90), p("r1", "complete", t(90)), Accepted),
                at(t(130), appr("r1", "svc", "prod", t(120)), Accepted),
                tick(t(600), true),
            ],
            keys: &["r1/svc/prod complete since=90 finished=terminal@90"],
            effects: &["transition prod deployed->complete"],
            ..Case::default()
        },
        Case {
            name: "an approval that is not the gate's (no gate) moves the key as usual",
            only: ANOMALIES,
            steps: vec![
                at(t(60), p("r1", "deployed", t(60)), Accepted),
                at(t(130), appr("r1", "svc", "prod", t(120)), Accepted),
            ],
            keys: &["r1/svc/prod approved since=120 open"],
            effects: &["anomaly invalid_transition r1/svc/prod deployed->approved"],
            ..Case::default()
        },
        Case {
            name: "the emergency path with a reason is reported only as emergency_change",
            config: GATE,
            only: ANOMALIES,
            steps: vec![
                at(
                    t(0),
                    p("r1", "in_progress", t(0))
                        .emergency()
                        .reason("INC-42 card payments down"),
                    Accepted,
                ),
                at(t(60), p("r1", "deployed", t(60)), Accepted),
                tick(t(600), true),
            ],
            keys: &["r1/svc/prod deployed since=60 open"],
            effects: &["anomaly emergency_change r1/svc/prod in_progress->deployed"],
            findings: Some(&[
                "emergency_change notice r1/svc/prod:deployed@60: emergency prod deploy of \
                 r1/svc by deploy-bot without prior approval; reason: INC-42 card payments down",
            ]),
            ..Case::default()
        },
        Case {
            name: "the emergency class without a reason is a gate_bypass",
            config: GATE,
            only: ANOMALIES,
            steps: vec![
                at(t(60), p("r1", "deployed", t(60)).emergency(), Accepted),
                tick(t(600), true),
            ],
            keys: &["r1/svc/prod deployed since=60 open"],
            effects: &["anomaly gate_bypass r1/svc/prod deployed"],
            ..Case::default()
        },
        Case {
            name: "the emergency path with an approval: nothing",
            config: GATE,
            only: ANOMALIES,
            steps: vec![
                at(t(0), appr("r1", "svc", "prod", t(0)), Accepted),
                at(
                    t(60),
                    p("r1", "deployed", t(60)).emergency().reason("INC-1"),
                    Accepted,
                ),
                tick(t(600), true),
            ],
            keys: &["r1/svc/prod deployed since=60 open"],
            ..Case::default()
        },
        Case {
            name: "an ungated environment: silent",
            config: GATE,
            only: ANOMALIES,
            steps: vec![
                at(
                    t(60),
                    ev("r1", "svc", "staging", "deployed", t(60)),
                    Accepted,
                ),
                tick(t(600), true),
            ],
            keys: &["r1/svc/staging deployed since=60 open"],
            ..Case::default()
        },
        Case {
            name: "no gate configured: silent",
            only: ANOMALIES,
            steps: vec![
                at(t(60), p("r1", "deployed", t(60)), Accepted),
                tick(t(600), true),
            ],
            keys: &["r1/svc/prod deployed since=60 open"],
            ..Case::default()
        },
        Case {
            name: "gate_bypass disabled: silent",
            config: r#"
[model.gate]
environments = ["prod"]
approval_sources = ["jira"]
[anomalies.gate_bypass]
enabled = false
"#,
            only: ANOMALIES,
            steps: vec![
                at(t(60), p("r1", "deployed", t(60)), Accepted),
                tick(t(600), true),
            ],
            keys: &["r1/svc/prod deployed since=60 open"],
            ..Case::default()
        },
        Case {
            name: "emergency_change disabled: an emergency attempt is not a gate_bypass either",
            config: r#"
[model.gate]
environments = ["prod"]
approval_sources = ["jira"]
[anomalies.emergency_change]
enabled = false
"#,
            only: ANOMALIES,
            steps: vec![
                at(
                    t(60),
                    p("r1", "deployed", t(60)).emergency().reason("INC-1"),
                    Accepted,
                ),
                tick(t(600), true),
            ],
            keys: &["r1/svc/prod deployed since=60 open"],
            ..Case::default()
        },
        Case {
            name: "severity overrides apply",
            config: r#"
[model.gate]
environments = ["prod"]
approval_sources = ["jira"]
grace = "10m"
[anomalies.gate_bypass]
severity = "error"
[anomalies.emergency_change]
severity = "warning"
"#,
            only: ANOMALIES,
            steps: vec![
                at(t(60), p("r1", "deployed", t(60)), Accepted),
                at(
                    t(60),
                    p("r2", "deployed", t(60)).emergency().reason("INC-1"),
                    Accepted,
                ),
                tick(t(660), true),
                tick(t(661), true),
            ],
            keys: &[
                "r1/svc/prod deployed since=60 finished=superseded@60",
                "r2/svc/prod deployed since=60 open",
            ],
            effects: &[
                "anomaly emergency_change r2/svc/prod deployed",
                "anomaly gate_bypass r1/svc/prod deployed",
            ],
            findings: Some(&[
                "emergency_change warning r2/svc/prod:deployed@60: emergency prod deploy of \
                 r2/svc by deploy-bot without prior approval; reason: INC-1",
                "gate_bypass error r1/svc/prod:deployed@60: prod deploy of r1/svc by deploy-bot \
                 without prior approval (no approval from jira)",
            ]),
            ..Case::default()
        },
    ]);
}

/// A decision (`approved`, `rejected`, `revoked`) from the ticket system.
fn decide(release: &str, env: &str, status: &str, time: TimeMs, who: &str) -> Event {
    human(ev(release, "svc", env, status, time).source("jira"), who)
}

/// A deploy by a person, through the pipeline.
fn deploy_by(who: &str, time: TimeMs) -> Event {
    human(p("r1", "deployed", time), who)
}

const GATE_PER_ENV: &str = r#"
[model.gate]
environments = ["prod"]
approval_sources = ["jira"]
approvals = "per_environment"
"#;

#[test]
fn gate_decisions() {
    run_table(vec![
        Case {
            name: "a rejection before the deploy, and no approval: gate_bypass naming it",
            config: GATE,
            only: ANOMALIES,
            steps: vec![
                at(
                    t(0),
                    decide("r1", "prod", "rejected", t(0), "bob"),
                    Accepted,
                ),
                at(t(60), p("r1", "deployed", t(60)), Accepted),
                tick(t(600), true),
            ],
            keys: &["r1/svc/prod deployed since=60 open"],
            effects: &["anomaly gate_bypass r1/svc/prod deployed"],
            findings: Some(&[
                "gate_bypass critical r1/svc/prod:deployed@60: prod deploy of r1/svc by \
                 deploy-bot without prior approval (rejected by bob (jira) at \
                 2026-09-21T14:13:20.000Z) [rejected by bob]",
            ]),
            history: Some(&[
                "r1/svc/prod rejected t=0 order=0 from=-",
                "r1/svc/prod deployed t=60 order=60 from=-",
            ]),
            ..Case::default()
        },
        Case {
            name: "approved, then rejected before the deploy: no approval",
            config: GATE,
            only: ANOMALIES,
            steps: vec![
                at(t(0), decide("r1", "-", "approved", t(0), "alice"), Accepted),
                at(t(10), decide("r1", "-", "rejected", t(10), "bob"), Accepted),
                at(t(60), p("r1", "deployed", t(60)), Accepted),
                tick(t(600), true),
            ],
            keys: &[
                "r1/svc/- approved since=0 open",
                "r1/svc/prod deployed since=60 open",
            ],
            effects: &["anomaly gate_bypass r1/svc/prod deployed"],
            ..Case::default()
        },
        Case {
            name: "approved, then revoked before the deploy: no approval",
            config: GATE,
            only: ANOMALIES,
            steps: vec![
                at(t(0), decide("r1", "-", "approved", t(0), "alice"), Accepted),
                at(
                    t(30),
                    decide("r1", "-", "revoked", t(30), "carol"),
                    Accepted,
                ),
                at(t(60), p("r1", "deployed", t(60)), Accepted),
                tick(t(600), true),
            ],
            keys: &[
                "r1/svc/- approved since=0 open",
                "r1/svc/prod deployed since=60 open",
            ],
            effects: &["anomaly gate_bypass r1/svc/prod deployed"],
            findings: Some(&[
                "gate_bypass critical r1/svc/prod:deployed@60: prod deploy of r1/svc by \
                 deploy-bot without prior approval (revoked by carol (jira) at \
                 2026-09-21T14:13:50.000Z) [revoked by carol]",
            ]),
            ..Case::default()
        },
        Case {
            name: "a revocation after the deploy (within the grace, and later) is no bypass",
            config: GATE,
            only: ANOMALIES,
            steps: vec![
                at(t(0), decide("r1", "-", "approved", t(0), "alice"), Accepted),
                at(t(60), p("r1", "deployed", t(60)), Accepted),
                at(
                    t(90),
                    decide("r1", "-", "revoked", t(90), "carol"),
                    Accepted,
                ),
                at(
                    t(400),
                    decide("r1", "prod", "revoked", t(400), "carol"),
                    Accepted,
                ),
                tick(t(600), true),
            ],
            keys: &[
                "r1/svc/- approved since=0 open",
                "r1/svc/prod deployed since=60 open",
            ],
            ..Case::default()
        },
        Case {
            name: "rejected, then approved before the deploy: clean",
            config: GATE,
            only: ANOMALIES,
            steps: vec![
                at(
                    t(0),
                    decide("r1", "prod", "rejected", t(0), "bob"),
                    Accepted,
                ),
                at(
                    t(20),
                    decide("r1", "prod", "approved", t(20), "bob"),
                    Accepted,
                ),
                at(t(60), p("r1", "deployed", t(60)), Accepted),
                tick(t(600), true),
            ],
            keys: &["r1/svc/prod deployed since=60 open"],
            ..Case::default()
        },
        Case {
            name: "a rejection and an approval at the same time: the rejection stands",
            config: GATE,
            only: ANOMALIES,
            steps: vec![
                at(t(0), decide("r1", "-", "approved", t(0), "alice"), Accepted),
                at(t(0), decide("r1", "-", "rejected", t(0), "bob"), Accepted),
                at(t(60), p("r1", "deployed", t(60)), Accepted),
                tick(t(600), true),
            ],
            keys: &[
                "r1/svc/- approved since=0 open",
                "r1/svc/prod deployed since=60 open",
            ],
            effects: &["anomaly gate_bypass r1/svc/prod deployed"],
            ..Case::default()
        },
        Case {
            name: "a rejection from a source that is no approval source is unmapped",
            config: GATE,
            only: ANOMALIES,
            steps: vec![
                at(t(0), decide("r1", "-", "approved", t(0), "alice"), Accepted),
                at(
                    t(10),
                    ev("r1", "svc", "-", "rejected", t(10)).source("ci"),
                    Unmapped,
                ),
                at(t(60), p("r1", "deployed", t(60)), Accepted),
                tick(t(600), true),
            ],
            keys: &[
                "r1/svc/- approved since=0 open",
                "r1/svc/prod deployed since=60 open",
            ],
            ..Case::default()
        },
        Case {
            name: "release-wide (the default): a rejection in staging refuses prod too",
            config: GATE,
            only: ANOMALIES,
            steps: vec![
                at(
                    t(0),
                    decide("r1", "prod", "approved", t(0), "alice"),
                    Accepted,
                ),
                at(
                    t(10),
                    decide("r1", "staging", "rejected", t(10), "bob"),
                    Accepted,
                ),
                at(t(60), p("r1", "deployed", t(60)), Accepted),
                tick(t(600), true),
            ],
            keys: &["r1/svc/prod deployed since=60 open"],
            effects: &["anomaly gate_bypass r1/svc/prod approved->deployed"],
            ..Case::default()
        },
        Case {
            name: "per environment: an approval in staging does not open prod",
            config: GATE_PER_ENV,
            only: ANOMALIES,
            steps: vec![
                at(
                    t(0),
                    decide("r1", "staging", "approved", t(0), "alice"),
                    Accepted,
                ),
                at(t(60), p("r1", "deployed", t(60)), Accepted),
                tick(t(600), true),
            ],
            keys: &[
                "r1/svc/prod deployed since=60 open",
                "r1/svc/staging approved since=0 open",
            ],
            effects: &["anomaly gate_bypass r1/svc/prod deployed"],
            findings: Some(&[
                "gate_bypass critical r1/svc/prod:deployed@60: prod deploy of r1/svc by \
                 deploy-bot without prior approval (no approval from jira)",
            ]),
            ..Case::default()
        },
        Case {
            name: "per environment: an approval for prod, or for every environment (-), opens \
                   prod; a rejection in staging does not close it",
            config: GATE_PER_ENV,
            only: ANOMALIES,
            steps: vec![
                at(
                    t(0),
                    decide("r1", "prod", "approved", t(0), "alice"),
                    Accepted,
                ),
                at(
                    t(10),
                    decide("r1", "staging", "rejected", t(10), "bob"),
                    Accepted,
                ),
                at(t(60), p("r1", "deployed", t(60)), Accepted),
                at(
                    t(100),
                    decide("r2", "-", "approved", t(100), "alice"),
                    Accepted,
                ),
                at(t(160), p("r2", "deployed", t(160)), Accepted),
                tick(t(900), true),
            ],
            keys: &[
                "r1/svc/prod deployed since=60 finished=superseded@160",
                "r2/svc/- approved since=100 open",
                "r2/svc/prod deployed since=160 open",
            ],
            ..Case::default()
        },
        Case {
            name: "per environment: a revocation for every environment (-) before the deploy \
                   closes prod",
            config: GATE_PER_ENV,
            only: ANOMALIES,
            steps: vec![
                at(
                    t(0),
                    decide("r1", "prod", "approved", t(0), "alice"),
                    Accepted,
                ),
                at(t(10), decide("r1", "-", "revoked", t(10), "bob"), Accepted),
                at(t(60), p("r1", "deployed", t(60)), Accepted),
                tick(t(600), true),
            ],
            keys: &["r1/svc/prod deployed since=60 open"],
            effects: &["anomaly gate_bypass r1/svc/prod approved->deployed"],
            ..Case::default()
        },
    ]);
}

const FOUR_EYES: &str = r#"
[model.gate]
environments = ["prod"]
approval_sources = ["jira"]
require_distinct_approver = true
"#;

const FOUR_EYES_MAPPED: &str = r#"
[model.gate]
environments = ["prod"]
approval_sources = ["jira"]
require_distinct_approver = true
[model.identities]
alice = ["jira:5b10ac8d82e05b22cc7d4ef5", "ci:alice-ci"]
"#;

#[test]
fn gate_four_eyes() {
    run_table(vec![
        Case {
            name: "four eyes: the deployer's own approval does not count: self-approved",
            config: FOUR_EYES,
            only: ANOMALIES,
            steps: vec![
                at(t(0), decide("r1", "-", "approved", t(0), "alice"), Accepted),
                at(t(60), deploy_by("alice", t(60)), Accepted),
                tick(t(600), true),
            ],
            keys: &[
                "r1/svc/- approved since=0 open",
                "r1/svc/prod deployed since=60 open",
            ],
            effects: &["anomaly gate_bypass r1/svc/prod deployed"],
            findings: Some(&[
                "gate_bypass critical r1/svc/prod:deployed@60: prod deploy of r1/svc by alice \
                 without prior approval (self-approved: approved by alice (jira) at \
                 2026-09-21T14:13:20.000Z) [approved by alice]",
            ]),
            ..Case::default()
        },
        Case {
            name: "four eyes: whoever started the attempt is a deployer too",
            config: FOUR_EYES,
            only: ANOMALIES,
            steps: vec![
                at(t(0), decide("r1", "-", "approved", t(0), "alice"), Accepted),
                at(
                    t(30),
                    human(p("r1", "in_progress", t(30)), "alice"),
                    Accepted,
                ),
                at(t(60), p("r1", "deployed", t(60)), Accepted),
                tick(t(600), true),
            ],
            keys: &[
                "r1/svc/- approved since=0 open",
                "r1/svc/prod deployed since=60 open",
            ],
            effects: &["anomaly gate_bypass r1/svc/prod in_progress->deployed"],
            ..Case::default()
        },
        Case {
            name: "four eyes: another person's approval counts (clean)",
            config: FOUR_EYES,
            only: ANOMALIES,
            steps: vec![
                at(t(0), decide("r1", "-", "approved", t(0), "bob"), Accepted),
                at(t(60), deploy_by("alice", t(60)), Accepted),
                tick(t(600), true),
            ],
            keys: &[
                "r1/svc/- approved since=0 open",
                "r1/svc/prod deployed since=60 open",
            ],
            ..Case::default()
        },
        Case {
            name: "four eyes: a self-approval beside another person's: clean",
            config: FOUR_EYES,
            only: ANOMALIES,
            steps: vec![
                at(t(0), decide("r1", "-", "approved", t(0), "bob"), Accepted),
                at(t(5), decide("r1", "-", "approved", t(5), "alice"), Accepted),
                at(t(60), deploy_by("alice", t(60)), Accepted),
                tick(t(600), true),
            ],
            keys: &[
                "r1/svc/- approved since=0 open",
                "r1/svc/prod deployed since=60 open",
            ],
            ..Case::default()
        },
        Case {
            name: "without four eyes a self-approval counts",
            config: GATE,
            only: ANOMALIES,
            steps: vec![
                at(t(0), decide("r1", "-", "approved", t(0), "alice"), Accepted),
                at(t(60), deploy_by("alice", t(60)), Accepted),
                tick(t(600), true),
            ],
            keys: &[
                "r1/svc/- approved since=0 open",
                "r1/svc/prod deployed since=60 open",
            ],
            ..Case::default()
        },
        Case {
            name: "four eyes, no identity map: a Jira accountId and a CI user compare as given \
                   (clean)",
            config: FOUR_EYES,
            only: ANOMALIES,
            steps: vec![
                at(
                    t(0),
                    decide("r1", "-", "approved", t(0), "5b10ac8d82e05b22cc7d4ef5"),
                    Accepted,
                ),
                at(t(60), deploy_by("alice-ci", t(60)), Accepted),
                tick(t(600), true),
            ],
            keys: &[
                "r1/svc/- approved since=0 open",
                "r1/svc/prod deployed since=60 open",
            ],
            ..Case::default()
        },
        Case {
            name: "four eyes with the identity map: the same person in two tools is \
                   self-approved",
            config: FOUR_EYES_MAPPED,
            only: ANOMALIES,
            steps: vec![
                at(
                    t(0),
                    decide("r1", "-", "approved", t(0), "5b10ac8d82e05b22cc7d4ef5"),
                    Accepted,
                ),
                at(t(60), deploy_by("alice-ci", t(60)), Accepted),
                tick(t(600), true),
            ],
            keys: &[
                "r1/svc/- approved since=0 open",
                "r1/svc/prod deployed since=60 open",
            ],
            effects: &["anomaly gate_bypass r1/svc/prod deployed"],
            findings: Some(&[
                "gate_bypass critical r1/svc/prod:deployed@60: prod deploy of r1/svc by \
                 alice-ci without prior approval (self-approved: approved by \
                 5b10ac8d82e05b22cc7d4ef5 (jira) at 2026-09-21T14:13:20.000Z) [approved by \
                 5b10ac8d82e05b22cc7d4ef5]",
            ]),
            ..Case::default()
        },
        Case {
            name: "four eyes with the identity map: an identity is the person only in its tool",
            config: FOUR_EYES_MAPPED,
            only: ANOMALIES,
            steps: vec![
                // `alice-ci` approving in jira is not `ci:alice-ci`
                at(
                    t(0),
                    decide("r1", "-", "approved", t(0), "alice-ci"),
                    Accepted,
                ),
                at(
                    t(60),
                    deploy_by("5b10ac8d82e05b22cc7d4ef5", t(60)),
                    Accepted,
                ),
                tick(t(600), true),
            ],
            keys: &[
                "r1/svc/- approved since=0 open",
                "r1/svc/prod deployed since=60 open",
            ],
            ..Case::default()
        },
    ]);
}

// ------------------------------------------------------- unauthorized_actor

const PERMISSIONS: &str = r#"
[model.roles]
deployers = ["deploy-bot", "argocd"]
[[model.permissions]]
into = ["deployed", "in_progress"]
environments = ["prod"]
allow = ["@deployers"]
[[model.permissions]]
into = ["deployed"]
environments = ["prod"]
allow = ["carol"]
[[model.permissions]]
into = ["rolled_back"]
allow = ["alice"]
"#;

#[test]
fn unauthorized_actor() {
    run_table(vec![
        Case {
            name: "members of a role may (roles expanded)",
            config: PERMISSIONS,
            only: ANOMALIES,
            steps: vec![
                at(t(0), p("r1", "in_progress", t(0)).actor("argocd"), Accepted),
                at(t(60), p("r1", "deployed", t(60)), Accepted),
            ],
            keys: &["r1/svc/prod deployed since=60 open"],
            ..Case::default()
        },
        Case {
            name: "an actor no entry allows may not: first status and transition alike",
            config: PERMISSIONS,
            only: ANOMALIES,
            steps: vec![
                at(t(0), human(p("r1", "deployed", t(0)), "mallory"), Accepted),
                at(t(0), p("r2", "scheduled", t(0)), Accepted),
                at(
                    t(60),
                    human(p("r2", "in_progress", t(60)), "mallory"),
                    Accepted,
                ),
            ],
            keys: &[
                "r1/svc/prod deployed since=0 open",
                "r2/svc/prod in_progress since=60 open",
            ],
            effects: &[
                "anomaly unauthorized_actor r1/svc/prod deployed",
                "anomaly unauthorized_actor r2/svc/prod scheduled->in_progress",
            ],
            findings: Some(&[
                "unauthorized_actor critical r1/svc/prod:deployed@0: mallory (human) moved r1/svc \
                 to deployed in prod but is not allowed to (allowed: argocd, carol, deploy-bot; \
                 via ci)",
                "unauthorized_actor critical r2/svc/prod:in_progress@60: mallory (human) moved \
                 r2/svc to in_progress in prod but is not allowed to (allowed: argocd, \
                 deploy-bot; via ci)",
            ]),
            ..Case::default()
        },
        Case {
            name: "allowed by one of several matching entries is enough, only where it matches",
            config: PERMISSIONS,
            only: ANOMALIES,
            steps: vec![
                at(t(0), human(p("r1", "deployed", t(0)), "carol"), Accepted),
                at(t(0), human(p("r2", "in_progress", t(0)), "carol"), Accepted),
            ],
            keys: &[
                "r1/svc/prod deployed since=0 open",
                "r2/svc/prod in_progress since=0 open",
            ],
            effects: &["anomaly unauthorized_actor r2/svc/prod in_progress"],
            ..Case::default()
        },
        Case {
            name: "environment scoping: staging is not restricted",
            config: PERMISSIONS,
            only: ANOMALIES,
            steps: vec![at(
                t(0),
                human(ev("r1", "svc", "staging", "deployed", t(0)), "mallory"),
                Accepted,
            )],
            keys: &["r1/svc/staging deployed since=0 open"],
            ..Case::default()
        },
        Case {
            name: "an entry without environments applies to every environment",
            config: PERMISSIONS,
            only: ANOMALIES,
            steps: vec![
                at(t(0), ev("r1", "svc", "staging", "deployed", t(0)), Accepted),
                at(
                    t(60),
                    human(ev("r1", "svc", "staging", "rolled_back", t(60)), "mallory"),
                    Accepted,
                ),
                at(t(0), ev("r2", "svc", "dev", "deployed", t(0)), Accepted),
                at(
                    t(60),
                    human(ev("r2", "svc", "dev", "rolled_back", t(60)), "alice"),
                    Accepted,
                ),
            ],
            keys: &[
                "r1/svc/staging rolled_back since=60 finished=terminal@60",
                "r2/svc/dev rolled_back since=60 finished=terminal@60",
            ],
            effects: &["anomaly unauthorized_actor r1/svc/staging deployed->rolled_back"],
            ..Case::default()
        },
        Case {
            name: "re-reporting the current status is not entering it",
            config: PERMISSIONS,
            only: ANOMALIES,
            steps: vec![
                at(t(0), p("r1", "deployed", t(0)), Accepted),
                at(
                    t(60),
                    human(p("r1", "deployed", t(60)), "mallory"),
                    Accepted,
                ),
            ],
            keys: &["r1/svc/prod deployed since=0 open"],
            ..Case::default()
        },
        Case {
            name: "disabled: silent",
            config: r#"
[[model.permissions]]
into = ["deployed"]
allow = ["deploy-bot"]
[anomalies.unauthorized_actor]
enabled = false
"#,
            only: ANOMALIES,
            steps: vec![at(
                t(0),
                human(p("r1", "deployed", t(0)), "mallory"),
                Accepted,
            )],
            keys: &["r1/svc/prod deployed since=0 open"],
            ..Case::default()
        },
        Case {
            name: "severity override",
            config: r#"
[[model.permissions]]
into = ["deployed"]
allow = ["deploy-bot"]
[anomalies.unauthorized_actor]
severity = "alert"
"#,
            only: ANOMALIES,
            steps: vec![at(
                t(0),
                human(p("r1", "deployed", t(0)), "mallory"),
                Accepted,
            )],
            keys: &["r1/svc/prod deployed since=0 open"],
            effects: &["anomaly unauthorized_actor r1/svc/prod deployed"],
            findings: Some(&[
                "unauthorized_actor alert r1/svc/prod:deployed@0: mallory (human) moved r1/svc to \
                 deployed in prod but is not allowed to (allowed: deploy-bot; via ci)",
            ]),
            ..Case::default()
        },
    ]);
}

// ---------------------------------------------------------- status_conflict

#[test]
fn status_conflict() {
    run_table(vec![
        Case {
            name: "automation says complete, a person says failed: a conflict, not an invalid \
                   transition",
            only: ANOMALIES,
            steps: vec![
                at(t(0), p("r1", "in_progress", t(0)), Accepted),
                at(t(60), p("r1", "deployed", t(60)), Accepted),
                at(t(120), p("r1", "complete", t(120)), Accepted),
                at(t(180), human(p("r1", "failed", t(180)), "carol"), Accepted),
            ],
            keys: &["r1/svc/prod failed since=180 open"],
            effects: &["anomaly status_conflict r1/svc/prod complete->failed"],
            findings: Some(&[
                "status_conflict warning r1/svc/prod:failed@180: conflicting reports for r1/svc \
                 in prod: automation reported complete, then 60s later carol (human) reported \
                 failed, leaving a finished status (via ci)",
            ]),
            ..Case::default()
        },
        Case {
            name: "automation says deployed, a person sets in_test (passed before): a conflict",
            only: ANOMALIES,
            steps: vec![
                at(t(0), p("r1", "in_test", t(0)), Accepted),
                at(t(60), p("r1", "deployed", t(60)), Accepted),
                at(t(90), human(p("r1", "in_test", t(90)), "carol"), Accepted),
            ],
            keys: &["r1/svc/prod in_test since=90 open"],
            effects: &["anomaly status_conflict r1/svc/prod deployed->in_test"],
            ..Case::default()
        },
        Case {
            name: "a person approving and then automation deploying is progress",
            only: ANOMALIES,
            steps: vec![
                at(t(0), human(p("r1", "approved", t(0)), "alice"), Accepted),
                at(t(30), p("r1", "in_progress", t(30)), Accepted),
                at(t(60), p("r1", "deployed", t(60)), Accepted),
            ],
            keys: &["r1/svc/prod deployed since=60 open"],
            ..Case::default()
        },
        Case {
            name: "a person marks a deploy failed, automation retries it: an allowed retry",
            only: ANOMALIES,
            steps: vec![
                at(t(0), p("r1", "in_progress", t(0)), Accepted),
                at(t(60), human(p("r1", "failed", t(60)), "carol"), Accepted),
                at(t(90), p("r1", "in_progress", t(90)), Accepted),
            ],
            keys: &["r1/svc/prod in_progress since=90 open"],
            ..Case::default()
        },
        Case {
            name: "the same actor type: a plain invalid transition",
            only: ANOMALIES,
            steps: vec![
                at(t(0), p("r1", "in_test", t(0)), Accepted),
                at(t(60), p("r1", "deployed", t(60)), Accepted),
                at(t(90), p("r1", "in_test", t(90)), Accepted),
            ],
            keys: &["r1/svc/prod in_test since=90 open"],
            effects: &["anomaly invalid_transition r1/svc/prod deployed->in_test"],
            ..Case::default()
        },
        Case {
            name: "outside the window: a plain invalid transition",
            only: ANOMALIES,
            steps: vec![
                at(t(0), p("r1", "in_test", t(0)), Accepted),
                at(t(60), p("r1", "deployed", t(60)), Accepted),
                at(t(361), human(p("r1", "in_test", t(361)), "carol"), Accepted),
            ],
            keys: &["r1/svc/prod in_test since=361 open"],
            effects: &["anomaly invalid_transition r1/svc/prod deployed->in_test"],
            ..Case::default()
        },
        Case {
            name: "back to a status the key never passed: invalid_transition, not a conflict",
            only: ANOMALIES,
            steps: vec![
                at(t(0), p("r1", "deployed", t(0)), Accepted),
                at(t(60), human(p("r1", "in_test", t(60)), "carol"), Accepted),
            ],
            keys: &["r1/svc/prod in_test since=60 open"],
            effects: &["anomaly invalid_transition r1/svc/prod deployed->in_test"],
            ..Case::default()
        },
        Case {
            name: "MTTSR conflict: from the contradicting report to the next allowed transition",
            only: &["anomaly", "resolution"],
            steps: vec![
                at(t(0), p("r1", "in_test", t(0)), Accepted),
                at(t(60), p("r1", "deployed", t(60)), Accepted),
                at(t(90), human(p("r1", "in_test", t(90)), "carol"), Accepted),
                at(t(300), p("r1", "deployed", t(300)), Accepted),
                at(t(400), p("r1", "complete", t(400)), Accepted),
            ],
            keys: &["r1/svc/prod complete since=400 finished=terminal@400"],
            effects: &[
                "anomaly status_conflict r1/svc/prod deployed->in_test",
                "resolution r1/svc/prod in_test conflict 210s",
            ],
            ..Case::default()
        },
        Case {
            name: "disabled: the invalid transition is reported instead",
            config: "[anomalies.status_conflict]\nenabled = false\n",
            only: ANOMALIES,
            steps: vec![
                at(t(0), p("r1", "complete", t(0)), Accepted),
                at(t(60), human(p("r1", "failed", t(60)), "carol"), Accepted),
            ],
            keys: &["r1/svc/prod failed since=60 open"],
            effects: &["anomaly invalid_transition r1/svc/prod complete->failed"],
            ..Case::default()
        },
        Case {
            name: "window and severity from the config",
            config: "[anomalies.status_conflict]\nwindow = \"1h\"\nseverity = \"error\"\n",
            only: ANOMALIES,
            steps: vec![
                at(t(0), p("r1", "complete", t(0)), Accepted),
                at(
                    t(3000),
                    human(p("r1", "failed", t(3000)), "carol"),
                    Accepted,
                ),
            ],
            keys: &["r1/svc/prod failed since=3000 open"],
            effects: &["anomaly status_conflict r1/svc/prod complete->failed"],
            findings: Some(&[
                "status_conflict error r1/svc/prod:failed@3000: conflicting reports for r1/svc in \
                 prod: automation reported complete, then 3000s later carol (human) reported \
                 failed, leaving a finished status (via ci)",
            ]),
            ..Case::default()
        },
    ]);
}

// ----------------------------------------------------------------- flapping

/// `scheduled` at `start`, then `n` cycles rescheduled -> scheduled, one
/// every `every` seconds (the pair half a cycle apart).
fn reschedules(release: &str, start: i64, n: i64, every: i64) -> Vec<Step> {
    let mut steps = vec![at(t(start), p(release, "scheduled", t(start)), Accepted)];
    for i in 1..=n {
        let at_s = start + i * every;
        steps.push(at(t(at_s), p(release, "rescheduled", t(at_s)), Accepted));
        let back = at_s + every / 2;
        steps.push(at(t(back), p(release, "scheduled", t(back)), Accepted));
    }
    steps
}

#[test]
fn flapping() {
    run_table(vec![
        Case {
            name: "five re-schedules within the window are fine",
            only: ANOMALIES,
            steps: reschedules("r1", 0, 5, 120),
            keys: &["r1/svc/prod scheduled since=660 open"],
            ..Case::default()
        },
        Case {
            name: "the sixth fires (and the sixth return to scheduled); the seventh does not again",
            only: ANOMALIES,
            steps: reschedules("r1", 0, 7, 120),
            keys: &["r1/svc/prod scheduled since=900 open"],
            effects: &[
                "anomaly flapping r1/svc/prod scheduled->rescheduled",
                "anomaly flapping r1/svc/prod rescheduled->scheduled",
            ],
            findings: Some(&[
                "flapping notice r1/svc/prod:rescheduled@720: r1/svc in prod entered Re-Scheduled \
                 more than 5 times within 1h (flapping; latest by deploy-bot via ci)",
                "flapping notice r1/svc/prod:scheduled@780: r1/svc in prod entered Scheduled more \
                 than 5 times within 1h (flapping; latest by deploy-bot via ci)",
            ]),
            ..Case::default()
        },
        Case {
            name: "six re-schedules spread over more than the window are fine",
            only: ANOMALIES,
            steps: reschedules("r1", 0, 6, 15 * M),
            keys: &["r1/svc/prod scheduled since=5850 open"],
            ..Case::default()
        },
        Case {
            name: "once the count is back within the limit, a new episode fires again",
            only: ANOMALIES,
            steps: {
                let mut s = reschedules("r1", 0, 6, 120);
                s.extend(reschedules("r1", 2 * H, 6, 120).into_iter().skip(1));
                s
            },
            keys: &["r1/svc/prod scheduled since=7980 open"],
            effects: &[
                "anomaly flapping r1/svc/prod scheduled->rescheduled",
                "anomaly flapping r1/svc/prod rescheduled->scheduled",
                "anomaly flapping r1/svc/prod scheduled->rescheduled",
                "anomaly flapping r1/svc/prod rescheduled->scheduled",
            ],
            ..Case::default()
        },
        Case {
            name: "disabled: silent",
            config: "[anomalies.flapping]\nenabled = false\n",
            only: ANOMALIES,
            steps: reschedules("r1", 0, 7, 120),
            keys: &["r1/svc/prod scheduled since=900 open"],
            ..Case::default()
        },
        Case {
            name: "max_transitions, window and severity from the config",
            config: "[anomalies.flapping]\nmax_transitions = 2\nwindow = \"10m\"\n\
                     severity = \"warning\"\n",
            only: ANOMALIES,
            steps: reschedules("r1", 0, 3, 120),
            keys: &["r1/svc/prod scheduled since=420 open"],
            effects: &[
                "anomaly flapping r1/svc/prod scheduled->rescheduled",
                "anomaly flapping r1/svc/prod rescheduled->scheduled",
            ],
            findings: Some(&[
                "flapping warning r1/svc/prod:rescheduled@360: r1/svc in prod entered \
                 Re-Scheduled more than 2 times within 10m (flapping; latest by deploy-bot via ci)",
                "flapping warning r1/svc/prod:scheduled@420: r1/svc in prod entered Scheduled \
                 more than 2 times within 10m (flapping; latest by deploy-bot via ci)",
            ]),
            ..Case::default()
        },
    ]);
}

// ----------------------------------------------------------------- id_reuse

#[test]
fn id_reuse() {
    run_table(vec![
        Case {
            name: "a rolled back key reported again with another version: id_reuse instead of \
                   invalid_transition",
            only: ANOMALIES,
            steps: vec![
                at(t(0), p("r1", "in_progress", t(0)).version("1.0"), Accepted),
                at(t(60), p("r1", "rolled_back", t(60)), Accepted),
                at(
                    t(600),
                    p("r1", "in_progress", t(600)).version("1.1"),
                    Accepted,
                ),
            ],
            keys: &["r1/svc/prod in_progress since=600 open"],
            effects: &["anomaly id_reuse r1/svc/prod rolled_back->in_progress"],
            findings: Some(&[
                "id_reuse error r1/svc/prod:in_progress@600: release id reused: r1/svc in prod \
                 finished as rolled_back with version 1.0, now reported in_progress with version \
                 1.1 by deploy-bot via ci",
            ]),
            ..Case::default()
        },
        Case {
            name: "a cancelled key deployed with another version",
            only: ANOMALIES,
            steps: vec![
                at(t(0), p("r1", "scheduled", t(0)).version("1.0"), Accepted),
                at(t(60), p("r1", "cancelled", t(60)).version("1.0"), Accepted),
                at(t(600), p("r1", "deployed", t(600)).version("2.0"), Accepted),
            ],
            keys: &["r1/svc/prod deployed since=600 open"],
            effects: &["anomaly id_reuse r1/svc/prod cancelled->deployed"],
            ..Case::default()
        },
        Case {
            name: "the same version: an invalid transition out of a terminal status",
            only: ANOMALIES,
            steps: vec![
                at(t(0), p("r1", "in_progress", t(0)).version("1.0"), Accepted),
                at(t(60), p("r1", "rolled_back", t(60)), Accepted),
                at(
                    t(600),
                    p("r1", "in_progress", t(600)).version("1.0"),
                    Accepted,
                ),
            ],
            keys: &["r1/svc/prod in_progress since=600 open"],
            effects: &["anomaly invalid_transition r1/svc/prod rolled_back->in_progress"],
            ..Case::default()
        },
        Case {
            name: "a new release id after a rollback is not id_reuse",
            only: ANOMALIES,
            steps: vec![
                at(t(0), p("r1", "in_progress", t(0)).version("1.0"), Accepted),
                at(t(60), p("r1", "rolled_back", t(60)), Accepted),
                at(
                    t(600),
                    p("r2", "in_progress", t(600)).version("1.1"),
                    Accepted,
                ),
            ],
            keys: &[
                "r1/svc/prod rolled_back since=60 finished=terminal@60",
                "r2/svc/prod in_progress since=600 open",
            ],
            ..Case::default()
        },
        Case {
            name: "a key that finished complete is not covered: invalid transition",
            only: ANOMALIES,
            steps: vec![
                at(t(0), p("r1", "deployed", t(0)).version("1.0"), Accepted),
                at(t(60), p("r1", "complete", t(60)), Accepted),
                at(
                    t(600),
                    p("r1", "in_progress", t(600)).version("1.1"),
                    Accepted,
                ),
            ],
            keys: &["r1/svc/prod in_progress since=600 open"],
            effects: &["anomaly invalid_transition r1/svc/prod complete->in_progress"],
            ..Case::default()
        },
        Case {
            name: "disabled: the invalid transition is reported instead",
            config: "[anomalies.id_reuse]\nenabled = false\n",
            only: ANOMALIES,
            steps: vec![
                at(t(0), p("r1", "in_progress", t(0)).version("1.0"), Accepted),
                at(t(60), p("r1", "rolled_back", t(60)), Accepted),
                at(
                    t(600),
                    p("r1", "in_progress", t(600)).version("1.1"),
                    Accepted,
                ),
            ],
            keys: &["r1/svc/prod in_progress since=600 open"],
            effects: &["anomaly invalid_transition r1/svc/prod rolled_back->in_progress"],
            ..Case::default()
        },
    ]);
}

// ------------------------------------------------------------ change_freeze

const FREEZES: &str = r#"
[[anomalies.change_freeze.windows]]
start = "2026-12-20T00:00:00Z"
end = "2027-01-04T08:00:00Z"
environments = ["prod"]
[[anomalies.change_freeze.windows]]
days = ["fri", "sat", "sun"]
from = "16:00"
to = "08:00"
timezone = "Europe/Berlin"
environments = ["prod"]
"#;

fn deploy(release: &str, at: &str) -> Step {
    now_at(p(release, "deployed", utc(at)))
}

#[test]
fn change_freeze() {
    run_table(vec![
        Case {
            name: "inside an absolute window",
            config: FREEZES,
            only: ANOMALIES,
            steps: vec![deploy("r1", "2026-12-24T10:00:00Z")],
            keys: &["r1/svc/prod deployed since=8106400 open"],
            effects: &["anomaly change_freeze r1/svc/prod deployed"],
            findings: Some(&[
                "change_freeze error r1/svc/prod:deployed@8106400: prod deploy of r1/svc by \
                 deploy-bot during a change freeze (2026-12-20T00:00:00Z to 2027-01-04T08:00:00Z; \
                 via ci)",
            ]),
            ..Case::default()
        },
        Case {
            name: "an absolute window: start inclusive, end exclusive",
            config: r#"
[[anomalies.change_freeze.windows]]
start = "2026-12-20T00:00:00Z"
end = "2027-01-04T08:00:00Z"
"#,
            only: ANOMALIES,
            steps: vec![
                now_at(ev("r0", "a", PROD, "deployed", utc("2026-12-19T23:59:59Z"))),
                now_at(ev("r1", "b", PROD, "deployed", utc("2026-12-20T00:00:00Z"))),
                now_at(ev("r2", "c", PROD, "deployed", utc("2027-01-04T07:59:59Z"))),
                now_at(ev("r3", "d", PROD, "deployed", utc("2027-01-04T08:00:00Z"))),
            ],
            keys: &[
                "r0/a/prod deployed since=7724799 open",
                "r1/b/prod deployed since=7724800 open",
                "r2/c/prod deployed since=9049599 open",
                "r3/d/prod deployed since=9049600 open",
            ],
            effects: &[
                "anomaly change_freeze r1/b/prod deployed",
                "anomaly change_freeze r2/c/prod deployed",
            ],
            ..Case::default()
        },
        Case {
            name: "an environment the window does not list: silent",
            config: FREEZES,
            only: ANOMALIES,
            steps: vec![now_at(ev(
                "r1",
                "svc",
                "staging",
                "deployed",
                utc("2026-12-24T10:00:00Z"),
            ))],
            keys: &["r1/svc/staging deployed since=8106400 open"],
            ..Case::default()
        },
        Case {
            name: "weekly: Friday 16:00 Berlin (CEST, 14:00Z) starts it, Monday 08:00 ends it",
            config: FREEZES,
            only: ANOMALIES,
            steps: vec![
                now_at(ev("r1", "a", PROD, "deployed", utc("2026-10-02T13:59:59Z"))),
                now_at(ev(
                    "r1",
                    "b",
                    PROD,
                    "in_progress",
                    utc("2026-10-02T14:00:00Z"),
                )),
                now_at(ev("r1", "c", PROD, "deployed", utc("2026-10-05T05:59:59Z"))),
                now_at(ev("r1", "d", PROD, "deployed", utc("2026-10-05T06:00:00Z"))),
            ],
            keys: &[
                "r1/a/prod deployed since=949599 open",
                "r1/b/prod in_progress since=949600 open",
                "r1/c/prod deployed since=1179999 open",
                "r1/d/prod deployed since=1180000 open",
            ],
            effects: &[
                "anomaly change_freeze r1/b/prod in_progress",
                "anomaly change_freeze r1/c/prod deployed",
            ],
            findings: Some(&[
                "change_freeze error r1/b/prod:in_progress@949600: prod deployment started for \
                 r1/b by deploy-bot during a change freeze (fri,sat,sun 16:00-08:00 \
                 Europe/Berlin; via ci)",
                "change_freeze error r1/c/prod:deployed@1179999: prod deploy of r1/c by \
                 deploy-bot during a change freeze (fri,sat,sun 16:00-08:00 Europe/Berlin; via \
                 ci)",
            ]),
            ..Case::default()
        },
        Case {
            name: "a DST week (autumn): Friday 16:00 CEST to Monday 08:00 CET, i.e. 07:00Z",
            config: FREEZES,
            only: ANOMALIES,
            steps: vec![
                now_at(ev("r1", "a", PROD, "deployed", utc("2026-10-23T13:59:59Z"))),
                now_at(ev("r1", "b", PROD, "deployed", utc("2026-10-23T14:00:00Z"))),
                now_at(ev("r1", "c", PROD, "deployed", utc("2026-10-26T06:59:59Z"))),
                now_at(ev("r1", "d", PROD, "deployed", utc("2026-10-26T07:00:00Z"))),
            ],
            keys: &[
                "r1/a/prod deployed since=2763999 open",
                "r1/b/prod deployed since=2764000 open",
                "r1/c/prod deployed since=2997999 open",
                "r1/d/prod deployed since=2998000 open",
            ],
            effects: &[
                "anomaly change_freeze r1/b/prod deployed",
                "anomaly change_freeze r1/c/prod deployed",
            ],
            ..Case::default()
        },
        Case {
            name: "a DST week (spring): Friday 16:00 CET (15:00Z) to Monday 08:00 CEST (06:00Z)",
            config: FREEZES,
            only: ANOMALIES,
            steps: vec![
                now_at(ev("r1", "a", PROD, "deployed", utc("2026-03-27T14:59:59Z"))),
                now_at(ev("r1", "b", PROD, "deployed", utc("2026-03-27T15:00:00Z"))),
                now_at(ev("r1", "c", PROD, "deployed", utc("2026-03-30T05:59:59Z"))),
                now_at(ev("r1", "d", PROD, "deployed", utc("2026-03-30T06:00:00Z"))),
            ],
            keys: &[
                "r1/a/prod deployed since=-15376401 open",
                "r1/b/prod deployed since=-15376400 open",
                "r1/c/prod deployed since=-15149601 open",
                "r1/d/prod deployed since=-15149600 open",
            ],
            effects: &[
                "anomaly change_freeze r1/b/prod deployed",
                "anomaly change_freeze r1/c/prod deployed",
            ],
            ..Case::default()
        },
        Case {
            name: "one finding per deployment run; a re-report is not entering",
            config: FREEZES,
            only: ANOMALIES,
            steps: vec![
                // started before the freeze, landed inside: reported on deployed
                now_at(p("r1", "in_progress", utc("2026-10-02T13:50:00Z"))),
                now_at(p("r1", "deployed", utc("2026-10-02T14:10:00Z"))),
                // started and landed inside: reported once, on in_progress
                now_at(p("r2", "in_progress", utc("2026-10-03T10:00:00Z"))),
                now_at(p("r2", "paused", utc("2026-10-03T10:05:00Z"))),
                now_at(p("r2", "in_progress", utc("2026-10-03T10:10:00Z"))),
                now_at(p("r2", "deployed", utc("2026-10-03T10:20:00Z"))),
                // deployed before, re-reported inside
                now_at(ev("r3", "x", PROD, "deployed", utc("2026-10-02T12:00:00Z"))),
                now_at(ev("r3", "x", PROD, "deployed", utc("2026-10-03T12:00:00Z"))),
                // a new run inside after a failure: reported again
                now_at(p("r2", "failed", utc("2026-10-03T11:00:00Z"))),
                now_at(p("r2", "in_progress", utc("2026-10-03T11:10:00Z"))),
            ],
            keys: &[
                "r1/svc/prod deployed since=950200 finished=superseded@1022800",
                "r2/svc/prod in_progress since=1025800 open",
                "r3/x/prod deployed since=942400 open",
            ],
            effects: &[
                "anomaly change_freeze r1/svc/prod in_progress->deployed",
                "anomaly change_freeze r2/svc/prod in_progress",
                "anomaly change_freeze r2/svc/prod failed->in_progress",
            ],
            ..Case::default()
        },
        Case {
            name: "a weekend: sat, sun from 00:00 to 00:00 (UTC by default)",
            config: r#"
[[anomalies.change_freeze.windows]]
days = ["sat", "sun"]
from = "00:00"
to = "00:00"
"#,
            only: ANOMALIES,
            steps: vec![
                now_at(ev(
                    "r1",
                    "a",
                    "dev",
                    "deployed",
                    utc("2026-10-02T23:59:59Z"),
                )),
                now_at(ev(
                    "r1",
                    "b",
                    "dev",
                    "deployed",
                    utc("2026-10-03T00:00:00Z"),
                )),
                now_at(ev(
                    "r1",
                    "c",
                    "dev",
                    "deployed",
                    utc("2026-10-04T23:59:59Z"),
                )),
                now_at(ev(
                    "r1",
                    "d",
                    "dev",
                    "deployed",
                    utc("2026-10-05T00:00:00Z"),
                )),
            ],
            keys: &[
                "r1/a/dev deployed since=985599 open",
                "r1/b/dev deployed since=985600 open",
                "r1/c/dev deployed since=1158399 open",
                "r1/d/dev deployed since=1158400 open",
            ],
            effects: &[
                "anomaly change_freeze r1/b/dev deployed",
                "anomaly change_freeze r1/c/dev deployed",
            ],
            ..Case::default()
        },
        Case {
            name: "disabled: silent",
            config: r#"
[anomalies.change_freeze]
enabled = false
[[anomalies.change_freeze.windows]]
days = ["sat", "sun"]
from = "00:00"
to = "00:00"
"#,
            only: ANOMALIES,
            steps: vec![deploy("r1", "2026-10-03T10:00:00Z")],
            keys: &["r1/svc/prod deployed since=1021600 open"],
            ..Case::default()
        },
        Case {
            name: "severity override",
            config: r#"
[anomalies.change_freeze]
severity = "critical"
[[anomalies.change_freeze.windows]]
days = ["sat", "sun"]
from = "00:00"
to = "00:00"
"#,
            only: ANOMALIES,
            steps: vec![deploy("r1", "2026-10-03T10:00:00Z")],
            keys: &["r1/svc/prod deployed since=1021600 open"],
            effects: &["anomaly change_freeze r1/svc/prod deployed"],
            findings: Some(&[
                "change_freeze critical r1/svc/prod:deployed@1021600: prod deploy of r1/svc by \
                 deploy-bot during a change freeze (sat,sun 00:00-00:00 UTC; via ci)",
            ]),
            ..Case::default()
        },
    ]);
}

// ---------------------------------------------------- the built-in rules

#[test]
fn built_in_rules_can_be_disabled_or_retuned() {
    run_table(vec![
        Case {
            name: "invalid_transition disabled: silent",
            config: "[anomalies.invalid_transition]\nenabled = false\n",
            only: ANOMALIES,
            steps: vec![
                at(t(0), p("r1", "deployed", t(0)), Accepted),
                at(t(60), p("r1", "in_test", t(60)), Accepted),
            ],
            keys: &["r1/svc/prod in_test since=60 open"],
            ..Case::default()
        },
        Case {
            name: "stuck disabled: counted, not reported",
            config: "[anomalies.stuck]\nenabled = false\n",
            only: &["anomaly", "stuck_counts"],
            steps: vec![
                at(t(0), p("r1", "in_progress", t(0)), Accepted),
                tick(t(2 * H), true),
            ],
            keys: &["r1/svc/prod in_progress since=0 open"],
            effects: &["stuck_counts prod/in_progress=1"],
            ..Case::default()
        },
        Case {
            name: "clock_skew with a severity override",
            config: "[anomalies.clock_skew]\nseverity = \"warning\"\n",
            only: ANOMALIES,
            steps: vec![at(t(0), p("r1", "in_progress", t(400)), Accepted)],
            keys: &["r1/svc/prod in_progress since=0 open"],
            effects: &["anomaly clock_skew r1/svc/prod in_progress"],
            findings: Some(&[
                "clock_skew warning r1/svc/prod:in_progress@400: event r1/svc/prod:in_progress@400 \
                 for r1/svc in prod from source ci is dated 2026-09-21T14:20:00.000Z, 400s ahead \
                 of this agent's clock",
            ]),
            ..Case::default()
        },
    ]);
}

// ----------------------------------------------------------- skipped_stage

const PROMO: &str = r#"
[model.promotion]
order = ["staging", "prod"]
window = "1h"
"#;

/// Three stages.
const PROMO3: &str = r#"
[model.promotion]
order = ["dev", "staging", "prod"]
window = "1h"
"#;

const PROMO_COMMIT: &str = r#"
[model.promotion]
order = ["staging", "prod"]
window = "1h"
match = "commit"
"#;

const PROMO_RELEASE: &str = r#"
[model.promotion]
order = ["staging", "prod"]
window = "1h"
match = "release"
"#;

/// A deployment of `release` to `env` at `secs`, carrying `version`.
fn dv(release: &str, env: &str, status: &str, secs: i64, version: &str) -> Step {
    at(
        t(secs),
        ev(release, "svc", env, status, t(secs)).version(version),
        Accepted,
    )
}

#[test]
fn skipped_stage() {
    run_table(vec![
        Case {
            name: "a clean promotion by version (release ids differ per environment): nothing",
            config: PROMO3,
            only: ANOMALIES,
            steps: vec![
                dv("b-101", "dev", "deployed", 0, "1.4"),
                dv("b-102", "staging", "deployed", 60, "1.4"),
                dv("sync-7", "prod", "in_progress", 120, "1.4"),
                dv("sync-7", "prod", "deployed", 180, "1.4"),
            ],
            keys: &[
                "b-101/svc/dev deployed since=0 open",
                "b-102/svc/staging deployed since=60 open",
                "sync-7/svc/prod deployed since=180 open",
            ],
            ..Case::default()
        },
        Case {
            name: "production got a version staging never had: skipped_stage, once per run",
            config: PROMO,
            only: ANOMALIES,
            steps: vec![
                dv("r1", "staging", "deployed", 0, "1.3"),
                dv("r2", "prod", "in_progress", 60, "1.4"),
                dv("r2", "prod", "paused", 90, "1.4"),
                dv("r2", "prod", "in_progress", 100, "1.4"),
                dv("r2", "prod", "deployed", 120, "1.4"),
            ],
            keys: &[
                "r1/svc/staging deployed since=0 open",
                "r2/svc/prod deployed since=120 open",
            ],
            effects: &["anomaly skipped_stage r2/svc/prod in_progress"],
            findings: Some(&[
                "skipped_stage warning r2/svc/prod:in_progress@60: prod deployment started for \
                 r2/svc by deploy-bot skipped the staging stage: staging had no deployment of \
                 version 1.4 in the 1h before",
            ]),
            ..Case::default()
        },
        Case {
            name: "the version a key carried from an earlier report is the one compared",
            config: PROMO,
            only: ANOMALIES,
            steps: vec![
                dv("r1", "staging", "in_progress", 0, "1.4"),
                at(
                    t(30),
                    ev("r1", "svc", "staging", "deployed", t(30)),
                    Accepted,
                ),
                at(
                    t(40),
                    ev("r1", "svc", "staging", "complete", t(40)),
                    Accepted,
                ),
                dv("r1", "prod", "scheduled", 50, "1.4"),
                at(t(60), ev("r1", "svc", "prod", "deployed", t(60)), Accepted),
            ],
            keys: &[
                "r1/svc/staging complete since=40 finished=terminal@40",
                "r1/svc/prod deployed since=60 open",
            ],
            ..Case::default()
        },
        Case {
            name: "the previous stage's deployment older than the window does not count",
            config: PROMO,
            only: ANOMALIES,
            steps: vec![
                dv("r1", "staging", "deployed", 0, "1.4"),
                dv("r1", "prod", "deployed", 2 * H, "1.4"),
            ],
            keys: &[
                "r1/svc/staging deployed since=0 open",
                "r1/svc/prod deployed since=7200 open",
            ],
            effects: &["anomaly skipped_stage r1/svc/prod deployed"],
            ..Case::default()
        },
        Case {
            name: "the previous stage at another site does not count; the first stage is never judged",
            config: PROMO,
            only: ANOMALIES,
            steps: vec![
                at(
                    t(0),
                    ev("r1", "svc", "staging", "deployed", t(0))
                        .version("1.4")
                        .site("zurich"),
                    Accepted,
                ),
                at(
                    t(60),
                    ev("r1", "svc", "prod", "deployed", t(60))
                        .version("1.4")
                        .site("oslo"),
                    Accepted,
                ),
                dv("r1", "qa", "deployed", 70, "1.4"),
            ],
            keys: &[
                "r1/svc/staging@zurich deployed since=0 open",
                "r1/svc/prod@oslo deployed since=60 open",
                "r1/svc/qa deployed since=70 open",
            ],
            effects: &["anomaly skipped_stage r1/svc/prod@oslo deployed"],
            ..Case::default()
        },
        Case {
            name: "with three stages, staging is judged against dev",
            config: PROMO3,
            only: ANOMALIES,
            steps: vec![
                dv("r1", "dev", "deployed", 0, "1.3"),
                dv("r2", "staging", "deployed", 60, "1.4"),
            ],
            keys: &[
                "r1/svc/dev deployed since=0 open",
                "r2/svc/staging deployed since=60 open",
            ],
            effects: &["anomaly skipped_stage r2/svc/staging deployed"],
            ..Case::default()
        },
        Case {
            name: "a deployment that carries no version cannot be judged: nothing",
            config: PROMO,
            only: ANOMALIES,
            steps: vec![at(t(0), p("r1", "deployed", t(0)), Accepted)],
            keys: &["r1/svc/prod deployed since=0 open"],
            ..Case::default()
        },
        Case {
            name: "matched by commit: the same commit is clean, another one skipped",
            config: PROMO_COMMIT,
            only: ANOMALIES,
            steps: vec![
                at(
                    t(0),
                    ev("b-1", "svc", "staging", "deployed", t(0)).commit("abc123"),
                    Accepted,
                ),
                at(
                    t(60),
                    ev("s-1", "svc", "prod", "deployed", t(60)).commit("abc123"),
                    Accepted,
                ),
                at(
                    t(120),
                    ev("s-2", "svc", "prod", "deployed", t(120))
                        .commit("def456")
                        .version("1.4"),
                    Accepted,
                ),
            ],
            keys: &[
                "b-1/svc/staging deployed since=0 open",
                "s-1/svc/prod deployed since=60 finished=superseded@120",
                "s-2/svc/prod deployed since=120 open",
            ],
            effects: &["anomaly skipped_stage s-2/svc/prod deployed"],
            findings: Some(&[
                "skipped_stage warning s-2/svc/prod:deployed@120: prod deploy of s-2/svc by \
                 deploy-bot skipped the staging stage: staging had no deployment of commit \
                 def456 in the 1h before",
            ]),
            ..Case::default()
        },
        Case {
            name: "matched by release: the same release id is clean, another one skipped",
            config: PROMO_RELEASE,
            only: ANOMALIES,
            steps: vec![
                at(t(0), ev("r1", "svc", "staging", "deployed", t(0)), Accepted),
                at(t(60), ev("r1", "svc", "prod", "deployed", t(60)), Accepted),
                at(
                    t(120),
                    ev("r2", "svc", "prod", "in_progress", t(120)),
                    Accepted,
                ),
            ],
            keys: &[
                "r1/svc/staging deployed since=0 open",
                "r1/svc/prod deployed since=60 open",
                "r2/svc/prod in_progress since=120 open",
            ],
            effects: &["anomaly skipped_stage r2/svc/prod in_progress"],
            ..Case::default()
        },
        Case {
            name: "the emergency path excuses the skip: emergency_change, not skipped_stage",
            config: PROMO,
            only: ANOMALIES,
            steps: vec![at(
                t(60),
                ev("r1", "svc", "prod", "deployed", t(60))
                    .version("1.4.1")
                    .emergency()
                    .reason("INC-42 card payments down"),
                Accepted,
            )],
            keys: &["r1/svc/prod deployed since=60 open"],
            effects: &["anomaly emergency_change r1/svc/prod deployed"],
            findings: Some(&[
                "emergency_change notice r1/svc/prod:deployed@60: emergency prod deploy of r1/svc \
                 by deploy-bot: stage skipped on the emergency path (staging had no deployment \
                 of version 1.4.1 in the 1h before); reason: INC-42 card payments down",
            ]),
            ..Case::default()
        },
        Case {
            name: "a new run is judged again; a staging deploy dated after production's does not count",
            config: PROMO,
            only: ANOMALIES,
            steps: vec![
                dv("r1", "prod", "deployed", 60, "1.4"),
                dv("r1", "staging", "deployed", 90, "1.4"),
                dv("r1", "prod", "failed", 100, "1.4"),
                dv("r1", "prod", "in_progress", 120, "1.4"),
            ],
            keys: &[
                "r1/svc/prod in_progress since=120 open",
                "r1/svc/staging deployed since=90 open",
            ],
            effects: &["anomaly skipped_stage r1/svc/prod deployed"],
            ..Case::default()
        },
        Case {
            name: "skipped_stage disabled: silent",
            config: "[model.promotion]\norder = [\"staging\", \"prod\"]\n\
                     [anomalies.skipped_stage]\nenabled = false\n",
            only: ANOMALIES,
            steps: vec![dv("r1", "prod", "deployed", 60, "1.4")],
            keys: &["r1/svc/prod deployed since=60 open"],
            ..Case::default()
        },
    ]);
}

#[test]
fn a_rollup_partly_complete_past_stuck_after_is_stuck_once() {
    const ROLLUPS: &str = "[rollups]\nstuck_after = \"1h\"\n\
        [rollups.environments.prod]\nservices = [\"svc\"]\nsites = [\"a\", \"b\"]\n";
    run_table(vec![
        Case {
            name: "one site complete, the other never reported: stuck once, after stuck_after",
            config: ROLLUPS,
            only: ANOMALIES,
            steps: vec![
                at(t(0), p("r1", "complete", t(0)).site("a"), Accepted),
                tick(t(H - 10), true),
                tick(t(H + 10), true),
                tick(t(H + 20), true),
            ],
            keys: &["r1/svc/prod@a complete since=0 finished=terminal@0"],
            effects: &["anomaly stuck r1/-/prod missing"],
            findings: Some(&[
                "stuck warning : rollup of r1 in prod partly complete for more than 3600s: 1 of \
                 2 targets complete; waiting for svc@b missing",
            ]),
            ..Case::default()
        },
        Case {
            name: "every target complete in time: nothing",
            config: ROLLUPS,
            only: ANOMALIES,
            steps: vec![
                at(t(0), p("r1", "complete", t(0)).site("a"), Accepted),
                at(t(60), p("r1", "complete", t(60)).site("b"), Accepted),
                tick(t(2 * H), true),
            ],
            keys: &[
                "r1/svc/prod@a complete since=0 finished=terminal@0",
                "r1/svc/prod@b complete since=60 finished=terminal@60",
            ],
            ..Case::default()
        },
    ]);
}

#[test]
fn stuck_after_per_environment() {
    run_table(vec![Case {
        name: "prod's in_progress threshold is 30m, staging keeps the state's 1h",
        config: "[model.environments.prod]\nstuck_after = { in_progress = \"30m\" }\n",
        only: &["anomaly", "stuck_counts"],
        steps: vec![
            at(t(0), p("r1", "in_progress", t(0)), Accepted),
            at(
                t(0),
                ev("r1", "svc", "staging", "in_progress", t(0)),
                Accepted,
            ),
            tick(t(40 * 60), true),
        ],
        keys: &[
            "r1/svc/prod in_progress since=0 open",
            "r1/svc/staging in_progress since=0 open",
        ],
        effects: &[
            "anomaly stuck r1/svc/prod in_progress->in_progress",
            "stuck_counts prod/in_progress=1",
        ],
        ..Case::default()
    }]);
}
