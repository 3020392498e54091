//! What one [`super::Cluster`] owns on a shared cluster: a unique instance id, from
//! which come its namespace, the prefix of every name it makes (Nodes, OSUpgrades,
//! pods) and the label that marks its Nodes and OSUpgrades, so two tests on one cluster
//! never meet, and cleanup and leftover checks can find exactly the test's own objects.

use rand::Rng;
use serde_json::{Value, json};

/// Label on a test's Nodes and OSUpgrades; its value is the instance id. The test's
/// controller selects OSUpgrades by it, and the test's OSUpgrades select Nodes by it.
pub const INSTANCE_LABEL: &str = "test.osroll.io/instance";

/// The names and labels of one harness instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    id: String,
}

impl Scope {
    /// A fresh random scope (six lower-case letters and digits).
    pub fn random() -> Self {
        const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
        let mut rng = rand::rng();
        let id = (0..6)
            .map(|_| CHARS[rng.random_range(0..CHARS.len())] as char)
            .collect();
        Scope { id }
    }

    /// The instance id (the value of [`INSTANCE_LABEL`]).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The prefix of every name this instance makes: `t<id>-`.
    pub fn prefix(&self) -> String {
        format!("t{}-", self.id)
    }

    /// `base` made unique to this instance: `t<id>-<base>`.
    pub fn name(&self, base: &str) -> String {
        format!("{}{base}", self.prefix())
    }

    /// Whether `name` was made by this instance.
    pub fn owns(&self, name: &str) -> bool {
        name.starts_with(&self.prefix())
    }

    /// The instance's namespace: the controller, the agents' service accounts and the
    /// test's workloads live here.
    pub fn namespace(&self) -> String {
        format!("osroll-t{}", self.id)
    }

    /// The label selector of this instance's objects.
    pub fn selector(&self) -> String {
        format!("{INSTANCE_LABEL}={}", self.id)
    }

    /// Give an OSUpgrade (JSON) this instance's label and confine its node selector to
    /// this instance's Nodes (the selector's other terms are kept).
    pub fn scope_upgrade(&self, upgrade: &mut Value) {
        upgrade["metadata"]["labels"][INSTANCE_LABEL] = json!(self.id);
        let spec = &mut upgrade["spec"];
        if !spec["nodeSelector"].is_object() {
            spec["nodeSelector"] = json!({});
        }
        spec["nodeSelector"]["matchLabels"][INSTANCE_LABEL] = json!(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_differ_and_own_only_their_names() {
        let (a, b) = (Scope::random(), Scope::random());
        assert_ne!(a, b);
        assert!(a.owns(&a.name("node-1")));
        assert!(!b.owns(&a.name("node-1")));
        assert!(!a.owns("node-1"));
        assert_ne!(a.namespace(), b.namespace());
    }

    #[test]
    fn an_upgrade_selects_only_the_instance_nodes() {
        let s = Scope::random();
        let mut up = json!({"metadata": {"name": "x"},
            "spec": {"nodeSelector": {"matchLabels": {"role": "web"}}}});
        s.scope_upgrade(&mut up);
        assert_eq!(up["metadata"]["labels"][INSTANCE_LABEL], s.id());
        assert_eq!(up["spec"]["nodeSelector"]["matchLabels"]["role"], "web");
        assert_eq!(
            up["spec"]["nodeSelector"]["matchLabels"][INSTANCE_LABEL],
            s.id()
        );
        let mut bare = json!({"metadata": {"name": "y"}, "spec": {}});
        s.scope_upgrade(&mut bare);
        assert_eq!(
            bare["spec"]["nodeSelector"]["matchLabels"][INSTANCE_LABEL],
            s.id()
        );
    }
}
