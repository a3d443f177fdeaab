//! The end-to-end harness. **The chart is the fixture**: every scenario installs
//! `charts/edgewatt` with Helm's engine into the API server double (which enforces RBAC and CRD
//! admission), reads back the DaemonSets and Deployments Helm created, and runs each of their
//! pods as local processes with exactly the rendered args, env, mounts and ServiceAccount —
//! the translation is `edgewatt_e2e::pods` (documented there, written once). Test-only knobs
//! (short intervals, the Prometheus URL, procfs attribution) are chart values:
//! `e2e/tests/values-test.yaml` over the scenario's values (chart defaults, or
//! `examples/chart-values-edge.yaml`).
//!
//! Around the chart, TEST PARTS stand in for what a cluster provides, named as such: the
//! Prometheus operator (`edgewatt_e2e::operator`: monitors selected by label, jobs as the
//! operator names them, PrometheusRules loaded), a Flotta operator/device-agent stand-in, a
//! kube-scheduler stand-in (node_loop.rs) and a ReplicaSet stand-in.
//!
//! **Real cluster**: with `E2E_KUBECONFIG` set (kind, k3s: a throwaway cluster with the images
//! loaded; e2e/README.md "Against a real cluster") the double is not started. The chart is
//! installed into that cluster, whose kubelets run the images; the harness reads everything
//! through the client, waits for the rollouts, and plays only what is outside the cluster: the
//! Flotta devices (their exporters as processes on fixture trees), the Flotta stand-in (unless
//! its operator is installed), Prometheus (on this machine, scraping the cluster's pods) and the
//! operator's target selection. Scenarios that need the double — its fault hooks, its request
//! log, or simulated Kubernetes nodes (a real node's exporter reads that node's own /sys) —
//! start with [`needs_double`], which skips them loudly there.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use edgewatt_e2e::apiserver::{parse_crd, ApiServer, Options};
use edgewatt_e2e::chart::{self, Release};
use edgewatt_e2e::operator::{self, ClusterPod, Endpoints, Selector};
use edgewatt_e2e::pods::{self, LocalPod, PodPlan};
use edgewatt_e2e::prometheus::{Prometheus, ScrapeTarget};
use edgewatt_exporter::fixture::{BatteryFiles, FixtureTree};
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::discovery::ApiResource;
use serde_json::{json, Value};

/// The release's namespace and name, as an operator would install it.
pub const NS: &str = "edgewatt-system";
pub const RELEASE: &str = "edgewatt";

fn repo() -> PathBuf {
    chart::repo()
}

/// `E2E_KUBECONFIG`: the kubeconfig of a real cluster to run against instead of the double.
pub fn real_cluster() -> Option<PathBuf> {
    std::env::var_os("E2E_KUBECONFIG")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// The address pods of the real cluster reach this machine at (`E2E_HOST_ADDR`: kind's Docker
/// network gateway, or this node's address on k3s): the chart's `prometheus.url` points there.
fn host_addr() -> String {
    std::env::var("E2E_HOST_ADDR").unwrap_or_else(|_| {
        panic!(
            "E2E_HOST_ADDR unset: against a real cluster the controller (a pod) queries the \
             test's Prometheus on this machine; set E2E_HOST_ADDR to this machine's address as \
             the pods see it (kind: `docker network inspect kind -f '{{{{(index .IPAM.Config 0).Gateway}}}}'`, \
             k3s on this machine: its node IP). e2e/README.md \"Against a real cluster\""
        )
    })
}

/// For a scenario that needs the API server double (`why`: its fault hooks, its request log,
/// simulated nodes): under `E2E_KUBECONFIG` it says loudly why the scenario does not run there
/// and returns true (the test then returns); without it, false.
pub fn needs_double(why: &str) -> bool {
    let Some(kubeconfig) = real_cluster() else {
        return false;
    };
    let test = std::thread::current()
        .name()
        .unwrap_or("this scenario")
        .to_string();
    eprintln!(
        "################################################################################\n\
         ## SKIPPED against the real cluster of E2E_KUBECONFIG={}\n\
         ## {test} needs the API server double: {why}\n\
         ## (it runs without E2E_KUBECONFIG; e2e/README.md \"Against a real cluster\")\n\
         ################################################################################",
        kubeconfig.display()
    );
    true
}

/// Runs a future to completion from synchronous harness code (the scenarios run on a
/// multi-threaded runtime): reads through the client of a real cluster.
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(f))
}

/// How the chart is installed, and into what kind of cluster.
#[derive(Clone)]
pub struct Install {
    /// Chart values a user gives: `{}` (the defaults) or `examples/chart-values-edge.yaml`.
    pub values: Value,
    /// What the cluster's Prometheus selects (kube-prometheus-stack: `release=<its release>`).
    pub selector: Selector,
    /// Flotta's CRDs installed (`crds/flotta/`).
    pub flotta: bool,
    /// Changes to the cluster after the install, before any pod starts: a trimmed Role, or a
    /// fault hook (`set_watch_delay` only affects watches opened after it).
    pub tamper: Option<fn(&ApiServer)>,
    /// Samples Prometheus holds before it starts (OpenMetrics text, backfilled with promtool:
    /// [`Prometheus::start_with_history`]): days of history a scenario cannot wait for.
    pub history: Option<Arc<str>>,
}

impl Install {
    /// Chart defaults, a Prometheus that selects every monitor, Flotta installed.
    pub fn defaults() -> Self {
        Self {
            values: json!({}),
            selector: Selector::All,
            flotta: true,
            tamper: None,
            history: None,
        }
    }

    /// `examples/chart-values-edge.yaml` on a kube-prometheus-stack cluster (release `kps`,
    /// default selectors), Flotta installed.
    pub fn edge_example() -> Self {
        Self {
            values: chart::values_file(&repo().join("examples/chart-values-edge.yaml")).unwrap(),
            selector: Selector::kube_prometheus_stack("kps"),
            flotta: true,
            tamper: None,
            history: None,
        }
    }

    /// The same, on a cluster without Flotta's CRDs.
    pub fn without_flotta(mut self) -> Self {
        self.flotta = false;
        self
    }

    /// The same, with `openmetrics` in Prometheus before it starts (see [`Install::history`]).
    pub fn with_history(mut self, openmetrics: String) -> Self {
        self.history = Some(openmetrics.into());
        self
    }
}

/// The project's binaries, built by `cargo build --workspace` (nextest builds them for the
/// workspace's integration tests before running any).
pub struct Bins {
    pub exporter: PathBuf,
    pub controller: PathBuf,
    pub scheduler: PathBuf,
}

pub fn bins() -> Bins {
    let dir = pods::binaries_dir();
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

/// A simulated node or edge device: its root filesystem (a fixture tree the test rewrites:
/// battery level, mains, platform power) and the exporter pod the chart runs on it.
pub struct Sim {
    pub name: String,
    pub tree: FixtureTree,
    pub dir: tempfile::TempDir,
    pub exporter: Option<LocalPod>,
}

impl Sim {
    pub fn set_battery(&self, percent: u64, discharging: bool) {
        write_battery(&self.tree, percent, discharging);
    }

    pub fn set_power(&self, watts: f64) {
        write_power(&self.tree, watts);
    }

    /// The exporter's `host:port` (its `metrics` container port).
    pub fn exporter_addr(&self) -> String {
        self.exporter
            .as_ref()
            .and_then(|p| p.addr("metrics"))
            .unwrap_or_else(|| panic!("no exporter runs on {}", self.name))
    }
}

/// A node's root filesystem: battery at 90 % discharging, a 20 W power meter, the directories a
/// real node has for the exporter's hostPath mounts. Written before the exporter starts: it
/// discovers its energy sources at start (written after, a busy machine let it look first and
/// serve no battery or power series at all).
fn node_root(name: &str) -> (tempfile::TempDir, FixtureTree) {
    let dir = tempfile::Builder::new()
        .prefix(&format!("node-{name}-"))
        .tempdir()
        .unwrap();
    let tree = FixtureTree::new(dir.path());
    tree.proc_stat(100, 100);
    tree.cpuinfo("Intel(R) Core(TM) i7-8650U CPU @ 1.90GHz", 4, false);
    tree.set("sys/class/hwmon/hwmon0/name", "power_meter");
    write_battery(&tree, 90, true);
    write_power(&tree, 20.0);
    std::fs::create_dir_all(dir.path().join("sys/kernel/tracing")).unwrap();
    (dir, tree)
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

/// Kubernetes access for the scenarios: the API server double (or a real cluster) and an admin
/// client (the tests' own requests; the binaries use their ServiceAccounts' tokens).
pub struct Cluster {
    /// The double's hooks (faults, request log, direct store access). Against a real cluster
    /// there is none: using them panics — a scenario that needs them starts with
    /// [`needs_double`].
    pub server: Double,
    pub client: kube::Client,
    /// The real cluster's kubeconfig (`E2E_KUBECONFIG`); `None` with the double.
    pub kubeconfig: Option<PathBuf>,
}

/// The API server double, absent against a real cluster.
pub struct Double(Option<ApiServer>);

impl std::ops::Deref for Double {
    type Target = ApiServer;
    fn deref(&self) -> &ApiServer {
        self.0.as_ref().unwrap_or_else(|| {
            panic!(
                "this scenario uses the API server double's hooks, which a real cluster \
                 (E2E_KUBECONFIG) does not have: start it with `if needs_double(\"why\") {{ return; }}`"
            )
        })
    }
}

/// One of the Prometheus operator's CRDs with a stand-in schema (the harness plays the operator;
/// the API server only needs to serve the type, and Helm to see it).
fn operator_crd(plural: &str, kind: &str) -> Value {
    json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("{plural}.monitoring.coreos.com")},
        "spec": {"group": "monitoring.coreos.com", "scope": "Namespaced",
            "names": {"plural": plural, "kind": kind, "singular": kind.to_lowercase()},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}})
}

/// The Prometheus operator's CRDs in the double.
fn operator_crds(server: &ApiServer) {
    for (plural, kind) in [
        ("podmonitors", "PodMonitor"),
        ("servicemonitors", "ServiceMonitor"),
        ("prometheusrules", "PrometheusRule"),
    ] {
        server.put(operator_crd(plural, kind)).unwrap();
    }
}

impl Cluster {
    /// A fresh cluster with the Prometheus operator and Flotta's CRDs — uninstalled again
    /// (`ApiServer::unregister` deletes the CRDs) unless `flotta`; edgewatt's CRD comes with the
    /// chart.
    pub async fn start(flotta: bool) -> Cluster {
        edgewatt_e2e::install_crypto_provider();
        if let Some(kubeconfig) = real_cluster() {
            return Self::connect(kubeconfig, flotta).await;
        }
        let server = ApiServer::start_with(Options {
            crds: false,
            ..Default::default()
        })
        .await
        .unwrap();
        operator_crds(&server);
        for f in [
            "crds/flotta/management.project-flotta.io_edgedevices.yaml",
            "crds/flotta/management.project-flotta.io_edgeworkloads.yaml",
        ] {
            let text = std::fs::read_to_string(repo().join(f)).unwrap();
            server.put(parse_crd(&text).unwrap()).unwrap();
        }
        if !flotta {
            server.unregister("edgedevices.management.project-flotta.io");
            server.unregister("edgeworkloads.management.project-flotta.io");
        }
        server
            .put(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}))
            .unwrap();
        let client = server.client().unwrap();
        Cluster {
            server: Double(Some(server)),
            client,
            kubeconfig: None,
        }
    }

    /// The double, or `None` against a real cluster.
    pub fn double(&self) -> Option<&ApiServer> {
        self.server.0.as_ref()
    }

    /// The real cluster of `kubeconfig`, prepared as [`Cluster::start`] prepares the double:
    /// what earlier runs left (EnergyPolicies, EdgeDevices, EdgeWorkloads) deleted, the
    /// Prometheus operator's CRDs (the stand-in schema, unless the cluster has the operator's
    /// own), Flotta's CRDs installed (or deleted unless `flotta`), namespace `edgewatt-system`.
    async fn connect(kubeconfig: PathBuf, flotta: bool) -> Cluster {
        let kc = kube::config::Kubeconfig::read_from(&kubeconfig)
            .unwrap_or_else(|e| panic!("E2E_KUBECONFIG={}: {e}", kubeconfig.display()));
        let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .unwrap_or_else(|e| panic!("E2E_KUBECONFIG={}: {e}", kubeconfig.display()));
        let client = kube::Client::try_from(cfg).expect("a client for E2E_KUBECONFIG");
        eprintln!(
            "e2e: REAL CLUSTER from E2E_KUBECONFIG={} (the double is not started; the cluster runs the chart's images)",
            kubeconfig.display()
        );
        let c = Cluster {
            server: Double(None),
            client,
            kubeconfig: Some(kubeconfig),
        };
        c.delete_all("edgewatt.io", "v1alpha1", "EnergyPolicy", "energypolicies")
            .await;
        for (kind, plural) in [
            ("EdgeWorkload", "edgeworkloads"),
            ("EdgeDevice", "edgedevices"),
        ] {
            c.delete_all("management.project-flotta.io", "v1alpha1", kind, plural)
                .await;
        }
        let crds = c.crds();
        for (plural, kind) in [
            ("podmonitors", "PodMonitor"),
            ("servicemonitors", "ServiceMonitor"),
            ("prometheusrules", "PrometheusRule"),
        ] {
            let name = format!("{plural}.monitoring.coreos.com");
            if crds.get_opt(&name).await.unwrap().is_none() {
                c.apply(&crds, operator_crd(plural, kind)).await;
                c.crd_established(&name).await;
            }
        }
        for f in [
            "crds/flotta/management.project-flotta.io_edgedevices.yaml",
            "crds/flotta/management.project-flotta.io_edgeworkloads.yaml",
        ] {
            let crd = parse_crd(&std::fs::read_to_string(repo().join(f)).unwrap()).unwrap();
            let name = name_of(&crd);
            if flotta {
                c.apply(&crds, crd).await;
                c.crd_established(&name).await;
            } else if crds.get_opt(&name).await.unwrap().is_some() {
                let _ = crds.delete(&name, &Default::default()).await;
                wait_for(
                    &format!("CRD {name} deleted"),
                    Duration::from_secs(60),
                    || async { crds.get_opt(&name).await.ok()?.is_none().then_some(()) },
                )
                .await;
            }
        }
        c.namespace(NS, json!({})).await;
        c
    }

    fn crds(&self) -> Api<DynamicObject> {
        self.api(
            "apiextensions.k8s.io",
            "v1",
            "CustomResourceDefinition",
            "customresourcedefinitions",
            None,
        )
    }

    async fn crd_established(&self, name: &str) {
        let crds = self.crds();
        wait_for(
            &format!("CRD {name} Established"),
            Duration::from_secs(60),
            || async {
                let crd = crds.get(name).await.ok()?;
                crd.data["status"]["conditions"]
                    .as_array()?
                    .iter()
                    .any(|c| c["type"] == "Established" && c["status"] == "True")
                    .then_some(())
            },
        )
        .await;
    }

    /// Deletes every object of a type in every namespace (nothing when the type is not served).
    async fn delete_all(&self, group: &str, version: &str, kind: &str, plural: &str) {
        let Ok(list) = self
            .api(group, version, kind, plural, None)
            .list(&Default::default())
            .await
        else {
            return;
        };
        for o in list.items {
            let name = o.metadata.name.clone().unwrap_or_default();
            let api = self.api(
                group,
                version,
                kind,
                plural,
                o.metadata.namespace.as_deref(),
            );
            let _ = api.delete(&name, &Default::default()).await;
        }
    }

    /// Objects of `api` as JSON (the harness reads a real cluster through the client).
    pub async fn list_values(&self, api: &Api<DynamicObject>) -> Vec<Value> {
        api.list(&Default::default())
            .await
            .map(|l| {
                l.items
                    .into_iter()
                    .map(|o| serde_json::to_value(o).unwrap())
                    .collect()
            })
            .unwrap_or_default()
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
    /// The controller Deployment's pods (`controller.replicas`); none against a real cluster,
    /// whose kubelets run them ([`Loop::cluster_pods`]).
    pub controllers: Vec<LocalPod>,
    /// The extender Deployment's pods (`scheduler.replicas`); none against a real cluster.
    pub schedulers: Vec<LocalPod>,
    pub release: Release,
    pub install: Install,
    pub timeline: Timeline,
    pub logdir: tempfile::TempDir,
    pub bins: Bins,
    pub heartbeat_port: u16,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// The root filesystem of the node the Deployments' pods run on (no hostPath of theirs).
    control_plane: tempfile::TempDir,
}

/// How a simulated target is known.
pub enum Kind {
    /// A Kubernetes node labelled `power=battery` (plus the well-known node labels).
    Node,
    /// A node with these extra labels too.
    LabelledNode(Value),
    /// A Flotta EdgeDevice in this namespace: no Kubernetes node, the exporter runs on it
    /// without cluster credentials and its series get `edgedeviceid` (Flotta's remote write).
    Device(&'static str),
}

/// `values-test.yaml` (short intervals, procfs attribution) with the test Prometheus' URL.
fn test_values(prom_url: &str) -> Value {
    let mut v = chart::values_file(&repo().join("e2e/tests/values-test.yaml")).unwrap();
    chart::merge(&mut v, &json!({"prometheus": {"url": prom_url}}));
    v
}

/// A short suffix like the ones controllers give pod names.
fn suffix(seed: &str, n: usize) -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write(seed.as_bytes());
    h.write_usize(n);
    let v = h.finish();
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..5)
        .map(|i| ALPHABET[((v >> (i * 6)) % ALPHABET.len() as u64) as usize] as char)
        .collect()
}

fn name_of(o: &Value) -> String {
    o["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

impl Loop {
    /// [`Loop::start_with`] without fixture changes.
    pub async fn start(targets: &[(&str, Kind)], install: Install) -> Loop {
        Self::start_with(targets, install, |_, _| {}).await
    }

    /// Installs the chart and starts everything: the double (Flotta's CRDs per `install`), a
    /// real Prometheus, one node fixture per target (`prepare` may add to it before its exporter
    /// starts), `helm install` with the scenario's values and `values-test.yaml`, the pods of
    /// every rendered DaemonSet (on the nodes it schedules onto) and Deployment (its replicas),
    /// the exporter on each Flotta device, and the Prometheus operator's targets and rules.
    pub async fn start_with(
        targets: &[(&str, Kind)],
        install: Install,
        prepare: impl Fn(&str, &FixtureTree),
    ) -> Loop {
        let timeline = Timeline::new();
        let bins = bins();
        let logdir = tempfile::tempdir().unwrap();
        let cluster = Cluster::start(install.flotta).await;
        let real = cluster.kubeconfig.is_some();
        if real {
            let nodes: Vec<&str> = targets
                .iter()
                .filter(|(_, k)| !matches!(k, Kind::Device(_)))
                .map(|(n, _)| *n)
                .collect();
            assert!(
                nodes.is_empty(),
                "simulated nodes {nodes:?} against a real cluster: a node's exporter reads that \
                 node's own /sys; start the scenario with `needs_double`"
            );
        }
        let history = install.history.clone();
        let prom = tokio::task::spawn_blocking(move || {
            if let Some(h) = history {
                Prometheus::start_with_history(Duration::from_secs(1), real, &h)
            } else if real {
                Prometheus::start_for_pods(Duration::from_secs(1))
            } else {
                Prometheus::start(Duration::from_secs(1))
            }
        })
        .await
        .unwrap()
        .unwrap();
        // where the chart's controller and extender query it
        let prom_url = if real {
            format!("http://{}:{}", host_addr(), prom.port())
        } else {
            prom.url()
        };
        let mut sims = BTreeMap::new();
        for (name, kind) in targets {
            let (dir, tree) = node_root(name);
            prepare(name, &tree);
            let mut labels = json!({"kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
                "kubernetes.io/hostname": name, "power": "battery"});
            match kind {
                Kind::Node => cluster.node(name, labels).await,
                Kind::LabelledNode(extra) => {
                    chart::merge(&mut labels, extra);
                    cluster.node(name, labels).await
                }
                Kind::Device(_) => {}
            }
            let sim = Sim {
                name: name.to_string(),
                tree,
                dir,
                exporter: None,
            };
            sims.insert(name.to_string(), sim);
        }
        let mut values = install.values.clone();
        chart::merge(&mut values, &test_values(&prom_url));
        let release =
            tokio::task::block_in_place(|| match (cluster.double(), &cluster.kubeconfig) {
                (Some(s), _) => chart::install(s, RELEASE, NS, &values),
                (None, Some(kubeconfig)) => {
                    chart::install_with_kubeconfig(kubeconfig, RELEASE, NS, &values)
                }
                (None, None) => unreachable!("a cluster is the double or a kubeconfig's"),
            })
            .unwrap_or_else(|e| panic!("{e:#}"));
        timeline.mark(format!(
            "helm install {RELEASE} (values: {})",
            install.values
        ));
        match (install.tamper, cluster.double()) {
            (Some(tamper), Some(s)) => tamper(s),
            (Some(_), None) => {
                timeline.mark("the scenario's API server hook is not applied: a real cluster has its own behaviour");
            }
            (None, _) => {}
        }
        let mut l = Loop {
            cluster,
            prom,
            sims,
            controllers: Vec::new(),
            schedulers: Vec::new(),
            release,
            install,
            timeline,
            logdir,
            bins,
            heartbeat_port: 0,
            tasks: Vec::new(),
            control_plane: tempfile::tempdir().unwrap(),
        };
        l.start_pods(targets).await;
        if real {
            l.wait_for_rollouts().await;
        }
        l.heartbeat_port = l.start_heartbeats(targets).await;
        l.scrape(targets).await;
        for c in &l.controllers {
            wait_http_url(
                &format!("http://{}/healthz", c.addr("metrics").unwrap()),
                Duration::from_secs(30),
            )
            .await;
        }
        for s in &l.schedulers {
            wait_http_url(
                &format!("http://{}/healthz", s.addr("http").unwrap()),
                Duration::from_secs(30),
            )
            .await;
        }
        l.timeline.mark(format!(
            "{} controller(s) and {} extender(s) up",
            l.controllers.len(),
            l.schedulers.len()
        ));
        l
    }

    fn plan<'a>(
        &'a self,
        name: String,
        node: &str,
        template: &'a Value,
        root: &Path,
        api: bool,
    ) -> PodPlan<'a> {
        PodPlan {
            name,
            namespace: NS.into(),
            node: node.into(),
            template,
            node_root: root.to_path_buf(),
            // lazily: against a real cluster only devices run here, without cluster access
            api: api.then(|| &*self.cluster.server),
            bin_dir: pods::binaries_dir(),
            log_dir: self.logdir.path().to_path_buf(),
            // enough detail in the controller's log to tell a slow cycle from a wrong decision
            extra_env: vec![("RUST_LOG".into(), "info,edgewatt_controller=debug".into())],
        }
    }

    /// The release's DaemonSets and Deployments as Helm created them.
    async fn workloads(&self) -> (Vec<Value>, Vec<Value>) {
        let list = |kind: &str, plural: &str| {
            let api = self.cluster.api("apps", "v1", kind, plural, Some(NS));
            async move { self.cluster.list_values(&api).await }
        };
        match self.cluster.double() {
            Some(s) => {
                let of = |plural: &str| -> Vec<Value> {
                    s.list(plural)
                        .into_iter()
                        .filter(|d| d["metadata"]["namespace"] == NS)
                        .collect()
                };
                (of("daemonsets"), of("deployments"))
            }
            None => (
                list("DaemonSet", "daemonsets").await,
                list("Deployment", "deployments").await,
            ),
        }
    }

    /// The DaemonSet controller, ReplicaSet controller and kubelet of the cluster: every
    /// rendered workload's pods, as processes. Against a real cluster only the Flotta devices'
    /// exporters (outside any cluster): the cluster runs the rest from the images.
    async fn start_pods(&mut self, targets: &[(&str, Kind)]) {
        let (daemonsets, deployments) = self.workloads().await;
        let real = self.cluster.double().is_none();
        let s = &self.cluster.server;
        let main_exporter = format!("{RELEASE}-exporter");
        let mut placed = Vec::new();
        for (name, kind) in targets {
            let sim = &self.sims[*name];
            let (template, pod_name, api) = match kind {
                Kind::Device(_) => {
                    let ds = daemonsets
                        .iter()
                        .find(|d| name_of(d) == main_exporter)
                        .expect("the exporter DaemonSet");
                    (
                        ds["spec"]["template"].clone(),
                        format!("{name}-exporter"),
                        false,
                    )
                }
                _ => {
                    let node = s.get("nodes", None, name).expect("node");
                    let ds = daemonsets
                        .iter()
                        .find(|d| pods::schedulable(&d["spec"]["template"], &node))
                        .unwrap_or_else(|| panic!("no exporter DaemonSet schedules onto {name}"));
                    let pod_name = format!("{}-{}", name_of(ds), suffix(name, 0));
                    self.pod_object(ds, &pod_name, name);
                    (ds["spec"]["template"].clone(), pod_name, true)
                }
            };
            let plan = self.plan(pod_name, name, &template, sim.dir.path(), api);
            let pod = pods::run_pod(&plan).unwrap_or_else(|e| panic!("{e:#}"));
            placed.push((name.to_string(), pod));
        }
        for (name, pod) in placed {
            self.sims.get_mut(&name).unwrap().exporter = Some(pod);
        }
        if real {
            self.timeline.mark(format!(
                "{} Flotta device exporter(s) started; the cluster runs the chart's pods",
                self.sims.len()
            ));
            return;
        }
        for d in &deployments {
            let replicas = d["spec"]["replicas"].as_u64().unwrap_or(1) as usize;
            let template = &d["spec"]["template"];
            let hash = suffix(&template.to_string(), 99);
            let mut started = Vec::new();
            for i in 0..replicas {
                let pod_name = format!("{}-{hash}9f-{}", name_of(d), suffix(&name_of(d), i));
                let plan = self.plan(
                    pod_name,
                    "control-plane",
                    template,
                    self.control_plane.path(),
                    true,
                );
                started.push(pods::run_pod(&plan).unwrap_or_else(|e| panic!("{e:#}")));
            }
            match template["metadata"]["labels"]["app.kubernetes.io/component"].as_str() {
                Some("controller") => self.controllers = started,
                Some("scheduler") => self.schedulers = started,
                other => panic!("unexpected Deployment {} ({other:?})", name_of(d)),
            }
        }
        self.timeline.mark(format!(
            "pods started: {} exporter(s), {} controller(s), {} extender(s)",
            self.sims.len(),
            self.controllers.len(),
            self.schedulers.len()
        ));
    }

    /// Against a real cluster: every Deployment and DaemonSet of the release rolled out — the
    /// kubelets pulled the images (`IfNotPresent`: loaded beforehand) and the pods are Ready.
    async fn wait_for_rollouts(&self) {
        let started = Instant::now();
        wait_for(
            "the release's Deployments and DaemonSets rolled out and Ready (are the images loaded \
             into the cluster? e2e/README.md \"Against a real cluster\")",
            Duration::from_secs(180),
            || async {
                let (daemonsets, deployments) = self.workloads().await;
                // the controllers' own "rolled out": the current generation observed, every
                // replica (DaemonSet: every scheduled pod) updated and Ready, no old ones left
                let rolled_out = |o: &Value, want: u64, fields: &[&str]| {
                    let st = &o["status"];
                    st["observedGeneration"] == o["metadata"]["generation"]
                        && fields.iter().all(|f| st[*f].as_u64().unwrap_or(0) == want)
                };
                let deployments_done = deployments.iter().all(|d| {
                    let want = d["spec"]["replicas"].as_u64().unwrap_or(1);
                    rolled_out(
                        d,
                        want,
                        &[
                            "replicas",
                            "updatedReplicas",
                            "readyReplicas",
                            "availableReplicas",
                        ],
                    )
                });
                let daemonsets_done = daemonsets.iter().all(|d| {
                    let want = d["status"]["desiredNumberScheduled"].as_u64().unwrap_or(0);
                    rolled_out(d, want, &["updatedNumberScheduled", "numberReady"])
                });
                (!deployments.is_empty() && deployments_done && daemonsets_done).then_some(())
            },
        )
        .await;
        self.timeline.mark(format!(
            "rollouts done in {:.1}s",
            started.elapsed().as_secs_f64()
        ));
    }

    /// The release's pods as the real cluster runs them (none with the double, which runs
    /// [`Loop::controllers`] and [`Loop::schedulers`] itself).
    pub async fn cluster_pods(&self) -> Vec<ClusterPod> {
        if self.cluster.double().is_some() {
            return Vec::new();
        }
        let api = self.cluster.pods(NS);
        self.cluster
            .list_values(&api)
            .await
            .iter()
            .filter(|p| {
                p["metadata"]["labels"]["app.kubernetes.io/instance"] == RELEASE
                    && p["metadata"]["deletionTimestamp"].is_null()
                    && p["status"]["phase"] == "Running"
            })
            .filter_map(ClusterPod::from_object)
            .collect()
    }

    /// The Pod object of a DaemonSet pod (so watches of pods see it, and the controller meets a
    /// DaemonSet-owned pod on every node, as on a cluster).
    fn pod_object(&self, ds: &Value, pod_name: &str, node: &str) {
        let t = &ds["spec"]["template"];
        let mut spec = t["spec"].clone();
        spec["nodeName"] = node.into();
        self.cluster
            .server
            .put(json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": pod_name, "namespace": NS, "labels": t["metadata"]["labels"],
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": ds["metadata"]["name"],
                        "uid": ds["metadata"]["uid"], "controller": true, "blockOwnerDeletion": true}]},
                "spec": spec, "status": {"phase": "Running", "podIP": "127.0.0.1", "hostIP": "127.0.0.1"}}))
            .unwrap();
    }

    /// Flotta's operator exports `flotta_api_edge_devices_heartbeat{deviceID}`; the stand-in too.
    async fn start_heartbeats(&mut self, targets: &[(&str, Kind)]) -> u16 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let devices: Vec<String> = targets
            .iter()
            .filter(|(_, k)| matches!(k, Kind::Device(_)))
            .map(|(n, _)| n.to_string())
            .collect();
        let started = Instant::now();
        self.tasks.push(tokio::spawn(async move {
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
            let _ = axum::serve(listener, app).await;
        }));
        port
    }

    /// Prometheus scrapes what the operator stand-in derives from the rendered monitors (and
    /// loads the selected PrometheusRules); devices' series arrive with `edgedeviceid`.
    async fn scrape(&mut self, targets: &[(&str, Kind)]) {
        let objects = self.monitoring_objects().await;
        let cluster_pods = self.cluster_pods().await;
        let mut scrape: Vec<ScrapeTarget> = {
            let mut pods: Vec<&dyn Endpoints> = self
                .controllers
                .iter()
                .chain(&self.schedulers)
                .map(|p| p as &dyn Endpoints)
                .collect();
            for (name, kind) in targets {
                if !matches!(kind, Kind::Device(_)) {
                    if let Some(p) = self.sims[*name].exporter.as_ref() {
                        pods.push(p);
                    }
                }
            }
            pods.extend(cluster_pods.iter().map(|p| p as &dyn Endpoints));
            operator::targets(objects.as_ref(), &self.install.selector, &pods)
        };
        let in_cluster: Vec<String> = scrape
            .iter()
            .filter(|t| {
                cluster_pods
                    .iter()
                    .any(|p| t.labels.iter().any(|(k, v)| k == "pod" && *v == p.name))
            })
            .map(|t| t.address.clone())
            .collect();
        for (name, kind) in targets {
            if let Kind::Device(_) = kind {
                let mut t =
                    ScrapeTarget::new("flotta-device-metrics", &self.sims[*name].exporter_addr());
                t.labels.push(("edgedeviceid".into(), name.to_string()));
                scrape.push(t);
            }
        }
        scrape.push(ScrapeTarget::new(
            "flotta",
            &format!("127.0.0.1:{}", self.heartbeat_port),
        ));
        let rules: Vec<PathBuf> = operator::rule_files(objects.as_ref(), &self.install.selector)
            .into_iter()
            .enumerate()
            .map(|(i, r)| {
                let p = self.logdir.path().join(format!("prometheusrule-{i}.yaml"));
                std::fs::write(&p, serde_json::to_string_pretty(&r).unwrap()).unwrap();
                p
            })
            .collect();
        drop(objects);
        let n = scrape.len();
        // A node without a platform meter (shared power models' meterless node) serves none.
        let names: Vec<(String, bool)> = self
            .sims
            .iter()
            .map(|(n, s)| {
                let metered = s
                    .tree
                    .path("sys/class/hwmon/hwmon0/power1_average")
                    .exists();
                (n.clone(), metered)
            })
            .collect();
        let prom = &mut self.prom;
        tokio::task::block_in_place(|| {
            prom.add_targets(scrape).unwrap();
            for r in rules {
                prom.add_rule_file(r).unwrap();
            }
            // Every simulated target serves its battery and meter before a scenario starts: a
            // target without them can never be starved, nor chosen as a destination.
            for (name, metered) in names {
                for metric in [
                    "edgewatt_node_battery_charge_ratio",
                    "edgewatt_node_platform_watts",
                ] {
                    if !metered && metric == "edgewatt_node_platform_watts" {
                        continue;
                    }
                    prom.wait_for_series(
                        &format!("{metric}{{node_name=\"{name}\"}}"),
                        Duration::from_secs(40),
                    )
                    .unwrap_or_else(|e| {
                        panic!("{name} serves no {metric} (see its exporter's log): {e}")
                    });
                }
            }
            // a real cluster's pods, scraped from this machine: their IPs must be routable here
            for addr in &in_cluster {
                prom.wait_for_series(&format!("up{{instance=\"{addr}\"}} == 1"), Duration::from_secs(40))
                    .unwrap_or_else(|e| {
                        panic!(
                            "Prometheus on this machine cannot scrape the cluster's pod {addr}: {e}. \
                             Pod IPs must be routable from here (k3s on this machine: they are; kind: \
                             `ip route add <node podCIDR> via <node IP>` per node, e2e/README.md)"
                        )
                    });
            }
        });
        self.timeline.mark(format!(
            "Prometheus {} scraping {n} targets",
            self.prom.url()
        ));
    }

    /// The monitors, rules and Services the operator stand-in reads: the double's store, or the
    /// real cluster's objects through the client.
    async fn monitoring_objects(&self) -> Box<dyn operator::Objects + '_> {
        if let Some(s) = self.cluster.double() {
            return Box::new(s);
        }
        let mut objects = BTreeMap::new();
        for (group, kind, plural) in [
            ("monitoring.coreos.com", "PodMonitor", "podmonitors"),
            ("monitoring.coreos.com", "ServiceMonitor", "servicemonitors"),
            ("monitoring.coreos.com", "PrometheusRule", "prometheusrules"),
            ("", "Service", "services"),
        ] {
            let api = self.cluster.api(group, "v1", kind, plural, None);
            objects.insert(plural.to_string(), self.cluster.list_values(&api).await);
        }
        Box::new(objects)
    }

    /// The chart's roles were enough: no request of the chart's binaries (their ServiceAccounts'
    /// tokens) was refused by authentication or RBAC.
    pub fn assert_no_request_refused(&self) {
        let refused = self.refused_requests();
        assert!(
            refused.is_empty(),
            "requests of the chart's binaries refused by RBAC ({}): {:#?}",
            refused.len(),
            &refused[..refused.len().min(10)]
        );
    }

    /// `user method path?query -> status` of every request of the chart's binaries that was
    /// refused (401/403).
    pub fn refused_requests(&self) -> Vec<String> {
        if self.cluster.double().is_none() {
            return block_on(self.refusals_in_pod_logs());
        }
        let prefix = format!("system:serviceaccount:{NS}:");
        self.cluster
            .server
            .requests()
            .iter()
            .filter(|r| (r.status == 401 || r.status == 403) && r.user.starts_with(&prefix))
            .map(|r| {
                format!(
                    "{} {} {}?{} -> {}",
                    r.user, r.method, r.path, r.query, r.status
                )
            })
            .collect()
    }

    /// Against a real cluster, whose request log the harness cannot read: the lines of the
    /// release's pods' logs that report a request refused by authentication or RBAC
    /// (kube-apiserver's `Status` messages: "… is forbidden: User …", `Unauthorized`).
    async fn refusals_in_pod_logs(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (pod, log) in self.pod_logs(None).await {
            out.extend(
                log.lines()
                    .filter(|l| l.contains("is forbidden: User") || l.contains("Unauthorized"))
                    .map(|l| format!("{pod}: {l}")),
            );
        }
        out
    }

    /// `(pod, log)` of the release's pods in the real cluster (the last `tail` lines).
    async fn pod_logs(&self, tail: Option<i64>) -> Vec<(String, String)> {
        let pods: Api<k8s_openapi::api::core::v1::Pod> =
            Api::namespaced(self.cluster.client.clone(), NS);
        let mut out = Vec::new();
        for p in self.cluster_pods().await {
            let params = kube::api::LogParams {
                tail_lines: tail,
                ..Default::default()
            };
            let log = pods
                .logs(&p.name, &params)
                .await
                .unwrap_or_else(|e| format!("(no log: {e})"));
            out.push((p.name, log));
        }
        out
    }

    pub fn sim(&self, name: &str) -> &Sim {
        &self.sims[name]
    }

    pub fn spawn_task(&mut self, t: tokio::task::JoinHandle<()>) {
        self.tasks.push(t);
    }

    /// The addresses behind the extender's Service (port `http`): kube-proxy's view of it.
    pub fn extender_addrs(&self) -> Vec<String> {
        let svc = self
            .cluster
            .server
            .get("services", Some(NS), &format!("{RELEASE}-scheduler"))
            .expect("the extender Service");
        let pods: Vec<&LocalPod> = self.schedulers.iter().collect();
        operator::service_endpoints(&svc, "http", &pods)
            .into_iter()
            .map(|(_, a)| a)
            .collect()
    }

    /// One extender address (the Service's first endpoint).
    pub fn extender_addr(&self) -> String {
        self.extender_addrs()
            .into_iter()
            .next()
            .expect("an extender endpoint")
    }

    /// The extender entry of the rendered KubeSchedulerConfiguration (ConfigMap
    /// `<release>-scheduler-config`, `extender.yaml`).
    pub fn extender_config(&self) -> Value {
        let cm = self
            .cluster
            .server
            .get(
                "configmaps",
                Some(NS),
                &format!("{RELEASE}-scheduler-config"),
            )
            .expect("the scheduler ConfigMap");
        let cfg: Value =
            serde_saphyr::from_str(cm["data"]["extender.yaml"].as_str().unwrap()).unwrap();
        cfg["extenders"][0].clone()
    }

    /// The controller pod holding the Lease, if any.
    pub fn leader(&self) -> Option<usize> {
        let lease = self.cluster.server.get(
            "leases.coordination.k8s.io",
            Some(NS),
            "edgewatt-controller",
        )?;
        let holder = lease["spec"]["holderIdentity"].as_str()?;
        self.controllers.iter().position(|c| c.name == holder)
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

    /// What explains a failed scenario: the controllers' decisions (their logs without the
    /// per-cycle timing lines; the whole logs are kept on disk), requests RBAC refused, each
    /// EnergyPolicy's status, the EdgeDevices and EdgeWorkloads as the API server holds them,
    /// and what Prometheus says about each target.
    pub fn dump_logs(&mut self) {
        if self.cluster.double().is_none() {
            return self.dump_real_cluster();
        }
        self.logdir.disable_cleanup(true);
        eprintln!(
            "--- logs kept in {} (the directory is not removed) ---",
            self.logdir.path().display()
        );
        for c in &mut self.controllers {
            let p = c.main();
            eprintln!(
                "--- {} log: decisions and warnings (without `policy cycle` lines, last 80) ---\n{}",
                p.name,
                p.log_lines(|l| !l.contains("policy cycle"), 80)
            );
        }
        for s in &mut self.schedulers {
            let p = s.main();
            eprintln!("--- {} log (tail) ---\n{}", p.name, p.log_tail(15));
        }
        let s = &self.cluster.server;
        let denied: Vec<String> = s
            .requests()
            .iter()
            .filter(|r| r.status == 401 || r.status == 403)
            .map(|r| {
                format!(
                    "{} {} {}?{} -> {}",
                    r.user, r.method, r.path, r.query, r.status
                )
            })
            .collect();
        eprintln!(
            "--- requests refused by authentication/RBAC ({}, last 20) ---\n{}",
            denied.len(),
            denied[denied.len().saturating_sub(20)..].join("\n")
        );
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

impl Loop {
    /// [`Loop::dump_logs`] against a real cluster: the release's pods' logs, EnergyPolicies,
    /// EdgeDevices and EdgeWorkloads through the client (the request log is the cluster's audit
    /// log, if enabled).
    fn dump_real_cluster(&mut self) {
        self.logdir.disable_cleanup(true);
        eprintln!(
            "--- device exporters' logs kept in {} ---",
            self.logdir.path().display()
        );
        let report = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            block_on(async {
                let mut s = String::new();
                for (pod, log) in self.pod_logs(Some(60)).await {
                    s.push_str(&format!("--- pod {pod} (last 60 lines) ---\n{log}\n"));
                }
                for p in self.cluster.list_values(&self.cluster.policies()).await {
                    s.push_str(&format!(
                        "--- EnergyPolicy {} status ---\n{}\n",
                        p["metadata"]["name"],
                        serde_json::to_string_pretty(&p["status"]).unwrap_or_default()
                    ));
                }
                for (kind, plural) in [
                    ("EdgeDevice", "edgedevices"),
                    ("EdgeWorkload", "edgeworkloads"),
                ] {
                    let api = self.cluster.api(
                        "management.project-flotta.io",
                        "v1alpha1",
                        kind,
                        plural,
                        None,
                    );
                    for o in self.cluster.list_values(&api).await {
                        s.push_str(&format!(
                            "{kind} {}/{}: spec={} status={}\n",
                            o["metadata"]["namespace"].as_str().unwrap_or_default(),
                            o["metadata"]["name"].as_str().unwrap_or_default(),
                            o["spec"],
                            o["status"]
                        ));
                    }
                }
                s
            })
        }))
        .unwrap_or_else(|_| "(could not read the cluster)".into());
        eprintln!("{report}");
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

pub async fn wait_http(port: u16, path: &str, timeout: Duration) {
    wait_http_url(&format!("http://127.0.0.1:{port}{path}"), timeout).await
}

/// Polls `url` until it answers 2xx.
pub async fn wait_http_url(url: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let u = url.to_string();
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

pub fn tolerates(pod: &Value, taint: &Value) -> bool {
    pod["spec"]["tolerations"].as_array().is_some_and(|ts| {
        ts.iter().any(|t| {
            (t["key"] == taint["key"] || t["operator"] == "Exists" && t["key"].is_null())
                && (t["effect"].is_null() || t["effect"] == taint["effect"])
        })
    })
}

/// TEST PART — kube-scheduler stand-in, configured by the chart's extender entry (ConfigMap
/// `<release>-scheduler-config`: verbs, weight, `nodeCacheCapable`), calling the extender's
/// Service endpoints: for each pending pod, the nodes it fits (Ready, taints tolerated), then
/// `filter` and `prioritize` with kube-scheduler's JSON (PascalCase, `NodeNames` when
/// `nodeCacheCapable`; `ignorable: true` semantics: a filter error keeps all nodes),
/// `score × weight × 10` added to equal plugin scores, bind. Nodes the pod's `nodeSelector` does
/// not match are not candidates (kube-scheduler's NodeAffinity filter runs before extenders).
pub fn scheduler_standin(
    client: kube::Client,
    extender: Vec<String>,
    config: Value,
    placements: std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>>,
) -> tokio::task::JoinHandle<()> {
    let weight = config["weight"].as_i64().expect("extender weight");
    let filter_verb = config["filterVerb"]
        .as_str()
        .expect("filterVerb")
        .to_string();
    let prioritize_verb = config["prioritizeVerb"]
        .as_str()
        .expect("prioritizeVerb")
        .to_string();
    let names_only = config["nodeCacheCapable"] == true;
    tokio::spawn(async move {
        let mut turn = 0usize;
        let pods: Api<DynamicObject> = Api::all_with(
            client.clone(),
            &kube::discovery::ApiResource::erase::<k8s_openapi::api::core::v1::Pod>(&()),
        );
        let nodes: Api<DynamicObject> = Api::all_with(
            client.clone(),
            &kube::discovery::ApiResource::erase::<k8s_openapi::api::core::v1::Node>(&()),
        );
        let http = reqwest::Client::new();
        loop {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let (Ok(ps), Ok(ns)) = (
                pods.list(&Default::default()).await,
                nodes.list(&Default::default()).await,
            ) else {
                continue;
            };
            for p in ps.items.iter().filter(|p| {
                p.data["spec"]["nodeName"].is_null() && p.metadata.deletion_timestamp.is_none()
            }) {
                let pod = serde_json::to_value(p).unwrap();
                let mut fit: Vec<String> = ns
                    .items
                    .iter()
                    .filter(|n| node_selector_matches(&pod, n))
                    .filter(|n| {
                        n.data["spec"]["taints"].as_array().is_none_or(|ts| {
                            ts.iter()
                                .all(|t| t["effect"] != "NoSchedule" || tolerates(&pod, t))
                        })
                    })
                    .filter_map(|n| n.metadata.name.clone())
                    .collect();
                fit.sort();
                // kube-proxy: the Service's endpoints in turn
                turn += 1;
                let ext = &extender[turn % extender.len()];
                let args = |names: &[String]| {
                    if names_only {
                        json!({"Pod": pod, "Nodes": null, "NodeNames": names})
                    } else {
                        let items: Vec<Value> = ns
                            .items
                            .iter()
                            .filter(|n| n.metadata.name.as_ref().is_some_and(|x| names.contains(x)))
                            .map(|n| serde_json::to_value(n).unwrap())
                            .collect();
                        json!({"Pod": pod, "Nodes": {"items": items}, "NodeNames": null})
                    }
                };
                let filtered = http
                    .post(format!("http://{ext}/{filter_verb}"))
                    .json(&args(&fit))
                    .send()
                    .await;
                if let Ok(r) = filtered {
                    if let Ok(v) = r.json::<Value>().await {
                        if let Some(names) = v["NodeNames"].as_array() {
                            fit = names
                                .iter()
                                .filter_map(|n| n.as_str().map(String::from))
                                .collect();
                        } else if let Some(items) = v["Nodes"]["items"].as_array() {
                            fit = items
                                .iter()
                                .filter_map(|n| n["metadata"]["name"].as_str().map(String::from))
                                .collect();
                        }
                    }
                }
                if fit.is_empty() {
                    continue;
                }
                let mut scores: BTreeMap<String, i64> =
                    fit.iter().map(|n| (n.clone(), 0)).collect();
                if fit.len() > 1 {
                    if let Ok(r) = http
                        .post(format!("http://{ext}/{prioritize_verb}"))
                        .json(&args(&fit))
                        .send()
                        .await
                    {
                        if let Ok(v) = r.json::<Value>().await {
                            for hp in v.as_array().into_iter().flatten() {
                                if let (Some(h), Some(s)) =
                                    (hp["Host"].as_str(), hp["Score"].as_i64())
                                {
                                    if let Some(e) = scores.get_mut(h) {
                                        *e += s * weight * 10;
                                    }
                                }
                            }
                        }
                    }
                }
                let best = scores
                    .iter()
                    .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
                    .map(|(n, _)| n.clone())
                    .unwrap();
                let ns_ = p.metadata.namespace.clone().unwrap();
                let name = p.metadata.name.clone().unwrap();
                let api: Api<DynamicObject> = Api::namespaced_with(
                    client.clone(),
                    &ns_,
                    &kube::discovery::ApiResource::erase::<k8s_openapi::api::core::v1::Pod>(&()),
                );
                let _ = api
                    .patch(
                        &name,
                        &PatchParams::default(),
                        &Patch::Merge(&json!({"spec": {"nodeName": best}})),
                    )
                    .await;
                let _ = api
                    .patch_status(
                        &name,
                        &PatchParams::default(),
                        &Patch::Merge(&json!({"status": {"phase": "Running"}})),
                    )
                    .await;
                placements.lock().unwrap().push((name, best));
            }
        }
    })
}

/// Whether `node` has every label of `pod`'s `spec.nodeSelector` (none: every node).
pub fn node_selector_matches(pod: &Value, node: &DynamicObject) -> bool {
    pod["spec"]["nodeSelector"].as_object().is_none_or(|sel| {
        sel.iter().all(|(k, v)| {
            node.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(k))
                .is_some_and(|l| v.as_str() == Some(l.as_str()))
        })
    })
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
