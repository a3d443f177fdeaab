//! `--metric-prefix kepler`: the metric contract of Kepler v0.11 (the rewritten exporter,
//! ≥ 0.10), names *and* labels, so Kepler's own dashboard and queries work unchanged.
//!
//! The contract, from sustainable-computing-io/kepler:
//! - `docs/user/metrics.md` (commit 1d73b32) and
//!   `internal/exporter/prometheus/collector/power_collector.go` (commit 028ae61): node
//!   `kepler_node_cpu_{,active_,idle_}{joules_total,watts}{zone,path}`,
//!   `kepler_node_cpu_usage_ratio`; pod `{pod_id,pod_name,pod_namespace,state,zone}`; container
//!   `{container_id,container_name,runtime,state,zone,pod_id}`; process
//!   `{pid,comm,exe,type,state,container_id,vm_id,zone}`; every one with the constant label
//!   `node_name`; `state` is `running` or `terminated`.
//! - `collector/cpuinfo.go`: `kepler_node_cpu_info{processor,vendor_id,model_name,physical_id,
//!   core_id}`, one series per logical CPU; `collector/build_info.go`:
//!   `kepler_build_info{arch,branch,revision,version,goversion}`.
//! - `collector/platform_collector.go` (commit 3626252): `kepler_platform_watts{source,node_name,
//!   bmc_id,chassis_id,power_control_id,power_control_name}`.
//!
//! Where edgewatt cannot know a label's value it is empty, as Kepler leaves it empty (`exe` of a
//! kernel thread, `vm_id` of a process that is no VM). Everything edgewatt has and Kepler has not
//! (batteries, budget, books, GPUs, the `kepler_node_platform_*` pair the controller and extender
//! read) keeps edgewatt's own names under the `kepler_` prefix.

use super::{
    node_cpu_families, node_gpu_families, node_platform_families, push_workload, Families, Labels,
};
use crate::cgroup::Runtime;
use crate::snapshot::{NodeSeries, Snapshot, WorkloadKind, WorkloadSeries};
use crate::source::Domain;

/// The prefix that selects this naming.
pub const PREFIX: &str = "kepler";

/// Kepler's help texts of the six node CPU families (`power_collector.go`).
const CPU_HELP: [&str; 6] = [
    "Energy consumption of cpu at node level in joules",
    "Power consumption of cpu at node level in watts",
    "Energy consumption of cpu in active state at node level in joules",
    "Energy consumption of cpu in idle state at node level in joules",
    "Power consumption of cpu in active state at node level in watts",
    "Power consumption of cpu in idle state at node level in watts",
];

/// Every family of the Kepler naming except the extensions the default naming shares (books,
/// supply, the exporter's own).
pub(super) fn families(f: &mut Families, s: &Snapshot, process_metrics: bool, version: &str) {
    for ns in &s.node {
        match &ns.domain {
            Domain::Cpu => node_cpu_families(f, ns, cpu_labels(s, ns), &CPU_HELP),
            Domain::Platform => {
                platform_watts(f, ns);
                node_platform_families(f, ns);
            }
            Domain::Gpu { index, uuid } => node_gpu_families(f, ns, *index, uuid),
        }
    }
    if let Some(ratio) = s.cpu_busy_ratio {
        f.push(
            "node_cpu_usage_ratio",
            "CPU usage ratio of a node (value between 0.0 and 1.0)",
            false,
            vec![],
            ratio,
        );
    }
    for w in &s.workloads {
        if w.kind == WorkloadKind::Process && !process_metrics {
            continue;
        }
        push_workload(f, w, process_metrics, workload_labels(w));
    }
    cpu_info(f, s);
    build_info(f, version);
}

/// `zone` and `path`: the RAPL zone's sysfs directory (or `aggregated-<zone>` over sockets);
/// empty for a zone no RAPL file measures (hwmon, the estimator).
fn cpu_labels(s: &Snapshot, ns: &NodeSeries) -> Labels {
    let path = match ns.source {
        "rapl" => s.host.rapl_paths.get(&ns.zone).cloned().unwrap_or_default(),
        _ => String::new(),
    };
    vec![("zone", ns.zone.clone()), ("path", path)]
}

/// `kepler_platform_watts`: the node's whole-platform meter. Kepler fills the BMC labels from its
/// Redfish configuration and the PowerControl entry; edgewatt reads one platform figure per node
/// (its chassis, or hwmon's ACPI power meter), so those are empty and `source` names the meter.
fn platform_watts(f: &mut Families, ns: &NodeSeries) {
    let l = vec![
        ("source", ns.source.to_string()),
        ("bmc_id", String::new()),
        ("chassis_id", String::new()),
        ("power_control_id", String::new()),
        ("power_control_name", String::new()),
    ];
    f.push(
        "platform_watts",
        "Current platform power consumption in watts from BMC PowerControl entries",
        false,
        l,
        ns.watts,
    );
}

fn label(w: &WorkloadSeries, key: &str) -> String {
    w.labels
        .iter()
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v.clone())
        .unwrap_or_default()
}

/// Kepler's label set of a workload series, in Kepler's order.
fn workload_labels(w: &WorkloadSeries) -> Labels {
    let state = if w.running { "running" } else { "terminated" }.to_string();
    let zone = w.zone.clone();
    let container_id = w
        .cgroup
        .as_ref()
        .and_then(|c| c.container_id.clone())
        .unwrap_or_default();
    match w.kind {
        WorkloadKind::Pod => vec![
            ("pod_id", label(w, "pod_id")),
            ("pod_name", label(w, "pod_name")),
            ("pod_namespace", label(w, "pod_namespace")),
            ("state", state),
            ("zone", zone),
        ],
        WorkloadKind::Container => vec![
            ("container_id", label(w, "container_id")),
            ("container_name", label(w, "container_name")),
            ("runtime", runtime(w).to_string()),
            ("state", state),
            ("zone", zone),
            ("pod_id", label(w, "pod_id")),
        ],
        WorkloadKind::Process => vec![
            ("pid", label(w, "pid")),
            ("comm", label(w, "comm")),
            ("exe", w.exe.as_deref().unwrap_or_default().to_string()),
            (
                "type",
                if container_id.is_empty() {
                    "regular"
                } else {
                    "container"
                }
                .to_string(),
            ),
            ("state", state),
            ("container_id", container_id),
            // edgewatt does not tell VMs apart from other processes (Kepler matches QEMU/KVM
            // command lines): no process is a VM here, so the id is empty as Kepler's is for
            // every process that is none.
            ("vm_id", String::new()),
            ("zone", zone),
        ],
    }
}

/// Kepler's runtime names (`internal/resource/types.go`): `crio` not `cri-o`, and a bare
/// container id under a kubepods cgroup (the cgroupfs driver) is `kubernetes`.
fn runtime(w: &WorkloadSeries) -> &'static str {
    let Some(c) = &w.cgroup else {
        return "unknown";
    };
    match c.runtime {
        Some(Runtime::Containerd) => "containerd",
        Some(Runtime::CriO) => "crio",
        Some(Runtime::Docker) => "docker",
        Some(Runtime::Podman) => "podman",
        Some(Runtime::Unknown) if c.pod_uid.is_some() => "kubernetes",
        Some(Runtime::Unknown) | None => "unknown",
    }
}

/// One series per logical CPU, value 1.
fn cpu_info(f: &mut Families, s: &Snapshot) {
    for c in &s.host.cpus {
        f.push(
            "node_cpu_info",
            "CPU information from procfs",
            false,
            vec![
                ("processor", c.processor.clone()),
                ("vendor_id", c.vendor_id.clone()),
                ("model_name", c.model_name.clone()),
                ("physical_id", c.physical_id.clone()),
                ("core_id", c.core_id.clone()),
            ],
            1.0,
        );
    }
}

/// Go's name of the architecture this binary was built for (`GOARCH`), as Kepler reports it.
fn goarch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "x86" => "386",
        "aarch64" => "arm64",
        "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
        "powerpc64" => "ppc64",
        "loongarch64" => "loong64",
        other => other,
    }
}

/// `kepler_build_info`: `revision` is the git commit when the build set `EDGEWATT_REVISION`
/// (the image build does), else empty; `branch` and `goversion` (this is no Go binary) are empty.
fn build_info(f: &mut Families, version: &str) {
    f.push(
        "build_info",
        "A metric with a constant '1' value labeled with version information",
        false,
        vec![
            ("arch", goarch().to_string()),
            ("branch", String::new()),
            (
                "revision",
                option_env!("EDGEWATT_REVISION")
                    .unwrap_or_default()
                    .to_string(),
            ),
            ("version", version.to_string()),
            ("goversion", String::new()),
        ],
        1.0,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_architecture_names() {
        let arch = goarch();
        assert!(!arch.is_empty());
        assert_ne!(arch, "x86_64");
        assert_ne!(arch, "aarch64");
    }

    fn node(source: &'static str, domain: Domain, zone: &str, watts: f64) -> NodeSeries {
        NodeSeries {
            source,
            domain,
            zone: zone.into(),
            joules_total: 10.0,
            watts,
            active_joules_total: 4.0,
            idle_joules_total: 6.0,
            active_watts: 1.0,
            idle_watts: 2.0,
        }
    }

    fn render(s: Snapshot) -> String {
        let reg = super::super::registry(
            super::super::MetricsConfig {
                names: edgewatt_crds::metrics::MetricNames::new(PREFIX),
                process_metrics: false,
                version: "9.9.9",
            },
            std::sync::Arc::new(std::sync::RwLock::new(std::sync::Arc::new(s))),
        );
        super::super::to_text_format(&super::super::render(&reg))
    }

    /// Platform power as Kepler's `kepler_platform_watts` (BMC labels empty: edgewatt reads one
    /// figure per node) and, for the controller, edgewatt's pair; a zone summed over sockets has
    /// Kepler's `aggregated-<zone>` path, a zone no RAPL file measures an empty one; a gone pod
    /// is `terminated` and has no watts.
    #[test]
    fn platform_paths_and_terminated_workloads() {
        let mut host = crate::hostinfo::HostFacts::default();
        host.rapl_paths
            .insert("package".into(), "aggregated-package".into());
        let pod = |running: bool, uid: &str| WorkloadSeries {
            kind: WorkloadKind::Pod,
            labels: std::sync::Arc::new(vec![
                ("pod_id", uid.to_string()),
                ("pod_name", format!("p-{uid}")),
                ("pod_namespace", "ns".into()),
            ]),
            zone: "package".into(),
            source: "rapl",
            joules_total: 3.0,
            watts: running.then_some(0.5),
            running,
            cgroup: None,
            exe: None,
        };
        let text = render(Snapshot {
            node_name: "n1".into(),
            node: vec![
                node("rapl", Domain::Cpu, "package", 40.0),
                node("hwmon", Domain::Cpu, "dram", 5.0),
                node("redfish", Domain::Platform, "platform", 120.0),
            ],
            cpu_busy_ratio: Some(0.25),
            workloads: vec![pod(true, "a"), pod(false, "b")],
            host: std::sync::Arc::new(host),
            ..Snapshot::default()
        });
        for needle in [
            "kepler_platform_watts{node_name=\"n1\",source=\"redfish\",bmc_id=\"\",chassis_id=\"\",power_control_id=\"\",power_control_name=\"\"} 120",
            "kepler_node_platform_watts{node_name=\"n1\",source=\"redfish\"} 120",
            "kepler_node_cpu_watts{node_name=\"n1\",zone=\"package\",path=\"aggregated-package\"} 40",
            "kepler_node_cpu_watts{node_name=\"n1\",zone=\"dram\",path=\"\"} 5",
            "kepler_node_cpu_usage_ratio{node_name=\"n1\"} 0.25",
            "kepler_pod_cpu_watts{node_name=\"n1\",pod_id=\"a\",pod_name=\"p-a\",pod_namespace=\"ns\",state=\"running\",zone=\"package\"} 0.5",
            "kepler_pod_cpu_joules_total{node_name=\"n1\",pod_id=\"b\",pod_name=\"p-b\",pod_namespace=\"ns\",state=\"terminated\",zone=\"package\"} 3",
            "kepler_build_info{node_name=\"n1\",arch=",
        ] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }
        assert!(
            !text
                .lines()
                .any(|l| l.starts_with("kepler_pod_cpu_watts{") && l.contains("pod_id=\"b\"")),
            "a terminated pod has no watts:\n{text}"
        );
        assert!(
            !text.contains("source=\"rapl\""),
            "no edgewatt source label on Kepler's series:\n{text}"
        );
    }

    #[test]
    fn runtimes_use_keplers_names() {
        let w = |rt: Runtime, pod: Option<&str>| WorkloadSeries {
            kind: WorkloadKind::Container,
            labels: Default::default(),
            zone: "package".into(),
            source: "rapl",
            joules_total: 0.0,
            watts: None,
            running: true,
            cgroup: Some(std::sync::Arc::new(crate::cgroup::Workload {
                container_id: Some("a".repeat(64)),
                runtime: Some(rt),
                pod_uid: pod.map(str::to_string),
            })),
            exe: None,
        };
        assert_eq!(runtime(&w(Runtime::CriO, Some("u"))), "crio");
        assert_eq!(runtime(&w(Runtime::Unknown, Some("u"))), "kubernetes");
        assert_eq!(runtime(&w(Runtime::Unknown, None)), "unknown");
        assert_eq!(runtime(&w(Runtime::Containerd, None)), "containerd");
    }
}
