//! The controller's caches: reflector stores of Nodes, Pods, Namespaces, PodDisruptionBudgets and
//! Flotta's EdgeDevices and EdgeWorkloads, with each store's health.
//!
//! A store whose resource is not served (Flotta's CRDs not installed: 404) or not permitted (a
//! trimmed Role: 403) does not hold the controller back: it becomes *settled* with that reason,
//! the policies that need it report it in `Degraded`, and everything else runs. Its watcher keeps
//! retrying (at most every 5 s), so CRDs installed later are picked up without a restart.
//!
//! The stores are used to *find* things (targets, workloads, moves in flight) and to plan. Every
//! write that depends on an object's state is conditioned on a fresh read or on the
//! resourceVersion last written, never on a cache that may lag behind the API server.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use edgewatt_crds::{EdgeDevice, EdgeWorkload};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::{
    runtime::{
        reflector::{self, reflector, Store},
        watcher, WatchStreamExt,
    },
    Api, Client, Resource,
};

/// What the stores keep of each object: only what the snapshot, the planner and the actuator
/// read, so 100 000 EdgeWorkloads fit in a small controller (the pod template of a workload is
/// read from the API server when it is copied, never from the store).
pub mod trim {
    use super::*;

    /// `uid` is dropped where it is never read (it costs two strings per object: one in the
    /// object, one in its store key); pods keep it (an evicted pod is tracked until *that* pod is
    /// gone, and a StatefulSet's replacement has the same name). `resourceVersion` stays.
    fn meta(m: &mut kube::api::ObjectMeta) {
        m.managed_fields = None;
        m.finalizers = None;
        m.uid = None;
        m.generate_name = None;
        m.self_link = None;
    }

    /// Keeps of `spec.pod.spec` only what says whether two instances can share a device
    /// (`hostNetwork`, host ports: see `snapshot::host_bound`); nothing at all for most workloads.
    pub fn workload(w: &mut EdgeWorkload) {
        meta(&mut w.metadata);
        w.spec.pod = w.spec.pod.take().and_then(|p| {
            crate::snapshot::host_bound(&p.spec).map(|_| {
                let spec = &p.spec;
                let ports = |k: &str| {
                    spec[k]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|c| serde_json::json!({"ports": c["ports"].as_array().map(|ps| ps.iter().map(|p| serde_json::json!({"hostPort": p["hostPort"]})).collect::<Vec<_>>())}))
                        .collect::<Vec<_>>()
                };
                Box::new(edgewatt_crds::flotta::EdgeWorkloadPod {
                    spec: serde_json::json!({
                        "hostNetwork": spec["hostNetwork"],
                        "containers": ports("containers"),
                        "initContainers": ports("initContainers"),
                    }),
                    extra: Default::default(),
                })
            })
        });
        w.spec.data = None;
        w.spec.image_registries = None;
        w.spec.metrics = None;
        w.spec.extra.clear();
        w.spec.type_ = String::new();
        w.status = None;
    }

    pub fn device(d: &mut EdgeDevice) {
        meta(&mut d.metadata);
        d.spec = Default::default();
        if let Some(s) = d.status.as_mut() {
            s.hardware = None;
            s.extra.clear();
            for w in &mut s.workloads {
                w.extra.clear();
                w.last_data_upload = None;
                w.last_transition_time = None;
            }
        }
    }

    pub fn pod(p: &mut Pod) {
        let uid = p.metadata.uid.take();
        meta(&mut p.metadata);
        p.metadata.uid = uid;
        if let Some(s) = p.spec.as_mut() {
            // Each container's CPU limit only: whether the ladder may throttle the pod
            // (`snapshot::throttleable`); the resize itself reads the pod fresh.
            for c in &mut s.containers {
                let cpu = c
                    .resources
                    .as_mut()
                    .and_then(|r| r.limits.as_mut())
                    .and_then(|l| l.remove("cpu"));
                *c = k8s_openapi::api::core::v1::Container {
                    name: std::mem::take(&mut c.name),
                    resources: cpu.map(|q| k8s_openapi::api::core::v1::ResourceRequirements {
                        limits: Some(BTreeMap::from([("cpu".to_string(), q)])),
                        ..Default::default()
                    }),
                    ..Default::default()
                };
            }
            s.init_containers = None;
            s.ephemeral_containers = None;
            s.volumes = None;
        }
        if let Some(s) = p.status.as_mut() {
            *s = k8s_openapi::api::core::v1::PodStatus {
                phase: s.phase.take(),
                ..Default::default()
            };
        }
    }

    pub fn node(n: &mut Node) {
        meta(&mut n.metadata);
        if let Some(s) = n.status.as_mut() {
            *s = k8s_openapi::api::core::v1::NodeStatus {
                conditions: s.conditions.take(),
                ..Default::default()
            };
        }
    }

    pub fn namespace(n: &mut Namespace) {
        meta(&mut n.metadata);
    }

    pub fn pdb(p: &mut PodDisruptionBudget) {
        meta(&mut p.metadata);
    }
}

/// The resources the controller caches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Res {
    Nodes,
    Pods,
    Namespaces,
    Pdbs,
    Devices,
    Workloads,
}

impl Res {
    pub const ALL: [Res; 6] = [
        Res::Nodes,
        Res::Pods,
        Res::Namespaces,
        Res::Pdbs,
        Res::Devices,
        Res::Workloads,
    ];

    /// The resource as RBAC names it (`list poddisruptionbudgets`).
    pub fn plural(self) -> &'static str {
        match self {
            Res::Nodes => "nodes",
            Res::Pods => "pods",
            Res::Namespaces => "namespaces",
            Res::Pdbs => "poddisruptionbudgets",
            Res::Devices => "edgedevices",
            Res::Workloads => "edgeworkloads",
        }
    }

    pub fn is_flotta(self) -> bool {
        matches!(self, Res::Devices | Res::Workloads)
    }
}

/// How a store stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreState {
    /// The first list has not completed yet.
    Syncing,
    /// Listed and watched.
    Synced,
    /// The resource is not served (404: its CRD is not installed).
    Missing(String),
    /// Listing it is forbidden (403): the server's message.
    Forbidden(String),
    /// The first list failed for another reason (retried).
    Failing(String),
}

impl StoreState {
    /// Synced, or failed in a way that will not change by waiting (readiness does not wait).
    pub fn settled(&self) -> bool {
        matches!(
            self,
            StoreState::Synced | StoreState::Missing(_) | StoreState::Forbidden(_)
        )
    }
}

/// Each store's state, shared with its watcher task.
#[derive(Debug, Clone, Default)]
pub struct Health(Arc<Mutex<BTreeMap<Res, StoreState>>>);

impl Health {
    pub fn get(&self, r: Res) -> StoreState {
        self.0
            .lock()
            .expect("health lock")
            .get(&r)
            .cloned()
            .unwrap_or(StoreState::Syncing)
    }

    fn set(&self, r: Res, s: StoreState) {
        let mut m = self.0.lock().expect("health lock");
        let before = m.insert(r, s.clone());
        if before.as_ref() != Some(&s) {
            match &s {
                StoreState::Synced => tracing::info!(resource = r.plural(), "store synced"),
                StoreState::Syncing => {}
                other => {
                    tracing::warn!(resource = r.plural(), state = ?other, "store not available")
                }
            }
        }
    }

    /// A watch error: 404 and 403 on the list say what is missing; other errors only matter
    /// before the first list (afterwards the store keeps serving what it has while it retries).
    fn failed(&self, r: Res, e: &watcher::Error) {
        let status = match e {
            watcher::Error::InitialListFailed(kube::Error::Api(s))
            | watcher::Error::WatchStartFailed(kube::Error::Api(s))
            | watcher::Error::WatchFailed(kube::Error::Api(s)) => Some(s.as_ref()),
            watcher::Error::WatchError(s) => Some(s.as_ref()),
            _ => None,
        };
        match status {
            Some(s) if s.code == 404 => self.set(r, StoreState::Missing(s.message.clone())),
            Some(s) if s.code == 403 => self.set(r, StoreState::Forbidden(s.message.clone())),
            _ => {
                tracing::debug!(resource = r.plural(), "watch: {e}");
                if self.get(r) != StoreState::Synced {
                    self.set(r, StoreState::Failing(e.to_string()));
                }
            }
        }
    }
}

/// Aborts the reflector tasks on drop.
struct Tasks(Vec<tokio::task::AbortHandle>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

/// Re-watch backoff for the stores: 500 ms doubling to at most 5 s, reset on success. kube's
/// default grows to 30 s and only resets after 2 minutes without errors; an API server that
/// closes slow watches a few times in a row (it does under load) then leaves the stores — and
/// every decision taken from them — up to half a minute stale. The 5 s cap is also how soon a
/// CRD installed later (Flotta's) is picked up.
#[derive(Debug, Clone)]
struct WatchBackoff {
    next: std::time::Duration,
}

impl Default for WatchBackoff {
    fn default() -> Self {
        Self {
            next: std::time::Duration::from_millis(500),
        }
    }
}

impl Iterator for WatchBackoff {
    type Item = std::time::Duration;
    fn next(&mut self) -> Option<Self::Item> {
        let now = self.next;
        self.next = (self.next * 2).min(std::time::Duration::from_secs(5));
        Some(now)
    }
}

impl kube::runtime::utils::Backoff for WatchBackoff {
    fn reset(&mut self) {
        *self = Self::default();
    }
}

/// Reflector stores shared by all policies. The reflector tasks stop when the last clone is
/// dropped.
#[derive(Clone)]
pub struct Stores {
    pub nodes: Store<Node>,
    pub pods: Store<Pod>,
    pub namespaces: Store<Namespace>,
    pub pdbs: Store<PodDisruptionBudget>,
    pub devices: Store<EdgeDevice>,
    pub workloads: Store<EdgeWorkload>,
    pub health: Health,
    _tasks: Arc<Tasks>,
}

fn spawn_store<K>(
    res: Res,
    api: Api<K>,
    trim: fn(&mut K),
    health: &Health,
    tasks: &mut Vec<tokio::task::AbortHandle>,
) -> Store<K>
where
    K: Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = reflector(
        writer,
        watcher(api, watcher::Config::default()).modify(trim),
    )
    .backoff(WatchBackoff::default());
    let h = health.clone();
    let task = tokio::spawn(async move {
        stream
            .for_each(|r| {
                match &r {
                    Ok(watcher::Event::InitDone) => h.set(res, StoreState::Synced),
                    Ok(_) => {}
                    Err(e) => h.failed(res, e),
                }
                async {}
            })
            .await
    });
    tasks.push(task.abort_handle());
    reader
}

impl Stores {
    /// Starts the reflectors.
    pub fn spawn(client: &Client) -> Self {
        let mut t = Vec::new();
        let h = Health::default();
        let c = || client.clone();
        Self {
            nodes: spawn_store(Res::Nodes, Api::all(c()), trim::node, &h, &mut t),
            pods: spawn_store(Res::Pods, Api::all(c()), trim::pod, &h, &mut t),
            namespaces: spawn_store(Res::Namespaces, Api::all(c()), trim::namespace, &h, &mut t),
            pdbs: spawn_store(Res::Pdbs, Api::all(c()), trim::pdb, &h, &mut t),
            devices: spawn_store(Res::Devices, Api::all(c()), trim::device, &h, &mut t),
            workloads: spawn_store(Res::Workloads, Api::all(c()), trim::workload, &h, &mut t),
            health: h,
            _tasks: Arc::new(Tasks(t)),
        }
    }

    /// Whether every store has listed, or failed in a way waiting will not fix.
    pub fn settled(&self) -> bool {
        Res::ALL.iter().all(|r| self.health.get(*r).settled())
    }

    /// Waits until [`Stores::settled`].
    pub async fn ready(&self) {
        while !self.settled() {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// The store's objects when it is synced; nothing when its resource is missing or
    /// forbidden (a store that lost its CRD may still hold what it had).
    pub fn synced<K>(&self, r: Res, store: &Store<K>) -> Vec<Arc<K>>
    where
        K: Resource<DynamicType = ()> + Clone + 'static,
    {
        if self.health.get(r) == StoreState::Synced {
            store.state()
        } else {
            Vec::new()
        }
    }
}
