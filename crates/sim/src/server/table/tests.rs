//! Server-side printing: ages as kubectl prints them, built-in rows, Accept parsing.

use super::*;
use crate::server::resources::ResourceTable;

#[test]
fn human_durations_match_kubectl() {
    assert_eq!(human_duration(5), "5s");
    assert_eq!(human_duration(119), "119s");
    assert_eq!(human_duration(125), "2m5s");
    assert_eq!(human_duration(60 * 30), "30m");
    assert_eq!(human_duration(3600 * 5 + 60 * 7), "5h7m");
    assert_eq!(human_duration(3600 * 30), "30h");
    assert_eq!(human_duration(86400 * 3), "3d");
    assert_eq!(human_duration(86400 * 800), "2y");
}

#[test]
fn node_and_pod_rows() {
    let t = ResourceTable::default();
    let node = t.lookup("", "v1", "nodes").unwrap();
    let obj = json!({"metadata": {"name": "n1", "labels": {"node-role.kubernetes.io/worker": ""}},
        "spec": {"unschedulable": true},
        "status": {"conditions": [{"type": "Ready", "status": "False"}], "nodeInfo": {"kubeletVersion": "v1.33.0"}}});
    let r = row(&node, "v1", &obj, IncludeObject::None, Utc::now());
    assert_eq!(r["cells"][0], "n1");
    assert_eq!(r["cells"][1], "NotReady,SchedulingDisabled");
    assert_eq!(r["cells"][2], "worker");
    assert_eq!(r["cells"][4], "v1.33.0");
    let pod = t.lookup("", "v1", "pods").unwrap();
    let p = json!({"metadata": {"name": "p", "deletionTimestamp": "x"}, "spec": {"containers": [{"name": "a"}, {"name": "b"}]},
        "status": {"phase": "Running", "containerStatuses": [{"ready": true, "restartCount": 2}, {"ready": false, "restartCount": 1}]}});
    let r = row(&pod, "v1", &p, IncludeObject::Metadata, Utc::now());
    assert_eq!(r["cells"][1], "1/2");
    assert_eq!(r["cells"][2], "Terminating");
    assert_eq!(r["cells"][3], 3);
    assert_eq!(r["object"]["kind"], "PartialObjectMetadata");
}

#[test]
fn accept_header_parsing() {
    let kubectl = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
    assert_eq!(
        Presentation::from_accept(kubectl, None),
        Presentation::Table(IncludeObject::Metadata)
    );
    assert_eq!(
        Presentation::from_accept("application/json", None),
        Presentation::Full
    );
    assert_eq!(
        Presentation::from_accept(
            "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1",
            None
        ),
        Presentation::Metadata
    );
}
