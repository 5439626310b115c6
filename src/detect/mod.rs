//! Anomaly rules (docs/events.md): the tracker calls them on every accepted
//! report and on every periodic check; each rule is a small module here.
//!
//! Rules see a [`Change`] (what the tracker just decided) and the key's
//! [`KeyMemory`] (their own per-key state, persisted with the key in the same
//! store transaction), and push [`Anomaly`] records. They never touch metrics
//! or the store themselves: the tracker turns anomalies into effects.

//!
//! One finding per event among the rules that explain a bad move: id_reuse
//! first, then status_conflict, then invalid_transition. A rule that is
//! disabled finds nothing and so replaces nothing (turning id_reuse off makes
//! those events plain invalid transitions again, they do not go silent).
//! unauthorized_actor, flapping and change_freeze are about other things
//! (who, how often, when) and fire alongside.

mod anomaly;
mod change_freeze;
mod clock_skew;
mod flapping;
mod gate;
mod id_reuse;
mod invalid_transition;
mod skipped_stage;
mod status_conflict;
mod stuck;
mod unauthorized_actor;

pub use anomaly::{Anomaly, AnomalyRef, RuleId};
pub use change_freeze::{
    Window as FreezeWindow, next_open as freeze_next_open, open_at as freeze_open_at,
};
pub use flapping::IntoTimes;
pub use gate::{
    Approvals, Attempt, Decision, Ruling, Standing, add_ruling, last_decision, standing,
};
pub use skipped_stage::{Stages, matched as promotion_value, short as short_duration};
pub(crate) use what_of as what;

use serde::{Deserialize, Serialize};

use crate::config::{AnomaliesConfig, RuleConfig, Severity};
use crate::event::{ActorType, Event, Key, TimeMs};
use crate::model::{Model, StateIdx};
use crate::sym::Sym;

/// What kind of report the tracker found an event to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// The first status seen for the key: not a transition.
    First,
    /// The status changed (allowed or not).
    Transition { allowed: bool },
    /// The current status reported again: not a transition.
    Rereport,
}

/// Why a key stopped being tracked as open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    Terminal,
    Superseded,
    Stale,
}

/// An accepted (not late, not duplicate) report, as the rules see it.
#[derive(Debug)]
pub struct Change<'a> {
    pub event: &'a Event,
    pub key: &'a Key,
    /// The status before this report; `None` for the first report.
    pub from: Option<StateIdx>,
    pub to: StateIdx,
    pub kind: ChangeKind,
    /// The time the event is ordered at (its own, or the agent's clock when
    /// it came from too far in the future).
    pub order_time: TimeMs,
    /// The event was more than `max_future` ahead of the agent's clock.
    pub skewed: bool,
    /// The key was finished before this report (it is open again now).
    pub reopened_from: Option<FinishReason>,
    /// The version the key carried before this report.
    pub prev_version: Option<&'a str>,
    /// The commit the key carried before this report.
    pub prev_commit: Option<&'a str>,
    /// The agent's clock.
    pub now: TimeMs,
}

/// Per-key memory of the rules, stored with the key's state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyMemory {
    /// `entered_at` of the status episode the stuck rule already fired for:
    /// once per episode, remembered across restarts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stuck_fired: Option<TimeMs>,
    /// Every status the key has been in (status_conflict: "goes back to a
    /// status it passed through"; the gate: an approval after the key
    /// started deploying does not move it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub passed: Vec<Sym>,
    /// The previous accepted report: (order time, actor type), for
    /// status_conflict's "two consecutive reports".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev_report: Option<(TimeMs, ActorType)>,
    /// flapping: times of the latest transitions into each status (at most
    /// `max_transitions + 1` each, within the window).
    #[serde(default, skip_serializing_if = "IntoTimes::is_empty")]
    pub into: IntoTimes,
    /// flapping: statuses in an episode already reported.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flapping: Vec<Sym>,
    /// change_freeze: the current deployment run was reported already.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub freeze_fired: bool,
    /// skipped_stage: the current deployment run was judged already.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stage_judged: bool,
    /// The gate: deployment attempts not judged yet, and the current one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attempts: Vec<Attempt>,
}

impl KeyMemory {
    /// Whether the key has been in `status`.
    pub fn has_passed(&self, status: &str) -> bool {
        self.passed.iter().any(|s| s == status)
    }

    /// Bookkeeping every rule relies on, after they judged the report.
    fn note(&mut self, model: &Model, ch: &Change<'_>) {
        let to = model.id(ch.to);
        if !self.has_passed(to) {
            // Exact growth: a key passes a handful of statuses, and Vec's
            // first allocation (4 slots, 96 bytes) was most of this
            // memory's cost at 10,000 keys (issue 23).
            self.passed.reserve_exact(1);
            self.passed.push(Sym::new(to));
        }
        self.prev_report = Some((ch.order_time, ch.event.actor_type));
    }
}

/// Enabled flag and severity of one rule, defaults applied.
#[derive(Debug, Clone, Copy)]
pub struct RuleSetting {
    pub enabled: bool,
    pub severity: Severity,
}

impl RuleSetting {
    fn from(cfg: (Option<bool>, Option<Severity>), rule: RuleId) -> Self {
        Self {
            enabled: cfg.0.unwrap_or(true),
            severity: cfg.1.unwrap_or(rule.default_severity()),
        }
    }
}

fn plain(c: &RuleConfig) -> (Option<bool>, Option<Severity>) {
    (c.enabled, c.severity)
}

/// Every rule with its settings; built once from `[anomalies]`.
#[derive(Debug, Clone)]
pub struct Detectors {
    pub invalid_transition: RuleSetting,
    pub gate_bypass: RuleSetting,
    pub emergency_change: RuleSetting,
    pub unauthorized_actor: RuleSetting,
    pub status_conflict: RuleSetting,
    /// status_conflict's `window`, ms of event time.
    pub conflict_window: TimeMs,
    pub flapping: RuleSetting,
    pub flapping_max: u32,
    /// flapping's `window`, ms of event time.
    pub flapping_window: TimeMs,
    pub id_reuse: RuleSetting,
    pub stuck: RuleSetting,
    pub change_freeze: RuleSetting,
    pub freeze_windows: Vec<change_freeze::Window>,
    pub clock_skew: RuleSetting,
    pub skipped_stage: RuleSetting,
    /// Host name put into every record.
    pub host: String,
}

impl Detectors {
    pub fn new(cfg: &AnomaliesConfig, host: &str) -> Self {
        let ms = |d: std::time::Duration| d.as_millis() as TimeMs;
        let setting = |c: &RuleConfig, rule| RuleSetting::from(plain(c), rule);
        let sc = &cfg.status_conflict;
        let fl = &cfg.flapping;
        let cf = &cfg.change_freeze;
        Self {
            invalid_transition: setting(&cfg.invalid_transition, RuleId::InvalidTransition),
            gate_bypass: setting(&cfg.gate_bypass, RuleId::GateBypass),
            emergency_change: setting(&cfg.emergency_change, RuleId::EmergencyChange),
            unauthorized_actor: setting(&cfg.unauthorized_actor, RuleId::UnauthorizedActor),
            status_conflict: RuleSetting::from((sc.enabled, sc.severity), RuleId::StatusConflict),
            conflict_window: ms(sc.window),
            flapping: RuleSetting::from((fl.enabled, fl.severity), RuleId::Flapping),
            flapping_max: fl.max_transitions,
            flapping_window: ms(fl.window),
            id_reuse: setting(&cfg.id_reuse, RuleId::IdReuse),
            stuck: setting(&cfg.stuck, RuleId::Stuck),
            change_freeze: RuleSetting::from((cf.enabled, cf.severity), RuleId::ChangeFreeze),
            freeze_windows: cf
                .windows
                .iter()
                .filter_map(change_freeze::Window::compile)
                .collect(),
            clock_skew: setting(&cfg.clock_skew, RuleId::ClockSkew),
            skipped_stage: setting(&cfg.skipped_stage, RuleId::SkippedStage),
            host: host.to_string(),
        }
    }

    /// Judges one accepted report (see the module doc for which rules
    /// replace which).
    pub fn on_change(
        &self,
        model: &Model,
        ch: &Change<'_>,
        mem: &mut KeyMemory,
        out: &mut Vec<Anomaly>,
    ) {
        let before = out.len();
        if self.id_reuse.enabled {
            id_reuse::check(self, model, ch, out);
        }
        if out.len() == before && self.status_conflict.enabled {
            status_conflict::check(self, model, ch, mem, out);
        }
        if out.len() == before && self.invalid_transition.enabled {
            invalid_transition::check(self, model, ch, out);
        }
        if self.unauthorized_actor.enabled {
            unauthorized_actor::check(self, model, ch, out);
        }
        if self.flapping.enabled {
            flapping::check(self, model, ch, mem, out);
        }
        if self.change_freeze.enabled {
            change_freeze::check(self, model, ch, mem, out);
        }
        if self.gate_enabled(model) {
            gate::observe(model, ch, mem);
        }
        mem.note(model, ch);
    }

    /// skipped_stage (`[model.promotion]`): judges a report against the
    /// deployments of the previous stage, before the tracker notes it in
    /// `stages`.
    pub fn on_promotion(
        &self,
        model: &Model,
        ch: &Change<'_>,
        mem: &mut KeyMemory,
        stages: &Stages,
        out: &mut Vec<Anomaly>,
    ) {
        if self.skipped_stage.enabled {
            skipped_stage::check(self, model, ch, mem, stages, out);
        }
    }

    /// Whether deployment attempts are tracked at all.
    fn gate_enabled(&self, model: &Model) -> bool {
        model.gate.is_some() && (self.gate_bypass.enabled || self.emergency_change.enabled)
    }

    /// The decision `ev` is for the gate's ledger, if it is one: status
    /// `approved`, `rejected` or `revoked` from one of `approval_sources`.
    pub fn gate_decision(&self, model: &Model, ev: &Event) -> Option<Decision> {
        model
            .gate
            .as_ref()
            .filter(|g| g.approval_sources.contains(&ev.source))
            .and_then(|_| Decision::of_status(&ev.status))
    }

    /// Judges the key's deployment attempts that are due (the gate), at
    /// agent time `now`, once every source is caught up. Returns whether
    /// the key's memory changed.
    pub fn on_gate_check(
        &self,
        model: &Model,
        key: &Key,
        mem: &mut KeyMemory,
        approvals: &Approvals,
        now: TimeMs,
        out: &mut Vec<Anomaly>,
    ) -> bool {
        if !self.gate_enabled(model) || mem.attempts.is_empty() {
            return false;
        }
        gate::judge(self, model, key, mem, approvals, now, out)
    }

    /// Rules about an event itself, whatever its order (clock_skew).
    pub fn on_received(&self, ev: &Event, key: &Key, now: TimeMs, out: &mut Vec<Anomaly>) {
        if self.clock_skew.enabled {
            clock_skew::check(self, ev, key, now, out);
        }
    }

    /// A SIEM record of a plain transition (`forward = "all"`).
    pub fn transition_record(
        &self,
        key: &Key,
        ev: &Event,
        from: Option<&str>,
        to: &str,
        now: TimeMs,
        message: String,
    ) -> Anomaly {
        let last = LastReport::of(ev);
        let mut rec = self.record(
            RuleId::InvalidTransition,
            Severity::Info,
            key,
            from,
            to,
            &last,
            now,
            message,
        );
        rec.rule = "transition".into();
        rec.change_class = ev.change_class;
        rec
    }

    /// The periodic check of one open key (stuck): `entered_at` is when its
    /// current status began, by event time.
    #[allow(clippy::too_many_arguments)]
    pub fn on_check(
        &self,
        model: &Model,
        key: &Key,
        status: StateIdx,
        entered_at: TimeMs,
        last: &LastReport,
        now: TimeMs,
        mem: &mut KeyMemory,
        out: &mut Vec<Anomaly>,
    ) {
        if self.stuck.enabled {
            stuck::check(self, model, key, status, entered_at, last, now, mem, out);
        }
    }

    /// A record with the fields every rule fills the same way.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn record(
        &self,
        rule: RuleId,
        severity: Severity,
        key: &Key,
        from: Option<&str>,
        to: &str,
        last: &LastReport,
        now: TimeMs,
        message: String,
    ) -> Anomaly {
        Anomaly {
            rule: rule.as_str().to_string(),
            severity,
            release: key.release.clone(),
            service: key.service.to_string(),
            environment: key.environment.to_string(),
            site: key.site.to_string(),
            from: from.map(str::to_string),
            to: to.to_string(),
            actor: last.actor.to_string(),
            actor_type: last.actor_type,
            source: last.source.to_string(),
            event_id: last.event_id.clone(),
            event_time: last.time,
            detected_at: now,
            reason: last.reason.clone(),
            version: last.version.clone(),
            commit: last.commit.clone(),
            change_class: None,
            approver: None,
            decision: None,
            audit_sequence: None,
            audit_hash: None,
            host: self.host.clone(),
            message,
        }
    }

    /// A record about one event.
    pub(crate) fn record_event(
        &self,
        rule: RuleId,
        severity: Severity,
        ch: &Change<'_>,
        model: &Model,
        message: String,
    ) -> Anomaly {
        let last = LastReport::of(ch.event);
        let mut rec = self.record(
            rule,
            severity,
            ch.key,
            ch.from.map(|f| model.id(f)),
            model.id(ch.to),
            &last,
            ch.now,
            message,
        );
        rec.change_class = ch.event.change_class;
        rec
    }
}

/// Who said what last about a key: the evidence a periodic finding carries.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastReport {
    pub event_id: String,
    pub time: TimeMs,
    pub actor: Sym,
    pub actor_type: crate::event::ActorType,
    pub source: Sym,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
}

impl LastReport {
    pub fn of(e: &Event) -> Self {
        Self {
            event_id: e.id.clone(),
            time: e.time,
            actor: Sym::new(&e.actor),
            actor_type: e.actor_type,
            source: Sym::new(&e.source),
            reason: e.reason.clone(),
            version: e.version.clone(),
            commit: e.commit.clone(),
        }
    }

    /// Becomes the report of `e`, keeping the version and commit when `e`
    /// has none (what the key carries), the allocations it can reuse, and
    /// its actor and source when they are `e`'s.
    pub fn renew(&mut self, e: &Event) {
        self.event_id.clone_from(&e.id);
        self.time = e.time;
        if self.actor != e.actor {
            self.actor = Sym::new(&e.actor);
        }
        self.actor_type = e.actor_type;
        if self.source != e.source {
            self.source = Sym::new(&e.source);
        }
        self.reason.clone_from(&e.reason);
        if e.version.is_some() {
            self.version.clone_from(&e.version);
        }
        if e.commit.is_some() {
            self.commit.clone_from(&e.commit);
        }
    }
}

/// "2026.11.3/payments" or "2026.11.3" for release-wide keys.
pub fn what_of(key: &Key) -> String {
    if key.service == crate::event::NO_SERVICE {
        key.release.clone()
    } else {
        format!("{}/{}", key.release, key.service)
    }
}
