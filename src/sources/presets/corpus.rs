//! The payload corpus (tests/fixtures/corpus.toml, SOURCES.md): every file
//! run through its tool's preset the way it arrives, and held to its
//! expectation. Webhook-shaped files go through a webhook source's whole
//! check (authentication, content type, parsing, the answer policy: 202 for
//! well-formed JSON, 400 for a body that is not JSON); poll-shaped files are
//! delivered as the tool's poller delivers them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{Value, json};

use super::PresetParser;
use crate::config::SourceConfig;
use crate::event::InputResult;
use crate::model::Model;
use crate::sources::Item;
use crate::sources::fields::Parsed;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Corpus {
    payload: Vec<Payload>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Payload {
    file: String,
    tool: String,
    shape: String,
    #[serde(default)]
    event: Option<String>,
    #[serde(default)]
    wrap: Option<String>,
    #[serde(default)]
    input: Option<String>,
    statuses: Vec<String>,
    #[serde(default)]
    never: Vec<String>,
    #[serde(default)]
    environment: Option<String>,
    #[serde(default)]
    release: Option<String>,
    #[serde(default)]
    service: Option<String>,
    #[serde(default)]
    defaults: Vec<String>,
    /// Which of issue 20's fallbacks the entry relies on (documentation:
    /// the expectations already assume them).
    #[serde(default)]
    #[allow(dead_code)]
    fallbacks: Vec<String>,
    #[serde(default)]
    #[allow(dead_code)]
    note: Option<String>,
}

const SECRET: &str = "corpus-secret";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// What one payload gave: one outcome per record (a state id, `unmapped`,
/// `invalid`) with its event, and the webhook's answer.
struct Outcome {
    results: Vec<(String, Option<crate::event::Event>)>,
    code: Option<u16>,
}

fn outcome_of(items: Vec<Item>) -> Vec<(String, Option<crate::event::Event>)> {
    items
        .into_iter()
        .map(|i| match i {
            Item::Event(e) => (e.status.clone(), Some(*e)),
            Item::Rejected(r) => (r.as_str().to_string(), None),
        })
        .collect()
}

fn parsed_outcome(parsed: Vec<Parsed>) -> Vec<(String, Option<crate::event::Event>)> {
    parsed
        .into_iter()
        .map(|p| match p {
            Parsed::Event(e) => (e.status.clone(), Some(*e)),
            Parsed::Unmapped(_) => (InputResult::Unmapped.as_str().into(), None),
            Parsed::Invalid(_) => (InputResult::Invalid.as_str().into(), None),
            Parsed::Skipped => (InputResult::Skipped.as_str().into(), None),
        })
        .collect()
}

/// The source a payload goes to: its tool's preset, the defaults it needs.
fn source_toml(p: &Payload, secret: &Path) -> String {
    let kind = if p.shape == "webhook" {
        "webhook"
    } else {
        "poll"
    };
    let preset = if p.tool == "kubernetes" {
        "generic"
    } else {
        p.tool.as_str()
    };
    let mut t = format!(
        "[[sources]]\nname = \"corpus\"\ntype = \"{kind}\"\npreset = \"{preset}\"\n\
         secret_file = {:?}\n",
        secret.display().to_string()
    );
    if kind == "poll" {
        t.push_str("urls = [\"http://127.0.0.1:1/\"]\n");
    }
    if !p.defaults.is_empty() {
        t.push_str("[sources.defaults]\n");
        for f in &p.defaults {
            t.push_str(&format!("{f} = \"corpus\"\n"));
        }
    }
    t
}

/// The file's bytes as they are sent: YAML objects as JSON, wrapped.
fn body(p: &Payload) -> Vec<u8> {
    let bytes = std::fs::read(root().join(&p.file)).unwrap();
    if !(p.file.ends_with(".yaml") || p.file.ends_with(".yml")) {
        return bytes;
    }
    let v: Value =
        serde_norway::from_slice(&bytes).unwrap_or_else(|e| panic!("{}: not YAML: {e}", p.file));
    let v = match &p.wrap {
        Some(key) => json!({ key.as_str(): v }),
        None => v,
    };
    serde_json::to_vec(&v).unwrap()
}

/// Headers that authenticate `body` for `tool`, and its event header.
fn request(p: &Payload, body: &[u8]) -> hyper::Request<hyper::body::Bytes> {
    use base64::Engine;
    let mut r = hyper::Request::builder()
        .method("POST")
        .uri("/hooks/corpus")
        .header("content-type", "application/json");
    r = match p.tool.as_str() {
        "github" => r.header(
            "x-hub-signature-256",
            crate::sources::webhook::auth::sign(SECRET.as_bytes(), body),
        ),
        "gitlab" => r.header("x-gitlab-token", SECRET),
        "azure_devops" => r.header(
            "authorization",
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("ado:{SECRET}"))
            ),
        ),
        _ => r.header("authorization", format!("Bearer {SECRET}")),
    };
    if let Some(e) = &p.event {
        let header = super::registry::tool(&p.tool)
            .and_then(|t| t.event_header)
            .unwrap_or_else(|| panic!("{}: event given, but {} sends none", p.file, p.tool));
        r = r.header(header, e.as_str());
    }
    r.body(hyper::body::Bytes::copy_from_slice(body)).unwrap()
}

fn run(p: &Payload, dir: &Path) -> Outcome {
    let secret = dir.join("secret");
    let text = format!(
        "[agent]\ndata_dir = {:?}\nsite = \"corpus\"\n{}",
        dir.display().to_string(),
        source_toml(p, &secret)
    );
    let loaded = crate::config::parse_text(text, None).unwrap();
    let model = Model::builtin();
    let body = body(p);
    if p.shape == "webhook" {
        let hooks = crate::sources::webhook::Hooks::from_config(&loaded.config, &model).unwrap();
        let hook = hooks.get("corpus").unwrap();
        return match hook.check(&request(p, &body)) {
            crate::sources::webhook::Checked::Commit(batch, status, _) => Outcome {
                results: outcome_of(batch.items),
                code: Some(status.as_u16()),
            },
            crate::sources::webhook::Checked::Answer(r, _) => Outcome {
                results: Vec::new(),
                code: Some(r.status().as_u16()),
            },
        };
    }
    let src: &SourceConfig = &loaded.config.sources[0];
    let stripped = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&body);
    let Ok(v) = serde_json::from_slice::<Value>(stripped) else {
        // A poller counts an undecodable answer as an error of the poll.
        return Outcome {
            results: vec![("invalid".into(), None)],
            code: None,
        };
    };
    let now = crate::event::now_ms();
    let results = match p.tool.as_str() {
        "kubernetes" => {
            let parser = PresetParser::with_preset(
                src,
                &crate::sources::kubernetes::PRESET,
                &model,
                "corpus",
            )
            .unwrap();
            // The source maps only objects with a rollout status.
            if crate::sources::kubernetes::rollout(&v).is_none() {
                vec![("unmapped".into(), None)]
            } else {
                parsed_outcome(parser.parse_value(None, &v, now))
            }
        }
        "gitlab" => {
            let parser = PresetParser::new(src, &model, "corpus").unwrap();
            let items: Vec<&Value> = match &v {
                Value::Array(a) => a.iter().collect(),
                other => vec![other],
            };
            let project = json!({ "name": null });
            items
                .into_iter()
                .flat_map(|it| {
                    let kind = if it.get("environment").is_some() || it.get("deployable").is_some()
                    {
                        "deployments"
                    } else {
                        "pipelines"
                    };
                    let shaped = super::gitlab::poll::shape(kind, it, &project);
                    parsed_outcome(parser.parse_value(None, &shaped, now))
                })
                .collect()
        }
        _ => {
            let parser = PresetParser::new(src, &model, "corpus").unwrap();
            parsed_outcome(parser.parse_value(None, &v, now))
        }
    };
    Outcome {
        results,
        code: None,
    }
}

/// Every payload file of the tools' folders has exactly one entry, and
/// every entry meets its expectation; all misses are listed at once.
#[test]
fn every_corpus_payload_meets_its_expectation() {
    let text = std::fs::read_to_string(root().join("corpus.toml")).unwrap();
    let corpus: Corpus = toml::from_str(&text).unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secret"), SECRET).unwrap();
    let states: Vec<String> = Model::builtin()
        .states()
        .iter()
        .map(|s| s.id.clone())
        .collect();
    let mut misses = Vec::new();
    let mut per_tool: BTreeMap<&str, usize> = BTreeMap::new();
    for p in &corpus.payload {
        *per_tool.entry(p.tool.as_str()).or_default() += 1;
        for s in p.statuses.iter().chain(&p.never) {
            assert!(
                states.contains(s) || ["unmapped", "invalid"].contains(&s.as_str()),
                "{}: {s:?} is no state id, unmapped or invalid",
                p.file
            );
        }
        assert!(
            ["webhook", "poll"].contains(&p.shape.as_str()),
            "{}: shape",
            p.file
        );
        assert!(
            p.input.as_deref().is_none_or(|i| i == "poller-response"),
            "{}: input",
            p.file
        );
        let out = run(p, dir.path());
        let mut miss = |what: String| misses.push(format!("{}: {what}", p.file));
        if out.results.is_empty() {
            miss(format!("no outcome (answer {:?})", out.code));
            continue;
        }
        let not_json = out.results.iter().all(|(r, _)| r == "invalid")
            && serde_json::from_slice::<serde::de::IgnoredAny>(
                body(p).strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&body(p)),
            )
            .is_err();
        if let Some(code) = out.code {
            let want = if not_json { 400 } else { 202 };
            if code != want {
                miss(format!("answered {code}, the policy says {want}"));
            }
        }
        for (result, event) in &out.results {
            if !p.statuses.contains(result) {
                miss(format!("gave {result}, expected one of {:?}", p.statuses));
            }
            if p.never.contains(result) {
                miss(format!("gave {result}, which it must never give"));
            }
            let Some(e) = event else { continue };
            for (field, want, got) in [
                ("environment", &p.environment, &e.environment),
                ("release", &p.release, &e.release),
                ("service", &p.service, &e.service),
            ] {
                if let Some(want) = want
                    && want != got
                {
                    miss(format!("{field} {got:?}, expected {want:?}"));
                }
            }
        }
    }
    // Every payload file of a tool's folder is in the corpus.
    let listed: Vec<&str> = corpus.payload.iter().map(|p| p.file.as_str()).collect();
    for d in std::fs::read_dir(root()).unwrap().flatten() {
        let name = d.file_name().into_string().unwrap();
        if !d.path().is_dir() || ["bundle", "web-config", "store"].contains(&name.as_str()) {
            continue;
        }
        for f in std::fs::read_dir(d.path()).unwrap().flatten() {
            let file = format!("{name}/{}", f.file_name().into_string().unwrap());
            if !listed.contains(&file.as_str()) {
                misses.push(format!("{file}: no entry in corpus.toml"));
            }
        }
    }
    assert!(
        misses.is_empty(),
        "{} of {} payloads miss their expectation ({per_tool:?}):\n  {}",
        misses.len(),
        corpus.payload.len(),
        misses.join("\n  ")
    );
}
