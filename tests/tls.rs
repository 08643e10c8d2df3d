//! TLS to Redis and PostgreSQL: the daemon talks to a Redis that serves
//! only TLS and to a PostgreSQL that accepts only TLS connections, both
//! with a certificate from a certificate authority this test makes
//! (openssl), and refuses a server whose certificate it cannot verify.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use eventlogs_e2e::{TestDaemon, config, json, sqlite_database};
use serde_json::{Value, json as value};

/// Under `CI=true` a missing tool fails the test; otherwise it is skipped.
fn unavailable(what: &str) {
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{what} is required under CI=true");
    }
    eprintln!("SKIPPED: {what}");
}

fn run(command: &mut Command) -> bool {
    command
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A certificate authority and a certificate it signed for 127.0.0.1 and
/// localhost, in `dir`: `ca.pem`, `server.pem`, `server.key`.
fn certificates(dir: &Path) -> bool {
    let sh = |script: &str| run(Command::new("sh").arg("-c").arg(script).current_dir(dir));
    sh(
        "openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem \
          -subj /CN=eventlogs-test-ca -days 2 \
        && openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr \
          -subj /CN=localhost \
        && printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\\n' > server.ext \
        && openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
          -out server.pem -days 2 -extfile server.ext",
    )
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for_port(port: u16) {
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "port {port} never opened"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A child process killed when dropped.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn scratch() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("eventlogs-tls-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn create_and_reduce(daemon: &TestDaemon) -> Value {
    let log = daemon
        .create_log("payment", vec![value!({"Authorized": {"amount": 100}})])
        .await;
    let (status, reduced) = json(daemon.get(&format!("/v1/logs/{log}/aggregate")).await).await;
    assert_eq!(status, 200, "{reduced}");
    reduced
}

/// A Redis serving TLS only: the daemon given the CA caches through it; a
/// daemon that trusts only the system's roots cannot, and serves every
/// reduce from the store instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_over_tls_with_a_private_certificate_authority() {
    let dir = scratch();
    if !certificates(&dir) {
        return unavailable("openssl");
    }
    let port = free_port();
    let Ok(child) = Command::new("redis-server")
        .args(["--port", "0", "--tls-port", &port.to_string()])
        .arg("--tls-cert-file")
        .arg(dir.join("server.pem"))
        .arg("--tls-key-file")
        .arg(dir.join("server.key"))
        .arg("--tls-ca-cert-file")
        .arg(dir.join("ca.pem"))
        .args([
            "--tls-auth-clients",
            "no",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .spawn()
    else {
        return unavailable("redis-server");
    };
    let _redis = Server(child);
    wait_for_port(port);

    let mut settings = config(&sqlite_database());
    settings.redis_url = Some(format!("rediss://127.0.0.1:{port}/"));
    settings.redis_prefix = format!("eventlogs-e2e-{}:", uuid::Uuid::now_v7());
    settings.redis_ca_file = Some(dir.join("ca.pem"));
    // No aggregates kept in memory: every reduce reads Redis.
    settings.memory_cache_bytes = 0;
    let trusting = TestDaemon::start(settings.clone()).await;
    let reduced = create_and_reduce(&trusting).await;
    // The create wrote its aggregate through to Redis, over TLS.
    assert_eq!(reduced["from_cache"], true, "{reduced}");

    settings.redis_ca_file = None;
    let distrusting = TestDaemon::start(settings).await;
    let reduced = create_and_reduce(&distrusting).await;
    assert_eq!(reduced["from_cache"], false, "{reduced}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A PostgreSQL cluster of this test's own that accepts TLS connections
/// only (pg_hba `hostssl`): the daemon verifies its certificate against the
/// CA (`sslmode=verify-full&sslrootcert=…`) and stores and reduces over it;
/// without TLS it cannot connect at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_over_tls_with_a_private_certificate_authority() {
    let bin = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .ok()
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    let Some(bin) = bin.filter(|b| b.join("initdb").exists()) else {
        return unavailable("PostgreSQL's initdb (pg_config --bindir)");
    };
    // initdb refuses to run as root: run the cluster as `postgres`.
    let as_postgres = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0");
    let dir = scratch();
    if !certificates(&dir) {
        return unavailable("openssl");
    }
    let data = dir.join("data");
    let command = |program: &str| {
        let mut command = if as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(bin.join(program));
            c
        } else {
            Command::new(bin.join(program))
        };
        command.current_dir(&dir);
        command
    };
    if as_postgres && !run(Command::new("chown").args(["-R", "postgres"]).arg(&dir)) {
        return unavailable("a `postgres` user to run a private cluster as");
    }
    assert!(
        run(command("initdb")
            .arg("-D")
            .arg(&data)
            .args(["-A", "trust", "-U", "postgres"])),
        "initdb failed"
    );
    for file in ["server.pem", "server.key"] {
        std::fs::copy(dir.join(file), data.join(file)).unwrap();
    }
    std::fs::write(
        data.join("pg_hba.conf"),
        "hostssl all all 127.0.0.1/32 trust\n",
    )
    .unwrap();
    if as_postgres {
        assert!(run(Command::new("chown")
            .args(["-R", "postgres"])
            .arg(&data)));
    }
    assert!(run(Command::new("chmod")
        .arg("600")
        .arg(data.join("server.key"))));
    let port = free_port();
    let options = format!(
        "-p {port} -k {} -c listen_addresses=127.0.0.1 -c ssl=on \
         -c ssl_cert_file=server.pem -c ssl_key_file=server.key",
        dir.display()
    );
    assert!(
        run(command("pg_ctl")
            .arg("-D")
            .arg(&data)
            .args(["-o", &options, "-w", "start"])),
        "the TLS cluster did not start"
    );
    struct Cluster<F: Fn()>(F);
    impl<F: Fn()> Drop for Cluster<F> {
        fn drop(&mut self) {
            (self.0)();
        }
    }
    let _cluster = Cluster(|| {
        run(command("pg_ctl")
            .arg("-D")
            .arg(&data)
            .args(["-m", "immediate", "stop"]));
        let _ = std::fs::remove_dir_all(&dir);
    });

    let ca = dir.join("ca.pem");
    let url = format!(
        "postgres://postgres@127.0.0.1:{port}/postgres?sslmode=verify-full&sslrootcert={}",
        ca.display()
    );
    let daemon = TestDaemon::start(config(&url)).await;
    let reduced = create_and_reduce(&daemon).await;
    assert_eq!(reduced["aggregate"]["amount_approved"], 100, "{reduced}");

    // The cluster refuses connections without TLS.
    use sqlx::Connection;
    let plain = format!("postgres://postgres@127.0.0.1:{port}/postgres?sslmode=disable");
    assert!(sqlx::PgConnection::connect(&plain).await.is_err());
    let verified = sqlx::PgConnection::connect(&url).await;
    assert!(verified.is_ok(), "{:?}", verified.err());
}

/// The operator client reaches an `https://` URL whose certificate a
/// private authority signed only when given that authority (`--ca-file`).
/// The server is `openssl s_server -www`, which answers any GET.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_client_trusts_a_private_authority_when_told_to() {
    let dir = scratch();
    if !certificates(&dir) {
        return unavailable("openssl");
    }
    let port = free_port();
    let Ok(child) = Command::new("openssl")
        .args(["s_server", "-www", "-accept", &port.to_string()])
        .arg("-cert")
        .arg(dir.join("server.pem"))
        .arg("-key")
        .arg(dir.join("server.key"))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    else {
        return unavailable("openssl s_server");
    };
    let _server = Server(child);
    wait_for_port(port);
    let url = format!("https://127.0.0.1:{port}");
    let reducers = |ca: Option<&Path>| {
        let mut command = Command::new(eventlogs_e2e::binary());
        command
            .args(["reducers", "--url", &url])
            .env_remove("EVENTLOGS_CA_FILE");
        if let Some(ca) = ca {
            command.arg("--ca-file").arg(ca);
        }
        command.output().unwrap()
    };
    let untrusted = reducers(None);
    assert!(!untrusted.status.success());
    let message = String::from_utf8_lossy(&untrusted.stderr);
    assert!(message.contains("cannot reach the daemon"), "{message}");
    let trusted = reducers(Some(&dir.join("ca.pem")));
    assert!(
        trusted.status.success(),
        "{}",
        String::from_utf8_lossy(&trusted.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
