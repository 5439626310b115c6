//! Event-time parsing for line sources: a source's `time_format` (`epoch_s`,
//! `epoch_ms` or a strftime pattern), compiled once, with RFC 3339 as default.
//!
//! RFC 3339 times in the shape tools write them (`2026-11-03T09:00:00Z`,
//! with a fraction of up to nine digits or a `±HH:MM` offset) are read by
//! [`rfc3339_common`] without chrono's general parser; anything else goes to
//! chrono, which decides.

use chrono::format::{Item, Parsed, StrftimeItems};
use chrono::{DateTime, NaiveTime};

use crate::event::{TimeMs, parse_rfc3339};

/// How a source writes its times.
#[derive(Debug, Clone)]
pub enum TimeFormat {
    /// RFC 3339 (`2026-11-03T10:00:00.250+01:00`): the default.
    Rfc3339,
    /// Seconds since the epoch, fraction allowed (`1793700000.25`).
    EpochS,
    /// Milliseconds since the epoch (`1793700000250`).
    EpochMs,
    /// A chrono strftime pattern, pre-parsed. Without an offset the time is
    /// UTC; without a time of day it is midnight.
    Strftime {
        pattern: String,
        items: Vec<Item<'static>>,
    },
}

impl TimeFormat {
    /// Compiles a `time_format` value; `None` is RFC 3339. The error says
    /// what is wrong with the pattern.
    pub fn new(spec: Option<&str>) -> Result<TimeFormat, String> {
        let Some(spec) = spec else {
            return Ok(TimeFormat::Rfc3339);
        };
        match spec {
            "epoch_s" => Ok(TimeFormat::EpochS),
            "epoch_ms" => Ok(TimeFormat::EpochMs),
            "rfc3339" | "RFC3339" => Ok(TimeFormat::Rfc3339),
            "" => Err(
                "is empty; use epoch_s, epoch_ms or a strftime pattern, or leave it out \
                       for RFC 3339"
                    .into(),
            ),
            _ if !spec.contains('%') => Err(format!(
                "`{spec}` has no % specifier; use epoch_s, epoch_ms or a strftime pattern such \
                 as \"%d/%b/%Y:%H:%M:%S %z\""
            )),
            _ => match StrftimeItems::new(spec).parse_to_owned() {
                Ok(items) => Ok(TimeFormat::Strftime {
                    pattern: spec.to_string(),
                    items,
                }),
                Err(_) => Err(format!(
                    "`{spec}` is not a valid strftime pattern (see chrono's format::strftime \
                     docs; write %% for a literal %)"
                )),
            },
        }
    }

    /// What this format expects, for error messages.
    pub fn describe(&self) -> String {
        match self {
            TimeFormat::Rfc3339 => "RFC 3339".into(),
            TimeFormat::EpochS => "epoch seconds".into(),
            TimeFormat::EpochMs => "epoch milliseconds".into(),
            TimeFormat::Strftime { pattern, .. } => format!("`{pattern}`"),
        }
    }

    /// Parses `s` in this format; `None` if it does not fit or is out of range.
    pub fn parse(&self, s: &str) -> Option<TimeMs> {
        let ms = match self {
            TimeFormat::Rfc3339 => match rfc3339_common(s) {
                // Years 0..=9999 are well inside chrono's range.
                Some(ms) => return Some(ms),
                None => parse_rfc3339(s)?,
            },
            TimeFormat::EpochS => parse_epoch(s, 1000)?,
            TimeFormat::EpochMs => parse_epoch(s, 1)?,
            TimeFormat::Strftime { items, .. } => parse_strftime(items, s)?,
        };
        // Only times chrono can format: keeps every later step total.
        DateTime::from_timestamp_millis(ms).map(|_| ms)
    }
}

/// An epoch number in units of `scale` milliseconds: digits with an optional
/// sign and fraction (exact to the millisecond), or a JSON number in exponent
/// form. Fractions of a millisecond are truncated.
fn parse_epoch(s: &str, scale: i64) -> Option<TimeMs> {
    let (neg, body) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    let (int, frac) = match body.split_once('.') {
        Some((int, frac)) if digits(frac) => (int, frac),
        Some(_) => ("", ""),
        None => (body, ""),
    };
    if digits(int) {
        let mut ms = int.parse::<i64>().ok()?.checked_mul(scale)?;
        // Only the fraction digits that still count whole milliseconds.
        let mut unit = scale;
        for b in frac.bytes() {
            unit /= 10;
            if unit == 0 {
                break;
            }
            ms = ms.checked_add(i64::from(b - b'0') * unit)?;
        }
        return Some(if neg { -ms } else { ms });
    }
    // `1.7937e9`: valid JSON, rare in logs; f64 is exact enough here.
    let exponent = body.starts_with(|c: char| c.is_ascii_digit()) && body.contains(['e', 'E']);
    if exponent
        && body
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'))
    {
        let v = s.parse::<f64>().ok()? * scale as f64;
        if v.is_finite() && v.abs() < 1e17 {
            return Some(v.trunc() as i64);
        }
    }
    None
}

/// RFC 3339 in its common shape: `YYYY-MM-DD`, `T` (or `t` or a space),
/// `HH:MM:SS` with a second below 60, an optional fraction of 1 to 9 digits
/// (cut to the millisecond, as chrono's `timestamp_millis` does), then `Z`,
/// `z` or `±HH:MM` within ±23:59; `None` for anything else, including a
/// leap second, surrounding whitespace or an impossible date (chrono reads
/// or rejects those). The same milliseconds as chrono where it answers.
pub(crate) fn rfc3339_common(s: &str) -> Option<TimeMs> {
    let b = s.as_bytes();
    if b.len() < 20 {
        return None;
    }
    let d = |i: usize| {
        let c = b[i].wrapping_sub(b'0');
        (c < 10).then_some(i64::from(c))
    };
    let two = |i: usize| Some(d(i)? * 10 + d(i + 1)?);
    let year = two(0)? * 100 + two(2)?;
    let (month, day) = (two(5)?, two(8)?);
    let (hour, min, sec) = (two(11)?, two(14)?, two(17)?);
    if b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
        || !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || min > 59
        || sec > 59
    {
        return None;
    }
    let mut i = 19;
    let mut ms = 0;
    if b[i] == b'.' {
        let start = i + 1;
        i = start;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        let n = i - start;
        if !(1..=9).contains(&n) {
            return None;
        }
        for k in 0..3 {
            ms = ms * 10 + if k < n { d(start + k)? } else { 0 };
        }
    }
    let offset = match (b.get(i)?, b.len() - i) {
        (b'Z' | b'z', 1) => 0,
        (sign @ (b'+' | b'-'), 6) if b[i + 3] == b':' => {
            let (h, m) = (two(i + 1)?, two(i + 4)?);
            if h > 23 || m > 59 {
                return None;
            }
            if *sign == b'-' {
                -(h * 3600 + m * 60)
            } else {
                h * 3600 + m * 60
            }
        }
        _ => return None,
    };
    let secs = days_from_civil(year, month, day) * 86_400 + hour * 3600 + min * 60 + sec - offset;
    Some(secs * 1000 + ms)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's
/// algorithm, the inverse of the one `event::rfc3339_bytes` uses).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn parse_strftime(items: &[Item<'static>], s: &str) -> Option<TimeMs> {
    let mut p = Parsed::new();
    chrono::format::parse(&mut p, s, items.iter()).ok()?;
    if p.offset().is_some() || p.timestamp().is_some() {
        return p.to_datetime().ok().map(|t| t.timestamp_millis());
    }
    let date = p.to_naive_date().ok()?;
    let no_time_of_day = p.hour_div_12().is_none()
        && p.hour_mod_12().is_none()
        && p.minute().is_none()
        && p.second().is_none();
    let time = if no_time_of_day {
        NaiveTime::MIN
    } else {
        p.to_naive_time().ok()?
    };
    Some(date.and_time(time).and_utc().timestamp_millis())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(fmt: Option<&str>, s: &str) -> Option<TimeMs> {
        TimeFormat::new(fmt).unwrap().parse(s)
    }

    /// 2026-11-03T09:00:00Z
    const T: TimeMs = 1_793_696_400_000;

    #[test]
    fn formats() {
        let cases: &[(Option<&str>, &str, Option<TimeMs>)] = &[
            (None, "2026-11-03T10:00:00+01:00", Some(T)),
            (None, "2026-11-03T09:00:00.250Z", Some(T + 250)),
            (None, "2026-11-03 09:00:00", None), // no offset: not RFC 3339
            (None, "1793696400", None),
            (Some("epoch_s"), "1793696400", Some(T)),
            (Some("epoch_s"), "1793696400.25", Some(T + 250)),
            (Some("epoch_s"), "1793696400.2509", Some(T + 250)),
            (Some("epoch_s"), "1.7936964e9", Some(T)),
            (Some("epoch_s"), "-1", Some(-1000)),
            (Some("epoch_s"), "", None),
            (Some("epoch_s"), ".5", None),
            (Some("epoch_s"), "5.", None),
            (Some("epoch_s"), "1.5.5", None),
            (Some("epoch_s"), "--1", None),
            (Some("epoch_s"), "12abc", None),
            (Some("epoch_s"), "99999999999999999999", None),
            (Some("epoch_s"), "1e300", None),
            (Some("epoch_s"), "NaN", None),
            (Some("epoch_ms"), "1793696400250", Some(T + 250)),
            (Some("epoch_ms"), "1793696400250.9", Some(T + 250)),
            (Some("epoch_ms"), "9223372036854775807", None), // beyond chrono's range
            (
                Some("%d/%b/%Y:%H:%M:%S %z"),
                "03/Nov/2026:10:00:00 +0100",
                Some(T),
            ),
            (Some("%Y-%m-%d %H:%M:%S"), "2026-11-03 09:00:00", Some(T)),
            (
                Some("%Y-%m-%d %H:%M:%S%.f"),
                "2026-11-03 09:00:00.250",
                Some(T + 250),
            ),
            (Some("%Y-%m-%d"), "2026-11-03", Some(T - 9 * 3_600_000)),
            (Some("%Y-%m-%d %H:%M:%S"), "2026-11-03", None),
            (Some("%Y-%m-%d"), "2026-13-03", None),
            (Some("%s"), "1793696400", Some(T)),
            (Some("rfc3339"), "2026-11-03T09:00:00Z", Some(T)),
        ];
        for (fmt, s, want) in cases {
            assert_eq!(at(*fmt, s), *want, "{fmt:?} {s:?}");
        }
    }

    /// The common shapes are read without chrono, and agree with it.
    #[test]
    fn the_common_rfc3339_shapes_take_the_fast_path() {
        for s in [
            "2026-11-03T09:00:00Z",
            "2026-11-03t09:00:00z",
            "2026-11-03 09:00:00Z",
            "2026-11-03T10:00:00+01:00",
            "2026-11-03T04:30:00-04:30",
            "2026-11-03T09:00:00.250Z",
            "2026-11-03T09:00:00.2509999Z",
            "2026-11-03T09:00:00.123456789+00:00",
            "2028-02-29T23:59:59-23:59",
            "1969-12-31T23:59:59.999Z",
            "0000-01-01T00:00:00+23:59",
            "9999-12-31T23:59:59.999-23:59",
        ] {
            assert_eq!(rfc3339_common(s), parse_rfc3339(s), "{s}");
            assert!(rfc3339_common(s).is_some(), "{s}");
        }
        // Left to chrono: a leap second, whitespace, 10+ fraction digits,
        // impossible dates and offsets, other shapes.
        for s in [
            "2026-12-31T23:59:60Z",
            " 2026-11-03T09:00:00Z",
            "2026-11-03T09:00:00Z ",
            "2026-11-03T09:00:00.1234567890Z",
            "2026-02-29T09:00:00Z",
            "2100-02-29T09:00:00Z",
            "2026-04-31T09:00:00Z",
            "2026-11-03T09:00:00+24:00",
            "2026-11-03T09:00:00+01:60",
            "2026-11-03T09:00:00+0100",
            "2026-11-03T09:00:00.Z",
            "2026-11-03T24:00:00Z",
            "2026-11-03T09:00:00",
            "2026-11-03T09:00:00ZZ",
            "2026-11-03T09:00:00\u{2212}01:00",
            "+2026-11-03T09:00:00Z",
        ] {
            assert_eq!(rfc3339_common(s), None, "{s}");
        }
        assert_eq!(
            at(None, "2026-12-31T23:59:60Z"),
            parse_rfc3339("2026-12-31T23:59:60Z")
        );
    }

    /// RFC 3339-like text: every byte of the shape from a small alphabet of
    /// near misses, so shapes that fit are frequent.
    fn rfc3339_ish() -> impl Strategy<Value = String> {
        let digit = || prop::sample::select(b"0123456789".to_vec());
        let parts = (
            prop::collection::vec(digit(), 4),
            prop::sample::select(b"-/".to_vec()),
            (0u8..=13, 0u8..=32),
            prop::sample::select(b"Tt xZ".to_vec()),
            (0u8..=25, 0u8..=61, 0u8..=61),
            prop::option::of(prop::collection::vec(digit(), 0..12)),
            prop::sample::select(vec!["Z", "z", "+", "-", "+00:00", "", " ", "UTC"]),
            (0u8..=25, 0u8..=61),
            prop::sample::select(vec!["", ":", " "]),
        );
        parts.prop_map(
            |(y, sep, (mo, d), t, (h, mi, se), frac, tz, (oh, om), colon)| {
                let mut s = String::from_utf8(y).unwrap();
                let sep = sep as char;
                s += &format!("{sep}{mo:02}{sep}{d:02}{}{h:02}:{mi:02}:{se:02}", t as char);
                if let Some(f) = frac {
                    s.push('.');
                    s += std::str::from_utf8(&f).unwrap();
                }
                s += tz;
                if tz == "+" || tz == "-" {
                    s += &format!("{oh:02}{colon}{om:02}");
                }
                s
            },
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 4096, ..ProptestConfig::default() })]

        /// Where the fast path answers, chrono gives the same milliseconds;
        /// and what TimeFormat::Rfc3339 answers is chrono's answer.
        #[test]
        fn the_fast_rfc3339_path_agrees_with_chrono(s in prop_oneof![rfc3339_ish(), any::<String>()]) {
            let chrono = parse_rfc3339(&s);
            if let Some(ms) = rfc3339_common(&s) {
                prop_assert_eq!(Some(ms), chrono);
            }
            let chrono_checked = chrono.filter(|ms| DateTime::from_timestamp_millis(*ms).is_some());
            prop_assert_eq!(TimeFormat::Rfc3339.parse(&s), chrono_checked);
        }

        /// Any valid time written by chrono in the common shapes is read
        /// by the fast path.
        #[test]
        fn chrono_written_times_take_the_fast_path(
            secs in -62_135_596_800i64..253_402_300_799,
            nanos in 0u32..1_000_000_000,
            offset_min in -1439i32..=1439,
        ) {
            let tz = chrono::FixedOffset::east_opt(offset_min * 60).unwrap();
            let t = DateTime::from_timestamp(secs, nanos).unwrap().with_timezone(&tz);
            for fmt in [chrono::SecondsFormat::Secs, chrono::SecondsFormat::Millis,
                        chrono::SecondsFormat::Nanos] {
                let s = t.to_rfc3339_opts(fmt, offset_min == 0);
                if !s.starts_with('-') && s.as_bytes()[..4].iter().all(u8::is_ascii_digit) {
                    prop_assert_eq!(rfc3339_common(&s), parse_rfc3339(&s), "{}", s);
                    prop_assert!(rfc3339_common(&s).is_some(), "{}", s);
                }
            }
        }
    }

    #[test]
    fn bad_patterns_are_errors() {
        for bad in ["", "%Q", "%", "yyyy-mm-dd"] {
            assert!(TimeFormat::new(Some(bad)).is_err(), "{bad:?}");
        }
    }
}
