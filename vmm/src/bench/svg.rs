//! `vmm bench --svg`: the suite as a picture — one bar per figure against its goal (the red tick),
//! then the munmap / exit_mmap scaling curves on log-log axes with the n log n bound.

use super::suite::{Suite, CAMPAIGN_GOAL};
use super::BOOT_GOAL_RATIO;
use mm_bench::report::{n_log_n, GOAL_RATIO};
use mm_bench::{ScaleOp, Series, Side};
use std::fmt::Write as _;

/// One bar: what it shows, the figure, its goal (none for the guest's rows, which are shown
/// for their platform), whether more is better, the text beside it, and its group (bars without a
/// goal share one scale within a group).
struct Bar {
    label: String,
    value: f64,
    goal: Option<f64>,
    higher_is_better: bool,
    text: String,
    group: &'static str,
}

const WIDTH: f64 = 1100.0;
const LABEL_W: f64 = 460.0;
const BAR_W: f64 = 300.0;
const ROW_H: f64 = 26.0;

/// The whole picture.
pub fn draw(suite: &Suite) -> String {
    let bars = bars(suite);
    let notes = notes(suite);
    let bars_h = 86.0 + ROW_H * (bars.len() + notes.len()) as f64;
    let plot_h = 330.0;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{}" font-family="sans-serif" font-size="12">"#,
        bars_h + plot_h + 20.0
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="10" y="22" font-size="16">vmm bench — {}</text>"#,
        escape(&suite.platform.describe())
    );
    let _ = writeln!(
        svg,
        r##"<text x="10" y="40" fill="#555">bars: measured, ratios to the anchor measured in the same run; red tick: goal; grey: no goal, shown for its platform</text>"##
    );
    let _ = writeln!(
        svg,
        r##"<text x="10" y="56" fill="#555">guest rows: {}</text>"##,
        escape(&suite.guest_label())
    );
    draw_bars(&mut svg, &bars);
    for (i, note) in notes.iter().enumerate() {
        let y = 70.0 + ROW_H * (bars.len() + i) as f64 + 17.0;
        let _ = writeln!(
            svg,
            r##"<text x="10" y="{y}" fill="#d9534f">{}</text>"##,
            escape(note)
        );
    }
    let scaling = suite.mm.as_ref().map_or(&[][..], |mm| &mm.scaling[..]);
    draw_scaling(&mut svg, scaling, bars_h + 10.0);
    svg.push_str("</svg>\n");
    svg
}

/// A line for each row that failed or did not run.
fn notes(suite: &Suite) -> Vec<String> {
    let failed = suite
        .failures
        .iter()
        .map(|r| format!("{}: FAILED: {}", r.row, r.reason));
    let pending = suite.pending.iter().map(|r| format!("{r}: not run"));
    failed.chain(pending).collect()
}

fn bars(suite: &Suite) -> Vec<Bar> {
    let mut bars = Vec::new();
    if let Some(boot) = &suite.boot {
        bars.push(Bar {
            label: "boot / KVM floor".into(),
            value: boot.ratio(),
            goal: Some(BOOT_GOAL_RATIO),
            higher_is_better: false,
            text: format!("{:.1}x (goal <= {BOOT_GOAL_RATIO}x)", boot.ratio()),
            group: "boot",
        });
    }
    for r in &suite.probes.rows {
        bars.push(Bar {
            label: format!("checked free / bare exit, {} VMAs", r.vmas),
            value: r.ratio(),
            goal: Some(super::probes::PROBE_GOAL_RATIO),
            higher_is_better: false,
            text: format!(
                "{:.2}x (goal <= {}x at 1,000 VMAs)",
                r.ratio(),
                super::probes::PROBE_GOAL_RATIO
            ),
            group: "probes",
        });
    }
    for r in suite.mm.iter().flat_map(|mm| &mm.rows) {
        if let Some(q) = r.ratio() {
            bars.push(Bar {
                label: format!("mm-core / Linux: {}", r.label()),
                value: q,
                goal: Some(GOAL_RATIO),
                higher_is_better: false,
                text: format!("{q:.2}x (goal <= {GOAL_RATIO}x)"),
                group: "mm-core",
            });
        }
    }
    for r in suite.guest.iter().flat_map(|g| &g.rows) {
        if let Some(q) = r.ratio() {
            bars.push(Bar {
                label: format!("guest / Linux: {}", r.label()),
                value: q,
                goal: None,
                higher_is_better: false,
                text: format!("{q:.0}x Linux ({})", suite.platform.short()),
                group: "guest",
            });
        }
    }
    for c in &suite.campaigns {
        bars.push(Bar {
            label: format!("campaign {}, runs/minute", c.scenario),
            value: c.runs_per_minute,
            goal: Some(CAMPAIGN_GOAL),
            higher_is_better: true,
            text: format!("{:.0} (goal >= {CAMPAIGN_GOAL})", c.runs_per_minute),
            group: "campaign",
        });
    }
    bars
}

fn draw_bars(svg: &mut String, bars: &[Bar]) {
    for (i, b) in bars.iter().enumerate() {
        let y = 70.0 + ROW_H * i as f64;
        let full = match b.goal {
            Some(goal) => b.value.max(goal),
            None => bars
                .iter()
                .filter(|o| o.group == b.group)
                .map(|o| o.value)
                .fold(0.0, f64::max),
        } * 1.15;
        let scale = if full > 0.0 { BAR_W / full } else { 0.0 };
        let ok = match b.goal {
            Some(goal) if b.higher_is_better => b.value >= goal,
            Some(goal) => b.value <= goal,
            None => true,
        };
        let color = match (b.goal, ok) {
            (None, _) => "#999999",
            (Some(_), true) => "#4a90d9",
            (Some(_), false) => "#d9534f",
        };
        let _ = writeln!(
            svg,
            r#"<text x="10" y="{}">{}</text>"#,
            y + 14.0,
            escape(&b.label)
        );
        let _ = writeln!(
            svg,
            r##"<rect x="{LABEL_W}" y="{}" width="{:.1}" height="16" fill="{color}"/>"##,
            y + 2.0,
            b.value * scale
        );
        if let Some(goal) = b.goal {
            let gx = LABEL_W + goal * scale;
            let _ = writeln!(
                svg,
                r#"<line x1="{gx:.1}" y1="{y}" x2="{gx:.1}" y2="{}" stroke="red" stroke-width="2"/>"#,
                y + 20.0
            );
        }
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{}">{}</text>"#,
            LABEL_W + BAR_W + 10.0,
            y + 14.0,
            escape(&b.text)
        );
    }
}

/// The scaling series, total time against VMAs on log-log axes, with n log n through mm-core's
/// first munmap point (dashed).
fn draw_scaling(svg: &mut String, series: &[Series], top: f64) {
    let (x0, x1, y0, y1) = (90.0, 620.0, top + 280.0, top + 40.0);
    let _ = writeln!(
        svg,
        r#"<text x="10" y="{}" font-size="14">munmap / exit_mmap of n separate populated VMAs: median total time (log-log), against n log n</text>"#,
        top + 18.0
    );
    let points = series.iter().flat_map(|s| s.points.iter());
    let ns: Vec<f64> = points.clone().map(|p| p.used as f64).collect();
    // Ticks at the counts asked for: Linux may have used a few less (vm.max_map_count).
    let ticks: Vec<f64> = dedup(&points.clone().map(|p| p.asked as f64).collect::<Vec<_>>());
    let ts: Vec<f64> = points.map(|p| p.total.median / 1e6).collect();
    let (Some(nmin), Some(nmax)) = (min(&ns), max(&ns)) else {
        return;
    };
    let reference = series
        .iter()
        .find(|s| s.op == ScaleOp::Munmap && s.side == Side::MmCore)
        .and_then(|s| s.points.first())
        .map(|p| (p.used, p.total.median / 1e6));
    let mut tmin = min(&ts).unwrap_or(1e-3);
    let mut tmax = max(&ts).unwrap_or(1.0);
    if let Some((n0, t0)) = reference {
        tmax = tmax.max(t0 * n_log_n(nmax as u64) / n_log_n(n0));
        tmin = tmin.min(t0);
    }
    let (lx0, lx1) = (nmin.log10(), (nmax.log10()).max(nmin.log10() + 0.1));
    let (ly0, ly1) = (
        tmin.log10().floor(),
        tmax.log10().ceil().max(tmin.log10() + 1.0),
    );
    let px = |n: f64| x0 + (n.log10() - lx0) / (lx1 - lx0) * (x1 - x0);
    let py = |t: f64| y0 - (t.max(1e-9).log10() - ly0) / (ly1 - ly0) * (y0 - y1);
    let _ = writeln!(
        svg,
        r##"<rect x="{x0}" y="{y1}" width="{}" height="{}" fill="none" stroke="#888"/>"##,
        x1 - x0,
        y0 - y1
    );
    for &n in &ticks {
        let x = px(n);
        let _ = writeln!(
            svg,
            r##"<line x1="{x:.1}" y1="{y0}" x2="{x:.1}" y2="{}" stroke="#888"/><text x="{x:.1}" y="{}" text-anchor="middle">{n}</text>"##,
            y0 + 5.0,
            y0 + 18.0
        );
    }
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="{}" text-anchor="middle">n (VMAs)</text>"#,
        (x0 + x1) / 2.0,
        y0 + 34.0
    );
    let mut decade = ly0;
    while decade <= ly1 {
        let t = 10f64.powf(decade);
        let y = py(t);
        let _ = writeln!(
            svg,
            r##"<line x1="{}" y1="{y:.1}" x2="{x0}" y2="{y:.1}" stroke="#888"/><text x="{}" y="{:.1}" text-anchor="end">{} ms</text>"##,
            x0 - 5.0,
            x0 - 8.0,
            y + 4.0,
            fmt_ms(t)
        );
        decade += 1.0;
    }
    let colors = ["#4a90d9", "#2e8b57", "#e67e22", "#8e44ad"];
    let mut legend = Vec::new();
    for (s, color) in series.iter().zip(colors.iter().cycle()) {
        let name = format!("{} {}", s.side.name(), s.op.name());
        let coords: Vec<String> = s
            .points
            .iter()
            .map(|p| format!("{:.1},{:.1}", px(p.used as f64), py(p.total.median / 1e6)))
            .collect();
        let _ = writeln!(
            svg,
            r#"<polyline class="curve" data-series="{name}" points="{}" fill="none" stroke="{color}" stroke-width="2"/>"#,
            coords.join(" ")
        );
        for c in &coords {
            let (cx, cy) = c.split_once(',').unwrap_or(("0", "0"));
            let _ = writeln!(svg, r#"<circle cx="{cx}" cy="{cy}" r="3" fill="{color}"/>"#);
        }
        legend.push((name, color.to_string(), false));
    }
    if let Some((n0, t0)) = reference {
        let coords: Vec<String> = ticks
            .iter()
            .map(|&n| {
                let t = t0 * n_log_n(n as u64) / n_log_n(n0);
                format!("{:.1},{:.1}", px(n), py(t))
            })
            .collect();
        let _ = writeln!(
            svg,
            r##"<polyline class="bound" points="{}" fill="none" stroke="#555" stroke-dasharray="5,4"/>"##,
            coords.join(" ")
        );
        legend.push((
            "n log n (through mm-core munmap at n0)".into(),
            "#555".into(),
            true,
        ));
    }
    for (i, (name, color, dashed)) in legend.iter().enumerate() {
        let y = y1 + 10.0 + 20.0 * i as f64;
        let dash = if *dashed {
            r#" stroke-dasharray="5,4""#
        } else {
            ""
        };
        let _ = writeln!(
            svg,
            r#"<line x1="{}" y1="{y}" x2="{}" y2="{y}" stroke="{color}" stroke-width="2"{dash}/><text x="{}" y="{}">{}</text>"#,
            x1 + 20.0,
            x1 + 50.0,
            x1 + 56.0,
            y + 4.0,
            escape(name)
        );
    }
}

fn min(v: &[f64]) -> Option<f64> {
    v.iter().copied().filter(|x| *x > 0.0).reduce(f64::min)
}

fn max(v: &[f64]) -> Option<f64> {
    v.iter().copied().reduce(f64::max)
}

/// The distinct values of `v`, ascending.
fn dedup(v: &[f64]) -> Vec<f64> {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v.dedup();
    v
}

fn fmt_ms(t: f64) -> String {
    if t >= 1.0 {
        format!("{t:.0}")
    } else {
        format!("{t}")
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
