//! The Helm chart (`charts/edgewatt`) installed by Helm's own engine — PyPI `helm-sdkpy`, which
//! bundles Helm's Go library, run from `.venv` (`make deps`) — into the API server double, in
//! several values combinations, with the Prometheus operator's API absent and present (Helm reads
//! `.Capabilities.APIVersions` from the double's discovery). What Helm created is then read back
//! from the double's store and checked: least-privilege RBAC (no wildcard, exactly the verbs the
//! code uses), PodSecurity-friendly settings, the exporter's host access, the scheduler config,
//! monitors and rules only with the operator, and that every rendered flag is one the real
//! binaries accept.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use edgewatt_e2e::apiserver::{ApiServer, ResourceDef};
use serde_json::{json, Value};

const NS: &str = "edgewatt-system";
const RELEASE: &str = "edgewatt";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn python() -> PathBuf {
    let p = repo().join(".venv/bin/python");
    assert!(
        p.exists(),
        "{} missing: run `make deps` (installs helm-sdkpy into .venv)",
        p.display()
    );
    p
}

fn builtin(group: &str, version: &str, plural: &str, kind: &str, namespaced: bool) -> ResourceDef {
    let mut d = ResourceDef::crd(group, version, plural, kind, namespaced, false);
    d.builtin = true;
    d
}

/// Resource types a chart install writes, on top of the double's built-ins.
const TYPES: &[(&str, &str, &str, &str, bool)] = &[
    ("", "v1", "serviceaccounts", "ServiceAccount", true),
    ("", "v1", "services", "Service", true),
    ("", "v1", "configmaps", "ConfigMap", true),
    ("", "v1", "secrets", "Secret", true),
    ("apps", "v1", "daemonsets", "DaemonSet", true),
    ("apps", "v1", "deployments", "Deployment", true),
    (
        "rbac.authorization.k8s.io",
        "v1",
        "clusterroles",
        "ClusterRole",
        false,
    ),
    (
        "rbac.authorization.k8s.io",
        "v1",
        "clusterrolebindings",
        "ClusterRoleBinding",
        false,
    ),
    ("rbac.authorization.k8s.io", "v1", "roles", "Role", true),
    (
        "rbac.authorization.k8s.io",
        "v1",
        "rolebindings",
        "RoleBinding",
        true,
    ),
    (
        "apiextensions.k8s.io",
        "v1",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        false,
    ),
];

const MONITORING: &[(&str, &str)] = &[
    ("servicemonitors", "ServiceMonitor"),
    ("podmonitors", "PodMonitor"),
    ("prometheusrules", "PrometheusRule"),
];

async fn server(operator: bool) -> ApiServer {
    let s = ApiServer::start().await.expect("API server double");
    for (g, v, p, k, n) in TYPES {
        s.register(builtin(g, v, p, k, *n));
    }
    if operator {
        for (p, k) in MONITORING {
            s.register(ResourceDef::crd(
                "monitoring.coreos.com",
                "v1",
                p,
                k,
                true,
                false,
            ));
        }
    }
    // `kubectl create ns` (Helm's --create-namespace needs the OpenAPI document)
    s.put(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}))
        .unwrap();
    s
}

struct Installed {
    /// (kind, name) → object, as stored in the double.
    objects: BTreeMap<(String, String), Value>,
    notes: String,
}

impl Installed {
    fn get(&self, kind: &str, name: &str) -> &Value {
        self.objects
            .get(&(kind.to_string(), name.to_string()))
            .unwrap_or_else(|| {
                panic!(
                    "{kind} {name} not installed; have: {:?}",
                    self.objects.keys().collect::<Vec<_>>()
                )
            })
    }

    fn of_kind(&self, kind: &str) -> Vec<&Value> {
        self.objects
            .iter()
            .filter(|((k, _), _)| k == kind)
            .map(|(_, v)| v)
            .collect()
    }

    fn has(&self, kind: &str, name: &str) -> bool {
        self.objects
            .contains_key(&(kind.to_string(), name.to_string()))
    }
}

/// `helm install` (no wait) into the double; returns what it stored.
async fn install(s: &ApiServer, values: Value, operator: bool) -> Installed {
    let out = {
        let py = python();
        let script = repo().join("charts/tests/helm_install.py");
        let kc = s.kubeconfig_path().to_path_buf();
        let values = values.to_string();
        tokio::task::spawn_blocking(move || {
            Command::new(py)
                .arg(script)
                .arg(kc)
                .args([RELEASE, NS, &values])
                // Helm's Secret storage driver speaks protobuf, which the double does not:
                // keep the release record in memory (the chart's objects are still created)
                .env("HELM_DRIVER", "memory")
                .output()
                .expect("run charts/tests/helm_install.py")
        })
        .await
        .unwrap()
    };
    if !out.status.success() {
        let log: Vec<String> = s
            .requests()
            .iter()
            .map(|r| format!("{} {}?{} -> {}", r.method, r.path, r.query, r.status))
            .collect();
        panic!(
            "helm install with {values}: {}\n{}\nrequests to the double:\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout),
            log.join("\n")
        );
    }
    let release: Value = serde_json::from_slice(&out.stdout).expect("release JSON");
    let notes = find_string(&release, "notes").unwrap_or_default();
    let mut objects = BTreeMap::new();
    let mut plurals: Vec<&str> = TYPES.iter().map(|t| t.2).collect();
    plurals.push("namespaces");
    if operator {
        plurals.extend(MONITORING.iter().map(|m| m.0));
    }
    for p in plurals {
        for o in s.list(p) {
            let kind = o["kind"].as_str().unwrap_or(p).to_string();
            let name = o["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            objects.insert((kind, name), o);
        }
    }
    Installed { objects, notes }
}

fn find_string(v: &Value, key: &str) -> Option<String> {
    match v {
        Value::Object(m) => m
            .get(key)
            .and_then(|x| x.as_str().map(String::from))
            .or_else(|| m.values().find_map(|x| find_string(x, key))),
        Value::Array(a) => a.iter().find_map(|x| find_string(x, key)),
        _ => None,
    }
}

fn strs(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|x| x.as_str().map(String::from))
        .collect()
}

/// Verbs each (apiGroup, resource) may be granted — exactly what the code calls:
/// exporter/src/pods.rs (pod watcher), controller/src/{reconciler,actuator,status,leader}.rs and
/// kube-runtime's event Recorder (create, then patch for a repeated series).
fn code_verbs(
    flotta: bool,
) -> BTreeMap<&'static str, BTreeMap<(&'static str, &'static str), BTreeSet<&'static str>>> {
    let set = |v: &[&'static str]| v.iter().copied().collect::<BTreeSet<_>>();
    let mut exporter = BTreeMap::new();
    exporter.insert(("", "pods"), set(&["list", "watch"]));
    let mut controller = BTreeMap::new();
    controller.insert(("", "nodes"), set(&["get", "list", "watch", "patch"]));
    controller.insert(("", "pods"), set(&["list", "watch"]));
    controller.insert(("", "namespaces"), set(&["list", "watch"]));
    controller.insert(("", "pods/eviction"), set(&["create"]));
    controller.insert(("policy", "poddisruptionbudgets"), set(&["list", "watch"]));
    controller.insert(
        ("edgewatt.io", "energypolicies"),
        set(&["get", "list", "watch", "patch"]),
    );
    controller.insert(("edgewatt.io", "energypolicies/status"), set(&["patch"]));
    if flotta {
        controller.insert(
            ("management.project-flotta.io", "edgedevices"),
            set(&["get", "list", "watch", "patch"]),
        );
        controller.insert(
            ("management.project-flotta.io", "edgeworkloads"),
            set(&["get", "list", "watch", "create", "patch", "delete"]),
        );
    }
    controller.insert(("events.k8s.io", "events"), set(&["create", "patch"]));
    let mut leader = BTreeMap::new();
    leader.insert(
        ("coordination.k8s.io", "leases"),
        set(&["get", "create", "patch"]),
    );
    BTreeMap::from([
        ("edgewatt-exporter", exporter),
        ("edgewatt-controller", controller),
        ("edgewatt-controller-leader-election", leader),
    ])
}

/// No wildcards anywhere; each role grants exactly the verbs of `code_verbs`.
fn check_rbac(inst: &Installed, flotta: bool) {
    let expected = code_verbs(flotta);
    let mut seen = BTreeSet::new();
    for role in inst
        .of_kind("ClusterRole")
        .into_iter()
        .chain(inst.of_kind("Role"))
    {
        let name = role["metadata"]["name"].as_str().unwrap();
        for rule in role["rules"].as_array().expect("rules") {
            for field in [
                "verbs",
                "resources",
                "apiGroups",
                "resourceNames",
                "nonResourceURLs",
            ] {
                assert!(
                    !strs(&rule[field]).iter().any(|x| x.contains('*')),
                    "{name}: wildcard in {field}: {rule}"
                );
            }
            assert!(rule["nonResourceURLs"].is_null(), "{name}: {rule}");
        }
        let want = expected
            .get(name)
            .unwrap_or_else(|| panic!("unexpected role {name}: {role}"));
        seen.insert(name.to_string());
        let mut granted: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
        for rule in role["rules"].as_array().unwrap() {
            for g in strs(&rule["apiGroups"]) {
                for r in strs(&rule["resources"]) {
                    granted
                        .entry((g.clone(), r))
                        .or_default()
                        .extend(strs(&rule["verbs"]));
                }
            }
        }
        let want: BTreeMap<(String, String), BTreeSet<String>> = want
            .iter()
            .map(|((g, r), v)| {
                (
                    (g.to_string(), r.to_string()),
                    v.iter().map(|s| s.to_string()).collect(),
                )
            })
            .collect();
        assert_eq!(
            granted, want,
            "{name}: granted (left) differs from the verbs the code uses (right)"
        );
    }
    let want: BTreeSet<String> = expected.keys().map(|s| s.to_string()).collect();
    assert_eq!(seen, want, "roles rendered");
    // the Lease rule is narrowed to the controller's own Lease for everything but create
    let le = inst.get("Role", "edgewatt-controller-leader-election");
    for rule in le["rules"].as_array().unwrap() {
        if strs(&rule["verbs"]).iter().any(|v| v != "create") {
            assert_eq!(
                strs(&rule["resourceNames"]),
                ["edgewatt-controller"],
                "{rule}"
            );
        }
    }
}

fn pod_spec(o: &Value) -> &Value {
    &o["spec"]["template"]["spec"]
}

/// Non-root, read-only root, no escalation, every capability dropped, RuntimeDefault seccomp,
/// no host namespaces or host paths: the `restricted` PodSecurity level.
fn check_restricted(o: &Value) {
    let name = o["metadata"]["name"].as_str().unwrap();
    let spec = pod_spec(o);
    assert_eq!(spec["securityContext"]["runAsNonRoot"], true, "{name}");
    assert_eq!(
        spec["securityContext"]["seccompProfile"]["type"], "RuntimeDefault",
        "{name}"
    );
    for f in ["hostPID", "hostNetwork", "hostIPC"] {
        assert!(spec[f].is_null() || spec[f] == false, "{name}: {f}");
    }
    for v in spec["volumes"].as_array().into_iter().flatten() {
        assert!(v["hostPath"].is_null(), "{name}: hostPath {v}");
    }
    for c in spec["containers"].as_array().unwrap() {
        let sc = &c["securityContext"];
        assert_eq!(sc["allowPrivilegeEscalation"], false, "{name}");
        assert_eq!(sc["readOnlyRootFilesystem"], true, "{name}");
        assert_eq!(sc["runAsNonRoot"], true, "{name}");
        assert_eq!(strs(&sc["capabilities"]["drop"]), ["ALL"], "{name}");
        assert!(sc["capabilities"]["add"].is_null(), "{name}");
        assert!(sc["privileged"].is_null() || sc["privileged"] == false);
    }
}

fn args(o: &Value) -> Vec<String> {
    strs(&pod_spec(o)["containers"][0]["args"])
}

/// The exporter: host PID, host /proc and /sys read-only, root without `privileged`, only the
/// eBPF capabilities, node name from the downward API, tolerating edgewatt's own taint.
fn check_exporter(ds: &Value, sys_admin: bool) {
    let spec = pod_spec(ds);
    assert_eq!(spec["hostPID"], true);
    let c = &spec["containers"][0];
    let sc = &c["securityContext"];
    assert_eq!(sc["privileged"], false);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(strs(&sc["capabilities"]["drop"]), ["ALL"]);
    let mut want = vec!["BPF", "PERFMON"];
    if sys_admin {
        want.push("SYS_ADMIN");
    }
    assert_eq!(strs(&sc["capabilities"]["add"]), want);
    let hostpaths: BTreeMap<String, String> = spec["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| !v["hostPath"].is_null())
        .map(|v| {
            (
                v["name"].as_str().unwrap().to_string(),
                v["hostPath"]["path"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for m in c["volumeMounts"].as_array().unwrap() {
        let Some(path) = hostpaths.get(m["name"].as_str().unwrap()) else {
            continue;
        };
        if path == "/var/lib/edgewatt" {
            continue; // the estimator's calibration file is written
        }
        assert_eq!(m["readOnly"], true, "host {path} must be read-only: {m}");
    }
    assert_eq!(hostpaths["host-proc"], "/proc");
    assert_eq!(hostpaths["host-sys"], "/sys");
    let a = args(ds);
    assert!(a.contains(&"--host-root=/host".to_string()), "{a:?}");
    let env = &c["env"];
    assert!(
        env.as_array()
            .unwrap()
            .iter()
            .any(|e| e["name"] == "NODE_NAME"
                && e["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"),
        "{env}"
    );
    let tol = &spec["tolerations"];
    assert!(
        tol.as_array()
            .unwrap()
            .iter()
            .any(|t| t["key"] == "edgewatt.io/energy-starved" && t["operator"] == "Exists"),
        "{tol}"
    );
}

/// Runs a real binary with the rendered arguments (listen addresses moved to a free loopback
/// port): clap exits with status 2 on an unknown or malformed flag; anything else (running, or
/// failing later for want of a cluster or /host) means every flag was accepted.
fn check_flags_accepted(bin: &str, rendered: &[String], env: &[(&str, &str)]) {
    let exe = std::env::current_exe().unwrap();
    let path = exe.parent().and_then(Path::parent).unwrap().join(bin);
    assert!(
        path.exists(),
        "{} not built: run `cargo build --workspace --bins`",
        path.display()
    );
    let port = edgewatt_e2e::free_port();
    let a: Vec<String> = rendered
        .iter()
        .map(|a| {
            for flag in ["--listen=", "--metrics-addr="] {
                if a.starts_with(flag) {
                    return format!("{flag}127.0.0.1:{port}");
                }
            }
            a.clone()
        })
        .collect();
    let tmp = tempfile::tempdir().unwrap();
    let mut child = Command::new(&path)
        .args(&a)
        .envs(env.iter().copied())
        .env("KUBECONFIG", tmp.path().join("none"))
        .env_remove("KUBERNETES_SERVICE_HOST")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            use std::io::Read;
            child.stderr.take().unwrap().read_to_string(&mut err).ok();
            assert_ne!(
                status.code(),
                Some(2),
                "{bin} rejected the chart's flags {a:?}: {err}"
            );
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn parse_yaml(text: &str) -> Value {
    serde_saphyr::from_str(text).unwrap_or_else(|e| panic!("YAML: {e}\n{text}"))
}

fn data<'a>(cm: &'a Value, key: &str) -> &'a str {
    cm["data"][key]
        .as_str()
        .unwrap_or_else(|| panic!("no data.{key} in {}", cm["metadata"]["name"]))
}

/// Defaults, no Prometheus operator: the least-privilege, PodSecurity and wiring checks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_install() {
    let s = server(false).await;
    let inst = install(&s, json!({}), false).await;

    // CRD from charts/edgewatt/crds, the three components, Helm's release record
    assert!(inst.has("CustomResourceDefinition", "energypolicies.edgewatt.io"));
    assert!(inst.has("Namespace", NS));
    let ds = inst.get("DaemonSet", "edgewatt-exporter");
    let ctl = inst.get("Deployment", "edgewatt-controller");
    let ext = inst.get("Deployment", "edgewatt-scheduler");
    for kind in ["Service", "ServiceAccount"] {
        for c in ["exporter", "controller", "scheduler"] {
            assert!(
                inst.has(kind, &format!("edgewatt-{c}")),
                "{kind} edgewatt-{c}"
            );
        }
    }
    assert_eq!(
        inst.of_kind("DaemonSet").len(),
        1,
        "no carbon zones by default"
    );
    assert_eq!(
        inst.of_kind("Deployment").len(),
        2,
        "no second scheduler by default"
    );

    check_rbac(&inst, true);
    check_restricted(ctl);
    check_restricted(ext);
    check_exporter(ds, false);

    // controller: 2 replicas, the Lease in the release namespace, identity from the pod name
    assert_eq!(ctl["spec"]["replicas"], 2);
    let a = args(ctl);
    assert!(a.contains(&format!("--lease-namespace={NS}")), "{a:?}");
    assert!(pod_spec(ctl)["containers"][0]["env"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["name"] == "POD_NAME"));
    // the extender has no API access at all
    let sa = inst.get("ServiceAccount", "edgewatt-scheduler");
    assert_eq!(sa["automountServiceAccountToken"], false);
    assert!(inst
        .of_kind("ClusterRoleBinding")
        .iter()
        .chain(inst.of_kind("RoleBinding").iter())
        .all(|b| !b["subjects"].to_string().contains("edgewatt-scheduler")));

    // every rendered flag exists in the real binaries
    check_flags_accepted("edgewatt-exporter", &args(ds), &[("NODE_NAME", "n1")]);
    check_flags_accepted("edgewatt-controller", &args(ctl), &[]);
    check_flags_accepted("edgewatt-scheduler", &args(ext), &[]);

    // Services point at the named ports
    let svc = inst.get("Service", "edgewatt-scheduler");
    assert_eq!(svc["spec"]["ports"][0]["port"], 8888);

    // the scheduler config: the extender behind the Service, same settings as the snippet the
    // extender's README documents (scheduler-plugin/kube-scheduler-config.yaml)
    let cm = inst.get("ConfigMap", "edgewatt-scheduler-config");
    let cfg = parse_yaml(data(cm, "extender.yaml"));
    assert_eq!(cfg["kind"], "KubeSchedulerConfiguration");
    let e = &cfg["extenders"][0];
    assert_eq!(
        e["urlPrefix"],
        format!("http://edgewatt-scheduler.{NS}.svc:8888")
    );
    let documented = parse_yaml(
        &std::fs::read_to_string(repo().join("scheduler-plugin/kube-scheduler-config.yaml"))
            .unwrap(),
    );
    let d = &documented["extenders"][0];
    for k in [
        "urlPrefix",
        "filterVerb",
        "prioritizeVerb",
        "weight",
        "nodeCacheCapable",
        "ignorable",
        "httpTimeout",
        "enableHTTPS",
    ] {
        assert_eq!(
            e[k], d[k],
            "extender {k}: chart vs scheduler-plugin/kube-scheduler-config.yaml"
        );
    }
    let second = parse_yaml(data(cm, "second-scheduler.yaml"));
    assert_eq!(second["profiles"][0]["schedulerName"], "edgewatt-scheduler");

    // no operator: no monitors or rules were attempted (the double does not serve them, so an
    // attempt would have failed the install); the plain rules file is there instead
    let rules = inst.get("ConfigMap", "edgewatt-alert-rules");
    let file =
        std::fs::read_to_string(repo().join("charts/edgewatt/files/alerts.rules.yaml")).unwrap();
    assert_eq!(
        parse_yaml(data(rules, "alerts.rules.yaml")),
        parse_yaml(&file)
    );
    assert!(
        inst.notes.contains("no Prometheus operator found"),
        "{}",
        inst.notes
    );

    // dashboards for the Grafana sidecar, valid JSON, one per file
    let boards: Vec<&Value> = inst
        .of_kind("ConfigMap")
        .into_iter()
        .filter(|c| c["metadata"]["labels"]["grafana_dashboard"] == "1")
        .collect();
    let files = std::fs::read_dir(repo().join("charts/edgewatt/files/dashboards"))
        .unwrap()
        .count();
    assert_eq!(boards.len(), files);
    assert!(boards.len() >= 4);
    for b in boards {
        for (_, v) in b["data"].as_object().unwrap() {
            let d: Value = serde_json::from_str(v.as_str().unwrap()).expect("dashboard JSON");
            assert!(d["uid"].as_str().unwrap().starts_with("edgewatt-"));
        }
    }
    let ga = inst.get("ConfigMap", "edgewatt-grafana-alerts");
    assert_eq!(ga["metadata"]["labels"]["grafana_alert"], "1");
    let g = parse_yaml(data(ga, "edgewatt-alerts.yaml"));
    let titles: Vec<String> = g["groups"][0]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["title"].as_str().unwrap().to_string())
        .collect();
    assert!(
        titles.contains(&"EdgewattMigration".to_string()),
        "{titles:?}"
    );
    assert!(!data(ga, "edgewatt-alerts.yaml").contains("__DATASOURCE_UID__"));
}

/// The Prometheus operator's API served: PodMonitor, ServiceMonitors and the PrometheusRule
/// appear (with the selecting labels), carrying the same rules as the plain file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_prometheus_operator() {
    let s = server(true).await;
    // the README's example values for kube-prometheus-stack
    let values = parse_yaml(
        &std::fs::read_to_string(repo().join("examples/chart-values-edge.yaml")).unwrap(),
    );
    let inst = install(&s, values, true).await;
    let pm = inst.get("PodMonitor", "edgewatt-exporter");
    assert_eq!(pm["metadata"]["labels"]["release"], "kps");
    assert!(inst.has("DaemonSet", "edgewatt-exporter-solar"));
    assert_eq!(pm["spec"]["podMetricsEndpoints"][0]["port"], "metrics");
    assert_eq!(
        pm["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"],
        "exporter"
    );
    for c in ["controller", "scheduler"] {
        let sm = inst.get("ServiceMonitor", &format!("edgewatt-{c}"));
        let svc = inst.get("Service", &format!("edgewatt-{c}"));
        let port = &sm["spec"]["endpoints"][0]["port"];
        assert_eq!(
            port, &svc["spec"]["ports"][0]["name"],
            "{c}: monitor port names the Service port"
        );
        for (k, v) in sm["spec"]["selector"]["matchLabels"].as_object().unwrap() {
            assert_eq!(
                &svc["metadata"]["labels"][k], v,
                "{c}: monitor selects its Service"
            );
        }
    }
    let pr = inst.get("PrometheusRule", "edgewatt");
    let file = parse_yaml(
        &std::fs::read_to_string(repo().join("charts/edgewatt/files/alerts.rules.yaml")).unwrap(),
    );
    assert_eq!(pr["spec"]["groups"], file["groups"]);
    let alerts: BTreeSet<String> = file["groups"][0]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["alert"].as_str().map(String::from))
        .collect();
    for a in [
        "EdgewattMigration",
        "EdgewattMigrationFailed",
        "EdgewattTargetStarved",
        "EdgewattMetricsStale",
        "EdgewattExporterDown",
    ] {
        assert!(alerts.contains(a), "{a} missing from {alerts:?}");
    }
    assert!(
        inst.notes.contains("Prometheus operator found"),
        "{}",
        inst.notes
    );
    check_rbac(&inst, true);
}

/// Second scheduler on, per-node carbon zones, eBPF on an old kernel (SYS_ADMIN), Flotta off,
/// a renamed release: the optional parts render, install and stay least-privilege.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_scheduler_zones_and_options() {
    let s = server(false).await;
    let inst = install(
        &s,
        json!({
            "scheduler": {"secondScheduler": {"enabled": true}, "defaultPowerBudgetWatts": 60},
            "exporter": {
                "sysAdmin": true, "powerBudgetWatts": 45, "carbonIntensity": 350,
                "carbonIntensityZones": [{"name": "solar", "nodeLabel": "edgewatt.io/grid", "value": "solar", "intensity": 40}],
                "redfish": {"url": "https://10.0.0.5", "credentialsSecret": "bmc", "insecure": true},
                "processMetrics": true
            },
            "controller": {"flotta": false, "migrationTimeout": "5m"},
            "prometheus": {"basicAuthSecret": "prom-auth", "caConfigMap": "prom-ca"}
        }),
        false,
    )
    .await;
    // the second scheduler: upstream kube-scheduler with the extender config, restricted
    let d = inst.get("Deployment", "edgewatt-second-scheduler");
    check_restricted(d);
    let c = &pod_spec(d)["containers"][0];
    assert!(c["image"]
        .as_str()
        .unwrap()
        .starts_with("registry.k8s.io/kube-scheduler:"));
    assert!(strs(&c["command"])
        .contains(&"--config=/etc/kubernetes/edgewatt/second-scheduler.yaml".to_string()));
    let crb = inst.get("ClusterRoleBinding", "edgewatt-second-scheduler");
    assert_eq!(crb["roleRef"]["name"], "system:kube-scheduler");
    // carbon zones: one DaemonSet per zone on its nodes, the main one everywhere else
    let main = inst.get("DaemonSet", "edgewatt-exporter");
    let solar = inst.get("DaemonSet", "edgewatt-exporter-solar");
    let term = |ds: &Value| {
        pod_spec(ds)["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
            ["nodeSelectorTerms"][0]["matchExpressions"][0]
            .clone()
    };
    assert_eq!(
        term(main),
        json!({"key": "edgewatt.io/grid", "operator": "NotIn", "values": ["solar"]})
    );
    assert_eq!(
        term(solar),
        json!({"key": "edgewatt.io/grid", "operator": "In", "values": ["solar"]})
    );
    assert!(args(main).contains(&"--carbon-intensity=350".to_string()));
    assert!(args(solar).contains(&"--carbon-intensity=40".to_string()));
    assert_ne!(
        main["spec"]["selector"], solar["spec"]["selector"],
        "DaemonSet selectors must not overlap"
    );
    check_exporter(main, true);
    check_exporter(solar, true);
    check_flags_accepted("edgewatt-exporter", &args(solar), &[("NODE_NAME", "n1")]);
    let ctl = inst.get("Deployment", "edgewatt-controller");
    let ext = inst.get("Deployment", "edgewatt-scheduler");
    check_flags_accepted("edgewatt-controller", &args(ctl), &[]);
    check_flags_accepted("edgewatt-scheduler", &args(ext), &[]);
    check_restricted(ctl);
    check_restricted(ext);
    check_rbac(&inst, false);
}
