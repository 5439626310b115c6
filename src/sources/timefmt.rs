//! Event-time parsing for line sources: a source's `time_format` (`epoch_s`,
//! `epoch_ms` or a strftime pattern), compiled once, with RFC 3339 as default.

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
            TimeFormat::Rfc3339 => parse_rfc3339(s)?,
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

    #[test]
    fn bad_patterns_are_errors() {
        for bad in ["", "%Q", "%", "yyyy-mm-dd"] {
            assert!(TimeFormat::new(Some(bad)).is_err(), "{bad:?}");
        }
    }
}
