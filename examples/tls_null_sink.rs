//! A null TLS syslog receiver for benchmarks (`benches/compare-forward.sh`,
//! `benches/latency.py`): accepts TLS connections on 127.0.0.1, parses
//! octet-counted frames (RFC 5425) and discards them, so the receiver is not
//! what a forwarding benchmark measures. Every 10 ms it writes the number of
//! frames received so far to `COUNT_FILE`; with `--dump FILE` it also writes
//! each message as one line (for feeding rsyslog's imfile the same events).
//!
//! Usage: `tls_null_sink CERT.pem KEY.pem PORT_FILE COUNT_FILE [--dump FILE]`
//! (listens on an ephemeral port written to PORT_FILE).

use std::io::{Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 5 {
        eprintln!("usage: tls_null_sink CERT.pem KEY.pem PORT_FILE COUNT_FILE [--dump FILE]");
        std::process::exit(2);
    }
    let dump = match args.get(5).map(String::as_str) {
        Some("--dump") => Some(Arc::new(Mutex::new(std::io::BufWriter::new(
            std::fs::File::create(&args[6]).expect("dump file"),
        )))),
        _ => None,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&args[1])
        .expect("cert file")
        .collect::<Result<_, _>>()
        .expect("cert PEM");
    let key = PrivateKeyDer::from_pem_file(&args[2]).expect("key PEM");
    let cfg = Arc::new(
        rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("certificate"),
    );
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("port").port();
    std::fs::write(&args[3], port.to_string()).expect("port file");
    let count = Arc::new(AtomicU64::new(0));
    let (c, count_file) = (count.clone(), args[4].clone());
    std::thread::spawn(move || {
        let mut last = u64::MAX;
        loop {
            let n = c.load(Ordering::Relaxed);
            if n != last {
                let tmp = format!("{count_file}.tmp");
                if std::fs::write(&tmp, n.to_string()).is_ok() {
                    let _ = std::fs::rename(&tmp, &count_file);
                }
                last = n;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    for sock in l.incoming() {
        let Ok(sock) = sock else { continue };
        let (cfg, count, dump) = (cfg.clone(), count.clone(), dump.clone());
        std::thread::spawn(move || {
            let Ok(conn) = rustls::ServerConnection::new(cfg) else {
                return;
            };
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
                let mut frames = 0;
                while let Some(sp) = pending[at..].iter().position(|&b| b == b' ') {
                    let Some(len) = std::str::from_utf8(&pending[at..at + sp])
                        .ok()
                        .and_then(|v| v.parse::<usize>().ok())
                    else {
                        eprintln!("tls_null_sink: not octet-counted framing");
                        return;
                    };
                    let end = at + sp + 1 + len;
                    if pending.len() < end {
                        break;
                    }
                    if let Some(d) = &dump {
                        let mut d = d.lock().unwrap_or_else(|e| e.into_inner());
                        let _ = d.write_all(&pending[at + sp + 1..end]);
                        let _ = d.write_all(b"\n");
                    }
                    at = end;
                    frames += 1;
                }
                pending.drain(..at);
                if let Some(d) = &dump {
                    let _ = d.lock().unwrap_or_else(|e| e.into_inner()).flush();
                }
                count.fetch_add(frames, Ordering::Relaxed);
            }
        });
    }
}
