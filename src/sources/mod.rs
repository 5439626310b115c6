//! Sources: everything that turns outside input into canonical events.
//!
//! [`line`](mod@line) parses one log line (NDJSON, logfmt, regex) into an event
//! with a source's `fields`, `status_map` and `defaults`, reading times with
//! [`timefmt`]; the file source tails files.

pub mod line;
pub mod timefmt;
