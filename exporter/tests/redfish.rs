//! The Redfish source against a real Redfish server: `sushy-static` (PyPI `sushy-tools`, installed
//! by `make deps` into `.venv/`) serving DMTF's public mockups (`tests/data/redfish/README.md`):
//! `public-rackmount1` (one server), `public-bladed` (a 4-blade enclosure that alone has power),
//! `public-smartnic` (a host and a SmartNIC SoC, two systems in one box). Plus sessions, TLS with a
//! CA file, auth failure, timeout, unreachable BMC and resources that fail one by one.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{mockup_copy, serve_mockup};
use edgewatt_exporter::source::{Context, Domain, MeterValue, Sample, Source, SourceError};
use edgewatt_exporter::sources::redfish::{Redfish, RedfishConfig};
use edgewatt_exporter::sysfs::HostRoot;

/// UUID and serial of `Systems/437XR1138R2` (rackmount1 and smartnic's host).
const HOST_UUID: &str = "38947555-7742-3448-3784-823347823834";
const SMARTNIC_SOC_UUID: &str = "2eb1a9f8-74f7-4f22-b085-b833dcf37300";

/// Edits a mockup resource in place (sushy-static reads files per request).
fn edit(dir: &Path, resource: &str, f: impl FnOnce(&mut serde_json::Value)) {
    let path = dir.join(resource).join("index.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(&path, v.to_string()).unwrap();
}

/// A host root whose SMBIOS says `uuid`/`serial` (`None`: file absent, as without root).
fn host(uuid: Option<&str>, serial: Option<&str>) -> (tempfile::TempDir, HostRoot) {
    let (dir, t) = common::tree();
    if let Some(u) = uuid {
        t.set("sys/class/dmi/id/product_uuid", u);
    }
    if let Some(s) = serial {
        t.set("sys/class/dmi/id/product_serial", s);
    }
    let root = HostRoot::new(t.root());
    (dir, root)
}

fn config(url: String, root: &HostRoot) -> RedfishConfig {
    RedfishConfig {
        url,
        credentials_file: None,
        insecure: false,
        ca_file: None,
        interval: Duration::from_millis(200),
        timeout: Duration::from_secs(5),
        collect_interval: Duration::from_secs(1),
        chassis: None,
        host_root: root.clone(),
    }
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

fn watts(s: &Sample) -> Option<f64> {
    match s.meters.first()?.value {
        MeterValue::Watts(w) => Some(w),
        _ => None,
    }
}

fn detail_has(needle: &'static str) -> impl Fn(&Result<Sample, SourceError>) -> bool {
    move |r| matches!(r, Ok(s) if s.detail.as_deref().is_some_and(|d| d.contains(needle)))
}

/// One server, every power model DMTF defines, read in order of precision; caps of 0 W or
/// disabled are no budget; a chassis with no figure at all is a down source saying so.
#[test]
fn rackmount_every_power_model_in_turn() {
    let dir = mockup_copy("public-rackmount1");
    let (_server, port) = serve_mockup(dir.path(), None);
    let (_h, root) = host(Some(HOST_UUID), None);
    let mut s = Redfish::start(config(format!("http://127.0.0.1:{port}"), &root)).unwrap();
    let sample = sample_until(&mut s, |r| r.is_ok()).expect("reading from sushy-static");
    assert_eq!(sample.meters.len(), 1);
    assert_eq!(sample.meters[0].domain, Domain::Platform);
    assert_eq!(watts(&sample), Some(374.0), "EnvironmentMetrics.PowerWatts");
    assert_eq!(sample.budget_watts, Some(500.0), "PowerLimitWatts.SetPoint");
    assert!(sample.detail.unwrap().contains("/redfish/v1/Chassis/1U"));

    // The cap switched off: no budget (the exporter must not turn "no cap" into a 0 W budget).
    edit(dir.path(), "Chassis/1U/EnvironmentMetrics", |v| {
        v["PowerLimitWatts"]["ControlMode"] = "Disabled".into()
    });
    let sample = sample_until(&mut s, |r| matches!(r, Ok(s) if s.budget_watts.is_none())).unwrap();
    assert_eq!(sample.budget_watts, None);

    // No EnvironmentMetrics: legacy Power.PowerControl; its LimitInWatts still a budget, 0 none.
    edit(dir.path(), "Chassis/1U", |v| {
        v.as_object_mut().unwrap().remove("EnvironmentMetrics");
    });
    let sample = sample_until(&mut s, detail_has("PowerConsumedWatts")).unwrap();
    assert_eq!(watts(&sample), Some(344.0));
    assert_eq!(sample.budget_watts, Some(500.0), "PowerLimit.LimitInWatts");
    edit(dir.path(), "Chassis/1U/Power", |v| {
        v["PowerControl"][0]["PowerLimit"]["LimitInWatts"] = 0.into()
    });
    let sample = sample_until(&mut s, |r| matches!(r, Ok(s) if s.budget_watts.is_none())).unwrap();
    assert_eq!(sample.budget_watts, None, "a 0 W limit is no budget");

    // Only supplies in the legacy resource: LastPowerOutputWatts summed.
    edit(dir.path(), "Chassis/1U/Power", |v| {
        v.as_object_mut().unwrap().remove("PowerControl");
    });
    let sample = sample_until(&mut s, detail_has("Power.PowerSupplies")).unwrap();
    assert_eq!(watts(&sample), Some(325.0), "{:?}", sample.detail);

    // No legacy Power: PowerSubsystem's supplies, input power (Bay2 is Absent and left out).
    edit(dir.path(), "Chassis/1U", |v| {
        v.as_object_mut().unwrap().remove("Power");
    });
    let sample = sample_until(&mut s, detail_has("PowerSubsystem")).unwrap();
    assert_eq!(watts(&sample), Some(937.4));
    assert!(sample.detail.as_deref().unwrap().contains("input"));
    // no input reading: output power, said so
    edit(
        dir.path(),
        "Chassis/1U/PowerSubsystem/PowerSupplies/Bay1/Metrics",
        |v| {
            v.as_object_mut().unwrap().remove("InputPowerWatts");
            v["OutputPowerWatts"]["Reading"] = 900.into();
        },
    );
    let sample = sample_until(&mut s, detail_has("output")).unwrap();
    assert_eq!(watts(&sample), Some(900.0));

    // Nothing left: down, "no power", with the reason.
    edit(dir.path(), "Chassis/1U", |v| {
        v.as_object_mut().unwrap().remove("PowerSubsystem");
    });
    let err = sample_until(&mut s, |r| matches!(r, Err(SourceError::NoPower(_)))).unwrap_err();
    assert_eq!(err.state(), "no_power");
    assert!(err.to_string().contains("reports no power"), "{err}");
}

/// `EnergykWh` is the counter only when the BMC is polled at least as often as the exporter
/// collects; polled less often, watts (else its steps read 0 W, 0 W, 3×).
#[test]
fn energy_counter_only_when_polled_often_enough() {
    let dir = mockup_copy("public-rackmount1");
    edit(dir.path(), "Chassis/1U/EnvironmentMetrics", |v| {
        v["EnergykWh"] = serde_json::json!({"Reading": 1234.5});
    });
    let (_server, port) = serve_mockup(dir.path(), None);
    let (_h, root) = host(Some(HOST_UUID), None);
    let url = format!("http://127.0.0.1:{port}");
    let mut often = Redfish::start(config(url.clone(), &root)).unwrap();
    let s = sample_until(&mut often, |r| r.is_ok()).unwrap();
    assert!(
        matches!(s.meters[0].value, MeterValue::JoulesAt(j, _) if j == 1234.5 * 3.6e6),
        "{:?}",
        s.meters[0].value
    );
    let mut rarely = Redfish::start(RedfishConfig {
        collect_interval: Duration::from_millis(100),
        ..config(url, &root)
    })
    .unwrap();
    let s = sample_until(&mut rarely, |r| r.is_ok()).unwrap();
    assert_eq!(s.meters[0].value, MeterValue::Watts(374.0));
}

/// DMTF public-bladed: four blades, power only on their shared enclosure. A blade's exporter
/// never reports the enclosure as its own power; it exports it as the enclosure's series. The
/// operator can still name a chassis; a blade that cannot tell which system it is says so.
#[test]
fn bladed_enclosure_is_shared_not_node_power() {
    let dir = mockup_copy("public-bladed");
    let (_server, port) = serve_mockup(dir.path(), None);
    let url = format!("http://127.0.0.1:{port}");
    // Blade 2, recognised by its serial (these systems have no UUID)
    let (_h, root) = host(None, Some("529QB9451R6"));
    let mut s = Redfish::start(config(url.clone(), &root)).unwrap();
    let sample = sample_until(&mut s, |r| matches!(r, Ok(s) if !s.shared.is_empty())).unwrap();
    assert!(sample.meters.is_empty(), "no node power: {sample:?}");
    assert_eq!(sample.shared.len(), 1);
    assert_eq!(sample.shared[0].name, "/redfish/v1/Chassis/MultiBladeEncl");
    assert_eq!(
        sample.shared[0].watts,
        650.0 + 635.0,
        "LastPowerOutputWatts summed"
    );
    let detail = sample.detail.unwrap();
    assert!(detail.contains("3 other system"), "{detail}");

    // A chassis that fails to answer costs only itself: Blade3 gone, Blade2 still planned.
    std::fs::remove_file(dir.path().join("Chassis/Blade3/index.json")).unwrap();
    let mut s = Redfish::start(config(url.clone(), &root)).unwrap();
    let sample = sample_until(&mut s, |r| matches!(r, Ok(s) if !s.shared.is_empty())).unwrap();
    assert_eq!(sample.shared[0].watts, 1285.0);

    // --redfish-chassis: the operator says the enclosure is this node's (a one-blade rig)
    let mut s = Redfish::start(RedfishConfig {
        chassis: Some("MultiBladeEncl".into()),
        ..config(url.clone(), &root)
    })
    .unwrap();
    let sample = sample_until(&mut s, |r| r.is_ok()).unwrap();
    assert_eq!(watts(&sample), Some(1285.0));

    // Identity unknown and four systems: no guess.
    let (_h2, unknown) = host(None, None);
    let mut s = Redfish::start(config(url, &unknown)).unwrap();
    let err = sample_until(&mut s, |r| matches!(r, Err(SourceError::NoPower(_)))).unwrap_err();
    assert!(
        err.to_string().contains("none of the BMC's 4 systems")
            && err.to_string().contains("--redfish-chassis"),
        "{err}"
    );
}

/// DMTF public-smartnic: a host and a SmartNIC SoC share one BMC. Each reads its own chassis: the
/// host its 1U (the card is part of its box), the SoC its card.
#[test]
fn smartnic_each_system_reads_its_own_chassis() {
    let dir = mockup_copy("public-smartnic");
    let (_server, port) = serve_mockup(dir.path(), None);
    let url = format!("http://127.0.0.1:{port}");
    for (uuid, chassis) in [
        (HOST_UUID, "/redfish/v1/Chassis/1U:"),
        (SMARTNIC_SOC_UUID, "/redfish/v1/Chassis/Card1:"),
    ] {
        let (_h, root) = host(Some(uuid), None);
        let mut s = Redfish::start(config(url.clone(), &root)).unwrap();
        let sample = sample_until(&mut s, |r| r.is_ok()).unwrap();
        let detail = sample.detail.clone().unwrap();
        assert!(detail.contains(chassis), "{uuid}: {detail}");
        assert_eq!(watts(&sample), Some(374.0));
    }
    // SMBIOS before 2.6 (and some BMCs) swap the first three UUID fields: still this machine.
    let (_h, root) = host(Some("55759438-4277-4834-3784-823347823834"), None);
    let mut s = Redfish::start(config(url.clone(), &root)).unwrap();
    sample_until(&mut s, detail_has("Chassis/1U:")).expect("byte-swapped UUID matches");
}

/// A BMC whose only system is not this machine (one URL for every node in the chart): no
/// figures, and a reason that names the likely mistake.
#[test]
fn another_nodes_bmc_is_refused() {
    let dir = mockup_copy("public-rackmount1");
    let (_server, port) = serve_mockup(dir.path(), None);
    let (_h, root) = host(
        Some("11111111-2222-3333-4444-555555555555"),
        Some("OTHER-1"),
    );
    let mut s = Redfish::start(config(format!("http://127.0.0.1:{port}"), &root)).unwrap();
    let err = sample_until(&mut s, |r| matches!(r, Err(SourceError::NoPower(_)))).unwrap_err();
    assert!(err.to_string().contains("not this machine"), "{err}");
    // Unreadable SMBIOS (not root): a BMC with one system is taken as this node's.
    let (_h2, unknown) = host(None, None);
    let mut s = Redfish::start(config(format!("http://127.0.0.1:{port}"), &unknown)).unwrap();
    assert!(sample_until(&mut s, |r| r.is_ok()).is_ok());
}

/// What the BMC double in front of sushy-static does about authentication.
#[derive(Clone, Copy, PartialEq)]
enum Auth {
    /// DSP0266 sessions: POST to Sessions returns 201 + X-Auth-Token; GETs need the token.
    Sessions,
    /// No session service (405); every GET needs HTTP Basic.
    BasicOnly,
}

#[derive(Default)]
struct BmcState {
    tokens: Vec<String>,
    logins: usize,
}

/// An authenticating BMC in front of sushy-static (which serves the data but checks nothing).
fn authenticating_bmc(
    rt: &tokio::runtime::Runtime,
    backend: u16,
    mode: Auth,
) -> (u16, Arc<Mutex<BmcState>>, Arc<AtomicUsize>) {
    use axum::body::Bytes;
    use axum::http::{HeaderMap, Method, StatusCode, Uri};
    use axum::response::IntoResponse;
    let state = Arc::new(Mutex::new(BmcState::default()));
    let gets = Arc::new(AtomicUsize::new(0));
    let (st, g) = (state.clone(), gets.clone());
    let handler = move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
        let (st, g) = (st.clone(), g.clone());
        async move {
            let path = uri.path().to_string();
            if method == Method::POST
                && path.trim_end_matches('/') == "/redfish/v1/SessionService/Sessions"
            {
                if mode == Auth::BasicOnly {
                    return StatusCode::METHOD_NOT_ALLOWED.into_response();
                }
                let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                if v["UserName"] != "admin" || v["Password"] != "s3cret" {
                    return StatusCode::UNAUTHORIZED.into_response();
                }
                let mut s = st.lock().unwrap();
                s.logins += 1;
                let token = format!("token-{}", s.logins);
                s.tokens.push(token.clone());
                return (
                    StatusCode::CREATED,
                    [
                        ("X-Auth-Token", token),
                        (
                            "Location",
                            format!("/redfish/v1/SessionService/Sessions/{}", s.logins),
                        ),
                    ],
                    "{}",
                )
                    .into_response();
            }
            // The service root is readable without authentication (DSP0266).
            let open = path.trim_end_matches('/') == "/redfish/v1";
            let authorised = match mode {
                Auth::Sessions => headers
                    .get("X-Auth-Token")
                    .and_then(|t| t.to_str().ok())
                    .is_some_and(|t| st.lock().unwrap().tokens.iter().any(|k| k == t)),
                // admin:s3cret
                Auth::BasicOnly => {
                    headers.get("Authorization").and_then(|a| a.to_str().ok())
                        == Some("Basic YWRtaW46czNjcmV0")
                }
            };
            if !open && !authorised {
                return StatusCode::UNAUTHORIZED.into_response();
            }
            g.fetch_add(1, Ordering::Relaxed);
            let body = reqwest_get(backend, &path).await;
            ([("Content-Type", "application/json")], body).into_response()
        }
    };
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    rt.spawn(async move {
        axum::serve(listener, axum::Router::new().fallback(handler))
            .await
            .unwrap()
    });
    (port, state, gets)
}

/// A GET against sushy-static ([`common::get`]) off the async workers.
async fn reqwest_get(port: u16, path: &str) -> String {
    let path = path.to_string();
    tokio::task::spawn_blocking(move || common::get(port, &path).expect("sushy-static answers").1)
        .await
        .unwrap()
}

/// DSP0266 session login: one login, the token on every GET, a new login once the session is
/// gone; a BMC without sessions gets Basic on every request; wrong credentials are a down source.
#[test]
fn sessions_then_basic_fallback() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = mockup_copy("public-rackmount1");
    let (_server, backend) = serve_mockup(dir.path(), None);
    let (_h, root) = host(Some(HOST_UUID), None);
    let creds = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(creds.path(), "admin:s3cret\n").unwrap();
    let with_creds = |port: u16| RedfishConfig {
        credentials_file: Some(creds.path().to_path_buf()),
        ..config(format!("http://127.0.0.1:{port}"), &root)
    };

    let (port, state, gets) = authenticating_bmc(&rt, backend, Auth::Sessions);
    let mut s = Redfish::start(with_creds(port)).unwrap();
    let sample = sample_until(&mut s, |r| r.is_ok()).expect("reading through a session");
    assert_eq!(watts(&sample), Some(374.0));
    std::thread::sleep(Duration::from_millis(600));
    assert!(gets.load(Ordering::Relaxed) > 3, "polled several times");
    assert_eq!(state.lock().unwrap().logins, 1, "one login for many GETs");
    // The BMC drops every session (reboot, timeout): the exporter logs in again.
    state.lock().unwrap().tokens.clear();
    let deadline = Instant::now() + Duration::from_secs(10);
    while state.lock().unwrap().logins < 2 {
        assert!(
            Instant::now() < deadline,
            "no new login after the session was dropped"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let before = gets.load(Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(600));
    assert!(
        gets.load(Ordering::Relaxed) > before,
        "polling continues on the new session"
    );
    assert!(sample_until(&mut s, |r| r.is_ok()).is_ok());

    // No session service: Basic.
    let (port, _, gets) = authenticating_bmc(&rt, backend, Auth::BasicOnly);
    let mut s = Redfish::start(with_creds(port)).unwrap();
    assert_eq!(
        watts(&sample_until(&mut s, |r| r.is_ok()).unwrap()),
        Some(374.0)
    );
    assert!(gets.load(Ordering::Relaxed) > 0);

    // sushy-static itself answers the POST with 204 and no token: Basic too, and it works.
    let mut s = Redfish::start(with_creds(backend)).unwrap();
    assert!(sample_until(&mut s, |r| r.is_ok()).is_ok());

    // Wrong password: down, 401 named.
    std::fs::write(creds.path(), "admin:wrong\n").unwrap();
    let (port, _, _) = authenticating_bmc(&rt, backend, Auth::Sessions);
    let mut s = Redfish::start(with_creds(port)).unwrap();
    let err = sample_until(
        &mut s,
        |r| matches!(r, Err(e) if e.to_string().contains("401")),
    )
    .unwrap_err();
    assert!(err.to_string().contains("HTTP 401"), "{err}");
}

/// A BMC certificate signed by a site CA: refused without `--redfish-ca-file`, accepted with it.
#[test]
fn tls_with_a_ca_file() {
    let pki = tempfile::tempdir().unwrap();
    let p = |f: &str| pki.path().join(f);
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(pki.path())
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=edgewatt test CA",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "bmc.key",
        "-out",
        "bmc.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    std::fs::write(
        p("ext"),
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "bmc.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "bmc.pem",
        "-days",
        "2",
        "-extfile",
        "ext",
    ]);

    let dir = mockup_copy("public-rackmount1");
    let (_server, port) = serve_mockup(dir.path(), Some((&p("bmc.pem"), &p("bmc.key"))));
    let (_h, root) = host(Some(HOST_UUID), None);
    let url = format!("https://127.0.0.1:{port}");
    let mut s = Redfish::start(config(url.clone(), &root)).unwrap();
    let err = sample_until(
        &mut s,
        |r| matches!(r, Err(e) if e.to_string().contains("GET")),
    )
    .unwrap_err();
    assert!(
        err.to_string().to_lowercase().contains("certificate"),
        "{err}"
    );
    let mut s = Redfish::start(RedfishConfig {
        ca_file: Some(p("ca.pem")),
        ..config(url.clone(), &root)
    })
    .unwrap();
    assert_eq!(
        watts(&sample_until(&mut s, |r| r.is_ok()).unwrap()),
        Some(374.0)
    );
    // a CA file that is not one is a configuration error at start
    let e = Redfish::start(RedfishConfig {
        ca_file: Some(p("ext")),
        ..config(url, &root)
    })
    .err()
    .expect("not a PEM file");
    assert!(e.to_string().contains("--redfish-ca-file"), "{e}");
}

/// Auth refused, a BMC that never answers (the configured timeout), and nothing listening: each a
/// down source with a reason.
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
        let (_h, root) = host(None, None);
        let mut s = Redfish::start(config(format!("http://127.0.0.1:{port}"), &root)).unwrap();
        let e = sample_until(
            &mut s,
            |r| matches!(r, Err(e) if e.to_string().contains("401")),
        )
        .unwrap_err();
        assert!(e.to_string().contains("HTTP 401"), "{e}");
        let started = Instant::now();
        let mut s = Redfish::start(RedfishConfig {
            timeout: Duration::from_millis(300),
            ..config(format!("http://127.0.0.1:{silent_port}"), &root)
        })
        .unwrap();
        let e = sample_until(
            &mut s,
            |r| matches!(r, Err(e) if e.to_string().contains("GET")),
        )
        .unwrap_err();
        assert!(e.to_string().contains("/redfish/v1"), "{e}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the 300 ms timeout applies"
        );
        let mut s = Redfish::start(config(format!("http://127.0.0.1:{dead_port}"), &root)).unwrap();
        let e = sample_until(
            &mut s,
            |r| matches!(r, Err(e) if e.to_string().contains("GET")),
        )
        .unwrap_err();
        assert!(e.to_string().contains("GET http://127.0.0.1"), "{e}");
        assert_eq!(e.state(), "error");
        drop(silent);
        // a bad URL is a configuration error at start
        assert!(Redfish::start(config("not a url".into(), &root)).is_err());
    })
    .await
    .unwrap();
}
