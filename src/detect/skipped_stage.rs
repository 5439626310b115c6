//! skipped_stage: a deployment to an environment of `[model.promotion]`
//! whose previous environment never had the same change (by version, commit
//! or release, per `match`) deployed or complete, for the same service and
//! site, within `window` of event time before it (docs/events.md).
//!
//! Decisions:
//! - A deployment run (a key's run of in_progress, paused and deployed) is
//!   judged once, on the first in_progress or deployed entered whose report
//!   carries what `match` compares (the version and commit a key carried on
//!   an earlier report count); a run it cannot judge is left alone.
//! - The first environment of the order, and environments not in it, are
//!   never judged.
//! - The emergency path (change_class `emergency` with a non-empty reason)
//!   excuses the skip: it is reported as emergency_change instead ("stage
//!   skipped on the emergency path"), or not at all when that rule is off.
//! - The previous stage counts only when its deployment is dated at or
//!   before this one: a staging deploy reported late but dated after the
//!   production one does not make production's skip clean, so the finding
//!   does not depend on the order reports arrive in.

use std::collections::HashMap;

use super::{Anomaly, Change, ChangeKind, Detectors, KeyMemory, LastReport, RuleId, gate, what};
use crate::event::{Key, TimeMs};
use crate::model::{Model, PromotionConfig, PromotionMatch};

/// (environment, service, site, matched value).
type StageKey = (String, String, String, String);

/// The tracker's ledger of what reached `deployed` or `complete` in each
/// environment of the promotion order: the latest event time per
/// (environment, service, site, matched value). Derived from the keys at
/// start ([`Stages::note`] for each), so it needs no store of its own.
#[derive(Debug, Default)]
pub struct Stages {
    at: HashMap<StageKey, TimeMs>,
}

/// The value `match` compares for a key.
pub fn matched<'a>(
    by: PromotionMatch,
    key: &'a Key,
    version: Option<&'a str>,
    commit: Option<&'a str>,
) -> Option<&'a str> {
    match by {
        PromotionMatch::Version => version,
        PromotionMatch::Commit => commit,
        PromotionMatch::Release => Some(key.release.as_str()),
    }
    .filter(|v| !v.trim().is_empty())
}

impl Stages {
    /// Notes that `key` is in `status` since `at`, carrying `last`'s
    /// version and commit; only `deployed` and `complete` in an environment
    /// of the order (but the last) count.
    pub fn note(&mut self, model: &Model, key: &Key, last: &LastReport, status: &str, at: TimeMs) {
        let Some(promo) = &model.promotion else {
            return;
        };
        if !matches!(status, "deployed" | "complete")
            || !promo.order[..promo.order.len().saturating_sub(1)]
                .iter()
                .any(|e| *e == key.environment)
        {
            return;
        }
        let Some(v) = matched(
            promo.match_by,
            key,
            last.version.as_deref(),
            last.commit.as_deref(),
        ) else {
            return;
        };
        let slot = self
            .at
            .entry((
                key.environment.to_string(),
                key.service.to_string(),
                key.site.to_string(),
                v.to_string(),
            ))
            .or_insert(at);
        *slot = (*slot).max(at);
    }

    /// Forgets deployments older than the window before `now` (event time
    /// can run ahead of the clock by at most `max_future`; a few entries
    /// kept longer are harmless).
    pub fn prune(&mut self, model: &Model, now: TimeMs) {
        let Some(promo) = &model.promotion else {
            return;
        };
        let window = promo.window.as_millis() as TimeMs;
        self.at.retain(|_, at| now - *at <= window);
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.at.len()
    }

    pub fn is_empty(&self) -> bool {
        self.at.is_empty()
    }

    /// The latest deployment of `value` in `env` for `service` at one of
    /// `sites`, dated in (`since`, `until`]: what a deployment to the next
    /// stage would be judged against (`relstat readiness`).
    pub fn find<'a>(
        &self,
        env: &str,
        service: &str,
        sites: impl IntoIterator<Item = &'a str>,
        value: &str,
        since: TimeMs,
        until: TimeMs,
    ) -> Option<TimeMs> {
        sites
            .into_iter()
            .filter_map(|site| {
                self.at
                    .get(&(
                        env.to_string(),
                        service.to_string(),
                        site.to_string(),
                        value.to_string(),
                    ))
                    .copied()
            })
            .filter(|at| *at > since && *at <= until)
            .max()
    }

    fn get(&self, env: &str, key: &Key, v: &str) -> Option<TimeMs> {
        // Borrowed lookups of a tuple key need owned parts; this runs once
        // per deployment run, not per event.
        self.at
            .get(&(
                env.to_string(),
                key.service.to_string(),
                key.site.to_string(),
                v.to_string(),
            ))
            .copied()
    }
}

/// "14d", "36h", "90m", "45s".
pub fn short(d: std::time::Duration) -> String {
    let s = d.as_secs();
    if s.is_multiple_of(86_400) {
        format!("{}d", s / 86_400)
    } else if s.is_multiple_of(3600) {
        format!("{}h", s / 3600)
    } else if s.is_multiple_of(60) {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

pub(super) fn check(
    d: &Detectors,
    model: &Model,
    ch: &Change<'_>,
    mem: &mut KeyMemory,
    stages: &Stages,
    out: &mut Vec<Anomaly>,
) {
    let Some(promo) = &model.promotion else {
        return;
    };
    let to = model.id(ch.to);
    if !matches!(to, "in_progress" | "deployed" | "paused") {
        mem.stage_judged = false;
        return;
    }
    if ch.kind == ChangeKind::Rereport || to == "paused" || mem.stage_judged {
        return;
    }
    let Some(pos) = promo.order.iter().position(|e| *e == ch.key.environment) else {
        return;
    };
    if pos == 0 {
        return;
    }
    let version = ch.event.version.as_deref().or(ch.prev_version);
    let commit = ch.event.commit.as_deref().or(ch.prev_commit);
    let Some(value) = matched(promo.match_by, ch.key, version, commit) else {
        return;
    };
    mem.stage_judged = true;
    let prev = &promo.order[pos - 1];
    let window = promo.window.as_millis() as TimeMs;
    if stages
        .get(prev, ch.key, value)
        .is_some_and(|at| at <= ch.order_time && ch.order_time - at <= window)
    {
        return;
    }
    skipped(d, model, ch, promo, prev, value, out);
}

fn skipped(
    d: &Detectors,
    model: &Model,
    ch: &Change<'_>,
    promo: &PromotionConfig,
    prev: &str,
    value: &str,
    out: &mut Vec<Anomaly>,
) {
    let what_happened = if model.id(ch.to) == "deployed" {
        "deploy of"
    } else {
        "deployment started for"
    };
    let by = match promo.match_by {
        PromotionMatch::Version => "version",
        PromotionMatch::Commit => "commit",
        PromotionMatch::Release => "release",
    };
    let site = if ch.key.site.is_empty() {
        String::new()
    } else {
        format!(" at site {}", ch.key.site)
    };
    let missing = format!(
        "{prev} had no deployment of {by} {value}{site} in the {} before",
        short(promo.window)
    );
    let base = format!(
        "{} {what_happened} {} by {}",
        ch.key.environment,
        what(ch.key),
        ch.event.actor
    );
    if let Some(reason) = gate::emergency_reason(ch.event) {
        if d.emergency_change.enabled {
            let message = format!(
                "emergency {base}: stage skipped on the emergency path ({missing}); reason: {reason}"
            );
            out.push(d.record_event(
                RuleId::EmergencyChange,
                d.emergency_change.severity,
                ch,
                model,
                message,
            ));
        }
        return;
    }
    let message = format!("{base} skipped the {prev} stage: {missing}");
    out.push(d.record_event(
        RuleId::SkippedStage,
        d.skipped_stage.severity,
        ch,
        model,
        message,
    ));
}
