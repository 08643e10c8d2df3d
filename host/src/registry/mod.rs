//! The reducer registry: deployed versions by name, stored in the database
//! through a [`ReducerCatalog`], compiled once per process and swapped
//! atomically.
//!
//! A deploy validates and compiles the bytes first, so an invalid upload
//! changes nothing; then it stores the version and activates it. Activation
//! replaces an `Arc`: a fold that already holds a [`Reducer`] finishes on
//! it, and the next lookup sees the new version. Every process follows the
//! catalog's activations ([`Registry::watch`]) and applies them in
//! generation order, so a late hint can never roll a name back.
//!
//! Versions other than the active ones are compiled on demand (a reader
//! asking for `?version=`), once however many ask at the same time, and
//! kept up to [`RegistryOptions::inactive_versions`], the least recently
//! used dropped first. A stored version that fails to compile here is
//! answered from [`failures`] until its back-off ends.

mod failures;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use failures::Failures;

use crate::Version;
use crate::runtime::{InvalidComponent, Reducer, Runtime};
use crate::store::StoreError;
use crate::store::catalog::{Activation, ReducerCatalog, StoredVersion};

/// How often the catalog is reread even without a hint, to cover hints lost
/// while a notification connection was down.
const RESYNC_INTERVAL: Duration = Duration::from_secs(5);

/// How long to wait before asking again for a feed that failed.
const FEED_RETRY: Duration = Duration::from_secs(1);

/// Longest reducer name.
const MAX_NAME_LEN: usize = 64;

/// Why a registry operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RegistryError {
    /// The name is not usable (it appears in URLs and cache keys).
    #[error(
        "invalid reducer name {0:?}: 1 to 64 characters from a-z, 0-9, '-' and '_', starting with a letter"
    )]
    InvalidName(String),
    /// The bytes are not a valid reducer; nothing was stored.
    #[error(transparent)]
    Invalid(#[from] InvalidComponent),
    /// No version of this name is active.
    #[error("reducer {0:?} not found")]
    ReducerNotFound(String),
    /// The name has no such stored version.
    #[error("reducer {0:?} has no version {1}")]
    VersionNotFound(String, Version),
    /// The catalog's database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a deploy stored and activated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deployed {
    /// The stored version (as first stored, if these bytes were deployed
    /// before).
    pub version: StoredVersion,
    /// The activation that made it active.
    pub activation: Activation,
    /// False when these bytes were already stored (nothing new was kept).
    pub created: bool,
}

/// A reducer name, its stored versions and the active one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReducerInfo {
    /// The name.
    pub name: String,
    /// The active version.
    pub active: Activation,
    /// Every stored version, oldest first.
    pub versions: Vec<StoredVersion>,
}

/// How the registry keeps compiled versions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryOptions {
    /// Most versions kept compiled besides the active ones, across every
    /// name; the least recently used is dropped first.
    pub inactive_versions: usize,
    /// How long a stored version that failed to compile is answered with
    /// its error before it is compiled again; doubles with each failure.
    pub failure_back_off: Duration,
    /// The longest such back-off.
    pub failure_back_off_max: Duration,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        Self {
            inactive_versions: 16,
            failure_back_off: Duration::from_secs(1),
            failure_back_off_max: Duration::from_secs(300),
        }
    }
}

/// Compiled reducer versions by name, following the catalog's activations.
pub struct Registry {
    runtime: Runtime,
    catalog: Arc<dyn ReducerCatalog>,
    options: RegistryOptions,
    names: RwLock<HashMap<String, Named>>,
    /// Stored versions that failed to compile, in back-off.
    failures: Failures,
    /// Ticks on every use of a compiled version (its recency).
    uses: AtomicU64,
    /// One lock per version being compiled on demand, so concurrent
    /// requests for it wait for one compilation.
    flights: std::sync::Mutex<HashMap<(String, Version), Flight>>,
    /// Bounds how many versions compile at once (each takes a core).
    compile_slots: tokio::sync::Semaphore,
    /// Versions compiled on demand so far.
    compilations: std::sync::atomic::AtomicU64,
}

/// The lock that requests for one version being compiled wait on.
type Flight = Arc<tokio::sync::Mutex<()>>;

/// Versions compiled on demand at once, at most.
const CONCURRENT_COMPILES: usize = 2;

#[derive(Default)]
struct Named {
    /// Versions compiled in this process.
    compiled: HashMap<Version, Compiled>,
    /// The active version and the generation of its activation.
    active: Option<(Version, i64)>,
}

/// A compiled version and when it was last used.
struct Compiled {
    reducer: Reducer,
    /// The registry's use tick at its last use.
    used: AtomicU64,
}

impl Registry {
    /// A registry over `catalog`, with every active version compiled and
    /// the default [`RegistryOptions`].
    pub async fn open(
        runtime: Runtime,
        catalog: Arc<dyn ReducerCatalog>,
    ) -> Result<Arc<Self>, RegistryError> {
        Self::open_with(runtime, catalog, RegistryOptions::default()).await
    }

    /// A registry over `catalog`, with every active version compiled.
    pub async fn open_with(
        runtime: Runtime,
        catalog: Arc<dyn ReducerCatalog>,
        options: RegistryOptions,
    ) -> Result<Arc<Self>, RegistryError> {
        let registry = Arc::new(Self {
            runtime,
            catalog,
            failures: Failures::new(options.failure_back_off, options.failure_back_off_max),
            options,
            uses: AtomicU64::new(0),
            names: RwLock::default(),
            flights: std::sync::Mutex::default(),
            compile_slots: tokio::sync::Semaphore::new(CONCURRENT_COMPILES),
            compilations: std::sync::atomic::AtomicU64::new(0),
        });
        registry.sync().await?;
        Ok(registry)
    }

    /// The runtime reducers are compiled with.
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// Validates `bytes`, stores them as a version of `name` and activates
    /// it. Deploying the same bytes again stores nothing new. Invalid bytes
    /// change nothing: the active version keeps serving.
    pub async fn deploy(&self, name: &str, bytes: Vec<u8>) -> Result<Deployed, RegistryError> {
        let reducer = self.prepare(name, &bytes).await?;
        self.install(name, &bytes, reducer).await
    }

    /// Validates `bytes` as a version of `name` and compiles them (or finds
    /// them compiled), storing and activating nothing.
    pub async fn prepare(&self, name: &str, bytes: &[u8]) -> Result<Reducer, RegistryError> {
        check_name(name)?;
        if let Some(reducer) = self.compiled(name, Version::of(bytes)) {
            return Ok(reducer);
        }
        let bytes = bytes.to_vec();
        let runtime = self.runtime.clone();
        Ok(tokio::task::spawn_blocking(move || runtime.load(&bytes))
            .await
            .expect("compile thread panicked")?)
    }

    /// Stores `bytes` (which [`Registry::prepare`] compiled into `reducer`)
    /// as a version of `name` and activates it.
    pub async fn install(
        &self,
        name: &str,
        bytes: &[u8],
        reducer: Reducer,
    ) -> Result<Deployed, RegistryError> {
        let version = reducer.version();
        let (stored, created) = self.catalog.put_version(name, bytes).await?;
        let activation = self.make_active(name, reducer).await?;
        tracing::info!(reducer = name, %version, generation = activation.generation, "deployed");
        Ok(Deployed {
            created,
            version: stored,
            activation,
        })
    }

    /// Makes a stored version of `name` active again (a rollback).
    pub async fn activate(
        &self,
        name: &str,
        version: Version,
    ) -> Result<Activation, RegistryError> {
        let reducer = self.version(name, version).await?;
        let activation = self.make_active(name, reducer).await?;
        tracing::info!(reducer = name, %version, generation = activation.generation, "activated");
        Ok(activation)
    }

    /// Activates a compiled, stored version in the catalog, then here.
    async fn make_active(&self, name: &str, reducer: Reducer) -> Result<Activation, RegistryError> {
        let version = reducer.version();
        let activation = self
            .catalog
            .activate(name, version)
            .await?
            .ok_or_else(|| RegistryError::VersionNotFound(name.to_owned(), version))?;
        self.apply(&activation, reducer);
        Ok(activation)
    }

    /// The active version of `name` as this process last saw it.
    pub fn active(&self, name: &str) -> Option<Reducer> {
        let names = self.names.read().expect("registry lock");
        let named = names.get(name)?;
        Some(named.compiled.get(&named.active?.0)?.reducer.clone())
    }

    /// The active version of `name`, rereading the catalog first if this
    /// process knows none (another process may have just deployed it).
    pub async fn resolve_active(&self, name: &str) -> Result<Reducer, RegistryError> {
        if let Some(reducer) = self.active(name) {
            return Ok(reducer);
        }
        self.sync().await?;
        self.active(name)
            .ok_or_else(|| RegistryError::ReducerNotFound(name.to_owned()))
    }

    /// A stored version of `name`, compiled on first use: once, however
    /// many requests ask for it at the same time, and at most
    /// two versions at a time. A version that failed to compile is
    /// answered with that error until its back-off ends.
    pub async fn version(&self, name: &str, version: Version) -> Result<Reducer, RegistryError> {
        if let Some(known) = self.known(name, version) {
            return known;
        }
        let flight = self
            .flights
            .lock()
            .expect("flights lock")
            .entry((name.to_owned(), version))
            .or_default()
            .clone();
        let _flight = flight.lock().await;
        let outcome = self.compile_stored(name, version).await;
        self.flights
            .lock()
            .expect("flights lock")
            .remove(&(name.to_owned(), version));
        outcome
    }

    /// How many stored versions this registry compiled (the active ones it
    /// learns of included; deploys not).
    pub fn compilations(&self) -> u64 {
        self.compilations.load(std::sync::atomic::Ordering::Relaxed)
    }

    async fn compile_stored(&self, name: &str, version: Version) -> Result<Reducer, RegistryError> {
        // Another request in this flight may have compiled it, or failed
        // to, meanwhile.
        if let Some(known) = self.known(name, version) {
            return known;
        }
        let _slot = self
            .compile_slots
            .acquire()
            .await
            .expect("the compile semaphore is never closed");
        self.compilations.fetch_add(1, Ordering::Relaxed);
        let bytes = self
            .catalog
            .version_bytes(name, version)
            .await?
            .ok_or_else(|| RegistryError::VersionNotFound(name.to_owned(), version))?;
        let runtime = self.runtime.clone();
        let compiled = tokio::task::spawn_blocking(move || runtime.load(&bytes))
            .await
            .expect("compile thread panicked");
        let reducer = match compiled {
            Ok(reducer) => reducer,
            Err(invalid) => {
                let error = RegistryError::from(invalid);
                self.failures.record(name, version, &error);
                return Err(error);
            }
        };
        self.failures.clear(name, version);
        Ok(self.keep(name, reducer))
    }

    /// The version compiled, or the error it failed to compile with while
    /// its back-off lasts; `None` if it must be compiled.
    fn known(&self, name: &str, version: Version) -> Option<Result<Reducer, RegistryError>> {
        if let Some(reducer) = self.compiled(name, version) {
            return Some(Ok(reducer));
        }
        self.failures.current(name, version).map(Err)
    }

    /// Keeps a compiled version (or the one kept already), dropping the
    /// least recently used inactive versions beyond the bound.
    fn keep(&self, name: &str, reducer: Reducer) -> Reducer {
        let mut names = self.names.write().expect("registry lock");
        let used = self.uses.fetch_add(1, Ordering::Relaxed);
        let kept = names
            .entry(name.to_owned())
            .or_default()
            .compiled
            .entry(reducer.version())
            .or_insert_with(|| Compiled {
                reducer,
                used: AtomicU64::new(used),
            })
            .reducer
            .clone();
        self.evict_inactive(&mut names);
        kept
    }

    /// Drops the least recently used inactive versions until at most
    /// [`RegistryOptions::inactive_versions`] are left. A fold that holds
    /// one finishes on it.
    fn evict_inactive(&self, names: &mut HashMap<String, Named>) {
        let mut inactive: Vec<(u64, String, Version)> = names
            .iter()
            .flat_map(|(name, named)| {
                let active = named.active.map(|(version, _)| version);
                named
                    .compiled
                    .iter()
                    .filter(move |(version, _)| Some(**version) != active)
                    .map(|(version, c)| (c.used.load(Ordering::Relaxed), name.clone(), *version))
            })
            .collect();
        let excess = inactive
            .len()
            .saturating_sub(self.options.inactive_versions);
        if excess == 0 {
            return;
        }
        inactive.sort_unstable_by_key(|(used, _, _)| *used);
        for (_, name, version) in inactive.into_iter().take(excess) {
            if let Some(named) = names.get_mut(&name) {
                named.compiled.remove(&version);
                tracing::debug!(reducer = name, %version, "inactive version dropped");
            }
        }
    }

    /// Every reducer name with an active version.
    pub async fn list(&self) -> Result<Vec<ReducerInfo>, RegistryError> {
        let mut infos = Vec::new();
        for active in self.catalog.activations().await? {
            let versions = self.catalog.versions(&active.name).await?;
            infos.push(ReducerInfo {
                name: active.name.clone(),
                active,
                versions,
            });
        }
        Ok(infos)
    }

    /// One reducer name's versions and active version.
    pub async fn describe(&self, name: &str) -> Result<ReducerInfo, RegistryError> {
        let active = self
            .catalog
            .activations()
            .await?
            .into_iter()
            .find(|a| a.name == name)
            .ok_or_else(|| RegistryError::ReducerNotFound(name.to_owned()))?;
        Ok(ReducerInfo {
            name: name.to_owned(),
            versions: self.catalog.versions(name).await?,
            active,
        })
    }

    /// Applies every activation in the catalog newer than what this process
    /// has. A stored version that does not compile here is logged and
    /// skipped; the previous version keeps serving.
    pub async fn sync(&self) -> Result<(), RegistryError> {
        for activation in self.catalog.activations().await? {
            if !self.is_newer(&activation) {
                continue;
            }
            match self.version(&activation.name, activation.version).await {
                Ok(reducer) => self.apply(&activation, reducer),
                Err(RegistryError::Store(error)) => return Err(error.into()),
                Err(error) => tracing::error!(
                    %error,
                    reducer = activation.name,
                    version = %activation.version,
                    "stored reducer version unusable here; keeping the previous one"
                ),
            }
        }
        Ok(())
    }

    /// Follows activations made by other processes until the returned
    /// handle is dropped: on every hint from the catalog's feed, and every
    /// few seconds regardless.
    pub fn watch(self: &Arc<Self>) -> Watch {
        Watch(tokio::spawn(self.clone().follow()))
    }

    async fn follow(self: Arc<Self>) {
        let mut feed = None;
        loop {
            if feed.is_none() {
                match self.catalog.activation_feed().await {
                    Ok(opened) => feed = Some(opened),
                    Err(error) => tracing::warn!(%error, "no activation feed; polling"),
                }
            }
            let hint = async {
                match feed.as_mut() {
                    Some(feed) => feed.changed().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                hinted = hint => if let Err(error) = hinted {
                    tracing::warn!(%error, "activation feed lost; reopening");
                    feed = None;
                    tokio::time::sleep(FEED_RETRY).await;
                },
                () = tokio::time::sleep(RESYNC_INTERVAL) => {}
            }
            if let Err(error) = self.sync().await {
                tracing::warn!(%error, "cannot read reducer activations");
            }
        }
    }

    fn compiled(&self, name: &str, version: Version) -> Option<Reducer> {
        let names = self.names.read().expect("registry lock");
        let compiled = names.get(name)?.compiled.get(&version)?;
        compiled
            .used
            .store(self.uses.fetch_add(1, Ordering::Relaxed), Ordering::Relaxed);
        Some(compiled.reducer.clone())
    }

    fn is_newer(&self, activation: &Activation) -> bool {
        let names = self.names.read().expect("registry lock");
        let current = names.get(&activation.name).and_then(|n| n.active);
        current.is_none_or(|(_, generation)| generation < activation.generation)
    }

    /// Makes `reducer` active for the activation's name unless a newer
    /// activation was applied meanwhile.
    fn apply(&self, activation: &Activation, reducer: Reducer) {
        let mut names = self.names.write().expect("registry lock");
        let used = self.uses.fetch_add(1, Ordering::Relaxed);
        let named = names.entry(activation.name.clone()).or_default();
        named
            .compiled
            .entry(activation.version)
            .or_insert_with(|| Compiled {
                reducer,
                used: AtomicU64::new(used),
            });
        if named
            .active
            .is_none_or(|(_, generation)| generation < activation.generation)
        {
            named.active = Some((activation.version, activation.generation));
        }
        // The version this one replaced is inactive now.
        self.evict_inactive(&mut names);
    }
}

/// The task following the catalog's activations; stops when dropped.
pub struct Watch(tokio::task::JoinHandle<()>);

impl Drop for Watch {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Whether `name` can name a reducer: 1 to 64 characters of `a-z`, `0-9`,
/// `-` and `_`, starting with a letter (safe in URLs and cache keys).
pub fn is_valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= MAX_NAME_LEN
        && chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

fn check_name(name: &str) -> Result<(), RegistryError> {
    if is_valid_name(name) {
        Ok(())
    } else {
        Err(RegistryError::InvalidName(name.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_url_and_key_safe() {
        for good in ["payment", "a", "order-v2", "x_1"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in ["", "Payment", "1st", "a b", "a/b", "a:b", &"a".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }
}
