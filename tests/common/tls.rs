//! TLS made in the test: a certificate authority, certificates it issues
//! as PEM files, a client that trusts only it, and a TLS front for a test
//! backend.

use std::path::PathBuf;
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::{TcpListener, TcpStream};

use super::{Backend, TempDir};

/// A certificate authority of the test's own, its certificate in a file.
pub(crate) struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    der: CertificateDer<'static>,
    dir: TempDir,
    pub ca_file: PathBuf,
}

/// A certificate the test CA issued, with its key, as PEM files.
pub(crate) struct Issued {
    pub der: CertificateDer<'static>,
    pub key: PrivateKeyDer<'static>,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

impl TestCa {
    pub(crate) fn new() -> TestCa {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).unwrap();
        let dir = TempDir::new();
        let ca_file = dir.0.join("ca.pem");
        std::fs::write(&ca_file, cert.pem()).unwrap();
        TestCa {
            issuer: Issuer::new(params, key),
            der: cert.der().clone(),
            dir,
            ca_file,
        }
    }

    /// A certificate for `names` (DNS names or IP addresses), its files
    /// named after `label`.
    pub(crate) fn issue(&self, names: &[&str], label: &str) -> Issued {
        let key = KeyPair::generate().unwrap();
        let names = names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>();
        let cert = CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &self.issuer)
            .unwrap();
        let cert_file = self.dir.0.join(format!("{label}.pem"));
        let key_file = self.dir.0.join(format!("{label}.key"));
        std::fs::write(&cert_file, cert.pem()).unwrap();
        std::fs::write(&key_file, key.serialize_pem()).unwrap();
        Issued {
            der: cert.der().clone(),
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            cert_file,
            key_file,
        }
    }

    /// A client config trusting this CA alone, offering `alpn`.
    pub(crate) fn client_config(&self, alpn: &[&[u8]]) -> rustls::ClientConfig {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.der.clone()).unwrap();
        let mut config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        config
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// TLS in front of a plain test backend that records everything: what an
/// `https` upstream or webhook receiver looks like to the gateway.
pub(crate) struct TlsFront {
    pub backend: Backend,
    pub port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TlsFront {
    /// Serves `issued` on 127.0.0.1.
    pub(crate) async fn start(issued: &Issued) -> TlsFront {
        let config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![issued.der.clone()], issued.key.clone_key())
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let backend = Backend::start().await;
        let plain = backend.addr;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    // A client that does not trust us ends the handshake.
                    let Ok(mut tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    let mut inner = TcpStream::connect(plain).await.unwrap();
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut inner).await;
                });
            }
        });
        TlsFront {
            backend,
            port,
            task,
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }
}
