//! RBAC evaluation over `rbac.authorization.k8s.io/v1` objects: which requests the
//! (Cluster)Roles bound to a user allow. Tests use it to check the audit log of a run
//! against the RBAC osroll ships, and the test API server uses it (unless
//! `ServerConfig::enforce_rbac` is turned off) to answer 403 like a real cluster would.
//! Kubelets (`system:node:<name>`) are authorized by [`node_allows`], a stand-in for
//! the Node authorizer of a real cluster.
//!
//! Covered: ClusterRoles, Roles, ClusterRoleBindings, RoleBindings (also to a
//! ClusterRole), subjects of kind User, ServiceAccount and Group (`system:authenticated`,
//! `system:serviceaccounts`, `system:serviceaccounts:<ns>`), `*` wildcards,
//! `resourceNames`, `resource/subresource` and `nonResourceURLs`. Aggregated
//! ClusterRoles are not expanded. Discovery and `/version` are open to everyone, as the
//! default `system:discovery` binding makes them.

use std::collections::HashMap;

use serde_json::Value;

use crate::server::AuditEntry;

/// The RBAC objects of a cluster (or of a set of manifests).
#[derive(Debug, Clone, Default)]
pub struct Authorizer {
    cluster_roles: HashMap<String, Vec<Value>>,
    roles: HashMap<(String, String), Vec<Value>>,
    cluster_bindings: Vec<Value>,
    bindings: Vec<Value>,
}

fn s<'a>(v: &'a Value, p: &str) -> &'a str {
    v.pointer(p).and_then(Value::as_str).unwrap_or_default()
}

/// The strings of the array at `key` of `v` (none when absent).
pub(crate) fn strs(v: &Value, key: &str) -> Vec<String> {
    v.get(key)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

impl Authorizer {
    /// Collect the RBAC objects among `objects` (others are ignored).
    pub fn from_objects<'a>(objects: impl IntoIterator<Item = &'a Value>) -> Self {
        let mut a = Authorizer::default();
        for o in objects {
            if !s(o, "/apiVersion").starts_with("rbac.authorization.k8s.io/") {
                continue;
            }
            let rules = || {
                o.get("rules")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default()
            };
            match s(o, "/kind") {
                "ClusterRole" => {
                    a.cluster_roles
                        .insert(s(o, "/metadata/name").into(), rules());
                }
                "Role" => {
                    a.roles.insert(
                        (
                            s(o, "/metadata/namespace").into(),
                            s(o, "/metadata/name").into(),
                        ),
                        rules(),
                    );
                }
                "ClusterRoleBinding" => a.cluster_bindings.push(o.clone()),
                "RoleBinding" => a.bindings.push(o.clone()),
                _ => {}
            }
        }
        a
    }

    /// Parse a multi-document YAML stream of manifests.
    pub fn from_yaml(text: &str) -> anyhow::Result<Self> {
        let mut objs = Vec::new();
        for doc in serde_yaml::Deserializer::from_str(text) {
            let v: Value = serde::Deserialize::deserialize(doc)?;
            if !v.is_null() {
                objs.push(v);
            }
        }
        Ok(Self::from_objects(&objs))
    }

    fn role_rules(&self, role_ref: &Value, ns: &str) -> Vec<Value> {
        let name = s(role_ref, "/name");
        match s(role_ref, "/kind") {
            "ClusterRole" => self.cluster_roles.get(name).cloned().unwrap_or_default(),
            "Role" => self
                .roles
                .get(&(ns.to_string(), name.to_string()))
                .cloned()
                .unwrap_or_default(),
            _ => vec![],
        }
    }

    /// Whether `user` is `subject` (or in its group).
    fn is_subject(subject: &Value, user: &str, binding_ns: &str) -> bool {
        let name = s(subject, "/name");
        match s(subject, "/kind") {
            "User" => name == user,
            "ServiceAccount" => {
                let ns = match s(subject, "/namespace") {
                    "" => binding_ns,
                    n => n,
                };
                user == format!("system:serviceaccount:{ns}:{name}")
            }
            "Group" => match name {
                "system:authenticated" => user != "system:anonymous",
                "system:unauthenticated" => user == "system:anonymous",
                "system:serviceaccounts" => user.starts_with("system:serviceaccount:"),
                g => g
                    .strip_prefix("system:serviceaccounts:")
                    .is_some_and(|ns| user.starts_with(&format!("system:serviceaccount:{ns}:"))),
            },
            _ => false,
        }
    }

    fn binds(binding: &Value, user: &str) -> bool {
        let ns = s(binding, "/metadata/namespace");
        binding
            .get("subjects")
            .and_then(Value::as_array)
            .is_some_and(|subs| subs.iter().any(|x| Self::is_subject(x, user, ns)))
    }

    /// Rules that apply to `user` for requests in `namespace` ("" for cluster scope).
    pub fn rules_for(&self, user: &str, namespace: &str) -> Vec<Value> {
        let mut out = Vec::new();
        for b in self
            .cluster_bindings
            .iter()
            .filter(|b| Self::binds(b, user))
        {
            out.extend(self.role_rules(&b["roleRef"], ""));
        }
        if !namespace.is_empty() {
            for b in self
                .bindings
                .iter()
                .filter(|b| s(b, "/metadata/namespace") == namespace && Self::binds(b, user))
            {
                out.extend(self.role_rules(&b["roleRef"], namespace));
            }
        }
        out
    }

    /// Whether the request recorded in `e` is allowed for its user.
    pub fn allows(&self, e: &AuditEntry) -> bool {
        if !e.is_resource_request() {
            return is_public_path(&e.path)
                || self
                    .rules_for(&e.user, "")
                    .iter()
                    .any(|r| rule_allows(r, e));
        }
        self.rules_for(&e.user, &e.namespace)
            .iter()
            .any(|r| rule_allows(r, e))
    }

    /// The entries of `user` that its bindings do not allow.
    pub fn denied<'e>(&self, entries: &'e [AuditEntry], user: &str) -> Vec<&'e AuditEntry> {
        entries
            .iter()
            .filter(|e| e.user == user && !self.allows(e))
            .collect()
    }
}

fn is_public_path(path: &str) -> bool {
    let p = path.trim_end_matches('/');
    p == "/api"
        || p == "/apis"
        || (p.starts_with("/api/") && p.matches('/').count() == 2)
        || (p.starts_with("/apis/") && p.matches('/').count() <= 3)
        || p == "/version"
        || p.starts_with("/openapi/")
        || p == "/openapi"
        || matches!(p, "/healthz" | "/livez" | "/readyz")
}

fn matches_list(list: &[String], want: &str) -> bool {
    list.iter().any(|x| x == "*" || x == want)
}

/// Whether one PolicyRule (JSON) allows the request in `e`.
pub fn rule_allows(rule: &Value, e: &AuditEntry) -> bool {
    let verbs = strs(rule, "verbs");
    if !e.is_resource_request() {
        let urls = strs(rule, "nonResourceURLs");
        return matches_list(&verbs, &e.verb)
            && urls.iter().any(|u| {
                u == &e.path
                    || u == "*"
                    || u.strip_suffix('*')
                        .is_some_and(|pre| e.path.starts_with(pre))
            });
    }
    let resource = if e.subresource.is_empty() {
        e.resource.clone()
    } else {
        format!("{}/{}", e.resource, e.subresource)
    };
    let resources = strs(rule, "resources");
    let resource_ok = resources.iter().any(|r| {
        r == "*"
            || *r == resource
            || (!e.subresource.is_empty()
                && (r.strip_suffix("/*") == Some(e.resource.as_str())
                    || r.strip_prefix("*/") == Some(e.subresource.as_str())))
    });
    let names = strs(rule, "resourceNames");
    let name_ok = names.is_empty() || (!e.name.is_empty() && names.contains(&e.name));
    matches_list(&strs(rule, "apiGroups"), &e.group)
        && resource_ok
        && matches_list(&verbs, &e.verb)
        && name_ok
}

/// The user name of the kubelet of `node`, as the Node authorizer knows it.
pub fn node_user(node: &str) -> String {
    format!("system:node:{node}")
}

/// What the Node authorizer (with NodeRestriction) lets a kubelet do, approximately:
/// register and update its own Node and Lease, read Nodes and pods, write the status of
/// pods and delete them (the kubelet's half of graceful deletion), record Events. Users
/// that are not kubelets get nothing from it.
pub fn node_allows(e: &AuditEntry) -> bool {
    let Some(node) = e.user.strip_prefix("system:node:") else {
        return false;
    };
    let read = matches!(e.verb.as_str(), "get" | "list" | "watch");
    let own = e.name.is_empty() || e.name == node;
    match (
        e.group.as_str(),
        e.resource.as_str(),
        e.subresource.as_str(),
    ) {
        ("", "nodes", "" | "status") => read || (own && e.verb != "deletecollection"),
        ("", "pods", "") => read || e.verb == "delete",
        ("", "pods", "status") => matches!(e.verb.as_str(), "get" | "patch" | "update"),
        ("coordination.k8s.io", "leases", "") => e.namespace == "kube-node-lease" && (read || own),
        ("", "events", "") | ("events.k8s.io", "events", "") => {
            matches!(e.verb.as_str(), "create" | "patch" | "update")
        }
        ("", "configmaps" | "secrets" | "services", "") => read,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry(
        user: &str,
        verb: &str,
        group: &str,
        resource: &str,
        sub: &str,
        ns: &str,
        name: &str,
    ) -> AuditEntry {
        AuditEntry {
            seq: 0,
            user: user.into(),
            impersonator: None,
            verb: verb.into(),
            group: group.into(),
            version: "v1".into(),
            resource: resource.into(),
            subresource: sub.into(),
            namespace: ns.into(),
            name: name.into(),
            path: String::new(),
            code: 200,
            ..AuditEntry::default()
        }
    }

    const SA: &str = "system:serviceaccount:osroll-system:osroll-controller";

    fn authz() -> Authorizer {
        let objs = [
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "ctl"},
                "rules": [{"apiGroups": ["osroll.io"], "resources": ["osupgrades", "osupgrades/status"], "verbs": ["get", "list", "watch", "patch"]},
                          {"apiGroups": [""], "resources": ["pods/eviction"], "verbs": ["create"]}]}),
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": "ctl"},
                "roleRef": {"kind": "ClusterRole", "name": "ctl"},
                "subjects": [{"kind": "ServiceAccount", "name": "osroll-controller", "namespace": "osroll-system"}]}),
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "lease", "namespace": "osroll-system"},
                "rules": [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["*"], "resourceNames": ["osroll-controller"]}]}),
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "lease", "namespace": "osroll-system"},
                "roleRef": {"kind": "Role", "name": "lease"},
                "subjects": [{"kind": "ServiceAccount", "name": "osroll-controller"}]}),
        ];
        Authorizer::from_objects(&objs)
    }

    #[test]
    fn bound_rules_allow_and_others_deny() {
        let a = authz();
        assert!(a.allows(&entry(
            SA,
            "patch",
            "osroll.io",
            "osupgrades",
            "status",
            "",
            "u"
        )));
        assert!(!a.allows(&entry(SA, "delete", "osroll.io", "osupgrades", "", "", "u")));
        assert!(a.allows(&entry(SA, "create", "", "pods", "eviction", "default", "p")));
        assert!(!a.allows(&entry(SA, "delete", "", "pods", "", "default", "p")));
        assert!(!a.allows(&entry(
            "system:serviceaccount:other:osroll-controller",
            "get",
            "osroll.io",
            "osupgrades",
            "",
            "",
            "u"
        )));
        // Namespaced Role with resourceNames.
        assert!(a.allows(&entry(
            SA,
            "update",
            "coordination.k8s.io",
            "leases",
            "",
            "osroll-system",
            "osroll-controller"
        )));
        assert!(!a.allows(&entry(
            SA,
            "update",
            "coordination.k8s.io",
            "leases",
            "",
            "osroll-system",
            "other"
        )));
        assert!(!a.allows(&entry(
            SA,
            "update",
            "coordination.k8s.io",
            "leases",
            "",
            "default",
            "osroll-controller"
        )));
        let mut disc = entry(SA, "get", "", "", "", "", "");
        disc.path = "/apis/osroll.io/v1alpha1".into();
        assert!(a.allows(&disc));
        let log = vec![
            entry(SA, "get", "osroll.io", "osupgrades", "", "", "u"),
            entry(SA, "delete", "", "nodes", "", "", "n"),
        ];
        let denied = a.denied(&log, SA);
        assert_eq!(denied.len(), 1);
        assert_eq!(denied[0].resource, "nodes");
    }

    #[test]
    fn kubelets_write_only_their_own_node() {
        let k = node_user("n1");
        assert!(node_allows(&entry(
            &k, "patch", "", "nodes", "status", "", "n1"
        )));
        assert!(node_allows(&entry(&k, "get", "", "nodes", "", "", "n2")));
        assert!(!node_allows(&entry(&k, "patch", "", "nodes", "", "", "n2")));
        assert!(!node_allows(&entry(
            &k, "delete", "", "nodes", "", "", "n2"
        )));
        assert!(node_allows(&entry(
            &k,
            "update",
            "coordination.k8s.io",
            "leases",
            "",
            "kube-node-lease",
            "n1"
        )));
        assert!(!node_allows(&entry(
            &k,
            "update",
            "coordination.k8s.io",
            "leases",
            "",
            "osroll-system",
            "n1"
        )));
        assert!(!node_allows(&entry(
            &k,
            "list",
            "osroll.io",
            "osupgradeprogresses",
            "",
            "",
            ""
        )));
        assert!(!node_allows(&entry(SA, "get", "", "nodes", "", "", "n1")));
    }

    #[test]
    fn parses_yaml_streams() {
        let y = "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: r}\nrules:\n- apiGroups: ['*']\n  resources: ['*']\n  verbs: ['get']\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {name: b}\nroleRef: {kind: ClusterRole, name: r}\nsubjects: [{kind: Group, name: 'system:authenticated'}]\n";
        let a = Authorizer::from_yaml(y).unwrap();
        assert!(a.allows(&entry("bob", "get", "apps", "deployments", "", "x", "d")));
        assert!(!a.allows(&entry("bob", "list", "apps", "deployments", "", "x", "")));
        assert!(!a.allows(&entry(
            "system:anonymous",
            "get",
            "apps",
            "deployments",
            "",
            "x",
            "d"
        )));
    }
}
