use super::*;

#[test]
fn query_parses_filters_at_and_axis() {
    let q = Query::parse(Some(
        "release=2026.11.3&environment=pro%64uction&site=dc+east",
    ))
    .unwrap();
    assert_eq!(q.filter.release.as_deref(), Some("2026.11.3"));
    assert_eq!(q.filter.environment.as_deref(), Some("production"));
    assert_eq!(q.filter.site.as_deref(), Some("dc east"));
    assert_eq!(q.at, None);
    let q = Query::parse(Some("at=2026-11-03T14:05:00%2B01:00&axis=event")).unwrap();
    assert_eq!(q.at, parse_rfc3339("2026-11-03T13:05:00Z"));
    assert_eq!(q.axis, Axis::Event);
    assert_eq!(Query::parse(None).unwrap().axis, Axis::Recorded);
}

#[test]
fn query_refuses_what_it_does_not_know() {
    for (q, msg) in [
        ("colour=red", "unknown query parameter \"colour\""),
        ("release=a&release=b", "given twice"),
        ("at=yesterday", "not an RFC 3339 time"),
        ("at=2026-11-03T14:05:00Z&axis=wall", "axis=\"wall\""),
        ("axis=event", "axis needs at=TIME"),
        ("release=%zz", "bad percent-encoding"),
    ] {
        let e = Query::parse(Some(q)).unwrap_err().to_string();
        assert!(e.contains(msg), "{q}: {e}");
    }
}

#[test]
fn routes() {
    assert_eq!(route("releases"), Some(Route::List));
    assert_eq!(route("releases/"), Some(Route::List));
    assert_eq!(
        route("releases/2026.11.3"),
        Some(Route::Release("2026.11.3".into()))
    );
    assert_eq!(
        route("releases/a%2Fb/history"),
        Some(Route::History("a/b".into()))
    );
    assert_eq!(route("releases/a/b"), None);
    assert_eq!(route("rollups"), Some(Route::Rollups));
    assert_eq!(
        route("releases/a%2Fb/rollup"),
        Some(Route::Rollup("a/b".into()))
    );
    assert_eq!(
        route("releases/rollup"),
        Some(Route::Release("rollup".into()))
    );
    assert_eq!(route("releases//rollup"), None);
    assert_eq!(route("releasesx"), None);
    assert_eq!(route(""), None);
}

#[test]
fn if_none_match_uses_weak_comparison() {
    let tag = "W/\"abc\"";
    let h = |s: &str| HeaderValue::from_str(s).unwrap();
    assert!(matches(&h("W/\"abc\""), tag));
    assert!(matches(&h("\"abc\""), tag));
    assert!(matches(&h("\"x\", W/\"abc\""), tag));
    assert!(matches(&h("*"), tag));
    assert!(!matches(&h("W/\"abd\""), tag));
}

#[test]
fn redaction_leaves_the_fields_out() {
    let mut h = view::HistoryRow {
        id: Some("e1".into()),
        time: "t".into(),
        recorded_at: "t".into(),
        release: "r".into(),
        service: "s".into(),
        environment: "e".into(),
        site: String::new(),
        from: None,
        to: "deployed".into(),
        actor: Some("sam".into()),
        actor_type: Some(crate::event::ActorType::Human),
        source: Some("f".into()),
        reason: Some("CHG-1".into()),
        version: Some("1.2".into()),
        commit: Some("abc".into()),
        artifact: None,
        late: false,
        anomalies: Some(vec!["gate_bypass".into()]),
        decision: Some("approved".into()),
        approver: Some("sam".into()),
    };
    let names: Vec<String> = REDACTABLE.iter().map(|s| s.to_string()).collect();
    Redact::of(&names).history(&mut h);
    let v = serde_json::to_value(&h).unwrap();
    for k in [
        "id",
        "actor",
        "actor_type",
        "source",
        "reason",
        "version",
        "commit",
        "anomalies",
        "approver",
    ] {
        assert!(v.get(k).is_none(), "{k} in {v}");
    }
    assert_eq!(v["to"], "deployed");
}
