//! Polling Argo CD (the applications API URL,
//! `https://argocd.example/api/v1/applications`, or one application's):
//! every application, as the `{"app": ...}` body its notifications send.

use serde_json::{Value, json};

use crate::sources::poll::client::{Client, PollError};
use crate::sources::poll::{Poll, array, get_cond};

/// One poll of `url`: this tool's
/// [`Poller`](crate::sources::presets::registry::Poller).
pub fn poll(c: &mut Client, poll: &mut Poll<'_>, url: &str) -> Result<(), PollError> {
    let Some(v) = get_cond(c, poll, url)? else {
        return Ok(());
    };
    if v.get("metadata").is_some() && v.get("items").is_none() {
        emit(poll, &v);
        return Ok(());
    }
    for app in array(&v["items"]) {
        emit(poll, app);
    }
    Ok(())
}

/// The cursor remembering an application's last revision.
fn cursor(app: &Value) -> Option<String> {
    let id =
        super::super::s(app, "metadata.uid").or_else(|| super::super::s(app, "metadata.name"))?;
    Some(format!("argocd:revision:{id}"))
}

/// Emits one application; one that names no revision now (OutOfSync,
/// Degraded, being deleted) carries the one last seen for it.
fn emit(poll: &mut Poll<'_>, app: &Value) {
    let key = cursor(app);
    match (super::revision(app), key) {
        (Some(rev), Some(key)) => {
            poll.state.cursors.insert(key, rev);
            poll.emit(None, &json!({ "app": app }));
        }
        (None, Some(key)) => match poll.state.cursors.get(&key).cloned() {
            Some(rev) => poll.emit(None, &json!({ "app": app, (super::LAST_SEEN): rev })),
            None => poll.emit(None, &json!({ "app": app })),
        },
        (_, None) => poll.emit(None, &json!({ "app": app })),
    }
}
