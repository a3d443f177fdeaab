//! NVIDIA GPUs through NVML (cargo feature `gpu`). `libnvidia-ml.so` is loaded at run time by
//! `nvml-wrapper`, so a build with the feature still runs — and says why there is no GPU source —
//! on machines without NVIDIA software.
//!
//! Per GPU: the energy counter (`nvmlDeviceGetTotalEnergyConsumption`, Volta and newer) or, on
//! older parts, instantaneous power; the enforced power limit goes to the node budget only if
//! no other source states one. Who used it: the device's utilisation
//! (`nvmlDeviceGetUtilizationRates`, share of time a kernel ran) and each process's SM share from
//! `nvmlDeviceGetProcessUtilization` (samples newer than the last ones seen, averaged per process).
//! The collector splits the counter's delta with them ([`crate::attribution::split_gpu`]): the
//! processes get their SM share of the energy, the time the GPU ran nothing is idle energy and
//! goes to no pod.

use nvml_wrapper::Nvml;

use crate::source::{Context, Domain, GpuUsage, Meter, MeterValue, Sample, Source, SourceError};

pub struct Gpu {
    nvml: Nvml,
    count: u32,
    /// Last process-utilisation timestamp per GPU (µs), so each sample covers only new data.
    last_seen: Vec<u64>,
}

fn err(what: &str, e: nvml_wrapper::error::NvmlError) -> SourceError {
    SourceError::Other(format!("NVML {what}: {e}"))
}

impl Gpu {
    /// `Ok(None)` when there is no NVIDIA driver (logged at info: most edge nodes have none) or
    /// no GPU; `Err` when NVML is there but fails.
    pub fn discover() -> Result<Option<Self>, SourceError> {
        let nvml = match Nvml::init() {
            Ok(n) => n,
            Err(e) => {
                tracing::info!(reason = %e, "no NVIDIA GPU source: NVML not available (NVIDIA driver and libnvidia-ml.so.1 needed)");
                return Ok(None);
            }
        };
        let count = nvml.device_count().map_err(|e| err("device count", e))?;
        Ok((count > 0).then(|| Self {
            nvml,
            count,
            last_seen: vec![0; count as usize],
        }))
    }
}

/// One GPU's usage from NVML's numbers: `busy_percent` from the device's utilisation rates,
/// `samples` as (pid, SM utilisation %) — several samples of one process are averaged.
pub fn usage_from_samples(gpu: u32, busy_percent: Option<u32>, samples: &[(u32, u32)]) -> GpuUsage {
    let mut per_pid: Vec<(u32, u64, u64)> = Vec::new();
    for (pid, util) in samples {
        match per_pid.iter_mut().find(|(p, ..)| p == pid) {
            Some(e) => {
                e.1 += u64::from(*util);
                e.2 += 1;
            }
            None => per_pid.push((*pid, u64::from(*util), 1)),
        }
    }
    GpuUsage {
        gpu,
        busy: busy_percent.map(|p| (f64::from(p) / 100.0).clamp(0.0, 1.0)),
        processes: per_pid
            .into_iter()
            .map(|(pid, sum, n)| (pid, (sum as f64 / n as f64 / 100.0).clamp(0.0, 1.0)))
            .filter(|(_, share)| *share > 0.0)
            .collect(),
    }
}

impl Source for Gpu {
    fn name(&self) -> &'static str {
        "gpu"
    }

    fn sample(&mut self, _ctx: &Context) -> Result<Sample, SourceError> {
        let mut sample = Sample::default();
        for i in 0..self.count {
            let dev = self.nvml.device_by_index(i).map_err(|e| err("device", e))?;
            let uuid = dev.uuid().unwrap_or_default();
            let value = match dev.total_energy_consumption() {
                Ok(mj) => MeterValue::Joules(mj as f64 / 1e3),
                Err(_) => {
                    MeterValue::Watts(dev.power_usage().map(|mw| mw as f64 / 1e3).map_err(|e| {
                        err(
                            &format!("GPU {i}: neither energy nor power readable; power"),
                            e,
                        )
                    })?)
                }
            };
            sample.meters.push(Meter {
                domain: Domain::Gpu { index: i, uuid },
                zone: "gpu".into(),
                value,
            });
            let busy = dev.utilization_rates().ok().map(|u| u.gpu);
            // No process samples (NotFound when nothing ran since `last_seen`) is an empty list.
            let stats = dev
                .process_utilization_stats(self.last_seen[i as usize])
                .unwrap_or_default();
            if let Some(max) = stats.iter().map(|s| s.timestamp).max() {
                self.last_seen[i as usize] = max;
            }
            let per_pid: Vec<(u32, u32)> = stats.iter().map(|s| (s.pid, s.sm_util)).collect();
            sample.gpu_usage.push(usage_from_samples(i, busy, &per_pid));
        }
        Ok(sample)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpu_usage_from_samples() {
        let u = usage_from_samples(1, Some(70), &[(10, 60), (11, 20), (10, 40), (12, 0)]);
        assert_eq!(u.gpu, 1);
        assert_eq!(u.busy, Some(0.7));
        assert_eq!(
            u.processes,
            vec![(10, 0.5), (11, 0.2)],
            "averaged, idle ones left out"
        );
        assert_eq!(usage_from_samples(0, None, &[]).processes, vec![]);
    }

    /// Without NVIDIA software there is simply no GPU source; the exporter does not fail.
    #[test]
    fn gpu_discovery_without_nvml_is_not_an_error() {
        let has_nvml = [
            "/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1",
            "/usr/lib64/libnvidia-ml.so.1",
        ]
        .iter()
        .any(|p| std::path::Path::new(p).exists());
        match Gpu::discover() {
            Ok(None) if !has_nvml => {}
            Ok(found) => eprintln!(
                "NVML present: {} GPU source",
                if found.is_some() { "a" } else { "no" }
            ),
            Err(e) => assert!(has_nvml, "no NVML here, yet: {e}"),
        }
    }
}
