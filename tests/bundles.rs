//! Air-gapped sync with the real binary: `keygen`, `spool export` through a
//! running site agent's admin socket, `spool import` into a stopped relay
//! (store opened directly) and a running one (through its socket), refusals
//! with their exit code and message.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::util::*;

/// Every `deployed` line of `append_lines` (2026-11-01, environment prod)
/// lands in this freeze: one change_freeze record per line.
const FREEZE: &str = r#"
[[anomalies.change_freeze.windows]]
start = "2026-10-31T00:00:00Z"
end = "2026-11-02T00:00:00Z"
environments = ["prod"]
"#;

fn cfg(a: &Agent) -> &str {
    a.config.to_str().unwrap()
}

fn live_spool(a: &Agent) -> Value {
    let o = relstat(&["-c", cfg(a), "spool", "inspect", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    serde_json::from_str(&stdout(&o)).unwrap()
}

/// `relstat keygen --out DIR/NAME`; the public key copied to `trusted/SITE.pub`.
fn keygen(dir: &Path, name: &str, site: &str) -> PathBuf {
    let prefix = dir.join(name);
    let o = relstat(&["keygen", "--out", prefix.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let trusted = dir.join("trusted");
    std::fs::create_dir_all(&trusted).unwrap();
    std::fs::copy(
        dir.join(format!("{name}.pub")),
        trusted.join(format!("{site}.pub")),
    )
    .unwrap();
    dir.join(format!("{name}.key"))
}

/// A site agent that accumulated `n` records, and the bundle it exported
/// while running.
fn site_bundle(keys: &Path, n: usize) -> (Agent, PathBuf) {
    let key = keygen(keys, "site-t", "t");
    let mut a = Agent::new(&format!(
        "{FREEZE}\n[spool]\nenabled = true\nsigning_key_file = \"{}\"\n",
        key.display()
    ));
    a.start();
    append_lines(&a.log("deploy.log"), 1, n);
    assert!(
        wait_until(20, || live_spool(&a)["events"] == n as u64),
        "the site's outbox never held {n} records: {}",
        live_spool(&a)
    );
    let out = keys.join("site-t.bundle");
    let o = relstat(&[
        "-c",
        cfg(&a),
        "spool",
        "export",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&format!("exported {n} events")),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        live_spool(&a)["events"],
        0,
        "export removes what it exported"
    );
    (a, out)
}

#[test]
fn bundle_exported_by_a_running_site_imports_once_into_a_relay_stopped_or_running() {
    let keys = tempfile::tempdir().unwrap();
    let (mut site, bundle) = site_bundle(keys.path(), 40);
    assert_eq!(site.signal("-TERM"), Some(0));

    let o = relstat(&["spool", "inspect", bundle.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(
        text.contains("site: t") && text.contains("events: 40"),
        "{text}"
    );
    assert!(text.contains("signature: not checked"), "{text}");

    let mut relay = Agent::new(&format!(
        "[spool]\nenabled = true\ntrusted_keys_dir = \"{}\"\n",
        keys.path().join("trusted").display()
    ));
    // Stopped: the store is opened directly.
    let o = relstat(&[
        "-c",
        cfg(&relay),
        "spool",
        "import",
        bundle.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("40 events, 40 enqueued, 0 already imported"),
        "{}",
        stderr(&o)
    );
    // Running: through the admin socket; the ledger remembers.
    relay.start();
    let o = relstat(&[
        "-c",
        cfg(&relay),
        "spool",
        "import",
        "--json",
        bundle.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let r: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert!(r[0]["already_imported_at"].is_string(), "{r}");
    assert_eq!(live_spool(&relay)["events"], 40);
}

#[test]
fn a_tampered_bundle_is_refused_with_exit_1_and_the_reason() {
    let keys = tempfile::tempdir().unwrap();
    let (_site, bundle) = site_bundle(keys.path(), 3);
    let bytes = std::fs::read(&bundle).unwrap();
    let cut = keys.path().join("cut.bundle");
    std::fs::write(&cut, &bytes[..bytes.len() - 40]).unwrap();
    let mut relay = Agent::new(&format!(
        "[spool]\nenabled = true\ntrusted_keys_dir = \"{}\"\n",
        keys.path().join("trusted").display()
    ));
    relay.start();
    let o = relstat(&["-c", cfg(&relay), "spool", "import", cut.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("damaged or truncated bundle"),
        "{}",
        stderr(&o)
    );
    assert_eq!(live_spool(&relay)["events"], 0);
    // A relay that trusts nobody.
    let lonely = Agent::new("[spool]\nenabled = true\n");
    let o = relstat(&[
        "-c",
        cfg(&lonely),
        "spool",
        "import",
        bundle.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("trusted_keys_dir is not set"),
        "{}",
        stderr(&o)
    );
}
