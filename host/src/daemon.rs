//! The daemon: builds every part from a [`ServeConfig`], serves HTTP, and
//! shuts down gracefully (in-flight requests finish, then pending cache
//! writes).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_util::task::AbortOnDropHandle;

use crate::cache::memory::MemoryCache;
use crate::cache::redis::RedisCache;
use crate::cache::{CacheError, CacheSecret, ReductionCache};
use crate::config::ServeConfig;
use crate::feed::FeedOptions;
use crate::http::auth::Tokens;
use crate::http::{self, AppState, RouterOptions, server};
use crate::log_manager::{DeployOptions, LogError, LogManager, LogManagerOptions};
use crate::registry::{Registry, RegistryError};
use crate::runtime::{Runtime, RuntimeError};
use crate::store::catalog::ReducerCatalog;
use crate::store::postgres::PostgresStore;
use crate::store::sqlite::SqliteStore;
use crate::store::{EventStore, StoreError};

/// The name of the generated cache secret in the database.
const CACHE_SECRET: &str = "cache-mac";

/// Why the daemon could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The settings are unusable.
    #[error("configuration: {0}")]
    Config(String),
    /// The event store could not be opened or migrated.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The cache could not be configured.
    #[error(transparent)]
    Cache(#[from] CacheError),
    /// The WebAssembly runtime could not start.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// The reducer registry could not be opened.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// A reducer given to deploy at start was refused.
    #[error("deploying at start: {0}")]
    Deploy(#[from] LogError),
    /// Listening or serving failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The failure.
        source: std::io::Error,
    },
}

/// A running daemon.
pub struct Daemon {
    local_addr: SocketAddr,
    shutdown: oneshot::Sender<()>,
    served: JoinHandle<Result<(), DaemonError>>,
}

impl Daemon {
    /// Opens the store (applying migrations), the cache and the registry,
    /// deploys the reducers named in the settings, and starts serving.
    pub async fn start(config: &ServeConfig) -> Result<Self, DaemonError> {
        check_access(config)?;
        let metrics = http::metrics_handle();
        let (store, catalog) = open_store(&config.database_url, config.database_pool).await?;
        let cache: Arc<dyn ReductionCache> = match &config.redis_url {
            Some(url) => {
                // Given, or the one every daemon on this database shares.
                let secret = match &config.cache_secret {
                    Some(secret) => secret.clone(),
                    None => {
                        store
                            .host_secret(CACHE_SECRET, &CacheSecret::generate())
                            .await?
                    }
                };
                let secret = CacheSecret::new(secret).map_err(|_| {
                    DaemonError::Config("--cache-secret has at least 16 characters".into())
                })?;
                let cache = match &config.redis_ca_file {
                    None => RedisCache::new(url, &config.redis_prefix, secret)?,
                    Some(file) => {
                        let ca = tokio::fs::read(file)
                            .await
                            .map_err(|source| DaemonError::Io {
                                context: format!("reading {}", file.display()),
                                source,
                            })?;
                        RedisCache::with_root_certificate(url, &config.redis_prefix, secret, ca)?
                    }
                };
                Arc::new(cache)
            }
            None => Arc::new(MemoryCache::new(config.memory_cache_bytes)),
        };
        let registry = Registry::open_with(
            Runtime::new(config.limits())?,
            catalog,
            config.registry_options(),
        )
        .await?;
        let watch = registry.watch();
        let options = LogManagerOptions {
            batch_size: config.fold_batch,
            batch_bytes: config.fold_batch_bytes,
            page_bytes: config.page_bytes,
            cache_min_events: config.cache_min_events,
            cache_ttl: config.cache_ttl_secs.map(Duration::from_secs),
            near_cache_bytes: config.memory_cache_bytes,
            deploy_sample_logs: config.deploy_sample_logs,
            deploy_replay_budget: Duration::from_millis(config.deploy_replay_budget_ms),
            reducer_concurrency: config.reducer_concurrency as usize,
            reducer_queue_timeout: Duration::from_millis(config.reducer_queue_timeout_ms),
            checkpoint_batches: config.checkpoint_batches,
            feed: FeedOptions {
                buffer_bytes: config.feed_buffer_bytes,
                poll: Duration::from_millis(config.feed_poll_ms),
                ..FeedOptions::default()
            },
            projection_budget: Duration::from_millis(config.projection_budget_ms),
        };
        let manager = LogManager::new(store, cache, registry, options);
        for deploy in &config.deploy {
            let bytes = tokio::fs::read(&deploy.file)
                .await
                .map_err(|source| DaemonError::Io {
                    context: format!("reading {}", deploy.file.display()),
                    source,
                })?;
            let deployment = manager
                .deploy(&deploy.name, bytes, DeployOptions::default())
                .await?;
            tracing::info!(
                reducer = deploy.name,
                version = %deployment.deployed.version.version,
                replayed_logs = deployment.replayed_logs,
                "deployed at start"
            );
        }
        let state = AppState {
            manager: manager.clone(),
            metrics,
            page_limit_max: config.page_limit_max,
            max_events_per_request: config.max_events_per_request,
            max_event_bytes: config.max_event_bytes,
            feed_heartbeat: Duration::from_secs(config.feed_heartbeat_secs),
        };
        let router = http::router(
            state,
            &RouterOptions {
                body_limit: config.body_limit_bytes,
                component_limit: config.reducer_component_bytes,
                request_timeout: Duration::from_secs(config.request_timeout_secs),
                tokens: Tokens::new(&config.tokens),
                max_in_flight: config.max_in_flight as usize,
                loopback_hosts_only: config.tokens.is_empty() && !config.allow_unauthenticated,
            },
        );
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| DaemonError::Io {
                    context: format!("listening on {}", config.listen),
                    source,
                })?;
        let local_addr = listener.local_addr().map_err(|source| DaemonError::Io {
            context: "reading the bound address".into(),
            source,
        })?;
        let (shutdown, stop) = oneshot::channel::<()>();
        let limits = config.server_limits();
        let sweep = manager
            .sweep_keys_in_background(Duration::from_secs(config.idempotency_key_retention_secs));
        let served = tokio::spawn(async move {
            let _watch = watch;
            let _sweep = AbortOnDropHandle::new(sweep);
            let feed = manager.clone();
            let stop = async move {
                let _ = stop.await;
                // Feed streams never finish on their own.
                feed.close_feed();
            };
            server::serve(listener, router, limits, stop).await;
            // Cache writes are an optimisation: they get the same deadline.
            if tokio::time::timeout(limits.shutdown_timeout, manager.flush_cache_writes())
                .await
                .is_err()
            {
                tracing::warn!("cache writes still pending at the shutdown deadline; dropped");
            }
            Ok(())
        });
        tracing::info!(address = %local_addr, "listening");
        Ok(Self {
            local_addr,
            shutdown,
            served,
        })
    }

    /// The address it listens on (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting connections, lets in-flight requests and pending
    /// cache writes finish (each within the shutdown deadline, after which
    /// connections still open are closed), and returns.
    pub async fn shutdown(self) -> Result<(), DaemonError> {
        let _ = self.shutdown.send(());
        self.served.await.map_err(|e| DaemonError::Io {
            context: "server task".into(),
            source: std::io::Error::other(e),
        })?
    }
}

/// The event store (and reducer catalog) a database URL names.
async fn open_store(
    url: &str,
    pool: u32,
) -> Result<(Arc<dyn EventStore>, Arc<dyn ReducerCatalog>), DaemonError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let store = Arc::new(PostgresStore::connect_with(url, pool).await?);
        Ok((store.clone(), store))
    } else if url.starts_with("sqlite:") {
        let store = Arc::new(SqliteStore::connect(url).await?);
        Ok((store.clone(), store))
    } else {
        Err(DaemonError::Config(format!(
            "database URL must start with postgres:// or sqlite:, got {url:?}"
        )))
    }
}

/// Without tokens, only loopback unless the operator insists.
fn check_access(config: &ServeConfig) -> Result<(), DaemonError> {
    if !config.tokens.is_empty() {
        return Ok(());
    }
    if !config.listen.ip().is_loopback() && !config.allow_unauthenticated {
        return Err(DaemonError::Config(format!(
            "no tokens are configured, so every client would have every scope; refusing to listen on \
             {} (configure --token, or pass --allow-unauthenticated)",
            config.listen
        )));
    }
    tracing::warn!(
        address = %config.listen,
        "no tokens configured: every client has every scope (read, write, admin)"
    );
    Ok(())
}
