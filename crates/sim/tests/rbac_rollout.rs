//! RBAC over a full rollout: the real controller and three real node agents upgrade
//! three kubelet-lite nodes on the test API server with the shipped RBAC enforced, as
//! the identities the manifests bind (the controller's and the agent's service accounts;
//! each agent with a token bound to its node, as a DaemonSet pod's is). Afterwards every
//! call in the audit log is checked against the ClusterRoles/Roles that `osroll create`
//! generates: one the manifests would forbid fails the test, and so does an agent
//! touching another node's Node or progress object. Two deliberate violations after
//! the rollout show that the checks catch both kinds. The agents' admission policy, as
//! `osroll create agent` emits it, is enforced throughout (the test API server
//! evaluates its CEL): the rollout passes under it, and an agent labelling another
//! node is refused by it.
//!
//! On a real cluster (`OSROLL_E2E_KUBECONFIG`) there is no audit log: the test applies
//! the same RBAC and asks `kubectl auth can-i --as=system:serviceaccount:...` what each
//! identity may and may not do; on the test API server the same table is checked
//! against the manifests' rules.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::fleet::{Controller, wait_rollout_end};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, PostParams};
use osroll_api::{OSUpgrade, OSUpgradeProgress, UpgradePhase};
use osroll_sim::AuditEntry;
use osroll_sim::demo::images::ImageServer;
use osroll_sim::demo::node::MachineOptions;
use osroll_sim::rbac::Authorizer;
use osroll_sim::testing::{Cluster, identities};
use serde_json::json;

const NODES: usize = 3;

/// One question of the table: may `user` `verb` `resource`/`sub` in `ns`? `want`.
struct Expect {
    user: String,
    verb: &'static str,
    resource: &'static str,
    sub: &'static str,
    ns: String,
    want: bool,
}

/// What each identity may do, in the instance's namespace.
fn expectations(cluster: &Cluster) -> Vec<Expect> {
    let (a, c, own) = (
        cluster.agent_user(),
        cluster.controller_user(),
        cluster.namespace(),
    );
    let p = "osupgradeprogresses.osroll.io";
    let lease = "leases.coordination.k8s.io";
    let rows: [(&str, &'static str, &'static str, &'static str, &str, bool); 19] = [
        (&a, "watch", p, "", "", true),
        (&a, "patch", p, "status", "", true),
        (&a, "patch", "nodes", "", "", true),
        (&a, "create", p, "", "", false),
        (&a, "update", p, "", "", false),
        (&a, "delete", p, "", "", false),
        (&a, "patch", "osupgrades.osroll.io", "", "", false),
        (&a, "update", "nodes", "", "", false),
        (&a, "delete", "nodes", "", "", false),
        (&a, "create", "pods", "eviction", "default", false),
        (&a, "get", "secrets", "", &own, false),
        (&a, "update", lease, "", &own, false),
        (&c, "create", p, "", "", true),
        (&c, "patch", "osupgrades.osroll.io", "status", "", true),
        (&c, "create", "pods", "eviction", "default", true),
        (&c, "update", lease, "", &own, true),
        (&c, "patch", p, "status", "", false),
        (&c, "get", "secrets", "", &own, false),
        (&c, "update", lease, "", "default", false),
    ];
    rows.into_iter()
        .map(|(user, verb, resource, sub, ns, want)| Expect {
            user: user.into(),
            verb,
            resource,
            sub,
            ns: ns.into(),
            want,
        })
        .collect()
}

/// `kubectl auth can-i` on a real cluster (exit 0: yes, 1: no).
async fn can_i(
    cluster: &Cluster,
    user: &str,
    verb: &str,
    resource: &str,
    sub: &str,
    ns: &str,
) -> anyhow::Result<bool> {
    let as_user = format!("--as={user}");
    let mut args = vec!["auth", "can-i", verb, resource, as_user.as_str()];
    let sub_arg = format!("--subresource={sub}");
    if !sub.is_empty() {
        args.push(&sub_arg);
    }
    let ns_arg = format!("--namespace={ns}");
    if !ns.is_empty() {
        args.push(&ns_arg);
    }
    let out = cluster.kubectl_run(&args, None).await?;
    match out.code {
        0 => Ok(true),
        1 => Ok(false),
        _ => anyhow::bail!("kubectl {args:?}: {out:?}"),
    }
}

/// The same question answered by the manifests' rules.
fn manifests_allow(
    authz: &Authorizer,
    user: &str,
    verb: &str,
    resource: &str,
    sub: &str,
    ns: &str,
) -> bool {
    let (res, group) = resource.split_once('.').unwrap_or((resource, ""));
    authz.allows(&AuditEntry {
        user: user.into(),
        verb: verb.into(),
        group: group.into(),
        version: "v1".into(),
        resource: res.into(),
        subresource: sub.into(),
        namespace: ns.into(),
        ..AuditEntry::default()
    })
}

fn upgrade(cluster: &Cluster, catalog: String) -> anyhow::Result<OSUpgrade> {
    cluster.upgrade(
        "rbac-fleet",
        json!({"version": "stable", "catalog": {"inline": catalog}, "allowHttpImages": true}),
    )
}

/// Whether a label or field selector requires `key` to equal `value`.
fn selects(selector: &str, key: &str, value: &str) -> bool {
    selector.split(',').any(|req| {
        let req = req.trim();
        [format!("{key}={value}"), format!("{key}=={value}")].contains(&req.to_string())
    })
}

fn show(e: &AuditEntry) -> String {
    format!(
        "#{} {} {} {}/{}{} ns={:?} name={:?} node={:?} labels={:?} fields={:?} -> {}",
        e.seq,
        e.user,
        e.verb,
        e.group,
        e.resource,
        if e.subresource.is_empty() {
            String::new()
        } else {
            format!("/{}", e.subresource)
        },
        e.namespace,
        e.name,
        e.node_name,
        e.label_selector,
        e.field_selector,
        e.code
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_stays_within_the_shipped_rbac_and_agents_within_their_node() -> anyhow::Result<()>
{
    // The harness applied the generated RBAC for its namespace; RBAC is enforced.
    let cluster = Cluster::start().await?;
    let authz = Authorizer::from_objects(&identities::rbac_objects(&cluster.namespace()));
    let (agent, controller) = (cluster.agent_user(), cluster.controller_user());

    // What each identity may do: kubectl auth can-i on a real cluster, the manifests'
    // rules here (the same table, so it is exercised on every run).
    for Expect {
        user,
        verb,
        resource,
        sub,
        ns,
        want,
    } in expectations(&cluster)
    {
        let got = if cluster.is_real() {
            can_i(&cluster, &user, verb, resource, sub, &ns).await?
        } else {
            manifests_allow(&authz, &user, verb, resource, sub, &ns)
        };
        assert_eq!(got, want, "{user} {verb} {resource}/{sub} in {ns:?}");
    }

    let admin = cluster.admin();
    // The rollout runs under the agents' admission policy.
    let policy = &identities::admission_objects(&cluster.namespace())[0];
    let vap = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(
            "admissionregistration.k8s.io",
            "v1",
            "ValidatingAdmissionPolicy",
        ),
        "validatingadmissionpolicies",
    );
    Api::<DynamicObject>::all_with(admin.clone(), &vap)
        .get(policy["metadata"]["name"].as_str().unwrap_or_default())
        .await?;
    let node = |i: usize| cluster.name(&format!("rbac-node-{i}"));
    let images = ImageServer::start(&["2.0"], 128 * 1024).await?;
    let dir = tempfile::tempdir()?;
    let opts = MachineOptions {
        slot_size: 512 * 1024,
        downtime: Duration::from_millis(100),
        bad_slot_b: false,
    };
    let mut nodes = Vec::new();
    for i in 0..NODES {
        // The kubelet as its node; the agent as its service account, with a token
        // bound to its node.
        nodes.push(
            cluster
                .start_machine(dir.path(), &node(i), "1.0", &opts)
                .await?,
        );
    }
    cluster.wait_managed(NODES).await?;

    let up = upgrade(&cluster, images.catalog("2.0"))?;
    let up_name = up.metadata.name.clone().unwrap_or_default();
    Api::<OSUpgrade>::all(admin.clone())
        .create(&PostParams::default(), &up)
        .await?;
    let ctrl = Controller::start(&cluster, "rbac-test", Duration::from_millis(200)).await?;
    let st = wait_rollout_end(&admin, &up_name, Duration::from_secs(90)).await?;
    assert_eq!(st.phase, Some(UpgradePhase::Completed), "{st:#?}");
    ctrl.stop().await?;
    drop(nodes);

    let Some(rollout_calls) = cluster.audit().map(|l| l.len() as u64) else {
        return Ok(()); // A real cluster: checked with kubectl auth can-i above.
    };
    // Negative controls after the rollout, as node 0's agent: reading another node's
    // Node and listing every progress object (RBAC allows both; confinement does not),
    // and editing another node's progress spec (RBAC forbids it). The checks below must
    // flag all three, and nothing before them.
    let rogue = cluster.agent_client(&node(0)).await?;
    Api::<Node>::all(rogue.clone()).get(&node(1)).await?;
    Api::<OSUpgradeProgress>::all(rogue.clone())
        .list(&ListParams::default())
        .await?;
    let progresses = Api::<OSUpgradeProgress>::all(admin.clone())
        .list(&ListParams::default())
        .await?
        .items;
    let other = progresses
        .iter()
        .find(|p| p.spec.node_name == node(2))
        .and_then(|p| p.metadata.name.clone())
        .expect("node 2's progress");
    let edit = Api::<OSUpgradeProgress>::all(rogue)
        .patch(
            &other,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"spec": {"image": {"url": "https://evil.example/x"}}})),
        )
        .await;
    assert!(
        matches!(edit, Err(kube::Error::Api(ref e)) if e.code == 403),
        "{edit:?}"
    );
    // RBAC lets an agent patch any Node; the admission policy does not.
    let relabel = json!({"metadata": {"labels": {osroll_api::labels::OS_VERSION: "999"}}});
    let foreign = Api::<Node>::all(cluster.agent_client(&node(0)).await?)
        .patch(
            &node(1),
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(relabel),
        )
        .await;
    assert!(
        matches!(foreign, Err(kube::Error::Api(ref e)) if e.code == 403
            && e.message.contains("ValidatingAdmissionPolicy")),
        "{foreign:?}"
    );
    let log = cluster.audit().expect("audit log");
    let mut problems: Vec<(u64, String)> = Vec::new();
    for user in [controller.as_str(), agent.as_str()] {
        for e in authz.denied(&log, user) {
            problems.push((e.seq, format!("forbidden by the manifests: {}", show(e))));
        }
    }
    // Confinement: every agent call carries its node; a named Node or progress object
    // must be that node's.
    let owner: HashMap<String, String> = progresses
        .into_iter()
        .map(|p| (p.metadata.name.unwrap_or_default(), p.spec.node_name))
        .collect();
    assert_eq!(owner.len(), NODES);
    let agent_calls: Vec<&AuditEntry> = log.iter().filter(|e| e.user == agent).collect();
    let rollout_agent_calls = agent_calls
        .iter()
        .filter(|e| e.seq <= rollout_calls)
        .count();
    for e in &agent_calls {
        let Some(node) = &e.node_name else {
            problems.push((
                e.seq,
                format!("agent call without a node-bound token: {}", show(e)),
            ));
            continue;
        };
        let foreign = match e.resource.as_str() {
            "nodes" => !e.name.is_empty() && e.name != *node,
            "osupgradeprogresses" => !e.name.is_empty() && owner.get(&e.name) != Some(node),
            _ => false,
        };
        // A collection read must be narrowed to this node by its selector.
        if matches!(e.verb.as_str(), "list" | "watch") && e.name.is_empty() {
            let narrowed = match e.resource.as_str() {
                "osupgradeprogresses" => selects(&e.field_selector, "spec.nodeName", node),
                "nodes" => selects(&e.field_selector, "metadata.name", node),
                "pods" => selects(&e.field_selector, "spec.nodeName", node),
                _ => false,
            };
            if !narrowed {
                problems.push((
                    e.seq,
                    format!("agent read a collection beyond its node: {}", show(e)),
                ));
            }
        }
        if foreign {
            problems.push((
                e.seq,
                format!("agent touched another node's object: {}", show(e)),
            ));
        }
    }
    let (controls, rollout): (Vec<_>, Vec<_>) = problems
        .into_iter()
        .partition(|(seq, _)| *seq > rollout_calls);
    let text = |v: &[(u64, String)]| v.iter().map(|p| p.1.clone()).collect::<Vec<_>>().join("\n");
    assert!(rollout.is_empty(), "{}", text(&rollout));
    let controls = text(&controls);
    assert!(
        controls.contains("another node's object")
            && controls.contains(&format!("name={:?}", node(1)))
            && controls.contains("a collection beyond its node")
            && controls.contains("forbidden by the manifests")
            && controls.contains(&format!("name={other:?}")),
        "the negative controls were not all flagged:\n{controls}"
    );

    // The check saw the calls that matter (it is not vacuous).
    let did = |user: &str, verb: &str, resource: &str, sub: &str| {
        log.iter().any(|e| {
            e.user == user
                && e.verb == verb
                && e.resource == resource
                && e.subresource == sub
                && e.code < 300
        })
    };
    assert!(did(&controller, "create", "osupgradeprogresses", ""));
    assert!(
        agent_calls.iter().any(|e| e.seq <= rollout_calls
            && e.verb == "watch"
            && e.resource == "osupgradeprogresses"
            && !e.field_selector.is_empty()),
        "the agents' watch of their progress objects was seen, with its selector"
    );
    assert!(did(&controller, "patch", "nodes", ""), "cordon");
    for n in 0..NODES {
        let node = node(n);
        let mine = |resource: &str, sub: &str| {
            agent_calls.iter().any(|e| {
                e.node_name.as_deref() == Some(node.as_str())
                    && e.verb == "patch"
                    && e.resource == resource
                    && e.subresource == sub
                    && e.code < 300
            })
        };
        assert!(
            mine("osupgradeprogresses", "status"),
            "{node} wrote no status"
        );
        assert!(mine("nodes", ""), "{node} labelled no node");
    }
    println!(
        "audit: {} calls, {} by the controller, {} by the agents",
        rollout_calls,
        log.iter().filter(|e| e.user == controller).count(),
        rollout_agent_calls
    );
    Ok(())
}
