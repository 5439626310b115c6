//! The command line (`relstat --help`, `man relstat`): clap definitions and the dispatch of
//! each command. Exit codes: 0 success, 1 runtime failure, 2 usage or
//! configuration error.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};

use crate::config::{self, ConfigError, Loaded};

/// Exit code of a runtime failure.
pub const EXIT_FAILURE: u8 = 1;
/// Exit code of a usage or configuration error.
pub const EXIT_USAGE: u8 = 2;
/// `relstat readiness`: the release is not ready (a check failed).
pub const EXIT_NO_GO: u8 = 3;

/// Where the packages install the reference documents.
pub const DOC_DIR: &str = "/usr/share/doc/relstat/";

/// The reference documents (docs/ in the repository), which `relstat --help`
/// and the man page list.
const DOCS: &[(&str, &str)] = &[
    (
        "config.md",
        "every configuration key: type, default, meaning, example",
    ),
    (
        "metrics.md",
        "every metric and its labels; status durations, MTTSR and DORA in PromQL",
    ),
    (
        "events.md",
        "the canonical event, the status model, the anomaly rules, the SIEM records",
    ),
    ("runbook.md", "what to do when a shipped alert fires"),
    (
        "api.md",
        "the release status API (/api/v1) and relstat status",
    ),
    (
        "presets.md",
        "webhook, poll and Kubernetes sources, tool by tool",
    ),
    ("bundles.md", "air-gapped sync: spool export and import"),
    (
        "audit.md",
        "the hash-chained audit trail: relstat audit verify and export",
    ),
    (
        "dlq.md",
        "dead letters: payloads that did not map, and relstat dlq replay",
    ),
    ("change-freeze.md", "freeze windows, with examples"),
    (
        "files.md",
        "tailing log files: rotation, descriptors, what can be lost",
    ),
    (
        "notifications.md",
        "Slack, Teams and webhook notifications; Alertmanager routes",
    ),
    (
        "readiness.md",
        "go/no-go before a deployment (relstat readiness) and the risk score; CI examples",
    ),
];

/// The end of `relstat --help`: where the documentation is.
fn docs_help() -> String {
    let mut s = format!("Documentation in {DOC_DIR} (docs/ in the source repository):");
    for (file, what) in DOCS {
        s.push_str(&format!("\n  {file:<17}{what}"));
    }
    s
}

/// The man page's DOCUMENTATION section (roff).
fn docs_roff() -> String {
    let esc = |s: &str| s.replace('\\', "\\\\").replace('-', "\\-");
    let mut s = format!(
        ".SH DOCUMENTATION\nThe reference documents are installed in \\fI{}\\fR \
         (docs/ in the source repository):\n",
        esc(DOC_DIR)
    );
    for (file, what) in DOCS {
        s.push_str(&format!(".TP\n\\fB{}\\fR\n{}\n", esc(file), esc(what)));
    }
    s
}

/// relstat: release-status tracking agent.
#[derive(Debug, Parser)]
#[command(name = "relstat", version, about, long_about = None, after_long_help = docs_help())]
pub struct Cli {
    /// Configuration file [default: /etc/relstat/relstat.toml when it exists,
    /// else built-in defaults]
    #[arg(short = 'c', long = "config", global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent: tail the sources, serve /metrics, keep the store
    Run {
        /// Process every source's backlog, commit and exit
        #[arg(long)]
        once: bool,
    },
    /// Check the configuration and print every problem found
    CheckConfig,
    /// Run historical logs offline (in memory, never the live data_dir)
    Replay {
        /// Send every file to this file source instead of matching `paths`
        #[arg(long, value_name = "NAME")]
        source: Option<String>,
        /// What to print
        #[arg(long, value_enum, default_value_t = Output::Prom)]
        output: Output,
        /// The agent's clock (RFC 3339) [default: the greatest event time not ahead of now]
        #[arg(long, value_name = "TIME")]
        now: Option<String>,
        /// Log files, merged by event time
        #[arg(required = true, value_name = "LOGFILE")]
        files: Vec<PathBuf>,
    },
    /// The store-and-forward spool
    #[command(subcommand)]
    Spool(SpoolCommand),
    /// The embedded store in the data_dir (the agent must be stopped)
    #[command(subcommand)]
    Store(StoreCommand),
    /// Dead letters: payloads of webhook and poll sources that came out
    /// unmapped or invalid, kept for replay after a configuration fix
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Chat notifications ([notify])
    #[command(subcommand)]
    Notify(NotifyCommand),
    /// The audit trail's hash chain: verify it, export it for retention
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Release status: the current view, or the history as it stood at a
    /// time (through the running agent, or from the store when it is stopped)
    Status {
        /// Answer as of this time (RFC 3339), from the history
        #[arg(long, value_name = "TIME")]
        at: Option<String>,
        /// With --at: `recorded` (what relstat knew then) or `event` (the
        /// state then, as known now)
        #[arg(long, value_enum, default_value_t = AxisArg::Recorded, requires = "at")]
        axis: AxisArg,
        /// Only this release
        #[arg(long, value_name = "R")]
        release: Option<String>,
        /// Only this environment
        #[arg(long, value_name = "E")]
        environment: Option<String>,
        /// Print JSON (the API's rows) instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Go/no-go before deploying a release to an environment: every check
    /// with its reason and the risk score (through the running agent, or
    /// from the store when it is stopped). Exit 0 go, 3 no-go, 1 error
    /// (an unknown release too), 2 usage
    Readiness {
        /// The release about to be deployed
        #[arg(long, value_name = "R")]
        release: String,
        /// The environment it is about to be deployed to
        #[arg(long, value_name = "E")]
        environment: String,
        /// Only this service
        #[arg(long, value_name = "S")]
        service: Option<String>,
        /// Only this site
        #[arg(long, value_name = "X")]
        site: Option<String>,
        /// Who deploys (four eyes: their own approval does not count)
        #[arg(long, value_name = "A")]
        actor: Option<String>,
        /// Print the answer as JSON (the API's) instead of text
        #[arg(long)]
        json: bool,
    },
    /// Create an Ed25519 key pair for signing a site's bundles: PREFIX.key
    /// (private, mode 0600) and PREFIX.pub (for the relays' trusted_keys_dir,
    /// as <site>.pub)
    Keygen {
        /// Path prefix of the two files
        #[arg(long, value_name = "PREFIX")]
        out: PathBuf,
    },
    /// Print shell completions
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff)
    Man,
}

#[derive(Debug, Subcommand)]
pub enum SpoolCommand {
    /// Count, size and age of the live spool (through the running agent, or
    /// from the store when it is stopped), or of a bundle FILE
    Inspect {
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
        /// A bundle: its manifest, signature (when its site's key is
        /// trusted) and payload are checked
        #[arg(value_name = "FILE")]
        file: Option<PathBuf>,
    },
    /// Write the outbox to a signed bundle (air-gapped sites); the exported
    /// events leave the outbox once the bundle is on disk
    Export {
        /// The bundle file (written as FILE.tmp, then renamed)
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Leave the exported events in the outbox
        #[arg(long)]
        keep: bool,
        /// Print the report as JSON
        #[arg(long)]
        json: bool,
    },
    /// Verify bundles (signature, checksum) and enqueue their events for
    /// forwarding, each event once; one bad bundle imports nothing
    Import {
        /// Print the reports as JSON
        #[arg(long)]
        json: bool,
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
}

/// Which dead letters a `dlq` command reads.
#[derive(Debug, Clone, clap::Args)]
pub struct DlqSelect {
    /// Only this source's
    #[arg(long, value_name = "S")]
    source: Option<String>,
    /// Only those received at or after this time (RFC 3339)
    #[arg(long, value_name = "T")]
    since: Option<String>,
    /// Only this entry
    #[arg(long, value_name = "ID")]
    id: Option<u64>,
}

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// One line per dead letter: id, received, source, result, delivery,
    /// replayed, reason (through the running agent, or from the store when
    /// it is stopped)
    List {
        #[command(flatten)]
        select: DlqSelect,
        /// Print JSON instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Dead letters in full: kept headers and payload, as JSON
    Show {
        #[command(flatten)]
        select: DlqSelect,
    },
    /// Map dead letters again through the current configuration (after a
    /// status_map or fields fix) and apply them through the running agent;
    /// each is marked replayed, and skipped by a later replay
    Replay {
        #[command(flatten)]
        select: DlqSelect,
        /// Replay entries replayed before too (their events come out
        /// duplicate)
        #[arg(long)]
        again: bool,
        /// Print the report as JSON
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Decode every record the agent reads back; list undecodable ones and
    /// those kept aside in the quarantine table. Changes nothing; exit 1
    /// when a record is undecodable
    Check,
    /// Check and repair the store file, then move every undecodable record
    /// to the quarantine table (kept, not deleted) so the agent starts
    Repair,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Walk the history's hash chain (through the running agent, or from
    /// the store when it is stopped) and name the first broken row; or,
    /// with --export, check an export offline. Exit 1 when broken
    Verify {
        /// An export file (relstat audit export) to check instead of the store
        #[arg(long, value_name = "FILE")]
        export: Option<PathBuf>,
        /// The site's public key (relstat keygen's PREFIX.pub): the
        /// signature of the export, or of the store's retention checkpoint,
        /// must verify with it
        #[arg(long, value_name = "SITE.pub")]
        key: Option<PathBuf>,
        /// Print the report as JSON
        #[arg(long)]
        json: bool,
    },
    /// Write history rows with their chain hashes as NDJSON, signed with
    /// [spool] signing_key_file when configured
    Export {
        /// Only rows recorded at or after this time (RFC 3339)
        #[arg(long, value_name = "T")]
        since: Option<String>,
        /// Only rows recorded at or before this time (RFC 3339)
        #[arg(long, value_name = "T")]
        until: Option<String>,
        /// Only this environment's rows
        #[arg(long, value_name = "E")]
        environment: Option<String>,
        /// The export file (written as FILE.tmp, then renamed)
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum NotifyCommand {
    /// Send a sample message to a destination and print its answer; exit 1
    /// when it is not delivered
    Test {
        /// The destination's `name` in [[notify.destinations]]
        #[arg(value_name = "NAME")]
        name: String,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum AxisArg {
    Recorded,
    Event,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Output {
    /// Prometheus text exposition
    Prom,
    /// Anomalies, final statuses and input accounting as JSON
    Json,
}

/// An error with its exit code.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub error: anyhow::Error,
}

impl Failure {
    fn usage(e: impl Into<anyhow::Error>) -> Self {
        Self {
            code: EXIT_USAGE,
            error: e.into(),
        }
    }
    fn runtime(e: impl Into<anyhow::Error>) -> Self {
        Self {
            code: EXIT_FAILURE,
            error: e.into(),
        }
    }
}

impl From<ConfigError> for Failure {
    fn from(e: ConfigError) -> Self {
        Failure::usage(e)
    }
}

/// The system's host name (for `[agent] hostname`'s default).
pub fn hostname() -> String {
    crate::config::system_hostname()
}

/// `relstat notify test NAME`.
fn notify_test(loaded: &Loaded, name: &str) -> Result<(), Failure> {
    use crate::sinks::notify::notifier::{Answer, send_test};
    let Some(n) = &loaded.config.notify else {
        return Err(Failure::usage(anyhow::anyhow!(
            "the configuration has no [notify] section"
        )));
    };
    let answer = send_test(n, name).map_err(|e| match e {
        crate::sinks::notify::notifier::NotifyError::Unknown(_) => Failure::usage(e),
        e => Failure::runtime(e),
    })?;
    match answer {
        Answer::Delivered(status, body) => {
            println!("delivered: HTTP {status} {body}");
            Ok(())
        }
        Answer::Later(_, why) => Err(Failure::runtime(anyhow::anyhow!(
            "not delivered (the agent would try again): {why}"
        ))),
        Answer::Refused(status, body) => Err(Failure::runtime(anyhow::anyhow!(
            "refused: HTTP {status} {body}"
        ))),
    }
}

fn load_config(explicit: Option<&Path>) -> Result<Loaded, Failure> {
    let path = config::resolve(explicit);
    Ok(crate::check::load(path.as_deref())?)
}

/// Runs one command.
pub fn dispatch(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Run { once } => {
            let path = config::resolve(cli.config.as_deref());
            let loaded = crate::check::load(path.as_deref())?;
            let (problems, file_warnings) = crate::check::files(&loaded);
            if !problems.is_empty() {
                return Err(config::ConfigError::Invalid(problems).into());
            }
            crate::logging::init(loaded.config.agent.log);
            for w in crate::check::warnings(&loaded)
                .into_iter()
                .chain(file_warnings)
            {
                tracing::warn!("{w}");
            }
            crate::agent::run(path, loaded, once).map_err(Failure::runtime)
        }
        Command::CheckConfig => check_config(cli.config.as_deref()),
        Command::Store(cmd) => {
            let loaded = load_config(cli.config.as_deref())?;
            store_command(&loaded, cmd)
        }
        Command::Dlq(cmd) => {
            let loaded = load_config(cli.config.as_deref())?;
            dlq_command(&loaded, cmd)
        }
        Command::Audit(cmd) => audit_command(cli.config.as_deref(), cmd),
        Command::Notify(NotifyCommand::Test { name }) => {
            let loaded = load_config(cli.config.as_deref())?;
            notify_test(&loaded, &name)
        }
        Command::Replay {
            source,
            output,
            now,
            files,
        } => {
            let loaded = load_config(cli.config.as_deref())?;
            let now = match now {
                Some(t) => Some(crate::event::parse_rfc3339(&t).ok_or_else(|| {
                    Failure::usage(anyhow::anyhow!(
                        "--now {t:?} is not an RFC 3339 time, e.g. 2026-11-03T10:00:00Z"
                    ))
                })?),
                None => None,
            };
            let opts = crate::replay::Options {
                files,
                source,
                now,
                single_thread: false,
            };
            let report = crate::replay::replay(&loaded, &opts).map_err(|e| {
                if e.is_usage() {
                    Failure::usage(e)
                } else {
                    Failure::runtime(e)
                }
            })?;
            let mut out = std::io::stdout().lock();
            let written = match output {
                Output::Prom => out.write_all(report.metrics.render().as_bytes()),
                Output::Json => serde_json::to_writer_pretty(&mut out, &report.to_json())
                    .map_err(std::io::Error::other)
                    .and_then(|_| out.write_all(b"\n")),
            };
            written.map_err(Failure::runtime)
        }
        Command::Spool(SpoolCommand::Inspect {
            json,
            file: Some(file),
        }) => {
            let loaded = load_config(cli.config.as_deref())?;
            let dir = loaded.config.spool.trusted_keys_dir.as_deref();
            let i = crate::spool::bundle::inspect(&file, dir).map_err(Failure::runtime)?;
            if json {
                println!("{}", serde_json::to_string(&i).map_err(Failure::runtime)?);
            } else {
                let m = &i.manifest;
                let sig = match &i.signature {
                    crate::spool::bundle::SignatureStatus::Valid { key } => {
                        format!("valid ({})", key.display())
                    }
                    crate::spool::bundle::SignatureStatus::NotChecked { why } => {
                        format!("not checked: {why}")
                    }
                };
                println!(
                    "bundle: {}\nsite: {}\nhost: {}\nagent version: {}\ncreated: {}\n\
                     events: {}\nsequence: {}..{}\nbytes: {} (payload {})\noldest: {}\n\
                     newest: {}\nsignature: {sig}\npayload: sha256 {} verified",
                    m.bundle_id,
                    m.site,
                    m.host,
                    m.agent_version,
                    m.created_at,
                    m.count,
                    m.first_seq,
                    m.last_seq,
                    i.file_bytes,
                    m.payload_bytes,
                    i.oldest_detected_at.as_deref().unwrap_or("-"),
                    i.newest_detected_at.as_deref().unwrap_or("-"),
                    m.payload_sha256,
                );
            }
            Ok(())
        }
        Command::Spool(SpoolCommand::Export { out, keep, json }) => {
            let loaded = load_config(cli.config.as_deref())?;
            let r = crate::admin::spool_export(&loaded, &out, keep).map_err(Failure::runtime)?;
            if json {
                println!("{r}");
            } else {
                let m = &r["manifest"];
                eprintln!(
                    "exported {} events ({} bytes) to {}; bundle {}; {}",
                    m["count"],
                    r["file_bytes"],
                    out.display(),
                    m["bundle_id"].as_str().unwrap_or("?"),
                    if keep {
                        "kept in the outbox".to_string()
                    } else {
                        format!("{} removed from the outbox", r["removed"])
                    }
                );
            }
            Ok(())
        }
        Command::Spool(SpoolCommand::Import { json, files }) => {
            let loaded = load_config(cli.config.as_deref())?;
            let reports = crate::admin::spool_import(&loaded, &files).map_err(Failure::runtime)?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string(&reports).map_err(Failure::runtime)?
                );
            } else {
                for r in &reports {
                    match &r.already_imported_at {
                        Some(at) => eprintln!(
                            "{}: bundle {} (site {}, host {}) was already imported at {at}: nothing to do",
                            r.path.display(),
                            r.bundle_id,
                            r.site,
                            r.host
                        ),
                        None => eprintln!(
                            "{}: bundle {} (site {}, host {}): {} events, {} enqueued, {} already imported{}{}{}",
                            r.path.display(),
                            r.bundle_id,
                            r.site,
                            r.host,
                            r.count,
                            r.enqueued,
                            r.duplicates,
                            if r.tracked > 0 {
                                format!(", {} transitions tracked", r.tracked)
                            } else if r.pending > 0 {
                                format!(
                                    ", {} transitions to track when the agent starts",
                                    r.pending
                                )
                            } else {
                                String::new()
                            },
                            if r.invalid > 0 {
                                format!(
                                    ", {} bad transition records skipped (counted invalid)",
                                    r.invalid
                                )
                            } else {
                                String::new()
                            },
                            if r.dropped > 0 {
                                format!(
                                    ", {} oldest spool records dropped (when_full = \"drop_oldest\")",
                                    r.dropped
                                )
                            } else {
                                String::new()
                            }
                        ),
                    }
                }
            }
            Ok(())
        }
        Command::Keygen { out } => {
            let (k, p) = crate::spool::keys::generate(&out).map_err(Failure::runtime)?;
            eprintln!(
                "wrote {} (private: set [spool] signing_key_file) and {} \
                 (public: copy it to each relay's trusted_keys_dir as <site>.pub)",
                k.display(),
                p.display()
            );
            Ok(())
        }
        Command::Spool(SpoolCommand::Inspect { json, file: None }) => {
            let loaded = load_config(cli.config.as_deref())?;
            let s = crate::admin::spool_inspect(&loaded.config.agent.data_dir)
                .map_err(Failure::runtime)?;
            if json {
                println!("{}", serde_json::to_string(&s).map_err(Failure::runtime)?);
            } else {
                let age = s
                    .oldest_age_seconds
                    .map(|a| {
                        humantime::format_duration(std::time::Duration::from_secs(a as u64))
                            .to_string()
                    })
                    .unwrap_or_else(|| "-".into());
                println!("events: {}\nbytes: {}\noldest: {age}", s.events, s.bytes);
            }
            Ok(())
        }
        Command::Status {
            at,
            axis,
            release,
            environment,
            json,
        } => {
            let loaded = load_config(cli.config.as_deref())?;
            let at = match at {
                Some(t) => Some(crate::event::parse_rfc3339(&t).ok_or_else(|| {
                    Failure::usage(anyhow::anyhow!(
                        "--at {t:?} is not an RFC 3339 time, e.g. 2026-11-03T14:05:00Z"
                    ))
                })?),
                None => None,
            };
            let q = crate::api::Query {
                filter: crate::api::view::Filter {
                    release,
                    environment,
                    ..Default::default()
                },
                at,
                axis: match axis {
                    AxisArg::Recorded => crate::api::view::Axis::Recorded,
                    AxisArg::Event => crate::api::view::Axis::Event,
                },
            };
            let (rows, pending) = crate::admin::status(&loaded, q).map_err(Failure::runtime)?;
            if pending > 0 {
                eprintln!(
                    "{pending} imported transitions pending: the agent tracks them when it \
                     starts (not in this view yet)"
                );
            }
            let mut out = std::io::stdout().lock();
            let written = if json {
                serde_json::to_writer_pretty(&mut out, &rows)
                    .map_err(std::io::Error::other)
                    .and_then(|_| out.write_all(b"\n"))
            } else {
                out.write_all(status_table(&rows).as_bytes())
            };
            written.map_err(Failure::runtime)
        }
        Command::Readiness {
            release,
            environment,
            service,
            site,
            actor,
            json,
        } => {
            let loaded = load_config(cli.config.as_deref())?;
            let ask = crate::track::readiness::Ask {
                release,
                environment,
                service,
                site,
                actor,
            };
            let what = format!("release {:?} in {:?}", ask.release, ask.environment);
            let answer = crate::admin::readiness(&loaded, ask)
                .map_err(Failure::runtime)?
                .ok_or_else(|| {
                    Failure::runtime(anyhow::anyhow!(
                        "unknown {what}: no key of this release is tracked (check the name, \
                         and that the agent has seen it)"
                    ))
                })?;
            let mut out = std::io::stdout().lock();
            let written = if json {
                serde_json::to_writer_pretty(&mut out, &answer)
                    .map_err(std::io::Error::other)
                    .and_then(|_| out.write_all(b"\n"))
            } else {
                out.write_all(readiness_text(&answer).as_bytes())
            };
            written.map_err(Failure::runtime)?;
            if answer.go {
                Ok(())
            } else {
                let failed = answer
                    .checks
                    .iter()
                    .filter(|c| c.status == crate::track::readiness::Status::Fail)
                    .count();
                Err(Failure {
                    code: EXIT_NO_GO,
                    error: anyhow::anyhow!("no-go: {failed} check(s) failed"),
                })
            }
        }
        Command::Completions { shell } => {
            let mut cmd = Cli::command();
            clap_complete::generate(shell, &mut cmd, "relstat", &mut std::io::stdout());
            Ok(())
        }
        Command::Man => {
            // The documentation list as a section of its own, not as the
            // EXTRA paragraph clap_mangen makes of after_long_help.
            let cmd = Cli::command().after_long_help(None::<&str>);
            let mut page = Vec::new();
            clap_mangen::Man::new(cmd)
                .render(&mut page)
                .map_err(Failure::runtime)?;
            let mut page = String::from_utf8_lossy(&page).into_owned();
            let at = page.find("\n.SH VERSION").map_or(page.len(), |i| i + 1);
            page.insert_str(at, &docs_roff());
            std::io::stdout()
                .write_all(page.as_bytes())
                .map_err(Failure::runtime)
        }
    }
}

/// `relstat readiness`'s text: the verdict, one line per check, the score
/// and its breakdown.
fn readiness_text(a: &crate::track::readiness::Answer) -> String {
    use crate::track::readiness::Status;
    let mut s = format!(
        "{}: release {} to {}",
        a.verdict.to_uppercase(),
        a.release,
        a.environment
    );
    if let Some(x) = &a.service {
        s.push_str(&format!(" (service {x})"));
    }
    if let Some(x) = &a.site {
        s.push_str(&format!(" (site {x})"));
    }
    s.push('\n');
    for c in &a.checks {
        let mark = match c.status {
            Status::Pass => "pass",
            Status::Fail => "FAIL",
        };
        s.push_str(&format!("  {mark}  {:<20} {}\n", c.name, c.reason));
    }
    s.push_str(&format!("risk score: {}/100\n", a.risk_score));
    for r in a.risk.iter().filter(|r| r.points > 0.0) {
        s.push_str(&format!(
            "  +{:<5} {:<20} {} x {} ({})\n",
            r.points, r.name, r.weight, r.value, r.reason
        ));
    }
    s
}

/// A duration in its two largest units: `11d 4h`, `3m 20s`.
fn coarse(secs: u64) -> String {
    let units = [(86400, "d"), (3600, "h"), (60, "m"), (1, "s")];
    let mut parts = Vec::new();
    let mut rest = secs;
    for (n, u) in units {
        if rest >= n || (parts.is_empty() && n == 1) {
            parts.push(format!("{}{u}", rest / n));
            rest %= n;
        }
        if parts.len() == 2 || (!parts.is_empty() && rest == 0) {
            break;
        }
    }
    parts.join(" ")
}

/// `relstat status`'s table: aligned columns, one row per key.
fn status_table(rows: &[crate::api::view::Row]) -> String {
    let mut table = vec![
        [
            "RELEASE",
            "SERVICE",
            "ENVIRONMENT",
            "SITE",
            "STATUS",
            "ENTERED",
            "IN STATUS",
            "ACTOR",
            "APPROVAL",
            "FLAGS",
        ]
        .map(String::from),
    ];
    for r in rows {
        let age = r
            .time_in_status_seconds
            .map_or("-".into(), |s| coarse(s as u64));
        let mut flags = Vec::new();
        if r.stuck {
            flags.push("stuck".to_string());
        }
        if let Some(f) = r.finished_reason {
            flags.push(format!(
                "finished:{}",
                serde_json::to_value(f)
                    .ok()
                    .and_then(|v| v.as_str().map(String::from))
                    .unwrap_or_default()
            ));
        }
        table.push([
            r.release.clone(),
            r.service.clone(),
            r.environment.clone(),
            r.site.clone(),
            r.status.clone(),
            r.entered_at.clone(),
            age,
            r.last_actor.clone().unwrap_or_else(|| "-".into()),
            match (&r.decision, &r.approver) {
                (Some(d), Some(who)) => format!("{d}:{who}"),
                (Some(d), None) => d.clone(),
                _ => "-".into(),
            },
            if flags.is_empty() {
                "-".into()
            } else {
                flags.join(",")
            },
        ]);
    }
    let mut widths = [0usize; 10];
    for row in &table {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    for row in &table {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    if rows.is_empty() {
        out.push_str("(no tracked release matches)\n");
    }
    out
}

fn check_config(explicit: Option<&Path>) -> Result<(), Failure> {
    let loaded = load_config(explicit)?;
    let (problems, file_warnings) = crate::check::files(&loaded);
    if !problems.is_empty() {
        return Err(config::ConfigError::Invalid(problems).into());
    }
    if let Some(web) = &loaded.config.http.web_config_file {
        crate::http::check_web_config(web).map_err(Failure::usage)?;
    }
    for w in crate::check::warnings(&loaded)
        .into_iter()
        .chain(file_warnings)
    {
        eprintln!("warning: {w}");
    }
    println!(
        "{}: configuration is valid ({} sources)",
        loaded.file_label(),
        loaded.config.sources.len()
    );
    Ok(())
}

impl DlqSelect {
    fn filter(&self) -> Result<crate::store::DlqFilter, Failure> {
        let since = match &self.since {
            Some(t) => Some(crate::event::parse_rfc3339(t).ok_or_else(|| {
                Failure::usage(anyhow::anyhow!(
                    "--since {t:?} is not an RFC 3339 time, e.g. 2026-11-03T10:00:00Z"
                ))
            })?),
            None => None,
        };
        Ok(crate::store::DlqFilter {
            source: self.source.clone(),
            since,
            id: self.id,
        })
    }
}

/// `relstat dlq list|show|replay`.
fn dlq_command(loaded: &Loaded, cmd: DlqCommand) -> Result<(), Failure> {
    use crate::event::format_rfc3339;
    let dir = &loaded.config.agent.data_dir;
    match cmd {
        DlqCommand::List { select, json } => {
            let rows = crate::admin::dlq_list(dir, &select.filter()?).map_err(Failure::runtime)?;
            if json {
                let v: Vec<serde_json::Value> = rows
                    .iter()
                    .map(|(id, d)| {
                        serde_json::json!({
                            "id": id, "source": d.source, "delivery": d.delivery,
                            "received": format_rfc3339(d.received), "result": d.result,
                            "reason": d.reason, "replayed": d.replayed.map(format_rfc3339),
                            "bytes": d.payload.len(),
                        })
                    })
                    .collect();
                println!("{}", serde_json::Value::Array(v));
                return Ok(());
            }
            println!("id\treceived\tsource\tresult\tdelivery\treplayed\treason");
            for (id, d) in &rows {
                println!(
                    "{id}\t{}\t{}\t{}\t{}\t{}\t{}",
                    format_rfc3339(d.received),
                    d.source,
                    d.result,
                    d.delivery,
                    d.replayed.map_or("-".to_string(), format_rfc3339),
                    d.reason
                );
            }
            Ok(())
        }
        DlqCommand::Show { select } => {
            let rows = crate::admin::dlq_list(dir, &select.filter()?).map_err(Failure::runtime)?;
            let v: Vec<serde_json::Value> = rows
                .into_iter()
                .map(|(id, d)| {
                    let payload = serde_json::from_str::<serde_json::Value>(&d.payload)
                        .unwrap_or(serde_json::Value::String(d.payload.clone()));
                    serde_json::json!({
                        "id": id, "source": d.source, "delivery": d.delivery,
                        "received": format_rfc3339(d.received), "result": d.result,
                        "reason": d.reason, "replayed": d.replayed.map(format_rfc3339),
                        "headers": d.headers, "payload": payload,
                    })
                })
                .collect();
            let text = serde_json::to_string_pretty(&v).map_err(Failure::runtime)?;
            println!("{text}");
            Ok(())
        }
        DlqCommand::Replay {
            select,
            again,
            json,
        } => {
            let (done, skipped) = crate::admin::dlq_replay(loaded, &select.filter()?, again)
                .map_err(Failure::runtime)?;
            if json {
                let v = serde_json::json!({ "replayed": done, "skipped": skipped });
                println!("{v}");
                return Ok(());
            }
            for r in &done {
                println!(
                    "{}\t{}\t{}{}",
                    r.id,
                    r.source,
                    r.results.join(","),
                    r.reason
                        .as_deref()
                        .map_or(String::new(), |why| format!("\t{why}"))
                );
            }
            println!(
                "replayed {}, skipped {skipped} replayed before (--again replays them)",
                done.len()
            );
            Ok(())
        }
    }
}

fn rfc3339_arg(flag: &str, t: Option<String>) -> Result<Option<crate::event::TimeMs>, Failure> {
    t.map(|t| {
        crate::event::parse_rfc3339(&t).ok_or_else(|| {
            Failure::usage(anyhow::anyhow!(
                "{flag} {t:?} is not an RFC 3339 time, e.g. 2026-11-03T10:00:00Z"
            ))
        })
    })
    .transpose()
}

/// `relstat audit verify|export`.
fn audit_command(config: Option<&Path>, cmd: AuditCommand) -> Result<(), Failure> {
    let pubkey = |p: &Option<PathBuf>| -> Result<_, Failure> {
        p.as_deref()
            .map(crate::spool::keys::load_verifying)
            .transpose()
            .map_err(Failure::usage)
    };
    match cmd {
        AuditCommand::Verify {
            export: Some(file),
            key,
            json,
        } => {
            let key = pubkey(&key)?;
            let r = crate::audit::verify_export(&file, key.as_ref()).map_err(Failure::runtime)?;
            if json {
                println!("{}", serde_json::to_string(&r).map_err(Failure::runtime)?);
            } else {
                println!(
                    "rows: {}\nsignature: {}\ncheckpoint signature: {}",
                    r.rows, r.signature, r.checkpoint_signature
                );
            }
            match r.broken {
                Some(b) => Err(Failure::runtime(anyhow::anyhow!(
                    "{}: broken at line {}{}: {}",
                    file.display(),
                    b.line,
                    b.sequence
                        .map_or(String::new(), |s| format!(" (sequence {s})")),
                    b.problem
                ))),
                None => {
                    if !json {
                        println!("{}: ok", file.display());
                    }
                    Ok(())
                }
            }
        }
        AuditCommand::Verify {
            export: None,
            key,
            json,
        } => {
            let loaded = load_config(config)?;
            let key = match pubkey(&key)? {
                Some(k) => Some(k),
                None => match &loaded.config.spool.signing_key_file {
                    Some(p) => Some(
                        crate::spool::keys::load_signing(p)
                            .map_err(Failure::runtime)?
                            .verifying_key(),
                    ),
                    None => None,
                },
            };
            let dir = &loaded.config.agent.data_dir;
            let v = crate::admin::audit_verify(dir).map_err(Failure::runtime)?;
            let cp = &v.checkpoint;
            let sig = match (
                cp.signature.is_some(),
                key.as_ref().and_then(|k| cp.verify(k)),
            ) {
                (false, _) => "unsigned",
                (true, None) => "not checked (no key)",
                (true, Some(true)) => "valid",
                (true, Some(false)) => "invalid",
            };
            if json {
                let mut j = serde_json::to_value(&v).map_err(Failure::runtime)?;
                j["checkpoint_signature"] = sig.into();
                println!("{j}");
            } else {
                println!(
                    "checkpoint: {} at sequence {} ({}){}\ncheckpoint signature: {sig}\n\
                     rows: {}\nhead: sequence {} hash {}",
                    cp.reason,
                    cp.sequence,
                    crate::event::format_rfc3339(cp.time),
                    cp.rows
                        .map_or(String::new(), |n| format!(", {n} rows chained then")),
                    v.rows,
                    v.head_sequence,
                    v.head_hash
                );
            }
            if let Some(b) = v.broken {
                return Err(Failure::runtime(anyhow::anyhow!(
                    "the audit chain breaks at sequence {} (key {}, recorded {}): {}",
                    b.sequence,
                    if b.key.is_empty() { "-" } else { &b.key },
                    if b.recorded_at > 0 {
                        crate::event::format_rfc3339(b.recorded_at)
                    } else {
                        "-".into()
                    },
                    b.problem
                )));
            }
            if sig == "invalid" {
                return Err(Failure::runtime(anyhow::anyhow!(
                    "the checkpoint's signature does not verify with the site's key"
                )));
            }
            if !json {
                println!("ok");
            }
            Ok(())
        }
        AuditCommand::Export {
            since,
            until,
            environment,
            out,
        } => {
            let loaded = load_config(config)?;
            let select = crate::audit::Select {
                since: rfc3339_arg("--since", since)?,
                until: rfc3339_arg("--until", until)?,
                environment,
            };
            let r = crate::admin::audit_export(&loaded, &select, &out).map_err(Failure::runtime)?;
            eprintln!(
                "exported {} rows ({} bytes) to {}; {}",
                r.rows,
                r.bytes,
                out.display(),
                if r.signed {
                    "signed with the site key"
                } else {
                    "unsigned ([spool] signing_key_file is not set)"
                }
            );
            Ok(())
        }
    }
}

/// `relstat store check|repair`.
fn store_command(loaded: &Loaded, cmd: StoreCommand) -> Result<(), Failure> {
    let dir = &loaded.config.agent.data_dir;
    let store = crate::store::Store::open(dir).map_err(Failure::runtime)?;
    let repair = matches!(cmd, StoreCommand::Repair);
    let report = match cmd {
        StoreCommand::Check => store.check(),
        StoreCommand::Repair => store.repair(),
    }
    .map_err(Failure::runtime)?;
    let path = dir.join(crate::store::STORE_FILE);
    let mut out = String::new();
    if let Some(ok) = report.file_ok {
        out.push_str(if ok {
            "file: consistent\n"
        } else {
            "file: was inconsistent, repaired\n"
        });
    }
    for (table, rows) in &report.rows {
        out.push_str(&format!("{table}: {rows} records\n"));
    }
    for f in &report.findings {
        out.push_str(&format!(
            "{} {} key {}: {}\n",
            if repair { "quarantined" } else { "corrupt" },
            f.table,
            f.key(),
            f.error
        ));
    }
    if !report.quarantined.is_empty() {
        out.push_str(&format!(
            "quarantine: {} records kept aside (table, key, error):\n",
            report.quarantined.len()
        ));
        for q in &report.quarantined {
            out.push_str(&format!("  {} {}: {}\n", q.table, q.key, q.error));
        }
    }
    print!("{out}");
    if !repair && !report.findings.is_empty() {
        return Err(Failure::runtime(anyhow::anyhow!(
            "{}: {} undecodable records; stop the agent and run `relstat store repair` to move \
             them to the quarantine table (the agent also does it for the records it meets at \
             start)",
            path.display(),
            report.findings.len()
        )));
    }
    println!("{}: ok", path.display());
    Ok(())
}

/// `main`'s body: parse, dispatch, print the error chain, map to an exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match dispatch(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("relstat: {:#}", f.error);
            ExitCode::from(f.code)
        }
    }
}
