//! One follower of the feed: the store's pages until it has caught up,
//! then the ring.

use std::sync::Arc;

use tokio::sync::watch;

use super::Shared;
use super::ring::Behind;
use crate::store::{FeedEvent, FeedFilter, StoreError};

/// Events handed out of the ring per step, at most.
const RING_STEP: usize = 256;

/// What one step of a follower gives.
#[derive(Debug)]
pub enum Followed {
    /// The next events passing the filter, in position order (at least one).
    Events(Vec<Arc<FeedEvent>>),
    /// The follower fell further behind than the ring holds after it had
    /// caught up; it ends here. Resume after the last position received.
    Lagged,
    /// The store failed; the follower ends here. Resume after the last
    /// position received.
    Failed(StoreError),
}

/// A follower of the feed, from [`super::Feed::follow`].
pub struct Follow {
    shared: Arc<Shared>,
    head: watch::Receiver<u64>,
    filter: FeedFilter,
    /// Every event up to this position was handed out or filtered away.
    covered: u64,
    /// Whether it has read from the ring (then it no longer pages the store).
    live: bool,
    ended: bool,
}

impl Follow {
    pub(super) fn new(shared: Arc<Shared>, after: u64, filter: FeedFilter) -> Self {
        let head = shared.head.subscribe();
        // The tail may be idle (it reads only while someone follows).
        shared.stored.notify_one();
        metrics::gauge!("eventlogs_feed_followers").increment(1);
        Self {
            shared,
            head,
            filter,
            covered: after,
            live: false,
            ended: false,
        }
    }

    /// The next events, or why the follower ended; `None` once it ended or
    /// the feed was closed. Waits while there is nothing new.
    pub async fn next(&mut self) -> Option<Followed> {
        if self.ended {
            return None;
        }
        let step = self.step().await;
        if !matches!(step, Some(Followed::Events(_))) {
            self.ended = true;
        }
        step
    }

    async fn step(&mut self) -> Option<Followed> {
        loop {
            if self.shared.closed.is_cancelled() {
                return None;
            }
            let held = {
                let ring = self.shared.ring.lock().expect("ring lock");
                // Marked seen before reading: a head announced after this
                // wakes the wait below.
                self.head.borrow_and_update();
                ring.after(self.covered, RING_STEP)
            };
            match held {
                Ok(events) if events.is_empty() => {
                    tokio::select! {
                        () = self.shared.closed.cancelled() => return None,
                        changed = self.head.changed() => {
                            if changed.is_err() {
                                return None;
                            }
                        }
                    }
                }
                Ok(events) => {
                    self.live = true;
                    let last = events.last().expect("not empty").event.position;
                    self.covered = last;
                    let passing: Vec<_> = events
                        .into_iter()
                        .filter(|e| self.filter.matches(e.event.log_id, &e.reducer))
                        .collect();
                    if !passing.is_empty() {
                        return Some(Followed::Events(passing));
                    }
                }
                Err(Behind) if self.live => {
                    metrics::counter!("eventlogs_feed_followers_lagged_total").increment(1);
                    return Some(Followed::Lagged);
                }
                Err(Behind) => {
                    let options = &self.shared.options;
                    let page = match self
                        .shared
                        .store
                        .feed(
                            self.covered,
                            &self.filter,
                            options.page_limit,
                            options.page_bytes,
                        )
                        .await
                    {
                        Ok(page) => page,
                        Err(error) => return Some(Followed::Failed(error)),
                    };
                    self.covered = page.through;
                    if !page.events.is_empty() {
                        return Some(Followed::Events(
                            page.events.into_iter().map(Arc::new).collect(),
                        ));
                    }
                }
            }
        }
    }
}

impl Drop for Follow {
    fn drop(&mut self) {
        metrics::gauge!("eventlogs_feed_followers").decrement(1);
    }
}
