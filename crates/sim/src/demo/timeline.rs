//! What the demo reports at the end: the phases each node went through and how long each
//! took, recorded from watch events on OSUpgradeProgress objects, and the summary table.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::Client;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use osroll_api::{OSUpgradeProgress, ProgressPhase};
use tokio::task::JoinHandle;

/// What one node went through.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeHistory {
    /// Version first reported.
    pub from: Option<String>,
    /// Version last reported as current (or targeted).
    pub to: Option<String>,
    /// Phases in the order seen, with the time each was first seen.
    pub phases: Vec<(ProgressPhase, Instant)>,
}

impl NodeHistory {
    /// Record the state of one progress object seen at `at`.
    pub fn observe(&mut self, p: &OSUpgradeProgress, at: Instant) {
        let Some(st) = &p.status else { return };
        if self.from.is_none() {
            self.from = st.current_version.clone();
        }
        let to = if st.phase == Some(ProgressPhase::Completed) {
            st.current_version.clone()
        } else {
            st.target_version.clone()
        };
        if to.is_some() {
            self.to = to;
        }
        if let Some(ph) = st.phase
            && self.phases.last().map(|(p, _)| *p) != Some(ph)
        {
            self.phases.push((ph, at));
        }
    }
}

/// Records node histories until dropped.
pub struct Timeline {
    histories: Arc<Mutex<BTreeMap<String, NodeHistory>>>,
    task: JoinHandle<()>,
}

impl Drop for Timeline {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Timeline {
    /// Start watching every OSUpgradeProgress.
    pub fn start(client: Client) -> Timeline {
        let histories: Arc<Mutex<BTreeMap<String, NodeHistory>>> = Arc::default();
        let h = histories.clone();
        let task = tokio::spawn(async move {
            let api: Api<OSUpgradeProgress> = Api::all(client);
            let mut s = watcher(api, watcher::Config::default())
                .default_backoff()
                .applied_objects()
                .boxed();
            while let Some(ev) = s.next().await {
                if let Ok(p) = ev {
                    let mut map = h.lock().expect("timeline lock");
                    map.entry(p.spec.node_name.clone())
                        .or_default()
                        .observe(&p, Instant::now());
                }
            }
        });
        Timeline { histories, task }
    }

    /// The histories so far, by node.
    pub fn snapshot(&self) -> BTreeMap<String, NodeHistory> {
        self.histories.lock().expect("timeline lock").clone()
    }
}

/// One row of the summary table.
#[derive(Debug, Clone, PartialEq)]
pub struct SummaryRow {
    /// Node name.
    pub node: String,
    /// Version before.
    pub from: String,
    /// Version after.
    pub to: String,
    /// Booted slot before and after, e.g. `A -> B`.
    pub slot: String,
    /// Last phase.
    pub result: Option<ProgressPhase>,
    /// From the first phase seen to the last.
    pub total: Duration,
    /// Each phase and how long it lasted (the last one has none).
    pub phases: Vec<(ProgressPhase, Option<Duration>)>,
}

/// Build the summary from histories and the nodes' slot labels before and after.
pub fn summarize(
    histories: &BTreeMap<String, NodeHistory>,
    slots_before: &BTreeMap<String, String>,
    slots_after: &BTreeMap<String, String>,
) -> Vec<SummaryRow> {
    let mut nodes: Vec<&String> = histories.keys().chain(slots_before.keys()).collect();
    nodes.sort();
    nodes.dedup();
    nodes
        .into_iter()
        .map(|node| {
            let h = histories.get(node).cloned().unwrap_or_default();
            let phases: Vec<(ProgressPhase, Option<Duration>)> = h
                .phases
                .iter()
                .enumerate()
                .map(|(i, (p, t))| {
                    (
                        *p,
                        h.phases.get(i + 1).map(|(_, next)| next.duration_since(*t)),
                    )
                })
                .collect();
            let total = match (h.phases.first(), h.phases.last()) {
                (Some((_, a)), Some((_, b))) => b.duration_since(*a),
                _ => Duration::ZERO,
            };
            let dash = || "-".to_string();
            SummaryRow {
                node: node.clone(),
                from: h.from.clone().unwrap_or_else(dash),
                to: h.to.clone().unwrap_or_else(dash),
                slot: format!(
                    "{} -> {}",
                    slots_before.get(node).cloned().unwrap_or_else(dash),
                    slots_after.get(node).cloned().unwrap_or_else(dash)
                ),
                result: h.phases.last().map(|(p, _)| *p),
                total,
                phases,
            }
        })
        .collect()
}

fn secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

/// The summary as an aligned text table.
pub fn render_table(rows: &[SummaryRow]) -> String {
    let mut lines = vec![
        ["NODE", "FROM", "TO", "SLOT", "RESULT", "TIME", "PHASES"]
            .map(String::from)
            .to_vec(),
    ];
    for r in rows {
        let phases: Vec<String> = r
            .phases
            .iter()
            .map(|(p, d)| match d {
                Some(d) => format!("{p:?} {}", secs(*d)),
                None => format!("{p:?}"),
            })
            .collect();
        lines.push(vec![
            r.node.clone(),
            r.from.clone(),
            r.to.clone(),
            r.slot.clone(),
            r.result
                .map(|p| format!("{p:?}"))
                .unwrap_or_else(|| "-".into()),
            secs(r.total),
            phases.join(" > "),
        ]);
    }
    let widths: Vec<usize> = (0..7)
        .map(|i| lines.iter().map(|l| l[i].len()).max().unwrap_or(0))
        .collect();
    lines
        .iter()
        .map(|l| {
            let cells: Vec<String> = l
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    if i == 6 {
                        c.clone()
                    } else {
                        format!("{c:<w$}", w = widths[i])
                    }
                })
                .collect();
            cells.join("  ").trim_end().to_string() + "\n"
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn progress(phase: &str, current: &str) -> OSUpgradeProgress {
        serde_json::from_value(json!({
            "apiVersion": "osroll.io/v1alpha1", "kind": "OSUpgradeProgress", "metadata": {"name": "p"},
            "spec": {"nodeName": "node-1"},
            "status": {"phase": phase, "currentVersion": current, "targetVersion": "2.0", "retryCount": 0},
        }))
        .unwrap()
    }

    #[test]
    fn histories_become_rows_with_durations() {
        let t0 = Instant::now();
        let mut h = NodeHistory::default();
        h.observe(&progress("Downloading", "1.0"), t0);
        h.observe(
            &progress("Downloading", "1.0"),
            t0 + Duration::from_millis(100),
        );
        h.observe(&progress("Staged", "1.0"), t0 + Duration::from_millis(1500));
        h.observe(
            &progress("Rebooting", "1.0"),
            t0 + Duration::from_millis(2000),
        );
        h.observe(
            &progress("Completed", "2.0"),
            t0 + Duration::from_millis(3000),
        );
        assert_eq!(h.phases.len(), 4, "repeats are not new phases");
        let rows = summarize(
            &BTreeMap::from([("node-1".to_string(), h)]),
            &BTreeMap::from([("node-1".to_string(), "A".to_string())]),
            &BTreeMap::from([("node-1".to_string(), "B".to_string())]),
        );
        let r = &rows[0];
        assert_eq!(
            (r.from.as_str(), r.to.as_str(), r.slot.as_str()),
            ("1.0", "2.0", "A -> B")
        );
        assert_eq!(r.result, Some(ProgressPhase::Completed));
        assert_eq!(r.total, Duration::from_millis(3000));
        assert_eq!(
            r.phases[0],
            (
                ProgressPhase::Downloading,
                Some(Duration::from_millis(1500))
            )
        );
        assert_eq!(r.phases[3], (ProgressPhase::Completed, None));
        let table = render_table(&rows);
        assert!(
            table.starts_with("NODE    FROM  TO   SLOT    RESULT     TIME  PHASES\n"),
            "{table}"
        );
        assert!(table.contains("node-1  1.0   2.0  A -> B  Completed  3.0s  Downloading 1.5s > Staged 0.5s > Rebooting 1.0s > Completed"), "{table}");
    }
}
