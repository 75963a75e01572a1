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
//!
//! The readers are `csv` and `log` (with `clf_time` for the logs' bracketed times); `number`
//! reads and bounds seconds for both.

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

mod clf_time;
mod csv;
mod log;
mod number;
#[cfg(test)]
mod tests;

use clf_time::*;
/// Days since 1970-01-01 of a date: what the log readers (here and the benchmarks') date by.
pub use clf_time::{days_from_civil, utc_stamp_ns};
use csv::*;
use log::*;
use number::*;
