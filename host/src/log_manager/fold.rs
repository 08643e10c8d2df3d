//! Folding a log from its cached reduction (or from the start) up to its
//! end, page by page; shared by reduce, validated appends and the deploy
//! guard.

use std::sync::atomic::Ordering;

use super::{LogError, LogManager};
use crate::LogId;
use crate::cache::{Anchor, CacheKey, CachedReduction};
use crate::runtime::{EventBatch, Fold, Folded, Reducer};
use crate::store::{StoreError, StoredEvent};

/// A fold positioned at a log's end.
pub(crate) struct AtEnd {
    /// The fold, holding the aggregate through `through_index`.
    pub(crate) fold: Fold,
    /// Index of the last event folded; `None` for a fold that has folded
    /// nothing (a log with no events, which only a create sees).
    pub(crate) through_index: Option<u64>,
    /// Whether it resumed from a cached reduction.
    pub(crate) from_cache: bool,
    /// How many events were folded here (after the cache).
    pub(crate) events_folded: u64,
    /// The event at `through_index`, when known.
    pub(crate) anchor: Option<Anchor>,
}

/// Where to start a fold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Start {
    /// From a cached reduction if one is usable, ignoring entries beyond
    /// `end` when the log's end is known.
    Cached { end: Option<u64> },
    /// From a cached reduction, taking it as the log's end without reading
    /// the store (from the start if there is none). For a write, whose
    /// store condition refuses it if the log ends elsewhere.
    Presumed,
    /// From the initial aggregate.
    Empty,
}

impl LogManager {
    /// Folds `log_id` with `reducer` from `start` through every stored
    /// event.
    pub(crate) async fn fold_to_end(
        &self,
        reducer: &Reducer,
        key: &CacheKey,
        log_id: LogId,
        start: Start,
    ) -> Result<AtEnd, LogError> {
        // The log's end, when the caller knows it: the fold stops there.
        let end = match start {
            Start::Cached { end } => end,
            Start::Presumed | Start::Empty => None,
        };
        let cached = match start {
            Start::Cached { end } => self.cached(key, end).await,
            Start::Presumed => self.cached(key, None).await,
            Start::Empty => None,
        };
        // A read trusts an entry only while the stored event at its index is
        // the one it was folded through; that page's rest is folded next. A
        // write presumes it, and the store's end condition checks it.
        let (cached, mut first_page) = match cached {
            Some(cached) if start != Start::Presumed => {
                let mut page = self
                    .store
                    .tail(
                        log_id,
                        cached.through_index,
                        self.options.batch_size + 1,
                        self.options.batch_bytes,
                    )
                    .await?;
                if page.first().is_some_and(|event| anchored(&cached, event)) {
                    page.remove(0);
                    (Some(cached), Some(page))
                } else {
                    self.counters.rejected.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%log_id, through_index = cached.through_index, "stale reduction cache entry ignored; folding from the start");
                    (None, None)
                }
            }
            other => (other, None),
        };
        let mut anchor = cached.as_ref().map(|c| c.anchor);
        let resumed = match cached {
            Some(cached) => {
                let state = cached.aggregate.into_bytes();
                let resuming = reducer.clone();
                match self.blocking(move || resuming.resume(&state)).await {
                    Ok(fold) => Some((fold, cached.through_index)),
                    Err(error) => {
                        // The entry decodes as an entry but not as this
                        // reducer's state: the cache cannot fail a request.
                        self.counters.errors.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(%error, %log_id, "cached aggregate unusable; folding from the start");
                        None
                    }
                }
            }
            None => None,
        };
        let from_cache = resumed.is_some();
        let (fold, mut through) = match resumed {
            Some((fold, through)) => (fold, Some(through)),
            None => {
                let starting = reducer.clone();
                first_page = None;
                anchor = None;
                (self.blocking(move || starting.start()).await?, None)
            }
        };
        if from_cache && start == Start::Presumed {
            return Ok(AtEnd {
                fold,
                through_index: through,
                from_cache,
                events_folded: 0,
                anchor,
            });
        }
        let mut fold = Some(fold);
        let mut events_folded = 0;
        let (mut batches, every) = (0u64, u64::from(self.options.checkpoint_batches));
        let mut batch = EventBatch::with_capacity(self.options.batch_size as usize, 0);
        loop {
            // From the start, an empty page means no such log; after a
            // cached reduction or a page, the log is known to exist.
            let page = match (first_page.take(), through) {
                (Some(page), _) if !page.is_empty() => page,
                // Only the cached entry's own event was on the first page:
                // the end, if it is known to be there; otherwise the event
                // may have filled the page's byte budget, so read on.
                (Some(_), Some(t)) if end.is_some_and(|end| t >= end) => break,
                (Some(_) | None, None) => {
                    self.store
                        .events(log_id, 0, self.options.batch_size, self.options.batch_bytes)
                        .await?
                }
                (Some(_) | None, Some(t)) => {
                    self.store
                        .tail(
                            log_id,
                            t + 1,
                            self.options.batch_size,
                            self.options.batch_bytes,
                        )
                        .await?
                }
            };
            let Some(last) = page.last() else { break };
            through = Some(last.index);
            anchor = Some(Anchor {
                position: last.position,
                recorded_at: last.recorded_at,
            });
            events_folded += page.len() as u64;
            batch.clear();
            for event in &page {
                batch
                    .push(event.index, event.recorded_at, event.payload.as_bytes())
                    .map_err(|e| StoreError::Unavailable(e.to_string()))?;
            }
            // Pages are cut by bytes as well as by count, so a short page is
            // not the end: a known end is, and otherwise an empty page.
            let at_end = end.is_some_and(|end| last.index >= end);
            batches += 1;
            // Reads leave a checkpoint every so many batches (the end is
            // cached by the reduce itself), so a retry of a reduce that did
            // not finish resumes from there.
            let checkpoint = !at_end
                && matches!(start, Start::Cached { .. })
                && every > 0
                && batches % every == 0;
            let mut taken = fold.take().expect("fold present between batches");
            let (returned, applied) = self
                .registry
                .runtime()
                .run(move || {
                    let applied = taken.apply(&batch).and_then(|()| {
                        if !checkpoint {
                            return Ok(None);
                        }
                        let json = taken.to_json()?;
                        let caching = taken.caching_policy()?;
                        Ok(Some(Folded { json, caching }))
                    });
                    (taken, applied.map(|so_far| (batch, so_far)))
                })
                .await;
            fold = Some(returned);
            let (returned, so_far) = applied?;
            batch = returned;
            if let (Some(so_far), Some(through), Some(anchor)) = (so_far, through, anchor) {
                self.cache_in_background(key.clone(), (through, anchor), &so_far);
            }
            if at_end {
                break;
            }
        }
        Ok(AtEnd {
            fold: fold.take().expect("fold present at the end"),
            through_index: through,
            from_cache,
            events_folded,
            anchor,
        })
    }
}

/// Whether `event` is the one `cached` was folded through.
fn anchored(cached: &CachedReduction, event: &StoredEvent) -> bool {
    event.index == cached.through_index
        && event.position == cached.anchor.position
        && event.recorded_at == cached.anchor.recorded_at
}
