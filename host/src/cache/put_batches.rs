//! Writes to Redis sent together: the puts queued while one pipeline is in
//! flight go out as the next pipeline, in one write and one read.
//!
//! Every validated append writes its aggregate through before it answers,
//! so under load many puts are due at the same moment (a group-committed
//! batch answers its appends together). Sent one by one, each costs the
//! daemon a system call out and a wake-up for its reply, and Redis a read:
//! a profile of 16 clients appending put a fifth of the daemon's request
//! threads' time there. Like group commit, this never waits for company: a
//! put queued while none is in flight is sent at once. Puts keep their
//! order (one pipeline at a time, in queue order), so the later of two
//! writes to one key is the one that stays. A cluster refuses a pipeline
//! whose keys live in different hash slots, so there the puts of one batch
//! go as concurrent single commands, each answered on its own; they are
//! handed to the cluster connection in queue order, and two puts of one key
//! go to the same node's connection, so they too keep their order (unless a
//! slot moves between them: then the older entry may stay, which costs a
//! reduce more events to fold, never a wrong aggregate, since an entry
//! names the index it is folded through).

use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::CacheError;
use super::connection::Connection;

/// Most puts in one pipeline.
const MAX_PIPELINE: usize = 256;

/// One queued put: key, value, time to live, and who waits for the outcome.
struct Put {
    key: String,
    value: Vec<u8>,
    ttl: Option<Duration>,
    done: oneshot::Sender<Result<(), CacheError>>,
}

/// The queue of puts to one Redis, and the task that sends them.
pub(super) struct PutBatches {
    connection: Connection,
    timeout: Duration,
    /// The running sender task's queue; started on the first put, and again
    /// if the runtime it ran on is gone.
    queue: Mutex<Option<mpsc::UnboundedSender<Put>>>,
}

impl PutBatches {
    /// Puts over `connection`, each pipeline bounded by `timeout`.
    pub(super) fn new(connection: Connection, timeout: Duration) -> Self {
        Self {
            connection,
            timeout,
            queue: Mutex::new(None),
        }
    }

    /// Sets `key` to `value` (expiring after `ttl`), together with the puts
    /// queued meanwhile; done when Redis has answered.
    pub(super) async fn put(
        &self,
        key: String,
        value: Vec<u8>,
        ttl: Option<Duration>,
    ) -> Result<(), CacheError> {
        let (done, outcome) = oneshot::channel();
        self.enqueue(Put {
            key,
            value,
            ttl,
            done,
        });
        outcome.await.unwrap_or_else(|_| {
            Err(CacheError::Unavailable(
                "the cache's writer stopped before answering".into(),
            ))
        })
    }

    fn enqueue(&self, put: Put) {
        let mut queue = self.queue.lock().expect("put queue poisoned");
        let put = match queue.as_ref() {
            Some(sender) => match sender.send(put) {
                Ok(()) => return,
                Err(mpsc::error::SendError(put)) => put,
            },
            None => put,
        };
        let (sender, receiver) = mpsc::unbounded_channel();
        if sender.send(put).is_err() {
            unreachable!("a new queue's receiver is alive");
        }
        tokio::spawn(send_batches(
            self.connection.clone(),
            self.timeout,
            receiver,
        ));
        *queue = Some(sender);
    }
}

/// Sends what is queued, one pipeline at a time, until the queue closes.
async fn send_batches(
    mut connection: Connection,
    timeout: Duration,
    mut queue: mpsc::UnboundedReceiver<Put>,
) {
    let mut batch = Vec::new();
    while queue.recv_many(&mut batch, MAX_PIPELINE).await > 0 {
        metrics::histogram!("eventlogs_cache_put_batch_size").record(batch.len() as f64);
        if connection.pipelines_keys() {
            let outcome = bounded(timeout, pipeline(&batch).query_async(&mut connection)).await;
            for put in batch.drain(..) {
                let _ = put.done.send(outcome.clone());
            }
        } else {
            let sent = batch.iter().map(|put| {
                let mut connection = connection.clone();
                async move { bounded(timeout, command(put).query_async(&mut connection)).await }
            });
            let outcomes = futures_util::future::join_all(sent).await;
            for (put, outcome) in batch.drain(..).zip(outcomes) {
                let _ = put.done.send(outcome);
            }
        }
    }
}

/// The puts of `batch` as one pipeline.
fn pipeline(batch: &[Put]) -> redis::Pipeline {
    let mut pipeline = redis::pipe();
    for put in batch {
        pipeline.add_command(command(put)).ignore();
    }
    pipeline
}

/// One put as a command.
fn command(put: &Put) -> redis::Cmd {
    match put.ttl {
        Some(ttl) => redis::cmd("SET")
            .arg(&put.key)
            .arg(&put.value)
            .arg("PX")
            .arg(ttl.as_millis().max(1) as u64)
            .to_owned(),
        None => redis::cmd("SET").arg(&put.key).arg(&put.value).to_owned(),
    }
}

/// Runs one Redis call under `timeout`, whatever the connection does.
async fn bounded(
    timeout: Duration,
    call: impl Future<Output = redis::RedisResult<()>>,
) -> Result<(), CacheError> {
    match tokio::time::timeout(timeout, call).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(CacheError::Unavailable(error.to_string())),
        Err(_) => Err(CacheError::Unavailable(format!(
            "no answer within {timeout:?}"
        ))),
    }
}
