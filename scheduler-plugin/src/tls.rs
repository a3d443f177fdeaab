//! HTTPS for kube-scheduler's `enableHTTPS: true` (`tlsConfig.caFile`/`serverName` on its side,
//! `pkg/scheduler/extender.go` `makeTransport`), with the certificate re-read when its files
//! change: cert-manager renews into the same Secret and the kubelet swaps the mounted files, so
//! a long-running extender must pick the new pair up without a restart.
//!
//! The pair is checked every few seconds (content, not mtime: a Secret volume replaces a
//! symlink); a new pair that does not parse is logged and the old one kept, so a half-written
//! renewal never takes the extender down. HTTP/1.1 only, as the router serves.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
    time::Duration,
};

use anyhow::{anyhow, Context};
use axum::Router;
use hyper_util::{rt::TokioIo, service::TowerToHyperService};
use rustls::{
    pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer},
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
    ServerConfig,
};
use tokio::net::TcpListener;

/// A TLS handshake must finish within this, so a silent client cannot hold a task forever.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The certificate and key files, and the pair last loaded from them.
#[derive(Debug)]
pub struct ReloadingCert {
    cert_file: PathBuf,
    key_file: PathBuf,
    current: RwLock<(Arc<CertifiedKey>, Vec<u8>)>,
}

impl ReloadingCert {
    /// Loads the pair now; an unreadable or invalid pair at start-up is an error (exit with the
    /// reason rather than serve nothing).
    pub fn load(cert_file: &Path, key_file: &Path) -> anyhow::Result<Arc<Self>> {
        let (key, raw) = read_pair(cert_file, key_file)?;
        Ok(Arc::new(Self {
            cert_file: cert_file.to_path_buf(),
            key_file: key_file.to_path_buf(),
            current: RwLock::new((key, raw)),
        }))
    }

    /// Re-reads the files; returns whether a new pair was installed.
    pub fn reload(&self) -> anyhow::Result<bool> {
        let raw = raw_pair(&self.cert_file, &self.key_file)?;
        if self.current.read().unwrap_or_else(|e| e.into_inner()).1 == raw {
            return Ok(false);
        }
        let key = certified_key(&raw, &self.cert_file, &self.key_file)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = (key, raw);
        Ok(true)
    }

    /// Checks the files every `interval` until the task is dropped, logging changes and errors.
    pub async fn watch(self: Arc<Self>, interval: Duration) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            tick.tick().await;
            match self.reload() {
                Ok(true) => {
                    tracing::info!(cert = %self.cert_file.display(), "TLS certificate reloaded");
                    failing = false;
                }
                Ok(false) => failing = false,
                Err(error) if !failing => {
                    tracing::warn!(%error, "cannot reload the TLS certificate; serving the previous one");
                    failing = true;
                }
                Err(_) => {}
            }
        }
    }

    /// The rustls server configuration serving the current pair.
    pub fn server_config(self: &Arc<Self>) -> anyhow::Result<Arc<ServerConfig>> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut cfg = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        // No session resumption: a resumed session skips the certificate, so a client could
        // keep trusting a replaced (possibly revoked) pair. kube-scheduler keeps its
        // connections alive, so full handshakes are rare anyway.
        cfg.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        Ok(Arc::new(cfg))
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .0
                .clone(),
        )
    }
}

fn raw_pair(cert_file: &Path, key_file: &Path) -> anyhow::Result<Vec<u8>> {
    let mut raw = std::fs::read(cert_file).with_context(|| cert_file.display().to_string())?;
    raw.push(0);
    raw.extend(std::fs::read(key_file).with_context(|| key_file.display().to_string())?);
    Ok(raw)
}

fn read_pair(cert_file: &Path, key_file: &Path) -> anyhow::Result<(Arc<CertifiedKey>, Vec<u8>)> {
    let raw = raw_pair(cert_file, key_file)?;
    Ok((certified_key(&raw, cert_file, key_file)?, raw))
}

/// Parses `raw_pair`'s bytes (certificate chain, NUL, key) into a signing pair whose key
/// matches the leaf certificate.
fn certified_key(
    raw: &[u8],
    cert_file: &Path,
    key_file: &Path,
) -> anyhow::Result<Arc<CertifiedKey>> {
    let split = raw.iter().position(|b| *b == 0).unwrap_or(raw.len());
    let (cert_pem, key_pem) = (&raw[..split], raw.get(split + 1..).unwrap_or_default());
    let certs = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{}: not a PEM certificate chain", cert_file.display()))?;
    if certs.is_empty() {
        return Err(anyhow!("{}: no certificate found", cert_file.display()));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .with_context(|| format!("{}: no PEM private key", key_file.display()))?;
    let provider = rustls::crypto::ring::default_provider();
    let ck = CertifiedKey::from_der(certs, key, &provider).with_context(|| {
        format!(
            "{} / {}: key unusable or not the certificate's",
            cert_file.display(),
            key_file.display()
        )
    })?;
    Ok(Arc::new(ck))
}

/// Serves `router` over TLS on `listener` until `shutdown` resolves: one task per connection,
/// the handshake bounded by [`HANDSHAKE_TIMEOUT`]; a failed handshake is logged at debug and
/// costs nothing else.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    config: Arc<ServerConfig>,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    futures::pin_mut!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(error) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut shutdown => return Ok(()),
        };
        let (acceptor, router) = (acceptor.clone(), router.clone());
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(error)) => {
                    tracing::debug!(%peer, %error, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let service = TowerToHyperService::new(router);
            if let Err(error) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), service)
                .await
            {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
        });
    }
}
