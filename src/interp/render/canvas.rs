//! An RGB raster with the few primitives charts need, written out as PNG.

use std::path::Path;

use ab_glyph::{Font, PxScale, ScaleFont, point};

use super::font::fonts;
use crate::Result;
use crate::error::Error;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rgb(pub u8, pub u8, pub u8);

pub const WHITE: Rgb = Rgb(255, 255, 255);
pub const BLACK: Rgb = Rgb(0, 0, 0);
pub const GREY: Rgb = Rgb(120, 120, 120);
pub const LIGHT: Rgb = Rgb(225, 225, 225);

/// Where a text's (x, y) anchor sits relative to the text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Align {
    Left,
    Center,
    Right,
}

pub struct Canvas {
    pub width: usize,
    pub height: usize,
    pixels: Vec<[f32; 3]>,
}

impl Canvas {
    pub fn new(width: usize, height: usize) -> Self {
        Canvas { width, height, pixels: vec![[1.0; 3]; width * height] }
    }

    fn blend(&mut self, x: i64, y: i64, c: Rgb, alpha: f32) {
        if x < 0 || y < 0 || x >= self.width as i64 || y >= self.height as i64 || alpha <= 0.0 {
            return;
        }
        let a = alpha.min(1.0);
        let p = &mut self.pixels[y as usize * self.width + x as usize];
        for (ch, v) in p.iter_mut().zip([c.0, c.1, c.2]) {
            *ch = *ch * (1.0 - a) + (v as f32 / 255.0) * a;
        }
    }

    pub fn fill_rect(&mut self, x: f32, y: f32, w: f32, h: f32, c: Rgb) {
        let (x0, y0) = (x.round() as i64, y.round() as i64);
        let (x1, y1) = ((x + w).round() as i64, (y + h).round() as i64);
        for yy in y0..y1 {
            for xx in x0..x1 {
                self.blend(xx, yy, c, 1.0);
            }
        }
    }

    pub fn stroke_rect(&mut self, x: f32, y: f32, w: f32, h: f32, c: Rgb) {
        self.line(x, y, x + w, y, 1.0, c);
        self.line(x, y + h, x + w, y + h, 1.0, c);
        self.line(x, y, x, y + h, 1.0, c);
        self.line(x + w, y, x + w, y + h, 1.0, c);
    }

    /// A line of the given width, anti-aliased by distance to the segment.
    pub fn line(&mut self, x0: f32, y0: f32, x1: f32, y1: f32, width: f32, c: Rgb) {
        let r = width / 2.0;
        let (minx, maxx) = (x0.min(x1) - r - 1.0, x0.max(x1) + r + 1.0);
        let (miny, maxy) = (y0.min(y1) - r - 1.0, y0.max(y1) + r + 1.0);
        let (dx, dy) = (x1 - x0, y1 - y0);
        let len2 = (dx * dx + dy * dy).max(1e-12);
        for y in miny.floor() as i64..=maxy.ceil() as i64 {
            for x in minx.floor() as i64..=maxx.ceil() as i64 {
                let (px, py) = (x as f32 + 0.5, y as f32 + 0.5);
                let t = (((px - x0) * dx + (py - y0) * dy) / len2).clamp(0.0, 1.0);
                let (qx, qy) = (x0 + t * dx, y0 + t * dy);
                let d = ((px - qx).powi(2) + (py - qy).powi(2)).sqrt();
                self.blend(x, y, c, (r + 0.5 - d).clamp(0.0, 1.0));
            }
        }
    }

    pub fn circle(&mut self, cx: f32, cy: f32, r: f32, c: Rgb) {
        for y in (cy - r - 1.0).floor() as i64..=(cy + r + 1.0).ceil() as i64 {
            for x in (cx - r - 1.0).floor() as i64..=(cx + r + 1.0).ceil() as i64 {
                let d = ((x as f32 + 0.5 - cx).powi(2) + (y as f32 + 0.5 - cy).powi(2)).sqrt();
                self.blend(x, y, c, (r + 0.5 - d).clamp(0.0, 1.0));
            }
        }
    }

    /// Draws `text` with its baseline at y, horizontally aligned at x. Returns its width.
    pub fn text(&mut self, x: f32, y: f32, size: f32, c: Rgb, align: Align, text: &str) -> Result<f32> {
        let f = fonts()?;
        let w = f.width(text, size);
        let mut pen = match align {
            Align::Left => x,
            Align::Center => x - w / 2.0,
            Align::Right => x - w,
        };
        for ch in text.chars() {
            let font = f.for_char(ch);
            let scaled = font.as_scaled(PxScale::from(size));
            let id = font.glyph_id(ch);
            let glyph = id.with_scale_and_position(PxScale::from(size), point(pen, y));
            if let Some(outline) = font.outline_glyph(glyph) {
                let b = outline.px_bounds();
                outline.draw(|gx, gy, cov| {
                    self.blend(b.min.x as i64 + gx as i64, b.min.y as i64 + gy as i64, c, cov)
                });
            }
            pen += scaled.h_advance(id);
        }
        Ok(w)
    }

    /// Draws `text` turned a quarter counter-clockwise: it starts at (x, y) and reads upwards,
    /// with its baseline on the vertical line through x.
    pub fn text_up(&mut self, x: f32, y: f32, size: f32, c: Rgb, text: &str) -> Result<()> {
        let f = fonts()?;
        let mut pen = 0.0f32;
        for ch in text.chars() {
            let font = f.for_char(ch);
            let id = font.glyph_id(ch);
            let glyph = id.with_scale_and_position(PxScale::from(size), point(pen, 0.0));
            if let Some(outline) = font.outline_glyph(glyph) {
                let b = outline.px_bounds();
                // Unrotated (u, v) relative to the start of the baseline maps to (x + v, y − u).
                outline.draw(|gx, gy, cov| {
                    let (u, v) = (b.min.x as i64 + gx as i64, b.min.y as i64 + gy as i64);
                    self.blend(x as i64 + v, y as i64 - u, c, cov)
                });
            }
            pen += font.as_scaled(PxScale::from(size)).h_advance(id);
        }
        Ok(())
    }

    /// Draws text vertically centred on y.
    pub fn text_mid(&mut self, x: f32, y: f32, size: f32, c: Rgb, align: Align, text: &str) -> Result<f32> {
        let asc = fonts()?.ascent(size);
        self.text(x, y + asc * 0.38, size, c, align, text)
    }

    pub fn to_png(&self) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        {
            let mut enc = png::Encoder::new(&mut out, self.width as u32, self.height as u32);
            enc.set_color(png::ColorType::Rgb);
            enc.set_depth(png::BitDepth::Eight);
            let mut w = enc.write_header().map_err(|e| Error::Invalid(format!("PNG: {e}")))?;
            let data: Vec<u8> = self
                .pixels
                .iter()
                .flat_map(|p| p.map(|v| (v.clamp(0.0, 1.0) * 255.0).round() as u8))
                .collect();
            w.write_image_data(&data).map_err(|e| Error::Invalid(format!("PNG: {e}")))?;
        }
        Ok(out)
    }

    pub fn save(&self, path: &Path, force: bool) -> Result<()> {
        let bytes = self.to_png()?;
        crate::dump::write_atomic(path, force, |f| std::io::Write::write_all(f, &bytes))
    }
}

/// Viridis, interpolated between ten of its stops: dark purple (0) to yellow (1).
pub fn viridis(t: f32) -> Rgb {
    const STOPS: [(u8, u8, u8); 10] = [
        (0x44, 0x01, 0x54),
        (0x48, 0x28, 0x78),
        (0x3e, 0x49, 0x89),
        (0x31, 0x68, 0x8e),
        (0x26, 0x82, 0x8e),
        (0x1f, 0x9e, 0x89),
        (0x35, 0xb7, 0x79),
        (0x6e, 0xce, 0x58),
        (0xb5, 0xde, 0x2b),
        (0xfd, 0xe7, 0x25),
    ];
    let t = if t.is_finite() { t.clamp(0.0, 1.0) } else { 0.0 } * 9.0;
    let i = (t.floor() as usize).min(8);
    let f = t - i as f32;
    let (a, b) = (STOPS[i], STOPS[i + 1]);
    let mix = |x: u8, y: u8| (x as f32 + (y as f32 - x as f32) * f).round() as u8;
    Rgb(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

/// A diverging scale for signed values: blue (−1) through white (0) to red (+1), clamped.
pub fn diverging(t: f32) -> Rgb {
    let t = if t.is_finite() { t.clamp(-1.0, 1.0) } else { 0.0 };
    let (end, a) = if t < 0.0 { ((33.0, 102.0, 172.0), -t) } else { ((178.0, 24.0, 43.0), t) };
    let mix = |e: f32| (255.0 + (e - 255.0) * a).round() as u8;
    Rgb(mix(end.0), mix(end.1), mix(end.2))
}

/// Black or white, whichever reads on `bg`.
pub fn ink_on(bg: Rgb) -> Rgb {
    let lum = 0.299 * bg.0 as f32 + 0.587 * bg.1 as f32 + 0.114 * bg.2 as f32;
    if lum > 140.0 { BLACK } else { WHITE }
}

/// A token's text made visible: newlines and tabs escaped, leading spaces shown as '·' (so " Apple"
/// and "Apple" differ on screen), other control characters as '?'.
pub fn visible(s: &str) -> String {
    let lead = s.chars().take_while(|&c| c == ' ').count();
    s.chars()
        .enumerate()
        .flat_map(|(i, c)| match c {
            '\n' => vec!['\\', 'n'],
            '\t' => vec!['\\', 't'],
            ' ' if i < lead => vec!['·'],
            c if c.is_control() => vec!['?'],
            c => vec![c],
        })
        .collect()
}

/// `s` made visible and shortened with an ellipsis to fit `max_px` at `size`.
pub fn fit(s: &str, size: f32, max_px: f32) -> Result<String> {
    let f = fonts()?;
    let visible = visible(s);
    if f.width(&visible, size) <= max_px {
        return Ok(visible);
    }
    let mut out = String::new();
    for c in visible.chars() {
        let mut next = out.clone();
        next.push(c);
        if f.width(&format!("{next}…"), size) > max_px {
            break;
        }
        out = next;
    }
    Ok(format!("{out}…"))
}
