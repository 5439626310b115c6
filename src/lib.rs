//! relstat: a release-status tracking agent.
//!
//! Sources turn deployment logs and CI/CD tool payloads into canonical status
//! events; the tracker, the single owner of per-release state, applies them in
//! event-time order; anomaly rules judge each change; the embedded store
//! commits state, history, checkpoints and the SIEM outbox in one transaction
//! per batch; sinks expose Prometheus series and forward SIEM events.
//!
//! # Layout
//!
//! The modules follow the flow of an event:
//!
//! - [`config`]: the TOML configuration (docs/config.md) and its validation.
//! - [`event`]: the canonical status event (docs/events.md).
//! - [`model`]: the status model: states, transitions, gate, roles (docs/events.md).
//! - [`sources`]: what produces events: line parsers and the file source.
//! - [`track`]: the tracker: per-key state, durations, MTTSR, DORA.
//! - [`detect`]: anomaly rules, called by the tracker on every change.
//! - [`store`]: the embedded store: one atomic transaction per input batch.
//! - [`dlq`]: dead letters: payloads that did not map, kept for `relstat dlq replay`.
//! - [`spool`]: air-gapped sync: signed outbox bundles, export and import.
//! - [`sinks`]: the Prometheus registry (and, later, the SIEM forwarder).
//! - [`http`]: the one listener: /metrics, /healthz, /readyz (TLS and basic
//!   auth from an exporter-toolkit web config), and routes for /api/v1 and /hooks.
//! - [`api`]: `/api/v1`: release status, audit trail, snapshots, partner views.
//! - [`replay`]: `relstat replay`: historical logs through the whole flow, in memory.
//! - [`admin`]: the local admin socket the CLI uses while the agent runs.
//! - [`agent`]: `relstat run`: source threads, the core (tracker + store), HTTP, signals.
//! - [`cli`]: the command line; [`logging`]: the agent's own log.

pub mod admin;
pub mod agent;
pub mod api;
pub mod cli;
pub mod config;
#[cfg(test)]
mod crash_child;
pub mod detect;
pub mod dlq;
pub mod event;
pub mod http;
pub mod logging;
pub mod model;
pub mod replay;
pub mod sinks;
pub mod sources;
pub mod spool;
pub mod store;
pub mod track;
