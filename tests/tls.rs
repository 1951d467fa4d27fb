//! TLS both ways, with certificate authorities made in the test: the
//! gateway serves HTTPS (HTTP/1.1 and HTTP/2 by ALPN, its certificate
//! swapped on SIGHUP without dropping connections), and speaks HTTPS to
//! upstreams it is told to trust.
#![cfg(feature = "tls")]

mod common;

use std::sync::Arc;

use bytes::Bytes;
use common::process::Running;
use common::tls::{Issued, TestCa, TlsFront};
use common::{async_route, config, within, Backend, Client, TestGateway};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;

/// `[server]` keys serving `issued`.
fn serving(issued: &Issued) -> String {
    format!(
        "tls_cert = \"{}\"\ntls_key = \"{}\"",
        issued.cert_file.display(),
        issued.key_file.display()
    )
}

/// A TLS connection to `addr` trusting `ca` alone; the protocol ALPN chose
/// and the certificate the server showed.
async fn connect(
    ca: &TestCa,
    addr: &str,
    alpn: &[&[u8]],
) -> (
    tokio_rustls::client::TlsStream<TcpStream>,
    Vec<u8>,
    CertificateDer<'static>,
) {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(ca.client_config(alpn)));
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let tls = within(10, "the TLS handshake", connector.connect(name, tcp))
        .await
        .unwrap();
    let (_, session) = tls.get_ref();
    let protocol = session.alpn_protocol().unwrap_or_default().to_vec();
    let shown = session.peer_certificates().unwrap()[0].clone();
    (tls, protocol, shown)
}

/// An HTTP/1.1 client on one kept-alive connection.
async fn http1(
    tls: tokio_rustls::client::TlsStream<TcpStream>,
) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

async fn get(
    sender: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    path: &str,
) -> http::StatusCode {
    let req = http::Request::get(path)
        .header("host", "localhost")
        .body(Full::default())
        .unwrap();
    let res = within(10, "an answer", sender.send_request(req))
        .await
        .unwrap();
    let status = res.status();
    res.into_body().collect().await.unwrap();
    status
}

#[tokio::test]
async fn the_gateway_serves_https_over_http1_and_http2_and_tells_the_backend() {
    let ca = TestCa::new();
    let issued = ca.issue(&["localhost"], "gateway");
    let backend = Backend::start().await;
    let gw = TestGateway::start(&format!(
        "{}\n{}\n[default]\nupstream = \"app\"\n",
        serving(&issued),
        config(&backend.url(), "", &async_route("/jobs/{*p}", ""))
    ))
    .await;
    let addr = gw.addr.to_string();

    let (tls, protocol, shown) = connect(&ca, &addr, &[b"http/1.1"]).await;
    assert_eq!(protocol, b"http/1.1");
    assert_eq!(shown, issued.der);
    let mut sender = http1(tls).await;
    assert_eq!(get(&mut sender, "/one").await, 200);
    assert_eq!(backend.received()[0].headers["x-forwarded-proto"], "https");

    let (tls, protocol, _) = connect(&ca, &addr, &[b"h2", b"http/1.1"]).await;
    assert_eq!(protocol, b"h2");
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = http::Request::post("https://localhost/jobs/x")
        .body(Full::new(Bytes::from_static(b"over h2 and tls")))
        .unwrap();
    let res = within(10, "an h2 answer", sender.send_request(req))
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    backend.started(2).await;
    assert_eq!(backend.received()[1].headers["x-forwarded-proto"], "https");
    assert_eq!(backend.received()[1].body, "over h2 and tls");
}

#[tokio::test]
async fn sighup_serves_a_new_certificate_to_new_connections_and_keeps_open_ones() {
    let ca = TestCa::new();
    let first = ca.issue(&["localhost"], "first");
    let second = ca.issue(&["localhost"], "second");
    let served = ca.issue(&["localhost"], "served");
    std::fs::copy(&first.cert_file, &served.cert_file).unwrap();
    std::fs::copy(&first.key_file, &served.key_file).unwrap();
    let backend = Backend::start().await;
    let text = format!(
        "{}\n{}\n[default]\nupstream = \"app\"\n",
        serving(&served),
        config(&backend.url(), "", "")
    );
    let gw = Running::start(&text).await;
    let addr = gw.addr().await;
    let (tls, _, shown) = connect(&ca, &addr, &[b"http/1.1"]).await;
    assert_eq!(shown, first.der);
    let mut open = http1(tls).await;
    assert_eq!(get(&mut open, "/before").await, 200);

    std::fs::copy(&second.cert_file, &served.cert_file).unwrap();
    std::fs::copy(&second.key_file, &served.key_file).unwrap();
    gw.signal("HUP");
    gw.wait_line("reloaded the config").await;

    let (_, _, shown) = connect(&ca, &addr, &[b"http/1.1"]).await;
    assert_eq!(
        shown, second.der,
        "a new connection gets the new certificate"
    );
    assert_eq!(get(&mut open, "/after").await, 200, "the open one goes on");
}

#[tokio::test]
async fn https_upstreams_are_verified_and_a_refused_certificate_is_a_502_that_says_so() {
    let ca = TestCa::new();
    let front = TlsFront::start(&ca.issue(&["127.0.0.1"], "upstream")).await;
    let upstream = front.url("");
    let routes = format!(
        "{}\n[default]\nupstream = \"app\"\n",
        async_route("/jobs/{*p}", "")
    );
    let client = Client::default();

    let trusted = format!("ca_file = \"{}\"", ca.ca_file.display());
    let gw = TestGateway::start(&config(&upstream, &trusted, &routes)).await;
    let reply = client.get(&gw.url("/passthrough")).await;
    assert_eq!(reply.status, 200);
    let reply = client.post(&gw.url("/jobs/x"), "job over tls").await;
    let doc = client
        .wait_finished(&gw.url(reply.header("location")))
        .await;
    assert_eq!(doc["status"], "succeeded", "{doc:#}");
    assert_eq!(front.backend.request_count(), 2);

    // Without the CA, the certificate is nobody's word.
    let gw = TestGateway::start(&config(&upstream, "", &routes)).await;
    let reply = client.get(&gw.url("/passthrough")).await;
    reply.assert_problem(502, "upstream-certificate");
    assert!(String::from_utf8_lossy(&reply.body).contains("certificate was refused"));
    let reply = client.post(&gw.url("/jobs/x"), "never sent").await;
    let doc = client
        .wait_finished(&gw.url(reply.header("location")))
        .await;
    assert_eq!(doc["status"], "failed", "{doc:#}");
    assert_eq!(doc["error"]["code"], "upstream-certificate", "{doc:#}");
    assert_eq!(front.backend.request_count(), 2, "nothing more reached it");
}
