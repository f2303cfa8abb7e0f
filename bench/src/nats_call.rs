//! Benchmark 4: `call` of `echo` over NATS (1 KiB payload): a busbar node
//! serving the wasm `echo` guest against a native async-nats echo responder,
//! on one `nats-server` started by the benchmark.
//!
//! Load shape (the same for every contender): C requester tasks share one
//! async-nats client and pull request numbers from a shared counter until N
//! requests are done; each request's latency is the time around its
//! `.await`. Contenders are interleaved in rounds (order rotating every
//! round), as in benchmark 1.
//!
//! busbar runs twice on the same node: `echo` with a fresh instance per
//! request (the default) and `echo-reused`, the same file with `reuse = 1000`
//! in its sidecar (an instance serves up to 1,001 requests).
//!
//! For information, the same load also goes to busbar through a busbar
//! client node (`Node::call`), and to native responders that answer by
//! running `echo` on benchmark 1's raw-wasmtime floor, with a fresh
//! instance per request (busbar's wasm work) or a reused one.

use crate::floor::Floor;
use crate::stats::Summary;
use async_nats::Client;
use busbar::Node;
use busbar::runtime::RuntimeOptions;
use busbar_tests::nats::NatsServer;
use busbar_tests::support::{Folder, guest, nats_client, start_nats};
use bytes::Bytes;
use futures_util::StreamExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The payload size.
pub const PAYLOAD: usize = 1024;
/// Per-request timeout.
const TIMEOUT: Duration = Duration::from_secs(5);
/// The subject of busbar's `echo` (project `shop`, see `support::nats_config`).
const BUSBAR_SUBJECT: &str = "call.shop.echo";
/// The subject of busbar's `echo-reused` (`echo` with `reuse = 1000`).
const REUSED_SUBJECT: &str = "call.shop.echo-reused";
/// The sidecar of `echo-reused`.
pub const REUSE_SIDECAR: &str = "reuse = 1000\n";
/// The subject of the native responder.
const NATIVE_SUBJECT: &str = "native.echo";
/// The subject of the native responder that runs the raw-wasmtime floor.
const FLOOR_SUBJECT: &str = "native.floor";
/// The subject of the native responder that runs the floor, reusing instances.
const REUSE_SUBJECT: &str = "native.floor-reused";

/// Sizes of one run.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Concurrent requester tasks.
    pub concurrency: usize,
    /// Measured requests per contender (after the warm-up).
    pub requests: usize,
    /// Warm-up requests per contender.
    pub warmup: usize,
    /// Rounds the measured requests are split into.
    pub rounds: usize,
}

/// One way of sending a request and getting the echo back.
pub enum Contender {
    /// A plain async-nats request to busbar's `call.shop.echo`.
    Busbar(Client),
    /// The same to `call.shop.echo-reused` (instances reused).
    BusbarReused(Client),
    /// A plain async-nats request to the native responder.
    Native(Client),
    /// `Node::call("echo")` from a busbar client node (busbar on both ends).
    BusbarClient(Node),
    /// A plain request to a native responder that answers by running `echo`
    /// on benchmark 1's raw-wasmtime floor (the wasm work busbar does).
    NativeFloor(Client),
    /// The same, with instances reused across requests ([`Floor::call_reused`]).
    NativeFloorReused(Client),
}

impl Contender {
    /// Its name in the table.
    pub fn label(&self) -> &'static str {
        match self {
            Contender::Busbar(_) => "busbar node (wasm `echo`, fresh instance: the default)",
            Contender::BusbarReused(_) => "busbar node (wasm `echo`, `reuse = 1000`)",
            Contender::Native(_) => "native async-nats responder",
            Contender::BusbarClient(_) => "busbar node, called by `Node::call` (info)",
            Contender::NativeFloor(_) => "native responder + raw-wasmtime `echo`, fresh instance (info)",
            Contender::NativeFloorReused(_) => "native responder + raw-wasmtime `echo`, reused instance (info)",
        }
    }

    async fn try_call(&self, payload: Bytes) -> Result<Bytes, String> {
        match self {
            Contender::Busbar(client) => request(client, BUSBAR_SUBJECT, payload).await,
            Contender::BusbarReused(client) => request(client, REUSED_SUBJECT, payload).await,
            Contender::Native(client) => request(client, NATIVE_SUBJECT, payload).await,
            Contender::BusbarClient(node) => {
                node.call("echo", payload.to_vec(), TIMEOUT).await.map(Bytes::from).map_err(|f| f.to_string())
            }
            Contender::NativeFloor(client) => request(client, FLOOR_SUBJECT, payload).await,
            Contender::NativeFloorReused(client) => request(client, REUSE_SUBJECT, payload).await,
        }
    }

    async fn call(&self, payload: Bytes) -> Bytes {
        self.try_call(payload).await.unwrap_or_else(|e| panic!("{}: a request failed: {e}", self.label()))
    }
}

async fn request(client: &Client, subject: &'static str, payload: Bytes) -> Result<Bytes, String> {
    let request = async_nats::Request::new().payload(payload).timeout(Some(TIMEOUT));
    let reply = client.send_request(subject, request).await.map_err(|e| e.to_string())?;
    if reply.headers.as_ref().is_some_and(|h| h.get("Nats-Service-Error").is_some()) {
        return Err(format!("error reply: {:?}", reply.headers));
    }
    Ok(reply.payload)
}

/// Everything one run needs; dropped (after [`Setup::stop`]) at the end.
pub struct Setup {
    /// Measured contenders, in table order.
    pub contenders: Vec<Arc<Contender>>,
    node: Node,
    responders: Vec<tokio::task::JoinHandle<()>>,
    _folder: Folder,
    /// Dropped last: kills the server.
    _server: NatsServer,
}

/// How a native responder makes its reply.
#[derive(Clone)]
enum Work {
    /// The payload itself.
    Echo,
    /// `echo` on the floor, in a fresh instance.
    Floor(Arc<Floor>),
    /// `echo` on the floor, in a reused instance.
    FloorReused(Arc<Floor>),
}

/// A native echo service: a queue subscription on its own connection; a
/// task per message (as busbar does) publishes the reply (see [`Work`]) to
/// the reply subject.
async fn native_responder(
    client: Client,
    subject: &'static str,
    work: Work,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let mut sub = client.queue_subscribe(subject, "native".into()).await?;
    Ok(tokio::spawn(async move {
        while let Some(msg) = sub.next().await {
            let (client, work) = (client.clone(), work.clone());
            tokio::spawn(async move {
                let Some(reply) = msg.reply else { return };
                let body = match &work {
                    Work::Echo => Ok(msg.payload),
                    Work::Floor(floor) => floor.call("echo", &msg.payload).await.map(Bytes::from),
                    Work::FloorReused(floor) => floor.call_reused("echo", &msg.payload).await.map(Bytes::from),
                };
                // A failure gets no reply: the requester's timeout reports it.
                if let Ok(body) = body {
                    let _ = client.publish(reply, body).await;
                }
            });
        }
    }))
}

/// Starts the server, the busbar node, the native responder and the clients;
/// checks every contender echoes.
pub async fn setup() -> anyhow::Result<Setup> {
    let server = NatsServer::start();
    let url = server.url();
    let folder = Folder::with(&["echo"]);
    folder.add("echo", "echo-reused").sidecar("echo-reused", REUSE_SIDECAR);
    let (node, report) = start_nats(&url, &folder, "bench-echo", "", "").await;
    anyhow::ensure!(report.loaded.len() == 2, "echo did not load: {:?}", report.skipped);
    let floor = Arc::new(Floor::new(&RuntimeOptions::default(), &guest("echo"), TIMEOUT)?);
    let responders = vec![
        native_responder(server.client().await, NATIVE_SUBJECT, Work::Echo).await?,
        native_responder(server.client().await, FLOOR_SUBJECT, Work::Floor(floor.clone())).await?,
        native_responder(server.client().await, REUSE_SUBJECT, Work::FloorReused(floor)).await?,
    ];
    let requester = server.client().await;
    let caller = nats_client(&url).await;
    let contenders = vec![
        Arc::new(Contender::Busbar(requester.clone())),
        Arc::new(Contender::BusbarReused(requester.clone())),
        Arc::new(Contender::Native(requester.clone())),
        Arc::new(Contender::BusbarClient(caller)),
        Arc::new(Contender::NativeFloor(requester.clone())),
        Arc::new(Contender::NativeFloorReused(requester)),
    ];
    let payload = payload();
    for c in &contenders {
        // The subscriptions may reach the server a little after `subscribe`
        // returned (see NOTES-nats.md): retry until the first reply.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match c.try_call(payload.clone()).await {
                Ok(r) if r == payload => break,
                Ok(_) => anyhow::bail!("{} does not echo", c.label()),
                Err(e) if Instant::now() > deadline => anyhow::bail!("{} does not answer: {e}", c.label()),
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }
    Ok(Setup { contenders, node, responders, _folder: folder, _server: server })
}

impl Setup {
    /// Stops the nodes and the responder.
    pub async fn stop(self) {
        for c in &self.contenders {
            if let Contender::BusbarClient(node) = &**c {
                node.stop().await;
            }
        }
        self.node.stop().await;
        for r in self.responders {
            r.abort();
        }
    }
}

fn payload() -> Bytes {
    (0..PAYLOAD).map(|i| i as u8).collect::<Vec<u8>>().into()
}

/// Runs `requests` requests on `contender` from `concurrency` tasks; returns
/// each request's latency in nanoseconds and the wall time of the batch.
async fn batch(contender: &Arc<Contender>, concurrency: usize, requests: usize) -> (Vec<u64>, Duration) {
    let next = Arc::new(AtomicUsize::new(0));
    let payload = payload();
    let start = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (contender, next, payload) = (contender.clone(), next.clone(), payload.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(requests / concurrency + 1);
                while next.fetch_add(1, Ordering::Relaxed) < requests {
                    let t = Instant::now();
                    let reply = contender.call(payload.clone()).await;
                    latencies.push(t.elapsed().as_nanos() as u64);
                    assert_eq!(reply.len(), PAYLOAD);
                }
                latencies
            })
        })
        .collect();
    let mut all = Vec::with_capacity(requests);
    for t in tasks {
        all.extend(t.await.unwrap_or_else(|e| panic!("a requester task panicked: {e}")));
    }
    (all, start.elapsed())
}

/// Measures every contender under `plan`; summaries in `contenders` order.
pub async fn measure(contenders: &[Arc<Contender>], plan: Plan) -> Vec<Summary> {
    crate::stats::interleaved(contenders, plan.warmup, plan.requests, plan.rounds, async |c, n| {
        batch(c, plan.concurrency, n).await
    })
    .await
}

/// Runs only `who` (`busbar`, `busbar-reused`, `native`, `busbar-client`, `native-floor` or
/// `native-floor-reused`) for `requests` requests with the
/// concurrency of `plan` and prints its summary: a target for `perf record`.
pub async fn profile(who: &str, requests: usize, plan: Plan) -> anyhow::Result<()> {
    let setup = setup().await?;
    let names = ["busbar", "busbar-reused", "native", "busbar-client", "native-floor", "native-floor-reused"];
    let i = names
        .iter()
        .position(|n| *n == who)
        .ok_or_else(|| anyhow::anyhow!("--profile nats-call-{} [REQUESTS]", names.join("|")))?;
    let c = &setup.contenders[i];
    batch(c, plan.concurrency, plan.warmup).await;
    let (latencies, wall) = batch(c, plan.concurrency, requests).await;
    let s = Summary::of(latencies, wall);
    println!("{}: {requests} requests, p50 {:?}, p99 {:?}, {:.0} req/s", c.label(), s.p50, s.p99, s.per_sec);
    setup.stop().await;
    Ok(())
}
