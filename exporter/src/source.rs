//! The one interface every energy source implements, so RAPL, hwmon, batteries, Redfish, NVML and
//! the estimator can be active together and the collector treats them alike.

use std::time::{Duration, Instant};

/// What part of the machine a meter covers; decides the metric family it lands in.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Domain {
    /// CPU zones (`package`, `core`, `uncore`, `dram`, `psys`): `node_cpu_*`.
    Cpu,
    /// The whole node (BMC, ACPI power meter): `node_platform_*`.
    Platform,
    /// One GPU: `node_gpu_*{gpu,uuid}`.
    Gpu { index: u32, uuid: String },
}

/// A meter either counts energy (RAPL, hwmon `energy*_input`, Redfish `EnergykWh`) or reports
/// instantaneous power; the collector derives the other from it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MeterValue {
    /// Cumulative joules, monotonic for the life of the source (wrap-around already handled).
    Joules(f64),
    /// Cumulative joules as a polled device measured them at that instant (a BMC's energy
    /// counter): its steps need not line up with collections, so power is the counter's delta
    /// over the time between its own readings, and an interval without a new reading adds no
    /// energy (the next reading brings it) but keeps the last measured power.
    JoulesAt(f64, Instant),
    /// Power right now.
    Watts(f64),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Meter {
    pub domain: Domain,
    /// `package`, `dram`, ... for CPU; `platform` or `gpu` otherwise.
    pub zone: String,
    pub value: MeterValue,
}

/// Node-level battery state (several batteries are summed into one).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Battery {
    /// State of charge, 0..1.
    pub charge_ratio: Option<f64>,
    pub energy_joules: Option<f64>,
    pub capacity_joules: Option<f64>,
    /// Discharge power, ≥ 0 (0 while charging or full).
    pub draw_watts: Option<f64>,
    /// Power flowing into the battery, ≥ 0 (0 when the kernel says it is not charging); `None`
    /// when unknown ([`crate::sources::battery`]).
    pub charge_watts: Option<f64>,
    /// `Discharging`, `Charging`, `Full`, `Not charging`, `Unknown`.
    pub status: String,
}

/// How busy one GPU was over the interval and which processes kept it busy (NVML's utilisation
/// samples). The collector splits that GPU's energy-counter delta with it: the busy share goes to
/// the processes, the rest is the GPU's idle energy (Kepler's CPU model, applied to the GPU).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct GpuUsage {
    /// The GPU's index, as in [`Domain::Gpu`].
    pub gpu: u32,
    /// Share of the interval the GPU was executing anything, 0..1 (`nvmlDeviceGetUtilizationRates`);
    /// `None` when the driver does not say (then the processes' shares summed stand in).
    pub busy: Option<f64>,
    /// (pid, share of the interval that process kept the GPU's SMs busy, 0..1).
    pub processes: Vec<(u32, f64)>,
}

/// A power reading of hardware this node shares with others (a blade enclosure's supplies): true,
/// but not this node's draw, so it never becomes node power.
#[derive(Debug, Clone, PartialEq)]
pub struct SharedMeter {
    /// What it is, e.g. the Redfish chassis id.
    pub name: String,
    pub watts: f64,
}

/// One reading of one source.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sample {
    pub meters: Vec<Meter>,
    pub battery: Option<Battery>,
    /// On mains/AC (`power_supply` `online`, or a battery that is charging).
    pub external_power: Option<bool>,
    /// A budget the hardware itself states (Redfish `PowerLimitWatts`).
    pub budget_watts: Option<f64>,
    pub gpu_usage: Vec<GpuUsage>,
    /// Meters of shared enclosures (exported as their own series).
    pub shared: Vec<SharedMeter>,
    /// What the source read this time, for `top` and the logs (e.g. which Redfish chassis and
    /// resource); `None` keeps the previous description.
    pub detail: Option<String>,
}

/// What a source may look at besides its own files: the node's CPU use this interval (the
/// estimator's input, and what the self-calibration fits against).
#[derive(Debug, Clone, Copy)]
pub struct Context {
    pub now: Instant,
    /// Busy share of all CPUs over the last interval, 0..1 (from `/proc/stat`).
    pub cpu_busy_ratio: Option<f64>,
    /// Mean current CPU frequency over its maximum, where cpufreq is readable.
    pub cpu_freq_ratio: Option<f64>,
}

/// Why a source produced nothing this interval; shown in logs and `top`, and as the `state` label
/// of `exporter_source_up` ([`SourceError::state`]).
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(transparent)]
    Read(#[from] crate::sysfs::ReadError),
    #[error("{0}")]
    Other(String),
    /// The last reading is too old to stand for now (a BMC that stopped answering).
    #[error("{0}")]
    Stale(String),
    /// The device answered but reports no usable power figure.
    #[error("{0}")]
    NoPower(String),
}

/// An error with its whole source chain: libraries' own messages often stop at a summary (aya's
/// `failed to create map ... with code -1`, reqwest's `error sending request`) while the error
/// underneath says why (`Operation not permitted`, `Connection refused`).
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}

impl SourceError {
    /// Short, fixed vocabulary for the `state` label (the full reason goes to logs and `top`).
    pub fn state(&self) -> &'static str {
        match self {
            SourceError::Read(_) | SourceError::Other(_) => "error",
            SourceError::Stale(_) => "stale",
            SourceError::NoPower(_) => "no_power",
        }
    }
}

/// An energy source. `sample` is called once per interval from the collection loop and must not
/// block on the network (Redfish polls in the background and hands over its latest reading).
pub trait Source: Send {
    /// The `source` label value: `rapl`, `hwmon`, `battery`, `redfish`, `gpu`, `estimator`.
    fn name(&self) -> &'static str;
    fn sample(&mut self, ctx: &Context) -> Result<Sample, SourceError>;
    /// Called after every sample with the node's measured CPU/platform watts, so a model can
    /// calibrate itself against real meters. Meters ignore it.
    fn observe_measured(&mut self, _ctx: &Context, _watts: f64) {}
    /// Labels for an `<source>_info` series (the estimator's reference and confidence).
    fn info(&self) -> Option<Vec<(&'static str, String)>> {
        None
    }
    /// A model's calibration error against real meters, watts (the estimator, once it has fitted).
    fn fit_error_watts(&self) -> Option<f64> {
        None
    }
    /// A model's fit against this node's own meter, published for the cluster's PowerModels.
    fn calibration(&self) -> Option<crate::shared_model::CalibrationReport> {
        None
    }
}

/// The latest reading a BMC poller thread left (Redfish, IPMI), if it is fresh enough for the
/// collector, with when it was taken: none yet ⇒ the poller's last error; older than `max_age` ⇒ stale (its series are
/// withdrawn, never kept at their last value), naming the poller's last error.
pub fn fresh_reading<'a, T>(
    latest: &'a Option<(Instant, T)>,
    error: Option<&String>,
    now: Instant,
    max_age: Duration,
) -> Result<(Instant, &'a T), SourceError> {
    let Some((at, r)) = latest else {
        return Err(SourceError::Other(
            error
                .cloned()
                .unwrap_or_else(|| "no reading from the BMC yet".into()),
        ));
    };
    let age = now.saturating_duration_since(*at);
    if age > max_age {
        return Err(SourceError::Stale(format!(
            "last BMC reading is {}s old{}",
            age.as_secs(),
            error.map(|e| format!(": {e}")).unwrap_or_default()
        )));
    }
    Ok((*at, r))
}
