//! `rafka-bench chart DIR`: SVG charts of the run results in a directory, per workload:
//! throughput over the measured window (produced and consumed, every system that ran it)
//! and the latency percentile curves (end to end, and send to acknowledgement).

use std::path::{Path, PathBuf};

use plotters::coord::combinators::IntoLogRange;
use plotters::coord::ranged1d::ValueFormatter;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

use crate::compare::read_dir;
use crate::result::{CurvePoint, RunResult};

/// Options of `rafka-bench chart`.
#[derive(clap::Args)]
pub struct ChartArgs {
    /// Directory of run results; the charts are written beside them
    /// (`WORKLOAD-throughput.svg`, `WORKLOAD-latency.svg`).
    dir: PathBuf,
}

/// rafka (gRPC) blue, rafka through its Kafka listener green, JetStream orange; consumed
/// and send-to-ack curves dashed.
fn color(system: &str) -> RGBColor {
    match system {
        "rafka" => RGBColor(31, 119, 180),
        "kafka" => RGBColor(44, 160, 44),
        _ => RGBColor(230, 120, 20),
    }
}

fn label(system: &str) -> &str {
    match system {
        "jetstream" => "JetStream",
        "kafka" => "rafka via Kafka",
        s => s,
    }
}

/// `rafka-bench chart`.
pub fn run(args: ChartArgs) -> anyhow::Result<()> {
    let results = read_dir(&args.dir)?;
    anyhow::ensure!(
        !results.is_empty(),
        "no run results in {}",
        args.dir.display()
    );
    let mut workloads: Vec<&str> = results.iter().map(|r| r.workload.as_str()).collect();
    workloads.dedup();
    for workload in workloads {
        let runs: Vec<&RunResult> = results.iter().filter(|r| r.workload == workload).collect();
        let throughput = args.dir.join(format!("{workload}-throughput.svg"));
        throughput_chart(&throughput, workload, &runs)?;
        let latency = args.dir.join(format!("{workload}-latency.svg"));
        latency_chart(&latency, workload, &runs)?;
        println!("{}\n{}", throughput.display(), latency.display());
    }
    Ok(())
}

fn throughput_chart(path: &Path, workload: &str, runs: &[&RunResult]) -> anyhow::Result<()> {
    let t_max = runs
        .iter()
        .flat_map(|r| r.series.iter().map(|p| p.t))
        .fold(1.0, f64::max);
    let y_max = runs
        .iter()
        .flat_map(|r| r.series.iter())
        .map(|p| p.produced_per_sec.max(p.consumed_per_sec))
        .fold(1.0, f64::max)
        * 1.1;
    // Systems far apart (more than 10x) share one chart on a log scale.
    let slowest = runs
        .iter()
        .map(|r| r.produced_records_per_sec.max(r.consumed_records_per_sec))
        .fold(f64::INFINITY, f64::min)
        .max(1.0);
    let root = SVGBackend::new(path, (960, 540)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut builder = ChartBuilder::on(&root);
    builder
        .caption(format!("{workload}: throughput"), ("sans-serif", 22))
        .margin(12)
        .margin_right(30)
        .x_label_area_size(40)
        .y_label_area_size(80);
    if y_max / slowest > 10.0 {
        let y_min = (slowest / 10.0).max(1.0);
        let chart = builder.build_cartesian_2d(0.0..t_max, (y_min..y_max).log_scale())?;
        draw_throughput(chart, runs, y_min, "records/s (log scale)")?;
    } else {
        let chart = builder.build_cartesian_2d(0.0..t_max, 0.0..y_max)?;
        draw_throughput(chart, runs, 0.0, "records/s")?;
    }
    root.present()?;
    Ok(())
}

fn draw_throughput<'a, Y>(
    mut chart: ChartContext<'a, SVGBackend<'a>, Cartesian2d<RangedCoordf64, Y>>,
    runs: &[&RunResult],
    y_min: f64,
    y_desc: &str,
) -> anyhow::Result<()>
where
    Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    chart
        .configure_mesh()
        .x_desc("seconds into the measured window")
        .y_desc(y_desc)
        .y_label_formatter(&|&y| {
            if y >= 1e3 {
                format!("{:.0}k", y / 1e3)
            } else {
                format!("{y:.0}")
            }
        })
        .draw()?;
    for r in runs {
        let c = color(&r.system);
        let produced = r
            .series
            .iter()
            .map(|p| (p.t, p.produced_per_sec.max(y_min)));
        chart
            .draw_series(LineSeries::new(produced, c.stroke_width(2)))?
            .label(format!("{} produced", label(&r.system)))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], c.stroke_width(2)));
        let consumed = r
            .series
            .iter()
            .map(|p| (p.t, p.consumed_per_sec.max(y_min)));
        chart
            .draw_series(DashedLineSeries::new(consumed, 6, 4, c.stroke_width(2)))?
            .label(format!("{} consumed", label(&r.system)))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 8, y)], c.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::MiddleRight)
        .draw()?;
    Ok(())
}

/// Position on the "nines" axis: 0 at p0, 1 at p90, 2 at p99, 3 at p99.9, ...; the
/// maximum (p100) is drawn at p99.999.
fn nines(percentile: f64) -> f64 {
    -(1.0 - percentile.min(99.999) / 100.0).log10()
}

fn nines_label(x: &f64) -> String {
    match x.round() as i32 {
        0 => "p0".into(),
        1 => "p90".into(),
        2 => "p99".into(),
        n => format!("p99.{}", "9".repeat(n as usize - 2)),
    }
}

fn latency_chart(path: &Path, workload: &str, runs: &[&RunResult]) -> anyhow::Result<()> {
    let curves = |r: &RunResult| -> [(String, Vec<CurvePoint>, bool); 2] {
        [
            (
                format!("{} end to end", label(&r.system)),
                r.e2e_latency_curve.clone(),
                false,
            ),
            (
                format!("{} send to ack", label(&r.system)),
                r.send_latency_curve.clone(),
                true,
            ),
        ]
    };
    let all_ms = || {
        runs.iter()
            .flat_map(|r| r.e2e_latency_curve.iter().chain(&r.send_latency_curve))
            .map(|p| p.ms)
    };
    let y_min = all_ms().fold(f64::INFINITY, f64::min).max(0.001);
    let y_max = all_ms().fold(0.0, f64::max).max(y_min * 10.0) * 1.5;
    let root = SVGBackend::new(path, (960, 540)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("{workload}: latency by percentile"),
            ("sans-serif", 22),
        )
        .margin(12)
        .margin_right(30)
        .x_label_area_size(40)
        .y_label_area_size(80)
        .build_cartesian_2d(0.0..5.0, (y_min * 0.8..y_max).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .x_labels(6)
        .x_label_formatter(&nines_label)
        .y_desc("ms (log scale)")
        .y_label_formatter(&|y| format!("{y}"))
        .draw()?;
    for r in runs {
        let c = color(&r.system);
        for (name, curve, dashed) in curves(r) {
            if curve.is_empty() {
                continue;
            }
            let points: Vec<(f64, f64)> = curve
                .iter()
                .map(|p| (nines(p.percentile), p.ms.max(y_min)))
                .collect();
            let (style, len) = if dashed {
                (c.mix(0.6).stroke_width(2), 8)
            } else {
                (c.stroke_width(2), 20)
            };
            if dashed {
                chart.draw_series(DashedLineSeries::new(points, 6, 4, style))?
            } else {
                chart.draw_series(LineSeries::new(points, style))?
            }
            .label(name)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + len, y)], style));
        }
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()?;
    root.present()?;
    Ok(())
}
