//! The VM tier: the shipped agent upgrades a real VM. qemu (TCG) boots a Debian kernel
//! through real GRUB, with the shipped `grub.cfg` (`osroll create boot grub`), from a disk
//! laid out as docs/boot-integration.md documents; the agent runs in the guest exactly as
//! the DaemonSet of `osroll create agent` describes it (tests/vm/pod.rs), against the test
//! API server and a local image server reached through qemu's user-mode network
//! (10.0.2.2 is the host's loopback). Scenarios: an upgrade, a broken image, power cuts.
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

#[test]
fn vm() {
    let t0 = Instant::now();
    tools::check();
    let mut env = scenarios::Env::start();
    eprintln!("vm: artefacts built in {:.1?}", t0.elapsed());
    let mut report = Vec::new();
    // OSROLL_VM_SCENARIOS=ac runs a subset while working on one (default: all).
    let only = std::env::var("OSROLL_VM_SCENARIOS").unwrap_or_else(|_| "abc".into());
    type Scenario = fn(&mut scenarios::Env) -> Vec<String>;
    let all: [(char, Scenario); 3] = [
        ('a', scenarios::upgrade),
        ('b', scenarios::broken),
        ('c', scenarios::power_cuts),
    ];
    for (key, scenario) in all {
        if only.contains(key) {
            report.extend(scenario(&mut env));
        }
    }
    let boots = env.boots;
    println!("\nVM tier report");
    for line in &report {
        println!("  {line}");
    }
    println!(
        "  boots: {boots}, every one reached a slot holding a complete image (none bricked); tier time {:.0?}",
        t0.elapsed()
    );
}
