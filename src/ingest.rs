//! The way in: what every producer (file, poll and Kubernetes sources,
//! webhooks) hands the core, and the handle it hands it through.
//!
//! A leaf module: sources and the core both import it, it imports neither
//! (only the event and the dead letters a batch carries, [`crate::dlq`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::event::{Event, InputResult};

/// One input line or payload, as the core must account for it.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    /// Parsed: the tracker decides accepted, late or duplicate.
    Event(Box<Event>),
    /// Rejected before the tracker: invalid, skipped or unmapped.
    Rejected(InputResult),
}

/// What a source sends to the core in one go.
#[derive(Debug, Default)]
pub struct SourceBatch {
    pub source: String,
    pub items: Vec<Item>,
    /// (checkpoint name, bytes) describing the source's position after these items.
    pub checkpoint: Option<(String, Vec<u8>)>,
    /// Errors to count (`relstat_source_errors_total{kind}`).
    pub errors: Vec<&'static str>,
    /// The source has read everything available (its backlog) with this batch.
    pub caught_up: bool,
    /// Poll sources: how long the poll behind this batch took (seconds).
    pub poll_seconds: Option<f64>,
    /// Payloads of these items that came out unmapped or invalid (webhook
    /// and poll sources), committed with them; entries a replay marks.
    pub dead_letters: crate::dlq::DeadLetters,
}

/// Whether the outbox admits producers now: the spool's policy answers
/// (`crate::spool::outbox`); `true` only under `when_full = "block"`.
pub trait Admission: Send + Sync {
    fn full(&self) -> bool;
}

/// Why a batch was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IngestError {
    /// The outbox is full under `when_full = "block"`: retry later.
    #[error("the spool is full (when_full = \"block\")")]
    Full,
    /// The agent is stopping (or the core is gone): nothing was taken.
    #[error("relstat is stopping")]
    Stopping,
    /// The core could not commit the batch (a store error).
    #[error("cannot commit: {0}")]
    Failed(String),
}

/// The core's answer for one batch handed over with [`Ingest::submit_async`]:
/// sent once the batch is committed (or failed).
pub struct Ack(std::sync::mpsc::SyncSender<Result<(), String>>);

impl Ack {
    pub fn done(self, result: Result<(), String>) {
        let _ = self.0.send(result);
    }
}

/// Hands one batch to the core (blocking while its channel is full);
/// false once the core is gone.
pub type Deliver = Arc<dyn Fn(SourceBatch, Option<Ack>) -> bool + Send + Sync>;

/// How long a blocked producer waits between two looks at the outbox.
const FULL_POLL: Duration = Duration::from_millis(100);

/// The one way producers hand batches to the core, with one admission
/// check (the outbox's policy) and one backpressure behaviour: under
/// `when_full = "block"` a full outbox makes [`Ingest::submit`] wait (the
/// producer's input keeps what it did not hand over) and
/// [`Ingest::submit_async`] answer [`IngestError::Full`] at once (a webhook
/// answers 503 and the sender retries).
#[derive(Clone)]
pub struct Ingest {
    deliver: Deliver,
    admission: Option<Arc<dyn Admission>>,
    stop: Arc<AtomicBool>,
}

impl Ingest {
    /// Delivers with `deliver`, always admitted, never stopping by itself.
    pub fn new(deliver: Deliver) -> Self {
        Self {
            deliver,
            admission: None,
            stop: Arc::new(AtomicBool::new(false)),
        }
    }

    /// An [`Ingest`] calling `f` for every batch (tests, replay).
    pub fn from_fn(f: impl Fn(SourceBatch) -> bool + Send + Sync + 'static) -> Self {
        Self::new(Arc::new(move |b, _| f(b)))
    }

    /// Admits batches only while `admission` is not full.
    pub fn with_admission(mut self, admission: Option<Arc<dyn Admission>>) -> Self {
        self.admission = admission;
        self
    }

    /// A blocked [`Ingest::submit`] gives up with [`IngestError::Stopping`]
    /// once `stop` is set.
    pub fn with_stop(mut self, stop: Arc<AtomicBool>) -> Self {
        self.stop = stop;
        self
    }

    /// Whether producers must wait now.
    pub fn is_full(&self) -> bool {
        self.admission.as_ref().is_some_and(|a| a.full())
    }

    /// Hands `batch` to the core, waiting while the outbox is full. `Ok`
    /// once the core has it (it commits it in order with the others).
    pub fn submit(&self, batch: SourceBatch) -> Result<(), IngestError> {
        while self.is_full() {
            if self.stop.load(Ordering::Relaxed) {
                return Err(IngestError::Stopping);
            }
            std::thread::sleep(FULL_POLL);
        }
        if (self.deliver)(batch, None) {
            Ok(())
        } else {
            Err(IngestError::Stopping)
        }
    }

    /// Hands `batch` to the core from async code and waits until it is
    /// committed; [`IngestError::Full`] at once while the outbox is full.
    pub async fn submit_async(&self, batch: SourceBatch) -> Result<(), IngestError> {
        if self.is_full() {
            return Err(IngestError::Full);
        }
        let deliver = self.deliver.clone();
        tokio::task::spawn_blocking(move || {
            let (tx, rx) = std::sync::mpsc::sync_channel(1);
            if !deliver(batch, Some(Ack(tx))) {
                return Err(IngestError::Stopping);
            }
            match rx.recv() {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(IngestError::Failed(e)),
                Err(_) => Err(IngestError::Stopping),
            }
        })
        .await
        .unwrap_or(Err(IngestError::Stopping))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Flag(AtomicBool);
    impl Admission for Flag {
        fn full(&self) -> bool {
            self.0.load(Ordering::Relaxed)
        }
    }

    #[test]
    fn a_full_outbox_holds_submit_until_room_or_stop() {
        let got = Arc::new(std::sync::Mutex::new(0));
        let g = got.clone();
        let full = Arc::new(Flag(AtomicBool::new(true)));
        let stop = Arc::new(AtomicBool::new(false));
        let ingest = Ingest::from_fn(move |_| {
            *g.lock().unwrap() += 1;
            true
        })
        .with_admission(Some(full.clone()))
        .with_stop(stop.clone());
        let i2 = ingest.clone();
        let t = std::thread::spawn(move || i2.submit(SourceBatch::default()));
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(*got.lock().unwrap(), 0, "submitted into a full outbox");
        full.0.store(false, Ordering::Relaxed);
        assert_eq!(t.join().unwrap(), Ok(()));
        assert_eq!(*got.lock().unwrap(), 1);
        full.0.store(true, Ordering::Relaxed);
        stop.store(true, Ordering::Relaxed);
        assert_eq!(
            ingest.submit(SourceBatch::default()),
            Err(IngestError::Stopping)
        );
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        assert_eq!(
            rt.block_on(ingest.submit_async(SourceBatch::default())),
            Err(IngestError::Full)
        );
        // The core's answer reaches the async caller.
        let failing = Ingest::new(Arc::new(|_, ack: Option<Ack>| {
            ack.unwrap().done(Err("disk full".into()));
            true
        }));
        assert_eq!(
            rt.block_on(failing.submit_async(SourceBatch::default())),
            Err(IngestError::Failed("disk full".into()))
        );
        assert_eq!(*got.lock().unwrap(), 1);
    }
}
