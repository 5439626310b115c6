//! Argo Rollouts: a Rollout object, as the recommended notifications
//! template sends it (`{"rollout": {{toJson .rollout}}}`) and as the API
//! returns it. The raw status is `status.phase`, or `Aborted` when the
//! rollout was aborted (a rollback to the stable version).

use super::registry::{AuthScheme, Tool};
use super::{Input, Preset, Rec, first, s};
use crate::sources::fields::{Field, RawFields};

pub const PRESET: Preset = Preset {
    name: "argo_rollouts",
    extract,
    vocabulary: &[
        ("Progressing", "in_progress"),
        ("Paused", "paused"),
        ("Healthy", "deployed"),
        ("Degraded", "failed"),
        ("Aborted", "rolled_back"),
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
    poll: None,
    fixtures: Some("argo-rollouts"),
};

fn extract(input: &Input<'_>) -> Vec<RawFields<'static>> {
    let b = input.body;
    let ro = super::obj(b, &["rollout"]).unwrap_or(b);
    if s(ro, "kind").is_some_and(|k| k != "Rollout") {
        return vec![];
    }
    let Some(name) = s(ro, "metadata.name") else {
        return vec![];
    };
    let status = ro.get("status");
    let aborted = status
        .and_then(|st| st.get("abort"))
        .and_then(serde_json::Value::as_bool)
        .unwrap_or(false);
    let raw = if aborted {
        Some("Aborted".to_string())
    } else {
        status.and_then(|st| s(st, "phase").or_else(|| derived_phase(ro, st)))
    };
    let Some(raw) = raw else { return vec![] };
    let image = s(ro, "spec.template.spec.containers.0.image");
    let tag = image.as_deref().and_then(|i| {
        let last = i.rsplit('/').next()?;
        last.split_once(':').map(|(_, t)| t.to_string())
    });
    let pod_hash = status.and_then(|st| s(st, "currentPodHash"));
    let release = tag.or_else(|| pod_hash.clone());
    // The latest condition update is when the rollout last changed.
    let time = status
        .and_then(|st| st.get("conditions"))
        .and_then(serde_json::Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| c.get("lastUpdateTime").and_then(super::time))
        .max()
        .unwrap_or(input.received);
    let uid = s(ro, "metadata.uid").unwrap_or_else(|| name.clone());
    let generation = first(ro, &["status.observedGeneration", "metadata.generation"]);
    let mut rec = Rec::default();
    rec.put(
        Field::Id,
        Some(format!(
            "argo_rollouts:{uid}:{}:{}:{raw}",
            pod_hash.as_deref().unwrap_or(""),
            generation.as_deref().unwrap_or("")
        )),
    )
    .put(Field::Release, release)
    .put(Field::Version, image)
    .put(Field::Service, Some(name))
    .put(
        Field::Environment,
        first(ro, &["metadata.labels.environment", "metadata.labels.env"]),
    )
    .put(Field::Status, Some(raw))
    .time(Some(time))
    .put(Field::Reason, status.and_then(|st| s(st, "message")))
    .put(Field::Actor, Some("argo-rollouts".into()))
    .human(false);
    vec![rec.done()]
}

/// The phase of a Rollout from before `status.phase` existed (controller
/// < v1.0), derived the way Argo CD's Rollout health check does.
fn derived_phase(ro: &serde_json::Value, st: &serde_json::Value) -> Option<String> {
    let conditions = st.get("conditions").and_then(serde_json::Value::as_array);
    // Degraded as Argo CD's Rollout health check says: past the progress
    // deadline, or an InvalidSpec condition.
    let deadline = conditions.into_iter().flatten().any(|c| {
        (s(c, "type").as_deref() == Some("Progressing")
            && s(c, "reason").as_deref() == Some("ProgressDeadlineExceeded"))
            || (s(c, "type").as_deref() == Some("InvalidSpec")
                && s(c, "status").as_deref() != Some("False"))
    });
    if deadline {
        return Some("Degraded".into());
    }
    let paused = ro
        .pointer("/spec/paused")
        .and_then(serde_json::Value::as_bool)
        == Some(true)
        || st
            .get("pauseConditions")
            .and_then(serde_json::Value::as_array)
            .is_some_and(|p| !p.is_empty());
    if paused {
        return Some("Paused".into());
    }
    let n = |v: Option<&serde_json::Value>| v.and_then(serde_json::Value::as_i64);
    let want = n(ro.pointer("/spec/replicas")).unwrap_or(1);
    let updated = n(st.get("updatedReplicas")).unwrap_or(0);
    let available = n(st.get("availableReplicas")).unwrap_or(0);
    st.as_object()?;
    Some(
        if updated >= want && available >= want {
            "Healthy"
        } else {
            "Progressing"
        }
        .into(),
    )
}
