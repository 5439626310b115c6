//! The benchmark scripts (benches/*.sh, benches/*.py) are not run by the
//! suite (they take minutes and want an idle machine); this checks that
//! each still parses (`bash -n`, Python's `ast`), so a broken edit shows up
//! before someone needs the figures.

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
    let all = scripts("sh");
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
