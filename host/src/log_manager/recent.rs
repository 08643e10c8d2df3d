//! The aggregates this process's appends wrote through, kept in memory as
//! well, so that the next append to the same log resumes its validation
//! without a round trip to a remote cache.
//!
//! An entry here is never more trusted than one read from the cache: an
//! append presumes the aggregate is at the log's end, and the store refuses
//! the write if another process moved the end since (the append is then
//! validated again from the shared cache or the store). Only appends read
//! it; reduces read the shared cache, so what a reduce reports about the
//! cache is what the cache holds. Entries come only from this process's own
//! folds, so nothing another party wrote is read from here.

use moka::sync::Cache;

use crate::cache::{CacheKey, CachedReduction};

/// Aggregate bytes kept, at most.
const MAX_BYTES: u64 = 32 << 20;

/// Recently written-through aggregates, least recently used evicted first.
#[derive(Clone)]
pub(crate) struct RecentAggregates {
    entries: Option<Cache<CacheKey, CachedReduction>>,
}

impl RecentAggregates {
    /// A tier in front of a remote cache, or none (`enabled` false) when the
    /// cache is already in this process.
    pub(crate) fn new(enabled: bool) -> Self {
        let entries = enabled.then(|| {
            Cache::builder()
                .max_capacity(MAX_BYTES)
                .weigher(|key: &CacheKey, entry: &CachedReduction| {
                    let bytes = entry.aggregate.len() + key.reducer.len() + 96;
                    u32::try_from(bytes).unwrap_or(u32::MAX)
                })
                .build()
        });
        Self { entries }
    }

    /// The aggregate this process last wrote through under `key`.
    pub(crate) fn get(&self, key: &CacheKey) -> Option<CachedReduction> {
        self.entries.as_ref()?.get(key)
    }

    /// Keeps `entry` as the latest under `key`.
    pub(crate) fn put(&self, key: &CacheKey, entry: &CachedReduction) {
        if let Some(entries) = &self.entries {
            entries.insert(key.clone(), entry.clone());
        }
    }

    /// Drops the entry under `key` (it proved unusable, or stale).
    pub(crate) fn forget(&self, key: &CacheKey) {
        if let Some(entries) = &self.entries {
            entries.invalidate(key);
        }
    }
}
