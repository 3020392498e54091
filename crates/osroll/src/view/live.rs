//! The live view: watches OSUpgrades and OSUpgradeProgress objects and redraws on every
//! change, as indicatif progress bars on a terminal or, elsewhere (CI logs, pipes), as
//! one line per phase change. Used by `osroll status --watch` and by `osroll demo`.

use std::collections::BTreeMap;
use std::io::Write;

use anyhow::{Context, bail};
use futures::{StreamExt, stream};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use kube::api::{Api, ListParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use osroll_api::{OSUpgrade, OSUpgradeProgress, ProgressPhase};

use super::{NodeView, RolloutView, node_line, render};

/// Something that shows rollouts as they change.
pub(crate) trait Renderer: Send {
    /// Show the current state.
    fn update(&mut self, views: &[RolloutView]);
    /// Show the final state and stop drawing.
    fn finish(&mut self, views: &[RolloutView]);
}

/// One line per change of a rollout header or of a node's phase.
pub(crate) struct LineRenderer<W: Write + Send> {
    out: W,
    headers: BTreeMap<String, String>,
    phases: BTreeMap<(String, String), ProgressPhase>,
}

impl<W: Write + Send> LineRenderer<W> {
    /// Write to `out`.
    pub(crate) fn new(out: W) -> Self {
        LineRenderer {
            out,
            headers: BTreeMap::new(),
            phases: BTreeMap::new(),
        }
    }
}

impl<W: Write + Send> Renderer for LineRenderer<W> {
    fn update(&mut self, views: &[RolloutView]) {
        for v in views {
            let header = v.header();
            if self.headers.get(&v.name) != Some(&header) {
                let _ = writeln!(self.out, "{header}");
                self.headers.insert(v.name.clone(), header);
            }
            for n in &v.nodes {
                let key = (v.name.clone(), n.node.clone());
                if self.phases.get(&key) != Some(&n.phase) {
                    let _ = writeln!(self.out, "  {}", node_line(n, 20));
                    self.phases.insert(key, n.phase);
                }
            }
        }
        let _ = self.out.flush();
    }

    fn finish(&mut self, views: &[RolloutView]) {
        self.update(views);
    }
}

/// indicatif bars: a totals bar per rollout and a bar per node.
pub(crate) struct BarsRenderer {
    multi: MultiProgress,
    totals: BTreeMap<String, ProgressBar>,
    nodes: BTreeMap<(String, String), ProgressBar>,
}

impl BarsRenderer {
    /// Draw on stderr.
    pub(crate) fn new() -> Self {
        Self::with_target(ProgressDrawTarget::stderr())
    }

    /// Draw on `target`.
    pub(crate) fn with_target(target: ProgressDrawTarget) -> Self {
        BarsRenderer {
            multi: MultiProgress::with_draw_target(target),
            totals: BTreeMap::new(),
            nodes: BTreeMap::new(),
        }
    }

    fn node_message(n: &NodeView) -> String {
        let bytes = if n.bytes_total > 0 {
            format!(
                "{}/{}",
                osroll_api::progress::human_bytes(n.bytes_done.min(n.bytes_total)),
                osroll_api::progress::human_bytes(n.bytes_total)
            )
        } else {
            String::new()
        };
        let versions = match (&n.current, &n.target) {
            (Some(c), Some(t)) if c != t => format!("{c} -> {t}"),
            (Some(c), _) => c.clone(),
            _ => String::new(),
        };
        format!("{:<11} {bytes:>19}  {versions}", n.phase.as_str())
    }
}

impl Default for BarsRenderer {
    fn default() -> Self {
        Self::new()
    }
}

impl Renderer for BarsRenderer {
    fn update(&mut self, views: &[RolloutView]) {
        let total_style = ProgressStyle::with_template(
            "{msg}\n  [{bar:40.green/white}] {pos}/{len} nodes completed",
        )
        .expect("valid template")
        .progress_chars("=> ");
        let node_style =
            ProgressStyle::with_template("  {prefix:<14} [{bar:30.cyan/blue}] {percent:>3}% {msg}")
                .expect("valid template")
                .progress_chars("#>-");
        for v in views {
            let t = self.totals.entry(v.name.clone()).or_insert_with(|| {
                let b = self.multi.add(ProgressBar::new(0));
                b.set_style(total_style.clone());
                b
            });
            let totals = v.totals();
            t.set_length(totals.total as u64);
            t.set_position(totals.completed as u64);
            t.set_message(v.header());
            for n in &v.nodes {
                let key = (v.name.clone(), n.node.clone());
                let b = self.nodes.entry(key).or_insert_with(|| {
                    let b = self.multi.add(ProgressBar::new(1000));
                    b.set_style(node_style.clone());
                    b.set_prefix(n.node.clone());
                    b
                });
                b.set_position((n.fraction() * 1000.0) as u64);
                b.set_message(Self::node_message(n));
            }
        }
    }

    fn finish(&mut self, views: &[RolloutView]) {
        self.update(views);
        for b in self.totals.values().chain(self.nodes.values()) {
            b.abandon();
        }
    }
}

/// A renderer for this process: bars when stderr is a terminal, lines on stdout otherwise.
pub(crate) fn default_renderer() -> Box<dyn Renderer> {
    use std::io::IsTerminal;
    if std::io::stderr().is_terminal() {
        Box::new(BarsRenderer::new())
    } else {
        Box::new(LineRenderer::new(std::io::stdout()))
    }
}

fn views(
    upgrades: &Store<OSUpgrade>,
    progresses: &Store<OSUpgradeProgress>,
    name: Option<&str>,
) -> Vec<RolloutView> {
    let ps: Vec<OSUpgradeProgress> = progresses.state().iter().map(|p| (**p).clone()).collect();
    let mut ups: Vec<_> = upgrades
        .state()
        .into_iter()
        .filter(|u| name.is_none_or(|n| u.name_any() == n))
        .collect();
    ups.sort_by_key(|u| u.name_any());
    ups.iter().map(|u| RolloutView::build(u, &ps)).collect()
}

/// Watch the rollout `name` (all when None) and render every change. With
/// `until_finished`, return once every shown rollout is Completed, Failed or Rejected;
/// otherwise run until the watches end.
pub(crate) async fn watch(
    client: Client,
    name: Option<&str>,
    until_finished: bool,
    renderer: &mut dyn Renderer,
) -> anyhow::Result<Vec<RolloutView>> {
    let (ups, ups_w) = reflector::store::<OSUpgrade>();
    let (ps, ps_w) = reflector::store::<OSUpgradeProgress>();
    let ups_stream = reflector::reflector(
        ups_w,
        watcher(
            Api::<OSUpgrade>::all(client.clone()),
            watcher::Config::default(),
        ),
    )
    .default_backoff()
    .map(|e| e.map(|_| ()).map_err(anyhow::Error::from));
    let ps_stream = reflector::reflector(
        ps_w,
        watcher(
            Api::<OSUpgradeProgress>::all(client),
            watcher::Config::default(),
        ),
    )
    .default_backoff()
    .map(|e| e.map(|_| ()).map_err(anyhow::Error::from));
    let mut events = stream::select(ups_stream.boxed(), ps_stream.boxed());
    let mut synced = false;
    while let Some(ev) = events.next().await {
        if let Err(e) = ev {
            tracing::debug!(error = %e, "status watch");
            continue;
        }
        if !synced {
            if ups.wait_until_ready().now_or_never_ready()
                && ps.wait_until_ready().now_or_never_ready()
            {
                synced = true;
            } else {
                continue;
            }
        }
        let vs = views(&ups, &ps, name);
        if let Some(n) = name
            && vs.is_empty()
        {
            bail!("OSUpgrade {n:?} not found");
        }
        renderer.update(&vs);
        if until_finished && !vs.is_empty() && vs.iter().all(RolloutView::is_finished) {
            renderer.finish(&vs);
            return Ok(vs);
        }
    }
    let vs = views(&ups, &ps, name);
    renderer.finish(&vs);
    Ok(vs)
}

trait ReadyNow {
    fn now_or_never_ready(self) -> bool;
}

impl<F: std::future::Future<Output = Result<(), reflector::store::WriterDropped>>> ReadyNow for F {
    fn now_or_never_ready(self) -> bool {
        matches!(futures::FutureExt::now_or_never(self), Some(Ok(())))
    }
}

/// One snapshot of the rollout `name` (all when None), as text.
pub(crate) async fn snapshot(client: Client, name: Option<&str>) -> anyhow::Result<String> {
    let ps = Api::<OSUpgradeProgress>::all(client.clone())
        .list(&ListParams::default())
        .await
        .context("listing OSUpgradeProgress")?
        .items;
    let api = Api::<OSUpgrade>::all(client);
    let ups = match name {
        Some(n) => vec![
            api.get_opt(n)
                .await?
                .with_context(|| format!("OSUpgrade {n:?} not found"))?,
        ],
        None => {
            let mut l = api
                .list(&ListParams::default())
                .await
                .context("listing OSUpgrades")?
                .items;
            l.sort_by_key(|u| u.name_any());
            l
        }
    };
    if ups.is_empty() {
        return Ok("No OSUpgrades found.\n".into());
    }
    Ok(ups
        .iter()
        .map(|u| render(&RolloutView::build(u, &ps)))
        .collect::<Vec<_>>()
        .join("\n"))
}
