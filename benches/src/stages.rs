//! The brokers' own stage latencies over a run's window: `/metrics` scraped from each
//! broker's HTTP port at the window's start and end, the histograms' differences summed
//! over the brokers, and percentiles read from the buckets.

use std::collections::BTreeMap;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One stage's latency over the window, all brokers together.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StageStat {
    /// The stage (the metric's name without `rafka_` and `_seconds`).
    pub stage: String,
    /// Observations in the window.
    pub count: u64,
    /// Mean, ms.
    pub mean_ms: f64,
    /// Percentiles, ms, interpolated within their bucket.
    pub p50_ms: f64,
    /// See `p50_ms`.
    pub p99_ms: f64,
    /// See `p50_ms`.
    pub p999_ms: f64,
}

/// Histograms by stage: cumulative bucket counts by upper bound (seconds), and the sum.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    stages: BTreeMap<String, (Vec<(f64, u64)>, f64)>,
}

/// Reads `/metrics` of every broker (`host:port` of their HTTP ports) and adds them up.
pub async fn scrape(addrs: &[String]) -> anyhow::Result<Snapshot> {
    let mut total = Snapshot::default();
    for addr in addrs {
        let text = get(addr, "/metrics").await?;
        total.add(&parse(&text));
    }
    Ok(total)
}

/// The stages' latencies between two snapshots, in the order the broker lists them.
pub fn between(before: &Snapshot, after: &Snapshot) -> Vec<StageStat> {
    let mut out = Vec::new();
    for (stage, (buckets, sum)) in &after.stages {
        let (old, old_sum) = before.stages.get(stage).cloned().unwrap_or_default();
        let delta: Vec<(f64, u64)> = buckets
            .iter()
            .map(|&(le, c)| {
                let was = old.iter().find(|(l, _)| *l == le).map_or(0, |(_, c)| *c);
                (le, c.saturating_sub(was))
            })
            .collect();
        let count = delta.last().map_or(0, |(_, c)| *c);
        if count == 0 {
            continue;
        }
        out.push(StageStat {
            stage: stage.clone(),
            count,
            mean_ms: (sum - old_sum) / count as f64 * 1e3,
            p50_ms: quantile(&delta, 0.5) * 1e3,
            p99_ms: quantile(&delta, 0.99) * 1e3,
            p999_ms: quantile(&delta, 0.999) * 1e3,
        });
    }
    out
}

/// Prints the stages as a table.
pub fn print(stats: &[StageStat]) {
    eprintln!("  broker stages (all brokers)       count    mean     p50     p99   p99.9 ms");
    for s in stats {
        eprintln!(
            "    {:<28} {:>9} {:>7.3} {:>7.3} {:>7.3} {:>7.3}",
            s.stage, s.count, s.mean_ms, s.p50_ms, s.p99_ms, s.p999_ms
        );
    }
}

impl Snapshot {
    fn add(&mut self, other: &Snapshot) {
        for (stage, (buckets, sum)) in &other.stages {
            let entry = self.stages.entry(stage.clone()).or_default();
            entry.1 += sum;
            for &(le, c) in buckets {
                match entry.0.iter_mut().find(|(l, _)| *l == le) {
                    Some((_, total)) => *total += c,
                    None => entry.0.push((le, c)),
                }
            }
            entry.0.sort_by(|a, b| a.0.total_cmp(&b.0));
        }
    }
}

/// The `rafka_*_seconds` histograms of one Prometheus text.
fn parse(text: &str) -> Snapshot {
    let mut snap = Snapshot::default();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("rafka_") else {
            continue;
        };
        let Some((name_labels, value)) = rest.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        if let Some((stage, labels)) = name_labels.split_once("_seconds_bucket{") {
            let le = labels
                .strip_prefix("le=\"")
                .and_then(|l| l.strip_suffix("\"}"))
                .map(|l| {
                    if l == "+Inf" {
                        f64::INFINITY
                    } else {
                        l.parse().unwrap_or(f64::NAN)
                    }
                });
            if let Some(le) = le.filter(|l| !l.is_nan()) {
                let entry = snap.stages.entry(stage.to_string()).or_default();
                entry.0.push((le, value as u64));
            }
        } else if let Some(stage) = name_labels.strip_suffix("_seconds_sum") {
            snap.stages.entry(stage.to_string()).or_default().1 = value;
        }
    }
    snap
}

/// The `q` quantile (seconds) of cumulative buckets, linear within the bucket it falls
/// in; the last finite bound where it falls past every bound.
fn quantile(cumulative: &[(f64, u64)], q: f64) -> f64 {
    let total = cumulative.last().map_or(0, |(_, c)| *c);
    let rank = q * total as f64;
    let (mut lower, mut below) = (0.0, 0u64);
    for &(le, c) in cumulative {
        if c as f64 >= rank && c > below {
            if le.is_infinite() {
                return lower;
            }
            let within = (rank - below as f64) / (c - below) as f64;
            return lower + (le - lower) * within.clamp(0.0, 1.0);
        }
        if le.is_finite() {
            lower = le;
        }
        below = c;
    }
    lower
}

/// An HTTP/1.1 GET of `path` from `addr`; the body.
async fn get(addr: &str, path: &str) -> anyhow::Result<String> {
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("cannot reach the metrics of {addr}"))?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await?;
    let mut response = Vec::new();
    s.read_to_end(&mut response).await?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .with_context(|| format!("{addr}{path}: not an HTTP response"))?;
    anyhow::ensure!(
        head.starts_with("HTTP/1.1 200"),
        "{addr}{path}: {}",
        head.lines().next().unwrap_or_default()
    );
    Ok(body.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_within_the_bucket() {
        let c = [(0.001, 50), (0.002, 100), (f64::INFINITY, 100)];
        assert!((quantile(&c, 0.5) - 0.001).abs() < 1e-12);
        assert!((quantile(&c, 0.75) - 0.0015).abs() < 1e-12);
        assert!((quantile(&c, 0.25) - 0.0005).abs() < 1e-12);
    }

    #[test]
    fn differences_of_parsed_texts() {
        let before = parse(
            "rafka_log_sync_seconds_bucket{le=\"0.001\"} 10\nrafka_log_sync_seconds_bucket{le=\"+Inf\"} 10\nrafka_log_sync_seconds_sum 0.005\n",
        );
        let after = parse(
            "rafka_log_sync_seconds_bucket{le=\"0.001\"} 10\nrafka_log_sync_seconds_bucket{le=\"+Inf\"} 20\nrafka_log_sync_seconds_sum 0.105\n",
        );
        let stats = between(&before, &after);
        assert_eq!(stats.len(), 1);
        assert_eq!(stats[0].stage, "log_sync");
        assert_eq!(stats[0].count, 10);
        assert!((stats[0].mean_ms - 10.0).abs() < 1e-9);
        // Every new observation is past the last bound: reported at that bound.
        assert!((stats[0].p50_ms - 1.0).abs() < 1e-9);
    }
}
