//! The microscope's charts: heatmaps (logit lens, attention), line plots (similarity across
//! layers) and labelled scatter plots (PCA). Every chart has a title, axis labels and, where
//! colour carries a value, a colour scale.

use super::canvas::{Align, BLACK, Canvas, GREY, LIGHT, Rgb, diverging, fit, ink_on, viridis};
use super::font::fonts;
use crate::Result;

const FONT: f32 = 12.0;
const TITLE: f32 = 15.0;
const PAD: f32 = 12.0;

/// Series colours for line and scatter plots (colour-blind-safe Okabe–Ito).
pub const PALETTE: [Rgb; 6] = [
    Rgb(0, 114, 178),
    Rgb(213, 94, 0),
    Rgb(0, 158, 115),
    Rgb(204, 121, 167),
    Rgb(230, 159, 0),
    Rgb(86, 180, 233),
];

/// A vertical colour scale from 0 (bottom) to 1 (top).
fn colour_bar(c: &mut Canvas, x: f32, y: f32, h: f32, label: &str) -> Result<()> {
    let steps = h as usize;
    for i in 0..steps {
        let t = 1.0 - i as f32 / steps as f32;
        c.fill_rect(x, y + i as f32, 16.0, 1.0, viridis(t));
    }
    c.stroke_rect(x, y, 16.0, h, GREY);
    for t in [0.0, 0.25, 0.5, 0.75, 1.0] {
        let ty = y + h * (1.0 - t);
        c.line(x + 16.0, ty, x + 20.0, ty, 1.0, GREY);
        c.text_mid(x + 23.0, ty, FONT - 1.0, BLACK, Align::Left, &format!("{t:.2}"))?;
    }
    c.text(x, y - 6.0, FONT - 1.0, BLACK, Align::Left, label)?;
    Ok(())
}

/// A vertical diverging scale from −1 (bottom) to +1 (top).
fn diverging_bar(c: &mut Canvas, x: f32, y: f32, h: f32, label: &str) -> Result<()> {
    let steps = h as usize;
    for i in 0..steps {
        c.fill_rect(x, y + i as f32, 16.0, 1.0, diverging(1.0 - 2.0 * i as f32 / steps as f32));
    }
    c.stroke_rect(x, y, 16.0, h, GREY);
    for t in [-1.0f32, -0.5, 0.0, 0.5, 1.0] {
        let ty = y + h * (1.0 - t) / 2.0;
        c.line(x + 16.0, ty, x + 20.0, ty, 1.0, GREY);
        c.text_mid(x + 23.0, ty, FONT - 1.0, BLACK, Align::Left, &format!("{t:+.1}"))?;
    }
    c.text(x, y - 6.0, FONT - 1.0, BLACK, Align::Left, label)?;
    Ok(())
}

/// One panel of a [`value_grids`] chart: rows (first at the bottom) × columns of signed values.
pub struct Grid {
    pub name: String,
    pub rows: Vec<String>,
    pub cols: Vec<String>,
    /// `values[r][c]`.
    pub values: Vec<Vec<f32>>,
    pub x_title: String,
}

/// Heatmaps of signed values side by side (activation patching: layers × positions, layers ×
/// heads), each cell printed and coloured blue (−1) – white (0) – red (+1).
pub fn value_grids(title: &str, grids: &[Grid], scale_label: &str) -> Result<Canvas> {
    let f = fonts()?;
    let cell_h = 18.0;
    let widths: Vec<f32> = grids
        .iter()
        .map(|g| {
            let widest =
                g.cols.iter().map(|s| f.width(&super::canvas::visible(s), FONT)).fold(0f32, f32::max);
            (widest + 6.0).clamp(36.0, 72.0)
        })
        .collect();
    let left_w: Vec<f32> =
        grids.iter().map(|g| g.rows.iter().map(|l| f.width(l, FONT)).fold(0f32, f32::max) + PAD).collect();
    let rows = grids.iter().map(|g| g.rows.len()).max().unwrap_or(0);
    let top = TITLE + 4.0 * PAD;
    let grid_h = cell_h * rows as f32;
    let bottom = 3.0 * FONT + 3.0 * PAD;
    let mut x = PAD;
    let mut origins = Vec::new();
    for (g, (w, lw)) in grids.iter().zip(widths.iter().zip(&left_w)) {
        origins.push(x + lw);
        x += lw + w * g.cols.len() as f32 + 2.0 * PAD;
    }
    let width = (x + 80.0).max(420.0);
    let mut c = Canvas::new(width as usize, (top + grid_h + bottom) as usize);
    c.text(PAD, PAD + TITLE, TITLE, BLACK, Align::Left, title)?;
    for ((g, &cw), &x0) in grids.iter().zip(&widths).zip(&origins) {
        let gh = cell_h * g.rows.len() as f32;
        let y0 = top + grid_h - gh;
        c.text(x0, y0 - 6.0, FONT, BLACK, Align::Left, &g.name)?;
        for (r, label) in g.rows.iter().enumerate() {
            let y = y0 + gh - (r + 1) as f32 * cell_h;
            c.text_mid(x0 - PAD / 2.0, y + cell_h / 2.0, FONT, BLACK, Align::Right, label)?;
            for (col, &v) in g.values[r].iter().enumerate() {
                let cx = x0 + col as f32 * cw;
                let bg = diverging(v);
                c.fill_rect(cx, y, cw, cell_h, bg);
                let text = if v.is_finite() { format!("{v:.2}") } else { "nan".into() };
                c.text_mid(cx + cw / 2.0, y + cell_h / 2.0, FONT - 2.0, ink_on(bg), Align::Center, &text)?;
            }
        }
        let gw = cw * g.cols.len() as f32;
        c.stroke_rect(x0, y0, gw, gh, GREY);
        for (col, t) in g.cols.iter().enumerate() {
            let cx = x0 + col as f32 * cw + cw / 2.0;
            c.text(cx, top + grid_h + FONT + 4.0, FONT, BLACK, Align::Center, &fit(t, FONT, cw - 2.0)?)?;
        }
        c.text(x0 + gw / 2.0, top + grid_h + 2.0 * FONT + PAD, FONT, GREY, Align::Center, &g.x_title)?;
    }
    diverging_bar(&mut c, x, top + 10.0, grid_h.clamp(60.0, 240.0), scale_label)?;
    Ok(c)
}

/// Logit-lens heatmap: one row per layer (last layer on top), one column per position; each cell
/// names the top-1 token, coloured by its probability.
pub fn lens_heatmap(
    title: &str,
    tokens: &[String],
    layers: &[String],
    cells: &[Vec<(String, f32)>],
) -> Result<Canvas> {
    let f = fonts()?;
    let cols = tokens.len();
    let widest =
        cells.iter().flatten().map(|(s, _)| f.width(&super::canvas::visible(s), FONT)).fold(0f32, f32::max);
    let widest_tok = tokens.iter().map(|s| f.width(&super::canvas::visible(s), FONT)).fold(0f32, f32::max);
    let cell_w = (widest.max(widest_tok) + 8.0).clamp(44.0, 96.0);
    let cell_h = 20.0;
    let left = layers.iter().map(|l| f.width(l, FONT)).fold(0f32, f32::max) + 2.0 * PAD;
    let top = TITLE + 3.0 * PAD;
    let grid_w = cell_w * cols as f32;
    let grid_h = cell_h * layers.len() as f32;
    let bottom = 3.0 * FONT + 2.0 * PAD;
    let width = (left + grid_w + 90.0).max(360.0);
    let mut c = Canvas::new(width as usize, (top + grid_h + bottom) as usize);
    c.text(PAD, PAD + TITLE, TITLE, BLACK, Align::Left, title)?;
    for (r, row) in cells.iter().enumerate() {
        // Row 0 (the first layer) at the bottom.
        let y = top + grid_h - (r + 1) as f32 * cell_h;
        c.text_mid(left - PAD / 2.0, y + cell_h / 2.0, FONT, BLACK, Align::Right, &layers[r])?;
        for (col, (label, p)) in row.iter().enumerate() {
            let x = left + col as f32 * cell_w;
            let bg = viridis(*p);
            c.fill_rect(x, y, cell_w, cell_h, bg);
            let text = fit(label, FONT, cell_w - 4.0)?;
            c.text_mid(x + cell_w / 2.0, y + cell_h / 2.0, FONT, ink_on(bg), Align::Center, &text)?;
        }
    }
    c.stroke_rect(left, top, grid_w, grid_h, GREY);
    for (col, t) in tokens.iter().enumerate() {
        let x = left + col as f32 * cell_w + cell_w / 2.0;
        c.text(x, top + grid_h + FONT + 4.0, FONT, BLACK, Align::Center, &fit(t, FONT, cell_w - 2.0)?)?;
    }
    c.text(
        left + grid_w / 2.0,
        top + grid_h + 2.0 * FONT + PAD,
        FONT,
        GREY,
        Align::Center,
        "input position (token)",
    )?;
    c.text(PAD, top - 8.0, FONT, GREY, Align::Left, "layer")?;
    colour_bar(&mut c, left + grid_w + 20.0, top + 10.0, grid_h.clamp(60.0, 240.0), "top-1 prob")?;
    Ok(c)
}

/// Draws one attention pattern (rows = queries, columns = keys) at (x, y) with square cells.
fn attention_panel(c: &mut Canvas, x: f32, y: f32, cell: f32, probs: &[f32], t: usize, s: usize) {
    for q in 0..t {
        for k in 0..s {
            let p = probs[q * s + k];
            c.fill_rect(x + k as f32 * cell, y + q as f32 * cell, cell, cell, viridis(p.sqrt()));
        }
    }
    c.stroke_rect(x, y, cell * s as f32, cell * t as f32, GREY);
}

/// One head's attention: queries down the left, keys along the bottom (rotated), colour =
/// √probability so small weights stay visible.
pub fn attention_heatmap(title: &str, queries: &[String], keys: &[String], probs: &[f32]) -> Result<Canvas> {
    attention_grid(title, queries, keys, &[(String::new(), probs.to_vec())])
}

/// Several heads side by side (a layer's heads), sharing the token labels on the outer edges.
pub fn attention_grid(
    title: &str,
    queries: &[String],
    keys: &[String],
    panels: &[(String, Vec<f32>)],
) -> Result<Canvas> {
    let f = fonts()?;
    let (t, s) = (queries.len(), keys.len());
    let n = panels.len();
    let cols = (n as f32).sqrt().ceil() as usize;
    let rows = n.div_ceil(cols);
    let per = if n == 1 { 640.0 } else { 900.0 / cols as f32 };
    let cell = (per / s.max(t) as f32).clamp(3.0, 28.0).floor();
    let label =
        |v: &[String]| -> Vec<String> { v.iter().map(|x| fit(x, FONT, 110.0).unwrap_or_default()).collect() };
    let (ql, kl) = (label(queries), label(keys));
    let show_labels = cell >= 9.0;
    let left = if show_labels {
        ql.iter().map(|q| f.width(q, FONT)).fold(0f32, f32::max) + 2.0 * PAD
    } else {
        2.0 * PAD
    };
    let bottom = if show_labels {
        kl.iter().map(|k| f.width(k, FONT)).fold(0f32, f32::max) + 2.0 * PAD
    } else {
        2.0 * PAD
    };
    let panel_w = cell * s as f32;
    let panel_h = cell * t as f32;
    let gap = if n > 1 { 24.0 } else { 0.0 };
    let top = TITLE + 3.0 * PAD;
    let grid_w = cols as f32 * panel_w + (cols - 1) as f32 * gap;
    let grid_h = rows as f32 * (panel_h + gap);
    let width = (left + grid_w + 100.0).max(380.0);
    let height = top + grid_h + bottom + FONT + PAD;
    let mut c = Canvas::new(width as usize, height as usize);
    c.text(PAD, PAD + TITLE, TITLE, BLACK, Align::Left, title)?;
    for (i, (name, probs)) in panels.iter().enumerate() {
        let (r, col) = (i / cols, i % cols);
        let x = left + col as f32 * (panel_w + gap);
        let y = top + r as f32 * (panel_h + gap);
        if !name.is_empty() {
            c.text(x, y - 4.0, FONT, BLACK, Align::Left, name)?;
        }
        attention_panel(&mut c, x, y, cell, probs, t, s);
        if show_labels && col == 0 {
            for (q, l) in ql.iter().enumerate() {
                c.text_mid(x - 4.0, y + (q as f32 + 0.5) * cell, FONT, BLACK, Align::Right, l)?;
            }
        }
        let last_row = r == rows - 1 || i + cols >= n;
        if show_labels && last_row {
            for (k, l) in kl.iter().enumerate() {
                // Rotated labels end just under the panel, reading upwards.
                let asc = f.ascent(FONT);
                c.text_up(
                    x + (k as f32 + 0.5) * cell + asc * 0.38,
                    y + panel_h + 4.0 + f.width(l, FONT),
                    FONT,
                    BLACK,
                    l,
                )?;
            }
        }
    }
    c.text(left + grid_w / 2.0, height - PAD, FONT, GREY, Align::Center, "key (attended-to token) →")?;
    c.text(PAD, top - 6.0, FONT, GREY, Align::Left, "query ↓")?;
    colour_bar(&mut c, left + grid_w + 24.0, top + 10.0, grid_h.clamp(60.0, 240.0), "√prob")?;
    Ok(c)
}

/// Nice tick values covering [lo, hi].
fn ticks(lo: f64, hi: f64, want: usize) -> Vec<f64> {
    let span = (hi - lo).max(1e-12);
    let raw = span / want as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| span / s <= want as f64)
        .unwrap_or(10.0 * mag);
    let first = (lo / step).ceil() * step;
    (0..).map(|i| first + i as f64 * step).take_while(|v| *v <= hi + 1e-9 * step).collect()
}

/// A tick label with as many decimals as the tick spacing needs.
fn tick_label(v: f64, ticks: &[f64]) -> String {
    let step = if ticks.len() > 1 { (ticks[1] - ticks[0]).abs() } else { 1.0 };
    let decimals = (-(step.log10().floor())
        + if (step / 10f64.powf(step.log10().floor()) - 2.5).abs() < 1e-9 { 1.0 } else { 0.0 })
    .clamp(0.0, 6.0) as usize;
    format!("{v:.decimals$}")
}

pub struct Series {
    pub label: String,
    pub values: Vec<f64>,
}

/// Lines over categorical x positions (embed, layer 0, layer 1, …), the legend under the title.
pub fn line_plot(
    title: &str,
    x_labels: &[String],
    x_title: &str,
    y_title: &str,
    series: &[Series],
) -> Result<Canvas> {
    let (w, h_plot) = (820.0, 380.0);
    let legend_h = series.len() as f32 * (FONT + 6.0);
    let (left, right, top, bottom) = (70.0, 30.0, TITLE + 3.0 * PAD + legend_h + FONT, 60.0);
    let h = top + h_plot + bottom;
    let mut c = Canvas::new(w as usize, h as usize);
    c.text(PAD, PAD + TITLE, TITLE, BLACK, Align::Left, title)?;
    for (si, s) in series.iter().enumerate() {
        let col = PALETTE[si % PALETTE.len()];
        let ly = TITLE + 2.0 * PAD + si as f32 * (FONT + 6.0) + FONT / 2.0;
        c.line(left, ly, left + 22.0, ly, 2.5, col);
        c.text_mid(left + 30.0, ly, FONT, BLACK, Align::Left, &fit(&s.label, FONT, w - left - 60.0)?)?;
    }
    let all: Vec<f64> =
        series.iter().flat_map(|s| s.values.iter().copied()).filter(|v| v.is_finite()).collect();
    let lo = all.iter().copied().fold(f64::INFINITY, f64::min).min(0.0);
    let hi = all.iter().copied().fold(f64::NEG_INFINITY, f64::max).max(1.0);
    let (pw, ph) = (w - left - right, h_plot);
    let n = x_labels.len().max(2);
    let px = |i: usize| left + pw * i as f32 / (n - 1) as f32;
    let py = |v: f64| top + ph * (1.0 - ((v - lo) / (hi - lo)) as f32);
    let ys = ticks(lo, hi, 6);
    for &t in &ys {
        let y = py(t);
        c.line(left, y, left + pw, y, 1.0, LIGHT);
        c.text_mid(left - 6.0, y, FONT, BLACK, Align::Right, &tick_label(t, &ys))?;
    }
    let every = (n as f32 / 16.0).ceil().max(1.0) as usize;
    for (i, l) in x_labels.iter().enumerate() {
        c.line(px(i), top + ph, px(i), top + ph + 4.0, 1.0, GREY);
        if i % every == 0 || i == n - 1 {
            c.text(px(i), top + ph + FONT + 6.0, FONT - 1.0, BLACK, Align::Center, l)?;
        }
    }
    c.stroke_rect(left, top, pw, ph, GREY);
    for (si, s) in series.iter().enumerate() {
        let col = PALETTE[si % PALETTE.len()];
        for i in 1..s.values.len() {
            c.line(px(i - 1), py(s.values[i - 1]), px(i), py(s.values[i]), 2.0, col);
        }
        for (i, v) in s.values.iter().enumerate() {
            c.circle(px(i), py(*v), 3.0, col);
        }
    }
    c.text(left + pw / 2.0, h - PAD, FONT, GREY, Align::Center, x_title)?;
    c.text(PAD, top - 6.0, FONT, GREY, Align::Left, y_title)?;
    Ok(c)
}

/// A label's box on the canvas.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rect {
    pub x: f32,
    pub y: f32,
    pub w: f32,
    pub h: f32,
}

impl Rect {
    fn overlaps(&self, o: &Rect) -> bool {
        self.x < o.x + o.w && o.x < self.x + self.w && self.y < o.y + o.h && o.y < self.y + self.h
    }

    fn inside(&self, o: &Rect) -> bool {
        self.x >= o.x && self.y >= o.y && self.x + self.w <= o.x + o.w && self.y + self.h <= o.y + o.h
    }
}

/// Where each point's label goes: beside its point when that space is free of other labels and
/// points, else the nearest free slot above or below, on either side (the caller draws a leader
/// line to it). Only when no slot within ten lines is free does a label overlap, beside its point.
pub fn place_labels(points: &[(f32, f32)], widths: &[f32], height: f32, area: Rect) -> Vec<Rect> {
    const GAP: f32 = 7.0;
    const DOT: f32 = 5.0;
    let dots: Vec<Rect> =
        points.iter().map(|&(x, y)| Rect { x: x - DOT, y: y - DOT, w: 2.0 * DOT, h: 2.0 * DOT }).collect();
    let mut placed: Vec<Rect> = Vec::with_capacity(points.len());
    for (&(x, y), &w) in points.iter().zip(widths) {
        let right = |dy: f32| Rect { x: x + GAP, y: y + dy - height / 2.0, w, h: height };
        let left = |dy: f32| Rect { x: x - GAP - w, y: y + dy - height / 2.0, w, h: height };
        let prefer_right = x + GAP + w <= area.x + area.w;
        let beside = if prefer_right { right(0.0) } else { left(0.0) };
        let free = |r: &Rect| {
            r.inside(&area) && !placed.iter().any(|p| p.overlaps(r)) && !dots.iter().any(|d| d.overlaps(r))
        };
        let slot = (0..=10)
            .flat_map(|k| {
                let dy = k as f32 * (height + 2.0);
                let offsets = if k == 0 { vec![0.0] } else { vec![-dy, dy] };
                offsets
                    .into_iter()
                    .flat_map(move |d| if prefer_right { [right(d), left(d)] } else { [left(d), right(d)] })
            })
            .find(|r| free(r))
            .unwrap_or(beside);
        placed.push(slot);
    }
    placed
}

/// Labelled points, coloured by group (`groups[i]`, empty for none) with a legend of the groups;
/// labels are moved off each other and joined to their points by a line when moved.
pub fn scatter_plot(
    title: &str,
    x_title: &str,
    y_title: &str,
    points: &[(f64, f64)],
    labels: &[String],
    groups: &[String],
) -> Result<Canvas> {
    let mut names: Vec<&str> = Vec::new();
    for g in groups.iter().filter(|g| !g.is_empty()) {
        if !names.contains(&g.as_str()) {
            names.push(g);
        }
    }
    let legend_rows = if names.is_empty() { 0.0 } else { 1.0 + (names.len() as f32 / 5.0).floor() };
    let legend_h = legend_rows * (FONT + 6.0);
    let (w, h) = (820.0, 620.0 + legend_h);
    let (left, right, top, bottom) = (70.0, 40.0, TITLE + 3.0 * PAD + legend_h, 60.0);
    let mut c = Canvas::new(w as usize, h as usize);
    c.text(PAD, PAD + TITLE, TITLE, BLACK, Align::Left, title)?;
    let colour = |g: &str| match names.iter().position(|n| *n == g) {
        Some(i) => PALETTE[i % PALETTE.len()],
        None if names.is_empty() => PALETTE[0],
        None => GREY,
    };
    for (i, n) in names.iter().enumerate() {
        let lx = left + (i % 5) as f32 * 145.0;
        let ly = TITLE + 2.0 * PAD + (i / 5) as f32 * (FONT + 6.0) + FONT / 2.0;
        c.circle(lx + 5.0, ly, 4.5, colour(n));
        c.text_mid(lx + 14.0, ly, FONT, BLACK, Align::Left, &fit(n, FONT, 125.0)?)?;
    }
    let (mut x0, mut x1, mut y0, mut y1) =
        (f64::INFINITY, f64::NEG_INFINITY, f64::INFINITY, f64::NEG_INFINITY);
    for &(x, y) in points {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    let (mx, my) = (((x1 - x0) * 0.08).max(1e-9), ((y1 - y0) * 0.08).max(1e-9));
    let (x0, x1, y0, y1) = (x0 - mx, x1 + mx, y0 - my, y1 + my);
    let (pw, ph) = (w - left - right, h - top - bottom);
    let px = |x: f64| left + pw * ((x - x0) / (x1 - x0)) as f32;
    let py = |y: f64| top + ph * (1.0 - ((y - y0) / (y1 - y0)) as f32);
    let xs = ticks(x0, x1, 8);
    for &t in &xs {
        c.line(px(t), top, px(t), top + ph, 1.0, LIGHT);
        c.text(px(t), top + ph + FONT + 6.0, FONT - 1.0, BLACK, Align::Center, &tick_label(t, &xs))?;
    }
    let ys = ticks(y0, y1, 8);
    for &t in &ys {
        c.line(left, py(t), left + pw, py(t), 1.0, LIGHT);
        c.text_mid(left - 6.0, py(t), FONT - 1.0, BLACK, Align::Right, &tick_label(t, &ys))?;
    }
    c.stroke_rect(left, top, pw, ph, GREY);
    let at: Vec<(f32, f32)> = points.iter().map(|&(x, y)| (px(x), py(y))).collect();
    let texts: Vec<String> = labels.iter().map(|l| fit(l, FONT, 220.0)).collect::<Result<_>>()?;
    let widths: Vec<f32> = texts.iter().map(|t| Ok(fonts()?.width(t, FONT))).collect::<Result<_>>()?;
    let area = Rect { x: left + 1.0, y: top + 1.0, w: pw - 2.0, h: ph - 2.0 };
    let boxes = place_labels(&at, &widths, FONT + 2.0, area);
    for (((&(x, y), text), b), g) in
        at.iter().zip(&texts).zip(&boxes).zip(groups.iter().chain(std::iter::repeat(&String::new())))
    {
        let mid = b.y + b.h / 2.0;
        if (mid - y).abs() > 1.0 {
            let edge = if b.x > x { b.x - 2.0 } else { b.x + b.w + 2.0 };
            c.line(x, y, edge, mid, 1.0, GREY);
        }
        c.circle(x, y, 4.5, colour(g));
        c.text_mid(b.x, mid, FONT, BLACK, Align::Left, text)?;
    }
    c.text(left + pw / 2.0, h - PAD, FONT, GREY, Align::Center, x_title)?;
    c.text(PAD, top - 8.0, FONT, GREY, Align::Left, y_title)?;
    Ok(c)
}

/// Grouped bars over categories (x) from a zero line, one colour per series, legend under the
/// title: direct logit attribution per layer (attention and MLP side by side).
pub fn bar_chart(
    title: &str,
    x_labels: &[String],
    x_title: &str,
    y_title: &str,
    series: &[Series],
) -> Result<Canvas> {
    let n = x_labels.len().max(1);
    let group = (series.len().max(1) as f32 * 7.0 + 4.0).max(12.0);
    let legend_h = series.len() as f32 * (FONT + 6.0);
    let (left, right, top, bottom) = (70.0, 30.0, TITLE + 3.0 * PAD + legend_h + FONT, 60.0);
    let pw = (group * n as f32).max(480.0);
    let (w, h_plot) = (left + pw + right, 380.0);
    let h = top + h_plot + bottom;
    let mut c = Canvas::new(w as usize, h as usize);
    c.text(PAD, PAD + TITLE, TITLE, BLACK, Align::Left, title)?;
    for (si, s) in series.iter().enumerate() {
        let col = PALETTE[si % PALETTE.len()];
        let ly = TITLE + 2.0 * PAD + si as f32 * (FONT + 6.0) + FONT / 2.0;
        c.fill_rect(left, ly - 5.0, 18.0, 10.0, col);
        c.text_mid(left + 26.0, ly, FONT, BLACK, Align::Left, &fit(&s.label, FONT, w - left - 60.0)?)?;
    }
    let all: Vec<f64> =
        series.iter().flat_map(|s| s.values.iter().copied()).filter(|v| v.is_finite()).collect();
    let lo = all.iter().copied().fold(0.0, f64::min);
    let hi = all.iter().copied().fold(0.0, f64::max);
    let (lo, hi) = if hi - lo < 1e-9 { (lo - 1.0, hi + 1.0) } else { (lo, hi) };
    let slot = pw / n as f32;
    let py = |v: f64| top + h_plot * (1.0 - ((v - lo) / (hi - lo)) as f32);
    let ys = ticks(lo, hi, 6);
    for &t in &ys {
        let y = py(t);
        c.line(left, y, left + pw, y, 1.0, LIGHT);
        c.text_mid(left - 6.0, y, FONT, BLACK, Align::Right, &tick_label(t, &ys))?;
    }
    let bar = (slot - 4.0) / series.len().max(1) as f32;
    for (si, s) in series.iter().enumerate() {
        let col = PALETTE[si % PALETTE.len()];
        for (i, &v) in s.values.iter().enumerate().filter(|(_, v)| v.is_finite()) {
            let (y0, y1) = (py(0.0), py(v));
            c.fill_rect(
                left + i as f32 * slot + 2.0 + si as f32 * bar,
                y0.min(y1),
                bar.max(1.0),
                (y1 - y0).abs(),
                col,
            );
        }
    }
    c.line(left, py(0.0), left + pw, py(0.0), 1.0, BLACK);
    let every = (n as f32 / 16.0).ceil().max(1.0) as usize;
    for (i, l) in x_labels.iter().enumerate() {
        let x = left + (i as f32 + 0.5) * slot;
        c.line(x, top + h_plot, x, top + h_plot + 4.0, 1.0, GREY);
        if i % every == 0 || i == n - 1 {
            c.text(x, top + h_plot + FONT + 6.0, FONT - 1.0, BLACK, Align::Center, l)?;
        }
    }
    c.stroke_rect(left, top, pw, h_plot, GREY);
    c.text(left + pw / 2.0, h - PAD, FONT, GREY, Align::Center, x_title)?;
    c.text(PAD, top - 6.0, FONT, GREY, Align::Left, y_title)?;
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_labelled_to_their_spacing() {
        let t = ticks(0.0, 1.0, 6);
        assert_eq!(t.first(), Some(&0.0));
        assert!((t.last().unwrap() - 1.0).abs() < 1e-9);
        assert_eq!(tick_label(0.25, &[0.0, 0.25]), "0.25");
        assert_eq!(tick_label(50.0, &[25.0, 50.0]), "50");
        assert_eq!(tick_label(0.4, &[0.2, 0.4]), "0.4");
        assert_eq!(tick_label(-75.0, &[-75.0, -50.0]), "-75");
    }

    #[test]
    fn labels_of_crowded_points_do_not_overlap() {
        let area = Rect { x: 0.0, y: 0.0, w: 800.0, h: 600.0 };
        // Twelve points within 20 px of each other, labels 120 px wide.
        let pts: Vec<(f32, f32)> =
            (0..12).map(|i| (400.0 + (i % 4) as f32 * 5.0, 300.0 + (i / 4) as f32 * 6.0)).collect();
        let boxes = place_labels(&pts, &[120.0; 12], 14.0, area);
        for (i, a) in boxes.iter().enumerate() {
            assert!(a.inside(&area), "label {i} leaves the plot: {a:?}");
            for (j, b) in boxes.iter().enumerate().skip(i + 1) {
                assert!(!a.overlaps(b), "labels {i} and {j} overlap: {a:?} {b:?}");
            }
            for &(x, y) in &pts {
                assert!(!(x > a.x && x < a.x + a.w && y > a.y && y < a.y + a.h), "label {i} covers a point");
            }
        }
        // A lone point keeps its label beside it; near the right edge the label goes to its left.
        let one = place_labels(&[(100.0, 100.0)], &[50.0], 14.0, area);
        assert_eq!(one[0], Rect { x: 107.0, y: 93.0, w: 50.0, h: 14.0 });
        let edge = place_labels(&[(790.0, 100.0)], &[50.0], 14.0, area);
        assert_eq!(edge[0].x, 733.0);
    }
}
