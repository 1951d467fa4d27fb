//! The connection the store's commands go over: to one Redis, or to a
//! Redis Cluster, whose client sends each command to the master of the
//! slot of its first key and follows the cluster through failovers.

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, RedisResult, Value};

use crate::config::RedisConfig;
use crate::defaults;

#[derive(Clone)]
pub(super) enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Conn {
    /// Connects lazily, so the gateway starts (and proxies) while Redis is
    /// down.
    pub(super) fn open(redis: &RedisConfig) -> RedisResult<Conn> {
        if redis.cluster {
            let client = ClusterClientBuilder::new(redis.seeds.clone()).build()?;
            let config = redis::cluster::ClusterConfig::new()
                .set_connection_timeout(defaults::REDIS_RESPONSE_TIMEOUT)
                .set_response_timeout(defaults::REDIS_RESPONSE_TIMEOUT);
            return Ok(Conn::Cluster(
                client.get_pending_async_connection_with_config(config),
            ));
        }
        let client = redis::Client::open(redis.seeds[0].as_str())?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(defaults::REDIS_RESPONSE_TIMEOUT))
            .set_response_timeout(Some(defaults::REDIS_RESPONSE_TIMEOUT))
            // Commands fail fast while Redis is away; the next one reconnects.
            .set_number_of_retries(1);
        ConnectionManager::new_lazy_with_config(client, config).map(Conn::Single)
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}
