//! The benchmark scripts (benches/*.sh, benches/*.py, scripts/perf-figures.sh)
//! are not run at full size by the suite (they take minutes and want an
//! idle machine); this checks that each still parses (`bash -n`, Python's
//! `ast`), and runs perf-figures.sh's `--smoke` (a few seconds, the test
//! build's binary), so a broken edit shows up before someone needs the
//! figures.

use std::path::Path;
use std::process::Command;

fn scripts(ext: &str) -> Vec<std::path::PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches");
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    v.sort();
    v
}

#[test]
fn shell_scripts_parse() {
    let mut all = scripts("sh");
    all.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/perf-figures.sh"));
    assert!(all.iter().any(|p| p.ends_with("compare-forward.sh")));
    for p in all {
        let out = Command::new("bash").arg("-n").arg(&p).output().unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            p.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn python_scripts_parse() {
    let Some(python) = crate::util::peer("python3") else {
        return;
    };
    let all = scripts("py");
    assert!(all.iter().any(|p| p.ends_with("latency.py")));
    for p in all {
        let out = Command::new(&python)
            .args(["-c", "import ast, sys; ast.parse(open(sys.argv[1]).read())"])
            .arg(&p)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            p.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// scripts/perf-figures.sh at smoke size against this build's binary: an
/// agent idle with 200 keys, a 6 s soak, replay and `run --once` (and mtail
/// when installed) on 5,000 lines of the shared workload. Checks the
/// figures' lines are printed, not their values.
#[test]
fn perf_figures_smoke() {
    if crate::util::peer("python3").is_none() {
        return;
    }
    let out = Command::new("bash")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/perf-figures.sh"))
        .args(["--smoke", "--bin", env!("CARGO_BIN_EXE_relstat")])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for want in [
        "## 1. RSS idle with 200 open release keys",
        "## 2. RSS over a 6 s soak",
        "2nd half",
        "run --once / replay CPU",
    ] {
        assert!(text.contains(want), "no {want:?} in:\n{text}");
    }
}
