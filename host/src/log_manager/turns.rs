//! Turns: appends to one log in this process take turns, so each validates
//! against the aggregate the previous one left (and cached) instead of
//! racing it to the same index and folding again.

use std::sync::Arc;

use tokio::sync::{Mutex, OwnedMutexGuard};

use crate::LogId;

/// Locks striped by log id: a fixed number, so memory does not grow with
/// the number of logs; two logs sharing a stripe merely take turns too.
pub(crate) struct Turns {
    stripes: Vec<Arc<Mutex<()>>>,
}

/// A log's turn; the next append to it waits until this is dropped.
pub(crate) type Turn = OwnedMutexGuard<()>;

impl Turns {
    /// `stripes` locks (at least one).
    pub(crate) fn new(stripes: usize) -> Self {
        Self {
            stripes: (0..stripes.max(1)).map(|_| Arc::default()).collect(),
        }
    }

    /// Waits for `log_id`'s turn.
    pub(crate) async fn take(&self, log_id: LogId) -> Turn {
        let bits = log_id.as_uuid().as_u128();
        // UUIDv7 starts with a timestamp: take the random tail.
        let stripe = (bits as u64 % self.stripes.len() as u64) as usize;
        self.stripes[stripe].clone().lock_owned().await
    }
}
