//! The aggregates this process folded lately, kept in memory in front of a
//! remote cache, so that the next append to a log resumes its validation
//! and the next reduce of it answers without a round trip to Redis.
//!
//! An entry here is never more trusted than one read from the cache. An
//! append presumes the aggregate is at the log's end, and the store refuses
//! the write if another process moved the end since (the append is then
//! validated again from the shared cache or the store). A reduce answers
//! with it only if the log's metadata, read for every reduce, names the very
//! event it was folded through (index and anchor); otherwise the reduce
//! resumes from it or from the shared cache's entry, whichever reaches
//! further, and the fold checks the anchor against the stored event before
//! it folds on. Keys name the reducer version, so no other version's fold is
//! read. Entries come only from this process's own folds, so nothing
//! another party wrote is read from here.

use std::time::Duration;

use moka::sync::Cache;

use crate::cache::{CacheKey, CachedReduction};

/// Recently folded aggregates, bounded by bytes; moka's TinyLFU evicts the
/// least often and least recently used first.
#[derive(Clone)]
pub(crate) struct RecentAggregates {
    entries: Option<Cache<CacheKey, CachedReduction>>,
}

impl RecentAggregates {
    /// A tier of at most `max_bytes` of aggregates (none when 0), each kept
    /// at most `ttl` like the cache's own entries.
    pub(crate) fn new(max_bytes: u64, ttl: Option<Duration>) -> Self {
        let entries = (max_bytes > 0).then(|| {
            let builder = Cache::builder().max_capacity(max_bytes).weigher(
                |key: &CacheKey, entry: &CachedReduction| {
                    let bytes = entry.aggregate.len() + key.reducer.len() + 96;
                    u32::try_from(bytes).unwrap_or(u32::MAX)
                },
            );
            match ttl {
                Some(ttl) => builder.time_to_live(ttl).build(),
                None => builder.build(),
            }
        });
        Self { entries }
    }

    /// The aggregate this process last folded under `key`.
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LogId;
    use crate::cache::Anchor;
    use crate::runtime::Version;

    fn entry(bytes: usize) -> CachedReduction {
        CachedReduction {
            through_index: 0,
            reduced_at: 0,
            anchor: Anchor {
                position: 0,
                recorded_at: 0,
            },
            aggregate: "x".repeat(bytes),
        }
    }

    fn key() -> CacheKey {
        CacheKey {
            reducer: "payment".into(),
            version: Version::of(b"a component"),
            log_id: LogId::new(),
        }
    }

    #[test]
    fn holds_at_most_its_bytes_of_aggregates() {
        let recent = RecentAggregates::new(64 << 10, None);
        let keys: Vec<CacheKey> = (0..100).map(|_| key()).collect();
        for key in &keys {
            recent.put(key, &entry(4 << 10));
        }
        let entries = recent.entries.as_ref().unwrap();
        entries.run_pending_tasks();
        assert!(
            entries.weighted_size() <= 64 << 10,
            "{}",
            entries.weighted_size()
        );
        let kept = keys.iter().filter(|k| recent.get(k).is_some()).count();
        assert!((1..=16).contains(&kept), "{kept} entries of 4 KiB kept");
    }

    #[test]
    fn entries_live_no_longer_than_the_ttl_and_none_are_kept_at_0_bytes() {
        let recent = RecentAggregates::new(1 << 20, Some(Duration::from_millis(50)));
        let key = key();
        recent.put(&key, &entry(10));
        assert!(recent.get(&key).is_some());
        std::thread::sleep(Duration::from_millis(120));
        assert!(recent.get(&key).is_none());

        let none = RecentAggregates::new(0, None);
        none.put(&key, &entry(10));
        assert!(none.get(&key).is_none());
    }
}
