//! The reducer registry on both stores: validated, immutable, idempotent
//! deploys; rollback; a restart that needs no files; and activations made
//! by one process seen by another within a second.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::manager::{amount, shared_redis};
use common::{plugin, postgres_database, runtime, sqlite_database};
use eventlogs_host::cache::memory::MemoryCache;
use eventlogs_host::log_manager::{LogManager, LogManagerOptions};
use eventlogs_host::registry::{Registry, RegistryError, RegistryOptions};
use eventlogs_host::runtime::InvalidComponent;
use eventlogs_host::store::postgres::PostgresStore;
use eventlogs_host::store::sqlite::SqliteStore;
use eventlogs_host::store::{EventStore, catalog::ReducerCatalog};
use eventlogs_host::{LogId, Version};
use serde_json::json;

/// Opens another connection pool on the same database: what a second host
/// process would have.
#[async_trait::async_trait]
trait Database: Send + Sync {
    async fn open(&self) -> Arc<dyn Store>;
}

trait Store: EventStore + ReducerCatalog {}
impl<T: EventStore + ReducerCatalog> Store for T {}

struct Postgres(String);
struct Sqlite(String);

#[async_trait::async_trait]
impl Database for Postgres {
    async fn open(&self) -> Arc<dyn Store> {
        Arc::new(PostgresStore::connect(&self.0).await.unwrap())
    }
}

#[async_trait::async_trait]
impl Database for Sqlite {
    async fn open(&self) -> Arc<dyn Store> {
        Arc::new(SqliteStore::connect(&self.0).await.unwrap())
    }
}

async fn open_registry(store: &Arc<dyn Store>) -> Arc<Registry> {
    let catalog: Arc<dyn ReducerCatalog> = store.clone();
    Registry::open(runtime(|_| {}), catalog).await.unwrap()
}

async fn deploys_are_validated_immutable_and_idempotent(db: Box<dyn Database>) {
    let store = db.open().await;
    let registry = open_registry(&store).await;

    // Invalid bytes: a clear error and nothing stored.
    let garbage = b"\0asm but not really".to_vec();
    assert!(matches!(
        registry.deploy("payment", garbage.clone()).await,
        Err(RegistryError::Invalid(InvalidComponent::NotAComponent(_)))
    ));
    assert!(store.versions("payment").await.unwrap().is_empty());
    assert!(matches!(
        registry.deploy("Bad Name", plugin("payment")).await,
        Err(RegistryError::InvalidName(_))
    ));

    let first = registry.deploy("payment", plugin("payment")).await.unwrap();
    assert_eq!(first.version.version, Version::of(&plugin("payment")));
    assert_eq!(first.activation.version, first.version.version);
    // The same bytes again: the same version, stored once, first timestamp.
    let again = registry.deploy("payment", plugin("payment")).await.unwrap();
    assert_eq!(again.version, first.version);
    assert!(again.activation.generation > first.activation.generation);

    // An invalid upload leaves the active version serving.
    assert!(registry.deploy("payment", garbage).await.is_err());
    assert_eq!(
        registry.active("payment").unwrap().version(),
        first.version.version
    );

    let second = registry.deploy("payment", plugin("counter")).await.unwrap();
    assert_eq!(
        registry.active("payment").unwrap().version(),
        second.version.version
    );
    let info = registry.describe("payment").await.unwrap();
    assert_eq!(info.active.version, second.version.version);
    let stored: Vec<Version> = info.versions.iter().map(|v| v.version).collect();
    assert_eq!(stored.len(), 2);
    assert!(stored.contains(&first.version.version) && stored.contains(&second.version.version));
    assert_eq!(registry.list().await.unwrap(), vec![info]);

    // Rollback.
    registry
        .activate("payment", first.version.version)
        .await
        .unwrap();
    assert_eq!(
        registry.active("payment").unwrap().version(),
        first.version.version
    );
    let unknown = Version::of(b"never deployed");
    assert!(matches!(
        registry.activate("payment", unknown).await,
        Err(RegistryError::VersionNotFound(name, v)) if name == "payment" && v == unknown
    ));
    assert!(matches!(
        registry.describe("nonexistent").await,
        Err(RegistryError::ReducerNotFound(_))
    ));

    // A restarted process finds the same active version in the database.
    let restarted = open_registry(&db.open().await).await;
    assert_eq!(
        restarted.active("payment").unwrap().version(),
        first.version.version
    );
}

/// Two processes' worth of parts on one database: activations made through
/// one manager are used by the other within a second.
async fn activations_reach_other_processes_within_a_second(db: Box<dyn Database>) {
    let options = LogManagerOptions::default();
    let (store_a, store_b) = (db.open().await, db.open().await);
    let (registry_a, registry_b) = (open_registry(&store_a).await, open_registry(&store_b).await);
    let _watch = registry_b.watch();
    let a = LogManager::new(
        store_a,
        Arc::new(MemoryCache::new(1 << 20)),
        registry_a.clone(),
        options.clone(),
    );
    let b = LogManager::new(store_b, shared_redis(), registry_b.clone(), options);

    let v1 = registry_a
        .deploy("payment", plugin("payment"))
        .await
        .unwrap();
    let log_id = LogId::new();
    a.create(
        Some(log_id),
        "payment",
        common::events(&[json!({"Authorized": {"amount": 7}})]),
        None,
    )
    .await
    .unwrap();
    // B has never seen `payment`: it rereads the catalog on the miss.
    let reduced = b.reduce(log_id, None).await.unwrap();
    assert_eq!(reduced.reducer_version, v1.version.version);
    assert_eq!(amount(&reduced, "amount_approved"), 7);

    for (plugin_name, expected) in [("counter", r#"{"count":1}"#), ("payment", "")] {
        let deployed = registry_a
            .deploy("payment", plugin(plugin_name))
            .await
            .unwrap();
        let started = Instant::now();
        loop {
            let reduced = b.reduce(log_id, None).await.unwrap();
            if reduced.reducer_version == deployed.version.version {
                if !expected.is_empty() {
                    assert_eq!(reduced.aggregate, expected);
                }
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(1),
                "the other process still used {} after {:?}",
                reduced.reducer_version,
                started.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        eprintln!(
            "activation of {plugin_name} seen by the other process after {:?}",
            started.elapsed()
        );
    }
}

macro_rules! on_both {
    ($($name:ident),* $(,)?) => {
        mod on_postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(url) = super::postgres_database().await {
                        super::$name(Box::new(super::Postgres(url))).await;
                    }
                }
            )*
        }
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(Box::new(super::Sqlite(super::sqlite_database()))).await;
                }
            )*
        }
    };
}

/// 50 concurrent requests for a stored version this process has not
/// compiled yet (what 50 `GET …/aggregate?version=` would ask) compile it
/// once.
async fn concurrent_requests_for_a_version_compile_it_once(db: Box<dyn Database>) {
    let store = db.open().await;
    let first = open_registry(&store).await;
    let old = first.deploy("payment", plugin("payment")).await.unwrap();
    first.deploy("payment", plugin("counter")).await.unwrap();
    // A fresh process compiles only the active version at open.
    let registry = open_registry(&store).await;
    let version = old.version.version;
    let before = registry.compilations();
    let asks: Vec<_> = (0..50)
        .map(|_| {
            let registry = registry.clone();
            tokio::spawn(async move { registry.version("payment", version).await })
        })
        .collect();
    for ask in asks {
        assert_eq!(ask.await.unwrap().unwrap().version(), version);
    }
    assert_eq!(registry.compilations() - before, 1);
}

/// A deploy whose trial run finds every instance slot busy is a retryable
/// 503, not an invalid reducer; once a slot is free it deploys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_without_a_free_instance_slot_is_retryable() {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::connect(&sqlite_database()).await.unwrap());
    let catalog: Arc<dyn ReducerCatalog> = store.clone();
    let registry = Registry::open(runtime(|l| l.max_instances = 2), catalog)
        .await
        .unwrap();
    registry.deploy("counter", plugin("counter")).await.unwrap();
    let counter = registry.active("counter").unwrap();
    let held: Vec<_> = (0..2).map(|_| counter.start().unwrap()).collect();
    let error = registry
        .deploy("payment", plugin("payment"))
        .await
        .expect_err("no slot for the trial run");
    assert!(
        matches!(
            &error,
            RegistryError::Invalid(InvalidComponent::InitFailed(e))
                if matches!(e.kind, eventlogs_host::runtime::FailureKind::Instantiation(_))
        ),
        "{error}"
    );
    let problem = eventlogs_host::http::error::Problem::from(error);
    assert_eq!(problem.status().as_u16(), 503);
    drop(held);
    registry.deploy("payment", plugin("payment")).await.unwrap();
}

on_both!(
    concurrent_requests_for_a_version_compile_it_once,
    deploys_are_validated_immutable_and_idempotent,
    activations_reach_other_processes_within_a_second,
);

/// A SQLite catalog and a registry over it with `options`.
async fn registry_with(options: RegistryOptions) -> (Arc<dyn ReducerCatalog>, Arc<Registry>) {
    let store = SqliteStore::connect(&sqlite_database()).await.unwrap();
    let catalog: Arc<dyn ReducerCatalog> = Arc::new(store);
    let registry = Registry::open_with(runtime(|_| {}), catalog.clone(), options)
        .await
        .unwrap();
    (catalog, registry)
}

/// A stored version that does not compile here (another host's limits, a
/// corrupted row) is compiled once for 20 concurrent asks, then answered
/// with its error without compiling until its back-off ends, and compiled
/// again after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_that_fails_to_compile_is_tried_again_only_after_its_back_off() {
    let back_off = Duration::from_millis(400);
    let (catalog, registry) = registry_with(RegistryOptions {
        failure_back_off: back_off,
        ..RegistryOptions::default()
    })
    .await;
    let (stored, _) = catalog
        .put_version("broken", b"\0asm\x0d\0\x01\0 not a component")
        .await
        .unwrap();
    let version = stored.version;
    let asks: Vec<_> = (0..20)
        .map(|_| {
            let registry = registry.clone();
            tokio::spawn(async move { registry.version("broken", version).await })
        })
        .collect();
    for ask in asks {
        assert!(matches!(
            ask.await.unwrap(),
            Err(RegistryError::Invalid(InvalidComponent::NotAComponent(_)))
        ));
    }
    assert_eq!(registry.compilations(), 1);
    let started = Instant::now();
    while started.elapsed() < back_off / 2 {
        assert!(registry.version("broken", version).await.is_err());
    }
    assert_eq!(
        registry.compilations(),
        1,
        "compiled again during its back-off"
    );
    tokio::time::sleep(back_off).await;
    assert!(registry.version("broken", version).await.is_err());
    assert_eq!(
        registry.compilations(),
        2,
        "not tried again after its back-off"
    );
}

/// With room for one inactive version, asking for another inactive version
/// drops the least recently used one (it compiles again when asked for),
/// while the active version is never dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inactive_versions_beyond_the_bound_are_dropped_least_recently_used_first() {
    let options = RegistryOptions {
        inactive_versions: 1,
        ..RegistryOptions::default()
    };
    let (catalog, deployer) = registry_with(options.clone()).await;
    let mut versions = Vec::new();
    for bytes in ["payment", "counter", "fixture_single_event"] {
        let deployed = deployer.deploy("pay", plugin(bytes)).await.unwrap();
        versions.push(deployed.version.version);
    }
    let [first, second, active] = versions[..] else {
        unreachable!()
    };
    // A fresh process compiles only the active version.
    let registry = Registry::open_with(runtime(|_| {}), catalog, options)
        .await
        .unwrap();
    let compiled = |expected: u64| assert_eq!(registry.compilations(), expected);
    compiled(1);
    registry.version("pay", first).await.unwrap();
    registry.version("pay", first).await.unwrap();
    compiled(2);
    registry.version("pay", second).await.unwrap();
    compiled(3);
    registry.version("pay", second).await.unwrap();
    compiled(3);
    registry.version("pay", first).await.unwrap();
    compiled(4);
    registry.version("pay", active).await.unwrap();
    assert_eq!(registry.active("pay").unwrap().version(), active);
    compiled(4);
}
