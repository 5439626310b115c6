//! Records the git revision for `relstat_build_info{revision}`.
//!
//! Reruns when the checked-out commit changes: it watches this work tree's
//! HEAD and the ref of its branch (paths from `git rev-parse --git-path`, so
//! a linked work tree, whose `.git` is a file, watches its own). Watching a
//! path that does not exist would rerun it, and rebuild relstat, on every
//! build. Outside a git checkout the revision is "unknown".
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let o = Command::new("git").args(args).output().ok()?;
    if !o.status.success() {
        return None;
    }
    Some(String::from_utf8(o.stdout).ok()?.trim().to_string())
}

fn main() {
    let rev = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=RELSTAT_REVISION={rev}");
    println!("cargo:rerun-if-changed=build.rs");
    let mut watch = vec!["HEAD".to_string(), "packed-refs".to_string()];
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watch.push(branch);
    }
    for name in watch {
        if let Some(path) = git(&["rev-parse", "--git-path", &name])
            && std::path::Path::new(&path).exists()
        {
            println!("cargo:rerun-if-changed={path}");
        }
    }
}
