//! The Helm chart (`charts/edgewatt`) installed by Helm's own engine — PyPI `helm-sdkpy`, which
//! bundles Helm's Go library, run from `.venv` (`make deps`) — into the API server double, in
//! several values combinations, with the Prometheus operator's API absent and present (Helm reads
//! `.Capabilities.APIVersions` from the double's discovery). What Helm created is then read back
//! from the double's store and checked: least-privilege RBAC (no wildcard, exactly the verbs the
//! code uses), PodSecurity-friendly settings, the exporter's host access, the scheduler config,
//! monitors and rules per `monitoring.monitors`/`prometheusRule`, scrape annotations a plain
//! Prometheus finds the controller's and extender's metrics by, that every rendered flag is one
//! the real binaries accept, that values.schema.json refuses typos and wrong types naming the key,
//! and that every rendered object is valid in Kubernetes' own schemas (the oldest supported and
//! the newest release, `charts/tests/k8s_schemas.py`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use edgewatt_e2e::apiserver::{ApiServer, Options, ResourceDef};
use serde_json::{json, Value};

const NS: &str = "edgewatt-system";
const RELEASE: &str = "edgewatt";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Resource types a chart install writes (all served by the double).
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
        "policy",
        "v1",
        "poddisruptionbudgets",
        "PodDisruptionBudget",
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
    let s = bare_server(operator).await;
    // `kubectl create ns` (Helm's --create-namespace needs the OpenAPI document)
    s.put(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}))
        .unwrap();
    s
}

/// A double without the release namespace (for `namespace.create`, which renders it).
async fn bare_server(operator: bool) -> ApiServer {
    // No CRDs yet: Helm installs the chart's own (charts/edgewatt/crds).
    let s = ApiServer::start_with(Options {
        crds: false,
        ..Default::default()
    })
    .await
    .expect("API server double");
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
    s
}

/// Types the double does not serve by default that optional parts of the chart write: stand-ins
/// that store what Helm sends (their validation is `validate_kubernetes_schemas`' job).
fn serve_optional_types(s: &ApiServer) {
    s.register(ResourceDef::crd(
        "networking.k8s.io",
        "v1",
        "networkpolicies",
        "NetworkPolicy",
        true,
        false,
    ));
    s.register(ResourceDef::crd(
        "cert-manager.io",
        "v1",
        "certificates",
        "Certificate",
        true,
        true,
    ));
}

struct Installed {
    /// (kind, name) → object, as stored in the double.
    objects: BTreeMap<(String, String), Value>,
    notes: String,
    /// Helm's release manifest: every rendered object.
    manifest: String,
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
    let release = tokio::task::block_in_place(|| {
        edgewatt_e2e::chart::install(s, RELEASE, NS, &values).unwrap_or_else(|e| panic!("{e:#}"))
    });
    let notes = release.notes();
    let manifest = release.manifest();
    let mut objects = BTreeMap::new();
    let mut plurals: Vec<&str> = TYPES.iter().map(|t| t.2).collect();
    plurals.push("namespaces");
    if operator {
        plurals.extend(MONITORING.iter().map(|m| m.0));
    }
    // served only where a test registered them (serve_optional_types); else empty
    plurals.extend(["networkpolicies", "certificates"]);
    for p in plurals {
        for o in s.list(p) {
            if !o["metadata"]["labels"]["kubernetes.io/bootstrapping"].is_null() {
                continue; // kube-apiserver's own roles, not the chart's
            }
            let kind = o["kind"].as_str().unwrap_or(p).to_string();
            let name = o["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            objects.insert((kind, name), o);
        }
    }
    Installed {
        objects,
        notes,
        manifest,
    }
}

/// `helm install` that is expected to fail: Helm's message.
fn install_error(s: &ApiServer, values: &Value) -> String {
    let err = tokio::task::block_in_place(|| {
        edgewatt_e2e::chart::install(s, RELEASE, NS, values)
            .map(|_| ())
            .expect_err("the install should fail")
    });
    format!("{err:#}")
}

fn strs(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|x| x.as_str().map(String::from))
        .collect()
}

/// Least privilege in shape: no wildcard, no non-resource URL, every Lease rule but `create`
/// narrowed to the controller's own Lease, and only read verbs for the extender (if it gets any).
/// Whether the roles are *enough* is not checked here against a hand-written list: the loop
/// tests run every binary under exactly these roles, against a double that enforces RBAC like
/// kube-apiserver, and fail on any refused request (`Loop::assert_no_request_refused`).
fn check_least_privilege(inst: &Installed) {
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
    }
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
    // the extender reads at most
    for b in inst
        .of_kind("ClusterRoleBinding")
        .into_iter()
        .chain(inst.of_kind("RoleBinding"))
        .filter(|b| b["subjects"].to_string().contains("\"edgewatt-scheduler\""))
    {
        let role_name = b["roleRef"]["name"].as_str().unwrap();
        let kind = b["roleRef"]["kind"].as_str().unwrap();
        for rule in inst.get(kind, role_name)["rules"].as_array().unwrap() {
            assert!(
                strs(&rule["verbs"])
                    .iter()
                    .all(|v| matches!(v.as_str(), "get" | "list" | "watch")),
                "the extender writes: {rule}"
            );
        }
    }
}

/// PodDisruptionBudgets for the controller and the extender select exactly their Deployment's
/// pods and leave one replica up.
fn check_pdbs(inst: &Installed) {
    for c in ["controller", "scheduler"] {
        let pdb = inst.get("PodDisruptionBudget", &format!("edgewatt-{c}"));
        let d = inst.get("Deployment", &format!("edgewatt-{c}"));
        assert_eq!(
            pdb["spec"]["selector"]["matchLabels"], d["spec"]["selector"]["matchLabels"],
            "{c}: the PDB selects the Deployment's pods"
        );
        assert_eq!(pdb["spec"]["maxUnavailable"], 1, "{c}");
        assert!(
            d["spec"]["replicas"].as_i64().unwrap() >= 2,
            "{c}: a PDB of one replica blocks drains"
        );
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
    // like every node agent: every taint tolerated, so no node goes unmeasured
    assert!(
        spec["tolerations"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["operator"] == "Exists" && t["key"].is_null() && t["effect"].is_null()),
        "{}",
        spec["tolerations"]
    );
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

/// The rendered extender entry holds the settings of the snippet the extender's README documents
/// (scheduler-plugin/kube-scheduler-config.yaml), except `skip`.
fn check_documented_extender(e: &Value, skip: &[&str]) {
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
        if !skip.contains(&k) {
            assert_eq!(
                e[k], d[k],
                "extender {k}: chart vs scheduler-plugin/kube-scheduler-config.yaml"
            );
        }
    }
}

/// Where a Prometheus that discovers pods by annotation scrapes a workload's pods: (container
/// port, path, scheme), per the `prometheus.io/*` convention of the prometheus-community
/// `prometheus` chart (prometheus-community/helm-charts charts/prometheus/values.yaml, job
/// `kubernetes-pods`: keep `prometheus.io/scrape: "true"`, `__scheme__` from
/// `prometheus.io/scheme` (http when absent), `__metrics_path__` from `prometheus.io/path`
/// (/metrics when absent), the pod IP with the port from `prometheus.io/port`). `None` when the
/// pods are not annotated. The port must be one of the pod's container ports.
fn scrape_target(workload: &Value) -> Option<(u64, String, String)> {
    let a = &workload["spec"]["template"]["metadata"]["annotations"];
    if a["prometheus.io/scrape"] != "true" {
        return None;
    }
    let port: u64 = a["prometheus.io/port"].as_str()?.parse().ok()?;
    let declared = pod_spec(workload)["containers"]
        .as_array()?
        .iter()
        .flat_map(|c| c["ports"].as_array().cloned().unwrap_or_default())
        .any(|p| p["containerPort"] == port);
    assert!(
        declared,
        "prometheus.io/port {port} is no container port of {}",
        workload["metadata"]["name"]
    );
    Some((
        port,
        a["prometheus.io/path"]
            .as_str()
            .unwrap_or("/metrics")
            .to_string(),
        a["prometheus.io/scheme"]
            .as_str()
            .unwrap_or("http")
            .to_string(),
    ))
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

    check_least_privilege(&inst);
    check_pdbs(&inst);
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
    // the extender's only API access: its own read-only ClusterRole on nodes (check_rbac)
    let sa = inst.get("ServiceAccount", "edgewatt-scheduler");
    assert_eq!(sa["automountServiceAccountToken"], true);
    let bound: Vec<&Value> = inst
        .of_kind("ClusterRoleBinding")
        .into_iter()
        .chain(inst.of_kind("RoleBinding"))
        .filter(|b| b["subjects"].to_string().contains("\"edgewatt-scheduler\""))
        .collect();
    assert_eq!(bound.len(), 1, "{bound:?}");
    assert_eq!(bound[0]["roleRef"]["name"], "edgewatt-scheduler");

    // every rendered flag exists in the real binaries
    check_flags_accepted("edgewatt-exporter", &args(ds), &[("NODE_NAME", "n1")]);
    check_flags_accepted("edgewatt-controller", &args(ctl), &[]);
    check_flags_accepted("edgewatt-scheduler", &args(ext), &[]);

    // Services point at the named ports
    let svc = inst.get("Service", "edgewatt-scheduler");
    assert_eq!(svc["spec"]["ports"][0]["port"], 8888);

    // the scheduler config: the extender behind the Service, same settings as the snippet the
    // extender's README documents (scheduler-plugin/kube-scheduler-config.yaml; its urlPrefix is
    // the opt-in node port, extender_reachability_is_opt_in)
    let cm = inst.get("ConfigMap", "edgewatt-scheduler-config");
    let cfg = parse_yaml(data(cm, "extender.yaml"));
    assert_eq!(cfg["kind"], "KubeSchedulerConfiguration");
    let e = &cfg["extenders"][0];
    check_documented_extender(e, &["urlPrefix"]);
    // nothing opens on the nodes by default (issue #29: an unauthenticated node port on every
    // node whether or not anyone wires the extender in): a ClusterIP Service, the DNS name
    assert_eq!(svc["spec"]["type"], "ClusterIP", "{svc}");
    assert!(svc["spec"]["ports"][0]["nodePort"].is_null(), "{svc}");
    assert_eq!(
        e["urlPrefix"],
        "http://edgewatt-scheduler.edgewatt-system.svc:8888"
    );
    assert!(inst.of_kind("NetworkPolicy").is_empty());
    // only what is enabled: no second scheduler, so no configuration for one
    assert!(
        cm["data"]["second-scheduler.yaml"].is_null(),
        "{}",
        cm["data"]
    );
    assert!(
        inst.notes.contains("cannot resolve"),
        "NOTES say a host kube-scheduler cannot use the DNS name: {}",
        inst.notes
    );

    // a Prometheus without the operator finds all three by their pod annotations
    for (kind, name) in [
        ("DaemonSet", "edgewatt-exporter"),
        ("Deployment", "edgewatt-controller"),
        ("Deployment", "edgewatt-scheduler"),
    ] {
        let (port, path, scheme) = scrape_target(inst.get(kind, name))
            .unwrap_or_else(|| panic!("{kind} {name}: no prometheus.io/scrape annotations"));
        assert_eq!(
            (path.as_str(), scheme.as_str()),
            ("/metrics", "http"),
            "{name}"
        );
        assert!(port > 0, "{name}");
    }

    // every object is valid in Kubernetes' own schemas (oldest supported and newest release)
    let report = edgewatt_e2e::chart::validate_kubernetes_schemas(&inst.manifest)
        .unwrap_or_else(|e| panic!("{e:#}"));
    eprintln!("{report}");

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
        inst.notes
            .contains("the Prometheus operator's API is not served"),
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
        "EdgewattExporterAbsent",
    ] {
        assert!(alerts.contains(a), "{a} missing from {alerts:?}");
    }
    assert!(
        inst.notes.contains("for the Prometheus operator"),
        "{}",
        inst.notes
    );
    check_least_privilege(&inst);
    check_pdbs(&inst);
    check_alert_job(&inst);
    assert!(
        !inst.notes.contains("WARNING"),
        "the example sets the release label: {}",
        inst.notes
    );
}

/// `EdgewattExporterDown` selects the `job` the rendered PodMonitor gives the exporter's pods
/// (prometheus-operator's rules: `edgewatt_e2e::operator`), and the promtool unit test of the
/// alert (charts/tests/alerts.test.yaml) feeds that same job.
fn check_alert_job(inst: &Installed) {
    let pm = inst.get("PodMonitor", "edgewatt-exporter");
    let ds = inst.get("DaemonSet", "edgewatt-exporter");
    let labels: BTreeMap<String, String> = ds["spec"]["template"]["metadata"]["labels"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
        .collect();
    let endpoint = &pm["spec"]["podMetricsEndpoints"][0];
    let job = edgewatt_e2e::operator::pod_monitor_job(pm, endpoint, &labels);
    let pr = inst.get("PrometheusRule", "edgewatt");
    let rules = pr["spec"]["groups"][0]["rules"].as_array().unwrap();
    let expr = |alert: &str| {
        rules
            .iter()
            .find(|r| r["alert"] == alert)
            .unwrap_or_else(|| panic!("{alert}"))["expr"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(
        expr("EdgewattExporterDown"),
        format!("up{{job=\"{job}\"}} == 0"),
        "the alert selects the job the PodMonitor produces ({job})"
    );
    // …and fires when every target of that job is gone (no `up` series to be 0)
    assert_eq!(
        expr("EdgewattExporterAbsent"),
        format!("absent(up{{job=\"{job}\"}})")
    );
    let test = std::fs::read_to_string(repo().join("charts/tests/alerts.test.yaml")).unwrap();
    assert!(
        test.contains(&format!("up{{job=\"{job}\"")),
        "alerts.test.yaml feeds EdgewattExporterDown another job than {job}"
    );
}

/// With the Prometheus operator but without the `release` label kube-prometheus-stack selects
/// by, NOTES warn that nothing will be scraped; values.schema.json refuses a wrongly typed value
/// before anything is created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notes_warn_about_the_release_label_and_the_schema_refuses_bad_types() {
    let s = server(true).await;
    let inst = install(&s, json!({}), true).await;
    assert!(
        inst.notes.contains("WARNING")
            && inst.notes.contains("monitoring.additionalLabels.release"),
        "{}",
        inst.notes
    );
    let s = server(false).await;
    let values = json!({"exporter": {"port": "nine"}});
    let err = tokio::task::block_in_place(|| {
        edgewatt_e2e::chart::install(&s, RELEASE, NS, &values).unwrap_err()
    });
    let msg = format!("{err:#}");
    assert!(msg.contains("schema"), "{msg}");
    assert!(
        s.list("deployments").is_empty() && s.list("daemonsets").is_empty(),
        "nothing installed"
    );
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
    check_least_privilege(&inst);
}

/// IPMI out of band (host, credentials Secret, a named sensor) keeps the exporter unprivileged;
/// in band, a container reaches /dev/ipmi0 only where its device cgroup allows it: privileged
/// without a device plugin, else the plugin's resource as a limit and no privilege. Every
/// rendered flag is accepted by the exporter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipmi_out_of_band_and_in_band() {
    let ds_of = |inst: &Installed| inst.get("DaemonSet", "edgewatt-exporter").clone();
    let s = server(false).await;
    let inst = install(
        &s,
        json!({"exporter": {"ipmi": {"host": "10.0.0.9", "credentialsSecret": "bmc-ipmi", "sensor": "Pwr Consumption"}}}),
        false,
    )
    .await;
    let ds = ds_of(&inst);
    check_exporter(&ds, false);
    let a = args(&ds);
    for want in [
        "--ipmi-host=10.0.0.9",
        "--ipmi-credentials-file=/etc/edgewatt/ipmi/credentials",
        "--ipmi-sensor=Pwr Consumption",
    ] {
        assert!(a.contains(&want.to_string()), "{want} not in {a:?}");
    }
    let spec = pod_spec(&ds);
    let vol = spec["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "ipmi")
        .expect("the credentials Secret is a volume");
    assert_eq!(vol["secret"]["secretName"], "bmc-ipmi");
    assert_eq!(vol["secret"]["defaultMode"], 0o400);
    check_flags_accepted("edgewatt-exporter", &a, &[("NODE_NAME", "n1")]);

    let s = server(false).await;
    let ds = ds_of(
        &install(
            &s,
            json!({"exporter": {"ipmi": {"device": "/dev/ipmi0"}}}),
            false,
        )
        .await,
    );
    let sc = &pod_spec(&ds)["containers"][0]["securityContext"];
    assert_eq!(sc["privileged"], true, "{sc}");
    assert_eq!(sc["allowPrivilegeEscalation"], true, "{sc}");
    assert!(args(&ds).contains(&"--ipmi-device=/dev/ipmi0".to_string()));
    check_flags_accepted("edgewatt-exporter", &args(&ds), &[("NODE_NAME", "n1")]);

    let s = server(false).await;
    let ds = ds_of(
        &install(
            &s,
            json!({"exporter": {"ipmi": {"device": "/dev/ipmi0", "deviceResource": "squat.ai/ipmi"}}}),
            false,
        )
        .await,
    );
    check_exporter(&ds, false);
    let c = &pod_spec(&ds)["containers"][0];
    assert_eq!(
        c["resources"]["limits"]["squat.ai/ipmi"], 1,
        "{}",
        c["resources"]
    );
    assert!(
        !c["resources"]["limits"]["memory"].is_null(),
        "other limits kept: {}",
        c["resources"]
    );
}

/// values.schema.json is complete and strict (issue #29): a misspelt key at any level and a
/// wrongly typed value are refused by Helm before anything is created, with a message naming the
/// key — `scheduler.exemptPriority: "high"` once rendered `--exempt-priority=0`, which exempts
/// every ordinary pod and silently turns the filter off. The shipped values and
/// `examples/chart-values-edge.yaml` install (default_install, with_prometheus_operator).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_refuses_typos_and_wrong_types_naming_the_key() {
    // (values, what Helm's message must say: the location and the offending key)
    let cases = [
        (
            json!({"controler": {"enabled": false}}),
            "additional properties 'controler' not allowed",
        ),
        (
            json!({"scheduler": {"exemptPriority": "high"}}),
            "at '/scheduler/exemptPriority': got string, want integer",
        ),
        (
            json!({"scheduler": {"watchNodes": "yes"}}),
            "at '/scheduler/watchNodes'",
        ),
        (
            json!({"scheduler": {"extender": {"adress": "clusterIP"}}}),
            "at '/scheduler/extender': additional properties 'adress'",
        ),
        (
            json!({"scheduler": {"extender": {"address": "nodeport"}}}),
            "at '/scheduler/extender/address'",
        ),
        (
            json!({"scheduler": {"service": {"nodePort": "30888/TCP"}}}),
            "at '/scheduler/service/nodePort'",
        ),
        (
            json!({"exporter": {"redfish": {"urll": "https://bmc"}}}),
            "at '/exporter/redfish': additional properties 'urll'",
        ),
        (
            json!({"controller": {"resources": {"request": {"cpu": "1"}}}}),
            "at '/controller/resources': additional properties 'request'",
        ),
        (
            json!({"monitoring": {"monitors": "always"}}),
            "at '/monitoring/monitors'",
        ),
        (
            json!({"namespace": {"create": "yes"}}),
            "at '/namespace/create'",
        ),
    ];
    for (values, says) in cases {
        let s = server(false).await;
        let msg = install_error(&s, &values);
        // Helm's own words (the harness' message starts with the values it installed)
        let helm = msg
            .split_once("values don't meet the specifications of the schema")
            .map(|(_, m)| m)
            .unwrap_or_else(|| panic!("{values}: not refused by values.schema.json: {msg}"));
        assert!(
            helm.contains(says),
            "Helm's refusal of {values} should say {says:?}: {helm}"
        );
        assert!(
            s.list("deployments").is_empty() && s.list("daemonsets").is_empty(),
            "{values}: nothing installed"
        );
    }
}

/// The extender's reachability is opt-in (issue #29): by default a ClusterIP Service and nothing
/// on the nodes (default_install). `address: nodePort` opens the documented localhost node port
/// (the snippet of scheduler-plugin/kube-scheduler-config.yaml, all of it); `address: clusterIP`
/// needs a fixed address, and says so when it is missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extender_reachability_is_opt_in() {
    let s = server(false).await;
    let inst = install(
        &s,
        json!({"scheduler": {"extender": {"address": "nodePort"}}}),
        false,
    )
    .await;
    let svc = inst.get("Service", "edgewatt-scheduler");
    assert_eq!(svc["spec"]["type"], "NodePort");
    assert_eq!(svc["spec"]["ports"][0]["nodePort"], 30888);
    let cm = inst.get("ConfigMap", "edgewatt-scheduler-config");
    let e = &parse_yaml(data(cm, "extender.yaml"))["extenders"][0];
    check_documented_extender(e, &[]);
    assert!(inst.notes.contains("on every node"), "{}", inst.notes);

    let s = server(false).await;
    let inst = install(
        &s,
        json!({"scheduler": {"extender": {"address": "clusterIP", "kubeconfig": "/var/lib/rancher/k3s/server/cred/scheduler.kubeconfig"},
            "service": {"clusterIP": "10.43.200.88"}}}),
        false,
    )
    .await;
    let svc = inst.get("Service", "edgewatt-scheduler");
    assert_eq!(svc["spec"]["type"], "ClusterIP");
    assert_eq!(svc["spec"]["clusterIP"], "10.43.200.88");
    let cfg = parse_yaml(data(
        inst.get("ConfigMap", "edgewatt-scheduler-config"),
        "extender.yaml",
    ));
    assert_eq!(cfg["extenders"][0]["urlPrefix"], "http://10.43.200.88:8888");
    assert_eq!(
        cfg["clientConnection"]["kubeconfig"],
        "/var/lib/rancher/k3s/server/cred/scheduler.kubeconfig"
    );

    let s = server(false).await;
    let msg = install_error(
        &s,
        &json!({"scheduler": {"extender": {"address": "clusterIP"}}}),
    );
    assert!(msg.contains("scheduler.service.clusterIP"), "{msg}");
}

/// Only what is enabled renders (issue #29): without the extender there is no scheduler
/// configuration and NOTES give no wiring steps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduler_disabled_renders_no_wiring() {
    let s = server(false).await;
    let inst = install(&s, json!({"scheduler": {"enabled": false}}), false).await;
    assert!(
        !inst.has("ConfigMap", "edgewatt-scheduler-config"),
        "{:?}",
        inst.objects.keys()
    );
    assert!(!inst.has("Service", "edgewatt-scheduler"));
    assert!(!inst.has("Deployment", "edgewatt-scheduler"));
    assert!(!inst.has("PodDisruptionBudget", "edgewatt-scheduler"));
    for wiring in ["scheduler-config", "kube-scheduler", "extender"] {
        assert!(
            !inst.notes.contains(wiring),
            "NOTES mention {wiring}:\n{}",
            inst.notes
        );
    }
}

/// `helm upgrade` rolls the second scheduler when its configuration changes (issue #29: the
/// pod's checksum/config hashed the extender entry without its URL — port and service name —
/// nor the profile name): the checksum is the SHA-256 of exactly the configuration it mounts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_scheduler_checksum_is_its_configuration() {
    let mut sums = Vec::new();
    for values in [
        json!({"scheduler": {"secondScheduler": {"enabled": true}}}),
        json!({"scheduler": {"secondScheduler": {"enabled": true}, "port": 9999}}),
        json!({"scheduler": {"secondScheduler": {"enabled": true, "schedulerName": "solar-first"}}}),
    ] {
        let s = server(false).await;
        let inst = install(&s, values.clone(), false).await;
        let config = data(
            inst.get("ConfigMap", "edgewatt-scheduler-config"),
            "second-scheduler.yaml",
        )
        .trim_end_matches('\n')
        .to_string();
        let d = inst.get("Deployment", "edgewatt-second-scheduler");
        let sum = d["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
            .as_str()
            .expect("checksum/config")
            .to_string();
        assert_eq!(sum, sha256_hex(&config), "{values}: checksum of {config}");
        sums.push(sum);
    }
    assert_ne!(sums[0], sums[1], "a new port rolls the second scheduler");
    assert_ne!(
        sums[0], sums[2],
        "a new profile name rolls the second scheduler"
    );
}

/// SHA-256 (hex) as Helm's `sha256sum`, through coreutils.
fn sha256_hex(text: &str) -> String {
    use std::io::Write;
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("sha256sum");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// `monitoring.monitors`/`prometheusRule` (issue #29: monitors rendered only when the operator's
/// CRDs exist at install time, so `helm template`, GitOps renderers and same-sync installs got
/// none): `auto` follows the cluster (default_install, with_prometheus_operator), `false` renders
/// none even with the operator, `true` renders them even where the API is not (yet) served — here
/// Helm then fails to map them, which shows they were rendered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitors_switch_is_explicit() {
    let s = server(true).await;
    let inst = install(
        &s,
        json!({"monitoring": {"monitors": false, "prometheusRule": false}}),
        true,
    )
    .await;
    for kind in ["PodMonitor", "ServiceMonitor", "PrometheusRule"] {
        assert!(inst.of_kind(kind).is_empty(), "{kind} rendered");
    }
    let s = server(false).await;
    let msg = install_error(
        &s,
        &json!({"monitoring": {"monitors": true, "prometheusRule": true}}),
    );
    for kind in ["PodMonitor", "ServiceMonitor", "PrometheusRule"] {
        assert!(msg.contains(kind), "{kind} not rendered: {msg}");
    }
}

/// Every optional part on (`charts/tests/values-everything.yaml`): it installs, the release
/// namespace is rendered with the Pod Security labels the exporter needs and survives
/// `helm uninstall` (issue #29: `--create-namespace` makes an unlabelled one), the extender is
/// reached only through its fixed ClusterIP with a NetworkPolicy in front, and every object is
/// valid in Kubernetes' own schemas.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everything_on_is_valid_kubernetes() {
    let s = bare_server(true).await;
    serve_optional_types(&s);
    let values = parse_yaml(
        &std::fs::read_to_string(repo().join("charts/tests/values-everything.yaml")).unwrap(),
    );
    let inst = install(&s, values, true).await;
    let ns = inst.get("Namespace", NS);
    for mode in ["enforce", "audit", "warn"] {
        assert_eq!(
            ns["metadata"]["labels"][format!("pod-security.kubernetes.io/{mode}")],
            "privileged",
            "{ns}"
        );
    }
    assert_eq!(ns["metadata"]["labels"]["team"], "energy");
    assert_eq!(
        ns["metadata"]["annotations"]["helm.sh/resource-policy"],
        "keep"
    );
    // the extender: fixed ClusterIP, HTTPS (also for Prometheus' annotation scrape), a policy
    let svc = inst.get("Service", "edgewatt-scheduler");
    assert_eq!(svc["spec"]["type"], "ClusterIP");
    let ext = inst.get("Deployment", "edgewatt-scheduler");
    assert_eq!(
        scrape_target(ext).map(|t| t.2),
        Some("https".to_string()),
        "{}",
        ext["spec"]["template"]["metadata"]
    );
    let np = inst.get("NetworkPolicy", "edgewatt-scheduler");
    assert_eq!(
        np["spec"]["podSelector"]["matchLabels"], ext["spec"]["selector"]["matchLabels"],
        "the policy selects the extender's pods"
    );
    let rule = &np["spec"]["ingress"][0];
    assert_eq!(rule["ports"][0]["port"], "http");
    let peers = rule["from"].as_array().expect("peers");
    let second = inst.get("Deployment", "edgewatt-second-scheduler");
    assert!(
        peers
            .iter()
            .any(|p| p["podSelector"]["matchLabels"]
                == second["spec"]["template"]["metadata"]["labels"]),
        "the second scheduler may reach it: {peers:?}"
    );
    assert!(peers
        .iter()
        .any(|p| p["ipBlock"]["cidr"] == "192.168.1.10/32"));
    assert!(inst.has("Certificate", "edgewatt-scheduler-tls"));
    check_least_privilege(&inst);
    let report = edgewatt_e2e::chart::validate_kubernetes_schemas(&inst.manifest)
        .unwrap_or_else(|e| panic!("{e:#}"));
    eprintln!("{report}");
    assert!(report.contains("NetworkPolicy") || report.contains("objects valid"));

    // a policy with no peer at all would shut everyone out (an empty `from` admits everyone)
    let s = server(false).await;
    let msg = install_error(
        &s,
        &json!({"scheduler": {"networkPolicy": {"enabled": true}}}),
    );
    assert!(msg.contains("scheduler.networkPolicy.from"), "{msg}");
}

/// Without the Prometheus operator a Prometheus finds the controller's and extender's metrics by
/// their pod annotations (issue #29: only exporter pods were annotated, so four of five alerts
/// and the migrations dashboard stayed empty). Each annotated endpoint is exactly the one the
/// component's ServiceMonitor scrapes — port, path, scheme; `chart_promql.rs` proves every alert
/// and dashboard expression gets data from those after a real migration — and it answers: the
/// controller and the extender run here as the chart renders them (`edgewatt_e2e::pods`) and
/// serve their metric families at the annotated port and path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_prometheus_finds_controller_and_extender_metrics_by_annotation() {
    edgewatt_e2e::install_crypto_provider();
    let s = server(true).await;
    let inst = install(&s, json!({}), true).await;
    let logs = tempfile::tempdir().unwrap();
    let root = tempfile::tempdir().unwrap();
    let mut pods = Vec::new();
    for (component, families) in [
        ("controller", ["edgewatt_migration_duration_seconds"]),
        ("scheduler", ["edgewatt_scheduler_fail_open"]),
    ] {
        let name = format!("edgewatt-{component}");
        let d = inst.get("Deployment", &name);
        let (port, path, scheme) =
            scrape_target(d).unwrap_or_else(|| panic!("{name}: pods not annotated for scraping"));
        // the ServiceMonitor's endpoint, resolved as the operator does: Service port by name →
        // targetPort (a container port name) → number
        let sm = inst.get("ServiceMonitor", &name);
        let ep = &sm["spec"]["endpoints"][0];
        let svc = inst.get("Service", &name);
        let svc_port = svc["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == ep["port"])
            .expect("the monitor's port names a Service port");
        let container_port = pod_spec(d)["containers"][0]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == svc_port["targetPort"])
            .expect("the Service's targetPort names a container port")["containerPort"]
            .as_u64()
            .unwrap();
        assert_eq!(
            (port, path.as_str(), scheme.as_str()),
            (
                container_port,
                ep["path"].as_str().unwrap_or("/metrics"),
                ep["scheme"].as_str().unwrap_or("http")
            ),
            "{name}: the annotations and the ServiceMonitor scrape the same endpoint"
        );
        let plan = edgewatt_e2e::pods::PodPlan {
            name: format!("{name}-0"),
            namespace: NS.into(),
            node: "n1".into(),
            template: &d["spec"]["template"],
            node_root: root.path().to_path_buf(),
            api: Some(&s),
            bin_dir: edgewatt_e2e::pods::binaries_dir(),
            log_dir: logs.path().to_path_buf(),
            extra_env: vec![],
        };
        let pod = edgewatt_e2e::pods::run_pod(&plan).unwrap_or_else(|e| panic!("{name}: {e:#}"));
        let url = format!(
            "{scheme}://{}{path}",
            pod.addr(&port.to_string()).expect("the annotated port")
        );
        let body = tokio::task::block_in_place(|| fetch(&url, Duration::from_secs(30)))
            .unwrap_or_else(|| panic!("{name}: nothing at {url}"));
        for family in families {
            assert!(
                body.lines()
                    .any(|l| l.starts_with(&format!("# TYPE {family} "))),
                "{name}: {family} not served at {url}:\n{body}"
            );
        }
        pods.push(pod);
    }
}

/// GET with retries until `timeout`: the body of the first 200.
fn fetch(url: &str, timeout: Duration) -> Option<String> {
    let deadline = Instant::now() + timeout;
    let client = reqwest::blocking::Client::new();
    while Instant::now() < deadline {
        if let Ok(r) = client.get(url).send() {
            if r.status().is_success() {
                return r.text().ok();
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    None
}
