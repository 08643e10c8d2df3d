//! Helpers shared by the runtime's integration tests.

#![allow(dead_code)]

pub mod manager;
pub mod redis;

use std::path::PathBuf;

use eventlogs_host::LogId;
use eventlogs_host::runtime::{EventBatch, Limits, Reducer, Runtime};
use eventlogs_host::store::postgres::PostgresStore;
use eventlogs_host::store::sqlite::SqliteStore;

/// Where `scripts/build-plugins` puts the compiled example reducers and
/// fixtures (override with `EVENTLOGS_PLUGIN_DIR`).
pub fn plugin_dir() -> PathBuf {
    match std::env::var_os("EVENTLOGS_PLUGIN_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/wasm32-wasip2/plugin"),
    }
}

/// The bytes of a compiled plugin, e.g. `payment` or `fixture_panicking`.
pub fn plugin(name: &str) -> Vec<u8> {
    let path = plugin_dir().join(format!("{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read {} ({e}); build the plugins first with scripts/build-plugins",
            path.display()
        )
    })
}

/// A runtime with default limits except those `adjust` changes.
pub fn runtime(adjust: impl FnOnce(&mut Limits)) -> Runtime {
    let mut limits = Limits::default();
    adjust(&mut limits);
    Runtime::new(limits).expect("runtime starts")
}

/// Loads a plugin that must pass validation.
pub fn load(runtime: &Runtime, name: &str) -> Reducer {
    runtime
        .load(&plugin(name))
        .unwrap_or_else(|e| panic!("{name} should load: {e}"))
}

/// A batch of JSON events starting at `first_index`.
pub fn batch(first_index: u64, payloads: &[String]) -> EventBatch {
    let mut batch = EventBatch::default();
    for (i, payload) in payloads.iter().enumerate() {
        let index = first_index + i as u64;
        batch
            .push(
                index,
                1_700_000_000_000_000 + index as i64,
                payload.as_bytes(),
            )
            .expect("small batch");
    }
    batch
}

/// The resident set size of this process, in KiB (Linux).
pub fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS line")
}

/// The shared PostgreSQL server (override with `EVENTLOGS_TEST_POSTGRES`).
pub fn postgres_admin_url() -> String {
    std::env::var("EVENTLOGS_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A store on a database of its own, or `None` (loudly) when PostgreSQL is
/// not reachable outside CI. Under `CI=true` an unreachable server fails.
pub async fn postgres() -> Option<PostgresStore> {
    let url = postgres_database().await?;
    Some(
        PostgresStore::connect(&url)
            .await
            .expect("connect to test database"),
    )
}

/// The URL of a new, empty database of its own on the shared server, or
/// `None` (loudly) as for [`postgres`].
pub async fn postgres_database() -> Option<String> {
    use sqlx::Connection;
    let admin = postgres_admin_url();
    let mut conn = match sqlx::PgConnection::connect(&admin).await {
        Ok(conn) => conn,
        Err(e) if std::env::var("CI").as_deref() != Ok("true") => {
            eprintln!("SKIPPED: PostgreSQL not reachable at {admin}: {e}");
            return None;
        }
        Err(e) => panic!("PostgreSQL is required under CI=true: {e}"),
    };
    let name = format!("eventlogs_test_{}", LogId::new().as_uuid().simple());
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .expect("create test database");
    match admin.rsplit_once('/') {
        Some((server, _)) => Some(format!("{server}/{name}")),
        None => panic!("EVENTLOGS_TEST_POSTGRES must end with /DATABASE"),
    }
}

/// An embedded store in a file of its own.
pub async fn sqlite() -> SqliteStore {
    SqliteStore::connect(&sqlite_database())
        .await
        .expect("open sqlite")
}

/// The URL of a new SQLite file of its own (created on first connect).
pub fn sqlite_database() -> String {
    let dir = std::env::temp_dir().join(format!("eventlogs-test-{}", LogId::new()));
    std::fs::create_dir_all(&dir).unwrap();
    format!("sqlite://{}", dir.join("events.db").display())
}

/// Events from JSON values (their compact text).
pub fn events(values: &[serde_json::Value]) -> eventlogs_host::store::Events {
    values
        .iter()
        .map(|v| eventlogs_host::payload::Payload::from_value(v).expect("storable"))
        .collect()
}

/// The secret test caches authenticate their entries under.
pub fn cache_secret() -> eventlogs_host::cache::CacheSecret {
    eventlogs_host::cache::CacheSecret::new(b"test-cache-secret-0123456789".to_vec()).unwrap()
}
