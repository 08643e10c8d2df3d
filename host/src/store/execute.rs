//! Executing a group-commit batch, the same way on every database: read
//! what the batch depends on, plan it ([`super::batch`]), insert new logs,
//! store the rows, commit. A [`Dialect`] supplies only the SQL.

use std::collections::HashSet;

use async_trait::async_trait;
use uuid::Uuid;

use super::batch::{self, Found, Rows};
use super::group_commit::BatchWriter;
use super::write::{KeyRow, earlier_outcome, is_data_error, unavailable};
use super::{StoreError, Write, Written};

/// How often a batch is run again after losing a race it cannot plan
/// around (another process stored one of its keys meanwhile, a deadlock).
const BATCH_RERUNS: usize = 8;

/// One batch's transaction, in a database's SQL.
#[async_trait]
pub(crate) trait BatchTx: Send {
    /// The last index of each existing log among `ids` (sorted), locking
    /// the rows until commit where the database locks rows.
    async fn lock_logs(&mut self, ids: &[Uuid]) -> Result<Vec<(Uuid, i64)>, sqlx::Error>;

    /// The stored rows of these idempotency keys.
    async fn read_keys(&mut self, keys: &[&str]) -> Result<Vec<(String, KeyRow)>, sqlx::Error>;

    /// Inserts the new logs of `rows`, skipping ids already taken; returns
    /// the ids inserted.
    async fn insert_logs(&mut self, rows: &Rows<'_>) -> Result<Vec<Uuid>, sqlx::Error>;

    /// Stores the events, log ends and keys of `rows`, taking a range of
    /// positions. Returns the position before the first event, or `None`
    /// if one of the keys was stored meanwhile by another process.
    async fn store_rows(&mut self, rows: &Rows<'_>) -> Result<Option<u64>, sqlx::Error>;

    /// Commits.
    async fn commit(self) -> Result<(), sqlx::Error>;
}

/// A database that batches can be executed on.
#[async_trait]
pub(crate) trait Dialect: Send + Sync + 'static {
    /// Its batch transaction.
    type Tx: BatchTx;

    /// Begins a batch's transaction.
    async fn begin(&self) -> Result<Self::Tx, sqlx::Error>;

    /// One stored idempotency key, outside any batch.
    async fn key_row(&self, key: &str) -> Result<Option<KeyRow>, sqlx::Error>;

    /// Whether running the batch again resolves this failure (a deadlock,
    /// a serialization failure, a busy database).
    fn is_transient(&self, error: &sqlx::Error) -> bool;
}

/// Executes batches on a [`Dialect`].
pub(crate) struct Executor<D>(pub(crate) D);

#[async_trait]
impl<D: Dialect> BatchWriter for Executor<D> {
    async fn write_batch(&self, writes: &[Write]) -> Vec<Result<Written, StoreError>> {
        let prints = batch::fingerprints(writes);
        let mut outcomes = match self.run(writes, &prints).await {
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
        };
        self.recheck_keys(writes, &prints, &mut outcomes).await;
        outcomes
    }
}

impl<D: Dialect> Executor<D> {
    /// Runs the batch, again if it lost a race it cannot plan around.
    async fn run(
        &self,
        writes: &[Write],
        prints: &[Option<Vec<u8>>],
    ) -> Result<Vec<Result<Written, StoreError>>, sqlx::Error> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.attempt(writes, prints).await {
                Ok(Some(outcomes)) => return Ok(outcomes),
                Ok(None) if attempt < BATCH_RERUNS => {}
                Err(error) if self.0.is_transient(&error) && attempt < BATCH_RERUNS => {}
                Ok(None) => {
                    return Err(sqlx::Error::Protocol(
                        "idempotency keys kept racing; batch abandoned".into(),
                    ));
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// One attempt; `None` if it was rolled back because another process
    /// stored one of its idempotency keys after they were read.
    async fn attempt(
        &self,
        writes: &[Write],
        prints: &[Option<Vec<u8>>],
    ) -> Result<Option<Vec<Result<Written, StoreError>>>, sqlx::Error> {
        let mut tx = self.0.begin().await?;
        let lasts = tx.lock_logs(&batch::log_ids(writes)).await?;
        let keys = batch::keys(writes);
        let key_rows = if keys.is_empty() {
            Vec::new()
        } else {
            tx.read_keys(&keys).await?
        };
        let mut found = Found {
            lasts: lasts
                .into_iter()
                .map(|(id, last)| (id.into(), last as u64))
                .collect(),
            keys: key_rows.into_iter().collect(),
            taken: HashSet::new(),
        };
        let mut plan = batch::plan(writes, prints, &found);
        if !plan.rows.create_log.is_empty() {
            let created: HashSet<Uuid> = tx.insert_logs(&plan.rows).await?.into_iter().collect();
            if created.len() < plan.rows.create_log.len() {
                found.taken = plan
                    .rows
                    .create_log
                    .iter()
                    .filter(|id| !created.contains(id))
                    .map(|&id| id.into())
                    .collect();
                // The re-plan creates a subset of the logs just inserted.
                plan = batch::plan(writes, prints, &found);
            }
        }
        let base = if plan.rows.event_log.is_empty() {
            0
        } else {
            match tx.store_rows(&plan.rows).await? {
                Some(base) => base,
                None => return Ok(None),
            }
        };
        tx.commit().await?;
        Ok(Some(plan.outcomes(base)))
    }

    /// A keyed create that found its log taken may have raced a twin of
    /// itself in another process: once that committed, answer as a retry.
    async fn recheck_keys(
        &self,
        writes: &[Write],
        prints: &[Option<Vec<u8>>],
        outcomes: &mut [Result<Written, StoreError>],
    ) {
        for ((write, print), outcome) in writes.iter().zip(prints).zip(outcomes.iter_mut()) {
            if !batch::needs_key_recheck(write, outcome) {
                continue;
            }
            let (Some(key), Some(print)) = (&write.idempotency_key, print) else {
                continue;
            };
            if let Ok(Some(row)) = self.0.key_row(key).await {
                *outcome = earlier_outcome(&row, print).map(Written::Replayed);
            }
        }
    }
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
