//! Sinks: the Prometheus registry and the SIEM forwarder.
pub mod metrics;
pub mod siem;
