//! `osroll rollback NAME`: ask an OSUpgrade to put every node it upgraded back on the
//! version it ran before, by setting `spec.rollback` (the controller does the rest, under
//! the rollout's maxUnavailable, windows and drain rules). A thin adapter: one patch.

use anyhow::Context as _;
use clap::Args;
use kube::api::{Api, Patch, PatchParams};
use osroll_api::OSUpgrade;
use serde_json::{Value, json};

/// Rollback options.
#[derive(Args, Debug)]
pub(crate) struct RollbackCmd {
    /// The OSUpgrade to roll back.
    name: String,
}

/// The merge patch that requests the rollback.
fn request() -> Value {
    json!({"spec": {"rollback": true}})
}

/// Patch the OSUpgrade and say what the controller will do.
pub(crate) fn run(cmd: RollbackCmd) -> anyhow::Result<()> {
    let rt = super::logging_and_runtime("warn")?;
    rt.block_on(async move {
        let client = kube::Client::try_default()
            .await
            .context("connecting to the Kubernetes API")?;
        let api: Api<OSUpgrade> = Api::all(client);
        let up = api
            .patch(
                &cmd.name,
                &PatchParams::default(),
                &Patch::Merge(&request()),
            )
            .await
            .with_context(|| format!("requesting the rollback of OSUpgrade {}", cmd.name))?;
        let version = up
            .status
            .as_ref()
            .and_then(|s| s.resolved_version.clone())
            .unwrap_or_else(|| up.spec.version.clone());
        println!(
            "OSUpgrade {}: rollback of {version} requested; every node it upgraded goes back \
             (follow with `osroll status {} --watch`)",
            cmd.name, cmd.name
        );
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_sets_spec_rollback() {
        let mut spec = serde_json::to_value(osroll_api::OSUpgradeSpec::default()).unwrap();
        json_patch_merge(&mut spec, &request()["spec"]);
        let spec: osroll_api::OSUpgradeSpec = serde_json::from_value(spec).unwrap();
        assert!(spec.rollback);
    }

    fn json_patch_merge(target: &mut Value, patch: &Value) {
        for (k, v) in patch.as_object().unwrap() {
            target[k] = v.clone();
        }
    }
}
