//! An in-process Kubernetes API server double that speaks the real HTTP protocol, so
//! `kube::Client`, `kube::runtime::watcher` and `Controller` run unmodified against it.
//!
//! No kube-apiserver binary exists on the test machines; this double decides whether the
//! controller's tests mean anything, so it follows the real server wherever our code touches it
//! (resourceVersions, watch semantics, status subresources, finalizers, PDB-checked eviction,
//! `metav1.Status` errors). What it knowingly simplifies is listed in `e2e/README.md`.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let server = edgewatt_e2e::apiserver::ApiServer::start().await?;
//! let client = server.client()?;
//! std::env::set_var("KUBECONFIG", server.kubeconfig_path()); // for child processes
//! # Ok(()) }
//! ```

pub mod auth;
mod crd;
mod discovery;
mod eviction;
mod graceful;
mod http;
mod ops;
pub mod patch;
mod quantity;
mod resize;
mod resources;
mod scale;
mod schema;
pub mod selectors;
mod status;
mod store;
mod watch;

use std::collections::HashMap;
use std::future::IntoFuture;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde_json::Value;

pub use auth::UserInfo;
pub use crd::parse_manifest as parse_crd;
pub use resize::ResizeOutcome;
pub use resources::{builtin_resources, ResourceDef};
pub use status::ApiError;
pub use store::EventType;

/// Admission hook: gets the new object (and the old one on updates) and returns the object to
/// store (possibly defaulted) or the rejection messages (`field: message`), answered as 422.
pub type Validator =
    Arc<dyn Fn(&Value, Option<&Value>) -> Result<Value, Vec<String>> + Send + Sync + 'static>;

/// One served request, for assertions such as "the controller made zero writes".
#[derive(Debug, Clone, PartialEq)]
pub struct RequestRecord {
    pub method: String,
    pub path: String,
    pub query: String,
    pub content_type: Option<String>,
    pub status: u16,
    /// The authenticated user (`system:anonymous` without a token; empty when the token was
    /// refused).
    pub user: String,
    /// The pod a service-account token was bound to (`authentication.kubernetes.io/pod-name`).
    pub pod: Option<String>,
}

impl RequestRecord {
    /// Whether the request could change state (anything but GET/HEAD/OPTIONS).
    pub fn is_write(&self) -> bool {
        !matches!(self.method.as_str(), "GET" | "HEAD" | "OPTIONS")
    }
}

#[derive(Debug, Default)]
pub(crate) struct Faults {
    pub fail_next: u32,
    pub latency: Duration,
    /// API priority-and-fairness rejections still to answer.
    pub throttle: Option<Throttle>,
    /// Per resource key: how late its watch events are delivered (min, max).
    pub watch_delay: HashMap<String, (Duration, Duration)>,
}

/// Requests that API priority and fairness rejects next (see [`ApiServer::throttle_next`]).
#[derive(Debug, Clone)]
pub(crate) struct Throttle {
    pub remaining: u32,
    pub retry_after_secs: u64,
    pub writes_only: bool,
}

/// Tunables for [`ApiServer::start_with`].
#[derive(Debug, Clone)]
pub struct Options {
    /// Changes kept for watches; older resourceVersions get 410 Gone.
    pub history: usize,
    /// How often watches with `allowWatchBookmarks` get a BOOKMARK (the real server: ~1 min).
    pub bookmark_interval: Duration,
    /// Install edgewatt's and Flotta's generated CRDs (`crds/`) at start. Off for a cluster where
    /// a chart install brings its own (Helm's `crds/`) and Flotta may be absent.
    pub crds: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            history: 100_000,
            bookmark_interval: Duration::from_secs(1),
            crds: true,
        }
    }
}

/// Shared server state.
pub(crate) struct App {
    pub registry: RwLock<Vec<ResourceDef>>,
    pub store: Mutex<store::Inner>,
    pub validators: RwLock<HashMap<String, Validator>>,
    /// Store key → admission from a stored CRD's schema.
    pub admissions: RwLock<HashMap<String, Arc<schema::Admission>>>,
    /// Bearer token → who it authenticates.
    pub tokens: RwLock<HashMap<String, auth::Subject>>,
    pub faults: Mutex<Faults>,
    pub log: Mutex<Vec<RequestRecord>>,
    /// (generation, gone): bumping the generation ends open watches; `gone` ends them with an
    /// ERROR 410 event first.
    pub drop_watches: tokio::sync::watch::Sender<(u64, bool)>,
    pub bookmark_interval: Duration,
    pub addr: SocketAddr,
    /// Grace periods for the kubelet stand-in to end (`graceful.rs`).
    pub kubelet: tokio::sync::mpsc::UnboundedSender<graceful::Expiry>,
    /// Whether `pods/{name}/resize` is served (off: a cluster before 1.33, or with the
    /// `InPlacePodVerticalScaling` gate off).
    pub pod_resize: AtomicBool,
}

impl App {
    pub(crate) fn resource(&self, group: &str, version: &str, plural: &str) -> Option<ResourceDef> {
        self.registry
            .read()
            .expect("registry lock")
            .iter()
            .find(|r| r.group == group && r.version == version && r.plural == plural)
            .cloned()
    }

    /// `plural` or `plural.group` (core types win for a bare plural).
    pub(crate) fn resource_by_name(&self, name: &str) -> Option<ResourceDef> {
        let reg = self.registry.read().expect("registry lock");
        let (plural, group) = name.split_once('.').unwrap_or((name, ""));
        reg.iter()
            .find(|r| r.plural == plural && r.group == group)
            .or_else(|| {
                if group.is_empty() {
                    reg.iter().find(|r| r.plural == plural)
                } else {
                    None
                }
            })
            .cloned()
    }

    fn resource_by_kind(&self, api_version: &str, kind: &str) -> Option<ResourceDef> {
        self.registry
            .read()
            .expect("registry lock")
            .iter()
            .find(|r| r.api_version() == api_version && r.kind == kind)
            .cloned()
    }
}

pub use crate::install_crypto_provider;

/// A bearer token no one can guess by accident (tests only; not a security boundary).
fn new_token() -> String {
    format!(
        "double.{:016x}{:016x}",
        ops::random_u64(),
        ops::random_u64().rotate_left(17)
    )
}

/// A running API server double on a loopback port; stops when dropped.
pub struct ApiServer {
    app: Arc<App>,
    admin_token: String,
    task: tokio::task::JoinHandle<()>,
    kubelet_task: tokio::task::JoinHandle<()>,
    kubeconfig: PathBuf,
    insecure_kubeconfig: PathBuf,
    insecure_addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.task.abort();
        self.kubelet_task.abort();
        self.drop_watches();
    }
}

impl ApiServer {
    /// Starts a server with the built-in types, the namespaces `default`, `kube-system`,
    /// `kube-public` and `kube-node-lease`, kube-apiserver's bootstrap RBAC roles, and
    /// edgewatt's and Flotta's generated CRDs, like a fresh cluster with both installed.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(Options::default()).await
    }

    /// [`ApiServer::start`] with tunables.
    pub async fn start_with(opts: Options) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (drop_watches, _) = tokio::sync::watch::channel((0, false));
        let (kubelet, expiries) = tokio::sync::mpsc::unbounded_channel();
        let app = Arc::new(App {
            registry: RwLock::new(builtin_resources()),
            store: Mutex::new(store::Inner::new(opts.history.max(1))),
            validators: RwLock::new(HashMap::new()),
            admissions: RwLock::new(HashMap::new()),
            tokens: RwLock::new(HashMap::new()),
            faults: Mutex::new(Faults::default()),
            log: Mutex::new(Vec::new()),
            drop_watches,
            bookmark_interval: opts.bookmark_interval,
            addr,
            kubelet,
            pod_resize: AtomicBool::new(true),
        });
        let kubelet_task = graceful::spawn_kubelet(Arc::downgrade(&app), expiries);
        let router = http::router(app.clone(), false);
        let insecure_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let insecure_addr = insecure_listener.local_addr()?;
        let insecure = http::router(app.clone(), true);
        let task = tokio::spawn(async move {
            let secure = axum::serve(listener, router);
            let insecure = axum::serve(insecure_listener, insecure);
            if let Err(e) = tokio::try_join!(secure.into_future(), insecure.into_future()) {
                tracing::error!("API server double stopped: {e}");
            }
        });
        let dir = tempfile::tempdir()?;
        let kubeconfig = dir.path().join("kubeconfig");
        let insecure_kubeconfig = dir.path().join("kubeconfig-insecure-port");
        let admin_token = new_token();
        app.tokens
            .write()
            .expect("tokens lock")
            .insert(admin_token.clone(), auth::Subject::Admin);
        let server = Self {
            app,
            admin_token,
            task,
            kubelet_task,
            kubeconfig,
            insecure_kubeconfig,
            insecure_addr,
            _dir: dir,
        };
        server.write_kubeconfig(&server.kubeconfig)?;
        server.write_kubeconfig_to(
            &server.insecure_kubeconfig,
            &format!("http://{}", server.insecure_addr),
            "",
            "default",
        )?;
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            server.put(serde_json::json!({
                "apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": ns}, "status": {"phase": "Active"}
            }))?;
        }
        for obj in auth::bootstrap_policy() {
            server.put(obj)?;
        }
        if opts.crds {
            for text in crd::GENERATED {
                server.put(crd::parse_manifest(text)?)?;
            }
        }
        Ok(server)
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.app.addr)
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.app.addr
    }

    /// A `kube::Client` for this server with the admin token (group `system:masters`, which
    /// RBAC never refuses), default namespace `default`.
    pub fn client(&self) -> anyhow::Result<kube::Client> {
        Ok(kube::Client::try_from(self.config()?)?)
    }

    /// A `kube::Config` for this server with the admin token (to tune timeouts before building
    /// a client).
    pub fn config(&self) -> anyhow::Result<kube::Config> {
        self.config_with_token(&self.admin_token)
    }

    /// A `kube::Config` that authenticates with `token` (see
    /// [`ApiServer::service_account_token`]).
    pub fn config_with_token(&self, token: &str) -> anyhow::Result<kube::Config> {
        install_crypto_provider();
        let mut config = kube::Config::new(self.url().parse()?);
        config.default_namespace = "default".into();
        config.auth_info = serde_json::from_value(serde_json::json!({ "token": token }))?;
        Ok(config)
    }

    /// The admin's bearer token (kubeadm's `admin.conf`: group `system:masters`).
    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    /// A token of ServiceAccount `namespace/name`, optionally bound to a pod (the projected
    /// token the kubelet mounts): it authenticates as `system:serviceaccount:<ns>:<name>` with
    /// groups `system:serviceaccounts`, `system:serviceaccounts:<ns>` and `system:authenticated`
    /// while the ServiceAccount exists (401 after it is deleted).
    pub fn service_account_token(&self, namespace: &str, name: &str, pod: Option<&str>) -> String {
        self.add_token(auth::Subject::ServiceAccount {
            namespace: namespace.into(),
            name: name.into(),
            pod: pod.map(String::from),
        })
    }

    /// A token of a plain user with groups (`system:authenticated` is added).
    pub fn user_token(&self, name: &str, groups: &[&str]) -> String {
        self.add_token(auth::Subject::User(UserInfo {
            name: name.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            pod: None,
        }))
    }

    fn add_token(&self, subject: auth::Subject) -> String {
        let token = new_token();
        self.app
            .tokens
            .write()
            .expect("tokens lock")
            .insert(token.clone(), subject);
        token
    }

    /// Path of a kubeconfig file pointing at this server with the admin token (context
    /// `edgewatt-double`).
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// Writes an admin kubeconfig for this server to `path`, for separately started binaries.
    pub fn write_kubeconfig(&self, path: &Path) -> anyhow::Result<()> {
        self.write_kubeconfig_with_token(path, &self.admin_token, "default")
    }

    /// Writes a kubeconfig for this server that authenticates with `token`, default namespace
    /// `namespace`.
    pub fn write_kubeconfig_with_token(
        &self,
        path: &Path,
        token: &str,
        namespace: &str,
    ) -> anyhow::Result<()> {
        self.write_kubeconfig_to(path, &self.url(), token, namespace)
    }

    /// A kubeconfig for Go clients such as Helm, on the insecure port (every request is
    /// `system:unsecured`, group `system:masters`): client-go reads no credentials from a
    /// kubeconfig whose server is plain HTTP (clientcmd's "only try to read the auth information
    /// if we are secure"), so a token would never reach the double.
    pub fn insecure_kubeconfig_path(&self) -> &Path {
        &self.insecure_kubeconfig
    }

    fn write_kubeconfig_to(
        &self,
        path: &Path,
        url: &str,
        token: &str,
        namespace: &str,
    ) -> anyhow::Result<()> {
        let user = if token.is_empty() {
            "{}".to_string()
        } else {
            format!("\n    token: {token}")
        };
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: edgewatt-double\n  cluster:\n    \
             server: {url}\nusers:\n- name: edgewatt-double\n  user: {user}\n\
             contexts:\n- name: edgewatt-double\n  context:\n    cluster: edgewatt-double\n    \
             user: edgewatt-double\n    namespace: {namespace}\ncurrent-context: edgewatt-double\n"
        );
        std::fs::write(path, text)?;
        Ok(())
    }

    /// Serves another type from now on (runtime registration of arbitrary kinds).
    pub fn register(&self, def: ResourceDef) {
        let mut reg = self.app.registry.write().expect("registry lock");
        reg.retain(|r| {
            !(r.group == def.group && r.version == def.version && r.plural == def.plural)
        });
        reg.push(def);
    }

    /// Stops serving a type, as when its CRD is not installed or is deleted: its objects go
    /// (DELETED events), open watches end, requests answer 404 NotFound "the server could not
    /// find the requested resource" and discovery no longer lists it. `resource` is `plural` or
    /// `plural.group`. Re-[`register`](Self::register) to install it again.
    pub fn unregister(&self, resource: &str) {
        let Some(res) = self.app.resource_by_name(resource) else {
            return;
        };
        {
            let mut inner = self.app.store.lock().expect("store lock");
            let crd_name = format!("{}.{}", res.plural, res.group);
            if let Some(crd) = inner.remove(crd::CRD_KEY, "", &crd_name) {
                // Served from a stored CRD: deleting the CRD is what uninstalls it.
                self.app.crd_removed(&mut inner, &crd);
                return;
            }
            let keys: Vec<(String, String)> = inner
                .objects_of(&res.key())
                .map(|(_, v)| {
                    (
                        v["metadata"]["namespace"]
                            .as_str()
                            .unwrap_or_default()
                            .to_string(),
                        v["metadata"]["name"]
                            .as_str()
                            .unwrap_or_default()
                            .to_string(),
                    )
                })
                .collect();
            for (ns, name) in keys {
                inner.remove(&res.key(), &ns, &name);
            }
        }
        self.app
            .registry
            .write()
            .expect("registry lock")
            .retain(|r| {
                !(r.group == res.group && r.version == res.version && r.plural == res.plural)
            });
        self.drop_watches();
    }

    /// Plugs an admission validator for `plural` (create, update, patch, status writes).
    pub fn register_validator(&self, plural: &str, validator: Validator) {
        self.app
            .validators
            .write()
            .expect("validators lock")
            .insert(plural.to_string(), validator);
    }

    // ----- direct store access (no HTTP, no admission; still produces watch events) -----

    /// Reads an object; `resource` is `plural` or `plural.group`, `ns` `None` for cluster scope.
    pub fn get(&self, resource: &str, ns: Option<&str>, name: &str) -> Option<Value> {
        let res = self.app.resource_by_name(resource)?;
        let inner = self.app.store.lock().expect("store lock");
        inner
            .get(&res.key(), ns.unwrap_or_default(), name)
            .map(|v| (*v).clone())
    }

    /// Lists every object of a resource (all namespaces), sorted by namespace and name.
    pub fn list(&self, resource: &str) -> Vec<Value> {
        let Some(res) = self.app.resource_by_name(resource) else {
            return Vec::new();
        };
        let inner = self.app.store.lock().expect("store lock");
        inner
            .objects_of(&res.key())
            .map(|(_, v)| (**v).clone())
            .collect()
    }

    /// Creates or replaces an object as-is (status included), found by `apiVersion` and `kind`;
    /// fills uid/creationTimestamp/generation when missing and assigns a new resourceVersion.
    pub fn put(&self, obj: Value) -> anyhow::Result<Value> {
        let api_version = obj["apiVersion"].as_str().unwrap_or_default();
        let kind = obj["kind"].as_str().unwrap_or_default();
        let res = self
            .app
            .resource_by_kind(api_version, kind)
            .ok_or_else(|| anyhow::anyhow!("no resource registered for {api_version} {kind}"))?;
        let mut obj = obj;
        let is_crd = res.key() == crd::CRD_KEY;
        if is_crd && obj["status"].is_null() {
            obj["status"] = crd::status_of(&obj);
        }
        let mut inner = self.app.store.lock().expect("store lock");
        let stored = (*ops::put_direct(&mut inner, &res, obj)).clone();
        drop(inner);
        if is_crd {
            self.app.crd_stored(&stored);
        }
        Ok(stored)
    }

    /// Typed [`ApiServer::get`].
    pub fn get_typed<K>(&self, ns: Option<&str>, name: &str) -> Option<K>
    where
        K: kube::Resource<DynamicType = ()> + serde::de::DeserializeOwned,
    {
        let res = format!("{}.{}", K::plural(&()), K::group(&()));
        let v = self.get(res.trim_end_matches('.'), ns, name)?;
        serde_json::from_value(v).ok()
    }

    /// Typed [`ApiServer::put`].
    pub fn put_typed<K>(&self, obj: &K) -> anyhow::Result<K>
    where
        K: kube::Resource<DynamicType = ()> + serde::Serialize + serde::de::DeserializeOwned,
    {
        let mut v = serde_json::to_value(obj)?;
        v["apiVersion"] = K::api_version(&()).into();
        v["kind"] = K::kind(&()).into();
        Ok(serde_json::from_value(self.put(v)?)?)
    }

    /// Removes an object immediately (ignoring finalizers); emits DELETED.
    pub fn remove(&self, resource: &str, ns: Option<&str>, name: &str) -> Option<Value> {
        let res = self.app.resource_by_name(resource)?;
        let mut inner = self.app.store.lock().expect("store lock");
        let gone = inner.remove(&res.key(), ns.unwrap_or_default(), name)?;
        if res.key() == crd::CRD_KEY {
            self.app.crd_removed(&mut inner, &gone);
        }
        Some((*gone).clone())
    }

    /// Sets `status.disruptionsAllowed` of a PodDisruptionBudget (the double has no disruption
    /// controller to recompute it).
    pub fn set_pdb_disruptions_allowed(
        &self,
        ns: &str,
        name: &str,
        allowed: i64,
    ) -> anyhow::Result<()> {
        let mut pdb = self
            .get("poddisruptionbudgets.policy", Some(ns), name)
            .ok_or_else(|| anyhow::anyhow!("no PodDisruptionBudget {ns}/{name}"))?;
        pdb["status"]["disruptionsAllowed"] = allowed.into();
        if pdb["metadata"]["generation"].is_i64() {
            pdb["status"]["observedGeneration"] = pdb["metadata"]["generation"].clone();
        }
        self.put(pdb)?;
        Ok(())
    }

    /// Serves `pods/{name}/resize` (the default, as Kubernetes ≥ 1.33 does) or not: without it
    /// the double is a cluster before 1.33 or with the `InPlacePodVerticalScaling` feature gate
    /// off — `pods/x/resize` answers 404 "the server could not find the requested resource" and
    /// `/api/v1` discovery does not list `pods/resize` (kubernetes/kubernetes
    /// `pkg/registry/core/rest/storage_core.go` registers it only with the gate on). A plain pod
    /// update still may not change resources.
    pub fn serve_pod_resize(&self, served: bool) {
        self.app.pod_resize.store(served, Ordering::SeqCst);
    }

    /// Plays the kubelet's answer to the current resize of pod `ns/name` by writing what a
    /// kubelet ≥ 1.33 writes to its status (a MODIFIED event, a new resourceVersion):
    /// `Deferred`/`Infeasible` set condition `PodResizePending` with that reason and message;
    /// `InProgress` replaces it with `PodResizeInProgress` and sets `allocatedResources`;
    /// `Applied` clears both and sets each container's `status.containerStatuses[].resources`
    /// to the spec's CPU and memory and `status.observedGeneration` to the pod's generation.
    /// Conditions carry `observedGeneration` = the pod's generation. The double never actuates a
    /// resize by itself. Returns the stored pod.
    pub fn set_resize_outcome(
        &self,
        ns: &str,
        name: &str,
        outcome: ResizeOutcome,
    ) -> anyhow::Result<Value> {
        let res = self
            .app
            .resource("", "v1", "pods")
            .expect("pods are built in");
        let mut inner = self.app.store.lock().expect("store lock");
        let mut pod = (*inner
            .get(&res.key(), ns, name)
            .ok_or_else(|| anyhow::anyhow!("no pod {ns}/{name}"))?)
        .clone();
        resize::apply_outcome(&mut pod, &outcome);
        Ok((*inner.put(&res.key(), pod)).clone())
    }

    /// The current cluster-wide resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.app.store.lock().expect("store lock").rv
    }

    // ----- fault injection -----

    /// Ends every open watch stream now (clients reconnect from their last resourceVersion).
    pub fn drop_watches(&self) {
        self.app.drop_watches.send_modify(|g| *g = (g.0 + 1, false));
    }

    /// Ends every open watch with an ERROR event carrying `410 Gone`, as the real server does
    /// when a watcher falls behind the watch cache; clients must re-list.
    pub fn expire_watches(&self) {
        self.app.drop_watches.send_modify(|g| *g = (g.0 + 1, true));
    }

    /// Forgets the watch history: reconnecting watches get `410 Gone` and must re-list.
    pub fn compact(&self) {
        self.app.store.lock().expect("store lock").compact();
    }

    /// [`ApiServer::compact`] then [`ApiServer::expire_watches`]: every open watcher gets 410
    /// Gone and must re-list.
    pub fn force_relist(&self) {
        self.compact();
        self.expire_watches();
    }

    /// The next `n` requests fail with 500 InternalError.
    pub fn fail_next(&self, n: u32) {
        self.app.faults.lock().expect("faults lock").fail_next = n;
    }

    /// Delays every request by `latency` (zero to stop).
    pub fn set_latency(&self, latency: Duration) {
        self.app.faults.lock().expect("faults lock").latency = latency;
    }

    /// The next `n` requests (only writes when `writes_only`) are rejected the way API priority
    /// and fairness rejects a request when its priority level's queues are full: 429 with a
    /// `Retry-After` header and the plain-text body "Too many requests, please try again later."
    /// (kube-apiserver `staging/src/k8s.io/apiserver/pkg/server/filters/priority-and-fairness.go`,
    /// `tooManyRequests`) — not a `Status` and no `DisruptionBudget` cause, unlike an eviction
    /// that a PodDisruptionBudget refuses.
    pub fn throttle_next(&self, n: u32, retry_after: Duration, writes_only: bool) {
        self.app.faults.lock().expect("faults lock").throttle = Some(Throttle {
            remaining: n,
            retry_after_secs: retry_after.as_secs().max(1),
            writes_only,
        });
    }

    /// Delivers watch events of `resource` (`plural` or `plural.group`) between `min` and `max`
    /// late, in order, as watches of a real API server lag behind writes (each resource has its
    /// own watch cache, so one resource's events can arrive seconds after another's). Reads (GET,
    /// LIST) stay current, like the quorum reads kube's clients make. `Duration::ZERO` twice stops
    /// it; streams opened before the call keep the delay they started with.
    pub fn set_watch_delay(&self, resource: &str, min: Duration, max: Duration) {
        let Some(res) = self.app.resource_by_name(resource) else {
            panic!("set_watch_delay: unknown resource {resource}");
        };
        let mut f = self.app.faults.lock().expect("faults lock");
        if max.is_zero() {
            f.watch_delay.remove(&res.key());
        } else {
            f.watch_delay.insert(res.key(), (min, max.max(min)));
        }
    }

    // ----- request log -----

    /// Every request served so far.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.app.log.lock().expect("log lock").clone()
    }

    /// Only the writes (POST/PUT/PATCH/DELETE).
    pub fn writes(&self) -> Vec<RequestRecord> {
        self.requests()
            .into_iter()
            .filter(|r| r.is_write())
            .collect()
    }

    /// Empties the request log.
    pub fn clear_requests(&self) {
        self.app.log.lock().expect("log lock").clear();
    }
}
