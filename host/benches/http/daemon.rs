//! The daemon under test: the optimised `eventlogs` binary as a separate
//! process on PostgreSQL + Redis, so its memory is its own.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

/// The Redis server the daemon (and the seed library's cache) uses.
pub const REDIS_URL: &str = "redis://127.0.0.1:6379/";

/// A running daemon process.
pub struct Daemon {
    child: Child,
    /// Its base URL.
    pub url: String,
    /// The prefix of its Redis keys.
    pub redis_prefix: String,
}

/// A new, empty database on the server `admin` points at.
pub async fn new_database(admin: &str) -> String {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(admin)
        .await
        .expect("the benchmark needs PostgreSQL (EVENTLOGS_TEST_POSTGRES)");
    let name = format!("eventlogs_bench_{}", uuid::Uuid::now_v7().simple());
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .unwrap();
    let (server, _) = admin.rsplit_once('/').unwrap();
    // Without TLS for every client, the daemon (which uses TLS only when
    // asked) and the baselines alike: the local server offers TLS, which
    // sqlx would otherwise use for the baselines alone.
    format!("{server}/{name}?sslmode=disable")
}

fn plugin(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(format!("../target/wasm32-wasip2/plugin/{name}.wasm"))
}

impl Daemon {
    /// Starts `eventlogs serve` with the payment and counter reducers deployed.
    pub async fn start(database: &str) -> Self {
        let prefix = format!("eventlogs-bench-{}:", uuid::Uuid::now_v7());
        Self::start_with(database, prefix).await
    }

    /// Another daemon on the same database and Redis keys, as a second
    /// process behind a load balancer is: what it writes, this one has
    /// never folded.
    pub async fn beside(&self, database: &str) -> Self {
        Self::start_with(database, self.redis_prefix.clone()).await
    }

    async fn start_with(database: &str, prefix: String) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_eventlogs"))
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--database-url",
                database,
            ])
            .args(["--redis-url", REDIS_URL, "--redis-prefix", &prefix])
            .arg("--deploy")
            .arg(format!("payment={}", plugin("payment").display()))
            .arg("--deploy")
            .arg(format!("counter={}", plugin("counter").display()))
            .args(["--page-limit-max", "1000"])
            .env("EVENTLOGS_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the daemon");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line
            .trim()
            .strip_prefix("eventlogs listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        Self {
            child,
            url,
            redis_prefix: prefix,
        }
    }

    fn status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    /// Resident set size now.
    pub fn rss_kib(&self) -> u64 {
        self.status_kib("VmRSS:")
    }

    /// Peak resident set size since start or the last reset.
    pub fn peak_rss_kib(&self) -> u64 {
        self.status_kib("VmHWM:")
    }

    /// Starts a new peak measurement.
    pub fn reset_peak_rss(&self) {
        std::fs::write(format!("/proc/{}/clear_refs", self.child.id()), "5").unwrap();
    }

    /// Stops it (SIGTERM, then waits).
    pub fn stop(self) {
        drop(self);
    }
}

/// A benchmark that panics stops its daemon too, so no daemon outlives the
/// run holding database connections that the next run needs.
impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

/// The bytes of a built plugin.
pub fn plugin_bytes(name: &str) -> Vec<u8> {
    std::fs::read(plugin(name)).unwrap_or_else(|e| panic!("{name}: {e}; run scripts/build-plugins"))
}

/// Deletes every cached reduction of `log` under `prefix`, so its next
/// reduce folds from the start.
pub async fn evict(prefix: &str, log: &str) {
    let client = redis::Client::open(REDIS_URL).unwrap();
    let mut redis = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*{log}"))
        .query_async(&mut redis)
        .await
        .unwrap();
    for key in keys {
        let _: () = redis::cmd("DEL")
            .arg(key)
            .query_async(&mut redis)
            .await
            .unwrap();
    }
}
