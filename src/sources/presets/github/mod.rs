//! GitHub: `deployment`, `deployment_status`, `workflow_run`,
//! `workflow_job`, `deployment_review` and `deployment_protection_rule`
//! webhooks (the event type is the `X-GitHub-Event` header; without it, the
//! body's shape decides). Other events (push, ping...) are not status
//! changes: `unmapped`. [`poll`] reads the same objects from the REST API.
//!
//! A `deployment_review` is a decision for the gate's ledger: `approved`
//! or `rejected` by the reviewer (`approver`), for the run's head commit
//! (the release of its `workflow_run`/`workflow_job` events) in the
//! reviewed environment; `requested` is no decision (`unmapped`). A
//! `deployment_protection_rule` request holds the deployment for a custom
//! protection rule: its key is `paused`.

pub mod poll;

use serde_json::Value;

use super::registry::{AuthScheme, Tool};
use super::{Input, Preset, Rec, s, time_at};
use crate::sources::fields::{Field, RawFields};

pub const PRESET: Preset = Preset {
    name: "github",
    extract,
    vocabulary: &[
        // deployment_status.state; `inactive` (superseded by a newer
        // deployment) is deliberately absent: not a failure, and the tracker
        // finishes superseded keys itself.
        ("pending", "scheduled"),
        ("queued", "scheduled"),
        ("in_progress", "in_progress"),
        ("success", "deployed"),
        ("failure", "failed"),
        ("error", "failed"),
        // deployment created
        ("created", "scheduled"),
        // workflow_run / workflow_job status, then conclusion when completed
        ("requested", "scheduled"),
        ("waiting", "paused"),
        ("action_required", "paused"),
        ("timed_out", "failed"),
        ("startup_failure", "failed"),
        ("cancelled", "cancelled"),
        // deployment_review (decisions for the gate's ledger)
        ("review_approved", "approved"),
        ("review_rejected", "rejected"),
        // deployment_protection_rule: waiting for a custom rule
        ("protection_rule_requested", "paused"),
    ],
    fallbacks: &[("environment", "ci")],
};

/// This tool's entry in the registry ([`super::TOOLS`]).
pub const TOOL: Tool = Tool {
    preset: &PRESET,
    auth: AuthScheme::HubSignature256,
    event_header: Some("x-github-event"),
    delivery_header: Some("x-github-delivery"),
    environment_always: true,
    poll: Some(poll::poll),
    fixtures: Some("github"),
};

fn kind(input: &Input<'_>) -> &'static str {
    let b = input.body;
    match input.event {
        Some("deployment_status") => "deployment_status",
        Some("deployment") => "deployment",
        Some("workflow_run") => "workflow_run",
        Some("workflow_job") => "workflow_job",
        Some("deployment_review") => "deployment_review",
        Some("deployment_protection_rule") => "deployment_protection_rule",
        Some(_) => "",
        None if b.get("deployment_callback_url").is_some() => "deployment_protection_rule",
        None if b.get("workflow_job_runs").is_some() || b.get("reviewers").is_some() => {
            "deployment_review"
        }
        None if b.get("deployment_status").is_some() => "deployment_status",
        None if b.get("deployment").is_some() => "deployment",
        None if b.get("workflow_job").is_some() => "workflow_job",
        None if b.get("workflow_run").is_some() => "workflow_run",
        None => "",
    }
}

fn actor(rec: &mut Rec, user: Option<&Value>) {
    if let Some(u) = user.filter(|u| u.is_object()) {
        let login = s(u, "login");
        let bot = s(u, "type").is_some_and(|t| t == "Bot")
            || login.as_deref().is_some_and(super::is_bot_name);
        rec.put(Field::Actor, login).human(!bot);
    }
}

fn extract(input: &Input<'_>) -> Vec<RawFields<'static>> {
    let b = input.body;
    let mut rec = Rec::default();
    rec.put(Field::Service, s(b, "repository.name"));
    match kind(input) {
        k @ ("deployment_status" | "deployment") => {
            let Some(d) = b.get("deployment") else {
                return vec![];
            };
            rec.put(Field::Release, s(d, "ref"))
                .put(Field::Version, s(d, "ref"))
                .put(Field::Commit, s(d, "sha"))
                .put(Field::Environment, s(d, "environment"));
            if k == "deployment" {
                rec.put(
                    Field::Id,
                    s(d, "id").map(|id| format!("github:deployment:{id}")),
                )
                .put(Field::Status, Some("created".into()))
                .put(Field::Time, time_at(d, "created_at"))
                .put(Field::Reason, s(d, "description"));
                actor(&mut rec, super::obj(d, &["creator"]).or(b.get("sender")));
            } else {
                let Some(ds) = b.get("deployment_status") else {
                    return vec![];
                };
                rec.put(
                    Field::Id,
                    s(ds, "id").map(|id| format!("github:deployment_status:{id}")),
                )
                .put(Field::Status, s(ds, "state"))
                .put(Field::Environment, s(ds, "environment"))
                .put(
                    Field::Time,
                    time_at(ds, "updated_at").or_else(|| time_at(ds, "created_at")),
                )
                .put(Field::Reason, s(ds, "description"));
                actor(&mut rec, super::obj(ds, &["creator"]).or(b.get("sender")));
            }
        }
        "workflow_run" => {
            let Some(r) = b.get("workflow_run") else {
                return vec![];
            };
            let raw = raw_status(r);
            rec.put(Field::Release, s(r, "head_sha"))
                .put(Field::Commit, s(r, "head_sha"))
                .put(Field::Version, s(r, "head_branch"))
                .put(
                    Field::Reason,
                    s(r, "name").or_else(|| s(r, "display_title")),
                )
                .put(
                    Field::Id,
                    raw.as_ref().map(|st| {
                        format!(
                            "github:workflow_run:{}:{}:{st}",
                            s(r, "id").unwrap_or_default(),
                            s(r, "run_attempt").unwrap_or_else(|| "1".into())
                        )
                    }),
                )
                .put(Field::Status, raw)
                .put(
                    Field::Time,
                    time_at(r, "updated_at").or_else(|| time_at(r, "created_at")),
                );
            actor(
                &mut rec,
                super::obj(r, &["triggering_actor", "actor"]).or(b.get("sender")),
            );
        }
        "workflow_job" => {
            let Some(j) = b.get("workflow_job") else {
                return vec![];
            };
            let raw = raw_status(j);
            let time = time_at(j, "completed_at")
                .or_else(|| time_at(j, "started_at"))
                .or_else(|| time_at(j, "created_at"));
            rec.put(Field::Release, s(j, "head_sha"))
                .put(Field::Commit, s(j, "head_sha"))
                .put(Field::Version, s(j, "head_branch"))
                // A job waiting on an environment's protection rule names
                // it in the top-level deployment.
                .put(Field::Environment, s(b, "deployment.environment"))
                .put(Field::Reason, s(j, "name"))
                .put(
                    Field::Id,
                    raw.as_ref().map(|st| {
                        format!(
                            "github:workflow_job:{}:{}:{st}",
                            s(j, "id").unwrap_or_default(),
                            s(j, "run_attempt").unwrap_or_else(|| "1".into())
                        )
                    }),
                )
                .put(Field::Status, raw)
                .put(Field::Time, time);
            actor(&mut rec, b.get("sender"));
        }
        "deployment_review" => {
            let Some(r) = b.get("workflow_run") else {
                return vec![];
            };
            let action = s(b, "action");
            let raw = action.as_ref().map(|a| format!("review_{a}"));
            let environment = s(b, "environment").or_else(|| {
                b.pointer("/workflow_job_runs/0/environment")
                    .and_then(super::text)
            });
            rec.put(Field::Release, s(r, "head_sha"))
                .put(Field::Commit, s(r, "head_sha"))
                .put(Field::Version, s(r, "head_branch"))
                .put(Field::Environment, environment.clone())
                .put(Field::Reason, s(b, "comment").filter(|c| !c.is_empty()))
                .put(
                    Field::Id,
                    action.as_ref().map(|a| {
                        format!(
                            "github:deployment_review:{}:{}:{a}",
                            s(r, "id").unwrap_or_default(),
                            environment.as_deref().unwrap_or_default()
                        )
                    }),
                )
                .put(Field::Status, raw)
                .put(
                    Field::Time,
                    time_at(r, "updated_at")
                        .or_else(|| Some(crate::event::format_rfc3339(input.received))),
                );
            actor(
                &mut rec,
                super::obj(b, &["approver", "requestor"]).or(b.get("sender")),
            );
        }
        "deployment_protection_rule" => {
            let Some(d) = b.get("deployment") else {
                return vec![];
            };
            rec.put(Field::Release, s(d, "ref"))
                .put(Field::Version, s(d, "ref"))
                .put(Field::Commit, s(d, "sha"))
                .put(
                    Field::Environment,
                    s(b, "environment").or_else(|| s(d, "environment")),
                )
                .put(
                    Field::Id,
                    s(d, "id").map(|id| format!("github:deployment_protection_rule:{id}")),
                )
                .put(
                    Field::Status,
                    s(b, "action").map(|a| format!("protection_rule_{a}")),
                )
                .put(
                    Field::Time,
                    time_at(d, "updated_at")
                        .or_else(|| time_at(d, "created_at"))
                        .or_else(|| Some(crate::event::format_rfc3339(input.received))),
                );
            actor(&mut rec, b.get("sender"));
        }
        _ => return vec![],
    }
    vec![rec.done()]
}

/// A run's or job's raw status: its conclusion once completed, else its status.
fn raw_status(r: &Value) -> Option<String> {
    match s(r, "status").as_deref() {
        Some("completed") => s(r, "conclusion"),
        _ => s(r, "status"),
    }
}
