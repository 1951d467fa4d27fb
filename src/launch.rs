//! How this process was started, as far as the listeners and an upgrade
//! care: the executable and arguments to start a successor with, and the
//! listening sockets handed over to it, either by systemd's socket
//! activation or by the process an in-place upgrade replaces. Both use
//! systemd's protocol (`LISTEN_FDS`, `LISTEN_PID`, sockets from fd 3 on);
//! a successor is started without `LISTEN_PID`, which the protocol's
//! common extension (listenfd's) takes as "these are yours".

use std::ffi::OsString;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;

/// Set by a process for the successor it starts on SIGUSR2.
pub(crate) const UPGRADE_ENV: &str = "ASYNCGATE_UPGRADE";

/// What [`Gateway::launch`](crate::Gateway::launch) needs to know of the
/// process it runs in. The default is a gateway inside another program (a
/// test): nothing handed over, and no successor to start.
#[derive(Default)]
pub struct Launch {
    /// The executable's path as it was when this process started: a binary
    /// replaced there since is the one a successor runs.
    pub(crate) exe: Option<PathBuf>,
    pub(crate) args: Vec<OsString>,
    pub(crate) inherited: Inherited,
    /// Started by an in-place upgrade: the process before it still drains
    /// and holds the store for a while.
    pub(crate) upgrade: bool,
}

/// Listening sockets this process did not open itself.
#[derive(Default)]
pub(crate) struct Inherited {
    sockets: Vec<Handed>,
    /// Why a passed descriptor was not taken, for the log once it runs.
    pub(crate) refused: Vec<String>,
}

/// A socket handed over, where it listens, and its name in
/// `LISTEN_FDNAMES` (systemd's `FileDescriptorName=`; an upgrade names its
/// sockets `public` and `admin`).
struct Handed {
    addr: SocketAddr,
    name: String,
    listener: TcpListener,
}

/// The names that give a socket to a listener whatever its address.
pub(crate) const PUBLIC: &str = "public";
pub(crate) const ADMIN: &str = "admin";

impl Launch {
    /// Reads the process's own launch and takes the sockets passed to it,
    /// clearing the variables that passed them so that no process started
    /// later mistakes them for its own. Call it before any thread starts:
    /// it changes the environment.
    pub fn from_env() -> Launch {
        let names = std::env::var("LISTEN_FDNAMES").unwrap_or_default();
        let mut names = names.split(':');
        let mut passed = listenfd::ListenFd::from_env();
        let mut inherited = Inherited::default();
        for index in 0..passed.len() {
            let name = names.next().unwrap_or_default().to_owned();
            match passed.take_tcp_listener(index) {
                Ok(Some(listener)) => match listener.local_addr() {
                    Ok(addr) => inherited.sockets.push(Handed {
                        addr,
                        name,
                        listener,
                    }),
                    Err(e) => inherited.refused.push(format!("fd {}: {e}", 3 + index)),
                },
                Ok(None) => {}
                Err(e) => inherited.refused.push(format!("fd {}: {e}", 3 + index)),
            }
        }
        let upgrade = std::env::var_os(UPGRADE_ENV).is_some();
        std::env::remove_var(UPGRADE_ENV);
        std::env::remove_var("LISTEN_FDNAMES");
        let mut args = std::env::args_os();
        args.next();
        Launch {
            exe: std::env::current_exe().ok(),
            args: args.collect(),
            inherited,
            upgrade,
        }
    }
}

impl Inherited {
    /// The passed sockets for the listener `role` (`public`, `admin`)
    /// configured on `addr`, taken out: those named for it, or, unnamed for
    /// either, listening on the same port (any, for a configured port 0)
    /// at the same address or a wildcard on either side (systemd's
    /// `ListenStream=8080` listens on `[::]:8080` for `0.0.0.0:8080`).
    pub(crate) fn take(&mut self, role: &str, addr: SocketAddr) -> Vec<TcpListener> {
        let (matching, rest) = std::mem::take(&mut self.sockets)
            .into_iter()
            .partition::<Vec<_>, _>(|h| match h.name.as_str() {
                PUBLIC | ADMIN => h.name == role,
                _ => serves(h.addr, addr),
            });
        self.sockets = rest;
        matching.into_iter().map(|h| h.listener).collect()
    }

    /// Those no listener took.
    pub(crate) fn left(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.sockets.iter().map(|h| h.addr)
    }
}

fn serves(socket: SocketAddr, wanted: SocketAddr) -> bool {
    (socket.port() == wanted.port() || wanted.port() == 0)
        && (socket.ip() == wanted.ip()
            || socket.ip().is_unspecified()
            || wanted.ip().is_unspecified())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_socket_serves_its_port_on_its_address_or_a_wildcard() {
        let at = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert!(serves(at("127.0.0.1:8080"), at("127.0.0.1:8080")));
        assert!(serves(at("[::]:8080"), at("0.0.0.0:8080")));
        assert!(serves(at("0.0.0.0:8080"), at("127.0.0.1:8080")));
        assert!(!serves(at("127.0.0.1:8080"), at("127.0.0.1:9901")));
        assert!(!serves(at("127.0.0.1:8080"), at("127.0.0.2:8080")));
        assert!(serves(at("127.0.0.1:8080"), at("127.0.0.1:0")));
    }
}
