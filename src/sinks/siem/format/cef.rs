//! ArcSight CEF: `CEF:0|relstat|relstat|VERSION|RULE|message|SEVERITY|ext`.
//!
//! Escaping (ArcSight "Implementing ArcSight CEF"): in the header `\` and `|`
//! are backslash-escaped; in the extension `\` and `=` are, and newlines
//! become `\n` / `\r` (the header cannot hold a newline: one becomes a
//! space). Severity 0-10 from the syslog severity. Extension keys are CEF's
//! own where one fits (`rt`, `start`, `suser`, `dvchost`, `externalId`...),
//! `cs1`..`cs6` and `flexString1`/`2` with labels for the rest, and custom
//! keys (`relstatRelstatCommit`, `relstatRelstatChangeClass`: the guide's
//! VendorProductKey form) once those slots are taken.

use super::{FormatContext, escape_into, write_i64, write_u64};
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
    escape_into(ctx.version, out, header);
    out.push(b'|');
    escape_into(&a.rule, out, header);
    out.push(b'|');
    escape_into(&a.message, out, header);
    out.push(b'|');
    write_u64(u64::from(severity(a.severity)), out);
    out.extend_from_slice(b"|rt=");
    write_i64(a.detected_at, out);
    out.extend_from_slice(b" start=");
    write_i64(a.event_time, out);
    let mut ext = |key: &[u8], v: &str| {
        out.push(b' ');
        out.extend_from_slice(key);
        out.push(b'=');
        escape_into(v, out, extension);
    };
    ext(b"externalId", &a.event_id);
    ext(b"suser", &a.actor);
    ext(b"dvchost", &a.host);
    ext(b"cat", &a.rule);
    ext(b"msg", &a.message);
    ext(b"cs1Label", "release");
    ext(b"cs1", &a.release);
    ext(b"cs2Label", "service");
    ext(b"cs2", &a.service);
    ext(b"cs3Label", "environment");
    ext(b"cs3", &a.environment);
    ext(b"cs4Label", "transition");
    ext(b"cs4", a.from.as_deref().unwrap_or("-"));
    out.extend_from_slice(b" -> ");
    escape_into(&a.to, out, extension);
    let mut ext = |key: &[u8], v: &str| {
        out.push(b' ');
        out.extend_from_slice(key);
        out.push(b'=');
        escape_into(v, out, extension);
    };
    ext(b"cs5Label", "site");
    ext(b"cs5", &a.site);
    ext(b"cs6Label", "source");
    ext(b"cs6", &a.source);
    ext(b"flexString1Label", "actor_type");
    ext(b"flexString1", a.actor_type.as_str());
    if let Some(r) = &a.reason {
        ext(b"reason", r);
    }
    if let Some(v) = &a.version {
        ext(b"flexString2Label", "version");
        ext(b"flexString2", v);
    }
    // The dictionary's string slots are taken: custom keys, named as the
    // CEF guide asks (vendor, product, then the field).
    if let Some(v) = &a.commit {
        ext(b"relstatRelstatCommit", v);
    }
    if let Some(c) = a.change_class {
        ext(b"relstatRelstatChangeClass", c.as_str());
    }
    if let Some(v) = &a.approver {
        ext(b"relstatRelstatApprover", v);
    }
    if let Some(v) = &a.decision {
        ext(b"relstatRelstatDecision", v);
    }
    if let Some(n) = a.audit_sequence {
        ext(b"relstatRelstatAuditSequence", &n.to_string());
    }
    if let Some(v) = &a.audit_hash {
        ext(b"relstatRelstatAuditHash", v);
    }
}

/// Header fields: `\` and `|` escaped; a newline cannot be held, it becomes
/// a space.
fn header(c: u8) -> Option<&'static [u8]> {
    match c {
        b'\\' => Some(b"\\\\"),
        b'|' => Some(b"\\|"),
        b'\r' | b'\n' => Some(b" "),
        _ => None,
    }
}

/// Extension values: `\` and `=` escaped, newlines written `\n` and `\r`.
fn extension(c: u8) -> Option<&'static [u8]> {
    match c {
        b'\\' => Some(b"\\\\"),
        b'=' => Some(b"\\="),
        b'\n' => Some(b"\\n"),
        b'\r' => Some(b"\\r"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{nasty, render, transition};
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

    /// Version, commit and change class (transition records, findings
    /// about one event), escaped like any other value.
    #[test]
    fn golden_version_commit_change_class() {
        let got = render(SiemFormat::Cef, &transition());
        let want = "CEF:0|relstat|relstat|0.1.0|transition|r-1 moved in production: in_progress \
            -> deployed by jo|1|rt=1790000001500 start=1790000000000 externalId=e-1 \
            suser=jo\\=\"a\\\\b\" dvchost=web-1 cat=transition msg=r-1 moved in production: \
            in_progress -> deployed by jo cs1Label=release cs1=r-1]\"x\\\\ cs2Label=service \
            cs2=pay|ments\\=1 cs3Label=environment cs3=prod\\nuction cs4Label=transition \
            cs4=in_progress -> deployed cs5Label=site cs5=zürich cs6Label=source \
            cs6=deploy-log flexString1Label=actor_type flexString1=human reason=INC-7 \
            flexString2Label=version flexString2=1.2|3 \
            relstatRelstatCommit=ab\\=\"c]\\\\d\te\\nf relstatRelstatChangeClass=emergency";
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
