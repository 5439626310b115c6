//! Integration tests: the real `relstat` binary against real files and real
//! peers (promtool, and later rsyslog and Prometheus). One test binary;
//! helpers in `util`.

mod util;

mod anomalies;
mod api;
mod approvals;
mod audit;
mod bench_scripts;
mod bundles;
mod cli;
mod dlq;
mod docs;
mod field_limits;
mod fuzz;
mod health;
mod many_files;
mod notify;
mod operator_mistakes;
mod ops;
mod packaging;
mod poll;
mod prometheus;
mod readiness;
mod replay;
mod rsyslog;
mod run;
mod siem;
mod spool_limits;
mod webhooks;
