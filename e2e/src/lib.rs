//! Test infrastructure for edgewatt: real components started by the tests themselves.
//!
//! - [`prometheus`]: the Debian `prometheus` binary on a free loopback port.
//! - [`apiserver`]: the Kubernetes API server double (RBAC, CRD admission, watches…).
//! - [`chart`]: `charts/edgewatt` installed by Helm's engine into the double.
//! - [`pods`]: a rendered pod template run as local processes, as a kubelet would.
//! - [`operator`]: the Prometheus operator's monitor and rule selection, for the test Prometheus.
//!
//! This crate must not depend on edgewatt's own crates, so every crate can use it as a
//! dev-dependency without cycles.

pub mod apiserver;
pub mod chart;
pub mod operator;
pub mod pods;
pub mod prometheus;

/// Installs rustls' ring provider as the process default (idempotent). The workspace compiles
/// only ring (reqwest is built with `rustls-no-provider`), so a reqwest client built before any
/// provider is installed panics: call this first in anything that builds one.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A free TCP port on 127.0.0.1 (the OS picks; the listener is closed before returning).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral loopback port")
}
