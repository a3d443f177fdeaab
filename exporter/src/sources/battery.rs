//! Batteries and external supply from `/sys/class/power_supply/*`: what makes an edge device
//! energy-starved. Units are the kernel's: µWh, µAh, µV, µW, µA.
//!
//! Several batteries (laptops with two, UPS plus internal) are summed into one node battery,
//! because the controller decides per node.
//!
//! Power flows either way through the same files (torvalds/linux
//! `Documentation/ABI/testing/sysfs-class-power`): `status` is `Charging`, `Discharging`,
//! `Not charging`, `Full` or `Unknown`, and `current_now` is signed — "negative values are used
//! for discharging batteries, positive values for charging batteries" — though drivers that
//! report only a magnitude exist (ACPI's `_BST` rate has no sign; `power_now` is one in practice),
//! so the direction comes from `status`, the sign where the driver gives one. Draw out of the
//! battery is [`BatteryState::draw_watts`], power into it [`BatteryState::charge_watts`]:
//! - `Charging`: the reading's magnitude is the charge power; a *negative* reading contradicts the
//!   status (the ABI says current flows out) and leaves it unknown.
//! - `Discharging`, `Not charging`, `Full`: the kernel says nothing flows in: 0 W.
//! - `Unknown` (or no `status`): 0 W only when a reading is negative or zero (by the ABI nothing
//!   flows in); a positive one may be a magnitude-only driver discharging: unknown.
//! - No power or current reading while `Charging`: unknown, never a made-up figure.

use std::path::{Path, PathBuf};

use crate::source::{Battery as BatteryState, Context, Sample, Source, SourceError};
use crate::sysfs::{list_dir, optional, read_i64, read_string, read_u64, HostRoot};

const UWH_TO_J: f64 = 3600.0 / 1e6;

pub struct PowerSupply {
    batteries: Vec<PathBuf>,
    mains: Vec<PathBuf>,
}

/// One battery's reading, before summing.
#[derive(Debug, Default, Clone, PartialEq)]
struct One {
    ratio: Option<f64>,
    energy_j: Option<f64>,
    full_j: Option<f64>,
    draw_w: Option<f64>,
    /// Power into the battery (see the module docs).
    charge_w: Option<f64>,
    status: String,
}

/// Power into a battery, ≥ 0, from its `status` and its signed power reading (W; `None`: no
/// `power_now`, or no `current_now` × `voltage_now`). See the module docs for the rules.
fn charge_watts(status: &str, signed_w: Option<f64>) -> Option<f64> {
    match status {
        "Charging" => signed_w.filter(|w| *w >= 0.0),
        "Discharging" | "Not charging" | "Full" => Some(0.0),
        _ => signed_w.filter(|w| *w <= 0.0).map(|_| 0.0),
    }
}

fn read_one(dir: &Path) -> Result<One, SourceError> {
    let f = |name: &str| dir.join(name);
    let status = optional(read_string(&f("status")))?.unwrap_or_else(|| "Unknown".into());
    let voltage_v = optional(read_u64(&f("voltage_now")))?.map(|uv| uv as f64 / 1e6);
    // Energy: energy_* in µWh, else charge_* in µAh times the voltage.
    let energy = |e: &str, c: &str| -> Result<Option<f64>, SourceError> {
        if let Some(uwh) = optional(read_u64(&f(e)))? {
            return Ok(Some(uwh as f64 * UWH_TO_J));
        }
        Ok(match (optional(read_u64(&f(c)))?, voltage_v) {
            (Some(uah), Some(v)) => Some(uah as f64 / 1e6 * v * 3600.0),
            _ => None,
        })
    };
    let energy_j = energy("energy_now", "charge_now")?;
    let full_j = energy("energy_full", "charge_full")?;
    let ratio = match optional(read_u64(&f("capacity")))? {
        Some(pct) if pct <= 100 => Some(pct as f64 / 100.0),
        Some(pct) => {
            return Err(SourceError::Other(format!(
                "{}: capacity {pct} is not a percentage",
                f("capacity").display()
            )))
        }
        None => match (energy_j, full_j) {
            (Some(e), Some(full)) if full > 0.0 => Some((e / full).clamp(0.0, 1.0)),
            _ => None,
        },
    };
    // power_now in µW, else current_now in µA (negative while discharging, by the ABI) times
    // voltage.
    let signed_w = match optional(read_i64(&f("power_now")))? {
        Some(uw) => Some(uw as f64 / 1e6),
        None => match (optional(read_i64(&f("current_now")))?, voltage_v) {
            (Some(ua), Some(v)) => Some(ua as f64 / 1e6 * v),
            _ => None,
        },
    };
    // Only a discharging battery draws; the kernel reports charging current in the same file.
    let draw_w = signed_w.map(|w| {
        if status == "Discharging" {
            w.abs()
        } else {
            0.0
        }
    });
    let charge_w = charge_watts(&status, signed_w).map(f64::abs);
    Ok(One {
        ratio,
        energy_j,
        full_j,
        draw_w,
        charge_w,
        status,
    })
}

fn sum(batteries: &[One]) -> BatteryState {
    let add = |get: fn(&One) -> Option<f64>| -> Option<f64> {
        let vals: Vec<f64> = batteries.iter().filter_map(get).collect();
        (!vals.is_empty()).then(|| vals.iter().sum())
    };
    let energy = add(|b| b.energy_j);
    let capacity = add(|b| b.full_j);
    let ratio = match (energy, capacity) {
        (Some(e), Some(c)) if c > 0.0 && batteries.iter().all(|b| b.full_j.is_some()) => {
            Some((e / c).clamp(0.0, 1.0))
        }
        _ => {
            let r: Vec<f64> = batteries.iter().filter_map(|b| b.ratio).collect();
            (!r.is_empty()).then(|| r.iter().sum::<f64>() / r.len() as f64)
        }
    };
    let status = if batteries.iter().any(|b| b.status == "Discharging") {
        "Discharging".to_string()
    } else {
        batteries
            .first()
            .map(|b| b.status.clone())
            .unwrap_or_default()
    };
    BatteryState {
        charge_ratio: ratio,
        energy_joules: energy,
        capacity_joules: capacity,
        draw_watts: add(|b| b.draw_w),
        // Known only when known for every battery: a sum over some would be a made-up figure.
        charge_watts: batteries.iter().map(|b| b.charge_w).sum(),
        status,
    }
}

impl PowerSupply {
    /// `Ok(None)` when there is neither a battery nor a mains supply to report.
    pub fn discover(root: &HostRoot) -> Result<Option<Self>, SourceError> {
        let mut batteries = Vec::new();
        let mut mains = Vec::new();
        for dir in list_dir(&root.path("/sys/class/power_supply")) {
            // Peripherals (mice, headsets) report `scope` Device: not the node's supply.
            if read_string(&dir.join("scope")).is_ok_and(|s| s == "Device") {
                continue;
            }
            match read_string(&dir.join("type")).unwrap_or_default().as_str() {
                "Battery" | "UPS" => batteries.push(dir),
                "Mains" | "USB" | "USB_C" | "USB_PD" => mains.push(dir),
                _ => {}
            }
        }
        Ok((!batteries.is_empty() || !mains.is_empty()).then_some(Self { batteries, mains }))
    }
}

impl Source for PowerSupply {
    fn name(&self) -> &'static str {
        "battery"
    }

    fn sample(&mut self, _ctx: &Context) -> Result<Sample, SourceError> {
        let ones = self
            .batteries
            .iter()
            .map(|d| read_one(d))
            .collect::<Result<Vec<_>, _>>()?;
        let mut online = None;
        for m in &self.mains {
            if let Some(v) = optional(read_u64(&m.join("online")))? {
                online = Some(online.unwrap_or(false) || v == 1);
            }
        }
        let battery = (!ones.is_empty()).then(|| sum(&ones));
        // No mains file: a charging or full battery means something external feeds the node.
        let external = online.or_else(|| {
            battery
                .as_ref()
                .map(|b| matches!(b.status.as_str(), "Charging" | "Full" | "Not charging"))
        });
        Ok(Sample {
            battery,
            external_power: external,
            ..Sample::default()
        })
    }
}
