//! Deployment manifests for a real cluster: namespace, service accounts, least-privilege
//! RBAC, the controller Deployment and the agent DaemonSet.
//!
//! Kept as pure data so `osroll create` prints them, `deploy/` is checked against them,
//! and tests can check the API calls osroll makes against the very rules shipped here.
//! Everything here applies to Kubernetes 1.24 and later.

use std::collections::BTreeMap;

use serde_json::{Value, json};

mod node;
pub use node::{
    AgentNodeOptions, LOCAL_IMAGE_REPOSITORY, add_agent_node_options, local_image, use_local_image,
};

/// Namespace both components run in unless told otherwise.
pub const DEFAULT_NAMESPACE: &str = "osroll-system";
/// Service account of the controller.
pub const CONTROLLER_SA: &str = "osroll-controller";
/// Service account of the node agents.
pub const AGENT_SA: &str = "osroll-agent";
/// Image repository used when no `--image` is given; the tag is the binary's version.
pub const IMAGE_REPOSITORY: &str = "ghcr.io/osroll/osroll";

/// The image matching this build: `<repository>:v<crate version>`.
pub fn default_image() -> String {
    format!("{IMAGE_REPOSITORY}:v{}", env!("CARGO_PKG_VERSION"))
}

/// One RBAC rule, in the shape of `rbac.authorization.k8s.io/v1` PolicyRule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// API groups (`""` is core).
    pub groups: &'static [&'static str],
    /// Resources, with `/subresource` where one is meant.
    pub resources: &'static [&'static str],
    /// Verbs.
    pub verbs: &'static [&'static str],
}

impl Rule {
    fn to_json(&self) -> Value {
        json!({ "apiGroups": self.groups, "resources": self.resources, "verbs": self.verbs })
    }

    /// Whether this rule allows `verb` on `group`/`resource` (resource may carry
    /// `/subresource`).
    pub fn allows(&self, group: &str, resource: &str, verb: &str) -> bool {
        self.groups.contains(&group)
            && self.resources.contains(&resource)
            && self.verbs.contains(&verb)
    }
}

const READ: &[&str] = &["get", "list", "watch"];

/// Recording Events, through both Event APIs (both components do).
const EVENTS_V1: Rule = Rule {
    groups: &["events.k8s.io"],
    resources: &["events"],
    verbs: &["create", "patch"],
};
const EVENTS_CORE: Rule = Rule {
    groups: &[""],
    resources: &["events"],
    verbs: &["create", "patch"],
};
/// Finding pods and deleting them (both components do).
const PODS_READ_DELETE: Rule = Rule {
    groups: &[""],
    resources: &["pods"],
    verbs: &["get", "list", "watch", "delete"],
};

/// Cluster-wide rules of the controller.
pub const CONTROLLER_CLUSTER_RULES: &[Rule] = &[
    Rule {
        groups: &["osroll.io"],
        resources: &["osupgrades"],
        verbs: &["get", "list", "watch", "update", "patch"],
    },
    Rule {
        groups: &["osroll.io"],
        resources: &["osupgrades/status"],
        verbs: &["get", "update", "patch"],
    },
    // Owner references with blockOwnerDeletion need update on the owner's finalizers.
    Rule {
        groups: &["osroll.io"],
        resources: &["osupgrades/finalizers"],
        verbs: &["update"],
    },
    Rule {
        groups: &["osroll.io"],
        resources: &["osupgradeprogresses"],
        verbs: &[
            "get", "list", "watch", "create", "update", "patch", "delete",
        ],
    },
    Rule {
        groups: &["osroll.io"],
        resources: &["osupgradeprogresses/status"],
        verbs: &["get"],
    },
    // Cordon, uncordon and the Node marks (cordoned-by, reboot-approval).
    Rule {
        groups: &[""],
        resources: &["nodes"],
        verbs: &["get", "list", "watch", "patch", "update"],
    },
    // Drain: find the pods on a node, evict them; delete only under the Force policy.
    PODS_READ_DELETE,
    Rule {
        groups: &[""],
        resources: &["pods/eviction"],
        verbs: &["create"],
    },
    Rule {
        groups: &["policy"],
        resources: &["poddisruptionbudgets"],
        verbs: READ,
    },
    EVENTS_V1,
    EVENTS_CORE,
    // Health checks: CEL checks read workloads (grant more for other kinds), Job checks
    // run Jobs.
    Rule {
        groups: &["apps"],
        resources: &["deployments", "daemonsets", "statefulsets"],
        verbs: &["get", "list"],
    },
    Rule {
        groups: &["batch"],
        resources: &["jobs"],
        verbs: &["get", "list", "create"],
    },
];

/// Rules of the controller inside its own namespace (leader Lease, ConfigMap catalogs).
pub const CONTROLLER_NAMESPACE_RULES: &[Rule] = &[
    Rule {
        groups: &["coordination.k8s.io"],
        resources: &["leases"],
        verbs: &["get", "list", "watch", "create", "update", "patch"],
    },
    Rule {
        groups: &[""],
        resources: &["configmaps"],
        verbs: &["get", "list", "watch"],
    },
];

/// Cluster-wide rules of the node agents (every mode: the DaemonSet and `--firstboot`).
pub const AGENT_CLUSTER_RULES: &[Rule] = &[
    // `--firstboot` without a version file asks for the cluster's active OSUpgrade.
    Rule {
        groups: &["osroll.io"],
        resources: &["osupgrades"],
        verbs: &["get", "list"],
    },
    Rule {
        groups: &["osroll.io"],
        resources: &["osupgradeprogresses"],
        verbs: READ,
    },
    Rule {
        groups: &["osroll.io"],
        resources: &["osupgradeprogresses/status"],
        verbs: &["get", "update", "patch"],
    },
    // The agent labels its own Node (managed, os-version, slot, reboot-needed).
    Rule {
        groups: &[""],
        resources: &["nodes"],
        verbs: &["get", "list", "watch", "patch"],
    },
    // Live updates restart the pods whose mounts went stale: find them, delete them.
    PODS_READ_DELETE,
    EVENTS_V1,
    EVENTS_CORE,
];

/// Rules of the node agents in their namespace (the controller's): `--firstboot` reads
/// an OSUpgrade's `catalog.configMap` there.
pub const AGENT_NAMESPACE_RULES: &[Rule] = &[Rule {
    groups: &[""],
    resources: &["configmaps"],
    verbs: &["get"],
}];

fn labels(component: &str) -> Value {
    json!({ "app.kubernetes.io/name": "osroll", "app.kubernetes.io/component": component })
}

fn namespace(ns: &str) -> Value {
    json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": ns, "labels": { "app.kubernetes.io/name": "osroll" } } })
}

fn service_account(name: &str, ns: &str, component: &str) -> Value {
    json!({ "apiVersion": "v1", "kind": "ServiceAccount", "metadata": { "name": name, "namespace": ns, "labels": labels(component) } })
}

fn cluster_role(name: &str, component: &str, rules: &[Rule]) -> Value {
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": { "name": name, "labels": labels(component) },
        "rules": rules.iter().map(Rule::to_json).collect::<Vec<_>>(),
    })
}

fn binding(kind: &str, name: &str, ns: &str, component: &str, sa: &str) -> Value {
    let mut meta = json!({ "name": name, "labels": labels(component) });
    let role_kind = if kind == "RoleBinding" {
        meta["namespace"] = json!(ns);
        "Role"
    } else {
        "ClusterRole"
    };
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind, "metadata": meta,
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": name },
        "subjects": [{ "kind": "ServiceAccount", "name": sa, "namespace": ns }],
    })
}

/// What a component runs as: its namespace, its service account (named like the
/// component's objects), and the ClusterRole with `rules` bound to that account.
fn identity(ns: &str, name: &str, component: &str, rules: &[Rule]) -> Vec<Value> {
    vec![
        namespace(ns),
        service_account(name, ns, component),
        cluster_role(name, component, rules),
        binding("ClusterRoleBinding", name, ns, component, name),
    ]
}

fn field_env(name: &str, path: &str) -> Value {
    json!({ "name": name, "valueFrom": { "fieldRef": { "fieldPath": path } } })
}

/// Everything the controller needs, in apply order.
pub fn controller(image: &str, ns: &str) -> Vec<Value> {
    let name = CONTROLLER_SA;
    let role = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": { "name": name, "namespace": ns, "labels": labels("controller") },
        "rules": CONTROLLER_NAMESPACE_RULES.iter().map(Rule::to_json).collect::<Vec<_>>(),
    });
    let probe =
        |path: &str| json!({ "httpGet": { "path": path, "port": "http" }, "periodSeconds": 10 });
    let deployment = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": { "name": name, "namespace": ns, "labels": labels("controller") },
        "spec": {
            // Two replicas for availability; the Lease lets only one act at a time.
            "replicas": 2,
            "selector": { "matchLabels": labels("controller") },
            "template": {
                "metadata": { "labels": labels("controller") },
                "spec": {
                    "serviceAccountName": name,
                    "securityContext": { "runAsNonRoot": true, "runAsUser": 65532, "seccompProfile": { "type": "RuntimeDefault" } },
                    "containers": [{
                        "name": "controller",
                        "image": image,
                        "args": ["controller"],
                        "env": [
                            field_env("POD_NAMESPACE", "metadata.namespace"),
                            field_env("POD_NAME", "metadata.name"),
                            field_env("NODE_NAME", "spec.nodeName"),
                        ],
                        "ports": [{ "name": "http", "containerPort": METRICS_PORT }],
                        "livenessProbe": probe("/healthz"),
                        "readinessProbe": probe("/readyz"),
                        "resources": { "requests": { "cpu": "50m", "memory": "64Mi" }, "limits": { "memory": "256Mi" } },
                        "securityContext": {
                            "allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
                            "capabilities": { "drop": ["ALL"] },
                        },
                    }],
                },
            },
        },
    });
    let mut objects = identity(ns, name, "controller", CONTROLLER_CLUSTER_RULES);
    objects.extend([
        role,
        binding("RoleBinding", name, ns, "controller", name),
        deployment,
    ]);
    objects
}

/// Port of the controller's `/metrics`, `/healthz` and `/readyz` (the default of
/// `osroll controller --metrics-addr`, which listens on all addresses of the pod).
pub const METRICS_PORT: u16 = 8080;

/// Label of every namespace (Kubernetes 1.22+) naming it: selects a namespace by name.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// Who may reach the controller's metrics port under [`metrics_network_policy`]: pods
/// matching `pod_labels` (all, when empty) in namespaces matching `namespace_labels`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetricsPeers {
    /// `matchLabels` of the allowed namespaces.
    pub namespace_labels: BTreeMap<String, String>,
    /// `matchLabels` of the allowed pods in them; empty allows every pod there.
    pub pod_labels: BTreeMap<String, String>,
}

impl Default for MetricsPeers {
    /// The namespace named `monitoring`, any pod in it.
    fn default() -> Self {
        MetricsPeers {
            namespace_labels: BTreeMap::from([(
                NAMESPACE_NAME_LABEL.to_string(),
                "monitoring".to_string(),
            )]),
            pod_labels: BTreeMap::new(),
        }
    }
}

/// A NetworkPolicy that lets only `peers` reach the controller pods' metrics port and
/// nothing else reach them at all (the kubelet's probes come from the node, which
/// NetworkPolicies always allow). Egress is not restricted: the controller talks to the
/// API server and to catalog URLs.
pub fn metrics_network_policy(ns: &str, peers: &MetricsPeers) -> Value {
    // One peer with both selectors: pods matching the pod selector IN namespaces
    // matching the namespace selector (two peers would allow either).
    json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": { "name": format!("{CONTROLLER_SA}-metrics"), "namespace": ns, "labels": labels("controller") },
        "spec": {
            "podSelector": { "matchLabels": labels("controller") },
            "policyTypes": ["Ingress"],
            "ingress": [{
                "from": [{
                    "namespaceSelector": { "matchLabels": peers.namespace_labels },
                    "podSelector": { "matchLabels": peers.pod_labels },
                }],
                "ports": [{ "protocol": "TCP", "port": METRICS_PORT }],
            }],
        },
    })
}

/// The ConfigMap of install hooks the agent mounts (optional: no hooks without it).
/// Keys use the flat layout, e.g. `default__pre-install`, `2.1.0__post-install`.
pub const HOOKS_CONFIG_MAP: &str = "osroll-hooks";
/// Where the agent finds its hooks (the default of `osroll agent --hooks-dir`).
pub const HOOKS_DIR: &str = "/etc/osroll/hooks";

/// Everything the node agents need, in apply order.
pub fn agent(image: &str, ns: &str) -> Vec<Value> {
    let name = AGENT_SA;
    let host_path = |vol: &str, path: &str, ty: &str| json!({ "name": vol, "hostPath": { "path": path, "type": ty } });
    let daemonset = json!({
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": { "name": name, "namespace": ns, "labels": labels("agent") },
        "spec": {
            "selector": { "matchLabels": labels("agent") },
            "updateStrategy": { "type": "RollingUpdate", "rollingUpdate": { "maxUnavailable": 1 } },
            "template": {
                "metadata": { "labels": labels("agent") },
                "spec": {
                    "serviceAccountName": name,
                    "priorityClassName": "system-node-critical",
                    // The agent must keep running on a node we cordoned and drained.
                    "tolerations": [{ "operator": "Exists" }],
                    // Host PID namespace: read other pods' mount tables, reach systemd.
                    "hostPID": true,
                    "containers": [{
                        "name": "agent",
                        "image": image,
                        "args": ["agent"],
                        // kured's sentinel, read through the host's /run (/var/run links there).
                        "env": [
                            field_env("NODE_NAME", "spec.nodeName"),
                            { "name": "OSROLL_REBOOT_SENTINEL", "value": "/host/run/reboot-required" },
                        ],
                        "resources": { "requests": { "cpu": "20m", "memory": "32Mi" }, "limits": { "memory": "128Mi" } },
                        // Writes block devices, the boot environment, and reboots the host.
                        // The image's user is 65532; privileged alone keeps that user, so
                        // the agent runs as root explicitly.
                        "securityContext": { "privileged": true, "runAsUser": 0, "runAsGroup": 0, "runAsNonRoot": false },
                        "volumeMounts": [
                            { "name": "host-dev", "mountPath": "/dev" },
                            { "name": "host-boot", "mountPath": "/host/boot" },
                            { "name": "host-proc-cmdline", "mountPath": "/host/proc/cmdline", "readOnly": true },
                            { "name": "host-run-systemd", "mountPath": "/run/systemd" },
                            { "name": "host-dbus", "mountPath": "/run/dbus" },
                            { "name": "host-run", "mountPath": "/host/run", "readOnly": true },
                            { "name": "state", "mountPath": "/var/lib/osroll" },
                            { "name": "hooks", "mountPath": HOOKS_DIR, "readOnly": true },
                        ],
                    }],
                    "volumes": [
                        host_path("host-dev", "/dev", "Directory"),
                        host_path("host-boot", "/boot", "DirectoryOrCreate"),
                        host_path("host-proc-cmdline", "/proc/cmdline", "File"),
                        host_path("host-run-systemd", "/run/systemd", "DirectoryOrCreate"),
                        host_path("host-dbus", "/run/dbus", "DirectoryOrCreate"),
                        host_path("host-run", "/run", "Directory"),
                        host_path("state", "/var/lib/osroll", "DirectoryOrCreate"),
                        // Executable, and optional: an agent without hooks still runs.
                        { "name": "hooks", "configMap": { "name": HOOKS_CONFIG_MAP, "optional": true, "defaultMode": 0o755 } },
                    ],
                },
            },
        },
    });
    let role = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": { "name": name, "namespace": ns, "labels": labels("agent") },
        "rules": AGENT_NAMESPACE_RULES.iter().map(Rule::to_json).collect::<Vec<_>>(),
    });
    let mut objects = identity(ns, name, "agent", AGENT_CLUSTER_RULES);
    objects.extend([
        role,
        binding("RoleBinding", name, ns, "agent", name),
        daemonset,
    ]);
    objects
}

/// Where a mounted ConfigMap of minisign public keys appears in a pod.
pub const KEYS_DIR: &str = "/etc/osroll/keys";
/// Where a mounted ConfigMap of PEM CA certificates appears in a pod.
pub const CA_DIR: &str = "/etc/osroll/ca";

/// Catalog keys and private CAs to give a component, as ConfigMaps in its namespace
/// (public keys and CA certificates are not secret). Every file of a mounted ConfigMap
/// is read, so one ConfigMap may hold several keys or certificates.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustMounts {
    /// ConfigMap of minisign public keys trusted to sign catalogs.
    pub keys_config_map: Option<String>,
    /// Refuse catalogs (controller) and images (agent) without a valid signature.
    pub require_signed: bool,
    /// ConfigMap of extra PEM CA certificates: for catalog URLs (controller) and image
    /// servers (agent).
    pub ca_config_map: Option<String>,
}

/// Which component a set of manifests runs; their flags' environment variables differ.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Component {
    /// `osroll controller`.
    Controller,
    /// `osroll agent`.
    Agent,
}

/// Mount `trust`'s ConfigMaps into the Deployment or DaemonSet among `objects` and point
/// the component's flags at them (through their environment variables).
pub fn add_trust(objects: &mut [Value], component: Component, trust: &TrustMounts) {
    let (keys_env, ca_env) = match component {
        Component::Controller => ("OSROLL_TRUSTED_KEYS_FILE", "OSROLL_CATALOG_CA_FILE"),
        Component::Agent => ("OSROLL_TRUSTED_KEYS", "OSROLL_CA_BUNDLE"),
    };
    let Some(pod) = objects
        .iter_mut()
        .find(|o| o["kind"] == "Deployment" || o["kind"] == "DaemonSet")
        .map(|o| &mut o["spec"]["template"]["spec"])
    else {
        return;
    };
    let mut env = Vec::new();
    let mut mounts = Vec::new();
    let mut volumes = Vec::new();
    for (volume, config_map, dir, var) in [
        ("catalog-keys", &trust.keys_config_map, KEYS_DIR, keys_env),
        ("extra-ca", &trust.ca_config_map, CA_DIR, ca_env),
    ] {
        if let Some(cm) = config_map {
            env.push(json!({ "name": var, "value": dir }));
            mounts.push(json!({ "name": volume, "mountPath": dir, "readOnly": true }));
            volumes.push(json!({ "name": volume, "configMap": { "name": cm } }));
        }
    }
    if trust.require_signed {
        env.push(json!({ "name": "OSROLL_REQUIRE_SIGNED_CATALOG", "value": "true" }));
    }
    // Indexing a missing key would insert a null, so only touch lists that grow.
    let append = |parent: &mut Value, key: &str, items: Vec<Value>| {
        if items.is_empty() {
            return;
        }
        let list = &mut parent[key];
        if !list.is_array() {
            *list = json!([]);
        }
        list.as_array_mut()
            .expect("just made an array")
            .extend(items);
    };
    append(&mut pod["containers"][0], "env", env);
    append(&mut pod["containers"][0], "volumeMounts", mounts);
    append(pod, "volumes", volumes);
}

/// Objects as one multi-document YAML stream.
pub fn to_yaml(objects: &[Value]) -> String {
    objects
        .iter()
        .map(|o| serde_yaml::to_string(o).expect("manifests serialize"))
        .collect::<Vec<_>>()
        .join("---\n")
}

/// The node-name claim the API server puts into a pod-bound service account token's
/// user info (Kubernetes 1.30+, `ServiceAccountTokenPodNodeInfo`).
pub const NODE_NAME_CLAIM: &str = "authentication.kubernetes.io/node-name";

/// A validation of an admission policy: a request for which the CEL `expression` is
/// false is forbidden with `message`.
fn forbid_unless(expression: String, message: &str) -> Value {
    json!({ "expression": expression, "message": message, "reason": "Forbidden" })
}

/// The CEL that holds when a Node update changes no label but the agent's own four
/// (`osroll.io/{managed,slot,os-version,reboot-needed}`) and no annotation: any other label could steer
/// workloads or the controller (NodeRestriction forbids kubelets the same).
fn node_labels_only() -> &'static str {
    "variables.newLabels.all(k, k in variables.agentLabels || (k in variables.oldLabels && variables.oldLabels[k] == variables.newLabels[k])) \
     && variables.oldLabels.all(k, k in variables.agentLabels || k in variables.newLabels) \
     && (has(object.metadata.annotations) ? object.metadata.annotations : {}) == (has(oldObject.metadata.annotations) ? oldObject.metadata.annotations : {})"
}

/// A ValidatingAdmissionPolicy and its binding that confine every agent to its own
/// node: it may write only its own Node (its three `osroll.io/` labels, never spec), the
/// status of progress objects for its node, and delete only pods on its own node. Needs
/// Kubernetes 1.30 or later (admissionregistration.k8s.io/v1 and the node-name claim);
/// `osroll create agent` emits it unless `--no-admission-policy`.
pub fn agent_admission_policy(ns: &str) -> Vec<Value> {
    let name = "osroll-agent-own-node";
    let node = format!("request.userInfo.extra['{NODE_NAME_CLAIM}'][0]");
    let policy = json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
        "metadata": { "name": name, "labels": labels("agent") },
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": { "resourceRules": [
                { "apiGroups": ["osroll.io"], "apiVersions": ["*"], "operations": ["CREATE", "UPDATE", "DELETE"],
                  "resources": ["osupgradeprogresses", "osupgradeprogresses/status"] },
                { "apiGroups": [""], "apiVersions": ["v1"], "operations": ["UPDATE"], "resources": ["nodes"] },
                { "apiGroups": [""], "apiVersions": ["v1"], "operations": ["DELETE"], "resources": ["pods"] },
            ]},
            "variables": [
                { "name": "newLabels", "expression": "object != null && has(object.metadata.labels) ? object.metadata.labels : {}" },
                { "name": "oldLabels", "expression": "oldObject != null && has(oldObject.metadata.labels) ? oldObject.metadata.labels : {}" },
                { "name": "agentLabels", "expression": format!("['{}', '{}', '{}', '{}']", crate::labels::MANAGED, crate::labels::SLOT, crate::labels::OS_VERSION, crate::labels::REBOOT_NEEDED) },
            ],
            "matchConditions": [{
                "name": "is-osroll-agent",
                "expression": format!("request.userInfo.username == 'system:serviceaccount:{ns}:{AGENT_SA}'"),
            }],
            "validations": [
                forbid_unless(
                    format!("'{NODE_NAME_CLAIM}' in request.userInfo.extra"),
                    "osroll agent tokens must be bound to a pod on a node (Kubernetes 1.30+)",
                ),
                forbid_unless(
                    format!("request.resource.resource != 'nodes' || (object.metadata.name == {node} && object.spec == oldObject.spec && {})", node_labels_only()),
                    "an osroll agent may only set the osroll.io/managed, osroll.io/slot, osroll.io/os-version and osroll.io/reboot-needed labels of its own Node",
                ),
                forbid_unless(
                    format!("request.resource.resource != 'osupgradeprogresses' || (request.subResource == 'status' && request.operation == 'UPDATE' && object.spec.nodeName == {node} && object.spec == oldObject.spec)"),
                    "an osroll agent may only write the status of its own node's OSUpgradeProgress",
                ),
                forbid_unless(
                    format!("request.resource.resource != 'pods' || (has(oldObject.spec.nodeName) && oldObject.spec.nodeName == {node})"),
                    "an osroll agent may only delete pods on its own node",
                ),
            ],
        },
    });
    let binding = json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": { "name": name, "labels": labels("agent") },
        "spec": { "policyName": name, "validationActions": ["Deny"] },
    });
    vec![policy, binding]
}
