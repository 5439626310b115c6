//! unauthorized_actor: a key entered a status (its first status, or a
//! transition; not a re-report) that `[[model.permissions]]` restricts, by
//! an actor none of the matching entries allows. Roles are expanded when the
//! model is built; an entry with no environments applies to all. When
//! several entries match, being allowed by one of them is enough.

use super::{Anomaly, Change, ChangeKind, Detectors, RuleId, what};
use crate::model::Model;

pub(super) fn check(d: &Detectors, model: &Model, ch: &Change<'_>, out: &mut Vec<Anomaly>) {
    if ch.kind == ChangeKind::Rereport {
        return;
    }
    let env = &ch.key.environment;
    let mut matching = model
        .permissions
        .iter()
        .filter(|p| p.into.contains(&ch.to))
        .filter(|p| p.environments.is_empty() || p.environments.iter().any(|e| e == env))
        .peekable();
    if matching.peek().is_none() {
        return;
    }
    let mut allowed: Vec<&str> = Vec::new();
    for p in matching {
        if p.allow.contains(&ch.event.actor) {
            return;
        }
        allowed.extend(p.allow.iter().map(String::as_str));
    }
    allowed.sort_unstable();
    allowed.dedup();
    let message = format!(
        "{} ({}) moved {} to {} in {} but is not allowed to (allowed: {}; via {})",
        ch.event.actor,
        ch.event.actor_type.as_str(),
        what(ch.key),
        model.id(ch.to),
        env,
        if allowed.is_empty() {
            "nobody".to_string()
        } else {
            allowed.join(", ")
        },
        ch.event.source,
    );
    out.push(d.record_event(
        RuleId::UnauthorizedActor,
        d.unauthorized_actor.severity,
        ch,
        model,
        message,
    ));
}
