//! ServiceNow: a change_request record (a Business Rule's outbound REST
//! message, or the Table / Change Management API's `{"result": {...}}`),
//! with plain values or `{display_value, value}` pairs. The raw status is
//! the `approval` value; `approved` maps to `approved`. The release comes
//! from `fields.release` (a custom field such as `u_release`, default path
//! `u_release`): a change number is not a release id. Approvals are
//! release-wide: service and environment `-`.

use serde_json::Value;

use super::registry::{AuthScheme, Tool};
use super::{Input, Preset, Rec, text};
use crate::sources::fields::{Field, RawFields};

pub const PRESET: Preset = Preset {
    name: "servicenow",
    extract,
    vocabulary: &[("approved", "approved")],
    fallbacks: &[("environment", "-"), ("service", "-")],
};

/// This tool's entry in the registry ([`super::TOOLS`]).
pub const TOOL: Tool = Tool {
    preset: &PRESET,
    auth: AuthScheme::SignatureOrBearer,
    event_header: None,
    delivery_header: None,
    environment_always: true,
    poll: None,
    fixtures: Some("servicenow"),
};

/// A record field: its `value` when it is a pair, else itself.
fn field(rec: &Value, name: &str) -> Option<String> {
    let v = rec.get(name)?;
    match v.get("value") {
        Some(inner) => text(inner),
        None => text(v),
    }
}

fn extract(input: &Input<'_>) -> Vec<RawFields<'static>> {
    let b = input.body;
    let r = super::obj(b, &["result"]).unwrap_or(b);
    let Some(sys_id) = field(r, "sys_id") else {
        return vec![];
    };
    let Some(approval) = field(r, "approval") else {
        return vec![];
    };
    let actor = field(r, "sys_updated_by");
    let mut rec = Rec::default();
    rec.put(Field::Id, Some(format!("servicenow:{sys_id}:{approval}")))
        .put(Field::Release, field(r, "u_release"))
        .put(Field::Status, Some(approval))
        .time(
            r.get("sys_updated_on")
                .map(|v| v.get("value").unwrap_or(v))
                .and_then(super::time)
                .or(Some(input.received)),
        )
        .put(
            Field::ChangeClass,
            field(r, "type").filter(|t| matches!(t.as_str(), "standard" | "normal" | "emergency")),
        )
        .put(
            Field::Reason,
            field(r, "number").map(|n| match field(r, "short_description") {
                Some(d) => format!("{n}: {d}"),
                None => n,
            }),
        )
        .human(
            !actor
                .as_deref()
                .is_some_and(|a| a == "system" || super::is_bot_name(a)),
        )
        .put(Field::Actor, actor);
    vec![rec.done()]
}
