//! hwmon power and energy sensors (`/sys/class/hwmon/hwmon*`), and the power rails of boards.
//!
//! Units and file names follow the kernel's hwmon ABI (`Documentation/hwmon/sysfs-interface.rst`):
//! `in*_input` mV, `curr*_input` mA, `power*_input`/`power*_average` µW, `energy*_input` µJ.
//!
//! A wrong guess double-counts, so every sensor is used by a rule that knows what it measures:
//! - per-chip rules for rail monitors ([`ina3221`] on NVIDIA Jetson boards, [`ina2xx`] shunt
//!   monitors, [`pmbus`] supplies) say which rail is the **board input** (published as node
//!   `platform` power; parallel inputs add up) and which are **sub-rails** of it (published as
//!   zones named after the rail, never added to node power and never attributed);
//! - [`generic`] keeps what was read before the rules: the ACPI `power_meter` (platform), AMD's
//!   socket energy counters (CPU package), and sensors labelled CPU/package or system/platform.
//!
//! Everything else is listed once in the log so an operator can see what was left out. Discovery
//! runs once; each interval reads only the files of the rails in use (one `power*_input`, or one
//! `in*_input` and one `curr*_input`). A rail that cannot be read is left out of that interval,
//! and so is every figure it is part of (a board input summed from parallel rails) — never 0 W.

mod generic;
mod ina2xx;
mod ina3221;
mod pmbus;

use std::path::{Path, PathBuf};

use crate::counter::WrappingCounter;
use crate::source::{Context, Domain, Meter, MeterValue, Sample, Source, SourceError};
use crate::sysfs::{list_dir, read_i64, read_string, read_u64, HostRoot, ReadError};

/// The zone of the node's board input (the `platform` meter).
const PLATFORM: &str = "platform";

/// How one sensor is read.
enum Reading {
    /// `energy*_input`, µJ, cumulative.
    Energy(PathBuf, WrappingCounter),
    /// `power*_input` or `power*_average`, µW.
    Power(PathBuf),
    /// `in*_input` (mV) × `curr*_input` (mA): what INA3221 offers (it has no power file).
    VoltCurr { mv: PathBuf, ma: PathBuf },
}

impl Reading {
    fn read(&mut self) -> Result<MeterValue, ReadError> {
        Ok(match self {
            Reading::Energy(p, c) => MeterValue::Joules(c.update(read_u64(p)?) as f64 / 1e6),
            Reading::Power(p) => MeterValue::Watts(read_u64(p)? as f64 / 1e6),
            Reading::VoltCurr { mv, ma } => {
                // curr is signed in the ABI (a reverse current reads negative); mV × mA = µW
                MeterValue::Watts(read_u64(mv)? as f64 * read_i64(ma)? as f64 / 1e6)
            }
        })
    }

    fn files(&self) -> String {
        let name = |p: &Path| p.file_name().map(|n| n.to_string_lossy().into_owned());
        match self {
            Reading::Energy(p, _) | Reading::Power(p) => name(p).unwrap_or_default(),
            Reading::VoltCurr { mv, ma } => format!(
                "{}×{}",
                name(mv).unwrap_or_default(),
                name(ma).unwrap_or_default()
            ),
        }
    }
}

/// How sure a rule is that a rail is the board's input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Input {
    /// The board's layout says so (Jetson `VDD_IN`, the ACPI power meter).
    Known,
    /// A supply's input (`pin` of a PMBus supply): several such add up (redundant supplies).
    Parallel,
    /// A lone monitor's only channel (an unlabelled INA226): stands only when nothing else claims
    /// the board input, and only as the one such monitor.
    Alone,
}

/// What a rule found: one sensor and where its figure goes.
struct Rail {
    /// Chip directory name and device (`hwmon3`, `1-0040`), for logs and unique zone names.
    chip: String,
    label: String,
    reading: Reading,
    kind: RailKind,
}

enum RailKind {
    /// Fixed meaning (the pre-rule sensors): `Domain`, zone.
    Fixed(Domain, &'static str),
    /// A board input; `also_zone`: also published as its own zone (one of several parallel
    /// top-level rails, e.g. AGX Orin's `VDD_GPU_SOC`).
    Input { how: Input, also_zone: bool },
    /// A sub-rail: its own zone only.
    Sub,
}

/// A zone name from a rail label: lower case, `[a-z0-9_]` (Prometheus label values need no
/// escaping then, and Kepler names its hwmon zones the same way).
fn zone_name(label: &str) -> String {
    let s: String = label
        .trim()
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    s.trim_matches('_').to_string()
}

/// One hwmon chip directory as the rules see it.
pub(crate) struct Chip {
    pub dir: PathBuf,
    /// The `name` attribute (the driver's chip name, e.g. `ina3221`).
    pub name: String,
    /// The I2C/platform device behind it (`1-0040`), else the hwmon directory name.
    pub device: String,
}

impl Chip {
    fn open(dir: PathBuf) -> Self {
        let name = read_string(&dir.join("name")).unwrap_or_default();
        let device = std::fs::read_link(dir.join("device"))
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .or_else(|| dir.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_default();
        Self { dir, name, device }
    }

    fn attr(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn label(&self, attr: &str) -> Option<String> {
        read_string(&self.attr(attr)).ok().filter(|l| !l.is_empty())
    }

    fn has(&self, attr: &str) -> bool {
        self.attr(attr).exists()
    }

    fn id(&self) -> String {
        format!("{}@{}", self.name, self.device)
    }
}

/// One published figure: the sum of its members, only when every member was read.
struct Group {
    domain: Domain,
    zone: String,
    members: Vec<usize>,
}

struct Sensor {
    reading: Reading,
    /// For logs: `ina3221@1-0040 VDD_IN (in1_input×curr1_input)`.
    what: String,
    /// The last read failed (logged once per failure run).
    failing: bool,
}

pub struct Hwmon {
    sensors: Vec<Sensor>,
    groups: Vec<Group>,
    ignored: Vec<String>,
    /// Said once, with the first sample: which rail is the input, which are zones.
    described: bool,
    /// Last readings, reused every interval.
    values: Vec<Option<MeterValue>>,
}

/// Demotes board-input guesses that are not safe (see [`Input`]): any known input wins; lone
/// monitors stand only alone.
fn resolve_inputs(rails: &mut [Rail]) {
    let claims = |how: Input| {
        let mut chips: Vec<&str> = rails
            .iter()
            .filter(|r| matches!(r.kind, RailKind::Input { how: h, .. } if h == how))
            .map(|r| r.chip.as_str())
            .collect();
        chips.sort_unstable();
        chips.dedup();
        chips.len()
    };
    let known = claims(Input::Known);
    let parallel = claims(Input::Parallel);
    let alone = claims(Input::Alone);
    for r in rails.iter_mut() {
        let demote = match r.kind {
            RailKind::Input {
                how: Input::Parallel,
                ..
            } => known > 0,
            RailKind::Input {
                how: Input::Alone, ..
            } => known > 0 || parallel > 0 || alone > 1,
            _ => false,
        };
        if demote {
            tracing::info!(chip = %r.chip, rail = %r.label, "hwmon: another monitor may measure the same supply; this rail is published as a zone only, not as the board input");
            r.kind = RailKind::Sub;
        }
    }
}

/// Zone names for sub-rails, unique over the node: a label that two chips share gets the
/// device appended (`ina226_1_0041`, `pmbus_pout1_3_0058`).
fn rail_zones(rails: &[Rail]) -> Vec<String> {
    let base: Vec<String> = rails.iter().map(|r| zone_name(&r.label)).collect();
    base.iter()
        .zip(rails)
        .map(|(z, r)| {
            let shared = base
                .iter()
                .zip(rails)
                .any(|(z2, r2)| z2 == z && r2.chip != r.chip);
            if shared {
                let device = r.chip.rsplit('@').next().unwrap_or_default();
                zone_name(&format!("{z}_{device}"))
            } else {
                z.clone()
            }
        })
        .collect()
}

fn group_into(groups: &mut Vec<Group>, domain: Domain, zone: &str, member: usize) {
    match groups
        .iter_mut()
        .find(|g| g.domain == domain && g.zone == zone)
    {
        Some(g) => g.members.push(member),
        None => groups.push(Group {
            domain,
            zone: zone.to_string(),
            members: vec![member],
        }),
    }
}

impl Hwmon {
    /// `Ok(None)` when no usable sensor exists.
    pub fn discover(root: &HostRoot) -> Result<Option<Self>, SourceError> {
        let chips: Vec<Chip> = list_dir(&root.path("/sys/class/hwmon"))
            .into_iter()
            .map(Chip::open)
            .collect();
        let mut rails = Vec::new();
        let mut ignored = Vec::new();
        // INA3221s are read together: a board's rails may span two chips (AGX Orin).
        let ina3221: Vec<&Chip> = chips.iter().filter(|c| ina3221::handles(c)).collect();
        ina3221::rails(&ina3221, &mut rails, &mut ignored);
        for chip in chips.iter().filter(|c| !ina3221::handles(c)) {
            if ina2xx::handles(chip) {
                ina2xx::rails(chip, &mut rails, &mut ignored);
            } else if pmbus::handles(chip) {
                pmbus::rails(chip, &mut rails, &mut ignored);
            } else {
                generic::rails(chip, &mut rails, &mut ignored);
            }
        }
        if !ignored.is_empty() {
            tracing::debug!(sensors = ?ignored, "hwmon: sensors of unknown meaning left out");
        }
        if rails.is_empty() {
            return Ok(None);
        }
        resolve_inputs(&mut rails);
        let hwmon = Self::build(rails, ignored);
        tracing::info!(figures = %hwmon.describe(), "hwmon: what each published figure is made of");
        Ok(Some(hwmon))
    }

    fn build(rails: Vec<Rail>, ignored: Vec<String>) -> Self {
        let zones = rail_zones(&rails);
        let mut groups = Vec::new();
        let mut sensors = Vec::new();
        for (i, (rail, zone)) in rails.into_iter().zip(zones).enumerate() {
            match rail.kind {
                RailKind::Fixed(domain, z) => group_into(&mut groups, domain, z, i),
                RailKind::Input { also_zone, .. } => {
                    group_into(&mut groups, Domain::Platform, PLATFORM, i);
                    if also_zone {
                        group_into(&mut groups, Domain::Cpu, &zone, i);
                    }
                }
                RailKind::Sub => group_into(&mut groups, Domain::Cpu, &zone, i),
            }
            sensors.push(Sensor {
                what: format!("{} {} ({})", rail.chip, rail.label, rail.reading.files()),
                reading: rail.reading,
                failing: false,
            });
        }
        Self {
            values: Vec::with_capacity(sensors.len()),
            sensors,
            groups,
            ignored,
            described: false,
        }
    }

    pub fn ignored(&self) -> &[String] {
        &self.ignored
    }

    /// `platform = VDD_IN; zones: vdd_cpu_gpu_cv, vdd_soc` with the files behind each.
    fn describe(&self) -> String {
        self.groups
            .iter()
            .map(|g| {
                let parts: Vec<&str> = g
                    .members
                    .iter()
                    .map(|&i| self.sensors[i].what.as_str())
                    .collect();
                format!("{} = {}", g.zone, parts.join(" + "))
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// Reads every sensor once; a failure is logged when it starts and when it ends.
    fn read_all(&mut self) -> Option<ReadError> {
        self.values.clear();
        let mut first_error = None;
        for s in &mut self.sensors {
            match s.reading.read() {
                Ok(v) => {
                    if s.failing {
                        tracing::info!(sensor = %s.what, "hwmon: rail readable again");
                    }
                    s.failing = false;
                    self.values.push(Some(v));
                }
                Err(e) => {
                    if !s.failing {
                        tracing::warn!(sensor = %s.what, error = %e, "hwmon: rail unreadable; it and every figure it is part of are withdrawn until it reads again");
                    }
                    s.failing = true;
                    self.values.push(None);
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error
    }
}

/// Sums members of one kind; a counter beats a power reading in a mixed group (it is the better
/// measure). `None` when any member is missing.
fn sum(values: &[Option<MeterValue>], members: &[usize]) -> Option<MeterValue> {
    let mut joules = None::<f64>;
    let mut watts = None::<f64>;
    for &i in members {
        match values[i]? {
            MeterValue::Joules(j) => *joules.get_or_insert(0.0) += j,
            MeterValue::Watts(w) => *watts.get_or_insert(0.0) += w,
            // hwmon files are read now: never a polled counter
            MeterValue::JoulesAt(..) => return None,
        }
    }
    joules
        .map(MeterValue::Joules)
        .or(watts.map(MeterValue::Watts))
}

impl Source for Hwmon {
    fn name(&self) -> &'static str {
        "hwmon"
    }

    fn sample(&mut self, _ctx: &Context) -> Result<Sample, SourceError> {
        let error = self.read_all();
        let meters: Vec<Meter> = self
            .groups
            .iter()
            .filter_map(|g| {
                sum(&self.values, &g.members).map(|value| Meter {
                    domain: g.domain.clone(),
                    zone: g.zone.clone(),
                    value,
                })
            })
            .collect();
        if meters.is_empty() {
            if let Some(e) = error {
                return Err(e.into());
            }
        }
        let detail = (!self.described).then(|| self.describe());
        self.described = true;
        Ok(Sample {
            meters,
            detail,
            ..Sample::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zone_names_are_label_safe() {
        assert_eq!(zone_name("VDD_CPU_GPU_CV"), "vdd_cpu_gpu_cv");
        assert_eq!(zone_name(" 5V in "), "5v_in");
        assert_eq!(zone_name("pout1"), "pout1");
        assert_eq!(zone_name("ina226@1-0040"), "ina226_1_0040");
    }

    #[test]
    fn a_group_with_a_missing_member_is_absent() {
        let v = [
            Some(MeterValue::Watts(1.0)),
            None,
            Some(MeterValue::Watts(2.0)),
        ];
        assert_eq!(sum(&v, &[0, 2]), Some(MeterValue::Watts(3.0)));
        assert_eq!(sum(&v, &[0, 1]), None);
    }
}
