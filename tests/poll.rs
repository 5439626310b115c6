//! Poll sources with the real binary: a Jenkins job served by a real HTTP
//! server on 127.0.0.1; the agent is stopped between polls while a build
//! finishes, and after the restart the build is emitted once (no gap) and
//! nothing before it again (no duplicate). Also measures the requests a
//! poller makes at rest.

use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::util::{Agent, json_200, sample, serve_http, wait_until};

/// A Jenkins job answering with the builds in `builds` (build objects of
/// tests/fixtures/jenkins/build.lastBuild.success.json, renumbered).
fn jenkins(builds: Arc<Mutex<Vec<u32>>>, hits: Arc<AtomicUsize>) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let fixture: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            crate::util::root().join("tests/fixtures/jenkins/build.lastBuild.success.json"),
        )
        .unwrap(),
    )
    .unwrap();
    serve_http(l, move |_| {
        hits.fetch_add(1, Ordering::SeqCst);
        let list: Vec<serde_json::Value> = builds
            .lock()
            .unwrap()
            .iter()
            .rev()
            .map(|n| {
                let mut b = fixture.clone();
                b["number"] = (*n).into();
                b["url"] = format!("http://127.0.0.1:{port}/job/fish/{n}/").into();
                b["timestamp"] = (1_700_000_000_000i64 + *n as i64 * 60_000).into();
                b
            })
            .collect();
        let body = serde_json::json!({"name": "fish", "inQueue": false, "nextBuildNumber": 99, "builds": list})
                .to_string();
        json_200(&body)
    });
    port
}

fn count(a: &Agent, result: &str) -> f64 {
    sample(
        &a.metrics(),
        &format!(r#"relstat_events_total{{result="{result}",source="jenkins"}}"#),
    )
    .unwrap_or(0.0)
}

#[test]
fn a_restart_between_polls_neither_repeats_nor_misses() {
    let builds = Arc::new(Mutex::new(vec![10u32]));
    let hits = Arc::new(AtomicUsize::new(0));
    let port = jenkins(builds.clone(), hits.clone());
    let mut a = Agent::new(&format!(
        "[[sources]]\nname = \"jenkins\"\ntype = \"poll\"\npreset = \"jenkins\"\n\
         urls = [\"http://127.0.0.1:{port}/job/fish/\"]\ninterval = \"1s\"\n\
         [sources.defaults]\nenvironment = \"production\"\n"
    ));
    a.start();
    assert!(
        wait_until(15, || count(&a, "accepted") == 1.0),
        "{}",
        a.metrics()
    );
    // At rest: one request per job per interval.
    let h0 = hits.load(Ordering::SeqCst);
    std::thread::sleep(Duration::from_secs(5));
    let per_interval = (hits.load(Ordering::SeqCst) - h0) as f64 / 5.0;
    eprintln!("jenkins poller at rest: {per_interval:.2} requests per interval (1 job)");
    assert!((0.6..=1.4).contains(&per_interval), "{per_interval}");
    assert_eq!(count(&a, "accepted"), 1.0);
    assert!(
        a.metrics()
            .contains("relstat_source_poll_duration_seconds_count{source=\"jenkins\"}")
    );
    a.signal("-TERM");
    // A build finishes while the agent is down.
    builds.lock().unwrap().push(11);
    a.start();
    assert!(
        wait_until(15, || count(&a, "accepted") == 2.0),
        "{}",
        a.metrics()
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(count(&a, "accepted"), 2.0);
    assert_eq!(count(&a, "duplicate"), 0.0);
    a.signal("-TERM");
}
