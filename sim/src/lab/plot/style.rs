//! The charts' common look: sizes, palette and series looks, drawing helpers (lines,
//! markers, legends, frames, meshes, panels) and number formats.

use super::*;

/// Text sizes in pixels.
pub(super) const TITLE_SIZE: u32 = 22;
pub(super) const DESC_SIZE: u32 = 15;
pub(super) const TICK_SIZE: u32 = 13;
pub(super) const LEGEND_SIZE: u32 = 14;
pub(super) const POINT_LABEL_SIZE: u32 = 11;

/// Okabe–Ito (colour-blind safe) without its yellow, too pale on white.
pub(super) const SERIES_COLOURS: [RGBColor; 7] = [
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
pub(super) const DASHES: [Option<(i32, i32)>; 4] =
    [None, Some((10, 5)), Some((3, 4)), Some((18, 6))];
pub(super) const SHAPES: [Shape; 4] = [Shape::Circle, Shape::Triangle, Shape::Square, Shape::Cross];

pub(super) const GREY: RGBColor = RGBColor(0x77, 0x77, 0x77);
pub(super) const GRID_LIGHT: RGBColor = RGBColor(0xEE, 0xEE, 0xEE);
pub(super) const GRID_BOLD: RGBColor = RGBColor(0xD4, 0xD4, 0xD4);

/// Worker states, bottom of the stack first (Okabe–Ito again; stopping is grey since it
/// is leaving the pool).
pub(super) const BUSY: RGBColor = RGBColor(0xD5, 0x5E, 0x00);
pub(super) const IDLE: RGBColor = RGBColor(0x00, 0x9E, 0x73);
pub(super) const BOOTING: RGBColor = RGBColor(0x56, 0xB4, 0xE9);
pub(super) const STOPPING: RGBColor = RGBColor(0x99, 0x99, 0x99);

#[derive(Clone, Copy)]
pub(super) enum Shape {
    Circle,
    Triangle,
    Square,
    Cross,
}

#[derive(Clone, Copy)]
pub(super) struct Look {
    pub(super) colour: RGBColor,
    pub(super) dash: Option<(i32, i32)>,
    pub(super) shape: Shape,
}

pub(super) fn series_look(i: usize) -> Look {
    Look {
        colour: SERIES_COLOURS[i % SERIES_COLOURS.len()],
        dash: DASHES[i % DASHES.len()],
        shape: SHAPES[i % SHAPES.len()],
    }
}

pub(super) const LOAD_LOOK: Look = Look {
    colour: GREY,
    dash: Some((6, 4)),
    shape: Shape::Circle,
};

pub(super) const QUEUE_LOOK: Look = Look {
    colour: RGBColor(0x00, 0x72, 0xB2),
    dash: None,
    shape: Shape::Circle,
};

pub(super) fn stroke(colour: RGBColor, width: u32) -> ShapeStyle {
    ShapeStyle {
        color: colour.to_rgba(),
        filled: false,
        stroke_width: width,
    }
}

/// Mixed with white but opaque: stacked areas overdraw one another, so they cannot be
/// translucent.
pub(super) fn pale(c: RGBColor) -> RGBColor {
    let mix = |v: u8| (f64::from(v) * 0.6 + 255.0 * 0.4).round() as u8;
    RGBColor(mix(c.0), mix(c.1), mix(c.2))
}

// ---------------------------------------------------------------------------------------
// Drawing helpers.

pub(super) fn draw_line<DB: DrawingBackend, CT: CoordTranslate<From = (f64, f64)>>(
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
pub(super) fn draw_marker<DB: DrawingBackend>(
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
pub(super) enum Key {
    Band(RGBColor),
    Line(Look),
    Marker(Look, bool),
    LineMarker(Look),
}

pub(super) struct Entry {
    pub(super) label: String,
    pub(super) key: Key,
}

pub(super) fn entry(label: impl Into<String>, key: Key) -> Entry {
    Entry {
        label: label.into(),
        key,
    }
}

pub(super) const LEGEND_ROW: i32 = 22;
pub(super) const LEGEND_GLYPH: (i32, i32) = (8, 44);

pub(super) fn draw_legend<DB: DrawingBackend>(area: &Area<DB>, entries: &[Entry]) -> Drawn<DB> {
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

pub(super) fn draw_legend_line<DB: DrawingBackend>(
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
pub(super) fn frame<'l, DB: DrawingBackend>(
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
pub(super) fn style_mesh<'m, 'a, 'b, X, Y, DB>(
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

pub(super) const LABEL_AREA_Y: u32 = 70;
pub(super) const LABEL_AREA_X: u32 = 26;
pub(super) const LABEL_AREA_X_DESC: u32 = 46;

pub(super) type Panel<'a, DB, X, Y> = ChartContext<
    'a,
    DB,
    Cartesian2d<<X as AsRangedCoord>::CoordDescType, <Y as AsRangedCoord>::CoordDescType>,
>;

/// What is right of a panel's plot.
#[derive(Clone, Copy, PartialEq)]
pub(super) enum Right {
    /// A secondary y axis.
    Axis,
    /// As wide as an axis but empty, to line up with a panel that has one.
    Blank,
    /// A margin.
    Nothing,
}

pub(super) fn panel<'a, DB: DrawingBackend, X: AsRangedCoord, Y: AsRangedCoord>(
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
pub(super) fn split_rows<DB: DrawingBackend>(area: &Area<DB>, fractions: &[f64]) -> Vec<Area<DB>> {
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
pub(super) fn fmt_tick(v: &f64) -> String {
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

pub(super) fn fmt_ms(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// lo..hi of the finite values, widened to a usable range when there are none or one.
pub(super) fn extent(values: impl IntoIterator<Item = f64>) -> Range<f64> {
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
pub(super) fn from_zero(values: impl IntoIterator<Item = f64>) -> Range<f64> {
    let max = values
        .into_iter()
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max);
    0.0..if max > 0.0 { max * 1.08 } else { 1.0 }
}

pub(super) fn pool(s: &Sample) -> u32 {
    s.booting + s.idle + s.busy + s.stopping
}
