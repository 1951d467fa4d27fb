//! `Upgrade` requests on proxied routes (WebSocket above all): the request
//! goes to the backend with its `Upgrade` kept, and once the backend
//! answers `101 Switching Protocols`, the two connections are joined and
//! bytes flow both ways until either side closes or both fall silent for
//! `tunnel_idle_timeout`.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use http::header::{HeaderValue, CONNECTION, UPGRADE};
use http::{HeaderMap, Request, Version};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

type Joined = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Where a request hands its tunnel to the client connection it came on:
/// the connection's task drives the tunnel once hyper lets go of the
/// connection, so the tunnel keeps the connection's place under
/// `max_connections` and is waited for, like any connection, by the drain.
#[derive(Default)]
pub(crate) struct Handover(Mutex<Option<Joined>>);

impl Handover {
    pub(crate) fn give(&self, tunnel: impl Future<Output = ()> + Send + 'static) {
        *crate::sync::lock(&self.0) = Some(Box::pin(tunnel));
    }

    pub(crate) fn take(&self) -> Option<Joined> {
        crate::sync::lock(&self.0).take()
    }
}

/// The protocol a request asks to switch to, if it asks: HTTP/1.1 with
/// `Upgrade` and the `upgrade` token in `Connection` (RFC 9110 §7.8).
pub(crate) fn requested<B>(req: &Request<B>) -> Option<HeaderValue> {
    if req.version() != Version::HTTP_11 {
        return None;
    }
    let headers = req.headers();
    let asks = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    asks.then(|| headers.get(UPGRADE).cloned()).flatten()
}

/// Puts back what forwarding strips as hop-by-hop: the next hop is asked to
/// switch too.
pub(crate) fn ask_again(headers: &mut HeaderMap, protocol: HeaderValue) {
    headers.insert(UPGRADE, protocol);
    headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
}

/// Joins the client's connection to the backend's once both have switched,
/// until either closes or both are silent for `idle`.
pub(crate) async fn join(client: OnUpgrade, backend: OnUpgrade, idle: Duration) {
    let (client, backend) = match tokio::try_join!(client, backend) {
        Ok(both) => both,
        Err(e) => {
            tracing::debug!(error = %e, "an upgrade did not complete");
            return;
        }
    };
    let heard = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut client = Heard {
        io: TokioIo::new(client),
        heard: Arc::clone(&heard),
        start,
    };
    let mut backend = TokioIo::new(backend);
    let copying = tokio::io::copy_bidirectional(&mut client, &mut backend);
    tokio::pin!(copying);
    let mut deadline = start + idle;
    loop {
        tokio::select! {
            done = &mut copying => {
                if let Err(e) = done {
                    tracing::debug!(error = %e, "a tunnel broke");
                }
                return;
            }
            () = tokio::time::sleep_until(deadline) => {
                let last = start + Duration::from_millis(heard.load(Relaxed));
                if Instant::now() >= last + idle {
                    tracing::debug!(idle = %humantime::format_duration(idle), "a silent tunnel was closed");
                    return;
                }
                deadline = last + idle;
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// The client's side of a tunnel, noting when bytes last moved either
    /// way through it.
    struct Heard<S> {
        #[pin]
        io: S,
        heard: Arc<AtomicU64>,
        start: Instant,
    }
}

impl<S> Heard<S> {
    fn note(heard: &AtomicU64, start: Instant) {
        heard.store(start.elapsed().as_millis() as u64, Relaxed);
    }
}

impl<S: AsyncRead> AsyncRead for Heard<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let polled = this.io.poll_read(cx, buf);
        if buf.filled().len() > before {
            Self::note(this.heard, *this.start);
        }
        polled
    }
}

impl<S: AsyncWrite> AsyncWrite for Heard<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let polled = this.io.poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            Self::note(this.heard, *this.start);
        }
        polled
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_shutdown(cx)
    }
}
