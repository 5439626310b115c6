//! change_freeze: `in_progress` or `deployed` entered (a key's first status
//! or a transition; not a re-report) in one of a freeze window's
//! environments (none listed = all), at an event time inside the window
//! (docs/config.md; docs/change-freeze.md has examples).
//!
//! Windows are absolute (`start` inclusive, `end` exclusive) or weekly: each
//! run of consecutive `days` (the week wraps: sat, sun, mon is one run) is
//! frozen from `from` on its first day to `to` on the day after its last
//! day, in local time of `timezone` (default UTC), so daylight-saving
//! changes move the instants with the clock on the wall. A local time that
//! does not exist (the hour skipped in spring) resolves to the first valid
//! instant after it, an ambiguous one (the hour repeated in autumn) to the
//! earlier. All seven days listed = always frozen. The event time compared
//! is the order time (its own, or the agent's clock when it came from too
//! far ahead).
//!
//! Quiet: one finding per deployment run (a key's run of in_progress, paused
//! and deployed), however many windows contain it: a rollout started and
//! finished inside a freeze is one finding, on the first status entered
//! inside it (a rollout started before 16:00 Friday and finished after is
//! reported on its deployed).

use chrono::{Datelike, Duration, LocalResult, NaiveDate, NaiveTime, TimeZone};
use chrono_tz::Tz;

use super::{Anomaly, Change, ChangeKind, Detectors, KeyMemory, RuleId, what};
use crate::config::FreezeWindowConfig;
use crate::event::TimeMs;
use crate::model::Model;

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// A freeze window, parsed once.
#[derive(Debug, Clone)]
pub struct Window {
    kind: Kind,
    environments: Vec<String>,
    /// How the message names it.
    label: String,
}

#[derive(Debug, Clone)]
enum Kind {
    Absolute {
        start: TimeMs,
        end: TimeMs,
    },
    Weekly {
        /// Runs of consecutive days: (first day, number of days), mon = 0.
        runs: Vec<(u32, i64)>,
        all_week: bool,
        from: NaiveTime,
        to: NaiveTime,
        tz: Tz,
    },
}

impl Window {
    /// `None` for a window `check-config` refuses (never reached at run time).
    pub fn compile(w: &FreezeWindowConfig) -> Option<Window> {
        let environments = w.environments.clone();
        if let (Some(s), Some(e)) = (&w.start, &w.end) {
            let ms = |v: &str| {
                chrono::DateTime::parse_from_rfc3339(v.trim())
                    .ok()
                    .map(|t| t.timestamp_millis())
            };
            return Some(Window {
                kind: Kind::Absolute {
                    start: ms(s)?,
                    end: ms(e)?,
                },
                environments,
                label: format!("{} to {}", s.trim(), e.trim()),
            });
        }
        let hm = |v: &Option<String>| NaiveTime::parse_from_str(v.as_deref()?.trim(), "%H:%M").ok();
        let (from, to) = (hm(&w.from)?, hm(&w.to)?);
        let tz_name = w.timezone.as_deref().unwrap_or("UTC");
        let tz: Tz = tz_name.parse().ok()?;
        let mut set = [false; 7];
        for d in &w.days {
            set[DAYS.iter().position(|x| x == d)?] = true;
        }
        if !set.iter().any(|x| *x) {
            return None;
        }
        let all_week = set.iter().all(|x| *x);
        let mut runs = Vec::new();
        for first in 0..7usize {
            if set[first] && !set[(first + 6) % 7] {
                let len = (0..7).take_while(|i| set[(first + i) % 7]).count();
                runs.push((first as u32, len as i64));
            }
        }
        Some(Window {
            kind: Kind::Weekly {
                runs,
                all_week,
                from,
                to,
                tz,
            },
            environments,
            label: format!(
                "{} {}-{} {tz_name}",
                w.days.join(","),
                from.format("%H:%M"),
                to.format("%H:%M")
            ),
        })
    }

    fn applies_to(&self, environment: &str) -> bool {
        self.environments.is_empty() || self.environments.iter().any(|e| e == environment)
    }

    /// Whether the instant `t` is inside the window.
    pub fn contains(&self, t: TimeMs) -> bool {
        match &self.kind {
            Kind::Absolute { start, end } => *start <= t && t < *end,
            Kind::Weekly {
                runs,
                all_week,
                from,
                to,
                tz,
            } => {
                if *all_week {
                    return true;
                }
                let Some(utc) = chrono::DateTime::from_timestamp_millis(t) else {
                    return false;
                };
                let today = utc.with_timezone(tz).date_naive();
                // A run lasts at most 6 days plus the day after: look back
                // far enough for any run that may still be going on.
                (0..=8).any(|back| {
                    let day = today - Duration::days(back);
                    let wd = day.weekday().num_days_from_monday();
                    runs.iter().any(|&(first, len)| {
                        first == wd
                            && local_ms(tz, day, *from) <= t
                            && t < local_ms(tz, day + Duration::days(len), *to)
                    })
                })
            }
        }
    }
}

impl Window {
    /// How messages and answers name the window.
    pub fn label(&self) -> &str {
        &self.label
    }
}

/// The first of `windows` that applies to `environment` and contains `t`
/// (what the rule judges a deployment against; `relstat readiness` asks it
/// of the agent's clock).
pub fn open_at<'a>(windows: &'a [Window], environment: &str, t: TimeMs) -> Option<&'a Window> {
    windows
        .iter()
        .find(|w| w.applies_to(environment) && w.contains(t))
}

/// The first instant after `t`, within `horizon` ms, at which a window of
/// `environment` is open, with that window: a freeze about to start (found
/// a minute late at most: `horizon` is walked in minute steps).
pub fn next_open<'a>(
    windows: &'a [Window],
    environment: &str,
    t: TimeMs,
    horizon: TimeMs,
) -> Option<(TimeMs, &'a Window)> {
    const MINUTE: TimeMs = 60_000;
    (1..=horizon / MINUTE)
        .map(|i| t + i * MINUTE)
        .find_map(|at| open_at(windows, environment, at).map(|w| (at, w)))
}

/// The instant of a local date and time in `tz`: the earlier of an
/// ambiguous pair, the first valid instant after a skipped one.
fn local_ms(tz: &Tz, day: NaiveDate, time: NaiveTime) -> TimeMs {
    let mut local = day.and_time(time);
    // Gaps are at most a few hours; minutes are the finest step zones use.
    for _ in 0..=24 * 60 {
        match tz.from_local_datetime(&local) {
            LocalResult::Single(t) => return t.timestamp_millis(),
            LocalResult::Ambiguous(a, b) => return a.min(b).timestamp_millis(),
            LocalResult::None => local += Duration::minutes(1),
        }
    }
    local.and_utc().timestamp_millis()
}

pub(super) fn check(
    d: &Detectors,
    model: &Model,
    ch: &Change<'_>,
    mem: &mut KeyMemory,
    out: &mut Vec<Anomaly>,
) {
    let to = model.id(ch.to);
    if !matches!(to, "in_progress" | "deployed" | "paused") {
        mem.freeze_fired = false;
        return;
    }
    if ch.kind == ChangeKind::Rereport || to == "paused" || mem.freeze_fired {
        return;
    }
    let Some(w) = open_at(&d.freeze_windows, &ch.key.environment, ch.order_time) else {
        return;
    };
    mem.freeze_fired = true;
    let what_happened = if to == "deployed" {
        "deploy of"
    } else {
        "deployment started for"
    };
    let message = format!(
        "{} {what_happened} {} by {} during a change freeze ({}; via {})",
        ch.key.environment,
        what(ch.key),
        ch.event.actor,
        w.label,
        ch.event.source,
    );
    out.push(d.record_event(
        RuleId::ChangeFreeze,
        d.change_freeze.severity,
        ch,
        model,
        message,
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> TimeMs {
        chrono::DateTime::parse_from_rfc3339(s)
            .unwrap()
            .timestamp_millis()
    }

    fn weekly(days: &[&str], from: &str, to: &str, tz: &str) -> Window {
        Window::compile(&FreezeWindowConfig {
            start: None,
            end: None,
            days: days.iter().map(|d| d.to_string()).collect(),
            from: Some(from.into()),
            to: Some(to.into()),
            timezone: Some(tz.into()),
            environments: vec![],
        })
        .unwrap()
    }

    #[test]
    fn a_skipped_local_time_resolves_to_the_first_valid_instant() {
        let tz: Tz = "Europe/Berlin".parse().unwrap();
        let day = NaiveDate::from_ymd_opt(2026, 3, 29).unwrap();
        // 02:30 does not exist that Sunday: clocks go from 02:00 CET to 03:00 CEST
        let t = local_ms(&tz, day, NaiveTime::from_hms_opt(2, 30, 0).unwrap());
        assert_eq!(t, utc("2026-03-29T01:00:00Z"));
        let w = weekly(&["sun"], "02:30", "02:30", "Europe/Berlin");
        assert!(!w.contains(utc("2026-03-29T00:59:59Z")));
        assert!(w.contains(utc("2026-03-29T01:00:00Z")));
    }

    #[test]
    fn an_ambiguous_local_time_resolves_to_the_earlier_instant() {
        let tz: Tz = "Europe/Berlin".parse().unwrap();
        let day = NaiveDate::from_ymd_opt(2026, 10, 25).unwrap();
        // 02:30 happens twice: first in CEST (00:30Z), then in CET (01:30Z)
        let t = local_ms(&tz, day, NaiveTime::from_hms_opt(2, 30, 0).unwrap());
        assert_eq!(t, utc("2026-10-25T00:30:00Z"));
    }

    #[test]
    fn runs_of_days_wrap_around_the_week_and_split_on_gaps() {
        // sun + mon is one run: Sunday 22:00 to Tuesday 06:00
        let w = weekly(&["mon", "sun"], "22:00", "06:00", "UTC");
        assert!(!w.contains(utc("2026-10-04T21:59:59Z")));
        assert!(w.contains(utc("2026-10-04T22:00:00Z")));
        assert!(w.contains(utc("2026-10-05T12:00:00Z")));
        assert!(w.contains(utc("2026-10-06T05:59:59Z")));
        assert!(!w.contains(utc("2026-10-06T06:00:00Z")));
        // mon and wed are two runs: Monday 09:00 to Tuesday 17:00, and Wednesday's
        let w = weekly(&["mon", "wed"], "09:00", "17:00", "UTC");
        assert!(w.contains(utc("2026-10-06T16:59:59Z")));
        assert!(!w.contains(utc("2026-10-06T17:00:00Z")));
        assert!(!w.contains(utc("2026-10-07T08:59:59Z")));
        assert!(w.contains(utc("2026-10-07T09:00:00Z")));
        // all seven days: always
        let all = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
        assert!(weekly(&all, "00:00", "00:00", "UTC").contains(utc("2026-10-07T09:00:00Z")));
    }
}
