//! The listener: accepting connections within limits, serving them with
//! hyper, and draining within a bound on shutdown.

mod connection;
mod listeners;

use std::ffi::OsString;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::accept;
use crate::admin::Admin;
use crate::app::App;
use crate::config::{AdminToken, Config};
use crate::jobs::DrainReport;
use crate::launch::Launch;
use crate::upgrade::Successor;
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
    admin_token: Option<AdminToken>,
    /// What SIGUSR2 starts to take over, when this process knows how it
    /// was started (the binary, not a gateway run inside a test).
    successor: Option<(PathBuf, Vec<OsString>)>,
    /// SIGHUP, caught from the moment the gateway is bound (its default
    /// action would end the process).
    #[cfg(unix)]
    hangups: Option<tokio::signal::unix::Signal>,
    /// SIGUSR2, caught from the same moment, for the same reason.
    #[cfg(unix)]
    upgrades: Option<tokio::signal::unix::Signal>,
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
        Gateway::launch(config, Launch::default()).await
    }

    /// [`Gateway::bind`] in a process started as `launch` tells: on the
    /// sockets handed to it, if any listen where the config asks, and
    /// awaiting the store from the process it replaces, if it was started
    /// by an upgrade. Must run inside a tokio runtime.
    pub async fn launch(config: Config, launch: Launch) -> io::Result<Gateway> {
        let Launch {
            exe,
            args,
            mut inherited,
            upgrade,
        } = launch;
        let listeners::Listeners {
            public: listeners,
            admin,
        } = listeners::open(&config, &mut inherited)?;
        let local_addr = listeners[0].local_addr()?;
        let admin_token = config.admin_token.clone();
        if let Some(addr) = admin.as_ref().and_then(|l| l.local_addr().ok()) {
            if admin_token.is_none() && !addr.ip().is_loopback() {
                tracing::warn!(%addr, "the admin listener is not on loopback and has no [admin] token: anyone who reaches it may read jobs, but only loopback peers may pause upstreams");
            }
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
        let drain_timeout = server.drain_timeout;
        let shutdown_delay = server.shutdown_delay;
        let timeouts = Timeouts {
            header_read: server.header_read_timeout,
            keepalive: server.keepalive_timeout,
        };
        let slots = Arc::new(Semaphore::new(server.max_connections));
        let app = Arc::new(App::build(config, upgrade).map_err(io::Error::other)?);
        Ok(Gateway {
            listeners,
            local_addr,
            app,
            builder,
            slots,
            drain_timeout,
            shutdown_delay,
            timeouts,
            admin,
            admin_token,
            successor: exe.map(|exe| (exe, args)),
            #[cfg(unix)]
            hangups: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
                .inspect_err(|e| tracing::error!(error = %e, "cannot catch SIGHUP; the config cannot be reloaded"))
                .ok(),
            #[cfg(unix)]
            upgrades: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined2())
                .inspect_err(|e| tracing::error!(error = %e, "cannot catch SIGUSR2; in-place upgrades are off"))
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
            admin_token,
            local_addr,
            successor,
            #[cfg(unix)]
            hangups,
            #[cfg(unix)]
            upgrades,
        } = self;
        // Copies of the sockets for a successor: taken now, while this
        // process still has them all.
        let successor = successor.and_then(|(exe, args)| {
            let sockets = listeners
                .iter()
                .map(|l| (crate::launch::PUBLIC, l))
                .chain(admin.iter().map(|l| (crate::launch::ADMIN, l)))
                .map(|(name, l)| l.try_clone().map(|copy| (name, copy)))
                .collect::<io::Result<Vec<_>>>()
                .inspect_err(|e| tracing::error!(error = %e, "cannot keep the sockets for an upgrade; SIGUSR2 will not upgrade"))
                .ok()?;
            Some(Successor { exe, args, sockets })
        });
        let admin_stop = CancellationToken::new();
        let _admin_stop_on_drop = admin_stop.clone().drop_guard();
        let admin = admin.and_then(|listener| match TcpListener::from_std(listener) {
            Ok(listener) => {
                let admin = Arc::new(Admin::new(app.report(), local_addr.port(), admin_token));
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
        // Listeners whose worker could not start: the first worker serves
        // them too. A listener left unserved would still be handed
        // connections by the kernel (SO_REUSEPORT), and keep them waiting:
        // the copies kept for an upgrade keep it open.
        let mut orphans = Vec::new();
        for (i, listener) in listeners.into_iter().enumerate() {
            // Built here, before anything is accepted: a worker's runtime
            // needs descriptors of its own (epoll, an eventfd), which a
            // burst of connections could otherwise take first.
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!(error = %e, "cannot start a worker runtime; the first worker serves its listener");
                    orphans.push(listener);
                    continue;
                }
            };
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
        // Set once a successor serves on the same sockets.
        let replaced = CancellationToken::new();
        #[cfg(unix)]
        if let Some(upgrades) = upgrades {
            tokio::spawn(upgrade_on_usr2(
                upgrades,
                successor,
                replaced.clone(),
                stop.clone(),
            ));
        }
        crate::upgrade::notify_ready();
        let coordinate = async {
            tokio::pin!(shutdown);
            let upgraded = tokio::select! {
                () = &mut shutdown => false,
                () = replaced.cancelled() => true,
            };
            if let Some(admin) = &admin {
                admin.start_draining();
            }
            if upgraded {
                // The successor answers probes and accepts on the same
                // sockets: nothing is left to wait for.
                admin_stop.cancel();
            } else if !shutdown_delay.is_zero() {
                // Readiness already fails; the load balancer has this long
                // to notice before anything is refused.
                tracing::info!(delay = %humantime::format_duration(shutdown_delay), "not ready; still serving until the drain");
                tokio::time::sleep(shutdown_delay).await;
            }
            stop.cancel();
            tracing::info!(timeout = %humantime::format_duration(drain_timeout), "stopped accepting; draining");
            let deadline = tokio::time::Instant::now() + drain_timeout;
            let report = app.drain(deadline).await;
            jobs_drained.cancel();
            report
        };
        let orphaned: Vec<_> = orphans
            .into_iter()
            .map(|listener| tokio::spawn(worker.clone().serve(listener)))
            .collect();
        let (mut connections_cut, jobs) = tokio::join!(worker.serve(first), coordinate);
        for served in orphaned {
            connections_cut += served.await.unwrap_or(0);
        }
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
#[derive(Clone)]
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
            // Stopping is looked at first: once it is set, a connection
            // waiting in the backlog is the successor's (or the kernel's
            // to refuse), never accepted here to be cut by the drain.
            let slot = tokio::select! {
                biased;
                () = self.stop.cancelled() => break,
                slot = Arc::clone(&self.slots).acquire_owned() => slot.expect("the connection semaphore is never closed"),
            };
            let (stream, remote) = tokio::select! {
                biased;
                () = self.stop.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok(conn) => conn,
                    Err(e) => {
                        accept::on_error("public", e).await;
                        continue;
                    }
                },
            };
            let serving = Arc::clone(&serving);
            let counted = serving.app.connection_opened();
            connections.spawn(async move {
                serving.connection(stream, remote).await;
                drop((slot, counted));
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

/// Starts a successor on every SIGUSR2 until one serves, or the drain
/// begins; a successor that fails leaves this process serving as before.
/// A process that cannot start one (it does not know how it was started)
/// says so and serves on.
#[cfg(unix)]
async fn upgrade_on_usr2(
    mut signals: tokio::signal::unix::Signal,
    successor: Option<Successor>,
    replaced: CancellationToken,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            Some(()) = signals.recv() => {},
            () = stop.cancelled() => return,
        }
        let Some(successor) = &successor else {
            tracing::warn!("SIGUSR2 ignored: this process cannot start a successor");
            continue;
        };
        tracing::info!(exe = %successor.exe.display(), "SIGUSR2: starting a new process on the same sockets");
        match successor.start().await {
            Ok(pid) => {
                tracing::info!(
                    pid,
                    "the new process serves; this one stops accepting and drains"
                );
                replaced.cancel();
                return;
            }
            Err(e) => {
                tracing::error!(error = %crate::error_chain::Chain(&e), "upgrade failed; this process serves on");
            }
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
                        sections = reloaded.needs_restart.join(", "),
                        "these sections changed but take effect only at the next restart"
                    );
                }
            }
            Err(e) => tracing::error!(error = %e, "config not reloaded; the running one stays"),
        }
    }
}
