//! The layering rules, checked on every test run: each `crate::` (and
//! `super::` climbing out of a module) path in `src/**/*.rs` is mapped to
//! the module it names, and an import a rule forbids fails the test with
//! its file and line.
//!
//! The rules (lib.rs, `# Layout`):
//! - only the entry points (main, cli) and the runtime (agent) import the
//!   runtime;
//! - sources import nothing from the runtime, core, store, sinks, api,
//!   admin or spool: they hand batches over through `ingest`;
//! - the tracker (track) and the rules (detect) import nothing from cli,
//!   the runtime, http, api, sources or sinks;
//! - `ingest` and `dlq` are leaves: they import only `event` (and ingest
//!   the dead letters a batch carries);
//! - the top-level modules import each other without a cycle (test code
//!   included), so each can be read, and changed, knowing only those below.

use std::path::{Path, PathBuf};

/// One rule: modules under `from` must not import the modules in `never`
/// (or, with `only`, anything but them).
struct Rule {
    from: &'static [&'static str],
    never: &'static [&'static str],
    only: Option<&'static [&'static str]>,
    why: &'static str,
}

const RULES: &[Rule] = &[
    Rule {
        from: &["*"],
        never: &["agent"],
        only: None,
        why: "only main, cli and the runtime import the runtime (agent)",
    },
    Rule {
        from: &["sources"],
        never: &["agent", "core", "store", "sinks", "api", "admin", "spool"],
        only: None,
        why: "sources hand batches to the core through ingest only",
    },
    Rule {
        from: &["track", "detect"],
        never: &["cli", "agent", "http", "api", "sources", "sinks"],
        only: None,
        why: "the tracker and the rules do not reach out",
    },
    Rule {
        from: &["ingest"],
        never: &[],
        only: Some(&["ingest", "event", "dlq"]),
        why: "ingest is a leaf (the event and the dead letters a batch carries)",
    },
    Rule {
        from: &["dlq"],
        never: &[],
        only: Some(&["dlq", "event"]),
        why: "dlq is a leaf (event only): sources and the core both carry dead letters",
    },
];

/// Modules allowed to import the runtime.
const RUNTIME_USERS: &[&str] = &["", "main", "cli", "agent"];

/// A forbidden import.
#[derive(Debug, PartialEq)]
struct Violation {
    file: String,
    line: usize,
    from: String,
    to: String,
    why: &'static str,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}: {} imports {} ({})",
            self.file, self.line, self.from, self.to, self.why
        )
    }
}

/// The module path of a file under src/ (`sources/webhook/mod.rs` ->
/// `[sources, webhook]`; lib.rs -> `[]`).
fn module_of(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if let Some(last) = parts.pop() {
        let stem = last.trim_end_matches(".rs");
        if !matches!(stem, "mod" | "lib") {
            parts.push(stem.to_string());
        }
    }
    parts
}

/// The code of `text` with comments, string literals and non-ASCII
/// characters blanked (newlines kept, so offsets still give line numbers).
fn code_only(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'/' && b.get(i + 1) == Some(&b'/') {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
            continue;
        }
        if c == b'/' && b.get(i + 1) == Some(&b'*') {
            i += 2;
            while i < b.len() && !(b[i] == b'*' && b.get(i + 1) == Some(&b'/')) {
                if b[i] == b'\n' {
                    out.push('\n');
                }
                i += 1;
            }
            i += 2;
            continue;
        }
        if c == b'"' {
            // Raw strings (r"..", r#".."#) are rare around paths; a plain
            // string ends at an unescaped quote.
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' {
                    i += 1;
                } else if b[i] == b'\n' {
                    out.push('\n');
                }
                i += 1;
            }
            i += 1;
            out.push_str("\"\"");
            continue;
        }
        if c == b'\'' && b.get(i + 2) == Some(&b'\'') {
            out.push_str("' '");
            i += 3;
            continue;
        }
        // ASCII only (a path is): byte offsets stay char boundaries.
        out.push(if c.is_ascii() { c as char } else { ' ' });
        i += 1;
    }
    out
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The paths a `use` group `{a::b, c::{d, e}, f}` starting at `s` names,
/// each with the offset where it starts.
fn group_paths(s: &str, base: usize) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut depth = 0;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => {
                out.push((base + start, s[start..i].trim().to_string()));
                return out;
            }
            '}' => depth -= 1,
            ',' if depth == 0 => {
                out.push((base + start, s[start..i].trim().to_string()));
                start = i + 1;
            }
            _ => {}
        }
    }
    out
}

/// Every module path `code` (of the module `module`) names, with its offset:
/// `crate::a::b` -> `[a, b]`, `super::x` resolved against `module`.
fn imports(code: &str, module: &[String]) -> Vec<(usize, Vec<String>)> {
    let mut out = Vec::new();
    // Inline modules (`mod tests { .. }`) add a level `super` climbs first.
    let mut inline: Vec<usize> = Vec::new();
    let mut depth = 0usize;
    let bytes = code.as_bytes();
    let mut i = 0;
    while i < code.len() {
        let c = bytes[i] as char;
        let boundary = i == 0 || !is_ident(bytes[i - 1] as char) && bytes[i - 1] != b':';
        if c == '{' {
            depth += 1;
        } else if c == '}' {
            depth = depth.saturating_sub(1);
            if inline.last() == Some(&depth) {
                inline.pop();
            }
        } else if boundary && code[i..].starts_with("mod ") {
            let rest = &code[i + 4..];
            let name_len = rest.find(|c: char| !is_ident(c)).unwrap_or(rest.len());
            if rest[name_len..].trim_start().starts_with('{') {
                inline.push(depth);
            }
        } else if boundary && (code[i..].starts_with("crate::") || code[i..].starts_with("super::"))
        {
            let mut base: Vec<String> = Vec::new();
            let mut j = i;
            if code[i..].starts_with("crate::") {
                j += "crate::".len();
            } else {
                base = module.to_vec();
                let mut levels = inline.len();
                while code[j..].starts_with("super::") {
                    j += "super::".len();
                    if levels > 0 {
                        levels -= 1;
                    } else {
                        base.pop();
                    }
                }
            }
            let tails = if code[j..].starts_with('{') {
                group_paths(&code[j + 1..], j + 1)
            } else {
                vec![(j, code[j..].to_string())]
            };
            for (_, tail) in tails {
                let mut path = base.clone();
                for seg in tail.split("::") {
                    let seg = seg.trim();
                    let n = seg.find(|c: char| !is_ident(c)).unwrap_or(seg.len());
                    if n == 0 || seg[..n].chars().next().is_some_and(char::is_uppercase) {
                        break;
                    }
                    path.push(seg[..n].to_string());
                    if n < seg.len() {
                        break;
                    }
                }
                if !path.is_empty() {
                    out.push((i, path));
                }
            }
            i = j;
            continue;
        }
        i += 1;
    }
    out
}

/// The module a path names, as the rules see it: the top level, and the
/// second level under sources, core and spool (`spool::outbox`).
fn target(path: &[String]) -> String {
    match path {
        [top, second, ..] if matches!(top.as_str(), "sources" | "core" | "spool") => {
            format!("{top}::{second}")
        }
        [top, ..] => top.clone(),
        [] => String::new(),
    }
}

/// The violations in one file (`rel`: its path under src/).
fn check_file(rel: &Path, text: &str) -> Vec<Violation> {
    let module = module_of(rel);
    let from = module.first().cloned().unwrap_or_default();
    let code = code_only(text);
    let mut out = Vec::new();
    for (at, path) in imports(&code, &module) {
        let to = target(&path);
        let to_top = path[0].as_str();
        if to_top == from {
            continue;
        }
        for rule in RULES {
            let applies = rule.from.contains(&"*") || rule.from.contains(&from.as_str());
            if !applies || (rule.from.contains(&"*") && RUNTIME_USERS.contains(&from.as_str())) {
                continue;
            }
            let bad =
                rule.never.contains(&to_top) || rule.only.is_some_and(|ok| !ok.contains(&to_top));
            if bad {
                out.push(Violation {
                    file: format!("src/{}", rel.display()),
                    line: code[..at].matches('\n').count() + 1,
                    from: module.join("::"),
                    to: to.clone(),
                    why: rule.why,
                });
                break; // one report per import
            }
        }
    }
    out
}

/// One top-level import edge, with where it was first seen.
#[derive(Debug, Clone)]
struct Edge {
    from: String,
    to: String,
    at: String,
}

/// The top-level import edges of one file.
fn edges_of(rel: &Path, text: &str) -> Vec<Edge> {
    let module = module_of(rel);
    let from = module.first().cloned().unwrap_or_default();
    if matches!(from.as_str(), "" | "main") {
        return Vec::new(); // lib.rs declares every module; main uses the library
    }
    let code = code_only(text);
    imports(&code, &module)
        .into_iter()
        .filter(|(_, path)| path[0] != from)
        .map(|(at, path)| Edge {
            from: from.clone(),
            to: path[0].clone(),
            at: format!(
                "src/{}:{}",
                rel.display(),
                code[..at].matches('\n').count() + 1
            ),
        })
        .collect()
}

/// A cycle among the modules of `edges`, as the edges that close it, if
/// there is one.
fn find_cycle(edges: &[Edge]) -> Option<Vec<Edge>> {
    use std::collections::BTreeMap;
    let mut out: BTreeMap<&str, Vec<&Edge>> = BTreeMap::new();
    for e in edges {
        let list = out.entry(e.from.as_str()).or_default();
        if !list.iter().any(|x| x.to == e.to) {
            list.push(e);
        }
    }
    // Depth-first search; `path` is the chain of edges from the root.
    fn visit<'a>(
        node: &'a str,
        out: &BTreeMap<&'a str, Vec<&'a Edge>>,
        done: &mut std::collections::BTreeSet<&'a str>,
        path: &mut Vec<&'a Edge>,
    ) -> Option<Vec<Edge>> {
        if done.contains(node) {
            return None;
        }
        for e in out.get(node).map(|v| v.as_slice()).unwrap_or(&[]) {
            if let Some(i) = path.iter().position(|p| p.from == e.to) {
                let mut cycle: Vec<Edge> = path[i..].iter().map(|x| (*x).clone()).collect();
                cycle.push((*e).clone());
                return Some(cycle);
            }
            if e.to == node {
                return Some(vec![(*e).clone()]);
            }
            path.push(e);
            let found = visit(e.to.as_str(), out, done, path);
            path.pop();
            if found.is_some() {
                return found;
            }
        }
        done.insert(node);
        None
    }
    let mut done = std::collections::BTreeSet::new();
    for node in out.keys() {
        let mut path = Vec::new();
        if let Some(c) = visit(node, &out, &mut done, &mut path) {
            return Some(c);
        }
    }
    None
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn the_layering_rules_hold() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    assert!(
        files.len() > 50,
        "found only {} files under src/",
        files.len()
    );
    let mut violations = Vec::new();
    let mut edges = Vec::new();
    for f in &files {
        let rel = f.strip_prefix(&src).unwrap();
        if rel == Path::new("main.rs") {
            continue; // the binary: uses the library by name
        }
        let text = std::fs::read_to_string(f).unwrap();
        violations.extend(check_file(rel, &text));
        edges.extend(edges_of(rel, &text));
    }
    if let Some(cycle) = find_cycle(&edges) {
        let chain: Vec<String> = cycle
            .iter()
            .map(|e| format!("{} -> {} ({})", e.from, e.to, e.at))
            .collect();
        panic!(
            "the top-level modules import each other in a cycle:\n{}",
            chain.join("\n")
        );
    }
    let report: Vec<String> = violations.iter().map(|v| v.to_string()).collect();
    assert!(
        report.is_empty(),
        "{} layering violations:\n{}",
        report.len(),
        report.join("\n")
    );
}

#[test]
fn the_checker_flags_what_the_rules_forbid() {
    let found = |file: &str, text: &str| -> Vec<String> {
        check_file(
            Path::new(file),
            &text.replace("KRATE", "crate").replace("SUPER", "super"),
        )
        .into_iter()
        .map(|v| format!("{}:{} {}", v.file, v.line, v.to))
        .collect()
    };
    // A plain path, a path in an expression, a `use` group, `super` climbing
    // out. (KRATE and SUPER stand for `crate` and `super`, so that tools
    // reading this file do not take the samples for imports.)
    assert_eq!(
        found("sources/file/mod.rs", "use KRATE::agent::Shared;\n"),
        ["src/sources/file/mod.rs:1 agent"]
    );
    assert_eq!(
        found(
            "sources/poll/mod.rs",
            "fn f() {\n    let s = KRATE::spool::outbox::Policy::new(1, w);\n}\n"
        ),
        ["src/sources/poll/mod.rs:2 spool::outbox"]
    );
    assert_eq!(
        found(
            "track/mod.rs",
            "use KRATE::{\n    event::Event,\n    sinks::metrics::Metrics,\n};\n"
        ),
        ["src/track/mod.rs:1 sinks"]
    );
    assert_eq!(
        found(
            "sources/webhook/mod.rs",
            "use SUPER::SUPER::store::Store;\n"
        ),
        ["src/sources/webhook/mod.rs:1 store"]
    );
    assert_eq!(
        found("ingest.rs", "use KRATE::config::Config;\n"),
        ["src/ingest.rs:1 config"]
    );
    // What is allowed, or not code, passes.
    assert!(
        found(
            "sources/file/mod.rs",
            "use KRATE::ingest::Ingest;\nuse SUPER::line::X;\n"
        )
        .is_empty()
    );
    assert!(
        found(
            "sources/file/mod.rs",
            "// KRATE::agent::Shared\n/// [`KRATE::core`]\nlet s = \"KRATE::agent\";\n"
        )
        .is_empty()
    );
    assert!(found("cli.rs", "KRATE::agent::run(p, l, o)\n").is_empty());
    assert!(
        found(
            "track/tests.rs",
            "mod t {\n    use SUPER::SUPER::Tracker;\n}\n"
        )
        .is_empty()
    );
}

#[test]
fn the_cycle_check_finds_a_cycle() {
    let edge = |from: &str, to: &str| Edge {
        from: from.into(),
        to: to.into(),
        at: format!("src/{from}.rs:1"),
    };
    let chain = vec![edge("a", "b"), edge("b", "c"), edge("a", "c")];
    assert!(find_cycle(&chain).is_none());
    let mut looped = chain.clone();
    looped.push(edge("c", "a"));
    let cycle = find_cycle(&looped).expect("a -> b -> c -> a");
    let names: Vec<(String, String)> = cycle.into_iter().map(|e| (e.from, e.to)).collect();
    assert!(names.len() >= 2, "{names:?}");
    assert_eq!(
        names.first().unwrap().0,
        names.last().unwrap().1,
        "{names:?}"
    );
    // From a file: the edges it names, lib.rs and the module itself aside.
    let found = edges_of(
        Path::new("config/mod.rs"),
        &"use KRATE::check::x;\nuse KRATE::config::y;\n".replace("KRATE", "crate"),
    );
    let found: Vec<(String, String)> = found.into_iter().map(|e| (e.from, e.to)).collect();
    assert_eq!(found, [("config".to_string(), "check".to_string())]);
}
