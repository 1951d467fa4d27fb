//! WebSocket job events, and WebSocket (any `Upgrade`) through proxied
//! routes: the gateway keeps the upgrade, and once the backend switches,
//! bytes flow both ways until either side closes, or both fall silent for
//! `tunnel_idle_timeout`.

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

/// Opens a WebSocket on a job's status URL; `Err` with the HTTP status
/// when the handshake is refused.
async fn follow(gw: &TestGateway, location: &str) -> Result<WebSocketStream<TcpStream>, u16> {
    let tcp = TcpStream::connect(gw.addr).await.unwrap();
    let url = format!("ws://{}{}", gw.addr, common::path_of(location));
    match within(
        10,
        "the WebSocket handshake",
        tokio_tungstenite::client_async(url, tcp),
    )
    .await
    {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            Err(response.status().as_u16())
        }
        Err(e) => panic!("{e}"),
    }
}

/// The status in a text message's job document.
fn status_of(message: Option<Message>) -> String {
    match message {
        Some(Message::Text(text)) => {
            let doc: serde_json::Value = serde_json::from_str(text.as_str()).unwrap();
            doc["status"].as_str().unwrap().to_owned()
        }
        other => panic!("expected a job document, got {other:?}"),
    }
}

/// A gateway with an async route on every path, and a job on `path` that
/// its backend holds running; the job's `Location`.
async fn running_job(path: &str) -> (common::Backend, TestGateway, Client, String) {
    let backend = common::Backend::start().await;
    let gw = TestGateway::start(&config(
        &backend.url(),
        "",
        &common::async_route("/{*p}", ""),
    ))
    .await;
    let client = Client::default();
    let reply = client.post(&gw.url(path), "").await;
    let location = reply.header("location").to_owned();
    client.wait_status(&gw.url(&location), "running").await;
    (backend, gw, client, location)
}

#[tokio::test]
async fn a_websocket_on_a_job_gets_each_state_then_a_normal_close() {
    let (backend, gw, client, location) = running_job("/hold/ws").await;

    let mut ws = follow(&gw, &location).await.unwrap();
    assert_eq!(status_of(next(&mut ws).await), "running");
    backend.release(1);
    assert_eq!(status_of(next(&mut ws).await), "succeeded");
    match next(&mut ws).await {
        Some(Message::Close(Some(frame))) => assert_eq!(frame.code, CloseCode::Normal),
        other => panic!("expected a normal close, got {other:?}"),
    }

    // A finished job: its terminal document, then the close.
    let mut ws = follow(&gw, &location).await.unwrap();
    assert_eq!(status_of(next(&mut ws).await), "succeeded");
    assert!(matches!(next(&mut ws).await, Some(Message::Close(_))));

    // Unknown ids, and jobs bound to other credentials, are 404 before
    // any upgrade.
    let unknown = "/_jobs/00000000-0000-4000-8000-000000000000";
    assert_eq!(follow(&gw, unknown).await.err(), Some(404));
    let bound = client
        .send(
            http::Method::POST,
            &gw.url("/x"),
            &[("authorization", "Bearer a")],
            "",
        )
        .await;
    assert_eq!(follow(&gw, bound.header("location")).await.err(), Some(404));
    // Its events link opens it without them, as a browser must.
    let link = bound.json()["links"]["events"].as_str().unwrap().to_owned();
    let mut ws = follow(&gw, &link).await.unwrap();
    let mut last = String::new();
    while let Some(message) = next(&mut ws).await {
        if matches!(message, Message::Close(_)) {
            break;
        }
        last = status_of(Some(message));
    }
    assert_eq!(last, "succeeded");
}

#[tokio::test]
async fn five_hundred_sockets_on_one_job_all_get_its_end() {
    let (backend, gw, _client, location) = running_job("/hold/many").await;
    let mut sockets = Vec::new();
    for _ in 0..500 {
        let mut ws = follow(&gw, &location).await.unwrap();
        assert_eq!(status_of(next(&mut ws).await), "running");
        sockets.push(ws);
    }
    backend.release(1);
    let ends = futures_util::future::join_all(sockets.iter_mut().map(|ws| async move {
        let end = status_of(next(ws).await);
        let closed = matches!(next(ws).await, Some(Message::Close(_)));
        (end, closed)
    }))
    .await;
    assert!(
        ends.iter()
            .all(|(end, closed)| end == "succeeded" && *closed),
        "{ends:?}"
    );
}
