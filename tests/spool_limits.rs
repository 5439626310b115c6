//! `[spool] when_full = "block"` end to end: with the SIEM unreachable and a
//! small spool, the agent stops reading (the file keeps the lines); once a
//! receiver appears, everything is read and delivered. Nothing is lost.

use std::collections::BTreeSet;
use std::io::Read;
use std::sync::{Arc, Mutex};

use crate::util::*;

/// A plain TCP syslog receiver (RFC 6587 octet counting) on 127.0.0.1:port,
/// collecting messages until the test ends.
fn receiver(port: u16) -> Arc<Mutex<Vec<String>>> {
    let got = Arc::new(Mutex::new(Vec::new()));
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).expect("bind receiver");
    let sink = got.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { return };
            let sink = sink.clone();
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 65536];
                while let Ok(n) = s.read(&mut chunk) {
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    // frames: "LEN SP MSG"
                    while let Some(sp) = buf.iter().position(|b| *b == b' ') {
                        let Ok(len) = std::str::from_utf8(&buf[..sp])
                            .unwrap_or("x")
                            .parse::<usize>()
                        else {
                            return; // not octet counting: give up on this connection
                        };
                        if buf.len() < sp + 1 + len {
                            break;
                        }
                        let msg = String::from_utf8_lossy(&buf[sp + 1..sp + 1 + len]).into_owned();
                        sink.lock().unwrap().push(msg);
                        buf.drain(..sp + 1 + len);
                    }
                }
            });
        }
    });
    got
}

#[test]
fn a_full_spool_blocks_reading_and_loses_nothing_when_the_siem_returns() {
    let port = free_port(); // nothing listens there yet: the SIEM is down
    let mut agent = Agent::new(&format!(
        "[siem]\ntransport = \"tcp\"\naddress = \"127.0.0.1:{port}\"\n\n[spool]\nmax_bytes = \"8KiB\"\nwhen_full = \"block\"\n"
    ));
    // 6,000 releases, each leaving a terminal status: one invalid_transition
    // (~0.6 KiB spooled) per release. The file (~1.3 MB) is about ten read
    // batches (128 KiB each); the limit applies between batches, and up to
    // the channel's few batches may already be on their way to the core.
    let n = 6000;
    let day = day();
    let mut text = String::new();
    for i in 1..=n {
        text.push_str(&format!(
            "{{\"time\":\"{day}T10:00:00Z\",\"release\":\"r{i}\",\"environment\":\"prod\",\"status\":\"complete\"}}\n\
             {{\"time\":\"{day}T10:05:00Z\",\"release\":\"r{i}\",\"environment\":\"prod\",\"status\":\"deployed\"}}\n"
        ));
    }
    std::fs::write(agent.log("a.log"), text).unwrap();
    agent.start();
    // the spool fills up and reading stops well before the end of the file
    assert!(
        wait_until(30, || sample(&agent.metrics(), "relstat_spool_bytes")
            .unwrap_or(0.0)
            >= 8192.0),
        "{}",
        agent.metrics()
    );
    // Batches already on their way to the core are applied; then reading
    // stops: the count settles (bounded wait) short of the end of the file.
    let mut accepted = agent.events("accepted");
    let settled = wait_until(60, || {
        std::thread::sleep(std::time::Duration::from_secs(2));
        let now = agent.events("accepted");
        let same = now == accepted;
        accepted = now;
        same
    });
    assert!(settled, "reading never paused: {accepted} lines accepted");
    assert!(
        accepted < (2 * n) as f64,
        "reading did not pause: {accepted} of {} lines accepted",
        2 * n
    );
    let spooled = sample(&agent.metrics(), "relstat_spool_bytes").unwrap();
    assert!(
        spooled < 4.0 * 1024.0 * 1024.0,
        "the spool ran far past max_bytes: {spooled}"
    );

    // the SIEM comes back: everything is read and delivered
    let got = receiver(port);
    assert!(
        wait_until(90, || agent.events("accepted") == (2 * n) as f64),
        "reading did not resume: {}",
        agent.events("accepted")
    );
    let releases = |msgs: &[String]| -> BTreeSet<String> {
        msgs.iter()
            .filter_map(|m| m.split("release=\"").nth(1))
            .filter_map(|r| r.split('"').next())
            .map(str::to_string)
            .collect()
    };
    assert!(
        wait_until(90, || releases(&got.lock().unwrap()).len() == n),
        "delivered {} of {n} releases",
        releases(&got.lock().unwrap()).len()
    );
    assert!(wait_until(30, || sample(
        &agent.metrics(),
        "relstat_spool_events"
    ) == Some(0.0)));
    assert_eq!(agent.signal("-TERM"), Some(0));
}

// ---- every producer under both policies ----
//
// The SIEM is down (nothing listens) and every transition is spooled
// (`forward = "all"`) into a 1-byte spool: after the first committed event
// the spool is over `max_bytes`. Under `block` every source pauses (file,
// poll and Kubernetes sources stop handing batches over; a webhook answers
// 503 with Retry-After); under `drop_oldest` they all go on and the oldest
// records are dropped.

/// The `[siem]` and `[spool]` tables of these tests.
fn tiny_spool(when_full: &str) -> String {
    format!(
        "[siem]\ntransport = \"tcp\"\naddress = \"127.0.0.1:{port}\"\nforward = \"all\"\n\n\
         [spool]\nmax_bytes = \"1B\"\nwhen_full = \"{when_full}\"\n",
        port = free_port()
    )
}

/// `relstat_events_total{result="accepted",source}`.
fn accepted(a: &Agent, source: &str) -> f64 {
    sample(
        &a.metrics(),
        &format!(r#"relstat_events_total{{result="accepted",source="{source}"}}"#),
    )
    .unwrap_or(0.0)
}

/// `relstat_forward_events_total{result="dropped"}`.
fn dropped(a: &Agent) -> f64 {
    sample(
        &a.metrics(),
        r#"relstat_forward_events_total{result="dropped",sink="tcp"}"#,
    )
    .unwrap_or(0.0)
}

/// A plain HTTP server on 127.0.0.1 answering every request with
/// `answer(n, target)` (n counts the requests from 0), then closing.
fn counting_server(
    answer: impl Fn(usize, &str) -> String + Send + 'static,
) -> (u16, Arc<std::sync::atomic::AtomicUsize>) {
    let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let h = hits.clone();
    let port = http_server(move |line| {
        let target = line.split_whitespace().nth(1).unwrap_or("");
        let n = h.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        json_200(&answer(n, target))
    });
    (port, hits)
}

fn json_fixture(path: &str) -> serde_json::Value {
    serde_json::from_str(
        &std::fs::read_to_string(root().join("tests/fixtures").join(path)).unwrap(),
    )
    .unwrap()
}

/// A Jenkins job whose builds 1..=`builds` finished yesterday.
fn jenkins(builds: Arc<Mutex<u32>>) -> (u16, Arc<std::sync::atomic::AtomicUsize>) {
    let fixture = json_fixture("jenkins/build.lastBuild.success.json");
    let yesterday = chrono::Utc::now().timestamp_millis() - 86_400_000;
    counting_server(move |_, _| {
        let list: Vec<serde_json::Value> = (1..=*builds.lock().unwrap())
            .rev()
            .map(|n| {
                let mut b = fixture.clone();
                b["number"] = n.into();
                b["url"] = format!("http://127.0.0.1/job/fish/{n}/").into();
                b["timestamp"] = (yesterday + i64::from(n) * 60_000).into();
                b
            })
            .collect();
        serde_json::json!({"name": "fish", "inQueue": false, "nextBuildNumber": 99, "builds": list})
            .to_string()
    })
}

/// A Kubernetes API server with one Deployment: the list shows release
/// 1.1, and each watch (the source opens one about every second) one more
/// rollout, 1.2, 1.3 ..., finished yesterday.
fn kubernetes() -> (u16, Arc<std::sync::atomic::AtomicUsize>) {
    let fixture = json_fixture("kubernetes/deployment.available_newreplicasetavailable.json");
    let day = day();
    let deployment = move |n: usize| {
        let mut d = fixture.clone();
        d["spec"]["template"]["spec"]["containers"][0]["image"] = format!("app:1.{n}").into();
        d["metadata"]["generation"] = n.into();
        d["metadata"]["resourceVersion"] = n.to_string().into();
        d["status"]["observedGeneration"] = n.into();
        for c in d["status"]["conditions"].as_array_mut().unwrap() {
            let t = format!("{day}T10:{:02}:00Z", n % 60);
            c["lastUpdateTime"] = t.clone().into();
            c["lastTransitionTime"] = t.into();
        }
        d
    };
    counting_server(move |n, target| {
        if target.contains("watch=1") {
            serde_json::json!({"type": "MODIFIED", "object": deployment(n + 1)}).to_string() + "\n"
        } else {
            serde_json::json!({"metadata": {"resourceVersion": n.to_string()}, "items": [deployment(1)]})
                .to_string()
        }
    })
}

const POLL: &str = "[[sources]]\nname = \"jenkins\"\ntype = \"poll\"\npreset = \"jenkins\"\n\
                    urls = [\"http://127.0.0.1:{P}/job/fish/\"]\ninterval = \"1s\"\n\
                    [sources.defaults]\nenvironment = \"production\"\n";
const KUBE: &str = "[[sources]]\nname = \"k8s\"\ntype = \"kubernetes\"\n\
                    api_server = \"http://127.0.0.1:{P}\"\nnamespaces = [\"default\"]\n\
                    [sources.defaults]\nenvironment = \"production\"\n";

/// The file source: a line appended while the spool is full waits (block)
/// or is read at once (drop_oldest).
#[test]
fn file_sources_pause_under_block_and_go_on_under_drop_oldest() {
    for when_full in ["block", "drop_oldest"] {
        let mut a = Agent::new(&tiny_spool(when_full));
        let line = |i: u32| {
            format!(
                "{{\"time\":\"{}T10:00:{i:02}Z\",\"release\":\"r{i}\",\"environment\":\"prod\",\"status\":\"deployed\"}}\n",
                day()
            )
        };
        std::fs::write(a.log("a.log"), line(1)).unwrap();
        a.start();
        assert!(
            wait_until(15, || a.events("accepted") == 1.0),
            "{when_full}"
        );
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(a.log("a.log"))
            .unwrap();
        std::io::Write::write_all(&mut f, (line(2) + &line(3)).as_bytes()).unwrap();
        if when_full == "block" {
            std::thread::sleep(std::time::Duration::from_secs(4));
            assert_eq!(a.events("accepted"), 1.0, "read past a full spool");
        } else {
            assert!(
                wait_until(15, || a.events("accepted") == 3.0),
                "{}",
                a.metrics()
            );
            assert!(wait_until(10, || dropped(&a) >= 2.0), "{}", a.metrics());
        }
        assert_eq!(a.signal("-TERM"), Some(0), "{when_full}");
    }
}

/// A poll source: under block, the poll after a full spool waits to be
/// handed over, so the tool is not asked again.
#[test]
fn poll_sources_pause_under_block_and_go_on_under_drop_oldest() {
    for when_full in ["block", "drop_oldest"] {
        let builds = Arc::new(Mutex::new(1u32));
        let (port, hits) = jenkins(builds.clone());
        let mut a = Agent::new(&format!(
            "{}\n{}",
            POLL.replace("{P}", &port.to_string()),
            tiny_spool(when_full)
        ));
        a.start();
        assert!(
            wait_until(15, || accepted(&a, "jenkins") == 1.0),
            "{}",
            a.metrics()
        );
        let h0 = hits.load(std::sync::atomic::Ordering::SeqCst);
        *builds.lock().unwrap() = 3;
        if when_full == "block" {
            std::thread::sleep(std::time::Duration::from_secs(4));
            let asked = hits.load(std::sync::atomic::Ordering::SeqCst) - h0;
            assert!(asked <= 1, "polled {asked} times past a full spool");
            assert_eq!(accepted(&a, "jenkins"), 1.0, "{}", a.metrics());
        } else {
            assert!(
                wait_until(15, || accepted(&a, "jenkins") == 3.0),
                "{}",
                a.metrics()
            );
            assert!(wait_until(10, || dropped(&a) >= 2.0), "{}", a.metrics());
        }
        assert_eq!(a.signal("-TERM"), Some(0), "{when_full}");
    }
}

/// A Kubernetes source: under block, the rollouts watched after a full
/// spool wait; under drop_oldest they are tracked as they come.
#[test]
fn kubernetes_sources_pause_under_block_and_go_on_under_drop_oldest() {
    for when_full in ["block", "drop_oldest"] {
        let (port, hits) = kubernetes();
        let mut a = Agent::new(&format!(
            "{}\n{}",
            KUBE.replace("{P}", &port.to_string()),
            tiny_spool(when_full)
        ));
        a.start();
        assert!(
            wait_until(15, || accepted(&a, "k8s") >= 1.0),
            "{}",
            a.metrics()
        );
        if when_full == "block" {
            let before = accepted(&a, "k8s");
            let h0 = hits.load(std::sync::atomic::Ordering::SeqCst);
            // Rollouts keep coming (a watch about every second) ...
            assert!(wait_until(15, || hits
                .load(std::sync::atomic::Ordering::SeqCst)
                >= h0 + 3));
            // ... and none is tracked while the spool is full.
            assert_eq!(accepted(&a, "k8s"), before, "{}", a.metrics());
        } else {
            assert!(
                wait_until(20, || accepted(&a, "k8s") >= 3.0),
                "{}",
                a.metrics()
            );
            assert!(wait_until(10, || dropped(&a) >= 2.0), "{}", a.metrics());
        }
        assert_eq!(a.signal("-TERM"), Some(0), "{when_full}");
    }
}

/// A webhook: 503 with Retry-After while the spool is full (block), 202
/// and the oldest records dropped (drop_oldest).
#[test]
fn webhooks_answer_503_under_block_and_202_under_drop_oldest() {
    use crate::webhooks::{SECRET, auth};
    for when_full in ["block", "drop_oldest"] {
        let mut a = Agent::new(&format!(
            "[[sources]]\nname = \"hook\"\ntype = \"webhook\"\npreset = \"generic\"\n\
             secret_file = \"{{D}}/secret\"\n\n{}",
            tiny_spool(when_full)
        ));
        let d = a.dir.path().display().to_string();
        std::fs::write(a.dir.path().join("secret"), format!("{SECRET}\n")).unwrap();
        let cfg = std::fs::read_to_string(&a.config)
            .unwrap()
            .replace("{D}", &d);
        std::fs::write(&a.config, cfg).unwrap();
        a.start();
        let post = |i: u32| {
            let b = format!(
                r#"{{"time":"{}T10:00:{i:02}Z","release":"r{i}","environment":"prod","status":"deployed"}}"#,
                day()
            );
            post_hook(a.port, "hook", &auth("generic", b.as_bytes()), b.as_bytes())
        };
        assert_eq!(post(1).0, 202, "{when_full}");
        let (status, answer) = post(2);
        if when_full == "block" {
            assert_eq!(status, 503, "{answer}");
            assert!(
                answer.to_ascii_lowercase().contains("retry-after: 30"),
                "{answer}"
            );
            assert_eq!(accepted(&a, "hook"), 1.0);
        } else {
            assert_eq!(status, 202, "{answer}");
            assert_eq!(post(3).0, 202);
            assert_eq!(accepted(&a, "hook"), 3.0);
            assert!(wait_until(10, || dropped(&a) >= 2.0), "{}", a.metrics());
        }
        assert_eq!(a.signal("-TERM"), Some(0), "{when_full}");
    }
}
