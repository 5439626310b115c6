//! Every preset on arbitrary JSON and on mutated real payloads: `parse`
//! never panics and always gives at least one outcome.

use proptest::prelude::*;
use serde_json::Value;

use super::{PresetParser, TOOLS, parse_time};
use crate::config::SourceConfig;
use crate::model::Model;

fn parsers() -> Vec<PresetParser> {
    let model = Model::builtin();
    TOOLS
        .iter()
        .map(|t| {
            let src: SourceConfig = toml::from_str(&format!(
                "name = \"{0}\"\ntype = \"webhook\"\npreset = \"{0}\"\nsecret_file = \"/s\"\n\
                 [fields]\nrelease = \"a.0.b\"\n",
                t.name()
            ))
            .unwrap();
            PresetParser::new(&src, &model, "site").unwrap()
        })
        .collect()
}

/// Keys the presets look for, so arbitrary objects reach deep branches.
const KEYS: &[&str] = &[
    "deployment",
    "deployment_status",
    "workflow_run",
    "workflow_job",
    "object_kind",
    "object_attributes",
    "status",
    "state",
    "id",
    "build",
    "number",
    "phase",
    "timestamp",
    "duration",
    "url",
    "app",
    "rollout",
    "metadata",
    "name",
    "operationState",
    "health",
    "involvedObject",
    "reason",
    "eventType",
    "resource",
    "environment",
    "release",
    "approval",
    "run",
    "webhookEvent",
    "issue",
    "changelog",
    "items",
    "field",
    "toString",
    "result",
    "sys_id",
    "value",
    "conditions",
    "abort",
    "spec",
    "a",
    "b",
    "0",
    "building",
    "actions",
    "causes",
    "parameters",
    "time",
];

fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        "[a-zA-Z0-9_:/ .@-]{0,12}".prop_map(Value::from),
        Just(Value::from("2026-11-01T10:00:00Z")),
        Just(Value::from("success")),
        Just(Value::from("COMPLETED")),
        Just(Value::from("jira:issue_updated")),
    ];
    leaf.prop_recursive(5, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((prop::sample::select(KEYS), inner), 0..8).prop_map(|kv| {
                Value::Object(kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
            }),
        ]
    })
}

fn fixtures() -> Vec<Vec<u8>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut out = Vec::new();
    for d in std::fs::read_dir(dir).unwrap().flatten() {
        if let Ok(files) = std::fs::read_dir(d.path()) {
            for f in files.flatten() {
                if f.path().extension().is_some_and(|e| e == "json") {
                    out.push(std::fs::read(f.path()).unwrap());
                }
            }
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn no_preset_panics_on_arbitrary_json(v in json(), event in prop::option::of(
        prop::sample::select(&["deployment", "deployment_status", "workflow_run",
            "workflow_job", "Pipeline Hook", "Deployment Hook", "Job Hook", "push"][..]))) {
        let body = serde_json::to_vec(&v).unwrap();
        for p in parsers() {
            prop_assert!(!p.parse(event, &body, 0).is_empty());
        }
    }

    #[test]
    fn no_preset_panics_on_mutated_payloads(
        which in any::<prop::sample::Index>(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let all = fixtures();
        let mut body = all[which.index(all.len())].clone();
        for (i, b) in flips {
            let at = i.index(body.len());
            body[at] = b;
        }
        body.truncate(cut.index(body.len() + 1).max(body.len() / 2));
        for p in parsers() {
            prop_assert!(!p.parse(None, &body, 0).is_empty());
        }
    }

    #[test]
    fn parse_time_never_panics(s in ".{0,40}") {
        let _ = parse_time(&s);
    }
}

#[test]
fn every_fixture_parses_with_its_own_preset_or_counts_once() {
    // A payload of another tool is never an error of a preset: at worst one
    // `unmapped` (or `invalid` when a required field is missing).
    for body in fixtures() {
        for p in parsers() {
            assert!(!p.parse(None, &body, 0).is_empty());
        }
    }
}

// --- fallbacks, each with the real payload that needs it (tests/fixtures,
// SOURCES.md)

fn payload(path: &str) -> Value {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(path);
    let text = std::fs::read_to_string(&p).unwrap();
    if path.ends_with(".yaml") {
        serde_norway::from_str(&text).unwrap()
    } else {
        serde_json::from_str(&text).unwrap()
    }
}

fn parser_for(preset: &str, extra: &str) -> PresetParser {
    let src: SourceConfig = toml::from_str(&format!(
        "name = \"{preset}\"\ntype = \"webhook\"\npreset = \"{preset}\"\nsecret_file = \"/s\"\n{extra}"
    ))
    .unwrap();
    PresetParser::new(&src, &Model::builtin(), "site").unwrap()
}

fn one(parsed: Vec<super::Parsed>) -> super::Parsed {
    assert_eq!(parsed.len(), 1, "{parsed:?}");
    parsed.into_iter().next().unwrap()
}

fn event(parsed: Vec<super::Parsed>) -> crate::event::Event {
    match one(parsed) {
        super::Parsed::Event(e) => *e,
        other => panic!("not an event: {other:?}"),
    }
}

/// Azure DevOps' documented started event has no `resource.release` (other
/// versions send it null): the release is read from
/// `resource.environment.release`.
#[test]
fn azure_release_falls_back_to_the_environments_release() {
    let v = payload("azure-devops/ms.vss-release.deployment-started-event.msdocs.json");
    assert!(v.pointer("/resource/release").is_none_or(Value::is_null));
    let e = event(parser_for("azure_devops", "").parse_value(None, &v, 0));
    assert_eq!(e.release, "Release-1");
    assert_eq!(e.environment, "Dev");
    assert_eq!(e.status, "in_progress");
    // The id names the release (5), not the environment's releaseId (0).
    assert!(
        e.id.starts_with("azure_devops:release:5:env:5:"),
        "{}",
        e.id
    );
}

/// A GitLab Job Hook for a job just created carries no time at all: the
/// delivery time is the event's.
#[test]
fn gitlab_job_without_times_takes_the_delivery_time() {
    let v = payload("gitlab/job_hook.created.no_times.2021.json");
    let received = crate::event::now_ms() - 60_000;
    let e = event(parser_for("gitlab", "").parse_value(Some("Job Hook"), &v, received));
    assert_eq!(e.time, received);
    assert_eq!(e.status, "scheduled");
}

/// Jira status transitions on issues with no fix version are no release
/// step: `unmapped` (the status is mapped first), not `invalid`.
#[test]
fn jira_transitions_without_a_fix_version_are_unmapped() {
    let p = parser_for("jira", "");
    for f in [
        "jira/jira_issue_updated.status_todo_to_inprogress.no_fixversion.json",
        "jira/jira_issue_updated.status_inprogress_to_paused.no_fixversion.json",
    ] {
        match one(p.parse_value(None, &payload(f), 0)) {
            super::Parsed::Unmapped(_) => {}
            other => panic!("{f}: {other:?}"),
        }
    }
}

/// Argo CD: an application with no revision in its operation or sync
/// status takes the newest `status.history` revision; one with none at all
/// is `invalid` over a webhook (a poll carries the last one seen:
/// poll::tests); `targetRevision` (a branch) is never the release.
#[test]
fn argocd_revision_falls_back_to_history_never_to_target_revision() {
    let p = parser_for("argocd", "[defaults]\nenvironment = \"production\"\n");
    let mut app = payload("argocd/application.outofsync_degraded.no_revision.yaml");
    app["spec"]["source"]["targetRevision"] = serde_json::json!("main");
    match one(p.parse_value(None, &serde_json::json!({ "app": app.clone() }), 0)) {
        super::Parsed::Invalid(why) => assert!(why.contains("release"), "{why}"),
        other => panic!("{other:?}"),
    }
    app["status"]["history"] = serde_json::json!([
        {"id": 1, "revision": "aaa111", "deployedAt": "2024-08-07T10:00:00Z"},
        {"id": 3, "revision": "ccc333", "deployedAt": "2024-08-07T12:00:00Z"},
        {"id": 2, "revision": "bbb222", "deployedAt": "2024-08-07T11:00:00Z"},
    ]);
    let e = event(p.parse_value(None, &serde_json::json!({ "app": app.clone() }), 0));
    assert_eq!(e.release, "ccc333");
    assert_eq!(e.status, "failed");
    // The poll's last-seen revision comes after history.
    let body = serde_json::json!({ "app": app, super::argocd::LAST_SEEN: "zzz" });
    assert_eq!(event(p.parse_value(None, &body, 0)).release, "ccc333");
}

/// Jenkins builds without an environment parameter need the source's
/// default (check-config warns when it is missing): with none they are
/// `invalid`, with one accepted.
#[test]
fn jenkins_without_an_environment_parameter_needs_the_default() {
    let v = payload("jenkins/build.success.no_params.json");
    match one(parser_for("jenkins", "").parse_value(None, &v, 0)) {
        super::Parsed::Invalid(why) => assert_eq!(why, "missing field environment"),
        other => panic!("{other:?}"),
    }
    let p = parser_for("jenkins", "[defaults]\nenvironment = \"production\"\n");
    assert_eq!(event(p.parse_value(None, &v, 0)).environment, "production");
}

/// Flux's 2020 event formats: `ts` instead of `timestamp`, and `timestamp`
/// as float epoch seconds; both are the event's time (not the delivery's).
#[test]
fn flux_2020_times_are_read() {
    let p = parser_for(
        "flux",
        "[defaults]\nenvironment = \"production\"\n[status_map]\nApplySucceed = \"deployed\"\n[fields]\nrelease = \"involvedObject.name\"\n",
    );
    let ts = payload("flux/event.kustomization.info_applysucceed.2020_ts_no_revision.json");
    let e = event(p.parse_value(None, &ts, 0));
    assert_eq!(
        crate::event::format_rfc3339(e.time),
        "2020-09-17T07:27:11.921Z"
    );
    let float = payload("flux/event.kustomization.info_applysucceed.2020_epoch_float.json");
    let e = event(p.parse_value(None, &float, 0));
    assert_eq!(e.time, 1_587_195_448_071);
}

// --- decisions for the gate's ledger

fn events(parsed: Vec<super::Parsed>) -> Vec<String> {
    parsed
        .into_iter()
        .map(|p| match p {
            super::Parsed::Event(e) => format!(
                "{} {} {}/{}/{} {} by {}",
                e.id, e.status, e.release, e.service, e.environment, e.time, e.actor
            ),
            other => format!("{other:?}"),
        })
        .collect()
}

/// GitHub `deployment_review`: `approved` and `rejected` are decisions by
/// the reviewer for the run's head commit in the environment; `requested`
/// (the real payload) is none. The payloads follow GitHub's documented
/// schema (no author-written approved/rejected example was found: the
/// requested one is real, tests/fixtures/github).
#[test]
fn github_deployment_reviews_are_decisions() {
    let p = parser_for("github", "");
    let real = payload("github/deployment_review.requested.json");
    assert!(matches!(
        one(p.parse_value(Some("deployment_review"), &real, 0)),
        super::Parsed::Unmapped(_)
    ));
    let mut v = real.clone();
    v["action"] = "approved".into();
    v["approver"] = serde_json::json!({"login": "octo-lead", "type": "User"});
    v["comment"] = "ship it".into();
    let e = event(p.parse_value(Some("deployment_review"), &v, 0));
    assert_eq!(
        (
            e.id.as_str(),
            e.status.as_str(),
            e.environment.as_str(),
            e.actor.as_str()
        ),
        (
            "github:deployment_review:5453085689:TST:approved",
            "approved",
            "TST",
            "octo-lead"
        )
    );
    assert_eq!(e.release, "5275a45b7e99c7fd7265b790392c10a74101a67a");
    assert_eq!(e.reason.as_deref(), Some("ship it"));
    v["action"] = "rejected".into();
    // without the header, the body's shape decides
    let e = event(p.parse_value(None, &v, 0));
    assert_eq!(e.status, "rejected");
    assert_eq!(e.id, "github:deployment_review:5453085689:TST:rejected");
}

/// GitHub `deployment_protection_rule`: the deployment waits for a custom
/// rule: its key is paused.
#[test]
fn github_protection_rule_requests_pause_the_deployment() {
    let p = parser_for("github", "");
    let v = serde_json::json!({
        "action": "requested",
        "environment": "production",
        "event": "push",
        "deployment_callback_url": "https://api.github.com/repos/o/r/actions/runs/1/deployment_protection_rule",
        "deployment": {"id": 42, "ref": "v1.2.0", "sha": "abc123", "environment": "production",
                       "created_at": "2026-11-16T10:00:00Z", "updated_at": "2026-11-16T10:00:01Z"},
        "repository": {"name": "payments"},
        "sender": {"login": "alice", "type": "User"}
    });
    let e = event(p.parse_value(Some("deployment_protection_rule"), &v, 0));
    assert_eq!(
        (
            e.id.as_str(),
            e.status.as_str(),
            e.release.as_str(),
            e.environment.as_str()
        ),
        (
            "github:deployment_protection_rule:42",
            "paused",
            "v1.2.0",
            "production"
        )
    );
    assert_eq!(event(p.parse_value(None, &v, 0)).id, e.id);
}

/// GitLab: a deployment object's `approvals` each give a decision (the
/// deployment itself, `blocked` while it waits, is paused).
#[test]
fn gitlab_deployment_approvals_are_decisions() {
    let mut v = payload("gitlab/deployment_hook.success.json");
    v["status"] = "blocked".into();
    v["approvals"] = serde_json::json!([
        {"user": {"username": "rel-mgr"}, "status": "approved", "created_at": "2026-11-16T10:00:00Z", "comment": "ok"},
        {"user": {"username": "sec"}, "status": "rejected", "created_at": "2026-11-16T10:01:00Z", "comment": ""}
    ]);
    let got = events(parser_for("gitlab", "").parse_value(Some("Deployment Hook"), &v, 0));
    assert_eq!(got.len(), 3, "{got:?}");
    assert!(got[0].contains(":blocked paused"), "{got:?}");
    let id = v["deployment_id"].to_string();
    assert!(
        got[1].starts_with(&format!(
            "gitlab:deployment_approval:{id}:rel-mgr:approved approved "
        )),
        "{got:?}"
    );
    assert!(got[1].ends_with(" by rel-mgr"), "{got:?}");
    assert!(
        got[2].starts_with(&format!(
            "gitlab:deployment_approval:{id}:sec:rejected rejected "
        )),
        "{got:?}"
    );
}

/// ServiceNow: the change lifecycle feeds the ledger (Authorize and an
/// approval: approved; a rejection: rejected; Canceled: revoked) and the
/// other states are no release step unless a status_map says so. The real
/// change (state New, approval approved) stays an approval.
#[test]
fn servicenow_change_lifecycle_feeds_the_ledger() {
    let real = payload("servicenow/change_request.standard.new_approved.demisto.json");
    let p = parser_for("servicenow", "[defaults]\nrelease = \"r1\"\n");
    let status = |state: Value, approval: &str| {
        let mut v = real.clone();
        let r = &mut v["result"];
        r["state"] = serde_json::json!({"display_value": "x", "value": state});
        r["approval"] = serde_json::json!({"display_value": "x", "value": approval});
        match one(p.parse_value(None, &v, 0)) {
            super::Parsed::Event(e) => format!("{} {}", e.status, e.id),
            super::Parsed::Unmapped(raw) => format!("unmapped {raw}"),
            other => format!("{other:?}"),
        }
    };
    let sys = "11ab5ccfdb784d505da401a3ca96190a";
    assert_eq!(
        event(p.parse_value(None, &real, 0)).id,
        format!("servicenow:{sys}:approved")
    );
    assert_eq!(
        status((-3.0).into(), "requested"),
        format!("approved servicenow:{sys}:Authorize")
    );
    assert_eq!(
        status("authorize".into(), "requested"),
        format!("approved servicenow:{sys}:Authorize")
    );
    assert_eq!(
        status((-1.0).into(), "rejected"),
        format!("rejected servicenow:{sys}:rejected")
    );
    assert_eq!(
        status(4.into(), "approved"),
        format!("revoked servicenow:{sys}:Canceled")
    );
    for (state, name) in [
        (-5, "New"),
        (-4, "Assess"),
        (-2, "Scheduled"),
        (-1, "Implement"),
        (0, "Review"),
        (3, "Closed"),
    ] {
        assert_eq!(
            status(state.into(), "not requested"),
            format!("unmapped {name}")
        );
    }
    let mapped = parser_for(
        "servicenow",
        "[defaults]\nrelease = \"r1\"\n[status_map]\nImplement = \"in_progress\"\n",
    );
    let mut v = real.clone();
    v["result"]["state"] = serde_json::json!({"value": -1});
    v["result"]["approval"] = serde_json::json!({"value": "approved"});
    // an approval wins over the lifecycle state...
    assert_eq!(event(mapped.parse_value(None, &v, 0)).status, "approved");
    v["result"]["approval"] = serde_json::json!({"value": "not yet requested"});
    // ... else the state, tracked when the status_map names it
    assert_eq!(event(mapped.parse_value(None, &v, 0)).status, "in_progress");
}

/// Azure DevOps: a rejected approval fails the deployment's key as before
/// and is a rejection for the ledger too (the real approval-completed
/// payload, its status set to rejected).
#[test]
fn azure_rejected_approvals_fail_the_key_and_are_rejections() {
    // (the file starts with a UTF-8 BOM, as in its source)
    let text = std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(
        "tests/fixtures/azure-devops/\
             ms.vss-release.deployment-approval-completed-event.aspnet-webhooks-pr.json",
    ))
    .unwrap();
    let mut v: Value = serde_json::from_str(text.trim_start_matches('\u{feff}')).unwrap();
    let got = events(parser_for("azure_devops", "").parse_value(None, &v, 0));
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].contains(" approved "), "{got:?}");
    v["resource"]["approval"]["status"] = "rejected".into();
    let got = events(parser_for("azure_devops", "").parse_value(None, &v, 0));
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(got[0].contains(":rejected failed "), "{got:?}");
    assert!(got[1].contains(":rejected:decision rejected "), "{got:?}");
}
