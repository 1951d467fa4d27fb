//! The shared store: jobs live in Redis, so every replica answers for every
//! job, and work waits in one Redis stream per upstream, read through a
//! consumer group, so each job is taken by one replica at a time.
//!
//! Keys, under the prefix `P` (`key_prefix`):
//! - `P:job:{id}`: hash, the job: its record, its request until it ends,
//!   then its result; expires `result_ttl` after the job ends.
//! - `P:gone:{id}`: its tombstone, until `tombstone_ttl` after that.
//! - `P:idem:{scope}`: the job holding an idempotency scope.
//! - `P:work:{upstream}`: stream of queued job ids, consumer group
//!   `workers`. An entry is pending while a replica holds the job, so the
//!   pending count is the upstream's running jobs across replicas, and an
//!   entry left idle longer than the lease belongs to a replica that is gone.
//! - `P:idle:{upstream}`: set of the replicas that last found nothing to
//!   take there; `work {upstream}` is published only when it has members,
//!   and empties it.
//! - `P:hooks`, `P:kafka`: sorted sets of the jobs whose webhook or Kafka
//!   record is being delivered, scored by when their sender holds the
//!   delivery until (its next attempt); one let go for longer than a lease
//!   is taken over.
//! - `P:bytes`, `P:charges`: the budget's bytes in use, and when each charge
//!   is given back.
//! - `P:events`: pub/sub channel: `{id} {status}` and `work {upstream}`.
//!
//! On a Redis Cluster, each upstream's keys (all but the events channel
//! and `P:spaces`) are under `P:{t}` instead, see [`layout`].
//!
//! Every change is one Lua script, so it is atomic; those a replica makes on
//! a running job check that it still holds the job's lease (owner and
//! attempt), so a replica that lost its lease cannot overwrite the one that
//! took over. A script is given its keys' prefix as `KEYS[1]`, which a
//! cluster client routes by, and names only keys under it.

mod codec;
mod conn;
mod events;
mod layout;
mod scripts;

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use redis::{FromRedisValue, Script, Value};
use tokio::sync::mpsc;

use super::{
    Binding, Cancel, CreateError, Created, Event, JobStore, Lookup, NewJob, StoreError, Taken,
    Took, WorkQueue,
};
use crate::body::ReplayBody;
use crate::config::{RedisConfig, StoreConfig};
use crate::defaults;
use crate::delivery::Webhook;
use crate::delivery::{Channel, Delivery, DeliveryState};
use crate::header_block::HeaderBlock;
use crate::jobs::id::JobId;
use crate::jobs::lane::Limits;
use crate::jobs::model::{Job, Outcome, Replay, StoredResponse};
use crate::sync::lock;
use codec::{decode_job, delivery_names, hex, job_fields, millis, now_ms, unhex, TakenRow, META};
use conn::Conn;
use layout::Layout;
use scripts::Scripts;

/// How many due charges one sweep gives back at most.
const SWEEP_BATCH: usize = 1000;

pub(crate) struct RedisStore {
    conn: Conn,
    layout: Layout,
    /// On a cluster, the spaces this process has added to `P:spaces`.
    registered: Mutex<HashSet<String>>,
    /// This replica's name in the consumer group: new at every start, so a
    /// restarted replica never mistakes its predecessor's leases for its own.
    replica: String,
    lease: Duration,
    budget: u64,
    result_ttl: Duration,
    tombstone_ttl: Duration,
    scripts: Scripts,
    events: Mutex<Option<mpsc::UnboundedReceiver<Event>>>,
}

impl RedisStore {
    /// Connects lazily, so the gateway starts (and proxies) while Redis is
    /// down; must be called inside a tokio runtime, which the event
    /// listener is spawned on.
    /// Runs a script that acts on a running job only while this replica
    /// holds it as `attempt` (ARGV: id, consumer, attempt); true when it did.
    async fn while_held(
        &self,
        script: &Script,
        id: JobId,
        attempt: u32,
    ) -> Result<bool, StoreError> {
        let mut invocation = self.invoke(script, self.layout.of_job(id));
        invocation
            .arg(id.to_string())
            .arg(&self.replica)
            .arg(attempt);
        Ok(self.run::<u8>(invocation).await? == 1)
    }

    pub(crate) fn connect(
        store: &StoreConfig,
        redis: &RedisConfig,
    ) -> Result<RedisStore, StoreError> {
        let conn = Conn::open(redis).map_err(|e| StoreError::Unavailable(Box::new(e)))?;
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(events::listen(
            redis.clone(),
            format!("{}:events", redis.key_prefix),
            tx,
        ));
        Ok(RedisStore {
            conn,
            layout: Layout::new(&redis.key_prefix, redis.cluster),
            registered: Mutex::default(),
            replica: uuid::Uuid::new_v4().to_string(),
            lease: redis.lease,
            budget: store.max_bytes,
            result_ttl: store.result_ttl,
            tombstone_ttl: store.tombstone_ttl,
            scripts: Scripts::new(),
            events: Mutex::new(Some(rx)),
        })
    }

    /// A script invocation on the keys under `space`, with the arguments
    /// every script takes first.
    fn invoke<'a>(&self, script: &'a Script, space: String) -> redis::ScriptInvocation<'a> {
        let mut invocation = script.prepare_invoke();
        invocation
            .key(space)
            .arg(self.layout.prefix())
            .arg(now_ms())
            .arg(millis(self.result_ttl))
            .arg(millis(self.tombstone_ttl))
            .arg(defaults::TOMBSTONE_BYTES)
            .arg(defaults::JOB_RECORD_BYTES);
        invocation
    }

    /// Runs a script, within a bound even if Redis hangs.
    async fn run<T: FromRedisValue>(
        &self,
        invocation: redis::ScriptInvocation<'_>,
    ) -> Result<T, StoreError> {
        let mut conn = self.conn.clone();
        bounded(invocation.invoke_async(&mut conn)).await
    }

    fn key(&self, kind: &str, id: JobId) -> String {
        format!("{}:{kind}:{id}", self.layout.of_job(id))
    }

    /// Every space jobs may be in: on a cluster, those any replica created
    /// a job in.
    async fn spaces(&self) -> Result<Vec<String>, StoreError> {
        if !self.layout.cluster() {
            return Ok(vec![self.layout.prefix().to_owned()]);
        }
        let mut conn = self.conn.clone();
        let mut members = redis::cmd("SMEMBERS");
        members.arg(self.layout.spaces_key());
        bounded(members.query_async(&mut conn)).await
    }

    /// Adds `space` to the cluster's list of spaces before a job is created
    /// in it, once per process.
    async fn register(&self, space: &str) -> Result<(), StoreError> {
        if !self.layout.cluster() || lock(&self.registered).contains(space) {
            return Ok(());
        }
        let mut conn = self.conn.clone();
        let mut add = redis::cmd("SADD");
        add.arg(self.layout.spaces_key()).arg(space);
        bounded(add.query_async::<u8>(&mut conn)).await?;
        lock(&self.registered).insert(space.to_owned());
        Ok(())
    }

    /// The job's META fields and whether its tombstone exists, plus `extra`
    /// fields, in one round trip.
    async fn read(
        &self,
        id: JobId,
        extra: &[&str],
    ) -> Result<Lookup<(Job, Vec<Option<Bytes>>)>, StoreError> {
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        pipe.cmd("HMGET")
            .arg(self.key("job", id))
            .arg(&META[..])
            .arg(extra)
            .cmd("GET")
            .arg(self.key("gone", id));
        let (mut fields, gone): (Vec<Option<Bytes>>, Option<Bytes>) =
            bounded(pipe.query_async(&mut conn)).await?;
        if fields.first().is_none_or(Option::is_none) {
            return Ok(match gone {
                Some(binding) => Lookup::Gone(Binding::from_bytes(&binding)),
                None => Lookup::Missing,
            });
        }
        let extra = fields.split_off(META.len());
        Ok(Lookup::Found((decode_job(id, &fields)?, extra)))
    }
}

async fn bounded<T>(
    op: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(2 * defaults::REDIS_RESPONSE_TIMEOUT, op).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(StoreError::Unavailable(Box::new(e))),
        Err(elapsed) => Err(StoreError::Unavailable(Box::new(elapsed))),
    }
}

#[async_trait]
impl JobStore for RedisStore {
    fn new_id(&self, upstream: &str) -> JobId {
        self.layout.new_id(upstream)
    }

    async fn create(&self, new: NewJob<'_>) -> Result<Created, CreateError> {
        let bytes = defaults::JOB_RECORD_BYTES + new.request.size();
        let space = self.layout.of_job(new.job.id);
        self.register(&space).await?;
        let mut invocation = self.invoke(&self.scripts.create, space);
        invocation
            .arg(new.job.id.to_string())
            .arg(self.budget)
            .arg(bytes)
            .arg(new.upstream)
            .arg(new.max_queue);
        match new.idempotency {
            Some(claim) => invocation
                .arg(hex(&claim.scope))
                .arg(format!("{} {}", new.job.id, hex(&claim.fingerprint)))
                .arg(if claim.replace { "1" } else { "0" }),
            None => invocation.arg("").arg("").arg("0"),
        };
        match new.quota {
            Some((caller, max)) => invocation.arg(caller).arg(max),
            None => invocation.arg("").arg(0),
        };
        for (name, value) in job_fields(&new) {
            invocation.arg(name).arg(value);
        }
        let reply: Vec<String> = self.run(invocation).await?;
        match reply.first().map(String::as_str) {
            Some("ok") => Ok(Created::Recorded),
            Some("full") => Err(CreateError::Full),
            Some("queue-full") => Err(CreateError::QueueFull(new.upstream.to_owned())),
            Some("quota") => Err(CreateError::CallerQuota),
            Some("taken") => {
                let held = reply.get(1).map(String::as_str).unwrap_or_default();
                let (job, fingerprint) = held
                    .split_once(' ')
                    .and_then(|(j, f)| Some((JobId::parse(j)?, unhex(f)?)))
                    .ok_or_else(|| StoreError::Corrupt(format!("idempotency claim `{held}`")))?;
                Ok(Created::Taken { job, fingerprint })
            }
            _ => Err(StoreError::Corrupt(format!("create answered {reply:?}")).into()),
        }
    }

    async fn get(&self, id: JobId) -> Result<Lookup<Job>, StoreError> {
        Ok(self.read(id, &[]).await?.map(|(job, _)| job))
    }

    async fn result(&self, id: JobId) -> Result<Lookup<(Job, Option<Replay>)>, StoreError> {
        let (job, mut extra) = match self.read(id, &["resp_headers", "resp_body"]).await? {
            Lookup::Found(found) => found,
            Lookup::Gone(binding) => return Ok(Lookup::Gone(binding)),
            Lookup::Missing => return Ok(Lookup::Missing),
        };
        let body = extra.pop().flatten();
        let headers = extra.pop().flatten();
        let response = match (job.response, headers, body) {
            (Some(summary), Some(headers), Some(body)) => Some(Replay {
                status: http::StatusCode::from_u16(summary.status)
                    .map_err(|_| StoreError::Corrupt(format!("job {id}: resp_status")))?,
                headers: HeaderBlock::from_bytes(headers)
                    .ok_or_else(|| StoreError::Corrupt(format!("job {id}: resp_headers")))?,
                body: ReplayBody::Bytes(body),
            }),
            _ => None,
        };
        Ok(Lookup::Found((job, response)))
    }

    async fn finish(
        &self,
        id: JobId,
        attempt: u32,
        outcome: Outcome,
    ) -> Result<Option<Job>, StoreError> {
        let bytes =
            defaults::JOB_RECORD_BYTES + outcome.response.as_ref().map_or(0, StoredResponse::size);
        // The outcome is in hand: Redis out of reach for a while must not
        // lose it. Past the lease another replica may have taken the job
        // over, and the fencing check then refuses this outcome anyway.
        let mut tries = 0;
        let meta: Option<Vec<Option<Bytes>>> = loop {
            let mut invocation = self.invoke(&self.scripts.finish, self.layout.of_job(id));
            invocation
                .arg(id.to_string())
                .arg(&self.replica)
                .arg(attempt)
                .arg(outcome.status.as_str())
                .arg(bytes);
            if let Some(failure) = outcome.failure {
                invocation.arg("failure").arg(failure.as_str());
            }
            if let Some(response) = &outcome.response {
                invocation
                    .arg("resp_status")
                    .arg(response.status.as_u16())
                    .arg("resp_len")
                    .arg(response.body.len())
                    .arg("resp_headers")
                    .arg(response.headers.as_bytes())
                    .arg("resp_body")
                    .arg(&response.body[..]);
            }
            match self.run(invocation).await {
                Err(StoreError::Unavailable(e)) if tries < defaults::RECORD_RETRIES => {
                    tries += 1;
                    tracing::warn!(job = %id, error = %e, "could not record how the job ended; retrying");
                    tokio::time::sleep(defaults::RECORD_RETRY_INTERVAL).await;
                }
                other => break other?,
            }
        };
        meta.map(|m| decode_job(id, &m)).transpose()
    }

    async fn cancel(&self, id: JobId) -> Result<Lookup<Cancel>, StoreError> {
        let mut invocation = self.invoke(&self.scripts.cancel, self.layout.of_job(id));
        invocation.arg(id.to_string());
        let reply: Value = self.run(invocation).await?;
        let corrupt = || StoreError::Corrupt(format!("cancel answered {reply:?}"));
        let Value::Array(parts) = &reply else {
            return Err(corrupt());
        };
        let what = parts
            .first()
            .and_then(|v| String::from_redis_value(v.clone()).ok())
            .ok_or_else(corrupt)?;
        let job = || -> Result<Job, StoreError> {
            let meta = parts.get(1).cloned().ok_or_else(corrupt)?;
            let meta: Vec<Option<Bytes>> =
                FromRedisValue::from_redis_value(meta).map_err(|_| corrupt())?;
            decode_job(id, &meta)
        };
        Ok(match what.as_str() {
            "canceled" => Lookup::Found(Cancel::Canceled(job()?)),
            "already" => Lookup::Found(Cancel::AlreadyCanceled(job()?)),
            "deleted" => Lookup::Found(Cancel::Deleted),
            "gone" => Lookup::Gone(
                parts
                    .get(1)
                    .and_then(|v| Vec::<u8>::from_redis_value(v.clone()).ok())
                    .and_then(|b| Binding::from_bytes(&b)),
            ),
            "missing" => Lookup::Missing,
            _ => return Err(corrupt()),
        })
    }

    async fn discard(&self, id: JobId) -> Result<(), StoreError> {
        let mut invocation = self.invoke(&self.scripts.discard, self.layout.of_job(id));
        invocation.arg(id.to_string());
        self.run::<u8>(invocation).await.map(drop)
    }

    async fn put_back(&self, id: JobId, attempt: u32) -> Result<bool, StoreError> {
        self.while_held(&self.scripts.put_back, id, attempt).await
    }

    async fn set_paused(&self, upstream: &str, paused: bool) -> Result<(), StoreError> {
        let mut invocation = self.invoke(&self.scripts.pause, self.layout.of_upstream(upstream));
        invocation.arg(upstream).arg(if paused { "1" } else { "0" });
        self.run::<u8>(invocation).await.map(drop)
    }

    async fn arm_webhook(&self, id: JobId, _hook: &Webhook) -> Result<bool, StoreError> {
        let mut invocation = self.invoke(&self.scripts.arm, self.layout.of_job(id));
        invocation.arg(id.to_string());
        Ok(self.run::<u8>(invocation).await? == 1)
    }

    async fn record_delivery(
        &self,
        id: JobId,
        channel: Channel,
        delivery: &Delivery,
    ) -> Result<(), StoreError> {
        let mut invocation = self.invoke(&self.scripts.delivery, self.layout.of_job(id));
        let (prefix, set) = delivery_names(channel);
        let field = |name: &str| format!("{prefix}_{name}");
        let or_empty = |v: Option<String>| v.unwrap_or_default();
        let next = delivery
            .next_attempt_at
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| millis(d).to_string());
        // Held until its next attempt while pending; let go once it is over.
        let held = match delivery.state {
            DeliveryState::Pending => Some(next.clone().unwrap_or_else(|| now_ms().to_string())),
            DeliveryState::Delivered | DeliveryState::Failed => None,
        };
        invocation
            .arg(id.to_string())
            .arg(set)
            .arg(or_empty(held))
            .arg(field("state"))
            .arg(delivery.state.as_str())
            .arg(field("attempts"))
            .arg(delivery.attempts)
            .arg(field("last_status"))
            .arg(or_empty(delivery.last_status.map(|s| s.to_string())))
            .arg(field("last_error"))
            .arg(or_empty(delivery.last_error.clone()))
            .arg(field("next"))
            .arg(or_empty(next));
        self.run::<u8>(invocation).await.map(drop)
    }

    async fn usage(&self) -> Result<u64, StoreError> {
        let mut conn = self.conn.clone();
        let mut total = 0;
        for space in self.spaces().await? {
            let mut get = redis::cmd("GET");
            get.arg(format!("{space}:bytes"));
            let used: Option<u64> = bounded(get.query_async(&mut conn)).await?;
            total += used.unwrap_or(0);
        }
        Ok(total)
    }

    fn work_queue(&self) -> Option<&dyn WorkQueue> {
        Some(self)
    }
}

#[async_trait]
impl WorkQueue for RedisStore {
    async fn take(&self, upstream: &str, limits: Limits, count: usize) -> Result<Took, StoreError> {
        let mut invocation = self.invoke(&self.scripts.take, self.layout.of_upstream(upstream));
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let (interval, tolerance) = limits
            .rate
            .map_or((0.0, 0.0), |r| (ms(r.interval()), ms(r.tolerance())));
        invocation
            .arg(upstream)
            .arg(&self.replica)
            .arg(limits.max_running)
            .arg(count)
            .arg(interval)
            .arg(tolerance);
        let (held, rows, paced): (i64, Vec<TakenRow>, u64) = self.run(invocation).await?;
        Ok(Took {
            jobs: rows
                .into_iter()
                .map(codec::decode_taken)
                .collect::<Result<_, _>>()?,
            held_until: u64::try_from(held)
                .ok()
                .filter(|&ms| ms > 0)
                .map(codec::time_of),
            paused: held < 0,
            paced_until: (paced > 0).then(|| codec::time_of(paced)),
        })
    }

    async fn hold(&self, upstream: &str, until: SystemTime) -> Result<(), StoreError> {
        let mut invocation = self.invoke(&self.scripts.hold, self.layout.of_upstream(upstream));
        let ms = millis(until.duration_since(UNIX_EPOCH).unwrap_or_default());
        invocation.arg(upstream).arg(ms);
        self.run::<u8>(invocation).await.map(drop)
    }

    async fn take_over(&self, upstream: &str, count: usize) -> Result<Vec<Taken>, StoreError> {
        let mut invocation =
            self.invoke(&self.scripts.take_over, self.layout.of_upstream(upstream));
        invocation
            .arg(upstream)
            .arg(&self.replica)
            .arg(millis(self.lease))
            .arg(count);
        let rows: Vec<TakenRow> = self.run(invocation).await?;
        rows.into_iter().map(codec::decode_taken).collect()
    }

    async fn renew(&self, id: JobId, attempt: u32) -> Result<bool, StoreError> {
        self.while_held(&self.scripts.renew, id, attempt).await
    }

    async fn expire(&self, upstream: &str, count: usize) -> Result<usize, StoreError> {
        let mut invocation = self.invoke(&self.scripts.expire, self.layout.of_upstream(upstream));
        invocation.arg(upstream).arg(count);
        self.run(invocation).await
    }

    fn lease(&self) -> Duration {
        self.lease
    }

    fn events(&self) -> Option<mpsc::UnboundedReceiver<Event>> {
        lock(&self.events).take()
    }

    async fn take_deliveries(
        &self,
        channel: Channel,
        idle: Duration,
        count: usize,
    ) -> Result<Vec<Job>, StoreError> {
        let (prefix, set) = delivery_names(channel);
        // A webhook is due only once its client was answered `202`.
        let needed = match channel {
            Channel::Webhook => "hook_armed",
            Channel::Kafka => "",
        };
        let mut jobs = Vec::new();
        for space in self.spaces().await? {
            if jobs.len() >= count {
                break;
            }
            let mut invocation = self.invoke(&self.scripts.take_deliveries, space);
            invocation
                .arg(set)
                .arg(prefix)
                .arg(needed)
                .arg(millis(idle))
                .arg(count - jobs.len());
            let rows: Vec<(String, Vec<Option<Bytes>>)> = self.run(invocation).await?;
            for (id, meta) in rows {
                let id = JobId::parse(&id)
                    .ok_or_else(|| StoreError::Corrupt(format!("webhook of job {id}")))?;
                jobs.push(decode_job(id, &meta)?);
            }
        }
        Ok(jobs)
    }

    async fn sweep(&self) -> Result<(), StoreError> {
        for space in self.spaces().await? {
            let mut invocation = self.invoke(&self.scripts.sweep, space);
            invocation.arg(SWEEP_BATCH);
            self.run::<usize>(invocation).await?;
        }
        Ok(())
    }
}
