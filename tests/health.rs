//! The agent stays answerable under abuse and honest about its health: probes
//! and scrapes get through a slowloris attack from hundreds of addresses, and
//! a dead core (store on a full disk) shows in `/readyz` and the exit status.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::util::*;

/// Attackers: one connection from each of this many loopback addresses,
/// more than the listener's 512 connections.
const ATTACKERS: usize = 600;
/// How long the probes run while the attack holds.
const ATTACK_WINDOW: Duration = Duration::from_secs(20);
/// The prober's own address.
const PROBER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 200);
/// A probe that has no answer within this counts as failed.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// The i-th attacker's address: 127.0.1.1, 127.0.1.2, ... (never the prober's).
fn attacker_addr(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 1 + (i / 250) as u8, 1 + (i % 250) as u8)
}

async fn connect_from(src: Ipv4Addr, port: u16) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((src, 0)))?;
    let connect = socket.connect(SocketAddr::from(([127, 0, 0, 1], port)));
    match tokio::time::timeout(Duration::from_secs(2), connect).await {
        Ok(r) => r,
        Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
    }
}

/// A slowloris client until `until`: sends a request line, then one header
/// line a second, never the blank line that ends the head; reconnects when
/// the agent closes the connection. Returns how many connections it opened.
async fn trickle(src: Ipv4Addr, port: u16, until: Instant) -> usize {
    let mut opened = 0;
    while Instant::now() < until {
        let Ok(mut s) = connect_from(src, port).await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        opened += 1;
        let mut line = 0;
        let mut buf = [0u8; 256];
        let mut next = b"GET /api/v1/releases HTTP/1.1\r\nHost: relstat\r\n".to_vec();
        while Instant::now() < until {
            if s.write_all(&next).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            // Closed by the agent (EOF or reset)? Reconnect.
            match s.try_read(&mut buf) {
                Ok(_) => break,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => break,
            }
            line += 1;
            next = format!("X-Slow-{line}: a\r\n").into_bytes();
        }
    }
    opened
}

/// One GET from the prober's address on a fresh connection: the status, or
/// `None` when nothing answered within [`PROBE_TIMEOUT`].
async fn probe(port: u16, path: &str) -> Option<u16> {
    let exchange = async {
        let mut s = connect_from(PROBER, port).await.ok()?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: relstat\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.ok()?;
        let mut resp = Vec::new();
        s.read_to_end(&mut resp).await.ok()?;
        let head = String::from_utf8_lossy(&resp[..resp.len().min(64)]).into_owned();
        head.split_whitespace().nth(1)?.parse().ok()
    };
    tokio::time::timeout(PROBE_TIMEOUT, exchange)
        .await
        .ok()
        .flatten()
}

/// Regression: 600 connections trickling their headers (one line a second)
/// from 600 addresses held all 512 slots for hyper's 30 s header timeout,
/// and the agent answered 1 of 11 probes over 40 s. Now the probes and
/// scrapes get through, and one greedy address is held to its share.
#[test]
fn slowloris_from_600_addresses_leaves_probes_and_scrapes_answering() {
    let mut agent = Agent::new("");
    agent.start();
    let port = agent.port;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (healthz, others, latency, opened, greedy_held) = rt.block_on(async move {
        // One greedy address opens 100 connections (the default per-peer
        // limit is 64) and holds them silently.
        let greedy = Ipv4Addr::new(127, 0, 0, 3);
        let mut held = Vec::new();
        for _ in 0..100 {
            if let Ok(s) = connect_from(greedy, port).await {
                held.push(s);
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let greedy_held = held.len();

        let until = Instant::now() + Duration::from_secs(3) + ATTACK_WINDOW;
        let attackers: Vec<_> = (0..ATTACKERS)
            .map(|i| tokio::spawn(trickle(attacker_addr(i), port, until)))
            .collect();
        // Let the attackers connect and fill the slots.
        tokio::time::sleep(Duration::from_secs(3)).await;

        let (mut healthz, mut others) = ((0usize, 0usize), (0usize, 0usize));
        let mut latency = Duration::ZERO;
        let mut n = 0;
        while Instant::now() < until {
            n += 1;
            let path = match n % 5 {
                0 => "/metrics",
                1 => "/readyz",
                _ => "/healthz",
            };
            let start = Instant::now();
            let ok = probe(port, path).await == Some(200);
            latency = latency.max(start.elapsed());
            let tally = if path == "/healthz" {
                &mut healthz
            } else {
                &mut others
            };
            tally.0 += usize::from(ok);
            tally.1 += 1;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let mut opened = 0;
        for a in attackers {
            opened += a.await.unwrap();
        }
        drop(held);
        (healthz, others, latency, opened, greedy_held)
    });
    let metrics = agent.metrics();
    let refused = |reason: &str| {
        sample(
            &metrics,
            &format!(r#"relstat_http_refused_total{{reason="{reason}"}}"#),
        )
        .unwrap_or(-1.0)
    };
    eprintln!(
        "healthz {}/{}, readyz+metrics {}/{}, slowest probe {latency:?}; attackers opened \
         {opened} connections; greedy address held {greedy_held}; refused per_peer_limit {}, \
         evicted {}, full {}",
        healthz.0,
        healthz.1,
        others.0,
        others.1,
        refused("per_peer_limit"),
        refused("evicted"),
        refused("full"),
    );
    assert!(healthz.1 >= 20, "too few probes ran: {healthz:?}");
    assert!(
        healthz.0 * 100 >= healthz.1 * 95,
        "/healthz answered {} of {} probes under the attack",
        healthz.0,
        healthz.1
    );
    assert!(
        others.0 * 100 >= others.1 * 95,
        "/readyz and /metrics answered {} of {} probes under the attack",
        others.0,
        others.1
    );
    // The attack did fill the listener: slots were taken from attackers.
    assert!(
        refused("evicted") > 0.0,
        "the attack never filled the slots"
    );
    assert!(
        refused("per_peer_limit") >= 36.0,
        "the greedy address's connections over 64 were not refused and counted"
    );
}
