//! The .deb and the .rpm, built from the one release build and checked on
//! this machine by `packaging/test.sh`: dpkg -i, the packaged config passes
//! check-config, the installed unit verifies, the agent runs once as its
//! user, an upgrade keeps a changed config, purge leaves nothing, and the
//! .rpm lists the same files (`rpm -qpl`). Run once: it builds in release.

use std::process::Command;

#[test]
fn packages_build_install_and_purge_cleanly() {
    // The target directory this test binary was built in: the release
    // build goes next to it, shared with anything else that builds release.
    let exe = std::path::PathBuf::from(env!("CARGO_BIN_EXE_relstat"));
    let target = exe.parent().and_then(|p| p.parent()).unwrap();
    let st = Command::new(crate::util::root().join("packaging/test.sh"))
        .env("CARGO_TARGET_DIR", target)
        .status()
        .expect("packaging/test.sh runs");
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    match st.code() {
        Some(0) => {}
        Some(77) if !ci => eprintln!("SKIPPED: packaging/test.sh (see its message)"),
        _ => panic!("packaging/test.sh failed: {st}"),
    }
}

/// Cheap (no build): both packages' asset lists in Cargo.toml install every
/// reference document of docs/ under /usr/share/doc/relstat/, as `man
/// relstat` says. packaging/test.sh checks the built packages' file lists.
#[test]
fn the_packages_install_every_doc_under_usr_share_doc() {
    let root = crate::util::root();
    let manifest: toml::Table = std::fs::read_to_string(root.join("Cargo.toml"))
        .unwrap()
        .parse()
        .unwrap();
    let meta = &manifest["package"]["metadata"];
    // (source glob or file, destination) of each package's assets
    let deb: Vec<(String, String)> = meta["deb"]["assets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a[0].as_str().unwrap().into(), a[1].as_str().unwrap().into()))
        .collect();
    let rpm: Vec<(String, String)> = meta["generate-rpm"]["assets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["source"].as_str().unwrap().into(),
                a["dest"].as_str().unwrap().into(),
            )
        })
        .collect();
    let docs: Vec<String> = std::fs::read_dir(root.join("docs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".md"))
        .collect();
    for must in ["config.md", "metrics.md", "events.md", "runbook.md"] {
        assert!(docs.iter().any(|d| d == must), "docs/{must} is missing");
    }
    for (package, assets, prefix) in [
        ("deb", &deb, "usr/share/doc/relstat/"),
        ("rpm", &rpm, "/usr/share/doc/relstat/"),
    ] {
        for doc in &docs {
            let installed = assets.iter().any(|(src, dest)| {
                let src_matches =
                    glob::Pattern::new(src).is_ok_and(|p| p.matches(&format!("docs/{doc}")));
                src_matches && (dest == prefix || *dest == format!("{prefix}{doc}"))
            });
            assert!(
                installed,
                "the .{package} does not install docs/{doc} under {prefix}"
            );
        }
    }
}
