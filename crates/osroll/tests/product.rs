//! The release build (`--no-default-features`, as the Dockerfile builds it) leaves the
//! test cluster and the simulated host out of the binary: neither `osroll-sim` nor the
//! agent's `sim-host` feature is in its dependency graph, while the default build has
//! both (so the checks can tell). Only asks cargo for the graph; builds nothing.

use std::process::Command;

/// `cargo tree` of the osroll package, one `name version` or `name feature "f"` a line.
fn tree(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO"))
        .args(["tree", "--frozen", "--prefix", "none", "--manifest-path"])
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cargo tree {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn has_sim(graph: &str) -> bool {
    graph.lines().any(|l| l.starts_with("osroll-sim "))
}

fn has_sim_host(graph: &str) -> bool {
    graph
        .lines()
        .any(|l| l.starts_with("osroll-agent feature \"sim-host\""))
}

#[test]
fn the_release_build_has_no_test_cluster() {
    let release = tree(&["-e", "normal", "--no-default-features"]);
    assert!(!has_sim(&release), "{release}");
    let default = tree(&["-e", "normal"]);
    assert!(has_sim(&default), "{default}");
}

#[test]
fn the_release_build_has_no_simulated_host() {
    let release = tree(&["-e", "normal,features", "--no-default-features"]);
    assert!(!has_sim_host(&release), "{release}");
    let default = tree(&["-e", "normal,features"]);
    assert!(has_sim_host(&default), "{default}");
}
