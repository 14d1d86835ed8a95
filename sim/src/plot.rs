//! A hand-written SVG: the alive count as seen by the nodes over time (min,
//! mean, max against the true live count), and the detection CDF. No fonts
//! or plotting libraries needed.

use crate::engine::Outcome;
use std::fmt::Write as _;

const W: f64 = 900.0;
const H: f64 = 300.0;
const PAD: f64 = 50.0;

fn polyline(points: &[(f64, f64)], color: &str, out: &mut String) {
    let pts: Vec<String> = points
        .iter()
        .map(|(x, y)| format!("{x:.1},{y:.1}"))
        .collect();
    let _ = writeln!(
        out,
        r#"<polyline fill="none" stroke="{color}" stroke-width="1.2" points="{}"/>"#,
        pts.join(" ")
    );
}

fn panel(out: &mut String, y0: f64, title: &str, x_label: &str, x_max: f64, y_max: f64) {
    let _ = writeln!(
        out,
        r##"<rect x="{PAD}" y="{y0}" width="{}" height="{}" fill="none" stroke="#888"/>"##,
        W - 2.0 * PAD,
        H - 2.0 * PAD
    );
    let _ = writeln!(
        out,
        r#"<text x="{PAD}" y="{}" font-size="13" font-family="sans-serif">{title}</text>"#,
        y0 - 8.0
    );
    let _ = writeln!(
        out,
        r#"<text x="{}" y="{}" font-size="11" font-family="sans-serif" text-anchor="end">{x_label} (max {x_max:.0})</text>"#,
        W - PAD,
        y0 + H - 2.0 * PAD + 16.0
    );
    let _ = writeln!(
        out,
        r#"<text x="{}" y="{}" font-size="11" font-family="sans-serif" text-anchor="end">{y_max:.0}</text>"#,
        PAD - 4.0,
        y0 + 10.0
    );
}

/// The SVG document for a run.
pub fn svg(outcome: &Outcome) -> String {
    let r = &outcome.report;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{}" viewBox="0 0 {W} {}">"#,
        2.0 * H,
        2.0 * H
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let plot_w = W - 2.0 * PAD;
    let plot_h = H - 2.0 * PAD;

    let x_max = (r.virtual_s * 1000) as f64;
    let y_max = f64::from(r.nodes);
    let y0 = PAD;
    panel(
        &mut out,
        y0,
        &format!(
            "{} / {} / seed {}: members seen alive (min, mean, max; black = live)",
            r.scenario, r.implementation, r.seed
        ),
        "virtual ms",
        x_max,
        y_max,
    );
    let x = |t: f64| PAD + t / x_max * plot_w;
    let y = |v: f64| y0 + plot_h - v / y_max * plot_h;
    let heal_x = x(outcome.heal_ms as f64);
    let _ = writeln!(
        out,
        r##"<line x1="{heal_x:.1}" y1="{y0}" x2="{heal_x:.1}" y2="{}" stroke="#2a2" stroke-dasharray="4 3"/>"##,
        y0 + plot_h
    );
    let s = &outcome.samples;
    let series = |f: &dyn Fn(&crate::engine::Sample) -> f64| -> Vec<(f64, f64)> {
        s.iter().map(|p| (x(p.at_ms as f64), y(f(p)))).collect()
    };
    polyline(&series(&|p| f64::from(p.live)), "#000", &mut out);
    polyline(&series(&|p| f64::from(p.seen_min)), "#d33", &mut out);
    polyline(&series(&|p| p.seen_mean), "#36c", &mut out);
    polyline(&series(&|p| f64::from(p.seen_max)), "#c8c", &mut out);

    let y0 = H + PAD;
    let mut d = outcome.detect_all_ms.clone();
    d.sort_by(f64::total_cmp);
    let d_max = d.last().copied().unwrap_or(1.0).max(1.0);
    panel(
        &mut out,
        y0,
        "detection CDF: crash to down at every live node",
        "ms",
        d_max,
        1.0,
    );
    let pts: Vec<(f64, f64)> = d
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let frac = (i + 1) as f64 / d.len() as f64;
            (PAD + v / d_max * plot_w, y0 + plot_h - frac * plot_h)
        })
        .collect();
    polyline(&pts, "#36c", &mut out);
    let _ = writeln!(out, "</svg>");
    out
}
