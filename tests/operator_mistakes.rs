//! Operator mistakes met by the real binary: secret files missing, empty or
//! open to everyone; TOML with several mistakes; a corrupt store record; a
//! store opened twice. Each gets one clear message and a way forward.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::util::*;

fn config_with(dir: &Path, body: &str) -> String {
    let path = dir.join("relstat.toml");
    std::fs::write(
        &path,
        format!("[agent]\ndata_dir = \"{}/data\"\n\n{body}", dir.display()),
    )
    .unwrap();
    path.to_str().unwrap().to_string()
}

fn webhook(secret: &Path) -> String {
    format!(
        "[[sources]]\nname = \"gh\"\ntype = \"webhook\"\npreset = \"github\"\nsecret_file = \"{}\"\n",
        secret.display()
    )
}

#[test]
fn missing_or_empty_secret_file_fails_check_config_and_run_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    let cfg = config_with(dir.path(), &webhook(&secret));
    for (setup, says) in [(None, "does not exist"), (Some(""), "is empty")] {
        if let Some(text) = setup {
            std::fs::write(&secret, text).unwrap();
        }
        let out = relstat(&["check-config", "-c", &cfg]);
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains("sources[0].secret_file"), "{err}");
        assert!(err.contains(says), "{err}");
        assert!(err.contains(":8:"), "the line of secret_file: {err}");
        // `run` refuses it the same way: a configuration error, which the
        // unit does not restart, instead of exit 1 restarted forever.
        let out = relstat(&["run", "-c", &cfg]);
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(stderr(&out).contains(says));
    }
}

#[test]
fn a_secret_file_others_can_read_is_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "s3cret\n").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    let cfg = config_with(dir.path(), &webhook(&secret));
    let out = relstat(&["check-config", "-c", &cfg]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("warning:") && err.contains("mode 0644"),
        "{err}"
    );
    assert!(
        err.contains(&format!("chmod 600 {}", secret.display())),
        "{err}"
    );
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = relstat(&["check-config", "-c", &cfg]);
    assert!(!stderr(&out).contains("chmod"), "{}", stderr(&out));
}

/// The report that started this: an unknown table (it was
/// `[[notify.destinations]]`, known since; `[[pager.destinations]]` here) after
/// a `[sources.fields]` table was named `sources[0].fields.actor_type`, and
/// only the first mistake was reported.
#[test]
fn check_config_reports_every_toml_mistake_under_its_own_path() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_with(
        dir.path(),
        "[[sources]]\nname = \"f\"\ntype = \"file\"\npaths = [\"/x/*.log\"]\n\
         [sources.fields]\nactor_type = \"kind\"\n\n\
         [[pager.destinations]]\nurl = \"http://x\"\n\n\
         [tracking]\nmax_trackd = 5\n",
    );
    let out = relstat(&["check-config", "-c", &cfg]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("2 problems"), "{err}");
    assert!(
        err.contains("relstat.toml:11: pager: unknown field `pager`"),
        "{err}"
    );
    assert!(
        err.contains("relstat.toml:15: tracking.max_trackd: unknown field `max_trackd`"),
        "{err}"
    );
    assert!(!err.contains("actor_type"), "{err}");
}

/// Writes undecodable bytes under `key` in a `&[u8] -> &[u8]` table, as a
/// damaged disk or a bug could.
fn corrupt(data_dir: &Path, table: &str, key: &[u8]) {
    let db = redb::Database::open(data_dir.join("relstat.redb")).unwrap();
    let tx = db.begin_write().unwrap();
    tx.open_table(redb::TableDefinition::<&[u8], &[u8]>::new(table))
        .unwrap()
        .insert(key, b"{half a record".as_slice())
        .unwrap();
    tx.commit().unwrap();
}

/// The same in a `u64 -> &[u8]` table (outbox, pending imports).
fn corrupt_seq(data_dir: &Path, table: &str, seq: u64) {
    let db = redb::Database::open(data_dir.join("relstat.redb")).unwrap();
    let tx = db.begin_write().unwrap();
    tx.open_table(redb::TableDefinition::<u64, &[u8]>::new(table))
        .unwrap()
        .insert(seq, b"{half a record".as_slice())
        .unwrap();
    tx.commit().unwrap();
}

#[test]
fn a_corrupt_record_is_quarantined_and_the_agent_starts() {
    let mut agent = Agent::new("");
    append_lines(&agent.log("a.log"), 1, 5);
    agent.start();
    assert!(wait_until(30, || agent.events("accepted") >= 5.0));
    // The store is locked while the agent runs: one message, the right cause.
    let cfg = agent.config.to_str().unwrap().to_string();
    let out = relstat(&["store", "check", "-c", &cfg]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("another process has it open"), "{err}");
    assert_eq!(
        err.matches("relstat.redb").count(),
        1,
        "printed once: {err}"
    );
    assert_eq!(agent.signal("-TERM"), Some(0));

    let data = agent.dir.path().join("data");
    let mode = std::fs::metadata(data.join("relstat.redb"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the store is the agent user's only");
    corrupt(&data, "keys", b"bad\0svc\0prod\0");
    // The reported case: one damaged imported transition blocked every start.
    corrupt_seq(&data, "pending_tracking", 1);
    let out = relstat(&["store", "check", "-c", &cfg]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("corrupt keys key bad/svc/prod/"),
        "{}",
        stdout(&out)
    );
    assert!(
        stderr(&out).contains("relstat store repair"),
        "{}",
        stderr(&out)
    );

    // The agent starts anyway, with the records kept aside and counted.
    agent.start();
    assert_eq!(agent.events("accepted"), 5.0);
    assert_eq!(
        sample(&agent.metrics(), "relstat_store_quarantined_records"),
        Some(2.0)
    );
    append_lines(&agent.log("a.log"), 6, 6);
    assert!(wait_until(30, || agent.events("accepted") >= 6.0));
    assert_eq!(agent.signal("-TERM"), Some(0));
    let out = relstat(&["store", "check", "-c", &cfg]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("quarantine: 2 records kept aside"), "{text}");
    assert!(text.contains("keys bad/svc/prod/"), "{text}");
    assert!(text.contains("pending_tracking 1"), "{text}");

    // `store repair` does the same offline, for every table.
    corrupt_seq(&data, "outbox", 999);
    let out = relstat(&["store", "repair", "-c", &cfg]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("file: consistent"), "{text}");
    assert!(text.contains("quarantined outbox key 999"), "{text}");
    assert!(text.contains("quarantine: 3 records"), "{text}");
    let out = relstat(&["store", "check", "-c", &cfg]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}
