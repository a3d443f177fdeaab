//! The Redfish source against a real Redfish server: `sushy-static` (PyPI `sushy-tools`, installed
//! by `make deps` into `.venv/`) serving DMTF's public-rackmount1 mockup; plus auth failure,
//! timeout and unreachable BMC.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use edgewatt_exporter::source::{Context, Domain, MeterValue, Sample, Source, SourceError};
use edgewatt_exporter::sources::redfish::{Redfish, RedfishConfig};

fn sushy_static() -> PathBuf {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let candidates = [
        std::env::var_os("SUSHY_STATIC").map(PathBuf::from),
        Some(repo.join(".venv/bin/sushy-static")),
        Some(PathBuf::from("/usr/local/bin/sushy-static")),
    ];
    candidates
        .into_iter()
        .flatten()
        .find(|p| p.exists())
        .expect("sushy-static not found: run `make deps` (it installs sushy-tools into .venv/) or set SUSHY_STATIC")
}

struct Server(Child);
impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve_mockup(dir: &Path) -> (Server, u16) {
    let port = edgewatt_e2e::free_port();
    let child = Command::new(sushy_static())
        .args([
            "-i",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-m",
            dir.to_str().unwrap(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start sushy-static");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "sushy-static did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    (Server(child), port)
}

fn mockup_copy() -> tempfile::TempDir {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/redfish/public-rackmount1");
    let dst = tempfile::tempdir().unwrap();
    copy_dir(&src, dst.path());
    dst
}

fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap().flatten() {
        let to = dst.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &to);
        } else {
            std::fs::copy(e.path(), to).unwrap();
        }
    }
}

fn source(url: String, timeout: Duration) -> Redfish {
    Redfish::start(RedfishConfig {
        url,
        credentials_file: None,
        insecure: false,
        interval: Duration::from_millis(200),
        timeout,
    })
    .unwrap()
}

/// Samples until `ok` accepts the result or the deadline passes.
fn sample_until(
    s: &mut Redfish,
    ok: impl Fn(&Result<Sample, SourceError>) -> bool,
) -> Result<Sample, SourceError> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let ctx = Context {
            now: Instant::now(),
            cpu_busy_ratio: None,
            cpu_freq_ratio: None,
        };
        let r = s.sample(&ctx);
        if ok(&r) || Instant::now() > deadline {
            return r;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn environment_metrics_then_legacy_power() {
    let dir = mockup_copy();
    let (_server, port) = serve_mockup(dir.path());
    let mut s = source(format!("http://127.0.0.1:{port}"), Duration::from_secs(5));
    let sample = sample_until(&mut s, |r| r.is_ok()).expect("reading from sushy-static");
    assert_eq!(sample.meters.len(), 1);
    assert_eq!(sample.meters[0].domain, Domain::Platform);
    assert_eq!(
        sample.meters[0].value,
        MeterValue::Watts(374.0),
        "EnvironmentMetrics.PowerWatts"
    );
    assert_eq!(sample.budget_watts, Some(500.0), "PowerLimitWatts.SetPoint");

    // A BMC without EnvironmentMetrics: the legacy Power resource is used.
    let chassis = dir.path().join("Chassis/1U/index.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&chassis).unwrap()).unwrap();
    v.as_object_mut().unwrap().remove("EnvironmentMetrics");
    std::fs::write(&chassis, v.to_string()).unwrap();
    let legacy_dir = dir; // sushy-static reads files per request? restart to be sure
    drop(_server);
    let (_server, port) = serve_mockup(legacy_dir.path());
    let mut s = source(
        format!("http://127.0.0.1:{port}/redfish/v1"),
        Duration::from_secs(5),
    );
    let sample = sample_until(&mut s, |r| r.is_ok()).expect("legacy reading");
    assert_eq!(
        sample.meters[0].value,
        MeterValue::Watts(344.0),
        "Power.PowerControl[0].PowerConsumedWatts"
    );
    assert_eq!(sample.budget_watts, Some(500.0), "PowerLimit.LimitInWatts");

    // And one with neither: down, with the reason.
    v.as_object_mut().unwrap().remove("Power");
    std::fs::write(&chassis, v.to_string()).unwrap();
    drop(_server);
    let (_server, port) = serve_mockup(legacy_dir.path());
    let mut s = source(format!("http://127.0.0.1:{port}"), Duration::from_secs(5));
    let err = sample_until(
        &mut s,
        |r| matches!(r, Err(e) if e.to_string().contains("no chassis")),
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("no chassis reports power"),
        "{err}"
    );
}

/// Auth refused, a BMC that never answers, and nothing listening: each a down source with a reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_failure_timeout_and_unreachable() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app =
        axum::Router::new().fallback(|| async { (axum::http::StatusCode::UNAUTHORIZED, "no") });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let dead_port = edgewatt_e2e::free_port();
    tokio::task::spawn_blocking(move || {
        let mut s = source(format!("http://127.0.0.1:{port}"), Duration::from_secs(2));
        let e = sample_until(
            &mut s,
            |r| matches!(r, Err(e) if e.to_string().contains("401")),
        )
        .unwrap_err();
        assert!(e.to_string().contains("HTTP 401"), "{e}");
        let mut s = source(
            format!("http://127.0.0.1:{silent_port}"),
            Duration::from_millis(300),
        );
        let e = sample_until(
            &mut s,
            |r| matches!(r, Err(e) if e.to_string().contains("GET")),
        )
        .unwrap_err();
        assert!(e.to_string().contains("/redfish/v1/Chassis"), "{e}");
        let mut s = source(
            format!("http://127.0.0.1:{dead_port}"),
            Duration::from_secs(1),
        );
        let e = sample_until(
            &mut s,
            |r| matches!(r, Err(e) if e.to_string().contains("GET")),
        )
        .unwrap_err();
        assert!(e.to_string().contains("GET http://127.0.0.1"), "{e}");
        drop(silent);
    })
    .await
    .unwrap();
    // a bad URL is a configuration error at start
    assert!(Redfish::start(RedfishConfig {
        url: "not a url".into(),
        credentials_file: None,
        insecure: false,
        interval: Duration::from_secs(1),
        timeout: Duration::from_secs(1)
    })
    .is_err());
}
