//! CustomResourceDefinitions: a stored CRD serves its resource (every served version, its scope,
//! names and `/status` subresource) with admission from its own schema, as apiextensions-apiserver
//! does; deleting it stops serving the resource and removes its objects.
//!
//! [`ApiServer::start`](super::ApiServer::start) installs edgewatt's and Flotta's generated CRDs
//! (`crds/*.yaml`, `crds/flotta/*.yaml`), so every test meets the admission a real cluster applies.

use std::sync::Arc;

use serde_json::{json, Value};

use super::ops::now;
use super::resources::ResourceDef;
use super::schema::Admission;
use super::store::Inner;
use super::App;

/// The generated CRDs a fresh double starts with (`ApiServer::start`).
pub(crate) const GENERATED: &[&str] = &[
    include_str!("../../../crds/edgewatt.io_energypolicies.yaml"),
    include_str!("../../../crds/flotta/management.project-flotta.io_edgedevices.yaml"),
    include_str!("../../../crds/flotta/management.project-flotta.io_edgeworkloads.yaml"),
];

/// The store key of CRDs.
pub(crate) const CRD_KEY: &str = "apiextensions.k8s.io/v1/customresourcedefinitions";

/// Parses a CRD manifest (YAML or JSON) into JSON.
pub fn parse_manifest(text: &str) -> anyhow::Result<Value> {
    let v: Value = serde_saphyr::from_str(text)?;
    anyhow::ensure!(
        v["kind"] == "CustomResourceDefinition",
        "not a CustomResourceDefinition: {}",
        v["kind"]
    );
    Ok(v)
}

/// The resources a CRD serves, each with its version's admission.
fn served(crd: &Value) -> Vec<(ResourceDef, Option<Admission>)> {
    let spec = &crd["spec"];
    let names = &spec["names"];
    let (Some(group), Some(plural), Some(kind)) = (
        spec["group"].as_str(),
        names["plural"].as_str(),
        names["kind"].as_str(),
    ) else {
        return Vec::new();
    };
    let namespaced = spec["scope"] != "Cluster";
    let shorts: Vec<&str> = names["shortNames"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    spec["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v["served"] != false)
        .filter_map(|v| {
            let version = v["name"].as_str()?;
            let status = !v["subresources"]["status"].is_null();
            let mut def = ResourceDef::crd(group, version, plural, kind, namespaced, status)
                .with_short_names(&shorts);
            if let Some(s) = names["singular"].as_str() {
                def.singular = s.to_string();
            }
            let schema = &v["schema"]["openAPIV3Schema"];
            let admission = (!schema.is_null()).then(|| Admission::new(schema.clone()));
            Some((def, admission))
        })
        .collect()
}

/// The status apiextensions-apiserver reports once the names are accepted.
pub(crate) fn status_of(crd: &Value) -> Value {
    let t = now();
    let stored: Vec<&Value> = crd["spec"]["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v["storage"] == true)
        .map(|v| &v["name"])
        .collect();
    json!({
        "acceptedNames": crd["spec"]["names"],
        "storedVersions": stored,
        "conditions": [
            {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
             "message": "no conflicts found", "lastTransitionTime": t},
            {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
             "message": "the initial names have been accepted", "lastTransitionTime": t},
        ]
    })
}

impl App {
    /// Serves what a stored CRD defines (replacing an earlier definition of the same resource).
    pub(crate) fn crd_stored(&self, crd: &Value) {
        for (def, admission) in served(crd) {
            let key = def.key();
            let mut reg = self.registry.write().expect("registry lock");
            reg.retain(|r| r.key() != key);
            reg.push(def);
            drop(reg);
            let mut adm = self.admissions.write().expect("admissions lock");
            match admission {
                Some(a) => adm.insert(key, Arc::new(a)),
                None => adm.remove(&key),
            };
        }
    }

    /// A deleted CRD: its objects go (DELETED events), its resources are no longer served, and
    /// open watches end (clients re-list and meet 404).
    pub(crate) fn crd_removed(&self, inner: &mut Inner, crd: &Value) {
        for (def, _) in served(crd) {
            let key = def.key();
            let objects: Vec<(String, String)> =
                inner.objects_of(&key).map(|(k, _)| k.clone()).collect();
            for (ns, name) in objects {
                inner.remove(&key, &ns, &name);
            }
            self.registry
                .write()
                .expect("registry lock")
                .retain(|r| r.key() != key);
            self.admissions
                .write()
                .expect("admissions lock")
                .remove(&key);
        }
        self.drop_watches.send_modify(|g| *g = (g.0 + 1, false));
    }
}
