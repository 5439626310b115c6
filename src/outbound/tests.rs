use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::*;

/// An HTTP/1.1 server on 127.0.0.1 that keeps connections alive and
/// answers every request with `answer` (raw bytes after the status line's
/// head is built by the test); counts connections and requests.
struct Server {
    port: u16,
    connections: Arc<AtomicUsize>,
    requests: Arc<Mutex<Vec<String>>>,
}

fn serve(answer: Vec<u8>) -> Server {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let connections = Arc::new(AtomicUsize::new(0));
    let requests: Arc<Mutex<Vec<String>>> = Arc::default();
    let (c, r) = (connections.clone(), requests.clone());
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(conn) = conn else { return };
            c.fetch_add(1, Ordering::SeqCst);
            let (answer, r) = (answer.clone(), r.clone());
            std::thread::spawn(move || {
                conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let mut w = conn.try_clone().unwrap();
                let mut rd = BufReader::new(conn);
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
                    r.lock().unwrap().push(line.trim().to_string());
                    if w.write_all(&answer).is_err() {
                        return;
                    }
                }
            });
        }
    });
    Server {
        port,
        connections,
        requests,
    }
}

/// A chunked 200 answer carrying `parts`.
fn chunked(parts: &[&[u8]]) -> Vec<u8> {
    let mut out = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for p in parts {
        out.extend_from_slice(format!("{:x}\r\n", p.len()).as_bytes());
        out.extend_from_slice(p);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

fn client(proxies: Proxies) -> Client {
    let opts = Options {
        timeout: Duration::from_secs(10),
        ..Options::default()
    };
    Client::with_proxies(&opts, proxies).unwrap()
}

fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let m: std::collections::HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |k| m.get(k).cloned()
}

#[test]
fn no_proxy_matches_as_curl_does() {
    let np = NoProxy::parse(
        " .internal.example, Build.Corp ,10.0.0.0/8,192.168.1.7,[::1]:8443,relay:9731",
    );
    for (host, port, want) in [
        ("internal.example", 443, true),
        ("a.b.internal.example", 80, true),
        ("notinternal.example", 443, false),
        ("build.corp", 80, true),
        ("ci.BUILD.corp", 80, true),
        ("corp", 80, false),
        ("10.20.30.40", 80, true),
        ("11.0.0.1", 80, false),
        ("192.168.1.7", 80, true),
        ("192.168.1.8", 80, false),
        ("[::1]", 8443, true),
        ("::1", 443, false),
        ("relay", 9731, true),
        ("relay", 443, false),
        ("example.com", 443, false),
    ] {
        assert_eq!(np.bypasses(host, port), want, "{host}:{port}");
    }
    assert!(NoProxy::parse("*").bypasses("anything.example", 1));
    assert!(NoProxy::parse("*.example.com").bypasses("example.com", 443));
    assert!(!NoProxy::parse("").bypasses("example.com", 443));
    assert!(NoProxy::parse("::1/128").bypasses("[::1]", 80));
}

#[test]
fn proxies_are_chosen_by_scheme_and_no_proxy() {
    let p = Proxies::from_vars(vars(&[
        ("HTTPS_PROXY", "http://secure-proxy:3128"),
        ("HTTP_PROXY", "http://plain-proxy:3128"),
        ("NO_PROXY", "direct.example"),
    ]))
    .unwrap();
    let host = |url: &str| p.for_url(url).map(|p| p.host().to_string());
    assert_eq!(
        host("https://siem.example/x").as_deref(),
        Some("secure-proxy")
    );
    assert_eq!(
        host("http://siem.example/x").as_deref(),
        Some("plain-proxy")
    );
    assert_eq!(host("https://a.direct.example/x"), None);
    // Lower case first; ALL_PROXY when the scheme's own is unset.
    let p = Proxies::from_vars(vars(&[
        ("https_proxy", "http://lower:1"),
        ("HTTPS_PROXY", "http://upper:1"),
        ("ALL_PROXY", "http://all:1"),
    ]))
    .unwrap();
    let host = |url: &str| p.for_url(url).map(|p| p.host().to_string());
    assert_eq!(host("https://x/").as_deref(), Some("lower"));
    assert_eq!(host("http://x/").as_deref(), Some("all"));
    assert!(
        Proxies::from_vars(vars(&[]))
            .unwrap()
            .for_url("https://x/")
            .is_none()
    );
}

#[test]
fn a_proxy_that_is_not_a_url_is_a_clear_error() {
    let e = Proxies::from_vars(vars(&[("HTTPS_PROXY", "ftp://proxy:21")])).unwrap_err();
    assert!(
        e.to_string().contains("HTTPS_PROXY=\"ftp://proxy:21\""),
        "{e}"
    );
}

#[test]
fn chunked_answers_are_read_and_the_connection_is_kept() {
    let s = serve(chunked(&[b"hello ", b"chunked ", b"world"]));
    let c = client(Proxies::default());
    for _ in 0..3 {
        let mut resp = c
            .post(&format!("http://127.0.0.1:{}/in", s.port))
            .send(&b"{}\n"[..])
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        assert_eq!(read_body(&mut resp, 1024).unwrap(), b"hello chunked world");
    }
    assert_eq!(s.requests.lock().unwrap().len(), 3);
    assert_eq!(
        s.connections.load(Ordering::SeqCst),
        1,
        "one kept-alive connection"
    );
}

#[test]
fn a_body_over_the_cap_is_refused_and_a_head_is_kept() {
    let big = vec![b'a'; 10_000];
    let s = serve(chunked(&[&big, &big]));
    let c = client(Proxies::default());
    let url = format!("http://127.0.0.1:{}/", s.port);
    let mut resp = c.get(&url).call().unwrap();
    assert!(matches!(
        read_body(&mut resp, 15_000),
        Err(OutboundError::TooLarge { cap: 15_000 })
    ));
    let mut resp = c.get(&url).call().unwrap();
    assert_eq!(body_head(&mut resp, 512).len(), 512);
}

/// A CONNECT proxy on 127.0.0.1 recording the targets it tunnelled to.
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
                conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let mut rd = BufReader::new(conn.try_clone().unwrap());
                let mut line = String::new();
                rd.read_line(&mut line).unwrap();
                loop {
                    let mut h = String::new();
                    if rd.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
                        break;
                    }
                }
                let mut parts = line.split_whitespace();
                assert_eq!(parts.next(), Some("CONNECT"));
                let target = parts.next().unwrap().to_string();
                seen.lock().unwrap().push(target.clone());
                let up = TcpStream::connect(&target).unwrap();
                let mut down = conn;
                down.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    .unwrap();
                let (mut up_r, mut down_w) = (up.try_clone().unwrap(), down.try_clone().unwrap());
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut up_r, &mut down_w);
                });
                let mut up_w = up;
                // What the reader buffered past the head, then the rest.
                let _ = up_w.write_all(rd.buffer());
                let _ = std::io::copy(&mut down, &mut up_w);
            });
        }
    });
    (port, seen)
}

#[test]
fn the_environment_proxy_is_used_and_no_proxy_bypasses_it() {
    let s = serve(b"HTTP/1.1 204 No Content\r\n\r\n".to_vec());
    let (pport, seen) = connect_proxy();
    let proxy = format!("http://127.0.0.1:{pport}");
    let url = format!("http://127.0.0.1:{}/via", s.port);
    let c = client(Proxies::from_vars(vars(&[("HTTP_PROXY", &proxy)])).unwrap());
    let resp = c.post(&url).send(&b"x"[..]).unwrap();
    assert_eq!(resp.status().as_u16(), 204);
    assert_eq!(*seen.lock().unwrap(), vec![format!("127.0.0.1:{}", s.port)]);
    let c = client(
        Proxies::from_vars(vars(&[
            ("HTTP_PROXY", &proxy),
            ("NO_PROXY", "localhost,127.0.0.1"),
        ]))
        .unwrap(),
    );
    let resp = c.post(&url).send(&b"x"[..]).unwrap();
    assert_eq!(resp.status().as_u16(), 204);
    assert_eq!(
        seen.lock().unwrap().len(),
        1,
        "NO_PROXY went through the proxy"
    );
    assert_eq!(s.requests.lock().unwrap().len(), 2);
}
