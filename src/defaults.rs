//! Every default in one place, each with the reason it has the value it has.

use std::time::Duration;

/// Loopback: exposing the gateway beyond the host is a decision the operator makes.
pub(crate) const LISTEN: &str = "127.0.0.1:8080";
/// How long `asyncgate health` waits for the admin listener: a health
/// check must fail rather than hang.
pub(crate) const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// Loopback only: health, metrics and the dashboard are for the operator.
pub(crate) const ADMIN_LISTEN: &str = "127.0.0.1:9901";

/// Underscore-prefixed so it is unlikely to collide with a legacy API's own paths.
pub(crate) const JOBS_PATH: &str = "/_jobs";

/// nginx's `client_header_timeout`: a client that cannot send its headers in
/// a minute is gone or hostile (slowloris).
pub(crate) const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(60);

/// A buffered request body beyond this goes to a temporary file: nginx
/// keeps 16 KiB in memory; bodies up to this size are the common case for
/// an API, and 10,000 connections at most hold 640 MiB of them.
pub(crate) const REQUEST_BUFFER_MEMORY: usize = 64 * 1024;

/// An upgraded connection (a WebSocket) silent both ways this long is
/// closed. nginx's `proxy_read_timeout` (60 s) cuts WebSockets that do not
/// ping; five minutes leaves room for those that ping rarely.
pub(crate) const TUNNEL_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// How long a bound job's events link works: long enough for a page to
/// open its EventSource or WebSocket (and reconnect), short enough that a
/// leaked link soon stops working.
pub(crate) const EVENTS_LINK_TTL: Duration = Duration::from_secs(15 * 60);

/// nginx's `keepalive_timeout`: an idle client connection is closed after this.
pub(crate) const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(75);

/// nginx's `client_body_timeout`: the longest silence allowed between two
/// reads of a request body.
pub(crate) const BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Envoy allows 60 KiB of headers and nginx 4 × 8 KiB; 64 KiB fits both and
/// every real browser, and stays far below hyper's own ~400 KiB.
pub(crate) const MAX_HEADER_BYTES: u64 = 64 * 1024;

/// hyper's own default; more than any legitimate client sends.
pub(crate) const MAX_HEADERS: usize = 100;

/// Keeps file descriptors well below a typical `ulimit -n` of 65536 while
/// serving far more clients than one instance should.
pub(crate) const MAX_CONNECTIONS: usize = 10_000;

/// One worker per core, like nginx's `worker_processes auto`.
pub(crate) fn workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Kubernetes' default `terminationGracePeriodSeconds`.
pub(crate) const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// None: a gateway run by hand stops at once. Behind a load balancer it
/// should be at least the time the balancer takes to see `/readyz` fail
/// (Traefik's `requestAcceptGraceTimeout`, a Kubernetes `preStop` sleep),
/// so that no connection reaches a listener already closed.
pub(crate) const SHUTDOWN_DELAY: Duration = Duration::ZERO;

/// A budget that a small container holds comfortably.
pub(crate) const STORE_MAX_BYTES: u64 = 512 * 1024 * 1024;

/// Where the disk store keeps its database and result files: beside the
/// working directory, as the sketch in the config example has it.
pub(crate) const STORE_PATH: &str = "data";

/// The disk store's memory cache of recent results. Polls of a result just
/// finished are the common case and should not touch the disk; 64 MiB holds
/// a thousand 64 KiB results.
pub(crate) const CACHE_BYTES: u64 = 64 * 1024 * 1024;

/// How many queued and running jobs' records the disk store's writer keeps
/// decoded, so that starting and finishing them neither reads nor decodes
/// (past it, a record is read back from the database, as before). 65,536
/// records of a few hundred bytes each bound what a deep backlog takes
/// here.
pub(crate) const ACTIVE_RECORDS: usize = 65_536;

/// Results larger than this go to files of their own and are streamed when
/// fetched, never read whole into memory; smaller ones sit in the database,
/// where a lookup reads them in one go.
pub(crate) const FILE_THRESHOLD: u64 = 64 * 1024;

/// Memory for finished jobs' documents kept as written: some 20,000 of
/// them, the ones being polled.
pub(crate) const DOCUMENT_CACHE_BYTES: u64 = 8 * 1024 * 1024;

/// Memory for the memory store's recently read finished jobs, decoded:
/// some 20,000 of them. A miss costs decoding the job's record (five small
/// allocations), not a result.
pub(crate) const HOT_JOBS_BYTES: u64 = 8 * 1024 * 1024;

/// Long enough for a client that polls lazily to fetch its result.
pub(crate) const RESULT_TTL: Duration = Duration::from_secs(60 * 60);

/// A day of `410 Gone` lets a client that returns tomorrow learn its job
/// expired rather than never existed.
pub(crate) const TOMBSTONE_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// nginx's `proxy_read_timeout`: time to the response head, and the longest
/// silence while a passthrough response streams.
pub(crate) const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(60);

/// Async routes exist for slow work: a whole job may take this long.
pub(crate) const JOB_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// Envoy's default: a backend that takes longer to accept is down.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// hyper's default pool idle timeout, below most servers' keep-alive
/// (nginx 75 s) so the gateway closes first and never races a server close.
pub(crate) const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Slow legacy backends usually run a small worker pool.
pub(crate) const MAX_CONCURRENCY: usize = 8;

/// Bounded so a flood becomes `503` early instead of a queue no one lives to see.
pub(crate) const MAX_QUEUE: usize = 1_000;

/// Retry waits start here and double (Envoy's retry back-off base is 25 ms;
/// a job is slow by nature, and a backend that failed deserves a breath).
pub(crate) const RETRY_BACKOFF: Duration = Duration::from_secs(1);

/// The longest wait between two tries of a job, and the most a backend's
/// `Retry-After` is honoured for.
pub(crate) const RETRY_BACKOFF_MAX: Duration = Duration::from_secs(60);

/// Large enough for batch imports; nginx's 1 MiB is too small for them.
pub(crate) const MAX_BODY: u64 = 10 * 1024 * 1024;

/// A result is held in memory: one job must not be able to take the budget.
pub(crate) const MAX_RESULT: u64 = 64 * 1024 * 1024;

/// `auto` routes: long enough for a usually-fast call to answer directly,
/// far below the 60 s after which load balancers and clients commonly give up.
pub(crate) const SYNC_WAIT: Duration = Duration::from_secs(10);

/// `auto` routes: the longest `Prefer: wait` honoured, still below those 60 s.
pub(crate) const MAX_WAIT: Duration = Duration::from_secs(30);

/// The longest `GET …?wait=N` long-poll: a held request must stay below the
/// 60 s idle timeout of common load balancers and proxies.
pub(crate) const LONG_POLL_MAX: Duration = Duration::from_secs(30);

/// How often an idle Server-Sent Events stream sends a comment line, well
/// inside the 60 s after which proxies and load balancers drop idle streams.
pub(crate) const SSE_HEARTBEAT: Duration = Duration::from_secs(15);

/// RFC 9110 `Retry-After` is in whole seconds and 1 is its smallest useful value.
pub(crate) const RETRY_AFTER_MIN: Duration = Duration::from_secs(1);

/// Polling less often than once a minute makes finished results wait too long.
pub(crate) const RETRY_AFTER_MAX: Duration = Duration::from_secs(60);

/// What one job's bookkeeping costs besides its bodies, charged to the store
/// budget so a million tiny jobs count too. Measured in the memory store
/// with bench/: about 600 bytes while queued; once finished about 380 in
/// use, 400-570 of resident memory with the allocator's holes
/// (`MODE=memory bench/ab.sh`). Rounded up, so the budget errs on the safe
/// side.
pub(crate) const JOB_RECORD_BYTES: u64 = 1024;

/// How long the accept loop pauses when the process is out of file
/// descriptors: long enough for connections to close, short enough to resume
/// quickly.
pub(crate) const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);

/// How often expired results are swept so their bytes return to the budget
/// even when the store is otherwise idle.
pub(crate) const STORE_SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// How often the jobs waiting in this process's lanes are looked at for
/// one past its route's `start_timeout`: a second late at most, and a scan
/// of the waiting jobs once a second, only while a route has one.
pub(crate) const START_TIMEOUT_SWEEP: Duration = Duration::from_secs(1);

/// After the drain deadline, how long leftover jobs get to record that they failed.
pub(crate) const ABORT_GRACE: Duration = Duration::from_secs(5);

/// What a tombstone or an idempotency claim is charged to the budget,
/// because both outlive the job's result. A claim is a moka entry (~370
/// bytes, measured) and the small value it holds; a memory store tombstone
/// costs about half of this, and one charge serves both.
pub(crate) const TOMBSTONE_BYTES: u64 = 448;

/// A webhook receiver should answer at once and do its work later, as the
/// Standard Webhooks spec asks; ten seconds is generous for that.
pub(crate) const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);

/// Standard Webhooks' suggested schedule: eight attempts over about 27
/// hours, so a receiver down for a day's outage still gets its deliveries.
pub(crate) const WEBHOOK_RETRY_SCHEDULE: [Duration; 7] = [
    Duration::from_secs(5),
    Duration::from_secs(5 * 60),
    Duration::from_secs(30 * 60),
    Duration::from_secs(2 * 3600),
    Duration::from_secs(5 * 3600),
    Duration::from_secs(10 * 3600),
    Duration::from_secs(10 * 3600),
];

/// Connections to a webhook receiver are kept this long for the next job's
/// webhook; receivers rarely keep idle connections much longer.
pub(crate) const WEBHOOK_POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// A replica that stops renewing its lease for this long loses its running
/// jobs to the others: long enough to ride out a GC-free process's worst
/// pause or a Redis failover, short enough that a crash costs little.
pub(crate) const LEASE: Duration = Duration::from_secs(30);

pub(crate) const REDIS_KEY_PREFIX: &str = "asyncgate";

/// How long a Redis command may take before the store counts as out of
/// reach: far above Redis's sub-millisecond answers, far below a client's
/// patience.
pub(crate) const REDIS_RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

/// A shared store out of reach when a job ends: how often, and how many
/// times, recording its outcome is tried again. Together about the default
/// lease, after which another replica may have the job anyway.
pub(crate) const RECORD_RETRY_INTERVAL: Duration = Duration::from_secs(1);
pub(crate) const RECORD_RETRIES: u32 = 30;

/// Producer settings the gateway decides: every replica of a record
/// acknowledged, no duplicates from the producer's own retries.
pub(crate) const KAFKA_FIXED: [&str; 4] = [
    "bootstrap.servers",
    "acks",
    "enable.idempotence",
    "metadata.broker.list",
];

/// The most of a result a webhook carries inline (`webhook_result =
/// "inline"`): enough for an answer, not a file; larger ones are linked.
pub(crate) const WEBHOOK_RESULT_MAX: u64 = 64 * 1024;

/// The advisor suggests making a passthrough path async once its p99 is
/// past this: longer than people wait without a progress bar, and near the
/// first timeouts of common clients and proxies.
pub(crate) const ADVISE_OVER: Duration = Duration::from_secs(5);
