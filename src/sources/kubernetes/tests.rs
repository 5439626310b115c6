//! The Kubernetes source against a fake API server on 127.0.0.1 speaking
//! the list/watch protocol (chunked watch events, a bookmark, 410 Gone),
//! with the Deployment fixtures; and the mapping of every condition.
//!
//! The watch event stream is SYNTHETIC: no permissively licensed recording
//! was found (tests/fixtures/SOURCES.md); its shape follows the documented
//! `{"type": ..., "object": ...}` WatchEvent, one JSON object per line.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use super::{KubeSource, PRESET};
use crate::config::SourceConfig;
use crate::model::Model;
use crate::sources::poll::testserver::{Handler, Resp, Server, fixture};
use crate::sources::presets::PresetParser;
use crate::sources::{Item, SourceBatch};

fn kube(api: &str, checkpoint: Option<&[u8]>) -> KubeSource {
    let src: SourceConfig = toml::from_str(&format!(
        "name = \"k\"\ntype = \"kubernetes\"\napi_server = {api:?}\nnamespaces = [\"default\"]\n\
         [defaults]\nenvironment = \"production\"\n"
    ))
    .unwrap();
    let parser = PresetParser::with_preset(&src, &PRESET, &Model::builtin(), "").unwrap();
    KubeSource::new(&src, parser, checkpoint).unwrap()
}

fn statuses(items: &[Item]) -> Vec<(String, String)> {
    items
        .iter()
        .filter_map(|i| match i {
            Item::Event(e) => Some((e.release.clone(), e.status.clone())),
            _ => None,
        })
        .collect()
}

fn with_reason(mut d: Value, reason: &str) -> Value {
    for c in d["status"]["conditions"].as_array_mut().unwrap() {
        if c["type"] == "Progressing" {
            c["reason"] = json!(reason);
        }
    }
    d
}

#[test]
fn every_condition_maps_as_documented() {
    let mut k = kube("http://127.0.0.1:1", None);
    let mut items = Vec::new();
    let progressing = fixture("kubernetes/deployment.progressing_replicasetupdated.yaml");
    k.deployment(&progressing, &mut items);
    k.deployment(
        &with_reason(progressing.clone(), "NewReplicaSetCreated"),
        &mut items,
    );
    k.deployment(&fixture("kubernetes/deployment.paused.yaml"), &mut items);
    k.deployment(
        &fixture("kubernetes/deployment.available_newreplicasetavailable.json"),
        &mut items,
    );
    let mut dead = with_reason(progressing.clone(), "ProgressDeadlineExceeded");
    dead["metadata"]["generation"] = json!(5);
    dead["status"]["observedGeneration"] = json!(5);
    k.deployment(&dead, &mut items);
    // not observed by the controller yet: nothing
    let mut unobserved = progressing.clone();
    unobserved["metadata"]["generation"] = json!(9);
    k.deployment(&unobserved, &mut items);
    assert_eq!(
        statuses(&items),
        vec![
            ("0.3".into(), "in_progress".into()),
            ("0.3".into(), "paused".into()),
            ("0.2".into(), "deployed".into()),
            ("0.3".into(), "failed".into()),
        ]
    );
    // ReplicaSetUpdated and NewReplicaSetCreated are one change (same id).
    // Available=False with NewReplicaSetAvailable is not deployed.
    let mut not_avail = with_reason(
        fixture("kubernetes/deployment.available_false_minimumreplicasunavailable.yaml"),
        "NewReplicaSetAvailable",
    );
    not_avail["metadata"]["annotations"] = json!({"relstat/release": "r1"});
    let mut items = Vec::new();
    k.deployment(&not_avail, &mut items);
    assert!(statuses(&items).is_empty());
}

#[test]
fn a_template_going_back_is_a_rollback_of_the_release_it_replaces() {
    let mut k = kube("http://127.0.0.1:1", None);
    let done = |img: &str, generation: i64, reason: &str| {
        let mut d = with_reason(
            fixture("kubernetes/deployment.progressing_replicasetupdated.yaml"),
            reason,
        );
        d["spec"]["template"]["spec"]["containers"][0]["image"] = json!(img);
        d["metadata"]["generation"] = json!(generation);
        d["status"]["observedGeneration"] = json!(generation);
        d
    };
    let mut items = Vec::new();
    k.deployment(&done("app:1.0", 1, "NewReplicaSetAvailable"), &mut items);
    k.deployment(&done("app:2.0", 2, "ReplicaSetUpdated"), &mut items);
    k.deployment(&done("app:2.0", 2, "NewReplicaSetAvailable"), &mut items);
    k.deployment(&done("app:1.0", 3, "ReplicaSetUpdated"), &mut items);
    assert_eq!(
        statuses(&items),
        vec![
            ("1.0".into(), "deployed".into()),
            ("2.0".into(), "in_progress".into()),
            ("2.0".into(), "deployed".into()),
            ("2.0".into(), "rolled_back".into()),
            ("1.0".into(), "in_progress".into()),
        ]
    );
}

/// List, watch (chunked: an update, a bookmark, a deadline), 410 Gone,
/// list again; then a restart resumes the watch from the stored
/// resourceVersion (no list, nothing re-emitted).
#[test]
fn list_watch_bookmark_gone_and_resume() {
    let lists = Arc::new(AtomicUsize::new(0));
    let l2 = lists.clone();
    let h: Handler = Arc::new(move |r| {
        let path = &r.path;
        if !path.starts_with("/apis/apps/v1/namespaces/default/deployments") {
            return Resp::json(404, "{}");
        }
        let progressing = fixture("kubernetes/deployment.progressing_replicasetupdated.yaml");
        if !path.contains("watch=1") {
            let n = l2.fetch_add(1, Ordering::SeqCst);
            let (items, rv) = if n == 0 {
                (json!([progressing]), "100")
            } else {
                (
                    json!([fixture(
                        "kubernetes/deployment.available_newreplicasetavailable.json"
                    )]),
                    "300",
                )
            };
            let list = json!({"kind": "DeploymentList", "metadata": {"resourceVersion": rv}, "items": items});
            return Resp::json(200, list.to_string());
        }
        let line = |v: Value| format!("{v}\n").into_bytes();
        let chunks = if path.contains("resourceVersion=100&") {
            let mut paused = fixture("kubernetes/deployment.paused.yaml");
            paused["metadata"]["resourceVersion"] = json!("101");
            let mut dead = with_reason(progressing, "ProgressDeadlineExceeded");
            dead["metadata"]["generation"] = json!(5);
            dead["status"]["observedGeneration"] = json!(5);
            dead["metadata"]["resourceVersion"] = json!("160");
            vec![
                line(json!({"type": "MODIFIED", "object": paused})),
                line(
                    json!({"type": "BOOKMARK", "object": {"kind": "Deployment", "metadata": {"resourceVersion": "150"}}}),
                ),
                line(json!({"type": "MODIFIED", "object": dead})),
                line(
                    json!({"type": "ERROR", "object": {"kind": "Status", "code": 410, "reason": "Expired"}}),
                ),
            ]
        } else {
            // an idle watch that the server ends after a while
            vec![line(
                json!({"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "300"}}}),
            )]
        };
        Resp {
            status: 200,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: vec![],
            chunks: Some((chunks, Duration::from_millis(30))),
        }
    });
    let srv = Server::start(h);
    let batches: Arc<Mutex<Vec<SourceBatch>>> = Arc::default();
    let run = |cp: Option<Vec<u8>>| {
        let k = kube(&srv.url(""), cp.as_deref());
        let b2 = batches.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let s2 = stop.clone();
        let t = std::thread::spawn(move || {
            k.run(
                crate::ingest::Ingest::from_fn(move |b| {
                    b2.lock().unwrap().push(b);
                    true
                }),
                s2,
                false,
            )
        });
        (stop, t)
    };
    let (stop, t) = run(None);
    let done = || {
        batches
            .lock()
            .unwrap()
            .iter()
            .flat_map(|b| statuses(&b.items))
            .any(|s| s.1 == "deployed")
    };
    for _ in 0..100 {
        if done() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::Relaxed);
    t.join().unwrap();
    let all: Vec<(String, String)> = batches
        .lock()
        .unwrap()
        .iter()
        .flat_map(|b| statuses(&b.items))
        .collect();
    assert_eq!(
        all,
        vec![
            ("0.3".into(), "in_progress".into()),
            ("0.3".into(), "paused".into()),
            ("0.3".into(), "failed".into()),
            ("0.2".into(), "deployed".into()),
        ]
    );
    assert_eq!(lists.load(Ordering::SeqCst), 2, "410 Gone: listed again");
    let cp = batches
        .lock()
        .unwrap()
        .last()
        .unwrap()
        .checkpoint
        .clone()
        .unwrap()
        .1;
    let state: super::KubeState = serde_json::from_slice(&cp).unwrap();
    assert_eq!(state.resource_versions["default"], "300");
    // restart from the checkpoint: a watch from 300, no list, nothing new
    batches.lock().unwrap().clear();
    let before = srv.paths().len();
    let (stop, t) = run(Some(cp));
    std::thread::sleep(Duration::from_millis(400));
    stop.store(true, Ordering::Relaxed);
    t.join().unwrap();
    let paths = srv.paths()[before..].to_vec();
    assert!(
        !paths.is_empty()
            && paths
                .iter()
                .all(|p| p.contains("watch=1&resourceVersion=300")),
        "{paths:?}"
    );
    assert_eq!(lists.load(Ordering::SeqCst), 2);
    assert!(batches.lock().unwrap().iter().all(|b| b.items.is_empty()));
}
