//! The API's JSON, written by hand in one pass, with its validator.
//!
//! A list of 10,000 keys is about 4 MB of JSON. Serializing it through
//! serde twice (once for the ETag without the time-derived fields, once for
//! the body with them) and cloning every string of every key first cost
//! more than the 50 ms budget on a loaded 2-core machine. Here each row is
//! written once, from borrowed strings, into one buffer; the byte ranges of
//! the values that change with the clock alone (`generated_at`,
//! `time_in_status_seconds`) are noted as they are written, and the ETag is
//! the xxh3-128 of everything else. So two polls of an unchanged view get the
//! same tag whatever the clock says, and a 304 costs one pass, not two.
//!
//! The output is the JSON serde would write for the same [`Row`]s (same
//! field order, escaping and number format); a test holds the two together.
//!
//! [`Row`]: super::view::Row

use std::ops::Range;

use super::Redact;
use super::view::{Axis, HistoryRow, RowRef};
use crate::detect::FinishReason;
#[cfg(test)]
use crate::event::format_rfc3339;
use crate::event::{ActorType, TimeMs, write_rfc3339};

/// A rendered answer: the body and its weak ETag.
#[derive(Debug)]
pub struct Rendered {
    pub body: Vec<u8>,
    pub tag: String,
}

/// The top of every answer.
pub struct Head<'a> {
    /// The agent's clock when the answer was made.
    pub now: TimeMs,
    pub at: Option<TimeMs>,
    pub axis: Axis,
    pub release: Option<&'a str>,
}

/// What follows the head.
pub enum Items<'a> {
    /// `releases` (the list) or `keys` (one release), with time in status
    /// counted to `at` or `now`.
    Rows(&'static str, Vec<RowRef<'a>>),
    Events(&'a [HistoryRow]),
}

/// Writes `{"generated_at":..,"at":..,"axis":..,"release":..,"count":N,
/// "<items>":[...]}` and a newline, leaving out what `redact` names.
pub fn answer(head: &Head, items: &Items, redact: Redact) -> Rendered {
    let rows_len = match items {
        Items::Rows(_, rows) => rows.len(),
        Items::Events(e) => e.len(),
    };
    let mut w = Writer {
        buf: Vec::with_capacity(256 + rows_len * 400),
        volatile: Vec::with_capacity(rows_len + 1),
    };
    w.raw(b"{\"generated_at\":");
    w.volatile(|w| w.time(head.now));
    if let Some(at) = head.at {
        w.raw(b",\"at\":");
        w.time(at);
        w.raw(b",\"axis\":");
        w.str(match head.axis {
            Axis::Recorded => "recorded",
            Axis::Event => "event",
        });
    }
    if let Some(r) = head.release {
        w.raw(b",\"release\":");
        w.str(r);
    }
    w.raw(b",\"count\":");
    w.int(rows_len as i64);
    match items {
        Items::Rows(name, rows) => {
            w.raw(b",\"");
            w.raw(name.as_bytes());
            w.raw(b"\":[");
            let reference = head.at.unwrap_or(head.now);
            for (i, r) in rows.iter().enumerate() {
                if i > 0 {
                    w.raw(b",");
                }
                w.row(r, reference, redact);
            }
            w.raw(b"]");
        }
        Items::Events(events) => {
            w.raw(b",\"events\":[");
            for (i, e) in events.iter().enumerate() {
                if i > 0 {
                    w.raw(b",");
                }
                let mut e = e.clone();
                redact.history(&mut e);
                // Rare and small next to the list: serde's output as it is.
                let _ = serde_json::to_writer(&mut w.buf, &e);
            }
            w.raw(b"]");
        }
    }
    w.raw(b"}\n");
    let tag = w.tag();
    Rendered { body: w.buf, tag }
}

struct Writer {
    buf: Vec<u8>,
    /// Byte ranges left out of the ETag.
    volatile: Vec<Range<usize>>,
}

impl Writer {
    fn raw(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(b);
    }

    fn volatile(&mut self, f: impl FnOnce(&mut Self)) {
        let start = self.buf.len();
        f(self);
        self.volatile.push(start..self.buf.len());
    }

    fn int(&mut self, v: i64) {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        let mut u = v.unsigned_abs();
        loop {
            i -= 1;
            digits[i] = b'0' + (u % 10) as u8;
            u /= 10;
            if u == 0 {
                break;
            }
        }
        if v < 0 {
            self.buf.push(b'-');
        }
        self.raw(&digits[i..]);
    }

    /// Milliseconds as seconds, the shortest decimal (what serde_json
    /// writes for `ms as f64 / 1000.0`: `1800.0`, `1800.5`, `0.025`).
    fn seconds(&mut self, ms: TimeMs) {
        let ms = ms.max(0);
        self.int(ms / 1000);
        let frac = (ms % 1000) as u32;
        self.raw(b".");
        if frac == 0 {
            self.raw(b"0");
        } else {
            let digits = [
                b'0' + (frac / 100) as u8,
                b'0' + (frac / 10 % 10) as u8,
                b'0' + (frac % 10) as u8,
            ];
            let len = if frac.is_multiple_of(100) {
                1
            } else if frac.is_multiple_of(10) {
                2
            } else {
                3
            };
            self.raw(&digits[..len]);
        }
    }

    fn time(&mut self, t: TimeMs) {
        self.buf.push(b'"');
        write_rfc3339(&mut self.buf, t);
        self.buf.push(b'"');
    }

    /// A JSON string, escaped as serde_json does: `"` `\` and control
    /// characters; everything else (`/`, non-ASCII) as it is.
    fn str(&mut self, s: &str) {
        self.buf.push(b'"');
        let b = s.as_bytes();
        if !b.iter().any(|&c| c < 0x20 || c == b'"' || c == b'\\') {
            self.buf.extend_from_slice(b);
            self.buf.push(b'"');
            return;
        }
        let mut start = 0;
        for (i, &c) in b.iter().enumerate() {
            let esc: &[u8] = match c {
                b'"' => b"\\\"",
                b'\\' => b"\\\\",
                b'\n' => b"\\n",
                b'\r' => b"\\r",
                b'\t' => b"\\t",
                0x08 => b"\\b",
                0x0c => b"\\f",
                0..=0x1f => {
                    self.buf.extend_from_slice(&b[start..i]);
                    const HEX: &[u8; 16] = b"0123456789abcdef";
                    self.buf.extend_from_slice(b"\\u00");
                    self.buf.push(HEX[(c >> 4) as usize]);
                    self.buf.push(HEX[(c & 0xf) as usize]);
                    start = i + 1;
                    continue;
                }
                _ => continue,
            };
            self.buf.extend_from_slice(&b[start..i]);
            self.buf.extend_from_slice(esc);
            start = i + 1;
        }
        self.buf.extend_from_slice(&b[start..]);
        self.buf.push(b'"');
    }

    fn opt_str(&mut self, name: &[u8], v: Option<&str>) {
        if let Some(v) = v {
            self.raw(name);
            self.str(v);
        }
    }

    fn row(&mut self, r: &RowRef, reference: TimeMs, redact: Redact) {
        self.raw(b"{\"release\":");
        self.str(r.release);
        self.raw(b",\"service\":");
        self.str(r.service);
        self.raw(b",\"environment\":");
        self.str(r.environment);
        self.raw(b",\"site\":");
        self.str(r.site);
        self.raw(b",\"status\":");
        self.str(r.status);
        self.raw(b",\"entered_at\":");
        self.time(r.entered_at);
        self.raw(b",\"time_in_status_seconds\":");
        self.volatile(|w| w.seconds(reference - r.entered_at));
        self.raw(b",\"last_event_time\":");
        self.time(r.last_event_time);
        if !redact.event_id {
            self.opt_str(b",\"last_event_id\":", r.last_event_id);
        }
        if !redact.actor {
            self.opt_str(b",\"last_actor\":", r.last_actor);
            self.opt_str(
                b",\"last_actor_type\":",
                r.last_actor_type.map(|t| match t {
                    ActorType::Human => "human",
                    ActorType::Automation => "automation",
                }),
            );
        }
        if !redact.source {
            self.opt_str(b",\"last_source\":", r.last_source);
        }
        if !redact.reason {
            self.opt_str(b",\"last_reason\":", r.last_reason);
        }
        if !redact.version {
            self.opt_str(b",\"version\":", r.version);
        }
        self.raw(if r.stuck {
            b",\"stuck\":true"
        } else {
            b",\"stuck\":false"
        });
        self.raw(if r.finished_reason.is_some() {
            b",\"finished\":true"
        } else {
            b",\"finished\":false"
        });
        self.opt_str(
            b",\"finished_reason\":",
            r.finished_reason.map(|f| match f {
                FinishReason::Terminal => "terminal",
                FinishReason::Superseded => "superseded",
                FinishReason::Stale => "stale",
            }),
        );
        self.raw(b"}");
    }

    /// `W/"<xxh3-128 hex>"` of the body without its volatile ranges.
    fn tag(&self) -> String {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        let mut from = 0;
        for r in &self.volatile {
            h.update(&self.buf[from..r.start]);
            from = r.end;
        }
        h.update(&self.buf[from..]);
        format!("W/\"{:032x}\"", h.digest128())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::view::Row;

    fn row(i: usize) -> Row {
        let t = 1_790_000_000_000 + i as i64 * 1_234;
        RowRef {
            release: "2026.11.3",
            service: if i.is_multiple_of(2) {
                "api"
            } else {
                "we\"ird\\ \u{1}\n/é"
            },
            environment: "production",
            site: "",
            status: "in_progress",
            entered_at: t,
            last_event_time: t + 5,
            last_event_id: Some("e1"),
            last_actor: (!i.is_multiple_of(3)).then_some("sam"),
            last_actor_type: Some(if i.is_multiple_of(2) {
                ActorType::Human
            } else {
                ActorType::Automation
            }),
            last_source: Some("jenkins"),
            last_reason: i.is_multiple_of(4).then_some("CHG-1\t\u{7f}"),
            version: Some("1.2"),
            stuck: i.is_multiple_of(5),
            finished_reason: [
                None,
                Some(FinishReason::Terminal),
                Some(FinishReason::Superseded),
                Some(FinishReason::Stale),
            ][i % 4],
        }
        .to_row()
    }

    /// The hand-written rows are what serde writes for the same `Row`s,
    /// redacted or not, with the same time in status.
    #[test]
    fn rows_are_what_serde_writes() {
        let rows: Vec<Row> = (0..40).map(row).collect();
        let now = 1_790_000_100_000;
        for names in [
            vec![],
            vec!["actor", "reason", "source", "version", "event_id"],
        ] {
            let names: Vec<String> = names.into_iter().map(String::from).collect();
            let redact = Redact::of(&names);
            let head = Head {
                now,
                at: None,
                axis: Axis::Recorded,
                release: Some("2026.11.3"),
            };
            let refs = rows.iter().map(RowRef::of_row).collect();
            let got = answer(&head, &Items::Rows("keys", refs), redact);
            let want: Vec<Row> = rows
                .iter()
                .cloned()
                .map(|mut r| {
                    redact.row(&mut r);
                    r.time_in_status_seconds = Some((now - r.entered_at_ms) as f64 / 1000.0);
                    r
                })
                .collect();
            let want = format!(
                "{{\"generated_at\":\"{}\",\"release\":\"2026.11.3\",\"count\":40,\"keys\":{}}}\n",
                format_rfc3339(now),
                serde_json::to_string(&want).unwrap()
            );
            assert_eq!(String::from_utf8(got.body).unwrap(), want);
        }
    }

    #[test]
    fn seconds_are_the_shortest_decimal() {
        for ms in [0, 5, 25, 100, 120, 999, 1000, 1500, 1_800_250, 86_400_001] {
            let mut w = Writer {
                buf: Vec::new(),
                volatile: Vec::new(),
            };
            w.seconds(ms);
            let want = serde_json::to_string(&(ms as f64 / 1000.0)).unwrap();
            assert_eq!(String::from_utf8(w.buf).unwrap(), want, "{ms}");
        }
    }

    #[test]
    fn the_tag_ignores_the_clock_but_not_the_content() {
        let rows: Vec<Row> = (0..3).map(row).collect();
        let render = |now: TimeMs, rows: &[Row]| {
            let head = Head {
                now,
                at: None,
                axis: Axis::Recorded,
                release: None,
            };
            let refs = rows.iter().map(RowRef::of_row).collect();
            answer(&head, &Items::Rows("releases", refs), Redact::default())
        };
        let a = render(1_790_000_100_000, &rows);
        let b = render(1_790_000_200_000, &rows);
        assert_ne!(a.body, b.body);
        assert_eq!(a.tag, b.tag);
        let mut changed = rows.clone();
        changed[1].status = "deployed".into();
        assert_ne!(render(1_790_000_100_000, &changed).tag, a.tag);
        let mut stuck = rows.clone();
        stuck[1].stuck = !stuck[1].stuck;
        assert_ne!(render(1_790_000_100_000, &stuck).tag, a.tag);
    }
}
