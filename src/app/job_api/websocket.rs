//! `GET {jobs_path}/{id}` with `Upgrade: websocket` (RFC 6455): one text
//! message, the job document, per state change, then a normal close (1000)
//! after the terminal one. Woken by the job's own watch, like the event
//! stream; a ping every heartbeat keeps idle sockets (and proxies) alive.

use futures_util::{SinkExt, StreamExt};
use http::header::{
    HeaderValue, CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_VERSION,
    UPGRADE,
};
use http::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::{Api, Asker};
use crate::body::{self, Body};
use crate::defaults;
use crate::error::GatewayError;
use crate::jobs::id::JobId;
use crate::jobs::model::Job;
use crate::tunnel::Handover;

/// Answers the handshake (`404` first for a job the asker may not see)
/// and leaves the socket for the connection to drive.
pub(super) async fn open<B>(
    api: &Api,
    id: JobId,
    req: &mut Request<B>,
    asker: Asker,
    handover: &Handover,
) -> Result<Response<Body>, GatewayError> {
    let job = asker.find(api, id).await?;
    let version_13 = req
        .headers()
        .get(SEC_WEBSOCKET_VERSION)
        .is_some_and(|v| v == "13");
    let key = req.headers().get(SEC_WEBSOCKET_KEY).filter(|_| version_13);
    let Some(key) = key else {
        return Err(GatewayError::BadWebSocket);
    };
    let accept = derive_accept_key(key.as_bytes());
    let upgrade = hyper::upgrade::on(&mut *req);
    let api = api.clone();
    handover.give(async move {
        match upgrade.await {
            Ok(upgraded) => {
                let socket =
                    WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None)
                        .await;
                follow(socket, &api, id, job, &asker).await;
            }
            Err(e) => tracing::debug!(error = %e, "a WebSocket upgrade did not complete"),
        }
    });
    let mut response = Response::new(body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = response.headers_mut();
    h.insert(UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(
        SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(&accept).expect("base64 is a valid header value"),
    );
    Ok(response)
}

type Socket = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// Sends the job's document now and at every change, until its end; then
/// closes with 1000. A client that closes or breaks the socket ends it.
async fn follow(mut socket: Socket, api: &Api, id: JobId, mut job: Job, asker: &Asker) {
    let mut sent = 0;
    loop {
        if job.sequence() > sent {
            let document = String::from_utf8_lossy(&api.document(&job).to_json()).into_owned();
            if socket.send(Message::text(document)).await.is_err() {
                return;
            }
            sent = job.sequence();
        }
        if job.status.is_terminal() {
            let done = CloseFrame {
                code: CloseCode::Normal,
                reason: job.status.as_str().into(),
            };
            let _ = socket.close(Some(done)).await;
            // The client's answer to the close, within a bound.
            let _ = tokio::time::timeout(defaults::SSE_HEARTBEAT, async {
                while socket.next().await.is_some() {}
            })
            .await;
            return;
        }
        let status = job.status;
        let mut changes = api.jobs().watch(id, status);
        // A change before the subscription shows on this second look.
        job = match asker.find(api, id).await {
            Ok(j) => j,
            Err(_) => return,
        };
        if job.sequence() > sent {
            continue;
        }
        loop {
            // The watch's answer holds a lock guard; only whether it came is kept.
            let changed = async { changes.wait_for(|s| *s != status).await.is_ok() };
            tokio::select! {
                _ = changed => break,
                heard = socket.next() => match heard {
                    // Pings are answered by the socket itself.
                    Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Text(_) | Message::Binary(_))) => {}
                    _ => return,
                },
                () = tokio::time::sleep(defaults::SSE_HEARTBEAT) => {
                    if socket.send(Message::Ping(Default::default())).await.is_err() {
                        return;
                    }
                }
            }
        }
        job = match asker.find(api, id).await {
            Ok(j) => j,
            Err(_) => return,
        };
    }
}
