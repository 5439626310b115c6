//! The agent's own log: plain lines on stderr (journald reads them well), or
//! the local syslog (`[agent] log = "syslog"`, via the `syslog` crate), each
//! event at its own severity. `RELSTAT_LOG` (e.g. `debug`) sets the level.

use std::fmt::Write as _;
use std::sync::Mutex;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry};

use crate::config::LogTarget;

type SyslogLogger = syslog::Logger<syslog::LoggerBackend, syslog::Formatter3164>;

/// Sends every event to the local syslog (facility daemon).
struct SyslogLayer {
    logger: Mutex<SyslogLogger>,
}

/// Collects an event's message and fields into one line.
#[derive(Default)]
struct Line(String);

impl Visit for Line {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0.push_str(value);
        } else {
            let _ = write!(self.0, " {}={value}", field.name());
        }
    }
}

impl<S: Subscriber> Layer<S> for SyslogLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut line = Line::default();
        event.record(&mut line);
        let mut logger = self.logger.lock().unwrap_or_else(|p| p.into_inner());
        // A lost log line must not take the agent down.
        let _ = match *event.metadata().level() {
            Level::ERROR => logger.err(line.0),
            Level::WARN => logger.warning(line.0),
            Level::INFO => logger.info(line.0),
            Level::DEBUG | Level::TRACE => logger.debug(line.0),
        };
    }
}

/// Installs the global subscriber; falls back to stderr (with a message)
/// when the local syslog cannot be reached.
pub fn init(target: LogTarget) {
    let filter =
        || EnvFilter::try_from_env("RELSTAT_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    if target == LogTarget::Syslog {
        let formatter = syslog::Formatter3164 {
            facility: syslog::Facility::LOG_DAEMON,
            hostname: None,
            process: "relstat".into(),
            pid: std::process::id(),
        };
        match syslog::unix(formatter) {
            Ok(logger) => {
                let layer = SyslogLayer {
                    logger: Mutex::new(logger),
                };
                let _ = Registry::default().with(filter()).with(layer).try_init();
                return;
            }
            Err(e) => eprintln!("relstat: cannot reach the local syslog ({e}); logging to stderr"),
        }
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter())
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(false)
        .try_init();
}
