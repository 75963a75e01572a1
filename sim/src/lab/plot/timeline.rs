//! The timelines: one run's pool by state with its queue and load, and several policies'
//! pools, busy workers and queues side by side.

use super::*;

// ---------------------------------------------------------------------------------------
// run_timeline

/// A worker state's name, colour and count.
pub(super) type Band = (&'static str, RGBColor, fn(&Sample) -> u32);

pub(super) struct RunTimeline<'a> {
    pub(super) samples: &'a [Sample],
    pub(super) title: &'a str,
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

pub(super) type Linear = Cartesian2d<RangedCoordf64, RangedCoordf64>;

/// The offered load on a panel's secondary axis, dashed grey.
pub(super) fn draw_secondary_load<DB: DrawingBackend>(
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

pub(super) struct CompareTimeline<'a> {
    pub(super) runs: &'a [RunSeries<'a>],
    pub(super) title: &'a str,
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
