//! One case per rule: the text refused, the line and key named, and why.

use std::path::Path;
use std::time::Duration;

use crate::config::Config;

pub(super) const UPSTREAM: &str = "[upstreams.u]\nurl = \"http://127.0.0.1:1\"\n";
const SECRET: &str = "[webhooks]\nsecret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\n";

pub(super) fn parse(text: &str) -> Result<Config, String> {
    Config::parse(text, Path::new("t.toml")).map_err(|e| e.to_string())
}

/// `text` is refused at `t.toml:{at}` (line and key) with `why` in the message.
#[track_caller]
pub(super) fn refused(text: &str, at: &str, why: &str) {
    let Err(e) = parse(text) else {
        panic!("accepted:\n{text}")
    };
    assert!(
        e.starts_with(&format!("t.toml:{at}: ")),
        "want {at} in: {e}"
    );
    assert!(e.contains(why), "want `{why}` in: {e}");
}

/// A route `a` on `/x` to upstream `u`, with more keys.
pub(super) fn route(extra: &str) -> String {
    format!("{UPSTREAM}[[routes]]\nname = \"a\"\npath = \"/x\"\nupstream = \"u\"\n{extra}")
}

#[test]
fn the_shipped_example_and_an_empty_file_are_valid() {
    parse(include_str!("../../../config/asyncgate.toml")).unwrap();
    let empty = parse("").unwrap();
    assert_eq!(empty.listen().to_string(), crate::defaults::LISTEN);
}

#[test]
fn toml_errors_and_unknown_keys_name_their_line() {
    refused("[server\n", "1: server", "table header");
    refused(
        "[server]\nlistn = \"127.0.0.1:1\"\n",
        "2: server.listn",
        "unknown field",
    );
}

#[test]
fn server_keys() {
    refused(
        "[server]\nlisten = \"nope\"\n",
        "2: server.listen",
        "not an IP address",
    );
    for bad in ["\"/\"", "\"_jobs\"", "\"/jobs/\"", "\"/{id}\""] {
        refused(
            &format!("[server]\njobs_path = {bad}\n"),
            "2: server.jobs_path",
            "plain path",
        );
    }
    refused(
        "[server]\npublic_base_url = \"ftp://x\"\n",
        "2: server.public_base_url",
        "absolute http(s) URL",
    );
    refused(
        "[server]\npublic_base_url = \"https://x/?q=1\"\n",
        "2: server.public_base_url",
        "no query",
    );
    refused(
        "[server]\nmax_header_bytes = \"4KiB\"\n",
        "2: server.max_header_bytes",
        "at least 8KiB",
    );
    refused("[server]\nworkers = 0\n", "2: server.workers", "at least 1");
    refused(
        "[server]\ndrain_timeout = \"0s\"\n",
        "2: server.drain_timeout",
        "longer than zero",
    );
}

#[test]
fn admin_keys() {
    let default = parse("").unwrap();
    assert_eq!(
        default.admin_listen().map(|a| a.to_string()).as_deref(),
        Some(crate::defaults::ADMIN_LISTEN)
    );
    let off = parse("[admin]\nenabled = false\n").unwrap();
    assert_eq!(off.admin_listen(), None);
    refused(
        "[admin]\nlisten = \"9901\"\n",
        "2: admin.listen",
        "not an IP address",
    );
    refused(
        "[server]\nlisten = \"127.0.0.1:8080\"\n[admin]\nlisten = \"127.0.0.1:8080\"\n",
        "4: admin.listen",
        "never shares the public port",
    );
    refused(
        "[server]\nlisten = \"0.0.0.0:8080\"\n[admin]\nlisten = \"127.0.0.1:8080\"\n",
        "4: admin.listen",
        "never shares the public port",
    );
    parse("[server]\nlisten = \"127.0.0.1:8080\"\n[admin]\nlisten = \"127.0.0.2:8080\"\n").unwrap();
    let guarded = parse("[admin]\ntoken = \"sixteen-chars-ok\"\n").unwrap();
    assert!(guarded.admin_token.unwrap().admits(b"sixteen-chars-ok"));
    refused(
        "[admin]\ntoken = \"short\"\n",
        "2: admin.token",
        "at least 16",
    );
    refused(
        "[admin]\ntoken = \"sixteen-chars-ok\"\ntoken_file = \"/x\"\n",
        "3: admin.token_file",
        "not both",
    );
    refused(
        "[admin]\ntoken_file = \"/nonexistent/asyncgate-token\"\n",
        "2: admin.token_file",
        "cannot read `/nonexistent/asyncgate-token`",
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, "from-a-file-of-length\nignored\n").unwrap();
    let from_file = parse(&format!("[admin]\ntoken_file = \"{}\"\n", file.display())).unwrap();
    assert!(from_file
        .admin_token
        .unwrap()
        .admits(b"from-a-file-of-length"));
}

#[test]
fn sizes_and_durations() {
    refused(
        "[store]\nmax_bytes = \"lots\"\n",
        "2: store.max_bytes",
        "not a size",
    );
    refused(
        "[store]\nmax_bytes = \"0B\"\n",
        "2: store.max_bytes",
        "larger than zero",
    );
    refused(
        &format!("{UPSTREAM}timeout = \"soon\"\n"),
        "3: upstreams.u.timeout",
        "not a duration",
    );
}

#[test]
fn store_keys() {
    refused(
        "[store]\nkind = \"redis\"\nurl = \"redis://127.0.0.1:notaport/0\"\n",
        "3: store.url",
        "not a Redis URL",
    );
    refused(
        "[store]\nkind = \"redis\"\n",
        "2: store.kind",
        "needs `url`",
    );
    refused(
        "[store]\nurl = \"redis://127.0.0.1:6379/0\"\n",
        "2: store.url",
        "kind = \"redis\"",
    );
    let redis = "[store]\nkind = \"redis\"\nurl = \"redis://127.0.0.1:6379/0\"\n";
    refused(
        &format!("{redis}key_prefix = \"a b\"\n"),
        "4: store.key_prefix",
        "letters",
    );
    refused(
        &format!("{redis}lease = \"500ms\"\n"),
        "4: store.lease",
        "at least 1s",
    );
    refused(
        "[store]\nkind = \"redis\"\nurl = \"redis://127.0.0.1:7000,redis://127.0.0.1:7001\"\n",
        "3: store.url",
        "cluster = true",
    );
    refused(
        "[store]\nkind = \"redis\"\ncluster = true\nurl = \"redis://127.0.0.1:7000, 10.0.0.1\"\n",
        "4: store.url",
        "`10.0.0.1` is not a Redis URL like redis://10.0.0.1:6379,redis://10.0.0.2:6379",
    );
    refused(
        "[store]\nkind = \"disk\"\ncluster = true\n",
        "3: store.cluster",
        "is for kind = \"redis\"",
    );
    refused(
        "[store]\nkind = \"tape\"\n",
        "2: store.kind",
        "unknown variant",
    );
    refused(
        "[store]\nkind = \"memory\"\npath = \"data\"\n",
        "3: store.path",
        "is for kind = \"disk\"",
    );
    refused(
        "[store]\npath = \"Cargo.toml/data\"\n",
        "2: store.path",
        "is not a directory",
    );
    refused(
        "[store]\ncache_bytes = \"0B\"\n",
        "2: store.cache_bytes",
        "larger than zero",
    );
}

#[test]
fn upstream_urls() {
    refused(
        "[upstreams.u]\nurl = \"ftp://x\"\n",
        "2: upstreams.u.url",
        "http://",
    );
    refused(
        "[upstreams.u]\nurl = \"http://\"\n",
        "2: upstreams.u.url",
        "not a URL",
    );
    refused(
        "[upstreams.u]\nurl = \"http://x/?q\"\n",
        "2: upstreams.u.url",
        "must not have a query",
    );
    parse("[store]\nkind = \"memory\"\n[upstreams.u]\nurl = \"https://x\"\n").unwrap();
    refused(
        "[upstreams.u]\nurl = \"https://x\"\nca_file = \"/nonexistent.pem\"\n",
        "3: upstreams.u.ca_file",
        "/nonexistent.pem",
    );
    refused(
        "[server]\ntls_cert = \"/nonexistent.pem\"\n",
        "2: server.tls_cert",
        "needs tls_key",
    );
    refused(
        "[server]\ntls_cert = \"/nonexistent.pem\"\ntls_key = \"/k.pem\"\n",
        "2: server.tls_cert",
        "/nonexistent.pem",
    );
    refused(
        &format!("{UPSTREAM}max_concurrency = 0\n"),
        "3: upstreams.u.max_concurrency",
        "at least 1",
    );
}

#[test]
fn retries() {
    refused(
        &format!("{UPSTREAM}retry_backoff = \"10s\"\nretry_backoff_max = \"1s\"\n"),
        "4: upstreams.u.retry_backoff_max",
        "must not be below retry_backoff",
    );
    refused(
        &format!("[store]\nkind = \"redis\"\nurl = \"redis://127.0.0.1:6379/0\"\n{UPSTREAM}retries = 1\n"),
        "6: upstreams.u.retries",
        "the Redis store does not retry",
    );
    parse(&format!(
        "{UPSTREAM}retries = 3\nretry_backoff = \"100ms\"\n"
    ))
    .unwrap();
}

#[test]
fn route_names_paths_and_upstreams() {
    refused(
        "[[routes]]\nname = \"r\"\npath = \"/x\"\nupstream = \"ghost\"\n",
        "4: routes[0].upstream",
        "no upstream named `ghost`",
    );
    refused(
        &format!(
            "{}[[routes]]\nname = \"a\"\npath = \"/y\"\nupstream = \"u\"\n",
            route("")
        ),
        "8: routes[1].name",
        "used twice",
    );
    refused(
        &route("").replace("name = \"a\"", "name = \"a b\""),
        "4: routes[0].name",
        "letters",
    );
    refused(
        &route("").replace("\"/x\"", "\"x\""),
        "5: routes[0].path",
        "start with /",
    );
    refused(
        &route("").replace("\"/x\"", "\"/_jobs/x\""),
        "5: routes[0].path",
        "under the jobs path",
    );
    refused(
        &route("mode = \"sometimes\"\n"),
        "7: routes[0].mode",
        "unknown variant",
    );
    refused(
        "[default]\nupstream = \"ghost\"\n",
        "2: default.upstream",
        "no upstream named `ghost`",
    );
}

#[test]
fn overlapping_routes_are_refused_at_the_second() {
    let second = |path: &str, methods: &str| {
        format!(
            "{}[[routes]]\nname = \"b\"\npath = \"{path}\"\nupstream = \"u\"\n{methods}",
            route("").replace("\"/x\"", "\"/x/{id}\"")
        )
    };
    refused(
        &second("/x/{other}", ""),
        "9: routes[1].path",
        "overlaps route `a`",
    );
    refused(
        &second("/x/{id}", ""),
        "9: routes[1].path",
        "overlaps route `a`",
    );
    // Same path, methods apart: both stand.
    let apart = format!(
        "{UPSTREAM}[[routes]]\nname = \"a\"\npath = \"/x\"\nupstream = \"u\"\nmethods = [\"GET\"]\n\
         [[routes]]\nname = \"b\"\npath = \"/x\"\nupstream = \"u\"\nmethods = [\"POST\"]\n"
    );
    parse(&apart).unwrap();
}

#[test]
fn route_methods() {
    refused(
        &route("methods = []\n"),
        "7: routes[0].methods",
        "lists no method",
    );
    refused(
        &route("methods = [\"post\"]\n"),
        "7: routes[0].methods",
        "upper case",
    );
}

#[test]
fn route_timing_bounds() {
    refused(
        &route("retry_after_min = \"500ms\"\n"),
        "7: routes[0].retry_after_min",
        "at least 1s",
    );
    refused(
        &route("retry_after_min = \"10s\"\nretry_after_max = \"5s\"\n"),
        "8: routes[0].retry_after_max",
        "must not be below retry_after_min",
    );
    refused(
        &route("sync_wait = \"20s\"\nmax_wait = \"10s\"\n"),
        "8: routes[0].max_wait",
        "must not be below sync_wait",
    );
    refused(
        &route("max_queued_per_caller = 0\n"),
        "7: routes[0].max_queued_per_caller",
        "at least 1",
    );
    refused(
        &route("start_timeout = \"0s\"\n"),
        "7: routes[0].start_timeout",
        "longer than zero",
    );
    refused(
        &route("webhook_result = \"inline\"\n"),
        "7: routes[0].webhook_result",
        "needs [server] public_base_url",
    );
    refused(
        &route("webhook_result = \"all\"\n"),
        "7: routes[0].webhook_result",
        "unknown variant",
    );
    refused(
        &route("priority = 8\n"),
        "7: routes[0].priority",
        "from 0 (most urgent) to 7",
    );
    refused(
        &route("bind_headers = [\"bad header\"]\n"),
        "7: routes[0].bind_headers",
        "not a header name",
    );
}

#[test]
fn callbacks_need_a_secret_a_job_and_a_public_address() {
    refused(
        &route("callback_hosts = [\"hooks.example.com\"]\n"),
        "7: routes[0].callback_hosts",
        "set `secret` under [webhooks]",
    );
    refused(
        &format!("{SECRET}{}", route("callback_hosts = [\"not a host\"]\n")),
        "9: routes[0].callback_hosts",
        "not a host name",
    );
    refused(
        &format!(
            "{SECRET}{}",
            route("callback_url = \"http://169.254.169.254/latest\"\n")
        ),
        "9: routes[0].callback_url",
        "169.254.169.254",
    );
    refused(
        &format!(
            "{SECRET}{}",
            route("mode = \"passthrough\"\ncallback_url = \"https://hooks.example.com/\"\n")
        ),
        "10: routes[0].callback_url",
        "passthrough route",
    );
}

#[test]
fn webhook_keys() {
    refused(
        "[webhooks]\nsecret = \"hunter2\"\n",
        "2: webhooks.secret",
        "whsec_",
    );
    refused(
        "[webhooks]\nallow_networks = [\"10.0.0.0/33\"]\n",
        "2: webhooks.allow_networks",
        "not a network",
    );
    refused(
        "[webhooks]\nretry_schedule = [\"5s\", \"soon\"]\n",
        "2: webhooks.retry_schedule",
        "not a duration",
    );
}

#[cfg(feature = "tls")]
#[test]
fn a_ca_file_must_hold_certificates() {
    refused(
        "[webhooks]\nca_file = \"/nonexistent.pem\"\n",
        "2: webhooks.ca_file",
        "/nonexistent.pem",
    );
    let empty = std::env::temp_dir().join(format!("asyncgate-empty-{}.pem", std::process::id()));
    std::fs::write(&empty, "no certificates here\n").unwrap();
    let text = format!("[webhooks]\nca_file = \"{}\"\n", empty.display());
    refused(&text, "2: webhooks.ca_file", "holds no PEM certificate");
    std::fs::remove_file(empty).unwrap();
}

#[test]
fn webhook_secrets_are_one_or_a_list_and_a_route_may_bring_its_own() {
    let own = "callback_hosts = [\"hooks.example.com\"]\nwebhook_secret = [\"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\", \"whsec_dGVuYW50LW9sZC1zZWNyZXQtb2YtMzItYnl0ZXMhIQ==\"]\n";
    let config = parse(&format!("[store]\nkind = \"memory\"\n{}", route(own))).unwrap();
    assert_eq!(config.routes[0].webhook_secrets.as_ref().unwrap().len(), 2);
    refused(
        &route("callback_hosts = [\"hooks.example.com\"]\n"),
        "7: routes[0].callback_hosts",
        "webhook_secret",
    );
    refused(
        &route("webhook_secret = []\n"),
        "7: routes[0].webhook_secret",
        "at least one",
    );
    refused(
        &route("webhook_secret = \"not-a-secret\"\n"),
        "7: routes[0].webhook_secret",
        "whsec_",
    );
    refused(
        &format!("[webhooks]\nsecret = [\"whsec_short\"]\n{}", route("")),
        "2: webhooks.secret",
        "",
    );
}

#[cfg(feature = "kafka")]
#[test]
fn kafka_settings_are_checked_before_anything_starts() {
    const KAFKA: &str = "[kafka]\nbrokers = [\"127.0.0.1:9092\"]\n";
    let topic = |extra: &str| format!("{KAFKA}{}", route(extra));
    assert!(parse(&topic("kafka_topic = \"jobs.done\"")).is_ok());
    // TLS and SCRAM are built in: librdkafka refuses these settings when
    // it was built without OpenSSL.
    let secured = format!(
        "{KAFKA}[kafka.properties]\n\"security.protocol\" = \"SASL_SSL\"\n\
         \"sasl.mechanism\" = \"SCRAM-SHA-512\"\n\"sasl.username\" = \"gateway\"\n\
         \"sasl.password\" = \"secret\"\n"
    );
    if let Err(e) = parse(&secured) {
        panic!("SASL_SSL with SCRAM refused: {e}");
    }
    refused("[kafka]\n", "1: kafka", "needs `brokers`");
    refused(
        "[kafka]\nbrokers = [\"kafka\"]\n",
        "2: kafka.brokers",
        "not a host:port",
    );
    refused(
        &format!("{KAFKA}[kafka.properties]\nacks = \"1\"\n"),
        "4: kafka.properties.acks",
        "set by the gateway",
    );
    refused(
        &format!("{KAFKA}[kafka.properties]\n\"no.such.setting\" = \"1\"\n"),
        "1: kafka",
        "no.such.setting",
    );
    refused(
        &route("kafka_topic = \"jobs\""),
        "7: routes[0].kafka_topic",
        "needs [kafka] brokers",
    );
    refused(
        &topic("mode = \"auto\"\nkafka_topic = \"jobs\""),
        "10: routes[0].kafka_topic",
        "needs mode = \"async\"",
    );
    refused(
        &topic("kafka_topic = \"jobs done\""),
        "9: routes[0].kafka_topic",
        "not a Kafka topic name",
    );
}

#[cfg(not(feature = "kafka"))]
#[test]
fn kafka_is_refused_by_a_build_without_it() {
    refused(
        "[kafka]\nbrokers = [\"127.0.0.1:9092\"]\n",
        "1: kafka",
        "built without Kafka",
    );
}

#[test]
fn a_rate_is_a_count_per_second_minute_or_hour_with_a_burst() {
    let rate = |extra: &str| parse(&format!("{UPSTREAM}{extra}")).map(|c| c.upstreams[0].rate);
    let twenty = rate("rate = \"20/s\"\n").unwrap().unwrap();
    assert_eq!((twenty.count, twenty.burst), (20, 20), "a second's worth");
    assert_eq!(twenty.interval(), Duration::from_millis(50));
    assert_eq!(twenty.to_string(), "20/s");
    let slow = rate("rate = \"30/m\"\n").unwrap().unwrap();
    assert_eq!(
        (slow.burst, slow.interval()),
        (1, Duration::from_secs(2)),
        "at least 1"
    );
    let hourly = rate("rate = \"500/h\"\nburst = 10\n").unwrap().unwrap();
    assert_eq!((hourly.burst, hourly.to_string().as_str()), (10, "500/h"));
    assert_eq!(rate("").unwrap(), None);
    for bad in ["20", "0/s", "20/d", "-1/s", "x/s"] {
        refused(
            &format!("{UPSTREAM}rate = \"{bad}\"\n"),
            "3: upstreams.u.rate",
            "not a rate like 20/s",
        );
    }
    refused(
        &format!("{UPSTREAM}rate = \"5/s\"\nburst = 0\n"),
        "4: upstreams.u.burst",
        "at least 1",
    );
    refused(
        &format!("{UPSTREAM}burst = 3\n"),
        "3: upstreams.u.burst",
        "needs a `rate`",
    );
}
