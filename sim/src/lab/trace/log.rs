//! Access logs: nginx with `$request_time` (or `$msec` first), Apache with `%D`; their
//! fields, request paths, and the spreading of one second's requests over it.

use super::*;

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Log {
    Nginx,
    Apache,
}

/// A log line cut into fields: a quoted field may contain spaces, a bracketed one too.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Tok<'a> {
    Plain(&'a str),
    Quoted(&'a str),
    Bracket(&'a str),
}

pub(super) fn tokens(line: &str) -> Vec<Tok<'_>> {
    // Only ASCII bytes are used as cut points, and they are always char boundaries in
    // UTF-8, so slicing `line` at them cannot panic.
    let b = line.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            c if c.is_ascii_whitespace() => i += 1,
            b'"' => {
                let start = i + 1;
                let mut j = start;
                while j < b.len() && b[j] != b'"' {
                    // Apache escapes a quote inside a field as \" (nginx as \x22).
                    j += if b[j] == b'\\' && j + 1 < b.len() && b[j + 1] == b'"' {
                        2
                    } else {
                        1
                    };
                }
                out.push(Tok::Quoted(&line[start..j.min(b.len())]));
                i = j + 1;
            }
            b'[' => {
                let start = i + 1;
                let j = b[start..]
                    .iter()
                    .position(|&c| c == b']')
                    .map_or(b.len(), |p| start + p);
                out.push(Tok::Bracket(&line[start..j]));
                i = j + 1;
            }
            _ => {
                let start = i;
                while i < b.len() && !b[i].is_ascii_whitespace() {
                    i += 1;
                }
                out.push(Tok::Plain(&line[start..i]));
            }
        }
    }
    out
}

/// The fields of a log line that this module reads.
pub(super) struct LogLine<'a> {
    /// The first field, when it is a decimal number with a fraction (nginx `$msec`).
    pub(super) msec: Option<&'a str>,
    pub(super) time: Option<&'a str>,
    pub(super) request: Option<&'a str>,
    pub(super) quoted: usize,
    /// The plain fields after the last quoted one (empty when nothing is quoted).
    pub(super) tail: Vec<&'a str>,
}

pub(super) fn log_line(line: &str) -> LogLine<'_> {
    let toks = tokens(line);
    let msec = match toks.first() {
        Some(&Tok::Plain(s)) if is_fraction(s) => Some(s),
        _ => None,
    };
    let time = toks.iter().find_map(|t| match *t {
        Tok::Bracket(s) => Some(s),
        _ => None,
    });
    let request = toks.iter().find_map(|t| match *t {
        Tok::Quoted(s) => Some(s),
        _ => None,
    });
    let quoted = toks.iter().filter(|t| matches!(t, Tok::Quoted(_))).count();
    let tail = match toks.iter().rposition(|t| matches!(t, Tok::Quoted(_))) {
        Some(last) => toks[last + 1..]
            .iter()
            .filter_map(|t| match *t {
                Tok::Plain(s) => Some(s),
                _ => None,
            })
            .collect(),
        None => Vec::new(),
    };
    LogLine {
        msec,
        time,
        request,
        quoted,
        tail,
    }
}

/// `digits.digits`: how `$msec` and `$request_time` look (and an IPv4 address does not).
pub(super) fn is_fraction(s: &str) -> bool {
    s.split_once('.').is_some_and(|(int, frac)| {
        !int.is_empty()
            && !frac.is_empty()
            && int.bytes().all(|b| b.is_ascii_digit())
            && frac.bytes().all(|b| b.is_ascii_digit())
    })
}

pub(super) fn is_integer(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// The path of a request line (`GET /x HTTP/1.1`); None for `-` or anything not shaped so.
pub(super) fn request_path(request: &str) -> Option<String> {
    let mut parts = request.split_whitespace();
    let method = parts.next()?;
    let target = parts.next()?;
    let _protocol = parts.next(); // absent in HTTP/0.9
    let method_ok = method
        .bytes()
        .all(|b| b.is_ascii_uppercase() || b == b'-' || b == b'_');
    (method_ok && parts.next().is_none()).then(|| target.to_string())
}

/// A log line before the same-second spreading.
pub(super) struct Pending {
    /// Epoch nanoseconds: the end (nginx) or the start (Apache) of the request.
    pub(super) stamp: i128,
    /// The second of a bracketed time, whose lines are spread over it; None for `$msec`.
    pub(super) second: Option<i64>,
    pub(super) service: i128,
    /// nginx stamps the end: the arrival is the stamp minus the service time.
    pub(super) from_end: bool,
    pub(super) key: Option<String>,
}

pub(super) fn read_log(text: &str, log: Log) -> Result<Vec<Row>, TraceError> {
    let mut pending = Vec::new();
    for (no, line) in content_lines(text) {
        let fields = log_line(line);
        pending.push(match log {
            Log::Nginx => nginx_line(no, &fields)?,
            Log::Apache => apache_line(no, &fields)?,
        });
    }
    // The k-th (from 0) of n lines stamped with the same second gets + k/n s.
    let mut per_second: BTreeMap<i64, (i128, i128)> = BTreeMap::new();
    for p in &pending {
        if let Some(s) = p.second {
            per_second.entry(s).or_insert((0, 0)).1 += 1;
        }
    }
    Ok(pending
        .into_iter()
        .map(|p| {
            let spread = match p.second.and_then(|s| per_second.get_mut(&s)) {
                Some((k, n)) => {
                    let offset = *k * NANOS / *n;
                    *k += 1;
                    offset
                }
                None => 0,
            };
            let stamp = p.stamp + spread;
            Row {
                at: if p.from_end { stamp - p.service } else { stamp },
                service: p.service,
                key: p.key,
            }
        })
        .collect())
}

pub(super) fn nginx_line(no: usize, f: &LogLine<'_>) -> Result<Pending, TraceError> {
    const HINT: &str = "nginx $request_time, e.g. 0.004";
    // In `combined` the user agent is the last quoted field and $request_time follows it; in
    // `common` only the request is quoted, and $status $body_bytes_sent come first.
    let at = if f.quoted >= 2 { 0 } else { 2 };
    let Some(&rt) = f.tail.get(at) else {
        return Err(error(
            no,
            "request_time",
            "missing: expected $request_time after the user agent, e.g. ... \"curl/8.5.0\" \
             0.004 (nginx log_format combined + $request_time)"
                .to_string(),
        ));
    };
    let nanos = read_seconds(no, "request_time", rt, HINT)?;
    let service = check_service(no, "request_time", rt, nanos, "seconds")?;
    let (stamp, second) = match f.msec {
        Some(msec) => (
            read_seconds(no, "msec", msec, "nginx $msec, e.g. 1733560000.123")?,
            None,
        ),
        None => {
            let Some(time) = f.time else {
                return Err(error(
                    no,
                    "time_local",
                    format!(
                        "missing: expected [$time_local], e.g. {TIME_EXAMPLE}, or $msec at \
                         the start of the line, e.g. 1733560000.123"
                    ),
                ));
            };
            let s = clf_time(time, "nginx $time_local").map_err(|p| error(no, "time_local", p))?;
            (i128::from(s) * NANOS, Some(s))
        }
    };
    Ok(Pending {
        stamp,
        second,
        service,
        from_end: true,
        key: f.request.and_then(request_path),
    })
}

pub(super) fn apache_line(no: usize, f: &LogLine<'_>) -> Result<Pending, TraceError> {
    let Some(&d) = f.tail.last() else {
        return Err(error(
            no,
            "D",
            "missing: expected %D (microseconds) as the last field, e.g. ... \"curl/8.5.0\" 4123"
                .to_string(),
        ));
    };
    if !is_integer(d) {
        return Err(error(
            no,
            "D",
            format!(
                "{} is not a whole number of microseconds (Apache %D, e.g. 4123)",
                show(d)
            ),
        ));
    }
    // More than 20 digits cannot be a day's worth of microseconds anyway.
    let micros = if d.len() > 20 {
        i128::MAX / 2
    } else {
        d.parse::<i128>().unwrap_or(i128::MAX / 2)
    };
    let service = check_service(no, "D", d, micros.saturating_mul(1000), "microseconds")?;
    let Some(time) = f.time else {
        return Err(error(
            no,
            "time",
            format!("missing: expected %t, e.g. {TIME_EXAMPLE}"),
        ));
    };
    let s = clf_time(time, "Apache %t").map_err(|p| error(no, "time", p))?;
    Ok(Pending {
        stamp: i128::from(s) * NANOS,
        second: Some(s),
        service,
        from_end: false,
        key: f.request.and_then(request_path),
    })
}
