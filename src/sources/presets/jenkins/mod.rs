//! Jenkins: the Notification plugin's job/build JSON (`phase` QUEUED,
//! STARTED, COMPLETED, FINALIZED) and the build object of the JSON API
//! (`/job/X/N/api/json`, what a poller reads, and what a pipeline step can
//! POST). Both give the same id for the same build result.

pub mod poll;

use serde_json::Value;

use super::registry::{AuthScheme, Tool};
use super::{Input, Preset, Rec, first, s};
use crate::sources::fields::{Field, RawFields};

pub const PRESET: Preset = Preset {
    name: "jenkins",
    extract,
    vocabulary: &[
        ("QUEUED", "scheduled"),
        ("STARTED", "in_progress"),
        ("BUILDING", "in_progress"),
        ("SUCCESS", "deployed"),
        ("FAILURE", "failed"),
        // the Notification plugin's help example says FAILED
        ("FAILED", "failed"),
        ("UNSTABLE", "failed"),
        ("ABORTED", "cancelled"),
        // a pipeline waiting at an `input` step (wfapi, read by the poller)
        ("PAUSED_PENDING_INPUT", "paused"),
        // a queue item cancelled before it ran (queue API, read by the poller)
        ("CANCELLED", "cancelled"),
    ],
    fallbacks: &[],
};

/// This tool's entry in the registry ([`super::TOOLS`]).
pub const TOOL: Tool = Tool {
    preset: &PRESET,
    auth: AuthScheme::SignatureOrBearer,
    event_header: None,
    delivery_header: None,
    environment_always: false,
    poll: Some(poll::poll),
    fixtures: Some("jenkins"),
};

/// The job's full name from a build URL (`.../job/a/job/b/12/` -> `a/b`).
fn job_from_url(url: &str) -> Option<String> {
    let segs: Vec<&str> = url.split('/').collect();
    let names: Vec<&str> = segs
        .windows(2)
        .filter(|w| w[0] == "job")
        .map(|w| w[1])
        .collect();
    (!names.is_empty()).then(|| names.join("/"))
}

fn extract(input: &Input<'_>) -> Vec<RawFields<'static>> {
    let b = input.body;
    // Notification plugin: {name, url, build: {...}}; API: the build itself.
    let (build, notification) = match b.get("build") {
        Some(build) if build.is_object() => (build, true),
        _ => (b, false),
    };
    let Some(number) = s(build, "number") else {
        return vec![];
    };
    let job = first(build, &["full_url", "url"])
        .and_then(|u| job_from_url(&u))
        .or_else(|| notification.then(|| s(b, "name")).flatten())
        .or_else(|| {
            s(build, "fullDisplayName").map(|n| {
                n.rsplit_once(" #")
                    .map_or(n.clone(), |(j, _)| j.to_string())
            })
        });
    let Some(job) = job else { return vec![] };
    let start = build.get("timestamp").and_then(Value::as_i64);
    let duration = build.get("duration").and_then(Value::as_i64).unwrap_or(0);
    let (raw, time) = if notification {
        match s(build, "phase").as_deref() {
            Some(p @ ("QUEUED" | "STARTED")) => (Some(p.to_string()), start),
            Some("COMPLETED" | "FINALIZED") => (s(build, "status"), start.map(|t| t + duration)),
            _ => (None, None),
        }
    } else if build.get("building").and_then(Value::as_bool) == Some(true) {
        (Some("BUILDING".to_string()), start)
    } else {
        (s(build, "result"), start.map(|t| t + duration))
    };
    let Some(raw) = raw else { return vec![] };
    // STARTED (notification) and BUILDING (API) are the same change.
    let id_status = if raw == "BUILDING" {
        "STARTED"
    } else {
        raw.as_str()
    };
    let mut rec = Rec::default();
    rec.put(
        Field::Id,
        Some(format!("jenkins:{job}:{number}:{id_status}")),
    )
    .put(Field::Release, Some(format!("{job}#{number}")))
    .put(Field::Service, Some(job.clone()))
    .put(Field::Status, Some(raw.clone()))
    .time(Some(time.unwrap_or(input.received)))
    .put(
        Field::Environment,
        parameter(build, &["ENVIRONMENT", "environment", "ENV", "DEPLOY_ENV"]),
    )
    .put(Field::Commit, first(build, &["scm.commit"]))
    .put(
        Field::Version,
        parameter(build, &["VERSION", "version", "RELEASE"]),
    );
    let user = build
        .get("actions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|a| a.get("causes").and_then(Value::as_array))
        .flatten()
        .find_map(|c| s(c, "userId").or_else(|| s(c, "userName")));
    match user {
        Some(u) => {
            let bot = super::is_bot_name(&u);
            rec.put(Field::Actor, Some(u)).human(!bot)
        }
        None => rec.put(Field::Actor, Some("jenkins".into())).human(false),
    };
    vec![rec.done()]
}

/// A build parameter: the Notification plugin's `parameters` object or the
/// API's `actions[].parameters[] {name, value}`.
fn parameter(build: &Value, names: &[&str]) -> Option<String> {
    if let Some(p) = build.get("parameters").filter(|p| p.is_object()) {
        return names.iter().find_map(|n| s(p, n));
    }
    let actions = build.get("actions")?.as_array()?;
    actions
        .iter()
        .filter_map(|a| a.get("parameters").and_then(Value::as_array))
        .flatten()
        .find_map(|p| {
            let name = p.get("name")?.as_str()?;
            names.contains(&name).then(|| s(p, "value")).flatten()
        })
}
