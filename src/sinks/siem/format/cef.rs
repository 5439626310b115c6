//! ArcSight CEF: `CEF:0|relstat|relstat|VERSION|RULE|message|SEVERITY|ext`.
//!
//! Escaping (ArcSight "Implementing ArcSight CEF"): in the header `\` and `|`
//! are backslash-escaped; in the extension `\` and `=` are, and newlines
//! become `\n` / `\r` (the header cannot hold a newline: one becomes a
//! space). Severity 0-10 from the syslog severity. Extension keys are CEF's
//! own where one fits (`rt`, `start`, `suser`, `dvchost`, `externalId`...),
//! `cs1`..`cs6` with labels for the rest.

use super::FormatContext;
use crate::config::Severity;
use crate::detect::AnomalyRef;

/// CEF severity: 10 is the most severe.
pub fn severity(s: Severity) -> u8 {
    match s {
        Severity::Emergency | Severity::Alert => 10,
        Severity::Critical => 9,
        Severity::Error => 7,
        Severity::Warning => 5,
        Severity::Notice => 3,
        Severity::Info => 1,
        Severity::Debug => 0,
    }
}

pub(super) fn write(ctx: &FormatContext, a: &AnomalyRef<'_>, out: &mut Vec<u8>) {
    out.extend_from_slice(b"CEF:0|relstat|relstat|");
    header(ctx.version, out);
    out.push(b'|');
    header(&a.rule, out);
    out.push(b'|');
    header(&a.message, out);
    out.extend_from_slice(format!("|{}|", severity(a.severity)).as_bytes());
    let mut ext: Vec<(&str, String)> = vec![
        ("rt", a.detected_at.to_string()),
        ("start", a.event_time.to_string()),
        ("externalId", a.event_id.to_string()),
        ("suser", a.actor.to_string()),
        ("dvchost", a.host.to_string()),
        ("cat", a.rule.to_string()),
        ("msg", a.message.to_string()),
        ("cs1Label", "release".into()),
        ("cs1", a.release.to_string()),
        ("cs2Label", "service".into()),
        ("cs2", a.service.to_string()),
        ("cs3Label", "environment".into()),
        ("cs3", a.environment.to_string()),
        ("cs4Label", "transition".into()),
        (
            "cs4",
            format!("{} -> {}", a.from.as_deref().unwrap_or("-"), a.to),
        ),
        ("cs5Label", "site".into()),
        ("cs5", a.site.to_string()),
        ("cs6Label", "source".into()),
        ("cs6", a.source.to_string()),
        ("flexString1Label", "actor_type".into()),
        ("flexString1", a.actor_type.as_str().into()),
    ];
    if let Some(r) = &a.reason {
        ext.push(("reason", r.to_string()));
    }
    if let Some(v) = &a.version {
        ext.push(("flexString2Label", "version".into()));
        ext.push(("flexString2", v.to_string()));
    }
    for (i, (k, v)) in ext.iter().enumerate() {
        if i > 0 {
            out.push(b' ');
        }
        out.extend_from_slice(k.as_bytes());
        out.push(b'=');
        extension(v, out);
    }
}

fn header(v: &str, out: &mut Vec<u8>) {
    for c in v.chars() {
        match c {
            '\\' => out.extend_from_slice(b"\\\\"),
            '|' => out.extend_from_slice(b"\\|"),
            '\r' | '\n' => out.push(b' '),
            c => out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
        }
    }
}

fn extension(v: &str, out: &mut Vec<u8>) {
    for c in v.chars() {
        match c {
            '\\' => out.extend_from_slice(b"\\\\"),
            '=' => out.extend_from_slice(b"\\="),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
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
        let got = render(SiemFormat::Cef, &nasty());
        let want = "CEF:0|relstat|relstat|0.1.0|invalid_transition|complete -> deployed \\| not \
            allowed second line|5|rt=1790000001500 start=1790000000000 externalId=e-1 \
            suser=jo\\=\"a\\\\b\" dvchost=web-1 cat=invalid_transition msg=complete -> deployed | \
            not allowed\\nsecond line cs1Label=release cs1=r-1]\"x\\\\ cs2Label=service \
            cs2=pay|ments\\=1 cs3Label=environment cs3=prod\\nuction cs4Label=transition \
            cs4=complete -> deployed cs5Label=site cs5=zürich cs6Label=source cs6=deploy-log \
            flexString1Label=actor_type flexString1=human reason=a|b\\\\c\\r\\nd]";
        assert_eq!(got, want);
    }

    #[test]
    fn severities() {
        use crate::config::Severity::*;
        let got: Vec<u8> = [
            Emergency, Alert, Critical, Error, Warning, Notice, Info, Debug,
        ]
        .into_iter()
        .map(super::severity)
        .collect();
        assert_eq!(got, [10, 10, 9, 7, 5, 3, 1, 0]);
    }
}
