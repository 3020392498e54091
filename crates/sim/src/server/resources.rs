//! The table of resources the server serves: the built-in ones it knows by heart and the
//! ones CustomResourceDefinitions register while it runs. Discovery, routing, validation
//! and Table rendering all read their facts from here.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

/// One `additionalPrinterColumns` entry (or a built-in column).
#[derive(Clone, Debug, PartialEq)]
pub struct PrinterColumn {
    /// Column header, e.g. `Desired`.
    pub name: String,
    /// `string`, `integer`, `number`, `boolean` or `date`.
    pub type_: String,
    /// OpenAPI format hint, e.g. `name`.
    pub format: String,
    /// Column description.
    pub description: String,
    /// 0 shows by default; higher only with `-o wide`.
    pub priority: i64,
    /// JSONPath into the object, e.g. `.status.phase`.
    pub json_path: String,
}

/// What a CRD declares for one of its versions.
#[derive(Clone, Debug, Default)]
pub struct CustomVersion {
    /// `openAPIV3Schema`.
    pub schema: Option<Value>,
    /// Printer columns.
    pub columns: Vec<PrinterColumn>,
    /// Whether `/status` is a separate subresource.
    pub status: bool,
    /// `selectableFields` paths without the leading dot (`spec.nodeName`): with
    /// `metadata.name` and `metadata.namespace`, the only fields a selector may use.
    pub selectable: Vec<String>,
}

/// The CRD behind a custom resource.
#[derive(Clone, Debug, Default)]
pub struct CustomDef {
    /// `metadata.name` of the CRD.
    pub crd_name: String,
    /// Served versions by name.
    pub versions: BTreeMap<String, CustomVersion>,
    /// The storage version.
    pub storage: String,
}

/// One resource (a plural name in a group), served at one or more versions.
#[derive(Clone, Debug)]
pub struct ResourceDef {
    /// API group; empty for core.
    pub group: String,
    /// Served versions, preferred (storage) first.
    pub versions: Vec<String>,
    /// Plural name used in paths.
    pub plural: String,
    /// Singular name.
    pub singular: String,
    /// Kind.
    pub kind: String,
    /// Whether objects live in namespaces.
    pub namespaced: bool,
    /// Short names for kubectl (`osu`).
    pub short_names: Vec<String>,
    /// Categories (`all`).
    pub categories: Vec<String>,
    /// Whether status is a separate subresource (built-ins).
    pub status: bool,
    /// Other subresources served (`eviction` for pods).
    pub extra_subresources: Vec<&'static str>,
    /// Set for resources registered by a CRD.
    pub custom: Option<Arc<CustomDef>>,
}

impl ResourceDef {
    /// `group/version`, or `version` for core.
    pub fn api_version(&self, version: &str) -> String {
        if self.group.is_empty() {
            version.to_string()
        } else {
            format!("{}/{version}", self.group)
        }
    }
    /// The storage version.
    pub fn storage_version(&self) -> &str {
        &self.versions[0]
    }
    /// Whether `version` is served.
    pub fn serves(&self, version: &str) -> bool {
        self.versions.iter().any(|v| v == version)
    }
    /// Whether `/status` is separate at `version`.
    pub fn has_status(&self, version: &str) -> bool {
        match &self.custom {
            Some(c) => c.versions.get(version).is_some_and(|v| v.status),
            None => self.status,
        }
    }
    /// The CRD schema of `version`, if this is a custom resource with one.
    pub fn schema(&self, version: &str) -> Option<&Value> {
        self.custom
            .as_ref()
            .and_then(|c| c.versions.get(version))
            .and_then(|v| v.schema.as_ref())
    }
    /// Group and plural, the identity objects are stored under.
    pub fn key(&self) -> (String, String) {
        (self.group.clone(), self.plural.clone())
    }
    /// `plural.group` as used in messages and CRD names.
    pub fn group_resource(&self) -> String {
        super::error::gr(&self.group, &self.plural)
    }
}

/// A built-in resource: group, version, plural, kind, scope, short names, and whether
/// status is a separate subresource.
struct B(
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    bool,
    &'static [&'static str],
    bool,
);

const NAMESPACED: bool = true;
const CLUSTER: bool = false;
const STATUS: bool = true;
const NO_STATUS: bool = false;

#[rustfmt::skip]
const BUILTINS: &[B] = &[
    B("",                          "v1", "namespaces",                "Namespace",                CLUSTER,    &["ns"],          STATUS),
    B("",                          "v1", "nodes",                     "Node",                     CLUSTER,    &["no"],          STATUS),
    B("",                          "v1", "pods",                      "Pod",                      NAMESPACED, &["po"],          STATUS),
    B("",                          "v1", "configmaps",                "ConfigMap",                NAMESPACED, &["cm"],          NO_STATUS),
    B("",                          "v1", "secrets",                   "Secret",                   NAMESPACED, &[],              NO_STATUS),
    B("",                          "v1", "events",                    "Event",                    NAMESPACED, &["ev"],          NO_STATUS),
    B("",                          "v1", "services",                  "Service",                  NAMESPACED, &["svc"],         STATUS),
    B("",                          "v1", "serviceaccounts",           "ServiceAccount",           NAMESPACED, &["sa"],          NO_STATUS),
    B("events.k8s.io",             "v1", "events",                    "Event",                    NAMESPACED, &["ev"],          NO_STATUS),
    B("coordination.k8s.io",       "v1", "leases",                    "Lease",                    NAMESPACED, &[],              NO_STATUS),
    B("policy",                    "v1", "poddisruptionbudgets",      "PodDisruptionBudget",      NAMESPACED, &["pdb"],         STATUS),
    B("apps",                      "v1", "deployments",               "Deployment",               NAMESPACED, &["deploy"],      STATUS),
    B("apps",                      "v1", "daemonsets",                "DaemonSet",                NAMESPACED, &["ds"],          STATUS),
    B("apps",                      "v1", "replicasets",               "ReplicaSet",               NAMESPACED, &["rs"],          STATUS),
    B("apps",                      "v1", "statefulsets",              "StatefulSet",              NAMESPACED, &["sts"],         STATUS),
    B("batch",                     "v1", "jobs",                      "Job",                      NAMESPACED, &[],              STATUS),
    B("rbac.authorization.k8s.io", "v1", "clusterroles",              "ClusterRole",              CLUSTER,    &[],              NO_STATUS),
    B("rbac.authorization.k8s.io", "v1", "clusterrolebindings",       "ClusterRoleBinding",       CLUSTER,    &[],              NO_STATUS),
    B("rbac.authorization.k8s.io", "v1", "roles",                     "Role",                     NAMESPACED, &[],              NO_STATUS),
    B("rbac.authorization.k8s.io", "v1", "rolebindings",              "RoleBinding",              NAMESPACED, &[],              NO_STATUS),
    B("apiextensions.k8s.io",      "v1", "customresourcedefinitions", "CustomResourceDefinition", CLUSTER,    &["crd", "crds"], STATUS),
    B("admissionregistration.k8s.io", "v1", "validatingadmissionpolicies", "ValidatingAdmissionPolicy", CLUSTER, &[], STATUS),
    B("admissionregistration.k8s.io", "v1", "validatingadmissionpolicybindings", "ValidatingAdmissionPolicyBinding", CLUSTER, &[], NO_STATUS),
];

/// Every resource currently served.
#[derive(Clone, Debug)]
pub struct ResourceTable {
    defs: Vec<Arc<ResourceDef>>,
}

impl Default for ResourceTable {
    fn default() -> Self {
        let defs = BUILTINS
            .iter()
            .map(
                |&B(group, version, plural, kind, namespaced, short, status)| {
                    let categories = match (group, plural) {
                        ("", "pods" | "services") | ("apps", _) => vec!["all".to_string()],
                        _ => vec![],
                    };
                    Arc::new(ResourceDef {
                        group: group.into(),
                        versions: vec![version.into()],
                        plural: plural.into(),
                        singular: kind.to_ascii_lowercase(),
                        kind: kind.into(),
                        namespaced,
                        short_names: short.iter().map(|s| s.to_string()).collect(),
                        categories,
                        status,
                        extra_subresources: if plural == "pods" && group.is_empty() {
                            vec!["eviction"]
                        } else {
                            vec![]
                        },
                        custom: None,
                    })
                },
            )
            .collect();
        ResourceTable { defs }
    }
}

impl ResourceTable {
    /// All resources.
    pub fn all(&self) -> &[Arc<ResourceDef>] {
        &self.defs
    }
    /// The resource stored under `group`/`plural` (at whichever versions it is served).
    pub fn by_plural(&self, group: &str, plural: &str) -> Option<Arc<ResourceDef>> {
        self.defs
            .iter()
            .find(|d| d.group == group && d.plural == plural)
            .cloned()
    }
    /// The resource served at `group/version` under `plural`.
    pub fn lookup(&self, group: &str, version: &str, plural: &str) -> Option<Arc<ResourceDef>> {
        self.defs
            .iter()
            .find(|d| d.group == group && d.plural == plural && d.serves(version))
            .cloned()
    }
    /// The resource of `kind` at `group/version`.
    pub fn by_kind(&self, group: &str, version: &str, kind: &str) -> Option<Arc<ResourceDef>> {
        self.defs
            .iter()
            .find(|d| d.group == group && d.kind == kind && d.serves(version))
            .cloned()
    }
    /// The resource registered by the CRD named `crd_name`.
    pub fn by_crd(&self, crd_name: &str) -> Option<Arc<ResourceDef>> {
        self.defs
            .iter()
            .find(|d| d.custom.as_ref().is_some_and(|c| c.crd_name == crd_name))
            .cloned()
    }
    /// Add or replace the resource a CRD defines.
    pub fn register(&mut self, def: ResourceDef) {
        let crd = def.custom.as_ref().map(|c| c.crd_name.clone());
        self.defs
            .retain(|d| d.custom.as_ref().map(|c| &c.crd_name) != crd.as_ref());
        self.defs.push(Arc::new(def));
    }
    /// Remove what the CRD named `crd_name` registered.
    pub fn unregister(&mut self, crd_name: &str) {
        self.defs
            .retain(|d| d.custom.as_ref().is_none_or(|c| c.crd_name != crd_name));
    }
    /// Groups and their versions, built-in groups first, in a stable order.
    pub fn groups(&self) -> Vec<(String, Vec<String>)> {
        let mut out: Vec<(String, Vec<String>)> = Vec::new();
        for d in &self.defs {
            let entry = match out.iter_mut().find(|(g, _)| *g == d.group) {
                Some(e) => e,
                None => {
                    out.push((d.group.clone(), Vec::new()));
                    out.last_mut().expect("just pushed")
                }
            };
            for v in &d.versions {
                if !entry.1.contains(v) {
                    entry.1.push(v.clone());
                }
            }
        }
        out
    }
    /// Resources served at `group/version`.
    pub fn in_group_version(&self, group: &str, version: &str) -> Vec<Arc<ResourceDef>> {
        self.defs
            .iter()
            .filter(|d| d.group == group && d.serves(version))
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_resolve_and_crds_register_and_unregister() {
        let mut t = ResourceTable::default();
        assert!(
            t.lookup("", "v1", "pods")
                .is_some_and(|d| d.namespaced && d.status)
        );
        assert!(t.lookup("policy", "v1", "poddisruptionbudgets").is_some());
        assert!(t.lookup("osroll.io", "v1alpha1", "osupgrades").is_none());
        t.register(ResourceDef {
            group: "osroll.io".into(),
            versions: vec!["v1alpha1".into()],
            plural: "osupgrades".into(),
            singular: "osupgrade".into(),
            kind: "OSUpgrade".into(),
            namespaced: false,
            short_names: vec!["osu".into()],
            categories: vec![],
            status: false,
            extra_subresources: vec![],
            custom: Some(Arc::new(CustomDef {
                crd_name: "osupgrades.osroll.io".into(),
                storage: "v1alpha1".into(),
                ..Default::default()
            })),
        });
        assert!(t.by_kind("osroll.io", "v1alpha1", "OSUpgrade").is_some());
        assert!(
            t.groups()
                .iter()
                .any(|(g, v)| g == "osroll.io" && v == &["v1alpha1"])
        );
        t.unregister("osupgrades.osroll.io");
        assert!(t.lookup("osroll.io", "v1alpha1", "osupgrades").is_none());
    }
}
