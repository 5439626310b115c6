//! stuck: an open key has sat in its status longer than the status's
//! `stuck_after`, by the agent's clock. Fires once per episode (an episode is
//! one stay in one status, identified by when it was entered); the flag lives
//! in the key's memory and so survives restarts.

use super::{Anomaly, Detectors, KeyMemory, LastReport, RuleId, what};
use crate::event::{Key, TimeMs};
use crate::model::{Model, StateIdx};

#[allow(clippy::too_many_arguments)]
pub(super) fn check(
    d: &Detectors,
    model: &Model,
    key: &Key,
    status: StateIdx,
    entered_at: TimeMs,
    last: &LastReport,
    now: TimeMs,
    mem: &mut KeyMemory,
    out: &mut Vec<Anomaly>,
) {
    let Some(limit) = model.stuck_after(status, &key.environment) else {
        return;
    };
    if now - entered_at <= limit.as_millis() as TimeMs || mem.stuck_fired == Some(entered_at) {
        return;
    }
    mem.stuck_fired = Some(entered_at);
    let message = format!(
        "{} has been {} in {} for {} (threshold {})",
        what(key),
        model.state(status).display,
        key.environment,
        humantime::format_duration(std::time::Duration::from_secs(
            ((now - entered_at) / 1000) as u64
        )),
        humantime::format_duration(limit),
    );
    let id = model.id(status);
    out.push(d.record(
        RuleId::Stuck,
        d.stuck.severity,
        key,
        Some(id),
        id,
        last,
        now,
        message,
    ));
}
