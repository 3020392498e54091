//! The VM tier: the shipped agent upgrades a real VM. qemu (TCG) boots a Debian kernel
//! through real GRUB, with the shipped `grub.cfg` (`osroll create boot grub`), from a disk
//! laid out as docs/boot-integration.md documents; the agent runs in the guest exactly as
//! the DaemonSet of `osroll create agent` describes it (tests/vm/pod.rs), against the test
//! API server and a local image server reached through qemu's user-mode network
//! (10.0.2.2 is the host's loopback). Scenarios: an upgrade, a broken image, power cuts.
//! Two nodes (two VMs, each with its own disks, agent token and image servers) run at
//! once; the report ends with each node's boots and time, where a boot's time went and
//! the CPU time spent.
//! Tools come from Debian packages (ci/debian-packages.txt); a missing one fails the test.

mod common;
#[path = "vm/cuts.rs"]
mod cuts;
#[path = "vm/guest.rs"]
mod guest;
#[path = "../../agent/tests/common/server.rs"]
mod image_server;
#[path = "vm/logwrites.rs"]
mod logwrites;
#[path = "vm/pod.rs"]
mod pod;
#[path = "vm/qemu.rs"]
mod qemu;
#[path = "vm/scenarios.rs"]
mod scenarios;
#[path = "vm/tools.rs"]
mod tools;

use std::time::Instant;

use qemu::BootTimes;
use scenarios::Env;

type Scenario = fn(&mut Env<'_>) -> Vec<String>;

/// Two nodes, each its own VM, run at once (TCG keeps one core busy per VM): a, b and
/// c's first cut on one, c's other nine cuts on the other. a's and b's boots take
/// longer than most of c's (each stages an image, b waits out a quiet spell and
/// stages again), so 8 boots there last about as long as 11 here.
const NODES: [(&str, &[(char, Scenario)]); 2] = [
    (
        "vm-node",
        &[
            ('a', scenarios::upgrade),
            ('b', scenarios::broken),
            ('c', scenarios::power_cut_first),
        ],
    ),
    ("vm-node-c", &[('c', scenarios::power_cuts_rest)]),
];

#[test]
fn vm() {
    let t0 = Instant::now();
    tools::check();
    let shared = scenarios::Shared::start();
    eprintln!("vm: shared artefacts built in {:.1?}", t0.elapsed());
    // OSROLL_VM_SCENARIOS=ac runs a subset while working on one (default: all);
    // OSROLL_VM_SERIAL=1 runs the nodes one after the other.
    let only = std::env::var("OSROLL_VM_SCENARIOS").unwrap_or_else(|_| "abc".into());
    let serial = std::env::var_os("OSROLL_VM_SERIAL").is_some();
    let results: Vec<(Vec<String>, usize, String)> = std::thread::scope(|s| {
        let mut running = Vec::new();
        let mut done = Vec::new();
        for (node, scenarios) in NODES {
            if !scenarios.iter().any(|(k, _)| only.contains(*k)) {
                continue;
            }
            let (shared, only) = (&shared, &only);
            running.push(s.spawn(move || {
                let t = Instant::now();
                let mut env = shared.node(node);
                let mut lines = Vec::new();
                for (key, scenario) in scenarios {
                    if only.contains(*key) {
                        lines.extend(scenario(&mut env));
                    }
                }
                let summary = format!("node {node}: {} boots in {:.0?}", env.boots, t.elapsed());
                (lines, env.boots, summary)
            }));
            if serial {
                done.extend(running.drain(..).map(|h| h.join()));
            }
        }
        done.extend(running.into_iter().map(|h| h.join()));
        done.into_iter()
            .map(|r| r.expect("a scenario failed (its panic is above)"))
            .collect()
    });
    let boots: usize = results.iter().map(|r| r.1).sum();
    println!("\nVM tier report");
    for line in results.iter().flat_map(|r| &r.0) {
        println!("  {line}");
    }
    let nodes: Vec<&str> = results.iter().map(|r| r.2.as_str()).collect();
    println!("  {}", nodes.join("; "));
    println!("  {}", timings(&shared.timings.lock().unwrap()));
    println!(
        "  boots: {boots}, every one reached a slot holding a complete image (none bricked); tier time {:.0?}{}",
        t0.elapsed(),
        cpu_times()
    );
}

/// The median of `xs`, in seconds with one decimal.
fn median(mut xs: Vec<f64>) -> String {
    xs.sort_by(f64::total_cmp);
    xs.get(xs.len() / 2)
        .map_or("-".into(), |m| format!("{m:.1}s"))
}

/// Where a boot's time goes, as medians over the boots that got that far.
fn timings(all: &[BootTimes]) -> String {
    let grub: Vec<f64> = all.iter().filter_map(|t| t.grub).collect();
    let kernel: Vec<f64> = all.iter().filter_map(|t| Some(t.init? - t.grub?)).collect();
    let agent: Vec<f64> = all
        .iter()
        .filter_map(|t| Some(t.agent? - t.init?))
        .collect();
    let staging: Vec<f64> = all.iter().filter_map(|t| t.staging).collect();
    format!(
        "per boot (medians): firmware and GRUB's menu {} ({} boots); GRUB loading the kernel, the kernel starting, init {} ({}); init to the agent started {} ({}); a whole staging (download to read back) {} ({})",
        median(grub.clone()),
        grub.len(),
        median(kernel.clone()),
        kernel.len(),
        median(agent.clone()),
        agent.len(),
        median(staging.clone()),
        staging.len()
    )
}

/// CPU time so far of this process and of its waited-for children (qemu, mkfs, ...),
/// from /proc/self/stat (clock ticks of 1/100 s): a figure that other load on the
/// machine changes far less than the wall time.
fn cpu_times() -> String {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return String::new();
    };
    // Field 3 (the state) follows the command name, which is in parentheses.
    let rest: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(vec![], |(_, r)| r.split_whitespace().collect());
    // utime, stime, cutime, cstime are fields 14 to 17.
    let f = |n: usize| {
        rest.get(n - 3)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 100.0
    };
    format!(
        "; CPU time {:.0}s in the test process, {:.0}s in child processes (the VMs, host tools)",
        f(14) + f(15),
        f(16) + f(17)
    )
}
