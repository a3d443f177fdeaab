//! Pod names for pod UIDs found in cgroup paths.
//!
//! Choice: a Kubernetes API watch of this node's pods (`fieldSelector=spec.nodeName=<node>`)
//! rather than the kubelet's `/pods` endpoint. The watch needs only `get/list/watch pods` RBAC
//! (the kubelet endpoint needs `nodes/proxy`, which is close to node-admin), costs one long-lived
//! connection instead of a poll, and works the same on kind, k3s and managed clusters. Without a
//! cluster (no in-cluster env, no KUBECONFIG) nothing is watched and pods are labelled by UID only.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

/// What the exporter knows about one pod on this node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodInfo {
    pub name: String,
    pub namespace: String,
    /// Container id (without the `containerd://` scheme) → container name.
    pub containers: HashMap<String, String>,
}

/// Pod UID → info, shared between the watch task and the collector. A generation number moves on
/// every change, so the collector looks names up again only when something changed.
#[derive(Debug, Clone, Default)]
pub struct PodDirectory(Arc<(RwLock<HashMap<String, PodInfo>>, AtomicU64)>);

impl PodDirectory {
    pub fn get(&self, uid: &str) -> Option<PodInfo> {
        self.0 .0.read().ok()?.get(uid).cloned()
    }

    pub fn insert(&self, uid: String, info: PodInfo) {
        if let Ok(mut m) = self.0 .0.write() {
            m.insert(uid, info);
            self.changed();
        }
    }

    pub fn remove(&self, uid: &str) {
        if let Ok(mut m) = self.0 .0.write() {
            m.remove(uid);
            self.changed();
        }
    }

    pub fn replace_all(&self, all: HashMap<String, PodInfo>) {
        if let Ok(mut m) = self.0 .0.write() {
            *m = all;
            self.changed();
        }
    }

    fn changed(&self) {
        self.0 .1.fetch_add(1, Ordering::Release);
    }

    /// Moves on with every insert, removal or resync.
    pub fn generation(&self) -> u64 {
        self.0 .1.load(Ordering::Acquire)
    }

    pub fn len(&self) -> usize {
        self.0 .0.read().map(|m| m.len()).unwrap_or(0)
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

/// Annotation the kubelet puts on a static pod's mirror pod: the static pod's own UID (the hash of
/// its manifest, 32 hex digits), which is what its cgroups are named after — the mirror pod's
/// `metadata.uid` is a different, API-assigned UUID (kubernetes/kubernetes
/// `pkg/kubelet/types/pod_update.go` `ConfigMirrorAnnotationKey`, `pkg/kubelet/config/common.go`).
#[cfg(feature = "kubernetes")]
pub const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";

/// The UIDs a pod's cgroups may carry: `metadata.uid`, and for a mirror pod the static pod's UID.
#[cfg(feature = "kubernetes")]
pub fn cgroup_uids(pod: &k8s_openapi::api::core::v1::Pod) -> Vec<String> {
    let mut uids: Vec<String> = pod.metadata.uid.iter().cloned().collect();
    if let Some(hash) = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(MIRROR_ANNOTATION))
        .filter(|h| !h.is_empty() && !uids.contains(h))
    {
        uids.push(hash.clone());
    }
    uids
}

/// Pod info from a Pod object: name, namespace and container id → name for every container
/// status (init and ephemeral containers included).
#[cfg(feature = "kubernetes")]
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
#[cfg(feature = "kubernetes")]
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
                if let Some((_, info)) = info_of(&pod) {
                    for uid in cgroup_uids(&pod) {
                        dir.insert(uid, info.clone());
                    }
                }
            }
            Ok(Event::Delete(pod)) => {
                for uid in cgroup_uids(&pod) {
                    dir.remove(&uid);
                }
            }
            Ok(Event::Init) => pending.clear(),
            Ok(Event::InitApply(pod)) => {
                if let Some((_, info)) = info_of(&pod) {
                    for uid in cgroup_uids(&pod) {
                        pending.insert(uid, info.clone());
                    }
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
