//! The connection behind [`super::redis::RedisCache`]: one Redis server, or
//! a Redis Cluster.
//!
//! A cluster is named by a `redis+cluster://` (or `rediss+cluster://`) URL
//! listing one or more of its nodes, comma-separated:
//! `redis+cluster://[user:password@]host1:port1,host2:port2[/]`. Those are
//! only seeds: the client asks them for the slot map, connects to every
//! master, follows `MOVED`/`ASK` redirections, and refreshes the map when a
//! node goes away. A cluster rejects a pipeline whose keys are in different
//! hash slots, so puts to a cluster go as concurrent single commands (each
//! put is one key; see [`super::put_batches`]).

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClientBuilder, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};

use super::CacheError;

/// The URL schemes that name a cluster, and the scheme each node gets.
const CLUSTER_SCHEMES: [(&str, &str); 2] = [
    ("redis+cluster://", "redis://"),
    ("rediss+cluster://", "rediss://"),
];

/// A connection to one Redis or to a cluster; cheap to clone (clones share
/// the underlying connections), reconnects on its own.
#[derive(Clone)]
pub(super) enum Connection {
    /// One server, over one multiplexed connection.
    Single(ConnectionManager),
    /// A cluster, over one multiplexed connection per node.
    Cluster(ClusterConnection),
}

impl Connection {
    /// Opens `url` without waiting for the server or cluster to answer;
    /// `ca_pem` is a certificate authority for `rediss://` servers the
    /// system does not trust. Every connection attempt and every command is
    /// bounded by `timeout`.
    pub(super) fn open(
        url: &str,
        ca_pem: Option<Vec<u8>>,
        timeout: Duration,
    ) -> Result<Self, CacheError> {
        let certificates = ca_pem.map(|root| redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(root),
        });
        match cluster_seeds(url)? {
            Some(seeds) => {
                let mut builder = ClusterClientBuilder::new(seeds)
                    .connection_timeout(timeout)
                    .response_timeout(timeout)
                    .retries(1);
                if let Some(certificates) = certificates {
                    builder = builder.certs(certificates);
                }
                let client = builder.build().map_err(unavailable)?;
                let config = ClusterConfig::new()
                    .set_connection_timeout(timeout)
                    .set_response_timeout(timeout);
                Ok(Self::Cluster(
                    client.get_pending_async_connection_with_config(config),
                ))
            }
            None => {
                let client = match certificates {
                    None => redis::Client::open(url),
                    Some(certificates) => redis::Client::build_with_tls(url, certificates),
                }
                .map_err(unavailable)?;
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(timeout))
                    .set_response_timeout(Some(timeout))
                    .set_number_of_retries(1);
                ConnectionManager::new_lazy_with_config(client, config)
                    .map(Self::Single)
                    .map_err(unavailable)
            }
        }
    }

    /// Whether several keys may go in one pipeline (not on a cluster, where
    /// they may live on different nodes).
    pub(super) fn pipelines_keys(&self) -> bool {
        matches!(self, Self::Single(_))
    }
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(connection) => connection.req_packed_command(cmd),
            Self::Cluster(connection) => connection.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(connection) => connection.req_packed_commands(cmd, offset, count),
            Self::Cluster(connection) => connection.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(connection) => connection.get_db(),
            Self::Cluster(connection) => connection.get_db(),
        }
    }
}

/// The node URLs of a `redis+cluster://` or `rediss+cluster://` URL, or
/// `None` for any other (single-server) URL.
fn cluster_seeds(url: &str) -> Result<Option<Vec<String>>, CacheError> {
    let Some((rest, scheme)) = CLUSTER_SCHEMES
        .iter()
        .find_map(|(cluster, node)| url.strip_prefix(cluster).map(|rest| (rest, *node)))
    else {
        return Ok(None);
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let (credentials, hosts) = match rest.rsplit_once('@') {
        Some((credentials, hosts)) => (format!("{credentials}@"), hosts),
        None => (String::new(), rest),
    };
    let seeds: Vec<String> = hosts
        .split(',')
        .map(str::trim)
        .filter(|host| !host.is_empty())
        .map(|host| format!("{scheme}{credentials}{host}/"))
        .collect();
    if seeds.is_empty() || hosts.contains('/') {
        return Err(CacheError::Unavailable(format!(
            "a cluster URL lists its nodes as host:port,host:port (no database): {}",
            redacted(url)
        )));
    }
    Ok(Some(seeds))
}

/// `url` without its password, for error messages.
fn redacted(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((_, hosts)) => format!("{scheme}://…@{hosts}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

fn unavailable(error: impl std::fmt::Display) -> CacheError {
    CacheError::Unavailable(error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_url_names_its_seeds() {
        assert_eq!(
            cluster_seeds("redis+cluster://127.0.0.1:7000,127.0.0.1:7001/").unwrap(),
            Some(vec![
                "redis://127.0.0.1:7000/".to_owned(),
                "redis://127.0.0.1:7001/".to_owned()
            ])
        );
        assert_eq!(
            cluster_seeds("rediss+cluster://u:p@a:1,b:2").unwrap(),
            Some(vec![
                "rediss://u:p@a:1/".to_owned(),
                "rediss://u:p@b:2/".to_owned()
            ])
        );
    }

    #[test]
    fn other_urls_are_single_servers() {
        assert_eq!(cluster_seeds("redis://127.0.0.1:6379/0").unwrap(), None);
        assert_eq!(cluster_seeds("rediss://h:6380/").unwrap(), None);
    }

    #[test]
    fn a_cluster_url_without_nodes_or_with_a_database_is_refused() {
        for url in [
            "redis+cluster://",
            "redis+cluster://a:1/0",
            "redis+cluster://x:secret@/",
        ] {
            let error = cluster_seeds(url).unwrap_err().to_string();
            assert!(error.contains("host:port"), "{url}: {error}");
            assert!(!error.contains("secret"), "{error}");
        }
    }
}
