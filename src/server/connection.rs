//! One client connection's life: served by hyper, closed when it idles past
//! `keepalive_timeout` or dawdles over a request head past
//! `header_read_timeout`, and shut down gracefully when the drain begins.
//!
//! hyper's own header-read timer also runs while a kept-alive connection
//! waits for its next request, so it cannot tell the two timeouts apart
//! (and HTTP/2 has no idle timeout at all): the connection's reads and its
//! requests are watched here instead.
//!
//! Its service, `AppService`, is the app as this connection's peer sees it,
//! each response's end reported back to the connection's activity.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::body::{Body, BoxError};
use crate::headers::Peer;
use crate::tunnel::Handover;

/// A client connection as hyper serves it.
pub(crate) type Connection = auto::UpgradeableConnection<
    'static,
    TokioIo<Watched<ClientStream>>,
    TowerToHyperService<AppService>,
    TokioExecutor,
>;

/// How long a connection may wait for what.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeouts {
    /// For a request head, from its first byte (or from the connection's
    /// start, for the first request).
    pub(crate) header_read: Duration,
    /// Between a response's end and the next request's first byte.
    pub(crate) keepalive: Duration,
}

impl Timeouts {
    /// How often a busy connection's watcher looks again: ending a request
    /// wakes nothing (it would cost every request a wake-up), so an idle
    /// spell is noticed up to this late.
    fn recheck(&self) -> Duration {
        self.header_read.min(self.keepalive)
    }
}

/// What the connection is doing, as its reads and requests show it.
pub(crate) struct Activity {
    start: Instant,
    /// Requests handed to the app whose response has not ended.
    in_flight: AtomicUsize,
    /// A request head has begun arriving since the last response ended.
    head_started: AtomicBool,
    /// At least one response has ended: the connection is kept alive.
    served: AtomicBool,
    /// It speaks HTTP/2, whose frames between requests (pings, window
    /// updates) start no request head.
    http2: AtomicBool,
    /// Milliseconds after `start` when the head began, or the connection
    /// went idle.
    since: AtomicU64,
    /// A tunnel a request opened, to be driven once hyper lets go.
    handover: Handover,
}

/// Why the watcher woke.
enum Verdict {
    /// Nothing is due before this.
    Wait(Instant),
    /// Idle past `keepalive_timeout` (or no first request in time).
    Idle,
    /// A request head took longer than `header_read_timeout`.
    SlowHead,
}

impl Activity {
    pub(crate) fn new() -> Arc<Activity> {
        Arc::new(Activity {
            start: Instant::now(),
            in_flight: AtomicUsize::new(0),
            head_started: AtomicBool::new(false),
            served: AtomicBool::new(false),
            http2: AtomicBool::new(false),
            since: AtomicU64::new(0),
            handover: Handover::default(),
        })
    }

    fn stamp(&self) {
        self.since
            .store(self.start.elapsed().as_millis() as u64, Relaxed);
    }

    fn read(&self) {
        if self.in_flight.load(Relaxed) == 0
            && !self.head_started.load(Relaxed)
            && !self.http2.load(Relaxed)
        {
            self.head_started.store(true, Relaxed);
            self.stamp();
        }
    }

    /// An HTTP/1.1 connection that has not handed a request to the app yet.
    fn awaits_first_request(&self) -> bool {
        !self.http2.load(Relaxed) && !self.served.load(Relaxed) && self.in_flight.load(Relaxed) == 0
    }

    /// A request reached the app; its response's body ends the request.
    pub(crate) fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Relaxed);
        self.head_started.store(false, Relaxed);
        InFlight(Arc::clone(self))
    }

    fn verdict(&self, timeouts: Timeouts, now: Instant) -> Verdict {
        if self.in_flight.load(Relaxed) > 0 {
            return Verdict::Wait(now + timeouts.recheck());
        }
        let since = self.start + Duration::from_millis(self.since.load(Relaxed));
        let (limit, verdict) = if self.head_started.load(Relaxed) {
            (timeouts.header_read, Verdict::SlowHead)
        } else if self.served.load(Relaxed) {
            (timeouts.keepalive, Verdict::Idle)
        } else {
            (timeouts.header_read, Verdict::Idle)
        };
        if now >= since + limit {
            verdict
        } else {
            Verdict::Wait(since + limit)
        }
    }
}

/// A request in progress; dropped with its response's body.
pub(crate) struct InFlight(Arc<Activity>);

impl InFlight {
    /// Where the request may leave a tunnel for its connection to drive.
    pub(crate) fn handover(&self) -> &Handover {
        &self.0.handover
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let activity = &self.0;
        if activity.in_flight.fetch_sub(1, Relaxed) == 1 {
            activity.served.store(true, Relaxed);
            activity.stamp();
        }
    }
}

/// A response body that ends its request when hyper is done with it.
pub(crate) struct Tracked {
    body: Body,
    _request: InFlight,
}

impl Tracked {
    pub(crate) fn new(body: Body, request: InFlight) -> Tracked {
        Tracked {
            body,
            _request: request,
        }
    }
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// What a client connected over: TCP, or TLS over TCP.
pub(crate) enum ClientStream {
    Plain(TcpStream),
    #[cfg(feature = "tls")]
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

/// Forwards an I/O call to whichever stream it is.
macro_rules! either {
    ($self:ident, $s:ident => $call:expr) => {
        match $self.get_mut() {
            ClientStream::Plain($s) => {
                let $s = Pin::new($s);
                $call
            }
            #[cfg(feature = "tls")]
            ClientStream::Tls($s) => {
                let $s = Pin::new(&mut **$s);
                $call
            }
        }
    };
}

impl AsyncRead for ClientStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        either!(self, s => s.poll_read(cx, buf))
    }
}

impl AsyncWrite for ClientStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        either!(self, s => s.poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        either!(self, s => s.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        either!(self, s => s.poll_shutdown(cx))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        either!(self, s => s.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            ClientStream::Plain(s) => s.is_write_vectored(),
            #[cfg(feature = "tls")]
            ClientStream::Tls(s) => s.is_write_vectored(),
        }
    }
}

pin_project_lite::pin_project! {
    /// A client's stream, telling `Activity` when request bytes arrive.
    pub(crate) struct Watched<S> {
        #[pin]
        stream: S,
        activity: Arc<Activity>,
        first_read: bool,
    }
}

impl<S> Watched<S> {
    /// `stream` carries HTTP itself: over TLS, the decrypted stream.
    pub(crate) fn new(stream: S, activity: Arc<Activity>) -> Watched<S> {
        Watched {
            stream,
            activity,
            first_read: true,
        }
    }
}

/// How an HTTP/2 connection starts (RFC 9113 §3.4); no HTTP/1 method does.
const H2_PREFACE_START: &[u8] = b"PRI * HTTP/2";

impl<S: AsyncRead> AsyncRead for Watched<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let polled = this.stream.poll_read(cx, buf);
        let read = &buf.filled()[before..];
        if !read.is_empty() {
            // A client writes the preface whole; a first read too short to
            // hold its start is taken for HTTP/1.
            if std::mem::take(this.first_read) && read.starts_with(H2_PREFACE_START) {
                this.activity.http2.store(true, Relaxed);
            }
            this.activity.read();
        }
        polled
    }
}

impl<S: AsyncWrite> AsyncWrite for Watched<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.project().stream.poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().stream.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().stream.poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().stream.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// What every connection of a worker is served with.
pub(crate) struct Serving {
    pub(crate) app: Arc<App>,
    pub(crate) builder: auto::Builder<TokioExecutor>,
    pub(crate) timeouts: Timeouts,
    /// Set when the listener serves HTTPS.
    #[cfg(feature = "tls")]
    pub(crate) tls: Option<tokio_rustls::TlsAcceptor>,
    /// Cancelled when the drain begins.
    pub(crate) draining: CancellationToken,
}

impl Serving {
    /// Serves one accepted connection to its end: the TLS handshake first,
    /// if any, within `header_read_timeout`.
    pub(crate) async fn connection(self: Arc<Self>, stream: TcpStream, remote: SocketAddr) {
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
        #[cfg(feature = "tls")]
        let (stream, tls) = match &self.tls {
            None => (ClientStream::Plain(stream), false),
            Some(acceptor) => {
                let handshake =
                    tokio::time::timeout(self.timeouts.header_read, acceptor.accept(stream));
                match handshake.await {
                    Ok(Ok(tls)) => (ClientStream::Tls(Box::new(tls)), true),
                    Ok(Err(e)) => {
                        tracing::debug!(%remote, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%remote, "TLS handshake timed out");
                        return;
                    }
                }
            }
        };
        #[cfg(not(feature = "tls"))]
        let (stream, tls) = (ClientStream::Plain(stream), false);
        let activity = Activity::new();
        let service = TowerToHyperService::new(AppService {
            peer: Arc::new(self.app.peer(remote, tls)),
            app: Arc::clone(&self.app),
            activity: Arc::clone(&activity),
        });
        let io = TokioIo::new(Watched::new(stream, Arc::clone(&activity)));
        let conn = self
            .builder
            .serve_connection_with_upgrades(io, service)
            .into_owned();
        if let Err(e) = drive(
            conn,
            Arc::clone(&activity),
            self.timeouts,
            self.draining.clone(),
        )
        .await
        {
            tracing::debug!(%remote, error = %e, "connection ended with an error");
        }
        if let Some(tunnel) = activity.handover.take() {
            tunnel.await;
        }
    }
}

/// Drives a connection to its end: shut down gracefully when it idles too
/// long or the drain begins (an HTTP/1.1 connection between requests
/// closes, an HTTP/2 one sends GOAWAY and finishes its streams), dropped
/// outright when a request head takes too long. An HTTP/1.1 connection
/// accepted just before the drain began, whose first request is still on
/// its way, is shut down once that request has reached the app, not
/// before: its client sent it to a listener that was open, and must get an
/// answer, not a closed connection (within `header_read_timeout`).
async fn drive(
    conn: Connection,
    activity: Arc<Activity>,
    timeouts: Timeouts,
    draining: CancellationToken,
) -> Result<(), BoxError> {
    let mut conn = std::pin::pin!(conn);
    let timer = tokio::time::sleep(timeouts.recheck());
    let mut timer = std::pin::pin!(timer);
    let mut closing = false;
    let mut drained = false;
    loop {
        tokio::select! {
            done = conn.as_mut() => return done,
            () = draining.cancelled(), if !drained => {
                drained = true;
                if activity.awaits_first_request() {
                    timer.as_mut().reset(Instant::now() + FIRST_REQUEST_LOOK);
                } else if !closing {
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
            () = timer.as_mut(), if !closing => {
                if drained && !activity.awaits_first_request() {
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                    continue;
                }
                match activity.verdict(timeouts, Instant::now()) {
                    Verdict::Wait(until) if drained => {
                        timer.as_mut().reset(until.min(Instant::now() + FIRST_REQUEST_LOOK));
                    }
                    Verdict::Wait(until) => timer.as_mut().reset(until),
                    Verdict::Idle => {
                        conn.as_mut().graceful_shutdown();
                        closing = true;
                    }
                    Verdict::SlowHead => return Ok(()),
                }
            }
        }
    }
}

/// While draining, how often a connection whose first request is on its
/// way looks whether it has arrived.
const FIRST_REQUEST_LOOK: Duration = Duration::from_millis(20);

/// One connection's view of the app, as a tower service so layers can wrap
/// it; it never fails, because every error has become a response.
#[derive(Clone)]
pub(crate) struct AppService {
    pub(crate) app: Arc<App>,
    pub(crate) peer: Arc<Peer>,
    /// The connection's requests, so it can tell when it is idle.
    pub(crate) activity: Arc<Activity>,
}

impl tower::Service<Request<Incoming>> for AppService {
    type Response = Response<Tracked>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Tracked>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Incoming>) -> Self::Future {
        let app = Arc::clone(&self.app);
        let peer = Arc::clone(&self.peer);
        let request = self.activity.begin();
        Box::pin(async move {
            let response = app.handle(req, &peer, request.handover()).await;
            Ok(response.map(|body| Tracked::new(body, request)))
        })
    }
}
