//! Folding a log from its cached reduction (or from the start) up to its
//! end, its events read as one stream while they are folded; shared by
//! reduce, validated appends and the deploy guard.

use std::sync::atomic::Ordering;

use super::CacheCounters;
use super::{LogError, LogManager};
use crate::LogId;
use crate::cache::{Anchor, CacheKey, CachedReduction};
use crate::runtime::{EventBatch, Fold, Folded, Reducer};
use crate::store::StoreError;

use futures_util::StreamExt;
use tokio::sync::mpsc;

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
    /// The aggregate's JSON, when nothing was folded after the cached
    /// entry the fold resumed: the entry's own (the fold resumed it, so it
    /// is this reducer's state).
    pub(crate) unchanged: Option<String>,
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
        match start {
            Start::Cached { .. } => self.fold_from(reducer, key, log_id, cached, end).await,
            Start::Presumed => self.fold_presumed(reducer, key, log_id, cached).await,
            Start::Empty => {
                self.fold_with(reducer, key, log_id, None, None, false)
                    .await
            }
        }
    }

    /// Folds `log_id` from `cached`, if it is usable (from the start
    /// otherwise), through `end` (every stored event when `None`),
    /// leaving checkpoints.
    pub(crate) async fn fold_from(
        &self,
        reducer: &Reducer,
        key: &CacheKey,
        log_id: LogId,
        cached: Option<CachedReduction>,
        end: Option<u64>,
    ) -> Result<AtEnd, LogError> {
        self.fold_with(reducer, key, log_id, cached, end, true)
            .await
    }

    /// A write's fold: from `cached`, presumed to be at the log's end (the
    /// store's end condition checks it), else from the start.
    async fn fold_presumed(
        &self,
        reducer: &Reducer,
        key: &CacheKey,
        log_id: LogId,
        cached: Option<CachedReduction>,
    ) -> Result<AtEnd, LogError> {
        if let Some(cached) = cached {
            let state = cached.aggregate.into_bytes();
            let resuming = reducer.clone();
            match self.blocking(move || resuming.resume(&state)).await {
                Ok(fold) => {
                    return Ok(AtEnd {
                        fold,
                        through_index: Some(cached.through_index),
                        from_cache: true,
                        events_folded: 0,
                        anchor: Some(cached.anchor),
                        unchanged: None,
                    });
                }
                Err(error) => unresumable(&self.counters, log_id, &error),
            }
        }
        self.fold_with(reducer, key, log_id, None, None, false)
            .await
    }

    /// Folds `log_id` from `cached` (from the start without it, or when it
    /// proves stale or unusable) through `end`; reads leave `checkpoints`
    /// every so many batches (the end is cached by the reduce itself), so
    /// a retry of a reduce that did not finish resumes from there.
    async fn fold_with(
        &self,
        reducer: &Reducer,
        key: &CacheKey,
        log_id: LogId,
        cached: Option<CachedReduction>,
        end: Option<u64>,
        checkpoints: bool,
    ) -> Result<AtEnd, LogError> {
        if let Some(cached) = cached {
            // A read trusts the entry only while the stored event at its
            // index is the one it was folded through.
            let state = cached.aggregate.into_bytes();
            let from = Begin::Resume(state, cached.through_index, cached.anchor);
            match self
                .fold_read(reducer, key, log_id, from, end, checkpoints)
                .await?
            {
                Read::Folded(at_end) => return Ok(*at_end),
                Read::Stale => {
                    self.counters.rejected.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%log_id, through_index = cached.through_index, "stale reduction cache entry ignored; folding from the start");
                }
                Read::Unresumable(error) => unresumable(&self.counters, log_id, &error),
            }
        }
        let read = self.fold_read(reducer, key, log_id, Begin::Fresh, end, checkpoints);
        let Read::Folded(at_end) = read.await? else {
            unreachable!("a fold from the start neither resumes nor checks an entry");
        };
        if at_end.through_index.is_none() {
            // No event at all: an error unless the log exists (empty).
            self.store.log(log_id).await?;
        }
        Ok(*at_end)
    }

    /// Folds the events after the entry `begin` resumes (every event, for
    /// a fresh fold) through `end` (the log's end when `None`). The events
    /// are read as one stream while the fold runs: the first batch while
    /// the fold is resumed or started, then batches of `batch_size` events
    /// or `batch_bytes` bytes, one read ahead. With `checkpoints`, the
    /// aggregate so far is cached every `checkpoint_batches` batches.
    async fn fold_read(
        &self,
        reducer: &Reducer,
        key: &CacheKey,
        log_id: LogId,
        begin: Begin,
        end: Option<u64>,
        checkpoints: bool,
    ) -> Result<Read, LogError> {
        let (batches, mut read) = mpsc::channel(1);
        let entry = match &begin {
            Begin::Resume(_, index, anchor) => Some((*index, *anchor)),
            Begin::Fresh => None,
        };
        let from = entry.map_or(0, |(index, _)| index);
        let reading = self.read_batches(log_id, (from, end), entry, batches);
        // The fold owns the receiving end: when it stops early, the read
        // stops too.
        let folding = async move {
            let reducer = reducer.clone();
            let (fold, mut unchanged) = match begin {
                Begin::Resume(state, ..) => {
                    let resume = move || reducer.resume(&state).map(|fold| (fold, state));
                    match self.blocking(resume).await {
                        Ok((fold, state)) => (fold, String::from_utf8(state).ok()),
                        Err(error) => return Ok(Read::Unresumable(error)),
                    }
                }
                Begin::Fresh => (self.blocking(move || reducer.start()).await?, None),
            };
            let mut fold = Some(fold);
            let mut through = entry.map(|(index, _)| index);
            let mut anchor = entry.map(|(_, anchor)| anchor);
            let mut events_folded = 0;
            let (mut batches, every) = (0u64, u64::from(self.options.checkpoint_batches));
            while let Some(next) = read.recv().await {
                let Batch { events, last } = match next? {
                    Some(batch) => batch,
                    None => return Ok(Read::Stale),
                };
                through = Some(last.0);
                anchor = Some(last.1);
                unchanged = None;
                events_folded += events.len() as u64;
                let at_end = end.is_some_and(|end| last.0 >= end);
                batches += 1;
                let checkpoint = checkpoints && !at_end && every > 0 && batches % every == 0;
                let mut taken = fold.take().expect("fold present between batches");
                let (returned, applied) = self
                    .registry
                    .runtime()
                    .run(move || {
                        let applied = taken.apply(&events).and_then(|()| {
                            if !checkpoint {
                                return Ok(None);
                            }
                            let json = taken.to_json()?;
                            let caching = taken.caching_policy()?;
                            Ok(Some(Folded { json, caching }))
                        });
                        (taken, applied)
                    })
                    .await;
                fold = Some(returned);
                if let Some(so_far) = applied? {
                    self.cache_in_background(key.clone(), last, &so_far);
                }
            }
            Ok(Read::Folded(Box::new(AtEnd {
                fold: fold.take().expect("fold present at the end"),
                through_index: through,
                from_cache: entry.is_some(),
                events_folded,
                anchor,
                unchanged,
            })))
        };
        let ((), folded) = tokio::join!(reading, folding);
        folded
    }

    /// Reads the events from index `from` through `end` into batches for
    /// [`Self::fold_read`]; the first must be `entry`'s event, if given,
    /// and is not sent (`None` is sent instead if it is not). Stops when
    /// the fold stops taking them.
    async fn read_batches(
        &self,
        log_id: LogId,
        (from, end): (u64, Option<u64>),
        mut entry: Option<(u64, Anchor)>,
        to: mpsc::Sender<Result<Option<Batch>, LogError>>,
    ) {
        let (size, bytes) = (self.options.batch_size as usize, self.options.batch_bytes);
        let fresh = || EventBatch::with_capacity(size.min(1024), 0);
        let mut events = self.store.read(log_id, from, end);
        let mut batch = fresh();
        let mut last = None;
        let mut held = 0u64;
        while let Some(event) = events.next().await {
            if to.is_closed() {
                return;
            }
            let event = match event {
                Ok(event) => event,
                Err(error) => {
                    let _ = to.send(Err(error.into())).await;
                    return;
                }
            };
            if let Some((index, anchor)) = entry.take() {
                let same = event.index == index
                    && event.position == anchor.position
                    && event.recorded_at == anchor.recorded_at;
                if !same {
                    let _ = to.send(Ok(None)).await;
                    return;
                }
                continue;
            }
            if let Err(error) = batch.push(event.index, event.recorded_at, event.payload.as_bytes())
            {
                let _ = to
                    .send(Err(StoreError::Unavailable(error.to_string()).into()))
                    .await;
                return;
            }
            held += event.payload.len() as u64;
            let anchor = Anchor {
                position: event.position,
                recorded_at: event.recorded_at,
            };
            last = Some((event.index, anchor));
            if batch.len() >= size || held >= bytes {
                let full = std::mem::replace(&mut batch, fresh());
                held = 0;
                let sent = Batch {
                    events: full,
                    last: last.expect("an event was batched"),
                };
                if to.send(Ok(Some(sent))).await.is_err() {
                    return;
                }
            }
        }
        if entry.is_some() {
            // Not even the entry's own event: it is beyond the log's end.
            let _ = to.send(Ok(None)).await;
        } else if let Some(last) = last.filter(|_| !batch.is_empty()) {
            let _ = to
                .send(Ok(Some(Batch {
                    events: batch,
                    last,
                })))
                .await;
        }
    }
}

/// How a read fold begins.
enum Begin {
    /// Resuming a cached aggregate (its JSON) folded through the event at
    /// this index, with this anchor.
    Resume(Vec<u8>, u64, Anchor),
    /// From the reducer's initial aggregate.
    Fresh,
}

/// How a read fold ended.
enum Read {
    /// At the end.
    Folded(Box<AtEnd>),
    /// The cached entry's event is not the one stored at its index.
    Stale,
    /// The cached aggregate is not this reducer's state.
    Unresumable(LogError),
}

/// Counts and logs a cached aggregate that decodes as an entry but not as
/// the reducer's state: the cache cannot fail a request, so the fold
/// starts over.
fn unresumable(counters: &CacheCounters, log_id: LogId, error: &LogError) {
    counters.errors.fetch_add(1, Ordering::Relaxed);
    tracing::warn!(%error, %log_id, "cached aggregate unusable; folding from the start");
}

/// Events read for a fold, and the last one's index and anchor.
struct Batch {
    events: EventBatch,
    last: (u64, Anchor),
}
