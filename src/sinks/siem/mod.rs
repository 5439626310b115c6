//! The SIEM sink (docs/events.md): the forwarder reads the outbox the core
//! writes (in the same transaction as the input that caused each record),
//! formats each record, sends it over the configured transport and removes
//! it only once delivered.
//!
//! - [`format`]: rfc5424, cef, leef, json.
//! - [`transport`]: tls, relp (plain or TLS), tcp, udp, http, and when each
//!   counts a message as delivered.
//! - [`forward`]: the forwarder thread: order, batches, rate limit,
//!   reconnects with backoff and jitter, removal on delivery, spool limits.

pub mod format;
pub mod forward;
pub mod transport;

pub use forward::{Forwarder, Observer};
