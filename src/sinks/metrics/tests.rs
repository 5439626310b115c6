use super::*;
use crate::track::Effect;

fn key(r: &str, svc: &str, env: &str) -> Key {
    Key {
        release: r.into(),
        service: svc.into(),
        environment: env.into(),
        site: "".into(),
    }
}

fn metrics(max_tracked: usize, max_labels: usize) -> Metrics {
    let cfg = TrackingConfig {
        max_tracked,
        max_label_values: max_labels,
        ..Default::default()
    };
    Metrics::new(&cfg, false).unwrap()
}

fn status(m: &mut Metrics, k: &Key, s: &str, since: TimeMs) {
    m.apply(&Effect::Status {
        key: k.clone(),
        status: s.into(),
        since,
    });
}

#[test]
fn only_the_current_status_is_exposed() {
    let mut m = metrics(10, 10);
    let k = key("r1", "api", "production");
    status(&mut m, &k, "in_progress", 1_000);
    status(&mut m, &k, "deployed", 5_000);
    let out = m.render();
    assert!(out.contains(r#"relstat_release_status{environment="production",release="r1",service="api",site="",status="deployed"} 1"#), "{out}");
    assert!(!out.contains(r#"status="in_progress"} 1"#), "{out}");
    assert!(out.contains(r#"relstat_release_status_since_timestamp_seconds{environment="production",release="r1",service="api",site=""} 5"#), "{out}");
    assert!(
        out.contains(r#"relstat_releases_in_status{environment="production",status="deployed"} 1"#)
    );
    assert!(out.contains(
        r#"relstat_releases_in_status{environment="production",status="in_progress"} 0"#
    ));
}

#[test]
fn finished_series_leave_after_retention_and_reopen_cancels_it() {
    let mut m = metrics(10, 10);
    let (a, b) = (key("r1", "api", "prod"), key("r2", "api", "prod"));
    status(&mut m, &a, "complete", 0);
    status(&mut m, &b, "complete", 0);
    m.apply(&Effect::Finished {
        key: a.clone(),
        at: 1_000,
    });
    m.apply(&Effect::Finished {
        key: b.clone(),
        at: 1_000,
    });
    m.apply(&Effect::Reopened { key: b.clone() });
    m.expire(1_000 + 3_599_999);
    assert_eq!(m.exposed_len(), 2);
    m.expire(1_000 + 3_600_000);
    assert_eq!(m.exposed_len(), 1);
    assert!(!m.render().contains(r#"release="r1""#));
    assert!(m.render().contains(r#"release="r2""#));
}

#[test]
fn max_tracked_evicts_oldest_finished_first_and_counts() {
    let mut m = metrics(2, 10);
    let (a, b, c) = (key("a", "s", "e"), key("b", "s", "e"), key("c", "s", "e"));
    status(&mut m, &a, "in_progress", 0); // open, oldest
    status(&mut m, &b, "complete", 10);
    m.apply(&Effect::Finished {
        key: b.clone(),
        at: 20,
    });
    status(&mut m, &c, "in_progress", 30);
    m.expire(40);
    let out = m.render();
    assert!(
        !out.contains(r#"release="b""#),
        "finished key goes first: {out}"
    );
    assert!(out.contains(r#"release="a""#) && out.contains(r#"release="c""#));
    assert!(out.contains("relstat_tracked_evictions_total 1"));
}

#[test]
fn label_values_beyond_the_cap_become_other_and_are_counted() {
    let mut m = metrics(10, 2);
    for (i, svc) in ["a", "b", "c", "d"].iter().enumerate() {
        status(&mut m, &key(&format!("r{i}"), svc, "prod"), "deployed", 0);
    }
    let out = m.render();
    assert!(out.contains(r#"service="a""#) && out.contains(r#"service="b""#));
    assert!(out.contains(r#"release="r2",service="other""#), "{out}");
    assert!(
        out.contains(r#"relstat_label_overflow_total{label="service",reason="cardinality"} 2"#),
        "{out}"
    );
}

#[test]
fn per_release_label_values_are_escaped() {
    let mut m = metrics(10, 10);
    status(&mut m, &key("r\"1\\\nx", "api", "prod"), "deployed", 1_500);
    let out = m.render();
    assert!(
        out.contains(r#"relstat_release_status{environment="prod",release="r\"1\\\nx",service="api",site="",status="deployed"} 1"#),
        "{out}"
    );
    assert!(
        out.contains(r#"release="r\"1\\\nx",service="api",site=""} 1.5"#),
        "{out}"
    );
}

#[test]
fn dora_series_exist_at_zero_before_their_first_increment() {
    let mut m = metrics(10, 10);
    status(&mut m, &key("r1", "api", "prod"), "in_progress", 0);
    let out = m.render();
    for outcome in ["success", "failure", "rollback"] {
        assert!(
            out.contains(&format!(
                r#"relstat_deployments_total{{environment="prod",outcome="{outcome}",service="api"}} 0"#
            )),
            "{out}"
        );
    }
    assert!(
        out.contains(
            r#"relstat_restore_seconds_count{environment="prod",service="api",site=""} 0"#
        )
    );
}

#[test]
fn shorten_keeps_short_values_and_cuts_long_ones_on_a_char_boundary() {
    assert!(matches!(shorten("api", 128), Cow::Borrowed("api")));
    let exact = "x".repeat(128);
    assert_eq!(shorten(&exact, 128), exact.as_str());
    let long = "x".repeat(129);
    let short = shorten(&long, 128);
    assert_eq!(short.len(), 128);
    assert!(short.starts_with(&"x".repeat(111)), "{short}");
    assert!(short[111..].starts_with('~'), "{short}");
    // multi-byte chars: never split one, never over the limit
    for lead in 0..4 {
        let v = format!("{}{}", "a".repeat(lead), "é€😀".repeat(40));
        for max in [32, 33, 34, 35, 64, 128] {
            let s = shorten(&v, max);
            assert!(s.len() <= max, "{max}: {s}");
            assert!(
                s.len() + 3 >= max,
                "cut no more than one char short: {max}: {s}"
            );
            assert!(v.starts_with(s.split('~').next().unwrap()));
        }
    }
    // a limit below the minimum is taken as the minimum
    assert_eq!(shorten(&long, 1).len(), MIN_LABEL_VALUE_BYTES);
}

#[test]
fn distinct_long_values_stay_distinct_and_the_same_value_shortens_the_same() {
    let prefix = "p".repeat(200);
    let mut seen = std::collections::HashSet::new();
    for i in 0..1000 {
        let v = format!("{prefix}{i}");
        let s = shorten(&v, 128).into_owned();
        assert_eq!(s, shorten(&v, 128));
        assert!(seen.insert(s), "collision at {i}");
    }
}

#[test]
fn long_label_values_are_shortened_in_every_series_and_counted() {
    let mut m = metrics(10, 10);
    let (rel, svc, env) = ("r".repeat(300), "s".repeat(600), "e".repeat(1000));
    let k = Key {
        release: rel.clone(),
        service: svc.as_str().into(),
        environment: env.as_str().into(),
        site: "x".repeat(129).into(),
    };
    status(&mut m, &k, "deployed", 1_000);
    m.apply(&Effect::Duration {
        key: k.clone(),
        status: "in_progress".into(),
        secs: 5.0,
    });
    let out = m.render();
    for v in [&rel, &svc, &env] {
        assert!(
            !out.contains(&v[..129]),
            "a value over 128 bytes is exposed"
        );
        let short = shorten(v, 128);
        assert!(out.contains(&format!("\"{short}\"")), "{short} missing");
    }
    assert!(out.lines().all(|l| l.len() < 1024), "{out}");
    for label in ["release", "service", "environment", "site"] {
        assert!(
            out.contains(&format!(
                r#"relstat_label_overflow_total{{label="{label}",reason="length"}}"#
            )),
            "{label}: {out}"
        );
    }
    assert!(!out.contains(r#"reason="cardinality"}"#), "{out}");
    // a second long release of the same service is a second series
    let k2 = Key {
        release: format!("{rel}2"),
        ..k.clone()
    };
    status(&mut m, &k2, "deployed", 2_000);
    let out = m.render();
    assert_eq!(out.matches("relstat_release_status{").count(), 2, "{out}");
}

/// The sink's map holds no copy of the key and one string per key (the
/// shown release): services, environments, sites and statuses are shared
/// by every key with that value, `other` included.
#[test]
fn exposed_keys_share_their_label_strings() {
    let mut m = metrics(100, 2);
    for (r, svc) in [
        ("r1", "api"),
        ("r2", "api"),
        ("r3", "web"),
        ("r4", "db"),
        ("r5", "mq"),
    ] {
        status(&mut m, &key(r, svc, "production"), "in_progress", 1_000);
    }
    let e = |r: &str, svc: &str| &m.exposed[&key_id(&key(r, svc, "production"))];
    let shared = |a: &Arc<str>, b: &Arc<str>| Arc::ptr_eq(a, b);
    assert!(shared(&e("r1", "api").service, &e("r2", "api").service));
    assert!(shared(
        &e("r1", "api").environment,
        &e("r5", "mq").environment
    ));
    assert!(shared(&e("r1", "api").status, &e("r5", "mq").status));
    // Beyond max_label_values (2): one shared `other`.
    assert_eq!(&*e("r4", "db").service, OTHER);
    assert!(shared(&e("r4", "db").service, &e("r5", "mq").service));
    // A status change keeps the entry and swaps the shared status.
    status(&mut m, &key("r1", "api", "production"), "deployed", 2_000);
    let id = key_id(&key("r1", "api", "production"));
    assert_eq!(&*m.exposed[&id].status, "deployed");
    assert_eq!(m.exposed_len(), 5);
}

/// The cached handles give the same series as the uncached path: repeated
/// durations, transitions and delays add up in one series each, and a
/// value over the cardinality cap keeps going to `other` and being counted
/// at every use (it is never cached under its own labels).
#[test]
fn cached_handles_count_like_the_vectors_and_capped_values_count_every_use() {
    let mut m = metrics(10, 1);
    let (a, b) = (key("r1", "api", "prod"), key("r2", "web", "prod"));
    for _ in 0..3 {
        for k in [&a, &b] {
            m.apply(&Effect::Duration {
                key: k.clone(),
                status: "in_progress".into(),
                secs: 2.0,
            });
        }
        m.apply(&Effect::Transition {
            environment: "prod".into(),
            from: "in_progress".into(),
            to: "deployed".into(),
        });
        m.apply(&Effect::Delay {
            source: "f".into(),
            site: "s1".into(),
            event_time: 0,
            recorded_at: 3_000,
        });
        m.apply(&Effect::Input {
            source: "f".into(),
            result: InputResult::Accepted,
        });
    }
    let out = m.render();
    for line in [
        r#"relstat_status_duration_seconds_count{environment="prod",service="api",site="",status="in_progress"} 3"#,
        r#"relstat_status_duration_seconds_count{environment="prod",service="other",site="",status="in_progress"} 3"#,
        r#"relstat_status_transitions_total{environment="prod",from="in_progress",to="deployed"} 3"#,
        // The site "" took the one slot: s1 is other at every use.
        r#"relstat_event_delay_seconds_count{site="other",source="f"} 3"#,
        r#"relstat_label_overflow_total{label="site",reason="cardinality"} 3"#,
        r#"relstat_events_total{result="accepted",source="f"} 3"#,
        // web, three times (its durations).
        r#"relstat_label_overflow_total{label="service",reason="cardinality"} 3"#,
    ] {
        assert!(out.contains(line), "{line} missing in\n{out}");
    }
}

#[test]
fn risk_scores_are_bounded_by_max_tracked_and_replaced() {
    let mut m = metrics(2, 10);
    let s = |r: &str, score: f64| {
        (
            r.to_string(),
            "api".to_string(),
            "production".to_string(),
            score,
        )
    };
    // The first max_tracked given (the core passes the newest first).
    m.set_risk_scores(vec![s("r3", 42.5), s("r2", 0.0), s("r1", 99.0)]);
    let out = m.render();
    let series: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("relstat_release_risk_score{"))
        .collect();
    assert_eq!(
        series,
        [
            r#"relstat_release_risk_score{environment="production",release="r2",service="api"} 0"#,
            r#"relstat_release_risk_score{environment="production",release="r3",service="api"} 42.5"#,
        ]
    );
    // Deployed since: gone at the next refresh.
    m.set_risk_scores(vec![s("r3", 40.0)]);
    let out = m.render();
    assert!(!out.contains(r#"release="r2",service="api"}"#), "{out}");
    assert!(
        out.contains("# TYPE relstat_release_risk_score gauge"),
        "{out}"
    );
}

/// The one-shot hash of the label values is the streaming hash of the same
/// bytes, whether they fit the stack buffer or not, and the separators
/// keep ("ab", "c") apart from ("a", "bc").
#[test]
fn labels_id_is_xxh3_of_the_values_each_followed_by_nul() {
    let streamed = |values: &[&str]| {
        let mut h = xxhash_rust::xxh3::Xxh3Default::new();
        for v in values {
            h.update(v.as_bytes());
            h.update(&[0]);
        }
        h.digest128()
    };
    let long = "x".repeat(300);
    for values in [
        &["r1", "svc", "production", ""][..],
        &[][..],
        &["", ""][..],
        &[long.as_str(), "svc"][..],
        &["a".repeat(254).as_str(), "b"][..],
        &["a".repeat(255).as_str()][..],
        &["a".repeat(256).as_str()][..],
    ] {
        assert_eq!(super::labels_id(values), streamed(values), "{values:?}");
    }
    assert_ne!(
        super::labels_id(&["ab", "c"]),
        super::labels_id(&["a", "bc"])
    );
}
