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
    let release = tokio::task::block_in_place(|| {
        edgewatt_e2e::chart::install(s, RELEASE, NS, &values).unwrap_or_else(|e| panic!("{e:#}"))
    });
    let notes = release.notes();
    let mut objects = BTreeMap::new();
    let mut plurals: Vec<&str> = TYPES.iter().map(|t| t.2).collect();
    plurals.push("namespaces");
    if operator {
        plurals.extend(MONITORING.iter().map(|m| m.0));
    }
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
    Installed { objects, notes }
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
    // extender's README documents (scheduler-plugin/kube-scheduler-config.yaml)
    let cm = inst.get("ConfigMap", "edgewatt-scheduler-config");
    let cfg = parse_yaml(data(cm, "extender.yaml"));
    assert_eq!(cfg["kind"], "KubeSchedulerConfiguration");
    let e = &cfg["extenders"][0];
    // reachable from a hostNetwork static kube-scheduler: the NodePort on localhost
    assert_eq!(e["urlPrefix"], "http://127.0.0.1:30888");
    assert_eq!(svc["spec"]["type"], "NodePort");
    assert_eq!(svc["spec"]["ports"][0]["nodePort"], 30888);
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
    let rule = pr["spec"]["groups"][0]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["alert"] == "EdgewattExporterDown")
        .expect("EdgewattExporterDown");
    let expr = rule["expr"].as_str().unwrap();
    assert_eq!(
        expr,
        format!("up{{job=\"{job}\"}} == 0"),
        "the alert selects the job the PodMonitor produces ({job})"
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
