//! Maintenance windows: recurring local-time intervals in which new disruption may start.
//!
//! A window has weekdays (empty = every day), an `HH:MM` start and end and an IANA time
//! zone. An end earlier than the start crosses midnight and belongs to the day it opened
//! on (a Friday 22:00-02:00 window is open until Saturday 02:00). Start equal to end
//! means the whole day. Daylight-saving shifts are handled by evaluating in local time.

use chrono::{DateTime, Datelike, NaiveTime, Timelike, Utc};
use chrono_tz::Tz;
use osroll_api::MaintenanceWindow;
use osroll_api::upgrade::Weekday;

use super::strategy::SpecError;

/// A validated maintenance window.
#[derive(Clone, Debug, PartialEq)]
pub struct Window {
    /// Days the window opens on; empty means every day.
    pub days: Vec<chrono::Weekday>,
    /// Opening time, local.
    pub start: NaiveTime,
    /// Closing time, local.
    pub end: NaiveTime,
    /// Time zone of `start` and `end`.
    pub tz: Tz,
}

fn parse_hhmm(s: &str, field: &str) -> Result<NaiveTime, SpecError> {
    let bad = || {
        SpecError::new(
            field,
            format!("{s:?} is not a time of day in HH:MM form (00:00 to 23:59)"),
        )
    };
    let (h, m) = s.split_once(':').ok_or_else(bad)?;
    if h.len() != 2 || m.len() != 2 {
        return Err(bad());
    }
    let (h, m): (u32, u32) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    NaiveTime::from_hms_opt(h, m, 0).ok_or_else(bad)
}

fn to_chrono(d: Weekday) -> chrono::Weekday {
    match d {
        Weekday::Mon => chrono::Weekday::Mon,
        Weekday::Tue => chrono::Weekday::Tue,
        Weekday::Wed => chrono::Weekday::Wed,
        Weekday::Thu => chrono::Weekday::Thu,
        Weekday::Fri => chrono::Weekday::Fri,
        Weekday::Sat => chrono::Weekday::Sat,
        Weekday::Sun => chrono::Weekday::Sun,
    }
}

impl Window {
    /// Validate one `spec.strategy.maintenanceWindows[i]`; `field` is that path.
    pub fn from_spec(w: &MaintenanceWindow, field: &str) -> Result<Window, SpecError> {
        let start = parse_hhmm(&w.start, &format!("{field}.start"))?;
        let end = parse_hhmm(&w.end, &format!("{field}.end"))?;
        let tz = match &w.time_zone {
            None => Tz::UTC,
            Some(name) => name.parse::<Tz>().map_err(|_| {
                SpecError::new(
                    &format!("{field}.timeZone"),
                    format!("{name:?} is not an IANA time zone such as Europe/Berlin"),
                )
            })?,
        };
        Ok(Window {
            days: w.days.iter().copied().map(to_chrono).collect(),
            start,
            end,
            tz,
        })
    }

    fn opens_on(&self, d: chrono::Weekday) -> bool {
        self.days.is_empty() || self.days.contains(&d)
    }

    /// Whether the window is open at `now`.
    pub fn contains(&self, now: DateTime<Utc>) -> bool {
        let local = now.with_timezone(&self.tz);
        let t = NaiveTime::from_hms_opt(local.hour(), local.minute(), local.second())
            .unwrap_or(NaiveTime::MIN);
        let today = local.weekday();
        if self.start == self.end {
            return self.opens_on(today);
        }
        if self.start < self.end {
            self.opens_on(today) && self.start <= t && t < self.end
        } else {
            (self.opens_on(today) && t >= self.start)
                || (self.opens_on(today.pred()) && t < self.end)
        }
    }
}

/// Whether any of `windows` is open at `now`; no windows means always open.
pub fn any_open(windows: &[Window], now: DateTime<Utc>) -> bool {
    windows.is_empty() || windows.iter().any(|w| w.contains(now))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn win(days: &[Weekday], start: &str, end: &str, tz: Option<&str>) -> Window {
        let spec = MaintenanceWindow {
            days: days.to_vec(),
            start: start.into(),
            end: end.into(),
            time_zone: tz.map(String::from),
        };
        Window::from_spec(&spec, "w").unwrap()
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn plain_window_on_given_days() {
        // 2024-06-07 is a Friday.
        let w = win(&[Weekday::Fri], "09:00", "17:00", None);
        assert!(w.contains(at("2024-06-07T09:00:00Z")));
        assert!(w.contains(at("2024-06-07T16:59:59Z")));
        assert!(!w.contains(at("2024-06-07T17:00:00Z")), "end is exclusive");
        assert!(!w.contains(at("2024-06-07T08:59:00Z")));
        assert!(
            !w.contains(at("2024-06-08T10:00:00Z")),
            "Saturday is not listed"
        );
    }

    #[test]
    fn window_across_midnight_belongs_to_the_opening_day() {
        let w = win(&[Weekday::Fri], "22:00", "02:00", None);
        assert!(w.contains(at("2024-06-07T23:00:00Z")));
        assert!(
            w.contains(at("2024-06-08T01:30:00Z")),
            "Saturday early morning continues Friday's window"
        );
        assert!(
            !w.contains(at("2024-06-07T01:30:00Z")),
            "Friday early morning belongs to Thursday's window"
        );
        assert!(!w.contains(at("2024-06-08T22:30:00Z")));
    }

    #[test]
    fn time_zone_is_applied() {
        // 01:00-03:00 in Berlin (UTC+2 in June) is 23:00-01:00 UTC the day before.
        let w = win(&[Weekday::Sat], "01:00", "03:00", Some("Europe/Berlin"));
        assert!(
            w.contains(at("2024-06-07T23:30:00Z")),
            "Friday 23:30 UTC is Saturday 01:30 in Berlin"
        );
        assert!(
            !w.contains(at("2024-06-08T01:30:00Z")),
            "Saturday 03:30 in Berlin"
        );
        // In January Berlin is UTC+1.
        assert!(w.contains(at("2024-01-06T00:30:00Z")));
    }

    #[test]
    fn equal_start_and_end_is_all_day_and_no_windows_is_always() {
        let w = win(&[Weekday::Sun], "00:00", "00:00", None);
        assert!(w.contains(at("2024-06-09T13:00:00Z")));
        assert!(!w.contains(at("2024-06-10T13:00:00Z")));
        assert!(any_open(&[], at("2024-06-10T13:00:00Z")));
    }

    #[test]
    fn errors_name_the_field() {
        let bad = MaintenanceWindow {
            start: "25:00".into(),
            end: "02:00".into(),
            ..Default::default()
        };
        let e = Window::from_spec(&bad, "spec.strategy.maintenanceWindows[1]").unwrap_err();
        assert_eq!(e.field, "spec.strategy.maintenanceWindows[1].start");
        assert!(e.message.contains("25:00"));
        let bad = MaintenanceWindow {
            start: "01:00".into(),
            end: "02:00".into(),
            time_zone: Some("Mars/Olympus".into()),
            ..Default::default()
        };
        let e = Window::from_spec(&bad, "w").unwrap_err();
        assert_eq!(e.field, "w.timeZone");
        assert!(e.message.contains("Mars/Olympus"));
        let bad = MaintenanceWindow {
            start: "1:00".into(),
            end: "02:00".into(),
            ..Default::default()
        };
        assert!(Window::from_spec(&bad, "w").is_err());
    }
}
