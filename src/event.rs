//! The canonical status event (docs/events.md): what every source produces and
//! the only thing the tracker, the rules, the store and the sinks ever see.
//!
//! Times are milliseconds since the Unix epoch (UTC) held in [`TimeMs`]: cheap
//! to compare and hash, exact for every format the tools emit.

use serde::{Deserialize, Serialize};

use crate::sym::Sym;

/// Milliseconds since the Unix epoch, UTC.
pub type TimeMs = i64;

/// The service value used when a release is not per service.
pub const NO_SERVICE: &str = "-";
/// The actor value used when a source does not say who made the change.
pub const NO_ACTOR: &str = "-";

/// The longest value, in bytes, of any canonical string field. A line,
/// payload or imported record with a longer value is `invalid` at ingest:
/// every value is held per tracked key, stored, written into API answers and
/// SIEM messages (rsyslog's default message limit is 8 KiB), so one hostile
/// value must not cost megabytes downstream. Real ids, names, versions and
/// messages are far shorter.
pub const MAX_FIELD_BYTES: usize = 1024;

/// A canonical field value longer than [`MAX_FIELD_BYTES`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field {field} is {len} bytes long; at most {MAX_FIELD_BYTES} are accepted")]
pub struct FieldTooLong {
    pub field: &'static str,
    pub len: usize,
}

/// `Err` when `value` of canonical field `field` is over [`MAX_FIELD_BYTES`].
pub fn check_field_len(field: &'static str, value: &str) -> Result<(), FieldTooLong> {
    if value.len() > MAX_FIELD_BYTES {
        Err(FieldTooLong {
            field,
            len: value.len(),
        })
    } else {
        Ok(())
    }
}

/// `reason` is free text (a tool's message: Argo CD, Flux, a Jira comment):
/// one over [`MAX_FIELD_BYTES`] is cut on a character boundary and ends in
/// `…`, rather than making its event `invalid` and losing the status it
/// came with. Identity fields (release, service, ...) are refused instead:
/// a cut one could name another release.
pub fn cut_text(v: &str) -> String {
    const MARK: &str = "…";
    let mut end = MAX_FIELD_BYTES - MARK.len();
    while !v.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{MARK}", &v[..end])
}

/// Who made a change: a person or a tool. Status conflicts are reports from
/// different actor types that contradict each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ActorType {
    Human,
    #[default]
    Automation,
}

impl ActorType {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "human" => Some(Self::Human),
            "automation" => Some(Self::Automation),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Human => "human",
            Self::Automation => "automation",
        }
    }
}

/// ITIL change class; `emergency` with a reason is the hotfix path that the
/// gate reports as `emergency_change` instead of `gate_bypass`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeClass {
    Standard,
    Normal,
    Emergency,
}

impl ChangeClass {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "standard" => Some(Self::Standard),
            "normal" => Some(Self::Normal),
            "emergency" => Some(Self::Emergency),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Standard => "standard",
            Self::Normal => "normal",
            Self::Emergency => "emergency",
        }
    }
}

/// One status change of one tracked item, after mapping onto the model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub id: String,
    /// Event time: when the status changed in the tool.
    pub time: TimeMs,
    pub release: String,
    pub service: String,
    pub environment: String,
    pub site: String,
    /// A state id of the model.
    pub status: String,
    pub actor: String,
    pub actor_type: ActorType,
    pub source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit_time: Option<TimeMs>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change_class: Option<ChangeClass>,
}

/// The tracked item an event belongs to: (release, service, environment, site).
///
/// The service, environment and site repeat across releases, so they are
/// interned ([`Sym`]: one shared copy for every key, the rollup index and
/// whatever else holds the key); the release is unique to its keys and
/// stays owned. A [`Sym`] compares, orders, hashes and serializes as its
/// text, so the key's order, hash, encoding and serde forms are those of
/// four strings.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Key {
    pub release: String,
    pub service: Sym,
    pub environment: Sym,
    pub site: Sym,
}

impl Key {
    /// A byte encoding that sorts by release first, so one release's keys and
    /// history are a contiguous range in the store. Fields are separated by
    /// 0x00, which no field may contain (the parsers reject it).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            self.release.len() + self.service.len() + self.environment.len() + self.site.len() + 3,
        );
        self.encode_into(&mut out);
        out
    }

    /// [`Key::encode`], appended to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        for (i, part) in [
            self.release.as_str(),
            &self.service,
            &self.environment,
            &self.site,
        ]
        .into_iter()
        .enumerate()
        {
            if i > 0 {
                out.push(0);
            }
            out.extend_from_slice(part.as_bytes());
        }
    }

    pub fn decode(bytes: &[u8]) -> Option<Key> {
        let mut parts = bytes.split(|b| *b == 0);
        let mut next = || parts.next().and_then(|p| std::str::from_utf8(p).ok());
        let key = Key {
            release: next()?.to_string(),
            service: Sym::new(next()?),
            environment: Sym::new(next()?),
            site: Sym::new(next()?),
        };
        Some(key)
    }
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}", self.release, self.service, self.environment)?;
        if !self.site.is_empty() {
            write!(f, "@{}", self.site)?;
        }
        Ok(())
    }
}

impl Event {
    pub fn key(&self) -> Key {
        Key {
            release: self.release.clone(),
            service: Sym::new(&self.service),
            environment: Sym::new(&self.environment),
            site: Sym::new(&self.site),
        }
    }

    /// The first string field over [`MAX_FIELD_BYTES`], for events built
    /// from something other than the line parser (imported records).
    pub fn check_lengths(&self) -> Result<(), FieldTooLong> {
        for (field, value) in [
            ("id", self.id.as_str()),
            ("release", &self.release),
            ("service", &self.service),
            ("environment", &self.environment),
            ("site", &self.site),
            ("status", &self.status),
            ("actor", &self.actor),
            ("source", &self.source),
            ("reason", self.reason.as_deref().unwrap_or("")),
            ("version", self.version.as_deref().unwrap_or("")),
            ("commit", self.commit.as_deref().unwrap_or("")),
            ("artifact", self.artifact.as_deref().unwrap_or("")),
        ] {
            check_field_len(field, value)?;
        }
        Ok(())
    }

    /// The stable id of an event whose tool gave none: a hash of
    /// (release, service, environment, site, status, time), so the same line
    /// read twice (a re-read file, a replay) is recognised as a duplicate.
    pub fn stable_id(
        release: &str,
        service: &str,
        environment: &str,
        site: &str,
        status: &str,
        time: TimeMs,
    ) -> String {
        // xxh3-128 over the NUL-separated fields: stable across versions
        // and platforms, and ~20x cheaper than SHA-256 on this hot path
        // (an id-less line pays it once). Not a security boundary: an id
        // only has to tell events apart. Fields that fit a stack buffer
        // (nearly all) are hashed in one shot, which gives the streaming
        // hasher's digest without its 600-byte state.
        let parts = [release, service, environment, site, status];
        let len: usize = parts.iter().map(|p| p.len() + 1).sum::<usize>() + 8;
        let digest = if len <= 256 {
            let mut buf = [0u8; 256];
            let mut at = 0;
            for part in parts {
                buf[at..at + part.len()].copy_from_slice(part.as_bytes());
                at += part.len() + 1; // the NUL is already there
            }
            buf[at..at + 8].copy_from_slice(&time.to_be_bytes());
            xxhash_rust::xxh3::xxh3_128(&buf[..len])
        } else {
            let mut h = xxhash_rust::xxh3::Xxh3::new();
            for part in parts {
                h.update(part.as_bytes());
                h.update(&[0u8]);
            }
            h.update(&time.to_be_bytes());
            h.digest128()
        };
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut s = *b"h:00000000000000000000000000000000";
        for (i, b) in digest.to_be_bytes().into_iter().enumerate() {
            s[2 + 2 * i] = HEX[(b >> 4) as usize];
            s[3 + 2 * i] = HEX[(b & 15) as usize];
        }
        // Only ASCII was written.
        String::from_utf8(s.to_vec()).unwrap_or_default()
    }
}

/// Parses an RFC 3339 timestamp into milliseconds.
pub fn parse_rfc3339(s: &str) -> Option<TimeMs> {
    chrono::DateTime::parse_from_rfc3339(s.trim())
        .ok()
        .map(|t| t.timestamp_millis())
}

/// Formats milliseconds as RFC 3339 UTC with millisecond precision
/// (`2026-11-03T09:00:00.250Z`). Written out by hand: it runs for every row
/// of an API answer and twice per forwarded SIEM event, and chrono's
/// general formatter costs several times more. Years outside 0..=9999 fall
/// back to chrono.
pub fn format_rfc3339(t: TimeMs) -> String {
    match rfc3339_bytes(t) {
        // Only ASCII digits and separators were written.
        Some(b) => String::from_utf8(b.to_vec()).unwrap_or_default(),
        None => match chrono::DateTime::from_timestamp_millis(t) {
            Some(dt) => dt.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            None => t.to_string(),
        },
    }
}

/// [`format_rfc3339`] appended to `out`, without an allocation.
pub fn write_rfc3339(out: &mut Vec<u8>, t: TimeMs) {
    match rfc3339_bytes(t) {
        Some(b) => out.extend_from_slice(&b),
        None => out.extend_from_slice(format_rfc3339(t).as_bytes()),
    }
}

/// [`format_rfc3339`] without allocating, for years 0..=9999 (`None`
/// outside them): the SIEM formatters and the API write it straight into
/// their output.
pub fn rfc3339_bytes(t: TimeMs) -> Option<[u8; 24]> {
    let secs = t.div_euclid(1000);
    let ms = t.rem_euclid(1000) as u32;
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400) as u32;
    // Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    if !(0..=9999).contains(&year) {
        return None;
    }
    let mut b = *b"0000-00-00T00:00:00.000Z";
    let mut put = |at: usize, v: u32, width: usize| {
        let mut v = v;
        for i in (0..width).rev() {
            b[at + i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, year as u32, 4);
    put(5, month, 2);
    put(8, day, 2);
    put(11, sod / 3600, 2);
    put(14, sod / 60 % 60, 2);
    put(17, sod % 60, 2);
    put(20, ms, 3);
    Some(b)
}

/// The wall clock in milliseconds.
pub fn now_ms() -> TimeMs {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as TimeMs)
        .unwrap_or(0)
}

/// Parses a humantime duration (`90s`, `1h 30m`, `7d`), with an error that
/// says what is accepted.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(s.trim()).map_err(|e| {
        format!("invalid duration {s:?} ({e}); write it like \"90s\", \"15m\", \"2h\" or \"7d\"")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_id_depends_on_every_field() {
        let base = Event::stable_id("r", "s", "e", "x", "deployed", 1000);
        assert_eq!(base, Event::stable_id("r", "s", "e", "x", "deployed", 1000));
        assert_ne!(base, Event::stable_id("r", "s", "e", "x", "deployed", 1001));
        assert_ne!(base, Event::stable_id("r", "s", "e", "x", "failed", 1000));
        assert_ne!(base, Event::stable_id("r", "s", "e", "", "deployed", 1000));
        // field boundaries matter: ("ab","c") is not ("a","bc")
        assert_ne!(
            Event::stable_id("ab", "c", "e", "x", "deployed", 1),
            Event::stable_id("a", "bc", "e", "x", "deployed", 1)
        );
        assert!(base.starts_with("h:") && base.len() == 34);
    }

    /// The one-shot hash over the stack buffer is the streaming hash the
    /// ids were always made with (ids are stored: they must not change),
    /// across xxh3's length classes and the buffer's edge.
    #[test]
    fn stable_id_is_the_streaming_hash_of_its_fields() {
        let streaming = |parts: [&str; 5], time: TimeMs| {
            let mut h = xxhash_rust::xxh3::Xxh3::new();
            for part in parts {
                h.update(part.as_bytes());
                h.update(&[0u8]);
            }
            h.update(&time.to_be_bytes());
            format!("h:{:032x}", h.digest128())
        };
        let text = "r\u{e9}lease-2026.11.3/\u{1f680}".repeat(40);
        for len in (0..=text.len()).filter(|l| text.is_char_boundary(*l)) {
            let r = &text[..len];
            for (parts, time) in [
                ([r, "-", "production", "", "deployed"], 1_793_696_400_000),
                (["2026.11.3", r, "e", "dc-east", "failed"], -1),
                (["", "", "", "", r], i64::MAX),
            ] {
                let [a, b, c, d, e] = parts;
                assert_eq!(
                    Event::stable_id(a, b, c, d, e, time),
                    streaming(parts, time),
                    "{len}"
                );
            }
        }
    }

    #[test]
    fn key_roundtrips_through_bytes() {
        let k = Key {
            release: "2026.11.3".into(),
            service: "-".into(),
            environment: "production".into(),
            site: "".into(),
        };
        assert_eq!(Key::decode(&k.encode()), Some(k));
    }

    #[test]
    fn the_fast_formatter_agrees_with_chrono() {
        let chrono_fmt = |t: TimeMs| {
            chrono::DateTime::from_timestamp_millis(t)
                .unwrap()
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        };
        // edges: epoch, before it, leap days, century rules, year ends
        let mut cases: Vec<TimeMs> = vec![
            0,
            -1,
            1,
            999,
            -86_400_000,
            951_782_400_000,
            4_107_542_399_999,
            -62_135_596_800_000,
            253_402_300_799_999,
            1_790_000_000_123,
        ];
        let mut x: i64 = 0x2545_f491_4f6c_dd1d;
        for _ in 0..100_000 {
            // xorshift: spread over years 0001..9999
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            cases.push(x.rem_euclid(315_537_897_600_000) - 62_135_596_800_000);
        }
        for t in cases {
            assert_eq!(format_rfc3339(t), chrono_fmt(t), "t = {t}");
        }
        // outside 0..=9999: chrono's own form
        assert_eq!(
            format_rfc3339(-62_200_000_000_000),
            chrono_fmt(-62_200_000_000_000)
        );
    }

    #[test]
    fn rfc3339_roundtrip() {
        let t = parse_rfc3339("2026-11-03T10:00:00.250+01:00").unwrap();
        assert_eq!(format_rfc3339(t), "2026-11-03T09:00:00.250Z");
        assert_eq!(parse_rfc3339("yesterday"), None);
    }
}

/// Where one line or payload ended up: input accounting
/// (`relstat_events_total{result}`, docs/events.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum InputResult {
    Accepted,
    Duplicate,
    Late,
    Unmapped,
    Invalid,
    Skipped,
}

impl InputResult {
    pub const ALL: [InputResult; 6] = [
        Self::Accepted,
        Self::Duplicate,
        Self::Late,
        Self::Unmapped,
        Self::Invalid,
        Self::Skipped,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::Duplicate => "duplicate",
            Self::Late => "late",
            Self::Unmapped => "unmapped",
            Self::Invalid => "invalid",
            Self::Skipped => "skipped",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }
}
