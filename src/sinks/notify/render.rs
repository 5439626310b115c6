//! What each kind of destination receives: Slack Block Kit (with a `text`
//! fallback), a Teams Adaptive Card in the Workflows `attachments`
//! envelope, or generic JSON; one message or a digest of several.
//!
//! Slack's limits are kept: a header's text at most 150 characters, a
//! section's text 3000, a field's 2000, at most 10 fields, 50 blocks; the
//! `text` fallback at most 3000 here (Slack truncates past 40,000).

use serde_json::{Value, json};

use super::{Note, NoteKind};
use crate::config::NotifyKind;

/// Slack's header text limit.
pub const SLACK_HEADER_MAX: usize = 150;
/// Slack's section text limit.
pub const SLACK_SECTION_MAX: usize = 3000;
/// Slack's limit per section field.
pub const SLACK_FIELD_MAX: usize = 2000;
/// Slack's fields per section.
pub const SLACK_FIELDS_MAX: usize = 10;
/// The `text` fallback's length here.
pub const SLACK_TEXT_MAX: usize = 3000;
/// Lines a digest lists; the rest are counted.
pub const DIGEST_LINES: usize = 30;

/// The links a message carries (`[notify] api_url`, `grafana_url`).
#[derive(Debug, Clone, Default)]
pub struct Links {
    pub api_url: Option<String>,
    pub grafana_url: Option<String>,
}

impl Links {
    fn release(&self, release: &str) -> Option<String> {
        self.api_url.as_ref().map(|u| {
            format!(
                "{}/api/v1/releases/{}",
                u.trim_end_matches('/'),
                encode_segment(release)
            )
        })
    }

    fn all(&self, release: Option<&str>) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if let Some(r) = release.and_then(|r| self.release(r)) {
            out.push(("Release in relstat", r));
        }
        if let Some(g) = &self.grafana_url {
            out.push(("Dashboards", g.clone()));
        }
        out
    }
}

/// A URL path segment: everything but unreserved characters percent-encoded.
fn encode_segment(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// At most `max` characters, cut with an ellipsis.
pub fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Slack mrkdwn escaping of text from events (`&`, `<`, `>`).
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A duration in seconds, as people read it (`3h 12m`).
pub fn human_secs(secs: f64) -> String {
    let s = secs.max(0.0) as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {}s", s / 60, s % 60),
        3600..86400 => format!("{}h {}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d {}h", s / 86400, (s % 86400) / 3600),
    }
}

/// The one-line summary of a message.
pub fn title(n: &Note) -> String {
    let place = if n.site.is_empty() {
        n.environment.clone()
    } else {
        format!("{} ({})", n.environment, n.site)
    };
    match n.kind {
        NoteKind::Anomaly => format!(
            "{} {}: {} {} in {place}",
            n.severity.as_deref().unwrap_or("warning"),
            n.rule.as_deref().unwrap_or("anomaly"),
            n.release,
            n.service,
        ),
        NoteKind::Transition => format!(
            "{} {} {} in {place}",
            n.release,
            n.service,
            n.to.replace('_', " ")
        ),
        NoteKind::Sample => "relstat test notification".to_string(),
    }
}

fn time_text(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

/// (label, value) pairs of a message, in display order.
fn facts(n: &Note) -> Vec<(&'static str, String)> {
    let mut f = vec![
        ("Release", n.release.clone()),
        ("Service", n.service.clone()),
        ("Environment", n.environment.clone()),
    ];
    if !n.site.is_empty() {
        f.push(("Site", n.site.clone()));
    }
    f.push((
        "Status",
        format!(
            "{} → {}",
            n.from.as_deref().unwrap_or("(first report)"),
            n.to
        ),
    ));
    f.push(("Actor", format!("{} ({})", n.actor, n.actor_type)));
    if let Some(s) = n.previous_secs {
        f.push(("Time in previous status", human_secs(s)));
    }
    f.push(("Event time", time_text(n.event_time)));
    f
}

/// The body for one message.
pub fn render(kind: NotifyKind, n: &Note, links: &Links) -> Value {
    match kind {
        NotifyKind::Slack => slack(n, links),
        NotifyKind::Teams => teams(n, links),
        NotifyKind::Webhook => webhook(n, links),
    }
}

/// The body for a digest of several messages (in queue order).
pub fn render_digest(kind: NotifyKind, notes: &[Note], links: &Links) -> Value {
    match kind {
        NotifyKind::Slack => slack_digest(notes, links),
        NotifyKind::Teams => teams_digest(notes, links),
        NotifyKind::Webhook => json!({
            "type": "relstat.digest",
            "count": notes.len(),
            "messages": notes.iter().map(|n| webhook(n, links)).collect::<Vec<_>>(),
        }),
    }
}

fn slack(n: &Note, links: &Links) -> Value {
    let title = title(n);
    let fields: Vec<Value> = facts(n)
        .into_iter()
        .take(SLACK_FIELDS_MAX)
        .map(|(k, v)| {
            json!({"type": "mrkdwn", "text": cut(&format!("*{k}*\n{}", esc(&v)), SLACK_FIELD_MAX)})
        })
        .collect();
    let mut blocks = vec![
        json!({"type": "header", "text": {"type": "plain_text", "text": cut(&title, SLACK_HEADER_MAX), "emoji": true}}),
        json!({"type": "section", "fields": fields}),
    ];
    let mut detail = Vec::new();
    if let Some(m) = &n.message {
        detail.push(esc(m));
    }
    if let Some(r) = &n.reason {
        detail.push(format!("*Reason*: {}", esc(r)));
    }
    if !detail.is_empty() {
        blocks.push(json!({"type": "section", "text": {"type": "mrkdwn", "text": cut(&detail.join("\n"), SLACK_SECTION_MAX)}}));
    }
    let mut context: Vec<Value> = links
        .all(Some(&n.release))
        .into_iter()
        .map(|(label, url)| json!({"type": "mrkdwn", "text": format!("<{url}|{label}>")}))
        .collect();
    context.push(json!({"type": "mrkdwn", "text": format!("relstat · id {}", n.id)}));
    blocks.push(json!({"type": "context", "elements": context}));
    let mut text = title;
    if let Some(r) = &n.reason {
        text.push_str(&format!(": {r}"));
    }
    json!({"text": cut(&esc(&text), SLACK_TEXT_MAX), "blocks": blocks})
}

fn digest_lines(notes: &[Note]) -> (Vec<String>, usize) {
    let lines: Vec<String> = notes.iter().take(DIGEST_LINES).map(title).collect();
    (lines, notes.len().saturating_sub(DIGEST_LINES))
}

fn slack_digest(notes: &[Note], links: &Links) -> Value {
    let head = format!("{} relstat notifications", notes.len());
    let (lines, more) = digest_lines(notes);
    let mut body = lines
        .iter()
        .map(|l| format!("• {}", esc(l)))
        .collect::<Vec<_>>()
        .join("\n");
    if more > 0 {
        body.push_str(&format!("\n… and {more} more"));
    }
    let mut blocks = vec![
        json!({"type": "header", "text": {"type": "plain_text", "text": cut(&head, SLACK_HEADER_MAX), "emoji": true}}),
        json!({"type": "section", "text": {"type": "mrkdwn", "text": cut(&body, SLACK_SECTION_MAX)}}),
    ];
    let context: Vec<Value> = links
        .all(None)
        .into_iter()
        .map(|(label, url)| json!({"type": "mrkdwn", "text": format!("<{url}|{label}>")}))
        .collect();
    if !context.is_empty() {
        blocks.push(json!({"type": "context", "elements": context}));
    }
    json!({"text": cut(&format!("{head}: {}", esc(&lines.join("; "))), SLACK_TEXT_MAX), "blocks": blocks})
}

/// The Workflows envelope around an Adaptive Card.
fn teams_envelope(body: Vec<Value>, actions: Vec<Value>) -> Value {
    let mut card = json!({
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": body,
    });
    if !actions.is_empty() {
        card["actions"] = Value::Array(actions);
    }
    json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": null,
            "content": card,
        }]
    })
}

fn teams_actions(links: &Links, release: Option<&str>) -> Vec<Value> {
    links
        .all(release)
        .into_iter()
        .map(|(label, url)| json!({"type": "Action.OpenUrl", "title": label, "url": url}))
        .collect()
}

fn teams(n: &Note, links: &Links) -> Value {
    let mut body = vec![
        json!({"type": "TextBlock", "text": title(n), "weight": "Bolder", "size": "Medium", "wrap": true}),
        json!({"type": "FactSet", "facts": facts(n).into_iter().map(|(k, v)| json!({"title": k, "value": v})).collect::<Vec<_>>()}),
    ];
    if let Some(m) = &n.message {
        body.push(json!({"type": "TextBlock", "text": m, "wrap": true}));
    }
    if let Some(r) = &n.reason {
        body.push(json!({"type": "TextBlock", "text": format!("Reason: {r}"), "wrap": true}));
    }
    body.push(json!({"type": "TextBlock", "text": format!("relstat · id {}", n.id), "isSubtle": true, "size": "Small", "wrap": true}));
    teams_envelope(body, teams_actions(links, Some(&n.release)))
}

fn teams_digest(notes: &[Note], links: &Links) -> Value {
    let (lines, more) = digest_lines(notes);
    let mut body = vec![
        json!({"type": "TextBlock", "text": format!("{} relstat notifications", notes.len()), "weight": "Bolder", "size": "Medium", "wrap": true}),
    ];
    for l in lines {
        body.push(
            json!({"type": "TextBlock", "text": format!("- {l}"), "wrap": true, "spacing": "None"}),
        );
    }
    if more > 0 {
        body.push(json!({"type": "TextBlock", "text": format!("… and {more} more"), "wrap": true}));
    }
    teams_envelope(body, teams_actions(links, None))
}

fn webhook(n: &Note, links: &Links) -> Value {
    let mut v = serde_json::to_value(n).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut v {
        m.insert("type".into(), json!("relstat.notification"));
        m.insert("title".into(), json!(title(n)));
        let l: serde_json::Map<String, Value> = links
            .all(Some(&n.release))
            .into_iter()
            .map(|(k, u)| {
                let k = if k == "Dashboards" {
                    "grafana"
                } else {
                    "release"
                };
                (k.to_string(), json!(u))
            })
            .collect();
        if !l.is_empty() {
            m.insert("links".into(), Value::Object(l));
        }
    }
    v
}

/// A sample message for `relstat notify test`.
pub fn sample(now: i64) -> Note {
    Note {
        id: format!("test-{now}"),
        kind: NoteKind::Sample,
        rule: None,
        severity: None,
        release: "relstat-test".into(),
        service: "relstat".into(),
        environment: "test".into(),
        site: String::new(),
        from: Some("deploying".into()),
        to: "deployed".into(),
        actor: "relstat notify test".into(),
        actor_type: "human".into(),
        reason: Some("a test message: the destination works".into()),
        message: None,
        previous_secs: Some(75.0),
        event_id: format!("test-{now}"),
        event_time: now,
        queued_at: now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note(kind: NoteKind) -> Note {
        let mut n = sample(1_700_000_000_000);
        n.kind = kind;
        n.release = "r<1>&".into();
        n.reason = Some("x".repeat(5000));
        n.rule = Some("gate_bypass".into());
        n.message = Some("no approval".into());
        n
    }

    const KNOWN_BLOCKS: &[&str] = &["header", "section", "context", "divider", "actions"];

    /// What Slack requires of a message (the test receivers check the same).
    pub(crate) fn check_slack(v: &Value) {
        assert!(
            v["text"]
                .as_str()
                .is_some_and(|t| !t.is_empty() && t.chars().count() <= 40_000)
        );
        let blocks = v["blocks"].as_array().expect("blocks");
        assert!(!blocks.is_empty() && blocks.len() <= 50);
        for b in blocks {
            let t = b["type"].as_str().unwrap();
            assert!(KNOWN_BLOCKS.contains(&t), "{t}");
            if t == "header" {
                assert!(b["text"]["text"].as_str().unwrap().chars().count() <= SLACK_HEADER_MAX);
                assert_eq!(b["text"]["type"], "plain_text");
            }
            if let Some(s) = b["text"]["text"].as_str()
                && t == "section"
            {
                assert!(s.chars().count() <= SLACK_SECTION_MAX);
            }
            if let Some(f) = b["fields"].as_array() {
                assert!(f.len() <= SLACK_FIELDS_MAX);
                for f in f {
                    assert!(f["text"].as_str().unwrap().chars().count() <= SLACK_FIELD_MAX);
                }
            }
        }
    }

    #[test]
    fn slack_messages_keep_block_kit_limits_and_escape() {
        for kind in [NoteKind::Transition, NoteKind::Anomaly, NoteKind::Sample] {
            let links = Links {
                api_url: Some("https://relstat.example/".into()),
                grafana_url: Some("https://grafana.example".into()),
            };
            let v = render(NotifyKind::Slack, &note(kind), &links);
            check_slack(&v);
            let s = v.to_string();
            assert!(s.contains("r&lt;1&gt;&amp;"), "{s}");
            assert!(
                s.contains("https://relstat.example/api/v1/releases/r%3C1%3E%26"),
                "{s}"
            );
        }
        let many: Vec<Note> = (0..500).map(|_| note(NoteKind::Transition)).collect();
        let d = render_digest(NotifyKind::Slack, &many, &Links::default());
        check_slack(&d);
        assert!(d.to_string().contains("and 470 more"));
    }

    #[test]
    fn teams_cards_are_adaptive_cards_in_the_envelope() {
        let v = render(
            NotifyKind::Teams,
            &note(NoteKind::Transition),
            &Links::default(),
        );
        assert_eq!(v["type"], "message");
        let a = &v["attachments"][0];
        assert_eq!(a["contentType"], "application/vnd.microsoft.card.adaptive");
        assert_eq!(a["content"]["type"], "AdaptiveCard");
        assert_eq!(a["content"]["version"], "1.4");
        assert!(
            a["content"]["body"]
                .as_array()
                .is_some_and(|b| !b.is_empty())
        );
        assert!(
            a["content"].get("actions").is_none(),
            "no link without api_url"
        );
        let d = render_digest(
            NotifyKind::Teams,
            &[note(NoteKind::Anomaly)],
            &Links::default(),
        );
        assert_eq!(d["attachments"][0]["content"]["type"], "AdaptiveCard");
    }

    #[test]
    fn webhooks_carry_the_message_and_its_id() {
        let n = note(NoteKind::Anomaly);
        let v = render(NotifyKind::Webhook, &n, &Links::default());
        assert_eq!(v["type"], "relstat.notification");
        assert_eq!(v["id"], n.id.as_str());
        assert_eq!(v["rule"], "gate_bypass");
        assert_eq!(human_secs(3.0 * 3600.0 + 12.0 * 60.0), "3h 12m");
    }
}
