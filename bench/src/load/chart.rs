//! The chart: forwarded Mpps (64-byte frames) against the rule count, one line per mode,
//! as a small hand-written SVG (no plotting dependency).

use std::fmt::Write as _;

use super::{
    measure::Sample,
    modes::{ALL, Mode},
    report::Row,
    topology::Links,
    traffic::Mix,
};

const W: f64 = 720.0;
const H: f64 = 420.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 190.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 60.0;

fn color(m: Mode) -> &'static str {
    match m {
        Mode::Xwan => "#d62728",
        Mode::XwanNetfilter => "#ff7f0e",
        Mode::XwanOffload => "#8c564b",
        Mode::XwanOffloadNat => "#e377c2",
        Mode::KernelMaps => "#1f77b4",
        Mode::KernelLinear => "#9467bd",
        Mode::KernelPlain => "#2ca02c",
        Mode::BareXdp => "#7f7f7f",
        Mode::BareXdp3 => "#bcbd22",
        Mode::BareXdpFlows => "#17becf",
        Mode::SourceSink => "#000000",
    }
}

pub fn svg(rows: &[Row], calibration: &[Sample]) -> String {
    let rows: Vec<&Row> = rows
        .iter()
        .filter(|r| r.mix == Mix::Small && r.links == Links::Veth)
        .collect();
    let mut rules: Vec<usize> = rows.iter().map(|r| r.rules).collect();
    rules.sort();
    rules.dedup();
    let source = calibration
        .iter()
        .find(|c| c.mix == Mix::Small)
        .map(|c| c.forwarded_mpps);
    let ymax = rows
        .iter()
        .map(|r| r.forwarded_mpps)
        .chain(source)
        .fold(0.0f64, f64::max)
        .max(0.1)
        * 1.1;
    let (pw, ph) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
    let (lmin, lmax) = (
        (*rules.first().unwrap_or(&10) as f64).log10(),
        (*rules.last().unwrap_or(&1000) as f64).log10(),
    );
    let x = |r: usize| {
        if lmax > lmin {
            LEFT + ((r as f64).log10() - lmin) / (lmax - lmin) * pw
        } else {
            LEFT + pw / 2.0
        }
    };
    let y = |v: f64| TOP + ph - v / ymax * ph;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="14">Forwarded Mpps, 64-byte frames, against rules (median of runs)</text>"#,
        LEFT + pw / 2.0
    );
    // Axes and grid.
    for i in 0..=5 {
        let v = ymax / 1.1 * i as f64 / 5.0;
        let yy = y(v);
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{v:.2}</text>"##,
            LEFT + pw,
            LEFT - 6.0,
            yy + 4.0
        );
    }
    for r in &rules {
        let xx = x(*r);
        let _ = writeln!(
            s,
            r##"<line x1="{xx:.1}" y1="{TOP}" x2="{xx:.1}" y2="{:.1}" stroke="#ddd"/><text x="{xx:.1}" y="{:.1}" text-anchor="middle">{r}</text>"##,
            TOP + ph,
            TOP + ph + 18.0
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">rules (log scale)</text>"#,
        LEFT + pw / 2.0,
        H - 18.0
    );
    let _ = writeln!(
        s,
        r#"<text transform="translate(18,{:.1}) rotate(-90)" text-anchor="middle">Mpps</text>"#,
        TOP + ph / 2.0
    );
    let _ = writeln!(
        s,
        r##"<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="#444"/>"##
    );
    let mut legend = 0;
    if let Some(v) = source {
        let yy = y(v);
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="#000" stroke-dasharray="4 4"/>"##,
            LEFT + pw
        );
        let ly = TOP + 10.0 + legend as f64 * 20.0;
        let _ = writeln!(
            s,
            r##"<line x1="{:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="#000" stroke-dasharray="4 4"/><text x="{:.1}" y="{:.1}">source alone ({v:.2})</text>"##,
            LEFT + pw + 12.0,
            LEFT + pw + 36.0,
            LEFT + pw + 42.0,
            ly + 4.0
        );
        legend += 1;
    }
    for m in ALL {
        let pts: Vec<(f64, f64)> = rules
            .iter()
            .filter_map(|r| {
                rows.iter()
                    .find(|row| row.mode == m && row.rules == *r)
                    .map(|row| (x(*r), y(row.forwarded_mpps)))
            })
            .collect();
        if pts.is_empty() {
            continue;
        }
        let c = color(m);
        let path: Vec<String> = pts.iter().map(|(a, b)| format!("{a:.1},{b:.1}")).collect();
        let _ = writeln!(
            s,
            r#"<polyline points="{}" fill="none" stroke="{c}" stroke-width="2.5"/>"#,
            path.join(" ")
        );
        for (a, b) in &pts {
            let _ = writeln!(s, r#"<circle cx="{a:.1}" cy="{b:.1}" r="3.5" fill="{c}"/>"#);
        }
        let ly = TOP + 10.0 + legend as f64 * 20.0;
        let last = rows
            .iter()
            .filter(|r| r.mode == m)
            .max_by_key(|r| r.rules)
            .map_or(0.0, |r| r.forwarded_mpps);
        let _ = writeln!(
            s,
            r#"<line x1="{:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{c}" stroke-width="2.5"/><text x="{:.1}" y="{:.1}">{} ({last:.2})</text>"#,
            LEFT + pw + 12.0,
            LEFT + pw + 36.0,
            LEFT + pw + 42.0,
            ly + 4.0,
            m.name()
        );
        legend += 1;
    }
    s.push_str("</svg>\n");
    s
}
