//! Connections to Redis, a single node or a cluster, for every part of flowmon that talks to
//! it: the store's writer and the readers (the read API, the analyzer's join and its dorks).
//! Each opens its own with the timeouts its work can wait. Connections are multiplexed (clones
//! share one, and concurrent commands are pipelined), made lazily (Redis may be down at start)
//! and made again after a failure.

use std::{fmt, time::Duration};

use redis::{
    Cmd, ErrorKind, IntoConnectionInfo as _, Pipeline, RedisError, RedisFuture, RedisResult, Value,
    aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig},
    cluster::{ClusterClient, ClusterConfig},
    cluster_async::ClusterConnection,
};

/// The Redis (or Redis Cluster seed node) every part of flowmon uses.
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";
/// The address of [`DEFAULT_REDIS_URL`].
pub const DEFAULT_REDIS_ADDR: std::net::SocketAddr =
    std::net::SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 6379);

/// A Redis server or cluster, its URL checked. Its `Debug` leaves the URL out: it may hold
/// a password.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisTarget {
    url: String,
    cluster: bool,
}

impl RedisTarget {
    /// `url` is `redis://` or `rediss://`, with credentials if any; with `cluster`, a seed node
    /// whose credentials and TLS mode apply to every node.
    pub fn new(url: impl Into<String>, cluster: bool) -> RedisResult<Self> {
        let url = url.into();
        url.as_str().into_connection_info()?;
        Ok(Self { url, cluster })
    }

    pub fn is_cluster(&self) -> bool {
        self.cluster
    }

    /// The URL without its password, for logs.
    pub fn redacted(&self) -> String {
        match self.url.split_once("://") {
            Some((scheme, rest)) => match rest.rsplit_once('@') {
                Some((_, host)) => format!("{scheme}://***@{host}"),
                None => self.url.clone(),
            },
            None => self.url.clone(),
        }
    }
}

impl fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisTarget")
            .field("cluster", &self.cluster)
            .finish_non_exhaustive()
    }
}

/// How long a connection waits, and whether it tries again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Patience {
    pub connect: Duration,
    /// A command (or pipeline) slower than this fails.
    pub response: Duration,
    /// A command whose connection turns out broken (Redis restarted since the last one) is
    /// sent once more, on a new connection: the first request after Redis is back succeeds.
    pub resend: bool,
}

impl Patience {
    /// For a read someone waits on: an API answer or a session's analysis.
    pub const READ: Patience = Patience {
        connect: Duration::from_secs(2),
        response: Duration::from_secs(5),
        resend: true,
    };
}

/// Attempts at a failed connection (or cluster command) before it fails: flowmon's callers
/// try again themselves, the writer from its spool and the readers at their next request.
const RETRIES: usize = 1;

#[derive(Clone)]
pub struct Connection {
    pub link: Link,
    resend: bool,
}

/// The connection itself.
#[derive(Clone)]
pub enum Link {
    Node(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Connection {
    /// A connection to `target`, made at its first command. Must run inside a tokio runtime,
    /// which the connection then lives in.
    pub fn open(target: &RedisTarget, patience: Patience) -> RedisResult<Self> {
        let link = if target.cluster {
            let config = ClusterConfig::new()
                .set_connection_timeout(patience.connect)
                .set_response_timeout(patience.response);
            let client = ClusterClient::builder([target.url.as_str()])
                .retries(RETRIES as u32)
                .build()?;
            Link::Cluster(client.get_pending_async_connection_with_config(config))
        } else {
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(patience.connect))
                .set_response_timeout(Some(patience.response))
                .set_number_of_retries(RETRIES);
            Link::Node(ConnectionManager::new_lazy_with_config(
                redis::Client::open(target.url.as_str())?,
                config,
            )?)
        };
        Ok(Self {
            link,
            resend: patience.resend,
        })
    }
}

/// Whether an error means that Redis could not be reached (or the connection broke), rather
/// than that Redis answered with an error.
pub fn unreachable(err: &RedisError) -> bool {
    err.is_io_error()
        || err.is_unrecoverable_error()
        || err.kind() == ErrorKind::ClusterConnectionNotFound
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            match self.link.req_packed_command(cmd).await {
                // The link reconnects after such an error; the command waits for it.
                Err(err) if self.resend && err.is_unrecoverable_error() => {
                    self.link.req_packed_command(cmd).await
                }
                answered => answered,
            }
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            match self.link.req_packed_commands(pipeline, offset, count).await {
                Err(err) if self.resend && err.is_unrecoverable_error() => {
                    self.link.req_packed_commands(pipeline, offset, count).await
                }
                answered => answered,
            }
        })
    }

    fn get_db(&self) -> i64 {
        self.link.get_db()
    }
}

impl ConnectionLike for Link {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Node(connection) => connection.req_packed_command(cmd),
            Self::Cluster(connection) => connection.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Node(connection) => connection.req_packed_commands(pipeline, offset, count),
            Self::Cluster(connection) => connection.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Node(connection) => connection.get_db(),
            Self::Cluster(connection) => connection.get_db(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_check_their_url_and_keep_it_out_of_debug() {
        let target = RedisTarget::new("redis://:secret@db.example:6380/2", false).unwrap();
        assert!(!format!("{target:?}").contains("secret"));
        assert_eq!(target.redacted(), "redis://***@db.example:6380/2");
        assert_eq!(
            RedisTarget::new(DEFAULT_REDIS_URL, false)
                .unwrap()
                .redacted(),
            DEFAULT_REDIS_URL
        );
        assert_eq!(
            DEFAULT_REDIS_URL
                .into_connection_info()
                .unwrap()
                .addr()
                .to_string(),
            DEFAULT_REDIS_ADDR.to_string()
        );
        assert!(
            RedisTarget::new("rediss://db.example", true)
                .unwrap()
                .is_cluster()
        );
        for bad in ["http://db.example", "db.example:6379", "redis://host:port"] {
            assert!(RedisTarget::new(bad, false).is_err(), "{bad}");
        }
    }
}
