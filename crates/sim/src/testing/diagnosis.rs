//! What a failed cluster test prints: the last lines each of its agents and its
//! controller logged (from [`super::logbook`]), and the state of the objects the test
//! waits on (its OSUpgrades, their progress objects and its Nodes), so the cause of a
//! failure reads from the test output instead of being dug out of the API server.

use std::fmt::Write as _;

use k8s_openapi::api::core::v1::Node;
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use osroll_api::{OSUpgrade, OSUpgradeProgress, labels};

use super::logbook;
use super::scope::Scope;

/// Log lines printed per source.
pub const LOG_LINES: usize = 20;

/// The diagnosis text of the instance `scope` (sources whose names carry its prefix or
/// namespace).
pub async fn diagnosis(admin: &kube::Client, scope: &Scope) -> String {
    let mut out = String::new();
    for pattern in [scope.prefix(), scope.namespace()] {
        for (source, lines) in logbook::tail(&pattern, LOG_LINES) {
            let _ = writeln!(out, "--- last {} lines of {source}:", lines.len());
            for l in lines {
                let _ = writeln!(out, "    {l}");
            }
        }
    }
    match objects(admin, scope).await {
        Ok(text) => out.push_str(&text),
        Err(e) => {
            let _ = writeln!(out, "--- objects: could not list them: {e:#}");
        }
    }
    out
}

fn ready(n: &Node) -> &str {
    n.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .map_or("Unknown", |c| c.status.as_str())
}

/// One line per OSUpgrade, progress object and Node of `scope`.
async fn objects(admin: &kube::Client, scope: &Scope) -> anyhow::Result<String> {
    let mut out = String::from("--- objects:\n");
    let all = ListParams::default();
    for u in Api::<OSUpgrade>::all(admin.clone()).list(&all).await?.items {
        if !scope.owns(&u.name_any()) {
            continue;
        }
        let st = u.status.clone().unwrap_or_default();
        writeln!(
            out,
            "    OSUpgrade {}: phase {:?} reason {:?} message {:?} nodes {:?}",
            u.name_any(),
            st.phase,
            st.reason,
            st.message,
            st.nodes
        )?;
    }
    for p in Api::<OSUpgradeProgress>::all(admin.clone())
        .list(&all)
        .await?
        .items
    {
        if !scope.owns(&p.spec.node_name) {
            continue;
        }
        let st = p.status.clone().unwrap_or_default();
        writeln!(
            out,
            "    OSUpgradeProgress {} (node {}): phase {:?} failure {:?} message {:?} approved {}",
            p.name_any(),
            p.spec.node_name,
            st.phase,
            st.failure_reason,
            st.message,
            p.spec.reboot_approved
        )?;
    }
    let nodes = ListParams::default().labels(&scope.selector());
    for n in Api::<Node>::all(admin.clone()).list(&nodes).await?.items {
        let unschedulable = n.spec.as_ref().and_then(|s| s.unschedulable);
        writeln!(
            out,
            "    Node {}: Ready {} unschedulable {:?} managed {:?} version {:?}",
            n.name_any(),
            ready(&n),
            unschedulable.unwrap_or(false),
            n.labels().get(labels::MANAGED),
            n.labels().get(labels::OS_VERSION)
        )?;
    }
    Ok(out)
}
