//! `rafka-bench compare DIR`: from the run results in a directory (what
//! `scripts/compare.sh` leaves there), the rafka/JetStream table and the table of rafka's
//! two ways in (its Kafka listener through librdkafka against its gRPC API), each where
//! both of its systems ran; printed and written as markdown.
//!
//! `rafka-bench describe WORKLOAD`: the facts about a workload file a script needs to
//! start the right servers for it.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::result::RunResult;
use crate::workload::Workload;

/// Options of `rafka-bench compare`.
#[derive(clap::Args)]
pub struct CompareArgs {
    /// Directory of run results (`*.json` written by `rafka-bench run --out`).
    dir: PathBuf,
    /// Markdown table (default: DIR/compare.md).
    #[arg(long)]
    markdown: Option<PathBuf>,
}

/// Options of `rafka-bench describe`.
#[derive(clap::Args)]
pub struct DescribeArgs {
    /// The workload file (TOML).
    workload: PathBuf,
}

/// `rafka-bench describe`: prints `NAME REPLICATION_FACTOR FLUSH BACKLOG_BYTES` on one
/// line (for `read` in a shell script).
pub fn describe(args: DescribeArgs) -> anyhow::Result<()> {
    let w = Workload::load(&args.workload)?;
    println!(
        "{} {} {} {}",
        w.name,
        w.replication_factor,
        w.flush(),
        w.backlog_bytes
    );
    Ok(())
}

/// A row: one workload, each system's result where it ran.
struct Row<'a> {
    workload: &'a str,
    rafka: Option<&'a RunResult>,
    jetstream: Option<&'a RunResult>,
    kafka: Option<&'a RunResult>,
}

/// Two systems a table sets side by side (the ratio is the first's over the second's).
struct Pair {
    title: &'static str,
    names: [&'static str; 2],
    pick: for<'a> fn(&Row<'a>) -> [Option<&'a RunResult>; 2],
    /// Rows only where both ran (else where either did, the other's cells `-`).
    both: bool,
}

const PAIRS: [Pair; 2] = [
    Pair {
        title: "ratio = rafka / JetStream, from the same run of this script",
        names: ["rafka", "JetStream"],
        pick: |r| [r.rafka, r.jetstream],
        both: false,
    },
    Pair {
        title: "ratio = rafka through its Kafka listener (librdkafka) / through gRPC (rafka-client), same run",
        names: ["Kafka", "gRPC"],
        pick: |r| [r.kafka, r.rafka],
        both: true,
    },
];

fn rate(r: Option<&RunResult>, f: fn(&RunResult) -> f64) -> String {
    r.map_or("-".into(), |r| format!("{:.0}", f(r)))
}

fn ratio(a: Option<&RunResult>, b: Option<&RunResult>, f: fn(&RunResult) -> f64) -> String {
    match (a, b) {
        (Some(a), Some(b)) if f(b) > 0.0 => format!("{:.2}", f(a) / f(b)),
        _ => "-".into(),
    }
}

fn ms(r: Option<&RunResult>, f: fn(&RunResult) -> f64) -> String {
    r.map_or("-".into(), |r| format!("{:.1}", f(r)))
}

/// Cells of a row for systems `a` and `b`: workload, produced (a, b, ratio), consumed (the
/// same), end-to-end p99 (a, b), send-to-ack p99 (a, b), produced MB/s as a fraction of the
/// machine's write bandwidth (a, b). For a workload with a backlog, "produced" is the rate
/// the backlog was written at (flat out), and "consumed" the rate the consumers caught up
/// at.
fn cells(workload: &str, a: Option<&RunResult>, b: Option<&RunResult>) -> Vec<String> {
    let produced = |r: &RunResult| match r.backlog_write_secs {
        Some(secs) if r.backlog_records > 0 => r.backlog_records as f64 / secs,
        _ => r.produced_records_per_sec,
    };
    let consumed = |r: &RunResult| r.consumed_records_per_sec;
    let mut name = workload.to_owned();
    if let Some(r) = a.or(b).filter(|r| r.backlog_records > 0) {
        name = format!(
            "{name} ({:.1} GB backlog: its write rate, then the catch-up rate)",
            r.backlog_records as f64 * r.record_size as f64 / 1e9
        );
    }
    vec![
        name,
        rate(a, produced),
        rate(b, produced),
        ratio(a, b, produced),
        rate(a, consumed),
        rate(b, consumed),
        ratio(a, b, consumed),
        ms(a, |r| r.e2e_p99_ms),
        ms(b, |r| r.e2e_p99_ms),
        ms(a, |r| r.send_p99_ms),
        ms(b, |r| r.send_p99_ms),
        fraction(a),
        fraction(b),
    ]
}

/// Produced MB/s as a fraction of the write bandwidth limit that applies.
fn fraction(r: Option<&RunResult>) -> String {
    r.and_then(|r| r.fractions.as_ref())
        .map_or("-".into(), |f| format!("{:.3}", f.produce_of_write))
}

fn header([a, b]: [&str; 2]) -> Vec<String> {
    vec![
        "workload".into(),
        format!("{a} produced/s"),
        format!("{b} produced/s"),
        "ratio".into(),
        format!("{a} consumed/s"),
        format!("{b} consumed/s"),
        "ratio".into(),
        format!("{a} e2e p99 ms"),
        format!("{b} e2e p99 ms"),
        format!("{a} send p99 ms"),
        format!("{b} send p99 ms"),
        format!("{a} produce/write limit"),
        format!("{b} produce/write limit"),
    ]
}

/// A table printed aligned.
fn print_table(header: &[String], table: &[Vec<String>]) {
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            table
                .iter()
                .map(|row| row[i].len())
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: &[String]| {
        cells
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(i, (c, w))| {
                if i == 0 {
                    format!("{c:<w$}")
                } else {
                    format!("{c:>w$}")
                }
            })
            .collect::<Vec<_>>()
            .join("  ")
    };
    println!("{}", line(header));
    for row in table {
        println!("{}", line(row));
    }
}

/// `rafka-bench compare`.
pub fn run(args: CompareArgs) -> anyhow::Result<()> {
    let results = read_dir(&args.dir)?;
    anyhow::ensure!(
        !results.is_empty(),
        "no run results in {}",
        args.dir.display()
    );
    let mut rows: Vec<Row<'_>> = Vec::new();
    for r in &results {
        let row = match rows.iter_mut().find(|row| row.workload == r.workload) {
            Some(row) => row,
            None => {
                rows.push(Row {
                    workload: &r.workload,
                    rafka: None,
                    jetstream: None,
                    kafka: None,
                });
                rows.last_mut().expect("just pushed")
            }
        };
        match r.system.as_str() {
            "rafka" => row.rafka = Some(r),
            "jetstream" => row.jetstream = Some(r),
            "kafka" => row.kafka = Some(r),
            other => anyhow::bail!("{}: unknown system {other}", r.workload),
        }
    }
    let mut md = String::new();
    for pair in &PAIRS {
        let table: Vec<Vec<String>> = rows
            .iter()
            .filter_map(|row| {
                let [a, b] = (pair.pick)(row);
                let shown = if pair.both {
                    a.is_some() && b.is_some()
                } else {
                    a.is_some() || b.is_some()
                };
                shown.then(|| cells(row.workload, a, b))
            })
            .collect();
        if table.is_empty() {
            continue;
        }
        let header = header(pair.names);
        println!("{}", pair.title);
        print_table(&header, &table);
        writeln!(md, "{}\n", pair.title)?;
        writeln!(md, "| {} |", header.join(" | "))?;
        writeln!(md, "|---|{}", "---:|".repeat(header.len() - 1))?;
        for row in &table {
            writeln!(md, "| {} |", row.join(" | "))?;
        }
        writeln!(md)?;
    }
    anyhow::ensure!(
        !md.is_empty(),
        "no rafka or JetStream run in {} (and no workload ran on both Kafka and gRPC)",
        args.dir.display()
    );
    if let Some(l) = results.iter().find_map(|r| r.limits) {
        writeln!(
            md,
            "Machine limits in the same run: write + fdatasync {:.0} MB/s, buffered write {:.0} MB/s, memcpy {:.0} MB/s, loopback TCP {:.0} MB/s; 16 KiB write + fdatasync p50 {:.2} / p99 {:.2} / p99.9 {:.2} ms.",
            l.fsync_write, l.buffered_write, l.memcpy, l.loopback_tcp, l.fsync_16k_p50_ms, l.fsync_16k_p99_ms, l.fsync_16k_p999_ms
        )?;
    }
    let path = args.markdown.unwrap_or_else(|| args.dir.join("compare.md"));
    std::fs::write(&path, md)?;
    println!("markdown table: {}", path.display());
    Ok(())
}

/// Reads every run result (`*.json` with a `system` field) in `dir`, sorted by workload
/// and system.
pub fn read_dir(dir: &Path) -> anyhow::Result<Vec<RunResult>> {
    let mut results = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let text = std::fs::read_to_string(&path)?;
        // limits.json and other files in the directory are not results.
        if let Ok(r) = serde_json::from_str::<RunResult>(&text) {
            results.push(r);
        }
    }
    results.sort_by(|a, b| (&a.workload, &a.system).cmp(&(&b.workload, &b.system)));
    Ok(results)
}
