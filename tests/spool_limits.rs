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
