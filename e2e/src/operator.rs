//! The Prometheus operator's part, played for the test Prometheus: which PodMonitors,
//! ServiceMonitors and PrometheusRules a `Prometheus` selects (by label — kube-prometheus-stack's
//! selects `release: <its release>`), the targets each monitor yields from the running pods, and
//! the labels the operator gives them.
//!
//! The objects come from the API server double or, against a real cluster (`E2E_KUBECONFIG`),
//! from that cluster through the client ([`Objects`]); the pods are local processes or the
//! cluster's own pods ([`Endpoints`]).
//!
//! Source: prometheus-operator `pkg/prometheus/promcfg.go`: a PodMonitor's `job` is
//! `<namespace>/<name>`, a ServiceMonitor's the Service's name; `jobLabel` replaces it with the
//! pod's (Service's) label value when set; then the endpoint's `relabelings` run. Targets get
//! `namespace`, `pod`, `container`, `endpoint` (and `service`) labels.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::apiserver::ApiServer;
use crate::pods::LocalPod;
use crate::prometheus::ScrapeTarget;

/// Where the monitors, rules and Services are read from, by plural resource name
/// (`podmonitors`, `servicemonitors`, `prometheusrules`, `services`).
pub trait Objects {
    fn objects(&self, resource: &str) -> Vec<Value>;
}

impl Objects for ApiServer {
    fn objects(&self, resource: &str) -> Vec<Value> {
        self.list(resource)
    }
}

impl<T: Objects + ?Sized> Objects for &T {
    fn objects(&self, resource: &str) -> Vec<Value> {
        (**self).objects(resource)
    }
}

/// Objects listed beforehand (e.g. through a client from a real cluster), by resource.
impl Objects for BTreeMap<String, Vec<Value>> {
    fn objects(&self, resource: &str) -> Vec<Value> {
        self.get(resource).cloned().unwrap_or_default()
    }
}

/// A running pod as a scrape target: its identity, labels, and the address of a container port.
pub trait Endpoints {
    fn namespace(&self) -> &str;
    fn name(&self) -> &str;
    fn labels(&self) -> &BTreeMap<String, String>;
    /// `host:port` of a container port, by name (`metrics`) or number (`8080`).
    fn addr(&self, port: &str) -> Option<String>;
}

impl Endpoints for LocalPod {
    fn namespace(&self) -> &str {
        &self.namespace
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn labels(&self) -> &BTreeMap<String, String> {
        &self.labels
    }
    fn addr(&self, port: &str) -> Option<String> {
        LocalPod::addr(self, port)
    }
}

/// A pod a real kubelet runs, as the API server reports it: the pod IP and its containers'
/// ports (what the operator's `__meta_kubernetes_pod_*` discovery sees).
#[derive(Debug, Clone)]
pub struct ClusterPod {
    pub name: String,
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    pub ip: String,
    /// Container port name (or number as text) → port.
    pub ports: BTreeMap<String, u16>,
}

impl ClusterPod {
    /// From a Pod object; `None` until it has an IP.
    pub fn from_object(pod: &Value) -> Option<Self> {
        let meta = &pod["metadata"];
        let ip = pod["status"]["podIP"].as_str().filter(|s| !s.is_empty())?;
        let mut ports = BTreeMap::new();
        for c in pod["spec"]["containers"].as_array().into_iter().flatten() {
            for p in c["ports"].as_array().into_iter().flatten() {
                let Some(n) = p["containerPort"]
                    .as_u64()
                    .and_then(|n| u16::try_from(n).ok())
                else {
                    continue;
                };
                ports.insert(n.to_string(), n);
                if let Some(name) = p["name"].as_str() {
                    ports.insert(name.to_string(), n);
                }
            }
        }
        Some(Self {
            name: meta["name"].as_str()?.to_string(),
            namespace: meta["namespace"].as_str().unwrap_or_default().to_string(),
            labels: meta["labels"]
                .as_object()
                .into_iter()
                .flatten()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect(),
            ip: ip.to_string(),
            ports,
        })
    }
}

impl Endpoints for ClusterPod {
    fn namespace(&self) -> &str {
        &self.namespace
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn labels(&self) -> &BTreeMap<String, String> {
        &self.labels
    }
    fn addr(&self, port: &str) -> Option<String> {
        let p = self.ports.get(port)?;
        Some(if self.ip.contains(':') {
            format!("[{}]:{p}", self.ip)
        } else {
            format!("{}:{p}", self.ip)
        })
    }
}

/// Which monitors and rules a Prometheus selects.
#[derive(Debug, Clone)]
pub enum Selector {
    /// `{}`: every one (a Prometheus installed with open selectors).
    All,
    /// `matchLabels`, e.g. kube-prometheus-stack's `release: <release>`.
    Labels(BTreeMap<String, String>),
}

impl Selector {
    /// kube-prometheus-stack installed as release `release` with its default selectors.
    pub fn kube_prometheus_stack(release: &str) -> Self {
        Self::Labels(BTreeMap::from([(
            "release".to_string(),
            release.to_string(),
        )]))
    }

    fn selects(&self, obj: &Value) -> bool {
        match self {
            Self::All => true,
            Self::Labels(want) => want
                .iter()
                .all(|(k, v)| obj["metadata"]["labels"][k].as_str() == Some(v)),
        }
    }
}

fn match_labels(selector: &Value, labels: &BTreeMap<String, String>) -> bool {
    selector["matchLabels"]
        .as_object()
        .into_iter()
        .flatten()
        .all(|(k, v)| labels.get(k).map(String::as_str) == v.as_str())
}

fn in_namespaces(monitor: &Value, ns: &str) -> bool {
    let sel = &monitor["spec"]["namespaceSelector"];
    if sel["any"] == true {
        return true;
    }
    match sel["matchNames"].as_array() {
        Some(names) => names.iter().any(|n| n == ns),
        None => monitor["metadata"]["namespace"] == ns,
    }
}

/// Applies the `replace` relabelings that write `job` (the only kind the chart uses): literal
/// replacement, or `${1}` of one source label.
fn relabel_job(job: String, relabelings: &Value, labels: &BTreeMap<String, String>) -> String {
    relabelings
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| {
            r["targetLabel"] == "job"
                && r["action"]
                    .as_str()
                    .unwrap_or("replace")
                    .eq_ignore_ascii_case("replace")
        })
        .fold(job, |job, r| {
            let source: Vec<&str> = r["sourceLabels"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(|l| {
                    labels
                        .get(l.trim_start_matches("__meta_kubernetes_pod_label_"))
                        .map(String::as_str)
                        .unwrap_or_default()
                })
                .collect();
            let joined = source.join(";");
            match r["replacement"].as_str() {
                Some(rep) => rep.replace("${1}", &joined).replace("$1", &joined),
                None if !joined.is_empty() => joined,
                None => job,
            }
        })
}

/// The `job` a PodMonitor endpoint gives a pod with `labels`.
pub fn pod_monitor_job(
    monitor: &Value,
    endpoint: &Value,
    labels: &BTreeMap<String, String>,
) -> String {
    let meta = &monitor["metadata"];
    let mut job = format!(
        "{}/{}",
        meta["namespace"].as_str().unwrap_or_default(),
        meta["name"].as_str().unwrap_or_default()
    );
    if let Some(l) = monitor["spec"]["jobLabel"].as_str() {
        if let Some(v) = labels.get(l).filter(|v| !v.is_empty()) {
            job = v.clone();
        }
    }
    relabel_job(job, &endpoint["relabelings"], labels)
}

/// The `job` a ServiceMonitor endpoint gives the endpoints of `service`.
pub fn service_monitor_job(monitor: &Value, endpoint: &Value, service: &Value) -> String {
    let svc_labels: BTreeMap<String, String> = service["metadata"]["labels"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
        .collect();
    let mut job = service["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    if let Some(l) = monitor["spec"]["jobLabel"].as_str() {
        if let Some(v) = svc_labels.get(l).filter(|v| !v.is_empty()) {
            job = v.clone();
        }
    }
    relabel_job(job, &endpoint["relabelings"], &svc_labels)
}

fn target<P: Endpoints + ?Sized>(
    job: String,
    addr: String,
    pod: &P,
    endpoint: &str,
) -> ScrapeTarget {
    let mut t = ScrapeTarget::new(&job, &addr);
    t.labels = vec![
        ("namespace".into(), pod.namespace().to_string()),
        ("pod".into(), pod.name().to_string()),
        ("endpoint".into(), endpoint.into()),
    ];
    t
}

/// The scrape targets the selected monitors yield from `pods`.
pub fn targets<P: Endpoints + ?Sized>(
    server: &dyn Objects,
    selector: &Selector,
    pods: &[&P],
) -> Vec<ScrapeTarget> {
    let mut out = Vec::new();
    for m in server
        .objects("podmonitors")
        .iter()
        .filter(|m| selector.selects(m))
    {
        for pod in pods.iter().filter(|p| {
            in_namespaces(m, p.namespace()) && match_labels(&m["spec"]["selector"], p.labels())
        }) {
            for ep in m["spec"]["podMetricsEndpoints"]
                .as_array()
                .into_iter()
                .flatten()
            {
                let port = ep["port"].as_str().unwrap_or_default();
                if let Some(addr) = pod.addr(port) {
                    out.push(target(
                        pod_monitor_job(m, ep, pod.labels()),
                        addr,
                        *pod,
                        port,
                    ));
                }
            }
        }
    }
    let services = server.objects("services");
    for m in server
        .objects("servicemonitors")
        .iter()
        .filter(|m| selector.selects(m))
    {
        for svc in services.iter().filter(|s| {
            let ns = s["metadata"]["namespace"].as_str().unwrap_or_default();
            let labels = s["metadata"]["labels"].as_object().map(|o| {
                o.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                    .collect::<BTreeMap<_, _>>()
            });
            in_namespaces(m, ns)
                && match_labels(&m["spec"]["selector"], &labels.unwrap_or_default())
        }) {
            for ep in m["spec"]["endpoints"].as_array().into_iter().flatten() {
                let port = ep["port"].as_str().unwrap_or_default();
                for (pod, addr) in service_endpoints(svc, port, pods) {
                    let mut t = target(service_monitor_job(m, ep, svc), addr, pod, port);
                    t.labels.push((
                        "service".into(),
                        svc["metadata"]["name"].as_str().unwrap_or_default().into(),
                    ));
                    out.push(t);
                }
            }
        }
    }
    out
}

/// The endpoints of a Service's named port among `pods`: pods its selector matches, at the
/// container port its `targetPort` names (kube-proxy's and the endpoints controller's part).
pub fn service_endpoints<'p, P: Endpoints + ?Sized>(
    service: &Value,
    port_name: &str,
    pods: &[&'p P],
) -> Vec<(&'p P, String)> {
    let Some(port) = service["spec"]["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| {
            p["name"] == port_name
                || p["port"].as_u64().map(|n| n.to_string()).as_deref() == Some(port_name)
        })
    else {
        return Vec::new();
    };
    let target = match &port["targetPort"] {
        Value::Null => port["port"].to_string(),
        Value::Number(n) => n.to_string(),
        v => v.as_str().unwrap_or_default().to_string(),
    };
    let ns = service["metadata"]["namespace"]
        .as_str()
        .unwrap_or_default();
    let selector = service["spec"]["selector"].as_object();
    pods.iter()
        .filter(|p| p.namespace() == ns)
        .filter(|p| {
            selector.is_some_and(|s| {
                s.iter()
                    .all(|(k, v)| p.labels().get(k).map(String::as_str) == v.as_str())
            })
        })
        .filter_map(|p| Some((*p, p.addr(&target)?)))
        .collect()
}

/// The rule groups of the selected PrometheusRules, one rules-file document each.
pub fn rule_files(server: &dyn Objects, selector: &Selector) -> Vec<Value> {
    server
        .objects("prometheusrules")
        .into_iter()
        .filter(|r| selector.selects(r))
        .map(|r| serde_json::json!({"groups": r["spec"]["groups"]}))
        .collect()
}
