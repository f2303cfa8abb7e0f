//! Benchmark 1: in-process `call` of `echo` with a 1 KiB payload, a fresh
//! instance per call, against the raw-wasmtime floor and a native fn.
//!
//! Load shape (the same for every contender): C caller tasks on the caller's
//! tokio runtime (2 worker threads) pull call numbers from a shared counter
//! until N calls are done; each call's latency is the time around its
//! `.await`. Contenders are interleaved in rounds (order rotating every
//! round) so that the noise of a shared machine spreads over all of them.

use crate::floor::Floor;
use crate::stats::Summary;
use busbar::driver::default::DefaultDriver;
use busbar::runtime::{Runtime, RuntimeOptions};
use busbar::{Config, Node, NodeBuilder};
use busbar_tests::support::{Folder, guest};
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The payload size.
pub const PAYLOAD: usize = 1024;
/// Per-call timeout given to busbar (and, as an epoch deadline, to the floor).
const TIMEOUT: Duration = Duration::from_secs(5);

/// Sizes of one run.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Concurrent caller tasks.
    pub concurrency: usize,
    /// Measured calls per contender (after the warm-up).
    pub calls: usize,
    /// Warm-up calls per contender.
    pub warmup: usize,
    /// Rounds the measured calls are split into.
    pub rounds: usize,
}

/// One way of answering a call.
pub enum Contender {
    /// `busbar::Node::call` on a private in-process hub.
    Busbar(Node),
    /// The raw-wasmtime harness.
    Floor(Floor),
    /// A native async fn that copies the payload.
    Native,
    /// The floor with busbar's limits on (benchmark 7).
    LimitsOn(Floor),
    /// The floor with no limits and epoch interruption off (benchmark 7).
    LimitsOff(Floor),
}

impl Contender {
    /// Its name in the table.
    pub fn label(&self) -> &'static str {
        match self {
            Contender::Busbar(_) => "busbar `Node::call`",
            Contender::Floor(_) => "floor (raw wasmtime)",
            Contender::Native => "native Rust fn",
            Contender::LimitsOn(_) => "raw wasmtime, limits on (limiter, epoch callback, timer)",
            Contender::LimitsOff(_) => "raw wasmtime, limits off (no epoch interruption)",
        }
    }

    async fn call(&self, payload: Vec<u8>) -> Vec<u8> {
        let reply = match self {
            Contender::Busbar(node) => node.call("echo", payload, TIMEOUT).await.map_err(|f| f.to_string()),
            Contender::Floor(floor) => floor.call("echo", &payload).await.map_err(|e| format!("{e:#}")),
            Contender::Native => Ok(native_echo(&payload).await),
            Contender::LimitsOn(floor) => floor.call_limited("echo", &payload).await.map_err(|e| format!("{e:#}")),
            Contender::LimitsOff(floor) => floor.call("echo", &payload).await.map_err(|e| format!("{e:#}")),
        };
        match reply {
            Ok(reply) => reply,
            Err(e) => panic!("a call failed: {e}"),
        }
    }
}

/// What a native handler costs: the reply is a copy of the payload.
#[inline(never)]
async fn native_echo(payload: &[u8]) -> Vec<u8> {
    black_box(payload).to_vec()
}

/// The three contenders, ready to call `echo`, with engines configured by
/// `options` (busbar's defaults in the benchmark). The busbar node must be
/// stopped with [`stop`] when done.
pub async fn contenders(options: &RuntimeOptions) -> anyhow::Result<(Vec<Arc<Contender>>, Folder)> {
    let folder = Folder::with(&["echo"]);
    let mut config = Config::default();
    config.node.handlers = folder.path().to_path_buf();
    config.node.cache = None;
    let runtime = Arc::new(Runtime::new(options)?);
    let (node, report) = NodeBuilder::new(config).runtime(runtime).hub(DefaultDriver::new()).start().await?;
    anyhow::ensure!(report.loaded.len() == 1, "echo did not load: {:?}", report.skipped);
    let floor = Floor::new(options, &guest("echo"), TIMEOUT)?;
    let contenders =
        vec![Arc::new(Contender::Busbar(node)), Arc::new(Contender::Floor(floor)), Arc::new(Contender::Native)];
    let payload: Vec<u8> = (0..PAYLOAD).map(|i| i as u8).collect();
    for c in &contenders {
        anyhow::ensure!(c.call(payload.clone()).await == payload, "{} does not echo", c.label());
    }
    Ok((contenders, folder))
}

/// Benchmark 7's contenders: `echo` on the floor with limits on and off.
pub async fn limits_contenders(options: &RuntimeOptions) -> anyhow::Result<Vec<Arc<Contender>>> {
    let contenders = vec![
        Arc::new(Contender::LimitsOn(Floor::new(options, &guest("echo"), TIMEOUT)?)),
        Arc::new(Contender::LimitsOff(Floor::unlimited(options, &guest("echo"))?)),
    ];
    let payload: Vec<u8> = (0..PAYLOAD).map(|i| i as u8).collect();
    for c in &contenders {
        anyhow::ensure!(c.call(payload.clone()).await == payload, "{} does not echo", c.label());
    }
    Ok(contenders)
}

/// Stops the busbar node (it holds the engine's pool otherwise).
pub async fn stop(contenders: Vec<Arc<Contender>>) {
    for c in contenders {
        if let Contender::Busbar(node) = &*c {
            node.stop().await;
        }
    }
}

/// Runs `calls` calls on `contender` from `concurrency` tasks; returns each
/// call's latency in nanoseconds and the wall time of the batch.
async fn batch(contender: &Arc<Contender>, concurrency: usize, calls: usize) -> (Vec<u64>, Duration) {
    let next = Arc::new(AtomicUsize::new(0));
    let payload: Arc<[u8]> = (0..PAYLOAD).map(|i| i as u8).collect();
    let start = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (contender, next, payload) = (contender.clone(), next.clone(), payload.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(calls / concurrency + 1);
                while next.fetch_add(1, Ordering::Relaxed) < calls {
                    let input = payload.to_vec();
                    let t = Instant::now();
                    let reply = contender.call(input).await;
                    latencies.push(t.elapsed().as_nanos() as u64);
                    assert_eq!(reply.len(), PAYLOAD);
                    drop(black_box(reply));
                }
                latencies
            })
        })
        .collect();
    let mut all = Vec::with_capacity(calls);
    for t in tasks {
        all.extend(t.await.unwrap_or_else(|e| panic!("a caller task panicked: {e}")));
    }
    (all, start.elapsed())
}

/// Measures every contender under `plan`; summaries in `contenders` order.
pub async fn measure(contenders: &[Arc<Contender>], plan: Plan) -> Vec<Summary> {
    crate::stats::interleaved(contenders, plan.warmup, plan.calls, plan.rounds, async |c, n| {
        batch(c, plan.concurrency, n).await
    })
    .await
}

/// Runs only `who` (`busbar`, `floor` or `native`) for `calls` calls at C = 2
/// and prints its summary: a target for `perf record` or callgrind. With
/// `small_pool`, both engines get a pool of 2 instances of at most 64 MiB
/// (valgrind cannot map the default pool's terabytes of address space).
pub async fn profile(who: &str, calls: usize, small_pool: bool) -> anyhow::Result<()> {
    let mut options = RuntimeOptions::default();
    if small_pool {
        options.max_instances = 2;
        options.max_memory = 64 << 20;
    }
    let (contenders, _folder) = contenders(&options).await?;
    let i = ["busbar", "floor", "native"]
        .iter()
        .position(|n| *n == who)
        .ok_or_else(|| anyhow::anyhow!("--profile busbar|floor|native [CALLS]"))?;
    let (latencies, wall) = batch(&contenders[i], 2, calls).await;
    let s = Summary::of(latencies, wall);
    println!("{}: {calls} calls, p50 {:?}, p99 {:?}, {:.0} calls/s", contenders[i].label(), s.p50, s.p99, s.per_sec);
    stop(contenders).await;
    Ok(())
}
