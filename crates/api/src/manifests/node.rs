//! Per-fleet node settings for the agent DaemonSet (backend, slot labels, boot control,
//! reboot, version key) and the controller's local-image mode, layered onto the base
//! manifests so that `osroll create` without these flags prints exactly the base.
//!
//! Each agent setting becomes the environment variable its `osroll agent` flag reads;
//! host files outside the mounted `/boot` get their own read-only hostPath mount, at
//! `/host<path>` inside the pod.

use serde_json::{Value, json};

use crate::labels::MANAGED;

/// Image repository of the controller's local-image mode: the image the node OS ships
/// preloaded (never pulled); the tag is the binary's version.
pub const LOCAL_IMAGE_REPOSITORY: &str = "localhost/osroll";

/// The local image matching this build: `<LOCAL_IMAGE_REPOSITORY>:v<crate version>`.
pub fn local_image() -> String {
    format!("{LOCAL_IMAGE_REPOSITORY}:v{}", env!("CARGO_PKG_VERSION"))
}

/// Node-side choices for every agent of a fleet; `None` keeps the agent's own default.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AgentNodeOptions {
    /// `ab`, `ostree` or `plugin` (`OSROLL_BACKEND`).
    pub backend: Option<String>,
    /// `LABEL_A,LABEL_B` of the GPT partitions (`OSROLL_SLOT_LABELS`).
    pub slot_labels: Option<String>,
    /// `grub` or `uboot` (`OSROLL_BOOT_CONTROL`).
    pub boot_control: Option<String>,
    /// Host path of the GRUB environment block (`OSROLL_GRUBENV`).
    pub grubenv: Option<String>,
    /// Host path of fw_env.config for U-Boot (`OSROLL_FW_ENV_CONFIG`).
    pub fw_env_config: Option<String>,
    /// Reboot command line, or `syscall` (`OSROLL_REBOOT_COMMAND`).
    pub reboot_command: Option<String>,
    /// os-release key holding the version (`OSROLL_VERSION_KEY`).
    pub version_key: Option<String>,
}

/// Where a host path appears in the agent's pod: `/boot/..` under the mounted
/// `/host/boot`, anything else at `/host<path>` through its own mount.
fn in_pod(host_path: &str) -> (String, bool) {
    let needs_mount = !(host_path == "/boot" || host_path.starts_with("/boot/"));
    (format!("/host{host_path}"), needs_mount)
}

/// Set `opts` on the agent DaemonSet among `objects`.
pub fn add_agent_node_options(objects: &mut [Value], opts: &AgentNodeOptions) {
    let Some(pod) = objects
        .iter_mut()
        .find(|o| o["kind"] == "DaemonSet")
        .map(|o| &mut o["spec"]["template"]["spec"])
    else {
        return;
    };
    let mut env = Vec::new();
    let mut host_files = Vec::new();
    let mut set = |var: &str, value: &Option<String>| {
        if let Some(v) = value {
            env.push(json!({ "name": var, "value": v }));
        }
    };
    set("OSROLL_BACKEND", &opts.backend);
    set("OSROLL_SLOT_LABELS", &opts.slot_labels);
    set("OSROLL_BOOT_CONTROL", &opts.boot_control);
    set("OSROLL_REBOOT_COMMAND", &opts.reboot_command);
    set("OSROLL_VERSION_KEY", &opts.version_key);
    for (var, path, kind) in [
        ("OSROLL_GRUBENV", &opts.grubenv, "File"),
        ("OSROLL_FW_ENV_CONFIG", &opts.fw_env_config, "File"),
    ] {
        if let Some(p) = path {
            let (inside, needs_mount) = in_pod(p);
            env.push(json!({ "name": var, "value": inside }));
            if needs_mount {
                host_files.push((p.clone(), inside, kind));
            }
        }
    }
    let container = &mut pod["containers"][0];
    extend(container, "env", env);
    let (mounts, volumes): (Vec<_>, Vec<_>) = host_files
        .iter()
        .enumerate()
        .map(|(i, (host, inside, kind))| {
            let name = format!("host-file-{i}");
            (
                // The GRUB block is rewritten by the agent: not read-only.
                json!({ "name": name, "mountPath": inside }),
                json!({ "name": name, "hostPath": { "path": host, "type": kind } }),
            )
        })
        .unzip();
    extend(container, "volumeMounts", mounts);
    extend(pod, "volumes", volumes);
}

/// Switch the controller Deployment among `objects` to the image already on managed
/// nodes: never pulled, and scheduled only where the agent has labelled the node managed.
pub fn use_local_image(objects: &mut [Value]) {
    let Some(pod) = objects
        .iter_mut()
        .find(|o| o["kind"] == "Deployment")
        .map(|o| &mut o["spec"]["template"]["spec"])
    else {
        return;
    };
    pod["containers"][0]["image"] = json!(local_image());
    pod["containers"][0]["imagePullPolicy"] = json!("Never");
    pod["nodeSelector"] = json!({ MANAGED: "true" });
}

fn extend(parent: &mut Value, key: &str, items: Vec<Value>) {
    if items.is_empty() {
        return;
    }
    if !parent[key].is_array() {
        parent[key] = json!([]);
    }
    parent[key]
        .as_array_mut()
        .expect("just made an array")
        .extend(items);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn daemonset() -> Vec<Value> {
        super::super::agent("img", "ns")
    }

    #[test]
    fn no_options_change_nothing() {
        let mut objs = daemonset();
        add_agent_node_options(&mut objs, &AgentNodeOptions::default());
        assert_eq!(objs, daemonset());
    }

    #[test]
    fn host_files_outside_boot_get_their_own_mount() {
        let mut objs = daemonset();
        add_agent_node_options(
            &mut objs,
            &AgentNodeOptions {
                grubenv: Some("/boot/efi/grubenv".into()),
                fw_env_config: Some("/etc/fw_env.config".into()),
                boot_control: Some("uboot".into()),
                ..Default::default()
            },
        );
        let ds = objs.iter().find(|o| o["kind"] == "DaemonSet").unwrap();
        let pod = &ds["spec"]["template"]["spec"];
        let env = serde_json::to_string(&pod["containers"][0]["env"]).unwrap();
        assert!(
            env.contains(r#""OSROLL_GRUBENV","value":"/host/boot/efi/grubenv""#),
            "{env}"
        );
        assert!(env.contains(r#""OSROLL_FW_ENV_CONFIG","value":"/host/etc/fw_env.config""#));
        let vols = serde_json::to_string(&pod["volumes"]).unwrap();
        assert!(
            vols.contains("/etc/fw_env.config") && !vols.contains("efi"),
            "{vols}"
        );
    }

    #[test]
    fn local_image_mode_never_pulls_and_stays_on_managed_nodes() {
        let mut objs = super::super::controller("x", "ns");
        use_local_image(&mut objs);
        let pod = &objs[6]["spec"]["template"]["spec"];
        assert_eq!(pod["containers"][0]["imagePullPolicy"], "Never");
        assert_eq!(pod["nodeSelector"][MANAGED], "true");
        assert!(
            pod["containers"][0]["image"]
                .as_str()
                .unwrap()
                .starts_with("localhost/")
        );
    }
}
