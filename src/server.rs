//! The listener: accepting connections within limits, serving them with
//! hyper, and draining within a bound on shutdown.

mod connection;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::{oneshot, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::accept;
use crate::admin::Admin;
use crate::app::App;
use crate::config::Config;
use crate::jobs::DrainReport;
use crate::upstream;
use connection::{Serving, Timeouts};

/// A bound, not yet serving gateway.
pub struct Gateway {
    /// One per worker, all on the same port (`SO_REUSEPORT`): the kernel
    /// spreads connections over the workers.
    listeners: Vec<std::net::TcpListener>,
    local_addr: SocketAddr,
    app: Arc<App>,
    builder: auto::Builder<TokioExecutor>,
    /// Open connections across all workers.
    slots: Arc<Semaphore>,
    drain_timeout: Duration,
    shutdown_delay: Duration,
    timeouts: Timeouts,
    /// The admin listener's socket, unless it is turned off.
    admin: Option<std::net::TcpListener>,
    /// SIGHUP, caught from the moment the gateway is bound (its default
    /// action would end the process).
    #[cfg(unix)]
    hangups: Option<tokio::signal::unix::Signal>,
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
        self.connections_cut == 0 && self.jobs.jobs_failed == 0 && self.jobs.jobs_put_back == 0
    }
}

impl Gateway {
    /// Binds the listeners and builds everything a request needs. Must run
    /// inside a tokio runtime.
    pub async fn bind(config: Config) -> io::Result<Gateway> {
        refuse_if_taken(config.server.listen)?;
        let first = listen(config.server.listen)?;
        let admin = config
            .admin
            .map(|addr| {
                let listener = std::net::TcpListener::bind(addr).map_err(|e| {
                    io::Error::new(e.kind(), format!("the admin listener on {addr}: {e}"))
                })?;
                listener.set_nonblocking(true)?;
                Ok::<_, io::Error>(listener)
            })
            .transpose()?;
        let local_addr = first.local_addr()?;
        let mut listeners = vec![first];
        for _ in 1..config.server.workers {
            listeners.push(listen(local_addr)?);
        }
        let server = &config.server;
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            // Watched by `connection::drive`, which tells a slow head from
            // an idle kept-alive connection.
            .header_read_timeout(None)
            .max_buf_size(server.max_header_bytes)
            .max_headers(server.max_headers);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(server.max_header_bytes).unwrap_or(u32::MAX));
        let slots = Arc::new(Semaphore::new(server.max_connections));
        let drain_timeout = server.drain_timeout;
        let shutdown_delay = server.shutdown_delay;
        let timeouts = Timeouts {
            header_read: server.header_read_timeout,
            keepalive: server.keepalive_timeout,
        };
        Ok(Gateway {
            listeners,
            local_addr,
            app: Arc::new(App::build(config).map_err(io::Error::other)?),
            builder,
            slots,
            drain_timeout,
            shutdown_delay,
            timeouts,
            admin,
            #[cfg(unix)]
            hangups: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
                .inspect_err(|e| tracing::error!(error = %e, "cannot catch SIGHUP; the config cannot be reloaded"))
                .ok(),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Where the admin listener listens, unless it is turned off.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Serves until `shutdown` completes; then readiness fails at once,
    /// serving goes on for `shutdown_delay`, and then the listeners close
    /// and connections and jobs drain within the drain timeout.
    ///
    /// The first worker runs on the caller's runtime; each other one on a
    /// thread of its own with a single-threaded runtime, so a connection and
    /// everything it wakes stay on one core (measured: a third less CPU per
    /// proxied request than one work-stealing runtime).
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> RunReport {
        let Gateway {
            mut listeners,
            app,
            builder,
            slots,
            drain_timeout,
            shutdown_delay,
            timeouts,
            admin,
            local_addr,
            #[cfg(unix)]
            hangups,
        } = self;
        let admin_stop = CancellationToken::new();
        let _admin_stop_on_drop = admin_stop.clone().drop_guard();
        let admin = admin.and_then(|listener| match TcpListener::from_std(listener) {
            Ok(listener) => {
                let admin = Arc::new(Admin::new(app.report(), local_addr.port()));
                tokio::spawn(Arc::clone(&admin).serve(listener, admin_stop.clone()));
                Some(admin)
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot register the admin listener; serving without it");
                None
            }
        });
        let stop = CancellationToken::new();
        // Workers keep their runtimes, and so the jobs spawned on them, alive
        // until the jobs have drained.
        let jobs_drained = CancellationToken::new();
        // If this future is dropped instead of driven to the end, the worker
        // threads must not serve on forever.
        let _stop_on_drop = (stop.clone().drop_guard(), jobs_drained.clone().drop_guard());
        let first = listeners.remove(0);
        let mut others = Vec::new();
        for (i, listener) in listeners.into_iter().enumerate() {
            let worker = Worker {
                app: Arc::clone(&app),
                builder: builder.clone(),
                slots: Arc::clone(&slots),
                stop: stop.clone(),
                drain_timeout,
                timeouts,
                #[cfg(feature = "tls")]
                tls: app.tls_acceptor(),
            };
            let jobs_drained = jobs_drained.clone();
            let (tx, rx) = oneshot::channel();
            let spawned = std::thread::Builder::new()
                .name(format!("asyncgate-worker-{}", i + 1))
                .spawn(move || {
                    let runtime = match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(rt) => rt,
                        Err(e) => {
                            tracing::error!(error = %e, "cannot start a worker runtime");
                            return;
                        }
                    };
                    upstream::enter_worker(i + 1);
                    runtime.block_on(async move {
                        let cut = worker.serve(listener).await;
                        jobs_drained.cancelled().await;
                        let _ = tx.send(cut);
                    });
                });
            match spawned {
                Ok(_) => others.push(rx),
                Err(e) => {
                    tracing::error!(error = %e, "cannot start a worker thread; serving with fewer")
                }
            }
        }
        upstream::enter_worker(0);
        let worker = Worker {
            app: Arc::clone(&app),
            builder,
            slots,
            stop: stop.clone(),
            drain_timeout,
            timeouts,
            #[cfg(feature = "tls")]
            tls: app.tls_acceptor(),
        };
        #[cfg(unix)]
        if let Some(hangups) = hangups {
            tokio::spawn(reload_on_hangup(Arc::clone(&app), hangups, stop.clone()));
        }
        let coordinate = async {
            shutdown.await;
            if let Some(admin) = &admin {
                admin.start_draining();
            }
            if !shutdown_delay.is_zero() {
                // Readiness already fails; the load balancer has this long
                // to notice before anything is refused.
                tracing::info!(delay = ?shutdown_delay, "not ready; still serving until the drain");
                tokio::time::sleep(shutdown_delay).await;
            }
            stop.cancel();
            tracing::info!(timeout = ?drain_timeout, "stopped accepting; draining");
            let deadline = tokio::time::Instant::now() + drain_timeout;
            let report = app.drain(deadline).await;
            jobs_drained.cancel();
            report
        };
        let (mut connections_cut, jobs) = tokio::join!(worker.serve(first), coordinate);
        for rx in others {
            connections_cut += rx.await.unwrap_or(0);
        }
        admin_stop.cancel();
        RunReport {
            connections_cut,
            jobs,
        }
    }
}

/// What one worker needs to accept and serve connections.
struct Worker {
    app: Arc<App>,
    builder: auto::Builder<TokioExecutor>,
    slots: Arc<Semaphore>,
    stop: CancellationToken,
    drain_timeout: Duration,
    timeouts: Timeouts,
    #[cfg(feature = "tls")]
    tls: Option<tokio_rustls::TlsAcceptor>,
}

impl Worker {
    /// Accepts until stopped, then waits for its connections to finish
    /// within the drain timeout; returns how many it had to cut.
    async fn serve(self, listener: std::net::TcpListener) -> usize {
        let listener = match TcpListener::from_std(listener) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "cannot register a listener");
                return 0;
            }
        };
        let connections = TaskTracker::new();
        let draining = CancellationToken::new();
        let serving = Arc::new(Serving {
            app: self.app,
            builder: self.builder,
            timeouts: self.timeouts,
            #[cfg(feature = "tls")]
            tls: self.tls,
            draining: draining.clone(),
        });
        loop {
            // Waiting for a slot before accepting leaves excess clients in
            // the kernel's backlog instead of costing a file descriptor each.
            let slot = tokio::select! {
                slot = Arc::clone(&self.slots).acquire_owned() => slot.expect("the connection semaphore is never closed"),
                () = self.stop.cancelled() => break,
            };
            let (stream, remote) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(conn) => conn,
                    Err(e) => {
                        accept::on_error("public", e).await;
                        continue;
                    }
                },
                () = self.stop.cancelled() => break,
            };
            let serving = Arc::clone(&serving);
            connections.spawn(async move {
                serving.connection(stream, remote).await;
                drop(slot);
            });
        }
        drop(listener);
        connections.close();
        draining.cancel();
        let open = connections.len();
        tracing::debug!(connections = open, "worker stopped accepting");
        match tokio::time::timeout(self.drain_timeout, connections.wait()).await {
            Ok(()) => 0,
            Err(_) => connections.len().max(1),
        }
    }
}

/// Reloads the config on every SIGHUP until the drain begins. A file that
/// does not validate is refused, with its file, line and key, and the
/// running config stays.
#[cfg(unix)]
async fn reload_on_hangup(
    app: Arc<App>,
    mut hangups: tokio::signal::unix::Signal,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            Some(()) = hangups.recv() => {},
            () = stop.cancelled() => return,
        }
        match app.reload() {
            Ok(reloaded) => {
                tracing::info!(
                    routes = reloaded.routes,
                    "reloaded the config; new requests and jobs follow it"
                );
                if !reloaded.needs_restart.is_empty() {
                    tracing::warn!(
                        sections = ?reloaded.needs_restart,
                        "these sections changed but take effect only at the next restart"
                    );
                }
            }
            Err(e) => tracing::error!(error = %e, "config not reloaded; the running one stays"),
        }
    }
}

/// Fails when another process listens on `addr`. The workers' sockets
/// share their port through `SO_REUSEPORT`, which would as gladly share it
/// with a stranger (a second gateway started by mistake would silently take
/// half the connections): a socket without that option is refused by any
/// listener already there.
fn refuse_if_taken(addr: SocketAddr) -> io::Result<()> {
    if addr.port() == 0 {
        return Ok(());
    }
    match std::net::TcpListener::bind(addr) {
        Ok(probe) => {
            drop(probe);
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => Err(io::Error::new(
            e.kind(),
            format!("{addr} is already in use by another process"),
        )),
        Err(e) => Err(e),
    }
}

/// A listening socket that other workers can share through `SO_REUSEPORT`.
fn listen(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    #[cfg(unix)]
    socket.set_reuseport(true)?;
    socket.bind(addr)?;
    // Linux caps it at net.core.somaxconn; nginx asks for 511.
    socket.listen(1024)?.into_std()
}
