//! Output: the end-of-run speed line, the policy report, and the SVG plot.

use core::fmt::Write as _;
use core::time::Duration;

use crate::world::{RunResult, Sample};

/// Wall-clock time, for speed figures only: the one place the simulator reads a real clock.
pub struct WallClock(#[allow(clippy::disallowed_types)] std::time::Instant);

impl WallClock {
    #[allow(clippy::disallowed_methods)]
    pub fn start() -> WallClock {
        WallClock(std::time::Instant::now())
    }

    pub fn elapsed(&self) -> Duration {
        self.0.elapsed()
    }
}

/// `sim=…s wall=…s ratio=…x events/s=… steps/s=…`: printed at the end of every run.
/// `events` are machine inputs; `steps` every simulator event (client arrivals and
/// request completions included).
pub fn speed(sim: Duration, wall: Duration, events: u64, steps: u64) -> String {
    let wall_s = wall.as_secs_f64().max(1e-9);
    format!(
        "sim={:.3}s wall={:.3}s ratio={:.0}x events/s={:.3e} steps/s={:.3e}",
        sim.as_secs_f64(),
        wall_s,
        sim.as_secs_f64() / wall_s,
        events as f64 / wall_s,
        steps as f64 / wall_s
    )
}

/// The figures a user compares policies by.
pub fn policy_report(r: &RunResult) -> String {
    let s = &r.stats;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "policy: {} load={}",
        r.config.policy.name(),
        r.load.name()
    );
    let _ = writeln!(
        out,
        "  connections: arrived={} served={} refused={} broken={}",
        s.arrivals, s.served, s.refused, s.broken
    );
    let _ = writeln!(
        out,
        "  queue wait: p50={:.1}ms p99={:.1}ms",
        s.wait_percentile_ms(50.0),
        s.wait_percentile_ms(99.0)
    );
    let _ = writeln!(
        out,
        "  cost: worker-seconds={:.0} spawns={} kills={}",
        s.worker_seconds, s.spawns, s.kills
    );
    out
}

/// An SVG of pool size by worker state (stacked), queue length and offered load over time.
pub fn plot_svg(samples: &[Sample], title: &str) -> String {
    const W: f64 = 1060.0;
    const H: f64 = 480.0;
    const PAD: f64 = 50.0;
    // Room on the right for the legend.
    const LEGEND: f64 = 150.0;
    let t_max = samples.last().map_or(1.0, |s| s.t).max(1.0);
    let workers_max = samples
        .iter()
        .map(|s| s.booting + s.idle + s.busy + s.stopping)
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let queue_max = samples.iter().map(|s| s.queued).max().unwrap_or(0).max(1) as f64;
    let load_max = samples.iter().map(|s| s.load).fold(1e-9, f64::max);
    let x = |t: f64| PAD + (W - PAD - LEGEND) * t / t_max;
    let y = |v: f64, max: f64| H - PAD - (H - 2.0 * PAD) * v / max;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{PAD}" y="20" font-size="14">{}</text>"#,
        escape(title)
    );
    // Stacked areas, bottom to top: busy, idle, booting, stopping.
    type Layer = (&'static str, &'static str, fn(&Sample) -> u32);
    let layers: [Layer; 4] = [
        ("busy", "#d62728", |s| s.busy),
        ("idle", "#2ca02c", |s| s.idle),
        ("booting", "#1f77b4", |s| s.booting),
        ("stopping", "#7f7f7f", |s| s.stopping),
    ];
    let mut base = vec![0.0f64; samples.len()];
    for (i, (name, color, value)) in layers.iter().enumerate() {
        let top: Vec<f64> = samples
            .iter()
            .zip(&base)
            .map(|(s, b)| b + f64::from(value(s)))
            .collect();
        let mut d = String::new();
        for (s, t) in samples.iter().zip(&top) {
            let _ = write!(d, "{:.1},{:.1} ", x(s.t), y(*t, workers_max));
        }
        for (s, b) in samples.iter().zip(&base).rev() {
            let _ = write!(d, "{:.1},{:.1} ", x(s.t), y(*b, workers_max));
        }
        let _ = writeln!(
            svg,
            r#"<polygon points="{d}" fill="{color}" fill-opacity="0.6" stroke="none"/>"#
        );
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{}" fill="{color}">{name}</text>"#,
            W - LEGEND + 10.0,
            PAD + 15.0 * i as f64
        );
        base = top;
    }
    for (name, color, value, max) in [
        (
            "queued",
            "#9467bd",
            (|s: &Sample| f64::from(s.queued)) as fn(&Sample) -> f64,
            queue_max,
        ),
        ("load", "#ff7f0e", |s: &Sample| s.load, load_max),
    ] {
        let mut d = String::new();
        for s in samples {
            let _ = write!(d, "{:.1},{:.1} ", x(s.t), y(value(s), max));
        }
        let _ = writeln!(
            svg,
            r#"<polyline points="{d}" fill="none" stroke="{color}" stroke-width="1.5"/>"#
        );
        let row = if name == "queued" { 5.0 } else { 6.0 };
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{}" fill="{color}">{name} (max {max:.0})</text>"#,
            W - LEGEND + 10.0,
            PAD + 15.0 * row
        );
    }
    let _ = writeln!(
        svg,
        r#"<line x1="{PAD}" y1="{y0}" x2="{x1}" y2="{y0}" stroke="black"/><line x1="{PAD}" y1="{PAD}" x2="{PAD}" y2="{y0}" stroke="black"/>"#,
        y0 = H - PAD,
        x1 = W - LEGEND
    );
    let _ = writeln!(
        svg,
        r#"<text x="{PAD}" y="{}">0</text><text x="{}" y="{}" text-anchor="end">{t_max:.0} s</text><text x="5" y="{}">{workers_max:.0} workers</text>"#,
        H - PAD + 15.0,
        W - LEGEND,
        H - PAD + 15.0,
        PAD - 5.0
    );
    svg.push_str("</svg>\n");
    svg
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
