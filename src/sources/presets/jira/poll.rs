//! Polling Jira (the site URL, `https://acme.atlassian.net`; a `?jql=`
//! query on it narrows the search, e.g. `?jql=project%3DCHG`): issues
//! updated since a cursor, oldest first, with their changelog, every page
//! (`startAt`/`maxResults`/`total`). Each status change of the changelog is
//! shaped as the `jira:issue_updated` webhook that reports it (the history
//! id is the webhook's changelog id), so ids match the webhook's.

use serde_json::{Value, json};

use crate::sources::poll::client::{Client, PollError};
use crate::sources::poll::{Poll, array, json as parse};

/// Issues per page (`maxResults`).
pub const PAGE: usize = 50;
/// Pages read per poll at most.
const MAX_PAGES: usize = 40;

fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// `%XX` sequences of an already escaped query value, decoded.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Some(v) = std::str::from_utf8(&b[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The JQL time of a cursor (UTC, minute precision: Jira's JQL has no
/// seconds), one minute early.
fn jql_time(t: i64) -> String {
    chrono::DateTime::from_timestamp_millis(t - 60_000)
        .map(|d| d.format("%Y/%m/%d %H:%M").to_string())
        .unwrap_or_default()
}

/// The webhooks one issue of a search gives: one per status change.
pub fn shape(issue: &Value) -> Vec<Value> {
    let mut bare = issue.clone();
    if let Some(o) = bare.as_object_mut() {
        o.remove("changelog");
    }
    let mut out = Vec::new();
    for h in array(&issue["changelog"]["histories"]) {
        if !array(&h["items"]).iter().any(|i| i["field"] == "status") {
            continue;
        }
        let time = h["created"]
            .as_str()
            .and_then(crate::sources::presets::parse_time);
        out.push(json!({
            "webhookEvent": "jira:issue_updated",
            "timestamp": time,
            "user": h["author"],
            "issue": bare,
            "changelog": {"id": h["id"], "items": h["items"]},
        }));
    }
    out
}

/// One poll of `url`: this tool's
/// [`Poller`](crate::sources::presets::registry::Poller).
pub fn poll(c: &mut Client, poll: &mut Poll<'_>, url: &str) -> Result<(), PollError> {
    let (site, filter) = match url.split_once("?jql=") {
        Some((s, f)) => (s.trim_end_matches('/'), Some(unescape(f))),
        None => (url.trim_end_matches('/'), None),
    };
    let ckey = format!("updated:{url}");
    let cursor = poll
        .state
        .cursors
        .get(&ckey)
        .and_then(|c| c.parse::<i64>().ok());
    let mut jql = String::new();
    if let Some(f) = &filter {
        jql.push_str(&format!("({f}) AND "));
    }
    if let Some(t) = cursor {
        jql.push_str(&format!("updated >= \"{}\" ", jql_time(t)));
    } else {
        jql.push_str("updated >= \"1970/01/01 00:00\" ");
    }
    jql.push_str("ORDER BY updated ASC");
    let mut newest = cursor;
    let mut start = 0usize;
    for _ in 0..MAX_PAGES {
        let u = format!(
            "{site}/rest/api/2/search?jql={}&expand=changelog&startAt={start}&maxResults={PAGE}",
            query_escape(&jql)
        );
        let f = c.get(&u, None)?;
        let body = parse(&u, f.body.as_deref().unwrap_or(b"{}"))?;
        let issues = array(&body["issues"]);
        for issue in issues {
            for hook in shape(issue) {
                poll.emit(None, &hook);
            }
            if let Some(t) = issue["fields"]["updated"]
                .as_str()
                .and_then(crate::sources::presets::parse_time)
            {
                newest = newest.max(Some(t));
            }
        }
        start += issues.len();
        let total = body["total"].as_u64().unwrap_or(0) as usize;
        if issues.is_empty() || start >= total {
            break;
        }
    }
    if let Some(t) = newest {
        poll.state.cursors.insert(ckey, t.to_string());
    }
    Ok(())
}
