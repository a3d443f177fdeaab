//! `--metric-prefix kepler` against Kepler's own published dashboard: every query of
//! sustainable-computing-io/kepler `compose/default/grafana/dashboards/latest/dashboard.json`
//! (commit 905238acb52da8f40a24ae264a5c096231c3ff4d, the dashboard of the v0.11 exporter) is
//! evaluated by a real Prometheus scraping the exporter, with pods named through a real `kube`
//! watch of the API server double, and must return data. The label sets are held to Kepler's
//! descriptors (`internal/exporter/prometheus/collector/power_collector.go`, `cpuinfo.go`,
//! `build_info.go`, `platform_collector.go`; `docs/user/metrics.md`).
//!
//! The dashboard is not copied into this repository: each query below is written out by hand with
//! the panel id it comes from, its template variables (`$job`, `$node`, `$zone`, `$namespace`,
//! `$pod`, `$container`, `${process}`) substituted the way Grafana would.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{promtool_check, Exporter, Ticker};

use edgewatt_crds::metrics::MetricNames;
use edgewatt_crds::promql::{pod_watts_sum, Signal, TargetQuery};
use edgewatt_e2e::apiserver::ApiServer;
use edgewatt_e2e::prometheus::{Prometheus, ScrapeTarget};
use edgewatt_exporter::fixture::{ids, pod_cgroup, FixtureTree};
use serde_json::{json, Value};

const JOB: &str = "kepler";

fn pod(name: &str, ns: &str, uid: &str, container: &str, cid: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "uid": uid},
        "spec": {"nodeName": "fx", "containers": [{"name": container, "image": "x"}]},
        "status": {"phase": "Running", "containerStatuses": [{"name": container, "containerID": format!("containerd://{cid}"), "image": "x", "imageID": "", "ready": true, "restartCount": 0}]}
    })
}

/// A fixture pod: name, namespace, index for [`ids`].
type PodRef = (&'static str, &'static str, usize);

/// Processes of the fixture: (pid, comm, executable, pod).
const PROCS: [(u32, &str, &str, Option<PodRef>); 3] = [
    (100, "nginx", "/usr/sbin/nginx", Some(("web", "shop", 1))),
    (
        101,
        "coredns",
        "/coredns",
        Some(("coredns", "kube-system", 2)),
    ),
    (200, "sshd", "/usr/sbin/sshd", None),
];

fn fixture(t: &FixtureTree) {
    t.proc_stat(10, 10);
    t.cpuinfo("Intel(R) Xeon(R) Gold 6230 CPU @ 2.10GHz", 4, false);
    t.rapl_zone("0", "package-0", 1_000_000, 262_143_328_850);
    t.rapl_zone("0:0", "dram", 1_000_000, 262_143_328_850);
    for (pid, comm, exe, owner) in PROCS {
        let cgroup = match owner {
            Some((_, _, i)) => {
                let (uid, cid) = ids(i);
                pod_cgroup(&uid, &cid)
            }
            None => "/system.slice/sshd.service".to_string(),
        };
        t.process(pid, comm, 1, &cgroup);
        std::os::unix::fs::symlink(exe, t.path(&format!("proc/{pid}/exe"))).unwrap();
    }
}

/// Moves the counters on every 300 ms until dropped, so every rate and share is non-zero; once
/// `exit_sshd` is set, pid 200 exits (removed here, so no tick can write it back).
fn keep_ticking(t: FixtureTree, exit_sshd: Arc<AtomicBool>) -> Ticker {
    Ticker::start(Duration::from_millis(300), move |i| {
        if exit_sshd.load(Ordering::Relaxed) {
            t.remove_process(200);
        }
        t.rapl_energy("0", 1_000_000 + i * 3_000_000);
        t.rapl_energy("0:0", 1_000_000 + i * 600_000);
        t.proc_stat(10 + i * 60, 10 + i * 40);
        for (pid, comm, _, _) in PROCS {
            if t.path(&format!("proc/{pid}")).exists() {
                t.process_ticks(pid, comm, 1 + i * (pid as u64 / 10));
            }
        }
    })
}

/// The exporter with Kepler's names and process series, pods named through `kubeconfig`.
fn start(root: &std::path::Path, kubeconfig: &std::path::Path) -> Exporter {
    let args = [
        "--host-root",
        root.to_str().unwrap(),
        "--node-name",
        "fx",
        "--interval",
        "1s",
        "--kubernetes",
        "on",
        "--attribution",
        "procfs",
        "--metric-prefix",
        "kepler",
    ];
    Exporter::start_env(
        args.map(String::from).to_vec(),
        &["--process-metrics"],
        &[("KUBECONFIG", kubeconfig)],
    )
}

/// The samples of an exposition: name and labels in order ([`common::parse_samples`]).
fn samples(body: &str) -> Vec<(String, Vec<(String, String)>)> {
    common::parse_samples(body)
        .into_iter()
        .map(|(name, labels, _)| (name, labels))
        .collect()
}

/// Kepler v0.11's label keys per family (plus `node_name`, Kepler's constant label), from
/// `power_collector.go` (028ae61), `cpuinfo.go`, `build_info.go`, `platform_collector.go`.
fn kepler_label_sets() -> BTreeMap<&'static str, Vec<&'static str>> {
    let node = vec!["node_name", "zone", "path"];
    let pod = vec![
        "node_name",
        "pod_id",
        "pod_name",
        "pod_namespace",
        "state",
        "zone",
    ];
    let container = vec![
        "node_name",
        "container_id",
        "container_name",
        "runtime",
        "state",
        "zone",
        "pod_id",
    ];
    let process = vec![
        "node_name",
        "pid",
        "comm",
        "exe",
        "type",
        "state",
        "container_id",
        "vm_id",
        "zone",
    ];
    let mut m = BTreeMap::new();
    for n in [
        "kepler_node_cpu_joules_total",
        "kepler_node_cpu_watts",
        "kepler_node_cpu_active_joules_total",
        "kepler_node_cpu_active_watts",
        "kepler_node_cpu_idle_joules_total",
        "kepler_node_cpu_idle_watts",
    ] {
        m.insert(n, node.clone());
    }
    m.insert("kepler_node_cpu_usage_ratio", vec!["node_name"]);
    m.insert("kepler_pod_cpu_joules_total", pod.clone());
    m.insert("kepler_pod_cpu_watts", pod);
    m.insert("kepler_container_cpu_joules_total", container.clone());
    m.insert("kepler_container_cpu_watts", container);
    m.insert("kepler_process_cpu_joules_total", process.clone());
    m.insert("kepler_process_cpu_watts", process);
    // Kepler gives these two no node_name; edgewatt keeps it on every series (README).
    m.insert(
        "kepler_node_cpu_info",
        vec![
            "node_name",
            "processor",
            "vendor_id",
            "model_name",
            "physical_id",
            "core_id",
        ],
    );
    m.insert(
        "kepler_build_info",
        vec![
            "node_name",
            "arch",
            "branch",
            "revision",
            "version",
            "goversion",
        ],
    );
    m
}

fn label<'a>(labels: &'a [(String, String)], key: &str) -> &'a str {
    labels
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no {key} in {labels:?}"))
}

/// Every family of the contract is present with exactly Kepler's label keys, and the values say
/// what is true of the fixture.
fn assert_kepler_labels(body: &str) {
    let expected = kepler_label_sets();
    let mut seen: BTreeSet<&str> = BTreeSet::new();
    let samples = samples(body);
    for (name, labels) in &samples {
        if let Some(keys) = expected.get(name.as_str()) {
            let got: Vec<&str> = labels.iter().map(|(k, _)| k.as_str()).collect();
            let (mut a, mut b) = (got.clone(), keys.clone());
            a.sort();
            b.sort();
            assert_eq!(a, b, "{name}: labels {got:?}, Kepler has {keys:?}");
            seen.insert(expected.get_key_value(name.as_str()).unwrap().0);
        }
        assert!(
            !name.starts_with("edgewatt_"),
            "edgewatt name under the kepler prefix: {name}"
        );
    }
    let missing: Vec<_> = expected.keys().filter(|k| !seen.contains(*k)).collect();
    assert!(
        missing.is_empty(),
        "missing families {missing:?} in\n{body}"
    );

    let find = |name: &str, key: &str, value: &str| {
        samples
            .iter()
            .find(|(n, l)| n == name && l.iter().any(|(k, v)| k == key && v == value))
            .map(|(_, l)| l.clone())
            .unwrap_or_else(|| panic!("no {name}{{{key}=\"{value}\"}} in\n{body}"))
    };
    let (uid, cid) = ids(1);
    let nginx = find("kepler_process_cpu_joules_total", "pid", "100");
    assert_eq!(label(&nginx, "exe"), "/usr/sbin/nginx");
    assert_eq!(label(&nginx, "type"), "container");
    assert_eq!(label(&nginx, "container_id"), cid);
    assert_eq!(label(&nginx, "state"), "running");
    assert_eq!(label(&nginx, "vm_id"), "");
    let sshd = find("kepler_process_cpu_joules_total", "pid", "200");
    assert_eq!(label(&sshd, "type"), "regular");
    assert_eq!(label(&sshd, "container_id"), "");
    let c = find("kepler_container_cpu_watts", "container_id", &cid);
    assert_eq!(label(&c, "container_name"), "nginx");
    assert_eq!(label(&c, "runtime"), "containerd");
    assert_eq!(label(&c, "pod_id"), uid);
    let p = find("kepler_pod_cpu_watts", "pod_id", &uid);
    assert_eq!(
        (label(&p, "pod_name"), label(&p, "pod_namespace")),
        ("web", "shop")
    );
    let pkg = find("kepler_node_cpu_joules_total", "zone", "package");
    assert!(
        label(&pkg, "path").ends_with("/sys/class/powercap/intel-rapl:0"),
        "{pkg:?}"
    );
    let cpu = find("kepler_node_cpu_info", "processor", "3");
    assert_eq!(
        label(&cpu, "model_name"),
        "Intel(R) Xeon(R) Gold 6230 CPU @ 2.10GHz"
    );
    for family in [
        "kepler_node_cpu_joules_total",
        "kepler_pod_cpu_joules_total",
    ] {
        let base = family.trim_end_matches("_total");
        assert!(
            body.contains(&format!("# TYPE {family} counter"))
                || body.contains(&format!("# TYPE {base} counter")),
            "{family} is a counter"
        );
    }
    assert!(body.contains("# TYPE kepler_node_cpu_watts gauge"));
}

/// Grafana's `label_values(selector, label)`: the label's non-empty values among the series.
fn label_values(prom: &Prometheus, selector: &str, label: &str) -> Vec<String> {
    let mut v: Vec<String> = prom
        .query_raw(selector)
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["metric"][label].as_str())
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    v.sort();
    v.dedup();
    v
}

/// Template variables, resolved in the order the dashboard declares them (`templating.list`).
struct Vars(Vec<(&'static str, String)>);

impl Vars {
    fn apply(&self, q: &str) -> String {
        let mut q = q.to_string();
        for (k, v) in &self.0 {
            q = q
                .replace(&format!("${{{k}}}"), v)
                .replace(&format!("${k}"), v);
        }
        q
    }
}

/// The variables' own queries; `all`: the dashboard's default "All" (`allValue` `.*`) where a
/// variable allows it, else the first value each query returns (a user's pick).
fn resolve_vars(prom: &Prometheus, all: bool) -> Vars {
    let mut vars = Vars(vec![]);
    // "job": label_values(kepler_node_cpu_watts,job)
    let job = label_values(prom, "kepler_node_cpu_watts", "job");
    assert_eq!(job, [JOB]);
    vars.0.push(("job", JOB.into()));
    // "namespace": label_values(kepler_pod_cpu_watts{job="$job"}, pod_namespace)
    let ns = label_values(
        prom,
        &vars.apply("kepler_pod_cpu_watts{job=\"$job\"}"),
        "pod_namespace",
    );
    assert_eq!(ns, ["kube-system", "shop"]);
    vars.0
        .push(("namespace", if all { ".*".into() } else { "shop".into() }));
    // "pod": label_values(kepler_pod_cpu_watts{job="$job", pod_namespace=~"$namespace"},pod_name)
    let pods = label_values(
        prom,
        &vars.apply("kepler_pod_cpu_watts{job=\"$job\", pod_namespace=~\"$namespace\"}"),
        "pod_name",
    );
    assert!(pods.contains(&"web".to_string()), "{pods:?}");
    vars.0
        .push(("pod", if all { ".*".into() } else { pods[0].clone() }));
    // "process" (no All): query_result(label_join( count by (pid, comm)
    // (kepler_process_cpu_watts{job="$job"}), "process", " | ", "comm", "pid" )), value = pid
    let procs = prom
        .query_raw(&vars.apply("label_join( count by (pid, comm) (kepler_process_cpu_watts{job=\"$job\"}), \"process\", \" | \", \"comm\", \"pid\" )"))
        .unwrap();
    let first = &procs.as_array().unwrap()[0]["metric"];
    assert!(
        first["process"].as_str().unwrap().contains(" | "),
        "{first}"
    );
    vars.0
        .push(("process", first["pid"].as_str().unwrap().to_string()));
    // "node" (no All): label_values(kepler_node_cpu_info{job="$job"}, instance)
    let nodes = label_values(
        prom,
        &vars.apply("kepler_node_cpu_info{job=\"$job\"}"),
        "instance",
    );
    assert_eq!(nodes.len(), 1, "{nodes:?}");
    vars.0.push(("node", nodes[0].clone()));
    // "zone": label_values(kepler_node_cpu_watts{job="$job"}, zone)
    let zones = label_values(
        prom,
        &vars.apply("kepler_node_cpu_watts{job=\"$job\"}"),
        "zone",
    );
    assert_eq!(zones, ["dram", "package"]);
    vars.0
        .push(("zone", if all { ".*".into() } else { "package".into() }));
    // "container": label_values(kepler_container_cpu_watts,container_name)
    let containers = label_values(prom, "kepler_container_cpu_watts", "container_name");
    assert_eq!(containers, ["coredns", "nginx"]);
    vars.0.push((
        "container",
        if all {
            ".*".into()
        } else {
            containers[1].clone()
        },
    ));
    vars
}

/// The panels' queries (`panels[].targets[].expr`), by panel id.
const PANELS: [(u32, &str); 18] = [
    (200, "sum by (zone) (kepler_node_cpu_watts{job=\"$job\", zone=~\"$zone\"})"),
    (201, "sum by (zone) (kepler_node_cpu_active_watts{job=\"$job\", zone=~\"$zone\"})"),
    (202, "sum by (zone) (kepler_node_cpu_idle_watts{job=\"$job\", zone=~\"$zone\"})"),
    (203, "count by (instance, model_name)(kepler_node_cpu_info{job=\"$job\"})"),
    (212, "group by (node_name,zone)(kepler_node_cpu_watts{job=\"$job\"})"),
    (204, "sum by (zone) (kepler_node_cpu_watts{job=\"$job\", zone=~\"$zone\"})"),
    (205, "kepler_node_cpu_watts{job=\"$job\", instance=~\"$node\", zone=~\"$zone\"}"),
    (206, "kepler_node_cpu_active_watts{job=\"$job\", instance=~\"$node\", zone=~\"$zone\"}"),
    (207, "kepler_node_cpu_idle_watts{job=\"$job\", instance=~\"$node\", zone=~\"$zone\"}"),
    (208, "topk(10,sum by (comm,zone)(kepler_process_cpu_watts{job=\"$job\", zone=~\"$zone\"}))"),
    (215, "sum by (zone) (kepler_process_cpu_watts{job=\"$job\", zone=~\"$zone\"})"),
    (210, "kepler_process_cpu_watts{job=\"$job\", zone=~\"$zone\",pid=\"${process}\"}"),
    (214, "topk(10,sum by (container_name,zone)(kepler_container_cpu_watts{job=\"$job\", zone=~\"$zone\"}))"),
    (219, "sum by (zone) (kepler_container_cpu_watts{job=\"$job\", zone=~\"$zone\"})"),
    (216, "kepler_container_cpu_watts{job=\"$job\", zone=~\"$zone\",container_name=~\"$container\"}"),
    (218, "topk(10,sum by (pod_namespace,zone)(kepler_pod_cpu_watts{job=\"$job\", zone=~\"$zone\"}))"),
    (209, "sum by (zone) (kepler_pod_cpu_watts{job=\"$job\", zone=~\"$zone\", pod_namespace=~\"$namespace\"})"),
    (220, "kepler_pod_cpu_watts{job=\"$job\",pod_namespace=~\"$namespace\", zone=~\"$zone\",pod_name=~\"$pod\"}"),
];

/// The VM row (panels 222, 223, 224 and the `vm` variable). edgewatt does not tell VMs apart from
/// other processes, so these stay empty — as the dashboard's own overview says they do for Kepler
/// on a host without VMs ("VM section will be empty by default").
const VM_QUERIES: [&str; 4] = [
    "topk(10,sum by (vm_name,zone)(kepler_vm_cpu_watts{job=\"$job\", zone=~\"$zone\"}))",
    "sum by (zone) (kepler_vm_cpu_watts{job=\"$job\", zone=~\"$zone\"})",
    "kepler_vm_cpu_watts{job=\"$job\", zone=~\"$zone\",vm_name=~\".*\"}",
    "kepler_vm_cpu_watts{job=\"$job\"}",
];

fn assert_panels(prom: &Prometheus, vars: &Vars) {
    for (panel, q) in PANELS {
        let q = vars.apply(q);
        assert!(!q.contains('$'), "unsubstituted variable in {q}");
        let r = prom.query_raw(&q).unwrap();
        let rows = r.as_array().unwrap();
        assert!(!rows.is_empty(), "panel {panel}: no data for {q}");
        assert!(
            rows.iter().all(|s| s["value"][1]
                .as_str()
                .and_then(|v| v.parse::<f64>().ok())
                .is_some_and(|v| v.is_finite() && v >= 0.0)),
            "panel {panel}: {q} → {r}"
        );
    }
    for q in VM_QUERIES {
        let r = prom.query_raw(&vars.apply(q)).unwrap();
        assert_eq!(r, json!([]), "{q}");
    }
}

#[test]
fn keplers_dashboard_queries_return_data() {
    edgewatt_e2e::apiserver::install_crypto_provider();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let api = rt.block_on(ApiServer::start()).unwrap();
    for (_, comm, _, owner) in PROCS {
        if let Some((name, ns, i)) = owner {
            let (uid, cid) = ids(i);
            api.put(pod(name, ns, &uid, comm, &cid)).unwrap();
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    api.write_kubeconfig(&kubeconfig).unwrap();
    let root = dir.path().join("host");
    let t = FixtureTree::new(&root);
    fixture(&t);
    let exit_sshd = Arc::new(AtomicBool::new(false));
    let ticker = keep_ticking(FixtureTree::new(&root), exit_sshd.clone());
    let e = start(&root, &kubeconfig);

    // Pod names come by watch: wait until the exposition names the pods.
    let deadline = Instant::now() + Duration::from_secs(30);
    let body = loop {
        let (code, body) = e.get("/metrics").unwrap();
        assert_eq!(code, 200);
        if body.contains("pod_name=\"web\"")
            && body.contains("container_name=\"coredns\"")
            && body.contains("kepler_process_cpu_watts{")
        {
            break body;
        }
        assert!(Instant::now() < deadline, "pods never named:\n{body}");
        std::thread::sleep(Duration::from_millis(300));
    };
    assert_kepler_labels(&body);
    promtool_check(&body);

    let mut prom = Prometheus::start(Duration::from_secs(1)).unwrap();
    prom.add_target(ScrapeTarget::new(JOB, &format!("127.0.0.1:{}", e.port)))
        .unwrap();
    prom.wait_for_series(
        "kepler_pod_cpu_watts{pod_name=\"web\"} > 0",
        Duration::from_secs(30),
    )
    .unwrap();
    prom.wait_for_series(
        "kepler_container_cpu_watts{container_name=\"coredns\"} > 0",
        Duration::from_secs(30),
    )
    .unwrap();
    for all in [true, false] {
        let vars = resolve_vars(&prom, all);
        assert_panels(&prom, &vars);
    }
    // edgewatt's own readers with `metricPrefix: kepler` (controller and extender: node draw;
    // the chart's recording rule: pod power) still find their data in the Kepler naming.
    let names = MetricNames::new("kepler");
    for q in [
        TargetQuery::nodes(names.clone()).value(Signal::NodeWatts),
        pod_watts_sum(&names),
    ] {
        prom.wait_for_series(&q, Duration::from_secs(10)).unwrap();
    }

    // A process that exits: its series turn `state="terminated"` until they expire.
    exit_sshd.store(true, Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let body = e.metrics();
        let gone = samples(&body).into_iter().find(|(n, l)| {
            n == "kepler_process_cpu_joules_total"
                && l.iter().any(|(k, v)| k == "pid" && v == "200")
        });
        if gone
            .as_ref()
            .is_some_and(|(_, l)| label(l, "state") == "terminated")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no terminated series for pid 200:\n{body}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(ticker);
    drop(rt);
}
