//! The production reduction cache on Redis (or Redis Cluster).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use redis::AsyncCommands;

use super::connection::Connection;
use super::put_batches::PutBatches;
use super::{CacheError, CacheKey, CacheSecret, CachedReduction, ReductionCache, entry};

/// How long one cache operation may take before it counts as a miss.
const TIMEOUT: Duration = Duration::from_millis(250);

/// A [`ReductionCache`] on Redis or a Redis Cluster. Connects lazily and
/// reconnects on its own; while Redis (or the node holding a key) is away
/// every call fails fast with [`CacheError::Unavailable`]. Concurrent puts
/// go to Redis together (`put_batches`).
#[derive(Clone)]
pub struct RedisCache {
    connection: Connection,
    puts: Arc<PutBatches>,
    prefix: String,
    secret: CacheSecret,
}

impl RedisCache {
    /// A cache at `url` (`redis://HOST:PORT/DB`, or `rediss://` for TLS
    /// with a certificate the system trusts; a cluster as
    /// `redis+cluster://HOST:PORT,HOST:PORT`, see `connection`), with every
    /// key under
    /// `prefix` (e.g. `eventlogs:`) and every entry authenticated under
    /// `secret` (entries that do not verify are [`CacheError::Forged`]).
    /// Does not wait for Redis to be up.
    pub fn new(url: &str, prefix: &str, secret: CacheSecret) -> Result<Self, CacheError> {
        Self::connect(Connection::open(url, None, TIMEOUT)?, prefix, secret)
    }

    /// Like [`RedisCache::new`], for a `rediss://` URL whose server
    /// certificate is signed by the PEM certificate authority `ca_pem`
    /// instead of one the system trusts.
    pub fn with_root_certificate(
        url: &str,
        prefix: &str,
        secret: CacheSecret,
        ca_pem: Vec<u8>,
    ) -> Result<Self, CacheError> {
        Self::connect(
            Connection::open(url, Some(ca_pem), TIMEOUT)?,
            prefix,
            secret,
        )
    }

    fn connect(
        connection: Connection,
        prefix: &str,
        secret: CacheSecret,
    ) -> Result<Self, CacheError> {
        Ok(Self {
            puts: Arc::new(PutBatches::new(connection.clone(), TIMEOUT)),
            connection,
            prefix: prefix.to_owned(),
            secret,
        })
    }
}

#[async_trait]
impl ReductionCache for RedisCache {
    async fn get(&self, key: &CacheKey) -> Result<Option<CachedReduction>, CacheError> {
        let mut connection = self.connection.clone();
        let key = key.to_text(&self.prefix);
        let bytes: Option<Vec<u8>> = bounded(connection.get(&key)).await?;
        bytes
            .map(|b| entry::decode(&self.secret, &key, &b))
            .transpose()
    }

    async fn put(
        &self,
        key: &CacheKey,
        reduction: &CachedReduction,
        ttl: Option<Duration>,
    ) -> Result<(), CacheError> {
        let key = key.to_text(&self.prefix);
        let value = entry::encode(&self.secret, &key, reduction);
        self.puts.put(key, value, ttl).await
    }
}

/// Runs one Redis call under [`TIMEOUT`], whatever the connection does.
async fn bounded<T>(call: impl Future<Output = redis::RedisResult<T>>) -> Result<T, CacheError> {
    match tokio::time::timeout(TIMEOUT, call).await {
        Ok(result) => result.map_err(unavailable),
        Err(_) => Err(CacheError::Unavailable(format!(
            "no answer within {TIMEOUT:?}"
        ))),
    }
}

fn unavailable(error: impl std::fmt::Display) -> CacheError {
    CacheError::Unavailable(error.to_string())
}
