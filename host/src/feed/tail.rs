//! The task that reads newly committed events into the ring.

use std::sync::{Arc, Weak};
use std::time::Duration;

use super::Shared;
use crate::store::{FeedEvent, FeedFilter, Hints, StoreError};

/// Events read per store page.
const PAGE_EVENTS: u32 = 1000;

/// How long to wait before asking for the store's hints again after they
/// failed.
const HINTS_RETRY: Duration = Duration::from_secs(1);

/// The shortest time between two reads: under a steady write load every
/// commit wakes the tail, and a read per commit would cost the writers
/// more than the few milliseconds of delivery this adds.
const MIN_READ_INTERVAL: Duration = Duration::from_millis(5);

/// The shortest time between two reads after one that woke no follower
/// (every follower waits for other events, or for none yet): such
/// followers wait at most this much longer for the first event they want,
/// and a busy feed is read a fifth as often for them.
const IDLE_READ_INTERVAL: Duration = Duration::from_millis(25);

/// Reads new events whenever woken, until the feed is closed or dropped.
pub(super) async fn run(feed: Weak<Shared>) {
    let mut hints: Option<Box<dyn Hints>> = None;
    let mut hints_failed_at: Option<tokio::time::Instant> = None;
    // Nobody followed when it last looked: the ring jumps to the store's
    // head instead of reading what nobody waits for.
    let mut stale = true;
    loop {
        let Some(shared) = feed.upgrade() else { return };
        if shared.closed.is_cancelled() {
            return;
        }
        if shared.options.hints
            && hints.is_none()
            && hints_failed_at.is_none_or(|at| at.elapsed() >= HINTS_RETRY)
        {
            match shared.store.feed_hints().await {
                Ok(new) => hints = Some(new),
                Err(error) => {
                    tracing::warn!(%error, "feed: no hints from the store; polling");
                    hints_failed_at = Some(tokio::time::Instant::now());
                }
            }
        }
        if shared.followers.lock().expect("followers lock").is_empty() {
            stale = true;
        } else {
            let read_at = tokio::time::Instant::now();
            let interval = match read_new(&shared, &mut stale).await {
                Ok(false) => IDLE_READ_INTERVAL,
                Ok(true) => MIN_READ_INTERVAL,
                Err(error) => {
                    tracing::warn!(%error, "feed: reading new events failed; retrying");
                    MIN_READ_INTERVAL
                }
            };
            tokio::time::sleep_until(read_at + interval).await;
        }
        let poll = shared.options.poll;
        let closed = shared.closed.clone();
        // The feed is upgraded afresh each round: once every `Feed` is
        // dropped, the task ends after its next wake (at most `poll`).
        let stored = async { shared.stored.notified().await };
        let hinted = async {
            match hints.as_mut() {
                Some(h) => h.changed().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = closed.cancelled() => return,
            () = stored => {}
            hint = hinted => {
                if let Err(error) = hint {
                    tracing::warn!(%error, "feed: hints lost; reconnecting");
                    hints = None;
                }
            }
            () = tokio::time::sleep(poll) => {}
        }
    }
}

/// Reads everything committed after the ring's head into the ring, and
/// tells the followers; whether any of them was woken.
async fn read_new(shared: &Arc<Shared>, stale: &mut bool) -> Result<bool, StoreError> {
    let mut woke = false;
    if std::mem::take(stale) {
        let head = shared.store.feed_head().await?;
        shared.ring.lock().expect("ring lock").reset(head);
        // Anyone behind the new floor reads the store.
        woke |= shared.announce(&[], head, head, head);
    }
    loop {
        let after = shared.ring.lock().expect("ring lock").head();
        let page = shared
            .store
            .feed(
                after,
                &FeedFilter::default(),
                PAGE_EVENTS,
                shared.options.page_bytes,
            )
            .await?;
        let caught_up = page.through >= page.head;
        let through = page.through;
        if through > after {
            let events: Vec<Arc<FeedEvent>> = page.events.into_iter().map(Arc::new).collect();
            let floor = {
                let mut ring = shared.ring.lock().expect("ring lock");
                ring.extend(events.clone(), through);
                ring.floor()
            };
            woke |= shared.announce(&events, floor, after, through);
            metrics::gauge!("eventlogs_feed_head_position").set(through as f64);
        }
        if caught_up {
            return Ok(woke);
        }
    }
}
