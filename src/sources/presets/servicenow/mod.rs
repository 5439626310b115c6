//! ServiceNow: a change_request record (a Business Rule's outbound REST
//! message, or the Table / Change Management API's `{"result": {...}}`),
//! with plain values or `{display_value, value}` pairs. A change feeds the
//! gate's ledger: its raw status is `Canceled` when the change is canceled
//! (a revocation), else its `approval` when `approved` or `rejected`, else
//! its lifecycle state by its display name (`New`, `Assess`, `Authorize`,
//! `Scheduled`, `Implement`, `Review`, `Closed`; the numeric values -5 ...
//! 4 are named too, capitalised so that no state id of the model matches
//! them by accident). `Authorize` and `approved` map to `approved`,
//! `rejected` to `rejected`, `Canceled` to `revoked`; the other states are
//! no release step (`unmapped`) unless a `status_map` names them. The release comes
//! from `fields.release` (a custom field such as `u_release`, default path
//! `u_release`): a change number is not a release id. Approvals are
//! release-wide: service and environment `-`. The poller ([`poll`]) reads
//! the same records from the Table API and gives the same ids.

pub mod poll;

use serde_json::Value;

use super::registry::{AuthScheme, Tool};
use super::{Input, Preset, Rec, text};
use crate::sources::fields::{Field, RawFields};

pub const PRESET: Preset = Preset {
    name: "servicenow",
    extract,
    vocabulary: &[
        ("approved", "approved"),
        ("Authorize", "approved"),
        ("rejected", "rejected"),
        ("Canceled", "revoked"),
    ],
    fallbacks: &[("environment", "-"), ("service", "-")],
};

/// This tool's entry in the registry ([`super::TOOLS`]).
pub const TOOL: Tool = Tool {
    preset: &PRESET,
    auth: AuthScheme::SignatureOrBearer,
    event_header: None,
    delivery_header: None,
    environment_always: true,
    poll: Some(poll::poll),
    fixtures: Some("servicenow"),
};

/// A change_request `state` by name: its value may be the number.
fn state_name(v: &str) -> Option<&'static str> {
    let n = v.trim().trim_end_matches(".0");
    Some(match n.to_ascii_lowercase().as_str() {
        "-5" | "new" => "New",
        "-4" | "assess" => "Assess",
        "-3" | "authorize" => "Authorize",
        "-2" | "scheduled" => "Scheduled",
        "-1" | "implement" => "Implement",
        "0" | "review" => "Review",
        "3" | "closed" => "Closed",
        "4" | "canceled" | "cancelled" => "Canceled",
        _ => return None,
    })
}

/// The raw status of a change (see the module doc).
fn raw_status(r: &Value) -> Option<String> {
    let state = field(r, "state").and_then(|v| state_name(&v));
    let approval = field(r, "approval").filter(|a| a == "approved" || a == "rejected");
    match (state, approval) {
        (Some("Canceled"), _) => Some("Canceled".into()),
        (_, Some(a)) => Some(a),
        (Some(st), None) => Some(st.into()),
        (None, None) => field(r, "approval"),
    }
}

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
    let Some(approval) = raw_status(r) else {
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
