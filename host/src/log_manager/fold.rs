//! Folding a log from its cached reduction (or from the start) up to its
//! end, page by page; shared by reduce, validated appends and the deploy
//! guard.

use std::sync::atomic::Ordering;

use super::{LogError, LogManager};
use crate::LogId;
use crate::cache::CacheKey;
use crate::runtime::{EventBatch, Fold, Reducer};
use crate::store::StoreError;

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
        let cached = match start {
            Start::Cached { end } => self.cached(key, end).await,
            Start::Presumed => self.cached(key, None).await,
            Start::Empty => None,
        };
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
                (self.blocking(move || starting.start()).await?, None)
            }
        };
        if from_cache && start == Start::Presumed {
            return Ok(AtEnd {
                fold,
                through_index: through,
                from_cache,
                events_folded: 0,
            });
        }
        let mut fold = Some(fold);
        let mut events_folded = 0;
        let mut batch = EventBatch::with_capacity(self.options.batch_size as usize, 0);
        loop {
            // From the start, an empty page means no such log; after a
            // cached reduction or a page, the log is known to exist.
            let page = match through {
                None => {
                    self.store
                        .events(log_id, 0, self.options.batch_size)
                        .await?
                }
                Some(t) => {
                    self.store
                        .tail(log_id, t + 1, self.options.batch_size)
                        .await?
                }
            };
            let Some(last) = page.last() else { break };
            through = Some(last.index);
            events_folded += page.len() as u64;
            batch.clear();
            for event in &page {
                batch
                    .push(event.index, event.recorded_at, event.payload.as_bytes())
                    .map_err(|e| StoreError::Unavailable(e.to_string()))?;
            }
            let mut taken = fold.take().expect("fold present between batches");
            let (returned, applied) = self
                .registry
                .runtime()
                .run(move || {
                    let applied = taken.apply(&batch);
                    (taken, applied.map(|()| batch))
                })
                .await;
            fold = Some(returned);
            batch = applied?;
            if page.len() < self.options.batch_size as usize {
                // A short page is the end; no need to ask for an empty one.
                break;
            }
        }
        Ok(AtEnd {
            fold: fold.take().expect("fold present at the end"),
            through_index: through,
            from_cache,
            events_folded,
        })
    }
}
