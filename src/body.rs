//! Body plumbing shared by the proxy and the jobs: the one body type the
//! gateway answers with, an idle timeout for streams, and bounded buffering.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use futures_util::StreamExt;
use http_body::{Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use tokio::io::AsyncReadExt;
use tokio::time::{Instant, Sleep};

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body of every response the gateway sends and every request it forwards.
pub(crate) type Body = UnsyncBoxBody<Bytes, BoxError>;

pub(crate) fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A stored response's body as a lookup hands it out: in memory, or in a
/// file of its own, opened when looked up so that it stays readable even if
/// the result is deleted meanwhile.
#[derive(Debug)]
pub(crate) enum ReplayBody {
    Bytes(Bytes),
    /// The file and the body's length in it.
    File(std::fs::File, u64),
}

/// A stored response's body: from memory, or streamed from its file in
/// chunks, never read whole.
pub(crate) fn replay(body: ReplayBody) -> Body {
    match body {
        ReplayBody::Bytes(bytes) => full(bytes),
        ReplayBody::File(file, len) => {
            let file = tokio::fs::File::from_std(file);
            let chunks = tokio_util::io::ReaderStream::with_capacity(file.take(len), REPLAY_CHUNK);
            StreamBody::new(chunks.map(|chunk| chunk.map(Frame::data).map_err(BoxError::from)))
                .boxed_unsync()
        }
    }
}

/// Read size when a stored body is streamed from its file.
const REPLAY_CHUNK: usize = 64 * 1024;

pub(crate) fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

/// Why reading a body stopped short.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BodyError {
    #[error("no body data arrived for {0:?}")]
    Idle(Duration),
    #[error("the body is over the {limit}-byte limit")]
    TooLarge { limit: u64 },
    #[error("reading the body failed")]
    Read(#[source] BoxError),
    #[error("the body could not be kept in a temporary file")]
    Spill(#[source] std::io::Error),
}

impl BodyError {
    /// Finds a `BodyError` in an error chain, e.g. inside a hyper client error
    /// caused by the body the client was streaming.
    pub(crate) fn find_in<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a BodyError> {
        crate::error_chain::find(err)
    }
}

pin_project_lite::pin_project! {
    /// Fails with [`BodyError::Idle`] when no frame arrives within `timeout`,
    /// like nginx's `client_body_timeout`: a slow body is fine, a stalled one is not.
    ///
    /// The timer is armed only once the inner body has to wait: most bodies
    /// are small and already buffered, and never touch the timer wheel.
    pub(crate) struct IdleTimeout<B> {
        #[pin]
        inner: B,
        #[pin]
        sleep: Option<Sleep>,
        timeout: Duration,
        // The most data bytes it may still carry, and the limit they count down from.
        allowance: Option<(u64, u64)>,
    }
}

impl<B> IdleTimeout<B> {
    pub(crate) fn new(inner: B, timeout: Duration) -> Self {
        IdleTimeout {
            inner,
            sleep: None,
            timeout,
            allowance: None,
        }
    }

    /// Fails with [`BodyError::TooLarge`] once more than `limit` bytes came.
    pub(crate) fn with_limit(mut self, limit: u64) -> Self {
        self.allowance = Some((limit, limit));
        self
    }
}

impl<B> http_body::Body for IdleTimeout<B>
where
    B: http_body::Body,
    B::Error: Into<BoxError>,
{
    type Data = B::Data;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        match this.inner.poll_frame(cx) {
            Poll::Ready(frame) => {
                if let Some(sleep) = this.sleep.as_pin_mut() {
                    sleep.reset(Instant::now() + *this.timeout);
                }
                if let (Some(Ok(frame)), Some((left, limit))) = (&frame, this.allowance.as_mut()) {
                    let n = frame.data_ref().map_or(0, |d| d.remaining() as u64);
                    match left.checked_sub(n) {
                        Some(rest) => *left = rest,
                        None => {
                            let limit = *limit;
                            return Poll::Ready(Some(Err(BodyError::TooLarge { limit }.into())));
                        }
                    }
                }
                Poll::Ready(frame.map(|r| r.map_err(|e| BodyError::Read(e.into()).into())))
            }
            Poll::Pending => {
                if this.sleep.is_none() {
                    this.sleep.set(Some(tokio::time::sleep(*this.timeout)));
                }
                let sleep = this.sleep.as_pin_mut().expect("armed just above");
                ready!(sleep.poll(cx));
                Poll::Ready(Some(Err(BodyError::Idle(*this.timeout).into())))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Reads a whole body into memory, refusing it once it passes `limit` bytes
/// and calling `on_data` with the running total so callers can report progress.
///
/// The result owns exactly its bytes: frames from hyper are slices of the
/// connection's read buffer, and keeping one would pin the whole buffer
/// (8 KiB or more) for as long as the body is stored.
/// Receives a whole request body before anything is sent on (nginx's
/// `proxy_request_buffering`): up to `in_memory` bytes in memory, beyond
/// that in an unlinked temporary file under `spill_dir`, refused past
/// `limit` bytes. The file is gone from the directory at once and from the
/// disk when the body has been sent.
///
/// The file is written and read back with plain blocking calls, as nginx
/// does: they go to and come from the page cache (the bytes were written a
/// moment before), where a hop to tokio's blocking pool per chunk cost
/// several times more than the copy itself.
pub(crate) async fn buffer<B>(
    body: B,
    limit: u64,
    in_memory: usize,
    spill_dir: &std::path::Path,
) -> Result<Buffered, BodyError>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    use std::io::Write;
    let mut body = std::pin::pin!(body);
    let mut held = Vec::new();
    let mut spilled: Option<(std::fs::File, u64)> = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(known)?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let total = held.len() as u64 + spilled.as_ref().map_or(0, |s| s.1) + data.len() as u64;
        if total > limit {
            return Err(BodyError::TooLarge { limit });
        }
        match &mut spilled {
            Some((file, written)) => {
                file.write_all(&data).map_err(BodyError::Spill)?;
                *written += data.len() as u64;
            }
            None if held.len() + data.len() <= in_memory => held.extend_from_slice(&data),
            None => {
                let mut file = unlinked(spill_dir).map_err(BodyError::Spill)?;
                file.write_all(&held).map_err(BodyError::Spill)?;
                file.write_all(&data).map_err(BodyError::Spill)?;
                spilled = Some((file, total));
                held = Vec::new();
            }
        }
    }
    match spilled {
        None => Ok(Buffered::Bytes(Bytes::from(held))),
        Some((mut file, len)) => {
            use std::io::Seek;
            file.rewind().map_err(BodyError::Spill)?;
            Ok(Buffered::File(file, len))
        }
    }
}

/// A request body received whole: in memory, or in an unlinked file.
#[derive(Debug)]
pub(crate) enum Buffered {
    Bytes(Bytes),
    /// The file, at its start, and the body's length.
    File(std::fs::File, u64),
}

impl Buffered {
    pub(crate) fn len(&self) -> u64 {
        match self {
            Buffered::Bytes(bytes) => bytes.len() as u64,
            Buffered::File(_, len) => *len,
        }
    }

    pub(crate) fn into_body(self) -> Body {
        match self {
            Buffered::Bytes(bytes) => full(bytes),
            Buffered::File(file, left) => SpilledBody { file, left }.boxed_unsync(),
        }
    }
}

/// A spilled request body, read back in chunks as hyper sends it.
struct SpilledBody {
    file: std::fs::File,
    left: u64,
}

impl http_body::Body for SpilledBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        use std::io::Read;
        if self.left == 0 {
            return Poll::Ready(None);
        }
        let mut chunk = vec![0; REPLAY_CHUNK.min(usize::try_from(self.left).unwrap_or(usize::MAX))];
        if let Err(e) = self.file.read_exact(&mut chunk) {
            return Poll::Ready(Some(Err(BodyError::Spill(e).into())));
        }
        self.left -= chunk.len() as u64;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(chunk)))))
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left)
    }
}

/// A new file in `dir`, already removed from it: only this handle reaches it.
fn unlinked(dir: &std::path::Path) -> std::io::Result<std::fs::File> {
    let path = dir.join(format!(".asyncgate-body-{}", uuid::Uuid::new_v4()));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)?;
    std::fs::remove_file(&path)?;
    Ok(file)
}

/// A body's error as a [`BodyError`], whichever layer raised it.
fn known(e: impl Into<BoxError>) -> BodyError {
    let e: BoxError = e.into();
    match e.downcast::<BodyError>() {
        Ok(known) => *known,
        Err(other) => BodyError::Read(other),
    }
}

pub(crate) async fn collect_limited<B>(
    body: B,
    limit: u64,
    mut on_data: impl FnMut(u64),
) -> Result<Bytes, BodyError>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let mut body = std::pin::pin!(body);
    let expected = body.size_hint().exact().unwrap_or(0).min(limit);
    let mut buf = Vec::with_capacity(usize::try_from(expected).unwrap_or(0));
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(known)?;
        if let Ok(data) = frame.into_data() {
            if buf.len() as u64 + data.len() as u64 > limit {
                return Err(BodyError::TooLarge { limit });
            }
            buf.extend_from_slice(&data);
            on_data(buf.len() as u64);
        }
    }
    buf.shrink_to_fit();
    Ok(Bytes::from(buf))
}
