//! What every test of eventlogs finds on the machine, shared by the host
//! crate's integration tests and the end-to-end tests: the shared
//! PostgreSQL and Redis servers, a database or SQLite file of a test's own,
//! and the plugins `scripts/build-plugins` built. Nothing here knows the
//! host's types, so both test crates can use it.

use std::path::PathBuf;

/// The shared PostgreSQL server's admin URL (override with
/// `EVENTLOGS_TEST_POSTGRES`).
pub fn postgres_admin_url() -> String {
    std::env::var("EVENTLOGS_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// The shared Redis server.
pub const SHARED_REDIS: &str = "redis://127.0.0.1:6379/";

/// Where `scripts/build-plugins` puts the compiled example reducers and
/// fixtures (override with `EVENTLOGS_PLUGIN_DIR`).
pub fn plugin_dir() -> PathBuf {
    match std::env::var_os("EVENTLOGS_PLUGIN_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/wasm32-wasip2/plugin"),
    }
}

/// The path of a compiled plugin, e.g. `payment` or `fixture_panicking`;
/// panics with what to run if it was not built.
pub fn plugin_path(name: &str) -> PathBuf {
    let path = plugin_dir().join(format!("{name}.wasm"));
    assert!(
        path.exists(),
        "{} is missing; build the plugins first with scripts/build-plugins",
        path.display()
    );
    path
}

/// The bytes of a compiled plugin.
pub fn plugin(name: &str) -> Vec<u8> {
    let path = plugin_path(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// The URL of a new, empty database of its own on the shared PostgreSQL,
/// or `None` (loudly) when the server is unreachable outside CI; under
/// `CI=true` that fails. `scripts/test` drops it after the run.
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
    let name = format!("eventlogs_test_{}", uuid::Uuid::now_v7().simple());
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .expect("create test database");
    let (server, _) = admin
        .rsplit_once('/')
        .expect("EVENTLOGS_TEST_POSTGRES must end with /DATABASE");
    Some(format!("{server}/{name}"))
}

/// The URL of a new SQLite file of its own (created on first connect), in
/// a folder `scripts/test` removes after the run.
pub fn sqlite_database() -> String {
    let dir = std::env::temp_dir().join(format!("eventlogs-test-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    format!("sqlite://{}", dir.join("events.db").display())
}
