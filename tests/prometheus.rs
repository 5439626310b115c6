//! A real Prometheus (Debian's package, started here on a loopback port with
//! its own config and storage) scrapes the running agent; promtool checks
//! the live exposition.

use std::process::{Command, Stdio};

use crate::util::*;

struct Prometheus(std::process::Child);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn prometheus_scrapes_the_agent_and_promtool_accepts_the_live_exposition() {
    let (Some(prometheus), Some(promtool)) = (peer("prometheus"), peer("promtool")) else {
        return;
    };
    let mut agent = Agent::new("");
    append_lines(&agent.log("a.log"), 1, 50);
    agent.start();
    assert!(wait_until(20, || agent.events("accepted") == 50.0));

    let (clean, findings) = promtool_check_metrics(&promtool, &agent.metrics());
    assert!(
        clean,
        "promtool check metrics on the live /metrics:\n{findings}"
    );

    let pdir = tempfile::tempdir().unwrap();
    let pport = free_port();
    let cfg = pdir.path().join("prometheus.yml");
    std::fs::write(
        &cfg,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: relstat\n    static_configs:\n      - targets: ['127.0.0.1:{}']\n",
            agent.port
        ),
    )
    .unwrap();
    let _prom = Prometheus(
        Command::new(prometheus)
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                pdir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{pport}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus starts"),
    );
    assert!(
        wait_until(60, || http_get(pport, "/-/ready")
            .is_some_and(|(s, _)| s == 200)),
        "prometheus did not become ready"
    );
    let query = |q: &str| {
        http_get(pport, &format!("/api/v1/query?query={q}"))
            .map(|(_, b)| b)
            .unwrap_or_default()
    };
    let mut last = String::new();
    let up = wait_until(60, || {
        last = query("up%7Bjob%3D%22relstat%22%7D");
        last.contains(r#""value":["#) && last.contains(r#","1"]"#)
    });
    assert!(up, "up{{job=\"relstat\"}} never became 1: {last}");
    let accepted = query("relstat_events_total%7Bresult%3D%22accepted%22%7D");
    assert!(accepted.contains(r#","50"]"#), "{accepted}");
}
