//! Idempotency keys expire: a background sweep deletes keys stored longer
//! ago than the retention, a batch at a time, so the keys table does not
//! grow forever. A retry with a forgotten key is a new request.

use std::time::Duration;

use tokio::task::JoinHandle;

use super::{LogError, LogManager};
use crate::clock::now_micros;

/// Keys deleted per statement.
const SWEEP_BATCH: u32 = 10_000;

impl LogManager {
    /// Deletes every idempotency key stored more than `retention` ago;
    /// returns how many.
    pub async fn forget_keys_older_than(&self, retention: Duration) -> Result<u64, LogError> {
        let cutoff =
            now_micros().saturating_sub(i64::try_from(retention.as_micros()).unwrap_or(i64::MAX));
        let mut forgotten = 0;
        loop {
            let deleted = self.store.forget_keys(cutoff, SWEEP_BATCH).await?;
            forgotten += deleted;
            if deleted < u64::from(SWEEP_BATCH) {
                return Ok(forgotten);
            }
        }
    }

    /// Sweeps expired keys now and then (a quarter of the retention, between
    /// 100 ms and an hour) until the task is aborted.
    pub fn sweep_keys_in_background(&self, retention: Duration) -> JoinHandle<()> {
        let manager = self.clone();
        let every = (retention / 4).clamp(Duration::from_millis(100), Duration::from_secs(3600));
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                match manager.forget_keys_older_than(retention).await {
                    Ok(0) => {}
                    Ok(forgotten) => tracing::info!(forgotten, "expired idempotency keys deleted"),
                    Err(error) => tracing::warn!(%error, "idempotency key sweep failed"),
                }
            }
        })
    }
}
