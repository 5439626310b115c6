//! SIEM formats (docs/events.md): one [`Anomaly`] record to the bytes of one
//! message, applied when sending (the outbox keeps structured records so a
//! relay can re-format). Each format escapes what its receivers would
//! otherwise split on; the golden tests show every escape.

mod cef;
mod json;
mod leef;
mod rfc5424;

pub(crate) use rfc5424::write_u64;

use crate::config::SiemFormat;
use crate::detect::{Anomaly, AnomalyRef};

/// What a formatter needs besides the record.
#[derive(Debug, Clone)]
pub struct FormatContext {
    pub format: SiemFormat,
    /// Syslog facility number (authpriv = 10).
    pub facility: u8,
    /// RFC 5424 SD-ID, e.g. `relstat@32473`.
    pub sd_id: String,
    /// PROCID in the syslog header.
    pub procid: u32,
    /// relstat's version, in CEF and LEEF headers.
    pub version: &'static str,
}

impl FormatContext {
    pub fn new(format: SiemFormat, facility: &str, sd_id: &str) -> Self {
        Self {
            format,
            facility: facility_code(facility).unwrap_or(10),
            sd_id: sd_id.to_string(),
            procid: std::process::id(),
            version: env!("CARGO_PKG_VERSION"),
        }
    }

    /// Appends the message for `a` to `out` (no framing).
    pub fn write(&self, a: &Anomaly, out: &mut Vec<u8>) {
        self.write_ref(&AnomalyRef::from(a), out);
    }

    /// [`FormatContext::write`] for a borrowed record (as the forwarder
    /// decodes them from the outbox).
    pub fn write_ref(&self, a: &AnomalyRef<'_>, out: &mut Vec<u8>) {
        match self.format {
            SiemFormat::Rfc5424 => rfc5424::write(self, a, out),
            SiemFormat::Cef => cef::write(self, a, out),
            SiemFormat::Leef => leef::write(self, a, out),
            SiemFormat::Json => json::write(a, out),
        }
    }
}

/// The syslog facilities by number (RFC 5424 table 1): every name `[siem]
/// facility` may give (check-config reads this list).
pub const FACILITIES: [&str; 24] = [
    "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron", "authpriv",
    "ftp", "ntp", "audit", "alert", "clock", "local0", "local1", "local2", "local3", "local4",
    "local5", "local6", "local7",
];

/// The syslog facility number of a name (RFC 5424 table 1).
pub fn facility_code(name: &str) -> Option<u8> {
    FACILITIES.iter().position(|n| *n == name).map(|i| i as u8)
}

/// Calls `f(name, value)` for the docs/events.md fields in their documented
/// order; absent optional fields are left out. Nothing is allocated (this
/// runs for every event sent): the two times are formatted on the stack.
pub(crate) fn for_each_field(a: &AnomalyRef<'_>, mut f: impl FnMut(&'static str, &str)) {
    f("rule", &a.rule);
    f("severity", a.severity.as_str());
    f("release", &a.release);
    f("service", &a.service);
    f("environment", &a.environment);
    f("site", &a.site);
    if let Some(v) = &a.from {
        f("from", v);
    }
    f("to", &a.to);
    f("actor", &a.actor);
    f("actor_type", a.actor_type.as_str());
    f("source", &a.source);
    f("event_id", &a.event_id);
    with_rfc3339(a.event_time, |t| f("event_time", t));
    with_rfc3339(a.detected_at, |t| f("detected_at", t));
    if let Some(v) = &a.reason {
        f("reason", v);
    }
    if let Some(v) = &a.version {
        f("version", v);
    }
    if let Some(v) = &a.commit {
        f("commit", v);
    }
    if let Some(c) = a.change_class {
        f("change_class", c.as_str());
    }
    if let Some(v) = &a.approver {
        f("approver", v);
    }
    if let Some(v) = &a.decision {
        f("decision", v);
    }
    if let Some(n) = a.audit_sequence {
        f("audit_sequence", &n.to_string());
    }
    if let Some(v) = &a.audit_hash {
        f("audit_hash", v);
    }
    f("host", &a.host);
}

/// Appends `v` to `out`, each byte that `esc` maps replaced by its
/// replacement; the runs between are copied whole. Every byte a format
/// escapes is ASCII, so multi-byte UTF-8 sequences pass through untouched.
/// Nothing is allocated (cef, leef and json run this for every field sent).
#[inline]
pub(crate) fn escape_into(v: &str, out: &mut Vec<u8>, esc: impl Fn(u8) -> Option<&'static [u8]>) {
    let b = v.as_bytes();
    let mut from = 0;
    for (i, &c) in b.iter().enumerate() {
        if let Some(r) = esc(c) {
            out.extend_from_slice(&b[from..i]);
            out.extend_from_slice(r);
            from = i + 1;
        }
    }
    out.extend_from_slice(&b[from..]);
}

/// Appends `v` in decimal, with its sign.
pub(crate) fn write_i64(v: i64, out: &mut Vec<u8>) {
    if v < 0 {
        out.push(b'-');
    }
    write_u64(v.unsigned_abs(), out);
}

/// Calls `f` with `t` as RFC 3339, formatted on the stack when it can be.
pub(crate) fn with_rfc3339<R>(t: crate::event::TimeMs, f: impl FnOnce(&str) -> R) -> R {
    match crate::event::rfc3339_bytes(t) {
        Some(b) => f(std::str::from_utf8(&b).unwrap_or_default()),
        None => f(&crate::event::format_rfc3339(t)),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::Severity;
    use crate::event::ActorType;

    /// A record whose values need escaping in every format.
    pub(crate) fn nasty() -> Anomaly {
        Anomaly {
            rule: "invalid_transition".into(),
            severity: Severity::Warning,
            release: "r-1]\"x\\".into(),
            service: "pay|ments=1".into(),
            environment: "prod\nuction".into(),
            site: "zürich".into(),
            from: Some("complete".into()),
            to: "deployed".into(),
            actor: "jo=\"a\\b\"".into(),
            actor_type: ActorType::Human,
            source: "deploy-log".into(),
            event_id: "e-1".into(),
            event_time: 1_790_000_000_000,
            detected_at: 1_790_000_001_500,
            reason: Some("a|b\\c\r\nd]".into()),
            version: None,
            commit: None,
            change_class: None,
            approver: None,
            decision: None,
            audit_sequence: None,
            audit_hash: None,
            host: "web-1".into(),
            message: "complete -> deployed | not allowed\nsecond line".into(),
        }
    }

    /// A transition record carrying version, commit and change class, the
    /// commit needing escapes in every format.
    pub(crate) fn transition() -> Anomaly {
        Anomaly {
            rule: "transition".into(),
            severity: Severity::Info,
            from: Some("in_progress".into()),
            reason: Some("INC-7".into()),
            version: Some("1.2|3".into()),
            commit: Some("ab=\"c]\\d\te\nf".into()),
            change_class: Some(crate::event::ChangeClass::Emergency),
            message: "r-1 moved in production: in_progress -> deployed by jo".into(),
            ..nasty()
        }
    }

    pub(crate) fn ctx(f: SiemFormat) -> FormatContext {
        let mut c = FormatContext::new(f, "authpriv", "relstat@32473");
        c.procid = 4242;
        c.version = "0.1.0";
        c
    }

    pub(crate) fn render(f: SiemFormat, a: &Anomaly) -> String {
        let mut out = Vec::new();
        ctx(f).write(a, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn facility_codes() {
        assert_eq!(facility_code("kern"), Some(0));
        assert_eq!(facility_code("authpriv"), Some(10));
        assert_eq!(facility_code("local7"), Some(23));
        assert_eq!(facility_code("nope"), None);
    }

    /// The `gate_bypass` record docs/events.md renders in every format.
    fn documented() -> Anomaly {
        Anomaly {
            rule: "gate_bypass".into(),
            severity: Severity::Critical,
            release: "2026.11.16".into(),
            service: "payments".into(),
            environment: "production".into(),
            site: "dc-east".into(),
            from: Some("in_progress".into()),
            to: "deployed".into(),
            actor: "jdoe".into(),
            actor_type: ActorType::Human,
            source: "deploy-log".into(),
            event_id: "deploy-7781".into(),
            event_time: 1_794_819_600_000,
            detected_at: 1_794_819_725_000,
            reason: None,
            version: Some("2026.11.16".into()),
            commit: None,
            change_class: None,
            approver: None,
            decision: None,
            audit_sequence: None,
            audit_hash: None,
            host: "web-1".into(),
            message: "production deploy of 2026.11.16/payments by jdoe without prior approval \
                      (no approval from jira)"
                .into(),
        }
    }

    /// The transition record docs/events.md renders in every format: what
    /// a relay needs to judge the emergency path and `skipped_stage`.
    fn documented_transition() -> Anomaly {
        Anomaly {
            rule: "transition".into(),
            severity: Severity::Info,
            actor: "deploy-bot".into(),
            actor_type: ActorType::Automation,
            event_id: "deploy-7790".into(),
            event_time: 1_794_823_200_000,
            detected_at: 1_794_823_201_000,
            reason: Some("INC-4711 card payments failing".into()),
            commit: Some("9f3c2e1".into()),
            change_class: Some(crate::event::ChangeClass::Emergency),
            message: "2026.11.16/payments moved in production: in_progress -> deployed by \
                      deploy-bot"
                .into(),
            ..documented()
        }
    }

    /// docs/events.md shows what the formats really write.
    #[test]
    fn the_examples_in_docs_events_md_are_real_output() {
        let doc = include_str!("../../../../docs/events.md");
        let mut missing = Vec::new();
        for f in [
            SiemFormat::Rfc5424,
            SiemFormat::Cef,
            SiemFormat::Leef,
            SiemFormat::Json,
        ] {
            for rec in [documented(), documented_transition()] {
                let line = render(f, &rec);
                if !doc.contains(&format!("\n{line}\n")) {
                    missing.push(format!("{f:?}:\n{line}"));
                }
            }
        }
        assert!(
            missing.is_empty(),
            "docs/events.md lacks these examples:\n{}",
            missing.join("\n")
        );
    }

    /// A gate_bypass about a decision carries its approver and decision in
    /// every format (escaped like any field).
    #[test]
    fn gate_bypass_records_carry_the_approver_and_the_decision() {
        let mut a = documented();
        a.approver = Some("bob=\"b|\"".into());
        a.decision = Some("revoked".into());
        let want = [
            (
                SiemFormat::Rfc5424,
                r#"approver="bob=\"b|\"" decision="revoked" host="#,
            ),
            (
                SiemFormat::Cef,
                r#"relstatRelstatApprover=bob\="b|" relstatRelstatDecision=revoked"#,
            ),
            (
                SiemFormat::Leef,
                "approver=bob=\"b|\"\tdecision=revoked\thost=",
            ),
            (SiemFormat::Json, r#""approver":"bob=\"b|\"","#),
            (SiemFormat::Json, r#""decision":"revoked","detected_at""#),
        ];
        for (f, part) in want {
            let line = render(f, &a);
            assert!(line.contains(part), "{f:?}: {part}\n{line}");
        }
        for f in [
            SiemFormat::Rfc5424,
            SiemFormat::Cef,
            SiemFormat::Leef,
            SiemFormat::Json,
        ] {
            assert!(!render(f, &documented()).contains("approver"), "{f:?}");
        }
    }

    /// The audit chain's `anchor` record carries its sequence and head hash
    /// in every format (the sequence a number in JSON).
    #[test]
    fn anchor_records_carry_the_sequence_and_the_head_hash() {
        let head = crate::store::audit::Head {
            sequence: 4242,
            hash: [0xab; 32],
        };
        let a = crate::store::audit::anchor_record(head, "web-1", "dc-east", 1_794_819_725_000);
        let h = "ab".repeat(32);
        let want = [
            (
                SiemFormat::Rfc5424,
                "relstat 4242 anchor [relstat@32473 rule=\"anchor\" severity=\"info\"".to_string(),
            ),
            (
                SiemFormat::Rfc5424,
                format!("audit_sequence=\"4242\" audit_hash=\"{h}\" host=\"web-1\"]"),
            ),
            (
                SiemFormat::Cef,
                format!("relstatRelstatAuditSequence=4242 relstatRelstatAuditHash={h}"),
            ),
            (SiemFormat::Cef, "CEF:0|relstat|relstat|".to_string()),
            (
                SiemFormat::Leef,
                format!("audit_sequence=4242\taudit_hash={h}\thost=web-1"),
            ),
            (
                SiemFormat::Json,
                format!("\"audit_hash\":\"{h}\",\"audit_sequence\":4242,"),
            ),
        ];
        for (f, part) in want {
            let line = render(f, &a);
            assert!(line.contains(&part), "{f:?}: {part}\n{line}");
        }
        let json: serde_json::Value = serde_json::from_str(&render(SiemFormat::Json, &a)).unwrap();
        assert_eq!(json["rule"], "anchor");
        assert_eq!(json["audit_sequence"], 4242);
        // the outbox's own encoding round-trips it
        let back: Anomaly = serde_json::from_slice(&serde_json::to_vec(&a).unwrap()).unwrap();
        assert_eq!(back, a);
    }
}
