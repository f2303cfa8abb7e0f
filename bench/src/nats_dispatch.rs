//! Benchmark 5: durable dispatch over NATS JetStream. A busbar client node
//! dispatches jobs to a busbar node serving the wasm `echo` guest, against a
//! native async-nats publisher and consume-and-ack loop on a stream with the
//! same settings — and, for information, the native pair doing busbar's work
//! (de-duplication header, a task per job, a fresh wasm instance per job).
//!
//! Every contender gets a fresh `nats-server` in every round, so backlogs and
//! stores never mix. One measurement runs from the first publish of N jobs
//! to the moment the consumer side has handled all N (busbar: the serving
//! node's `local_stats`; native: a counter bumped after each ack), polled
//! every [`POLL`]. The publishers are P tasks pulling job numbers from a
//! shared counter, each awaiting its publish ack before the next publish (an
//! ack window of P).

use crate::floor::Floor;
use async_nats::jetstream::consumer::{AckPolicy, PullConsumer, pull};
use async_nats::jetstream::stream::{self, RetentionPolicy, StorageType};
use busbar::Node;
use busbar::runtime::RuntimeOptions;
use busbar_tests::nats::NatsServer;
use busbar_tests::support::{Folder, guest, nats_client, served, start_nats};
use bytes::Bytes;
use futures_util::StreamExt;
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The payload size.
pub const PAYLOAD: usize = 1024;
/// How often the consumer side's progress is read.
pub const POLL: Duration = Duration::from_millis(2);
/// How long one measurement may take before the benchmark gives up.
const LIMIT: Duration = Duration::from_secs(120);
/// The native stream and subject: busbar's `SHOP_QUEUE` settings.
const NATIVE_STREAM: &str = "NATIVE_QUEUE";
const NATIVE_SUBJECT: &str = "queue.native.echo";
/// busbar's ack wait for `echo`: its 5 s timeout + 5 s margin.
const ACK_WAIT: Duration = Duration::from_secs(10);
/// busbar's default handler timeout (the floor's epoch deadline).
const TIMEOUT: Duration = Duration::from_secs(5);

/// Sizes of one run.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Measured jobs per contender and round.
    pub jobs: usize,
    /// Unmeasured jobs handled first on every fresh set-up.
    pub warmup: usize,
    /// Concurrent publisher tasks (the ack window).
    pub publishers: usize,
    /// Rounds (each with a fresh server per contender).
    pub rounds: usize,
}

/// Who publishes and consumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `Node::dispatch` → a busbar node running the wasm `echo`.
    Busbar,
    /// The same, `echo` with `reuse = 1000` in its sidecar.
    BusbarReused,
    /// `jetstream::Context::publish` → a native consume-and-ack loop.
    Native,
    /// The native contender doing the work busbar does: a `Nats-Msg-Id` (and
    /// `Busbar-Dispatch-Id`) header on every publish, a task per job, and
    /// `echo` run on benchmark 1's raw-wasmtime floor before the ack.
    NativeBusbarWork,
    /// `Node::dispatch` on the `default` driver with a state directory:
    /// each job stored in SQLite before `dispatch` returns.
    DefaultDurable,
    /// The same, in memory only (`[node] state = ""`).
    DefaultMemory,
}

impl Kind {
    /// Every contender, in table order.
    pub const ALL: [Kind; 6] = [
        Kind::Busbar,
        Kind::BusbarReused,
        Kind::Native,
        Kind::NativeBusbarWork,
        Kind::DefaultDurable,
        Kind::DefaultMemory,
    ];

    /// Whether busbar publishes and consumes over NATS.
    fn is_busbar(self) -> bool {
        matches!(self, Kind::Busbar | Kind::BusbarReused)
    }

    /// Whether busbar dispatches on the in-process `default` driver.
    fn is_local(self) -> bool {
        matches!(self, Kind::DefaultDurable | Kind::DefaultMemory)
    }

    /// Its name in the table.
    pub fn label(self) -> &'static str {
        match self {
            Kind::Busbar => "busbar (`Node::dispatch` → wasm `echo`, fresh instance: the default)",
            Kind::BusbarReused => "busbar (`Node::dispatch` → wasm `echo`, `reuse = 1000`)",
            Kind::Native => "native async-nats (publish → consume + ack)",
            Kind::NativeBusbarWork => "native + busbar's work: msg id, task per job, raw-wasmtime `echo` (info)",
            Kind::DefaultDurable => "busbar, `default` driver, durable (SQLite state; no NATS)",
            Kind::DefaultMemory => "busbar, `default` driver, in memory (`state = \"\"`; no NATS)",
        }
    }
}

/// The totals of one contender over all rounds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Totals {
    /// Jobs measured.
    pub jobs: usize,
    /// Summed time from first publish to the last job handled.
    pub wall: Duration,
    /// Summed time from first publish to the last publish ack.
    pub publish_wall: Duration,
    /// Fastest and slowest round, jobs/s.
    pub best: f64,
    /// Slowest round, jobs/s.
    pub worst: f64,
}

impl Totals {
    /// Jobs handled per second.
    pub fn per_sec(&self) -> f64 {
        self.jobs as f64 / self.wall.as_secs_f64().max(f64::MIN_POSITIVE)
    }
    /// Jobs published (acked by JetStream) per second.
    pub fn published_per_sec(&self) -> f64 {
        self.jobs as f64 / self.publish_wall.as_secs_f64().max(f64::MIN_POSITIVE)
    }
    fn add(&mut self, jobs: usize, wall: Duration, publish_wall: Duration) {
        let rate = jobs as f64 / wall.as_secs_f64();
        self.best = if self.jobs == 0 { rate } else { self.best.max(rate) };
        self.worst = if self.jobs == 0 { rate } else { self.worst.min(rate) };
        self.jobs += jobs;
        self.wall += wall;
        self.publish_wall += publish_wall;
    }
}

/// One contender's set-up on its own server.
#[allow(clippy::large_enum_variant, reason = "one per measurement")]
enum Setup {
    Busbar {
        worker: Node,
        client: Node,
        _folder: Folder,
    },
    Local {
        worker: Node,
        client: Node,
        _folder: Folder,
        _state: tempfile::TempDir,
    },
    Native {
        js: async_nats::jetstream::Context,
        /// Whether publishes carry busbar's de-duplication headers.
        msg_id: bool,
        handled: Arc<AtomicU64>,
        consumer: tokio::task::JoinHandle<()>,
    },
}

impl Setup {
    async fn start(kind: Kind, server: &NatsServer, floor: &Arc<Floor>) -> anyhow::Result<Self> {
        let url = server.url();
        if kind.is_local() {
            let folder = Folder::with(&["echo"]);
            let state = tempfile::tempdir()?;
            let hub = match kind {
                Kind::DefaultDurable => busbar::driver::default::DefaultDriver::durable(state.path())?,
                _ => busbar::driver::default::DefaultDriver::new(),
            };
            let (worker, report) = busbar_tests::support::start_on(&hub, &folder, "").await;
            anyhow::ensure!(report.loaded.len() == 1, "echo did not load: {:?}", report.skipped);
            let config = busbar::Config::parse("", std::path::Path::new("bench.toml"))?;
            let (client, _) = busbar::NodeBuilder::new(config)
                .runtime(busbar_tests::support::runtime())
                .hub(hub)
                .client()
                .start()
                .await?;
            return Ok(Setup::Local { worker, client, _folder: folder, _state: state });
        }
        if kind.is_busbar() {
            let folder = Folder::with(&["echo"]);
            if kind == Kind::BusbarReused {
                folder.sidecar("echo", crate::nats_call::REUSE_SIDECAR);
            }
            let (worker, report) = start_nats(&url, &folder, "bench-worker", "", "").await;
            anyhow::ensure!(report.loaded.len() == 1, "echo did not load: {:?}", report.skipped);
            let client = nats_client(&url).await;
            return Ok(Setup::Busbar { worker, client, _folder: folder });
        }
        // The consumer has its own connection, as busbar's worker has.
        let consumer_js = async_nats::jetstream::new(server.client().await);
        let stream = consumer_js
            .get_or_create_stream(stream::Config {
                name: NATIVE_STREAM.into(),
                subjects: vec!["queue.native.>".into()],
                retention: RetentionPolicy::WorkQueue,
                storage: StorageType::File,
                ..Default::default()
            })
            .await?;
        let consumer: PullConsumer = stream
            .get_or_create_consumer(
                "native_echo",
                pull::Config {
                    durable_name: Some("native_echo".into()),
                    filter_subject: NATIVE_SUBJECT.into(),
                    ack_policy: AckPolicy::Explicit,
                    ack_wait: ACK_WAIT,
                    max_deliver: -1,
                    ..Default::default()
                },
            )
            .await?;
        let mut messages = consumer.messages().await?;
        let handled = Arc::new(AtomicU64::new(0));
        let count = handled.clone();
        let busbar_work = kind == Kind::NativeBusbarWork;
        let floor = floor.clone();
        let consumer = tokio::spawn(async move {
            while let Some(next) = messages.next().await {
                let Ok(msg) = next else { continue };
                if busbar_work {
                    // As busbar: a task per job running `echo` in a fresh instance.
                    let (count, floor) = (count.clone(), floor.clone());
                    tokio::spawn(async move {
                        if black_box(floor.call("echo", &msg.payload).await).is_ok() && msg.ack().await.is_ok() {
                            count.fetch_add(1, Ordering::Relaxed);
                        }
                    });
                } else {
                    // Inline: handle (copy the payload), ack, count; one job at a time.
                    drop(black_box(msg.payload.to_vec()));
                    if msg.ack().await.is_ok() {
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        });
        let js = async_nats::jetstream::new(server.client().await);
        Ok(Setup::Native { js, msg_id: busbar_work, handled, consumer })
    }

    /// Publishes one job and waits for JetStream's ack.
    async fn publish(&self, payload: &Bytes) -> Result<(), String> {
        match self {
            Setup::Busbar { client, .. } | Setup::Local { client, .. } => {
                client.dispatch("echo", payload.to_vec()).await.map(drop).map_err(|f| f.to_string())
            }
            Setup::Native { js, msg_id, .. } => {
                let ack = if *msg_id {
                    // A unique 22-character id, as long as busbar's NUID.
                    static NEXT: AtomicU64 = AtomicU64::new(0);
                    let id = format!("BENCH{:017}", NEXT.fetch_add(1, Ordering::Relaxed));
                    let mut map = async_nats::HeaderMap::new();
                    map.insert("Nats-Msg-Id", id.as_str());
                    map.insert("Busbar-Dispatch-Id", id.as_str());
                    js.publish_with_headers(NATIVE_SUBJECT, map, payload.clone()).await
                } else {
                    js.publish(NATIVE_SUBJECT, payload.clone()).await
                }
                .map_err(|e| e.to_string())?;
                ack.await.map(drop).map_err(|e| e.to_string())
            }
        }
    }

    /// Jobs handled so far.
    fn handled(&self) -> u64 {
        match self {
            Setup::Busbar { worker, .. } | Setup::Local { worker, .. } => served(worker, "echo"),
            Setup::Native { handled, .. } => handled.load(Ordering::Relaxed),
        }
    }

    /// The failures the consumer side saw (busbar's error counter).
    fn errors(&self) -> u64 {
        match self {
            Setup::Busbar { worker, .. } | Setup::Local { worker, .. } => {
                worker.local_stats().iter().find(|s| s.name == "echo").map_or(0, |s| s.errors)
            }
            Setup::Native { .. } => 0,
        }
    }

    async fn stop(self) {
        match self {
            Setup::Busbar { worker, client, .. } | Setup::Local { worker, client, .. } => {
                client.stop().await;
                worker.stop().await;
            }
            Setup::Native { consumer, .. } => consumer.abort(),
        }
    }
}

/// Publishes `jobs` jobs from `publishers` tasks and waits until the consumer
/// side has handled `target` in all; returns (time to handled, time to the
/// last publish ack).
async fn load(setup: &Arc<Setup>, publishers: usize, jobs: usize, target: u64) -> anyhow::Result<(Duration, Duration)> {
    let next = Arc::new(AtomicUsize::new(0));
    let payload: Bytes = (0..PAYLOAD).map(|i| i as u8).collect::<Vec<u8>>().into();
    let start = Instant::now();
    let tasks: Vec<_> = (0..publishers)
        .map(|_| {
            let (setup, next, payload) = (setup.clone(), next.clone(), payload.clone());
            tokio::spawn(async move {
                while next.fetch_add(1, Ordering::Relaxed) < jobs {
                    setup.publish(&payload).await?;
                }
                Ok::<_, String>(Instant::now())
            })
        })
        .collect();
    loop {
        if setup.handled() >= target {
            break;
        }
        anyhow::ensure!(start.elapsed() < LIMIT, "only {} of {target} jobs handled after {LIMIT:?}", setup.handled());
        tokio::time::sleep(POLL).await;
    }
    let handled = start.elapsed();
    let mut last_ack = start;
    for t in tasks {
        let acked = t.await?.map_err(|e| anyhow::anyhow!("a publish failed: {e}"))?;
        last_ack = last_ack.max(acked);
    }
    Ok((handled, last_ack - start))
}

/// Waits until the work-queue stream on `server` is empty (every ack recorded).
async fn drained(server: &NatsServer, stream: &str) -> anyhow::Result<()> {
    let js = async_nats::jetstream::new(server.client().await);
    let mut stream = js.get_stream(stream).await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = stream.info().await?.state.messages;
        if left == 0 {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "{left} messages still in the work queue");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One measurement of `kind` on a fresh server: warm-up, then `plan.jobs`.
async fn once(kind: Kind, plan: Plan, floor: &Arc<Floor>) -> anyhow::Result<(Duration, Duration)> {
    let server = NatsServer::start();
    let setup = Arc::new(Setup::start(kind, &server, floor).await?);
    load(&setup, plan.publishers, plan.warmup, plan.warmup as u64).await?;
    let timed = load(&setup, plan.publishers, plan.jobs, (plan.warmup + plan.jobs) as u64).await?;
    anyhow::ensure!(setup.errors() == 0, "{}: {} jobs failed", kind.label(), setup.errors());
    if !kind.is_local() {
        drained(&server, if kind.is_busbar() { "SHOP_QUEUE" } else { NATIVE_STREAM }).await?;
    }
    anyhow::ensure!(
        setup.handled() == (plan.warmup + plan.jobs) as u64,
        "{}: {} jobs handled, expected {}",
        kind.label(),
        setup.handled(),
        plan.warmup + plan.jobs
    );
    match Arc::try_unwrap(setup) {
        Ok(setup) => setup.stop().await,
        Err(_) => anyhow::bail!("a publisher still holds the set-up"),
    }
    drop(server);
    Ok(timed)
}

/// The raw-wasmtime `echo` of [`Kind::NativeBusbarWork`].
fn floor() -> anyhow::Result<Arc<Floor>> {
    Ok(Arc::new(Floor::new(&RuntimeOptions::default(), &guest("echo"), TIMEOUT)?))
}

/// Measures every contender under `plan`, interleaved, order rotating every
/// round; totals in [`Kind::ALL`] order.
pub async fn measure(plan: Plan) -> anyhow::Result<[Totals; 6]> {
    let floor = floor()?;
    let kinds = Kind::ALL;
    let mut totals = [Totals::default(); 6];
    for round in 0..plan.rounds {
        for k in 0..kinds.len() {
            let i = (k + round) % kinds.len();
            let (wall, publish_wall) = once(kinds[i], plan, &floor).await?;
            eprintln!(
                "bench:    round {}: {:<44} {:>8.0} jobs/s (published in {:?})",
                round + 1,
                kinds[i].label(),
                plan.jobs as f64 / wall.as_secs_f64(),
                publish_wall
            );
            totals[i].add(plan.jobs, wall, publish_wall);
        }
    }
    Ok(totals)
}

/// Runs only `who` (`busbar`, `busbar-reused`, `native` or `native-work`) once for `jobs` jobs with the
/// publishers of `plan` and prints its rate: a target for `perf record`.
pub async fn profile(who: &str, jobs: usize, plan: Plan) -> anyhow::Result<()> {
    let kind = match who {
        "busbar" => Kind::Busbar,
        "busbar-reused" => Kind::BusbarReused,
        "native" => Kind::Native,
        "native-work" => Kind::NativeBusbarWork,
        "default-durable" => Kind::DefaultDurable,
        "default-memory" => Kind::DefaultMemory,
        _ => anyhow::bail!(
            "--profile nats-dispatch-busbar|busbar-reused|native|native-work|default-durable|default-memory [JOBS]"
        ),
    };
    let (wall, publish_wall) = once(kind, Plan { jobs, ..plan }, &floor()?).await?;
    println!(
        "{}: {jobs} jobs, {:.0} jobs/s, published in {publish_wall:?}",
        kind.label(),
        jobs as f64 / wall.as_secs_f64()
    );
    Ok(())
}
