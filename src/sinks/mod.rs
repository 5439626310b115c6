//! Sinks: the Prometheus registry, the SIEM forwarder and the chat
//! notifications.
pub mod metrics;
pub mod notify;
pub mod siem;
