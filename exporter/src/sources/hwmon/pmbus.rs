//! PMBus devices (torvalds/linux `Documentation/hwmon/pmbus-core.rst` and `pmbus.rst`):
//! `powerX_input` (µW, from READ_PIN/READ_POUT) labelled `pin`, `pinY`, `pinY.Z`, `poutY`,
//! `poutY.Z`; `inX_input` (mV) labelled `vin`, `voutY`; `currX_input` (mA) labelled `iin`,
//! `ioutY` — Y the page, Z the phase.
//!
//! - A supply bound to the generic `pmbus` driver (a power supply unit, as operators instantiate
//!   it): its input (`pin`, else `vin` × `iin`) is the board's input; several supplies' inputs add
//!   up (redundant PSUs share the load); its outputs (`poutY`, else `voutY` × `ioutY`) are zones.
//! - Voltage regulators (CPU/SoC VRMs) are sub-rails of the board: all their rails are zones.
//!
//! Phases (`.Z`) are parts of their page's figure and are never read (no double count).

use std::collections::BTreeMap;

use super::{Chip, Input, Rail, RailKind, Reading};
use crate::sysfs::list_dir;

/// The generic PMBus driver's name: a supply.
const SUPPLY: &str = "pmbus";

/// Regulator drivers (Kepler's `internal/device/hwmon_chip_rules.go` lists them as PMBus too).
const REGULATORS: [&str; 8] = [
    "tps53679",
    "tps546d24",
    "xdpe12284",
    "ir35221",
    "mp2975",
    "isl68137",
    "max20730",
    "max20751",
];

pub(super) fn handles(chip: &Chip) -> bool {
    chip.name == SUPPLY || REGULATORS.contains(&chip.name.as_str())
}

/// `label → index` for one sensor type (`power`, `in`, `curr`), whole pages only.
fn labelled(chip: &Chip, kind: &str) -> BTreeMap<String, String> {
    list_dir(&chip.dir)
        .iter()
        .filter_map(|p| p.file_name()?.to_str().map(str::to_string))
        .filter_map(|f| {
            let (k, idx, suffix) = super::generic::split_attr(&f)?;
            (k == kind && suffix == "label").then(|| idx.to_string())
        })
        .filter_map(|idx| {
            let label = chip
                .label(&format!("{kind}{idx}_label"))?
                .to_ascii_lowercase();
            let whole_page = !label.contains('.');
            (whole_page && chip.has(&format!("{kind}{idx}_input"))).then_some((label, idx))
        })
        .collect()
}

pub(super) fn rails(chip: &Chip, rails: &mut Vec<Rail>, ignored: &mut Vec<String>) {
    let power = labelled(chip, "power");
    let volts = labelled(chip, "in");
    let amps = labelled(chip, "curr");
    // (label, reading): power files, else voltage × current of the same page.
    let mut found: Vec<(String, Reading)> = power
        .iter()
        .map(|(l, i)| {
            (
                l.clone(),
                Reading::Power(chip.attr(&format!("power{i}_input"))),
            )
        })
        .collect();
    for (v, c, p) in volts.iter().filter_map(|(v, vi)| {
        let (c, p) = match v.strip_prefix("vout") {
            Some(page) => (format!("iout{page}"), format!("pout{page}")),
            None if v == "vin" => ("iin".to_string(), "pin".to_string()),
            None => return None,
        };
        amps.get(&c).map(|ci| (vi, ci, p))
    }) {
        if !power.contains_key(&p) {
            let reading = Reading::VoltCurr {
                mv: chip.attr(&format!("in{v}_input")),
                ma: chip.attr(&format!("curr{c}_input")),
            };
            found.push((p, reading));
        }
    }
    if found.is_empty() {
        ignored.push(format!(
            "{} (no pin/pout, no vin×iin or vout×iout)",
            chip.id()
        ));
    }
    let supply = chip.name == SUPPLY;
    for (label, reading) in found {
        let input = label.starts_with("pin");
        let kind = if supply && input {
            RailKind::Input {
                how: Input::Parallel,
                also_zone: false,
            }
        } else {
            RailKind::Sub
        };
        rails.push(Rail {
            chip: chip.id(),
            // `pout1` alone says nothing about whose rail it is
            label: format!("{}_{label}", chip.name),
            reading,
            kind,
        });
    }
}
