use std::collections::BTreeMap;

use super::*;
use crate::detect::{FinishReason, LastReport};
use crate::event::{ActorType, Event};
use crate::track::Finished;

fn key(i: u64) -> Key {
    Key {
        release: format!("r{i}"),
        service: "svc".into(),
        environment: "production".into(),
        site: "".into(),
    }
}

pub(crate) fn event(i: u64) -> Event {
    Event {
        id: format!("id-{i}"),
        time: 1_000 * i as i64,
        release: format!("r{i}"),
        service: "svc".into(),
        environment: "production".into(),
        site: "".into(),
        status: "deployed".into(),
        actor: "bot".into(),
        actor_type: ActorType::Automation,
        source: "s".into(),
        reason: None,
        version: None,
        commit: None,
        artifact: None,
        commit_time: None,
        change_class: None,
    }
}

fn state(i: u64) -> KeyState {
    let e = event(i);
    let mut s = KeyState::first(&e, "deployed", 70, e.time);
    if i.is_multiple_of(2) {
        s.finished = Some(Finished {
            at: e.time,
            reason: FinishReason::Terminal,
        });
    }
    s.last = LastReport::of(&e);
    s
}

type Checkpoints = Vec<(String, Vec<u8>)>;
type Counters = BTreeMap<(String, InputResult), u64>;

/// One batch as the runtime writes it: batch `i` adds key i, its history
/// record, its seen id, one outbox record, checkpoint "i" and one accepted.
fn batch(i: u64) -> (Batch, Checkpoints, Counters) {
    let e = event(i);
    let b = Batch {
        keys: [(key(i), state(i))].into_iter().collect(),
        history: vec![HistoryRecord {
            event: e.clone(),
            recorded_at: e.time,
            order_time: e.time,
            from: None,
            late: false,
            anomalies: vec![],
            decision: None,
        }],
        seen: vec![(crate::track::id_hash(&e.id), e.time)],
        outbox: vec![Anomaly {
            rule: "stuck".into(),
            severity: crate::config::Severity::Warning,
            release: e.release.clone(),
            service: e.service.clone(),
            environment: e.environment.clone(),
            site: String::new(),
            from: None,
            to: "deployed".into(),
            actor: "bot".into(),
            actor_type: ActorType::Automation,
            source: "s".into(),
            event_id: e.id.clone(),
            event_time: e.time,
            detected_at: e.time,
            reason: None,
            version: None,
            commit: None,
            change_class: None,
            approver: None,
            decision: None,
            audit_sequence: None,
            audit_hash: None,
            host: "h".into(),
            message: "m".into(),
        }],
        ..Default::default()
    };
    let cps = vec![("file:/x".to_string(), i.to_string().into_bytes())];
    let mut ctr = BTreeMap::new();
    ctr.insert(("s".to_string(), InputResult::Accepted), 1);
    (b, cps, ctr)
}

#[test]
fn reopening_gives_back_state_checkpoints_and_counters() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        for i in 1..=5 {
            let (b, c, n) = batch(i);
            store.commit(&b, &c, &n).unwrap();
        }
    } // dropped: as if the process ended
    let store = Store::open(dir.path()).unwrap();
    let snap = store.load().unwrap();
    let mut keys = snap.keys.clone();
    keys.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        keys,
        (1..=5).map(|i| (key(i), state(i))).collect::<Vec<_>>()
    );
    assert_eq!(snap.seen.len(), 5);
    assert_eq!(snap.checkpoints["file:/x"], b"5");
    assert_eq!(snap.counters[&("s".to_string(), InputResult::Accepted)], 5);
    assert_eq!(store.history("r3").unwrap().len(), 1);
    assert_eq!(store.history("r3").unwrap()[0].event, event(3));
    let stats = store.outbox_stats().unwrap();
    assert_eq!(stats.events, 5);
    assert!(stats.bytes > 0);
    assert_eq!(stats.oldest_detected_at, Some(1000));
}

#[test]
fn outbox_removal_frees_bytes_and_keeps_the_rest_in_order() {
    let store = Store::in_memory().unwrap();
    for i in 1..=4 {
        let (b, c, n) = batch(i);
        store.commit(&b, &c, &n).unwrap();
    }
    let before = store.outbox_stats().unwrap();
    assert_eq!(store.outbox_remove(2).unwrap(), 2);
    let after = store.outbox_stats().unwrap();
    assert_eq!(after.events, 2);
    assert!(after.bytes < before.bytes && after.bytes > 0);
    let rest = store.outbox_read(0, 10).unwrap();
    assert_eq!(rest.iter().map(|(s, _)| *s).collect::<Vec<_>>(), vec![3, 4]);
    assert_eq!(rest[0].1.release, "r3");
}

#[test]
fn drop_oldest_keeps_the_newest_and_one_summary_takes_the_head() {
    let store = Store::in_memory().unwrap();
    for i in 1..=5 {
        let (b, c, n) = batch(i);
        store.commit(&b, &c, &n).unwrap();
    }
    let one = store.outbox_stats().unwrap().bytes / 5;
    assert_eq!(store.outbox_drop_oldest(one * 2).unwrap(), 3);
    let stats = store.outbox_stats().unwrap();
    assert_eq!(stats.events, 2);
    assert!(stats.bytes <= one * 2);
    // Nothing to drop: nothing changes.
    assert_eq!(store.outbox_drop_oldest(one * 2).unwrap(), 0);
    let mut ledger = None;
    assert!(
        store
            .outbox_take_dropped(true, |l| {
                ledger = Some(l.clone());
                let mut a = store_rec(9);
                a.message = format!("{} dropped", l.count);
                a
            })
            .unwrap()
    );
    assert_eq!(ledger.unwrap().count, 3);
    let rest = store.outbox_read(0, 10).unwrap();
    assert_eq!(
        rest.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        vec![3, 4, 5]
    );
    assert_eq!(rest[0].1.message, "3 dropped");
    // The ledger is cleared: reported once.
    assert!(!store.outbox_take_dropped(true, |_| store_rec(0)).unwrap());
    let after = store.outbox_stats().unwrap();
    assert_eq!(after.events, 3);
    assert!(after.bytes > stats.bytes);
}

fn store_rec(i: u64) -> crate::detect::Anomaly {
    batch(i).0.outbox.remove(0)
}

#[test]
fn retention_purges_old_history_and_seen_ids() {
    let store = Store::in_memory().unwrap();
    for i in 1..=4 {
        let (b, c, n) = batch(i);
        store.commit(&b, &c, &n).unwrap();
    }
    let purge = Batch {
        history_purge_before: Some(2_500),
        seen_purge_before: Some(3_500),
        removed_keys: vec![key(1)],
        ..Default::default()
    };
    store.commit(&purge, &[], &BTreeMap::new()).unwrap();
    assert_eq!(store.history_len().unwrap(), 2);
    assert!(store.history("r2").unwrap().is_empty());
    assert_eq!(store.history("r3").unwrap().len(), 1);
    let snap = store.load().unwrap();
    assert_eq!(snap.seen.len(), 1);
    assert_eq!(snap.keys.len(), 3);
}

/// The ledger row of one approval by `bot` from `jira` at 10 s.
fn ledger_row() -> Vec<crate::detect::Ruling> {
    vec![crate::detect::Ruling {
        decision: crate::detect::Decision::Approved,
        at: 10_000,
        environment: "production".into(),
        approver: "bot".into(),
        source: "jira".into(),
    }]
}

/// The gate's ledger and a pending deployment attempt survive a restart:
/// an approval seen before the restart still satisfies the gate after it,
/// and an attempt without one is judged once, after the restart.
#[test]
fn the_approvals_ledger_and_pending_attempts_survive_a_restart() {
    use std::sync::Arc;

    use crate::config::Config;
    use crate::detect::Detectors;
    use crate::track::{Effect, Settings, Tracker};

    let cfg: Config = toml::from_str(
        "[model.gate]\nenvironments = [\"production\"]\napproval_sources = [\"jira\"]\n",
    )
    .unwrap();
    let model = Arc::new(crate::model::Model::from_config(&cfg.model).unwrap());
    let tracker = || {
        Tracker::new(
            model.clone(),
            Detectors::new(&cfg.anomalies, "h"),
            Settings::from_config(&cfg, true),
        )
    };
    let ev = |id: &str, release: &str, status: &str, source: &str, secs: i64| Event {
        id: id.into(),
        time: secs * 1000,
        release: release.into(),
        status: status.into(),
        source: source.into(),
        ..event(0)
    };
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        let mut tr = tracker();
        tr.apply(ev("a1", "r1", "approved", "jira", 10), 100_000);
        tr.apply(ev("d1", "r1", "deployed", "ci", 20), 100_000);
        tr.apply(ev("d2", "r2", "deployed", "ci", 20), 100_000);
        let batch = tr.take_batch();
        assert_eq!(
            batch.approvals,
            vec![("r1".into(), "svc".into(), ledger_row())]
        );
        store.commit(&batch, &[], &BTreeMap::new()).unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    let snap = store.load().unwrap();
    assert_eq!(
        snap.approvals,
        vec![("r1".into(), "svc".into(), ledger_row())]
    );
    let mut tr = tracker();
    tr.restore(snap.keys, snap.seen, snap.failing, snap.approvals);
    tr.take_effects();
    let findings = |tr: &mut Tracker| -> Vec<String> {
        tr.take_effects()
            .into_iter()
            .filter_map(|e| match e {
                Effect::Anomaly(a) => Some(format!("{} {}", a.rule, a.release)),
                _ => None,
            })
            .collect()
    };
    tr.tick(1_000_000, true);
    assert_eq!(findings(&mut tr), vec!["gate_bypass r2"]);
    store
        .commit(&tr.take_batch(), &[], &BTreeMap::new())
        .unwrap();
    // judged once: not again after another restart
    let snap = store.load().unwrap();
    let mut tr = tracker();
    tr.restore(snap.keys, snap.seen, snap.failing, snap.approvals);
    tr.tick(2_000_000, true);
    assert!(findings(&mut tr).is_empty());
}

#[test]
fn a_store_of_another_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        let tx = store.db.begin_write().unwrap();
        tx.open_table(META)
            .unwrap()
            .insert("schema", b"99".as_slice())
            .unwrap();
        tx.commit().unwrap();
    }
    let err = Store::open(dir.path()).err().unwrap().to_string();
    assert!(err.contains("schema version 99"), "{err}");
}

/// The child side of the crash test: commits batches until killed.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var("RELSTAT_CRASH_CHILD_DIR") else {
        return; // only meaningful when started by `kill_9_never_shows_half_a_batch`
    };
    let store = Store::open(Path::new(&dir)).unwrap();
    let start = store
        .load()
        .unwrap()
        .checkpoints
        .get("file:/x")
        .map_or(0, |v| {
            std::str::from_utf8(v).unwrap().parse::<u64>().unwrap()
        });
    std::fs::write(Path::new(&dir).join("started"), b"1").unwrap();
    for i in start + 1..start + 100_000 {
        let (b, c, n) = batch(i);
        store.commit(&b, &c, &n).unwrap();
    }
}

/// kill -9 at arbitrary moments: after reopening, the checkpoint, the keys,
/// the history, the outbox and the counters always agree (all batches up to
/// the checkpoint are there, none after it), like redb's own crash tests.
#[test]
fn kill_9_never_shows_half_a_batch() {
    let dir = tempfile::tempdir().unwrap();
    let mut last = 0;
    for round in 0..3u64 {
        // Let the child commit a little (a different time each round) and
        // kill it hard.
        crate::crash_child::run_and_kill(
            "store::tests::crash_child",
            "RELSTAT_CRASH_CHILD_DIR",
            dir.path(),
            150 + 70 * round,
        );

        let store = Store::open(dir.path()).unwrap();
        let snap = store.load().unwrap();
        let cp: u64 = snap
            .checkpoints
            .get("file:/x")
            .map_or(0, |v| std::str::from_utf8(v).unwrap().parse().unwrap());
        assert!(cp >= last, "checkpoint went backwards: {cp} < {last}");
        assert_eq!(snap.keys.len() as u64, cp, "keys vs checkpoint");
        assert_eq!(store.history_len().unwrap(), cp, "history vs checkpoint");
        assert_eq!(
            store.outbox_stats().unwrap().events,
            cp,
            "outbox vs checkpoint"
        );
        let accepted = snap.counters.get(&("s".to_string(), InputResult::Accepted));
        assert_eq!(accepted.copied().unwrap_or(0), cp, "counters vs checkpoint");
        last = cp;
    }
    assert!(last > 0, "the child never committed a batch");
}

/// A schema 1 store (seen ids keyed by hash) opens with its seen ids, now
/// keyed by time (schema 2, grouped since schema 9), and purges them by
/// time.
#[test]
fn a_schema_1_store_is_migrated_with_its_seen_ids() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        let tx = store.db.begin_write().unwrap();
        {
            tx.delete_table(SEEN_GROUPS).unwrap();
            let mut v1 = tx.open_table(SEEN_V1).unwrap();
            for (h, at) in [(7u128, 3_000i64), (5, 1_000), (9, 2_000)] {
                v1.insert(h, at).unwrap();
            }
            tx.open_table(META)
                .unwrap()
                .insert("schema", b"1".as_slice())
                .unwrap();
        }
        tx.commit().unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    let mut seen = store.load().unwrap().seen;
    seen.sort();
    assert_eq!(seen, vec![(5, 1_000), (7, 3_000), (9, 2_000)]);
    let purge = Batch {
        seen_purge_before: Some(2_500),
        ..Default::default()
    };
    store.commit(&purge, &[], &BTreeMap::new()).unwrap();
    assert_eq!(store.load().unwrap().seen, vec![(7, 3_000)]);
    drop(store);
    // Opening again finds schema 2: nothing to migrate, nothing lost.
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.load().unwrap().seen, vec![(7, 3_000)]);
    let tx = store.db.begin_read().unwrap();
    assert!(
        tx.open_table(SEEN_V1).is_err(),
        "the schema 1 table is gone"
    );
}

#[test]
fn pending_events_are_kept_in_import_order_and_drained_with_their_writes_in_one_transaction() {
    let store = Store::in_memory().unwrap();
    // Two imports into the stopped agent, at 100 and 200.
    for (now, ids) in [(100, 1..=3u64), (200, 4..=5)] {
        let recs: Vec<Anomaly> = ids.clone().map(store_rec).collect();
        let mut defer = |new: &[&Anomaly]| Tracked {
            pending: new
                .iter()
                .map(|r| event(r.event_time as u64 / 1000))
                .collect(),
            ..Default::default()
        };
        let out = store
            .import_chunk(&recs, now, None, None, Some(&mut defer))
            .unwrap();
        assert_eq!(out.enqueued, recs.len() as u64);
    }
    assert_eq!(store.pending_len().unwrap(), 5);
    let rows = store.pending_read(10).unwrap();
    let got: Vec<(u64, TimeMs, String)> = rows
        .iter()
        .map(|(s, p)| (*s, p.recorded_at, p.event.id.clone()))
        .collect();
    assert_eq!(
        got,
        [
            (1, 100, "id-1".to_string()),
            (2, 100, "id-2".into()),
            (3, 100, "id-3".into()),
            (4, 200, "id-4".into()),
            (5, 200, "id-5".into()),
        ]
    );
    assert_eq!(store.pending_read(2).unwrap().len(), 2);

    // A drain step whose writes fail leaves its pending rows and writes nothing.
    let (b, _, n) = batch(1);
    {
        let tx = store.db.begin_write().unwrap();
        tx.open_table(META)
            .unwrap()
            .insert("history_seq", b"bad".as_slice())
            .unwrap();
        tx.commit().unwrap();
    }
    assert!(store.commit_drained(&b, &n, 3, 100).is_err());
    assert_eq!(store.pending_len().unwrap(), 5);
    assert_eq!(store.history_len().unwrap(), 0);
    assert!(store.load().unwrap().counters.is_empty());
    {
        let tx = store.db.begin_write().unwrap();
        tx.open_table(META).unwrap().remove("history_seq").unwrap();
        tx.commit().unwrap();
    }
    // It succeeds: the rows up to `upto` go with the writes they produced.
    store.commit_drained(&b, &n, 3, 100).unwrap();
    let left: Vec<u64> = store
        .pending_read(10)
        .unwrap()
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    assert_eq!(left, [4, 5]);
    assert_eq!(store.history_len().unwrap(), 1);
    assert_eq!(
        store.load().unwrap().counters[&("s".to_string(), InputResult::Accepted)],
        1
    );
    // The relay's record for an imported identity is not enqueued again.
    assert_eq!(store.outbox_stats().unwrap().events, 5);
}

/// A store written by schema 2 (no quarantine table) opens as the
/// current schema with its data.
#[test]
fn a_schema_2_store_is_migrated_to_3() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        let (b, c, n) = batch(1);
        store.commit(&b, &c, &n).unwrap();
        let tx = store.db.begin_write().unwrap();
        tx.delete_table(QUARANTINE).unwrap();
        tx.open_table(META)
            .unwrap()
            .insert("schema", b"2".as_slice())
            .unwrap();
        tx.commit().unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.load().unwrap().keys.len(), 1);
    let tx = store.db.begin_read().unwrap();
    assert_eq!(
        tx.open_table(META)
            .unwrap()
            .get("schema")
            .unwrap()
            .unwrap()
            .value(),
        SCHEMA.to_string().as_bytes()
    );
    assert!(tx.open_table(QUARANTINE).is_ok());
}

fn dead(source: &str, received: TimeMs, payload: &str) -> crate::dlq::DeadLetter {
    crate::dlq::DeadLetter {
        source: source.into(),
        delivery: format!("d-{received}"),
        received,
        result: "unmapped".into(),
        reason: "status \"x\" maps to no state".into(),
        headers: vec![("content-type".into(), "application/json".into())],
        payload: payload.into(),
        replayed: None,
    }
}

fn with_dead(new: Vec<crate::dlq::DeadLetter>) -> crate::dlq::DeadLetters {
    crate::dlq::DeadLetters {
        new,
        replayed: Vec::new(),
    }
}

/// A store written by schema 3 (no dead-letter table, no notification
/// queues) opens as the current schema with its data, and takes dead
/// letters.
#[test]
fn a_schema_3_store_is_migrated() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        let (b, c, n) = batch(1);
        store.commit(&b, &c, &n).unwrap();
        let tx = store.db.begin_write().unwrap();
        tx.delete_table(dlq::DEAD_LETTERS).unwrap();
        tx.delete_table(NOTIFY).unwrap();
        tx.open_table(META)
            .unwrap()
            .insert("schema", b"3".as_slice())
            .unwrap();
        tx.commit().unwrap();
        let tx = store.db.begin_read().unwrap();
        assert!(
            tx.open_table(dlq::DEAD_LETTERS).is_err(),
            "a schema 3 store"
        );
    }
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.load().unwrap().keys.len(), 1);
    {
        let tx = store.db.begin_read().unwrap();
        let meta = tx.open_table(META).unwrap();
        assert_eq!(
            meta.get("schema").unwrap().unwrap().value(),
            SCHEMA.to_string().as_bytes()
        );
    }
    assert_eq!(store.dlq_stats().unwrap(), (0, 0, 0));
    let d = store
        .commit_with_dead(
            &Batch::default(),
            &[],
            &BTreeMap::new(),
            &with_dead(vec![dead("s", 1_000, "{}")]),
            2_000,
        )
        .unwrap();
    assert_eq!(d.added, vec![("s".to_string(), "unmapped".to_string())]);
    assert_eq!(store.dlq_list(&DlqFilter::default(), 10).unwrap().len(), 1);
    let notes = vec![("chat".to_string(), b"{}".to_vec())];
    let (b, c, n) = batch(2);
    store.commit_notify(&b, &c, &n, &notes, 10).unwrap();
    assert_eq!(store.notify_len("chat").unwrap(), 1);
}

/// A store written by schema 4 (dead letters, no notification queues)
/// opens as the current schema with its data and dead letters, and its
/// queues work.
#[test]
fn a_schema_4_store_gets_the_notify_queues() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        let (b, c, n) = batch(1);
        store
            .commit_with_dead(&b, &c, &n, &with_dead(vec![dead("s", 1_000, "{}")]), 2_000)
            .unwrap();
        let tx = store.db.begin_write().unwrap();
        tx.delete_table(NOTIFY).unwrap();
        tx.open_table(META)
            .unwrap()
            .insert("schema", b"4".as_slice())
            .unwrap();
        tx.commit().unwrap();
        let tx = store.db.begin_read().unwrap();
        assert!(
            tx.open_table(NOTIFY).is_err(),
            "schema 4 has no queue table"
        );
    }
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.load().unwrap().keys.len(), 1);
    assert_eq!(store.dlq_list(&DlqFilter::default(), 10).unwrap().len(), 1);
    {
        let tx = store.db.begin_read().unwrap();
        let meta = tx.open_table(META).unwrap();
        let v = meta.get("schema").unwrap().unwrap();
        assert_eq!(v.value(), SCHEMA.to_string().as_bytes());
    }
    let (b, c, n) = batch(2);
    let notes = vec![("chat".to_string(), b"{}".to_vec())];
    store.commit_notify(&b, &c, &n, &notes, 10).unwrap();
    assert_eq!(store.notify_len("chat").unwrap(), 1);
}

/// `[dlq]`'s limits: the oldest go first, over max_payloads, over
/// max_bytes and past retention, and are counted; a replay mark sticks.
#[test]
fn dead_letters_are_capped_oldest_first_and_counted() {
    let store = Store::in_memory().unwrap();
    store.set_dlq_limits(DlqLimits {
        max_payloads: 3,
        max_bytes: 1_000_000,
        retention_ms: 10_000,
    });
    let commit = |dead: crate::dlq::DeadLetters, now: TimeMs| {
        store
            .commit_with_dead(&Batch::default(), &[], &BTreeMap::new(), &dead, now)
            .unwrap()
    };
    let d = commit(
        with_dead((1..=5).map(|i| dead("s", 100_000 + i, "{}")).collect()),
        100_010,
    );
    assert_eq!((d.added.len(), d.removed.len(), d.dropped), (5, 2, 2));
    let kept = store.dlq_list(&DlqFilter::default(), 100).unwrap();
    let times: Vec<TimeMs> = kept.iter().map(|(_, d)| d.received).collect();
    assert_eq!(times, vec![100_003, 100_004, 100_005]);
    assert_eq!(store.dlq_stats().unwrap().2, 2);
    // By bytes: a payload larger than max_bytes is never kept.
    store.set_dlq_limits(DlqLimits {
        max_payloads: 3,
        max_bytes: 200,
        retention_ms: 10_000,
    });
    let d = commit(
        with_dead(vec![dead("s", 100_006, &"x".repeat(500))]),
        100_020,
    );
    assert_eq!((d.added.len(), d.dropped), (0, 1));
    // Filters, and a replay mark.
    let (id, _) = kept[1].clone();
    let only = DlqFilter {
        id: Some(id),
        ..Default::default()
    };
    assert_eq!(store.dlq_list(&only, 10).unwrap().len(), 1);
    let since = DlqFilter {
        since: Some(100_004),
        source: Some("s".into()),
        ..Default::default()
    };
    assert_eq!(store.dlq_list(&since, 10).unwrap().len(), 2);
    let other = DlqFilter {
        source: Some("t".into()),
        ..Default::default()
    };
    assert!(store.dlq_list(&other, 10).unwrap().is_empty());
    commit(
        crate::dlq::DeadLetters {
            new: Vec::new(),
            replayed: vec![id],
        },
        100_030,
    );
    assert_eq!(
        store.dlq_list(&only, 10).unwrap()[0].1.replayed,
        Some(100_030)
    );
    // Past retention (10 s): all gone, counted.
    let d = commit(with_dead(Vec::new()), 200_000);
    assert_eq!(d.removed.len(), 3);
    assert_eq!(store.dlq_stats().unwrap(), (0, 0, 6));
    assert_eq!(
        store.dlq_counts().unwrap().len(),
        0,
        "the gauge's source is empty too"
    );
}

/// Messages are committed with their cause, read per destination in
/// order, bounded per destination (the oldest dropped and counted) and
/// removed by seq.
#[test]
fn notify_queues_are_per_destination_bounded_and_ordered() {
    let store = Store::in_memory().unwrap();
    let (b, c, n) = batch(1);
    let mut notes = Vec::new();
    for i in 0..5 {
        notes.push(("a".to_string(), format!("a{i}").into_bytes()));
        notes.push(("b".to_string(), format!("b{i}").into_bytes()));
    }
    let dropped = store.commit_notify(&b, &c, &n, &notes, 3).unwrap();
    assert_eq!(dropped.get("a"), Some(&2));
    assert_eq!(dropped.get("b"), Some(&2));
    assert_eq!(
        store.load().unwrap().keys.len(),
        1,
        "the cause is committed too"
    );
    let a = store.notify_read("a", 10).unwrap();
    let bodies: Vec<&[u8]> = a.iter().map(|(_, v)| v.as_slice()).collect();
    assert_eq!(bodies, vec![b"a2".as_slice(), b"a3", b"a4"]);
    store.notify_remove("a", &[a[0].0]).unwrap();
    assert_eq!(store.notify_len("a").unwrap(), 2);
    assert_eq!(store.notify_len("b").unwrap(), 3);
    assert_eq!(store.notify_read("a", 1).unwrap()[0].1, b"a3");
}

#[test]
fn a_newer_store_is_refused_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        let tx = store.db.begin_write().unwrap();
        tx.open_table(META)
            .unwrap()
            .insert("schema", (SCHEMA + 1).to_string().as_bytes())
            .unwrap();
        tx.commit().unwrap();
    }
    let err = Store::open(dir.path()).err().unwrap().to_string();
    assert!(
        err.contains(&format!(
            "schema version {}, newer than this relstat",
            SCHEMA + 1
        )),
        "{err}"
    );
    assert!(err.contains(&format!("versions 1 to {SCHEMA}")), "{err}");
}

fn put_raw(store: &Store, def: TableDefinition<u64, &[u8]>, seq: u64, bytes: &[u8]) {
    let tx = store.db.begin_write().unwrap();
    tx.open_table(def).unwrap().insert(seq, bytes).unwrap();
    tx.commit().unwrap();
}

/// One corrupt record (here in `keys` and in `pending_tracking`) no longer
/// blocks every start: it is moved to `quarantine`, the rest loads.
#[test]
fn corrupt_records_are_quarantined_and_the_rest_loads() {
    let store = Store::in_memory().unwrap();
    for i in 1..=3 {
        let (b, c, n) = batch(i);
        store.commit(&b, &c, &n).unwrap();
    }
    {
        let tx = store.db.begin_write().unwrap();
        tx.open_table(KEYS)
            .unwrap()
            .insert(key(9).encode().as_slice(), b"{not json".as_slice())
            .unwrap();
        tx.commit().unwrap();
    }
    put_raw(&store, PENDING, 1, b"\xff\xfe");
    let report = store.check().unwrap();
    let tables: Vec<&str> = report.findings.iter().map(|f| f.table).collect();
    assert_eq!(tables, vec!["keys", "pending_tracking"]);

    let snap = store.load().unwrap();
    assert_eq!(snap.keys.len(), 3);
    assert_eq!(snap.quarantined, 1);
    assert!(store.pending_read(10).unwrap().is_empty());
    let q = store.quarantined().unwrap();
    assert_eq!(q.len(), 2, "{q:?}");
    assert_eq!(
        (q[0].table.as_str(), q[0].value_hex.as_str()),
        ("keys", "7b6e6f74206a736f6e")
    );
    assert_eq!(q[1].table, "pending_tracking");
    assert!(store.check().unwrap().findings.is_empty());
}

/// `repair` moves undecodable outbox records aside and keeps the outbox's
/// byte total right.
#[test]
fn repair_quarantines_the_outbox_and_fixes_its_byte_total() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let (b, c, n) = batch(1);
    store.commit(&b, &c, &n).unwrap();
    let before = store.outbox_stats().unwrap();
    put_raw(&store, OUTBOX, 1_000, b"garbage");
    {
        let tx = store.db.begin_write().unwrap();
        let mut meta = tx.open_table(META).unwrap();
        let total = read_u64(&meta, "outbox_bytes").unwrap() + 7;
        meta.insert("outbox_bytes", total.to_be_bytes().as_slice())
            .unwrap();
        drop(meta);
        tx.commit().unwrap();
    }
    let report = store.repair().unwrap();
    assert_eq!(report.file_ok, Some(true));
    assert_eq!(report.findings.len(), 1);
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.outbox_stats().unwrap(), before);
    assert_eq!(store.quarantined().unwrap().len(), 1);
}

#[test]
fn the_store_file_is_created_readable_by_its_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    drop(Store::open(dir.path()).unwrap());
    let mode = std::fs::metadata(dir.path().join(STORE_FILE))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn a_store_open_elsewhere_says_so_once() {
    let dir = tempfile::tempdir().unwrap();
    let _first = Store::open(dir.path()).unwrap();
    let err = Store::open(dir.path()).err().unwrap();
    let msg = format!("{:#}", anyhow::Error::from(err));
    assert!(msg.contains("another process has it open"), "{msg}");
    assert_eq!(msg.matches("relstat.redb").count(), 1, "{msg}");
}

/// Each cause of an open failure says what it is and what to do, without
/// blaming another relstat for a permission or a damaged file.
#[test]
fn open_errors_name_their_cause() {
    use redb::{DatabaseError as D, StorageError as S};
    let p = Path::new("/var/lib/relstat/relstat.redb");
    let denied = open_cause(
        p,
        &D::Storage(S::Io(std::io::Error::from(
            std::io::ErrorKind::PermissionDenied,
        ))),
    );
    assert!(
        denied.contains("permission denied") && denied.contains("chown relstat:"),
        "{denied}"
    );
    assert!(!denied.contains("another"), "{denied}");
    let damaged = open_cause(p, &D::Storage(S::Corrupted("bad page".into())));
    assert!(
        damaged.contains("damaged") && damaged.contains("relstat store repair"),
        "{damaged}"
    );
    assert!(!damaged.contains("another"), "{damaged}");
    assert!(open_cause(p, &D::DatabaseAlreadyOpen).contains("another process has it open"));
}

/// An undecodable dead letter (a damaged disk) neither stops the agent's
/// start nor a listing; the next commit drops it, counted.
#[test]
fn an_undecodable_dead_letter_is_skipped_then_dropped() {
    let store = Store::in_memory().unwrap();
    put_raw(&store, dlq::DEAD_LETTERS, 0, b"{not json");
    assert!(store.dlq_counts().unwrap().is_empty());
    assert!(
        store
            .dlq_list(&DlqFilter::default(), 10)
            .unwrap()
            .is_empty()
    );
    let d = store
        .commit_with_dead(
            &Batch::default(),
            &[],
            &BTreeMap::new(),
            &with_dead(vec![dead("s", 5_000, "{}")]),
            6_000,
        )
        .unwrap();
    assert_eq!(d.dropped, 1);
    assert_eq!(store.dlq_list(&DlqFilter::default(), 10).unwrap().len(), 1);
}

/// A rollup reported `stuck` is remembered in the store: a restart while it
/// is still stuck does not report it again; once complete it may be stuck
/// again (a target added later), and another release's rollup reports on
/// its own.
#[test]
fn a_stuck_rollup_is_reported_once_across_restarts() {
    use crate::config::Config;
    use crate::track::{Effect, Tracker};

    let cfg: Config = toml::from_str("[rollups]\nstuck_after = \"10m\"\n").unwrap();
    let tracker = || Tracker::from_config(&cfg, true).unwrap();
    let ev = |id: &str, release: &str, service: &str, site: &str, status: &str, secs: i64| Event {
        id: id.into(),
        time: secs * 1000,
        release: release.into(),
        service: service.into(),
        site: site.into(),
        status: status.into(),
        ..event(0)
    };
    let m = 60_000;
    // Rollup findings only (a key's own stuck has a service).
    let findings = |tr: &mut Tracker| -> Vec<String> {
        tr.take_effects()
            .into_iter()
            .filter_map(|e| match e {
                Effect::Anomaly(a) if a.service == crate::event::NO_SERVICE => {
                    Some(format!("{} {}/{}", a.rule, a.release, a.environment))
                }
                _ => None,
            })
            .collect()
    };
    let restart = |store: &Store| {
        let snap = store.load().unwrap();
        let mut tr = tracker();
        tr.restore(snap.keys, snap.seen, snap.failing, snap.approvals);
        tr.restore_rollups_stuck(snap.rollups_stuck);
        tr.take_effects();
        tr
    };
    let commit = |store: &Store, tr: &mut Tracker| {
        store
            .commit(&tr.take_batch(), &[], &BTreeMap::new())
            .unwrap();
    };
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut tr = tracker();
    tr.apply(ev("1", "r1", "api", "a", "complete", 60), 61_000);
    tr.apply(ev("2", "r1", "api", "b", "in_progress", 60), 61_000);
    tr.tick(5 * m, true);
    assert!(findings(&mut tr).is_empty(), "not yet past stuck_after");
    tr.tick(12 * m, true);
    assert_eq!(findings(&mut tr), ["stuck r1/production"]);
    tr.tick(13 * m, true);
    assert!(findings(&mut tr).is_empty(), "once while it runs");
    commit(&store, &mut tr);
    drop(tr);

    // Still stuck after a restart: not reported again.
    let mut tr = restart(&store);
    tr.tick(14 * m, true);
    assert!(
        findings(&mut tr).is_empty(),
        "reported again after a restart"
    );
    commit(&store, &mut tr);

    // Complete, then partly complete again (a target added): a new
    // episode, across a restart too.
    tr.apply(ev("3", "r1", "api", "b", "complete", 15 * 60), 15 * m);
    tr.tick(15 * m, true);
    assert!(findings(&mut tr).is_empty());
    commit(&store, &mut tr);
    let mut tr = restart(&store);
    tr.apply(ev("4", "r1", "web", "a", "in_progress", 16 * 60), 16 * m);
    // A later release with r1's targets expected, one of them missing.
    tr.apply(ev("5", "r2", "api", "a", "complete", 17 * 60), 17 * m);
    // r1's first target completed long ago: stuck again at once.
    tr.tick(20 * m, true);
    assert_eq!(findings(&mut tr), ["stuck r1/production"]);
    tr.tick(28 * m, true);
    assert_eq!(findings(&mut tr), ["stuck r2/production"]);
    commit(&store, &mut tr);
    let mut tr = restart(&store);
    tr.tick(30 * m, true);
    assert!(
        findings(&mut tr).is_empty(),
        "reported again after a restart"
    );
    assert_eq!(
        store.load().unwrap().rollups_stuck,
        [
            ("r1".to_string(), "production".to_string()),
            ("r2".to_string(), "production".to_string())
        ]
    );
}

/// The gate configuration of the schema-5 upgrade fixture.
fn upgrade_gate_config() -> crate::config::Config {
    toml::from_str("[model.gate]\nenvironments = [\"production\"]\napproval_sources = [\"jira\"]\n")
        .unwrap()
}

/// A tracker for the upgrade fixture's configuration.
fn upgrade_tracker(cfg: &crate::config::Config) -> crate::track::Tracker {
    use std::sync::Arc;
    let model = Arc::new(crate::model::Model::from_config(&cfg.model).unwrap());
    crate::track::Tracker::new(
        model,
        crate::detect::Detectors::new(&cfg.anomalies, "h"),
        crate::track::Settings::from_config(cfg, true),
    )
}

/// The events of the upgrade fixture: approvals from `jira` (per service,
/// release-wide `-`, late) and production deploys, their attempts not yet
/// judged when the store was written.
fn upgrade_events() -> Vec<Event> {
    let ev =
        |id: &str, release: &str, service: &str, env: &str, status: &str, src: &str, secs: i64| {
            Event {
                id: id.into(),
                time: secs * 1000,
                release: release.into(),
                service: service.into(),
                environment: env.into(),
                status: status.into(),
                source: src.into(),
                ..event(0)
            }
        };
    vec![
        // r1: approved for its service in staging, then deployed: clean
        ev("a1", "r1", "svc", "staging", "approved", "jira", 10),
        ev("d1", "r1", "svc", "production", "deployed", "ci", 20),
        // r2: no approval: gate_bypass
        ev("d2", "r2", "svc", "production", "deployed", "ci", 20),
        // r3: approved for the whole release: clean
        ev("a3", "r3", "-", "-", "approved", "jira", 10),
        ev("d3", "r3", "svc", "production", "deployed", "ci", 20),
        // r4: approved long after the deploy: gate_bypass
        ev("d4", "r4", "svc", "production", "deployed", "ci", 20),
        ev("a4", "r4", "-", "-", "approved", "jira", 900),
        // r5: approved by another source: does not count
        ev("a5", "r5", "svc", "-", "approved", "ci", 10),
        ev("d5", "r5", "svc", "production", "deployed", "ci", 20),
    ]
}

/// Writes the schema-5 upgrade fixture (run by hand with the relstat of
/// schema 5: `RELSTAT_WRITE_STORE_FIXTURE=<dir> cargo test --lib
/// write_schema5_store_fixture -- --ignored`).
#[test]
#[ignore]
fn write_schema5_store_fixture() {
    let dir = std::env::var("RELSTAT_WRITE_STORE_FIXTURE").expect("target directory");
    let store = Store::open(Path::new(&dir)).unwrap();
    let cfg = upgrade_gate_config();
    let mut tr = upgrade_tracker(&cfg);
    for ev in upgrade_events() {
        tr.apply(ev, 1_000_000);
    }
    store
        .commit(&tr.take_batch(), &[], &BTreeMap::new())
        .unwrap();
}

/// Writes the schema-6 upgrade fixture (run by hand with the relstat of
/// schema 6: `RELSTAT_WRITE_STORE_FIXTURE=<dir> cargo test --lib
/// write_schema6_store_fixture -- --ignored`): the upgrade events in two
/// batches, so the history's global sequence interleaves releases.
#[test]
#[ignore]
fn write_schema6_store_fixture() {
    let dir = std::env::var("RELSTAT_WRITE_STORE_FIXTURE").expect("target directory");
    let store = Store::open(Path::new(&dir)).unwrap();
    let cfg = upgrade_gate_config();
    let mut tr = upgrade_tracker(&cfg);
    let events = upgrade_events();
    let (first, second) = events.split_at(5);
    for ev in first {
        tr.apply(ev.clone(), 1_000_000);
    }
    store
        .commit(&tr.take_batch(), &[], &BTreeMap::new())
        .unwrap();
    for ev in second {
        tr.apply(ev.clone(), 1_000_500);
    }
    store
        .commit(&tr.take_batch(), &[], &BTreeMap::new())
        .unwrap();
}

/// The events of the schema-7 fixture beyond the upgrade events: every
/// optional field of an event set, a site, a human actor, a status
/// conflict, a terminal status and a rejection.
fn schema7_extra_events() -> Vec<Event> {
    let full = Event {
        id: "f1".into(),
        time: 30_000,
        release: "r6".into(),
        service: "api".into(),
        environment: "production".into(),
        site: "eu-1".into(),
        status: "in_progress".into(),
        actor: "alice".into(),
        actor_type: ActorType::Human,
        source: "ci".into(),
        reason: Some("hotfix \"é\" 😀".into()),
        version: Some("1.2.3".into()),
        commit: Some("abc123".into()),
        artifact: Some("oci://r/api:1.2.3".into()),
        commit_time: Some(25_000),
        change_class: Some(crate::event::ChangeClass::Emergency),
    };
    vec![
        full.clone(),
        Event {
            id: "f2".into(),
            time: 40_000,
            status: "deployed".into(),
            actor: "argo".into(),
            actor_type: ActorType::Automation,
            ..full.clone()
        },
        Event {
            id: "f3".into(),
            time: 50_000,
            status: "in_progress".into(),
            ..full.clone()
        },
        Event {
            id: "f4".into(),
            time: 60_000,
            status: "failed".into(),
            reason: None,
            change_class: None,
            ..full.clone()
        },
        Event {
            id: "x1".into(),
            time: 35_000,
            release: "r6".into(),
            service: "-".into(),
            environment: "-".into(),
            site: String::new(),
            status: "rejected".into(),
            source: "jira".into(),
            actor: "bob".into(),
            ..full
        },
    ]
}

/// Writes the schema-7 upgrade fixture (run by hand with the relstat of
/// schema 7: `RELSTAT_WRITE_STORE_FIXTURE=<dir> cargo test --lib
/// write_schema7_store_fixture -- --ignored`): the schema-6 fixture's two
/// batches, a third with every optional field, then a periodic check that
/// judges the gates (key memory with attempts; the findings are outbox
/// records, not history rows).
#[test]
#[ignore]
fn write_schema7_store_fixture() {
    let dir = std::env::var("RELSTAT_WRITE_STORE_FIXTURE").expect("target directory");
    let store = Store::open(Path::new(&dir)).unwrap();
    let cfg = upgrade_gate_config();
    let mut tr = upgrade_tracker(&cfg);
    let events = upgrade_events();
    let (first, second) = events.split_at(5);
    for (batch, at) in [
        (first.to_vec(), 1_000_000),
        (second.to_vec(), 1_000_500),
        (schema7_extra_events(), 1_001_000),
    ] {
        for ev in batch {
            tr.apply(ev, at);
        }
        store
            .commit(&tr.take_batch(), &[], &BTreeMap::new())
            .unwrap();
    }
    tr.tick(2_000_000, true);
    store
        .commit(&tr.take_batch(), &[], &BTreeMap::new())
        .unwrap();
}

/// The schema-7 fixture copied into a fresh directory, with its rows as
/// schema 7 wrote them (JSON, read before any migration): keys, history
/// rows by (release, seq), and the audit chain's head.
#[allow(clippy::type_complexity)]
fn schema7_copy() -> (
    tempfile::TempDir,
    Vec<(Key, KeyState)>,
    Vec<((String, u64), HistoryRecord)>,
    Vec<u8>,
) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/store/schema7");
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(src.join(STORE_FILE), dir.path().join(STORE_FILE)).unwrap();
    let db = Database::open(dir.path().join(STORE_FILE)).unwrap();
    let tx = db.begin_read().unwrap();
    let meta = tx.open_table(META).unwrap();
    assert_eq!(meta.get("schema").unwrap().unwrap().value(), b"7");
    let head = meta.get("audit_head").unwrap().unwrap().value().to_vec();
    let keys = tx
        .open_table(KEYS)
        .unwrap()
        .iter()
        .unwrap()
        .map(|r| {
            let (k, v) = r.unwrap();
            let key = Key::decode(k.value()).unwrap();
            (key, serde_json::from_slice(v.value()).unwrap())
        })
        .collect();
    let history = tx
        .open_table(HISTORY)
        .unwrap()
        .iter()
        .unwrap()
        .map(|r| {
            let (k, v) = r.unwrap();
            let (release, seq) = k.value();
            (
                (release.to_string(), seq),
                serde_json::from_slice(v.value()).unwrap(),
            )
        })
        .collect();
    drop(meta);
    drop(tx);
    drop(db);
    (dir, keys, history, head)
}

/// A store written by the relstat of schema 7 (tests/fixtures/store/
/// schema7, written by [`write_schema7_store_fixture`]) opens: its key
/// states and history rows are rewritten in the binary form and read as
/// schema 7 wrote them, the audit chain verifies with the same head, `store
/// check` finds nothing, the tracker resumes from it, new rows chain on, and
/// a second open migrates nothing.
#[test]
fn a_schema7_store_is_migrated_to_binary_rows_and_reads_as_before() {
    let (dir, keys7, history7, head7) = schema7_copy();
    // the fixture holds what the codec must carry
    assert_eq!((keys7.len(), history7.len()), (10, 14));
    assert!(keys7.iter().any(|(_, s)| !s.memory.attempts.is_empty()));
    assert!(keys7.iter().any(|(_, s)| s.finished.is_some()));
    // (no row with anomalies: the fixture's findings are the check's, made
    // after the events; the codec's proptests cover that field)
    assert!(history7.iter().any(|(_, h)| h.decision.is_some()));
    assert!(history7.iter().any(|(_, h)| {
        let e = &h.event;
        e.reason.is_some()
            && e.version.is_some()
            && e.commit.is_some()
            && e.artifact.is_some()
            && e.commit_time.is_some()
            && e.change_class.is_some()
            && !e.site.is_empty()
    }));

    let store = Store::open(dir.path()).unwrap();
    let raw = |store: &Store| {
        let tx = store.db.begin_read().unwrap();
        let meta = tx.open_table(META).unwrap();
        let schema = meta.get("schema").unwrap().unwrap().value().to_vec();
        let head = meta.get("audit_head").unwrap().unwrap().value().to_vec();
        let mut firsts: Vec<u8> = Vec::new();
        for r in tx.open_table(KEYS).unwrap().iter().unwrap() {
            firsts.push(r.unwrap().1.value()[0]);
        }
        let mut history = Vec::new();
        for r in tx.open_table(HISTORY).unwrap().iter().unwrap() {
            let (k, v) = r.unwrap();
            firsts.push(v.value()[0]);
            let (release, seq) = k.value();
            history.push((
                (release.to_string(), seq),
                codec::decode_history(v.value()).unwrap(),
            ));
        }
        (schema, head, firsts, history)
    };
    let (schema, head, firsts, history) = raw(&store);
    assert_eq!(schema, SCHEMA.to_string().as_bytes());
    assert!(firsts.iter().all(|b| *b == codec::FORMAT), "{firsts:?}");
    assert_eq!(firsts.len(), 24);
    assert_eq!(history, history7);
    assert_eq!(head, head7);
    let v = store.audit_verify().unwrap();
    assert_eq!((v.broken, v.rows, v.head_sequence), (None, 14, 14));
    assert!(store.check().unwrap().findings.is_empty());

    let snap = store.load().unwrap();
    assert_eq!(snap.quarantined, 0);
    let mut keys = snap.keys.clone();
    keys.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(keys, keys7);

    // the tracker resumes: a new report of r6's key moves it, and is
    // written and chained on
    let cfg = upgrade_gate_config();
    let mut tr = upgrade_tracker(&cfg);
    tr.restore(snap.keys, snap.seen, snap.failing, snap.approvals);
    tr.take_effects();
    let again = schema7_extra_events()[0].clone();
    assert_eq!(tr.apply(again, 2_100_000), InputResult::Duplicate);
    let next = Event {
        id: "f5".into(),
        time: 70_000,
        status: "in_progress".into(),
        ..schema7_extra_events()[0].clone()
    };
    assert_eq!(tr.apply(next, 2_100_000), InputResult::Accepted);
    store
        .commit(&tr.take_batch(), &[], &BTreeMap::new())
        .unwrap();
    let r6 = store.history("r6").unwrap();
    assert_eq!(r6.last().unwrap().event.id, "f5");
    assert_eq!(r6.last().unwrap().from.as_deref(), Some("failed"));
    let key6 = Key {
        release: "r6".into(),
        service: "api".into(),
        environment: "production".into(),
        site: "eu-1".into(),
    };
    let snap = store.load().unwrap();
    let (_, s6) = snap.keys.iter().find(|(k, _)| *k == key6).unwrap();
    assert_eq!((s6.status.as_str(), s6.max_id()), ("in_progress", "f5"));
    let v = store.audit_verify().unwrap();
    assert_eq!((v.broken, v.rows, v.head_sequence), (None, 15, 15));
    drop(store);

    // opened again: nothing to migrate, nothing changed
    let store = Store::open(dir.path()).unwrap();
    let (_, _, firsts, history) = raw(&store);
    assert!(firsts.iter().all(|b| *b == codec::FORMAT));
    assert_eq!(history.len(), 15);
    assert_eq!(history[..14], history7[..]);
    assert_eq!(store.audit_verify().unwrap().broken, None);
}

/// A schema-7 row that does not decode is left as it is by the migration:
/// the store opens, `store check` names it, the agent's load quarantines
/// the key, `store repair` the history row, and the other rows migrate.
#[test]
fn an_undecodable_schema7_row_is_left_for_the_quarantine() {
    let (dir, keys7, _, _) = schema7_copy();
    {
        let db = Database::open(dir.path().join(STORE_FILE)).unwrap();
        let tx = db.begin_write().unwrap();
        tx.open_table(KEYS)
            .unwrap()
            .insert(
                b"bad\0svc\0production\0".as_slice(),
                b"{\"status\":".as_slice(),
            )
            .unwrap();
        tx.open_table(HISTORY)
            .unwrap()
            .insert(("bad", 99), b"{not json".as_slice())
            .unwrap();
        tx.commit().unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    let report = store.check().unwrap();
    let mut found: Vec<String> = report
        .findings
        .iter()
        .map(|f| format!("{} {}", f.table, f.key()))
        .collect();
    found.sort();
    assert_eq!(found, ["history bad#99", "keys bad/svc/production/"]);
    let snap = store.load().unwrap();
    assert_eq!(snap.quarantined, 1);
    assert_eq!(snap.keys.len(), keys7.len());
    let report = store.repair().unwrap();
    assert_eq!(report.findings.len(), 1);
    let store = Store::open(dir.path()).unwrap();
    assert!(store.check().unwrap().findings.is_empty());
    assert_eq!(store.history_len().unwrap(), 14);
}

/// A store written by the relstat of schema 5 (tests/fixtures/store/
/// schema5, written by [`write_schema5_store_fixture`]) opens, and its gates
/// judge as before: approvals per service and release-wide, in any
/// environment, from approval sources only, by the deadline.
#[test]
fn a_schema5_store_opens_and_its_gates_judge_as_before() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/store/schema5");
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(src.join(STORE_FILE), dir.path().join(STORE_FILE)).unwrap();
    let store = Store::open(dir.path()).unwrap();
    let snap = store.load().unwrap();
    // each schema-5 row is one approval for every environment, by nobody known
    let mut rows: Vec<String> = snap
        .approvals
        .iter()
        .map(|(r, s, list)| {
            let l: Vec<String> = list
                .iter()
                .map(|x| {
                    format!(
                        "{}@{}/{}/{}/{}",
                        x.decision.as_str(),
                        x.at,
                        x.environment,
                        x.approver,
                        x.source
                    )
                })
                .collect();
            format!("{r}/{s}: {}", l.join(","))
        })
        .collect();
    rows.sort();
    assert_eq!(
        rows,
        [
            "r1/svc: approved@10000/-//",
            "r3/-: approved@10000/-//",
            "r4/-: approved@900000/-//",
        ]
    );
    let cfg = upgrade_gate_config();
    let mut tr = upgrade_tracker(&cfg);
    tr.restore(snap.keys, snap.seen, snap.failing, snap.approvals);
    tr.take_effects();
    tr.tick(2_000_000, true);
    let mut found: Vec<String> = tr
        .take_effects()
        .into_iter()
        .filter_map(|e| match e {
            crate::track::Effect::Anomaly(a) => Some(format!("{} {}", a.rule, a.release)),
            _ => None,
        })
        .collect();
    found.sort();
    assert_eq!(
        found,
        ["gate_bypass r2", "gate_bypass r4", "gate_bypass r5"]
    );
    let meta = store.db.begin_read().unwrap();
    let v = meta
        .open_table(META)
        .unwrap()
        .get("schema")
        .unwrap()
        .unwrap();
    assert_eq!(v.value(), SCHEMA.to_string().as_bytes());
}

/// An undecodable `rollups_stuck` entry does not block the start: it is
/// quarantined (a stuck rollup may then be reported once more).
#[test]
fn an_undecodable_stuck_rollups_entry_is_quarantined() {
    let store = Store::in_memory().unwrap();
    {
        let tx = store.db.begin_write().unwrap();
        tx.open_table(META)
            .unwrap()
            .insert(ROLLUPS_STUCK, b"[[\"r1\"".as_slice())
            .unwrap();
        tx.commit().unwrap();
    }
    let report = store.check().unwrap();
    let found: Vec<String> = report
        .findings
        .iter()
        .map(|f| format!("{} {}", f.table, f.key()))
        .collect();
    assert_eq!(found, ["meta rollups_stuck"]);
    let snap = store.load().unwrap();
    assert!(snap.rollups_stuck.is_empty());
    assert_eq!(snap.quarantined, 1);
    assert!(store.check().unwrap().findings.is_empty());
}

/// An undecodable row of the approvals ledger is moved to the quarantine at
/// load (the agent starts; the other rows stay), and `store check` sees it.
#[test]
fn an_undecodable_ledger_row_is_quarantined_at_load() {
    let store = Store::in_memory().unwrap();
    let batch = crate::track::Batch {
        approvals: vec![("r1".into(), "svc".into(), ledger_row())],
        ..Default::default()
    };
    store.commit(&batch, &[], &BTreeMap::new()).unwrap();
    {
        let tx = store.db.begin_write().unwrap();
        tx.open_table(LEDGER)
            .unwrap()
            .insert(("r2", "-"), b"{not json".as_slice())
            .unwrap();
        tx.commit().unwrap();
    }
    let report = store.check().unwrap();
    assert_eq!(report.findings.len(), 1);
    assert_eq!(report.findings[0].key(), "r2/-");
    let snap = store.load().unwrap();
    assert_eq!(snap.quarantined, 1);
    assert_eq!(
        snap.approvals,
        vec![("r1".into(), "svc".into(), ledger_row())]
    );
    let q = store.quarantined().unwrap();
    assert_eq!(q[0].table, "approval_ledger");
}

/// The events of the schema-8 fixture beyond the schema-7 fixture's: moves
/// the model does not allow (history rows carrying anomalies), on a release
/// of their own.
fn schema8_extra_events() -> Vec<Event> {
    let ev = |id: &str, status: &str, secs: i64| Event {
        id: id.into(),
        time: secs * 1000,
        release: "r8".into(),
        service: "web".into(),
        environment: "staging".into(),
        status: status.into(),
        source: "ci".into(),
        ..event(0)
    };
    vec![
        ev("g1", "complete", 100),
        ev("g2", "in_test", 110),
        ev("g3", "scheduled", 120),
        ev("g4", "deployed", 130),
    ]
}

/// Writes the schema-8 upgrade fixture (run by hand with the relstat of
/// schema 8: `RELSTAT_WRITE_STORE_FIXTURE=<dir> cargo test --lib
/// write_schema8_store_fixture -- --ignored`): the schema-7 fixture's
/// batches, a fourth whose rows carry anomalies, with the outbox on
/// (`[spool] enabled`: the findings are outbox records too), then a
/// periodic check that judges the gates.
#[test]
#[ignore]
fn write_schema8_store_fixture() {
    let dir = std::env::var("RELSTAT_WRITE_STORE_FIXTURE").expect("target directory");
    let store = Store::open(Path::new(&dir)).unwrap();
    let cfg = schema8_config();
    let mut tr = upgrade_tracker(&cfg);
    let events = upgrade_events();
    let (first, second) = events.split_at(5);
    for (batch, at) in [
        (first.to_vec(), 1_000_000),
        (second.to_vec(), 1_000_500),
        (schema7_extra_events(), 1_001_000),
        (schema8_extra_events(), 1_001_500),
    ] {
        for ev in batch {
            tr.apply(ev, at);
        }
        store
            .commit(&tr.take_batch(), &[], &BTreeMap::new())
            .unwrap();
    }
    tr.tick(2_000_000, true);
    store
        .commit(&tr.take_batch(), &[], &BTreeMap::new())
        .unwrap();
}

/// The schema-8 fixture's configuration: the upgrade fixtures' gate, and
/// the outbox on.
fn schema8_config() -> crate::config::Config {
    toml::from_str(
        "[model.gate]\nenvironments = [\"production\"]\napproval_sources = [\"jira\"]\n\
         [spool]\nenabled = true\n",
    )
    .unwrap()
}

/// The schema-8 fixture copied into a fresh directory, with what schema 8
/// wrote, read before any migration: history rows by (release, seq), seen
/// ids, the time index's (recorded_at, seq) and the audit chain's head.
#[allow(clippy::type_complexity)]
fn schema8_copy() -> (
    tempfile::TempDir,
    Vec<((String, u64), HistoryRecord)>,
    Vec<(u128, TimeMs)>,
    Vec<(TimeMs, u64)>,
    Vec<u8>,
) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/store/schema8");
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(src.join(STORE_FILE), dir.path().join(STORE_FILE)).unwrap();
    let db = Database::open(dir.path().join(STORE_FILE)).unwrap();
    let tx = db.begin_read().unwrap();
    let meta = tx.open_table(META).unwrap();
    assert_eq!(meta.get("schema").unwrap().unwrap().value(), b"8");
    let head = meta.get("audit_head").unwrap().unwrap().value().to_vec();
    let history = tx
        .open_table(HISTORY)
        .unwrap()
        .iter()
        .unwrap()
        .map(|r| {
            let (k, v) = r.unwrap();
            let (release, seq) = k.value();
            (
                (release.to_string(), seq),
                codec::decode_history(v.value()).unwrap(),
            )
        })
        .collect();
    let mut seen: Vec<(u128, TimeMs)> = tx
        .open_table(SEEN_V8)
        .unwrap()
        .iter()
        .unwrap()
        .map(|r| {
            let (at, h) = r.unwrap().0.value();
            (h, at)
        })
        .collect();
    seen.sort();
    let by_time = tx
        .open_table(HISTORY_BY_TIME_V8)
        .unwrap()
        .iter()
        .unwrap()
        .map(|r| r.unwrap().0.value())
        .collect();
    drop(meta);
    drop(tx);
    drop(db);
    (dir, history, seen, by_time, head)
}

/// A store written by the relstat of schema 8 (tests/fixtures/store/
/// schema8, written by [`write_schema8_store_fixture`]) opens as schema 9:
/// its seen ids are grouped and load as before, the history's time index is
/// one entry per run of rows and an as-of scan finds the rows the old index
/// found, the history, outbox and key states read as before, the audit
/// chain verifies with the same head, `store check` finds nothing, new rows
/// chain on, and a second open migrates nothing.
#[test]
fn a_schema8_store_is_migrated_to_grouped_indexes_and_reads_as_before() {
    let (dir, history8, seen8, by_time8, head8) = schema8_copy();
    // the fixture holds what the migration must carry
    assert!(history8.iter().any(|(_, h)| !h.anomalies.is_empty()));
    let releases: std::collections::BTreeSet<&str> =
        history8.iter().map(|((r, _), _)| r.as_str()).collect();
    assert!(releases.len() >= 5, "{releases:?}");
    assert_eq!(seen8.len(), history8.len());
    assert_eq!(by_time8.len(), history8.len());
    let recorded: std::collections::BTreeSet<TimeMs> = by_time8.iter().map(|(at, _)| *at).collect();
    assert!(recorded.len() >= 4, "{recorded:?}");

    let store = Store::open(dir.path()).unwrap();
    assert!(store.outbox_stats().unwrap().events > 0);
    let outbox8 = store.outbox_read(0, 1000).unwrap();
    {
        let tx = store.db.begin_read().unwrap();
        let meta = tx.open_table(META).unwrap();
        assert_eq!(
            meta.get("schema").unwrap().unwrap().value(),
            SCHEMA.to_string().as_bytes()
        );
        assert_eq!(meta.get("audit_head").unwrap().unwrap().value(), head8);
        assert!(
            tx.open_table(SEEN_V8).is_err(),
            "the old seen table is gone"
        );
        assert!(tx.open_table(HISTORY_BY_TIME_V8).is_err());
        assert_eq!(tx.open_table(HISTORY_BATCHES).unwrap().len().unwrap(), 1);
    }
    assert_eq!(SCHEMA, 9);
    let mut seen = store.load().unwrap().seen;
    seen.sort();
    assert_eq!(seen, seen8);
    let mut all = Vec::new();
    store.history_scan(None, |r| all.push(r)).unwrap();
    let mut want: Vec<HistoryRecord> = history8.iter().map(|(_, h)| h.clone()).collect();
    assert_eq!(all, want);
    // as of each recorded time (and before and after all), the rows the
    // schema-8 index named, grouped by release in seq order
    for &t in recorded.iter().chain([&0, &i64::MAX]) {
        let mut got = Vec::new();
        store.history_scan(Some(t), |r| got.push(r)).unwrap();
        want = history8
            .iter()
            .filter(|((_, seq), _)| by_time8.iter().any(|(at, s)| s == seq && *at <= t))
            .map(|(_, h)| h.clone())
            .collect();
        assert_eq!(got, want, "as of {t}");
    }
    for r in &releases {
        let want: Vec<&HistoryRecord> = history8
            .iter()
            .filter(|((rel, _), _)| rel == r)
            .map(|(_, h)| h)
            .collect();
        let got = store.history(r).unwrap();
        assert_eq!(got.iter().collect::<Vec<_>>(), want);
    }
    let v = store.audit_verify().unwrap();
    assert_eq!(
        (v.broken, v.rows, v.head_sequence),
        (None, history8.len() as u64, history8.len() as u64)
    );
    assert!(store.check().unwrap().findings.is_empty());

    // the tracker resumes: a seen id is a duplicate, a new event is written
    // and chained on, and found by an as-of scan
    let snap = store.load().unwrap();
    let cfg = schema8_config();
    let mut tr = upgrade_tracker(&cfg);
    tr.restore(snap.keys, snap.seen, snap.failing, snap.approvals);
    tr.take_effects();
    let again = schema8_extra_events()[0].clone();
    assert_eq!(tr.apply(again, 3_000_000), InputResult::Duplicate);
    let next = Event {
        id: "g5".into(),
        time: 140_000,
        status: "complete".into(),
        ..schema8_extra_events()[0].clone()
    };
    assert_eq!(tr.apply(next, 3_000_000), InputResult::Accepted);
    store
        .commit(&tr.take_batch(), &[], &BTreeMap::new())
        .unwrap();
    let n = history8.len() as u64 + 1;
    let v = store.audit_verify().unwrap();
    assert_eq!((v.broken, v.rows, v.head_sequence), (None, n, n));
    let mut got = Vec::new();
    store
        .history_scan(Some(3_000_000), |r| got.push(r.event.id))
        .unwrap();
    assert_eq!(got.len() as u64, n);
    assert!(got.contains(&"g5".to_string()));
    assert_eq!(
        store.outbox_read(0, 1000).unwrap()[..outbox8.len()],
        outbox8[..]
    );
    drop(store);

    // opened again: nothing to migrate, nothing changed
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.history_len().unwrap(), n);
    assert_eq!(store.load().unwrap().seen.len(), seen8.len() + 1);
    assert_eq!(store.audit_verify().unwrap().broken, None);
}

/// The seen ids of a batch are stored in groups (a batch's ids share their
/// recorded time): more than a group holds, several times, and ids of a
/// later batch at the same time, all load; the purge drops whole groups by
/// time.
#[test]
fn seen_ids_are_stored_in_groups_and_purged_by_time() {
    let store = Store::in_memory().unwrap();
    let mut b = Batch::default();
    for i in 0..600u128 {
        b.seen
            .push((1_000 + i, if i < 500 { 5_000 } else { 6_000 }));
    }
    store.commit(&b, &[], &BTreeMap::new()).unwrap();
    // the same first id at the same time again, with others
    let b2 = Batch {
        seen: vec![(1_000, 5_000), (9, 5_000), (8, 7_000)],
        ..Default::default()
    };
    store.commit(&b2, &[], &BTreeMap::new()).unwrap();
    {
        let tx = store.db.begin_read().unwrap();
        // 500 at 5,000 (two groups: 256 + 244), 100 at 6,000, then b2's
        // first joins its group, 8 at 7,000
        assert_eq!(tx.open_table(SEEN_GROUPS).unwrap().len().unwrap(), 4);
    }
    let mut seen = store.load().unwrap().seen;
    seen.sort();
    // (1,000 at 5,000 again is one id, as it was one row before)
    let mut want: Vec<(u128, TimeMs)> = b.seen.clone();
    want.extend([(9, 5_000), (8, 7_000)]);
    want.sort();
    assert_eq!(seen, want);
    let purge = Batch {
        seen_purge_before: Some(6_000),
        ..Default::default()
    };
    store.commit(&purge, &[], &BTreeMap::new()).unwrap();
    let mut seen = store.load().unwrap().seen;
    seen.sort();
    let want: Vec<(u128, TimeMs)> = want.into_iter().filter(|(_, at)| *at >= 6_000).collect();
    assert_eq!(seen, want);
}

/// The history's time index is one entry per batch (its lowest recorded
/// time): an as-of scan finds exactly the rows recorded up to the instant,
/// also when a batch's rows are recorded out of order and after a purge.
#[test]
fn an_as_of_history_scan_finds_the_rows_recorded_by_then() {
    let store = Store::in_memory().unwrap();
    let row = |i: u64, release: &str, at: TimeMs| HistoryRecord {
        event: Event {
            release: release.into(),
            ..event(i)
        },
        recorded_at: at,
        order_time: 1_000 * i as i64,
        from: None,
        late: false,
        anomalies: Vec::new(),
        decision: None,
    };
    let batches = [
        vec![row(1, "a", 100), row(2, "b", 300), row(3, "a", 200)],
        vec![row(4, "b", 150), row(5, "c", 400)],
        vec![row(6, "a", 500)],
    ];
    for h in &batches {
        let b = Batch {
            history: h.clone(),
            ..Default::default()
        };
        store.commit(&b, &[], &BTreeMap::new()).unwrap();
    }
    {
        let tx = store.db.begin_read().unwrap();
        assert_eq!(tx.open_table(HISTORY_BATCHES).unwrap().len().unwrap(), 3);
    }
    let ids = |until: Option<TimeMs>| {
        let mut out = Vec::new();
        store.history_scan(until, |r| out.push(r.event.id)).unwrap();
        out.join(" ")
    };
    assert_eq!(ids(Some(99)), "");
    assert_eq!(ids(Some(150)), "id-1 id-4");
    assert_eq!(ids(Some(200)), "id-1 id-3 id-4");
    assert_eq!(ids(Some(400)), "id-1 id-3 id-2 id-4 id-5");
    assert_eq!(ids(None), "id-1 id-3 id-6 id-2 id-4 id-5");
    assert_eq!(ids(Some(500)), ids(None));
    // retention removes the chain's start up to the first row recorded
    // later (seq 1 to 4 before 350, seq 5 not: it stops there); the index
    // drops the first batch's entry, keeps the second's (seq 5 is left)
    let purge = Batch {
        history_purge_before: Some(350),
        ..Default::default()
    };
    store.commit(&purge, &[], &BTreeMap::new()).unwrap();
    assert_eq!(ids(Some(400)), "id-5");
    assert_eq!(ids(None), "id-6 id-5");
    {
        let tx = store.db.begin_read().unwrap();
        assert_eq!(tx.open_table(HISTORY_BATCHES).unwrap().len().unwrap(), 2);
    }
    // a later purge takes the first batch's last row: its entry goes
    let purge = Batch {
        history_purge_before: Some(1_000),
        ..Default::default()
    };
    store.commit(&purge, &[], &BTreeMap::new()).unwrap();
    assert_eq!(ids(None), "");
    let tx = store.db.begin_read().unwrap();
    assert_eq!(tx.open_table(HISTORY_BATCHES).unwrap().len().unwrap(), 0);
}
