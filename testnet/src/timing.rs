//! Latency samples as the benches report them: percentiles of sorted
//! samples and durations printed at a readable precision.

use std::time::{Duration, Instant};

/// The `p` quantile (0..=1) of sorted samples (nearest rank).
pub fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// A duration in µs below 1 ms, else in ms.
pub fn dur(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 1000.0 {
        format!("{us:.0} µs")
    } else if us < 10_000.0 {
        format!("{:.2} ms", us / 1e3)
    } else {
        format!("{:.1} ms", us / 1e3)
    }
}

/// "p50 X p99 Y" of sorted samples.
pub fn p50_p99(sorted: &[Duration]) -> String {
    format!("p50 {} p99 {}", dur(pct(sorted, 0.5)), dur(pct(sorted, 0.99)))
}

/// Times `f(i)` for `i` in `0..n`; the samples, sorted.
pub fn samples(n: usize, mut f: impl FnMut(usize)) -> Vec<Duration> {
    let mut out: Vec<Duration> = (0..n)
        .map(|i| {
            let t = Instant::now();
            f(i);
            t.elapsed()
        })
        .collect();
    out.sort();
    out
}
