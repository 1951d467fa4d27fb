//! WebSocket (any `Upgrade`) through proxied routes: the gateway keeps the
//! upgrade, and once the backend switches, bytes flow both ways until
//! either side closes, or both fall silent for `tunnel_idle_timeout`.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::{config, within, Client, TestGateway};
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// A WebSocket server that echoes every message, and closes when told
/// "bye"; it counts the sockets it accepted.
struct EchoBackend {
    addr: std::net::SocketAddr,
    accepted: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for EchoBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl EchoBackend {
    async fn start() -> EchoBackend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&accepted);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let count = Arc::clone(&count);
                tokio::spawn(async move {
                    let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                        return;
                    };
                    count.fetch_add(1, Ordering::SeqCst);
                    while let Some(Ok(message)) = ws.next().await {
                        let echo = match &message {
                            Message::Text(t) if t.as_str() == "bye" => {
                                let _ = ws
                                    .close(Some(CloseFrame {
                                        code: CloseCode::Normal,
                                        reason: "backend says bye".into(),
                                    }))
                                    .await;
                                continue;
                            }
                            Message::Text(_) | Message::Binary(_) => message,
                            _ => continue,
                        };
                        if ws.send(echo).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        EchoBackend {
            addr,
            accepted,
            task,
        }
    }
}

async fn gateway(backend: &EchoBackend, server_extra: &str) -> TestGateway {
    TestGateway::start(&format!(
        "{server_extra}\n{}\n[default]\nupstream = \"app\"\n",
        config(&format!("http://{}", backend.addr), "", "")
    ))
    .await
}

async fn open(gw: &TestGateway, path: &str) -> WebSocketStream<TcpStream> {
    let tcp = TcpStream::connect(gw.addr).await.unwrap();
    let url = format!("ws://{}{path}", gw.addr);
    let (ws, response) = within(
        10,
        "the WebSocket handshake",
        tokio_tungstenite::client_async(url, tcp),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 101);
    ws
}

async fn next(ws: &mut WebSocketStream<TcpStream>) -> Option<Message> {
    within(10, "a WebSocket message", ws.next())
        .await
        .map(Result::unwrap)
}

#[tokio::test]
async fn text_and_binary_cross_a_tunnel_both_ways_and_either_side_may_close() {
    let backend = EchoBackend::start().await;
    let gw = gateway(&backend, "").await;

    let mut ws = open(&gw, "/chat").await;
    ws.send(Message::text("hello")).await.unwrap();
    assert_eq!(next(&mut ws).await, Some(Message::text("hello")));
    ws.send(Message::binary(vec![0u8, 159, 146, 150]))
        .await
        .unwrap();
    assert_eq!(
        next(&mut ws).await,
        Some(Message::binary(vec![0u8, 159, 146, 150]))
    );
    // The client closes; the backend's answer to the close comes back.
    ws.close(None).await.unwrap();
    assert!(matches!(
        next(&mut ws).await,
        Some(Message::Close(_)) | None
    ));

    // The backend closes.
    let mut ws = open(&gw, "/chat").await;
    ws.send(Message::text("bye")).await.unwrap();
    match next(&mut ws).await {
        Some(Message::Close(Some(frame))) => assert_eq!(frame.reason, "backend says bye"),
        other => panic!("expected the backend's close, got {other:?}"),
    }
    assert_eq!(backend.accepted.load(Ordering::SeqCst), 2);

    // Plain requests on the same gateway are unaffected.
    let status = Client::default().get(&gw.url("/plain")).await.status;
    assert_ne!(status, 101);
}

#[tokio::test]
async fn a_silent_tunnel_is_closed_after_tunnel_idle_timeout() {
    let backend = EchoBackend::start().await;
    let gw = gateway(&backend, "tunnel_idle_timeout = \"1s\"").await;
    let mut ws = open(&gw, "/quiet").await;
    ws.send(Message::text("one")).await.unwrap();
    assert_eq!(next(&mut ws).await, Some(Message::text("one")));
    // Nothing more either way: the gateway ends the tunnel.
    let end = within(10, "the silent tunnel to be closed", ws.next()).await;
    assert!(matches!(end, None | Some(Err(_))), "{end:?}");
}

#[tokio::test]
async fn a_tunnel_holds_its_connections_place_under_max_connections() {
    let backend = EchoBackend::start().await;
    let gw = gateway(&backend, "max_connections = 1\nworkers = 1").await;
    let mut ws = open(&gw, "/held").await;
    let url = gw.url("/waiting");
    let mut waiting = tokio::spawn(async move { Client::default().get(&url).await.status });
    let early = tokio::time::timeout(std::time::Duration::from_millis(300), &mut waiting).await;
    assert!(
        early.is_err(),
        "a request was served while a tunnel held the only place"
    );
    ws.send(Message::text("still here")).await.unwrap();
    assert_eq!(next(&mut ws).await, Some(Message::text("still here")));
    ws.close(None).await.unwrap();
    while next(&mut ws).await.is_some() {}
    drop(ws);
    let status = within(10, "the waiting request", waiting).await.unwrap();
    // Served at last: the echo backend speaks only WebSocket, so a plain
    // GET is a broken exchange to the gateway.
    assert_eq!(status, 502);
}
