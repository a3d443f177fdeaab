//! Authentication (bearer tokens) and RBAC authorization, evaluated the way kube-apiserver does
//! from the ClusterRoles, Roles and bindings stored in the double — whatever a chart rendered.
//!
//! Sources (kubernetes/kubernetes): `staging/src/k8s.io/apiserver/pkg/endpoints/request/
//! requestinfo.go` (URL → verb/resource/subresource/name/namespace, `list`/`watch`/
//! `deletecollection`, a `metadata.name` field selector naming the object), `plugin/pkg/auth/
//! authorizer/rbac/rbac.go` and `pkg/apis/rbac/v1/evaluation_helpers.go` (rule matching:
//! `*`, `*/subresource`, resourceNames, nonResourceURLs with a trailing `*`),
//! `pkg/registry/rbac/validation/rule.go` (ClusterRoleBindings everywhere, RoleBindings only in
//! their namespace, ServiceAccount subjects, unresolvable roleRefs as the denial's reason),
//! `staging/src/k8s.io/apiserver/pkg/endpoints/handlers/responsewriters/errors.go`
//! (`forbiddenMessage`), `plugin/pkg/auth/authorizer/rbac/bootstrappolicy/policy.go` (the
//! discovery roles every authenticated user holds) and the `system:masters` group's bypass.

use std::collections::HashMap;

use serde_json::{json, Value};

use super::resources::RBAC;
use super::status::ApiError;
use super::store::Inner;

/// Who made a request.
#[derive(Debug, Clone, PartialEq)]
pub struct UserInfo {
    pub name: String,
    pub groups: Vec<String>,
    /// `authentication.kubernetes.io/pod-name` of a pod-bound service-account token.
    pub pod: Option<String>,
}

impl UserInfo {
    /// Whoever uses the insecure port.
    pub(crate) fn unsecured() -> Self {
        Self {
            name: "system:unsecured".into(),
            groups: vec!["system:masters".into(), "system:authenticated".into()],
            pod: None,
        }
    }

    fn anonymous() -> Self {
        Self {
            name: "system:anonymous".into(),
            groups: vec!["system:unauthenticated".into()],
            pod: None,
        }
    }
}

/// What a token stands for.
#[derive(Debug, Clone)]
pub(crate) enum Subject {
    /// Group `system:masters`: every request allowed, as for kubeadm's admin.conf.
    Admin,
    /// A ServiceAccount (valid while it exists), optionally bound to a pod.
    ServiceAccount {
        namespace: String,
        name: String,
        pod: Option<String>,
    },
    /// A plain user with groups (tests of User/Group subjects).
    User(UserInfo),
}

/// The admin user (kubeadm's `kubernetes-admin`).
pub(crate) const ADMIN_USER: &str = "kubernetes-admin";

/// Maps the request's bearer token to a user; `Err` is 401. No header = `system:anonymous`.
pub(crate) fn authenticate(
    tokens: &HashMap<String, Subject>,
    store: &std::sync::Mutex<Inner>,
    authorization: Option<&str>,
) -> Result<UserInfo, ApiError> {
    let Some(header) = authorization else {
        return Ok(UserInfo::anonymous());
    };
    let token = header
        .strip_prefix("Bearer ")
        .ok_or_else(ApiError::unauthorized)?;
    let user = match tokens
        .get(token.trim())
        .ok_or_else(ApiError::unauthorized)?
    {
        Subject::Admin => UserInfo {
            name: ADMIN_USER.into(),
            groups: vec!["system:masters".into()],
            pod: None,
        },
        Subject::ServiceAccount {
            namespace,
            name,
            pod,
        } => {
            // A token of a deleted ServiceAccount no longer authenticates.
            store
                .lock()
                .expect("store lock")
                .get("/v1/serviceaccounts", namespace, name)
                .ok_or_else(ApiError::unauthorized)?;
            UserInfo {
                name: format!("system:serviceaccount:{namespace}:{name}"),
                groups: vec![
                    "system:serviceaccounts".into(),
                    format!("system:serviceaccounts:{namespace}"),
                ],
                pod: pod.clone(),
            }
        }
        Subject::User(u) => u.clone(),
    };
    let mut user = user;
    if !user.groups.iter().any(|g| g == "system:authenticated") {
        user.groups.push("system:authenticated".into());
    }
    Ok(user)
}

/// requestinfo.go's RequestInfo, less what authorization does not use.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RequestAttributes {
    pub resource_request: bool,
    pub path: String,
    pub verb: String,
    pub api_group: String,
    pub namespace: String,
    pub resource: String,
    pub subresource: String,
    pub name: String,
}

impl RequestAttributes {
    /// Parses a request like kube-apiserver's `RequestInfoFactory` (prefixes `api`, `apis`).
    pub fn parse(method: &str, path: &str, query: &HashMap<String, String>) -> Self {
        let mut a = Self {
            path: path.to_string(),
            verb: method.to_lowercase(),
            ..Default::default()
        };
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        let mut rest: &[&str] = match parts.as_slice() {
            ["api", _, rest @ ..] if !rest.is_empty() => rest,
            ["apis", g, _, rest @ ..] if !rest.is_empty() => {
                a.api_group = g.to_string();
                rest
            }
            _ => return a,
        };
        a.resource_request = true;
        if rest[0] == "watch" && rest.len() > 1 {
            a.verb = "watch".into();
            rest = &rest[1..];
        } else {
            a.verb = match method {
                "POST" => "create",
                "GET" | "HEAD" => "get",
                "PUT" => "update",
                "PATCH" => "patch",
                "DELETE" => "delete",
                _ => "",
            }
            .into();
        }
        if rest[0] == "namespaces" && rest.len() > 1 {
            a.namespace = rest[1].to_string();
            if rest.len() > 2 && !matches!(rest[2], "status" | "finalize") {
                rest = &rest[2..];
            }
        }
        a.resource = rest[0].to_string();
        if let Some(n) = rest.get(1) {
            a.name = n.to_string();
        }
        if let Some(s) = rest.get(2) {
            a.subresource = s.to_string();
        }
        if a.name.is_empty() && a.verb == "get" {
            let watch = query
                .get("watch")
                .is_some_and(|w| !matches!(w.to_lowercase().as_str(), "false" | "0"));
            a.verb = if watch { "watch" } else { "list" }.into();
            // A `metadata.name=<n>` field selector names the object (resourceNames can allow it).
            if let Some(name) = query.get("fieldSelector").and_then(|f| single_name(f)) {
                a.name = name;
            }
        }
        if a.name.is_empty() && a.verb == "delete" {
            a.verb = "deletecollection".into();
        }
        a
    }

    /// `resource.group/subresource` as kube-apiserver prints it.
    fn resource_text(&self) -> String {
        let mut r = self.resource.clone();
        if !self.subresource.is_empty() {
            r = format!("{r}/{}", self.subresource);
        }
        r
    }
}

/// The name a field selector requires exactly (`metadata.name=x` or `==`, nothing else).
fn single_name(selector: &str) -> Option<String> {
    let terms: Vec<&str> = selector.split(',').filter(|t| !t.is_empty()).collect();
    let [term] = terms.as_slice() else {
        return None;
    };
    let (k, v) = term.split_once("==").or_else(|| term.split_once('='))?;
    (k.trim() == "metadata.name" && !v.contains('!') && !v.is_empty()).then(|| v.to_string())
}

fn strs(v: &Value) -> Vec<&str> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect()
}

/// Whether one PolicyRule allows the request (rbac.go `RuleAllows`).
fn rule_allows(rule: &Value, a: &RequestAttributes) -> bool {
    let verbs = strs(&rule["verbs"]);
    if !verbs.iter().any(|v| *v == "*" || *v == a.verb) {
        return false;
    }
    if !a.resource_request {
        return strs(&rule["nonResourceURLs"]).iter().any(|u| {
            *u == "*"
                || *u == a.path
                || (u.ends_with('*') && a.path.starts_with(u.trim_end_matches('*')))
        });
    }
    let groups = strs(&rule["apiGroups"]);
    if !groups.iter().any(|g| *g == "*" || *g == a.api_group) {
        return false;
    }
    let combined = a.resource_text();
    let resource_ok = strs(&rule["resources"]).iter().any(|r| {
        *r == "*"
            || *r == combined
            || (!a.subresource.is_empty() && *r == format!("*/{}", a.subresource))
    });
    let names = strs(&rule["resourceNames"]);
    resource_ok && (names.is_empty() || names.contains(&a.name.as_str()))
}

/// Whether a binding subject is this user (rule.go `appliesToUser`).
fn applies_to(subject: &Value, user: &UserInfo, binding_ns: &str) -> bool {
    let name = subject["name"].as_str().unwrap_or_default();
    match subject["kind"].as_str() {
        Some("User") => user.name == name,
        Some("Group") => user.groups.iter().any(|g| g == name),
        Some("ServiceAccount") => {
            let ns = subject["namespace"]
                .as_str()
                .filter(|n| !n.is_empty())
                .unwrap_or(binding_ns);
            !ns.is_empty() && user.name == format!("system:serviceaccount:{ns}:{name}")
        }
        _ => false,
    }
}

/// The rules a roleRef points to, or the lister's NotFound text.
fn role_rules<'a>(inner: &'a Inner, role_ref: &Value, ns: &str) -> Result<&'a Value, String> {
    let name = role_ref["name"].as_str().unwrap_or_default();
    let (key, scope, singular) = match role_ref["kind"].as_str() {
        Some("ClusterRole") => (format!("{RBAC}/v1/clusterroles"), "", "clusterrole"),
        Some("Role") => (format!("{RBAC}/v1/roles"), ns, "role"),
        other => return Err(format!("unsupported role reference kind: {other:?}")),
    };
    inner
        .objects
        .get(&key)
        .and_then(|m| m.get(&(scope.to_string(), name.to_string())))
        .map(|r| &r["rules"])
        .ok_or_else(|| format!("{singular}.{RBAC} \"{name}\" not found"))
}

/// RBAC: allowed, or the 403 kube-apiserver sends.
pub(crate) fn authorize(
    inner: &Inner,
    user: &UserInfo,
    a: &RequestAttributes,
) -> Result<(), ApiError> {
    if user.groups.iter().any(|g| g == "system:masters") {
        return Ok(());
    }
    let mut errors = Vec::new();
    let mut scopes = vec![(format!("{RBAC}/v1/clusterrolebindings"), String::new())];
    if !a.namespace.is_empty() {
        scopes.push((format!("{RBAC}/v1/rolebindings"), a.namespace.clone()));
    }
    for (key, ns) in &scopes {
        for ((bns, _), binding) in inner.objects_of(key) {
            if bns != ns {
                continue;
            }
            let subjects = binding["subjects"].as_array().into_iter().flatten();
            if !subjects.into_iter().any(|s| applies_to(s, user, ns)) {
                continue;
            }
            match role_rules(inner, &binding["roleRef"], ns) {
                Ok(rules) => {
                    if rules
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|r| rule_allows(r, a))
                    {
                        return Ok(());
                    }
                }
                Err(e) => errors.push(e),
            }
        }
    }
    let reason = match errors.len() {
        0 => String::new(),
        1 => format!("RBAC: {}", errors[0]),
        _ => format!("RBAC: [{}]", errors.join(", ")),
    };
    Err(forbidden(user, a, &reason))
}

/// responsewriters.Forbidden: `NewForbidden(group resource, name, forbiddenMessage[: reason])`.
fn forbidden(user: &UserInfo, a: &RequestAttributes, reason: &str) -> ApiError {
    let mut msg = if !a.resource_request {
        format!("User {:?} cannot {} path {:?}", user.name, a.verb, a.path)
    } else if !a.namespace.is_empty() {
        format!(
            "User {:?} cannot {} resource {:?} in API group {:?} in the namespace {:?}",
            user.name,
            a.verb,
            a.resource_text(),
            a.api_group,
            a.namespace
        )
    } else {
        format!(
            "User {:?} cannot {} resource {:?} in API group {:?} at the cluster scope",
            user.name,
            a.verb,
            a.resource_text(),
            a.api_group
        )
    };
    if !reason.is_empty() {
        msg = format!("{msg}: {reason}");
    }
    let gr = if a.api_group.is_empty() {
        a.resource.clone()
    } else {
        format!("{}.{}", a.resource, a.api_group)
    };
    ApiError::forbidden(&gr, &a.api_group, &a.resource, &a.name, &msg)
}

/// The bootstrap roles and bindings kube-apiserver creates (label
/// `kubernetes.io/bootstrapping=rbac-defaults`): discovery for every authenticated user, version
/// and health for everyone, and cluster-admin for `system:masters`.
pub(crate) fn bootstrap_policy() -> Vec<Value> {
    let labels = json!({"kubernetes.io/bootstrapping": "rbac-defaults"});
    let role = |name: &str, rules: Value| {
        json!({"apiVersion": format!("{RBAC}/v1"), "kind": "ClusterRole",
            "metadata": {"name": name, "labels": labels, "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"}},
            "rules": rules})
    };
    let binding = |name: &str, groups: &[&str]| {
        let subjects: Vec<Value> = groups
            .iter()
            .map(|g| json!({"apiGroup": RBAC, "kind": "Group", "name": g}))
            .collect();
        json!({"apiVersion": format!("{RBAC}/v1"), "kind": "ClusterRoleBinding",
            "metadata": {"name": name, "labels": labels, "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"}},
            "roleRef": {"apiGroup": RBAC, "kind": "ClusterRole", "name": name},
            "subjects": subjects})
    };
    vec![
        role(
            "cluster-admin",
            json!([{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
                   {"nonResourceURLs": ["*"], "verbs": ["*"]}]),
        ),
        role(
            "system:discovery",
            json!([{"nonResourceURLs": ["/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez",
                    "/openapi", "/openapi/*", "/readyz", "/version", "/version/"], "verbs": ["get"]}]),
        ),
        role(
            "system:public-info-viewer",
            json!([{"nonResourceURLs": ["/healthz", "/livez", "/readyz", "/version", "/version/"],
                    "verbs": ["get"]}]),
        ),
        role(
            "system:basic-user",
            json!([{"apiGroups": ["authorization.k8s.io"],
                    "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
                    "verbs": ["create"]}]),
        ),
        binding("cluster-admin", &["system:masters"]),
        binding("system:discovery", &["system:authenticated"]),
        binding(
            "system:public-info-viewer",
            &["system:authenticated", "system:unauthenticated"],
        ),
        binding("system:basic-user", &["system:authenticated"]),
    ]
}
