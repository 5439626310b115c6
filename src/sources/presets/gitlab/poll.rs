//! Polling GitLab (a project API URL,
//! `https://gitlab.example/api/v4/projects/42`): deployments and pipelines
//! with an `updated_after` cursor, every page (`X-Next-Page`). Objects are
//! shaped as the Deployment and Pipeline hooks this preset maps, so ids
//! match.

use serde_json::{Value, json};

use crate::sources::poll::client::{Client, PollError};
use crate::sources::poll::{Poll, array, json};

/// Pages read per poll and list at most (a first poll of a busy project).
const MAX_PAGES: usize = 50;

/// GitLab's timestamps in a query string.
fn query_escape(s: &str) -> String {
    s.replace('%', "%25")
        .replace('+', "%2B")
        .replace(':', "%3A")
}

/// One poll of `url`: this tool's
/// [`Poller`](crate::sources::presets::registry::Poller).
pub fn poll(c: &mut Client, poll: &mut Poll<'_>, url: &str) -> Result<(), PollError> {
    let base = url.trim_end_matches('/');
    let name_key = format!("gitlab-project:{base}");
    if !poll.state.open.contains_key(&name_key) {
        let f = c.get(base, None)?;
        let p = json(base, f.body.as_deref().unwrap_or(b"{}"))?;
        let name = p["name"].clone();
        poll.state
            .open
            .insert(name_key.clone(), json!({ "name": name }));
    }
    let project = poll.state.open[&name_key].clone();
    for kind in ["deployments", "pipelines"] {
        let ckey = format!("{kind}:{base}");
        let cursor = poll.state.cursors.get(&ckey).cloned();
        let mut newest: Option<i64> = None;
        let mut page = "1".to_string();
        for _ in 0..MAX_PAGES {
            let mut u =
                format!("{base}/{kind}?order_by=updated_at&sort=asc&per_page=100&page={page}");
            if let Some(c) = &cursor {
                u.push_str("&updated_after=");
                u.push_str(&query_escape(c));
            }
            let f = c.get(&u, None)?;
            let list = json(&u, f.body.as_deref().unwrap_or(b"[]"))?;
            for it in array(&list) {
                let shaped = shape(kind, it, &project);
                poll.emit(None, &shaped);
                if let Some(t) = it["updated_at"]
                    .as_str()
                    .and_then(crate::sources::presets::parse_time)
                {
                    newest = newest.max(Some(t));
                }
            }
            match f.next_page.filter(|p| !p.trim().is_empty()) {
                Some(p) => page = p.trim().to_string(),
                None => break,
            }
        }
        // A second of overlap: `updated_after` may be exclusive and clocks
        // coarse; what is read twice is already in `seen`.
        if let Some(t) = newest {
            poll.state
                .cursors
                .insert(ckey, crate::event::format_rfc3339(t - 1000));
        }
    }
    Ok(())
}

/// An item of the API's `deployments` or `pipelines` list (`kind`), shaped
/// as the hook the preset reads (`project`: `{"name": ...}`).
pub fn shape(kind: &str, it: &Value, project: &Value) -> Value {
    if kind == "deployments" {
        let status = it
            .get("status")
            .or_else(|| it.pointer("/deployable/status"));
        json!({
            "object_kind": "deployment",
            "status": status,
            "deployment_id": it["id"],
            "ref": it["ref"],
            "short_sha": it["sha"],
            "environment": it.pointer("/environment/name"),
            "status_changed_at": it["updated_at"],
            "user": it["user"],
            "approvals": it.get("approvals"),
            "project": project,
        })
    } else {
        json!({
            "object_kind": "pipeline",
            "object_attributes": {
                "id": it["id"], "status": it["status"], "ref": it["ref"],
                "sha": it["sha"], "created_at": it["created_at"],
                "started_at": it["started_at"], "finished_at": it["finished_at"],
            },
            "user": it["user"],
            "project": project,
        })
    }
}
