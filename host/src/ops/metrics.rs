//! The node's Prometheus metrics: what the bus core counts as it delivers,
//! reloads and dead-letters, rendered in the text exposition format for the
//! `/metrics` endpoint ([`crate::ops::http`]). One [`Metrics`] per node; the bus
//! core records into it, nothing else writes.

use crate::delivery::Mode;
use crate::delivery::failure::{Failure, FailureClass};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

/// Labels of an invocation counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Invocation {
    name: String,
    mode: &'static str,
}

/// Labels of an error counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Error {
    name: String,
    class: &'static str,
}

/// Labels of the per-name metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Name {
    name: String,
}

/// Labels of the reload counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Reload {
    outcome: &'static str,
}

/// Upper bounds of the latency buckets in nanoseconds: 25 µs to about
/// 53 s, doubling — from a warm Rust call to a slow dispatch — then +Inf.
const LATENCY_BOUNDS_NS: [u64; 22] = {
    let mut bounds = [0u64; 22];
    let mut i = 0;
    while i < 22 {
        bounds[i] = 25_000 << i;
        i += 1;
    }
    bounds
};

/// A latency histogram of atomics: observing takes no lock (every
/// invocation observes one, from every worker thread at once).
#[derive(Debug, Default, Clone)]
pub struct Latency(Arc<LatencyCounts>);

#[derive(Debug, Default)]
struct LatencyCounts {
    /// Per bucket (not cumulative); the last is +Inf.
    buckets: [AtomicU64; 23],
    count: AtomicU64,
    sum_ns: AtomicU64,
}

impl Latency {
    /// Counts one duration.
    pub fn observe(&self, elapsed: Duration) {
        let ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let at = LATENCY_BOUNDS_NS.iter().position(|bound| ns <= *bound).unwrap_or(LATENCY_BOUNDS_NS.len());
        self.0.buckets[at].fetch_add(1, Ordering::Relaxed);
        self.0.count.fetch_add(1, Ordering::Relaxed);
        self.0.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }
}

impl prometheus_client::metrics::TypedMetric for Latency {
    const TYPE: prometheus_client::metrics::MetricType = prometheus_client::metrics::MetricType::Histogram;
}

impl prometheus_client::encoding::EncodeMetric for Latency {
    fn encode(&self, mut encoder: prometheus_client::encoding::MetricEncoder) -> std::fmt::Result {
        let buckets: Vec<(f64, u64)> = LATENCY_BOUNDS_NS
            .iter()
            .map(|ns| *ns as f64 / 1e9)
            .chain(std::iter::once(f64::INFINITY))
            .zip(&self.0.buckets)
            .map(|(bound, n)| (bound, n.load(Ordering::Relaxed)))
            .collect();
        let sum = self.0.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        encoder.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
            sum,
            self.0.count.load(Ordering::Relaxed),
            &buckets,
            None,
        )
    }

    fn metric_type(&self) -> prometheus_client::metrics::MetricType {
        <Self as prometheus_client::metrics::TypedMetric>::TYPE
    }
}

/// One name's series, found once and kept (the routing table holds it):
/// recording an invocation then costs atomic adds, with no label strings
/// built and nothing looked up.
#[derive(Default)]
pub struct Series {
    /// The name.
    name: String,
    /// By [`Mode`], in declaration order.
    invocations: [OnceLock<Counter>; 4],
    /// By [`FailureClass::ALL`] order.
    errors: [OnceLock<Counter>; 9],
    latency: OnceLock<Latency>,
    retries: OnceLock<Counter>,
    dead_letters: OnceLock<Counter>,
}

/// The node's metrics.
pub struct Metrics {
    registry: Registry,
    series: RwLock<HashMap<String, Arc<Series>>>,
    invocations: Family<Invocation, Counter>,
    errors: Family<Error, Counter>,
    latency: Family<Name, Latency>,
    retries: Family<Name, Counter>,
    dead_letters: Family<Name, Counter>,
    reloads: Family<Reload, Counter>,
    queue_pending: Family<Name, Gauge>,
    queue_stalled: Family<Name, Gauge>,
    queue_stalls: Family<Name, Counter>,
    dead_letters_dropped: Family<Name, Counter>,
    in_flight: Gauge,
    host_errors: Counter,
    handlers: Gauge,
    pool_idle: Gauge,
    pool_running: Gauge,
}

impl Metrics {
    /// Registers every metric; `pool_max` is the instance pool's size.
    pub fn new(pool_max: u64) -> Self {
        let mut r = Registry::with_prefix("busbar");
        let pool = Gauge::<u64, AtomicU64>::default();
        pool.set(pool_max);
        let _ = r.add("pool_instances", "Size of the instance pool (instances that may exist at once)", pool);
        let calls = "Invocations of a handler, by name and delivery mode (failed ones included)";
        let duration = "Time from delivery to the handler's outcome, admission wait included";
        let dead = "Dispatches that failed for good, as the driver that wrote the dead letter reports them";
        let reloads = "Handler file changes applied, or rejected (the old version kept serving)";
        let host = "Deliveries that met a host error (a bug in busbar, answered as `failed`; see the node log)";
        Self {
            invocations: r.add("invocations", calls, Family::default()),
            errors: r.add("errors", "Failed invocations, by name and failure class", Family::default()),
            latency: r.add("invocation_duration_seconds", duration, Family::default()),
            retries: r.add("retries", "Dispatch attempts after the first", Family::default()),
            dead_letters: r.add("dead_letters", dead, Family::default()),
            reloads: r.add("reloads", reloads, Family::default()),
            queue_pending: r.add(
                "queue_pending",
                "Dispatches waiting in the queue: on NATS as the last one this node took reported; on the in-process bus all pending (queued, running or between attempts) as this node last changed them",
                Family::default(),
            ),
            queue_stalled: r.add(
                "queue_stalled",
                "1 while this node cannot take dispatches from the queue (see the warning in its log)",
                Family::default(),
            ),
            queue_stalls: r.add(
                "queue_stalls",
                "Times this node stopped being able to take dispatches",
                Family::default(),
            ),
            dead_letters_dropped: r.add(
                "dead_letters_dropped",
                "Dead letters removed by a limit of the dead-letter store (age or bytes)",
                Family::default(),
            ),
            in_flight: r.add("invocations_in_flight", "Invocations running now", Gauge::default()),
            host_errors: r.add("host_errors", host, Counter::default()),
            handlers: r.add("handlers", "Handler files loaded and serving", Gauge::default()),
            pool_idle: r.add(
                "pool_instances_idle",
                "Instances kept warm for reuse (they hold pool slots)",
                Gauge::default(),
            ),
            pool_running: r.add(
                "pool_instances_running",
                "Instances running now (each holds a pool slot; a quarter of the pool is kept for warm ones)",
                Gauge::default(),
            ),
            series: RwLock::default(),
            registry: r,
        }
    }

    /// An invocation starts; the guard counts it in flight until dropped.
    pub fn start(&self) -> InFlight<'_> {
        self.in_flight.inc();
        InFlight(&self.in_flight)
    }

    /// Records the outcome of one delivery of the name of `series` (found
    /// once, see [`Metrics::series`]): `attempt` as the envelope said.
    pub fn record_in(
        &self,
        series: &Series,
        mode: Mode,
        attempt: u32,
        elapsed: Duration,
        result: Result<(), &Failure>,
    ) {
        let name = series.name.as_str();
        let named = || Name { name: name.to_string() };
        series.invocations[mode as usize]
            .get_or_init(|| {
                self.invocations.get_or_create_owned(&Invocation { name: name.into(), mode: mode.as_str() })
            })
            .inc();
        series.latency.get_or_init(|| self.latency.get_or_create_owned(&named())).observe(elapsed);
        if mode == Mode::Dispatch && attempt > 1 {
            series.retries.get_or_init(|| self.retries.get_or_create_owned(&named())).inc();
        }
        if let Err(failure) = result {
            let class = failure.class;
            let at = FailureClass::ALL.iter().position(|c| *c == class).unwrap_or(0);
            series.errors[at]
                .get_or_init(|| self.errors.get_or_create_owned(&Error { name: name.into(), class: class.as_str() }))
                .inc();
        }
    }

    /// Records a dispatch of `name` written to the dead letters (the
    /// driver that wrote it reports it).
    pub fn record_dead_letter(&self, name: &str) {
        let series = self.series(name);
        series.dead_letters.get_or_init(|| self.dead_letters.get_or_create_owned(&Name { name: name.into() })).inc();
    }

    /// Records how many dispatches of `name` wait in its durable queue.
    pub fn set_queue_pending(&self, name: &str, pending: u64) {
        self.queue_pending.get_or_create(&Name { name: name.into() }).set(i64::try_from(pending).unwrap_or(i64::MAX));
    }

    /// Records that this node stopped (`true`) or resumed taking dispatches of `name`.
    pub fn set_queue_stalled(&self, name: &str, stalled: bool) {
        let named = Name { name: name.into() };
        self.queue_stalled.get_or_create(&named).set(i64::from(stalled));
        if stalled {
            self.queue_stalls.get_or_create(&named).inc();
        }
    }

    /// Records `count` dead letters of `name` removed by a limit of the dead-letter store.
    pub fn record_dead_letters_dropped(&self, name: &str, count: u64) {
        self.dead_letters_dropped.get_or_create(&Name { name: name.into() }).inc_by(count);
    }

    /// The series of `name`, created on first use.
    pub fn series(&self, name: &str) -> Arc<Series> {
        if let Some(series) = crate::sync::read(&self.series).get(name) {
            return series.clone();
        }
        crate::sync::write(&self.series)
            .entry(name.to_string())
            .or_insert_with(|| Arc::new(Series { name: name.to_string(), ..Series::default() }))
            .clone()
    }

    /// Records a host error on a delivery path (see [`crate::fault`]).
    pub fn record_host_error(&self) {
        self.host_errors.inc();
    }

    /// Records a reload: `applied` changes and `rejected` files.
    pub fn record_reloads(&self, applied: u64, rejected: u64) {
        self.reloads.get_or_create(&Reload { outcome: "applied" }).inc_by(applied);
        self.reloads.get_or_create(&Reload { outcome: "rejected" }).inc_by(rejected);
    }

    /// Changes applied and files rejected so far (what [`Metrics::record_reloads`] counted).
    pub fn reloads(&self) -> (u64, u64) {
        let count = |outcome| self.reloads.get_or_create(&Reload { outcome }).get();
        (count("applied"), count("rejected"))
    }

    /// Sets how many handler files are loaded.
    pub fn set_handlers(&self, n: usize) {
        self.handlers.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Sets how many pool instances wait warm for reuse and how many run.
    pub fn set_pool_use(&self, idle: usize, running: usize) {
        self.pool_idle.set(i64::try_from(idle).unwrap_or(i64::MAX));
        self.pool_running.set(i64::try_from(running).unwrap_or(i64::MAX));
    }

    /// The metrics in the Prometheus text exposition format (OpenMetrics 1.0).
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Registering a metric and keeping a handle to it (clones share values).
trait Add {
    /// Registers `metric` as `name` with `help`; returns it.
    fn add<M: prometheus_client::registry::Metric + Clone>(&mut self, name: &str, help: &str, metric: M) -> M;
}

impl Add for Registry {
    fn add<M: prometheus_client::registry::Metric + Clone>(&mut self, name: &str, help: &str, metric: M) -> M {
        self.register(name, help, metric.clone());
        metric
    }
}

/// Counts one invocation in flight while it lives.
pub struct InFlight<'a>(&'a Gauge);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_known_workload_renders_as_counted() {
        let m = Metrics::new(1000);
        let ms = Duration::from_millis(1);
        for _ in 0..3 {
            m.record_in(&m.series("echo"), Mode::Call, 1, ms, Ok(()));
        }
        let invalid = Failure::new(FailureClass::Invalid, "bad");
        let retry = Failure::new(FailureClass::Retry, "later");
        let order = m.series("order");
        m.record_in(&order, Mode::Dispatch, 1, ms, Err(&retry));
        m.record_in(&order, Mode::Dispatch, 2, ms, Err(&retry));
        m.record_in(&order, Mode::Dispatch, 1, ms, Err(&invalid));
        m.record_dead_letter("order");
        m.record_dead_letter("order");
        m.record_reloads(2, 1);
        let text = m.render();
        for line in [
            "busbar_invocations_total{name=\"echo\",mode=\"call\"} 3",
            "busbar_invocations_total{name=\"order\",mode=\"dispatch\"} 3",
            "busbar_errors_total{name=\"order\",class=\"retry\"} 2",
            "busbar_errors_total{name=\"order\",class=\"invalid\"} 1",
            "busbar_retries_total{name=\"order\"} 1",
            "busbar_dead_letters_total{name=\"order\"} 2",
            "busbar_invocation_duration_seconds_count{name=\"echo\"} 3",
            "busbar_invocation_duration_seconds_sum{name=\"echo\"} 0.003",
            "busbar_invocation_duration_seconds_bucket{le=\"0.0008\",name=\"echo\"} 0",
            "busbar_invocation_duration_seconds_bucket{le=\"0.0016\",name=\"echo\"} 3",
            "busbar_invocation_duration_seconds_bucket{le=\"+Inf\",name=\"echo\"} 3",
            "busbar_reloads_total{outcome=\"applied\"} 2",
            "busbar_pool_instances 1000",
        ] {
            assert!(text.lines().any(|l| l == line), "missing `{line}` in\n{text}");
        }
    }

    #[test]
    fn in_flight_counts_live_guards() {
        let m = Metrics::new(1);
        let a = m.start();
        let b = m.start();
        assert!(m.render().contains("busbar_invocations_in_flight 2"));
        drop((a, b));
        assert!(m.render().contains("busbar_invocations_in_flight 0"));
    }
}
