//! Reading the model off a real run: drover's own log says when each worker was forked
//! (`do spawn`), when the fork returned (`in spawned`) and when the worker said it was
//! ready (`in ready`, with `--readiness notify`), so it gives the boot time and the cost of
//! a fork that blocked the loop; an access log or trace gives the service times. It owns
//! the log's reading and the fit of a spread to the measured durations; it must not run
//! anything, and reads the supervisor's trace lines only (their format is the machine's
//! `trace` module's: `<seconds>s  in|do|ev  <name>  key=value ...`), in drover's text log or
//! inside the `message` of its JSON lines (`--log-format json`). A line's time is its UTC
//! stamp (microseconds) where it has one, else the trace's own seconds (milliseconds: too
//! coarse for a fork's cost).

use core::fmt::Write as _;
use core::time::Duration;
use std::collections::BTreeMap;

use crate::lab::trace::utc_stamp_ns;
use crate::world::model::show;
use crate::world::Spread;

/// Fewer samples than this give a fixed duration (their median), not a fitted spread.
const FIT_MIN: usize = 5;
/// A log-normal shape below this is a constant for the simulator's purposes.
const SIGMA_MIN: f64 = 0.05;

/// What a real run measured.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Measured {
    /// From the fork's return to the worker's readiness, one per worker that got ready.
    pub boots: Vec<Duration>,
    /// How long each fork kept the supervisor's loop (from `do spawn` to `in spawned`).
    pub spawn_costs: Vec<Duration>,
    /// Workers forked.
    pub spawned: usize,
    /// Supervisor trace lines read.
    pub lines: usize,
}

/// Reads drover's log (text or JSON lines, as written to stderr or `--log-file`). Lines
/// that are not supervisor trace lines are skipped; a log without any is an error.
pub fn read_log(text: &str) -> Result<Measured, String> {
    let mut m = Measured::default();
    // By worker id (`w=slot.incarnation`): when its fork was asked for and when it returned.
    let mut asked: BTreeMap<String, f64> = BTreeMap::new();
    let mut forked: BTreeMap<String, f64> = BTreeMap::new();
    // Stamps count from the first one, so that seconds since the epoch keep their
    // microseconds in an f64.
    let mut first_stamp: Option<i128> = None;
    for raw in text.lines() {
        let (stamp, line) = stamped(raw);
        let Some((relative, dir, name, fields)) = trace_line(&line) else {
            continue;
        };
        let t = match stamp {
            Some(ns) => (ns - *first_stamp.get_or_insert(ns)) as f64 / 1e9,
            None => relative,
        };
        m.lines += 1;
        let Some(w) = field(fields, "w") else {
            continue;
        };
        match (dir, name) {
            ("do", "spawn") => {
                asked.insert(w.to_string(), t);
            }
            ("in", "spawned") => {
                m.spawned += 1;
                if let Some(at) = asked.remove(w) {
                    m.spawn_costs.push(secs(t - at));
                }
                forked.insert(w.to_string(), t);
            }
            ("in", "ready") => {
                if let Some(at) = forked.remove(w) {
                    m.boots.push(secs(t - at));
                }
            }
            _ => {}
        }
    }
    if m.lines == 0 {
        return Err(
            "no supervisor trace lines (`0.002s  in  spawned  w=0.1 pid=…`): give drover's own log, as it writes it to stderr"
                .into(),
        );
    }
    Ok(m)
}

/// A log line's UTC stamp (ns since the epoch) and its text: the first word of a text line,
/// or a JSON line's `timestamp` and `message`.
fn stamped(line: &str) -> (Option<i128>, std::borrow::Cow<'_, str>) {
    let trimmed = line.trim_start();
    if trimmed.starts_with('{') {
        let stamp = json_string(trimmed, "timestamp").and_then(|s| utc_stamp_ns(&s));
        return match json_string(trimmed, "message") {
            Some(message) => (stamp, message.into()),
            None => (None, line.into()),
        };
    }
    let stamp = trimmed.split_whitespace().next().and_then(utc_stamp_ns);
    (stamp, line.into())
}

/// The string value of `"key":"…"` in a one-line JSON object (escapes undone), without a
/// JSON parser: drover writes its keys once each, as plain strings.
fn json_string(line: &str, key: &str) -> Option<String> {
    let at = line.find(&format!("\"{key}\":\""))? + key.len() + 4;
    let mut out = String::new();
    let mut chars = line[at..].chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(out),
            '\\' => match chars.next()? {
                'n' => out.push('\n'),
                't' => out.push('\t'),
                'u' => {
                    let hex: String = chars.by_ref().take(4).collect();
                    out.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
                }
                other => out.push(other),
            },
            c => out.push(c),
        }
    }
    None
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.max(0.0))
}

/// `<seconds>s  in|do|ev  <name>  fields…` anywhere in the line (after a log prefix).
fn trace_line(line: &str) -> Option<(f64, &str, &str, &str)> {
    let tokens: Vec<&str> = line.split_whitespace().collect();
    let i = tokens.windows(3).position(|w| {
        w[0].strip_suffix('s')
            .is_some_and(|n| n.parse::<f64>().is_ok_and(f64::is_finite))
            && matches!(w[1], "in" | "do" | "ev")
    })?;
    let t: f64 = tokens[i].strip_suffix('s')?.parse().ok()?;
    let name = tokens[i + 2];
    // The fields are the rest of the line after the name.
    let after_name = line.find(&format!(" {name}"))? + name.len() + 1;
    Some((t, tokens[i + 1], name, line.get(after_name..)?.trim()))
}

fn field<'a>(fields: &'a str, key: &str) -> Option<&'a str> {
    fields
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
}

/// The spread the simulator should draw from to reproduce `samples`: log-normal (median and
/// shape of the logs) when there are enough and they vary, else their median.
pub fn fit(samples: &[Duration]) -> Option<Spread> {
    let mut sorted: Vec<Duration> = samples.to_vec();
    sorted.sort();
    let median = *sorted.get(sorted.len() / 2)?;
    // A log's zero (nginx writes 0.000 for a request under its millisecond) is below its
    // resolution, not nothing: half the smallest measured duration stands in for it.
    let smallest = sorted
        .iter()
        .map(Duration::as_secs_f64)
        .find(|&s| s > 0.0)
        .unwrap_or(0.0);
    let positive: Vec<f64> = sorted
        .iter()
        .map(|d| d.as_secs_f64().max(smallest / 2.0))
        .filter(|&s| s > 0.0)
        .collect();
    if positive.len() < FIT_MIN {
        return Some(Spread::Fixed(round_us(median)));
    }
    // Matched at the median and the 90th percentile (z = 1.2816) rather than fitted to the
    // mean of the logs: real service times are mixtures (cached and uncached, cheap and dear
    // routes), and the body and the tail are what the queue feels.
    let at = |p: f64| positive[((p / 100.0) * (positive.len() - 1) as f64).round() as usize];
    let (p50, p90) = (at(50.0), at(90.0));
    let sigma = ((p90 / p50).ln() / 1.2816 * 100.0).round() / 100.0;
    if sigma < SIGMA_MIN {
        return Some(Spread::Fixed(round_us(median)));
    }
    Some(Spread::LogNormal {
        median: round_us(Duration::from_secs_f64(p50)),
        sigma,
    })
}

/// Three significant digits are all a measurement holds: whole milliseconds from 10 ms up,
/// microseconds below.
fn round_us(d: Duration) -> Duration {
    if d >= Duration::from_millis(10) {
        Duration::from_millis((d.as_secs_f64() * 1000.0).round() as u64)
    } else {
        Duration::from_micros(d.as_micros() as u64)
    }
}

/// The calibration's report: what was measured and the flags that make the simulator's
/// world match it.
pub fn report(m: &Measured, services: Option<(&str, &[Duration])>) -> String {
    let mut out = String::new();
    let mut flags = Vec::new();
    let _ = writeln!(
        out,
        "read {} supervisor trace lines: {} workers forked, {} became ready",
        m.lines,
        m.spawned,
        m.boots.len()
    );
    // `fixed`: the flag takes one duration (the median), not a spread.
    let mut line = |what: &str, flag: &str, samples: &[Duration], fixed: bool, none: &str| {
        let spread = fit(samples).map(|s| match s {
            Spread::LogNormal { median, .. } if fixed => Spread::Fixed(median),
            s => s,
        });
        match spread {
            None => {
                let _ = writeln!(out, "{what}: {none}");
            }
            Some(spread) => {
                let _ = writeln!(out, "{what}: {} → {flag} {spread}", summary(samples));
                flags.push(format!("{flag} {spread}"));
            }
        }
    };
    line(
        "boot time (fork returned → ready)",
        "--boot-time",
        &m.boots,
        false,
        "not measured: no worker said it was ready (run drover with --readiness notify, so \
         that it hears when a worker is ready)",
    );
    line(
        "spawn cost (the loop blocked from spawn to spawned)",
        "--spawn-cost",
        &m.spawn_costs,
        true,
        "not measured: no spawn in the log",
    );
    if let Some((source, s)) = services {
        line(
            &format!("service time ({source})"),
            "--service-time",
            s,
            false,
            "not measured: no requests",
        );
    }
    let _ = writeln!(out, "flags: {}", flags.join(" "));
    out
}

fn summary(samples: &[Duration]) -> String {
    let mut s = samples.to_vec();
    s.sort();
    let at = |p: f64| s[((p / 100.0) * (s.len() - 1) as f64).round() as usize];
    format!(
        "{} samples, min {}, median {}, p90 {}, max {}",
        s.len(),
        show(round_us(s[0])),
        show(round_us(at(50.0))),
        show(round_us(at(90.0))),
        show(round_us(s[s.len() - 1]))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "\
2026-12-07T06:56:52.470973Z  INFO drover{pid=28937}: listening on 127.0.0.1:18799 name=listen0
2026-12-07T06:56:52.471411Z  INFO drover{pid=28937}:     0.000s  do  spawn          w=0.1 gen=1
2026-12-07T06:56:52.471901Z  INFO drover{pid=28937}:     0.002s  in  spawned        w=0.1 pid=28939
2026-12-07T06:56:52.471915Z  INFO drover{pid=28937}:     0.002s  do  spawn          w=1.1 gen=1
2026-12-07T06:56:52.473960Z  INFO drover{pid=28937}:     0.005s  in  spawned        w=1.1 pid=28940
2026-12-07T06:56:52.973960Z  INFO drover{pid=28937}:     0.302s  in  ready          w=0.1
2026-12-07T06:56:52.973960Z  INFO drover{pid=28937}:     0.325s  in  ready          w=1.1
2026-12-07T06:56:52.973983Z  INFO drover{pid=28937}:     0.325s  ev  pool-ready     ready=2
";

    /// The log's text lines without their stamps: the trace's own seconds only.
    fn unstamped() -> String {
        LOG.lines()
            .map(|l| l.split_once("}: ").map_or(l, |(_, rest)| rest))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// To the nearest microsecond (the durations come through an f64 of seconds).
    fn us(d: &[Duration]) -> Vec<u128> {
        d.iter().map(|d| (d.as_nanos() + 500) / 1000).collect()
    }

    #[test]
    fn boot_times_and_spawn_costs_come_from_the_trace_lines() {
        // Without stamps: the trace's milliseconds.
        let m = read_log(&unstamped()).unwrap();
        assert_eq!(m.spawned, 2);
        assert_eq!(m.lines, 7);
        assert_eq!(us(&m.boots), [300_000, 320_000]);
        assert_eq!(us(&m.spawn_costs), [2_000, 3_000]);
        let r = report(&m, None);
        assert!(r.contains("--boot-time 320ms"), "{r}");
        assert!(r.contains("--spawn-cost 3ms"), "{r}");
        let e = read_log("nothing here\n").unwrap_err();
        assert!(e.contains("supervisor trace lines"), "{e}");
        let no_ready: String = unstamped()
            .lines()
            .filter(|l| !l.contains(" ready "))
            .collect::<Vec<_>>()
            .join("\n");
        let r = report(&read_log(&no_ready).unwrap(), None);
        assert!(r.contains("--readiness notify"), "{r}");
    }

    #[test]
    fn a_lines_utc_stamp_beats_the_traces_milliseconds_in_text_and_json_logs() {
        let m = read_log(LOG).unwrap();
        assert_eq!(m.lines, 7);
        assert_eq!(us(&m.spawn_costs), [490, 2_045], "sub-millisecond forks");
        assert_eq!(us(&m.boots), [502_059, 500_000]);
        // The same lines as `--log-format json` writes them.
        let json: String = LOG
            .lines()
            .map(|l| {
                let (stamp, rest) = l.split_once(' ').unwrap();
                let message = rest.split_once("}: ").unwrap().1;
                format!(
                    "{{\"timestamp\":\"{stamp}\",\"level\":\"INFO\",\"pid\":28937,\"message\":\"{}\",\"fields\":{{}}}}",
                    message.replace('"', "\\\"")
                )
            })
            .collect::<Vec<_>>()
            .join("\n");
        assert_eq!(read_log(&json).unwrap(), m, "{json}");
    }

    #[test]
    fn a_lognormal_sample_fits_back_to_its_parameters() {
        let mut rng = crate::rng::Rng::new(5, crate::rng::Stream::Load);
        let truth = Spread::LogNormal {
            median: Duration::from_millis(80),
            sigma: 0.8,
        };
        let samples: Vec<Duration> = (0..5000).map(|_| truth.draw(&mut rng)).collect();
        match fit(&samples) {
            Some(Spread::LogNormal { median, sigma }) => {
                assert!((median.as_secs_f64() - 0.080).abs() < 0.004, "{median:?}");
                assert!((sigma - 0.8).abs() < 0.03, "{sigma}");
            }
            other => panic!("{other:?}"),
        }
        let constant = vec![Duration::from_millis(300); 10];
        assert_eq!(
            fit(&constant),
            Some(Spread::Fixed(Duration::from_millis(300)))
        );
        assert_eq!(fit(&[]), None);
    }
}
