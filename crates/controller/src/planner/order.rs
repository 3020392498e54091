//! The order in which nodes get their turn.
//!
//! Nodes that failed least often go first (they are the most likely to succeed and prove
//! the image), control-plane nodes go after all workers, and the node the controller
//! itself runs on goes last of all, so the controller is restarted at most once and only
//! when nothing else is left. Ties are broken by name for a stable, reproducible order.

use super::NodeObs;

/// `nodes` sorted into rollout order.
pub fn order<'a>(nodes: &'a [NodeObs], own_node: Option<&str>) -> Vec<&'a NodeObs> {
    let mut v: Vec<&NodeObs> = nodes.iter().collect();
    v.sort_by(|a, b| {
        let key = |n: &NodeObs| {
            (
                Some(n.name.as_str()) == own_node,
                n.control_plane,
                n.past_failures,
            )
        };
        key(a).cmp(&key(b)).then_with(|| a.name.cmp(&b.name))
    });
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, cp: bool, failures: u32) -> NodeObs {
        NodeObs {
            name: name.into(),
            control_plane: cp,
            past_failures: failures,
            ..Default::default()
        }
    }

    #[test]
    fn fewer_failures_first_control_plane_later_own_node_last() {
        let nodes = vec![
            node("cp-1", true, 0),
            node("w-3", false, 2),
            node("own", false, 0),
            node("w-2", false, 0),
            node("cp-0", true, 1),
            node("w-1", false, 1),
        ];
        let names: Vec<&str> = order(&nodes, Some("own"))
            .iter()
            .map(|n| n.name.as_str())
            .collect();
        assert_eq!(names, ["w-2", "w-1", "w-3", "cp-1", "cp-0", "own"]);
    }

    #[test]
    fn own_control_plane_node_is_still_last() {
        let nodes = vec![
            node("cp-own", true, 0),
            node("cp-b", true, 5),
            node("w", false, 9),
        ];
        let names: Vec<&str> = order(&nodes, Some("cp-own"))
            .iter()
            .map(|n| n.name.as_str())
            .collect();
        assert_eq!(names, ["w", "cp-b", "cp-own"]);
    }
}
