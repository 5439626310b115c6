//! Argo CD: an Application object, as the recommended notifications
//! template sends it (`{"app": {{toJson .app}}}`, docs/presets.md) and as
//! the API returns it (what a poller reads). The raw status is the
//! operation's phase while it runs or after it failed, else the app's
//! health once the sync succeeded.

pub mod poll;

use super::registry::{AuthScheme, Tool};
use super::{Input, Preset, Rec, first, s, time_at};
use crate::sources::fields::{Field, RawFields};

pub const PRESET: Preset = Preset {
    name: "argocd",
    extract,
    vocabulary: &[
        ("Running", "in_progress"),
        ("Terminating", "in_progress"),
        ("Failed", "failed"),
        ("Error", "failed"),
        ("Healthy", "deployed"),
        ("Progressing", "in_progress"),
        ("Degraded", "failed"),
        ("Suspended", "paused"),
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
    fixtures: Some("argocd"),
};

/// The key of the poll body (`{"app": ..., "lastSeenRevision": ...}`)
/// carrying the revision last seen for an application that names none now
/// (kept in the poll checkpoint): the release's last fallback.
pub const LAST_SEEN: &str = "lastSeenRevision";

/// An application's revision, in fallback order: the operation's sync
/// result, the operation's sync revision, `status.sync.revision` (each also
/// as a multi-source app's first of `revisions`), then the newest
/// `status.history` entry's. Never `spec.source.targetRevision`: it names a
/// branch or a tag pattern, not what is deployed.
pub fn revision(app: &serde_json::Value) -> Option<String> {
    first(
        app,
        &[
            "status.operationState.syncResult.revision",
            "status.operationState.syncResult.revisions.0",
            "status.operationState.operation.sync.revision",
            "status.operationState.operation.sync.revisions.0",
            "status.sync.revision",
            "status.sync.revisions.0",
        ],
    )
    .or_else(|| {
        let history = app.pointer("/status/history")?.as_array()?;
        // Newest: the greatest `id` (Argo CD appends; ids grow).
        let newest = history
            .iter()
            .enumerate()
            .max_by_key(|(i, h)| (h.get("id").and_then(serde_json::Value::as_i64), *i))?
            .1;
        first(newest, &["revision", "revisions.0"])
    })
}

fn extract(input: &Input<'_>) -> Vec<RawFields<'static>> {
    let b = input.body;
    let app = super::obj(b, &["app", "application"]).unwrap_or(b);
    if s(app, "kind").is_some_and(|k| k != "Application") {
        return vec![];
    }
    let Some(name) = s(app, "metadata.name") else {
        return vec![];
    };
    let op = app.get("status").and_then(|st| st.get("operationState"));
    let phase = op.and_then(|o| s(o, "phase"));
    let health = s(app, "status.health.status");
    let raw = match phase.as_deref() {
        Some("Succeeded") | None => health,
        Some(_) => phase.clone(),
    };
    let Some(raw) = raw else { return vec![] };
    let revision = revision(app).or_else(|| s(b, LAST_SEEN));
    let time = op
        .and_then(|o| time_at(o, "finishedAt").or_else(|| time_at(o, "startedAt")))
        .or_else(|| time_at(app, "status.reconciledAt"));
    let started = op.and_then(|o| s(o, "startedAt")).unwrap_or_default();
    let uid = s(app, "metadata.uid").unwrap_or_else(|| name.clone());
    let mut rec = Rec::default();
    rec.put(
        Field::Id,
        Some(format!(
            "argocd:{uid}:{}:{started}:{raw}",
            revision.as_deref().unwrap_or("")
        )),
    )
    // Without a revision (a sync of a chart with no git revision), the sync
    // operation itself is the release: app@startedAt.
    .put(
        Field::Release,
        revision.clone().or_else(|| {
            (!started.is_empty())
                .then(|| format!("{}@{started}", s(app, "metadata.name").unwrap_or_default()))
        }),
    )
    .put(Field::Commit, revision)
    .put(Field::Service, Some(name))
    .put(
        Field::Environment,
        first(app, &["metadata.labels.environment", "metadata.labels.env"]),
    )
    .put(Field::Status, Some(raw))
    .put(
        Field::Time,
        time.or_else(|| Some(crate::event::format_rfc3339(input.received))),
    )
    .put(Field::Reason, op.and_then(|o| s(o, "message")));
    let automated = op
        .and_then(|o| o.pointer("/operation/initiatedBy/automated"))
        .and_then(serde_json::Value::as_bool)
        .unwrap_or(false);
    match op.and_then(|o| s(o, "operation.initiatedBy.username")) {
        Some(u) if !automated => {
            let bot = super::is_bot_name(&u);
            rec.put(Field::Actor, Some(u)).human(!bot)
        }
        _ => rec.put(Field::Actor, Some("argocd".into())).human(false),
    };
    vec![rec.done()]
}
