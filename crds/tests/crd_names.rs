//! Our CRDs' names never shadow a built-in resource's short name on the command line.
//!
//! kubectl resolves a name against discovery with the built-in groups first, so a CRD short name
//! that a built-in resource already has is unreachable: `ep` was EnergyPolicy's and
//! `kubectl get ep` listed core Endpoints. The built-in short names are what each resource's REST
//! storage returns from `ShortNames()` (kubernetes/kubernetes
//! `pkg/registry/<group>/<resource>/storage/storage.go`, e.g. `core/endpoint/storage/storage.go`
//! `[]string{"ep"}`; `core/componentstatus/rest.go` for `cs`; apiextensions-apiserver
//! `pkg/registry/customresourcedefinition/etcd.go` for `crd`/`crds`), as served in discovery.
//! They are collected here from the discovery documents kubernetes/kubernetes commits from a
//! running API server with every group enabled: `api/discovery/api__v1.json` (core, commit
//! 7c554ea1d91eddac32fcd89f37d7ed0347e1f311) and `api/discovery/aggregated_v2.json` (every other
//! group, commit 0b1dcaba0a3f1fdcfe5fbb6516d68ffc8e625d81), cross-checked against the
//! `storage.go` files of configmap, endpoint, event, limitrange, namespace, node,
//! persistentvolume and persistentvolumeclaim; the newer alpha groups' discovery files
//! (resource.k8s.io/v1, scheduling.k8s.io/v1alpha2-3, certificates.k8s.io/v1alpha1-v1beta1,
//! checkpoint.k8s.io, lifecycle.k8s.io) declare none.

use std::collections::BTreeMap;

use serde_json::Value;

/// Every built-in short name, by resource.
const BUILTIN_SHORT_NAMES: &[(&str, &str)] = &[
    // core/v1 (api__v1.json)
    ("componentstatuses", "cs"),
    ("configmaps", "cm"),
    ("endpoints", "ep"),
    ("events", "ev"),
    ("limitranges", "limits"),
    ("namespaces", "ns"),
    ("nodes", "no"),
    ("persistentvolumeclaims", "pvc"),
    ("persistentvolumes", "pv"),
    ("pods", "po"),
    ("replicationcontrollers", "rc"),
    ("resourcequotas", "quota"),
    ("serviceaccounts", "sa"),
    ("services", "svc"),
    // named groups (aggregated_v2.json)
    ("apps/daemonsets", "ds"),
    ("apps/deployments", "deploy"),
    ("apps/replicasets", "rs"),
    ("apps/statefulsets", "sts"),
    ("events.k8s.io/events", "ev"),
    ("autoscaling/horizontalpodautoscalers", "hpa"),
    ("batch/cronjobs", "cj"),
    ("certificates.k8s.io/certificatesigningrequests", "csr"),
    ("networking.k8s.io/ingresses", "ing"),
    ("networking.k8s.io/ipaddresses", "ip"),
    ("networking.k8s.io/networkpolicies", "netpol"),
    ("policy/poddisruptionbudgets", "pdb"),
    ("storage.k8s.io/storageclasses", "sc"),
    ("storage.k8s.io/volumeattributesclasses", "vac"),
    ("apiextensions.k8s.io/customresourcedefinitions", "crd"),
    ("apiextensions.k8s.io/customresourcedefinitions", "crds"),
    ("scheduling.k8s.io/priorityclasses", "pc"),
];

/// Each generated CRD's `spec.names`: what a user may type for it.
fn crd_names() -> BTreeMap<String, Vec<String>> {
    edgewatt_crds::generated_yaml()
        .unwrap()
        .into_iter()
        .map(|(_, yaml)| {
            let crd: Value = serde_saphyr::from_str(&yaml).unwrap();
            let names = &crd["spec"]["names"];
            let mut typed: Vec<String> = ["plural", "singular"]
                .iter()
                .filter_map(|k| names[k].as_str().map(String::from))
                .collect();
            typed.extend(
                names["shortNames"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|s| s.as_str().map(String::from)),
            );
            (crd["metadata"]["name"].as_str().unwrap().to_string(), typed)
        })
        .collect()
}

#[test]
fn no_crd_name_is_a_builtin_short_name() {
    let crds = crd_names();
    let mut clashes = Vec::new();
    for (crd, names) in &crds {
        for n in names {
            for (builtin, short) in BUILTIN_SHORT_NAMES {
                if n == short {
                    clashes.push(format!("{crd}: `{n}` is {builtin}'s short name"));
                }
            }
        }
    }
    assert!(clashes.is_empty(), "{clashes:#?}");
    // The names checked include the short names (else this would prove little).
    assert_eq!(
        crds["energypolicies.edgewatt.io"],
        ["energypolicies", "energypolicy", "enpol"]
    );
    assert_eq!(
        crds["powermodels.edgewatt.io"],
        ["powermodels", "powermodel", "pm"]
    );
}

#[test]
fn no_two_crds_share_a_name() {
    let mut owner: BTreeMap<String, String> = BTreeMap::new();
    for (crd, names) in crd_names() {
        for n in names {
            if let Some(other) = owner.insert(n.clone(), crd.clone()) {
                assert_eq!(other, crd, "`{n}` names both {other} and {crd}");
            }
        }
    }
}
