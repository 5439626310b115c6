//! The repository documents itself: no reference to a document users never
//! see, every metric family the example agent exposes is in docs/metrics.md,
//! and `man relstat` points at the installed docs. (docs/config.md is kept
//! true by the unit tests in src/config/reference.rs.)

use std::path::{Path, PathBuf};

use crate::util::{ExampleAgent, http_get, relstat, root, stdout, wait_until};

/// `SPEC` or `SPEC.md` as a word (what `grep -E '\bSPEC(\.md)?\b'` finds).
fn spec_references(text: &str) -> Vec<(usize, String)> {
    let word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
    let mut found = Vec::new();
    for (n, line) in text.lines().enumerate() {
        for (i, _) in line.match_indices("SPEC") {
            let before = line[..i].chars().next_back();
            let after = line[i + 4..].chars().next();
            if !word(before) && !word(after) {
                found.push((n + 1, line.trim().to_string()));
            }
        }
    }
    found
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            // build.sh's output: not part of the repository
            if !path.ends_with("packaging/generated") {
                files_under(&path, out);
            }
        } else {
            out.push(path);
        }
    }
}

#[test]
fn the_spec_reference_finder_finds_what_grep_finds() {
    assert_eq!(spec_references("see SPEC section 2").len(), 1);
    assert_eq!(spec_references("(SPEC.md)").len(), 1);
    assert_eq!(spec_references("SPEC: x\nSPEC 4").len(), 2);
    assert!(spec_references("FULL_SPEC_EXAMPLE SPECIAL inSPECt").is_empty());
}

#[test]
fn no_reference_to_spec_in_src_docs_readme_or_packaging() {
    let root = root();
    let mut files = vec![root.join("README.md")];
    for dir in ["src", "docs", "packaging"] {
        files_under(&root.join(dir), &mut files);
    }
    assert!(files.len() > 50, "only {} files found", files.len());
    let mut found = Vec::new();
    for f in &files {
        let Ok(text) = std::fs::read_to_string(f) else {
            continue; // not text
        };
        for (line, what) in spec_references(&text) {
            found.push(format!(
                "{}:{line}: {what}",
                f.strip_prefix(&root).unwrap().display()
            ));
        }
    }
    assert!(
        found.is_empty(),
        "users never see SPEC: point at docs/config.md, docs/metrics.md, docs/events.md \
         instead:\n{}",
        found.join("\n")
    );
}

/// The metric family names of an exposition (`# TYPE name type`).
fn families(exposition: &str) -> Vec<String> {
    exposition
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// What docs/metrics.md names: every `name` in backticks.
fn documented(doc: &str) -> std::collections::BTreeSet<String> {
    doc.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

#[test]
fn docs_metrics_md_names_every_family_the_example_exposes() {
    // The agent: examples/quickstart.toml with its example logs.
    let agent = ExampleAgent::start(true);
    let port = agent.port;
    // Ready, and the example logs read: transitions and histograms exist.
    let mut exposition = String::new();
    let read = wait_until(30, || {
        exposition = http_get(port, "/metrics")
            .map(|(_, b)| b)
            .unwrap_or_default();
        exposition.contains("relstat_status_duration_seconds_bucket")
            && exposition.contains("relstat_release_status{")
    });
    assert!(read, "the example's logs were not processed:\n{exposition}");

    let doc = std::fs::read_to_string(root().join("docs/metrics.md")).unwrap();
    let named = documented(&doc);
    let shown = families(&exposition);
    assert!(
        shown.len() >= 20,
        "only {} families: {shown:?}",
        shown.len()
    );
    let missing: Vec<&String> = shown.iter().filter(|f| !named.contains(*f)).collect();
    assert!(
        missing.is_empty(),
        "families the example's /metrics shows that docs/metrics.md does not name: {missing:?}"
    );

    // Families the example does not show (no anomaly, no SIEM...) but the
    // registry declares: every "relstat_..." name in the metrics sink.
    let sink = std::fs::read_to_string(root().join("src/sinks/metrics/mod.rs")).unwrap();
    let declared: Vec<&str> = sink
        .match_indices("\"relstat_")
        .filter_map(|(i, _)| {
            let name = &sink[i + 1..];
            name.find('"').map(|end| &name[..end])
        })
        .filter(|s| s.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
        .collect();
    assert!(declared.len() >= 20, "only {declared:?}");
    let missing: Vec<&&str> = declared.iter().filter(|f| !named.contains(**f)).collect();
    assert!(
        missing.is_empty(),
        "families src/sinks/metrics declares that docs/metrics.md does not name: {missing:?}"
    );
}

#[test]
fn the_man_page_points_at_the_installed_docs() {
    let o = relstat(&["man"]);
    assert!(o.status.success());
    // roff writes '-' as '\-'
    let man = stdout(&o).replace("\\-", "-");
    let mut docs = Vec::new();
    for entry in std::fs::read_dir(root().join("docs")).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if name.ends_with(".md") {
            docs.push(name);
        }
    }
    assert!(docs.len() >= 8, "{docs:?}");
    for doc in &docs {
        assert!(
            man.contains(&format!("\\fB{doc}\\fR")),
            "the man page does not list docs/{doc} (src/cli.rs DOCS)"
        );
    }
    assert!(man.contains("/usr/share/doc/relstat/"), "{man}");
}
