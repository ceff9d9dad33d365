//! Civil time without a clock: RFC 3339 timestamps to and from Unix time, for CEF `rt`,
//! syslog headers and syslog-to-event mapping. Proleptic Gregorian calendar, UTC; leap
//! seconds (`:60`) count as the next second's start, as POSIX time has no room for them.

/// Days since 1970-01-01 of a civil date (Howard Hinnant's `days_from_civil`).
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date `(year, month, day)` of a day count since 1970-01-01.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

pub fn is_leap_year(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

pub fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if is_leap_year(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// A time as an API or a command line takes it: integer Unix nanoseconds, or an RFC 3339
/// `date-time` (to the millisecond). `None` for anything else, or before 1970 / past 2554
/// (what `u64` nanoseconds hold).
pub fn parse_unix_ns(text: &str) -> Option<u64> {
    if let Ok(ns) = text.parse::<u64>() {
        return Some(ns);
    }
    rfc3339_to_unix_ms(text)
        .and_then(|ms| u64::try_from(ms).ok())
        .and_then(|ms| ms.checked_mul(1_000_000))
}

/// Milliseconds since the Unix epoch of an RFC 3339 `date-time`
/// (`YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`); `None` for anything else. Fraction digits
/// past milliseconds are truncated.
pub fn rfc3339_to_unix_ms(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let num = |at: usize, len: usize| -> Option<i64> {
        let d = b.get(at..at + len)?;
        d.iter().try_fold(0i64, |n, &c| {
            c.is_ascii_digit().then(|| n * 10 + i64::from(c - b'0'))
        })
    };
    let punct = |at: usize, ok: &[u8]| b.get(at).is_some_and(|c| ok.contains(c));
    let year = num(0, 4)?;
    let month = num(5, 2)? as u32;
    let day = num(8, 2)? as u32;
    let (hour, minute, second) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    let shape_ok =
        punct(4, b"-") && punct(7, b"-") && punct(10, b"Tt") && punct(13, b":") && punct(16, b":");
    let ranges_ok = (1..=12).contains(&month)
        && day >= 1
        && day <= days_in_month(year, month)
        && hour <= 23
        && minute <= 59
        && second <= 60;
    if !(shape_ok && ranges_ok) {
        return None;
    }
    let mut at = 19;
    let mut ms = 0i64;
    if b.get(at) == Some(&b'.') {
        at += 1;
        let start = at;
        while b.get(at).is_some_and(u8::is_ascii_digit) {
            if at - start < 3 {
                ms = ms * 10 + i64::from(b[at] - b'0');
            }
            at += 1;
        }
        if at == start {
            return None;
        }
        for _ in (at - start)..3 {
            ms *= 10;
        }
    }
    let offset_s = match b.get(at) {
        Some(b'Z' | b'z') => {
            at += 1;
            0
        }
        Some(&sign @ (b'+' | b'-')) => {
            let (oh, om) = (num(at + 1, 2)?, num(at + 4, 2)?);
            if !punct(at + 3, b":") || oh > 23 || om > 59 {
                return None;
            }
            at += 6;
            let o = oh * 3600 + om * 60;
            if sign == b'-' {
                -o
            } else {
                o
            }
        }
        _ => return None,
    };
    if at != b.len() {
        return None;
    }
    let secs =
        days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second - offset_s;
    Some(secs * 1000 + ms)
}

/// `YYYY-MM-DDTHH:MM:SS.ffffffZ` (microseconds, UTC) of a Unix time in nanoseconds: valid
/// as an RFC 3339 `date-time`, an RFC 5424 `TIMESTAMP` and an audit-event `timestamp`.
pub fn unix_ns_to_rfc3339(unix_ns: u64) -> String {
    let secs = (unix_ns / 1_000_000_000) as i64;
    let micros = (unix_ns % 1_000_000_000) / 1000;
    let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.{micros:06}Z",
        sod / 3600,
        sod / 60 % 60,
        sod % 60
    )
}

#[cfg(test)]
mod tests {
    use super::parse_unix_ns;

    #[test]
    fn times_as_unix_ns_or_rfc3339() {
        assert_eq!(
            parse_unix_ns("1700000000000000000"),
            Some(1_700_000_000_000_000_000)
        );
        assert_eq!(parse_unix_ns("1970-01-01T00:00:01.5Z"), Some(1_500_000_000));
        assert_eq!(parse_unix_ns("1969-12-31T23:59:59Z"), None, "before 1970");
        assert_eq!(
            parse_unix_ns("2999-01-01T00:00:00Z"),
            None,
            "past u64 nanoseconds"
        );
        assert_eq!(parse_unix_ns("yesterday"), None);
    }

    use super::*;

    #[test]
    fn known_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(civil_from_days(11_017), (2000, 3, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        for d in -800_000..800_000i64 {
            if d % 997 == 0 {
                let (y, m, day) = civil_from_days(d);
                assert_eq!(days_from_civil(y, m, day), d);
            }
        }
        assert_eq!(rfc3339_to_unix_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            rfc3339_to_unix_ms("2026-11-23T10:00:00.123Z"),
            Some(1_795_428_000_123)
        );
        assert_eq!(
            rfc3339_to_unix_ms("2026-11-23T11:00:00.1234567+01:00"),
            Some(1_795_428_000_123)
        );
        assert_eq!(
            rfc3339_to_unix_ms("2026-11-23T09:30:00.5-00:30"),
            Some(1_795_428_000_500)
        );
        for bad in [
            "",
            "2026-02-29T00:00:00Z",
            "2026-11-23 10:00:00Z",
            "2026-11-23T10:00:00",
        ] {
            assert_eq!(rfc3339_to_unix_ms(bad), None, "{bad}");
        }
        let s = unix_ns_to_rfc3339(1_795_428_000_123_456_789);
        assert_eq!(s, "2026-11-23T10:00:00.123456Z");
        assert_eq!(rfc3339_to_unix_ms(&s), Some(1_795_428_000_123));
    }
}
