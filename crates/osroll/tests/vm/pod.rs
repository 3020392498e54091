//! Recreates the agent pod of the generated DaemonSet inside the guest: the container's
//! command (the image's ENTRYPOINT and the spec's args), its environment, and its volume
//! mounts (hostPath as bind mounts) in a mount namespace, plus only what kubelet and the
//! runtime add: the service-account token, KUBERNETES_SERVICE_HOST/PORT, PATH, HOSTNAME.

use serde_json::Value;

/// The container as the guest will run it.
pub(crate) struct PodSpec {
    pub(crate) argv: Vec<String>,
    pub(crate) env: Vec<(String, String)>,
    /// `(host path or None for an empty volume, path in the container, read-only, hostPath type)`.
    pub(crate) mounts: Vec<(Option<String>, String, bool, String)>,
}

/// The image's ENTRYPOINT, from the repository's Dockerfile.
pub(crate) fn entrypoint() -> Vec<String> {
    let df =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../Dockerfile")).unwrap();
    let line = df
        .lines()
        .find_map(|l| l.strip_prefix("ENTRYPOINT "))
        .expect("Dockerfile has an ENTRYPOINT");
    serde_json::from_str(line).expect("ENTRYPOINT in exec form")
}

/// Read the DaemonSet among `objects` as the guest will run it on `node`.
pub(crate) fn from_daemonset(objects: &[Value], node: &str, api: (&str, u16)) -> PodSpec {
    let ds = objects.iter().find(|o| o["kind"] == "DaemonSet").unwrap();
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(
        pod["hostPID"], true,
        "the guest shares PID 1 with the agent"
    );
    let c = &pod["containers"][0];
    let mut argv = match c["command"].as_array() {
        Some(cmd) => cmd
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect(),
        None => entrypoint(),
    };
    argv.extend(
        c["args"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|v| v.as_str().unwrap().to_string()),
    );
    let mut env = vec![
        (
            "PATH".into(),
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        ),
        ("HOSTNAME".into(), node.to_string()),
    ];
    for e in c["env"].as_array().into_iter().flatten() {
        let value = match (
            &e["value"],
            e["valueFrom"]["fieldRef"]["fieldPath"].as_str(),
        ) {
            (Value::String(v), _) => v.clone(),
            (_, Some("spec.nodeName")) => node.to_string(),
            other => panic!("env {e}: {other:?} not emulated"),
        };
        env.push((e["name"].as_str().unwrap().to_string(), value));
    }
    env.push(("KUBERNETES_SERVICE_HOST".into(), api.0.into()));
    env.push(("KUBERNETES_SERVICE_PORT".into(), api.1.to_string()));
    let volumes = pod["volumes"].as_array().unwrap();
    let mounts = c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let v = volumes.iter().find(|v| v["name"] == m["name"]).unwrap();
            let host = v["hostPath"]["path"].as_str().map(String::from);
            assert!(
                host.is_some() || v["configMap"]["optional"] == true,
                "volume {v} not emulated"
            );
            let ty = v["hostPath"]["type"].as_str().unwrap_or("").to_string();
            let ro = m["readOnly"] == true;
            (host, m["mountPath"].as_str().unwrap().to_string(), ro, ty)
        })
        .collect();
    PodSpec { argv, env, mounts }
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The guest script that starts the pod (run by the guest's PID 1).
pub(crate) fn script(p: &PodSpec) -> String {
    let c = "/var/lib/osroll-vm/image";
    let mut s = String::from(
        "#!/bin/sh\n# The agent pod of the generated DaemonSet (see tests/vm/pod.rs).\n\
         if [ -z \"$OSROLL_VM_NS\" ]; then OSROLL_VM_NS=1 exec unshare -m \"$0\"; fi\nset -e\n\
         mount --make-rprivate /\n",
    );
    s += &format!(
        "C={c}\nmkdir -p $C/proc $C/sys\nmount -t proc proc $C/proc\nmount -t sysfs sysfs $C/sys\n"
    );
    for (host, inside, ro, ty) in &p.mounts {
        let target = format!("$C{inside}");
        match (host, ty.as_str()) {
            (Some(h), "File") => {
                s += &format!(
                    "test -f {h}\nmkdir -p $(dirname {target}); touch {target}\nmount --bind {h} {target}\n"
                )
            }
            (Some(h), _) => s += &format!("mkdir -p {h} {target}\nmount --bind {h} {target}\n"),
            (None, _) => {
                s += &format!(
                    "mkdir -p {target}\nmount -t tmpfs -o size=1m,mode=0755 tmpfs {target}\n"
                )
            }
        }
        if *ro {
            s += &format!("mount -o remount,bind,ro {target}\n");
        }
    }
    s += "SA=$C/var/run/secrets/kubernetes.io/serviceaccount\nmkdir -p $SA\nmount --bind /var/lib/osroll-vm/sa $SA\n";
    s += "exec env -i";
    for (k, v) in &p.env {
        s += &format!(" {}", quote(&format!("{k}={v}")));
    }
    s += " chroot $C";
    for a in &p.argv {
        s += &format!(" {}", quote(a));
    }
    s += "\n";
    s
}
