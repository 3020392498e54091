//! osroll's test cluster: a Kubernetes-compatible test API server, kubelet-lite nodes and
//! helpers for cluster tests. It exists so the controller and agents can be exercised end
//! to end through the real Kubernetes client and `kubectl` where no real cluster exists.
//! It is a stand-in for tests and demos, never a deployment target; `README.md` lists
//! exactly what the server implements and what it does not.

pub mod demo;
pub mod kubelet;
pub mod rbac;
pub mod server;
pub mod taints;
pub mod testing;
pub mod workloads;

pub use kubelet::{Kubelet, KubeletConfig};
pub use server::{AuditEntry, ServerConfig, TestServer};
