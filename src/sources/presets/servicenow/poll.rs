//! Polling ServiceNow (the instance URL, `https://acme.service-now.com`, or
//! a Table API URL ending in the table): `change_request` records updated
//! since a cursor on `sys_updated_on`, oldest first, every page
//! (`sysparm_offset`/`sysparm_limit`). Each record is mapped by the preset
//! as a webhook's record, so ids match the webhook's.

use serde_json::Value;

use crate::sources::poll::client::{Client, PollError};
use crate::sources::poll::{Poll, array, json};

/// Records per page (`sysparm_limit`).
pub const PAGE: usize = 100;
/// Pages read per poll at most (a first poll of a busy instance).
const MAX_PAGES: usize = 50;

/// `sysparm_query` bytes that must be escaped in a query string.
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

/// The table URL a configured URL names.
pub fn table_url(url: &str) -> String {
    let base = url.trim_end_matches('/');
    if base.contains("/api/now/table/") {
        base.to_string()
    } else {
        format!("{base}/api/now/table/change_request")
    }
}

/// A record field's value (plain, or the `value` of a pair).
fn value(rec: &Value, name: &str) -> Option<String> {
    let v = rec.get(name)?;
    let v = v.get("value").unwrap_or(v);
    v.as_str().map(str::to_string)
}

/// One poll of `url`: this tool's
/// [`Poller`](crate::sources::presets::registry::Poller).
pub fn poll(c: &mut Client, poll: &mut Poll<'_>, url: &str) -> Result<(), PollError> {
    let table = table_url(url);
    let ckey = format!("sys_updated_on:{table}");
    let cursor = poll.state.cursors.get(&ckey).cloned();
    // `>=`: records updated in the cursor's second are read again (the
    // seen ids drop them); none updated in it is missed.
    let mut query = String::new();
    if let Some(c) = &cursor {
        query.push_str(&format!("sys_updated_on>={c}^"));
    }
    query.push_str("ORDERBYsys_updated_on");
    let mut newest = cursor.clone();
    for page in 0..MAX_PAGES {
        let u = format!(
            "{table}?sysparm_query={}&sysparm_limit={PAGE}&sysparm_offset={}\
             &sysparm_exclude_reference_link=true",
            query_escape(&query),
            page * PAGE
        );
        let f = c.get(&u, None)?;
        let body = json(&u, f.body.as_deref().unwrap_or(b"{}"))?;
        let list = array(&body["result"]);
        for rec in list {
            poll.emit(None, rec);
            if let Some(t) = value(rec, "sys_updated_on")
                && newest.as_deref().is_none_or(|n| t.as_str() > n)
            {
                newest = Some(t);
            }
        }
        if list.len() < PAGE {
            break;
        }
    }
    if let Some(t) = newest {
        poll.state.cursors.insert(ckey, t);
    }
    Ok(())
}
