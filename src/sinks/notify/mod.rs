//! Chat notifications: the transitions and anomalies people must see,
//! sent to Slack, Microsoft Teams or a generic webhook.
//!
//! The core (and a relay's tracked imports) choose the messages
//! ([`crate::notifications::Router`]) and write them to a queue per
//! destination in the store, in the same transaction as their cause; the
//! notifier ([`notifier`], a thread per destination) renders ([`render`])
//! and sends them through [`crate::outbound`], and removes each only after
//! a 2xx answer (at least once: a crash mid-send may send one again, with
//! the same stable id).

pub mod notifier;
pub mod render;

pub use crate::notifications::{Note, NoteKind, read_url, stable_id};
