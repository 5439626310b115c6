//! Sinks.
pub mod metrics;
