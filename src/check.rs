//! check-config: the semantic validation of a parsed configuration, every
//! problem at once, each with the file, line and key it concerns, and a
//! message that says what to do. [`warnings`] reports what is allowed but
//! probably not meant; [`load`] is the one way the agent reads a config
//! (parse, then validate).
//!
//! It sits above the modules whose closed lists it reads (the tool registry,
//! the canonical fields, the SIEM facilities, the status model), so that
//! each list has one owner and [`crate::config`] (the configuration's shape)
//! imports none of them.

use std::collections::HashSet;
use std::str::FromStr;

use crate::config::{
    FreezeWindowConfig, LineFormat, Loaded, Problem, SiemConfig, SiemTransport, SourceConfig,
    SourceType, locate,
};
use crate::model::Model;
use crate::sinks::siem::format::{FACILITIES, facility_code};
use crate::sources::fields::Field;
use crate::sources::presets::registry;

const WEEKDAYS: &[&str] = &["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// Reads, parses and validates a config (or the built-in defaults), and
/// resolves the host name once (everything after reads `[agent] hostname`).
pub fn load(path: Option<&std::path::Path>) -> Result<Loaded, crate::config::ConfigError> {
    let mut loaded = crate::config::read(path)?;
    let problems = validate(&loaded);
    if problems.is_empty() {
        let agent = &mut loaded.config.agent;
        agent
            .hostname
            .get_or_insert_with(crate::config::system_hostname);
        Ok(loaded)
    } else {
        Err(crate::config::ConfigError::Invalid(problems))
    }
}

/// Every problem found in `loaded`; empty when the config is usable. Problems
/// come in the order of their lines, so they read top to bottom.
pub fn validate(loaded: &Loaded) -> Vec<Problem> {
    let mut v = Validator {
        loaded,
        problems: Vec::new(),
    };
    let model = match Model::from_config(&loaded.config.model) {
        Ok(m) => Some(m),
        Err(errs) => {
            for e in errs {
                v.push(&e.key, e.message);
            }
            None
        }
    };
    v.agent();
    v.sources(model.as_ref());
    if loaded.config.agent.max_open_files == 0 {
        v.push(
            "agent.max_open_files",
            "max_open_files must be at least 1 (the default is 256): it is how many tailed \
             files may be open at once",
        );
    }
    v.tracking();
    v.http();
    if let Some(siem) = &loaded.config.siem {
        v.siem(siem);
    }
    v.spool();
    v.gate();
    v.anomalies();
    v.readiness();
    if let Some(n) = &loaded.config.notify {
        v.notify(n, model.as_ref());
    }
    let mut problems = v.problems;
    // Stable: problems on one line keep the order they were found in.
    problems.sort_by_key(|p| p.line.unwrap_or(usize::MAX));
    problems
}

/// Findings that do not stop the agent but are probably not what was meant;
/// `check-config` prints them.
pub fn warnings(loaded: &Loaded) -> Vec<Problem> {
    let mut out = Vec::new();
    match &loaded.config.model.gate {
        None => out.push(problem_at(
            loaded,
            "model.gate",
            "no [model.gate]: the approval gate is off, production deployments are not checked \
             for approval; add [model.gate] with environments = [\"production\"] and the \
             approval_sources that record approvals",
        )),
        Some(g) if !g.environments.iter().any(|e| e == "production") => out.push(problem_at(
            loaded,
            "model.gate.environments",
            "the gate does not list \"production\": the gate is off for production; add it \
             to environments if production deployments need an approval",
        )),
        Some(_) => {}
    }
    // A preset whose tool does not always name an environment, with no
    // default: those payloads come out `invalid` (kept as dead letters).
    for (i, src) in loaded.config.sources.iter().enumerate() {
        if !matches!(src.kind, SourceType::Webhook | SourceType::Poll) {
            continue;
        }
        let Some(tool) = src.preset.as_deref().and_then(registry::tool) else {
            continue;
        };
        let supplied = tool.environment_always
            || tool
                .preset
                .fallbacks
                .iter()
                .any(|(f, _)| *f == "environment")
            || src
                .defaults
                .get("environment")
                .is_some_and(|v| !v.is_empty())
            || src.fields.contains_key("environment");
        if !supplied {
            out.push(problem_at(
                loaded,
                &format!("sources[{i}].defaults"),
                format!(
                    "source `{}`: {} payloads do not always name an environment and neither \
                     defaults.environment nor fields.environment is set: those payloads come \
                     out invalid (\"missing field environment\"); set [sources.defaults] \
                     environment = \"production\" (or the environment this source deploys to)",
                    src.name,
                    tool.name()
                ),
            ));
        }
    }
    out
}

/// Whether a file the config names holds a secret (warned about when others
/// can read it) or something public (a CA or a certificate).
#[derive(Clone, Copy, PartialEq, Eq)]
enum FileKind {
    Secret,
    Public,
}

/// The secret and key files the config names, with their key paths.
fn named_files(loaded: &Loaded) -> Vec<(String, &std::path::Path, FileKind)> {
    use FileKind::*;
    let c = &loaded.config;
    let mut out = Vec::new();
    for (i, s) in c.sources.iter().enumerate() {
        let key = |k: &str| format!("sources[{i}].{k}");
        let files = [
            ("secret_file", &s.secret_file, Secret),
            ("token_file", &s.token_file, Secret),
            ("ca_file", &s.ca_file, Public),
        ];
        for (k, p, kind) in files {
            if let Some(p) = p {
                out.push((key(k), p.as_path(), kind));
            }
        }
    }
    if let Some(siem) = &c.siem {
        let files = [
            ("ca_file", &siem.ca_file, Public),
            ("client_cert_file", &siem.client_cert_file, Public),
            ("client_key_file", &siem.client_key_file, Secret),
            ("token_file", &siem.token_file, Secret),
            ("hmac_secret_file", &siem.hmac_secret_file, Secret),
        ];
        for (k, p, kind) in files {
            if let Some(p) = p {
                out.push((format!("siem.{k}"), p.as_path(), kind));
            }
        }
    }
    if let Some(p) = &c.spool.signing_key_file {
        out.push(("spool.signing_key_file".into(), p.as_path(), Secret));
    }
    for (i, d) in c
        .notify
        .iter()
        .flat_map(|n| n.destinations.iter())
        .enumerate()
    {
        let key = |k: &str| format!("notify.destinations[{i}].{k}");
        out.push((key("url_file"), d.url_file.as_path(), Secret));
        if let Some(p) = &d.ca_file {
            out.push((key("ca_file"), p.as_path(), Public));
        }
        if let Some(p) = &d.hmac_secret_file {
            out.push((key("hmac_secret_file"), p.as_path(), Secret));
        }
    }
    out
}

/// The secret and key files the config names, checked on disk as this user:
/// problems (missing, unreadable, empty: the agent would exit at start) and
/// warnings (a secret others can read). `check-config` runs it; `run` too,
/// so a missing secret is a configuration error (exit 2, not restarted by
/// the unit) rather than a start failure restarted forever.
pub fn files(loaded: &Loaded) -> (Vec<Problem>, Vec<Problem>) {
    use std::os::unix::fs::PermissionsExt;
    let mut problems = Vec::new();
    let mut warnings = Vec::new();
    for (key, path, kind) in named_files(loaded) {
        let shown = path.display();
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                problems.push(problem_at(
                    loaded,
                    &key,
                    format!("{shown} does not exist; create it or fix the path"),
                ));
                continue;
            }
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                problems.push(problem_at(
                    loaded,
                    &key,
                    format!(
                        "{shown} is not readable by this user ({e}); the agent's user (relstat \
                         in the packages) must be able to read it: check its owner and mode, \
                         and run check-config as that user (sudo -u relstat relstat \
                         check-config)"
                    ),
                ));
                continue;
            }
            Err(e) => {
                problems.push(problem_at(
                    loaded,
                    &key,
                    format!("cannot read {shown}: {e}"),
                ));
                continue;
            }
        };
        if bytes.iter().all(u8::is_ascii_whitespace) {
            let what = match kind {
                FileKind::Secret => "put the secret or key in it",
                FileKind::Public => "put the PEM certificate(s) in it",
            };
            problems.push(problem_at(
                loaded,
                &key,
                format!("{shown} is empty; {what}"),
            ));
            continue;
        }
        if kind == FileKind::Secret
            && let Ok(meta) = std::fs::metadata(path)
        {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                warnings.push(problem_at(
                    loaded,
                    &key,
                    format!(
                        "{shown} holds a secret and is readable by its group or by everyone \
                         (mode {mode:04o}); chmod 600 {shown} (owned by the agent's user)"
                    ),
                ));
            }
        }
    }
    // A readable url_file must hold a usable URL.
    for (i, d) in loaded
        .config
        .notify
        .iter()
        .flat_map(|n| n.destinations.iter())
        .enumerate()
    {
        let key = format!("notify.destinations[{i}].url_file");
        if problems.iter().any(|p| p.key == key) {
            continue;
        }
        if let Err(e) = crate::notifications::read_url(&d.url_file) {
            problems.push(problem_at(loaded, &key, e));
        }
    }
    (problems, warnings)
}

/// `loaded.problem`, but a key that is not in the text (a required key that
/// is missing) is located at its deepest parent that is.
fn problem_at(loaded: &Loaded, key: &str, message: impl Into<String>) -> Problem {
    let mut p = loaded.problem(key, message);
    if p.line.is_none() {
        p.line = parent_line(&loaded.text, key);
    }
    p
}

fn parent_line(text: &str, key: &str) -> Option<usize> {
    let mut k = key;
    loop {
        k = match k.rfind(['.', '[']) {
            Some(i) => &k[..i],
            None => return None,
        };
        // A `[[sources]]` entry is best pointed at by its name.
        if k.ends_with(']')
            && let Some(line) = locate::line_of(text, &format!("{k}.name"))
        {
            return Some(line);
        }
        if let Some(line) = locate::line_of(text, k) {
            return Some(line);
        }
    }
}

/// Whether a key such as `sources[2].format` is literally written in the
/// text (for keys whose serde default cannot be told apart from an explicit
/// value). Walks the document itself rather than asking `locate::line_of`,
/// whose documented contract is to fall back to a parent's line.
fn is_written(text: &str, key: &str) -> bool {
    use toml::de::{DeTable, DeValue};
    let Ok(root) = DeTable::parse(text) else {
        return false;
    };
    let mut value: Option<&DeValue<'_>> = None;
    for part in key.split('.') {
        let (name, index) = match part.split_once('[') {
            Some((n, i)) => (n, i.trim_end_matches(']').parse::<usize>().ok()),
            None => (part, None),
        };
        let table = match value {
            None => root.get_ref(),
            Some(DeValue::Table(t)) => t,
            Some(_) => return false,
        };
        let Some((_, v)) = table.iter().find(|(k, _)| k.get_ref().as_ref() == name) else {
            return false;
        };
        value = Some(v.get_ref());
        if let Some(i) = index {
            let Some(DeValue::Array(items)) = value else {
                return false;
            };
            let Some(item) = items.get(i) else {
                return false;
            };
            value = Some(item.get_ref());
        }
    }
    value.is_some()
}

struct Validator<'a> {
    loaded: &'a Loaded,
    problems: Vec<Problem>,
}

impl Validator<'_> {
    fn push(&mut self, key: &str, message: impl Into<String>) {
        self.problems.push(problem_at(self.loaded, key, message));
    }

    fn sources(&mut self, model: Option<&Model>) {
        let sources = &self.loaded.config.sources;
        let mut seen: HashSet<&str> = HashSet::new();
        for (i, s) in sources.iter().enumerate() {
            let key = format!("sources[{i}]");
            if s.name.is_empty() {
                self.push(
                    &format!("{key}.name"),
                    "a source needs a name; it becomes the `source` label and, for webhooks, \
                     the path /hooks/{name}",
                );
            } else if !s
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
            {
                self.push(
                    &format!("{key}.name"),
                    format!(
                        "source name {:?} may only contain letters, digits, '_', '.' and '-' \
                         (it becomes a URL path /hooks/{{name}} and a label value)",
                        s.name
                    ),
                );
            } else if !seen.insert(&s.name) {
                self.push(
                    &format!("{key}.name"),
                    format!(
                        "duplicate source name {:?}; every source needs its own name",
                        s.name
                    ),
                );
            }
            self.wrong_type_keys(&key, s);
            match s.kind {
                SourceType::File => self.file_source(&key, s),
                SourceType::Webhook => self.webhook_source(&key, s),
                SourceType::Poll => self.poll_source(&key, s),
                SourceType::Kubernetes => self.kubernetes_source(&key, s),
            }
            self.mapping(&key, s, model);
        }
    }

    fn wrong_type_keys(&mut self, key: &str, s: &SourceConfig) {
        use SourceType::*;
        let text = &self.loaded.text;
        let written = |k: &str| is_written(text, &format!("{key}.{k}"));
        let checks: [(&str, bool, &[SourceType]); 15] = [
            ("paths", !s.paths.is_empty(), &[File]),
            ("format", written("format"), &[File]),
            ("start_at", written("start_at"), &[File]),
            ("match", s.match_.is_some(), &[File]),
            ("pattern", s.pattern.is_some(), &[File]),
            ("time_format", s.time_format.is_some(), &[File]),
            ("secret_file", s.secret_file.is_some(), &[Webhook]),
            ("max_body", s.max_body.is_some(), &[Webhook]),
            ("rate_limit", s.rate_limit.is_some(), &[Webhook]),
            ("urls", !s.urls.is_empty(), &[Poll]),
            ("interval", s.interval.is_some(), &[Poll]),
            ("api_server", s.api_server.is_some(), &[Kubernetes]),
            ("namespaces", !s.namespaces.is_empty(), &[Kubernetes]),
            ("token_file", s.token_file.is_some(), &[Poll, Kubernetes]),
            ("ca_file", s.ca_file.is_some(), &[Poll, Kubernetes]),
        ];
        for (name, set, types) in checks {
            if set && !types.contains(&s.kind) {
                let of = types
                    .iter()
                    .map(|t| t.as_str())
                    .collect::<Vec<_>>()
                    .join(" and ");
                self.push(
                    &format!("{key}.{name}"),
                    format!(
                        "`{name}` is a key of {of} sources, and this is a {} source; \
                         remove it or change `type`",
                        s.kind.as_str()
                    ),
                );
            }
        }
    }

    fn file_source(&mut self, key: &str, s: &SourceConfig) {
        if s.preset.is_some() {
            self.push(
                &format!("{key}.preset"),
                "presets are for webhook and poll sources; a file source reads its lines with \
                 `format`, `fields` and `status_map`",
            );
        }
        if s.paths.is_empty() {
            self.push(
                &format!("{key}.paths"),
                "a file source needs `paths`, globs of the files to tail, e.g. \
                 paths = [\"/var/log/deploy/*.log\"]",
            );
        }
        for (j, p) in s.paths.iter().enumerate() {
            if let Err(e) = glob::Pattern::new(p) {
                self.push(
                    &format!("{key}.paths[{j}]"),
                    format!(
                        "invalid glob {p:?}: {e}; escape a literal '[', '*' or '?' as '[[]', \
                         '[*]' or '[?]'"
                    ),
                );
            }
        }
        match (&s.pattern, s.format) {
            (None, LineFormat::Regex) => self.push(
                &format!("{key}.format"),
                "format = \"regex\" needs a `pattern` with named groups for the fields, e.g. \
                 pattern = '^(?P<time>\\S+) (?P<release>\\S+) (?P<environment>\\S+) \
                 (?P<status>\\S+)'",
            ),
            (Some(_), LineFormat::Json | LineFormat::Logfmt) => self.push(
                &format!("{key}.pattern"),
                "`pattern` is only read with format = \"regex\"; set that format or remove \
                 the pattern",
            ),
            (Some(pattern), LineFormat::Regex) => self.pattern(key, s, pattern),
            (None, _) => {}
        }
        if let Some(m) = &s.match_
            && let Err(e) = regex::Regex::new(m)
        {
            self.push(
                &format!("{key}.match"),
                format!("`match` is not a valid regular expression: {e}"),
            );
        }
        if let Some(tf) = &s.time_format
            && let Err(msg) = check_time_format(tf)
        {
            self.push(&format!("{key}.time_format"), msg);
        }
    }

    fn pattern(&mut self, key: &str, s: &SourceConfig, pattern: &str) {
        let re = match regex::Regex::new(pattern) {
            Ok(re) => re,
            Err(e) => {
                self.push(
                    &format!("{key}.pattern"),
                    format!("`pattern` is not a valid regular expression: {e}"),
                );
                return;
            }
        };
        let groups: HashSet<&str> = re.capture_names().flatten().collect();
        let missing: Vec<String> = Field::REQUIRED
            .into_iter()
            .map(Field::name)
            .filter(|f| !s.defaults.contains_key(*f))
            .filter_map(|f| {
                let group = s.fields.get(f).map(String::as_str).unwrap_or(f);
                (!groups.contains(group)).then(|| {
                    if group == f {
                        format!("(?P<{f}>...)")
                    } else {
                        format!("(?P<{group}>...) for {f}")
                    }
                })
            })
            .collect();
        if !missing.is_empty() {
            self.push(
                &format!("{key}.pattern"),
                format!(
                    "`pattern` lacks named groups for required fields: {}; add them, or give \
                     constant values in [sources.defaults]",
                    missing.join(", ")
                ),
            );
        }
    }

    fn webhook_source(&mut self, key: &str, s: &SourceConfig) {
        if s.secret_file.is_none() {
            self.push(
                &format!("{key}.secret_file"),
                "a webhook source needs a secret: set secret_file to a file holding the shared \
                 secret the tool signs or sends its requests with",
            );
        }
        match &s.preset {
            None => self.push(
                &format!("{key}.preset"),
                format!(
                    "a webhook source needs a `preset` saying which tool sends it: {} \
                     (generic takes canonical events)",
                    registry::webhook_names().join(", ")
                ),
            ),
            Some(p) if registry::tool(p).is_none() => self.push(
                &format!("{key}.preset"),
                format!(
                    "unknown webhook preset {p:?}; presets: {}",
                    registry::webhook_names().join(", ")
                ),
            ),
            Some(_) => {}
        }
        if let Some(max) = s.max_body {
            let ceiling = crate::http::MAX_BODY_BYTES as u64;
            if max.as_u64() == 0 || max.as_u64() > ceiling {
                self.push(
                    &format!("{key}.max_body"),
                    format!(
                        "max_body = \"{max}\" is out of range: give 1B to 25MiB (the largest \
                         body the listener reads; GitHub's payloads are at most 25 MB)"
                    ),
                );
            }
        }
    }

    fn poll_source(&mut self, key: &str, s: &SourceConfig) {
        match &s.preset {
            None => self.push(
                &format!("{key}.preset"),
                format!(
                    "a poll source needs a `preset` saying which API it polls: {}",
                    registry::poll_names().join(", ")
                ),
            ),
            Some(p) if registry::tool(p).is_none_or(|t| t.poll.is_none()) => self.push(
                &format!("{key}.preset"),
                format!(
                    "unknown poll preset {p:?}; presets: {} (other tools can send webhooks)",
                    registry::poll_names().join(", ")
                ),
            ),
            Some(_) => {}
        }
        if s.urls.is_empty() {
            self.push(
                &format!("{key}.urls"),
                "a poll source needs `urls` to poll, e.g. \
                 urls = [\"https://jenkins.example/job/deploy-prod/\"]",
            );
        }
        for (j, u) in s.urls.iter().enumerate() {
            if !is_http_url(u) {
                self.push(
                    &format!("{key}.urls[{j}]"),
                    format!("{u:?} is not an http:// or https:// URL"),
                );
            }
        }
    }

    fn kubernetes_source(&mut self, key: &str, s: &SourceConfig) {
        match &s.api_server {
            None => self.push(
                &format!("{key}.api_server"),
                "a kubernetes source needs `api_server`, e.g. api_server = \
                 \"https://10.0.0.1:6443\" (in a pod: https://kubernetes.default.svc)",
            ),
            Some(u) if !is_http_url(u) => self.push(
                &format!("{key}.api_server"),
                format!("api_server {u:?} is not an http:// or https:// URL"),
            ),
            Some(_) => {}
        }
        if s.namespaces.is_empty() {
            self.push(
                &format!("{key}.namespaces"),
                "a kubernetes source needs `namespaces` whose Deployments it watches, e.g. \
                 namespaces = [\"shop\"]",
            );
        }
    }

    /// `fields`, `defaults` and `status_map`, for every source type.
    fn mapping(&mut self, key: &str, s: &SourceConfig, model: Option<&Model>) {
        for (table, map) in [("fields", &s.fields), ("defaults", &s.defaults)] {
            for k in map.keys() {
                if Field::from_name(k).is_none() {
                    self.push(
                        &format!("{key}.{table}.{k}"),
                        format!(
                            "{k:?} is not a field of the canonical event; fields: {}",
                            Field::names()
                        ),
                    );
                }
            }
        }
        if let Some(a) = s.defaults.get("actor_type")
            && crate::event::ActorType::parse(a).is_none()
        {
            self.push(
                &format!("{key}.defaults.actor_type"),
                format!("actor_type {a:?} must be \"human\" or \"automation\""),
            );
        }
        if let Some(c) = s.defaults.get("change_class")
            && crate::event::ChangeClass::parse(c).is_none()
        {
            self.push(
                &format!("{key}.defaults.change_class"),
                format!("change_class {c:?} must be \"standard\", \"normal\" or \"emergency\""),
            );
        }
        // A broken model is reported on its own; its states are no yardstick.
        let Some(model) = model else { return };
        for (raw, state) in &s.status_map {
            if model.index(state).is_none()
                && !crate::model::LEDGER_DECISIONS.contains(&state.as_str())
            {
                let states: Vec<&str> = model.states().iter().map(|s| s.id.as_str()).collect();
                self.push(
                    &format!("{key}.status_map.{raw}"),
                    format!(
                        "status_map value {state:?} is not a state of the model; states: {}",
                        states.join(", ")
                    ),
                );
            }
        }
    }

    fn agent(&mut self) {
        // The site is the default of every event's `site` field: held to
        // the same cap as input, or every site-less event would carry it.
        let site = &self.loaded.config.agent.site;
        if crate::event::check_field_len("site", site).is_err() {
            self.push(
                "agent.site",
                format!(
                    "site is {} bytes long; an event field may have at most {}",
                    site.len(),
                    crate::event::MAX_FIELD_BYTES
                ),
            );
        }
    }

    fn tracking(&mut self) {
        let t = &self.loaded.config.tracking;
        if t.max_tracked == 0 {
            self.push(
                "tracking.max_tracked",
                "max_tracked must be at least 1 (it caps the keys with per-release series)",
            );
        }
        if t.max_label_values == 0 {
            self.push(
                "tracking.max_label_values",
                "max_label_values must be at least 1 (values beyond it become \"other\")",
            );
        }
        let (min, max) = (
            crate::config::MIN_LABEL_VALUE_BYTES,
            crate::event::MAX_FIELD_BYTES,
        );
        if !(min..=max).contains(&t.label_value_max_bytes) {
            self.push(
                "tracking.label_value_max_bytes",
                format!(
                    "label_value_max_bytes must be between {min} (room for the hash that keeps \
                     shortened values distinct) and {max} (no input value is longer); \
                     the default is 128"
                ),
            );
        }
        if t.duration_buckets.is_empty() {
            self.push(
                "tracking.duration_buckets",
                "duration_buckets must not be empty; e.g. [\"1m\", \"15m\", \"1h\", \"24h\"]",
            );
        }
        for (j, w) in t.duration_buckets.windows(2).enumerate() {
            if w[1] <= w[0] {
                self.push(
                    &format!("tracking.duration_buckets[{}]", j + 1),
                    format!(
                        "duration_buckets must be strictly increasing, and {} is not after {}",
                        humantime::format_duration(w[1]),
                        humantime::format_duration(w[0])
                    ),
                );
            }
        }
        if t.dedupe_window.is_zero() {
            self.push(
                "tracking.dedupe_window",
                "dedupe_window must be longer than 0; duplicates are only caught within it",
            );
        }
        if t.stale_after.is_zero() {
            self.push(
                "tracking.stale_after",
                "stale_after must be longer than 0, or every key is finished at once",
            );
        }
    }

    fn http(&mut self) {
        let listen = &self.loaded.config.http.listen;
        if std::net::SocketAddr::from_str(listen).is_err() {
            self.push(
                "http.listen",
                format!(
                    "listen {listen:?} is not an IP address and port; write e.g. \
                     \"127.0.0.1:9731\", \"0.0.0.0:9731\" or \"[::]:9731\""
                ),
            );
        }
        let http = &self.loaded.config.http;
        if http.max_connections_per_peer == 0 {
            self.push(
                "http.max_connections_per_peer",
                "max_connections_per_peer = 0 would refuse every client; give at least 1 \
                 (default 64)",
            );
        }
        if http.header_timeout.is_zero()
            || http.header_timeout > std::time::Duration::from_secs(300)
        {
            self.push(
                "http.header_timeout",
                "header_timeout must be more than 0 and at most 5m (default \"10s\"): at 0 no \
                 request could arrive, and a long one lets trickling clients hold connections",
            );
        }
        if !http.partners.is_empty() && http.web_config_file.is_none() {
            self.push(
                "http.partners",
                "partner views need basic auth to know who asks: set web_config_file to an \
                 exporter-toolkit web config with basic_auth_users naming each partner",
            );
        }
        if let (false, Some(path)) = (http.partners.is_empty(), &http.web_config_file) {
            // An unreadable or broken file is reported by check_web_config
            // (check-config) and refused by the listener (run).
            match crate::http::basic_auth_users(path) {
                Err(_) => {}
                Ok(users) if users.is_empty() => self.push(
                    "http.partners",
                    format!(
                        "web config {} has no basic_auth_users, so /metrics and /api/v1 are \
                         open to anyone and no partner view applies; add basic_auth_users \
                         naming each partner",
                        path.display()
                    ),
                ),
                Ok(users) => {
                    for user in http.partners.keys() {
                        if !users.contains(user) {
                            self.push(
                                &format!("http.partners.{user}"),
                                format!(
                                    "{user:?} is no user in basic_auth_users of web config {} \
                                     (users: {}), so this view would never apply; add the user \
                                     there or correct the name (names are case-sensitive)",
                                    path.display(),
                                    users.join(", ")
                                ),
                            );
                        }
                    }
                }
            }
        }
        for (user, p) in &http.partners {
            let key = format!("http.partners.{user}");
            if p.environments.is_empty() {
                self.push(
                    &format!("{key}.environments"),
                    "a partner needs at least one environment it may see, e.g. \
                     environments = [\"staging\"]",
                );
            }
            for f in &p.redact {
                if !crate::config::REDACTABLE.contains(&f.as_str()) {
                    self.push(
                        &format!("{key}.redact"),
                        format!(
                            "{f:?} cannot be redacted; the fields that can are {}",
                            crate::config::REDACTABLE.join(", ")
                        ),
                    );
                }
            }
        }
    }

    fn siem(&mut self, siem: &SiemConfig) {
        let transport = match siem.transport {
            SiemTransport::Tls => "tls",
            SiemTransport::Relp => "relp",
            SiemTransport::Tcp => "tcp",
            SiemTransport::Udp => "udp",
            SiemTransport::Http => "http",
        };
        if siem.transport == SiemTransport::Http {
            match &siem.url {
                None => self.push(
                    "siem.url",
                    "transport = \"http\" needs a `url`, e.g. \
                     url = \"https://relay.example:9731/hooks/site-a\"",
                ),
                Some(u) if !is_http_url(u) => self.push(
                    "siem.url",
                    format!("url {u:?} is not an http:// or https:// URL"),
                ),
                Some(_) => {}
            }
            if let Some(max) = siem.max_batch_bytes {
                let (lo, hi) = (
                    SiemConfig::MIN_MAX_BATCH_BYTES,
                    SiemConfig::MAX_MAX_BATCH_BYTES,
                );
                if !(lo..=hi).contains(&max.as_u64()) {
                    self.push(
                        "siem.max_batch_bytes",
                        format!(
                            "max_batch_bytes = \"{max}\" is out of range: give 1KiB to 25MiB \
                             (and at most the receiver's body limit: a relay hook takes 1MiB \
                             unless its max_body says more)"
                        ),
                    );
                }
            }
            if siem.address.is_some() {
                self.push(
                    "siem.address",
                    "`address` is for the tls, relp, tcp and udp transports; transport = \
                     \"http\" sends to `url`",
                );
            }
        } else {
            match &siem.address {
                None => self.push(
                    "siem.address",
                    format!(
                        "transport = {transport:?} needs an `address`, host:port, e.g. \
                         address = \"siem.example:6514\""
                    ),
                ),
                Some(a) if !is_host_port(a) => self.push(
                    "siem.address",
                    format!(
                        "address {a:?} is not host:port; write e.g. \"siem.example:6514\" or \
                         \"[2001:db8::1]:6514\""
                    ),
                ),
                Some(_) => {}
            }
            if siem.url.is_some() {
                self.push(
                    "siem.url",
                    format!(
                        "`url` is for transport = \"http\"; transport = {transport:?} sends to \
                         `address`"
                    ),
                );
            }
            for (name, set) in [
                ("token_file", siem.token_file.is_some()),
                ("hmac_secret_file", siem.hmac_secret_file.is_some()),
                ("max_batch_bytes", siem.max_batch_bytes.is_some()),
            ] {
                if set {
                    self.push(
                        &format!("siem.{name}"),
                        format!(
                            "`{name}` is for transport = \"http\"; remove it or change \
                             `transport`"
                        ),
                    );
                }
            }
        }
        match (&siem.client_cert_file, &siem.client_key_file) {
            (Some(_), None) => self.push(
                "siem.client_cert_file",
                "client_cert_file needs client_key_file too (the certificate's private key)",
            ),
            (None, Some(_)) => self.push(
                "siem.client_key_file",
                "client_key_file needs client_cert_file too (the certificate it belongs to)",
            ),
            _ => {}
        }
        if facility_code(&siem.facility).is_none() {
            self.push(
                "siem.facility",
                format!(
                    "unknown syslog facility {:?}; facilities: {}",
                    siem.facility,
                    FACILITIES.join(", ")
                ),
            );
        }
        if !is_sd_id(&siem.sd_id) {
            self.push(
                "siem.sd_id",
                format!(
                    "sd_id {:?} is not an RFC 5424 SD-ID: write name@number (your IANA private \
                     enterprise number), at most 32 printable characters without space, '=', \
                     ']' or '\"', e.g. \"relstat@32473\"",
                    siem.sd_id
                ),
            );
        }
        if siem.rate_limit > 0 && siem.burst == 0 {
            self.push(
                "siem.burst",
                "burst must be at least 1 when rate_limit is set, or nothing is ever sent",
            );
        }
        if siem.tls && siem.transport != SiemTransport::Relp {
            self.push(
                "siem.tls",
                format!(
                    "tls = true is for transport = \"relp\" (RELP over TLS); for TLS syslog set \
                     transport = \"tls\" instead of {transport:?}"
                ),
            );
        }
    }

    fn spool(&mut self) {
        if self.loaded.config.spool.max_bytes.as_u64() == 0 {
            self.push(
                "spool.max_bytes",
                "max_bytes must be more than 0; e.g. max_bytes = \"1GiB\"",
            );
        }
    }

    fn gate(&mut self) {
        let Some(gate) = &self.loaded.config.model.gate else {
            return;
        };
        let names: Vec<&str> = self
            .loaded
            .config
            .sources
            .iter()
            .map(|s| s.name.as_str())
            .collect();
        for (j, a) in gate.approval_sources.iter().enumerate() {
            if !names.contains(&a.as_str()) {
                self.push(
                    &format!("model.gate.approval_sources[{j}]"),
                    format!(
                        "{a:?} is not a source of this agent (sources: {}); gates are evaluated \
                         where the approvals are (see \"The approval gate\" in docs/events.md): \
                         run the gate on a relay that receives every transition",
                        if names.is_empty() {
                            "none".to_string()
                        } else {
                            names.join(", ")
                        }
                    ),
                );
            }
        }
        for (j, e) in gate.environments.iter().enumerate() {
            if e.trim().is_empty() {
                self.push(
                    &format!("model.gate.environments[{j}]"),
                    "an empty environment name matches no event; remove it or name the \
                     environment, e.g. \"production\"",
                );
            }
        }
    }

    fn notify(&mut self, n: &crate::config::NotifyConfig, model: Option<&Model>) {
        let rules: Vec<&str> = crate::detect::RuleId::ALL
            .iter()
            .map(|r| r.as_str())
            .collect();
        let mut names: HashSet<&str> = HashSet::new();
        if n.max_age.is_zero() {
            self.push("notify.max_age", "max_age must be longer than 0");
        }
        for (i, d) in n.destinations.iter().enumerate() {
            let key = |k: &str| format!("notify.destinations[{i}].{k}");
            if d.name.is_empty()
                || !d
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
            {
                self.push(
                    &key("name"),
                    format!(
                        "destination name {:?}: use letters, digits, `_`, `.` and `-`",
                        d.name
                    ),
                );
            } else if !names.insert(d.name.as_str()) {
                self.push(
                    &key("name"),
                    format!("destination name {:?} is used twice", d.name),
                );
            }
            if d.per_minute == 0 {
                self.push(&key("per_minute"), "per_minute must be at least 1");
            }
            if d.hmac_secret_file.is_some() && d.kind != crate::config::NotifyKind::Webhook {
                self.push(
                    &key("hmac_secret_file"),
                    "hmac_secret_file applies to kind = \"webhook\" only",
                );
            }
            for (j, r) in d.routes.iter().enumerate() {
                let rkey = |k: &str| format!("notify.destinations[{i}].routes[{j}].{k}");
                for a in &r.anomalies {
                    if !rules.contains(&a.as_str()) {
                        self.push(
                            &rkey("anomalies"),
                            format!(
                                "unknown anomaly rule {a:?}; the rules are {}",
                                rules.join(", ")
                            ),
                        );
                    }
                }
                if let Some(m) = model {
                    for s in &r.statuses {
                        if m.index(s).is_none() {
                            let known: Vec<&str> =
                                m.states().iter().map(|s| s.id.as_str()).collect();
                            self.push(
                                &rkey("statuses"),
                                format!(
                                    "unknown status {s:?}; the model's statuses are {}",
                                    known.join(", ")
                                ),
                            );
                        }
                    }
                }
                if r.anomalies.is_empty() && r.statuses.is_empty() {
                    self.push(
                        &format!("notify.destinations[{i}].routes[{j}]"),
                        "a route needs `anomalies` or `statuses` (or both): it matches nothing \
                         otherwise",
                    );
                }
            }
        }
    }

    /// `[readiness]`: known rules, a positive deployment count, a rate in
    /// 0..=1, weights that are points adding up to at most 100.
    fn readiness(&mut self) {
        let r = &self.loaded.config.readiness;
        let known: Vec<&str> = crate::detect::RuleId::ALL
            .iter()
            .map(|r| r.as_str())
            .collect();
        for (i, rule) in r.rules.iter().enumerate() {
            if !known.contains(&rule.as_str()) {
                self.push(
                    &format!("readiness.rules[{i}]"),
                    format!("unknown rule {rule:?}; known: {}", known.join(", ")),
                );
            }
        }
        if r.deployments == 0 {
            self.push(
                "readiness.deployments",
                "deployments must be at least 1 (the default is 10): the change failure rate \
                 is taken over that many of the service's latest deployments",
            );
        }
        if !(0.0..=1.0).contains(&r.max_change_failure_rate) {
            self.push(
                "readiness.max_change_failure_rate",
                "max_change_failure_rate is a rate from 0 to 1, e.g. 0.3 for 30%",
            );
        }
        if r.freeze_horizon > std::time::Duration::from_secs(7 * 86_400) {
            self.push(
                "readiness.freeze_horizon",
                "freeze_horizon may be at most 7d (the default is 4h): it is how far ahead a \
                 freeze about to open adds to the risk score",
            );
        }
        let mut total = 0.0;
        for (name, w) in r.weights.named() {
            if !w.is_finite() || w < 0.0 {
                self.push(
                    &format!("readiness.weights.{name}"),
                    format!("the weight of {name} must be a number of points, 0 or more"),
                );
            } else {
                total += w;
            }
        }
        if total > 100.0 {
            self.push(
                "readiness.weights",
                format!(
                    "the weights add up to {total}, more than 100: the risk score is the sum of \
                     the points each signal adds, at most 100; lower some weights"
                ),
            );
        }
    }

    fn anomalies(&mut self) {
        let a = &self.loaded.config.anomalies;
        if a.flapping.max_transitions == 0 {
            self.push(
                "anomalies.flapping.max_transitions",
                "max_transitions must be at least 1; to turn the rule off set enabled = false",
            );
        }
        if a.flapping.window.is_zero() {
            self.push(
                "anomalies.flapping.window",
                "window must be longer than 0; to turn the rule off set enabled = false",
            );
        }
        if a.status_conflict.window.is_zero() {
            self.push(
                "anomalies.status_conflict.window",
                "window must be longer than 0; to turn the rule off set enabled = false",
            );
        }
        for (i, w) in a.change_freeze.windows.iter().enumerate() {
            self.freeze_window(&format!("anomalies.change_freeze.windows[{i}]"), w);
        }
    }

    fn freeze_window(&mut self, key: &str, w: &FreezeWindowConfig) {
        let absolute = w.start.is_some() || w.end.is_some();
        let weekly =
            !w.days.is_empty() || w.from.is_some() || w.to.is_some() || w.timezone.is_some();
        const KINDS: &str = "a window is absolute (start, end: RFC 3339 times) or weekly (days, \
                             from, to as HH:MM, timezone)";
        if absolute && weekly {
            self.push(
                key,
                format!("this window mixes both kinds of keys; {KINDS}"),
            );
            return;
        }
        if !absolute && !weekly {
            self.push(
                key,
                format!("this window sets neither kind of keys; {KINDS}"),
            );
            return;
        }
        if absolute {
            let mut parse = |name: &str, v: &Option<String>| {
                let Some(v) = v else {
                    self.push(
                        &format!("{key}.{name}"),
                        format!(
                            "an absolute window needs both start and end; add {name}, e.g. \
                             {name} = \"2026-12-20T00:00:00Z\""
                        ),
                    );
                    return None;
                };
                let t = chrono::DateTime::parse_from_rfc3339(v.trim()).ok();
                if t.is_none() {
                    self.push(
                        &format!("{key}.{name}"),
                        format!(
                            "{name} {v:?} is not an RFC 3339 time; write e.g. \
                             \"2026-12-20T00:00:00Z\" or \"2026-12-20T00:00:00+01:00\""
                        ),
                    );
                }
                t
            };
            let start = parse("start", &w.start);
            let end = parse("end", &w.end);
            if let (Some(s), Some(e)) = (start, end)
                && e <= s
            {
                self.push(&format!("{key}.end"), "end must be after start");
            }
            return;
        }
        if w.days.is_empty() {
            self.push(
                &format!("{key}.days"),
                "a weekly window needs days, e.g. days = [\"fri\", \"sat\", \"sun\"]",
            );
        }
        for (j, d) in w.days.iter().enumerate() {
            if !WEEKDAYS.contains(&d.as_str()) {
                self.push(
                    &format!("{key}.days[{j}]"),
                    format!("{d:?} is not a day; days: {}", WEEKDAYS.join(", ")),
                );
            }
        }
        for (name, v) in [("from", &w.from), ("to", &w.to)] {
            match v {
                None => self.push(
                    &format!("{key}.{name}"),
                    format!(
                        "a weekly window needs from and to; add {name}, e.g. {name} = \"16:00\""
                    ),
                ),
                Some(v) if !is_hh_mm(v) => self.push(
                    &format!("{key}.{name}"),
                    format!("{name} {v:?} is not a time of day; write HH:MM, e.g. \"16:00\""),
                ),
                Some(_) => {}
            }
        }
        if let Some(tz) = &w.timezone
            && tz.parse::<chrono_tz::Tz>().is_err()
        {
            self.push(
                &format!("{key}.timezone"),
                format!(
                    "{tz:?} is not an IANA time zone; write e.g. \"Europe/Berlin\", \
                     \"America/New_York\" or \"UTC\""
                ),
            );
        }
    }
}

/// `epoch_s`, `epoch_ms`, or a strftime pattern chrono accepts that fixes
/// at least a date (a line's time cannot be placed without one).
fn check_time_format(tf: &str) -> Result<(), String> {
    use chrono::format::{Fixed, Item, Numeric, StrftimeItems};
    if tf == "epoch_s" || tf == "epoch_ms" {
        return Ok(());
    }
    let items: Vec<Item<'_>> = StrftimeItems::new(tf).collect();
    if items.iter().any(|i| matches!(i, Item::Error)) {
        return Err(format!(
            "time_format {tf:?} is not a strftime pattern chrono accepts; write e.g. \
             \"%d/%b/%Y:%H:%M:%S %z\", or use \"epoch_s\" or \"epoch_ms\" (omit it for RFC 3339)"
        ));
    }
    let mut has: HashSet<&str> = HashSet::new();
    for i in &items {
        let what = match i {
            Item::Numeric(Numeric::Timestamp, _) => "full",
            Item::Fixed(Fixed::RFC2822 | Fixed::RFC3339) => "full",
            Item::Numeric(
                Numeric::Year | Numeric::YearMod100 | Numeric::IsoYear | Numeric::IsoYearMod100,
                _,
            ) => "year",
            Item::Numeric(Numeric::Month, _)
            | Item::Fixed(Fixed::ShortMonthName | Fixed::LongMonthName) => "month",
            Item::Numeric(Numeric::Day, _) => "day",
            Item::Numeric(Numeric::Ordinal, _) => "ordinal",
            Item::Numeric(Numeric::WeekFromSun | Numeric::WeekFromMon | Numeric::IsoWeek, _) => {
                "week"
            }
            Item::Numeric(Numeric::NumDaysFromSun | Numeric::WeekdayFromMon, _)
            | Item::Fixed(Fixed::ShortWeekdayName | Fixed::LongWeekdayName) => "weekday",
            _ => continue,
        };
        has.insert(what);
    }
    let h = |k| has.contains(k);
    let date = h("full")
        || (h("year") && ((h("month") && h("day")) || h("ordinal") || (h("week") && h("weekday"))));
    if date {
        Ok(())
    } else {
        Err(format!(
            "time_format {tf:?} has no full date (year, month and day); a time cannot be placed \
             without one, e.g. \"%Y-%m-%d %H:%M:%S\""
        ))
    }
}

fn is_http_url(u: &str) -> bool {
    ["http://", "https://"]
        .iter()
        .any(|p| u.strip_prefix(p).is_some_and(|rest| !rest.is_empty()))
}

/// `host:port` with a non-empty host (IPv6 in brackets) and a port 1..=65535.
fn is_host_port(a: &str) -> bool {
    let Some((host, port)) = a.rsplit_once(':') else {
        return false;
    };
    let host_ok = match host.strip_prefix('[') {
        Some(v6) => v6
            .strip_suffix(']')
            .is_some_and(|ip| ip.parse::<std::net::Ipv6Addr>().is_ok()),
        None => !host.is_empty() && !host.contains([':', '/', ' ']),
    };
    host_ok && port.parse::<u16>().is_ok_and(|p| p > 0)
}

/// RFC 5424 section 6.3.2: an SD-ID is 1 to 32 printable US-ASCII characters
/// except '=', space, ']' and '"'; one we define is `name@<enterprise number>`.
fn is_sd_id(id: &str) -> bool {
    let Some((name, pen)) = id.split_once('@') else {
        return false;
    };
    id.len() <= 32
        && !name.is_empty()
        && name
            .bytes()
            .all(|b| (33..=126).contains(&b) && !b"=]\"@".contains(&b))
        && !pen.is_empty()
        && pen.bytes().all(|b| b.is_ascii_digit())
}

fn is_hh_mm(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 5
        && b[2] == b':'
        && s[..2].parse::<u8>().is_ok_and(|h| h < 24)
        && s[3..].parse::<u8>().is_ok_and(|m| m < 60)
        && b[..2].iter().chain(&b[3..]).all(u8::is_ascii_digit)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Loaded {
        match crate::config::parse_text(text.to_string(), Some("t.toml".into())) {
            Ok(l) => l,
            Err(e) => panic!("test config does not parse: {e}"),
        }
    }

    fn problems(text: &str) -> Vec<Problem> {
        validate(&load(text))
    }

    /// Asserts that `text` has exactly these problems, in this order: (key,
    /// line, a fragment of the message).
    #[track_caller]
    fn assert_problems(text: &str, expected: &[(&str, usize, &str)]) {
        let got = problems(text);
        let show = || got.iter().map(|p| format!("\n  {p}")).collect::<String>();
        assert_eq!(got.len(), expected.len(), "problems:{}", show());
        for (p, (key, line, fragment)) in got.iter().zip(expected) {
            assert_eq!(p.key, *key, "problems:{}", show());
            assert_eq!(p.line, Some(*line), "{p}");
            assert!(p.message.contains(fragment), "{p}\n  lacks {fragment:?}");
            assert_eq!(p.file, "t.toml");
        }
    }

    /// A valid file source on lines 1-4; tests append to it.
    const FILE: &str = "[[sources]]\nname = \"a\"\ntype = \"file\"\npaths = [\"/x/*.log\"]\n";

    fn with_file(rest: &str) -> String {
        format!("{FILE}{rest}")
    }

    #[test]
    fn webhook_max_body_is_within_what_the_listener_reads() {
        let hook = |max: &str| {
            format!(
                "[[sources]]\nname = \"g\"\ntype = \"webhook\"\npreset = \"github\"\n\
                 secret_file = \"/s\"\nmax_body = \"{max}\"\n"
            )
        };
        assert_problems(&hook("25MiB"), &[]);
        for bad in ["26MiB", "0B"] {
            assert_problems(
                &hook(bad),
                &[("sources[0].max_body", 6, "give 1B to 25MiB")],
            );
        }
    }

    #[test]
    fn the_full_example_is_valid() {
        let l = load(FULL_EXAMPLE);
        assert_eq!(validate(&l), vec![]);
        assert_eq!(warnings(&l), vec![]);
        assert_eq!(l.config.sources.len(), 5);
    }

    #[test]
    fn the_builtin_defaults_are_valid() {
        assert_eq!(validate(&Loaded::builtin()), vec![]);
    }

    #[test]
    fn model_problems_are_reported() {
        assert_problems(
            "[model.states.deployed]\nnext = [\"verifyed\"]\n",
            &[(
                "model.states.deployed.next",
                2,
                "undefined state \"verifyed\"",
            )],
        );
    }

    #[test]
    fn a_source_name_must_not_be_empty() {
        assert_problems(
            "[[sources]]\nname = \"\"\ntype = \"file\"\npaths = [\"/x\"]\n",
            &[("sources[0].name", 2, "a source needs a name")],
        );
    }

    #[test]
    fn a_duplicate_source_name_points_at_the_second() {
        assert_problems(
            &with_file("\n[[sources]]\nname = \"a\"\ntype = \"file\"\npaths = [\"/y\"]\n"),
            &[("sources[1].name", 7, "duplicate source name \"a\"")],
        );
    }

    #[test]
    fn a_source_name_becomes_a_url_path() {
        assert_problems(
            "[[sources]]\nname = \"deploy log/1\"\ntype = \"file\"\npaths = [\"/x\"]\n",
            &[("sources[0].name", 2, "may only contain letters, digits")],
        );
    }

    #[test]
    fn keys_of_another_source_type_are_named() {
        assert_problems(
            &with_file("urls = [\"https://x/\"]\nstart_at = \"end\"\n"),
            &[(
                "sources[0].urls",
                5,
                "`urls` is a key of poll sources, and this is a file",
            )],
        );
        // `format` has a default: only a written `format` is a mistake.
        assert_problems(
            "[[sources]]\nname = \"g\"\ntype = \"webhook\"\npreset = \"github\"\n\
             secret_file = \"/s\"\nformat = \"json\"\ntoken_file = \"/t\"\nmax_body = \"1MiB\"\n",
            &[
                ("sources[0].format", 6, "`format` is a key of file sources"),
                (
                    "sources[0].token_file",
                    7,
                    "of poll and kubernetes sources, and this is a webhook",
                ),
            ],
        );
    }

    #[test]
    fn a_file_source_needs_paths_that_are_globs() {
        assert_problems(
            "[[sources]]\nname = \"a\"\ntype = \"file\"\n",
            &[("sources[0].paths", 2, "a file source needs `paths`")],
        );
        assert_problems(
            "[[sources]]\nname = \"a\"\ntype = \"file\"\npaths = [\"/ok/*\", \"/x/[a\"]\n",
            &[("sources[0].paths[1]", 4, "invalid glob \"/x/[a\"")],
        );
    }

    #[test]
    fn format_regex_needs_a_pattern() {
        assert_problems(
            &with_file("format = \"regex\"\n"),
            &[("sources[0].format", 5, "needs a `pattern`")],
        );
    }

    #[test]
    fn a_pattern_must_compile() {
        assert_problems(
            &with_file("format = \"regex\"\npattern = '(?P<time>\\S+'\n"),
            &[("sources[0].pattern", 6, "not a valid regular expression")],
        );
    }

    #[test]
    fn a_pattern_needs_groups_for_required_fields_not_in_defaults() {
        // release comes from `fields` (group rel), environment from defaults;
        // status has no group.
        let text = with_file(
            "format = \"regex\"\npattern = '^(?P<time>\\S+) (?P<release>\\S+)'\n\
             [sources.fields]\nrelease = \"rel\"\n[sources.defaults]\nenvironment = \"prod\"\n",
        );
        assert_problems(
            &text,
            &[(
                "sources[0].pattern",
                6,
                "lacks named groups for required fields: (?P<rel>...) for release, (?P<status>...)",
            )],
        );
        let ok = with_file(
            "format = \"regex\"\n\
             pattern = '^(?P<time>\\S+) (?P<release>\\S+) (?P<environment>\\S+) (?P<status>\\S+)'\n",
        );
        assert_problems(&ok, &[]);
    }

    #[test]
    fn a_pattern_with_another_format_is_a_mistake() {
        assert_problems(
            &with_file("format = \"logfmt\"\npattern = '(?P<time>.*)'\n"),
            &[("sources[0].pattern", 6, "only read with format = \"regex\"")],
        );
    }

    #[test]
    fn match_must_compile() {
        assert_problems(
            &with_file("match = 'deploy('\n"),
            &[(
                "sources[0].match",
                5,
                "`match` is not a valid regular expression",
            )],
        );
    }

    #[test]
    fn time_format_must_be_a_strftime_pattern_with_a_date() {
        assert_problems(
            &with_file("time_format = \"%Y-%m-%d %Q\"\n"),
            &[(
                "sources[0].time_format",
                5,
                "not a strftime pattern chrono accepts",
            )],
        );
        assert_problems(
            &with_file("time_format = \"%H:%M:%S\"\n"),
            &[("sources[0].time_format", 5, "has no full date")],
        );
        for ok in [
            "epoch_s",
            "epoch_ms",
            "%d/%b/%Y:%H:%M:%S %z",
            "%F %T",
            "%s",
            "%+",
            "%Y-%j",
        ] {
            assert_problems(&with_file(&format!("time_format = \"{ok}\"\n")), &[]);
        }
    }

    #[test]
    fn fields_and_defaults_name_canonical_fields() {
        assert_problems(
            &with_file("[sources.fields]\nenv = \"e\"\n[sources.defaults]\nstage = \"x\"\n"),
            &[
                (
                    "sources[0].fields.env",
                    6,
                    "\"env\" is not a field of the canonical event",
                ),
                ("sources[0].defaults.stage", 8, "fields: id, time, release"),
            ],
        );
    }

    #[test]
    fn defaults_of_enumerated_fields_are_checked() {
        assert_problems(
            &with_file("[sources.defaults]\nactor_type = \"bot\"\nchange_class = \"urgent\"\n"),
            &[
                (
                    "sources[0].defaults.actor_type",
                    6,
                    "must be \"human\" or \"automation\"",
                ),
                (
                    "sources[0].defaults.change_class",
                    7,
                    "\"standard\", \"normal\" or \"emergency\"",
                ),
            ],
        );
    }

    #[test]
    fn status_map_values_are_states_of_the_model() {
        assert_problems(
            &with_file("[sources.status_map]\nSUCCESS = \"deployd\"\nOK = \"deployed\"\n"),
            &[(
                "sources[0].status_map.SUCCESS",
                6,
                "status_map value \"deployd\" is not a state of the model; states: scheduled, \
                 rescheduled,",
            )],
        );
        // A custom state counts; with a broken model only the model is reported.
        assert_problems(
            &with_file("[sources.status_map]\nOK = \"verified\"\n[model.states.verified]\n"),
            &[],
        );
        assert_problems(
            &with_file(
                "[sources.status_map]\nOK = \"nope\"\n[model.states.verified]\nnext = [\"x\"]\n",
            ),
            &[("model.states.verified.next", 8, "undefined state \"x\"")],
        );
    }

    #[test]
    fn a_webhook_needs_a_secret_and_a_known_preset() {
        assert_problems(
            "[[sources]]\nname = \"w\"\ntype = \"webhook\"\n",
            &[
                (
                    "sources[0].secret_file",
                    2,
                    "a webhook source needs a secret",
                ),
                ("sources[0].preset", 2, "a webhook source needs a `preset`"),
            ],
        );
        assert_problems(
            "[[sources]]\nname = \"w\"\ntype = \"webhook\"\npreset = \"bitbucket\"\n\
             secret_file = \"/s\"\n",
            &[(
                "sources[0].preset",
                4,
                "unknown webhook preset \"bitbucket\"; presets: github",
            )],
        );
    }

    #[test]
    fn a_poll_source_needs_a_preset_and_http_urls() {
        assert_problems(
            "[[sources]]\nname = \"p\"\ntype = \"poll\"\npreset = \"flux\"\n",
            &[
                ("sources[0].urls", 2, "a poll source needs `urls`"),
                (
                    "sources[0].preset",
                    4,
                    "unknown poll preset \"flux\"; presets: github, gitlab, jenkins, argocd, azure_devops, jira, servicenow (other",
                ),
            ],
        );
        assert_problems(
            "[[sources]]\nname = \"p\"\ntype = \"poll\"\npreset = \"jenkins\"\n\
             urls = [\n  \"https://j/\",\n  \"ftp://j/\",\n]\n",
            &[(
                "sources[0].urls[1]",
                7,
                "\"ftp://j/\" is not an http:// or https:// URL",
            )],
        );
    }

    #[test]
    fn a_kubernetes_source_needs_an_api_server_and_namespaces() {
        assert_problems(
            "[[sources]]\nname = \"k\"\ntype = \"kubernetes\"\n",
            &[
                ("sources[0].api_server", 2, "needs `api_server`"),
                ("sources[0].namespaces", 2, "needs `namespaces`"),
            ],
        );
    }

    #[test]
    fn a_file_source_takes_no_preset() {
        assert_problems(
            &with_file("preset = \"github\"\n"),
            &[(
                "sources[0].preset",
                5,
                "presets are for webhook and poll sources",
            )],
        );
    }

    #[test]
    fn tracking_limits_must_be_usable() {
        assert_problems(
            &with_file(
                "[tracking]\nmax_tracked = 0\nmax_label_values = 0\n\
                 duration_buckets = [\"1m\", \"30s\"]\ndedupe_window = \"0s\"\nstale_after = \"0s\"\n",
            ),
            &[
                ("tracking.max_tracked", 6, "max_tracked must be at least 1"),
                (
                    "tracking.max_label_values",
                    7,
                    "max_label_values must be at least 1",
                ),
                (
                    "tracking.duration_buckets[1]",
                    8,
                    "strictly increasing, and 30s is not after 1m",
                ),
                (
                    "tracking.dedupe_window",
                    9,
                    "dedupe_window must be longer than 0",
                ),
                (
                    "tracking.stale_after",
                    10,
                    "stale_after must be longer than 0",
                ),
            ],
        );
        assert_problems(
            &with_file("[tracking]\nduration_buckets = []\n"),
            &[("tracking.duration_buckets", 6, "must not be empty")],
        );
        assert_problems(
            &format!("[agent]\nsite = \"{}\"\n{FILE}", "s".repeat(1025)),
            &[(
                "agent.site",
                2,
                "site is 1025 bytes long; an event field may have at most 1024",
            )],
        );
        for bad in [0, 31, 1025] {
            assert_problems(
                &with_file(&format!("[tracking]\nlabel_value_max_bytes = {bad}\n")),
                &[(
                    "tracking.label_value_max_bytes",
                    6,
                    "label_value_max_bytes must be between 32 (room for the hash",
                )],
            );
        }
        for good in [32, 128, 1024] {
            assert_problems(
                &with_file(&format!("[tracking]\nlabel_value_max_bytes = {good}\n")),
                &[],
            );
        }
    }

    #[test]
    fn partners_must_be_basic_auth_users() {
        let dir = tempfile::tempdir().unwrap();
        let web = |name: &str, yaml: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, yaml).unwrap();
            path.display().to_string()
        };
        let hash = "$2y$04$fQr8H7eVfI5ZtE4N/hCkY.0Y4TDmyfDzvG6nn2AwgxqjVNXi7hVnC";
        let users = web(
            "users.yml",
            &format!("basic_auth_users:\n  acme: '{hash}'\n  admin: '{hash}'\n"),
        );
        let none = web(
            "none.yml",
            "http_server_config:\n  headers:\n    X-Frame-Options: deny\n",
        );
        let partners = |file: &str, names: &[&str]| {
            let mut t = format!("[http]\nweb_config_file = {file:?}\n");
            for n in names {
                t.push_str(&format!(
                    "[http.partners.{n}]\nenvironments = [\"staging\"]\n"
                ));
            }
            with_file(&t)
        };
        assert_problems(&partners(&users, &["acme"]), &[]);
        assert_problems(
            &partners(&users, &["acme", "Acme", "globex"]),
            &[
                (
                    "http.partners.Acme",
                    9,
                    "\"Acme\" is no user in basic_auth_users",
                ),
                ("http.partners.globex", 11, "(users: acme, admin)"),
            ],
        );
        assert_problems(
            &partners(&none, &["acme"]),
            &[(
                "http.partners",
                7,
                "has no basic_auth_users, so /metrics and /api/v1 are open",
            )],
        );
        // an unreadable file is check_web_config's to report
        assert_problems(&partners("/nonexistent/web.yml", &["acme"]), &[]);
        // no partners: basic auth is not required
        assert_problems(&partners(&none, &[]), &[]);
    }

    #[test]
    fn http_listen_is_an_ip_and_port() {
        assert_problems(
            &with_file("[http]\nlisten = \"localhost:9731\"\n"),
            &[(
                "http.listen",
                6,
                "is not an IP address and port; write e.g. \"127.0.0.1:9731\"",
            )],
        );
    }

    #[test]
    fn http_connection_limits_are_bounded() {
        assert_problems(
            &with_file("[http]\nmax_connections_per_peer = 0\nheader_timeout = \"1h\"\n"),
            &[
                (
                    "http.max_connections_per_peer",
                    6,
                    "max_connections_per_peer = 0 would refuse every client",
                ),
                (
                    "http.header_timeout",
                    7,
                    "header_timeout must be more than 0",
                ),
            ],
        );
    }

    #[test]
    fn siem_destination_matches_the_transport() {
        assert_problems(
            &with_file("[siem]\ntransport = \"tls\"\n"),
            &[("siem.address", 5, "transport = \"tls\" needs an `address`")],
        );
        assert_problems(
            &with_file(
                "[siem]\ntransport = \"relp\"\naddress = \"siem.example\"\nurl = \"https://x/\"\n",
            ),
            &[
                (
                    "siem.address",
                    7,
                    "address \"siem.example\" is not host:port",
                ),
                ("siem.url", 8, "`url` is for transport = \"http\""),
            ],
        );
        assert_problems(
            &with_file("[siem]\ntransport = \"http\"\naddress = \"siem.example:514\"\n"),
            &[
                ("siem.url", 5, "transport = \"http\" needs a `url`"),
                (
                    "siem.address",
                    7,
                    "`address` is for the tls, relp, tcp and udp transports",
                ),
            ],
        );
        assert_problems(
            &with_file("[siem]\ntransport = \"http\"\nurl = \"relay:9731\"\n"),
            &[("siem.url", 7, "is not an http:// or https:// URL")],
        );
        assert_problems(
            &with_file("[siem]\ntransport = \"udp\"\naddress = \"[2001:db8::1]:514\"\n"),
            &[],
        );
    }

    #[test]
    fn siem_http_batches_are_capped_in_bytes_within_range() {
        let http = |max: &str| {
            with_file(&format!(
                "[siem]\ntransport = \"http\"\nurl = \"https://relay:9731/hooks/a\"\n\
                 max_batch_bytes = \"{max}\"\n"
            ))
        };
        assert_problems(&http("1KiB"), &[]);
        assert_problems(&http("25MiB"), &[]);
        for bad in ["1000B", "26MiB", "0B"] {
            assert_problems(
                &http(bad),
                &[("siem.max_batch_bytes", 8, "give 1KiB to 25MiB")],
            );
        }
        assert_problems(
            &with_file(
                "[siem]\ntransport = \"tls\"\naddress = \"s:6514\"\nmax_batch_bytes = \"1MiB\"\n",
            ),
            &[(
                "siem.max_batch_bytes",
                8,
                "`max_batch_bytes` is for transport = \"http\"",
            )],
        );
    }

    #[test]
    fn siem_client_certificate_and_key_come_together() {
        assert_problems(
            &with_file(
                "[siem]\ntransport = \"tls\"\naddress = \"s:6514\"\nclient_cert_file = \"/c\"\n",
            ),
            &[("siem.client_cert_file", 8, "needs client_key_file too")],
        );
        assert_problems(
            &with_file(
                "[siem]\ntransport = \"tls\"\naddress = \"s:6514\"\nclient_key_file = \"/k\"\n",
            ),
            &[("siem.client_key_file", 8, "needs client_cert_file too")],
        );
    }

    #[test]
    fn every_facility_the_formatter_supports_is_accepted() {
        // check-config once had its own list, without ntp, audit, alert and
        // clock (facilities 12 to 15), which the formatter writes.
        for f in FACILITIES.iter().chain(&["ntp", "audit", "alert", "clock"]) {
            assert_problems(
                &with_file(&format!(
                    "[siem]\ntransport = \"udp\"\naddress = \"s:514\"\nfacility = \"{f}\"\n"
                )),
                &[],
            );
        }
    }

    #[test]
    fn siem_syslog_fields_are_checked() {
        assert_problems(
            &with_file(
                "[siem]\ntransport = \"tcp\"\naddress = \"s:514\"\nfacility = \"security\"\n\
                 sd_id = \"relstat\"\nrate_limit = 100\nburst = 0\ntls = true\n",
            ),
            &[
                (
                    "siem.facility",
                    8,
                    "unknown syslog facility \"security\"; facilities: kern",
                ),
                (
                    "siem.sd_id",
                    9,
                    "is not an RFC 5424 SD-ID: write name@number",
                ),
                (
                    "siem.burst",
                    11,
                    "burst must be at least 1 when rate_limit is set",
                ),
                ("siem.tls", 12, "tls = true is for transport = \"relp\""),
            ],
        );
        for bad in [
            "rel stat@1",
            "relstat@",
            "r=s@1",
            "relstat@12a",
            "a_very_long_sd_name_here@12345678",
        ] {
            assert!(!is_sd_id(bad), "{bad}");
        }
        assert!(is_sd_id("relstat@32473"));
        assert_problems(
            &with_file("[siem]\ntransport = \"relp\"\naddress = \"s:2514\"\ntls = true\n"),
            &[],
        );
    }

    #[test]
    fn spool_max_bytes_must_be_positive() {
        assert_problems(
            &with_file("[spool]\nmax_bytes = \"0 B\"\n"),
            &[("spool.max_bytes", 6, "max_bytes must be more than 0")],
        );
    }

    #[test]
    fn gate_approval_sources_are_sources_of_this_agent() {
        assert_problems(
            &with_file(
                "[model.gate]\nenvironments = [\"production\", \"\"]\n\
                 approval_sources = [\"a\", \"jira\"]\n",
            ),
            &[
                (
                    "model.gate.environments[1]",
                    6,
                    "an empty environment name matches no event",
                ),
                (
                    "model.gate.approval_sources[1]",
                    7,
                    "\"jira\" is not a source of this agent (sources: a); gates are evaluated \
                     where the approvals are (see \"The approval gate\" in docs/events.md): \
                     run the gate on a relay",
                ),
            ],
        );
    }

    const FREEZE: &str = "[[anomalies.change_freeze.windows]]\n";

    #[test]
    fn a_freeze_window_is_absolute_or_weekly() {
        assert_problems(
            &with_file(&format!(
                "{FREEZE}start = \"2026-12-20T00:00:00Z\"\ndays = [\"fri\"]\n"
            )),
            &[(
                "anomalies.change_freeze.windows[0]",
                5,
                "mixes both kinds of keys",
            )],
        );
        assert_problems(
            &with_file(&format!("{FREEZE}environments = [\"production\"]\n")),
            &[(
                "anomalies.change_freeze.windows[0]",
                5,
                "sets neither kind of keys",
            )],
        );
    }

    #[test]
    fn an_absolute_freeze_window_has_rfc3339_start_before_end() {
        assert_problems(
            &with_file(&format!(
                "{FREEZE}start = \"2026-12-20T00:00:00Z\"\nend = \"2026-12-19T00:00:00Z\"\n\
                 {FREEZE}start = \"2026-12-20\"\n{FREEZE}end = \"2026-12-20T00:00:00Z\"\n"
            )),
            &[
                (
                    "anomalies.change_freeze.windows[0].end",
                    7,
                    "end must be after start",
                ),
                (
                    "anomalies.change_freeze.windows[1].end",
                    8,
                    "needs both start and end",
                ),
                (
                    "anomalies.change_freeze.windows[1].start",
                    9,
                    "is not an RFC 3339 time",
                ),
                (
                    "anomalies.change_freeze.windows[2].start",
                    10,
                    "needs both start and end",
                ),
            ],
        );
    }

    #[test]
    fn a_weekly_freeze_window_has_days_times_and_a_zone() {
        assert_problems(
            &with_file(&format!(
                "{FREEZE}days = [\"fri\", \"Sat\"]\nfrom = \"4pm\"\ntimezone = \"Europe/Berlinn\"\n\
                 {FREEZE}from = \"16:00\"\nto = \"08:00\"\n"
            )),
            &[
                (
                    "anomalies.change_freeze.windows[0].to",
                    5,
                    "a weekly window needs from and to",
                ),
                (
                    "anomalies.change_freeze.windows[0].days[1]",
                    6,
                    "\"Sat\" is not a day; days: mon",
                ),
                ("anomalies.change_freeze.windows[0].from", 7, "write HH:MM"),
                (
                    "anomalies.change_freeze.windows[0].timezone",
                    8,
                    "not an IANA time zone",
                ),
                (
                    "anomalies.change_freeze.windows[1].days",
                    9,
                    "a weekly window needs days",
                ),
            ],
        );
        // timezone defaults to UTC
        assert_problems(
            &with_file(&format!(
                "{FREEZE}days = [\"sun\"]\nfrom = \"00:00\"\nto = \"23:59\"\n"
            )),
            &[],
        );
    }

    #[test]
    fn flapping_needs_a_positive_threshold_and_window() {
        assert_problems(
            &with_file(
                "[anomalies.flapping]\nmax_transitions = 0\nwindow = \"0s\"\n\
                 [anomalies.status_conflict]\nwindow = \"0s\"\n",
            ),
            &[
                (
                    "anomalies.flapping.max_transitions",
                    6,
                    "max_transitions must be at least 1",
                ),
                (
                    "anomalies.flapping.window",
                    7,
                    "window must be longer than 0",
                ),
                (
                    "anomalies.status_conflict.window",
                    9,
                    "window must be longer than 0",
                ),
            ],
        );
    }

    #[test]
    fn every_mistake_is_reported_at_once() {
        let text = "[http]\nlisten = \"9731\"\n\n\
                    [[sources]]\nname = \"w\"\ntype = \"webhook\"\npreset = \"github\"\n\
                    paths = [\"/x\"]\n\n\
                    [model.gate]\nenvironments = [\"production\"]\napproval_sources = [\"jira\"]\n";
        assert_problems(
            text,
            &[
                ("http.listen", 2, "is not an IP address and port"),
                (
                    "sources[0].secret_file",
                    5,
                    "a webhook source needs a secret",
                ),
                ("sources[0].paths", 8, "`paths` is a key of file sources"),
                (
                    "model.gate.approval_sources[0]",
                    12,
                    "\"jira\" is not a source of this agent",
                ),
            ],
        );
        let err = crate::config::ConfigError::Invalid(problems(text)).to_string();
        assert!(err.starts_with("4 problems in the configuration:"), "{err}");
        assert!(err.contains("\n  t.toml:2: http.listen: "), "{err}");
    }

    #[test]
    fn warns_when_production_has_no_gate() {
        let w = warnings(&load(FILE));
        assert_eq!(w.len(), 1, "{w:?}");
        assert_eq!(w[0].key, "model.gate");
        assert!(
            w[0].message.contains("the approval gate is off"),
            "{}",
            w[0]
        );

        let text =
            with_file("[model.gate]\nenvironments = [\"staging\"]\napproval_sources = [\"a\"]\n");
        let w = warnings(&load(&text));
        assert_eq!(w.len(), 1, "{w:?}");
        assert_eq!(
            (w[0].key.as_str(), w[0].line),
            ("model.gate.environments", Some(6))
        );
        assert!(
            w[0].message.contains("the gate is off for production"),
            "{}",
            w[0]
        );

        let text = with_file(
            "[model.gate]\nenvironments = [\"production\"]\napproval_sources = [\"a\"]\n",
        );
        assert_eq!(warnings(&load(&text)), vec![]);
    }

    #[test]
    fn warns_when_a_preset_may_find_no_environment() {
        let gate = "[model.gate]\nenvironments = [\"production\"]\napproval_sources = [\"a\"]\n";
        let src = |preset: &str, rest: &str| {
            with_file(&format!(
                "[[sources]]\nname = \"cd\"\ntype = \"webhook\"\npreset = \"{preset}\"\n\
                 secret_file = \"/s\"\n{rest}{gate}"
            ))
        };
        for preset in ["jenkins", "argocd", "flux", "argo_rollouts"] {
            let w = warnings(&load(&src(preset, "")));
            assert_eq!(w.len(), 1, "{preset}: {w:?}");
            assert_eq!(w[0].key, "sources[1].defaults");
            assert!(
                w[0].message.contains("source `cd`")
                    && w[0].message.contains(preset)
                    && w[0].message.contains("missing field environment"),
                "{}",
                w[0]
            );
            for fix in [
                "[sources.defaults]\nenvironment = \"production\"\n",
                "[sources.fields]\nenvironment = \"metadata.namespace\"\n",
            ] {
                assert_eq!(warnings(&load(&src(preset, fix))), vec![], "{preset}");
            }
        }
        // Tools whose payloads always name one (or whose preset supplies it).
        for preset in [
            "github",
            "gitlab",
            "azure_devops",
            "jira",
            "servicenow",
            "generic",
        ] {
            assert_eq!(warnings(&load(&src(preset, ""))), vec![], "{preset}");
        }
    }

    /// docs/config.md's example, plus a `jira` webhook source and the status model's
    /// `[model]` with a gate whose approval source exists.
    const FULL_EXAMPLE: &str = r##"
[agent]
data_dir = "/var/lib/relstat"
hostname = "web-1"          # default: the system hostname
site = "dc-east"            # default site of this agent's events; in SIEM events and bundles
log = "stderr"              # stderr (plain lines journald reads well) | syslog (local, via the syslog crate)

[http]
listen = "127.0.0.1:9731"
web_config_file = "/etc/relstat/web-config.yml"   # exporter-toolkit format: tls_server_config, basic_auth_users
                                                   # applies to /metrics and /api; /hooks use each source's own auth

[tracking]
finished_retention = "1h"   # per-release series of finished keys leave the exposition after this
max_tracked = 10000         # per-release series cap; oldest finished first
stale_after = "30d"         # also how long finished keys are kept (id_reuse, late, duplicates)
history_retention = "400d"  # history rows (the hash-chained audit trail) are kept this long
anchor_interval = "1h"      # the chain's head to the SIEM (or bundles) as an anchor record
dedupe_window = "7d"
max_future = "5m"
max_label_values = 200      # per label (service, environment, site); beyond: value "other", counted
duration_buckets = ["30s", "1m", "5m", "15m", "30m", "1h", "2h", "4h", "8h", "24h", "72h", "168h"]

[[sources]]
name = "deploy-log"
type = "file"               # file | webhook | poll | kubernetes
paths = ["/var/log/deploy/*.log"]   # globs; new matching files are picked up
format = "json"             # json (NDJSON) | logfmt | regex
start_at = "beginning"      # first run only; later runs resume from the checkpoint
# match = 'deploy'          # optional prefilter: other lines count as `skipped`
# pattern = '^(?P<time>\S+) (?P<release>\S+) ...'   # format = "regex": named groups
# time_format = "%d/%b/%Y:%H:%M:%S %z"             # or epoch_s / epoch_ms; default RFC 3339
[sources.fields]            # canonical field = record field (dotted path for nested JSON)
environment = "env"         # omitted fields: the canonical name itself is read
[sources.status_map]        # raw status -> state id; a raw value that is already a state id
SUCCESS = "deployed"        # passes through; anything else counts as `unmapped`
[sources.defaults]          # constant values for fields the records lack
environment = "production"

[[sources]]
name = "github"
type = "webhook"            # served at /hooks/{name}; a secret is required
preset = "github"           # a tool of docs/presets.md (check-config lists them)
secret_file = "/etc/relstat/github.secret"

[[sources]]
name = "jenkins"
type = "poll"
preset = "jenkins"          # a tool of docs/presets.md that can be polled
urls = ["https://jenkins.example/job/deploy-prod/"]
interval = "30s"
token_file = "/etc/relstat/jenkins.token"
[sources.defaults]
environment = "production"  # Jenkins builds name none unless a parameter does

[[sources]]
name = "k8s"
type = "kubernetes"         # Deployment rollout status as statuses
api_server = "https://10.0.0.1:6443"
token_file = "/var/run/secrets/kubernetes.io/serviceaccount/token"
ca_file = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
namespaces = ["shop"]
[sources.defaults]
environment = "production"

[[sources]]
name = "jira"
type = "webhook"
preset = "jira"
secret_file = "/etc/relstat/jira.secret"

[siem]                      # absent: no SIEM; anomalies are counted and kept in history only
transport = "tls"           # tls | relp | tcp | udp | http
address = "siem.example:6514"  # transport = "http": url = "https://relay.example:9731/hooks/site-a"
format = "rfc5424"          # rfc5424 | cef | leef | json
ca_file = "/etc/relstat/siem-ca.pem"
# client_cert_file, client_key_file, server_name
facility = "authpriv"
sd_id = "relstat@32473"
rate_limit = 0              # events per second, 0 = unlimited (SIEM licences often cap EPS)
burst = 1000
forward = "anomalies"       # anomalies | all

[spool]                     # the outbox exists when [siem] is set or enabled = true (export-only sites)
enabled = false
max_bytes = "1GiB"
when_full = "block"         # block | drop_oldest
signing_key_file = "/etc/relstat/bundle.ed25519"   # this site's private key, for export
trusted_keys_dir = "/etc/relstat/trusted-sites"    # public keys of sites, for import

[anomalies.flapping]         # every rule: enabled, severity, and its own parameters
max_transitions = 5
window = "1h"
[anomalies.status_conflict]
window = "5m"
[anomalies.stuck]
enabled = true
severity = "warning"
[[anomalies.change_freeze.windows]]   # absolute
start = "2026-12-20T00:00:00Z"
end = "2027-01-04T08:00:00Z"
environments = ["production"]
[[anomalies.change_freeze.windows]]   # weekly
days = ["fri", "sat", "sun"]
from = "16:00"                         # on the first day
to = "08:00"                           # on the day after the last
timezone = "Europe/Berlin"
environments = ["production"]

[model]
builtin = true
[model.states.in_progress]
stuck_after = "2h"
[model.gate]
environments = ["production"]
approval_sources = ["jira"]
grace = "2m"
[model.roles]
release_managers = ["alice", "bob"]
deployers = ["deploy-bot", "argocd"]
[[model.permissions]]
into = ["deployed", "in_progress"]
environments = ["production"]
allow = ["@release_managers", "@deployers"]
"##;

    /// `files` against real files: missing, empty and unreadable secrets
    /// are problems, a secret others can read is a warning.
    #[test]
    fn secret_and_key_files_are_checked_on_disk() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display();
        std::fs::write(dir.path().join("empty"), "\n").unwrap();
        std::fs::write(dir.path().join("open"), "s3cret\n").unwrap();
        std::fs::set_permissions(
            dir.path().join("open"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        std::fs::write(dir.path().join("ok"), "s3cret\n").unwrap();
        std::fs::set_permissions(
            dir.path().join("ok"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        let text = format!(
            "[[sources]]\nname = \"a\"\ntype = \"webhook\"\npreset = \"github\"\n\
             secret_file = \"{d}/missing\"\n\n\
             [[sources]]\nname = \"b\"\ntype = \"webhook\"\npreset = \"github\"\n\
             secret_file = \"{d}/empty\"\n\n\
             [[sources]]\nname = \"c\"\ntype = \"webhook\"\npreset = \"github\"\n\
             secret_file = \"{d}/open\"\n\n\
             [spool]\nsigning_key_file = \"{d}/ok\"\n"
        );
        let (problems, warnings) = files(&load(&text));
        let p: Vec<(&str, Option<usize>)> =
            problems.iter().map(|p| (p.key.as_str(), p.line)).collect();
        assert_eq!(
            p,
            vec![
                ("sources[0].secret_file", Some(5)),
                ("sources[1].secret_file", Some(11))
            ]
        );
        assert!(
            problems[0].message.contains("does not exist"),
            "{}",
            problems[0]
        );
        assert!(problems[1].message.contains("is empty"), "{}", problems[1]);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert_eq!(warnings[0].key, "sources[2].secret_file");
        assert!(warnings[0].message.contains("chmod 600"), "{}", warnings[0]);
    }

    #[test]
    fn max_open_files_must_be_positive() {
        let p = problems(&format!("[agent]\nmax_open_files = 0\n{}", with_file("")));
        assert!(p.iter().any(|p| p.key == "agent.max_open_files"), "{p:?}");
    }

    #[test]
    fn notify_routes_name_known_rules_and_statuses() {
        let text = "[[notify.destinations]]\nname = \"chat\"\nkind = \"slack\"\n\
                    url_file = \"/u\"\n[[notify.destinations.routes]]\n\
                    anomalies = [\"stuck\", \"stcuk\"]\nstatuses = [\"failed\", \"broken\"]\n";
        assert_problems(
            text,
            &[
                (
                    "notify.destinations[0].routes[0].anomalies",
                    6,
                    "unknown anomaly rule \"stcuk\"",
                ),
                (
                    "notify.destinations[0].routes[0].statuses",
                    7,
                    "unknown status \"broken\"",
                ),
            ],
        );
        let good = text.replace(", \"stcuk\"", "").replace(", \"broken\"", "");
        assert_problems(&good, &[]);
    }

    #[test]
    fn notify_url_files_must_exist_hold_one_https_url() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display();
        let write = |name: &str, body: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, body).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        };
        write("empty", "\n");
        write("plain", "http://hooks.example/x\n");
        write("loop", "http://127.0.0.1:9/x\n");
        write("good", "https://hooks.slack.com/services/T/B/X\n");
        let mut text = String::new();
        for n in ["missing", "empty", "plain", "loop", "good"] {
            text.push_str(&format!(
                "[[notify.destinations]]\nname = \"{n}\"\nkind = \"slack\"\n\
                 url_file = \"{d}/{n}\"\n"
            ));
        }
        let (problems, _) = files(&load(&text));
        let p: Vec<(&str, &str)> = problems
            .iter()
            .map(|p| (p.key.as_str(), p.message.as_str()))
            .collect();
        assert_eq!(p.len(), 3, "{p:?}");
        assert_eq!(p[0].0, "notify.destinations[0].url_file");
        assert!(p[0].1.contains("does not exist"), "{p:?}");
        assert_eq!(p[1].0, "notify.destinations[1].url_file");
        assert!(p[1].1.contains("is empty"), "{p:?}");
        assert_eq!(p[2].0, "notify.destinations[2].url_file");
        assert!(p[2].1.contains("not loopback"), "{p:?}");
    }

    #[test]
    fn readiness_names_known_rules_and_weights_of_at_most_100() {
        let base = format!("{FILE}\n[readiness]\n");
        assert_problems(&base, &[]);
        assert_problems(
            &format!(
                "{base}rules = [\"stuck\", \"nope\"]\ndeployments = 0\n\
                 max_change_failure_rate = 1.5\nfreeze_horizon = \"8d\"\n\n\
                 [readiness.weights]\napproval = 90\nanomalies = -1\n"
            ),
            &[
                ("readiness.rules[1]", 7, "unknown rule \"nope\""),
                ("readiness.deployments", 8, "at least 1"),
                ("readiness.max_change_failure_rate", 9, "from 0 to 1"),
                ("readiness.freeze_horizon", 10, "at most 7d"),
                ("readiness.weights", 12, "more than 100"),
                ("readiness.weights.anomalies", 14, "0 or more"),
            ],
        );
    }
}
