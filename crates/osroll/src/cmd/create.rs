//! `osroll create controller|agent`: print deployment manifests for `kubectl apply -f -`.

use std::collections::BTreeMap;

use clap::{Args, Subcommand};
use osroll_api::manifests;

/// Which component's manifests to print.
#[derive(Subcommand)]
pub(crate) enum CreateCmd {
    /// Namespace, service account, RBAC and the controller Deployment.
    Controller {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        network: NetworkPolicyArgs,
    },
    /// Namespace, service account, RBAC and the agent DaemonSet.
    Agent {
        #[command(flatten)]
        target: Target,
        /// Leave out the ValidatingAdmissionPolicy that confines each agent to its own
        /// node, for clusters older than Kubernetes 1.30 (which cannot serve it).
        #[arg(long)]
        no_admission_policy: bool,
        #[command(flatten)]
        node: AgentNodeArgs,
    },
    /// The bootloader script for A/B slots: one-shot try, fallback to the default slot.
    Boot(BootArgs),
}

/// Which bootloader's script to print.
#[derive(Clone, Copy, clap::ValueEnum)]
pub(crate) enum Loader {
    /// `grub.cfg` for the boot partition.
    Grub,
    /// U-Boot script source (`boot.cmd`; `mkimage -T script -d boot.cmd boot.scr`).
    Uboot,
}

/// The boot layout the script expects (docs/boot-integration.md).
#[derive(Args)]
pub(crate) struct BootArgs {
    /// Bootloader.
    #[arg(value_enum)]
    loader: Loader,
    /// GPT partition labels of slot A and slot B.
    #[arg(
        long,
        value_name = "LABEL_A,LABEL_B",
        default_value = "osroll-a,osroll-b"
    )]
    slot_labels: osroll_agent::host::discover::SlotLabels,
    /// Partition number of slot A on the boot disk.
    #[arg(long, default_value_t = 3)]
    part_a: u32,
    /// Partition number of slot B on the boot disk.
    #[arg(long, default_value_t = 4)]
    part_b: u32,
    /// Kernel inside a slot's filesystem.
    #[arg(long, default_value = "/boot/vmlinuz")]
    kernel: String,
    /// Initramfs inside a slot's filesystem (loaded when present).
    #[arg(long, default_value = "/boot/initrd.img")]
    initrd: String,
}

impl BootArgs {
    fn script(&self) -> String {
        use osroll_agent::boot::scripts;
        let layout = scripts::BootLayout {
            label_a: self.slot_labels.a.clone(),
            label_b: self.slot_labels.b.clone(),
            part_a: self.part_a,
            part_b: self.part_b,
            kernel: self.kernel.clone(),
            initrd: self.initrd.clone(),
        };
        match self.loader {
            Loader::Grub => scripts::grub_cfg(&layout),
            Loader::Uboot => scripts::uboot_script(&layout),
        }
    }
}

/// Node-side settings of every agent (each becomes the agent flag's environment
/// variable); without them the agent's defaults apply (docs/boot-integration.md).
#[derive(Args)]
pub(crate) struct AgentNodeArgs {
    /// How nodes are updated.
    #[arg(long, value_parser = ["ab", "ostree", "plugin"])]
    backend: Option<String>,
    /// GPT partition labels of slot A and slot B (agent default: osroll-a,osroll-b).
    #[arg(long, value_name = "LABEL_A,LABEL_B")]
    slot_labels: Option<String>,
    /// Bootloader the agent drives (agent default: grub).
    #[arg(long, value_parser = ["grub", "uboot"])]
    boot_control: Option<String>,
    /// Host path of the GRUB environment block (agent default: /boot/grub/grubenv).
    #[arg(long, value_name = "HOST_PATH")]
    grubenv: Option<String>,
    /// Host path of fw_env.config for U-Boot (implies --boot-control uboot).
    #[arg(long, value_name = "HOST_PATH")]
    fw_env_config: Option<String>,
    /// How the agent reboots the node: a command line run in the pod, or `syscall`
    /// (agent default: `nsenter --target 1 --mount -- systemctl reboot`).
    #[arg(long, value_name = "COMMAND")]
    reboot_command: Option<String>,
    /// os-release key that holds the OS version (agent default: VERSION_ID).
    #[arg(long)]
    version_key: Option<String>,
}

impl AgentNodeArgs {
    fn options(&self) -> anyhow::Result<manifests::AgentNodeOptions> {
        for (flag, path) in [
            ("grubenv", &self.grubenv),
            ("fw-env-config", &self.fw_env_config),
        ] {
            if let Some(p) = path {
                anyhow::ensure!(
                    p.starts_with('/'),
                    "--{flag} {p}: expected an absolute host path"
                );
            }
        }
        if let Some(l) = &self.slot_labels {
            l.parse::<osroll_agent::host::discover::SlotLabels>()
                .map_err(|e| anyhow::anyhow!("--slot-labels: {e}"))?;
        }
        let boot_control = match (&self.boot_control, &self.fw_env_config) {
            (Some(b), Some(_)) if b != "uboot" => {
                anyhow::bail!("--fw-env-config is for --boot-control uboot")
            }
            (None, Some(_)) => Some("uboot".to_string()),
            (b, _) => b.clone(),
        };
        Ok(manifests::AgentNodeOptions {
            backend: self.backend.clone(),
            slot_labels: self.slot_labels.clone(),
            boot_control,
            grubenv: self.grubenv.clone(),
            fw_env_config: self.fw_env_config.clone(),
            reboot_command: self.reboot_command.clone(),
            version_key: self.version_key.clone(),
        })
    }
}

/// An optional NetworkPolicy in front of the controller's metrics port.
#[derive(Args)]
pub(crate) struct NetworkPolicyArgs {
    /// Add a NetworkPolicy that lets only the selected pods reach the controller's
    /// metrics port (8080) and nothing else reach the controller pods.
    #[arg(long)]
    network_policy: bool,
    /// Namespaces allowed to scrape, as matchLabels (`k=v,...`).
    #[arg(
        long,
        value_name = "KEY=VALUE,...",
        default_value = "kubernetes.io/metadata.name=monitoring"
    )]
    metrics_namespace_selector: String,
    /// Pods allowed to scrape, in those namespaces, as matchLabels (`k=v,...`);
    /// default: every pod there.
    #[arg(long, value_name = "KEY=VALUE,...", default_value = "")]
    metrics_pod_selector: String,
}

/// `k=v,k2=v2` as matchLabels; "" is empty.
fn match_labels(flag: &str, text: &str) -> anyhow::Result<BTreeMap<String, String>> {
    text.split(',')
        .filter(|kv| !kv.is_empty())
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => anyhow::bail!("--{flag}: expected KEY=VALUE, got {kv:?}"),
        })
        .collect()
}

impl NetworkPolicyArgs {
    /// The NetworkPolicy for `ns`, when asked for.
    fn policy(&self, ns: &str) -> anyhow::Result<Option<serde_json::Value>> {
        if !self.network_policy {
            return Ok(None);
        }
        let peers = manifests::MetricsPeers {
            namespace_labels: match_labels(
                "metrics-namespace-selector",
                &self.metrics_namespace_selector,
            )?,
            pod_labels: match_labels("metrics-pod-selector", &self.metrics_pod_selector)?,
        };
        anyhow::ensure!(
            !peers.namespace_labels.is_empty(),
            "--metrics-namespace-selector: an empty selector would allow every namespace"
        );
        Ok(Some(manifests::metrics_network_policy(ns, &peers)))
    }
}

/// Where and what to deploy.
#[derive(Args)]
pub(crate) struct Target {
    /// Container image. Default, agent: the public image tagged with this binary's
    /// version; controller: the image the node OS ships (localhost/osroll:v<version>),
    /// never pulled, so the controller runs only on nodes labelled osroll.io/managed=true.
    #[arg(long, env = "OSROLL_IMAGE")]
    image: Option<String>,
    /// Namespace to deploy into.
    #[arg(long, short = 'n', env = "OSROLL_NAMESPACE", default_value = manifests::DEFAULT_NAMESPACE)]
    namespace: String,
    /// ConfigMap (in that namespace) of minisign public keys trusted to sign catalogs:
    /// mounted read-only and passed to the component.
    #[arg(long, value_name = "NAME")]
    trusted_keys_configmap: Option<String>,
    /// Refuse catalogs and images without a valid signature by one of those keys.
    #[arg(long, requires = "trusted_keys_configmap")]
    require_signed_catalog: bool,
    /// ConfigMap of extra PEM CA certificates, for catalog URLs (controller) or image
    /// servers (agent): mounted read-only and passed to the component.
    #[arg(long, value_name = "NAME")]
    ca_configmap: Option<String>,
}

impl Target {
    fn trust(&self) -> manifests::TrustMounts {
        manifests::TrustMounts {
            keys_config_map: self.trusted_keys_configmap.clone(),
            require_signed: self.require_signed_catalog,
            ca_config_map: self.ca_configmap.clone(),
        }
    }
}

/// Print the manifests.
pub(crate) fn run(cmd: CreateCmd) -> anyhow::Result<()> {
    let image = |t: &Target| t.image.clone().unwrap_or_else(manifests::default_image);
    let objects = match &cmd {
        CreateCmd::Controller { target: t, network } => {
            let mut objects = manifests::controller(&image(t), &t.namespace);
            if t.image.is_none() {
                manifests::use_local_image(&mut objects);
            }
            manifests::add_trust(&mut objects, manifests::Component::Controller, &t.trust());
            objects.extend(network.policy(&t.namespace)?);
            objects
        }
        CreateCmd::Agent {
            target: t,
            no_admission_policy,
            node,
        } => {
            let mut objects = manifests::agent(&image(t), &t.namespace);
            manifests::add_agent_node_options(&mut objects, &node.options()?);
            manifests::add_trust(&mut objects, manifests::Component::Agent, &t.trust());
            if !*no_admission_policy {
                objects.extend(manifests::agent_admission_policy(&t.namespace));
            }
            objects
        }
        CreateCmd::Boot(b) => {
            print!("{}", b.script());
            return Ok(());
        }
    };
    print!("{}", manifests::to_yaml(&objects));
    Ok(())
}
