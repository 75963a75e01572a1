//! Cost against tail wait: one point per configuration, the Pareto front as a step line.

use super::*;

pub(super) const PARETO: Look = Look {
    colour: RGBColor(0xD5, 0x5E, 0x00),
    dash: None,
    shape: Shape::Circle,
};
pub(super) const DOMINATED: Look = Look {
    colour: RGBColor(0x00, 0x72, 0xB2),
    dash: None,
    shape: Shape::Circle,
};
pub(super) const OBJECTIVE: Look = Look {
    colour: BLACK,
    dash: Some((8, 5)),
    shape: Shape::Circle,
};

pub(super) struct CostVsP99<'a> {
    pub(super) points: &'a [CostPoint<'a>],
    pub(super) objective_p99_ms: Option<f64>,
    pub(super) title: &'a str,
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
