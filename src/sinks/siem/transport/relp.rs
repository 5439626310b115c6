//! `relp`: the Reliable Event Logging Protocol of rsyslog/librelp, plain or
//! over TLS (`tls = true`).
//!
//! Frames are `TXNR SP COMMAND SP DATALEN [SP DATA] LF`. A session opens
//! with `open` offering `relp_version=0` and `commands=syslog` and needs
//! `rsp 200` back; each message goes in a `syslog` frame with the next
//! transaction number and is delivered when the server answers `rsp` with
//! `200` for that number. Up to [`WINDOW`] frames are in flight (librelp's
//! default window), so after a broken connection at most that many
//! delivered-but-unacknowledged messages are resent: RELP's duplicates stay
//! within its window. `close` ends the session; the server may announce its
//! own end with `serverclose` (transaction number 0).

use std::collections::VecDeque;
use std::time::Duration;

use super::stream::Stream;
use super::{Msg, Transport, TransportError};

/// Frames sent and not yet answered, at most.
pub const WINDOW: usize = 128;
/// RELP transaction numbers run from 1 to this, then wrap to 1.
const MAX_TXNR: u64 = 999_999_999;

pub struct RelpTransport {
    stream: Stream,
    next_txnr: u64,
    /// (txnr, seq) of `syslog` frames awaiting their `rsp`, in order.
    inflight: VecDeque<(u64, u64)>,
    acked: Option<u64>,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
}

/// One parsed frame.
#[derive(Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    pub txnr: u64,
    pub command: &'a str,
    pub data: &'a [u8],
}

/// Parses one frame at the start of `b`: the frame and its length, `None`
/// when more bytes are needed, an error when `b` is not RELP.
pub fn parse_frame(b: &[u8]) -> Result<Option<(Frame<'_>, usize)>, TransportError> {
    let bad = |what: &str| TransportError::Relp(format!("malformed frame from the server: {what}"));
    let Some(sp1) = b.iter().position(|&c| c == b' ') else {
        return if b.len() > 10 {
            Err(bad("txnr"))
        } else {
            Ok(None)
        };
    };
    let txnr: u64 = std::str::from_utf8(&b[..sp1])
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("txnr"))?;
    let rest = &b[sp1 + 1..];
    let Some(sp2) = rest.iter().position(|&c| c == b' ') else {
        return if rest.len() > 32 {
            Err(bad("command"))
        } else {
            Ok(None)
        };
    };
    let command = std::str::from_utf8(&rest[..sp2]).map_err(|_| bad("command"))?;
    let rest = &rest[sp2 + 1..];
    let Some(end) = rest.iter().position(|&c| c == b' ' || c == b'\n') else {
        return if rest.len() > 9 {
            Err(bad("datalen"))
        } else {
            Ok(None)
        };
    };
    let len: usize = std::str::from_utf8(&rest[..end])
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("datalen"))?;
    let head = sp1 + 1 + sp2 + 1 + end;
    if len == 0 {
        if b.len() <= head {
            return Ok(None);
        }
        if b[head] != b'\n' {
            return Err(bad("trailer"));
        }
        return Ok(Some((
            Frame {
                txnr,
                command,
                data: &[],
            },
            head + 1,
        )));
    }
    let total = head + 1 + len + 1;
    if b.len() < total {
        return Ok(None);
    }
    if b[head] != b' ' || b[total - 1] != b'\n' {
        return Err(bad("trailer"));
    }
    Ok(Some((
        Frame {
            txnr,
            command,
            data: &b[head + 1..head + 1 + len],
        },
        total,
    )))
}

fn write_frame(txnr: u64, command: &str, data: &[u8], out: &mut Vec<u8>) {
    use std::io::Write;
    let _ = write!(out, "{txnr} {command} {}", data.len());
    if !data.is_empty() {
        out.push(b' ');
        out.extend_from_slice(data);
    }
    out.push(b'\n');
}

impl RelpTransport {
    /// Opens a RELP session on `stream`.
    pub fn open(mut stream: Stream) -> Result<Self, TransportError> {
        let offer = format!(
            "relp_version=0\nrelp_software=relstat,{},https://github.com/relstat\ncommands=syslog",
            env!("CARGO_PKG_VERSION")
        );
        let mut w = Vec::new();
        write_frame(1, "open", offer.as_bytes(), &mut w);
        stream.write_all(&w)?;
        let mut t = Self {
            stream,
            next_txnr: 2,
            inflight: VecDeque::new(),
            acked: None,
            rbuf: Vec::new(),
            wbuf: Vec::with_capacity(256 * 1024),
        };
        let (txnr, data) = t.read_rsp()?;
        if txnr != 1 || !data.starts_with(b"200") {
            return Err(TransportError::Relp(format!(
                "the server refused the session: {}",
                String::from_utf8_lossy(&data)
            )));
        }
        let offers = String::from_utf8_lossy(&data);
        if !offers.lines().any(|l| {
            l.strip_prefix("commands=")
                .is_some_and(|c| c.split(',').any(|c| c == "syslog"))
        }) {
            return Err(TransportError::Relp(
                "the server does not accept the syslog command".into(),
            ));
        }
        Ok(t)
    }

    /// Blocks for the next `rsp` frame: (txnr, data).
    fn read_rsp(&mut self) -> Result<(u64, Vec<u8>), TransportError> {
        loop {
            if let Some(r) = self.take_frame()? {
                return Ok(r);
            }
            self.stream.read_blocking(&mut self.rbuf)?;
        }
    }

    /// Takes one complete `rsp` frame from the read buffer, if there is one.
    fn take_frame(&mut self) -> Result<Option<(u64, Vec<u8>)>, TransportError> {
        let Some((frame, used)) = parse_frame(&self.rbuf)? else {
            return Ok(None);
        };
        let out = match frame.command {
            "rsp" => Some((frame.txnr, frame.data.to_vec())),
            "serverclose" => {
                return Err(TransportError::Relp("the server closed the session".into()));
            }
            other => {
                return Err(TransportError::Relp(format!(
                    "unexpected command {other:?} from the server"
                )));
            }
        };
        self.rbuf.drain(..used);
        Ok(out)
    }

    fn on_rsp(&mut self, txnr: u64, data: &[u8]) -> Result<(), TransportError> {
        match self.inflight.front() {
            Some(&(t, seq)) if t == txnr => {
                if !data.starts_with(b"200") {
                    return Err(TransportError::Relp(format!(
                        "the server refused message {txnr}: {}",
                        String::from_utf8_lossy(data)
                    )));
                }
                self.inflight.pop_front();
                self.acked = Some(seq);
                Ok(())
            }
            _ => Err(TransportError::Relp(format!(
                "answer for transaction {txnr}, which is not the oldest in flight"
            ))),
        }
    }

    fn process_buffered(&mut self) -> Result<(), TransportError> {
        while let Some((txnr, data)) = self.take_frame()? {
            self.on_rsp(txnr, &data)?;
        }
        Ok(())
    }
}

impl Transport for RelpTransport {
    fn send(&mut self, msgs: &[Msg<'_>]) -> Result<(), TransportError> {
        let mut i = 0;
        while i < msgs.len() {
            // Fill the window, write once, then wait for room.
            self.wbuf.clear();
            while i < msgs.len() && self.inflight.len() < WINDOW {
                let txnr = self.next_txnr;
                self.next_txnr = if txnr >= MAX_TXNR { 1 } else { txnr + 1 };
                write_frame(txnr, "syslog", msgs[i].bytes, &mut self.wbuf);
                self.inflight.push_back((txnr, msgs[i].seq));
                i += 1;
            }
            if !self.wbuf.is_empty() {
                self.stream.write_all(&self.wbuf)?;
            }
            self.stream.read_available(&mut self.rbuf)?;
            self.process_buffered()?;
            while self.inflight.len() >= WINDOW {
                self.stream.read_blocking(&mut self.rbuf)?;
                self.process_buffered()?;
            }
        }
        Ok(())
    }

    fn delivered(&mut self) -> Result<Option<u64>, TransportError> {
        self.stream.read_available(&mut self.rbuf)?;
        self.process_buffered()?;
        Ok(self.acked)
    }

    fn known_delivered(&self) -> Option<u64> {
        self.acked
    }

    fn pending(&self) -> usize {
        self.inflight.len()
    }

    fn drain(&mut self, max: Duration) -> Result<Option<u64>, TransportError> {
        let deadline = std::time::Instant::now() + max;
        while !self.inflight.is_empty() && std::time::Instant::now() < deadline {
            self.delivered()?;
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(self.acked)
    }

    fn close(&mut self) {
        let mut w = Vec::new();
        let txnr = self.next_txnr;
        write_frame(txnr, "close", &[], &mut w);
        if self.stream.write_all(&w).is_ok() {
            // The answer is a courtesy; don't wait on a dead server.
            let _ = self.read_rsp();
        }
        self.stream.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_parse() {
        let b = b"1 rsp 6 200 OK\n0 serverclose 0\n2 rsp";
        let (f, n) = parse_frame(b).unwrap().unwrap();
        assert_eq!((f.txnr, f.command, f.data), (1, "rsp", &b"200 OK"[..]));
        let (f, m) = parse_frame(&b[n..]).unwrap().unwrap();
        assert_eq!((f.txnr, f.command, f.data.len()), (0, "serverclose", 0));
        assert!(parse_frame(&b[n + m..]).unwrap().is_none());
        assert!(parse_frame(b"x rsp 0\n").is_err());
        assert!(parse_frame(b"1 rsp 2 OKX").is_err());
    }

    #[test]
    fn frames_write() {
        let mut out = Vec::new();
        write_frame(7, "syslog", "zü\n".as_bytes(), &mut out);
        write_frame(8, "close", b"", &mut out);
        assert_eq!(out, "7 syslog 4 zü\n\n8 close 0\n".as_bytes());
    }
}
