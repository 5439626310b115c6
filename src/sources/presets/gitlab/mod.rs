//! GitLab: pipeline, deployment and job hooks (`X-Gitlab-Event`, else the
//! body's `object_kind`). The API's pipeline, deployment and job objects
//! (what a poller reads) carry the same ids, so they give the same events.
//!
//! Deployment approvals: a deployment object's `approvals` (the API's
//! deployments carry them; so does a hook that has them) each give a
//! decision for the gate's ledger, `approved` or `rejected` by the
//! approving user, for the deployment's release and environment.

pub mod poll;

use serde_json::Value;

use super::registry::{AuthScheme, Tool};
use super::{Input, Preset, Rec, first, s, time_at};
use crate::sources::fields::{Field, RawFields};

pub const PRESET: Preset = Preset {
    name: "gitlab",
    extract,
    vocabulary: &[
        ("created", "scheduled"),
        ("waiting_for_resource", "scheduled"),
        ("preparing", "scheduled"),
        ("pending", "scheduled"),
        ("scheduled", "scheduled"),
        ("blocked", "paused"),
        ("manual", "paused"),
        ("running", "in_progress"),
        ("success", "deployed"),
        ("failed", "failed"),
        ("canceled", "cancelled"),
        ("canceling", "cancelled"),
        // deployment approvals (decisions for the gate's ledger)
        ("approval_approved", "approved"),
        ("approval_rejected", "rejected"),
    ],
    fallbacks: &[("environment", "ci")],
};

/// This tool's entry in the registry ([`super::TOOLS`]).
pub const TOOL: Tool = Tool {
    preset: &PRESET,
    auth: AuthScheme::GitlabToken,
    event_header: Some("x-gitlab-event"),
    delivery_header: Some("x-gitlab-event-uuid"),
    environment_always: true,
    poll: Some(poll::poll),
    fixtures: Some("gitlab"),
};

fn user(rec: &mut Rec, u: Option<&Value>) {
    if let Some(u) = u {
        let name = s(u, "username");
        let bot = name.as_deref().is_some_and(|n| {
            super::is_bot_name(n)
                || (n.starts_with("project_") || n.starts_with("group_")) && n.ends_with("_bot")
        });
        rec.put(Field::Actor, name).human(!bot);
    }
}

fn extract(input: &Input<'_>) -> Vec<RawFields<'static>> {
    let b = input.body;
    let kind = match input.event {
        Some("Pipeline Hook") => "pipeline",
        Some("Deployment Hook") => "deployment",
        Some("Job Hook") => "build",
        Some(_) => "",
        None => b.get("object_kind").and_then(Value::as_str).unwrap_or(""),
    };
    let mut rec = Rec::default();
    rec.put(Field::Service, first(b, &["project.name", "project_name"]));
    match kind {
        "pipeline" => {
            let Some(p) = b.get("object_attributes") else {
                return vec![];
            };
            let status = s(p, "status");
            let time = time_at(p, "finished_at")
                .filter(|_| status.as_deref().is_some_and(terminal))
                .or_else(|| {
                    time_at(p, "started_at").filter(|_| status.as_deref() == Some("running"))
                })
                .or_else(|| time_at(p, "created_at"));
            rec.put(Field::Release, s(p, "ref"))
                .put(Field::Version, s(p, "ref"))
                .put(Field::Commit, s(p, "sha"))
                .put(
                    Field::Id,
                    status
                        .as_ref()
                        .and_then(|st| s(p, "id").map(|id| format!("gitlab:pipeline:{id}:{st}"))),
                )
                .put(Field::Status, status)
                .put(Field::Time, time);
            user(&mut rec, b.get("user"));
        }
        "deployment" => {
            let status = s(b, "status");
            let commit = s(b, "commit_url")
                .and_then(|u| u.rsplit('/').next().map(str::to_string))
                .or_else(|| s(b, "short_sha"));
            rec.put(Field::Release, s(b, "ref"))
                .put(Field::Version, s(b, "ref"))
                .put(Field::Commit, commit)
                .put(Field::Environment, s(b, "environment"))
                .put(
                    Field::Id,
                    status.as_ref().and_then(|st| {
                        s(b, "deployment_id").map(|id| format!("gitlab:deployment:{id}:{st}"))
                    }),
                )
                .put(Field::Status, status.clone())
                .put(Field::Time, time_at(b, "status_changed_at"));
            let base = rec.clone();
            user(&mut rec, b.get("user"));
            let mut out = Vec::new();
            if status.is_some() {
                out.push(rec.done());
            }
            let approvals = b.get("approvals").and_then(Value::as_array);
            for a in approvals.into_iter().flatten().take(MAX_APPROVALS) {
                let mut r = base.clone();
                let st = s(a, "status");
                let who = s(a, "user.username");
                r.put(
                    Field::Id,
                    st.as_ref().and_then(|st| {
                        s(b, "deployment_id").map(|id| {
                            format!(
                                "gitlab:deployment_approval:{id}:{}:{st}",
                                who.as_deref().unwrap_or_default()
                            )
                        })
                    }),
                )
                .put(Field::Status, st.map(|st| format!("approval_{st}")))
                .put(Field::Time, time_at(a, "created_at"))
                .put(Field::Reason, s(a, "comment").filter(|c| !c.is_empty()));
                user(&mut r, a.get("user"));
                out.push(r.done());
            }
            return out;
        }
        "build" => {
            let status = s(b, "build_status");
            let time = time_at(b, "build_finished_at")
                .or_else(|| time_at(b, "build_started_at"))
                .or_else(|| time_at(b, "build_created_at"));
            rec.put(Field::Release, s(b, "ref"))
                .put(Field::Version, s(b, "ref"))
                .put(Field::Commit, s(b, "sha"))
                .put(
                    Field::Environment,
                    first(b, &["environment.name", "environment"]),
                )
                .put(Field::Reason, s(b, "build_name"))
                .put(
                    Field::Id,
                    status
                        .as_ref()
                        .and_then(|st| s(b, "build_id").map(|id| format!("gitlab:job:{id}:{st}"))),
                )
                .put(Field::Status, status)
                .put(Field::Time, time);
            user(&mut rec, b.get("user"));
        }
        _ => return vec![],
    }
    vec![rec.done()]
}

/// Approvals read from one deployment object: a bound on hostile input.
const MAX_APPROVALS: usize = 32;

fn terminal(status: &str) -> bool {
    matches!(status, "success" | "failed" | "canceled" | "skipped")
}
