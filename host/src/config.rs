//! The daemon's settings: every one a command-line flag and an `EVENTLOGS_*`
//! environment variable, with defaults that run on a fresh machine (an
//! SQLite file, the in-process cache, loopback only).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::{Args, ValueEnum};

use crate::http::auth::{Scope, Token};
use crate::http::server::ServerLimits;
use crate::registry::RegistryOptions;
use crate::runtime::Limits;

/// `eventlogs serve` settings.
#[derive(Debug, Clone, Args)]
pub struct ServeConfig {
    /// Address to listen on.
    #[arg(long, env = "EVENTLOGS_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Event store: `postgres://…` or `sqlite://FILE` (created if missing).
    #[arg(
        long,
        env = "EVENTLOGS_DATABASE_URL",
        default_value = "sqlite://eventlogs.db"
    )]
    pub database_url: String,

    /// Redis for the reduction cache; without it, an in-process cache.
    #[arg(long, env = "EVENTLOGS_REDIS_URL")]
    pub redis_url: Option<String>,

    /// A PEM certificate authority that signs the Redis server's TLS
    /// certificate, for a `rediss://` URL whose certificate the system does
    /// not trust.
    #[arg(long, env = "EVENTLOGS_REDIS_CA_FILE")]
    pub redis_ca_file: Option<PathBuf>,

    /// Prefix of every Redis key (to share one Redis between deployments).
    #[arg(long, env = "EVENTLOGS_REDIS_PREFIX", default_value = "eventlogs:")]
    pub redis_prefix: String,

    /// The secret Redis entries are authenticated under (HMAC-SHA256), at
    /// least 16 characters; every daemon sharing the Redis needs the same.
    /// Without it, one is generated and stored in the database on first
    /// use, and every daemon on that database shares it.
    #[arg(long, env = "EVENTLOGS_CACHE_SECRET", hide_env_values = true)]
    pub cache_secret: Option<String>,

    /// Bytes of aggregates cached in this process: the whole cache when no
    /// Redis is set, a tier in front of Redis when one is (0: none).
    #[arg(long, env = "EVENTLOGS_MEMORY_CACHE_BYTES", default_value_t = 64 << 20)]
    pub memory_cache_bytes: u64,

    /// How long cached reductions live, in seconds (default: until evicted).
    #[arg(long, env = "EVENTLOGS_CACHE_TTL_SECS")]
    pub cache_ttl_secs: Option<u64>,

    /// Logs shorter than this many events are not cached.
    #[arg(long, env = "EVENTLOGS_CACHE_MIN_EVENTS", default_value_t = 0)]
    pub cache_min_events: u64,

    /// Connections in the PostgreSQL pool.
    #[arg(long, env = "EVENTLOGS_DATABASE_POOL", default_value_t = 32,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub database_pool: u32,

    /// How many of a reducer name's most recently appended logs a deploy
    /// replays with the new version before activating it (0: none).
    #[arg(long, env = "EVENTLOGS_DEPLOY_SAMPLE_LOGS", default_value_t = 100)]
    pub deploy_sample_logs: u32,

    /// How long a deploy may spend replaying logs, in milliseconds.
    #[arg(
        long,
        env = "EVENTLOGS_DEPLOY_REPLAY_BUDGET_MS",
        default_value_t = 2000
    )]
    pub deploy_replay_budget_ms: u64,

    /// Events read from the store and folded per reducer call.
    #[arg(long, env = "EVENTLOGS_FOLD_BATCH", default_value_t = 1000,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub fold_batch: u32,

    /// Payload bytes read from the store and folded per reducer call: a
    /// batch stops before the first event starting at or past this many
    /// (at least one event per batch).
    #[arg(long, env = "EVENTLOGS_FOLD_BATCH_BYTES", default_value_t = 4 << 20,
          value_parser = clap::value_parser!(u64).range(1..=1 << 30))]
    pub fold_batch_bytes: u64,

    /// A fold from the store caches its aggregate so far every this many
    /// batches (0: only at the end), so a retry of a reduce that did not
    /// finish in time resumes from there.
    #[arg(long, env = "EVENTLOGS_CHECKPOINT_BATCHES", default_value_t = 10)]
    pub checkpoint_batches: u32,

    /// Wall-clock limit of one reducer call, in milliseconds.
    #[arg(long, env = "EVENTLOGS_REDUCER_TIMEOUT_MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub reducer_timeout_ms: u64,

    /// How much CPU time one reducer call uses at normal CPU priority, in
    /// milliseconds; past this it continues at the lowest, so calls that
    /// run long give way to short ones.
    #[arg(long, env = "EVENTLOGS_REDUCER_DEMOTE_AFTER_MS", default_value_t = 20,
          value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub reducer_demote_after_ms: u64,

    /// Most folds (reduces and append validations) one reducer name runs at
    /// once; more wait for a turn.
    #[arg(long, env = "EVENTLOGS_REDUCER_CONCURRENCY", default_value_t = 64,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub reducer_concurrency: u32,

    /// How long a fold waits for its reducer's turn before the request is
    /// refused with 503 `reducer-busy`, in milliseconds.
    #[arg(long, env = "EVENTLOGS_REDUCER_QUEUE_TIMEOUT_MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(0..=600_000))]
    pub reducer_queue_timeout_ms: u64,

    /// Most reducer versions kept compiled besides the active ones (compiled
    /// on demand for `?version=`); the least recently used is dropped first.
    #[arg(long, env = "EVENTLOGS_INACTIVE_VERSIONS", default_value_t = 16,
          value_parser = clap::value_parser!(u32).range(0..=10_000))]
    pub inactive_versions: u32,

    /// How long a stored version that failed to compile is answered with
    /// its error before it is compiled again, in milliseconds; doubles with
    /// each further failure, up to 5 minutes.
    #[arg(long, env = "EVENTLOGS_COMPILE_FAILURE_BACKOFF_MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(0..=300_000))]
    pub compile_failure_backoff_ms: u64,

    /// Linear memory one reducer instance may use, in bytes.
    #[arg(long, env = "EVENTLOGS_REDUCER_MEMORY_BYTES", default_value_t = 64 << 20,
          value_parser = usize_in(64 << 10, 4 << 30))]
    pub reducer_memory_bytes: usize,

    /// WebAssembly stack one reducer call may use, in bytes (at most 1 MiB:
    /// it runs on a host thread whose own stack is 2 MiB).
    #[arg(long, env = "EVENTLOGS_REDUCER_STACK_BYTES", default_value_t = 512 << 10,
          value_parser = usize_in(16 << 10, 1 << 20))]
    pub reducer_stack_bytes: usize,

    /// Largest aggregate a reducer may return, in bytes.
    #[arg(long, env = "EVENTLOGS_REDUCER_OUTPUT_BYTES", default_value_t = 4 << 20,
          value_parser = usize_in(1 << 10, 1 << 30))]
    pub reducer_output_bytes: usize,

    /// Largest reducer component accepted by a deploy, in bytes.
    #[arg(long, env = "EVENTLOGS_REDUCER_COMPONENT_BYTES", default_value_t = 16 << 20)]
    pub reducer_component_bytes: usize,

    /// Reducer instances alive at once.
    #[arg(long, env = "EVENTLOGS_REDUCER_INSTANCES", default_value_t = 256,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub reducer_instances: u32,

    /// Largest JSON request body, in bytes (deploys are bounded by
    /// `--reducer-component-bytes` instead).
    #[arg(long, env = "EVENTLOGS_BODY_LIMIT_BYTES", default_value_t = 1 << 20)]
    pub body_limit_bytes: usize,

    /// Longest a request may take, in seconds.
    #[arg(long, env = "EVENTLOGS_REQUEST_TIMEOUT_SECS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub request_timeout_secs: u64,

    /// Connections open at once; more wait in the listen backlog until one
    /// closes. Keep it under the process's file-descriptor limit, leaving
    /// room for the database pool and Redis.
    #[arg(long, env = "EVENTLOGS_MAX_CONNECTIONS", default_value_t = 4096,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_connections: u32,

    /// API requests handled at once; more are answered 503 `overloaded`
    /// with `Retry-After` (probes are not counted).
    #[arg(long, env = "EVENTLOGS_MAX_IN_FLIGHT", default_value_t = 1024,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_in_flight: u32,

    /// Seconds a client has to send a request's headers; also how long a
    /// connection may sit idle between requests.
    #[arg(long, env = "EVENTLOGS_HEADER_READ_TIMEOUT_SECS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub header_read_timeout_secs: u64,

    /// Seconds a graceful shutdown (SIGTERM) waits for open requests before
    /// closing their connections.
    #[arg(long, env = "EVENTLOGS_SHUTDOWN_TIMEOUT_SECS", default_value_t = 20,
          value_parser = clap::value_parser!(u64).range(0..=3600))]
    pub shutdown_timeout_secs: u64,

    /// How long an idempotency key is kept, in seconds (default 7 days);
    /// a retry after that is a new request.
    #[arg(long, env = "EVENTLOGS_IDEMPOTENCY_KEY_RETENTION_SECS", default_value_t = 7 * 24 * 3600,
          value_parser = clap::value_parser!(u64).range(1..=10 * 365 * 24 * 3600))]
    pub idempotency_key_retention_secs: u64,

    /// Most events one create or append may carry (more: 400
    /// `too-many-events`).
    #[arg(long, env = "EVENTLOGS_MAX_EVENTS_PER_REQUEST", default_value_t = 1000,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_events_per_request: u32,

    /// Largest `limit` of an events page.
    #[arg(long, env = "EVENTLOGS_PAGE_LIMIT_MAX", default_value_t = 1000,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub page_limit_max: u32,

    /// Payload bytes per page of a log's events, cut as fold batches are
    /// (at least one event per page).
    #[arg(long, env = "EVENTLOGS_PAGE_BYTES", default_value_t = 4 << 20,
          value_parser = clap::value_parser!(u64).range(1..=1 << 30))]
    pub page_bytes: u64,

    /// Payload bytes of recent events kept in memory for feed streams; a
    /// stream further behind than that ends with a `lagged` comment and its
    /// client resumes from the store with `Last-Event-ID`.
    #[arg(long, env = "EVENTLOGS_FEED_BUFFER_BYTES", default_value_t = 16 << 20,
          value_parser = clap::value_parser!(u64).range(1..=1 << 34))]
    pub feed_buffer_bytes: u64,

    /// Milliseconds between reads of the store for new events when no
    /// notification came (notifications normally wake feed streams at once).
    #[arg(long, env = "EVENTLOGS_FEED_POLL_MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(10..=600_000))]
    pub feed_poll_ms: u64,

    /// Milliseconds a projection read spends folding new events before it
    /// answers; a build not done by then goes on in the background.
    #[arg(long, env = "EVENTLOGS_PROJECTION_BUDGET_MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(0..=600_000))]
    pub projection_budget_ms: u64,

    /// Seconds between heartbeat comments on an idle feed stream.
    #[arg(long, env = "EVENTLOGS_FEED_HEARTBEAT_SECS", default_value_t = 15,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub feed_heartbeat_secs: u64,

    /// Largest event a create or append may carry, in bytes of its JSON
    /// text (larger: 413 `event-too-large`).
    #[arg(long, env = "EVENTLOGS_MAX_EVENT_BYTES", default_value_t = 1 << 20,
          value_parser = usize_in(1, 1 << 30))]
    pub max_event_bytes: usize,

    /// A bearer token and its scopes, as `SCOPES:SECRET` with SCOPES a
    /// comma-separated subset of read, write, admin. Repeatable; in the
    /// environment, separate tokens with `;`.
    #[arg(long = "token", env = "EVENTLOGS_TOKENS", value_delimiter = ';')]
    pub tokens: Vec<Token>,

    /// Serve without tokens on a non-loopback address (everyone gets every
    /// scope). Without this, such a configuration refuses to start.
    #[arg(long, env = "EVENTLOGS_ALLOW_UNAUTHENTICATED")]
    pub allow_unauthenticated: bool,

    /// Reducers to deploy at start, as `NAME=FILE.wasm` (idempotent: the
    /// same bytes are the same version). Repeatable; in the environment,
    /// separate them with `;`.
    #[arg(long = "deploy", env = "EVENTLOGS_DEPLOY", value_delimiter = ';')]
    pub deploy: Vec<DeployAtStart>,

    /// Log format.
    #[arg(long, env = "EVENTLOGS_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

impl ServeConfig {
    /// The reducer limits these settings describe.
    pub fn limits(&self) -> Limits {
        Limits {
            call_timeout: Duration::from_millis(self.reducer_timeout_ms),
            demote_after: Duration::from_millis(self.reducer_demote_after_ms),
            memory_bytes: self.reducer_memory_bytes,
            wasm_stack_bytes: self.reducer_stack_bytes,
            output_bytes: self.reducer_output_bytes,
            component_bytes: self.reducer_component_bytes,
            max_instances: self.reducer_instances,
            ..Limits::default()
        }
    }

    /// How the registry keeps compiled versions.
    pub fn registry_options(&self) -> RegistryOptions {
        RegistryOptions {
            inactive_versions: self.inactive_versions as usize,
            failure_back_off: Duration::from_millis(self.compile_failure_backoff_ms),
            ..RegistryOptions::default()
        }
    }

    /// How the HTTP server accepts, keeps and closes connections.
    pub fn server_limits(&self) -> ServerLimits {
        ServerLimits {
            max_connections: self.max_connections as usize,
            header_read_timeout: Duration::from_secs(self.header_read_timeout_secs),
            shutdown_timeout: Duration::from_secs(self.shutdown_timeout_secs),
        }
    }

    /// Settings for tests and embedding: every default, listening on
    /// `listen`, storing in `database_url`. The environment is not read.
    pub fn new(listen: SocketAddr, database_url: &str) -> Self {
        let mut config = Self::from_args(["eventlogs"]).expect("the defaults are valid");
        config.listen = listen;
        config.database_url = database_url.to_owned();
        config
    }

    /// Settings from command-line arguments alone (the first is the
    /// program name), ignoring every `EVENTLOGS_*` variable.
    pub fn from_args<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        use clap::{CommandFactory, FromArgMatches, Parser};
        #[derive(Parser)]
        struct Wrapper {
            #[command(flatten)]
            config: ServeConfig,
        }
        let matches = Wrapper::command()
            .mut_args(|arg| arg.env(None::<&'static str>))
            .try_get_matches_from(args)?;
        Ok(Wrapper::from_arg_matches(&matches)?.config)
    }
}

/// A parser of a byte count between `min` and `max`.
fn usize_in(min: u64, max: u64) -> clap::builder::RangedU64ValueParser<usize> {
    clap::builder::RangedU64ValueParser::<usize>::new().range(min..=max)
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// A reducer to deploy at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeployAtStart {
    /// The reducer name.
    pub name: String,
    /// The component file.
    pub file: PathBuf,
}

impl FromStr for DeployAtStart {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (name, file) = text
            .split_once('=')
            .ok_or_else(|| format!("expected NAME=FILE.wasm, got {text:?}"))?;
        Ok(Self {
            name: name.to_owned(),
            file: PathBuf::from(file),
        })
    }
}

impl FromStr for Token {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (scopes, secret) = text
            .split_once(':')
            .ok_or("expected SCOPES:SECRET, e.g. read,write:s3cret")?;
        if secret.len() < 16 {
            return Err("a token secret must be at least 16 characters".into());
        }
        let scopes = scopes
            .split(',')
            .map(|s| match s.trim() {
                "read" => Ok(Scope::Read),
                "write" => Ok(Scope::Write),
                "admin" => Ok(Scope::Admin),
                other => Err(format!("unknown scope {other:?} (read, write, admin)")),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Token::new(secret, &scopes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_run_embedded_on_loopback() {
        let config = ServeConfig::new("127.0.0.1:0".parse().unwrap(), "sqlite://x.db");
        assert!(config.redis_url.is_none());
        assert!(config.tokens.is_empty());
        assert_eq!(config.fold_batch, 1000);
        assert_eq!(config.limits(), Limits::default());
    }

    #[test]
    fn limits_out_of_range_are_refused_with_the_flag_named() {
        for (flag, value) in [
            ("--fold-batch", "0"),
            ("--page-limit-max", "4294967295"),
            ("--reducer-stack-bytes", "2097152"),
            ("--reducer-instances", "0"),
            ("--max-connections", "0"),
            ("--request-timeout-secs", "0"),
        ] {
            let error = ServeConfig::from_args(["eventlogs", flag, value])
                .err()
                .unwrap_or_else(|| panic!("{flag} {value} was accepted"));
            let text = error.to_string();
            assert!(text.contains(flag) && text.contains(value), "{text}");
        }
        let fine = ServeConfig::from_args(["eventlogs", "--fold-batch", "1"]).unwrap();
        assert_eq!(fine.fold_batch, 1);
    }

    /// `EVENTLOGS_*` in the shell that runs the tests changes nothing.
    #[test]
    fn test_settings_ignore_the_environment() {
        let command = std::env::current_exe().unwrap();
        let child = std::process::Command::new(command)
            .args([
                "--exact",
                "config::tests::defaults_run_embedded_on_loopback",
                "--nocapture",
            ])
            .env("EVENTLOGS_FOLD_BATCH", "7")
            .env("EVENTLOGS_REDIS_URL", "redis://elsewhere/")
            .env("EVENTLOGS_TOKENS", "read:0123456789abcdef0123")
            .output()
            .unwrap();
        assert!(
            child.status.success(),
            "{}",
            String::from_utf8_lossy(&child.stdout)
        );
        assert!(String::from_utf8_lossy(&child.stdout).contains("1 passed"));
    }

    #[test]
    fn tokens_and_deploys_parse() {
        let token: Token = "read,write:0123456789abcdef".parse().unwrap();
        assert!(token.allows(Scope::Write) && !token.allows(Scope::Admin));
        assert!("read:short".parse::<Token>().is_err());
        assert!("root:0123456789abcdef".parse::<Token>().is_err());
        let deploy: DeployAtStart = "payment=p.wasm".parse().unwrap();
        assert_eq!(deploy.name, "payment");
        assert!("payment".parse::<DeployAtStart>().is_err());
    }
}
