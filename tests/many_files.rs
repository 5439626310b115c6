//! `relstat run` on a glob matching 5,000 files under a low descriptor
//! limit: every line read once, open descriptors bounded by
//! `[agent] max_open_files`, appends to closed files and every rotation form
//! read once, near-zero CPU at rest, and directories and FIFOs matching the
//! glob counted.

use std::path::Path;

use crate::util::*;

const FILES: usize = 5_000;
const MAX_OPEN: usize = 100;
/// Descriptors besides tailed files: stdio, the store, the listener and a
/// few connections, epoll, inotify, eventfds, a file being fingerprinted.
const OTHERS: usize = 40;

/// Appends lines for releases `from..=to` to `path`, dated yesterday.
fn write(path: &Path, day: &str, from: usize, to: usize) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    let mut buf = String::new();
    for i in from..=to {
        buf.push_str(&format!(
            "{{\"time\":\"{day}T{:02}:{:02}:{:02}Z\",\"release\":\"m{i}\",\"environment\":\"prod\",\"status\":\"deployed\",\"service\":\"s{}\"}}\n",
            (i / 3600) % 24,
            (i / 60) % 60,
            i % 60,
            i % 7
        ));
    }
    f.write_all(buf.as_bytes()).unwrap();
}

fn truncate(path: &Path) {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(0)
        .unwrap();
}

#[test]
fn five_thousand_files_bounded_descriptors_every_line_once() {
    let day = day();
    let mut agent = Agent::new("");
    let text = std::fs::read_to_string(&agent.config).unwrap().replace(
        "site = \"t\"\n",
        &format!("site = \"t\"\nmax_open_files = {MAX_OPEN}\n"),
    );
    std::fs::write(&agent.config, text).unwrap();
    let mut n = 0;
    for i in 0..FILES {
        write(&agent.log(&format!("f{i:04}.log")), &day, n + 1, n + 2);
        n += 2;
    }
    std::fs::create_dir(agent.log("dir.log")).unwrap();
    let fifo = std::ffi::CString::new(agent.log("pipe.log").to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);

    // 5,000 files and a limit of 256 descriptors: the listener must still
    // get its own.
    agent.start_with_nofile(256);
    let pid = agent.pid();
    let mut max_fds = 0;
    let read_all = wait_until(180, || {
        max_fds = max_fds.max(open_fds(pid));
        agent.events("accepted") >= n as f64
    });
    assert!(read_all, "{} of {n} lines", agent.events("accepted"));
    assert!(
        max_fds <= MAX_OPEN + OTHERS,
        "{max_fds} descriptors open while reading"
    );

    // At rest: CPU from /proc/PID/stat over 4 s.
    std::thread::sleep(std::time::Duration::from_secs(1));
    let t0 = cpu_ticks(pid);
    let w0 = std::time::Instant::now();
    std::thread::sleep(std::time::Duration::from_secs(4));
    let idle = (cpu_ticks(pid) - t0) as f64 / 100.0 / w0.elapsed().as_secs_f64();
    eprintln!(
        "{FILES} files: {max_fds} descriptors at most while reading, {:.1}% of a core at rest",
        idle * 100.0
    );
    assert!(idle < 0.20, "{:.1}% of a core at rest", idle * 100.0);

    let m = agent.metrics();
    for kind in ["directory", "not_a_file"] {
        assert_eq!(
            sample(
                &m,
                &format!(r#"relstat_source_errors_total{{kind="{kind}",source="f"}}"#)
            ),
            Some(1.0),
            "{kind}"
        );
    }

    // Appends to files closed long ago.
    let mut more = 0;
    let mut next = |k: usize| {
        let from = n + more + 1;
        more += k;
        (from, n + more)
    };
    for i in (0..FILES).step_by(100) {
        let (a, b) = next(2);
        write(&agent.log(&format!("f{i:04}.log")), &day, a, b);
    }
    // Every rotation form, on closed files, with lines written just before.
    for i in 1..=5 {
        // rename + create
        let p = agent.log(&format!("f{:04}.log", i * 10));
        let (a, b) = next(2);
        write(&p, &day, a, b);
        std::fs::rename(&p, p.with_extension("log.1")).unwrap();
        let (a, b) = next(2);
        write(&p, &day, a, b);
        // copytruncate (the lines before it were read: settled above)
        let p = agent.log(&format!("f{:04}.log", i * 10 + 1));
        std::fs::copy(&p, p.with_extension("log.1")).unwrap();
        truncate(&p);
        let (a, b) = next(3);
        write(&p, &day, a, b);
        // truncate in place, shorter rewrite
        let p = agent.log(&format!("f{:04}.log", i * 10 + 2));
        truncate(&p);
        let (a, b) = next(1);
        write(&p, &day, a, b);
        // delete + recreate (the inode may be reused)
        let p = agent.log(&format!("f{:04}.log", i * 10 + 3));
        std::fs::remove_file(&p).unwrap();
        let (a, b) = next(2);
        write(&p, &day, a, b);
    }
    let total = n + more;
    let mut max_fds = 0;
    let read_all = wait_until(120, || {
        max_fds = max_fds.max(open_fds(pid));
        agent.events("accepted") >= total as f64
    });
    assert!(read_all, "{} of {total} lines", agent.events("accepted"));
    std::thread::sleep(std::time::Duration::from_millis(1500)); // nothing more arrives
    assert_eq!(agent.events("accepted"), total as f64);
    assert_eq!(agent.events("duplicate"), 0.0);
    assert!(max_fds <= MAX_OPEN + OTHERS, "{max_fds} descriptors");
    assert!(http_get(agent.port, "/readyz").is_some_and(|(s, _)| s == 200));
    assert_eq!(agent.signal("-TERM"), Some(0));
}
