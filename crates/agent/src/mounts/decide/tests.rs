//! Unit tests of the restart decision.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use k8s_openapi::jiff::Timestamp;

use super::*;
use crate::mounts::procfs::{MountEntry, ProcessMounts};

const OLD: &str = "1111111111111111111111111111111111111111111111111111111111111111";
const NEW: &str = "2222222222222222222222222222222222222222222222222222222222222222";

fn t(s: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + s).unwrap()
}

fn pod(name: &str, labels: &[(&str, &str)]) -> PodInfo {
    PodInfo {
        pod: PodRef {
            namespace: "kube-system".into(),
            name: name.into(),
            uid: format!("uid-{name}"),
        },
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        created: Some(t(-3600)),
        terminating: false,
        controlled: true,
    }
}

fn procs(pid: u32, pod: &str, roots: &[&str]) -> ProcessMounts {
    ProcessMounts {
        pid,
        pod_uid: format!("uid-{pod}"),
        mounts: roots
            .iter()
            .map(|r| MountEntry {
                root: r.to_string(),
                mount_point: "/host/etc".into(),
                fs_type: "xfs".into(),
                source: "/dev/vda4".into(),
            })
            .collect(),
    }
}

fn input<'a>(
    pods: &'a [PodInfo],
    processes: &'a [ProcessMounts],
    stale: &'a [StaleRef],
    none: &'a BTreeSet<String>,
) -> RestartInput<'a> {
    RestartInput {
        reboot_follows: false,
        applied_at: t(0),
        pods,
        processes,
        stale,
        selector: None,
        already_restarted: none,
        exclude: none,
    }
}

fn names(plan: &RestartPlan) -> Vec<&str> {
    plan.restart.iter().map(|r| r.pod.name.as_str()).collect()
}

#[test]
fn stale_refs_match_whole_path_components_only() {
    let dir = StaleRef::Path(format!("/ostree/deploy/fedora/deploy/{OLD}.0/"));
    assert!(dir.matches(&format!("/ostree/deploy/fedora/deploy/{OLD}.0/etc/cni")));
    assert!(dir.matches(&format!("/sysroot/ostree/deploy/fedora/deploy/{OLD}.0")));
    assert!(!dir.matches(&format!("/ostree/deploy/fedora/deploy/{OLD}.01/etc")));
    assert!(!dir.matches(&format!("/ostree/deploy/fedora/deploy/{NEW}.0/etc")));
    let c = StaleRef::DeploymentChecksum(OLD.into());
    assert!(c.matches(&format!("/ostree/deploy/x/deploy/{OLD}.3/usr")));
    assert!(c.matches(&format!("/objects/{OLD}")));
    assert!(!c.matches(&format!("/ostree/deploy/x/deploy/{OLD}.3x/usr")));
    assert!(!c.matches(&format!("/ostree/deploy/x/deploy/{NEW}.0/usr")));
}

#[test]
fn each_pod_once_however_many_processes_and_reasons() {
    let pods = [
        pod("calico-node-a", &[("k8s-app", "calico-node")]),
        pod("web", &[]),
    ];
    let old = format!("/ostree/deploy/fedora/deploy/{OLD}.0/etc/cni/net.d");
    let processes = [
        procs(10, "calico-node-a", &["/", &old]),
        procs(11, "calico-node-a", &[&old]),
        procs(12, "web", &["/var/lib/kubelet/pods/x/volumes"]),
    ];
    let stale = [StaleRef::DeploymentChecksum(OLD.into())];
    let none = BTreeSet::new();
    let sel = LabelSelector {
        match_labels: Some(BTreeMap::from([("k8s-app".into(), "calico-node".into())])),
        ..Default::default()
    };
    let plan = plan_restarts(&RestartInput {
        selector: Some(&sel),
        ..input(&pods, &processes, &stale, &none)
    })
    .unwrap();
    assert_eq!(names(&plan), ["calico-node-a"]);
    assert_eq!(
        plan.restart[0].reasons,
        vec![
            format!("pid 10 has /host/etc mounted from {old}, in the previous deployment"),
            "matches restartOnLiveUpdate".to_string(),
        ]
    );
}

#[test]
fn nothing_when_a_reboot_follows() {
    let pods = [pod("calico-node-a", &[])];
    let processes = [procs(10, "calico-node-a", &[&format!("/x/{OLD}.0")])];
    let stale = [StaleRef::DeploymentChecksum(OLD.into())];
    let none = BTreeSet::new();
    let plan = plan_restarts(&RestartInput {
        reboot_follows: true,
        ..input(&pods, &processes, &stale, &none)
    })
    .unwrap();
    assert_eq!(plan, RestartPlan::default());
}

#[test]
fn recorded_terminating_own_and_uncontrolled_pods_are_not_deleted() {
    let mut bare = pod("bare", &[]);
    bare.controlled = false;
    let mut going = pod("going", &[]);
    going.terminating = true;
    let pods = [
        pod("done", &[]),
        going,
        bare,
        pod("agent", &[]),
        pod("todo", &[]),
    ];
    let root = format!("/ostree/deploy/f/deploy/{OLD}.0/etc");
    let processes: Vec<_> = ["done", "going", "bare", "agent", "todo"]
        .iter()
        .zip(1..)
        .map(|(n, pid)| procs(pid, n, &[&root]))
        .collect();
    let stale = [StaleRef::DeploymentChecksum(OLD.into())];
    let done = BTreeSet::from(["uid-done".to_string()]);
    let agent = BTreeSet::from(["uid-agent".to_string()]);
    let plan = plan_restarts(&RestartInput {
        already_restarted: &done,
        exclude: &agent,
        ..input(&pods, &processes, &stale, &done)
    })
    .unwrap();
    assert_eq!(names(&plan), ["todo"]);
    let skipped: Vec<_> = plan
        .skipped
        .iter()
        .map(|s| (s.pod.name.as_str(), s.why.as_str()))
        .collect();
    assert_eq!(
        skipped,
        [
            ("agent", "it is the osroll agent itself"),
            (
                "bare",
                "no controller would recreate it; restart it by hand"
            ),
        ]
    );
}

#[test]
fn the_selector_only_picks_pods_older_than_the_update() {
    let mut fresh = pod("multus-new", &[("app", "multus")]);
    fresh.created = Some(t(5));
    let pods = [
        pod("multus-old", &[("app", "multus")]),
        fresh,
        pod("other", &[("app", "web")]),
    ];
    let none = BTreeSet::new();
    let sel = LabelSelector {
        match_expressions: Some(vec![LabelSelectorRequirement {
            key: "app".into(),
            operator: "In".into(),
            values: Some(vec!["multus".into(), "calico".into()]),
        }]),
        ..Default::default()
    };
    let plan = plan_restarts(&RestartInput {
        selector: Some(&sel),
        ..input(&pods, &[], &[], &none)
    })
    .unwrap();
    assert_eq!(names(&plan), ["multus-old"]);
}

#[test]
fn selector_operators_follow_kubernetes() {
    let labels = BTreeMap::from([("tier".to_string(), "net".to_string())]);
    let req = |op: &str, values: &[&str]| LabelSelector {
        match_expressions: Some(vec![LabelSelectorRequirement {
            key: "tier".into(),
            operator: op.into(),
            values: (!values.is_empty()).then(|| values.iter().map(|v| v.to_string()).collect()),
        }]),
        ..Default::default()
    };
    assert!(super::selector_matches(&req("In", &["net"]), &labels));
    assert!(!super::selector_matches(&req("NotIn", &["net"]), &labels));
    assert!(super::selector_matches(&req("Exists", &[]), &labels));
    assert!(!super::selector_matches(&req("DoesNotExist", &[]), &labels));
    assert!(super::selector_matches(&LabelSelector::default(), &labels));
    let err = super::validate_selector(&req("Equals", &["net"])).unwrap_err();
    assert!(
        err.to_string()
            .contains("unknown operator \"Equals\" for key \"tier\""),
        "{err}"
    );
    let err = super::validate_selector(&req("In", &[])).unwrap_err();
    assert!(
        err.to_string()
            .contains("operator In for key \"tier\" needs values"),
        "{err}"
    );
    let none = BTreeSet::new();
    let bad = req("Exists", &["x"]);
    assert!(
        plan_restarts(&RestartInput {
            selector: Some(&bad),
            ..input(&[], &[], &[], &none)
        })
        .is_err()
    );
}
