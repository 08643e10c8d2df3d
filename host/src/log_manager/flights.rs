//! Single-flight reduces: concurrent reduces of the same log, with the same
//! reducer version, to the same end share one fold. The end is part of the
//! key, so a reduce never answers with an aggregate older than the log it
//! read (read-your-writes holds).
//!
//! The fold runs as a task of its own: a request that gives up (its client
//! went away, or its timeout passed) leaves it running, so it finishes in
//! the background and caches its aggregate, and the retry finds it there.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use super::{LogError, Reduction};
use crate::LogId;
use crate::runtime::Version;

/// What one shared reduce is keyed by.
type FlightKey = (LogId, Version, u64);

type Outcome = Option<Result<Reduction, LogError>>;

/// Reduces in flight.
#[derive(Default)]
pub(crate) struct Flights {
    flights: Mutex<HashMap<FlightKey, watch::Receiver<Outcome>>>,
}

impl Flights {
    /// Runs `reduce` for `key` as a task of its own, or joins the one
    /// already in flight, and waits for its outcome.
    pub(crate) async fn share(
        self: &Arc<Self>,
        key: FlightKey,
        reduce: impl Future<Output = Result<Reduction, LogError>> + Send + 'static,
    ) -> Result<Reduction, LogError> {
        let mut outcome = {
            let mut flights = self.flights.lock().expect("flights poisoned");
            match flights.get(&key) {
                Some(flight) => flight.clone(),
                None => {
                    let (done, outcome) = watch::channel(None);
                    flights.insert(key, outcome.clone());
                    let flights = self.clone();
                    tokio::spawn(async move {
                        let reduced = reduce.await;
                        flights
                            .flights
                            .lock()
                            .expect("flights poisoned")
                            .remove(&key);
                        done.send_replace(Some(reduced));
                    });
                    outcome
                }
            }
        };
        let finished = outcome
            .wait_for(Option::is_some)
            .await
            .expect("a reduce task panicked");
        finished.clone().expect("waited for an outcome")
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
                    .share((log, version, end), async move {
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

    #[tokio::test]
    async fn a_reduce_whose_callers_all_gave_up_still_finishes() {
        let flights = Arc::new(Flights::default());
        let finished = Arc::new(AtomicUsize::new(0));
        let key = (LogId::default(), Version::of(b"r"), 1);
        let gave_up = tokio::time::timeout(Duration::from_millis(20), {
            let finished = finished.clone();
            flights.share(key, async move {
                tokio::time::sleep(Duration::from_millis(100)).await;
                finished.fetch_add(1, Ordering::SeqCst);
                Ok(reduction(1))
            })
        })
        .await;
        assert!(gave_up.is_err());
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(finished.load(Ordering::SeqCst), 1);
        assert_eq!(flights.len(), 0);
    }
}
