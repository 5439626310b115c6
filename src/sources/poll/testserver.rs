//! A real HTTP/1.1 server on 127.0.0.1 for the pollers' tests: a thread per
//! connection, answers from a closure, every request recorded.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Req {
    pub path: String,
    pub headers: Vec<(String, String)>,
}

impl Req {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// An answer: a status, headers, and a body sent whole or in chunks
/// (`Transfer-Encoding: chunked`, a pause before each chunk).
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub chunks: Option<(Vec<Vec<u8>>, Duration)>,
}

impl Resp {
    pub fn json(status: u16, body: impl Into<Vec<u8>>) -> Resp {
        Resp {
            status,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: body.into(),
            chunks: None,
        }
    }
    pub fn header(mut self, k: &str, v: &str) -> Resp {
        self.headers.push((k.into(), v.into()));
        self
    }
}

pub type Handler = Arc<dyn Fn(&Req) -> Resp + Send + Sync>;

pub struct Server {
    pub port: u16,
    pub log: Arc<Mutex<Vec<Req>>>,
}

impl Server {
    pub fn start(handler: Handler) -> Server {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        let log: Arc<Mutex<Vec<Req>>> = Arc::default();
        let log2 = log.clone();
        std::thread::spawn(move || {
            for conn in l.incoming() {
                let Ok(mut conn) = conn else { continue };
                let (h, log) = (handler.clone(), log2.clone());
                std::thread::spawn(move || {
                    let mut r = BufReader::new(conn.try_clone().expect("clone"));
                    let mut line = String::new();
                    if r.read_line(&mut line).is_err() {
                        return;
                    }
                    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
                    let mut headers = Vec::new();
                    loop {
                        let mut l = String::new();
                        if r.read_line(&mut l).unwrap_or(0) == 0 || l.trim().is_empty() {
                            break;
                        }
                        if let Some((k, v)) = l.trim_end().split_once(':') {
                            headers.push((k.trim().to_string(), v.trim().to_string()));
                        }
                    }
                    let req = Req { path, headers };
                    log.lock().unwrap().push(req.clone());
                    let resp = h(&req);
                    let mut head = format!("HTTP/1.1 {} X\r\nConnection: close\r\n", resp.status);
                    for (k, v) in &resp.headers {
                        head.push_str(&format!("{k}: {v}\r\n"));
                    }
                    match resp.chunks {
                        None => {
                            head.push_str(&format!("Content-Length: {}\r\n\r\n", resp.body.len()));
                            let _ = conn.write_all(head.as_bytes());
                            let _ = conn.write_all(&resp.body);
                        }
                        Some((chunks, pause)) => {
                            head.push_str("Transfer-Encoding: chunked\r\n\r\n");
                            let _ = conn.write_all(head.as_bytes());
                            for c in chunks {
                                std::thread::sleep(pause);
                                let _ = conn.write_all(format!("{:x}\r\n", c.len()).as_bytes());
                                let _ = conn.write_all(&c);
                                let _ = conn.write_all(b"\r\n");
                                let _ = conn.flush();
                            }
                            let _ = conn.write_all(b"0\r\n\r\n");
                        }
                    }
                    let _ = conn.flush();
                });
            }
        });
        Server { port, log }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn paths(&self) -> Vec<String> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .map(|r| r.path.clone())
            .collect()
    }
}

/// A fixture from tests/fixtures (YAML ones as JSON).
pub fn fixture(path: &str) -> serde_json::Value {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(path);
    let text = std::fs::read_to_string(&p).expect("fixture");
    let text = text.trim_start_matches('\u{feff}');
    if path.ends_with(".yaml") {
        serde_norway::from_str(text).expect("yaml fixture")
    } else {
        serde_json::from_str(text).expect("json fixture")
    }
}
