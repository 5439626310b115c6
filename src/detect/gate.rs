//! gate_bypass and emergency_change: a deployment attempt in a gated
//! environment without an approval from an approval source (docs/events.md,
//! `[model.gate]`). Attempts are followed here, report by report, and judged
//! once each from the tracker's periodic check, against the approvals ledger.
//!
//! Decisions where the spec is silent:
//! - An attempt is a key's run of `in_progress`/`deployed` reports; `paused`
//!   continues the run (a paused rollout is the same attempt), any other
//!   status ends it. `deployed -> in_progress -> deployed` (a redeploy of the
//!   same release) is one attempt; `failed -> in_progress` (a retry) starts a
//!   new one, judged on its own.
//! - The emergency path needs one report of the attempt carrying both
//!   change_class `emergency` and a non-empty `reason`.
//! - With emergency_change disabled, an unapproved emergency attempt is not
//!   reported at all (it is never a gate_bypass); with gate_bypass disabled,
//!   emergency attempts are still reported as emergency_change.
//! - The approval time compared is the approval event's order time (its own
//!   time, or the agent's clock when it came from too far in the future).
//! - The evidence of a finding is the report that entered `deployed` (or the
//!   last gated report of an attempt that never got there).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::{Anomaly, Change, ChangeKind, Detectors, KeyMemory, LastReport, RuleId, what};
use crate::event::{ChangeClass, Event, Key, NO_SERVICE, TimeMs, format_rfc3339};
use crate::model::Model;

pub(super) const APPROVED: &str = "approved";
const IN_PROGRESS: &str = "in_progress";
const DEPLOYED: &str = "deployed";
const PAUSED: &str = "paused";

/// The gate's ledger: the earliest approval time from an approval source per
/// (release, service); service `-` approves the whole release.
pub type Approvals = HashMap<(String, String), TimeMs>;

/// One deployment attempt of a key in a gated environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    /// Event time of the attempt's first `deployed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployed_at: Option<TimeMs>,
    /// Event time of its last `in_progress`/`deployed` report.
    pub last_gated: TimeMs,
    /// The key left the run (it is judged from `last_gated` if it never
    /// reached deployed).
    #[serde(default)]
    pub ended: bool,
    /// Judged already: never again.
    #[serde(default)]
    pub judged: bool,
    /// On the emergency path: the reason given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub emergency: Option<String>,
    /// The report a finding is about, and the status the key left for it.
    pub evidence: LastReport,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    pub to: String,
}

impl Attempt {
    /// The event time the approval must not be later than, grace excluded;
    /// `None` while the attempt is under way without a deployed yet.
    fn base(&self) -> Option<TimeMs> {
        self.deployed_at.or(if self.ended {
            Some(self.last_gated)
        } else {
            None
        })
    }
}

/// The reason of a report on the emergency path.
pub(super) fn emergency_reason(ev: &Event) -> Option<String> {
    ev.reason
        .as_deref()
        .filter(|r| ev.change_class == Some(ChangeClass::Emergency) && !r.trim().is_empty())
        .map(str::to_string)
}

/// Follows the attempts of a key in a gated environment.
pub(super) fn observe(model: &Model, ch: &Change<'_>, mem: &mut KeyMemory) {
    let Some(gate) = &model.gate else { return };
    if !gate.environments.contains(&ch.key.environment) {
        return;
    }
    let to = model.id(ch.to);
    let t = ch.order_time;
    let open = mem.attempts.last_mut().filter(|a| !a.ended);
    if to == IN_PROGRESS || to == DEPLOYED {
        let a = match open {
            Some(a) => a,
            None => {
                mem.attempts.push(Attempt {
                    deployed_at: None,
                    last_gated: t,
                    ended: false,
                    judged: false,
                    emergency: None,
                    evidence: LastReport::of(ch.event),
                    from: ch.from.map(|f| model.id(f).to_string()),
                    to: to.to_string(),
                });
                mem.attempts.last_mut().expect("just pushed")
            }
        };
        a.last_gated = a.last_gated.max(t);
        if a.emergency.is_none() {
            a.emergency = emergency_reason(ch.event);
        }
        if a.deployed_at.is_none() {
            // Until deployed, the evidence is the latest gated report.
            a.evidence = LastReport::of(ch.event);
            if ch.kind != ChangeKind::Rereport {
                a.from = ch.from.map(|f| model.id(f).to_string());
                a.to = to.to_string();
            }
            if to == DEPLOYED {
                a.deployed_at = Some(t);
            }
        }
    } else if to == PAUSED {
        if let Some(a) = open
            && a.emergency.is_none()
        {
            a.emergency = emergency_reason(ch.event);
        }
    } else if let Some(a) = open {
        a.ended = true;
        if a.judged {
            mem.attempts.pop();
        }
    }
}

/// Judges every attempt of the key that is due at `now`.
pub(super) fn judge(
    d: &Detectors,
    model: &Model,
    key: &Key,
    mem: &mut KeyMemory,
    approvals: &Approvals,
    now: TimeMs,
    out: &mut Vec<Anomaly>,
) -> bool {
    let Some(gate) = &model.gate else {
        return false;
    };
    let grace = gate.grace.as_millis() as TimeMs;
    let approved_at = |service: &str| approvals.get(&(key.release.clone(), service.to_string()));
    let approval = [approved_at(&key.service), approved_at(NO_SERVICE)]
        .into_iter()
        .flatten()
        .min()
        .copied();
    let mut changed = false;
    for a in mem.attempts.iter_mut().filter(|a| !a.judged) {
        let Some(base) = a.base() else { continue };
        let deadline = base + grace;
        if now <= deadline {
            continue;
        }
        a.judged = true;
        changed = true;
        if approval.is_some_and(|at| at <= deadline) {
            continue;
        }
        let (rule, setting) = if a.emergency.is_some() {
            (RuleId::EmergencyChange, d.emergency_change)
        } else {
            (RuleId::GateBypass, d.gate_bypass)
        };
        if !setting.enabled {
            continue;
        }
        let what_happened = if a.deployed_at.is_some() {
            format!("{} deploy of {}", key.environment, what(key))
        } else {
            format!(
                "{} deployment attempt of {} (never reached deployed)",
                key.environment,
                what(key)
            )
        };
        let mut message = format!(
            "{}{what_happened} by {} without prior approval",
            if a.emergency.is_some() {
                "emergency "
            } else {
                ""
            },
            a.evidence.actor,
        );
        match approval {
            Some(at) => message.push_str(&format!(
                " (approved only at {}, after {})",
                format_rfc3339(at),
                format_rfc3339(deadline)
            )),
            None if a.emergency.is_some() => {}
            None => message.push_str(&format!(
                " (no approval from {})",
                gate.approval_sources.join(", ")
            )),
        }
        if let Some(reason) = &a.emergency {
            message.push_str(&format!("; reason: {reason}"));
        }
        out.push(d.record(
            rule,
            setting.severity,
            key,
            a.from.as_deref(),
            &a.to,
            &a.evidence,
            now,
            message,
        ));
    }
    let before = mem.attempts.len();
    mem.attempts.retain(|a| !(a.judged && a.ended));
    changed || mem.attempts.len() != before
}
