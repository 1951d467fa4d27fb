//! The log: one line per request and per job transition. A line is
//! formatted on the worker that has the event and handed to a thread of
//! its own that writes them to stderr in batches, so a slow or full stderr
//! (a pipe to a log shipper that stalls) never holds a request. A line that
//! finds the queue full is dropped and counted, as a metric says.

use std::io::{BufWriter, IsTerminal};
use std::sync::OnceLock;

use tracing_appender::non_blocking::{ErrorCounter, NonBlockingBuilder, WorkerGuard};

/// How many lines may wait for the writer: a few seconds of a busy
/// gateway's requests, a few tens of megabytes at worst.
const QUEUED_LINES: usize = 128 * 1024;

/// The writer thread's buffer: many lines per write(2).
const WRITE_BUFFER: usize = 64 * 1024;

/// Lines dropped because the queue was full; one log per process.
static DROPPED: OnceLock<ErrorCounter> = OnceLock::new();

/// How log lines are written.
#[derive(Debug, Clone, Copy)]
pub enum Format {
    Text,
    /// One flat JSON object per line.
    Json,
}

/// Writes out the lines still queued when dropped: keep it for the life of
/// the process.
#[must_use = "dropping it stops the log"]
pub struct Logging {
    _writer: WorkerGuard,
}

/// Starts the log; `RUST_LOG` filters it (default `info`).
pub fn init(format: Format) -> Logging {
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(QUEUED_LINES)
        .thread_name("asyncgate-log")
        .finish(BufWriter::with_capacity(WRITE_BUFFER, std::io::stderr()));
    let _ = DROPPED.set(writer.error_counter());
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        Format::Text => builder.init(),
        // The fields beside the message, not nested under `fields`, as log
        // shippers index them.
        Format::Json => builder.json().flatten_event(true).init(),
    }
    Logging { _writer: guard }
}

/// Lines dropped so far because the writer could not keep up.
pub(crate) fn dropped_lines() -> u64 {
    DROPPED.get().map_or(0, |c| c.dropped_lines() as u64)
}
