//! `relstat run` against real files: every rotation form, restarts, kill -9
//! and reloads. The reference is a run without rotation or crash: every
//! line written is accepted exactly once (`duplicate` would show a re-read,
//! a shortfall a loss), and the store agrees with the live counters.

use crate::util::*;

/// Waits (up to 60 s: debug builds on a loaded 2-core machine are slow)
/// until `n` lines are accepted; returns the count seen last.
fn wait_accepted(agent: &Agent, n: usize) -> f64 {
    let mut last = 0.0;
    wait_until(60, || {
        last = agent.events("accepted");
        last >= n as f64
    });
    last
}

fn rotate_rename(agent: &Agent) {
    std::fs::rename(agent.log("a.log"), agent.log("a.log.1")).unwrap();
}

fn rotate_copytruncate(agent: &Agent) {
    std::fs::copy(agent.log("a.log"), agent.log("a.log.1")).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(agent.log("a.log"))
        .unwrap()
        .set_len(0)
        .unwrap();
}

fn rotate_delete(agent: &Agent) {
    std::fs::remove_file(agent.log("a.log")).unwrap();
}

/// Writes 1..=300, rotates with `rotate`, writes 301..=600: each accepted once.
fn rotation_case(rotate: fn(&Agent), settle: bool) {
    let mut agent = Agent::new("");
    append_lines(&agent.log("a.log"), 1, 300);
    agent.start();
    assert_eq!(wait_accepted(&agent, 300), 300.0);
    if !settle {
        // lines the agent may not have read yet when the rotation happens
        append_lines(&agent.log("a.log"), 301, 350);
    }
    rotate(&agent);
    let from = if settle { 301 } else { 351 };
    append_lines(&agent.log("a.log"), from, 600);
    assert_eq!(wait_accepted(&agent, 600), 600.0, "{}", agent.metrics());
    std::thread::sleep(std::time::Duration::from_millis(600)); // nothing more arrives
    assert_eq!(agent.events("accepted"), 600.0);
    assert_eq!(
        agent.events("duplicate"),
        0.0,
        "a rotated file was read twice"
    );
    assert_eq!(agent.signal("-TERM"), Some(0));
    let stored = stored_counts(&agent.dir.path().join("data"));
    assert_eq!(stored.get("accepted"), Some(&600));
}

#[test]
fn rotation_rename_and_create() {
    rotation_case(rotate_rename, false);
}

#[test]
fn rotation_delete_and_recreate() {
    rotation_case(rotate_delete, true);
}

/// copytruncate after the agent has read everything: nothing is lost. (Lines
/// written between logrotate's copy and its truncate are lost by nature;
/// see src/sources/file/mod.rs.)
#[test]
fn rotation_copytruncate() {
    rotation_case(rotate_copytruncate, true);
}

#[test]
fn truncate_in_place_then_rewrite() {
    rotation_case(
        |a| {
            std::fs::OpenOptions::new()
                .write(true)
                .open(a.log("a.log"))
                .unwrap()
                .set_len(0)
                .unwrap();
        },
        true,
    );
}

#[test]
fn new_files_matching_the_glob_are_picked_up_while_running() {
    let mut agent = Agent::new("");
    append_lines(&agent.log("a.log"), 1, 10);
    agent.start();
    assert_eq!(wait_accepted(&agent, 10), 10.0);
    append_lines(&agent.log("b.log"), 11, 20);
    assert_eq!(wait_accepted(&agent, 20), 20.0);
}

#[test]
fn sigterm_commits_and_a_restart_resumes_without_rereading() {
    let mut agent = Agent::new("");
    append_lines(&agent.log("a.log"), 1, 100);
    agent.start();
    assert_eq!(wait_accepted(&agent, 100), 100.0);
    assert_eq!(agent.signal("-TERM"), Some(0));
    append_lines(&agent.log("a.log"), 101, 150); // written while stopped
    agent.start();
    assert_eq!(wait_accepted(&agent, 150), 150.0, "counters carry over");
    std::thread::sleep(std::time::Duration::from_millis(600));
    assert_eq!(agent.events("duplicate"), 0.0);
    assert_eq!(agent.signal("-INT"), Some(0));
    assert_eq!(
        stored_counts(&agent.dir.path().join("data")).get("accepted"),
        Some(&150)
    );
}

/// kill -9 while a large file is being read, twice: after the restarts every
/// line is accepted exactly once.
#[test]
fn kill_9_mid_file_loses_nothing_and_counts_nothing_twice() {
    let n = 30_000;
    let mut agent = Agent::new("");
    append_lines(&agent.log("a.log"), 1, n);
    for round in 0..2 {
        agent.start();
        let before = agent.events("accepted");
        // wait for progress, then kill mid-way (when it is not already done)
        wait_until(20, || {
            agent.events("accepted") > before + 1000.0 + round as f64
        });
        agent.signal("-KILL");
        // the kill really happened mid-file: part of it is committed, not all
        let c = stored_counts(&agent.dir.path().join("data"));
        let done = c.get("accepted").copied().unwrap_or(0);
        assert!(
            done > before as u64 && done < n as u64,
            "round {round}: {done} of {n} committed"
        );
    }
    agent.start();
    assert_eq!(wait_accepted(&agent, n), n as f64);
    std::thread::sleep(std::time::Duration::from_millis(600));
    assert_eq!(agent.events("accepted"), n as f64);
    assert_eq!(
        agent.events("duplicate"),
        0.0,
        "lines re-read after kill -9"
    );
    assert_eq!(agent.signal("-TERM"), Some(0));
    assert_eq!(
        stored_counts(&agent.dir.path().join("data")).get("accepted"),
        Some(&(n as u64))
    );
}

#[test]
fn run_once_reads_the_backlog_commits_and_exits() {
    let agent = Agent::new("");
    append_lines(&agent.log("a.log"), 1, 500);
    std::fs::write(agent.log("b.log"), "garbage\n").unwrap();
    let run = |a: &Agent| relstat(&["run", "--once", "-c", a.config.to_str().unwrap()]);
    let o = run(&agent);
    assert!(o.status.success(), "{}", stderr(&o));
    let data = agent.dir.path().join("data");
    let c = stored_counts(&data);
    assert_eq!(
        (c.get("accepted"), c.get("invalid")),
        (Some(&500), Some(&1))
    );
    append_lines(&agent.log("a.log"), 501, 510);
    assert!(run(&agent).status.success());
    let c = stored_counts(&data);
    assert_eq!((c.get("accepted"), c.get("duplicate")), (Some(&510), None));
    let snap = relstat::store::Store::open(&data).unwrap().load().unwrap();
    assert_eq!(snap.keys.len(), 510);
}

#[test]
fn sighup_reloads_a_valid_config_and_keeps_the_old_one_otherwise() {
    let mut agent = Agent::new("");
    append_lines(&agent.log("a.log"), 1, 5);
    agent.start();
    assert_eq!(wait_accepted(&agent, 5), 5.0);
    let original = std::fs::read_to_string(&agent.config).unwrap();
    // an invalid config: refused, the agent keeps running on the old one
    std::fs::write(
        &agent.config,
        format!("{original}\n[tracking]\nmax_tracked = 0\n"),
    )
    .unwrap();
    agent.signal("-HUP");
    std::thread::sleep(std::time::Duration::from_millis(500));
    append_lines(&agent.log("a.log"), 6, 8);
    assert_eq!(wait_accepted(&agent, 8), 8.0);
    // a valid one with a second source: picked up
    let logs2 = agent.dir.path().join("other");
    std::fs::create_dir_all(&logs2).unwrap();
    std::fs::write(
        &agent.config,
        format!(
            "{original}\n[[sources]]\nname = \"g\"\ntype = \"file\"\npaths = [\"{}/*.log\"]\n",
            logs2.display()
        ),
    )
    .unwrap();
    agent.signal("-HUP");
    append_lines(&logs2.join("x.log"), 100, 104);
    assert!(
        wait_until(20, || sample(
            &agent.metrics(),
            r#"relstat_events_total{result="accepted",source="g"}"#
        ) == Some(5.0)),
        "{}",
        agent.metrics()
    );
    assert_eq!(
        agent.events("accepted"),
        8.0,
        "nothing re-read by the reload"
    );
    assert_eq!(agent.signal("-TERM"), Some(0));
}

/// `relstat spool inspect`: through the admin socket (mode 0600) while the
/// agent runs, from the store once it is stopped; both say the same.
#[test]
fn spool_inspect_through_the_admin_socket_and_from_the_store() {
    use std::os::unix::fs::PermissionsExt;
    let mut agent = Agent::new("[spool]\nenabled = true\n");
    let log = agent.log("a.log");
    std::fs::write(
        &log,
        // leaving a terminal status: one invalid_transition; deployed has
        // no stuck threshold, so no periodic finding joins it
        format!(
            "{{\"time\":\"{day}T10:00:00Z\",\"release\":\"r1\",\"environment\":\"prod\",\"status\":\"complete\"}}\n\
             {{\"time\":\"{day}T10:05:00Z\",\"release\":\"r1\",\"environment\":\"prod\",\"status\":\"deployed\"}}\n",
            day = day()
        ),
    )
    .unwrap();
    agent.start();
    assert!(wait_until(20, || agent.events("accepted") == 2.0));
    let sock = agent.dir.path().join("data/admin.sock");
    assert_eq!(
        std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let inspect = |a: &Agent| {
        let o = relstat(&[
            "spool",
            "inspect",
            "--json",
            "-c",
            a.config.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()
    };
    let live = inspect(&agent);
    assert_eq!(live["events"], 1, "one invalid_transition spooled: {live}");
    assert!(live["bytes"].as_u64().unwrap() > 100);
    assert_eq!(agent.signal("-TERM"), Some(0));
    assert!(!sock.exists(), "the socket is removed on shutdown");
    let stopped = inspect(&agent);
    assert_eq!(
        (stopped["events"].clone(), stopped["bytes"].clone()),
        (live["events"].clone(), live["bytes"].clone())
    );
}

/// What inode reuse looks like to the agent: a file at a checkpointed
/// (device, inode) whose first line is not the one it fingerprinted. Here the
/// file is rewritten in place while the agent is stopped (same inode, other
/// content, longer than the old offset): it must be read from its start,
/// not from the stale offset.
#[test]
fn a_file_rewritten_while_stopped_is_read_from_its_start() {
    use std::os::unix::fs::MetadataExt;
    let agent = Agent::new("");
    let log = agent.log("a.log");
    append_lines(&log, 1, 20);
    let once = |a: &Agent| relstat(&["run", "--once", "-c", a.config.to_str().unwrap()]);
    assert!(once(&agent).status.success());
    let ino = std::fs::metadata(&log).unwrap().ino();
    // rewrite in place: truncate, then more lines than before (other releases)
    std::fs::OpenOptions::new()
        .write(true)
        .open(&log)
        .unwrap()
        .set_len(0)
        .unwrap();
    append_lines(&log, 101, 150);
    assert_eq!(std::fs::metadata(&log).unwrap().ino(), ino, "same inode");
    assert!(once(&agent).status.success());
    let c = stored_counts(&agent.dir.path().join("data"));
    assert_eq!(c.get("accepted"), Some(&70), "20 + all 50 new lines: {c:?}");
}
