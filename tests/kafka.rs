//! Kafka for services, against a real Kafka-protocol broker (tansu) that
//! each test starts on a free loopback port, read back with librdkafka.
#![cfg(feature = "kafka")]

mod common;

use std::collections::HashMap;
use std::process::Stdio;

use common::{async_route, config, poll_until, within, Backend, Client, TestGateway};
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

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
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

async fn submit(client: &Client, gw: &TestGateway, path: &str) -> String {
    let reply = client.send(Method::POST, &gw.url(path), &[], "{}").await;
    reply.assert_status(202);
    let location = reply.header("location").to_owned();
    client.wait_status(&gw.url(&location), "succeeded").await;
    common::path_of(&location)
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn every_finished_job_is_one_record_keyed_by_its_id() {
    let broker = Broker::start_on(free_port()).await;
    let backend = Backend::start().await;
    let gw = TestGateway::start(&gateway_config(&backend, &broker.brokers(), "")).await;
    let client = Client::default();
    let mut ids = Vec::new();
    for n in 0..3 {
        ids.push(submit(&client, &gw, &format!("/report/{n}")).await);
    }
    // A last job marks the end: every record before its own is read.
    let last = submit(&client, &gw, "/report/last").await;
    let consumer = broker.consumer();
    let mut seen = Vec::new();
    loop {
        let record = next_record(&consumer).await;
        assert_eq!(record.headers["asyncgate-job-id"], record.key);
        assert_eq!(record.headers["asyncgate-job-status"], "succeeded");
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
}

#[tokio::test]
async fn a_broker_that_is_down_delays_records_never_jobs() {
    let port = free_port();
    let backend = Backend::start().await;
    // Short librdkafka timeouts, so the outage shows within the test.
    let properties = "\"message.timeout.ms\" = \"1000\"\n\"reconnect.backoff.max.ms\" = \"200\"";
    let gw = TestGateway::start(&gateway_config(
        &backend,
        &format!("127.0.0.1:{port}"),
        properties,
    ))
    .await;
    let client = Client::default();
    let id = submit(&client, &gw, "/report/while-down").await;
    let metrics_url = format!("http://{}/metrics", gw.admin.unwrap());
    poll_until(30, "a failed try to be counted", async || {
        let metrics = String::from_utf8(client.get(&metrics_url).await.body.to_vec()).unwrap();
        let retried = metrics.lines().find_map(|l| {
            l.strip_prefix("asyncgate_kafka_deliveries_total{outcome=\"retried\"} ")
        })?;
        (retried != "0").then_some(())
    })
    .await;

    let broker = Broker::start_on(port).await;
    let record = next_record(&broker.consumer()).await;
    assert_eq!(record.key, id);
    assert_eq!(record.document["status"], "succeeded");
    let metrics = String::from_utf8(client.get(&metrics_url).await.body.to_vec()).unwrap();
    assert!(
        metrics.contains("asyncgate_kafka_deliveries_total{outcome=\"delivered\"} 1\n"),
        "{metrics}"
    );
}
