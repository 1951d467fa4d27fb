//! Kafka for services, against a real Kafka-protocol broker (tansu) that
//! each test starts on a free loopback port, read back with librdkafka.
#![cfg(feature = "kafka")]

mod common;

use std::collections::HashMap;
use std::process::Stdio;

use common::process::Running;
use common::redis::Redis;
use common::{async_route, config, poll_until, within, Backend, Client, TempDir, TestGateway};
use http::Method;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::ClientConfig;
use tokio::process::{Child, Command};

const TOPIC: &str = "jobs.done";

/// A tansu broker, its data in memory, gone with the test.
struct Broker {
    port: u16,
    _child: Child,
}

impl Broker {
    async fn start_on(port: u16) -> Broker {
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new("tansu")
            .args(["broker", "--listener-url", &url])
            .args(["--advertised-listener-url", &url])
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("tansu must be installed (.ci/run installs it)");
        let addr = format!("127.0.0.1:{port}");
        poll_until(20, "tansu to listen", async || {
            tokio::net::TcpStream::connect(&addr).await.ok().map(drop)
        })
        .await;
        let broker = Broker {
            port,
            _child: child,
        };
        broker.create_topic().await;
        broker
    }

    fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    async fn create_topic(&self) {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", self.brokers())
            .create()
            .unwrap();
        let topic = NewTopic::new(TOPIC, 1, TopicReplication::Fixed(1));
        let created = within(
            20,
            "the topic to be created",
            admin.create_topics([&topic], &AdminOptions::new()),
        )
        .await
        .unwrap();
        assert!(created.iter().all(Result::is_ok), "{created:?}");
    }

    /// A consumer of the topic from its first record.
    fn consumer(&self) -> StreamConsumer {
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", self.brokers())
            .set("group.id", uuid::Uuid::new_v4().to_string())
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        consumer.subscribe(&[TOPIC]).unwrap();
        consumer
    }
}

/// A record as the test reads it: key, headers, document.
struct Record {
    key: String,
    headers: HashMap<String, String>,
    document: serde_json::Value,
}

async fn next_record(consumer: &StreamConsumer) -> Record {
    let message = within(60, "a record", consumer.recv()).await.unwrap();
    let headers = message
        .headers()
        .map(|h| {
            h.iter()
                .map(|h| {
                    let value = String::from_utf8(h.value.unwrap_or_default().to_vec()).unwrap();
                    (h.key.to_owned(), value)
                })
                .collect()
        })
        .unwrap_or_default();
    Record {
        key: String::from_utf8(message.key().unwrap().to_vec()).unwrap(),
        headers,
        document: serde_json::from_slice(message.payload().unwrap()).unwrap(),
    }
}

/// A gateway's config: an async route producing to the topic on
/// `brokers`, with librdkafka `properties` (TOML lines).
fn gateway_config(backend: &Backend, brokers: &str, properties: &str) -> String {
    config(
        &backend.url(),
        "",
        &format!(
            "{}[kafka]\nbrokers = [\"{brokers}\"]\n[kafka.properties]\n{properties}\n",
            async_route("/{*p}", &format!("kafka_topic = \"{TOPIC}\""))
        ),
    )
}

/// librdkafka settings that make a broker's absence show within a test.
const IMPATIENT: &str = "\"message.timeout.ms\" = \"1000\"\n\"reconnect.backoff.max.ms\" = \"200\"";

/// Polls `status_url` until its `kafka` section passes `test`.
async fn kafka_state(
    client: &Client,
    status_url: &str,
    what: &str,
    test: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    poll_until(60, what, async || {
        let doc = client.get(status_url).await.json();
        test(&doc["kafka"]).then_some(doc)
    })
    .await
}

/// The job's record could not be produced yet: the document says so.
fn failed_once(kafka: &serde_json::Value) -> bool {
    kafka["state"] == "pending" && kafka["attempts"].as_u64() >= Some(1)
}

fn delivered(kafka: &serde_json::Value) -> bool {
    kafka["state"] == "delivered"
}

/// The W3C trace context every test job is submitted in.
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// Submits a job and waits until it succeeded; its id and Location.
async fn submit(client: &Client, base: &str, path: &str) -> (String, String) {
    let reply = client
        .send(
            Method::POST,
            &format!("{base}{path}"),
            &[("traceparent", TRACEPARENT)],
            "{}",
        )
        .await;
    reply.assert_status(202);
    let location = common::path_of(reply.header("location")).to_owned();
    client
        .wait_status(&format!("{base}{location}"), "succeeded")
        .await;
    let id = location.rsplit('/').next().unwrap().to_owned();
    (id, location)
}

#[tokio::test]
async fn every_finished_job_is_one_record_keyed_by_its_id() {
    let broker = Broker::start_on(common::steady_port()).await;
    let backend = Backend::start().await;
    let gw = TestGateway::start(&gateway_config(&backend, &broker.brokers(), "")).await;
    let client = Client::default();
    let base = gw.url("");
    let mut ids = Vec::new();
    for n in 0..3 {
        ids.push(submit(&client, &base, &format!("/report/{n}")).await.0);
    }
    // A last job marks the end: every record before its own is read.
    let (last, location) = submit(&client, &base, "/report/last").await;
    let consumer = broker.consumer();
    let mut seen = Vec::new();
    loop {
        let record = next_record(&consumer).await;
        assert_eq!(record.headers["asyncgate-job-id"], record.key);
        assert_eq!(record.headers["asyncgate-job-status"], "succeeded");
        // No [tracing] here: the record carries the job's own trace context.
        assert_eq!(record.headers["traceparent"], TRACEPARENT);
        assert_eq!(record.document["id"], record.key.as_str());
        assert_eq!(record.document["status"], "succeeded");
        assert!(record.document["links"]["result"].is_string());
        let done = record.key == last;
        seen.push(record.key);
        if done {
            break;
        }
    }
    ids.push(last);
    seen.sort();
    ids.sort();
    assert_eq!(seen, ids, "exactly one record per job");
    let doc = kafka_state(
        &client,
        &gw.url(&location),
        "the record's delivery",
        delivered,
    )
    .await;
    assert_eq!(doc["kafka"]["topic"], TOPIC, "{doc:#}");
    assert_eq!(doc["kafka"]["attempts"], 1, "{doc:#}");
}

#[tokio::test]
async fn a_broker_that_is_down_delays_records_never_jobs() {
    let port = common::steady_port();
    let backend = Backend::start().await;
    let gw = TestGateway::start(&gateway_config(
        &backend,
        &format!("127.0.0.1:{port}"),
        IMPATIENT,
    ))
    .await;
    let client = Client::default();
    let (id, location) = submit(&client, &gw.url(""), "/report/while-down").await;
    let doc = kafka_state(&client, &gw.url(&location), "a failed try", failed_once).await;
    assert!(doc["kafka"]["last_error"].is_string(), "{doc:#}");
    assert!(doc["kafka"]["next_attempt_at"].is_string(), "{doc:#}");

    let broker = Broker::start_on(port).await;
    let record = next_record(&broker.consumer()).await;
    assert_eq!(record.key, id);
    assert_eq!(record.document["status"], "succeeded");
    assert!(
        record.document.get("kafka").is_none(),
        "a record carries no delivery state: {:#}",
        record.document
    );
    kafka_state(
        &client,
        &gw.url(&location),
        "the document to say delivered",
        delivered,
    )
    .await;
    let metrics_url = format!("http://{}/metrics", gw.admin.unwrap());
    let metrics = String::from_utf8(client.get(&metrics_url).await.body.to_vec()).unwrap();
    assert!(
        metrics.contains("asyncgate_kafka_deliveries_total{outcome=\"delivered\"} 1\n"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_record_still_unproduced_at_a_crash_is_produced_after_the_restart() {
    let port = common::steady_port();
    let backend = Backend::start().await;
    let store = TempDir::new();
    let text = format!(
        "[store]\nkind = \"disk\"\npath = \"{}\"\n{}",
        store.0.display(),
        gateway_config(&backend, &format!("127.0.0.1:{port}"), IMPATIENT)
    );
    let client = Client::default();
    let mut gw = Running::start(&text).await;
    let base = format!("http://{}", gw.addr().await);
    let (id, location) = submit(&client, &base, "/report/crash").await;
    kafka_state(
        &client,
        &format!("{base}{location}"),
        "a failed try",
        failed_once,
    )
    .await;
    gw.kill();
    gw.exit_code().await;

    let broker = Broker::start_on(port).await;
    let gw = Running::start(&text).await;
    let base = format!("http://{}", gw.addr().await);
    let record = next_record(&broker.consumer()).await;
    assert_eq!(record.key, id);
    kafka_state(
        &client,
        &format!("{base}{location}"),
        "the record's delivery",
        delivered,
    )
    .await;
}

#[tokio::test]
async fn a_record_whose_replica_died_is_produced_by_another() {
    let port = common::steady_port();
    let redis = Redis::start().await;
    let backend = Backend::start().await;
    let text = format!(
        "[store]\nkind = \"redis\"\nurl = \"{}\"\nlease = \"1s\"\n{}",
        redis.url(),
        gateway_config(&backend, &format!("127.0.0.1:{port}"), IMPATIENT)
    );
    let client = Client::default();
    // A alone runs the job, and so produces its record.
    let mut a = Running::start(&text).await;
    let base_a = format!("http://{}", a.addr().await);
    let (id, location) = submit(&client, &base_a, "/report/replica").await;
    kafka_state(
        &client,
        &format!("{base_a}{location}"),
        "a failed try",
        failed_once,
    )
    .await;
    let b = Running::start(&text).await;
    let base_b = format!("http://{}", b.addr().await);
    a.kill();

    let broker = Broker::start_on(port).await;
    let record = next_record(&broker.consumer()).await;
    assert_eq!(record.key, id);
    kafka_state(
        &client,
        &format!("{base_b}{location}"),
        "the record's delivery",
        delivered,
    )
    .await;
}
