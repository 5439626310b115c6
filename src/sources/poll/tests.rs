//! Each poller against a real HTTP server on 127.0.0.1 serving the tools'
//! real payloads (tests/fixtures): mapping, ids shared with the webhooks,
//! 304s, pagination, 429 + Retry-After, 500, 401, and requests at rest.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use super::testserver::{Handler, Resp, Server, fixture};
use super::{PollSource, PollState};
use crate::config::SourceConfig;
use crate::model::Model;
use crate::sources::presets::PresetParser;
use crate::sources::{Item, SourceBatch};

fn source(preset: &str, urls: &[String], extra: &str) -> PollSource {
    let src: SourceConfig = toml::from_str(&format!(
        "name = \"p\"\ntype = \"poll\"\npreset = \"{preset}\"\nurls = {urls:?}\ninterval = \"30s\"\n{extra}\n\
         [defaults]\nenvironment = \"production\"\n"
    ))
    .unwrap();
    let model = Model::builtin();
    let parser = PresetParser::new(&src, &model, "").unwrap();
    PollSource::new(&src, parser, None).unwrap()
}

fn events(b: &SourceBatch) -> Vec<(String, String, String)> {
    b.items
        .iter()
        .filter_map(|i| match i {
            Item::Event(e) => Some((e.id.clone(), e.release.clone(), e.status.clone())),
            _ => None,
        })
        .collect()
}

fn serve(f: impl Fn(&super::testserver::Req) -> Resp + Send + Sync + 'static) -> Server {
    let h: Handler = Arc::new(f);
    Server::start(h)
}

/// Jenkins: a job with a finished and a running pipeline build waiting at
/// an input step (wfapi), then a queued build that is cancelled.
#[test]
fn jenkins_builds_input_steps_and_a_cancelled_queue_item() {
    let port = Arc::new(Mutex::new(0u16));
    let queued = Arc::new(AtomicUsize::new(0));
    let (p2, q2) = (port.clone(), queued.clone());
    let srv = serve(move |r| {
        let base = format!("http://127.0.0.1:{}", p2.lock().unwrap());
        if r.path.starts_with("/job/fish/api/json") {
            // What `tree=` returns: the job with its builds' fields
            // (the fixtures' build objects, their URLs pointed here).
            let mut done = fixture("jenkins/build.lastBuild.success.json");
            done["url"] = json!(format!("{base}/job/fish/10/"));
            let mut running = fixture("jenkins/build.building_in_progress.json");
            running["number"] = json!(11);
            running["url"] = json!(format!("{base}/job/fish/11/"));
            let mut job = fixture("jenkins/job.api.red_lastFailedBuild.json");
            job["name"] = json!("fish");
            job["url"] = json!(format!("{base}/job/fish/"));
            job["builds"] = json!([running, done]);
            job["nextBuildNumber"] = json!(12);
            if q2.load(Ordering::SeqCst) == 0 {
                job["inQueue"] = json!(true);
                job["queueItem"] = json!({"id": 143, "inQueueSince": 1524074568030i64});
            }
            Resp::json(200, job.to_string())
        } else if r.path == "/job/fish/11/wfapi/describe" {
            Resp::json(
                200,
                fixture("jenkins/wfapi.describe.paused_pending_input.json").to_string(),
            )
        } else if r.path == "/queue/item/143/api/json" {
            Resp::json(
                200,
                fixture("jenkins/queue_item.cancelled.json").to_string(),
            )
        } else {
            Resp::json(404, "{}")
        }
    });
    *port.lock().unwrap() = srv.port;
    let mut p = source("jenkins", &[srv.url("/job/fish/")], "");
    let (b, _) = p.poll_once();
    let ev = events(&b);
    assert!(
        ev.contains(&(
            "jenkins:fish:12:QUEUED".into(),
            "fish#12".into(),
            "scheduled".into()
        )),
        "{ev:?}"
    );
    assert!(
        ev.contains(&(
            "jenkins:fish:10:SUCCESS".into(),
            "fish#10".into(),
            "deployed".into()
        )),
        "{ev:?}"
    );
    assert!(
        ev.contains(&(
            "jenkins:fish:11:STARTED".into(),
            "fish#11".into(),
            "in_progress".into()
        )),
        "{ev:?}"
    );
    assert!(
        ev.contains(&(
            "jenkins:fish:11:PAUSED_PENDING_INPUT".into(),
            "fish#11".into(),
            "paused".into()
        )),
        "{ev:?}"
    );
    // the same build from the webhook's point of view: same id
    let done = fixture("jenkins/build.lastBuild.success.json");
    let hook = p.parser.parse_value(None, &done, 0);
    match &hook[..] {
        [crate::sources::fields::Parsed::Event(e)] => assert_eq!(e.id, "jenkins:fish:10:SUCCESS"),
        other => panic!("{other:?}"),
    }
    // Nothing new: nothing emitted.
    let (b, _) = p.poll_once();
    assert!(events(&b).is_empty());
    // The queue item left without a build: cancelled.
    queued.store(1, Ordering::SeqCst);
    let (b, _) = p.poll_once();
    assert_eq!(
        events(&b),
        vec![(
            "jenkins:fish:12:CANCELLED".into(),
            "fish#12".into(),
            "cancelled".into()
        )]
    );
}

/// GitHub: ETags make an unchanged poll three 304s; a finished deployment
/// is no longer followed.
#[test]
fn github_deployments_statuses_and_runs_with_etags() {
    let srv = serve(|r| {
        let etag = |e: &str| {
            if r.header("if-none-match") == Some(e) {
                Some(Resp::json(304, "").header("ETag", e))
            } else {
                None
            }
        };
        if r.path.starts_with("/repos/o/Hello-World/deployments?") {
            etag("\"d1\"").unwrap_or_else(|| {
                let d = fixture("github/deployment.created.json")["deployment"].clone();
                Resp::json(200, json!([d]).to_string()).header("ETag", "\"d1\"")
            })
        } else if r
            .path
            .starts_with("/repos/o/Hello-World/deployments/145988746/statuses")
        {
            etag("\"s1\"").unwrap_or_else(|| {
                let s =
                    fixture("github/deployment_status.success.json")["deployment_status"].clone();
                Resp::json(200, json!([s]).to_string()).header("ETag", "\"s1\"")
            })
        } else if r.path.starts_with("/repos/o/Hello-World/actions/runs") {
            etag("\"r1\"").unwrap_or_else(|| {
                let w =
                    fixture("github/workflow_run.completed.success.json")["workflow_run"].clone();
                Resp::json(
                    200,
                    json!({"total_count": 1, "workflow_runs": [w]}).to_string(),
                )
                .header("ETag", "\"r1\"")
            })
        } else {
            Resp::json(404, "{}")
        }
    });
    let mut p = source("github", &[srv.url("/repos/o/Hello-World")], "");
    let (b, _) = p.poll_once();
    let ids: Vec<String> = events(&b).into_iter().map(|e| e.0).collect();
    assert!(
        ids.contains(&"github:deployment:145988746".to_string()),
        "{ids:?}"
    );
    assert!(
        ids.contains(&"github:deployment_status:209916254".to_string()),
        "{ids:?}"
    );
    assert!(
        ids.iter().any(|i| i.starts_with("github:workflow_run:")),
        "{ids:?}"
    );
    // webhook payload of the same status: same id
    let hook = p.parser.parse_value(
        Some("deployment_status"),
        &fixture("github/deployment_status.success.json"),
        0,
    );
    assert!(
        matches!(&hook[..], [crate::sources::fields::Parsed::Event(e)] if e.id == "github:deployment_status:209916254")
    );
    let before = srv.paths().len();
    let (b, _) = p.poll_once();
    assert!(b.items.is_empty() && b.errors.is_empty(), "{:?}", b.items);
    // the deployment finished (success): only the two lists, both 304
    let after: Vec<String> = srv.paths()[before..].to_vec();
    assert_eq!(after.len(), 2, "{after:?}");
}

/// GitLab: every page of the first poll (X-Next-Page), then only what
/// changed since the cursor.
#[test]
fn gitlab_paginates_and_keeps_an_updated_after_cursor() {
    let srv = serve(|r| {
        let page = |p: &str| {
            r.path.contains(&format!("page={p}&")) || r.path.ends_with(&format!("page={p}"))
        };
        if r.path == "/api/v4/projects/1" {
            Resp::json(200, r#"{"id":1,"name":"shop"}"#)
        } else if r.path.starts_with("/api/v4/projects/1/deployments?") {
            if r.path.contains("updated_after=") {
                return Resp::json(200, "[]");
            }
            let mut d = fixture("gitlab/api_deployment.json");
            if page("1") {
                Resp::json(200, json!([d]).to_string()).header("X-Next-Page", "2")
            } else {
                d["id"] = json!(43);
                d["updated_at"] = json!("2016-08-11T12:00:00.000Z");
                Resp::json(200, json!([d]).to_string()).header("X-Next-Page", "")
            }
        } else if r.path.starts_with("/api/v4/projects/1/pipelines?") {
            if r.path.contains("updated_after=") {
                Resp::json(200, "[]")
            } else {
                Resp::json(
                    200,
                    json!([fixture("gitlab/api_pipeline.json")]).to_string(),
                )
            }
        } else {
            Resp::json(404, "{}")
        }
    });
    let mut p = source("gitlab", &[srv.url("/api/v4/projects/1")], "");
    let (b, _) = p.poll_once();
    let ev = events(&b);
    assert!(
        ev.contains(&(
            "gitlab:deployment:42:success".into(),
            "master".into(),
            "deployed".into()
        )),
        "{ev:?}"
    );
    assert!(
        ev.contains(&(
            "gitlab:deployment:43:success".into(),
            "master".into(),
            "deployed".into()
        )),
        "{ev:?}"
    );
    assert!(
        ev.contains(&(
            "gitlab:pipeline:46:success".into(),
            "main".into(),
            "deployed".into()
        )),
        "{ev:?}"
    );
    assert_eq!(
        p.state
            .cursors
            .get(&format!("deployments:{}", srv.url("/api/v4/projects/1")))
            .map(String::as_str),
        Some("2016-08-11T11:59:59.000Z")
    );
    let (b, _) = p.poll_once();
    assert!(b.items.is_empty());
    let last: Vec<String> = srv.paths().iter().rev().take(2).cloned().collect();
    assert!(
        last.iter()
            .all(|p| p.contains("updated_after=2016-08-11T11%3A")),
        "{last:?}"
    );
}

/// Argo CD: the applications list.
#[test]
fn argocd_applications() {
    let srv = serve(|_| {
        let app = fixture("argocd/application.synced_healthy_succeeded.min.yaml");
        Resp::json(200, json!({"items": [app]}).to_string()).header("ETag", "\"a\"")
    });
    let mut p = source("argocd", &[srv.url("/api/v1/applications")], "");
    let (b, _) = p.poll_once();
    let ev = events(&b);
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!(ev[0].2, "deployed");
    assert!(ev[0].0.starts_with("argocd:"));
    assert_eq!(p.state.etags.len(), 1);
}

/// 429 with Retry-After, 500 and 401 are counted by kind; the poll after
/// them resumes; a token file is sent as a bearer token and re-read.
#[test]
fn errors_are_counted_and_retry_after_is_honoured() {
    let n = Arc::new(AtomicUsize::new(0));
    let n2 = n.clone();
    let srv = serve(move |r| {
        let auth = r.header("authorization").unwrap_or("").to_string();
        match n2.fetch_add(1, Ordering::SeqCst) {
            0 => Resp::json(429, "{}").header("Retry-After", "7"),
            1 => Resp::json(500, "{}"),
            _ if auth != "Bearer fresh" => Resp::json(401, "{}"),
            _ => Resp::json(200, r#"{"items":[]}"#),
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "expired\n").unwrap();
    let mut p = source(
        "argocd",
        &[srv.url("/api/v1/applications")],
        &format!("token_file = {:?}", token.to_str().unwrap()),
    );
    let (b, wait) = p.poll_once();
    assert_eq!(b.errors, vec!["rate_limited"]);
    assert_eq!(wait, Some(Duration::from_secs(7)));
    let (b, _) = p.poll_once();
    assert_eq!(b.errors, vec!["http"]);
    let (b, _) = p.poll_once();
    assert_eq!(b.errors, vec!["auth"]);
    assert_eq!(
        srv.log
            .lock()
            .unwrap()
            .last()
            .unwrap()
            .header("authorization"),
        Some("Bearer expired")
    );
    std::fs::write(&token, "fresh\n").unwrap();
    let (b, _) = p.poll_once();
    assert!(b.errors.is_empty(), "{:?}", b.errors);
}

/// A restored checkpoint re-emits nothing.
#[test]
fn a_checkpoint_restores_what_was_emitted() {
    let srv = serve(|_| {
        let app = fixture("argocd/application.synced_healthy_succeeded.min.yaml");
        Resp::json(200, json!({"items": [app]}).to_string())
    });
    let mut p = source("argocd", &[srv.url("/apps")], "");
    let (b, _) = p.poll_once();
    assert_eq!(events(&b).len(), 1);
    let cp = b.checkpoint.unwrap().1;
    let state: PollState = serde_json::from_slice(&cp).unwrap();
    assert_eq!(state.seen.len(), 1);
    let src: SourceConfig = toml::from_str(&format!(
        "name = \"p\"\ntype = \"poll\"\npreset = \"argocd\"\nurls = [{:?}]\n[defaults]\nenvironment = \"x\"\n",
        srv.url("/apps")
    ))
    .unwrap();
    let parser = PresetParser::new(&src, &Model::builtin(), "").unwrap();
    let mut again = PollSource::new(&src, parser, Some(&cp)).unwrap();
    let (b, _) = again.poll_once();
    assert!(b.items.is_empty());
    let _: Value = serde_json::from_slice(&b.checkpoint.unwrap().1).unwrap();
}

/// Argo CD: an application that names no revision now (OutOfSync and
/// Degraded, a real payload) takes the one last seen for it, kept in the
/// checkpoint; one never seen with a revision is `invalid`, and dead-lettered.
#[test]
fn argocd_application_without_a_revision_takes_the_last_one_seen() {
    let n = Arc::new(AtomicUsize::new(0));
    let n2 = n.clone();
    let srv = serve(move |_| {
        let degraded = fixture("argocd/application.outofsync_degraded.no_revision.yaml");
        let mut healthy = degraded.clone();
        healthy["status"]["sync"] = json!({"status": "Synced", "revision": "abc123"});
        healthy["status"]["health"] = json!({"status": "Healthy"});
        let app = if n2.fetch_add(1, Ordering::SeqCst) == 0 {
            healthy
        } else {
            degraded
        };
        Resp::json(200, json!({"items": [app]}).to_string())
    });
    let mut p = source("argocd", &[srv.url("/api/v1/applications")], "");
    let (b, _) = p.poll_once();
    assert_eq!(events(&b)[0].1, "abc123");
    let cp = b.checkpoint.unwrap().1;
    let (b, _) = p.poll_once();
    let ev = events(&b);
    assert_eq!(ev.len(), 1, "{:?}", b.items);
    assert_eq!((ev[0].1.as_str(), ev[0].2.as_str()), ("abc123", "failed"));
    // From the checkpoint, after a restart: the same.
    let state: PollState = serde_json::from_slice(&cp).unwrap();
    assert_eq!(
        state.cursors.values().collect::<Vec<_>>(),
        vec![&"abc123".to_string()]
    );
    // Never seen with one: invalid, and kept as a dead letter.
    let mut fresh = source("argocd", &[srv.url("/api/v1/applications")], "");
    let (b, _) = fresh.poll_once();
    assert!(events(&b).is_empty());
    assert_eq!(
        b.items,
        vec![Item::Rejected(crate::event::InputResult::Invalid)]
    );
    assert_eq!(b.dead_letters.new.len(), 1);
    let d = &b.dead_letters.new[0];
    assert_eq!((d.source.as_str(), d.result.as_str()), ("p", "invalid"));
    assert!(d.reason.contains("release"), "{}", d.reason);
    assert!(d.payload.contains("my-app-4"));
}

/// The query parameter `name` of a request path, decoded.
fn param(path: &str, name: &str) -> Option<String> {
    let q = path.split_once('?')?.1;
    q.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == name).then(|| {
            let b = v.as_bytes();
            let mut out = Vec::new();
            let mut i = 0;
            while i < b.len() {
                if b[i] == b'%' && i + 2 < b.len() {
                    out.push(u8::from_str_radix(&v[i + 1..i + 3], 16).unwrap());
                    i += 3;
                } else {
                    out.push(b[i]);
                    i += 1;
                }
            }
            String::from_utf8(out).unwrap()
        })
    })
}

/// ServiceNow: the Table API's change requests, paged by
/// `sysparm_offset`/`sysparm_limit` (`{"result": [...]}`, the real record
/// renumbered), a cursor on `sys_updated_on`, the ids the webhook gives
/// (tests/fixtures/webhooks.expected.txt), 429 with Retry-After, and a 401
/// once the token is revoked.
#[test]
fn servicenow_pages_change_requests_with_a_sys_updated_on_cursor() {
    let revoked = Arc::new(Mutex::new(false));
    let r2 = revoked.clone();
    let limited = Arc::new(AtomicUsize::new(0));
    let l2 = limited.clone();
    let srv = serve(move |r| {
        if *r2.lock().unwrap() {
            return Resp::json(401, r#"{"error":{"message":"User Not Authenticated"}}"#);
        }
        if !r.path.starts_with("/api/now/table/change_request?") {
            return Resp::json(404, "{}");
        }
        let query = param(&r.path, "sysparm_query").unwrap();
        let offset: usize = param(&r.path, "sysparm_offset").unwrap().parse().unwrap();
        let limit: usize = param(&r.path, "sysparm_limit").unwrap().parse().unwrap();
        if query.starts_with("sys_updated_on>=") && l2.fetch_add(1, Ordering::SeqCst) == 0 {
            return Resp::json(429, "{}").header("Retry-After", "3");
        }
        let real = fixture("servicenow/change_request.standard.new_approved.demisto.json");
        // 130 changes updated a second apart; the cursor query returns
        // those at or after it
        let all: Vec<Value> = (0..130)
            .map(|i| {
                let mut c = real["result"].clone();
                if i > 0 {
                    c["sys_id"] = json!({"value": format!("c{i:03}"), "display_value": ""});
                }
                let t = format!("2022-01-06 12:{:02}:{:02}", 10 + i / 60, i % 60);
                c["sys_updated_on"] = json!({"value": t, "display_value": ""});
                c
            })
            .filter(|c| match query.strip_prefix("sys_updated_on>=") {
                Some(rest) => {
                    let since = rest.split('^').next().unwrap();
                    c["sys_updated_on"]["value"].as_str().unwrap() >= since
                }
                None => true,
            })
            .collect();
        let page: Vec<&Value> = all.iter().skip(offset).take(limit).collect();
        Resp::json(200, json!({ "result": page }).to_string())
    });
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "admin:secret\n").unwrap();
    let mut p = source(
        "servicenow",
        &[srv.url("")],
        &format!(
            "token_file = {:?}\n[fields]\nrelease = \"number.value\"",
            token.to_str().unwrap()
        ),
    );
    let (b, _) = p.poll_once();
    assert!(b.errors.is_empty(), "{:?}", b.errors);
    let ev = events(&b);
    assert_eq!(ev.len(), 130, "two pages: 100 + 30");
    // the id a webhook of the same record gives
    assert!(
        ev.contains(&(
            "servicenow:11ab5ccfdb784d505da401a3ca96190a:approved".into(),
            "CHG0031889".into(),
            "approved".into()
        )),
        "{:?}",
        &ev[..3]
    );
    let offsets: Vec<String> = srv
        .paths()
        .iter()
        .filter_map(|p| param(p, "sysparm_offset"))
        .collect();
    assert_eq!(offsets, ["0", "100"]);
    assert!(
        srv.log.lock().unwrap()[0]
            .header("authorization")
            .unwrap()
            .starts_with("Basic ")
    );
    assert_eq!(
        p.state.cursors.values().next().map(String::as_str),
        Some("2022-01-06 12:12:09")
    );
    // the next poll asks from the cursor: rate limited first, then the
    // last record again, already emitted
    let (b, wait) = p.poll_once();
    assert_eq!(b.errors, vec!["rate_limited"]);
    assert_eq!(wait, Some(Duration::from_secs(3)));
    let (b, _) = p.poll_once();
    assert!(b.errors.is_empty(), "{:?}", b.errors);
    assert!(b.items.is_empty());
    let last = srv.paths().last().cloned().unwrap();
    assert_eq!(
        param(&last, "sysparm_query").as_deref(),
        Some("sys_updated_on>=2022-01-06 12:12:09^ORDERBYsys_updated_on")
    );
    *revoked.lock().unwrap() = true;
    let (b, _) = p.poll_once();
    assert_eq!(b.errors, vec!["auth"]);
}

/// Jira: the search API with the changelog, paged by `startAt`/`total`;
/// each status change is the webhook it would have been (same id as the
/// real `jira:issue_updated` payload), a cursor on `updated` (JQL, a
/// minute early), 429, and a 401 once the token is revoked.
#[test]
fn jira_searches_changed_issues_with_their_changelog() {
    let real = fixture("jira/jira_issue_updated.status_todo_to_done.json");
    let webhook_id = {
        let src: SourceConfig = toml::from_str(
            "name = \"p\"\ntype = \"webhook\"\npreset = \"jira\"\nsecret_file = \"/s\"\n\
             [status_map]\nDone = \"approved\"\n",
        )
        .unwrap();
        let parser = PresetParser::new(&src, &Model::builtin(), "").unwrap();
        let mut v = real.clone();
        v["issue"]["fields"]["fixVersions"] = json!([{"name": "2026.11"}]);
        match parser.parse_value(None, &v, 0).pop().unwrap() {
            crate::sources::fields::Parsed::Event(e) => e.id,
            other => panic!("{other:?}"),
        }
    };
    let base = real.clone();
    let issue = move |n: usize, to: &str, hid: &str| {
        let real = &base;
        let mut i = real["issue"].clone();
        i["fields"]["fixVersions"] = json!([{"name": "2026.11"}]);
        if n > 0 {
            i["id"] = json!(format!("{}", 20_000 + n));
            i["key"] = json!(format!("CHG-{n}"));
        }
        i["fields"]["updated"] = json!(format!("2026-11-16T10:0{n}:00.000+0000"));
        let mut items = real["changelog"]["items"].clone();
        items[1]["toString"] = json!(to);
        i["changelog"] = json!({"startAt": 0, "maxResults": 1, "total": 1, "histories": [
            {"id": hid, "author": real["user"], "created": format!("2026-11-16T10:0{n}:00.000+0000"),
             "items": items}
        ]});
        i
    };
    let revoked = Arc::new(Mutex::new(false));
    let r2 = revoked.clone();
    let limited = Arc::new(AtomicUsize::new(0));
    let l2 = limited.clone();
    let real_id = real["changelog"]["id"].as_str().unwrap().to_string();
    let rid = real_id.clone();
    let srv = serve(move |r| {
        if *r2.lock().unwrap() {
            return Resp::json(401, "{}");
        }
        let jql = param(&r.path, "jql").unwrap_or_default();
        let start: usize = param(&r.path, "startAt").unwrap().parse().unwrap();
        if !jql.contains("1970/01/01") && l2.fetch_add(1, Ordering::SeqCst) == 0 {
            return Resp::json(429, "{}").header("Retry-After", "2");
        }
        let all = [
            issue(0, "Done", &rid),
            issue(1, "Declined", "30001"),
            issue(2, "In Progress", "30002"),
        ];
        let since_last = jql.contains("2026/11/16 10:01");
        let all: Vec<&Value> = all.iter().skip(if since_last { 2 } else { 0 }).collect();
        let page: Vec<&&Value> = all.iter().skip(start).take(2).collect();
        Resp::json(
            200,
            json!({"startAt": start, "maxResults": 2, "total": all.len(), "issues": page})
                .to_string(),
        )
    });
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "me@acme.example:api-token\n").unwrap();
    let mut p = source(
        "jira",
        &[srv.url("/?jql=project%3DCHG")],
        &format!(
            "token_file = {:?}\n[status_map]\nDone = \"approved\"",
            token.to_str().unwrap()
        ),
    );
    let (b, _) = p.poll_once();
    assert!(b.errors.is_empty(), "{:?}", b.errors);
    let ev = events(&b);
    assert_eq!(
        ev,
        vec![
            (webhook_id.clone(), "2026.11".into(), "approved".into()),
            (
                "jira:20001:30001".into(),
                "2026.11".into(),
                "rejected".into()
            ),
        ],
        "In Progress is no release step"
    );
    assert_eq!(webhook_id, format!("jira:10010:{real_id}"));
    let starts: Vec<String> = srv
        .paths()
        .iter()
        .filter_map(|p| param(p, "startAt"))
        .collect();
    assert_eq!(starts, ["0", "2"]);
    let first = srv.paths()[0].clone();
    assert_eq!(
        param(&first, "jql").as_deref(),
        Some("(project=CHG) AND updated >= \"1970/01/01 00:00\" ORDER BY updated ASC")
    );
    assert!(first.contains("expand=changelog"));
    let (b, wait) = p.poll_once();
    assert_eq!(b.errors, vec!["rate_limited"]);
    assert_eq!(wait, Some(Duration::from_secs(2)));
    let (b, _) = p.poll_once();
    assert!(b.errors.is_empty(), "{:?}", b.errors);
    assert!(events(&b).is_empty(), "the newest issue again: nothing new");
    let last = srv.paths().last().cloned().unwrap();
    assert_eq!(
        param(&last, "jql").as_deref(),
        Some("(project=CHG) AND updated >= \"2026/11/16 10:01\" ORDER BY updated ASC")
    );
    *revoked.lock().unwrap() = true;
    let (b, _) = p.poll_once();
    assert_eq!(b.errors, vec!["auth"]);
}

/// Azure DevOps: release deployments (a `minModifiedTime` cursor) and
/// approvals, paged by `x-ms-continuationtoken`; the approval is the real
/// service hook's object, and gives the webhook's id; a rejection also
/// gives its ledger decision; pending approvals wait; 429; a 401 once the
/// token is revoked.
#[test]
fn azure_devops_deployments_and_approvals_with_continuation_tokens() {
    let text = std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(
        "tests/fixtures/azure-devops/\
             ms.vss-release.deployment-approval-completed-event.aspnet-webhooks-pr.json",
    ))
    .unwrap();
    let hook: Value = serde_json::from_str(text.trim_start_matches('\u{feff}')).unwrap();
    let webhook_id = {
        let src: SourceConfig = toml::from_str(
            "name = \"p\"\ntype = \"webhook\"\npreset = \"azure_devops\"\nsecret_file = \"/s\"\n",
        )
        .unwrap();
        let parser = PresetParser::new(&src, &Model::builtin(), "").unwrap();
        match parser.parse_value(None, &hook, 0).pop().unwrap() {
            crate::sources::fields::Parsed::Event(e) => e.id,
            other => panic!("{other:?}"),
        }
    };
    let approval = hook["resource"]["approval"].clone();
    let revoked = Arc::new(Mutex::new(false));
    let r2 = revoked.clone();
    let limited = Arc::new(AtomicUsize::new(0));
    let l2 = limited.clone();
    let srv = serve(move |r| {
        if *r2.lock().unwrap() {
            return Resp::json(401, "{}");
        }
        let token = param(&r.path, "continuationToken");
        let deployment = |id: u64, status: &str, modified: &str| {
            json!({
                "id": id, "deploymentStatus": status, "modifiedOn": modified,
                "release": {"id": 7, "name": "Release-7"},
                "releaseDefinition": {"id": 1, "name": "Fabrikam.CD"},
                "releaseEnvironment": {"id": 30 + id, "name": "Prod"},
                "requestedFor": {"displayName": "Chuck Reinhart", "uniqueName": "chuck@fabrikam.example"},
                "projectReference": {"name": "Fabrikam-Fiber-Git"}
            })
        };
        if r.path.starts_with("/org/proj/_apis/release/deployments?") {
            if param(&r.path, "minModifiedTime").is_some() {
                if l2.fetch_add(1, Ordering::SeqCst) == 0 {
                    return Resp::json(429, "{}").header("Retry-After", "4");
                }
                return Resp::json(
                    200,
                    json!({"count": 1, "value": [deployment(2, "succeeded", "2026-11-16T10:05:00Z")]})
                        .to_string(),
                );
            }
            match token.as_deref() {
                None => Resp::json(
                    200,
                    json!({"count": 1, "value": [deployment(1, "inProgress", "2026-11-16T10:00:00Z")]})
                        .to_string(),
                )
                .header("x-ms-continuationtoken", "p2"),
                Some("p2") => Resp::json(
                    200,
                    json!({"count": 1, "value": [deployment(2, "succeeded", "2026-11-16T10:05:00Z")]})
                        .to_string(),
                ),
                _ => Resp::json(400, "{}"),
            }
        } else if r.path.starts_with("/org/proj/_apis/release/approvals?") {
            let mut rejected = approval.clone();
            rejected["id"] = json!(9);
            rejected["status"] = json!("rejected");
            let mut pending = approval.clone();
            pending["id"] = json!(10);
            pending["status"] = json!("pending");
            match token.as_deref() {
                None => Resp::json(
                    200,
                    json!({"count": 2, "value": [pending, rejected]}).to_string(),
                )
                .header("x-ms-continuationtoken", "a2"),
                Some("a2") => Resp::json(
                    200,
                    json!({"count": 1, "value": [approval.clone()]}).to_string(),
                ),
                _ => Resp::json(400, "{}"),
            }
        } else {
            Resp::json(404, "{}")
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, ":personal-access-token\n").unwrap();
    let mut p = source(
        "azure_devops",
        &[srv.url("/org/proj")],
        &format!("token_file = {:?}", token.to_str().unwrap()),
    );
    let (b, _) = p.poll_once();
    assert!(b.errors.is_empty(), "{:?}", b.errors);
    let ev = events(&b);
    assert_eq!(
        ev,
        vec![
            (
                "azure_devops:release:7:env:31:started".into(),
                "Release-7".into(),
                "in_progress".into()
            ),
            (
                "azure_devops:release:7:env:32:succeeded".into(),
                "Release-7".into(),
                "deployed".into()
            ),
            (
                "azure_devops:approval:1:9:rejected".into(),
                "Release-1".into(),
                "failed".into()
            ),
            (
                "azure_devops:approval:1:9:rejected:decision".into(),
                "Release-1".into(),
                "rejected".into()
            ),
            (webhook_id.clone(), "Release-1".into(), "approved".into()),
        ]
    );
    assert_eq!(webhook_id, "azure_devops:approval:1:0:approved");
    assert!(
        srv.log.lock().unwrap()[0]
            .header("authorization")
            .unwrap()
            .starts_with("Basic ")
    );
    let (b, wait) = p.poll_once();
    assert_eq!(b.errors, vec!["rate_limited"]);
    assert_eq!(wait, Some(Duration::from_secs(4)));
    let (b, _) = p.poll_once();
    assert!(b.errors.is_empty(), "{:?}", b.errors);
    assert!(events(&b).is_empty(), "all read before");
    let asked: Vec<String> = srv
        .paths()
        .iter()
        .filter_map(|p| param(p, "minModifiedTime"))
        .collect();
    assert_eq!(
        asked.last().map(String::as_str),
        Some("2026-11-16T10:05:00.000Z")
    );
    *revoked.lock().unwrap() = true;
    let (b, _) = p.poll_once();
    assert_eq!(b.errors, vec!["auth"]);
}
