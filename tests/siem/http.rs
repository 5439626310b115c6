//! The `http` transport against collectors started here on 127.0.0.1
//! (plain or TLS, mutual TLS optional): chunked answers on a kept-alive
//! connection, refusals (counted, held in the spool, backed off), batches
//! cut to `max_batch_bytes`, the proxy from the environment and `NO_PROXY`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::rsyslog::write_certs;
use crate::util::*;

/// One POST as the collector saw it.
#[derive(Clone)]
struct Post {
    connection: usize,
    body: Vec<u8>,
}

/// A collector: answers every POST with `status` (changeable while it
/// runs), a chunked body when `chunked`; records every request.
struct Collector {
    port: u16,
    status: Arc<AtomicU16>,
    posts: Arc<Mutex<Vec<Post>>>,
    connections: Arc<AtomicUsize>,
}

impl Collector {
    fn start(status: u16, chunked: bool, tls: Option<Arc<rustls::ServerConfig>>) -> Collector {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let c = Collector {
            port,
            status: Arc::new(AtomicU16::new(status)),
            posts: Arc::default(),
            connections: Arc::default(),
        };
        let (st, posts, conns) = (c.status.clone(), c.posts.clone(), c.connections.clone());
        std::thread::spawn(move || {
            for conn in l.incoming() {
                let Ok(conn) = conn else { return };
                conn.set_read_timeout(Some(Duration::from_secs(20)))
                    .unwrap();
                let id = conns.fetch_add(1, Ordering::SeqCst);
                let (st, posts, tls) = (st.clone(), posts.clone(), tls.clone());
                std::thread::spawn(move || match tls {
                    None => serve(BufReader::new(conn), id, &st, &posts, chunked),
                    Some(cfg) => {
                        let Ok(sc) = rustls::ServerConnection::new(cfg) else {
                            return;
                        };
                        let s = rustls::StreamOwned::new(sc, conn);
                        serve(BufReader::new(s), id, &st, &posts, chunked)
                    }
                });
            }
        });
        c
    }

    fn url(&self, scheme: &str, host: &str) -> String {
        format!("{scheme}://{host}:{}/hooks/siem", self.port)
    }

    fn posts(&self) -> Vec<Post> {
        self.posts.lock().unwrap().clone()
    }

    /// The releases received, in order, over every POST.
    fn releases(&self) -> Vec<String> {
        self.posts()
            .iter()
            .flat_map(|p| {
                String::from_utf8_lossy(&p.body)
                    .lines()
                    .map(|l| {
                        let v: serde_json::Value = serde_json::from_str(l).expect("NDJSON");
                        v["release"].as_str().unwrap_or_default().to_string()
                    })
                    .collect::<Vec<_>>()
            })
            .collect()
    }
}

/// Serves requests on one connection until it closes.
fn serve<S: Read + Write>(
    mut rd: BufReader<S>,
    id: usize,
    status: &AtomicU16,
    posts: &Mutex<Vec<Post>>,
    chunked: bool,
) {
    loop {
        let mut line = String::new();
        if rd.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut length = 0usize;
        loop {
            let mut h = String::new();
            if rd.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            if h.trim().is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                length = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; length];
        if rd.read_exact(&mut body).is_err() {
            return;
        }
        let status = status.load(Ordering::SeqCst);
        posts.lock().unwrap().push(Post {
            connection: id,
            body,
        });
        let text = if status == 400 {
            "{\"error\":\"unknown index relstat\"}".to_string()
        } else {
            "{\"accepted\":true}".to_string()
        };
        let retry = if matches!(status, 429 | 503) {
            "Retry-After: 2\r\n"
        } else {
            ""
        };
        let answer = if chunked {
            let (a, b) = text.split_at(text.len() / 2);
            format!(
                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n{retry}\
                 Transfer-Encoding: chunked\r\n\r\n{:x}\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\n\r\n",
                a.len(),
                b.len()
            )
        } else {
            format!(
                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n{retry}\
                 Content-Length: {}\r\n\r\n{text}",
                text.len()
            )
        };
        if rd.get_mut().write_all(answer.as_bytes()).is_err() || rd.get_mut().flush().is_err() {
            return;
        }
    }
}

fn siem_http(url: &str, extra: &str) -> String {
    format!("[siem]\ntransport = \"http\"\nurl = \"{url}\"\nforward = \"all\"\n{extra}\n")
}

fn forward(agent: &Agent, result: &str) -> f64 {
    sample(
        &agent.metrics(),
        &format!(r#"relstat_forward_events_total{{result="{result}",sink="http"}}"#),
    )
    .unwrap_or(0.0)
}

fn spool_events(agent: &Agent) -> f64 {
    sample(&agent.metrics(), "relstat_spool_events").unwrap_or(-1.0)
}

fn want(from: usize, to: usize) -> Vec<String> {
    (from..=to).map(|i| format!("r{i}")).collect()
}

#[test]
fn chunked_answers_are_accepted_on_one_kept_alive_connection() {
    let c = Collector::start(200, true, None);
    let mut agent = Agent::new(&siem_http(&c.url("http", "127.0.0.1"), ""));
    append_lines(&agent.log("a.log"), 1, 20);
    agent.start_with_env(&[]);
    assert!(wait_until(20, || c.releases().len() >= 20), "first batch");
    append_lines(&agent.log("a.log"), 21, 40);
    assert!(wait_until(20, || c.releases().len() >= 40), "second batch");
    assert!(wait_until(10, || spool_events(&agent) == 0.0));
    assert_eq!(c.releases(), want(1, 40));
    let posts = c.posts();
    assert!(posts.len() >= 2, "{} POSTs", posts.len());
    assert!(
        posts.iter().all(|p| p.connection == 0),
        "the connection was not kept: {} connections for {} POSTs",
        c.connections.load(Ordering::SeqCst),
        posts.len()
    );
    assert_eq!(forward(&agent, "retried"), 0.0);
    assert_eq!(forward(&agent, "acked"), 40.0);
    assert_eq!(agent.signal("-TERM"), Some(0));
}

#[test]
fn a_refusal_is_counted_held_in_the_spool_and_backed_off() {
    let c = Collector::start(400, false, None);
    let mut agent = Agent::new(&siem_http(&c.url("http", "127.0.0.1"), ""));
    append_lines(&agent.log("a.log"), 1, 50);
    agent.start_with_env(&[]);
    assert!(wait_until(20, || forward(&agent, "refused") >= 50.0));
    // A window of 6 s from the first refusal: back-off from 250 ms doubling
    // allows about 6 attempts; a tight loop would make hundreds.
    std::thread::sleep(Duration::from_secs(6));
    let attempts = c.posts().len();
    eprintln!("refusals: {attempts} POSTs in ~6 s");
    assert!(
        (2..=9).contains(&attempts),
        "{attempts} POSTs in the first ~6 s of refusals"
    );
    let refused = forward(&agent, "refused");
    assert_eq!(refused % 50.0, 0.0, "each refusal counts its whole batch");
    assert!(refused >= 100.0, "refused {refused}");
    assert_eq!(spool_events(&agent), 50.0, "the spool lost refused events");
    assert_eq!(forward(&agent, "acked"), 0.0);
    assert_eq!(
        sample(
            &agent.metrics(),
            r#"relstat_forward_connected{sink="http"}"#
        ),
        Some(1.0),
        "a collector that answers is connected, refusals included"
    );
    // Once the collector takes them, the held events go, all of them.
    c.status.store(200, Ordering::SeqCst);
    assert!(wait_until(40, || spool_events(&agent) == 0.0));
    let got = c.releases();
    assert_eq!(got[got.len() - 50..], want(1, 50)[..]);
    assert_eq!(forward(&agent, "acked"), 50.0);
    assert_eq!(agent.signal("-TERM"), Some(0));
}

#[test]
fn retry_after_on_503_is_waited_then_the_batch_goes() {
    let c = Collector::start(503, false, None);
    let mut agent = Agent::new(&siem_http(&c.url("http", "127.0.0.1"), ""));
    append_lines(&agent.log("a.log"), 1, 10);
    agent.start_with_env(&[]);
    assert!(wait_until(20, || !c.posts().is_empty()));
    // Retry-After: 2; the back-off alone would retry within 250 ms.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(c.posts().len(), 1, "retried before Retry-After");
    assert_eq!(forward(&agent, "refused"), 0.0, "a 503 is no refusal");
    c.status.store(200, Ordering::SeqCst);
    assert!(wait_until(20, || spool_events(&agent) == 0.0));
    let got = c.releases();
    assert_eq!(
        got,
        [want(1, 10), want(1, 10)].concat(),
        "one 503, then delivered"
    );
    assert_eq!(forward(&agent, "acked"), 10.0);
    assert_eq!(agent.signal("-TERM"), Some(0));
}

#[test]
fn batches_are_cut_to_max_batch_bytes() {
    let c = Collector::start(200, false, None);
    let mut agent = Agent::new(&siem_http(
        &c.url("http", "127.0.0.1"),
        "max_batch_bytes = \"2KiB\"",
    ));
    append_lines(&agent.log("a.log"), 1, 60);
    agent.start_with_env(&[]);
    assert!(wait_until(20, || spool_events(&agent) == 0.0
        && c.releases().len() >= 60));
    assert_eq!(c.releases(), want(1, 60));
    let posts = c.posts();
    let sizes: Vec<usize> = posts.iter().map(|p| p.body.len()).collect();
    eprintln!(
        "max_batch_bytes 2KiB: {} POSTs, bodies {sizes:?}",
        posts.len()
    );
    assert!(sizes.iter().all(|&n| n <= 2048), "bodies {sizes:?}");
    // 60 records of a few hundred bytes each need many bodies of 2 KiB.
    let total: usize = sizes.iter().sum();
    assert!(posts.len() > total / 2048, "bodies {sizes:?}");
    assert_eq!(agent.signal("-TERM"), Some(0));
}

/// A CONNECT proxy on 127.0.0.1; returns its port and the targets tunnelled to.
fn connect_proxy() -> (u16, Arc<Mutex<Vec<String>>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen2 = seen.clone();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(conn) = conn else { return };
            let seen = seen2.clone();
            std::thread::spawn(move || {
                conn.set_read_timeout(Some(Duration::from_secs(20)))
                    .unwrap();
                let mut rd = BufReader::new(conn.try_clone().unwrap());
                let mut line = String::new();
                if rd.read_line(&mut line).is_err() {
                    return;
                }
                loop {
                    let mut h = String::new();
                    if rd.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
                        break;
                    }
                }
                let mut parts = line.split_whitespace();
                if parts.next() != Some("CONNECT") {
                    return;
                }
                let target = parts.next().unwrap_or_default().to_string();
                seen.lock().unwrap().push(target.clone());
                let Ok(up) = TcpStream::connect(&target) else {
                    return;
                };
                let mut down = conn;
                if down
                    .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    .is_err()
                {
                    return;
                }
                let (mut up_r, mut down_w) = (up.try_clone().unwrap(), down.try_clone().unwrap());
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut up_r, &mut down_w);
                });
                let mut up_w = up;
                let _ = up_w.write_all(rd.buffer());
                let _ = std::io::copy(&mut down, &mut up_w);
            });
        }
    });
    (port, seen)
}

#[test]
fn the_environment_proxy_carries_the_batches_and_no_proxy_bypasses_it() {
    let c = Collector::start(200, false, None);
    let (pport, seen) = connect_proxy();
    let proxy = format!("http://127.0.0.1:{pport}");
    let mut agent = Agent::new(&siem_http(&c.url("http", "127.0.0.1"), ""));
    append_lines(&agent.log("a.log"), 1, 10);
    agent.start_with_env(&[("HTTP_PROXY", &proxy)]);
    assert!(wait_until(20, || spool_events(&agent) == 0.0
        && c.releases().len() >= 10));
    assert!(
        seen.lock()
            .unwrap()
            .iter()
            .all(|t| *t == format!("127.0.0.1:{}", c.port)),
        "{:?}",
        seen.lock().unwrap()
    );
    assert!(!seen.lock().unwrap().is_empty(), "the proxy was not used");
    assert_eq!(agent.signal("-TERM"), Some(0));

    let tunnels = seen.lock().unwrap().len();
    let c2 = Collector::start(200, false, None);
    let mut agent = Agent::new(&siem_http(&c2.url("http", "127.0.0.1"), ""));
    append_lines(&agent.log("a.log"), 1, 10);
    agent.start_with_env(&[("HTTP_PROXY", &proxy), ("NO_PROXY", "localhost,127.0.0.1")]);
    assert!(wait_until(20, || spool_events(&agent) == 0.0
        && c2.releases().len() >= 10));
    assert_eq!(
        seen.lock().unwrap().len(),
        tunnels,
        "NO_PROXY went through the proxy"
    );
    assert_eq!(agent.signal("-TERM"), Some(0));

    // https: HTTPS_PROXY, the TLS session end to end through the tunnel.
    let certs = tempfile::tempdir().unwrap();
    write_certs(certs.path());
    let c3 = Collector::start(200, false, Some(tls_config(certs.path(), false)));
    let mut agent = Agent::new(&siem_http(
        &c3.url("https", "127.0.0.1"),
        &format!("ca_file = \"{}/ca.pem\"", certs.path().display()),
    ));
    append_lines(&agent.log("a.log"), 1, 10);
    agent.start_with_env(&[("HTTPS_PROXY", &proxy)]);
    assert!(wait_until(20, || spool_events(&agent) == 0.0
        && c3.releases().len() >= 10));
    assert!(
        seen.lock().unwrap()[tunnels..].contains(&format!("127.0.0.1:{}", c3.port)),
        "HTTPS_PROXY was not used: {:?}",
        seen.lock().unwrap()
    );
    assert_eq!(agent.signal("-TERM"), Some(0));
}

/// A TLS server config from `dir`'s server.pem/.key; with `mtls`, clients
/// must present a certificate from ca.pem.
fn tls_config(dir: &Path, mtls: bool) -> Arc<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs: Vec<_> = CertificateDer::pem_file_iter(dir.join("server.pem"))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(dir.join("server.key")).unwrap();
    let b = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap();
    let b = if mtls {
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(dir.join("ca.pem")).unwrap() {
            roots.add(c.unwrap()).unwrap();
        }
        let v =
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .unwrap();
        b.with_client_cert_verifier(v)
    } else {
        b.with_no_client_auth()
    };
    Arc::new(b.with_single_cert(certs, key).unwrap())
}

/// Replaces `dir`'s server.pem/.key with a certificate naming only
/// `collector.invalid` (a name no resolver knows), from its own CA in
/// collector-ca.pem.
fn collector_certificate(dir: &Path) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let leaf = CertificateParams::new(vec!["collector.invalid".to_string()]).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = leaf.signed_by(&key, &issuer).unwrap();
    std::fs::write(dir.join("collector-ca.pem"), ca_cert.pem()).unwrap();
    std::fs::write(dir.join("server.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("server.key"), key.serialize_pem()).unwrap();
}

#[test]
fn client_certificates_and_server_name_still_work_over_https() {
    let certs = tempfile::tempdir().unwrap();
    write_certs(certs.path());
    collector_certificate(certs.path());
    let d = certs.path().display();
    let c = Collector::start(200, false, Some(tls_config(certs.path(), true)));
    // server_name: the certificate names only collector.invalid, which does
    // not resolve; relstat connects to the URL's 127.0.0.1 and verifies
    // that name.
    let tls = format!(
        "ca_file = \"{d}/collector-ca.pem\"\nserver_name = \"collector.invalid\"\n\
         client_cert_file = \"{d}/client.pem\"\nclient_key_file = \"{d}/client.key\""
    );
    let mut agent = Agent::new(&siem_http(&c.url("https", "127.0.0.1"), &tls));
    append_lines(&agent.log("a.log"), 1, 10);
    agent.start_with_env(&[]);
    assert!(wait_until(20, || spool_events(&agent) == 0.0
        && c.releases().len() >= 10));
    assert_eq!(c.releases(), want(1, 10));
    assert_eq!(agent.signal("-TERM"), Some(0));

    // Without the client certificate the collector's TLS refuses us: nothing
    // arrives, nothing leaves the spool.
    let c2 = Collector::start(200, false, Some(tls_config(certs.path(), true)));
    let mut agent = Agent::new(&siem_http(
        &c2.url("https", "127.0.0.1"),
        &format!("ca_file = \"{d}/collector-ca.pem\"\nserver_name = \"collector.invalid\""),
    ));
    append_lines(&agent.log("a.log"), 1, 10);
    agent.start_with_env(&[]);
    assert!(wait_until(20, || spool_events(&agent) == 10.0));
    std::thread::sleep(Duration::from_secs(3));
    assert!(c2.posts().is_empty());
    assert_eq!(spool_events(&agent), 10.0);
    assert_eq!(forward(&agent, "acked"), 0.0);
    assert_eq!(agent.signal("-TERM"), Some(0));
}

#[test]
fn a_site_feeds_a_relay_webhook_with_signed_batches() {
    // The relay: a generic webhook taking the site's transition records.
    let mut relay = Agent::new(
        "[[sources]]\nname = \"site-a\"\ntype = \"webhook\"\npreset = \"generic\"\n\
         secret_file = \"{D}/secret\"\n\
         fields = { status = \"to\", time = \"event_time\" }\n",
    );
    let rd = relay.dir.path().display().to_string();
    std::fs::write(relay.dir.path().join("secret"), "relay-secret\n").unwrap();
    let cfg = std::fs::read_to_string(&relay.config)
        .unwrap()
        .replace("{D}", &rd);
    std::fs::write(&relay.config, cfg).unwrap();
    relay.start_with_env(&[]);

    let url = format!("http://127.0.0.1:{}/hooks/site-a", relay.port);
    let mut site = Agent::new(&siem_http(
        &url,
        &format!("hmac_secret_file = \"{rd}/secret\"\nmax_batch_bytes = \"4KiB\""),
    ));
    append_lines(&site.log("a.log"), 1, 30);
    site.start_with_env(&[]);
    let accepted = || {
        sample(
            &relay.metrics(),
            r#"relstat_events_total{result="accepted",source="site-a"}"#,
        )
        .unwrap_or(0.0)
    };
    assert!(
        wait_until(20, || accepted() >= 30.0),
        "the relay accepted {} of 30; the site refused {}",
        accepted(),
        forward(&site, "refused")
    );
    assert!(wait_until(10, || spool_events(&site) == 0.0));
    assert_eq!(forward(&site, "refused"), 0.0);
    assert_eq!(forward(&site, "acked"), 30.0);
    assert_eq!(site.signal("-TERM"), Some(0));
    assert_eq!(relay.signal("-TERM"), Some(0));
}
