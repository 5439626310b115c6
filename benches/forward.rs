//! Forwarding throughput from a full spool over TLS, rate limit off
//! (events/s): `N` records in a real store, the forwarder draining them to
//! (1) a null TLS sink in this process (rustls server that parses the
//! octet-counted frames and discards them: what relstat itself can do) and
//! (2) a real rsyslog (TLS input, in-memory queue, omfile), when installed.
//! Run: `cargo bench --bench forward` (N from RELSTAT_BENCH_N, default 200000).

use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rcgen::{CertificateParams, KeyPair};
use relstat::config::{Severity, SiemConfig, SpoolConfig};
use relstat::detect::Anomaly;
use relstat::event::ActorType;
use relstat::sinks::siem::{Forwarder, Observer};
use relstat::spool::outbox::Outbox as SpoolGate;
use relstat::store::{OutboxStats, Store};
use relstat::track::Batch;

struct Quiet;
impl Observer for Quiet {
    fn count(&self, _: &'static str, _: u64) {}
    fn connected(&self, _: bool) {}
    fn spool(&self, _: &OutboxStats) {}
}

fn record(i: usize) -> Anomaly {
    Anomaly {
        rule: "invalid_transition".into(),
        severity: Severity::Warning,
        release: format!("r{i}"),
        service: format!("svc-{}", i % 50),
        environment: "production".into(),
        site: "dc-east".into(),
        from: Some("complete".into()),
        to: "deployed".into(),
        actor: "deploy-bot".into(),
        actor_type: ActorType::Automation,
        source: "deploy-log".into(),
        event_id: format!("evt-{i:012}"),
        event_time: 1_790_000_000_000 + i as i64,
        detected_at: 1_790_000_000_500 + i as i64,
        reason: Some("transition not in the model".into()),
        version: Some("1.2.3".into()),
        commit: None,
        change_class: None,
        approver: None,
        decision: None,
        audit_sequence: None,
        audit_hash: None,
        host: "web-1".into(),
        message: format!("r{i}: complete -> deployed is not an allowed transition"),
    }
}

fn fill(dir: &std::path::Path, n: usize) -> Arc<Store> {
    let store = Store::open(dir).unwrap();
    for chunk in (0..n).collect::<Vec<_>>().chunks(10_000) {
        let batch = Batch {
            outbox: chunk.iter().map(|&i| record(i)).collect(),
            ..Batch::default()
        };
        store.commit(&batch, &[], &Default::default()).unwrap();
    }
    Arc::new(store)
}

/// Drains the spool into `address`; returns (seconds until `received`
/// reached n, seconds until the spool was empty).
fn run(store: Arc<Store>, siem_toml: &str, n: u64, received: &dyn Fn() -> u64) -> (f64, f64) {
    let siem: SiemConfig = toml::from_str(siem_toml).unwrap();
    let gate = Arc::new(SpoolGate::new(&SpoolConfig::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let f = Forwarder::new(
        &siem,
        "web-1",
        "dc-east",
        store.clone(),
        Arc::new(Quiet),
        gate,
        stop.clone(),
    )
    .unwrap();
    let start = Instant::now();
    let h = f.spawn().unwrap();
    let mut got_all = None;
    while start.elapsed() < Duration::from_secs(300) {
        if got_all.is_none() && received() >= n {
            got_all = Some(start.elapsed().as_secs_f64());
        }
        if got_all.is_some() && store.outbox_stats().unwrap().events == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let empty = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    h.join().unwrap();
    (got_all.expect("not everything arrived"), empty)
}

fn certs(dir: &std::path::Path) -> (Vec<u8>, Vec<u8>) {
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    std::fs::write(dir.join("ca.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("server.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("server.key"), key.serialize_pem()).unwrap();
    (cert.pem().into_bytes(), key.serialize_pem().into_bytes())
}

/// A TLS server that counts octet-counted frames and discards them.
fn null_sink(cert: &[u8], key: &[u8]) -> (u16, Arc<AtomicU64>) {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain = vec![CertificateDer::from_pem_slice(cert).unwrap()];
    let key = PrivateKeyDer::from_pem_slice(key).unwrap();
    let cfg = Arc::new(
        rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap(),
    );
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let count = Arc::new(AtomicU64::new(0));
    let c = count.clone();
    std::thread::spawn(move || {
        for sock in l.incoming() {
            let Ok(sock) = sock else { continue };
            let conn = rustls::ServerConnection::new(cfg.clone()).unwrap();
            let mut s = rustls::StreamOwned::new(conn, sock);
            let mut buf = vec![0u8; 256 * 1024];
            let mut pending: Vec<u8> = Vec::new();
            loop {
                let n = match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                pending.extend_from_slice(&buf[..n]);
                let mut at = 0;
                while let Some(sp) = pending[at..].iter().position(|&b| b == b' ') {
                    let len: usize = std::str::from_utf8(&pending[at..at + sp])
                        .unwrap()
                        .parse()
                        .unwrap();
                    if pending.len() < at + sp + 1 + len {
                        break;
                    }
                    at += sp + 1 + len;
                    c.fetch_add(1, Ordering::Relaxed);
                }
                pending.drain(..at);
            }
        }
    });
    (port, count)
}

fn main() {
    let n: usize = std::env::var("RELSTAT_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = certs(dir.path());
    let d = dir.path().display();
    let siem = |port: u16| {
        format!(
            "transport = \"tls\"\naddress = \"127.0.0.1:{port}\"\nca_file = \"{d}/ca.pem\"\nserver_name = \"localhost\"\n"
        )
    };

    let t = Instant::now();
    let store = fill(&dir.path().join("null"), n);
    eprintln!("filled {n} records in {:.2} s", t.elapsed().as_secs_f64());
    let (port, count) = null_sink(&cert, &key);
    let (got, empty) = run(store, &siem(port), n as u64, &|| {
        count.load(Ordering::Relaxed)
    });
    println!(
        "null TLS sink: {n} events in {got:.2} s = {:.0} events/s (spool empty after {empty:.2} s, incl. the {} ms delivery grace)",
        n as f64 / got,
        relstat::sinks::siem::transport::stream::GRACE.as_millis()
    );

    let Some(rsyslogd) = ["/usr/sbin/rsyslogd", "/sbin/rsyslogd"]
        .iter()
        .find(|p| std::path::Path::new(p).exists())
    else {
        println!("rsyslog: not installed, skipped");
        return;
    };
    let rs = dir.path().join("rs");
    std::fs::create_dir_all(rs.join("work")).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let conf = format!(
        "global(workDirectory=\"{r}/work\" DefaultNetstreamDriver=\"gtls\" DefaultNetstreamDriverCAFile=\"{d}/ca.pem\" \
         DefaultNetstreamDriverCertFile=\"{d}/server.pem\" DefaultNetstreamDriverKeyFile=\"{d}/server.key\")\n\
         module(load=\"imtcp\" StreamDriver.Name=\"gtls\" StreamDriver.Mode=\"1\" StreamDriver.AuthMode=\"anon\")\n\
         input(type=\"imtcp\" address=\"127.0.0.1\" port=\"{port}\" ruleset=\"in\" SupportOctetCountedFraming=\"on\" gnutlsPriorityString=\"NORMAL\")\n\
         template(name=\"n\" type=\"string\" string=\"x\\n\")\n\
         ruleset(name=\"in\") {{ action(type=\"omfile\" file=\"{r}/received.log\" template=\"n\") }}\n",
        r = rs.display()
    );
    std::fs::write(rs.join("rsyslog.conf"), conf).unwrap();
    let mut child = std::process::Command::new(rsyslogd)
        .args(["-n", "-f"])
        .arg(rs.join("rsyslog.conf"))
        .arg("-i")
        .arg(rs.join("pid"))
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
        && t.elapsed() < Duration::from_secs(10)
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    let store = fill(&dir.path().join("rsyslog"), n);
    let file = rs.join("received.log");
    // Two bytes a message ("x\n").
    let (got, empty) = run(store, &siem(port), n as u64, &|| {
        std::fs::metadata(&file).map(|m| m.len() / 2).unwrap_or(0)
    });
    println!(
        "rsyslog 8 (gtls, omfile): {n} events in {got:.2} s = {:.0} events/s (spool empty after {empty:.2} s)",
        n as f64 / got
    );
    let _ = child.kill();
    let _ = child.wait();
}
