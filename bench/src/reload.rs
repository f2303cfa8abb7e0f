//! Benchmark 6: hot reload latency against restarting the node process.
//!
//! A node on NATS (in this process, with its own engine and an empty
//! artifact cache) watches a folder where `svc` is `echo`. Each swap writes
//! the next version to a hidden temporary file and renames it over
//! `svc.wasm`; the latency runs from the rename to the first reply that comes
//! from the new version, found by calling `call.shop.svc` back to back from a
//! plain NATS client. Versions alternate between `greet` (replies
//! `hello, x`) and `echo` (replies `x`), each made unique by a custom section,
//! so every version of the cold pass is compiled for the first time; the warm
//! pass puts the same versions back, now in the artifact cache.
//!
//! The baseline, in the same run: a `busbar run` process (this binary,
//! re-executed with `--as-busbar`) serving the same folder with the warm cache
//! under project `restart`; from its SIGTERM to the first reply of the new
//! process started in its place.

use crate::startup::with_custom_section;
use busbar_tests::nats::NatsServer;
use busbar_tests::support::{Folder, guest, nats_config};
use bytes::Bytes;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long one swap or restart may take before the benchmark gives up.
const LIMIT: Duration = Duration::from_secs(60);
const PAYLOAD: &[u8] = b"x";
const ECHO_REPLY: &[u8] = b"x";
const GREET_REPLY: &[u8] = b"hello, x";

/// Sizes of one run.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Swaps per pass (cold, then warm).
    pub swaps: usize,
    /// Process restarts.
    pub restarts: usize,
}

/// The measured latencies.
pub struct Results {
    /// Rename → first reply of the new version, compile cache cold.
    pub cold: Vec<Duration>,
    /// The same versions again, in the cache.
    pub warm: Vec<Duration>,
    /// SIGTERM of the old process → first reply of the new one.
    pub restart: Vec<Duration>,
    /// Of which: start of the new process → its first reply.
    pub start: Vec<Duration>,
}

/// Version `i` of `svc` and the reply that identifies it.
fn version(i: usize) -> anyhow::Result<(Vec<u8>, &'static [u8])> {
    let (name, reply) = if i.is_multiple_of(2) { ("greet", GREET_REPLY) } else { ("echo", ECHO_REPLY) };
    let bytes = std::fs::read(guest(name))?;
    Ok((with_custom_section(bytes, "busbar-bench-reload", format!("version {i}").as_bytes()), reply))
}

/// Calls `subject` back to back until the reply is `want`; returns when.
async fn first_reply(client: &async_nats::Client, subject: &str, want: &[u8]) -> anyhow::Result<Instant> {
    let deadline = Instant::now() + LIMIT;
    loop {
        let request = async_nats::Request::new().payload(Bytes::from_static(PAYLOAD)).timeout(Some(LIMIT));
        let reply = client.send_request(subject.to_string(), request).await;
        if reply.as_ref().is_ok_and(|r| r.payload.as_ref() == want) {
            return Ok(Instant::now());
        }
        anyhow::ensure!(Instant::now() < deadline, "no reply {want:?} from {subject} within {LIMIT:?}: {reply:?}");
        // Between a process's exit and its successor's subscriptions the
        // server answers "no responders" at once; do not spin on it.
        if reply.is_err() {
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
    }
}

/// Renames version `i` over `svc.wasm`; returns the time to its first reply.
async fn swap(folder: &Folder, client: &async_nats::Client, i: usize) -> anyhow::Result<Duration> {
    let (bytes, reply) = version(i)?;
    let temporary = folder.path().join(".svc.wasm.tmp");
    std::fs::write(&temporary, bytes)?;
    let renamed = Instant::now();
    std::fs::rename(&temporary, folder.path().join("svc.wasm"))?;
    Ok(first_reply(client, "call.shop.svc", reply).await? - renamed)
}

/// A folder serving `svc` as `echo`, beside the `echo` that `greet` calls.
fn svc_folder() -> Folder {
    let folder = Folder::with(&["echo"]);
    folder.add("echo", "svc");
    folder
}

/// Writes the config of a node on `url` for `project`, serving `folder` with
/// artifact cache `cache`; returns its path.
fn config_file(dir: &Path, url: &str, project: &str, folder: &Folder, cache: &Path) -> anyhow::Result<String> {
    let text =
        nats_config(url, project, "", "").replace("project = \"shop\"", &format!("project = \"{project}\"")).replace(
            "[node]\n",
            &format!("[node]\nhandlers = \"{}\"\ncache = \"{}\"\n", folder.path().display(), cache.display()),
        );
    let path = dir.join(format!("{project}.toml"));
    std::fs::write(&path, text)?;
    Ok(path.display().to_string())
}

fn spawn_node(config: &str) -> anyhow::Result<Child> {
    Ok(Command::new(std::env::current_exe()?)
        .args(["--as-busbar", "--config", config, "run"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()?)
}

/// Stops `child` with SIGTERM, as a service manager does, and waits for it.
fn terminate(child: &mut Child) -> anyhow::Result<()> {
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status()?;
    anyhow::ensure!(status.success(), "kill -TERM failed");
    child.wait()?;
    Ok(())
}

/// Runs the benchmark.
pub async fn measure(plan: Plan) -> anyhow::Result<Results> {
    let server = NatsServer::start();
    let url = server.url();
    let client = server.client().await;
    let cache = tempfile::tempdir()?;
    let configs = tempfile::tempdir()?;

    let folder = svc_folder();
    let mut config = busbar::Config::parse(&nats_config(&url, "bench-reload", "", ""), Path::new("bench.toml"))?;
    config.node.handlers = folder.path().to_path_buf();
    config.node.cache = Some(cache.path().to_path_buf());
    let runtime = Arc::new(busbar::runtime::Runtime::new(&busbar::node::runtime_options(&config))?);
    let (node, _) = busbar::NodeBuilder::new(config).runtime(runtime).watch(true).start().await?;
    first_reply(&client, "call.shop.svc", ECHO_REPLY).await?;
    let mut cold = Vec::new();
    for i in 0..plan.swaps {
        cold.push(swap(&folder, &client, i).await?);
    }
    let mut warm = Vec::new();
    for i in 0..plan.swaps {
        warm.push(swap(&folder, &client, i).await?);
    }
    node.stop().await;

    // The baseline serves the same kind of folder from the same (warm) cache.
    let restart_folder = svc_folder();
    let config = config_file(configs.path(), &url, "restart", &restart_folder, cache.path())?;
    let mut child = spawn_node(&config)?;
    first_reply(&client, "call.restart.svc", ECHO_REPLY).await?;
    let (mut restart, mut start) = (Vec::new(), Vec::new());
    for _ in 0..plan.restarts {
        let stopping = Instant::now();
        terminate(&mut child)?;
        let starting = Instant::now();
        child = spawn_node(&config)?;
        let answered = first_reply(&client, "call.restart.svc", ECHO_REPLY).await?;
        restart.push(answered - stopping);
        start.push(answered - starting);
    }
    terminate(&mut child)?;
    Ok(Results { cold, warm, restart, start })
}

/// The median and the maximum of `samples`.
pub fn p50_max(samples: &[Duration]) -> (Duration, Duration) {
    let mut sorted = samples.to_vec();
    sorted.sort();
    (sorted.get(sorted.len() / 2).copied().unwrap_or_default(), sorted.last().copied().unwrap_or_default())
}
