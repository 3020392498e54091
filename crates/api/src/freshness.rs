//! Freshness of a signed catalog, in the style of TUF's timestamp role: the signature's
//! trusted comment carries a serial that only grows and an expiry.
//!
//! Without them an old catalog, signed by a key that is still trusted, stays valid for
//! ever: whoever can replay it rolls the fleet back to a version later blocked (rollback)
//! or keeps it from ever seeing a newer one (freeze). `osroll catalog sign` writes
//! [`comment`]; the controller and the agent read it back with [`check`], refusing an
//! expired catalog and one older than the newest serial they have accepted.

use k8s_openapi::jiff::Timestamp;

/// What the trusted comment of a catalog signature promises.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Freshness {
    /// Grows with every catalog the signer publishes.
    pub serial: u64,
    /// After this instant the catalog is refused.
    pub expires: Timestamp,
}

/// The first word of a trusted comment written by [`comment`].
const TAG: &str = "osroll-catalog";

/// The trusted comment for `freshness`: `osroll-catalog serial=7 expires=2027-01-01T00:00:00Z`.
pub fn comment(freshness: &Freshness) -> String {
    format!(
        "{TAG} serial={} expires={}",
        freshness.serial, freshness.expires
    )
}

/// The freshness a trusted comment carries, when it was written by [`comment`].
pub fn parse(trusted_comment: &str) -> Option<Freshness> {
    let mut words = trusted_comment.split_whitespace();
    if words.next()? != TAG {
        return None;
    }
    let (mut serial, mut expires) = (None, None);
    for w in words {
        match w.split_once('=') {
            Some(("serial", v)) => serial = v.parse::<u64>().ok(),
            Some(("expires", v)) => expires = v.parse::<Timestamp>().ok(),
            _ => {}
        }
    }
    Some(Freshness {
        serial: serial?,
        expires: expires?,
    })
}

/// Why a signed catalog is not fresh.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Stale {
    /// The trusted comment has no `osroll-catalog serial=... expires=...`.
    #[error(
        "the signature's trusted comment {0:?} carries no serial and expiry (sign with `osroll catalog sign`)"
    )]
    Missing(String),
    /// The expiry has passed: a frozen catalog.
    #[error("the catalog (serial {serial}) expired at {expires}; it is {now}")]
    Expired {
        /// The catalog's serial.
        serial: u64,
        /// When it expired.
        expires: Timestamp,
        /// The time of the check.
        now: Timestamp,
    },
    /// Older than a catalog already accepted: a rollback.
    #[error("the catalog's serial {serial} is older than serial {newest}, already accepted")]
    RolledBack {
        /// The catalog's serial.
        serial: u64,
        /// The newest serial accepted so far.
        newest: u64,
    },
}

/// Check a signature's `trusted_comment` at `now` against the `newest` serial accepted.
/// An equal serial passes: the same catalog is read again on every resync.
pub fn check(
    trusted_comment: &str,
    now: Timestamp,
    newest: Option<u64>,
) -> Result<Freshness, Stale> {
    let f = parse(trusted_comment).ok_or_else(|| Stale::Missing(trusted_comment.to_string()))?;
    if f.expires <= now {
        return Err(Stale::Expired {
            serial: f.serial,
            expires: f.expires,
            now,
        });
    }
    match newest {
        Some(newest) if f.serial < newest => Err(Stale::RolledBack {
            serial: f.serial,
            newest,
        }),
        _ => Ok(f),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn the_comment_reads_back() {
        let f = Freshness {
            serial: 42,
            expires: at("2027-01-01T00:00:00Z"),
        };
        assert_eq!(parse(&comment(&f)), Some(f));
        assert_eq!(parse("timestamp:1700000000\tfile:catalog.yaml"), None);
        assert_eq!(
            parse("osroll-catalog serial=x expires=2027-01-01T00:00:00Z"),
            None
        );
    }

    #[test]
    fn expired_older_and_missing_are_refused() {
        let c = comment(&Freshness {
            serial: 5,
            expires: at("2027-01-01T00:00:00Z"),
        });
        let before = at("2026-12-01T00:00:00Z");
        assert!(check(&c, before, Some(5)).is_ok());
        assert!(check(&c, before, Some(4)).is_ok());
        assert!(matches!(
            check(&c, before, Some(6)),
            Err(Stale::RolledBack {
                serial: 5,
                newest: 6
            })
        ));
        assert!(matches!(
            check(&c, at("2027-01-01T00:00:00Z"), None),
            Err(Stale::Expired { .. })
        ));
        assert!(matches!(
            check("timestamp:1", before, None),
            Err(Stale::Missing(_))
        ));
    }
}
