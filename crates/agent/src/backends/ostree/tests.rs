//! Tests of the OSTree backend against scripted fake `rpm-ostree`, `bootc` and `ostree`
//! executables (the `scripted_` tests) that keep their deployments in a state
//! directory, so a "reboot" is the test moving the staged deployment to booted (or not,
//! for a fallback). rpm-ostree and bootc are not packaged where the tests run; the real
//! `ostree` tool is driven by `tests/ostree_real.rs`.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;
use crate::backends::driver::{DeployBackend, Staging, Target};
use crate::backends::runner::ProcessRunner;
use crate::backends::testutil::{recorded_args, script};
use crate::mounts::decide::StaleRef;

fn csum(n: u32) -> String {
    format!("{n:064x}")
}

fn digest(n: u32) -> String {
    format!("sha256:{:064x}", 0xd16e_0000u64 + u64::from(n))
}

/// Shell helpers shared by the fakes: the state directory holds `booted`, `next` and
/// `rollback` (a checksum each, or empty), `commits` (`<checksum> <version> <digest>`)
/// and `refs` (`<name> <checksum>`).
fn prelude(state: &Path) -> String {
    format!(
        r#"S='{}'
info() {{ awk -v c="$1" -v f="$2" '$1==c {{print $f}}' "$S/commits"; }}
resolve() {{ awk -v r="$1" '$1==r {{print $2}}' "$S/refs"; }}
role() {{ cat "$S/$1" 2>/dev/null; }}
stage_last_arg() {{
  eval "ref=\${{$#}}"
  c=$(resolve "$ref")
  [ -n "$c" ] || {{ echo "error: cannot resolve $ref" >&2; exit 1; }}
  echo "$c" > "$S/next"
}}
"#,
        state.display()
    )
}

const RPM_OSTREE: &str = r#"
entry() {
  lr=; [ "$2" = true ] && [ -n "$(role live)" ] && lr=",\"live-replaced\":\"$(role live)\""
  printf '{"id":"fedora-%s.0","osname":"fedora","serial":0,"checksum":"%s","version":"%s","origin":"fedora:fedora/x86_64/coreos/stable","container-image-reference-digest":"%s","booted":%s,"staged":%s,"pinned":false%s,"requested-packages":[]}' \
    "$1" "$1" "$(info "$1" 2)" "$(info "$1" 3)" "$2" "$3" "$lr"
}
case "$1" in
  status)
    [ "$2" = --json ] || { echo "status wants --json" >&2; exit 2; }
    printf '{"deployments":['; sep=
    for r in next booted rollback; do
      c=$(role $r); [ -n "$c" ] || continue
      b=false; st=false; [ $r = booted ] && b=true; [ $r = next ] && st=true
      printf '%s' "$sep"; entry "$c" $b $st; sep=,
    done
    printf '],"transaction":null,"cached-update":null}\n' ;;
  rebase|deploy)
    [ -e "$S/fail-stage" ] && { echo "error: Transaction in progress: upgrade" >&2; exit 1; }
    stage_last_arg "$@"; echo "Staging deployment... done" ;;
  db)
    [ "$2 $3" = "diff --format=json" ] || { echo "db wants diff --format=json" >&2; exit 2; }
    printf '{"ostree-commit-from":"%s","ostree-commit-to":"%s","pkgdiff":%s,"advisories":[]}\n' \
      "$(role booted)" "$(role next)" "$(role pkgdiff || echo '[]')" ;;
  apply-live)
    if [ "$2" != --allow-replacement ] && grep -q '", *[123]' "$S/pkgdiff" 2>/dev/null; then
      echo "error: packages would be changed; would replace files" >&2; exit 1
    fi
    [ -e "$S/fail-live" ] || role next > "$S/live" ;;
  rollback)
    c=$(role rollback); [ -n "$c" ] || { echo "error: No rollback deployment found" >&2; exit 1; }
    if [ -n "$(role next)" ]; then : > "$S/next"; else echo "$c" > "$S/next"; : > "$S/rollback"; fi ;;
  *) echo "unknown command $1" >&2; exit 64 ;;
esac
"#;

const BOOTC: &str = r#"
entry() {
  c=$(role "$1"); [ -n "$c" ] || { printf null; return; }
  printf '{"image":{"image":{"image":"quay.io/example/os:%s","transport":"registry"},"version":"%s","timestamp":null,"imageDigest":"%s","architecture":"amd64"},"cachedUpdate":null,"incompatible":false,"pinned":false,"store":"ostreeContainer","ostree":{"checksum":"%s","deploySerial":0,"stateroot":"default"}}' \
    "$(info "$c" 2)" "$(info "$c" 2)" "$(info "$c" 3)" "$c"
}
case "$1" in
  status)
    printf '{"apiVersion":"org.containers.bootc/v1","kind":"BootcHost","metadata":{"name":"host"},"spec":{"image":null,"bootOrder":"default"},"status":{"staged":%s,"booted":%s,"rollback":%s,"rollbackQueued":%s,"type":"bootcHost"}}\n' \
      "$(entry next)" "$(entry booted)" "$(entry rollback)" "$([ -e "$S/queued" ] && echo true || echo false)" ;;
  switch) stage_last_arg "$@"; echo "Queued for next boot" ;;
  rollback)
    [ -n "$(role rollback)" ] || { echo "error: No rollback available" >&2; exit 1; }
    : > "$S/next"; touch "$S/queued"; echo "Next boot: rollback deployment" ;;
  *) echo "unknown command $1" >&2; exit 64 ;;
esac
"#;

const OSTREE: &str = r#"
case "$1" in
  pull) [ "$2" = -- ] || exit 2; resolve "$3:$4" | grep -q . || { echo "error: No such ref $4" >&2; exit 1; } ;;
  admin)
    case "$2" in
      status)
        for r in next booted rollback; do
          c=$(role $r); [ -n "$c" ] || continue
          m='  '; f=''
          [ $r = booted ] && m='* '; [ $r = next ] && f=' (staged)'; [ $r = rollback ] && f=' (rollback)'
          printf '%sfedora %s.0%s\n    Version: %s\n    origin refspec: fedora:fedora/stable\n' "$m" "$c" "$f" "$(info "$c" 2)"
        done ;;
      deploy) stage_last_arg "$@" ;;
      *) exit 64 ;;
    esac ;;
  *) exit 64 ;;
esac
"#;

struct Fake {
    dir: tempfile::TempDir,
    name: &'static str,
}

impl Fake {
    fn new(tool: OstreeTool) -> (Fake, OstreeBackend<ProcessRunner>) {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        fs::create_dir(&state).unwrap();
        let (name, body) = match tool {
            OstreeTool::RpmOstreeRebase | OstreeTool::RpmOstreeDeploy => ("rpm-ostree", RPM_OSTREE),
            OstreeTool::BootcSwitch => ("bootc", BOOTC),
            OstreeTool::OstreeAdminDeploy => ("ostree", OSTREE),
        };
        let exe = script(dir.path(), name, &format!("{}{body}", prelude(&state)));
        let mut commits = String::new();
        for n in 1..=3 {
            commits += &format!("{} 40.{n} {}\n", csum(n), digest(n));
        }
        fs::write(state.join("commits"), commits).unwrap();
        let refs = format!(
            "fedora:fedora/stable {c2}\nquay.io/example/os:40.2 {c2}\n40.2 {c2}\n\
             quay.io/example/os:40.3 {c3}\nfedora:fedora/next {c3}\n",
            c2 = csum(2),
            c3 = csum(3)
        );
        fs::write(state.join("refs"), refs).unwrap();
        fs::write(state.join("booted"), csum(1)).unwrap();
        let mut config = OstreeConfig::new(tool);
        config.program = Some(exe);
        config.stage_timeout = Duration::from_secs(20);
        config.status_timeout = Duration::from_secs(20);
        let fake = Fake { dir, name };
        (fake, OstreeBackend::new(config, ProcessRunner))
    }

    fn state(&self, f: &str) -> PathBuf {
        self.dir.path().join("state").join(f)
    }

    fn set(&self, role: &str, value: &str) {
        fs::write(self.state(role), value).unwrap();
    }

    fn get(&self, role: &str) -> String {
        fs::read_to_string(self.state(role))
            .unwrap_or_default()
            .trim()
            .to_string()
    }

    /// Power-cycle the fake host: it boots the staged deployment, or with `falls_back`
    /// the bootloader returns to the old one and lists the new one as rollback.
    fn reboot(&self, falls_back: bool) {
        if fs::remove_file(self.state("queued")).is_ok() {
            // `bootc rollback` queued the rollback entry: the two swap.
            let (booted, rollback) = (self.get("booted"), self.get("rollback"));
            self.set("booted", &rollback);
            self.set("rollback", &booted);
            return;
        }
        let (booted, next) = (self.get("booted"), self.get("next"));
        if falls_back {
            self.set("rollback", &next);
        } else {
            self.set("rollback", &booted);
            self.set("booted", &next);
        }
        self.set("next", "");
    }

    fn calls(&self) -> Vec<Vec<String>> {
        recorded_args(self.dir.path(), self.name)
    }

    fn stage_calls(&self) -> Vec<Vec<String>> {
        self.calls()
            .into_iter()
            .filter(|c| {
                c.first().is_some_and(|w| w != "status") && c.get(1).is_none_or(|w| w != "status")
            })
            .collect()
    }
}

fn target(reference: &str, version: &str, checksum: Option<String>) -> OstreeTarget {
    OstreeTarget {
        reference: reference.into(),
        version: Some(version.into()),
        checksum,
        kernel_arguments: KernelArguments::default(),
        live: live::LiveRequest::Reboot,
        rollback: false,
    }
}

#[test]
fn scripted_rpm_ostree_rebase_stages_once_and_confirms_after_reboot() {
    let (fake, mut backend) = Fake::new(OstreeTool::RpmOstreeRebase);
    backend.config.stage_args = vec!["--bypass-driver".into()];
    let t = target("quay.io/example/os:40.2", "40.2", Some(csum(2)));

    let staged = backend.stage(&t).unwrap();
    assert!(
        matches!(&staged, StageOutcome::Staged(d) if d.version.as_deref() == Some("40.2")),
        "{staged:?}"
    );
    assert_eq!(
        fake.stage_calls(),
        vec![vec![
            "rebase",
            "--bypass-driver",
            "--",
            "quay.io/example/os:40.2"
        ]]
    );
    // A restarted agent finds it staged and does not stage again.
    assert!(matches!(
        backend.stage(&t).unwrap(),
        StageOutcome::AlreadyStaged(_)
    ));
    assert_eq!(fake.stage_calls().len(), 1);
    // Before the reboot the node still runs the old deployment.
    assert!(matches!(
        backend.confirm(&t).unwrap(),
        BootCheck::RolledBack { .. }
    ));

    fake.reboot(false);
    match backend.confirm(&t).unwrap() {
        BootCheck::OnTarget(d) => {
            assert_eq!(d.checksum, Some(csum(2)));
            assert_eq!(
                d.deploy_dir(),
                Some(format!("/ostree/deploy/fedora/deploy/{}.0", csum(2)))
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        backend.stage(&t).unwrap(),
        StageOutcome::AlreadyBooted(_)
    ));
    assert_eq!(fake.stage_calls().len(), 1);
}

#[test]
fn scripted_rpm_ostree_boot_into_the_wrong_deployment_is_rolled_back() {
    let (fake, backend) = Fake::new(OstreeTool::RpmOstreeDeploy);
    let t = target("fedora:fedora/stable", "40.2", Some(csum(2)));
    backend.stage(&t).unwrap();
    assert_eq!(fake.stage_calls(), vec![vec!["deploy", "--", "40.2"]]);

    fake.reboot(true);
    match backend.confirm(&t).unwrap() {
        BootCheck::RolledBack { booted, message } => {
            assert_eq!(booted.version.as_deref(), Some("40.1"));
            assert!(
                message.contains("booted fedora 000000000000.0 version 40.1"),
                "{message}"
            );
            assert!(
                message.contains("instead of fedora:fedora/stable version 40.2"),
                "{message}"
            );
            assert!(
                message.contains("still deployed but was not booted"),
                "{message}"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn scripted_bootc_switch_matches_the_target_by_image_digest() {
    let (fake, backend) = Fake::new(OstreeTool::BootcSwitch);
    // Only the digest identifies the target: the version is unknown to the catalog.
    let t = OstreeTarget {
        reference: "quay.io/example/os:40.3".into(),
        version: None,
        checksum: Some(digest(3)),
        kernel_arguments: KernelArguments::default(),
        live: live::LiveRequest::Reboot,
        rollback: false,
    };
    let out = backend.stage(&t).unwrap();
    assert!(
        matches!(out, StageOutcome::Staged(ref d) if d.image_digest == Some(digest(3))),
        "{out:?}"
    );
    assert_eq!(
        fake.stage_calls(),
        vec![vec!["switch", "--", "quay.io/example/os:40.3"]]
    );
    fake.reboot(false);
    assert!(matches!(
        backend.confirm(&t).unwrap(),
        BootCheck::OnTarget(_)
    ));
}

#[test]
fn scripted_ostree_admin_pulls_then_deploys_and_detects_a_fallback() {
    let (fake, mut backend) = Fake::new(OstreeTool::OstreeAdminDeploy);
    backend.config.os_name = Some("fedora".into());
    let t = target("fedora:fedora/stable", "40.2", None);
    let out = backend.stage(&t).unwrap();
    assert!(
        matches!(out, StageOutcome::Staged(ref d) if d.checksum == Some(csum(2))),
        "{out:?}"
    );
    assert_eq!(
        fake.stage_calls(),
        vec![
            vec!["pull", "--", "fedora", "fedora/stable"],
            vec![
                "admin",
                "deploy",
                "--stage",
                "--os=fedora",
                "fedora:fedora/stable"
            ],
        ]
    );
    fake.reboot(true);
    let BootCheck::RolledBack { message, .. } = backend.confirm(&t).unwrap() else {
        panic!("expected a rollback");
    };
    assert!(message.contains("version 40.1"), "{message}");
}

#[test]
fn scripted_a_staged_deployment_other_than_the_target_is_an_error() {
    let (_fake, backend) = Fake::new(OstreeTool::RpmOstreeRebase);
    // The ref has moved on to 40.3 while the catalog still says 40.2.
    let t = target("fedora:fedora/next", "40.2", Some(csum(2)));
    let err = backend.stage(&t).unwrap_err();
    assert_eq!(err.reason(), "OstreeStagedWrongDeployment");
    let msg = err.to_string();
    assert!(
        msg.contains("next boot is fedora 000000000000.0 version 40.3"),
        "{msg}"
    );
    assert!(
        msg.contains("not the target fedora:fedora/next version 40.2"),
        "{msg}"
    );
}

#[test]
fn scripted_a_failing_tool_reports_its_stderr() {
    let (fake, backend) = Fake::new(OstreeTool::RpmOstreeRebase);
    fake.set("fail-stage", "");
    let err = backend
        .stage(&target("fedora:fedora/stable", "40.2", None))
        .unwrap_err();
    assert_eq!(err.reason(), "OstreeCommandFailed");
    let msg = err.to_string();
    assert!(
        msg.contains("rpm-ostree rebase -- fedora:fedora/stable` exited with code 1"),
        "{msg}"
    );
    assert!(
        msg.ends_with("error: Transaction in progress: upgrade"),
        "{msg}"
    );
}

#[test]
fn host_prefix_wraps_every_command() {
    let mut config = OstreeConfig::new(OstreeTool::BootcSwitch);
    config.host_prefix = ["nsenter", "--target", "1", "--mount", "--"]
        .map(String::from)
        .to_vec();
    assert_eq!(
        status_command(&config).display(),
        "nsenter --target 1 --mount -- bootc status --json"
    );
    let cmds = stage_commands(&config, &target("quay.io/x/os:1", "1", None)).unwrap();
    assert_eq!(cmds.len(), 1);
    assert_eq!(
        cmds[0].display(),
        "nsenter --target 1 --mount -- bootc switch -- quay.io/x/os:1"
    );
}

#[test]
fn rpm_ostree_deploy_without_a_version_uses_the_commit() {
    let config = OstreeConfig::new(OstreeTool::RpmOstreeDeploy);
    let t = OstreeTarget {
        reference: "fedora:fedora/stable".into(),
        version: None,
        checksum: Some(format!("sha256:{}", csum(7))),
        kernel_arguments: KernelArguments::default(),
        live: live::LiveRequest::Reboot,
        rollback: false,
    };
    let cmds = stage_commands(&config, &t).unwrap();
    assert_eq!(
        cmds[0].args,
        vec![
            "deploy".to_string(),
            "--".into(),
            format!("revision={}", csum(7))
        ]
    );
}

#[test]
fn parses_ostree_admin_status_with_pending_and_unknown_details() {
    let text = format!(
        "  fedora {}.1 (pending)\n    Version: 41.1\n    origin refspec: fedora:fedora/41\n\
         * fedora {}.0\n    Version: 40.9\n    Unlocked: development\n    origin refspec: fedora:fedora/40\n",
        csum(9),
        csum(8)
    );
    let s = parse_status(OstreeTool::OstreeAdminDeploy, &text).unwrap();
    assert_eq!(s.booted().unwrap().version.as_deref(), Some("40.9"));
    let staged = s.staged().unwrap();
    assert_eq!(
        (staged.serial, staged.origin.as_deref()),
        (Some(1), Some("fedora:fedora/41"))
    );
}

#[test]
fn unreadable_status_is_an_error_naming_the_problem() {
    assert!(
        parse_status(OstreeTool::OstreeAdminDeploy, "* fedora nothex.0\n")
            .unwrap_err()
            .to_string()
            .contains("\"nothex.0\" is not `<64 hex>.<serial>`")
    );
    assert!(parse_status(OstreeTool::RpmOstreeRebase, "Deployments: none").is_err());
    let no_booted = r#"{"deployments":[{"checksum":"ab","booted":false}]}"#;
    let s = parse_status(OstreeTool::RpmOstreeRebase, no_booted).unwrap();
    let t = target("r", "1", None);
    assert!(matches!(
        confirm_boot(&s, &t),
        Err(OstreeError::NoBootedDeployment)
    ));
}

#[test]
fn target_reference_comes_from_os_version_management_or_the_url() {
    let image = ImageRef {
        version: "40.2".into(),
        url: "https://images.example/os-40.2".into(),
        checksum: format!("sha256:{}", csum(2)),
        size: None,
        reboot_required: None,
        chunk_index: None,
    };
    let t = OstreeTarget::from_progress(&image, None).unwrap();
    assert_eq!(t.reference, "https://images.example/os-40.2");
    let ovm = serde_json::json!({"ostree": {"reference": "ostree-unverified-registry:quay.io/x/os:40.2"}});
    let t = OstreeTarget::from_progress(&image, Some(&ovm)).unwrap();
    assert_eq!(t.reference, "ostree-unverified-registry:quay.io/x/os:40.2");
    assert_eq!(t.version.as_deref(), Some("40.2"));
    let bad = serde_json::json!({"ostree": {"reference": 7}});
    let err = OstreeTarget::from_progress(&image, Some(&bad))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("osVersionManagement.ostree.reference must be a non-empty string, got 7"),
        "{err}"
    );
    // `ostree admin deploy` takes no `--`: an option-like reference is refused here.
    let option = serde_json::json!({"ostree": {"reference": "--os=other"}});
    let err = OstreeTarget::from_progress(&image, Some(&option)).unwrap_err();
    assert_eq!(err.reason(), FailureReason::OstreeInvalidTarget);
}

#[test]
fn tool_names_round_trip() {
    for t in OstreeTool::ALL {
        assert_eq!(t.as_str().parse::<OstreeTool>().unwrap(), t);
    }
    assert!(
        "yum"
            .parse::<OstreeTool>()
            .unwrap_err()
            .contains("bootc-switch")
    );
}

fn kargs(add: &[&str], remove: &[&str]) -> KernelArguments {
    KernelArguments {
        add: add.iter().map(|s| s.to_string()).collect(),
        remove: remove.iter().map(|s| s.to_string()).collect(),
    }
}

#[test]
fn kernel_arguments_ride_on_each_tools_staging() {
    let k = kargs(&["console=ttyS0", "quiet"], &["rhgb"]);
    let t = target("fedora:fedora/stable", "40.2", None).with_kernel_arguments(&k);
    let mut admin = OstreeConfig::new(OstreeTool::OstreeAdminDeploy);
    admin.pull = false;
    let cmds = stage_commands(&admin, &t).unwrap();
    assert_eq!(
        cmds.iter().map(CommandSpec::display).collect::<Vec<_>>(),
        vec![
            "ostree admin deploy --stage --karg-append=console=ttyS0 --karg-append=quiet \
             --karg-delete=rhgb fedora:fedora/stable"
        ]
    );
    let rpm = OstreeConfig::new(OstreeTool::RpmOstreeRebase);
    let cmds = stage_commands(&rpm, &t).unwrap();
    assert_eq!(
        cmds.iter().map(CommandSpec::display).collect::<Vec<_>>(),
        vec![
            "rpm-ostree rebase -- fedora:fedora/stable",
            "rpm-ostree kargs --append=console=ttyS0 --append=quiet --delete-if-present=rhgb",
        ]
    );
    let bootc = OstreeConfig::new(OstreeTool::BootcSwitch);
    let err = stage_commands(&bootc, &t).unwrap_err();
    assert_eq!(err.reason(), FailureReason::OstreeInvalidTarget);
    assert!(err.to_string().contains("kargs.d"), "{err}");
    // Without kernel arguments no tool gets any extra command.
    let plain = target("fedora:fedora/stable", "40.2", None);
    assert_eq!(stage_commands(&rpm, &plain).unwrap().len(), 1);
}

fn live_target(version: &str, checksum: Option<String>) -> Target {
    Target {
        node: "node-1".into(),
        image: ImageRef {
            version: version.into(),
            url: "fedora:fedora/stable".into(),
            checksum: checksum.unwrap_or_default(),
            size: None,
            reboot_required: None,
            chunk_index: None,
        },
        current_version: Some("40.1".into()),
        os_version_management: Some(serde_json::json!({"ostree": {"rebootRequired": false}})),
        kernel_arguments: KernelArguments::default(),
        staged_reboot_required: None,
        rollback: false,
    }
}

#[test]
fn scripted_rpm_ostree_applies_live_and_names_the_previous_deployment_as_stale() {
    let (fake, backend) = Fake::new(OstreeTool::RpmOstreeRebase);
    let t = live_target("40.2", Some(csum(2)));
    let staged = DeployBackend::stage(&backend, &t).unwrap();
    assert!(
        matches!(
            &staged,
            Staging::Staged {
                reboot_required: false,
                ..
            }
        ),
        "{staged:?}"
    );
    let applied = DeployBackend::apply(&backend, &t).unwrap();
    assert!(!applied.reboot_required, "{applied:?}");
    assert_eq!(applied.current_version.as_deref(), Some("40.2"));
    assert_eq!(
        applied.stale,
        vec![
            StaleRef::Path(format!("/ostree/deploy/fedora/deploy/{}.0", csum(1))),
            StaleRef::DeploymentChecksum(csum(1)),
        ]
    );
    assert!(
        fake.stage_calls()
            .contains(&vec!["apply-live".into(), "--allow-replacement".into()])
    );
    assert_eq!(
        DeployBackend::running_version(&backend).unwrap().as_deref(),
        Some("40.2")
    );
    // Applying again (a restarted agent) runs nothing new; staging finds it running.
    let n = fake.stage_calls().len();
    DeployBackend::apply(&backend, &t).unwrap();
    assert!(matches!(
        DeployBackend::stage(&backend, &t).unwrap(),
        Staging::AlreadyCurrent { .. }
    ));
    assert_eq!(fake.stage_calls().len(), n);
}

#[test]
fn scripted_a_live_apply_that_does_not_reach_the_target_fails() {
    let (fake, backend) = Fake::new(OstreeTool::RpmOstreeRebase);
    let t = live_target("40.2", Some(csum(2)));
    DeployBackend::stage(&backend, &t).unwrap();
    fake.set("fail-live", "");
    let err = DeployBackend::apply(&backend, &t).unwrap_err();
    assert_eq!(err.reason(), FailureReason::LiveUpdateIncomplete);
    assert!(
        err.to_string().contains("running system is fedora"),
        "{err}"
    );
}

#[test]
fn scripted_tools_without_a_live_switch_reboot_even_when_no_reboot_is_needed() {
    for tool in [OstreeTool::BootcSwitch, OstreeTool::OstreeAdminDeploy] {
        let (_fake, mut backend) = Fake::new(tool);
        backend.config.pull = false;
        let mut t = live_target("40.2", Some(csum(2)));
        t.image.url = "quay.io/example/os:40.2".into();
        match DeployBackend::stage(&backend, &t).unwrap() {
            Staging::Staged {
                reboot_required,
                message,
                ..
            } => {
                assert!(reboot_required, "{tool}");
                assert!(
                    message.contains("cannot switch deployments live"),
                    "{message}"
                );
            }
            other => panic!("{tool}: {other:?}"),
        }
        let applied = DeployBackend::apply(&backend, &t).unwrap();
        assert!(
            applied.reboot_required && applied.stale.is_empty(),
            "{tool}"
        );
    }
}

#[test]
fn the_catalog_entry_decides_before_os_version_management() {
    use live::{LiveRequest as R, LiveSource as S};
    let ovm = |v| serde_json::json!({"ostree": {"rebootRequired": v}});
    let image = |r: Option<bool>| ImageRef {
        reboot_required: r,
        ..ImageRef::default()
    };
    let cases = [
        (None, None, R::Reboot),
        (None, Some(ovm(serde_json::json!(true))), R::Reboot),
        (
            None,
            Some(ovm(serde_json::json!(false))),
            R::Live(S::OsVersionManagement),
        ),
        (None, Some(ovm(serde_json::json!("auto"))), R::IfToolAllows),
        (Some(false), None, R::Live(S::CatalogEntry)),
        (
            Some(false),
            Some(ovm(serde_json::json!(true))),
            R::Live(S::CatalogEntry),
        ),
        // The entry's `true` wins over an OSUpgrade asking for no reboot or for `auto`.
        (Some(true), Some(ovm(serde_json::json!(false))), R::Reboot),
        (Some(true), Some(ovm(serde_json::json!("auto"))), R::Reboot),
    ];
    for (entry, o, want) in cases {
        assert_eq!(
            live::requested(&image(entry), o.as_ref()).unwrap(),
            want,
            "entry {entry:?}, osVersionManagement {o:?}"
        );
    }
    let err =
        live::requested(&image(Some(false)), Some(&ovm(serde_json::json!("no")))).unwrap_err();
    assert!(
        err.to_string()
            .contains("rebootRequired must be true, false or \"auto\""),
        "{err}"
    );
}

#[test]
fn live_needs_a_tool_that_can_and_no_kernel_argument_change() {
    use live::{LivePlan, LiveRequest as R, LiveSource as S};
    let rpm = OstreeTool::RpmOstreeRebase;
    let t = |live| target("fedora:fedora/stable", "40.2", None).with_live(live);
    assert_eq!(live::plan(rpm, &t(R::Reboot)), LivePlan::Reboot(None));
    assert_eq!(
        live::plan(rpm, &t(R::Live(S::CatalogEntry))),
        LivePlan::Live {
            allow_replacement: true
        }
    );
    assert_eq!(live::plan(rpm, &t(R::IfToolAllows)), LivePlan::AskTool);
    let karg = KernelArguments {
        add: vec!["quiet".into()],
        remove: vec![],
    };
    for live in [R::Live(S::OsVersionManagement), R::IfToolAllows] {
        match live::plan(rpm, &t(live).with_kernel_arguments(&karg)) {
            LivePlan::Reboot(Some(why)) => assert!(why.contains("only at a boot"), "{why}"),
            other => panic!("{other:?}"),
        }
        match live::plan(OstreeTool::OstreeAdminDeploy, &t(live)) {
            LivePlan::Reboot(Some(why)) => assert!(why.contains("cannot switch"), "{why}"),
            other => panic!("{other:?}"),
        }
    }
}

/// `rebootRequired: auto`: rpm-ostree's package diff decides at staging, and the live
/// switch runs without `--allow-replacement` only when staging said so.
#[test]
fn scripted_rpm_ostree_auto_goes_live_only_when_packages_are_only_added() {
    let (fake, backend) = Fake::new(OstreeTool::RpmOstreeRebase);
    let mut t = live_target("40.2", Some(csum(2)));
    t.os_version_management = Some(serde_json::json!({"ostree": {"rebootRequired": "auto"}}));
    fake.set("pkgdiff", r#"[["htop", 0, {}]]"#);
    let (reboot_required, message) = staged(DeployBackend::stage(&backend, &t).unwrap());
    assert!(!reboot_required, "{message}");
    assert!(message.contains("only adds packages"), "{message}");
    // Applying before staging's word reached the status reboots instead.
    assert!(DeployBackend::apply(&backend, &t).unwrap().reboot_required);
    t.staged_reboot_required = Some(false);
    let applied = DeployBackend::apply(&backend, &t).unwrap();
    assert!(
        !applied.reboot_required && !applied.stale.is_empty(),
        "{applied:?}"
    );
    assert!(fake.stage_calls().contains(&vec!["apply-live".into()]));
    assert!(
        !fake
            .stage_calls()
            .iter()
            .any(|c| c.contains(&"--allow-replacement".to_string()))
    );

    let (fake, backend) = Fake::new(OstreeTool::RpmOstreeRebase);
    t.staged_reboot_required = None;
    fake.set("pkgdiff", r#"[["htop", 0, {}], ["kernel-core", 2, {}]]"#);
    let (reboot_required, message) = staged(DeployBackend::stage(&backend, &t).unwrap());
    assert!(reboot_required, "{message}");
    assert!(
        message.contains("kernel-core upgraded") && message.contains("--allow-replacement"),
        "{message}"
    );
    t.staged_reboot_required = Some(true);
    let applied = DeployBackend::apply(&backend, &t).unwrap();
    assert!(applied.reboot_required && applied.stale.is_empty());
    assert!(!fake.stage_calls().iter().any(|c| c[0] == "apply-live"));
}

/// A staging that went live but whose package diff changed before the apply: rpm-ostree
/// refuses the replacement and the node is not rebooted undrained.
#[test]
fn scripted_rpm_ostree_refusing_a_replacement_fails_the_live_apply() {
    let (fake, backend) = Fake::new(OstreeTool::RpmOstreeRebase);
    let mut t = live_target("40.2", Some(csum(2)));
    t.os_version_management = Some(serde_json::json!({"ostree": {"rebootRequired": "auto"}}));
    fake.set("pkgdiff", "[]");
    assert!(!staged(DeployBackend::stage(&backend, &t).unwrap()).0);
    fake.set("pkgdiff", r#"[["nano", 1, {}]]"#);
    t.staged_reboot_required = Some(false);
    let err = DeployBackend::apply(&backend, &t).unwrap_err();
    assert_eq!(err.reason(), FailureReason::OstreeCommandFailed);
    assert!(err.to_string().contains("would replace"), "{err}");
}

fn staged(s: Staging) -> (bool, String) {
    match s {
        Staging::Staged {
            reboot_required,
            message,
            ..
        } => (reboot_required, message),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_deployment_is_the_target_by_checksum_not_by_version() {
    let forged = Deployment {
        checksum: Some(csum(9)),
        version: Some("40.2".into()),
        ..Default::default()
    };
    // Anyone can put "40.2" in a commit's version: with a checksum, only it counts.
    assert!(!forged.is(&target("fedora:fedora/stable", "40.2", Some(csum(2)))));
    let real = Deployment {
        checksum: Some(csum(2)),
        version: Some("40.1".into()),
        ..Default::default()
    };
    assert!(real.is(&target(
        "fedora:fedora/stable",
        "40.2",
        Some(format!("sha256:{}", csum(2)))
    )));
    // Without a checksum the version is all there is.
    assert!(forged.is(&target("fedora:fedora/stable", "40.2", None)));
}

#[test]
fn staging_reports_live_only_on_a_plan_or_verdict_that_allows_it() {
    use live::{LivePlan, LiveRequest as R, LiveSource as S};
    use pkgdiff::Verdict;
    let rpm = OstreeTool::RpmOstreeDeploy;
    let t = |live| target("fedora:fedora/stable", "40.2", None).with_live(live);
    let live = LivePlan::Live {
        allow_replacement: true,
    };
    let (reboot, m) = live::after_staging(rpm, &t(R::Live(S::CatalogEntry)), &live, None);
    assert!(!reboot && m.contains("catalog entry says no reboot"), "{m}");
    let auto = t(R::IfToolAllows);
    let (reboot, m) = live::after_staging(rpm, &auto, &LivePlan::AskTool, Some(&Verdict::Additive));
    assert!(!reboot && m.contains("only adds packages"), "{m}");
    let replaces = Verdict::Replaces("nano removed".into());
    let (reboot, m) = live::after_staging(rpm, &auto, &LivePlan::AskTool, Some(&replaces));
    assert!(reboot && m.contains("nano removed"), "{m}");
    let (reboot, _) = live::after_staging(rpm, &auto, &LivePlan::AskTool, None);
    assert!(reboot, "no verdict, no live switch");
    let why = LivePlan::Reboot(Some("because".into()));
    let (reboot, m) = live::after_staging(rpm, &auto, &why, Some(&Verdict::Additive));
    assert!(reboot && m.starts_with("because"), "{m}");
}

/// A fleet rollback of a node that went from 40.1 to 40.2 with `tool`'s own rollback: the
/// old deployment is staged again without a fetch, and booted by the reboot.
fn scripted_rollback_restores_the_previous_deployment(tool: OstreeTool) {
    let (fake, backend) = Fake::new(tool);
    fake.set("booted", &csum(2));
    fake.set("rollback", &csum(1));
    let mut back = target("fedora:fedora/stable", "40.1", Some(csum(1)));
    back.rollback = true;
    let out = backend.stage(&back).unwrap();
    assert!(
        matches!(out, StageOutcome::Restored(ref d) if d.checksum == Some(csum(1))),
        "{out:?}"
    );
    assert_eq!(
        fake.stage_calls(),
        vec![vec!["rollback"]],
        "nothing fetched"
    );
    // A restarted agent finds it staged and runs nothing more.
    assert!(matches!(
        backend.stage(&back).unwrap(),
        StageOutcome::AlreadyStaged(_)
    ));
    assert_eq!(fake.stage_calls().len(), 1);
    fake.reboot(false);
    assert!(matches!(
        backend.confirm(&back).unwrap(),
        BootCheck::OnTarget(ref d) if d.checksum == Some(csum(1))
    ));
}

#[test]
fn scripted_rpm_ostree_rollback_returns_to_the_previous_deployment() {
    scripted_rollback_restores_the_previous_deployment(OstreeTool::RpmOstreeRebase);
}

#[test]
fn scripted_bootc_rollback_returns_to_the_previous_deployment() {
    scripted_rollback_restores_the_previous_deployment(OstreeTool::BootcSwitch);
}

#[test]
fn scripted_rollback_without_the_old_deployment_stages_from_the_catalog() {
    let (fake, backend) = Fake::new(OstreeTool::RpmOstreeRebase);
    fake.set("booted", &csum(3));
    fake.set("rollback", "");
    let mut back = target("fedora:fedora/stable", "40.2", Some(csum(2)));
    back.rollback = true;
    let out = backend.stage(&back).unwrap();
    assert!(matches!(out, StageOutcome::Staged(_)), "{out:?}");
    assert_eq!(
        fake.stage_calls(),
        vec![vec!["rebase", "--", "fedora:fedora/stable"]]
    );
}
