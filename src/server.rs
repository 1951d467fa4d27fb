//! The listener: accepting connections within limits, serving them with
//! hyper, and draining within a bound on shutdown.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::config::{Config, StoreKind};
use crate::defaults;
use crate::gateway::{GatewayService, Shared};
use crate::jobs::store::{JobStore, MemoryStore};
use crate::jobs::DrainReport;

/// A bound, not yet serving gateway.
pub struct Gateway {
    listener: TcpListener,
    shared: Arc<Shared>,
    builder: auto::Builder<TokioExecutor>,
    max_connections: usize,
    drain_timeout: std::time::Duration,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunReport {
    /// Connections still open when the drain deadline passed.
    pub connections_cut: usize,
    pub jobs: DrainReport,
}

impl RunReport {
    pub fn is_clean(&self) -> bool {
        self.connections_cut == 0 && self.jobs.jobs_failed == 0
    }
}

impl Gateway {
    /// Binds the listener and builds everything a request needs. Must run
    /// inside a tokio runtime.
    pub async fn bind(config: Config) -> io::Result<Gateway> {
        let listener = TcpListener::bind(config.server.listen).await?;
        let store: Arc<dyn JobStore> = match config.store.kind {
            StoreKind::Memory => Arc::new(MemoryStore::new(&config.store)),
        };
        let server = &config.server;
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            // Without a timer hyper silently ignores the header-read timeout.
            .timer(TokioTimer::new())
            .header_read_timeout(server.header_read_timeout)
            .max_buf_size(server.max_header_bytes)
            .max_headers(server.max_headers);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(server.max_header_bytes).unwrap_or(u32::MAX));
        let max_connections = server.max_connections;
        let drain_timeout = server.drain_timeout;
        Ok(Gateway {
            listener,
            shared: Arc::new(Shared::new(config, store)),
            builder,
            max_connections,
            drain_timeout,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serves until `shutdown` completes, then stops accepting and drains
    /// connections and jobs within the drain timeout.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> RunReport {
        let Gateway {
            listener,
            shared,
            builder,
            max_connections,
            drain_timeout,
        } = self;
        let graceful = GracefulShutdown::new();
        let slots = Arc::new(Semaphore::new(max_connections));
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            // Waiting for a slot before accepting leaves excess clients in
            // the kernel's backlog instead of costing a file descriptor each.
            let slot = tokio::select! {
                slot = Arc::clone(&slots).acquire_owned() => slot.expect("the connection semaphore is never closed"),
                () = &mut shutdown => break,
            };
            let (stream, remote) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(conn) => conn,
                    Err(e) => {
                        on_accept_error(e).await;
                        continue;
                    }
                },
                () = &mut shutdown => break,
            };
            let service = TowerToHyperService::new(GatewayService {
                shared: Arc::clone(&shared),
                remote,
            });
            let conn = serve(&builder, stream, service);
            let conn = graceful.watch(conn.into_owned());
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(%remote, error = %e, "connection ended with an error");
                }
                drop(slot);
            });
        }
        drop(listener);
        tracing::info!(
            connections = graceful.count(),
            "stopped accepting; draining"
        );
        let deadline = tokio::time::Instant::now() + drain_timeout;
        let connections = async {
            let open = graceful.count();
            match tokio::time::timeout_at(deadline, graceful.shutdown()).await {
                Ok(()) => 0,
                Err(_) => open.max(1),
            }
        };
        let (connections_cut, jobs) = tokio::join!(connections, shared.jobs.drain(deadline));
        RunReport {
            connections_cut,
            jobs,
        }
    }
}

fn serve(
    builder: &auto::Builder<TokioExecutor>,
    stream: TcpStream,
    service: TowerToHyperService<GatewayService>,
) -> auto::Connection<'_, TokioIo<TcpStream>, TowerToHyperService<GatewayService>, TokioExecutor> {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(error = %e, "could not set TCP_NODELAY");
    }
    builder.serve_connection(TokioIo::new(stream), service)
}

/// Errors about one connection are that client's problem; anything else
/// (out of file descriptors, out of memory) is the process's, and spinning
/// on it would only burn CPU, so the loop pauses.
async fn on_accept_error(e: io::Error) {
    use io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        tracing::debug!(error = %e, "accept failed for one connection");
        return;
    }
    tracing::error!(error = %e, pause = ?defaults::ACCEPT_ERROR_BACKOFF, "accept failed; pausing");
    tokio::time::sleep(defaults::ACCEPT_ERROR_BACKOFF).await;
}
