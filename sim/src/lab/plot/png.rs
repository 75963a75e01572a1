//! PNG text: plotters' bitmap backend with text drawn here, from the bundled DejaVu Sans.

use super::*;

/// plotters' bitmap backend with text drawn here. plotters 0.3.7's `ab_glyph` text drops
/// each glyph's left side bearing ("i dle", "2-1 6") and sets a line too high (a title loses
/// its top); everything else goes to the bitmap backend unchanged. The text box is the one
/// plotters measured for the layout: advances and kerning at a scale of `size` pixels.
pub(super) struct Png<'a>(pub(super) BitMapBackend<'a>);

pub(super) type PngError = <BitMapBackend<'static> as DrawingBackend>::ErrorType;
pub(super) type PngResult = Result<(), DrawingErrorKind<PngError>>;

pub(super) fn dejavu_sans() -> Option<&'static FontRef<'static>> {
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
