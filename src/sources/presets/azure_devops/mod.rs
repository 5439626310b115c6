//! Azure DevOps service hooks: release deployment started/completed,
//! deployment approvals, pipeline run state changes and build completion
//! (by `eventType`). Ids come from the release, environment, approval, run
//! and build ids, so a re-sent notification is a duplicate.
//!
//! A `rejected` approval moves the deployment's own key to `failed`, and is
//! also a rejection for the gate's ledger: a second record, status
//! `rejected`, id suffixed `:decision`.

pub mod poll;

use serde_json::Value;

use super::registry::{AuthScheme, Tool};
use super::{Input, Preset, Rec, first, s, time_at};
use crate::sources::fields::{Field, RawFields};

pub const PRESET: Preset = Preset {
    name: "azure_devops",
    extract,
    vocabulary: &[
        ("notStarted", "scheduled"),
        ("scheduled", "scheduled"),
        ("queued", "scheduled"),
        ("started", "in_progress"),
        ("inProgress", "in_progress"),
        ("succeeded", "deployed"),
        ("partiallySucceeded", "failed"),
        ("failed", "failed"),
        ("rejected", "failed"),
        ("canceled", "cancelled"),
        ("approved", "approved"),
        ("approval_rejected", "rejected"),
    ],
    fallbacks: &[("environment", "ci")],
};

/// This tool's entry in the registry ([`super::TOOLS`]).
pub const TOOL: Tool = Tool {
    preset: &PRESET,
    auth: AuthScheme::BasicPassword,
    event_header: None,
    delivery_header: None,
    environment_always: true,
    poll: Some(poll::poll),
    fixtures: Some("azure-devops"),
};

fn person(rec: &mut Rec, p: Option<&Value>) {
    if let Some(p) = p {
        let name = first(p, &["uniqueName", "displayName"]);
        let bot = name.as_deref().is_some_and(|n| {
            super::is_bot_name(n) || n.contains("Project Collection Build Service")
        });
        rec.put(Field::Actor, name).human(!bot);
    }
}

fn extract(input: &Input<'_>) -> Vec<RawFields<'static>> {
    let b = input.body;
    let Some(kind) = s(b, "eventType") else {
        return vec![];
    };
    let Some(r) = b.get("resource") else {
        return vec![];
    };
    let created = time_at(b, "createdDate");
    let mut rec = Rec::default();
    rec.put(Field::Service, s(b, "resource.project.name"));
    match kind.as_str() {
        "ms.vss-release.deployment-started-event" | "ms.vss-release.deployment-completed-event" => {
            let Some(env) = r.get("environment") else {
                return vec![];
            };
            let status = if kind.ends_with("started-event") {
                Some("started".to_string())
            } else {
                s(env, "status")
            };
            // `resource.release` is null in the documented started-event
            // sample: the release is also under the environment.
            let release_id = first(
                r,
                &[
                    "release.id",
                    "environment.release.id",
                    "environment.releaseId",
                ],
            );
            rec.put(
                Field::Release,
                first(r, &["release.name", "environment.release.name"]),
            )
            .put(Field::Environment, s(env, "name"))
            .put(
                Field::Id,
                status.as_ref().map(|st| {
                    format!(
                        "azure_devops:release:{}:env:{}:{st}",
                        release_id.unwrap_or_default(),
                        s(env, "id").unwrap_or_default()
                    )
                }),
            )
            .put(Field::Status, status)
            .put(Field::Time, time_at(env, "modifiedOn").or(created))
            .put(
                Field::Service,
                first(env, &["releaseDefinition.name"]).or_else(|| s(r, "project.name")),
            );
            person(
                &mut rec,
                super::obj(
                    r,
                    &[
                        "deployment.requestedFor",
                        "environment.deploySteps.0.requestedFor",
                    ],
                ),
            );
        }
        "ms.vss-release.deployment-approval-completed-event"
        | "ms.vss-release.deployment-approval-pending-event" => {
            let Some(a) = r.get("approval") else {
                return vec![];
            };
            let status = s(a, "status");
            rec.put(
                Field::Release,
                s(a, "release.name").or_else(|| s(r, "release.name")),
            )
            .put(Field::Environment, s(a, "releaseEnvironment.name"))
            .put(
                Field::Service,
                s(a, "releaseDefinition.name").or_else(|| s(r, "project.name")),
            )
            .put(
                Field::Id,
                status.as_ref().map(|st| {
                    format!(
                        "azure_devops:approval:{}:{}:{st}",
                        s(a, "release.id").unwrap_or_default(),
                        s(a, "id").unwrap_or_default()
                    )
                }),
            )
            .put(Field::Status, status.clone())
            .put(Field::Time, time_at(a, "modifiedOn").or(created))
            .put(Field::Reason, s(a, "comments"));
            person(&mut rec, super::obj(a, &["approvedBy", "approver"]));
            if status.as_deref() == Some("rejected") {
                let mut decision = rec.clone();
                decision
                    .put(
                        Field::Id,
                        Some(format!(
                            "azure_devops:approval:{}:{}:rejected:decision",
                            s(a, "release.id").unwrap_or_default(),
                            s(a, "id").unwrap_or_default()
                        )),
                    )
                    .put(Field::Status, Some("approval_rejected".into()));
                return vec![rec.done(), decision.done()];
            }
        }
        "ms.vss-pipelines.run-state-changed-event" => {
            let Some(run) = r.get("run") else {
                return vec![];
            };
            let status = match s(run, "state").as_deref() {
                Some("completed") => s(run, "result"),
                other => other.map(str::to_string),
            };
            rec.put(Field::Release, s(run, "name"))
                .put(
                    Field::Service,
                    s(r, "pipeline.name").or_else(|| s(run, "pipeline.name")),
                )
                .put(
                    Field::Id,
                    status.as_ref().map(|st| {
                        format!(
                            "azure_devops:run:{}:{}:{st}",
                            s(r, "pipeline.id").unwrap_or_default(),
                            s(run, "id").unwrap_or_default()
                        )
                    }),
                )
                .put(Field::Status, status)
                .put(
                    Field::Time,
                    time_at(run, "finishedDate")
                        .or_else(|| time_at(run, "createdDate"))
                        .or(created),
                );
        }
        "build.complete" => {
            let status = s(r, "status").or_else(|| s(r, "result"));
            rec.put(Field::Release, s(r, "buildNumber"))
                .put(Field::Service, s(r, "definition.name"))
                .put(Field::Version, s(r, "sourceGetVersion"))
                .put(
                    Field::Id,
                    status.as_ref().map(|st| {
                        format!("azure_devops:build:{}:{st}", s(r, "id").unwrap_or_default())
                    }),
                )
                .put(Field::Status, status)
                .put(Field::Time, time_at(r, "finishTime").or(created));
            person(
                &mut rec,
                r.get("requests")
                    .and_then(|q| q.get(0))
                    .and_then(|q| q.get("requestedFor")),
            );
        }
        _ => return vec![],
    }
    vec![rec.done()]
}
