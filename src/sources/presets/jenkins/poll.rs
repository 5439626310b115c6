//! Polling Jenkins (a job URL, `https://jenkins.example/job/deploy-prod/`):
//! the job's JSON API with its last builds (one request), `wfapi/describe`
//! of running builds (a pipeline waiting at an `input` is `paused`), and
//! the queue item of a queued build (cancelled before it ran). Objects are
//! shaped as the Notification plugin's webhooks or the build API objects
//! this preset maps, so ids match.

use serde_json::json;

use crate::sources::poll::client::{Client, PollError};
use crate::sources::poll::{Poll, array, get_cond, json};

/// Jenkins' fields of a job and its last builds, in one request.
const JENKINS_TREE: &str = "tree=name,fullName,url,nextBuildNumber,inQueue,\
queueItem[id,inQueueSince],builds[number,url,result,building,timestamp,duration,\
fullDisplayName,actions[parameters[name,value],causes[userId,userName]]]{0,10}";

/// One poll of `url`: this tool's
/// [`Poller`](crate::sources::presets::registry::Poller).
pub fn poll(c: &mut Client, poll: &mut Poll<'_>, url: &str) -> Result<(), PollError> {
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
