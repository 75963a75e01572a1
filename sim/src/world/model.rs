//! The model of the served program and its clients, made explicit: how long a worker takes to
//! boot, how long a request holds a thread (and what it costs beyond its service), how many
//! connections the accept queue holds, how long a fork blocks the supervisor's loop, which
//! idle thread the kernel hands a connection to, and when workers report their load. [`Model`] owns these parameters, their
//! documented defaults and their text form (`--boot-time 500ms`, `--service-time
//! lognormal:80ms,1.0`); it must not schedule anything (the world draws from it when it
//! forks a worker or a client arrives).
//!
//! The defaults are the fault-testing world's: boots spread over 1 ms–3 s so that every
//! ordering of boot, crash and stop gets exercised, 200 ms mean exponential service, Linux's
//! old default accept queue of 128, and forks that cost nothing (slow forks are a fault of
//! their own). A lab run sets them to what its program does (`drover-sim calibrate` reads
//! them off a real run's log).

use core::fmt;
use core::time::Duration;

use crate::rng::Rng;

/// A duration that varies from draw to draw.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Spread {
    Fixed(Duration),
    /// Uniform in `lo..=hi`.
    Uniform(Duration, Duration),
    /// Exponential with this mean (memoryless service: the M/M/c queue's).
    Exp(Duration),
    /// Log-normal with this median and shape (the standard deviation of the log): web
    /// service times are skewed, most requests quick and a few very slow.
    LogNormal {
        median: Duration,
        sigma: f64,
    },
}

/// Draws are capped here: a heavy tail must not make one request outlive any run.
const DRAW_MAX: Duration = Duration::from_secs(3600);

impl Spread {
    pub fn draw(&self, rng: &mut Rng) -> Duration {
        match *self {
            Spread::Fixed(d) => d,
            Spread::Uniform(lo, hi) => rng.duration(lo, hi),
            Spread::Exp(mean) => rng.exp(mean),
            Spread::LogNormal { median, sigma } => {
                // Box–Muller: one standard normal from two uniforms.
                let u1 = 1.0 - rng.unit(); // (0, 1]: ln is finite
                let u2 = rng.unit();
                let z = (-2.0 * u1.ln()).sqrt() * (core::f64::consts::TAU * u2).cos();
                let secs = median.as_secs_f64() * (sigma * z).exp();
                Duration::from_secs_f64(secs.min(DRAW_MAX.as_secs_f64()))
            }
        }
        .min(DRAW_MAX)
    }

    /// The mean of a draw.
    pub fn mean(&self) -> Duration {
        match *self {
            Spread::Fixed(d) | Spread::Exp(d) => d,
            Spread::Uniform(lo, hi) => (lo + hi) / 2,
            Spread::LogNormal { median, sigma } => {
                Duration::from_secs_f64(median.as_secs_f64() * (sigma * sigma / 2.0).exp())
            }
        }
    }

    /// `500ms` (fixed), `100ms..2s` (uniform), `exp:200ms`, `lognormal:80ms,1.0`. `what`
    /// names the flag in errors.
    pub fn parse(what: &str, text: &str) -> Result<Spread, String> {
        let t = text.trim();
        let example = "e.g. 500ms, 100ms..2s, exp:200ms or lognormal:80ms,1.0";
        if let Some(mean) = t.strip_prefix("exp:") {
            return Ok(Spread::Exp(parse_duration(what, mean)?));
        }
        if let Some(rest) = t.strip_prefix("lognormal:") {
            let Some((median, sigma)) = rest.split_once(',') else {
                return Err(format!(
                    "{what} {text}: lognormal needs a median and a shape, {example}"
                ));
            };
            let median = parse_duration(what, median)?;
            let sigma: f64 = sigma.trim().parse().map_err(|_| {
                format!("{what} {text}: the shape {sigma:?} is not a number (e.g. 1.0)")
            })?;
            if !(0.0..=5.0).contains(&sigma) {
                return Err(format!(
                    "{what} {text}: the shape must be between 0 and 5 (1.0 is a typical web tail)"
                ));
            }
            return Ok(Spread::LogNormal { median, sigma });
        }
        if let Some((lo, hi)) = t.split_once("..") {
            let (lo, hi) = (parse_duration(what, lo)?, parse_duration(what, hi)?);
            if lo > hi {
                return Err(format!(
                    "{what} {text}: the range runs backwards ({example})"
                ));
            }
            return Ok(Spread::Uniform(lo, hi));
        }
        parse_duration(what, t)
            .map(Spread::Fixed)
            .map_err(|e| format!("{e} ({example})"))
    }
}

impl fmt::Display for Spread {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Spread::Fixed(d) => write!(f, "{}", show(d)),
            Spread::Uniform(lo, hi) => write!(f, "{}..{}", show(lo), show(hi)),
            Spread::Exp(mean) => write!(f, "exp:{}", show(mean)),
            Spread::LogNormal { median, sigma } => write!(f, "lognormal:{},{sigma}", show(median)),
        }
    }
}

/// `250ms`, `1.5s`, `2m`, `800us`; a bare number is seconds.
pub fn parse_duration(what: &str, text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let (number, unit) = match t.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => t.split_at(i),
        None => (t, "s"),
    };
    let scale = match unit {
        "us" | "µs" => 1e-6,
        "ms" => 1e-3,
        "s" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        _ => {
            return Err(format!(
                "{what} {text}: unknown unit {unit:?} (use us, ms, s, m or h)"
            ))
        }
    };
    let n: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("{what} {text}: {number:?} is not a number (e.g. 250ms)"))?;
    let secs = n * scale;
    if !secs.is_finite() || !(0.0..=1e7).contains(&secs) {
        return Err(format!("{what} {text}: must be between 0 and 10,000,000 s"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// A duration as the flags take it back: the largest unit that keeps it exact to a µs.
pub fn show(d: Duration) -> String {
    let us = d.as_micros();
    if us.is_multiple_of(1_000_000) {
        format!("{}s", us / 1_000_000)
    } else if us.is_multiple_of(1000) {
        format!("{}ms", us / 1000)
    } else {
        format!("{us}us")
    }
}

/// Which waiting worker thread the kernel hands the next connection to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AcceptOrder {
    /// Always the same first one (the process forked first that has a thread free): what
    /// `EPOLLEXCLUSIVE` waits do (drover's embedded runtime), where the first registered
    /// idle waiter is woken.
    Lowest,
    /// The one that has waited longest: what threads blocking in `accept(2)` get (a
    /// command worker with a plain accept loop, unicorn, gunicorn's sync workers), so idle
    /// workers take turns and none stays idle long.
    Fifo,
}

/// When a worker tells the supervisor its load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoadReport {
    /// At its heartbeat pace (a third of the heartbeat timeout, at most 2 s): a worker
    /// that batches its reports.
    Pace,
    /// At every change (a request starts or ends): a worker that sends `X_DROVER_LOAD` as
    /// it goes, or publishes on the report board.
    Change,
}

/// What the world assumes of the program and its clients.
#[derive(Clone, Debug, PartialEq)]
pub struct Model {
    /// From fork to ready (`--boot-time`).
    pub boot: Spread,
    /// How long a request holds a thread, when the load does not say (`--service-time`; a
    /// replayed trace carries each request's own).
    pub service: Spread,
    /// Connections the accept queue holds; one more is refused (`--backlog`).
    pub backlog: u32,
    /// How long each fork blocks the supervisor's loop (`--spawn-cost`): a big program's
    /// fork copies its page tables while the loop waits.
    pub spawn_cost: Duration,
    /// What a request costs its thread beyond its service time (`--request-cost`): the
    /// accept, the read and write, the close.
    pub request_cost: Duration,
    /// Which idle thread gets the next connection (`--accept-order`).
    pub accept: AcceptOrder,
    /// When workers report their load (`--load-report`).
    pub load_report: LoadReport,
}

impl Default for Model {
    fn default() -> Model {
        Model {
            boot: Spread::Uniform(Duration::from_millis(1), Duration::from_secs(3)),
            service: Spread::Exp(Duration::from_millis(200)),
            backlog: 128,
            spawn_cost: Duration::ZERO,
            request_cost: Duration::ZERO,
            accept: AcceptOrder::Lowest,
            load_report: LoadReport::Pace,
        }
    }
}

impl fmt::Display for Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "boot-time={} service-time={} request-cost={} backlog={} spawn-cost={} accept-order={} load-report={}",
            self.boot,
            self.service,
            show(self.request_cost),
            self.backlog,
            show(self.spawn_cost),
            match self.accept {
                AcceptOrder::Lowest => "lowest",
                AcceptOrder::Fifo => "fifo",
            },
            match self.load_report {
                LoadReport::Pace => "pace",
                LoadReport::Change => "change",
            }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Stream;

    #[test]
    fn spreads_parse_and_print_back() {
        for text in ["500ms", "100ms..2s", "exp:200ms", "lognormal:80ms,1"] {
            let s = Spread::parse("--x", text).unwrap();
            assert_eq!(s.to_string(), text);
        }
        assert_eq!(
            Spread::parse("--x", "1.5").unwrap(),
            Spread::Fixed(Duration::from_millis(1500))
        );
        for (bad, says) in [
            ("fast", "unknown unit"),
            ("1.2.3s", "not a number"),
            ("5 parsecs", "unknown unit"),
            ("2s..1s", "backwards"),
            ("lognormal:80ms", "a median and a shape"),
            ("lognormal:80ms,x", "not a number"),
            ("lognormal:80ms,9", "between 0 and 5"),
            ("-1s", "between 0"),
        ] {
            let e = Spread::parse("--boot-time", bad).unwrap_err();
            assert!(e.contains("--boot-time") && e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn draws_follow_their_spread() {
        let mut rng = Rng::new(1, Stream::Load);
        let n = 20_000;
        for s in [
            Spread::Exp(Duration::from_millis(200)),
            Spread::LogNormal {
                median: Duration::from_millis(80),
                sigma: 1.0,
            },
            Spread::Uniform(Duration::from_millis(100), Duration::from_millis(300)),
        ] {
            let total: f64 = (0..n).map(|_| s.draw(&mut rng).as_secs_f64()).sum();
            let mean = total / f64::from(n);
            let want = s.mean().as_secs_f64();
            assert!(
                (mean - want).abs() < 0.05 * want,
                "{s}: mean {mean} against {want}"
            );
        }
        let mut draws: Vec<Duration> = (0..n)
            .map(|_| {
                Spread::LogNormal {
                    median: Duration::from_millis(80),
                    sigma: 1.0,
                }
                .draw(&mut rng)
            })
            .collect();
        draws.sort();
        let median = draws[draws.len() / 2].as_secs_f64();
        assert!((median - 0.080).abs() < 0.004, "median {median}");
    }
}
