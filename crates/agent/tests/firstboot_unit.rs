//! The shipped first-boot unit keeps the properties the first-boot flow relies on.

use std::collections::BTreeMap;

fn unit() -> BTreeMap<(String, String), Vec<String>> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/osroll-firstboot.service"
    );
    let text = std::fs::read_to_string(path).unwrap();
    let mut section = String::new();
    let mut keys: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = s.to_string();
            continue;
        }
        let (k, v) = line.split_once('=').expect("key=value");
        keys.entry((section.clone(), k.to_string()))
            .or_default()
            .push(v.to_string());
    }
    keys
}

fn get(u: &BTreeMap<(String, String), Vec<String>>, section: &str, key: &str) -> Vec<String> {
    u.get(&(section.to_string(), key.to_string()))
        .cloned()
        .unwrap_or_default()
}

#[test]
fn runs_the_firstboot_agent_once_before_the_kubelet() {
    let u = unit();
    assert_eq!(get(&u, "Unit", "Before"), ["kubelet.service"]);
    assert_eq!(get(&u, "Service", "Type"), ["oneshot"]);
    assert_eq!(
        get(&u, "Service", "ExecStart"),
        ["/usr/local/bin/osroll agent --firstboot"]
    );
    assert_eq!(
        get(&u, "Unit", "ConditionPathExists"),
        ["!/var/lib/osroll/firstboot.done"]
    );
    // The kubelet must still start when the first-boot update fails.
    assert!(get(&u, "Unit", "RequiredBy").is_empty());
    assert!(get(&u, "Install", "RequiredBy").is_empty());
    assert!(get(&u, "Install", "WantedBy")[0].contains("kubelet.service"));
}
