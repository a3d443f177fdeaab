//! The cluster side of shared power models: the PowerModels this node watches and the
//! estimator that uses them.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use edgewatt_crds::power_model::{ModelKey, PowerModel};

use super::{CalibrationReport, ModelSource};
use crate::estimator::{Estimator, LoadCurve, LoadCurveEra};
use crate::source::{Context, Domain, Meter, MeterValue, Sample, Source, SourceError};

/// The PowerModels this exporter has seen (filled by [`start_watch`], read every interval).
#[derive(Clone, Default)]
pub struct ModelBook(Arc<RwLock<Vec<PowerModel>>>);

impl ModelBook {
    pub fn replace(&self, models: Vec<PowerModel>) {
        if let Ok(mut m) = self.0.write() {
            *m = models;
        }
    }

    /// The usable model for `key` at `now`, or why there is none (for the log).
    pub fn find(
        &self,
        key: &ModelKey,
        now: chrono::DateTime<chrono::Utc>,
        max_age: Duration,
    ) -> Result<(f64, f64, String), String> {
        let models = self
            .0
            .read()
            .map_err(|_| "model book poisoned".to_string())?;
        let m = models
            .iter()
            .find(|m| m.spec.key() == *key)
            .ok_or_else(|| {
                "no PowerModel for this CPU model, board and thread count".to_string()
            })?;
        m.usable(now, max_age)
            .map_err(|e| format!("PowerModel {}: {e}", kube::ResourceExt::name_any(m)))?;
        Ok((
            m.spec.idle_watts,
            m.spec.dynamic_watts,
            kube::ResourceExt::name_any(m),
        ))
    }
}

/// The key of the PowerModel that fits this node.
pub fn key_of(est: &Estimator, board: &str) -> ModelKey {
    let era = LoadCurveEra::of(&est.cpu().model_name);
    ModelKey {
        cpu_model: est.cpu().model_name.clone(),
        board: board.to_string(),
        threads: est.cpu().threads,
        curve: match era {
            LoadCurveEra::Legacy => "legacy",
            LoadCurveEra::Modern => "modern",
        }
        .to_string(),
    }
}

/// The estimator with the cluster's models as a further input. Named `estimator` like the one it
/// wraps, so the collector's fallback rules (estimator last, only while no meter reports) hold.
pub struct SharedEstimator {
    inner: Estimator,
    key: ModelKey,
    curve: LoadCurve,
    book: Option<ModelBook>,
    max_age: Duration,
    source: ModelSource,
    /// Why no cluster model is used, as last logged (logged on change only).
    last_reason: Option<String>,
}

impl SharedEstimator {
    /// `book`: None when shared models are off (`--power-models off`, or no cluster).
    pub fn new(inner: Estimator, board: &str, book: Option<ModelBook>, max_age: Duration) -> Self {
        let curve = LoadCurve::for_cpu(&inner.cpu().model_name);
        let key = key_of(&inner, board);
        let source = if inner.fit().is_usable() {
            ModelSource::Node
        } else {
            ModelSource::Reference
        };
        Self {
            inner,
            key,
            curve,
            book,
            max_age,
            source,
            last_reason: None,
        }
    }

    pub fn key(&self) -> &ModelKey {
        &self.key
    }

    pub fn model_source(&self) -> ModelSource {
        self.source
    }

    /// Watts at busy ratio `u` at `now`, and where they came from.
    pub fn estimate_at(
        &mut self,
        u: f64,
        now: chrono::DateTime<chrono::Utc>,
    ) -> (f64, ModelSource) {
        if self.inner.fit().is_usable() {
            return (self.inner.estimate(u), ModelSource::Node);
        }
        let found = match &self.book {
            // A VM's vCPUs are a share of a host it cannot see: a bare-metal model of the same
            // CPU would count the whole part.
            _ if self.inner.cpu().hypervisor => {
                Err("a VM does not use bare-metal power models".to_string())
            }
            Some(book) => book.find(&self.key, now, self.max_age),
            None => Err("shared power models are off".to_string()),
        };
        match found {
            Ok((idle, dynamic, name)) => {
                if self.last_reason.is_some() || self.source != ModelSource::Cluster {
                    tracing::info!(model = %name, idle_watts = idle, dynamic_watts = dynamic, "estimator: using the cluster's PowerModel for this CPU instead of the reference curve");
                }
                self.last_reason = None;
                (
                    (idle + dynamic * self.curve.shape(u)).max(0.0),
                    ModelSource::Cluster,
                )
            }
            Err(why) => {
                if self.last_reason.as_deref() != Some(why.as_str()) {
                    tracing::info!(reason = %why, "estimator: no usable cluster PowerModel; using the reference curve");
                    self.last_reason = Some(why);
                }
                (self.inner.estimate(u), ModelSource::Reference)
            }
        }
    }

    /// The calibration to publish: only a fit against this node's own meter.
    pub fn calibration(&self) -> Option<CalibrationReport> {
        let fit = self.inner.fit();
        if !fit.is_usable() {
            return None;
        }
        Some(CalibrationReport {
            labels: vec![
                ("cpu_model", self.key.cpu_model.clone()),
                ("board", self.key.board.clone()),
                ("threads", self.key.threads.to_string()),
                ("curve", self.key.curve.clone()),
            ],
            idle_watts: fit.theta[0],
            dynamic_watts: fit.theta[1],
            samples: fit.samples,
            fit_error_watts: fit.rmse,
        })
    }
}

impl Source for SharedEstimator {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn sample(&mut self, ctx: &Context) -> Result<Sample, SourceError> {
        let Some(u) = ctx.cpu_busy_ratio else {
            return Ok(Sample::default());
        };
        let (watts, source) = self.estimate_at(u, chrono::Utc::now());
        self.source = source;
        Ok(Sample {
            meters: vec![Meter {
                domain: Domain::Cpu,
                zone: "package".into(),
                value: MeterValue::Watts(watts),
            }],
            ..Sample::default()
        })
    }

    fn observe_measured(&mut self, ctx: &Context, watts: f64) {
        self.inner.observe_measured(ctx, watts);
        if self.inner.fit().is_usable() {
            self.source = ModelSource::Node;
        }
    }

    fn info(&self) -> Option<Vec<(&'static str, String)>> {
        let mut labels = self.inner.info_labels();
        labels.push(("model_source", self.source.as_str().to_string()));
        Some(labels)
    }

    fn fit_error_watts(&self) -> Option<f64> {
        self.inner.fit_error_watts()
    }

    fn calibration(&self) -> Option<CalibrationReport> {
        SharedEstimator::calibration(self)
    }
}

/// Starts the PowerModel watch on its own thread (like the pod watch) and returns the book it
/// fills; None when off. RBAC: get/list/watch on `powermodels.edgewatt.io`, nothing else.
pub fn start_watch(enabled: bool) -> Option<ModelBook> {
    if !enabled {
        return None;
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let book = ModelBook::default();
    let filled = book.clone();
    let spawned = std::thread::Builder::new()
        .name("powermodel-watch".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => return tracing::warn!(error = %e, "cannot start the PowerModel watch"),
            };
            rt.block_on(async move {
                match kube::Client::try_default().await {
                    Ok(client) => watch(client, filled).await,
                    Err(e) => tracing::warn!(error = %e, "cannot build a Kubernetes client; no shared power models"),
                }
            });
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the PowerModel watch thread");
        return None;
    }
    Some(book)
}

/// Mirrors every PowerModel into `book` until the server goes away. Errors (CRD not installed,
/// permission missing) are retried with backoff; the book keeps what it had, and models age out.
pub async fn watch(client: kube::Client, book: ModelBook) {
    use futures::StreamExt;
    use kube::runtime::{reflector, watcher, WatchStreamExt};

    let api: kube::Api<PowerModel> = kube::Api::all(client);
    let (reader, writer) = reflector::store();
    let mut stream = reflector(writer, watcher(api, watcher::Config::default()))
        .default_backoff()
        .boxed();
    let mut failing = false;
    while let Some(event) = stream.next().await {
        match event {
            Ok(_) => {
                failing = false;
                book.replace(reader.state().iter().map(|m| (**m).clone()).collect());
            }
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(error = %e, "PowerModel watch failed; retrying (the reference curve is used once known models age out)")
            }
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::estimator::{parse_cpuinfo, TdpTable};
    use crate::shared_model::board_name;
    use crate::sysfs::HostRoot;
    use edgewatt_crds::power_model::{PowerModelSpec, PowerModelStatus};

    const CPU: &str = "Intel(R) Xeon(R) CPU E5-2680 v4 @ 2.40GHz";

    fn estimator() -> Estimator {
        estimator_on(false)
    }

    fn estimator_on(vm: bool) -> Estimator {
        let flags = if vm { "fpu hypervisor" } else { "fpu" };
        let text: String = (0..8)
            .map(|i| {
                format!("processor\t: {i}\nmodel name\t: {CPU}\nphysical id\t: 0\ncore id\t: {i}\nflags\t: {flags}\n\n")
            })
            .collect();
        Estimator::new(parse_cpuinfo(&text), &TdpTable::bundled(), None)
    }

    fn model(shared: bool, updated: chrono::DateTime<chrono::Utc>) -> PowerModel {
        let key = key_of(&estimator(), "R630");
        let mut m = PowerModel::new(
            &key.object_name(),
            PowerModelSpec {
                cpu_model: key.cpu_model,
                board: key.board,
                threads: key.threads,
                curve: key.curve,
                idle_watts: 30.0,
                dynamic_watts: 50.0,
            },
        );
        m.status = Some(PowerModelStatus {
            shared,
            reason: if shared {
                "Shared"
            } else {
                "ErrorAboveThreshold"
            }
            .into(),
            last_update: Some(updated.to_rfc3339()),
            ..Default::default()
        });
        m
    }

    fn shared_with(models: Vec<PowerModel>) -> SharedEstimator {
        let book = ModelBook::default();
        book.replace(models);
        SharedEstimator::new(estimator(), "R630", Some(book), Duration::from_secs(600))
    }

    #[test]
    fn fresh_shared_model_replaces_the_reference_curve() {
        let now = chrono::Utc::now();
        let reference = estimator().estimate(1.0);
        let mut e = shared_with(vec![model(true, now)]);
        let (w, src) = e.estimate_at(1.0, now);
        assert_eq!(src, ModelSource::Cluster);
        assert!((w - 80.0).abs() < 1e-9, "{w}");
        assert!(
            (w - reference).abs() > 1.0,
            "the test must tell the two apart"
        );
        assert!((e.estimate_at(0.0, now).0 - 30.0).abs() < 1e-9);
    }

    #[test]
    fn stale_model_gives_the_reference_curve_back() {
        let now = chrono::Utc::now();
        let mut e = shared_with(vec![model(true, now - chrono::Duration::minutes(11))]);
        let (w, src) = e.estimate_at(0.5, now);
        assert_eq!(src, ModelSource::Reference);
        assert_eq!(w, estimator().estimate(0.5));
        // and a fresh one is picked up on the next interval
        e.book.as_ref().unwrap().replace(vec![model(true, now)]);
        assert_eq!(e.estimate_at(0.5, now).1, ModelSource::Cluster);
    }

    #[test]
    fn unshared_or_foreign_models_are_not_used() {
        let now = chrono::Utc::now();
        let mut e = shared_with(vec![model(false, now)]);
        assert_eq!(e.estimate_at(0.5, now).1, ModelSource::Reference);
        let mut other_board = model(true, now);
        other_board.spec.board = "R640".into();
        let mut other_threads = model(true, now);
        other_threads.spec.threads = 16;
        let mut e = shared_with(vec![other_board, other_threads]);
        assert_eq!(e.estimate_at(0.5, now).1, ModelSource::Reference);
        let mut e = SharedEstimator::new(estimator(), "R630", None, Duration::from_secs(600));
        assert_eq!(e.estimate_at(0.5, now).1, ModelSource::Reference);
        // a VM with the same CPU string and vCPU count: its host's size is unknown
        let book = ModelBook::default();
        book.replace(vec![model(true, now)]);
        let mut vm = SharedEstimator::new(
            estimator_on(true),
            "R630",
            Some(book),
            Duration::from_secs(600),
        );
        assert_eq!(vm.estimate_at(0.5, now).1, ModelSource::Reference);
    }

    #[test]
    fn own_meter_wins_over_the_cluster_model() {
        let now = chrono::Utc::now();
        let mut e = shared_with(vec![model(true, now)]);
        assert!(e.calibration().is_none(), "no fit, nothing to publish");
        let curve = LoadCurve::for_cpu(CPU);
        for i in 0..100 {
            let u = (i % 10) as f64 / 10.0;
            let ctx = Context {
                now: std::time::Instant::now(),
                cpu_busy_ratio: Some(u),
                cpu_freq_ratio: None,
            };
            e.observe_measured(&ctx, 10.0 + 20.0 * curve.shape(u));
        }
        let (w, src) = e.estimate_at(1.0, now);
        assert_eq!(src, ModelSource::Node);
        assert!((w - 30.0).abs() < 0.5, "{w}");
        let c = e.calibration().expect("a usable fit is published");
        assert!((c.idle_watts - 10.0).abs() < 0.5 && (c.dynamic_watts - 20.0).abs() < 0.5);
        assert_eq!(c.samples, 100);
        assert!(c.labels.contains(&("threads", "8".to_string())));
        assert!(e
            .info()
            .unwrap()
            .contains(&("model_source", "node".to_string())));
    }

    #[test]
    fn board_from_devicetree_then_dmi() {
        let dir = tempfile::tempdir().unwrap();
        let root = HostRoot::new(dir.path());
        assert_eq!(board_name(&root), "");
        let dmi = dir.path().join("sys/class/dmi/id");
        std::fs::create_dir_all(&dmi).unwrap();
        std::fs::write(dmi.join("product_name"), "PowerEdge R630\n").unwrap();
        assert_eq!(board_name(&root), "PowerEdge R630");
        let dt = dir.path().join("sys/firmware/devicetree/base");
        std::fs::create_dir_all(&dt).unwrap();
        std::fs::write(dt.join("model"), b"Raspberry Pi 4 Model B Rev 1.4\0").unwrap();
        assert_eq!(board_name(&root), "Raspberry Pi 4 Model B Rev 1.4");
    }
}
