//! `json`: one JSON object per event, the record's own field names (the
//! same object the outbox and spool bundles hold), times as RFC 3339.

use crate::detect::AnomalyRef;

pub(super) fn write(a: &AnomalyRef<'_>, out: &mut Vec<u8>) {
    let mut m = serde_json::Map::new();
    for (k, v) in super::fields(a) {
        m.insert(k.into(), serde_json::Value::String(v));
    }
    m.insert("message".into(), a.message.to_string().into());
    // Serializing a map of strings cannot fail.
    let _ = serde_json::to_writer(out, &m);
}

#[cfg(test)]
mod tests {
    use super::super::tests::{nasty, render};
    use crate::config::SiemFormat;

    #[test]
    fn golden() {
        let got = render(SiemFormat::Json, &nasty());
        let want = r#"{"actor":"jo=\"a\\b\"","actor_type":"human","detected_at":"2026-09-21T14:13:21.500Z","environment":"prod\nuction","event_id":"e-1","event_time":"2026-09-21T14:13:20.000Z","from":"complete","host":"web-1","message":"complete -> deployed | not allowed\nsecond line","reason":"a|b\\c\r\nd]","release":"r-1]\"x\\","rule":"invalid_transition","service":"pay|ments=1","severity":"warning","site":"zürich","source":"deploy-log","to":"deployed"}"#;
        assert_eq!(got, want);
        let v: serde_json::Value = serde_json::from_str(&got).unwrap();
        assert_eq!(v["site"], "zürich");
    }
}
