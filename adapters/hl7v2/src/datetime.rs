//! Dates and times between HL7 v2 (`DTM`/`TS`: `YYYYMMDDHHMMSS+ZZZZ`, any tail left off) and
//! FHIR (`date`, `dateTime`). Internal to the crate.
//!
//! A time that HL7 sends without an offset is read as UK local time (Europe/London: GMT, or BST
//! from 01:00 UTC on the last Sunday of March to 01:00 UTC on the last Sunday of October),
//! because the GP systems that send to Signpost are in England and FHIR needs an offset on any
//! time. In the hour that happens twice in October the first (BST) is taken.

use time::format_description::well_known::Rfc3339;
use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time, UtcOffset, Weekday};

/// An HL7 `DTM` for `at`, to the second, with its offset: `20261120093000+0000`.
pub(crate) fn to_hl7(at: OffsetDateTime) -> String {
    let (oh, om, _) = at.offset().as_hms();
    let sign = if at.offset().is_negative() { '-' } else { '+' };
    format!(
        "{:04}{:02}{:02}{:02}{:02}{:02}{}{:02}{:02}",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second(),
        sign,
        oh.unsigned_abs(),
        om.unsigned_abs()
    )
}

/// The parts of an HL7 date/time, as far as the sender gave them.
struct Hl7Time {
    year: i32,
    month: Option<u8>,
    day: Option<u8>,
    time: Option<Time>,
    offset: Option<UtcOffset>,
}

fn digits(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn parse_hl7(ts: &str) -> Option<Hl7Time> {
    let ts = ts.trim();
    let (body, offset) = match ts.find(['+', '-']) {
        Some(i) => {
            let z = &ts[i + 1..];
            if z.len() != 4 || !z.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let h = digits(&z[..2])? as i8;
            let m = digits(&z[2..])? as i8;
            let sign = if ts.as_bytes()[i] == b'-' { -1 } else { 1 };
            (
                &ts[..i],
                Some(UtcOffset::from_hms(sign * h, sign * m, 0).ok()?),
            )
        }
        None => (ts, None),
    };
    let body = body.split('.').next()?;
    if !matches!(body.len(), 4 | 6 | 8 | 10 | 12 | 14) || !body.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let part = |from: usize| body.get(from..from + 2).map(|s| s.parse::<u8>().ok());
    let year = body[..4].parse::<i32>().ok()?;
    let month = part(4).flatten();
    let day = part(6).flatten();
    // Check the calendar date as far as it goes.
    if let Some(m) = month {
        let month_enum = Month::try_from(m).ok()?;
        if let Some(d) = day {
            Date::from_calendar_date(year, month_enum, d).ok()?;
        }
    }
    let time = match part(8).flatten() {
        Some(h) => Some(
            Time::from_hms(
                h,
                part(10).flatten().unwrap_or(0),
                part(12).flatten().unwrap_or(0),
            )
            .ok()?,
        ),
        None => None,
    };
    Some(Hl7Time {
        year,
        month,
        day,
        time,
        offset,
    })
}

/// A FHIR `date` from an HL7 date or date/time (`19480314` → `1948-03-14`; `1948` → `1948`).
/// `None` when it is not a real date.
pub(crate) fn to_fhir_date(ts: &str) -> Option<String> {
    let t = parse_hl7(ts)?;
    Some(match (t.month, t.day) {
        (Some(m), Some(d)) => format!("{:04}-{m:02}-{d:02}", t.year),
        (Some(m), None) => format!("{:04}-{m:02}", t.year),
        _ => format!("{:04}", t.year),
    })
}

/// A FHIR `dateTime` from an HL7 date/time. With a time of day it carries an offset (UK local
/// time when the sender gave none); a bare date stays a date.
pub(crate) fn to_fhir_datetime(ts: &str) -> Option<String> {
    let t = parse_hl7(ts)?;
    let (Some(month), Some(day), Some(time)) = (t.month, t.day, t.time) else {
        return to_fhir_date(ts);
    };
    let date = Date::from_calendar_date(t.year, Month::try_from(month).ok()?, day).ok()?;
    let local = PrimitiveDateTime::new(date, time);
    let offset = t.offset.unwrap_or_else(|| uk_offset(local));
    local.assume_offset(offset).format(&Rfc3339).ok().map(|s| {
        // RFC 3339 allows `Z`; FHIR examples in Signpost use `+00:00`.
        match s.strip_suffix('Z') {
            Some(head) => format!("{head}+00:00"),
            None => s,
        }
    })
}

/// An HL7 date/time from a FHIR `date` or `dateTime` (`2026-11-20T09:30:00+00:00` →
/// `20261120093000+0000`, `1948-03-14` → `19480314`).
pub(crate) fn from_fhir(value: &str) -> Option<String> {
    if let Ok(at) = OffsetDateTime::parse(value, &Rfc3339) {
        return Some(to_hl7(at));
    }
    let parts: Vec<&str> = value.split('-').collect();
    let ok = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
    match parts.as_slice() {
        [y] if ok(y, 4) => Some((*y).to_owned()),
        [y, m] if ok(y, 4) && ok(m, 2) => Some(format!("{y}{m}")),
        [y, m, d] if ok(y, 4) && ok(m, 2) && ok(d, 2) => Some(format!("{y}{m}{d}")),
        _ => None,
    }
}

fn last_sunday(year: i32, month: Month) -> Option<Date> {
    let mut d =
        Date::from_calendar_date(year, month, time::util::days_in_month(month, year)).ok()?;
    while d.weekday() != Weekday::Sunday {
        d = d.previous_day()?;
    }
    Some(d)
}

/// The UK's offset from UTC at a local wall-clock time.
fn uk_offset(local: PrimitiveDateTime) -> UtcOffset {
    let gmt = UtcOffset::UTC;
    let year = local.year();
    let (Some(start), Some(end)) = (
        last_sunday(year, Month::March),
        last_sunday(year, Month::October),
    ) else {
        return gmt;
    };
    let starts = PrimitiveDateTime::new(start, Time::from_hms(1, 0, 0).unwrap_or(Time::MIDNIGHT));
    let ends = PrimitiveDateTime::new(end, Time::from_hms(2, 0, 0).unwrap_or(Time::MIDNIGHT));
    if local >= starts && local < ends {
        UtcOffset::from_hms(1, 0, 0).unwrap_or(gmt)
    } else {
        gmt
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hl7_dates_become_fhir_dates() {
        assert_eq!(to_fhir_date("19480314").as_deref(), Some("1948-03-14"));
        assert_eq!(to_fhir_date("194803").as_deref(), Some("1948-03"));
        assert_eq!(to_fhir_date("1948").as_deref(), Some("1948"));
        assert_eq!(to_fhir_date("194803140000").as_deref(), Some("1948-03-14"));
        assert_eq!(to_fhir_date("19480230"), None);
        assert_eq!(to_fhir_date("1948031"), None);
        assert_eq!(to_fhir_date("abcd"), None);
    }

    #[test]
    fn times_without_an_offset_are_uk_local_time() {
        assert_eq!(
            to_fhir_datetime("20261120092500").as_deref(),
            Some("2026-11-20T09:25:00+00:00")
        );
        assert_eq!(
            to_fhir_datetime("202607011200").as_deref(),
            Some("2026-07-01T12:00:00+01:00")
        );
        assert_eq!(
            to_fhir_datetime("20260701120000.123-0500").as_deref(),
            Some("2026-07-01T12:00:00-05:00")
        );
        // 2026: BST from Sunday 29 March to Sunday 25 October.
        assert!(to_fhir_datetime("20260329003000")
            .unwrap()
            .ends_with("+00:00"));
        assert!(to_fhir_datetime("20260329023000")
            .unwrap()
            .ends_with("+01:00"));
        assert!(to_fhir_datetime("20261025013000")
            .unwrap()
            .ends_with("+01:00"));
        assert!(to_fhir_datetime("20261025023000")
            .unwrap()
            .ends_with("+00:00"));
        assert_eq!(to_fhir_datetime("20261120").as_deref(), Some("2026-11-20"));
        assert_eq!(to_fhir_datetime("20261120250000"), None);
    }

    #[test]
    fn fhir_times_become_hl7() {
        assert_eq!(
            from_fhir("2026-11-20T09:30:00+00:00").as_deref(),
            Some("20261120093000+0000")
        );
        assert_eq!(
            from_fhir("2026-07-01T12:00:00.5+01:00").as_deref(),
            Some("20260701120000+0100")
        );
        assert_eq!(from_fhir("1948-03-14").as_deref(), Some("19480314"));
        assert_eq!(from_fhir("soon"), None);
    }
}
