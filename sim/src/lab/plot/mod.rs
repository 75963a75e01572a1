//! The lab's pictures: one run's timeline, several policies' timelines side by side, their
//! queue-wait distributions, and cost against tail latency, as SVG or PNG (from the file
//! name). It owns the drawing only: layout, axes, palette, legends, and what a chart needs to
//! draw its data (an empirical CDF, a p99 for a marker, the order of a step line). It must not
//! compute the lab's statistics (the caller says which configurations are Pareto-optimal and
//! what a p99 is worth) nor know about policies: a policy is a name on a legend.
//!
//! Every output is the same bytes for the same input: no timestamps, no ids, no hash order,
//! and text is measured and (in PNG) drawn with DejaVu Sans bundled by the `dejavu` crate,
//! never with a system font. SVG leaves the glyphs to the viewer (`font-family="sans-serif"`),
//! so its labels may render a little wider or narrower than the layout measured.
//! PNG text is drawn by `png::Png`, not by plotters, whose `ab_glyph` text is misplaced.
//! The charts are `timeline`, `cdf` and `cost`; their common look is `style`.
//!
//! Empty inputs (no samples, no runs, no waits, no points) draw a chart with its axes, title
//! and legend over default ranges rather than fail; non-finite values are left out.

use std::ops::Range;
use std::sync::OnceLock;

use ab_glyph::{Font, FontRef, ScaleFont};
use plotters::chart::{ChartContext, MeshStyle};
use plotters::coord::ranged1d::AsRangedCoord;
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters_backend::{
    BackendColor, BackendCoord, BackendStyle, BackendTextStyle, DrawingErrorKind,
};

use crate::world::Sample;

/// Output format, from the file name's extension (.svg or .png; anything else is an error
/// naming the path and the two choices).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageFormat {
    Svg,
    Png,
}

impl ImageFormat {
    pub fn from_path(path: &str) -> Result<ImageFormat, String> {
        let ext = std::path::Path::new(path)
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("");
        if ext.eq_ignore_ascii_case("svg") {
            Ok(ImageFormat::Svg)
        } else if ext.eq_ignore_ascii_case("png") {
            Ok(ImageFormat::Png)
        } else {
            Err(format!(
                "{path}: unknown image format: the file name must end in .svg or .png"
            ))
        }
    }
}

/// One policy's run, as the comparison pictures see it.
pub struct RunSeries<'a> {
    /// E.g. "dynamic-2-16" or "apache-prefork".
    pub name: &'a str,
    pub samples: &'a [Sample],
    /// Queue wait of every served request, microseconds, any order.
    pub waits_us: &'a [u64],
}

/// One configuration on the cost/latency chart. `pareto` is the caller's verdict: this
/// module highlights it, it does not compute it.
pub struct CostPoint<'a> {
    pub name: &'a str,
    pub worker_seconds: f64,
    pub p99_ms: f64,
    pub pareto: bool,
}

/// One run alone: stacked areas of workers by state (busy, idle, booting, stopping) over
/// time, with the accept queue and the offered load as lines on a second panel below (shared
/// x axis).
pub fn run_timeline(samples: &[Sample], title: &str, path: &str) -> Result<(), String> {
    render(&RunTimeline { samples, title }, path)
}

/// Several policies under the same load: pool size (with the offered load of the first run,
/// dashed grey, on a secondary axis), busy workers and accept-queue length over time, one
/// line per policy in each panel.
pub fn compare_timeline(runs: &[RunSeries], title: &str, path: &str) -> Result<(), String> {
    render(&CompareTimeline { runs, title }, path)
}

/// Queue-wait distributions: an empirical CDF per policy on a log time axis from 0.1 ms
/// (waits below it, zeros included, are drawn at that left edge) to the largest wait rounded
/// up to a power of ten, each policy's p99 marked on its curve.
pub fn wait_cdf(runs: &[RunSeries], title: &str, path: &str) -> Result<(), String> {
    render(&WaitCdf { runs, title }, path)
}

/// Cost versus tail latency: one point per configuration, the Pareto-optimal ones
/// highlighted and joined by a step line, points labelled (only the Pareto ones past
/// `MAX_LABELLED` points), and the objective `p99 <= X ms` as a dashed line when given.
pub fn cost_vs_p99(
    points: &[CostPoint],
    objective_p99_ms: Option<f64>,
    title: &str,
    path: &str,
) -> Result<(), String> {
    render(
        &CostVsP99 {
            points,
            objective_p99_ms,
            title,
        },
        path,
    )
}

/// Past this many points, names would cover the chart: only the Pareto ones get a label.
const MAX_LABELLED: usize = 30;

// ---------------------------------------------------------------------------------------
// Rendering: one drawing per chart, whatever the backend.

type Area<DB> = DrawingArea<DB, Shift>;
type Drawn<DB, T = ()> = Result<T, DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;

/// A chart, drawn the same way on the SVG and the bitmap backend.
trait Chart {
    fn size(&self) -> (u32, u32);
    fn draw<DB: DrawingBackend>(&self, root: &Area<DB>) -> Drawn<DB>;
}

fn render<C: Chart>(chart: &C, path: &str) -> Result<(), String> {
    let format = ImageFormat::from_path(path)?;
    register_font().map_err(|e| format!("{path}: {e}"))?;
    match format {
        ImageFormat::Svg => {
            // Into a string first, so that a failed drawing leaves no file and a failed write
            // reports the file system's own error.
            let mut svg = String::new();
            {
                let root = SVGBackend::with_string(&mut svg, chart.size()).into_drawing_area();
                chart
                    .draw(&root)
                    .and_then(|()| root.present())
                    .map_err(|e| format!("{path}: drawing the chart failed: {e}"))?;
            }
            std::fs::write(path, svg).map_err(|e| format!("{path}: writing the chart failed: {e}"))
        }
        ImageFormat::Png => {
            let drawn = {
                let root = Png(BitMapBackend::new(path, chart.size())).into_drawing_area();
                chart
                    .draw(&root)
                    .and_then(|()| root.present())
                    .map_err(|e| e.to_string())
            };
            drawn.map_err(|e| {
                // The bitmap backend saves whatever it holds when dropped: a half-drawn
                // picture must not stay behind looking like the chart.
                let _ = std::fs::remove_file(path);
                format!("{path}: drawing the chart failed: {e}")
            })
        }
    }
}

/// The one font plotters' `ab_glyph` text knows: every text style here is "sans-serif".
const FONT: &str = "sans-serif";

/// Registers DejaVu Sans once per process. Without it the `ab_glyph` backend has no font at
/// all (it never looks for system fonts, which CI does not have).
fn register_font() -> Result<(), String> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular())
                .map_err(|_| "the bundled DejaVu Sans font did not load".to_string())
        })
        .clone()
}

mod cdf;
mod cost;
mod png;
mod style;
#[cfg(test)]
mod tests;
mod timeline;

use cdf::*;
use cost::*;
use png::*;
use style::*;
use timeline::*;
