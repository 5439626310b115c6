//! RFC 5424: `<PRI>1 TIMESTAMP HOST relstat PROCID RULE [SD-ID field="value" ...] MSG`.
//!
//! Written by hand rather than with `syslog::Formatter5424`: that formatter
//! stamps the header with the current time (SPEC 6 wants detected_at, the
//! time of detection, so a message resent after an outage keeps its time),
//! and its MSGID is a `u32` where we put the rule name. The structured data
//! escaping it would have done (`\`, `"`, `]` in PARAM-VALUE, RFC 5424
//! section 6.3.3) is three lines here. MSG is written without a BOM
//! (MSG-ANY): rsyslog and most SIEM parsers keep a BOM as part of the text.

use super::{FormatContext, fields};
use crate::detect::Anomaly;
use crate::event::format_rfc3339;

pub(super) fn write(ctx: &FormatContext, a: &Anomaly, out: &mut Vec<u8>) {
    use std::io::Write;
    let pri = u16::from(ctx.facility) * 8 + u16::from(a.severity.code());
    let _ = write!(out, "<{pri}>1 {} ", format_rfc3339(a.detected_at));
    header_field(&a.host, 255, out);
    let _ = write!(out, " relstat {} ", ctx.procid);
    header_field(&a.rule, 32, out);
    out.extend_from_slice(b" [");
    out.extend_from_slice(ctx.sd_id.as_bytes());
    for (name, value) in fields(a) {
        out.push(b' ');
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b"=\"");
        for c in value.bytes() {
            if matches!(c, b'\\' | b'"' | b']') {
                out.push(b'\\');
            }
            out.push(c);
        }
        out.push(b'"');
    }
    out.extend_from_slice(b"] ");
    out.extend_from_slice(a.message.as_bytes());
}

/// A header field: printable US-ASCII only, at most `max` characters, `-`
/// when empty (RFC 5424 section 6); anything else becomes `_`.
fn header_field(v: &str, max: usize, out: &mut Vec<u8>) {
    if v.is_empty() {
        out.push(b'-');
        return;
    }
    for c in v.chars().take(max) {
        out.push(if c.is_ascii_graphic() { c as u8 } else { b'_' });
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{nasty, render};
    use crate::config::SiemFormat;

    #[test]
    fn golden() {
        let got = render(SiemFormat::Rfc5424, &nasty());
        let want = "<84>1 2026-09-21T14:13:21.500Z web-1 relstat 4242 invalid_transition \
            [relstat@32473 rule=\"invalid_transition\" severity=\"warning\" \
            release=\"r-1\\]\\\"x\\\\\" service=\"pay|ments=1\" environment=\"prod\nuction\" \
            site=\"zürich\" from=\"complete\" to=\"deployed\" actor=\"jo=\\\"a\\\\b\\\"\" \
            actor_type=\"human\" source=\"deploy-log\" event_id=\"e-1\" \
            event_time=\"2026-09-21T14:13:20.000Z\" detected_at=\"2026-09-21T14:13:21.500Z\" \
            reason=\"a|b\\\\c\r\nd\\]\" host=\"web-1\"] complete -> deployed | not allowed\n\
            second line";
        assert_eq!(got, want);
    }

    #[test]
    fn header_fields_are_printable_ascii() {
        let mut a = nasty();
        a.host = "wéb 1".into();
        a.rule = String::new();
        let got = render(SiemFormat::Rfc5424, &a);
        assert!(
            got.starts_with("<84>1 2026-09-21T14:13:21.500Z w_b_1 relstat 4242 - ["),
            "{got}"
        );
    }
}
