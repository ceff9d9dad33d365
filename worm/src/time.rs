//! The three date spellings the stores use, from and to Unix seconds (UTC, no leap
//! seconds): RFC 3339 (`2031-01-02T03:04:05Z`), SigV4's `20310102T030405Z`, and the
//! RFC 1123 form of HTTP and Azure (`Thu, 02 Jan 2031 03:04:05 GMT`).

const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

use auditlog_formats::time::{civil_from_days as civil, days_from_civil};

struct Parts {
    y: i64,
    mo: u32,
    d: u32,
    h: u64,
    mi: u64,
    s: u64,
    wd: usize,
}

fn parts(unix_s: u64) -> Parts {
    let days = (unix_s / 86_400) as i64;
    let (y, mo, d) = civil(days);
    let sod = unix_s % 86_400;
    Parts {
        y,
        mo,
        d,
        h: sod / 3600,
        mi: sod / 60 % 60,
        s: sod % 60,
        wd: (days % 7) as usize,
    }
}

pub fn rfc3339(unix_s: u64) -> String {
    let p = parts(unix_s);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        p.y, p.mo, p.d, p.h, p.mi, p.s
    )
}

pub fn amz_date(unix_s: u64) -> String {
    let p = parts(unix_s);
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        p.y, p.mo, p.d, p.h, p.mi, p.s
    )
}

pub fn rfc1123(unix_s: u64) -> String {
    let p = parts(unix_s);
    format!(
        "{}, {:02} {} {:04} {:02}:{:02}:{:02} GMT",
        DAYS[p.wd],
        p.d,
        MONTHS[p.mo as usize - 1],
        p.y,
        p.h,
        p.mi,
        p.s
    )
}

fn num(s: &str) -> Option<u64> {
    (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
        .then(|| s.parse().ok())
        .flatten()
}

fn to_unix(y: u64, mo: u64, d: u64, h: u64, mi: u64, s: u64) -> Option<u64> {
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    let days = days_from_civil(y as i64, mo as u32, d as u32);
    u64::try_from(days)
        .ok()
        .map(|days| days * 86_400 + h * 3600 + mi * 60 + s)
}

/// `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`, fraction dropped (`formats::time`'s parser,
/// the one every RFC 3339 date goes through).
pub fn parse_rfc3339(t: &str) -> Option<u64> {
    let ms = auditlog_formats::time::rfc3339_to_unix_ms(t.trim())?;
    u64::try_from(ms.div_euclid(1000)).ok()
}

/// `Thu, 02 Jan 2031 03:04:05 GMT`.
pub fn parse_rfc1123(t: &str) -> Option<u64> {
    let f: Vec<&str> = t.split_whitespace().collect();
    if f.len() != 6 || f[5] != "GMT" {
        return None;
    }
    let mo = MONTHS.iter().position(|m| *m == f[2])? as u64 + 1;
    let hms: Vec<&str> = f[4].split(':').collect();
    if hms.len() != 3 {
        return None;
    }
    to_unix(
        num(f[3])?,
        mo,
        num(f[1])?,
        num(hms[0])?,
        num(hms[1])?,
        num(hms[2])?,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_dates() {
        // 2015-08-30T12:36:00Z, the SigV4 test suite's date.
        assert_eq!(amz_date(1_440_938_160), "20150830T123600Z");
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc1123(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(rfc1123(951_782_400), "Tue, 29 Feb 2000 00:00:00 GMT");
        assert_eq!(rfc3339(4_102_444_800), "2100-01-01T00:00:00Z");
    }

    #[test]
    fn round_trips() {
        for t in [
            0u64,
            59,
            86_399,
            951_782_400,
            1_440_938_160,
            4_102_444_799,
            1 << 35,
        ] {
            assert_eq!(parse_rfc3339(&rfc3339(t)), Some(t));
            assert_eq!(parse_rfc1123(&rfc1123(t)), Some(t));
        }
        assert_eq!(
            parse_rfc3339("2015-08-30T12:36:00.123Z"),
            Some(1_440_938_160)
        );
        assert_eq!(
            parse_rfc3339("2015-08-30T14:36:00+02:00"),
            Some(1_440_938_160)
        );
        assert_eq!(parse_rfc3339("2015-13-30T12:36:00Z"), None);
        assert_eq!(parse_rfc1123("Sun, 30 Aug 2015 12:36:00 UTC"), None);
    }
}
