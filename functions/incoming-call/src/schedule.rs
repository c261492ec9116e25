//! Business hours in Japan time (fixed +09:00: Japan has no daylight saving time, so no time
//! zone database is needed), national holidays from the embedded table, and `closed` dates.

use std::sync::Arc;

use serde::Deserialize;
use time::{Date, Month, OffsetDateTime, Weekday};

use crate::holidays;
use crate::route::Branch;

/// Japan Standard Time, seconds east of UTC.
const JST_OFFSET_SECONDS: i64 = 9 * 3600;

/// The current time as Unix seconds; read once per call, injectable in tests.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The machine's clock.
pub fn system_clock() -> Clock {
    Arc::new(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64)
    })
}

/// The year in Japan at `unix` seconds.
pub fn year_in_japan(unix: i64) -> i32 {
    local(unix).map_or(0, |t| t.year())
}

fn local(unix: i64) -> Option<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp(unix.checked_add(JST_OFFSET_SECONDS)?).ok()
}

/// True when `date` is a national holiday in the embedded table.
pub fn is_national_holiday(date: Date) -> bool {
    let key = (date.year(), u8::from(date.month()), date.day());
    holidays::HOLIDAYS
        .binary_search_by(|(y, m, d, _)| (*y, *m, *d).cmp(&key))
        .is_ok()
}

/// Open hours: `"mon": "09:00-12:00,13:00-18:00"`; a day not listed is closed all day.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hours {
    #[serde(default)]
    pub mon: Option<Spans>,
    #[serde(default)]
    pub tue: Option<Spans>,
    #[serde(default)]
    pub wed: Option<Spans>,
    #[serde(default)]
    pub thu: Option<Spans>,
    #[serde(default)]
    pub fri: Option<Spans>,
    #[serde(default)]
    pub sat: Option<Spans>,
    #[serde(default)]
    pub sun: Option<Spans>,
}

impl Hours {
    fn on(&self, day: Weekday) -> Option<&Spans> {
        match day {
            Weekday::Monday => self.mon.as_ref(),
            Weekday::Tuesday => self.tue.as_ref(),
            Weekday::Wednesday => self.wed.as_ref(),
            Weekday::Thursday => self.thu.as_ref(),
            Weekday::Friday => self.fri.as_ref(),
            Weekday::Saturday => self.sat.as_ref(),
            Weekday::Sunday => self.sun.as_ref(),
        }
    }
}

/// Minutes after local midnight, `[start, end)`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "String")]
pub struct Spans(Vec<(u16, u16)>);

impl TryFrom<String> for Spans {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        let bad = || format!("{text:?} is not HH:MM-HH:MM[,HH:MM-HH:MM...] (00:00 to 24:00)");
        let minute = |hm: &str| -> Option<u16> {
            let (h, m) = hm.trim().split_once(':')?;
            if h.len() != 2 || m.len() != 2 {
                return None;
            }
            let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
            (m < 60 && h * 60 + m <= 24 * 60).then_some(h * 60 + m)
        };
        let mut spans = Vec::new();
        for span in text.split(',') {
            let (a, b) = span.split_once('-').ok_or_else(bad)?;
            let (a, b) = (minute(a).ok_or_else(bad)?, minute(b).ok_or_else(bad)?);
            if a >= b {
                return Err(bad());
            }
            spans.push((a, b));
        }
        Ok(Self(spans))
    }
}

/// A `closed` day or inclusive range: `"2026-08-13"` or `"2026-12-29..2027-01-03"`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "String")]
pub struct DateRange {
    first: Date,
    last: Date,
}

impl TryFrom<String> for DateRange {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        let bad = || format!("{text:?} is not YYYY-MM-DD or YYYY-MM-DD..YYYY-MM-DD");
        let date = |s: &str| -> Option<Date> {
            let mut it = s.trim().splitn(3, '-');
            let (y, m, d) = (it.next()?, it.next()?, it.next()?);
            if y.len() != 4 || m.len() != 2 || d.len() != 2 {
                return None;
            }
            let month = Month::try_from(m.parse::<u8>().ok()?).ok()?;
            Date::from_calendar_date(y.parse().ok()?, month, d.parse().ok()?).ok()
        };
        let (first, last) = match text.split_once("..") {
            Some((a, b)) => (date(a).ok_or_else(bad)?, date(b).ok_or_else(bad)?),
            None => {
                let d = date(&text).ok_or_else(bad)?;
                (d, d)
            }
        };
        if first > last {
            return Err(format!("{text:?} ends before it starts"));
        }
        Ok(Self { first, last })
    }
}

/// Open, after hours, or a holiday (national or `closed`) at `unix` seconds.
pub fn branch_at(
    hours: &Hours,
    closed: &[DateRange],
    japanese_holidays: bool,
    unix: i64,
) -> Branch {
    let Some(now) = local(unix) else {
        return Branch::AfterHours;
    };
    let date = now.date();
    if closed.iter().any(|r| r.first <= date && date <= r.last)
        || (japanese_holidays && is_national_holiday(date))
    {
        return Branch::Holiday;
    }
    let minute = now.hour() as u16 * 60 + now.minute() as u16;
    match hours.on(date.weekday()) {
        Some(spans) if spans.0.iter().any(|(a, b)| *a <= minute && minute < *b) => Branch::Open,
        _ => Branch::AfterHours,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Unix seconds of a Japan-time wall clock reading: written out as nine hours, not through
    /// JST_OFFSET_SECONDS, so that a wrong offset in the code cannot cancel out here.
    pub(crate) fn jst(y: i32, mo: u8, d: u8, h: u8, mi: u8) -> i64 {
        let date = Date::from_calendar_date(y, Month::try_from(mo).unwrap(), d).unwrap();
        date.with_hms(h, mi, 0)
            .unwrap()
            .assume_utc()
            .unix_timestamp()
            - 9 * 3600
    }

    /// A schedule's calendar as the flow holds it.
    #[derive(Debug, Clone, Deserialize)]
    struct Calendar {
        hours: Hours,
        #[serde(default)]
        closed: Vec<DateRange>,
        #[serde(default = "yes")]
        japanese_holidays: bool,
    }

    fn yes() -> bool {
        true
    }

    impl Calendar {
        fn branch_at(&self, unix: i64) -> Branch {
            branch_at(&self.hours, &self.closed, self.japanese_holidays, unix)
        }
    }

    fn calendar() -> Calendar {
        serde_json::from_str(
            r#"{"hours": {"mon": "09:00-12:00,13:00-18:00", "tue": "09:00-18:00",
                "wed": "09:00-18:00", "thu": "09:00-18:00", "fri": "09:00-18:00", "sat": "10:00-12:00"},
                "closed": ["2026-12-29..2027-01-03", "2026-08-13"]}"#,
        )
        .unwrap()
    }

    #[test]
    fn hours_are_read_in_japan_time() {
        let c = calendar();
        // Tuesday 2026-12-01 09:00 JST is Monday 24:00 UTC, 1_796_083_200 (a literal, checked
        // against the helper, so neither can drift alone).
        assert_eq!(jst(2026, 12, 1, 9, 0), 1_796_083_200);
        assert_eq!(c.branch_at(1_796_083_200), Branch::Open);
        assert_eq!(c.branch_at(1_796_083_200 - 60), Branch::AfterHours);
        assert_eq!(c.branch_at(jst(2026, 12, 1, 9, 0)), Branch::Open);
        assert_eq!(c.branch_at(jst(2026, 12, 1, 8, 59)), Branch::AfterHours);
        assert_eq!(c.branch_at(jst(2026, 12, 1, 17, 59)), Branch::Open);
        assert_eq!(c.branch_at(jst(2026, 12, 1, 18, 0)), Branch::AfterHours);
        // Monday lunch break, Saturday morning, Sunday.
        assert_eq!(c.branch_at(jst(2026, 11, 30, 12, 30)), Branch::AfterHours);
        assert_eq!(c.branch_at(jst(2026, 12, 5, 11, 0)), Branch::Open);
        assert_eq!(c.branch_at(jst(2026, 12, 6, 11, 0)), Branch::AfterHours);
    }

    #[test]
    fn national_holidays_and_closed_dates_are_holidays() {
        let c = calendar();
        // 2027: 成人の日 Jan 11, 春分の日 substitute Mar 22, 海の日 Jul 19 (all weekdays, 10:00).
        for (m, d) in [(1, 11), (3, 22), (7, 19), (9, 20), (9, 23), (10, 11)] {
            assert_eq!(
                c.branch_at(jst(2027, m, d, 10, 0)),
                Branch::Holiday,
                "{m}-{d}"
            );
        }
        // The New Year range, both ends, and the day after it.
        assert_eq!(c.branch_at(jst(2026, 12, 29, 10, 0)), Branch::Holiday);
        assert_eq!(c.branch_at(jst(2027, 1, 3, 23, 59)), Branch::Holiday);
        assert_eq!(c.branch_at(jst(2027, 1, 4, 10, 0)), Branch::Open);
        assert_eq!(c.branch_at(jst(2026, 8, 13, 10, 0)), Branch::Holiday);
        // A weekday that is no holiday, and the holiday switched off.
        assert_eq!(c.branch_at(jst(2027, 1, 12, 10, 0)), Branch::Open);
        let mut no_holidays = c.clone();
        no_holidays.japanese_holidays = false;
        assert_eq!(no_holidays.branch_at(jst(2027, 1, 11, 10, 0)), Branch::Open);
    }

    #[test]
    fn malformed_hours_and_dates_are_refused() {
        for bad in [
            "9:00-18:00",
            "09:00-08:00",
            "09:00-25:00",
            "09:00",
            "09:60-10:00",
        ] {
            assert!(Spans::try_from(bad.to_owned()).is_err(), "{bad}");
        }
        assert!(Spans::try_from("00:00-24:00".to_owned()).is_ok());
        for bad in [
            "2026-02-30",
            "2026-1-01",
            "2027-01-03..2026-12-29",
            "tomorrow",
        ] {
            assert!(DateRange::try_from(bad.to_owned()).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_table_is_sorted_and_covers_its_years() {
        assert!(
            holidays::HOLIDAYS
                .windows(2)
                .all(|w| (w[0].0, w[0].1, w[0].2) < (w[1].0, w[1].1, w[1].2))
        );
        for year in holidays::FIRST_YEAR..=holidays::LAST_YEAR {
            let n = holidays::HOLIDAYS.iter().filter(|h| h.0 == year).count();
            assert!((15..=22).contains(&n), "{year}: {n} holidays");
        }
        assert_eq!(year_in_japan(jst(2027, 1, 1, 0, 0)), 2027);
        assert_eq!(year_in_japan(jst(2026, 12, 31, 23, 59)), 2026);
    }
}
