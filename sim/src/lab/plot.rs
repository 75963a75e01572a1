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
//! PNG text is drawn here (`Png`), not by plotters, whose `ab_glyph` text is misplaced.
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

// ---------------------------------------------------------------------------------------
// PNG text.

/// plotters' bitmap backend with text drawn here. plotters 0.3.7's `ab_glyph` text drops
/// each glyph's left side bearing ("i dle", "2-1 6") and sets a line too high (a title loses
/// its top); everything else goes to the bitmap backend unchanged. The text box is the one
/// plotters measured for the layout: advances and kerning at a scale of `size` pixels.
struct Png<'a>(BitMapBackend<'a>);

type PngError = <BitMapBackend<'static> as DrawingBackend>::ErrorType;
type PngResult = Result<(), DrawingErrorKind<PngError>>;

fn dejavu_sans() -> Option<&'static FontRef<'static>> {
    static FONT: OnceLock<Option<FontRef<'static>>> = OnceLock::new();
    FONT.get_or_init(|| FontRef::try_from_slice(dejavu::sans::regular()).ok())
        .as_ref()
}

impl DrawingBackend for Png<'_> {
    type ErrorType = PngError;

    fn get_size(&self) -> (u32, u32) {
        self.0.get_size()
    }
    fn ensure_prepared(&mut self) -> PngResult {
        self.0.ensure_prepared()
    }
    fn present(&mut self) -> PngResult {
        self.0.present()
    }
    fn draw_pixel(&mut self, point: BackendCoord, color: BackendColor) -> PngResult {
        self.0.draw_pixel(point, color)
    }
    fn draw_line<S: BackendStyle>(
        &mut self,
        from: BackendCoord,
        to: BackendCoord,
        style: &S,
    ) -> PngResult {
        self.0.draw_line(from, to, style)
    }
    fn draw_rect<S: BackendStyle>(
        &mut self,
        upper_left: BackendCoord,
        bottom_right: BackendCoord,
        style: &S,
        fill: bool,
    ) -> PngResult {
        self.0.draw_rect(upper_left, bottom_right, style, fill)
    }
    fn draw_path<S: BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        path: I,
        style: &S,
    ) -> PngResult {
        self.0.draw_path(path, style)
    }
    fn draw_circle<S: BackendStyle>(
        &mut self,
        center: BackendCoord,
        radius: u32,
        style: &S,
        fill: bool,
    ) -> PngResult {
        self.0.draw_circle(center, radius, style, fill)
    }
    fn fill_polygon<S: BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        vert: I,
        style: &S,
    ) -> PngResult {
        self.0.fill_polygon(vert, style)
    }
    fn blit_bitmap(&mut self, pos: BackendCoord, size: (u32, u32), src: &[u8]) -> PngResult {
        self.0.blit_bitmap(pos, size, src)
    }

    fn draw_text<S: BackendTextStyle>(
        &mut self,
        text: &str,
        style: &S,
        pos: BackendCoord,
    ) -> PngResult {
        let colour = style.color();
        if colour.alpha == 0.0 {
            return Ok(());
        }
        let font = dejavu_sans().ok_or_else(|| {
            DrawingErrorKind::FontError("the bundled DejaVu Sans font did not load".into())
        })?;
        let scaled = font.as_scaled(style.size() as f32);
        let mut glyphs = Vec::with_capacity(text.len());
        let mut caret = 0.0f32;
        let mut prev = None;
        for c in text.chars() {
            let id = scaled.glyph_id(c);
            if let Some(p) = prev {
                caret += scaled.kern(p, id);
            }
            glyphs.push((id, caret));
            caret += scaled.h_advance(id);
            prev = Some(id);
        }
        let anchor = style.anchor();
        let left = match anchor.h_pos {
            HPos::Left => 0.0,
            HPos::Center => -caret / 2.0,
            HPos::Right => -caret,
        };
        let (ascent, descent) = (scaled.ascent(), scaled.descent());
        let baseline = match anchor.v_pos {
            VPos::Top => ascent,
            VPos::Center => (ascent + descent) / 2.0,
            VPos::Bottom => descent,
        };
        let turn = style.transform();
        let (w, h) = self.0.get_size();
        for (id, x) in glyphs {
            let glyph =
                id.with_scale_and_position(scaled.scale(), ab_glyph::point(left + x, baseline));
            let Some(outline) = font.outline_glyph(glyph) else {
                continue; // no outline: a space
            };
            let bounds = outline.px_bounds();
            let mut drawn = Ok(());
            outline.draw(|gx, gy, coverage| {
                // Offsets from the anchor, turned with the text, then placed.
                let (dx, dy) = turn.transform(
                    bounds.min.x as i32 + gx as i32,
                    bounds.min.y as i32 + gy as i32,
                );
                let (x, y) = (pos.0 + dx, pos.1 + dy);
                if drawn.is_ok() && x >= 0 && y >= 0 && (x as u32) < w && (y as u32) < h {
                    drawn = self.0.draw_pixel((x, y), colour.mix(f64::from(coverage)));
                }
            });
            drawn?;
        }
        Ok(())
    }
}

const TITLE_SIZE: u32 = 22;
const DESC_SIZE: u32 = 15;
const TICK_SIZE: u32 = 13;
const LEGEND_SIZE: u32 = 14;
const POINT_LABEL_SIZE: u32 = 11;

// ---------------------------------------------------------------------------------------
// Palette and series looks.

/// Okabe–Ito (colour-blind safe) without its yellow, too pale on white.
const SERIES_COLOURS: [RGBColor; 7] = [
    RGBColor(0x00, 0x72, 0xB2), // blue
    RGBColor(0xE6, 0x9F, 0x00), // orange
    RGBColor(0x00, 0x9E, 0x73), // bluish green
    RGBColor(0xD5, 0x5E, 0x00), // vermillion
    RGBColor(0xCC, 0x79, 0xA7), // reddish purple
    RGBColor(0x56, 0xB4, 0xE9), // sky blue
    RGBColor(0x00, 0x00, 0x00), // black
];
/// (dash, gap) in pixels; None is solid. Four patterns against seven colours: the pair is
/// distinct for the first 28 series, and a series stays tellable in grey print.
const DASHES: [Option<(i32, i32)>; 4] = [None, Some((10, 5)), Some((3, 4)), Some((18, 6))];
const SHAPES: [Shape; 4] = [Shape::Circle, Shape::Triangle, Shape::Square, Shape::Cross];

const GREY: RGBColor = RGBColor(0x77, 0x77, 0x77);
const GRID_LIGHT: RGBColor = RGBColor(0xEE, 0xEE, 0xEE);
const GRID_BOLD: RGBColor = RGBColor(0xD4, 0xD4, 0xD4);

/// Worker states, bottom of the stack first (Okabe–Ito again; stopping is grey since it
/// is leaving the pool).
const BUSY: RGBColor = RGBColor(0xD5, 0x5E, 0x00);
const IDLE: RGBColor = RGBColor(0x00, 0x9E, 0x73);
const BOOTING: RGBColor = RGBColor(0x56, 0xB4, 0xE9);
const STOPPING: RGBColor = RGBColor(0x99, 0x99, 0x99);

#[derive(Clone, Copy)]
enum Shape {
    Circle,
    Triangle,
    Square,
    Cross,
}

#[derive(Clone, Copy)]
struct Look {
    colour: RGBColor,
    dash: Option<(i32, i32)>,
    shape: Shape,
}

fn series_look(i: usize) -> Look {
    Look {
        colour: SERIES_COLOURS[i % SERIES_COLOURS.len()],
        dash: DASHES[i % DASHES.len()],
        shape: SHAPES[i % SHAPES.len()],
    }
}

const LOAD_LOOK: Look = Look {
    colour: GREY,
    dash: Some((6, 4)),
    shape: Shape::Circle,
};

const QUEUE_LOOK: Look = Look {
    colour: RGBColor(0x00, 0x72, 0xB2),
    dash: None,
    shape: Shape::Circle,
};

fn stroke(colour: RGBColor, width: u32) -> ShapeStyle {
    ShapeStyle {
        color: colour.to_rgba(),
        filled: false,
        stroke_width: width,
    }
}

/// Mixed with white but opaque: stacked areas overdraw one another, so they cannot be
/// translucent.
fn pale(c: RGBColor) -> RGBColor {
    let mix = |v: u8| (f64::from(v) * 0.6 + 255.0 * 0.4).round() as u8;
    RGBColor(mix(c.0), mix(c.1), mix(c.2))
}

// ---------------------------------------------------------------------------------------
// Drawing helpers.

fn draw_line<DB: DrawingBackend, CT: CoordTranslate<From = (f64, f64)>>(
    chart: &mut ChartContext<'_, DB, CT>,
    points: Vec<(f64, f64)>,
    look: Look,
) -> Drawn<DB> {
    if points.is_empty() {
        return Ok(());
    }
    let style = stroke(look.colour, 2);
    match look.dash {
        None => chart.draw_series(std::iter::once(PathElement::new(points, style)))?,
        Some((dash, gap)) => chart.draw_series(DashedLineSeries::new(points, dash, gap, style))?,
    };
    Ok(())
}

/// A marker centred on a pixel of `area`.
fn draw_marker<DB: DrawingBackend>(
    area: &Area<DB>,
    at: (i32, i32),
    look: Look,
    radius: i32,
    filled: bool,
) -> Drawn<DB> {
    let (x, y) = at;
    // Unfilled is pale inside with a thin edge: a 2-pixel ring on a small bitmap circle
    // reads as a square.
    let shape = |style: ShapeStyle| match look.shape {
        Shape::Circle => area.draw(&Circle::new(at, radius, style)),
        Shape::Triangle => area.draw(&TriangleMarker::new(at, radius + 1, style)),
        Shape::Square => area.draw(&Rectangle::new(
            [(x - radius, y - radius), (x + radius, y + radius)],
            style,
        )),
        // A cross has no inside: always stroked.
        Shape::Cross => area.draw(&Cross::new(at, radius, stroke(look.colour, 2))),
    };
    if filled {
        shape(look.colour.filled())
    } else {
        shape(pale(look.colour).filled())?;
        shape(stroke(look.colour, 1))
    }
}

/// What a legend row shows before its label.
enum Key {
    Band(RGBColor),
    Line(Look),
    Marker(Look, bool),
    LineMarker(Look),
}

struct Entry {
    label: String,
    key: Key,
}

fn entry(label: impl Into<String>, key: Key) -> Entry {
    Entry {
        label: label.into(),
        key,
    }
}

const LEGEND_ROW: i32 = 22;
const LEGEND_GLYPH: (i32, i32) = (8, 44);

fn draw_legend<DB: DrawingBackend>(area: &Area<DB>, entries: &[Entry]) -> Drawn<DB> {
    let text = (FONT, LEGEND_SIZE)
        .into_font()
        .color(&BLACK)
        .pos(Pos::new(HPos::Left, VPos::Center));
    let (x0, x1) = LEGEND_GLYPH;
    for (i, e) in entries.iter().enumerate() {
        let y = 16 + LEGEND_ROW * i as i32;
        match e.key {
            Key::Band(c) => {
                area.draw(&Rectangle::new(
                    [(x0, y - 7), (x1, y + 7)],
                    pale(c).filled(),
                ))?;
                area.draw(&Rectangle::new([(x0, y - 7), (x1, y + 7)], stroke(c, 1)))?;
            }
            Key::Line(look) => draw_legend_line(area, (x0, x1, y), look)?,
            Key::Marker(look, filled) => draw_marker(area, ((x0 + x1) / 2, y), look, 5, filled)?,
            Key::LineMarker(look) => {
                draw_legend_line(area, (x0, x1, y), look)?;
                draw_marker(area, ((x0 + x1) / 2, y), look, 5, true)?;
            }
        }
        area.draw(&Text::new(e.label.as_str(), (x1 + 8, y), text.clone()))?;
    }
    Ok(())
}

fn draw_legend_line<DB: DrawingBackend>(
    area: &Area<DB>,
    (x0, x1, y): (i32, i32, i32),
    look: Look,
) -> Drawn<DB> {
    let style = stroke(look.colour, 2);
    match look.dash {
        None => area.draw(&PathElement::new(vec![(x0, y), (x1, y)], style)),
        Some((dash, gap)) => area.draw(&DashedPathElement::new(
            vec![(x0, y), (x1, y)],
            dash,
            gap,
            style,
        )),
    }
}

/// White page, title, then the plots on the left and a legend column on the right, as
/// wide as the longest label needs (within a third of the page).
fn frame<'l, DB: DrawingBackend>(
    root: &Area<DB>,
    title: &str,
    labels: impl IntoIterator<Item = &'l str>,
) -> Drawn<DB, (Area<DB>, Area<DB>)> {
    root.fill(&WHITE)?;
    let body = root.titled(title, (FONT, TITLE_SIZE).into_font().color(&BLACK))?;
    let style = (FONT, LEGEND_SIZE).into_font().color(&BLACK);
    let mut widest = 0;
    for label in labels {
        widest = widest.max(body.estimate_text_size(label, &style)?.0);
    }
    let (w, _) = body.dim_in_pixel();
    let legend_w = (widest + LEGEND_GLYPH.1 as u32 + 24).max(120).min(w / 3);
    let (plots, legend) = body.split_horizontally(w as i32 - legend_w as i32);
    Ok((plots, legend))
}

/// Axis styles shared by every panel; `x_desc` empty for panels above a shared axis.
fn style_mesh<'m, 'a, 'b, X, Y, DB>(
    mesh: &'m mut MeshStyle<'a, 'b, X, Y, DB>,
    x_desc: &str,
    y_desc: &str,
) -> &'m mut MeshStyle<'a, 'b, X, Y, DB>
where
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
    DB: DrawingBackend,
{
    mesh.label_style((FONT, TICK_SIZE).into_font().color(&BLACK))
        .axis_desc_style((FONT, DESC_SIZE).into_font().color(&BLACK))
        .x_label_formatter(&fmt_tick)
        .y_label_formatter(&fmt_tick)
        .bold_line_style(GRID_BOLD)
        .light_line_style(GRID_LIGHT)
        // plotters' ten fine lines per tick interval turn the background grey.
        .max_light_lines(4)
        .axis_style(stroke(BLACK, 1))
        .y_desc(y_desc);
    if !x_desc.is_empty() {
        mesh.x_desc(x_desc);
    }
    mesh
}

const LABEL_AREA_Y: u32 = 70;
const LABEL_AREA_X: u32 = 26;
const LABEL_AREA_X_DESC: u32 = 46;

type Panel<'a, DB, X, Y> = ChartContext<
    'a,
    DB,
    Cartesian2d<<X as AsRangedCoord>::CoordDescType, <Y as AsRangedCoord>::CoordDescType>,
>;

/// What is right of a panel's plot.
#[derive(Clone, Copy, PartialEq)]
enum Right {
    /// A secondary y axis.
    Axis,
    /// As wide as an axis but empty, to line up with a panel that has one.
    Blank,
    /// A margin.
    Nothing,
}

fn panel<'a, DB: DrawingBackend, X: AsRangedCoord, Y: AsRangedCoord>(
    area: &'a Area<DB>,
    x: X,
    y: Y,
    with_x_desc: bool,
    right: Right,
) -> Drawn<DB, Panel<'a, DB, X, Y>> {
    // A right label area without a secondary axis would repeat the primary one: the blank
    // is a margin instead.
    let (margin, axis) = match right {
        Right::Axis => (4, LABEL_AREA_Y),
        Right::Blank => (4 + LABEL_AREA_Y, 0),
        Right::Nothing => (16, 0),
    };
    ChartBuilder::on(area)
        .margin_top(8)
        .margin_bottom(4)
        .margin_left(4)
        .margin_right(margin)
        .x_label_area_size(if with_x_desc {
            LABEL_AREA_X_DESC
        } else {
            LABEL_AREA_X
        })
        .y_label_area_size(LABEL_AREA_Y)
        .right_y_label_area_size(axis)
        .build_cartesian_2d(x, y)
}

/// Splits an area top to bottom by fractions of its height.
fn split_rows<DB: DrawingBackend>(area: &Area<DB>, fractions: &[f64]) -> Vec<Area<DB>> {
    let h = f64::from(area.dim_in_pixel().1);
    let mut acc = 0.0;
    let mut breaks = Vec::new();
    for f in &fractions[..fractions.len().saturating_sub(1)] {
        acc += f;
        breaks.push((h * acc).round() as i32);
    }
    area.split_by_breakpoints([] as [i32; 0], breaks)
}

// ---------------------------------------------------------------------------------------
// Numbers.

/// Tick labels without float noise ("0.30000000000000004", "100.00000000000001").
fn fmt_tick(v: &f64) -> String {
    let v = *v;
    if v.abs() < 1e-12 {
        return "0".to_string();
    }
    let digits = if v.abs() >= 100.0 {
        0
    } else if v.abs() >= 1.0 {
        2
    } else {
        4
    };
    let s = format!("{v:.digits$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

fn fmt_ms(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// lo..hi of the finite values, widened to a usable range when there are none or one.
fn extent(values: impl IntoIterator<Item = f64>) -> Range<f64> {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values.into_iter().filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        return 0.0..1.0;
    }
    if hi <= lo {
        hi = lo + 1.0;
    }
    lo..hi
}

/// 0..(a little above the largest finite value), at least 0..1 so an all-zero series
/// still has an axis.
fn from_zero(values: impl IntoIterator<Item = f64>) -> Range<f64> {
    let max = values
        .into_iter()
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max);
    0.0..if max > 0.0 { max * 1.08 } else { 1.0 }
}

fn pool(s: &Sample) -> u32 {
    s.booting + s.idle + s.busy + s.stopping
}

// ---------------------------------------------------------------------------------------
// run_timeline

/// A worker state's name, colour and count.
type Band = (&'static str, RGBColor, fn(&Sample) -> u32);

struct RunTimeline<'a> {
    samples: &'a [Sample],
    title: &'a str,
}

impl Chart for RunTimeline<'_> {
    fn size(&self) -> (u32, u32) {
        (1000, 700)
    }

    fn draw<DB: DrawingBackend>(&self, root: &Area<DB>) -> Drawn<DB> {
        let s = self.samples;
        // Top of the stack first, as the bands read from top to bottom.
        let bands: [Band; 4] = [
            ("stopping", STOPPING, |s| s.stopping),
            ("booting", BOOTING, |s| s.booting),
            ("idle", IDLE, |s| s.idle),
            ("busy", BUSY, |s| s.busy),
        ];
        let top_keys: Vec<Entry> = bands
            .iter()
            .map(|(name, c, _)| entry(*name, Key::Band(*c)))
            .collect();
        let bottom_keys = [
            entry("queued", Key::Line(QUEUE_LOOK)),
            entry("offered load", Key::Line(LOAD_LOOK)),
        ];
        let labels = top_keys
            .iter()
            .chain(&bottom_keys)
            .map(|e| e.label.as_str());
        let (plots, legend) = frame(root, self.title, labels)?;
        let rows = [0.62, 0.38];
        let (plot_rows, legend_rows) = (split_rows(&plots, &rows), split_rows(&legend, &rows));

        let t = extent(s.iter().map(|s| s.t));
        let ts: Vec<f64> = s.iter().map(|s| s.t).collect();

        let mut chart = panel(
            &plot_rows[0],
            t.clone(),
            from_zero(s.iter().map(|s| f64::from(pool(s)))),
            false,
            Right::Blank,
        )?;
        style_mesh(&mut chart.configure_mesh(), "", "workers").draw()?;
        // Each band is drawn from zero to its top of the stack, tallest first, so the next
        // one down covers all but its own band.
        for k in 0..bands.len() {
            if s.is_empty() {
                break;
            }
            let (_, colour, _) = bands[k];
            let tops = s.iter().zip(&ts).map(|(smp, &t)| {
                let top: u32 = bands[k..].iter().map(|(_, _, value)| value(smp)).sum();
                (t, f64::from(top))
            });
            chart.draw_series(
                AreaSeries::new(tops, 0.0, pale(colour).filled()).border_style(stroke(colour, 1)),
            )?;
        }
        draw_legend(&legend_rows[0], &top_keys)?;

        let mut chart = panel(
            &plot_rows[1],
            t.clone(),
            from_zero(s.iter().map(|s| f64::from(s.queued))),
            true,
            Right::Axis,
        )?
        .set_secondary_coord(t, from_zero(s.iter().map(|s| s.load)));
        style_mesh(
            &mut chart.configure_mesh(),
            "time (s)",
            "connections queued",
        )
        .draw()?;
        chart
            .configure_secondary_axes()
            .label_style((FONT, TICK_SIZE).into_font().color(&BLACK))
            .axis_desc_style((FONT, DESC_SIZE).into_font().color(&BLACK))
            .y_label_formatter(&fmt_tick)
            .y_desc("offered load (req/s)")
            .draw()?;
        let queued = s.iter().map(|s| (s.t, f64::from(s.queued))).collect();
        draw_line(&mut chart, queued, QUEUE_LOOK)?;
        draw_secondary_load(&mut chart, s)?;
        draw_legend(&legend_rows[1], &bottom_keys)?;
        Ok(())
    }
}

type Linear = Cartesian2d<RangedCoordf64, RangedCoordf64>;

/// The offered load on a panel's secondary axis, dashed grey.
fn draw_secondary_load<DB: DrawingBackend>(
    chart: &mut plotters::chart::DualCoordChartContext<'_, DB, Linear, Linear>,
    samples: &[Sample],
) -> Drawn<DB> {
    let load: Vec<(f64, f64)> = samples
        .iter()
        .filter(|s| s.t.is_finite() && s.load.is_finite())
        .map(|s| (s.t, s.load))
        .collect();
    if load.is_empty() {
        return Ok(());
    }
    let (dash, gap) = LOAD_LOOK.dash.unwrap_or((6, 4));
    chart.draw_secondary_series(DashedLineSeries::new(
        load,
        dash,
        gap,
        stroke(LOAD_LOOK.colour, 2),
    ))?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// compare_timeline

struct CompareTimeline<'a> {
    runs: &'a [RunSeries<'a>],
    title: &'a str,
}

impl Chart for CompareTimeline<'_> {
    fn size(&self) -> (u32, u32) {
        (1000, 700)
    }

    fn draw<DB: DrawingBackend>(&self, root: &Area<DB>) -> Drawn<DB> {
        let runs = self.runs;
        let mut keys: Vec<Entry> = runs
            .iter()
            .enumerate()
            .map(|(i, r)| entry(r.name, Key::Line(series_look(i))))
            .collect();
        keys.push(entry("offered load", Key::Line(LOAD_LOOK)));
        let (plots, legend) = frame(root, self.title, keys.iter().map(|e| e.label.as_str()))?;
        let rows = [0.36, 0.30, 0.34];
        let (plot_rows, legend_rows) = (split_rows(&plots, &rows), split_rows(&legend, &rows));

        let all = || runs.iter().flat_map(|r| r.samples.iter());
        let t = extent(all().map(|s| s.t));
        let first: &[Sample] = runs.first().map_or(&[], |r| r.samples);

        let mut chart = panel(
            &plot_rows[0],
            t.clone(),
            from_zero(all().map(|s| f64::from(pool(s)))),
            false,
            Right::Axis,
        )?
        .set_secondary_coord(t.clone(), from_zero(first.iter().map(|s| s.load)));
        style_mesh(&mut chart.configure_mesh(), "", "pool size (workers)").draw()?;
        chart
            .configure_secondary_axes()
            .label_style((FONT, TICK_SIZE).into_font().color(&BLACK))
            .axis_desc_style((FONT, DESC_SIZE).into_font().color(&BLACK))
            .y_label_formatter(&fmt_tick)
            .y_desc("offered load (req/s)")
            .draw()?;
        // The load first, so the policies' lines stay on top of it.
        draw_secondary_load(&mut chart, first)?;
        for (i, r) in runs.iter().enumerate() {
            let pts = r
                .samples
                .iter()
                .map(|s| (s.t, f64::from(pool(s))))
                .collect();
            draw_line(&mut chart, pts, series_look(i))?;
        }
        draw_legend(&legend_rows[0], &keys)?;

        type Value = fn(&Sample) -> u32;
        let lower: [(&str, Value, bool); 2] = [
            ("busy (workers)", |s| s.busy, false),
            ("connections queued", |s| s.queued, true),
        ];
        for (row, (y_desc, value, last)) in lower.into_iter().enumerate() {
            let mut chart = panel(
                &plot_rows[row + 1],
                t.clone(),
                from_zero(all().map(|s| f64::from(value(s)))),
                last,
                Right::Blank,
            )?;
            let x_desc = if last { "time (s)" } else { "" };
            style_mesh(&mut chart.configure_mesh(), x_desc, y_desc).draw()?;
            for (i, r) in runs.iter().enumerate() {
                let pts = r
                    .samples
                    .iter()
                    .map(|s| (s.t, f64::from(value(s))))
                    .collect();
                draw_line(&mut chart, pts, series_look(i))?;
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// wait_cdf

/// The left edge of the wait axis; smaller waits (zeros included) are drawn on it.
const CDF_MIN_MS: f64 = 0.1;
/// Steps of the CDF kept per log-spaced bin across the axis: finer than a pixel at any
/// sensible size, and bounded whatever the number of requests.
const CDF_BINS: f64 = 2000.0;

struct Distribution {
    /// Waits in ms, ascending.
    sorted_ms: Vec<f64>,
}

impl Distribution {
    fn new(waits_us: &[u64]) -> Distribution {
        let mut w = waits_us.to_vec();
        w.sort_unstable();
        Distribution {
            sorted_ms: w.into_iter().map(|us| us as f64 / 1000.0).collect(),
        }
    }

    /// The same rank as the world's percentile (`RunResult`), so the marker sits on the
    /// value the report prints.
    fn p99_ms(&self) -> Option<f64> {
        let n = self.sorted_ms.len();
        if n == 0 {
            return None;
        }
        let i = (0.99 * (n - 1) as f64).round() as usize;
        Some(self.sorted_ms[i.min(n - 1)])
    }

    /// Where the CDF's vertical step at `x` crosses 0.99 (or the nearest end of that step).
    fn p99_height(&self, x: f64) -> f64 {
        let n = self.sorted_ms.len() as f64;
        let below = self.sorted_ms.partition_point(|&w| w < x) as f64 / n;
        let upto = self.sorted_ms.partition_point(|&w| w <= x) as f64 / n;
        0.99f64.clamp(below, upto)
    }

    /// The step function from (lo, 0) to (hi, 1), one vertical step per occupied bin.
    fn steps(&self, lo: f64, hi: f64) -> Vec<(f64, f64)> {
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
fn cdf_right_edge(max_ms: f64) -> f64 {
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

struct WaitCdf<'a> {
    runs: &'a [RunSeries<'a>],
    title: &'a str,
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

// ---------------------------------------------------------------------------------------
// cost_vs_p99

const PARETO: Look = Look {
    colour: RGBColor(0xD5, 0x5E, 0x00),
    dash: None,
    shape: Shape::Circle,
};
const DOMINATED: Look = Look {
    colour: RGBColor(0x00, 0x72, 0xB2),
    dash: None,
    shape: Shape::Circle,
};
const OBJECTIVE: Look = Look {
    colour: BLACK,
    dash: Some((8, 5)),
    shape: Shape::Circle,
};

struct CostVsP99<'a> {
    points: &'a [CostPoint<'a>],
    objective_p99_ms: Option<f64>,
    title: &'a str,
}

impl Chart for CostVsP99<'_> {
    fn size(&self) -> (u32, u32) {
        (1000, 700)
    }

    fn draw<DB: DrawingBackend>(&self, root: &Area<DB>) -> Drawn<DB> {
        let points: Vec<&CostPoint> = self
            .points
            .iter()
            .filter(|p| p.worker_seconds.is_finite() && p.p99_ms.is_finite())
            .collect();
        let objective = self.objective_p99_ms.filter(|o| o.is_finite());
        let mut keys = vec![
            entry("configuration", Key::Marker(DOMINATED, false)),
            entry(
                "Pareto-optimal (least cost for its p99)",
                Key::LineMarker(PARETO),
            ),
        ];
        if let Some(o) = objective {
            keys.push(entry(
                format!("objective: p99 ≤ {} ms", fmt_tick(&o)),
                Key::Line(OBJECTIVE),
            ));
        }
        let (plots, legend) = frame(root, self.title, keys.iter().map(|e| e.label.as_str()))?;

        let raw = extent(points.iter().map(|p| p.worker_seconds));
        // Room on both sides so the end points and their labels are not on the frame.
        let pad = (raw.end - raw.start) * 0.06;
        let x = (raw.start - pad)..(raw.end + pad);
        let y = from_zero(points.iter().map(|p| p.p99_ms).chain(objective));
        let mut chart = panel(&plots, x.clone(), y, true, Right::Nothing)?;
        style_mesh(
            &mut chart.configure_mesh(),
            "worker-seconds",
            "p99 queue wait (ms)",
        )
        .draw()?;

        if let Some(o) = objective {
            draw_line(&mut chart, vec![(x.start, o), (x.end, o)], OBJECTIVE)?;
        }
        let mut front: Vec<&CostPoint> = points.iter().copied().filter(|p| p.pareto).collect();
        front.sort_by(|a, b| {
            a.worker_seconds
                .total_cmp(&b.worker_seconds)
                .then(b.p99_ms.total_cmp(&a.p99_ms))
        });
        // Each Pareto point's p99 holds until the next costlier one improves on it.
        let mut steps = Vec::new();
        for (k, p) in front.iter().enumerate() {
            steps.push((p.worker_seconds, p.p99_ms));
            if let Some(next) = front.get(k + 1) {
                steps.push((next.worker_seconds, p.p99_ms));
            }
        }
        draw_line(&mut chart, steps, PARETO)?;

        let screen = chart.plotting_area().use_screen_coord();
        let right_edge = chart.plotting_area().get_pixel_range().0.end;
        let label_all = points.len() <= MAX_LABELLED;
        let text = (FONT, POINT_LABEL_SIZE).into_font().color(&BLACK);
        // Dominated points first: the highlighted ones are drawn over them.
        for pass_pareto in [false, true] {
            for p in points.iter().filter(|p| p.pareto == pass_pareto) {
                let at = chart.backend_coord(&(p.worker_seconds, p.p99_ms));
                if p.pareto {
                    draw_marker(&screen, at, PARETO, 5, true)?;
                } else {
                    draw_marker(&screen, at, DOMINATED, 4, false)?;
                }
                if !(label_all || p.pareto) {
                    continue;
                }
                let (w, _) = screen.estimate_text_size(p.name, &text)?;
                // Right of the point, unless that runs off the plot.
                let (pos, x) = if at.0 + 7 + w as i32 > right_edge {
                    (Pos::new(HPos::Right, VPos::Bottom), at.0 - 7)
                } else {
                    (Pos::new(HPos::Left, VPos::Bottom), at.0 + 7)
                };
                screen.draw(&Text::new(p.name, (x, at.1 - 3), text.pos(pos)))?;
            }
        }
        draw_legend(&legend.margin(8, 0, 0, 0), &keys)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// A file under the temp dir, unique to this process and name, removed when dropped.
    struct TempFile(PathBuf);

    impl TempFile {
        fn new(name: &str) -> TempFile {
            let p = std::env::temp_dir().join(format!("drover-plot-{}-{name}", std::process::id()));
            let _ = std::fs::remove_file(&p);
            TempFile(p)
        }

        fn path(&self) -> &str {
            self.0.to_str().expect("temp dir path is UTF-8")
        }

        fn bytes(&self) -> Vec<u8> {
            std::fs::read(&self.0).expect("chart written")
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    /// A deterministic run: a pool that grows into a burst in the middle and shrinks after.
    fn samples(policy: u32, n: usize) -> Vec<Sample> {
        (0..n)
            .map(|i| {
                let t = i as f64 * 1.5;
                let burst = (80..120).contains(&i);
                let load = if burst {
                    400.0
                } else {
                    60.0 + (i % 7) as f64 * 3.0
                };
                let busy = if burst {
                    10 + policy * 2
                } else {
                    3 + (i as u32 % 3)
                };
                Sample {
                    t,
                    booting: if (78..90).contains(&i) { 3 + policy } else { 0 },
                    idle: 2 + policy + (i as u32 % 2),
                    busy,
                    stopping: u32::from((120..126).contains(&i)),
                    queued: if burst {
                        (40 - (i as u32 - 80)) * (3 - policy)
                    } else {
                        0
                    },
                    load,
                }
            })
            .collect()
    }

    /// A third of requests served at once; the rest roughly log-normal around a policy's
    /// typical wait, with a burst's tail two orders of magnitude up.
    fn waits(policy: u64, n: u64) -> Vec<u64> {
        // A cheap LCG: reproducible, no dependency.
        let mut x = 0x9E37_79B9_7F4A_7C15u64.wrapping_add(policy);
        let mut uniform = move || {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (x >> 11) as f64 / (1u64 << 53) as f64
        };
        (0..n)
            .map(|i| {
                let z: f64 = (0..4).map(|_| uniform()).sum::<f64>() - 2.0;
                let typical = 300.0 * (1.0 + policy as f64);
                let tail = if i % 40 == 0 { 150.0 } else { 1.0 };
                if i % 3 == 0 {
                    0
                } else {
                    (typical * tail * (1.6 * z).exp()) as u64
                }
            })
            .collect()
    }

    struct Data {
        names: [&'static str; 3],
        samples: Vec<Vec<Sample>>,
        waits: Vec<Vec<u64>>,
    }

    fn data() -> Data {
        Data {
            names: ["dynamic-2-16", "apache-prefork", "static-8"],
            samples: (0..3).map(|p| samples(p, 200)).collect(),
            waits: (0..3).map(|p| waits(p, 3000)).collect(),
        }
    }

    fn runs(d: &Data) -> Vec<RunSeries<'_>> {
        (0..3)
            .map(|i| RunSeries {
                name: d.names[i],
                samples: &d.samples[i],
                waits_us: &d.waits[i],
            })
            .collect()
    }

    /// Configurations whose p99 falls as they cost more, noisily; Pareto flags computed
    /// here, as the lab would, since the module only draws them.
    fn cost_points(n: usize) -> Vec<(String, f64, f64, bool)> {
        let mut pts: Vec<(String, f64, f64, bool)> = (0..n)
            .map(|i| {
                let cost = 1000.0 + 150.0 * i as f64 + ((i * 53) % 7) as f64 * 90.0;
                let p99 = 4000.0 / (1.0 + i as f64) + ((i * 37) % 11) as f64 * 60.0;
                (format!("cfg-{i}"), cost, p99, false)
            })
            .collect();
        for k in 0..pts.len() {
            let (c, p) = (pts[k].1, pts[k].2);
            pts[k].3 = !pts
                .iter()
                .any(|o| (o.1 <= c && o.2 < p) || (o.1 < c && o.2 <= p));
        }
        pts
    }

    fn with_cost_points<R>(n: usize, f: impl FnOnce(&[CostPoint]) -> R) -> R {
        let raw = cost_points(n);
        let pts: Vec<CostPoint> = raw
            .iter()
            .map(|(name, c, p, par)| CostPoint {
                name,
                worker_seconds: *c,
                p99_ms: *p,
                pareto: *par,
            })
            .collect();
        f(&pts)
    }

    type Draw<'a> = &'a dyn Fn(&str) -> Result<(), String>;

    /// Draws twice per format and checks the bytes match; returns the SVG text.
    fn twice(name: &str, draw: Draw) -> String {
        let mut svg = String::new();
        for ext in ["svg", "png"] {
            let a = TempFile::new(&format!("{name}-a.{ext}"));
            let b = TempFile::new(&format!("{name}-b.{ext}"));
            draw(a.path()).unwrap();
            draw(b.path()).unwrap();
            let (ba, bb) = (a.bytes(), b.bytes());
            assert!(!ba.is_empty());
            assert!(ba == bb, "{name}.{ext}: two drawings differ");
            if ext == "svg" {
                svg = String::from_utf8(ba).unwrap();
            } else {
                assert_eq!(&ba[..8], b"\x89PNG\r\n\x1a\n");
            }
        }
        svg
    }

    fn assert_texts(svg: &str, texts: &[&str]) {
        for t in texts {
            // plotters writes each text on a line of its own inside its element.
            assert!(svg.contains(&format!(">\n{t}")), "no text starting {t:?}");
        }
    }

    #[test]
    fn format_from_extension() {
        assert_eq!(ImageFormat::from_path("a/b.svg"), Ok(ImageFormat::Svg));
        assert_eq!(ImageFormat::from_path("b.PNG"), Ok(ImageFormat::Png));
        let e = ImageFormat::from_path("out/plot.jpg").unwrap_err();
        assert!(e.contains("out/plot.jpg") && e.contains(".svg") && e.contains(".png"));
        assert!(ImageFormat::from_path("svg").is_err());
    }

    #[test]
    fn run_timeline_is_deterministic_and_labelled() {
        let s = samples(1, 200);
        let svg = twice("run", &|p| run_timeline(&s, "one run: dynamic-2-16", p));
        assert_texts(
            &svg,
            &[
                "one run: dynamic-2-16",
                "time (s)",
                "workers",
                "connections queued",
                "offered load (req/s)",
                "busy",
                "idle",
                "booting",
                "stopping",
                "queued",
            ],
        );
    }

    #[test]
    fn compare_timeline_is_deterministic_and_labelled() {
        let d = data();
        let r = runs(&d);
        let svg = twice("compare", &|p| {
            compare_timeline(&r, "burst: three policies", p)
        });
        assert_texts(
            &svg,
            &[
                "burst: three policies",
                "time (s)",
                "pool size (workers)",
                "busy (workers)",
                "connections queued",
                "offered load (req/s)",
                "dynamic-2-16",
                "apache-prefork",
                "static-8",
            ],
        );
    }

    #[test]
    fn wait_cdf_is_deterministic_and_labelled() {
        let d = data();
        let r = runs(&d);
        let svg = twice("cdf", &|p| wait_cdf(&r, "queue waits", p));
        assert_texts(
            &svg,
            &[
                "queue waits",
                "queue wait (ms)",
                "fraction of requests",
                "dynamic-2-16 (p99",
                "apache-prefork (p99",
                "static-8 (p99",
                "0.1",
            ],
        );
    }

    #[test]
    fn cost_vs_p99_is_deterministic_and_labelled() {
        with_cost_points(12, |pts| {
            let svg = twice("cost", &|p| cost_vs_p99(pts, Some(500.0), "cost", p));
            assert_texts(
                &svg,
                &[
                    "worker-seconds",
                    "p99 queue wait (ms)",
                    "Pareto-optimal",
                    "objective: p99 ≤ 500 ms",
                    "cfg-0",
                    "cfg-5",
                ],
            );
        });
    }

    #[test]
    fn cost_vs_p99_labels_only_pareto_points_past_thirty() {
        with_cost_points(40, |pts| {
            let f = TempFile::new("cost-many.svg");
            cost_vs_p99(pts, None, "many", f.path()).unwrap();
            let svg = String::from_utf8(f.bytes()).unwrap();
            assert!(pts.iter().any(|p| p.pareto) && pts.iter().any(|p| !p.pareto));
            for p in pts {
                let label = format!("\n{}\n", p.name);
                assert_eq!(svg.contains(&label), p.pareto, "{}", p.name);
            }
            assert!(!svg.contains("objective"));
        });
    }

    #[test]
    fn empty_inputs_draw_empty_charts() {
        let empty = RunSeries {
            name: "idle-policy",
            samples: &[],
            waits_us: &[],
        };
        for ext in ["svg", "png"] {
            let f = TempFile::new(&format!("empty.{ext}"));
            run_timeline(&[], "nothing", f.path()).unwrap();
            compare_timeline(&[], "nothing", f.path()).unwrap();
            compare_timeline(std::slice::from_ref(&empty), "nothing", f.path()).unwrap();
            wait_cdf(&[], "nothing", f.path()).unwrap();
            wait_cdf(std::slice::from_ref(&empty), "nothing", f.path()).unwrap();
            cost_vs_p99(&[], Some(10.0), "nothing", f.path()).unwrap();
            let one = [CostPoint {
                name: "only",
                worker_seconds: 5.0,
                p99_ms: 0.0,
                pareto: true,
            }];
            cost_vs_p99(&one, None, "one", f.path()).unwrap();
        }
    }

    #[test]
    fn errors_name_the_path() {
        let e = run_timeline(&[], "t", "/nonexistent-dir/x/plot.svg").unwrap_err();
        assert!(e.starts_with("/nonexistent-dir/x/plot.svg: "), "{e}");
        let e = wait_cdf(&[], "t", "/nonexistent-dir/x/plot.png").unwrap_err();
        assert!(e.starts_with("/nonexistent-dir/x/plot.png: "), "{e}");
        let e = cost_vs_p99(&[], None, "t", "plot.gif").unwrap_err();
        assert!(e.contains("plot.gif") && e.contains(".svg or .png"), "{e}");
    }

    #[test]
    fn cdf_steps_and_p99() {
        let d = Distribution::new(&[0, 0, 50, 1_000, 2_000, 30_000]);
        assert_eq!(d.p99_ms(), Some(30.0));
        let hi = cdf_right_edge(30.0);
        assert_eq!(hi, 100.0);
        let steps = d.steps(CDF_MIN_MS, hi);
        assert_eq!(steps.first(), Some(&(0.1, 0.0)));
        assert_eq!(steps.last(), Some(&(100.0, 1.0)));
        // Zero and 0.05 ms waits land on the left edge, in one step.
        assert_eq!(steps[1], (0.1, 0.0));
        assert_eq!(steps[2], (0.1, 0.5));
        assert!(steps
            .windows(2)
            .all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1));
        assert_eq!(cdf_right_edge(1000.0), 1000.0);
        assert_eq!(cdf_right_edge(0.0), 1.0);
        assert_eq!(Distribution::new(&[]).p99_ms(), None);
        // Bounded however many requests there are.
        let many: Vec<u64> = (0..200_000).collect();
        assert!(Distribution::new(&many).steps(0.1, 1000.0).len() <= 2 * 2001 + 2);
    }

    #[test]
    fn tick_labels_have_no_float_noise() {
        assert_eq!(fmt_tick(&0.30000000000000004), "0.3");
        assert_eq!(fmt_tick(&100.00000000000001), "100");
        assert_eq!(fmt_tick(&0.0), "0");
        assert_eq!(fmt_tick(&2.5), "2.5");
    }

    /// Renders every chart into $DROVER_PLOT_DEMO (SVG and PNG) for a person to look at.
    #[test]
    #[ignore = "writes demo pictures; run with DROVER_PLOT_DEMO=DIR"]
    fn demo() {
        let dir = std::env::var("DROVER_PLOT_DEMO").expect("DROVER_PLOT_DEMO=DIR");
        let d = data();
        let r = runs(&d);
        for ext in ["svg", "png"] {
            let at = |name: &str| format!("{dir}/{name}.{ext}");
            run_timeline(
                &d.samples[0],
                "dynamic-2-16 under a burst",
                &at("run_timeline"),
            )
            .unwrap();
            compare_timeline(&r, "three policies under a burst", &at("compare_timeline")).unwrap();
            wait_cdf(&r, "queue wait, three policies", &at("wait_cdf")).unwrap();
            with_cost_points(24, |pts| {
                cost_vs_p99(
                    pts,
                    Some(500.0),
                    "cost vs p99, 24 configurations",
                    &at("cost_vs_p99"),
                )
            })
            .unwrap();
        }
    }
}
