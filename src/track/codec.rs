//! The binary form the store keeps key states and history rows in (store
//! schema 8): a format byte, then the fields in declaration order, with
//! no field names. JSON (their serde form) cost a quarter of the store's
//! share of `run --once` and twice the bytes; it stays the form of the API,
//! the exports and every other table.
//!
//! # Layout (format 1)
//!
//! - integers: unsigned LEB128 varints; times (`i64`) zigzag-encoded first;
//! - strings: a varint byte length, then UTF-8 bytes;
//! - `Option<T>`: a byte 0 (none) or 1, then `T`; `bool`: a byte 0 or 1;
//! - lists and maps: a varint count, then the items (a map's in key order);
//! - enums: one byte, their variant's index.
//!
//! A row starting with `{` is in the JSON form of schemas 1 to 7 and
//! decodes as before (the schema 7 -> 8 migration re-encodes every row, but
//! a row put back by hand from the quarantine still reads). Decoding checks
//! every length against the bytes left before allocating and refuses
//! trailing bytes, unknown tags and invalid UTF-8: garbage is an error,
//! never a panic (the store quarantines the row).

use crate::detect::{Attempt, Decision, FinishReason, IntoTimes, KeyMemory, LastReport};
use crate::event::{ActorType, ChangeClass, Event, Key, TimeMs};
use crate::sym::Sym;
use crate::track::{Finished, HistoryRecord, KeyState};

/// The format byte of this layout. A JSON row starts with `{` (0x7b).
pub const FORMAT: u8 = 1;

/// Why a stored row does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("empty row")]
    Empty,
    #[error("unknown row format {0:#04x}")]
    Format(u8),
    #[error("row ends inside {0}")]
    Truncated(&'static str),
    #[error("invalid {0}")]
    Invalid(&'static str),
    #[error("{0} bytes after the row's end")]
    Trailing(usize),
    #[error("JSON row: {0}")]
    Json(String),
}

/// A key state's stored bytes, appended to `out`.
pub fn encode_key_state(s: &KeyState, out: &mut Vec<u8>) {
    out.push(FORMAT);
    put_str(out, &s.status);
    put_time(out, s.entered_at);
    put_time(out, s.max_time);
    put_uint(out, u64::from(s.max_rank));
    put_str(out, s.max_id());
    put_last(out, &s.last);
    match &s.finished {
        None => out.push(0),
        Some(f) => {
            out.push(1);
            put_time(out, f.at);
            out.push(match f.reason {
                FinishReason::Terminal => 0,
                FinishReason::Superseded => 1,
                FinishReason::Stale => 2,
            });
        }
    }
    put_opt_time(out, s.conflict_since);
    put_memory(out, &s.memory);
}

/// A key state from its stored bytes (binary, or the JSON of schema 7).
pub fn decode_key_state(b: &[u8]) -> Result<KeyState, DecodeError> {
    match b.first() {
        None => Err(DecodeError::Empty),
        Some(b'{') => serde_json::from_slice(b).map_err(|e| DecodeError::Json(e.to_string())),
        Some(&FORMAT) => {
            let mut r = Reader { b, at: 1 };
            let status = r.sym("status")?;
            let entered_at = r.time("entered_at")?;
            let max_time = r.time("max_time")?;
            let max_rank =
                u32::try_from(r.uint("max_rank")?).map_err(|_| DecodeError::Invalid("max_rank"))?;
            let max_id = r.string("max_id")?;
            let last = r.last()?;
            // Kept only when it is not `last.event_id` (KeyState::set_max_id).
            let max_id = (max_id != last.event_id).then(|| max_id.into_boxed_str());
            let s = KeyState {
                status,
                entered_at,
                max_time,
                max_rank,
                max_id,
                last,
                finished: if r.flag("finished")? {
                    Some(Finished {
                        at: r.time("finished")?,
                        reason: match r.byte("finish reason")? {
                            0 => FinishReason::Terminal,
                            1 => FinishReason::Superseded,
                            2 => FinishReason::Stale,
                            _ => return Err(DecodeError::Invalid("finish reason")),
                        },
                    })
                } else {
                    None
                },
                conflict_since: r.opt_time("conflict_since")?,
                memory: r.memory()?,
            };
            r.end()?;
            Ok(s)
        }
        Some(&f) => Err(DecodeError::Format(f)),
    }
}

/// A history row's stored bytes, appended to `out`.
pub fn encode_history(h: &HistoryRecord, out: &mut Vec<u8>) {
    out.push(FORMAT);
    let e = &h.event;
    put_str(out, &e.id);
    put_time(out, e.time);
    for s in [
        &e.release,
        &e.service,
        &e.environment,
        &e.site,
        &e.status,
        &e.actor,
    ] {
        put_str(out, s);
    }
    put_actor_type(out, e.actor_type);
    put_str(out, &e.source);
    for s in [&e.reason, &e.version, &e.commit, &e.artifact] {
        put_opt_str(out, s.as_deref());
    }
    put_opt_time(out, e.commit_time);
    out.push(match e.change_class {
        None => 0,
        Some(ChangeClass::Standard) => 1,
        Some(ChangeClass::Normal) => 2,
        Some(ChangeClass::Emergency) => 3,
    });
    put_time(out, h.recorded_at);
    put_time(out, h.order_time);
    put_opt_str(out, h.from.as_deref());
    out.push(u8::from(h.late));
    put_uint(out, h.anomalies.len() as u64);
    for a in &h.anomalies {
        put_str(out, a);
    }
    out.push(match h.decision {
        None => 0,
        Some(Decision::Approved) => 1,
        Some(Decision::Rejected) => 2,
        Some(Decision::Revoked) => 3,
    });
}

/// A history row from its stored bytes (binary, or the JSON of schema 7).
pub fn decode_history(b: &[u8]) -> Result<HistoryRecord, DecodeError> {
    match b.first() {
        None => Err(DecodeError::Empty),
        Some(b'{') => serde_json::from_slice(b).map_err(|e| DecodeError::Json(e.to_string())),
        Some(&FORMAT) => {
            let mut r = Reader { b, at: 1 };
            let event = Event {
                id: r.string("id")?,
                time: r.time("time")?,
                release: r.string("release")?,
                service: r.string("service")?,
                environment: r.string("environment")?,
                site: r.string("site")?,
                status: r.string("status")?,
                actor: r.string("actor")?,
                actor_type: r.actor_type()?,
                source: r.string("source")?,
                reason: r.opt_string("reason")?,
                version: r.opt_string("version")?,
                commit: r.opt_string("commit")?,
                artifact: r.opt_string("artifact")?,
                commit_time: r.opt_time("commit_time")?,
                change_class: match r.byte("change_class")? {
                    0 => None,
                    1 => Some(ChangeClass::Standard),
                    2 => Some(ChangeClass::Normal),
                    3 => Some(ChangeClass::Emergency),
                    _ => return Err(DecodeError::Invalid("change_class")),
                },
            };
            let h = HistoryRecord {
                event,
                recorded_at: r.time("recorded_at")?,
                order_time: r.time("order_time")?,
                from: r.opt_string("from")?,
                late: r.flag("late")?,
                anomalies: {
                    let n = r.count("anomalies")?;
                    let mut v = Vec::with_capacity(n);
                    for _ in 0..n {
                        v.push(r.string("anomalies")?);
                    }
                    v
                },
                decision: match r.byte("decision")? {
                    0 => None,
                    1 => Some(Decision::Approved),
                    2 => Some(Decision::Rejected),
                    3 => Some(Decision::Revoked),
                    _ => return Err(DecodeError::Invalid("decision")),
                },
            };
            r.end()?;
            Ok(h)
        }
        Some(&f) => Err(DecodeError::Format(f)),
    }
}

/// Key states as the store writes them: each key's bytes
/// ([`Key::encode`]) and its state's ([`encode_key_state`]), in one buffer.
/// The tracker encodes its dirty keys straight from its table when it hands
/// a batch over: no copy of a state (a dozen strings and the rules' memory)
/// to make, carry and drop per dirty key.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct KeyRows {
    buf: Vec<u8>,
    /// (start of the key, start of the state) in `buf`; each row ends where
    /// the next starts.
    rows: Vec<(usize, usize)>,
}

impl KeyRows {
    pub fn push(&mut self, key: &Key, state: &KeyState) {
        let k = self.buf.len();
        key.encode_into(&mut self.buf);
        let s = self.buf.len();
        encode_key_state(state, &mut self.buf);
        self.rows.push((k, s));
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// (key bytes, state bytes) of each row, in the order pushed.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.rows.iter().enumerate().map(|(i, &(k, s))| {
            let end = self.rows.get(i + 1).map_or(self.buf.len(), |r| r.0);
            (&self.buf[k..s], &self.buf[s..end])
        })
    }

    /// The keys, decoded.
    pub fn keys(&self) -> Vec<Key> {
        self.iter().filter_map(|(k, _)| Key::decode(k)).collect()
    }
}

impl FromIterator<(Key, KeyState)> for KeyRows {
    fn from_iter<I: IntoIterator<Item = (Key, KeyState)>>(iter: I) -> Self {
        let mut rows = KeyRows::default();
        for (k, s) in iter {
            rows.push(&k, &s);
        }
        rows
    }
}

fn put_uint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_time(out: &mut Vec<u8>, v: TimeMs) {
    put_uint(out, ((v << 1) ^ (v >> 63)) as u64);
}

fn put_opt_time(out: &mut Vec<u8>, v: Option<TimeMs>) {
    match v {
        None => out.push(0),
        Some(t) => {
            out.push(1);
            put_time(out, t);
        }
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_uint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

fn put_opt_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        None => out.push(0),
        Some(s) => {
            out.push(1);
            put_str(out, s);
        }
    }
}

fn put_strs(out: &mut Vec<u8>, v: &[impl AsRef<str>]) {
    put_uint(out, v.len() as u64);
    for s in v {
        put_str(out, s.as_ref());
    }
}

fn put_actor_type(out: &mut Vec<u8>, a: ActorType) {
    out.push(match a {
        ActorType::Human => 0,
        ActorType::Automation => 1,
    });
}

fn put_last(out: &mut Vec<u8>, l: &LastReport) {
    put_str(out, &l.event_id);
    put_time(out, l.time);
    put_str(out, &l.actor);
    put_actor_type(out, l.actor_type);
    put_str(out, &l.source);
    put_opt_str(out, l.reason.as_deref());
    put_opt_str(out, l.version.as_deref());
    put_opt_str(out, l.commit.as_deref());
}

fn put_memory(out: &mut Vec<u8>, m: &KeyMemory) {
    put_opt_time(out, m.stuck_fired);
    put_strs(out, &m.passed);
    match m.prev_report {
        None => out.push(0),
        Some((t, a)) => {
            out.push(1);
            put_time(out, t);
            put_actor_type(out, a);
        }
    }
    put_uint(out, m.into.len() as u64);
    for (status, times) in m.into.iter() {
        put_str(out, status);
        put_uint(out, times.len() as u64);
        for t in times {
            put_time(out, *t);
        }
    }
    put_strs(out, &m.flapping);
    out.push(u8::from(m.freeze_fired));
    out.push(u8::from(m.stage_judged));
    put_uint(out, m.attempts.len() as u64);
    for a in &m.attempts {
        put_opt_time(out, a.deployed_at);
        put_time(out, a.last_gated);
        out.push(u8::from(a.ended));
        out.push(u8::from(a.judged));
        put_opt_str(out, a.emergency.as_deref());
        put_last(out, &a.evidence);
        put_opt_str(out, a.from.as_deref());
        put_str(out, &a.to);
        put_uint(out, a.deployers.len() as u64);
        for (source, actor) in &a.deployers {
            put_str(out, source);
            put_str(out, actor);
        }
    }
}

/// A cursor over a row's bytes; every read is bounds-checked.
struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn byte(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        let v = *self.b.get(self.at).ok_or(DecodeError::Truncated(what))?;
        self.at += 1;
        Ok(v)
    }

    fn flag(&mut self, what: &'static str) -> Result<bool, DecodeError> {
        match self.byte(what)? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(DecodeError::Invalid(what)),
        }
    }

    fn uint(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte(what)?;
            let bits = u64::from(b & 0x7f);
            if shift == 63 && bits > 1 {
                return Err(DecodeError::Invalid(what));
            }
            v |= bits << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(DecodeError::Invalid(what))
    }

    fn time(&mut self, what: &'static str) -> Result<TimeMs, DecodeError> {
        let z = self.uint(what)?;
        Ok(((z >> 1) as i64) ^ -((z & 1) as i64))
    }

    fn opt_time(&mut self, what: &'static str) -> Result<Option<TimeMs>, DecodeError> {
        Ok(if self.flag(what)? {
            Some(self.time(what)?)
        } else {
            None
        })
    }

    /// A count of items that each take at least one byte: never more than
    /// the bytes left, so a hostile count allocates nothing.
    fn count(&mut self, what: &'static str) -> Result<usize, DecodeError> {
        let n = self.uint(what)?;
        if n > (self.b.len() - self.at) as u64 {
            return Err(DecodeError::Truncated(what));
        }
        Ok(n as usize)
    }

    fn str(&mut self, what: &'static str) -> Result<&str, DecodeError> {
        let n = self.count(what)?;
        let bytes = &self.b[self.at..self.at + n];
        self.at += n;
        std::str::from_utf8(bytes).map_err(|_| DecodeError::Invalid(what))
    }

    fn string(&mut self, what: &'static str) -> Result<String, DecodeError> {
        self.str(what).map(str::to_string)
    }

    fn opt_string(&mut self, what: &'static str) -> Result<Option<String>, DecodeError> {
        Ok(if self.flag(what)? {
            Some(self.string(what)?)
        } else {
            None
        })
    }

    fn sym(&mut self, what: &'static str) -> Result<Sym, DecodeError> {
        self.str(what).map(Sym::new)
    }

    fn syms(&mut self, what: &'static str) -> Result<Vec<Sym>, DecodeError> {
        let n = self.count(what)?;
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            v.push(self.sym(what)?);
        }
        Ok(v)
    }

    fn actor_type(&mut self) -> Result<ActorType, DecodeError> {
        match self.byte("actor_type")? {
            0 => Ok(ActorType::Human),
            1 => Ok(ActorType::Automation),
            _ => Err(DecodeError::Invalid("actor_type")),
        }
    }

    fn last(&mut self) -> Result<LastReport, DecodeError> {
        Ok(LastReport {
            event_id: self.string("event_id")?,
            time: self.time("time")?,
            actor: self.sym("actor")?,
            actor_type: self.actor_type()?,
            source: self.sym("source")?,
            reason: self.opt_string("reason")?,
            version: self.opt_string("version")?,
            commit: self.opt_string("commit")?,
        })
    }

    fn memory(&mut self) -> Result<KeyMemory, DecodeError> {
        let stuck_fired = self.opt_time("stuck_fired")?;
        let passed = self.syms("passed")?;
        let prev_report = if self.flag("prev_report")? {
            Some((self.time("prev_report")?, self.actor_type()?))
        } else {
            None
        };
        let mut into = IntoTimes::default();
        for _ in 0..self.count("into")? {
            let status = self.sym("into")?;
            let n = self.count("into")?;
            let mut times = Vec::with_capacity(n);
            for _ in 0..n {
                times.push(self.time("into")?);
            }
            into.insert(status, times);
        }
        let flapping = self.syms("flapping")?;
        let freeze_fired = self.flag("freeze_fired")?;
        let stage_judged = self.flag("stage_judged")?;
        let n = self.count("attempts")?;
        let mut attempts = Vec::with_capacity(n);
        for _ in 0..n {
            let deployed_at = self.opt_time("deployed_at")?;
            let last_gated = self.time("last_gated")?;
            let ended = self.flag("ended")?;
            let judged = self.flag("judged")?;
            let emergency = self.opt_string("emergency")?;
            let evidence = self.last()?;
            let from = self.opt_string("from")?;
            let to = self.string("to")?;
            let k = self.count("deployers")?;
            let mut deployers = Vec::with_capacity(k);
            for _ in 0..k {
                deployers.push((self.string("deployers")?, self.string("deployers")?));
            }
            attempts.push(Attempt {
                deployed_at,
                last_gated,
                ended,
                judged,
                emergency,
                evidence,
                from,
                to,
                deployers,
            });
        }
        Ok(KeyMemory {
            stuck_fired,
            passed,
            prev_report,
            into,
            flapping,
            freeze_fired,
            stage_judged,
            attempts,
        })
    }

    fn end(&self) -> Result<(), DecodeError> {
        match self.b.len() - self.at {
            0 => Ok(()),
            n => Err(DecodeError::Trailing(n)),
        }
    }
}

/// Also the strategies of the history rows' other tests (the audit
/// chain's canonical form).
#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Strings with what encoders have to get right: quotes, backslashes,
    /// braces, control characters, U+2028/9, non-ASCII, and anything at all.
    pub(crate) fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-z0-9._/-]{0,12}",
            "[\"\\\\{}\u{0}-\u{1f}\u{7f}\u{80}\u{2028}\u{2029}\u{fffd}é€中😀 a]{0,10}",
            any::<String>(),
        ]
    }

    fn opt_str() -> impl Strategy<Value = Option<String>> {
        proptest::option::of(text())
    }

    fn time() -> impl Strategy<Value = TimeMs> {
        prop_oneof![any::<i64>(), 1_600_000_000_000i64..1_900_000_000_000]
    }

    fn actor_type() -> impl Strategy<Value = ActorType> {
        prop_oneof![Just(ActorType::Human), Just(ActorType::Automation)]
    }

    fn last() -> impl Strategy<Value = LastReport> {
        (
            ".{0,8}",
            time(),
            ".{0,8}",
            actor_type(),
            ".{0,8}",
            opt_str(),
            opt_str(),
            opt_str(),
        )
            .prop_map(
                |(event_id, time, actor, actor_type, source, reason, version, commit)| LastReport {
                    event_id,
                    time,
                    actor: actor.into(),
                    actor_type,
                    source: source.into(),
                    reason,
                    version,
                    commit,
                },
            )
    }

    fn attempt() -> impl Strategy<Value = Attempt> {
        (
            proptest::option::of(time()),
            time(),
            any::<bool>(),
            any::<bool>(),
            opt_str(),
            last(),
            opt_str(),
            "[a-z_]{0,10}",
            proptest::collection::vec((".{0,6}", ".{0,6}"), 0..3),
        )
            .prop_map(
                |(
                    deployed_at,
                    last_gated,
                    ended,
                    judged,
                    emergency,
                    evidence,
                    from,
                    to,
                    deployers,
                )| {
                    Attempt {
                        deployed_at,
                        last_gated,
                        ended,
                        judged,
                        emergency,
                        evidence,
                        from,
                        to,
                        deployers,
                    }
                },
            )
    }

    fn memory() -> impl Strategy<Value = KeyMemory> {
        (
            proptest::option::of(time()),
            proptest::collection::vec("[a-z_]{0,10}", 0..4),
            proptest::option::of((time(), actor_type())),
            proptest::collection::btree_map(
                "[a-z_]{0,10}",
                proptest::collection::vec(time(), 0..4),
                0..3,
            ),
            proptest::collection::vec("[a-z_]{0,10}", 0..3),
            any::<bool>(),
            any::<bool>(),
            proptest::collection::vec(attempt(), 0..3),
        )
            .prop_map(
                |(
                    stuck_fired,
                    passed,
                    prev_report,
                    into,
                    flapping,
                    freeze_fired,
                    stage_judged,
                    attempts,
                )| {
                    KeyMemory {
                        stuck_fired,
                        passed: passed.into_iter().map(Sym::from).collect(),
                        prev_report,
                        into: into.into_iter().map(|(k, v)| (Sym::from(k), v)).collect(),
                        flapping: flapping.into_iter().map(Sym::from).collect(),
                        freeze_fired,
                        stage_judged,
                        attempts,
                    }
                },
            )
    }

    fn key_state() -> impl Strategy<Value = KeyState> {
        (
            "[a-z_]{0,10}",
            time(),
            time(),
            any::<u32>(),
            // The id of the greatest: most often the last report's (then
            // kept only there), sometimes another (a state of an older store).
            proptest::option::of(".{0,10}"),
            last(),
            proptest::option::of((
                time(),
                prop_oneof![
                    Just(FinishReason::Terminal),
                    Just(FinishReason::Superseded),
                    Just(FinishReason::Stale)
                ],
            )),
            proptest::option::of(time()),
            memory(),
        )
            .prop_map(
                |(
                    status,
                    entered_at,
                    max_time,
                    max_rank,
                    max_id,
                    last,
                    finished,
                    conflict_since,
                    memory,
                )| {
                    let mut s = KeyState {
                        status: status.into(),
                        entered_at,
                        max_time,
                        max_rank,
                        max_id: None,
                        last,
                        finished: finished.map(|(at, reason)| Finished { at, reason }),
                        conflict_since,
                        memory,
                    };
                    if let Some(id) = max_id {
                        s.set_max_id(&id);
                    }
                    s
                },
            )
    }

    pub(crate) fn event() -> impl Strategy<Value = Event> {
        (
            (text(), time(), text(), text(), text(), text(), text()),
            (
                text(),
                actor_type(),
                text(),
                opt_str(),
                opt_str(),
                opt_str(),
                opt_str(),
            ),
            proptest::option::of(time()),
            proptest::option::of(prop_oneof![
                Just(ChangeClass::Standard),
                Just(ChangeClass::Normal),
                Just(ChangeClass::Emergency)
            ]),
        )
            .prop_map(
                |(
                    (id, time, release, service, environment, site, status),
                    (actor, actor_type, source, reason, version, commit, artifact),
                    commit_time,
                    change_class,
                )| Event {
                    id,
                    time,
                    release,
                    service,
                    environment,
                    site,
                    status,
                    actor,
                    actor_type,
                    source,
                    reason,
                    version,
                    commit,
                    artifact,
                    commit_time,
                    change_class,
                },
            )
    }

    pub(crate) fn history() -> impl Strategy<Value = HistoryRecord> {
        (
            event(),
            time(),
            time(),
            opt_str(),
            any::<bool>(),
            proptest::collection::vec(text(), 0..3),
            proptest::option::of(prop_oneof![
                Just(Decision::Approved),
                Just(Decision::Rejected),
                Just(Decision::Revoked)
            ]),
        )
            .prop_map(
                |(event, recorded_at, order_time, from, late, anomalies, decision)| HistoryRecord {
                    event,
                    recorded_at,
                    order_time,
                    from,
                    late,
                    anomalies,
                    decision,
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

        #[test]
        fn key_states_round_trip_and_read_their_json(s in key_state()) {
            let mut b = Vec::new();
            encode_key_state(&s, &mut b);
            prop_assert_eq!(b[0], FORMAT);
            prop_assert_eq!(&decode_key_state(&b).unwrap(), &s);
            // the schema 7 form still reads
            let json = serde_json::to_vec(&s).unwrap();
            prop_assert_eq!(&decode_key_state(&json).unwrap(), &s);
            // every cut of the row is an error, not a panic
            for n in 0..b.len() {
                prop_assert!(decode_key_state(&b[..n]).is_err());
            }
            b.push(0);
            prop_assert_eq!(decode_key_state(&b), Err(DecodeError::Trailing(1)));
        }

        #[test]
        fn history_rows_round_trip_and_read_their_json(h in history()) {
            let mut b = Vec::new();
            encode_history(&h, &mut b);
            prop_assert_eq!(&decode_history(&b).unwrap(), &h);
            let json = serde_json::to_vec(&h).unwrap();
            prop_assert_eq!(&decode_history(&json).unwrap(), &h);
            for n in 0..b.len() {
                prop_assert!(decode_history(&b[..n]).is_err());
            }
            b.push(7);
            prop_assert!(decode_history(&b).is_err());
        }

        #[test]
        fn garbage_is_an_error_not_a_panic(mut g in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode_key_state(&g);
            let _ = decode_history(&g);
            if let Some(first) = g.first_mut() {
                *first = FORMAT;
            }
            let _ = decode_key_state(&g);
            let _ = decode_history(&g);
        }

        #[test]
        fn a_flipped_byte_never_panics(s in key_state(), h in history(), at in any::<prop::sample::Index>(), x in 1u8..) {
            let mut b = Vec::new();
            encode_key_state(&s, &mut b);
            let i = at.index(b.len());
            b[i] ^= x;
            let _ = decode_key_state(&b);
            let mut b = Vec::new();
            encode_history(&h, &mut b);
            let i = at.index(b.len());
            b[i] ^= x;
            let _ = decode_history(&b);
        }
    }

    /// The compact key state (interned strings, `max_id` kept only when it
    /// is not the last report's) writes the bytes schema 8 wrote: spelled
    /// out here from the layout, field by field, for both cases of `max_id`.
    #[test]
    fn a_compact_state_writes_the_schema_8_bytes() {
        let mut ev = history_fixture().event;
        ev.id = "e1".into();
        ev.time = 5;
        ev.actor = "ci".into();
        ev.actor_type = ActorType::Human;
        ev.source = "argo".into();
        (ev.reason, ev.version, ev.commit) = (None, None, None);
        let mut s = KeyState::first(&ev, "deployed", 3, 5);
        s.memory.passed.push("deployed".into());
        s.memory.into.insert("deployed".into(), vec![5]);
        let mut b = Vec::new();
        encode_key_state(&s, &mut b);
        let mut want = vec![FORMAT];
        want.extend(b"\x08deployed");
        want.extend([10, 10, 3]); // entered_at 5, max_time 5 (zigzag), max_rank 3
        want.extend(b"\x02e1"); // max_id: the last report's
        want.extend(b"\x02e1\x0a\x02ci\x00\x04argo\x00\x00\x00"); // last
        want.extend([0, 0]); // finished, conflict_since
        want.extend([0, 1]); // stuck_fired; passed: one
        want.extend(b"\x08deployed");
        want.push(0); // prev_report
        want.extend(b"\x01\x08deployed\x01\x0a"); // into
        want.extend([0, 0, 0, 0]); // flapping, freeze_fired, stage_judged, attempts
        assert_eq!(b, want);
        let back = decode_key_state(&b).unwrap();
        assert_eq!(back, s);
        assert_eq!(back.max_id, None);
        assert!(Sym::ptr_eq(&back.status, &Sym::new("deployed")));
        assert!(Sym::ptr_eq(&back.memory.passed[0], &back.status));

        // A greatest id that is not the last report's is kept and written.
        s.set_max_id("e0");
        assert_eq!(s.max_id(), "e0");
        let mut b2 = Vec::new();
        encode_key_state(&s, &mut b2);
        let at = 1 + 9 + 3;
        assert_eq!(&b2[at..at + 3], b"\x02e0");
        assert_eq!(b2[..at], b[..at]);
        assert_eq!(b2[at + 3..], b[at + 3..]);
        let back = decode_key_state(&b2).unwrap();
        assert_eq!((back.max_id(), back.last.event_id.as_str()), ("e0", "e1"));
        assert_eq!(back, s);
        // and through the JSON form of schemas 1 to 7
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["max_id"], "e0");
        assert_eq!(serde_json::from_value::<KeyState>(json).unwrap(), s);
        s.set_max_id("e1");
        assert_eq!(s.max_id, None);
        assert_eq!(serde_json::to_value(&s).unwrap()["max_id"], "e1");
    }

    #[test]
    fn hostile_lengths_allocate_nothing_and_fail() {
        // a status of 2^62 bytes, a list of 2^62 items
        let mut b = vec![FORMAT];
        put_uint(&mut b, 1 << 62);
        assert_eq!(decode_key_state(&b), Err(DecodeError::Truncated("status")));
        let mut h = Vec::new();
        encode_history(&history_fixture(), &mut h);
        // the anomalies count sits 2 bytes from the end (count 0, decision 0)
        let n = h.len();
        h.truncate(n - 2);
        put_uint(&mut h, u64::MAX);
        h.push(0);
        assert_eq!(decode_history(&h), Err(DecodeError::Truncated("anomalies")));
        // an over-long varint
        let mut b = vec![FORMAT];
        b.extend([0xff; 11]);
        assert_eq!(decode_key_state(&b), Err(DecodeError::Invalid("status")));
        assert_eq!(decode_key_state(&[]), Err(DecodeError::Empty));
        assert_eq!(decode_key_state(&[9]), Err(DecodeError::Format(9)));
        assert!(matches!(
            decode_history(b"{\"x\":1}"),
            Err(DecodeError::Json(_))
        ));
        // invalid UTF-8 in a string
        let mut b = vec![FORMAT];
        put_uint(&mut b, 2);
        b.extend([0xc3, 0x28]);
        assert_eq!(decode_key_state(&b), Err(DecodeError::Invalid("status")));
    }

    fn history_fixture() -> HistoryRecord {
        HistoryRecord {
            event: Event {
                id: "e1".into(),
                time: 1_700_000_000_000,
                release: "2026.12.1".into(),
                service: "payments".into(),
                environment: "production".into(),
                site: String::new(),
                status: "deployed".into(),
                actor: "ci".into(),
                actor_type: ActorType::Automation,
                source: "argo".into(),
                reason: None,
                version: Some("1.2.3".into()),
                commit: None,
                artifact: None,
                commit_time: None,
                change_class: None,
            },
            recorded_at: 1_700_000_000_500,
            order_time: 1_700_000_000_000,
            from: Some("in_progress".into()),
            late: false,
            anomalies: Vec::new(),
            decision: None,
        }
    }

    #[test]
    fn a_history_row_is_less_than_half_its_json() {
        let h = history_fixture();
        let mut b = Vec::new();
        encode_history(&h, &mut b);
        let json = serde_json::to_vec(&h).unwrap();
        assert!(b.len() * 2 < json.len(), "{} vs {}", b.len(), json.len());
    }
}
