//! The canonical fields (docs/events.md) and their mapping: one record's raw
//! values by canonical field, through a source's `defaults` and status
//! table, into one canonical event, or the reason it is none.
//!
//! Every source maps through a [`Mapping`]: the line parsers after reading
//! a line, the presets after extracting a payload, the pollers and the
//! Kubernetes source through the presets. check-config reads the field names
//! and the required fields here ([`Field::ALL`], [`Field::REQUIRED`]).
//!
//! What [`Mapping::map`] decides, in order: an absent or empty value takes
//! the source's default; a value with a NUL byte or over
//! [`event::MAX_FIELD_BYTES`] (a `reason` is cut there instead), a missing
//! required field, a bad time, actor_type or change_class is
//! [`Parsed::Invalid`]; the raw status becomes `status_map[raw]`, else `raw`
//! if it is a state id of the model, else the record is
//! [`Parsed::Unmapped`]. The presets map the status first
//! ([`Mapping::status_first`]): a payload whose status maps to no state is
//! `unmapped` even when it lacks a release or an environment.

use std::borrow::Cow;
use std::fmt;

use foldhash::HashMap;

use super::timefmt::TimeFormat;
use crate::config::SourceConfig;
use crate::event::{self, ActorType, ChangeClass, Event, TimeMs};
use crate::model::Model;

/// The outcome of one record (a line, a payload's status change); each maps
/// onto one `relstat_events_total{result}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    Event(Box<Event>),
    /// An empty line, or one the `match` prefilter rejects.
    Skipped,
    /// Why the record cannot be read (short; fit for a debug log).
    Invalid(String),
    /// The raw status, which maps to no state of the model.
    Unmapped(String),
}

/// The result and reason a payload's outcomes give its dead letter
/// ([`crate::dlq`]): the first record that is unmapped or invalid; `None`
/// when every record became an event (or was skipped).
pub fn dead_letter_verdict(parsed: &[Parsed]) -> Option<(event::InputResult, String)> {
    parsed.iter().find_map(|p| match p {
        Parsed::Unmapped(raw) => Some((
            event::InputResult::Unmapped,
            format!("status {raw:?} maps to no state"),
        )),
        Parsed::Invalid(why) => Some((event::InputResult::Invalid, why.clone())),
        _ => None,
    })
}

/// A canonical event field a record can provide (`source` cannot: it is
/// always the source's name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Field {
    Id,
    Time,
    Release,
    Service,
    Environment,
    Site,
    Status,
    Actor,
    ActorType,
    Reason,
    Version,
    Commit,
    Artifact,
    CommitTime,
    ChangeClass,
}

/// How many canonical fields a record can provide.
pub(crate) const N_FIELDS: usize = 15;

impl Field {
    /// Every field, in docs/events.md's order.
    pub const ALL: [Field; N_FIELDS] = [
        Field::Id,
        Field::Time,
        Field::Release,
        Field::Service,
        Field::Environment,
        Field::Site,
        Field::Status,
        Field::Actor,
        Field::ActorType,
        Field::Reason,
        Field::Version,
        Field::Commit,
        Field::Artifact,
        Field::CommitTime,
        Field::ChangeClass,
    ];

    /// The fields a record must carry (or a source's `defaults` supply).
    pub const REQUIRED: [Field; 4] = [
        Field::Time,
        Field::Release,
        Field::Environment,
        Field::Status,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Field::Id => "id",
            Field::Time => "time",
            Field::Release => "release",
            Field::Service => "service",
            Field::Environment => "environment",
            Field::Site => "site",
            Field::Status => "status",
            Field::Actor => "actor",
            Field::ActorType => "actor_type",
            Field::Reason => "reason",
            Field::Version => "version",
            Field::Commit => "commit",
            Field::Artifact => "artifact",
            Field::CommitTime => "commit_time",
            Field::ChangeClass => "change_class",
        }
    }

    pub fn from_name(name: &str) -> Option<Field> {
        Field::ALL.into_iter().find(|f| f.name() == name)
    }

    /// Every field's name, for messages: `id, time, release, ...`.
    pub fn names() -> String {
        Field::ALL.map(Field::name).join(", ")
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The raw string values of one record by canonical field, before defaults
/// and mapping; borrowed from the input where it needs no unescaping.
#[derive(Debug, Default, Clone)]
pub struct RawFields<'a>([Option<Cow<'a, str>>; N_FIELDS]);

impl<'a> RawFields<'a> {
    pub fn set(&mut self, field: Field, value: impl Into<Cow<'a, str>>) {
        self.0[field as usize] = Some(value.into());
    }

    pub fn get(&self, field: Field) -> Option<&str> {
        self.0[field as usize].as_deref()
    }

    /// Sets or clears a field (readers that may find no value).
    pub(crate) fn put(&mut self, field: Field, value: Option<Cow<'a, str>>) {
        self.0[field as usize] = value;
    }
}

/// A source's mapping config that cannot work. Config validation reports
/// the same problems; this is the last line of defence.
#[derive(Debug, thiserror::Error)]
pub enum MappingError {
    #[error(
        "source `{source_name}`: {table}.{key} is not a canonical event field; use one of {expected}"
    )]
    UnknownField {
        source_name: String,
        table: &'static str,
        key: String,
        expected: String,
    },
    #[error(
        "source `{source_name}`: status_map.{raw} = {state:?} is not a state of the model; use one of {expected}"
    )]
    UnknownState {
        source_name: String,
        raw: String,
        state: String,
        expected: String,
    },
    #[error("source `{source_name}`: defaults.{field} = {value:?}: {message}")]
    BadDefault {
        source_name: String,
        field: Field,
        value: String,
        message: String,
    },
}

/// One source's mapping: its defaults, its status table and its time
/// format. Built once per source; [`Mapping::map`] takes `&self`.
#[derive(Debug, Clone)]
pub struct Mapping {
    source: String,
    agent_site: String,
    time: TimeFormat,
    /// Indexed by `Field as usize`; empty defaults are `None`.
    defaults: [Option<Box<str>>; N_FIELDS],
    /// Raw status -> state id: the model's ids map to themselves unless
    /// `status_map` says otherwise, so one lookup decides. foldhash, not
    /// SipHash: it is looked up once a line, and only the config inserts.
    status: HashMap<Box<str>, Box<str>>,
    /// The status is mapped before the other required fields are checked
    /// (presets: a payload that is no release step is `unmapped`, not
    /// `invalid` for lacking a release); line sources check fields first.
    status_first: bool,
}

impl Mapping {
    /// Checks and compiles a source's `fields` names, `defaults` and
    /// `status_map`. `agent_site` is the site of events whose record and
    /// defaults name none; `time` reads the `time` field.
    pub fn new(
        src: &SourceConfig,
        model: &Model,
        agent_site: &str,
        time: TimeFormat,
    ) -> Result<Mapping, MappingError> {
        let name = || src.name.clone();
        for (table, map) in [("fields", &src.fields), ("defaults", &src.defaults)] {
            if let Some(key) = map.keys().find(|k| Field::from_name(k).is_none()) {
                return Err(MappingError::UnknownField {
                    source_name: name(),
                    table,
                    key: key.clone(),
                    expected: Field::names(),
                });
            }
        }
        let mut defaults: [Option<Box<str>>; N_FIELDS] = Default::default();
        for field in Field::ALL {
            if let Some(value) = src.defaults.get(field.name()) {
                check_default(field, value, &time).map_err(|message| MappingError::BadDefault {
                    source_name: name(),
                    field,
                    value: value.to_string(),
                    message: message.to_string(),
                })?;
                if !value.is_empty() {
                    defaults[field as usize] = Some(value.as_str().into());
                }
            }
        }
        // The ledger's decisions (`rejected`, `revoked`) pass as well: the
        // tracker takes them from approval sources and counts them
        // `unmapped` from any other.
        let mut status: HashMap<Box<str>, Box<str>> = model
            .states()
            .iter()
            .map(|s| s.id.as_str())
            .chain(crate::model::LEDGER_DECISIONS.iter().copied())
            .map(|id| (id.into(), id.into()))
            .collect();
        for (raw, state) in &src.status_map {
            if model.index(state).is_none()
                && !crate::model::LEDGER_DECISIONS.contains(&state.as_str())
            {
                return Err(MappingError::UnknownState {
                    source_name: name(),
                    raw: raw.clone(),
                    state: state.clone(),
                    expected: model
                        .states()
                        .iter()
                        .map(|s| s.id.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            }
            status.insert(raw.as_str().into(), state.as_str().into());
        }
        Ok(Mapping {
            source: src.name.clone(),
            agent_site: agent_site.to_string(),
            time,
            defaults,
            status,
            status_first: false,
        })
    }

    /// Maps the status before checking the other required fields (what the
    /// presets do: see [`Mapping::map`]).
    pub fn status_first(mut self) -> Mapping {
        self.status_first = true;
        self
    }

    /// Applies defaults, validation and the status mapping to raw values by
    /// canonical field.
    pub fn map(&self, raw: RawFields<'_>) -> Parsed {
        // Shortened to this call, so the defaults can be borrowed into it.
        let mut raw: RawFields<'_> = raw;
        self.map_mut(&mut raw)
    }

    /// [`Mapping::map`] on a record the caller keeps (defaults are filled
    /// into it): the line parsers' hot path, which does not move it.
    pub(crate) fn map_mut<'a>(&'a self, raw: &mut RawFields<'a>) -> Parsed {
        match self.build(raw) {
            Ok(event) => Parsed::Event(event),
            Err(outcome) => outcome,
        }
    }

    fn build<'a>(&'a self, raw: &mut RawFields<'a>) -> Result<Box<Event>, Parsed> {
        let values = &mut raw.0;
        for (field, value) in Field::ALL.into_iter().zip(values.iter_mut()) {
            if value.as_deref().is_none_or(str::is_empty) {
                *value = self.defaults[field as usize].as_deref().map(Cow::Borrowed);
            }
            if let Some(v) = value.as_deref() {
                if v.contains('\0') {
                    return Err(invalid(format!("field {field} contains a NUL byte")));
                }
                if field == Field::Reason && v.len() > event::MAX_FIELD_BYTES {
                    *value = Some(Cow::Owned(event::cut_text(v)));
                    continue;
                }
                event::check_field_len(field.name(), v).map_err(|e| invalid(e.to_string()))?;
            }
        }
        let get = |f: Field| values[f as usize].as_deref();
        let required = |f: Field| get(f).ok_or_else(|| invalid(format!("missing field {f}")));
        if self.status_first {
            let raw = required(Field::Status)?;
            if !self.status.contains_key(raw) {
                return Err(Parsed::Unmapped(raw.to_string()));
            }
        }
        let time_raw = required(Field::Time)?;
        let release = required(Field::Release)?;
        let environment = required(Field::Environment)?;
        let status_raw = required(Field::Status)?;

        let bad = |f: Field, v: &str, expected: &str| {
            invalid(format!("bad {f} {}: expected {expected}", shown(v)))
        };
        let time = self
            .time
            .parse(time_raw)
            .ok_or_else(|| bad(Field::Time, time_raw, &self.time.describe()))?;
        let commit_time = match get(Field::CommitTime) {
            Some(v) => Some(self.parse_commit_time(v).ok_or_else(|| {
                bad(
                    Field::CommitTime,
                    v,
                    &format!("{} or RFC 3339", self.time.describe()),
                )
            })?),
            None => None,
        };
        let actor_type = match get(Field::ActorType) {
            Some(v) => ActorType::parse(v)
                .ok_or_else(|| bad(Field::ActorType, v, "human or automation"))?,
            None => ActorType::Automation,
        };
        let change_class = match get(Field::ChangeClass) {
            Some(v) => Some(
                ChangeClass::parse(v)
                    .ok_or_else(|| bad(Field::ChangeClass, v, "standard, normal or emergency"))?,
            ),
            None => None,
        };
        let Some(status) = self.status.get(status_raw) else {
            return Err(Parsed::Unmapped(status_raw.to_string()));
        };

        let service = get(Field::Service).unwrap_or(event::NO_SERVICE);
        let site = get(Field::Site).unwrap_or(&self.agent_site);
        let id = match get(Field::Id) {
            Some(id) => id.to_string(),
            None => Event::stable_id(release, service, environment, site, status, time),
        };
        let owned = |f: Field| get(f).map(str::to_string);
        Ok(Box::new(Event {
            id,
            time,
            release: release.to_string(),
            service: service.to_string(),
            environment: environment.to_string(),
            site: site.to_string(),
            status: status.to_string(),
            actor: get(Field::Actor).unwrap_or(event::NO_ACTOR).to_string(),
            actor_type,
            source: self.source.clone(),
            reason: owned(Field::Reason),
            version: owned(Field::Version),
            commit: owned(Field::Commit),
            artifact: owned(Field::Artifact),
            commit_time,
            change_class,
        }))
    }

    fn parse_commit_time(&self, v: &str) -> Option<TimeMs> {
        self.time.parse(v).or_else(|| TimeFormat::Rfc3339.parse(v))
    }
}

fn invalid(reason: String) -> Parsed {
    Parsed::Invalid(reason)
}

/// A value for an error message: quoted, and cut to keep log lines short.
fn shown(v: &str) -> String {
    const MAX: usize = 64;
    match v.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{:?}...", &v[..cut]),
        None => format!("{v:?}"),
    }
}

/// Rejects defaults that would make every record invalid, at startup.
fn check_default(field: Field, value: &str, time: &TimeFormat) -> Result<(), &'static str> {
    if value.contains('\0') {
        return Err("contains a NUL byte");
    }
    if event::check_field_len(field.name(), value).is_err() {
        // The message names the number: keep it in step with the cap.
        const _: () = assert!(event::MAX_FIELD_BYTES == 1024);
        return Err("longer than the 1024 bytes any field may have");
    }
    let ok = match field {
        Field::Id => return Err("a constant id would make every event a duplicate"),
        Field::ActorType => ActorType::parse(value).is_some(),
        Field::ChangeClass => ChangeClass::parse(value).is_some(),
        Field::Time => time.parse(value).is_some(),
        Field::CommitTime => {
            time.parse(value).is_some() || TimeFormat::Rfc3339.parse(value).is_some()
        }
        _ => true,
    };
    if ok {
        Ok(())
    } else {
        Err("not a valid value for this field")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_required_fields_are_fields() {
        for f in Field::ALL {
            assert_eq!(Field::from_name(f.name()), Some(f));
        }
        assert_eq!(Field::from_name("source"), None);
        assert!(Field::REQUIRED.iter().all(|f| Field::ALL.contains(f)));
        assert!(Field::names().starts_with("id, time, release"));
    }

    /// A record with a status of no state and no release: file sources
    /// count it `invalid` (fields first), presets `unmapped` (status first).
    #[test]
    fn presets_map_the_status_before_the_required_fields() {
        let src: SourceConfig =
            toml::from_str("name = \"s\"\ntype = \"file\"\npaths = [\"/x\"]\n").unwrap();
        let line = Mapping::new(&src, &Model::builtin(), "", TimeFormat::Rfc3339).unwrap();
        let preset = line.clone().status_first();
        let mut raw = RawFields::default();
        raw.set(Field::Time, "2026-11-01T10:00:00Z");
        raw.set(Field::Environment, "prod");
        raw.set(Field::Status, "In Review");
        assert_eq!(
            line.map(raw.clone()),
            Parsed::Invalid("missing field release".into())
        );
        assert_eq!(
            preset.map(raw.clone()),
            Parsed::Unmapped("In Review".into())
        );
        // A status that maps still needs the release.
        raw.set(Field::Status, "deployed");
        assert_eq!(
            preset.map(raw),
            Parsed::Invalid("missing field release".into())
        );
    }
}
