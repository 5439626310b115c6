//! The way into the core thread: [`CoreHandle`] sends it messages
//! (source batches, closures, reloads, the stop) through one bounded
//! channel, so everything the core does happens in one order; [`Health`]
//! is what the rest of the process learns when the core dies.

use std::collections::BTreeMap;
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::{Arc, Mutex};

use super::{Core, CoreError};
use crate::config::Loaded;
use crate::ingest::{Ack, Ingest, SourceBatch};
use crate::spool::outbox::Outbox;

/// Source checkpoints by name, as the store holds them.
pub type Checkpoints = BTreeMap<String, Vec<u8>>;

/// Batches in flight between the producers and the core. Small on purpose:
/// it bounds how far reading runs past a full spool (`when_full = "block"`
/// waits between batches) and how long a webhook waits behind file batches.
const CHANNEL: usize = 4;

/// What the core thread receives.
pub(super) enum CoreMsg {
    /// A producer's batch; with an [`Ack`], committed alone and answered.
    Batch(SourceBatch, Option<Ack>),
    /// Run a closure on the core thread (webhooks, API, admin socket).
    Call(Box<dyn FnOnce(&mut Core) + Send>),
    /// Rebuild from the store with this config; answer with the checkpoints.
    Reload(Box<Loaded>, SyncSender<Result<Checkpoints, String>>),
    Shutdown,
}

/// The core thread's end of the channel.
pub struct Inbox(pub(super) Receiver<CoreMsg>);

/// A handle to the core thread: runs closures there, one at a time, in
/// order with the source batches, so they see (and may change) the tracker
/// and the store with no other owner.
#[derive(Clone)]
pub struct CoreHandle {
    pub(super) tx: SyncSender<CoreMsg>,
}

/// A new channel into a core: the handle for everyone, the inbox for
/// [`Core::spawn`].
pub fn channel() -> (CoreHandle, Inbox) {
    let (tx, rx) = std::sync::mpsc::sync_channel::<CoreMsg>(CHANNEL);
    (CoreHandle { tx }, Inbox(rx))
}

impl CoreHandle {
    /// Runs `f` on the core thread and waits (blocking) for its result.
    pub fn call_blocking<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Core) -> R + Send + 'static,
    ) -> Result<R, CoreError> {
        let (reply_tx, reply_rx) = std::sync::mpsc::sync_channel(1);
        let msg = CoreMsg::Call(Box::new(move |core: &mut Core| {
            let _ = reply_tx.send(f(core));
        }));
        self.tx.send(msg).map_err(|_| CoreError::Gone)?;
        reply_rx.recv().map_err(|_| CoreError::Gone)
    }

    /// Runs `f` on the core thread from async code.
    pub async fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Core) -> R + Send + 'static,
    ) -> Result<R, CoreError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.call_blocking(f))
            .await
            .map_err(|_| CoreError::Gone)?
    }

    /// The producers' way in: batches go to this core, admitted while
    /// `outbox` (the spool's policy) is not full.
    pub fn ingest(&self, outbox: Option<Arc<Outbox>>) -> Ingest {
        let tx = self.tx.clone();
        let admission = outbox.map(|o| o as Arc<dyn crate::ingest::Admission>);
        Ingest::new(Arc::new(move |b, ack| {
            tx.send(CoreMsg::Batch(b, ack)).is_ok()
        }))
        .with_admission(admission)
    }

    /// Rebuilds the core from the store with `loaded` (the sources are
    /// stopped): the outer error when the core is gone, the inner one when
    /// the rebuild failed; else the checkpoints to start the sources from.
    pub fn reload_blocking(
        &self,
        loaded: Loaded,
    ) -> Result<Result<Checkpoints, String>, CoreError> {
        let (reply_tx, reply_rx) = std::sync::mpsc::sync_channel(1);
        self.tx
            .send(CoreMsg::Reload(Box::new(loaded), reply_tx))
            .map_err(|_| CoreError::Gone)?;
        reply_rx.recv().map_err(|_| CoreError::Gone)
    }

    /// Asks the core to stop after every batch sent before this message.
    pub fn shutdown(&self) {
        let _ = self.tx.send(CoreMsg::Shutdown);
    }
}

/// Whether the core thread is alive, for `/healthz`, `/readyz` and the
/// runtime (which exits when the core died).
#[derive(Default)]
pub struct Health {
    dead: Mutex<Option<String>>,
    died: tokio::sync::Notify,
}

impl Health {
    /// Records that the core thread stopped with `error` and wakes whoever
    /// waits in [`Health::died`].
    pub fn core_died(&self, error: &CoreError) {
        let grace = super::DEAD_CORE_GRACE;
        tracing::error!(
            "the core stopped: {error}; nothing is committed any more: /healthz and /readyz \
             answer 503 and relstat exits with status 1 in {grace:?} for the \
             service manager to restart it (what was not committed is read again then)"
        );
        *self.dead.lock().unwrap_or_else(|p| p.into_inner()) = Some(error.to_string());
        self.died.notify_one();
    }

    /// Why the core stopped, if it has: `/healthz`'s and `/readyz`'s answer.
    pub fn dead(&self) -> Result<(), String> {
        match &*self.dead.lock().unwrap_or_else(|p| p.into_inner()) {
            None => Ok(()),
            Some(e) => Err(format!(
                "core stopped: {e}; relstat is exiting to be restarted"
            )),
        }
    }

    /// Returns once the core has died.
    pub async fn died(&self) {
        self.died.notified().await
    }
}
