//! Line parsers: one log line (NDJSON, logfmt, or a regex with named groups)
//! into one canonical event (docs/events.md), through a source's `fields`,
//! `status_map` and `defaults`.
//!
//! A [`LineParser`] is built once per source; everything that can be decided
//! from the config (regexes, record paths, the status table, the time format)
//! is decided then, so [`LineParser::parse`] only reads the line.
//!
//! What [`LineParser::parse`] returns, in the order it is decided:
//!
//! 1. Surrounding whitespace of the line is dropped (a CRLF log's `\r` too).
//!    An empty line is [`Parsed::Skipped`]: blank lines are layout, not input.
//! 2. A line that the source's `match` regex does not match is `Skipped`.
//! 3. The record is read: a line the format cannot read (bad JSON, a JSON
//!    value that is not an object, no regex match, bad logfmt) is
//!    [`Parsed::Invalid`].
//! 4. Each canonical field is the record's value at its path (`fields.x`,
//!    else `x`).
//! 5. The source's [`Mapping`] (the canonical field mapping, in
//!    [`super::fields`]) does the rest: `defaults.x` for an absent, `null` or
//!    empty value; a value with a NUL byte or over the field cap, a missing
//!    required field (time, release, environment, status), a bad time,
//!    actor_type or change_class is `Invalid`; the raw status becomes
//!    `status_map[raw]`, else `raw` if it is a state id of the model, else
//!    the line is [`Parsed::Unmapped`].
//!
//! Record paths: in JSON a dotted path (`deploy.env`) descends into nested
//! objects (a top-level key that itself contains a dot cannot be named); in
//! logfmt and regex keys are flat. Strings, numbers and bools are accepted,
//! numbers and bools as their JSON text. The JSON reader never builds a value
//! tree: it keeps borrowed slices of the needed keys and skips the rest, in
//! one pass over the bytes (the private `sources::jsonpick`); a line that
//! pass does not take (invalid, escaped keys, deep nesting) is read by
//! serde_json, which gives the same slices or the error.

use std::borrow::Cow;
use std::fmt;

use regex::Regex;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;

pub use super::fields::{Field, Parsed, RawFields};
use super::fields::{Mapping, MappingError, N_FIELDS};
use super::jsonpick;
use super::timefmt::TimeFormat;
use crate::config::{LineFormat, SourceConfig};
use crate::model::Model;

/// A source whose mapping config cannot work. Config validation reports the
/// same problems; this is the last line of defence.
#[derive(Debug, thiserror::Error)]
pub enum LineParserError {
    #[error("source `{source_name}`: `{key}` is not a valid regex: {message}")]
    BadRegex {
        source_name: String,
        key: &'static str,
        message: String,
    },
    #[error(
        "source `{source_name}`: format = \"regex\" needs a `pattern` with named groups, \
         e.g. pattern = '^(?P<time>\\S+) (?P<release>\\S+) (?P<environment>\\S+) (?P<status>\\S+)'"
    )]
    MissingPattern { source_name: String },
    #[error("source `{source_name}`: time_format {message}")]
    BadTimeFormat {
        source_name: String,
        message: String,
    },
    #[error("source `{source_name}`: fields.{field} = {path:?}: {message}")]
    BadPath {
        source_name: String,
        field: Field,
        path: String,
        message: String,
    },
    #[error(transparent)]
    Mapping(#[from] MappingError),
}

/// Where one canonical field is read from.
#[derive(Debug, Clone)]
struct FieldSpec {
    /// The record key as configured (whole, dots included).
    key: Box<str>,
    /// Index into `LineParser::keys` of the key's first lookup (JSON: the
    /// first path segment; logfmt and regex: the whole key).
    slot: usize,
    /// JSON only: the path segments below the first.
    rest: Box<[Box<str>]>,
}

/// Parses the lines of one source into canonical events. Built once per
/// source and shared by reference: `parse` takes `&self`.
#[derive(Debug, Clone)]
pub struct LineParser {
    format: LineFormat,
    prefilter: Option<Regex>,
    /// `format = "regex"`: the pattern with named groups.
    pattern: Option<Regex>,
    /// Defaults, status table and checks: what a record's values become.
    mapping: Mapping,
    /// The distinct record keys to look up in each line, each looked up once.
    keys: Vec<Box<str>>,
    /// `format = "regex"`: the capture group of each of `keys`, if any.
    groups: Vec<Option<usize>>,
    /// Indexed by `Field as usize`.
    specs: Vec<FieldSpec>,
}

impl LineParser {
    /// Compiles a source's line format and mapping. `agent_site` is the site
    /// of events whose record and defaults name none.
    pub fn new(
        src: &SourceConfig,
        model: &Model,
        agent_site: &str,
    ) -> Result<LineParser, LineParserError> {
        let name = || src.name.clone();
        let regex = |key: &'static str, re: &str| {
            Regex::new(re).map_err(|e| LineParserError::BadRegex {
                source_name: name(),
                key,
                message: e.to_string(),
            })
        };
        let prefilter = src
            .match_
            .as_deref()
            .map(|re| regex("match", re))
            .transpose()?;
        let pattern = match src.format {
            LineFormat::Regex => match src.pattern.as_deref() {
                Some(re) => Some(regex("pattern", re)?),
                None => {
                    return Err(LineParserError::MissingPattern {
                        source_name: name(),
                    });
                }
            },
            _ => None,
        };
        let time = TimeFormat::new(src.time_format.as_deref()).map_err(|message| {
            LineParserError::BadTimeFormat {
                source_name: name(),
                message,
            }
        })?;

        let mapping = Mapping::new(src, model, agent_site, time)?;

        let mut keys: Vec<Box<str>> = Vec::new();
        let mut slot_of = |key: &str| match keys.iter().position(|k| **k == *key) {
            Some(i) => i,
            None => {
                keys.push(key.into());
                keys.len() - 1
            }
        };
        let mut specs = Vec::with_capacity(N_FIELDS);
        for field in Field::ALL {
            let configured = src.fields.get(field.name());
            let key = configured.map_or(field.name(), String::as_str);
            let bad_path = |message: &str| LineParserError::BadPath {
                source_name: name(),
                field,
                path: key.to_string(),
                message: message.to_string(),
            };
            let (slot, rest) = if src.format == LineFormat::Json {
                let mut segments = key.split('.');
                if key.split('.').any(str::is_empty) {
                    return Err(bad_path("empty path segment; write a.b for nested objects"));
                }
                let first = segments.next().unwrap_or_default();
                (slot_of(first), segments.map(Box::from).collect())
            } else {
                if key.is_empty() {
                    return Err(bad_path("empty record key"));
                }
                (slot_of(key), Box::default())
            };
            if let (Some(re), Some(_)) = (&pattern, configured)
                && !re.capture_names().any(|g| g == Some(key))
            {
                return Err(bad_path("not a named group of `pattern`"));
            }
            specs.push(FieldSpec {
                key: key.into(),
                slot,
                rest,
            });
        }
        let groups = match &pattern {
            Some(re) => {
                let names: Vec<Option<&str>> = re.capture_names().collect();
                keys.iter()
                    .map(|k| names.iter().position(|n| *n == Some(&**k)))
                    .collect()
            }
            None => Vec::new(),
        };

        Ok(LineParser {
            format: src.format,
            prefilter,
            pattern,
            mapping,
            keys,
            groups,
            specs,
        })
    }

    /// Parses one line (with or without its line terminator).
    pub fn parse(&self, line: &str) -> Parsed {
        let line = line.trim();
        if line.is_empty() {
            return Parsed::Skipped;
        }
        if let Some(re) = &self.prefilter
            && !re.is_match(line)
        {
            return Parsed::Skipped;
        }
        // Filled in place and mapped by reference: the record is 15
        // `Option<Cow<str>>`s, which moving by value copies at every step.
        let mut raw = RawFields::default();
        let record = match self.format {
            LineFormat::Json => self.read_json(line, &mut raw),
            LineFormat::Logfmt => self.read_logfmt(line, &mut raw),
            LineFormat::Regex => self.read_regex(line, &mut raw),
        };
        match record {
            Ok(()) => self.mapping.map_mut(&mut raw),
            Err(reason) => Parsed::Invalid(reason),
        }
    }

    /// Maps a record whose fields are already extracted: `get` is asked for
    /// each canonical field's configured record key (`fields.x`, else `x`;
    /// dots are not interpreted). For sources that are not lines.
    pub fn map_record<'a>(&self, get: impl Fn(&str) -> Option<Cow<'a, str>>) -> Parsed {
        let mut raw = RawFields::default();
        for field in Field::ALL {
            raw.put(field, get(&self.specs[field as usize].key));
        }
        self.map_fields(raw)
    }

    /// Applies defaults, validation and the status mapping to raw values by
    /// canonical field ([`Mapping::map`]).
    pub fn map_fields(&self, raw: RawFields<'_>) -> Parsed {
        self.mapping.map(raw)
    }

    /// Maps the status before the other required fields are checked
    /// ([`Mapping::status_first`]; the presets' order).
    pub fn status_first(mut self) -> LineParser {
        self.mapping = self.mapping.status_first();
        self
    }

    fn read_json<'a>(&self, line: &'a str, raw: &mut RawFields<'a>) -> Result<(), String> {
        let n = self.keys.len();
        let mut slots: [Option<&'a str>; N_FIELDS] = [None; N_FIELDS];
        if jsonpick::pick(line, &self.keys, &mut slots[..n]).is_none() {
            // Whatever the fast reader does not take, serde_json decides:
            // the same members, or the error message.
            slots = [None; N_FIELDS];
            serde_pick(line, &self.keys, &mut slots[..n])?;
        }
        self.json_fields(&slots, raw)
    }

    /// The canonical fields from the raw text of each key's value.
    fn json_fields<'a>(
        &self,
        slots: &[Option<&'a str>; N_FIELDS],
        raw: &mut RawFields<'a>,
    ) -> Result<(), String> {
        for (field, spec) in Field::ALL.into_iter().zip(&self.specs) {
            let mut value = slots[spec.slot];
            for segment in &spec.rest {
                value = match value {
                    Some(v) => member(v, segment),
                    None => break,
                };
            }
            if let Some(v) = value {
                let value = scalar(v).map_err(|kind| {
                    format!(
                        "field {field} ({}) is {kind}; expected a string, number or bool",
                        spec.key
                    )
                })?;
                raw.put(field, value);
            }
        }
        Ok(())
    }

    fn read_logfmt<'a>(&self, line: &'a str, raw: &mut RawFields<'a>) -> Result<(), String> {
        let mut slots: [Option<Cow<'a, str>>; N_FIELDS] = Default::default();
        logfmt_pairs(line, |key, value| {
            if let Some(i) = self.keys.iter().position(|k| **k == *key) {
                slots[i] = Some(value);
            }
        })?;
        for (field, spec) in Field::ALL.into_iter().zip(&self.specs) {
            raw.put(field, slots[spec.slot].clone());
        }
        Ok(())
    }

    fn read_regex<'a>(&self, line: &'a str, raw: &mut RawFields<'a>) -> Result<(), String> {
        let Some(re) = &self.pattern else {
            return Err("no pattern".to_string()); // unreachable: `new` requires one
        };
        let caps = re.captures(line).ok_or("line does not match pattern")?;
        for (field, spec) in Field::ALL.into_iter().zip(&self.specs) {
            let value = self.groups[spec.slot]
                .and_then(|g| caps.get(g))
                .map(|m| Cow::Borrowed(m.as_str()));
            raw.put(field, value);
        }
        Ok(())
    }
}

// --- JSON: borrowed, tree-free reading of the needed keys

/// A JSON string, borrowed from the input unless it had escapes.
struct Str<'a>(Cow<'a, str>);

impl<'de> de::Deserialize<'de> for Str<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Str<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Owned(v.to_string())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

/// Reads a JSON object, keeping the raw values of `keys` in `slots` (the
/// last one wins if a key repeats) and skipping, but still checking, the rest.
struct Pick<'k, 's, 'de, K> {
    keys: &'k [K],
    slots: &'s mut [Option<&'de RawValue>],
}

impl<'de, K: AsRef<str>> DeserializeSeed<'de> for Pick<'_, '_, 'de, K> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, K: AsRef<str>> Visitor<'de> for Pick<'_, '_, 'de, K> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(Str(key)) = map.next_key()? {
            match self.keys.iter().position(|k| k.as_ref() == key) {
                Some(i) => self.slots[i] = Some(map.next_value()?),
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

/// The raw text of `keys`' values in the JSON object `line`, read by
/// serde_json: the reference the fast reader (`jsonpick`) agrees with,
/// and its fallback, whose errors are the messages of invalid lines.
fn serde_pick<'a, K: AsRef<str>>(
    line: &'a str,
    keys: &[K],
    slots: &mut [Option<&'a str>],
) -> Result<(), String> {
    let mut raw: [Option<&'a RawValue>; N_FIELDS] = [None; N_FIELDS];
    let mut de = serde_json::Deserializer::from_str(line);
    let picked = Pick {
        keys,
        slots: &mut raw[..keys.len()],
    }
    .deserialize(&mut de)
    .and_then(|()| de.end());
    if let Err(e) = picked {
        return Err(if line.starts_with('{') {
            format!("bad JSON: {e}")
        } else {
            "not a JSON object".to_string()
        });
    }
    for (slot, v) in slots.iter_mut().zip(raw) {
        *slot = v.map(RawValue::get);
    }
    Ok(())
}

/// The member `key` of `v` if `v` is an object that has it.
fn member<'a>(v: &'a str, key: &str) -> Option<&'a str> {
    if !v.starts_with('{') {
        return None;
    }
    let mut slot = [None];
    if jsonpick::pick(v, &[key], &mut slot).is_none() {
        // `v` was checked as part of the whole line: this cannot fail.
        slot = [None];
        serde_pick(v, &[key], &mut slot).ok()?;
    }
    slot[0]
}

/// A JSON scalar as text: strings unescaped, numbers and bools as written,
/// `null` as absent. Objects and arrays are an error naming their kind.
fn scalar(text: &str) -> Result<Option<Cow<'_, str>>, &'static str> {
    match text.as_bytes().first() {
        Some(b'"') if !text.contains('\\') => Ok(Some(Cow::Borrowed(&text[1..text.len() - 1]))),
        Some(b'"') => match serde_json::from_str::<Str<'_>>(text) {
            Ok(Str(s)) => Ok(Some(s)),
            Err(_) => Err("a bad string"), // a lone surrogate: checked, not decoded
        },
        Some(b'{') => Err("an object"),
        Some(b'[') => Err("an array"),
        Some(b'n') | None => Ok(None),
        Some(_) => Ok(Some(Cow::Borrowed(text))),
    }
}

// --- logfmt

/// Calls `each(key, value)` for every pair of a logfmt line, in order. A
/// bare key has an empty value. As in go-logfmt, any byte up to ' ' separates
/// pairs and quoted values take JSON escapes; unlike it, `=` is allowed in a
/// bare value (URLs with query strings are common in deploy logs).
fn logfmt_pairs<'a>(
    line: &'a str,
    mut each: impl FnMut(&'a str, Cow<'a, str>),
) -> Result<(), String> {
    let b = line.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] <= b' ' {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && b[i] > b' ' && b[i] != b'=' && b[i] != b'"' {
            i += 1;
        }
        if i < b.len() && b[i] == b'"' {
            return Err(format!("logfmt: unexpected '\"' at byte {i}"));
        }
        if i == start {
            return Err(format!("logfmt: '=' without a key at byte {i}"));
        }
        let key = &line[start..i];
        if i == b.len() || b[i] != b'=' {
            each(key, Cow::Borrowed(""));
            continue;
        }
        i += 1;
        if i < b.len() && b[i] == b'"' {
            let open = i;
            i += 1;
            let mut escaped = false;
            loop {
                match b.get(i) {
                    None => return Err(format!("logfmt: unterminated quote at byte {open}")),
                    Some(b'\\') => {
                        escaped = true;
                        i += 2;
                    }
                    Some(b'"') => break,
                    Some(_) => i += 1,
                }
            }
            let inner = &line[open + 1..i];
            i += 1;
            if i < b.len() && b[i] > b' ' {
                return Err(format!("logfmt: text after closing quote at byte {i}"));
            }
            let value = if escaped {
                Cow::Owned(
                    unescape(inner)
                        .ok_or_else(|| format!("logfmt: bad escape in value of {key}"))?,
                )
            } else {
                Cow::Borrowed(inner)
            };
            each(key, value);
        } else {
            let start = i;
            while i < b.len() && b[i] > b' ' {
                if b[i] == b'"' {
                    return Err(format!("logfmt: unexpected '\"' at byte {i}"));
                }
                i += 1;
            }
            each(key, Cow::Borrowed(&line[start..i]));
        }
    }
    Ok(())
}

/// JSON string escapes; `None` for an unknown escape or a lone surrogate.
fn unescape(s: &str) -> Option<String> {
    fn hex4(chars: &mut std::str::Chars<'_>) -> Option<u32> {
        let mut v = 0;
        for _ in 0..4 {
            v = v * 16 + chars.next()?.to_digit(16)?;
        }
        Some(v)
    }
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        out.push(match chars.next()? {
            '"' => '"',
            '\\' => '\\',
            '/' => '/',
            'b' => '\u{8}',
            'f' => '\u{c}',
            'n' => '\n',
            'r' => '\r',
            't' => '\t',
            'u' => {
                let hi = hex4(&mut chars)?;
                if (0xD800..0xDC00).contains(&hi) {
                    if chars.next()? != '\\' || chars.next()? != 'u' {
                        return None;
                    }
                    let lo = hex4(&mut chars)?;
                    if !(0xDC00..0xE000).contains(&lo) {
                        return None;
                    }
                    char::from_u32(0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00))?
                } else {
                    char::from_u32(hi)?
                }
            }
            _ => return None,
        });
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{self, Event, parse_rfc3339};
    use proptest::prelude::*;

    /// A parser for source `deploy-log` of agent site `dc-east`, from the
    /// source's TOML keys (top-level keys before tables).
    fn parser(toml_src: &str) -> LineParser {
        try_parser(toml_src).unwrap()
    }

    fn try_parser(toml_src: &str) -> Result<LineParser, LineParserError> {
        let src: SourceConfig = toml::from_str(&format!(
            "name = \"deploy-log\"\ntype = \"file\"\n{toml_src}"
        ))
        .expect("test config parses");
        LineParser::new(&src, &Model::builtin(), "dc-east")
    }

    /// An outcome as text: `skipped`, `unmapped: raw`, `invalid: reason`, or
    /// the event's fields as `k=v` joined by `; ` (optional fields only when set).
    fn render(p: &Parsed) -> String {
        match p {
            Parsed::Skipped => "skipped".into(),
            Parsed::Unmapped(raw) => format!("unmapped: {raw}"),
            Parsed::Invalid(reason) => format!("invalid: {reason}"),
            Parsed::Event(e) => {
                let mut parts = vec![
                    format!("id={}", e.id),
                    format!("time={}", event::format_rfc3339(e.time)),
                    format!("release={}", e.release),
                    format!("service={}", e.service),
                    format!("environment={}", e.environment),
                    format!("site={}", e.site),
                    format!("status={}", e.status),
                    format!("actor={}", e.actor),
                    format!("actor_type={}", e.actor_type.as_str()),
                    format!("source={}", e.source),
                ];
                let optional = [
                    ("reason", e.reason.clone()),
                    ("version", e.version.clone()),
                    ("commit", e.commit.clone()),
                    ("artifact", e.artifact.clone()),
                    ("commit_time", e.commit_time.map(event::format_rfc3339)),
                    (
                        "change_class",
                        e.change_class.map(|c| format!("{c:?}").to_lowercase()),
                    ),
                ];
                for (k, v) in optional {
                    if let Some(v) = v {
                        parts.push(format!("{k}={v}"));
                    }
                }
                parts.join("; ")
            }
        }
    }

    /// Checks an outcome against `want`: `skipped`, `unmapped: raw` and
    /// `invalid: reason` exactly; for an event, every `k=v` of `want` (joined
    /// by `; `) must be among the event's.
    fn check(case: &str, got: &Parsed, want: &str) {
        let got = render(got);
        if want == "skipped" || want.starts_with("unmapped:") || want.starts_with("invalid:") {
            assert_eq!(got, want, "case {case}");
            return;
        }
        let fields: Vec<&str> = got.split("; ").collect();
        for kv in want.split("; ") {
            assert!(fields.contains(&kv), "case {case}: want {kv}, got {got}");
        }
    }

    const JSON: &str = "format = \"json\"";
    const LOGFMT: &str = "format = \"logfmt\"";
    const REGEX: &str = r#"format = "regex"
pattern = '^(?P<time>\S+) (?P<release>\S+) (?P<environment>\S+) (?P<status>\S+)(?: (?P<who>\S+))?$'
[fields]
actor = "who""#;
    const EPOCH_S: &str = "format = \"json\"\ntime_format = \"epoch_s\"";
    const EPOCH_MS: &str = "format = \"json\"\ntime_format = \"epoch_ms\"";
    const NGINX: &str = "format = \"json\"\ntime_format = \"%d/%b/%Y:%H:%M:%S %z\"";
    const NAIVE: &str = "format = \"json\"\ntime_format = \"%Y-%m-%d %H:%M:%S\"";
    const DATE: &str = "format = \"logfmt\"\ntime_format = \"%Y-%m-%d\"";
    const MAPPED: &str = r#"format = "json"
match = 'deploy'
[fields]
release = "rel"
environment = "deploy.env"
service = "deploy.svc.name"
status = "result"
[status_map]
SUCCESS = "deployed"
"200" = "complete"
deployed = "failed"
[defaults]
environment = "staging"
site = "dc-west"
actor_type = "human""#;

    /// A canonical line with `extra` members appended.
    fn canon(extra: &str) -> String {
        format!(
            r#"{{"time":"2026-11-03T10:00:00+01:00","release":"r1","environment":"prod","status":"deployed"{extra}}}"#
        )
    }

    #[test]
    fn behaviour_table() {
        let base = "time=2026-11-03T09:00:00.000Z; release=r1; environment=prod; status=deployed";
        let canon_id =
            Event::stable_id("r1", "-", "prod", "dc-east", "deployed", 1_793_696_400_000);
        let cases: Vec<(&str, &str, String, String)> = vec![
            // --- happy paths and defaults of docs/events.md
            ("json", JSON, canon(""), format!(
                "{base}; id={canon_id}; service=-; site=dc-east; actor=-; actor_type=automation; \
                 source=deploy-log")),
            ("json all fields", JSON, canon(
                r#","id":"gh-42","service":"api","site":"eu-1","actor":"alice","actor_type":"human",
                "reason":"CHG-1","version":"1.2.3","commit":"abc","artifact":"api:1.2.3",
                "commit_time":"2026-11-02T00:00:00Z","change_class":"emergency","other":[1,{"x":null}]"#),
                "id=gh-42; service=api; site=eu-1; actor=alice; actor_type=human; reason=CHG-1; \
                 version=1.2.3; commit=abc; artifact=api:1.2.3; commit_time=2026-11-02T00:00:00.000Z; \
                 change_class=emergency".into()),
            ("json escapes", JSON, canon(r#","reason":"a \"b\"\n\u00e9""#), "reason=a \"b\"\né".into()),
            ("json numbers and bools", JSON,
                r#"{"time":"2026-11-03T09:00:00Z","release":2026.113,"environment":true,"status":"deployed","version":-1e3}"#.into(),
                "release=2026.113; environment=true; version=-1e3".into()),
            ("json null is absent", JSON, canon(r#","service":null"#), "service=-".into()),
            ("json empty is absent", JSON, canon(r#","actor":"""#), "actor=-".into()),
            ("json duplicate key: last wins", JSON, canon(r#","release":"r2""#), "release=r2".into()),
            ("json object value", JSON, canon(r#","service":{"name":"api"}"#),
                "invalid: field service (service) is an object; expected a string, number or bool".into()),
            ("json array value", JSON, canon(r#","actor":["a"]"#),
                "invalid: field actor (actor) is an array; expected a string, number or bool".into()),
            ("logfmt", LOGFMT,
                r#"time=2026-11-03T09:00:00Z release=r1 environment=prod status=deployed reason="rolled \"back\"" url=http://x/?a=b flag"#.into(),
                format!("{base}; reason=rolled \"back\"; service=-; id={canon_id}")),
            ("logfmt tabs and empty value", LOGFMT,
                "time=2026-11-03T09:00:00Z\trelease=r1 environment=prod status=deployed actor=".into(),
                format!("{base}; actor=-")),
            ("logfmt unicode escape", LOGFMT,
                r#"time=2026-11-03T09:00:00Z release="r\u00e9\ud83d\ude80" environment=prod status=deployed"#.into(),
                "release=ré🚀".into()),
            ("regex", REGEX, "2026-11-03T09:00:00Z r1 prod deployed alice".into(),
                format!("{base}; actor=alice")),
            ("regex optional group absent", REGEX, "2026-11-03T09:00:00Z r1 prod deployed".into(),
                format!("{base}; actor=-")),
            // --- fields, dotted paths, status_map, defaults
            ("mapped", MAPPED,
                r#"{"time":"2026-11-03T09:00:00Z","rel":"r1","deploy":{"env":"uat","svc":{"name":"api"}},"result":"SUCCESS","site":"eu-1"}"#.into(),
                "release=r1; environment=uat; service=api; status=deployed; site=eu-1; actor_type=human".into()),
            ("mapped: canonical name not read once renamed", MAPPED,
                r#"{"kind":"deploy","time":"2026-11-03T09:00:00Z","release":"r9","rel":"r1","result":"SUCCESS"}"#.into(),
                "release=r1; environment=staging; site=dc-west; service=-".into()),
            ("mapped: number status", MAPPED,
                r#"{"kind":"deploy","time":"2026-11-03T09:00:00Z","rel":"r1","result":200}"#.into(),
                "status=complete".into()),
            ("mapped: status_map overrides a state id", MAPPED,
                r#"{"kind":"deploy","time":"2026-11-03T09:00:00Z","rel":"r1","result":"deployed"}"#.into(),
                "status=failed".into()),
            ("mapped: state id passes through", MAPPED,
                r#"{"kind":"deploy","time":"2026-11-03T09:00:00Z","rel":"r1","result":"rolled_back"}"#.into(),
                "status=rolled_back".into()),
            ("mapped: unmapped", MAPPED,
                r#"{"kind":"deploy","time":"2026-11-03T09:00:00Z","rel":"r1","result":"FAILURE"}"#.into(),
                "unmapped: FAILURE".into()),
            ("mapped: path through a non-object", MAPPED,
                r#"{"time":"2026-11-03T09:00:00Z","rel":"r1","deploy":"x","result":"SUCCESS"}"#.into(),
                "environment=staging; service=-".into()),
            ("mapped: empty record value takes the default", MAPPED,
                r#"{"time":"2026-11-03T09:00:00Z","rel":"r1","deploy":{"env":""},"result":"SUCCESS"}"#.into(),
                "environment=staging".into()),
            ("mapped: match prefilter", MAPPED,
                r#"{"time":"2026-11-03T09:00:00Z","rel":"r1","result":"SUCCESS"}"#.into(),
                "skipped".into()),
            ("unknown status is unmapped", JSON,
                canon("").replace("\"deployed\"", "\"done\""), "unmapped: done".into()),
            ("invalid wins over unmapped", JSON,
                canon(r#","actor_type":"bot""#).replace("\"deployed\"", "\"done\""),
                "invalid: bad actor_type \"bot\": expected human or automation".into()),
            // --- missing required fields (checked in the order of docs/events.md)
            ("missing time", JSON, r#"{"release":"r1","environment":"prod","status":"deployed"}"#.into(),
                "invalid: missing field time".into()),
            ("missing release", JSON, r#"{"time":"2026-11-03T09:00:00Z","environment":"prod","status":"deployed"}"#.into(),
                "invalid: missing field release".into()),
            ("missing environment", JSON, r#"{"time":"2026-11-03T09:00:00Z","release":"r1","status":"deployed"}"#.into(),
                "invalid: missing field environment".into()),
            ("missing status", JSON, r#"{"time":"2026-11-03T09:00:00Z","release":"r1","environment":"prod"}"#.into(),
                "invalid: missing field status".into()),
            ("missing everything", LOGFMT, "hello world".into(), "invalid: missing field time".into()),
            // --- unreadable lines
            ("bad json", JSON, r#"{"time":"#.into(),
                "invalid: bad JSON: EOF while parsing a value at line 1 column 8".into()),
            ("json trailing garbage", JSON, canon("") + " x",
                "invalid: bad JSON: trailing characters at line 1 column 94".into()),
            ("json not an object", JSON, "[1,2]".into(), "invalid: not a JSON object".into()),
            ("json string", JSON, "\"deployed\"".into(), "invalid: not a JSON object".into()),
            ("regex no match", REGEX, "deployed".into(), "invalid: line does not match pattern".into()),
            ("logfmt unterminated quote", LOGFMT, r#"release="r1 status=deployed"#.into(),
                "invalid: logfmt: unterminated quote at byte 8".into()),
            ("logfmt escaped closing quote", LOGFMT, r#"release="r1\""#.into(),
                "invalid: logfmt: unterminated quote at byte 8".into()),
            ("logfmt missing key", LOGFMT, "=r1".into(), "invalid: logfmt: '=' without a key at byte 0".into()),
            ("logfmt quote in key", LOGFMT, r#""release"=r1"#.into(),
                "invalid: logfmt: unexpected '\"' at byte 0".into()),
            ("logfmt text after quote", LOGFMT, r#"release="r1"x"#.into(),
                "invalid: logfmt: text after closing quote at byte 12".into()),
            ("logfmt bad escape", LOGFMT, r#"release="r\q""#.into(),
                "invalid: logfmt: bad escape in value of release".into()),
            // --- skipping and line ends
            ("empty line", JSON, "".into(), "skipped".into()),
            ("blank line", LOGFMT, " \t\r\n".into(), "skipped".into()),
            ("crlf json", JSON, canon("") + "\r\n", "release=r1".into()),
            ("crlf logfmt keeps the last value clean", LOGFMT,
                "time=2026-11-03T09:00:00Z release=r1 environment=prod status=deployed\r".into(),
                "status=deployed".into()),
            ("crlf regex ($ anchored)", REGEX, "2026-11-03T09:00:00Z r1 prod deployed\r\n".into(),
                "status=deployed; actor=-".into()),
            // --- times
            ("rfc3339 with offset", JSON, canon(""), "time=2026-11-03T09:00:00.000Z".into()),
            ("rfc3339 without offset", JSON, canon("").replace("+01:00", ""),
                "invalid: bad time \"2026-11-03T10:00:00\": expected RFC 3339".into()),
            ("bad time", JSON, canon("").replace("2026-11-03T10:00:00+01:00", "yesterday"),
                "invalid: bad time \"yesterday\": expected RFC 3339".into()),
            ("epoch_s number", EPOCH_S,
                r#"{"time":1793696400,"release":"r1","environment":"prod","status":"deployed"}"#.into(),
                "time=2026-11-03T09:00:00.000Z".into()),
            ("epoch_s string", EPOCH_S,
                r#"{"time":"1793696400","release":"r1","environment":"prod","status":"deployed"}"#.into(),
                "time=2026-11-03T09:00:00.000Z".into()),
            ("epoch_s fractional", EPOCH_S,
                r#"{"time":1793696400.25,"release":"r1","environment":"prod","status":"deployed"}"#.into(),
                "time=2026-11-03T09:00:00.250Z".into()),
            ("epoch_s not a number", EPOCH_S,
                r#"{"time":"2026-11-03T09:00:00Z","release":"r1","environment":"prod","status":"deployed"}"#.into(),
                "invalid: bad time \"2026-11-03T09:00:00Z\": expected epoch seconds".into()),
            ("epoch_s bool", EPOCH_S,
                r#"{"time":true,"release":"r1","environment":"prod","status":"deployed"}"#.into(),
                "invalid: bad time \"true\": expected epoch seconds".into()),
            ("epoch_ms", EPOCH_MS,
                r#"{"time":1793696400250,"release":"r1","environment":"prod","status":"deployed"}"#.into(),
                "time=2026-11-03T09:00:00.250Z".into()),
            ("strftime %z (nginx)", NGINX,
                r#"{"time":"03/Nov/2026:10:00:00 +0100","release":"r1","environment":"prod","status":"deployed"}"#.into(),
                "time=2026-11-03T09:00:00.000Z".into()),
            ("strftime %z, wrong shape", NGINX, canon(""),
                "invalid: bad time \"2026-11-03T10:00:00+01:00\": expected `%d/%b/%Y:%H:%M:%S %z`".into()),
            ("strftime without zone is UTC", NAIVE,
                r#"{"time":"2026-11-03 09:00:00","release":"r1","environment":"prod","status":"deployed"}"#.into(),
                "time=2026-11-03T09:00:00.000Z".into()),
            ("strftime date only is midnight", DATE,
                "time=2026-11-03 release=r1 environment=prod status=deployed commit_time=2026-11-01".into(),
                "time=2026-11-03T00:00:00.000Z; commit_time=2026-11-01T00:00:00.000Z".into()),
            ("commit_time falls back to RFC 3339", DATE,
                "time=2026-11-03 release=r1 environment=prod status=deployed commit_time=2026-11-01T12:00:00Z".into(),
                "commit_time=2026-11-01T12:00:00.000Z".into()),
            ("bad commit_time", DATE,
                "time=2026-11-03 release=r1 environment=prod status=deployed commit_time=soon".into(),
                "invalid: bad commit_time \"soon\": expected `%Y-%m-%d` or RFC 3339".into()),
            // --- validation of the closed fields, NUL
            ("bad actor_type", JSON, canon(r#","actor_type":"robot""#),
                "invalid: bad actor_type \"robot\": expected human or automation".into()),
            ("bad change_class", JSON, canon(r#","change_class":"urgent""#),
                "invalid: bad change_class \"urgent\": expected standard, normal or emergency".into()),
            ("change_class is case sensitive", JSON, canon(r#","change_class":"Emergency""#),
                "invalid: bad change_class \"Emergency\": expected standard, normal or emergency".into()),
            ("NUL in json value", JSON, canon(r#","service":"a\u0000b""#),
                "invalid: field service contains a NUL byte".into()),
            ("NUL in logfmt value", LOGFMT,
                "time=2026-11-03T09:00:00Z release=\"r\u{0}1\" environment=prod status=deployed".into(),
                "invalid: field release contains a NUL byte".into()),
            ("NUL in an unread json member is fine", JSON, canon(r#","other":"a\u0000b""#),
                "release=r1".into()),
            // --- the field length cap (event::MAX_FIELD_BYTES)
            ("a 1 KiB release is accepted", JSON,
                format!(r#"{{"time":"2026-11-03T09:00:00Z","release":"{}","environment":"prod","status":"deployed"}}"#, "r".repeat(1024)),
                format!("release={}", "r".repeat(1024))),
            ("a release one byte over the cap is invalid", JSON,
                format!(r#"{{"time":"2026-11-03T09:00:00Z","release":"{}","environment":"prod","status":"deployed"}}"#, "r".repeat(1025)),
                "invalid: field release is 1025 bytes long; at most 1024 are accepted".into()),
            ("a megabyte service is invalid", LOGFMT,
                format!("time=2026-11-03T09:00:00Z release=r1 environment=prod status=deployed service={}", "s".repeat(1 << 20)),
                "invalid: field service is 1048576 bytes long; at most 1024 are accepted".into()),
            ("the cap counts bytes, not chars", JSON, canon(&format!(r#","service":"{}""#, "é".repeat(513))),
                "invalid: field service is 1026 bytes long; at most 1024 are accepted".into()),
            ("a long reason (free text) is cut on a char boundary, not refused", JSON,
                canon(&format!(r#","reason":"{}""#, "é".repeat(600))),
                format!("reason={}…", "é".repeat(510))),
            ("a long raw status is invalid, not unmapped", JSON,
                format!(r#"{{"time":"2026-11-03T09:00:00Z","release":"r1","environment":"prod","status":"{}"}}"#, "x".repeat(2000)),
                "invalid: field status is 2000 bytes long; at most 1024 are accepted".into()),
            ("a field read through `fields` is capped too", REGEX,
                format!("2026-11-03T09:00:00Z r1 prod deployed {}", "v".repeat(1500)),
                "invalid: field actor is 1500 bytes long; at most 1024 are accepted".into()),
            ("long values are cut in reasons", JSON, canon(&format!(r#","actor_type":"{}""#, "x".repeat(100))),
                format!("invalid: bad actor_type \"{}\"...: expected human or automation", "x".repeat(64))),
        ];
        for (case, config, line, want) in &cases {
            check(case, &parser(config).parse(line), want);
        }
    }

    #[test]
    fn id_is_the_records_or_a_stable_hash() {
        let p = parser(JSON);
        let id = |line: &str| match p.parse(line) {
            Parsed::Event(e) => e.id,
            other => panic!("{other:?}"),
        };
        assert_eq!(id(&canon(r#","id":"gh-42""#)), "gh-42");
        assert_eq!(id(&canon("")), id(&canon("")));
        assert_eq!(
            id(&canon("")),
            id(&canon(r#","id":"""#)),
            "an empty id is no id"
        );
        // the hash is of the mapped event, not of the line's text
        assert_eq!(
            id(&canon("")),
            id(&format!(" {}\r\n", canon(r#","actor":"x""#)))
        );
        assert_ne!(id(&canon("")), id(&canon(r#","service":"api""#)));
        assert_ne!(id(&canon("")), id(&canon(r#","site":"dc-east2""#)));
        // site defaults to the agent's and is hashed as such
        assert_eq!(id(&canon("")), id(&canon(r#","site":"dc-east""#)));
    }

    #[test]
    fn agent_site_default_and_record_site() {
        let src: SourceConfig =
            toml::from_str("name = \"s\"\ntype = \"file\"\n").expect("config parses");
        let empty = LineParser::new(&src, &Model::builtin(), "").unwrap();
        check("no agent site", &empty.parse(&canon("")), "site=");
        check(
            "record site",
            &empty.parse(&canon(r#","site":"eu-1""#)),
            "site=eu-1; source=s",
        );
        check(
            "agent site",
            &parser(JSON).parse(&canon("")),
            "site=dc-east",
        );
    }

    #[test]
    fn defaults_fill_and_are_overridden() {
        let p = parser(
            "format = \"logfmt\"\n[defaults]\nenvironment = \"production\"\nservice = \"api\"\n\
             status = \"deployed\"\ntime = \"2026-11-03T09:00:00Z\"",
        );
        check(
            "filled",
            &p.parse("release=r1"),
            "release=r1; environment=production; service=api; status=deployed; time=2026-11-03T09:00:00.000Z",
        );
        check(
            "overridden",
            &p.parse("release=r1 environment=uat service=web status=failed"),
            "environment=uat; service=web; status=failed",
        );
    }

    #[test]
    fn map_record_reads_configured_keys() {
        let p = parser("[fields]\nrelease = \"tag\"\nenvironment = \"deploy.env\"");
        let record = [
            ("time", "2026-11-03T09:00:00Z"),
            ("tag", "v1"),
            ("deploy.env", "prod"),
            ("status", "deployed"),
        ];
        let got = p.map_record(|k| {
            record
                .iter()
                .find(|(rk, _)| *rk == k)
                .map(|(_, v)| Cow::Borrowed(*v))
        });
        check(
            "map_record",
            &got,
            "release=v1; environment=prod; status=deployed",
        );
    }

    #[test]
    fn config_errors() {
        let long_default = format!("[defaults]\nservice = \"{}\"", "s".repeat(1025));
        let cases: &[(&str, &str)] = &[
            ("match = '('", "`match` is not a valid regex"),
            (
                "format = \"regex\"\npattern = '(?P<x'",
                "`pattern` is not a valid regex",
            ),
            ("format = \"regex\"", "needs a `pattern`"),
            (
                "format = \"regex\"\npattern = '(?P<time>.*)'\n[fields]\nrelease = \"rel\"",
                "fields.release = \"rel\": not a named group of `pattern`",
            ),
            ("time_format = \"\"", "time_format is empty"),
            ("time_format = \"%Q\"", "is not a valid strftime pattern"),
            ("time_format = \"epoch\"", "has no % specifier"),
            (
                "[fields]\nenv = \"environment\"",
                "fields.env is not a canonical event field; use one of id, time",
            ),
            (
                "[fields]\nsource = \"tool\"",
                "fields.source is not a canonical event field",
            ),
            (
                "[defaults]\nenv = \"x\"",
                "defaults.env is not a canonical event field",
            ),
            (
                "[fields]\nenvironment = \"deploy..env\"",
                "empty path segment",
            ),
            (
                "format = \"logfmt\"\n[fields]\nenvironment = \"\"",
                "empty record key",
            ),
            (
                "[status_map]\nSUCCESS = \"done\"",
                "status_map.SUCCESS = \"done\" is not a state of the model; use one of scheduled,",
            ),
            (
                "[defaults]\nactor_type = \"robot\"",
                "defaults.actor_type = \"robot\": not a valid value",
            ),
            (
                "[defaults]\nchange_class = \"urgent\"",
                "defaults.change_class",
            ),
            ("[defaults]\ntime = \"now\"", "defaults.time"),
            (
                "[defaults]\nid = \"x\"",
                "a constant id would make every event a duplicate",
            ),
            ("[defaults]\nservice = \"a\\u0000b\"", "contains a NUL byte"),
            (&long_default, "defaults.service = \"ssss"),
        ];
        for (config, want) in cases {
            match try_parser(config) {
                Ok(_) => panic!("{config:?} should fail"),
                Err(e) => assert!(e.to_string().contains(want), "{config:?}: {e}"),
            }
        }
        // dots are literal outside JSON
        let p = parser("format = \"logfmt\"\n[fields]\nenvironment = \"deploy.env\"");
        check(
            "logfmt dotted key",
            &p.parse("time=2026-11-03T09:00:00Z release=r1 deploy.env=prod status=deployed"),
            "environment=prod",
        );
    }

    #[test]
    fn unescape_matches_json() {
        for s in [
            r#"a\"b"#,
            r#"\\\/\b\f\n\r\t"#,
            r"\u00e9\ud83d\ude80",
            "plain é",
        ] {
            let json: String = serde_json::from_str(&format!("\"{s}\"")).unwrap();
            assert_eq!(unescape(s).as_deref(), Some(json.as_str()), "{s}");
        }
        for bad in [r"\q", r"\u12", r"\ud83d", r"\ud83dx", r"\ude80", "\\"] {
            assert_eq!(unescape(bad), None, "{bad}");
        }
    }

    #[test]
    fn rfc3339_helper_agrees() {
        assert_eq!(
            parse_rfc3339("2026-11-03T09:00:00Z"),
            Some(1_793_696_400_000)
        );
    }

    /// Built once: compiling the regexes per proptest case would dominate.
    fn all_parsers() -> &'static [LineParser] {
        static PARSERS: std::sync::LazyLock<Vec<LineParser>> = std::sync::LazyLock::new(|| {
            [JSON, LOGFMT, REGEX, MAPPED, EPOCH_S, NGINX]
                .map(parser)
                .to_vec()
        });
        &PARSERS
    }

    /// JSON-looking text: JSON's punctuation, canonical keys, escapes, numbers.
    fn json_ish() -> impl Strategy<Value = String> {
        let token = prop_oneof![
            Just("{".to_string()),
            Just("}".to_string()),
            Just("[".to_string()),
            Just("]".to_string()),
            Just(",".to_string()),
            Just(":".to_string()),
            Just("\"".to_string()),
            Just("\\".to_string()),
            Just("\\u".to_string()),
            Just("null".to_string()),
            Just("true".to_string()),
            Just("1e999".to_string()),
            Just("-0.5".to_string()),
            Just("\"deploy\":{\"env\":".to_string()),
            prop::sample::select(Field::ALL.map(Field::name).to_vec())
                .prop_map(|k| format!("\"{k}\":")),
            "[a-z0-9 .=\u{0}\u{e9}\r\n]{0,6}",
        ];
        prop::collection::vec(token, 0..40).prop_map(|t| t.concat())
    }

    /// Well-formed records with arbitrary values for the canonical keys.
    fn json_record() -> impl Strategy<Value = String> {
        let value = prop_oneof![
            any::<String>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<f64>().prop_map(serde_json::Value::from),
            any::<bool>().prop_map(serde_json::Value::from),
            Just(serde_json::Value::Null),
            Just(serde_json::json!({"env": "x", "svc": {"name": 1}})),
        ];
        let key = prop_oneof![
            prop::sample::select(Field::ALL.map(Field::name).to_vec()).prop_map(String::from),
            prop::sample::select(vec!["rel", "deploy", "result", "x"]).prop_map(String::from),
        ];
        prop::collection::btree_map(key, value, 0..12)
            .prop_map(|m| serde_json::to_string(&m).unwrap())
    }

    /// The JSON path before the fast reader: serde_json reads every line
    /// and every nested path. The reference the fast path must agree with,
    /// event for event and rejection for rejection.
    fn reference_parse(p: &LineParser, line: &str) -> Parsed {
        let line = line.trim();
        if line.is_empty() {
            return Parsed::Skipped;
        }
        if let Some(re) = &p.prefilter
            && !re.is_match(line)
        {
            return Parsed::Skipped;
        }
        let mut slots = [None; N_FIELDS];
        if let Err(e) = serde_pick(line, &p.keys, &mut slots[..p.keys.len()]) {
            return Parsed::Invalid(e);
        }
        let mut raw = RawFields::default();
        for (field, spec) in Field::ALL.into_iter().zip(&p.specs) {
            let mut value = slots[spec.slot];
            for segment in &spec.rest {
                value = match value {
                    Some(v) if v.starts_with('{') => {
                        let mut slot = [None];
                        serde_pick(v, &[&**segment], &mut slot).unwrap();
                        slot[0]
                    }
                    _ => None,
                };
            }
            if let Some(v) = value {
                match scalar(v) {
                    Ok(value) => raw.put(field, value),
                    Err(kind) => {
                        return Parsed::Invalid(format!(
                            "field {field} ({}) is {kind}; expected a string, number or bool",
                            spec.key
                        ));
                    }
                }
            }
        }
        p.map_fields(raw)
    }

    /// The JSON sources of the tests: canonical keys, nested paths and a
    /// prefilter, each time format.
    fn json_parsers() -> &'static [LineParser] {
        static PARSERS: std::sync::LazyLock<Vec<LineParser>> = std::sync::LazyLock::new(|| {
            [JSON, MAPPED, EPOCH_S, EPOCH_MS, NGINX, NAIVE]
                .map(parser)
                .to_vec()
        });
        &PARSERS
    }

    /// A JSON string as written in a line: escapes of every kind (a lone
    /// surrogate and an escaped NUL are valid JSON), raw unicode, the
    /// values a line carries, values over the field cap.
    fn json_string_text() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            8 => "[a-z0-9 .:+_-]{0,8}",
            3 => prop::sample::select(vec![
                r#"\""#, r"\\", r"\/", r"\b", r"\f", r"\n", r"\r", r"\t", r"\u00e9",
                r"\u0000", r"\ud83d\ude80", r"\ud800", r"\udc00", r"\uD83D", r"\u0065",
                "é", "🚀", "\u{7f}", "\u{a0}", "\u{2028}",
            ]).prop_map(String::from),
            1 => (1020usize..1030).prop_map(|n| "x".repeat(n)),
            1 => Just("y".repeat(70_000)),
        ];
        prop::collection::vec(piece, 0..4).prop_map(|p| format!("\"{}\"", p.concat()))
    }

    /// A member key: the canonical names, the keys the mapped source reads
    /// (some written with escapes, which name the same key: serde_json
    /// decides those), any string.
    fn json_key_text() -> impl Strategy<Value = String> {
        let mut names: Vec<&str> = Field::ALL.map(Field::name).to_vec();
        names.extend(["rel", "deploy", "result", "env", "svc", "name", "x", ""]);
        prop_oneof![
            8 => prop::sample::select(names).prop_map(|k| format!("\"{k}\"")),
            1 => prop::sample::select(vec![
                r#""rel\u0065ase""#, r#""st\u0061tus""#, r#""\u0072el""#, r#""env\ud800""#,
                r#""time\"""#, r#""deplo\u0079""#,
            ]).prop_map(String::from),
            1 => json_string_text(),
        ]
    }

    /// The values the parsers read: good and bad statuses, times in each
    /// source's format (and near misses), names.
    fn known_value() -> impl Strategy<Value = String> {
        prop_oneof![time_value(), status_value(), name_value()]
    }

    fn time_value() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => prop::sample::select(vec![
                "\"2026-11-03T09:00:00Z\"", "\"2026-11-03T10:00:00.25+01:00\"",
                "\"2026-11-03T09:00:00.123456789-00:30\"", "\"2026-11-03 09:00:00Z\"",
                "\"03/Nov/2026:10:00:00 +0100\"", "\"2026-11-03 09:00:00\"", "1793696400",
                "\"1793696400.25\"", "1793696400250", "1.7936964e9",
            ]),
            1 => prop::sample::select(vec![
                "\"2026-12-31T23:59:60Z\"", "\"2026-02-30T09:00:00Z\"", "\" 2026-11-03T09:00:00Z\"",
                "\"2026-11-03T09:00:00\"", "\"yesterday\"", "-1", "\"\"", "null", "true",
                "\"2026-11-03T09:00:00.1234567891Z\"", "9223372036854775807",
            ]),
        ]
        .prop_map(String::from)
    }

    fn status_value() -> impl Strategy<Value = String> {
        prop::sample::select(vec![
            "\"deployed\"",
            "\"complete\"",
            "\"SUCCESS\"",
            "200",
            "\"200\"",
            "\"failed\"",
            "\"In Review\"",
            "\"\"",
            "null",
            "\"human\"",
            "\"normal\"",
        ])
        .prop_map(String::from)
    }

    fn name_value() -> impl Strategy<Value = String> {
        prop_oneof![
            8 => prop::sample::select(vec![
                "\"r1\"", "\"prod\"", "\"api\"", "\"2026.11.3\"", "\"r\\u00e9l\\n\"", "\"é🚀\"",
                "7", "-0.5e3", "false", "\"human\"", "\"robot\"", "\"emergency\"",
            ]).prop_map(String::from),
            1 => prop::sample::select(vec!["\"nul\\u0000\"", "\"\"", "null", "[]", "{}"])
                .prop_map(String::from),
            1 => json_string_text(),
        ]
    }

    /// A valid JSON value as written in a line: numbers in every form,
    /// literals, strings, nested arrays and objects.
    fn json_value_text() -> impl Strategy<Value = String> {
        let leaf = prop_oneof![
            6 => known_value(),
            4 => json_string_text(),
            2 => prop::sample::select(vec![
                "0", "-0", "1", "12.5", "1e999", "-1.5E-7", "2E+3", "0.0", "false",
            ]).prop_map(String::from),
            1 => any::<i64>().prop_map(|n| n.to_string()),
            1 => any::<f64>().prop_map(|f| serde_json::to_string(&f).unwrap()),
        ];
        leaf.prop_recursive(4, 32, 5, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4)
                    .prop_map(|v| format!("[{}]", v.join(","))),
                prop::collection::vec((json_key_text(), inner), 0..4).prop_map(|v| {
                    let m: Vec<String> = v.iter().map(|(k, v)| format!("{k}:{v}")).collect();
                    format!("{{{}}}", m.join(","))
                }),
            ]
        })
    }

    /// JSON's whitespace between tokens, or none.
    fn gap() -> impl Strategy<Value = &'static str> {
        prop_oneof![
            4 => Just(""),
            1 => prop::sample::select(vec![" ", "\t", "\r\n ", "  \n"]),
        ]
    }

    /// A valid JSON object line, mostly with the members the test sources
    /// read (with good and bad values), in any order, keys repeated, any
    /// other members; now and then deep nesting.
    fn valid_json_line() -> impl Strategy<Value = String> {
        let member = |key: BoxedStrategy<String>, value: BoxedStrategy<String>| {
            (gap(), key, gap(), gap(), value, gap())
                .prop_map(|(a, k, b, c, v, d)| format!("{a}{k}{b}:{c}{v}{d}"))
                .boxed()
        };
        let needed = |k: &'static str, v: BoxedStrategy<String>| {
            prop::option::weighted(0.95, member(Just(format!("\"{k}\"")).boxed(), v)).boxed()
        };
        let deploy = (name_value(), name_value(), known_value())
            .prop_map(|(e, n, x)| format!(r#"{{"env":{e},"svc":{{"name":{n}}},"x":{x}}}"#));
        let deep =
            (1usize..200, prop::sample::select(vec!["[", "{\"a\":"])).prop_map(|(n, open)| {
                let close = if open == "[" { "]" } else { "}" };
                format!("\"x\":{}1{}", open.repeat(n), close.repeat(n))
            });
        // A vector of strategies is a strategy of vectors: no deep tuple
        // types (their value trees overflow a test thread's stack in debug).
        let members: Vec<BoxedStrategy<Option<String>>> = vec![
            needed("time", time_value().boxed()),
            needed("release", name_value().boxed()),
            needed("environment", name_value().boxed()),
            needed("status", status_value().boxed()),
            needed("rel", name_value().boxed()),
            needed("result", status_value().boxed()),
            needed("deploy", deploy.boxed()),
            prop::option::weighted(0.1, deep).boxed(),
            prop::option::weighted(
                0.5,
                member(json_key_text().boxed(), json_value_text().boxed()),
            )
            .boxed(),
            prop::option::weighted(
                0.3,
                member(json_key_text().boxed(), json_value_text().boxed()),
            )
            .boxed(),
        ];
        members
            .prop_flat_map(|m| Just(m.into_iter().flatten().collect::<Vec<_>>()).prop_shuffle())
            .prop_map(|m| format!("{{{}}}", m.join(",")))
    }

    /// A valid line broken once: cut short, or a byte or token that JSON
    /// does not allow there put in (bad escapes and numbers, control
    /// bytes, non-JSON whitespace, trailing text), or not an object.
    fn broken_json_line() -> impl Strategy<Value = String> {
        let insert = prop::sample::select(vec![
            "{", "}", "[", "]", ",", ":", "\"", "\\", " ", "x", "0", "\u{0}", "\u{1f}", "é",
            r"\u12", r"\q", "01", "1.", ".5", "-", "+1", "1e", "NaN", "tru", "'a'", "\u{a0}",
            "\u{b}", ",}", " x", "{}", "}}",
        ]);
        prop_oneof![
            2 => (valid_json_line(), any::<prop::sample::Index>(), prop::option::of(insert))
                .prop_map(|(mut line, at, insert)| {
                    let bounds: Vec<usize> =
                        (0..=line.len()).filter(|i| line.is_char_boundary(*i)).collect();
                    let i = bounds[at.index(bounds.len())];
                    match insert {
                        Some(t) => line.insert_str(i, t),
                        None => line.truncate(i),
                    }
                    line
                }),
            1 => valid_json_line().prop_map(|l| format!("[{l}]")),
            1 => (valid_json_line(), prop::sample::select(vec![",", "}", " x", "{}", "\"\""]))
                .prop_map(|(l, t)| l + t),
        ]
    }

    /// Lines for the JSON path: mostly valid, a quarter broken.
    fn json_line() -> impl Strategy<Value = String> {
        prop_oneof![3 => valid_json_line(), 1 => broken_json_line()]
    }

    /// The fast reader answers for ordinary lines (so the property tests
    /// below compare it, not only its fallback) and leaves the rest to
    /// serde_json.
    #[test]
    fn the_fast_json_reader_takes_ordinary_lines() {
        let p = parser(JSON);
        let keys = &p.keys;
        for line in [
            canon(""),
            canon(r#","reason":"a \"quoted\" word\n","x":[1,{"y":null}],"commit_time":1.5e9"#),
            r#"{ "release" : "r1" , "deploy": { "env": [ -0.5e+3, true, false, "\ud800" ] } }"#
                .to_string(),
            "{}".to_string(),
        ] {
            let mut slots = [None; N_FIELDS];
            assert!(
                jsonpick::pick(&line, keys, &mut slots[..keys.len()]).is_some(),
                "{line}"
            );
            if line == "{}" {
                assert_eq!(slots.iter().flatten().count(), 0);
            }
        }
        let mut slots = [None; N_FIELDS];
        let line = canon(r#","reason":"a \"quoted\" word\n","release":7"#);
        jsonpick::pick(&line, keys, &mut slots[..keys.len()]).unwrap();
        let got = |f: Field| slots[p.specs[f as usize].slot];
        assert_eq!(got(Field::Reason), Some(r#""a \"quoted\" word\n""#));
        assert_eq!(got(Field::Release), Some("7"), "the last of a repeated key");
        assert_eq!(got(Field::Time), Some("\"2026-11-03T10:00:00+01:00\""));
        for line in [
            r#"{"rel\u0065ase":"r1"}"#.to_string(),
            format!(r#"{{"x":{}{}}}"#, "[".repeat(65), "]".repeat(65)),
            r#"{"a":1,}"#.to_string(),
            r#"{"a":01}"#.to_string(),
            "{\"a\":\"\u{1}\"}".to_string(),
            r#"{"a":1} x"#.to_string(),
            r#"[{"a":1}]"#.to_string(),
            r#"{"a":"\q"}"#.to_string(),
        ] {
            let mut slots = [None; N_FIELDS];
            assert!(
                jsonpick::pick(&line, keys, &mut slots[..keys.len()]).is_none(),
                "{line}"
            );
        }
        // Deep nesting the fast reader leaves to serde_json still parses.
        let deep = canon(&format!(r#","x":{}{}"#, "[".repeat(500), "]".repeat(500)));
        assert_eq!(p.parse(&deep), p.parse(&canon("")));
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        #[test]
        fn arbitrary_strings_never_panic(line in any::<String>()) {
            for p in all_parsers() {
                let _ = p.parse(&line);
            }
        }

        #[test]
        fn json_ish_strings_never_panic(line in json_ish()) {
            for p in all_parsers() {
                let _ = p.parse(&line);
            }
        }

        #[test]
        fn json_records_never_panic_and_events_are_clean(line in json_record()) {
            for p in all_parsers() {
                if let Parsed::Event(e) = p.parse(&line) {
                    for v in [&e.id, &e.release, &e.service, &e.environment, &e.site, &e.status] {
                        prop_assert!(!v.contains('\0'));
                    }
                    prop_assert!(!e.release.is_empty() && !e.environment.is_empty());
                }
            }
        }

        /// The fast JSON path gives the old path's event or rejection, for
        /// every JSON source, over adversarial lines.
        #[test]
        fn the_fast_json_path_agrees_with_serde_json(line in json_line()) {
            for p in json_parsers() {
                prop_assert_eq!(p.parse(&line), reference_parse(p, &line), "{}", line);
            }
        }

        #[test]
        fn the_fast_json_path_agrees_on_json_ish_text(line in json_ish()) {
            for p in json_parsers() {
                prop_assert_eq!(p.parse(&line), reference_parse(p, &line));
            }
        }

        #[test]
        fn the_fast_json_path_agrees_on_records(line in json_record()) {
            for p in json_parsers() {
                prop_assert_eq!(p.parse(&line), reference_parse(p, &line));
            }
        }

        #[test]
        fn the_fast_json_path_agrees_on_any_string(line in any::<String>()) {
            for p in json_parsers() {
                prop_assert_eq!(p.parse(&line), reference_parse(p, &line));
            }
        }

        #[test]
        fn logfmt_ish_strings_never_panic(line in "([a-z_]{0,6}(=(\"([^\"\\\\]|\\\\.){0,8}\"?|[^ ]{0,8}))? ?){0,12}") {
            let _ = all_parsers()[1].parse(&line);
        }
    }
}
