//! What an accept error means for the loop that got it. Out of file
//! descriptors or memory is the process's shortage: accepting again at once
//! would spin on the same error, so the loop pauses for connections to
//! close. Anything else (a connection reset or aborted before it was
//! accepted, a peer refused by a firewall rule) concerns one connection
//! only, and the next accept goes on at once.

use std::io;

use crate::defaults;

/// Reports `e` from the accept loop of `listener` and pauses when the
/// process itself is short (accept(2): `EMFILE`, `ENFILE`, `ENOBUFS`,
/// `ENOMEM`).
pub(crate) async fn on_error(listener: &'static str, e: io::Error) {
    if !is_shortage(&e) {
        tracing::debug!(listener, error = %e, "accept failed for one connection");
        return;
    }
    tracing::error!(listener, error = %e, pause = %humantime::format_duration(defaults::ACCEPT_ERROR_BACKOFF), "accept failed; pausing");
    tokio::time::sleep(defaults::ACCEPT_ERROR_BACKOFF).await;
}

fn is_shortage(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_process_shortages_pause() {
        for errno in [libc::EMFILE, libc::ENFILE, libc::ENOBUFS, libc::ENOMEM] {
            assert!(is_shortage(&io::Error::from_raw_os_error(errno)), "{errno}");
        }
        for errno in [libc::ECONNABORTED, libc::EPERM, libc::EPROTO] {
            assert!(
                !is_shortage(&io::Error::from_raw_os_error(errno)),
                "{errno}"
            );
        }
        assert!(!is_shortage(&io::ErrorKind::ConnectionReset.into()));
    }
}
