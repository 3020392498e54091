//! What `osroll status` and the demo show about a rollout: a pure model built from an
//! OSUpgrade and its OSUpgradeProgress objects, and a plain-text rendering with a
//! progress bar per node. [`live`] keeps it current from watches, with indicatif bars on
//! a terminal and one line per change otherwise. Works against any cluster.

pub(crate) mod live;

use osroll_api::{OSUpgrade, OSUpgradeProgress, ProgressPhase, UpgradePhase};

/// One node's line.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct NodeView {
    /// Node name.
    pub(crate) node: String,
    /// Progress object name.
    pub(crate) progress: String,
    /// Phase (Pending when the agent has not written one yet).
    pub(crate) phase: ProgressPhase,
    /// Image bytes processed.
    pub(crate) bytes_done: u64,
    /// Image bytes in all (0 when unknown).
    pub(crate) bytes_total: u64,
    /// Version the node runs.
    pub(crate) current: Option<String>,
    /// Version being installed.
    pub(crate) target: Option<String>,
    /// Slot the new image goes to.
    pub(crate) slot: Option<String>,
    /// Failure reason or message, if any.
    pub(crate) note: Option<String>,
}

impl NodeView {
    /// From one progress object.
    pub(crate) fn from_progress(p: &OSUpgradeProgress) -> NodeView {
        let st = p.status.clone().unwrap_or_default();
        let target = st
            .target_version
            .clone()
            .or_else(|| p.spec.image.as_ref().map(|i| i.version.clone()));
        let total = st
            .bytes_total
            .or_else(|| p.spec.image.as_ref().and_then(|i| i.size))
            .unwrap_or(0);
        let note = st
            .failure_reason
            .clone()
            .or_else(|| st.message.clone())
            .filter(|m| !m.is_empty());
        NodeView {
            node: p.spec.node_name.clone(),
            progress: p.metadata.name.clone().unwrap_or_default(),
            phase: st.phase.unwrap_or(ProgressPhase::Pending),
            bytes_done: st.bytes_done.unwrap_or(0),
            bytes_total: total,
            current: st.current_version,
            target,
            slot: st.inactive_partition,
            note,
        }
    }

    /// Fraction of the image done, 0..=1 (1 once past staging).
    pub(crate) fn fraction(&self) -> f64 {
        match self.phase {
            ProgressPhase::Staged
            | ProgressPhase::Applying
            | ProgressPhase::Rebooting
            | ProgressPhase::Completed => 1.0,
            _ if self.bytes_total == 0 => 0.0,
            _ => (self.bytes_done as f64 / self.bytes_total as f64).clamp(0.0, 1.0),
        }
    }
}

/// Node counts by stage.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Totals {
    /// Nodes in the rollout.
    pub(crate) total: usize,
    /// Not started.
    pub(crate) pending: usize,
    /// Downloading, writing or verifying.
    pub(crate) staging: usize,
    /// Staged, waiting for their turn.
    pub(crate) staged: usize,
    /// Applying or rebooting.
    pub(crate) updating: usize,
    /// Done.
    pub(crate) completed: usize,
    /// Failed.
    pub(crate) failed: usize,
    /// Fell back to the old slot.
    pub(crate) rolled_back: usize,
}

impl Totals {
    /// Count `nodes`.
    pub(crate) fn of(nodes: &[NodeView]) -> Totals {
        let mut t = Totals {
            total: nodes.len(),
            ..Default::default()
        };
        for n in nodes {
            match n.phase {
                ProgressPhase::Pending => t.pending += 1,
                ProgressPhase::Downloading | ProgressPhase::Writing | ProgressPhase::Verifying => {
                    t.staging += 1
                }
                ProgressPhase::Staged => t.staged += 1,
                ProgressPhase::Applying | ProgressPhase::Rebooting => t.updating += 1,
                ProgressPhase::Completed => t.completed += 1,
                ProgressPhase::Failed => t.failed += 1,
                ProgressPhase::RolledBack => t.rolled_back += 1,
            }
        }
        t
    }

    /// `3/5 completed, 1 updating, 1 staged`: the non-zero counts.
    pub(crate) fn summary(&self) -> String {
        let mut parts = vec![format!("{}/{} completed", self.completed, self.total)];
        for (n, what) in [
            (self.updating, "updating"),
            (self.staged, "staged"),
            (self.staging, "staging"),
            (self.pending, "pending"),
            (self.failed, "failed"),
            (self.rolled_back, "rolled back"),
        ] {
            if n > 0 {
                parts.push(format!("{n} {what}"));
            }
        }
        parts.join(", ")
    }
}

/// One OSUpgrade and its nodes.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RolloutView {
    /// OSUpgrade name.
    pub(crate) name: String,
    /// `spec.version`.
    pub(crate) desired: String,
    /// `status.resolvedVersion`.
    pub(crate) resolved: Option<String>,
    /// `status.phase` (Pending before the controller saw it).
    pub(crate) phase: UpgradePhase,
    /// `status.message`.
    pub(crate) message: Option<String>,
    /// Nodes, by name.
    pub(crate) nodes: Vec<NodeView>,
}

impl RolloutView {
    /// Build from an OSUpgrade and any progress objects (those of other upgrades are
    /// ignored).
    pub(crate) fn build(upgrade: &OSUpgrade, progresses: &[OSUpgradeProgress]) -> RolloutView {
        let name = upgrade.metadata.name.clone().unwrap_or_default();
        let mut nodes: Vec<NodeView> = progresses
            .iter()
            .filter(|p| belongs_to(p, &name))
            .map(NodeView::from_progress)
            .collect();
        nodes.sort_by(|a, b| a.node.cmp(&b.node));
        let st = upgrade.status.clone().unwrap_or_default();
        RolloutView {
            name,
            desired: match upgrade.spec.external {
                Some(_) => "external".to_string(),
                None => upgrade.spec.version.clone(),
            },
            resolved: st.resolved_version,
            phase: st.phase.unwrap_or(UpgradePhase::Pending),
            message: st.message.filter(|m| !m.is_empty()),
            nodes,
        }
    }

    /// Node counts.
    pub(crate) fn totals(&self) -> Totals {
        Totals::of(&self.nodes)
    }

    /// Whether nothing more will happen without a user.
    pub(crate) fn is_finished(&self) -> bool {
        matches!(
            self.phase,
            UpgradePhase::Completed | UpgradePhase::Failed | UpgradePhase::Rejected
        )
    }

    /// The header line: `fleet: stable -> v2  Progressing  (2/5 completed, 1 updating)`.
    pub(crate) fn header(&self) -> String {
        let resolved = self
            .resolved
            .as_deref()
            .map(|r| format!(" -> {r}"))
            .unwrap_or_default();
        format!(
            "{}: {}{resolved}  {}  ({})",
            self.name,
            self.desired,
            self.phase.as_str(),
            self.totals().summary()
        )
    }
}

/// Whether progress `p` belongs to OSUpgrade `name` (by `spec.sourceRef` or the source label).
pub(crate) fn belongs_to(p: &OSUpgradeProgress, name: &str) -> bool {
    p.spec.source_ref.as_ref().is_some_and(|s| s.name == name)
        || p.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(osroll_api::labels::SOURCE))
            .is_some_and(|s| s == name)
}

fn bar(fraction: f64, width: usize) -> String {
    let filled = (fraction * width as f64).round() as usize;
    format!(
        "[{}{}]",
        "#".repeat(filled.min(width)),
        "-".repeat(width - filled.min(width))
    )
}

/// The node line used by the text rendering and the line log.
pub(crate) fn node_line(n: &NodeView, bar_width: usize) -> String {
    let versions = match (&n.current, &n.target) {
        (Some(c), Some(t)) if c != t => format!("{c} -> {t}"),
        (Some(c), _) => c.clone(),
        (None, Some(t)) => format!("-> {t}"),
        (None, None) => String::new(),
    };
    let bytes = if n.bytes_total > 0 {
        format!(
            "{:>10}/{:<10}",
            osroll_api::progress::human_bytes(n.bytes_done.min(n.bytes_total)),
            osroll_api::progress::human_bytes(n.bytes_total)
        )
    } else {
        format!("{:21}", "")
    };
    let mut line = format!(
        "{:<14} {:<11} {} {:>3}% {bytes} {versions}",
        n.node,
        n.phase.as_str(),
        bar(n.fraction(), bar_width),
        (n.fraction() * 100.0).round() as u32,
    );
    if let Some(note) = &n.note
        && matches!(n.phase, ProgressPhase::Failed | ProgressPhase::RolledBack)
    {
        line.push_str(&format!("  ({note})"));
    }
    line.trim_end().to_string()
}

/// Plain-text rendering of one rollout.
pub(crate) fn render(v: &RolloutView) -> String {
    let mut out = format!("{}\n", v.header());
    if let Some(m) = &v.message {
        out.push_str(&format!("  {m}\n"));
    }
    for n in &v.nodes {
        out.push_str(&format!("  {}\n", node_line(n, 30)));
    }
    if v.nodes.is_empty() {
        out.push_str("  (no nodes yet)\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn progress(node: &str, phase: &str, done: u64) -> OSUpgradeProgress {
        serde_json::from_value(json!({
            "apiVersion": "osroll.io/v1alpha1", "kind": "OSUpgradeProgress",
            "metadata": {"name": format!("p-{node}"), "labels": {"osroll.io/source": "fleet"}},
            "spec": {"nodeName": node, "sourceRef": {"name": "fleet"},
                "image": {"version": "2.0", "url": "http://x/2.img", "checksum": format!("sha256:{}", "a".repeat(64)), "size": 4096}},
            "status": {"phase": phase, "bytesDone": done, "bytesTotal": 4096, "currentVersion": "1.0", "targetVersion": "2.0", "retryCount": 0},
        }))
        .unwrap()
    }

    fn upgrade() -> OSUpgrade {
        serde_json::from_value(json!({
            "apiVersion": "osroll.io/v1alpha1", "kind": "OSUpgrade", "metadata": {"name": "fleet"},
            "spec": {"version": "stable", "catalog": {"inline": "x"}},
            "status": {"phase": "Progressing", "resolvedVersion": "2.0"},
        }))
        .unwrap()
    }

    #[test]
    fn builds_counts_and_renders_bars() {
        let mut other = progress("z", "Completed", 0);
        other.spec.source_ref = Some(osroll_api::SourceRef {
            name: "other".into(),
        });
        other.metadata.labels = None;
        let ps = [
            progress("node-b", "Downloading", 1024),
            progress("node-a", "Completed", 4096),
            other,
        ];
        let v = RolloutView::build(&upgrade(), &ps);
        assert_eq!(
            v.nodes.iter().map(|n| n.node.as_str()).collect::<Vec<_>>(),
            ["node-a", "node-b"]
        );
        let t = v.totals();
        assert_eq!((t.total, t.completed, t.staging), (2, 1, 1));
        assert_eq!(
            v.header(),
            "fleet: stable -> 2.0  Progressing  (1/2 completed, 1 staging)"
        );
        let text = render(&v);
        assert!(text.contains("node-b         Downloading [########----------------------]  25%    1.0 KiB/4.0 KiB    1.0 -> 2.0"), "{text}");
        assert!(
            text.contains("node-a         Completed   [##############################] 100%"),
            "{text}"
        );
        assert!(!v.is_finished());
    }

    #[test]
    fn failures_show_their_reason() {
        let mut p = progress("n", "RolledBack", 4096);
        p.status.as_mut().unwrap().failure_reason = Some("BootFellBack".into());
        let line = node_line(&NodeView::from_progress(&p), 10);
        assert!(line.ends_with("(BootFellBack)"), "{line}");
    }
}
