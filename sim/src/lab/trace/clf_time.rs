//! The logs' bracketed times (`[07/Dec/2026:06:22:55 +0000]`) as epoch seconds.

use super::*;

pub(super) const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// `07/Dec/2026:06:22:55 +0000` (without the brackets) as UTC epoch seconds; the error is
/// the problem text, naming `what` (the log's name for the field).
pub(super) fn clf_time(s: &str, what: &str) -> Result<i64, String> {
    let bad = |why: &str| {
        format!(
            "{} is not a time: {why} ({what}, e.g. {TIME_EXAMPLE})",
            show(s)
        )
    };
    let Some((stamp, zone)) = s.trim().split_once(' ') else {
        return Err(bad(
            "expected day/month/year:hour:minute:second and a UTC offset",
        ));
    };
    let parts: Vec<&str> = stamp.split('/').collect();
    let [day, month, rest] = parts[..] else {
        return Err(bad("expected day/month/year:hour:minute:second"));
    };
    let hms: Vec<&str> = rest.split(':').collect();
    let [year, hour, minute, second] = hms[..] else {
        return Err(bad("expected year:hour:minute:second after the month"));
    };
    let Some(m) = MONTHS.iter().position(|n| n.eq_ignore_ascii_case(month)) else {
        return Err(format!(
            "{} is not a month: write Jan, Feb, ... Dec ({what}, e.g. {TIME_EXAMPLE})",
            show(month)
        ));
    };
    let month = m as u32 + 1;
    let num = |v: &str, max_len: usize| {
        (is_integer(v) && v.len() <= max_len)
            .then(|| v.parse::<u32>().ok())
            .flatten()
    };
    let (Some(day), Some(year), Some(hour), Some(minute), Some(second)) = (
        num(day, 2),
        num(year, 4),
        num(hour, 2),
        num(minute, 2),
        num(second, 2),
    ) else {
        return Err(bad(
            "the day, year, hour, minute and second must be numbers",
        ));
    };
    if day == 0 || day > days_in_month(year, month) {
        return Err(bad("no such day in that month"));
    }
    // 60 is a leap second.
    if hour > 23 || minute > 59 || second > 60 {
        return Err(bad("the hour, minute or second is out of range"));
    }
    let zb = zone.trim().as_bytes();
    let offset = match zb {
        [sign @ (b'+' | b'-'), rest @ ..]
            if rest.len() == 4 && rest.iter().all(u8::is_ascii_digit) =>
        {
            let d = |i: usize| i64::from(rest[i] - b'0');
            let (h, m) = (d(0) * 10 + d(1), d(2) * 10 + d(3));
            if m > 59 {
                return Err(bad("the UTC offset's minutes are out of range"));
            }
            let secs = h * 3600 + m * 60;
            if *sign == b'-' {
                -secs
            } else {
                secs
            }
        }
        _ => return Err(bad("the UTC offset must look like +0000 or -0500")),
    };
    let days = days_from_civil(i64::from(year), month, day);
    let local = days * 86_400 + i64::from(hour) * 3600 + i64::from(minute) * 60 + i64::from(second);
    Ok(local - offset)
}

pub(super) fn is_leap(year: u32) -> bool {
    year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400))
}

pub(super) fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    // Counting years from March puts the leap day at the end of the year.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from((month + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `2026-12-07T07:00:33.910066Z` (tracing's default stamp, drover's log lines and its JSON
/// `timestamp`) as nanoseconds since the Unix epoch, UTC.
pub fn utc_stamp_ns(s: &str) -> Option<i128> {
    let s = s.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.split('-');
    let (y, m, day) = (
        d.next()?.parse::<i64>().ok()?,
        d.next()?.parse::<u32>().ok()?,
        d.next()?.parse::<u32>().ok()?,
    );
    if d.next().is_some() || !(1..=12).contains(&m) || !(1..=31).contains(&day) {
        return None;
    }
    let mut t = time.split(':');
    let (hh, mm, ss) = (
        t.next()?.parse::<i64>().ok()?,
        t.next()?.parse::<i64>().ok()?,
        t.next()?,
    );
    if t.next().is_some() || !(0..24).contains(&hh) || !(0..60).contains(&mm) {
        return None;
    }
    let (whole, frac) = ss.split_once('.').unwrap_or((ss, ""));
    let sec: i64 = whole.parse().ok()?;
    if !(0..=60).contains(&sec) || frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let frac_ns: i128 = if frac.is_empty() {
        0
    } else {
        frac.parse::<i128>().ok()? * 10i128.pow(9 - frac.len() as u32)
    };
    let days = days_from_civil(y, m, day);
    let secs = days * 86_400 + hh * 3600 + mm * 60 + sec;
    Some(i128::from(secs) * 1_000_000_000 + frac_ns)
}
