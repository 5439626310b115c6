//! Tool presets: each CI/CD tool's payloads mapped onto canonical events,
//! one folder per tool listed once in the registry ([`TOOLS`]), shared by
//! webhooks and pollers so that the same status change yields the same
//! event, id included, whichever way it came.
//!
//! A preset only *extracts*: from one payload it reads, per status change,
//! the tool's raw values (release, service, environment, raw status, actor,
//! time, version/commit, and an id made of the tool's own object ids). The
//! rest is the canonical field mapping's ([`super::fields::Mapping`]): the
//! source's `defaults`, the status table (the source's `status_map` first,
//! then the preset's vocabulary, then the model's own state ids) and
//! validation. A
//! source's `fields` (dotted JSON paths, numeric segments index arrays)
//! replace what the preset extracts for that field. docs/presets.md has the
//! mapping of every preset as tables.

// The registry of tools ([`registry`]): each tool's module and its entry in
// [`TOOLS`]. Adding a tool adds one line to each list and its folder.
pub mod argo_rollouts;
pub mod argocd;
pub mod azure_devops;
pub mod flux;
pub mod generic;
pub mod github;
pub mod gitlab;
pub mod jenkins;
pub mod jira;
pub mod servicenow;

/// Every tool, in the order check-config names them (the `generic` preset
/// is handled by [`PresetParser`] itself: its payloads are canonical
/// events).
pub const TOOLS: &[&Tool] = &[
    &github::TOOL,
    &gitlab::TOOL,
    &jenkins::TOOL,
    &argocd::TOOL,
    &argo_rollouts::TOOL,
    &flux::TOOL,
    &azure_devops::TOOL,
    &jira::TOOL,
    &servicenow::TOOL,
    &generic::TOOL,
];

pub mod registry;

use serde_json::Value;

use super::fields::{Field, Parsed, RawFields};
use super::line::{LineParser, LineParserError};
use crate::config::{LineFormat, SourceConfig};
use crate::event::{TimeMs, format_rfc3339};
use crate::model::Model;

pub use self::registry::Tool;

/// One payload as a preset sees it.
pub struct Input<'a> {
    /// The event type named by the tool's event-type header, when it sends
    /// one (its registry entry's `event_header`: `X-GitHub-Event`,
    /// `X-Gitlab-Event`); presets fall back on the body's own markers.
    pub event: Option<&'a str>,
    pub body: &'a Value,
    /// When relstat received it: the event time of payloads that carry none.
    pub received: TimeMs,
}

/// What a preset makes of one payload: one raw record per status change (an
/// empty list: nothing this preset maps, counted `unmapped`).
pub type Extract = fn(&Input<'_>) -> Vec<RawFields<'static>>;

/// A tool preset: how to extract, the tool's status vocabulary and the
/// fallbacks for fields the tool does not carry.
pub struct Preset {
    pub name: &'static str,
    pub extract: Extract,
    /// Raw status -> state id (a source's `status_map` wins).
    pub vocabulary: &'static [(&'static str, &'static str)],
    /// Values for fields the payload lacks (a source's `defaults` win).
    pub fallbacks: &'static [(&'static str, &'static str)],
}

/// The preset of the tool called `name`.
pub fn preset(name: &str) -> Option<&'static Preset> {
    registry::tool(name).map(|t| t.preset)
}

/// A preset bound to a source's mapping config. Built once per source.
pub struct PresetParser {
    preset: &'static Preset,
    line: LineParser,
    /// `fields` of the source: (field, dotted path) read from the payload.
    overrides: Vec<(Field, Vec<String>)>,
}

/// A source whose preset cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PresetError {
    #[error("source `{source_name}`: unknown preset {preset:?}")]
    Unknown { source_name: String, preset: String },
    #[error(transparent)]
    Mapping(#[from] LineParserError),
}

impl PresetParser {
    pub fn new(
        src: &SourceConfig,
        model: &Model,
        agent_site: &str,
    ) -> Result<PresetParser, PresetError> {
        let name = src.preset.as_deref().unwrap_or("generic");
        let preset = preset(name).ok_or_else(|| PresetError::Unknown {
            source_name: src.name.clone(),
            preset: name.to_string(),
        })?;
        Self::with_preset(src, preset, model, agent_site)
    }

    /// A parser for `preset`, which need not be a registered tool's (the
    /// Kubernetes source's own mapping).
    pub fn with_preset(
        src: &SourceConfig,
        preset: &'static Preset,
        model: &Model,
        agent_site: &str,
    ) -> Result<PresetParser, PresetError> {
        let mut cfg = src.clone();
        cfg.format = LineFormat::Json;
        cfg.match_ = None;
        cfg.pattern = None;
        cfg.time_format = None;
        if preset.name != "generic" {
            cfg.fields.clear();
            let mut status_map: std::collections::BTreeMap<String, String> = preset
                .vocabulary
                .iter()
                .filter(|(_, s)| {
                    model.index(s).is_some() || crate::model::LEDGER_DECISIONS.contains(s)
                })
                .map(|(r, s)| (r.to_string(), s.to_string()))
                .collect();
            status_map.extend(src.status_map.clone());
            cfg.status_map = status_map;
            let mut defaults: std::collections::BTreeMap<String, String> = preset
                .fallbacks
                .iter()
                .map(|(f, v)| (f.to_string(), v.to_string()))
                .collect();
            defaults.extend(src.defaults.clone());
            cfg.defaults = defaults;
        }
        // The status is mapped first: a payload that is no release step is
        // `unmapped` even when it lacks a release (docs/presets.md).
        let line = LineParser::new(&cfg, model, agent_site)?.status_first();
        let overrides = if preset.name == "generic" {
            Vec::new()
        } else {
            src.fields
                .iter()
                .filter_map(|(f, path)| {
                    Some((
                        Field::from_name(f)?,
                        path.split('.').map(str::to_string).collect(),
                    ))
                })
                .collect()
        };
        Ok(PresetParser {
            preset,
            line,
            overrides,
        })
    }

    pub fn preset(&self) -> &'static Preset {
        self.preset
    }

    /// Maps a record a source built itself (defaults, status table, checks).
    pub fn map_raw(&self, raw: RawFields<'_>) -> Parsed {
        self.line.map_fields(raw)
    }

    /// Parses one payload into one outcome per status change; never empty.
    /// Bodies that are not JSON (or, for `generic`, not canonical events)
    /// give one `Invalid`.
    pub fn parse(&self, event: Option<&str>, body: &[u8], received: TimeMs) -> Vec<Parsed> {
        self.parse_json(event, body, received)
            .unwrap_or_else(|why| vec![Parsed::Invalid(why)])
    }

    /// [`parse`](Self::parse), telling a body that is not JSON (`Err`, the
    /// reason: a webhook answers it 400) from well-formed JSON that maps to
    /// whatever it maps to (a webhook answers 202).
    pub fn parse_json(
        &self,
        event: Option<&str>,
        body: &[u8],
        received: TimeMs,
    ) -> Result<Vec<Parsed>, String> {
        let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
        if self.preset.name == "generic" {
            return generic::parse_json(&self.line, body);
        }
        let value: Value = serde_json::from_slice(body).map_err(|e| format!("bad JSON: {e}"))?;
        Ok(self.parse_value(event, &value, received))
    }

    /// [`parse`](Self::parse) of an already decoded payload: what pollers
    /// hand over, shaped as the tool's webhook or API object.
    pub fn parse_value(&self, event: Option<&str>, value: &Value, received: TimeMs) -> Vec<Parsed> {
        if self.preset.name == "generic" {
            return generic::parse(&self.line, value.to_string().as_bytes());
        }
        let input = Input {
            event,
            body: value,
            received,
        };
        let records = (self.preset.extract)(&input);
        if records.is_empty() {
            let what = event
                .map(str::to_string)
                .unwrap_or_else(|| "payload".to_string());
            return vec![Parsed::Unmapped(what)];
        }
        records
            .into_iter()
            .map(|mut raw| {
                // A tool that sends no time: the delivery (or poll) time.
                if raw.get(Field::Time).is_none_or(str::is_empty) {
                    raw.set(Field::Time, format_rfc3339(received));
                }
                for (field, path) in &self.overrides {
                    if let Some(v) = text_at(value, path) {
                        raw.set(*field, v);
                    }
                }
                self.line.map_fields(raw)
            })
            .collect()
    }
}

// --- helpers shared by the presets

/// The value at a dotted path (numeric segments index arrays).
pub fn at<'v>(v: &'v Value, path: &str) -> Option<&'v Value> {
    path.split('.').try_fold(v, step)
}

fn step<'v>(v: &'v Value, seg: &str) -> Option<&'v Value> {
    match v {
        Value::Object(m) => m.get(seg),
        Value::Array(a) => a.get(seg.parse::<usize>().ok()?),
        _ => None,
    }
}

fn text_at<S: AsRef<str>>(v: &Value, path: &[S]) -> Option<String> {
    let v = path.iter().try_fold(v, |v, s| step(v, s.as_ref()))?;
    text(v)
}

/// A scalar as text (strings as is, numbers and bools as JSON); `None` for
/// null, empty strings, objects and arrays.
pub fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// [`text`] at a dotted path.
pub fn s(v: &Value, path: &str) -> Option<String> {
    at(v, path).and_then(text)
}

/// The first of several paths that has a value (null and empty strings
/// count as none): a preset's fallback order for one field.
pub fn first(v: &Value, paths: &[&str]) -> Option<String> {
    paths.iter().find_map(|p| s(v, p))
}

/// The first of several paths that holds an object (a null, as older API
/// versions send for an absent one, counts as none).
pub fn obj<'v>(v: &'v Value, paths: &[&str]) -> Option<&'v Value> {
    paths
        .iter()
        .find_map(|p| at(v, p).filter(|o| o.is_object()))
}

/// A timestamp in any of the tools' formats: RFC 3339, GitLab's
/// `2016-08-12 15:23:28 UTC` and `2021-04-28 21:50:00 +0200`, Jira's
/// `2016-12-08T07:55:13.755+0000`, ServiceNow's UTC `2022-01-06 12:12:43`,
/// epoch milliseconds (a JSON integer), or epoch seconds with a fraction
/// (a JSON float: Flux's first event format).
pub fn time(v: &Value) -> Option<TimeMs> {
    match v {
        Value::Number(n) => n.as_i64().or_else(|| {
            n.as_f64()
                .filter(|f| f.is_finite() && f.abs() < 1e12)
                .map(|f| (f * 1000.0) as TimeMs)
        }),
        Value::String(s) => parse_time(s),
        _ => None,
    }
}

pub fn parse_time(s: &str) -> Option<TimeMs> {
    use chrono::{DateTime, NaiveDateTime};
    let s = s.trim();
    if let Some(t) = crate::event::parse_rfc3339(s) {
        return Some(t);
    }
    for f in [
        "%Y-%m-%d %H:%M:%S %z",
        "%Y-%m-%dT%H:%M:%S%.f%z",
        "%Y-%m-%d %H:%M:%S%.f %z",
    ] {
        if let Ok(t) = DateTime::parse_from_str(s, f) {
            return Some(t.timestamp_millis());
        }
    }
    let naive = s.strip_suffix(" UTC").unwrap_or(s);
    for f in [
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(naive, f) {
            return Some(t.and_utc().timestamp_millis());
        }
    }
    None
}

/// The time at a path, as the RFC 3339 text the line parser reads.
pub fn time_at(v: &Value, path: &str) -> Option<String> {
    at(v, path).and_then(time).map(format_rfc3339)
}

/// A record builder: `rec.put(Field::X, value)` ignores `None`.
#[derive(Default, Clone)]
pub struct Rec(pub RawFields<'static>);

impl Rec {
    pub fn put(&mut self, f: Field, v: Option<String>) -> &mut Self {
        if let Some(v) = v {
            self.0.set(f, v);
        }
        self
    }
    pub fn time(&mut self, t: Option<TimeMs>) -> &mut Self {
        self.put(Field::Time, t.map(format_rfc3339))
    }
    pub fn human(&mut self, human: bool) -> &mut Self {
        self.put(
            Field::ActorType,
            Some(if human { "human" } else { "automation" }.to_string()),
        )
    }
    pub fn done(self) -> RawFields<'static> {
        self.0
    }
}

/// Whether a login names a bot or service account (`dependabot[bot]`,
/// `deploy-bot`, GitLab's `project_12_bot`, `svc-...`).
pub fn is_bot_name(login: &str) -> bool {
    let l = login.to_ascii_lowercase();
    l.ends_with("[bot]")
        || l.ends_with("-bot")
        || l.ends_with("_bot")
        || l.starts_with("svc-")
        || l.starts_with("svc_")
        || l.starts_with("system:serviceaccount:")
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod corpus;
