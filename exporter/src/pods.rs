//! Pod names for pod UIDs found in cgroup paths.
//!
//! Choice: a Kubernetes API watch of this node's pods (`fieldSelector=spec.nodeName=<node>`)
//! rather than the kubelet's `/pods` endpoint. The watch needs only `get/list/watch pods` RBAC
//! (the kubelet endpoint needs `nodes/proxy`, which is close to node-admin), costs one long-lived
//! connection instead of a poll, and works the same on kind, k3s and managed clusters. Without a
//! cluster (no in-cluster env, no KUBECONFIG) nothing is watched and pods are labelled by UID only.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// What the exporter knows about one pod on this node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodInfo {
    pub name: String,
    pub namespace: String,
    /// Container id (without the `containerd://` scheme) → container name.
    pub containers: HashMap<String, String>,
}

/// Pod UID → info, shared between the watch task and the collector.
#[derive(Debug, Clone, Default)]
pub struct PodDirectory(Arc<RwLock<HashMap<String, PodInfo>>>);

impl PodDirectory {
    pub fn get(&self, uid: &str) -> Option<PodInfo> {
        self.0.read().ok()?.get(uid).cloned()
    }

    pub fn insert(&self, uid: String, info: PodInfo) {
        if let Ok(mut m) = self.0.write() {
            m.insert(uid, info);
        }
    }

    pub fn remove(&self, uid: &str) {
        if let Ok(mut m) = self.0.write() {
            m.remove(uid);
        }
    }

    pub fn replace_all(&self, all: HashMap<String, PodInfo>) {
        if let Ok(mut m) = self.0.write() {
            *m = all;
        }
    }

    pub fn len(&self) -> usize {
        self.0.read().map(|m| m.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// `containerd://<id>`, `cri-o://<id>`, `docker://<id>` → `<id>`.
pub fn strip_runtime_scheme(container_id: &str) -> &str {
    container_id
        .split_once("://")
        .map(|(_, id)| id)
        .unwrap_or(container_id)
}
