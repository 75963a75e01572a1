//! Recorded traffic: reads a file of past requests (a CSV, or an nginx or Apache access log)
//! into a [`Trace`], a list of requests each with an arrival time and a service time, that
//! `drover-sim --load-trace FILE` replays against a simulated pool.
//!
//! This module owns reading and checking such files, and nothing else: it must not know
//! about pool policies, workers or the simulator (the world takes a finished `Trace`), and
//! it reads only the text it is given (no files, no clock, no randomness), so the same text
//! always gives the same trace. A line it cannot read is an error naming the line, the field
//! and what was expected; it never guesses a value, because a silently wrong trace gives
//! silently wrong answers about a pool.
//!
//! # What every format gives
//!
//! Each request has an *arrival* (when it reached the server) and a *service* time (how
//! long a worker thread was busy with it), and optionally a *key* (the request path). The
//! trace is shifted so that the earliest arrival is zero, then sorted by arrival (requests
//! that arrive at the same time keep their order in the file). Lines need not be in order.
//! Blank lines and lines starting with `#` are skipped in every format. A service time must
//! be at most one day (86400 s): a larger one is almost always a column in the wrong unit.
//! A file with no requests at all is an error.
//!
//! # CSV (`csv`)
//!
//! ```text
//! arrival_s,service_s,key
//! 1733560000.125,0.080,/api/items
//! 1733560000.250,0.004,/static/app.js
//! ```
//!
//! - `arrival_s`: seconds, a decimal number (`12.5`, `1733560000.125`; `1e-3` also works),
//!   0 or more. Absolute (epoch seconds) or relative: only differences matter.
//! - `service_s`: seconds, 0 to 86400.
//! - `key` (optional third column): any text without a comma, taken as it is (trimmed);
//!   empty means none. There is no quoting. A fourth column is an error.
//! - An optional header: the first line is skipped when its first two fields are names (they
//!   start with a letter and are not numbers), whatever the names are.
//!
//! # nginx (`nginx`)
//!
//! The `combined` format with `$request_time` added, optionally followed by
//! `$upstream_response_time` (ignored; it may be `-` or a list):
//!
//! ```text
//! log_format timed '$remote_addr - $remote_user [$time_local] "$request" $status '
//!                  '$body_bytes_sent "$http_referer" "$http_user_agent" $request_time';
//! 203.0.113.7 - - [07/Dec/2026:06:22:55 +0000] "GET /api/items HTTP/1.1" 200 1843 "-" "curl/8.5.0" 0.081
//! ```
//!
//! - `$request_time` (seconds, e.g. `0.081`) is the service time. It is the first field after
//!   the last quoted field (the user agent); in the `common` format plus `$request_time`
//!   (only one quoted field, the request) it is the third field after the request.
//! - nginx writes a line when the request *ends*, so arrival = end − `$request_time`.
//! - The end is `[$time_local]`, or, when the line starts with `$msec` (epoch seconds with
//!   millisecond decimals, `1733560000.123 ...`), that `$msec`, which then wins over any
//!   bracketed time on the line.
//!
//! # Apache (`apache`)
//!
//! The Common or Combined log format with `%D` (microseconds) as the last field:
//!
//! ```text
//! LogFormat "%h %l %u %t \"%r\" %>s %b \"%{Referer}i\" \"%{User-agent}i\" %D" timed
//! 203.0.113.7 - - [07/Dec/2026:07:22:55 +0100] "GET /api/items HTTP/1.1" 200 1843 "-" "curl/8.5.0" 81234
//! ```
//!
//! - `%D`, a whole number of microseconds, is the service time (`%T`, whole seconds, is too
//!   coarse and is not accepted: a bare integer is always read as `%D`).
//! - Apache's `%t` is when the request was *received*, so arrival = `%t`.
//!
//! # Times in brackets, for both logs
//!
//! `[07/Dec/2026:06:22:55 +0000]`: day, English month abbreviation (`Jan` .. `Dec`), year,
//! time, and the UTC offset, which is applied, so lines written under different offsets
//! order correctly. Such a time has a one-second resolution, which would turn every second
//! of traffic into a single burst at one instant; so the lines whose bracketed time falls in
//! the same second are spread evenly over that second, in file order: the k-th (from 0) of
//! n gets + k/n s. (For nginx the spread is applied to the end time, before subtracting
//! `$request_time`.) `$msec` times are not spread.
//!
//! The key of a log line is the path of the request line (`"GET /api/x?y=1 HTTP/1.1"` gives
//! `/api/x?y=1`); a request line of `-` or garbage (a TLS handshake sent to a plain HTTP
//! port, say) gives no key, and is not an error.
//!
//! # Auto-detection (`auto`)
//!
//! The first line that is not blank and not a comment decides:
//!
//! 1. it starts with a decimal number with a fraction followed by a space (`1733560000.123 `)
//!    and contains a `"`: nginx (`$msec` form);
//! 2. it contains both `[` and `"`: an access log; of the fields after its last quoted field,
//!    if one has a `.` (seconds with decimals, such as `$request_time` and
//!    `$upstream_response_time`): nginx; else if the last one is a whole number: Apache
//!    (`%D`); else an error asking for the format to be named;
//! 3. anything else: CSV.

use core::time::Duration;
use std::collections::BTreeMap;
use std::fmt;

/// One recorded request.
#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    /// Since the trace's first arrival (the first request arrives at zero).
    pub arrival: Duration,
    /// How long a worker thread was busy with it.
    pub service: Duration,
    /// Optional: CSV third column, or the request path from a log line ("/api/x"); None when absent.
    pub key: Option<String>,
}

/// A recorded load: requests in order of arrival.
#[derive(Clone, Debug, PartialEq)]
pub struct Trace {
    /// Sorted by arrival (stable sort: equal arrivals keep file order).
    pub requests: Vec<Request>,
    /// Which format was read (for the report line): "csv", "nginx", "apache".
    pub format: &'static str,
}

/// The format of a trace file; `Auto` decides from the first line (see the module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TraceFormat {
    Auto,
    Csv,
    Nginx,
    Apache,
}

impl TraceFormat {
    /// `"auto"`, `"csv"`, `"nginx"` or `"apache"` (any case); None for anything else.
    pub fn from_name(s: &str) -> Option<TraceFormat> {
        [
            ("auto", TraceFormat::Auto),
            ("csv", TraceFormat::Csv),
            ("nginx", TraceFormat::Nginx),
            ("apache", TraceFormat::Apache),
        ]
        .into_iter()
        .find(|(name, _)| s.trim().eq_ignore_ascii_case(name))
        .map(|(_, format)| format)
    }
}

/// A line that cannot be read: 1-based line number, the field's name, what is wrong and how to fix it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceError {
    /// 1-based; 0 when the problem is the whole file (no requests).
    pub line: usize,
    /// The column or log field at fault ("service_s", "request_time", "time_local", ...).
    pub field: &'static str,
    /// What is wrong, with what was expected and an example.
    pub problem: String,
}

impl fmt::Display for TraceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "line {}, field {}: {}",
            self.line, self.field, self.problem
        )
    }
}

impl std::error::Error for TraceError {}

/// Reads a trace file's text. See the module doc for the formats.
pub fn parse(text: &str, format: TraceFormat) -> Result<Trace, TraceError> {
    // A spreadsheet's CSV export often starts with a byte-order mark.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let format = match format {
        TraceFormat::Auto => detect(text)?,
        known => known,
    };
    let (name, rows) = match format {
        TraceFormat::Nginx => ("nginx", read_log(text, Log::Nginx)?),
        TraceFormat::Apache => ("apache", read_log(text, Log::Apache)?),
        TraceFormat::Csv | TraceFormat::Auto => ("csv", read_csv(text)?),
    };
    finish(rows, name)
}

impl Trace {
    /// Time-scaled: arrivals closer together by `speed` (2.0 = traffic twice as dense); service times unchanged.
    ///
    /// The caller validates `speed` (finite and > 0; a command-line flag is checked where it
    /// is read, with a message for the user). Here it is only debug-asserted; a release build
    /// given a bad speed still does not panic (arrivals saturate or collapse to zero).
    pub fn scaled(&self, speed: f64) -> Trace {
        debug_assert!(
            speed.is_finite() && speed > 0.0,
            "Trace::scaled: speed {speed} must be finite and > 0 (the caller checks)"
        );
        let requests = self
            .requests
            .iter()
            .map(|r| Request {
                // In whole nanoseconds, so that halving 0.123 s gives exactly 61.5 ms.
                arrival: duration_from_nanos((r.arrival.as_nanos() as f64 / speed).round()),
                service: r.service,
                key: r.key.clone(),
            })
            .collect();
        Trace {
            requests,
            format: self.format,
        }
    }

    /// Last arrival (zero when empty).
    pub fn span(&self) -> Duration {
        self.requests.last().map_or(Duration::ZERO, |r| r.arrival)
    }
}

/// Absolute times are kept as nanoseconds in an `i128` until the trace is shifted to zero:
/// wide enough for any accepted input (seconds below 1e19, years 0 to 9999) without overflow,
/// and exact for decimal seconds (an `f64` epoch is not).
const NANOS: i128 = 1_000_000_000;
const MAX_SERVICE_S: i128 = 86_400;
const CSV_EXAMPLE: &str = "write e.g. 0.125";
const TIME_EXAMPLE: &str = "[07/Dec/2026:06:22:55 +0000]";

/// A request as read, before the shift to zero.
struct Row {
    at: i128,
    service: i128,
    key: Option<String>,
}

fn finish(mut rows: Vec<Row>, format: &'static str) -> Result<Trace, TraceError> {
    rows.sort_by_key(|r| r.at); // stable: equal arrivals keep file order
    let Some(first) = rows.first().map(|r| r.at) else {
        return Err(TraceError {
            line: 0,
            field: "file",
            problem: format!(
                "no requests: the file has no {format} request lines (only blank lines, \
                 # comments or a header)"
            ),
        });
    };
    let requests = rows
        .into_iter()
        .map(|r| Request {
            arrival: duration_from_i128(r.at - first),
            service: duration_from_i128(r.service),
            key: r.key,
        })
        .collect();
    Ok(Trace { requests, format })
}

fn duration_from_i128(nanos: i128) -> Duration {
    if nanos <= 0 {
        return Duration::ZERO;
    }
    let secs = u64::try_from(nanos / NANOS).unwrap_or(u64::MAX);
    let sub = u32::try_from(nanos % NANOS).unwrap_or(0);
    Duration::new(secs, sub)
}

/// From an `f64` of nanoseconds; NaN and negatives give zero, too large saturates.
fn duration_from_nanos(nanos: f64) -> Duration {
    // `as` saturates (NaN to 0), which is what an out-of-range value should do here.
    duration_from_i128(nanos as i128)
}

/// The lines that carry data: 1-based number and trimmed text.
fn content_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .map(|(i, line)| (i + 1, line.trim()))
        .filter(|(_, line)| !line.is_empty() && !line.starts_with('#'))
}

fn error(line: usize, field: &'static str, problem: String) -> TraceError {
    TraceError {
        line,
        field,
        problem,
    }
}

/// A value quoted for a message, cut short so that a garbage line does not flood the screen.
fn show(value: &str) -> String {
    const MAX: usize = 40;
    let mut chars = value.chars();
    let head: String = chars.by_ref().take(MAX).collect();
    if chars.next().is_some() {
        format!("{head:?}...")
    } else {
        format!("{head:?}")
    }
}

// ---- numbers ------------------------------------------------------------------------------

enum Bad {
    NotNumber,
    Negative,
    NotFinite,
    TooLarge,
}

/// Plain decimal seconds (`12`, `0.125`) read exactly; beyond nanoseconds is truncated.
fn decimal_nanos(s: &str) -> Option<i128> {
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    let digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    if (int.is_empty() && frac.is_empty()) || !digits(int) || !digits(frac) || int.len() > 19 {
        return None;
    }
    let mut nanos: i128 = 0;
    for b in int.bytes() {
        nanos = nanos * 10 + i128::from(b - b'0');
    }
    let mut scale = NANOS;
    nanos *= NANOS;
    for b in frac.bytes().take(9) {
        scale /= 10;
        nanos += i128::from(b - b'0') * scale;
    }
    Some(nanos)
}

/// Seconds as nanoseconds, at least 0 and below 1e19 s.
fn seconds(s: &str) -> Result<i128, Bad> {
    if let Some(nanos) = decimal_nanos(s) {
        return Ok(nanos);
    }
    // Anything else a float parser takes (`1e-3`, `+2`, `-1`, `inf`) is judged by value.
    match s.parse::<f64>() {
        Err(_) => Err(Bad::NotNumber),
        Ok(v) if !v.is_finite() => Err(Bad::NotFinite),
        Ok(v) if v < 0.0 => Err(Bad::Negative),
        Ok(v) if v >= 1e19 => Err(Bad::TooLarge),
        Ok(v) => Ok((v * 1e9).round() as i128),
    }
}

/// Seconds, or an error whose message ends with `hint` (what is expected, with an example).
fn read_seconds(
    line: usize,
    field: &'static str,
    value: &str,
    hint: &str,
) -> Result<i128, TraceError> {
    seconds(value).map_err(|bad| {
        let v = show(value);
        let problem = match bad {
            Bad::NotNumber => format!("{v} is not a number of seconds ({hint})"),
            Bad::Negative => format!("{v} is negative: a time is 0 or more ({hint})"),
            Bad::NotFinite => format!("{v} is not a finite number of seconds ({hint})"),
            Bad::TooLarge => format!("{v} is too large: at most 1e19 seconds ({hint})"),
        };
        error(line, field, problem)
    })
}

fn check_service(
    line: usize,
    field: &'static str,
    value: &str,
    nanos: i128,
    unit: &str,
) -> Result<i128, TraceError> {
    if nanos > MAX_SERVICE_S * NANOS {
        return Err(error(
            line,
            field,
            format!(
                "{} is longer than a day (at most 86400 s): is this field really in {unit}?",
                show(value)
            ),
        ));
    }
    Ok(nanos)
}

// ---- CSV ----------------------------------------------------------------------------------

fn read_csv(text: &str) -> Result<Vec<Row>, TraceError> {
    let mut rows = Vec::new();
    let mut first = true;
    for (no, line) in content_lines(text) {
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        if std::mem::take(&mut first) && is_header(&fields) {
            continue;
        }
        if fields.len() > 3 {
            return Err(error(
                no,
                "columns",
                format!(
                    "{} columns, expected 2 or 3: arrival_s,service_s[,key] (a key cannot \
                     contain a comma)",
                    fields.len()
                ),
            ));
        }
        let looks_like_log = line.contains('[') && line.contains('"');
        let hint = if looks_like_log {
            "write e.g. 0.125; this line looks like an access log: use the format nginx or apache"
        } else {
            CSV_EXAMPLE
        };
        let at = read_seconds(no, "arrival_s", fields[0], hint)?;
        let Some(&service) = fields.get(1) else {
            return Err(error(
                no,
                "service_s",
                "missing: expected 2 or 3 columns arrival_s,service_s[,key], e.g. \
                 12.250,0.080,/api/items"
                    .to_string(),
            ));
        };
        let nanos = read_seconds(no, "service_s", service, hint)?;
        let service = check_service(no, "service_s", service, nanos, "seconds")?;
        let key = fields
            .get(2)
            .filter(|k| !k.is_empty())
            .map(|k| k.to_string());
        rows.push(Row { at, service, key });
    }
    Ok(rows)
}

/// A header names its columns: its first two fields start with a letter and are not numbers
/// (`inf` and `nan` start with a letter but are numbers, and then the line is data).
fn is_header(fields: &[&str]) -> bool {
    fields.len() >= 2
        && fields[..2]
            .iter()
            .all(|f| f.starts_with(|c: char| c.is_ascii_alphabetic()) && f.parse::<f64>().is_err())
}

// ---- access logs --------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq)]
enum Log {
    Nginx,
    Apache,
}

/// A log line cut into fields: a quoted field may contain spaces, a bracketed one too.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Tok<'a> {
    Plain(&'a str),
    Quoted(&'a str),
    Bracket(&'a str),
}

fn tokens(line: &str) -> Vec<Tok<'_>> {
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
struct LogLine<'a> {
    /// The first field, when it is a decimal number with a fraction (nginx `$msec`).
    msec: Option<&'a str>,
    time: Option<&'a str>,
    request: Option<&'a str>,
    quoted: usize,
    /// The plain fields after the last quoted one (empty when nothing is quoted).
    tail: Vec<&'a str>,
}

fn log_line(line: &str) -> LogLine<'_> {
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
fn is_fraction(s: &str) -> bool {
    s.split_once('.').is_some_and(|(int, frac)| {
        !int.is_empty()
            && !frac.is_empty()
            && int.bytes().all(|b| b.is_ascii_digit())
            && frac.bytes().all(|b| b.is_ascii_digit())
    })
}

fn is_integer(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// The path of a request line (`GET /x HTTP/1.1`); None for `-` or anything not shaped so.
fn request_path(request: &str) -> Option<String> {
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
struct Pending {
    /// Epoch nanoseconds: the end (nginx) or the start (Apache) of the request.
    stamp: i128,
    /// The second of a bracketed time, whose lines are spread over it; None for `$msec`.
    second: Option<i64>,
    service: i128,
    /// nginx stamps the end: the arrival is the stamp minus the service time.
    from_end: bool,
    key: Option<String>,
}

fn read_log(text: &str, log: Log) -> Result<Vec<Row>, TraceError> {
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

fn nginx_line(no: usize, f: &LogLine<'_>) -> Result<Pending, TraceError> {
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

fn apache_line(no: usize, f: &LogLine<'_>) -> Result<Pending, TraceError> {
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

// ---- bracketed times ----------------------------------------------------------------------

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// `07/Dec/2026:06:22:55 +0000` (without the brackets) as UTC epoch seconds; the error is
/// the problem text, naming `what` (the log's name for the field).
fn clf_time(s: &str, what: &str) -> Result<i64, String> {
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

fn is_leap(year: u32) -> bool {
    year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400))
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    // Counting years from March puts the leap day at the end of the year.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from((month + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

// ---- auto-detection -----------------------------------------------------------------------

fn detect(text: &str) -> Result<TraceFormat, TraceError> {
    let Some((no, line)) = content_lines(text).next() else {
        return Err(error(
            0,
            "file",
            "no requests: the file is empty (or only blank lines and # comments)".to_string(),
        ));
    };
    let starts_with_msec = line
        .split_once(' ')
        .is_some_and(|(first, _)| is_fraction(first));
    if starts_with_msec && line.contains('"') {
        return Ok(TraceFormat::Nginx);
    }
    if !(line.contains('[') && line.contains('"')) {
        return Ok(TraceFormat::Csv);
    }
    let fields = log_line(line);
    if fields.tail.iter().any(|t| t.contains('.')) {
        Ok(TraceFormat::Nginx)
    } else if fields.tail.last().is_some_and(|t| is_integer(t)) {
        Ok(TraceFormat::Apache)
    } else {
        Err(error(
            no,
            "format",
            "this looks like an access log, but the fields after the last quoted one are \
             neither nginx $request_time (seconds with decimals, e.g. 0.004) nor Apache %D \
             (whole microseconds, e.g. 4123): add $request_time or %D to the log format, or \
             name the format"
                .to_string(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn ns(n: u64) -> Duration {
        Duration::from_nanos(n)
    }

    fn err(text: &str, format: TraceFormat) -> TraceError {
        match parse(text, format) {
            Ok(t) => panic!("expected an error, got {t:?}"),
            Err(e) => e,
        }
    }

    fn arrivals(t: &Trace) -> Vec<Duration> {
        t.requests.iter().map(|r| r.arrival).collect()
    }

    const NGINX_LINE: &str = "203.0.113.7 - - [07/Dec/2026:06:22:55 +0000] \
        \"GET /api/items?page=2 HTTP/1.1\" 200 1843 \"-\" \"curl/8.5.0\" 0.081 0.080";
    const APACHE_LINE: &str = "203.0.113.7 - - [07/Dec/2026:07:22:55 +0100] \
        \"GET /api/items HTTP/1.1\" 200 1843 \"-\" \"curl/8.5.0\" 81234";

    #[test]
    fn csv_exact_values_shift_and_keys() {
        let t = parse(
            "100.5,0.080,/api/items\n101.25,1.5\n100.5,0,  /x y  \n",
            TraceFormat::Csv,
        )
        .unwrap();
        assert_eq!(t.format, "csv");
        assert_eq!(
            t.requests,
            vec![
                Request {
                    arrival: ms(0),
                    service: ms(80),
                    key: Some("/api/items".into())
                },
                Request {
                    arrival: ms(0),
                    service: ms(0),
                    key: Some("/x y".into())
                },
                Request {
                    arrival: ms(750),
                    service: ms(1500),
                    key: None
                },
            ]
        );
        assert_eq!(t.span(), ms(750));
    }

    #[test]
    fn csv_epoch_seconds_are_exact() {
        let t = parse(
            "1733560000.123,0.004\n1733560000.124,0.001\n",
            TraceFormat::Csv,
        )
        .unwrap();
        assert_eq!(arrivals(&t), vec![ms(0), ms(1)]);
        assert_eq!(t.requests[0].service, ms(4));
    }

    #[test]
    fn csv_unsorted_is_sorted_stably() {
        let t = parse("3,0.1,c\n1,0.1,a\n2,0.1,b\n1,0.1,a2\n", TraceFormat::Csv).unwrap();
        let keys: Vec<_> = t.requests.iter().map(|r| r.key.clone().unwrap()).collect();
        assert_eq!(keys, ["a", "a2", "b", "c"]);
        assert_eq!(arrivals(&t), vec![ms(0), ms(0), ms(1000), ms(2000)]);
    }

    #[test]
    fn csv_header_comments_and_blank_lines_are_skipped() {
        let text =
            "\u{feff}# made by hand\n\nTime,Duration,Path\n  \n0.5,0.25,/a\n# done\n1e0,2.5e-1\n";
        let t = parse(text, TraceFormat::Auto).unwrap();
        assert_eq!(t.format, "csv");
        assert_eq!(arrivals(&t), vec![ms(0), ms(500)]);
        assert_eq!(t.requests[1].service, ms(250));
        // A header is only the first data line: later it is an error.
        let e = err("0,1\narrival_s,service_s\n", TraceFormat::Csv);
        assert_eq!((e.line, e.field), (2, "arrival_s"));
        // "nan" is a number (not finite), not a name: no header.
        let e = err("nan,inf\n", TraceFormat::Csv);
        assert_eq!((e.line, e.field), (1, "arrival_s"));
    }

    #[test]
    fn csv_errors_name_line_and_field() {
        let e = err("arrival_s,service_s\n0,0.1\n\n1,abc\n", TraceFormat::Csv);
        assert_eq!((e.line, e.field), (4, "service_s"));
        assert_eq!(
            e.to_string(),
            "line 4, field service_s: \"abc\" is not a number of seconds (write e.g. 0.125)"
        );
        let e = err("0,0.1\n-1,0.1\n", TraceFormat::Csv);
        assert_eq!((e.line, e.field), (2, "arrival_s"));
        assert!(e.problem.contains("negative"), "{e}");
        let e = err("0,-0.5\n", TraceFormat::Csv);
        assert_eq!((e.line, e.field), (1, "service_s"));
        assert!(e.problem.contains("negative"), "{e}");
        let e = err("0,0.1\n1\n", TraceFormat::Csv);
        assert_eq!((e.line, e.field), (2, "service_s"));
        assert!(e.problem.starts_with("missing"), "{e}");
        let e = err("0,0.1,/a,b\n", TraceFormat::Csv);
        assert_eq!((e.line, e.field), (1, "columns"));
        assert!(e.problem.starts_with("4 columns"), "{e}");
        let e = err("0,90000\n", TraceFormat::Csv);
        assert_eq!((e.line, e.field), (1, "service_s"));
        assert!(e.problem.contains("longer than a day"), "{e}");
        let e = err("inf,0.1\n", TraceFormat::Csv);
        assert!(e.problem.contains("finite"), "{e}");
        let e = err("0,0,1\n0,0\n0,0,1,2,3\n", TraceFormat::Auto);
        assert_eq!((e.line, e.field), (3, "columns"));
    }

    #[test]
    fn empty_file_is_an_error() {
        for format in [
            TraceFormat::Auto,
            TraceFormat::Csv,
            TraceFormat::Nginx,
            TraceFormat::Apache,
        ] {
            for text in ["", "\n\n", "# nothing\n", "arrival_s,service_s\n"] {
                let is_log = format == TraceFormat::Nginx || format == TraceFormat::Apache;
                if is_log && text.starts_with('a') {
                    continue; // a CSV header is a bad log line, not an empty file
                }
                let e = err(text, format);
                assert_eq!((e.line, e.field), (0, "file"), "{text:?} as {format:?}");
                assert!(e.problem.starts_with("no requests"), "{e}");
            }
        }
    }

    #[test]
    fn nginx_arrival_is_end_minus_request_time() {
        let text = format!(
            "{NGINX_LINE}\n{}",
            NGINX_LINE
                .replace(":55 +", ":57 +")
                .replace("0.081", "1.500")
        );
        let t = parse(&text, TraceFormat::Nginx).unwrap();
        assert_eq!(t.format, "nginx");
        // Ends at 55 and 57 s; arrivals at 55 - 0.081 and 57 - 1.5 = 55.5.
        assert_eq!(arrivals(&t), vec![ms(0), ms(581)]);
        assert_eq!(t.requests[0].service, ms(81));
        assert_eq!(t.requests[1].service, ms(1500));
        assert_eq!(t.requests[0].key.as_deref(), Some("/api/items?page=2"));
    }

    #[test]
    fn nginx_msec_form() {
        let text = "1733560000.500 10.0.0.1 - - \"GET /a HTTP/1.1\" 200 5 \"-\" \"ua\" 0.100 -\n\
                    1733560000.200 10.0.0.1 - - \"GET /b HTTP/1.1\" 200 5 \"-\" \"ua\" 0.050\n";
        let t = parse(text, TraceFormat::Auto).unwrap();
        assert_eq!(t.format, "nginx");
        // Arrivals 0.400 and 0.150: /b first.
        assert_eq!(t.requests[0].key.as_deref(), Some("/b"));
        assert_eq!(arrivals(&t), vec![ms(0), ms(250)]);
        let e = err(
            "1733560000.5x 10.0.0.1 \"GET / HTTP/1.1\" 200 5 \"-\" \"ua\" 0.1\n",
            TraceFormat::Nginx,
        );
        assert_eq!((e.line, e.field), (1, "time_local"));
    }

    #[test]
    fn nginx_common_format_with_request_time() {
        let text = "10.0.0.1 - - [07/Dec/2026:06:22:55 +0000] \"GET /c HTTP/1.1\" 304 - 0.012\n";
        let t = parse(text, TraceFormat::Auto).unwrap();
        assert_eq!(t.format, "nginx");
        assert_eq!(t.requests[0].service, ms(12));
        assert_eq!(t.requests[0].key.as_deref(), Some("/c"));
    }

    #[test]
    fn same_second_is_spread_in_file_order() {
        let line = |sec: u32, rt: &str| {
            format!("1.2.3.4 - - [07/Dec/2026:06:22:{sec:02} +0000] \"GET /{sec} HTTP/1.1\" 200 1 \"-\" \"ua\" {rt}\n")
        };
        let text = [
            line(10, "0.000"),
            line(10, "0.000"),
            line(10, "0.000"),
            line(11, "0.000"),
        ]
        .concat();
        let t = parse(&text, TraceFormat::Nginx).unwrap();
        assert_eq!(
            arrivals(&t),
            vec![ns(0), ns(333_333_333), ns(666_666_666), ms(1000)]
        );
        // Apache: the same spreading of the received time.
        let a = |sec: u32| {
            format!("1.2.3.4 - - [07/Dec/2026:06:22:{sec:02} +0000] \"GET / HTTP/1.1\" 200 1 7\n")
        };
        let t = parse(&[a(5), a(5), a(6), a(5)].concat(), TraceFormat::Apache).unwrap();
        assert_eq!(
            arrivals(&t),
            vec![ns(0), ns(333_333_333), ns(666_666_666), ms(1000)]
        );
        assert_eq!(t.requests[3].service, Duration::from_micros(7));
    }

    #[test]
    fn timezone_offsets_are_applied() {
        // 01:22:50 -0500 is 06:22:50 UTC, five seconds before 06:22:55 +0000; 07:22:58 +0130
        // is 05:52:58 UTC, the earliest of the three although its local time is the latest.
        let text = format!(
            "{}\n{}\n{}\n",
            NGINX_LINE.replace("0.081", "0.000"),
            NGINX_LINE
                .replace("06:22:55 +0000", "01:22:50 -0500")
                .replace("0.081", "0.000")
                .replace("/api/items?page=2", "/early"),
            NGINX_LINE
                .replace("06:22:55 +0000", "07:22:58 +0130")
                .replace("0.081", "0.000")
                .replace("/api/items?page=2", "/india"),
        );
        let t = parse(&text, TraceFormat::Nginx).unwrap();
        let keys: Vec<_> = t.requests.iter().map(|r| r.key.clone().unwrap()).collect();
        assert_eq!(keys, ["/india", "/early", "/api/items?page=2"]);
        assert_eq!(arrivals(&t), vec![ms(0), ms(1_792_000), ms(1_797_000)]);
    }

    #[test]
    fn days_from_civil_matches_known_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(1969, 12, 31), -1);
        // 2024-12-07T06:22:55Z is epoch 1733552575.
        assert_eq!(
            clf_time("07/Dec/2024:06:22:55 +0000", "t"),
            Ok(1_733_552_575)
        );
        assert_eq!(
            clf_time("07/Dec/2024:07:22:55 +0100", "t"),
            Ok(1_733_552_575)
        );
        assert_eq!(
            clf_time("29/Feb/2024:00:00:00 +0000", "t").map(|s| s % 86_400),
            Ok(0)
        );
        assert!(clf_time("29/Feb/2026:00:00:00 +0000", "t").is_err());
    }

    #[test]
    fn apache_combined_with_d() {
        let text = format!(
            "{APACHE_LINE}\n{}\n",
            APACHE_LINE.replace(":55 +", ":56 +").replace("81234", "5")
        );
        let t = parse(&text, TraceFormat::Apache).unwrap();
        assert_eq!(t.format, "apache");
        assert_eq!(arrivals(&t), vec![ms(0), ms(1000)]);
        assert_eq!(t.requests[0].service, Duration::from_micros(81_234));
        assert_eq!(t.requests[1].service, Duration::from_micros(5));
    }

    #[test]
    fn auto_detects_each_format() {
        assert_eq!(
            parse(NGINX_LINE, TraceFormat::Auto).unwrap().format,
            "nginx"
        );
        let no_upstream = NGINX_LINE.trim_end_matches(" 0.080");
        assert_eq!(
            parse(no_upstream, TraceFormat::Auto).unwrap().format,
            "nginx"
        );
        let dash_upstream = NGINX_LINE.replace(" 0.080", " -");
        assert_eq!(
            parse(&dash_upstream, TraceFormat::Auto).unwrap().format,
            "nginx"
        );
        assert_eq!(
            parse(APACHE_LINE, TraceFormat::Auto).unwrap().format,
            "apache"
        );
        assert_eq!(
            parse("# c\nt,s\n1,2\n", TraceFormat::Auto).unwrap().format,
            "csv"
        );
        let e = err(
            "1.2.3.4 - - [07/Dec/2026:06:22:55 +0000] \"GET / HTTP/1.1\" 200 1 \"-\" \"ua\"\n",
            TraceFormat::Auto,
        );
        assert_eq!((e.line, e.field), (1, "format"));
    }

    #[test]
    fn log_keys() {
        assert_eq!(
            request_path("GET /api/x?y=1 HTTP/1.1").as_deref(),
            Some("/api/x?y=1")
        );
        assert_eq!(request_path("GET /old").as_deref(), Some("/old"));
        assert_eq!(request_path("-"), None);
        assert_eq!(request_path("\\x16\\x03\\x01\\x00"), None);
        assert_eq!(request_path("GET / HTTP/1.1 extra"), None);
        let line = NGINX_LINE.replace("GET /api/items?page=2 HTTP/1.1", "-");
        assert_eq!(
            parse(&line, TraceFormat::Nginx).unwrap().requests[0].key,
            None
        );
        // Apache escapes a quote in the request as \".
        let line = APACHE_LINE.replace("GET /api/items", "GET /q?a=\\\"b\\\"");
        let t = parse(&line, TraceFormat::Apache).unwrap();
        assert_eq!(t.requests[0].key.as_deref(), Some("/q?a=\\\"b\\\""));
    }

    #[test]
    fn log_errors_name_line_and_field() {
        let two = |bad: &str| format!("{NGINX_LINE}\n\n{bad}\n");
        let e = err(
            &two(&NGINX_LINE.replace("0.081", "0,081")),
            TraceFormat::Nginx,
        );
        assert_eq!((e.line, e.field), (3, "request_time"));
        assert_eq!(
            e.to_string(),
            "line 3, field request_time: \"0,081\" is not a number of seconds (nginx $request_time, e.g. 0.004)"
        );
        let e = err(
            &two(&NGINX_LINE.replace("0.081", "-0.081")),
            TraceFormat::Nginx,
        );
        assert_eq!((e.line, e.field), (3, "request_time"));
        assert!(e.problem.contains("negative"), "{e}");
        let e = err(&two(&NGINX_LINE.replace("Dec", "Dex")), TraceFormat::Nginx);
        assert_eq!((e.line, e.field), (3, "time_local"));
        assert!(e.problem.contains("\"Dex\" is not a month"), "{e}");
        let e = err(
            &two(&NGINX_LINE.replace("07/Dec/2026:06:22:55", "2026-12-07T06:22:55")),
            TraceFormat::Nginx,
        );
        assert_eq!((e.line, e.field), (3, "time_local"));
        assert!(e.problem.contains("is not a time"), "{e}");
        let e = err(&two(&NGINX_LINE.replace(" +0000", "")), TraceFormat::Nginx);
        assert_eq!((e.line, e.field), (3, "time_local"));
        let e = err(
            &two(&NGINX_LINE.replace("06:22:55", "24:22:55")),
            TraceFormat::Nginx,
        );
        assert_eq!((e.line, e.field), (3, "time_local"));
        let e = err(
            &two(&NGINX_LINE.replace(" [07/Dec/2026:06:22:55 +0000]", "")),
            TraceFormat::Nginx,
        );
        assert_eq!((e.line, e.field), (3, "time_local"));
        assert!(e.problem.starts_with("missing"), "{e}");
        let e = err(
            &two(&NGINX_LINE.replace(" 0.081 0.080", "")),
            TraceFormat::Nginx,
        );
        assert_eq!((e.line, e.field), (3, "request_time"));
        assert!(e.problem.starts_with("missing"), "{e}");

        let e = err(
            &format!(
                "{APACHE_LINE}\n{}\n",
                APACHE_LINE.replace("81234", "81.234")
            ),
            TraceFormat::Apache,
        );
        assert_eq!((e.line, e.field), (2, "D"));
        assert!(e.problem.contains("whole number of microseconds"), "{e}");
        let e = err(&APACHE_LINE.replace("Dec", "dez"), TraceFormat::Apache);
        assert_eq!((e.line, e.field), (1, "time"));
        assert!(
            e.problem.contains("not a month") && e.problem.contains("Apache %t"),
            "{e}"
        );
        let e = err(
            &APACHE_LINE.replace(
                "[07/Dec/2026:07:22:55 +0100]",
                "[31/Nov/2026:07:22:55 +0100]",
            ),
            TraceFormat::Apache,
        );
        assert_eq!((e.line, e.field), (1, "time"));
        let e = err(
            &APACHE_LINE.replace("81234", "99999999999999999999999999"),
            TraceFormat::Apache,
        );
        assert_eq!((e.line, e.field), (1, "D"));
        assert!(e.problem.contains("longer than a day"), "{e}");
        let e = err(
            "1733560000.1x0 - \"GET / HTTP/1.1\" 1 2 \"-\" \"-\" 0.1\n",
            TraceFormat::Nginx,
        );
        assert_eq!(e.field, "time_local");
    }

    #[test]
    fn scaled_halves_arrivals_and_keeps_service() {
        let t = parse("0,0.5,a\n0.123,0.25\n3,2\n", TraceFormat::Csv).unwrap();
        let s = t.scaled(2.0);
        assert_eq!(arrivals(&s), vec![ms(0), ns(61_500_000), ms(1500)]);
        let services: Vec<_> = s.requests.iter().map(|r| r.service).collect();
        assert_eq!(services, vec![ms(500), ms(250), ms(2000)]);
        assert_eq!(s.requests[0].key.as_deref(), Some("a"));
        assert_eq!(s.format, "csv");
        assert_eq!(t.scaled(0.5).span(), ms(6000));
        assert_eq!(
            Trace {
                requests: vec![],
                format: "csv"
            }
            .span(),
            Duration::ZERO
        );
    }

    #[test]
    fn format_names() {
        assert_eq!(TraceFormat::from_name("auto"), Some(TraceFormat::Auto));
        assert_eq!(TraceFormat::from_name("csv"), Some(TraceFormat::Csv));
        assert_eq!(TraceFormat::from_name("nginx"), Some(TraceFormat::Nginx));
        assert_eq!(TraceFormat::from_name("Apache"), Some(TraceFormat::Apache));
        assert_eq!(TraceFormat::from_name("json"), None);
    }

    #[test]
    fn example_csv() {
        let t = parse(include_str!("../../traces/example.csv"), TraceFormat::Auto).unwrap();
        assert_eq!(t.format, "csv");
        assert_eq!(t.requests.len(), 2984);
        // The first line is 0.036,0.149,/api/search; the trace starts at zero.
        assert_eq!(
            t.requests[0],
            Request {
                arrival: ms(0),
                service: ms(149),
                key: Some("/api/search".into())
            }
        );
        assert_eq!(t.requests[1].arrival, ms(160));
        assert_eq!(t.span(), ms(299_955 - 36));
        assert!(t.requests.windows(2).all(|w| w[0].arrival <= w[1].arrival));
    }

    #[test]
    fn example_nginx_log() {
        let t = parse(
            include_str!("../../traces/example-nginx.log"),
            TraceFormat::Auto,
        )
        .unwrap();
        assert_eq!(t.format, "nginx");
        assert_eq!(t.requests.len(), 12);
        // The first line ends at 06:22:55 after 0.081 s, so it arrived first, at -0.081 s.
        // The second ends in the same second, spread to +0.5 s: arrival 0.498 (+0.081).
        assert_eq!(
            t.requests[1],
            Request {
                arrival: ms(579),
                service: ms(2),
                key: Some("/static/app.js".into())
            }
        );
        // Three requests end in 06:22:57: at +0, +1/3, +2/3 s.
        assert_eq!(t.requests[4].arrival, ns(2_350_333_333));
        assert_eq!(t.requests[6].key, None); // a TLS handshake on the HTTP port
        assert_eq!(t.requests[8].arrival, ms(4207));
        assert_eq!(t.requests[8].service, ms(1874));
        assert_eq!(t.span(), ms(8002));
    }

    #[test]
    fn example_apache_log() {
        let t = parse(
            include_str!("../../traces/example-apache.log"),
            TraceFormat::Auto,
        )
        .unwrap();
        assert_eq!(t.format, "apache");
        assert_eq!(t.requests.len(), 12);
        assert_eq!(
            arrivals(&t)[..6],
            [
                ms(0),
                ms(500),
                ms(1000),
                ms(2000),
                ns(2_333_333_333),
                ns(2_666_666_666)
            ]
        );
        assert_eq!(t.requests[0].service, Duration::from_micros(81_234));
        assert_eq!(t.requests[6].key, None); // "-": the client sent nothing before the timeout
        assert_eq!(t.requests[6].service, Duration::from_micros(20_001_843));
        assert_eq!(t.span(), ms(8000));
    }

    /// A tiny deterministic generator, so the no-panic test needs no dependency.
    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            self.0 >> 33
        }
    }

    #[test]
    fn no_panic_on_prefixes_mutations_and_garbage() {
        let formats = [
            TraceFormat::Auto,
            TraceFormat::Csv,
            TraceFormat::Nginx,
            TraceFormat::Apache,
        ];
        let msec = "1733560000.123 10.0.0.1 - - \"GET /a HTTP/1.1\" 200 5 \"-\" \"ua\" 0.004 -";
        let csv = "arrival_s,service_s,key\n1733560000.125,0.080,/api/items";
        let seeds = [NGINX_LINE, APACHE_LINE, msec, csv, "0.5,1e3,é\u{301}ü"];
        let mut inputs: Vec<String> = Vec::new();
        for seed in seeds {
            for (i, _) in seed.char_indices().chain([(seed.len(), ' ')]) {
                inputs.push(seed[..i].to_string());
                inputs.push(format!("{}\n{}", seed, &seed[..i]));
                inputs.push(seed[i..].to_string());
            }
        }
        let mut rng = Lcg(7);
        let alphabet = b"0123456789.,:-+/[]\" \n#eE\\abcDecJanGET";
        for _ in 0..3000 {
            let seed = seeds[rng.next() as usize % seeds.len()].as_bytes();
            let mut bytes = seed.to_vec();
            for _ in 0..1 + rng.next() % 4 {
                if bytes.is_empty() {
                    break;
                }
                let at = rng.next() as usize % bytes.len();
                match rng.next() % 3 {
                    0 => bytes[at] = alphabet[rng.next() as usize % alphabet.len()],
                    1 => bytes[at] = rng.next() as u8,
                    _ => {
                        bytes.remove(at);
                    }
                }
            }
            inputs.push(String::from_utf8_lossy(&bytes).into_owned());
            let noise: Vec<u8> = (0..rng.next() % 80).map(|_| rng.next() as u8).collect();
            inputs.push(String::from_utf8_lossy(&noise).into_owned());
        }
        for extreme in [
            "99999999999999999999.9,0",
            "18446744073709551615,0\n0,0",
            "1e18,0\n0,0",
            "0.0000000001,0",
        ] {
            inputs.push(extreme.to_string());
        }
        for text in &inputs {
            for format in formats {
                match parse(text, format) {
                    Ok(t) => {
                        let _ = t.scaled(3.0).span();
                        assert!(t.requests.windows(2).all(|w| w[0].arrival <= w[1].arrival));
                    }
                    Err(e) => {
                        let _ = e.to_string();
                    }
                }
            }
        }
    }
}
