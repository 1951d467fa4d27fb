//! TLS with rustls (ring): whom the gateway trusts when it dials upstreams
//! and webhook receivers, and the certificate it serves, swapped in place
//! on SIGHUP so open connections are not dropped.

use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client config trusting Mozilla's roots and `extra` (each checked when
/// the config was read).
pub(crate) fn client_config(extra: &[CertificateDer<'static>]) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    roots.add_parsable_certificates(extra.iter().cloned());
    rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth()
}

/// Why a peer's certificate was refused, when that is why a connection
/// failed: an unknown issuer, another name, an expired certificate.
pub(crate) fn certificate_refused(err: &(dyn std::error::Error + 'static)) -> Option<String> {
    match crate::error_chain::find::<rustls::Error>(err)? {
        rustls::Error::InvalidCertificate(why) => Some(format!("{why:?}")),
        _ => None,
    }
}

/// What is wrong with a certificate or key file, and which of the two.
#[derive(Debug)]
pub(crate) struct BadFile {
    /// The key file, rather than the certificate file.
    pub(crate) in_key: bool,
    pub(crate) why: String,
}

/// A certificate chain and its key, read from PEM files and checked to
/// belong together.
pub(crate) fn load(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, BadFile> {
    let bad = |in_key, why: String| BadFile { in_key, why };
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| bad(false, format!("`{}`: {e}", cert.display())))?;
    if chain.is_empty() {
        return Err(bad(
            false,
            format!("`{}` holds no PEM certificate", cert.display()),
        ));
    }
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        bad(
            true,
            format!("`{}` holds no usable private key: {e}", key.display()),
        )
    })?;
    CertifiedKey::from_der(chain, private, &provider())
        .map(Arc::new)
        .map_err(|e| {
            bad(
                true,
                format!(
                    "`{}` is not the key of `{}`: {e}",
                    key.display(),
                    cert.display()
                ),
            )
        })
}

/// The certificate the gateway serves; replaced whole by a reload, while
/// handshakes under way finish with the one they began with.
#[derive(Debug)]
pub(crate) struct Served(ArcSwap<CertifiedKey>);

impl Served {
    pub(crate) fn new(key: Arc<CertifiedKey>) -> Arc<Served> {
        Arc::new(Served(ArcSwap::new(key)))
    }

    pub(crate) fn replace(&self, key: Arc<CertifiedKey>) {
        self.0.store(key);
    }

    /// What accepts TLS connections with it, offering HTTP/2 and HTTP/1.1.
    pub(crate) fn acceptor(self: &Arc<Self>) -> tokio_rustls::TlsAcceptor {
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(self) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    }
}

impl ResolvesServerCert for Served {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load_full())
    }
}
