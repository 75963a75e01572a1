//! Sweeping a grid of config keys over a base policy (`min=1..4 max=8,16 max_spare=2..6`),
//! judging each point against a stated objective (`p99<=200ms`) and finding the Pareto
//! front of cost against tail wait. It owns the grid's and the objective's spelling, the
//! choice of the best point and the front; it must not run anything (`runs` does) nor
//! draw (`plot`).

use core::fmt::Write as _;

use drover_machine::Setting;

use crate::lab::policies::NamedPolicy;
use crate::lab::runs::Figures;
use crate::policy;
use crate::world::model::parse_duration;

/// Points a sweep may have: each is a whole simulated run.
pub const POINTS_MAX: usize = 10_000;

/// Keys and the values each takes, in the order given; points are their cartesian
/// product, the last key varying fastest.
#[derive(Clone, Debug, PartialEq)]
pub struct Grid {
    pub axes: Vec<(String, Vec<String>)>,
}

impl Grid {
    /// `key=a..b` (whole numbers, both ends included) or `key=a,b,c`; several in one
    /// argument separated by spaces, or in several arguments.
    pub fn parse(args: &[String]) -> Result<Grid, String> {
        let mut axes: Vec<(String, Vec<String>)> = Vec::new();
        for item in args.iter().flat_map(|a| a.split_whitespace()) {
            let (key, values) = item.split_once('=').ok_or_else(|| {
                format!("--grid {item}: write key=a..b or key=a,b,c (e.g. min=1..4)")
            })?;
            let key = key.trim().to_string();
            if key.is_empty() {
                return Err(format!("--grid {item}: the key is missing (e.g. min=1..4)"));
            }
            if axes.iter().any(|(k, _)| *k == key) {
                return Err(format!("--grid {item}: {key} is given twice"));
            }
            let values = match values.split_once("..") {
                Some((lo, hi)) => {
                    let (lo, hi): (i64, i64) = match (lo.trim().parse(), hi.trim().parse()) {
                        (Ok(lo), Ok(hi)) => (lo, hi),
                        _ => {
                            return Err(format!(
                                "--grid {item}: a range takes whole numbers (e.g. {key}=1..4); list other values with commas"
                            ))
                        }
                    };
                    if lo > hi {
                        return Err(format!("--grid {item}: the range runs backwards"));
                    }
                    if (hi - lo) as u64 >= POINTS_MAX as u64 {
                        return Err(format!("--grid {item}: more than {POINTS_MAX} values"));
                    }
                    (lo..=hi).map(|v| v.to_string()).collect()
                }
                None => values
                    .split(',')
                    .map(|v| v.trim().to_string())
                    .filter(|v| !v.is_empty())
                    .collect::<Vec<_>>(),
            };
            if values.is_empty() {
                return Err(format!("--grid {item}: no values (e.g. {key}=8,16)"));
            }
            axes.push((key, values));
        }
        if axes.is_empty() {
            return Err(
                "--grid: give at least one key=values (e.g. --grid 'min=1..4 max=8,16')".into(),
            );
        }
        let points = axes
            .iter()
            .try_fold(1usize, |n, (_, v)| n.checked_mul(v.len()))
            .unwrap_or(usize::MAX);
        if points > POINTS_MAX {
            return Err(format!(
                "--grid: {points} points, more than {POINTS_MAX}; narrow a range"
            ));
        }
        Ok(Grid { axes })
    }

    /// Every point as `key=value` pairs, in grid order.
    pub fn points(&self) -> Vec<Vec<(String, String)>> {
        let mut points = vec![Vec::new()];
        for (key, values) in &self.axes {
            points = points
                .into_iter()
                .flat_map(|p| {
                    values.iter().map(move |v| {
                        let mut q = p.clone();
                        q.push((key.clone(), v.clone()));
                        q
                    })
                })
                .collect();
        }
        points
    }
}

/// The grid's points over a base policy's text: each valid point as a policy named by its
/// values, each invalid one (`min=4 max=2`) with the config's complaint. Grid order.
pub fn policies(
    base_text: &str,
    base_overrides: &[(String, Setting)],
    grid: &Grid,
) -> Vec<Result<NamedPolicy, (String, String)>> {
    grid.points()
        .into_iter()
        .map(|point| {
            let name = point
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" ");
            let overrides: Vec<(String, Setting)> = base_overrides
                .iter()
                .cloned()
                .chain(
                    point
                        .iter()
                        .map(|(k, v)| (k.clone(), policy::setting_value(v))),
                )
                .collect();
            match policy::parse_with(base_text, &overrides) {
                Ok(config) => Ok(NamedPolicy { name, config }),
                Err(e) => Err((name, e)),
            }
        })
        .collect()
}

/// What the objective bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metric {
    P50,
    P95,
    P99,
    Max,
    Refused,
    Broken,
}

/// Bounds every point must keep to count as meeting the objective (`p99<=200ms,refused<=0`);
/// among those, the least worker-seconds wins.
#[derive(Clone, Debug, PartialEq)]
pub struct Objective {
    pub terms: Vec<(Metric, f64)>,
    pub text: String,
}

impl Objective {
    pub fn parse(text: &str) -> Result<Objective, String> {
        let mut terms = Vec::new();
        for term in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let (name, bound) = term.split_once("<=").ok_or_else(|| {
                format!("--objective {term}: write metric<=bound (e.g. p99<=200ms, refused<=0)")
            })?;
            let metric = match name.trim() {
                "p50" => Metric::P50,
                "p95" => Metric::P95,
                "p99" => Metric::P99,
                "max" => Metric::Max,
                "refused" => Metric::Refused,
                "broken" => Metric::Broken,
                other => {
                    return Err(format!(
                        "--objective {term}: unknown metric {other:?} (p50, p95, p99, max: queue waits; refused, broken: counts)"
                    ))
                }
            };
            let bound = match metric {
                Metric::Refused | Metric::Broken => bound.trim().parse::<u64>().map_err(|_| {
                    format!("--objective {term}: {name} is a count (e.g. refused<=0)")
                })? as f64,
                _ => parse_duration("--objective", bound)?.as_secs_f64() * 1000.0,
            };
            terms.push((metric, bound));
        }
        if terms.is_empty() {
            return Err("--objective: give at least one bound (e.g. p99<=200ms)".into());
        }
        Ok(Objective {
            terms,
            text: text.to_string(),
        })
    }

    pub fn met_by(&self, f: &Figures) -> bool {
        f.outcome == crate::world::Outcome::Passed
            && self.terms.iter().all(|&(m, bound)| {
                let v = match m {
                    Metric::P50 => f.wait_ms[0],
                    Metric::P95 => f.wait_ms[1],
                    Metric::P99 => f.wait_ms[2],
                    Metric::Max => f.wait_ms[3],
                    Metric::Refused => f.refused as f64,
                    Metric::Broken => f.broken as f64,
                };
                v <= bound
            })
    }
}

/// Which runs are Pareto-optimal for (worker-seconds, p99 wait, refused), all three lower
/// is better: no other run is at least as good in all three and better in one. Refusals
/// count because a pool that refuses clients keeps the waits of those it serves short.
pub fn pareto(figures: &[Figures]) -> Vec<bool> {
    let key = |f: &Figures| (f.worker_seconds, f.p99_ms(), f.refused as f64);
    figures
        .iter()
        .map(|f| {
            let a = key(f);
            f.outcome == crate::world::Outcome::Passed
                && !figures.iter().any(|g| {
                    let b = key(g);
                    g.outcome == crate::world::Outcome::Passed
                        && b.0 <= a.0
                        && b.1 <= a.1
                        && b.2 <= a.2
                        && (b.0 < a.0 || b.1 < a.1 || b.2 < a.2)
                })
        })
        .collect()
}

/// The least worker-seconds among the runs that meet the objective (the first in grid
/// order on a tie).
pub fn best(figures: &[Figures], objective: &Objective) -> Option<usize> {
    let mut best: Option<usize> = None;
    for (i, f) in figures.iter().enumerate() {
        if objective.met_by(f) && best.is_none_or(|b| f.worker_seconds < figures[b].worker_seconds)
        {
            best = Some(i);
        }
    }
    best
}

/// The sweep's verdict under its table: invalid points, the best point for the objective,
/// the Pareto front.
pub fn verdict(
    figures: &[Figures],
    invalid: &[(String, String)],
    objective: Option<&Objective>,
) -> String {
    let mut out = String::new();
    for (name, why) in invalid {
        let _ = writeln!(out, "skipped {name}: {why}");
    }
    if let Some(obj) = objective {
        let meeting = figures.iter().filter(|f| obj.met_by(f)).count();
        let _ = writeln!(
            out,
            "objective {}: met by {meeting} of {} points",
            obj.text,
            figures.len()
        );
        match best(figures, obj) {
            Some(i) => {
                let f = &figures[i];
                let _ = writeln!(
                    out,
                    "best: {} ({:.0} worker-s, p99 {:.1} ms, {} refused)",
                    f.name,
                    f.worker_seconds,
                    f.p99_ms(),
                    f.refused
                );
            }
            None => {
                let _ = writeln!(out, "best: none meets the objective");
            }
        }
    }
    let front = pareto(figures);
    let mut members: Vec<&Figures> = figures
        .iter()
        .zip(&front)
        .filter(|(_, &p)| p)
        .map(|(f, _)| f)
        .collect();
    members.sort_by(|a, b| a.worker_seconds.total_cmp(&b.worker_seconds));
    let _ = writeln!(
        out,
        "pareto front (worker-seconds, p99 wait, refused; by cost): {} points",
        members.len()
    );
    for f in members {
        let _ = writeln!(
            out,
            "  {:.0} worker-s  p99 {:.1} ms  {} refused  {}",
            f.worker_seconds,
            f.p99_ms(),
            f.refused,
            f.name
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::world::Outcome;

    fn fig(name: &str, ws: f64, p99: f64, refused: u64) -> Figures {
        Figures {
            name: name.into(),
            outcome: Outcome::Passed,
            arrivals: 100,
            served: 100 - refused,
            refused,
            broken: 0,
            wait_ms: [1.0, 2.0, p99, p99 * 2.0],
            worker_seconds: ws,
            spawns: 0,
            kills: 0,
            seconds_at_max: 0.0,
            samples: Vec::new(),
            waits_us: Vec::new(),
        }
    }

    #[test]
    fn grids_expand_in_order_and_bad_ones_say_why() {
        let g = Grid::parse(&["min=1..2 max=8,16".into(), "max_spare=3".into()]).unwrap();
        let names: Vec<String> = g
            .points()
            .iter()
            .map(|p| {
                p.iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect();
        assert_eq!(
            names,
            [
                "min=1 max=8 max_spare=3",
                "min=1 max=16 max_spare=3",
                "min=2 max=8 max_spare=3",
                "min=2 max=16 max_spare=3"
            ]
        );
        for (bad, says) in [
            ("min", "key=a..b"),
            ("min=4..1", "backwards"),
            ("min=a..b", "whole numbers"),
            ("min=1 min=2", "twice"),
            ("=1", "key is missing"),
            ("min=1..100000", "more than"),
            ("a=1..100 b=1..100 c=1..2", "points"),
        ] {
            let e = Grid::parse(&[bad.into()]).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
        assert!(Grid::parse(&[]).unwrap_err().contains("at least one"));
    }

    #[test]
    fn invalid_points_are_named_not_fatal() {
        let g = Grid::parse(&["min=1..3 max=2".into()]).unwrap();
        let ps = policies(
            "policy = \"dynamic\"\nmin_spare = 1\nmax_spare = 2\n",
            &[],
            &g,
        );
        assert!(ps[0].is_ok() && ps[1].is_ok());
        let (name, why) = ps[2].as_ref().unwrap_err();
        assert_eq!(name, "min=3 max=2");
        assert!(why.contains("min"), "{why}");
    }

    #[test]
    fn objectives_parse_and_judge() {
        let o = Objective::parse("p99<=200ms, refused<=0").unwrap();
        assert_eq!(o.terms, [(Metric::P99, 200.0), (Metric::Refused, 0.0)]);
        assert!(o.met_by(&fig("a", 10.0, 150.0, 0)));
        assert!(!o.met_by(&fig("b", 10.0, 250.0, 0)));
        assert!(!o.met_by(&fig("c", 10.0, 150.0, 1)));
        for (bad, says) in [
            ("p99<200ms", "metric<=bound"),
            ("p98<=1s", "unknown metric"),
            ("refused<=x", "a count"),
            ("p99<=fast", "--objective"),
            ("", "at least one"),
        ] {
            let e = Objective::parse(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn the_front_and_the_best_point() {
        let figs = [
            fig("cheap-slow", 10.0, 900.0, 0),
            fig("mid", 20.0, 150.0, 0),
            fig("dominated", 25.0, 160.0, 0),
            fig("dear-fast", 40.0, 10.0, 0),
            fig("refuses", 5.0, 5.0, 30),
        ];
        assert_eq!(pareto(&figs), [true, true, false, true, true]);
        let o = Objective::parse("p99<=200ms,refused<=0").unwrap();
        assert_eq!(best(&figs, &o), Some(1));
        let v = verdict(&figs, &[("min=3 max=2".into(), "bad".into())], Some(&o));
        assert!(v.contains("skipped min=3 max=2: bad"), "{v}");
        assert!(v.contains("best: mid"), "{v}");
        assert!(v.contains("met by 3 of 5"), "{v}");
    }
}
