//! The replica suite's core cases on a Redis Cluster of three masters,
//! each with a replica: every key of a job is in its upstream's hash slot,
//! and the gateways follow the cluster through a master failing over.

use http::Method;

use super::{answers_anywhere, cancel_across, replica, sent_again_by_another, submit, Replica};
use crate::common::redis::Cluster;
use crate::common::{Backend, Client};

#[tokio::test]
async fn on_a_cluster_any_replica_answers_for_any_job() {
    answers_anywhere(&Cluster::start().await).await;
}

#[tokio::test]
async fn on_a_cluster_cancel_on_one_replica_drops_the_request_on_the_other() {
    cancel_across(&Cluster::start().await).await;
}

#[tokio::test]
async fn on_a_cluster_a_killed_replica_s_job_is_sent_again_by_another() {
    sent_again_by_another(&Cluster::start().await).await;
}

#[tokio::test]
async fn on_a_cluster_a_master_failing_over_loses_no_job() {
    let mut cluster = Cluster::start().await;
    let backend = Backend::start().await;
    let config = replica(&cluster, &backend, "", "");
    let (a, b) = Replica::pair(&config).await;
    let client = Client::default();
    let done = submit(&client, &a, Method::POST, "/echo/before")
        .await
        .header("location")
        .to_owned();
    client.wait_status(&a.url(&done), "succeeded").await;
    let held = submit(&client, &a, Method::POST, "/hold/x")
        .await
        .header("location")
        .to_owned();
    backend.started(1).await;
    // The master holding the upstream's keys: its jobs' ids start with the
    // upstream's hash tag.
    let id = held.rsplit('/').next().unwrap();
    cluster.fail_over(&id[..4]).await;
    // The running job ends on the replica made master, and is seen ended
    // everywhere; what was there before is still there.
    backend.release(1);
    client.wait_status(&b.url(&held), "succeeded").await;
    let result = client.get(&b.url(&format!("{held}/result"))).await;
    assert_eq!(&result.body[..], b"payload");
    let before = client.get(&b.url(&format!("{done}/result"))).await;
    assert_eq!(&before.body[..], b"payload");
    let after = submit(&client, &b, Method::POST, "/echo/after")
        .await
        .header("location")
        .to_owned();
    client.wait_status(&a.url(&after), "succeeded").await;
}
