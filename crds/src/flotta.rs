//! Flotta's `EdgeDevice` and `EdgeWorkload` (`management.project-flotta.io/v1alpha1`), as far as
//! edgewatt reads and writes them.
//!
//! Flotta owns these CRDs, so every struct keeps the fields it does not know in `extra`: a real
//! Flotta object read and written back by edgewatt loses nothing.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Fields this crate does not model, kept verbatim for lossless round trips.
pub type Extra = BTreeMap<String, Value>;

/// A workload Flotta deploys to the edge devices it targets.
#[derive(CustomResource, JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "management.project-flotta.io",
    version = "v1alpha1",
    kind = "EdgeWorkload",
    plural = "edgeworkloads",
    namespaced,
    status = "EdgeWorkloadStatus",
    doc = "Flotta EdgeWorkload (subset of the upstream schema; unknown fields are preserved)."
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
pub struct EdgeWorkloadSpec {
    /// A single device by name; takes precedence over `deviceSelector`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// Devices by label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_selector: Option<LabelSelector>,
    /// Workload type; Flotta supports `pod`.
    #[serde(default, rename = "type")]
    pub type_: String,
    // The bulky parts are boxed: a controller caches 100 000 of these with them trimmed, and an
    // empty box costs 8 bytes where an inline `Value` costs 32 (12 MB at that scale).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<Box<EdgeWorkloadPod>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserve_unknown")]
    pub data: Option<Box<Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserve_unknown")]
    pub image_registries: Option<Box<Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserve_unknown")]
    pub metrics: Option<Box<Value>>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: Extra,
}

/// `spec.pod`: a Kubernetes PodSpec, kept as JSON (Flotta runs it with Podman, not the kubelet).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
pub struct EdgeWorkloadPod {
    #[serde(default)]
    #[schemars(schema_with = "preserve_unknown")]
    pub spec: Value,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: Extra,
}

/// Flotta keeps per-device workload state on the EdgeDevice; this holds whatever else is there.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
pub struct EdgeWorkloadStatus {
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: Extra,
}

/// A registered edge device.
#[derive(CustomResource, JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "management.project-flotta.io",
    version = "v1alpha1",
    kind = "EdgeDevice",
    plural = "edgedevices",
    namespaced,
    status = "EdgeDeviceStatus",
    doc = "Flotta EdgeDevice (subset of the upstream schema; unknown fields are preserved)."
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
pub struct EdgeDeviceSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat: Option<HeartbeatConfiguration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_time: Option<String>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: Extra,
}

/// How often the device agent reports.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
pub struct HeartbeatConfiguration {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period_seconds: Option<i64>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: Extra,
}

/// What the device agent last reported.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
pub struct EdgeDeviceStatus {
    /// Device lifecycle phase (`up`, `down`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen_time: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub workloads: Vec<DeviceWorkload>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserve_unknown")]
    pub hardware: Option<Value>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: Extra,
}

/// One workload as the device reports it.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
pub struct DeviceWorkload {
    pub name: String,
    /// `Deploying|Running|Exited` from the operator, lowercase (`running`, `crashed`…) from heartbeats.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_data_upload: Option<String>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: Extra,
}

impl DeviceWorkload {
    /// Flotta writes `Running` and heartbeats write `running`: compare case-insensitively.
    pub fn is_running(&self) -> bool {
        self.phase
            .as_deref()
            .is_some_and(|p| p.eq_ignore_ascii_case("running"))
    }
}

impl EdgeDevice {
    /// The reported phase of `workload` on this device, if the device lists it.
    pub fn workload(&self, workload: &str) -> Option<&DeviceWorkload> {
        self.status
            .as_ref()?
            .workloads
            .iter()
            .find(|w| w.name == workload)
    }

    /// Flotta's `status.phase` says the device is up.
    pub fn is_up(&self) -> bool {
        self.status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .is_some_and(|p| p.eq_ignore_ascii_case("up"))
    }
}

/// Prefix of the label the Flotta operator puts on a device for each workload it carries.
pub const WORKLOAD_LABEL_PREFIX: &str = "workload/";

/// Label the Flotta operator puts on a device for each workload it carries.
pub fn workload_label(workload: &str) -> String {
    format!("{WORKLOAD_LABEL_PREFIX}{workload}")
}

fn preserve_unknown(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_flotta_objects_round_trip_without_loss() {
        let device = serde_json::json!({
            "apiVersion": "management.project-flotta.io/v1alpha1",
            "kind": "EdgeDevice",
            "metadata": {"name": "camera-1", "namespace": "default", "labels": {"workload/nginx": "true"}},
            "spec": {
                "requestTime": "2021-09-22T08:35:25Z",
                "heartbeat": {"periodSeconds": 5, "hardwareProfile": {"include": true, "scope": "full"}},
                "osInformation": {"automaticallyUpgrade": true, "commitID": "0305686e"},
                "storage": {"s3": {"secretName": "common-s3-secret", "createOBC": false}}
            },
            "status": {
                "phase": "up",
                "lastSeenTime": "2021-09-23T09:27:50Z",
                "lastSyncedResourceVersion": "13040122",
                "dataObc": "242e48d0",
                "hardware": {"cpu": {"architecture": "x86_64"}},
                "workloads": [{"name": "nginx", "phase": "running",
                    "lastTransitionTime": "2021-09-23T09:27:50Z", "lastDataUpload": "2021-09-23T09:27:30Z",
                    "somethingNew": 1}]
            }
        });
        let parsed: EdgeDevice = serde_json::from_value(device.clone()).unwrap();
        assert!(parsed.is_up());
        assert!(parsed.workload("nginx").unwrap().is_running());
        assert_eq!(serde_json::to_value(&parsed).unwrap(), device);

        let workload = serde_json::json!({
            "apiVersion": "management.project-flotta.io/v1alpha1",
            "kind": "EdgeWorkload",
            "metadata": {"name": "nginx", "namespace": "default"},
            "spec": {
                "deviceSelector": {"matchLabels": {"app": "foo"}},
                "type": "pod",
                "data": {"paths": [{"source": ".", "target": "nginx"}]},
                "logCollection": "syslog",
                "pod": {"spec": {"containers": [{"name": "nginx", "image": "docker.io/nginx:1.14.2",
                    "ports": [{"containerPort": 80, "hostPort": 9090}]}]}}
            }
        });
        let parsed: EdgeWorkload = serde_json::from_value(workload.clone()).unwrap();
        assert_eq!(parsed.spec.type_, "pod");
        assert_eq!(serde_json::to_value(&parsed).unwrap(), workload);
    }
}
