//! Runs a pod that a chart rendered — a DaemonSet's or Deployment's pod template read back from
//! the API server double — as local processes, the way a kubelet would start it. This is the one
//! place where a rendered container becomes a process; every translation is listed here.
//!
//! 1. **Image → binary.** The image's repository basename names a binary of this workspace
//!    (`ghcr.io/edgewatt/edgewatt-exporter:0.1.0` → `target/<profile>/edgewatt-exporter`): the
//!    project's images have that binary as entrypoint. `command` replaces the entrypoint (its
//!    first element's basename names the binary), `args` follow, `$(VAR)` expanded from the
//!    container's env as the kubelet does. Other images cannot run here: an error.
//! 2. **Network.** Each pod has its own IP on a cluster; here all pods share the loopback, so each
//!    declared `containerPort` gets a free local port and every `0.0.0.0:<containerPort>` in an
//!    argument becomes `127.0.0.1:<that port>`. [`LocalPod::port`] maps a port name or number to
//!    it (Services, monitors and probes resolve through it).
//! 3. **Files.** The container's filesystem is a directory (`rootfs`) in which each `volumeMount`
//!    is a symlink to its volume: `hostPath` → the simulated node's root directory + path (the
//!    fixture tree *is* the node: `/proc`, `/sys`, `/var/lib/edgewatt`; type `Directory` must
//!    exist, `DirectoryOrCreate` is created), `emptyDir` → a new directory, `secret`/`configMap`
//!    → files written from the object in the API server (a missing one stops the pod, unless
//!    `optional`), the service-account token mount → `token`, `namespace`, `ca.crt`. Absolute
//!    paths in arguments (a whole argument or after `=`) are rewritten into `rootfs`.
//! 4. **Environment.** Only what the pod spec says: `value`, `valueFrom.fieldRef`
//!    (`metadata.name`/`namespace`/`uid`/`labels['k']`/`annotations['k']`, `spec.nodeName`,
//!    `spec.serviceAccountName`, `status.podIP`/`hostIP` = 127.0.0.1), `secretKeyRef` and
//!    `configMapKeyRef` from the API server, plus `HOSTNAME` = the pod name (the container
//!    runtime's) and `PATH`. Nothing of the test's own environment leaks in except `RUST_LOG`
//!    given by the harness.
//! 5. **Identity.** `spec.serviceAccountName` (default `default`); unless
//!    `automountServiceAccountToken` is false (the pod's setting wins over the ServiceAccount's)
//!    the double mints a token bound to the pod, and the process gets `KUBECONFIG` pointing at a
//!    kubeconfig with that bearer token — in place of `KUBERNETES_SERVICE_HOST` and the token
//!    file, which kube's in-cluster config reads from fixed paths. No token: no `KUBECONFIG`, as a
//!    pod without a mounted token has no credentials.
//! 6. **Scheduling** (which nodes a DaemonSet runs on): `nodeSelector`, required node affinity
//!    (`In`, `NotIn`, `Exists`, `DoesNotExist`) and taints against tolerations, see
//!    [`schedulable`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::apiserver::ApiServer;

/// A child process with its log in a file; SIGKILLed on drop.
pub struct Proc {
    pub name: String,
    child: Option<Child>,
    pub log: PathBuf,
    bin: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
}

impl Proc {
    /// Starts `bin` with exactly `args` and `env` (the environment is cleared first).
    pub fn spawn(
        name: &str,
        bin: &Path,
        args: &[String],
        env: &[(String, String)],
        logdir: &Path,
    ) -> Proc {
        let mut p = Proc {
            name: name.into(),
            child: None,
            log: logdir.join(format!("{name}.log")),
            bin: bin.into(),
            args: args.to_vec(),
            env: env.to_vec(),
        };
        p.start();
        p
    }

    /// (Re)starts the process, appending to its log: a container restart in the same pod.
    pub fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open the process log");
        let child = Command::new(&self.bin)
            .args(&self.args)
            .env_clear()
            .envs(self.env.iter().cloned())
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().expect("log handle")))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", self.name));
        self.child = Some(child);
    }

    /// SIGKILL, like an OOM kill or a node loss: no graceful shutdown.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Whether the process runs (started and not exited).
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The arguments it runs with (for reports).
    pub fn args(&self) -> &[String] {
        &self.args
    }

    pub fn log_tail(&self, lines: usize) -> String {
        self.log_lines(|_| true, lines)
    }

    /// The last `lines` lines of the log that `keep` keeps.
    pub fn log_lines(&self, keep: impl Fn(&str) -> bool, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let v: Vec<&str> = text.lines().filter(|l| keep(l)).collect();
        v[v.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Where the pod runs and what it may reach.
pub struct PodPlan<'a> {
    pub name: String,
    pub namespace: String,
    /// `spec.nodeName`.
    pub node: String,
    /// The pod template (`spec.template` of a DaemonSet or Deployment).
    pub template: &'a Value,
    /// The node's root directory: `hostPath` volumes resolve under it.
    pub node_root: PathBuf,
    /// The cluster (tokens, Secrets, ConfigMaps); `None` for a machine without one (a Flotta
    /// device runs the exporter under podman, without Kubernetes credentials).
    pub api: Option<&'a ApiServer>,
    /// Directory of the workspace's binaries (see [`binaries_dir`]).
    pub bin_dir: PathBuf,
    /// Where process logs go.
    pub log_dir: PathBuf,
    /// Extra environment the harness adds (only `RUST_LOG`-like diagnostics).
    pub extra_env: Vec<(String, String)>,
}

/// A running pod.
pub struct LocalPod {
    pub name: String,
    pub namespace: String,
    pub node: String,
    pub labels: BTreeMap<String, String>,
    /// One process per container, by container name.
    pub containers: BTreeMap<String, Proc>,
    /// (container, port name or number as text) → local port.
    ports: BTreeMap<String, u16>,
    readiness: Option<(String, String)>,
    /// The service-account token the pod's processes use, if any.
    pub token: Option<String>,
    _dir: tempfile::TempDir,
}

impl LocalPod {
    /// The local port of a container port, by name (`metrics`) or number (`8080`).
    pub fn port(&self, name_or_number: &str) -> Option<u16> {
        self.ports.get(name_or_number).copied()
    }

    /// `127.0.0.1:<port>` of a named port.
    pub fn addr(&self, name_or_number: &str) -> Option<String> {
        self.port(name_or_number).map(|p| format!("127.0.0.1:{p}"))
    }

    /// The readiness probe's URL (`httpGet`), if it has one.
    pub fn readiness_url(&self) -> Option<String> {
        let (port, path) = self.readiness.as_ref()?;
        Some(format!("http://127.0.0.1:{}{path}", self.port(port)?))
    }

    /// The one container's process (pods of this chart have one).
    pub fn main(&mut self) -> &mut Proc {
        self.containers
            .values_mut()
            .next()
            .expect("a pod has a container")
    }
}

/// The directory of the workspace binaries next to a test executable (`target/<profile>`).
pub fn binaries_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    exe.parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/<test>")
        .to_path_buf()
}

fn strs(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|x| x.as_str().map(String::from))
        .collect()
}

fn labels(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
        .collect()
}

/// Whether `tolerations` tolerate `taint` (core/v1 `Toleration.ToleratesTaint`).
pub fn tolerates(tolerations: &Value, taint: &Value) -> bool {
    tolerations.as_array().into_iter().flatten().any(|t| {
        let effect_ok =
            t["effect"].as_str().unwrap_or_default().is_empty() || t["effect"] == taint["effect"];
        let key = t["key"].as_str().unwrap_or_default();
        let key_ok = key.is_empty() || key == taint["key"].as_str().unwrap_or_default();
        let value_ok = match t["operator"].as_str().unwrap_or("Equal") {
            "Exists" => true,
            _ => {
                !key.is_empty()
                    && t["value"].as_str().unwrap_or_default()
                        == taint["value"].as_str().unwrap_or_default()
            }
        };
        effect_ok && key_ok && value_ok
    })
}

fn expression_matches(e: &Value, labels: &BTreeMap<String, String>) -> bool {
    let key = e["key"].as_str().unwrap_or_default();
    let values = strs(&e["values"]);
    let got = labels.get(key);
    match e["operator"].as_str().unwrap_or_default() {
        "In" => got.is_some_and(|v| values.contains(v)),
        "NotIn" => got.is_none_or(|v| !values.contains(v)),
        "Exists" => got.is_some(),
        "DoesNotExist" => got.is_none(),
        _ => false,
    }
}

/// Whether a pod template may run on `node` (the DaemonSet controller's predicates): its
/// `nodeSelector`, required node affinity, and the node's NoSchedule/NoExecute taints.
pub fn schedulable(template: &Value, node: &Value) -> bool {
    let spec = &template["spec"];
    let node_labels = labels(&node["metadata"]["labels"]);
    let selector_ok = labels(&spec["nodeSelector"])
        .iter()
        .all(|(k, v)| node_labels.get(k) == Some(v));
    let terms = &spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        ["nodeSelectorTerms"];
    let affinity_ok = terms.as_array().is_none_or(|terms| {
        terms.iter().any(|t| {
            t["matchExpressions"]
                .as_array()
                .into_iter()
                .flatten()
                .all(|e| expression_matches(e, &node_labels))
        })
    });
    let taints_ok = node["spec"]["taints"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| matches!(t["effect"].as_str(), Some("NoSchedule" | "NoExecute")))
        .all(|t| tolerates(&spec["tolerations"], t));
    selector_ok && affinity_ok && taints_ok
}

/// The binary an image runs (translation 1).
fn binary_for(container: &Value, bin_dir: &Path) -> Result<PathBuf> {
    let command = strs(&container["command"]);
    let name = match command.first() {
        Some(c) => Path::new(c)
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string(),
        None => {
            let image = container["image"].as_str().unwrap_or_default();
            let repo =
                image.rsplit_once(':').map_or(
                    image,
                    |(r, t)| {
                        if t.contains('/') {
                            image
                        } else {
                            r
                        }
                    },
                );
            repo.rsplit('/').next().unwrap_or_default().to_string()
        }
    };
    let path = bin_dir.join(&name);
    if !path.is_file() {
        bail!(
            "image {} runs {name}, which is not a binary of this workspace in {} (run `cargo build --workspace --bins`)",
            container["image"],
            bin_dir.display()
        );
    }
    Ok(path)
}

/// `$(VAR)` references in a command or argument, expanded from the container's env.
fn expand(arg: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = arg;
    while let Some(start) = rest.find("$(") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        match after.find(')') {
            Some(end) if env.contains_key(&after[..end]) => {
                out.push_str(&env[&after[..end]]);
                rest = &after[end + 1..];
            }
            _ => {
                out.push_str("$(");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Translations 2 and 3 for one argument.
fn localise(arg: &str, ports: &BTreeMap<String, u16>, rootfs: &Path) -> String {
    let mut a = arg.to_string();
    for (container_port, local) in ports.iter().filter(|(k, _)| k.parse::<u16>().is_ok()) {
        a = a.replace(
            &format!("0.0.0.0:{container_port}"),
            &format!("127.0.0.1:{local}"),
        );
    }
    let (prefix, value) = match a.split_once('=') {
        Some((flag, v)) if flag.starts_with('-') => (format!("{flag}="), v.to_string()),
        _ => (String::new(), a.clone()),
    };
    if value.starts_with('/') {
        format!("{prefix}{}{value}", rootfs.display())
    } else {
        a
    }
}

fn field_ref(path: &str, plan: &PodPlan, meta: &Value, sa: &str) -> Result<String> {
    let quoted = |p: &str, what: &str| -> Option<String> {
        let key = p
            .strip_prefix(what)?
            .strip_prefix("['")?
            .strip_suffix("']")?;
        Some(
            meta[what.trim_start_matches("metadata.")][key]
                .as_str()?
                .to_string(),
        )
    };
    Ok(match path {
        "metadata.name" => plan.name.clone(),
        "metadata.namespace" => plan.namespace.clone(),
        "metadata.uid" => meta["uid"].as_str().unwrap_or_default().to_string(),
        "spec.nodeName" => plan.node.clone(),
        "spec.serviceAccountName" => sa.to_string(),
        "status.podIP" | "status.hostIP" => "127.0.0.1".into(),
        p => quoted(p, "metadata.labels")
            .or_else(|| quoted(p, "metadata.annotations"))
            .with_context(|| format!("fieldRef {p} is not supported by the harness"))?,
    })
}

/// Reads key `key` of a Secret or ConfigMap as text.
fn object_key(
    api: Option<&ApiServer>,
    kind: &str,
    ns: &str,
    name: &str,
    key: &str,
) -> Option<String> {
    let obj = api?.get(kind, Some(ns), name)?;
    if kind == "secrets" {
        use base64::Engine as _;
        let b = obj["data"][key].as_str()?;
        let bytes = base64::engine::general_purpose::STANDARD.decode(b).ok()?;
        return String::from_utf8(bytes).ok();
    }
    obj["data"][key].as_str().map(String::from)
}

/// Translation 4.
fn env_of(
    container: &Value,
    plan: &PodPlan,
    meta: &Value,
    sa: &str,
) -> Result<BTreeMap<String, String>> {
    let mut env = BTreeMap::new();
    for e in container["env"].as_array().into_iter().flatten() {
        let name = e["name"].as_str().unwrap_or_default().to_string();
        let from = &e["valueFrom"];
        let value = if let Some(v) = e["value"].as_str() {
            Some(expand(v, &env))
        } else if let Some(p) = from["fieldRef"]["fieldPath"].as_str() {
            Some(field_ref(p, plan, meta, sa)?)
        } else if !from["secretKeyRef"].is_null() || !from["configMapKeyRef"].is_null() {
            let (kind, r) = if from["secretKeyRef"].is_null() {
                ("configmaps", &from["configMapKeyRef"])
            } else {
                ("secrets", &from["secretKeyRef"])
            };
            let v = object_key(
                plan.api,
                kind,
                &plan.namespace,
                r["name"].as_str().unwrap_or_default(),
                r["key"].as_str().unwrap_or_default(),
            );
            if v.is_none() && r["optional"] != true {
                bail!("env {name}: {kind} {} has no key {} (the kubelet would not start the container)", r["name"], r["key"]);
            }
            v
        } else {
            Some(String::new())
        };
        if let Some(v) = value {
            env.insert(name, v);
        }
    }
    env.insert("HOSTNAME".into(), plan.name.clone());
    env.insert(
        "PATH".into(),
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
    );
    Ok(env)
}

fn write_files(dir: &Path, files: &[(String, String)]) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    for (path, content) in files {
        let p = dir.join(path);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(p, content)?;
    }
    Ok(())
}

/// The local directory a volume stands for (translation 3).
fn volume_source(volume: &Value, plan: &PodPlan, pod_dir: &Path) -> Result<PathBuf> {
    let name = volume["name"].as_str().unwrap_or_default();
    let local = pod_dir.join("volumes").join(name);
    if let Some(hp) = volume["hostPath"]["path"].as_str() {
        let p = plan.node_root.join(hp.trim_start_matches('/'));
        match volume["hostPath"]["type"].as_str().unwrap_or_default() {
            "Directory" if !p.is_dir() => bail!(
                "hostPath {hp} (type Directory) does not exist on node {} ({})",
                plan.node,
                p.display()
            ),
            "DirectoryOrCreate" => std::fs::create_dir_all(&p)?,
            _ => {}
        }
        return Ok(p);
    }
    if !volume["emptyDir"].is_null() {
        std::fs::create_dir_all(&local)?;
        return Ok(local);
    }
    for (kind, field, name_key) in [
        ("secrets", "secret", "secretName"),
        ("configmaps", "configMap", "name"),
    ] {
        let src = &volume[field];
        if src.is_null() {
            continue;
        }
        let obj_name = src[name_key].as_str().unwrap_or_default();
        let Some(obj) = plan
            .api
            .and_then(|a| a.get(kind, Some(&plan.namespace), obj_name))
        else {
            if src["optional"] == true {
                std::fs::create_dir_all(&local)?;
                return Ok(local);
            }
            bail!(
                "volume {name}: {kind} {obj_name} not found (the kubelet would not start the pod)"
            );
        };
        let keys: Vec<(String, String)> = match src["items"].as_array() {
            Some(items) => items
                .iter()
                .map(|i| {
                    (
                        i["key"].as_str().unwrap_or_default().to_string(),
                        i["path"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect(),
            None => obj["data"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, _)| (k.clone(), k.clone()))
                .collect(),
        };
        let files: Vec<(String, String)> = keys
            .into_iter()
            .filter_map(|(k, path)| {
                Some((
                    path,
                    object_key(plan.api, kind, &plan.namespace, obj_name, &k)?,
                ))
            })
            .collect();
        write_files(&local, &files)?;
        return Ok(local);
    }
    bail!("volume {name}: {volume} is not supported by the harness")
}

/// Starts every container of `plan`'s pod (translations 1–5).
pub fn run_pod(plan: &PodPlan) -> Result<LocalPod> {
    let dir = tempfile::Builder::new()
        .prefix(&format!("pod-{}-", plan.name))
        .tempdir()?;
    let spec = &plan.template["spec"];
    let meta = &plan.template["metadata"];
    let sa = spec["serviceAccountName"]
        .as_str()
        .unwrap_or("default")
        .to_string();
    let token = service_account_token(plan, &sa, spec);
    let mut volumes: BTreeMap<String, PathBuf> = BTreeMap::new();
    for v in spec["volumes"].as_array().into_iter().flatten() {
        volumes.insert(
            v["name"].as_str().unwrap_or_default().to_string(),
            volume_source(v, plan, dir.path())?,
        );
    }
    let mut containers = BTreeMap::new();
    let mut all_ports = BTreeMap::new();
    let mut readiness = None;
    for c in spec["containers"].as_array().into_iter().flatten() {
        let cname = c["name"].as_str().unwrap_or("main").to_string();
        let mut ports = BTreeMap::new();
        for p in c["ports"].as_array().into_iter().flatten() {
            let number = p["containerPort"].as_u64().unwrap_or_default();
            let local = crate::free_port();
            ports.insert(number.to_string(), local);
            if let Some(n) = p["name"].as_str() {
                ports.insert(n.to_string(), local);
            }
        }
        let rootfs = dir.path().join("rootfs").join(&cname);
        mount(c, &volumes, &rootfs, token.as_deref(), plan)?;
        let mut env = env_of(c, plan, meta, &sa)?;
        if let (Some(t), Some(api)) = (&token, plan.api) {
            let kc = dir.path().join(format!("kubeconfig-{cname}"));
            api.write_kubeconfig_with_token(&kc, t, &plan.namespace)?;
            env.insert("KUBECONFIG".into(), kc.display().to_string());
        }
        env.extend(plan.extra_env.iter().cloned());
        let bin = binary_for(c, &plan.bin_dir)?;
        let mut argv: Vec<String> = strs(&c["command"]).into_iter().skip(1).collect();
        argv.extend(strs(&c["args"]));
        let argv: Vec<String> = argv
            .iter()
            .map(|a| localise(&expand(a, &env), &ports, &rootfs))
            .collect();
        if readiness.is_none() {
            let get = &c["readinessProbe"]["httpGet"];
            if let Some(path) = get["path"].as_str() {
                let port = match &get["port"] {
                    Value::Number(n) => n.to_string(),
                    v => v.as_str().unwrap_or_default().to_string(),
                };
                readiness = Some((port, path.to_string()));
            }
        }
        let env: Vec<(String, String)> = env.into_iter().collect();
        let proc_name = format!("{}-{cname}", plan.name);
        let proc = Proc::spawn(&proc_name, &bin, &argv, &env, &plan.log_dir);
        all_ports.extend(ports);
        containers.insert(cname, proc);
    }
    Ok(LocalPod {
        name: plan.name.clone(),
        namespace: plan.namespace.clone(),
        node: plan.node.clone(),
        labels: labels(&meta["labels"]),
        containers,
        ports: all_ports,
        readiness,
        token,
        _dir: dir,
    })
}

/// Translation 5: a pod-bound token unless automounting is off.
fn service_account_token(plan: &PodPlan, sa: &str, spec: &Value) -> Option<String> {
    let api = plan.api?;
    let account = api.get("serviceaccounts", Some(&plan.namespace), sa);
    let automount = spec["automountServiceAccountToken"]
        .as_bool()
        .or_else(|| account.as_ref()?["automountServiceAccountToken"].as_bool())
        .unwrap_or(true);
    automount.then(|| api.service_account_token(&plan.namespace, sa, Some(&plan.name)))
}

/// The container's filesystem: one symlink per mount (and the token mount).
fn mount(
    container: &Value,
    volumes: &BTreeMap<String, PathBuf>,
    rootfs: &Path,
    token: Option<&str>,
    plan: &PodPlan,
) -> Result<()> {
    let link = |target: &Path, at: &str| -> Result<()> {
        let p = rootfs.join(at.trim_start_matches('/'));
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::os::unix::fs::symlink(target, &p)
            .with_context(|| format!("mount {} at {}", target.display(), p.display()))
    };
    std::fs::create_dir_all(rootfs)?;
    for m in container["volumeMounts"].as_array().into_iter().flatten() {
        let name = m["name"].as_str().unwrap_or_default();
        let src = volumes
            .get(name)
            .with_context(|| format!("volumeMount {name} names no volume"))?;
        link(src, m["mountPath"].as_str().unwrap_or_default())?;
    }
    if let Some(t) = token {
        let dir = rootfs
            .parent()
            .unwrap_or(rootfs)
            .join(format!("sa-token-{}", plan.name));
        write_files(
            &dir,
            &[
                ("token".into(), t.to_string()),
                ("namespace".into(), plan.namespace.clone()),
                ("ca.crt".into(), String::new()),
            ],
        )?;
        link(&dir, "/var/run/secrets/kubernetes.io/serviceaccount")?;
    }
    Ok(())
}
