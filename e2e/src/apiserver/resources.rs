//! The resource registry: which types the double serves and how (scope, status subresource).

use std::any::TypeId;

/// One served resource type. Registering another CRD is one line:
/// `server.register(ResourceDef::crd("example.com", "v1", "widgets", "Widget", true, true))`.
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceDef {
    /// API group; empty for core.
    pub group: String,
    pub version: String,
    /// Lower-case plural used in URLs.
    pub plural: String,
    pub singular: String,
    pub kind: String,
    pub namespaced: bool,
    /// Whether `/status` is a subresource (then main-resource writes ignore status).
    pub has_status: bool,
    /// Built-in types accept unconditional updates (no resourceVersion) and strategic merge
    /// patches; custom resources do not, like the real server.
    pub builtin: bool,
    pub short_names: Vec<String>,
    /// Field labels accepted by `fieldSelector` (the real server refuses others).
    pub field_selectors: Vec<String>,
}

impl ResourceDef {
    /// A custom resource (CRD) type.
    pub fn crd(
        group: &str,
        version: &str,
        plural: &str,
        kind: &str,
        namespaced: bool,
        has_status: bool,
    ) -> Self {
        let mut field_selectors = vec!["metadata.name".to_string()];
        if namespaced {
            field_selectors.push("metadata.namespace".into());
        }
        Self {
            group: group.into(),
            version: version.into(),
            plural: plural.into(),
            singular: kind.to_lowercase(),
            kind: kind.into(),
            namespaced,
            has_status,
            builtin: false,
            short_names: Vec::new(),
            field_selectors,
        }
    }

    /// A custom resource described by its kube `Resource` impl (scope read from the type).
    pub fn of<K>(has_status: bool) -> Self
    where
        K: kube::Resource<DynamicType = ()>,
        K::Scope: 'static,
    {
        let namespaced =
            TypeId::of::<K::Scope>() == TypeId::of::<kube::core::NamespaceResourceScope>();
        Self::crd(
            &K::group(&()),
            &K::version(&()),
            &K::plural(&()),
            &K::kind(&()),
            namespaced,
            has_status,
        )
    }

    fn builtin(
        group: &str,
        version: &str,
        plural: &str,
        kind: &str,
        namespaced: bool,
        has_status: bool,
        extra_fields: &[&str],
    ) -> Self {
        let mut d = Self::crd(group, version, plural, kind, namespaced, has_status);
        d.builtin = true;
        d.field_selectors
            .extend(extra_fields.iter().map(|s| s.to_string()));
        d
    }

    /// Adds short names shown in discovery.
    pub fn with_short_names(mut self, names: &[&str]) -> Self {
        self.short_names = names.iter().map(|s| s.to_string()).collect();
        self
    }

    /// `v1` or `group/version`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `plural` or `plural.group`, as used in error messages.
    pub fn group_resource(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// `Kind` or `Kind.group`, as used in Invalid messages.
    pub fn group_kind(&self) -> String {
        if self.group.is_empty() {
            self.kind.clone()
        } else {
            format!("{}.{}", self.kind, self.group)
        }
    }

    /// The store key.
    pub(crate) fn key(&self) -> String {
        format!("{}/{}/{}", self.group, self.version, self.plural)
    }
}

/// The types every double serves from the start.
pub fn builtin_resources() -> Vec<ResourceDef> {
    let pod_fields = [
        "spec.nodeName",
        "spec.restartPolicy",
        "spec.schedulerName",
        "spec.serviceAccountName",
        "status.phase",
        "status.podIP",
        "status.nominatedNodeName",
    ];
    let event_fields = [
        "involvedObject.kind",
        "involvedObject.namespace",
        "involvedObject.name",
        "involvedObject.uid",
        "involvedObject.apiVersion",
        "involvedObject.resourceVersion",
        "involvedObject.fieldPath",
        "reason",
        "reportingComponent",
        "source",
        "type",
    ];
    vec![
        ResourceDef::builtin(
            "",
            "v1",
            "namespaces",
            "Namespace",
            false,
            true,
            &["status.phase"],
        )
        .with_short_names(&["ns"]),
        ResourceDef::builtin(
            "",
            "v1",
            "nodes",
            "Node",
            false,
            true,
            &["spec.unschedulable"],
        )
        .with_short_names(&["no"]),
        ResourceDef::builtin("", "v1", "pods", "Pod", true, true, &pod_fields)
            .with_short_names(&["po"]),
        ResourceDef::builtin("", "v1", "events", "Event", true, false, &event_fields)
            .with_short_names(&["ev"]),
        ResourceDef::builtin("events.k8s.io", "v1", "events", "Event", true, false, &[])
            .with_short_names(&["ev"]),
        ResourceDef::builtin(
            "coordination.k8s.io",
            "v1",
            "leases",
            "Lease",
            true,
            false,
            &[],
        ),
        ResourceDef::builtin(
            "policy",
            "v1",
            "poddisruptionbudgets",
            "PodDisruptionBudget",
            true,
            true,
            &[],
        )
        .with_short_names(&["pdb"]),
        // What a chart install writes (Helm reads them back too).
        ResourceDef::builtin(
            "",
            "v1",
            "serviceaccounts",
            "ServiceAccount",
            true,
            false,
            &[],
        )
        .with_short_names(&["sa"]),
        ResourceDef::builtin("", "v1", "services", "Service", true, true, &[])
            .with_short_names(&["svc"]),
        ResourceDef::builtin("", "v1", "configmaps", "ConfigMap", true, false, &[])
            .with_short_names(&["cm"]),
        ResourceDef::builtin("", "v1", "secrets", "Secret", true, false, &["type"]),
        ResourceDef::builtin("apps", "v1", "daemonsets", "DaemonSet", true, true, &[])
            .with_short_names(&["ds"]),
        ResourceDef::builtin("apps", "v1", "deployments", "Deployment", true, true, &[])
            .with_short_names(&["deploy"]),
        ResourceDef::builtin("apps", "v1", "replicasets", "ReplicaSet", true, true, &[])
            .with_short_names(&["rs"]),
        ResourceDef::builtin("apps", "v1", "statefulsets", "StatefulSet", true, true, &[])
            .with_short_names(&["sts"]),
        ResourceDef::builtin(RBAC, "v1", "clusterroles", "ClusterRole", false, false, &[]),
        ResourceDef::builtin(
            RBAC,
            "v1",
            "clusterrolebindings",
            "ClusterRoleBinding",
            false,
            false,
            &[],
        ),
        ResourceDef::builtin(RBAC, "v1", "roles", "Role", true, false, &[]),
        ResourceDef::builtin(RBAC, "v1", "rolebindings", "RoleBinding", true, false, &[]),
        ResourceDef::builtin(
            "apiextensions.k8s.io",
            "v1",
            "customresourcedefinitions",
            "CustomResourceDefinition",
            false,
            true,
            &[],
        )
        .with_short_names(&["crd", "crds"]),
    ]
}

/// The RBAC API group.
pub(crate) const RBAC: &str = "rbac.authorization.k8s.io";
