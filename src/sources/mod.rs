//! Sources: everything that turns outside input into canonical events.
//!
//! [`line`] parses one log line (NDJSON, logfmt, regex) into an event with a
//! source's `fields`, `status_map` and `defaults`; the file source tails files.

pub mod line;
