//! In-place upgrade, as nginx's `USR2`, HAProxy's `-x` and Envoy's hot
//! restart do it: on SIGUSR2 this process starts the executable at the
//! path it was started from, with the same arguments, and hands it its
//! listening sockets (the socket-activation protocol, see `launch`). The
//! successor accepts on the very same sockets, so no connection is ever
//! refused; once it says it serves (`READY=1`, systemd's notify protocol,
//! on a socket of this process's own), this process stops accepting and
//! drains. A successor that exits or stays silent is stopped, and this
//! process serves on as if nothing had happened.

use std::ffi::OsString;
use std::net::TcpListener;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use command_fds::{CommandFdExt, FdMapping};

use crate::launch::UPGRADE_ENV;

/// How long a successor may take to start serving before it is given up:
/// it opens no store before it serves, so this covers reading the config
/// and binding.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How often a successor that has not said it serves yet is looked at, in
/// case it exited.
const EXIT_CHECK: Duration = Duration::from_millis(50);

/// What a successor is started with.
pub(crate) struct Successor {
    pub(crate) exe: PathBuf,
    pub(crate) args: Vec<OsString>,
    /// The listening sockets, public ones first; each handed over as a
    /// copy, this process keeping its own until it stops accepting.
    pub(crate) sockets: Vec<(&'static str, TcpListener)>,
}

/// Why no successor took over.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UpgradeError {
    #[error("cannot prepare the hand-over")]
    Prepare(#[source] std::io::Error),
    #[error("cannot start {}", .0.display())]
    Spawn(PathBuf, #[source] std::io::Error),
    #[error("the new process exited before it served ({0})")]
    Exited(std::process::ExitStatus),
    #[error("the new process did not say it serves within {0:?}; stopped it")]
    Silent(Duration),
}

impl Successor {
    /// Starts the successor and waits until it serves; its pid.
    pub(crate) async fn start(&self) -> Result<u32, UpgradeError> {
        // A directory only this user can enter: nobody else can say
        // READY=1 in the successor's name.
        let dir = tempfile::Builder::new()
            .prefix("asyncgate-upgrade-")
            .tempdir()
            .map_err(UpgradeError::Prepare)?;
        let path = dir.path().join("notify");
        let notices = tokio::net::UnixDatagram::bind(&path).map_err(UpgradeError::Prepare)?;
        let mut mappings = Vec::with_capacity(self.sockets.len());
        for (index, (_, socket)) in self.sockets.iter().enumerate() {
            let copy = socket.try_clone().map_err(UpgradeError::Prepare)?;
            mappings.push(FdMapping {
                parent_fd: OwnedFd::from(copy),
                child_fd: 3 + i32::try_from(index).unwrap_or(i32::MAX),
            });
        }
        let names: Vec<&str> = self.sockets.iter().map(|(name, _)| *name).collect();
        // std's, not tokio's: tokio's process driver would look for exited
        // children at every park of every runtime, for the one child this
        // process may ever start.
        let mut command = std::process::Command::new(&self.exe);
        command
            .args(&self.args)
            .env("LISTEN_FDS", self.sockets.len().to_string())
            .env("LISTEN_FDNAMES", names.join(":"))
            .env_remove("LISTEN_PID")
            .env("NOTIFY_SOCKET", &path)
            .env(UPGRADE_ENV, std::process::id().to_string())
            .stdin(Stdio::null())
            .fd_mappings(mappings)
            .map_err(|e| UpgradeError::Prepare(std::io::Error::other(e)))?;
        let mut child = command
            .spawn()
            .map_err(|e| UpgradeError::Spawn(self.exe.clone(), e))?;
        let pid = child.id();
        let ready = async {
            let mut buf = [0u8; 512];
            loop {
                match notices.recv(&mut buf).await {
                    Ok(n) if said_ready(&buf[..n]) => return,
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot read the new process's notices");
                        std::future::pending::<()>().await;
                    }
                }
            }
        };
        let exited = async {
            loop {
                match child.try_wait() {
                    Ok(Some(status)) => return UpgradeError::Exited(status),
                    Ok(None) => tokio::time::sleep(EXIT_CHECK).await,
                    Err(e) => return UpgradeError::Spawn(self.exe.clone(), e),
                }
            }
        };
        let outcome = tokio::select! {
            () = ready => Ok(pid),
            failed = exited => Err(failed),
            () = tokio::time::sleep(READY_TIMEOUT) => {
                let _ = child.kill();
                Err(UpgradeError::Silent(READY_TIMEOUT))
            }
        };
        if outcome.is_err() {
            // Reaped, so it leaves no zombie behind.
            let _ = child.wait();
        }
        outcome
    }
}

/// Whether a notify message says `READY=1` (one assignment per line).
fn said_ready(message: &[u8]) -> bool {
    message
        .split(|&b| b == b'\n')
        .any(|line| line == b"READY=1")
}

/// Tells whoever started this process that it serves: systemd with
/// `Type=notify`, or the process an upgrade replaces. Nothing when neither
/// asked.
pub(crate) fn notify_ready() {
    if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Ready]) {
        tracing::warn!(error = %e, "cannot say READY=1 on NOTIFY_SOCKET");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_is_one_line_of_the_message() {
        assert!(said_ready(b"READY=1"));
        assert!(said_ready(b"STATUS=serving\nREADY=1\n"));
        assert!(!said_ready(b"READY=0"));
        assert!(!said_ready(b"NOTREADY=1"));
    }
}
