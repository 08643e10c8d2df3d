//! The log manager: the seed library's API over an event store, a reduction
//! cache and the reducer registry. It knows nothing about HTTP.
//!
//! `reduce` starts from the cached reduction when there is a usable one,
//! streams only the events after it from the store in batches, folds them in
//! the reducer's sandbox on a blocking thread, and returns; the new
//! reduction is written to the cache in the background. A cache miss, error
//! or corrupt entry means "fold from the start" — logged and counted, never
//! a failure.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::Value;
use tokio_util::task::TaskTracker;

use crate::LogId;
use crate::cache::{CacheKey, CachedReduction, ReductionCache};
use crate::clock::now_micros;
use crate::registry::{Registry, RegistryError};
use crate::runtime::{CachingPolicy, EventBatch, Fold, ReducerError, Version};
use crate::store::{Append, Appended, Create, EventStore, LogInfo, StoreError, StoredEvent};

/// Tuning of a [`LogManager`].
#[derive(Debug, Clone)]
pub struct LogManagerOptions {
    /// Events fetched from the store and folded per reducer call.
    pub batch_size: u32,
    /// Logs shorter than this (in events) are not cached.
    pub cache_min_events: u64,
    /// How long cached reductions live; `None` keeps them until evicted.
    pub cache_ttl: Option<Duration>,
}

impl Default for LogManagerOptions {
    fn default() -> Self {
        Self {
            batch_size: 1000,
            cache_min_events: 0,
            cache_ttl: None,
        }
    }
}

/// A log's aggregate and how it was obtained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reduction {
    /// The log reduced.
    pub log_id: LogId,
    /// The reducer name the log is bound to.
    pub reducer: String,
    /// The reducer version that folded it.
    pub reducer_version: Version,
    /// Index of the last event folded into `aggregate`.
    pub through_index: u64,
    /// The aggregate's JSON.
    pub aggregate: String,
    /// When it was reduced: microseconds since the Unix epoch, UTC.
    pub reduced_at: i64,
    /// Whether folding started from a cached reduction.
    pub from_cache: bool,
    /// How many events this reduction folded (the tail after the cache).
    pub events_folded: u64,
}

/// Why a log manager operation failed.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The store refused or failed (includes concurrency and idempotency
    /// outcomes, and unknown logs).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// No reducer is registered under this name.
    #[error("reducer {0:?} not found")]
    ReducerNotFound(String),
    /// The named reducer has no such version.
    #[error("reducer {0:?} has no version {1}")]
    VersionNotFound(String, Version),
    /// The reducer failed.
    #[error(transparent)]
    Reducer(#[from] ReducerError),
    /// A stored reducer version could not be used here (it does not
    /// compile under this host's limits).
    #[error(transparent)]
    Registry(RegistryError),
}

impl From<RegistryError> for LogError {
    fn from(error: RegistryError) -> Self {
        match error {
            RegistryError::ReducerNotFound(name) => Self::ReducerNotFound(name),
            RegistryError::VersionNotFound(name, version) => Self::VersionNotFound(name, version),
            RegistryError::Store(error) => Self::Store(error),
            other => Self::Registry(other),
        }
    }
}

/// Counters of cache use, for metrics and tests.
#[derive(Debug, Default)]
pub struct CacheCounters {
    /// Reductions that started from a cached aggregate.
    pub hits: AtomicU64,
    /// Reductions that found nothing usable in the cache.
    pub misses: AtomicU64,
    /// Cache reads or writes that failed (each also logged).
    pub errors: AtomicU64,
    /// Reductions written to the cache.
    pub writes: AtomicU64,
}

/// Creates, appends to, loads and reduces logs.
#[derive(Clone)]
pub struct LogManager {
    store: Arc<dyn EventStore>,
    cache: Arc<dyn ReductionCache>,
    registry: Arc<Registry>,
    options: LogManagerOptions,
    counters: Arc<CacheCounters>,
    cache_writes: TaskTracker,
}

impl LogManager {
    /// A log manager over these parts.
    pub fn new(
        store: Arc<dyn EventStore>,
        cache: Arc<dyn ReductionCache>,
        registry: Arc<Registry>,
        options: LogManagerOptions,
    ) -> Self {
        Self {
            store,
            cache,
            registry,
            options,
            counters: Arc::default(),
            cache_writes: closed_tracker(),
        }
    }

    /// The registry reducers are resolved through.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// Waits until every background cache write started so far has
    /// finished (for a graceful shutdown, or a test that reads the cache).
    pub async fn flush_cache_writes(&self) {
        self.cache_writes.wait().await;
    }

    /// Cache counters since this manager was made.
    pub fn cache_counters(&self) -> &CacheCounters {
        &self.counters
    }

    /// Creates a log bound to `reducer` with its first events, under
    /// `log_id` or a new one.
    pub async fn create(
        &self,
        log_id: Option<LogId>,
        reducer: &str,
        events: &[Value],
        idempotency_key: Option<&str>,
    ) -> Result<Appended, LogError> {
        self.registry.resolve_active(reducer).await?;
        Ok(self
            .store
            .create(Create {
                log_id: log_id.unwrap_or_default(),
                log_id_chosen: log_id.is_some(),
                reducer,
                events,
                idempotency_key,
            })
            .await?)
    }

    /// Appends events atomically; see [`Append`].
    pub async fn append(&self, request: Append<'_>) -> Result<Appended, LogError> {
        Ok(self.store.append(request).await?)
    }

    /// A log's metadata.
    pub async fn info(&self, log_id: LogId) -> Result<LogInfo, LogError> {
        Ok(self.store.log(log_id).await?)
    }

    /// A page of events.
    pub async fn load(
        &self,
        log_id: LogId,
        from: u64,
        limit: u32,
    ) -> Result<Vec<StoredEvent>, LogError> {
        Ok(self.store.events(log_id, from, limit).await?)
    }

    /// Reduces a log with its reducer's active version, or with `version`.
    pub async fn reduce(
        &self,
        log_id: LogId,
        version: Option<Version>,
    ) -> Result<Reduction, LogError> {
        let info = self.store.log(log_id).await?;
        let reducer = match version {
            None => self.registry.resolve_active(&info.reducer).await?,
            Some(v) => self.registry.version(&info.reducer, v).await?,
        };
        let key = CacheKey {
            reducer: info.reducer.clone(),
            version: reducer.version(),
            log_id,
        };
        let cached = self.cached(&key, info.last_index).await;

        let resumed = match cached {
            Some(cached) => {
                let state = cached.aggregate.into_bytes();
                let resuming = reducer.clone();
                match blocking(move || resuming.resume(&state)).await {
                    Ok(fold) => Some((fold, cached.through_index + 1)),
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
        let (fold, mut next) = match resumed {
            Some(resumed) => resumed,
            None => (blocking(move || reducer.start()).await?, 0),
        };
        let first_folded = next;
        let mut fold = Some(fold);
        let mut batch = EventBatch::with_capacity(self.options.batch_size as usize, 0);
        loop {
            let page = self
                .store
                .events(log_id, next, self.options.batch_size)
                .await?;
            let Some(last) = page.last() else { break };
            next = last.index + 1;
            batch.clear();
            for event in &page {
                batch
                    .push(event.index, event.recorded_at, event.payload.as_bytes())
                    .map_err(|e| StoreError::Unavailable(e.to_string()))?;
            }
            let mut taken = fold.take().expect("fold present between batches");
            let (returned, applied) = tokio::task::spawn_blocking(move || {
                let applied = taken.apply(&batch);
                (taken, applied.map(|()| batch))
            })
            .await
            .expect("fold thread panicked");
            fold = Some(returned);
            batch = applied?;
        }
        // A log always holds at least its creating event.
        let through_index = next.checked_sub(1).ok_or(StoreError::LogNotFound(log_id))?;
        let events_folded = next - first_folded;
        let done = fold.take().expect("fold present at the end");
        let folded = blocking(move || done.finish()).await?;
        let reduction = Reduction {
            log_id,
            reducer: info.reducer,
            reducer_version: key.version,
            through_index,
            aggregate: folded.json,
            reduced_at: now_micros(),
            from_cache,
            events_folded,
        };
        let worth_caching = events_folded > 0
            && folded.caching == CachingPolicy::Cache
            && through_index + 1 >= self.options.cache_min_events;
        if worth_caching {
            self.cache_in_background(key, &reduction);
        }
        Ok(reduction)
    }

    /// A cached reduction usable for a log ending at `last_index`; anything
    /// else is a miss.
    async fn cached(&self, key: &CacheKey, last_index: u64) -> Option<CachedReduction> {
        let found = match self.cache.get(key).await {
            Ok(found) => found,
            Err(error) => {
                self.counters.errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%error, log_id = %key.log_id, "reduction cache read failed; folding from the start");
                None
            }
        };
        // An entry beyond the log's end cannot be this log's (a store was
        // reset under a surviving cache): ignore it.
        let usable = found.filter(|c| c.through_index <= last_index);
        let counter = if usable.is_some() {
            &self.counters.hits
        } else {
            &self.counters.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        usable
    }

    fn cache_in_background(&self, key: CacheKey, reduction: &Reduction) {
        let cache = self.cache.clone();
        let counters = self.counters.clone();
        let ttl = self.options.cache_ttl;
        let entry = CachedReduction {
            through_index: reduction.through_index,
            reduced_at: reduction.reduced_at,
            aggregate: reduction.aggregate.clone(),
        };
        self.cache_writes.spawn(async move {
            match cache.put(&key, &entry, ttl).await {
                Ok(()) => counters.writes.fetch_add(1, Ordering::Relaxed),
                Err(error) => {
                    tracing::warn!(%error, log_id = %key.log_id, "reduction cache write failed");
                    counters.errors.fetch_add(1, Ordering::Relaxed)
                }
            };
        });
    }
}

/// A tracker that is closed from the start: it still tracks every task
/// spawned on it, and `wait` returns whenever none is running.
fn closed_tracker() -> TaskTracker {
    let tracker = TaskTracker::new();
    tracker.close();
    tracker
}

/// Runs a reducer call on a blocking thread (they are CPU-bound and
/// synchronous).
async fn blocking<T: Send + 'static>(
    call: impl FnOnce() -> Result<T, ReducerError> + Send + 'static,
) -> Result<T, LogError> {
    Ok(tokio::task::spawn_blocking(call)
        .await
        .expect("reducer thread panicked")?)
}

/// Keeps [`Fold`] visibly `Send`: folds move between the async task and
/// blocking threads.
const _: fn() = || {
    fn is_send<T: Send>() {}
    is_send::<Fold>();
};
