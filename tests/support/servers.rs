//! Throwaway servers for the fault suites: a `redis-server`, a three-node
//! Redis Cluster, and a PostgreSQL cluster (`initdb`/`pg_ctl` in a
//! temporary folder) on free ports, so stopping them disturbs no other
//! test.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn wait_for_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A private redis-server, stopped on drop.
pub struct PrivateRedis {
    port: u16,
    child: Option<Child>,
}

impl PrivateRedis {
    /// Starts one on a free port.
    pub async fn start() -> Self {
        let mut redis = Self {
            port: free_port(),
            child: None,
        };
        redis.restart().await;
        redis
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// (Re)starts it, empty, on the same port.
    pub async fn restart(&mut self) {
        self.stop();
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server");
        self.child = Some(child);
        wait_for_port(self.port, "redis-server").await;
    }

    /// Kills it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A private Redis Cluster of three masters (no replicas) on free ports,
/// each node in a folder of its own; stopped on drop.
pub struct RedisCluster {
    nodes: Vec<(u16, Option<Child>)>,
    folder: PathBuf,
}

impl RedisCluster {
    /// Starts three nodes and joins them with `redis-cli --cluster create`;
    /// returns once every node reports `cluster_state:ok`. Nodes keep
    /// serving their own slots while another is down
    /// (`cluster-require-full-coverage no`), and notice a stopped node
    /// within a second.
    pub async fn start() -> Self {
        let folder = std::env::temp_dir().join(format!(
            "eventlogs-test-redis-cluster-{}",
            uuid::Uuid::now_v7()
        ));
        let mut nodes = Vec::new();
        for _ in 0..3 {
            let port = free_port();
            let dir = folder.join(port.to_string());
            std::fs::create_dir_all(&dir).unwrap();
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                .args(["--cluster-enabled", "yes", "--cluster-node-timeout", "1000"])
                .args(["--cluster-require-full-coverage", "no"])
                .arg("--dir")
                .arg(&dir)
                .stdout(Stdio::null())
                .spawn()
                .expect("redis-server");
            wait_for_port(port, "redis-server (cluster node)").await;
            nodes.push((port, Some(child)));
        }
        let cluster = Self { nodes, folder };
        let created = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(
                cluster
                    .nodes
                    .iter()
                    .map(|(port, _)| format!("127.0.0.1:{port}")),
            )
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdout(Stdio::null())
            .status()
            .expect("redis-cli");
        assert!(created.success(), "redis-cli --cluster create failed");
        let deadline = Instant::now() + Duration::from_secs(30);
        for port in cluster.ports() {
            while !cluster_info(port).contains("cluster_state:ok") {
                assert!(Instant::now() < deadline, "the cluster did not form");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        cluster
    }

    /// The nodes' ports.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|(port, _)| *port).collect()
    }

    /// The `redis+cluster://` URL naming every node.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .ports()
            .iter()
            .map(|port| format!("127.0.0.1:{port}"))
            .collect();
        format!("redis+cluster://{}/", hosts.join(","))
    }

    /// How many keys node `node` holds.
    pub fn keys_on(&self, node: usize) -> u64 {
        let output = Command::new("redis-cli")
            .args(["-p", &self.nodes[node].0.to_string(), "DBSIZE"])
            .output()
            .expect("redis-cli");
        String::from_utf8_lossy(&output.stdout)
            .trim()
            .parse()
            .unwrap()
    }

    /// Kills node `node`.
    pub fn stop(&mut self, node: usize) {
        if let Some(mut child) = self.nodes[node].1.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `CLUSTER INFO` of the node on `port` (empty when it does not answer).
fn cluster_info(port: u16) -> String {
    Command::new("redis-cli")
        .args(["-p", &port.to_string(), "CLUSTER", "INFO"])
        .output()
        .map(|output| String::from_utf8_lossy(&output.stdout).into_owned())
        .unwrap_or_default()
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in 0..self.nodes.len() {
            self.stop(node);
        }
        let _ = std::fs::remove_dir_all(&self.folder);
    }
}

/// A private PostgreSQL cluster in a temporary folder, run as the
/// `postgres` user when the test runs as root (PostgreSQL refuses root).
pub struct PrivatePostgres {
    port: u16,
    dir: PathBuf,
}

fn pg_bin(tool: &str) -> PathBuf {
    let base = PathBuf::from("/usr/lib/postgresql");
    let mut versions: Vec<_> = std::fs::read_dir(&base)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    versions.sort();
    match versions.last() {
        Some(version) => version.join("bin").join(tool),
        None => PathBuf::from(tool),
    }
}

fn as_postgres(tool: &str) -> Command {
    let root = std::env::var("USER").as_deref() == Ok("root")
        || std::process::Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.starts_with(b"0"));
    if root {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(pg_bin(tool));
        command
    } else {
        Command::new(pg_bin(tool))
    }
}

impl PrivatePostgres {
    /// Creates and starts a cluster with trust authentication.
    pub async fn start() -> Self {
        let dir = std::env::temp_dir().join(format!("eventlogs-pg-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).unwrap();
        let _ = Command::new("chown")
            .args(["postgres:postgres"])
            .arg(&dir)
            .status();
        let status = as_postgres("initdb")
            .args(["-A", "trust", "-U", "postgres", "-D"])
            .arg(dir.join("data"))
            .stdout(Stdio::null())
            .status()
            .expect("initdb");
        assert!(status.success(), "initdb failed");
        let postgres = Self {
            port: free_port(),
            dir,
        };
        postgres.start_again().await;
        postgres
    }

    /// A URL for database `postgres` on it.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts the stopped server.
    pub async fn start_again(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1",
            self.port,
            self.dir.display()
        );
        let status = as_postgres("pg_ctl")
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-o", &options, "-l"])
            .arg(self.dir.join("log"))
            .args(["-w", "start"])
            .stdout(Stdio::null())
            .status()
            .expect("pg_ctl start");
        assert!(status.success(), "pg_ctl start failed");
        wait_for_port(self.port, "postgres").await;
    }

    /// Stops it at once (`immediate`: like a crash, no clean shutdown).
    pub fn stop(&self) {
        let _ = as_postgres("pg_ctl")
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .status();
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
