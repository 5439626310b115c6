//! Every preset on arbitrary JSON and on mutated real payloads: `parse`
//! never panics and always gives at least one outcome.

use proptest::prelude::*;
use serde_json::Value;

use super::{PresetParser, TOOLS, parse_time};
use crate::config::SourceConfig;
use crate::model::Model;

fn parsers() -> Vec<PresetParser> {
    let model = Model::builtin();
    TOOLS
        .iter()
        .map(|t| {
            let src: SourceConfig = toml::from_str(&format!(
                "name = \"{0}\"\ntype = \"webhook\"\npreset = \"{0}\"\nsecret_file = \"/s\"\n\
                 [fields]\nrelease = \"a.0.b\"\n",
                t.name()
            ))
            .unwrap();
            PresetParser::new(&src, &model, "site").unwrap()
        })
        .collect()
}

/// Keys the presets look for, so arbitrary objects reach deep branches.
const KEYS: &[&str] = &[
    "deployment",
    "deployment_status",
    "workflow_run",
    "workflow_job",
    "object_kind",
    "object_attributes",
    "status",
    "state",
    "id",
    "build",
    "number",
    "phase",
    "timestamp",
    "duration",
    "url",
    "app",
    "rollout",
    "metadata",
    "name",
    "operationState",
    "health",
    "involvedObject",
    "reason",
    "eventType",
    "resource",
    "environment",
    "release",
    "approval",
    "run",
    "webhookEvent",
    "issue",
    "changelog",
    "items",
    "field",
    "toString",
    "result",
    "sys_id",
    "value",
    "conditions",
    "abort",
    "spec",
    "a",
    "b",
    "0",
    "building",
    "actions",
    "causes",
    "parameters",
    "time",
];

fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        "[a-zA-Z0-9_:/ .@-]{0,12}".prop_map(Value::from),
        Just(Value::from("2026-11-01T10:00:00Z")),
        Just(Value::from("success")),
        Just(Value::from("COMPLETED")),
        Just(Value::from("jira:issue_updated")),
    ];
    leaf.prop_recursive(5, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((prop::sample::select(KEYS), inner), 0..8).prop_map(|kv| {
                Value::Object(kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
            }),
        ]
    })
}

fn fixtures() -> Vec<Vec<u8>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut out = Vec::new();
    for d in std::fs::read_dir(dir).unwrap().flatten() {
        if let Ok(files) = std::fs::read_dir(d.path()) {
            for f in files.flatten() {
                if f.path().extension().is_some_and(|e| e == "json") {
                    out.push(std::fs::read(f.path()).unwrap());
                }
            }
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn no_preset_panics_on_arbitrary_json(v in json(), event in prop::option::of(
        prop::sample::select(&["deployment", "deployment_status", "workflow_run",
            "workflow_job", "Pipeline Hook", "Deployment Hook", "Job Hook", "push"][..]))) {
        let body = serde_json::to_vec(&v).unwrap();
        for p in parsers() {
            prop_assert!(!p.parse(event, &body, 0).is_empty());
        }
    }

    #[test]
    fn no_preset_panics_on_mutated_payloads(
        which in any::<prop::sample::Index>(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let all = fixtures();
        let mut body = all[which.index(all.len())].clone();
        for (i, b) in flips {
            let at = i.index(body.len());
            body[at] = b;
        }
        body.truncate(cut.index(body.len() + 1).max(body.len() / 2));
        for p in parsers() {
            prop_assert!(!p.parse(None, &body, 0).is_empty());
        }
    }

    #[test]
    fn parse_time_never_panics(s in ".{0,40}") {
        let _ = parse_time(&s);
    }
}

#[test]
fn every_fixture_parses_with_its_own_preset_or_counts_once() {
    // A payload of another tool is never an error of a preset: at worst one
    // `unmapped` (or `invalid` when a required field is missing).
    for body in fixtures() {
        for p in parsers() {
            assert!(!p.parse(None, &body, 0).is_empty());
        }
    }
}
