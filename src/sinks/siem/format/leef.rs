//! QRadar LEEF 2.0: `LEEF:2.0|relstat|relstat|VERSION|RULE|x09|k=v<TAB>k=v...`.
//!
//! The delimiter is declared in the header (tab, written `x09` as LEEF 2.0
//! allows) and `devTime` carries detected_at as epoch milliseconds
//! (`devTimeFormat` is left out: QRadar reads epoch milliseconds without
//! one). LEEF has no escape for the delimiter or newlines, so tabs, CR and LF
//! in values become spaces; `|` in header fields is backslash-escaped.

use super::FormatContext;
use crate::detect::AnomalyRef;

pub(super) fn write(ctx: &FormatContext, a: &AnomalyRef<'_>, out: &mut Vec<u8>) {
    out.extend_from_slice(b"LEEF:2.0|relstat|relstat|");
    header(ctx.version, out);
    out.push(b'|');
    header(&a.rule, out);
    out.extend_from_slice(b"|x09|");
    let mut attrs: Vec<(&str, String)> = vec![
        ("devTime", a.detected_at.to_string()),
        ("cat", a.rule.to_string()),
        ("sev", super::cef::severity(a.severity).to_string()),
        ("usrName", a.actor.to_string()),
    ];
    for (k, v) in super::fields(a) {
        if k != "rule" {
            attrs.push((k, v));
        }
    }
    attrs.push(("msg", a.message.to_string()));
    for (i, (k, v)) in attrs.iter().enumerate() {
        if i > 0 {
            out.push(b'\t');
        }
        out.extend_from_slice(k.as_bytes());
        out.push(b'=');
        for c in v.chars() {
            match c {
                '\t' | '\r' | '\n' => out.push(b' '),
                c => out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
            }
        }
    }
}

fn header(v: &str, out: &mut Vec<u8>) {
    for c in v.chars() {
        match c {
            '\\' => out.extend_from_slice(b"\\\\"),
            '|' => out.extend_from_slice(b"\\|"),
            '\t' | '\r' | '\n' => out.push(b' '),
            c => out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{nasty, render};
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
}
