//! Admission control between reducers: each reducer name runs at most
//! `limit` folds at once (reduces and validations); more wait up to
//! `queue_timeout` for a turn and are then refused as busy, so one slow or
//! hostile reducer cannot take every instance slot and thread from the
//! others.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::LogError;

/// The per-reducer gates.
pub(crate) struct Admission {
    limit: usize,
    queue_timeout: Duration,
    gates: Mutex<HashMap<String, Arc<Semaphore>>>,
}

/// A reducer's turn: its fold runs while this is held.
pub(crate) type Turn = OwnedSemaphorePermit;

impl Admission {
    /// At most `limit` folds per reducer at once, queueing up to
    /// `queue_timeout` for a turn.
    pub(crate) fn new(limit: usize, queue_timeout: Duration) -> Self {
        Self {
            limit: limit.max(1),
            queue_timeout,
            gates: Mutex::default(),
        }
    }

    /// Waits for a turn of `reducer`; [`LogError::ReducerBusy`] after the
    /// queue timeout.
    pub(crate) async fn enter(&self, reducer: &str) -> Result<Turn, LogError> {
        let gate = {
            let mut gates = self.gates.lock().expect("admission gates poisoned");
            match gates.get(reducer) {
                Some(gate) => gate.clone(),
                None => gates
                    .entry(reducer.to_owned())
                    .or_insert_with(|| Arc::new(Semaphore::new(self.limit)))
                    .clone(),
            }
        };
        if let Ok(turn) = gate.clone().try_acquire_owned() {
            return Ok(turn);
        }
        match tokio::time::timeout(self.queue_timeout, gate.acquire_owned()).await {
            Ok(Ok(turn)) => Ok(turn),
            // Timed out (the semaphore is never closed).
            _ => {
                metrics::counter!("eventlogs_reducer_busy_total").increment(1);
                Err(LogError::ReducerBusy {
                    reducer: reducer.to_owned(),
                    limit: self.limit,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_full_reducer_refuses_after_the_queue_timeout_and_others_still_enter() {
        let admission = Admission::new(2, Duration::from_millis(50));
        let _a = admission.enter("slow").await.unwrap();
        let b = admission.enter("slow").await.unwrap();
        let started = std::time::Instant::now();
        assert!(matches!(
            admission.enter("slow").await,
            Err(LogError::ReducerBusy { limit: 2, .. })
        ));
        assert!(started.elapsed() >= Duration::from_millis(50));
        let _other = admission.enter("fast").await.unwrap();
        // A turn given back lets the queue in.
        let waiting = tokio::spawn(async move {
            let admission = admission;
            admission.enter("slow").await.map(drop)
        });
        drop(b);
        waiting.await.unwrap().unwrap();
    }
}
