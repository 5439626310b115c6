//! Polling Azure DevOps Release Management (a project's release API URL,
//! `https://vsrm.dev.azure.com/{org}/{project}`): deployments modified since
//! a cursor (`minModifiedTime`), oldest first, and release approvals
//! (newest first), every page (`x-ms-continuationtoken`). Objects are
//! shaped as the service hooks this preset maps (deployment started or
//! completed, approval completed), so ids match the webhooks'. Pending
//! approvals are no decision yet and are left until decided.

use serde_json::{Value, json};

use crate::sources::poll::client::{Client, PollError};
use crate::sources::poll::{Poll, array, json as parse};

/// Pages read per poll and list at most.
const MAX_PAGES: usize = 20;
const API: &str = "api-version=7.1";

fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// A deployment of the REST API as the service hook that reports it:
/// `inProgress` as deployment-started, anything else as
/// deployment-completed with its status as the environment's.
pub fn shape_deployment(d: &Value) -> Value {
    let status = d["deploymentStatus"].as_str().unwrap_or_default();
    let kind = if status == "inProgress" {
        "ms.vss-release.deployment-started-event"
    } else {
        "ms.vss-release.deployment-completed-event"
    };
    json!({
        "eventType": kind,
        "createdDate": d["modifiedOn"],
        "resource": {
            "environment": {
                "id": d["releaseEnvironment"]["id"],
                "name": d["releaseEnvironment"]["name"],
                "status": status,
                "modifiedOn": d["modifiedOn"],
                "releaseDefinition": {"name": d["releaseDefinition"]["name"]},
                "release": {"id": d["release"]["id"], "name": d["release"]["name"]},
            },
            "release": {"id": d["release"]["id"], "name": d["release"]["name"]},
            "deployment": {"requestedFor": d["requestedFor"]},
            "project": {"name": d["projectReference"]["name"]},
        },
    })
}

/// An approval of the REST API as the approval-completed service hook.
pub fn shape_approval(a: &Value) -> Value {
    json!({
        "eventType": "ms.vss-release.deployment-approval-completed-event",
        "createdDate": a["modifiedOn"],
        "resource": {"approval": a, "release": a["release"]},
    })
}

/// Every page of one list, from `first`.
fn pages(c: &mut Client, first: &str, mut each: impl FnMut(&Value)) -> Result<(), PollError> {
    let mut u = first.to_string();
    for _ in 0..MAX_PAGES {
        let f = c.get(&u, None)?;
        let body = parse(&u, f.body.as_deref().unwrap_or(b"{}"))?;
        for it in array(&body["value"]) {
            each(it);
        }
        match f.continuation.filter(|t| !t.trim().is_empty()) {
            Some(t) => u = format!("{first}&continuationToken={}", query_escape(t.trim())),
            None => break,
        }
    }
    Ok(())
}

/// One poll of `url`: this tool's
/// [`Poller`](crate::sources::presets::registry::Poller).
pub fn poll(c: &mut Client, poll: &mut Poll<'_>, url: &str) -> Result<(), PollError> {
    let base = url.trim_end_matches('/');
    let ckey = format!("deployments:{base}");
    let cursor = poll.state.cursors.get(&ckey).cloned();
    let mut u = format!("{base}/_apis/release/deployments?{API}&queryOrder=ascending&$top=100");
    if let Some(c) = &cursor {
        u.push_str(&format!("&minModifiedTime={}", query_escape(c)));
    }
    let mut newest: Option<i64> = None;
    pages(c, &u, |d| {
        poll.emit(None, &shape_deployment(d));
        if let Some(t) = d["modifiedOn"]
            .as_str()
            .and_then(crate::sources::presets::parse_time)
        {
            newest = newest.max(Some(t));
        }
    })?;
    // `minModifiedTime` is inclusive; what is read twice is in `seen`.
    if let Some(t) = newest {
        poll.state
            .cursors
            .insert(ckey, crate::event::format_rfc3339(t));
    }
    let u = format!(
        "{base}/_apis/release/approvals?{API}&statusFilter=all&queryOrder=descending&top=50"
    );
    pages(c, &u, |a| {
        if matches!(a["status"].as_str(), Some("approved" | "rejected")) {
            poll.emit(None, &shape_approval(a));
        }
    })?;
    Ok(())
}
