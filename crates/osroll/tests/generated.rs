//! The committed `deploy/` files are exactly what `osroll` generates, and what it
//! generates is valid for a real API server.

mod common;

use std::path::Path;
use std::process::Command;

use common::{docs, osroll};
use osroll_api::crd::structural_problems;
use serde_json::Value;

#[test]
fn deploy_directory_is_up_to_date() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy");
    for (file, args) in [
        ("crds.yaml", &["crds"][..]),
        ("controller.yaml", &["create", "controller"][..]),
        ("agent.yaml", &["create", "agent"][..]),
        ("boot/grub.cfg", &["create", "boot", "grub"][..]),
        ("boot/boot.cmd", &["create", "boot", "uboot"][..]),
    ] {
        let committed = std::fs::read_to_string(root.join(file)).unwrap_or_default();
        assert!(
            committed == osroll(args),
            "deploy/{file} is stale: regenerate with `cargo run -- {} > deploy/{file}`",
            args.join(" ")
        );
    }
}

#[test]
fn crds_output_is_structural() {
    let crds = docs(&osroll(&["crds"]));
    assert_eq!(crds.len(), 2);
    for crd in &crds {
        assert_eq!(crd["kind"], "CustomResourceDefinition");
        let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
        let problems = structural_problems(schema);
        assert!(
            problems.is_empty(),
            "{}: {problems:#?}",
            crd["metadata"]["name"]
        );
    }
}

#[test]
fn manifests_use_the_image_and_namespace_asked_for() {
    let default = docs(&osroll(&["create", "agent"]));
    let image = |objs: &[Value], kind: &str| {
        let o = objs.iter().find(|o| o["kind"] == kind).unwrap();
        o["spec"]["template"]["spec"]["containers"][0]["image"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(
        image(&default, "DaemonSet"),
        format!("ghcr.io/osroll/osroll:v{}", env!("CARGO_PKG_VERSION"))
    );
    let custom = docs(&osroll(&[
        "create",
        "controller",
        "--image",
        "reg.local/os:dev",
        "--namespace",
        "ops",
    ]));
    assert_eq!(image(&custom, "Deployment"), "reg.local/os:dev");
    for o in custom
        .iter()
        .filter(|o| o["metadata"]["namespace"].is_string())
    {
        assert_eq!(o["metadata"]["namespace"], "ops", "{}", o["kind"]);
    }
    let binding = custom
        .iter()
        .find(|o| o["kind"] == "ClusterRoleBinding")
        .unwrap();
    assert_eq!(binding["subjects"][0]["namespace"], "ops");
    let kinds: Vec<_> = custom.iter().map(|o| o["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "Namespace",
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "Role",
            "RoleBinding",
            "Deployment"
        ]
    );
}

#[test]
fn agent_daemonset_tolerates_cordoned_nodes() {
    let objs = docs(&osroll(&["create", "agent"]));
    let ds = objs.iter().find(|o| o["kind"] == "DaemonSet").unwrap();
    let tolerations = ds["spec"]["template"]["spec"]["tolerations"]
        .as_array()
        .unwrap();
    // An `Exists` toleration without a key matches every taint, including
    // node.kubernetes.io/unschedulable that a cordon adds.
    assert!(
        tolerations
            .iter()
            .any(|t| t["operator"] == "Exists" && t.get("key").is_none())
    );
    assert_eq!(
        ds["spec"]["template"]["spec"]["containers"][0]["env"][0]["valueFrom"]["fieldRef"]["fieldPath"],
        "spec.nodeName"
    );
}

#[test]
fn admission_policy_is_on_by_default_and_names_the_agent() {
    let plain = docs(&osroll(&["create", "agent", "--no-admission-policy"]));
    assert!(
        plain
            .iter()
            .all(|o| o["apiVersion"] != "admissionregistration.k8s.io/v1"),
        "clusters older than 1.30 apply the output without the policy"
    );
    let objs = docs(&osroll(&["create", "agent", "-n", "edge-ops"]));
    let policy = objs
        .iter()
        .find(|o| o["kind"] == "ValidatingAdmissionPolicy")
        .unwrap();
    let cond = policy["spec"]["matchConditions"][0]["expression"]
        .as_str()
        .unwrap();
    assert!(
        cond.contains("system:serviceaccount:edge-ops:osroll-agent"),
        "{cond}"
    );
    let binding = objs
        .iter()
        .find(|o| o["kind"] == "ValidatingAdmissionPolicyBinding")
        .unwrap();
    assert_eq!(binding["spec"]["policyName"], policy["metadata"]["name"]);
    let rules = serde_json::to_string(&policy["spec"]["validations"]).unwrap();
    for needle in [
        "nodes",
        "osupgradeprogresses",
        "pods",
        "authentication.kubernetes.io/node-name",
    ] {
        assert!(rules.contains(needle), "{needle} not confined");
    }
}

#[test]
fn agent_mounts_the_optional_executable_hooks_config_map() {
    let objs = docs(&osroll(&["create", "agent"]));
    let ds = objs.iter().find(|o| o["kind"] == "DaemonSet").unwrap();
    let pod = &ds["spec"]["template"]["spec"];
    let vol = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["configMap"]["name"] == osroll_api::manifests::HOOKS_CONFIG_MAP)
        .expect("a hooks volume");
    assert_eq!(vol["configMap"]["optional"], true);
    assert_eq!(vol["configMap"]["defaultMode"], 0o755);
    let mount = pod["containers"][0]["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == vol["name"])
        .expect("the hooks volume is mounted");
    assert_eq!(mount["mountPath"], osroll_api::manifests::HOOKS_DIR);
}

/// `--trusted-keys-configmap`, `--require-signed-catalog` and `--ca-configmap` mount the
/// ConfigMaps and set exactly the environment variables each component's flags read.
#[test]
fn trust_config_maps_are_mounted_and_passed_through_the_flags_environment() {
    use osroll_api::manifests::{CA_DIR, KEYS_DIR};
    let trust = [
        "--trusted-keys-configmap",
        "catalog-keys",
        "--require-signed-catalog",
        "--ca-configmap",
        "corp-ca",
    ];
    for (component, keys_env, ca_env) in [
        ("agent", "OSROLL_TRUSTED_KEYS", "OSROLL_CA_BUNDLE"),
        (
            "controller",
            "OSROLL_TRUSTED_KEYS_FILE",
            "OSROLL_CATALOG_CA_FILE",
        ),
    ] {
        let mut args = vec!["create", component];
        args.extend(trust);
        let objs = docs(&osroll(&args));
        let workload = objs
            .iter()
            .find(|o| o["kind"] == "DaemonSet" || o["kind"] == "Deployment")
            .unwrap();
        let pod = &workload["spec"]["template"]["spec"];
        let c = &pod["containers"][0];
        let env = |name: &str| {
            c["env"]
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["name"] == name)
                .map(|e| e["value"].clone())
        };
        assert_eq!(env(keys_env), Some(KEYS_DIR.into()), "{component}");
        assert_eq!(env(ca_env), Some(CA_DIR.into()), "{component}");
        assert_eq!(env("OSROLL_REQUIRE_SIGNED_CATALOG"), Some("true".into()));
        for (cm, dir) in [("catalog-keys", KEYS_DIR), ("corp-ca", CA_DIR)] {
            let vol = pod["volumes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|v| v["configMap"]["name"] == cm);
            let vol = vol.unwrap_or_else(|| panic!("{component}: no volume for {cm}"));
            let mount = c["volumeMounts"]
                .as_array()
                .unwrap()
                .iter()
                .find(|m| m["name"] == vol["name"]);
            let mount = mount.unwrap_or_else(|| panic!("{component}: {cm} not mounted"));
            assert_eq!(
                (&mount["mountPath"], &mount["readOnly"]),
                (&dir.into(), &true.into())
            );
        }
        // The variables are the ones the component's own flags read.
        let help = osroll(&[component, "--help"]);
        for var in [keys_env, ca_env, "OSROLL_REQUIRE_SIGNED_CATALOG"] {
            assert!(
                help.contains(&format!("[env: {var}=")),
                "{component} --help lacks {var}"
            );
        }
    }
    // Without the flags nothing changes (deploy/ is checked against that output), and a
    // signature requirement without keys is refused.
    let plain = osroll(&["create", "agent"]);
    assert!(!plain.contains("OSROLL_TRUSTED_KEYS") && !plain.contains(KEYS_DIR));
    let out = Command::new(env!("CARGO_BIN_EXE_osroll"))
        .args(["create", "agent", "--require-signed-catalog"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--trusted-keys-configmap"));
}

fn workload(objs: &[Value]) -> &Value {
    objs.iter()
        .find(|o| o["kind"] == "DaemonSet" || o["kind"] == "Deployment")
        .unwrap()
}

/// The agent runs as root (the image's user is 65532), and its ClusterRole covers every
/// mode, `--firstboot`'s list of OSUpgrades included.
#[test]
fn agent_runs_as_root_with_rbac_for_every_mode() {
    let objs = docs(&osroll(&["create", "agent"]));
    let c = &workload(&objs)["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["securityContext"]["runAsUser"], 0);
    assert_eq!(c["securityContext"]["privileged"], true);
    let role = objs.iter().find(|o| o["kind"] == "ClusterRole").unwrap();
    let rules = serde_json::to_string(&role["rules"]).unwrap();
    assert!(
        rules.contains(r#""resources":["osupgrades"],"verbs":["get","list"]"#),
        "{rules}"
    );
}

/// Every node flag of `create agent` becomes the variable the agent's own flag reads.
#[test]
fn agent_node_flags_set_the_agent_flags_environment() {
    let objs = docs(&osroll(&[
        "create",
        "agent",
        "--backend",
        "ab",
        "--slot-labels",
        "root-a,root-b",
        "--grubenv",
        "/boot/grub/grubenv",
        "--reboot-command",
        "syscall",
        "--version-key",
        "IMAGE_VERSION",
    ]));
    let c = &workload(&objs)["spec"]["template"]["spec"]["containers"][0];
    let env: Vec<(String, String)> = c["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| Some((e["name"].as_str()?.into(), e["value"].as_str()?.into())))
        .collect();
    let want = [
        ("OSROLL_BACKEND", "ab"),
        ("OSROLL_SLOT_LABELS", "root-a,root-b"),
        ("OSROLL_REBOOT_COMMAND", "syscall"),
        ("OSROLL_VERSION_KEY", "IMAGE_VERSION"),
        ("OSROLL_GRUBENV", "/host/boot/grub/grubenv"),
    ];
    for (k, v) in want {
        assert!(
            env.contains(&(k.into(), v.into())),
            "{k}={v} not in {env:?}"
        );
    }
    let help = osroll(&["agent", "--help"]);
    for (var, _) in want {
        assert!(
            help.contains(&format!("[env: {var}=")),
            "agent --help lacks {var}"
        );
    }
    let uboot = docs(&osroll(&[
        "create",
        "agent",
        "--fw-env-config",
        "/etc/fw_env.config",
    ]));
    let text = serde_json::to_string(workload(&uboot)).unwrap();
    assert!(
        text.contains(r#"{"name":"OSROLL_BOOT_CONTROL","value":"uboot"}"#),
        "{text}"
    );
    assert!(text.contains(r#""hostPath":{"path":"/etc/fw_env.config","type":"File"}"#));
    for bad in [
        &["--slot-labels", "same,same"][..],
        &["--grubenv", "rel/grubenv"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_osroll"))
            .args(["create", "agent"])
            .args(bad)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{bad:?} accepted");
    }
}

/// Without `--image` the controller uses the image the node OS ships: never pulled,
/// scheduled only on managed nodes. With `--image`, neither.
#[test]
fn controller_without_image_uses_the_local_image_on_managed_nodes() {
    let objs = docs(&osroll(&["create", "controller"]));
    let pod = &workload(&objs)["spec"]["template"]["spec"];
    assert_eq!(
        pod["containers"][0]["image"],
        format!("localhost/osroll:v{}", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(pod["containers"][0]["imagePullPolicy"], "Never");
    assert_eq!(pod["nodeSelector"]["osroll.io/managed"], "true");
    let objs = docs(&osroll(&["create", "controller", "--image", "r/o:1"]));
    let pod = &workload(&objs)["spec"]["template"]["spec"];
    assert!(pod["nodeSelector"].is_null() && pod["containers"][0]["imagePullPolicy"].is_null());
}

#[test]
fn network_policy_lets_only_the_selected_scrapers_reach_the_metrics_port() {
    let plain = docs(&osroll(&["create", "controller"]));
    assert!(
        plain.iter().all(|o| o["kind"] != "NetworkPolicy"),
        "the policy is optional"
    );
    let find = |objs: &[Value], kind: &str| objs.iter().find(|o| o["kind"] == kind).cloned();
    let default = docs(&osroll(&["create", "controller", "--network-policy"]));
    let np = find(&default, "NetworkPolicy").expect("a NetworkPolicy");
    let peer = &np["spec"]["ingress"][0]["from"][0];
    assert_eq!(
        peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"], "monitoring",
        "the documented default"
    );

    let objs = docs(&osroll(&[
        "create",
        "controller",
        "-n",
        "ops",
        "--network-policy",
        "--metrics-namespace-selector",
        "team=obs",
        "--metrics-pod-selector",
        "app=prometheus,shard=0",
    ]));
    let np = find(&objs, "NetworkPolicy").unwrap();
    let deploy = find(&objs, "Deployment").unwrap();
    assert_eq!(np["metadata"]["namespace"], "ops");
    // It selects the controller's pods, and only them.
    assert_eq!(
        np["spec"]["podSelector"]["matchLabels"],
        deploy["spec"]["template"]["metadata"]["labels"]
    );
    assert_eq!(np["spec"]["policyTypes"], serde_json::json!(["Ingress"]));
    let rules = np["spec"]["ingress"].as_array().unwrap();
    assert_eq!(rules.len(), 1, "one rule: nothing else reaches the pods");
    // The port the controller serves metrics on.
    assert_eq!(
        rules[0]["ports"][0]["port"],
        deploy["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"]
    );
    // Both selectors in ONE peer: those pods in those namespaces (two peers would let
    // any pod of the namespace, or such pods of any namespace, in).
    let from = rules[0]["from"].as_array().unwrap();
    assert_eq!(from.len(), 1);
    assert_eq!(
        from[0]["namespaceSelector"]["matchLabels"],
        serde_json::json!({"team": "obs"})
    );
    assert_eq!(
        from[0]["podSelector"]["matchLabels"],
        serde_json::json!({"app": "prometheus", "shard": "0"})
    );

    // An empty namespace selector would open it to every namespace.
    let out = Command::new(env!("CARGO_BIN_EXE_osroll"))
        .args([
            "create",
            "controller",
            "--network-policy",
            "--metrics-namespace-selector",
            "",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("every namespace"), "{err}");
}
