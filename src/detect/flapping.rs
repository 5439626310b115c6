//! flapping: more than `max_transitions` transitions into the same status of
//! one key within `window` of event time (repeated Re-Scheduled, a rollout
//! bouncing between in_progress and paused). The first status of a key is
//! not a transition and does not count; re-reports do not either.
//!
//! Quiet: one finding per episode. An episode of a status ends when, at a
//! later transition of the key, the count within the window is back to at
//! most `max_transitions`; only then can it fire again. The key's memory
//! keeps at most `max_transitions + 1` times per status.

use super::{Anomaly, Change, ChangeKind, Detectors, KeyMemory, RuleId, what};
use crate::model::Model;
use crate::sym::Sym;

pub(super) fn check(
    d: &Detectors,
    model: &Model,
    ch: &Change<'_>,
    mem: &mut KeyMemory,
    out: &mut Vec<Anomaly>,
) {
    let ChangeKind::Transition { .. } = ch.kind else {
        return;
    };
    let now = ch.order_time;
    let keep = d.flapping_max as usize + 1;
    let to = model.id(ch.to);
    mem.into.entry(Sym::new(to)).or_default().push(now);
    for times in mem.into.values_mut() {
        times.retain(|t| now - t <= d.flapping_window);
        if times.len() > keep {
            times.drain(..times.len() - keep);
        }
    }
    mem.into.retain(|_, times| !times.is_empty());
    let count = |s: &str| mem.into.get(s).map_or(0, Vec::len);
    let max = d.flapping_max as usize;
    mem.flapping.retain(|s| count(s) > max);
    if count(to) <= max || mem.flapping.iter().any(|s| s == to) {
        return;
    }
    mem.flapping.push(Sym::new(to));
    let message = format!(
        "{} in {} entered {} more than {} times within {} (flapping; latest by {} via {})",
        what(ch.key),
        ch.key.environment,
        model.state(ch.to).display,
        max,
        humantime::format_duration(std::time::Duration::from_millis(d.flapping_window as u64)),
        ch.event.actor,
        ch.event.source,
    );
    out.push(d.record_event(RuleId::Flapping, d.flapping.severity, ch, model, message));
}
