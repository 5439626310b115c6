//! clock_skew: an event more than `max_future` ahead of the agent's clock.
//! The tracker orders such an event at the agent's clock (so one bad clock
//! cannot freeze a key); this rule reports it.

use super::{Anomaly, Detectors, LastReport, RuleId, what};
use crate::event::{Event, Key, TimeMs, format_rfc3339};

pub(super) fn check(d: &Detectors, ev: &Event, key: &Key, now: TimeMs, out: &mut Vec<Anomaly>) {
    let ahead = (ev.time - now) / 1000;
    let message = format!(
        "event {} for {} in {} from source {} is dated {}, {}s ahead of this agent's clock",
        ev.id,
        what(key),
        key.environment,
        ev.source,
        format_rfc3339(ev.time),
        ahead
    );
    let last = LastReport::of(ev);
    out.push(d.record(
        RuleId::ClockSkew,
        d.clock_skew.severity,
        key,
        None,
        &ev.status,
        &last,
        now,
        message,
    ));
}
