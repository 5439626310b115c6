//! The status model (docs/events.md): states with their rank, allowed next
//! states, terminal flag and stuck threshold, plus the gate, roles and
//! permissions. Built once from `[model]` on top of the built-in table;
//! the `[model]` structures ([`ModelConfig`] ...) live here too, and
//! `config` re-exports them.
//!
//! States are addressed by [`StateIdx`], their position in rank order, so
//! comparing two indices compares ranks.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde::Deserialize;

/// Position of a state in rank order (0 = lowest rank).
pub type StateIdx = u16;

#[derive(Debug, Clone)]
pub struct State {
    pub id: String,
    pub display: String,
    pub rank: u32,
    pub next: Vec<StateIdx>,
    pub terminal: bool,
    pub stuck_after: Option<Duration>,
}

/// Who may move a key into which statuses, with roles already expanded.
#[derive(Debug, Clone)]
pub struct Permission {
    pub into: Vec<StateIdx>,
    /// Empty = every environment.
    pub environments: Vec<String>,
    pub allow: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Model {
    states: Vec<State>,
    by_id: HashMap<String, StateIdx>,
    pub gate: Option<GateConfig>,
    pub permissions: Vec<Permission>,
    /// `[model.identities]`, inverted: `source:actor` (or a bare actor,
    /// any source) -> the person.
    identities: HashMap<String, String>,
    /// `[model.promotion]`: the order environments are promoted in.
    pub promotion: Option<PromotionConfig>,
    /// `[model.environments.<name>] stuck_after`: per environment, the
    /// states whose threshold differs from the state's (None: cleared).
    env_stuck: HashMap<String, HashMap<StateIdx, Option<Duration>>>,
}

/// One row of the built-in table: (id, display, next, terminal, stuck_after in hours).
type BuiltinState = (
    &'static str,
    &'static str,
    &'static [&'static str],
    bool,
    Option<u64>,
);

/// The built-in table of docs/events.md, in rank order.
const BUILTIN: &[BuiltinState] = &[
    (
        "scheduled",
        "Scheduled",
        &[
            "rescheduled",
            "in_test",
            "approved",
            "in_progress",
            "deployed",
            "failed",
            "cancelled",
        ],
        false,
        None,
    ),
    (
        "rescheduled",
        "Re-Scheduled",
        &[
            "scheduled",
            "in_test",
            "approved",
            "in_progress",
            "failed",
            "cancelled",
        ],
        false,
        Some(72),
    ),
    (
        "in_test",
        "In Test",
        &[
            "approved",
            "in_progress",
            "deployed",
            "failed",
            "paused",
            "rescheduled",
            "cancelled",
        ],
        false,
        Some(24),
    ),
    (
        "approved",
        "Approved",
        &[
            "in_progress",
            "deployed",
            "failed",
            "rescheduled",
            "cancelled",
        ],
        false,
        None,
    ),
    (
        "in_progress",
        "In Progress",
        &["deployed", "failed", "paused", "rolled_back", "cancelled"],
        false,
        Some(1),
    ),
    (
        "paused",
        "Paused",
        &[
            "in_progress",
            "deployed",
            "failed",
            "rolled_back",
            "cancelled",
        ],
        false,
        Some(4),
    ),
    (
        "deployed",
        "Deployed",
        &["complete", "in_progress", "failed", "rolled_back"],
        false,
        None,
    ),
    (
        "failed",
        "Failed",
        &["rolled_back", "in_progress", "scheduled", "cancelled"],
        false,
        Some(4),
    ),
    ("complete", "Complete", &[], true, None),
    ("rolled_back", "Rolled Back", &[], true, None),
    ("cancelled", "Cancelled", &[], true, None),
];

/// A problem building the model: the key path under `model` and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelProblem {
    pub key: String,
    pub message: String,
}

/// Intermediate, string-keyed form used while merging overrides.
struct Draft {
    display: String,
    rank: u32,
    next: Vec<String>,
    terminal: bool,
    stuck_after: Option<Duration>,
}

impl Model {
    /// The built-in model of docs/events.md.
    pub fn builtin() -> Model {
        Model::from_config(&ModelConfig::default()).expect("built-in model is valid")
    }

    /// Builds the model from `[model]`, reporting every problem.
    pub fn from_config(cfg: &ModelConfig) -> Result<Model, Vec<ModelProblem>> {
        let mut problems = Vec::new();
        let mut drafts: BTreeMap<String, Draft> = BTreeMap::new();
        if cfg.builtin {
            for (i, (id, display, next, terminal, stuck)) in BUILTIN.iter().enumerate() {
                drafts.insert(
                    id.to_string(),
                    Draft {
                        display: display.to_string(),
                        rank: (i as u32 + 1) * 10,
                        next: next.iter().map(|s| s.to_string()).collect(),
                        terminal: *terminal,
                        stuck_after: stuck.map(|h| Duration::from_secs(h * 3600)),
                    },
                );
            }
        }
        let mut next_rank = drafts.values().map(|d| d.rank).max().unwrap_or(0) + 10;
        for (id, over) in &cfg.states {
            let key = format!("model.states.{id}");
            if !valid_state_id(id) {
                problems.push(ModelProblem {
                    key: key.clone(),
                    message: format!(
                        "state id {id:?} must be lower-case letters, digits and '_' (it becomes a label value)"
                    ),
                });
            }
            let draft = drafts.entry(id.clone()).or_insert_with(|| {
                let d = Draft {
                    display: id.clone(),
                    rank: next_rank,
                    next: Vec::new(),
                    terminal: false,
                    stuck_after: None,
                };
                next_rank += 10;
                d
            });
            if let Some(d) = &over.display {
                draft.display = d.clone();
            }
            if let Some(r) = over.rank {
                draft.rank = r;
            }
            if let Some(n) = &over.next {
                draft.next = n.clone();
            }
            if let Some(t) = over.terminal {
                draft.terminal = t;
            }
            if let Some(s) = &over.stuck_after {
                let s = s.trim();
                if s.is_empty() || s == "none" {
                    draft.stuck_after = None;
                } else {
                    match crate::event::parse_duration(s) {
                        Ok(d) => draft.stuck_after = Some(d),
                        Err(e) => problems.push(ModelProblem {
                            key: format!("{key}.stuck_after"),
                            message: e,
                        }),
                    }
                }
            }
        }
        if drafts.is_empty() {
            problems.push(ModelProblem {
                key: "model.builtin".into(),
                message: "builtin = false and no [model.states.X]: the model has no states".into(),
            });
        }
        // Rank order, ties broken by id so the order is total and stable.
        let mut ordered: Vec<(&String, &Draft)> = drafts.iter().collect();
        ordered.sort_by(|a, b| a.1.rank.cmp(&b.1.rank).then_with(|| a.0.cmp(b.0)));
        let by_id: HashMap<String, StateIdx> = ordered
            .iter()
            .enumerate()
            .map(|(i, (id, _))| ((*id).clone(), i as StateIdx))
            .collect();
        let mut states = Vec::with_capacity(ordered.len());
        for (id, d) in &ordered {
            let mut next = Vec::new();
            for n in &d.next {
                match by_id.get(n) {
                    Some(i) => next.push(*i),
                    None => problems.push(ModelProblem {
                        key: format!("model.states.{id}.next"),
                        message: format!(
                            "transition to undefined state {n:?}; defined states: {}",
                            ordered
                                .iter()
                                .map(|(i, _)| i.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    }),
                }
            }
            if d.terminal && !d.next.is_empty() {
                problems.push(ModelProblem {
                    key: format!("model.states.{id}.next"),
                    message: "a terminal state cannot have next states".into(),
                });
            }
            states.push(State {
                id: (*id).clone(),
                display: d.display.clone(),
                rank: d.rank,
                next,
                terminal: d.terminal,
                stuck_after: d.stuck_after,
            });
        }
        let mut model = Model {
            states,
            by_id,
            gate: cfg.gate.clone(),
            permissions: Vec::new(),
            identities: HashMap::new(),
            promotion: cfg.promotion.clone(),
            env_stuck: HashMap::new(),
        };
        for (person, ids) in &cfg.identities {
            for id in ids {
                if id.trim().is_empty() {
                    problems.push(ModelProblem {
                        key: format!("model.identities.{person}"),
                        message: "an empty identity".into(),
                    });
                    continue;
                }
                if let Some(other) = model.identities.insert(id.clone(), person.clone())
                    && other != *person
                {
                    problems.push(ModelProblem {
                        key: format!("model.identities.{person}"),
                        message: format!("{id:?} is also an identity of {other:?}"),
                    });
                }
            }
        }
        for (env, e) in &cfg.environments {
            let mut over = HashMap::new();
            for (state, v) in &e.stuck_after {
                let key = format!("model.environments.{env}.stuck_after.{state}");
                let Some(ix) = model.index(state) else {
                    problems.push(ModelProblem {
                        key,
                        message: format!("unknown state {state:?}"),
                    });
                    continue;
                };
                let v = v.trim();
                if v.is_empty() || v == "none" {
                    over.insert(ix, None);
                } else {
                    match crate::event::parse_duration(v) {
                        Ok(d) => {
                            over.insert(ix, Some(d));
                        }
                        Err(message) => problems.push(ModelProblem { key, message }),
                    }
                }
            }
            model.env_stuck.insert(env.clone(), over);
        }
        if let Some(promo) = &cfg.promotion {
            if promo.order.len() < 2 {
                problems.push(ModelProblem {
                    key: "model.promotion.order".into(),
                    message: "a promotion order needs at least two environments".into(),
                });
            }
            for (i, e) in promo.order.iter().enumerate() {
                if e.trim().is_empty() {
                    problems.push(ModelProblem {
                        key: format!("model.promotion.order[{i}]"),
                        message: "an environment name cannot be empty".into(),
                    });
                } else if promo.order[..i].contains(e) {
                    problems.push(ModelProblem {
                        key: format!("model.promotion.order[{i}]"),
                        message: format!("environment {e:?} is listed twice"),
                    });
                }
            }
            if promo.window.is_zero() {
                problems.push(ModelProblem {
                    key: "model.promotion.window".into(),
                    message: "window must be longer than 0".into(),
                });
            }
        }
        if let Some(gate) = &cfg.gate {
            if gate.environments.is_empty() {
                problems.push(ModelProblem {
                    key: "model.gate.environments".into(),
                    message: "a gate needs at least one environment".into(),
                });
            }
            if gate.approval_sources.is_empty() {
                problems.push(ModelProblem {
                    key: "model.gate.approval_sources".into(),
                    message: "a gate needs at least one approval source".into(),
                });
            }
            if model.index("approved").is_none() {
                problems.push(ModelProblem {
                    key: "model.gate".into(),
                    message: "a gate needs an `approved` state in the model".into(),
                });
            }
        }
        for (i, p) in cfg.permissions.iter().enumerate() {
            let key = format!("model.permissions[{i}]");
            let mut into = Vec::new();
            for s in &p.into {
                match model.index(s) {
                    Some(ix) => into.push(ix),
                    None => problems.push(ModelProblem {
                        key: format!("{key}.into"),
                        message: format!("unknown state {s:?}"),
                    }),
                }
            }
            let mut allow = Vec::new();
            for a in &p.allow {
                if let Some(role) = a.strip_prefix('@') {
                    match cfg.roles.get(role) {
                        Some(members) => allow.extend(members.iter().cloned()),
                        None => problems.push(ModelProblem {
                            key: format!("{key}.allow"),
                            message: format!(
                                "unknown role {a:?}; define it under [model.roles] as {role} = [...]"
                            ),
                        }),
                    }
                } else {
                    allow.push(a.clone());
                }
            }
            model.permissions.push(Permission {
                into,
                environments: p.environments.clone(),
                allow,
            });
        }
        if problems.is_empty() {
            Ok(model)
        } else {
            Err(problems)
        }
    }

    pub fn index(&self, id: &str) -> Option<StateIdx> {
        self.by_id.get(id).copied()
    }

    pub fn state(&self, i: StateIdx) -> &State {
        &self.states[i as usize]
    }

    pub fn id(&self, i: StateIdx) -> &str {
        &self.states[i as usize].id
    }

    pub fn states(&self) -> &[State] {
        &self.states
    }

    /// Whether `from -> to` is an allowed transition.
    pub fn allows(&self, from: StateIdx, to: StateIdx) -> bool {
        self.states[from as usize].next.contains(&to)
    }

    /// The stuck threshold of state `i` in `environment`: the
    /// environment's override, else the state's.
    pub fn stuck_after(&self, i: StateIdx, environment: &str) -> Option<Duration> {
        match self.env_stuck.get(environment).and_then(|m| m.get(&i)) {
            Some(over) => *over,
            None => self.states[i as usize].stuck_after,
        }
    }

    pub fn is_terminal(&self, i: StateIdx) -> bool {
        self.states[i as usize].terminal
    }

    /// The person behind `actor` as seen by `source` (`[model.identities]`:
    /// `source:actor` first, then a bare `actor`); an unmapped identity is
    /// itself.
    pub fn person<'a>(&'a self, source: &str, actor: &'a str) -> &'a str {
        self.identities
            .get(&format!("{source}:{actor}"))
            .or_else(|| self.identities.get(actor))
            .map_or(actor, String::as_str)
    }
}

/// Statuses that are decisions of the gate's approvals ledger and not
/// states of the model: an approval source's rejection or revocation
/// (its approval is the model's `approved`).
pub const LEDGER_DECISIONS: &[&str] = &["rejected", "revoked"];

/// State ids become label values and store keys: keep them simple.
pub fn valid_state_id(id: &str) -> bool {
    !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// `[model]`: the status model (docs/events.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Start from the built-in model (true) or an empty one.
    #[serde(default = "default_true")]
    pub builtin: bool,
    /// Add states or override fields of built-in ones.
    #[serde(default)]
    pub states: BTreeMap<String, StateConfig>,
    /// `[model.gate]`: the approval gate; none by default.
    #[serde(default)]
    pub gate: Option<GateConfig>,
    /// Role name -> actors.
    #[serde(default)]
    pub roles: BTreeMap<String, Vec<String>>,
    /// `[[model.permissions]]`: who may move keys into which statuses.
    #[serde(default)]
    pub permissions: Vec<PermissionConfig>,
    /// `[model.promotion]`: the order environments are promoted in; none by
    /// default (skipped_stage then finds nothing).
    #[serde(default)]
    pub promotion: Option<PromotionConfig>,
    /// `[model.environments.<name>]`: per-environment overrides.
    #[serde(default)]
    pub environments: BTreeMap<String, EnvironmentConfig>,
    /// `[model.identities]`: person -> the identities that are that person
    /// in each tool (`source:actor`, or a bare actor for any source), for
    /// `[model.gate] require_distinct_approver`.
    #[serde(default)]
    pub identities: BTreeMap<String, Vec<String>>,
}

/// `[model.environments.<name>]`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct EnvironmentConfig {
    /// State id -> stuck threshold in this environment (a duration, or ""
    /// / "none" for none), overriding the state's `stuck_after`.
    #[serde(default)]
    pub stuck_after: BTreeMap<String, String>,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            builtin: true,
            states: BTreeMap::new(),
            gate: None,
            roles: BTreeMap::new(),
            permissions: Vec::new(),
            promotion: None,
            environments: BTreeMap::new(),
            identities: BTreeMap::new(),
        }
    }
}

fn default_true() -> bool {
    true
}

/// `[model.states.X]`: every field optional so it can override one field of a
/// built-in state.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct StateConfig {
    /// Human name; a new state defaults to its id.
    #[serde(default)]
    pub display: Option<String>,
    /// Position in the ordering of simultaneous events; new states default
    /// to after every existing one.
    #[serde(default)]
    pub rank: Option<u32>,
    /// The states this one may move to.
    #[serde(default)]
    pub next: Option<Vec<String>>,
    /// A terminal state finishes the key; it has no next states.
    #[serde(default)]
    pub terminal: Option<bool>,
    /// A duration, or "" / "none" to clear a built-in threshold.
    #[serde(default)]
    pub stuck_after: Option<String>,
}

/// `[model.gate]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GateConfig {
    /// The gated environments.
    pub environments: Vec<String>,
    /// Sources whose `approved` events count; sources of this agent.
    pub approval_sources: Vec<String>,
    /// How late (event time) an approval may come after the attempt.
    #[serde(default = "default_grace", deserialize_with = "humantime")]
    pub grace: Duration,
    /// Which environments an approval opens: every one (`release_wide`,
    /// the default) or only its own (`per_environment`; an approval for
    /// environment `-` still opens every one).
    #[serde(default)]
    pub approvals: ApprovalScope,
    /// Four eyes: an approval by the person who deploys does not count.
    #[serde(default)]
    pub require_distinct_approver: bool,
}

/// `[model.gate] approvals`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalScope {
    #[default]
    ReleaseWide,
    PerEnvironment,
}

/// A humantime duration (`90s`, `2h`) in the configuration.
fn humantime<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    crate::event::parse_duration(&s).map_err(serde::de::Error::custom)
}

fn default_grace() -> Duration {
    Duration::from_secs(120)
}

/// `[model.promotion]`: environments in promotion order; a deployment to
/// one needs the same version (or commit, or release) deployed or complete
/// in the one before it, for the same service and site, within `window`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromotionConfig {
    /// Environments, first to last (e.g. dev, staging, production).
    pub order: Vec<String>,
    /// How far back (event time) the previous stage's deployment counts.
    #[serde(default = "default_promotion_window", deserialize_with = "humantime")]
    pub window: Duration,
    /// What makes two deployments the same change: `version` (default),
    /// `commit` or `release`.
    #[serde(default, rename = "match")]
    pub match_by: PromotionMatch,
}

/// What `[model.promotion]` compares across environments.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PromotionMatch {
    #[default]
    Version,
    Commit,
    Release,
}

fn default_promotion_window() -> Duration {
    Duration::from_secs(14 * 86_400)
}

/// `[[model.permissions]]`: who may move a key into some statuses.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PermissionConfig {
    /// The statuses this entry restricts.
    pub into: Vec<String>,
    /// Empty = every environment.
    #[serde(default)]
    pub environments: Vec<String>,
    /// Actors, or `@role`.
    pub allow: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_matches_the_spec_table() {
        let m = Model::builtin();
        let ids: Vec<&str> = m.states().iter().map(|s| s.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "scheduled",
                "rescheduled",
                "in_test",
                "approved",
                "in_progress",
                "paused",
                "deployed",
                "failed",
                "complete",
                "rolled_back",
                "cancelled"
            ]
        );
        let ix = |s| m.index(s).unwrap();
        assert!(m.allows(ix("scheduled"), ix("deployed")));
        assert!(!m.allows(ix("deployed"), ix("in_test")));
        assert!(m.allows(ix("failed"), ix("in_progress")));
        assert!(!m.allows(ix("complete"), ix("failed")));
        assert!(m.is_terminal(ix("rolled_back")));
        assert_eq!(
            m.state(ix("in_progress")).stuck_after,
            Some(Duration::from_secs(3600))
        );
        assert_eq!(m.state(ix("approved")).stuck_after, None);
    }

    #[test]
    fn overrides_merge_into_builtin_and_new_states_are_appended() {
        let mut cfg = ModelConfig::default();
        cfg.states.insert(
            "in_progress".into(),
            StateConfig {
                stuck_after: Some("2h".into()),
                ..Default::default()
            },
        );
        cfg.states.insert(
            "verified".into(),
            StateConfig {
                next: Some(vec!["complete".into()]),
                ..Default::default()
            },
        );
        let m = Model::from_config(&cfg).unwrap();
        let ip = m.index("in_progress").unwrap();
        assert_eq!(m.state(ip).stuck_after, Some(Duration::from_secs(7200)));
        let v = m.index("verified").unwrap();
        assert_eq!(v as usize, m.states().len() - 1);
        assert!(m.allows(v, m.index("complete").unwrap()));
    }

    #[test]
    fn problems_name_the_key() {
        let mut cfg = ModelConfig::default();
        cfg.states.insert(
            "deployed".into(),
            StateConfig {
                next: Some(vec!["verifyed".into()]),
                ..Default::default()
            },
        );
        let errs = Model::from_config(&cfg).unwrap_err();
        assert_eq!(errs[0].key, "model.states.deployed.next");
        assert!(errs[0].message.contains("verifyed"));
    }

    /// `[model.identities]`: `source:actor` first, then a bare actor; an
    /// unmapped identity is itself; one identity under two persons is
    /// refused.
    #[test]
    fn identities_map_tool_accounts_to_one_person() {
        let parse = |t: &str| -> ModelConfig { toml::from_str(t).unwrap() };
        let m = Model::from_config(&parse(
            "[identities]\nalice = [\"jira:5b10ac8d\", \"ci:alice-ci\", \"al\"]\n",
        ))
        .unwrap();
        assert_eq!(m.person("jira", "5b10ac8d"), "alice");
        assert_eq!(m.person("ci", "alice-ci"), "alice");
        assert_eq!(m.person("github", "al"), "alice");
        // the identity is per tool: the same account name elsewhere is not her
        assert_eq!(m.person("github", "5b10ac8d"), "5b10ac8d");
        assert_eq!(m.person("ci", "bob"), "bob");
        let errs = Model::from_config(&parse(
            "[identities]\nalice = [\"ci:x\"]\nbob = [\"ci:x\", \"\"]\n",
        ))
        .unwrap_err();
        let msgs: Vec<String> = errs
            .iter()
            .map(|e| format!("{}: {}", e.key, e.message))
            .collect();
        assert_eq!(
            msgs,
            [
                "model.identities.bob: \"ci:x\" is also an identity of \"alice\"",
                "model.identities.bob: an empty identity",
            ]
        );
    }

    #[test]
    fn promotion_problems_name_the_key() {
        let parse = |t: &str| -> ModelConfig { toml::from_str(t).unwrap() };
        let cfg = parse("[promotion]\norder = [\"staging\", \"\", \"staging\"]\nwindow = \"0s\"\n");
        let errs = Model::from_config(&cfg).unwrap_err();
        let keys: Vec<&str> = errs.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "model.promotion.order[1]",
                "model.promotion.order[2]",
                "model.promotion.window"
            ]
        );
        let errs = Model::from_config(&parse("[promotion]\norder = [\"prod\"]\n")).unwrap_err();
        assert_eq!(errs[0].key, "model.promotion.order");
        let m = Model::from_config(&parse(
            "[promotion]\norder = [\"staging\", \"prod\"]\nmatch = \"commit\"\n",
        ))
        .unwrap();
        let p = m.promotion.unwrap();
        assert_eq!(p.match_by, PromotionMatch::Commit);
        assert_eq!(p.window, Duration::from_secs(14 * 86_400));
        assert!(
            toml::from_str::<ModelConfig>("[promotion]\norder = []\nmatch = \"sha\"\n").is_err()
        );
    }

    #[test]
    fn stuck_after_per_environment_overrides_the_state() {
        let cfg: ModelConfig = toml::from_str(
            "[environments.prod]\nstuck_after = { in_progress = \"30m\", deployed = \"none\" }\n",
        )
        .unwrap();
        let m = Model::from_config(&cfg).unwrap();
        let ix = |s| m.index(s).unwrap();
        assert_eq!(
            m.stuck_after(ix("in_progress"), "prod"),
            Some(Duration::from_secs(1800))
        );
        assert_eq!(
            m.stuck_after(ix("in_progress"), "staging"),
            Some(Duration::from_secs(3600))
        );
        assert_eq!(m.stuck_after(ix("deployed"), "prod"), None);
        let cfg: ModelConfig =
            toml::from_str("[environments.prod]\nstuck_after = { in_progres = \"30m\" }\n")
                .unwrap();
        let errs = Model::from_config(&cfg).unwrap_err();
        assert_eq!(
            errs[0].key,
            "model.environments.prod.stuck_after.in_progres"
        );
    }
}
