//! `POST pods/{name}/eviction`: the PodDisruptionBudget check of the real eviction REST handler.
//!
//! Simplified: there is no disruption controller, so `status.disruptionsAllowed` is whatever the
//! test set (see `ApiServer::set_pdb_disruptions_allowed`); a successful eviction decrements it
//! and records the pod in `status.disruptedPods`, as the real handler does.

use serde_json::{json, Value};

use super::ops::now;
use super::resources::ResourceDef;
use super::selectors::LabelSelector;
use super::status::ApiError;
use super::App;

impl App {
    /// Evicts a pod unless a matching PDB allows no disruption; returns the Success status.
    pub(crate) fn evict(
        &self,
        pods: &ResourceDef,
        ns: &str,
        name: &str,
        body: &Value,
    ) -> Result<Value, ApiError> {
        if let Some(n) = body["metadata"]["name"].as_str() {
            if !n.is_empty() && n != name {
                return Err(ApiError::bad_request(format!(
                    "name in URL does not match name in Eviction object: {name} vs {n}"
                )));
            }
        }
        let delete_opts = body.get("deleteOptions").cloned().unwrap_or(json!({}));
        let dry_run = delete_opts["dryRun"]
            .as_array()
            .is_some_and(|a| a.iter().any(|v| v == "All"));
        let pdb_res = self
            .resource("policy", "v1", "poddisruptionbudgets")
            .expect("PDBs are built in");
        let mut inner = self.store.lock().expect("store lock");
        let pod = inner
            .get(&pods.key(), ns, name)
            .ok_or_else(|| ApiError::not_found(pods, name))?;
        let phase = pod["status"]["phase"].as_str().unwrap_or("Pending");
        let terminating = !pod["metadata"]["deletionTimestamp"].is_null();
        // The real handler skips the budget for pods that are not running or already going.
        if !terminating && !matches!(phase, "Succeeded" | "Failed" | "Pending") {
            let labels = pod["metadata"]["labels"]
                .as_object()
                .cloned()
                .unwrap_or_default();
            let matching: Vec<Value> = inner
                .objects_of(&pdb_res.key())
                .filter(|((pns, _), _)| pns == ns)
                .filter(|(_, pdb)| {
                    LabelSelector::from_json(&pdb["spec"]["selector"])
                        .map(|s| s.matches(&labels))
                        .unwrap_or(false)
                })
                .map(|(_, pdb)| (**pdb).clone())
                .collect();
            if matching.len() > 1 {
                return Err(ApiError::internal(
                    "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
                ));
            }
            if let Some(mut pdb) = matching.into_iter().next() {
                let allowed = pdb["status"]["disruptionsAllowed"].as_i64().unwrap_or(0);
                if allowed <= 0 {
                    let pdb_name = pdb["metadata"]["name"].as_str().unwrap_or_default();
                    let st = &pdb["status"];
                    return Err(ApiError::too_many_requests(
                        "Cannot evict pod as it would violate the pod's disruption budget.",
                        json!([{
                            "reason": "DisruptionBudget",
                            "message": format!(
                                "The disruption budget {pdb_name} needs {} healthy pods and has {} currently",
                                st["desiredHealthy"].as_i64().unwrap_or(0),
                                st["currentHealthy"].as_i64().unwrap_or(0)
                            )
                        }]),
                    ));
                }
                if !dry_run {
                    pdb["status"]["disruptionsAllowed"] = (allowed - 1).into();
                    pdb["status"]["disruptedPods"][name] = now().into();
                    inner.put(&pdb_res.key(), pdb);
                }
            }
        }
        self.delete_locked(&mut inner, pods, Some(ns), name, &delete_opts, dry_run)?;
        Ok(super::status::success_status(201))
    }
}
