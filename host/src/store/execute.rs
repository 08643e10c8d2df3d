//! Executing a group-commit batch, the same way on every database: read
//! what the batch depends on, plan it ([`super::batch`]), store every row
//! at once.
//!
//! The first attempt is optimistic: nothing is locked between the read and
//! the write, which is one atomic statement (or transaction) that fails on
//! a unique key if another process stored a colliding row meanwhile (an
//! event at the same index of a log, the same log or idempotency key). On
//! PostgreSQL a batch appending only to logs the writer knows the ends of
//! skips the read ([`super::known_ends`]): the write then also fails as a
//! race if a log no longer ends where the plan presumed. Only
//! then is the batch run again, exclusively: the write lock is taken first
//! (every store takes it to number its events), so nothing can change
//! between that read and write, and the rerun cannot lose again. A
//! [`Dialect`] supplies only the SQL.

use async_trait::async_trait;
use uuid::Uuid;

use super::batch::{self, Found, Rows};
use super::group_commit::BatchWriter;
use super::known_ends::KnownEnds;
use super::write::{KeyRow, earlier_outcome, is_data_error, unavailable};
use super::{StoreError, Write, Written};

/// How often a batch is run again after a transient failure (a deadlock,
/// a busy database).
const BATCH_RERUNS: usize = 8;

/// What a batch reads: the last index of existing logs, stored keys.
pub(crate) type Read = (Vec<(Uuid, i64)>, Vec<(String, KeyRow)>);

/// A database that batches can be executed on.
#[async_trait]
pub(crate) trait Dialect: Send + Sync + 'static {
    /// A transaction holding the write lock.
    type Exclusive: Exclusive;

    /// The last index of each existing log among `ids`, and the stored
    /// rows of the idempotency keys among `keys`. A log whose row is
    /// visible must have its keys visible too: one snapshot, or the logs
    /// read before the keys.
    async fn read(&self, ids: &[Uuid], keys: &[&str]) -> Result<Read, sqlx::Error>;

    /// Stores every row of `rows` atomically, taking a range of positions
    /// for its events; returns the position before the first one. Fails
    /// with a unique violation, storing nothing, if a row collides with
    /// one stored since the read.
    async fn store(&self, rows: &Rows<'_>) -> Result<u64, sqlx::Error>;

    /// Begins a transaction and takes the write lock that every
    /// [`Dialect::store`] takes, so no other writer stores anything until
    /// it ends.
    async fn exclusive(&self) -> Result<Self::Exclusive, sqlx::Error>;

    /// One stored idempotency key, outside any batch.
    async fn key_row(&self, key: &str) -> Result<Option<KeyRow>, sqlx::Error>;

    /// Whether running the batch again resolves this failure (a deadlock,
    /// a serialization failure, a busy database).
    fn is_transient(&self, error: &sqlx::Error) -> bool;

    /// Whether a batch appending only to logs this writer knows the ends
    /// of is stored without reading them first ([`KnownEnds`]). The
    /// dialect's [`Dialect::store`] must then fail as a race (a unique
    /// violation) when an existing log no longer ends at its row's
    /// `log_previous_index`.
    const PRESUMES_KNOWN_ENDS: bool;
}

/// A transaction holding the write lock: [`Dialect::read`] and
/// [`Dialect::store`] inside it.
#[async_trait]
pub(crate) trait Exclusive: Send {
    /// As [`Dialect::read`].
    async fn read(&mut self, ids: &[Uuid], keys: &[&str]) -> Result<Read, sqlx::Error>;

    /// As [`Dialect::store`], committed only with the transaction.
    async fn store(&mut self, rows: &Rows<'_>) -> Result<u64, sqlx::Error>;

    /// Commits.
    async fn commit(self) -> Result<(), sqlx::Error>;
}

/// Executes batches on a [`Dialect`].
pub(crate) struct Executor<D> {
    dialect: D,
    /// Log ends this writer read or wrote, kept only when the dialect
    /// presumes them.
    ends: Option<KnownEnds>,
}

impl<D: Dialect> Executor<D> {
    /// An executor on `dialect`.
    pub(crate) fn new(dialect: D) -> Self {
        Self {
            dialect,
            ends: D::PRESUMES_KNOWN_ENDS.then(KnownEnds::default),
        }
    }
}

#[async_trait]
impl<D: Dialect> BatchWriter for Executor<D> {
    async fn write_batch(&self, writes: &[Write]) -> Vec<Result<Written, StoreError>> {
        let prints = batch::fingerprints(writes);
        match self.run(writes, &prints).await {
            // One request's data broke a shared statement: store each
            // alone, so only that one fails.
            Err(error) if is_data_error(&error) && writes.len() > 1 => {
                let mut outcomes = Vec::with_capacity(writes.len());
                for (write, print) in writes.iter().zip(&prints) {
                    let alone = self
                        .run(std::slice::from_ref(write), std::slice::from_ref(print))
                        .await;
                    outcomes.push(alone.map_or_else(|e| Err(unavailable(e)), |mut o| o.remove(0)));
                }
                outcomes
            }
            Err(error) => {
                let error = unavailable(error);
                if matches!(error, StoreError::Unavailable(_)) {
                    tracing::warn!(%error, "batch write failed");
                }
                writes.iter().map(|_| Err(error.clone())).collect()
            }
            Ok(outcomes) => outcomes,
        }
    }
}

impl<D: Dialect> Executor<D> {
    /// Runs the batch: optimistically, then exclusively if it lost a race
    /// to another process, again after a transient failure.
    async fn run(
        &self,
        writes: &[Write],
        prints: &[Option<Vec<u8>>],
    ) -> Result<Vec<Result<Written, StoreError>>, sqlx::Error> {
        let mut exclusive = false;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let outcome = if exclusive {
                self.exclusively(writes, prints).await
            } else {
                self.optimistically(writes, prints).await
            };
            match outcome {
                Err(error) if raced(&error) && !exclusive => exclusive = true,
                Err(error) if raced(&error) => {
                    // Only a writer that stores without the write lock can
                    // get here; not the request's fault either way.
                    return Err(sqlx::Error::Protocol(format!(
                        "a row collided under the write lock: {error}"
                    )));
                }
                Err(error) if self.dialect.is_transient(&error) && attempt < BATCH_RERUNS => {}
                outcome => return outcome,
            }
        }
    }

    /// Reads what the logs it appends to and its keys (a log it creates is
    /// presumed new; nothing is read for creates without keys), plans and
    /// stores.
    async fn optimistically(
        &self,
        writes: &[Write],
        prints: &[Option<Vec<u8>>],
    ) -> Result<Vec<Result<Written, StoreError>>, sqlx::Error> {
        let presumed = self.ends.as_ref().and_then(|ends| ends.presume(writes));
        let found = match presumed {
            Some(presumed) => presumed,
            None => {
                let ids = batch::log_ids(writes, false);
                let keys = batch::keys(writes);
                let read = if ids.is_empty() && keys.is_empty() {
                    Read::default()
                } else {
                    self.dialect.read(&ids, &keys).await?
                };
                found(read)
            }
        };
        let plan = batch::plan(writes, prints, &found);
        if !plan.rows.event_log.is_empty() {
            match self.dialect.store(&plan.rows).await {
                Ok(base) => {
                    if let Some(ends) = &self.ends {
                        ends.learn_stored(&plan.rows);
                    }
                    return Ok(plan.outcomes(base));
                }
                Err(error) => {
                    if let Some(ends) = &self.ends {
                        ends.forget(writes);
                    }
                    return Err(error);
                }
            }
        }
        if let Some(ends) = &self.ends {
            ends.learn(&found);
        }
        Ok(plan.outcomes(0))
    }

    /// Reads every log and key the batch names, plans and stores, holding
    /// the write lock throughout.
    async fn exclusively(
        &self,
        writes: &[Write],
        prints: &[Option<Vec<u8>>],
    ) -> Result<Vec<Result<Written, StoreError>>, sqlx::Error> {
        let mut tx = self.dialect.exclusive().await?;
        let read = tx
            .read(&batch::log_ids(writes, true), &batch::keys(writes))
            .await?;
        let found = found(read);
        let plan = batch::plan(writes, prints, &found);
        let base = if plan.rows.event_log.is_empty() {
            0
        } else {
            tx.store(&plan.rows).await?
        };
        tx.commit().await?;
        if let Some(ends) = &self.ends {
            ends.learn(&found);
            ends.learn_stored(&plan.rows);
        }
        Ok(plan.outcomes(base))
    }
}

fn found((lasts, keys): Read) -> Found {
    Found {
        lasts: lasts
            .into_iter()
            .map(|(id, last)| (id.into(), last as u64))
            .collect(),
        keys: keys.into_iter().collect(),
    }
}

/// Whether a write failed because another process stored a colliding row
/// after the batch was read.
fn raced(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .is_some_and(|e| e.is_unique_violation())
}

/// What an earlier request with `write`'s idempotency key recorded; see
/// [`super::EventStore::earlier`].
pub(crate) async fn earlier<D: Dialect>(
    dialect: &D,
    write: &Write,
) -> Result<Option<Written>, StoreError> {
    let Some(key) = &write.idempotency_key else {
        return Ok(None);
    };
    let row = dialect.key_row(key).await.map_err(unavailable)?;
    row.map(|row| earlier_outcome(&row, &write.fingerprint()).map(Written::Replayed))
        .transpose()
}
