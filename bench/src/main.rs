//! `busbar-bench`: busbar's benchmarks, all in one run, printed as Markdown
//! (the tables of `BENCHMARKS.md`).
//!
//! ```text
//! cargo run --release -p busbar-bench -- [--quick] [--only call|startup|memory|nats-call|nats-dispatch|reload|limits|languages|nats-cluster|work]
//! ```
//!
//! `--quick` uses small counts (a CI smoke run, well under a minute).
//! For profilers: `--profile busbar|floor|native [CALLS] [--small-pool]`
//! runs one contender of benchmark 1 alone (`--small-pool` shrinks both
//! engines' pools so that valgrind can map them);
//! `--profile nats-call-busbar|native|busbar-client|native-floor|native-floor-reused [REQUESTS]`
//! and `--profile nats-dispatch-busbar|native|native-work|default-durable|default-memory [JOBS]` run one
//! contender of benchmark 4 or 5 alone.
//! Progress goes to stderr, the results to stdout. `--as-busbar ARGS…` runs
//! the `busbar` command line instead (benchmark 6 restarts it as a process).
//!
//! Each benchmark is a module with the same shape: build what it needs, run,
//! return numbers; `main` prints one section per benchmark with its targets.

mod call;
mod floor;
mod languages;
mod memory;
mod nats_call;
mod nats_cluster;
mod nats_dispatch;
mod reload;
mod startup;
mod stats;
mod timeouts;
mod work;

use stats::{micros, millis, thousands};
use std::fmt::Write as _;
use std::time::Duration;

/// Run sizes.
struct Sizes {
    quick: bool,
    /// Benchmark 1 plans, one per concurrency.
    call: Vec<call::Plan>,
    /// Benchmarks 2 and 3: handlers in the folder.
    handlers: usize,
    /// Benchmark 4.
    nats_call: nats_call::Plan,
    /// Benchmark 5.
    nats_dispatch: nats_dispatch::Plan,
    /// Benchmark 6.
    reload: reload::Plan,
    /// Benchmark 8.
    languages: languages::Plan,
    /// Benchmark 9.
    nats_cluster: nats_cluster::Plan,
    /// Benchmark 10.
    work: work::Plan,
}

impl Sizes {
    fn new(quick: bool) -> Self {
        let plan = |concurrency, calls, warmup, rounds| call::Plan { concurrency, calls, warmup, rounds };
        let nats_call = |requests, warmup, rounds| nats_call::Plan { concurrency: 32, requests, warmup, rounds };
        let nats_dispatch = |jobs, warmup, rounds| nats_dispatch::Plan { jobs, warmup, publishers: 32, rounds };
        if quick {
            Self {
                quick,
                call: vec![plan(2, 3_000, 300, 3), plan(16, 3_000, 300, 3)],
                handlers: 100,
                nats_call: nats_call(2_000, 200, 2),
                nats_dispatch: nats_dispatch(1_000, 100, 1),
                reload: reload::Plan { swaps: 6, restarts: 2 },
                languages: languages::Plan { calls: 30, warmup: 3 },
                nats_cluster: nats_cluster::Plan { jobs: 1_000, publishers: 32, kills: 1, backlog: 1_000 },
                work: work::Plan { calls: 100, warmup: 10 },
            }
        } else {
            Self {
                quick,
                call: vec![plan(2, 200_000, 5_000, 5), plan(16, 200_000, 5_000, 5)],
                handlers: 100,
                nats_call: nats_call(100_000, 5_000, 5),
                nats_dispatch: nats_dispatch(10_000, 500, 3),
                reload: reload::Plan { swaps: 50, restarts: 10 },
                languages: languages::Plan { calls: 1_000, warmup: 50 },
                nats_cluster: nats_cluster::Plan { jobs: 10_000, publishers: 32, kills: 5, backlog: 10_000 },
                work: work::Plan { calls: 3_000, warmup: 200 },
            }
        }
    }
}

/// A target line: what, the measured value, whether it is met.
struct Target {
    what: String,
    value: String,
    met: bool,
}

fn targets_table(out: &mut String, targets: &[Target]) {
    let _ = writeln!(out, "| target | measured | met |\n|---|---|---|");
    for t in targets {
        let _ = writeln!(out, "| {} | {} | {} |", t.what, t.value, if t.met { "yes" } else { "**no**" });
    }
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name").map(|m| m.trim_start_matches([' ', '\t', ':']).to_string()))
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("MemTotal:").map(|m| m.trim().to_string())))
        .and_then(|m| m.trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or_else(|| "? GiB".into(), |kib| format!("{:.1} GiB", kib as f64 / (1u64 << 20) as f64));
    let kernel =
        std::fs::read_to_string("/proc/sys/kernel/osrelease").map(|s| s.trim().to_string()).unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    format!("{cores} cores ({cpu}), {mem} RAM, Linux {kernel}")
}

/// The benchmarks `--only` selects.
const ONLY: &str = "call|startup|memory|nats-call|nats-dispatch|reload|limits|languages|nats-cluster|work";

fn main() -> anyhow::Result<std::process::ExitCode> {
    if std::env::args().nth(1).as_deref() == Some("--as-busbar") {
        let cli =
            busbar::cli::Cli::from_arguments(std::iter::once("busbar".to_string()).chain(std::env::args().skip(2)));
        busbar::cli::init_tracing(&cli);
        let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
        return Ok(rt.block_on(busbar::cli::main(cli)));
    }
    benchmarks().map(|()| std::process::ExitCode::SUCCESS)
}

fn benchmarks() -> anyhow::Result<()> {
    let mut quick = false;
    let mut only: Option<String> = None;
    let mut profile: Option<(String, usize)> = None;
    let mut small_pool = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => quick = true,
            "--only" => only = args.next(),
            "--small-pool" => small_pool = true,
            // For profilers: only `CONTENDER` (busbar, floor or native), CALLS calls at C = 2.
            "--profile" => {
                let who = args.next().unwrap_or_default();
                let calls = args.next().and_then(|n| n.parse().ok()).unwrap_or(20_000);
                profile = Some((who, calls));
            }
            "-h" | "--help" => {
                println!("usage: busbar-bench [--quick] [--only {ONLY}]");
                return Ok(());
            }
            other => {
                anyhow::bail!("unknown argument `{other}`; usage: busbar-bench [--quick] [--only {ONLY}]")
            }
        }
    }
    if let Some(o) = only.as_deref() {
        anyhow::ensure!(ONLY.split('|').any(|n| n == o), "unknown benchmark `{o}`; --only {ONLY}");
    }
    let run = |name: &str| only.as_deref().is_none_or(|o| o == name);
    let sizes = Sizes::new(quick);
    // The callers' runtime: exactly 2 worker threads, whatever the machine.
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;

    if let Some((who, calls)) = profile {
        if let Some(who) = who.strip_prefix("nats-call-") {
            return rt.block_on(nats_call::profile(who, calls, sizes.nats_call));
        }
        if let Some(who) = who.strip_prefix("nats-dispatch-") {
            return rt.block_on(nats_dispatch::profile(who, calls, sizes.nats_dispatch));
        }
        return rt.block_on(call::profile(&who, calls, small_pool));
    }

    let mut out = String::new();
    let _ = writeln!(out, "## Results ({} run)\n", if sizes.quick { "quick" } else { "full" });
    if cfg!(debug_assertions) {
        let _ =
            writeln!(out, "**Debug build: these numbers mean nothing; use `cargo run --release -p busbar-bench`.**\n");
    }
    let _ = writeln!(out, "Machine: {}.\n", machine());

    if run("call") {
        eprintln!("bench: 1. in-process call");
        rt.block_on(bench_call(&sizes, &mut out))?;
    }
    let handlers = sizes.handlers;
    let folder = startup::distinct_folder(handlers)?;
    let cache = tempfile::tempdir()?;
    if run("startup") {
        eprintln!("bench: 2. start-up with {handlers} handlers");
        rt.block_on(bench_startup(handlers, folder.path(), cache.path(), &mut out))?;
    }
    if run("memory") {
        eprintln!("bench: 3. idle RSS with {handlers} handlers");
        bench_memory(handlers, folder.path(), cache.path(), &mut out)?;
    }
    if run("nats-call") {
        eprintln!("bench: 4. call over NATS");
        rt.block_on(bench_nats_call(sizes.nats_call, &mut out))?;
    }
    if run("nats-dispatch") {
        eprintln!("bench: 5. dispatch over NATS JetStream");
        rt.block_on(bench_nats_dispatch(sizes.nats_dispatch, &mut out))?;
    }
    if run("limits") {
        eprintln!("bench: 7. the cost of the limits");
        rt.block_on(bench_limits(&sizes, &mut out))?;
    }
    if run("reload") {
        eprintln!("bench: 6. hot reload against a process restart");
        rt.block_on(bench_reload(sizes.reload, &mut out))?;
    }
    if run("languages") {
        eprintln!("bench: 8. one handler in four languages");
        rt.block_on(bench_languages(sizes.languages, &mut out))?;
    }
    if run("nats-cluster") {
        eprintln!("bench: 9. busbar on a 3-server NATS cluster");
        rt.block_on(bench_nats_cluster(sizes.nats_cluster, &mut out))?;
    }
    if run("work") {
        eprintln!("bench: 10. handlers that do real work");
        rt.block_on(bench_work(sizes.work, &mut out))?;
    }
    print!("{out}");
    Ok(())
}

async fn bench_work(plan: work::Plan, out: &mut String) -> anyhow::Result<()> {
    let _ = writeln!(
        out,
        "### 10. Handlers that do real work: key-value and outbound HTTP
"
    );
    let _ = writeln!(
        out,
        "One caller, {} sequential calls after {} warm-up calls, each row on one node: a plain call of `echo` against a call of `kvtool` doing one `get` and one `set` of bucket `b` (`getset`), or of `fetch` doing one GET of a loopback axum server over `wasi:http`. On NATS ({}) the calls go over NATS too. In parentheses: the work call relative to the plain one.\n",
        thousands(plan.calls as f64),
        thousands(plan.warmup as f64),
        nats_server()
    );
    let _ = writeln!(
        out,
        "| work per invocation | where | plain call p50 (µs) | work call p50 (µs) | p99 (µs) | added p50 (µs) |\n|---|---|---:|---:|---:|---:|"
    );
    let mut row = |what: &str, label: &str, r: &work::Row| {
        let ratio = r.work.p50.as_secs_f64() / r.plain.p50.as_secs_f64().max(f64::MIN_POSITIVE);
        let _ = writeln!(
            out,
            "| {what} | {label} | {} | {} ({ratio:.1}x) | {} | {} |",
            micros(r.plain.p50),
            micros(r.work.p50),
            micros(r.work.p99),
            micros(r.work.p50.saturating_sub(r.plain.p50)),
        );
    };
    for bus in work::Bus::ALL {
        eprintln!("bench:    key-value on {}", bus.label());
        let r = work::keyvalue(bus, plan).await?;
        row("one get + one set", bus.label(), &r);
    }
    eprintln!("bench:    outbound HTTP");
    let r = work::http(plan).await?;
    row("one HTTP GET (loopback)", "default driver", &r);
    out.push('\n');
    Ok(())
}

async fn bench_nats_cluster(plan: nats_cluster::Plan, out: &mut String) -> anyhow::Result<()> {
    let _ = writeln!(
        out,
        "### 9. busbar on a 3-server NATS cluster\n\n{}, loopback, one store per server.\n",
        nats_server()
    );
    let _ = writeln!(
        out,
        "Throughput: 3 serving nodes and a client node, {} jobs of {} B dispatched by {} publisher tasks (each awaits its ack), after 500 warm-up jobs; fresh servers per set-up.\n",
        thousands(plan.jobs as f64),
        nats_cluster::PAYLOAD,
        plan.publishers
    );
    let _ = writeln!(out, "| set-up | jobs/s | relative to one server |\n|---|---:|---:|");
    let mut single = 0.0;
    for bus in nats_cluster::Bus::ALL {
        eprintln!("bench:    {}", bus.label());
        let rate = nats_cluster::throughput(bus, plan).await?;
        if bus == nats_cluster::Bus::Single {
            single = rate;
        }
        let _ = writeln!(out, "| {} | {} | {:.2}x |", bus.label(), thousands(rate), rate / single);
    }
    eprintln!("bench:    failover");
    let kills = nats_cluster::failovers(plan).await?;
    let median = |mut v: Vec<Duration>| {
        v.sort();
        v.get(v.len() / 2).copied().unwrap_or_default()
    };
    let list = |v: Vec<Duration>| v.iter().map(|d| format!("{:.2}", d.as_secs_f64())).collect::<Vec<_>>().join(", ");
    let published: Vec<Duration> = kills.iter().map(|k| k.0).collect();
    let done: Vec<Duration> = kills.iter().map(|k| k.1).collect();
    let _ = writeln!(
        out,
        "\nFailover, `replicas = 3`: SIGKILL of the server leading the work queue, then one `Node::dispatch`; {} kills, the killed server restarted and caught up between them.\n",
        kills.len()
    );
    let _ = writeln!(out, "| from the kill to | median (s) | each kill (s) |\n|---|---:|---|");
    let _ = writeln!(
        out,
        "| the publish accepted | {:.2} | {} |",
        median(published.clone()).as_secs_f64(),
        list(published)
    );
    let _ =
        writeln!(out, "| the job completed on a node | {:.2} | {} |", median(done.clone()).as_secs_f64(), list(done));
    eprintln!("bench:    backlog");
    let (rate, dead) = nats_cluster::backlog(plan).await?;
    let _ = writeln!(
        out,
        "\nBacklog: {} jobs queued before one node with `concurrency = 4, queue = 4` starts (one server): drained at {} jobs/s, **{dead} dead letters**.\n",
        thousands(plan.backlog as f64),
        thousands(rate)
    );
    Ok(())
}

async fn bench_call(sizes: &Sizes, out: &mut String) -> anyhow::Result<()> {
    let (contenders, _folder) = call::contenders(&busbar::runtime::RuntimeOptions::default()).await?;
    let _ = writeln!(out, "### 1. In-process `call` of `echo`, {} B payload, fresh instance per call\n", call::PAYLOAD);
    let first = &sizes.call[0];
    let _ = writeln!(
        out,
        "Callers: tokio multi-thread runtime, 2 workers, C tasks; {} measured calls per contender and C after {} warm-up calls, in {} interleaved rounds.\n",
        thousands(first.calls as f64),
        thousands(first.warmup as f64),
        first.rounds
    );
    let _ = writeln!(out, "| contender | C | p50 (µs) | p99 (µs) | calls/s |\n|---|---:|---:|---:|---:|");
    let mut targets = Vec::new();
    let mut ratios = String::new();
    for plan in &sizes.call {
        eprintln!("bench:    C = {}", plan.concurrency);
        let summaries = call::measure(&contenders, *plan).await;
        for (c, s) in contenders.iter().zip(&summaries) {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} |",
                c.label(),
                plan.concurrency,
                micros(s.p50),
                micros(s.p99),
                thousands(s.per_sec)
            );
        }
        let (busbar, floor) = (summaries[0], summaries[1]);
        let p50_ratio = busbar.p50.as_secs_f64() / floor.p50.as_secs_f64();
        let p99_ratio = busbar.p99.as_secs_f64() / floor.p99.as_secs_f64();
        let tput_ratio = floor.per_sec / busbar.per_sec;
        let _ = writeln!(
            ratios,
            "| C = {} | {p50_ratio:.2}x | {p99_ratio:.2}x | {tput_ratio:.2}x | {:+.1} µs |",
            plan.concurrency,
            match (busbar.p50.as_secs_f64() - floor.p50.as_secs_f64()) * 1e6 {
                d if d.abs() < 0.05 => 0.0,
                d => d,
            }
        );
        let c = plan.concurrency;
        targets.push(Target {
            what: format!("busbar p50 ≤ 1.3x floor (C = {c})"),
            value: format!("{p50_ratio:.2}x"),
            met: p50_ratio <= 1.3,
        });
        targets.push(Target {
            what: format!("busbar calls/s ≥ floor / 1.3 (C = {c})"),
            value: format!("floor/busbar = {tput_ratio:.2}x"),
            met: tput_ratio <= 1.3,
        });
        targets.push(Target {
            what: format!("busbar p50 < 10 µs (C = {c})"),
            value: format!("{} µs", micros(busbar.p50)),
            met: busbar.p50 < Duration::from_micros(10),
        });
    }
    let _ = writeln!(out, "\nbusbar relative to the floor:\n");
    let _ = writeln!(
        out,
        "| load | p50 busbar/floor | p99 busbar/floor | calls/s floor/busbar | p50 overhead |\n|---|---:|---:|---:|---:|"
    );
    out.push_str(&ratios);
    out.push('\n');
    targets_table(out, &targets);
    out.push('\n');
    call::stop(contenders).await;
    Ok(())
}

async fn bench_startup(
    n: usize,
    folder: &std::path::Path,
    cache: &std::path::Path,
    out: &mut String,
) -> anyhow::Result<()> {
    let cold = startup::start_once(folder, cache, n, None).await?;
    anyhow::ensure!(cold.report.cached == 0, "the cold start found {} cached artifacts", cold.report.cached);
    let warm = startup::start_once(folder, cache, n, None).await?;
    let ratio = cold.elapsed.as_secs_f64() / warm.elapsed.as_secs_f64();
    // `busbar run` compiles in child processes: a cold start that way, on an
    // empty cache of its own.
    let (bin, label) = memory::binary()?;
    let worker_cache = tempfile::tempdir()?;
    let in_workers = startup::start_once(folder, worker_cache.path(), n, Some(&bin)).await?;
    anyhow::ensure!(in_workers.report.cached == 0, "the worker start found cached artifacts");
    let worker_ratio = in_workers.elapsed.as_secs_f64() / cold.elapsed.as_secs_f64();
    let _ = writeln!(out, "### 2. Node start-up with {n} handlers\n");
    let _ = writeln!(
        out,
        "From `NodeBuilder::start()` (fresh `Runtime`, so a fresh engine) to the first reply of `h000-echo`; all {n} handlers loaded.\n"
    );
    let _ = writeln!(out, "| start | artifacts from cache | time to serving (ms) |\n|---|---:|---:|");
    let _ = writeln!(out, "| cold (empty cache) | {} / {n} | {} |", cold.report.cached, millis(cold.elapsed));
    let _ = writeln!(out, "| warm (same cache dir) | {} / {n} | {} |", warm.report.cached, millis(warm.elapsed));
    let _ = writeln!(
        out,
        "| cold, each handler compiled in a compile worker (as `busbar run` does; {label}) | {} / {n} | {} |",
        in_workers.report.cached,
        millis(in_workers.elapsed)
    );
    let _ = writeln!(out, "| **cold / warm** | | **{ratio:.1}x** |");
    let _ = writeln!(out, "| **cold in workers / cold in process** | | **{worker_ratio:.2}x** |\n");
    targets_table(
        out,
        &[
            Target {
                what: "warm start < 1 s".into(),
                value: format!("{} ms", millis(warm.elapsed)),
                met: warm.elapsed < Duration::from_secs(1),
            },
            Target { what: "warm ≥ 10x faster than cold".into(), value: format!("{ratio:.1}x"), met: ratio >= 10.0 },
        ],
    );
    out.push('\n');
    Ok(())
}

fn bench_memory(n: usize, folder: &std::path::Path, cache: &std::path::Path, out: &mut String) -> anyhow::Result<()> {
    let (bin, label) = memory::binary()?;
    let empty = tempfile::tempdir()?;
    let config_dir = tempfile::tempdir()?;
    let config = memory::config(config_dir.path(), cache)?;
    // An unmeasured first start fills the cache for the binary's engine if
    // benchmark 2 did not (or ran with another engine configuration).
    memory::idle_rss(&bin, &config, folder)?;
    let baseline = memory::idle_rss(&bin, &config, empty.path())?;
    let loaded = memory::idle_rss(&bin, &config, folder)?;
    anyhow::ensure!(
        loaded.field("handlers") == Some(&n.to_string()),
        "the node did not load {n} handlers: {}",
        loaded.serving
    );
    anyhow::ensure!(loaded.field("cached") == Some(&n.to_string()), "the cache was not warm: {}", loaded.serving);
    let mib = |kib: u64| format!("{:.1}", kib as f64 / 1024.0);
    let _ = writeln!(out, "### 3. Resident memory of an idle node\n");
    let _ = writeln!(
        out,
        "`busbar run --handlers DIR` ({}), `VmRSS` from `/proc/PID/status` {} s after it logged `serving`.\n",
        label,
        memory::SETTLE.as_secs()
    );
    let _ = writeln!(
        out,
        "| handlers folder | artifacts from cache | start-up (node's log) | VmRSS (MiB) |\n|---|---:|---:|---:|"
    );
    let row = |label: &str, idle: &memory::Idle| {
        format!(
            "| {label} | {} | {} | {} |",
            idle.field("cached").unwrap_or("?"),
            idle.field("elapsed").unwrap_or("?"),
            mib(idle.rss_kib)
        )
    };
    let _ = writeln!(out, "{}", row("empty (baseline)", &baseline));
    let _ = writeln!(out, "{}", row(&format!("{n} handlers, warm cache"), &loaded));
    let per = (loaded.rss_kib.saturating_sub(baseline.rss_kib)) as f64 / n as f64;
    let _ = writeln!(
        out,
        "| **{n} handlers − baseline** | | | **{}** ({per:.0} KiB per handler) |\n",
        mib(loaded.rss_kib.saturating_sub(baseline.rss_kib))
    );
    Ok(())
}

/// `nats-server vX.Y.Z (PATH)`, the server the NATS benchmarks start.
fn nats_server() -> String {
    format!(
        "`nats-server` {} ({})",
        busbar_tests::nats::server_version(),
        busbar_tests::nats::server_binary().display()
    )
}

async fn bench_nats_call(plan: nats_call::Plan, out: &mut String) -> anyhow::Result<()> {
    let setup = nats_call::setup().await?;
    let summaries = nats_call::measure(&setup.contenders, plan).await;
    let _ = writeln!(out, "### 4. `call` of `echo` over NATS, {} B payload\n", nats_call::PAYLOAD);
    let _ = writeln!(
        out,
        "{}, loopback, same 2 cores as the benchmark. Requesters: {} tasks on one async-nats client, tokio runtime with 2 workers (which also runs the busbar node and the native responder); {} measured requests per contender after {} warm-up requests, in {} interleaved rounds.\n",
        nats_server(),
        plan.concurrency,
        thousands(plan.requests as f64),
        thousands(plan.warmup as f64),
        plan.rounds
    );
    let _ = writeln!(out, "| contender | p50 (µs) | p99 (µs) | req/s |\n|---|---:|---:|---:|");
    for (c, s) in setup.contenders.iter().zip(&summaries) {
        let _ = writeln!(out, "| {} | {} | {} | {} |", c.label(), micros(s.p50), micros(s.p99), thousands(s.per_sec));
    }
    let (busbar, reused, native, floor) = (summaries[0], summaries[1], summaries[2], summaries[4]);
    let ratio = busbar.per_sec / native.per_sec;
    let reused_ratio = reused.per_sec / native.per_sec;
    let _ = writeln!(
        out,
        "\nbusbar/native: throughput {ratio:.2}x, p50 {:.2}x, p99 {:.2}x. busbar / (native + raw-wasmtime `echo`, fresh instance): throughput {:.2}x.\nbusbar with `reuse = 1000` / native: throughput {reused_ratio:.2}x, p50 {:.2}x, p99 {:.2}x.\n",
        busbar.p50.as_secs_f64() / native.p50.as_secs_f64(),
        busbar.p99.as_secs_f64() / native.p99.as_secs_f64(),
        busbar.per_sec / floor.per_sec,
        reused.p50.as_secs_f64() / native.p50.as_secs_f64(),
        reused.p99.as_secs_f64() / native.p99.as_secs_f64(),
    );
    targets_table(
        out,
        &[
            Target {
                what: "busbar req/s ≥ 0.9x native, fresh instance per request (default)".into(),
                value: format!("{ratio:.2}x"),
                met: ratio >= 0.9,
            },
            Target {
                what: "busbar req/s ≥ 0.9x native, `reuse = 1000`".into(),
                value: format!("{reused_ratio:.2}x"),
                met: reused_ratio >= 0.9,
            },
        ],
    );
    out.push('\n');
    setup.stop().await;
    Ok(())
}

async fn bench_nats_dispatch(plan: nats_dispatch::Plan, out: &mut String) -> anyhow::Result<()> {
    let totals = nats_dispatch::measure(plan).await?;
    let [busbar, reused, native, work, durable, memory] = totals;
    let _ = writeln!(
        out,
        "### 5. Dispatch over NATS JetStream, {} jobs of {} B\n",
        thousands(plan.jobs as f64),
        nats_dispatch::PAYLOAD
    );
    let _ = writeln!(
        out,
        "{}, a fresh server per contender and round; WorkQueue stream, file storage, durable pull consumer, explicit ack per job. {} publisher tasks, each awaiting its publish ack (ack window {}); from the first publish to the last job handled (polled every {} ms), after {} warm-up jobs; {} interleaved rounds.\n",
        nats_server(),
        plan.publishers,
        plan.publishers,
        nats_dispatch::POLL.as_millis(),
        thousands(plan.warmup as f64),
        plan.rounds
    );
    let _ = writeln!(
        out,
        "| contender | jobs/s | slowest – fastest round | published/s (to the last ack) |\n|---|---:|---:|---:|"
    );
    for (kind, t) in nats_dispatch::Kind::ALL.into_iter().zip(totals) {
        let _ = writeln!(
            out,
            "| {} | {} | {} – {} | {} |",
            kind.label(),
            thousands(t.per_sec()),
            thousands(t.worst),
            thousands(t.best),
            thousands(t.published_per_sec())
        );
    }
    let ratio = busbar.per_sec() / native.per_sec();
    let reused_ratio = reused.per_sec() / native.per_sec();
    let durable_ratio = durable.per_sec() / busbar.per_sec();
    let _ = writeln!(
        out,
        "\nThe `default` driver, same node pair, payload and ack window, no NATS: durable (SQLite state) / busbar on JetStream: {durable_ratio:.2}x; durable / in memory: {:.2}x.",
        durable.per_sec() / memory.per_sec()
    );
    let _ = writeln!(
        out,
        "\nbusbar/native: {ratio:.2}x. busbar / (native + busbar's work): {:.2}x. busbar with `reuse = 1000` / native: {reused_ratio:.2}x.\n",
        busbar.per_sec() / work.per_sec()
    );
    targets_table(
        out,
        &[
            Target {
                what: "busbar jobs/s ≥ 0.8x native, fresh instance per job (default)".into(),
                value: format!("{ratio:.2}x"),
                met: ratio >= 0.8,
            },
            Target {
                what: "busbar jobs/s ≥ 0.8x native, `reuse = 1000`".into(),
                value: format!("{reused_ratio:.2}x"),
                met: reused_ratio >= 0.8,
            },
            Target {
                what: "durable `default` driver jobs/s ≥ 0.8x busbar on JetStream".into(),
                value: format!("{durable_ratio:.2}x"),
                met: durable_ratio >= 0.8,
            },
        ],
    );
    out.push('\n');
    Ok(())
}

async fn bench_reload(plan: reload::Plan, out: &mut String) -> anyhow::Result<()> {
    let results = reload::measure(plan).await?;
    let _ = writeln!(out, "### 6. Hot reload against a process restart\n");
    let _ = writeln!(
        out,
        "{}. Reload: {} swaps of `svc` per pass on a watching node, from the rename into the folder to the first reply of the new version. Restart: {} restarts of a `busbar run` process (SIGTERM, wait, start) serving the same folder from the warm cache, to its first reply.\n",
        nats_server(),
        plan.swaps,
        plan.restarts
    );
    let _ = writeln!(out, "| what | p50 (ms) | max (ms) |\n|---|---:|---:|");
    let rows = [
        ("hot reload, compile cache cold", &results.cold),
        ("hot reload, compile cache warm", &results.warm),
        ("process restart (SIGTERM → first reply)", &results.restart),
        ("… of which start → first reply", &results.start),
    ];
    for (what, samples) in rows {
        let (p50, max) = reload::p50_max(samples);
        let _ = writeln!(out, "| {what} | {} | {} |", millis(p50), millis(max));
    }
    let (warm, _) = reload::p50_max(&results.warm);
    let (restart, _) = reload::p50_max(&results.restart);
    let ratio = restart.as_secs_f64() / warm.as_secs_f64();
    let _ = writeln!(out, "\nrestart / warm reload (p50): {ratio:.1}x.\n");
    targets_table(
        out,
        &[
            Target {
                what: "warm reload p50 < 50 ms".into(),
                value: format!("{} ms", millis(warm)),
                met: warm < Duration::from_millis(50),
            },
            Target {
                what: "warm reload ≥ 10x faster than a restart (p50)".into(),
                value: format!("{ratio:.1}x"),
                met: ratio >= 10.0,
            },
        ],
    );
    out.push('\n');
    Ok(())
}

async fn bench_limits(sizes: &Sizes, out: &mut String) -> anyhow::Result<()> {
    let contenders = call::limits_contenders(&busbar::runtime::RuntimeOptions::default()).await?;
    let plan = sizes.call[0];
    let summaries = call::measure(&contenders, plan).await;
    let _ = writeln!(out, "### 7. The cost of the limits: `echo` on raw wasmtime, limits on and off\n");
    let _ = writeln!(
        out,
        "C = {}, {} measured calls per contender after {} warm-up calls, {} interleaved rounds; fresh instance per call.\n",
        plan.concurrency,
        thousands(plan.calls as f64),
        thousands(plan.warmup as f64),
        plan.rounds
    );
    let _ = writeln!(out, "| contender | p50 (µs) | p99 (µs) | calls/s |\n|---|---:|---:|---:|");
    for (c, s) in contenders.iter().zip(&summaries) {
        let _ = writeln!(out, "| {} | {} | {} | {} |", c.label(), micros(s.p50), micros(s.p99), thousands(s.per_sec));
    }
    let (on, off) = (summaries[0], summaries[1]);
    let _ = writeln!(
        out,
        "\nlimits on / off: p50 {:.2}x, p99 {:.2}x, throughput {:.2}x.\n",
        on.p50.as_secs_f64() / off.p50.as_secs_f64(),
        on.p99.as_secs_f64() / off.p99.as_secs_f64(),
        on.per_sec / off.per_sec
    );
    let timeout = Duration::from_secs(1);
    let _ = writeln!(
        out,
        "Timeouts under load: N looping `spin` guests called at once (timeout {} ms, 2 worker threads); how long after its timeout each call ended.\n",
        timeout.as_millis()
    );
    let _ = writeln!(out, "| N | overshoot p50 (ms) | p99 (ms) | max (ms) |\n|---:|---:|---:|---:|");
    for guests in [1, 8, 64] {
        let overshoots = timeouts::measure(guests, timeout).await?;
        let at = |q: f64| overshoots[((overshoots.len() - 1) as f64 * q).round() as usize];
        let _ = writeln!(
            out,
            "| {guests} | {} | {} | {} |",
            millis(at(0.5)),
            millis(at(0.99)),
            millis(overshoots[overshoots.len() - 1])
        );
    }
    let _ = writeln!(out);
    Ok(())
}

async fn bench_languages(plan: languages::Plan, out: &mut String) -> anyhow::Result<()> {
    let rows = languages::measure(plan).await?;
    let _ = writeln!(out, "### 8. One `echo` handler in four languages\n");
    let _ = writeln!(
        out,
        "The `echo` examples (`examples/echo`, `examples/python/echo`, `examples/js/echo.js`, `examples/c/echo.c`). Compile: a fresh engine with an empty artifact cache; from cache: a fresh engine loading the artifact that compile stored. Calls: in-process `call`, {} B payload, one caller, {} measured calls after {} warm-up calls, with a fresh instance per call (the default) and with `reuse = 1000`. In parentheses: relative to Rust in the same run.\n",
        languages::PAYLOAD,
        thousands(plan.calls as f64),
        thousands(plan.warmup as f64),
    );
    let _ = writeln!(
        out,
        "| language | component (KiB) | compile (ms) | from cache (ms) | call p50, fresh (µs) | p99, fresh (µs) | call p50, reuse (µs) | p99, reuse (µs) |\n|---|---:|---:|---:|---:|---:|---:|---:|"
    );
    let rust = &rows[0];
    // `12x`, or `0.7x` below 10.
    let ratio = |value: f64, base: f64| match value / base.max(f64::MIN_POSITIVE) {
        r if r < 10.0 => format!("{r:.1}x"),
        r => format!("{r:.0}x"),
    };
    let times = |value: Duration, base: Duration| ratio(value.as_secs_f64(), base.as_secs_f64());
    for row in &rows {
        let _ = writeln!(
            out,
            "| {} | {} ({}) | {} ({}) | {} | {} ({}) | {} | {} ({}) | {} |",
            row.lang,
            thousands(row.size as f64 / 1024.0),
            ratio(row.size as f64, rust.size as f64),
            millis(row.compile),
            times(row.compile, rust.compile),
            millis(row.cached),
            micros(row.fresh.p50),
            times(row.fresh.p50, rust.fresh.p50),
            micros(row.fresh.p99),
            micros(row.reused.p50),
            times(row.reused.p50, rust.reused.p50),
            micros(row.reused.p99),
        );
    }
    out.push('\n');
    Ok(())
}
