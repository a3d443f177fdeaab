//! The real `edgewatt-scheduler` binary, started with exactly the args and env that Helm's engine
//! renders for its Deployment with the chart's defaults (installed by helm-sdkpy into the API
//! server double, as `e2e/tests/chart_install.rs` does, and run as the chart's ServiceAccount; only the Prometheus URL and the port are
//! set, for the test's own Prometheus and a free port), against a real Prometheus scraping
//! exporter-shaped series and the double serving Nodes with the budget annotation: the scores
//! are real, not neutral — the annotation's budget from the Node watcher, the exporter's budget
//! metric where there is no annotation, and the unmeasured policy for a node without data.
//! A second install renders the options: TLS through cert-manager, the second scheduler.

mod common;

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use edgewatt_crds::keys;
use edgewatt_e2e::apiserver::{ApiServer, ResourceDef};
use serde_json::{json, Value};

const NS: &str = "edgewatt-system";

/// What a chart install creates, on top of the double's built-in types.
const TYPES: &[(&str, &str, &str, bool)] = &[
    ("", "serviceaccounts", "ServiceAccount", true),
    ("", "services", "Service", true),
    ("", "configmaps", "ConfigMap", true),
    ("", "secrets", "Secret", true),
    ("apps", "daemonsets", "DaemonSet", true),
    ("apps", "deployments", "Deployment", true),
    (
        "rbac.authorization.k8s.io",
        "clusterroles",
        "ClusterRole",
        false,
    ),
    (
        "rbac.authorization.k8s.io",
        "clusterrolebindings",
        "ClusterRoleBinding",
        false,
    ),
    ("rbac.authorization.k8s.io", "roles", "Role", true),
    (
        "rbac.authorization.k8s.io",
        "rolebindings",
        "RoleBinding",
        true,
    ),
    (
        "apiextensions.k8s.io",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        false,
    ),
];

async fn cluster() -> ApiServer {
    let s = ApiServer::start().await.expect("API server double");
    for (g, p, k, n) in TYPES {
        let mut d = ResourceDef::crd(g, "v1", p, k, *n, false);
        d.builtin = true;
        s.register(d);
    }
    s.register(ResourceDef::crd(
        "cert-manager.io",
        "v1",
        "certificates",
        "Certificate",
        true,
        false,
    ));
    s.put(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}))
        .unwrap();
    s
}

/// `helm install edgewatt charts/edgewatt` with `values` through Helm's engine (helm-sdkpy),
/// the same path the e2e suite uses; returns the rendered NOTES.txt.
async fn helm_install(s: &ApiServer, values: Value) -> String {
    tokio::task::block_in_place(|| edgewatt_e2e::chart::install(s, "edgewatt", NS, &values))
        .unwrap_or_else(|e| panic!("helm install: {e:#}"))
        .notes()
}

fn object(s: &ApiServer, plural: &str, name: &str) -> Value {
    s.list(plural)
        .into_iter()
        .find(|o| o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("{plural}/{name} not installed"))
}

fn strs(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|x| x.as_str().map(String::from))
        .collect()
}

fn node(name: &str, budget: Option<&str>) -> Value {
    let mut n = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}, "spec": {}});
    if let Some(b) = budget {
        n["metadata"]["annotations"] = json!({keys::POWER_BUDGET_WATTS: b});
    }
    n
}

/// Exporter-shaped series: a (annotated 200 W) draws 50 W, b (annotated 100 W) 80 W, c (no
/// annotation, exporter budget 100 W) 40 W; d has no exporter.
const EXPORTERS: &str = "\
# TYPE edgewatt_node_cpu_watts gauge
edgewatt_node_cpu_watts{node_name=\"a\",zone=\"package\",source=\"rapl\"} 45
edgewatt_node_cpu_watts{node_name=\"a\",zone=\"dram\",source=\"rapl\"} 5
edgewatt_node_cpu_watts{node_name=\"b\",zone=\"package\",source=\"rapl\"} 80
edgewatt_node_cpu_watts{node_name=\"c\",zone=\"package\",source=\"estimator\"} 40
# TYPE edgewatt_node_power_budget_watts gauge
edgewatt_node_power_budget_watts{node_name=\"b\"} 500
edgewatt_node_power_budget_watts{node_name=\"c\"} 100
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chart_defaults_give_real_scores() {
    let prom =
        common::prometheus_scraping(|| EXPORTERS.to_string(), "edgewatt_node_cpu_watts").await;

    let api = cluster().await;
    for (n, b) in [
        ("a", Some("200")),
        ("b", Some("100")),
        ("c", None),
        ("d", None),
    ] {
        api.put(node(n, b)).unwrap();
    }
    let port = edgewatt_e2e::free_port();
    let notes = helm_install(
        &api,
        json!({"prometheus": {"url": prom.url()}, "scheduler": {"port": port}}),
    )
    .await;
    // nothing opens on the nodes by default: the Service's DNS name, which NOTES say a
    // kube-scheduler on the host cannot resolve (the chart's scheduler.extender.address)
    assert!(
        notes.contains(&format!(
            "It reaches the extender at http://edgewatt-scheduler.{NS}.svc:{port}"
        )) && notes.contains("cannot resolve"),
        "{notes}"
    );
    let deploy = object(&api, "deployments", "edgewatt-scheduler");
    let container = &deploy["spec"]["template"]["spec"]["containers"][0];
    let args = strs(&container["args"]);
    assert!(args.contains(&"--watch-nodes=true".to_string()), "{args:?}");
    let env: Vec<(String, String)> = container["env"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            let v = e["value"].as_str().expect("plain env values only");
            (e["name"].as_str().unwrap().to_string(), v.to_string())
        })
        .collect();

    // The extender runs as the chart's ServiceAccount: the double enforces the chart's RBAC.
    let sa = deploy["spec"]["template"]["spec"]["serviceAccountName"]
        .as_str()
        .expect("serviceAccountName");
    let kubeconfig = tempfile::NamedTempFile::new().unwrap();
    api.write_kubeconfig_with_token(
        kubeconfig.path(),
        &api.service_account_token(NS, sa, None),
        NS,
    )
    .unwrap();
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_edgewatt-scheduler"))
        .args(&args)
        .envs(env)
        .env("KUBECONFIG", kubeconfig.path())
        .env_remove("KUBERNETES_SERVICE_HOST")
        .stdout(Stdio::null())
        .stderr(log.reopen().unwrap())
        .spawn()
        .unwrap();
    let http = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}");
    let body = json!({"Pod": {"metadata": {"name": "p", "namespace": "default"}},
                      "NodeNames": ["a", "b", "c", "d"]});
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let scores = loop {
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "edgewatt-scheduler exited ({status}): {}",
                std::fs::read_to_string(log.path()).unwrap()
            );
        }
        let reply = http
            .post(format!("{url}/prioritize"))
            .body(body.to_string())
            .send()
            .await;
        if let Ok(r) = reply {
            let v: Vec<Value> = r.json().await.unwrap();
            let scores: Vec<i64> = v.iter().map(|h| h["Score"].as_i64().unwrap()).collect();
            if scores != [5, 5, 5, 5] && scores != [3, 3, 3, 3] {
                break scores;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still neutral: {}",
            std::fs::read_to_string(log.path()).unwrap()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    // a: annotation 200 W, 150 W free → 8; b: the annotation (100 W) beats the exporter's 500 W,
    // 20 W free → 2; c: exporter budget 100 W, 60 W free → 6; d: unmeasured, cautious → 3
    assert_eq!(scores, [8, 2, 6, 3]);
    let metrics = http
        .get(format!("{url}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("edgewatt_scheduler_node_view_synced 1"),
        "{metrics}"
    );
    let _ = child.kill();
    let _ = child.wait();
    drop(prom);
}

/// TLS through cert-manager and the second scheduler: the Certificate for the Service name, the
/// Secret mounted and passed as --tls-cert-file/--tls-key-file, HTTPS probes, `enableHTTPS` and
/// `tlsConfig` in both scheduler configurations, and the second scheduler's image following the
/// cluster's version (the double reports v1.34.0-edgewatt-double).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_second_scheduler_render() {
    let api = cluster().await;
    let notes = helm_install(
        &api,
        json!({"scheduler": {"secondScheduler": {"enabled": true}, "extender": {"address": "nodePort"},
            "tls": {"enabled": true, "certManager": {"enabled": true, "issuerRef": {"kind": "ClusterIssuer", "name": "cluster-ca"}}}}}),
    )
    .await;
    let cert = object(&api, "certificates", "edgewatt-scheduler-tls");
    assert_eq!(cert["spec"]["secretName"], "edgewatt-scheduler-tls");
    assert_eq!(
        cert["spec"]["dnsNames"][0],
        format!("edgewatt-scheduler.{NS}.svc")
    );
    assert_eq!(cert["spec"]["issuerRef"]["name"], "cluster-ca");
    let deploy = object(&api, "deployments", "edgewatt-scheduler");
    let pod = &deploy["spec"]["template"]["spec"];
    let args = strs(&pod["containers"][0]["args"]);
    for a in [
        "--tls-cert-file=/etc/edgewatt/tls/tls.crt",
        "--tls-key-file=/etc/edgewatt/tls/tls.key",
    ] {
        assert!(args.contains(&a.to_string()), "{args:?}");
    }
    assert_eq!(
        pod["containers"][0]["readinessProbe"]["httpGet"]["scheme"],
        "HTTPS"
    );
    assert!(pod["volumes"]
        .to_string()
        .contains("edgewatt-scheduler-tls"));
    let cm = object(&api, "configmaps", "edgewatt-scheduler-config");
    let text = cm["data"]["extender.yaml"].as_str().unwrap();
    assert!(
        text.contains("urlPrefix: \"https://127.0.0.1:30888\""),
        "{text}"
    );
    assert!(text.contains("enableHTTPS: true"), "{text}");
    assert!(
        text.contains("caFile: /etc/kubernetes/edgewatt/ca.crt"),
        "{text}"
    );
    assert!(
        text.contains(&format!("serverName: edgewatt-scheduler.{NS}.svc")),
        "{text}"
    );
    assert!(
        text.contains("kubeconfig: /etc/kubernetes/scheduler.conf"),
        "{text}"
    );
    let second = cm["data"]["second-scheduler.yaml"].as_str().unwrap();
    assert!(
        second.contains(&format!(
            "urlPrefix: \"https://edgewatt-scheduler.{NS}.svc:8888\""
        )),
        "{second}"
    );
    assert!(
        second.contains("caFile: /etc/kubernetes/edgewatt-tls/ca.crt"),
        "{second}"
    );
    let ks = object(&api, "deployments", "edgewatt-second-scheduler");
    let c = &ks["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["image"], "registry.k8s.io/kube-scheduler:v1.34.0");
    assert!(
        notes.contains("kube-scheduler v1.34.0, the cluster's version")
            && notes.contains("copy ca.crt of Secret edgewatt-scheduler-tls"),
        "{notes}"
    );
}
