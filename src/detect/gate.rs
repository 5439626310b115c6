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
//! - The ledger keeps every decision (approved, rejected, revoked) per
//!   (release, service), each with its environment, approver, source and
//!   time. An attempt's standing is the last decision that counts, in time
//!   order: approvals up to the deadline (deploy + grace), rejections and
//!   revocations up to the deploy only (one after it does not make the
//!   deploy a bypass). At equal times a rejection or revocation sorts after
//!   an approval.
//! - Four eyes (`require_distinct_approver`): the deployers are the actors
//!   of the attempt's gated reports (at most [`MAX_DEPLOYERS`]); an
//!   approval by one of them, as a person (`[model.identities]`), is
//!   skipped, and is the reason given when nothing else approved.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::{Anomaly, Change, ChangeKind, Detectors, KeyMemory, LastReport, RuleId, what};
use crate::event::{ChangeClass, Event, Key, NO_SERVICE, TimeMs, format_rfc3339};
use crate::model::{ApprovalScope, Model};

pub(super) const APPROVED: &str = "approved";
const IN_PROGRESS: &str = "in_progress";
const DEPLOYED: &str = "deployed";
const PAUSED: &str = "paused";

/// Deployers remembered per attempt (four eyes): a bound, not a limit any
/// real rollout reaches.
pub const MAX_DEPLOYERS: usize = 8;

/// Decisions kept per (release, service): the newest, past this bound.
pub const MAX_RULINGS: usize = 64;

/// What an approval source decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    Approved,
    Rejected,
    Revoked,
}

impl Decision {
    /// The decision an event's status is, if any.
    pub fn of_status(status: &str) -> Option<Decision> {
        match status {
            APPROVED => Some(Decision::Approved),
            "rejected" => Some(Decision::Rejected),
            "revoked" => Some(Decision::Revoked),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Approved => "approved",
            Decision::Rejected => "rejected",
            Decision::Revoked => "revoked",
        }
    }
}

/// One decision of the ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ruling {
    pub decision: Decision,
    /// The decision's order time (event time, or the agent's clock when it
    /// came from too far in the future).
    pub at: TimeMs,
    /// The environment it was given for; `-` is every environment.
    pub environment: String,
    /// Who decided (as the source names them); empty in rows migrated from
    /// schema 5, which kept no approver.
    #[serde(default)]
    pub approver: String,
    /// The approval source; empty in migrated rows.
    #[serde(default)]
    pub source: String,
}

impl Ruling {
    /// "approved by alice (jira) at ..." for messages.
    pub fn describe(&self) -> String {
        let mut s = self.decision.as_str().to_string();
        if !self.approver.is_empty() {
            s.push_str(&format!(" by {}", self.approver));
        }
        if !self.source.is_empty() {
            s.push_str(&format!(" ({})", self.source));
        }
        s.push_str(&format!(" at {}", format_rfc3339(self.at)));
        s
    }
}

/// The gate's ledger: the decisions from approval sources per (release,
/// service), in time order; service `-` is the whole release.
pub type Approvals = HashMap<(String, String), Vec<Ruling>>;

/// Adds a decision to a (release, service)'s list, in order, without
/// duplicates, keeping the newest [`MAX_RULINGS`]. Returns whether it
/// changed.
pub fn add_ruling(list: &mut Vec<Ruling>, r: Ruling) -> bool {
    if list.contains(&r) {
        return false;
    }
    let pos = list.partition_point(|x| (x.at, x.decision) <= (r.at, r.decision));
    list.insert(pos, r);
    if list.len() > MAX_RULINGS {
        list.remove(0);
    }
    true
}

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
    /// (source, actor) of the attempt's gated reports: who deploys (four
    /// eyes).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deployers: Vec<(String, String)>,
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
    if !gate.environments.iter().any(|e| *e == ch.key.environment) {
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
                    deployers: Vec::new(),
                });
                mem.attempts.last_mut().expect("just pushed")
            }
        };
        a.last_gated = a.last_gated.max(t);
        if gate.require_distinct_approver
            && a.deployers.len() < MAX_DEPLOYERS
            && !a
                .deployers
                .iter()
                .any(|(s, w)| *s == ch.event.source && *w == ch.event.actor)
        {
            a.deployers
                .push((ch.event.source.clone(), ch.event.actor.clone()));
        }
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

/// Where an attempt stands against the ledger.
#[derive(Debug)]
pub enum Standing<'a> {
    /// An approval counts.
    Approved(&'a Ruling),
    /// The last decision that counts is a rejection or a revocation.
    Refused(&'a Ruling),
    /// Only the deployer approved (four eyes).
    SelfApproved(&'a Ruling),
    /// Approved, but only after the deadline.
    Late(&'a Ruling),
    /// No decision at all.
    None,
}

/// The attempt's standing: `base` is its deploy time, `deadline` that plus
/// grace (see the module's doc).
pub fn standing<'a>(
    model: &Model,
    key: &Key,
    approvals: &'a Approvals,
    deployers: &[(&str, &str)],
    base: TimeMs,
    deadline: TimeMs,
) -> Standing<'a> {
    let Some(gate) = &model.gate else {
        return Standing::None;
    };
    let get = |service: &str| {
        approvals
            .get(&(key.release.clone(), service.to_string()))
            .map(Vec::as_slice)
            .unwrap_or_default()
    };
    let mut rulings: Vec<&Ruling> = get(&key.service)
        .iter()
        .chain(if key.service == NO_SERVICE {
            [].iter()
        } else {
            get(NO_SERVICE).iter()
        })
        .filter(|r| {
            gate.approvals == ApprovalScope::ReleaseWide
                || r.environment == key.environment
                || r.environment == NO_SERVICE
        })
        .collect();
    rulings.sort_by_key(|r| (r.at, r.decision));
    let is_self = |r: &Ruling| {
        gate.require_distinct_approver && {
            let approver = model.person(&r.source, &r.approver);
            deployers
                .iter()
                .any(|(s, a)| model.person(s, a) == approver)
        }
    };
    let mut current: Option<&Ruling> = None;
    let mut self_approval = None;
    let mut late = None;
    for r in rulings {
        match r.decision {
            Decision::Approved if r.at > deadline => {
                if late.is_none() && !is_self(r) {
                    late = Some(r);
                }
            }
            Decision::Approved if is_self(r) => self_approval = Some(r),
            Decision::Approved => current = Some(r),
            Decision::Rejected | Decision::Revoked if r.at <= base => current = Some(r),
            Decision::Rejected | Decision::Revoked => {}
        }
    }
    match (current, self_approval, late) {
        (Some(r), _, _) if r.decision == Decision::Approved => Standing::Approved(r),
        (Some(r), _, _) => Standing::Refused(r),
        (None, Some(r), _) => Standing::SelfApproved(r),
        (None, None, Some(r)) => Standing::Late(r),
        (None, None, None) => Standing::None,
    }
}

/// The ledger's last decision for a key in a gated environment, whatever
/// its time (what `relstat status` shows).
pub fn last_decision<'a>(model: &Model, key: &Key, approvals: &'a Approvals) -> Option<&'a Ruling> {
    let gate = model.gate.as_ref()?;
    if !gate.environments.iter().any(|e| *e == key.environment) {
        return None;
    }
    match standing(model, key, approvals, &[], TimeMs::MAX, TimeMs::MAX) {
        Standing::Approved(r) | Standing::Refused(r) => Some(r),
        _ => None,
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
    let mut changed = false;
    for a in mem.attempts.iter_mut().filter(|a| !a.judged) {
        let Some(base) = a.base() else { continue };
        let deadline = base + grace;
        if now <= deadline {
            continue;
        }
        a.judged = true;
        changed = true;
        let deployers: Vec<(&str, &str)> = a
            .deployers
            .iter()
            .map(|(s, w)| (s.as_str(), w.as_str()))
            .chain([(a.evidence.source.as_str(), a.evidence.actor.as_str())])
            .collect();
        let standing = standing(model, key, approvals, &deployers, base, deadline);
        if let Standing::Approved(_) = standing {
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
        let ruling = match &standing {
            Standing::Approved(_) => unreachable!("approved attempts are not reported"),
            Standing::Refused(r) => {
                message.push_str(&format!(" ({})", r.describe()));
                Some(*r)
            }
            Standing::SelfApproved(r) => {
                message.push_str(&format!(" (self-approved: {})", r.describe()));
                Some(*r)
            }
            Standing::Late(r) => {
                message.push_str(&format!(
                    " (approved only at {}, after {})",
                    format_rfc3339(r.at),
                    format_rfc3339(deadline)
                ));
                Some(*r)
            }
            Standing::None if a.emergency.is_some() => None,
            Standing::None => {
                message.push_str(&format!(
                    " (no approval from {})",
                    gate.approval_sources.join(", ")
                ));
                None
            }
        };
        if let Some(reason) = &a.emergency {
            message.push_str(&format!("; reason: {reason}"));
        }
        let mut rec = d.record(
            rule,
            setting.severity,
            key,
            a.from.as_deref(),
            &a.to,
            &a.evidence,
            now,
            message,
        );
        if let Some(r) = ruling {
            rec.approver = (!r.approver.is_empty()).then(|| r.approver.clone());
            rec.decision = Some(r.decision.as_str().to_string());
        }
        out.push(rec);
    }
    let before = mem.attempts.len();
    mem.attempts.retain(|a| !(a.judged && a.ended));
    changed || mem.attempts.len() != before
}
