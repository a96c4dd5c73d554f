//! Results as JSON, a markdown table, and PNG plots against the number of clients.

use crate::workload::RunResult;
use plotters::prelude::*;
use std::path::Path;

pub fn write_json(path: &Path, results: &[RunResult]) -> Result<(), String> {
    let text = serde_json::to_string_pretty(results).map_err(|e| e.to_string())?;
    std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

pub fn markdown_table(results: &[RunResult]) -> String {
    let mut out = String::from(
        "| workload | clients | events/req | requests/s | events/s | p50 ms | p99 ms | errors | CPU stolen % |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in results {
        out.push_str(&row(r));
        if let Some(readers) = &r.readers {
            out.push_str(&row(readers));
        }
    }
    out
}

fn row(r: &RunResult) -> String {
    format!(
        "| {} | {} | {} | {:.0} | {:.0} | {:.2} | {:.2} | {} | {} |\n",
        r.workload,
        r.clients,
        r.events_per_request,
        r.requests_per_sec,
        r.events_per_sec,
        r.p50_ms,
        r.p99_ms,
        r.errors,
        stolen(r)
    )
}

/// The share of the machine's CPU time the hypervisor gave to other guests during the run
/// (`–` where the kernel does not tell).
pub fn stolen(r: &RunResult) -> String {
    r.cpu
        .map_or_else(|| "–".to_string(), |cpu| format!("{:.1}", cpu.steal_pct))
}

/// Plots text needs a TrueType font; the usual system locations are tried.
fn register_font() -> Result<(), String> {
    const CANDIDATES: [&str; 3] = [
        "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/TTF/DejaVuSans.ttf",
        "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    ];
    for path in CANDIDATES {
        if let Ok(bytes) = std::fs::read(path) {
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            return plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
                .map_err(|_| format!("{path} is not a usable font"));
        }
    }
    Err("no TrueType font found for plot labels (install fonts-dejavu-core)".into())
}

/// Two PNGs: throughput against clients, and p50/p99 latency against clients.
pub fn plot_sweep(
    dir: &Path,
    name: &str,
    results: &[RunResult],
    per_event: bool,
) -> Result<(), String> {
    register_font()?;
    let err = |e: &dyn std::fmt::Display| e.to_string();
    let points: Vec<(f64, f64, f64, f64)> = results
        .iter()
        .map(|r| {
            let throughput = if per_event {
                r.events_per_sec
            } else {
                r.requests_per_sec
            };
            ((r.clients as f64).log2(), throughput, r.p50_ms, r.p99_ms)
        })
        .collect();
    let max_x = points.iter().map(|p| p.0).fold(1.0, f64::max);
    let unit = if per_event { "events/s" } else { "requests/s" };

    let path = dir.join(format!("{name}-throughput.png"));
    {
        let root = BitMapBackend::new(&path, (800, 500)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let max_y = points.iter().map(|p| p.1).fold(1.0, f64::max) * 1.1;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                format!("{name}: {unit} against clients"),
                ("sans-serif", 22),
            )
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(80)
            .build_cartesian_2d(0f64..max_x, 0f64..max_y)
            .map_err(|e| err(&e))?;
        chart
            .configure_mesh()
            .x_desc("clients")
            .y_desc(unit)
            .x_label_formatter(&|x| format!("{}", 2f64.powf(*x).round()))
            .draw()
            .map_err(|e| err(&e))?;
        chart
            .draw_series(LineSeries::new(points.iter().map(|p| (p.0, p.1)), &BLUE))
            .map_err(|e| err(&e))?;
        chart
            .draw_series(
                points
                    .iter()
                    .map(|p| Circle::new((p.0, p.1), 4, BLUE.filled())),
            )
            .map_err(|e| err(&e))?;
        root.present().map_err(|e| err(&e))?;
    }

    let path = dir.join(format!("{name}-latency.png"));
    let root = BitMapBackend::new(&path, (800, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let max_y = points.iter().map(|p| p.3).fold(0.1, f64::max) * 1.1;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("{name}: latency (ms) against clients"),
            ("sans-serif", 22),
        )
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..max_x, 0f64..max_y)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc("clients")
        .y_desc("ms")
        .x_label_formatter(&|x| format!("{}", 2f64.powf(*x).round()))
        .draw()
        .map_err(|e| err(&e))?;
    chart
        .draw_series(LineSeries::new(points.iter().map(|p| (p.0, p.2)), &GREEN))
        .map_err(|e| err(&e))?
        .label("p50")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], GREEN));
    chart
        .draw_series(LineSeries::new(points.iter().map(|p| (p.0, p.3)), &RED))
        .map_err(|e| err(&e))?
        .label("p99")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

/// Append throughput against the size of the store.
pub fn plot_growth(dir: &Path, points: &[(u64, f64)]) -> Result<(), String> {
    register_font()?;
    let err = |e: &dyn std::fmt::Display| e.to_string();
    let path = dir.join("growth.png");
    let root = BitMapBackend::new(&path, (800, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let max_x = points.iter().map(|p| p.0 as f64 / 1e6).fold(1.0, f64::max);
    let max_y = points.iter().map(|p| p.1).fold(1.0, f64::max) * 1.2;
    let mut chart = ChartBuilder::on(&root)
        .caption("append events/s against store size", ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(80)
        .build_cartesian_2d(0f64..max_x * 1.05, 0f64..max_y)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc("millions of events in the store")
        .y_desc("events/s")
        .draw()
        .map_err(|e| err(&e))?;
    let series: Vec<(f64, f64)> = points.iter().map(|p| (p.0 as f64 / 1e6, p.1)).collect();
    chart
        .draw_series(LineSeries::new(series.iter().copied(), &BLUE))
        .map_err(|e| err(&e))?;
    chart
        .draw_series(series.iter().map(|p| Circle::new(*p, 4, BLUE.filled())))
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}
