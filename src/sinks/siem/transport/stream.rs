//! Syslog over a byte stream: `tcp` (RFC 6587) and `tls` (RFC 5425), both
//! with octet-counted framing (`LEN SP MSG`), and the connection type RELP
//! runs on too.
//!
//! Neither has an acknowledgement, and a successful write is not a delivery:
//! the bytes may sit in our send queue or the receiver's, and with TLS 1.3 a
//! server may refuse our (missing) client certificate only after our first
//! writes succeeded. So a message counts as delivered once (1) our socket's
//! send queue has drained past it (the receiver's kernel acknowledged it,
//! Linux `SIOCOUTQ`) and (2) the connection then stayed up, with nothing
//! read from it but silence, for [`GRACE`]. What is not delivered when the
//! connection drops is resent on the next one: a receiver crash gives
//! duplicates (the SIEM dedupes on event_id), never loss.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use rustls::{ClientConnection, StreamOwned};

use super::{Msg, Transport, TransportError};

/// How long a connection must survive after bytes reached the receiver's
/// kernel before they count as delivered.
pub const GRACE: Duration = Duration::from_millis(1000);

/// A TCP socket that counts the bytes written to it (TLS records included),
/// to tell from the send queue's length which messages left it.
pub struct Counted {
    pub sock: TcpStream,
    written: u64,
}

impl Counted {
    pub fn new(sock: TcpStream) -> Self {
        Self { sock, written: 0 }
    }
}

impl Read for Counted {
    fn read(&mut self, b: &mut [u8]) -> std::io::Result<usize> {
        self.sock.read(b)
    }
}

impl Write for Counted {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        let n = self.sock.write(b)?;
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.sock.flush()
    }
}

/// A TCP connection, plain or TLS.
pub enum Stream {
    Plain(Counted),
    Tls(Box<StreamOwned<ClientConnection, Counted>>),
}

impl Stream {
    pub fn plain(sock: TcpStream) -> Self {
        Stream::Plain(Counted::new(sock))
    }

    fn counted(&self) -> &Counted {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(t) => &t.sock,
        }
    }

    fn tcp(&self) -> &TcpStream {
        &self.counted().sock
    }

    /// Bytes the peer's kernel has acknowledged (written minus still queued).
    pub fn acked_bytes(&self) -> u64 {
        self.counted().written - self.unacked() as u64
    }

    pub fn write_all(&mut self, b: &[u8]) -> Result<(), TransportError> {
        let r = match self {
            Stream::Plain(s) => s.write_all(b).and_then(|_| s.flush()),
            Stream::Tls(t) => t.write_all(b).and_then(|_| t.flush()),
        };
        r.map_err(TransportError::io("write"))
    }

    /// Bytes in our socket's send queue not yet acknowledged by the peer.
    pub fn unacked(&self) -> usize {
        let mut n: libc::c_int = 0;
        // SAFETY: TIOCOUTQ (SIOCOUTQ) writes one int through the pointer.
        let r = unsafe { libc::ioctl(self.tcp().as_raw_fd(), libc::TIOCOUTQ, &mut n) };
        if r == 0 { n.max(0) as usize } else { 0 }
    }

    /// Reads whatever is available without blocking into `out`. An end of
    /// stream, a TLS alert or a socket error is an error.
    pub fn read_available(&mut self, out: &mut Vec<u8>) -> Result<(), TransportError> {
        self.tcp()
            .set_nonblocking(true)
            .map_err(TransportError::io("read"))?;
        let r = self.read_inner(out, false);
        self.tcp()
            .set_nonblocking(false)
            .map_err(TransportError::io("read"))?;
        r
    }

    /// Blocks until at least one byte arrives (or the socket's read timeout).
    pub fn read_blocking(&mut self, out: &mut Vec<u8>) -> Result<(), TransportError> {
        self.read_inner(out, true)
    }

    fn read_inner(&mut self, out: &mut Vec<u8>, block: bool) -> Result<(), TransportError> {
        let mut buf = [0u8; 16 * 1024];
        let start = out.len();
        loop {
            let r = match self {
                Stream::Plain(s) => s.read(&mut buf),
                Stream::Tls(t) => t.read(&mut buf),
            };
            match r {
                Ok(0) => return Err(TransportError::Closed),
                Ok(n) => {
                    out.extend_from_slice(&buf[..n]);
                    if block {
                        return Ok(());
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && !block => return Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    if out.len() > start {
                        return Ok(());
                    }
                    // rustls reports a received alert as InvalidData wrapping its error.
                    return Err(TransportError::io("read")(e));
                }
            }
        }
    }

    /// Closes politely: TLS close_notify, then FIN.
    pub fn close(&mut self) {
        if let Stream::Tls(t) = self {
            t.conn.send_close_notify();
            let _ = t.conn.complete_io(&mut t.sock);
        }
        let _ = self.tcp().shutdown(std::net::Shutdown::Both);
    }
}

/// `tcp` and `tls`: octet-counted syslog frames on a [`Stream`].
pub struct StreamTransport {
    stream: Stream,
    frame: Vec<u8>,
    /// Highest seq written, and how many messages were written in all.
    written: Option<(u64, u64)>,
    /// (seq, messages up to it, socket bytes written through it), not yet
    /// seen acknowledged by the peer's kernel.
    queued: VecDeque<(u64, u64, u64)>,
    /// (seq, messages up to it, when the peer's kernel had it all).
    drained: VecDeque<(u64, u64, Instant)>,
    delivered: Option<(u64, u64)>,
    scratch: Vec<u8>,
}

impl StreamTransport {
    pub fn new(stream: Stream) -> Self {
        Self {
            stream,
            frame: Vec::with_capacity(256 * 1024),
            written: None,
            queued: VecDeque::new(),
            drained: VecDeque::new(),
            delivered: None,
            scratch: Vec::new(),
        }
    }
}

/// Appends `LEN SP MSG` (RFC 6587 section 3.4.1, RFC 5425 section 4.3).
pub fn frame_octet_counted(msg: &[u8], out: &mut Vec<u8>) {
    crate::sinks::siem::format::write_u64(msg.len() as u64, out);
    out.push(b' ');
    out.extend_from_slice(msg);
}

impl Transport for StreamTransport {
    fn send(&mut self, msgs: &[Msg<'_>]) -> Result<(), TransportError> {
        self.frame.clear();
        for m in msgs {
            frame_octet_counted(m.bytes, &mut self.frame);
        }
        self.stream.write_all(&self.frame)?;
        if let Some(last) = msgs.last() {
            let count = self.written.map_or(0, |w| w.1) + msgs.len() as u64;
            self.written = Some((last.seq, count));
            self.queued
                .push_back((last.seq, count, self.stream.counted().written));
        }
        Ok(())
    }

    fn delivered(&mut self) -> Result<Option<u64>, TransportError> {
        // A syslog receiver never talks: anything read is an alert or a close.
        self.scratch.clear();
        self.stream.read_available(&mut self.scratch)?;
        let now = Instant::now();
        let acked = self.stream.acked_bytes();
        while let Some(&(seq, count, bytes)) = self.queued.front() {
            if bytes > acked {
                break;
            }
            self.drained.push_back((seq, count, now));
            self.queued.pop_front();
        }
        while let Some(&(seq, count, at)) = self.drained.front() {
            if now.duration_since(at) < GRACE {
                break;
            }
            self.delivered = Some((seq, count));
            self.drained.pop_front();
        }
        Ok(self.delivered.map(|d| d.0))
    }

    fn known_delivered(&self) -> Option<u64> {
        self.delivered.map(|d| d.0)
    }

    fn pending(&self) -> usize {
        let w = self.written.map_or(0, |w| w.1);
        let d = self.delivered.map_or(0, |d| d.1);
        (w - d) as usize
    }

    fn close(&mut self) {
        self.stream.close();
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn octet_counting_counts_bytes_not_chars() {
        let mut out = Vec::new();
        super::frame_octet_counted("zürich\n".as_bytes(), &mut out);
        super::frame_octet_counted(b"x", &mut out);
        assert_eq!(out, "8 zürich\n1 x".as_bytes());
    }
}
