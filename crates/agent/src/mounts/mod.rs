//! Pods to restart after an update applied without a reboot.
//!
//! A live update switches the host to a new deployment, but containers started before
//! it keep the bind mounts they were given: a pod that mounts `/etc/cni/net.d` from the
//! host still sees the directory of the previous deployment, and whatever it writes
//! there never reaches the host. Such pods must be restarted, once each; after a reboot
//! every mount is made afresh and nothing needs restarting.
//!
//! - [`procfs`] reads the mount table and pod of every process under a (configurable)
//!   proc root;
//! - [`decide`] picks, as a pure function, the pods holding a mount into the previous
//!   deployment plus those matching the OSUpgrade's `restartOnLiveUpdate` selector;
//! - [`restart`] deletes them through the Kubernetes API, once, recording each deletion
//!   so a restarted agent does not delete again.

pub mod decide;
pub mod procfs;
pub mod restart;

pub use decide::{
    PodInfo, PodRef, PodRestart, RestartInput, RestartPlan, SkippedPod, StaleRef, plan_restarts,
};
pub use procfs::{
    MountEntry, ProcessMounts, own_pod_uid, parse_mountinfo, pod_uid_from_cgroup, scan_proc,
};
pub use restart::{
    FileLedger, KubePods, LiveRestartJob, LiveRestartReport, MemoryLedger, MountsError, PodApi,
    RestartLedger, pod_info, restart_after_live_update,
};
