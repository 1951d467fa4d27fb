//! A backend that speaks HTTP/1.1 by hand: it answers with exactly the bytes
//! a test gives it, however broken, and records every connection and every
//! byte it received, so a test can show what reached it (or that nothing
//! did).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// What one connection brought.
#[derive(Default, Clone)]
pub(crate) struct RawConnection {
    /// Every byte the peer sent, heads and bodies.
    pub bytes: Vec<u8>,
    /// The request line of each request answered on this connection.
    pub requests: Vec<String>,
    /// The peer closed it.
    pub closed: bool,
}

impl std::fmt::Debug for RawConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawConnection")
            .field("bytes", &String::from_utf8_lossy(&self.bytes))
            .field("requests", &self.requests)
            .field("closed", &self.closed)
            .finish()
    }
}

pub(crate) struct RawBackend {
    pub addr: SocketAddr,
    connections: Arc<Mutex<Vec<RawConnection>>>,
    task: tokio::task::JoinHandle<()>,
}

type Answer = dyn Fn(&str) -> Vec<u8> + Send + Sync;

impl RawBackend {
    /// Answers each request head (with its `Content-Length` body read) with
    /// `answer(head)`, keeping the connection open for the next one.
    pub(crate) async fn start(
        answer: impl Fn(&str) -> Vec<u8> + Send + Sync + 'static,
    ) -> RawBackend {
        RawBackend::serving(answer, false).await
    }

    /// Like [`RawBackend::start`], but closes each connection right after
    /// its first answer without saying so in it, as a backend whose
    /// keep-alive ran out does.
    pub(crate) async fn hanging_up(
        answer: impl Fn(&str) -> Vec<u8> + Send + Sync + 'static,
    ) -> RawBackend {
        RawBackend::serving(answer, true).await
    }

    async fn serving(
        answer: impl Fn(&str) -> Vec<u8> + Send + Sync + 'static,
        hang_up: bool,
    ) -> RawBackend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(Mutex::new(Vec::new()));
        let answer: Arc<Answer> = Arc::new(answer);
        let task = {
            let connections = Arc::clone(&connections);
            tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let index = {
                        let mut all = connections.lock().unwrap();
                        all.push(RawConnection::default());
                        all.len() - 1
                    };
                    tokio::spawn(serve(
                        stream,
                        Arc::clone(&answer),
                        Arc::clone(&connections),
                        index,
                        hang_up,
                    ));
                }
            })
        };
        RawBackend {
            addr,
            connections,
            task,
        }
    }

    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub(crate) fn connections(&self) -> Vec<RawConnection> {
        self.connections.lock().unwrap().clone()
    }
}

impl Drop for RawBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(
    mut stream: tokio::net::TcpStream,
    answer: Arc<Answer>,
    connections: Arc<Mutex<Vec<RawConnection>>>,
    index: usize,
    hang_up: bool,
) {
    let mut pending = Vec::new();
    loop {
        let Some(end) = find(&pending, b"\r\n\r\n") else {
            if !read_more(&mut stream, &mut pending, &connections, index).await {
                return;
            }
            continue;
        };
        let head = String::from_utf8_lossy(&pending[..end]).into_owned();
        let length = head
            .lines()
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse::<usize>().ok())?
            })
            .unwrap_or(0);
        while pending.len() < end + 4 + length {
            if !read_more(&mut stream, &mut pending, &connections, index).await {
                return;
            }
        }
        pending.drain(..end + 4 + length);
        let line = head.lines().next().unwrap_or_default().to_owned();
        connections.lock().unwrap()[index].requests.push(line);
        if stream.write_all(&answer(&head)).await.is_err() || hang_up {
            return;
        }
    }
}

/// Reads what the peer sent next into `pending`, recording it; false once
/// the peer is gone.
async fn read_more(
    stream: &mut tokio::net::TcpStream,
    pending: &mut Vec<u8>,
    connections: &Mutex<Vec<RawConnection>>,
    index: usize,
) -> bool {
    let mut buf = [0u8; 16 * 1024];
    match stream.read(&mut buf).await {
        Ok(0) | Err(_) => {
            connections.lock().unwrap()[index].closed = true;
            false
        }
        Ok(n) => {
            connections.lock().unwrap()[index]
                .bytes
                .extend_from_slice(&buf[..n]);
            pending.extend_from_slice(&buf[..n]);
            true
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
