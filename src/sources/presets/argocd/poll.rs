//! Polling Argo CD (the applications API URL,
//! `https://argocd.example/api/v1/applications`, or one application's):
//! every application, as the `{"app": ...}` body its notifications send.

use serde_json::json;

use crate::sources::poll::client::{Client, PollError};
use crate::sources::poll::{Poll, array, get_cond};

/// One poll of `url`: this tool's
/// [`Poller`](crate::sources::presets::registry::Poller).
pub fn poll(c: &mut Client, poll: &mut Poll<'_>, url: &str) -> Result<(), PollError> {
    let Some(v) = get_cond(c, poll, url)? else {
        return Ok(());
    };
    if v.get("metadata").is_some() && v.get("items").is_none() {
        poll.emit(None, &json!({ "app": v }));
        return Ok(());
    }
    for app in array(&v["items"]) {
        poll.emit(None, &json!({ "app": app }));
    }
    Ok(())
}
