//! Group commit: concurrent writes share database transactions.
//!
//! Callers queue their write and wait for its outcome. One writer task
//! takes whatever is queued when it becomes free — at least one write, at
//! most `max_batch` — and hands it to the store as one batch. It never
//! lingers waiting for more: an idle daemon commits a lone write at once,
//! and a busy one commits larger batches because more queued while the
//! previous batch was in flight. Each request gets its own outcome. (A
//! second writer was measured and did not raise throughput: every batch's
//! commit passes the position counter in turn, so it only made batches
//! smaller.)

use std::future::Future;
use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot};

use super::{StoreError, Write, Written};

/// A store's batch executor.
#[async_trait]
pub(crate) trait BatchWriter: Send + Sync + 'static {
    /// Executes `writes` in queue order, returning one outcome per write.
    async fn write_batch(&self, writes: &[Write]) -> Vec<Result<Written, StoreError>>;
}

struct Job {
    write: Write,
    reply: oneshot::Sender<Result<Written, StoreError>>,
}

/// The queue in front of a store's [`BatchWriter`]. Its writer task stops
/// when the last clone of the queue is dropped.
#[derive(Clone)]
pub(crate) struct GroupCommit {
    queue: mpsc::UnboundedSender<Job>,
}

impl GroupCommit {
    /// Starts the writer task on the current tokio runtime; it takes at
    /// most `max_batch` writes at a time.
    pub(crate) fn start(writer: Arc<dyn BatchWriter>, max_batch: usize) -> Self {
        let (queue, jobs) = mpsc::unbounded_channel();
        tokio::spawn(run(writer, jobs, max_batch.max(1)));
        Self { queue }
    }

    /// Starts the writer on a thread of its own, with its own tokio
    /// runtime, on which `make_writer` builds the writer (and so opens its
    /// database connections). A busy daemon's request tasks then never
    /// delay the writer noticing that the database answered: every batch
    /// waits on that, and every queued request waits on the batch.
    pub(crate) fn start_on_own_thread<F, W>(make_writer: F, max_batch: usize) -> Self
    where
        F: FnOnce() -> W + Send + 'static,
        W: Future<Output = Arc<dyn BatchWriter>>,
    {
        let (queue, jobs) = mpsc::unbounded_channel();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime for the store writer");
        std::thread::Builder::new()
            .name("eventlogs-writer".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let writer = make_writer().await;
                    run(writer, jobs, max_batch.max(1)).await;
                });
            })
            .expect("spawn the store writer thread");
        Self { queue }
    }

    /// Queues `write` and waits for its outcome.
    pub(crate) async fn submit(&self, write: Write) -> Result<Written, StoreError> {
        if write.events.is_empty() {
            return Err(StoreError::NoEvents);
        }
        let (reply, outcome) = oneshot::channel();
        self.queue
            .send(Job { write, reply })
            .map_err(|_| StoreError::Unavailable("the store's writer has stopped".into()))?;
        outcome
            .await
            .unwrap_or_else(|_| Err(StoreError::Unavailable("a store writer stopped".into())))
    }
}

/// The writer: takes a batch, executes it, answers, repeats.
async fn run(
    writer: Arc<dyn BatchWriter>,
    mut jobs: mpsc::UnboundedReceiver<Job>,
    max_batch: usize,
) {
    let mut batch = Vec::with_capacity(max_batch);
    loop {
        if jobs.recv_many(&mut batch, max_batch).await == 0 {
            return;
        }
        // A caller that gave up (its request was cancelled) needs no write.
        batch.retain(|job: &Job| !job.reply.is_closed());
        if batch.is_empty() {
            continue;
        }
        let (writes, replies): (Vec<Write>, Vec<_>) =
            batch.drain(..).map(|job| (job.write, job.reply)).unzip();
        metrics::histogram!("eventlogs_write_batch_size").record(writes.len() as f64);
        let started = std::time::Instant::now();
        let outcomes = writer.write_batch(&writes).await;
        metrics::histogram!("eventlogs_write_batch_seconds")
            .record(started.elapsed().as_secs_f64());
        debug_assert_eq!(outcomes.len(), replies.len());
        for (reply, outcome) in replies.into_iter().zip(outcomes) {
            let _ = reply.send(outcome);
        }
    }
}
