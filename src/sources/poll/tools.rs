//! What each poll preset asks its tool's API, and how the answers are
//! reshaped into the payloads the presets map (module doc of [`super`]).

use serde_json::{Value, json};

use super::client::{Client, PollError};
use super::{Poll, json};

/// Pages read per poll and list at most (a first poll of a busy project).
const MAX_PAGES: usize = 50;

/// A GET with `If-None-Match`: `None` when unchanged (304).
pub(crate) fn get_cond(c: &mut Client, poll: &mut Poll<'_>, url: &str) -> Result<Option<Value>, PollError> {
    let etag = poll.state.etags.get(url).cloned();
    let f = c.get(url, etag.as_deref())?;
    let Some(body) = f.body else {
        return Ok(None);
    };
    let v = json(url, &body)?;
    match f.etag {
        Some(e) => poll.state.etags.insert(url.to_string(), e),
        None => poll.state.etags.remove(url),
    };
    Ok(Some(v))
}

pub(crate) fn array(v: &Value) -> &[Value] {
    v.as_array().map(Vec::as_slice).unwrap_or(&[])
}

/// Jenkins' fields of a job and its last builds, in one request.
const JENKINS_TREE: &str = "tree=name,fullName,url,nextBuildNumber,inQueue,\
queueItem[id,inQueueSince],builds[number,url,result,building,timestamp,duration,\
fullDisplayName,actions[parameters[name,value],causes[userId,userName]]]{0,10}";

pub fn jenkins(c: &mut Client, poll: &mut Poll<'_>, url: &str) -> Result<(), PollError> {
    let base = format!("{}/", url.trim_end_matches('/'));
    let api = format!("{base}api/json?{JENKINS_TREE}");
    let Some(job) = get_cond(c, poll, &api)? else {
        return Ok(());
    };
    let builds = array(&job["builds"]);
    let qkey = format!("jenkins-queue:{base}");
    if job["inQueue"].as_bool() == Some(true)
        && let Some(q) = job.get("queueItem").filter(|q| q.is_object())
    {
        let number = job["nextBuildNumber"].clone();
        let since = q["inQueueSince"].clone();
        // the Notification plugin's QUEUED: same id as its webhook
        poll.emit(
            None,
            &json!({
                "name": job["name"],
                "url": base,
                "build": {
                    "number": number,
                    "phase": "QUEUED",
                    "timestamp": since,
                    "full_url": format!("{base}{number}/"),
                }
            }),
        );
        poll.state.open.insert(
            qkey,
            json!({"id": q["id"], "number": number, "since": since}),
        );
    } else if let Some(q) = poll.state.open.remove(&qkey) {
        // Left the queue: it became a build, or it was cancelled.
        let started = builds.iter().any(|b| b["number"] == q["number"]);
        let root = base.split("/job/").next().unwrap_or(&base);
        if !started && let Some(id) = q["id"].as_i64() {
            let qurl = format!("{root}/queue/item/{id}/api/json");
            match c.get(&qurl, None) {
                Ok(f) => {
                    let item = f.body.map(|b| json(&qurl, &b)).transpose()?;
                    if item.is_some_and(|i| i["cancelled"].as_bool() == Some(true)) {
                        poll.emit(
                            None,
                            &json!({
                                "number": q["number"],
                                "url": format!("{base}{}/", q["number"]),
                                "building": false,
                                "result": "CANCELLED",
                                "timestamp": q["since"],
                                "duration": 0,
                            }),
                        );
                    }
                }
                // Jenkins forgets left items after a few minutes.
                Err(PollError::Status { status: 404, .. }) => {}
                Err(e) => return Err(e),
            }
        }
    }
    for b in builds {
        poll.emit(None, b);
        let Some(burl) = b["url"].as_str() else {
            continue;
        };
        let wf = format!("{}/wfapi/describe", burl.trim_end_matches('/'));
        if b["building"].as_bool() != Some(true) {
            poll.state.etags.remove(&wf);
            continue;
        }
        let describe = match get_cond(c, poll, &wf) {
            Ok(d) => d,
            // not a Pipeline job: no wfapi
            Err(PollError::Status { status: 404, .. }) => None,
            Err(e) => return Err(e),
        };
        let Some(d) = describe else { continue };
        if d["status"] == "PAUSED_PENDING_INPUT" {
            let paused_at = array(&d["stages"])
                .iter()
                .rev()
                .find(|s| s["status"] == "PAUSED_PENDING_INPUT")
                .and_then(|s| s["startTimeMillis"].as_i64())
                .or_else(|| d["endTimeMillis"].as_i64());
            poll.emit(
                None,
                &json!({
                    "number": b["number"],
                    "url": burl,
                    "fullDisplayName": b["fullDisplayName"],
                    "building": false,
                    "result": "PAUSED_PENDING_INPUT",
                    "timestamp": paused_at,
                    "duration": 0,
                    "actions": b["actions"],
                }),
            );
        }
    }
    Ok(())
}

/// GitLab's timestamps in a query string.
fn query_escape(s: &str) -> String {
    s.replace('%', "%25")
        .replace('+', "%2B")
        .replace(':', "%3A")
}

pub fn gitlab(c: &mut Client, poll: &mut Poll<'_>, url: &str) -> Result<(), PollError> {
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
                let shaped = if kind == "deployments" {
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
                };
                poll.emit(None, &shaped);
                if let Some(t) = it["updated_at"]
                    .as_str()
                    .and_then(super::super::presets::parse_time)
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

pub fn argocd(c: &mut Client, poll: &mut Poll<'_>, url: &str) -> Result<(), PollError> {
    let Some(v) = get_cond(c, poll, url)? else {
        return Ok(());
    };
    if v.get("metadata").is_some() && v.get("items").is_none() {
        poll.emit(None, &json!({ "app": v }));
        return Ok(());
    }
    for app in array(&v["items"]) {
        poll.emit(None, &json!({ "app": app }));
    }
    Ok(())
}
