//! The analyzer's reading connection to Redis (the API's and the flow join's): multiplexed, so
//! clones share it and concurrent reads are pipelined; made lazily, so Redis may be down at
//! start, and reconnected after failures.

use std::time::Duration;

use redis::{
    Cmd, Pipeline, RedisFuture, RedisResult, Value,
    aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig},
    cluster::{ClusterClient, ClusterConfig},
    cluster_async::ClusterConnection,
};

use crate::config::Settings;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// A read slower than this fails: an API answer or a session's analysis would wait for it.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub enum ReadConnection {
    Node(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ReadConnection {
    /// To `--redis-url` (a cluster seed with `--redis-cluster`). Must run inside a runtime.
    pub fn from_settings(settings: &Settings) -> RedisResult<Self> {
        Self::open(settings.redis_url(), settings.redis_cluster)
    }

    pub fn open(url: &str, cluster: bool) -> RedisResult<Self> {
        Ok(if cluster {
            let config = ClusterConfig::new()
                .set_connection_timeout(CONNECT_TIMEOUT)
                .set_response_timeout(RESPONSE_TIMEOUT);
            let client = ClusterClient::builder([url]).retries(1).build()?;
            Self::Cluster(client.get_pending_async_connection_with_config(config))
        } else {
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(CONNECT_TIMEOUT))
                .set_response_timeout(Some(RESPONSE_TIMEOUT))
                .set_number_of_retries(1);
            Self::Node(ConnectionManager::new_lazy_with_config(
                redis::Client::open(url)?,
                config,
            )?)
        })
    }
}

impl ConnectionLike for ReadConnection {
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
