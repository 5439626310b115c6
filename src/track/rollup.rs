//! Rollups: one per release × environment, across services and sites
//! (docs/api.md, docs/metrics.md). Derived from the tracker's keys, so they
//! need nothing stored: [`compute`] from scratch (the API, with a
//! partner's scope), [`Index`] kept up to date as keys change (the periodic
//! check, which must not walk 10,000 keys every 15 s).
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
use std::ops::Bound::{Excluded, Unbounded};
use std::sync::Arc;

use foldhash::{HashMap, HashSet};
use serde::Serialize;

use super::KeyState;
use crate::config::RollupsConfig;
use crate::event::{Key, NO_SERVICE, TimeMs};
use crate::model::Model;
use crate::sym::Sym;

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

/// One key of a group as the computation sees it.
#[derive(Clone, Copy)]
struct MemberRef<'a> {
    service: &'a str,
    site: &'a str,
    status: &'a str,
    entered_at: TimeMs,
}

/// Every rollup the keys make, sorted by (environment, release); `keep`
/// chooses the keys that count (a partner's scope, a release).
pub fn compute<'a>(
    keys: impl Iterator<Item = (&'a Key, &'a KeyState)>,
    model: &Model,
    cfg: &RollupsConfig,
    keep: impl Fn(&Key) -> bool,
) -> Vec<Rollup> {
    let mut groups: BTreeMap<(&'a str, &'a str), (Vec<MemberRef<'a>>, TimeMs)> = BTreeMap::new();
    for (k, ks) in keys {
        if !keep(k) {
            continue;
        }
        let g = groups
            .entry((k.environment.as_str(), k.release.as_str()))
            .or_insert_with(|| (Vec::new(), TimeMs::MAX));
        g.0.push(MemberRef {
            service: &k.service,
            site: &k.site,
            status: &ks.status,
            entered_at: ks.entered_at,
        });
        g.1 = g.1.min(ks.entered_at);
    }
    // Per environment, the releases in order of their earliest status.
    let mut by_env: BTreeMap<&str, Vec<(TimeMs, &str)>> = BTreeMap::new();
    for ((env, rel), (_, earliest)) in &groups {
        by_env.entry(env).or_default().push((*earliest, rel));
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
    groups
        .iter()
        .map(|((env, rel), (members, _))| {
            let prev = previous
                .get(&(*env, *rel))
                .map(|p| groups[&(*env, *p)].0.iter().copied());
            evaluate(env, members.iter().copied(), prev, model, cfg).to_rollup(env, rel)
        })
        .collect()
}

/// The target (service, site) pairs a group's keys make, with their
/// status, borrowed from the keys (nothing is copied to compute a rollup).
fn targets_of<'a>(
    members: impl Iterator<Item = MemberRef<'a>> + Clone,
) -> BTreeMap<(&'a str, &'a str), &'a str> {
    let has_services = members.clone().any(|m| m.service != NO_SERVICE);
    members
        .filter(|m| !has_services || m.service != NO_SERVICE)
        .map(|m| ((m.service, m.site), m.status))
        .collect()
}

/// A rollup as computed, its names borrowed from the keys and the
/// configuration: made into a [`Rollup`] (the API) or a [`Summary`] (the
/// periodic check) without a transient copy of every name.
struct Evaluated<'a> {
    targets: BTreeMap<(&'a str, &'a str), &'a str>,
    expected_from: ExpectedFrom,
    counts: BTreeMap<&'a str, u64>,
    status: &'a str,
    complete: bool,
    changed_at: TimeMs,
    first_complete_at: Option<TimeMs>,
}

impl Evaluated<'_> {
    fn to_rollup(&self, env: &str, rel: &str) -> Rollup {
        Rollup {
            release: rel.to_string(),
            environment: env.to_string(),
            status: self.status.to_string(),
            complete: self.complete,
            counts: self
                .counts
                .iter()
                .map(|(s, n)| (s.to_string(), *n))
                .collect(),
            expected_from: self.expected_from,
            targets: self
                .targets
                .iter()
                .map(|((service, site), status)| RollupTarget {
                    service: service.to_string(),
                    site: site.to_string(),
                    status: status.to_string(),
                })
                .collect(),
            changed_at: self.changed_at,
            first_complete_at: self.first_complete_at,
        }
    }
}

/// The rollup of one group, given the group before it in its environment.
fn evaluate<'a, I>(
    env: &str,
    members: I,
    prev: Option<I>,
    model: &Model,
    cfg: &'a RollupsConfig,
) -> Evaluated<'a>
where
    I: Iterator<Item = MemberRef<'a>> + Clone,
{
    let mut targets = targets_of(members.clone());
    let expected_from = if let Some(e) = cfg.environments.get(env) {
        let reported_services: BTreeSet<&str> = targets.keys().map(|(s, _)| *s).collect();
        let reported_sites: BTreeSet<&str> = targets.keys().map(|(_, s)| *s).collect();
        let services: Vec<&str> = if e.services.is_empty() {
            reported_services.into_iter().collect()
        } else {
            e.services.iter().map(String::as_str).collect()
        };
        let sites: Vec<&str> = if e.sites.is_empty() {
            reported_sites.into_iter().collect()
        } else {
            e.sites.iter().map(String::as_str).collect()
        };
        for &s in &services {
            for &site in &sites {
                targets.entry((s, site)).or_insert(MISSING);
            }
        }
        ExpectedFrom::Config
    } else {
        match prev {
            Some(prev) => {
                for t in targets_of(prev).into_keys() {
                    targets.entry(t).or_insert(MISSING);
                }
                ExpectedFrom::PreviousRelease
            }
            None => ExpectedFrom::Reported,
        }
    };
    let mut counts: BTreeMap<&str, u64> = BTreeMap::new();
    for st in targets.values() {
        *counts.entry(st).or_default() += 1;
    }
    let rank = |s: &str| model.index(s).map_or(0, |i| model.state(i).rank + 1);
    let status = targets
        .values()
        .copied()
        .min_by_key(|s| (rank(s), *s))
        .unwrap_or(MISSING);
    let complete = targets.values().all(|s| *s == "complete");
    let first_complete_at = members
        .clone()
        .filter(|m| m.status == "complete")
        .map(|m| m.entered_at)
        .min();
    Evaluated {
        targets,
        expected_from,
        counts,
        status,
        complete,
        changed_at: members.map(|m| m.entered_at).max().unwrap_or(0),
        first_complete_at,
    }
}

/// What the periodic check and the metrics need of one rollup (its targets
/// are rebuilt on demand: [`Index::rollup`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub release: Arc<str>,
    pub environment: Arc<str>,
    /// The least advanced status among the targets.
    pub status: Arc<str>,
    pub complete: bool,
    /// Number of targets per status (`missing` included), by status.
    pub counts: Box<[(Arc<str>, u64)]>,
    /// Number of targets.
    pub targets: u64,
    pub changed_at: TimeMs,
    pub first_complete_at: Option<TimeMs>,
}

/// One key of a group, its names the key's own (shared, not copied).
#[derive(Debug)]
struct Member {
    service: Sym,
    site: Sym,
    status: Sym,
    entered_at: TimeMs,
}

impl Member {
    fn as_ref(&self) -> MemberRef<'_> {
        MemberRef {
            service: &self.service,
            site: &self.site,
            status: &self.status,
            entered_at: self.entered_at,
        }
    }
}

/// The keys of one release in one environment.
#[derive(Debug, Default)]
struct Group {
    /// Sorted by (service, site); capacity kept exact (most groups hold a
    /// handful of keys, and an idle agent may hold 10,000 groups).
    members: Vec<Member>,
    /// The earliest `entered_at` under which the group sits in
    /// [`Env::order`] (none until first placed).
    placed: Option<TimeMs>,
    summary: Option<Arc<Summary>>,
}

#[derive(Debug, Default)]
struct Env {
    /// By release: the group's one copy of the release's name, shared by
    /// the order, the marks and the summary.
    groups: HashMap<Arc<str>, Group>,
    /// The releases in order of their earliest status: a release's
    /// expected targets may be those of the one before it.
    order: BTreeSet<(TimeMs, Arc<str>)>,
    /// Releases whose keys changed since the last refresh.
    dirty: HashSet<Arc<str>>,
}

/// The rollups of every key, kept as the keys change: [`Index::note`] and
/// [`Index::forget`] mark a key's group; [`Index::refresh`] recomputes the
/// marked groups and the ones whose previous release they may have changed
/// (the next release in their environment, before and after a group
/// moves), so the periodic check does not walk every key. Gives the same
/// rollups as [`compute`] over the same keys (tested).
///
/// The environments, services, sites and statuses it holds are the keys'
/// own [`Sym`]s (one shared copy each, process-wide); a release's name is
/// copied once, for its group.
#[derive(Debug, Default)]
pub struct Index {
    envs: HashMap<Sym, Env>,
    /// Environments with a marked group.
    dirty: HashSet<Sym>,
}

impl Index {
    /// `key` is (now) in `status` since `entered_at`.
    pub fn note(&mut self, key: &Key, status: &Sym, entered_at: TimeMs) {
        let (env, rel) = self.group_of(key, true);
        let Some(env) = env else { return };
        let e = self.envs.get_mut(&*env).expect("just made");
        let g = e.groups.get_mut(&*rel).expect("just made");
        let at = g
            .members
            .binary_search_by(|m| (&m.service, &m.site).cmp(&(&key.service, &key.site)));
        match at {
            Ok(i) => {
                let m = &mut g.members[i];
                if m.status == *status && m.entered_at == entered_at {
                    return;
                }
                if m.status != *status {
                    m.status = status.clone();
                }
                m.entered_at = entered_at;
            }
            Err(i) => {
                let m = Member {
                    service: key.service.clone(),
                    site: key.site.clone(),
                    status: status.clone(),
                    entered_at,
                };
                g.members.reserve_exact(1);
                g.members.insert(i, m);
            }
        }
        e.dirty.insert(rel);
        self.dirty.insert(env);
    }

    /// `key` is no longer tracked.
    pub fn forget(&mut self, key: &Key) {
        let (Some(env), rel) = self.group_of(key, false) else {
            return;
        };
        let Some(e) = self.envs.get_mut(&*env) else {
            return;
        };
        let Some(g) = e.groups.get_mut(&*rel) else {
            return;
        };
        if let Ok(i) = g
            .members
            .binary_search_by(|m| (&m.service, &m.site).cmp(&(&key.service, &key.site)))
        {
            g.members.remove(i);
            g.members.shrink_to_fit();
            e.dirty.insert(rel);
            self.dirty.insert(env);
        }
    }

    /// The (environment, release) names of `key`'s group, made if `make`
    /// (else the environment is `None` when there is no such group).
    fn group_of(&mut self, key: &Key, make: bool) -> (Option<Sym>, Arc<str>) {
        let env = &key.environment;
        if make && !self.envs.contains_key(env) {
            self.envs.insert(env.clone(), Env::default());
        }
        let Some(e) = self.envs.get_mut(env) else {
            return (None, Arc::from(""));
        };
        let rel = match e.groups.get_key_value(key.release.as_str()) {
            Some((k, _)) => Arc::clone(k),
            None if make => {
                let k: Arc<str> = Arc::from(key.release.as_str());
                e.groups.insert(Arc::clone(&k), Group::default());
                k
            }
            None => return (None, Arc::from("")),
        };
        (Some(env.clone()), rel)
    }

    /// Recomputes the marked groups and those after them; returns whether
    /// any rollup changed (or went away).
    pub fn refresh(&mut self, model: &Model, cfg: &RollupsConfig) -> bool {
        let mut changed = false;
        for env_name in std::mem::take(&mut self.dirty) {
            let Some(env) = self.envs.get_mut(&*env_name) else {
                continue;
            };
            let mut redo: HashSet<Arc<str>> = HashSet::default();
            for rel in std::mem::take(&mut env.dirty) {
                let Some(g) = env.groups.get_mut(&*rel) else {
                    continue;
                };
                // The release after this one loses (or changes) its
                // previous release when this one moves or goes.
                if let Some(old) = g.placed.take() {
                    let here = (old, Arc::clone(&rel));
                    if let Some((_, next)) = env.order.range((Excluded(&here), Unbounded)).next() {
                        redo.insert(Arc::clone(next));
                    }
                    env.order.remove(&here);
                }
                let Some(earliest) = g.members.iter().map(|m| m.entered_at).min() else {
                    env.groups.remove(&*rel);
                    changed = true;
                    continue;
                };
                g.placed = Some(earliest);
                let here = (earliest, Arc::clone(&rel));
                if let Some((_, next)) = env.order.range((Excluded(&here), Unbounded)).next() {
                    redo.insert(Arc::clone(next));
                }
                env.order.insert(here);
                redo.insert(rel);
            }
            for rel in redo {
                let Some(g) = env.groups.get(&*rel) else {
                    continue;
                };
                let earliest = g.placed.expect("placed above");
                let prev = env
                    .order
                    .range(..(earliest, Arc::clone(&rel)))
                    .next_back()
                    .and_then(|(_, p)| env.groups.get(&**p));
                let r = evaluate(
                    &env_name,
                    g.members.iter().map(Member::as_ref),
                    prev.map(|p| p.members.iter().map(Member::as_ref)),
                    model,
                    cfg,
                );
                let summary = Summary {
                    release: Arc::clone(&rel),
                    environment: env_name.to_arc(),
                    status: Sym::new(r.status).to_arc(),
                    complete: r.complete,
                    counts: r
                        .counts
                        .iter()
                        .map(|(s, n)| (Sym::new(s).to_arc(), *n))
                        .collect(),
                    targets: r.targets.len() as u64,
                    changed_at: r.changed_at,
                    first_complete_at: r.first_complete_at,
                };
                let g = env.groups.get_mut(&*rel).expect("present");
                if g.summary.as_deref() != Some(&summary) {
                    g.summary = Some(Arc::new(summary));
                    changed = true;
                }
            }
            if env.groups.is_empty() {
                self.envs.remove(&*env_name);
            }
        }
        changed
    }

    /// Every rollup's summary, as of the last refresh (unordered).
    pub fn summaries(&self) -> impl Iterator<Item = &Arc<Summary>> {
        self.envs
            .values()
            .flat_map(|e| e.groups.values())
            .filter_map(|g| g.summary.as_ref())
    }

    /// Whether a rollup exists, as of the last refresh.
    pub fn contains(&self, environment: &str, release: &str) -> bool {
        self.envs
            .get(environment)
            .and_then(|e| e.groups.get(release))
            .is_some_and(|g| g.summary.is_some())
    }

    /// One rollup in full, as of the last refresh.
    pub fn rollup(
        &self,
        environment: &str,
        release: &str,
        model: &Model,
        cfg: &RollupsConfig,
    ) -> Option<Rollup> {
        let env = self.envs.get(environment)?;
        let (rel, g) = env.groups.get_key_value(release)?;
        let earliest = g.placed?;
        let prev = env
            .order
            .range(..(earliest, Arc::clone(rel)))
            .next_back()
            .and_then(|(_, p)| env.groups.get(&**p))
            .map(|p| p.members.iter().map(Member::as_ref));
        let r = evaluate(
            environment,
            g.members.iter().map(Member::as_ref),
            prev,
            model,
            cfg,
        );
        Some(r.to_rollup(environment, release))
    }

    /// Every rollup in full, sorted by (environment, release), as of the
    /// last refresh: what [`compute`] gives over the same keys.
    pub fn rollups(&self, model: &Model, cfg: &RollupsConfig) -> Vec<Rollup> {
        let mut ids: Vec<(&str, &str)> = self
            .envs
            .iter()
            .flat_map(|(e, env)| env.groups.keys().map(move |r| (&**e, &**r)))
            .collect();
        ids.sort();
        ids.into_iter()
            .filter_map(|(e, r)| self.rollup(e, r, model, cfg))
            .collect()
    }
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

    pub(super) fn state(status: &str, at: TimeMs) -> KeyState {
        KeyState {
            status: status.into(),
            entered_at: at,
            max_time: at,
            max_rank: 0,
            max_id: None,
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

#[cfg(test)]
mod incremental_tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::tests::state;
    use super::*;
    use crate::config::RollupEnvironmentConfig;

    /// One change to the keys: `None` status forgets the key.
    type Op = (u8, u8, u8, u8, Option<u8>, i64, bool);

    const STATUSES: [&str; 6] = [
        "scheduled",
        "in_progress",
        "deployed",
        "complete",
        "failed",
        "retired", // outside the model (a config change)
    ];

    fn ops() -> impl Strategy<Value = Vec<Op>> {
        proptest::collection::vec(
            (
                0..5u8,                                   // release
                0..4u8,                                   // service (3: release-wide)
                0..2u8,                                   // environment
                0..3u8,                                   // site
                proptest::option::weighted(0.85, 0..6u8), // status, or forgotten
                0..40i64,                                 // entered_at: ties and reorders
                proptest::bool::weighted(0.3),            // refresh after it
            ),
            1..60,
        )
    }

    /// Applies `ops` to a key table and to an index refreshed now and then;
    /// after every refresh the index holds what a full recompute gives.
    fn check(ops: Vec<Op>, cfg: &RollupsConfig) -> Result<(), TestCaseError> {
        let model = Model::builtin();
        let mut keys: BTreeMap<Key, KeyState> = BTreeMap::new();
        let mut index = Index::default();
        let n = ops.len();
        for (i, (r, s, e, site, status, at, refresh)) in ops.into_iter().enumerate() {
            let key = Key {
                release: format!("r{r}"),
                service: if s == 3 {
                    NO_SERVICE.into()
                } else {
                    format!("s{s}").into()
                },
                environment: ["dev", "prod"][e as usize].into(),
                site: ["", "a", "b"][site as usize].into(),
            };
            match status {
                Some(st) => {
                    let st = STATUSES[st as usize];
                    keys.insert(key.clone(), state(st, at));
                    index.note(&key, &st.into(), at);
                }
                None => {
                    keys.remove(&key);
                    index.forget(&key);
                }
            }
            if refresh || i + 1 == n {
                index.refresh(&model, cfg);
                let want = compute(keys.iter(), &model, cfg, |_| true);
                prop_assert_eq!(&index.rollups(&model, cfg), &want);
                let mut got: Vec<Summary> = index.summaries().map(|s| (**s).clone()).collect();
                got.sort_by(|a, b| (&a.environment, &a.release).cmp(&(&b.environment, &b.release)));
                prop_assert_eq!(got.len(), want.len());
                for (g, w) in got.iter().zip(&want) {
                    prop_assert_eq!(&*g.release, w.release.as_str());
                    prop_assert_eq!(&*g.environment, w.environment.as_str());
                    prop_assert_eq!(&*g.status, w.status.as_str());
                    prop_assert_eq!(g.complete, w.complete);
                    prop_assert_eq!(g.targets, w.targets.len() as u64);
                    prop_assert_eq!(g.changed_at, w.changed_at);
                    prop_assert_eq!(g.first_complete_at, w.first_complete_at);
                    let counts: Vec<(String, u64)> =
                        g.counts.iter().map(|(s, n)| (s.to_string(), *n)).collect();
                    let want_counts: Vec<(String, u64)> =
                        w.counts.iter().map(|(s, n)| (s.clone(), *n)).collect();
                    prop_assert_eq!(counts, want_counts);
                }
            }
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Expected targets from the previous release (every environment).
        #[test]
        fn incremental_rollups_equal_a_full_recompute(ops in ops()) {
            check(ops, &RollupsConfig::default())?;
        }

        /// `prod`'s expected targets configured, `dev`'s from the previous
        /// release.
        #[test]
        fn incremental_rollups_equal_a_full_recompute_with_expected_targets(ops in ops()) {
            let mut cfg = RollupsConfig::default();
            cfg.environments.insert(
                "prod".into(),
                RollupEnvironmentConfig {
                    services: vec!["s0".into(), "s1".into()],
                    sites: vec![],
                },
            );
            check(ops, &cfg)?;
        }
    }

    /// The index holds the key's own names (one shared copy, not a copy
    /// each), and nothing of a release once its keys are forgotten.
    #[test]
    fn the_index_shares_the_keys_names() {
        let model = Model::builtin();
        let cfg = RollupsConfig::default();
        let mut index = Index::default();
        let k = |i: usize| Key {
            release: format!("r{i}"),
            service: format!("s{i}").into(),
            environment: "prod".into(),
            site: "".into(),
        };
        let deployed = Sym::new("deployed");
        let keys: Vec<Key> = (0..500).map(k).collect();
        for (i, key) in keys.iter().enumerate() {
            index.note(key, &deployed, i as TimeMs);
        }
        index.refresh(&model, &cfg);
        // (Compared with what was noted, not with a fresh `Sym`: the
        // process-wide table is shared by parallel tests.)
        let e = &index.envs["prod"];
        let m = &e.groups["r7"].members[0];
        assert!(Sym::ptr_eq(&m.service, &keys[7].service));
        assert!(Sym::ptr_eq(&m.site, &keys[7].site));
        assert!(Sym::ptr_eq(&m.status, &deployed));
        let (env, _) = index.envs.get_key_value("prod").unwrap();
        assert!(Sym::ptr_eq(env, &keys[0].environment));
        let s = e.groups["r7"].summary.as_ref().unwrap();
        assert!(Arc::ptr_eq(&s.environment, &env.to_arc()));
        // One copy of a release's name, in its group, its order and summary.
        let (rel, _) = e.groups.get_key_value("r7").unwrap();
        assert!(Arc::ptr_eq(rel, &s.release));
        for i in 1..500 {
            index.forget(&k(i));
        }
        index.refresh(&model, &cfg);
        let e = &index.envs["prod"];
        assert_eq!(e.groups.len(), 1);
        assert_eq!(e.order.len(), 1);
        let r0 = index.rollup("prod", "r0", &model, &cfg).unwrap();
        assert_eq!(r0.targets[0].service, "s0");
        index.forget(&k(0));
        index.refresh(&model, &cfg);
        assert!(index.envs.is_empty() && index.summaries().next().is_none());
    }

    /// A refresh with nothing changed recomputes nothing and says so; a
    /// change to one release recomputes it and the release after it.
    #[test]
    fn a_refresh_without_changes_changes_nothing() {
        let model = Model::builtin();
        let cfg = RollupsConfig::default();
        let mut index = Index::default();
        let k = |r: &str, s: &str| Key {
            release: r.into(),
            service: s.into(),
            environment: "prod".into(),
            site: "".into(),
        };
        let (complete, deployed) = (Sym::new("complete"), Sym::new("deployed"));
        index.note(&k("r1", "api"), &complete, 10);
        index.note(&k("r2", "web"), &deployed, 20);
        assert!(index.refresh(&model, &cfg));
        assert!(!index.refresh(&model, &cfg));
        // the same status again: no change
        index.note(&k("r1", "api"), &complete, 10);
        assert!(!index.refresh(&model, &cfg));
        // r1 gains a target: r2 now expects it too (missing)
        index.note(&k("r1", "db"), &complete, 11);
        assert!(index.refresh(&model, &cfg));
        let r2 = index.rollup("prod", "r2", &model, &cfg).unwrap();
        assert_eq!(r2.counts.get(MISSING), Some(&2));
    }
}
