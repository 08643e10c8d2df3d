//! The embedded reduction cache: in this process, bounded by bytes.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use moka::future::Cache;

use super::{CacheError, CacheKey, CachedReduction, ReductionCache};

/// A [`ReductionCache`] in memory, evicting the least useful entries once
/// the aggregates held exceed a byte budget.
#[derive(Clone)]
pub struct MemoryCache {
    entries: Cache<CacheKey, (CachedReduction, Option<Instant>)>,
}

impl MemoryCache {
    /// A cache holding at most about `max_bytes` of aggregates.
    pub fn new(max_bytes: u64) -> Self {
        let entries = Cache::builder()
            .max_capacity(max_bytes)
            .weigher(
                |key: &CacheKey, (reduction, _): &(CachedReduction, Option<Instant>)| {
                    let bytes = reduction.aggregate.len() + key.reducer.len() + 96;
                    u32::try_from(bytes).unwrap_or(u32::MAX)
                },
            )
            .build();
        Self { entries }
    }
}

#[async_trait]
impl ReductionCache for MemoryCache {
    async fn get(&self, key: &CacheKey) -> Result<Option<CachedReduction>, CacheError> {
        Ok(match self.entries.get(key).await {
            Some((_, Some(expires))) if expires <= Instant::now() => {
                self.entries.invalidate(key).await;
                None
            }
            Some((reduction, _)) => Some(reduction),
            None => None,
        })
    }

    async fn put(
        &self,
        key: &CacheKey,
        reduction: &CachedReduction,
        ttl: Option<Duration>,
    ) -> Result<(), CacheError> {
        let expires = ttl.map(|ttl| Instant::now() + ttl);
        self.entries
            .insert(key.clone(), (reduction.clone(), expires))
            .await;
        Ok(())
    }

    fn is_in_process(&self) -> bool {
        true
    }
}
