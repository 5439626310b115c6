use super::*;
use crate::event::{ActorType, Event};
use crate::track::HistoryRecord;

fn config(text: &str) -> Config {
    crate::config::parse_text(text.to_string(), None)
        .unwrap()
        .config
}

fn event(id: &str, env: &str, status: &str) -> Event {
    Event {
        id: id.into(),
        time: 1_000,
        release: "r1".into(),
        service: "api".into(),
        environment: env.into(),
        site: "eu".into(),
        status: status.into(),
        actor: "alice".into(),
        actor_type: ActorType::Human,
        source: "s".into(),
        reason: Some("smoke tests failed".into()),
        version: None,
        commit: None,
        artifact: None,
        commit_time: None,
        change_class: None,
    }
}

fn record(e: Event, from: Option<&str>) -> HistoryRecord {
    HistoryRecord {
        order_time: e.time,
        event: e,
        recorded_at: 2_000,
        from: from.map(String::from),
        late: false,
        anomalies: Vec::new(),
        decision: None,
    }
}

fn anomaly(rule: &str, env: &str) -> crate::detect::Anomaly {
    crate::detect::Anomaly {
        rule: rule.into(),
        severity: crate::config::Severity::Critical,
        release: "r1".into(),
        service: "api".into(),
        environment: env.into(),
        site: "eu".into(),
        from: Some("approved".into()),
        to: "deploying".into(),
        actor: "bob".into(),
        actor_type: ActorType::Human,
        source: "s".into(),
        event_id: format!("a-{rule}"),
        event_time: 1_000,
        detected_at: 2_000,
        reason: None,
        version: None,
        commit: None,
        change_class: None,
        approver: None,
        decision: None,
        audit_sequence: None,
        audit_hash: None,
        host: "h".into(),
        message: "no approval".into(),
    }
}

fn routed(cfg: &str, batch: &Batch, effects: &[Effect]) -> Vec<(String, Note)> {
    let r = Router::from_config(&config(cfg)).unwrap();
    r.route(batch, effects, 5_000)
        .into_iter()
        .map(|(d, v)| (d, serde_json::from_slice(&v).unwrap()))
        .collect()
}

const ONE: &str = "[[notify.destinations]]\nname = \"chat\"\nkind = \"slack\"\nurl_file = \"/u\"\n";

#[test]
fn default_routes_send_production_failures_and_the_listed_anomalies() {
    let batch = Batch {
        history: vec![
            record(event("e1", "production", "failed"), Some("deploying")),
            record(event("e2", "staging", "failed"), Some("deploying")),
            record(event("e3", "production", "deployed"), Some("deploying")),
            record(event("e4", "production", "rolled_back"), Some("failed")),
            // Same status again: no transition.
            record(
                event("e5", "production", "rolled_back"),
                Some("rolled_back"),
            ),
        ],
        ..Default::default()
    };
    let effects = vec![
        Effect::Duration {
            key: event("e1", "production", "failed").key(),
            status: "deploying".into(),
            secs: 42.0,
        },
        Effect::Anomaly(Box::new(anomaly("gate_bypass", "production"))),
        Effect::Anomaly(Box::new(anomaly("flapping", "production"))),
        Effect::Anomaly(Box::new(anomaly("stuck", "staging"))),
    ];
    let got = routed(ONE, &batch, &effects);
    let what: Vec<(&str, &str)> = got
        .iter()
        .map(|(_, n)| (n.event_id.as_str(), n.to.as_str()))
        .collect();
    assert_eq!(
        what,
        vec![
            ("e1", "failed"),
            ("e4", "rolled_back"),
            ("a-gate_bypass", "deploying")
        ]
    );
    assert_eq!(got[0].1.previous_secs, Some(42.0));
    assert_eq!(got[0].1.queued_at, 5_000);
    assert_eq!(got[2].1.rule.as_deref(), Some("gate_bypass"));
    // Stable: the same cause gives the same id, another cause another.
    let again = routed(ONE, &batch, &effects);
    assert_eq!(got[0].1.id, again[0].1.id);
    assert_ne!(got[0].1.id, got[1].1.id);
}

#[test]
fn routes_filter_by_status_rule_and_place_and_the_gate_sets_the_default_environments() {
    let cfg = format!(
        "{ONE}[[notify.destinations.routes]]\nstatuses = [\"deployed\"]\nservices = [\"api\"]\n\
         [[notify.destinations]]\nname = \"ops\"\nkind = \"teams\"\nurl_file = \"/u\"\n\
         [model.gate]\nenvironments = [\"prod-eu\"]\napproval_sources = [\"a\"]\n"
    );
    let batch = Batch {
        history: vec![
            record(event("e1", "staging", "deployed"), Some("deploying")),
            record(event("e2", "prod-eu", "failed"), Some("deploying")),
            record(event("e3", "production", "failed"), Some("deploying")),
        ],
        ..Default::default()
    };
    let got = routed(&cfg, &batch, &[]);
    let what: Vec<(&str, &str)> = got
        .iter()
        .map(|(d, n)| (d.as_str(), n.event_id.as_str()))
        .collect();
    assert_eq!(what, vec![("chat", "e1"), ("ops", "e2")]);
    assert_ne!(got[0].1.id, stable_id("ops", &got[0].1));
}

#[test]
fn urls_are_https_or_loopback_http() {
    assert!(check_url("https://hooks.slack.com/services/x").is_ok());
    assert!(check_url("http://127.0.0.1:8080/x").is_ok());
    assert!(check_url("http://[::1]:8080/x").is_ok());
    assert!(check_url("http://localhost/x").is_ok());
    assert!(check_url("http://hooks.example/x").is_err());
    assert!(check_url("ftp://x/y").is_err());
    assert!(check_url("not a url").is_err());
}

#[test]
fn live_commits_skip_events_older_than_max_age_but_not_a_stuck_found_now() {
    let cfg = format!("[notify]\nmax_age = \"1h\"\n{ONE}");
    let r = Router::from_config(&config(&cfg)).unwrap();
    let hour = 3_600_000;
    let now = 100 * hour;
    let mut old = event("old", "production", "failed");
    old.time = now - 2 * hour;
    let mut fresh = event("new", "production", "failed");
    fresh.time = now - hour / 2;
    let batch = Batch {
        history: vec![
            record(old, Some("deploying")),
            record(fresh, Some("deploying")),
        ],
        ..Default::default()
    };
    let mut stuck = anomaly("stuck", "production");
    stuck.event_time = now - 5 * hour;
    stuck.detected_at = now;
    let mut bypass = anomaly("gate_bypass", "production");
    bypass.event_time = now - 2 * hour;
    bypass.detected_at = now;
    let effects = vec![
        Effect::Anomaly(Box::new(stuck)),
        Effect::Anomaly(Box::new(bypass)),
    ];
    let ids = |rows: Vec<(String, Vec<u8>)>| -> Vec<String> {
        rows.iter()
            .map(|(_, v)| serde_json::from_slice::<Note>(v).unwrap().event_id)
            .collect()
    };
    assert_eq!(ids(r.route_live(&batch, &effects, now)), ["new", "a-stuck"]);
    // Imports are late by design: everything routed.
    assert_eq!(
        ids(r.route(&batch, &effects, now)),
        ["old", "new", "a-stuck", "a-gate_bypass"]
    );
}
