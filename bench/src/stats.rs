//! Latency percentiles and throughput of a set of timed operations.

use std::time::Duration;

/// Percentiles (exact, from every sample) and throughput.
#[derive(Debug, Clone, Copy)]
pub struct Summary {
    /// Median latency.
    pub p50: Duration,
    /// 99th-percentile latency.
    pub p99: Duration,
    /// Operations per second of wall time.
    pub per_sec: f64,
}

impl Summary {
    /// Summarises `latencies` (nanoseconds) of operations that took `wall` in all.
    pub fn of(mut latencies: Vec<u64>, wall: Duration) -> Self {
        latencies.sort_unstable();
        let at = |q: f64| {
            let i = ((latencies.len() as f64 * q).ceil() as usize).clamp(1, latencies.len().max(1)) - 1;
            Duration::from_nanos(latencies.get(i).copied().unwrap_or(0))
        };
        Self {
            p50: at(0.50),
            p99: at(0.99),
            per_sec: latencies.len() as f64 / wall.as_secs_f64().max(f64::MIN_POSITIVE),
        }
    }
}

/// Microseconds with one decimal (`12.3`), or two below 1 µs.
pub fn micros(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 1.0 { format!("{us:.2}") } else { format!("{us:.1}") }
}

/// Milliseconds, integral above 10 ms.
pub fn millis(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1e3;
    if ms < 10.0 { format!("{ms:.1}") } else { format!("{ms:.0}") }
}

/// A count with thousands separators: `123,456`.
pub fn thousands(n: f64) -> String {
    let s = format!("{:.0}", n.max(0.0));
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Measures every contender: `warmup` calls each, then `total` calls each,
/// split into `rounds` rounds with the contenders interleaved and their order
/// rotated every round, so the machine's noise spreads over all of them.
/// `batch(contender, n)` makes `n` calls and returns their latencies (ns)
/// and wall time. Summaries come back in `contenders` order.
pub async fn interleaved<C>(
    contenders: &[C],
    warmup: usize,
    total: usize,
    rounds: usize,
    batch: impl AsyncFn(&C, usize) -> (Vec<u64>, Duration),
) -> Vec<Summary> {
    for c in contenders {
        batch(c, warmup).await;
    }
    let mut latencies = vec![Vec::with_capacity(total); contenders.len()];
    let mut wall = vec![Duration::ZERO; contenders.len()];
    let per_round = total.div_ceil(rounds);
    for round in 0..rounds {
        for k in 0..contenders.len() {
            let i = (k + round) % contenders.len();
            let (l, w) = batch(&contenders[i], per_round).await;
            latencies[i].extend(l);
            wall[i] += w;
        }
    }
    latencies.into_iter().zip(wall).map(|(l, w)| Summary::of(l, w)).collect()
}
