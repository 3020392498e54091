//! The Kubernetes side of the agent against an in-memory stand-in for the API server
//! (a `tower` service behind a real `kube::Client`): the agent lists with the node's
//! `spec.nodeName` field selector, its only object writes are JSON merge patches of
//! `/status` and of its own Node's labels, and it records its steps as Events on the
//! progress object.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::server::ImageServer;
use common::*;
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use kube::client::Body;
use osroll_agent::{AgentConfig, Slot};
use osroll_api::{OSUpgradeProgress, OSUpgradeProgressStatus, ProgressPhase};
use serde_json::{Value, json};

#[derive(Clone, Debug)]
struct Seen {
    method: Method,
    uri: String,
    content_type: String,
    body: Value,
}

#[derive(Default)]
struct Api {
    progress: Value,
    requests: Vec<Seen>,
}

const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/default/events";

/// The Events the agent created: `(reason, type, action, regarding name, note)`.
fn events(api: &Mutex<Api>) -> Vec<(String, String, String, String, String)> {
    let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
    api.lock()
        .unwrap()
        .requests
        .iter()
        .filter(|r| r.method == Method::POST && r.uri.starts_with(EVENTS))
        .map(|r| {
            let b = &r.body;
            (
                s(&b["reason"]),
                s(&b["type"]),
                s(&b["action"]),
                s(&b["regarding"]["name"]),
                s(&b["note"]),
            )
        })
        .collect()
}

/// RFC 7386 JSON merge patch.
fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

fn client(api: Arc<Mutex<Api>>) -> kube::Client {
    let svc = tower::service_fn(move |req: Request<Body>| {
        let api = api.clone();
        async move {
            let (parts, body) = req.into_parts();
            let bytes = body
                .collect()
                .await
                .map(|c| c.to_bytes())
                .unwrap_or_default();
            let seen = Seen {
                method: parts.method.clone(),
                uri: parts.uri.to_string(),
                content_type: parts
                    .headers
                    .get("content-type")
                    .map(|v| v.to_str().unwrap().to_string())
                    .unwrap_or_default(),
                body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            };
            api.lock().unwrap().requests.push(seen.clone());
            let path = parts.uri.path().to_string();
            let query = parts.uri.query().unwrap_or("").to_string();
            if query.contains("watch=true") {
                // No events: the agent must make progress from its list and resyncs.
                std::future::pending::<()>().await;
            }
            let reply = |v: Value| {
                Response::builder()
                    .status(StatusCode::OK)
                    .body(Body::from(serde_json::to_vec(&v).unwrap()))
                    .unwrap()
            };
            let out = match (parts.method, path.as_str()) {
                (Method::GET, "/apis/osroll.io/v1alpha1/osupgradeprogresses") => {
                    let item = api.lock().unwrap().progress.clone();
                    reply(json!({
                        "apiVersion": "osroll.io/v1alpha1", "kind": "OSUpgradeProgressList",
                        "metadata": {"resourceVersion": "1"}, "items": [item],
                    }))
                }
                (Method::PATCH, p)
                    if p.starts_with("/apis/osroll.io/v1alpha1/osupgradeprogresses/") =>
                {
                    let mut a = api.lock().unwrap();
                    merge(&mut a.progress, &seen.body);
                    reply(a.progress.clone())
                }
                (Method::POST, EVENTS) => reply(seen.body.clone()),
                (Method::PATCH, "/api/v1/nodes/node-1") => reply(
                    json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-1", "labels": seen.body["metadata"]["labels"]}}),
                ),
                _ => Response::builder()
                    .status(StatusCode::NOT_FOUND)
                    .body(Body::from(b"{}".to_vec()))
                    .unwrap(),
            };
            Ok::<_, std::convert::Infallible>(out)
        }
    });
    kube::Client::new(svc, "default")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_lists_by_node_name_and_writes_only_status_and_node_labels() {
    let img = osroll_agent::simhost::image_bytes("v2", 1 << 20);
    let z = zstd(&img);
    let srv = ImageServer::start(z.clone()).await;
    let mut p = OSUpgradeProgress::new(
        "osupgrade-abc",
        spec("v2", &srv.url(), &checksum(&z), Some(img.len() as u64)),
    );
    p.metadata.uid = Some("uid-1".into());
    let api = Arc::new(Mutex::new(Api {
        progress: serde_json::to_value(&p).unwrap(),
        requests: vec![],
    }));

    let node = Node::new(2 << 20, "v1");
    let mut cfg: AgentConfig = node.config();
    cfg.resync = Duration::from_millis(50);
    let host: Arc<dyn osroll_agent::Host> = Arc::new(node.host.clone());
    let agent = tokio::spawn(osroll_agent::run(cfg, client(api.clone()), host));
    let status: OSUpgradeProgressStatus =
        eventually(Duration::from_secs(20), "Staged in the API", || {
            let v = api.lock().unwrap().progress["status"].clone();
            serde_json::from_value::<OSUpgradeProgressStatus>(v)
                .ok()
                .filter(|s| s.phase == Some(ProgressPhase::Staged))
        })
        .await;
    // The step's Event is posted after the status write: wait for it before stopping.
    eventually(Duration::from_secs(20), "the Staged Event", || {
        events(&api).iter().any(|e| e.0 == "Staged").then_some(())
    })
    .await;
    agent.abort();
    assert_eq!(status.inactive_partition.as_deref(), Some("B"));
    assert_eq!(&node.slot_bytes(Slot::B)[..img.len()], &img[..]);

    let reqs = api.lock().unwrap().requests.clone();
    let list = reqs.iter().find(|r| r.method == Method::GET).unwrap();
    assert!(
        list.uri.contains("fieldSelector=spec.nodeName%3Dnode-1"),
        "{}",
        list.uri
    );
    for r in reqs
        .iter()
        .filter(|r| r.method != Method::GET && !r.uri.starts_with(EVENTS))
    {
        assert_eq!(r.method, Method::PATCH, "{r:?}");
        assert_eq!(r.content_type, "application/merge-patch+json", "{r:?}");
        let path = r.uri.split('?').next().unwrap();
        assert!(
            path == "/apis/osroll.io/v1alpha1/osupgradeprogresses/osupgrade-abc/status"
                || path == "/api/v1/nodes/node-1",
            "unexpected write {r:?}"
        );
    }
    let node_patch = reqs
        .iter()
        .find(|r| r.uri.starts_with("/api/v1/nodes/node-1"))
        .expect("node labelled");
    assert_eq!(
        node_patch.body,
        json!({"metadata": {"labels": {"osroll.io/managed": "true", "osroll.io/os-version": "v1", "osroll.io/reboot-needed": "false", "osroll.io/slot": "A"}}})
    );
    // Cleared fields are sent as null so the merge patch removes them.
    let first_status = reqs.iter().find(|r| r.uri.contains("/status")).unwrap();
    assert!(
        first_status.body["status"]
            .as_object()
            .unwrap()
            .get("failureReason")
            .is_some_and(Value::is_null)
    );
    // The spec was never written.
    assert_eq!(
        api.lock().unwrap().progress["spec"],
        serde_json::to_value(&p).unwrap()["spec"]
    );
    // One Event for the step, on the progress object.
    let evs = events(&api);
    let staged: Vec<_> = evs.iter().filter(|e| e.0 == "Staged").collect();
    assert_eq!(staged.len(), 1, "{evs:?}");
    assert_eq!(staged[0].1, "Normal");
    assert_eq!(staged[0].3, "osupgrade-abc");
}

/// A failed attempt is a Warning Event whose reason is the typed FailureReason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_is_an_event_with_its_failure_reason() {
    let img = osroll_agent::simhost::image_bytes("v2", 1 << 20);
    let z = zstd(&img);
    let srv = ImageServer::start(z.clone()).await;
    let wrong = checksum(b"other bytes");
    let mut p = OSUpgradeProgress::new(
        "osupgrade-bad",
        spec("v2", &srv.url(), &wrong, Some(img.len() as u64)),
    );
    p.metadata.uid = Some("uid-2".into());
    p.metadata.labels = Some([("osroll.io/node".to_string(), NODE.to_string())].into());
    let api = Arc::new(Mutex::new(Api {
        progress: serde_json::to_value(&p).unwrap(),
        requests: vec![],
    }));
    let node = Node::new(2 << 20, "v1");
    let mut cfg: AgentConfig = node.config();
    cfg.resync = Duration::from_millis(50);
    let host: Arc<dyn osroll_agent::Host> = Arc::new(node.host.clone());
    let agent = tokio::spawn(osroll_agent::run(cfg, client(api.clone()), host));
    let a = api.clone();
    let ev = eventually(Duration::from_secs(20), "a failure Event", move || {
        events(&a).into_iter().find(|e| e.1 == "Warning")
    })
    .await;
    agent.abort();
    let want = osroll_api::progress::FailureReason::ChecksumMismatch;
    assert_eq!(ev.0, want.as_str(), "{ev:?}");
    assert_eq!(ev.2, "Fail");
    assert_eq!(ev.3, "osupgrade-bad");
    assert!(ev.4.starts_with("v2 failed (ChecksumMismatch)"), "{}", ev.4);
    let status: OSUpgradeProgressStatus =
        serde_json::from_value(api.lock().unwrap().progress["status"].clone()).unwrap();
    assert_eq!(status.phase, Some(ProgressPhase::Failed));
    // Published once: the agent idles on a Failed progress.
    let warnings = events(&api).iter().filter(|e| e.1 == "Warning").count();
    assert_eq!(warnings, 1);
}
