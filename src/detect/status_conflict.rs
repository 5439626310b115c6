//! status_conflict: two consecutive accepted reports for one key, within
//! `window` of event time, from different actor types, the later one
//! contradicting the earlier: it leaves a terminal status, or goes back to a
//! status the key already passed through by a move the model does not allow
//! (automation says complete, a person says failed; automation says
//! deployed, a person sets in_test). Progress and allowed retries are not
//! conflicts: only disallowed moves can be.
//!
//! Reported instead of invalid_transition for that report (one finding per
//! report); the tracker starts the conflict episode of
//! `relstat_status_resolution_seconds{cause="conflict"}` on it. "Consecutive"
//! counts re-reports (they are reports) but not late events (they are not
//! accepted); times are order times.

use super::{Anomaly, Change, ChangeKind, Detectors, KeyMemory, RuleId, what};
use crate::model::Model;

pub(super) fn check(
    d: &Detectors,
    model: &Model,
    ch: &Change<'_>,
    mem: &KeyMemory,
    out: &mut Vec<Anomaly>,
) {
    let ChangeKind::Transition { allowed: false } = ch.kind else {
        return;
    };
    let (Some(from), Some((prev_at, prev_type))) = (ch.from, mem.prev_report) else {
        return;
    };
    if prev_type == ch.event.actor_type || ch.order_time - prev_at > d.conflict_window {
        return;
    }
    let to = model.id(ch.to);
    let why = if model.is_terminal(from) {
        "leaving a finished status"
    } else if mem.has_passed(to) {
        "going back to a status it had passed"
    } else {
        return;
    };
    let message = format!(
        "conflicting reports for {} in {}: {} reported {}, then {}s later {} ({}) reported \
         {to}, {why} (via {})",
        what(ch.key),
        ch.key.environment,
        prev_type.as_str(),
        model.id(from),
        (ch.order_time - prev_at) / 1000,
        ch.event.actor,
        ch.event.actor_type.as_str(),
        ch.event.source,
    );
    out.push(d.record_event(
        RuleId::StatusConflict,
        d.status_conflict.severity,
        ch,
        model,
        message,
    ));
}
