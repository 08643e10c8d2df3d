//! Support for the end-to-end tests: daemons on port 0 over real stores,
//! a client, and a TCP proxy that can cut a daemon off from PostgreSQL.

pub mod proxy;
pub mod race;
pub mod servers;
pub mod sse;
pub mod workload;

use std::net::SocketAddr;
use std::path::PathBuf;

use eventlogs_host::config::{DeployAtStart, ServeConfig};
use eventlogs_host::daemon::Daemon;
use eventlogs_host::http::auth::Token;
use reqwest::{Method, RequestBuilder, Response};
use serde_json::Value;

pub use eventlogs_test_env::{
    SHARED_REDIS, plugin, plugin_path, postgres_admin_url, postgres_database, sqlite_database,
};

/// Settings for a daemon on a free loopback port over `database_url`, with
/// the example `payment` reducer deployed at start.
pub fn config(database_url: &str) -> ServeConfig {
    let mut config = ServeConfig::new("127.0.0.1:0".parse().unwrap(), database_url);
    config.deploy = vec![DeployAtStart {
        name: "payment".into(),
        file: plugin_path("payment"),
    }];
    config
}

/// The same settings with Redis (the shared server, a prefix of its own).
pub fn with_redis(mut config: ServeConfig) -> ServeConfig {
    config.redis_url = Some(SHARED_REDIS.into());
    config.redis_prefix = format!("eventlogs-e2e-{}:", uuid::Uuid::now_v7());
    config
}

/// How a test daemon runs.
enum Running {
    /// In this process (a `Daemon` on the test's runtime).
    InProcess(Daemon),
    /// As a separate `eventlogs serve` process.
    Process(tokio::process::Child),
}

/// The `eventlogs` binary the process tests run (`EVENTLOGS_BIN`, or the
/// debug build in the workspace's target folder, which `scripts/test`
/// builds first).
pub fn binary() -> PathBuf {
    let path = match std::env::var_os("EVENTLOGS_BIN") {
        Some(path) => PathBuf::from(path),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debug/eventlogs"),
    };
    assert!(
        path.exists(),
        "{} is missing; build it with cargo build -p eventlogs-host --bin eventlogs",
        path.display()
    );
    path
}

/// A running daemon and a client for it.
pub struct TestDaemon {
    daemon: Option<Running>,
    /// Its base URL.
    pub url: String,
    /// The bearer token requests carry, if any.
    pub token: Option<String>,
    http: reqwest::Client,
}

impl TestDaemon {
    /// Starts a daemon.
    pub async fn start(config: ServeConfig) -> Self {
        let daemon = Daemon::start(&config).await.expect("daemon starts");
        Self::at(daemon)
    }

    fn at(daemon: Daemon) -> Self {
        let addr: SocketAddr = daemon.local_addr();
        Self {
            url: format!("http://{addr}"),
            daemon: Some(Running::InProcess(daemon)),
            token: None,
            http: reqwest::Client::new(),
        }
    }

    /// Runs `eventlogs serve ARGS --listen 127.0.0.1:0` as a separate
    /// process and waits until it listens.
    pub async fn spawn(args: &[&str]) -> Self {
        use tokio::io::AsyncBufReadExt;
        let mut child = tokio::process::Command::new(binary())
            .arg("serve")
            .args(args)
            .args(["--listen", "127.0.0.1:0"])
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn eventlogs serve");
        let stdout = child.stdout.take().unwrap();
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let first = tokio::time::timeout(std::time::Duration::from_secs(60), lines.next_line())
            .await
            .expect("the daemon did not start within a minute")
            .unwrap()
            .expect("the daemon exited before listening");
        let url = first
            .strip_prefix("eventlogs listening on ")
            .unwrap_or_else(|| panic!("unexpected first line: {first}"))
            .to_owned();
        // Keep draining stdout so the daemon never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Self {
            url,
            daemon: Some(Running::Process(child)),
            token: None,
            http: reqwest::Client::new(),
        }
    }

    /// A daemon on the embedded defaults (an SQLite file, in-process cache).
    pub async fn embedded() -> Self {
        Self::start(config(&sqlite_database())).await
    }

    /// A daemon on PostgreSQL and Redis, or `None` (loudly) without them.
    pub async fn on_postgres_and_redis() -> Option<Self> {
        Some(Self::start(with_redis(config(&postgres_database().await?))).await)
    }

    /// A request to `path`, with the token if set.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let request = self.http.request(method, format!("{}{path}", self.url));
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// POSTs JSON.
    pub async fn post(&self, path: &str, body: Value) -> Response {
        self.request(Method::POST, path)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    /// GETs.
    pub async fn get(&self, path: &str) -> Response {
        self.request(Method::GET, path).send().await.unwrap()
    }

    /// Creates a log bound to `reducer` holding `events`; its id. Panics
    /// unless the daemon answers 201.
    pub async fn create_log(&self, reducer: &str, events: Vec<Value>) -> String {
        let body = serde_json::json!({"reducer": reducer, "events": events});
        let (status, created) = json(self.post("/v1/logs", body).await).await;
        assert_eq!(status, 201, "{created}");
        created["log_id"].as_str().unwrap().to_owned()
    }

    /// Deploys component bytes under `name`.
    pub async fn deploy(&self, name: &str, bytes: Vec<u8>) -> Response {
        self.request(Method::PUT, &format!("/v1/reducers/{name}"))
            .header("content-type", "application/wasm")
            .body(bytes)
            .send()
            .await
            .unwrap()
    }

    /// Shuts the daemon down gracefully: a process gets SIGTERM and must
    /// exit successfully.
    pub async fn stop(mut self) {
        match self.daemon.take() {
            Some(Running::InProcess(daemon)) => daemon.shutdown().await.unwrap(),
            Some(Running::Process(mut child)) => {
                let pid = child.id().expect("still running").to_string();
                let sent = std::process::Command::new("kill")
                    .args(["-TERM", &pid])
                    .status()
                    .unwrap();
                assert!(sent.success());
                let status = tokio::time::timeout(std::time::Duration::from_secs(10), child.wait())
                    .await
                    .expect("the daemon did not exit within 10 s of SIGTERM")
                    .unwrap();
                assert!(status.success(), "the daemon exited with {status}");
            }
            None => {}
        }
    }
}

/// Two `eventlogs serve` processes on one database with `payment`
/// deployed (and Redis under a prefix of their own, if `redis`).
pub async fn two_processes(database: &str, redis: bool) -> [std::sync::Arc<TestDaemon>; 2] {
    let deploy = format!("payment={}", plugin_path("payment").display());
    let prefix = format!("eventlogs-e2e-{}:", uuid::Uuid::now_v7());
    let mut args = vec!["--database-url", database, "--deploy", &deploy];
    if redis {
        args.extend(["--redis-url", SHARED_REDIS, "--redis-prefix", &prefix]);
    }
    // One after the other: the first applies the migrations.
    let first = TestDaemon::spawn(&args).await;
    let second = TestDaemon::spawn(&args).await;
    [std::sync::Arc::new(first), std::sync::Arc::new(second)]
}

/// A token secret with these scopes, for `ServeConfig::tokens`.
pub fn token(secret: &str, scopes: &str) -> Token {
    format!("{scopes}:{secret}").parse().unwrap()
}

/// A response's status and JSON body, asserting it is not a 5xx unless
/// `allow_5xx`.
pub async fn json(response: Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}

/// Asserts a problem document of this status and kind.
pub async fn assert_problem(response: Response, status: u16, kind: &str) -> Value {
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let (got, body) = json(response).await;
    assert_eq!(got, status, "{body}");
    assert_eq!(content_type, "application/problem+json", "{body}");
    assert_eq!(
        body["type"],
        format!("urn:eventlogs:problem:{kind}"),
        "{body}"
    );
    body
}

/// Whether every one of `tools` answers `TOOL --version`. When one does
/// not, the test is skipped loudly, or fails under `CI=true`.
pub fn tools_present(tools: &[&str]) -> bool {
    let missing: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|tool| {
            !std::process::Command::new(tool)
                .arg("--version")
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .collect();
    if missing.is_empty() {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{} required under CI=true", missing.join(", "));
    }
    eprintln!("SKIPPED: {} not installed", missing.join(", "));
    false
}
