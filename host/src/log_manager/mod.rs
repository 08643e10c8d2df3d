//! The log manager: the seed library's API over an event store, a reduction
//! cache and the reducer registry, and the HTTP layer's only door to them.
//! It knows nothing about HTTP.
//!
//! Writes are validated (`append`): the log's active reducer folds the new
//! events into the aggregate at the log's end before they are stored, on
//! the condition that the log still ends there, and the aggregate after them
//! goes to the cache at once. `reduce` starts from the cached reduction when
//! there is a usable one, streams only the events after it from the store
//! in batches (`fold`), folds them in the reducer's sandbox on a blocking
//! thread, and returns; the new reduction is written to the cache in the
//! background. A cache miss, error or corrupt entry means "fold from the
//! start" — logged and counted, never a failure. `deploy` replays a sample
//! of existing logs with a new version before activating it.

mod admission;
mod append;
mod deploy;
mod failures;
mod feed;
mod flights;
mod fold;
mod key_retention;
mod projections;
mod recent;
mod subscriptions;
mod turns;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio_util::task::TaskTracker;

use crate::LogId;
use crate::cache::{Anchor, CacheError, CacheKey, CachedReduction, ReductionCache};
use crate::clock::now_micros;
use crate::feed::{Feed, FeedOptions};
use crate::registry::{Registry, RegistryError};
use crate::runtime::{CachingPolicy, Folded, Reducer, ReducerError, Version};
use crate::store::{EventStore, LogInfo, StoreError, StoredEvent};

use admission::Admission;
pub use append::Append;
pub use deploy::{DeployError, DeployOptions, Deployment, Trial};
use failures::FailedReduces;
use flights::Flights;
pub use projections::{ProjectionError, ProjectionRead};
use recent::RecentAggregates;
pub use subscriptions::SubscriptionError;
use turns::Turns;

/// Tuning of a [`LogManager`].
#[derive(Debug, Clone)]
pub struct LogManagerOptions {
    /// Events fetched from the store and folded per reducer call, at most.
    pub batch_size: u32,
    /// Payload bytes fetched and folded per reducer call: a batch stops
    /// before the first event that starts at or past this many (it always
    /// holds at least one event).
    pub batch_bytes: u64,
    /// Payload bytes per page of a log's events, cut the same way.
    pub page_bytes: u64,
    /// Logs shorter than this (in events) are not cached.
    pub cache_min_events: u64,
    /// How long cached reductions live; `None` keeps them until evicted.
    pub cache_ttl: Option<Duration>,
    /// Bytes of aggregates this process keeps in memory in front of a
    /// remote cache, so that appends and reduces of them skip its round
    /// trip (see `recent`); 0 keeps none. Unused when the cache is itself
    /// in this process.
    pub near_cache_bytes: u64,
    /// How many recently appended logs a deploy replays with the new version.
    pub deploy_sample_logs: u32,
    /// How long a deploy may spend replaying them.
    pub deploy_replay_budget: Duration,
    /// Most folds (reduces and validations) one reducer runs at once.
    pub reducer_concurrency: usize,
    /// How long a fold waits for its reducer's turn before it is refused
    /// as busy.
    pub reducer_queue_timeout: Duration,
    /// A fold from the store writes its aggregate so far to the cache every
    /// this many batches (0: only at the end), so that a retry of a reduce
    /// that did not finish resumes from there.
    pub checkpoint_batches: u32,
    /// How the feed is followed.
    pub feed: FeedOptions,
    /// How long a projection read folds new events before it answers (a
    /// build that is not done by then goes on in the background).
    pub projection_budget: Duration,
}

impl Default for LogManagerOptions {
    fn default() -> Self {
        Self {
            batch_size: 1000,
            batch_bytes: 4 << 20,
            page_bytes: 4 << 20,
            cache_min_events: 0,
            cache_ttl: None,
            near_cache_bytes: 64 << 20,
            deploy_sample_logs: 100,
            deploy_replay_budget: Duration::from_secs(2),
            reducer_concurrency: 64,
            reducer_queue_timeout: Duration::from_secs(1),
            checkpoint_batches: 10,
            feed: FeedOptions::default(),
            projection_budget: Duration::from_secs(1),
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
#[derive(Debug, Clone, thiserror::Error)]
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
    /// The reducer failed, or refused an event being appended.
    #[error(transparent)]
    Reducer(#[from] ReducerError),
    /// A registry operation failed (an invalid upload or name, a stored
    /// version that does not compile under this host's limits).
    #[error(transparent)]
    Registry(RegistryError),
    /// A deploy was refused because the new version fails on existing logs.
    #[error(transparent)]
    Deploy(#[from] DeployError),
    /// The reducer already runs as many folds as it may, and no turn came
    /// free within the queue timeout.
    #[error("reducer {reducer:?} already runs {limit} folds; none finished in time")]
    ReducerBusy {
        /// The reducer name.
        reducer: String,
        /// Its concurrency limit.
        limit: usize,
    },
    /// A subscription operation was refused.
    #[error(transparent)]
    Subscription(#[from] SubscriptionError),
    /// A projection operation was refused.
    #[error(transparent)]
    Projection(#[from] ProjectionError),
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
    /// Entries ignored as forged (their MAC did not verify) or stale (the
    /// stored event at their index is not the one they were folded
    /// through); each also logged.
    pub rejected: AtomicU64,
    /// Reductions written to the cache.
    pub writes: AtomicU64,
    /// Reduces answered with the failure the same reduce (log, version and
    /// end) ended with lately, without running the reducer again.
    pub failures_repeated: AtomicU64,
}

/// Creates, appends to, loads and reduces logs; deploys reducers. Cheap to
/// clone (every request's handler gets a clone): clones share one set of
/// parts.
#[derive(Clone)]
pub struct LogManager(Arc<Parts>);

/// What a log manager is made of, shared by its clones.
pub struct Parts {
    store: Arc<dyn EventStore>,
    cache: Arc<dyn ReductionCache>,
    registry: Arc<Registry>,
    options: LogManagerOptions,
    counters: Arc<CacheCounters>,
    cache_writes: TaskTracker,
    turns: Arc<Turns>,
    admission: Arc<Admission>,
    flights: Arc<Flights>,
    /// Reduces that failed lately and would fail again.
    failed: Arc<FailedReduces>,
    /// Aggregates this process folded lately, in front of a remote cache.
    recent: RecentAggregates,
    /// The reducer name each log is bound to; a log's binding never
    /// changes, so entries never go stale.
    bindings: moka::sync::Cache<LogId, Arc<str>>,
    /// The feed as this process follows it.
    feed: Feed,
    /// Projection builds running in the background.
    builds: projections::Builds,
}

impl std::ops::Deref for LogManager {
    type Target = Parts;

    fn deref(&self) -> &Parts {
        &self.0
    }
}

/// Stripes of the per-log append turns.
const TURN_STRIPES: usize = 4096;

/// Log bindings remembered.
const BINDINGS: u64 = 100_000;

impl LogManager {
    /// A log manager over these parts.
    pub fn new(
        store: Arc<dyn EventStore>,
        cache: Arc<dyn ReductionCache>,
        registry: Arc<Registry>,
        options: LogManagerOptions,
    ) -> Self {
        let admission = Admission::new(options.reducer_concurrency, options.reducer_queue_timeout);
        let near_bytes = if cache.is_in_process() {
            0
        } else {
            options.near_cache_bytes
        };
        let recent = RecentAggregates::new(near_bytes, options.cache_ttl);
        let feed = Feed::new(store.clone(), options.feed.clone());
        Self(Arc::new(Parts {
            feed,
            builds: projections::Builds::default(),
            store,
            cache,
            recent,
            registry,
            options,
            counters: Arc::default(),
            cache_writes: closed_tracker(),
            turns: Arc::new(Turns::new(TURN_STRIPES)),
            admission: Arc::new(admission),
            flights: Arc::default(),
            failed: Arc::default(),
            bindings: moka::sync::Cache::new(BINDINGS),
        }))
    }

    /// The registry reducers are resolved through (for the daemon, which
    /// follows other processes' activations with it).
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

    /// Whether the event store answers and is migrated (readiness).
    pub async fn ping(&self) -> Result<(), LogError> {
        Ok(self.store.ping().await?)
    }

    /// A log's metadata.
    pub async fn info(&self, log_id: LogId) -> Result<LogInfo, LogError> {
        let info = self.store.log(log_id).await?;
        self.bindings
            .insert(log_id, Arc::from(info.reducer.as_str()));
        Ok(info)
    }

    /// The payload bytes a page of events is cut at.
    pub fn page_bytes(&self) -> u64 {
        self.options.page_bytes
    }

    /// A page of a log's events: up to `limit`, cut at the page byte
    /// budget (at least one event).
    pub async fn load(
        &self,
        log_id: LogId,
        from: u64,
        limit: u32,
    ) -> Result<Vec<StoredEvent>, LogError> {
        Ok(self
            .store
            .events(log_id, from, limit, self.options.page_bytes)
            .await?)
    }

    /// Reduces a log with its reducer's active version, or with `version`.
    /// Concurrent reduces of the log to the same end with the same version
    /// share one fold, which waits for the reducer's turn. A reduce that
    /// failed in a way that would recur is answered with that failure for a
    /// while without running the reducer (see `failures`).
    pub async fn reduce(
        &self,
        log_id: LogId,
        version: Option<Version>,
    ) -> Result<Reduction, LogError> {
        let (info, reducer, entry) = self.reduce_inputs(log_id, version).await?;
        let entry = match current_entry(&info, entry) {
            Ok(cached) => return Ok(self.reduction_cached(info, &reducer, cached)),
            Err(entry) => entry,
        };
        let flight = (log_id, reducer.version(), info.last_index);
        if let Some(failure) = self.failed.get(&flight) {
            self.counters
                .failures_repeated
                .fetch_add(1, Ordering::Relaxed);
            metrics::counter!("eventlogs_reduce_failures_repeated_total").increment(1);
            tokio::time::sleep(failure.took).await;
            return Err(failure.error.into());
        }
        let started = std::time::Instant::now();
        let manager = self.clone();
        let reduced = self
            .flights
            .share(flight, async move {
                manager.reduce_to_end(info, reducer, entry).await
            })
            .await;
        if let Err(LogError::Reducer(error)) = &reduced {
            self.failed.remember(flight, error, started.elapsed());
        }
        reduced
    }

    /// What a reduce starts from: the log's metadata, its reducer (the
    /// active version or `version`) and the cached entry to resume. When
    /// the log's reducer is known in this process, the cache key is too:
    /// an entry this process folded itself is looked up first and, if the
    /// metadata shows it current, is the answer with no cache read; without
    /// one, the shared cache is read in parallel with the metadata. An
    /// unknown log's shared entry is read after its metadata.
    async fn reduce_inputs(
        &self,
        log_id: LogId,
        version: Option<Version>,
    ) -> Result<(LogInfo, Reducer, Option<CachedReduction>), LogError> {
        let resolve = |name: &str| {
            let name = name.to_owned();
            async move {
                match version {
                    None => self.registry.resolve_active(&name).await,
                    Some(v) => self.registry.version(&name, v).await,
                }
            }
        };
        let key = |reducer: &Reducer, name: &str| CacheKey {
            reducer: name.to_owned(),
            version: reducer.version(),
            log_id,
        };
        let Some(name) = self.bindings.get(&log_id) else {
            let info = self.info(log_id).await?;
            let reducer = resolve(&info.reducer).await?;
            let key = key(&reducer, &info.reducer);
            let entry = self.start_entry(&key, &info, self.recent.get(&key)).await;
            return Ok((info, reducer, entry));
        };
        // A log's reducer never changes.
        let reducer = resolve(&name).await?;
        let key = key(&reducer, &name);
        if let Some(own) = self.recent.get(&key) {
            let info = self.info(log_id).await?;
            let entry = self.start_entry(&key, &info, Some(own)).await;
            return Ok((info, reducer, entry));
        }
        let (info, entry) = tokio::join!(self.info(log_id), self.cache_entry(&key));
        Ok((info?, reducer, entry))
    }

    /// The entry a reduce of the log `info` describes starts from, given
    /// this process's own (`own`): that one if it is current; else the
    /// shared cache is read (another process moved the log on, and its
    /// write-through may be there), and the entry reaching further, within
    /// the log, is resumed (this process's own where they reach as far).
    async fn start_entry(
        &self,
        key: &CacheKey,
        info: &LogInfo,
        own: Option<CachedReduction>,
    ) -> Option<CachedReduction> {
        match own {
            Some(own) if is_current(info, &own) => Some(own),
            own => {
                let shared = self.cache_entry(key).await;
                // The last of the furthest wins: `own` on a tie.
                shared
                    .into_iter()
                    .chain(own)
                    .filter(|entry| entry.through_index <= info.last_index)
                    .max_by_key(|entry| entry.through_index)
            }
        }
    }

    /// The answer of a reduce whose cache entry is current (see
    /// [`current_entry`]): the entry itself, so no reducer runs and no event
    /// is read.
    fn reduction_cached(
        &self,
        info: LogInfo,
        reducer: &Reducer,
        cached: CachedReduction,
    ) -> Reduction {
        self.counters.hits.fetch_add(1, Ordering::Relaxed);
        Reduction {
            log_id: info.log_id,
            reducer: info.reducer,
            reducer_version: reducer.version(),
            through_index: cached.through_index,
            aggregate: cached.aggregate,
            reduced_at: now_micros(),
            from_cache: true,
            events_folded: 0,
        }
    }

    async fn reduce_to_end(
        &self,
        info: LogInfo,
        reducer: Reducer,
        entry: Option<CachedReduction>,
    ) -> Result<Reduction, LogError> {
        let log_id = info.log_id;
        let key = CacheKey {
            reducer: info.reducer.clone(),
            version: reducer.version(),
            log_id,
        };
        let end = Some(info.last_index);
        let _turn = self.admission.enter(&info.reducer).await?;
        let cached = self.usable(entry, end);
        let resumes = cached.is_some();
        let at_end = self.fold_from(&reducer, &key, log_id, cached, end).await?;
        if resumes && !at_end.from_cache {
            // The entry proved stale or unresumable: if it was this
            // process's own, it goes (the fold's own entry replaces it).
            self.recent.forget(&key);
        }
        // A log always holds at least its creating event.
        let through_index = at_end
            .through_index
            .ok_or(StoreError::LogNotFound(log_id))?;
        let done = at_end.fold;
        let (aggregate, folded) = match at_end.unchanged {
            // Nothing new after the cached entry: its JSON is the answer,
            // and the fold is released on a reducer thread meanwhile.
            Some(json) => {
                drop(self.registry.runtime().run(move || drop(done)));
                (json, None)
            }
            None => {
                let folded = self.blocking(move || done.finish()).await?;
                (folded.json.clone(), Some(folded))
            }
        };
        let reduction = Reduction {
            log_id,
            reducer: info.reducer,
            reducer_version: key.version,
            through_index,
            aggregate,
            reduced_at: now_micros(),
            from_cache: at_end.from_cache,
            events_folded: at_end.events_folded,
        };
        if at_end.events_folded > 0
            && let (Some(anchor), Some(folded)) = (at_end.anchor, folded)
        {
            self.cache_in_background(key, (through_index, anchor), &folded);
        }
        Ok(reduction)
    }

    /// The reducer name a log is bound to.
    async fn binding(&self, log_id: LogId) -> Result<Arc<str>, LogError> {
        if let Some(name) = self.bindings.get(&log_id) {
            return Ok(name);
        }
        let info = self.info(log_id).await?;
        Ok(Arc::from(info.reducer))
    }

    /// A cached reduction usable for a log ending at `end` (when known);
    /// anything else is a miss.
    async fn cached(&self, key: &CacheKey, end: Option<u64>) -> Option<CachedReduction> {
        let found = self.cache_entry(key).await;
        self.usable(found, end)
    }

    /// The cache's entry under `key`; a forged entry or a failed read is
    /// logged, counted and none.
    async fn cache_entry(&self, key: &CacheKey) -> Option<CachedReduction> {
        match self.cache.get(key).await {
            Ok(found) => found,
            Err(CacheError::Forged) => {
                self.counters.rejected.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(log_id = %key.log_id, "forged reduction cache entry ignored; folding from the start");
                None
            }
            Err(error) => {
                self.counters.errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%error, log_id = %key.log_id, "reduction cache read failed; folding from the start");
                None
            }
        }
    }

    /// `found`, if it can be the reduction of a log ending at `end` (when
    /// known); counted as a hit or a miss.
    fn usable(&self, found: Option<CachedReduction>, end: Option<u64>) -> Option<CachedReduction> {
        // An entry beyond the log's end cannot be this log's (a store was
        // reset under a surviving cache): ignore it.
        let usable = found.filter(|c| end.is_none_or(|end| c.through_index <= end));
        let counter = if usable.is_some() {
            &self.counters.hits
        } else {
            &self.counters.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        usable
    }

    /// Writes a reduction to the cache in the background, if the reducer's
    /// policy and the host's allow it.
    fn cache_in_background(&self, key: CacheKey, end: (u64, Anchor), folded: &Folded) {
        if let Some(entry) = self.worth_caching(end, folded) {
            self.recent.put(&key, &entry);
            let manager = self.clone();
            self.cache_writes
                .spawn(async move { manager.put_cached(&key, &entry).await });
        }
    }

    /// Writes a reduction to the cache now (write-through after an append),
    /// if the policies allow it. A failure is logged and counted, never
    /// returned.
    async fn cache_now(&self, key: &CacheKey, end: (u64, Anchor), folded: &Folded) {
        if let Some(entry) = self.worth_caching(end, folded) {
            self.recent.put(key, &entry);
            self.put_cached(key, &entry).await;
        }
    }

    fn worth_caching(
        &self,
        (through_index, anchor): (u64, Anchor),
        folded: &Folded,
    ) -> Option<CachedReduction> {
        let worth = folded.caching == CachingPolicy::Cache
            && through_index + 1 >= self.options.cache_min_events;
        worth.then(|| CachedReduction {
            through_index,
            reduced_at: now_micros(),
            anchor,
            aggregate: folded.json.clone(),
        })
    }

    async fn put_cached(&self, key: &CacheKey, entry: &CachedReduction) {
        match self.cache.put(key, entry, self.options.cache_ttl).await {
            Ok(()) => self.counters.writes.fetch_add(1, Ordering::Relaxed),
            Err(error) => {
                tracing::warn!(%error, log_id = %key.log_id, "reduction cache write failed");
                self.counters.errors.fetch_add(1, Ordering::Relaxed)
            }
        };
    }
}

/// The cache entry read for a reduce, if it was folded through the very
/// event the log ends with (the metadata read names it): then it is the
/// reduction. It was written by this reducer version's own fold (its key
/// names the version and its seal is checked when read). Anything else is
/// handed back for the fold.
fn current_entry(
    info: &LogInfo,
    entry: Option<CachedReduction>,
) -> Result<CachedReduction, Option<CachedReduction>> {
    match entry {
        Some(cached) if is_current(info, &cached) => Ok(cached),
        other => Err(other),
    }
}

/// Whether `cached` was folded through the very event the log `info`
/// describes ends with.
fn is_current(info: &LogInfo, cached: &CachedReduction) -> bool {
    cached.through_index == info.last_index && info.last_event == Some(cached.anchor)
}

/// A tracker that is closed from the start: it still tracks every task
/// spawned on it, and `wait` returns whenever none is running.
fn closed_tracker() -> TaskTracker {
    let tracker = TaskTracker::new();
    tracker.close();
    tracker
}

impl LogManager {
    /// Runs a reducer call on the runtime's call threads (they are
    /// CPU-bound and synchronous).
    async fn blocking<T: Send + 'static>(
        &self,
        call: impl FnOnce() -> Result<T, ReducerError> + Send + 'static,
    ) -> Result<T, LogError> {
        Ok(self.registry.runtime().run(call).await?)
    }
}

/// Keeps [`crate::runtime::Fold`] visibly `Send`: folds move between the
/// async task and blocking threads.
const _: fn() = || {
    fn is_send<T: Send>() {}
    is_send::<crate::runtime::Fold>();
};
