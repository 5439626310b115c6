//! invalid_transition: the status changed in a way the model does not allow
//! (going backwards, leaving a terminal status, a move no tool makes).

use super::{Anomaly, Change, ChangeKind, Detectors, RuleId, what};
use crate::model::Model;

pub(super) fn check(d: &Detectors, model: &Model, ch: &Change<'_>, out: &mut Vec<Anomaly>) {
    let ChangeKind::Transition { allowed: false } = ch.kind else {
        return;
    };
    let Some(from) = ch.from else { return };
    let message = format!(
        "{} of {} went {} -> {} in {}, which the status model does not allow (reported by {} via {})",
        if model.is_terminal(from) {
            "finished release"
        } else {
            "release"
        },
        what(ch.key),
        model.id(from),
        model.id(ch.to),
        ch.key.environment,
        ch.event.actor,
        ch.event.source,
    );
    out.push(d.record_event(
        RuleId::InvalidTransition,
        d.invalid_transition.severity,
        ch,
        model,
        message,
    ));
}
