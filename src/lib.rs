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
//! - [`config`]: the TOML configuration's shape (docs/config.md) and its
//!   parsing.
//! - [`event`]: the canonical status event (docs/events.md).
//! - [`model`]: the status model: states, transitions, gate, roles, and its
//!   `[model]` configuration (docs/events.md).
//! - [`sources`]: what produces events: line parsers, the file, poll and
//!   Kubernetes sources, the webhook presets.
//! - [`ingest`]: the one way producers hand batches to the core
//!   ([`ingest::Ingest`]: admitted or not by the outbox policy).
//! - [`core`]: the core thread, sole owner of the tracker and the store:
//!   applies and commits batches (group commit), the periodic tick;
//!   [`core::CoreHandle`] is the way in for the API, webhooks and the admin socket.
//! - [`track`]: the tracker: per-key state, durations, MTTSR, DORA;
//!   [`track::readiness`]: the go/no-go checks and risk score before a deployment.
//! - [`detect`]: anomaly rules, called by the tracker on every change.
//! - [`store`]: the embedded store: one atomic transaction per input batch.
//! - [`sym`]: interned strings (statuses, actors, sources) of the per-key state.
//! - [`dlq`]: dead letters: payloads that did not map, kept for `relstat dlq replay`.
//! - [`spool`]: the outbox policy ([`spool::outbox`]: `max_bytes`,
//!   `when_full`, for every producer) and air-gapped sync: signed bundles,
//!   export and import.
//! - [`notifications`]: which chat notifications a commit causes (routes of
//!   `[[notify.destinations]]`), queued in the store with their cause.
//! - [`sinks`]: the Prometheus registry, the SIEM forwarder and the chat
//!   notifier ([`sinks::notify`]: Slack, Teams, webhooks).
//! - [`http`]: the one listener: /metrics, /healthz, /readyz (TLS and basic
//!   auth from an exporter-toolkit web config), and routes for /api/v1 and /hooks.
//! - [`api`]: `/api/v1`: release status, audit trail, snapshots, partner views.
//! - [`replay`]: `relstat replay`: historical logs through the whole flow, in memory.
//! - [`outbound`]: the one outbound HTTP client (SIEM `http`, poll and Kubernetes
//!   sources, notifications): TLS and client certificates, keep-alive, proxies, capped bodies.
//! - [`check`]: check-config: the semantic validation of a configuration,
//!   reading the closed lists from their owners (tool registry, canonical
//!   fields, SIEM facilities, status model); [`check::load`] is how the
//!   agent and the CLI load a config, and resolves the host name once.
//! - [`admin`]: the local admin socket the CLI uses while the agent runs.
//! - [`agent`]: the runtime of `relstat run`: wiring, source threads,
//!   signals, reloads, the HTTP service.
//! - [`cli`]: the command line; [`logging`]: the agent's own log.
//!
//! Layering (checked by a unit test, `architecture`): only main, cli and
//! the runtime import the runtime; sources import nothing from the runtime,
//! core, store, sinks, api, admin or spool; the tracker and the rules import
//! nothing from cli, the runtime, http, api, sources or sinks; `ingest`
//! imports only `event` and `dlq`, `dlq` only `event`; and the top-level
//! modules import each other without a cycle.

pub mod admin;
pub mod agent;
pub mod api;
#[cfg(test)]
mod architecture;
pub mod audit;
pub mod check;
pub mod cli;
pub mod config;
pub mod core;
#[cfg(test)]
mod crash_child;
pub mod detect;
pub mod dlq;
pub mod event;
pub mod http;
pub mod ingest;
pub mod logging;
pub mod model;
pub mod notifications;
pub mod outbound;
pub mod replay;
pub mod sinks;
pub mod sources;
pub mod spool;
pub mod store;
pub mod sym;
pub mod track;
