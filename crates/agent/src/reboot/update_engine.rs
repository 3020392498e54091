//! CLUO's signal: update_engine (Container Linux, Flatcar) answers `GetStatus` on D-Bus
//! with its current operation; `UPDATE_STATUS_UPDATED_NEED_REBOOT` means the update is
//! installed in the other partition and only the reboot is left. Asked through zbus.

use futures::future::BoxFuture;
use osroll_api::{RebootSignal, RebootSource as SourceKind};

use super::{RebootSource, SourceError, UpdateEngineBus};

/// update_engine's bus name.
pub const BUS_NAME: &str = "com.coreos.update1";
/// Its object path.
pub const OBJECT_PATH: &str = "/com/coreos/update1";
/// Its interface.
pub const INTERFACE: &str = "com.coreos.update1.Manager";
/// The operation that means "reboot needed".
pub const NEED_REBOOT: &str = "UPDATE_STATUS_UPDATED_NEED_REBOOT";

/// update_engine's manager interface, as far as the agent uses it.
#[zbus::proxy(
    interface = "com.coreos.update1.Manager",
    default_service = "com.coreos.update1",
    default_path = "/com/coreos/update1"
)]
pub trait Manager {
    /// `(last_checked_time, progress, current_operation, new_version, new_size)`.
    fn get_status(&self) -> zbus::Result<(i64, f64, String, String, i64)>;
}

/// What update_engine's current operation and new version say.
pub fn engine_signal(current_operation: &str, new_version: &str) -> Option<RebootSignal> {
    (current_operation == NEED_REBOOT).then(|| RebootSignal {
        source: SourceKind::UpdateEngine,
        detail: format!("update_engine reports {NEED_REBOOT}"),
        version: Some(new_version.to_string()).filter(|v| !v.is_empty() && v != "0.0.0"),
    })
}

/// Asks update_engine on `bus`.
#[derive(Clone, Debug)]
pub struct UpdateEngine {
    bus: UpdateEngineBus,
}

impl UpdateEngine {
    /// update_engine on `bus`.
    pub fn new(bus: UpdateEngineBus) -> Self {
        UpdateEngine { bus }
    }

    fn bus_name(&self) -> String {
        match &self.bus {
            UpdateEngineBus::System => "the system bus".into(),
            UpdateEngineBus::Address(a) => a.clone(),
        }
    }

    async fn status(&self) -> zbus::Result<(i64, f64, String, String, i64)> {
        let conn = match &self.bus {
            UpdateEngineBus::System => zbus::Connection::system().await?,
            UpdateEngineBus::Address(a) => {
                zbus::connection::Builder::address(a.as_str())?
                    .build()
                    .await?
            }
        };
        ManagerProxy::new(&conn).await?.get_status().await
    }
}

impl RebootSource for UpdateEngine {
    fn kind(&self) -> SourceKind {
        SourceKind::UpdateEngine
    }

    fn check(&self) -> BoxFuture<'_, Result<Option<RebootSignal>, SourceError>> {
        Box::pin(async move {
            let (_, _, op, version, _) =
                self.status()
                    .await
                    .map_err(|source| SourceError::UpdateEngine {
                        bus: self.bus_name(),
                        source: Box::new(source),
                    })?;
            Ok(engine_signal(&op, &version))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_need_reboot_signals_and_carries_the_new_version() {
        let s = engine_signal(NEED_REBOOT, "3815.2.0").unwrap();
        assert_eq!(s.source, SourceKind::UpdateEngine);
        assert_eq!(s.version.as_deref(), Some("3815.2.0"));
        assert_eq!(engine_signal(NEED_REBOOT, "0.0.0").unwrap().version, None);
        for op in [
            "UPDATE_STATUS_IDLE",
            "UPDATE_STATUS_DOWNLOADING",
            "UPDATE_STATUS_FINALIZING",
        ] {
            assert_eq!(engine_signal(op, "3815.2.0"), None, "{op}");
        }
    }
}
