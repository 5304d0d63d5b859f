//! The listener's mutual TLS: the server certificate and key, and the CA that signs client
//! certificates, from PEM files; TLS 1.2 and 1.3 only, with rustls's modern cipher suites. A
//! client without a certificate, or with one the CA did not sign, fails the handshake.
//!
//! The files are checked for changes every `reload_interval_ms` and loaded again without a
//! restart; a change that does not load (half-written files, a key that does not match) is
//! logged and the previous configuration kept. Which client is which is the directory's
//! ([`crate::auth`]); this module only proves the certificate.

use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::PrivateKeyDer;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use signpost_bus::http::{file_error, read_certs};
use tokio_util::sync::CancellationToken;

use crate::config::Tls;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(transparent)]
    File(#[from] signpost_bus::http::TlsError),
    #[error("TLS: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("client CA: {0}")]
    Verifier(String),
}

/// Build the server configuration from the files.
pub fn load(files: &Tls) -> Result<ServerConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = RootCertStore::empty();
    for ca in read_certs(&files.client_ca)? {
        roots.add(ca).map_err(|e| file_error(&files.client_ca, e))?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| TlsError::Verifier(e.to_string()))?;
    let chain = read_certs(&files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| file_error(&files.key, e))?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// The current configuration, swapped when the files change.
pub struct Reloading {
    files: Tls,
    current: RwLock<Arc<ServerConfig>>,
}

fn stamps(files: &Tls) -> Vec<Option<SystemTime>> {
    [&files.cert, &files.key, &files.client_ca]
        .iter()
        .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        .collect()
}

impl Reloading {
    pub fn new(files: Tls) -> Result<Arc<Self>, TlsError> {
        let config = load(&files)?;
        Ok(Arc::new(Reloading {
            files,
            current: RwLock::new(Arc::new(config)),
        }))
    }

    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        let config = self
            .current
            .read()
            .map(|c| c.clone())
            .unwrap_or_else(|poisoned| poisoned.into_inner().clone());
        tokio_rustls::TlsAcceptor::from(config)
    }

    /// Load the files again now; on success new connections use them.
    pub fn reload(&self) -> Result<(), TlsError> {
        let config = Arc::new(load(&self.files)?);
        match self.current.write() {
            Ok(mut c) => *c = config,
            Err(poisoned) => *poisoned.into_inner() = config,
        }
        Ok(())
    }

    /// Watch the files until `shutdown`, reloading when any of them changes.
    pub async fn watch(self: Arc<Self>, shutdown: CancellationToken) {
        let every = Duration::from_millis(self.files.reload_interval_ms.max(100));
        let mut seen = stamps(&self.files);
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = shutdown.cancelled() => return,
            }
            let now = stamps(&self.files);
            if now == seen {
                continue;
            }
            match self.reload() {
                Ok(()) => {
                    tracing::info!("TLS certificate files changed: reloaded");
                    seen = now;
                }
                Err(error) => {
                    // Perhaps half-written: keep the old configuration and look again.
                    tracing::warn!(%error, "TLS certificate files changed but do not load; keeping the previous ones");
                }
            }
        }
    }
}
