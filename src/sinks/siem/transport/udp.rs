//! `udp`: one message per datagram (RFC 5426), best effort: a message counts
//! as delivered once sent. A message longer than [`MAX_DATAGRAM`] is
//! truncated (RFC 5426 section 3.2 lets the sender truncate; we cut at a
//! UTF-8 character boundary) and counted.

use std::net::UdpSocket;

use super::{Msg, Transport, TransportError, resolve};

/// The largest payload of one IPv4 UDP datagram (65,535 - 8 - 20).
pub const MAX_DATAGRAM: usize = 65_507;

pub struct UdpTransport {
    sock: UdpSocket,
    max: usize,
    last: Option<u64>,
    truncated: u64,
}

impl UdpTransport {
    pub fn connect(address: &str) -> Result<Self, TransportError> {
        Self::with_max(address, MAX_DATAGRAM)
    }

    pub fn with_max(address: &str, max: usize) -> Result<Self, TransportError> {
        let addr = resolve(address)?;
        let bind = if addr.is_ipv4() {
            "0.0.0.0:0"
        } else {
            "[::]:0"
        };
        let sock = UdpSocket::bind(bind).map_err(TransportError::io("udp bind"))?;
        sock.connect(addr)
            .map_err(TransportError::io("udp connect"))?;
        Ok(Self {
            sock,
            max,
            last: None,
            truncated: 0,
        })
    }
}

/// The longest prefix of `b` of at most `max` bytes that ends on a UTF-8
/// character boundary (bytes that are not UTF-8 are cut at `max`).
pub fn truncate(b: &[u8], max: usize) -> &[u8] {
    if b.len() <= max {
        return b;
    }
    let mut end = max;
    // Back off continuation bytes (10xxxxxx) so no character is split.
    while end > 0 && end > max.saturating_sub(3) && (b[end] & 0xC0) == 0x80 {
        end -= 1;
    }
    &b[..end]
}

impl Transport for UdpTransport {
    fn send(&mut self, msgs: &[Msg<'_>]) -> Result<(), TransportError> {
        for m in msgs {
            let b = truncate(m.bytes, self.max);
            if b.len() < m.bytes.len() {
                self.truncated += 1;
            }
            match self.sock.send(b) {
                Ok(_) => {}
                // ICMP port unreachable from an earlier datagram: nobody
                // listens right now; best effort means we go on.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
                Err(e) => return Err(TransportError::io("udp send")(e)),
            }
            self.last = Some(m.seq);
        }
        Ok(())
    }

    fn delivered(&mut self) -> Result<Option<u64>, TransportError> {
        Ok(self.last)
    }

    fn known_delivered(&self) -> Option<u64> {
        self.last
    }

    fn pending(&self) -> usize {
        0
    }

    fn take_truncated(&mut self) -> u64 {
        std::mem::take(&mut self.truncated)
    }

    fn close(&mut self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncates_on_char_boundary() {
        let s = "aü".as_bytes(); // 61 c3 bc
        assert_eq!(truncate(s, 3), s);
        assert_eq!(truncate(s, 2), b"a");
        assert_eq!(truncate(b"abcdef", 4), b"abcd");
    }

    #[test]
    fn datagrams_arrive_and_long_ones_are_cut() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let addr = rx.local_addr().unwrap().to_string();
        let mut t = UdpTransport::with_max(&addr, 10).unwrap();
        t.send(&[
            Msg {
                seq: 1,
                bytes: b"short",
            },
            Msg {
                seq: 2,
                bytes: b"0123456789abc",
            },
        ])
        .unwrap();
        let mut buf = [0u8; 100];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"short");
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"0123456789");
        assert_eq!(t.delivered().unwrap(), Some(2));
        assert_eq!(t.take_truncated(), 1);
    }
}
