//! The meters: every reading a source hands over, turned into energy deltas and monotonic totals,
//! and one meter picked per zone. Pure state, no I/O: the collection loop reads the sources and
//! feeds the readings in ([`Meters::read`]), so selection, fallback and accumulation are tested
//! here on made-up readings.
//!
//! A figure is either true or absent (DESIGN.md "Failure rules"):
//! - A meter that did not produce a usable reading this interval (its source is down, stale, or
//!   reports no power) is not *fresh*; its series are left out of the snapshot, never shown as 0 W.
//! - One source per zone ([`Meters::select`]): RAPL before hwmon for CPU zones (hwmon's
//!   `amd_energy`/`zenergy` socket counters measure the same package as RAPL), hwmon's ACPI power
//!   meter before Redfish for the platform, and the estimator only while no real CPU or platform
//!   meter is fresh — so node power falls back meter by meter to the estimator, and the series
//!   say which source they come from.
//! - A counter that missed an interval (source down, file unreadable) restarts from a new baseline:
//!   its first delta after the gap would re-count energy the fallback already counted. So does a
//!   counter that went backwards (a driver reload); RAPL's wrap-around is unfolded before that, by
//!   the source ([`crate::counter::WrappingCounter`]).
//! - Energy totals grow only while their meter is the one selected, so a series that comes back
//!   continues where it stopped instead of jumping by what another source already reported.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use crate::snapshot::NodeSeries;
use crate::source::{Domain, Meter, MeterValue};

/// The model; it stands in only while no real meter reports.
pub const ESTIMATOR: &str = "estimator";

/// CPU zones that are parts of `package` (or, for `psys`, the whole SoC): exported, never
/// attributed, so no energy is split twice.
const NESTED_ZONES: [&str; 3] = ["core", "uncore", "psys"];

/// The CPU zones that make up node power where no platform meter reports (NodeWatts in
/// `crds/src/promql.rs` sums the same two). Any other CPU-domain zone — `core`/`uncore`/`psys`,
/// or a board's sub-rail read through hwmon (`vdd_soc`, `vdd_cpu_gpu_cv`) — is shown but never
/// attributed and never stands for the node, so a rail is not counted on top of its input.
fn node_cpu_zone(zone: &str) -> bool {
    zone == "package" || zone == "dram"
}

/// Rank of `source` for a meter of `domain` (lower wins); `None`: not eligible now.
/// `real_meter`: some real CPU or platform meter is fresh this interval.
fn rank(source: &str, domain: &Domain, real_meter: bool) -> Option<usize> {
    match domain {
        Domain::Cpu => match source {
            "rapl" => Some(0),
            "hwmon" => Some(1),
            ESTIMATOR if real_meter => None,
            ESTIMATOR => Some(3),
            _ => Some(2),
        },
        // The ACPI power meter is local and read every interval; a BMC is polled.
        Domain::Platform => match source {
            "hwmon" => Some(0),
            "redfish" => Some(1),
            _ => Some(2),
        },
        Domain::Gpu { .. } => Some(0),
    }
}

#[derive(Debug, Default)]
struct MeterState {
    last_source_joules: Option<f64>,
    /// When a polled counter ([`MeterValue::JoulesAt`]) was last measured.
    last_measured: Option<Instant>,
    /// A polled counter has a measured power since its last baseline.
    has_rate: bool,
    /// Interval of the last reading; a counter read in the one before is contiguous.
    last_read: u64,
    delta: f64,
    watts: f64,
    fresh: bool,
    /// Whether it was fresh in the previous interval (else another source may have stood in).
    was_fresh: bool,
    selected: bool,
    joules_total: f64,
    active_total: f64,
    idle_total: f64,
    active_watts: f64,
    idle_watts: f64,
}

impl MeterState {
    /// Takes this interval's reading. A counter's first reading, a counter that went backwards
    /// (a reset), and a counter that was not read in the previous interval are baselines: their
    /// delta would cover time this interval does not (or the fallback already counted).
    fn read(&mut self, value: MeterValue, gen: u64, dt: Option<f64>, now: Instant) {
        let contiguous = self.last_read + 1 == gen;
        self.last_read = gen;
        match value {
            MeterValue::Joules(j) if j.is_finite() => match self.last_source_joules.replace(j) {
                Some(last) if j >= last && contiguous => {
                    self.delta = j - last;
                    self.fresh = dt.is_some();
                    self.watts = dt.map(|dt| self.delta / dt).unwrap_or(0.0);
                }
                _ => {}
            },
            MeterValue::JoulesAt(j, at) if j.is_finite() => {
                // the previous collection's start
                let prev = dt.map(|dt| now - Duration::from_secs_f64(dt));
                self.read_polled(j, at, contiguous, prev)
            }
            MeterValue::Watts(w) if w.is_finite() => {
                self.watts = w.max(0.0);
                self.delta = self.watts * dt.unwrap_or(0.0);
                self.fresh = true;
            }
            _ => {}
        }
    }

    /// A polled counter: power over the device's own reading times; an interval without a new
    /// reading adds nothing (the next brings it) and keeps the last measured power. After an
    /// interval this meter did not stand for (another source may have), a new reading counts
    /// only what it measured after the previous collection (`since`), at its measured power.
    fn read_polled(&mut self, j: f64, at: Instant, contiguous: bool, since: Option<Instant>) {
        let prev = self.last_source_joules.replace(j);
        let prev_at = self.last_measured.replace(at);
        let (Some(last), Some(last_at)) = (prev, prev_at) else {
            self.has_rate = false;
            return;
        };
        if j < last || !contiguous {
            self.has_rate = false;
            return;
        }
        let span = at.saturating_duration_since(last_at).as_secs_f64();
        if span > 0.0 {
            self.watts = (j - last) / span;
            self.delta = match since {
                Some(_) if self.was_fresh => j - last,
                Some(since) => {
                    self.watts
                        * at.saturating_duration_since(since.max(last_at))
                            .as_secs_f64()
                }
                None => 0.0,
            };
            self.has_rate = true;
        }
        self.fresh = self.has_rate && since.is_some();
    }
}

/// Every meter ever read, by (source, domain, zone), with its reading state and totals. Its
/// methods keep the invariants: one selected meter per (domain, zone), totals that only grow and
/// only while selected.
#[derive(Debug, Default)]
pub struct Meters {
    map: BTreeMap<(&'static str, Domain, String), MeterState>,
}

impl Meters {
    /// Starts an interval: no meter is fresh until it is read again.
    pub fn begin_interval(&mut self) {
        for m in self.map.values_mut() {
            m.was_fresh = m.fresh;
            m.fresh = false;
            m.delta = 0.0;
        }
    }

    /// One reading of `source`'s meter in interval `gen`; `dt`: seconds since the previous
    /// collection (`None` on the first), `now`: this collection's start.
    pub fn read(
        &mut self,
        source: &'static str,
        meter: Meter,
        gen: u64,
        dt: Option<f64>,
        now: Instant,
    ) {
        self.map
            .entry((source, meter.domain, meter.zone))
            .or_default()
            .read(meter.value, gen, dt, now);
    }

    /// Picks one fresh meter per zone (see the module docs and [`rank`]).
    pub fn select(&mut self) {
        // A sub-rail alone (hwmon zones of a board whose input is unknown or unreadable) does
        // not measure the node: the estimator still stands in for it.
        let real_meter = self.map.iter().any(|((s, d, z), m)| {
            m.fresh
                && *s != ESTIMATOR
                && (*d == Domain::Platform || (*d == Domain::Cpu && node_cpu_zone(z)))
        });
        let mut best: HashMap<(&Domain, &str), (usize, &'static str)> = HashMap::new();
        for ((source, domain, zone), m) in &self.map {
            let Some(r) = m.fresh.then(|| rank(source, domain, real_meter)).flatten() else {
                continue;
            };
            let e = best.entry((domain, zone.as_str())).or_insert((r, source));
            if r < e.0 {
                *e = (r, source);
            }
        }
        let winners: Vec<(&'static str, Domain, String)> = best
            .into_iter()
            .map(|((d, z), (_, s))| (s, d.clone(), z.to_string()))
            .collect();
        for m in self.map.values_mut() {
            m.selected = false;
        }
        for key in winners {
            if let Some(m) = self.map.get_mut(&key) {
                m.selected = true;
            }
        }
    }

    /// Adds the selected meters' deltas to their totals, split active/idle by the busy ratio.
    pub fn accumulate(&mut self, busy: Option<f64>) {
        let b = busy.unwrap_or(0.0);
        for ((_, domain, _), m) in self.map.iter_mut().filter(|(_, m)| m.selected) {
            m.joules_total += m.delta;
            if !matches!(domain, Domain::Gpu { .. }) {
                m.active_total += m.delta * b;
                m.idle_total += m.delta * (1.0 - b);
                m.active_watts = m.watts * b;
                m.idle_watts = m.watts * (1.0 - b);
            }
        }
    }

    /// Whether any meter of `source` is selected this interval (the source is `in_use`).
    pub fn selects_from(&self, source: &str) -> bool {
        self.map
            .iter()
            .any(|((s, _, _), m)| *s == source && m.selected)
    }

    fn selected(&self) -> impl Iterator<Item = (&(&'static str, Domain, String), &MeterState)> {
        self.map.iter().filter(|(_, m)| m.selected)
    }

    /// Platform meter if selected, else CPU package + dram, plus GPUs.
    pub fn node_power(&self) -> (Option<f64>, Option<&'static str>) {
        if let Some(((source, _, _), m)) = self
            .selected()
            .find(|((_, d, _), _)| *d == Domain::Platform)
        {
            return (Some(m.watts), Some(source));
        }
        let cpu: Vec<(&'static str, f64)> = self
            .selected()
            .filter(|((_, d, z), _)| *d == Domain::Cpu && node_cpu_zone(z))
            .map(|((s, _, _), m)| (*s, m.watts))
            .collect();
        let Some(source) = cpu.first().map(|(s, _)| *s) else {
            return (None, None);
        };
        let gpu: f64 = self
            .selected()
            .filter(|((_, d, _), _)| matches!(d, Domain::Gpu { .. }))
            .map(|(_, m)| m.watts)
            .sum();
        (
            Some(cpu.iter().map(|(_, w)| w).sum::<f64>() + gpu),
            Some(source),
        )
    }

    /// CPU package + dram watts from selected real meters (not the estimator), for calibration.
    pub fn measured_cpu_watts(&self) -> Option<f64> {
        let w: Vec<f64> = self
            .selected()
            .filter(|((s, d, z), _)| *s != ESTIMATOR && *d == Domain::Cpu && node_cpu_zone(z))
            .map(|(_, m)| m.watts)
            .collect();
        (!w.is_empty()).then(|| w.iter().sum())
    }

    /// The zones attribution splits: selected CPU zones (not the nested ones), else the selected
    /// platform meter. `(zone, source, joules this interval)`.
    pub fn attributable_zones(&self) -> Vec<(String, &'static str, f64)> {
        let pick = |want: &dyn Fn(&Domain, &str) -> bool| -> Vec<(String, &'static str, f64)> {
            self.selected()
                .filter(|((_, d, z), _)| want(d, z))
                .map(|((s, _, z), m)| (z.clone(), *s, m.delta))
                .collect()
        };
        let cpu = pick(&|d, z| *d == Domain::Cpu && !NESTED_ZONES.contains(&z) && node_cpu_zone(z));
        if cpu.is_empty() {
            pick(&|d, _| *d == Domain::Platform)
        } else {
            cpu
        }
    }

    /// The selected GPUs' energy this interval: `(index, source, joules)`.
    pub fn selected_gpus(&self) -> Vec<(u32, &'static str, f64)> {
        self.selected()
            .filter_map(|((s, d, _), m)| match d {
                Domain::Gpu { index, .. } => Some((*index, *s, m.delta)),
                _ => None,
            })
            .collect()
    }

    /// The selected meters as node series.
    pub fn series(&self) -> Vec<NodeSeries> {
        self.selected()
            .map(|((source, domain, zone), m)| NodeSeries {
                source,
                domain: domain.clone(),
                zone: zone.clone(),
                joules_total: m.joules_total,
                watts: m.watts,
                active_joules_total: m.active_total,
                idle_joules_total: m.idle_total,
                active_watts: m.active_watts,
                idle_watts: m.idle_watts,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::counter::WrappingCounter;
    use MeterValue::{Joules, JoulesAt, Watts};

    type Reading = (&'static str, Domain, &'static str, MeterValue);

    fn cpu(source: &'static str, zone: &'static str, v: MeterValue) -> Reading {
        (source, Domain::Cpu, zone, v)
    }

    fn platform(source: &'static str, v: MeterValue) -> Reading {
        (source, Domain::Platform, "platform", v)
    }

    /// One collection as the loop runs it, starting at `now`: interval `gen` (the first has no
    /// time delta, then 1 s apart), the readings, selection, accumulation at `busy`.
    fn interval_at(
        m: &mut Meters,
        gen: u64,
        readings: &[Reading],
        busy: Option<f64>,
        now: Instant,
    ) {
        let dt = (gen > 1).then_some(1.0);
        m.begin_interval();
        for (source, domain, zone, value) in readings {
            let meter = Meter {
                domain: domain.clone(),
                zone: zone.to_string(),
                value: *value,
            };
            m.read(source, meter, gen, dt, now);
        }
        m.select();
        m.accumulate(busy);
    }

    fn interval(m: &mut Meters, gen: u64, readings: &[Reading], busy: Option<f64>) {
        interval_at(m, gen, readings, busy, Instant::now())
    }

    /// (source, zone, joules total) of the selected meters.
    fn selected(m: &Meters) -> Vec<(&'static str, String, f64)> {
        m.series()
            .into_iter()
            .map(|s| (s.source, s.zone, s.joules_total))
            .collect()
    }

    fn sources_of(m: &Meters, zone: &str) -> Vec<&'static str> {
        m.series()
            .into_iter()
            .filter(|s| s.zone == zone)
            .map(|s| s.source)
            .collect()
    }

    #[test]
    fn cpu_zones_prefer_rapl_then_hwmon_then_others_and_the_estimator_last() {
        let mut m = Meters::default();
        let all = |j: f64| {
            vec![
                cpu(ESTIMATOR, "package", Watts(30.0)),
                cpu("hwmon", "package", Joules(j)),
                cpu("other", "package", Joules(j)),
                cpu("rapl", "package", Joules(j)),
            ]
        };
        interval(&mut m, 1, &all(0.0), None);
        assert_eq!(
            sources_of(&m, "package"),
            [ESTIMATOR],
            "the counters' first readings are baselines: the estimator stands in meanwhile"
        );
        interval(&mut m, 2, &all(10.0), None);
        assert_eq!(sources_of(&m, "package"), ["rapl"]);
        // RAPL gone: hwmon stands in; then a third kind; then only the estimator.
        let without = |gone: &[&str], j: f64| -> Vec<Reading> {
            all(j)
                .into_iter()
                .filter(|r| !gone.contains(&r.0))
                .collect()
        };
        interval(&mut m, 3, &without(&["rapl"], 20.0), None);
        assert_eq!(sources_of(&m, "package"), ["hwmon"]);
        interval(&mut m, 4, &without(&["rapl", "hwmon"], 30.0), None);
        assert_eq!(sources_of(&m, "package"), ["other"]);
        interval(&mut m, 5, &without(&["rapl", "hwmon", "other"], 40.0), None);
        assert_eq!(sources_of(&m, "package"), [ESTIMATOR]);
        assert_eq!(m.node_power(), (Some(30.0), Some(ESTIMATOR)));
        assert_eq!(
            m.measured_cpu_watts(),
            None,
            "the estimator is no measurement"
        );
    }

    #[test]
    fn platform_prefers_the_local_meter_then_redfish_then_a_bmc() {
        let mut m = Meters::default();
        let read = |m: &mut Meters, gen, sources: &[&'static str]| {
            let r: Vec<Reading> = sources.iter().map(|s| platform(s, Watts(100.0))).collect();
            interval(m, gen, &r, None);
        };
        read(&mut m, 1, &["ipmi", "redfish", "hwmon"]);
        assert_eq!(sources_of(&m, "platform"), ["hwmon"]);
        read(&mut m, 2, &["ipmi", "redfish"]);
        assert_eq!(sources_of(&m, "platform"), ["redfish"]);
        read(&mut m, 3, &["ipmi"]);
        assert_eq!(sources_of(&m, "platform"), ["ipmi"]);
        assert!(m.selects_from("ipmi") && !m.selects_from("redfish"));
    }

    #[test]
    fn the_estimator_stands_in_beside_a_sub_rail_but_not_beside_a_platform_meter() {
        let mut m = Meters::default();
        let est = || cpu(ESTIMATOR, "package", Watts(12.0));
        interval(
            &mut m,
            1,
            &[est(), cpu("hwmon", "vdd_soc", Watts(2.0))],
            None,
        );
        assert_eq!(sources_of(&m, "package"), [ESTIMATOR]);
        assert_eq!(sources_of(&m, "vdd_soc"), ["hwmon"], "the rail is shown");
        interval(&mut m, 2, &[est(), platform("hwmon", Watts(6.0))], None);
        assert!(sources_of(&m, "package").is_empty());
        assert_eq!(m.node_power(), (Some(6.0), Some("hwmon")));
    }

    #[test]
    fn a_counter_that_goes_backwards_or_misses_an_interval_restarts_from_a_baseline() {
        let mut m = Meters::default();
        let pkg = |j| [cpu("rapl", "package", Joules(j))];
        interval(&mut m, 1, &pkg(100.0), None);
        interval(&mut m, 2, &pkg(110.0), None);
        assert_eq!(selected(&m), [("rapl", "package".into(), 10.0)]);
        // a driver reload: the counter restarts near 0; that reading is a baseline, not -105 J
        interval(&mut m, 3, &pkg(5.0), None);
        assert!(selected(&m).is_empty(), "not fresh: withdrawn, not 0 W");
        interval(&mut m, 4, &pkg(8.0), None);
        assert_eq!(selected(&m), [("rapl", "package".into(), 13.0)]);
        // interval 5 unread (source down); the reading after the gap is a baseline again
        interval(&mut m, 5, &[], None);
        assert!(selected(&m).is_empty());
        interval(&mut m, 6, &pkg(50.0), None);
        assert!(
            selected(&m).is_empty(),
            "the 42 J across the gap are not counted"
        );
        interval(&mut m, 7, &pkg(52.0), None);
        assert_eq!(selected(&m), [("rapl", "package".into(), 15.0)]);
    }

    /// RAPL's `energy_uj` wraps at `max_energy_range_uj` (torvalds/linux
    /// `Documentation/power/powercap/powercap.rst`); the source unfolds it, so the meter sees a
    /// total that keeps growing and counts the energy across the wrap.
    #[test]
    fn a_wrapping_counter_unfolded_by_the_source_accumulates_across_the_wrap() {
        let max = 262_143_328_850u64;
        let mut counter = WrappingCounter::new(max);
        let mut m = Meters::default();
        for (gen, raw) in [(1, max - 3_000_000), (2, max - 1_000_000), (3, 1_000_000)] {
            let joules = counter.update(raw) as f64 / 1e6;
            interval(&mut m, gen, &[cpu("rapl", "package", Joules(joules))], None);
        }
        let total = selected(&m)[0].2;
        assert!(
            (total - 4.0).abs() < 1e-9,
            "2 J + 2 J across the wrap: {total}"
        );
    }

    #[test]
    fn totals_grow_only_while_selected_and_resume_where_they_stopped() {
        let mut m = Meters::default();
        let est = || cpu(ESTIMATOR, "package", Watts(20.0));
        let rapl = |j| cpu("rapl", "package", Joules(j));
        let est_total = |m: &Meters| {
            m.series()
                .iter()
                .find(|s| s.source == ESTIMATOR)
                .map(|s| (s.joules_total, s.active_joules_total, s.idle_joules_total))
        };
        let busy = Some(0.5);
        interval(&mut m, 1, &[est()], busy);
        interval(&mut m, 2, &[est()], busy);
        assert_eq!(
            est_total(&m),
            Some((20.0, 10.0, 10.0)),
            "busy 0.5 splits it"
        );
        // RAPL's first reading is a baseline: the estimator still stands in for that interval
        interval(&mut m, 3, &[est(), rapl(0.0)], busy);
        assert_eq!(est_total(&m), Some((40.0, 20.0, 20.0)));
        interval(&mut m, 4, &[est(), rapl(7.0)], busy);
        assert_eq!(selected(&m), [("rapl", "package".into(), 7.0)]);
        // RAPL goes: the estimator continues from its 40 J, not from 40 J + the 20 J it
        // estimated while RAPL counted
        interval(&mut m, 5, &[est()], busy);
        assert_eq!(est_total(&m), Some((60.0, 30.0, 30.0)));
    }

    /// A BMC's energy counter polled on its own clock: power over its own reading times, energy
    /// counted once — after an interval it did not stand for, only what it measured since the
    /// previous collection; an interval without a new reading adds nothing and keeps the power.
    #[test]
    fn a_polled_counter_counts_its_own_readings_not_the_collections() {
        let t0 = Instant::now();
        let t = |s: f64| t0 + Duration::from_secs_f64(s);
        let mut m = Meters::default();
        let mut at = |gen: u64, j: f64, measured: f64| {
            let r = [platform("redfish", JoulesAt(j, t(measured)))];
            interval_at(&mut m, gen, &r, None, t(gen as f64));
            m.series().first().map(|s| (s.joules_total, s.watts))
        };
        assert_eq!(at(1, 1000.0, 0.5), None, "first reading: no rate, absent");
        assert_eq!(at(2, 1000.0, 0.5), None, "no new reading yet");
        // 200 J over its 2 s: 100 W; counted only after the previous collection (at 2 s)
        assert_eq!(at(3, 1200.0, 2.5), Some((50.0, 100.0)));
        assert_eq!(at(4, 1300.0, 3.5), Some((150.0, 100.0)));
        assert_eq!(
            at(5, 1300.0, 3.5),
            Some((150.0, 100.0)),
            "nothing new: kept"
        );
    }

    #[test]
    fn node_power_is_the_platform_meter_else_package_and_dram_plus_gpus() {
        let mut m = Meters::default();
        let gpu = || {
            let d = Domain::Gpu {
                index: 0,
                uuid: "GPU-0".into(),
            };
            ("gpu", d, "gpu", Watts(50.0))
        };
        let readings = [
            cpu("hwmon", "package", Watts(30.0)),
            cpu("hwmon", "dram", Watts(5.0)),
            cpu("hwmon", "core", Watts(20.0)),
            gpu(),
        ];
        interval(&mut m, 1, &readings, None);
        assert_eq!(
            m.node_power(),
            (Some(85.0), Some("hwmon")),
            "core is in package"
        );
        assert_eq!(m.measured_cpu_watts(), Some(35.0));
        let zones: Vec<String> = m.attributable_zones().into_iter().map(|z| z.0).collect();
        assert_eq!(
            zones,
            ["dram", "package"],
            "nested zones are never attributed"
        );
        assert_eq!(m.selected_gpus().len(), 1);
        interval(&mut m, 2, &[gpu(), platform("redfish", Watts(400.0))], None);
        assert_eq!(m.node_power(), (Some(400.0), Some("redfish")));
        let zones: Vec<String> = m.attributable_zones().into_iter().map(|z| z.0).collect();
        assert_eq!(
            zones,
            ["platform"],
            "no CPU zone: the platform meter is split"
        );
        interval(&mut m, 3, &[], None);
        assert_eq!(m.node_power(), (None, None), "no meter: unknown, not 0 W");
    }
}
