//! RBAC: checking an audit log against shipped rules, and enforcement by the test API
//! server (403 like a real cluster) when asked for.

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use osroll_sim::rbac::Authorizer;
use osroll_sim::testing::run_kubectl;
use osroll_sim::{ServerConfig, TestServer};
use serde_json::json;

const USER: &str = "system:serviceaccount:osroll-system:reader";

const RBAC: &str = r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: cm-reader}
rules:
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: cm-reader}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: cm-reader}
subjects:
- {kind: ServiceAccount, name: reader, namespace: osroll-system}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enforced_rbac_forbids_and_the_audit_log_shows_it() {
    let s = TestServer::start_with(ServerConfig {
        enforce_rbac: true,
        ..Default::default()
    })
    .unwrap();
    let admin = s.client().await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(admin, "default");
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "1"}});
    cms.patch("c", &PatchParams::apply("test"), &Patch::Apply(&cm))
        .await
        .unwrap();

    let reader: Api<ConfigMap> = Api::namespaced(s.client_for(USER).await.unwrap(), "default");
    let err = reader.get("c").await.unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref e) if e.code == 403),
        "nothing bound yet: {err:?}"
    );

    let kc = s.kubeconfig();
    let mut apply = tokio::process::Command::new("kubectl");
    apply
        .env("KUBECONFIG", kc)
        .env("KUBECACHEDIR", s.dir().join("cache"));
    let out = run_kubectl(apply, &["apply", "-f", "-"], Some(RBAC))
        .await
        .unwrap();
    assert!(out.code == 0, "{out:?}");

    assert_eq!(reader.get("c").await.unwrap().data.unwrap()["a"], "1");
    let err = reader
        .delete("c", &DeleteParams::default())
        .await
        .unwrap_err();
    match err {
        kube::Error::Api(e) => {
            assert_eq!(e.code, 403);
            assert!(e.message.contains("cannot delete resource \"configmaps\" in API group \"\" in the namespace \"default\""), "{}", e.message);
        }
        other => panic!("{other:?}"),
    }
    let mut del = tokio::process::Command::new("kubectl");
    del.env("KUBECONFIG", s.kubeconfig_for(USER).unwrap())
        .env("KUBECACHEDIR", s.dir().join("cache2"));
    let out = run_kubectl(del, &["delete", "configmap", "c"], None)
        .await
        .unwrap();
    assert!(out.stderr.contains("Forbidden"), "{out:?}");

    let authz = Authorizer::from_yaml(RBAC).unwrap();
    let log = s.audit();
    let denied: Vec<(String, u16)> = authz
        .denied(&log, USER)
        .iter()
        .map(|e| (e.verb.clone(), e.code))
        .collect();
    assert!(denied.iter().all(|(_, code)| *code == 403), "{denied:?}");
    assert!(denied.iter().any(|(v, _)| v == "delete"), "{denied:?}");
    assert!(
        log.iter()
            .any(|e| e.user == USER && e.verb == "get" && e.code == 200)
    );
}
