//! `json`: one JSON object per event, the record's own field names (the
//! same object the outbox and spool bundles hold), times as RFC 3339.

use super::{escape_into, with_rfc3339};
use crate::detect::AnomalyRef;

pub(super) fn write(a: &AnomalyRef<'_>, out: &mut Vec<u8>) {
    // Keys in sorted order, as a serde_json map writes them (consumers and
    // the golden test rely on the byte-identical object).
    let mut first = true;
    let mut field = |k: &str, v: &str| {
        out.extend_from_slice(if first { b"{\"" } else { b",\"" });
        first = false;
        out.extend_from_slice(k.as_bytes());
        // The one number: serde writes it unquoted.
        if k == "audit_sequence" {
            out.extend_from_slice(b"\":");
            out.extend_from_slice(v.as_bytes());
            return;
        }
        out.extend_from_slice(b"\":\"");
        escape_into(v, out, escape);
        out.push(b'"');
    };
    field("actor", &a.actor);
    field("actor_type", a.actor_type.as_str());
    if let Some(v) = &a.approver {
        field("approver", v);
    }
    if let Some(v) = &a.audit_hash {
        field("audit_hash", v);
    }
    if let Some(n) = a.audit_sequence {
        field("audit_sequence", &n.to_string());
    }
    if let Some(c) = a.change_class {
        field("change_class", c.as_str());
    }
    if let Some(v) = &a.commit {
        field("commit", v);
    }
    if let Some(v) = &a.decision {
        field("decision", v);
    }
    with_rfc3339(a.detected_at, |t| field("detected_at", t));
    field("environment", &a.environment);
    field("event_id", &a.event_id);
    with_rfc3339(a.event_time, |t| field("event_time", t));
    if let Some(v) = &a.from {
        field("from", v);
    }
    field("host", &a.host);
    field("message", &a.message);
    if let Some(v) = &a.reason {
        field("reason", v);
    }
    field("release", &a.release);
    field("rule", &a.rule);
    field("service", &a.service);
    field("severity", a.severity.as_str());
    field("site", &a.site);
    field("source", &a.source);
    field("to", &a.to);
    if let Some(v) = &a.version {
        field("version", v);
    }
    out.push(b'}');
}

/// JSON string escapes as serde_json writes them: `"` and `\\`, the short
/// forms of five control characters, `\u00XX` for the other ones.
fn escape(c: u8) -> Option<&'static [u8]> {
    /// `\u0000`..`\u001f`, lowercase hex like serde_json.
    const CONTROL: [[u8; 6]; 32] = {
        let hex = b"0123456789abcdef";
        let mut t = [[0u8; 6]; 32];
        let mut i = 0;
        while i < 32 {
            t[i] = [b'\\', b'u', b'0', b'0', hex[i >> 4], hex[i & 15]];
            i += 1;
        }
        t
    };
    match c {
        b'"' => Some(b"\\\""),
        b'\\' => Some(b"\\\\"),
        b'\n' => Some(b"\\n"),
        b'\r' => Some(b"\\r"),
        b'\t' => Some(b"\\t"),
        0x08 => Some(b"\\b"),
        0x0c => Some(b"\\f"),
        0..0x20 => Some(&CONTROL[c as usize]),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{nasty, render, transition};
    use crate::config::SiemFormat;

    #[test]
    fn golden() {
        let got = render(SiemFormat::Json, &nasty());
        let want = r#"{"actor":"jo=\"a\\b\"","actor_type":"human","detected_at":"2026-09-21T14:13:21.500Z","environment":"prod\nuction","event_id":"e-1","event_time":"2026-09-21T14:13:20.000Z","from":"complete","host":"web-1","message":"complete -> deployed | not allowed\nsecond line","reason":"a|b\\c\r\nd]","release":"r-1]\"x\\","rule":"invalid_transition","service":"pay|ments=1","severity":"warning","site":"zürich","source":"deploy-log","to":"deployed"}"#;
        assert_eq!(got, want);
        let v: serde_json::Value = serde_json::from_str(&got).unwrap();
        assert_eq!(v["site"], "zürich");
    }

    /// Version, commit and change class (transition records, findings
    /// about one event), escaped like any other value.
    #[test]
    fn golden_version_commit_change_class() {
        let got = render(SiemFormat::Json, &transition());
        let want = "{\"actor\":\"jo=\\\"a\\\\b\\\"\",\"actor_type\":\"human\",\"change_class\":\"emergency\",\"commit\":\"ab=\\\"c]\\\\d\\te\\nf\",\"detected_at\":\"2026-09-21T14:13:21.500Z\",\"environment\":\"prod\\nuction\",\"event_id\":\"e-1\",\"event_time\":\"2026-09-21T14:13:20.000Z\",\"from\":\"in_progress\",\"host\":\"web-1\",\"message\":\"r-1 \
            moved in production: in_progress -> deployed by \
            jo\",\"reason\":\"INC-7\",\"release\":\"r-1]\\\"x\\\\\",\"rule\":\"transition\",\"service\":\"pay|ments=1\",\"severity\":\"info\",\"site\":\"zürich\",\"source\":\"deploy-log\",\"to\":\"deployed\",\"version\":\"1.2|3\"}";
        assert_eq!(got, want);
    }

    proptest::proptest! {
        /// Byte for byte the object serde_json writes for the same fields
        /// (a sorted map of strings), whatever the values hold.
        #[test]
        fn same_bytes_as_serde_json(
            release in "\\PC*",
            actor in "[\\x00-\\x7f]{0,12}",
            reason in proptest::option::of("[\\x00-\\x20\"\\\\é€😀a-z]{0,12}"),
            version in proptest::option::of(".{0,8}"),
            commit in proptest::option::of("[\\x00-\\x20\"\\\\a-f0-9]{0,12}"),
            emergency in proptest::option::of(proptest::bool::ANY),
        ) {
            let mut a = nasty();
            a.release = release;
            a.actor = actor;
            a.reason = reason;
            a.version = version;
            a.commit = commit;
            a.change_class = emergency.map(|e| {
                if e {
                    crate::event::ChangeClass::Emergency
                } else {
                    crate::event::ChangeClass::Normal
                }
            });
            let got = render(SiemFormat::Json, &a);
            let r = crate::detect::AnomalyRef::from(&a);
            let mut m = serde_json::Map::new();
            super::super::for_each_field(&r, |k, v| {
                m.insert(k.into(), v.into());
            });
            m.insert("message".into(), a.message.clone().into());
            proptest::prop_assert_eq!(got, serde_json::to_string(&m).unwrap());
        }
    }
}
