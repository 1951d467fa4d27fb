//! An upstream's HTTP/1.1 connections, driven by the task that uses them.
//!
//! hyper-util's pooled client gives every connection a task of its own: a
//! request is handed to that task, its answer handed back, and the body
//! fed through a channel, each hand-over a wake-up of another task. Here,
//! as in Pingora, a connection's future is polled by whoever waits on it:
//! the request's task until the response head, then the response body as
//! it is read. Between requests a connection waits in its worker's pool,
//! polled by nobody, so a connection the backend closed meanwhile is found
//! at checkout, before a request is given to it; a request is never
//! written to more than one connection, so a POST reaches the backend at
//! most once.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, HOST, UPGRADE};
use http::{Request, Response, Uri};
use http_body::{Body as _, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, Connection, SendRequest};
use tokio::time::Instant;

use crate::body::{Body, BoxError};
use crate::sync::lock;
use crate::upstream::current_worker;

/// What a connection runs over: TCP, or TLS over TCP.
pub(super) trait Stream: hyper::rt::Read + hyper::rt::Write + Unpin + Send {}

impl<T: hyper::rt::Read + hyper::rt::Write + Unpin + Send> Stream for T {}

pub(super) type Io = Box<dyn Stream>;

/// One connection: the handle requests are sent through, and the future
/// that does the connection's work whenever it is polled.
struct Conn {
    send: SendRequest<Body>,
    // Boxed once per connection, so that a request's future and its
    // response body, which hold a connection, move a pointer and not the
    // 650 bytes of hyper's connection state.
    driver: Box<Connection<Io, Body>>,
}

impl Conn {
    /// Polls the connection once, with no one to wake: whether it can take
    /// a request now. A connection closed by its peer, or still busy with
    /// an earlier exchange, cannot.
    fn ready_now(&mut self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        Pin::new(&mut *self.driver).poll(&mut cx).is_pending() && self.send.is_ready()
    }
}

struct Idle {
    conn: Conn,
    since: Instant,
}

/// Each worker's idle connections to one upstream.
pub(super) struct Pools {
    workers: Box<[Mutex<Vec<Idle>>]>,
    idle_timeout: Duration,
    /// Whether the task closing connections idle past the timeout runs.
    pruning: AtomicBool,
}

/// Why an exchange failed before its response head.
pub(super) enum SendError {
    /// No connection: refused, timed out, or its TLS handshake failed.
    Connect(BoxError),
    /// The exchange broke (hyper's error, which may carry the request
    /// body's own).
    Failed(hyper::Error),
    /// No response head within the time allowed.
    TimedOut,
}

impl Pools {
    pub(super) fn new(workers: usize, idle_timeout: Duration) -> Arc<Pools> {
        Arc::new(Pools {
            workers: (0..workers.max(1)).map(|_| Mutex::default()).collect(),
            idle_timeout,
            pruning: AtomicBool::new(false),
        })
    }

    fn own(&self) -> &Mutex<Vec<Idle>> {
        &self.workers[current_worker() % self.workers.len()]
    }

    /// The most recently used connection that can take a request now;
    /// those found closed or expired on the way are dropped.
    fn checkout(&self) -> Option<Conn> {
        let mut idle = lock(self.own());
        while let Some(mut entry) = idle.pop() {
            if entry.since.elapsed() < self.idle_timeout && entry.conn.ready_now() {
                return Some(entry.conn);
            }
        }
        None
    }

    fn checkin(self: &Arc<Pools>, mut conn: Conn) {
        if !conn.ready_now() {
            return;
        }
        lock(self.own()).push(Idle {
            conn,
            since: Instant::now(),
        });
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            if !self.pruning.swap(true, Ordering::Relaxed) {
                runtime.spawn(prune(Arc::downgrade(self), self.idle_timeout));
            }
        }
    }

    /// Sends `req` on a pooled connection, or on a new one from `dial`,
    /// and waits for the response head until `deadline`, polling the
    /// connection meanwhile. A request asking for an upgrade gets a
    /// connection of its own, driven by a task of its own, since what
    /// follows the switch is the tunnel's.
    ///
    /// The deadline is a timer polled beside the exchange rather than a
    /// `tokio::time::Timeout` around this future, which would be built
    /// and then moved, a kilobyte each time, on every request.
    pub(super) async fn send<D>(
        self: &Arc<Pools>,
        mut req: Request<Body>,
        dial: impl FnOnce() -> D,
        deadline: Instant,
    ) -> Result<Response<UpstreamBody>, SendError>
    where
        D: Future<Output = Result<Io, BoxError>> + Send,
    {
        origin_form(&mut req);
        let upgrade = req.headers().contains_key(UPGRADE);
        let pooled = if upgrade { None } else { self.checkout() };
        let mut conn = match pooled {
            Some(conn) => conn,
            // Boxed: a dial and a handshake are kilobytes of future state
            // that every request would otherwise carry, and move, while
            // nearly all of them find a pooled connection.
            None => Box::pin(tokio::time::timeout_at(deadline, connect(dial())))
                .await
                .map_err(|_| SendError::TimedOut)??,
        };
        if upgrade {
            tokio::spawn((*conn.driver).with_upgrades());
            return tokio::time::timeout_at(deadline, conn.send.send_request(req))
                .await
                .map_err(|_| SendError::TimedOut)?
                .map(|r| r.map(|body| UpstreamBody::new(body, None, Weak::new())))
                .map_err(SendError::Failed);
        }
        let mut response = std::pin::pin!(conn.send.send_request(req));
        let mut timer = std::pin::pin!(tokio::time::sleep_until(deadline));
        let mut driving = true;
        let response = std::future::poll_fn(|cx| {
            // Once the connection's future ends (closed, or broken), the
            // response's future has its answer or its error.
            if driving && Pin::new(&mut *conn.driver).poll(cx).is_ready() {
                driving = false;
            }
            match response.as_mut().poll(cx) {
                Poll::Ready(answer) => Poll::Ready(answer.map_err(SendError::Failed)),
                Poll::Pending if timer.as_mut().poll(cx).is_ready() => {
                    Poll::Ready(Err(SendError::TimedOut))
                }
                Poll::Pending => Poll::Pending,
            }
        })
        .await?;
        let conn = driving.then_some(conn);
        Ok(response.map(|body| UpstreamBody::new(body, conn, Arc::downgrade(self))))
    }
}

/// A new connection: dialled, then its HTTP/1.1 handshake.
async fn connect(dial: impl Future<Output = Result<Io, BoxError>>) -> Result<Conn, SendError> {
    let io = dial.await.map_err(SendError::Connect)?;
    let (send, driver) = http1::handshake(io)
        .await
        .map_err(|e| SendError::Connect(Box::new(e)))?;
    Ok(Conn {
        send,
        driver: Box::new(driver),
    })
}

/// Closes connections idle past the timeout while nothing uses them, for
/// as long as the upstream exists.
async fn prune(pools: Weak<Pools>, idle_timeout: Duration) {
    let mut every = tokio::time::interval((idle_timeout / 4).max(Duration::from_millis(100)));
    loop {
        every.tick().await;
        let Some(pools) = pools.upgrade() else {
            return;
        };
        for worker in &*pools.workers {
            lock(worker).retain(|idle| idle.since.elapsed() < idle_timeout);
        }
    }
}

/// An HTTP/1.1 server wants the request target in origin form, and `Host`
/// naming the upstream unless the request names another.
fn origin_form(req: &mut Request<Body>) {
    if let Some(authority) = req.uri().authority() {
        if !req.headers().contains_key(HOST) {
            if let Ok(host) = HeaderValue::from_str(authority.as_str()) {
                req.headers_mut().insert(HOST, host);
            }
        }
    }
    if let Some(pq) = req.uri().path_and_query() {
        let target = Uri::from(pq.clone());
        *req.uri_mut() = target;
    }
}

pin_project_lite::pin_project! {
    /// A response body that drives its connection as it is read, and gives
    /// the connection back to its worker's pool once read to the end; a
    /// body dropped before that takes its connection with it.
    pub(crate) struct UpstreamBody {
        #[pin]
        body: Incoming,
        conn: Option<Conn>,
        pools: Weak<Pools>,
        // Read to its end: a chunked body says so only by ending.
        ended: bool,
    }

    impl PinnedDrop for UpstreamBody {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if !(*this.ended || this.body.is_end_stream()) {
                return;
            }
            if let (Some(conn), Some(pools)) = (this.conn.take(), this.pools.upgrade()) {
                pools.checkin(conn);
            }
        }
    }
}

impl UpstreamBody {
    fn new(body: Incoming, conn: Option<Conn>, pools: Weak<Pools>) -> UpstreamBody {
        UpstreamBody {
            body,
            conn,
            pools,
            ended: false,
        }
    }
}

impl http_body::Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.project();
        if let Some(conn) = this.conn.as_mut() {
            if Pin::new(&mut *conn.driver).poll(cx).is_ready() {
                // Closed or broken: the body has what there was, or the error.
                *this.conn = None;
            }
        }
        let frame = this.body.poll_frame(cx);
        if let Poll::Ready(None) = frame {
            *this.ended = true;
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
