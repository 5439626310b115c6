//! QRadar LEEF 2.0: `LEEF:2.0|relstat|relstat|VERSION|RULE|x09|k=v<TAB>k=v...`.
//!
//! The delimiter is declared in the header (tab, written `x09` as LEEF 2.0
//! allows) and `devTime` carries detected_at as epoch milliseconds
//! (`devTimeFormat` is left out: QRadar reads epoch milliseconds without
//! one). LEEF has no escape for the delimiter or newlines, so tabs, CR and LF
//! in values become spaces; `|` in header fields is backslash-escaped.

use super::{FormatContext, escape_into, for_each_field, write_i64, write_u64};
use crate::detect::AnomalyRef;

pub(super) fn write(ctx: &FormatContext, a: &AnomalyRef<'_>, out: &mut Vec<u8>) {
    out.extend_from_slice(b"LEEF:2.0|relstat|relstat|");
    escape_into(ctx.version, out, header);
    out.push(b'|');
    escape_into(&a.rule, out, header);
    out.extend_from_slice(b"|x09|devTime=");
    write_i64(a.detected_at, out);
    out.extend_from_slice(b"\tcat=");
    escape_into(&a.rule, out, value);
    out.extend_from_slice(b"\tsev=");
    write_u64(u64::from(super::cef::severity(a.severity)), out);
    out.extend_from_slice(b"\tusrName=");
    escape_into(&a.actor, out, value);
    for_each_field(a, |k, v| {
        if k != "rule" {
            out.push(b'\t');
            out.extend_from_slice(k.as_bytes());
            out.push(b'=');
            escape_into(v, out, value);
        }
    });
    out.extend_from_slice(b"\tmsg=");
    escape_into(&a.message, out, value);
}

/// Attribute values: LEEF has no escape for the delimiter or newlines; each
/// becomes a space.
fn value(c: u8) -> Option<&'static [u8]> {
    match c {
        b'\t' | b'\r' | b'\n' => Some(b" "),
        _ => None,
    }
}

/// Header fields: `\` and `|` escaped, tab and newlines become spaces.
fn header(c: u8) -> Option<&'static [u8]> {
    match c {
        b'\\' => Some(b"\\\\"),
        b'|' => Some(b"\\|"),
        b'\t' | b'\r' | b'\n' => Some(b" "),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{nasty, render, transition};
    use crate::config::SiemFormat;

    #[test]
    fn golden() {
        let got = render(SiemFormat::Leef, &nasty());
        let want = "LEEF:2.0|relstat|relstat|0.1.0|invalid_transition|x09|devTime=1790000001500\t\
            cat=invalid_transition\tsev=5\tusrName=jo=\"a\\b\"\tseverity=warning\t\
            release=r-1]\"x\\\tservice=pay|ments=1\tenvironment=prod uction\tsite=zürich\t\
            from=complete\tto=deployed\tactor=jo=\"a\\b\"\tactor_type=human\tsource=deploy-log\t\
            event_id=e-1\tevent_time=2026-09-21T14:13:20.000Z\t\
            detected_at=2026-09-21T14:13:21.500Z\treason=a|b\\c  d]\thost=web-1\t\
            msg=complete -> deployed | not allowed second line";
        assert_eq!(got, want);
    }

    /// Version, commit and change class (transition records, findings
    /// about one event), escaped like any other value.
    #[test]
    fn golden_version_commit_change_class() {
        let got = render(SiemFormat::Leef, &transition());
        let want = "LEEF:2.0|relstat|relstat|0.1.0|transition|x09|devTime=1790000001500\tcat=transition\tsev=1\tusrName=jo=\"a\\b\"\tseverity=info\trelease=r-1]\"x\\\tservice=pay|ments=1\tenvironment=prod \
            uction\tsite=zürich\tfrom=in_progress\tto=deployed\tactor=jo=\"a\\b\"\tactor_type=human\tsource=deploy-log\tevent_id=e-1\tevent_time=2026-09-21T14:13:20.000Z\tdetected_at=2026-09-21T14:13:21.500Z\treason=INC-7\tversion=1.2|3\tcommit=ab=\"c]\\d \
            e f\tchange_class=emergency\thost=web-1\tmsg=r-1 moved in production: in_progress \
            -> deployed by jo";
        assert_eq!(got, want);
    }
}
