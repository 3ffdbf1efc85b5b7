//! `wattle compare A.json B.json [C.json…] [--md] [--svg out.svg]`: profiles from different
//! machines side by side — per op and shape: time, energy, GB/s, GFLOP/J and the ratio to the
//! first file — and an SVG roofline of each device with its measured points.

use clap::Args;
use std::fmt::Write as _;
use std::path::PathBuf;
use wattle::sched::{OpDesc, Profile};

/// Arguments of `wattle compare`.
#[derive(Args, Debug)]
pub struct CompareArgs {
    /// Profiles to compare (the first is the reference).
    #[arg(required = true, num_args = 2.., value_name = "PROFILE.json")]
    files: Vec<PathBuf>,
    /// Markdown instead of a terminal table.
    #[arg(long)]
    md: bool,
    /// Also draw each device's roofline with its measured points.
    #[arg(long, value_name = "out.svg")]
    svg: Option<PathBuf>,
}

struct Row {
    op: OpDesc,
    col: String,
    seconds: f64,
    joules: f64,
    source: &'static str,
}

pub fn run(a: CompareArgs) -> Result<(), String> {
    let mut profiles = Vec::new();
    for f in &a.files {
        let p = Profile::load(f).map_err(|e| e.to_string())?;
        let stem = f
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        profiles.push((stem, p));
    }
    // Every measured shape of any file, in first-seen order.
    let mut shapes: Vec<OpDesc> = Vec::new();
    for (_, p) in &profiles {
        for d in &p.devices {
            for o in &d.ops {
                if !shapes.contains(&o.op) {
                    shapes.push(o.op.clone());
                }
            }
        }
    }
    let mut rows: Vec<Vec<Row>> = Vec::new();
    for op in &shapes {
        let mut r = Vec::new();
        for (stem, p) in &profiles {
            for d in &p.devices {
                if let Some(pr) = d.predict(op) {
                    r.push(Row {
                        op: op.clone(),
                        col: format!("{stem}:{}", d.id),
                        seconds: pr.seconds,
                        joules: pr.joules,
                        source: pr.source.name(),
                    });
                }
            }
        }
        rows.push(r);
    }
    let first = &profiles[0].0;
    let mut out = String::new();
    let header = [
        "op",
        "profile:device",
        "ms",
        "mJ",
        "GB/s",
        "GFLOP/s",
        "GFLOP/J",
        "speed vs first",
        "energy vs first",
        "source",
    ];
    if a.md {
        let _ = writeln!(out, "| {} |", header.join(" | "));
        let _ = writeln!(
            out,
            "|{}|",
            header.iter().map(|_| "---").collect::<Vec<_>>().join("|")
        );
    } else {
        let _ = writeln!(
            out,
            "{:<40} {:<24} {:>10} {:>10} {:>8} {:>9} {:>9} {:>13} {:>15} {}",
            header[0],
            header[1],
            header[2],
            header[3],
            header[4],
            header[5],
            header[6],
            header[7],
            header[8],
            header[9]
        );
    }
    for r in &rows {
        // Reference: the first file's best (fastest) device for this shape.
        let reference = r
            .iter()
            .filter(|x| x.col.starts_with(&format!("{first}:")))
            .min_by(|a, b| a.seconds.total_cmp(&b.seconds));
        for x in r {
            let gbs = x.op.bytes() / x.seconds / 1e9;
            let gfs = x.op.flops() / x.seconds / 1e9;
            let gfj = if x.joules > 0.0 {
                x.op.flops() / x.joules / 1e9
            } else {
                f64::NAN
            };
            let (tr, er) = match reference {
                // Speed > 1: faster than the reference; energy < 1: fewer joules.
                Some(rf) => (
                    format!("{:.2}×", rf.seconds / x.seconds),
                    format!("{:.2}×", x.joules / rf.joules),
                ),
                None => ("-".into(), "-".into()),
            };
            if a.md {
                let _ = writeln!(
                    out,
                    "| {} | {} | {:.4} | {:.4} | {:.1} | {:.2} | {:.3} | {tr} | {er} | {} |",
                    x.op,
                    x.col,
                    x.seconds * 1e3,
                    x.joules * 1e3,
                    gbs,
                    gfs,
                    gfj,
                    x.source
                );
            } else {
                let _ = writeln!(
                    out,
                    "{:<40} {:<24} {:>10.4} {:>10.4} {:>8.1} {:>9.2} {:>9.3} {:>13} {:>15} {}",
                    x.op.to_string(),
                    x.col,
                    x.seconds * 1e3,
                    x.joules * 1e3,
                    gbs,
                    gfs,
                    gfj,
                    tr,
                    er,
                    x.source
                );
            }
        }
    }
    let _ = writeln!(
        out,
        "\nspeed vs first: the first profile's fastest device for the shape over this time (> 1: \
         faster); energy vs first: these joules over that device's (< 1: less energy)."
    );
    print!("{out}");
    if let Some(svg) = &a.svg {
        roofline(&profiles, svg)?;
        eprintln!("wattle compare: wrote {}", svg.display());
    }
    Ok(())
}

/// Log-log roofline: x = FLOP per byte, y = GFLOP/s; per device, its measured points and the roof
/// min(peak GFLOP/s, intensity × peak GB/s) from its own best points.
fn roofline(profiles: &[(String, Profile)], path: &PathBuf) -> Result<(), String> {
    use plotters::prelude::*;
    let mut series = Vec::new();
    for (stem, p) in profiles {
        for d in &p.devices {
            let pts: Vec<(f64, f64)> = d
                .ops
                .iter()
                .map(|o| (o.op.flops() / o.op.bytes(), o.op.flops() / o.seconds / 1e9))
                .filter(|(x, y)| x.is_finite() && y.is_finite() && *x > 0.0 && *y > 0.0)
                .collect();
            if pts.is_empty() {
                continue;
            }
            let bw = d
                .ops
                .iter()
                .map(|o| o.op.bytes() / o.seconds / 1e9)
                .fold(0.0, f64::max);
            let peak = pts.iter().map(|p| p.1).fold(0.0, f64::max);
            series.push((format!("{stem}:{} ({})", d.id, d.name), pts, bw, peak));
        }
    }
    if series.is_empty() {
        return Err("no measured points to draw".into());
    }
    let xs = series.iter().flat_map(|s| s.1.iter().map(|p| p.0));
    let ys = series.iter().flat_map(|s| s.1.iter().map(|p| p.1));
    let (xmin, xmax) = xs.fold((f64::INFINITY, 0.0f64), |a, x| (a.0.min(x), a.1.max(x)));
    let (ymin, ymax) = ys.fold((f64::INFINITY, 0.0f64), |a, y| (a.0.min(y), a.1.max(y)));
    let root = SVGBackend::new(path, (960, 640)).into_drawing_area();
    let e = |e: &dyn std::fmt::Display| format!("svg: {e}");
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let mut chart = ChartBuilder::on(&root)
        .caption("wattle roofline: GFLOP/s vs FLOP/byte", ("sans-serif", 20))
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(
            (xmin / 2.0..xmax * 2.0).log_scale(),
            (ymin / 2.0..ymax * 2.0).log_scale(),
        )
        .map_err(|x| e(&x))?;
    chart
        .configure_mesh()
        .x_desc("FLOP per byte")
        .y_desc("GFLOP/s")
        .draw()
        .map_err(|x| e(&x))?;
    for (i, (name, pts, bw, peak)) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let roof: Vec<(f64, f64)> = (0..=64)
            .map(|j| {
                let x = (xmin / 2.0) * ((xmax * 4.0) / (xmin / 2.0)).powf(j as f64 / 64.0);
                (x, (x * bw).min(*peak))
            })
            .collect();
        chart
            .draw_series(LineSeries::new(roof, color.stroke_width(2)))
            .map_err(|x| e(&x))?
            .label(name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        chart
            .draw_series(pts.iter().map(|&p| Circle::new(p, 4, color.filled())))
            .map_err(|x| e(&x))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|x| e(&x))?;
    root.present().map_err(|x| e(&x))?;
    Ok(())
}
