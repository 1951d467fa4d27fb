//! The log: one line per request and per job transition. A line is
//! formatted on the worker that has the event and handed to a thread of
//! its own that writes them to stderr in batches, so a slow or full stderr
//! (a pipe to a log shipper that stalls) never holds a request. A line that
//! finds the queue full is dropped and counted, as a metric says.

use std::fmt::{self, Write as _};
use std::io::{BufWriter, IsTerminal};
use std::sync::OnceLock;

use tracing::field::{Field, Visit};
use tracing_appender::non_blocking::{ErrorCounter, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::FormatFields;

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
    let terminal = std::io::stderr().is_terminal();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(terminal);
    match format {
        // A person at a terminal gets the field names in italics.
        Format::Text if terminal => builder.init(),
        Format::Text => builder.fmt_fields(PlainFields).init(),
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

/// The text format's fields as `tracing-subscriber`'s own formatter writes
/// them with colours off (`name=value`, the message first, `log.` fields
/// left to the line's head, control characters in a message escaped), at
/// a third less: its formatter paints every name and `=` through
/// `nu_ansi_term` even with colours off, 6,200 of the 18,000 instructions
/// a request line cost (`bench/PROFILE.md`).
struct PlainFields;

impl<'w> FormatFields<'w> for PlainFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'w>, fields: R) -> fmt::Result {
        let mut visitor = PlainVisitor {
            writer,
            first: true,
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct PlainVisitor<'w> {
    writer: Writer<'w>,
    first: bool,
    result: fmt::Result,
}

impl Visit for PlainVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.record_debug(field, &format_args!("{value}"));
        } else {
            self.record_debug(field, &value);
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.record_debug(field, &format_args!("{value}"));
        if let Some(source) = value.source() {
            let name = field.name();
            let sources = std::iter::successors(Some(source), |e| e.source());
            let list = Sources(sources.map(|e| e.to_string()).collect());
            self.write(format_args!("{name}.sources={list:?}"));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        match field.name() {
            name if name.starts_with("log.") => {}
            "message" => self.write(format_args!("{:?}", Escaped(value))),
            name => {
                let name = name.strip_prefix("r#").unwrap_or(name);
                self.write(format_args!("{name}={value:?}"));
            }
        }
    }
}

impl PlainVisitor<'_> {
    fn write(&mut self, field: fmt::Arguments<'_>) {
        if self.result.is_err() {
            return;
        }
        if !self.first {
            self.result = self.writer.write_char(' ');
        }
        self.first = false;
        self.result = self.result.and_then(|()| self.writer.write_fmt(field));
    }
}

/// An error's sources, listed as `[first, second]`.
struct Sources(Vec<String>);

impl fmt::Debug for Sources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut list = f.debug_list();
        for source in &self.0 {
            list.entry(&Escaped(&format_args!("{source}")));
        }
        list.finish()
    }
}

/// A message with the control characters a terminal acts on written as
/// escapes, so a logged value cannot move the cursor or recolour a
/// terminal that shows the log (as `tracing-subscriber` escapes them).
struct Escaped<'a>(&'a dyn fmt::Debug);

impl fmt::Debug for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        struct Escaping<'a, 'b>(&'a mut fmt::Formatter<'b>);
        impl fmt::Write for Escaping<'_, '_> {
            fn write_str(&mut self, s: &str) -> fmt::Result {
                for part in s.split_inclusive(is_control) {
                    match part.char_indices().last() {
                        Some((at, c)) if is_control(c) => {
                            self.0.write_str(&part[..at])?;
                            write_escape(self.0, c)?;
                        }
                        _ => self.0.write_str(part)?,
                    }
                }
                Ok(())
            }
        }
        write!(Escaping(f), "{:?}", self.0)
    }
}

/// As `tracing-subscriber` writes them.
fn write_escape(f: &mut fmt::Formatter<'_>, c: char) -> fmt::Result {
    if c >= '\u{80}' {
        write!(f, "\\u{{{:x}}}", c as u32)
    } else {
        write!(f, "\\x{:02x}", c as u32)
    }
}

/// ESC, BEL, BS, FF, DEL and the C1 controls.
fn is_control(c: char) -> bool {
    matches!(
        c,
        '\x1b' | '\x07' | '\x08' | '\x0c' | '\x7f' | '\u{80}'..='\u{9f}'
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::fmt::format::DefaultFields;

    /// The lines `log` writes through a subscriber with `fields`.
    fn lines_of<F>(fields: F, log: &dyn Fn()) -> String
    where
        F: for<'w> FormatFields<'w> + Send + Sync + 'static,
    {
        #[derive(Clone, Default)]
        struct Buffer(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buffer {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                crate::sync::lock(&self.0).extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buffer = Buffer::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer({
                let buffer = buffer.clone();
                move || buffer.clone()
            })
            .with_ansi(false)
            .without_time()
            .fmt_fields(fields)
            .finish();
        tracing::subscriber::with_default(subscriber, log);
        let bytes = crate::sync::lock(&buffer.0).clone();
        String::from_utf8(bytes).unwrap()
    }

    /// The plain formatter's line, checked against `tracing-subscriber`'s
    /// own with colours off.
    fn same_as_tracing_subscriber(log: &dyn Fn()) -> String {
        let plain = lines_of(PlainFields, log);
        assert_eq!(plain, lines_of(DefaultFields::new(), log));
        plain
    }

    #[test]
    fn fields_are_written_as_tracing_subscriber_writes_them() {
        let peer: std::net::SocketAddr = "127.0.0.1:4242".parse().unwrap();
        let line = same_as_tracing_subscriber(&|| {
            tracing::info!(
                request_id = "abc",
                remote = %peer,
                status = 200u16,
                bytes_in = None::<u64>,
                bytes_out = Some(13u64),
                r#type = "x",
                "request"
            );
        });
        assert!(line.contains(
            "request request_id=\"abc\" remote=127.0.0.1:4242 status=200 bytes_out=13 type=\"x\""
        ));
    }

    #[test]
    fn a_message_cannot_drive_the_terminal() {
        let line = same_as_tracing_subscriber(&|| {
            tracing::warn!("bad \x1b[31mred\x07 {}", "\u{9b}2J");
        });
        assert!(line.contains("bad \\x1b[31mred\\x07 \\u{9b}2J"), "{line}");
    }

    #[test]
    fn an_error_lists_its_sources() {
        let outer = Wrapped(std::io::Error::other("disk full"));
        let line = same_as_tracing_subscriber(&|| {
            tracing::warn!(error = &outer as &dyn std::error::Error, "failed");
        });
        assert!(
            line.contains("error=wrapped error.sources=[disk full]"),
            "{line}"
        );
    }

    #[derive(Debug)]
    struct Wrapped(std::io::Error);

    impl fmt::Display for Wrapped {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("wrapped")
        }
    }

    impl std::error::Error for Wrapped {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }
}
