//! Removing what one harness instance made, on any cluster and even after a failed
//! test: its OSUpgrades, progress objects, Nodes and their Leases, its namespace, its
//! ClusterRoleBindings and its admission policy and binding. Everything is found by the instance's name prefix or namespace,
//! never by "everything there is", so other tests' objects are left alone.

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Node};
use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
};
use kube::{Resource, ResourceExt};
use osroll_api::{OSUpgrade, OSUpgradeProgress};
use serde::de::DeserializeOwned;
use serde_json::json;

use super::identities::is_binding_of;
use super::scope::Scope;

/// Delete the names `pick` chooses among `api`'s objects; the names it asked to delete.
async fn delete_matching<K, F>(api: &Api<K>, pick: F) -> anyhow::Result<Vec<String>>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
    F: Fn(&K) -> bool,
{
    let mut gone = Vec::new();
    for o in api.list(&ListParams::default()).await?.items {
        if pick(&o) {
            let name = o.name_any();
            match api.delete(&name, &DeleteParams::background()).await {
                Ok(_) => gone.push(name),
                Err(kube::Error::Api(s)) if s.code == 404 => gone.push(name),
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(gone)
}

/// Delete everything `scope` made (deletions are started, not awaited: a real
/// cluster finishes them in the background). Returns how many objects it asked to
/// delete.
pub async fn delete_scope(admin: &kube::Client, scope: &Scope) -> anyhow::Result<usize> {
    let ns = scope.namespace();
    let mut n = 0;
    let upgrades = Api::<OSUpgrade>::all(admin.clone());
    let deleted = delete_matching(&upgrades, |u| scope.owns(&u.name_any())).await?;
    // The instance's controller, which would remove its finalizer, is gone with the
    // test; so are the Nodes the finalizer would uncordon.
    let release = json!({"metadata": {"finalizers": null}});
    for name in &deleted {
        match upgrades
            .patch(name, &PatchParams::default(), &Patch::Merge(&release))
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    n += deleted.len();
    n += delete_matching(&Api::<OSUpgradeProgress>::all(admin.clone()), |p| {
        scope.owns(&p.spec.node_name) || scope.owns(&p.name_any())
    })
    .await?
    .len();
    n += delete_matching(&Api::<Node>::all(admin.clone()), |x| {
        scope.owns(&x.name_any())
    })
    .await?
    .len();
    let leases: Api<Lease> = Api::namespaced(admin.clone(), "kube-node-lease");
    n += delete_matching(&leases, |l| scope.owns(&l.name_any()))
        .await?
        .len();
    n += delete_matching(&Api::<ClusterRoleBinding>::all(admin.clone()), |b| {
        is_binding_of(&b.name_any(), &ns)
    })
    .await?
    .len();
    for (kind, plural) in [
        (
            "ValidatingAdmissionPolicyBinding",
            "validatingadmissionpolicybindings",
        ),
        ("ValidatingAdmissionPolicy", "validatingadmissionpolicies"),
    ] {
        let gvk = GroupVersionKind::gvk("admissionregistration.k8s.io", "v1", kind);
        let ar = ApiResource::from_gvk_with_plural(&gvk, plural);
        let api: Api<DynamicObject> = Api::all_with(admin.clone(), &ar);
        n += delete_matching(&api, |o| is_binding_of(&o.name_any(), &ns))
            .await?
            .len();
    }
    n += delete_matching(&Api::<Namespace>::all(admin.clone()), |x| {
        let name = x.name_any();
        name == ns || scope.owns(&name)
    })
    .await?
    .len();
    Ok(n)
}
