//! Helpers the `osroll` crate's test binaries share: run the built binary, split its YAML.

use serde_json::Value;

/// The stdout of `osroll ARGS`; panics with its stderr when it fails.
pub(crate) fn osroll(args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_osroll"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "osroll {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The documents of a multi-document YAML stream.
pub(crate) fn docs(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect()
}
