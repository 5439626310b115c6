//! generic: canonical events (docs/events.md) as one JSON object, a JSON
//! array of objects, or NDJSON, read by the line parser with the source's
//! `fields`, `status_map` and `defaults` (a relay's site agents post here).

use super::registry::{AuthScheme, Tool};
use super::{Input, Preset};
use crate::sources::fields::{Parsed, RawFields};
use crate::sources::line::LineParser;

pub const PRESET: Preset = Preset {
    name: "generic",
    extract,
    vocabulary: &[],
    fallbacks: &[],
};

/// This tool's entry in the registry ([`super::TOOLS`]).
pub const TOOL: Tool = Tool {
    preset: &PRESET,
    auth: AuthScheme::SignatureOrBearer,
    event_header: None,
    delivery_header: None,
    environment_always: true,
    poll: None,
    fixtures: None,
};

/// Unused: generic payloads go through [`parse`].
fn extract(_: &Input<'_>) -> Vec<RawFields<'static>> {
    Vec::new()
}

/// One outcome per event in the body; never empty.
pub fn parse(line: &LineParser, body: &[u8]) -> Vec<Parsed> {
    parse_json(line, body).unwrap_or_else(|why| vec![Parsed::Invalid(why)])
}

/// [`parse`], with `Err` for a body that is not JSON: not UTF-8, empty, a
/// broken array, or lines none of which is a JSON value.
pub fn parse_json(line: &LineParser, body: &[u8]) -> Result<Vec<Parsed>, String> {
    let Ok(text) = std::str::from_utf8(body) else {
        return Err("body is not UTF-8".into());
    };
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err("empty body".into());
    }
    if trimmed.starts_with('[') {
        return match serde_json::from_str::<Vec<Box<serde_json::value::RawValue>>>(trimmed) {
            Ok(items) if items.is_empty() => Ok(vec![Parsed::Unmapped("empty array".into())]),
            Ok(items) => Ok(items.iter().map(|v| line.parse(v.get())).collect()),
            Err(e) => Err(format!("bad JSON array: {e}")),
        };
    }
    // One object, possibly spread over several lines.
    if serde_json::from_str::<&serde_json::value::RawValue>(trimmed).is_ok() {
        return Ok(vec![line.parse(trimmed)]);
    }
    let lines: Vec<&str> = trimmed.lines().filter(|l| !l.trim().is_empty()).collect();
    let json = |l: &&str| serde_json::from_str::<&serde_json::value::RawValue>(l.trim()).is_ok();
    if !lines.iter().any(json) {
        return Err("bad JSON: neither a JSON value nor JSON lines".into());
    }
    Ok(lines.into_iter().map(|l| line.parse(l)).collect())
}
