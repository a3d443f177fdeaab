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

/// Pod info from a Pod object: name, namespace and container id → name for every container
/// status (init and ephemeral containers included).
pub fn info_of(pod: &k8s_openapi::api::core::v1::Pod) -> Option<(String, PodInfo)> {
    let uid = pod.metadata.uid.clone()?;
    let mut containers = HashMap::new();
    if let Some(status) = &pod.status {
        let all = status
            .container_statuses
            .iter()
            .flatten()
            .chain(status.init_container_statuses.iter().flatten())
            .chain(status.ephemeral_container_statuses.iter().flatten());
        for c in all {
            if let Some(id) = &c.container_id {
                containers.insert(strip_runtime_scheme(id).to_string(), c.name.clone());
            }
        }
    }
    Some((
        uid,
        PodInfo {
            name: pod.metadata.name.clone().unwrap_or_default(),
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            containers,
        },
    ))
}

/// Keeps `dir` in sync with the pods scheduled to `node_name` until the client's server goes
/// away for good. Watch errors are retried with backoff by `kube-runtime`'s watcher.
pub async fn watch(client: kube::Client, node_name: String, dir: PodDirectory) {
    use futures::StreamExt;
    use k8s_openapi::api::core::v1::Pod;
    use kube::runtime::watcher::{self, Event};
    use kube::runtime::WatchStreamExt;

    let api: kube::Api<Pod> = kube::Api::all(client);
    let cfg = watcher::Config::default().fields(&format!("spec.nodeName={node_name}"));
    let mut stream = watcher::watcher(api, cfg).default_backoff().boxed();
    let mut pending: HashMap<String, PodInfo> = HashMap::new();
    while let Some(event) = stream.next().await {
        match event {
            Ok(Event::Apply(pod)) => {
                if let Some((uid, info)) = info_of(&pod) {
                    dir.insert(uid, info);
                }
            }
            Ok(Event::Delete(pod)) => {
                if let Some(uid) = pod.metadata.uid.as_deref() {
                    dir.remove(uid);
                }
            }
            Ok(Event::Init) => pending.clear(),
            Ok(Event::InitApply(pod)) => {
                if let Some((uid, info)) = info_of(&pod) {
                    pending.insert(uid, info);
                }
            }
            Ok(Event::InitDone) => {
                tracing::info!(pods = pending.len(), node = %node_name, "pod names synced from the API");
                dir.replace_all(std::mem::take(&mut pending));
            }
            Err(e) => {
                tracing::warn!(error = %e, "pod watch failed; retrying (pods keep their UID labels meanwhile)")
            }
        }
    }
}
