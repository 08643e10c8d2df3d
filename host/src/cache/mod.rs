//! Reduction caches: where folded aggregates are kept so the next reduction
//! folds only the events after them.
//!
//! A cache is an optimisation that must never make a result wrong or a
//! request fail, so callers treat every [`CacheError`] as a miss. Keys name
//! the reducer *version*, so a newly deployed reducer never reads what an
//! older one folded. [`redis::RedisCache`] is for production,
//! [`memory::MemoryCache`] the embedded default.

mod connection;
pub mod memory;
mod put_batches;
pub mod redis;

mod entry;

pub use entry::CacheSecret;

use std::time::Duration;

use async_trait::async_trait;

use crate::LogId;
use crate::runtime::Version;

/// What names one cached reduction.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    /// The reducer name the log is bound to.
    pub reducer: String,
    /// The reducer version that folded the aggregate.
    pub version: Version,
    /// The log.
    pub log_id: LogId,
}

impl CacheKey {
    /// The key's text form, under `prefix`.
    pub fn to_text(&self, prefix: &str) -> String {
        format!(
            "{prefix}reduction:{}:{}:{}",
            self.reducer, self.version, self.log_id
        )
    }
}

/// A cached aggregate and how far into the log it reaches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedReduction {
    /// Index of the last event folded into `aggregate`.
    pub through_index: u64,
    /// When it was folded: microseconds since the Unix epoch, UTC.
    pub reduced_at: i64,
    /// The event at `through_index`, as stored when it was folded; an entry
    /// whose anchor no longer matches the stored event (a database restored
    /// under a surviving cache) is stale and ignored.
    pub anchor: Anchor,
    /// The aggregate's JSON.
    pub aggregate: String,
}

/// What identifies one stored event beyond its index (its global position
/// and the time it was recorded): the event a cached reduction was folded
/// through.
pub use crate::store::EventMark as Anchor;

/// Why a cache operation did not complete. Callers log it, count it, and
/// carry on without the cache.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CacheError {
    /// The cache could not be reached, or did not answer in time.
    #[error("reduction cache unavailable: {0}")]
    Unavailable(String),
    /// The stored entry does not decode.
    #[error("corrupt reduction cache entry: {0}")]
    Corrupt(String),
    /// The stored entry's MAC does not verify under the host's secret: it
    /// was not written by a daemon holding it, or not for this key.
    #[error("forged reduction cache entry")]
    Forged,
}

/// Storage of reductions.
#[async_trait]
pub trait ReductionCache: Send + Sync {
    /// The cached reduction under `key`, if any.
    async fn get(&self, key: &CacheKey) -> Result<Option<CachedReduction>, CacheError>;

    /// Stores `reduction` under `key`, replacing any entry, expiring after
    /// `ttl` if given.
    async fn put(
        &self,
        key: &CacheKey,
        reduction: &CachedReduction,
        ttl: Option<Duration>,
    ) -> Result<(), CacheError>;

    /// Whether entries live in this process (reading one costs no round
    /// trip), so keeping copies in front of it gains nothing.
    fn is_in_process(&self) -> bool {
        false
    }
}
