//! Shared power models (issue 21 §2): builds one `PowerModel` per CPU model, board and thread
//! count from the calibrations metered nodes' exporters publish in Prometheus
//! (`estimator_calibration_{watts,samples}`, `estimator_fit_error_watts`).
//!
//! [`judge`] is the decision (pure): which models to write and whether each may be shared. A
//! model is shared only when built from at least `min_nodes` metered nodes and `min_samples`
//! samples, and when its error against every contributing meter is at most `max_error_percent`;
//! too little data for a model that does not exist yet writes nothing. [`run`] is the thin
//! loop around it: Lease holder only, every write fenced, one spec apply and one status write per
//! model per cycle (the status' `lastUpdate` is what exporters judge freshness by).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use edgewatt_crds::{
    metrics::{base, MetricNames},
    power_model::{reason, ModelKey, PowerModel, PowerModelSpec, PowerModelStatus},
    prom::{PromReader, Series},
};
use kube::{
    api::{Patch, PatchParams},
    Api, Resource, ResourceExt,
};

use crate::context::Context;

/// When a model may be shared (chart values `powerModels.*`).
#[derive(Debug, Clone)]
pub struct Thresholds {
    pub min_nodes: u32,
    pub min_samples: u64,
    pub max_error_percent: f64,
    /// Calibration series older than this in Prometheus are ignored.
    pub max_data_age: Duration,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            min_nodes: 1,
            min_samples: 60,
            max_error_percent: 10.0,
            max_data_age: Duration::from_secs(120),
        }
    }
}

/// One metered node's calibration as read from Prometheus.
#[derive(Debug, Clone, PartialEq)]
pub struct Contribution {
    pub node: String,
    pub key: ModelKey,
    pub idle_watts: f64,
    pub dynamic_watts: f64,
    pub samples: u64,
    pub fit_error_watts: f64,
}

/// A model to write: its spec and its status (without `lastUpdate`, set at write time).
#[derive(Debug, Clone, PartialEq)]
pub struct Judged {
    pub name: String,
    pub spec: PowerModelSpec,
    pub status: PowerModelStatus,
}

/// Shape points the error is measured at: 0 %, 10 %, …, 100 % of the dynamic range.
fn grid() -> impl Iterator<Item = f64> {
    (0..=10).map(|i| i as f64 / 10.0)
}

/// Error of the model `(a, b)` against one meter, percent of that node's full-load watts: the
/// node's own fit error (how well the law fits its meter at all) plus the widest gap between the
/// model and the node's own fit over the load range (how far the shared model is from it).
pub fn error_percent(a: f64, b: f64, c: &Contribution) -> f64 {
    let full = (c.idle_watts + c.dynamic_watts).max(1e-9);
    let gap = grid()
        .map(|s| ((a + b * s) - (c.idle_watts + c.dynamic_watts * s)).abs())
        .fold(0.0, f64::max);
    100.0 * (c.fit_error_watts.max(0.0) + gap) / full
}

/// The models to write for `contributions`, given the names of the PowerModels that exist.
pub fn judge(
    contributions: &[Contribution],
    existing: &BTreeMap<String, PowerModelSpec>,
    th: &Thresholds,
) -> Vec<Judged> {
    let mut by_key: BTreeMap<ModelKey, Vec<&Contribution>> = BTreeMap::new();
    for c in contributions {
        let sane = [c.idle_watts, c.dynamic_watts, c.fit_error_watts]
            .iter()
            .all(|v| v.is_finite() && *v >= 0.0);
        if sane && c.samples > 0 && !c.key.cpu_model.is_empty() && c.key.threads > 0 {
            by_key.entry(c.key.clone()).or_default().push(c);
        }
    }
    let mut out = Vec::new();
    for (key, cs) in &by_key {
        let name = key.object_name();
        let samples: u64 = cs.iter().map(|c| c.samples).sum();
        let w = |f: fn(&Contribution) -> f64| {
            cs.iter().map(|c| f(c) * c.samples as f64).sum::<f64>() / samples as f64
        };
        let (a, b) = (w(|c| c.idle_watts), w(|c| c.dynamic_watts));
        let error = cs
            .iter()
            .map(|c| error_percent(a, b, c))
            .fold(0.0, f64::max);
        let nodes: BTreeSet<&str> = cs.iter().map(|c| c.node.as_str()).collect();
        let (why, message) = if (nodes.len() as u32) < th.min_nodes {
            (
                reason::TOO_FEW_NODES,
                format!("{} metered node(s), {} needed", nodes.len(), th.min_nodes),
            )
        } else if samples < th.min_samples {
            (
                reason::TOO_FEW_SAMPLES,
                format!("{samples} samples, {} needed", th.min_samples),
            )
        } else if error > th.max_error_percent {
            (
                reason::ERROR_ABOVE_THRESHOLD,
                format!(
                    "error {error:.1} % against the meters, at most {} % allowed",
                    th.max_error_percent
                ),
            )
        } else {
            (
                reason::SHARED,
                format!(
                    "error {error:.1} % against {} meter(s), {samples} samples",
                    nodes.len()
                ),
            )
        };
        let shared = why == reason::SHARED;
        // Too little data and no model yet: nothing to write (a bad model still gets one, so
        // its status says why it is not shared).
        if matches!(why, reason::TOO_FEW_NODES | reason::TOO_FEW_SAMPLES)
            && !existing.contains_key(&name)
        {
            continue;
        }
        out.push(Judged {
            name,
            spec: PowerModelSpec {
                cpu_model: key.cpu_model.clone(),
                board: key.board.clone(),
                threads: key.threads,
                curve: key.curve.clone(),
                idle_watts: a,
                dynamic_watts: b,
            },
            status: PowerModelStatus {
                shared,
                reason: why.to_string(),
                message,
                metered_nodes: nodes.iter().take(50).map(|n| n.to_string()).collect(),
                metered_node_count: nodes.len() as u32,
                samples,
                error_percent: Some((error * 100.0).round() / 100.0),
                last_update: None,
            },
        });
    }
    // Existing models nobody contributes to any more: withdrawn (their spec stays).
    for (name, spec) in existing {
        if !by_key.contains_key(&spec.key()) {
            out.push(Judged {
                name: name.clone(),
                spec: spec.clone(),
                status: PowerModelStatus {
                    shared: false,
                    reason: reason::NO_FRESH_DATA.into(),
                    message: "no metered node with this CPU model publishes a calibration".into(),
                    ..Default::default()
                },
            });
        }
    }
    out
}

/// Series labels that identify a calibration.
fn key_of(s: &Series) -> Option<(String, ModelKey)> {
    let l = |k: &str| s.labels.get(k).cloned().unwrap_or_default();
    Some((
        s.labels.get("node_name")?.clone(),
        ModelKey {
            cpu_model: l("cpu_model"),
            board: l("board"),
            threads: l("threads").parse().ok()?,
            curve: l("curve"),
        },
    ))
}

/// The calibrations in Prometheus whose samples are at most `max_age` old.
pub async fn read_contributions(
    reader: &PromReader,
    names: &MetricNames,
    max_age: Duration,
) -> Result<Vec<Contribution>, edgewatt_crds::prom::PromError> {
    let watts = names.name(base::ESTIMATOR_CALIBRATION_WATTS);
    let samples = names.name(base::ESTIMATOR_CALIBRATION_SAMPLES);
    let error = names.name(base::ESTIMATOR_FIT_ERROR_WATTS);
    let fresh = format!(
        "{samples} and (time() - timestamp({samples})) <= {}",
        max_age.as_secs_f64()
    );
    let (w, n, e) = futures::try_join!(
        reader.vector(&watts),
        reader.vector(&fresh),
        reader.vector(&error)
    )?;
    let mut coef: BTreeMap<(String, ModelKey, String), f64> = BTreeMap::new();
    for s in &w {
        if let (Some((node, key)), Some(c)) = (key_of(s), s.labels.get("coefficient")) {
            coef.insert((node, key, c.clone()), s.value);
        }
    }
    let errs: BTreeMap<(String, ModelKey), f64> = e
        .iter()
        .filter_map(|s| Some((key_of(s)?, s.value)))
        .collect();
    Ok(n.iter()
        .filter_map(|s| {
            let (node, key) = key_of(s)?;
            let get = |c: &str| {
                coef.get(&(node.clone(), key.clone(), c.to_string()))
                    .copied()
            };
            Some(Contribution {
                idle_watts: get("idle")?,
                dynamic_watts: get("dynamic")?,
                fit_error_watts: *errs.get(&(node.clone(), key.clone()))?,
                samples: s.value.max(0.0) as u64,
                node,
                key,
            })
        })
        .collect())
}

/// Writes one judged model: the spec by server-side apply (creates it if missing), then the
/// status. Both fenced. Returns the status the model had before (for transition Events).
async fn write(
    ctx: &Context,
    api: &Api<PowerModel>,
    j: &Judged,
) -> Result<Option<PowerModelStatus>, String> {
    let before = api.get_opt(&j.name).await.map_err(|e| e.to_string())?;
    let mut obj = PowerModel::new(&j.name, j.spec.clone());
    obj.metadata.labels = Some(BTreeMap::from([(
        "app.kubernetes.io/managed-by".to_string(),
        "edgewatt-controller".to_string(),
    )]));
    let mut value = serde_json::to_value(&obj).map_err(|e| e.to_string())?;
    value["apiVersion"] = PowerModel::api_version(&()).as_ref().into();
    value["kind"] = PowerModel::kind(&()).as_ref().into();
    if before.as_ref().map(|b| &b.spec) != Some(&j.spec) {
        let pp = PatchParams::apply("edgewatt-controller").force();
        ctx.fence
            .guard(api.patch(&j.name, &pp, &Patch::Apply(&value)))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
    }
    let mut status = j.status.clone();
    status.last_update = Some(crate::status::rfc3339(ctx.clock.now()));
    ctx.fence
        .guard(api.patch_status(
            &j.name,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({ "status": status })),
        ))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    Ok(before.and_then(|b| b.status))
}

/// One cycle: read, judge, write, publish metrics and transition Events.
pub async fn cycle(ctx: &Context, th: &Thresholds) -> Result<usize, String> {
    let contributions =
        read_contributions(&ctx.reader, &ctx.settings.metric_names, th.max_data_age)
            .await
            .map_err(|e| {
                ctx.metrics.prometheus_errors.inc();
                format!("prometheus: {e}")
            })?;
    let api: Api<PowerModel> = Api::all(ctx.client.clone());
    let existing: BTreeMap<String, PowerModelSpec> = api
        .list(&Default::default())
        .await
        .map_err(|e| format!("listing PowerModels: {e}"))?
        .items
        .into_iter()
        .map(|m| (m.name_any(), m.spec))
        .collect();
    let judged = judge(&contributions, &existing, th);
    for j in &judged {
        let before = match write(ctx, &api, j).await {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(model = %j.name, error = %e, "PowerModel write failed");
                continue;
            }
        };
        ctx.metrics.set_power_model(
            &j.name,
            &j.spec.cpu_model,
            j.status.shared,
            j.status.error_percent,
        );
        let was_shared = before.as_ref().is_some_and(|s| s.shared);
        let was_reason = before.map(|s| s.reason);
        if was_reason.as_deref() != Some(j.status.reason.as_str()) {
            tracing::info!(model = %j.name, cpu = %j.spec.cpu_model, shared = j.status.shared, reason = %j.status.reason, message = %j.status.message, "PowerModel judged");
            let obj = PowerModel::new(&j.name, j.spec.clone());
            let warning = was_shared && !j.status.shared;
            let event_reason = if j.status.shared {
                "PowerModelShared"
            } else {
                "PowerModelNotShared"
            };
            ctx.actuator
                .event(
                    &ctx.fence,
                    &obj.object_ref(&()),
                    warning,
                    event_reason,
                    format!("{}: {}", j.status.reason, j.status.message),
                )
                .await;
        }
    }
    Ok(judged.len())
}

/// Runs cycles every `interval` while this replica holds the Lease.
pub async fn run(ctx: Arc<Context>, th: Thresholds, interval: Duration) {
    tracing::info!(?th, ?interval, "shared power models on");
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if !ctx.fence.is_leader() {
            continue;
        }
        match cycle(&ctx, &th).await {
            Ok(n) => tracing::debug!(models = n, "power model cycle"),
            Err(e) => tracing::warn!(error = %e, "power model cycle failed; models unchanged"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(cpu: &str) -> ModelKey {
        ModelKey {
            cpu_model: cpu.into(),
            board: String::new(),
            threads: 8,
            curve: "modern".into(),
        }
    }

    fn c(node: &str, idle: f64, dynamic: f64, samples: u64, err: f64) -> Contribution {
        Contribution {
            node: node.into(),
            key: key("Xeon E5-2680 v4"),
            idle_watts: idle,
            dynamic_watts: dynamic,
            samples,
            fit_error_watts: err,
        }
    }

    fn th() -> Thresholds {
        Thresholds {
            min_nodes: 1,
            min_samples: 60,
            max_error_percent: 10.0,
            max_data_age: Duration::from_secs(60),
        }
    }

    #[test]
    fn agreeing_meters_give_a_shared_sample_weighted_model() {
        let j = judge(
            &[c("a", 20.0, 60.0, 100, 0.5), c("b", 22.0, 58.0, 300, 0.5)],
            &BTreeMap::new(),
            &th(),
        );
        assert_eq!(j.len(), 1);
        let m = &j[0];
        assert!(m.status.shared, "{:?}", m.status);
        assert_eq!(m.status.reason, reason::SHARED);
        assert!((m.spec.idle_watts - 21.5).abs() < 1e-9);
        assert!((m.spec.dynamic_watts - 58.5).abs() < 1e-9);
        assert_eq!(m.status.samples, 400);
        assert_eq!(m.status.metered_nodes, vec!["a", "b"]);
        assert!(m.status.error_percent.unwrap() < 10.0);
        assert_eq!(m.name, key("Xeon E5-2680 v4").object_name());
    }

    #[test]
    fn a_bad_model_is_written_but_not_shared() {
        // Two "identical" CPUs that disagree by 2× (different boards under one name, or a
        // broken meter): the model is far from both meters.
        let j = judge(
            &[c("a", 20.0, 60.0, 200, 0.5), c("b", 40.0, 120.0, 200, 0.5)],
            &BTreeMap::new(),
            &th(),
        );
        assert_eq!(j.len(), 1);
        assert!(!j[0].status.shared);
        assert_eq!(j[0].status.reason, reason::ERROR_ABOVE_THRESHOLD);
        assert!(j[0].status.error_percent.unwrap() > 10.0);
        // a noisy meter alone is bad too
        let j = judge(&[c("a", 20.0, 60.0, 200, 12.0)], &BTreeMap::new(), &th());
        assert_eq!(j[0].status.reason, reason::ERROR_ABOVE_THRESHOLD);
    }

    #[test]
    fn too_few_samples_or_nodes_give_no_model() {
        assert!(judge(&[c("a", 20.0, 60.0, 59, 0.1)], &BTreeMap::new(), &th()).is_empty());
        let two = Thresholds {
            min_nodes: 2,
            ..th()
        };
        assert!(judge(&[c("a", 20.0, 60.0, 500, 0.1)], &BTreeMap::new(), &two).is_empty());
        // …but a model that exists is withdrawn, saying why
        let existing = judge(&[c("a", 20.0, 60.0, 500, 0.1)], &BTreeMap::new(), &th());
        let existing: BTreeMap<_, _> = existing.into_iter().map(|j| (j.name, j.spec)).collect();
        let j = judge(&[c("a", 20.0, 60.0, 500, 0.1)], &existing, &two);
        assert_eq!(j.len(), 1);
        assert!(!j[0].status.shared);
        assert_eq!(j[0].status.reason, reason::TOO_FEW_NODES);
        let j = judge(&[], &existing, &th());
        assert_eq!(j[0].status.reason, reason::NO_FRESH_DATA);
        assert!(!j[0].status.shared);
    }

    #[test]
    fn different_cpus_boards_and_thread_counts_get_their_own_models() {
        let mut other = c("b", 5.0, 10.0, 100, 0.1);
        other.key.board = "Raspberry Pi 4 Model B".into();
        let mut threads = c("d", 20.0, 60.0, 100, 0.1);
        threads.key.threads = 16;
        let mut insane = c("e", f64::NAN, 60.0, 100, 0.1);
        insane.key.cpu_model = "Other".into();
        let j = judge(
            &[c("a", 20.0, 60.0, 100, 0.1), other, threads, insane],
            &BTreeMap::new(),
            &th(),
        );
        assert_eq!(j.len(), 3, "{j:#?}");
        let names: BTreeSet<&str> = j.iter().map(|j| j.name.as_str()).collect();
        assert_eq!(names.len(), 3);
        assert!(j.iter().all(|j| j.status.shared));
    }
}
