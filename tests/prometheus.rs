//! A real Prometheus (Debian's package, started here on a loopback port with
//! its own config and storage) scrapes the running agent; promtool checks
//! the live exposition.

use crate::util::*;

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

    let prom = Prometheus::start(&prometheus, agent.port, &[]);
    let pport = prom.port;
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
