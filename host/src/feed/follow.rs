//! One follower of the feed: the store's pages until it has caught up,
//! then the ring.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::ring::Behind;
use super::{Shared, Slot};
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
    id: u64,
    slot: Arc<Slot>,
    /// Whether it has read from the ring (then it no longer pages the
    /// store), and the ring's reset count then: a ring reset since (the
    /// tail found nobody following, as when this follower's client had
    /// just reconnected) sends it back to the store, not away as lagged.
    live: Option<u64>,
    ended: bool,
}

impl Follow {
    pub(super) fn new(shared: Arc<Shared>, after: u64, filter: FeedFilter) -> Self {
        let slot = Arc::new(Slot {
            filter,
            covered: AtomicU64::new(after),
            wake: tokio::sync::Notify::new(),
        });
        let id = shared.next_follower.fetch_add(1, Ordering::Relaxed);
        shared
            .followers
            .lock()
            .expect("followers lock")
            .insert(id, slot.clone());
        // The tail may be idle (it reads only while someone follows).
        shared.stored.notify_one();
        metrics::gauge!("eventlogs_feed_followers").increment(1);
        Self {
            shared,
            id,
            slot,
            live: None,
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
            let covered = self.slot.covered.load(Ordering::SeqCst);
            let (held, resets) = {
                let ring = self.shared.ring.lock().expect("ring lock");
                (ring.after(covered, RING_STEP), ring.resets())
            };
            match held {
                Ok(events) if events.is_empty() => {
                    // Woken when events it wants arrive (a wake sent since
                    // the ring was read is kept).
                    tokio::select! {
                        () = self.shared.closed.cancelled() => return None,
                        () = self.slot.wake.notified() => {}
                    }
                }
                Ok(events) => {
                    self.live = Some(resets);
                    let last = events.last().expect("not empty").event.position;
                    self.slot.cover(last);
                    let filter = &self.slot.filter;
                    let passing: Vec<_> = events
                        .into_iter()
                        .filter(|e| filter.matches(e.event.log_id, &e.reducer))
                        .collect();
                    if !passing.is_empty() {
                        return Some(Followed::Events(passing));
                    }
                }
                Err(Behind) if self.live == Some(resets) => {
                    metrics::counter!("eventlogs_feed_followers_lagged_total").increment(1);
                    return Some(Followed::Lagged);
                }
                Err(Behind) => {
                    let options = &self.shared.options;
                    let page = match self
                        .shared
                        .store
                        .feed(
                            covered,
                            &self.slot.filter,
                            options.page_limit,
                            options.page_bytes,
                        )
                        .await
                    {
                        Ok(page) => page,
                        Err(error) => return Some(Followed::Failed(error)),
                    };
                    self.slot.cover(page.through);
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
        self.shared
            .followers
            .lock()
            .expect("followers lock")
            .remove(&self.id);
        metrics::gauge!("eventlogs_feed_followers").decrement(1);
    }
}
