//! Rollups: one per release × environment, across services and sites
//! (docs/api.md, docs/metrics.md). Derived from the tracker's keys whenever
//! asked (the periodic check, the API), so they need nothing stored.
//!
//! - The targets of a rollup are (service, site) pairs. Expected targets are
//!   `[rollups.environments.<env>]` services × sites (a list left empty: the
//!   ones reported), else those of the previous release in the environment
//!   (the release whose keys entered their statuses last before this one's
//!   earliest), together with the ones this release reported.
//! - An expected target without a key is `missing`. The rollup's status is
//!   the least advanced (lowest rank) status among its targets, `missing`
//!   before any; it is complete only when every expected target is
//!   `complete`.
//! - Release-wide keys (service `-`, e.g. an approval) are not targets,
//!   unless a release has nothing else in the environment.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::KeyState;
use crate::config::RollupsConfig;
use crate::event::{Key, NO_SERVICE, TimeMs};
use crate::model::Model;

/// The status of an expected target nothing was reported for.
pub const MISSING: &str = "missing";

/// One target of a rollup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RollupTarget {
    pub service: String,
    pub site: String,
    /// The key's current status, or `missing`.
    pub status: String,
}

/// Where a rollup's expected targets came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ExpectedFrom {
    /// `[rollups.environments.<env>]`.
    Config,
    /// The previous release in the environment.
    PreviousRelease,
    /// Only what this release reported.
    Reported,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rollup {
    pub release: String,
    pub environment: String,
    /// The least advanced status among the targets.
    pub status: String,
    pub complete: bool,
    /// Number of targets per status (`missing` included).
    pub counts: BTreeMap<String, u64>,
    pub expected_from: ExpectedFrom,
    pub targets: Vec<RollupTarget>,
    /// Event time of the latest status entered by one of its keys.
    #[serde(skip)]
    pub changed_at: TimeMs,
    /// Event time the first target entered `complete` (if one is).
    #[serde(skip)]
    pub first_complete_at: Option<TimeMs>,
}

/// The keys of one release in one environment.
#[derive(Default)]
struct Group<'a> {
    keys: Vec<(&'a Key, &'a KeyState)>,
    earliest: TimeMs,
}

/// Every rollup the keys make, sorted by (environment, release); `keep`
/// chooses the keys that count (a partner's scope, a release).
pub fn compute<'a>(
    keys: impl Iterator<Item = (&'a Key, &'a KeyState)>,
    model: &Model,
    cfg: &RollupsConfig,
    keep: impl Fn(&Key) -> bool,
) -> Vec<Rollup> {
    let mut groups: BTreeMap<(&'a str, &'a str), Group<'a>> = BTreeMap::new();
    for (k, ks) in keys {
        if !keep(k) {
            continue;
        }
        let g = groups
            .entry((k.environment.as_str(), k.release.as_str()))
            .or_insert_with(|| Group {
                keys: Vec::new(),
                earliest: TimeMs::MAX,
            });
        g.keys.push((k, ks));
        g.earliest = g.earliest.min(ks.entered_at);
    }
    // Per environment, the releases in order of their earliest status.
    let mut by_env: BTreeMap<&str, Vec<(TimeMs, &str)>> = BTreeMap::new();
    for ((env, rel), g) in &groups {
        by_env.entry(env).or_default().push((g.earliest, rel));
    }
    // The release before each one in its environment: one pass, not a
    // search per release (10,000 releases would make it quadratic).
    let mut previous: BTreeMap<(&str, &str), &str> = BTreeMap::new();
    for (env, v) in &mut by_env {
        v.sort();
        for w in v.windows(2) {
            previous.insert((env, w[1].1), w[0].1);
        }
    }
    let targets_of = |g: &Group<'_>| -> BTreeMap<(String, String), String> {
        let services: Vec<_> = g
            .keys
            .iter()
            .filter(|(k, _)| k.service != NO_SERVICE)
            .collect();
        let chosen: Vec<_> = if services.is_empty() {
            g.keys.iter().collect()
        } else {
            services
        };
        chosen
            .into_iter()
            .map(|(k, ks)| ((k.service.clone(), k.site.clone()), ks.status.clone()))
            .collect()
    };
    let mut out = Vec::new();
    for ((env, rel), g) in &groups {
        let mut targets = targets_of(g);
        let expected_from = if let Some(e) = cfg.environments.get(*env) {
            let reported_services: BTreeSet<String> =
                targets.keys().map(|(s, _)| s.clone()).collect();
            let reported_sites: BTreeSet<String> = targets.keys().map(|(_, s)| s.clone()).collect();
            let services: Vec<String> = if e.services.is_empty() {
                reported_services.into_iter().collect()
            } else {
                e.services.clone()
            };
            let sites: Vec<String> = if e.sites.is_empty() {
                reported_sites.into_iter().collect()
            } else {
                e.sites.clone()
            };
            for s in &services {
                for site in &sites {
                    targets
                        .entry((s.clone(), site.clone()))
                        .or_insert_with(|| MISSING.to_string());
                }
            }
            ExpectedFrom::Config
        } else {
            match previous.get(&(*env, *rel)) {
                Some(prev) => {
                    for t in targets_of(&groups[&(*env, *prev)]).into_keys() {
                        targets.entry(t).or_insert_with(|| MISSING.to_string());
                    }
                    ExpectedFrom::PreviousRelease
                }
                None => ExpectedFrom::Reported,
            }
        };
        let mut counts: BTreeMap<String, u64> = BTreeMap::new();
        for st in targets.values() {
            *counts.entry(st.clone()).or_default() += 1;
        }
        let rank = |s: &str| model.index(s).map_or(0, |i| model.state(i).rank + 1);
        let status = targets
            .values()
            .min_by_key(|s| (rank(s), s.as_str()))
            .cloned()
            .unwrap_or_else(|| MISSING.to_string());
        let complete = targets.values().all(|s| s == "complete");
        let first_complete_at = g
            .keys
            .iter()
            .filter(|(_, ks)| ks.status == "complete")
            .map(|(_, ks)| ks.entered_at)
            .min();
        out.push(Rollup {
            release: rel.to_string(),
            environment: env.to_string(),
            status,
            complete,
            counts,
            expected_from,
            targets: targets
                .into_iter()
                .map(|((service, site), status)| RollupTarget {
                    service,
                    site,
                    status,
                })
                .collect(),
            changed_at: g
                .keys
                .iter()
                .map(|(_, ks)| ks.entered_at)
                .max()
                .unwrap_or(0),
            first_complete_at,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RollupEnvironmentConfig;
    use crate::detect::LastReport;

    fn key(release: &str, service: &str, env: &str, site: &str) -> Key {
        Key {
            release: release.into(),
            service: service.into(),
            environment: env.into(),
            site: site.into(),
        }
    }

    fn state(status: &str, at: TimeMs) -> KeyState {
        KeyState {
            status: status.into(),
            entered_at: at,
            max_time: at,
            max_rank: 0,
            max_id: String::new(),
            last: LastReport::default(),
            finished: None,
            conflict_since: None,
            memory: Default::default(),
        }
    }

    fn run(keys: &[(Key, KeyState)], cfg: &RollupsConfig) -> Vec<String> {
        compute(
            keys.iter().map(|(k, s)| (k, s)),
            &Model::builtin(),
            cfg,
            |_| true,
        )
        .iter()
        .map(|r| {
            let counts: Vec<String> = r.counts.iter().map(|(s, n)| format!("{s}={n}")).collect();
            format!(
                "{}/{} {}{} {:?} [{}]",
                r.release,
                r.environment,
                r.status,
                if r.complete { " complete" } else { "" },
                r.expected_from,
                counts.join(",")
            )
        })
        .collect()
    }

    #[test]
    fn least_advanced_status_and_completion_across_services_and_sites() {
        let keys = vec![
            (key("r1", "api", "prod", "a"), state("complete", 10)),
            (key("r1", "api", "prod", "b"), state("complete", 20)),
            (key("r1", "web", "prod", "a"), state("complete", 30)),
            (key("r2", "api", "prod", "a"), state("complete", 100)),
            (key("r2", "web", "prod", "a"), state("deployed", 110)),
            (key("r2", "-", "prod", ""), state("approved", 90)),
            (key("r2", "api", "staging", "a"), state("in_progress", 50)),
        ];
        assert_eq!(
            run(&keys, &RollupsConfig::default()),
            [
                "r1/prod complete complete Reported [complete=3]",
                // api@b ran r1: expected for r2 too, never reported
                "r2/prod missing PreviousRelease [complete=1,deployed=1,missing=1]",
                "r2/staging in_progress Reported [in_progress=1]",
            ]
        );
        let mut cfg = RollupsConfig::default();
        cfg.environments.insert(
            "staging".into(),
            RollupEnvironmentConfig {
                services: vec!["api".into()],
                sites: vec!["a".into(), "b".into()],
            },
        );
        assert_eq!(
            run(&keys[6..], &cfg),
            ["r2/staging missing Config [in_progress=1,missing=1]"]
        );
        let done = vec![
            (key("r3", "api", "staging", "a"), state("complete", 1)),
            (key("r3", "api", "staging", "b"), state("complete", 2)),
        ];
        assert_eq!(
            run(&done, &cfg),
            ["r3/staging complete complete Config [complete=2]"]
        );
    }
}
