//! Pure builders for what a kubelet writes: the Node object and its status, the node
//! Lease, and pod status for running, stopped (node rebooting) and restarted pods.

use std::collections::BTreeMap;

use serde_json::{Value, json};

/// Facts about the simulated machine.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeFacts {
    /// Node name.
    pub name: String,
    /// Labels set at registration (added to the standard hostname/os/arch ones).
    pub labels: BTreeMap<String, String>,
    /// `nodeInfo.bootID`; changes on every reboot.
    pub boot_id: String,
    /// `nodeInfo.osImage`.
    pub os_image: String,
    /// `nodeInfo.kubeletVersion`.
    pub kubelet_version: String,
    /// Whether the node is up and its kubelet healthy.
    pub ready: bool,
    /// Why it is not ready, when it is not.
    pub not_ready_message: String,
}

/// Standard plus configured labels.
pub fn node_labels(f: &NodeFacts) -> BTreeMap<String, String> {
    let mut l = BTreeMap::from([
        ("kubernetes.io/hostname".to_string(), f.name.clone()),
        ("kubernetes.io/os".to_string(), "linux".to_string()),
        ("kubernetes.io/arch".to_string(), "amd64".to_string()),
    ]);
    l.extend(f.labels.clone());
    l
}

/// The Node a kubelet registers.
pub fn node_object(f: &NodeFacts, now: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": { "name": f.name, "labels": node_labels(f) },
        "spec": {},
        "status": node_status(f, now, None),
    })
}

/// The condition list, keeping `lastTransitionTime` from `previous` conditions whose
/// status did not change.
fn conditions(f: &NodeFacts, now: &str, previous: Option<&Value>) -> Value {
    let since = |t: &str, status: &str| {
        previous
            .and_then(|p| p.as_array())
            .and_then(|c| c.iter().find(|c| c["type"] == t && c["status"] == status))
            .and_then(|c| c.get("lastTransitionTime").cloned())
            .unwrap_or_else(|| Value::String(now.into()))
    };
    let ok = |t: &str, reason: &str, msg: &str| {
        json!({"type": t, "status": "False", "reason": reason, "message": msg,
               "lastHeartbeatTime": now, "lastTransitionTime": since(t, "False")})
    };
    let (rs, reason, msg) = if f.ready {
        (
            "True",
            "KubeletReady",
            "kubelet is posting ready status".to_string(),
        )
    } else {
        ("False", "KubeletNotReady", f.not_ready_message.clone())
    };
    json!([
        ok("MemoryPressure", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
        ok("DiskPressure", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
        ok("PIDPressure", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
        {"type": "Ready", "status": rs, "reason": reason, "message": msg,
         "lastHeartbeatTime": now, "lastTransitionTime": since("Ready", rs)},
    ])
}

/// Node status (capacity, conditions, addresses, nodeInfo).
pub fn node_status(f: &NodeFacts, now: &str, previous_conditions: Option<&Value>) -> Value {
    let resources =
        json!({"cpu": "4", "memory": "8Gi", "pods": "110", "ephemeral-storage": "50Gi"});
    json!({
        "capacity": resources,
        "allocatable": resources,
        "conditions": conditions(f, now, previous_conditions),
        "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": f.name}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
        "nodeInfo": {
            "machineID": format!("sim-{}", f.name),
            "systemUUID": format!("sim-{}", f.name),
            "bootID": f.boot_id,
            "kernelVersion": "6.1.0-osroll-sim",
            "osImage": f.os_image,
            "containerRuntimeVersion": "osroll-sim://1",
            "kubeletVersion": f.kubelet_version,
            "kubeProxyVersion": f.kubelet_version,
            "operatingSystem": "linux",
            "architecture": "amd64",
        },
    })
}

/// The node Lease in `kube-node-lease` (owned by the Node, like a real kubelet's).
pub fn lease(name: &str, node_uid: Option<&str>, renew_micros: &str, duration_secs: i32) -> Value {
    let mut l = json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": name, "namespace": "kube-node-lease"},
        "spec": {"holderIdentity": name, "leaseDurationSeconds": duration_secs, "renewTime": renew_micros},
    });
    if let Some(uid) = node_uid {
        l["metadata"]["ownerReferences"] =
            json!([{"apiVersion": "v1", "kind": "Node", "name": name, "uid": uid}]);
    }
    l
}

/// Whether a pod bound to this node needs (re)starting. `started_on` is the boot in
/// which this kubelet last started it (None: never, e.g. the kubelet itself restarted,
/// in which case a running pod is adopted as it is).
pub fn needs_start(pod: &Value, started_on: Option<&str>, boot_id: &str) -> bool {
    if pod.pointer("/metadata/deletionTimestamp").is_some() || started_on == Some(boot_id) {
        return false;
    }
    let phase = pod
        .pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if phase == "Succeeded" || phase == "Failed" {
        return false;
    }
    phase != "Running" || started_on.is_some()
}

fn pod_conditions(ready: bool, now: &str) -> Value {
    let r = if ready { "True" } else { "False" };
    json!([
        {"type": "PodReadyToStartContainers", "status": r, "lastTransitionTime": now},
        {"type": "Initialized", "status": "True", "lastTransitionTime": now},
        {"type": "Ready", "status": r, "lastTransitionTime": now},
        {"type": "ContainersReady", "status": r, "lastTransitionTime": now},
        {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
    ])
}

fn container_names(pod: &Value) -> Vec<(String, String)> {
    pod.pointer("/spec/containers")
        .and_then(Value::as_array)
        .map(|cs| {
            cs.iter()
                .map(|c| {
                    let s = |k: &str| {
                        c.get(k)
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_string()
                    };
                    (s("name"), s("image"))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn restart_count(pod: &Value, name: &str) -> i64 {
    pod.pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .and_then(|cs| cs.iter().find(|c| c["name"] == name))
        .and_then(|c| c["restartCount"].as_i64())
        .unwrap_or(0)
}

/// Status of a pod whose containers (re)start now. A pod that was running before
/// (it has container statuses) counts a restart per container.
pub fn running_status(pod: &Value, now: &str, pod_ip: &str) -> Value {
    let had_run = pod
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .is_some_and(|c| !c.is_empty());
    let statuses: Vec<Value> = container_names(pod)
        .into_iter()
        .map(|(name, image)| {
            let restarts = restart_count(pod, &name) + i64::from(had_run);
            let mut s = json!({
                "name": name, "image": image, "imageID": format!("sim://{image}"),
                "containerID": format!("sim://{}-{}", name, now.replace([':', '-', '.'], "")),
                "ready": true, "started": true, "restartCount": restarts,
                "state": {"running": {"startedAt": now}},
            });
            if had_run {
                s["lastState"] = json!({"terminated": {"exitCode": 255, "reason": "Unknown", "finishedAt": now}});
            }
            s
        })
        .collect();
    let start_time = pod
        .pointer("/status/startTime")
        .cloned()
        .unwrap_or_else(|| Value::String(now.into()));
    json!({
        "phase": "Running",
        "hostIP": "127.0.0.1",
        "hostIPs": [{"ip": "127.0.0.1"}],
        "podIP": pod_ip,
        "podIPs": [{"ip": pod_ip}],
        "startTime": start_time,
        "conditions": pod_conditions(true, now),
        "containerStatuses": statuses,
        "qosClass": "BestEffort",
    })
}

/// Status of a running pod while its node is down: not ready, containers stopped.
pub fn stopped_status(pod: &Value, now: &str) -> Value {
    let mut st = pod.get("status").cloned().unwrap_or_else(|| json!({}));
    st["conditions"] = pod_conditions(false, now);
    if let Some(cs) = st
        .get_mut("containerStatuses")
        .and_then(Value::as_array_mut)
    {
        for c in cs {
            c["ready"] = json!(false);
            c["started"] = json!(false);
            c["state"] = json!({"waiting": {"reason": "NodeRebooting"}});
        }
    }
    st
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(ready: bool) -> NodeFacts {
        NodeFacts {
            name: "n1".into(),
            labels: BTreeMap::from([("osroll.io/pool".to_string(), "a".to_string())]),
            boot_id: "b1".into(),
            os_image: "SimOS v1".into(),
            kubelet_version: "v1.33.0".into(),
            ready,
            not_ready_message: "rebooting".into(),
        }
    }

    #[test]
    fn node_object_and_ready_transitions() {
        let n = node_object(&facts(true), "t0");
        assert_eq!(n["metadata"]["labels"]["kubernetes.io/hostname"], "n1");
        assert_eq!(n["metadata"]["labels"]["osroll.io/pool"], "a");
        let c0 = &n["status"]["conditions"];
        assert_eq!(c0[3]["status"], "True");
        let c1 = node_status(&facts(true), "t1", Some(c0));
        assert_eq!(
            c1["conditions"][3]["lastTransitionTime"], "t0",
            "unchanged status keeps its transition time"
        );
        assert_eq!(c1["conditions"][3]["lastHeartbeatTime"], "t1");
        let c2 = node_status(&facts(false), "t2", Some(&c1["conditions"]));
        assert_eq!(c2["conditions"][3]["status"], "False");
        assert_eq!(c2["conditions"][3]["lastTransitionTime"], "t2");
        assert_eq!(c2["nodeInfo"]["bootID"], "b1");
    }

    #[test]
    fn pods_start_restart_and_stop() {
        let mut pod = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a", "image": "img"}]},
            "status": {"phase": "Pending"}});
        assert!(needs_start(&pod, None, "b1"));
        pod["status"] = running_status(&pod, "t1", "10.0.0.1");
        assert_eq!(pod["status"]["containerStatuses"][0]["restartCount"], 0);
        assert!(!needs_start(&pod, Some("b1"), "b1"));
        assert!(
            !needs_start(&pod, None, "b1"),
            "a running pod is adopted by a restarted kubelet"
        );
        let stale = json!({"spec": pod["spec"], "status": {"phase": "Pending"}});
        assert!(
            !needs_start(&stale, Some("b1"), "b1"),
            "a stale event for a pod started in this boot is ignored"
        );
        assert!(
            needs_start(&pod, Some("b1"), "b2"),
            "a new boot restarts the pod"
        );
        let stopped = stopped_status(&pod, "t2");
        assert_eq!(stopped["conditions"][2]["status"], "False");
        assert_eq!(stopped["containerStatuses"][0]["ready"], false);
        pod["status"] = stopped;
        let again = running_status(&pod, "t3", "10.0.0.1");
        assert_eq!(again["containerStatuses"][0]["restartCount"], 1);
        assert_eq!(
            again["containerStatuses"][0]["state"]["running"]["startedAt"],
            "t3"
        );
        assert_eq!(again["startTime"], "t1");
        pod["metadata"]["deletionTimestamp"] = json!("t4");
        assert!(!needs_start(&pod, Some("b1"), "b9"));
    }
}
