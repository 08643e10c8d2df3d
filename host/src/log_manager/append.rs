//! Validated writes: the log's active reducer folds the new events into the
//! aggregate at the log's end before they are stored, on the condition that
//! the log still ends there.
//!
//! The aggregate at the end comes from the cache (which every write keeps
//! current; this process's own last write-through is kept in memory too,
//! see `recent`), plus any events stored after it. If another writer moved the
//! end meanwhile, the store refuses the write as a conflict: a request that
//! stated `If-Match` gets that conflict (412), one that did not is
//! validated again against the new end and retried, so it never sees a
//! conflict. A refused or undecodable event stores nothing. Reducers that
//! declare they do not validate skip the fold.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::fold::{AtEnd, Start};
use super::{LogError, LogManager};
use crate::LogId;
use crate::cache::{Anchor, CacheKey, CachedReduction};
use crate::runtime::{self, EventBatch, Folded, Reducer};
use crate::store::{Appended, Events, StoreError, Write, Written};

/// How long an append without `If-Match` keeps re-validating after losing
/// races to other writers before it answers 503 (never 412).
const RETRY_FOR: Duration = Duration::from_secs(30);

/// Appending events to an existing log, atomically.
#[derive(Debug, Clone)]
pub struct Append<'a> {
    /// The log to append to.
    pub log_id: LogId,
    /// The events, stored at contiguous indexes after the current last one;
    /// at least one.
    pub events: Events,
    /// If set, the append succeeds only if the log currently ends at this
    /// index (optimistic concurrency).
    pub expected_last_index: Option<u64>,
    /// Makes a retried append record nothing new.
    pub idempotency_key: Option<&'a str>,
}

impl LogManager {
    /// Creates a log bound to `reducer` with its first events, under
    /// `log_id` or a new one. The reducer validates the events first.
    pub async fn create(
        &self,
        log_id: Option<LogId>,
        reducer: &str,
        events: Events,
        idempotency_key: Option<&str>,
    ) -> Result<Written, LogError> {
        let active = self.registry.resolve_active(reducer).await?;
        let write = Write::create(
            log_id.unwrap_or_default(),
            log_id.is_some(),
            reducer,
            events,
        )
        .with_key(idempotency_key);
        if !active.validates() {
            return Ok(self.store_write(write).await?);
        }
        let turn = self.admission.enter(reducer).await?;
        let start = self
            .blocking({
                let active = active.clone();
                move || active.start()
            })
            .await?;
        let at_end = AtEnd {
            fold: start,
            through_index: None,
            from_cache: false,
            events_folded: 0,
            anchor: None,
            unchanged: None,
        };
        let folded = match self.validate(at_end, &write).await {
            Ok(folded) => folded,
            Err(refused) => return self.refused(&write, refused).await,
        };
        drop(turn);
        let recorded_at = write.recorded_at;
        let written = self.store_write(write).await?;
        if let Written::Stored(appended) = written {
            self.bindings.insert(appended.log_id, reducer.into());
            let key = cache_key(reducer, &active, appended.log_id);
            self.cache_now(&key, written_end(&appended, recorded_at), &folded)
                .await;
        }
        Ok(written)
    }

    /// Appends events atomically, after the log's reducer validated them;
    /// see [`Append`].
    pub async fn append(&self, request: Append<'_>) -> Result<Written, LogError> {
        if request.events.is_empty() {
            return Err(StoreError::NoEvents.into());
        }
        let name = self.binding(request.log_id).await?;
        let active = self.registry.resolve_active(&name).await?;
        if !active.validates() {
            let write = Write::append(
                request.log_id,
                request.expected_last_index,
                request.events.clone(),
            )
            .with_key(request.idempotency_key);
            return Ok(self.store_write(write).await?);
        }
        let key = cache_key(&name, &active, request.log_id);
        // Appends without If-Match take turns on their log in this process,
        // each validating against the end the previous one left; racers
        // with If-Match need no turn: the store lets one of them win.
        let log_turn = match request.expected_last_index {
            None => Some(self.turns.take(request.log_id).await),
            Some(_) => None,
        };
        let deadline = Instant::now() + RETRY_FOR;
        // The cache is almost always current (every write keeps it so); if
        // it is behind, the store refuses the write and the retry reads the
        // events after it.
        let mut start = Start::Presumed;
        loop {
            let turn = self.admission.enter(&name).await?;
            let checked = match start {
                Start::Presumed => match self.presumed_end(&key).await {
                    Some(entry) => self.check_on_cache(&active, &key, entry, &request).await,
                    // No entry: the log is folded from the start.
                    None => Some(Checked::Again(Start::Empty)),
                },
                _ => None,
            };
            let checked = match checked {
                Some(checked) => checked,
                None => self.check(&active, &key, &request, start).await?,
            };
            drop(turn);
            let (write, folded) = match checked {
                Checked::Valid(write, folded) => (write, folded),
                Checked::Refused(write, refusal) => return self.refused(&write, refusal).await,
                Checked::Again(next) => {
                    start = next;
                    continue;
                }
                Checked::Answer(answer) => return answer,
            };
            let end = write.expected_last_index().unwrap_or_default();
            let recorded_at = write.recorded_at;
            match self.store_write(write).await {
                Ok(Written::Stored(appended)) => {
                    // Before answering, and still in this log's turn: the
                    // next append and the next reduce fold nothing.
                    self.cache_now(&key, written_end(&appended, recorded_at), &folded)
                        .await;
                    drop(log_turn);
                    return Ok(Written::Stored(appended));
                }
                Err(StoreError::ConcurrentAppend { .. })
                    if request.expected_last_index.is_none() && Instant::now() >= deadline =>
                {
                    // Without If-Match a conflict is never the answer: the
                    // log moves faster than it can be validated; retry later.
                    return Err(StoreError::Unavailable(format!(
                        "log {} kept moving for {RETRY_FOR:?}",
                        request.log_id
                    ))
                    .into());
                }
                Err(StoreError::ConcurrentAppend { current_last_index })
                    if request.expected_last_index.is_none() =>
                {
                    self.recent.forget(&key);
                    // Another writer moved the end. A cached aggregate
                    // beyond the real end is not this log's: skip it.
                    start = if current_last_index < end {
                        Start::Empty
                    } else {
                        Start::Cached {
                            end: Some(current_last_index),
                        }
                    };
                }
                other => return Ok(other?),
            }
        }
    }

    /// The aggregate an append presumes is at the log's end: the one this
    /// process wrote through last, else the shared cache's.
    async fn presumed_end(&self, key: &CacheKey) -> Option<CachedReduction> {
        match self.recent.get(key) {
            Some(entry) => {
                self.counters.hits.fetch_add(1, Ordering::Relaxed);
                Some(entry)
            }
            None => self.cached(key, None).await,
        }
    }

    /// The common case, checked together with other appends of the same
    /// reducer version (`runtime::checks`): resume the cached aggregate,
    /// taking it as the log's end, and fold the new events into it.
    /// `None` (check the long way) when it does not end where the request
    /// expects.
    async fn check_on_cache(
        &self,
        active: &Reducer,
        key: &CacheKey,
        cached: CachedReduction,
        request: &Append<'_>,
    ) -> Option<Checked> {
        let end = cached.through_index;
        if request
            .expected_last_index
            .is_some_and(|expected| expected != end)
        {
            return None;
        }
        let write = Write::append(request.log_id, Some(end), request.events.clone())
            .with_key(request.idempotency_key);
        let batch = match event_batch(end + 1, &write) {
            Ok(batch) => batch,
            Err(error) => return Some(Checked::Answer(Err(error))),
        };
        // Checked together with concurrent appends to other logs of this
        // version, in one instance.
        let checked = active.check(cached.aggregate.into_bytes(), batch).await;
        Some(match checked {
            runtime::Checked::Folded(folded) => Checked::Valid(write, folded),
            runtime::Checked::Refused(refusal) => Checked::Refused(write, refusal.into()),
            runtime::Checked::Unresumable(error) => {
                // The entry decodes as an entry but not as this reducer's
                // state: the cache cannot fail a request.
                self.counters.errors.fetch_add(1, Ordering::Relaxed);
                self.recent.forget(key);
                tracing::warn!(%error, log_id = %request.log_id, "cached aggregate unusable; folding from the start");
                Checked::Again(Start::Empty)
            }
        })
    }

    /// Validates the request against the log's end as folded from `start`.
    async fn check(
        &self,
        active: &Reducer,
        key: &CacheKey,
        request: &Append<'_>,
        start: Start,
    ) -> Result<Checked, LogError> {
        let at_end = self.fold_to_end(active, key, request.log_id, start).await?;
        let end = at_end
            .through_index
            .ok_or(StoreError::LogNotFound(request.log_id))?;
        if let Some(expected) = request.expected_last_index
            && expected != end
        {
            // An end read only from the cache is confirmed first: an entry
            // beyond the log's end (a restored database) is not this log's.
            if start == Start::Presumed || (at_end.from_cache && at_end.events_folded == 0) {
                let stored_end = self.store.log(request.log_id).await?.last_index;
                if stored_end != end {
                    return Ok(Checked::Again(Start::Cached {
                        end: Some(stored_end),
                    }));
                }
            }
            // Nothing can be stored at `expected` (a log never shrinks, and
            // one beyond the end would leave a gap), but a retry of a
            // request that was stored is still a replay.
            let unvalidated = Write::append(
                request.log_id,
                request.expected_last_index,
                request.events.clone(),
            )
            .with_key(request.idempotency_key);
            return Ok(Checked::Answer(
                match self.store.earlier(&unvalidated).await? {
                    Some(earlier) => Ok(earlier),
                    None => Err(StoreError::ConcurrentAppend {
                        current_last_index: end,
                    }
                    .into()),
                },
            ));
        }
        let write = Write::append(request.log_id, Some(end), request.events.clone())
            .with_key(request.idempotency_key);
        Ok(match self.validate(at_end, &write).await {
            Ok(folded) => Checked::Valid(write, folded),
            Err(refusal) => Checked::Refused(write, refusal),
        })
    }

    /// Folds the write's events into the aggregate at the log's end, as the
    /// store will record them; the aggregate after them, or the reducer's
    /// refusal.
    async fn validate(&self, at_end: AtEnd, write: &Write) -> Result<Folded, LogError> {
        let batch = event_batch(at_end.through_index.map_or(0, |t| t + 1), write)?;
        let mut fold = at_end.fold;
        self.blocking(move || {
            fold.apply(&batch)?;
            fold.finish()
        })
        .await
    }

    /// The answer to a write its reducer refused: a retry of a request that
    /// was stored before (its key says so) is still a replay; anything else
    /// is the refusal.
    async fn refused(&self, write: &Write, refusal: LogError) -> Result<Written, LogError> {
        if write.idempotency_key.is_some()
            && let Some(earlier) = self.store.earlier(write).await?
        {
            return Ok(earlier);
        }
        Err(refusal)
    }
}

/// A validated append's next step.
enum Checked {
    /// Valid: store it, and cache the aggregate after it.
    Valid(Write, Folded),
    /// The reducer refused it.
    Refused(Write, LogError),
    /// Check again from there.
    Again(Start),
    /// Answered without storing (a stale expectation, a replay).
    Answer(Result<Written, LogError>),
}

/// The write's events as the reducer sees them, the first at `first`.
fn event_batch(first: u64, write: &Write) -> Result<EventBatch, LogError> {
    let mut batch = EventBatch::with_capacity(write.events.len(), 0);
    for (index, event) in (first..).zip(write.events.iter()) {
        batch
            .push(index, write.recorded_at, event.as_str().as_bytes())
            .map_err(|e| StoreError::Unstorable(e.to_string()))?;
    }
    Ok(batch)
}

/// The index and anchor of the last event a write stored.
fn written_end(appended: &Appended, recorded_at: i64) -> (u64, Anchor) {
    let anchor = Anchor {
        position: appended.last_position(),
        recorded_at,
    };
    (appended.last_index, anchor)
}

fn cache_key(name: &str, reducer: &Reducer, log_id: LogId) -> CacheKey {
    CacheKey {
        reducer: name.to_owned(),
        version: reducer.version(),
        log_id,
    }
}
