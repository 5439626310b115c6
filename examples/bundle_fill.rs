//! Fills a store's outbox with N synthetic SIEM records, straight through
//! the library (no tracker): the input of `scripts/bench-bundles.sh`.
//!
//! `cargo run --release --example bundle_fill -- DATA_DIR N`

use relstat::config::Severity;
use relstat::detect::Anomaly;
use relstat::event::ActorType;
use relstat::store::Store;
use relstat::track::Batch;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(dir), Some(n)) = (args.get(1), args.get(2).and_then(|n| n.parse::<u64>().ok()))
    else {
        eprintln!("usage: bundle_fill DATA_DIR N");
        std::process::exit(2);
    };
    let store = Store::open(std::path::Path::new(dir)).expect("store opens");
    let mut i = 0;
    while i < n {
        let end = (i + 10_000).min(n);
        let outbox = (i..end)
            .map(|i| Anomaly {
                rule: "change_freeze".into(),
                severity: Severity::Error,
                release: format!("2026.11.{i}"),
                service: format!("svc-{}", i % 50),
                environment: "production".into(),
                site: "dc-a".into(),
                from: Some("in_progress".into()),
                to: "deployed".into(),
                actor: "deploy-bot".into(),
                actor_type: ActorType::Automation,
                source: "deploy-log".into(),
                event_id: format!("evt-{i:012}"),
                event_time: 1_795_000_000_000 + i as i64,
                detected_at: 1_795_000_001_000 + i as i64,
                reason: Some("CHG-12345".into()),
                version: Some("1.2.3".into()),
                commit: None,
                change_class: None,
                approver: None,
                decision: None,
                audit_sequence: None,
                audit_hash: None,
                host: "site-a-host".into(),
                message: format!(
                    "2026.11.{i} entered deployed in production during a change freeze"
                ),
            })
            .collect();
        let b = Batch {
            outbox,
            ..Default::default()
        };
        store.commit(&b, &[], &Default::default()).expect("commit");
        i = end;
    }
    eprintln!("{n} records in {dir}");
}
