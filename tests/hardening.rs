//! Findings of the code audit (issue 10), each shown over HTTP.

use eventlogs_e2e::{TestDaemon, config, sqlite_database, token};
use std::time::{Duration, Instant};

use reqwest::Method;
use reqwest::header::HeaderValue;

/// A client's request id is echoed only when it is 1 to 64 characters of
/// `[A-Za-z0-9._-]`; anything else is replaced by a generated one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfit_request_ids_are_replaced() {
    let daemon = TestDaemon::embedded().await;
    let long = "a".repeat(64);
    let too_long = "a".repeat(65);
    let cases: [(&[u8], bool); 6] = [
        (b"req-1.2_x", true),
        (long.as_bytes(), true),
        (too_long.as_bytes(), false),
        (b"has space", false),
        (b"line\tfeed", false),
        (b"caf\xc3\xa9", false),
    ];
    for (sent, kept) in cases {
        let response = daemon
            .request(Method::GET, "/v1/reducers")
            .header("x-request-id", HeaderValue::from_bytes(sent).unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let echoed = response.headers()["x-request-id"].as_bytes().to_vec();
        if kept {
            assert_eq!(echoed, sent);
        } else {
            assert_ne!(echoed, sent);
            assert_eq!(echoed.len(), 36, "a generated UUID");
        }
    }
}

/// The `Bearer` scheme name is matched case-insensitively (RFC 9110 §11.1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bearer_scheme_is_case_insensitive() {
    const SECRET: &str = "read-secret-0123456789";
    let mut settings = config(&sqlite_database());
    settings.tokens = vec![token(SECRET, "read")];
    let daemon = TestDaemon::start(settings).await;
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let response = daemon
            .request(Method::GET, "/v1/reducers")
            .header("authorization", format!("{scheme} {SECRET}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{scheme}");
    }
    let response = daemon
        .request(Method::GET, "/v1/reducers")
        .header("authorization", format!("Basic {SECRET}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
}

/// `eventlogs serve FLAGS` as a separate process on an SQLite file of its
/// own.
async fn spawn_embedded(flags: &[&str]) -> TestDaemon {
    let database = sqlite_database();
    let mut args = vec!["--database-url", &database];
    args.extend_from_slice(flags);
    TestDaemon::spawn(&args).await
}

/// Opens a connection that sends nothing, or only part of a request's
/// headers.
async fn stalled_connection(url: &str, half_sent: bool) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let addr = url.strip_prefix("http://").unwrap();
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    if half_sent {
        stream
            .write_all(b"GET /v1/reducers HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
            .await
            .unwrap();
    }
    stream
}

/// Whether the server closed the connection (end of stream, or reset).
async fn closed_by_server(stream: &mut tokio::net::TcpStream) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buffer = [0u8; 1024];
    match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buffer)).await {
        Ok(Ok(0)) | Ok(Err(_)) => true,
        // A 408 before closing is a close too.
        Ok(Ok(_)) => true,
        Err(_) => false,
    }
}

/// 2,000 idle or half-sent connections neither exhaust the daemon nor keep
/// a normal client waiting, and the header-read timeout closes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_half_sent_connections_do_not_block_clients() {
    let daemon = spawn_embedded(&["--header-read-timeout-secs", "2"]).await;
    let mut stalled = Vec::new();
    for i in 0..2000 {
        stalled.push(stalled_connection(&daemon.url, i % 2 == 1).await);
    }
    let started = Instant::now();
    for _ in 0..20 {
        let response = daemon.get("/v1/reducers").await;
        assert_eq!(response.status(), 200);
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "a normal client waited {:?} behind stalled connections",
        started.elapsed()
    );
    // The header-read timeout (2 s) has closed every stalled connection.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for (i, stream) in stalled.iter_mut().enumerate().step_by(97) {
        assert!(closed_by_server(stream).await, "connection {i} still open");
    }
    daemon.stop().await;
}

/// At the connection cap, further connections wait in the backlog until
/// one closes, and are then served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_cap_wait_for_a_free_slot() {
    let daemon =
        spawn_embedded(&["--max-connections", "50", "--header-read-timeout-secs", "2"]).await;
    let mut stalled = Vec::new();
    for _ in 0..50 {
        stalled.push(stalled_connection(&daemon.url, false).await);
    }
    let started = Instant::now();
    let response = daemon.get("/v1/reducers").await;
    assert_eq!(response.status(), 200);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1500),
        "served after {waited:?}: the cap of 50 connections was not applied"
    );
    daemon.stop().await;
}

/// SIGTERM with a connection stalled in the middle of its headers: the
/// daemon exits within its shutdown deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_a_stalled_connection_exits_within_the_deadline() {
    let daemon = spawn_embedded(&[
        "--header-read-timeout-secs",
        "600",
        "--shutdown-timeout-secs",
        "1",
    ])
    .await;
    let _stalled = stalled_connection(&daemon.url, true).await;
    // Let the daemon start reading it.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    daemon.stop().await;
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "exited {:?} after SIGTERM",
        started.elapsed()
    );
}

/// Over the in-flight cap, API requests are answered 503 `overloaded` with
/// `Retry-After` at once; probes still answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_over_the_in_flight_cap_are_shed() {
    let mut settings = config(&sqlite_database());
    settings.max_in_flight = 1;
    let daemon = TestDaemon::start(settings).await;
    assert_eq!(
        daemon
            .deploy("spinner", eventlogs_e2e::plugin("fixture_infinite_loop"))
            .await
            .status(),
        201
    );
    let (_, log) = eventlogs_e2e::json(
        daemon
            .post(
                "/v1/logs",
                serde_json::json!({"reducer": "spinner", "event": {}}),
            )
            .await,
    )
    .await;
    // A reduce that spins for its 1 s deadline holds the only slot.
    let slow = daemon
        .request(
            Method::GET,
            &format!("/v1/logs/{}/aggregate", log["log_id"].as_str().unwrap()),
        )
        .send();
    let slow = tokio::spawn(slow);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let shed = daemon.get("/v1/reducers").await;
    assert_eq!(shed.headers()["retry-after"], "1");
    eventlogs_e2e::assert_problem(shed, 503, "overloaded").await;
    assert_eq!(daemon.get("/healthz").await.status(), 200);
    assert_eq!(slow.await.unwrap().unwrap().status(), 422);
    assert_eq!(daemon.get("/v1/reducers").await.status(), 200);
}

/// Runs `eventlogs serve ARGS` with stderr captured (so not a terminal),
/// stops it with SIGTERM and returns what it logged.
async fn logged_by_daemon(args: &[&str]) -> String {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt};
    let database = sqlite_database();
    let mut child = tokio::process::Command::new(eventlogs_e2e::binary())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--database-url",
            &database,
        ])
        .args(args)
        .env("EVENTLOGS_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdout = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let first = stdout.next_line().await.unwrap().unwrap();
    assert!(first.starts_with("eventlogs listening on "), "{first}");
    let pid = child.id().unwrap().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let mut logged = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut logged)
        .await
        .unwrap();
    assert!(child.wait().await.unwrap().success());
    logged
}

/// Logs written to a file or a pipe carry no colour escapes; with
/// `--log-format json` every line is a JSON object.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_off_a_terminal_are_plain() {
    let text = logged_by_daemon(&[]).await;
    assert!(text.contains("shutting down"), "{text}");
    assert!(!text.contains('\u{1b}'), "ANSI escapes in {text:?}");
    let json = logged_by_daemon(&["--log-format", "json"]).await;
    assert!(json.lines().count() >= 2, "{json}");
    for line in json.lines() {
        let value: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(value["level"].is_string(), "{line}");
    }
}

/// Without tokens only loopback `Host` values are served (a web page that
/// rebinds its own name to 127.0.0.1 gets 421); with tokens any host is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_tokens_only_loopback_hosts_are_served() {
    let open = TestDaemon::embedded().await;
    let port = open.url.rsplit(':').next().unwrap().to_owned();
    for host in ["localhost", "127.0.0.1", "[::1]", "api.localhost"] {
        let response = open
            .request(Method::GET, "/v1/reducers")
            .header("host", format!("{host}:{port}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{host}");
    }
    for host in ["evil.example", "127.0.0.1.nip.io"] {
        let response = open
            .request(Method::GET, "/v1/reducers")
            .header("host", format!("{host}:{port}"))
            .send()
            .await
            .unwrap();
        let body = eventlogs_e2e::assert_problem(response, 421, "host-not-allowed").await;
        assert_eq!(body["host"], host);
    }

    const SECRET: &str = "read-secret-0123456789";
    let mut settings = config(&sqlite_database());
    settings.tokens = vec![token(SECRET, "read")];
    let guarded = TestDaemon::start(settings).await;
    let response = guarded
        .request(Method::GET, "/v1/reducers")
        .header("host", "evil.example")
        .bearer_auth(SECRET)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

/// An embedded daemon in this process, with these settings changed and the
/// counter reducer deployed.
async fn embedded_with_counter(
    adjust: impl FnOnce(&mut eventlogs_host::config::ServeConfig),
) -> TestDaemon {
    let mut settings = config(&sqlite_database());
    adjust(&mut settings);
    let daemon = TestDaemon::start(settings).await;
    let deployed = daemon
        .deploy("counter", eventlogs_e2e::plugin("counter"))
        .await;
    assert_eq!(deployed.status(), 201);
    daemon
}

/// A request with more events than `--max-events-per-request` is refused
/// with 400 `too-many-events` and stores nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_with_too_many_events_are_refused() {
    let daemon = embedded_with_counter(|s| s.max_events_per_request = 3).await;
    let four = serde_json::json!([{}, {}, {}, {}]);
    let refused = daemon
        .post(
            "/v1/logs",
            serde_json::json!({"reducer": "counter", "events": four}),
        )
        .await;
    let body = eventlogs_e2e::assert_problem(refused, 400, "too-many-events").await;
    assert_eq!(body["limit"], 3);
    let created = daemon
        .create_log("counter", vec![serde_json::json!({}); 3])
        .await;
    let log = created.as_str();
    let refused = daemon
        .post(
            &format!("/v1/logs/{log}/events"),
            serde_json::json!({"events": four}),
        )
        .await;
    eventlogs_e2e::assert_problem(refused, 400, "too-many-events").await;
    let (_, meta) = eventlogs_e2e::json(daemon.get(&format!("/v1/logs/{log}")).await).await;
    assert_eq!(meta["last_index"], 2, "{meta}");
}

/// Idempotency keys expire after `--idempotency-key-retention-secs`: a
/// retry within it is a replay, after it a new request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_keys_expire_after_their_retention() {
    let daemon = embedded_with_counter(|s| s.idempotency_key_retention_secs = 1).await;
    let create = || {
        daemon
            .request(Method::POST, "/v1/logs")
            .header("idempotency-key", "create-once")
            .json(&serde_json::json!({"reducer": "counter", "event": {}}))
            .send()
    };
    let (_, first) = eventlogs_e2e::json(create().await.unwrap()).await;
    let (_, replay) = eventlogs_e2e::json(create().await.unwrap()).await;
    assert_eq!(replay["log_id"], first["log_id"], "{replay}");
    // Retention 1 s, swept every 250 ms.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (status, fresh) = eventlogs_e2e::json(create().await.unwrap()).await;
    assert_eq!(status, 201, "{fresh}");
    assert_ne!(fresh["log_id"], first["log_id"], "a new log after expiry");
}
