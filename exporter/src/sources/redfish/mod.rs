//! Platform power from this node's BMC over Redfish.
//!
//! - Which chassis: the one that holds *this* node's `ComputerSystem` (matched by SMBIOS UUID or
//!   serial), never an enclosure that powers several systems — that one is exported as
//!   `node_enclosure_watts{chassis}` instead ([`topology`]); `--redfish-chassis` overrides.
//! - What it says: `EnvironmentMetrics.PowerWatts`, else the legacy `Power.PowerControl`
//!   `PowerConsumedWatts`, else the supplies' input (else output) power from the legacy
//!   `Power.PowerSupplies` or `PowerSubsystem/PowerSupplies/*/Metrics` ([`model`]).
//!   `EnergykWh` becomes the energy counter only when the BMC is polled at least as often as the
//!   exporter collects; polled less often its steps would read 0 W, 0 W, 3×, so watts are used.
//! - A cap of 0 W or a disabled one is no budget.
//! - BMCs answer in hundreds of milliseconds to seconds, so polling runs on its own thread at its
//!   own interval and the collector only takes the latest reading; a reading older than three poll
//!   intervals is stale (the series go away). The resource graph is read once and again after an
//!   error or hourly; each poll then reads only the chosen chassis' power. A chassis that fails to
//!   answer costs only its own figures.

pub mod client;
pub mod model;
pub mod topology;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use self::client::{Client, ClientConfig};
use self::model::{ChassisPower, Supply};
use self::topology::{ChassisNode, Identity, Plan, SystemNode};
use crate::source::{Context, Domain, Meter, MeterValue, Sample, SharedMeter, Source, SourceError};
use crate::sysfs::{read_string, HostRoot};

/// How often the chassis/system graph is read again while polls succeed.
const REPLAN: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone)]
pub struct RedfishConfig {
    /// Service root, e.g. `https://10.0.0.5` (with or without `/redfish/v1`).
    pub url: String,
    /// `user:password` file; else `EDGEWATT_REDFISH_USERNAME`/`EDGEWATT_REDFISH_PASSWORD`.
    pub credentials_file: Option<PathBuf>,
    pub insecure: bool,
    /// CA bundle for the BMC's certificate.
    pub ca_file: Option<PathBuf>,
    /// Poll interval.
    pub interval: Duration,
    /// Timeout of one HTTP request.
    pub timeout: Duration,
    /// The exporter's collection interval: `EnergykWh` is used as a counter only when
    /// `interval <= collect_interval`.
    pub collect_interval: Duration,
    /// `--redfish-chassis`: this node's chassis, by `Id` or `@odata.id`.
    pub chassis: Option<String>,
    /// Where `/sys/class/dmi/id` is read to recognise this node's system.
    pub host_root: HostRoot,
}

/// Why a poll has no node power.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeError {
    /// The BMC did not answer (network, TLS, auth, timeout): the last reading stands until stale.
    Unreachable(String),
    /// It answered, but there is no power figure for this node.
    NoPower(String),
}

impl NodeError {
    fn text(&self) -> &str {
        match self {
            NodeError::Unreachable(e) | NodeError::NoPower(e) => e,
        }
    }
}

impl std::fmt::Display for NodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.text())
    }
}

/// What one poll found.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    pub node: Result<ChassisPower, NodeError>,
    /// Shared chassis (enclosures) and their watts.
    pub shared: Vec<(String, f64)>,
    /// Which chassis and why.
    pub why: String,
}

/// SMBIOS identity of this machine (root-only files; unknown when unreadable).
pub fn identity(root: &HostRoot) -> Identity {
    let read = |f: &str| read_string(&root.path(format!("/sys/class/dmi/id/{f}"))).ok();
    Identity::new(read("product_uuid"), read("product_serial"))
}

fn credentials(cfg: &RedfishConfig) -> anyhow::Result<Option<(String, String)>> {
    if let Some(path) = &cfg.credentials_file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("redfish credentials {}: {e}", path.display()))?;
        let (u, p) = text.trim().split_once(':').ok_or_else(|| {
            anyhow::anyhow!(
                "redfish credentials {}: expected user:password",
                path.display()
            )
        })?;
        return Ok(Some((u.to_string(), p.to_string())));
    }
    match (
        std::env::var("EDGEWATT_REDFISH_USERNAME"),
        std::env::var("EDGEWATT_REDFISH_PASSWORD"),
    ) {
        (Ok(u), Ok(p)) => Ok(Some((u, p))),
        _ => Ok(None),
    }
}

fn members(v: &Value) -> Vec<String> {
    v["Members"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|m| m["@odata.id"].as_str().map(topology::norm))
                .collect()
        })
        .unwrap_or_default()
}

struct Poller {
    client: Client,
    me: Identity,
    chassis_override: Option<String>,
    plan: Option<(Plan, Instant)>,
}

impl Poller {
    /// Reads the chassis and systems and decides which to poll. A chassis or system that fails to
    /// answer is left out (logged), not fatal.
    async fn discover(&mut self) -> Result<Plan, NodeError> {
        let root = self
            .client
            .get("/redfish/v1/")
            .await
            .map_err(NodeError::Unreachable)?;
        let path = |k: &str, default: &str| {
            root[k]["@odata.id"]
                .as_str()
                .map(topology::norm)
                .unwrap_or_else(|| default.into())
        };
        let (chassis_path, systems_path) = (
            path("Chassis", "/redfish/v1/Chassis"),
            path("Systems", "/redfish/v1/Systems"),
        );
        let mut chassis = Vec::new();
        let list = self
            .client
            .get(&chassis_path)
            .await
            .map_err(NodeError::Unreachable)?;
        for id in members(&list) {
            match self.client.get(&id).await {
                Ok(v) => chassis.extend(ChassisNode::parse(&v)),
                Err(e) => {
                    tracing::warn!(chassis = %id, error = %e, "Redfish chassis unreadable; left out")
                }
            }
        }
        let mut systems = Vec::new();
        match self.client.get(&systems_path).await {
            Ok(list) => {
                for id in members(&list) {
                    match self.client.get(&id).await {
                        Ok(v) => systems.extend(SystemNode::parse(&v)),
                        Err(e) => {
                            tracing::warn!(system = %id, error = %e, "Redfish system unreadable; left out")
                        }
                    }
                }
            }
            Err(e) => tracing::info!(error = %e, "Redfish service lists no systems"),
        }
        let plan = topology::plan(
            &chassis,
            &systems,
            &self.me,
            self.chassis_override.as_deref(),
        )
        .map_err(NodeError::NoPower)?;
        tracing::info!(why = %plan.why, "Redfish: {}", match &plan.node {
            Some(c) => format!("this node's power is chassis {c}"),
            None => "no chassis measures this node alone".into(),
        });
        Ok(plan)
    }

    /// One poll: the plan (read again when old or after an error), then the chosen chassis.
    async fn poll(&mut self) -> Reading {
        let plan = match &self.plan {
            Some((p, at)) if at.elapsed() < REPLAN => p.clone(),
            _ => match self.discover().await {
                Ok(p) => {
                    self.plan = Some((p.clone(), Instant::now()));
                    p
                }
                Err(e) => {
                    return Reading {
                        node: Err(e),
                        shared: Vec::new(),
                        why: String::new(),
                    }
                }
            },
        };
        let node = match &plan.node {
            Some(id) => self.chassis_power(id).await,
            None => Err(NodeError::NoPower(plan.why.clone())),
        };
        if node.is_err() && plan.node.is_some() {
            // The chassis may have gone (BMC reset renumbered it): look again next poll.
            self.plan = None;
        }
        let mut shared = Vec::new();
        for id in &plan.shared {
            match self.chassis_power(id).await {
                Ok(ChassisPower { watts: Some(w), .. }) => shared.push((id.clone(), w)),
                Ok(_) => {}
                Err(e) => tracing::debug!(chassis = %id, error = %e, "shared chassis unreadable"),
            }
        }
        Reading {
            node,
            shared,
            why: plan.why,
        }
    }

    /// The chassis's power, trying the resources in order of precision; one that fails to answer
    /// is skipped for the next.
    async fn chassis_power(&mut self, id: &str) -> Result<ChassisPower, NodeError> {
        let c = self.client.get(id).await.map_err(NodeError::Unreachable)?;
        let link = |k: &str| c[k]["@odata.id"].as_str().map(String::from);
        let mut best = ChassisPower::default();
        let mut errors = Vec::new();
        if let Some(env) = link("EnvironmentMetrics") {
            match self.client.get(&env).await {
                Ok(v) => best = model::environment_metrics(&v),
                Err(e) => errors.push(e),
            }
        }
        if best.watts.is_none() {
            if let Some(p) = link("Power") {
                match self.client.get(&p).await {
                    Ok(v) => merge(&mut best, model::legacy_power(&v)),
                    Err(e) => errors.push(e),
                }
            }
        }
        if best.watts.is_none() {
            if let Some(ps) = link("PowerSubsystem") {
                match self.power_subsystem(&ps).await {
                    Ok(Some((w, kind))) => {
                        best.watts = Some(w);
                        best.from = format!("PowerSubsystem supplies ({kind} power summed)");
                    }
                    Ok(None) => {}
                    Err(e) => errors.push(e),
                }
            }
        }
        if best.watts.is_some() || best.energy_kwh.is_some() {
            best.from = format!("chassis {id}: {}", best.from);
            return Ok(best);
        }
        Err(if errors.is_empty() {
            NodeError::NoPower(format!("chassis {id} reports no power (no EnvironmentMetrics.PowerWatts, Power.PowerControl.PowerConsumedWatts or power supply readings)"))
        } else {
            NodeError::Unreachable(format!("chassis {id}: {}", errors.join("; ")))
        })
    }

    async fn power_subsystem(&mut self, path: &str) -> Result<Option<(f64, &'static str)>, String> {
        let ps = self.client.get(path).await?;
        let Some(list) = ps["PowerSupplies"]["@odata.id"].as_str() else {
            return Ok(None);
        };
        let mut supplies = Vec::new();
        for id in members(&self.client.get(list).await?) {
            let s = self.client.get(&id).await?;
            let metrics = match s["Metrics"]["@odata.id"].as_str() {
                Some(m) => self.client.get(m).await?,
                None => Value::Null,
            };
            supplies.push(Supply::modern(&s, &metrics));
        }
        Ok(model::supplies_power(&supplies))
    }
}

/// Fills what `from_legacy` adds to an `EnvironmentMetrics` reading that lacked watts.
fn merge(best: &mut ChassisPower, from_legacy: ChassisPower) {
    if best.watts.is_none() && from_legacy.watts.is_some() {
        best.watts = from_legacy.watts;
        best.from = from_legacy.from;
    }
    best.limit_watts = best.limit_watts.or(from_legacy.limit_watts);
}

#[derive(Default)]
struct Shared {
    latest: Option<(Instant, Reading)>,
    /// Why the last poll failed to reach the BMC.
    error: Option<String>,
}

pub struct Redfish {
    shared: Arc<Mutex<Shared>>,
    max_age: Duration,
    use_energy: bool,
}

impl Redfish {
    /// Starts the background poller. Fails only on configuration errors (bad URL, unreadable
    /// credentials or CA file); an unreachable BMC is a down source, reported every interval.
    pub fn start(cfg: RedfishConfig) -> anyhow::Result<Self> {
        let client = Client::new(&ClientConfig {
            url: cfg.url.clone(),
            credentials: credentials(&cfg)?,
            insecure: cfg.insecure,
            ca_file: cfg.ca_file.clone(),
            timeout: cfg.timeout,
        })?;
        let me = identity(&cfg.host_root);
        if !me.is_known() && cfg.chassis.is_none() {
            tracing::info!("SMBIOS UUID/serial unreadable (/sys/class/dmi/id, root only): Redfish can only recognise this node when its BMC lists one system");
        }
        let mut poller = Poller {
            client,
            me,
            chassis_override: cfg.chassis.clone(),
            plan: None,
        };
        let shared = Arc::new(Mutex::new(Shared::default()));
        let bg = shared.clone();
        let interval = cfg.interval;
        std::thread::Builder::new()
            .name("redfish".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        if let Ok(mut s) = bg.lock() {
                            s.error = Some(format!("cannot start the Redfish poller: {e}"));
                        }
                        return;
                    }
                };
                rt.block_on(async move {
                    loop {
                        let started = Instant::now();
                        let r = poller.poll().await;
                        if let Ok(mut s) = bg.lock() {
                            match &r.node {
                                // Unreachable: the last reading stands until it is stale.
                                Err(NodeError::Unreachable(e)) if r.shared.is_empty() => {
                                    s.error = Some(e.clone());
                                }
                                _ => {
                                    s.error = None;
                                    s.latest = Some((Instant::now(), r));
                                }
                            }
                        }
                        tokio::time::sleep(interval.saturating_sub(started.elapsed())).await;
                    }
                });
            })?;
        let use_energy = cfg.interval <= cfg.collect_interval;
        Ok(Self {
            shared,
            max_age: cfg.interval * 3,
            use_energy,
        })
    }
}

impl Source for Redfish {
    fn name(&self) -> &'static str {
        "redfish"
    }

    fn sample(&mut self, ctx: &Context) -> Result<Sample, SourceError> {
        let s = self
            .shared
            .lock()
            .map_err(|_| SourceError::Other("redfish poller panicked".into()))?;
        let (at, r) =
            crate::source::fresh_reading(&s.latest, s.error.as_ref(), ctx.now, self.max_age)?;
        let shared: Vec<SharedMeter> = r
            .shared
            .iter()
            .map(|(name, watts)| SharedMeter {
                name: name.clone(),
                watts: *watts,
            })
            .collect();
        let power = match &r.node {
            Ok(p) => p,
            Err(NodeError::NoPower(e)) if shared.is_empty() => {
                return Err(SourceError::NoPower(e.clone()))
            }
            Err(NodeError::Unreachable(e)) if shared.is_empty() => {
                return Err(SourceError::Other(e.clone()))
            }
            Err(e) => {
                return Ok(Sample {
                    shared,
                    detail: Some(format!("no node power: {}", e.text())),
                    ..Sample::default()
                })
            }
        };
        let value = match (power.energy_kwh, power.watts) {
            (Some(kwh), _) if self.use_energy => MeterValue::JoulesAt(kwh * 3.6e6, at),
            (_, Some(w)) => MeterValue::Watts(w),
            (Some(_), None) => {
                return Err(SourceError::NoPower(format!(
                    "{}: only EnergykWh, and the BMC is polled less often than the exporter collects (lower --redfish-interval to --interval or below)",
                    power.from
                )))
            }
            (None, None) => return Err(SourceError::NoPower("BMC reports no power".into())),
        };
        Ok(Sample {
            meters: vec![Meter {
                domain: Domain::Platform,
                zone: "platform".into(),
                value,
            }],
            budget_watts: power.limit_watts,
            shared,
            detail: Some(match value {
                MeterValue::JoulesAt(..) => {
                    format!("{} (energy counter EnergykWh)", power.from)
                }
                _ => power.from.clone(),
            }),
            ..Sample::default()
        })
    }
}
