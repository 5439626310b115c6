//! Flux: notification-controller events (`generic` / `generic-hmac`
//! providers). The raw status is the event's `reason`.

use super::registry::{AuthScheme, Tool};
use super::{Input, Preset, Rec, first, s, time_at};
use crate::sources::fields::{Field, RawFields};

pub const PRESET: Preset = Preset {
    name: "flux",
    extract,
    vocabulary: &[
        ("Progressing", "in_progress"),
        ("ProgressingWithRetry", "in_progress"),
        ("ReconciliationSucceeded", "deployed"),
        ("UpgradeSucceeded", "deployed"),
        ("InstallSucceeded", "deployed"),
        ("ReconciliationFailed", "failed"),
        ("ValidationFailed", "failed"),
        ("HealthCheckFailed", "failed"),
        ("BuildFailed", "failed"),
        ("ArtifactFailed", "failed"),
        ("InstallFailed", "failed"),
        ("UpgradeFailed", "failed"),
        ("RollbackSucceeded", "rolled_back"),
        ("UninstallSucceeded", "cancelled"),
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
    fixtures: Some("flux"),
};

fn extract(input: &Input<'_>) -> Vec<RawFields<'static>> {
    let b = input.body;
    let Some(obj) = b.get("involvedObject") else {
        return vec![];
    };
    let Some(name) = s(obj, "name") else {
        return vec![];
    };
    let Some(reason) = s(b, "reason") else {
        return vec![];
    };
    // metadata "<group>/revision" = "main@sha1:abc" (v2) or "main/abc" (v1).
    let revision = b.get("metadata").and_then(|m| m.as_object()).and_then(|m| {
        m.iter()
            .find(|(k, _)| k.ends_with("/revision") || *k == "revision")
            .and_then(|(_, v)| super::text(v))
    });
    let commit = revision.as_deref().map(|r| {
        r.rsplit_once(':')
            .or_else(|| r.rsplit_once('/'))
            .map_or(r.to_string(), |(_, c)| c.to_string())
    });
    let uid = s(obj, "uid").unwrap_or_else(|| name.clone());
    let mut rec = Rec::default();
    rec.put(
        Field::Id,
        Some(format!(
            "flux:{uid}:{}:{reason}",
            revision.as_deref().unwrap_or("")
        )),
    )
    .put(Field::Release, commit.clone())
    .put(Field::Commit, commit)
    .put(Field::Version, revision)
    .put(Field::Service, Some(name))
    .put(
        Field::Environment,
        first(b, &["metadata.environment", "metadata.env"]),
    )
    .put(Field::Status, Some(reason))
    .put(
        Field::Time,
        time_at(b, "timestamp")
            .or_else(|| time_at(b, "ts"))
            .or_else(|| Some(crate::event::format_rfc3339(input.received))),
    )
    .put(Field::Reason, s(b, "message"))
    .put(
        Field::Actor,
        s(b, "reportingController").or(Some("flux".into())),
    )
    .human(false);
    vec![rec.done()]
}
