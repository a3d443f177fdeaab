//! The end-to-end harness: the API server double (or a real cluster), a real Prometheus, simulated
//! nodes and devices (each a real `edgewatt-exporter serve` on its own fixture tree), the real
//! `edgewatt-controller` and `edgewatt-scheduler` binaries, and two TEST PARTS standing in for what
//! a real cluster provides: a Flotta operator/device-agent stand-in and a kube-scheduler stand-in
//! (plus a ReplicaSet stand-in that recreates evicted pods).
//!
//! Real cluster: set `E2E_KUBECONFIG` to a kind/k3s cluster with the chart's CRDs installed; the
//! double is then not started and everything else talks to that cluster (see e2e/README.md).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use edgewatt_e2e::apiserver::ApiServer;
use edgewatt_e2e::prometheus::{Prometheus, ScrapeTarget};
use edgewatt_exporter::fixture::{BatteryFiles, FixtureTree};
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::discovery::ApiResource;
use serde_json::{json, Value};

/// The project's binaries, built by `cargo build --workspace` (nextest builds them for the
/// workspace's integration tests before running any).
pub struct Bins {
    pub exporter: PathBuf,
    pub controller: PathBuf,
    pub scheduler: PathBuf,
}

pub fn bins() -> Bins {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(Path::parent).unwrap().to_path_buf();
    let find = |name: &str| {
        let p = dir.join(name);
        assert!(
            p.exists(),
            "{} not built: run `cargo build --workspace --bins` (make test does)",
            p.display()
        );
        p
    };
    Bins {
        exporter: find("edgewatt-exporter"),
        controller: find("edgewatt-controller"),
        scheduler: find("edgewatt-scheduler"),
    }
}

/// A child process with its log in a file; killed on drop.
pub struct Proc {
    pub name: String,
    child: Option<Child>,
    pub log: PathBuf,
    bin: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
}

impl Proc {
    pub fn spawn(
        name: &str,
        bin: &Path,
        args: &[String],
        env: &[(String, String)],
        logdir: &Path,
    ) -> Proc {
        let mut p = Proc {
            name: name.into(),
            child: None,
            log: logdir.join(format!("{name}.log")),
            bin: bin.into(),
            args: args.to_vec(),
            env: env.to_vec(),
        };
        p.start();
        p
    }

    pub fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(&self.bin)
            .args(&self.args)
            .envs(self.env.iter().cloned())
            // enough detail in the controller's log to tell a slow cycle from a wrong decision
            .env("RUST_LOG", "info,edgewatt_controller=debug")
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", self.name));
        self.child = Some(child);
    }

    /// SIGKILL, like an OOM kill or a node loss: no graceful shutdown.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn log_tail(&self, lines: usize) -> String {
        self.log_lines(|_| true, lines)
    }

    /// The last `lines` lines of the log that `keep` keeps.
    pub fn log_lines(&self, keep: impl Fn(&str) -> bool, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let v: Vec<&str> = text.lines().filter(|l| keep(l)).collect();
        v[v.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What happened when, printed at the end of each scenario.
#[derive(Clone)]
pub struct Timeline {
    start: Instant,
    events: Arc<Mutex<Vec<(f64, String)>>>,
}

impl Timeline {
    pub fn new() -> Self {
        Self {
            start: Instant::now(),
            events: Arc::default(),
        }
    }
    pub fn mark(&self, what: impl Into<String>) -> f64 {
        let t = self.start.elapsed().as_secs_f64();
        let what = what.into();
        eprintln!("[{t:7.2}s] {what}");
        self.events.lock().unwrap().push((t, what));
        t
    }
    pub fn now(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }
    pub fn print(&self, title: &str) {
        eprintln!("\n== timeline: {title} ==");
        for (t, w) in self.events.lock().unwrap().iter() {
            eprintln!("  {t:7.2}s  {w}");
        }
    }
}

/// A simulated node or edge device: a real exporter process reading a fixture tree that the
/// test rewrites (battery level, mains, platform power).
pub struct Sim {
    pub name: String,
    pub tree: FixtureTree,
    _dir: tempfile::TempDir,
    pub exporter: Proc,
    pub port: u16,
}

impl Sim {
    pub fn set_battery(&self, percent: u64, discharging: bool) {
        write_battery(&self.tree, percent, discharging);
    }

    pub fn set_power(&self, watts: f64) {
        write_power(&self.tree, watts);
    }
}

fn write_battery(tree: &FixtureTree, percent: u64, discharging: bool) {
    let full = 50_000_000u64; // 50 Wh
    tree.battery(
        "BAT0",
        &BatteryFiles {
            status: if discharging {
                "Discharging"
            } else {
                "Charging"
            },
            capacity: Some(percent),
            energy_now_uwh: Some(full * percent / 100),
            energy_full_uwh: Some(full),
            power_now_uw: Some(if discharging { 6_000_000 } else { 0 }),
            ..Default::default()
        },
    );
    tree.mains("AC", !discharging);
}

fn write_power(tree: &FixtureTree, watts: f64) {
    tree.set(
        "sys/class/hwmon/hwmon0/power1_average",
        (watts * 1e6) as u64,
    );
}

/// Kubernetes access for the scenarios: the double, or a real cluster from `E2E_KUBECONFIG`.
pub struct Cluster {
    pub server: Option<ApiServer>,
    pub client: kube::Client,
    pub kubeconfig: PathBuf,
    _kubeconfig_dir: Option<tempfile::TempDir>,
}

pub fn real_cluster() -> Option<PathBuf> {
    std::env::var_os("E2E_KUBECONFIG").map(PathBuf::from)
}

impl Cluster {
    pub async fn start() -> Cluster {
        edgewatt_e2e::apiserver::install_crypto_provider();
        if let Some(path) = real_cluster() {
            let cfg = kube::Config::from_custom_kubeconfig(
                kube::config::Kubeconfig::read_from(&path).unwrap(),
                &Default::default(),
            )
            .await
            .unwrap();
            let client = kube::Client::try_from(cfg).unwrap();
            return Cluster {
                server: None,
                client,
                kubeconfig: path,
                _kubeconfig_dir: None,
            };
        }
        let server = ApiServer::start().await.unwrap();
        let client = server.client().unwrap();
        let kubeconfig = server.kubeconfig_path().to_path_buf();
        Cluster {
            server: Some(server),
            client,
            kubeconfig,
            _kubeconfig_dir: None,
        }
    }

    pub fn api(
        &self,
        group: &str,
        version: &str,
        kind: &str,
        plural: &str,
        ns: Option<&str>,
    ) -> Api<DynamicObject> {
        let ar = ApiResource {
            group: group.into(),
            version: version.into(),
            api_version: if group.is_empty() {
                version.into()
            } else {
                format!("{group}/{version}")
            },
            kind: kind.into(),
            plural: plural.into(),
        };
        match ns {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, &ar),
            None => Api::all_with(self.client.clone(), &ar),
        }
    }

    pub fn nodes(&self) -> Api<DynamicObject> {
        self.api("", "v1", "Node", "nodes", None)
    }
    pub fn pods(&self, ns: &str) -> Api<DynamicObject> {
        self.api("", "v1", "Pod", "pods", Some(ns))
    }
    pub fn all_pods(&self) -> Api<DynamicObject> {
        self.api("", "v1", "Pod", "pods", None)
    }
    pub fn devices(&self, ns: &str) -> Api<DynamicObject> {
        self.api(
            "management.project-flotta.io",
            "v1alpha1",
            "EdgeDevice",
            "edgedevices",
            Some(ns),
        )
    }
    pub fn workloads(&self, ns: &str) -> Api<DynamicObject> {
        self.api(
            "management.project-flotta.io",
            "v1alpha1",
            "EdgeWorkload",
            "edgeworkloads",
            Some(ns),
        )
    }
    pub fn policies(&self) -> Api<DynamicObject> {
        self.api(
            "edgewatt.io",
            "v1alpha1",
            "EnergyPolicy",
            "energypolicies",
            None,
        )
    }

    /// Creates or replaces an object from JSON (server-side apply).
    pub async fn apply(&self, api: &Api<DynamicObject>, obj: Value) -> DynamicObject {
        let name = obj["metadata"]["name"].as_str().unwrap().to_string();
        let pp = PatchParams::apply("e2e").force();
        api.patch(&name, &pp, &Patch::Apply(&obj))
            .await
            .unwrap_or_else(|e| panic!("apply {name}: {e}"))
    }

    pub async fn create(&self, api: &Api<DynamicObject>, obj: Value) -> DynamicObject {
        let o: DynamicObject = serde_json::from_value(obj).unwrap();
        api.create(&PostParams::default(), &o).await.unwrap()
    }

    pub async fn patch_status(&self, api: &Api<DynamicObject>, name: &str, status: Value) {
        let _ = api
            .patch_status(
                name,
                &PatchParams::default(),
                &Patch::Merge(&json!({"status": status})),
            )
            .await;
    }

    pub async fn namespace(&self, name: &str, labels: Value) {
        let api = self.api("", "v1", "Namespace", "namespaces", None);
        self.apply(&api, json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}})).await;
    }

    pub async fn node(&self, name: &str, labels: Value) {
        let api = self.nodes();
        self.apply(&api, json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels}, "spec": {}})).await;
        self.patch_status(&api, name, json!({"conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "lastHeartbeatTime": chrono::Utc::now().to_rfc3339()}], "allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"}})).await;
    }

    pub async fn events(&self) -> Vec<Value> {
        let core = self.api("", "v1", "Event", "events", None);
        let new = self.api("events.k8s.io", "v1", "Event", "events", None);
        let mut out = Vec::new();
        for api in [core, new] {
            if let Ok(list) = api.list(&Default::default()).await {
                out.extend(
                    list.items
                        .into_iter()
                        .map(|e| serde_json::to_value(e).unwrap()),
                );
            }
        }
        out
    }

    pub async fn event_reasons(&self) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for e in self.events().await {
            if let Some(r) = e["reason"].as_str() {
                *m.entry(r.to_string()).or_default() += 1;
            }
        }
        m
    }
}

/// Everything one scenario runs.
pub struct Loop {
    pub cluster: Cluster,
    pub prom: Prometheus,
    pub sims: BTreeMap<String, Sim>,
    pub controller: Proc,
    pub controller_port: u16,
    pub scheduler: Proc,
    pub scheduler_port: u16,
    pub timeline: Timeline,
    pub logdir: tempfile::TempDir,
    pub bins: Bins,
    pub heartbeat_port: u16,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// How a simulated target is known to Prometheus.
pub enum Kind {
    Node,
    /// An EdgeDevice in this namespace; its series get `edgedeviceid` (like Flotta's remote write).
    Device(&'static str),
}

/// Starts a simulated target: battery at 90 % discharging, a 20 W power meter. The exporter
/// discovers its energy sources (power_supply, hwmon) once, at startup, so the whole fixture tree
/// is written before it starts: written after, a busy machine let the exporter look first, find
/// no battery and no meter, and serve no battery or power series for that target at all.
pub fn start_sim(bins: &Bins, logdir: &Path, name: &str) -> Sim {
    let dir = tempfile::tempdir().unwrap();
    let tree = FixtureTree::new(dir.path());
    tree.proc_stat(100, 100);
    tree.cpuinfo("Intel(R) Core(TM) i7-8650U CPU @ 1.90GHz", 4, false);
    tree.set("sys/class/hwmon/hwmon0/name", "power_meter");
    write_battery(&tree, 90, true);
    write_power(&tree, 20.0);
    let port = edgewatt_e2e::free_port();
    let sim_args: Vec<String> = [
        "--host-root",
        dir.path().to_str().unwrap(),
        "--node-name",
        name,
        "--interval",
        "1s",
        "--kubernetes",
        "off",
        // the simulated node's processes are in its fixture /proc, not in the kernel eBPF sees
        "--attribution",
        "procfs",
        "--no-estimator",
        "serve",
        "--listen",
        &format!("127.0.0.1:{port}"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    Sim {
        name: name.into(),
        tree,
        _dir: dir,
        exporter: Proc::spawn(
            &format!("exporter-{name}"),
            &bins.exporter,
            &sim_args,
            &[],
            logdir,
        ),
        port,
    }
}

impl Loop {
    /// Starts Prometheus (with the chart's alert rules), one exporter per target, the Flotta
    /// stand-in's heartbeat endpoint, and the controller and extender binaries configured as the
    /// chart configures them (flags below), with short intervals.
    pub async fn start(targets: &[(&str, Kind)]) -> Loop {
        let timeline = Timeline::new();
        let bins = bins();
        let logdir = tempfile::tempdir().unwrap();
        let cluster = Cluster::start().await;
        let mut sims = BTreeMap::new();
        for (name, _) in targets {
            sims.insert(name.to_string(), start_sim(&bins, logdir.path(), name));
        }
        // Flotta's operator exports flotta_api_edge_devices_heartbeat{deviceID}; the stand-in too.
        let hb_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let heartbeat_port = hb_listener.local_addr().unwrap().port();
        let devices: Vec<String> = targets
            .iter()
            .filter(|(_, k)| matches!(k, Kind::Device(_)))
            .map(|(n, _)| n.to_string())
            .collect();
        let started = Instant::now();
        let hb = tokio::spawn(async move {
            let app = axum::Router::new().route(
                "/metrics",
                axum::routing::get(move || {
                    let devices = devices.clone();
                    async move {
                        let beats = started.elapsed().as_secs();
                        let mut s =
                            String::from("# TYPE flotta_api_edge_devices_heartbeat counter\n");
                        for d in devices {
                            s.push_str(&format!(
                                "flotta_api_edge_devices_heartbeat{{deviceID=\"{d}\"}} {beats}\n"
                            ));
                        }
                        s
                    }
                }),
            );
            let _ = axum::serve(hb_listener, app).await;
        });
        let controller_port = edgewatt_e2e::free_port();
        let scheduler_port = edgewatt_e2e::free_port();
        let mut scrape: Vec<ScrapeTarget> = Vec::new();
        for (name, kind) in targets {
            let mut t = ScrapeTarget::new(
                &format!("exporter-{name}"),
                &format!("127.0.0.1:{}", sims[*name].port),
            );
            if let Kind::Device(_) = kind {
                t.labels.push(("edgedeviceid".into(), name.to_string()));
            }
            scrape.push(t);
        }
        scrape.push(ScrapeTarget::new(
            "flotta",
            &format!("127.0.0.1:{heartbeat_port}"),
        ));
        scrape.push(ScrapeTarget::new(
            "edgewatt-controller",
            &format!("127.0.0.1:{controller_port}"),
        ));
        scrape.push(ScrapeTarget::new(
            "edgewatt-scheduler",
            &format!("127.0.0.1:{scheduler_port}"),
        ));
        let rules = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../charts/edgewatt/files/alerts.rules.yaml");
        let sim_names: Vec<String> = sims.keys().cloned().collect();
        let prom = tokio::task::spawn_blocking(move || {
            let mut prom = Prometheus::start(Duration::from_secs(1)).unwrap();
            for t in scrape {
                prom.add_target(t).unwrap();
            }
            if rules.exists() {
                prom.add_rule_file(rules).unwrap();
            }
            // Every simulated target serves its battery and meter before a scenario starts: a
            // target without them can never be starved, nor chosen as a destination.
            for name in sim_names {
                for metric in [
                    "edgewatt_node_battery_charge_ratio",
                    "edgewatt_node_platform_watts",
                ] {
                    prom.wait_for_series(
                        &format!("{metric}{{job=\"exporter-{name}\"}}"),
                        Duration::from_secs(30),
                    )
                    .unwrap_or_else(|e| {
                        panic!("exporter-{name} serves no {metric} (see its energy sources): {e}")
                    });
                }
            }
            prom
        })
        .await
        .unwrap();
        timeline.mark(format!(
            "Prometheus {} scraping {} exporters",
            prom.url(),
            sims.len()
        ));
        let kube_env = vec![(
            "KUBECONFIG".to_string(),
            cluster.kubeconfig.to_str().unwrap().to_string(),
        )];
        let controller_args: Vec<String> = [
            "--prometheus-url",
            &prom.url(),
            "--interval",
            "1s",
            "--lease-namespace",
            "default",
            "--metrics-addr",
            &format!("127.0.0.1:{controller_port}"),
            "--node-max-age",
            "20s",
            "--device-max-age",
            "20s",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let controller = Proc::spawn(
            "controller",
            &bins.controller,
            &controller_args,
            &kube_env,
            logdir.path(),
        );
        let scheduler_args = scheduler_args(&prom.url(), scheduler_port);
        let scheduler = Proc::spawn(
            "scheduler",
            &bins.scheduler,
            &scheduler_args,
            &kube_env,
            logdir.path(),
        );
        wait_http(controller_port, "/healthz", Duration::from_secs(20)).await;
        wait_http(scheduler_port, "/healthz", Duration::from_secs(20)).await;
        timeline.mark("controller and extender up");
        Loop {
            cluster,
            prom,
            sims,
            controller,
            controller_port,
            scheduler,
            scheduler_port,
            timeline,
            logdir,
            bins,
            heartbeat_port,
            tasks: vec![hb],
        }
    }

    pub fn sim(&self, name: &str) -> &Sim {
        &self.sims[name]
    }

    pub fn spawn_task(&mut self, t: tokio::task::JoinHandle<()>) {
        self.tasks.push(t);
    }

    /// Instant query through the real Prometheus (blocking client, off the async workers).
    pub async fn query(&self, promql: &str) -> Value {
        let url = self.prom.url();
        let q = promql.to_string();
        tokio::task::spawn_blocking(move || {
            reqwest::blocking::Client::new()
                .get(format!("{url}/api/v1/query"))
                .query(&[("query", q.as_str())])
                .send()
                .and_then(|r| r.json::<Value>())
                .map(|v| v["data"]["result"].clone())
                .unwrap_or(Value::Null)
        })
        .await
        .unwrap()
    }

    pub async fn query_value(&self, promql: &str) -> Option<f64> {
        let r = self.query(promql).await;
        r.as_array()?.first()?["value"][1].as_str()?.parse().ok()
    }

    /// What explains a failed scenario: the controller's decisions (its log without the
    /// per-cycle timing lines; the whole log is kept on disk), each EnergyPolicy's status, the
    /// EdgeDevices and EdgeWorkloads as the API server holds them (to compare with the
    /// `store_rv` the controller logs for what its reflector holds), and what Prometheus says
    /// about each device (battery, sample age, heartbeat increase) and each scrape target.
    pub fn dump_logs(&mut self) {
        self.logdir.disable_cleanup(true);
        eprintln!(
            "--- logs kept in {} (the directory is not removed) ---",
            self.logdir.path().display()
        );
        eprintln!(
            "--- {} log: decisions and warnings (without `policy cycle` lines, last 120) ---\n{}",
            self.controller.name,
            self.controller
                .log_lines(|l| !l.contains("policy cycle"), 120)
        );
        eprintln!(
            "--- {} log (tail) ---\n{}",
            self.controller.name,
            self.controller.log_tail(15)
        );
        eprintln!(
            "--- {} log (tail) ---\n{}",
            self.scheduler.name,
            self.scheduler.log_tail(20)
        );
        if let Some(s) = &self.cluster.server {
            // What the controller concluded: conditions, starved list, migrations.
            for p in s.list("energypolicies") {
                eprintln!(
                    "--- EnergyPolicy {} status ---\n{}",
                    p["metadata"]["name"],
                    serde_json::to_string_pretty(&p["status"]).unwrap_or_default()
                );
            }
            eprintln!(
                "--- API server: EdgeDevices (current resourceVersion {}) ---",
                s.resource_version()
            );
            // `namespace/name rv=…` of a listed object.
            let id = |o: &Value| {
                let m = &o["metadata"];
                format!(
                    "{}/{} rv={}",
                    m["namespace"].as_str().unwrap_or_default(),
                    m["name"].as_str().unwrap_or_default(),
                    m["resourceVersion"].as_str().unwrap_or_default()
                )
            };
            for d in s.list("edgedevices") {
                eprintln!(
                    "{} phase={} labels={} workloads={}",
                    id(&d),
                    d["status"]["phase"],
                    d["metadata"]["labels"],
                    d["status"]["workloads"]
                );
            }
            eprintln!("--- API server: EdgeWorkloads ---");
            for w in s.list("edgeworkloads") {
                eprintln!(
                    "{} device={} selector={} annotations={}",
                    id(&w),
                    w["spec"]["device"],
                    w["spec"]["deviceSelector"],
                    w["metadata"]["annotations"]
                );
            }
        }
        // Prometheus' view, through a plain thread (this may run in a runtime worker's Drop).
        let url = self.prom.url();
        let queries = [
            "edgewatt_node_battery_charge_ratio",
            "time() - timestamp(edgewatt_node_battery_charge_ratio)",
            "sum by (deviceID) (increase(flotta_api_edge_devices_heartbeat[900s]))",
            "up",
        ];
        let out = std::thread::spawn(move || {
            let c = reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .ok()?;
            let mut out = String::new();
            for q in queries {
                let r = c
                    .get(format!("{url}/api/v1/query"))
                    .query(&[("query", q)])
                    .send()
                    .and_then(|r| r.json::<Value>());
                out.push_str(&format!("{q}:\n"));
                match r {
                    Ok(v) => {
                        for s in v["data"]["result"].as_array().into_iter().flatten() {
                            out.push_str(&format!("  {} = {}\n", s["metric"], s["value"][1]));
                        }
                    }
                    Err(e) => out.push_str(&format!("  error: {e}\n")),
                }
            }
            Some(out)
        })
        .join()
        .ok()
        .flatten()
        .unwrap_or_default();
        eprintln!("--- Prometheus ---\n{out}");
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        if std::thread::panicking() {
            self.dump_logs();
        }
    }
}

/// The extender's flags, as the chart passes them.
pub fn scheduler_args(prom_url: &str, port: u16) -> Vec<String> {
    [
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--prometheus-url",
        prom_url,
        "--refresh-interval",
        "1s",
        "--max-data-age",
        "10s",
        // the chart passes the policies' default budget to the extender too
        "--default-power-budget-watts",
        "60",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

pub async fn wait_http(port: u16, path: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    let url = format!("http://127.0.0.1:{port}{path}");
    loop {
        let u = url.clone();
        let ok = tokio::task::spawn_blocking(move || {
            reqwest::blocking::get(u)
                .map(|r| r.status().is_success())
                .unwrap_or(false)
        })
        .await
        .unwrap();
        if ok {
            return;
        }
        assert!(Instant::now() < deadline, "{url} not up in {timeout:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Polls `check` until it returns Some, or panics with `what`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// TEST PART — Flotta stand-in: plays the Flotta operator and the device agents. Every 300 ms it
/// lists EdgeWorkloads, places each on the device it names (`spec.device`) or whose labels match
/// `spec.deviceSelector`, labels that device `workload/<name>=true`, reports the workload
/// `Deploying` and, `deploy_delay` later, `running` (lowercase, as heartbeats write it), keeps the
/// device `up`, and drops workloads no longer placed there.
pub fn flotta_standin(
    client: kube::Client,
    ns: &'static str,
    deploy_delay: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let ar = |kind: &str, plural: &str| ApiResource {
            group: "management.project-flotta.io".into(),
            version: "v1alpha1".into(),
            api_version: "management.project-flotta.io/v1alpha1".into(),
            kind: kind.into(),
            plural: plural.into(),
        };
        let devices: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), ns, &ar("EdgeDevice", "edgedevices"));
        let workloads: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), ns, &ar("EdgeWorkload", "edgeworkloads"));
        let mut first_seen: BTreeMap<(String, String), Instant> = BTreeMap::new();
        loop {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let (Ok(ds), Ok(ws)) = (
                devices.list(&Default::default()).await,
                workloads.list(&Default::default()).await,
            ) else {
                continue;
            };
            for d in ds.items {
                let dname = d.metadata.name.clone().unwrap_or_default();
                let labels = d.metadata.labels.clone().unwrap_or_default();
                let placed: Vec<String> = ws
                    .items
                    .iter()
                    .filter(|w| {
                        let spec = &w.data["spec"];
                        match spec["device"].as_str() {
                            Some(dev) if !dev.is_empty() => dev == dname,
                            _ => spec["deviceSelector"]["matchLabels"]
                                .as_object()
                                .is_some_and(|m| {
                                    !m.is_empty()
                                        && m.iter().all(|(k, v)| {
                                            labels.get(k).map(String::as_str) == v.as_str()
                                        })
                                }),
                        }
                    })
                    .filter_map(|w| w.metadata.name.clone())
                    .collect();
                let now = Instant::now();
                first_seen.retain(|(dev, w), _| dev != &dname || placed.contains(w));
                let reported: Vec<Value> = placed
                    .iter()
                    .map(|w| {
                        let since = *first_seen.entry((dname.clone(), w.clone())).or_insert(now);
                        let phase = if now.duration_since(since) >= deploy_delay { "running" } else { "Deploying" };
                        json!({"name": w, "phase": phase, "lastTransitionTime": chrono::Utc::now().to_rfc3339()})
                    })
                    .collect();
                // Operator labels: workload/<name>=true for exactly the placed workloads.
                let mut label_patch = serde_json::Map::new();
                for k in labels.keys().filter(|k| k.starts_with("workload/")) {
                    if !placed.iter().any(|w| format!("workload/{w}") == **k) {
                        label_patch.insert(k.clone(), Value::Null);
                    }
                }
                for w in &placed {
                    label_patch.insert(format!("workload/{w}"), json!("true"));
                }
                let _ = devices
                    .patch(
                        &dname,
                        &PatchParams::default(),
                        &Patch::Merge(&json!({"metadata": {"labels": label_patch}})),
                    )
                    .await;
                let current = d.data["status"]["workloads"].clone();
                let same = current.as_array().map(|c| {
                    c.len() == reported.len()
                        && c.iter()
                            .zip(&reported)
                            .all(|(a, b)| a["name"] == b["name"] && a["phase"] == b["phase"])
                });
                if same != Some(true) || d.data["status"]["phase"] != "up" {
                    let _ = devices
                        .patch_status(
                            &dname,
                            &PatchParams::default(),
                            &Patch::Merge(
                                &json!({"status": {"phase": "up", "workloads": reported}}),
                            ),
                        )
                        .await;
                }
            }
        }
    })
}

/// The workload names a device reports running.
pub fn running_on(device: &DynamicObject) -> Vec<String> {
    device.data["status"]["workloads"]
        .as_array()
        .map(|ws| {
            ws.iter()
                .filter(|w| {
                    w["phase"]
                        .as_str()
                        .is_some_and(|p| p.eq_ignore_ascii_case("running"))
                })
                .filter_map(|w| w["name"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// An EnergyPolicy with short windows for tests.
pub fn policy(name: &str, mode: &str, targets: Value, for_: &str) -> Value {
    json!({
        "apiVersion": "edgewatt.io/v1alpha1", "kind": "EnergyPolicy",
        "metadata": {"name": name},
        "spec": {
            "targets": targets,
            "starvation": {"batteryBelowPercent": 20, "for": for_},
            "recovery": {"batteryAbovePercent": 35, "for": for_},
            "action": {"mode": mode, "strategy": "MakeBeforeBreak", "taintNodes": true, "maxConcurrent": 2, "maxPerHour": 20, "cooldown": "2m", "migrationTimeout": "30s"},
            "scheduling": {"defaultPowerBudgetWatts": 60, "minHeadroomWatts": 5}
        }
    })
}
