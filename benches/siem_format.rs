//! SIEM formatting per event (events/s): one outbox record to the bytes of
//! one message in each format (rfc5424, cef, leef, json), and the JSON
//! decode of an outbox record the forwarder does before formatting (owned,
//! as before issue 10, and borrowed, as now), and the two together.
//! Run: `cargo bench --bench siem_format`. Figures go to BENCHMARKS.md.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use relstat::config::{Severity, SiemFormat};
use relstat::detect::{Anomaly, AnomalyRef};
use relstat::event::ActorType;
use relstat::sinks::siem::format::FormatContext;

/// A realistic record (as `forward = "all"` writes for a transition).
fn record(i: usize) -> Anomaly {
    Anomaly {
        rule: "transition".into(),
        severity: Severity::Info,
        release: format!("2026.11.{i}"),
        service: format!("svc-{}", i % 50),
        environment: "production".into(),
        site: "dc-east".into(),
        from: Some("in_progress".into()),
        to: "deployed".into(),
        actor: "deploy-bot".into(),
        actor_type: ActorType::Automation,
        source: "deploy-log".into(),
        event_id: format!("0f3c9a2e4b7d1c08{i:016x}"),
        event_time: 1_790_000_000_000 + i as i64 * 7,
        detected_at: 1_790_000_000_500 + i as i64 * 7,
        reason: None,
        version: Some(format!("1.{i}.0")),
        commit: None,
        change_class: None,
        approver: None,
        decision: None,
        audit_sequence: None,
        audit_hash: None,
        host: "web-1".into(),
        message: format!(
            "2026.11.{i} svc-{} production: in_progress -> deployed",
            i % 50
        ),
    }
}

fn bench(c: &mut Criterion) {
    const N: usize = 10_000;
    let recs: Vec<Anomaly> = (0..N).map(record).collect();
    let mut g = c.benchmark_group("siem_format");
    g.sample_size(20);
    g.throughput(Throughput::Elements(N as u64));
    for (name, f) in [
        ("rfc5424", SiemFormat::Rfc5424),
        ("cef", SiemFormat::Cef),
        ("leef", SiemFormat::Leef),
        ("json", SiemFormat::Json),
    ] {
        let ctx = FormatContext::new(f, "authpriv", "relstat@32473");
        let mut out = Vec::with_capacity(1 << 20);
        g.bench_function(name, |b| {
            b.iter(|| {
                out.clear();
                for r in &recs {
                    ctx.write(r, &mut out);
                }
                black_box(out.len())
            })
        });
    }
    let encoded: Vec<Vec<u8>> = recs
        .iter()
        .map(|r| serde_json::to_vec(r).unwrap())
        .collect();
    g.bench_function("outbox_decode_owned", |b| {
        b.iter(|| {
            for e in &encoded {
                black_box(serde_json::from_slice::<Anomaly>(e).unwrap());
            }
        })
    });
    // What the forwarder does per record: decode borrowed, format rfc5424.
    g.bench_function("outbox_decode_borrowed", |b| {
        b.iter(|| {
            for e in &encoded {
                black_box(serde_json::from_slice::<AnomalyRef<'_>>(e).unwrap());
            }
        })
    });
    let ctx = FormatContext::new(SiemFormat::Rfc5424, "authpriv", "relstat@32473");
    let mut out = Vec::with_capacity(1 << 20);
    g.bench_function("decode_and_rfc5424", |b| {
        b.iter(|| {
            out.clear();
            for e in &encoded {
                let s = std::str::from_utf8(e).unwrap();
                let r: AnomalyRef<'_> = serde_json::from_str(s).unwrap();
                ctx.write_ref(&r, &mut out);
            }
            black_box(out.len())
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
