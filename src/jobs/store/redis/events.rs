//! Following what every replica announces on the events channel, through
//! disconnections.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClientBuilder, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::{FromRedisValue, ProtocolVersion, PushInfo, PushKind};
use tokio::sync::mpsc;

use crate::config::RedisConfig;
use crate::defaults;
use crate::jobs::id::JobId;
use crate::jobs::model::JobStatus;
use crate::jobs::store::Event;

/// Listens to the events channel for as long as `events` has a reader,
/// through disconnections: the connection manager reconnects and
/// resubscribes by itself, and each resubscription is announced as
/// [`Event::Resumed`], since messages may have been missed meanwhile.
pub(super) async fn listen(
    redis: RedisConfig,
    channel: String,
    events: mpsc::UnboundedSender<Event>,
) {
    let (push_tx, mut pushes) = mpsc::unbounded_channel::<PushInfo>();
    let mut subscriber = match Subscriber::open(&redis, push_tx) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen to Redis; no events from other replicas");
            return;
        }
    };
    // Until the first subscription holds, Redis may not be up yet.
    let mut backoff = tokio::time::interval(Duration::from_secs(1));
    loop {
        backoff.tick().await;
        let subscribed = tokio::time::timeout(
            2 * defaults::REDIS_RESPONSE_TIMEOUT,
            subscriber.subscribe(&channel),
        );
        match subscribed.await {
            Ok(Ok(())) => break,
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot subscribe to Redis events; retrying"),
            Err(_) => tracing::warn!("no answer to subscribing to Redis events; retrying"),
        }
        if events.is_closed() {
            return;
        }
    }
    while let Some(push) = pushes.recv().await {
        let event = match push.kind {
            PushKind::Message => push
                .data
                .get(1)
                .and_then(|v| String::from_redis_value(v.clone()).ok())
                .and_then(|m| parse_event(&m)),
            PushKind::Subscribe => Some(Event::Resumed),
            PushKind::Disconnection => {
                tracing::warn!("lost the Redis events connection; reconnecting");
                None
            }
            _ => None,
        };
        if let Some(event) = event {
            if events.send(event).is_err() {
                return;
            }
        }
    }
}

/// A connection to one Redis, or to a cluster, whose nodes pass every
/// message published on any of them to the subscribers of all.
enum Subscriber {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Subscriber {
    fn open(
        redis: &RedisConfig,
        pushes: mpsc::UnboundedSender<PushInfo>,
    ) -> redis::RedisResult<Subscriber> {
        if redis.cluster {
            let client = ClusterClientBuilder::new(redis.seeds.clone())
                .use_protocol(ProtocolVersion::RESP3)
                .push_sender(pushes)
                .build()?;
            let config = ClusterConfig::new()
                .set_connection_timeout(defaults::REDIS_RESPONSE_TIMEOUT)
                .set_response_timeout(defaults::REDIS_RESPONSE_TIMEOUT);
            return Ok(Subscriber::Cluster(
                client.get_pending_async_connection_with_config(config),
            ));
        }
        let info = redis::IntoConnectionInfo::into_connection_info(redis.seeds[0].as_str())?;
        let settings = info
            .redis_settings()
            .clone()
            .set_protocol(ProtocolVersion::RESP3);
        let info = info.set_redis_settings(settings);
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(defaults::REDIS_RESPONSE_TIMEOUT))
            .set_response_timeout(Some(defaults::REDIS_RESPONSE_TIMEOUT))
            .set_max_delay(Duration::from_secs(1))
            .set_number_of_retries(usize::MAX)
            .set_push_sender(pushes)
            .set_automatic_resubscription();
        let client = redis::Client::open(info)?;
        ConnectionManager::new_lazy_with_config(client, config).map(Subscriber::Single)
    }

    async fn subscribe(&mut self, channel: &str) -> redis::RedisResult<()> {
        match self {
            Subscriber::Single(c) => c.subscribe(channel).await,
            Subscriber::Cluster(c) => c.subscribe(channel).await,
        }
    }
}

fn parse_event(message: &str) -> Option<Event> {
    let (first, second) = message.split_once(' ')?;
    if first == "work" {
        return Some(Event::Work(second.to_owned()));
    }
    Some(Event::Status(
        JobId::parse(first)?,
        JobStatus::parse(second)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_parse_and_nothing_else_does() {
        let id = JobId::random();
        assert_eq!(
            parse_event(&format!("{id} canceled")),
            Some(Event::Status(id, JobStatus::Canceled))
        );
        assert_eq!(
            parse_event("work legacy"),
            Some(Event::Work("legacy".into()))
        );
        assert_eq!(parse_event(&format!("{id} sleeping")), None);
        assert_eq!(parse_event("garbage"), None);
    }
}
