//! The fleet file of `edgewatt-controller simulate`: sites with their weather, nodes and Flotta
//! devices with batteries and panels, workloads, EnergyPolicies and the physics settings.
//!
//! Read in two passes over the same text: a located tree ([`super::yaml`]) and the typed file
//! (serde-saphyr, which reports its own errors with a position). Everything checked after
//! parsing — each policy admitted as the API server would (the CRD schema with defaults, then
//! CEL, `edgewatt_crds::validation`), a fleet that cannot work — is reported at the line of the
//! field at fault: `file:line:column: field: why`. Never a panic.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use edgewatt_crds::{Criticality, EnergyPolicy, WorkloadKind};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde::Deserialize;

use super::pv::{PanelConfig, SiteSolar};
use super::weather::Weather;
use super::yaml::{self, parse_path, path_string, Node, Seg};
use crate::planner::{Selector, TargetId};

/// Why a fleet file cannot be simulated. `Invalid` names the file, the 1-based line and column,
/// and the field (`workloads[2].drawWatts`).
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("{path}: cannot read: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}:{line}:{column}: {field}: {message}")]
    Invalid {
        file: String,
        line: u64,
        column: u64,
        field: String,
        message: String,
    },
}

/// Physics of the simulated world (`physics:` in the fleet file; every field optional).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Physics {
    /// Share of the solar surplus that ends up stored (0 < x ≤ 1).
    pub charge_efficiency: f64,
    /// Share of the energy taken from the battery that reaches the load (0 < x ≤ 1).
    pub discharge_efficiency: f64,
    /// At or below this state of charge (percent) the battery disconnects: the target goes dark.
    pub cutoff_percent: f64,
    /// A dark target boots again once charged above this (percent; above `cutoffPercent`).
    pub restart_percent: f64,
    /// How long an EdgeWorkload instance takes to reach Running on a device it is placed on (a
    /// make-before-break copy, a re-pointed original): a make-before-break move takes about
    /// twice this, a Recreate move once. Rounded up to whole minutes (the physics step).
    pub migration_seconds: u32,
    /// How long a pod (a replacement after an eviction, or a container after its node or
    /// device booted) takes before it serves. Rounded up to whole minutes.
    pub pod_restart_seconds: u32,
    /// How often each policy's planner runs (the controller's `--interval`); a duration string.
    /// Moves in flight are driven every step regardless.
    pub decision_interval: String,
    /// Kubernetes' node lifecycle: pods on a node that has been NotReady (dark) this long are
    /// evicted and rescheduled (the default `tolerationSeconds` of the unreachable taint is
    /// 300). `null`: never.
    pub not_ready_eviction_seconds: Option<u32>,
}

impl Default for Physics {
    fn default() -> Self {
        Physics {
            charge_efficiency: 0.95,
            discharge_efficiency: 0.95,
            cutoff_percent: 5.0,
            restart_percent: 20.0,
            migration_seconds: 60,
            pod_restart_seconds: 30,
            decision_interval: "1m".into(),
            not_ready_eviction_seconds: Some(300),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FileSite {
    name: String,
    weather: String,
    #[serde(default)]
    tilt_deg: Option<f64>,
    #[serde(default)]
    azimuth_deg: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FileTarget {
    name: String,
    #[serde(default)]
    site: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
    battery_wh: f64,
    solar_wp: f64,
    base_watts: f64,
    #[serde(default)]
    max_watts: Option<f64>,
    #[serde(default)]
    count: Option<u32>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    initial_charge_percent: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FileWorkload {
    name: String,
    kind: WorkloadKind,
    #[serde(default)]
    namespace: Option<String>,
    draw_watts: f64,
    #[serde(default)]
    criticality: Option<Criticality>,
    #[serde(default)]
    replicas: Option<u32>,
    #[serde(default)]
    count: Option<u32>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    pinned: bool,
    #[serde(default)]
    cpu_limit: Option<bool>,
    #[serde(default)]
    node_selector: Option<BTreeMap<String, String>>,
    #[serde(default)]
    device: Option<String>,
    #[serde(default)]
    device_selector: Option<LabelSelector>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FileFleet {
    sites: Vec<FileSite>,
    #[serde(default)]
    nodes: Vec<FileTarget>,
    #[serde(default)]
    edge_devices: Vec<FileTarget>,
    #[serde(default)]
    workloads: Vec<FileWorkload>,
    /// Checked from the located tree (the CRD validator reads JSON).
    #[serde(default, rename = "policies")]
    _policies: Vec<serde::de::IgnoredAny>,
    #[serde(default)]
    physics: Physics,
}

/// One site: its panel output per Wp for the whole year.
#[derive(Debug, Clone)]
pub struct SiteDef {
    pub name: String,
    pub solar: SiteSolar,
}

/// One node or device after `count` is stamped out.
#[derive(Debug, Clone)]
pub struct TargetDef {
    pub id: TargetId,
    pub site: usize,
    pub battery_wh: f64,
    pub solar_wp: f64,
    pub base_watts: f64,
    /// The most it can draw in all (base included); `None`: no limit.
    pub max_watts: Option<f64>,
    pub labels: BTreeMap<String, String>,
    pub initial_charge_percent: f64,
}

/// Where a workload may run.
#[derive(Debug, Clone)]
pub enum PlacementDef {
    /// A Deployment's pods: any node matching the `nodeSelector` (the simulated scheduler picks).
    Pod {
        node_selector: BTreeMap<String, String>,
    },
    /// EdgeWorkloads with `spec.device` set: the named device, or (with only a `deviceSelector`)
    /// the matching device with the most headroom at the start. The selector stays on the
    /// object, so the controller moves it only to matching devices.
    Edge {
        device: Option<usize>,
        selector: Option<Selector>,
    },
}

/// One workload after `count` is stamped out: a Deployment (`replicas` pods) or `replicas`
/// EdgeWorkloads.
#[derive(Debug, Clone)]
pub struct WorkloadDef {
    pub name: String,
    pub namespace: String,
    pub kind: WorkloadKind,
    pub draw_watts: f64,
    pub criticality: Criticality,
    pub replicas: u32,
    pub labels: BTreeMap<String, String>,
    pub pinned: bool,
    /// Pods: a container has a CPU limit, so the ladder can throttle it in place (`cpuLimit`,
    /// default true; a BestEffort pod has none). EdgeWorkloads: never (no in-place resize).
    pub cpu_limit: bool,
    pub placement: PlacementDef,
}

/// A checked fleet, ready to simulate.
#[derive(Debug, Clone)]
pub struct Fleet {
    pub file: String,
    pub sites: Vec<SiteDef>,
    /// Nodes first, then devices.
    pub targets: Vec<TargetDef>,
    pub workloads: Vec<WorkloadDef>,
    pub policies: Vec<EnergyPolicy>,
    pub physics: Physics,
    pub decision_interval: Duration,
}

/// Reports errors at positions of one file.
struct At<'a> {
    file: &'a str,
    tree: &'a Node,
}

impl At<'_> {
    fn err(&self, field: &str, message: impl std::fmt::Display) -> FleetError {
        let (line, column) = self.tree.locate(&parse_path(field));
        FleetError::Invalid {
            file: self.file.to_string(),
            line,
            column,
            field: field.to_string(),
            message: message.to_string(),
        }
    }
}

/// The first line of a serde-saphyr message, without its own position (we print ours).
fn bare_message(e: &serde_saphyr::Error) -> String {
    let text = e.to_string();
    let mut first = text.lines().next().unwrap_or_default().trim();
    first = first.strip_prefix("error: ").unwrap_or(first);
    // "line 3 column 5: …" heads and "… at line 3, column 5" tails repeat our position.
    if first.starts_with("line ") {
        if let Some((_, rest)) = first.split_once(": ") {
            first = rest;
        }
    }
    match first.find(" at line ") {
        Some(i) => first[..i].to_string(),
        None => first.to_string(),
    }
}

impl Fleet {
    /// Reads and checks a fleet file; weather paths are relative to it.
    pub fn load(path: impl AsRef<Path>) -> Result<Fleet, FleetError> {
        let path = path.as_ref();
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| FleetError::Io {
            path: file.clone(),
            source,
        })?;
        Fleet::parse(&text, &file, path.parent().unwrap_or(Path::new(".")))
    }

    /// Parses fleet text; `file` names it in errors, `dir` resolves weather paths.
    pub fn parse(text: &str, file: &str, dir: &Path) -> Result<Fleet, FleetError> {
        let tree = yaml::parse(text).map_err(|e| {
            let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
            FleetError::Invalid {
                file: file.to_string(),
                line,
                column,
                field: "<document>".into(),
                message: bare_message(&e),
            }
        })?;
        let raw: FileFleet = serde_saphyr::from_str(text).map_err(|e| {
            let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
            let field = tree
                .path_at(line, column)
                .map(|p| path_string(&p))
                .filter(|p| !p.is_empty())
                .unwrap_or_else(|| "<document>".into());
            FleetError::Invalid {
                file: file.to_string(),
                line,
                column,
                field,
                message: bare_message(&e),
            }
        })?;
        let at = At { file, tree: &tree };
        let physics = check_physics(&at, &raw.physics)?;
        let decision_interval = edgewatt_crds::duration::parse(&physics.decision_interval)
            .ok()
            .filter(|d| d.as_secs() >= 60 && d.as_secs() % 60 == 0)
            .ok_or_else(|| {
                at.err(
                    "physics.decisionInterval",
                    format!(
                        "{:?} is not a whole number of minutes of at least 1m (the physics step)",
                        physics.decision_interval
                    ),
                )
            })?;
        let sites = load_sites(&at, &raw.sites, dir)?;
        let targets = stamp_targets(&at, &raw, &sites)?;
        let policies = admit_policies(&at, &tree)?;
        let workloads = stamp_workloads(&at, &raw.workloads, &targets)?;
        Ok(Fleet {
            file: file.to_string(),
            sites,
            targets,
            workloads,
            policies,
            physics,
            decision_interval,
        })
    }
}

fn check_physics(at: &At, p: &Physics) -> Result<Physics, FleetError> {
    let unit = |field: &str, v: f64| {
        if v > 0.0 && v <= 1.0 {
            Ok(())
        } else {
            Err(at.err(field, format!("{v} is not in (0, 1]")))
        }
    };
    unit("physics.chargeEfficiency", p.charge_efficiency)?;
    unit("physics.dischargeEfficiency", p.discharge_efficiency)?;
    if !(0.0..100.0).contains(&p.cutoff_percent) {
        return Err(at.err(
            "physics.cutoffPercent",
            format!("{} is not in [0, 100)", p.cutoff_percent),
        ));
    }
    if !(p.restart_percent > p.cutoff_percent && p.restart_percent <= 100.0) {
        return Err(at.err(
            "physics.restartPercent",
            format!(
                "{} must be above cutoffPercent ({}) and at most 100: a target that boots at the \
                 level it died at would flap every minute",
                p.restart_percent, p.cutoff_percent
            ),
        ));
    }
    Ok(p.clone())
}

fn load_sites(at: &At, sites: &[FileSite], dir: &Path) -> Result<Vec<SiteDef>, FleetError> {
    if sites.is_empty() {
        return Err(at.err("sites", "at least one site is needed"));
    }
    let mut out: Vec<SiteDef> = Vec::new();
    for (i, s) in sites.iter().enumerate() {
        if out.iter().any(|o| o.name == s.name) {
            return Err(at.err(
                &format!("sites[{i}].name"),
                format!("{:?} is defined twice", s.name),
            ));
        }
        let path = dir.join(&s.weather);
        let weather =
            Weather::from_path(&path).map_err(|e| at.err(&format!("sites[{i}].weather"), e))?;
        let cfg = PanelConfig {
            tilt_deg: s.tilt_deg,
            azimuth_deg: s.azimuth_deg,
            ..PanelConfig::default()
        };
        let solar = SiteSolar::from_weather(&weather, &cfg).map_err(|e| {
            let field = match e.field {
                "tilt_deg" => "tiltDeg",
                "azimuth_deg" => "azimuthDeg",
                other => other,
            };
            at.err(&format!("sites[{i}].{field}"), e.reason)
        })?;
        out.push(SiteDef {
            name: s.name.clone(),
            solar,
        });
    }
    Ok(out)
}

fn stamp_targets(
    at: &At,
    raw: &FileFleet,
    sites: &[SiteDef],
) -> Result<Vec<TargetDef>, FleetError> {
    let mut out: Vec<TargetDef> = Vec::new();
    for (list, key, kind) in [
        (&raw.nodes, "nodes", edgewatt_crds::TargetKind::Node),
        (
            &raw.edge_devices,
            "edgeDevices",
            edgewatt_crds::TargetKind::EdgeDevice,
        ),
    ] {
        for (i, t) in list.iter().enumerate() {
            let f = |name: &str| format!("{key}[{i}].{name}");
            let site = match &t.site {
                None if sites.len() == 1 => 0,
                None => {
                    return Err(at.err(
                        &format!("{key}[{i}]"),
                        "site missing: the fleet has several sites",
                    ))
                }
                Some(s) => sites
                    .iter()
                    .position(|x| &x.name == s)
                    .ok_or_else(|| at.err(&f("site"), format!("{s:?} is not one of the sites")))?,
            };
            let nonneg = |name: &str, v: f64| {
                if v.is_finite() && v >= 0.0 {
                    Ok(())
                } else {
                    Err(at.err(&f(name), format!("{v} must be a finite number ≥ 0")))
                }
            };
            if !(t.battery_wh.is_finite() && t.battery_wh > 0.0) {
                return Err(at.err(&f("batteryWh"), format!("{} must be > 0", t.battery_wh)));
            }
            nonneg("solarWp", t.solar_wp)?;
            nonneg("baseWatts", t.base_watts)?;
            if let Some(m) = t.max_watts {
                if !(m.is_finite() && m >= t.base_watts) {
                    return Err(at.err(
                        &f("maxWatts"),
                        format!("{m} is below baseWatts ({})", t.base_watts),
                    ));
                }
            }
            let initial = t.initial_charge_percent.unwrap_or(100.0);
            if !(0.0..=100.0).contains(&initial) {
                return Err(at.err(
                    &f("initialChargePercent"),
                    format!("{initial} is not in [0, 100]"),
                ));
            }
            if t.count == Some(0) {
                return Err(at.err(&f("count"), "must be at least 1"));
            }
            if kind == edgewatt_crds::TargetKind::Node && t.namespace.is_some() {
                return Err(at.err(&f("namespace"), "nodes have no namespace"));
            }
            let names: Vec<String> = match t.count {
                None => vec![t.name.clone()],
                Some(n) => (0..n).map(|k| format!("{}-{k}", t.name)).collect(),
            };
            for name in names {
                let id = match kind {
                    edgewatt_crds::TargetKind::Node => TargetId::node(&name),
                    edgewatt_crds::TargetKind::EdgeDevice => TargetId::device(
                        t.namespace.clone().unwrap_or_else(|| "default".into()),
                        &name,
                    ),
                };
                if out.iter().any(|o| o.id == id) {
                    return Err(at.err(&f("name"), format!("{name:?} is defined twice")));
                }
                out.push(TargetDef {
                    id,
                    site,
                    battery_wh: t.battery_wh,
                    solar_wp: t.solar_wp,
                    base_watts: t.base_watts,
                    max_watts: t.max_watts,
                    labels: t.labels.clone(),
                    initial_charge_percent: initial,
                });
            }
        }
    }
    if out.is_empty() {
        return Err(at.err("nodes", "the fleet has no nodes and no edgeDevices"));
    }
    Ok(out)
}

/// What a target can carry on top of its base draw (infinite without `maxWatts`).
pub fn carry_watts(t: &TargetDef) -> f64 {
    t.max_watts.map_or(f64::INFINITY, |m| m - t.base_watts)
}

fn stamp_workloads(
    at: &At,
    list: &[FileWorkload],
    targets: &[TargetDef],
) -> Result<Vec<WorkloadDef>, FleetError> {
    let mut out: Vec<WorkloadDef> = Vec::new();
    for (i, w) in list.iter().enumerate() {
        let f = |name: &str| format!("workloads[{i}].{name}");
        if !(w.draw_watts.is_finite() && w.draw_watts >= 0.0) {
            return Err(at.err(
                &f("drawWatts"),
                format!("{} must be a finite number ≥ 0", w.draw_watts),
            ));
        }
        if w.count == Some(0) {
            return Err(at.err(&f("count"), "must be at least 1"));
        }
        if w.replicas == Some(0) {
            return Err(at.err(&f("replicas"), "must be at least 1"));
        }
        let namespace = w.namespace.clone().unwrap_or_else(|| "default".into());
        let (placement, candidates, place_field): (PlacementDef, Vec<usize>, String) = match w.kind
        {
            WorkloadKind::Pod => {
                if w.device.is_some() || w.device_selector.is_some() {
                    return Err(at.err(
                        &f(if w.device.is_some() {
                            "device"
                        } else {
                            "deviceSelector"
                        }),
                        "pods are placed by nodeSelector (device and deviceSelector are for EdgeWorkloads)",
                    ));
                }
                let sel = w.node_selector.clone().unwrap_or_default();
                let c = targets
                    .iter()
                    .enumerate()
                    .filter(|(_, t)| t.id.kind == edgewatt_crds::TargetKind::Node)
                    .filter(|(_, t)| sel.iter().all(|(k, v)| t.labels.get(k) == Some(v)))
                    .map(|(k, _)| k)
                    .collect();
                let field = if w.node_selector.is_some() {
                    f("nodeSelector")
                } else {
                    f("kind")
                };
                (PlacementDef::Pod { node_selector: sel }, c, field)
            }
            WorkloadKind::EdgeWorkload => {
                if w.node_selector.is_some() {
                    return Err(at.err(
                        &f("nodeSelector"),
                        "EdgeWorkloads are placed by device or deviceSelector",
                    ));
                }
                if w.cpu_limit == Some(true) {
                    return Err(at.err(
                        &f("cpuLimit"),
                        "an EdgeWorkload cannot be throttled in place (Flotta restarts it): only pods have cpuLimit",
                    ));
                }
                let selector = w.device_selector.as_ref().map(crate::snapshot::selector);
                let in_ns = |t: &TargetDef| {
                    t.id.kind == edgewatt_crds::TargetKind::EdgeDevice
                        && t.id.namespace.as_deref() == Some(namespace.as_str())
                };
                match &w.device {
                    Some(d) => {
                        let k = targets
                            .iter()
                            .position(|t| in_ns(t) && &t.id.name == d)
                            .ok_or_else(|| {
                                at.err(
                                    &f("device"),
                                    format!("no edgeDevice {d:?} in namespace {namespace:?}"),
                                )
                            })?;
                        if selector
                            .as_ref()
                            .is_some_and(|s| !s.matches(&targets[k].labels))
                        {
                            return Err(at.err(
                                &f("deviceSelector"),
                                format!("device {d:?} does not match it"),
                            ));
                        }
                        (
                            PlacementDef::Edge {
                                device: Some(k),
                                selector,
                            },
                            vec![k],
                            f("device"),
                        )
                    }
                    None => {
                        let c = targets
                            .iter()
                            .enumerate()
                            .filter(|(_, t)| in_ns(t))
                            .filter(|(_, t)| selector.as_ref().is_none_or(|s| s.matches(&t.labels)))
                            .map(|(k, _)| k)
                            .collect();
                        let field = if w.device_selector.is_some() {
                            f("deviceSelector")
                        } else {
                            f("kind")
                        };
                        (
                            PlacementDef::Edge {
                                device: None,
                                selector,
                            },
                            c,
                            field,
                        )
                    }
                }
            }
        };
        if candidates.is_empty() {
            return Err(at.err(
                &place_field,
                format!(
                    "impossible fleet: no {} matches workload {:?}",
                    match w.kind {
                        WorkloadKind::Pod => "node",
                        WorkloadKind::EdgeWorkload => "edgeDevice in its namespace",
                    },
                    w.name
                ),
            ));
        }
        let most = candidates
            .iter()
            .map(|&k| carry_watts(&targets[k]))
            .fold(f64::NEG_INFINITY, f64::max);
        if w.draw_watts > most {
            return Err(at.err(
                &f("drawWatts"),
                format!(
                    "impossible fleet: {} W is more than any matching {} can carry (at most {most} W: maxWatts − baseWatts)",
                    w.draw_watts,
                    if w.kind == WorkloadKind::Pod { "node" } else { "device" }
                ),
            ));
        }
        let names: Vec<String> = match w.count {
            None => vec![w.name.clone()],
            Some(n) => (0..n).map(|k| format!("{}-{k}", w.name)).collect(),
        };
        for name in names {
            if out
                .iter()
                .any(|o| o.name == name && o.namespace == namespace && o.kind == w.kind)
            {
                return Err(at.err(&f("name"), format!("{name:?} is defined twice")));
            }
            out.push(WorkloadDef {
                name,
                namespace: namespace.clone(),
                kind: w.kind,
                draw_watts: w.draw_watts,
                criticality: w.criticality.unwrap_or(Criticality::Normal),
                replicas: w.replicas.unwrap_or(1),
                labels: w.labels.clone(),
                pinned: w.pinned,
                cpu_limit: w.kind == WorkloadKind::Pod && w.cpu_limit.unwrap_or(true),
                placement: placement.clone(),
            });
        }
    }
    Ok(out)
}

/// Each policy as the API server admits it: defaults from the CRD schema, then the schema and
/// its CEL rules; then the durations the controller parses.
fn admit_policies(at: &At, tree: &Node) -> Result<Vec<EnergyPolicy>, FleetError> {
    let Some(list) = tree.get(&[Seg::Key("policies".into())]) else {
        return Ok(Vec::new());
    };
    let yaml::Val::Seq(items) = &list.value else {
        return Err(at.err("policies", "must be a list of EnergyPolicy objects"));
    };
    let crd = <EnergyPolicy as kube::CustomResourceExt>::crd();
    let schema = edgewatt_crds::validation::schema_of(&crd)
        .ok_or_else(|| at.err("policies", "the EnergyPolicy CRD has no schema"))?;
    let mut out: Vec<EnergyPolicy> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let base = format!("policies[{i}]");
        let obj = item.to_json();
        if obj["kind"] != "EnergyPolicy" {
            return Err(at.err(
                &format!("{base}.kind"),
                format!("{} is not EnergyPolicy", obj["kind"]),
            ));
        }
        if obj["apiVersion"] != "edgewatt.io/v1alpha1" {
            return Err(at.err(
                &format!("{base}.apiVersion"),
                format!("{} is not edgewatt.io/v1alpha1", obj["apiVersion"]),
            ));
        }
        let defaulted = edgewatt_crds::validation::apply_defaults(&schema, &obj);
        if let Err(errors) = edgewatt_crds::validation::validate(&schema, &defaulted, None) {
            let e = &errors[0];
            let path = if e.path == "<root>" || e.path.is_empty() {
                base.clone()
            } else {
                format!("{base}.{}", e.path)
            };
            let more = if errors.len() > 1 {
                format!(" (and {} more)", errors.len() - 1)
            } else {
                String::new()
            };
            return Err(at.err(
                &path,
                format!("rejected by the EnergyPolicy CRD: {}{more}", e.message),
            ));
        }
        let policy: EnergyPolicy = serde_json::from_value(defaulted)
            .map_err(|e| at.err(&base, format!("does not read as an EnergyPolicy: {e}")))?;
        let name = policy.metadata.name.clone().unwrap_or_default();
        if name.is_empty() {
            return Err(at.err(&format!("{base}.metadata.name"), "missing"));
        }
        if out
            .iter()
            .any(|p| p.metadata.name.as_deref() == Some(name.as_str()))
        {
            return Err(at.err(
                &format!("{base}.metadata.name"),
                format!("{name:?} is defined twice"),
            ));
        }
        let ladder = edgewatt_crds::LadderDurations::of(
            &policy.spec.forecast,
            policy.spec.action.degrade.as_ref(),
        );
        if let Err(msg) = policy.spec.durations().and(ladder.map(|_| ())) {
            // "spec.starvation.for: …": the field is the message's head.
            let field = msg.split(':').next().unwrap_or("spec");
            return Err(at.err(&format!("{base}.{field}"), msg.clone()));
        }
        out.push(policy);
    }
    Ok(out)
}
