//! Measuring and printing results.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// Latencies in nanoseconds, 1 ns to 60 s, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid histogram bounds")
}

/// Records the time `f` takes into `h`.
#[inline]
pub fn timed<T>(h: &mut Histogram<u64>, f: impl FnOnce() -> T) -> T {
    let start = Instant::now();
    let out = f();
    h.saturating_record(start.elapsed().as_nanos() as u64);
    out
}

/// One line of results.
pub struct Row {
    pub name: String,
    pub bytes: u64,
    pub records: u64,
    pub elapsed: Duration,
    pub latency: Option<Histogram<u64>>,
}

impl Row {
    pub fn mb_per_sec(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.elapsed.as_secs_f64()
    }

    pub fn records_per_sec(&self) -> f64 {
        self.records as f64 / self.elapsed.as_secs_f64()
    }

    fn us(&self, q: f64) -> String {
        self.latency.as_ref().map_or("-".into(), |h| {
            format!("{:.1}", h.value_at_quantile(q) as f64 / 1000.0)
        })
    }

    pub fn json(&self, baseline_mb: Option<f64>) -> String {
        let h = self.latency.as_ref();
        let q = |q: f64| h.map_or(0.0, |h| h.value_at_quantile(q) as f64 / 1e6);
        format!(
            "{{\"name\":\"{}\",\"records\":{},\"bytes\":{},\"records_per_sec\":{:.0},\"mb_per_sec\":{:.1},\"p50_ms\":{:.4},\"p99_ms\":{:.4},\"p999_ms\":{:.4},\"max_ms\":{:.4},\"ratio_to_baseline\":{}}}",
            self.name,
            self.records,
            self.bytes,
            self.records_per_sec(),
            self.mb_per_sec(),
            q(0.5),
            q(0.99),
            q(0.999),
            h.map_or(0.0, |h| h.max() as f64 / 1e6),
            baseline_mb.map_or("null".into(), |b| format!("{:.3}", self.mb_per_sec() / b)),
        )
    }
}

/// Prints rows as a table; `baseline` gives each row's reference MB/s for the ratio column.
pub fn print_table(rows: &[(Row, Option<f64>)]) {
    println!(
        "{:<42} {:>12} {:>10} {:>8} {:>9} {:>9} {:>9} {:>9}",
        "benchmark", "records/s", "MB/s", "ratio", "p50 µs", "p99 µs", "p99.9 µs", "max µs"
    );
    for (r, base) in rows {
        let ratio = base.map_or("-".into(), |b| format!("{:.2}", r.mb_per_sec() / b));
        println!(
            "{:<42} {:>12.0} {:>10.1} {:>8} {:>9} {:>9} {:>9} {:>9}",
            r.name,
            r.records_per_sec(),
            r.mb_per_sec(),
            ratio,
            r.us(0.5),
            r.us(0.99),
            r.us(0.999),
            r.us(1.0),
        );
    }
}
