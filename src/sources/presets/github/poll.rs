//! Polling GitHub's REST API (a repository API URL,
//! `https://api.github.com/repos/OWNER/REPO`): deployments, the statuses of
//! those not finished yet, and workflow runs, all with `If-None-Match` (a
//! 304 costs no rate limit). Objects are shaped as the webhooks this
//! preset maps (`X-GitHub-Event` given), so ids match.

use serde_json::{Value, json};

use crate::sources::poll::client::{Client, PollError};
use crate::sources::poll::{Poll, array, get_cond};

/// Unfinished GitHub deployments followed per repository.
const MAX_OPEN_DEPLOYMENTS: usize = 20;

fn github_terminal(state: &str) -> bool {
    matches!(state, "success" | "failure" | "error" | "inactive")
}

/// One poll of `url`: this tool's
/// [`Poller`](crate::sources::presets::registry::Poller).
pub fn poll(c: &mut Client, poll: &mut Poll<'_>, url: &str) -> Result<(), PollError> {
    let base = url.trim_end_matches('/');
    let repo = json!({ "name": base.rsplit('/').next() });
    let prefix = format!("github-deployment:{base}:");
    let du = format!("{base}/deployments?per_page=30");
    if let Some(list) = get_cond(c, poll, &du)? {
        for d in array(&list) {
            poll.emit(
                Some("deployment"),
                &json!({ "deployment": d, "repository": repo }),
            );
            let Some(id) = d["id"].as_i64() else { continue };
            let key = format!("{prefix}{id:020}");
            if !poll.state.seen.contains_key(&format!("done:{key}")) {
                poll.state.open.entry(key).or_insert_with(|| d.clone());
            }
        }
        let open: Vec<String> = poll
            .state
            .open
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(k, _)| k.clone())
            .collect();
        for k in open.iter().rev().skip(MAX_OPEN_DEPLOYMENTS) {
            poll.state.open.remove(k);
        }
    }
    let open: Vec<(String, Value)> = poll
        .state
        .open
        .range(prefix.clone()..)
        .take_while(|(k, _)| k.starts_with(&prefix))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (key, d) in open {
        let su = format!("{base}/deployments/{}/statuses?per_page=30", d["id"]);
        let Some(list) = get_cond(c, poll, &su)? else {
            continue;
        };
        // newest first: emit oldest first
        for st in array(&list).iter().rev() {
            poll.emit(
                Some("deployment_status"),
                &json!({ "deployment": d, "deployment_status": st, "repository": repo }),
            );
        }
        if array(&list)
            .first()
            .and_then(|s| s["state"].as_str())
            .is_some_and(github_terminal)
        {
            poll.state.open.remove(&key);
            poll.state.etags.remove(&su);
            poll.state
                .seen
                .insert(format!("done:{key}"), crate::event::now_ms());
        }
    }
    let ru = format!("{base}/actions/runs?per_page=30");
    if let Some(v) = get_cond(c, poll, &ru)? {
        for r in array(&v["workflow_runs"]).iter().rev() {
            poll.emit(
                Some("workflow_run"),
                &json!({ "workflow_run": r, "repository": r.get("repository").unwrap_or(&repo) }),
            );
        }
    }
    Ok(())
}
