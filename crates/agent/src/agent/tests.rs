//! The executor with an injected deployment backend and injected hooks: what each
//! outcome of the backend and of the hooks becomes in the status, and which backend
//! calls a failure prevents.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use osroll_api::progress::FailureReason;
use osroll_api::{ImageRef, OSUpgradeProgressStatus, ProgressPhase};

use super::{Agent, AgentConfig};
use crate::backends::driver::{
    Applied, BackendError, Confirmed, DeployBackend, Source, Staging as ToolStaging, Target,
};
use crate::backends::plugin::PluginError;
use crate::firstboot::{FirstBootExit, MemorySource, PROGRESS_NAME, Wanted, firstboot_progress};
use crate::hooks::{HookContext, HookError, HookKind, HookRun, InstallHooks};
use crate::simhost::SimHost;

/// A deployment tool that records its calls and answers as told.
#[derive(Default)]
struct FakeTool {
    calls: Mutex<Vec<&'static str>>,
    refuse_stage: bool,
    live: bool,
}

impl FakeTool {
    fn called(&self, what: &'static str) {
        self.calls.lock().unwrap().push(what);
    }
    /// The calls that change something (reading the running version does not).
    fn calls(&self) -> Vec<&'static str> {
        let mut c = self.calls.lock().unwrap().clone();
        c.retain(|&c| c != "running_version");
        c
    }
}

impl DeployBackend for FakeTool {
    fn kind(&self) -> &'static str {
        "fake"
    }
    fn running_version(&self) -> Result<Option<String>, BackendError> {
        self.called("running_version");
        Ok(Some("1.0".into()))
    }
    fn stage(&self, t: &Target) -> Result<ToolStaging, BackendError> {
        self.called("stage");
        if self.refuse_stage {
            return Err(PluginError::Refused {
                path: PathBuf::from("/fake"),
                action: "stage",
                error: "disk full".into(),
            }
            .into());
        }
        Ok(ToolStaging::Staged {
            reboot_required: !self.live,
            current_version: Some("1.0".into()),
            message: format!("staged {}", t.image.version),
        })
    }
    fn apply(&self, t: &Target) -> Result<Applied, BackendError> {
        self.called("apply");
        Ok(Applied {
            reboot_required: !self.live,
            current_version: Some(t.image.version.clone()),
            message: format!("applied {}", t.image.version),
            stale: vec![],
        })
    }
    fn sources(&self, _t: &Target) -> Result<Vec<Source>, BackendError> {
        Ok(Vec::new())
    }
    fn confirm(&self, t: &Target) -> Result<Confirmed, BackendError> {
        self.called("confirm");
        Ok(Confirmed::OnTarget {
            version: Some(t.image.version.clone()),
            message: "confirmed".into(),
        })
    }
}

/// Hooks that record what they were told; the pre-install one may fail.
#[derive(Default)]
struct FakeHooks {
    ran: Mutex<Vec<(HookKind, HookContext)>>,
    fail_pre: bool,
}

impl InstallHooks for FakeHooks {
    fn run(&self, kind: HookKind, ctx: &HookContext) -> Result<Option<HookRun>, HookError> {
        self.ran.lock().unwrap().push((kind, ctx.clone()));
        let path = PathBuf::from(format!("/hooks/{kind}"));
        if self.fail_pre && kind == HookKind::PreInstall {
            return Err(HookError::Failed {
                path,
                code: 3,
                tail: "no space".into(),
                output: "no space".into(),
            });
        }
        Ok(Some(HookRun {
            path,
            output: format!("{kind} says hello"),
            truncated: false,
            elapsed: Duration::ZERO,
        }))
    }
}

/// Drive one approved progress to 2.0 through `tool` and `hooks`; its final status.
async fn update(tool: Arc<FakeTool>, hooks: Arc<FakeHooks>) -> OSUpgradeProgressStatus {
    let dir = tempfile::tempdir().unwrap();
    let host = SimHost::create(&dir.path().join("host"), 4096, "1.0").unwrap();
    let wanted = Wanted {
        image: ImageRef {
            version: "2.0".into(),
            ..Default::default()
        },
        origin: "test".into(),
        ..Wanted::default()
    };
    let source = Arc::new(MemorySource::new(firstboot_progress("n1", &wanted)));
    let mut cfg = AgentConfig::new("n1", dir.path().join("state"));
    cfg.resync = Duration::from_millis(10);
    let agent = Agent::new(cfg, source, Arc::new(host))
        .unwrap()
        .with_deploy_backend(tool)
        .with_hooks(hooks);
    let exit = tokio::time::timeout(
        Duration::from_secs(20),
        agent.run_until_finished(PROGRESS_NAME),
    )
    .await
    .expect("the attempt ends")
    .unwrap();
    match exit {
        FirstBootExit::Finished(st) => *st,
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_live_update_runs_both_hooks_and_completes_on_the_target() {
    let tool = Arc::new(FakeTool {
        live: true,
        ..Default::default()
    });
    let hooks = Arc::new(FakeHooks::default());
    let st = update(tool.clone(), hooks.clone()).await;
    assert_eq!(st.phase, Some(ProgressPhase::Completed), "{st:?}");
    assert_eq!(st.current_version.as_deref(), Some("2.0"));
    assert_eq!(st.reboot_required, Some(false));
    let msg = st.message.unwrap();
    assert!(
        msg.starts_with("applied 2.0")
            && msg.contains("post-install hook: /hooks/post-install ran: post-install says hello"),
        "{msg}"
    );
    assert_eq!(tool.calls(), ["stage", "apply"]);
    let ran = hooks.ran.lock().unwrap();
    let kinds: Vec<_> = ran.iter().map(|(k, _)| *k).collect();
    assert_eq!(kinds, [HookKind::PreInstall, HookKind::PostInstall]);
    let ctx = &ran[0].1;
    assert_eq!(
        (
            ctx.from_version.as_deref(),
            ctx.to_version.as_str(),
            ctx.reboot
        ),
        (Some("1.0"), "2.0", false)
    );
}

#[tokio::test]
async fn a_failing_pre_install_hook_fails_before_the_backend_applies() {
    let tool = Arc::new(FakeTool::default());
    let hooks = Arc::new(FakeHooks {
        fail_pre: true,
        ..Default::default()
    });
    let st = update(tool.clone(), hooks).await;
    assert_eq!(st.phase, Some(ProgressPhase::Failed), "{st:?}");
    assert_eq!(
        st.failure_reason.as_deref(),
        Some(FailureReason::HookFailed.as_str())
    );
    let msg = st.message.unwrap();
    assert!(
        msg.contains("pre-install hook failed") && msg.contains("exited with code 3"),
        "{msg}"
    );
    assert!(!tool.calls().contains(&"apply"), "{:?}", tool.calls());
}

#[tokio::test]
async fn a_backend_refusal_keeps_its_reason_and_stops_the_attempt() {
    let tool = Arc::new(FakeTool {
        refuse_stage: true,
        ..Default::default()
    });
    let hooks = Arc::new(FakeHooks::default());
    let st = update(tool.clone(), hooks.clone()).await;
    assert_eq!(st.phase, Some(ProgressPhase::Failed), "{st:?}");
    assert_eq!(st.failure_reason.as_deref(), Some("PluginRefused"));
    assert!(st.message.unwrap().contains("disk full"));
    assert_eq!(tool.calls(), ["stage"]);
    assert!(
        hooks.ran.lock().unwrap().is_empty(),
        "no hook before a staged update"
    );
}
