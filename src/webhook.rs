//! Webhooks: when a job ends, its document is POSTed to the callback URL,
//! signed as Standard Webhooks says, and retried on a schedule (by default
//! the spec's own, over about a day) until the receiver takes it or the
//! attempts run out.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{CONTENT_TYPE, USER_AGENT};
use http::{HeaderValue, Method, Request, StatusCode};
use http_body_util::Full;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::backoff;
use crate::callback::signature::Secret;
use crate::callback::target::{Guard, HostPattern, Resolve, Target, TargetError};
use crate::config::WebhookConfig;
use crate::defaults;
use crate::delivery::{
    self, Attempts, Channel, DeliveryLog, DeliveryState, Failed, Outcomes, Webhook,
};
use crate::error_chain;
use crate::headers::Origin;
use crate::telemetry;

const GATEWAY_AGENT: HeaderValue = HeaderValue::from_static("asyncgate-webhooks");

/// Sends webhooks; one per gateway.
pub(crate) struct Webhooks {
    config: WebhookConfig,
    /// What deliveries are signed with unless their route has its own.
    secrets: Vec<Secret>,
    guard: Guard,
    client: Client<Connector, Full<Bytes>>,
    outcomes: Arc<Outcomes>,
}

#[cfg(feature = "tls")]
type Connector = hyper_rustls::HttpsConnector<HttpConnector<Guard>>;
#[cfg(not(feature = "tls"))]
type Connector = HttpConnector<Guard>;

/// Dials only what the guard resolved and approved; speaks TLS to `https`
/// receivers when built with it, verifying them against Mozilla's roots and
/// the configured `ca_file`.
fn connector(config: &WebhookConfig, guard: Guard) -> Connector {
    let mut http = HttpConnector::new_with_resolver(guard);
    http.set_connect_timeout(Some(config.timeout));
    http.set_nodelay(true);
    #[cfg(feature = "tls")]
    {
        http.enforce_http(false);
        hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(crate::tls::client_config(&config.extra_roots))
            .https_or_http()
            .enable_http1()
            .wrap_connector(http)
    }
    #[cfg(not(feature = "tls"))]
    http
}

/// Why one attempt failed.
#[derive(Debug, thiserror::Error)]
enum AttemptError {
    #[error("the receiver answered {0}")]
    Status(StatusCode, Option<Duration>),
    #[error("the receiver answered {0}; redirects are not followed")]
    Redirect(StatusCode),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error(transparent)]
    Refused(TargetError),
    #[error("{0}")]
    Transport(String),
}

impl AttemptError {
    /// Whether trying again could go differently.
    fn is_transient(&self) -> bool {
        match self {
            AttemptError::Status(s, _) => {
                s.is_server_error()
                    || *s == StatusCode::TOO_MANY_REQUESTS
                    || *s == StatusCode::REQUEST_TIMEOUT
            }
            AttemptError::Timeout(_) | AttemptError::Transport(_) => true,
            AttemptError::Redirect(_) | AttemptError::Refused(_) => false,
        }
    }

    fn status(&self) -> Option<u16> {
        match self {
            AttemptError::Status(s, _) | AttemptError::Redirect(s) => Some(s.as_u16()),
            _ => None,
        }
    }
}

impl Webhooks {
    pub(crate) fn new(
        config: WebhookConfig,
        resolver: Arc<dyn Resolve>,
        outcomes: Arc<Outcomes>,
    ) -> Webhooks {
        let guard = Guard::new(resolver, config.policy.clone(), config.timeout);
        let client = Client::builder(TokioExecutor::new())
            // Without a timer the pool never closes idle connections.
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(defaults::WEBHOOK_POOL_IDLE_TIMEOUT)
            .retry_canceled_requests(false)
            .build(connector(&config, guard.clone()));
        Webhooks {
            secrets: config.secrets.clone(),
            config,
            guard,
            client,
            outcomes,
        }
    }

    /// The longest one attempt may take.
    pub(crate) fn attempt_timeout(&self) -> Duration {
        self.config.timeout
    }

    /// Delivery attempts so far, by how they ended.
    pub(crate) fn outcomes(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        self.outcomes.counts()
    }

    /// A request's callback URL, if its host is on `hosts` and stands only
    /// for acceptable addresses. Resolved now to answer the client while it
    /// is still here; checked again on every new connection.
    pub(crate) async fn check(
        &self,
        url: &str,
        hosts: &[HostPattern],
    ) -> Result<Target, TargetError> {
        let target = Target::parse(url, Some(hosts), self.guard.policy())?;
        self.guard.addresses(target.host()).await?;
        Ok(target)
    }

    /// Sends `payload` until it is taken, refused for good, or the attempts
    /// run out. `hook` follows along, and `log` keeps its delivery state
    /// after every attempt. `secrets` are the route's own, if it has them.
    /// `message_id` (the job's id) is the same on every attempt;
    /// `origin` is the job's: each attempt is a child of its trace.
    pub(crate) async fn deliver(
        &self,
        message_id: &str,
        origin: &Origin,
        hook: &Webhook,
        payload: Bytes,
        secrets: Option<&[Secret]>,
        log: &dyn DeliveryLog,
    ) {
        let secrets = secrets.unwrap_or(&self.secrets);
        let schedule = &self.config.retry_schedule;
        let last = u32::try_from(schedule.len()).map_or(u32::MAX, |n| n.saturating_add(1));
        if hook.delivery().attempts >= last {
            // Resumed under a shorter schedule than it began with: its
            // attempts have run out already.
            hook.progress().update(|d| {
                d.state = DeliveryState::Failed;
                d.next_attempt_at = None;
            });
            log.record(&hook.delivery()).await;
            return;
        }
        let attempts = Attempts {
            job: message_id,
            origin,
            channel: Channel::Webhook,
            progress: hook.progress(),
            outcomes: &self.outcomes,
            log,
        };
        let target = &hook.target;
        delivery::drive(attempts, |n| {
            let payload = payload.clone();
            async move {
                let traceparent = origin.traceparent.as_deref();
                let mut span = telemetry::Span::delivery(traceparent, Channel::Webhook, message_id);
                let parent = telemetry::delivery_traceparent(&span, traceparent);
                let sent = self.attempt(target, message_id, payload, secrets, parent.as_deref());
                let error = match sent.await {
                    Ok(status) => {
                        span.status(status.as_u16());
                        return Ok(Some(status.as_u16()));
                    }
                    Err(e) => e,
                };
                match error.status() {
                    Some(status) => span.status(status),
                    None => span.fail(&error.to_string()),
                }
                let scheduled = schedule.get(n as usize - 1).copied().unwrap_or_default();
                // A receiver that says when to come back (429, 503) is heeded,
                // up to the longest wait the schedule allows.
                let wait = match error {
                    AttemptError::Status(_, Some(asked)) => {
                        asked.min(schedule.iter().copied().max().unwrap_or_default())
                    }
                    _ => backoff::stretched(scheduled),
                };
                Err(Failed {
                    status: error.status(),
                    retry_in: (error.is_transient() && n < last).then_some(wait),
                    error: error.to_string(),
                })
            }
        })
        .await;
    }

    async fn attempt(
        &self,
        target: &Target,
        message_id: &str,
        payload: Bytes,
        secrets: &[Secret],
        traceparent: Option<&str>,
    ) -> Result<StatusCode, AttemptError> {
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        // One signature per secret, space-separated (Standard Webhooks): a
        // receiver holding either the old or the new one during a rotation
        // finds a signature it can check.
        let signature = secrets
            .iter()
            .map(|secret| secret.sign(message_id, timestamp, &payload))
            .collect::<Vec<_>>()
            .join(" ");
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(target.uri().clone())
            .header(CONTENT_TYPE, "application/json")
            .header(USER_AGENT, GATEWAY_AGENT)
            .header("webhook-id", message_id)
            .header("webhook-timestamp", timestamp)
            .header("webhook-signature", signature)
            .body(Full::new(payload))
            .map_err(|e| AttemptError::Transport(e.to_string()))?;
        if let Some(value) = traceparent.and_then(|t| HeaderValue::from_str(t).ok()) {
            request.headers_mut().insert("traceparent", value);
        }
        let timeout = self.config.timeout;
        let response = tokio::time::timeout(timeout, self.client.request(request))
            .await
            .map_err(|_| AttemptError::Timeout(timeout))?
            .map_err(classify)?;
        let status = response.status();
        if status.is_success() {
            Ok(status)
        } else if status.is_redirection() {
            Err(AttemptError::Redirect(status))
        } else {
            let asks = matches!(
                status,
                StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
            );
            let asked = asks.then(|| backoff::asked(response.headers())).flatten();
            Err(AttemptError::Status(status, asked))
        }
    }
}

/// A refused address is found deep in the client's error; anything else
/// is a transport failure worth another try.
fn classify(e: hyper_util::client::legacy::Error) -> AttemptError {
    if let Some(TargetError::AddressRefused(ip)) = error_chain::find::<TargetError>(&e) {
        return AttemptError::Refused(TargetError::AddressRefused(*ip));
    }
    AttemptError::Transport(error_chain::Chain(&e).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_failures_that_may_pass_are_retried() {
        assert!(AttemptError::Status(StatusCode::SERVICE_UNAVAILABLE, None).is_transient());
        assert!(AttemptError::Status(StatusCode::TOO_MANY_REQUESTS, None).is_transient());
        assert!(AttemptError::Timeout(Duration::from_secs(1)).is_transient());
        assert!(!AttemptError::Status(StatusCode::GONE, None).is_transient());
        assert!(!AttemptError::Redirect(StatusCode::FOUND).is_transient());
    }
}
