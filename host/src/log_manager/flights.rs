//! Single-flight reduces: concurrent reduces of the same log, with the same
//! reducer version, to the same end share one fold. The end is part of the
//! key, so a reduce never answers with an aggregate older than the log it
//! read (read-your-writes holds).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::OnceCell;

use super::{LogError, Reduction};
use crate::LogId;
use crate::runtime::Version;

/// What one shared reduce is keyed by.
type FlightKey = (LogId, Version, u64);

type Flight = Arc<OnceCell<Result<Reduction, LogError>>>;

/// Reduces in flight.
#[derive(Default)]
pub(crate) struct Flights {
    flights: Mutex<HashMap<FlightKey, Flight>>,
}

impl Flights {
    /// Runs `reduce` for `key`, or waits for the run already in flight and
    /// shares its outcome. If the request running it is dropped, a waiting
    /// one takes over.
    pub(crate) async fn share(
        &self,
        key: FlightKey,
        reduce: impl Future<Output = Result<Reduction, LogError>>,
    ) -> Result<Reduction, LogError> {
        let flight = self
            .flights
            .lock()
            .expect("flights poisoned")
            .entry(key)
            .or_default()
            .clone();
        let outcome = flight.get_or_init(|| reduce).await.clone();
        let mut flights = self.flights.lock().expect("flights poisoned");
        if flights
            .get(&key)
            .is_some_and(|current| Arc::ptr_eq(current, &flight))
        {
            flights.remove(&key);
        }
        outcome
    }

    /// How many reduces are in flight (for tests).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.flights.lock().expect("flights poisoned").len()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    fn reduction(through_index: u64) -> Reduction {
        Reduction {
            log_id: LogId::default(),
            reducer: "r".into(),
            reducer_version: Version::of(b"r"),
            through_index,
            aggregate: "{}".into(),
            reduced_at: 0,
            from_cache: false,
            events_folded: 0,
        }
    }

    #[tokio::test]
    async fn concurrent_reduces_to_one_end_share_one_run_and_other_ends_do_not() {
        let flights = Arc::new(Flights::default());
        let runs = Arc::new(AtomicUsize::new(0));
        let log = LogId::default();
        let version = Version::of(b"r");
        let mut waiting = Vec::new();
        for i in 0..20u64 {
            let (flights, runs) = (flights.clone(), runs.clone());
            // Half reduce to end 5, half to end 6.
            let end = 5 + i % 2;
            waiting.push(tokio::spawn(async move {
                flights
                    .share((log, version, end), async {
                        runs.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        Ok(reduction(end))
                    })
                    .await
                    .map(|r| (end, r.through_index))
            }));
        }
        for task in waiting {
            let (asked, got) = task.await.unwrap().unwrap();
            assert_eq!(asked, got);
        }
        assert_eq!(runs.load(Ordering::SeqCst), 2);
        assert_eq!(flights.len(), 0);
    }
}
