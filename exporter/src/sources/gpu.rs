//! NVIDIA GPUs through NVML (cargo feature `gpu`). `libnvidia-ml.so` is loaded at run time by
//! `nvml-wrapper`, so a build with the feature still runs — and says why there is no GPU source —
//! on machines without NVIDIA software.
//!
//! Per GPU: the energy counter (`nvmlDeviceGetTotalEnergyConsumption`, Volta and newer) or, on
//! older parts, instantaneous power; the enforced power limit goes to the node budget only if
//! no other source states one. Per process: the GPU's power split by each process's SM
//! utilisation share (`nvmlDeviceGetProcessUtilization`), the NVML counterpart of CPU time.

use nvml_wrapper::Nvml;

use crate::source::{Context, Domain, GpuProcess, Meter, MeterValue, Sample, Source, SourceError};

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

/// Splits `watts` of one GPU by SM utilisation; processes with no utilisation get nothing.
pub fn split_by_utilisation(gpu: u32, watts: f64, samples: &[(u32, u32)]) -> Vec<GpuProcess> {
    let total: u64 = samples.iter().map(|(_, u)| *u as u64).sum();
    if total == 0 || !watts.is_finite() {
        return Vec::new();
    }
    samples
        .iter()
        .filter(|(_, u)| *u > 0)
        .map(|(pid, u)| GpuProcess {
            pid: *pid,
            gpu,
            watts: watts * *u as f64 / total as f64,
        })
        .collect()
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
            let power_w = dev.power_usage().map(|mw| mw as f64 / 1e3).ok();
            let value = match dev.total_energy_consumption() {
                Ok(mj) => MeterValue::Joules(mj as f64 / 1e3),
                Err(_) => MeterValue::Watts(power_w.ok_or_else(|| {
                    SourceError::Other(format!("GPU {i}: neither energy nor power readable"))
                })?),
            };
            sample.meters.push(Meter {
                domain: Domain::Gpu { index: i, uuid },
                zone: "gpu".into(),
                value,
            });
            if let Some(w) = power_w {
                let stats = dev
                    .process_utilization_stats(self.last_seen[i as usize])
                    .unwrap_or_default();
                if let Some(max) = stats.iter().map(|s| s.timestamp).max() {
                    self.last_seen[i as usize] = max;
                }
                let per_pid: Vec<(u32, u32)> = stats.iter().map(|s| (s.pid, s.sm_util)).collect();
                sample
                    .gpu_processes
                    .extend(split_by_utilisation(i, w, &per_pid));
            }
        }
        Ok(sample)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpu_split_conserves_power() {
        let v = split_by_utilisation(0, 300.0, &[(10, 60), (11, 30), (12, 0)]);
        assert_eq!(v.len(), 2);
        assert!((v.iter().map(|p| p.watts).sum::<f64>() - 300.0).abs() < 1e-9);
        assert!((v[0].watts - 200.0).abs() < 1e-9);
        assert!(split_by_utilisation(0, 300.0, &[]).is_empty());
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
