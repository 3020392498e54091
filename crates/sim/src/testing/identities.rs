//! The identities osroll runs as, set up on a test cluster from the same code as
//! `osroll create`: the controller's and the agents' service accounts with the
//! generated ClusterRoles, Roles and bindings, and the agents' admission policy. Only
//! these are applied, never the Deployment or DaemonSet (they would start real pods on a
//! real cluster).

use anyhow::Context;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use osroll_api::manifests::{self, AGENT_SA, CONTROLLER_SA, DEFAULT_NAMESPACE};
use serde_json::Value;

/// The user a service account `sa` of namespace `ns` authenticates as.
pub fn service_account_user(ns: &str, sa: &str) -> String {
    format!("system:serviceaccount:{ns}:{sa}")
}

/// The controller's user when it runs in `ns`.
pub fn controller_user(ns: &str) -> String {
    service_account_user(ns, CONTROLLER_SA)
}

/// The agents' user when they run in `ns`.
pub fn agent_user(ns: &str) -> String {
    service_account_user(ns, AGENT_SA)
}

/// The namespace, service accounts, ClusterRoles, Roles and bindings of the generated
/// manifests for components in `ns`. The ClusterRoles are shared by every namespace
/// (their rules do not depend on it); outside the default namespace each
/// ClusterRoleBinding is named after `ns` too, so that several test namespaces can be
/// bound at once and each binding removed with its namespace.
pub fn rbac_objects(ns: &str) -> Vec<Value> {
    let image = manifests::default_image();
    let mut objects: Vec<Value> = manifests::controller(&image, ns)
        .into_iter()
        .chain(manifests::agent(&image, ns))
        .filter(|o| {
            matches!(
                o["kind"].as_str(),
                Some(
                    "Namespace"
                        | "ServiceAccount"
                        | "ClusterRole"
                        | "ClusterRoleBinding"
                        | "Role"
                        | "RoleBinding"
                )
            )
        })
        .collect();
    if ns != DEFAULT_NAMESPACE {
        for o in objects
            .iter_mut()
            .filter(|o| o["kind"] == "ClusterRoleBinding")
        {
            let name = format!(
                "{}-{ns}",
                o["metadata"]["name"].as_str().unwrap_or_default()
            );
            o["metadata"]["name"] = name.into();
        }
    }
    objects
}

/// The agents' ValidatingAdmissionPolicy and its binding, as `osroll create agent`
/// emits them for components in `ns`; outside the default namespace both are named
/// after `ns` too (they are cluster-scoped), like the ClusterRoleBindings.
pub fn admission_objects(ns: &str) -> Vec<Value> {
    let mut objects = manifests::agent_admission_policy(ns);
    if ns != DEFAULT_NAMESPACE {
        for o in &mut objects {
            let name = format!(
                "{}-{ns}",
                o["metadata"]["name"].as_str().unwrap_or_default()
            );
            if o["kind"] == "ValidatingAdmissionPolicyBinding" {
                o["spec"]["policyName"] = name.clone().into();
            }
            o["metadata"]["name"] = name.into();
        }
    }
    objects
}

/// Whether `name` is a ClusterRoleBinding [`rbac_objects`] (or a policy or binding
/// [`admission_objects`]) makes for `ns`.
pub fn is_binding_of(name: &str, ns: &str) -> bool {
    ns != DEFAULT_NAMESPACE && name.ends_with(&format!("-{ns}"))
}

fn plural(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "Namespace" => "namespaces",
        "ServiceAccount" => "serviceaccounts",
        "ClusterRole" => "clusterroles",
        "ClusterRoleBinding" => "clusterrolebindings",
        "Role" => "roles",
        "RoleBinding" => "rolebindings",
        "ValidatingAdmissionPolicy" => "validatingadmissionpolicies",
        "ValidatingAdmissionPolicyBinding" => "validatingadmissionpolicybindings",
        _ => return None,
    })
}

/// Server-side apply `objects` (namespaces, service accounts, RBAC objects and
/// admission policies; others are skipped) as field manager `manager`: idempotent on a cluster that has them.
pub async fn apply(client: &kube::Client, objects: &[Value], manager: &str) -> anyhow::Result<()> {
    for o in objects {
        let kind = o["kind"].as_str().unwrap_or_default();
        let Some(plural) = plural(kind) else { continue };
        let api_version = o["apiVersion"].as_str().unwrap_or_default();
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        let ar =
            ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural);
        let name = o["metadata"]["name"].as_str().unwrap_or_default();
        let api: Api<DynamicObject> = match o["metadata"]["namespace"].as_str() {
            Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
            None => Api::all_with(client.clone(), &ar),
        };
        api.patch(name, &PatchParams::apply(manager).force(), &Patch::Apply(o))
            .await
            .with_context(|| format!("applying {kind} {name}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_namespaces_get_their_own_bindings_of_the_shared_roles() {
        let objs = rbac_objects("osroll-tabc");
        let names = |kind: &str| -> Vec<String> {
            objs.iter()
                .filter(|o| o["kind"] == kind)
                .map(|o| {
                    o["metadata"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string()
                })
                .collect()
        };
        assert_eq!(names("ClusterRole"), [CONTROLLER_SA, AGENT_SA]);
        let bindings = names("ClusterRoleBinding");
        assert_eq!(bindings.len(), 2);
        assert!(bindings.iter().all(|b| is_binding_of(b, "osroll-tabc")));
        assert!(
            objs.iter()
                .all(|o| o["kind"] != "Deployment" && o["kind"] != "DaemonSet")
        );
        let policy = admission_objects("osroll-tabc");
        assert_eq!(
            policy[1]["spec"]["policyName"], policy[0]["metadata"]["name"],
            "the binding names its policy"
        );
        assert!(
            policy
                .iter()
                .all(|o| is_binding_of(o["metadata"]["name"].as_str().unwrap(), "osroll-tabc"))
        );
        let shipped = rbac_objects(DEFAULT_NAMESPACE);
        assert!(
            shipped.iter().any(
                |o| o["kind"] == "ClusterRoleBinding" && o["metadata"]["name"] == CONTROLLER_SA
            )
        );
    }
}
