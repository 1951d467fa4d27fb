//! What leaves the gateway when a job ends, besides the answers to its
//! client: its webhook (the document in its envelope, with its result on
//! an inline route) and its Kafka record; each delivery's state is kept
//! in the store, where every replica reads it.

use std::sync::Arc;
#[cfg(feature = "kafka")]
use std::time::SystemTime;

use bytes::Bytes;

use super::Core;
use crate::config::WebhookResult;
#[cfg(feature = "kafka")]
use crate::delivery::Publication;
use crate::delivery::{Channel, Delivery, DeliveryLog, Webhook};
use crate::jobs::id::JobId;
use crate::jobs::links::Purpose;
use crate::jobs::model::Job;
use crate::jobs::store::JobStore;

impl Core {
    /// Sends a job's webhook: the job document as it ended.
    pub(in crate::jobs) fn send_webhook(&self, job: &Job, hook: &Arc<Webhook>) {
        let Some(webhooks) = self.webhooks() else {
            return;
        };
        let envelope = self.document(job).without_deliveries().to_webhook_json();
        let (secrets, inline) = self
            .with_route(&job.route, |r| {
                let inline = r.config.webhook_result == WebhookResult::Inline;
                (
                    r.config.webhook_secrets.clone(),
                    inline.then_some(r.config.webhook_result_max),
                )
            })
            .unwrap_or_default();
        // Its result, when the route carries it and the job has one.
        let result = inline.filter(|_| job.has_result()).map(|max| {
            let token = self.links.issue(Purpose::Result, job.id);
            let link = format!("{}/{}/result?access={token}", self.url_prefix, job.id);
            (max, link)
        });
        let store = Arc::clone(&self.store);
        let hook = Arc::clone(hook);
        let origin = job.origin.clone();
        let log = StoreDeliveryLog {
            store: Arc::clone(&self.store),
            id: job.id,
            channel: Channel::Webhook,
        };
        tokio::spawn(async move {
            // Made once: every attempt sends the same body.
            let payload = match result {
                Some((max, link)) => {
                    crate::jobs::payload::with_result(envelope, &*store, log.id, max, link).await
                }
                None => Bytes::from(envelope),
            };
            webhooks
                .deliver(
                    &log.id.to_string(),
                    &origin,
                    &hook,
                    payload,
                    secrets.as_deref(),
                    &log,
                )
                .await;
        });
    }

    /// Produces an ended job's document to the Kafka topic it was
    /// accepted with.
    #[cfg(feature = "kafka")]
    pub(in crate::jobs) fn produce(&self, job: &Job, publication: &Arc<Publication>) {
        let Some(kafka) = self.kafka.clone() else {
            tracing::error!(job = %job.id, "a job with a Kafka topic, and no [kafka] here to produce it");
            return;
        };
        let document = Bytes::from(self.document(job).without_deliveries().to_json());
        let record = crate::kafka::Record {
            job: job.id.to_string(),
            status: job.status.as_str(),
            ended: job.finished_at.unwrap_or_else(SystemTime::now),
            document,
            origin: job.origin.clone(),
        };
        let publication = Arc::clone(publication);
        let log = StoreDeliveryLog {
            store: Arc::clone(&self.store),
            id: job.id,
            channel: Channel::Kafka,
        };
        tokio::spawn(async move { kafka.publish(&record, &publication, &log).await });
    }

    #[cfg(feature = "kafka")]
    pub(in crate::jobs) fn kafka(&self) -> Option<&Arc<crate::kafka::Kafka>> {
        self.kafka.as_ref()
    }
}

/// Keeps the state of a job's delivery in its store.
struct StoreDeliveryLog {
    store: Arc<dyn JobStore>,
    id: JobId,
    channel: Channel,
}

#[async_trait::async_trait]
impl DeliveryLog for StoreDeliveryLog {
    async fn record(&self, delivery: &Delivery) {
        if let Err(e) = self
            .store
            .record_delivery(self.id, self.channel, delivery)
            .await
        {
            tracing::warn!(job = %self.id, channel = self.channel.as_str(), error = %e, "could not record a delivery's state");
        }
    }
}
