//! The queue-wait distributions: an empirical CDF per policy, each p99 marked.

use super::*;

/// The left edge of the wait axis; smaller waits (zeros included) are drawn on it.
pub(super) const CDF_MIN_MS: f64 = 0.1;
/// Steps of the CDF kept per log-spaced bin across the axis: finer than a pixel at any
/// sensible size, and bounded whatever the number of requests.
pub(super) const CDF_BINS: f64 = 2000.0;

pub(super) struct Distribution {
    /// Waits in ms, ascending.
    pub(super) sorted_ms: Vec<f64>,
}

impl Distribution {
    pub(super) fn new(waits_us: &[u64]) -> Distribution {
        let mut w = waits_us.to_vec();
        w.sort_unstable();
        Distribution {
            sorted_ms: w.into_iter().map(|us| us as f64 / 1000.0).collect(),
        }
    }

    /// The same rank as the world's percentile (`RunResult`), so the marker sits on the
    /// value the report prints.
    pub(super) fn p99_ms(&self) -> Option<f64> {
        let n = self.sorted_ms.len();
        if n == 0 {
            return None;
        }
        let i = (0.99 * (n - 1) as f64).round() as usize;
        Some(self.sorted_ms[i.min(n - 1)])
    }

    /// Where the CDF's vertical step at `x` crosses 0.99 (or the nearest end of that step).
    pub(super) fn p99_height(&self, x: f64) -> f64 {
        let n = self.sorted_ms.len() as f64;
        let below = self.sorted_ms.partition_point(|&w| w < x) as f64 / n;
        let upto = self.sorted_ms.partition_point(|&w| w <= x) as f64 / n;
        0.99f64.clamp(below, upto)
    }

    /// The step function from (lo, 0) to (hi, 1), one vertical step per occupied bin.
    pub(super) fn steps(&self, lo: f64, hi: f64) -> Vec<(f64, f64)> {
        let w = &self.sorted_ms;
        let n = w.len() as f64;
        let (llo, span) = (lo.log10(), hi.log10() - lo.log10());
        let bin = |x: f64| ((x.max(lo).log10() - llo) / span * CDF_BINS).floor() as i64;
        let mut pts = vec![(lo, 0.0)];
        let mut i = 0;
        while i < w.len() {
            let b = bin(w[i]);
            let mut j = i + 1;
            while j < w.len() && bin(w[j]) == b {
                j += 1;
            }
            let x = w[i].clamp(lo, hi);
            pts.push((x, i as f64 / n));
            pts.push((x, j as f64 / n));
            i = j;
        }
        if !w.is_empty() {
            pts.push((hi, 1.0));
        }
        pts
    }
}

/// The largest wait rounded up to a power of ten, at least one decade above the left edge.
pub(super) fn cdf_right_edge(max_ms: f64) -> f64 {
    if !max_ms.is_finite() || max_ms <= 1.0 {
        return 1.0;
    }
    let mut k = max_ms.log10().ceil() as i32;
    // log10 may land a hair below an exact power of ten.
    while 10f64.powi(k) < max_ms {
        k += 1;
    }
    10f64.powi(k)
}

pub(super) struct WaitCdf<'a> {
    pub(super) runs: &'a [RunSeries<'a>],
    pub(super) title: &'a str,
}

impl Chart for WaitCdf<'_> {
    fn size(&self) -> (u32, u32) {
        (1000, 650)
    }

    fn draw<DB: DrawingBackend>(&self, root: &Area<DB>) -> Drawn<DB> {
        let dists: Vec<Distribution> = self
            .runs
            .iter()
            .map(|r| Distribution::new(r.waits_us))
            .collect();
        let keys: Vec<Entry> = self
            .runs
            .iter()
            .zip(&dists)
            .enumerate()
            .map(|(i, (r, d))| match d.p99_ms() {
                Some(p) => entry(
                    format!("{} (p99 {} ms)", r.name, fmt_ms(p)),
                    Key::LineMarker(series_look(i)),
                ),
                None => entry(
                    format!("{} (no requests)", r.name),
                    Key::Line(series_look(i)),
                ),
            })
            .collect();
        let (plots, legend) = frame(root, self.title, keys.iter().map(|e| e.label.as_str()))?;

        let max_ms = dists
            .iter()
            .filter_map(|d| d.sorted_ms.last().copied())
            .fold(0.0, f64::max);
        let (lo, hi) = (CDF_MIN_MS, cdf_right_edge(max_ms));
        let mut decades = Vec::new();
        let mut minor = Vec::new();
        let mut d = lo;
        while d <= hi * 1.000_001 {
            decades.push(d);
            for m in 2..10 {
                if d * f64::from(m) < hi {
                    minor.push(d * f64::from(m));
                }
            }
            d *= 10.0;
        }
        let x = (lo..hi)
            .log_scale()
            .with_key_points(decades)
            .with_light_points(minor);
        let mut chart = panel(&plots, x, 0.0..1.0, true, Right::Nothing)?;
        style_mesh(
            &mut chart.configure_mesh(),
            "queue wait (ms)",
            "fraction of requests",
        )
        .y_labels(11)
        .draw()?;
        for (i, d) in dists.iter().enumerate() {
            draw_line(&mut chart, d.steps(lo, hi), series_look(i))?;
        }
        let screen = chart.plotting_area().use_screen_coord();
        for (i, d) in dists.iter().enumerate() {
            if let Some(p) = d.p99_ms() {
                let x = p.clamp(lo, hi);
                let at = chart.backend_coord(&(x, d.p99_height(p)));
                draw_marker(&screen, at, series_look(i), 6, true)?;
            }
        }
        draw_legend(&legend.margin(8, 0, 0, 0), &keys)?;
        Ok(())
    }
}
