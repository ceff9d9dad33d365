//! Syslog message parsing (FORMATS.md §14.4): `<PRI>`, then RFC 5424 or, leniently, RFC 3164.

use std::borrow::Cow;

use crate::time::{civil_from_days, days_from_civil, days_in_month};

/// `b` as text, invalid UTF-8 replaced by U+FFFD. Valid input (nearly all) takes
/// `from_utf8`'s fast path instead of the chunk-by-chunk lossy decoder.
pub(super) fn lossy(b: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(b) {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => String::from_utf8_lossy(b),
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("syslog message does not start with <PRI> (a number 0-191 in angle brackets)")]
    BadPri,
    #[error("RFC 5424 header: {0}")]
    Rfc5424(&'static str),
    #[error("RFC 3164 header: {0}")]
    Rfc3164(&'static str),
    #[error("mapped event is {bytes} bytes, over the {max}-byte event limit")]
    EventTooLarge { bytes: usize, max: usize },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyslogFormat {
    Rfc5424,
    Rfc3164,
}

/// One structured-data element: its SD-ID and its parameters in order (names may repeat).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SdElement {
    pub id: String,
    pub params: Vec<(String, String)>,
}

/// A parsed message. Absent (NILVALUE `-` or missing) fields are `None`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyslogMessage {
    pub format: SyslogFormat,
    pub facility: u8,
    pub severity: u8,
    /// As an RFC 3339 `date-time` (RFC 3164 stamps are completed with a year, as UTC).
    pub timestamp: Option<String>,
    pub hostname: Option<String>,
    pub app_name: Option<String>,
    pub procid: Option<String>,
    pub msgid: Option<String>,
    pub structured_data: Vec<SdElement>,
    /// MSG, UTF-8 (invalid bytes replaced by U+FFFD; a leading BOM dropped).
    pub msg: String,
}

fn parse_pri(m: &[u8]) -> Result<(u8, usize), ParseError> {
    if m.first() != Some(&b'<') {
        return Err(ParseError::BadPri);
    }
    let digits = m[1..]
        .iter()
        .take(4)
        .take_while(|c| c.is_ascii_digit())
        .count();
    if !(1..=3).contains(&digits) || m.get(1 + digits) != Some(&b'>') {
        return Err(ParseError::BadPri);
    }
    if digits > 1 && m[1] == b'0' {
        return Err(ParseError::BadPri);
    }
    let pri = m[1..1 + digits]
        .iter()
        .fold(0u32, |n, &c| n * 10 + u32::from(c - b'0'));
    if pri > 191 {
        return Err(ParseError::BadPri);
    }
    Ok((pri as u8, digits + 2))
}

/// Parses one message: RFC 5424 when `<PRI>` is followed by a version digit and a space,
/// RFC 3164 otherwise. `received_at_unix_ns` completes RFC 3164 stamps, which have no year.
pub fn parse(m: &[u8], received_at_unix_ns: u64) -> Result<SyslogMessage, ParseError> {
    let (pri, at) = parse_pri(m)?;
    let rest = &m[at..];
    let versioned = rest.first().is_some_and(|c| (b'1'..=b'9').contains(c))
        && rest
            .iter()
            .position(|&c| c == b' ')
            .is_some_and(|sp| sp <= 3 && rest[..sp].iter().all(u8::is_ascii_digit));
    let (facility, severity) = (pri >> 3, pri & 7);
    if versioned {
        parse_5424(rest, facility, severity)
    } else {
        parse_3164(rest, facility, severity, received_at_unix_ns)
    }
}

/// True for an RFC 3164 message whose stamp reads `Feb 29`: the one stamp that parses in
/// some years only.
pub(super) fn has_feb_29_stamp(m: &[u8]) -> bool {
    parse_pri(m).is_ok_and(|(_, at)| m[at..].starts_with(b"Feb 29 "))
}

/// Splits off one space-terminated header field.
fn field<'a>(s: &mut &'a [u8], what: &'static str, max: usize) -> Result<&'a [u8], ParseError> {
    let sp = s
        .iter()
        .position(|&c| c == b' ')
        .ok_or(ParseError::Rfc5424(what))?;
    let f = &s[..sp];
    if f.is_empty() || f.len() > max || !f.iter().all(|c| (33..=126).contains(c)) {
        return Err(ParseError::Rfc5424(what));
    }
    *s = &s[sp + 1..];
    Ok(f)
}

fn nil(f: &[u8]) -> Option<String> {
    (f != b"-").then(|| lossy(f).into_owned())
}

fn text(b: &[u8]) -> String {
    let b = b.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(b);
    lossy(b).into_owned()
}

fn parse_5424(m: &[u8], facility: u8, severity: u8) -> Result<SyslogMessage, ParseError> {
    let mut s = m;
    let version = field(&mut s, "bad VERSION", 3)?;
    if version != b"1" {
        return Err(ParseError::Rfc5424("VERSION is not 1"));
    }
    // A message may end right after the structured data, without the space before MSG;
    // let the last header field end at the end of the message too.
    let ts = field(&mut s, "bad TIMESTAMP", 64)?;
    let timestamp = match ts {
        b"-" => None,
        t => {
            let t = std::str::from_utf8(t).map_err(|_| ParseError::Rfc5424("bad TIMESTAMP"))?;
            if crate::time::rfc3339_to_unix_ms(t).is_none() {
                return Err(ParseError::Rfc5424(
                    "TIMESTAMP is not an RFC 3339 date-time",
                ));
            }
            Some(t.to_string())
        }
    };
    let hostname = nil(field(&mut s, "bad HOSTNAME", 255)?);
    let app_name = nil(field(&mut s, "bad APP-NAME", 48)?);
    let procid = nil(field(&mut s, "bad PROCID", 128)?);
    let msgid = nil(field(&mut s, "bad MSGID", 32)?);
    let (structured_data, used) = parse_sd(s)?;
    let msg = match &s[used..] {
        [] => String::new(),
        [b' ', rest @ ..] => text(rest),
        _ => {
            return Err(ParseError::Rfc5424(
                "STRUCTURED-DATA not followed by a space",
            ))
        }
    };
    Ok(SyslogMessage {
        format: SyslogFormat::Rfc5424,
        facility,
        severity,
        timestamp,
        hostname,
        app_name,
        procid,
        msgid,
        structured_data,
        msg,
    })
}

fn sd_name(s: &[u8], at: &mut usize, what: &'static str) -> Result<String, ParseError> {
    let start = *at;
    while s
        .get(*at)
        .is_some_and(|&c| (33..=126).contains(&c) && !matches!(c, b'=' | b']' | b'"'))
    {
        *at += 1;
    }
    if *at == start || *at - start > 32 {
        return Err(ParseError::Rfc5424(what));
    }
    Ok(lossy(&s[start..*at]).into_owned())
}

/// STRUCTURED-DATA: `-` or one or more `[SD-ID *(SP NAME="VALUE")]`, where VALUE escapes
/// `"`, `\` and `]` with a backslash. Returns the elements and the bytes used.
fn parse_sd(s: &[u8]) -> Result<(Vec<SdElement>, usize), ParseError> {
    if s.first() == Some(&b'-') {
        return Ok((Vec::new(), 1));
    }
    let bad = ParseError::Rfc5424("bad STRUCTURED-DATA");
    let mut out = Vec::new();
    let mut at = 0;
    while s.get(at) == Some(&b'[') {
        at += 1;
        let id = sd_name(s, &mut at, "bad SD-ID")?;
        let mut params = Vec::new();
        loop {
            match s.get(at) {
                Some(b']') => {
                    at += 1;
                    break;
                }
                Some(b' ') => at += 1,
                _ => return Err(bad),
            }
            let name = sd_name(s, &mut at, "bad PARAM-NAME")?;
            if s.get(at..at + 2) != Some(b"=\"") {
                return Err(bad);
            }
            at += 2;
            let mut value = Vec::new();
            loop {
                match s.get(at) {
                    None => return Err(bad),
                    Some(b'"') => break,
                    Some(b'\\') if matches!(s.get(at + 1), Some(b'"' | b'\\' | b']')) => {
                        value.push(s[at + 1]);
                        at += 2;
                    }
                    Some(&c) => {
                        value.push(c);
                        at += 1;
                    }
                }
            }
            at += 1;
            params.push((name, lossy(&value).into_owned()));
        }
        out.push(SdElement { id, params });
    }
    if out.is_empty() {
        return Err(bad);
    }
    Ok((out, at))
}

const MONTHS: [&[u8; 3]; 12] = [
    b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec",
];

/// `Mmm dd hh:mm:ss` (day space- or zero-padded) as an RFC 3339 UTC stamp in the year of
/// `received_at`, or the year before when that would put it more than a day in the future
/// (a December message received in January).
fn bsd_timestamp(t: &[u8], received_at_unix_ns: u64) -> Option<String> {
    if t.len() != 15 || t[3] != b' ' || t[6] != b' ' || t[9] != b':' || t[12] != b':' {
        return None;
    }
    let month = MONTHS.iter().position(|m| &t[..3] == *m)? as u32 + 1;
    let two = |a: u8, b: u8| -> Option<u32> {
        let hi = if a == b' ' {
            0
        } else {
            a.is_ascii_digit().then(|| u32::from(a - b'0'))?
        };
        b.is_ascii_digit().then(|| hi * 10 + u32::from(b - b'0'))
    };
    let day = two(t[4], t[5])?;
    let (h, mi, s) = (two(t[7], t[8])?, two(t[10], t[11])?, two(t[13], t[14])?);
    if h > 23 || mi > 59 || s > 60 || day == 0 {
        return None;
    }
    let now_s = (received_at_unix_ns / 1_000_000_000) as i64;
    let (mut year, _, _) = civil_from_days(now_s.div_euclid(86_400));
    let at = |y: i64| days_from_civil(y, month, day) * 86_400;
    if at(year) > now_s + 86_400 {
        year -= 1;
    }
    if day > days_in_month(year, month) {
        return None;
    }
    // Written by hand: `format!` was a tenth of the listener's parse at 400k messages/s.
    // A u64 of nanoseconds ends in 2554: four digits always.
    debug_assert!((1969..=9999).contains(&year), "year {year}");
    let mut b = *b"0000-00-00T00:00:00Z";
    let put = |b: &mut [u8; 20], at: usize, n: u32| {
        b[at] = b'0' + (n / 10) as u8;
        b[at + 1] = b'0' + (n % 10) as u8;
    };
    put(&mut b, 0, (year / 100) as u32);
    put(&mut b, 2, (year % 100) as u32);
    put(&mut b, 5, month);
    put(&mut b, 8, day);
    put(&mut b, 11, h);
    put(&mut b, 14, mi);
    put(&mut b, 17, s);
    Some(b.iter().map(|&c| char::from(c)).collect())
}

/// RFC 3164 as relays send it, read leniently (§4.3 of that RFC): `TIMESTAMP SP HOSTNAME
/// SP` is optional (TIMESTAMP BSD-style or RFC 3339; absent: no timestamp, no hostname); then an optional TAG of up to 48
/// characters from `[A-Za-z0-9_.-/]`, with `[PID]`, ended by `:`; the rest is MSG.
fn parse_3164(
    m: &[u8],
    facility: u8,
    severity: u8,
    received_at_unix_ns: u64,
) -> Result<SyslogMessage, ParseError> {
    let mut s = m;
    let mut timestamp = None;
    let mut hostname = None;
    // rsyslog's and syslog-ng's forwarding formats put an RFC 3339 stamp where RFC 3164
    // has its BSD one: take either.
    let rfc3339 = s
        .iter()
        .position(|&c| c == b' ')
        .filter(|&sp| s[..sp].first().is_some_and(u8::is_ascii_digit))
        .and_then(|sp| {
            let t = std::str::from_utf8(&s[..sp]).ok()?;
            crate::time::rfc3339_to_unix_ms(t).map(|_| (t.to_string(), sp))
        });
    let stamp = rfc3339.or_else(|| {
        s.get(..15)
            .and_then(|t| bsd_timestamp(t, received_at_unix_ns))
            .map(|t| (t, 15))
    });
    if let Some((ts, len)) = stamp {
        timestamp = Some(ts);
        s = s[len..]
            .strip_prefix(b" ")
            .ok_or(ParseError::Rfc3164("no space after TIMESTAMP"))?;
        let sp = s
            .iter()
            .position(|&c| c == b' ')
            .ok_or(ParseError::Rfc3164("no HOSTNAME"))?;
        if sp == 0 || sp > 255 {
            return Err(ParseError::Rfc3164("bad HOSTNAME"));
        }
        hostname = Some(lossy(&s[..sp]).into_owned());
        s = &s[sp + 1..];
    }
    let tag_len = s
        .iter()
        .take(49)
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-' | b'/'))
        .count();
    let (mut app_name, mut procid) = (None, None);
    if (1..=48).contains(&tag_len) {
        let after = &s[tag_len..];
        let (pid, rest) = match after.first() {
            Some(b'[') => match after.iter().position(|&c| c == b']') {
                Some(close) if close <= 129 => (Some(&after[1..close]), &after[close + 1..]),
                _ => (None, after),
            },
            _ => (None, after),
        };
        if let Some(rest) = rest.strip_prefix(b":") {
            app_name = Some(lossy(&s[..tag_len]).into_owned());
            procid = pid.map(|p| lossy(p).into_owned());
            s = rest.strip_prefix(b" ").unwrap_or(rest);
        }
    }
    Ok(SyslogMessage {
        format: SyslogFormat::Rfc3164,
        facility,
        severity,
        timestamp,
        hostname,
        app_name,
        procid,
        msgid: None,
        structured_data: Vec::new(),
        msg: text(s),
    })
}
