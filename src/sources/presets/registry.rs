//! The registry of tools: one [`Tool`] per tool relstat knows, listed once
//! in [`super::TOOLS`]. check-config (which presets a webhook or a poll
//! source may name), the webhook listener (how a request authenticates,
//! which header names the event type) and the poll sources (which client
//! asks the tool's API) all read it; nothing else lists the tools.
//!
//! Adding a tool touches one folder and one registry line:
//! - `presets/<tool>/mod.rs`: its `PRESET` (what a payload maps to) and its
//!   `TOOL` entry; `presets/<tool>/poll.rs` if relstat can poll its API;
//!   its payloads in `tests/fixtures/<dir>/`, named by `TOOL.fixtures`;
//! - in `presets/mod.rs`, its `pub mod <tool>;` and `&<tool>::TOOL` lines.
//!
//! The registry's own tests check every entry: unique names, a fixture
//! folder that exists and that the tool's own preset maps, documentation.

use super::Preset;
use crate::sources::poll::Poll;
use crate::sources::poll::client::{Client, PollError};

/// How a tool's webhook requests prove they come from it (checked against
/// the source's `secret_file` by the webhook listener).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthScheme {
    /// `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>` (GitHub).
    HubSignature256,
    /// `X-Gitlab-Token: <secret>` (GitLab).
    GitlabToken,
    /// HTTP basic auth whose password is the secret (or whose
    /// `user:password` is, when the secret contains ':') (Azure DevOps).
    BasicPassword,
    /// An HMAC-SHA256 signature of the body in one of the usual signature
    /// headers, or `Authorization: Bearer <secret>` (every other tool).
    SignatureOrBearer,
}

/// A tool's poll client: one poll of one configured URL, emitting what it
/// reads (shaped as the tool's webhook or API payload) through `poll`.
pub type Poller = fn(&mut Client, &mut Poll<'_>, &str) -> Result<(), PollError>;

/// Everything relstat knows about one tool.
pub struct Tool {
    /// What its payloads map to; `preset.name` is the tool's name, the
    /// value of a source's `preset`.
    pub preset: &'static Preset,
    /// How its webhooks authenticate.
    pub auth: AuthScheme,
    /// The request header naming a webhook's event type, when the tool
    /// sends one (its preset reads it as [`super::Input::event`]).
    pub event_header: Option<&'static str>,
    /// The request header carrying a webhook's delivery id, when the tool
    /// sends one (kept with a dead letter; logged with an `invalid` payload).
    pub delivery_header: Option<&'static str>,
    /// Whether every payload of the tool names an environment (or the
    /// preset supplies one): when not, check-config warns about a source
    /// that sets neither `defaults.environment` nor `fields.environment`.
    pub environment_always: bool,
    /// Its poll client, when a `type = "poll"` source can poll it.
    pub poll: Option<Poller>,
    /// Its payload fixtures: a folder under `tests/fixtures/`.
    pub fixtures: Option<&'static str>,
}

impl Tool {
    /// The tool's name: what a source's `preset` says.
    pub fn name(&self) -> &'static str {
        self.preset.name
    }
}

/// The tool called `name`.
pub fn tool(name: &str) -> Option<&'static Tool> {
    super::TOOLS.iter().copied().find(|t| t.name() == name)
}

/// Every tool a webhook source can name, in registry order.
pub fn webhook_names() -> Vec<&'static str> {
    super::TOOLS.iter().map(|t| t.name()).collect()
}

/// Every tool a poll source can name, in registry order.
pub fn poll_names() -> Vec<&'static str> {
    super::TOOLS
        .iter()
        .filter(|t| t.poll.is_some())
        .map(|t| t.name())
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::path::{Path, PathBuf};

    use serde_json::Value;

    use super::super::{Input, PresetParser, TOOLS};
    use super::*;
    use crate::config::SourceConfig;
    use crate::model::Model;

    fn fixtures_root() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
    }

    /// A payload file as JSON (API objects kept as YAML are read as such).
    fn payload(path: &Path) -> Option<Value> {
        let text = std::fs::read_to_string(path).ok()?;
        match path.extension()?.to_str()? {
            "json" => serde_json::from_str(&text).ok(),
            "yaml" | "yml" => serde_norway::from_str(&text).ok(),
            _ => None,
        }
    }

    fn parser(name: &str) -> PresetParser {
        let src: SourceConfig = toml::from_str(&format!(
            "name = \"{name}\"\ntype = \"webhook\"\npreset = \"{name}\"\nsecret_file = \"/s\"\n\
             [defaults]\nenvironment = \"production\"\n"
        ))
        .unwrap();
        PresetParser::new(&src, &Model::builtin(), "site").unwrap()
    }

    #[test]
    fn names_are_unique_and_found() {
        let mut seen = HashSet::new();
        for t in TOOLS {
            assert!(seen.insert(t.name()), "{} registered twice", t.name());
            assert_eq!(tool(t.name()).map(Tool::name), Some(t.name()));
            assert!(
                t.name()
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{}: a preset name is lowercase snake_case",
                t.name()
            );
        }
        assert!(tool("bitbucket").is_none());
        assert!(poll_names().iter().all(|n| webhook_names().contains(n)));
    }

    #[test]
    fn every_tool_maps_its_own_fixtures() {
        for t in TOOLS {
            let Some(dir) = t.fixtures else { continue };
            let dir = fixtures_root().join(dir);
            let files: Vec<PathBuf> = std::fs::read_dir(&dir)
                .unwrap_or_else(|e| panic!("{}: fixtures {}: {e}", t.name(), dir.display()))
                .flatten()
                .map(|f| f.path())
                .collect();
            let payloads: Vec<(PathBuf, Value)> = files
                .iter()
                .filter_map(|f| Some((f.clone(), payload(f)?)))
                .collect();
            assert!(
                !payloads.is_empty(),
                "{}: no JSON or YAML payload in {}",
                t.name(),
                dir.display()
            );
            // Every payload maps to an outcome, and the tool's preset
            // extracts records from its own payloads (whether they become
            // events depends on the source's mapping: Jira's release field).
            let p = parser(t.name());
            let mut records = 0;
            for (f, v) in &payloads {
                assert!(!p.parse_value(None, v, 0).is_empty(), "{}", f.display());
                let input = Input {
                    event: None,
                    body: v,
                    received: 0,
                };
                records += (t.preset.extract)(&input).len();
            }
            let generic = t.name() == "generic";
            assert!(
                generic || records > 0,
                "{}: its preset extracts nothing from {}",
                t.name(),
                dir.display()
            );
        }
    }

    #[test]
    fn every_fixture_folder_belongs_to_a_tool_or_a_source() {
        // Folders that are not a preset's payloads: the kubernetes source's
        // objects, a bundle, the web config files, store files of older schemas.
        let others = ["kubernetes", "bundle", "web-config", "store"];
        for d in std::fs::read_dir(fixtures_root()).unwrap().flatten() {
            if !d.path().is_dir() {
                continue;
            }
            let name = d.file_name().into_string().unwrap();
            assert!(
                others.contains(&name.as_str()) || TOOLS.iter().any(|t| t.fixtures == Some(&name)),
                "tests/fixtures/{name} is no registered tool's"
            );
        }
    }

    #[test]
    fn every_tool_is_documented() {
        let doc = include_str!("../../../docs/presets.md");
        // The table of tools: one row per tool, saying what the entry says.
        let table = doc
            .split("\n## Tools\n")
            .nth(1)
            .expect("a ## Tools section");
        let rows: Vec<Vec<&str>> = table
            .split("\n## ")
            .next()
            .unwrap()
            .lines()
            .take_while(|l| !l.starts_with("The authentication"))
            .filter(|l| l.starts_with("| ") && !l.starts_with("| tool "))
            .map(|l| l.trim_matches('|').split('|').map(str::trim).collect())
            .collect();
        assert_eq!(rows.len(), TOOLS.len(), "one row per tool: {rows:?}");
        for t in TOOLS {
            let row = rows
                .iter()
                .find(|r| r[0] == t.name())
                .unwrap_or_else(|| panic!("no row for {} in the table of tools", t.name()));
            let header = t.event_header.map_or("-".to_string(), |h| format!("`{h}`"));
            assert_eq!(row[2].to_ascii_lowercase(), header, "{}", t.name());
            let poll = if t.poll.is_some() { "yes" } else { "no" };
            assert_eq!(row[3], poll, "{}: poll", t.name());
            assert!(
                doc.contains(&format!("\n## {}\n", t.name())),
                "docs/presets.md has no `## {}` section",
                t.name()
            );
            // The poll table says what a poll client asks, per tool.
            let poll_section = doc.split("\n## Poll sources").nth(1).unwrap();
            let poll_section = poll_section.split("\n## ").next().unwrap();
            assert_eq!(
                poll_section.contains(&format!("\n| {} |", t.name())),
                t.poll.is_some(),
                "{}: a row in the poll sources' table if and only if it can be polled",
                t.name()
            );
        }
    }
}
