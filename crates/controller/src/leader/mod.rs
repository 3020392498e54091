//! Leader election on a coordination.k8s.io/v1 Lease, so that of several replicas exactly
//! one acts at a time.
//!
//! The decision is the pure function [`decide`]. A follower judges expiry by its own
//! clock, from the moment it first saw the current lease record (as client-go does), so
//! clock skew between replicas cannot make two of them leaders. Every write carries the
//! resourceVersion it was decided on: of two replicas racing for an expired lease, one
//! gets 409 and stays a follower. A leader that cannot renew within its renew deadline
//! (shorter than the lease duration) stops acting before anyone else may take over.

use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};

use crate::cluster::ApiError;

/// The parts of a Lease the decision needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseView {
    /// Current holder; `None` or empty when released.
    pub holder: Option<String>,
    /// How long the holder's claim lasts after each renewal.
    pub duration: Duration,
    /// Number of times the lease changed hands.
    pub transitions: i32,
    /// Identifies this exact record (resourceVersion).
    pub version: String,
}

/// What to do with the lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// No lease exists: create it, held by us.
    Create,
    /// We hold it: renew.
    Renew,
    /// Released or expired: take it over.
    Acquire,
    /// Someone else holds it; look again after the given time.
    Follow {
        /// The holder.
        holder: String,
        /// When it would expire if not renewed, from now.
        expires_in: Duration,
    },
}

/// Decide, as replica `me`, given the lease (if any), the local time at which we first
/// saw this exact record, and the local time now.
pub fn decide(
    me: &str,
    lease: Option<&LeaseView>,
    first_seen: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Decision {
    let Some(l) = lease else {
        return Decision::Create;
    };
    match l.holder.as_deref().filter(|h| !h.is_empty()) {
        None => Decision::Acquire,
        Some(h) if h == me => Decision::Renew,
        Some(h) => {
            let expiry = first_seen + chrono::Duration::from_std(l.duration).unwrap_or_default();
            if now >= expiry {
                Decision::Acquire
            } else {
                Decision::Follow {
                    holder: h.to_string(),
                    expires_in: (expiry - now).to_std().unwrap_or_default(),
                }
            }
        }
    }
}

/// Whether a leader whose last successful renewal was at `last_renew` may still act.
pub fn still_leading(
    last_renew: DateTime<Utc>,
    now: DateTime<Utc>,
    renew_deadline: Duration,
) -> bool {
    (now - last_renew)
        .to_std()
        .is_ok_and(|d| d < renew_deadline)
}

/// View of a Lease object.
pub fn view(l: &Lease) -> LeaseView {
    let spec = l.spec.clone().unwrap_or_default();
    LeaseView {
        holder: spec.holder_identity,
        duration: Duration::from_secs(spec.lease_duration_seconds.unwrap_or(15).max(1) as u64),
        transitions: spec.lease_transitions.unwrap_or(0),
        version: l.metadata.resource_version.clone().unwrap_or_default(),
    }
}

/// Lease timing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// Lease duration written into the Lease.
    pub duration: Duration,
    /// How often the leader renews and a follower looks.
    pub retry: Duration,
    /// A leader that has not renewed for this long stops acting.
    pub renew_deadline: Duration,
}

impl Timing {
    /// Defaults derived from a lease duration: renew every third, give up at two thirds.
    pub fn from_duration(duration: Duration) -> Timing {
        Timing {
            duration,
            retry: duration / 3,
            renew_deadline: duration * 2 / 3,
        }
    }
}

/// One replica's side of the election, on a real Lease.
pub struct Elector {
    api: Api<Lease>,
    name: String,
    me: String,
    timing: Timing,
    seen: Option<(String, DateTime<Utc>)>,
}

fn micro(t: DateTime<Utc>) -> MicroTime {
    let ts =
        k8s_openapi::jiff::Timestamp::from_microsecond(t.timestamp_micros()).unwrap_or_default();
    MicroTime(ts)
}

impl Elector {
    /// Elect on Lease `namespace/name` as identity `me`.
    pub fn new(
        client: kube::Client,
        namespace: &str,
        name: &str,
        me: &str,
        timing: Timing,
    ) -> Elector {
        Elector {
            api: Api::namespaced(client, namespace),
            name: name.into(),
            me: me.into(),
            timing,
            seen: None,
        }
    }

    /// The timing in use.
    pub fn timing(&self) -> Timing {
        self.timing
    }

    fn spec(
        &self,
        now: DateTime<Utc>,
        transitions: i32,
        acquire: bool,
        old: Option<&LeaseSpec>,
    ) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.me.clone()),
            lease_duration_seconds: Some(self.timing.duration.as_secs().max(1) as i32),
            acquire_time: if acquire {
                Some(micro(now))
            } else {
                old.and_then(|o| o.acquire_time.clone())
            },
            renew_time: Some(micro(now)),
            lease_transitions: Some(transitions),
            ..Default::default()
        }
    }

    /// Look at the lease and act on it. `Ok(true)` while we hold it.
    pub async fn try_once(&mut self, now: DateTime<Utc>) -> Result<bool, ApiError> {
        let current = self.api.get_opt(&self.name).await.map_err(ApiError::from)?;
        let v = current.as_ref().map(view);
        let first_seen = match (&v, &self.seen) {
            (Some(v), Some((ver, at))) if *ver == v.version => *at,
            (Some(v), _) => {
                self.seen = Some((v.version.clone(), now));
                now
            }
            (None, _) => now,
        };
        let decision = decide(&self.me, v.as_ref(), first_seen, now);
        let result = match decision {
            Decision::Follow { .. } => return Ok(false),
            Decision::Create => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        ..Default::default()
                    },
                    spec: Some(self.spec(now, 0, true, None)),
                };
                self.api
                    .create(&PostParams::default(), &lease)
                    .await
                    .map(|_| ())
            }
            Decision::Renew | Decision::Acquire => {
                let mut lease = current.expect("renew and acquire decide on an existing lease");
                let v = v.expect("view of an existing lease");
                let acquire = decision == Decision::Acquire;
                let transitions = if acquire {
                    v.transitions + 1
                } else {
                    v.transitions
                };
                lease.spec = Some(self.spec(now, transitions, acquire, lease.spec.as_ref()));
                self.api
                    .replace(&self.name, &PostParams::default(), &lease)
                    .await
                    .map(|_| ())
            }
        };
        match result.map_err(ApiError::from) {
            Ok(()) => Ok(true),
            Err(ApiError::Conflict(_) | ApiError::AlreadyExists(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Give the lease up (on shutdown) so a successor need not wait for it to expire.
    pub async fn release(&self) -> Result<(), ApiError> {
        let Some(mut lease) = self.api.get_opt(&self.name).await.map_err(ApiError::from)? else {
            return Ok(());
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        if spec.holder_identity.as_deref() != Some(&self.me) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        self.api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
            .map_err(ApiError::from)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
