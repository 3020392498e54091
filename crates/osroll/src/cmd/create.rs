//! `osroll create controller|agent`: print deployment manifests for `kubectl apply -f -`.

use clap::{Args, Subcommand};
use osroll_api::manifests;

/// Which component's manifests to print.
#[derive(Subcommand)]
pub(crate) enum CreateCmd {
    /// Namespace, service account, RBAC and the controller Deployment.
    Controller(Target),
    /// Namespace, service account, RBAC and the agent DaemonSet.
    Agent {
        #[command(flatten)]
        target: Target,
        /// Also confine each agent to its own node with a ValidatingAdmissionPolicy
        /// (needs Kubernetes 1.30 or later).
        #[arg(long)]
        admission_policy: bool,
    },
}

/// Where and what to deploy.
#[derive(Args)]
pub(crate) struct Target {
    /// Container image; default is the image tagged with this binary's version.
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
        CreateCmd::Controller(t) => {
            let mut objects = manifests::controller(&image(t), &t.namespace);
            manifests::add_trust(&mut objects, manifests::Component::Controller, &t.trust());
            objects
        }
        CreateCmd::Agent {
            target: t,
            admission_policy,
        } => {
            let mut objects = manifests::agent(&image(t), &t.namespace);
            manifests::add_trust(&mut objects, manifests::Component::Agent, &t.trust());
            if *admission_policy {
                objects.extend(manifests::agent_admission_policy(&t.namespace));
            }
            objects
        }
    };
    print!("{}", manifests::to_yaml(&objects));
    Ok(())
}
