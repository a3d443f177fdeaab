//! HTTPS round trip with a CA generated here: a client trusting the CA and naming the server as
//! kube-scheduler's `tlsConfig.serverName` does (`pkg/scheduler/extender.go` `makeTransport`)
//! gets answers; one that does not trust the CA is refused; after the certificate files are
//! replaced by a pair from another CA (a renewal into the mounted Secret), new connections get
//! the new certificate without a restart, and a broken renewal keeps the old one.

mod common;

use std::{path::Path, sync::Arc, time::Duration};

use edgewatt_scheduler::{server, state::AppState, tls};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

const SERVER_NAME: &str = "edgewatt-scheduler.edgewatt-system.svc";

struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn ca(name: &str) -> Ca {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    Ca {
        pem: cert.pem(),
        issuer: Issuer::new(params, key),
    }
}

/// Writes a server certificate for [`SERVER_NAME`] signed by `ca` into `dir`.
fn write_server_pair(ca: &Ca, dir: &Path) {
    let params = CertificateParams::new(vec![SERVER_NAME.to_string()]).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    std::fs::write(dir.join("tls.crt"), cert.pem()).unwrap();
    std::fs::write(dir.join("tls.key"), key.serialize_pem()).unwrap();
}

fn client(ca_pem: &str, addr: std::net::SocketAddr) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap()])
        .resolve(SERVER_NAME, addr)
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

async fn prioritize(c: &reqwest::Client, port: u16) -> Result<String, reqwest::Error> {
    let body = r#"{"Pod": {"metadata": {"name": "p"}}, "NodeNames": ["n1", "n4"]}"#;
    c.post(format!("https://{SERVER_NAME}:{port}/prioritize"))
        .body(body)
        .send()
        .await?
        .error_for_status()?
        .text()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_round_trip_and_reload() {
    edgewatt_e2e::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let (first, second) = (ca("edgewatt test CA 1"), ca("edgewatt test CA 2"));
    write_server_pair(&first, dir.path());
    let cert =
        tls::ReloadingCert::load(&dir.path().join("tls.crt"), &dir.path().join("tls.key")).unwrap();
    let config = cert.server_config().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state = AppState::with_table(Default::default(), common::golden_table());
    let router = server::router(Arc::new(state));
    tokio::spawn(tls::serve(listener, router, config, std::future::pending()));
    tokio::spawn(cert.clone().watch(Duration::from_millis(100)));

    let trusting = client(&first.pem, addr);
    let reply = prioritize(&trusting, addr.port()).await.unwrap();
    assert!(reply.contains(r#""Host":"n1""#), "{reply}");
    let stranger = client(&second.pem, addr);
    assert!(
        prioritize(&stranger, addr.port()).await.is_err(),
        "a client that does not trust the CA must be refused"
    );
    // plain HTTP on the TLS port gets nothing useful
    let plain = reqwest::Client::new()
        .post(format!("http://{addr}/prioritize"))
        .body("{}")
        .send()
        .await;
    assert!(plain.map(|r| !r.status().is_success()).unwrap_or(true));

    // renewal by another CA: picked up by the watch, no restart
    write_server_pair(&second, dir.path());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while prioritize(&stranger, addr.port()).await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "new certificate not served"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        prioritize(&trusting, addr.port()).await.is_err(),
        "old CA no longer matches"
    );

    // a half-written renewal (key missing) keeps serving the last good pair
    std::fs::write(dir.path().join("tls.key"), "not a key").unwrap();
    assert!(cert.reload().is_err());
    tokio::time::sleep(Duration::from_millis(300)).await;
    prioritize(&stranger, addr.port()).await.unwrap();
}

#[test]
fn bad_pairs_are_refused_at_start_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let (c, k) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    let err = tls::ReloadingCert::load(&c, &k).unwrap_err();
    assert!(format!("{err:#}").contains("tls.crt"), "{err:#}");
    let (a, b) = (ca("a"), ca("b"));
    write_server_pair(&a, dir.path());
    let key_b = dir.path().join("other");
    std::fs::create_dir(&key_b).unwrap();
    write_server_pair(&b, &key_b);
    let err = tls::ReloadingCert::load(&c, &key_b.join("tls.key")).unwrap_err();
    assert!(
        format!("{err:#}").contains("not the certificate's"),
        "a key of another certificate: {err:#}"
    );
}
