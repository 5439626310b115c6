//! Records the git revision for `relstat_build_info{revision}`, and links
//! the binary with packed relative relocations.
//!
//! Reruns when the checked-out commit changes: it watches this work tree's
//! HEAD and the ref of its branch (paths from `git rev-parse --git-path`, so
//! a linked work tree, whose `.git` is a file, watches its own). Watching a
//! path that does not exist would rerun it, and rebuild relstat, on every
//! build. Outside a git checkout the revision is "unknown".
//!
//! Relocations: the binary is a PIE, and its ~55,000 relative relocations
//! (vtables, `&str`s and panic locations in `.data.rel.ro`) took 1.3 MiB
//! of `.rela.dyn` that the loader reads, and keeps resident, at every
//! start. `-z pack-relative-relocs` stores them as a 22 KiB bitmap
//! (`.relr.dyn`) instead (BENCHMARKS.md, step 10). On Linux with glibc
//! only: the binary then needs glibc 2.36 or later (the version
//! `GLIBC_ABI_DT_RELR`: the .rpm requires it, the .deb declares `libc6 (>=
//! 2.36)` in Cargo.toml). Building for an older glibc: `RELSTAT_NO_RELR=1`. Only the `relstat` binary gets the
//! flag (`rustc-link-arg-bins`), so no other crate is rebuilt for it.
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
    println!("cargo:rerun-if-env-changed=RELSTAT_NO_RELR");
    let target = |v: &str| std::env::var(v).unwrap_or_default();
    if target("CARGO_CFG_TARGET_OS") == "linux"
        && target("CARGO_CFG_TARGET_ENV") == "gnu"
        && std::env::var_os("RELSTAT_NO_RELR").is_none_or(|v| v.is_empty() || v == "0")
    {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
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
