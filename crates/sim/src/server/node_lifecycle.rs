//! The node lifecycle controller's tainting, as a task beside the request handlers: every
//! Node write marks the node (`Store::dirty_nodes`), and the task brings the node's
//! NoSchedule taints in line with its conditions and cordon (see [`crate::taints`]), so
//! a registering node carries `node.kubernetes.io/not-ready` until its kubelet reports
//! Ready, as on a real cluster. Not implemented: marking nodes with a stale lease
//! Unknown, and NoExecute taints with the evictions they cause.

use std::sync::Arc;
use std::time::Instant;

use k8s_openapi::api::core::v1::Node;
use serde_json::Value;

use super::App;
use super::store::Store;
use super::write::{Ctx, Managed};

/// Field manager of the controller's writes.
const MANAGER: &str = "node-lifecycle-controller";

impl Store {
    /// Reconcile the taints of the nodes written since the last call; whether any were.
    pub fn reconcile_dirty_nodes(&mut self) -> bool {
        let dirty = std::mem::take(&mut self.dirty_nodes);
        for name in &dirty {
            self.reconcile_node_taints(name);
        }
        !dirty.is_empty()
    }

    fn reconcile_node_taints(&mut self, name: &str) {
        let Some(old) = self.get("", "nodes", "", name) else {
            return;
        };
        let node: Node = match serde_json::from_value((*old).clone()) {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(node = name, error = %e, "node does not parse");
                return;
            }
        };
        if node.metadata.deletion_timestamp.is_some() {
            return;
        }
        let Some(taints) = crate::taints::reconciled_taints(&node) else {
            return;
        };
        let mut new = (*old).clone();
        if taints.is_empty() {
            if let Some(spec) = new["spec"].as_object_mut() {
                spec.remove("taints");
            }
        } else {
            new["spec"]["taints"] = serde_json::to_value(&taints).unwrap_or(Value::Null);
        }
        let Some(rd) = self.table.by_plural("", "nodes") else {
            return;
        };
        let version = rd.storage_version().to_string();
        let sc = super::write::scope(&rd, &version, false);
        let mut ctx = Ctx::internal(MANAGER);
        if let Err(e) = self.admit(&mut ctx, &rd, &version, Some(old), new, sc, Managed::Record) {
            tracing::warn!(node = name, error = %e, "tainting node");
        }
    }
}

/// The controller task: after every write that touched a Node, reconcile its taints.
pub async fn node_lifecycle_controller(app: Arc<App>) {
    super::control_loop::run(
        app,
        |store| (!store.dirty_nodes.is_empty()).then(Instant::now),
        |store, _| store.reconcile_dirty_nodes(),
    )
    .await;
}
