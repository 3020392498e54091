//! The leader-election decision over Lease views and local times.

use super::*;

fn t(s: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_700_000_000 + s, 0).unwrap()
}

fn lease(holder: Option<&str>, version: &str) -> LeaseView {
    LeaseView {
        holder: holder.map(String::from),
        duration: Duration::from_secs(15),
        transitions: 3,
        version: version.into(),
    }
}

#[test]
fn create_renew_acquire_follow() {
    assert_eq!(decide("a", None, t(0), t(0)), Decision::Create);
    assert_eq!(
        decide("a", Some(&lease(Some("a"), "1")), t(0), t(100)),
        Decision::Renew
    );
    assert_eq!(
        decide("a", Some(&lease(None, "1")), t(0), t(0)),
        Decision::Acquire,
        "released"
    );
    assert_eq!(
        decide("a", Some(&lease(Some(""), "1")), t(0), t(0)),
        Decision::Acquire
    );
    assert_eq!(
        decide("a", Some(&lease(Some("b"), "1")), t(0), t(10)),
        Decision::Follow {
            holder: "b".into(),
            expires_in: Duration::from_secs(5)
        }
    );
    assert_eq!(
        decide("a", Some(&lease(Some("b"), "1")), t(0), t(15)),
        Decision::Acquire
    );
}

#[test]
fn expiry_is_judged_from_when_we_first_saw_the_record() {
    // The holder renewed (new version) at t=20 by our clock: 15 s from then, whatever
    // its own clock wrote into renewTime.
    assert!(matches!(
        decide("a", Some(&lease(Some("b"), "2")), t(20), t(30)),
        Decision::Follow { .. }
    ));
    assert_eq!(
        decide("a", Some(&lease(Some("b"), "2")), t(20), t(35)),
        Decision::Acquire
    );
}

#[test]
fn a_leader_stops_before_the_lease_can_expire() {
    let timing = Timing::from_duration(Duration::from_secs(15));
    assert_eq!(timing.retry, Duration::from_secs(5));
    assert!(timing.renew_deadline < timing.duration);
    assert!(still_leading(t(0), t(9), timing.renew_deadline));
    assert!(!still_leading(t(0), t(10), timing.renew_deadline));
    // A follower that saw the last renewal at t=0 cannot take over before t=15,
    // after the leader has stopped at t=10.
    assert!(matches!(
        decide("b", Some(&lease(Some("a"), "9")), t(0), t(14)),
        Decision::Follow { .. }
    ));
}

#[test]
fn view_reads_the_lease() {
    let l = Lease {
        metadata: ObjectMeta {
            resource_version: Some("77".into()),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some("x".into()),
            lease_duration_seconds: Some(4),
            lease_transitions: Some(2),
            ..Default::default()
        }),
    };
    assert_eq!(
        view(&l),
        LeaseView {
            holder: Some("x".into()),
            duration: Duration::from_secs(4),
            transitions: 2,
            version: "77".into()
        }
    );
}
