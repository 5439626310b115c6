//! Jira: `jira:issue_updated` webhooks whose changelog moves a change
//! request's status. The raw status is the new status name; `Approved` maps
//! to `approved` (name your workflow's other approved states in
//! `status_map`). The release is the issue's first fix version unless
//! `fields.release` names the custom field that holds it: a ticket id is not
//! a release id. Approvals are release-wide: service and environment `-`.
//! `Declined` and `Rejected` are rejections, `Revoked` a revocation, for the
//! gate's ledger. [`poll`] reads the same changes from the search API.

pub mod poll;

use super::registry::{AuthScheme, Tool};
use super::{Input, Preset, Rec, s};
use crate::sources::fields::{Field, RawFields};

pub const PRESET: Preset = Preset {
    name: "jira",
    extract,
    vocabulary: &[
        ("Approved", "approved"),
        ("APPROVED", "approved"),
        ("Declined", "rejected"),
        ("Rejected", "rejected"),
        ("Revoked", "revoked"),
    ],
    fallbacks: &[("environment", "-"), ("service", "-")],
};

/// This tool's entry in the registry ([`super::TOOLS`]).
pub const TOOL: Tool = Tool {
    preset: &PRESET,
    auth: AuthScheme::SignatureOrBearer,
    event_header: None,
    delivery_header: Some("x-atlassian-webhook-identifier"),
    environment_always: true,
    poll: Some(poll::poll),
    fixtures: Some("jira"),
};

fn extract(input: &Input<'_>) -> Vec<RawFields<'static>> {
    let b = input.body;
    if s(b, "webhookEvent").as_deref() != Some("jira:issue_updated") {
        return vec![];
    }
    let Some(issue) = b.get("issue") else {
        return vec![];
    };
    let Some(change) = b.get("changelog") else {
        return vec![];
    };
    let Some(item) = change
        .get("items")
        .and_then(serde_json::Value::as_array)
        .into_iter()
        .flatten()
        .find(|i| s(i, "field").as_deref() == Some("status"))
    else {
        return vec![];
    };
    let mut rec = Rec::default();
    let user = super::first(b, &["user.name", "user.displayName", "user.accountId"]);
    let bot = s(b, "user.accountType").is_some_and(|t| t == "app")
        || user.as_deref().is_some_and(super::is_bot_name);
    rec.put(
        Field::Id,
        Some(format!(
            "jira:{}:{}",
            s(issue, "id").unwrap_or_default(),
            s(change, "id").unwrap_or_default()
        )),
    )
    .put(Field::Release, s(issue, "fields.fixVersions.0.name"))
    .put(Field::Status, s(item, "toString"))
    .time(
        b.get("timestamp")
            .and_then(super::time)
            .or_else(|| {
                issue
                    .get("fields")
                    .and_then(|f| f.get("updated"))
                    .and_then(super::time)
            })
            .or(Some(input.received)),
    )
    .put(
        Field::Reason,
        s(issue, "key").map(|k| match s(issue, "fields.summary") {
            Some(sum) => format!("{k}: {sum}"),
            None => k,
        }),
    )
    .put(Field::Actor, user)
    .human(!bot);
    vec![rec.done()]
}
