//! `charts/edgewatt` installed by Helm's own engine — PyPI `helm-sdkpy`, which bundles Helm's Go
//! library, run from the repository's `.venv` (`make deps`) through `charts/tests/helm_install.py`
//! — into the API server double (or a real cluster's kubeconfig). What Helm created (CRDs, RBAC, ServiceAccounts, DaemonSets,
//! Deployments, monitors…) is then in the double's store, where RBAC evaluates the roles and the
//! harness reads the workloads to run (see [`crate::pods`]).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::apiserver::ApiServer;

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The `.venv` Python with helm-sdkpy.
pub fn python() -> Result<PathBuf> {
    let p = repo().join(".venv/bin/python");
    if !p.exists() {
        bail!(
            "{} missing: run `make deps` (installs helm-sdkpy into .venv)",
            p.display()
        );
    }
    Ok(p)
}

/// Reads a values file (YAML) as JSON.
pub fn values_file(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    let v: Value =
        serde_saphyr::from_str(&text).with_context(|| format!("parse {}", path.display()))?;
    Ok(if v.is_null() {
        Value::Object(Default::default())
    } else {
        v
    })
}

/// Helm's values coalescing: maps merge key by key, anything else in `overlay` replaces.
pub fn merge(base: &mut Value, overlay: &Value) {
    match (base, overlay) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                merge(b.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (b, o) => *b = o.clone(),
    }
}

/// An installed release.
#[derive(Debug, Clone)]
pub struct Release {
    pub name: String,
    pub namespace: String,
    /// Helm's release record (manifest, notes, values) as JSON.
    pub record: Value,
}

impl Release {
    /// The rendered NOTES.txt.
    pub fn notes(&self) -> String {
        find_string(&self.record, "notes").unwrap_or_default()
    }

    /// Every object Helm rendered (its release manifest), as YAML documents.
    pub fn manifest(&self) -> String {
        find_string(&self.record, "manifest").unwrap_or_default()
    }
}

/// Validates a rendered manifest against Kubernetes' own OpenAPI schemas of the chart's oldest
/// supported release and the newest one known (`charts/tests/k8s_schemas.py`, PyPI
/// kubernetes-validate, strict: unknown fields refused). Returns its report; an error names every
/// refused object and field.
pub fn validate_kubernetes_schemas(manifest: &str) -> Result<String> {
    use std::io::Write;
    let mut child = Command::new(python()?)
        .arg(repo().join("charts/tests/k8s_schemas.py"))
        .args(["--manifest", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("run charts/tests/k8s_schemas.py")?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(manifest.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "Kubernetes schemas refuse the chart's objects:\n{}{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn find_string(v: &Value, key: &str) -> Option<String> {
    match v {
        Value::Object(m) => m
            .get(key)
            .and_then(|x| x.as_str().map(String::from))
            .or_else(|| m.values().find_map(|x| find_string(x, key))),
        Value::Array(a) => a.iter().find_map(|x| find_string(x, key)),
        _ => None,
    }
}

/// `helm install <release> charts/edgewatt -n <namespace>` (no wait) with `values`. Blocking:
/// call it off the async workers. The namespace must exist (Helm's `--create-namespace` path
/// needs the OpenAPI document, which the double does not serve). Helm talks to the double's
/// insecure port (client-go sends no token over plain HTTP) and keeps its release record in
/// memory (its Secret driver speaks protobuf).
pub fn install(
    server: &ApiServer,
    release: &str,
    namespace: &str,
    values: &Value,
) -> Result<Release> {
    install_with_kubeconfig(
        server.insecure_kubeconfig_path(),
        release,
        namespace,
        values,
    )
    .map_err(|e| {
        let log: Vec<String> = server
            .requests()
            .iter()
            .map(|r| format!("{} {}?{} -> {}", r.method, r.path, r.query, r.status))
            .collect();
        e.context(format!("requests to the double:\n{}", log.join("\n")))
    })
}

/// The same `helm install` into the cluster of any kubeconfig — a real cluster's
/// (`E2E_KUBECONFIG`). Helm keeps its release record in memory here too: the objects carry
/// Helm's ownership annotations, so installing the same release again adopts them (a rerun on
/// the same cluster needs no uninstall).
pub fn install_with_kubeconfig(
    kubeconfig: &Path,
    release: &str,
    namespace: &str,
    values: &Value,
) -> Result<Release> {
    let out = Command::new(python()?)
        .arg(repo().join("charts/tests/helm_install.py"))
        .arg(kubeconfig)
        .args([release, namespace, &values.to_string()])
        .env("HELM_DRIVER", "memory")
        .output()
        .context("run charts/tests/helm_install.py")?;
    if !out.status.success() {
        bail!(
            "helm install with {values}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout),
        );
    }
    let record: Value = serde_json::from_slice(&out.stdout).context("Helm's release JSON")?;
    Ok(Release {
        name: release.into(),
        namespace: namespace.into(),
        record,
    })
}
