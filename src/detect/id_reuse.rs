//! id_reuse: a report for a key that already finished as `rolled_back` or
//! `cancelled`, carrying a version different from the key's last known one:
//! the release id was reused for another build. Reported instead of
//! invalid_transition for that report.
//!
//! Decisions where the spec is silent: both versions must be known (a report
//! without a version, or a key that never had one, cannot show a reuse, and
//! stays an invalid transition); the report must be accepted (a late report
//! moves nothing and is only kept in the history); a rolled back key that was
//! finished stale or superseded instead is not covered (it finished by being
//! left alone, not by the terminal status).

use super::{Anomaly, Change, Detectors, FinishReason, RuleId, what};
use crate::model::Model;

pub(super) fn check(d: &Detectors, model: &Model, ch: &Change<'_>, out: &mut Vec<Anomaly>) {
    if ch.reopened_from != Some(FinishReason::Terminal) {
        return;
    }
    let Some(from) = ch.from.map(|f| model.id(f)) else {
        return;
    };
    if from != "rolled_back" && from != "cancelled" {
        return;
    }
    let (Some(old), Some(new)) = (ch.prev_version, ch.event.version.as_deref()) else {
        return;
    };
    if old == new {
        return;
    }
    let message = format!(
        "release id reused: {} in {} finished as {from} with version {old}, now reported {} \
         with version {new} by {} via {}",
        what(ch.key),
        ch.key.environment,
        model.id(ch.to),
        ch.event.actor,
        ch.event.source,
    );
    out.push(d.record_event(RuleId::IdReuse, d.id_reuse.severity, ch, model, message));
}
