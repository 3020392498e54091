//! Pure drain decisions against plain pods and budgets: which pods go, which budget blocks.

use super::*;
use k8s_openapi::api::core::v1::PodStatus;
use k8s_openapi::api::policy::v1::PodDisruptionBudgetSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, ObjectMeta, OwnerReference, Time,
};

fn pod(name: &str, labels: &[(&str, &str)]) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("apps".into()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Default::default()
        },
        ..Default::default()
    }
}

fn t(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_700_000_000 + secs, 0).unwrap()
}

#[test]
fn daemonset_mirror_finished_and_unselected_pods_are_skipped() {
    let mut ds = pod("ds", &[]);
    ds.metadata.owner_references = Some(vec![OwnerReference {
        kind: "DaemonSet".into(),
        controller: Some(true),
        ..Default::default()
    }]);
    let mut mirror = pod("static", &[]);
    mirror.metadata.annotations = Some([(MIRROR_ANNOTATION.to_string(), "x".to_string())].into());
    let mut done = pod("job", &[]);
    done.status = Some(PodStatus {
        phase: Some("Succeeded".into()),
        ..Default::default()
    });
    let mut going = pod("going", &[]);
    going.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
    let web = pod("web", &[("app", "web")]);
    assert_eq!(classify(&ds, None), PodAction::SkipDaemonSet);
    assert_eq!(classify(&mirror, None), PodAction::SkipMirror);
    assert_eq!(classify(&done, None), PodAction::SkipFinished);
    assert_eq!(classify(&going, None), PodAction::Wait);
    assert_eq!(classify(&web, None), PodAction::Evict);
    let only_db = Selector::from_label_selector(
        &LabelSelector {
            match_labels: Some([("app".to_string(), "db".to_string())].into()),
            ..Default::default()
        },
        "s",
    )
    .unwrap();
    assert_eq!(classify(&web, Some(&only_db)), PodAction::SkipUnselected);

    let policy = DrainPolicy {
        timeout: Duration::from_secs(60),
        ..Default::default()
    };
    let pods = [ds, mirror, done, going, web];
    assert_eq!(
        assess(&pods, &policy, t(0), t(10)),
        Assessment::InProgress {
            evict: vec!["apps/web".into()],
            waiting: vec!["apps/going".into()]
        }
    );
    assert_eq!(
        assess(&pods, &policy, t(0), t(60)),
        Assessment::TimedOut {
            remaining: vec!["apps/web".into(), "apps/going".into()]
        }
    );
    assert_eq!(
        assess(&pods[..3], &policy, t(0), t(1000)),
        Assessment::Drained,
        "skipped pods never block"
    );
}

#[test]
fn pdbs_are_matched_by_namespace_and_selector() {
    let pdb = |ns: &str, name: &str, sel: Option<(&str, &str)>| PodDisruptionBudget {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(ns.into()),
            ..Default::default()
        },
        spec: Some(PodDisruptionBudgetSpec {
            selector: Some(LabelSelector {
                match_labels: sel.map(|(k, v)| [(k.to_string(), v.to_string())].into()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        status: None,
    };
    let pdbs = [
        pdb("apps", "web-pdb", Some(("app", "web"))),
        pdb("apps", "db-pdb", Some(("app", "db"))),
        pdb("other", "web-pdb", Some(("app", "web"))),
        pdb("apps", "all", None),
    ];
    assert_eq!(
        matching_pdbs(&pod("web-1", &[("app", "web")]), &pdbs),
        ["apps/web-pdb", "apps/all"]
    );
}

#[test]
fn budgets_are_used_up_as_pods_are_let_through() {
    use k8s_openapi::api::policy::v1::PodDisruptionBudgetStatus;
    let pdb = |name: &str, app: &str, allowed: Option<i32>| PodDisruptionBudget {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("apps".into()),
            ..Default::default()
        },
        spec: Some(PodDisruptionBudgetSpec {
            selector: Some(LabelSelector {
                match_labels: Some([("app".to_string(), app.to_string())].into()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        status: allowed.map(|n| PodDisruptionBudgetStatus {
            disruptions_allowed: n,
            ..Default::default()
        }),
    };
    let pods = [
        pod("web-1", &[("app", "web")]),
        pod("web-2", &[("app", "web")]),
        pod("db-1", &[("app", "db")]),
        pod("x", &[]),
    ];
    let keys: Vec<String> = pods.iter().map(pod_key).collect();
    let pdbs = [pdb("web", "web", Some(1)), pdb("db", "db", Some(0))];
    let (go, blocked) = split_by_budget(&keys, &pods, &pdbs);
    assert_eq!(go, ["apps/web-1", "apps/x"]);
    assert_eq!(
        blocked,
        [
            ("apps/web-2".to_string(), "apps/web".to_string()),
            ("apps/db-1".to_string(), "apps/db".to_string())
        ]
    );
    let (go, blocked) = split_by_budget(&keys, &pods, &[pdb("web", "web", None)]);
    assert_eq!(
        go.len(),
        4,
        "a budget without status is left to the Eviction API"
    );
    assert!(blocked.is_empty());
}
