//! The listening sockets: handed to this process (systemd's socket
//! activation, or the process an upgrade replaces), or bound here, one per
//! worker sharing the port through `SO_REUSEPORT`.

use std::io;
use std::net::{SocketAddr, TcpListener};

use tokio::net::TcpSocket;

use crate::config::Config;
use crate::launch::{Inherited, ADMIN, PUBLIC};

pub(super) struct Listeners {
    /// One per worker.
    pub(super) public: Vec<TcpListener>,
    pub(super) admin: Option<TcpListener>,
}

/// The public and admin listeners `config` asks for: the handed-over
/// sockets that listen there, else new ones.
pub(super) fn open(config: &Config, inherited: &mut Inherited) -> io::Result<Listeners> {
    let workers = config.server.workers.max(1);
    let mut public = inherited.take(PUBLIC, config.server.listen);
    if public.is_empty() {
        refuse_if_taken(config.server.listen)?;
        let first = listen(config.server.listen)?;
        let local = first.local_addr()?;
        public.push(first);
        for _ in 1..workers {
            public.push(listen(local)?);
        }
    } else {
        // Every socket handed over gets a worker of its own, however few
        // `workers` asks for: in a group sharing the port, a socket nobody
        // accepts on would keep the connections the kernel gives it.
        let handed = public.len();
        for l in &public {
            l.set_nonblocking(true)?;
        }
        for i in handed..workers {
            public.push(public[i % handed].try_clone()?);
        }
        tracing::info!(
            sockets = handed,
            addr = %config.server.listen,
            "listening on sockets handed to this process"
        );
    }
    let admin = match config.admin {
        Some(addr) => Some(match inherited.take(ADMIN, addr).into_iter().next() {
            Some(handed) => handed,
            None => TcpListener::bind(addr).map_err(|e| {
                io::Error::new(e.kind(), format!("the admin listener on {addr}: {e}"))
            })?,
        }),
        None => None,
    };
    if let Some(admin) = &admin {
        admin.set_nonblocking(true)?;
    }
    for addr in inherited.left() {
        tracing::warn!(%addr, "a socket handed to this process matches no listen address; closed");
    }
    for why in &inherited.refused {
        tracing::warn!(
            why,
            "a descriptor handed to this process is not a TCP listener; ignored"
        );
    }
    Ok(Listeners { public, admin })
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
    match TcpListener::bind(addr) {
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
fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
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
