//! The metrics as Prometheus reads them: a collector that reads the
//! gateway's counters at scrape time, encoded by `prometheus-client`.

use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::process;
use crate::app::Report;
use crate::metrics::{Histogram, RouteMetrics};

/// One scrape's view: the app's live counters, and what had to be asked of
/// the store before encoding could start.
struct Exposition {
    report: Report,
    /// Whether the store takes work: reached, or awaited from the process
    /// this one replaces.
    store_up: bool,
    /// `None` when the store could not be reached.
    store_bytes: Option<u64>,
}

impl std::fmt::Debug for Exposition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Exposition")
    }
}

/// The text and its content type.
pub(super) fn render(
    report: &Report,
    store_up: bool,
    store_bytes: Option<u64>,
    openmetrics: bool,
) -> (String, &'static str) {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Exposition {
        report: report.clone(),
        store_up,
        store_bytes,
    }));
    let mut out = String::new();
    // Writing to a String fails only if an encoder refuses a value, and
    // every value here is a plain count.
    if openmetrics {
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        (
            out,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )
    } else {
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &registry);
        (out, "text/plain; version=0.0.4; charset=utf-8")
    }
}

type Labels<'a> = Vec<(&'static str, &'a str)>;

fn counter<'l>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (Labels<'l>, u64)>,
) -> std::fmt::Result {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, value) in samples {
        metric
            .encode_family(&labels)?
            .encode_counter::<NoLabelSet, _, u64>(&value, None)?;
    }
    Ok(())
}

fn gauge<'l>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (Labels<'l>, u64)>,
) -> std::fmt::Result {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in samples {
        metric.encode_family(&labels)?.encode_gauge(&value)?;
    }
    Ok(())
}

fn histogram<'h>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (Labels<'h>, &'h Histogram)>,
) -> std::fmt::Result {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
    for (labels, h) in samples {
        let (sum, count, buckets) = h.snapshot();
        metric
            .encode_family(&labels)?
            .encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
    }
    Ok(())
}

impl prometheus_client::collector::Collector for Exposition {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> std::fmt::Result {
        let report = &self.report;
        let routing = report.routing();
        let routes: Vec<(&str, &RouteMetrics)> = routing
            .routes
            .iter()
            .map(|r| (&*r.name, &*r.metrics))
            .collect();
        let everywhere: Vec<(&str, &RouteMetrics)> = routes
            .iter()
            .copied()
            .chain(report.other_metrics())
            .collect();
        counter(
            &mut encoder,
            "asyncgate_requests",
            "Requests answered, by route and status code.",
            everywhere.iter().flat_map(|(route, m)| {
                m.requests.seen().map(move |(code, n)| {
                    let code: &'static str = status_label(code);
                    (vec![("route", *route), ("code", code)], n)
                })
            }),
        )?;
        histogram(
            &mut encoder,
            "asyncgate_request_duration_seconds",
            "Until the response head, by route: proxied, answered with a job's 202, or refused.",
            everywhere
                .iter()
                .map(|(route, m)| (vec![("route", *route)], &m.request_duration)),
        )?;
        counter(
            &mut encoder,
            "asyncgate_jobs_submitted",
            "Jobs accepted, by route.",
            routes.iter().map(|(route, m)| {
                let n = m.submitted.load(std::sync::atomic::Ordering::Relaxed);
                (vec![("route", *route)], n)
            }),
        )?;
        counter(
            &mut encoder,
            "asyncgate_jobs_finished",
            "Jobs ended, by route and final status.",
            routes.iter().flat_map(|(route, m)| {
                m.finished_counts()
                    .map(move |(status, n)| (vec![("route", *route), ("status", status)], n))
            }),
        )?;
        counter(
            &mut encoder,
            "asyncgate_rejected",
            "Requests turned away, by route and reason.",
            everywhere.iter().flat_map(|(route, m)| {
                m.rejected_counts()
                    .map(move |(reason, n)| (vec![("route", *route), ("reason", reason)], n))
            }),
        )?;
        let loads = report.loads();
        gauge(
            &mut encoder,
            "asyncgate_jobs_queued",
            "Jobs waiting for a place at their upstream, by upstream.",
            loads
                .iter()
                .map(|(u, l)| (vec![("upstream", u.as_str())], l.waiting as u64)),
        )?;
        gauge(
            &mut encoder,
            "asyncgate_jobs_running",
            "Jobs sent to their upstream and not yet answered, by upstream.",
            loads
                .iter()
                .map(|(u, l)| (vec![("upstream", u.as_str())], l.running as u64)),
        )?;
        gauge(
            &mut encoder,
            "asyncgate_upstream_max_queue",
            "How many of the upstream's jobs may wait before a submission is refused (max_queue).",
            routing.upstreams.iter().map(|u| {
                let name = u.config.name.as_str();
                (vec![("upstream", name)], u.config.max_queue as u64)
            }),
        )?;
        let holds = report.holds();
        gauge(
            &mut encoder,
            "asyncgate_upstream_paused",
            "1 while nothing of the upstream starts, by why: manual (paused on the admin listener), backoff (its backend answered 429 or 503).",
            routing.upstreams.iter().flat_map(|u| {
                let name = u.config.name.as_str();
                let held = holds.iter().find(|h| h.upstream == name);
                let manual = held.is_some_and(|h| h.paused);
                let backoff = held.is_some_and(|h| h.until.is_some());
                [
                    (vec![("upstream", name), ("reason", "manual")], u64::from(manual)),
                    (vec![("upstream", name), ("reason", "backoff")], u64::from(backoff)),
                ]
            }),
        )?;
        let adaptive = report.adaptive_limits();
        gauge(
            &mut encoder,
            "asyncgate_upstream_concurrency_limit",
            "How many of the upstream's jobs may run at once now: max_concurrency, or with adaptive = true the limit it has moved to.",
            routing.upstreams.iter().map(|u| {
                let name = u.config.name.as_str();
                let limit = adaptive
                    .iter()
                    .find(|(n, _)| n == name)
                    .map_or(u.config.max_concurrency, |(_, l)| *l);
                (vec![("upstream", name)], limit as u64)
            }),
        )?;
        histogram(
            &mut encoder,
            "asyncgate_job_duration_seconds",
            "From acceptance to the end, for jobs that ended, by route.",
            routes
                .iter()
                .map(|(route, m)| (vec![("route", *route)], &m.job_duration)),
        )?;
        histogram(
            &mut encoder,
            "asyncgate_upstream_duration_seconds",
            "Until the response head (or the failure) of each request sent to an upstream.",
            routing
                .upstreams
                .iter()
                .map(|u| (vec![("upstream", u.config.name.as_str())], &*u.duration)),
        )?;
        gauge(
            &mut encoder,
            "asyncgate_store_up",
            "1 while the job store takes work (readiness depends on it), 0 while it cannot be reached or did not open.",
            [(vec![], u64::from(self.store_up))],
        )?;
        gauge(
            &mut encoder,
            "asyncgate_store_bytes",
            "Bytes charged to the store's budget (absent while the store cannot be reached).",
            self.store_bytes.map(|b| (vec![], b)),
        )?;
        gauge(
            &mut encoder,
            "asyncgate_store_max_bytes",
            "The store's budget.",
            [(vec![], report.store_max_bytes())],
        )?;
        if let Some(outcomes) = report.webhook_outcomes() {
            counter(
                &mut encoder,
                "asyncgate_webhook_deliveries",
                "Webhook delivery attempts, by outcome.",
                outcomes
                    .into_iter()
                    .map(|(outcome, n)| (vec![("outcome", outcome)], n)),
            )?;
        }
        counter(
            &mut encoder,
            "asyncgate_log_lines_dropped",
            "Log lines dropped because stderr could not keep up.",
            [(vec![], crate::logging::dropped_lines())],
        )?;
        let vitals = report.vitals();
        gauge(
            &mut encoder,
            "asyncgate_connections_open",
            "Client connections open on the public listener.",
            [(vec![], vitals.connections_open() as u64)],
        )?;
        let (reload_ok, reloaded_at) = vitals.last_reload();
        gauge(
            &mut encoder,
            "asyncgate_config_last_reload_successful",
            "1 if the config's last load (at start, or on SIGHUP) succeeded.",
            [(vec![], u64::from(reload_ok))],
        )?;
        gauge(
            &mut encoder,
            "asyncgate_config_last_reload_success_timestamp_seconds",
            "When the config last loaded, in seconds since the Unix epoch.",
            [(vec![], reloaded_at)],
        )?;
        gauge(
            &mut encoder,
            "asyncgate_build_info",
            "Always 1; the labels name the build.",
            [(
                vec![
                    ("version", env!("CARGO_PKG_VERSION")),
                    ("commit", env!("ASYNCGATE_COMMIT")),
                    ("features", env!("ASYNCGATE_FEATURES")),
                ],
                1,
            )],
        )?;
        if let Some(p) = process::sample() {
            process_series(&mut encoder, &p)?;
        }
        #[cfg(feature = "kafka")]
        if let Some(outcomes) = report.kafka_outcomes() {
            counter(
                &mut encoder,
                "asyncgate_kafka_deliveries",
                "Attempts to produce a job's record to Kafka, by outcome.",
                outcomes
                    .into_iter()
                    .map(|(outcome, n)| (vec![("outcome", outcome)], n)),
            )?;
        }
        Ok(())
    }
}

/// The `process_*` series with the names and units Prometheus's own
/// clients give them, so existing dashboards and alerts find them.
fn process_series(encoder: &mut DescriptorEncoder<'_>, p: &process::Process) -> std::fmt::Result {
    encoder
        .encode_descriptor(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds.",
            None,
            MetricType::Counter,
        )?
        .encode_counter::<NoLabelSet, _, u64>(&p.cpu_seconds, None)?;
    let gauges: [(&str, &str, f64); 4] = [
        (
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            p.resident_bytes as f64,
        ),
        (
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes.",
            p.virtual_bytes as f64,
        ),
        (
            "process_open_fds",
            "Number of open file descriptors.",
            p.open_fds as f64,
        ),
        (
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds.",
            p.start_time,
        ),
    ];
    let max_fds = p.max_fds.map(|n| {
        (
            "process_max_fds",
            "Maximum number of open file descriptors.",
            n as f64,
        )
    });
    for (name, help, value) in gauges.into_iter().chain(max_fds) {
        encoder
            .encode_descriptor(name, help, None, MetricType::Gauge)?
            .encode_gauge(&value)?;
    }
    Ok(())
}

/// A status code as a label value, without allocating per scrape.
fn status_label(code: u16) -> &'static str {
    static LABELS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    let labels = LABELS.get_or_init(|| (100..600).map(|c: u16| c.to_string()).collect());
    labels
        .get(usize::from(code).wrapping_sub(100))
        .map_or("unknown", String::as_str)
}
