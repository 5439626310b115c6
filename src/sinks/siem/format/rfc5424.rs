//! RFC 5424: `<PRI>1 TIMESTAMP HOST relstat PROCID RULE [SD-ID field="value" ...] MSG`.
//!
//! Written by hand rather than with `syslog::Formatter5424`: that formatter
//! stamps the header with the current time (docs/events.md: the header is detected_at, the
//! time of detection, so a message resent after an outage keeps its time),
//! and its MSGID is a `u32` where we put the rule name. The structured data
//! escaping it would have done (`\`, `"`, `]` in PARAM-VALUE, RFC 5424
//! section 6.3.3) is three lines here. MSG is written without a BOM
//! (MSG-ANY): rsyslog and most SIEM parsers keep a BOM as part of the text.

use super::{FormatContext, for_each_field, with_rfc3339};
use crate::detect::AnomalyRef;

pub(super) fn write(ctx: &FormatContext, a: &AnomalyRef<'_>, out: &mut Vec<u8>) {
    let pri = u16::from(ctx.facility) * 8 + u16::from(a.severity.code());
    out.push(b'<');
    write_u64(u64::from(pri), out);
    out.extend_from_slice(b">1 ");
    with_rfc3339(a.detected_at, |t| out.extend_from_slice(t.as_bytes()));
    out.push(b' ');
    header_field(&a.host, 255, out);
    out.extend_from_slice(b" relstat ");
    write_u64(u64::from(ctx.procid), out);
    out.push(b' ');
    header_field(&a.rule, 32, out);
    out.extend_from_slice(b" [");
    out.extend_from_slice(ctx.sd_id.as_bytes());
    for_each_field(a, |name, value| {
        out.push(b' ');
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b"=\"");
        let v = value.as_bytes();
        let mut from = 0;
        for (i, &c) in v.iter().enumerate() {
            if matches!(c, b'\\' | b'"' | b']') {
                out.extend_from_slice(&v[from..i]);
                out.push(b'\\');
                from = i;
            }
        }
        out.extend_from_slice(&v[from..]);
        out.push(b'"');
    });
    out.extend_from_slice(b"] ");
    out.extend_from_slice(a.message.as_bytes());
}

/// Appends `v` in decimal.
pub(crate) fn write_u64(v: u64, out: &mut Vec<u8>) {
    let mut b = [0u8; 20];
    let mut i = b.len();
    let mut v = v;
    loop {
        i -= 1;
        b[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&b[i..]);
}

/// A header field: printable US-ASCII only, at most `max` characters, `-`
/// when empty (RFC 5424 section 6); anything else becomes `_`.
fn header_field(v: &str, max: usize, out: &mut Vec<u8>) {
    if v.is_empty() {
        out.push(b'-');
        return;
    }
    if v.len() <= max && v.bytes().all(|c| c.is_ascii_graphic()) {
        out.extend_from_slice(v.as_bytes());
        return;
    }
    for c in v.chars().take(max) {
        out.push(if c.is_ascii_graphic() { c as u8 } else { b'_' });
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{nasty, render, transition};
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

    /// Version, commit and change class (transition records, findings
    /// about one event), escaped like any other value.
    #[test]
    fn golden_version_commit_change_class() {
        let got = render(SiemFormat::Rfc5424, &transition());
        let want = "<86>1 2026-09-21T14:13:21.500Z web-1 relstat 4242 transition [relstat@32473 \
            rule=\"transition\" severity=\"info\" release=\"r-1\\]\\\"x\\\\\" \
            service=\"pay|ments=1\" environment=\"prod\nuction\" site=\"zürich\" \
            from=\"in_progress\" to=\"deployed\" actor=\"jo=\\\"a\\\\b\\\"\" \
            actor_type=\"human\" source=\"deploy-log\" event_id=\"e-1\" \
            event_time=\"2026-09-21T14:13:20.000Z\" detected_at=\"2026-09-21T14:13:21.500Z\" \
            reason=\"INC-7\" version=\"1.2|3\" commit=\"ab=\\\"c\\]\\\\d\te\nf\" \
            change_class=\"emergency\" host=\"web-1\"] r-1 moved in production: in_progress -> \
            deployed by jo";
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
